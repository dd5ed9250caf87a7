/*
 * scenario.c - what the bench's connections do: the plan of each scenario,
 * publishing with flow control, and the correctness checks on delivery.
 *
 *   fanout   S subscribers on one topic, P publishers on it
 *   pairs    N topics, one publisher and one subscriber each (same thread)
 *   conns    C subscribers, each on a topic of its own, idle
 *   latency  S subscribers on one topic, publishers at a fixed total rate
 *
 * Flow control. A publisher keeps at most --window publishes without a
 * reply (every publish carries an id; the broker answers each with an ack
 * or an error). An ack only says the broker took the message, not that the
 * subscribers have it, so a second bound keeps the broker's per-subscriber
 * backlog small: a publisher may be at most --max-lag messages ahead of its
 * subscribers. For a pair that is its own subscriber; for a shared topic it
 * is the average over all subscribers (sum of deliveries / subscribers),
 * read from the threads' live counters.
 *
 * Verification. Every subscriber starts from the seq in its subscribe ack
 * and expects every later seq of its topic exactly once, in order. A gap
 * counts as lost at once; a 64-bit window of recently seen seqs tells a
 * late arrival (reordered, no longer lost) from a duplicate. At the end,
 * the highest seq acked to any publisher of the topic is what every
 * subscriber should have reached: what is missing then is lost too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static bool in_window(const bthread_t *th)
{
    return th->now >= th->t_measure && th->now < th->t_end;
}

static void topic_raise(btopic_t *t, uint64_t seq)
{
    uint64_t cur = atomic_load_explicit(&t->final_seq, memory_order_relaxed);
    while (cur < seq && !atomic_compare_exchange_weak_explicit(
                            &t->final_seq, &cur, seq, memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- Plan ---- */

/* Where connection k of the whole run goes. */
static void place(const bench_t *b, size_t k, unsigned *thread, uint8_t *role, uint32_t *topic)
{
    unsigned nt = b->o.threads;
    switch (b->o.scenario) {
    case SC_PAIRS:
        *topic = (uint32_t)(k / 2);
        *role = k % 2 == 0 ? ROLE_SUB : ROLE_PUB;
        *thread = (unsigned)((k / 2) % nt);
        break;
    case SC_CONNS:
        *topic = (uint32_t)k;
        *role = ROLE_SUB;
        *thread = (unsigned)(k % nt);
        break;
    default:
        *topic = 0;
        *role = k < b->total_subs ? ROLE_SUB : ROLE_PUB;
        *thread = (unsigned)(k % nt);
        break;
    }
}

int scen_plan(bench_t *b)
{
    const opts_t *o = &b->o;
    switch (o->scenario) {
    case SC_PAIRS:
        b->total_subs = b->total_pubs = b->ntopics = o->pairs;
        break;
    case SC_CONNS:
        b->total_subs = b->ntopics = o->conns;
        b->total_pubs = 0;
        break;
    default:
        b->total_subs = o->subs;
        b->total_pubs = o->pubs;
        b->ntopics = 1;
        break;
    }
    b->total_conns = b->total_subs + b->total_pubs;
    b->topics = calloc(b->ntopics, sizeof *b->topics);
    b->th = calloc(o->threads, sizeof *b->th);
    if (b->topics == NULL || b->th == NULL)
        goto nomem;
    for (size_t i = 0; i < b->ntopics; i++) {
        btopic_t *t = &b->topics[i];
        int n = snprintf(t->name, sizeof t->name, "bench.%s.%zu", b->runid, i);
        t->len = (uint8_t)n;
    }
    for (unsigned i = 0; i < o->threads; i++) {
        b->th[i].b = b;
        b->th[i].idx = i;
    }
    for (size_t k = 0; k < b->total_conns; k++) {
        unsigned ti;
        uint8_t role;
        uint32_t topic;
        place(b, k, &ti, &role, &topic);
        b->th[ti].nconns++;
        if (role == ROLE_PUB)
            b->th[ti].npubs++;
    }
    for (unsigned i = 0; i < o->threads; i++) {
        bthread_t *th = &b->th[i];
        th->conns = calloc(th->nconns ? th->nconns : 1, sizeof *th->conns);
        th->pubs = calloc(th->npubs ? th->npubs : 1, sizeof *th->pubs);
        if (th->conns == NULL || th->pubs == NULL)
            goto nomem;
        th->nconns = th->npubs = 0;
        th->inflight_max = (o->connect_inflight + o->threads - 1) / o->threads;
        th->connect_rate = o->connect_rate / o->threads;
    }
    for (size_t k = 0; k < b->total_conns; k++) {
        unsigned ti;
        uint8_t role;
        uint32_t topic;
        place(b, k, &ti, &role, &topic);
        bthread_t *th = &b->th[ti];
        bconn_t *c = &th->conns[th->nconns++];
        c->th = th;
        c->role = role;
        c->topic = topic;
        c->node = (uint8_t)(k % o->nep);
        c->next_id = c->ack_id = 1;
        if (role == ROLE_PUB) {
            th->pubs[th->npubs++] = c;
            if (o->scenario == SC_PAIRS) {
                /* The pair's subscriber was placed just before, here. */
                c->peer = c - 1;
                c[-1].peer = c;
            }
        }
    }
    return 0;
nomem:
    fprintf(stderr, "wsbroker-bench: out of memory planning %zu connections\n", b->total_conns);
    return -1;
}

