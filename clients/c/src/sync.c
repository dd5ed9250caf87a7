/*
 * sync.c - blocking helpers: a client on a private loop that each call
 * runs until its answer arrives or its timeout passes.
 *
 * Messages arriving while a call waits are copied into a bounded queue for
 * wsc_sync_next. A request whose wait timed out stays with the client; its
 * late answer lands in a heap "waiter" marked abandoned and is discarded,
 * so nothing the callback touches lives on a returned stack frame.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

#define SYNC_QUEUE_MAX 10000

typedef struct qmsg {
    struct qmsg *next;
    uint64_t seq;
    size_t data_off, data_len, raw_len;
    char *topic; /* points into buf, after the raw text */
    char buf[];
} qmsg_t;

typedef struct waiter {
    bool done, abandoned;
    int err;
    bool has_seq;
    uint64_t seq;
    int recovered;
    char code[32];
    char message[WSC_ERRLEN];
    char epoch[MSG_EPOCH_MAX + 1];
} waiter_t;

struct wsc_sync {
    uv_loop_t loop;
    uv_timer_t timer;
    bool timed_out;
    wsc_client_t *c;
    wsc_options_t user; /* the caller's options: on_error, on_stale, user */
    bool open, closed;
    int state_err;
    char state_detail[WSC_ERRLEN + 64];
    qmsg_t *head, *tail;
    size_t count;
    uint64_t dropped;
    qmsg_t *cur; /* returned by the last wsc_sync_next */
    char errbuf[WSC_ERRLEN + 64];
    waiter_t res; /* storage behind the last wsc_result_t */
    char topic[TOPIC_MAX + 1];
};

static void on_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail, void *user)
{
    wsc_sync_t *s = user;
    (void)c;
    s->open = st == WSC_OPEN;
    if (st == WSC_CLOSED)
        s->closed = true;
    if (st != WSC_OPEN) {
        s->state_err = err;
        snprintf(s->state_detail, sizeof(s->state_detail), "%s", detail);
    }
}

static void on_message(wsc_client_t *c, const wsc_message_t *m, void *user)
{
    wsc_sync_t *s = user;
    size_t tlen = strlen(m->topic);
    (void)c;
    if (s->count >= SYNC_QUEUE_MAX) {
        s->dropped++;
        return;
    }
    qmsg_t *q = malloc(sizeof(*q) + m->raw_len + tlen + 2);
    if (q == NULL) {
        s->dropped++;
        return;
    }
    q->next = NULL;
    q->seq = m->seq;
    memcpy(q->buf, m->raw, m->raw_len);
    q->buf[m->raw_len] = '\0';
    q->raw_len = m->raw_len;
    q->data_off = m->data_len > 0 ? (size_t)(m->data - m->raw) : 0;
    q->data_len = m->data_len;
    q->topic = q->buf + m->raw_len + 1;
    memcpy(q->topic, m->topic, tlen + 1);
    if (s->tail != NULL)
        s->tail->next = q;
    else
        s->head = q;
    s->tail = q;
    s->count++;
}

static void on_error(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    wsc_sync_t *s = user;
    if (s->user.on_error != NULL)
        s->user.on_error(c, r, s->user.user);
}

static void on_stale(wsc_client_t *c, const wsc_stale_t *st, void *user)
{
    wsc_sync_t *s = user;
    if (s->user.on_stale != NULL)
        s->user.on_stale(c, st, s->user.user);
}

static const char *on_token(wsc_client_t *c, void *user)
{
    wsc_sync_t *s = user;
    return s->user.token_cb(c, s->user.user);
}

static void on_timeout(uv_timer_t *t)
{
    wsc_sync_t *s = t->data;
    s->timed_out = true;
    uv_stop(&s->loop);
}

typedef bool (*cond_fn)(wsc_sync_t *s, void *arg);

/* Run the loop until cond holds or timeout_ms passes (< 0: no limit).
 * Returns whether cond holds. */
