/*
 * test_frame.c - unit suite for the RFC 6455 frame decoder and encoder.
 *
 * Every stream is fed through a recorder that checks the per-call contract
 * (at least one byte consumed, at most one event, chunks inside the fed
 * buffer) and reassembles what the parser reported into a transcript:
 * whole control events and whole data messages, plus the error if any.
 * Valid streams are fed whole, split at every offset, byte by byte and in
 * random pieces, each piece ending at a PROT_NONE page, and all transcripts
 * must be identical. Error tests also pin the byte offset of the call that
 * fails, fed byte by byte, to show that checks fail fast.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsproto/utf8.h"
#include "wsproto/ws_frame.h"

/* Check's ck_assert_* report every passing assertion to the runner (a
 * write per call); the hot helpers below only speak up on failure. */
#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);                                  \
    } while (0)
#define REQUIRE_MSG(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg(__VA_ARGS__);                                                             \
    } while (0)

/* ---- transcript ---- */

#define MAX_ITEMS 1024

typedef struct item {
    ws_ev_type_t type; /* WS_EV_DATA for a whole message */
    uint8_t opcode;
    bool rsv1;
    uint16_t code;
    size_t len;
    uint8_t *data;
} item_t;

typedef struct tlog {
    item_t items[MAX_ITEMS];
    size_t n;
    /* message being reassembled */
    bool in_msg;
    uint8_t op;
    bool rsv1;
    uint8_t *buf;
    size_t len, cap;
    /* outcome */
    int result;     /* 0, or the ws_err_t that stopped the parser */
    size_t err_at;  /* stream offset of the call that failed */
    size_t max_msg; /* largest message reassembled */
} tlog_t;

static tlog_t *tlog_new(void)
{
    tlog_t *l = calloc(1, sizeof *l);
    REQUIRE(l != NULL);
    return l;
}

static void tlog_free(tlog_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].data);
    free(l->buf);
    free(l);
}

static void tlog_push(tlog_t *l, ws_ev_type_t type, uint8_t op, bool rsv1, uint16_t code,
                      const uint8_t *d, size_t len)
{
    REQUIRE(l->n < MAX_ITEMS);
    item_t *it = &l->items[l->n++];
    it->type = type;
    it->opcode = op;
    it->rsv1 = rsv1;
    it->code = code;
    it->len = len;
    it->data = malloc(len + 1);
    REQUIRE(it->data != NULL);
    if (len > 0)
        memcpy(it->data, d, len);
}

static void tlog_append(tlog_t *l, const uint8_t *d, size_t n)
{
    if (l->len + n > l->cap) {
        l->cap = (l->len + n) * 2 + 64;
        l->buf = realloc(l->buf, l->cap);
        REQUIRE(l->buf != NULL);
    }
    if (n > 0)
        memcpy(l->buf + l->len, d, n);
    l->len += n;
}

