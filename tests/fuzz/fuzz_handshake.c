/*
 * fuzz_handshake.c - libFuzzer target for ws_handshake.
 *
 * The input is an HTTP head (or anything at all). It is parsed as a request
 * and as a response, once whole and once fed in pieces whose sizes come from
 * a hash of the input, each piece from a fresh exact-size heap copy so that
 * ASan sees any read past the current length. Invariants checked:
 *   - results are only a head length, WS_AGAIN, WS_E_HTTP_BAD or
 *     WS_E_HTTP_TOO_BIG, and WS_AGAIN only below WSH_MAX_HEAD bytes;
 *   - every string in a result lies inside the head it came from;
 *   - whole and piecewise parsing agree on the result and on every field;
 *   - an accepted upgrade yields a 101 that parses back and passes
 *     wsh_check_101() with the request's key; every rejection's error
 *     response parses back with the same status;
 *   - the input used as a request target either is refused by
 *     wsh_write_request() or comes back unchanged from the parser;
 *   - the input as a Sec-WebSocket-Key gives the accept value OpenSSL's
 *     SHA-1 and base64 give (ws_handshake.c computes both itself), and its
 *     first 16 bytes as a nonce give OpenSSL's base64 key.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "fuzz_dict.h"
#include "wsproto/ws_handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct parsed {
    wsh_request_t req;
    wsh_response_t res;
} parsed_t;

static parsed_t whole, piece;

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void check_str(wsh_str_t s, const char *base, size_t head)
{
    CHECK(s.p != NULL);
    CHECK((uintptr_t)s.p >= (uintptr_t)base);
    CHECK((uintptr_t)s.p + s.len <= (uintptr_t)base + head);
}

static void check_headers(const wsh_header_t *h, size_t n, const char *base, size_t head)
{
    CHECK(n <= WSH_MAX_HEADERS);
    for (size_t i = 0; i < n; i++) {
        check_str(h[i].name, base, head);
        check_str(h[i].value, base, head);
        CHECK(h[i].name.len > 0);
        if (h[i].value.len > 0) {
            CHECK(h[i].value.p[0] != ' ' && h[i].value.p[0] != '\t');
            CHECK(h[i].value.p[h[i].value.len - 1] != ' ');
            CHECK(h[i].value.p[h[i].value.len - 1] != '\t');
        }
        (void)wsh_has_token(h[i].value, "upgrade");
    }
}

static void check_result(int r, size_t len)
{
    CHECK(r > 0 || r == WS_AGAIN || r == WS_E_HTTP_BAD || r == WS_E_HTTP_TOO_BIG);
    if (r > 0)
        CHECK((size_t)r <= len && r <= WSH_MAX_HEAD);
    if (r == WS_AGAIN)
        CHECK(len < WSH_MAX_HEAD);
}

static void check_parsed(int is_res, const parsed_t *p, const char *base, size_t head)
{
    if (is_res) {
        CHECK(p->res.status >= 100 && p->res.status <= 599);
        CHECK(p->res.minor_version >= 0 && p->res.minor_version <= 9);
        check_str(p->res.reason, base, head);
        check_headers(p->res.headers, p->res.num_headers, base, head);
        return;
    }
    const wsh_request_t *q = &p->req;
    CHECK(q->method.len > 0 && q->target.len > 0);
    CHECK(q->minor_version >= 0 && q->minor_version <= 9);
    check_str(q->method, base, head);
    check_str(q->target, base, head);
    check_str(q->path, base, head);
    check_str(q->query, base, head);
    CHECK(q->path.p == q->target.p && q->path.len <= q->target.len);
    if (q->path.len < q->target.len) {
        CHECK(q->target.p[q->path.len] == '?');
        CHECK(q->query.p == q->target.p + q->path.len + 1);
        CHECK(q->path.len + 1 + q->query.len == q->target.len);
    } else {
        CHECK(q->query.len == 0);
    }
    check_headers(q->headers, q->num_headers, base, head);
}

static int parse(int is_res, const char *buf, size_t len, size_t *scanned, parsed_t *p)
{
    if (is_res)
        return wsh_parse_response(buf, len, scanned, &p->res);
    return wsh_parse_request(buf, len, scanned, &p->req);
}

static void same_str(wsh_str_t a, const char *abase, wsh_str_t b, const char *bbase)
{
    CHECK(a.len == b.len);
    CHECK(a.p - abase == b.p - bbase);
}

static void same_headers(const wsh_header_t *a, const char *abase, const wsh_header_t *b,
                         const char *bbase, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        same_str(a[i].name, abase, b[i].name, bbase);
        same_str(a[i].value, abase, b[i].value, bbase);
    }
}

static void same_parsed(int is_res, const char *abase, const char *bbase)
{
    if (is_res) {
        CHECK(whole.res.status == piece.res.status);
        CHECK(whole.res.minor_version == piece.res.minor_version);
        same_str(whole.res.reason, abase, piece.res.reason, bbase);
        CHECK(whole.res.num_headers == piece.res.num_headers);
        same_headers(whole.res.headers, abase, piece.res.headers, bbase, whole.res.num_headers);
        return;
    }
    same_str(whole.req.method, abase, piece.req.method, bbase);
    same_str(whole.req.target, abase, piece.req.target, bbase);
    same_str(whole.req.path, abase, piece.req.path, bbase);
    same_str(whole.req.query, abase, piece.req.query, bbase);
    CHECK(whole.req.minor_version == piece.req.minor_version);
    CHECK(whole.req.num_headers == piece.req.num_headers);
    same_headers(whole.req.headers, abase, piece.req.headers, bbase, whole.req.num_headers);
}

/* Feed data as a growing buffer in random pieces; compare with the whole
 * parse (whole_r, fields in `whole` relative to wbase). */
