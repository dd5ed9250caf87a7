/*
 * pmd.c - permessage-deflate negotiation and compression (see pmd.h).
 *
 * Header grammar (RFC 6455 section 9.1, RFC 7230 lists):
 *   extension-list = 1#( token *( OWS ";" OWS token [ "=" ( token / quoted-string ) ] ) )
 */
#include "wsproto/pmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- Parsing extension lists ---- */

typedef struct cursor {
    const char *p, *e;
} cursor_t;

static bool tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void skip_ows(cursor_t *c)
{
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

static bool token(cursor_t *c, wsh_str_t *out)
{
    const char *s = c->p;
    while (c->p < c->e && tchar((unsigned char)*c->p))
        c->p++;
    *out = (wsh_str_t){s, (size_t)(c->p - s)};
    return out->len > 0;
}

/* A quoted-string's content (without escapes: none are valid in the
 * values this extension knows). */
static bool quoted(cursor_t *c, wsh_str_t *out)
{
    if (c->p >= c->e || *c->p != '"')
        return false;
    const char *s = ++c->p;
    while (c->p < c->e && *c->p != '"') {
        if (*c->p == '\\' || (unsigned char)*c->p < 0x20)
            return false;
        c->p++;
    }
    if (c->p >= c->e)
        return false;
    *out = (wsh_str_t){s, (size_t)(c->p - s)};
    c->p++;
    return true;
}

static bool is(wsh_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(s.p, lit, n) == 0;
}

/* Window bits: "8".."15", no sign, no leading zero. */
static int window_bits(wsh_str_t v)
{
    if (v.len == 1 && v.p[0] >= '8' && v.p[0] <= '9')
        return v.p[0] - '0';
    if (v.len == 2 && v.p[0] == '1' && v.p[1] >= '0' && v.p[1] <= '5')
        return 10 + v.p[1] - '0';
    return -1;
}

enum { P_SNCT = 1, P_CNCT = 2, P_SMWB = 4, P_CMWB = 8, P_CMWB_VALUE = 16 };

/* One element of the list: its name and the permessage-deflate parameters
 * when it names this extension. Returns 1 for a valid permessage-deflate
 * element, 0 for another extension or an invalid one (skipped), -1 on a
 * syntax error (the rest of the header cannot be trusted). */
static int element(cursor_t *c, pmd_params_t *p, unsigned *seen)
{
    wsh_str_t name;
    skip_ows(c);
    if (!token(c, &name))
        return -1;
    bool ours = is(name, PMD_NAME), valid = true;
    *p = (pmd_params_t){.server_max_window_bits = 15, .client_max_window_bits = 15};
    *seen = 0;
    for (;;) {
        skip_ows(c);
        if (c->p >= c->e || *c->p == ',')
            break;
        if (*c->p != ';')
            return -1;
        c->p++;
        skip_ows(c);
        wsh_str_t key, val = {NULL, 0};
        bool has_val = false;
        if (!token(c, &key))
            return -1;
        skip_ows(c);
        if (c->p < c->e && *c->p == '=') {
            c->p++;
            skip_ows(c);
            if (!token(c, &val) && !quoted(c, &val))
                return -1;
            has_val = true;
        }
        if (!ours)
            continue;
        unsigned bit = is(key, "server_no_context_takeover")   ? P_SNCT
                       : is(key, "client_no_context_takeover") ? P_CNCT
                       : is(key, "server_max_window_bits")     ? P_SMWB
                       : is(key, "client_max_window_bits")     ? P_CMWB
                                                               : 0;
        if (bit == 0 || (*seen & bit)) {
            valid = false; /* unknown or repeated parameter: decline */
            continue;
        }
        *seen |= bit;
        int wb = has_val ? window_bits(val) : 0;
        switch (bit) {
        case P_SNCT:
        case P_CNCT:
            if (has_val)
                valid = false;
            if (bit == P_SNCT)
                p->server_no_context_takeover = true;
            else
                p->client_no_context_takeover = true;
            break;
        case P_SMWB:
            if (!has_val || wb < 0)
                valid = false;
            else
                p->server_max_window_bits = (uint8_t)wb;
            break;
        case P_CMWB:
            if (has_val && wb < 0)
                valid = false;
            else if (has_val) {
                p->client_max_window_bits = (uint8_t)wb;
                *seen |= P_CMWB_VALUE;
            }
            break;
        }
    }
    return ours && valid ? 1 : 0;
}

int pmd_negotiate(const wsh_header_t *headers, size_t n, const pmd_policy_t *policy,
                  pmd_params_t *out)
{
    for (size_t h = 0; h < n; h++) {
        if (!is(headers[h].name, "Sec-WebSocket-Extensions"))
            continue;
        cursor_t c = {headers[h].value.p, headers[h].value.p + headers[h].value.len};
        while (c.p < c.e) {
            pmd_params_t p;
            unsigned seen;
            int r = element(&c, &p, &seen);
            if (r < 0)
                break; /* malformed: ignore the rest of this header */
            if (r == 1) {
                /* Acceptable: the server honours what the client asked of
                 * it and adds its own no-context-takeover choices. The
                 * client's window limit is never answered: this side
                 * inflates with the largest window anyway. */
                p.server_no_context_takeover |= policy->server_no_context_takeover;
                p.client_no_context_takeover |= policy->client_no_context_takeover;
                p.client_max_window_bits = 15;
                p.client_max_window_bits_sent = false;
                p.server_max_window_bits_sent = (seen & P_SMWB) != 0;
                *out = p;
                return PMD_OK;
            }
            skip_ows(&c);
            if (c.p < c.e && *c.p == ',')
                c.p++;
        }
    }
    return PMD_NONE;
}

size_t pmd_format_response(const pmd_params_t *p, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%s%s", PMD_NAME,
                     p->server_no_context_takeover ? "; server_no_context_takeover" : "",
                     p->client_no_context_takeover ? "; client_no_context_takeover" : "");
    if (n < 0 || (size_t)n >= cap)
        return 0;
    if (p->server_max_window_bits_sent) {
        int m = snprintf(out + n, cap - (size_t)n, "; server_max_window_bits=%d",
                         p->server_max_window_bits);
        if (m < 0 || (size_t)m >= cap - (size_t)n)
            return 0;
        n += m;
    }
    if (p->client_max_window_bits_sent) {
        int m = snprintf(out + n, cap - (size_t)n, "; client_max_window_bits=%d",
                         p->client_max_window_bits);
        if (m < 0 || (size_t)m >= cap - (size_t)n)
            return 0;
        n += m;
    }
    return (size_t)n;
}

