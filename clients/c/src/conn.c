/*
 * conn.c - one TCP connection of a client: connect, TLS for wss://, the
 * HTTP upgrade with the permessage-deflate offer, then WebSocket frames in
 * both directions, then the close handshake.
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
 *
 * wss:// puts OpenSSL between the socket and the frames, on memory BIOs:
 * ciphertext read from the socket is fed to rbio and SSL_read returns the
 * plaintext into the same read buffer, which then takes the plain path;
 * each frame goes through SSL_write and the ciphertext OpenSSL leaves in
 * wbio is written to the socket at once. The handshake is driven the same
 * way, before the upgrade request is sent.
 *
 * A compressed message (RSV1, permessage-deflate negotiated) is
 * reassembled like any other, then inflated into its own buffer with a
 * bound checked while inflating (wsc__inflate_limit), and its UTF-8
 * checked afterwards (the frame parser cannot check compressed bytes).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <wsproto/utf8.h>

#include "client_int.h"

#define IBUF_KEEP (1u << 20) /* inflate buffer kept between messages */

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
    if (k->ssl != NULL)
        SSL_free(k->ssl); /* and its BIOs */
    pmd_inflater_end(&k->inf);
    pmd_deflater_end(&k->def);
    free(k->ibuf.buf);
    free(k->rbuf);
    free(k->head);
    free(k->msg);
    free(k);
    wsc__on_conn_freed(c);
}

/* Write bytes now if the socket takes them, without queueing: only for
 * the last bytes before the connection is dropped. */
static void write_now(wsc_conn_t *k, const void *p, size_t n)
{
    if (n == 0 || uv_stream_get_write_queue_size((uv_stream_t *)&k->tcp) != 0)
        return;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    (void)uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
}

/* The ciphertext waiting in wbio, written now if the socket takes it. */
static void tls_write_now(wsc_conn_t *k)
{
    char buf[4096];
    int n;
    while ((n = BIO_read(k->wbio, buf, sizeof(buf))) > 0)
        write_now(k, buf, (size_t)n);
}

void wsc__conn_abort(wsc_conn_t *k)
{
    if (k->phase == WSC_PH_DEAD)
        return;
    if (k->ssl != NULL && k->tls_ok) {
        /* Tell the broker the TLS session ends here (close_notify). */
        k->tls_ok = false;
        if (SSL_shutdown(k->ssl) >= 0)
            tls_write_now(k);
        ERR_clear_error();
    }
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

/* The first error on OpenSSL's queue as text; the queue is cleared. */
static const char *ssl_error(char *buf, size_t cap)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, cap, "no detail from OpenSSL");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

/* A TLS error after the handshake: the session cannot go on. */
static void tls_lost(wsc_conn_t *k, const char *what)
{
    char buf[160];
    k->tls_ok = false;
    lost(k, WSC_E_TLS, "TLS %s with %s: %s", what, k->peer, ssl_error(buf, sizeof(buf)));
}

static void on_written(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    wsc_conn_t *k = w->k;
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        lost(k, WSC_E_DISCONNECTED, "write to %s: %s", k->peer, uv_strerror(status));
}

/* Hand w to the socket (it owns w from here). */
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

/* Write the ciphertext OpenSSL has produced (handshake messages, records,
 * alerts) to the socket, in one write. */
static int tls_flush(wsc_conn_t *k)
{
    size_t n = BIO_ctrl_pending(k->wbio);
    if (n == 0)
        return WSC_OK;
    wreq_t *w = malloc(sizeof(*w) + n);
    if (w == NULL) {
        lost(k, WSC_E_NOMEM, "out of memory for %zu bytes of TLS output", n);
        return WSC_E_CLOSED;
    }
    int r = BIO_read(k->wbio, w->data, (int)n);
    w->len = r > 0 ? (size_t)r : 0;
    return write_bytes(k, w);
}

/* Send the bytes of w (a frame or the upgrade request): through TLS on a
 * wss:// connection. Takes w. */
static int send_bytes(wsc_conn_t *k, wreq_t *w)
{
    if (k->ssl == NULL)
        return write_bytes(k, w);
    int r = SSL_write(k->ssl, w->data, (int)w->len);
    free(w);
    if (r <= 0) {
        tls_lost(k, "write");
        return WSC_E_CLOSED;
    }
    return tls_flush(k);
}

/* A masked frame in a new write request, or NULL. */
static wreq_t *make_frame(wsc_conn_t *k, uint8_t opcode, bool rsv1, const void *payload, size_t len)
{
    uint8_t mask[4];
    size_t hlen = ws_header_size(len, true);
    wreq_t *w = malloc(sizeof(*w) + hlen + len);
    if (w == NULL)
        return NULL;
    wsc__random(k->c, mask, sizeof(mask));
    w->len = ws_frame_header(w->data, opcode, true, rsv1, len, mask);
    if (len > 0)
        memcpy(w->data + w->len, payload, len);
    ws_mask(w->data + w->len, len, mask, 0);
    w->len += len;
    return w;
}

