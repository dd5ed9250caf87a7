/*
 * test_churn.c - thousands of short, badly behaved connections next to a
 * few steady ones. Churners connect, subscribe to random patterns (many
 * matching the steady topic, so deliveries race with their teardown),
 * publish, and vanish: RST, FIN in the middle of a frame, half a
 * handshake, nothing at all. Meanwhile steady subscribers must receive
 * every steady message in order; afterwards the broker must be healthy,
 * /metrics must be back to the steady connection count, and SIGTERM must
 * end it with status 0. CI also runs this suite against ASan and TSan
 * builds of the broker, so the loop is bounded by time as well as count.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOTAL        3000  /* churn connections at most */
#define CHURN_MS     10000 /* ... and at most this long */
#define NCHURN       3     /* churning threads */
#define NSTEADY      4     /* steady subscribers */
#define STEADY_EVERY 2     /* ms between steady publishes */

static int port;
static atomic_int started;  /* churn connections begun */
static atomic_bool stop;    /* churn over: steady publisher stops */
static atomic_int problems; /* unexpected broker behaviour seen by churners */
static char problem[512];   /* the first one */
static pthread_mutex_t problem_mu = PTHREAD_MUTEX_INITIALIZER;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&problem_mu);
    if (atomic_fetch_add(&problems, 1) == 0) {
        va_start(ap, fmt);
        vsnprintf(problem, sizeof(problem), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&problem_mu);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static const char *const patterns[] = {"steady.t", "steady.*", "steady.>", ">",       "*.t",
                                       "churn.*",  "churn.>",  "x.y.z",    "churn.a", "*"};
#define NPATTERNS (sizeof(patterns) / sizeof(patterns[0]))

static bool send_text(it_conn_t *c, const char *text)
{
    uint8_t frame[512];
    size_t n = it_frame(c, frame, WS_OP_TEXT, true, 0, true, text, strlen(text));
    return it_try_send(c, frame, n);
}

/* Upgrade; on success optionally wait for the hello. */
static it_conn_t *upgrade(bool wait_hello)
{
    int st;
    it_conn_t *c = it_ws_try(port, "/ws", NULL, 0, 0, 0, &st, NULL);
    if (c == NULL) {
        report("churn upgrade failed with %d", st);
        return NULL;
    }
    if (wait_hello) {
        it_ev_t ev = it_next(c, 5000);
        if (ev.type != IT_EV_TEXT || strstr((const char *)ev.data, "\"hello\"") == NULL) {
            char d[300];
            report("churn client: expected hello, got %s", it_ev_describe(&ev, d, sizeof(d)));
        }
    }
    return c;
}

static void subscribe_some(it_conn_t *c, uint64_t *rs)
{
    int n = 1 + (int)(rnd(rs) % 3);
    for (int i = 0; i < n; i++) {
        char req[128];
        snprintf(req, sizeof(req), "{\"op\":\"subscribe\",\"topic\":\"%s\"}",
                 patterns[rnd(rs) % NPATTERNS]);
        send_text(c, req);
    }
}

/* One short-lived connection of a random kind. */
static void churn_once(uint64_t *rs)
{
    int kind = (int)(rnd(rs) % 8);
    it_conn_t *c;
    switch (kind) {
    case 0: /* subscribe, publish, wait for the ack, then RST */
        if ((c = upgrade(true)) == NULL)
            return;
        subscribe_some(c, rs);
        send_text(c, "{\"op\":\"publish\",\"topic\":\"churn.a\",\"data\":[1,2,3],\"id\":1}");
        for (int i = 0; i < 50; i++) {
            it_ev_t ev = it_next(c, 5000);
            if (ev.type == IT_EV_TEXT && strstr((const char *)ev.data, "\"ack\"") != NULL)
                break;
            if (ev.type != IT_EV_TEXT) {
                char d[300];
                report("churn client: waiting for its ack, got %s",
                       it_ev_describe(&ev, d, sizeof(d)));
                break;
            }
        }
        it_conn_reset(c);
        return;
    case 1: /* pipelined subscribe and publish, RST without reading */
        if ((c = upgrade(false)) == NULL)
            return;
        subscribe_some(c, rs);
        send_text(c, "{\"op\":\"publish\",\"topic\":\"churn.b\",\"data\":\"x\"}");
        it_conn_reset(c);
        return;
    case 2: /* subscribe, then FIN in the middle of a frame */
        if ((c = upgrade(true)) == NULL)
            return;
        subscribe_some(c, rs);
        {
            uint8_t frame[128];
            const char *t = "{\"op\":\"publish\",\"topic\":\"churn.c\",\"data\":1}";
            size_t n = it_frame(c, frame, WS_OP_TEXT, true, 0, true, t, strlen(t));
            it_try_send(c, frame, 1 + rnd(rs) % (n - 1));
        }
        it_conn_free(c);
        return;
    case 3: /* half a handshake, then RST or FIN */
    {
        const char *req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        int fd = it_tcp_connect(port, 0);
        if (fd < 0) {
            report("churn connect failed: %s", strerror(-fd));
            return;
        }
        it_tcp_send(fd, req, 1 + rnd(rs) % strlen(req), 1000);
        if (rnd(rs) & 1)
            it_tcp_reset(fd);
        else
            close(fd);
        return;
    }
    case 4: /* connect and leave at once */
    {
        int fd = it_tcp_connect(port, 0);
        if (fd < 0) {
            report("churn connect failed: %s", strerror(-fd));
            return;
        }
        if (rnd(rs) & 1)
            it_tcp_reset(fd);
        else
            close(fd);
        return;
    }
    case 5: /* a proper close handshake */
        if ((c = upgrade(true)) == NULL)
            return;
        subscribe_some(c, rs);
        {
            uint8_t frame[16];
            size_t n = it_frame(c, frame, WS_OP_CLOSE, true, 0, true, "\x03\xe8", 2);
            it_try_send(c, frame, n);
            for (int i = 0; i < 1000; i++) {
                it_ev_t ev = it_recv(c, 5000);
                if (ev.type == IT_EV_CLOSE)
                    break;
                if (ev.type != IT_EV_TEXT && ev.type != IT_EV_PING) {
                    char d[300];
                    report("churn client: after its Close expected a Close, got %s",
                           it_ev_describe(&ev, d, sizeof(d)));
                    break;
                }
            }
        }
        it_conn_free(c);
        return;
    case 6: /* a protocol error, then RST before the broker's Close is read */
        if ((c = upgrade(rnd(rs) & 1)) == NULL)
            return;
        subscribe_some(c, rs);
        {
            uint8_t frame[16];
            size_t n = it_frame(c, frame, WS_OP_TEXT, true, 0, false, "{}", 2);
            it_try_send(c, frame, n);
        }
        it_conn_reset(c);
        return;
    default: /* plain HTTP, sometimes cut short */
    {
        it_http_t r;
        const char *path = rnd(rs) & 1 ? "/metrics" : "/healthz";
        int st = it_http_get(port, path, NULL, &r);
        it_http_free(&r);
        if (st != 200)
            report("churn GET %s: %d", path, st);
        return;
    }
    }
}

static void *churner(void *arg)
{
    uint64_t rs = 0x9e3779b97f4a7c15ULL * (uint64_t)((intptr_t)arg + 1);
    int64_t end = it_now_ms() + CHURN_MS;
    while (it_now_ms() < end && atomic_fetch_add(&started, 1) < TOTAL)
        churn_once(&rs);
    return NULL;
}

typedef struct steady {
    it_conn_t *c;
    atomic_int target; /* messages to read; -1 until the publisher is done */
    int got;
    char error[512];
} steady_t;

static steady_t steady[NSTEADY];
static it_conn_t *steady_pub;
static int published;
static char pub_error[512];

/* Thread: steady subscriber i reads steady.t messages 1, 2, ... with data
 * {"n":seq}, until the publisher's final count. */
static void *steady_reader(void *arg)
{
    steady_t *s = arg;
    char d[300];
    for (;;) {
        int target = atomic_load(&s->target);
        if (target >= 0 && s->got >= target)
            return NULL;
        /* Until the target is known, wake up every 100 ms to look at it;
         * once it is, every message still due must come within 10 s. */
        it_ev_t ev = it_next(s->c, target >= 0 ? 10000 : 100);
        if (ev.type == IT_EV_TIMEOUT) {
            if (target >= 0) {
                snprintf(s->error, sizeof(s->error), "%s: %d of %d messages, then silence",
                         s->c->name, s->got, target);
                return NULL;
            }
            continue;
        }
        msg_server_t m;
        char want[32];
        snprintf(want, sizeof(want), "{\"n\":%d}", s->got + 1);
        if (ev.type != IT_EV_TEXT ||
            msg_parse_server((const char *)ev.data, ev.len, &m) != MSG_OK ||
            m.op != MSG_S_MESSAGE || strcmp(m.topic, "steady.t") != 0 ||
            m.seq != (uint64_t)s->got + 1 || !it_span_is(m.data, want)) {
            snprintf(s->error, sizeof(s->error), "%s: expected steady.t seq %d %s, got %s",
                     s->c->name, s->got + 1, want, it_ev_describe(&ev, d, sizeof(d)));
            return NULL;
        }
        s->got++;
    }
}

/* Thread: publish steady.t {"n":k} with an id every STEADY_EVERY ms until
 * the churn stops; each ack must carry seq k. */
static void *steady_publisher(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        char req[128];
        int k = published + 1;
        snprintf(req, sizeof(req),
                 "{\"op\":\"publish\",\"topic\":\"steady.t\",\"data\":{\"n\":%d},\"id\":%d}", k, k);
        if (!send_text(steady_pub, req)) {
            snprintf(pub_error, sizeof(pub_error), "steady publisher: send failed at %d", k);
            return NULL;
        }
        msg_server_t m;
        it_ev_t ev = it_next(steady_pub, 5000);
        if (ev.type != IT_EV_TEXT ||
            msg_parse_server((const char *)ev.data, ev.len, &m) != MSG_OK || m.op != MSG_S_ACK ||
            m.seq != (uint64_t)k) {
            char d[300];
            snprintf(pub_error, sizeof(pub_error), "steady publisher: expected ack seq %d, got %s",
                     k, it_ev_describe(&ev, d, sizeof(d)));
            return NULL;
        }
        published = k;
        it_sleep_ms(STEADY_EVERY);
    }
    return NULL;
}

