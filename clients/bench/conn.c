/*
 * conn.c - one WebSocket client connection of the bench, on its thread's
 * loop: TCP connect, opening handshake, the broker's hello, frames in and
 * out, close.
 *
 * Reads land in the thread's single read buffer (conn_alloc_cb); frames are
 * parsed in place and complete text messages are handed to the scenario as
 * spans into that buffer. Only a message split across two reads is copied,
 * into the connection's reassembly buffer, which is kept for reuse.
 *
 * Writes are corked: conn_send_*() append masked frames to the connection's
 * out buffer and put it on the thread's dirty list; the thread's prepare
 * handle calls conn_flush_all() right before the loop polls, so all the
 * frames a loop iteration produced leave in one uv_try_write (or, when the
 * socket is full, one uv_write of the remainder). Buffers grow to the
 * connection's high-water mark and are then reused: no allocation per
 * message in steady state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wsproto/msg.h>

#include "bench.h"

#define OUT_MAX       (64u << 20) /* bytes queued on one connection */
#define MSG_MAX       (64u << 20) /* one reassembled message */
#define ERR_PRINT_MAX 8           /* errors echoed to stderr per thread */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: masking keys and handshake nonces. Not cryptographic; the
 * bench only talks to its own broker. */
uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void conn_error(bthread_t *th, err_kind_t kind, const char *fmt, ...)
{
    char msg[sizeof th->err.first];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    th->err.n[kind]++;
    ctr_add(&th->st.errors, 1);
    if (th->err.first[0] == '\0')
        memcpy(th->err.first, msg, sizeof msg);
    if (ctr_get(&th->st.errors) <= ERR_PRINT_MAX)
        fprintf(stderr, "wsbroker-bench: thread %u: %s\n", th->idx, msg);
    else if (ctr_get(&th->st.errors) == ERR_PRINT_MAX + 1)
        fprintf(stderr, "wsbroker-bench: thread %u: more errors, counted only\n", th->idx);
}

static int wbuf_reserve(wbuf_t *w, size_t extra, size_t max)
{
    if (w->len + extra <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 1024;
    while (cap < w->len + extra)
        cap *= 2;
    if (cap > max)
        return -1;
    uint8_t *p = realloc(w->p, cap);
    if (p == NULL)
        return -1;
    w->p = p;
    w->cap = cap;
    return 0;
}

static bool in_setup(const bconn_t *c)
{
    return c->state >= CS_CONNECTING && c->state < CS_READY;
}

static void on_closed(uv_handle_t *h)
{
    bconn_t *c = h->data;
    bthread_t *th = c->th;
    free(c->hs);
    c->hs = NULL;
    free(c->out.p);
    free(c->flight.p);
    free(c->msg.p);
    memset(&c->out, 0, sizeof c->out);
    memset(&c->flight, 0, sizeof c->flight);
    memset(&c->msg, 0, sizeof c->msg);
    th->live--;
    ctr_set(&th->st.open, th->live);
    ctr_add(&th->st.closed, 1);
}

void conn_abort(bconn_t *c)
{
    if (c->state == CS_DEAD || c->state == CS_IDLE)
        return;
    if (in_setup(c))
        c->th->inflight--;
    c->state = CS_DEAD;
    scen_on_dead(c);
    if (c->inited) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
    thr_refill(c->th);
}

void conn_fail(bconn_t *c, err_kind_t kind, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    if (c->state == CS_DEAD)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    conn_error(c->th, kind, "%s connection to topic %s: %s",
               c->role == ROLE_PUB ? "publisher" : "subscriber", c->th->b->topics[c->topic].name,
               msg);
    if (in_setup(c))
        ctr_add(&c->th->st.failed, 1);
    conn_abort(c);
}

static void mark_dirty(bconn_t *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->th->dirty[c->th->ndirty++] = c;
    }
}