/* Record one event; check its consistency with what came before. */
static void tlog_event(tlog_t *l, const ws_parser_t *p, const ws_event_t *ev)
{
    switch (ev->type) {
    case WS_EV_NONE:
        break;
    case WS_EV_DATA:
        REQUIRE(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        REQUIRE(ev->first == !l->in_msg);
        if (ev->first) {
            l->in_msg = true;
            l->op = ev->opcode;
            l->rsv1 = ev->rsv1;
            l->len = 0;
        }
        REQUIRE(ev->opcode == l->op);
        REQUIRE(ev->rsv1 == l->rsv1);
        tlog_append(l, ev->data, ev->len);
        REQUIRE(ws_parser_in_message(p) == !ev->fin);
        if (ev->fin) {
            tlog_push(l, WS_EV_DATA, l->op, l->rsv1, 0, l->buf, l->len);
            if (l->len > l->max_msg)
                l->max_msg = l->len;
            l->in_msg = false;
            l->len = 0;
        }
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
    case WS_EV_CLOSE:
        REQUIRE(ev->len <= WS_MAX_CONTROL);
        REQUIRE(ev->data != NULL);
        if (ev->type == WS_EV_CLOSE && ev->close_code == 0)
            REQUIRE(ev->len == 0);
        tlog_push(l, ev->type, 0, false, ev->close_code, ev->data, ev->len);
        break;
    default:
        ck_abort_msg("unknown event type %d", ev->type);
    }
}

/* Feed one piece until it is consumed or the parser fails. */
static void feed_piece(tlog_t *l, ws_parser_t *p, uint8_t *buf, size_t len, size_t stream_off)
{
    size_t off = 0;
    while (off < len) {
        ws_event_t ev;
        ssize_t r = ws_parser_feed(p, buf + off, len - off, &ev);
        if (r < 0) {
            REQUIRE(ev.type == WS_EV_NONE); /* no half-reported event */
            l->result = (int)r;
            l->err_at = stream_off + off;
            return;
        }
        REQUIRE(r >= 1);
        REQUIRE((size_t)r <= len - off);
        if (ev.type == WS_EV_DATA) {
            REQUIRE(ev.data >= buf + off && ev.data + ev.len <= buf + off + (size_t)r);
        }
        tlog_event(l, p, &ev);
        off += (size_t)r;
    }
}

typedef struct cfg {
    ws_role_t role;
    uint64_t max;
    unsigned flags;
} cfg_t;

/* Feed in[0..len) cut at cuts[0..ncuts) (increasing offsets). */
static tlog_t *run_cuts(const cfg_t *c, const uint8_t *in, size_t len, const size_t *cuts,
                        size_t ncuts)
{
    tlog_t *l = tlog_new();
    ws_parser_t p;
    ws_parser_init(&p, c->role, c->max, c->flags);
    size_t start = 0;
    for (size_t i = 0; i <= ncuts && l->result == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        size_t n = end - start;
        uint8_t *heap = NULL, *b;
        if (n <= 65536) {
            b = guard_copy_slot((int)(i & 1), in + start, n);
        } else {
            b = heap = malloc(n);
            REQUIRE(b != NULL);
            memcpy(b, in + start, n);
        }
        feed_piece(l, &p, b, n, start);
        free(heap);
        start = end;
    }
    if (l->result != 0) {
        /* errors are sticky */
        ws_event_t ev;
        uint8_t dummy = 0x81;
        REQUIRE(ws_parser_feed(&p, &dummy, 1, &ev) == l->result);
        REQUIRE(ev.type == WS_EV_NONE);
    } else {
        ws_event_t ev;
        REQUIRE(ws_parser_feed(&p, NULL, 0, &ev) == 0);
        REQUIRE(ev.type == WS_EV_NONE);
    }
    return l;
}

static tlog_t *run_whole(const cfg_t *c, const uint8_t *in, size_t len)
{
    return run_cuts(c, in, len, NULL, 0);
}

static tlog_t *run_bytes(const cfg_t *c, const uint8_t *in, size_t len)
{
    if (len < 2) /* nothing to cut */
        return run_whole(c, in, len);
    size_t *cuts = malloc((len - 1) * sizeof *cuts);
    REQUIRE(cuts != NULL);
    for (size_t i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    tlog_t *l = run_cuts(c, in, len, cuts, len - 1);
    free(cuts);
    return l;
}

static tlog_t *run_random(const cfg_t *c, const uint8_t *in, size_t len, xorshift_t *x)
{
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    REQUIRE(cuts != NULL);
    size_t n = 0, at = 0;
    size_t maxpiece = xorshift_range(x, 1, len < 64 ? 8 : len / 4);
    while (len > 0) {
        at += xorshift_range(x, 1, maxpiece);
        if (at >= len)
            break;
        cuts[n++] = at;
    }
    tlog_t *l = run_cuts(c, in, len, cuts, n);
    free(cuts);
    return l;
}

/* Same transcript. When the parser failed, the partly received message is
 * left out: a chunk with a bad byte is never delivered, so how much of it
 * came out before the error depends on the splits. */
static void assert_same(const tlog_t *a, const tlog_t *b, const char *how)
{
    REQUIRE_MSG(a->result == b->result, "%s: result %d vs %d", how, a->result, b->result);
    REQUIRE_MSG(a->n == b->n, "%s: %zu vs %zu items", how, a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const item_t *x = &a->items[i], *y = &b->items[i];
        REQUIRE_MSG(x->type == y->type && x->opcode == y->opcode && x->rsv1 == y->rsv1 &&
                        x->code == y->code && x->len == y->len &&
                        memcmp(x->data, y->data, x->len) == 0,
                    "%s: item %zu differs", how, i);
    }
    if (a->result == 0) {
        REQUIRE_MSG(a->in_msg == b->in_msg && a->len == b->len &&
                        (a->len == 0 || memcmp(a->buf, b->buf, a->len) == 0),
                    "%s: partial message differs", how);
    }
}

/* Feed every way and compare with feeding it whole; returns the whole-feed
 * transcript for the caller's own assertions. */
static tlog_t *run_all(const cfg_t *c, const uint8_t *in, size_t len)
{
    tlog_t *whole = run_whole(c, in, len);
    tlog_t *t;
    char how[64];

    t = run_bytes(c, in, len);
    assert_same(whole, t, "byte by byte");
    tlog_free(t);

    size_t step = len <= 2048 ? 1 : len / 509;
    for (size_t cut = 1; cut < len; cut += step) {
        t = run_cuts(c, in, len, &cut, 1);
        snprintf(how, sizeof how, "split at %zu", cut);
        assert_same(whole, t, how);
        tlog_free(t);
    }
    /* near both ends of long inputs, every offset */
    for (size_t cut = 1; cut < len && cut < 24; cut++) {
        size_t tail = len - cut;
        t = run_cuts(c, in, len, &tail, 1);
        snprintf(how, sizeof how, "split at %zu", tail);
        assert_same(whole, t, how);
        tlog_free(t);
    }
    xorshift_t x = {len * 2654435761u + 1};
    for (int i = 0; i < 40; i++) {
        t = run_random(c, in, len, &x);
        snprintf(how, sizeof how, "random split #%d", i);
        assert_same(whole, t, how);
        tlog_free(t);
    }
    return whole;
}

/* ---- stream builder ---- */

typedef struct sb {
    uint8_t *d;
    size_t len, cap;
    uint32_t key;
} sb_t;

static void sb_raw(sb_t *s, const void *d, size_t n)
{
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2 + 256;
        s->d = realloc(s->d, s->cap);
        REQUIRE(s->d != NULL);
    }
    if (n > 0)
        memcpy(s->d + s->len, d, n);
    s->len += n;
}

/* Append a frame as a peer of a parser with role `role` would send it:
 * masked toward a server, unmasked toward a client. b0 carries FIN, RSV
 * and opcode verbatim so tests can set any bit. */
static void sb_frame_b0(sb_t *s, ws_role_t role, uint8_t b0, const void *payload, size_t n)
{
    uint8_t hdr[WS_MAX_HEADER], mask[4];
    bool masked = role == WS_ROLE_SERVER;
    s->key = s->key * 1103515245u + 12345u;
    memcpy(mask, &s->key, 4);
    size_t h = ws_frame_header(hdr, b0 & 0x0F, (b0 & 0x80) != 0, (b0 & 0x40) != 0, n,
                               masked ? mask : NULL);
    hdr[0] = b0;
    sb_raw(s, hdr, h);
    size_t at = s->len;
    sb_raw(s, payload, n);
    if (masked)
        ws_mask(s->d + at, n, mask, 0);
}

static void sb_frame(sb_t *s, ws_role_t role, uint8_t opcode, bool fin, const void *payload,
                     size_t n)
{
    sb_frame_b0(s, role, (uint8_t)((fin ? 0x80 : 0) | opcode), payload, n);
}

static void sb_free(sb_t *s)
{
    free(s->d);
    s->d = NULL;
    s->len = s->cap = 0;
}

static void assert_item(const tlog_t *l, size_t i, ws_ev_type_t type, uint8_t op, uint16_t code,
                        const void *d, size_t len)
{
    ck_assert_uint_lt(i, l->n);
    const item_t *it = &l->items[i];
    ck_assert_int_eq(it->type, type);
    ck_assert_int_eq(it->opcode, op);
    ck_assert_uint_eq(it->code, code);
    ck_assert_uint_eq(it->len, len);
    if (len > 0)
        ck_assert_mem_eq(it->data, d, len);
}

static const cfg_t SERVER = {WS_ROLE_SERVER, 0, 0};
static const cfg_t CLIENT = {WS_ROLE_CLIENT, 0, 0};

/* Feed byte by byte and check the error and the offset it surfaced at;
 * then whole and every other way, for the same error. */
static void expect_error(const cfg_t *c, const uint8_t *in, size_t len, int err, size_t at)
{
    tlog_t *b = run_bytes(c, in, len);
    ck_assert_msg(b->result == err, "result %d, expected %d", b->result, err);
    ck_assert_msg(b->err_at == at, "failed at byte %zu, expected %zu", b->err_at, at);
    tlog_free(b);
    tlog_free(run_all(c, in, len));
    b = run_whole(c, in, len);
    ck_assert_int_eq(b->result, err);
    tlog_free(b);
}

/* ---- RFC 6455 section 5.7 ---- */

START_TEST(rfc_single_unmasked_text)
{
    static const uint8_t f[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    tlog_t *l = run_all(&CLIENT, f, sizeof f);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 1);
    assert_item(l, 0, WS_EV_DATA, WS_OP_TEXT, 0, "Hello", 5);
    tlog_free(l);
    /* a server must refuse it: client frames are masked */
    expect_error(&SERVER, f, sizeof f, WS_E_PROTO, 1);
}
END_TEST

START_TEST(rfc_single_masked_text)
{
    static const uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    tlog_t *l = run_all(&SERVER, f, sizeof f);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 1);
    assert_item(l, 0, WS_EV_DATA, WS_OP_TEXT, 0, "Hello", 5);
    tlog_free(l);
    expect_error(&CLIENT, f, sizeof f, WS_E_PROTO, 1);
}
END_TEST

START_TEST(rfc_masked_hello_in_place_one_byte_at_a_time)
{
    static const uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ws_parser_t p;
    ws_parser_init(&p, WS_ROLE_SERVER, 0, 0);
    char got[8];
    size_t n = 0;
    for (size_t i = 0; i < sizeof f; i++) {
        uint8_t *b = guard_copy(&f[i], 1);
        ws_event_t ev;
        ck_assert_int_eq(ws_parser_feed(&p, b, 1, &ev), 1);
        if (i < 6) {
            ck_assert_int_eq(ev.type, WS_EV_NONE);
            continue;
        }
        ck_assert_int_eq(ev.type, WS_EV_DATA);
        ck_assert_ptr_eq(ev.data, b); /* a view, unmasked in place */
        ck_assert_uint_eq(ev.len, 1);
        ck_assert_int_eq(ev.first, i == 6);
        ck_assert_int_eq(ev.fin, i == 10);
        got[n++] = (char)b[0];
    }
    ck_assert_mem_eq(got, "Hello", 5);
    ck_assert(!ws_parser_in_message(&p));
}
END_TEST

/* ws_decoder_t: a control frame whole in the buffer is a view of it (no
 * buffer of the decoder's); split across feeds it stops until the caller
 * gives it a buffer, then gathers it there. The events equal the parser's. */
