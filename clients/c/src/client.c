/*
 * client.c - the client: connection attempts and reconnects, requests and
 * their answers, the subscription table, client-side liveness, close.
 *
 *   CONNECTING --hello--> OPEN --lost--> RECONNECTING --backoff--> (attempt)
 *        |                  |                 ^   |                    |
 *        +--failed----------+-----------------+   +--------hello-------+--> OPEN
 *   with reconnect off every failure leads to CLOSED; wsc_close too.
 *
 * An attempt resolves the host, tries each address in turn, upgrades and
 * waits for the broker's hello, all within connect_timeout_ms. After a
 * failure the next attempt waits random(0, min(cap, base * 2^attempt)) ms
 * (full jitter), so a crowd of clients does not come back in lockstep.
 *
 * Requests carry numeric ids; the broker answers each with one ack or
 * error. Publishes made while not connected wait in the bounded outbox.
 * Subscriptions live in the table until unsubscribed: a new connection
 * subscribes to each again, passing since = the last seq seen (and its
 * epoch) for concrete topics so the broker can replay the gap, and reports
 * through on_stale whatever it cannot recover. At most one subscribe per
 * pattern is on the wire at a time; later ones wait in the entry.
 *
 * Callbacks run inline from loop events. Completions caused by an API call
 * itself (an unsubscribe while offline) are deferred to the next loop
 * iteration, so a function never calls back into the caller before it
 * returns, with wsc_close as the one documented exception.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include <wsproto/topic.h>
#include <wsproto/utf8.h>

#include "client_int.h"

typedef struct wsc_gai {
    uv_getaddrinfo_t req;
    wsc_client_t *c;
    bool abandoned;
} wsc_gai_t;

static void on_retry(uv_timer_t *t);
static void send_next_subscribe(wsc_client_t *c, wsc_sub_t *s);

/* ---- small helpers ---- */

static bool valid_token(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 4096)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)t[i];
        if (ch < 0x21 || ch > 0x7e)
            return false;
    }
    return true;
}

void wsc__random(wsc_client_t *c, void *out, size_t n)
{
    uint8_t *o = out;
    while (n > 0) {
        if (c->rnd_off >= sizeof(c->rnd)) {
            if (uv_random(NULL, NULL, c->rnd, sizeof(c->rnd), 0, NULL) != 0) {
                /* No entropy source: mix the clock into the old pool. */
                uint64_t t = uv_hrtime();
                for (size_t i = 0; i < sizeof(c->rnd); i++) {
                    t = t * 6364136223846793005ULL + 1442695040888963407ULL;
                    c->rnd[i] ^= (uint8_t)(t >> 56);
                }
            }
            c->rnd_off = 0;
        }
        size_t k = sizeof(c->rnd) - c->rnd_off;
        if (k > n)
            k = n;
        memcpy(o, c->rnd + c->rnd_off, k);
        c->rnd_off += k;
        o += k;
        n -= k;
    }
}

static int set_error(wsc_client_t *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_error(wsc_client_t *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errbuf, sizeof(c->errbuf), fmt, ap);
    va_end(ap);
    return err;
}

static void notify_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail)
{
    c->state = st;
    if (c->o.on_state != NULL)
        c->o.on_state(c, st, err, detail, c->o.user);
}

static void maybe_free(wsc_client_t *c)
{
    if (!c->closing || c->refs > 0)
        return;
    SSL_CTX_free(c->tls_ctx);
    free(c->token);
    free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    wsc_client_t *c = h->data;
    c->refs--;
    maybe_free(c);
}

void wsc__on_conn_freed(wsc_client_t *c)
{
    c->refs--;
    maybe_free(c);
}

static void free_addrs(wsc_client_t *c)
{
    if (c->ai != NULL)
        uv_freeaddrinfo(c->ai);
    c->ai = c->ai_next = NULL;
}

/* ---- requests ---- */

static wsc_req_t *req_new(wsc_req_kind_t kind, const char *topic, size_t len)
{
    wsc_req_t *r = calloc(1, sizeof(*r) + len + 1);
    if (r == NULL)
        return NULL;
    r->kind = kind;
    r->last = r->since = -1;
    memcpy(r->topic, topic, len);
    r->topic_len = len;
    return r;
}

static void req_free(wsc_req_t *r)
{
    free(r->text);
    free(r);
}

/* Report r's outcome and free it. m (may be NULL) is the broker's answer;
 * message overrides the text for local errors. */
static void complete(wsc_client_t *c, wsc_req_t *r, int err, const msg_server_t *m,
                     const char *message)
{
    wsc_result_t res = {.err = err,
                        .code = "",
                        .message = message != NULL ? message : (err ? wsc_strerror(err) : ""),
                        .topic = r->topic,
                        .epoch = "",
                        .recovered = -1};
    if (m != NULL && m->op == MSG_S_ERROR) {
        res.code = m->code;
        res.message = m->message;
    } else if (m != NULL) {
        res.has_seq = m->has_seq;
        res.seq = m->seq;
        res.epoch = m->epoch;
        res.recovered = m->recovered;
    }
    if (!r->internal)
        c->pending_user--;
    if (r->cb != NULL && !r->internal)
        r->cb(c, &res, r->user);
    req_free(r);
}

