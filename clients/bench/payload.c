/*
 * payload.c - the bench's payload format.
 *
 * Payloads carry their send time so that subscribers can measure latency:
 *   {"t":1234567890123,"pad":"xxxxxxxx"}
 * t is CLOCK_MONOTONIC in nanoseconds; pad fills the value to --payload
 * bytes. Broker messages are parsed with the protocol library's
 * msg_parse_server(), which reads them in one allocation-free pass.
 */
#include <string.h>

#include "bench.h"

bool dec_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (d > 9)
            return false;
        if (i == 19 && x > (UINT64_MAX - d) / 10) /* only a 20th digit can overflow */
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The 8 digits of v < 10^8, zero-padded, at out: four pairs. */
static void dec8_text(char *out, uint32_t v)
{
    for (int i = 6; i >= 0; i -= 2) {
        memcpy(out + i, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
}

size_t dec_text(char *out, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    /* up to 8 digits at a time, so that the halves convert independently */
    while (v >= 100000000) {
        i -= 8;
        dec8_text(tmp + i, (uint32_t)(v % 100000000));
        v /= 100000000;
    }
    uint32_t r = (uint32_t)v;
    while (r >= 100) {
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * (r % 100), 2);
        r /= 100;
    }
    if (r >= 10) {
        i -= 2;
        memcpy(tmp + i, digit_pairs + 2 * r, 2);
    } else {
        tmp[--i] = (char)('0' + r);
    }
    memcpy(out, tmp + i, sizeof tmp - i);
    return sizeof tmp - i;
}

static const char payload_head[] = "{\"t\":";
static const char payload_mid[] = ",\"pad\":\"";
static const char payload_tail[] = "\"}";
_Static_assert(sizeof payload_head - 1 == 5, "payload_time() compares the head as 4 + 1 bytes");

size_t payload_max(size_t size)
{
    size_t min = sizeof payload_head - 1 + 20 + sizeof payload_mid - 1 + sizeof payload_tail - 1;
    return size > min ? size : min;
}

size_t payload_make(char *out, size_t size, uint64_t t)
{
    size_t len = sizeof payload_head - 1;

    memcpy(out, payload_head, len);
    len += dec_text(out + len, t);
    memcpy(out + len, payload_mid, sizeof payload_mid - 1);
    len += sizeof payload_mid - 1;
    size_t fixed = len + sizeof payload_tail - 1;
    if (size > fixed) {
        memset(out + len, 'x', size - fixed);
        len += size - fixed;
    }
    memcpy(out + len, payload_tail, sizeof payload_tail - 1);
    return len + sizeof payload_tail - 1;
}

size_t payload_update(char *out, size_t len, size_t size, uint64_t t)
{
    const size_t hl = sizeof payload_head - 1;
    char digits[24];
    size_t nd = dec_text(digits, t);

    /* the same number of digits: a ',' right after them, and the pad and
     * tail of the same size already in place */
    if (len <= hl + nd || out[hl + nd] != ',')
        return payload_make(out, size, t);
    memcpy(out + hl, digits, nd);
    return len;
}

bool payload_time(const char *p, size_t n, uint64_t *t)
{
    const size_t hl = sizeof payload_head - 1;
    uint32_t w, h;
    uint64_t x = 0;
    size_t i = hl, lim = n - hl > 19 ? hl + 19 : n; /* 19 digits cannot overflow */

    /* the head compared as a word and a byte: inline, shorter than a call */
    if (n < hl + 1)
        return false;
    memcpy(&w, p, sizeof w);
    memcpy(&h, payload_head, sizeof h);
    if (w != h || p[4] != payload_head[4])
        return false;
    for (; i < lim; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (d > 9)
            break;
        x = x * 10 + d;
    }
    if (i == hl || (i < n && p[i] >= '0' && p[i] <= '9'))
        return false; /* no digits, or more than 19 */
    *t = x;
    return true;
}