START_TEST(decoder_control_frames_in_place_or_split)
{
    /* a client's masked Close 1000 "Hello" (13 bytes), then Ping "Hi" (8) */
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t m[64], cp[WS_MAX_CONTROL];
    size_t cl = ws_close_payload(cp, 1000, "Hello", 5);
    ssize_t n1 = ws_frame_encode(m, sizeof m, WS_OP_CLOSE, true, cp, cl, mask);
    ck_assert_int_eq(n1, 13);
    ssize_t n2 = ws_frame_encode(m + n1, sizeof m - (size_t)n1, WS_OP_PING, true,
                                 (const uint8_t *)"Hi", 2, mask);
    ck_assert_int_eq(n2, 8);
    size_t total = (size_t)(n1 + n2);

    /* whole: two events, each pointing into the buffer */
    ws_decoder_t d;
    ws_decoder_init(&d, WS_ROLE_SERVER, 0, 0);
    uint8_t *b = guard_copy(m, total);
    ws_event_t ev;
    ck_assert_int_eq(ws_decoder_feed(&d, b, total, &ev), 13);
    ck_assert_int_eq(ev.type, WS_EV_CLOSE);
    ck_assert_uint_eq(ev.close_code, 1000);
    ck_assert_ptr_eq(ev.data, b + 8);
    ck_assert_uint_eq(ev.len, 5);
    ck_assert_mem_eq(ev.data, "Hello", 5);
    ck_assert(!ws_decoder_needs_ctl(&d));
    ck_assert_int_eq(ws_decoder_feed(&d, b + 13, 8, &ev), 8);
    ck_assert_int_eq(ev.type, WS_EV_PING);
    ck_assert_ptr_eq(ev.data, b + 19);
    ck_assert_mem_eq(ev.data, "Hi", 2);
    ck_assert_ptr_null(d.ctl);

    /* one byte at a time: stops at the first payload byte of each frame
     * until it has a buffer */
    {
        ws_decoder_init(&d, WS_ROLE_SERVER, 0, 0);
        uint8_t ctl[WS_MAX_CONTROL];
        int events = 0;
        for (size_t i = 0; i < total;) {
            uint8_t *one = guard_copy(&m[i], 1);
            ssize_t n = ws_decoder_feed(&d, one, 1, &ev);
            ck_assert_int_ge(n, 0);
            if (n == 0) {
                ck_assert(ws_decoder_needs_ctl(&d));
                ck_assert_int_eq(ev.type, WS_EV_NONE);
                ck_assert_ptr_null(d.ctl);
                d.ctl = ctl;
                continue;
            }
            i++;
            if (ev.type == WS_EV_NONE)
                continue;
            events++;
            if (ev.type == WS_EV_CLOSE) {
                ck_assert_uint_eq(ev.close_code, 1000);
                ck_assert_mem_eq(ev.data, "Hello", 5);
            } else {
                ck_assert_int_eq(ev.type, WS_EV_PING);
                ck_assert_mem_eq(ev.data, "Hi", 2);
            }
            ck_assert_ptr_eq(ev.data, ctl + (ev.type == WS_EV_CLOSE ? 2 : 0));
            d.ctl = NULL; /* released once handled */
        }
        ck_assert_int_eq(events, 2);
    }
}
END_TEST

START_TEST(rfc_fragmented_unmasked_text)
{
    static const uint8_t f[] = {0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f};
    tlog_t *l = run_all(&CLIENT, f, sizeof f);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 1);
    assert_item(l, 0, WS_EV_DATA, WS_OP_TEXT, 0, "Hello", 5);
    tlog_free(l);

    /* the events, fed whole: two chunks, first then fin */
    ws_parser_t p;
    ws_parser_init(&p, WS_ROLE_CLIENT, 0, 0);
    uint8_t *b = guard_copy(f, sizeof f);
    ws_event_t ev;
    ck_assert_int_eq(ws_parser_feed(&p, b, sizeof f, &ev), 5);
    ck_assert(ev.type == WS_EV_DATA && ev.first && !ev.fin && ev.len == 3);
    ck_assert(ev.opcode == WS_OP_TEXT && ev.data == b + 2);
    ck_assert(ws_parser_in_message(&p));
    ck_assert_int_eq(ws_parser_feed(&p, b + 5, 4, &ev), 4);
    ck_assert(ev.type == WS_EV_DATA && !ev.first && ev.fin && ev.len == 2);
    ck_assert(ev.opcode == WS_OP_TEXT && ev.data == b + 7);
    ck_assert(!ws_parser_in_message(&p));
}
END_TEST

START_TEST(rfc_ping_and_masked_pong)
{
    static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                   0x7f, 0x9f, 0x4d, 0x51, 0x58};
    tlog_t *l = run_all(&CLIENT, ping, sizeof ping);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 1);
    assert_item(l, 0, WS_EV_PING, 0, 0, "Hello", 5);
    tlog_free(l);
    l = run_all(&SERVER, pong, sizeof pong);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 1);
    assert_item(l, 0, WS_EV_PONG, 0, 0, "Hello", 5);
    tlog_free(l);
}
END_TEST

START_TEST(rfc_256_and_64k_binary)
{
    uint8_t *payload = malloc(65536);
    ck_assert_ptr_nonnull(payload);
    for (size_t i = 0; i < 65536; i++)
        payload[i] = (uint8_t)(i * 7 + 3);

    sb_t s = {0};
    static const uint8_t h256[] = {0x82, 0x7E, 0x01, 0x00};
    sb_raw(&s, h256, sizeof h256);
    sb_raw(&s, payload, 256);
    tlog_t *l = run_all(&CLIENT, s.d, s.len);
    ck_assert_int_eq(l->result, 0);
    assert_item(l, 0, WS_EV_DATA, WS_OP_BINARY, 0, payload, 256);
    tlog_free(l);
    sb_free(&s);

    static const uint8_t h64k[] = {0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00};
    sb_raw(&s, h64k, sizeof h64k);
    sb_raw(&s, payload, 65536);
    l = run_all(&CLIENT, s.d, s.len);
    ck_assert_int_eq(l->result, 0);
    assert_item(l, 0, WS_EV_DATA, WS_OP_BINARY, 0, payload, 65536);
    tlog_free(l);
    sb_free(&s);
    free(payload);
}
END_TEST

/* ---- lengths ---- */

START_TEST(every_length_encoding_both_roles)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 65537, 100000};
    static const uint8_t len7[] = {0, 1, 125, 126, 126, 126, 127, 127, 127};
    size_t maxlen = 100000;
    uint8_t *payload = malloc(maxlen);
    ck_assert_ptr_nonnull(payload);
    for (size_t i = 0; i < maxlen; i++)
        payload[i] = (uint8_t)('a' + i % 26);

    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            for (int op = WS_OP_TEXT; op <= WS_OP_BINARY; op++) {
                sb_t s = {0};
                sb_frame(&s, c.role, (uint8_t)op, true, payload, lens[k]);
                ck_assert_uint_eq(s.d[1] & 0x7F, len7[k]);
                ck_assert_uint_eq(s.len, ws_header_size(lens[k], role == WS_ROLE_SERVER) + lens[k]);
                tlog_t *l = run_all(&c, s.d, s.len);
                ck_assert_int_eq(l->result, 0);
                ck_assert_uint_eq(l->n, 1);
                assert_item(l, 0, WS_EV_DATA, (uint8_t)op, 0, payload, lens[k]);
                tlog_free(l);
                sb_free(&s);
            }
        }
    }
    free(payload);
}
END_TEST

