/*
 * fuzz_frame.c - libFuzzer target for the WebSocket frame decoder.
 *
 * Input byte 0 picks the parser flags and the message limit; the rest is a
 * byte stream fed to a SERVER parser and to a CLIENT parser, each three
 * ways: whole, in pieces whose sizes come from a hash of the input, and one
 * byte at a time. Every piece is a fresh exact-size heap copy, so ASan sees
 * any read past the bytes handed over. Invariants checked:
 *   - a call returns an error, or consumes 1..len bytes (0 only for len 0);
 *   - a data chunk lies inside the bytes that call consumed; first/fin,
 *     opcode and rsv1 are consistent across a message, and
 *     ws_parser_in_message() agrees with fin;
 *   - a reassembled message never exceeds max_message; RSV1 appears only
 *     when allowed; a complete text message is valid UTF-8 unless the
 *     parser was told to skip that;
 *   - control payloads are at most 125 bytes; a Close has code 0 and no
 *     reason, or a valid code and a valid UTF-8 reason;
 *   - errors are sticky;
 *   - whole, piecewise and byte-by-byte feeding give the same transcript
 *     (every control event, every complete message, the error if any);
 *   - re-encoding the transcript with the encoder and decoding it gives the
 *     same transcript again;
 *   - ws_decoder_t (no control buffer: control frames whole in a piece
 *     are views of it, split ones wait for a buffer given on demand) gives
 *     the parser's transcript, piecewise and byte by byte; a control event
 *     it hands out lies inside the piece or the buffer it was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_dict.h"
#include "wsproto/utf8.h"
#include "wsproto/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct bytes {
    uint8_t *d;
    size_t len, cap;
} bytes_t;

static void put(bytes_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 256;
        b->d = realloc(b->d, b->cap);
        CHECK(b->d != NULL);
    }
    if (n > 0)
        memcpy(b->d + b->len, d, n);
    b->len += n;
}

/* What a run reported, serialised: one record per control event and per
 * complete message, then the partial message (if no error) and the result. */
typedef struct run {
    ws_role_t role;
    uint64_t max;
    unsigned flags;
    bytes_t log;
    bytes_t msg; /* message being reassembled */
    bool in_msg;
    uint8_t op;
    bool rsv1;
    int result;
    bool lean; /* ws_decoder_t instead of ws_parser_t */
} run_t;

static void record(bytes_t *log, uint8_t type, uint8_t op, bool rsv1, uint16_t code,
                   const uint8_t *d, size_t n)
{
    uint8_t h[13] = {type, op, rsv1, (uint8_t)(code >> 8), (uint8_t)code};
    uint64_t len = n;
    memcpy(h + 5, &len, sizeof len);
    put(log, h, sizeof h);
    put(log, d, n);
}

