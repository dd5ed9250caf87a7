/*
 * test_lifecycle.c - connection lifecycle (PROTOCOL.md sections 4 and 5):
 * heartbeat Pings and the ping timeout, the close timeout, graceful
 * shutdown on SIGTERM/SIGINT, and the slow-consumer policies.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

START_TEST(heartbeat_ping)
{
    it_broker_t b;
    msg_server_t h;
    char d[400];
    it_broker_start(&b, "--ping-interval", "0.3", "--ping-timeout", "0.3");
    it_conn_t *c = it_ws_hello(b.port, &h);
    IT_ASSERT(h.heartbeat == 0.3, "hello heartbeat: expected 0.3, got %g", h.heartbeat);
    int64_t t0 = it_now_ms();
    it_ev_t ev = it_recv(c, 2000);
    IT_ASSERT(ev.type == IT_EV_PING, "--ping-interval 0.3: expected a Ping within 2 s, got %s",
              it_ev_describe(&ev, d, sizeof(d)));
    IT_ASSERT(it_now_ms() - t0 <= 1500, "first Ping only after %lld ms",
              (long long)(it_now_ms() - t0));
    it_send_frame(c, WS_OP_PONG, true, ev.data, ev.len);
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(ping_timeout_closes)
{
    it_broker_t b;
    char d[400];
    it_broker_start(&b, "--ping-interval", "0.3", "--ping-timeout", "0.3", "--close-timeout",
                    "0.5");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    c->auto_pong = false;
    int64_t t0 = it_now_ms();
    int pings = 0;
    it_ev_t ev;
    for (;;) {
        ev = it_recv(c, 3000);
        if (ev.type != IT_EV_PING)
            break;
        pings++;
    }
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(ev.type == IT_EV_CLOSE && ev.close_code == 1001 &&
                  strcmp((const char *)ev.data, "ping timeout") == 0,
              "silent client: expected Close 1001 'ping timeout', got %s",
              it_ev_describe(&ev, d, sizeof(d)));
    IT_ASSERT(pings >= 1, "closed for ping timeout without any Ping first");
    IT_ASSERT(took >= 450 && took <= 2500,
              "ping timeout came after %lld ms, expected about 600 (interval + timeout)",
              (long long)took);
    /* No reply to the Close: TCP must go within the close timeout. */
    it_expect_eof(c, 2000);
    it_conn_free(c);
    IT_ASSERT(it_metric(b.port, "wsbroker_ping_timeouts_total") >= 1,
              "wsbroker_ping_timeouts_total did not count the timeout");
    it_broker_stop(&b);
}
END_TEST

