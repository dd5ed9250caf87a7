/*
 * pubsub.c - the /ws endpoint: hello, subscribe, unsubscribe, publish and
 * ping (PROTOCOL.md section 2), and local fan-out of published frames.
 *
 * Subscriptions are indexed both ways (redis pubsub style): pattern ->
 * subscriptions in the worker's table, for delivery, and connection ->
 * subscriptions, so closing a connection touches only its own.
 */
#include "pubsub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wsproto/msg.h>
#include <wsproto/topic.h>

#include "log.h"
#include "registry.h"

typedef struct lpat {
    link_t subs; /* sub_t.by_pattern */
    uint32_t n;
    bool wildcard;
    size_t len;
    char pattern[];
} lpat_t;

typedef struct sub {
    link_t by_pattern;
    link_t by_conn;
    conn_t *c;
    lpat_t *p;
    /* Concrete topics: messages with seq <= after_seq predate the
     * subscription's ack and are not delivered on it. */
    uint64_t after_seq;
} sub_t;

/* ---- Replies. ---- */

static void send_text(conn_t *c, frame_t *f, size_t n)
{
    frame_seal(f, WS_OP_TEXT, n);
    conn_send(c, f);
}

static void reply_error(conn_t *c, msg_span_t id, const char *code, const char *message)
{
    size_t cap = msg_error_bound(id, code, message);
    frame_t *f = frame_new(cap, 0);
    if (f == NULL) {
        conn_abort(c);
        return;
    }
    send_text(c, f, msg_encode_error((char *)frame_payload(f), cap, id, code, message));
}

static void reply_ack(conn_t *c, const msg_ack_t *ack)
{
    if (ack->id.len == 0)
        return; /* success without an id is silent */
    size_t cap = msg_ack_bound(ack);
    frame_t *f = frame_new(cap, 0);
    if (f == NULL) {
        conn_abort(c);
        return;
    }
    send_text(c, f, msg_encode_ack((char *)frame_payload(f), cap, ack));
}

void pubsub_open(conn_t *c)
{
    wrk_t *w = c->w;
    char client[32], buf[256];
    link_init(&c->subs);
    snprintf(client, sizeof(client), "%d-%llu", w->id, (unsigned long long)c->id);
    size_t n = msg_encode_hello(buf, sizeof(buf), client, "wsbroker/" WSBROKER_VERSION,
                                w->cfg->ping_interval, w->cfg->max_message);
    conn_send(c, frame_make(WS_OP_TEXT, buf, n));
}

/* ---- Subscription table. ---- */

static sub_t *find_sub(conn_t *c, const char *pattern, size_t len)
{
    for (link_t *l = c->subs.next; l != &c->subs; l = l->next) {
        sub_t *s = link_entry(l, sub_t, by_conn);
        if (s->p->len == len && memcmp(s->p->pattern, pattern, len) == 0)
            return s;
    }
    return NULL;
}

static sub_t *add_sub(conn_t *c, const char *pattern, size_t len, bool wildcard)
{
    wrk_t *w = c->w;
    sub_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    lpat_t *p = ptable_get(&w->subs, pattern, len);
    if (p == NULL) {
        p = malloc(sizeof(*p) + len + 1);
        if (p == NULL) {
            free(s);
            return NULL;
        }
        link_init(&p->subs);
        p->n = 0;
        p->wildcard = wildcard;
        p->len = len;
        memcpy(p->pattern, pattern, len);
        p->pattern[len] = '\0';
        if (ptable_put(&w->subs, p->pattern, len, wildcard, p) != 0) {
            free(p);
            free(s);
            return NULL;
        }
        /* Local first, then the registry: once publishers see our
         * interest, the table must already route to this connection. */
        if (reg_interest(w->b->reg, w->id, p->pattern, len, wildcard, true) != 0) {
            ptable_remove(&w->subs, p->pattern, len, wildcard);
            free(p);
            free(s);
            return NULL;
        }
    }
    s->c = c;
    s->p = p;
    link_insert_tail(&p->subs, &s->by_pattern);
    p->n++;
    link_insert_tail(&c->subs, &s->by_conn);
    c->nsubs++;
    STAT_ADD(&w->stats, subscriptions, 1);
    return s;
}

static void remove_sub(wrk_t *w, sub_t *s)
{
    lpat_t *p = s->p;
    link_remove(&s->by_pattern);
    link_remove(&s->by_conn);
    s->c->nsubs--;
    STAT_SUB(&w->stats, subscriptions, 1);
    free(s);
    if (--p->n == 0) {
        ptable_remove(&w->subs, p->pattern, p->len, p->wildcard);
        reg_interest(w->b->reg, w->id, p->pattern, p->len, p->wildcard, false);
        free(p);
    }
}

void pubsub_unsubscribe_all(conn_t *c)
{
    if (c->subs.next == NULL)
        return; /* never opened as /ws */
    while (!link_empty(&c->subs))
        remove_sub(c->w, link_entry(c->subs.next, sub_t, by_conn));
}

/* ---- Ops. ---- */

static bool check_topic(conn_t *c, const msg_request_t *req, bool pattern)
{
    int te = topic_check(req->topic.p, req->topic.len, pattern);
    if (te == TOPIC_OK)
        return true;
    reply_error(c, req->id, "bad_topic", topic_strerror(te));
    return false;
}

