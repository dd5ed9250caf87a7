/*
 * ws_handshake.c - HTTP/1.1 heads and the RFC 6455 opening handshake.
 *
 * Parsing happens in two steps. scan_head() walks the bytes that arrived
 * since the last call, looking for the empty line that ends the head; it is
 * the only part that runs on every read, and *scanned makes it resume where
 * it stopped, so a peer that trickles one byte per segment costs O(n). The
 * scan also rejects bytes that are never legal in a head (control characters
 * other than HTAB, CR and LF; DEL; CR not followed by LF), so garbage is
 * refused as soon as it shows up rather than after 8 KiB. Only once the head
 * is complete is it split into lines and fields, exactly once.
 *
 * A server-side read loop looks like this:
 *
 *     r = wsh_parse_request(c->in, c->in_len, &c->scanned, &req);
 *     if (r == WS_AGAIN) return 0;                  wait for more bytes
 *     if (r < 0) reply 400 or 431 and close;        ws_err_t, see below
 *     if (wsh_check_upgrade(&req, &up) != 101) reply wsh_write_error();
 *     else reply wsh_write_101(), then feed c->in + r onwards to the framer.
 *
 * The result depends only on the first min(len, WSH_MAX_HEAD) bytes and is
 * the same however the input was split across calls. Nothing here
 * allocates: the SHA-1 and base64 of the accept key are computed here
 * (FIPS 180-4, RFC 4648) rather than with a library that allocates on
 * first use and may fail there (OpenSSL 3.0 dereferences a NULL lock after
 * a failed allocation in its lazy initialisation), so the handshake works
 * the same under memory pressure. The SHA-1 is the checksum RFC 6455
 * prescribes, not a security mechanism.
 */
#include "wsproto/ws_handshake.h"
#include "wsproto/msg.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* RFC 6455 section 1.3. */
#define WSH_GUID      "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WSH_SHA1_LEN  20
#define WSH_NONCE_LEN 16

/* ---- Character classes and comparisons ---- */

/* RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
 * "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
        return true;
    default:
        return false;
    }
}

/* Bytes that may not appear anywhere in a head outside a line ending. */
static bool is_bad_ctl(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool is_b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool mem_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
            return false;
    return true;
}

static bool str_is(wsh_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* ---- Head scanning and line splitting ---- */

/* Find the end of the head in buf[0..len), resuming at *scanned. Returns the
 * head length (through the LF of the empty line), WS_AGAIN, WS_E_HTTP_BAD or
 * WS_E_HTTP_TOO_BIG. Looks back at most two bytes before *scanned. */
static int scan_head(const unsigned char *buf, size_t len, size_t *scanned)
{
    size_t lim = len < WSH_MAX_HEAD ? len : WSH_MAX_HEAD;
    size_t i = *scanned;

    if (i > lim) /* not from a previous call on this buffer: start over */
        i = 0;
    for (; i < lim; i++) {
        unsigned char c = buf[i];
        if (i > 0 && buf[i - 1] == '\r' && c != '\n')
            return WS_E_HTTP_BAD;
        if (c == '\n') {
            size_t start = i; /* where the line ending at this LF begins */
            if (start > 0 && buf[start - 1] == '\r')
                start--;
            if (start == 0 || buf[start - 1] == '\n') {
                *scanned = i + 1;
                return (int)(i + 1);
            }
        } else if (is_bad_ctl(c)) {
            return WS_E_HTTP_BAD;
        }
    }
    if (len >= WSH_MAX_HEAD)
        return WS_E_HTTP_TOO_BIG;
    *scanned = len;
    return WS_AGAIN;
}

/* The line starting at p, without its CRLF or LF; returns the start of the
 * next line. scan_head() guarantees an LF before end and no CR elsewhere. */
static const char *next_line(const char *p, const char *end, wsh_str_t *line)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    line->p = p;
    line->len = (size_t)(nl - p);
    if (line->len > 0 && nl[-1] == '\r')
        line->len--;
    return nl + 1;
}