/* ---- Publishing ---- */

static bool lag_ok(const bconn_t *c)
{
    const bench_t *b = c->th->b;
    uint64_t lag = b->o.max_lag;
    if (c->peer != NULL) {
        if (!c->peer->ever_ready || c->peer->state == CS_DEAD)
            return true;
        return c->sent < c->peer->received + lag;
    }
    if (b->subs_ready == 0)
        return true;
    uint64_t sent = 0, delivered = 0;
    for (unsigned i = 0; i < b->o.threads; i++) {
        sent += ctr_get(&b->th[i].st.published);
        delivered += ctr_get(&b->th[i].st.delivered);
    }
    return sent < lag + delivered / b->subs_ready;
}

static bool pub_send(bconn_t *c)
{
    bthread_t *th = c->th;
    const bench_t *b = th->b;
    const btopic_t *t = &b->topics[c->topic];
    char id[24];
    size_t il = dec_text(id, c->next_id);
    size_t dl = th->data_len = payload_update(th->data, th->data_len, b->o.payload, th->now);
    size_t n = msg_encode_publish(th->scratch, th->scratch_cap, t->name, t->len, th->data, dl,
                                  (msg_span_t){id, il});
    if (n == 0) {
        conn_fail(c, ERR_PROTOCOL, "publish does not fit the encode buffer");
        return false;
    }
    if (conn_send_text(c, th->scratch, n) < 0)
        return false;
    c->next_id++;
    c->sent++;
    ctr_add(&th->st.published, 1);
    if (in_window(th))
        ctr_add(&th->st.win_published, 1);
    return true;
}

static void pub_check_done(bconn_t *c)
{
    if (!c->done && c->stopped && c->sent == c->acked + c->nacked) {
        c->done = true;
        ctr_add(&c->th->st.pubs_done, 1);
    }
}

/* Publishes c may have sent by now at the latency scenario's fixed rate. */
static uint64_t rate_due(const bconn_t *c)
{
    const bthread_t *th = c->th;
    const bench_t *b = th->b;
    double per_pub = b->o.rate / (double)b->total_pubs;
    double elapsed = (double)(th->now - th->t_run) / 1e9;
    return (uint64_t)(elapsed * per_pub) + 1;
}

static void pub_pump(bconn_t *c)
{
    bthread_t *th = c->th;
    if (c->done || c->state != CS_READY)
        return;
    if (!c->stopped && (th->seen_phase >= PH_STOP || th->now >= th->t_end))
        c->stopped = true;
    if (c->stopped) {
        c->blocked = false;
        pub_check_done(c);
        return;
    }
    if (th->seen_phase < PH_RUN)
        return;
    uint64_t limit = th->b->o.scenario == SC_LATENCY ? rate_due(c) : UINT64_MAX;
    unsigned window = th->b->o.window;
    c->blocked = false;
    while (c->sent < limit) {
        if (c->sent - c->acked - c->nacked >= window || !lag_ok(c)) {
            c->blocked = true;
            break;
        }
        if (!pub_send(c))
            break;
    }
}