START_TEST(header_bytes_for_each_length_class)
{
    uint8_t h[WS_MAX_HEADER];
    static const uint8_t key[4] = {1, 2, 3, 4};

    ck_assert_uint_eq(ws_frame_header(h, WS_OP_TEXT, true, false, 0, NULL), 2);
    ck_assert_mem_eq(h, "\x81\x00", 2);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_BINARY, false, false, 125, NULL), 2);
    ck_assert_mem_eq(h, "\x02\x7D", 2);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_TEXT, true, true, 126, NULL), 4);
    ck_assert_mem_eq(h, "\xC1\x7E\x00\x7E", 4);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_TEXT, true, false, 65535, NULL), 4);
    ck_assert_mem_eq(h, "\x81\x7E\xFF\xFF", 4);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_CONT, true, false, 65536, NULL), 10);
    ck_assert_mem_eq(h, "\x80\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_BINARY, true, false, 0x0123456789ABCDEFull, key),
                      14);
    ck_assert_mem_eq(h, "\x82\xFF\x01\x23\x45\x67\x89\xAB\xCD\xEF\x01\x02\x03\x04", 14);
    ck_assert_uint_eq(ws_frame_header(h, WS_OP_PING, true, false, 5, key), 6);
    ck_assert_mem_eq(h, "\x89\x85\x01\x02\x03\x04", 6);

    ck_assert_uint_eq(ws_header_size(0, false), 2);
    ck_assert_uint_eq(ws_header_size(125, false), 2);
    ck_assert_uint_eq(ws_header_size(126, false), 4);
    ck_assert_uint_eq(ws_header_size(65535, false), 4);
    ck_assert_uint_eq(ws_header_size(65536, false), 10);
    ck_assert_uint_eq(ws_header_size(UINT64_MAX >> 1, false), WS_MAX_SERVER_HEADER);
    ck_assert_uint_eq(ws_header_size(0, true), 6);
    ck_assert_uint_eq(ws_header_size(126, true), 8);
    ck_assert_uint_eq(ws_header_size(65536, true), WS_MAX_HEADER);
}
END_TEST

START_TEST(non_minimal_lengths_rejected)
{
    /* 16-bit form for 0..125, 64-bit form for 0..65535 */
    static const uint64_t small16[] = {0, 1, 125};
    static const uint64_t small64[] = {0, 125, 126, 65535};
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        size_t keylen = role == WS_ROLE_SERVER ? 4 : 0;
        uint8_t mbit = role == WS_ROLE_SERVER ? 0x80 : 0;
        for (size_t i = 0; i < 3; i++) {
            uint8_t f[16] = {0x82, (uint8_t)(mbit | 126), 0, (uint8_t)small16[i], 9, 9, 9, 9};
            /* the error surfaces with the last header byte */
            expect_error(&c, f, 4 + keylen + 1, WS_E_PROTO, 3 + keylen);
        }
        for (size_t i = 0; i < 4; i++) {
            uint8_t f[20] = {0x82,
                             (uint8_t)(mbit | 127),
                             0,
                             0,
                             0,
                             0,
                             0,
                             0,
                             (uint8_t)(small64[i] >> 8),
                             (uint8_t)small64[i]};
            expect_error(&c, f, 10 + keylen + 1, WS_E_PROTO, 9 + keylen);
        }
        /* the smallest proper values pass */
        uint8_t ok16[4 + 4 + 126] = {0x82, (uint8_t)(mbit | 126), 0, 126};
        tlog_t *l = run_whole(&c, ok16, 4 + keylen + 126);
        ck_assert_int_eq(l->result, 0);
        ck_assert_uint_eq(l->n, 1);
        tlog_free(l);
    }
}
END_TEST

START_TEST(length_msb_rejected)
{
    uint8_t f[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0};
    expect_error(&SERVER, f, sizeof f, WS_E_PROTO, 13);
    uint8_t g[] = {0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0};
    expect_error(&CLIENT, g, sizeof g, WS_E_PROTO, 9);
    /* 2^63 - 1 is a legal length: with a limit it is merely too big */
    uint8_t h[] = {0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0};
    cfg_t c = {WS_ROLE_CLIENT, 1 << 20, 0};
    expect_error(&c, h, sizeof h, WS_E_TOO_BIG, 9);
}
END_TEST

/* ---- masking ---- */

START_TEST(mask_matches_bytewise_xor)
{
    static const uint8_t key[4] = {0xA5, 0x3C, 0x0F, 0xF0};
    uint8_t a[300], b[300];
    for (size_t off = 0; off < 8; off++) {
        for (size_t len = 0; len <= 150; len++) {
            for (size_t start = 0; start < 8; start++) {
                for (size_t i = 0; i < sizeof a; i++)
                    a[i] = b[i] = (uint8_t)(i * 31 + len);
                ws_mask(a + start, len, key, off);
                for (size_t i = 0; i < len; i++)
                    b[start + i] ^= key[(off + i) % 4];
                ck_assert_mem_eq(a, b, sizeof a); /* and nothing outside */
                ws_mask(a + start, len, key, off);
                ws_mask(b + start, len, key, off);
                ck_assert_mem_eq(a, b, sizeof a);
            }
        }
    }
    /* at the guard page */
    for (size_t len = 0; len <= 64; len++) {
        uint8_t *g = guard_copy(a, len);
        ws_mask(g, len, key, 3);
    }
}
END_TEST

START_TEST(mask_key_continues_across_chunks)
{
    /* a masked frame split so chunks start at every key offset */
    uint8_t text[200];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (uint8_t)('A' + i % 50);
    sb_t s = {0};
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_BINARY, true, text, sizeof text);
    xorshift_t x = {99};
    for (int i = 0; i < 200; i++) {
        tlog_t *l = run_random(&SERVER, s.d, s.len, &x);
        ck_assert_int_eq(l->result, 0);
        assert_item(l, 0, WS_EV_DATA, WS_OP_BINARY, 0, text, sizeof text);
        tlog_free(l);
    }
    sb_free(&s);
}
END_TEST

/* ---- message layer ---- */

START_TEST(fragmented_with_controls_interleaved)
{
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        sb_t s = {0};
        sb_frame(&s, c.role, WS_OP_TEXT, false, "Hel", 3);
        sb_frame(&s, c.role, WS_OP_PING, true, "p1", 2);
        sb_frame(&s, c.role, WS_OP_CONT, false, "lo, ", 4);
        sb_frame(&s, c.role, WS_OP_PONG, true, "", 0);
        sb_frame(&s, c.role, WS_OP_CONT, false, "", 0);
        sb_frame(&s, c.role, WS_OP_PING, true, "", 0);
        sb_frame(&s, c.role, WS_OP_CONT, false, "w\xC3", 2); /* é split */
        sb_frame(&s, c.role, WS_OP_CONT, false, "\xA9", 1);
        sb_frame(&s, c.role, WS_OP_CLOSE, true,
                 "\x03\xE8"
                 "bye",
                 5);
        sb_frame(&s, c.role, WS_OP_CONT, true, "rld", 3);
        sb_frame(&s, c.role, WS_OP_BINARY, false, "\x00\x01", 2);
        sb_frame(&s, c.role, WS_OP_PING, true, "p2", 2);
        sb_frame(&s, c.role, WS_OP_CONT, true, "\xFF", 1);
        sb_frame(&s, c.role, WS_OP_TEXT, true, "", 0);
        tlog_t *l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        ck_assert_uint_eq(l->n, 8);
        assert_item(l, 0, WS_EV_PING, 0, 0, "p1", 2);
        assert_item(l, 1, WS_EV_PONG, 0, 0, "", 0);
        assert_item(l, 2, WS_EV_PING, 0, 0, "", 0);
        assert_item(l, 3, WS_EV_CLOSE, 0, 1000, "bye", 3);
        assert_item(l, 4, WS_EV_DATA, WS_OP_TEXT, 0, "Hello, w\xC3\xA9rld", 13);
        assert_item(l, 5, WS_EV_PING, 0, 0, "p2", 2);
        assert_item(l, 6, WS_EV_DATA, WS_OP_BINARY, 0, "\x00\x01\xFF", 3);
        assert_item(l, 7, WS_EV_DATA, WS_OP_TEXT, 0, "", 0);
        ck_assert(!l->in_msg);
        tlog_free(l);
        sb_free(&s);
    }
}
END_TEST

