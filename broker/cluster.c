/*
 * cluster.c - the link to Redis in cluster mode (see cluster.h).
 *
 * Keys and channels (D: the Redis database number):
 *   wsb:epoch              the cluster's epoch, set once by the first node
 *   wsb:gens               generation counter for topics' epochs
 *   wsb:s:TOPIC            hash: seq, gen (expires after a week unused)
 *   wsb:h:TOPIC            list: retained messages, oldest first
 *   wsb:cD:TOPIC           pub/sub channel of the topic's messages
 * A message, in the history list and on the channel:
 *   SEQ|GEN|NODE|PUBID|MS|DATA
 * NODE and PUBID name the publish on its node (so the node can send the
 * publisher's ack before its own copy of the message), MS is Redis's clock
 * at the publish (for --history-ttl), DATA the raw JSON value.
 */
#include "cluster.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <wsproto/topic.h>

#include "link.h"
#include "log.h"
#include "registry.h"
#include "smap.h"
#include "worker.h"

#define STATE_TTL_S    604800 /* a topic's seq and generation, unused for a week */
#define CONNECT_MS     3000
#define RETRY_MIN_MS   100
#define RETRY_MAX_MS   5000
#define PENDING_MAX    100000 /* publishes waiting for Redis, per node */
#define PATTERN_TOPICS 1000   /* topics a wildcard `last` replays at most */

/* Publish: seq and generation, the history, the message on its channel. */
static const char publish_lua[] = "local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)\n"
                                  "local gen = redis.call('HGET', KEYS[1], 'gen')\n"
                                  "if not gen then\n"
                                  "  gen = redis.call('INCR', 'wsb:gens')\n"
                                  "  redis.call('HSET', KEYS[1], 'gen', gen)\n"
                                  "end\n"
                                  "redis.call('EXPIRE', KEYS[1], ARGV[7])\n"
                                  "local t = redis.call('TIME')\n"
                                  "local ms = t[1] * 1000 + math.floor(t[2] / 1000)\n"
                                  "local m = seq .. '|' .. gen .. '|' .. ARGV[2] .. '|' .. ARGV[3] "
                                  ".. '|' .. ms .. '|' .. ARGV[4]\n"
                                  "local cap = tonumber(ARGV[5])\n"
                                  "if cap > 0 then\n"
                                  "  redis.call('RPUSH', KEYS[2], m)\n"
                                  "  redis.call('LTRIM', KEYS[2], -cap, -1)\n"
                                  "  local ttl = tonumber(ARGV[6])\n"
                                  "  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end\n"
                                  "end\n"
                                  "redis.call('PUBLISH', ARGV[1], m)\n"
                                  "return seq\n";

/* Snapshot of a topic for a subscription: seq, generation (made now if the
 * topic is new, so its epoch is fixed from the first subscriber on), and
 * the newest ARGV[1] retained messages (-1: all, 0: none). */
static const char snapshot_lua[] =
    "local gen = redis.call('HGET', KEYS[1], 'gen')\n"
    "if not gen then\n"
    "  gen = redis.call('INCR', 'wsb:gens')\n"
    "  redis.call('HSET', KEYS[1], 'gen', gen)\n"
    "  redis.call('HSETNX', KEYS[1], 'seq', 0)\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "local seq = redis.call('HGET', KEYS[1], 'seq') or 0\n"
    "local n = tonumber(ARGV[1])\n"
    "local items = {}\n"
    "if n < 0 then items = redis.call('LRANGE', KEYS[2], 0, -1)\n"
    "elseif n > 0 then items = redis.call('LRANGE', KEYS[2], -n, -1) end\n"
    "return {tonumber(seq), tonumber(gen), items}\n";

/* The newest ARGV[2] retained messages of every topic whose history key
 * matches the glob ARGV[1], at most ARGV[3] topics: key, list, key, ... */
static const char pattern_lua[] =
    "local out = {}\n"
    "local cursor = '0'\n"
    "local n = 0\n"
    "repeat\n"
    "  local r = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)\n"
    "  cursor = r[1]\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    if n < tonumber(ARGV[3]) then\n"
    "      local items = redis.call('LRANGE', k, -tonumber(ARGV[2]), -1)\n"
    "      if #items > 0 then table.insert(out, k); table.insert(out, items); n = n + 1 end\n"
    "    end\n"
    "  end\n"
    "until cursor == '0'\n"
    "return out\n";

enum { R_PUBLISH, R_SUBSCRIBE, R_INTEREST };

/* A worker's request, copied: everything in one allocation. */
typedef struct req {
    struct req *next;
    uint8_t kind;
    bool wildcard, on, has_since, has_epoch;
    int wid;
    uint64_t conn, token, since;
    int64_t last;
    char *topic; /* topic or pattern */
    size_t tlen;
    char *data; /* publish: the JSON value */
    size_t dlen;
    char *id; /* the request's id (raw JSON), idlen 0 if none */
    size_t idlen;
    char *epoch;
    size_t epoch_len;
    char buf[];
} req_t;

/* A pattern the node subscribes to in Redis (by its Redis name), and the
 * subscribe requests waiting for Redis to confirm it. */
typedef struct pat {
    bool wildcard;
    bool wanted;       /* the node has subscribers for it */
    bool confirmed;    /* every SUBSCRIBE sent has been confirmed */
    uint32_t inflight; /* SUBSCRIBEs sent, not confirmed yet */
    req_t *waiters, *waiters_tail;
    size_t name_len;
    char name[];
} pat_t;

/* A publish waiting for Redis: its ack goes to the publisher first. */
typedef struct pend {
    uint64_t pubid;
    int wid;
    uint64_t conn;
    size_t idlen;
    size_t tlen;
    char buf[]; /* id, then topic */
} pend_t;

enum { L_DOWN, L_CONNECTING, L_UP };

struct cluster {
    broker_t *b;
    char host[256];
    int port, db;
    char user[128], password[256];
    char node[17];
    char chan_prefix[32]; /* "wsb:cD:" */
    size_t chan_prefix_len;

    pthread_t thread;
    uv_loop_t loop;
    uv_async_t wake, stop;
    uv_timer_t timer; /* connect timeout, or reconnect backoff */

    pthread_mutex_t mu; /* the request queue */
    req_t *head, *tail;

    /* Everything below: the link's thread only. */
    redisAsyncContext *cmd, *sub;
    bool cmd_ready, sub_ready; /* connected and set up */
    int state;
    unsigned backoff;
    char epoch[64];
    char sha_publish[41], sha_snapshot[41], sha_pattern[41];
    int setup_left; /* replies the command connection's setup still awaits */
    smap_t names;   /* Redis channel or glob -> pat_t */
    smap_t pends;   /* pubid (8 bytes) -> pend_t */
    smap_t gates;   /* (worker, connection) -> gate_t */
    uint64_t next_pubid;
    char last_topic[TOPIC_MAX + 1]; /* the message delivered last, to drop */
    size_t last_tlen;               /* the copy a pattern subscription */
    uint64_t last_seq, last_gen;    /* repeats right after it */