/* An ack (ok) or error reply to one of c's publishes. */
static void on_pub_reply(bconn_t *c, const msg_server_t *m, bool ok)
{
    bthread_t *th = c->th;
    uint64_t id;
    if (!dec_u64(m->id.p, m->id.len, &id)) {
        conn_error(th, ERR_ACK, "publisher got a reply without a numeric id");
        return;
    }
    if (id != c->ack_id) {
        conn_error(th, ERR_ACK, "publisher got a reply for id %llu, expected %llu",
                   (unsigned long long)id, (unsigned long long)c->ack_id);
        if (id < c->ack_id || id >= c->next_id)
            return;
        /* Replies the broker skipped are counted as refused. */
        c->nacked += id - c->ack_id;
    }
    c->ack_id = id + 1;
    if (ok) {
        c->acked++;
        ctr_add(&th->st.acked, 1);
        if (m->has_seq) {
            if (m->seq <= c->last_ack_seq)
                conn_error(th, ERR_ACK, "publish acked with seq %llu after seq %llu",
                           (unsigned long long)m->seq, (unsigned long long)c->last_ack_seq);
            else
                c->last_ack_seq = m->seq;
            topic_raise(&th->b->topics[c->topic], m->seq);
        }
    } else {
        c->nacked++;
    }
    pub_pump(c);
}

/* ---- Subscribing and delivery ---- */

void scen_on_hello(bconn_t *c)
{
    bthread_t *th = c->th;
    const btopic_t *t = &th->b->topics[c->topic];
    if (c->role == ROLE_PUB) {
        conn_ready(c);
        return;
    }
    size_t n = msg_encode_subscribe(th->scratch, th->scratch_cap, false, t->name, t->len,
                                    (msg_span_t){"1", 1}, -1, -1, NULL);
    c->state = CS_SUBSCRIBING;
    conn_send_text(c, th->scratch, n);
}

static void on_sub_ack(bconn_t *c, const msg_server_t *m)
{
    uint64_t id;
    if (!dec_u64(m->id.p, m->id.len, &id) || id != 1) {
        conn_fail(c, ERR_ACK, "subscribe answered with id \"%.*s\"", (int)m->id.len,
                  m->id.len > 0 ? m->id.p : "");
        return;
    }
    c->base = m->has_seq ? m->seq : 0;
    c->last = c->base;
    c->seen = ~(uint64_t)0; /* seqs up to base count as already seen */
    conn_ready(c);
}

int scen_seq(bconn_t *c, uint64_t s, uint64_t *gap)
{
    *gap = 0;
    if (s > c->last) {
        uint64_t step = s - c->last;
        *gap = step - 1;
        c->seen = step >= 64 ? 1 : (c->seen << step) | 1;
        c->last = s;
        return SEQ_NEXT;
    }
    uint64_t back = c->last - s;
    if (s <= c->base || (back < 64 && (c->seen >> back) & 1))
        return SEQ_DUP;
    /* A seq skipped earlier (and counted lost) arrives late. Beyond the
     * 64-seq window a duplicate cannot be told apart; it is taken as late. */
    if (back < 64)
        c->seen |= (uint64_t)1 << back;
    return SEQ_LATE;
}

/* The topic of a message (NUL-terminated) is t's name. Compared inline:
 * for these few bytes a library call costs more than the comparison. */
static bool is_topic(const char *s, const btopic_t *t)
{
    size_t i = 0, n = t->len;
    for (; i + 8 <= n; i += 8) {
        uint64_t a, b;
        memcpy(&a, s + i, sizeof a);
        memcpy(&b, t->name + i, sizeof b);
        if (a != b)
            return false;
    }
    for (; i < n; i++) {
        if (s[i] != t->name[i])
            return false;
    }
    return s[n] == '\0';
}