static int send_frame(bconn_t *c, uint8_t opcode, const void *p, size_t len)
{
    if (c->state == CS_DEAD)
        return -1;
    if (wbuf_reserve(&c->out, len + WS_MAX_HEADER, OUT_MAX) < 0) {
        conn_fail(c, ERR_IO, "more than %u MiB of output queued", OUT_MAX >> 20);
        return -1;
    }
    uint64_t r = rng_next(&c->th->rng);
    uint8_t mask[4];
    memcpy(mask, &r, sizeof mask);
    uint8_t *o = c->out.p + c->out.len;
    size_t h = ws_frame_header(o, opcode, true, false, len, mask);
    memcpy(o + h, p, len);
    ws_mask(o + h, len, mask, 0);
    c->out.len += h + len;
    mark_dirty(c);
    return 0;
}

int conn_send_text(bconn_t *c, const char *p, size_t len)
{
    return send_frame(c, WS_OP_TEXT, p, len);
}

void conn_close(bconn_t *c)
{
    uint8_t pl[WS_MAX_CONTROL];
    if (c->state == CS_DEAD || c->state == CS_IDLE || c->state == CS_CLOSING)
        return;
    if (c->state < CS_HELLO) {
        conn_abort(c);
        return;
    }
    size_t n = ws_close_payload(pl, WS_CLOSE_NORMAL, "bench done", 10);
    if (in_setup(c))
        c->th->inflight--;
    c->state = CS_CLOSING;
    send_frame(c, WS_OP_CLOSE, pl, n);
}

void conn_ready(bconn_t *c)
{
    bthread_t *th = c->th;
    th->inflight--;
    c->state = CS_READY;
    c->ever_ready = true;
    ctr_add(c->role == ROLE_SUB ? &th->st.subs_ready : &th->st.pubs_ready, 1);
    ctr_set(&th->st.last_ready_ns, th->now);
    thr_refill(th);
}

static void on_write(uv_write_t *req, int status)
{
    bconn_t *c = req->data;
    c->writing = false;
    c->flight.len = 0;
    if (c->state == CS_DEAD)
        return;
    if (status < 0) {
        if (c->state == CS_CLOSING)
            conn_abort(c);
        else
            conn_fail(c, ERR_IO, "write: %s", uv_strerror(status));
        return;
    }
    if (c->out.len > 0)
        mark_dirty(c);
}

static void flush(bconn_t *c)
{
    uv_stream_t *s = (uv_stream_t *)&c->tcp;
    if (c->state == CS_DEAD || c->writing || c->out.len == 0)
        return;
    uv_buf_t buf = uv_buf_init((char *)c->out.p, (unsigned)c->out.len);
    int r = uv_try_write(s, &buf, 1);
    if (r == UV_EAGAIN)
        r = 0;
    if (r < 0) {
        if (c->state == CS_CLOSING)
            conn_abort(c);
        else
            conn_fail(c, ERR_IO, "write: %s", uv_strerror(r));
        return;
    }
    if ((size_t)r == c->out.len) {
        c->out.len = 0;
        return;
    }
    /* The socket is full: the remainder goes out with uv_write from the
     * flight buffer while new frames collect in out. */
    wbuf_t t = c->flight;
    c->flight = c->out;
    c->out = t;
    c->out.len = 0;
    buf = uv_buf_init((char *)c->flight.p + r, (unsigned)(c->flight.len - (size_t)r));
    c->wreq.data = c;
    r = uv_write(&c->wreq, s, &buf, 1, on_write);
    if (r < 0) {
        c->flight.len = 0;
        conn_fail(c, ERR_IO, "write: %s", uv_strerror(r));
        return;
    }
    c->writing = true;
}

void conn_flush_all(bthread_t *th)
{
    for (size_t i = 0; i < th->ndirty; i++) {
        bconn_t *c = th->dirty[i];
        c->dirty = false;
        flush(c);
    }
    th->ndirty = 0;
}

void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    bconn_t *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->th->rbuf, (unsigned)c->th->rbuf_cap);
}