static void on_defer(uv_timer_t *t)
{
    wsc_client_t *c = t->data;
    wsc_req_t *r;
    while ((r = wsc__list_pop(&c->deferred)) != NULL)
        complete(c, r, r->deferred_err, NULL, NULL);
}

static void defer(wsc_client_t *c, wsc_req_t *r, int err)
{
    r->deferred_err = err;
    wsc__list_push(&c->deferred, r);
    if (!uv_is_active((uv_handle_t *)&c->defer))
        uv_timer_start(&c->defer, on_defer, 0, 0);
}

/* Send r's request text on the open connection and move it in flight. The
 * request may be completed (and freed) before this returns if the write
 * fails and the connection is lost. */
static void send_req(wsc_client_t *c, wsc_req_t *r, char *text, size_t len)
{
    wsc__list_push(&c->inflight, r);
    if (wsc__conn_send(c->conn, WS_OP_TEXT, text, len) == WSC_E_NOMEM) {
        /* Not sent, and the connection lives on: fail just this one. */
        wsc__list_remove(&c->inflight, r);
        if (r->sub != NULL && r->sub->inflight == r)
            r->sub->inflight = NULL;
        if (r->internal)
            req_free(r);
        else
            complete(c, r, WSC_E_NOMEM, NULL, NULL);
    }
}

static size_t id_text(char *buf, size_t cap, uint64_t id)
{
    int n = snprintf(buf, cap, "%llu", (unsigned long long)id);
    return n > 0 ? (size_t)n : 0;
}

/* Encode and send a subscribe or unsubscribe. */
static void send_sub_req(wsc_client_t *c, wsc_req_t *r, bool unsubscribe)
{
    char idbuf[24];
    r->id = ++c->next_id;
    msg_span_t id = {idbuf, id_text(idbuf, sizeof(idbuf), r->id)};
    size_t cap = 6 * r->topic_len + 6 * strlen(r->epoch) + 160;
    char *text = malloc(cap);
    if (text == NULL) {
        if (r->sub != NULL && r->sub->inflight == r)
            r->sub->inflight = NULL;
        if (r->internal)
            req_free(r);
        else
            complete(c, r, WSC_E_NOMEM, NULL, NULL);
        return;
    }
    size_t n = msg_encode_subscribe(text, cap, unsubscribe, r->topic, r->topic_len, id, r->last,
                                    r->since, r->epoch[0] ? r->epoch : NULL);
    send_req(c, r, text, n);
    free(text);
}

/* ---- subscriptions ---- */

/* Put the next subscribe of s on the wire, if none is and we are open. */
static void send_next_subscribe(wsc_client_t *c, wsc_sub_t *s)
{
    if (s->inflight != NULL || c->state != WSC_OPEN || c->conn == NULL)
        return;
    wsc_req_t *r;
    if (s->resub_needed) {
        s->resub_needed = false;
        r = req_new(WSC_REQ_SUBSCRIBE, s->pattern, s->len);
        if (r == NULL)
            return;
        r->internal = true;
        r->resub = true;
        if (s->concrete) {
            r->since = (int64_t)s->last_seq;
            memcpy(r->epoch, s->epoch, sizeof(r->epoch));
        }
    } else if ((r = wsc__list_pop(&s->waiters)) == NULL) {
        return;
    }
    r->sub = s;
    s->inflight = r;
    send_sub_req(c, r, false);
}

static void on_sub_answer(wsc_client_t *c, wsc_req_t *r, const msg_server_t *m)
{
    wsc_sub_t *s = r->sub;
    wsc_stale_t stale = {.old_epoch = "", .epoch = m->epoch};
    char old_epoch[MSG_EPOCH_MAX + 1];
    bool report_stale = false;

    if (s != NULL) {
        s->inflight = NULL;
        if (m->op == MSG_S_ACK) {
            if (s->concrete && m->has_seq) {
                if (r->resub && m->recovered == 0) {
                    memcpy(old_epoch, s->epoch, sizeof(old_epoch));
                    stale.reason = WSC_STALE_NOT_RECOVERED;
                    stale.last_seq = s->last_seq;
                    stale.seq = m->seq;
                    stale.old_epoch = old_epoch;
                    report_stale = true;
                    s->last_seq = m->seq;
                } else if (!s->established) {
                    s->last_seq = m->seq;
                }
                snprintf(s->epoch, sizeof(s->epoch), "%s", m->epoch);
            } else if (!s->concrete && r->resub) {
                stale.reason = WSC_STALE_PATTERN;
                stale.epoch = "";
                report_stale = true;
            }
            s->established = true;
            send_next_subscribe(c, s);
        } else if ((r->resub || !s->established) && s->waiters.count == 0) {
            /* The broker does not have it: forget it. */
            wsc__subs_remove(&c->subs, s);
        } else {
            if (r->resub)
                s->established = false;
            send_next_subscribe(c, s);
        }
    }
    if (report_stale && c->o.on_stale != NULL) {
        stale.pattern = r->topic;
        c->o.on_stale(c, &stale, c->o.user);
    }
    if (r->internal) {
        if (m->op == MSG_S_ERROR && c->o.on_error != NULL && !c->closing) {
            char text[WSC_ERRLEN + 64];
            snprintf(text, sizeof(text), "subscribing again after a reconnect failed: %s",
                     m->message);
            wsc_result_t res = {.err = WSC_E_BROKER,
                                .code = m->code,
                                .message = text,
                                .topic = r->topic,
                                .epoch = "",
                                .recovered = -1};
            c->o.on_error(c, &res, c->o.user);
        }
        req_free(r);
        return;
    }
    complete(c, r, m->op == MSG_S_ACK ? WSC_OK : WSC_E_BROKER, m, NULL);
}

