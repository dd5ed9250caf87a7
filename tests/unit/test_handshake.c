/*
 * test_handshake.c - unit tests for ws_handshake: the request and response
 * head parsers, header and token helpers, the upgrade validator, the
 * Sec-WebSocket-Accept computation, the response and request writers, and a
 * client/server round trip.
 *
 * Every parser input goes through all_ways(): parsed whole, split in two at
 * every offset, fed one byte at a time and in random pieces, each time as a
 * connection would do it (a growing buffer, *scanned carried between calls)
 * and each time from a copy that ends at a PROT_NONE page. All ways must give
 * the same result and, on success, the same fields at the same offsets.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "testutil.h"
#include "wsproto/ws_handshake.h"

#define S(lit) lit, (sizeof(lit) - 1)

#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

#define BIG (WSH_MAX_HEAD + 1024)

/* ---- The all-ways harness ---- */

typedef enum kind { REQ, RES } kind_t;

typedef struct parsed {
    wsh_request_t req;
    wsh_response_t res;
    const char *base;
} parsed_t;

static int parse_kind(kind_t k, const char *buf, size_t len, size_t *scanned, parsed_t *p)
{
    p->base = buf;
    if (k == REQ)
        return wsh_parse_request(buf, len, scanned, &p->req);
    return wsh_parse_response(buf, len, scanned, &p->res);
}

/* The comparisons below run millions of times per suite; Check records a
 * location for every ck_assert, so they compare in plain C and the callers
 * assert once. */
static bool str_same(wsh_str_t a, const char *abase, wsh_str_t b, const char *bbase)
{
    return a.len == b.len && a.p - abase == b.p - bbase;
}

static bool headers_same(const wsh_header_t *a, const char *abase, const wsh_header_t *b,
                         const char *bbase, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!str_same(a[i].name, abase, b[i].name, bbase) ||
            !str_same(a[i].value, abase, b[i].value, bbase))
            return false;
    return true;
}

static bool parsed_same(kind_t k, const parsed_t *a, const parsed_t *b)
{
    if (k == REQ)
        return str_same(a->req.method, a->base, b->req.method, b->base) &&
               str_same(a->req.target, a->base, b->req.target, b->base) &&
               str_same(a->req.path, a->base, b->req.path, b->base) &&
               str_same(a->req.query, a->base, b->req.query, b->base) &&
               a->req.minor_version == b->req.minor_version &&
               a->req.num_headers == b->req.num_headers &&
               headers_same(a->req.headers, a->base, b->req.headers, b->base, a->req.num_headers);
    return a->res.minor_version == b->res.minor_version && a->res.status == b->res.status &&
           str_same(a->res.reason, a->base, b->res.reason, b->base) &&
           a->res.num_headers == b->res.num_headers &&
           headers_same(a->res.headers, a->base, b->res.headers, b->base, a->res.num_headers);
}

static size_t ends[BIG + 2];
static parsed_t scratch;

/* Feed s as a growing buffer whose length steps through ends[0..n). Returns
 * the first result that is not WS_AGAIN (or WS_AGAIN) and in *at the buffer
 * length at which it came. Every WS_AGAIN must leave *scanned at the
 * length seen; a violation is returned as 1000. */
static int feed(kind_t k, const char *s, size_t n, size_t *at)
{
    size_t scanned = 0;
    int r = WS_AGAIN;

    for (size_t i = 0; i < n; i++) {
        const char *buf = (const char *)guard_copy(s, ends[i]);
        r = parse_kind(k, buf, ends[i], &scanned, &scratch);
        *at = ends[i];
        if (r != WS_AGAIN)
            return r;
        if (scanned != ends[i])
            return 1000;
    }
    return r;
}

static void check_feed(kind_t k, const char *s, size_t n, int expect, const parsed_t *whole,
                       const char *how)
{
    size_t at = 0;
    int r = feed(k, s, n, &at);

    if (r != expect)
        ck_abort_msg("%s: got %d, want %d (decided at %zu)", how, r, expect, at);
    if (expect > 0 && (at < (size_t)expect || !parsed_same(k, whole, &scratch)))
        ck_abort_msg("%s: fields differ from the whole parse (decided at %zu)", how, at);
}

/* Parse s[0..len) every way; all must return expect. The whole-buffer
 * parse is left in *out (its copy stays valid: guard slot 1). */
static int all_ways(kind_t k, const char *s, size_t len, int expect, parsed_t *out)
{
    static parsed_t whole;
    parsed_t *w = out != NULL ? out : &whole;
    const char *buf = (const char *)guard_copy_slot(1, s, len);
    size_t scanned = 0;
    int r;

    ck_assert_uint_le(len, BIG);
    r = parse_kind(k, buf, len, NULL, w);
    ck_assert_msg(r == expect, "whole: got %d, want %d", r, expect);
    r = parse_kind(k, buf, len, &scanned, w);
    ck_assert_int_eq(r, expect);

    /* Two pieces, cut at every offset. */
    for (size_t cut = 0; cut <= len; cut++) {
        ends[0] = cut;
        ends[1] = len;
        check_feed(k, s, 2, expect, w, "split");
    }

    /* One byte at a time: a success must come exactly with its last byte. */
    for (size_t i = 0; i < len; i++)
        ends[i] = i + 1;
    size_t at = 0;
    r = feed(k, s, len, &at);
    ck_assert_msg(r == expect, "bytewise: got %d, want %d", r, expect);
    if (expect > 0) {
        ck_assert_uint_eq(at, (size_t)expect);
        ck_assert(parsed_same(k, w, &scratch));
    }

    /* Random pieces. */
    for (uint64_t seed = 1; seed <= 24; seed++) {
        xorshift_t x = {seed * 0x9E3779B97F4A7C15ull};
        size_t n = 0, pos = 0, maxstep = len / 3 + 1;
        while (pos < len) {
            pos += xorshift_range(&x, 1, maxstep);
            ends[n++] = pos < len ? pos : len;
        }
        check_feed(k, s, n, expect, w, "random");
    }
    return expect;
}

