/*
 * test_cluster.c - cluster mode (--redis) with Debian's redis-server and
 * haproxy on loopback: messages cross nodes, every node sees a topic's
 * messages in the same seq order under concurrent publishers, a client of
 * a node killed with SIGKILL fails over through haproxy and recovers what
 * it missed from the shared history, Redis restarting or absent at start
 * degrades the nodes without losing their clients, and the epoch survives
 * a node's restart.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- Redis and haproxy processes ---- */

typedef struct proc {
    pid_t pid;
    int port;
    char dir[64];
} proc_t;

static bool port_answers(int port)
{
    int fd = it_tcp_connect(port, 0);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

static void wait_port(int port, const char *what)
{
    for (int64_t end = it_now_ms() + 5000; !port_answers(port); it_sleep_ms(20))
        IT_ASSERT(it_now_ms() < end, "%s did not listen on port %d", what, port);
}

static void redis_start(proc_t *r, int port)
{
    if (r->dir[0] == '\0') {
        snprintf(r->dir, sizeof(r->dir), "/tmp/wsbroker-it-redis-XXXXXX");
        IT_ASSERT(mkdtemp(r->dir) != NULL, "mkdtemp");
    }
    r->port = port > 0 ? port : it_free_port();
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", r->port);
    const char *argv[] = {"redis-server", "--port", ps,      "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no",     "--dir", r->dir,   "--logfile", "",       NULL};
    r->pid = it_spawn(argv, 2);
    IT_ASSERT(r->pid > 0, "cannot start redis-server (apt-get install redis-server)");
    wait_port(r->port, "redis-server");
}

static void proc_kill(proc_t *p, int sig)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, sig);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

static void redis_stop(proc_t *r)
{
    proc_kill(r, SIGKILL);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", r->dir);
}

/* haproxy in front of the two brokers, with WebSocket timeouts and health
 * checks on /healthz, as deploy/ configures it. */
static void haproxy_start(proc_t *h, int a, int b)
{
    snprintf(h->dir, sizeof(h->dir), "/tmp/wsbroker-it-haproxy-XXXXXX");
    IT_ASSERT(mkdtemp(h->dir) != NULL, "mkdtemp");
    h->port = it_free_port();
    char path[128];
    snprintf(path, sizeof(path), "%s/haproxy.cfg", h->dir);
    FILE *f = fopen(path, "w");
    IT_ASSERT(f != NULL, "cannot write %s", path);
    fprintf(f,
            "global\n  maxconn 4096\n"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n"
            "  timeout server 60s\n  timeout tunnel 1h\n"
            "frontend ws\n  bind 127.0.0.1:%d\n  default_backend brokers\n"
            "backend brokers\n  balance leastconn\n  option httpchk GET /healthz\n"
            "  default-server inter 200ms fall 1 rise 1\n"
            "  server a 127.0.0.1:%d check\n  server b 127.0.0.1:%d check\n",
            h->port, a, b);
    fclose(f);
    const char *argv[] = {"haproxy", "-f", path, "-db", NULL};
    h->pid = it_spawn(argv, 2);
    IT_ASSERT(h->pid > 0, "cannot start haproxy (apt-get install haproxy)");
    wait_port(h->port, "haproxy");
}

static void haproxy_stop(proc_t *h)
{
    proc_kill(h, SIGKILL);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", h->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", h->dir);
}

static void wait_health(int port, int status);

static void node_start(it_broker_t *b, const proc_t *redis, const char *extra)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis->port);
    const char *args[] = {"--redis",         url, "--history", "1000", "--workers", "2",
                          "--ping-interval", "5", extra,       NULL};
    it_broker_start_env(b, args, NULL);
    wait_health(b->port, 200); /* linked to Redis */
}

static int healthz(int port)
{
    it_http_t r;
    int st = it_http_get(port, "/healthz", NULL, &r);
    it_http_free(&r);
    return st;
}

static void wait_health(int port, int status)
{
    for (int64_t end = it_now_ms() + 10000; healthz(port) != status; it_sleep_ms(50))
        IT_ASSERT(it_now_ms() < end, "/healthz on %d never answered %d", port, status);
}

/* ---- tests ---- */