size_t pmd_format_offer(bool no_context_takeover, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s; client_max_window_bits%s", PMD_NAME,
                     no_context_takeover ? "; client_no_context_takeover" : "");
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int pmd_parse_response(wsh_str_t value, pmd_params_t *out)
{
    cursor_t c = {value.p, value.p + value.len};
    unsigned seen;
    if (element(&c, out, &seen) != 1)
        return PMD_E_BAD;
    skip_ows(&c);
    if (c.p != c.e)
        return PMD_E_BAD; /* we offered one extension; one comes back */
    /* In a response client_max_window_bits needs a value. */
    if ((seen & P_CMWB) && !(seen & P_CMWB_VALUE))
        return PMD_E_BAD;
    out->client_max_window_bits_sent = (seen & P_CMWB) != 0;
    out->server_max_window_bits_sent = (seen & P_SMWB) != 0;
    return PMD_OK;
}

/* ---- Compression ---- */

int pmd_deflater_init(pmd_deflater_t *d, int window_bits, bool no_context_takeover)
{
    memset(d, 0, sizeof(*d));
    d->window_bits = window_bits;
    d->no_context_takeover = no_context_takeover;
    /* zlib has no 256-byte window for raw deflate: with 9 bits and
     * run-length matches only, no distance is longer than 1. */
    int wb = window_bits < 9 ? 9 : window_bits > 15 ? 15 : window_bits;
    int strategy = window_bits < 9 ? Z_RLE : Z_DEFAULT_STRATEGY;
    if (deflateInit2(&d->z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -wb, 8, strategy) != Z_OK)
        return PMD_E_NOMEM;
    d->ready = true;
    return PMD_OK;
}

void pmd_deflater_end(pmd_deflater_t *d)
{
    if (d->ready)
        deflateEnd(&d->z);
    d->ready = false;
}

size_t pmd_deflate_bound(const pmd_deflater_t *d, size_t len)
{
    /* deflateBound plus the sync flush's empty stored block, and room for
     * the one-byte form of an empty message. */
    return deflateBound((z_streamp)&d->z, (uLong)len) + 16;
}