static void on_close_frame(bconn_t *c, uint16_t code, const uint8_t *reason, size_t len)
{
    bthread_t *th = c->th;
    if (c->state == CS_CLOSING) {
        /* Our close is answered. RFC 6455 7.1.1: the server closes TCP
         * first, so the TIME_WAIT lands on its side and not on our
         * ephemeral ports; the EOF arrives in on_read. */
        c->got_close = true;
        return;
    }
    if (atomic_load_explicit(&th->b->phase, memory_order_acquire) < PH_CLOSE) {
        err_close_code(&th->err, code);
        conn_fail(c, ERR_CLOSED, "broker sent Close %u \"%.*s\"", code, (int)len,
                  (const char *)reason);
        return;
    }
    /* A broker shutting down during our own close: answer and drop. */
    uint8_t pl[WS_MAX_CONTROL];
    size_t n = ws_close_payload(pl, code ? code : WS_CLOSE_NORMAL, NULL, 0);
    send_frame(c, WS_OP_CLOSE, pl, n);
    flush(c);
    conn_abort(c);
}

static void on_message(bconn_t *c, const char *p, size_t len)
{
    msg_server_t m;
    if (msg_parse_server(p, len, &m) == MSG_E_BAD_JSON) {
        conn_fail(c, ERR_PROTOCOL, "unparseable message \"%.*s\"", (int)(len < 80 ? len : 80), p);
        return;
    }
    /* MSG_E_UNKNOWN_OP leaves m.op 0: not hello, and ignored after it */
    if (m.op == MSG_S_ERROR)
        conn_error(c->th, ERR_BROKER, "broker error %s: %s (id %.*s)", m.code, m.message,
                   (int)m.id.len, m.id.len > 0 ? m.id.p : "");
    if (c->state == CS_HELLO) {
        if (m.op != MSG_S_HELLO) {
            conn_fail(c, ERR_HANDSHAKE, "first message is not hello: \"%.*s\"",
                      (int)(len < 80 ? len : 80), p);
            return;
        }
        scen_on_hello(c);
        return;
    }
    scen_on_message(c, &m);
}

/* Feed frame bytes (mutable: the parser works in place). */
static void feed(bconn_t *c, uint8_t *p, size_t n)
{
    while (n > 0 && c->state != CS_DEAD && !c->got_close) {
        ws_event_t ev;
        ssize_t r = ws_parser_feed(&c->wp, p, n, &ev);
        if (r < 0) {
            conn_fail(c, ERR_PROTOCOL, "bad frame from broker: %s", ws_strerror((int)r));
            return;
        }
        p += r;
        n -= (size_t)r;
        switch (ev.type) {
        case WS_EV_DATA:
            if (ev.opcode != WS_OP_TEXT) {
                conn_fail(c, ERR_PROTOCOL, "binary message from broker");
                return;
            }
            if (ev.first && ev.fin) {
                on_message(c, (const char *)ev.data, ev.len);
                break;
            }
            if (ev.first)
                c->msg.len = 0;
            if (wbuf_reserve(&c->msg, ev.len, MSG_MAX) < 0) {
                conn_fail(c, ERR_PROTOCOL, "message over %u MiB", MSG_MAX >> 20);
                return;
            }
            memcpy(c->msg.p + c->msg.len, ev.data, ev.len);
            c->msg.len += ev.len;
            if (ev.fin) {
                on_message(c, (const char *)c->msg.p, c->msg.len);
                c->msg.len = 0;
            }
            break;
        case WS_EV_PING:
            send_frame(c, WS_OP_PONG, ev.data, ev.len);
            break;
        case WS_EV_CLOSE:
            on_close_frame(c, ev.close_code, ev.data, ev.len);
            return;
        default:
            break;
        }
    }
}

