/*
 * conn.c - one TCP connection of a client: connect, the HTTP upgrade, then
 * WebSocket frames in both directions, then the close handshake.
 *
 * The connection knows nothing of pub/sub: it hands every complete text
 * message to the client (wsc__on_text) and reports its end exactly once
 * (wsc__on_lost). Control frames are handled here: Pings are answered with
 * a Pong carrying the same payload, a Close from the broker is echoed.
 *
 * Reads land in a per-connection 64 KiB buffer; a text message that fits in
 * one read is handed over in place, only fragmented or split messages are
 * copied into the reassembly buffer (bounded by max_message through the
 * frame parser). Every outgoing frame is masked with a fresh random key.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

typedef struct wreq {
    uv_write_t req;
    wsc_conn_t *k;
    size_t len;
    uint8_t data[];
} wreq_t;

static void on_closed(uv_handle_t *h)
{
    wsc_conn_t *k = h->data;
    wsc_client_t *c = k->c;
    free(k->rbuf);
    free(k->head);
    free(k->msg);
    free(k);
    wsc__on_conn_freed(c);
}

void wsc__conn_abort(wsc_conn_t *k)
{
    if (k->phase == WSC_PH_DEAD)
        return;
    k->phase = WSC_PH_DEAD;
    uv_close((uv_handle_t *)&k->tcp, on_closed);
}

/* End the connection and tell the client why (once). */
static void lost(wsc_conn_t *k, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void lost(wsc_conn_t *k, int err, const char *fmt, ...)
{
    char detail[WSC_ERRLEN];
    va_list ap;
    if (k->phase == WSC_PH_DEAD)
        return;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    wsc__conn_abort(k);
    wsc__on_lost(k->c, k, err, detail);
}

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    wsc_conn_t *k = w->k;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        lost(k, WSC_E_DISCONNECTED, "write to %s: %s", k->peer, uv_strerror(status));
}

static int write_bytes(wsc_conn_t *k, wreq_t *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    w->k = k;
    int r = uv_write(&w->req, (uv_stream_t *)&k->tcp, &b, 1, on_written);
    if (r < 0) {
        free(w);
        lost(k, WSC_E_DISCONNECTED, "write to %s: %s", k->peer, uv_strerror(r));
        return WSC_E_CLOSED;
    }
    return WSC_OK;
}

/* A masked frame in a new write request, or NULL. */
static wreq_t *make_frame(wsc_conn_t *k, uint8_t opcode, const void *payload, size_t len)
{
    uint8_t mask[4];
    size_t hlen = ws_header_size(len, true);
    wreq_t *w = malloc(sizeof(*w) + hlen + len);
    if (w == NULL)
        return NULL;
    wsc__random(k->c, mask, sizeof(mask));
    w->len = ws_frame_header(w->data, opcode, true, false, len, mask);
    if (len > 0)
        memcpy(w->data + w->len, payload, len);
    ws_mask(w->data + w->len, len, mask, 0);
    w->len += len;
    return w;
}

int wsc__conn_send(wsc_conn_t *k, uint8_t opcode, const void *payload, size_t len)
{
    if (k->phase != WSC_PH_WS)
        return WSC_E_CLOSED;
    wreq_t *w = make_frame(k, opcode, payload, len);
    if (w == NULL)
        return WSC_E_NOMEM;
    return write_bytes(k, w);
}

size_t wsc__conn_queued(const wsc_conn_t *k)
{
    return uv_stream_get_write_queue_size((const uv_stream_t *)&k->tcp);
}

/* Send a Close frame now if the socket takes it, without queueing: used
 * right before the connection is dropped. */
static void close_now(wsc_conn_t *k, uint16_t code)
{
    uint8_t payload[WS_MAX_CONTROL];
    size_t n = ws_close_payload(payload, code, NULL, 0);
    wreq_t *w = make_frame(k, WS_OP_CLOSE, payload, n);
    if (w == NULL)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&k->tcp) == 0) {
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
        (void)uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
    }
    free(w);
}

void wsc__conn_close(wsc_conn_t *k, uint16_t code)
{
    if (k->phase != WSC_PH_WS) {
        wsc__conn_abort(k);
        return;
    }
    uint8_t payload[WS_MAX_CONTROL];
    size_t n = ws_close_payload(payload, code, NULL, 0);
    if (wsc__conn_send(k, WS_OP_CLOSE, payload, n) != WSC_OK) {
        wsc__conn_abort(k);
        return;
    }
    k->phase = WSC_PH_CLOSING;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    wsc_conn_t *k = h->data;
    (void)suggested;
    *buf = uv_buf_init(k->rbuf, WSC_READ_BUF);
}

static void deliver(wsc_conn_t *k, const uint8_t *p, size_t n)
{
    if (k->phase == WSC_PH_WS)
        wsc__on_text(k->c, k, (const char *)p, n);
}