static void on_event(run_t *r, bool in_message, const ws_event_t *ev)
{
    switch (ev->type) {
    case WS_EV_NONE:
        break;
    case WS_EV_DATA:
        CHECK(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        CHECK(ev->first == !r->in_msg);
        if (ev->first) {
            r->in_msg = true;
            r->op = ev->opcode;
            r->rsv1 = ev->rsv1;
            r->msg.len = 0;
        }
        CHECK(ev->opcode == r->op && ev->rsv1 == r->rsv1);
        CHECK(!ev->rsv1 || (r->flags & WS_PARSER_ALLOW_RSV1));
        put(&r->msg, ev->data, ev->len);
        CHECK(r->max == 0 || r->msg.len <= r->max);
        CHECK(in_message == !ev->fin);
        if (ev->fin) {
            if (r->op == WS_OP_TEXT && !r->rsv1 && !(r->flags & WS_PARSER_SKIP_UTF8))
                CHECK(utf8_valid(r->msg.d, r->msg.len));
            record(&r->log, WS_EV_DATA, r->op, r->rsv1, 0, r->msg.d, r->msg.len);
            r->in_msg = false;
        }
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
    case WS_EV_CLOSE:
        CHECK(ev->len <= WS_MAX_CONTROL);
        CHECK(ev->len == 0 || ev->data != NULL);
        if (ev->type == WS_EV_CLOSE) {
            if (ev->close_code == 0)
                CHECK(ev->len == 0);
            else
                CHECK(ws_close_code_valid(ev->close_code) && ev->len <= WS_MAX_CONTROL - 2);
            CHECK(utf8_valid(ev->data, ev->len));
        } else {
            CHECK(ev->close_code == 0);
        }
        record(&r->log, (uint8_t)ev->type, 0, false, ev->close_code, ev->data, ev->len);
        break;
    default:
        CHECK(0);
    }
}

/* Feed data[0..size) in pieces of the sizes next_piece() chooses. */
static void run(run_t *r, const uint8_t *data, size_t size, size_t (*next_piece)(uint64_t *),
                uint64_t seed)
{
    ws_parser_t p;
    ws_decoder_t *d = &p.d;
    ws_parser_init(&p, r->role, r->max, r->flags);
    if (r->lean) {
        ws_decoder_init(d, r->role, r->max, r->flags);
        CHECK(d->ctl == NULL);
    }
    r->log.len = r->msg.len = 0;
    r->in_msg = false;
    r->result = 0;

    size_t start = 0;
    while (start < size && r->result == 0) {
        size_t n = next_piece(&seed);
        if (n > size - start)
            n = size - start;
        uint8_t *buf = malloc(n);
        CHECK(buf != NULL);
        memcpy(buf, data + start, n);
        size_t off = 0;
        while (off < n) {
            ws_event_t ev;
            ssize_t k = r->lean ? ws_decoder_feed(d, buf + off, n - off, &ev)
                                : ws_parser_feed(&p, buf + off, n - off, &ev);
            if (k < 0) {
                CHECK(k == WS_E_PROTO || k == WS_E_UTF8 || k == WS_E_TOO_BIG);
                CHECK(ev.type == WS_EV_NONE);
                r->result = (int)k;
                break;
            }
            CHECK((size_t)k <= n - off);
            if (r->lean && ws_decoder_needs_ctl(d) && off + (size_t)k < n) {
                /* a control frame split in this piece: stopped before its
                 * payload (as the broker, only then a buffer; one whose
                 * payload starts in the next piece may arrive whole) */
                CHECK(ev.type == WS_EV_NONE && d->ctl == NULL);
                d->ctl = malloc(WS_MAX_CONTROL);
                CHECK(d->ctl != NULL);
            } else {
                CHECK(k >= 1);
            }
            if (ev.type == WS_EV_DATA)
                CHECK(ev.data >= buf + off && ev.data + ev.len <= buf + off + (size_t)k);
            if (r->lean && ev.type != WS_EV_NONE && ev.type != WS_EV_DATA && ev.len > 0) {
                bool in_piece = ev.data >= buf + off && ev.data + ev.len <= buf + off + (size_t)k;
                bool in_ctl = d->ctl != NULL && ev.data >= d->ctl &&
                              ev.data + ev.len <= d->ctl + WS_MAX_CONTROL;
                CHECK(in_piece || in_ctl);
            }
            on_event(r, ws_decoder_in_message(d), &ev);
            if (r->lean && ev.type != WS_EV_NONE && ev.type != WS_EV_DATA) {
                free(d->ctl); /* handled: the buffer may go */
                d->ctl = NULL;
            }
            off += (size_t)k;
        }
        free(buf);
        start += n;
    }

    ws_event_t ev;
    uint8_t more = 0x81;
    if (r->result != 0) {
        CHECK((r->lean ? ws_decoder_feed(d, &more, 1, &ev) : ws_parser_feed(&p, &more, 1, &ev)) ==
              r->result);
    } else {
        CHECK((r->lean ? ws_decoder_feed(d, NULL, 0, &ev) : ws_parser_feed(&p, NULL, 0, &ev)) == 0);
        uint8_t tail[2] = {r->in_msg, 0xFF};
        put(&r->log, tail, sizeof tail);
        put(&r->log, r->msg.d, r->in_msg ? r->msg.len : 0);
    }
    if (r->lean)
        free(d->ctl);
    uint8_t res = (uint8_t)-r->result;
    put(&r->log, &res, 1);
}

static size_t piece_all(uint64_t *s)
{
    (void)s;
    return SIZE_MAX;
}

static size_t piece_byte(uint64_t *s)
{
    (void)s;
    return 1;
}

static size_t piece_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    /* mostly small pieces, now and then a long one */
    return (*s & 7) == 0 ? 1 + (size_t)(*s >> 8) % 512 : 1 + (size_t)(*s >> 8) % 16;
}