static bool run_until(wsc_sync_t *s, cond_fn cond, void *arg, int timeout_ms)
{
    if (cond(s, arg))
        return true;
    if (timeout_ms == 0) {
        uv_run(&s->loop, UV_RUN_NOWAIT);
        return cond(s, arg);
    }
    s->timed_out = false;
    if (timeout_ms > 0)
        uv_timer_start(&s->timer, on_timeout, (uint64_t)timeout_ms, 0);
    while (!cond(s, arg) && !s->timed_out) {
        if (uv_run(&s->loop, UV_RUN_ONCE) == 0 && !cond(s, arg))
            break;
    }
    uv_timer_stop(&s->timer);
    return cond(s, arg);
}

static bool open_or_closed(wsc_sync_t *s, void *arg)
{
    (void)arg;
    return s->open || s->closed;
}

static bool have_message(wsc_sync_t *s, void *arg)
{
    (void)arg;
    return s->head != NULL || s->closed;
}

static bool waiter_done(wsc_sync_t *s, void *arg)
{
    (void)s;
    return ((waiter_t *)arg)->done;
}

static void free_sync(wsc_sync_t *s)
{
    if (s->c != NULL)
        wsc_close(s->c);
    uv_close((uv_handle_t *)&s->timer, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    free(s->cur);
    while (s->head != NULL) {
        qmsg_t *q = s->head;
        s->head = q->next;
        free(q);
    }
    free(s);
}

wsc_sync_t *wsc_sync_connect(const char *url, const wsc_options_t *opts, int timeout_ms,
                             wsc_error_t *err)
{
    wsc_options_t o;
    wsc_error_t local;
    if (err == NULL)
        err = &local;
    err->code = WSC_OK;
    err->text[0] = '\0';
    wsc_sync_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        err->code = WSC_E_NOMEM;
        snprintf(err->text, sizeof(err->text), "out of memory");
        return NULL;
    }
    if (opts != NULL)
        s->user = *opts;
    else
        wsc_options_init(&s->user);
    o = s->user;
    o.on_state = on_state;
    o.on_message = on_message;
    o.on_error = on_error;
    o.on_stale = on_stale;
    o.token_cb = s->user.token_cb != NULL ? on_token : NULL;
    o.user = s;
    int r = uv_loop_init(&s->loop);
    if (r < 0) {
        free(s);
        err->code = WSC_E_NOMEM;
        snprintf(err->text, sizeof(err->text), "event loop: %s", uv_strerror(r));
        return NULL;
    }
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    s->c = wsc_connect(&s->loop, url, &o, err);
    if (s->c == NULL) {
        free_sync(s);
        return NULL;
    }
    if (!run_until(s, open_or_closed, NULL, timeout_ms) || !s->open) {
        if (s->closed) {
            err->code = s->state_err;
            snprintf(err->text, sizeof(err->text), "%.250s", s->state_detail);
        } else {
            err->code = WSC_E_TIMEOUT;
            snprintf(err->text, sizeof(err->text), "not connected to %.80s within %d ms%s%.120s%s",
                     url, timeout_ms, s->state_detail[0] ? " (last error: " : "", s->state_detail,
                     s->state_detail[0] ? ")" : "");
        }
        free_sync(s);
        return NULL;
    }
    return s;
}

static void on_result(wsc_client_t *c, const wsc_result_t *r, void *user)
{
    waiter_t *w = user;
    (void)c;
    if (w->abandoned) {
        free(w);
        return;
    }
    w->done = true;
    w->err = r->err;
    w->has_seq = r->has_seq;
    w->seq = r->seq;
    w->recovered = r->recovered;
    snprintf(w->code, sizeof(w->code), "%s", r->code);
    snprintf(w->message, sizeof(w->message), "%s", r->message);
    snprintf(w->epoch, sizeof(w->epoch), "%s", r->epoch);
}

/* Wait for the answer of a request started with waiter w (rc is what the
 * starting call returned) and fill *r. */