static void on_data(wsc_conn_t *k, const ws_event_t *ev)
{
    if (ev->opcode != WS_OP_TEXT) {
        close_now(k, WS_CLOSE_UNSUPPORTED);
        lost(k, WSC_E_PROTOCOL, "the broker sent a binary message");
        return;
    }
    if (ev->first && ev->fin && k->msg_len == 0) {
        deliver(k, ev->data, ev->len);
        return;
    }
    if (k->msg_len + ev->len > k->msg_cap) {
        size_t cap = k->msg_cap ? k->msg_cap : 4096;
        while (cap < k->msg_len + ev->len)
            cap *= 2;
        uint8_t *m = realloc(k->msg, cap);
        if (m == NULL) {
            close_now(k, WS_CLOSE_INTERNAL);
            lost(k, WSC_E_NOMEM, "out of memory for a %zu-byte message", k->msg_len + ev->len);
            return;
        }
        k->msg = m;
        k->msg_cap = cap;
    }
    if (ev->len > 0)
        memcpy(k->msg + k->msg_len, ev->data, ev->len);
    k->msg_len += ev->len;
    if (ev->fin) {
        size_t n = k->msg_len;
        k->msg_len = 0;
        deliver(k, k->msg, n);
    }
}

static void on_close_frame(wsc_conn_t *k, const ws_event_t *ev)
{
    if (k->phase == WSC_PH_CLOSING) {
        lost(k, WSC_E_CLOSED, "closed");
        return;
    }
    close_now(k, ev->close_code != 0 ? ev->close_code : WS_CLOSE_NORMAL);
    if (ev->close_code == 0)
        lost(k, WSC_E_DISCONNECTED, "the broker closed the connection");
    else
        lost(k, WSC_E_DISCONNECTED, "the broker closed the connection (%u%s%.*s)",
             (unsigned)ev->close_code, ev->len > 0 ? " " : "", (int)ev->len,
             (const char *)ev->data);
}

/* Feed frame bytes; stops as soon as the connection dies (a callback may
 * have closed the client). */
static void feed(wsc_conn_t *k, uint8_t *p, size_t n)
{
    while (n > 0 && k->phase != WSC_PH_DEAD) {
        ws_event_t ev;
        ssize_t used = ws_parser_feed(&k->wp, p, n, &ev);
        if (used < 0) {
            close_now(k, ws_close_code((int)used));
            lost(k, WSC_E_PROTOCOL, "invalid WebSocket data from the broker: %s",
                 ws_strerror((int)used));
            return;
        }
        p += used;
        n -= (size_t)used;
        switch (ev.type) {
        case WS_EV_DATA:
            on_data(k, &ev);
            break;
        case WS_EV_PING:
            if (k->phase == WSC_PH_WS)
                wsc__conn_send(k, WS_OP_PONG, ev.data, ev.len);
            break;
        case WS_EV_CLOSE:
            on_close_frame(k, &ev);
            break;
        case WS_EV_PONG:
        case WS_EV_NONE:
            break;
        }
    }
}