    _Atomic bool up;
    _Atomic uint64_t reconnects, errors, messages;
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- Setup ---- */

static const char *parse_url(cluster_t *cl, const char *url)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0)
        return "expected redis://HOST[:PORT][/DB]";
    p += 8;
    const char *at = strchr(p, '@');
    const char *slash = strchr(p, '/');
    if (at != NULL && (slash == NULL || at < slash)) {
        /* user:password@ or :password@ */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : 0;
        size_t plen = colon ? (size_t)(at - colon - 1) : (size_t)(at - p);
        if (ulen >= sizeof(cl->user) || plen >= sizeof(cl->password))
            return "user or password too long";
        memcpy(cl->user, p, ulen);
        memcpy(cl->password, colon ? colon + 1 : p, plen);
        p = at + 1;
    }
    const char *end = p + strlen(p);
    slash = strchr(p, '/');
    const char *hostend = slash ? slash : end;
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(hostend - p));
        if (rb == NULL)
            return "unclosed [ in the host";
        colon = rb + 1 < hostend && rb[1] == ':' ? rb + 1 : NULL;
        if ((size_t)(rb - p - 1) >= sizeof(cl->host))
            return "host too long";
        memcpy(cl->host, p + 1, (size_t)(rb - p - 1));
    } else {
        colon = memchr(p, ':', (size_t)(hostend - p));
        size_t hlen = (size_t)((colon ? colon : hostend) - p);
        if (hlen == 0 || hlen >= sizeof(cl->host))
            return "expected a host";
        memcpy(cl->host, p, hlen);
    }
    cl->port = 6379;
    if (colon != NULL) {
        char *e;
        long port = strtol(colon + 1, &e, 10);
        if (e != hostend || port < 1 || port > 65535)
            return "bad port";
        cl->port = (int)port;
    }
    if (slash != NULL && slash + 1 < end) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e != '\0' || db < 0 || db > 100000)
            return "bad database number";
        cl->db = (int)db;
    }
    return NULL;
}

static void on_wake(uv_async_t *a);
static void on_stop(uv_async_t *a);

cluster_t *cl_new(broker_t *b, const char *url, const char **err)
{
    cluster_t *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        *err = "out of memory";
        return NULL;
    }
    cl->b = b;
    if ((*err = parse_url(cl, url)) != NULL) {
        free(cl);
        return NULL;
    }
    uint8_t rnd[8];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        *err = "no random bytes for the node id";
        free(cl);
        return NULL;
    }
    for (int i = 0; i < 8; i++)
        snprintf(cl->node + 2 * i, 3, "%02x", rnd[i]);
    cl->chan_prefix_len =
        (size_t)snprintf(cl->chan_prefix, sizeof(cl->chan_prefix), "wsb:c%d:", cl->db);
    pthread_mutex_init(&cl->mu, NULL);
    smap_init(&cl->names);
    smap_init(&cl->pends);
    smap_init(&cl->gates);
    if (uv_loop_init(&cl->loop) != 0) {
        *err = "cannot make an event loop";
        free(cl);
        return NULL;
    }
    uv_async_init(&cl->loop, &cl->wake, on_wake);
    uv_async_init(&cl->loop, &cl->stop, on_stop);
    uv_timer_init(&cl->loop, &cl->timer);
    cl->wake.data = cl->stop.data = cl->timer.data = cl;
    return cl;
}

bool cl_up(cluster_t *cl)
{
    return atomic_load(&cl->up);
}

/* ---- Answers to workers ---- */

/* A JSON text frame for one connection of worker wid. */
static void post_direct(cluster_t *cl, int wid, uint64_t conn, uint64_t token, const char *json,
                        size_t len)
{
    frame_t *f = frame_make(WS_OP_TEXT, json, len);
    if (f == NULL)
        return;
    f->kind = FK_DIRECT;
    f->to = conn;
    f->token = token;
    wrk_post(cl->b, wid, f);
}

static void post_error(cluster_t *cl, int wid, uint64_t conn, const char *id, size_t idlen,
                       const char *code, const char *message)
{
    msg_span_t sid = {id, idlen};
    char buf[512];
    size_t cap = msg_error_bound(sid, code, message);
    char *out = cap <= sizeof(buf) ? buf : malloc(cap);
    if (out == NULL)
        return;
    size_t n = msg_encode_error(out, cap, sid, code, message);
    post_direct(cl, wid, conn, 0, out, n);
    if (out != buf)
        free(out);
}

static void post_marker(cluster_t *cl, int wid, uint64_t conn, uint64_t token, int kind,
                        uint64_t seq)
{
    frame_t *f = frame_new(0, 0);
    if (f == NULL)
        return;
    f->kind = (uint8_t)kind;
    f->to = conn;
    f->token = token;
    f->seq = seq;
    wrk_post(cl->b, wid, f);
}

static void post_ack(cluster_t *cl, int wid, uint64_t conn, const msg_ack_t *ack)
{
    if (ack->id.len == 0)
        return; /* success without an id is silent */
    char buf[512];
    size_t cap = msg_ack_bound(ack);
    char *out = cap <= sizeof(buf) ? buf : malloc(cap);
    if (out == NULL)
        return;
    size_t n = msg_encode_ack(out, cap, ack);
    post_direct(cl, wid, conn, 0, out, n);
    if (out != buf)
        free(out);
}

/* ---- Messages: SEQ|GEN|NODE|PUBID|MS|DATA ---- */

typedef struct entry {
    uint64_t seq, gen, pubid, ms;
    const char *node;
    size_t node_len;
    const char *data;
    size_t dlen;
} entry_t;