START_TEST(pongs_keep_alive)
{
    it_broker_t b;
    char d[400];
    it_broker_start(&b, "--ping-interval", "0.3", "--ping-timeout", "0.3");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    int pings = 0;
    int64_t end = it_now_ms() + 2500;
    while (it_now_ms() < end) {
        it_ev_t ev = it_recv(c, (int)(end - it_now_ms()));
        if (ev.type == IT_EV_TIMEOUT)
            break;
        IT_ASSERT(ev.type == IT_EV_PING, "client answering Pings: expected only Pings, got %s",
                  it_ev_describe(&ev, d, sizeof(d)));
        it_send_frame(c, WS_OP_PONG, true, ev.data, ev.len);
        pings++;
    }
    IT_ASSERT(pings >= 3, "expected at least 3 Pings in 2.5 s at a 0.3 s interval, got %d", pings);
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(any_frame_keeps_alive)
{
    it_broker_t b;
    it_broker_start(&b, "--ping-interval", "0.3", "--ping-timeout", "0.3");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    c->auto_pong = false;
    /* Never answer the Pings, but send a request every 150 ms. */
    int64_t end = it_now_ms() + 2500;
    unsigned n = 0;
    while (it_now_ms() < end) {
        char id[16];
        snprintf(id, sizeof(id), "%u", ++n);
        it_send_json(c, "{\"op\":\"ping\",\"id\":%s}", id);
        for (;;) {
            char d[400];
            it_ev_t ev = it_recv(c, IT_TIMEOUT);
            if (ev.type == IT_EV_PING)
                continue;
            msg_server_t m;
            IT_ASSERT(ev.type == IT_EV_TEXT &&
                          msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                          m.op == MSG_S_PONG && it_span_is(m.id, id),
                      "client sending frames but no Pongs: expected pong %s, got %s", id,
                      it_ev_describe(&ev, d, sizeof(d)));
            break;
        }
        it_sleep_ms(150);
    }
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(close_timeout)
{
    it_broker_t b;
    /* c reads frame by frame with auto_pong off: no heartbeat Pings. */
    it_broker_start(&b, "--close-timeout", "0.5", IT_NO_HEARTBEAT);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    c->auto_pong = false;
    it_send_frame_ex(c, WS_OP_TEXT, true, 0, false, "{}", 2);
    it_expect_close(c, 1002, NULL);
    int64_t t0 = it_now_ms();
    it_expect_eof(c, 1500);
    IT_ASSERT(it_now_ms() - t0 <= 1500, "TCP dropped after %lld ms", (long long)(it_now_ms() - t0));
    it_conn_free(c);

    /* The same for a client that keeps sending after the Close. */
    c = it_ws_hello(b.port, NULL);
    it_send_frame(c, WS_OP_BINARY, true, "x", 1);
    it_expect_close(c, 1003, NULL);
    t0 = it_now_ms();
    bool eof = false;
    while (!eof && it_now_ms() - t0 < 1500) {
        it_try_send(c, (const uint8_t[]){0x89, 0x80, 1, 2, 3, 4}, 6);
        it_ev_t ev = it_recv(c, 100);
        eof = ev.type == IT_EV_EOF;
    }
    IT_ASSERT(eof, "a client that keeps sending Pings after the broker's Close was not dropped "
                   "within 1.5 s (--close-timeout 0.5)");
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

/* Every subscriber has all n messages of topic, in order, then the Close
 * 1001 'server shutting down'. */
static void expect_drained_then_close(it_conn_t *c, const char *topic, int n)
{
    for (int i = 1; i <= n; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"n\":%d}", i);
        it_expect_message(c, topic, (uint64_t)i, data);
    }
    it_expect_close(c, 1001, "server shutting down");
}

START_TEST(graceful_shutdown)
{
    enum { NSUB = 3, NMSG = 200 };
    it_broker_t b;
    it_conn_t *subs[NSUB];
    msg_server_t m;
    /* The subscribers and the stubborn client wait unread while the
     * publisher works: no heartbeat, however slowly that goes. */
    it_broker_start(&b, "--close-timeout", "1", IT_NO_HEARTBEAT);
    for (int i = 0; i < NSUB; i++) {
        subs[i] = it_ws_hello(b.port, NULL);
        snprintf(subs[i]->name, sizeof(subs[i]->name), "subscriber %d", i);
        it_subscribe(subs[i], "shut.t");
    }
    it_conn_t *stubborn = it_ws_hello(b.port, NULL);
    snprintf(stubborn->name, sizeof(stubborn->name), "client ignoring Close");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    for (int i = 1; i <= NMSG; i++)
        it_send_json(p, "{\"op\":\"publish\",\"topic\":\"shut.t\",\"data\":{\"n\":%d},\"id\":%d}",
                     i, i);
    for (int i = 1; i <= NMSG; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i);
        it_expect_ack(p, id, &m);
    }

    int64_t t0 = it_now_ms();
    IT_ASSERT(kill(b.pid, SIGTERM) == 0, "kill failed");
    /* Everything acknowledged arrives, then the Close. */
    expect_drained_then_close(subs[0], "shut.t", NMSG);
    it_expect_close(stubborn, 1001, "server shutting down");

    /* The broker still waits for the stubborn client: it is shutting down. */
    IT_ASSERT(it_broker_alive(&b), "broker exited while a client had not answered its Close");
    it_http_t r;
    int st = it_http_get(b.port, "/healthz", NULL, &r);
    it_http_free(&r);
    IT_ASSERT(st == 503 || st == IT_HTTP_REFUSED || st == IT_HTTP_EOF,
              "GET /healthz while shutting down: expected 503 or no connection, got %d", st);
    int ws;
    it_conn_t *late = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &ws, NULL);
    IT_ASSERT(late == NULL && (ws == 503 || ws == IT_HTTP_REFUSED || ws == IT_HTTP_EOF),
              "a new WebSocket while shutting down: expected 503 or no connection, got %d", ws);

    for (int i = 1; i < NSUB; i++)
        expect_drained_then_close(subs[i], "shut.t", NMSG);
    it_expect_close(p, 1001, "server shutting down");
    for (int i = 0; i < NSUB; i++) {
        it_send_close(subs[i], 1001, NULL);
        it_expect_eof(subs[i], 2000);
    }
    it_send_close(p, 1001, NULL);

    int status = it_broker_wait(&b, (int)(t0 + 2000 - it_now_ms()));
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(status != -1, "broker still running %lld ms after SIGTERM (--close-timeout 1)",
              (long long)took);
    IT_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "broker after SIGTERM: expected exit 0, got status 0x%x", status);
    IT_ASSERT(took <= 2000, "broker took %lld ms to exit (close-timeout 1 s + 1 s)",
              (long long)took);
    it_expect_eof(stubborn, 1000);
    it_http_t r2;
    st = it_http_get(b.port, "/healthz", NULL, &r2);
    /* Over TLS the test's relay is still there and can only drop it. */
    IT_ASSERT(st == IT_HTTP_REFUSED || (it_tls_mode() && st == IT_HTTP_EOF),
              "GET /healthz after exit: expected refused, got %d", st);
    for (int i = 0; i < NSUB; i++)
        it_conn_free(subs[i]);
    it_conn_free(p);
    it_conn_free(stubborn);
    it_broker_release(&b);
}
END_TEST

