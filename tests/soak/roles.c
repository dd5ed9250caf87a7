/*
 * roles.c - what each kind of soak client does, and what it must see.
 *
 *   publishers   R_PUB (ids, every ack checked: id, topic, seq), R_PUBN (no
 *                ids; a ping with an id after every few publishes confirms
 *                them), R_PUBC (short-lived, take turns on their groups).
 *                Each has a window of unconfirmed publishes, so the broker
 *                is measured delivering, not queueing without bound.
 *   subscribers  R_SUB (long-lived), R_CHURN (short-lived: subscribe,
 *                unsubscribe, resubscribe, then a Close handshake, FIN or
 *                RST). Both read everything; ledger.c checks deliveries.
 *   R_SLOW       small SO_RCVBUF, stops reading after its subscribe ack
 *                (sending unsolicited Pongs so it is not taken for dead);
 *                resumes once /metrics shows the broker acted: closed (1008,
 *                or dropped at --close-timeout) or dropping messages.
 *   R_MUTE       reads but never answers a Ping: must get 1001 "ping
 *                timeout" within the configured heartbeat.
 *   R_GARBAGE    one of G_COUNT kinds of bad input, each with its exact
 *                HTTP status or close code (or error replies).
 *   R_VANISH     goes away mid-handshake or mid-frame (FIN or RST).
 *   R_METRICS    GET /metrics once a second (also a stall detector).
 */
#include "soak.h"

#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define WINDOW         32  /* unconfirmed publishes per publisher */
#define PING_EVERY     8   /* no-id publisher: a confirming ping after this many */
#define N_MUTE         2   /* mute clients at a time */
#define MAX_HS         256 /* connections in the handshake at once */
#define RAMP_PER_TICK  20  /* long-lived subscribers opened per 10 ms tick */
#define CHURN_LIFE_MIN 500
#define CHURN_LIFE_MAX 3500
#define ACTION_MIN     200
#define ACTION_MAX     1500
#define FLOOD_RATE     20 /* flood messages per second while a slow consumer holds */

static const char *const role_names[R_COUNT] = {
    [R_PUB] = "publisher",   [R_PUBN] = "publisher-noid", [R_PUBC] = "publisher-churn",
    [R_SUB] = "subscriber",  [R_CHURN] = "churner",       [R_SLOW] = "slow-consumer",
    [R_MUTE] = "mute",       [R_GARBAGE] = "garbage",     [R_VANISH] = "vanisher",
    [R_METRICS] = "metrics",
};

const char *role_name(int role)
{
    return role >= 0 && role < R_COUNT ? role_names[role] : "?";
}

/* ---- garbage kinds ---- */

enum gkind {
    G_RANDOM,   /* random bytes with a control byte: 400 */
    G_BADVER,   /* a second Sec-WebSocket-Version: 8: 426 */
    G_NOKEY,    /* no Sec-WebSocket-Key: 400 */
    G_BADKEY,   /* key not 16 bytes: 400 */
    G_POST,     /* POST upgrade: 400 */
    G_PATH,     /* upgrade to an unknown path: 404 */
    G_BIG,      /* head over 8 KiB: 431 */
    G_PLAIN404, /* plain GET of an unknown path: 404 */
    G_HEALTH,   /* GET /healthz: 200 */
    G_TRICKLE,  /* upgrade sent in three pieces: 101, then Close 1000 */
    G_STALL,    /* half a head, then silence: 408 after --handshake-timeout */
    G_UNMASKED, /* unmasked frame: 1002 */
    G_RSV,      /* RSV1 without extension: 1002 */
    G_OPCODE,   /* reserved opcode: 1002 */
    G_BINARY,   /* binary message on /ws: 1003 */
    G_UTF8,     /* invalid UTF-8 text: 1007 */
    G_TOOBIG,   /* frame header over --max-message: 1009 */
    G_CONT,     /* continuation without a start: 1002 */
    G_CTLBIG,   /* Ping with 126 bytes: 1002 */
    G_CTLFRAG,  /* fragmented Ping: 1002 */
    G_CLOSEBAD, /* Close with code 1005: 1002 */
    G_CLOSE1,   /* Close with a 1-byte payload: 1002 */
    G_NEWDATA,  /* new data frame inside a fragmented message: 1002 */
    G_REQUESTS, /* bad requests: error replies, the connection stays open */
    G_ECHO,     /* /echo round trip, then Close 1000 */
    G_COUNT,
};

static const struct {
    const char *name;
    int status;  /* expected HTTP status */
    int code;    /* expected close code from the broker (0: none) */
    bool reject; /* counted by the broker as a handshake reject */
    bool plain;  /* counted as a plain HTTP request */
} gk[G_COUNT] = {
    [G_RANDOM] = {"random-bytes", 400, 0, false, false},
    [G_BADVER] = {"bad-version", 426, 0, true, false},
    [G_NOKEY] = {"no-key", 400, 0, true, false},
    [G_BADKEY] = {"bad-key", 400, 0, true, false},
    [G_POST] = {"post-upgrade", 400, 0, true, false},
    [G_PATH] = {"unknown-path", 404, 0, true, false},
    [G_BIG] = {"head-too-big", 431, 0, false, false},
    [G_PLAIN404] = {"plain-404", 404, 0, false, true},
    [G_HEALTH] = {"healthz", 200, 0, false, true},
    [G_TRICKLE] = {"trickled-upgrade", 101, 1000, false, false},
    [G_STALL] = {"stalled-head", 408, 0, false, false},
    [G_UNMASKED] = {"unmasked", 101, 1002, false, false},
    [G_RSV] = {"rsv1", 101, 1002, false, false},
    [G_OPCODE] = {"reserved-opcode", 101, 1002, false, false},
    [G_BINARY] = {"binary", 101, 1003, false, false},
    [G_UTF8] = {"bad-utf8", 101, 1007, false, false},
    [G_TOOBIG] = {"too-big", 101, 1009, false, false},
    [G_CONT] = {"lone-continuation", 101, 1002, false, false},
    [G_CTLBIG] = {"big-control", 101, 1002, false, false},
    [G_CTLFRAG] = {"fragmented-control", 101, 1002, false, false},
    [G_CLOSEBAD] = {"close-1005", 101, 1002, false, false},
    [G_CLOSE1] = {"close-1-byte", 101, 1002, false, false},
    [G_NEWDATA] = {"data-inside-fragments", 101, 1002, false, false},
    [G_REQUESTS] = {"bad-requests", 101, 1000, false, false},
    [G_ECHO] = {"echo", 101, 1000, false, false},
};

/* G_REQUESTS: sent in one go; the replies must come in this order. */
static const struct {
    const char *fmt;    /* %u: the id */
    int idkind;         /* 0 numeric, 1 string "z<id>", 2 none */
    const char *expect; /* error code, or "pong", "ack0" (ack with seq 0), "ack" */
} bad_reqs[] = {
    {"not json", 2, "bad_json"},
    {"[1,2,3]", 2, "bad_json"},
    {"{\"op\":\"nope\",\"id\":%u}", 0, "unknown_op"},
    {"{\"op\":\"publish\",\"topic\":\"soak.g0.*\",\"data\":1,\"id\":%u}", 0, "bad_topic"},
    {"{\"op\":\"subscribe\",\"id\":%u}", 0, "bad_request"},
    {"{\"op\":\"unsubscribe\",\"topic\":\"soak.g0.t0\",\"id\":%u}", 0, "not_subscribed"},
    {"{\"op\":\"subscribe\",\"topic\":\"soak..x\",\"id\":%u}", 0, "bad_topic"},
    {"{\"op\":\"publish\",\"topic\":\"soak.vanish\",\"id\":%u}", 0, "bad_request"},
    {"{\"op\":\"ping\",\"id\":\"z%u\"}", 1, "pong"},
    /* Vanishing clients send half publishes to soak.vanish all along:
     * none may ever count. */
    {"{\"op\":\"subscribe\",\"topic\":\"soak.vanish\",\"id\":%u}", 0, "ack0"},
    {"{\"op\":\"unsubscribe\",\"topic\":\"soak.vanish\",\"id\":%u}", 0, "ack"},
};
#define N_BAD_REQS (sizeof(bad_reqs) / sizeof(bad_reqs[0]))