/* One line of the refusal's body, for the error message. */
static void body_line(const char *p, size_t n, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\r' || p[i] == '\n'))
        i++;
    while (i < n && p[i] != '\r' && p[i] != '\n' && o + 1 < cap) {
        unsigned char ch = (unsigned char)p[i++];
        out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    out[o] = '\0';
}

/* Bytes of the upgrade response. Returns true once the connection has
 * switched to WebSocket frames (the remaining input is fed by the caller). */
static bool upgrade_input(wsc_conn_t *k, const char *p, size_t n, size_t *used)
{
    size_t room = WSH_MAX_HEAD - k->head_len;
    size_t take = n < room ? n : room;
    wsh_response_t res;
    memcpy(k->head + k->head_len, p, take);
    k->head_len += take;
    *used = take;
    int r = wsh_parse_response(k->head, k->head_len, &k->head_scanned, &res);
    if (r == WS_AGAIN) {
        if (k->head_len == WSH_MAX_HEAD)
            lost(k, WSC_E_HANDSHAKE, "upgrade response from %s: head over %d bytes", k->peer,
                 WSH_MAX_HEAD);
        return false;
    }
    if (r < 0) {
        lost(k, WSC_E_HANDSHAKE, "%s did not answer with valid HTTP", k->peer);
        return false;
    }
    if (res.status != 101) {
        char body[128];
        body_line(k->head + r, k->head_len - (size_t)r, body, sizeof(body));
        lost(k, WSC_E_HANDSHAKE, "upgrade refused by %s: HTTP %d %.*s%s%s", k->peer, res.status,
             (int)res.reason.len, res.reason.p, body[0] ? ": " : "", body);
        return false;
    }
    if (wsh_check_101(&res, k->key) != WS_OK) {
        lost(k, WSC_E_HANDSHAKE, "%s answered 101 without a valid WebSocket accept", k->peer);
        return false;
    }
    k->phase = WSC_PH_WS;
    ws_parser_init(&k->wp, WS_ROLE_CLIENT, k->c->o.max_message, 0);
    /* Frames that came with the head: move them to the read buffer. */
    size_t rest = k->head_len - (size_t)r;
    char *head = k->head;
    k->head = NULL;
    if (rest > 0)
        feed(k, (uint8_t *)head + r, rest);
    free(head);
    return k->phase != WSC_PH_DEAD;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wsc_conn_t *k = s->data;
    if (k->phase == WSC_PH_DEAD || nread == 0)
        return;
    if (nread < 0) {
        if (k->phase == WSC_PH_CLOSING)
            lost(k, WSC_E_CLOSED, "closed");
        else if (nread == UV_EOF && k->phase == WSC_PH_UPGRADE)
            lost(k, WSC_E_HANDSHAKE, "%s closed the connection during the upgrade", k->peer);
        else if (nread == UV_EOF)
            lost(k, WSC_E_DISCONNECTED, "%s closed the connection", k->peer);
        else
            lost(k, WSC_E_DISCONNECTED, "read from %s: %s", k->peer, uv_strerror((int)nread));
        return;
    }
    wsc__on_rx(k->c, k);
    uint8_t *p = (uint8_t *)buf->base;
    size_t n = (size_t)nread;
    if (k->phase == WSC_PH_UPGRADE) {
        size_t used;
        if (!upgrade_input(k, (const char *)p, n, &used))
            return;
        p += used;
        n -= used;
    }
    feed(k, p, n);
}

/* ---- connecting ---- */

static void on_connect(uv_connect_t *req, int status)
{
    wsc_conn_t *k = req->data;
    char extra[WSC_ERRLEN + 64] = "";
    char request[WSH_MAX_HEAD];
    uint8_t nonce[16];
    if (k->phase == WSC_PH_DEAD)
        return;
    if (status < 0) {
        lost(k, WSC_E_CONNECT, "connect to %s: %s", k->peer, uv_strerror(status));
        return;
    }
    wsc__random(k->c, nonce, sizeof(nonce));
    wsh_make_key(nonce, k->key);
    if (k->c->token != NULL)
        snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\n", k->c->token);
    int n = wsh_write_request(request, sizeof(request), k->c->url.authority, k->c->url.target,
                              k->key, extra[0] ? extra : NULL);
    k->head = malloc(WSH_MAX_HEAD);
    wreq_t *w = n > 0 ? malloc(sizeof(*w) + (size_t)n) : NULL;
    if (w == NULL || k->head == NULL) {
        free(w);
        lost(k, WSC_E_NOMEM, "cannot build the upgrade request");
        return;
    }
    memcpy(w->data, request, (size_t)n);
    w->len = (size_t)n;
    k->phase = WSC_PH_UPGRADE;
    int r = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (r < 0) {
        free(w);
        lost(k, WSC_E_CONNECT, "read from %s: %s", k->peer, uv_strerror(r));
        return;
    }
    write_bytes(k, w);
}

wsc_conn_t *wsc__conn_start(wsc_client_t *c, const struct sockaddr *addr)
{
    wsc_conn_t *k = calloc(1, sizeof(*k));
    char ip[64] = "?";
    int port = 0;
    if (k == NULL || (k->rbuf = malloc(WSC_READ_BUF)) == NULL) {
        free(k);
        snprintf(c->errbuf, sizeof(c->errbuf), "out of memory");
        return NULL;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        uv_ip6_name(a, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        snprintf(k->peer, sizeof(k->peer), "[%s]:%d", ip, port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        uv_ip4_name(a, ip, sizeof(ip));
        port = ntohs(a->sin_port);
        snprintf(k->peer, sizeof(k->peer), "%s:%d", ip, port);
    }
    int r = uv_tcp_init(c->loop, &k->tcp);
    if (r < 0) {
        free(k->rbuf);
        free(k);
        snprintf(c->errbuf, sizeof(c->errbuf), "socket: %s", uv_strerror(r));
        return NULL;
    }
    k->c = c;
    k->tcp.data = k;
    k->creq.data = k;
    k->phase = WSC_PH_TCP;
    c->refs++;
    uv_tcp_nodelay(&k->tcp, 1);
    r = uv_tcp_connect(&k->creq, &k->tcp, addr, on_connect);
    if (r < 0) {
        snprintf(c->errbuf, sizeof(c->errbuf), "connect to %s: %s", k->peer, uv_strerror(r));
        wsc__conn_abort(k);
        return NULL;
    }
    return k;
}