static int finish(wsc_sync_t *s, waiter_t *w, int rc, const char *topic, int timeout_ms,
                  wsc_result_t *r)
{
    snprintf(s->topic, sizeof(s->topic), "%s", topic != NULL ? topic : "");
    memset(&s->res, 0, sizeof(s->res));
    s->res.recovered = -1;
    if (rc != WSC_OK) {
        s->res.err = rc;
        snprintf(s->res.message, sizeof(s->res.message), "%s",
                 w == NULL ? "out of memory" : wsc_last_error(s->c));
        free(w);
    } else if (!run_until(s, waiter_done, w, timeout_ms)) {
        w->abandoned = true;
        s->res.err = WSC_E_TIMEOUT;
        snprintf(s->res.message, sizeof(s->res.message), "no answer from the broker within %d ms",
                 timeout_ms);
    } else {
        s->res = *w;
        free(w);
    }
    if (s->res.err == WSC_E_BROKER)
        snprintf(s->errbuf, sizeof(s->errbuf), "%s: %s", s->res.code, s->res.message);
    else if (s->res.err != WSC_OK)
        snprintf(s->errbuf, sizeof(s->errbuf), "%s",
                 s->res.message[0] ? s->res.message : wsc_strerror(s->res.err));
    if (r != NULL) {
        r->err = s->res.err;
        r->code = s->res.code;
        r->message = s->res.message;
        r->topic = s->topic;
        r->has_seq = s->res.has_seq;
        r->seq = s->res.seq;
        r->epoch = s->res.epoch;
        r->recovered = s->res.recovered;
    }
    return s->res.err;
}

int wsc_sync_subscribe(wsc_sync_t *s, const char *pattern, const wsc_sub_opts_t *opts,
                       int timeout_ms, wsc_result_t *r)
{
    waiter_t *w = calloc(1, sizeof(*w));
    s->errbuf[0] = '\0';
    int rc = w == NULL ? WSC_E_NOMEM : wsc_subscribe(s->c, pattern, opts, on_result, w);
    return finish(s, w, rc, pattern, timeout_ms, r);
}

int wsc_sync_unsubscribe(wsc_sync_t *s, const char *pattern, int timeout_ms, wsc_result_t *r)
{
    waiter_t *w = calloc(1, sizeof(*w));
    s->errbuf[0] = '\0';
    int rc = w == NULL ? WSC_E_NOMEM : wsc_unsubscribe(s->c, pattern, on_result, w);
    return finish(s, w, rc, pattern, timeout_ms, r);
}

int wsc_sync_publish(wsc_sync_t *s, const char *topic, const char *data, size_t len, int timeout_ms,
                     wsc_result_t *r)
{
    waiter_t *w = calloc(1, sizeof(*w));
    s->errbuf[0] = '\0';
    int rc = w == NULL ? WSC_E_NOMEM : wsc_publish(s->c, topic, data, len, on_result, w);
    return finish(s, w, rc, topic, timeout_ms, r);
}

int wsc_sync_next(wsc_sync_t *s, int timeout_ms, wsc_message_t *m)
{
    s->errbuf[0] = '\0';
    free(s->cur);
    s->cur = NULL;
    run_until(s, have_message, NULL, timeout_ms);
    if (s->head == NULL) {
        if (s->closed) {
            snprintf(s->errbuf, sizeof(s->errbuf), "connection closed: %.250s", s->state_detail);
            return WSC_E_CLOSED;
        }
        snprintf(s->errbuf, sizeof(s->errbuf), "no message within %d ms", timeout_ms);
        return WSC_E_TIMEOUT;
    }
    qmsg_t *q = s->head;
    s->head = q->next;
    if (s->head == NULL)
        s->tail = NULL;
    s->count--;
    s->cur = q;
    m->topic = q->topic;
    m->seq = q->seq;
    m->data = q->buf + q->data_off;
    m->data_len = q->data_len;
    m->raw = q->buf;
    m->raw_len = q->raw_len;
    return WSC_OK;
}

uint64_t wsc_sync_dropped(const wsc_sync_t *s)
{
    return s->dropped;
}

const char *wsc_sync_error(const wsc_sync_t *s)
{
    return s->errbuf;
}

wsc_client_t *wsc_sync_client(wsc_sync_t *s)
{
    return s->c;
}

void wsc_sync_close(wsc_sync_t *s)
{
    if (s != NULL)
        free_sync(s);
}