static bool parse_u64(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    while (*p < end && **p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    if (*p == s || *p >= end || **p != '|')
        return false;
    (*p)++;
    *out = v;
    return true;
}

static bool parse_entry(const char *m, size_t len, entry_t *e)
{
    const char *p = m, *end = m + len;
    if (!parse_u64(&p, end, &e->seq) || !parse_u64(&p, end, &e->gen))
        return false;
    const char *bar = memchr(p, '|', (size_t)(end - p));
    if (bar == NULL)
        return false;
    e->node = p;
    e->node_len = (size_t)(bar - p);
    p = bar + 1;
    if (!parse_u64(&p, end, &e->pubid) || !parse_u64(&p, end, &e->ms))
        return false;
    e->data = p;
    e->dlen = (size_t)(end - p);
    return e->dlen > 0;
}

static frame_t *message_frame(const char *topic, size_t tlen, const entry_t *e)
{
    size_t cap = msg_message_size(topic, tlen, e->seq, e->dlen);
    frame_t *f = frame_new(cap, tlen);
    if (f == NULL)
        return NULL;
    size_t n =
        msg_encode_message((char *)frame_payload(f), cap, topic, tlen, e->seq, e->data, e->dlen);
    frame_seal(f, WS_OP_TEXT, n);
    frame_set_topic(f, topic, tlen, e->seq);
    return f;
}

static void topic_epoch(const cluster_t *cl, uint64_t gen, char *out, size_t cap)
{
    snprintf(out, cap, "%s-%llu", cl->epoch, (unsigned long long)gen);
}

/* ---- Publishes ---- */

static pend_t *pend_take(cluster_t *cl, uint64_t pubid)
{
    return smap_del(&cl->pends, (const char *)&pubid, sizeof(pubid));
}

static void ack_publish(cluster_t *cl, pend_t *p, uint64_t seq)
{
    msg_ack_t ack = {.id = {p->buf, p->idlen},
                     .topic = p->buf + p->idlen,
                     .topic_len = p->tlen,
                     .has_seq = true,
                     .seq = seq,
                     .recovered = -1};
    post_ack(cl, p->wid, p->conn, &ack);
}

static void on_published(redisAsyncContext *ac, void *r, void *priv)
{
    cluster_t *cl = ac->data;
    redisReply *reply = r;
    uint64_t pubid = (uint64_t)(uintptr_t)priv;
    pend_t *p = pend_take(cl, pubid);
    if (p == NULL)
        return; /* acked already: the message came first */
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        atomic_fetch_add(&cl->errors, 1);
        LOG_LIMITED(LOG_WARN, -1, 0, "redis_publish_failed", "error=\"%s\"",
                    reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "connection lost");
        post_error(cl, p->wid, p->conn, p->buf, p->idlen, "unavailable",
                   "the cluster could not take the message; try again");
    } else {
        ack_publish(cl, p, (uint64_t)reply->integer);
    }
    free(p);
}

static void do_publish(cluster_t *cl, req_t *q)
{
    if (cl->state != L_UP || cl->pends.count >= PENDING_MAX) {
        post_error(cl, q->wid, q->conn, q->id, q->idlen, "unavailable",
                   cl->state != L_UP ? "the cluster is unreachable; try again"
                                     : "the cluster is overloaded; try again");
        return;
    }
    pend_t *p = malloc(sizeof(*p) + q->idlen + q->tlen);
    if (p == NULL) {
        post_error(cl, q->wid, q->conn, q->id, q->idlen, "unavailable", "out of memory");
        return;
    }
    p->pubid = ++cl->next_pubid;
    p->wid = q->wid;
    p->conn = q->conn;
    p->idlen = q->idlen;
    p->tlen = q->tlen;
    memcpy(p->buf, q->id, q->idlen);
    memcpy(p->buf + q->idlen, q->topic, q->tlen);
    if (smap_put(&cl->pends, (const char *)&p->pubid, sizeof(p->pubid), p) != 0) {
        free(p);
        post_error(cl, q->wid, q->conn, q->id, q->idlen, "unavailable", "out of memory");
        return;
    }
    char skey[TOPIC_MAX + 8], hkey[TOPIC_MAX + 8], chan[TOPIC_MAX + 40], pubid[24], cap[16],
        ttl[24], idle[16];
    int sk = snprintf(skey, sizeof(skey), "wsb:s:%.*s", (int)q->tlen, q->topic);
    int hk = snprintf(hkey, sizeof(hkey), "wsb:h:%.*s", (int)q->tlen, q->topic);
    int ch = snprintf(chan, sizeof(chan), "%s%.*s", cl->chan_prefix, (int)q->tlen, q->topic);
    int pl = snprintf(pubid, sizeof(pubid), "%llu", (unsigned long long)p->pubid);
    int cl_ = snprintf(cap, sizeof(cap), "%u", cl->b->cfg->history);
    int tl = snprintf(ttl, sizeof(ttl), "%llu",
                      (unsigned long long)(cl->b->cfg->history_ttl * 1000.0 + 0.5));
    int il = snprintf(idle, sizeof(idle), "%d", STATE_TTL_S);
    const char *argv[] = {"EVALSHA", cl->sha_publish, "2",     skey, hkey, chan,
                          cl->node,  pubid,           q->data, cap,  ttl,  idle};
    size_t lens[] = {7,  40,         1,       (size_t)sk,  (size_t)hk, (size_t)ch,
                     16, (size_t)pl, q->dlen, (size_t)cl_, (size_t)tl, (size_t)il};
    if (redisAsyncCommandArgv(cl->cmd, on_published, (void *)(uintptr_t)p->pubid, 12, argv, lens) !=
        REDIS_OK) {
        free(pend_take(cl, p->pubid));
        post_error(cl, q->wid, q->conn, q->id, q->idlen, "unavailable",
                   "the cluster is unreachable; try again");
    }
}

/* ---- Messages from Redis ---- */

static void on_message(cluster_t *cl, const char *chan, size_t clen, const char *m, size_t len)
{
    if (clen <= cl->chan_prefix_len || memcmp(chan, cl->chan_prefix, cl->chan_prefix_len) != 0)
        return;
    const char *topic = chan + cl->chan_prefix_len;
    size_t tlen = clen - cl->chan_prefix_len;
    entry_t e;
    if (tlen > TOPIC_MAX || !parse_entry(m, len, &e))
        return;
    /* A channel and a pattern of this node both matching: Redis sends the
     * message twice, one right after the other. */
    if (e.seq == cl->last_seq && e.gen == cl->last_gen && tlen == cl->last_tlen &&
        memcmp(topic, cl->last_topic, tlen) == 0)
        return;
    cl->last_seq = e.seq;
    cl->last_gen = e.gen;
    cl->last_tlen = tlen;
    memcpy(cl->last_topic, topic, tlen);
    atomic_fetch_add_explicit(&cl->messages, 1, memory_order_relaxed);
    if (e.node_len == 16 && memcmp(e.node, cl->node, 16) == 0) {
        /* Ours: the publisher's ack goes before its own copy. */
        pend_t *p = pend_take(cl, e.pubid);
        if (p != NULL) {
            ack_publish(cl, p, e.seq);
            free(p);
        }
    }
    frame_t *f = message_frame(topic, tlen, &e);
    if (f != NULL)
        reg_fanout(cl->b->reg, f);
}

/* ---- Subscriptions ---- */

