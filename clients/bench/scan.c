/*
 * scan.c - the bench's hot-path view of broker messages and its payload
 * format.
 *
 * msg_parse_server() builds a cJSON tree, i.e. allocates per message; a
 * subscriber in a fan-out run sees hundreds of thousands of messages per
 * second, so the bench walks the top-level members itself and keeps raw
 * spans into the read buffer. The walk only needs to find where each value
 * ends, not to validate it: the broker's output is trusted to be JSON, and
 * anything the walk cannot follow is reported as a protocol error.
 *
 * Payloads carry their send time so that subscribers can measure latency:
 *   {"t":1234567890123,"pad":"xxxxxxxx"}
 * t is CLOCK_MONOTONIC in nanoseconds; pad fills the value to --payload
 * bytes.
 */
#include <string.h>

#include "bench.h"

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p is just after an opening quote; returns the closing quote or NULL. */
static const char *string_end(const char *p, const char *end)
{
    for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (q == NULL)
            return NULL;
        size_t bs = 0;
        while (q - bs > p && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q;
        p = q + 1;
    }
}

/* Returns the first byte after the value starting at p, or NULL. */
static const char *value_end(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"') {
        const char *q = string_end(p + 1, end);
        return q ? q + 1 : NULL;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            char ch = *p;
            if (ch == '"') {
                const char *q = string_end(p + 1, end);
                if (q == NULL)
                    return NULL;
                p = q + 1;
                continue;
            }
            if (ch == '{' || ch == '[')
                depth++;
            else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p > s ? p : NULL;
}

bool scan_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    if (n == 0 || n > 20)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (d > 9)
            return false;
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

static bool key_is(const char *k, size_t klen, const char *lit)
{
    size_t n = strlen(lit);
    return klen == n && memcmp(k, lit, n) == 0;
}

static int op_of(const char *v, size_t n)
{
    static const struct {
        const char *s;
        int op;
    } ops[] = {
        {"\"message\"", SM_MESSAGE}, {"\"ack\"", SM_ACK},   {"\"error\"", SM_ERROR},
        {"\"hello\"", SM_HELLO},     {"\"pong\"", SM_PONG},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (key_is(v, n, ops[i].s))
            return ops[i].op;
    return SM_OTHER;
}

int scan_server(const char *p, size_t n, smsg_t *m)
{
    const char *end = p + n;
    bool seen_op = false;

    memset(m, 0, sizeof *m);
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}')
        return -1;
    for (;;) {
        if (p >= end || *p != '"')
            return -1;
        const char *k = p + 1;
        const char *kq = string_end(k, end);
        if (kq == NULL)
            return -1;
        size_t klen = (size_t)(kq - k);
        p = skip_ws(kq + 1, end);
        if (p >= end || *p != ':')
            return -1;
        const char *v = skip_ws(p + 1, end);
        const char *ve = value_end(v, end);
        if (ve == NULL)
            return -1;
        size_t vlen = (size_t)(ve - v);
        /* The first occurrence of a member counts, as in msg.h. */
        if (key_is(k, klen, "op")) {
            if (!seen_op)
                m->op = op_of(v, vlen);
            seen_op = true;
        } else if (key_is(k, klen, "topic")) {
            if (m->topic == NULL && vlen >= 2 && *v == '"') {
                m->topic = v + 1;
                m->topic_len = vlen - 2;
            }
        } else if (key_is(k, klen, "seq")) {
            if (!m->has_seq)
                m->has_seq = scan_u64(v, vlen, &m->seq);
        } else if (key_is(k, klen, "id")) {
            if (m->id == NULL) {
                m->id = v;
                m->id_len = vlen;
            }
        } else if (key_is(k, klen, "data")) {
            if (m->data == NULL) {
                m->data = v;
                m->data_len = vlen;
            }
        }
        p = skip_ws(ve, end);
        if (p >= end)
            return -1;
        if (*p == '}')
            break;
        if (*p != ',')
            return -1;
        p = skip_ws(p + 1, end);
    }
    return seen_op ? 0 : -1;
}

static const char payload_head[] = "{\"t\":";
static const char payload_mid[] = ",\"pad\":\"";
static const char payload_tail[] = "\"}";

size_t scan_payload_max(size_t size)
{
    size_t min = sizeof payload_head - 1 + 20 + sizeof payload_mid - 1 + sizeof payload_tail - 1;
    return size > min ? size : min;
}

size_t scan_make_payload(char *out, size_t size, uint64_t t)
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

bool scan_payload_t(const char *p, size_t n, uint64_t *t)
{
    size_t hl = sizeof payload_head - 1, i;
    if (n < hl + 1 || memcmp(p, payload_head, hl) != 0)
        return false;
    for (i = hl; i < n && p[i] >= '0' && p[i] <= '9'; i++)
        ;
    return scan_u64(p + hl, i - hl, t);
}