START_TEST(messages_cross_nodes)
{
    proc_t redis = {0};
    redis_start(&redis, 0);
    it_broker_t a, b;
    node_start(&a, &redis, "--deflate=off");
    node_start(&b, &redis, "--deflate=off");
    it_conn_t *sub = it_ws_hello(b.port, NULL);
    it_conn_t *wild = it_ws_hello(b.port, NULL);
    it_conn_t *pub = it_ws_hello(a.port, NULL);
    msg_server_t ack;
    it_send_json(sub, "{\"op\":\"subscribe\",\"topic\":\"x.t\",\"id\":1}");
    it_expect_ack(sub, "1", &ack);
    IT_ASSERT(ack.has_seq && ack.seq == 0 && ack.epoch[0] != '\0', "first ack: seq %llu",
              (unsigned long long)ack.seq);
    it_subscribe(wild, "x.>");
    /* The publisher also listens: its ack comes before its own copy. */
    it_subscribe(pub, "x.t");
    for (int i = 1; i <= 20; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        it_send_json(pub, "{\"op\":\"publish\",\"topic\":\"x.t\",\"data\":%s,\"id\":%d}", data, i);
        char id[8];
        snprintf(id, sizeof(id), "%d", i);
        it_expect_ack(pub, id, &ack);
        IT_ASSERT(ack.seq == (uint64_t)i, "ack seq %llu for publish %d",
                  (unsigned long long)ack.seq, i);
        it_expect_message(pub, "x.t", (uint64_t)i, data);
        it_expect_message(sub, "x.t", (uint64_t)i, data);
        it_expect_message(wild, "x.t", (uint64_t)i, data);
    }
    /* A topic on the other node's side, and a wildcard that must not match. */
    it_publish(sub, "y.t", "1");
    it_expect_silence(wild, 200);
    it_conn_free(sub);
    it_conn_free(wild);
    it_conn_free(pub);
    it_broker_stop(&a);
    it_broker_stop(&b);
    redis_stop(&redis);
}
END_TEST

START_TEST(same_order_on_every_node)
{
    /* Publishers on both nodes race on one topic; subscribers on both see
     * the same gap-free sequence, with the same data at every seq. */
    enum { EACH = 1500 };
    proc_t redis = {0};
    redis_start(&redis, 0);
    it_broker_t n[2];
    node_start(&n[0], &redis, NULL);
    node_start(&n[1], &redis, NULL);
    it_conn_t *subs[2], *pubs[2];
    for (int i = 0; i < 2; i++) {
        subs[i] = it_ws_hello(n[i].port, NULL);
        it_subscribe(subs[i], "race.t");
        pubs[i] = it_ws_hello(n[i].port, NULL);
    }
    static uint8_t frames[2][EACH * 80];
    size_t len[2] = {0, 0}, off[2] = {0, 0};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < EACH; k++) {
            char body[96];
            int m =
                snprintf(body, sizeof(body),
                         "{\"op\":\"publish\",\"topic\":\"race.t\",\"data\":\"%c%d\"}", 'a' + i, k);
            len[i] +=
                it_frame(pubs[i], frames[i] + len[i], WS_OP_TEXT, true, 0, true, body, (size_t)m);
        }
    static char seen[2][2 * EACH + 1][12];
    uint64_t next[2] = {1, 1};
    int64_t end = it_now_ms() + 30000;
    while (next[0] <= 2 * EACH || next[1] <= 2 * EACH) {
        IT_ASSERT(it_now_ms() < end, "stuck at seqs %llu / %llu", (unsigned long long)next[0],
                  (unsigned long long)next[1]);
        for (int i = 0; i < 2; i++)
            it_send_nonblocking(pubs[i], frames[i], len[i], &off[i]);
        for (int i = 0; i < 2; i++) {
            it_ev_t ev = it_recv(subs[i], 5);
            while (ev.type == IT_EV_TEXT) {
                msg_server_t m;
                IT_ASSERT(msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                              m.op == MSG_S_MESSAGE && m.seq == next[i],
                          "node %d: expected seq %llu, got %s", i, (unsigned long long)next[i],
                          ev.data);
                snprintf(seen[i][m.seq], sizeof(seen[i][m.seq]), "%.*s", (int)m.data.len, m.data.p);
                next[i]++;
                ev = it_recv(subs[i], 0);
            }
        }
    }
    for (int s = 1; s <= 2 * EACH; s++)
        IT_ASSERT(strcmp(seen[0][s], seen[1][s]) == 0, "seq %d: %s on one node, %s on the other", s,
                  seen[0][s], seen[1][s]);
    for (int i = 0; i < 2; i++) {
        it_conn_free(subs[i]);
        it_conn_free(pubs[i]);
        it_broker_stop(&n[i]);
    }
    redis_stop(&redis);
}
END_TEST