START_TEST(sigint_shutdown)
{
    it_broker_t b;
    it_broker_start(&b, "--close-timeout", "1");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    IT_ASSERT(kill(b.pid, SIGINT) == 0, "kill failed");
    it_expect_close(c, 1001, "server shutting down");
    it_send_close(c, 1001, NULL);
    it_expect_eof(c, 2000);
    int status = it_broker_wait(&b, 2000);
    IT_ASSERT(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "broker after SIGINT: expected exit 0 within 2 s, got status %d", status);
    it_conn_free(c);
    it_broker_release(&b);
}
END_TEST

START_TEST(shutdown_idle_is_quick)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    int64_t t0 = it_now_ms();
    it_broker_stop(&b);
    IT_ASSERT(it_now_ms() - t0 < 1500,
              "an idle broker took %lld ms to exit on SIGTERM (nothing to wait for)",
              (long long)(it_now_ms() - t0));
}
END_TEST

/* Ready means ready: a SIGTERM as soon as /healthz answers 200 is a
 * graceful shutdown too (the signal handling must be in place by then). */
START_TEST(sigterm_right_after_ready)
{
    for (int i = 0; i < 30; i++) {
        it_broker_t b;
        it_broker_start(&b, NULL);
        int st = it_broker_term(&b, 5000);
        IT_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "run %d: SIGTERM right after /healthz answered 200: expected exit 0, got %s %d",
                  i,
                  st == -1          ? "no exit"
                  : WIFSIGNALED(st) ? "signal"
                                    : "status",
                  st == -1          ? 0
                  : WIFSIGNALED(st) ? WTERMSIG(st)
                                    : WEXITSTATUS(st));
        it_broker_release(&b);
    }
}
END_TEST

/* ---- slow consumers ---- */

#define FLOOD_MSGS 2500
#define FLOOD_DATA 4000 /* bytes per message: ~10 MB in all */

typedef struct reader {
    it_conn_t *c;
    atomic_int done; /* messages read so far */
    char error[512]; /* empty when every message arrived in order */
} reader_t;

/* Thread: the attentive subscriber reads FLOOD_MSGS messages as fast as
 * it can; each must be the next seq, with the publisher's data. */
static void *attentive_reader(void *arg)
{
    reader_t *r = arg;
    char d[400];
    for (int k = 1; k <= FLOOD_MSGS; k++) {
        msg_server_t m;
        char prefix[32];
        it_ev_t ev = it_next(r->c, 10000);
        int n = snprintf(prefix, sizeof(prefix), "\"%d:", k);
        if (ev.type != IT_EV_TEXT ||
            msg_parse_server((const char *)ev.data, ev.len, &m) != MSG_OK ||
            m.op != MSG_S_MESSAGE || m.seq != (uint64_t)k || m.data.len != FLOOD_DATA ||
            memcmp(m.data.p, prefix, (size_t)n) != 0) {
            snprintf(r->error, sizeof(r->error),
                     "attentive subscriber: expected message %d (seq %d), got %s", k, k,
                     it_ev_describe(&ev, d, sizeof(d)));
            break;
        }
        atomic_store(&r->done, k);
    }
    atomic_store(&r->done, FLOOD_MSGS);
    return NULL;
}

/* Publish FLOOD_MSGS messages on topic from p (no ids) while a thread reads
 * them from the attentive subscriber, which must get every one in order.
 * window > 0 keeps at most window messages ahead of that reader, so the
 * broker never holds more than window messages for it at once; 0 publishes
 * as fast as the socket takes them. */