/* ---- broker messages ---- */

static bool parse_id(msg_span_t id, uint64_t *out)
{
    uint64_t v = 0;
    if (id.len == 0 || id.len > 19)
        return false;
    for (size_t i = 0; i < id.len; i++) {
        if (id.p[i] < '0' || id.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(id.p[i] - '0');
    }
    *out = v;
    return true;
}

static void on_answer(wsc_client_t *c, const msg_server_t *m)
{
    uint64_t id;
    if (m->id.len == 0) {
        if (m->op == MSG_S_ERROR && c->o.on_error != NULL) {
            wsc_result_t res = {.err = WSC_E_BROKER,
                                .code = m->code,
                                .message = m->message,
                                .topic = "",
                                .epoch = "",
                                .recovered = -1};
            c->o.on_error(c, &res, c->o.user);
        }
        return;
    }
    if (!parse_id(m->id, &id))
        return;
    wsc_req_t *r = c->inflight.head;
    while (r != NULL && r->id != id)
        r = r->next;
    if (r == NULL)
        return;
    wsc__list_remove(&c->inflight, r);
    if (r->kind == WSC_REQ_SUBSCRIBE)
        on_sub_answer(c, r, m);
    else
        complete(c, r, m->op == MSG_S_ACK ? WSC_OK : WSC_E_BROKER, m, NULL);
}

static void on_message(wsc_client_t *c, const msg_server_t *m, const char *raw, size_t n)
{
    wsc_stale_t gap = {.reason = WSC_STALE_GAP, .pattern = m->topic, .old_epoch = "", .epoch = ""};
    bool report = false;
    wsc_sub_t *s = wsc__subs_find(&c->subs, m->topic, strlen(m->topic));
    if (s != NULL && s->concrete && s->established && m->has_seq) {
        if (m->seq > s->last_seq + 1) {
            report = true;
            gap.last_seq = s->last_seq;
            gap.seq = m->seq;
        }
        if (m->seq > s->last_seq)
            s->last_seq = m->seq;
    }
    if (report && c->o.on_stale != NULL) {
        c->o.on_stale(c, &gap, c->o.user);
        if (c->closing)
            return;
    }
    if (c->o.on_message != NULL) {
        wsc_message_t msg = {.topic = m->topic,
                             .seq = m->seq,
                             .data = m->data.p,
                             .data_len = m->data.len,
                             .raw = raw,
                             .raw_len = n};
        c->o.on_message(c, &msg, c->o.user);
    }
}

/* ---- the connection's life ---- */

/* Fail what was sent on a lost connection. Subscribes go back to their
 * entries (the next connection sends them again); publishes fail, since
 * the broker may or may not have delivered them; unsubscribes succeed, the
 * subscription died with the connection. Callbacks may close the client;
 * popping one request at a time keeps that safe. */
static void drop_inflight(wsc_client_t *c, int pub_err)
{
    wsc_req_t *r;
    while ((r = wsc__list_pop(&c->inflight)) != NULL) {
        r->id = 0;
        switch (r->kind) {
        case WSC_REQ_PUBLISH:
            complete(c, r, pub_err, NULL,
                     pub_err == WSC_E_DISCONNECTED
                         ? "connection lost before the broker acknowledged the publish (it "
                           "may or may not have been delivered)"
                         : NULL);
            break;
        case WSC_REQ_UNSUBSCRIBE:
            complete(c, r, WSC_OK, NULL, NULL);
            break;
        case WSC_REQ_SUBSCRIBE:
            if (r->sub != NULL)
                r->sub->inflight = NULL;
            if (r->internal)
                req_free(r);
            else if (r->sub != NULL && c->o.reconnect && !c->closing)
                wsc__list_push_front(&r->sub->waiters, r);
            else
                complete(c, r, r->sub != NULL ? pub_err : WSC_E_CANCELED, NULL, NULL);
            break;
        }
    }
}

/* Fail everything still waiting for a connection. Outside wsc_close, a
 * callback that closes the client ends this (wsc_close fails the rest). */
static void fail_queued(wsc_client_t *c, int err, const char *why, bool in_close)
{
    wsc_req_t *r;
    while ((r = wsc__list_pop(&c->outbox)) != NULL) {
        c->outbox_bytes -= r->len;
        complete(c, r, err, NULL, why);
        if (c->closing && !in_close)
            return;
    }
    for (wsc_sub_t *s = c->subs.head; s != NULL; s = s->next) {
        while ((r = wsc__list_pop(&s->waiters)) != NULL) {
            complete(c, r, err, NULL, why);
            if (c->closing && !in_close)
                return;
        }
    }
}

/* After a failed attempt or a lost connection: retry later, or close. */
static void retry_or_close(wsc_client_t *c, int err, const char *detail)
{
    char text[WSC_ERRLEN + 64];
    bool was_open = c->state == WSC_OPEN;
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->live);
    free_addrs(c);
    c->hello = false;
    c->ext[0] = c->tls_version[0] = '\0';
    if (c->o.reconnect) {
        uint64_t rnd;
        wsc__random(c, &rnd, sizeof(rnd));
        uint64_t delay = wsc__backoff_ms(c->o.backoff_min_ms, c->o.backoff_max_ms, c->attempt, rnd);
        c->attempt++;
        uv_timer_start(&c->timer, on_retry, delay, 0);
        snprintf(text, sizeof(text), "%s; retry in %llu ms", detail, (unsigned long long)delay);
        notify_state(c, WSC_RECONNECTING, err, text);
    } else {
        notify_state(c, WSC_CLOSED, err, detail);
    }
    if (c->closing)
        return;
    drop_inflight(c, was_open ? WSC_E_DISCONNECTED : err);
    if (!c->o.reconnect && !c->closing)
        fail_queued(c, WSC_E_CLOSED, "not connected, and reconnect is off", false);
}

