/*
 * test_workers.c - several worker threads (PROTOCOL.md section 4 under
 * --workers 4): connections spread by SO_REUSEPORT, concurrent publishers
 * on a shared topic and on their own topics; every subscriber receives
 * every matching message exactly once, each topic's seq gap-free and in
 * order, and each publisher's messages in publish order.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NPUB      4
#define NSUB      40
#define NREADERS  4
#define PER_TOPIC 1000 /* messages per publisher per topic */

typedef struct sub {
    it_conn_t *c;
    char pattern[32];           /* its second subscription, on the own.* topics */
    bool own[NPUB];             /* which own.<p> topics that pattern matches */
    uint64_t seq[1 + NPUB];     /* last seq per topic: 0 shared.t, 1+p own.<p> */
    int next_k[1 + NPUB][NPUB]; /* next k expected per topic and publisher */
    int expected, got;
    char error[512];
} sub_t;

typedef struct pub {
    it_conn_t *c;
    int index;
    char error[512];
} pub_t;

static sub_t subs[NSUB];

/* Thread-side failure: remember the first one. */
static void fail_into(char *error, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_into(char *error, size_t cap, const char *fmt, ...)
{
    va_list ap;
    if (error[0] != '\0')
        return;
    va_start(ap, fmt);
    vsnprintf(error, cap, fmt, ap);
    va_end(ap);
}

/* Read the next JSON message of c (Pings answered on the way) within 15 s
 * into *m, or describe the problem in error. */
static bool next_json(it_conn_t *c, msg_server_t *m, char *error, size_t cap)
{
    char d[400];
    it_ev_t ev = it_next(c, 15000);
    if (ev.type != IT_EV_TEXT || msg_parse_server((const char *)ev.data, ev.len, m) != MSG_OK) {
        fail_into(error, cap, "%s: expected a JSON message, got %s%s%s", c->name,
                  it_ev_describe(&ev, d, sizeof(d)), ev.type == IT_EV_ERROR ? ": " : "",
                  ev.type == IT_EV_ERROR ? c->errtext : "");
        return false;
    }
    return true;
}

/* Check one delivered message against what sub s has seen so far. */
static void check_message(sub_t *s, const msg_server_t *m)
{
    int topic = -1, p = -1, k = -1;
    if (strcmp(m->topic, "shared.t") == 0)
        topic = 0;
    else if (strncmp(m->topic, "own.", 4) == 0)
        topic = 1 + atoi(m->topic + 4);
    char data[64];
    snprintf(data, sizeof(data), "%.*s", (int)m->data.len, m->data.p);
    if (topic < 0 || topic > NPUB || sscanf(data, "{\"p\":%d,\"k\":%d}", &p, &k) != 2 || p < 0 ||
        p >= NPUB) {
        fail_into(s->error, sizeof(s->error), "%s: unexpected message topic %s data %s", s->c->name,
                  m->topic, data);
        return;
    }
    if (topic > 0 && (!s->own[topic - 1] || p != topic - 1)) {
        fail_into(s->error, sizeof(s->error), "%s (%s): got %s from publisher %d", s->c->name,
                  s->pattern, m->topic, p);
        return;
    }
    if (m->seq != s->seq[topic] + 1) {
        fail_into(s->error, sizeof(s->error),
                  "%s: on %s expected seq %llu, got %llu (gap, duplicate or reorder)", s->c->name,
                  m->topic, (unsigned long long)(s->seq[topic] + 1), (unsigned long long)m->seq);
        return;
    }
    s->seq[topic] = m->seq;
    if (k != s->next_k[topic][p]) {
        fail_into(s->error, sizeof(s->error),
                  "%s: on %s publisher %d's message %d arrived where %d was due", s->c->name,
                  m->topic, p, k, s->next_k[topic][p]);
        return;
    }
    s->next_k[topic][p]++;
}

/* Thread: read the subscribers r, r + NREADERS, ... to the end, one after
 * the other: the others' messages wait in their sockets and the broker's
 * backlog meanwhile (large reads, few wake-ups). */
static void *reader(void *arg)
{
    int r = (int)(intptr_t)arg;
    for (int i = r; i < NSUB; i += NREADERS) {
        sub_t *s = &subs[i];
        while (s->got < s->expected && s->error[0] == '\0') {
            msg_server_t m;
            if (!next_json(s->c, &m, s->error, sizeof(s->error)))
                break;
            if (m.op != MSG_S_MESSAGE) {
                fail_into(s->error, sizeof(s->error), "%s: expected a message, got op %d",
                          s->c->name, m.op);
                break;
            }
            check_message(s, &m);
            s->got++;
        }
    }
    return NULL;
}

/* Thread: publish PER_TOPIC messages on shared.t and on own.<index>,
 * alternating, then a ping with an id that must be answered. */
static void *publisher(void *arg)
{
    pub_t *p = arg;
    for (int k = 1; k <= PER_TOPIC; k++) {
        char buf[160];
        uint8_t frame[200];
        int n = snprintf(buf, sizeof(buf),
                         "{\"op\":\"publish\",\"topic\":\"shared.t\",\"data\":{\"p\":%d,\"k\":%d}}",
                         p->index, k);
        size_t fl = it_frame(p->c, frame, WS_OP_TEXT, true, 0, true, buf, (size_t)n);
        n = snprintf(buf, sizeof(buf),
                     "{\"op\":\"publish\",\"topic\":\"own.%d\",\"data\":{\"p\":%d,\"k\":%d}}",
                     p->index, p->index, k);
        uint8_t frame2[200];
        size_t fl2 = it_frame(p->c, frame2, WS_OP_TEXT, true, 0, true, buf, (size_t)n);
        if (!it_try_send(p->c, frame, fl) || !it_try_send(p->c, frame2, fl2)) {
            fail_into(p->error, sizeof(p->error), "publisher %d: send failed at %d", p->index, k);
            return NULL;
        }
    }
    const char *ping = "{\"op\":\"ping\",\"id\":\"done\"}";
    uint8_t frame[64];
    size_t fl = it_frame(p->c, frame, WS_OP_TEXT, true, 0, true, ping, strlen(ping));
    it_try_send(p->c, frame, fl);
    msg_server_t m;
    if (next_json(p->c, &m, p->error, sizeof(p->error)) &&
        (m.op != MSG_S_PONG || !it_span_is(m.id, "\"done\"")))
        fail_into(p->error, sizeof(p->error), "publisher %d: expected pong \"done\", got op %d",
                  p->index, m.op);
    return NULL;
}

/* Connections per worker from /metrics; returns how many workers have any. */
static int workers_in_use(int port, char *dist, size_t cap)
{
    it_http_t r;
    int used = 0;
    const char *key = "wsbroker_worker_connections_open{worker=\"";
    IT_ASSERT(it_http_get(port, "/metrics", NULL, &r) == 200, "GET /metrics failed");
    dist[0] = '\0';
    for (const char *p = strstr(r.body, key); p != NULL; p = strstr(p + 1, key)) {
        int w = -1;
        double v = 0;
        if (sscanf(p + strlen(key), "%d\"} %lf", &w, &v) == 2) {
            snprintf(dist + strlen(dist), cap - strlen(dist), " w%d=%g", w, v);
            used += v > 0;
        }
    }
    it_http_free(&r);
    return used;
}

START_TEST(four_workers_exactly_once_in_order)
{
    it_broker_t b;
    pub_t pubs[NPUB];
    pthread_t pth[NPUB], rth[NREADERS];
    char ids[NSUB + NPUB][64];
    msg_server_t h;
    /* Subscribers wait unread while the reader is busy with another, and
     * the publishers do not wait for any of them: a heartbeat Ping could
     * queue behind a backlog longer than its timeout on a slow machine.
     * No heartbeat. */
    it_broker_start(&b, "--workers", "4", IT_NO_HEARTBEAT);

    for (int i = 0; i < NSUB; i++) {
        sub_t *s = &subs[i];
        memset(s, 0, sizeof(*s));
        s->c = it_ws_hello(b.port, &h);
        snprintf(ids[i], sizeof(ids[i]), "%s", h.client);
        snprintf(s->c->name, sizeof(s->c->name), "subscriber %d", i);
        switch (i % 3) {
        case 0:
            snprintf(s->pattern, sizeof(s->pattern), "own.>");
            break;
        case 1:
            snprintf(s->pattern, sizeof(s->pattern), "own.*");
            break;
        default:
            snprintf(s->pattern, sizeof(s->pattern), "own.%d", i % NPUB);
            break;
        }
        it_subscribe(s->c, "shared.t");
        it_subscribe(s->c, s->pattern);
        s->expected = NPUB * PER_TOPIC;
        for (int p = 0; p < NPUB; p++) {
            s->own[p] = i % 3 != 2 || i % NPUB == p;
            s->expected += s->own[p] ? PER_TOPIC : 0;
            for (int t = 0; t <= NPUB; t++)
                s->next_k[t][p] = 1;
        }
    }
    for (int p = 0; p < NPUB; p++) {
        pubs[p].c = it_ws_hello(b.port, &h);
        pubs[p].index = p;
        pubs[p].error[0] = '\0';
        snprintf(ids[NSUB + p], sizeof(ids[0]), "%s", h.client);
    }
    for (int i = 0; i < NSUB + NPUB; i++)
        for (int j = i + 1; j < NSUB + NPUB; j++)
            IT_ASSERT(strcmp(ids[i], ids[j]) != 0, "connections %d and %d share client id %s", i, j,
                      ids[i]);
    char dist[256];
    int used = workers_in_use(b.port, dist, sizeof(dist));
    IT_ASSERT(used >= 2, "44 connections with --workers 4 all landed on %d worker(s):%s", used,
              dist);

    for (int r = 0; r < NREADERS; r++)
        IT_ASSERT(pthread_create(&rth[r], NULL, reader, (void *)(intptr_t)r) == 0,
                  "pthread_create failed");
    int64_t t0 = it_now_ms();
    for (int p = 0; p < NPUB; p++)
        IT_ASSERT(pthread_create(&pth[p], NULL, publisher, &pubs[p]) == 0, "pthread_create failed");
    for (int p = 0; p < NPUB; p++)
        pthread_join(pth[p], NULL);
    for (int r = 0; r < NREADERS; r++)
        pthread_join(rth[r], NULL);
    int64_t took = it_now_ms() - t0;

    for (int p = 0; p < NPUB; p++)
        IT_ASSERT(pubs[p].error[0] == '\0', "%s", pubs[p].error);
    for (int i = 0; i < NSUB; i++) {
        sub_t *s = &subs[i];
        IT_ASSERT(s->error[0] == '\0', "%s", s->error);
        IT_ASSERT(s->got == s->expected, "subscriber %d (%s): %d of %d messages", i, s->pattern,
                  s->got, s->expected);
        for (int p = 0; p < NPUB; p++)
            IT_ASSERT(s->next_k[0][p] == PER_TOPIC + 1,
                      "subscriber %d: publisher %d's shared.t messages incomplete", i, p);
        /* Nothing more (no duplicate) is queued behind them. */
        it_sync(s->c);
    }
    fprintf(stderr, "workers: %d subscribers x %d messages in %lld ms;%s\n", NSUB, subs[0].expected,
            (long long)took, dist);

    for (int i = 0; i < NSUB; i++)
        it_conn_free(subs[i].c);
    for (int p = 0; p < NPUB; p++)
        it_conn_free(pubs[p].c);
    it_broker_stop(&b);
}
END_TEST

/* Subscribers joining shared.t while four publishers run: the ack's seq S
 * is the topic's latest, so every message from S + 1 on must arrive, in
 * order and without a gap, whatever worker published it. */
START_TEST(late_subscribers_gap_free_after_ack)
{
    enum { NLATE = 12 };
    it_broker_t b;
    pub_t pubs[NPUB];
    pthread_t pth[NPUB];
    it_conn_t *late[NLATE];
    uint64_t from[NLATE];
    /* The late subscribers are read one after the other at the end: no
     * heartbeat, so none can time out while it waits its turn. */
    it_broker_start(&b, "--workers", "4", IT_NO_HEARTBEAT);
    for (int i = 0; i < NLATE; i++) {
        late[i] = it_ws_hello(b.port, NULL);
        snprintf(late[i]->name, sizeof(late[i]->name), "late subscriber %d", i);
    }
    for (int p = 0; p < NPUB; p++) {
        pubs[p].c = it_ws_hello(b.port, NULL);
        pubs[p].index = p;
        pubs[p].error[0] = '\0';
    }
    for (int p = 0; p < NPUB; p++)
        IT_ASSERT(pthread_create(&pth[p], NULL, publisher, &pubs[p]) == 0, "pthread_create failed");
    for (int i = 0; i < NLATE; i++) {
        msg_server_t m;
        it_send_json(late[i], "{\"op\":\"subscribe\",\"topic\":\"shared.t\",\"id\":%d}", i);
        const char *raw = it_expect_op(late[i], MSG_S_ACK, &m);
        IT_ASSERT(m.has_seq, "subscribe ack on a concrete topic without seq: %s", raw);
        from[i] = m.seq;
        it_sleep_ms(2);
    }
    for (int p = 0; p < NPUB; p++)
        pthread_join(pth[p], NULL);
    for (int p = 0; p < NPUB; p++)
        IT_ASSERT(pubs[p].error[0] == '\0', "%s", pubs[p].error);
    uint64_t total = NPUB * PER_TOPIC;
    int overlapped = 0;
    for (int i = 0; i < NLATE; i++) {
        overlapped += from[i] > 0 && from[i] < total;
        for (uint64_t seq = from[i] + 1; seq <= total; seq++)
            it_expect_message(late[i], "shared.t", seq, NULL);
        it_sync(late[i]);
    }
    fprintf(stderr, "late subscribers: %d of %d joined mid-stream (ack seqs %llu..%llu of %llu)\n",
            overlapped, NLATE, (unsigned long long)from[0], (unsigned long long)from[NLATE - 1],
            (unsigned long long)total);
    for (int i = 0; i < NLATE; i++)
        it_conn_free(late[i]);
    for (int p = 0; p < NPUB; p++)
        it_conn_free(pubs[p].c);
    it_broker_stop(&b);
}
END_TEST

/* ---- A shared CPU ---- */

/* Pin every thread of process pid to cpu. */
static void pin_threads(pid_t pid, int cpu)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    IT_ASSERT(d != NULL, "open %s", path);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int pinned = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        IT_ASSERT(sched_setaffinity(atoi(e->d_name), sizeof(set), &set) == 0,
                  "pin thread %s of the broker to CPU %d", e->d_name, cpu);
        pinned++;
    }
    closedir(d);
    IT_ASSERT(pinned > 0, "no threads in %s", path);
}

