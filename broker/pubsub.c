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
#include <time.h>

#include <wsproto/msg.h>
#include <wsproto/topic.h>

#include "auth.h"
#include "cluster.h"
#include "log.h"
#include "registry.h"

typedef struct lpat {
    link_t subs; /* sub_t.by_pattern */
    uint32_t n;
    bool wildcard;
    size_t len;
    char pattern[];
} lpat_t;

typedef struct rfilter rfilter_t;

typedef struct sub {
    link_t by_pattern;
    link_t by_conn;
    conn_t *c;
    lpat_t *p;
    /* Concrete topics: messages with seq <= after_seq predate the
     * subscription's ack and are not delivered on it. */
    uint64_t after_seq;
    /* Wildcard subscriptions that replayed history: the same, per topic,
     * until the inbox has been drained once (see rfilter_t). */
    rfilter_t *filter;
    /* Cluster mode: the subscription waits for its snapshot from Redis;
     * messages for it are held until then (see pubsub_control). */
    struct hold *hold;
} sub_t;

typedef struct hold {
    uint64_t token; /* names the subscription in the link's answers */
    frame_t **f;
    uint32_t n, cap;
    bool overflow; /* more arrived than it may hold: the client must retry */
} hold_t;

#define HOLD_MAX 65536

/* A wildcard subscription that replayed topics' history must not get the
 * frames of those topics up to the replay's snapshot a second time from
 * the inbox. Every such frame was already in the inbox when the snapshot
 * was taken (posting and the snapshot take the same lock), so the filter
 * is needed only until the next inbox drain has run. */
typedef struct rf_entry {
    uint64_t seq;
    size_t len;
    char topic[];
} rf_entry_t;

struct rfilter {
    link_t link;  /* w->filters, unless it lives on (cluster mode) */
    uint64_t gen; /* needed until drain number gen has run */
    sub_t *s;
    smap_t seqs; /* topic -> rf_entry_t */
};

/* In cluster mode the replay comes from Redis and live messages from
 * Redis's pub/sub on another connection: one of a topic's frames up to the
 * snapshot may come late, so an entry stays until a later seq of its topic
 * has passed (per-topic order holds on that connection). */

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

static void remove_sub(wrk_t *w, sub_t *s);

/* ---- Session. ---- */

struct expiry {
    uv_timer_t timer;
    conn_t *c; /* NULL once the connection has gone */
};

static void on_expiry_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_token_expired(uv_timer_t *t)
{
    struct expiry *e = t->data;
    conn_t *c = e->c;
    if (c == NULL || c->state != CONN_OPEN)
        return;
    STAT_ADD(&c->w->stats, tokens_expired, 1);
    LOG(LOG_INFO, c->w->id, c->id, "token_expired", "sub=\"%s\"", auth_subject(conn_auth(c)));
    conn_close(c, WS_CLOSE_POLICY, "token expired", false);
}

void pubsub_close(conn_t *c)
{
    conn_x_t *x = c->x;
    if (x != NULL && x->expiry != NULL) {
        x->expiry->c = NULL;
        uv_close((uv_handle_t *)&x->expiry->timer, on_expiry_closed);
        x->expiry = NULL;
    }
    if (x != NULL) {
        auth_free(x->auth);
        x->auth = NULL;
    }
    if (c->subs.next == NULL)
        return; /* never opened as /ws */
    while (!link_empty(&c->subs))
        remove_sub(c->w, link_entry(c->subs.next, sub_t, by_conn));
}