enum vkind {
    V_HS_PART_RST,    /* part of the upgrade request, then RST */
    V_HS_PART_FIN,    /* part of the upgrade request, then FIN */
    V_HS_FULL_RST,    /* the whole request, RST before the 101 is read */
    V_FRAME_PART_RST, /* part of a publish frame, then RST */
    V_FRAME_PART_FIN, /* part of a publish frame, then FIN */
    V_FRAME_HDR_RST,  /* one byte of a frame header, then RST */
    V_SUB_RST,        /* subscribe to everything, RST while messages flow */
    V_COUNT,
};

static const char *const vk_names[V_COUNT] = {
    "handshake-part-rst", "handshake-part-fin", "handshake-full-rst", "frame-part-rst",
    "frame-part-fin",     "frame-header-rst",   "subscribe-rst",
};

/* ---- scheduler state ---- */

static conn_t **pubs;
static uint32_t npubs, pubs_cap;
static uint32_t target_sub, subs_started, subs_ready;
static double acc_churn, acc_garbage;
static int64_t last_tick;
static conn_t *slow, *metrics;
static int64_t slow_next, metrics_next;
static uint32_t gk_next, vk_next, garbage_flip;
static double rate_per_pub;

static int64_t ms_of(double seconds)
{
    return (int64_t)(seconds * 1000.0 + 0.5);
}

static int64_t slack_ms(double seconds)
{
    return ms_of(seconds * cfg.slack);
}

/* A deadline passed, but the test's own loop stalled for 500 ms or more in
 * the last 10 s: extend it once by 3 s instead of blaming the broker. */
static bool grace(conn_t *c)
{
    if ((c->flags & F_GRACE) || !client_stalled(now_ms() - 10000, 500))
        return false;
    c->flags |= F_GRACE;
    st.graces++;
    timer_set(c, now_ms() + slack_ms(3));
    return true;
}

static void pubs_add(conn_t *c)
{
    if (npubs == pubs_cap) {
        pubs_cap = pubs_cap ? pubs_cap * 2 : 32;
        pubs = realloc(pubs, pubs_cap * sizeof(*pubs));
        if (pubs == NULL)
            exit(3);
    }
    pubs[npubs++] = c;
}

static void pubs_remove(conn_t *c)
{
    for (uint32_t i = 0; i < npubs; i++)
        if (pubs[i] == c) {
            pubs[i] = pubs[--npubs];
            return;
        }
}

/* ---- ids ---- */

static size_t id_text(const req_t *r, char *out, size_t cap)
{
    switch (r->idkind) {
    case 1:
        return (size_t)snprintf(out, cap, "\"%c%u\"", r->type == REQ_PUB ? 'p' : 'z', r->id);
    case 2:
        return 0;
    default:
        return (size_t)snprintf(out, cap, "%u", r->id);
    }
}

/* ---- subscriptions ---- */

static int csub_find(const conn_t *c, uint32_t p)
{
    for (uint32_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].pattern == p)
            return (int)i;
    return -1;
}

static void subscribe(conn_t *c, uint32_t p, bool resub)
{
    const pattern_t *pt = &patterns[p];
    req_t *r = rq_push(c, REQ_SUB);
    r->arg = p;
    r->resub = resub;
    r->seq = pt->wildcard ? 0 : topics[pt->topics[0]].confirmed;
    if (!resub) {
        if (c->nsubs == c->subs_cap) {
            c->subs_cap = c->subs_cap ? c->subs_cap * 2 : 4;
            c->subs = realloc(c->subs, c->subs_cap * sizeof(*c->subs));
            if (c->subs == NULL)
                exit(3);
        }
        c->subs[c->nsubs++] = (csub_t){p, SS_PENDING};
    }
    char idb[16], buf[160];
    int il = snprintf(idb, sizeof(idb), "%u", r->id);
    msg_span_t id = {idb, (size_t)il};
    size_t n = msg_encode_subscribe(buf, sizeof(buf), false, pt->text, pt->len, id, -1, -1, NULL);
    conn_text(c, buf, n);
}

static void unsubscribe(conn_t *c, uint32_t i)
{
    csub_t *s = &c->subs[i];
    const pattern_t *pt = &patterns[s->pattern];
    s->state = SS_UNSUB;
    ledger_unsub_sent(c, s->pattern);
    req_t *r = rq_push(c, REQ_UNSUB);
    r->arg = s->pattern;
    char idb[16], buf[160];
    int il = snprintf(idb, sizeof(idb), "%u", r->id);
    msg_span_t id = {idb, (size_t)il};
    size_t n = msg_encode_subscribe(buf, sizeof(buf), true, pt->text, pt->len, id, -1, -1, NULL);
    conn_text(c, buf, n);
}

/* A pattern not on c yet; disjoint from what c covers, except now and
 * then (a connection must get each message once whatever overlaps). */
static uint32_t pick_new(conn_t *c)
{
    for (int tries = 0; tries < 8; tries++) {
        uint32_t p = pattern_pick(&c->rng, -1);
        if (csub_find(c, p) >= 0)
            continue;
        /* Everything, for long: only the three chosen subscribers. */
        if (patterns[p].kind == PK_ALL && c->role == R_SUB)
            continue;
        if (rng_below(&c->rng, 10) == 0 || pattern_disjoint(c, p))
            return p;
    }
    return UINT32_MAX;
}

static void subscribe_new(conn_t *c)
{
    uint32_t p = pick_new(c);
    if (p != UINT32_MAX)
        subscribe(c, p, false);
}

/* ---- publishing ---- */

static bool window_ok(conn_t *c)
{
    if (c->role != R_PUBN)
        return c->rq_len < WINDOW;
    const group_t *g = &groups[c->group];
    uint64_t un = 0;
    for (uint32_t k = 0; k < TOPICS_PER_GROUP; k++) {
        const topic_t *t = &topics[g->first_topic + k];
        un += t->sent - t->confirmed;
    }
    return un < WINDOW;
}

static void send_ping(conn_t *c)
{
    const group_t *g = &groups[c->group];
    req_t *r = rq_push(c, REQ_PING);
    r->snap = malloc(TOPICS_PER_GROUP * sizeof(uint64_t));
    if (r->snap == NULL)
        exit(3);
    for (uint32_t k = 0; k < TOPICS_PER_GROUP; k++)
        r->snap[k] = topics[g->first_topic + k].sent;
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "{\"op\":\"ping\",\"id\":%u}", r->id);
    conn_text(c, buf, (size_t)n);
    c->since_ping = 0;
}

static void publish_one(conn_t *c)
{
    const group_t *g = &groups[c->group];
    uint32_t t = g->first_topic + c->rr++ % TOPICS_PER_GROUP;
    topic_t *tp = &topics[t];
    uint64_t seq = tp->sent + 1;
    static char data[PAYLOAD_MAX], out[PAYLOAD_MAX + 512];
    size_t dl = payload_make(data, sizeof(data), seq, t);
    char idb[24];
    msg_span_t id = {NULL, 0};
    if (c->role != R_PUBN) {
        req_t *r = rq_push(c, REQ_PUB);
        r->arg = t;
        r->seq = seq;
        r->idkind = r->id % 3 == 0 ? 1 : 0;
        id.len = id_text(r, idb, sizeof(idb));
        id.p = idb;
    }
    size_t n = msg_encode_publish(out, sizeof(out), tp->name, tp->len, data, dl, id);
    if (n == 0) {
        violation("msg_encode_publish failed");
        return;
    }
    tp->sent = seq;
    st.published++;
    conn_text(c, out, n);
    if (c->role == R_PUBN && ++c->since_ping >= PING_EVERY)
        send_ping(c);
}