static bool str_eq(wsh_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

#define ck_assert_wstr(s, lit)                                                                     \
    ck_assert_msg(str_eq((s), (lit)), "got \"%.*s\", want \"%s\"", (int)(s).len, (s).p, (lit))

/* ---- Request parser: valid input ---- */

static const char rfc_request[] = "GET /chat HTTP/1.1\r\n"
                                  "Host: server.example.com\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: " RFC_KEY "\r\n"
                                  "Origin: http://example.com\r\n"
                                  "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "\r\n";

START_TEST(req_rfc_example)
{
    parsed_t p;
    all_ways(REQ, S(rfc_request), (int)sizeof rfc_request - 1, &p);
    ck_assert_wstr(p.req.method, "GET");
    ck_assert_wstr(p.req.target, "/chat");
    ck_assert_wstr(p.req.path, "/chat");
    ck_assert_uint_eq(p.req.query.len, 0);
    ck_assert_int_eq(p.req.minor_version, 1);
    ck_assert_uint_eq(p.req.num_headers, 7);
    ck_assert_wstr(p.req.headers[0].name, "Host");
    ck_assert_wstr(p.req.headers[0].value, "server.example.com");
    ck_assert_wstr(p.req.headers[3].name, "Sec-WebSocket-Key");
    ck_assert_wstr(p.req.headers[3].value, RFC_KEY);
    ck_assert_wstr(p.req.headers[5].value, "chat, superchat");
    ck_assert_wstr(p.req.headers[6].name, "Sec-WebSocket-Version");
    ck_assert_wstr(p.req.headers[6].value, "13");
}
END_TEST

START_TEST(req_target_path_and_query)
{
    static const char a[] = "GET /ws?token=abc&x=1 HTTP/1.1\r\n\r\n";
    static const char b[] = "GET /x? HTTP/1.1\r\n\r\n";
    static const char c[] = "OPTIONS * HTTP/1.1\r\n\r\n";
    static const char d[] = "GET /a?b?c HTTP/1.1\r\n\r\n";
    parsed_t p;

    all_ways(REQ, S(a), (int)sizeof a - 1, &p);
    ck_assert_wstr(p.req.target, "/ws?token=abc&x=1");
    ck_assert_wstr(p.req.path, "/ws");
    ck_assert_wstr(p.req.query, "token=abc&x=1");
    ck_assert_uint_eq(p.req.num_headers, 0);

    all_ways(REQ, S(b), (int)sizeof b - 1, &p);
    ck_assert_wstr(p.req.path, "/x");
    ck_assert_uint_eq(p.req.query.len, 0);

    all_ways(REQ, S(c), (int)sizeof c - 1, &p);
    ck_assert_wstr(p.req.method, "OPTIONS");
    ck_assert_wstr(p.req.target, "*");

    all_ways(REQ, S(d), (int)sizeof d - 1, &p);
    ck_assert_wstr(p.req.path, "/a");
    ck_assert_wstr(p.req.query, "b?c");
}
END_TEST

START_TEST(req_bare_lf_and_mixed_endings)
{
    static const char a[] = "GET / HTTP/1.1\nHost: a\nX: y\n\n";
    static const char b[] = "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\n";
    static const char c[] = "GET / HTTP/1.1\nHost: a\r\n\r\n";
    parsed_t p;

    all_ways(REQ, S(a), (int)sizeof a - 1, &p);
    ck_assert_uint_eq(p.req.num_headers, 2);
    ck_assert_wstr(p.req.headers[0].value, "a");
    ck_assert_wstr(p.req.headers[1].value, "y");
    all_ways(REQ, S(b), (int)sizeof b - 1, &p);
    ck_assert_uint_eq(p.req.num_headers, 2);
    ck_assert_wstr(p.req.headers[1].name, "X");
    all_ways(REQ, S(c), (int)sizeof c - 1, &p);
    ck_assert_wstr(p.req.headers[0].value, "a");
}
END_TEST

START_TEST(req_bytes_after_head_not_looked_at)
{
    /* An early masked WebSocket frame, with bytes that would be illegal in a
     * head, right after the blank line. */
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
                             "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\x00\r\r";
    parsed_t p;
    int head = (int)strlen("GET / HTTP/1.1\r\nHost: a\r\n\r\n");

    all_ways(REQ, S(in), head, &p);
    ck_assert_uint_eq(p.req.num_headers, 1);
}
END_TEST

START_TEST(req_values_trimmed)
{
    static const char in[] = "GET / HTTP/1.1\r\n"
                             "A:   x y \t \r\n"
                             "B:\r\n"
                             "C: \t \r\n"
                             "D:\tz\r\n"
                             "E: caf\xc3\xa9\r\n"
                             "F: a\tb\r\n"
                             "\r\n";
    parsed_t p;

    all_ways(REQ, S(in), (int)sizeof in - 1, &p);
    ck_assert_uint_eq(p.req.num_headers, 6);
    ck_assert_wstr(p.req.headers[0].value, "x y");
    ck_assert_uint_eq(p.req.headers[1].value.len, 0);
    ck_assert_uint_eq(p.req.headers[2].value.len, 0);
    ck_assert_wstr(p.req.headers[3].value, "z");
    ck_assert_wstr(p.req.headers[4].value, "caf\xc3\xa9");
    ck_assert_wstr(p.req.headers[5].value, "a\tb");
}
END_TEST

START_TEST(req_token_characters_in_names_and_methods)
{
    static const char in[] = "M-S.E_A!#$%&'*+^`|~9 / HTTP/1.0\r\n"
                             "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n";
    parsed_t p;

    all_ways(REQ, S(in), (int)sizeof in - 1, &p);
    ck_assert_wstr(p.req.method, "M-S.E_A!#$%&'*+^`|~9");
    ck_assert_int_eq(p.req.minor_version, 0);
    ck_assert_wstr(p.req.headers[0].name, "!#$%&'*+-.^_`|~09azAZ");
}
END_TEST

START_TEST(req_minor_versions)
{
    parsed_t p;
    all_ways(REQ, S("GET / HTTP/1.0\r\n\r\n"), 18, &p);
    ck_assert_int_eq(p.req.minor_version, 0);
    all_ways(REQ, S("GET / HTTP/1.9\r\n\r\n"), 18, &p);
    ck_assert_int_eq(p.req.minor_version, 9);
}
END_TEST

/* ---- Request parser: malformed input ---- */

static const char *const bad_requests[] = {
    "\r\n\r\n",
    "\n\n",
    "\r\nGET / HTTP/1.1\r\n\r\n",
    "GET\r\n\r\n",
    "GET /\r\n\r\n",
    "GET / \r\n\r\n",
    "GET  / HTTP/1.1\r\n\r\n",
    "GET /  HTTP/1.1\r\n\r\n",
    " GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1 \r\n\r\n",
    "GET /HTTP/1.1\r\n\r\n",
    "GET\t/ HTTP/1.1\r\n\r\n",
    "GET /\tx HTTP/1.1\r\n\r\n",
    "G(T / HTTP/1.1\r\n\r\n",
    "G\"T / HTTP/1.1\r\n\r\n",
    "GET / HTTP/2.0\r\n\r\n",
    "GET / HTTP/1.10\r\n\r\n",
    "GET / HTTP/1.\r\n\r\n",
    "GET / HTTP/1.x\r\n\r\n",
    "GET / http/1.1\r\n\r\n",
    "GET / HTTP/1.1x\r\n\r\n",
    "GET / HTTPS/1.1\r\n\r\n",
    "GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
    "GET /\x7f HTTP/1.1\r\n\r\n",
    "GET /a\x01"
    "b HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n",
    "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
    "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    "GET / HTTP/1.1\r\n: empty\r\n\r\n",
    "GET / HTTP/1.1\r\nBad(Name): x\r\n\r\n",
    "GET / HTTP/1.1\r\nBad/Name: x\r\n\r\n",
    "GET / HTTP/1.1\r\nN\xc3\xa4me: x\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\x1f"
    "c\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
    "GET / HTTP/1.1\r\nA: b\r\n\rX\r\n\r\n",
    "GET / HTTP/1.1\r\r\n\r\n",
};

START_TEST(req_malformed)
{
    const char *s = bad_requests[_i];
    all_ways(REQ, s, strlen(s), WS_E_HTTP_BAD, NULL);
}
END_TEST

START_TEST(req_malformed_nul_byte)
{
    static const char a[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    static const char b[] = "GET /\0 HTTP/1.1\r\n\r\n";
    all_ways(REQ, S(a), WS_E_HTTP_BAD, NULL);
    all_ways(REQ, S(b), WS_E_HTTP_BAD, NULL);
}
END_TEST

START_TEST(req_garbage_rejected_early)
{
    /* A TLS ClientHello sent to the plain port: refused at the first byte,
     * not after 8 KiB, and with no blank line in sight. */
    static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    size_t scanned = 0;
    wsh_request_t req;

    ck_assert_int_eq(wsh_parse_request((const char *)guard_copy(hello, 1), 1, &scanned, &req),
                     WS_E_HTTP_BAD);
    all_ways(REQ, S(hello), WS_E_HTTP_BAD, NULL);

    /* A lone CR followed by anything but LF fails as soon as it is seen. */
    scanned = 0;
    ck_assert_int_eq(wsh_parse_request((const char *)guard_copy("GET\r", 4), 4, &scanned, &req),
                     WS_AGAIN);
    ck_assert_int_eq(wsh_parse_request((const char *)guard_copy("GET\rx", 5), 5, &scanned, &req),
                     WS_E_HTTP_BAD);
}
END_TEST

START_TEST(req_incomplete_is_again)
{
    static const char *const partial[] = {
        "",
        "G",
        "GET / HTTP/1.1",
        "GET / HTTP/1.1\r",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
        /* malformed, but its line is not finished and nothing illegal yet */
        "GET  / HTTP/1.1",
    };
    for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++) {
        size_t len = strlen(partial[i]), scanned = 0;
        wsh_request_t req;
        const char *buf = (const char *)guard_copy(partial[i], len);
        ck_assert_int_eq(wsh_parse_request(buf, len, &scanned, &req), WS_AGAIN);
        ck_assert_uint_eq(scanned, len);
        ck_assert_int_eq(wsh_parse_request(buf, len, NULL, &req), WS_AGAIN);
    }
}
END_TEST

/* ---- Limits ---- */

static char bigbuf[BIG + 64];

/* pre + "X: aaa...\r\n\r\n" of exactly total bytes in bigbuf. */
static size_t make_padded_with(const char *pre, size_t total)
{
    size_t plen = strlen(pre), fixed = plen + 3 + 4;
    memcpy(bigbuf, pre, plen);
    memcpy(bigbuf + plen, "X: ", 3);
    memset(bigbuf + plen + 3, 'a', total - fixed);
    memcpy(bigbuf + total - 4, "\r\n\r\n", 4);
    return total;
}

static size_t make_padded(size_t total)
{
    return make_padded_with("GET / HTTP/1.1\r\n", total);
}

START_TEST(req_head_8192_accepted)
{
    parsed_t p;
    size_t n = make_padded(WSH_MAX_HEAD);

    all_ways(REQ, bigbuf, n, WSH_MAX_HEAD, &p);
    ck_assert_uint_eq(p.req.num_headers, 1);
    ck_assert_uint_eq(p.req.headers[0].value.len, WSH_MAX_HEAD - 23);
}
END_TEST

START_TEST(req_head_8193_too_big)
{
    size_t n = make_padded(WSH_MAX_HEAD + 1);
    all_ways(REQ, bigbuf, n, WS_E_HTTP_TOO_BIG, NULL);
}
END_TEST

START_TEST(req_head_limit_without_terminator)
{
    size_t scanned = 0;
    wsh_request_t req;

    make_padded(BIG);
    /* 8191 bytes without an end could still become a valid head ... */
    const char *buf = (const char *)guard_copy(bigbuf, WSH_MAX_HEAD - 1);
    ck_assert_int_eq(wsh_parse_request(buf, WSH_MAX_HEAD - 1, &scanned, &req), WS_AGAIN);
    /* ... 8192 cannot: the caller's full buffer gets an answer at once. */
    buf = (const char *)guard_copy(bigbuf, WSH_MAX_HEAD);
    ck_assert_int_eq(wsh_parse_request(buf, WSH_MAX_HEAD, &scanned, &req), WS_E_HTTP_TOO_BIG);
    buf = (const char *)guard_copy(bigbuf, BIG);
    ck_assert_int_eq(wsh_parse_request(buf, BIG, NULL, &req), WS_E_HTTP_TOO_BIG);
    /* An over-long head ending just past the limit, then more bytes. */
    scanned = 0;
    ck_assert_int_eq(wsh_parse_request(buf, BIG, &scanned, &req), WS_E_HTTP_TOO_BIG);
}
END_TEST

/* A request line plus nh header lines "Hnn: v". */
static size_t make_headers(size_t nh)
{
    size_t n = (size_t)sprintf(bigbuf, "GET / HTTP/1.1\r\n");
    for (size_t i = 0; i < nh; i++)
        n += (size_t)sprintf(bigbuf + n, "H%zu: v%zu\r\n", i, i);
    n += (size_t)sprintf(bigbuf + n, "\r\n");
    return n;
}

START_TEST(req_64_headers_accepted)
{
    parsed_t p;
    size_t n = make_headers(WSH_MAX_HEADERS);

    all_ways(REQ, bigbuf, n, (int)n, &p);
    ck_assert_uint_eq(p.req.num_headers, WSH_MAX_HEADERS);
    ck_assert_wstr(p.req.headers[63].name, "H63");
    ck_assert_wstr(p.req.headers[63].value, "v63");
}
END_TEST

START_TEST(req_65_headers_too_big)
{
    size_t n = make_headers(WSH_MAX_HEADERS + 1);
    all_ways(REQ, bigbuf, n, WS_E_HTTP_TOO_BIG, NULL);
    n = make_headers(500);
    all_ways(REQ, bigbuf, n, WS_E_HTTP_TOO_BIG, NULL);
}
END_TEST

/* ---- The *scanned contract ---- */

START_TEST(req_scanned_skips_old_bytes)
{
    /* Bytes before *scanned - 2 live on a page that is made inaccessible
     * between calls: a parser that rescans them faults. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static const char pre[] = "GET / HTTP/1.1\r\nX: ";
    size_t scanned = 0, len = page + 2;
    wsh_request_t req;

    ck_assert_ptr_ne(m, MAP_FAILED);
    memcpy(m, pre, sizeof pre - 1);
    memset(m + sizeof pre - 1, 'a', 2 * page - (sizeof pre - 1));
    ck_assert_int_eq(wsh_parse_request(m, len, &scanned, &req), WS_AGAIN);
    ck_assert_uint_eq(scanned, len);

    ck_assert_int_eq(mprotect(m, page, PROT_NONE), 0);
    for (len = page + 3; len < page + 100; len++)
        ck_assert_int_eq(wsh_parse_request(m, len, &scanned, &req), WS_AGAIN);
    memcpy(m + len, "\r\n", 2);
    ck_assert_int_eq(wsh_parse_request(m, len + 2, &scanned, &req), WS_AGAIN);
    memcpy(m + len + 2, "\r", 1);
    ck_assert_int_eq(wsh_parse_request(m, len + 3, &scanned, &req), WS_AGAIN);
    memcpy(m + len + 3, "\n", 1);

    /* Complete: now the whole head is parsed once, so give the page back. */
    ck_assert_int_eq(mprotect(m, page, PROT_READ | PROT_WRITE), 0);
    ck_assert_int_eq(wsh_parse_request(m, len + 4, &scanned, &req), (int)(len + 4));
    ck_assert_uint_eq(req.headers[0].value.len, len - (sizeof pre - 1));
    munmap(m, 2 * page);
}
END_TEST

START_TEST(req_scanned_out_of_range_restarts)
{
    static const char in[] = "GET / HTTP/1.1\r\n\r\n";
    wsh_request_t req;
    size_t scanned = 1000;
    const char *buf = (const char *)guard_copy(in, sizeof in - 1);

    ck_assert_int_eq(wsh_parse_request(buf, sizeof in - 1, &scanned, &req), (int)sizeof in - 1);
}
END_TEST

START_TEST(parse_bad_arguments)
{
    wsh_request_t req;
    wsh_response_t res;
    size_t scanned = 0;

    ck_assert_int_eq(wsh_parse_request("GET", 3, &scanned, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_parse_request(NULL, 3, &scanned, &req), WS_E_INVAL);
    ck_assert_int_eq(wsh_parse_request(NULL, 0, &scanned, &req), WS_AGAIN);
    ck_assert_int_eq(wsh_parse_response("HTTP", 4, &scanned, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_parse_response(NULL, 4, &scanned, &res), WS_E_INVAL);
    ck_assert_int_eq(wsh_parse_response(NULL, 0, NULL, &res), WS_AGAIN);
}
END_TEST

/* ---- Response parser ---- */

START_TEST(res_valid)
{
    static const char in[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                             "\r\n";
    parsed_t p;

    all_ways(RES, S(in), (int)sizeof in - 1, &p);
    ck_assert_int_eq(p.res.minor_version, 1);
    ck_assert_int_eq(p.res.status, 101);
    ck_assert_wstr(p.res.reason, "Switching Protocols");
    ck_assert_uint_eq(p.res.num_headers, 3);
    ck_assert_wstr(p.res.headers[2].value, RFC_ACCEPT);
}
END_TEST

START_TEST(res_reason_variants)
{
    parsed_t p;

    all_ways(RES, S("HTTP/1.1 200 \r\n\r\n"), 17, &p);
    ck_assert_int_eq(p.res.status, 200);
    ck_assert_uint_eq(p.res.reason.len, 0);
    all_ways(RES, S("HTTP/1.1 204\r\n\r\n"), 16, &p);
    ck_assert_int_eq(p.res.status, 204);
    ck_assert_uint_eq(p.res.reason.len, 0);
    all_ways(RES, S("HTTP/1.0 404 Not  Found\t!\nA: b\n\n"), 32, &p);
    ck_assert_int_eq(p.res.minor_version, 0);
    ck_assert_int_eq(p.res.status, 404);
    ck_assert_wstr(p.res.reason, "Not  Found\t!");
    all_ways(RES, S("HTTP/1.1 599 x\xff\r\n\r\n"), 19, &p);
    ck_assert_int_eq(p.res.status, 599);
}
END_TEST

static const char *const bad_responses[] = {
    "\r\n\r\n",
    "HTTP/1.1\r\n\r\n",
    "HTTP/1.1 \r\n\r\n",
    "HTTP/1.1 99 x\r\n\r\n",
    "HTTP/1.1 099 x\r\n\r\n",
    "HTTP/1.1 1011 x\r\n\r\n",
    "HTTP/1.1 600 x\r\n\r\n",
    "HTTP/1.1 20x OK\r\n\r\n",
    "HTTP/1.1  200 OK\r\n\r\n",
    "HTTP/1.1 200OK\r\n\r\n",
    "HTTP/1.1\t200 OK\r\n\r\n",
    "HTTP/2 200 OK\r\n\r\n",
    "HTTP/2.0 200 OK\r\n\r\n",
    "ICY 200 OK\r\n\r\n",
    "http/1.1 200 OK\r\n\r\n",
    " HTTP/1.1 200 OK\r\n\r\n",
    "HTTP/1.1 200 O\x01K\r\n\r\n",
    "HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
    "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
};

START_TEST(res_malformed)
{
    const char *s = bad_responses[_i];
    all_ways(RES, s, strlen(s), WS_E_HTTP_BAD, NULL);
}
END_TEST

START_TEST(res_limits)
{
    parsed_t p;
    size_t n = make_padded_with("HTTP/1.1 200 OK\r\n", WSH_MAX_HEAD);

    all_ways(RES, bigbuf, n, WSH_MAX_HEAD, &p);
    ck_assert_int_eq(p.res.status, 200);
    n = make_padded_with("HTTP/1.1 200 OK\r\n", WSH_MAX_HEAD + 1);
    all_ways(RES, bigbuf, n, WS_E_HTTP_TOO_BIG, NULL);
    n = make_headers(WSH_MAX_HEADERS + 1);
    memcpy(bigbuf, "HTTP/1.1 200 x", 14); /* same length as "GET / HTTP/1.1" */
    all_ways(RES, bigbuf, n, WS_E_HTTP_TOO_BIG, NULL);
}
END_TEST

/* ---- Header lookup and token lists ---- */

START_TEST(header_get_case_insensitive)
{
    static const char in[] = "GET / HTTP/1.1\r\n"
                             "hOsT: first\r\n"
                             "X-Long-Name: 1\r\n"
                             "host: second\r\n"
                             "\r\n";
    wsh_request_t req;
    const wsh_str_t *v;

    ck_assert_int_gt(wsh_parse_request(in, sizeof in - 1, NULL, &req), 0);
    v = wsh_header_get(req.headers, req.num_headers, "Host");
    ck_assert_ptr_nonnull(v);
    ck_assert_wstr(*v, "first");
    v = wsh_header_get(req.headers, req.num_headers, "HOST");
    ck_assert_wstr(*v, "first");
    v = wsh_header_get(req.headers, req.num_headers, "x-long-name");
    ck_assert_wstr(*v, "1");
    ck_assert_ptr_null(wsh_header_get(req.headers, req.num_headers, "Hos"));
    ck_assert_ptr_null(wsh_header_get(req.headers, req.num_headers, "Hosts"));
    ck_assert_ptr_null(wsh_header_get(req.headers, req.num_headers, "X-Long"));
    ck_assert_ptr_null(wsh_header_get(req.headers, 0, "Host"));
    ck_assert_ptr_null(wsh_header_get(NULL, 0, "Host"));
    ck_assert_ptr_null(wsh_header_get(req.headers, req.num_headers, NULL));
}
END_TEST

static bool tok(const char *value, const char *token)
{
    wsh_str_t v = {value, strlen(value)};
    /* The value must not be read past its length. */
    v.p = (const char *)guard_copy(value, v.len);
    return wsh_has_token(v, token);
}

START_TEST(has_token_lists)
{
    ck_assert(tok("Upgrade", "upgrade"));
    ck_assert(tok("UPGRADE", "upgrade"));
    ck_assert(tok("upgrade", "Upgrade"));
    ck_assert(tok("keep-alive, Upgrade", "upgrade"));
    ck_assert(tok("keep-alive,Upgrade", "upgrade"));
    ck_assert(tok("Upgrade, keep-alive", "upgrade"));
    ck_assert(tok(" ,, upgrade \t, ", "upgrade"));
    ck_assert(tok("upgrade;q=1", "upgrade"));
    ck_assert(tok("upgrade ; q=1, x", "upgrade"));
    ck_assert(tok("foo bar, upgrade", "upgrade"));
    ck_assert(tok("a; p=\"x,y\", upgrade", "upgrade"));
    ck_assert(tok("websocket", "websocket"));
    ck_assert(tok("h2c, WebSocket", "websocket"));

    ck_assert(!tok("", "upgrade"));
    ck_assert(!tok("upgrade", ""));
    ck_assert(!tok("upgrade2", "upgrade"));
    ck_assert(!tok("xupgrade", "upgrade"));
    ck_assert(!tok("up grade", "upgrade"));
    ck_assert(!tok("upgrad", "upgrade"));
    ck_assert(!tok("foo;upgrade", "upgrade"));
    ck_assert(!tok("foo; upgrade", "upgrade"));
    ck_assert(!tok("\"upgrade\"", "upgrade"));
    ck_assert(!tok("foo; a=\"x, upgrade\"", "upgrade"));
    ck_assert(!tok("foo; a=\"x\\\", upgrade\"", "upgrade"));
    ck_assert(!tok("foo; a=\"x\\\", upgrade, y\"", "upgrade"));
    ck_assert(tok("foo; a=\"x\\\\\", upgrade", "upgrade"));
    ck_assert(!tok("foo; a=\"unterminated, upgrade", "upgrade"));
    ck_assert(!tok("websocket/13", "websocket"));
    ck_assert(!tok("keep-alive", "upgrade"));
    ck_assert(!wsh_has_token((wsh_str_t){NULL, 0}, "upgrade"));
    ck_assert(!tok("upgrade", NULL));
}
END_TEST

/* ---- Upgrade validation ---- */

static int upgrade_status(const char *head, wsh_upgrade_t *up)
{
    static wsh_request_t req;
    size_t len = strlen(head);
    const char *buf = (const char *)guard_copy_slot(2, head, len);
    int r = wsh_parse_request(buf, len, NULL, &req);

    ck_assert_msg(r == (int)len, "parse failed (%d): %s", r, head);
    r = wsh_check_upgrade(&req, up);
    ck_assert_int_eq(r, up->status);
    if (r == 101)
        ck_assert_ptr_null(up->error);
    else
        ck_assert_ptr_nonnull(up->error);
    return r;
}

#define UP_LINE   "Upgrade: websocket\r\n"
#define CONN_LINE "Connection: Upgrade\r\n"
#define KEY_LINE  "Sec-WebSocket-Key: " RFC_KEY "\r\n"
#define VER_LINE  "Sec-WebSocket-Version: 13\r\n"

START_TEST(upgrade_rfc_example_accepted)
{
    wsh_upgrade_t up;

    ck_assert_int_eq(upgrade_status(rfc_request, &up), 101);
    ck_assert_str_eq(up.accept, RFC_ACCEPT);
    ck_assert(!up.subprotocol);
    ck_assert_wstr(up.origin, "http://example.com");
    ck_assert_uint_eq(up.extensions.len, 0);
}
END_TEST

START_TEST(upgrade_case_insensitive)
{
    wsh_upgrade_t up;

    ck_assert_int_eq(upgrade_status("GET /ws HTTP/1.1\r\n"
                                    "upgrade: WebSocket\r\n"
                                    "CONNECTION: keep-alive, Upgrade\r\n"
                                    "sec-websocket-key: " RFC_KEY "\r\n"
                                    "SEC-WEBSOCKET-VERSION: 13\r\n"
                                    "oRiGiN: https://a.example\r\n"
                                    "sec-websocket-extensions: permessage-deflate; "
                                    "client_max_window_bits\r\n"
                                    "\r\n",
                                    &up),
                     101);
    ck_assert_str_eq(up.accept, RFC_ACCEPT);
    ck_assert_wstr(up.origin, "https://a.example");
    ck_assert_wstr(up.extensions, "permessage-deflate; client_max_window_bits");
}
END_TEST

START_TEST(upgrade_repeated_list_headers)
{
    wsh_upgrade_t up;

    ck_assert_int_eq(upgrade_status("GET / HTTP/1.1\r\n"
                                    "Upgrade: h2c\r\n" UP_LINE "Connection: keep-alive\r\n"
                                    "Connection: Upgrade\r\n" KEY_LINE VER_LINE VER_LINE "\r\n",
                                    &up),
                     101);
    ck_assert_int_eq(upgrade_status("GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE
                                    "Sec-WebSocket-Version:  13 \t\r\n\r\n",
                                    &up),
                     101);
    ck_assert_int_eq(
        upgrade_status("GET / HTTP/1.2\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "\r\n", &up), 101);
}
END_TEST

START_TEST(upgrade_subprotocol)
{
    wsh_upgrade_t up;

#define WITH_PROTO(lines) "GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE lines "\r\n"
    ck_assert_int_eq(upgrade_status(WITH_PROTO("Sec-WebSocket-Protocol: wsbroker.v1\r\n"), &up),
                     101);
    ck_assert(up.subprotocol);
    upgrade_status(WITH_PROTO("Sec-WebSocket-Protocol: chat, wsbroker.v1, mqtt\r\n"), &up);
    ck_assert(up.subprotocol);
    upgrade_status(WITH_PROTO("Sec-WebSocket-Protocol: chat\r\n"
                              "sec-websocket-protocol: wsbroker.v1\r\n"),
                   &up);
    ck_assert(up.subprotocol);
    upgrade_status(WITH_PROTO("Sec-WebSocket-Protocol: WSBROKER.V1\r\n"), &up);
    ck_assert(!up.subprotocol);
    upgrade_status(WITH_PROTO("Sec-WebSocket-Protocol: wsbroker.v10, wsbroker\r\n"), &up);
    ck_assert(!up.subprotocol);
    upgrade_status(WITH_PROTO(""), &up);
    ck_assert(!up.subprotocol);
#undef WITH_PROTO
}
END_TEST

typedef struct upgrade_case {
    const char *head;
    int status;
} upgrade_case_t;

static const upgrade_case_t upgrade_cases[] = {
    /* 400: method, version, Upgrade, Connection */
    {"POST / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"get / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GETS / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.0\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\nUpgrade: h2c\r\n" CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\nUpgrade: websockets\r\n" CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\nUpgrade:\r\n" CONN_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE "Connection: keep-alive\r\n" KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE "Connection: upgraded\r\n" KEY_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE "X-Connection: upgrade\r\n" KEY_LINE VER_LINE "\r\n", 400},
    /* 400: the key */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE "Sec-WebSocket-Key:\r\n" VER_LINE "\r\n", 400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" VER_LINE "\r\n",
     400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n" VER_LINE "\r\n",
     400},
    /* 17 bytes: 23 characters and one '=' */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=\r\n" VER_LINE "\r\n",
     400},
    /* 18 bytes: 24 characters, no padding */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSEh\r\n" VER_LINE "\r\n",
     400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ.==\r\n" VER_LINE "\r\n",
     400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub2 jZQ==\r\n" VER_LINE "\r\n",
     400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j=Q==\r\n" VER_LINE "\r\n",
     400},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE KEY_LINE VER_LINE "\r\n", 400},
    /* both a 400 and a 426 reason: 400 wins */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE "Sec-WebSocket-Version: 8\r\n\r\n", 400},
    /* 426: the version */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "Sec-WebSocket-Version: 8\r\n\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "Sec-WebSocket-Version: 14\r\n\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "Sec-WebSocket-Version: 013\r\n\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "Sec-WebSocket-Version: 13, 8\r\n\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE "Sec-WebSocket-Version:\r\n\r\n", 426},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE KEY_LINE VER_LINE "Sec-WebSocket-Version: 8\r\n\r\n",
     426},
    /* 101 with a non-canonical last character (pad bits set) */
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" VER_LINE "\r\n",
     101},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n" VER_LINE "\r\n",
     101},
    {"GET / HTTP/1.1\r\n" UP_LINE CONN_LINE
     "Sec-WebSocket-Key: +/+/+/+/+/+/+/+/+/+/+w==\r\n" VER_LINE "\r\n",
     101},
};

