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
 *
 * wss:// puts OpenSSL on memory BIOs between the frames and the socket: the
 * flush encrypts the queued frames with one SSL_write and writes the
 * ciphertext the same way; reads go into rbio and SSL_read hands the
 * plaintext back in the thread's read buffer, where it takes the plain path.
 *
 * permessage-deflate (--deflate): the offer asks for no context takeover
 * from us, so one deflater per thread compresses every text message; the
 * broker's compressed messages are inflated into the thread's buffer, by a
 * per-thread inflater when the broker compresses each message on its own
 * (server_no_context_takeover) and by the connection's own one otherwise.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

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
    free(c->enc.p);
    free(c->flight.p);
    free(c->msg.p);
    memset(&c->out, 0, sizeof c->out);
    memset(&c->enc, 0, sizeof c->enc);
    memset(&c->flight, 0, sizeof c->flight);
    memset(&c->msg, 0, sizeof c->msg);
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->inf != NULL) {
        pmd_inflater_end(c->inf);
        free(c->inf);
        c->inf = NULL;
    }
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

static int send_frame_rsv(bconn_t *c, uint8_t opcode, bool rsv1, const void *p, size_t len)
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
    size_t h = ws_frame_header(o, opcode, true, rsv1, len, mask);
    memcpy(o + h, p, len);
    ws_mask(o + h, len, mask, 0);
    c->out.len += h + len;
    mark_dirty(c);
    return 0;
}

static int send_frame(bconn_t *c, uint8_t opcode, const void *p, size_t len)
{
    return send_frame_rsv(c, opcode, false, p, len);
}

/* The thread's deflater, made (again) for the smallest window any of its
 * connections was allowed: what it writes suits every one of them. */
static bool deflater_for(bconn_t *c)
{
    pmd_deflater_t *d = &c->th->def;
    if (d->ready && d->window_bits <= c->pmd_wbits)
        return true;
    pmd_deflater_end(d);
    return pmd_deflater_init(d, c->pmd_wbits, true) == PMD_OK;
}