static void flood(it_conn_t *p, it_conn_t *fast, const char *topic, int window)
{
    pthread_t th;
    reader_t r = {.c = fast};
    char *data = malloc(FLOOD_DATA + 64);
    memset(data, 'x', FLOOD_DATA + 64);
    atomic_init(&r.done, 0);
    IT_ASSERT(pthread_create(&th, NULL, attentive_reader, &r) == 0, "pthread_create failed");
    for (int k = 1; k <= FLOOD_MSGS; k++) {
        int64_t deadline = it_now_ms() + 10000;
        while (window > 0 && k - atomic_load(&r.done) > window && it_now_ms() < deadline)
            usleep(50);
        int n = snprintf(data, 32, "\"%d:", k);
        data[n] = 'x';
        data[FLOOD_DATA - 1] = '"';
        data[FLOOD_DATA] = '\0';
        it_send_json(p, "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":%s}", topic, data);
    }
    free(data);
    pthread_join(th, NULL);
    IT_ASSERT(r.error[0] == '\0', "%s", r.error);
    it_sync(p);
}

/* A subscriber that never reads (tiny SO_RCVBUF) and an attentive one on
 * the same topic; the slow one must be closed, the other must get all.
 * hold_ms > 0: the slow one reads only that long after the flood, and the
 * end must then come within 2 s of its reading again. */
static void slow_close_case(int window, int hold_ms)
{
    it_broker_t b;
    char reason[128] = "";
    /* The slow subscriber is not read during the flood: no heartbeat, so
     * only the slow-consumer policy can close it. */
    it_broker_start(&b, "--max-backlog", "65536", "--close-timeout", "0.5", IT_NO_HEARTBEAT);
    it_conn_t *slow = it_ws_hello_at(__FILE__, __LINE__, b.port, 4096, NULL);
    snprintf(slow->name, sizeof(slow->name), "slow subscriber");
    it_subscribe(slow, "flood.t");
    it_conn_t *fast = it_ws_hello(b.port, NULL);
    snprintf(fast->name, sizeof(fast->name), "attentive subscriber");
    it_subscribe(fast, "flood.t");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    double closes0 = it_metric(b.port, "wsbroker_slow_consumer_closes_total");

    flood(p, fast, "flood.t", window);
    if (hold_ms > 0)
        it_sleep_ms(hold_ms);

    /* Now read what the slow one was sent: some messages, then the end. */
    int64_t t0 = it_now_ms();
    uint64_t last = 0;
    int code = 0;
    for (;;) {
        char d[400];
        it_ev_t ev = it_next(slow, 10000);
        if (ev.type == IT_EV_TEXT) {
            msg_server_t m;
            IT_ASSERT(msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                          m.op == MSG_S_MESSAGE && m.seq == last + 1,
                      "slow subscriber before its close: expected seq %llu, got %.80s",
                      (unsigned long long)(last + 1), (const char *)ev.data);
            last = m.seq;
            continue;
        }
        if (ev.type == IT_EV_CLOSE) {
            code = ev.close_code;
            snprintf(reason, sizeof(reason), "%s", (const char *)ev.data);
            break;
        }
        IT_ASSERT(ev.type == IT_EV_EOF,
                  "slow subscriber: expected messages then Close 1008 or "
                  "EOF, got %s",
                  it_ev_describe(&ev, d, sizeof(d)));
        code = IT_CLOSE_EOF;
        break;
    }
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(hold_ms == 0 || took <= 2000,
              "slow subscriber held %d ms: the end came %lld ms after it read again", hold_ms,
              (long long)took);
    IT_ASSERT(last < FLOOD_MSGS, "the slow subscriber received all %d messages: never closed",
              FLOOD_MSGS);
    IT_ASSERT(code == IT_CLOSE_EOF || (code == 1008 && strcmp(reason, "slow consumer") == 0),
              "slow subscriber: expected Close 1008 'slow consumer' (or EOF), got %d '%s'", code,
              reason);
    double closes1 = it_metric(b.port, "wsbroker_slow_consumer_closes_total");
    IT_ASSERT(closes1 == closes0 + 1,
              "wsbroker_slow_consumer_closes_total: expected %g + 1, got %g", closes0, closes1);
    /* Publisher and attentive subscriber are unaffected. */
    uint64_t seq = it_publish(p, "flood.t", "\"after\"");
    it_expect_message(fast, "flood.t", seq, "\"after\"");
    it_conn_free(slow);
    it_conn_free(fast);
    it_conn_free(p);
    it_broker_stop(&b);
}

START_TEST(slow_consumer_close)
{
    slow_close_case(4, 0);
}
END_TEST

/* The slow one reads again only 10 s after the broker gave up on it at the
 * close timeout: the rest and the end must still come at once, not when
 * the kernel's zero-window probes, backed off while it held, next reach
 * it. */