START_TEST(failover_recovers_from_shared_history)
{
    /* A subscriber on node A; a publisher on node B keeps publishing while
     * A is killed with SIGKILL; the subscriber reconnects through haproxy
     * (which now sends it to B) with since and epoch, and gets everything
     * it missed, then the live messages, without a gap. */
    proc_t redis = {0}, lb = {0};
    redis_start(&redis, 0);
    it_broker_t a, b;
    node_start(&a, &redis, NULL);
    node_start(&b, &redis, NULL);
    haproxy_start(&lb, a.port, b.port);
    it_conn_t *sub = it_ws_hello(a.port, NULL);
    msg_server_t ack;
    it_send_json(sub, "{\"op\":\"subscribe\",\"topic\":\"fo.t\",\"id\":1}");
    it_expect_ack(sub, "1", &ack);
    char epoch[MSG_EPOCH_MAX + 1];
    snprintf(epoch, sizeof(epoch), "%s", ack.epoch);
    it_conn_t *pub = it_ws_hello(b.port, NULL);
    uint64_t last = 0, published = 0;
    for (int i = 1; i <= 50; i++) {
        char data[16];
        snprintf(data, sizeof(data), "%d", i);
        published = it_publish(pub, "fo.t", data);
        last = it_expect_message(sub, "fo.t", (uint64_t)i, data);
    }
    it_broker_kill(&a); /* SIGKILL */
    it_expect_eof(sub, 5000);
    it_conn_free(sub);
    for (int i = 51; i <= 250; i++) {
        char data[16];
        snprintf(data, sizeof(data), "%d", i);
        published = it_publish(pub, "fo.t", data);
    }
    /* Through the load balancer: A is down, so B. */
    it_conn_t *back = NULL;
    for (int64_t end = it_now_ms() + 10000; back == NULL; it_sleep_ms(100)) {
        IT_ASSERT(it_now_ms() < end, "no node through haproxy");
        int st;
        back = it_ws_try(lb.port, "/ws", NULL, 0, 0, 0, &st, NULL);
    }
    it_ev_t hello = it_recv(back, 3000);
    IT_ASSERT(hello.type == IT_EV_TEXT, "no hello through haproxy");
    it_send_json(
        back, "{\"op\":\"subscribe\",\"topic\":\"fo.t\",\"since\":%llu,\"epoch\":\"%s\",\"id\":2}",
        (unsigned long long)last, epoch);
    it_expect_ack(back, "2", &ack);
    IT_ASSERT(ack.recovered == 1 && strcmp(ack.epoch, epoch) == 0 && ack.seq == published,
              "after failover: recovered %d, epoch %s (was %s), seq %llu (published %llu)",
              ack.recovered, ack.epoch, epoch, (unsigned long long)ack.seq,
              (unsigned long long)published);
    for (uint64_t s = last + 1; s <= published; s++) {
        char data[16];
        snprintf(data, sizeof(data), "%llu", (unsigned long long)s);
        it_expect_message(back, "fo.t", s, data);
    }
    it_publish(pub, "fo.t", "\"live\"");
    it_expect_message(back, "fo.t", published + 1, "\"live\"");
    printf("failover: %llu messages missed while moving to the other node, all recovered\n",
           (unsigned long long)(published - last));
    it_conn_free(back);
    it_conn_free(pub);
    it_broker_stop(&b);
    it_broker_release(&a);
    haproxy_stop(&lb);
    redis_stop(&redis);
}
END_TEST