START_TEST(upgrade_statuses)
{
    wsh_upgrade_t up;
    const upgrade_case_t *c = &upgrade_cases[_i];
    int r = upgrade_status(c->head, &up);
    ck_assert_msg(r == c->status, "case %d: got %d (%s), want %d", _i, r,
                  up.error != NULL ? up.error : "-", c->status);
    if (r == 101)
        ck_assert_uint_eq(strlen(up.accept), WSH_ACCEPT_LEN);
    else
        ck_assert_uint_eq(strlen(up.accept), 0);
}
END_TEST

START_TEST(upgrade_records_even_when_rejected)
{
    wsh_upgrade_t up;
    ck_assert_int_eq(upgrade_status("POST / HTTP/1.1\r\nOrigin: null\r\n"
                                    "Sec-WebSocket-Protocol: wsbroker.v1\r\n\r\n",
                                    &up),
                     400);
    ck_assert_wstr(up.origin, "null");
    ck_assert(up.subprotocol);
}
END_TEST

START_TEST(upgrade_bad_arguments)
{
    wsh_upgrade_t up;
    wsh_request_t req;
    memset(&req, 0, sizeof req);
    ck_assert_int_eq(wsh_check_upgrade(NULL, &up), WS_E_INVAL);
    ck_assert_int_eq(wsh_check_upgrade(&req, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_check_upgrade(&req, &up), 400);
}
END_TEST

START_TEST(wants_upgrade)
{
    wsh_request_t req;

    ck_assert_int_gt(wsh_parse_request(S("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), NULL, &req),
                     0);
    ck_assert(!wsh_wants_upgrade(&req));
    ck_assert_int_gt(wsh_parse_request(S("GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n"), NULL, &req), 0);
    ck_assert(wsh_wants_upgrade(&req));
    ck_assert_int_gt(
        wsh_parse_request(S("GET / HTTP/1.1\r\nSEC-WEBSOCKET-KEY: x\r\n\r\n"), NULL, &req), 0);
    ck_assert(wsh_wants_upgrade(&req));
    ck_assert(!wsh_wants_upgrade(NULL));
}
END_TEST

/* ---- Sec-WebSocket-Accept and keys ---- */

START_TEST(accept_rfc_sample)
{
    char out[WSH_ACCEPT_LEN + 1];
    wsh_accept_key(RFC_KEY, strlen(RFC_KEY), out);
    ck_assert_str_eq(out, RFC_ACCEPT);
    /* Only key_len bytes of the key count. */
    wsh_accept_key(RFC_KEY "garbage", strlen(RFC_KEY), out);
    ck_assert_str_eq(out, RFC_ACCEPT);
    wsh_accept_key("", 0, out);
    ck_assert_uint_eq(strlen(out), WSH_ACCEPT_LEN);
    ck_assert_str_ne(out, RFC_ACCEPT);
}
END_TEST

START_TEST(make_key_rfc_nonce)
{
    char key[WSH_KEY_LEN + 1];
    static const uint8_t zero[16];
    wsh_make_key((const uint8_t *)"the sample nonce", key);
    ck_assert_str_eq(key, RFC_KEY);
    wsh_make_key(zero, key);
    ck_assert_str_eq(key, "AAAAAAAAAAAAAAAAAAAAAA==");
}
END_TEST

/* The SHA-1 and base64 are computed in ws_handshake.c; OpenSSL is the
 * reference: keys of every length around the 64-byte blocks (the GUID adds
 * 36 bytes, padding needs 9), every byte value, and nonces. */
static void openssl_accept(const char *key, size_t len, char out[WSH_ACCEPT_LEN + 1])
{
    unsigned char buf[1024 + 64], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    ck_assert_uint_le(len, 1024);
    memcpy(buf, key, len);
    memcpy(buf + len, guid, sizeof guid - 1);
    ck_assert_int_eq(EVP_Digest(buf, len + sizeof guid - 1, md, &mdlen, EVP_sha1(), NULL), 1);
    ck_assert_uint_eq(mdlen, 20);
    ck_assert_int_eq(EVP_EncodeBlock((unsigned char *)out, md, 20), WSH_ACCEPT_LEN);
}

START_TEST(accept_matches_openssl)
{
    char key[1024], got[WSH_ACCEPT_LEN + 1], want[WSH_ACCEPT_LEN + 1];
    xorshift_t x = {7};
    for (size_t len = 0; len <= 300; len++) {
        for (int round = 0; round < 4; round++) {
            for (size_t i = 0; i < len; i++)
                key[i] = (char)(round == 0 ? 'a' : xorshift_next(&x));
            const char *k = (const char *)guard_copy(key, len);
            wsh_accept_key(k, len, got);
            openssl_accept(key, len, want);
            ck_assert_msg(strcmp(got, want) == 0, "len %zu: %s != %s", len, got, want);
        }
    }
    /* a key of 1000 bytes, as a long header value could give */
    memset(key, 'k', 1000);
    wsh_accept_key(key, 1000, got);
    openssl_accept(key, 1000, want);
    ck_assert_str_eq(got, want);
}
END_TEST

START_TEST(make_key_matches_openssl)
{
    uint8_t nonce[16];
    char got[WSH_KEY_LEN + 1], want[WSH_KEY_LEN + 1];
    xorshift_t x = {11};
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof nonce; i++)
            nonce[i] = (uint8_t)(round < 256 ? (size_t)round ^ i * 17 : xorshift_next(&x));
        wsh_make_key(nonce, got);
        ck_assert_int_eq(EVP_EncodeBlock((unsigned char *)want, nonce, 16), WSH_KEY_LEN);
        ck_assert_str_eq(got, want);
    }
}
END_TEST

/* ---- Writers ---- */

/* out must come out byte-exact, need exactly its own length, NOSPACE for
 * every smaller capacity, and never touch more than cap bytes. */
#define CHECK_WRITE(expect, call_with_cap)                                                         \
    do {                                                                                           \
        static char wbuf[1024];                                                                    \
        size_t elen = strlen(expect);                                                              \
        for (size_t cap = 0; cap <= elen + 1; cap++) {                                             \
            memset(wbuf, '#', sizeof wbuf);                                                        \
            int wr = call_with_cap;                                                                \
            ck_assert_msg(wbuf[cap] == '#', "wrote past cap %zu", cap);                            \
            if (cap < elen) {                                                                      \
                ck_assert_int_eq(wr, WS_E_NOSPACE);                                                \
            } else {                                                                               \
                ck_assert_int_eq(wr, (int)elen);                                                   \
                ck_assert_mem_eq(wbuf, expect, elen);                                              \
                if (cap > elen)                                                                    \
                    ck_assert_int_eq(wbuf[elen], '\0');                                            \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static wsh_upgrade_t sample_up(bool subprotocol)
{
    wsh_upgrade_t up;
    memset(&up, 0, sizeof up);
    up.status = 101;
    strcpy(up.accept, RFC_ACCEPT);
    up.subprotocol = subprotocol;
    return up;
}

START_TEST(write_101_exact)
{
    wsh_upgrade_t up = sample_up(false);
    CHECK_WRITE("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                "\r\n",
                wsh_write_101(wbuf, cap, &up, NULL));
    CHECK_WRITE("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                "\r\n",
                wsh_write_101(wbuf, cap, &up, ""));
    up = sample_up(true);
    CHECK_WRITE("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                "Sec-WebSocket-Protocol: wsbroker.v1\r\n"
                "\r\n",
                wsh_write_101(wbuf, cap, &up, NULL));
    CHECK_WRITE("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                "Sec-WebSocket-Protocol: wsbroker.v1\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
                "\r\n",
                wsh_write_101(wbuf, cap, &up, "permessage-deflate; server_no_context_takeover"));
}
END_TEST

START_TEST(write_101_invalid)
{
    char buf[512];
    wsh_upgrade_t up = sample_up(false);

    ck_assert_int_eq(wsh_write_101(buf, sizeof buf, NULL, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_101(NULL, 10, &up, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_101(NULL, 0, &up, NULL), WS_E_NOSPACE);
    ck_assert_int_eq(wsh_write_101(buf, sizeof buf, &up, "x\r\nEvil: 1"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_101(buf, sizeof buf, &up, "x\ny"), WS_E_INVAL);
    up.accept[0] = '\0';
    ck_assert_int_eq(wsh_write_101(buf, sizeof buf, &up, NULL), WS_E_INVAL);
    memset(up.accept, 'A', sizeof up.accept); /* not terminated */
    ck_assert_int_eq(wsh_write_101(buf, sizeof buf, &up, NULL), WS_E_INVAL);
}
END_TEST

START_TEST(write_error_exact)
{
    CHECK_WRITE("HTTP/1.1 400 Bad Request\r\n"
                "Content-Type: text/plain\r\n"
                "Content-Length: 27\r\n"
                "Connection: close\r\n"
                "\r\n"
                "missing Upgrade: websocket\n",
                wsh_write_error(wbuf, cap, 400, "missing Upgrade: websocket"));
    CHECK_WRITE("HTTP/1.1 426 Upgrade Required\r\n"
                "Content-Type: text/plain\r\n"
                "Content-Length: 34\r\n"
                "Connection: close\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "\r\n"
                "unsupported Sec-WebSocket-Version\n",
                wsh_write_error(wbuf, cap, 426, "unsupported Sec-WebSocket-Version"));
    CHECK_WRITE("HTTP/1.1 431 Request Header Fields Too Large\r\n"
                "Content-Type: text/plain\r\n"
                "Content-Length: 32\r\n"
                "Connection: close\r\n"
                "\r\n"
                "Request Header Fields Too Large\n",
                wsh_write_error(wbuf, cap, 431, NULL));
    CHECK_WRITE("HTTP/1.1 405 Method Not Allowed\r\n"
                "Content-Type: text/plain\r\n"
                "Content-Length: 1\r\n"
                "Connection: close\r\n"
                "Allow: GET\r\n"
                "\r\n"
                "\n",
                wsh_write_error(wbuf, cap, 405, ""));
    CHECK_WRITE("HTTP/1.1 503 Service Unavailable\r\n"
                "Content-Type: text/plain\r\n"
                "Content-Length: 19\r\n"
                "Connection: close\r\n"
                "\r\n"
                "connection limit 5\n",
                wsh_write_error(wbuf, cap, 503, "connection limit 5"));
}
END_TEST

START_TEST(write_error_invalid)
{
    char buf[512];
    ck_assert_int_eq(wsh_write_error(buf, sizeof buf, 204, "x"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_error(buf, sizeof buf, 304, "x"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_error(buf, sizeof buf, 101, "x"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_error(buf, sizeof buf, 99, "x"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_error(buf, sizeof buf, 600, "x"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_error(NULL, 5, 400, "x"), WS_E_INVAL);
}
END_TEST

START_TEST(write_head_exact)
{
    CHECK_WRITE("HTTP/1.1 200 OK\r\n"
                "Content-Type: application/json\r\n"
                "Content-Length: 15\r\n"
                "Connection: close\r\n"
                "\r\n",
                wsh_write_head(wbuf, cap, 200, "application/json", 15, NULL));
    CHECK_WRITE("HTTP/1.1 404 Not Found\r\n"
                "Content-Length: 0\r\n"
                "Connection: close\r\n"
                "\r\n",
                wsh_write_head(wbuf, cap, 404, NULL, 0, NULL));
    CHECK_WRITE("HTTP/1.1 200 OK\r\n"
                "Content-Type: text/plain; version=0.0.4\r\n"
                "Content-Length: 18446744073709551615\r\n"
                "Connection: close\r\n"
                "Cache-Control: no-store\r\n"
                "X-A: b\r\n"
                "\r\n",
                wsh_write_head(wbuf, cap, 200, "text/plain; version=0.0.4", (size_t)-1,
                               "Cache-Control: no-store\r\nX-A: b\r\n"));
    CHECK_WRITE("HTTP/1.1 204 No Content\r\n"
                "Connection: close\r\n"
                "\r\n",
                wsh_write_head(wbuf, cap, 204, NULL, 0, ""));
    CHECK_WRITE("HTTP/1.1 299 Success\r\n"
                "Content-Length: 3\r\n"
                "Connection: close\r\n"
                "\r\n",
                wsh_write_head(wbuf, cap, 299, NULL, 3, NULL));
}
END_TEST

START_TEST(write_head_invalid)
{
    char buf[512];
    static const char *const bad_extra[] = {"X: y",        "X: y\n",       "X: y\r",
                                            "\r\n",        "X: y\r\n\r\n", "X: y\r\n\r\nbody",
                                            "X: \x01\r\n", "X\ry\r\n"};

    for (size_t i = 0; i < sizeof bad_extra / sizeof bad_extra[0]; i++)
        ck_assert_msg(wsh_write_head(buf, sizeof buf, 200, NULL, 0, bad_extra[i]) == WS_E_INVAL,
                      "extra %zu accepted", i);
    ck_assert_int_eq(wsh_write_head(buf, sizeof buf, 200, "text/html\r\nX: y", 0, NULL),
                     WS_E_INVAL);
    ck_assert_int_eq(wsh_write_head(buf, sizeof buf, 99, NULL, 0, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_head(buf, sizeof buf, 600, NULL, 0, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_head(NULL, 1, 200, NULL, 0, NULL), WS_E_INVAL);
}
END_TEST

START_TEST(written_responses_parse_back)
{
    static const int statuses[] = {200, 204, 301, 304, 400, 401, 403, 404,
                                   405, 408, 413, 426, 431, 500, 503};
    char buf[512];
    wsh_response_t res;

    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        int st = statuses[i];
        int n = (st == 204 || st == 304) ? wsh_write_head(buf, sizeof buf, st, NULL, 0, NULL)
                                         : wsh_write_error(buf, sizeof buf, st, "why");
        ck_assert_int_gt(n, 0);
        int h = wsh_parse_response(buf, (size_t)n, NULL, &res);
        ck_assert_int_gt(h, 0);
        ck_assert_int_eq(res.status, st);
        ck_assert_wstr(res.reason, wsh_status_text(st));
        ck_assert_ptr_nonnull(wsh_header_get(res.headers, res.num_headers, "Connection"));
        if (st == 426)
            ck_assert_wstr(*wsh_header_get(res.headers, res.num_headers, "Sec-WebSocket-Version"),
                           "13");
        if (st != 204 && st != 304) {
            ck_assert_wstr(*wsh_header_get(res.headers, res.num_headers, "Content-Type"),
                           "text/plain");
            ck_assert_wstr(*wsh_header_get(res.headers, res.num_headers, "Content-Length"), "4");
            ck_assert_int_eq(n - h, 4);
            ck_assert_mem_eq(buf + h, "why\n", 4);
        }
    }
}
END_TEST

START_TEST(status_texts)
{
    static const struct {
        int code;
        const char *text;
    } t[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {413, "Content Too Large"},
        {426, "Upgrade Required"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
        {199, "Informational"},
        {299, "Success"},
        {399, "Redirection"},
        {499, "Client Error"},
        {599, "Server Error"},
        {0, "Unknown"},
        {99, "Unknown"},
        {600, "Unknown"},
        {-1, "Unknown"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        ck_assert_str_eq(wsh_status_text(t[i].code), t[i].text);
    for (int c = -5; c < 1000; c++)
        if (wsh_status_text(c) == NULL || wsh_status_text(c)[0] == '\0')
            ck_abort_msg("no text for %d", c);
}
END_TEST

/* ---- Client side ---- */

START_TEST(write_request_exact)
{
    CHECK_WRITE("GET /ws?token=x HTTP/1.1\r\n"
                "Host: localhost:8080\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Key: " RFC_KEY "\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "\r\n",
                wsh_write_request(wbuf, cap, "localhost:8080", "/ws?token=x", RFC_KEY, NULL));
    CHECK_WRITE("GET / HTTP/1.1\r\n"
                "Host: [::1]:80\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                "Sec-WebSocket-Key: " RFC_KEY "\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: wsbroker.v1\r\n"
                "\r\n",
                wsh_write_request(wbuf, cap, "[::1]:80", "/", RFC_KEY,
                                  "Sec-WebSocket-Protocol: wsbroker.v1\r\n"));
}
END_TEST

START_TEST(write_request_invalid)
{
    char buf[512];
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, NULL, "/", RFC_KEY, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", NULL, RFC_KEY, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", "/", NULL, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "", "/", RFC_KEY, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", "", RFC_KEY, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", "/ x", RFC_KEY, NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h\r\nX: y", "/", RFC_KEY, NULL),
                     WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", "/", "k\r\n", NULL), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(buf, sizeof buf, "h", "/", RFC_KEY, "X: y"), WS_E_INVAL);
    ck_assert_int_eq(wsh_write_request(NULL, 3, "h", "/", RFC_KEY, NULL), WS_E_INVAL);
}
END_TEST

START_TEST(client_round_trip)
{
    static const uint8_t nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    char key[WSH_KEY_LEN + 1], reqbuf[1024], resbuf[1024];
    wsh_upgrade_t up;
    parsed_t p;
    int n, m;

    wsh_make_key(nonce, key);
    ck_assert_uint_eq(strlen(key), WSH_KEY_LEN);
    n = wsh_write_request(reqbuf, sizeof reqbuf, "broker.example:8080", "/ws?token=abc", key,
                          "Origin: https://app.example\r\n"
                          "Sec-WebSocket-Protocol: wsbroker.v1\r\n"
                          "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    ck_assert_int_gt(n, 0);

    all_ways(REQ, reqbuf, (size_t)n, n, &p);
    ck_assert_wstr(p.req.path, "/ws");
    ck_assert_wstr(p.req.query, "token=abc");
    ck_assert(wsh_wants_upgrade(&p.req));
    ck_assert_int_eq(wsh_check_upgrade(&p.req, &up), 101);
    ck_assert(up.subprotocol);
    ck_assert_wstr(up.origin, "https://app.example");
    ck_assert_wstr(up.extensions, "permessage-deflate");

    m = wsh_write_101(resbuf, sizeof resbuf, &up, "permessage-deflate");
    ck_assert_int_gt(m, 0);
    all_ways(RES, resbuf, (size_t)m, m, &p);
    ck_assert_int_eq(p.res.status, 101);
    ck_assert_int_eq(wsh_check_101(&p.res, key), WS_OK);
    ck_assert_wstr(*wsh_header_get(p.res.headers, p.res.num_headers, "Sec-WebSocket-Protocol"),
                   WSH_SUBPROTOCOL);

    /* The same response does not fit another key. */
    ck_assert_int_eq(wsh_check_101(&p.res, RFC_KEY), WS_E_HTTP_BAD);
}
END_TEST

static int check_101_of(const char *head, const char *key)
{
    wsh_response_t res;
    size_t len = strlen(head);
    int r = wsh_parse_response(head, len, NULL, &res);
    ck_assert_msg(r == (int)len, "parse failed (%d): %s", r, head);
    return wsh_check_101(&res, key);
}

START_TEST(check_101_cases)
{
#define ACC_LINE "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 Switching Protocols\r\n"
                                  "Upgrade: websocket\r\nConnection: Upgrade\r\n" ACC_LINE "\r\n",
                                  RFC_KEY),
                     WS_OK);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 OK\r\n"
                                  "UPGRADE: WebSocket\r\nconnection: keep-alive, upgrade\r\n"
                                  "sec-websocket-accept: " RFC_ACCEPT "\r\n\r\n",
                                  RFC_KEY),
                     WS_OK);
    ck_assert_int_eq(check_101_of("HTTP/1.1 200 OK\r\n"
                                  "Upgrade: websocket\r\nConnection: Upgrade\r\n" ACC_LINE "\r\n",
                                  RFC_KEY),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(
        check_101_of("HTTP/1.1 101 x\r\nConnection: Upgrade\r\n" ACC_LINE "\r\n", RFC_KEY),
        WS_E_HTTP_BAD);
    ck_assert_int_eq(
        check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n" ACC_LINE "\r\n", RFC_KEY),
        WS_E_HTTP_BAD);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n\r\n",
                                  RFC_KEY),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n",
                                  RFC_KEY),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Accept: S3PPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                                  RFC_KEY),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n" ACC_LINE ACC_LINE "\r\n",
                                  RFC_KEY),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(check_101_of("HTTP/1.1 101 x\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n" ACC_LINE "\r\n",
                                  "AAAAAAAAAAAAAAAAAAAAAA=="),
                     WS_E_HTTP_BAD);
    ck_assert_int_eq(wsh_check_101(NULL, RFC_KEY), WS_E_INVAL);
#undef ACC_LINE
}
END_TEST

START_TEST(check_101_null_key)
{
    wsh_response_t res;
    memset(&res, 0, sizeof res);
    ck_assert_int_eq(wsh_check_101(&res, NULL), WS_E_INVAL);
}
END_TEST

/* ---- Suite ---- */

static Suite *handshake_suite(void)
{
    Suite *s = suite_create("ws_handshake");
    TCase *tp = tcase_create("parse");
    TCase *tl = tcase_create("limits");
    TCase *th = tcase_create("headers");
    TCase *tu = tcase_create("upgrade");
    TCase *tw = tcase_create("write");
    TCase *tc = tcase_create("client");

    tcase_set_timeout(tp, 60);
    tcase_add_test(tp, req_rfc_example);
    tcase_add_test(tp, req_target_path_and_query);
    tcase_add_test(tp, req_bare_lf_and_mixed_endings);
    tcase_add_test(tp, req_bytes_after_head_not_looked_at);
    tcase_add_test(tp, req_values_trimmed);
    tcase_add_test(tp, req_token_characters_in_names_and_methods);
    tcase_add_test(tp, req_minor_versions);
    tcase_add_loop_test(tp, req_malformed, 0, (int)(sizeof bad_requests / sizeof bad_requests[0]));
    tcase_add_test(tp, req_malformed_nul_byte);
    tcase_add_test(tp, req_garbage_rejected_early);
    tcase_add_test(tp, req_incomplete_is_again);
    tcase_add_test(tp, req_scanned_skips_old_bytes);
    tcase_add_test(tp, req_scanned_out_of_range_restarts);
    tcase_add_test(tp, parse_bad_arguments);
    tcase_add_test(tp, res_valid);
    tcase_add_test(tp, res_reason_variants);
    tcase_add_loop_test(tp, res_malformed, 0,
                        (int)(sizeof bad_responses / sizeof bad_responses[0]));
    suite_add_tcase(s, tp);

    tcase_set_timeout(tl, 120);
    tcase_add_test(tl, req_head_8192_accepted);
    tcase_add_test(tl, req_head_8193_too_big);
    tcase_add_test(tl, req_head_limit_without_terminator);
    tcase_add_test(tl, req_64_headers_accepted);
    tcase_add_test(tl, req_65_headers_too_big);
    tcase_add_test(tl, res_limits);
    suite_add_tcase(s, tl);

    tcase_set_timeout(th, 30);
    tcase_add_test(th, header_get_case_insensitive);
    tcase_add_test(th, has_token_lists);
    suite_add_tcase(s, th);

    tcase_set_timeout(tu, 30);
    tcase_add_test(tu, upgrade_rfc_example_accepted);
    tcase_add_test(tu, upgrade_case_insensitive);
    tcase_add_test(tu, upgrade_repeated_list_headers);
    tcase_add_test(tu, upgrade_subprotocol);
    tcase_add_loop_test(tu, upgrade_statuses, 0,
                        (int)(sizeof upgrade_cases / sizeof upgrade_cases[0]));
    tcase_add_test(tu, upgrade_records_even_when_rejected);
    tcase_add_test(tu, upgrade_bad_arguments);
    tcase_add_test(tu, wants_upgrade);
    tcase_add_test(tu, accept_rfc_sample);
    suite_add_tcase(s, tu);

    tcase_set_timeout(tw, 30);
    tcase_add_test(tw, write_101_exact);
    tcase_add_test(tw, write_101_invalid);
    tcase_add_test(tw, write_error_exact);
    tcase_add_test(tw, write_error_invalid);
    tcase_add_test(tw, write_head_exact);
    tcase_add_test(tw, write_head_invalid);
    tcase_add_test(tw, written_responses_parse_back);
    tcase_add_test(tw, status_texts);
    suite_add_tcase(s, tw);

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, make_key_rfc_nonce);
    tcase_add_test(tc, accept_matches_openssl);
    tcase_add_test(tc, make_key_matches_openssl);
    tcase_add_test(tc, write_request_exact);
    tcase_add_test(tc, write_request_invalid);
    tcase_add_test(tc, client_round_trip);
    tcase_add_test(tc, check_101_cases);
    tcase_add_test(tc, check_101_null_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(handshake_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