static void try_next_address(wsc_client_t *c)
{
    while (c->ai_next != NULL) {
        struct addrinfo *a = c->ai_next;
        c->ai_next = a->ai_next;
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
            continue;
        c->conn = wsc__conn_start(c, a->ai_addr);
        if (c->conn != NULL)
            return;
        snprintf(c->last_conn_err, sizeof(c->last_conn_err), "%s", c->errbuf);
    }
    retry_or_close(c, WSC_E_CONNECT, c->last_conn_err);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    wsc_gai_t *g = (wsc_gai_t *)req;
    wsc_client_t *c = g->c;
    bool abandoned = g->abandoned;
    free(g);
    c->refs--;
    if (abandoned) {
        if (res != NULL)
            uv_freeaddrinfo(res);
        maybe_free(c);
        return;
    }
    c->gai = NULL;
    if (status < 0) {
        char text[WSC_ERRLEN];
        snprintf(text, sizeof(text), "resolve %.100s: %s", c->url.host, uv_strerror(status));
        retry_or_close(c, WSC_E_CONNECT, text);
        return;
    }
    c->ai = c->ai_next = res;
    snprintf(c->last_conn_err, sizeof(c->last_conn_err), "no usable address for %.100s",
             c->url.host);
    try_next_address(c);
}

static void abandon_resolve(wsc_client_t *c)
{
    if (c->gai == NULL)
        return;
    c->gai->abandoned = true;
    uv_cancel((uv_req_t *)&c->gai->req);
    c->gai = NULL;
}

static void on_connect_timeout(uv_timer_t *t)
{
    wsc_client_t *c = t->data;
    char text[WSC_ERRLEN];
    wsc_conn_t *k = c->conn;
    bool upgraded = k != NULL && k->phase == WSC_PH_WS;
    abandon_resolve(c);
    c->conn = NULL;
    if (k != NULL)
        wsc__conn_abort(k);
    if (upgraded)
        snprintf(text, sizeof(text),
                 "no hello from %.80s within %u ms (is %.60s the pub/sub endpoint, e.g. /ws?)",
                 c->url.authority, c->o.connect_timeout_ms, c->url.target);
    else
        snprintf(text, sizeof(text), "connecting to %.100s timed out after %u ms", c->url.authority,
                 c->o.connect_timeout_ms);
    retry_or_close(c, WSC_E_TIMEOUT, text);
}

/* token_cb: the token for this attempt. Returns false after failing the
 * attempt. */
static bool fetch_token(wsc_client_t *c)
{
    const char *t = c->o.token_cb(c, c->o.user);
    if (c->closing)
        return false;
    if (t == NULL) {
        retry_or_close(c, WSC_E_TOKEN, "no token for this attempt (token_cb returned NULL)");
        return false;
    }
    if (!valid_token(t)) {
        retry_or_close(c, WSC_E_TOKEN,
                       "token_cb returned an invalid token (1-4096 printable ASCII characters "
                       "without spaces)");
        return false;
    }
    char *copy = strdup(t);
    if (copy == NULL) {
        retry_or_close(c, WSC_E_NOMEM, "out of memory");
        return false;
    }
    free(c->token);
    c->token = copy;
    return true;
}