/* "HTTP/1.x" at the start of s; returns x or -1. */
static int parse_version(const char *s, size_t len)
{
    if (len < 8 || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9')
        return -1;
    return s[7] - '0';
}

/* name ":" OWS value OWS. A leading SP or HTAB (obsolete line folding) and
 * whitespace before the colon both fail the token check. The value needs no
 * check of its own: scan_head() already refused every control character
 * except HTAB, which RFC 9110 allows inside field values. */
static bool parse_header_line(wsh_str_t line, wsh_header_t *h)
{
    const char *s = line.p, *e = line.p + line.len, *q = s;

    while (q < e && is_tchar((unsigned char)*q))
        q++;
    if (q == s || q == e || *q != ':')
        return false;
    h->name.p = s;
    h->name.len = (size_t)(q - s);
    q++;
    while (q < e && is_ows(*q))
        q++;
    while (e > q && is_ows(e[-1]))
        e--;
    h->value.p = q;
    h->value.len = (size_t)(e - q);
    return true;
}

/* The header lines from p up to and including the empty line at end. */
static int parse_headers(const char *p, const char *end, wsh_header_t *hs, size_t *num)
{
    size_t n = 0;
    wsh_str_t line;

    *num = 0;
    for (;;) {
        p = next_line(p, end, &line);
        if (line.len == 0) /* scan_head() stopped at the first empty line */
            break;
        if (n == WSH_MAX_HEADERS)
            return WS_E_HTTP_TOO_BIG;
        if (!parse_header_line(line, &hs[n]))
            return WS_E_HTTP_BAD;
        n++;
    }
    *num = n;
    return WS_OK;
}

/* method SP request-target SP HTTP-version. The target is non-empty and
 * made of visible ASCII only (RFC 3986 has no raw spaces or 8-bit bytes). */
static bool parse_request_line(wsh_str_t line, wsh_request_t *req)
{
    const char *p = line.p, *e = line.p + line.len, *s;

    for (s = p; p < e && is_tchar((unsigned char)*p); p++)
        ;
    if (p == s || p == e || *p != ' ')
        return false;
    req->method.p = s;
    req->method.len = (size_t)(p - s);
    for (s = ++p; p < e && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f; p++)
        ;
    if (p == s || p == e || *p != ' ')
        return false;
    req->target.p = s;
    req->target.len = (size_t)(p - s);
    p++;
    if (e - p != 8 || (req->minor_version = parse_version(p, 8)) < 0)
        return false;

    const char *qm = memchr(req->target.p, '?', req->target.len);
    req->path.p = req->target.p;
    req->path.len = qm != NULL ? (size_t)(qm - req->target.p) : req->target.len;
    req->query.p = qm != NULL ? qm + 1 : req->target.p + req->target.len;
    req->query.len = req->target.len - req->path.len - (qm != NULL ? 1 : 0);
    return true;
}

/* HTTP-version SP 3DIGIT [SP reason-phrase]. The SP before an empty reason
 * may be missing, as some servers send it that way. */
static bool parse_status_line(wsh_str_t line, wsh_response_t *res)
{
    const char *p = line.p, *e = line.p + line.len;

    if ((res->minor_version = parse_version(p, line.len)) < 0)
        return false;
    p += 8;
    if (e - p < 4 || p[0] != ' ')
        return false;
    p++;
    for (int i = 0; i < 3; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    res->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (res->status < 100 || res->status > 599)
        return false;
    p += 3;
    if (p < e && *p++ != ' ')
        return false;
    res->reason.p = p;
    res->reason.len = (size_t)(e - p);
    return true;
}

/* ---- Parsers ---- */

/* What the request and response parsers share: find the end of the head,
 * hand the first line to parse_line, then parse the header lines. */
typedef bool (*first_line_fn)(wsh_str_t line, void *out);

static int parse_head(const char *buf, size_t len, size_t *scanned, void *out,
                      first_line_fn parse_line, wsh_header_t *hs, size_t *num)
{
    size_t from_start = 0;
    wsh_str_t line;
    int r;

    if (out == NULL || (buf == NULL && len > 0))
        return WS_E_INVAL;
    if (scanned == NULL)
        scanned = &from_start;
    if ((r = scan_head((const unsigned char *)buf, len, scanned)) <= 0)
        return r;

    const char *end = buf + r;
    const char *p = next_line(buf, end, &line);
    if (!parse_line(line, out))
        return WS_E_HTTP_BAD;
    int hr = parse_headers(p, end, hs, num);
    return hr < 0 ? hr : r;
}

static bool request_line(wsh_str_t line, void *out)
{
    return parse_request_line(line, out);
}

static bool status_line(wsh_str_t line, void *out)
{
    return parse_status_line(line, out);
}

int wsh_parse_request(const char *buf, size_t len, size_t *scanned, wsh_request_t *req)
{
    if (req == NULL)
        return WS_E_INVAL;
    return parse_head(buf, len, scanned, req, request_line, req->headers, &req->num_headers);
}

int wsh_parse_response(const char *buf, size_t len, size_t *scanned, wsh_response_t *res)
{
    if (res == NULL)
        return WS_E_INVAL;
    return parse_head(buf, len, scanned, res, status_line, res->headers, &res->num_headers);
}

/* ---- Header lookup and token lists ---- */

const wsh_str_t *wsh_header_get(const wsh_header_t *headers, size_t n, const char *name)
{
    if (headers == NULL || name == NULL)
        return NULL;
    size_t nlen = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (headers[i].name.len == nlen && mem_ieq(headers[i].name.p, name, nlen))
            return &headers[i].value;
    return NULL;
}

/* How many headers are called name. */
static size_t header_count(const wsh_header_t *headers, size_t n, const char *name)
{
    size_t nlen = strlen(name), count = 0;
    for (size_t i = 0; i < n; i++)
        if (headers[i].name.len == nlen && mem_ieq(headers[i].name.p, name, nlen))
            count++;
    return count;
}

/* Skip the rest of a list element (parameters, stray words) up to the next
 * comma that is not inside a quoted string; returns a pointer to that comma
 * or to e. */
static const char *skip_element(const char *p, const char *e)
{
    bool quoted = false;

    for (; p < e; p++) {
        if (quoted) {
            if (*p == '\\' && p + 1 < e)
                p++;
            else if (*p == '"')
                quoted = false;
        } else if (*p == '"') {
            quoted = true;
        } else if (*p == ',') {
            break;
        }
    }
    return p;
}

/* Token-list membership, case-insensitive (HTTP tokens) or exact
 * (subprotocol names, which clients compare byte for byte). */
static bool list_has(wsh_str_t v, const char *tok, size_t toklen, bool icase)
{
    const char *p = v.p, *e = v.p + v.len;

    if (toklen == 0 || v.p == NULL)
        return false;
    while (p < e) {
        while (p < e && (is_ows(*p) || *p == ','))
            p++;
        const char *s = p;
        while (p < e && *p != ',' && *p != ';' && *p != '"' && !is_ows(*p))
            p++;
        size_t n = (size_t)(p - s);
        while (p < e && is_ows(*p))
            p++;
        bool whole = p == e || *p == ',' || *p == ';';
        if (whole && n == toklen && (icase ? mem_ieq(s, tok, n) : memcmp(s, tok, n) == 0))
            return true;
        p = skip_element(p, e);
    }
    return false;
}

bool wsh_has_token(wsh_str_t value, const char *token)
{
    return token != NULL && list_has(value, token, strlen(token), true);
}

/* True if any header called name lists token; list headers may repeat. */
static bool any_has(const wsh_header_t *hs, size_t n, const char *name, const char *token,
                    bool icase)
{
    size_t nlen = strlen(name), tlen = strlen(token);
    for (size_t i = 0; i < n; i++)
        if (hs[i].name.len == nlen && mem_ieq(hs[i].name.p, name, nlen) &&
            list_has(hs[i].value, token, tlen, icase))
            return true;
    return false;
}

/* ---- Server side: validation ---- */

bool wsh_wants_upgrade(const wsh_request_t *req)
{
    if (req == NULL)
        return false;
    return wsh_header_get(req->headers, req->num_headers, "Upgrade") != NULL ||
           wsh_header_get(req->headers, req->num_headers, "Sec-WebSocket-Key") != NULL;
}

/* 22 base64 characters and "==": exactly 16 bytes once decoded. */
static bool key_valid(const wsh_str_t *k)
{
    if (k == NULL || k->len != WSH_KEY_LEN)
        return false;
    for (size_t i = 0; i < WSH_KEY_LEN - 2; i++)
        if (!is_b64((unsigned char)k->p[i]))
            return false;
    return k->p[WSH_KEY_LEN - 2] == '=' && k->p[WSH_KEY_LEN - 1] == '=';
}

static int reject(wsh_upgrade_t *up, int status, const char *why)
{
    up->status = status;
    up->error = why;
    return status;
}

int wsh_check_upgrade(const wsh_request_t *req, wsh_upgrade_t *up)
{
    if (req == NULL || up == NULL)
        return WS_E_INVAL;
    memset(up, 0, sizeof *up);

    const wsh_header_t *hs = req->headers;
    size_t n = req->num_headers;
    const wsh_str_t *v;

    if ((v = wsh_header_get(hs, n, "Origin")) != NULL)
        up->origin = *v;
    if ((v = wsh_header_get(hs, n, "Sec-WebSocket-Extensions")) != NULL)
        up->extensions = *v;
    up->subprotocol = any_has(hs, n, "Sec-WebSocket-Protocol", WSH_SUBPROTOCOL, false);

    /* Methods are case-sensitive (RFC 9110 9.1). */
    if (!str_is(req->method, "GET"))
        return reject(up, 400, "method must be GET");
    if (req->minor_version < 1)
        return reject(up, 400, "HTTP/1.1 or later required");
    if (!any_has(hs, n, "Upgrade", "websocket", true))
        return reject(up, 400, "missing Upgrade: websocket");
    if (!any_has(hs, n, "Connection", "upgrade", true))
        return reject(up, 400, "missing Connection: upgrade");
    /* RFC 6455 11.3.1: the key must not appear more than once. */
    v = wsh_header_get(hs, n, "Sec-WebSocket-Key");
    if (header_count(hs, n, "Sec-WebSocket-Key") != 1 || !key_valid(v))
        return reject(up, 400, "missing or invalid Sec-WebSocket-Key");
    /* Every Sec-WebSocket-Version line must say exactly 13. */
    if (header_count(hs, n, "Sec-WebSocket-Version") == 0)
        return reject(up, 426, "missing Sec-WebSocket-Version");
    for (size_t i = 0; i < n; i++)
        if (hs[i].name.len == 21 && mem_ieq(hs[i].name.p, "Sec-WebSocket-Version", 21) &&
            !str_is(hs[i].value, "13"))
            return reject(up, 426, "unsupported Sec-WebSocket-Version");

    wsh_accept_key(v->p, v->len, up->accept);
    up->status = 101;
    return 101;
}

/* ---- SHA-1 (FIPS 180-4 section 6.1) and base64 (RFC 4648 section 4) ---- */

typedef struct sha1 {
    uint32_t h[5];
    uint8_t block[64];
    size_t used;    /* bytes in block */
    uint64_t total; /* bytes hashed */
} sha1_t;

static uint32_t rol32(uint32_t x, unsigned k)
{
    return x << k | x >> (32 - k);
}

static void sha1_block_c(uint32_t h[5], const uint8_t *p)
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);

    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t tmp = rol32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* The same compression with the x86 SHA extensions (Intel SHA-NI, on
 * Intel since Goldmont/Ice Lake and AMD since Zen): four rounds per
 * SHA1RNDS4, the message schedule in SHA1MSG1/SHA1MSG2, several times
 * faster than the portable version. ABCD live in one register with A in
 * the top lane; E rides in the top lane of a second one, which SHA1NEXTE
 * derives from A four rounds earlier. Chosen once at start-up from CPUID,
 * so the result never depends on the CPU, only the speed (the unit tests
 * build the portable one alone too, with WSH_PORTABLE_SHA1). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(WSH_PORTABLE_SHA1)
#include <cpuid.h>
#include <immintrin.h>

#define SHA1_NI 1

/* Message words 4i..4i+3, i >= 4, from the four before:
 * W[t] = rol1(W[t-3] ^ W[t-8] ^ W[t-14] ^ W[t-16]). */
#define SHA1_NI_NEXT(m, i)                                                                         \
    _mm_sha1msg2_epu32(                                                                            \
        _mm_xor_si128(_mm_sha1msg1_epu32(m[(i)&3], m[((i) + 1) & 3]), m[((i) + 2) & 3]),           \
        m[((i) + 3) & 3])

/* Rounds 4i..4i+3 with round function f (0..3, one per 20 rounds). */
#define SHA1_NI_ROUNDS(f, i)                                                                       \
    do {                                                                                           \
        if ((i) >= 4)                                                                              \
            m[(i)&3] = SHA1_NI_NEXT(m, i);                                                         \
        __m128i e = (i) == 0 ? _mm_add_epi32(e0, m[0]) : _mm_sha1nexte_epu32(prev, m[(i)&3]);      \
        prev = abcd;                                                                               \
        abcd = _mm_sha1rnds4_epu32(abcd, e, f);                                                    \
    } while (0)

__attribute__((target("sha,sse4.1"))) static void sha1_block_ni(uint32_t h[5], const uint8_t *p)
{
    /* Big-endian words, first word in the top lane: all 16 bytes reversed. */
    const __m128i swap = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m128i abcd0 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)h), 0x1B);
    __m128i e0 = _mm_set_epi32((int)h[4], 0, 0, 0);
    __m128i abcd = abcd0, prev = abcd0, m[4];
    for (int i = 0; i < 4; i++)
        m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)), swap);
    for (int i = 0; i < 5; i++)
        SHA1_NI_ROUNDS(0, i);
    for (int i = 5; i < 10; i++)
        SHA1_NI_ROUNDS(1, i);
    for (int i = 10; i < 15; i++)
        SHA1_NI_ROUNDS(2, i);
    for (int i = 15; i < 20; i++)
        SHA1_NI_ROUNDS(3, i);
    /* E after round 79 is rol30 of A before rounds 76..79. */
    __m128i e = _mm_sha1nexte_epu32(prev, e0);
    abcd = _mm_shuffle_epi32(_mm_add_epi32(abcd, abcd0), 0x1B);
    _mm_storeu_si128((__m128i *)(void *)h, abcd);
    h[4] = (uint32_t)_mm_extract_epi32(e, 3);
}