START_TEST(empty_frames_yield_data_events)
{
    static const uint8_t empty_text[] = {0x81, 0x00};
    ws_parser_t p;
    ws_event_t ev;
    ws_parser_init(&p, WS_ROLE_CLIENT, 0, 0);
    uint8_t *b = guard_copy(empty_text, 2);
    ck_assert_int_eq(ws_parser_feed(&p, b, 2, &ev), 2);
    ck_assert_int_eq(ev.type, WS_EV_DATA);
    ck_assert(ev.first && ev.fin && ev.len == 0 && ev.opcode == WS_OP_TEXT);

    /* byte by byte: the event comes with the second byte */
    ws_parser_init(&p, WS_ROLE_CLIENT, 0, 0);
    ck_assert_int_eq(ws_parser_feed(&p, guard_copy(empty_text, 1), 1, &ev), 1);
    ck_assert_int_eq(ev.type, WS_EV_NONE);
    ck_assert_int_eq(ws_parser_feed(&p, guard_copy(empty_text + 1, 1), 1, &ev), 1);
    ck_assert(ev.type == WS_EV_DATA && ev.first && ev.fin && ev.len == 0);

    /* masked empty binary, then a message whose last fragment is empty */
    sb_t s = {0};
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_BINARY, true, "", 0);
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_TEXT, false, "ab", 2);
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_CONT, true, "", 0);
    tlog_t *l = run_all(&SERVER, s.d, s.len);
    ck_assert_int_eq(l->result, 0);
    ck_assert_uint_eq(l->n, 2);
    assert_item(l, 0, WS_EV_DATA, WS_OP_BINARY, 0, "", 0);
    assert_item(l, 1, WS_EV_DATA, WS_OP_TEXT, 0, "ab", 2);
    tlog_free(l);
    sb_free(&s);
}
END_TEST

START_TEST(continuation_without_start)
{
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        sb_t s = {0};
        sb_frame(&s, c.role, WS_OP_CONT, true, "x", 1);
        expect_error(&c, s.d, s.len, WS_E_PROTO, 0);
        sb_free(&s);
        /* also right after a complete message */
        sb_frame(&s, c.role, WS_OP_TEXT, true, "ok", 2);
        size_t at = s.len;
        sb_frame(&s, c.role, WS_OP_CONT, false, "x", 1);
        expect_error(&c, s.d, s.len, WS_E_PROTO, at);
        sb_free(&s);
    }
}
END_TEST

START_TEST(new_message_inside_fragmented_one)
{
    for (int role = 0; role < 2; role++) {
        for (int op = WS_OP_TEXT; op <= WS_OP_BINARY; op++) {
            cfg_t c = {(ws_role_t)role, 0, 0};
            sb_t s = {0};
            sb_frame(&s, c.role, WS_OP_BINARY, false, "ab", 2);
            sb_frame(&s, c.role, WS_OP_PING, true, "", 0);
            size_t at = s.len;
            sb_frame(&s, c.role, (uint8_t)op, true, "cd", 2);
            expect_error(&c, s.d, s.len, WS_E_PROTO, at);
            sb_free(&s);
        }
    }
}
END_TEST

START_TEST(rsv_bits)
{
    for (int role = 0; role < 2; role++) {
        cfg_t plain = {(ws_role_t)role, 0, 0};
        cfg_t deflate = {(ws_role_t)role, 0, WS_PARSER_ALLOW_RSV1};
        sb_t s = {0};

        /* RSV1 without the extension; RSV2, RSV3 always */
        static const uint8_t rsv[] = {0x40, 0x20, 0x10, 0x60, 0x70};
        for (size_t i = 0; i < sizeof rsv; i++) {
            sb_frame_b0(&s, plain.role, (uint8_t)(0x81 | rsv[i]), "x", 1);
            expect_error(&plain, s.d, s.len, WS_E_PROTO, 0);
            if (rsv[i] != 0x40)
                expect_error(&deflate, s.d, s.len, WS_E_PROTO, 0);
            sb_free(&s);
        }

        /* RSV1 on a first frame with the extension: accepted, reported,
         * and text is not UTF-8 checked (it is compressed) */
        sb_frame_b0(&s, deflate.role, 0x41, "\xFF\xC0", 2);
        sb_frame(&s, deflate.role, WS_OP_PING, true, "", 0);
        sb_frame(&s, deflate.role, WS_OP_CONT, true, "\x80", 1);
        sb_frame(&s, deflate.role, WS_OP_TEXT, true, "plain", 5);
        tlog_t *l = run_all(&deflate, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        ck_assert_uint_eq(l->n, 3);
        assert_item(l, 1, WS_EV_DATA, WS_OP_TEXT, 0, "\xFF\xC0\x80", 3);
        ck_assert(l->items[1].rsv1);
        assert_item(l, 2, WS_EV_DATA, WS_OP_TEXT, 0, "plain", 5);
        ck_assert(!l->items[2].rsv1);
        tlog_free(l);
        sb_free(&s);

        /* but never on a continuation frame */
        sb_frame(&s, deflate.role, WS_OP_BINARY, false, "a", 1);
        size_t at = s.len;
        sb_frame_b0(&s, deflate.role, 0x40 | 0x80, "b", 1);
        expect_error(&deflate, s.d, s.len, WS_E_PROTO, at);
        sb_free(&s);

        /* nor on control frames */
        static const uint8_t ctl[] = {0x88, 0x89, 0x8A};
        for (size_t i = 0; i < sizeof ctl; i++) {
            sb_frame_b0(&s, deflate.role, (uint8_t)(ctl[i] | 0x40), "", 0);
            expect_error(&deflate, s.d, s.len, WS_E_PROTO, 0);
            sb_free(&s);
        }
    }
}
END_TEST

START_TEST(reserved_opcodes)
{
    static const uint8_t ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, WS_PARSER_ALLOW_RSV1};
        for (size_t i = 0; i < sizeof ops; i++) {
            for (int fin = 0; fin < 2; fin++) {
                sb_t s = {0};
                sb_frame(&s, c.role, ops[i], fin, "", 0);
                expect_error(&c, s.d, s.len, WS_E_PROTO, 0);
                sb_free(&s);
                /* and inside a fragmented message */
                sb_frame(&s, c.role, WS_OP_TEXT, false, "a", 1);
                size_t at = s.len;
                sb_frame(&s, c.role, ops[i], fin, "a", 1);
                expect_error(&c, s.d, s.len, WS_E_PROTO, at);
                sb_free(&s);
            }
        }
    }
}
END_TEST

START_TEST(control_frame_rules)
{
    uint8_t big[200];
    memset(big, 'c', sizeof big);
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        for (uint8_t op = WS_OP_CLOSE; op <= WS_OP_PONG; op++) {
            sb_t s = {0};
            /* over 125 bytes: 126 (16-bit form) and more */
            sb_frame(&s, c.role, op, true, big, 126);
            expect_error(&c, s.d, s.len, WS_E_PROTO, 1);
            sb_free(&s);
            sb_frame(&s, c.role, op, true, big, sizeof big);
            expect_error(&c, s.d, s.len, WS_E_PROTO, 1);
            sb_free(&s);
            /* fragmented */
            sb_frame(&s, c.role, op, false, "", 0);
            expect_error(&c, s.d, s.len, WS_E_PROTO, 0);
            sb_free(&s);
            /* exactly 125 is fine */
            big[0] = 0x03, big[1] = 0xE8; /* a valid close code */
            sb_frame(&s, c.role, op, true, big, 125);
            tlog_t *l = run_all(&c, s.d, s.len);
            ck_assert_int_eq(l->result, 0);
            ck_assert_uint_eq(l->n, 1);
            ck_assert_uint_eq(l->items[0].len, op == WS_OP_CLOSE ? 123 : 125);
            tlog_free(l);
            sb_free(&s);
            big[0] = big[1] = 'c';
        }
    }
}
END_TEST

START_TEST(mask_bit_must_match_role)
{
    /* unmasked to a server, masked to a client; found at the second byte */
    static const uint8_t unmasked[] = {0x82, 0x01, 0x00};
    static const uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 0x00};
    expect_error(&SERVER, unmasked, sizeof unmasked, WS_E_PROTO, 1);
    expect_error(&CLIENT, masked, sizeof masked, WS_E_PROTO, 1);
    static const uint8_t uping[] = {0x89, 0x00};
    static const uint8_t mping[] = {0x89, 0x80, 1, 2, 3, 4};
    expect_error(&SERVER, uping, sizeof uping, WS_E_PROTO, 1);
    expect_error(&CLIENT, mping, sizeof mping, WS_E_PROTO, 1);
}
END_TEST