/* A process that keeps cpu busy for at most limit_s seconds (or until
 * killed, or its parent dies). */
static pid_t spinner(int cpu, int limit_s)
{
    pid_t pid = fork();
    IT_ASSERT(pid >= 0, "fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof(set), &set);
        time_t end = time(NULL) + limit_s;
        uint64_t x = 0;
        while (time(NULL) < end)
            for (int i = 0; i < 1000000; i++)
                x = x * 31 + (uint64_t)i;
        _exit(x == 1 ? 1 : 0); /* x used: the loop is not optimized away */
    }
    return pid;
}

/* One worker sharing its core with a busy process (both pinned to it):
 * a fan-out whose writes take several flush slices pauses between them
 * (wsbroker_flush_pauses_total), and every subscriber still gets every
 * message once, gap-free and in order. */
#define PACE_SUBS   300
#define PACE_BURST  50
#define PACE_ROUNDS 8
#define PACE_DATA                                                                                  \
    "\"0123456789012345678901234567890123456789012345678901234567890123456789"                     \
    "0123456789012345678901234567890123456789012345678901234567890123456789\""

START_TEST(shared_cpu_pauses_between_slices)
{
    it_broker_t b;
    it_broker_start(&b, "--workers", "1", IT_NO_HEARTBEAT);
    cpu_set_t mine;
    IT_ASSERT(sched_getaffinity(0, sizeof(mine), &mine) == 0, "sched_getaffinity");
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &mine))
        cpu++;
    IT_ASSERT(cpu < CPU_SETSIZE, "no CPU to run on");
    static it_conn_t *s[PACE_SUBS];
    for (int i = 0; i < PACE_SUBS; i++) {
        s[i] = it_ws_hello(b.port, NULL);
        snprintf(s[i]->name, sizeof(s[i]->name), "subscriber %d", i);
        it_subscribe(s[i], "pace.t");
    }
    it_conn_t *p = it_ws_hello(b.port, NULL);
    pin_threads(b.pid, cpu);
    pid_t spin = spinner(cpu, 50);
    size_t cap = PACE_BURST * 512;
    uint8_t *buf = malloc(cap);
    ck_assert(buf != NULL);
    uint64_t seq = 0;
    for (int r = 0; r < PACE_ROUNDS; r++) {
        size_t len = 0;
        for (int i = 0; i < PACE_BURST; i++) {
            char req[384];
            int n = snprintf(
                req, sizeof(req),
                "{\"op\":\"publish\",\"topic\":\"pace.t\",\"id\":%d,\"data\":" PACE_DATA "}",
                r * PACE_BURST + i);
            len += it_frame(p, buf + len, WS_OP_TEXT, true, 0, true, req, (size_t)n);
        }
        it_send_raw(p, buf, len);
        for (int i = 0; i < PACE_BURST; i++) {
            char id[16];
            msg_server_t m;
            snprintf(id, sizeof(id), "%d", r * PACE_BURST + i);
            it_expect_ack(p, id, &m);
        }
        for (int k = 0; k < PACE_SUBS; k++)
            for (int i = 1; i <= PACE_BURST; i++)
                it_expect_message(s[k], "pace.t", seq + (uint64_t)i, PACE_DATA);
        seq += PACE_BURST;
    }
    kill(spin, SIGKILL);
    waitpid(spin, NULL, 0);
    double pauses = it_metric(b.port, "wsbroker_flush_pauses_total");
    IT_ASSERT(pauses > 0,
              "%d rounds of %d messages to %d subscribers on a shared core: %g flush pauses",
              PACE_ROUNDS, PACE_BURST, PACE_SUBS, pauses);
    for (int i = 0; i < PACE_SUBS; i++) {
        it_expect_silence(s[i], i == 0 ? 100 : 0);
        it_conn_free(s[i]);
    }
    it_conn_free(p);
    free(buf);
    it_broker_stop(&b);
}
END_TEST

static Suite *workers_suite(void)
{
    Suite *s = suite_create("workers");
    TCase *tc = tcase_create("workers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, four_workers_exactly_once_in_order);
    tcase_add_test(tc, late_subscribers_gap_free_after_ack);
    tcase_add_test(tc, shared_cpu_pauses_between_slices);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(workers_suite());
}