START_TEST(slow_consumer_long_stall_ends_promptly)
{
    slow_close_case(4, 10000);
}
END_TEST

/* The publisher far ahead: up to 64 publishes (256 KiB, four times the
 * backlog limit) in flight, so the broker reads many publishes at once and
 * queues them on the attentive subscriber before its next flush; that
 * subscriber must still not count as slow. (The window keeps the test about
 * the broker: with no bound at all, a reader slowed by a sanitizer can fall
 * megabytes behind and really be slow.) */
START_TEST(slow_consumer_close_publisher_burst)
{
    slow_close_case(64, 0);
}
END_TEST

START_TEST(slow_consumer_drop)
{
    it_broker_t b;
    /* The slow subscriber is not read during the flood and must stay open:
     * no heartbeat, however long the flood takes. */
    it_broker_start(&b, "--max-backlog", "65536", "--slow-consumer", "drop", IT_NO_HEARTBEAT);
    it_conn_t *slow = it_ws_hello_at(__FILE__, __LINE__, b.port, 4096, NULL);
    snprintf(slow->name, sizeof(slow->name), "slow subscriber");
    it_subscribe(slow, "flood.t");
    it_conn_t *fast = it_ws_hello(b.port, NULL);
    snprintf(fast->name, sizeof(fast->name), "attentive subscriber");
    it_subscribe(fast, "flood.t");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    double drops0 = it_metric(b.port, "wsbroker_slow_consumer_drops_total");

    flood(p, fast, "flood.t", 4);

    /* A Ping while its backlog is full: control frames are never dropped. */
    it_send_frame(slow, WS_OP_PING, true, "ctl", 3);

    /* The slow one reads everything queued: increasing seqs with a gap. */
    uint64_t last = 0, got = 0;
    bool gap = false, ponged = false;
    for (;;) {
        char d[400];
        msg_server_t m;
        it_ev_t ev = it_next(slow, 500);
        if (ev.type == IT_EV_TIMEOUT)
            break;
        if (ev.type == IT_EV_PONG && ev.len == 3 && memcmp(ev.data, "ctl", 3) == 0 && !ponged) {
            ponged = true;
            continue;
        }
        IT_ASSERT(ev.type == IT_EV_TEXT &&
                      msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                      m.op == MSG_S_MESSAGE,
                  "slow subscriber in drop mode: expected messages, got %s",
                  it_ev_describe(&ev, d, sizeof(d)));
        IT_ASSERT(m.seq > last, "slow subscriber: seq %llu after %llu", (unsigned long long)m.seq,
                  (unsigned long long)last);
        gap |= m.seq != last + 1;
        last = m.seq;
        got++;
    }
    /* It is still subscribed and open, and sees the gap at the latest now. */
    uint64_t seq = it_publish(p, "flood.t", "\"after\"");
    it_expect_message(fast, "flood.t", seq, "\"after\"");
    it_expect_message(slow, "flood.t", seq, "\"after\"");
    gap |= seq != last + 1;
    IT_ASSERT(gap && got < FLOOD_MSGS,
              "--slow-consumer drop: expected a seq gap, got %llu messages up to seq %llu, then "
              "seq %llu",
              (unsigned long long)got, (unsigned long long)last, (unsigned long long)seq);
    IT_ASSERT(ponged, "Ping sent while the backlog was full: no Pong (control frames must not "
                      "be dropped)");
    double drops1 = it_metric(b.port, "wsbroker_slow_consumer_drops_total");
    IT_ASSERT(drops1 > drops0, "wsbroker_slow_consumer_drops_total did not move (%g)", drops1);
    it_sync(slow);
    it_conn_free(slow);
    it_conn_free(fast);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

static Suite *lifecycle_suite(void)
{
    Suite *s = suite_create("lifecycle");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, heartbeat_ping);
    tcase_add_test(tc, ping_timeout_closes);
    tcase_add_test(tc, pongs_keep_alive);
    tcase_add_test(tc, any_frame_keeps_alive);
    tcase_add_test(tc, close_timeout);
    tcase_add_test(tc, graceful_shutdown);
    tcase_add_test(tc, sigint_shutdown);
    tcase_add_test(tc, shutdown_idle_is_quick);
    tcase_add_test(tc, sigterm_right_after_ready);
    tcase_add_test(tc, slow_consumer_close);
    tcase_add_test(tc, slow_consumer_close_publisher_burst);
    tcase_add_test(tc, slow_consumer_drop);
    tcase_add_test(tc, slow_consumer_long_stall_ends_promptly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(lifecycle_suite());
}