START_TEST(message_size_limit)
{
    uint8_t data[300];
    memset(data, 'm', sizeof data);
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 100, 0};
        sb_t s = {0};

        /* exactly at the limit, whole and fragmented */
        sb_frame(&s, c.role, WS_OP_TEXT, true, data, 100);
        sb_frame(&s, c.role, WS_OP_BINARY, false, data, 60);
        sb_frame(&s, c.role, WS_OP_PING, true, data, 125); /* not counted */
        sb_frame(&s, c.role, WS_OP_CONT, true, data, 40);
        tlog_t *l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        ck_assert_uint_eq(l->n, 3);
        ck_assert_uint_eq(l->max_msg, 100);
        tlog_free(l);
        sb_free(&s);

        /* one frame over: refused at its header, before any payload */
        size_t hl = ws_header_size(101, role == WS_ROLE_SERVER);
        sb_frame(&s, c.role, WS_OP_BINARY, true, data, 101);
        expect_error(&c, s.d, hl, WS_E_TOO_BIG, hl - 1);
        expect_error(&c, s.d, s.len, WS_E_TOO_BIG, hl - 1);
        sb_free(&s);

        /* the fragments add up to one over */
        sb_frame(&s, c.role, WS_OP_TEXT, false, data, 60);
        sb_frame(&s, c.role, WS_OP_CONT, false, data, 0);
        size_t at = s.len;
        sb_frame(&s, c.role, WS_OP_CONT, true, data, 41);
        expect_error(&c, s.d, s.len, WS_E_TOO_BIG, at + ws_header_size(41, role == 0) - 1);
        sb_free(&s);

        /* a long frame is refused on the header alone */
        sb_frame(&s, c.role, WS_OP_BINARY, true, data, 300);
        expect_error(&c, s.d, ws_header_size(300, role == 0), WS_E_TOO_BIG,
                     ws_header_size(300, role == 0) - 1);
        sb_free(&s);

        /* 0 means no limit */
        cfg_t unl = {(ws_role_t)role, 0, 0};
        sb_frame(&s, c.role, WS_OP_BINARY, true, data, 300);
        l = run_whole(&unl, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        tlog_free(l);
        sb_free(&s);
    }
    /* a huge limit does not overflow the check */
    cfg_t huge = {WS_ROLE_CLIENT, UINT64_MAX, 0};
    static const uint8_t f[] = {0x02, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 'a'};
    tlog_t *l = run_whole(&huge, f, sizeof f);
    ck_assert_int_eq(l->result, 0);
    ck_assert(l->in_msg && l->len == 1);
    tlog_free(l);
}
END_TEST

START_TEST(text_utf8_checked_across_fragments)
{
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        cfg_t skip = {(ws_role_t)role, 0, WS_PARSER_SKIP_UTF8};
        sb_t s = {0};

        /* a character split over three frames with controls between */
        sb_frame(&s, c.role, WS_OP_TEXT, false, "\xF0\x9F", 2);
        sb_frame(&s, c.role, WS_OP_PING, true, "", 0);
        sb_frame(&s, c.role, WS_OP_CONT, false, "\x98", 1);
        sb_frame(&s, c.role, WS_OP_CONT, true, "\x80", 1);
        tlog_t *l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        assert_item(l, 1, WS_EV_DATA, WS_OP_TEXT, 0, "\xF0\x9F\x98\x80", 4);
        tlog_free(l);
        sb_free(&s);

        /* invalid in a non-final fragment: fails there, at the bad byte */
        size_t h = ws_header_size(6, role == 0);
        sb_frame(&s, c.role, WS_OP_TEXT, false, "abc\xED\xA0z", 6);
        sb_frame(&s, c.role, WS_OP_CONT, true, "never", 5);
        expect_error(&c, s.d, s.len, WS_E_UTF8, h + 4);
        expect_error(&c, s.d, h + 6, WS_E_UTF8, h + 4);
        l = run_all(&skip, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        tlog_free(l);
        sb_free(&s);

        /* invalid across the fragment boundary: E2 82 | 28 */
        sb_frame(&s, c.role, WS_OP_TEXT, false, "\xE2\x82", 2);
        size_t at = s.len + ws_header_size(2, role == 0);
        sb_frame(&s, c.role, WS_OP_CONT, true, "(x", 2);
        expect_error(&c, s.d, s.len, WS_E_UTF8, at);
        sb_free(&s);

        /* incomplete code point at fin, whether the last frame has data
         * or is empty */
        sb_frame(&s, c.role, WS_OP_TEXT, true, "ok\xE2\x82", 4);
        expect_error(&c, s.d, s.len, WS_E_UTF8, s.len - 1);
        l = run_all(&skip, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        tlog_free(l);
        sb_free(&s);
        sb_frame(&s, c.role, WS_OP_TEXT, false, "\xC3", 1);
        sb_frame(&s, c.role, WS_OP_CONT, true, "", 0);
        expect_error(&c, s.d, s.len, WS_E_UTF8, s.len - 1);
        sb_free(&s);

        /* binary is never checked */
        sb_frame(&s, c.role, WS_OP_BINARY, true, "\xFF\xFE\xC0", 3);
        l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        tlog_free(l);
        sb_free(&s);

        /* each message starts from a clean validator */
        sb_frame(&s, c.role, WS_OP_BINARY, true, "\xE2", 1);
        sb_frame(&s, c.role, WS_OP_TEXT, true, "a", 1);
        l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        ck_assert_uint_eq(l->n, 2);
        tlog_free(l);
        sb_free(&s);
    }
}
END_TEST

START_TEST(close_payload_rules)
{
    static const uint16_t good[] = {1000, 1001, 1002, 1003, 1007, 1008,
                                    1009, 1010, 1011, 3000, 4999};
    static const uint16_t bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535};
    for (int role = 0; role < 2; role++) {
        cfg_t c = {(ws_role_t)role, 0, 0};
        sb_t s = {0};

        /* empty: code 0 */
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "", 0);
        tlog_t *l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        assert_item(l, 0, WS_EV_CLOSE, 0, 0, "", 0);
        tlog_free(l);
        sb_free(&s);

        /* one byte: half a code, refused at the header */
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "\x03", 1);
        expect_error(&c, s.d, s.len, WS_E_PROTO, 1);
        sb_free(&s);

        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            uint8_t pl[8] = {(uint8_t)(good[i] >> 8), (uint8_t)good[i], 'w', 'h', 'y'};
            sb_frame(&s, c.role, WS_OP_CLOSE, true, pl, 2);
            sb_frame(&s, c.role, WS_OP_CLOSE, true, pl, 5);
            l = run_all(&c, s.d, s.len);
            ck_assert_int_eq(l->result, 0);
            assert_item(l, 0, WS_EV_CLOSE, 0, good[i], "", 0);
            assert_item(l, 1, WS_EV_CLOSE, 0, good[i], "why", 3);
            tlog_free(l);
            sb_free(&s);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            uint8_t pl[4] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i], 'a'};
            sb_frame(&s, c.role, WS_OP_CLOSE, true, pl, 3);
            expect_error(&c, s.d, s.len, WS_E_PROTO, s.len - 1);
            sb_free(&s);
        }
        /* reason not UTF-8 */
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "\x03\xE8\xCE\xBA\xE1", 5);
        expect_error(&c, s.d, s.len, WS_E_UTF8, s.len - 1);
        sb_free(&s);
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "\x03\xE8\xED\xA0\x80", 5);
        expect_error(&c, s.d, s.len, WS_E_UTF8, s.len - 1);
        sb_free(&s);
        /* an invalid code wins over an invalid reason */
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "\x03\xED\xFF", 3);
        expect_error(&c, s.d, s.len, WS_E_PROTO, s.len - 1);
        sb_free(&s);
        /* close inside a fragmented message is fine */
        sb_frame(&s, c.role, WS_OP_TEXT, false, "a", 1);
        sb_frame(&s, c.role, WS_OP_CLOSE, true, "\x0B\xB8", 2);
        l = run_all(&c, s.d, s.len);
        ck_assert_int_eq(l->result, 0);
        assert_item(l, 0, WS_EV_CLOSE, 0, 3000, "", 0);
        ck_assert(l->in_msg);
        tlog_free(l);
        sb_free(&s);
    }
}
END_TEST