static void piecewise(int is_res, const uint8_t *data, size_t size, uint64_t seed, int whole_r,
                      const char *wbase)
{
    size_t scanned = 0, len = 0, maxstep;
    int r = WS_AGAIN;

    switch (seed & 3) {
    case 0:
        maxstep = 1;
        break;
    case 1:
        maxstep = 8;
        break;
    case 2:
        maxstep = 200;
        break;
    default:
        maxstep = size / 2 + 1;
        break;
    }
    /* Bound the work for large inputs fed one byte at a time. */
    if (size > 2048 && maxstep < 64)
        maxstep = 64;
    while (len < size) {
        len += 1 + (size_t)(next_rand(&seed) % maxstep);
        if (len > size)
            len = size;
        char *buf = malloc(len);
        CHECK(buf != NULL);
        memcpy(buf, data, len);
        r = parse(is_res, buf, len, &scanned, &piece);
        check_result(r, len);
        if (r == WS_AGAIN) {
            CHECK(scanned == len);
            free(buf);
            continue;
        }
        CHECK(r == whole_r);
        if (r > 0) {
            check_parsed(is_res, &piece, buf, (size_t)r);
            same_parsed(is_res, wbase, buf);
        }
        free(buf);
        return;
    }
    CHECK(r == whole_r);
}

static char *dup_str(wsh_str_t s)
{
    char *p = malloc(s.len + 1);
    CHECK(p != NULL);
    memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    return p;
}

static char out[3 * WSH_MAX_HEAD];

/* An error response must parse back with the status it was written for. */
static void check_error_response(int status, const char *message)
{
    wsh_response_t res;
    int n = wsh_write_error(out, sizeof out, status, message);
    CHECK(n > 0);
    int h = wsh_parse_response(out, (size_t)n, NULL, &res);
    CHECK(h > 0 && h <= n);
    CHECK(res.status == status);
}