static void pub_tick(conn_t *c, double dt)
{
    if (!(c->flags & F_HELLO) || (c->flags & (F_CLOSE_SENT | F_CLOSE_RCVD)) || c->state != CS_OPEN)
        return;
    int64_t now = now_ms();
    req_t *r = rq_front(c);
    if (r != NULL && now - r->t > slack_ms(5) && !(c->flags & F_STALLED) &&
        !client_stalled(now - slack_ms(5), 500)) {
        c->flags |= F_STALLED;
        violation("stall: %s #%u has had no reply for %lld ms (%u requests outstanding)",
                  role_name(c->role), c->slot, (long long)(now - r->t), c->rq_len);
    }
    bool stop =
        phase >= PH_DRAIN || (c->flags & F_LEAVING) || (c->role == R_PUBC && now >= c->t_end);
    if (!stop) {
        /* The flood group is fast only while a slow consumer holds: the
         * kernel takes megabytes before the broker's backlog grows. */
        double rate = c->group == (int32_t)flood_group
                          ? (slow != NULL && slow->step == 1 ? FLOOD_RATE : 1)
                          : rate_per_pub;
        c->tokens += rate * dt;
        if (c->tokens > WINDOW)
            c->tokens = WINDOW;
        while (c->tokens >= 1 && window_ok(c) && c->state == CS_OPEN) {
            publish_one(c);
            c->tokens -= 1;
        }
        return;
    }
    if (c->role == R_PUBN && c->since_ping > 0)
        send_ping(c);
    if (c->role == R_PUBC && c->rq_len == 0) {
        /* Everything confirmed: hand the group over. */
        c->flags |= F_LEAVING;
        c->sent_code = 1000;
        conn_close(c, 1000, NULL);
        c->t_end = now + slack_ms(3);
        timer_set(c, c->t_end);
    }
}

/* ---- replies to requests ---- */

static void reply(conn_t *c, const msg_server_t *m)
{
    req_t *r = rq_front(c);
    const char *opn = m->op == MSG_S_ACK ? "ack" : m->op == MSG_S_ERROR ? "error" : "pong";
    if (r == NULL) {
        violation("%s #%u: %s (id %.*s) with no request outstanding", role_name(c->role), c->slot,
                  opn, (int)m->id.len, m->id.p ? m->id.p : "");
        return;
    }
    char idb[32];
    size_t il = id_text(r, idb, sizeof(idb));
    if (m->id.len != il || (il > 0 && memcmp(m->id.p, idb, il) != 0)) {
        violation("%s #%u: %s with id %.*s, expected id %.*s", role_name(c->role), c->slot, opn,
                  (int)m->id.len, m->id.p ? m->id.p : "", (int)il, idb);
        rq_pop(c);
        return;
    }
    if (m->op == MSG_S_ERROR && r->type != REQ_BAD) {
        violation("%s #%u: request %u answered by error %s: %s", role_name(c->role), c->slot, r->id,
                  m->code, m->message);
        rq_pop(c);
        return;
    }
    switch (r->type) {
    case REQ_PUB: {
        topic_t *tp = &topics[r->arg];
        if (m->op != MSG_S_ACK || strcmp(m->topic, tp->name) != 0 || !m->has_seq ||
            m->seq != r->seq) {
            violation("%s #%u: publish on %s answered %s topic %s seq %llu, expected seq %llu",
                      role_name(c->role), c->slot, tp->name, opn, m->topic,
                      (unsigned long long)m->seq, (unsigned long long)r->seq);
        } else {
            if (r->seq > tp->confirmed)
                tp->confirmed = r->seq;
            st.acks++;
            st.confirmed++;
        }
        break;
    }
    case REQ_PING:
        if (m->op != MSG_S_PONG) {
            violation("%s #%u: ping answered by %s", role_name(c->role), c->slot, opn);
            break;
        }
        st.pongs++;
        if (r->snap != NULL) {
            const group_t *g = &groups[c->group];
            for (uint32_t k = 0; k < TOPICS_PER_GROUP; k++) {
                topic_t *tp = &topics[g->first_topic + k];
                if (r->snap[k] > tp->confirmed) {
                    st.confirmed += r->snap[k] - tp->confirmed;
                    tp->confirmed = r->snap[k];
                }
            }
        }
        break;
    case REQ_SUB: {
        const pattern_t *pt = &patterns[r->arg];
        if (m->op != MSG_S_ACK) {
            violation("%s #%u: subscribe %s answered by %s", role_name(c->role), c->slot, pt->text,
                      opn);
            break;
        }
        if (!pt->wildcard && m->epoch[0] == '\0')
            violation("%s: subscribe ack for %s has no epoch", role_name(c->role), pt->text);
        int i = csub_find(c, r->arg);
        if (!r->resub && i >= 0)
            c->subs[i].state = SS_ACTIVE;
        ledger_sub_ack(c, r->arg, r, m->seq, m->has_seq);
        break;
    }
    case REQ_UNSUB: {
        if (m->op != MSG_S_ACK) {
            violation("%s #%u: unsubscribe %s answered by %s", role_name(c->role), c->slot,
                      patterns[r->arg].text, opn);
            break;
        }
        ledger_unsub_ack(c, r->arg);
        int i = csub_find(c, r->arg);
        if (i >= 0)
            c->subs[i] = c->subs[--c->nsubs];
        break;
    }
    case REQ_BAD: {
        const char *exp = bad_reqs[r->arg].expect;
        bool ok;
        if (strcmp(exp, "pong") == 0)
            ok = m->op == MSG_S_PONG;
        else if (strcmp(exp, "ack0") == 0)
            ok = m->op == MSG_S_ACK && m->has_seq && m->seq == 0 && m->epoch[0] != '\0';
        else if (strcmp(exp, "ack") == 0)
            ok = m->op == MSG_S_ACK;
        else
            ok = m->op == MSG_S_ERROR && strcmp(m->code, exp) == 0 && m->message[0] != '\0';
        if (!ok)
            violation("garbage %s: request '%s' answered %s %s seq %llu, expected %s",
                      gk[c->kind].name, bad_reqs[r->arg].fmt, opn, m->code,
                      (unsigned long long)m->seq, exp);
        else if (m->op == MSG_S_ERROR)
            st.errors_ok++;
        break;
    }
    }
    rq_pop(c);
}

/* ---- the slow consumer ---- */

static double slow_metric(void)
{
    return cfg.slow_drop ? last_metrics.slow_drops : last_metrics.slow_closes;
}

static void slow_after_ack(conn_t *c)
{
    c->step = 1; /* holding */
    conn_set_reading(c, false);
    c->base = (uint64_t)slow_metric();
    c->t_mark = now_ms();
    timer_set(c, c->t_mark + 1000);
}