START_TEST(one_event_per_call_in_a_packed_buffer)
{
    /* many frames in one buffer: each call returns one event and stops */
    sb_t s = {0};
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_PING, true, "a", 1);
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_TEXT, true, "bc", 2);
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_PONG, true, "", 0);
    sb_frame(&s, WS_ROLE_SERVER, WS_OP_BINARY, true, "", 0);
    ws_parser_t p;
    ws_parser_init(&p, WS_ROLE_SERVER, 0, 0);
    uint8_t *b = guard_copy(s.d, s.len);
    static const ws_ev_type_t want[] = {WS_EV_PING, WS_EV_DATA, WS_EV_PONG, WS_EV_DATA};
    static const size_t used[] = {7, 8, 6, 6};
    size_t off = 0;
    for (size_t i = 0; i < 4; i++) {
        ws_event_t ev;
        ssize_t r = ws_parser_feed(&p, b + off, s.len - off, &ev);
        ck_assert_int_eq(r, (ssize_t)used[i]);
        ck_assert_int_eq(ev.type, want[i]);
        off += (size_t)r;
    }
    ck_assert_uint_eq(off, s.len);
    sb_free(&s);
}
END_TEST

/* ---- encoder ---- */

START_TEST(encode_round_trip_both_roles)
{
    static const uint8_t key[4] = {0xDE, 0xAD, 0xBE, 0xEF};
    static const size_t lens[] = {0, 5, 125, 126, 1000, 65535, 65536, 70000};
    uint8_t *payload = malloc(70000), *out = malloc(70000 + WS_MAX_HEADER);
    ck_assert(payload && out);
    for (size_t i = 0; i < 70000; i++)
        payload[i] = (uint8_t)(0x20 + i % 90);

    for (int role = 0; role < 2; role++) {
        /* a client sends masked frames to a server parser */
        const uint8_t *mask = role == WS_ROLE_SERVER ? key : NULL;
        cfg_t c = {(ws_role_t)role, 0, 0};
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            size_t h = ws_header_size(lens[k], mask != NULL);
            ssize_t n = ws_frame_encode(out, h + lens[k], WS_OP_TEXT, true, payload, lens[k], mask);
            ck_assert_int_eq(n, (ssize_t)(h + lens[k]));
            ck_assert_int_eq(
                ws_frame_encode(out, h + lens[k] - 1, WS_OP_TEXT, true, payload, lens[k], mask),
                WS_E_NOSPACE);
            tlog_t *l = run_whole(&c, out, (size_t)n);
            ck_assert_int_eq(l->result, 0);
            assert_item(l, 0, WS_EV_DATA, WS_OP_TEXT, 0, payload, lens[k]);
            tlog_free(l);
            if (lens[k] <= 1000) {
                tlog_free(run_all(&c, out, (size_t)n));
            }
        }
        /* a fragmented message with a ping between, encoded piece by piece */
        size_t off = 0;
        ssize_t n;
        n = ws_frame_encode(out + off, 100, WS_OP_BINARY, false, payload, 10, mask);
        off += (size_t)n;
        n = ws_frame_encode(out + off, 100, WS_OP_PING, true, payload, 3, mask);
        off += (size_t)n;
        n = ws_frame_encode(out + off, 100, WS_OP_CONT, true, payload + 10, 20, mask);
        off += (size_t)n;
        tlog_t *l = run_all(&c, out, off);
        ck_assert_int_eq(l->result, 0);
        assert_item(l, 0, WS_EV_PING, 0, 0, payload, 3);
        assert_item(l, 1, WS_EV_DATA, WS_OP_BINARY, 0, payload, 30);
        tlog_free(l);
    }
    free(payload);
    free(out);
}
END_TEST

START_TEST(encode_in_place_and_bad_arguments)
{
    static const uint8_t key[4] = {9, 8, 7, 6};
    uint8_t buf[64];
    /* payload already at out + header: encoded in place */
    memcpy(buf + 6, "inplace", 7);
    ck_assert_int_eq(ws_frame_encode(buf, sizeof buf, WS_OP_TEXT, true, buf + 6, 7, key), 13);
    tlog_t *l = run_whole(&SERVER, buf, 13);
    assert_item(l, 0, WS_EV_DATA, WS_OP_TEXT, 0, "inplace", 7);
    tlog_free(l);
    /* payload at out itself */
    memcpy(buf, "front", 5);
    ck_assert_int_eq(ws_frame_encode(buf, sizeof buf, WS_OP_BINARY, true, buf, 5, NULL), 7);
    ck_assert_mem_eq(buf,
                     "\x82\x05"
                     "front",
                     7);
    ck_assert_int_eq(ws_frame_encode(buf, 1, WS_OP_TEXT, true, NULL, 0, NULL), WS_E_NOSPACE);
    ck_assert_int_eq(ws_frame_encode(buf, 2, WS_OP_TEXT, true, NULL, 0, NULL), 2);
    /* control frames the decoder would refuse are not encoded */
    uint8_t big[130] = {0};
    uint8_t out[200];
    ck_assert_int_eq(ws_frame_encode(out, sizeof out, WS_OP_PING, true, big, 126, NULL),
                     WS_E_INVAL);
    ck_assert_int_eq(ws_frame_encode(out, sizeof out, WS_OP_CLOSE, false, big, 2, NULL),
                     WS_E_INVAL);
    ck_assert_int_eq(ws_frame_encode(out, sizeof out, WS_OP_PONG, true, big, 125, NULL), 127);
}
END_TEST