static bool same_log(const run_t *a, const run_t *b)
{
    return a->log.len == b->log.len && memcmp(a->log.d, b->log.d, a->log.len) == 0;
}

/* Walk a transcript and encode each record as one frame for r->role. */
static void reencode(const run_t *r, bytes_t *out)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    const uint8_t *mask = r->role == WS_ROLE_SERVER ? key : NULL;
    size_t at = 0;

    out->len = 0;
    while (r->log.len - at >= 13) {
        const uint8_t *h = r->log.d + at;
        if (h[1] == 0xFF) /* the partial-message record: the end */
            break;
        uint64_t len;
        memcpy(&len, h + 5, sizeof len);
        const uint8_t *payload = h + 13;
        uint8_t hdr[WS_MAX_HEADER];
        uint8_t op = h[0] == WS_EV_DATA   ? h[1]
                     : h[0] == WS_EV_PING ? WS_OP_PING
                     : h[0] == WS_EV_PONG ? WS_OP_PONG
                                          : WS_OP_CLOSE;
        bytes_t pl = {0};
        if (h[0] == WS_EV_CLOSE && (h[3] | h[4])) {
            uint8_t cp[WS_MAX_CONTROL];
            uint16_t code = (uint16_t)(h[3] << 8 | h[4]);
            size_t n = ws_close_payload(cp, code, (const char *)payload, (size_t)len);
            CHECK(n == 2 + len); /* a received reason always fits */
            put(&pl, cp, n);
        } else {
            put(&pl, payload, (size_t)len);
        }
        size_t hl = ws_frame_header(hdr, op, true, h[2], pl.len, mask);
        CHECK(hl == ws_header_size(pl.len, mask != NULL));
        put(out, hdr, hl);
        size_t p0 = out->len;
        put(out, pl.d, pl.len);
        if (mask)
            ws_mask(out->d + p0, pl.len, mask, 0);
        free(pl.d);
        at += 13 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t limits[8] = {0, 1, 10, 125, 126, 1000, 65535, 65536};
    static run_t whole, piecewise, bytewise, again;
    static bytes_t enc;

    if (size < 1)
        return 0;
    unsigned flags = data[0] & 3;
    uint64_t max = limits[(data[0] >> 2) & 7];
    data++;
    size--;

    uint64_t seed = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 0x100000001B3ull;
    seed |= 1;

    for (int role = 0; role < 2; role++) {
        run_t *rs[4] = {&whole, &piecewise, &bytewise, &again};
        for (int i = 0; i < 4; i++) {
            rs[i]->role = (ws_role_t)role;
            rs[i]->max = max;
            rs[i]->flags = flags;
        }
        run(&whole, data, size, piece_all, 0);
        for (int lean = 0; lean < 2; lean++) {
            piecewise.lean = bytewise.lean = lean;
            run(&piecewise, data, size, piece_random, seed);
            run(&bytewise, data, size, piece_byte, 0);
            if (whole.result == 0) {
                CHECK(same_log(&whole, &piecewise));
                CHECK(same_log(&whole, &bytewise));
            } else {
                /* on error the partial message is not compared: a chunk
                 * with a bad byte is never delivered, so how much came out
                 * first depends on the splits; everything else must agree */
                CHECK(whole.result == piecewise.result && whole.result == bytewise.result);
                CHECK(same_log(&whole, &piecewise) && same_log(&whole, &bytewise));
            }
        }

        reencode(&whole, &enc);
        run(&again, enc.d, enc.len, piece_all, 0);
        CHECK(again.result == 0);
        size_t n = 0; /* records before the partial-message trailer */
        while (whole.log.len - n >= 13 && whole.log.d[n + 1] != 0xFF) {
            uint64_t len;
            memcpy(&len, whole.log.d + n + 5, sizeof len);
            n += 13 + (size_t)len;
        }
        CHECK(again.log.len >= n && memcmp(again.log.d, whole.log.d, n) == 0);
    }
    return 0;
}