static void slow_timer(conn_t *c)
{
    int64_t now = now_ms();
    if (c->step == 1) {
        /* Unsolicited Pongs: the broker sees it alive although it reads
         * nothing, so only the backlog can end it. */
        conn_frame(c, WS_OP_PONG, true, NULL, 0);
        bool acted = last_metrics.valid && last_metrics.t > c->t_mark &&
                     (cfg.slow_drop ? slow_metric() >= (double)c->base + 20
                                    : slow_metric() > (double)c->base);
        if (acted) {
            c->step = 2;
            c->mark_recv = c->received;
            c->t_mark = now;
            conn_set_reading(c, true);
            c->t_end = now + (cfg.slow_drop ? 3000 : slack_ms(cfg.close_timeout + 20));
            timer_set(c, c->t_end);
            return;
        }
        if (now - c->t_mark > slack_ms(30)) {
            violation("slow consumer: the broker neither %s it within %lld ms (--max-backlog "
                      "%llu)",
                      cfg.slow_drop ? "dropped messages for" : "closed",
                      (long long)(now - c->t_mark), (unsigned long long)cfg.max_backlog);
            conn_free(c, true);
            return;
        }
        timer_set(c, now + 1000);
        return;
    }
    if (c->step == 2 && cfg.slow_drop) {
        if (c->received <= c->mark_recv)
            violation("slow consumer (drop): nothing arrived in the 3 s after it resumed reading");
        c->step = 3;
        c->sent_code = 1000;
        conn_close(c, 1000, NULL);
        c->t_end = now + slack_ms(3);
        timer_set(c, c->t_end);
        return;
    }
    if (grace(c))
        return;
    /* What the client's side of the connection looks like, for telling a
     * broker that never ended it from one whose end never arrived. */
    struct tcp_info ti = {0}; /* all zero if it cannot be read */
    socklen_t tl = sizeof(ti);
    int unread = -1;
    getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl);
    if (ioctl(c->fd, FIONREAD, &unread) != 0)
        unread = -1;
    violation("slow consumer: connection still open %lld ms after it resumed reading (step %d, "
              "%llu messages read since; client socket: TCP state %u, %d bytes unread, last data "
              "%u ms ago, rcv_space %u, probes %u, backoff %u, %u unacked)",
              (long long)(now - c->t_mark), c->step,
              (unsigned long long)(c->received - c->mark_recv), (unsigned)ti.tcpi_state, unread,
              ti.tcpi_last_data_recv, ti.tcpi_rcv_space, (unsigned)ti.tcpi_probes,
              (unsigned)ti.tcpi_backoff, ti.tcpi_unacked);
    conn_free(c, true);
}

/* ---- churners ---- */

static void churn_leave(conn_t *c)
{
    uint32_t r = rng_below(&c->rng, 100);
    st.churned++;
    if (phase >= PH_DRAIN || r < 70) {
        static const uint16_t codes[] = {1000, 1000, 1000, 1001, 3000, 4000};
        c->sent_code = codes[rng_below(&c->rng, 6)];
        ledger_close_sent(c);
        conn_close(c, c->sent_code, "bye");
        c->flags |= F_LEAVING;
        c->t_end = now_ms() + slack_ms(3);
        timer_set(c, c->t_end);
        return;
    }
    conn_free(c, r >= 85);
}

static void churn_timer(conn_t *c)
{
    int64_t now = now_ms();
    if ((c->flags & F_CLOSE_SENT) && grace(c))
        return;
    if (c->flags & F_CLOSE_SENT) {
        violation("%s #%u: no Close reply within %lld ms", role_name(c->role), c->slot,
                  (long long)slack_ms(3));
        conn_free(c, true);
        return;
    }
    if (!(c->flags & F_HELLO) && grace(c))
        return;
    if (!(c->flags & F_HELLO)) {
        violation("%s #%u: no hello within %lld ms of connecting", role_name(c->role), c->slot,
                  (long long)(now - c->t_start));
        conn_free(c, true);
        return;
    }
    if (now >= c->t_end || phase >= PH_DRAIN) {
        churn_leave(c);
        return;
    }
    if (c->actions > 0) {
        c->actions--;
        uint32_t r = rng_below(&c->rng, 100);
        int active = -1;
        for (uint32_t i = 0; i < c->nsubs; i++)
            if (c->subs[i].state == SS_ACTIVE) {
                active = (int)i;
                if (rng_below(&c->rng, 2) == 0)
                    break;
            }
        if (active >= 0 && r < 45)
            unsubscribe(c, (uint32_t)active);
        else if (active >= 0 && r < 55)
            subscribe(c, c->subs[active].pattern, true);
        else
            subscribe_new(c);
    }
    int64_t next = now + ACTION_MIN + rng_below(&c->rng, ACTION_MAX - ACTION_MIN);
    timer_set(c, next < c->t_end ? next : c->t_end);
}

/* ---- garbage ---- */

/* A client frame with any first byte, masked (or not), payload < 126. */
static size_t raw_frame(conn_t *c, uint8_t *out, uint8_t b0, const void *payload, size_t len,
                        bool masked)
{
    size_t n = 0;
    out[n++] = b0;
    out[n++] = (uint8_t)((masked ? 0x80 : 0) | len);
    uint8_t mask[4];
    uint64_t r = rng_next(&c->rng);
    memcpy(mask, &r, 4);
    if (masked) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    memcpy(out + n, payload, len);
    if (masked)
        ws_mask(out + n, len, mask, 0);
    return n + len;
}