static void on_retry(uv_timer_t *t)
{
    wsc_client_t *c = t->data;
    struct addrinfo hints;
    if (c->closing)
        return;
    c->hello = false;
    c->ping_sent = 0;
    if (c->o.token_cb != NULL && !fetch_token(c))
        return;
    if (c->o.connect_timeout_ms > 0)
        uv_timer_start(&c->timer, on_connect_timeout, c->o.connect_timeout_ms, 0);
    wsc_gai_t *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        retry_or_close(c, WSC_E_NOMEM, "out of memory");
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    g->c = c;
    int r = uv_getaddrinfo(c->loop, &g->req, on_resolved, c->url.host, c->url.port, &hints);
    if (r < 0) {
        char text[WSC_ERRLEN];
        free(g);
        snprintf(text, sizeof(text), "resolve %.100s: %s", c->url.host, uv_strerror(r));
        retry_or_close(c, WSC_E_CONNECT, text);
        return;
    }
    c->gai = g;
    c->refs++;
}

void wsc__on_lost(wsc_client_t *c, wsc_conn_t *k, int err, const char *detail)
{
    if (k != c->conn) {
        /* The connection wsc_close is closing has finished. */
        if (k == c->closing_conn) {
            c->closing_conn = NULL;
            uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        }
        return;
    }
    c->conn = NULL;
    if (!c->hello && err == WSC_E_CONNECT && c->ai_next != NULL) {
        snprintf(c->last_conn_err, sizeof(c->last_conn_err), "%s", detail);
        try_next_address(c);
        return;
    }
    retry_or_close(c, err, detail);
}

void wsc__on_rx(wsc_client_t *c, wsc_conn_t *k)
{
    if (k == c->conn) {
        c->last_rx = uv_now(c->loop);
        c->rx_count++;
    }
}

/* ---- liveness ---- */

static void drop_current(wsc_client_t *c, int err, const char *detail)
{
    wsc_conn_t *k = c->conn;
    c->conn = NULL;
    if (k != NULL)
        wsc__conn_abort(k);
    retry_or_close(c, err, detail);
}

static void on_live(uv_timer_t *t)
{
    wsc_client_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    if (c->conn == NULL || !c->hello)
        return;
    if (c->ping_sent != 0) {
        if (c->rx_count != c->ping_rx) {
            c->ping_sent = 0;
        } else if (now - c->ping_sent >= c->o.ping_timeout_ms) {
            char text[WSC_ERRLEN];
            snprintf(text, sizeof(text), "nothing from the broker for %llu ms (Ping unanswered)",
                     (unsigned long long)(now - c->last_rx));
            drop_current(c, WSC_E_TIMEOUT, text);
            return;
        } else {
            uv_timer_start(&c->live, on_live, c->ping_sent + c->o.ping_timeout_ms - now, 0);
            return;
        }
    }
    uint64_t idle = now - c->last_rx;
    if (idle >= c->o.ping_interval_ms) {
        c->ping_sent = now;
        c->ping_rx = c->rx_count;
        wsc__conn_send(c->conn, WS_OP_PING, "wsc", 3);
        if (c->conn != NULL)
            uv_timer_start(&c->live, on_live, c->o.ping_timeout_ms, 0);
    } else {
        uv_timer_start(&c->live, on_live, c->o.ping_interval_ms - idle, 0);
    }
}

/* ---- open ---- */

static void flush_outbox(wsc_client_t *c)
{
    wsc_req_t *r;
    while (c->state == WSC_OPEN && c->conn != NULL && (r = wsc__list_pop(&c->outbox)) != NULL) {
        c->outbox_bytes -= r->len;
        if (c->server_max > 0 && r->len > c->server_max) {
            char text[WSC_ERRLEN];
            snprintf(text, sizeof(text), "publish of %zu bytes is over the broker's limit of %llu",
                     r->len, (unsigned long long)c->server_max);
            complete(c, r, WSC_E_TOO_BIG, NULL, text);
            continue;
        }
        char *text = r->text;
        r->text = NULL;
        send_req(c, r, text, r->len);
        free(text);
    }
}

static void on_hello(wsc_client_t *c, const msg_server_t *m)
{
    char text[WSC_ERRLEN + 512];
    c->hello = true;
    c->attempt = 0;
    c->ever_open = true;
    uv_timer_stop(&c->timer);
    free_addrs(c);
    c->server_max = m->max_message;
    snprintf(c->ext, sizeof(c->ext), "%s", c->conn->ext);
    snprintf(c->tls_version, sizeof(c->tls_version), "%s",
             c->conn->ssl != NULL ? SSL_get_version(c->conn->ssl) : "");
    c->last_rx = uv_now(c->loop);
    c->ping_sent = 0;
    if (c->o.ping_interval_ms > 0)
        uv_timer_start(&c->live, on_live, c->o.ping_interval_ms, 0);
    c->state = WSC_OPEN;
    for (wsc_sub_t *s = c->subs.head; s != NULL; s = s->next)
        s->resub_needed = s->established;
    for (wsc_sub_t *s = c->subs.head, *next; s != NULL && c->conn != NULL; s = next) {
        next = s->next;
        send_next_subscribe(c, s);
    }
    flush_outbox(c);
    if (c->conn == NULL || c->closing)
        return;
    snprintf(text, sizeof(text), "connected to %s://%.100s%.60s (%.60s, client %.40s%s%s%s%.100s)",
             c->url.tls ? "wss" : "ws", c->url.authority, c->url.target, m->server, m->client,
             c->tls_version[0] ? "; " : "", c->tls_version, c->ext[0] ? "; " : "", c->ext);
    notify_state(c, WSC_OPEN, WSC_OK, text);
}