static void check_upgrade(const wsh_request_t *req)
{
    wsh_upgrade_t up;
    int st = wsh_check_upgrade(req, &up);

    CHECK(st == up.status);
    CHECK(st == 101 || st == 400 || st == 426 || st == 500);
    if (st != 101) {
        CHECK(up.error != NULL);
        check_error_response(st, up.error);
        return;
    }
    CHECK(up.error == NULL && strlen(up.accept) == WSH_ACCEPT_LEN);
    const wsh_str_t *key = wsh_header_get(req->headers, req->num_headers, "Sec-WebSocket-Key");
    CHECK(key != NULL && key->len == WSH_KEY_LEN);
    char *ext = up.extensions.len > 0 ? dup_str(up.extensions) : NULL;
    int n = wsh_write_101(out, sizeof out, &up, ext);
    free(ext);
    CHECK(n > 0);
    if (n <= WSH_MAX_HEAD) {
        wsh_response_t res;
        char *k = dup_str(*key);
        CHECK(wsh_parse_response(out, (size_t)n, NULL, &res) == n);
        CHECK(wsh_check_101(&res, k) == WS_OK);
        free(k);
    }
}

/* The input as a request target: refused, or parsed back unchanged. */
static void check_writer(const uint8_t *data, size_t size)
{
    wsh_request_t req;
    size_t n = size < 512 ? size : 512;
    char *target = malloc(n + 1);

    CHECK(target != NULL);
    memcpy(target, data, n);
    target[n] = '\0';
    int w = wsh_write_request(out, sizeof out, "fuzz.example:80", target,
                              "dGhlIHNhbXBsZSBub25jZQ==", NULL);
    if (w > 0) {
        CHECK(wsh_parse_request(out, (size_t)w, NULL, &req) == w);
        CHECK(req.target.len == strlen(target) &&
              memcmp(req.target.p, target, req.target.len) == 0);
        wsh_upgrade_t up;
        CHECK(wsh_check_upgrade(&req, &up) == 101);
    } else {
        CHECK(w == WS_E_INVAL);
    }
    free(target);
}

/* wsh_accept_key() computes SHA-1 and base64 itself: the input as a key
 * must give what OpenSSL gives, and so must its first 16 bytes as a
 * nonce for wsh_make_key(). */
__attribute__((no_sanitize("coverage"))) static void check_accept(const char *key, size_t len)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char got[WSH_ACCEPT_LEN + 1], want[WSH_ACCEPT_LEN + 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    CHECK(ctx != NULL);
    CHECK(EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1);
    CHECK(EVP_DigestUpdate(ctx, key, len) == 1);
    CHECK(EVP_DigestUpdate(ctx, guid, sizeof guid - 1) == 1);
    CHECK(EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20);
    EVP_MD_CTX_free(ctx);
    CHECK(EVP_EncodeBlock((unsigned char *)want, md, 20) == WSH_ACCEPT_LEN);
    wsh_accept_key(key, len, got);
    CHECK(strcmp(got, want) == 0);
    if (len >= 16) {
        char k[WSH_KEY_LEN + 1], kw[WSH_KEY_LEN + 1];
        wsh_make_key((const uint8_t *)key, k);
        CHECK(EVP_EncodeBlock((unsigned char *)kw, (const unsigned char *)key, 16) == WSH_KEY_LEN);
        CHECK(strcmp(k, kw) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = 0xcbf29ce484222325ull; /* FNV-1a of the input */
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 0x100000001b3ull;
    if (seed == 0)
        seed = 1;

    char *buf = malloc(size ? size : 1);
    CHECK(buf != NULL);
    if (size > 0)
        memcpy(buf, data, size);

    for (int is_res = 0; is_res <= 1; is_res++) {
        size_t scanned = 0;
        int r = parse(is_res, buf, size, &scanned, &whole);
        check_result(r, size);
        CHECK(parse(is_res, buf, size, NULL, &whole) == r);
        if (r > 0)
            check_parsed(is_res, &whole, buf, (size_t)r);
        piecewise(is_res, data, size, seed + (uint64_t)is_res, r, buf);
        if (r > 0 && !is_res)
            check_upgrade(&whole.req);
        if (r > 0 && is_res) {
            (void)wsh_check_101(&whole.res, "dGhlIHNhbXBsZSBub25jZQ==");
        }
    }
    check_writer(data, size);
    check_accept(buf, size);
    free(buf);
    return 0;
}