static void garbage_connected(conn_t *c)
{
    char buf[10000], host[32];
    int n = 0;
    snprintf(host, sizeof(host), "127.0.0.1:%d", broker_port());
    c->t_end = c->t_start + slack_ms(5);
    switch (c->kind) {
    case G_RANDOM: {
        n = 16 + (int)rng_below(&c->rng, 600);
        for (int i = 0; i < n; i++)
            buf[i] = (char)(0x20 + rng_below(&c->rng, 0x7f - 0x20));
        static const char ctl[] = {0x00, 0x01, 0x02, 0x07, 0x08, 0x0b, 0x0c, 0x0e, 0x1b, 0x7f};
        buf[rng_below(&c->rng, (uint32_t)n)] = ctl[rng_below(&c->rng, sizeof(ctl))];
        break;
    }
    case G_BADVER:
        conn_upgrade(c, "/ws", "Sec-WebSocket-Version: 8\r\n");
        break;
    case G_NOKEY:
        n = snprintf(buf, sizeof(buf),
                     "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: "
                     "Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     host);
        break;
    case G_BADKEY:
        n = snprintf(buf, sizeof(buf),
                     "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: "
                     "Upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     host);
        break;
    case G_POST:
        n = snprintf(buf, sizeof(buf),
                     "POST /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: "
                     "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     host);
        break;
    case G_PATH:
        conn_upgrade(c, "/nowhere", NULL);
        break;
    case G_BIG:
        n = snprintf(buf, sizeof(buf), "GET /ws HTTP/1.1\r\nHost: %s\r\nX-Pad: ", host);
        memset(buf + n, 'a', 9000);
        n += 9000;
        memcpy(buf + n, "\r\n\r\n", 4);
        n += 4;
        break;
    case G_PLAIN404:
        n = snprintf(buf, sizeof(buf), "GET /nothing-here HTTP/1.1\r\nHost: %s\r\n\r\n", host);
        break;
    case G_HEALTH:
        n = snprintf(buf, sizeof(buf), "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host);
        break;
    case G_TRICKLE: {
        /* The request goes out in three pieces, 100 ms apart. */
        uint8_t nonce[16];
        for (int i = 0; i < 16; i++)
            nonce[i] = (uint8_t)rng_next(&c->rng);
        wsh_make_key(nonce, c->key);
        int len = wsh_write_request(buf, sizeof(buf), host, "/ws", c->key, NULL);
        c->body = malloc((size_t)len + 1);
        if (c->body == NULL)
            exit(3);
        memcpy(c->body, buf, (size_t)len);
        c->body_len = (uint32_t)len;
        c->body_cap = (uint32_t)len + 1;
        c->step = 1;
        conn_send(c, c->body, (size_t)len / 3);
        timer_set(c, now_ms() + 100);
        return;
    }
    case G_STALL:
        n = snprintf(buf, sizeof(buf), "GET /ws HTTP/1.1\r\nHost: %s\r\n", host);
        c->t_end = c->t_start + slack_ms(cfg.handshake_timeout + 4);
        break;
    case G_ECHO:
        c->flags |= F_NOHELLO;
        conn_upgrade(c, "/echo", NULL);
        break;
    default:
        conn_upgrade(c, "/ws", NULL);
        break;
    }
    if (n > 0)
        conn_send(c, buf, (size_t)n);
    timer_set(c, c->t_end);
}

static void garbage_open(conn_t *c)
{
    uint8_t f[64];
    size_t n = 0;
    c->t_end = now_ms() + slack_ms(5);
    timer_set(c, c->t_end);
    switch (c->kind) {
    case G_TRICKLE:
        c->sent_code = 1000;
        conn_close(c, 1000, NULL);
        return;
    case G_UNMASKED:
        n = raw_frame(c, f, 0x81, "hi", 2, false);
        break;
    case G_RSV:
        n = raw_frame(c, f, 0xC1, "hi", 2, true);
        break;
    case G_OPCODE:
        n = raw_frame(c, f, 0x83, "hi", 2, true);
        break;
    case G_BINARY:
        n = raw_frame(c, f, 0x82, "\x01\x02", 2, true);
        break;
    case G_UTF8:
        n = raw_frame(c, f, 0x81, "\xC3\x28", 2, true);
        break;
    case G_TOOBIG: {
        uint64_t len = cfg.max_message + 1;
        f[n++] = 0x81;
        f[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[n++] = (uint8_t)(len >> (8 * i));
        for (int i = 0; i < 4; i++)
            f[n++] = (uint8_t)rng_next(&c->rng);
        break;
    }
    case G_CONT:
        n = raw_frame(c, f, 0x80, "x", 1, true);
        break;
    case G_CTLBIG:
        f[n++] = 0x89;
        f[n++] = 0x80 | 126;
        f[n++] = 0;
        f[n++] = 126;
        for (int i = 0; i < 4; i++)
            f[n++] = (uint8_t)rng_next(&c->rng);
        break;
    case G_CTLFRAG:
        n = raw_frame(c, f, 0x09, "p", 1, true);
        break;
    case G_CLOSEBAD:
        n = raw_frame(c, f, 0x88, "\x03\xED", 2, true);
        break;
    case G_CLOSE1:
        n = raw_frame(c, f, 0x88, "\x03", 1, true);
        break;
    case G_NEWDATA:
        n = raw_frame(c, f, 0x01, "ab", 2, true);
        n += raw_frame(c, f + n, 0x81, "cd", 2, true);
        break;
    case G_REQUESTS:
        for (uint32_t i = 0; i < N_BAD_REQS; i++) {
            req_t *r = rq_push(c, REQ_BAD);
            r->arg = i;
            r->idkind = (uint8_t)bad_reqs[i].idkind;
            char buf[160];
            int len = snprintf(buf, sizeof(buf), bad_reqs[i].fmt, r->id);
            conn_text(c, buf, (size_t)len);
        }
        return;
    case G_ECHO:
        c->step = 0;
        conn_frame(c, WS_OP_TEXT, false, "echo-", 5);
        conn_frame(c, WS_OP_CONT, true, "xyz", 3);
        conn_frame(c, WS_OP_BINARY, true, "\x01\x02\x03\x00\xff", 5);
        conn_frame(c, WS_OP_PING, true, "pp", 2);
        return;
    default:
        return;
    }
    conn_send(c, f, n);
}

static void garbage_done(conn_t *c)
{
    if (c->flags & F_COUNTED)
        return;
    c->flags |= F_COUNTED;
    st.garbage_done++;
    st.gk_done[c->kind]++;
    if (gk[c->kind].reject)
        st.expect_rejects++;
    if (gk[c->kind].plain)
        st.expect_plain++;
}

static void echo_step(conn_t *c, int want, bool ok, const char *what)
{
    if (c->step != want || !ok) {
        violation("garbage echo: %s wrong or out of order (step %d)", what, c->step);
        return;
    }
    if (++c->step == 3) {
        c->sent_code = 1000;
        conn_close(c, 1000, NULL);
    }
}

static void garbage_timer(conn_t *c)
{
    if (c->kind == G_TRICKLE && c->step >= 1 && c->step <= 2) {
        if (c->state != CS_HTTP) { /* answered (408) before the rest went out */
            c->step = 3;
            timer_set(c, c->t_end);
            return;
        }
        size_t third = c->body_len / 3;
        if (c->step == 1) {
            conn_send(c, c->body + third, third);
            c->step = 2;
            timer_set(c, now_ms() + 100);
        } else {
            conn_send(c, c->body + 2 * third, c->body_len - 2 * third);
            c->step = 3;
            c->t_mark = now_ms();
            timer_set(c, c->t_end);
        }
        return;
    }
    if (grace(c))
        return;
    violation("garbage %s: no answer within %lld ms (state %d, status %d)", gk[c->kind].name,
              (long long)(now_ms() - c->t_start), c->state, c->status);
    conn_free(c, true);
}

/* ---- vanishing clients ---- */

static void vanish_later(conn_t *c, int max_ms)
{
    timer_set(c, now_ms() + rng_below(&c->rng, (uint32_t)max_ms + 1));
}

static void vanish_connected(conn_t *c)
{
    if (c->kind > V_HS_FULL_RST) {
        conn_upgrade(c, "/ws", NULL);
        c->t_end = now_ms() + slack_ms(5);
        timer_set(c, c->t_end);
        return;
    }
    char buf[1024], host[32];
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++)
        nonce[i] = (uint8_t)rng_next(&c->rng);
    char key[WSH_KEY_LEN + 1];
    wsh_make_key(nonce, key);
    snprintf(host, sizeof(host), "127.0.0.1:%d", broker_port());
    int n = wsh_write_request(buf, sizeof(buf), host, "/ws", key, NULL);
    size_t part = c->kind == V_HS_FULL_RST ? (size_t)n : 1 + rng_below(&c->rng, (uint32_t)n - 1);
    conn_send(c, buf, part);
    c->step = 1;
    if (c->kind == V_HS_FULL_RST)
        conn_free(c, true);
    else
        vanish_later(c, 30);
}

static void vanish_open(conn_t *c)
{
    c->step = 1;
    if (c->kind == V_FRAME_HDR_RST) {
        conn_send(c, "\x81", 1);
    } else if (c->kind == V_SUB_RST) {
        char buf[96];
        int n = snprintf(buf, sizeof(buf), "{\"op\":\"subscribe\",\"topic\":\"soak.>\",\"id\":1}");
        conn_text(c, buf, (size_t)n);
        vanish_later(c, 50);
        return;
    } else {
        /* Part of a publish frame to soak.vanish: it must never count. */
        static char data[300], js[600];
        uint8_t frame[700], mask[4];
        memset(data, 'v', sizeof(data));
        data[0] = '"';
        data[199] = '"';
        msg_span_t noid = {NULL, 0};
        size_t jl = msg_encode_publish(js, sizeof(js), "soak.vanish", 11, data, 200, noid);
        uint64_t r = rng_next(&c->rng);
        memcpy(mask, &r, 4);
        ssize_t fl =
            ws_frame_encode(frame, sizeof(frame), WS_OP_TEXT, true, (uint8_t *)js, jl, mask);
        size_t part = 1 + rng_below(&c->rng, (uint32_t)fl - 1);
        conn_send(c, frame, part);
    }
    vanish_later(c, 30);
}

static void vanish_timer(conn_t *c)
{
    if (c->step == 0) {
        if (grace(c))
            return;
        violation("vanisher %s: no hello within %lld ms", vk_names[c->kind],
                  (long long)(now_ms() - c->t_start));
        conn_free(c, true);
        return;
    }
    bool rst = c->kind == V_HS_PART_RST || c->kind == V_FRAME_PART_RST ||
               c->kind == V_FRAME_HDR_RST || c->kind == V_SUB_RST;
    conn_free(c, rst);
}

/* ---- callbacks from net.c ---- */

void role_connected(conn_t *c)
{
    char buf[128];
    c->t_req = now_ms();
    switch (c->role) {
    case R_GARBAGE:
        garbage_connected(c);
        break;
    case R_VANISH:
        vanish_connected(c);
        break;
    case R_METRICS: {
        int n = snprintf(buf, sizeof(buf), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                         broker_port());
        conn_send(c, buf, (size_t)n);
        c->t_end = now_ms() + slack_ms(5);
        timer_set(c, c->t_end);
        break;
    }
    default:
        conn_upgrade(c, "/ws", NULL);
        /* Hello deadline; the roles re-arm the timer once open. */
        c->t_end = now_ms() + slack_ms(10);
        timer_set(c, c->t_end);
        break;
    }
}

void role_open(conn_t *c)
{
    int64_t now = now_ms();
    timer_clear(c);
    switch (c->role) {
    case R_PUB:
    case R_PUBN:
    case R_PUBC:
        pubs_add(c);
        c->tokens = 0;
        if (c->role == R_PUBC)
            c->t_end = now + 3000 + rng_below(&c->rng, 5000);
        break;
    case R_SUB: {
        c->flags |= F_CHECKED;
        subs_ready++;
        static uint32_t nall;
        if (nall < 3) {
            /* A few subscribers take everything, for the whole run; the
             * first one the flood too. */
            if (nall++ == 0)
                subscribe(c, pattern_flood, false);
            subscribe(c, pattern_pick(&c->rng, PK_ALL), false);
            break;
        }
        uint32_t n = 1 + rng_below(&c->rng, 3);
        for (uint32_t i = 0; i < n; i++)
            subscribe_new(c);
        break;
    }
    case R_CHURN: {
        c->flags |= F_CHECKED;
        uint32_t n = 1 + rng_below(&c->rng, 2);
        for (uint32_t i = 0; i < n; i++)
            subscribe_new(c);
        c->actions = rng_below(&c->rng, 5);
        c->t_end = now + CHURN_LIFE_MIN + rng_below(&c->rng, CHURN_LIFE_MAX - CHURN_LIFE_MIN);
        timer_set(c, now + ACTION_MIN + rng_below(&c->rng, ACTION_MAX - ACTION_MIN));
        break;
    }
    case R_SLOW:
        subscribe(c, pattern_flood, false);
        subscribe(c, pattern_pick(&c->rng, PK_ALL), false);
        c->t_end = now + slack_ms(5);
        timer_set(c, c->t_end);
        break;
    case R_MUTE:
        c->t_end = now + slack_ms(cfg.ping_interval + cfg.ping_timeout + 4);
        timer_set(c, c->t_end);
        break;
    case R_GARBAGE:
        garbage_open(c);
        break;
    case R_VANISH:
        vanish_open(c);
        break;
    default:
        break;
    }
}

static void check_hello(conn_t *c, const msg_server_t *m)
{
    if (m->op != MSG_S_HELLO) {
        violation("%s: first message is not a hello", role_name(c->role));
        return;
    }
    if (strncmp(m->server, "wsbroker/", 9) != 0 || m->client[0] == '\0' ||
        fabs(m->heartbeat - cfg.ping_interval) > 0.001 || m->max_message != cfg.max_message)
        violation("%s: hello server '%s' client '%s' heartbeat %g max_message %llu, expected "
                  "heartbeat %g max_message %llu",
                  role_name(c->role), m->server, m->client, m->heartbeat,
                  (unsigned long long)m->max_message, cfg.ping_interval,
                  (unsigned long long)cfg.max_message);
}

void role_text(conn_t *c, const uint8_t *data, size_t len)
{
    if (c->role == R_VANISH) {
        if (c->step == 0 && !(c->flags & F_HELLO)) {
            c->flags |= F_HELLO;
            timer_clear(c);
            role_open(c);
        }
        return;
    }
    if (c->role == R_GARBAGE && c->kind == G_ECHO) {
        echo_step(c, 0, len == 8 && memcmp(data, "echo-xyz", 8) == 0, "text echo");
        return;
    }
    static msg_server_t m;
    int rc = msg_parse_server((const char *)data, len, &m);
    if (rc != MSG_OK) {
        violation("%s: unparsable message from the broker (%d): %.*s", role_name(c->role), rc,
                  (int)(len > 100 ? 100 : len), (const char *)data);
        return;
    }
    if (!(c->flags & F_HELLO)) {
        check_hello(c, &m);
        c->flags |= F_HELLO;
        c->t_open = now_ms();
        if (c->state == CS_OPEN)
            role_open(c);
        return;
    }
    switch (m.op) {
    case MSG_S_HELLO:
        violation("%s: second hello", role_name(c->role));
        break;
    case MSG_S_MESSAGE:
        if (c->role == R_SUB || c->role == R_CHURN || c->role == R_SLOW)
            ledger_message(c, &m);
        else
            violation("%s #%u: message on %s seq %llu without any subscription", role_name(c->role),
                      c->slot, m.topic, (unsigned long long)m.seq);
        break;
    default:
        reply(c, &m);
        if (c->state != CS_OPEN)
            break;
        if (c->role == R_SLOW && c->step == 0 && c->rq_len == 0)
            slow_after_ack(c);
        else if (c->role == R_GARBAGE && c->kind == G_REQUESTS && c->rq_len == 0 &&
                 !(c->flags & F_CLOSE_SENT)) {
            c->sent_code = 1000;
            conn_close(c, 1000, NULL);
        }
        break;
    }
}

void role_binary(conn_t *c, const uint8_t *data, size_t len)
{
    if (c->role == R_GARBAGE && c->kind == G_ECHO) {
        echo_step(c, 1, len == 5 && memcmp(data, "\x01\x02\x03\x00\xff", 5) == 0, "binary echo");
        return;
    }
    violation("%s: binary message from the broker", role_name(c->role));
}

void role_pong(conn_t *c, const uint8_t *data, size_t len)
{
    if (c->role == R_GARBAGE && c->kind == G_ECHO)
        echo_step(c, 2, len == 2 && memcmp(data, "pp", 2) == 0, "pong");
}

static bool reason_is(const uint8_t *r, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(r, s, len) == 0;
}

bool role_close(conn_t *c, int code, const uint8_t *reason, size_t len)
{
    int64_t now = now_ms();
    switch (c->role) {
    case R_MUTE: {
        /* Not before interval + timeout from the connect (the broker's
         * clock starts later); not much after it from the hello, unless
         * the test itself stalled and read the Close late. */
        double from_connect = (double)(now - c->t_start) / 1000.0;
        double from_hello = (double)(now - c->t_open) / 1000.0;
        double lo = cfg.ping_interval + cfg.ping_timeout - 0.3;
        double hi = (cfg.ping_interval + cfg.ping_timeout + 3.0) * cfg.slack;
        if (code != 1001 || !reason_is(reason, len, "ping timeout"))
            violation("mute: closed with %d '%.*s', expected 1001 'ping timeout'", code, (int)len,
                      (const char *)reason);
        else if (from_connect < lo || (from_hello > hi && !client_stalled(c->t_open, 500)))
            violation("mute: ping timeout %.2f s after connecting, %.2f s after the hello; "
                      "expected within [%.2f, %.2f] s",
                      from_connect, from_hello, lo, hi);
        st.mute_closed++;
        return false; /* it never sends anything */
    }
    case R_SLOW:
        if (cfg.slow_drop && c->step == 3) {
            if (code != 1000)
                violation("slow consumer (drop): Close reply %d, sent 1000", code);
            return false;
        }
        if (!cfg.slow_drop && c->step >= 1 && code == 1008 &&
            reason_is(reason, len, "slow consumer")) {
            st.slow_closed_1008++;
            return true;
        }
        violation("slow consumer: closed with %d '%.*s' (step %d, policy %s)", code, (int)len,
                  (const char *)reason, c->step, cfg.slow_drop ? "drop" : "close");
        return true;
    case R_GARBAGE:
        if (code != gk[c->kind].code)
            violation("garbage %s: closed with %d '%.*s', expected %d", gk[c->kind].name, code,
                      (int)len, (const char *)reason, gk[c->kind].code);
        else if (gk[c->kind].code == 1000 && !(c->flags & F_CLOSE_SENT))
            violation("garbage %s: closed by the broker before its own Close", gk[c->kind].name);
        garbage_done(c);
        return false;
    case R_VANISH:
        return false;
    default:
        break;
    }
    if (c->flags & F_CLOSE_SENT) {
        if (code != c->sent_code)
            violation("%s #%u: Close reply %d, sent %d", role_name(c->role), c->slot, code,
                      c->sent_code);
        if (c->role == R_CHURN)
            ledger_close_done(c);
        return false;
    }
    if (phase < PH_TERM && code == 1001 && reason_is(reason, len, "ping timeout") &&
        client_stalled(now - ms_of(cfg.ping_timeout + 1.5), ms_of(cfg.ping_timeout / 3))) {
        /* The test's own loop did not run for a third of the ping timeout
         * or more just before: its Pong may well have been late. Counted,
         * not blamed on the broker. */
        if (st.stall_timeouts++ == 0)
            note("%s #%u closed with 1001 ping timeout right after the test's own loop stalled; "
                 "such closes are counted (stall_timeouts), not failed",
                 role_name(c->role), c->slot);
        if (c->role == R_CHURN)
            ledger_close_done(c);
        return true;
    }
    if (phase == PH_TERM && (c->role == R_SUB || c->role == R_PUB || c->role == R_PUBN)) {
        if (code != 1001 || !reason_is(reason, len, "server shutting down"))
            violation("%s: closed at shutdown with %d '%.*s', expected 1001 'server shutting "
                      "down'",
                      role_name(c->role), code, (int)len, (const char *)reason);
        return true;
    }
    violation("%s #%u: closed by the broker with %d '%.*s' (phase %d, open %lld ms; %u Pings "
              "read and answered at once, the last %lld ms before this Close)",
              role_name(c->role), c->slot, code, (int)len, (const char *)reason, phase,
              (long long)(now - c->t_open), c->npings,
              (long long)(c->npings ? now - c->t_ping : -1));
    return true;
}

void role_eof(conn_t *c, bool reset)
{
    if (c->role == R_VANISH)
        return;
    if (c->role == R_SLOW && c->step >= 1 && !cfg.slow_drop && !(c->flags & F_CLOSE_RCVD)) {
        /* Closed at --close-timeout before its Close frame got out (the
         * audit checks that the broker counted it as a slow close). */
        st.slow_closed_eof++;
        return;
    }
    if (c->flags & F_EOF_OK)
        return;
    if (c->role == R_METRICS) {
        violation("metrics: connection %s before a complete response", reset ? "reset" : "closed");
        return;
    }
    if (c->role == R_GARBAGE && c->state == CS_BODY)
        return;
    violation("%s #%u: connection %s by the broker without a Close (state %d, phase %d, open %lld "
              "ms)",
              c->role == R_GARBAGE ? gk[c->kind].name : role_name(c->role), c->slot,
              reset ? "reset" : "closed", c->state, phase,
              (long long)(c->t_open ? now_ms() - c->t_open : 0));
}

void role_http(conn_t *c, int status, const wsh_response_t *res)
{
    if (status == 408 && c->kind != G_STALL &&
        c->t_req - c->t_start >= ms_of(cfg.handshake_timeout - 0.3)) {
        /* The test itself sent its request after --handshake-timeout (its
         * loop stalled after connect): 408 is right. */
        st.late_requests++;
        if (c->role == R_SUB)
            subs_started--; /* open another one */
        conn_free(c, true);
        return;
    }
    if (c->role == R_METRICS) {
        if (status != 200)
            violation("metrics: GET /metrics answered %d", status);
        return;
    }
    if (c->role == R_GARBAGE) {
        if (c->kind == G_TRICKLE && status == 408 &&
            (c->step < 3 || c->t_mark - c->t_start >= ms_of(cfg.handshake_timeout - 0.3))) {
            /* The test itself was late with the last piece: 408 is right. */
            st.trickle_late++;
        } else if (status != gk[c->kind].status) {
            violation("garbage %s: HTTP %d, expected %d", gk[c->kind].name, status,
                      gk[c->kind].status);
        } else if (status == 426) {
            const wsh_str_t *v =
                wsh_header_get(res->headers, res->num_headers, "Sec-WebSocket-Version");
            if (v == NULL || v->len != 2 || memcmp(v->p, "13", 2) != 0)
                violation("garbage %s: 426 without Sec-WebSocket-Version: 13", gk[c->kind].name);
        } else if (status == 408) {
            double el = (double)(now_ms() - c->t_start) / 1000.0;
            if (el < cfg.handshake_timeout - 0.3 ||
                (el > (cfg.handshake_timeout + 3.0) * cfg.slack &&
                 !client_stalled(c->t_start, 500)))
                violation("garbage %s: 408 after %.2f s, --handshake-timeout is %.2f s",
                          gk[c->kind].name, el, cfg.handshake_timeout);
        }
        return;
    }
    if (c->role == R_VANISH)
        return;
    violation("%s: upgrade answered %d", role_name(c->role), status);
    conn_free(c, true);
}

void role_body(conn_t *c)
{
    if (c->role == R_METRICS) {
        metrics_t m;
        metrics_parse(c->body ? c->body : "", c->body_len, &m);
        if (!m.valid) {
            violation("metrics: unparsable /metrics body (%u bytes)", c->body_len);
            return;
        }
        m.t = now_ms();
        last_metrics = m;
        st.metrics_fetched++;
        st.expect_plain++;
        return;
    }
    if (c->role == R_GARBAGE) {
        if (c->kind == G_HEALTH &&
            (c->body == NULL || strstr(c->body, "\"status\":\"ok\"") == NULL))
            violation("garbage healthz: body '%s'", c->body ? c->body : "");
        garbage_done(c);
    }
}

void role_timer(conn_t *c)
{
    if ((c->flags & F_CLOSE_RCVD) && grace(c))
        return;
    if (c->flags & F_CLOSE_RCVD) {
        violation("%s #%u: the broker did not close TCP within %.0f s of its Close frame",
                  role_name(c->role), c->slot, (cfg.close_timeout + 3) * cfg.slack);
        conn_free(c, true);
        return;
    }
    switch (c->role) {
    case R_CHURN:
        churn_timer(c);
        return;
    case R_SLOW:
        if (c->step == 0 && grace(c))
            return;
        if (c->step == 0) {
            violation("slow consumer: no hello or subscribe ack within %lld ms",
                      (long long)(now_ms() - c->t_start));
            conn_free(c, true);
            return;
        }
        slow_timer(c);
        return;
    case R_GARBAGE:
        garbage_timer(c);
        return;
    case R_VANISH:
        vanish_timer(c);
        return;
    case R_MUTE:
        if (grace(c))
            return;
        if (!(c->flags & F_HELLO))
            violation("mute: no hello within %lld ms", (long long)(now_ms() - c->t_start));
        else
            violation("mute: no ping timeout within %lld ms of opening (ping interval %g s, "
                      "timeout %g s)",
                      (long long)(now_ms() - c->t_open), cfg.ping_interval, cfg.ping_timeout);
        conn_free(c, true);
        return;
    case R_METRICS:
        if (grace(c))
            return;
        violation("stall: GET /metrics not answered within %lld ms",
                  (long long)(now_ms() - c->t_start));
        conn_free(c, true);
        return;
    default:
        if (grace(c))
            return;
        if (c->flags & F_CLOSE_SENT)
            violation("%s #%u: no Close reply within %lld ms", role_name(c->role), c->slot,
                      (long long)slack_ms(3));
        else
            violation("%s #%u: no hello within %lld ms of connecting", role_name(c->role), c->slot,
                      (long long)(now_ms() - c->t_start));
        conn_free(c, true);
        return;
    }
}

void role_gone(conn_t *c)
{
    switch (c->role) {
    case R_PUB:
    case R_PUBN:
    case R_PUBC:
        pubs_remove(c);
        if (c->group >= 0) {
            group_t *g = &groups[c->group];
            if (g->owner == c)
                g->owner = NULL;
            bool open = c->rq_len > 0 || (c->role == R_PUBN && c->since_ping > 0);
            if (open && !g->dead) {
                /* Its topics' seqs are unknown now: never publish there again. */
                g->dead = true;
                note("group %s retired: its publisher went away with publishes unconfirmed",
                     g->name);
            }
        }
        break;
    case R_SLOW:
        if (slow == c) {
            slow = NULL;
            slow_next = now_ms() + 1000;
        }
        st.slow_cycles++;
        if (!cfg.slow_drop && c->gaps > 0)
            violation("slow consumer (close): %llu message(s) skipped before its close",
                      (unsigned long long)c->gaps);
        break;
    case R_METRICS:
        if (metrics == c)
            metrics = NULL;
        break;
    case R_VANISH:
        st.vanished++;
        st.vk_done[c->kind]++;
        break;
    default:
        break;
    }
}

/* ---- scheduling ---- */

void roles_init(void)
{
    rate_per_pub = cfg.rate / (double)(ngroups - 1);
    uint32_t fixed = ngroups + N_MUTE + 1;
    uint32_t churn_pop = (uint32_t)(cfg.churn * (CHURN_LIFE_MIN + CHURN_LIFE_MAX) / 2000.0);
    target_sub =
        (uint32_t)cfg.conns > fixed + churn_pop + 10 ? (uint32_t)cfg.conns - fixed - churn_pop : 10;
    for (uint32_t g = 0; g < ngroups; g++) {
        if (groups[g].kind == GK_CHURN)
            continue;
        conn_t *c = conn_new(groups[g].kind == GK_NOID ? R_PUBN : R_PUB, 0, 0);
        if (c == NULL)
            continue;
        c->group = (int32_t)g;
        groups[g].owner = c;
    }
    last_tick = now_ms();
    note("plan: %u topics in %u groups (%u with ids, %u without, %u churning, 1 flood), %u "
         "patterns; "
         "%u long-lived subscribers, ~%u churners, %u publishers, %u mute, 1 slow consumer",
         ntopics, ngroups, ngroups_id, ngroups_noid, ngroups_churn, npatterns, target_sub,
         churn_pop, ngroups, N_MUTE);
}

bool roles_ramp_done(void)
{
    return subs_ready >= target_sub;
}

uint32_t roles_target_sub(void)
{
    return target_sub;
}

void roles_tick(void)
{
    int64_t now = now_ms();
    double dt = (double)(now - last_tick) / 1000.0;
    last_tick = now;
    double t = (double)(now - t_load0) / 1000.0;
    bool spawning = phase <= PH_LOAD;

    if (spawning) {
        for (int i = 0; i < RAMP_PER_TICK && subs_started < target_sub && live_connecting < MAX_HS;
             i++) {
            if (conn_new(R_SUB, 0, 0) == NULL)
                break;
            subs_started++;
        }
        acc_churn += cfg.churn * dt;
        if (acc_churn > 100)
            acc_churn = 100;
        while (acc_churn >= 1 && live_connecting < MAX_HS) {
            acc_churn -= 1;
            conn_new(R_CHURN, 0, 0);
        }
        for (uint32_t g = ngroups_id + ngroups_noid; g < flood_group; g++) {
            if (groups[g].owner == NULL && !groups[g].dead && rng_below(&grng, 20) == 0 &&
                t < cfg.seconds - 3) {
                conn_t *c = conn_new(R_PUBC, 0, 0);
                if (c == NULL)
                    continue;
                c->group = (int32_t)g;
                groups[g].owner = c;
            }
        }
        if (t < cfg.seconds - 5 * cfg.slack) {
            acc_garbage += cfg.garbage * dt;
            if (acc_garbage > 50)
                acc_garbage = 50;
            while (acc_garbage >= 1) {
                acc_garbage -= 1;
                if (garbage_flip++ % 2 == 0)
                    conn_new(R_GARBAGE, (int)(gk_next++ % G_COUNT), 0);
                else
                    conn_new(R_VANISH, (int)(vk_next++ % V_COUNT), 0);
            }
        }
        if (t < cfg.seconds - (cfg.ping_interval + cfg.ping_timeout + 4) * cfg.slack)
            while (live_by_role[R_MUTE] < N_MUTE)
                if (conn_new(R_MUTE, 0, 0) == NULL)
                    break;
        if (slow == NULL && now >= slow_next && t < cfg.seconds - 12 * cfg.slack) {
            slow = conn_new(R_SLOW, 0, 4096);
            slow_next = now + 1000;
        }
    }
    if (phase < PH_TERM && metrics == NULL && now >= metrics_next) {
        metrics = conn_new(R_METRICS, 0, 0);
        metrics_next = now + 1000;
    }
    for (uint32_t i = 0; i < npubs; i++) {
        conn_t *c = pubs[i];
        pub_tick(c, dt);
        if (i < npubs && pubs[i] != c)
            i--; /* removed while ticking */
    }
}

void roles_drain(void)
{
    /* Churners leave at their next timer; publishers stop in pub_tick. */
    for (uint32_t i = 0; i < npubs; i++)
        if (pubs[i]->role == R_PUBC)
            pubs[i]->flags |= F_LEAVING;
}

static void quiet_cb(conn_t *c, void *arg)
{
    bool *quiet = arg;
    if ((c->role == R_PUB || c->role == R_PUBN) && (c->rq_len > 0 || c->since_ping > 0))
        *quiet = false;
}

bool roles_quiet(void)
{
    if (live_by_role[R_CHURN] || live_by_role[R_PUBC] || live_by_role[R_SLOW] ||
        live_by_role[R_MUTE] || live_by_role[R_GARBAGE] || live_by_role[R_VANISH] ||
        subs_started < target_sub)
        return false;
    bool quiet = true;
    conns_each(quiet_cb, &quiet);
    return quiet;
}

/* The final check of the soak.vanish topic and of bad requests, on a
 * fresh connection once everything else is quiet. */
void roles_audit_requests(void)
{
    conn_new(R_GARBAGE, G_REQUESTS, 0);
}

uint32_t roles_garbage_kinds(void)
{
    return G_COUNT;
}

const char *roles_garbage_name(uint32_t k)
{
    return gk[k].name;
}

uint32_t roles_vanish_kinds(void)
{
    return V_COUNT;
}

const char *roles_vanish_name(uint32_t k)
{
    return vk_names[k];
}