static void on_delivery(bconn_t *c, const msg_server_t *m)
{
    bthread_t *th = c->th;
    const btopic_t *t = &th->b->topics[c->topic];
    if (!is_topic(m->topic, t)) {
        conn_error(th, ERR_TOPIC, "subscriber of %s got a message for \"%.64s\"", t->name,
                   m->topic);
        return;
    }
    if (!m->has_seq) {
        conn_error(th, ERR_PROTOCOL, "message without a seq on %s", t->name);
        return;
    }
    uint64_t gap = 0;
    switch (scen_seq(c, m->seq, &gap)) {
    case SEQ_DUP:
        ctr_add(&th->st.duplicates, 1);
        return;
    case SEQ_LATE:
        ctr_add(&th->st.reordered, 1);
        ctr_add(&th->st.lost, (uint64_t)-1);
        break;
    default:
        if (gap != 0)
            ctr_add(&th->st.lost, gap);
        break;
    }
    c->received++;
    ctr_add(&th->st.delivered, 1);
    if (in_window(th)) {
        uint64_t t0;
        ctr_add(&th->st.win_delivered, 1);
        if (payload_time(m->data.p, m->data.len, &t0) && th->now >= t0)
            hist_add(&th->lat, th->now - t0);
    }
    if (c->peer != NULL && c->peer->blocked)
        pub_pump(c->peer);
}

void scen_on_message(bconn_t *c, const msg_server_t *m)
{
    bthread_t *th = c->th;
    switch (m->op) {
    case MSG_S_MESSAGE:
        if (c->role == ROLE_SUB && c->ever_ready)
            on_delivery(c, m);
        else
            conn_error(th, ERR_PROTOCOL, "message on a connection that did not subscribe");
        break;
    case MSG_S_ACK:
        if (c->role == ROLE_PUB)
            on_pub_reply(c, m, true);
        else if (c->state == CS_SUBSCRIBING)
            on_sub_ack(c, m);
        else
            conn_error(th, ERR_ACK, "subscriber got an ack it did not ask for");
        break;
    case MSG_S_ERROR:
        /* conn.c has recorded and printed it. */
        if (c->state == CS_SUBSCRIBING)
            conn_fail(c, ERR_HANDSHAKE, "subscribe refused");
        else if (c->role == ROLE_PUB && m->id.len > 0)
            on_pub_reply(c, m, false);
        break;
    default:
        break;
    }
}

void scen_on_dead(bconn_t *c)
{
    if (c->role == ROLE_PUB && c->ever_ready && !c->done) {
        c->done = true;
        ctr_add(&c->th->st.pubs_done, 1);
    }
}

/* ---- Phase hooks ---- */

void scen_run_start(bthread_t *th)
{
    const bench_t *b = th->b;
    th->t_run = b->t_run;
    th->t_measure = b->t_measure;
    th->t_end = b->t_end;
    for (size_t i = 0; i < th->npubs; i++)
        pub_pump(th->pubs[i]);
}

void scen_run_tick(bthread_t *th)
{
    for (size_t i = 0; i < th->npubs; i++)
        pub_pump(th->pubs[i]);
}

void scen_after_read(bthread_t *th)
{
    if (th->b->o.scenario != SC_FANOUT)
        return;
    for (size_t i = 0; i < th->npubs; i++)
        if (th->pubs[i]->blocked)
            pub_pump(th->pubs[i]);
}

void scen_drain_tick(bthread_t *th)
{
    uint64_t complete = 0;
    for (size_t i = 0; i < th->nconns; i++) {
        const bconn_t *c = &th->conns[i];
        if (c->role != ROLE_SUB || !c->ever_ready)
            continue;
        uint64_t final =
            atomic_load_explicit(&th->b->topics[c->topic].final_seq, memory_order_relaxed);
        if (c->state == CS_DEAD || c->last >= final)
            complete++;
    }
    ctr_set(&th->st.subs_complete, complete);
}

void scen_finish(bthread_t *th)
{
    th->finished = true;
    for (size_t i = 0; i < th->nconns; i++) {
        const bconn_t *c = &th->conns[i];
        if (c->role != ROLE_SUB || !c->ever_ready)
            continue;
        uint64_t final =
            atomic_load_explicit(&th->b->topics[c->topic].final_seq, memory_order_relaxed);
        if (final > c->base)
            th->expected += final - c->base;
        if (final > c->base && c->received == 0)
            th->silent_subs++;
        if (final > c->last) {
            ctr_add(&th->st.lost, final - c->last);
            th->missing_end += final - c->last;
        }
    }
}