START_TEST(redis_restart_degrades_then_recovers)
{
    proc_t redis = {0};
    redis_start(&redis, 0);
    it_broker_t a;
    node_start(&a, &redis, NULL);
    it_conn_t *sub = it_ws_hello(a.port, NULL);
    it_subscribe(sub, "rr.*");
    it_conn_t *pub = it_ws_hello(a.port, NULL);
    it_publish(pub, "rr.t", "1");
    it_expect_message(sub, "rr.t", 1, "1");
    proc_kill(&redis, SIGKILL);
    wait_health(a.port, 503);
    /* Publishes are refused clearly; clients stay connected. */
    it_send_json(pub, "{\"op\":\"publish\",\"topic\":\"rr.t\",\"data\":2,\"id\":\"p\"}");
    it_expect_error(pub, "\"p\"", "unavailable");
    it_send_json(pub, "{\"op\":\"subscribe\",\"topic\":\"rr.u\",\"id\":\"s\"}");
    it_expect_error(pub, "\"s\"", "unavailable");
    it_sync(sub);
    IT_ASSERT(it_metric(a.port, "wsbroker_redis_up") == 0, "redis_up gauge");
    /* Redis back (empty: it kept nothing): the node subscribes again. */
    redis_start(&redis, redis.port);
    wait_health(a.port, 200);
    msg_server_t ack;
    it_send_json(pub, "{\"op\":\"publish\",\"topic\":\"rr.t\",\"data\":3,\"id\":\"q\"}");
    it_expect_ack(pub, "\"q\"", &ack);
    it_expect_message(sub, "rr.t", ack.seq, "3");
    IT_ASSERT(it_metric(a.port, "wsbroker_redis_connects_total") >= 2, "reconnect not counted");
    it_conn_free(sub);
    it_conn_free(pub);
    it_broker_stop(&a);
    redis_stop(&redis);
}
END_TEST

START_TEST(redis_unreachable_at_start)
{
    proc_t redis = {0};
    redis.port = it_free_port(); /* nobody listens there yet */
    it_broker_t a;
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis.port);
    /* The broker starts and serves HTTP; /healthz says degraded. */
    const char *args[] = {"--redis", url, "--workers", "2", NULL};
    it_broker_start_env(&a, args, NULL);
    IT_ASSERT(healthz(a.port) == 503, "/healthz with Redis down: %d", healthz(a.port));
    it_conn_t *c = it_ws_hello(a.port, NULL);
    it_send_json(c, "{\"op\":\"publish\",\"topic\":\"u.t\",\"data\":1,\"id\":1}");
    it_expect_error(c, "1", "unavailable");
    redis_start(&redis, redis.port);
    wait_health(a.port, 200);
    it_subscribe(c, "u.*");
    it_conn_t *p = it_ws_hello(a.port, NULL);
    it_publish(p, "u.t", "2");
    it_expect_message(c, "u.t", 1, "2");
    it_conn_free(c);
    it_conn_free(p);
    it_broker_stop(&a);
    redis_stop(&redis);
}
END_TEST

START_TEST(epoch_survives_node_restart)
{
    proc_t redis = {0};
    redis_start(&redis, 0);
    it_broker_t a;
    node_start(&a, &redis, NULL);
    it_conn_t *c = it_ws_hello(a.port, NULL);
    msg_server_t ack;
    it_send_json(c, "{\"op\":\"subscribe\",\"topic\":\"ep.t\",\"id\":1}");
    it_expect_ack(c, "1", &ack);
    char epoch[MSG_EPOCH_MAX + 1];
    snprintf(epoch, sizeof(epoch), "%s", ack.epoch);
    it_conn_t *p = it_ws_hello(a.port, NULL);
    for (int i = 1; i <= 5; i++)
        it_publish(p, "ep.t", "0");
    it_conn_free(c);
    it_conn_free(p);
    it_broker_stop(&a);
    it_broker_t b;
    node_start(&b, &redis, NULL);
    c = it_ws_hello(b.port, NULL);
    it_send_json(c,
                 "{\"op\":\"subscribe\",\"topic\":\"ep.t\",\"since\":2,\"epoch\":\"%s\",\"id\":2}",
                 epoch);
    it_expect_ack(c, "2", &ack);
    IT_ASSERT(ack.recovered == 1 && strcmp(ack.epoch, epoch) == 0 && ack.seq == 5,
              "after a node restart: recovered %d epoch %s (was %s) seq %llu", ack.recovered,
              ack.epoch, epoch, (unsigned long long)ack.seq);
    for (uint64_t s = 3; s <= 5; s++)
        it_expect_message(c, "ep.t", s, "0");
    it_conn_free(c);
    it_broker_stop(&b);
    redis_stop(&redis);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, messages_cross_nodes);
    tcase_add_test(tc, same_order_on_every_node);
    tcase_add_test(tc, failover_recovers_from_shared_history);
    tcase_add_test(tc, redis_restart_degrades_then_recovers);
    tcase_add_test(tc, redis_unreachable_at_start);
    tcase_add_test(tc, epoch_survives_node_restart);
    suite_add_tcase(s, tc);
    return it_run_suite(s);
}