static void answer_subscribe(cluster_t *cl, req_t *q, redisReply *reply);
static void subscribe_done(cluster_t *cl, req_t *q, redisReply *reply);

static void on_snapshot(redisAsyncContext *ac, void *r, void *priv)
{
    subscribe_done(ac->data, priv, r);
}

/* Ask Redis for what the subscription needs (the link is up). */
static void snapshot(cluster_t *cl, req_t *q)
{
    char a1[32], a2[16];
    if (q->wildcard) {
        if (q->last <= 0) {
            subscribe_done(cl, q, NULL);
            return;
        }
        /* History keys of topics the pattern may match (a superset: the
         * replies are matched exactly before anything is replayed). */
        char glob[2 * TOPIC_MAX + 16];
        size_t n = (size_t)snprintf(glob, sizeof(glob), "wsb:h:");
        for (size_t i = 0; i < q->tlen; i++) {
            bool wild_seg = (q->topic[i] == '*' || q->topic[i] == '>') &&
                            (i == 0 || q->topic[i - 1] == '.') &&
                            (i + 1 == q->tlen || q->topic[i + 1] == '.');
            if (wild_seg) {
                glob[n++] = '*';
                continue;
            }
            if (strchr("*?[]\\", q->topic[i]) != NULL)
                glob[n++] = '\\';
            glob[n++] = q->topic[i];
        }
        int l1 = snprintf(a1, sizeof(a1), "%lld", (long long)q->last);
        int l2 = snprintf(a2, sizeof(a2), "%d", PATTERN_TOPICS);
        const char *argv[] = {"EVALSHA", cl->sha_pattern, "0", glob, a1, a2};
        size_t lens[] = {7, 40, 1, n, (size_t)l1, (size_t)l2};
        if (redisAsyncCommandArgv(cl->cmd, on_snapshot, q, 6, argv, lens) != REDIS_OK)
            subscribe_done(cl, q, NULL);
        return;
    }
    char skey[TOPIC_MAX + 8], hkey[TOPIC_MAX + 8];
    int sk = snprintf(skey, sizeof(skey), "wsb:s:%.*s", (int)q->tlen, q->topic);
    int hk = snprintf(hkey, sizeof(hkey), "wsb:h:%.*s", (int)q->tlen, q->topic);
    int64_t want = q->has_since ? -1 : q->last > 0 ? q->last : 0;
    int l1 = snprintf(a1, sizeof(a1), "%lld", (long long)want);
    int l2 = snprintf(a2, sizeof(a2), "%d", STATE_TTL_S);
    const char *argv[] = {"EVALSHA", cl->sha_snapshot, "2", skey, hkey, a1, a2};
    size_t lens[] = {7, 40, 1, (size_t)sk, (size_t)hk, (size_t)l1, (size_t)l2};
    if (redisAsyncCommandArgv(cl->cmd, on_snapshot, q, 7, argv, lens) != REDIS_OK)
        subscribe_done(cl, q, NULL);
}

/* Replay one retained message to the subscriber (FK_DIRECT with its token). */
static void replay_entry(cluster_t *cl, const req_t *q, const char *topic, size_t tlen,
                         const entry_t *e)
{
    frame_t *f = message_frame(topic, tlen, e);
    if (f == NULL)
        return;
    f->kind = FK_DIRECT;
    f->to = q->conn;
    f->token = q->token;
    wrk_post(cl->b, q->wid, f);
}

static bool expired(const cluster_t *cl, const entry_t *e, uint64_t now)
{
    uint64_t ttl = (uint64_t)(cl->b->cfg->history_ttl * 1000.0 + 0.5);
    return ttl > 0 && e->ms + ttl <= now;
}

/* The subscription's answer, in order: the ack, the replay, then the
 * marker that makes it live (or an error and the failure marker). reply
 * NULL: nothing to read from Redis (or it failed, if the link is down). */
static void answer_subscribe(cluster_t *cl, req_t *q, redisReply *reply)
{
    bool failed = reply != NULL ? reply->type != REDIS_REPLY_ARRAY : cl->state != L_UP;
    if (failed) {
        atomic_fetch_add(&cl->errors, 1);
        post_error(cl, q->wid, q->conn, q->id, q->idlen, "unavailable",
                   "the cluster is unreachable; try again");
        if (q->token != 0)
            post_marker(cl, q->wid, q->conn, q->token, FK_SUB_FAILED, 0);
        return;
    }
    msg_ack_t ack = {.id = {q->id, q->idlen}, .recovered = -1};
    uint64_t now = wall_ms();
    if (q->wildcard) {
        post_ack(cl, q->wid, q->conn, &ack);
        for (size_t t = 0; reply != NULL && q->token != 0 && t + 1 < reply->elements; t += 2) {
            redisReply *key = reply->element[t], *items = reply->element[t + 1];
            if (key->type != REDIS_REPLY_STRING || key->len <= 6 ||
                items->type != REDIS_REPLY_ARRAY)
                continue;
            const char *topic = key->str + 6; /* after "wsb:h:" */
            size_t tlen = key->len - 6;
            if (tlen > TOPIC_MAX || topic_check(topic, tlen, false) != TOPIC_OK ||
                !topic_match(q->topic, q->tlen, topic, tlen))
                continue; /* the glob matched more than the pattern */
            for (size_t i = 0; i < items->elements; i++) {
                entry_t e;
                redisReply *it = items->element[i];
                if (it->type == REDIS_REPLY_STRING && parse_entry(it->str, it->len, &e) &&
                    !expired(cl, &e, now))
                    replay_entry(cl, q, topic, tlen, &e);
            }
        }
        if (q->token != 0)
            post_marker(cl, q->wid, q->conn, q->token, FK_SUB_READY, 0);
        return;
    }
    uint64_t seq = (uint64_t)reply->element[0]->integer;
    uint64_t gen = (uint64_t)reply->element[1]->integer;
    redisReply *items = reply->element[2];
    char epoch[96];
    topic_epoch(cl, gen, epoch, sizeof(epoch));
    ack.has_seq = true;
    ack.seq = seq;
    ack.epoch = epoch;
    /* Which retained messages go: after since (same epoch only), or the
     * last N; expired ones count as gone. */
    bool same_epoch = q->epoch == NULL ||
                      (q->epoch_len == strlen(epoch) && memcmp(q->epoch, epoch, q->epoch_len) == 0);
    uint64_t oldest = seq + 1;
    size_t first = items->elements;
    for (size_t i = 0; i < items->elements; i++) {
        entry_t e;
        redisReply *it = items->element[i];
        if (it->type == REDIS_REPLY_STRING && parse_entry(it->str, it->len, &e) &&
            !expired(cl, &e, now)) {
            oldest = e.seq;
            first = i;
            break;
        }
    }
    size_t from = items->elements;
    if (q->has_since) {
        if (!same_epoch || q->since > seq) {
            ack.recovered = 0;
        } else {
            ack.recovered = oldest <= q->since + 1;
            from = first;
        }
    }
    if (q->last >= 0) {
        size_t want_from = (uint64_t)q->last >= items->elements - first
                               ? first
                               : items->elements - (size_t)q->last;
        if (!q->has_since || want_from > from)
            from = q->has_since && !same_epoch ? items->elements : want_from;
    }
    if (q->token == 0 && q->has_since) {
        /* The subscription existed: it is live, nothing is replayed. */
        ack.recovered = ack.recovered == 1 && seq == q->since;
        from = items->elements;
    }
    post_ack(cl, q->wid, q->conn, &ack);
    for (size_t i = from; q->token != 0 && i < items->elements; i++) {
        entry_t e;
        redisReply *it = items->element[i];
        if (it->type != REDIS_REPLY_STRING || !parse_entry(it->str, it->len, &e) ||
            expired(cl, &e, now) || (q->has_since && e.seq <= q->since))
            continue;
        replay_entry(cl, q, q->topic, q->tlen, &e);
    }
    if (q->token != 0)
        post_marker(cl, q->wid, q->conn, q->token, FK_SUB_READY, seq);
}