void pubsub_open(conn_t *c)
{
    wrk_t *w = c->w;
    char client[32], buf[256];
    link_init(&c->subs);
    if (w->cfg->rate_limit > 0) {
        if (conn_x(c) == NULL) {
            conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
            return;
        }
        lim_rate_init(&c->x->rate, w->cfg->rate_burst, wrk_now(w));
    }
    int64_t exp = conn_auth(c) ? auth_expires(c->x->auth) : 0;
    if (exp > 0) {
        struct expiry *e = malloc(sizeof(*e));
        if (e == NULL) {
            conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
            return;
        }
        e->c = c;
        uv_timer_init(&w->loop, &e->timer);
        e->timer.data = e;
        c->x->expiry = e;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t left_ms = exp * 1000 - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        uv_timer_start(&e->timer, on_token_expired, left_ms > 0 ? (uint64_t)left_ms : 0, 0);
    }
    /* "<worker>-<connection>", unique in the process (no snprintf: it was
     * a visible share of a handshake's CPU). */
    size_t k = msg_u64(client, (uint64_t)w->id);
    client[k++] = '-';
    client[k + msg_u64(client + k, c->id)] = '\0';
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

static void hold_free(hold_t *h)
{
    if (h == NULL)
        return;
    for (uint32_t i = 0; i < h->n; i++)
        frame_unref(h->f[i]);
    free(h->f);
    free(h);
}

static void rfilter_free(rfilter_t *f)
{
    if (f == NULL)
        return;
    link_remove(&f->link);
    for (size_t i = 0; i < f->seqs.cap; i++)
        if (f->seqs.slots[i].hash != 0)
            free(f->seqs.slots[i].value);
    smap_destroy(&f->seqs);
    f->s->filter = NULL;
    free(f);
}

void pubsub_drained(wrk_t *w, uint64_t gen)
{
    link_t *l;
    while ((l = link_first(&w->filters)) != NULL) {
        rfilter_t *f = link_entry(l, rfilter_t, link);
        if (f->gen > gen)
            break; /* in creation order: the rest are newer */
        rfilter_free(f);
    }
}

static void remove_sub(wrk_t *w, sub_t *s)
{
    lpat_t *p = s->p;
    rfilter_free(s->filter);
    hold_free(s->hold);
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

/* ---- Ops. ---- */

static bool check_topic(conn_t *c, const msg_request_t *req, bool pattern)
{
    int te = topic_check(req->topic.p, req->topic.len, pattern);
    if (te == TOPIC_OK)
        return true;
    reply_error(c, req->id, "bad_topic", topic_strerror(te));
    return false;
}

/* --rate-limit: true if c may publish now; otherwise the error is sent,
 * and a connection that keeps going over the limit (refused at least once
 * a second) for RATE_CLOSE_MS is closed. */
#define RATE_CLOSE_MS 5000

static bool rate_ok(conn_t *c, const msg_request_t *req)
{
    wrk_t *w = c->w;
    const cfg_t *cfg = w->cfg;
    if (cfg->rate_limit <= 0)
        return true;
    uint64_t now = wrk_now(w);
    if (lim_rate_take(&c->x->rate, cfg->rate_limit, cfg->rate_burst, now))
        return true;
    STAT_ADD(&w->stats, rate_limited, 1);
    if (lim_rate_refused(&c->x->rate, now) >= RATE_CLOSE_MS) {
        STAT_ADD(&w->stats, rate_closes, 1);
        LOG_LIMITED(LOG_INFO, w->id, c->id, "rate_limit_close", "rate=%g burst=%g", cfg->rate_limit,
                    cfg->rate_burst);
        conn_close(c, WS_CLOSE_POLICY, "rate limit exceeded", false);
        return false;
    }
    reply_error(c, req->id, "rate_limited", "publishing faster than the broker's --rate-limit");
    return false;
}

static bool forbidden(conn_t *c, const msg_request_t *req, bool publish)
{
    struct auth *a = conn_auth(c);
    if (a == NULL)
        return false;
    bool ok = publish ? auth_may_publish(a, req->topic.p, req->topic.len)
                      : auth_may_subscribe(a, req->topic.p, req->topic.len);
    if (ok)
        return false;
    STAT_ADD(&c->w->stats, forbidden, 1);
    LOG(LOG_DEBUG, c->w->id, c->id, "forbidden", "sub=\"%s\" op=%s topic=%.*s", auth_subject(a),
        publish ? "publish" : "subscribe", (int)req->topic.len, req->topic.p);
    reply_error(c, req->id, "forbidden",
                publish ? "the token does not allow publishing to this topic"
                        : "the token does not allow subscribing to this pattern");
    return true;
}

/* Queue retained frames (references owned by the caller's array) on c. */
static void replay(conn_t *c, frame_t **frames, size_t n)
{
    unsigned queued = 0;
    for (size_t i = 0; i < n; i++) {
        conn_dlv_t how = conn_deliver(c, frames[i]);
        queued += how != DLV_NONE;
        switch (how) {
        case DLV_SAME:
            frames[i] = NULL; /* the output ring holds this reference now */
            break;
        case DLV_TWIN:
            frame_ref(atomic_load(&frames[i]->twin));
            break;
        case DLV_OWN:
        case DLV_NONE:
            break;
        }
    }
    STAT_ADD(&c->w->stats, replayed, queued);
}

typedef struct pattern_replay {
    conn_t *c;
    sub_t *s;
    int failed;
} pattern_replay_t;

/* Record that s has had topic's messages up to seq. Returns 0, or -1 on
 * ENOMEM. until_drain: the local registry's guarantee (see rfilter_t). */
static int rfilter_note(wrk_t *w, sub_t *s, const char *topic, size_t tlen, uint64_t seq,
                        bool until_drain)
{
    if (s->filter == NULL) {
        s->filter = calloc(1, sizeof(*s->filter));
        if (s->filter == NULL)
            return -1;
        s->filter->s = s;
        s->filter->gen = w->drains;
        smap_init(&s->filter->seqs);
        if (until_drain)
            link_insert_tail(&w->filters, &s->filter->link);
    }
    rf_entry_t *e = smap_get(&s->filter->seqs, topic, tlen);
    if (e != NULL) {
        if (seq > e->seq)
            e->seq = seq;
        return 0;
    }
    e = malloc(sizeof(*e) + tlen + 1);
    if (e == NULL)
        return -1;
    e->seq = seq;
    e->len = tlen;
    memcpy(e->topic, topic, tlen);
    e->topic[tlen] = '\0';
    if (smap_put(&s->filter->seqs, e->topic, tlen, e) != 0) {
        free(e);
        return -1;
    }
    return 0;
}

/* Whether s must skip f (replayed already). In cluster mode an entry goes
 * once a later seq of its topic passes. */
static bool rfilter_skip(sub_t *s, const frame_t *f)
{
    rf_entry_t *e = smap_get(&s->filter->seqs, f->topic, f->topic_len);
    if (e == NULL)
        return false;
    if (f->seq <= e->seq)
        return true;
    if (!link_linked(&s->filter->link))
        free(smap_del(&s->filter->seqs, f->topic, f->topic_len));
    return false;
}

static void replay_topic(void *arg, uint64_t seq, frame_t **frames, size_t n)
{
    pattern_replay_t *pr = arg;
    sub_t *s = pr->s;
    if (pr->failed ||
        rfilter_note(pr->c->w, s, frames[0]->topic, frames[0]->topic_len, seq, true) != 0) {
        /* Without a filter entry the replay could be followed by
         * duplicates: replay nothing of this topic instead. */
        pr->failed = 1;
    } else {
        replay(pr->c, frames, n);
    }
    for (size_t i = 0; i < n; i++)
        if (frames[i] != NULL)
            frame_unref(frames[i]);
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
    if (forbidden(c, req, false))
        return;
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
    LOG(LOG_DEBUG, w->id, c->id, "subscribe", "topic=%.*s", (int)tlen, t);
    if (w->b->cluster != NULL) {
        /* The link answers once Redis has the node subscribed; until then a
         * new subscription holds what arrives for it. */
        uint64_t token = 0;
        if (created) {
            s->hold = calloc(1, sizeof(*s->hold));
            if (s->hold == NULL) {
                remove_sub(w, s);
                conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
                return;
            }
            token = s->hold->token = ++w->next_token;
        }
        cl_sub_req_t r = {.pattern = t,
                          .plen = tlen,
                          .wildcard = wildcard,
                          .id = req->id,
                          .token = token,
                          .has_since = req->has_since,
                          .since = req->since,
                          .epoch = req->has_epoch ? req->epoch.p : NULL,
                          .epoch_len = req->epoch.len,
                          .last = created && req->has_last ? (int64_t)req->last : -1};
        cl_subscribe(w->b->cluster, w->id, c->id, &r);
        return;
    }
    if (wildcard) {
        reply_ack(c, &ack);
        if (created && req->has_last && req->last > 0 && c->state == CONN_OPEN) {
            pattern_replay_t pr = {c, s, 0};
            if (reg_replay_pattern(w->b->reg, t, tlen, req->last, replay_topic, &pr) != 0)
                conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
            conn_settle(w);
        }
        return;
    }
    /* The snapshot is taken after the interest is registered: every later
     * seq reaches this connection, every earlier one is filtered out. */
    reg_sub_t rs = {.has_since = req->has_since,
                    .since = req->since,
                    .epoch = req->has_epoch ? req->epoch.p : NULL,
                    .epoch_len = req->epoch.len,
                    .last = req->has_last ? (int64_t)req->last : -1};
    if (reg_subscribe(w->b->reg, t, tlen, &rs) != 0) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    ack.has_seq = true;
    ack.seq = rs.seq;
    ack.epoch = rs.topic_epoch;
    if (req->has_since)
        ack.recovered = created ? rs.recovered : rs.recovered && rs.nframes == 0;
    reply_ack(c, &ack);
    if (created) {
        /* An existing subscription is live already: nothing to replay. */
        s->after_seq = rs.seq;
        if (c->state == CONN_OPEN)
            replay(c, rs.frames, rs.nframes);
    }
    reg_sub_release(&rs);
    conn_settle(w);
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
    /* Publishes acknowledged before this request are c's: deliver them
     * first (they may be waiting in the inbox). */
    wrk_drain_inbox(c->w);
    if (c->state != CONN_OPEN)
        return; /* closed as slow by that delivery */
    remove_sub(c->w, s);
    msg_ack_t ack = {.id = req->id, .recovered = -1};
    reply_ack(c, &ack);
}

static void do_publish(conn_t *c, const msg_request_t *req)
{
    wrk_t *w = c->w;
    if (!check_topic(c, req, false) || forbidden(c, req, true) || !rate_ok(c, req))
        return;
    if (w->b->cluster != NULL) {
        /* Through Redis; the ack comes back with the cluster's seq. */
        cl_publish(w->b->cluster, w->id, c->id, req->id, req->topic.p, req->topic.len, req->data.p,
                   req->data.len);
        STAT_ADD(&w->stats, published, 1);
        return;
    }
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

/* ---- Cluster mode: answers of the Redis link. ---- */

static void hold_push(hold_t *h, frame_t *f)
{
    if (h->n == h->cap) {
        uint32_t ncap = h->cap ? h->cap * 2 : 16;
        frame_t **nf = ncap <= HOLD_MAX ? realloc(h->f, ncap * sizeof(*nf)) : NULL;
        if (nf == NULL) {
            h->overflow = true;
            return;
        }
        h->f = nf;
        h->cap = ncap;
    }
    h->f[h->n++] = frame_ref(f);
}

static sub_t *find_held(conn_t *c, uint64_t token)
{
    for (link_t *l = c->subs.next; l != &c->subs; l = l->next) {
        sub_t *s = link_entry(l, sub_t, by_conn);
        if (s->hold != NULL && s->hold->token == token)
            return s;
    }
    return NULL;
}

/* The subscription is live from seq on: what was held for it follows the
 * replay, minus what the replay already had. */
static void sub_ready(conn_t *c, sub_t *s, uint64_t seq)
{
    hold_t *h = s->hold;
    s->hold = NULL;
    if (!s->p->wildcard)
        s->after_seq = seq;
    if (h->overflow) {
        hold_free(h);
        conn_close(c, WS_CLOSE_TRY_AGAIN, "broker overloaded", false);
        return;
    }
    for (uint32_t i = 0; i < h->n; i++) {
        frame_t *f = h->f[i];
        bool skip = (!s->p->wildcard && f->seq <= s->after_seq) ||
                    (s->filter != NULL && rfilter_skip(s, f));
        conn_dlv_t how = skip || c->state != CONN_OPEN ? DLV_NONE : conn_deliver(c, f);
        if (how == DLV_SAME)
            continue; /* the ring took the hold's reference */
        if (how == DLV_TWIN)
            frame_ref(atomic_load(&f->twin));
        frame_unref(f);
    }
    h->n = 0;
    hold_free(h);
}

void pubsub_control(wrk_t *w, frame_t *f)
{
    conn_t *c = wrk_conn(w, f->to);
    if (c == NULL || c->state != CONN_OPEN || c->endpoint != EP_PUBSUB) {
        frame_unref(f);
        return;
    }
    sub_t *s = f->token != 0 ? find_held(c, f->token) : NULL;
    switch (f->kind) {
    case FK_DIRECT:
        if (f->topic == NULL) {
            conn_send(c, f); /* an ack or an error */
            break;
        }
        /* A replayed message; a wildcard subscription remembers how far
         * each topic's replay went. */
        if (s != NULL && s->p->wildcard &&
            rfilter_note(w, s, f->topic, f->topic_len, f->seq, false) != 0) {
            frame_unref(f);
            conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
            break;
        }
        replay(c, &f, 1);
        if (f != NULL)
            frame_unref(f);
        break;
    case FK_SUB_READY:
        if (s != NULL)
            sub_ready(c, s, f->seq);
        frame_unref(f);
        break;
    case FK_SUB_FAILED:
        if (s != NULL)
            remove_sub(w, s);
        frame_unref(f);
        break;
    }
    conn_settle(w);
}

/* ---- Fan-out. ---- */

typedef struct deliver_ctx {
    wrk_t *w;
    frame_t *f;
    uint64_t skip;            /* connections that have f already */
    unsigned same, twin, own; /* what conn_deliver queued, by kind */
} deliver_ctx_t;

static void deliver_pattern(void *value, void *arg)
{
    lpat_t *p = value;
    deliver_ctx_t *d = arg;
    uint64_t stamp = d->w->stamp;
    for (link_t *l = p->subs.next; l != &p->subs; l = l->next) {
        sub_t *s = link_entry(l, sub_t, by_pattern);
        conn_t *c = s->c;
        if (c->stamp == stamp || c->stamp == d->skip || (!p->wildcard && d->f->seq <= s->after_seq))
            continue;
        if (s->filter != NULL && rfilter_skip(s, d->f))
            continue; /* replayed already */
        c->stamp = stamp;
        if (s->hold != NULL) {
            hold_push(s->hold, d->f);
            continue;
        }
        switch (conn_deliver(c, d->f)) {
        case DLV_SAME:
            d->same++;
            break;
        case DLV_TWIN:
            d->twin++;
            break;
        case DLV_OWN:
            d->own++;
            break;
        case DLV_NONE:
            break;
        }
    }
}

/* f to the subscribers of its topic, except connections stamped skip. */
static void deliver_except(wrk_t *w, frame_t *f, uint64_t skip)
{
    deliver_ctx_t d = {w, f, skip, 0, 0, 0};
    w->stamp++;
    ptable_match(&w->subs, f->topic, f->topic_len, deliver_pattern, &d);
    /* References in bulk: one atomic add per frame, not per subscriber. */
    if (d.same > 0)
        frame_ref_n(f, d.same);
    if (d.twin > 0)
        frame_ref_n(atomic_load(&f->twin), d.twin);
    STAT_ADD(&w->stats, delivered, d.same + d.twin + d.own);
    frame_unref(f);
}

void pubsub_deliver(wrk_t *w, frame_t *f)
{
    deliver_except(w, f, UINT64_MAX); /* no stamp is that */
}

/* A run: consecutive messages of one topic, queued as one joined frame on
 * every connection that would queue each of them as it is. Those are the
 * connections whose first matching subscription (the one that takes each
 * message in deliver_pattern) is live, unfiltered and past its after_seq
 * for the whole run, and that conn_takes_as_is. Any other connection (held
 * or filtered subscription, a seq boundary inside the run, compression, a
 * backlog) is stamped `apart` and gets the messages one by one afterwards,
 * exactly as pubsub_deliver would have queued them. The joined frame is
 * made for the first connection that takes it: none, none made. */
typedef struct run_ctx {
    frame_t *const *f;      /* the run, in seq order */
    size_t n, len;          /* its frames and their bytes */
    frame_t *all;           /* frame_join of the run, once needed */
    uint64_t joined, apart; /* stamps: took `all`; one by one */
    unsigned took, left;
} run_ctx_t;

static bool take_joined(run_ctx_t *d, conn_t *c)
{
    if (!conn_takes_as_is(c, d->len))
        return false;
    if (d->all == NULL && (d->all = frame_join(d->f, d->n)) == NULL)
        return false; /* out of memory: one by one */
    return conn_queue_run(c, d->all);
}

static void deliver_run_pattern(void *value, void *arg)
{
    lpat_t *p = value;
    run_ctx_t *d = arg;
    for (link_t *l = p->subs.next; l != &p->subs; l = l->next) {
        sub_t *s = link_entry(l, sub_t, by_pattern);
        conn_t *c = s->c;
        if (c->stamp == d->joined || c->stamp == d->apart)
            continue;
        if (!p->wildcard && d->f[d->n - 1]->seq <= s->after_seq)
            continue; /* none of the run for s, as deliver_pattern skips each */
        if (s->filter == NULL && s->hold == NULL && (p->wildcard || d->f[0]->seq > s->after_seq) &&
            take_joined(d, c)) {
            c->stamp = d->joined;
            d->took++;
        } else {
            c->stamp = d->apart;
            d->left++;
        }
    }
}

void pubsub_deliver_run(wrk_t *w, frame_t *const *f, size_t n)
{
    run_ctx_t d = {.f = f, .n = n};
    for (size_t i = 0; i < n; i++)
        d.len += f[i]->len;
    d.apart = ++w->stamp;
    d.joined = ++w->stamp;
    ptable_match(&w->subs, f[0]->topic, f[0]->topic_len, deliver_run_pattern, &d);
    if (d.all != NULL) {
        if (d.took > 0)
            frame_ref_n(d.all, d.took);
        frame_unref(d.all);
    }
    STAT_ADD(&w->stats, delivered, (uint64_t)d.took * n);
    for (size_t i = 0; i < n; i++) {
        if (d.left > 0)
            deliver_except(w, f[i], d.joined);
        else
            frame_unref(f[i]);
    }
}