int conn_send_text(bconn_t *c, const char *p, size_t len)
{
    bthread_t *th = c->th;
    if (!c->pmd || !th->b->o.deflate)
        return send_frame(c, WS_OP_TEXT, p, len);
    if (!deflater_for(c)) {
        conn_fail(c, ERR_IO, "out of memory for a deflater");
        return -1;
    }
    size_t cap = pmd_deflate_bound(&th->def, len);
    if (cap > th->zcap) {
        uint8_t *z = realloc(th->zbuf, cap);
        if (z == NULL) {
            conn_fail(c, ERR_IO, "out of memory compressing %zu bytes", len);
            return -1;
        }
        th->zbuf = z;
        th->zcap = cap;
    }
    ssize_t n = pmd_deflate(&th->def, (const uint8_t *)p, len, th->zbuf, th->zcap);
    if (n < 0) {
        conn_fail(c, ERR_PROTOCOL, "deflate failed");
        return -1;
    }
    th->compressed_tx++;
    return send_frame_rsv(c, WS_OP_TEXT, true, th->zbuf, (size_t)n);
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

/* Bytes waiting to go out: frames, or ciphertext OpenSSL has made. */
static bool has_output(const bconn_t *c)
{
    return c->out.len > 0 || c->enc.len > 0 || (c->ssl != NULL && BIO_ctrl_pending(c->wbio) > 0);
}

/* The TLS error on OpenSSL's queue, as text; the queue is cleared. */
static const char *ssl_error(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, cap, "no detail");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

/* wss: encrypt the queued frames and move the ciphertext into enc. */
static int tls_encrypt(bconn_t *c)
{
    char err[160];
    if (c->out.len > 0 && c->state != CS_TLS) {
        if (SSL_write(c->ssl, c->out.p, (int)c->out.len) <= 0) {
            conn_fail(c, ERR_IO, "TLS write: %s", ssl_error(err, sizeof err));
            return -1;
        }
        c->out.len = 0;
    }
    size_t pend = BIO_ctrl_pending(c->wbio);
    if (pend == 0)
        return 0;
    if (wbuf_reserve(&c->enc, pend, OUT_MAX + (1u << 20)) < 0) {
        conn_fail(c, ERR_IO, "more than %u MiB of TLS output queued", OUT_MAX >> 20);
        return -1;
    }
    int n = BIO_read(c->wbio, c->enc.p + c->enc.len, (int)pend);
    if (n > 0)
        c->enc.len += (size_t)n;
    return 0;
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
    if (has_output(c))
        mark_dirty(c);
}

static void flush(bconn_t *c)
{
    uv_stream_t *s = (uv_stream_t *)&c->tcp;
    if (c->state == CS_DEAD || c->writing || !has_output(c))
        return;
    if (c->ssl != NULL && tls_encrypt(c) < 0)
        return;
    wbuf_t *src = c->ssl != NULL ? &c->enc : &c->out;
    if (src->len == 0)
        return;
    uv_buf_t buf = uv_buf_init((char *)src->p, (unsigned)src->len);
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
    if ((size_t)r == src->len) {
        src->len = 0;
        return;
    }
    /* The socket is full: the remainder goes out with uv_write from the
     * flight buffer while new frames collect in out (and enc). */
    wbuf_t t = c->flight;
    c->flight = *src;
    *src = t;
    src->len = 0;
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

static void on_message(bconn_t *c, const char *p, size_t len, bool compressed)
{
    msg_server_t m;
    if (compressed) {
        bthread_t *th = c->th;
        th->ibuf.len = 0;
        int r = pmd_inflate(c->inf != NULL ? c->inf : &th->inf, (const uint8_t *)p, len, MSG_MAX,
                            &th->ibuf);
        if (r != PMD_OK) {
            conn_fail(c, ERR_PROTOCOL, "%s",
                      r == PMD_E_TOO_BIG ? "compressed message over 64 MiB"
                      : r == PMD_E_NOMEM ? "out of memory inflating a message"
                                         : "invalid compressed data from the broker");
            return;
        }
        th->compressed_rx++;
        p = (const char *)th->ibuf.buf;
        len = th->ibuf.len;
    }
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
            if (ev.rsv1 && !c->pmd) {
                conn_fail(c, ERR_PROTOCOL, "compressed frame without permessage-deflate");
                return;
            }
            if (ev.first && ev.fin) {
                on_message(c, (const char *)ev.data, ev.len, ev.rsv1);
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
                on_message(c, (const char *)c->msg.p, c->msg.len, ev.rsv1);
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

/* The broker's answer to the permessage-deflate offer (if any). */
static bool accept_extensions(bconn_t *c, const wsh_response_t *res)
{
    bthread_t *th = c->th;
    const wsh_str_t *v = wsh_header_get(res->headers, res->num_headers, "Sec-WebSocket-Extensions");
    pmd_params_t pp;
    if (v == NULL)
        return true;
    if (!th->b->o.deflate || pmd_parse_response(*v, &pp) != PMD_OK ||
        pp.server_max_window_bits_sent) {
        conn_fail(c, ERR_HANDSHAKE, "unexpected extension answer \"%.*s\"",
                  (int)(v->len < 80 ? v->len : 80), v->p);
        return false;
    }
    if (!pp.server_no_context_takeover) {
        c->inf = malloc(sizeof *c->inf);
        if (c->inf == NULL || pmd_inflater_init(c->inf, false) != PMD_OK) {
            free(c->inf);
            c->inf = NULL;
            conn_fail(c, ERR_HANDSHAKE, "out of memory for an inflater");
            return false;
        }
    }
    c->pmd = true;
    c->pmd_wbits = pp.client_max_window_bits;
    th->deflate_conns++;
    if (th->ext[0] == '\0')
        snprintf(th->ext, sizeof th->ext, "%.*s", (int)v->len, v->p);
    return true;
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
    if (!accept_extensions(c, &res))
        return;
    bthread_t *th = c->th;
    ws_parser_init(&c->wp, WS_ROLE_CLIENT, MSG_MAX,
                   WS_PARSER_SKIP_UTF8 | (c->pmd ? WS_PARSER_ALLOW_RSV1 : 0));
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

/* Plaintext from the broker: the upgrade response, then frames. */
static void plain_input(bconn_t *c, uint8_t *p, size_t n)
{
    if (c->state == CS_HANDSHAKE)
        handshake_input(c, p, n);
    else
        feed(c, p, n);
}

/* Queue the upgrade request (with the extension offer) and wait for 101. */
static void send_upgrade(bconn_t *c)
{
    bthread_t *th = c->th;
    const opts_t *o = &th->b->o;
    uint8_t nonce[16];
    char extra[128] = "", offer[96];
    for (int i = 0; i < 2; i++) {
        uint64_t r = rng_next(&th->rng);
        memcpy(nonce + 8 * i, &r, 8);
    }
    wsh_make_key(nonce, c->key);
    if (wbuf_reserve(&c->out, 1024, OUT_MAX) < 0 || (c->hs = malloc(WSH_MAX_HEAD)) == NULL) {
        conn_fail(c, ERR_CONNECT, "out of memory");
        return;
    }
    /* No context takeover from us: one deflater per thread serves all. */
    if (o->deflate && pmd_format_offer(true, offer, sizeof offer) > 0)
        snprintf(extra, sizeof extra, "Sec-WebSocket-Extensions: %s\r\n", offer);
    const bendpoint_t *e = &o->ep[c->node];
    int n = wsh_write_request((char *)c->out.p + c->out.len, c->out.cap - c->out.len, e->hostport,
                              e->target, c->key, extra[0] ? extra : NULL);
    if (n < 0) {
        conn_fail(c, ERR_HANDSHAKE, "request does not fit: %s", ws_strerror(n));
        return;
    }
    c->out.len += (size_t)n;
    c->hs_len = 0;
    c->hs_scanned = 0;
    c->state = CS_HANDSHAKE;
    mark_dirty(c);
}

/* wss: drive the handshake; once done, send the upgrade request. */
static void tls_handshake(bconn_t *c)
{
    char err[160];
    int r = SSL_do_handshake(c->ssl);
    mark_dirty(c); /* whatever the handshake wrote */
    if (r == 1) {
        bthread_t *th = c->th;
        if (th->tls_version[0] == '\0')
            snprintf(th->tls_version, sizeof th->tls_version, "%s", SSL_get_version(c->ssl));
        send_upgrade(c);
        return;
    }
    if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
        return;
    long v = SSL_get_verify_result(c->ssl);
    if (!c->th->b->o.insecure && v != X509_V_OK) {
        ERR_clear_error();
        conn_fail(c, ERR_HANDSHAKE, "TLS: certificate not accepted: %s",
                  X509_verify_cert_error_string(v));
    } else {
        conn_fail(c, ERR_HANDSHAKE, "TLS handshake: %s", ssl_error(err, sizeof err));
    }
}

/* wss: ciphertext in the thread's read buffer into OpenSSL, and the
 * plaintext it yields back into that buffer (already copied out). */
static void tls_input(bconn_t *c, size_t n)
{
    bthread_t *th = c->th;
    char err[160];
    if (BIO_write(c->rbio, th->rbuf, (int)n) != (int)n) {
        conn_fail(c, ERR_IO, "out of memory for TLS input");
        return;
    }
    if (c->state == CS_TLS) {
        tls_handshake(c);
        if (c->state != CS_HANDSHAKE)
            return;
    }
    while (c->state != CS_DEAD && !c->got_close) {
        int r = SSL_read(c->ssl, th->rbuf, (int)th->rbuf_cap);
        if (r > 0) {
            plain_input(c, th->rbuf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            conn_abort(c); /* close_notify: the broker is done */
            return;
        }
        conn_fail(c, ERR_IO, "TLS read: %s", ssl_error(err, sizeof err));
        return;
    }
    if (c->state != CS_DEAD && BIO_ctrl_pending(c->wbio) > 0)
        mark_dirty(c);
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
    if (c->ssl != NULL)
        tls_input(c, (size_t)nread);
    else
        plain_input(c, (uint8_t *)buf->base, (size_t)nread);
    scen_after_read(th);
}

/* wss: a session with SNI (names only) and the name or address check. */
static bool tls_start(bconn_t *c)
{
    const bench_t *b = c->th->b;
    const opts_t *o = &b->o;
    char err[160];
    c->ssl = SSL_new(c->th->tls_ctx);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        conn_fail(c, ERR_CONNECT, "out of memory for a TLS session");
        return false;
    }
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    bool ok = SSL_set_alpn_protos(c->ssl, (const unsigned char *)"\x08http/1.1", 9) == 0;
    const bendpoint_t *e = &o->ep[c->node];
    if (ok && !e->host_is_ip)
        ok = SSL_set_tlsext_host_name(c->ssl, e->host) == 1;
    if (ok && !o->insecure)
        ok = e->host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), e->host) == 1
                           : SSL_set1_host(c->ssl, e->host) == 1;
    if (!ok) {
        conn_fail(c, ERR_CONNECT, "TLS setup: %s", ssl_error(err, sizeof err));
        return false;
    }
    return true;
}

static void on_connect(uv_connect_t *req, int status)
{
    bconn_t *c = req->data;
    bthread_t *th = c->th;

    if (c->state != CS_CONNECTING)
        return;
    th->now = now_ns();
    if (status < 0) {
        conn_fail(c, ERR_CONNECT, "connect: %s", uv_strerror(status));
        return;
    }
    int r = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, on_read);
    if (r < 0) {
        conn_fail(c, ERR_IO, "read start: %s", uv_strerror(r));
        return;
    }
    if (!th->b->o.tls) {
        send_upgrade(c);
        return;
    }
    if (!tls_start(c))
        return;
    c->state = CS_TLS;
    tls_handshake(c);
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
    r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&th->b->o.ep[c->node].addr,
                       on_connect);
    if (r < 0)
        conn_fail(c, ERR_CONNECT, "connect: %s", uv_strerror(r));
}