void wsc__on_text(wsc_client_t *c, wsc_conn_t *k, const char *p, size_t n)
{
    msg_server_t m;
    if (k != c->conn)
        return;
    int r = msg_parse_server(p, n, &m);
    if (r == MSG_E_UNKNOWN_OP)
        return; /* a newer broker's op: ignore, like unknown members */
    if (r != MSG_OK) {
        drop_current(c, WSC_E_PROTOCOL, "the broker sent a message that is not a JSON object");
        return;
    }
    if (!c->hello) {
        if (m.op != MSG_S_HELLO) {
            drop_current(c, WSC_E_PROTOCOL, "the broker's first message was not a hello");
            return;
        }
        on_hello(c, &m);
        return;
    }
    switch (m.op) {
    case MSG_S_ACK:
    case MSG_S_ERROR:
        on_answer(c, &m);
        break;
    case MSG_S_MESSAGE:
        on_message(c, &m, p, n);
        break;
    case MSG_S_HELLO:
    case MSG_S_PONG:
        break;
    }
}

/* ---- API ---- */

/* The TLS settings of a wss:// client: TLS 1.2 at least, the broker's
 * certificate verified against ca_file or the system's store (unless
 * insecure). The host name check is set per connection (conn.c). */
static int make_tls_ctx(wsc_client_t *c, const wsc_options_t *o, char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, cap, "cannot create a TLS context");
        ERR_clear_error();
        return WSC_E_NOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    int ok = o->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
                                : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        char why[160];
        unsigned long e = ERR_peek_last_error();
        if (e != 0)
            ERR_error_string_n(e, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "no detail from OpenSSL");
        ERR_clear_error();
        if (o->ca_file != NULL)
            snprintf(err, cap, "cannot load the CA file \"%.100s\": %.120s", o->ca_file, why);
        else
            snprintf(err, cap, "cannot load the system's CA certificates: %s", why);
        SSL_CTX_free(ctx);
        return WSC_E_INVAL;
    }
    SSL_CTX_set_verify(ctx, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    c->tls_ctx = ctx;
    return WSC_OK;
}

static wsc_client_t *connect_fail(wsc_error_t *err, int code, const char *text)
{
    if (err != NULL) {
        err->code = code;
        snprintf(err->text, sizeof(err->text), "%s", text);
    }
    return NULL;
}

wsc_client_t *wsc_connect(uv_loop_t *loop, const char *url, const wsc_options_t *opts,
                          wsc_error_t *err)
{
    wsc_options_t o;
    char text[WSC_ERRLEN];
    if (opts != NULL)
        o = *opts;
    else
        wsc_options_init(&o);
    if (err != NULL) {
        err->code = WSC_OK;
        err->text[0] = '\0';
    }
    if (loop == NULL)
        return connect_fail(err, WSC_E_INVAL, "no loop given");
    if (o.backoff_min_ms > o.backoff_max_ms)
        return connect_fail(err, WSC_E_INVAL, "backoff_min_ms is larger than backoff_max_ms");
    if (o.ping_interval_ms > 0 && o.ping_timeout_ms == 0)
        return connect_fail(err, WSC_E_INVAL, "ping_timeout_ms must be > 0 with a ping interval");
    if (o.token != NULL && !valid_token(o.token))
        return connect_fail(err, WSC_E_INVAL,
                            "the token must be 1-4096 printable ASCII characters without spaces");

    wsc_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return connect_fail(err, WSC_E_NOMEM, "out of memory");
    if (wsc__url_parse(url, &c->url, text, sizeof(text)) != WSC_OK) {
        free(c);
        return connect_fail(err, WSC_E_INVAL, text);
    }
    if (c->url.tls && make_tls_ctx(c, &o, text, sizeof(text)) != WSC_OK) {
        free(c);
        return connect_fail(err, WSC_E_INVAL, text);
    }
    if (o.token != NULL && (c->token = strdup(o.token)) == NULL) {
        SSL_CTX_free(c->tls_ctx);
        free(c);
        return connect_fail(err, WSC_E_NOMEM, "out of memory");
    }
    o.token = c->token;
    c->o = o;
    c->loop = loop;
    c->rnd_off = sizeof(c->rnd);
    uv_timer_init(loop, &c->timer);
    uv_timer_init(loop, &c->live);
    uv_timer_init(loop, &c->defer);
    c->timer.data = c->live.data = c->defer.data = c;
    c->refs = 3;
    c->state = WSC_CONNECTING;
    uv_timer_start(&c->timer, on_retry, 0, 0); /* no callback before we return */
    return c;
}