START_TEST(close_payload_encoding)
{
    uint8_t out[WS_MAX_CONTROL + 8];
    ck_assert_uint_eq(ws_close_payload(out, 0, "ignored", 7), 0);
    ck_assert_uint_eq(ws_close_payload(out, 1000, NULL, 0), 2);
    ck_assert_mem_eq(out, "\x03\xE8", 2);
    ck_assert_uint_eq(ws_close_payload(out, 1008, "slow consumer", 13), 15);
    ck_assert_mem_eq(out, "\x03\xF0slow consumer", 15);

    /* long reasons: 123 bytes at most, cut at a character boundary, for
     * characters of each length at each alignment against the cut */
    static const char *chars[] = {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    for (size_t c = 0; c < 4; c++) {
        size_t cl = strlen(chars[c]);
        for (size_t pad = 0; pad < 4; pad++) {
            char reason[300];
            size_t n = 0;
            for (; n < pad; n++)
                reason[n] = 'p';
            while (n + cl <= sizeof reason) {
                memcpy(reason + n, chars[c], cl);
                n += cl;
            }
            memset(out, 0xAA, sizeof out);
            size_t len = ws_close_payload(out, 1001, reason, n);
            ck_assert_uint_le(len, WS_MAX_CONTROL);
            ck_assert_uint_gt(len, WS_MAX_CONTROL - 4);
            ck_assert_uint_eq(out[WS_MAX_CONTROL], 0xAA); /* no overrun */
            ck_assert(utf8_valid(out + 2, len - 2));
            ck_assert_mem_eq(out + 2, reason, len - 2);
            /* and the decoder accepts it, both roles */
            for (int role = 0; role < 2; role++) {
                cfg_t cf = {(ws_role_t)role, 0, 0};
                sb_t s = {0};
                sb_frame(&s, cf.role, WS_OP_CLOSE, true, out, len);
                tlog_t *l = run_whole(&cf, s.d, s.len);
                ck_assert_int_eq(l->result, 0);
                assert_item(l, 0, WS_EV_CLOSE, 0, 1001, reason, len - 2);
                tlog_free(l);
                sb_free(&s);
            }
        }
    }
    /* exactly 123 bytes is kept whole */
    char r123[123];
    memset(r123, 'r', sizeof r123);
    ck_assert_uint_eq(ws_close_payload(out, 1000, r123, 123), 125);
}
END_TEST

/* ---- random streams ---- */

/* A random valid conversation for role, with what the parser must report. */
static void random_stream(xorshift_t *x, ws_role_t role, sb_t *s, tlog_t *want)
{
    static uint8_t buf[3000];
    int msgs = (int)xorshift_range(x, 1, 12);
    for (int m = 0; m < msgs; m++) {
        bool text = xorshift_next(x) & 1;
        size_t len = xorshift_range(x, 0, xorshift_next(x) % 4 == 0 ? sizeof buf : 40);
        for (size_t i = 0; i < len; i++)
            buf[i] = text ? (uint8_t)xorshift_range(x, 0x20, 0x7E) : (uint8_t)xorshift_next(x);
        if (text && len >= 4 && (xorshift_next(x) & 1))
            memcpy(buf + xorshift_range(x, 0, len - 4), "\xF0\x9F\x8E\x89", 4);
        int frags = (int)xorshift_range(x, 1, 5);
        size_t off = 0;
        for (int f = 0; f < frags; f++) {
            size_t n = f == frags - 1 ? len - off : xorshift_range(x, 0, len - off);
            sb_frame(s, role, f == 0 ? (text ? WS_OP_TEXT : WS_OP_BINARY) : WS_OP_CONT,
                     f == frags - 1, buf + off, n);
            off += n;
            if (f == frags - 1)
                tlog_push(want, WS_EV_DATA, text ? WS_OP_TEXT : WS_OP_BINARY, false, 0, buf, len);
            if (xorshift_next(x) % 3 == 0) {
                uint8_t ctl[WS_MAX_CONTROL];
                size_t cl = xorshift_range(x, 0, WS_MAX_CONTROL);
                for (size_t i = 0; i < cl; i++)
                    ctl[i] = (uint8_t)xorshift_next(x);
                uint8_t op = xorshift_next(x) & 1 ? WS_OP_PING : WS_OP_PONG;
                sb_frame(s, role, op, true, ctl, cl);
                tlog_push(want, op == WS_OP_PING ? WS_EV_PING : WS_EV_PONG, 0, false, 0, ctl, cl);
            }
        }
    }
    if (xorshift_next(x) & 1) {
        uint8_t cp[WS_MAX_CONTROL];
        size_t n = ws_close_payload(cp, 1000, "done", 4);
        sb_frame(s, role, WS_OP_CLOSE, true, cp, n);
        tlog_push(want, WS_EV_CLOSE, 0, false, 1000, cp + 2, n - 2);
    }
}

START_TEST(random_streams_every_split)
{
    xorshift_t x = {20240601};
    for (int iter = 0; iter < 60; iter++) {
        ws_role_t role = (ws_role_t)(iter & 1);
        cfg_t c = {role, 0, 0};
        sb_t s = {0};
        tlog_t *want = tlog_new();
        random_stream(&x, role, &s, want);
        tlog_t *l = run_all(&c, s.d, s.len);
        assert_same(want, l, "expected transcript");
        tlog_free(l);
        tlog_free(want);
        sb_free(&s);
    }
}
END_TEST

START_TEST(corrupted_streams_agree_however_split)
{
    /* flip random bytes of valid streams: whatever the parser decides, it
     * decides the same however the input is cut */
    xorshift_t x = {4242};
    for (int iter = 0; iter < 300; iter++) {
        ws_role_t role = (ws_role_t)(iter & 1);
        cfg_t c = {role, xorshift_range(&x, 0, 1) ? 0 : xorshift_range(&x, 0, 200),
                   (unsigned)xorshift_range(&x, 0, 3)};
        sb_t s = {0};
        tlog_t *want = tlog_new();
        random_stream(&x, role, &s, want);
        tlog_free(want);
        int flips = (int)xorshift_range(&x, 1, 3);
        for (int f = 0; f < flips; f++)
            s.d[xorshift_range(&x, 0, s.len - 1)] ^= (uint8_t)(1u << xorshift_range(&x, 0, 7));
        tlog_t *whole = run_whole(&c, s.d, s.len);
        tlog_t *bytes = run_bytes(&c, s.d, s.len);
        assert_same(whole, bytes, "corrupted, byte by byte");
        for (int r = 0; r < 5; r++) {
            tlog_t *t = run_random(&c, s.d, s.len, &x);
            assert_same(whole, t, "corrupted, random split");
            tlog_free(t);
        }
        if (c.max)
            ck_assert_uint_le(whole->max_msg, c.max);
        tlog_free(whole);
        tlog_free(bytes);
        sb_free(&s);
    }
}
END_TEST

static Suite *frame_suite(void)
{
    Suite *s = suite_create("frame");
    TCase *rfc = tcase_create("rfc6455_5_7");
    tcase_set_timeout(rfc, 120); /* generous: ASan on a busy machine */
    tcase_add_test(rfc, rfc_single_unmasked_text);
    tcase_add_test(rfc, rfc_single_masked_text);
    tcase_add_test(rfc, rfc_masked_hello_in_place_one_byte_at_a_time);
    tcase_add_test(rfc, rfc_fragmented_unmasked_text);
    tcase_add_test(rfc, rfc_ping_and_masked_pong);
    tcase_add_test(rfc, rfc_256_and_64k_binary);
    suite_add_tcase(s, rfc);

    TCase *len = tcase_create("lengths");
    tcase_set_timeout(len, 120); /* generous: ASan on a busy machine */
    tcase_add_test(len, every_length_encoding_both_roles);
    tcase_add_test(len, header_bytes_for_each_length_class);
    tcase_add_test(len, non_minimal_lengths_rejected);
    tcase_add_test(len, length_msb_rejected);
    suite_add_tcase(s, len);

    TCase *mask = tcase_create("masking");
    tcase_set_timeout(mask, 120); /* generous: ASan on a busy machine */
    tcase_add_test(mask, mask_matches_bytewise_xor);
    tcase_add_test(mask, mask_key_continues_across_chunks);
    suite_add_tcase(s, mask);

    TCase *msg = tcase_create("messages");
    tcase_set_timeout(msg, 120); /* generous: ASan on a busy machine */
    tcase_add_test(msg, fragmented_with_controls_interleaved);
    tcase_add_test(msg, empty_frames_yield_data_events);
    tcase_add_test(msg, continuation_without_start);
    tcase_add_test(msg, new_message_inside_fragmented_one);
    tcase_add_test(msg, rsv_bits);
    tcase_add_test(msg, reserved_opcodes);
    tcase_add_test(msg, control_frame_rules);
    tcase_add_test(msg, mask_bit_must_match_role);
    tcase_add_test(msg, message_size_limit);
    tcase_add_test(msg, text_utf8_checked_across_fragments);
    tcase_add_test(msg, close_payload_rules);
    tcase_add_test(msg, one_event_per_call_in_a_packed_buffer);
    tcase_add_test(msg, decoder_control_frames_in_place_or_split);
    suite_add_tcase(s, msg);

    TCase *enc = tcase_create("encoder");
    tcase_set_timeout(enc, 120); /* generous: ASan on a busy machine */
    tcase_add_test(enc, encode_round_trip_both_roles);
    tcase_add_test(enc, encode_in_place_and_bad_arguments);
    tcase_add_test(enc, close_payload_encoding);
    suite_add_tcase(s, enc);

    TCase *rnd = tcase_create("random");
    tcase_set_timeout(rnd, 120); /* generous: ASan on a busy machine */
    tcase_add_test(rnd, random_streams_every_split);
    tcase_add_test(rnd, corrupted_streams_agree_however_split);
    suite_add_tcase(s, rnd);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(frame_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