static int sha1_has_ni;

/* CPUID leaf 7 EBX bit 29: SHA; leaf 1 ECX bits 9 and 19: SSSE3, SSE4.1. */
__attribute__((constructor)) static void sha1_pick(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA))
        sha1_has_ni = 1;
}
#endif

static void sha1_block(uint32_t h[5], const uint8_t *p)
{
#ifdef SHA1_NI
    if (sha1_has_ni) {
        sha1_block_ni(h, p);
        return;
    }
#endif
    sha1_block_c(h, p);
}

static void sha1_init(sha1_t *s)
{
    static const uint32_t h0[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    memcpy(s->h, h0, sizeof h0);
    s->used = 0;
    s->total = 0;
}

static void sha1_update(sha1_t *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->total += len;
    while (len > 0) {
        size_t n = sizeof s->block - s->used;
        if (n > len)
            n = len;
        memcpy(s->block + s->used, p, n);
        s->used += n;
        p += n;
        len -= n;
        if (s->used == sizeof s->block) {
            sha1_block(s->h, s->block);
            s->used = 0;
        }
    }
}

/* Padding: 0x80, zeros up to 56 mod 64, the length in bits big-endian. */
static void sha1_final(sha1_t *s, uint8_t out[WSH_SHA1_LEN])
{
    uint64_t bits = s->total * 8;
    uint8_t pad[72] = {0x80};
    size_t n = s->used < 56 ? 56 - s->used : 120 - s->used;
    for (int i = 0; i < 8; i++)
        pad[n + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(s, pad, n + 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* base64 of in[0..n) with padding, NUL-terminated: 4 * ceil(n / 3) + 1
 * bytes of out. */
static void base64(char *out, const uint8_t *in, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = abc[v >> 18];
        *out++ = abc[(v >> 12) & 63];
        *out++ = abc[(v >> 6) & 63];
        *out++ = abc[v & 63];
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = abc[v >> 18];
        *out++ = abc[(v >> 12) & 63];
        *out++ = n - i == 2 ? abc[(v >> 6) & 63] : '=';
        *out++ = '=';
    }
    *out = '\0';
}

void wsh_accept_key(const char *key, size_t key_len, char out[WSH_ACCEPT_LEN + 1])
{
    uint8_t md[WSH_SHA1_LEN];
    sha1_t s;

    if (out == NULL)
        return;
    out[0] = '\0';
    if (key == NULL && key_len > 0)
        return;
    sha1_init(&s);
    if (key_len > 0)
        sha1_update(&s, key, key_len);
    sha1_update(&s, WSH_GUID, sizeof WSH_GUID - 1);
    sha1_final(&s, md);
    base64(out, md, WSH_SHA1_LEN); /* 20 bytes -> 28 characters and a NUL */
}

/* ---- Responses ---- */

const char *wsh_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        break;
    }
    /* RFC 9110 15: an unknown code is understood as its class's x00. */
    if (status >= 100 && status < 200)
        return "Informational";
    if (status >= 200 && status < 300)
        return "Success";
    if (status >= 300 && status < 400)
        return "Redirection";
    if (status >= 400 && status < 500)
        return "Client Error";
    if (status >= 500 && status < 600)
        return "Server Error";
    return "Unknown";
}

/* A bounded output buffer: appends stop at the first overflow, and
 * out_finish() turns that into WS_E_NOSPACE. */
typedef struct out {
    char *p;
    size_t cap, len;
    bool over;
} out_t;

static void out_mem(out_t *o, const char *s, size_t n)
{
    if (o->over || n == 0)
        return;
    if (n > o->cap - o->len) {
        o->over = true;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void out_str(out_t *o, const char *s)
{
    out_mem(o, s, strlen(s));
}

static void out_uint(out_t *o, unsigned long long v)
{
    char tmp[20];
    out_mem(o, tmp, msg_u64(tmp, v));
}

/* A string literal, its length known at compile time. */
#define OUT_LIT(o, lit) out_mem((o), (lit), sizeof(lit) - 1)

static void out_line(out_t *o, const char *name, const char *value)
{
    out_str(o, name);
    out_str(o, ": ");
    out_str(o, value);
    out_str(o, "\r\n");
}

/* The length written, NUL-terminated when there is room for the NUL. */
static int out_finish(out_t *o)
{
    if (o->over || o->len > INT_MAX)
        return WS_E_NOSPACE;
    if (o->len < o->cap)
        o->p[o->len] = '\0';
    return (int)o->len;
}

/* A header value we are asked to send: no control characters except HTAB,
 * so nobody can smuggle a CRLF into our head. */
static bool value_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if (is_bad_ctl((unsigned char)*s) || *s == '\r' || *s == '\n')
            return false;
    return true;
}

/* Visible ASCII only, non-empty: request targets, Host, keys. */
static bool word_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* Extra header lines: each non-empty, each ending in CRLF, nothing else
 * that could end the head early or break a line. */
static bool extra_ok(const char *s)
{
    const char *line = s;

    for (; *s != '\0'; s++) {
        if (*s == '\r') {
            if (s[1] != '\n' || s == line)
                return false;
            s++;
            line = s + 1;
        } else if (*s == '\n' || is_bad_ctl((unsigned char)*s)) {
            return false;
        }
    }
    return s == line;
}

static void out_status_line(out_t *o, int status)
{
    out_str(o, "HTTP/1.1 ");
    out_uint(o, (unsigned long long)status);
    out_str(o, " ");
    out_str(o, wsh_status_text(status));
    out_str(o, "\r\n");
}

int wsh_write_101(char *out, size_t cap, const wsh_upgrade_t *up, const char *extensions)
{
    out_t o = {out, cap, 0, false};

    if ((out == NULL && cap > 0) || up == NULL ||
        strnlen(up->accept, sizeof up->accept) != WSH_ACCEPT_LEN)
        return WS_E_INVAL;
    if (extensions != NULL && !value_ok(extensions))
        return WS_E_INVAL;
    /* Every handshake writes this: literals, no formatting. */
    OUT_LIT(&o, "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: ");
    out_mem(&o, up->accept, WSH_ACCEPT_LEN);
    OUT_LIT(&o, "\r\n");
    if (up->subprotocol)
        out_line(&o, "Sec-WebSocket-Protocol", WSH_SUBPROTOCOL);
    if (extensions != NULL && extensions[0] != '\0')
        out_line(&o, "Sec-WebSocket-Extensions", extensions);
    OUT_LIT(&o, "\r\n");
    return out_finish(&o);
}

/* RFC 9110 8.6: no Content-Length on 1xx and 204 responses. */
static bool has_no_content(int status)
{
    return status < 200 || status == 204;
}

int wsh_write_head(char *out, size_t cap, int status, const char *content_type,
                   size_t content_length, const char *extra)
{
    out_t o = {out, cap, 0, false};

    if ((out == NULL && cap > 0) || status < 100 || status > 599)
        return WS_E_INVAL;
    if ((content_type != NULL && !value_ok(content_type)) || (extra != NULL && !extra_ok(extra)))
        return WS_E_INVAL;
    out_status_line(&o, status);
    if (content_type != NULL)
        out_line(&o, "Content-Type", content_type);
    if (!has_no_content(status)) {
        out_str(&o, "Content-Length: ");
        out_uint(&o, (unsigned long long)content_length);
        out_str(&o, "\r\n");
    }
    out_line(&o, "Connection", "close");
    if (extra != NULL)
        out_str(&o, extra);
    out_str(&o, "\r\n");
    return out_finish(&o);
}

int wsh_write_error(char *out, size_t cap, int status, const char *message)
{
    const char *extra = NULL;

    /* These statuses cannot carry a body. */
    if (has_no_content(status) || status == 304)
        return WS_E_INVAL;
    if (message == NULL)
        message = wsh_status_text(status);
    if (status == 426)
        extra = "Sec-WebSocket-Version: 13\r\n";
    else if (status == 405) /* RFC 9110 15.5.6: 405 must list the allowed methods */
        extra = "Allow: GET\r\n";

    size_t mlen = strlen(message);
    int r = wsh_write_head(out, cap, status, "text/plain", mlen + 1, extra);
    if (r < 0)
        return r;

    out_t o = {out, cap, (size_t)r, false};
    out_mem(&o, message, mlen);
    out_str(&o, "\n");
    return out_finish(&o);
}

/* ---- Client side ---- */

void wsh_make_key(const uint8_t nonce[16], char out[WSH_KEY_LEN + 1])
{
    if (out == NULL)
        return;
    out[0] = '\0';
    if (nonce != NULL) /* 16 bytes -> 24 characters and a NUL */
        base64(out, nonce, WSH_NONCE_LEN);
}

int wsh_write_request(char *out, size_t cap, const char *host, const char *target, const char *key,
                      const char *extra)
{
    out_t o = {out, cap, 0, false};

    if ((out == NULL && cap > 0) || host == NULL || target == NULL || key == NULL)
        return WS_E_INVAL;
    if (!word_ok(host) || !word_ok(target) || !word_ok(key) || (extra != NULL && !extra_ok(extra)))
        return WS_E_INVAL;
    out_str(&o, "GET ");
    out_str(&o, target);
    out_str(&o, " HTTP/1.1\r\n");
    out_line(&o, "Host", host);
    out_line(&o, "Upgrade", "websocket");
    out_line(&o, "Connection", "Upgrade");
    out_line(&o, "Sec-WebSocket-Key", key);
    out_line(&o, "Sec-WebSocket-Version", "13");
    if (extra != NULL)
        out_str(&o, extra);
    out_str(&o, "\r\n");
    return out_finish(&o);
}

int wsh_check_101(const wsh_response_t *res, const char *key)
{
    char expect[WSH_ACCEPT_LEN + 1];
    const wsh_str_t *acc;

    if (res == NULL || key == NULL)
        return WS_E_INVAL;
    if (res->status != 101)
        return WS_E_HTTP_BAD;
    if (!any_has(res->headers, res->num_headers, "Upgrade", "websocket", true) ||
        !any_has(res->headers, res->num_headers, "Connection", "upgrade", true))
        return WS_E_HTTP_BAD;
    acc = wsh_header_get(res->headers, res->num_headers, "Sec-WebSocket-Accept");
    if (acc == NULL || header_count(res->headers, res->num_headers, "Sec-WebSocket-Accept") != 1)
        return WS_E_HTTP_BAD;
    wsh_accept_key(key, strlen(key), expect);
    if (acc->len != WSH_ACCEPT_LEN || memcmp(acc->p, expect, WSH_ACCEPT_LEN) != 0)
        return WS_E_HTTP_BAD;
    return WS_OK;
}