/* A text message compressed (RFC 7692: RSV1 on its one frame). */
static wreq_t *make_compressed(wsc_conn_t *k, const void *payload, size_t len)
{
    size_t cap = pmd_deflate_bound(&k->def, len);
    uint8_t *z = malloc(cap);
    if (z == NULL)
        return NULL;
    ssize_t n = pmd_deflate(&k->def, payload, len, z, cap);
    wreq_t *w = NULL;
    if (n >= 0)
        w = make_frame(k, WS_OP_TEXT, true, z, (size_t)n);
    else
        deflateReset(&k->def.z); /* what the broker never saw must not be referred to */
    free(z);
    return w;
}

int wsc__conn_send(wsc_conn_t *k, uint8_t opcode, const void *payload, size_t len)
{
    if (k->phase != WSC_PH_WS)
        return WSC_E_CLOSED;
    wreq_t *w;
    if (opcode == WS_OP_TEXT && k->def.ready && len >= k->c->o.deflate_min_size)
        w = make_compressed(k, payload, len);
    else
        w = make_frame(k, opcode, false, payload, len);
    if (w == NULL)
        return WSC_E_NOMEM;
    return send_bytes(k, w);
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
    wreq_t *w = make_frame(k, WS_OP_CLOSE, false, payload, n);
    if (w == NULL)
        return;
    if (k->ssl == NULL) {
        write_now(k, w->data, w->len);
    } else if (k->tls_ok) {
        if (SSL_write(k->ssl, w->data, (int)w->len) > 0)
            tls_write_now(k);
        else
            k->tls_ok = false;
        ERR_clear_error();
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

/* A whole compressed message: inflate, check, deliver. */
static void deliver_compressed(wsc_conn_t *k, const uint8_t *p, size_t n)
{
    size_t max = wsc__inflate_limit(k->c);
    k->ibuf.len = 0;
    int r = pmd_inflate(&k->inf, p, n, max, &k->ibuf);
    if (r == PMD_E_TOO_BIG) {
        close_now(k, WS_CLOSE_TOO_BIG);
        lost(k, WSC_E_PROTOCOL, "a compressed message from the broker inflates past %zu bytes",
             max);
        return;
    }
    if (r == PMD_E_NOMEM) {
        close_now(k, WS_CLOSE_INTERNAL);
        lost(k, WSC_E_NOMEM, "out of memory inflating a message");
        return;
    }
    if (r != PMD_OK) {
        close_now(k, WS_CLOSE_INVALID_DATA);
        lost(k, WSC_E_PROTOCOL, "the broker sent invalid compressed data");
        return;
    }
    if (!utf8_valid(k->ibuf.buf, k->ibuf.len)) {
        close_now(k, WS_CLOSE_INVALID_DATA);
        lost(k, WSC_E_PROTOCOL, "a compressed text message from the broker is not UTF-8");
        return;
    }
    deliver(k, k->ibuf.buf, k->ibuf.len);
    if (k->phase != WSC_PH_DEAD && k->ibuf.cap > IBUF_KEEP) {
        free(k->ibuf.buf);
        k->ibuf = (pmd_buf_t){NULL, 0, 0};
    }
}

static void message(wsc_conn_t *k, const uint8_t *p, size_t n, bool compressed)
{
    if (compressed)
        deliver_compressed(k, p, n);
    else
        deliver(k, p, n);
}

static void on_data(wsc_conn_t *k, const ws_event_t *ev)
{
    if (ev->opcode != WS_OP_TEXT) {
        close_now(k, WS_CLOSE_UNSUPPORTED);
        lost(k, WSC_E_PROTOCOL, "the broker sent a binary message");
        return;
    }
    if (ev->first && ev->fin && k->msg_len == 0) {
        message(k, ev->data, ev->len, ev->rsv1);
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
        message(k, k->msg, n, ev->rsv1);
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

/* The broker's answer to our extension offer. An extension we did not
 * offer, or a permessage-deflate response RFC 7692 does not allow (two
 * answers, a server_max_window_bits we never asked for), fails the
 * connection (RFC 6455 section 4.1). Returns false after lost(). */
static bool accept_extensions(wsc_conn_t *k, const wsh_response_t *res)
{
    wsc_client_t *c = k->c;
    const wsh_str_t *v = NULL;
    size_t count = 0;
    for (size_t i = 0; i < res->num_headers; i++) {
        const wsh_str_t *name = &res->headers[i].name;
        if (name->len == 24 && strncasecmp(name->p, "Sec-WebSocket-Extensions", 24) == 0) {
            v = &res->headers[i].value;
            count++;
        }
    }
    if (count == 0)
        return true;
    if (!c->o.deflate) {
        lost(k, WSC_E_HANDSHAKE, "%s accepted an extension that was not offered: %.*s", k->peer,
             (int)(v->len < 100 ? v->len : 100), v->p);
        return false;
    }
    if (count > 1 || pmd_parse_response(*v, &k->pmdp) != PMD_OK ||
        k->pmdp.server_max_window_bits_sent) {
        lost(k, WSC_E_HANDSHAKE, "%s answered the permessage-deflate offer with \"%.*s\"", k->peer,
             (int)(v->len < 100 ? v->len : 100), v->p);
        return false;
    }
    if (pmd_inflater_init(&k->inf, k->pmdp.server_no_context_takeover) != PMD_OK ||
        (c->o.deflate_send && pmd_deflater_init(&k->def, k->pmdp.client_max_window_bits,
                                                k->pmdp.client_no_context_takeover) != PMD_OK)) {
        lost(k, WSC_E_NOMEM, "out of memory for permessage-deflate");
        return false;
    }
    k->pmd = true;
    snprintf(k->ext, sizeof(k->ext), "%.*s", (int)v->len, v->p);
    return true;
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
    if (!accept_extensions(k, &res))
        return false;
    k->phase = WSC_PH_WS;
    ws_parser_init(&k->wp, WS_ROLE_CLIENT, k->c->o.max_message, k->pmd ? WS_PARSER_ALLOW_RSV1 : 0);
    /* Frames that came with the head: move them to the read buffer. */
    size_t rest = k->head_len - (size_t)r;
    char *head = k->head;
    k->head = NULL;
    if (rest > 0)
        feed(k, (uint8_t *)head + r, rest);
    free(head);
    return k->phase != WSC_PH_DEAD;
}

/* Plaintext from the broker: the upgrade response, then frames. */
static void plain_input(wsc_conn_t *k, uint8_t *p, size_t n)
{
    if (k->phase == WSC_PH_UPGRADE) {
        size_t used;
        if (!upgrade_input(k, (const char *)p, n, &used))
            return;
        p += used;
        n -= used;
    }
    feed(k, p, n);
}

/* The end of the byte stream (EOF, or the broker's close_notify). */
static void on_eof(wsc_conn_t *k)
{
    if (k->phase == WSC_PH_CLOSING)
        lost(k, WSC_E_CLOSED, "closed");
    else if (k->phase == WSC_PH_TLS)
        lost(k, WSC_E_TLS, "%s closed the connection during the TLS handshake (is it a TLS port?)",
             k->peer);
    else if (k->phase == WSC_PH_UPGRADE)
        lost(k, WSC_E_HANDSHAKE, "%s closed the connection during the upgrade", k->peer);
    else
        lost(k, WSC_E_DISCONNECTED, "%s closed the connection", k->peer);
}

/* ---- connecting ---- */

/* Build and send the upgrade request: the token, the extension offer. */
static void send_upgrade(wsc_conn_t *k)
{
    wsc_client_t *c = k->c;
    char extra[WSC_ERRLEN + 4200] = "";
    char offer[96];
    char request[WSH_MAX_HEAD];
    uint8_t nonce[16];
    size_t n = 0;
    wsc__random(c, nonce, sizeof(nonce));
    wsh_make_key(nonce, k->key);
    if (c->token != NULL)
        n += (size_t)snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\n", c->token);
    if (c->o.deflate && pmd_format_offer(false, offer, sizeof(offer)) > 0)
        snprintf(extra + n, sizeof(extra) - n, "Sec-WebSocket-Extensions: %s\r\n", offer);
    int len = wsh_write_request(request, sizeof(request), c->url.authority, c->url.target, k->key,
                                extra[0] ? extra : NULL);
    k->head = malloc(WSH_MAX_HEAD);
    wreq_t *w = len > 0 ? malloc(sizeof(*w) + (size_t)len) : NULL;
    if (w == NULL || k->head == NULL) {
        free(w);
        lost(k, WSC_E_NOMEM, "cannot build the upgrade request");
        return;
    }
    memcpy(w->data, request, (size_t)len);
    w->len = (size_t)len;
    k->phase = WSC_PH_UPGRADE;
    send_bytes(k, w);
}

/* The handshake failed: say why, in the words a user can act on. */
static void tls_handshake_failed(wsc_conn_t *k)
{
    char buf[160];
    long v = k->c->o.insecure ? X509_V_OK : SSL_get_verify_result(k->ssl);
    const char *host = k->c->url.host;
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        ERR_clear_error();
        lost(k, WSC_E_TLS, "TLS with %s: the broker's certificate is not valid for %s", k->peer,
             host);
    } else if (v != X509_V_OK) {
        ERR_clear_error();
        lost(k, WSC_E_TLS, "TLS with %s: the broker's certificate is not trusted: %s", k->peer,
             X509_verify_cert_error_string(v));
    } else {
        lost(k, WSC_E_TLS, "TLS handshake with %s failed: %s", k->peer,
             ssl_error(buf, sizeof(buf)));
    }
}

/* Continue the TLS handshake with what has arrived; once it is done, send
 * the upgrade request. Returns false if the connection is not (yet) ready
 * for application data. */
static bool tls_handshake(wsc_conn_t *k)
{
    int r = SSL_do_handshake(k->ssl);
    if (r != 1) {
        int e = SSL_get_error(k->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            tls_flush(k);
            return false;
        }
        tls_flush(k); /* the alert, if any */
        tls_handshake_failed(k);
        return false;
    }
    k->tls_ok = true;
    if (tls_flush(k) != WSC_OK)
        return false;
    send_upgrade(k);
    return k->phase == WSC_PH_UPGRADE;
}

/* Ciphertext from the socket, in k->rbuf: into OpenSSL, and the plaintext
 * it yields back into k->rbuf (already copied out) for the plain path. */
static void tls_input(wsc_conn_t *k, size_t n)
{
    if (BIO_write(k->rbio, k->rbuf, (int)n) != (int)n) {
        lost(k, WSC_E_NOMEM, "out of memory for TLS input");
        return;
    }
    if (k->phase == WSC_PH_TLS && !tls_handshake(k))
        return;
    while (k->phase != WSC_PH_DEAD) {
        int r = SSL_read(k->ssl, k->rbuf, WSC_READ_BUF);
        if (r > 0) {
            plain_input(k, (uint8_t *)k->rbuf, (size_t)r);
            continue;
        }
        int e = SSL_get_error(k->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            on_eof(k);
            return;
        }
        tls_lost(k, "read");
        return;
    }
    if (k->phase != WSC_PH_DEAD)
        tls_flush(k); /* e.g. a key update */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    wsc_conn_t *k = s->data;
    if (k->phase == WSC_PH_DEAD || nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            on_eof(k);
        else if (k->phase == WSC_PH_CLOSING)
            lost(k, WSC_E_CLOSED, "closed");
        else
            lost(k, WSC_E_DISCONNECTED, "read from %s: %s", k->peer, uv_strerror((int)nread));
        return;
    }
    wsc__on_rx(k->c, k);
    if (k->ssl != NULL)
        tls_input(k, (size_t)nread);
    else
        plain_input(k, (uint8_t *)buf->base, (size_t)nread);
}

/* A TLS session for k: SNI and the name or address the certificate must
 * carry (unless insecure), ALPN http/1.1. Returns false after lost(). */
static bool tls_start(wsc_conn_t *k)
{
    wsc_client_t *c = k->c;
    k->ssl = SSL_new(c->tls_ctx);
    k->rbio = BIO_new(BIO_s_mem());
    k->wbio = BIO_new(BIO_s_mem());
    if (k->ssl == NULL || k->rbio == NULL || k->wbio == NULL) {
        BIO_free(k->rbio);
        BIO_free(k->wbio);
        k->rbio = k->wbio = NULL;
        lost(k, WSC_E_NOMEM, "out of memory for a TLS session");
        return false;
    }
    SSL_set_bio(k->ssl, k->rbio, k->wbio);
    SSL_set_connect_state(k->ssl);
    bool ok = SSL_set_alpn_protos(k->ssl, (const unsigned char *)"\x08http/1.1", 9) == 0;
    /* SNI carries DNS names only (RFC 6066). */
    if (ok && !c->url.host_is_ip)
        ok = SSL_set_tlsext_host_name(k->ssl, c->url.host) == 1;
    if (ok && !c->o.insecure) {
        if (c->url.host_is_ip)
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), c->url.host) == 1;
        else
            ok = SSL_set1_host(k->ssl, c->url.host) == 1;
    }
    if (!ok) {
        char buf[160];
        lost(k, WSC_E_TLS, "TLS setup for %s: %s", c->url.host, ssl_error(buf, sizeof(buf)));
        return false;
    }
    return true;
}

static void on_connect(uv_connect_t *req, int status)
{
    wsc_conn_t *k = req->data;
    if (k->phase == WSC_PH_DEAD)
        return;
    if (status < 0) {
        lost(k, WSC_E_CONNECT, "connect to %s: %s", k->peer, uv_strerror(status));
        return;
    }
    int r = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    if (r < 0) {
        lost(k, WSC_E_CONNECT, "read from %s: %s", k->peer, uv_strerror(r));
        return;
    }
    if (!k->c->url.tls) {
        send_upgrade(k);
        return;
    }
    if (!tls_start(k))
        return;
    k->phase = WSC_PH_TLS;
    tls_handshake(k); /* the ClientHello */
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
