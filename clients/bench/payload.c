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
    char digits[20];
    size_t nd = 0, len = 0;

    do {
        digits[nd++] = (char)('0' + t % 10);
        t /= 10;
    } while (t != 0);
    memcpy(out, payload_head, sizeof payload_head - 1);
    len = sizeof payload_head - 1;
    while (nd > 0)
        out[len++] = digits[--nd];
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