/* Metric name once it equals want, or its last value after 5 s of asking
 * every 50 ms (-1 if absent). */
static double settled_metric(int p, const char *name, double want)
{
    double v = it_metric(p, name);
    for (int64_t end = it_now_ms() + 5000; v >= 0 && v != want && it_now_ms() < end;) {
        it_sleep_ms(50);
        v = it_metric(p, name);
    }
    return v;
}

START_TEST(churn_with_steady_subscribers)
{
    it_broker_t b;
    pthread_t ch[NCHURN], sr[NSTEADY], sp;
    it_broker_start(&b, "--workers", "2", "--handshake-timeout", "1", "--close-timeout", "0.5",
                    "--log-level", "warn");
    port = b.port;
    for (int i = 0; i < NSTEADY; i++) {
        steady[i].c = it_ws_hello(port, NULL);
        snprintf(steady[i].c->name, sizeof(steady[i].c->name), "steady subscriber %d", i);
        it_subscribe(steady[i].c, "steady.t");
        atomic_init(&steady[i].target, -1);
    }
    steady_pub = it_ws_hello(port, NULL);
    double open0 = it_metric(port, "wsbroker_connections_open");
    IT_ASSERT(open0 == NSTEADY + 1, "connections_open before the churn: expected %d, got %g",
              NSTEADY + 1, open0);
    /* TCP connections: the steady ones and the GET /metrics reading the
     * gauge. The connection of an earlier GET counts until the broker has
     * seen it close, so the count may take a moment to settle. */
    const double tcp_base = NSTEADY + 2;
    double tcp0 = settled_metric(port, "wsbroker_tcp_connections_open", tcp_base);
    IT_ASSERT(tcp0 < 0 || tcp0 == tcp_base,
              "wsbroker_tcp_connections_open before the churn: expected %g, got %g for 5 s",
              tcp_base, tcp0);

    int64_t t0 = it_now_ms();
    for (int i = 0; i < NSTEADY; i++)
        IT_ASSERT(pthread_create(&sr[i], NULL, steady_reader, &steady[i]) == 0, "pthread_create");
    IT_ASSERT(pthread_create(&sp, NULL, steady_publisher, NULL) == 0, "pthread_create");
    for (int i = 0; i < NCHURN; i++)
        IT_ASSERT(pthread_create(&ch[i], NULL, churner, (void *)(intptr_t)i) == 0,
                  "pthread_create");
    for (int i = 0; i < NCHURN; i++)
        pthread_join(ch[i], NULL);
    int64_t churn_ms = it_now_ms() - t0;
    atomic_store(&stop, true);
    pthread_join(sp, NULL);
    for (int i = 0; i < NSTEADY; i++)
        atomic_store(&steady[i].target, published);
    for (int i = 0; i < NSTEADY; i++)
        pthread_join(sr[i], NULL);
    int done = atomic_load(&started);
    if (done > TOTAL)
        done = TOTAL;
    fprintf(stderr, "churn: %d connections in %lld ms, %d steady messages\n", done,
            (long long)churn_ms, published);

    IT_ASSERT(it_broker_alive(&b), "the broker died during the churn");
    IT_ASSERT(atomic_load(&problems) == 0, "%d unexpected answers during the churn; first: %s",
              atomic_load(&problems), problem);
    IT_ASSERT(pub_error[0] == '\0', "%s", pub_error);
    for (int i = 0; i < NSTEADY; i++)
        IT_ASSERT(steady[i].error[0] == '\0', "%s", steady[i].error);
    IT_ASSERT(published > 0, "the steady publisher published nothing");

    /* Every churn connection is gone again: the counts return. */
    double open1 = settled_metric(port, "wsbroker_connections_open", open0);
    IT_ASSERT(open1 == open0, "wsbroker_connections_open: %g before the churn, %g 5 s after it",
              open0, open1);
    if (tcp0 >= 0) {
        double tcp1 = settled_metric(port, "wsbroker_tcp_connections_open", tcp_base);
        IT_ASSERT(tcp1 == tcp_base,
                  "wsbroker_tcp_connections_open: %g before the churn, %g 5 s after it", tcp0,
                  tcp1);
    }
    for (int i = 0; i < NSTEADY; i++) {
        it_sync(steady[i].c);
        it_conn_free(steady[i].c);
    }
    it_sync(steady_pub);
    it_conn_free(steady_pub);
    it_check_alive(port);
    it_broker_stop(&b);
}
END_TEST

static Suite *churn_suite(void)
{
    Suite *s = suite_create("churn");
    TCase *tc = tcase_create("churn");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, churn_with_steady_subscribers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(churn_suite());
}