static void handshake_input(bconn_t *c, uint8_t *p, size_t n)
{
    wsh_response_t res;
    size_t room = WSH_MAX_HEAD - c->hs_len;
    size_t take = n < room ? n : room;

    memcpy(c->hs + c->hs_len, p, take);
    c->hs_len += take;
    int r = wsh_parse_response(c->hs, c->hs_len, &c->hs_scanned, &res);
    if (r == WS_AGAIN) {
        if (c->hs_len == WSH_MAX_HEAD)
            conn_fail(c, ERR_HANDSHAKE, "response head over %d bytes", WSH_MAX_HEAD);
        return;
    }
    if (r < 0) {
        conn_fail(c, ERR_HANDSHAKE, "malformed HTTP response: %s", ws_strerror(r));
        return;
    }
    if (wsh_check_101(&res, c->key) != WS_OK) {
        conn_fail(c, ERR_HANDSHAKE, "upgrade refused: HTTP %d %.*s", res.status,
                  (int)res.reason.len, res.reason.p);
        return;
    }
    bthread_t *th = c->th;
    ws_parser_init(&c->wp, WS_ROLE_CLIENT, MSG_MAX, WS_PARSER_SKIP_UTF8);
    c->state = CS_HELLO;
    ctr_add(&th->st.handshakes, 1);
    ctr_set(&th->st.last_handshake_ns, th->now);
    /* Frames that arrived with the head (the hello, usually). */
    char *hs = c->hs;
    c->hs = NULL;
    feed(c, (uint8_t *)hs + r, c->hs_len - (size_t)r);
    free(hs);
    if (take < n)
        feed(c, p + take, n - take);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    bconn_t *c = s->data;
    bthread_t *th = c->th;
    if (nread == 0 || c->state == CS_DEAD)
        return;
    th->now = now_ns();
    if (nread < 0) {
        if (c->state == CS_CLOSING ||
            atomic_load_explicit(&th->b->phase, memory_order_acquire) >= PH_CLOSE)
            conn_abort(c);
        else if (nread == UV_EOF) {
            err_close_code(&th->err, WS_CLOSE_ABNORMAL);
            conn_fail(c, ERR_CLOSED, "broker dropped the connection without a Close frame");
        } else
            conn_fail(c, ERR_IO, "read: %s", uv_strerror((int)nread));
        return;
    }
    if (c->state == CS_HANDSHAKE)
        handshake_input(c, (uint8_t *)buf->base, (size_t)nread);
    else
        feed(c, (uint8_t *)buf->base, (size_t)nread);
    scen_after_read(th);
}

static void on_connect(uv_connect_t *req, int status)
{
    bconn_t *c = req->data;
    bthread_t *th = c->th;
    const opts_t *o = &th->b->o;
    uint8_t nonce[16];

    if (c->state != CS_CONNECTING)
        return;
    th->now = now_ns();
    if (status < 0) {
        conn_fail(c, ERR_CONNECT, "connect: %s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t r = rng_next(&th->rng);
        memcpy(nonce + 8 * i, &r, 8);
    }
    wsh_make_key(nonce, c->key);
    if (wbuf_reserve(&c->out, 1024, OUT_MAX) < 0 || (c->hs = malloc(WSH_MAX_HEAD)) == NULL) {
        conn_fail(c, ERR_CONNECT, "out of memory");
        return;
    }
    int n = wsh_write_request((char *)c->out.p + c->out.len, c->out.cap - c->out.len, o->hostport,
                              o->target, c->key, NULL);
    if (n < 0) {
        conn_fail(c, ERR_HANDSHAKE, "request does not fit: %s", ws_strerror(n));
        return;
    }
    c->out.len += (size_t)n;
    c->hs_len = 0;
    c->hs_scanned = 0;
    c->state = CS_HANDSHAKE;
    mark_dirty(c);
    int r = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, on_read);
    if (r < 0)
        conn_fail(c, ERR_IO, "read start: %s", uv_strerror(r));
}

void conn_start(bconn_t *c)
{
    bthread_t *th = c->th;
    int r = uv_tcp_init(&th->loop, &c->tcp);
    c->state = CS_CONNECTING;
    th->inflight++;
    ctr_add(&th->st.started, 1);
    if (r < 0) {
        conn_fail(c, ERR_CONNECT, "tcp init: %s", uv_strerror(r));
        return;
    }
    c->inited = true;
    c->tcp.data = c;
    c->creq.data = c;
    th->live++;
    ctr_set(&th->st.open, th->live);
    uv_tcp_nodelay(&c->tcp, 1);
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&th->b->o.addr, on_connect);
    if (r < 0)
        conn_fail(c, ERR_CONNECT, "connect: %s", uv_strerror(r));
}