/* ---- Per-connection order ----
 *
 * A client that subscribes and then publishes must see its own message,
 * as with one broker. Redis orders commands per connection only, and
 * SUBSCRIBE and the publishing script travel on different ones, so the
 * link holds a connection's publishes while any of its subscriptions is
 * not answered yet. */

typedef struct gate {
    uint64_t key;
    uint32_t open_subs;
    req_t *held, *held_tail;
} gate_t;

static uint64_t gate_key(int wid, uint64_t conn)
{
    return (uint64_t)wid << 56 | (conn & ((1ull << 56) - 1));
}

static void do_request(cluster_t *cl, req_t *q);

static gate_t *gate_get(cluster_t *cl, int wid, uint64_t conn, bool create)
{
    uint64_t key = gate_key(wid, conn);
    gate_t *g = smap_get(&cl->gates, (const char *)&key, sizeof(key));
    if (g != NULL || !create)
        return g;
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->key = key;
    if (smap_put(&cl->gates, (const char *)&g->key, sizeof(g->key), g) != 0) {
        free(g);
        return NULL;
    }
    return g;
}

/* A subscription of (wid, conn) was answered: its held publishes go. */
static void gate_release(cluster_t *cl, int wid, uint64_t conn)
{
    gate_t *g = gate_get(cl, wid, conn, false);
    if (g == NULL || --g->open_subs > 0)
        return;
    smap_del(&cl->gates, (const char *)&g->key, sizeof(g->key));
    req_t *q = g->held;
    free(g);
    while (q != NULL) {
        req_t *next = q->next;
        do_request(cl, q);
        q = next;
    }
}

static void subscribe_done(cluster_t *cl, req_t *q, redisReply *reply)
{
    int wid = q->wid;
    uint64_t conn = q->conn;
    answer_subscribe(cl, q, reply);
    free(q);
    gate_release(cl, wid, conn);
}

/* ---- Patterns the node subscribes to in Redis ---- */

/* Redis's name for a pattern: the channel of a topic, or a glob over the
 * channels (a superset: delivery matches exactly afterwards). */
static size_t redis_name(const cluster_t *cl, const char *pattern, size_t len, bool wildcard,
                         char *out)
{
    size_t n = cl->chan_prefix_len;
    memcpy(out, cl->chan_prefix, n);
    for (size_t i = 0; i < len; i++) {
        char c = pattern[i];
        bool wild_seg = wildcard && (c == '*' || c == '>') && (i == 0 || pattern[i - 1] == '.') &&
                        (i + 1 == len || pattern[i + 1] == '.');
        if (wild_seg) {
            out[n++] = '*';
            continue;
        }
        if (wildcard && strchr("*?[]\\", c) != NULL)
            out[n++] = '\\';
        out[n++] = c;
    }
    return n;
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv);