static int check_usable(wsc_client_t *c)
{
    c->errbuf[0] = '\0';
    if (c->closing)
        return set_error(c, WSC_E_CLOSED, "the client is closed");
    if (c->state == WSC_CLOSED)
        return set_error(c, WSC_E_CLOSED, "not connected, and reconnect is off");
    return WSC_OK;
}

int wsc_publish(wsc_client_t *c, const char *topic, const char *data, size_t len, wsc_result_cb cb,
                void *user)
{
    char idbuf[24];
    int rc = check_usable(c);
    if (rc != WSC_OK)
        return rc;
    if (topic == NULL || (data == NULL && len > 0))
        return set_error(c, WSC_E_INVAL, "no topic or data given");
    if (!wsc__json_check(data, len, c->errbuf, sizeof(c->errbuf)))
        return WSC_E_INVAL;
    size_t tlen = strlen(topic);
    wsc_req_t *r = req_new(WSC_REQ_PUBLISH, topic, tlen);
    if (r == NULL)
        return set_error(c, WSC_E_NOMEM, "out of memory");
    r->id = ++c->next_id;
    msg_span_t id = {idbuf, id_text(idbuf, sizeof(idbuf), r->id)};
    size_t cap = msg_publish_bound(tlen, len, id);
    r->text = malloc(cap);
    if (r->text == NULL) {
        req_free(r);
        return set_error(c, WSC_E_NOMEM, "out of memory for a %zu-byte publish", len);
    }
    r->len = msg_encode_publish(r->text, cap, topic, tlen, data, len, id);
    if (!utf8_valid((const uint8_t *)r->text, r->len)) {
        req_free(r);
        return set_error(c, WSC_E_INVAL, "the topic or the data is not valid UTF-8");
    }
    if (c->server_max > 0 && r->len > c->server_max) {
        size_t n = r->len;
        req_free(r);
        return set_error(c, WSC_E_TOO_BIG,
                         "publish of %zu bytes is over the broker's limit of %llu", n,
                         (unsigned long long)c->server_max);
    }
    r->cb = cb;
    r->user = user;
    if (c->state == WSC_OPEN && c->conn != NULL) {
        size_t queued = wsc__conn_queued(c->conn);
        if (queued + r->len > c->o.outbox_max_bytes && queued > 0) {
            req_free(r);
            return set_error(c, WSC_E_OUTBOX_FULL,
                             "%zu bytes are still waiting to be written to the broker", queued);
        }
        c->pending_user++;
        char *text = r->text;
        r->text = NULL;
        send_req(c, r, text, r->len);
        free(text);
        return WSC_OK;
    }
    if (c->outbox.count >= c->o.outbox_max || c->outbox_bytes + r->len > c->o.outbox_max_bytes) {
        size_t n = c->outbox.count, b = c->outbox_bytes;
        req_free(r);
        return set_error(c, WSC_E_OUTBOX_FULL,
                         "outbox full: %zu publishes (%zu bytes) are waiting for a connection", n,
                         b);
    }
    c->pending_user++;
    c->outbox_bytes += r->len;
    wsc__list_push(&c->outbox, r);
    return WSC_OK;
}

int wsc_publish_text(wsc_client_t *c, const char *topic, const char *text, size_t len,
                     wsc_result_cb cb, void *user)
{
    int rc = check_usable(c);
    if (rc != WSC_OK)
        return rc;
    if (text == NULL && len > 0)
        return set_error(c, WSC_E_INVAL, "no text given");
    if (!utf8_valid((const uint8_t *)text, len))
        return set_error(c, WSC_E_INVAL, "the text is not valid UTF-8");
    if (len > SIZE_MAX / 6 - 2)
        return set_error(c, WSC_E_TOO_BIG, "text too long");
    char *json = malloc(6 * len + 3);
    if (json == NULL)
        return set_error(c, WSC_E_NOMEM, "out of memory");
    size_t n = 0;
    json[n++] = '"';
    n += msg_escape(json + n, 6 * len, text, len);
    json[n++] = '"';
    rc = wsc_publish(c, topic, json, n, cb, user);
    free(json);
    return rc;
}