ssize_t pmd_deflate(pmd_deflater_t *d, const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    if (!d->ready)
        return PMD_E_NOMEM;
    if (len == 0) {
        /* One empty stored block (RFC 7692 7.2.3.6), with or without the
         * context: after a previous message's flush zlib has nothing to
         * flush and would write nothing at all. */
        if (cap < 1)
            return PMD_E_DATA;
        out[0] = 0x00;
        return 1;
    }
    if (d->no_context_takeover && deflateReset(&d->z) != Z_OK)
        return PMD_E_DATA;
    d->z.next_in = (Bytef *)in;
    d->z.avail_in = (uInt)len;
    d->z.next_out = out;
    d->z.avail_out = (uInt)cap;
    int r = deflate(&d->z, Z_SYNC_FLUSH);
    if ((r != Z_OK && r != Z_BUF_ERROR) || d->z.avail_in != 0 || d->z.avail_out == 0)
        return PMD_E_DATA;
    size_t n = cap - d->z.avail_out;
    /* Strip the 00 00 ff ff the sync flush ends with (RFC 7692 7.2.1). */
    if (n < 4 || memcmp(out + n - 4, "\x00\x00\xff\xff", 4) != 0)
        return PMD_E_DATA;
    n -= 4;
    return (ssize_t)n;
}

int pmd_inflater_init(pmd_inflater_t *i, bool no_context_takeover)
{
    memset(i, 0, sizeof(*i));
    i->no_context_takeover = no_context_takeover;
    if (inflateInit2(&i->z, -15) != Z_OK)
        return PMD_E_NOMEM;
    i->ready = true;
    return PMD_OK;
}

void pmd_inflater_end(pmd_inflater_t *i)
{
    if (i->ready)
        inflateEnd(&i->z);
    i->ready = false;
}

/* Inflate in[0..len) into out, at most max bytes in all. */
static int inflate_part(pmd_inflater_t *i, const uint8_t *in, size_t len, size_t max,
                        pmd_buf_t *out, bool *ended)
{
    i->z.next_in = (Bytef *)in;
    i->z.avail_in = (uInt)len;
    while (i->z.avail_in > 0 && !*ended) {
        if (out->len == out->cap) {
            if (out->len > max)
                return PMD_E_TOO_BIG;
            size_t ncap = out->cap ? out->cap * 2 : 4096;
            if (ncap > max + 1)
                ncap = max + 1; /* one byte past the limit tells "too big" */
            if (ncap <= out->cap)
                return PMD_E_TOO_BIG;
            uint8_t *nb = realloc(out->buf, ncap);
            if (nb == NULL)
                return PMD_E_NOMEM;
            out->buf = nb;
            out->cap = ncap;
        }
        i->z.next_out = out->buf + out->len;
        i->z.avail_out = (uInt)(out->cap - out->len);
        int r = inflate(&i->z, Z_SYNC_FLUSH);
        out->len = out->cap - i->z.avail_out;
        if (out->len > max)
            return PMD_E_TOO_BIG;
        if (r == Z_STREAM_END)
            *ended = true;
        else if (r == Z_NEED_DICT || r == Z_DATA_ERROR || r == Z_STREAM_ERROR)
            return PMD_E_DATA;
        else if (r == Z_MEM_ERROR)
            return PMD_E_NOMEM;
        else if (r == Z_BUF_ERROR && i->z.avail_out != 0)
            return PMD_E_DATA; /* no progress with room to spare */
    }
    return PMD_OK;
}

int pmd_inflate(pmd_inflater_t *i, const uint8_t *in, size_t len, size_t max, pmd_buf_t *out)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!i->ready)
        return PMD_E_NOMEM;
    if (i->no_context_takeover && inflateReset(&i->z) != Z_OK)
        return PMD_E_DATA;
    size_t base = out->len;
    bool ended = false;
    int r = inflate_part(i, in, len, base + max, out, &ended);
    if (r == PMD_OK && !ended)
        r = inflate_part(i, tail, sizeof(tail), base + max, out, &ended);
    if (r == PMD_OK && ended) {
        /* The peer ended the DEFLATE stream (BFINAL): the next message
         * starts a new one. */
        if (inflateReset(&i->z) != Z_OK)
            r = PMD_E_DATA;
    }
    if (r != PMD_OK && !i->no_context_takeover)
        inflateReset(&i->z); /* the connection is being failed anyway */
    return r;
}