static void send_subscription(cluster_t *cl, pat_t *p, bool on)
{
    const char *cmd =
        p->wildcard ? (on ? "PSUBSCRIBE" : "PUNSUBSCRIBE") : (on ? "SUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[] = {cmd, p->name};
    size_t lens[] = {strlen(cmd), p->name_len};
    if (redisAsyncCommandArgv(cl->sub, on_sub_reply, cl, 2, argv, lens) == REDIS_OK && on)
        p->inflight++;
}

/* Redis confirmed one SUBSCRIBE of p; once all are, the waiting requests
 * get their snapshots. A pattern nobody wants any more goes now. */
static void pattern_confirmed(cluster_t *cl, pat_t *p)
{
    if (p->inflight > 0)
        p->inflight--;
    if (p->inflight > 0)
        return;
    if (!p->wanted) {
        smap_del(&cl->names, p->name, p->name_len);
        free(p);
        return;
    }
    p->confirmed = true;
    req_t *q = p->waiters;
    p->waiters = p->waiters_tail = NULL;
    while (q != NULL) {
        req_t *next = q->next;
        q->next = NULL;
        snapshot(cl, q);
        q = next;
    }
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    cluster_t *cl = priv;
    redisReply *reply = r;
    (void)ac;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    redisReply **el = reply->element;
    if (strcmp(kind, "message") == 0 && el[1]->type == REDIS_REPLY_STRING &&
        el[2]->type == REDIS_REPLY_STRING) {
        on_message(cl, el[1]->str, el[1]->len, el[2]->str, el[2]->len);
    } else if (strcmp(kind, "pmessage") == 0 && reply->elements >= 4 &&
               el[2]->type == REDIS_REPLY_STRING && el[3]->type == REDIS_REPLY_STRING) {
        on_message(cl, el[2]->str, el[2]->len, el[3]->str, el[3]->len);
    } else if ((strcmp(kind, "subscribe") == 0 || strcmp(kind, "psubscribe") == 0) &&
               el[1]->type == REDIS_REPLY_STRING) {
        pat_t *p = smap_get(&cl->names, el[1]->str, el[1]->len);
        if (p != NULL)
            pattern_confirmed(cl, p);
    }
}

static void do_interest(cluster_t *cl, req_t *q)
{
    char name[2 * TOPIC_MAX + 32];
    size_t nlen = redis_name(cl, q->topic, q->tlen, q->wildcard, name);
    pat_t *p = smap_get(&cl->names, name, nlen);
    if (q->on) {
        if (p == NULL) {
            p = calloc(1, sizeof(*p) + nlen + 1);
            if (p == NULL)
                return;
            p->wildcard = q->wildcard;
            p->name_len = nlen;
            memcpy(p->name, name, nlen);
            if (smap_put(&cl->names, p->name, p->name_len, p) != 0) {
                free(p);
                return;
            }
        }
        p->wanted = true;
        p->confirmed = false;
        if (cl->state == L_UP)
            send_subscription(cl, p, true);
        return;
    }
    if (p == NULL)
        return;
    p->wanted = false;
    p->confirmed = false;
    if (cl->state == L_UP)
        send_subscription(cl, p, false);
    /* Requests still waiting: their subscriptions are gone on the worker,
     * but each still gets its answer, in order. */
    req_t *w = p->waiters;
    p->waiters = p->waiters_tail = NULL;
    if (p->inflight == 0) {
        smap_del(&cl->names, p->name, p->name_len);
        free(p);
    }
    while (w != NULL) {
        req_t *next = w->next;
        w->next = NULL;
        if (cl->state == L_UP)
            snapshot(cl, w);
        else
            subscribe_done(cl, w, NULL);
        w = next;
    }
}

static void do_subscribe(cluster_t *cl, req_t *q)
{
    gate_t *g = gate_get(cl, q->wid, q->conn, true);
    if (g != NULL)
        g->open_subs++;
    if (cl->state != L_UP) {
        subscribe_done(cl, q, NULL);
        return;
    }
    char name[2 * TOPIC_MAX + 32];
    size_t nlen = redis_name(cl, q->topic, q->tlen, q->wildcard, name);
    pat_t *p = smap_get(&cl->names, name, nlen);
    if (p == NULL || p->confirmed) {
        /* Subscribed already (or gone again: answer all the same). */
        snapshot(cl, q);
        return;
    }
    q->next = NULL;
    if (p->waiters_tail != NULL)
        p->waiters_tail->next = q;
    else
        p->waiters = q;
    p->waiters_tail = q;
}

/* Take a request from the queue and act on it (the link's thread). */
static void do_request(cluster_t *cl, req_t *q)
{
    switch (q->kind) {
    case R_INTEREST:
        do_interest(cl, q);
        free(q);
        break;
    case R_SUBSCRIBE:
        do_subscribe(cl, q);
        break;
    case R_PUBLISH: {
        gate_t *g = gate_get(cl, q->wid, q->conn, false);
        if (g != NULL) {
            /* Behind a subscription of the same connection. */
            q->next = NULL;
            if (g->held_tail != NULL)
                g->held_tail->next = q;
            else
                g->held = q;
            g->held_tail = q;
            return;
        }
        do_publish(cl, q);
        free(q);
        break;
    }
    }
}

/* ---- hiredis on the link's libuv loop ----
 *
 * hiredis calls these to watch its socket. A poll error (a refused connect
 * reports one) is handed to hiredis as an event too, so it finds the
 * socket's error and reports it, instead of the connect hanging until the
 * timeout. */

typedef struct watch {
    redisAsyncContext *ac; /* NULL once hiredis has let go */
    uv_poll_t poll;
    int events;
} watch_t;

static void on_poll(uv_poll_t *h, int status, int events)
{
    watch_t *w = h->data;
    if (w->ac == NULL)
        return;
    if (status < 0) {
        /* Not connected yet: the write handler runs the connect check;
         * connected: a read sees the error and disconnects. */
        if (w->ac->c.flags & REDIS_CONNECTED)
            redisAsyncHandleRead(w->ac);
        else
            redisAsyncHandleWrite(w->ac);
        return;
    }
    if (events & UV_READABLE)
        redisAsyncHandleRead(w->ac);
    if (w->ac != NULL && (events & UV_WRITABLE))
        redisAsyncHandleWrite(w->ac);
}

static void watch_set(watch_t *w, int add, int del)
{
    w->events = (w->events | add) & ~del;
    if (w->events != 0)
        uv_poll_start(&w->poll, w->events, on_poll);
    else
        uv_poll_stop(&w->poll);
}

static void ev_add_read(void *p)
{
    watch_set(p, UV_READABLE, 0);
}

static void ev_del_read(void *p)
{
    watch_set(p, 0, UV_READABLE);
}

static void ev_add_write(void *p)
{
    watch_set(p, UV_WRITABLE, 0);
}

static void ev_del_write(void *p)
{
    watch_set(p, 0, UV_WRITABLE);
}

static void on_watch_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ev_cleanup(void *p)
{
    watch_t *w = p;
    w->ac = NULL;
    uv_close((uv_handle_t *)&w->poll, on_watch_closed);
}

static int watch_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    watch_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -1;
    if (uv_poll_init(loop, &w->poll, ac->c.fd) != 0) {
        free(w);
        return -1;
    }
    w->ac = ac;
    w->poll.data = w;
    ac->ev.data = w;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    return 0;
}

/* ---- Connection ---- */

static void link_connect(cluster_t *cl);

static void on_retry(uv_timer_t *t)
{
    cluster_t *cl = t->data;
    if (cl->state == L_DOWN)
        link_connect(cl);
}

/* Lost, refused or timed out: fail what waits on Redis, keep what the node
 * wants subscribed for the next connection, and try again later. */