static void do_subscribe(conn_t *c, const msg_request_t *req)
{
    wrk_t *w = c->w;
    if (!check_topic(c, req, true))
        return;
    const char *t = req->topic.p;
    size_t tlen = req->topic.len;
    bool wildcard = topic_is_pattern(t, tlen);
    if (req->has_since && wildcard) {
        reply_error(c, req->id, "bad_request", "\"since\" needs a concrete topic, not a pattern");
        return;
    }
    sub_t *s = find_sub(c, t, tlen);
    bool created = false;
    if (s == NULL) {
        if (c->nsubs >= w->cfg->max_subscriptions) {
            char msg[96];
            snprintf(msg, sizeof(msg), "at most %u subscriptions per connection",
                     w->cfg->max_subscriptions);
            reply_error(c, req->id, "too_many_subscriptions", msg);
            return;
        }
        s = add_sub(c, t, tlen, wildcard);
        if (s == NULL) {
            conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
            return;
        }
        created = true;
    }
    msg_ack_t ack = {.id = req->id, .recovered = -1};
    if (!wildcard) {
        /* Read after the interest is registered: every later seq reaches
         * this connection, every earlier one is filtered out. */
        uint64_t seq = reg_topic_seq(w->b->reg, t, tlen);
        if (created)
            s->after_seq = seq;
        ack.has_seq = true;
        ack.seq = seq;
        ack.epoch = reg_epoch(w->b->reg);
        if (req->has_since) {
            /* No retained history: recovery succeeds only when nothing was
             * published since the client's last seq in this epoch. */
            bool same_epoch =
                !req->has_epoch || (req->epoch.len == strlen(ack.epoch) &&
                                    memcmp(req->epoch.p, ack.epoch, req->epoch.len) == 0);
            ack.recovered = same_epoch && req->since == seq;
        }
    }
    LOG(LOG_DEBUG, w->id, c->id, "subscribe", "topic=%.*s", (int)tlen, t);
    reply_ack(c, &ack);
}

static void do_unsubscribe(conn_t *c, const msg_request_t *req)
{
    if (!check_topic(c, req, true))
        return;
    sub_t *s = find_sub(c, req->topic.p, req->topic.len);
    if (s == NULL) {
        reply_error(c, req->id, "not_subscribed", "no subscription to this pattern");
        return;
    }
    remove_sub(c->w, s);
    msg_ack_t ack = {.id = req->id, .recovered = -1};
    reply_ack(c, &ack);
}

static void do_publish(conn_t *c, const msg_request_t *req)
{
    wrk_t *w = c->w;
    if (!check_topic(c, req, false))
        return;
    uint64_t targets;
    uint64_t seq =
        reg_publish(w->b->reg, req->topic.p, req->topic.len, req->data.p, req->data.len, &targets);
    if (seq == 0) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    STAT_ADD(&w->stats, published, 1);
    msg_ack_t ack = {.id = req->id,
                     .topic = req->topic.p,
                     .topic_len = req->topic.len,
                     .has_seq = true,
                     .seq = seq,
                     .recovered = -1};
    reply_ack(c, &ack);
    /* Backpressure across workers: hold this publisher back while a worker
     * its message went to has more queued than it can take. */
    if (atomic_load_explicit(&w->b->congested, memory_order_relaxed) & targets)
        conn_throttle(c, targets);
}

static void do_ping(conn_t *c, const msg_request_t *req)
{
    size_t cap = req->id.len + 32; /* {"op":"pong","id":...} */
    frame_t *f = frame_new(cap, 0);
    if (f == NULL) {
        conn_abort(c);
        return;
    }
    send_text(c, f, msg_encode_pong((char *)frame_payload(f), cap, req->id));
}

void pubsub_message(conn_t *c, const uint8_t *data, size_t len)
{
    msg_request_t req;
    const char *why = NULL;
    int rc = msg_parse((const char *)data, len, &req, &why);
    if (rc != MSG_OK) {
        msg_span_t no_id = {NULL, 0};
        reply_error(c, rc == MSG_E_BAD_JSON ? no_id : req.id, msg_err_code(rc),
                    why ? why : "invalid request");
        return;
    }
    switch (req.op) {
    case MSG_OP_SUBSCRIBE:
        do_subscribe(c, &req);
        break;
    case MSG_OP_UNSUBSCRIBE:
        do_unsubscribe(c, &req);
        break;
    case MSG_OP_PUBLISH:
        do_publish(c, &req);
        break;
    case MSG_OP_PING:
        do_ping(c, &req);
        break;
    }
}

/* ---- Fan-out. ---- */

typedef struct deliver_ctx {
    wrk_t *w;
    frame_t *f;
    unsigned queued;
} deliver_ctx_t;

static void deliver_pattern(void *value, void *arg)
{
    lpat_t *p = value;
    deliver_ctx_t *d = arg;
    uint64_t stamp = d->w->stamp;
    for (link_t *l = p->subs.next; l != &p->subs; l = l->next) {
        sub_t *s = link_entry(l, sub_t, by_pattern);
        conn_t *c = s->c;
        if (c->stamp == stamp || (!p->wildcard && d->f->seq <= s->after_seq))
            continue;
        c->stamp = stamp;
        if (conn_deliver(c, d->f))
            d->queued++;
    }
}

void pubsub_deliver(wrk_t *w, frame_t *f)
{
    deliver_ctx_t d = {w, f, 0};
    w->stamp++;
    ptable_match(&w->subs, f->topic, f->topic_len, deliver_pattern, &d);
    if (d.queued > 0) {
        frame_ref_n(f, d.queued);
        STAT_ADD(&w->stats, delivered, d.queued);
    }
    frame_unref(f);
}