int wsc_subscribe(wsc_client_t *c, const char *pattern, const wsc_sub_opts_t *opts,
                  wsc_result_cb cb, void *user)
{
    int rc = check_usable(c);
    if (rc != WSC_OK)
        return rc;
    if (pattern == NULL)
        return set_error(c, WSC_E_INVAL, "no pattern given");
    if (opts != NULL && opts->epoch != NULL && strlen(opts->epoch) > MSG_EPOCH_MAX)
        return set_error(c, WSC_E_INVAL, "epoch longer than %d bytes", MSG_EPOCH_MAX);
    size_t len = strlen(pattern);
    if (!utf8_valid((const uint8_t *)pattern, len))
        return set_error(c, WSC_E_INVAL, "the pattern is not valid UTF-8");
    wsc_req_t *r = req_new(WSC_REQ_SUBSCRIBE, pattern, len);
    if (r == NULL)
        return set_error(c, WSC_E_NOMEM, "out of memory");
    if (opts != NULL) {
        r->last = opts->last < 0 ? -1 : opts->last;
        r->since = opts->since < 0 ? -1 : opts->since;
        if (opts->epoch != NULL)
            snprintf(r->epoch, sizeof(r->epoch), "%s", opts->epoch);
    }
    wsc_sub_t *s = wsc__subs_find(&c->subs, pattern, len);
    if (s == NULL) {
        bool concrete =
            topic_check(pattern, len, true) == TOPIC_OK && !topic_is_pattern(pattern, len);
        s = wsc__subs_add(&c->subs, pattern, len, concrete);
        if (s == NULL) {
            req_free(r);
            return set_error(c, WSC_E_NOMEM, "out of memory");
        }
    }
    r->cb = cb;
    r->user = user;
    r->sub = s;
    c->pending_user++;
    wsc__list_push(&s->waiters, r);
    send_next_subscribe(c, s);
    return WSC_OK;
}

int wsc_unsubscribe(wsc_client_t *c, const char *pattern, wsc_result_cb cb, void *user)
{
    int rc = check_usable(c);
    if (rc != WSC_OK)
        return rc;
    if (pattern == NULL)
        return set_error(c, WSC_E_INVAL, "no pattern given");
    size_t len = strlen(pattern);
    wsc_sub_t *s = wsc__subs_find(&c->subs, pattern, len);
    if (s == NULL)
        return set_error(c, WSC_E_NOT_SUBSCRIBED, "not subscribed to \"%.200s\"", pattern);
    wsc_req_t *r = req_new(WSC_REQ_UNSUBSCRIBE, pattern, len);
    if (r == NULL)
        return set_error(c, WSC_E_NOMEM, "out of memory");
    r->cb = cb;
    r->user = user;
    c->pending_user++;
    wsc_req_t *w;
    while ((w = wsc__list_pop(&s->waiters)) != NULL)
        defer(c, w, WSC_E_CANCELED);
    bool on_broker = s->established || s->inflight != NULL;
    if (s->inflight != NULL)
        s->inflight->sub = NULL;
    wsc__subs_remove(&c->subs, s);
    if (on_broker && c->state == WSC_OPEN && c->conn != NULL)
        send_sub_req(c, r, true);
    else
        defer(c, r, WSC_OK);
    return WSC_OK;
}

const char *wsc_last_error(const wsc_client_t *c)
{
    return c->errbuf;
}

wsc_state_t wsc_state(const wsc_client_t *c)
{
    return c->state;
}

const char *wsc_extensions(const wsc_client_t *c)
{
    return c->state == WSC_OPEN ? c->ext : "";
}

const char *wsc_tls_version(const wsc_client_t *c)
{
    return c->state == WSC_OPEN ? c->tls_version : "";
}

size_t wsc__inflate_limit(const wsc_client_t *c)
{
    size_t max = c->o.max_message;
    if (c->hello && c->server_max > 0 && c->server_max < SIZE_MAX - WSC_ENVELOPE &&
        c->server_max + WSC_ENVELOPE < max)
        max = (size_t)c->server_max + WSC_ENVELOPE;
    return max;
}

size_t wsc_pending(const wsc_client_t *c)
{
    return c->pending_user;
}

static void on_close_timeout(uv_timer_t *t)
{
    wsc_client_t *c = t->data;
    if (c->closing_conn != NULL)
        wsc__conn_abort(c->closing_conn);
    c->closing_conn = NULL;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

void wsc_close(wsc_client_t *c)
{
    wsc_req_t *r;
    if (c == NULL || c->closing)
        return;
    c->closing = true;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->live, on_handle_closed);
    uv_close((uv_handle_t *)&c->defer, on_handle_closed);
    abandon_resolve(c);
    free_addrs(c);

    wsc_conn_t *k = c->conn;
    c->conn = NULL;
    if (k != NULL && c->hello && k->phase == WSC_PH_WS) {
        wsc__conn_close(k, WS_CLOSE_NORMAL);
        if (k->phase == WSC_PH_CLOSING) {
            c->closing_conn = k;
            uv_timer_start(&c->timer, on_close_timeout, c->o.close_timeout_ms, 0);
        }
    } else if (k != NULL) {
        wsc__conn_abort(k);
    }
    if (c->closing_conn == NULL)
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);

    if (c->state != WSC_CLOSED)
        notify_state(c, WSC_CLOSED, WSC_OK, "closed by the application");
    while ((r = wsc__list_pop(&c->deferred)) != NULL)
        complete(c, r, r->deferred_err, NULL, NULL);
    while ((r = wsc__list_pop(&c->inflight)) != NULL) {
        if (r->internal)
            req_free(r);
        else
            complete(c, r, WSC_E_CLOSED, NULL, "the client was closed before the broker answered");
    }
    fail_queued(c, WSC_E_CLOSED, "the client was closed before the request was sent", true);
    wsc__subs_free(&c->subs);
}