static void link_down(cluster_t *cl, const char *why)
{
    if (cl->state == L_DOWN)
        return;
    bool was_up = cl->state == L_UP;
    cl->state = L_DOWN;
    cl->last_tlen = 0; /* a new Redis may count seqs and generations anew */
    cl->last_seq = 0;
    atomic_store(&cl->up, false);
    LOG(was_up ? LOG_WARN : LOG_INFO, -1, 0, "redis_down", "host=%s port=%d reason=\"%s\"",
        cl->host, cl->port, why);
    /* Disconnecting runs the pending callbacks (with no reply): the
     * publishes and snapshots waiting on Redis are answered there. */
    redisAsyncContext *cmd = cl->cmd, *sub = cl->sub;
    bool cmd_conn = cl->cmd_ready, sub_conn = cl->sub_ready;
    cl->cmd = cl->sub = NULL;
    cl->cmd_ready = cl->sub_ready = false;
    if (cmd != NULL) {
        if (cmd_conn || cmd->c.flags & REDIS_CONNECTED)
            redisAsyncDisconnect(cmd);
        else
            redisAsyncFree(cmd);
    }
    if (sub != NULL) {
        if (sub_conn || sub->c.flags & REDIS_CONNECTED)
            redisAsyncDisconnect(sub);
        else
            redisAsyncFree(sub);
    }
    /* Subscriptions must be made again on the next connection. */
    for (size_t i = 0; i < cl->names.cap; i++) {
        pat_t *p = cl->names.slots[i].value;
        if (cl->names.slots[i].hash == 0)
            continue;
        p->inflight = 0;
        p->confirmed = false;
        req_t *w = p->waiters;
        p->waiters = p->waiters_tail = NULL;
        while (w != NULL) {
            req_t *next = w->next;
            w->next = NULL;
            subscribe_done(cl, w, NULL);
            w = next;
        }
    }
    /* Patterns nobody wants any more can go now. */
    for (size_t i = 0; i < cl->names.cap;) {
        pat_t *p = cl->names.slots[i].value;
        if (cl->names.slots[i].hash != 0 && !p->wanted) {
            smap_del(&cl->names, p->name, p->name_len);
            free(p);
            continue; /* backward shift may have moved another entry here */
        }
        i++;
    }
    /* Publishes whose callbacks will not run (the contexts are gone). */
    for (size_t i = 0; i < cl->pends.cap; i++) {
        pend_t *p = cl->pends.slots[i].value;
        if (cl->pends.slots[i].hash == 0)
            continue;
        post_error(cl, p->wid, p->conn, p->buf, p->idlen, "unavailable",
                   "the cluster became unreachable; the message may or may not have been "
                   "published");
        free(p);
    }
    smap_destroy(&cl->pends);
    unsigned delay = cl->backoff ? cl->backoff : RETRY_MIN_MS;
    cl->backoff = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
    uint8_t jitter = 0;
    if (getrandom(&jitter, 1, 0) == 1)
        delay = delay / 2 + (delay / 2) * jitter / 255;
    uv_timer_start(&cl->timer, on_retry, delay, 0);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    cluster_t *cl = ac->data;
    (void)status;
    if (ac == cl->cmd)
        cl->cmd = NULL;
    if (ac == cl->sub)
        cl->sub = NULL;
    link_down(cl, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* Both connections set up: the link is up; subscribe to what is wanted. */
static void maybe_up(cluster_t *cl)
{
    if (cl->state != L_CONNECTING || !cl->cmd_ready || !cl->sub_ready)
        return;
    uv_timer_stop(&cl->timer);
    cl->state = L_UP;
    cl->backoff = 0;
    atomic_store(&cl->up, true);
    atomic_fetch_add(&cl->reconnects, 1);
    LOG(LOG_INFO, -1, 0, "redis_up", "host=%s port=%d node=%s epoch=%s", cl->host, cl->port,
        cl->node, cl->epoch);
    for (size_t i = 0; i < cl->names.cap; i++) {
        pat_t *p = cl->names.slots[i].value;
        if (cl->names.slots[i].hash != 0 && p->wanted)
            send_subscription(cl, p, true);
    }
}

/* Replies of the command connection's setup: AUTH, SELECT, SCRIPT LOAD x3,
 * SET NX and GET of the epoch, in that order. */
static void on_setup(redisAsyncContext *ac, void *r, void *priv)
{
    cluster_t *cl = ac->data;
    redisReply *reply = r;
    const char *step = priv;
    if (reply == NULL)
        return; /* disconnected: link_down runs */
    if (reply->type == REDIS_REPLY_ERROR) {
        LOG(LOG_ERROR, -1, 0, "redis_setup_failed", "step=%s error=\"%s\"", step, reply->str);
        link_down(cl, "setup failed");
        return;
    }
    char *dst = strcmp(step, "publish") == 0    ? cl->sha_publish
                : strcmp(step, "snapshot") == 0 ? cl->sha_snapshot
                : strcmp(step, "pattern") == 0  ? cl->sha_pattern
                                                : NULL;
    if (dst != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(dst, reply->str, 41);
    if (strcmp(step, "epoch") == 0) {
        if (reply->type != REDIS_REPLY_STRING || reply->len == 0 ||
            reply->len >= sizeof(cl->epoch)) {
            link_down(cl, "no cluster epoch");
            return;
        }
        memcpy(cl->epoch, reply->str, reply->len);
        cl->epoch[reply->len] = '\0';
    }
    if (--cl->setup_left == 0) {
        if (ac == cl->cmd)
            cl->cmd_ready = true;
        else
            cl->sub_ready = true;
        maybe_up(cl);
    }
}

static void setup_cmd(cluster_t *cl, redisAsyncContext *ac, bool is_cmd)
{
    char db[16];
    int n = 0;
    if (cl->password[0] != '\0') {
        if (cl->user[0] != '\0')
            redisAsyncCommand(ac, on_setup, "auth", "AUTH %s %s", cl->user, cl->password);
        else
            redisAsyncCommand(ac, on_setup, "auth", "AUTH %s", cl->password);
        n++;
    }
    if (!is_cmd) {
        /* The pub/sub connection needs nothing else: channels span
         * databases, the prefix carries the number. */
        cl->setup_left += n;
        if (n == 0) {
            cl->sub_ready = true;
            maybe_up(cl);
        }
        return;
    }
    snprintf(db, sizeof(db), "%d", cl->db);
    redisAsyncCommand(ac, on_setup, "select", "SELECT %s", db);
    redisAsyncCommand(ac, on_setup, "publish", "SCRIPT LOAD %s", publish_lua);
    redisAsyncCommand(ac, on_setup, "snapshot", "SCRIPT LOAD %s", snapshot_lua);
    redisAsyncCommand(ac, on_setup, "pattern", "SCRIPT LOAD %s", pattern_lua);
    /* The cluster's epoch: the first node to start sets it, for good. */
    uint8_t rnd[8];
    char epoch[17];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    for (int i = 0; i < 8; i++)
        snprintf(epoch + 2 * i, 3, "%02x", rnd[i]);
    redisAsyncCommand(ac, on_setup, "epoch-set", "SET wsb:epoch %s NX", epoch);
    redisAsyncCommand(ac, on_setup, "epoch", "GET wsb:epoch");
    cl->setup_left += n + 6;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    cluster_t *cl = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback. */
        if (ac == cl->cmd)
            cl->cmd = NULL;
        if (ac == cl->sub)
            cl->sub = NULL;
        link_down(cl, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    setup_cmd(cl, ac, ac == cl->cmd);
}

static void on_connect_timeout(uv_timer_t *t)
{
    cluster_t *cl = t->data;
    if (cl->state == L_CONNECTING)
        link_down(cl, "connect timeout");
}

static redisAsyncContext *open_one(cluster_t *cl)
{
    redisAsyncContext *ac = redisAsyncConnect(cl->host, cl->port);
    if (ac == NULL)
        return NULL;
    if (ac->err) {
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = cl;
    if (watch_attach(ac, &cl->loop) != 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void link_connect(cluster_t *cl)
{
    cl->state = L_CONNECTING;
    cl->setup_left = 0;
    cl->cmd = open_one(cl);
    cl->sub = cl->cmd ? open_one(cl) : NULL;
    if (cl->cmd == NULL || cl->sub == NULL) {
        link_down(cl, "cannot connect");
        return;
    }
    uv_timer_start(&cl->timer, on_connect_timeout, CONNECT_MS, 0);
}

/* ---- Requests from the workers ---- */

static void enqueue(cluster_t *cl, req_t *q)
{
    q->next = NULL;
    pthread_mutex_lock(&cl->mu);
    if (cl->tail != NULL)
        cl->tail->next = q;
    else
        cl->head = q;
    cl->tail = q;
    pthread_mutex_unlock(&cl->mu);
    uv_async_send(&cl->wake);
}

static void on_wake(uv_async_t *a)
{
    cluster_t *cl = a->data;
    pthread_mutex_lock(&cl->mu);
    req_t *q = cl->head;
    cl->head = cl->tail = NULL;
    pthread_mutex_unlock(&cl->mu);
    while (q != NULL) {
        req_t *next = q->next;
        do_request(cl, q);
        q = next;
    }
}

/* A request with room for its strings, copied in. */
static req_t *req_new(int kind, int wid, uint64_t conn, const char *topic, size_t tlen,
                      const char *data, size_t dlen, msg_span_t id, const char *epoch, size_t elen)
{
    req_t *q = calloc(1, sizeof(*q) + tlen + dlen + id.len + elen + 4);
    if (q == NULL)
        return NULL;
    q->kind = (uint8_t)kind;
    q->wid = wid;
    q->conn = conn;
    char *p = q->buf;
    q->topic = p;
    q->tlen = tlen;
    memcpy(p, topic, tlen);
    p += tlen + 1;
    q->data = p;
    q->dlen = dlen;
    if (dlen > 0)
        memcpy(p, data, dlen);
    p += dlen + 1;
    q->id = p;
    q->idlen = id.len;
    if (id.len > 0)
        memcpy(p, id.p, id.len);
    p += id.len + 1;
    q->epoch = p;
    q->epoch_len = elen;
    if (elen > 0)
        memcpy(p, epoch, elen);
    return q;
}

void cl_interest(void *arg, const char *pattern, size_t len, bool wildcard, bool on)
{
    cluster_t *cl = arg;
    req_t *q = req_new(R_INTEREST, -1, 0, pattern, len, NULL, 0, (msg_span_t){NULL, 0}, NULL, 0);
    if (q == NULL) {
        LOG(LOG_ERROR, -1, 0, "cluster_interest_lost", "error=ENOMEM pattern=%.*s", (int)len,
            pattern);
        return;
    }
    q->wildcard = wildcard;
    q->on = on;
    enqueue(cl, q);
}

void cl_publish(cluster_t *cl, int wid, uint64_t conn, msg_span_t id, const char *topic,
                size_t tlen, const char *data, size_t dlen)
{
    req_t *q = req_new(R_PUBLISH, wid, conn, topic, tlen, data, dlen, id, NULL, 0);
    if (q == NULL) {
        post_error(cl, wid, conn, id.p, id.len, "unavailable", "out of memory");
        return;
    }
    enqueue(cl, q);
}

void cl_subscribe(cluster_t *cl, int wid, uint64_t conn, const cl_sub_req_t *r)
{
    req_t *q = req_new(R_SUBSCRIBE, wid, conn, r->pattern, r->plen, NULL, 0, r->id, r->epoch,
                       r->epoch ? r->epoch_len : 0);
    if (q == NULL) {
        post_error(cl, wid, conn, r->id.p, r->id.len, "unavailable", "out of memory");
        if (r->token != 0)
            post_marker(cl, wid, conn, r->token, FK_SUB_FAILED, 0);
        return;
    }
    q->wildcard = r->wildcard;
    q->token = r->token;
    q->has_since = r->has_since;
    q->since = r->since;
    if (r->epoch == NULL)
        q->epoch = NULL;
    q->last = r->last;
    enqueue(cl, q);
}

/* ---- Thread ---- */

static void on_stop(uv_async_t *a)
{
    cluster_t *cl = a->data;
    cl->state = L_DOWN; /* no reconnecting */
    uv_timer_stop(&cl->timer);
    if (cl->cmd != NULL)
        redisAsyncDisconnect(cl->cmd);
    if (cl->sub != NULL)
        redisAsyncDisconnect(cl->sub);
    cl->cmd = cl->sub = NULL;
    uv_close((uv_handle_t *)&cl->wake, NULL);
    uv_close((uv_handle_t *)&cl->stop, NULL);
    uv_close((uv_handle_t *)&cl->timer, NULL);
}

static void *run(void *arg)
{
    cluster_t *cl = arg;
    link_connect(cl);
    uv_run(&cl->loop, UV_RUN_DEFAULT);
    return NULL;
}

int cl_start(cluster_t *cl)
{
    return pthread_create(&cl->thread, NULL, run, cl) == 0 ? 0 : -1;
}

void cl_free(cluster_t *cl)
{
    if (cl == NULL)
        return;
    uv_async_send(&cl->stop);
    pthread_join(cl->thread, NULL);
    uv_loop_close(&cl->loop);
    /* What was still queued or waiting: nobody is left to answer. */
    for (req_t *q = cl->head; q != NULL;) {
        req_t *next = q->next;
        free(q);
        q = next;
    }
    for (size_t i = 0; i < cl->names.cap; i++)
        if (cl->names.slots[i].hash != 0) {
            pat_t *p = cl->names.slots[i].value;
            for (req_t *q = p->waiters; q != NULL;) {
                req_t *next = q->next;
                free(q);
                q = next;
            }
            free(p);
        }
    for (size_t i = 0; i < cl->pends.cap; i++)
        if (cl->pends.slots[i].hash != 0)
            free(cl->pends.slots[i].value);
    for (size_t i = 0; i < cl->gates.cap; i++)
        if (cl->gates.slots[i].hash != 0) {
            gate_t *g = cl->gates.slots[i].value;
            for (req_t *q = g->held; q != NULL;) {
                req_t *next = q->next;
                free(q);
                q = next;
            }
            free(g);
        }
    smap_destroy(&cl->names);
    smap_destroy(&cl->pends);
    smap_destroy(&cl->gates);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

void cl_stats(cluster_t *cl, uint64_t *up, uint64_t *connects, uint64_t *errors, uint64_t *messages)
{
    *up = atomic_load(&cl->up);
    *connects = atomic_load(&cl->reconnects);
    *errors = atomic_load(&cl->errors);
    *messages = atomic_load(&cl->messages);
}
