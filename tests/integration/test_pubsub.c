/*
 * test_pubsub.c - the JSON protocol on /ws (PROTOCOL.md sections 2-4):
 * hello, subscribe/unsubscribe/publish/ping with and without id, every
 * error code reachable without auth, topic grammar and wildcards, one
 * delivery per connection, byte-exact data, seq numbering and ordering,
 * and fragmented client messages.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- helpers ---- */

#define MAX_GOT 64

typedef struct got {
    int n;
    char topic[MAX_GOT][TOPIC_MAX + 1];
    uint64_t seq[MAX_GOT];
} got_t;

/* Collect messages on c until one on fence arrived and then nothing for
 * 150 ms (so a delivery that overtook or trailed the fence is seen too).
 * The fence itself is not recorded. */
#define collect(c, fence, g) collect_at(__FILE__, __LINE__, (c), (fence), (g))
static void collect_at(const char *file, int line, it_conn_t *c, const char *fence, got_t *g)
{
    bool fenced = false;
    int fences = 0;
    g->n = 0;
    for (;;) {
        msg_server_t m;
        char d[400];
        it_ev_t ev = it_next(c, fenced ? 150 : IT_TIMEOUT);
        if (ev.type == IT_EV_TIMEOUT && fenced)
            break;
        if (ev.type != IT_EV_TEXT)
            it_fail_at(file, line, "%s: waiting for messages up to fence %s, got %s", c->name,
                       fence, it_ev_describe(&ev, d, sizeof(d)));
        if (msg_parse_server((const char *)ev.data, ev.len, &m) != MSG_OK || m.op != MSG_S_MESSAGE)
            it_fail_at(file, line, "%s: expected only messages, got %s", c->name,
                       (const char *)ev.data);
        if (strcmp(m.topic, fence) == 0) {
            fenced = true;
            fences++;
            if (fences > 1)
                it_fail_at(file, line, "%s: fence %s delivered twice", c->name, fence);
            continue;
        }
        if (g->n == MAX_GOT)
            it_fail_at(file, line, "%s: too many messages", c->name);
        snprintf(g->topic[g->n], sizeof(g->topic[0]), "%s", m.topic);
        g->seq[g->n] = m.seq;
        g->n++;
    }
}

/* The collected topics must be exactly want (NULL-terminated), in any
 * order, each once. */
#define expect_topics(who, g, ...)                                                                 \
    expect_topics_at(__FILE__, __LINE__, (who), (g), (const char *[]){__VA_ARGS__, NULL})
static void expect_topics_at(const char *file, int line, const char *who, const got_t *g,
                             const char **want)
{
    char gotlist[1024] = "", wantlist[1024] = "";
    int nw = 0;
    for (; want[nw] != NULL; nw++)
        snprintf(wantlist + strlen(wantlist), sizeof(wantlist) - strlen(wantlist), " %s", want[nw]);
    for (int i = 0; i < g->n; i++)
        snprintf(gotlist + strlen(gotlist), sizeof(gotlist) - strlen(gotlist), " %s", g->topic[i]);
    bool ok = g->n == nw;
    for (int i = 0; ok && i < nw; i++) {
        int found = 0;
        for (int j = 0; j < g->n; j++)
            found += strcmp(g->topic[j], want[i]) == 0;
        ok = found == 1;
    }
    if (!ok)
        it_fail_at(file, line, "%s: expected deliveries of [%s ], got [%s ]", who, wantlist,
                   gotlist);
}

/* ---- hello ---- */

START_TEST(hello_defaults)
{
    it_broker_t b;
    msg_server_t h1, h2;
    it_broker_start(&b, NULL);
    it_conn_t *c1 = it_ws_hello(b.port, &h1);
    it_conn_t *c2 = it_ws_hello(b.port, &h2);
    IT_ASSERT(h1.client[0] != '\0', "hello without a client id");
    /* "<worker>-<connection>", both plain decimal. */
    unsigned wid = 0;
    unsigned long long cid = 0;
    char back[32];
    IT_ASSERT(sscanf(h1.client, "%u-%llu", &wid, &cid) == 2 && cid >= 1,
              "client id '%s' is not <worker>-<connection>", h1.client);
    snprintf(back, sizeof(back), "%u-%llu", wid, cid);
    IT_ASSERT(strcmp(back, h1.client) == 0, "client id '%s' is not plain decimal", h1.client);
    IT_ASSERT(strcmp(h1.client, h2.client) != 0, "two connections got the same client id '%s'",
              h1.client);
    IT_ASSERT(strcmp(h1.server, "wsbroker/" WSBROKER_VERSION) == 0,
              "hello server: expected wsbroker/%s, got '%s'", WSBROKER_VERSION, h1.server);
    IT_ASSERT(h1.heartbeat == 20.0, "hello heartbeat: expected the default 20, got %g",
              h1.heartbeat);
    IT_ASSERT(h1.max_message == 1048576, "hello max_message: expected 1048576, got %llu",
              (unsigned long long)h1.max_message);
    it_conn_free(c1);
    it_conn_free(c2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(hello_follows_flags)
{
    it_broker_t b;
    msg_server_t h;
    it_broker_start(&b, "--ping-interval", "7.5", "--max-message", "4096");
    it_conn_t *c = it_ws_hello(b.port, &h);
    IT_ASSERT(h.heartbeat == 7.5, "--ping-interval 7.5: hello heartbeat %g", h.heartbeat);
    IT_ASSERT(h.max_message == 4096, "--max-message 4096: hello max_message %llu",
              (unsigned long long)h.max_message);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

/* ---- requests and answers ---- */

START_TEST(section8_example)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"chat.*\",\"id\":1}");
    it_expect_ack(c, "1", &m);
    it_send_text(c, "{\"op\":\"publish\",\"topic\":\"chat.lobby\",\"data\":{\"text\":\"hi\"},"
                    "\"id\":2}");
    const char *raw = it_expect_op(c, MSG_S_ACK, &m);
    IT_ASSERT(it_span_is(m.id, "2") && strcmp(m.topic, "chat.lobby") == 0 && m.has_seq &&
                  m.seq == 1,
              "expected {\"op\":\"ack\",\"id\":2,\"topic\":\"chat.lobby\",\"seq\":1}, got %s", raw);
    it_expect_message(c, "chat.lobby", 1, "{\"text\":\"hi\"}");
    it_send_text(c, "{\"op\":\"publish\",\"topic\":\"chat.*\",\"data\":1,\"id\":3}");
    raw = it_expect_op(c, MSG_S_ERROR, &m);
    IT_ASSERT(it_span_is(m.id, "3") && strcmp(m.code, "bad_topic") == 0 &&
                  strcmp(m.message, "publish topic may not contain wildcards") == 0,
              "expected {\"op\":\"error\",\"id\":3,\"code\":\"bad_topic\",\"message\":\"publish "
              "topic may not contain wildcards\"}, got %s",
              raw);
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(ids_and_silent_success)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);

    /* Without id: success says nothing, so the pong comes first. */
    it_send_text(s, "{\"op\":\"subscribe\",\"topic\":\"q.a\"}");
    it_send_text(s, "{\"op\":\"ping\",\"id\":1}");
    it_expect_pong(s, "1");
    it_send_text(p, "{\"op\":\"publish\",\"topic\":\"q.a\",\"data\":\"x\"}");
    it_send_text(p, "{\"op\":\"ping\"}");
    it_expect_pong(p, NULL);
    it_expect_message(s, "q.a", 1, "\"x\"");
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"q.a\"}");
    it_send_text(s, "{\"op\":\"ping\",\"id\":2}");
    it_expect_pong(s, "2");

    /* String and number ids come back as sent. */
    it_send_text(s, "{\"op\":\"ping\",\"id\":\"req-7\"}");
    it_expect_pong(s, "\"req-7\"");
    it_send_text(s, "{\"op\":\"ping\",\"id\":-12}");
    it_expect_pong(s, "-12");
    it_send_text(s, "{\"op\":\"subscribe\",\"topic\":\"q.b\",\"id\":\"s b\"}");
    it_expect_ack(s, "\"s b\"", &m);
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"q.b\",\"id\":40}");
    it_expect_ack(s, "40", &m);
    it_send_text(p, "{\"op\":\"publish\",\"topic\":\"q.b\",\"data\":1,\"id\":\"p1\"}");
    const char *raw = it_expect_op(p, MSG_S_ACK, &m);
    IT_ASSERT(it_span_is(m.id, "\"p1\"") && strcmp(m.topic, "q.b") == 0 && m.seq == 1,
              "expected ack id \"p1\" topic q.b seq 1, got %s", raw);

    /* Without id a failure is reported without id. */
    it_send_text(p, "{\"op\":\"publish\",\"topic\":\"q.*\",\"data\":1}");
    it_expect_error(p, NULL, "bad_topic");
    it_expect_silence(s, 100);
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(subscribe_ack_seq_epoch)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);

    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"fresh.topic\",\"id\":1}");
    const char *raw = it_expect_op(c, MSG_S_ACK, &m);
    IT_ASSERT(it_span_is(m.id, "1") && m.has_seq && m.seq == 0 && m.epoch[0] != '\0',
              "subscribe to a new concrete topic: expected ack with seq 0 and an epoch, got %s",
              raw);
    IT_ASSERT(m.recovered == -1, "ack without since must not carry recovered: %s", raw);
    char epoch[MSG_EPOCH_MAX + 1];
    snprintf(epoch, sizeof(epoch), "%s", m.epoch);

    for (int i = 1; i <= 3; i++)
        IT_ASSERT(it_publish(p, "s.t", "0") == (uint64_t)i, "publish %d: wrong seq", i);
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"s.t\",\"id\":2}");
    raw = it_expect_op(c, MSG_S_ACK, &m);
    IT_ASSERT(it_span_is(m.id, "2") && m.has_seq && m.seq == 3 && strcmp(m.epoch, epoch) == 0,
              "subscribe to s.t after 3 publishes: expected ack seq 3 epoch %s, got %s", epoch,
              raw);
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"s.*\",\"id\":3}");
    it_expect_ack(c, "3", &m);
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"s.t\",\"last\":2,\"id\":4}");
    raw = it_expect_op(c, MSG_S_ACK, &m);
    IT_ASSERT(it_span_is(m.id, "4") && m.seq == 3,
              "subscribe with last (no history): expected ack seq 3, got %s", raw);
    it_sync(c);
    it_conn_free(c);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(ping_op)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_text(c, "{\"op\":\"ping\",\"id\":5}");
    it_expect_pong(c, "5");
    it_send_text(c, "{\"op\":\"ping\"}");
    it_expect_pong(c, NULL);
    it_send_text(c, "{\"id\":\"late\",\"op\":\"ping\"}");
    it_expect_pong(c, "\"late\"");
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

/* ---- errors ---- */

START_TEST(error_bad_json)
{
    it_broker_t b;
    const char *bad[] = {"not json", "[1,2]", "\"str\"", "42", "{\"op\":\"ping\"", "", "null"};
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        it_send_frame(c, WS_OP_TEXT, true, bad[i], strlen(bad[i]));
        it_expect_error(c, NULL, "bad_json");
    }
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_bad_request)
{
    it_broker_t b;
    const char *bad[] = {
        "{\"id\":1,\"topic\":\"a\"}",
        "{\"op\":5,\"id\":2}",
        "{\"op\":\"subscribe\",\"id\":3}",
        "{\"op\":\"subscribe\",\"topic\":7,\"id\":4}",
        "{\"op\":\"publish\",\"topic\":\"a.b\",\"id\":5}",
        "{\"op\":\"unsubscribe\",\"id\":6}",
        "{\"op\":\"subscribe\",\"topic\":\"a.b\",\"last\":\"x\",\"id\":7}",
        "{\"op\":\"subscribe\",\"topic\":\"a.b\",\"last\":-1,\"id\":8}",
        "{\"op\":\"subscribe\",\"topic\":\"a.b\",\"last\":1.5,\"id\":9}",
        "{\"op\":\"subscribe\",\"topic\":\"a.b\",\"since\":\"x\",\"id\":10}",
        "{\"op\":\"subscribe\",\"topic\":\"a.b\",\"since\":true,\"id\":11}",
        "{\"op\":\"publish\",\"topic\":[\"a\"],\"data\":1,\"id\":12}",
        "{\"op\":null,\"id\":13}",
    };
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char id[8];
        snprintf(id, sizeof(id), "%zu", i + 1);
        it_send_text(c, bad[i]);
        it_expect_error(c, id, "bad_request");
    }
    it_send_text(c, "{\"op\":\"publish\",\"topic\":\"a.b\"}");
    it_expect_error(c, NULL, "bad_request");
    it_send_text(c, "{}");
    it_expect_error(c, NULL, "bad_request");
    it_sync(c);
    it_publish(c, "a.b", "1");
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_since_on_pattern)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"a.*\",\"since\":0,\"id\":1}");
    it_expect_error(c, "1", "bad_request");
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"a.>\",\"since\":3,\"id\":2}");
    it_expect_error(c, "2", "bad_request");
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_unknown_op)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_text(c, "{\"op\":\"frobnicate\",\"id\":\"u1\"}");
    it_expect_error(c, "\"u1\"", "unknown_op");
    it_send_text(c, "{\"op\":\"PING\",\"id\":2}");
    it_expect_error(c, "2", "unknown_op");
    it_send_text(c, "{\"op\":\"hello\",\"id\":3}");
    it_expect_error(c, "3", "unknown_op");
    it_send_text(c, "{\"op\":\"message\"}");
    it_expect_error(c, NULL, "unknown_op");
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_bad_topic)
{
    it_broker_t b;
    char long_topic[300];
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    const char *pub_bad[] = {"chat.*", "chat.>", "*", ">",         "a..b",       ".a",
                             "a.",     "a b",    "",  "a\\u0001b", "caf\\u00e9", "a.*.b"};
    const char *sub_bad[] = {"a..b", ".a", "a.", "a b", "", "a.>.b", ">.a", "caf\\u00e9"};
    int id = 0;
    for (size_t i = 0; i < sizeof(pub_bad) / sizeof(pub_bad[0]); i++) {
        char ids[16];
        snprintf(ids, sizeof(ids), "%d", ++id);
        it_send_json(c, "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":0,\"id\":%d}", pub_bad[i],
                     id);
        it_expect_error(c, ids, "bad_topic");
    }
    for (size_t i = 0; i < sizeof(sub_bad) / sizeof(sub_bad[0]); i++) {
        char ids[16];
        snprintf(ids, sizeof(ids), "%d", ++id);
        it_send_json(c, "{\"op\":\"subscribe\",\"topic\":\"%s\",\"id\":%d}", sub_bad[i], id);
        it_expect_error(c, ids, "bad_topic");
    }
    /* 255 bytes is the longest topic; 256 is too long. */
    memset(long_topic, 'x', sizeof(long_topic));
    for (size_t i = 10; i < 255; i += 10)
        long_topic[i] = '.';
    long_topic[256] = '\0';
    it_send_json(c, "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":0,\"id\":\"long\"}", long_topic);
    it_expect_error(c, "\"long\"", "bad_topic");
    it_send_json(c, "{\"op\":\"subscribe\",\"topic\":\"%s\",\"id\":\"long2\"}", long_topic);
    it_expect_error(c, "\"long2\"", "bad_topic");
    long_topic[255] = '\0';
    it_subscribe(c, long_topic);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    uint64_t seq = it_publish(p, long_topic, "255");
    it_expect_message(c, long_topic, seq, "255");
    /* A '*' or '>' inside a longer segment is an ordinary character. */
    it_subscribe(c, "a*b.c>");
    seq = it_publish(p, "a*b.c>", "1");
    it_expect_message(c, "a*b.c>", seq, "1");
    it_sync(c);
    it_conn_free(c);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_not_subscribed)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"never.*\",\"id\":1}");
    it_expect_error(c, "1", "not_subscribed");
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"never.>\"}");
    it_expect_error(c, NULL, "not_subscribed");
    it_subscribe(c, "chat.>");
    /* Unsubscribe takes the same pattern string, not a matching one. */
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"chat.*\",\"id\":2}");
    it_expect_error(c, "2", "not_subscribed");
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"chat.>\",\"id\":3}");
    it_expect_ack(c, "3", &m);
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"chat.>\",\"id\":4}");
    it_expect_error(c, "4", "not_subscribed");
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(error_too_many_subscriptions)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, "--max-subscriptions", "3");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_subscribe(c, "a");
    it_subscribe(c, "b.*");
    it_subscribe(c, "c.>");
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"d\",\"id\":1}");
    it_expect_error(c, "1", "too_many_subscriptions");
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"e\"}");
    it_expect_error(c, NULL, "too_many_subscriptions");
    /* A repeated subscription is not a new one. */
    it_send_text(c, "{\"op\":\"subscribe\",\"topic\":\"b.*\",\"id\":2}");
    it_expect_ack(c, "2", &m);
    it_send_text(c, "{\"op\":\"unsubscribe\",\"topic\":\"a\",\"id\":3}");
    it_expect_ack(c, "3", &m);
    it_subscribe(c, "d");
    /* The limit is per connection. */
    it_conn_t *c2 = it_ws_hello(b.port, NULL);
    it_subscribe(c2, "x");
    it_subscribe(c2, "y");
    it_subscribe(c2, "z");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    uint64_t seq = it_publish(p, "d", "4");
    it_expect_message(c, "d", seq, "4");
    it_conn_free(c);
    it_conn_free(c2);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

/* ---- routing ---- */

START_TEST(wildcards)
{
    it_broker_t b;
    got_t g;
    const char *pats[] = {"chat.*", "chat.>", "*.room1", ">", "*", "chat.*.x", "chat"};
    enum { NP = sizeof(pats) / sizeof(pats[0]) };
    it_conn_t *s[NP];
    it_broker_start(&b, NULL);
    for (int i = 0; i < NP; i++) {
        s[i] = it_ws_hello(b.port, NULL);
        snprintf(s[i]->name, sizeof(s[i]->name), "sub '%s'", pats[i]);
        it_subscribe(s[i], pats[i]);
        it_subscribe(s[i], "fence");
    }
    it_conn_t *p = it_ws_hello(b.port, NULL);
    const char *topics[] = {"chat",         "chat.room1",  "chat.room2",
                            "chat.room1.x", "other.room1", "chat.room1.y.z"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        it_publish(p, topics[i], "0");
    it_publish(p, "fence", "0");

    collect(s[0], "fence", &g);
    expect_topics("chat.*", &g, "chat.room1", "chat.room2");
    collect(s[1], "fence", &g);
    expect_topics("chat.>", &g, "chat.room1", "chat.room2", "chat.room1.x", "chat.room1.y.z");
    collect(s[2], "fence", &g);
    expect_topics("*.room1", &g, "chat.room1", "other.room1");
    collect(s[3], "fence", &g);
    expect_topics(">", &g, "chat", "chat.room1", "chat.room2", "chat.room1.x", "other.room1",
                  "chat.room1.y.z");
    collect(s[4], "fence", &g);
    expect_topics("*", &g, "chat");
    collect(s[5], "fence", &g);
    expect_topics("chat.*.x", &g, "chat.room1.x");
    collect(s[6], "fence", &g);
    expect_topics("chat", &g, "chat");
    for (int i = 0; i < NP; i++)
        it_conn_free(s[i]);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(one_delivery_per_connection)
{
    it_broker_t b;
    got_t g;
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "a.b");
    it_subscribe(s, "a.*");
    it_subscribe(s, "a.>");
    it_subscribe(s, ">");
    it_subscribe(s, "*.b");
    it_subscribe(s, "dup.t");
    it_subscribe(s, "dup.t");
    it_subscribe(s, "fence.x");
    it_publish(p, "a.b", "1");
    it_publish(p, "a.c", "2");
    it_publish(p, "dup.t", "3");
    it_publish(p, "fence.x", "0");
    collect(s, "fence.x", &g);
    expect_topics("overlapping patterns", &g, "a.b", "a.c", "dup.t");

    /* One unsubscribe of several matching patterns keeps the others. */
    msg_server_t m;
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"a.b\",\"id\":1}");
    it_expect_ack(s, "1", &m);
    it_publish(p, "a.b", "4");
    it_publish(p, "fence.x", "0");
    collect(s, "fence.x", &g);
    expect_topics("after unsubscribing a.b", &g, "a.b");
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(unsubscribe_stops_delivery)
{
    it_broker_t b;
    got_t g;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "u.t");
    it_subscribe(s, "u.*");
    it_subscribe(s, "fence");
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"u.t\",\"id\":1}");
    it_expect_ack(s, "1", &m);
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"u.*\",\"id\":2}");
    it_expect_ack(s, "2", &m);
    it_publish(p, "u.t", "1");
    it_publish(p, "fence", "0");
    collect(s, "fence", &g);
    expect_topics("after unsubscribe", &g, NULL);
    /* Messages published before a subscription are not delivered. */
    it_publish(p, "late.t", "1");
    it_subscribe(s, "late.t");
    uint64_t seq = it_publish(p, "late.t", "2");
    IT_ASSERT(seq == 2, "second publish on late.t: seq %llu", (unsigned long long)seq);
    it_expect_message(s, "late.t", 2, "2");
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(data_byte_exact)
{
    it_broker_t b;
    const char *values[] = {
        "{ \"a\" : [1, 2 ,3] ,\"b\":{\"c\" :null}}",
        "123456789012345678901234567890",
        "-0.0e+00",
        "1E400",
        "\"esc \\u00e9\\n\\\"\\\\\\/ \\ud83d\\ude00\"",
        "\"h\xc3\xa9llo \xe2\x9c\x93\"",
        "[ ]",
        "{}",
        "true",
        "null",
        "\"two  spaces\"",
        "{\n\t\"k\" :\t[ 1 ,\n 2 ]\n}",
        "[{\"op\":\"publish\",\"topic\":\"x\",\"data\":1}]",
    };
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "d.x");
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t seq = it_publish(p, "d.x", values[i]);
        it_expect_message(s, "d.x", seq, values[i]);
    }
    /* Whitespace around the value is not part of it. */
    it_send_text(p, "{\"op\":\"publish\",\"topic\":\"d.x\",\"data\":  \n 42 \t,\"id\":9}");
    msg_server_t m;
    it_expect_ack(p, "9", &m);
    it_expect_message(s, "d.x", m.seq, "42");
    /* data may come before op and topic. */
    it_send_text(p, "{\"data\":[1, 2],\"id\":10,\"topic\":\"d.x\",\"op\":\"publish\"}");
    it_expect_ack(p, "10", &m);
    it_expect_message(s, "d.x", m.seq, "[1, 2]");
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(seq_per_topic)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    it_conn_t *sa = it_ws_hello(b.port, NULL);
    it_conn_t *sall = it_ws_hello(b.port, NULL);
    it_conn_t *p1 = it_ws_hello(b.port, NULL);
    it_conn_t *p2 = it_ws_hello(b.port, NULL);
    snprintf(sa->name, sizeof(sa->name), "sub seq.a");
    snprintf(sall->name, sizeof(sall->name), "sub seq.*");
    it_subscribe(sa, "seq.a");
    it_subscribe(sall, "seq.*");

    /* A topic nobody subscribes to still counts from 1. */
    IT_ASSERT(it_publish(p1, "nosub.n", "0") == 1, "first publish on nosub.n: seq != 1");
    IT_ASSERT(it_publish(p2, "nosub.n", "0") == 2, "second publish on nosub.n: seq != 2");

    for (int i = 1; i <= 40; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        uint64_t seq = it_publish(i % 2 ? p1 : p2, "seq.a", data);
        IT_ASSERT(seq == (uint64_t)i, "publish %d on seq.a: ack seq %llu, expected %d", i,
                  (unsigned long long)seq, i);
        if (i % 4 == 0) {
            uint64_t sb = it_publish(p2, "seq.b", data);
            IT_ASSERT(sb == (uint64_t)(i / 4), "publish on seq.b: ack seq %llu, expected %d",
                      (unsigned long long)sb, i / 4);
        }
    }
    for (int i = 1; i <= 40; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        it_expect_message(sa, "seq.a", (uint64_t)i, data);
    }
    /* The pattern subscriber sees each topic gap-free and in order. */
    uint64_t last_a = 0, last_b = 0;
    for (int k = 0; k < 50; k++) {
        msg_server_t m;
        const char *raw = it_expect_op(sall, MSG_S_MESSAGE, &m);
        uint64_t *last = strcmp(m.topic, "seq.a") == 0   ? &last_a
                         : strcmp(m.topic, "seq.b") == 0 ? &last_b
                                                         : NULL;
        IT_ASSERT(last != NULL, "seq.* subscriber: unexpected %s", raw);
        IT_ASSERT(m.seq == *last + 1, "seq.* subscriber: expected seq %llu on %s, got %s",
                  (unsigned long long)(*last + 1), m.topic, raw);
        *last = m.seq;
    }
    it_expect_silence(sall, 100);
    it_conn_free(sa);
    it_conn_free(sall);
    it_conn_free(p1);
    it_conn_free(p2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(publisher_ack_before_own_message)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_subscribe(c, "self.t");
    for (int i = 1; i <= 5; i++) {
        it_send_json(c, "{\"op\":\"publish\",\"topic\":\"self.t\",\"data\":%d,\"id\":%d}", i, i);
        char id[8], data[8];
        snprintf(id, sizeof(id), "%d", i);
        snprintf(data, sizeof(data), "%d", i);
        it_expect_ack(c, id, &m);
        IT_ASSERT(m.seq == (uint64_t)i, "ack of publish %d: seq %llu", i,
                  (unsigned long long)m.seq);
        it_expect_message(c, "self.t", (uint64_t)i, data);
    }
    /* Pipelined: every ack still precedes its own message. */
    for (int i = 6; i <= 25; i++)
        it_send_json(c, "{\"op\":\"publish\",\"topic\":\"self.t\",\"data\":%d,\"id\":%d}", i, i);
    bool acked[26] = {false};
    for (int k = 0; k < 40; k++) {
        const char *raw = it_expect_json(c, &m, IT_TIMEOUT);
        if (m.op == MSG_S_ACK) {
            IT_ASSERT(m.seq >= 6 && m.seq <= 25 && !acked[m.seq], "unexpected ack %s", raw);
            acked[m.seq] = true;
        } else {
            IT_ASSERT(m.op == MSG_S_MESSAGE && m.seq >= 6 && m.seq <= 25 && acked[m.seq],
                      "message before its ack: %s", raw);
        }
    }
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(fragmented_client_messages)
{
    it_broker_t b;
    msg_server_t m;
    char d[400];
    /* p reads its Pongs frame by frame: no heartbeat Pings in between. */
    it_broker_start(&b, IT_NO_HEARTBEAT);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "frag.t");
    p->auto_pong = false;

    const char *pub = "{\"op\":\"publish\",\"topic\":\"frag.t\",\"data\":{\"text\":\"fragmented "
                      "caf\xc3\xa9 message\",\"n\":[1,2,3]},\"id\":\"f1\"}";
    size_t len = strlen(pub);
    /* 7-byte fragments with a Ping after each. */
    int pings = it_send_fragmented(p, WS_OP_TEXT, pub, len, 7, true);
    for (int i = 0; i < pings; i++) {
        it_ev_t ev = it_recv(p, IT_TIMEOUT);
        char want[16];
        snprintf(want, sizeof(want), "p%d", i);
        IT_ASSERT(ev.type == IT_EV_PONG && ev.len == strlen(want) &&
                      memcmp(ev.data, want, ev.len) == 0,
                  "Ping '%s' inside a fragmented message: expected its Pong, got %s", want,
                  it_ev_describe(&ev, d, sizeof(d)));
    }
    it_expect_ack(p, "\"f1\"", &m);
    it_expect_message(s, "frag.t", 1,
                      "{\"text\":\"fragmented caf\xc3\xa9 message\",\"n\":[1,2,3]}");

    /* One byte per frame (so the UTF-8 sequence is split), after an empty
     * first frame. */
    it_send_frame(p, WS_OP_TEXT, false, "", 0);
    it_send_fragmented(p, WS_OP_CONT, pub, len, 1, false);
    it_expect_ack(p, "\"f1\"", &m);
    it_expect_message(s, "frag.t", 2, NULL);

    /* The whole message in three frames, written to TCP one byte at a time. */
    uint8_t *wire = malloc(len + 3 * WS_MAX_HEADER);
    size_t wl = it_frame(p, wire, WS_OP_TEXT, false, 0, true, pub, 20);
    wl += it_frame(p, wire + wl, WS_OP_PING, true, 0, true, "mid", 3);
    wl += it_frame(p, wire + wl, WS_OP_CONT, false, 0, true, pub + 20, 30);
    wl += it_frame(p, wire + wl, WS_OP_CONT, true, 0, true, pub + 50, len - 50);
    it_send_pieces(p, wire, wl, 1, 1);
    free(wire);
    it_ev_t ev = it_recv(p, IT_TIMEOUT);
    IT_ASSERT(ev.type == IT_EV_PONG && ev.len == 3 && memcmp(ev.data, "mid", 3) == 0,
              "expected Pong 'mid', got %s", it_ev_describe(&ev, d, sizeof(d)));
    it_expect_ack(p, "\"f1\"", &m);
    it_expect_message(s, "frag.t", 3, NULL);
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

START_TEST(unknown_members_ignored)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_send_text(s, "{\"op\":\"subscribe\",\"topic\":\"x.y\",\"id\":1,\"qos\":2,"
                    "\"nested\":{\"op\":\"publish\"},\"list\":[1,{\"a\":null}]}");
    it_expect_ack(s, "1", &m);
    it_send_text(s, "{\"zzz\":[1,2],\"topic\":\"x.y\",\"data\":5,\"op\":\"publish\",\"id\":2,"
                    "\"retain\":true}");
    it_expect_ack(s, "2", &m);
    it_expect_message(s, "x.y", 1, "5");
    it_send_text(s, "{\"op\":\"ping\",\"id\":3,\"extra\":\"x\"}");
    it_expect_pong(s, "3");
    it_send_text(s, "{\"op\":\"unsubscribe\",\"topic\":\"x.y\",\"id\":4,\"why\":\"done\"}");
    it_expect_ack(s, "4", &m);
    it_conn_free(s);
    it_broker_stop(&b);
}
END_TEST

/* Read exactly n raw bytes from c's socket (nothing may be buffered in c). */
static void read_exact(it_conn_t *c, uint8_t *buf, size_t n)
{
    int64_t deadline = it_now_ms() + 5000;
    IT_ASSERT(c->in_off == c->in_len, "unparsed bytes buffered before a raw read");
    for (size_t got = 0; got < n;) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int left = (int)(deadline - it_now_ms());
        IT_ASSERT(left > 0 && poll(&pfd, 1, left) == 1, "raw read: timeout after %zu of %zu bytes",
                  got, n);
        ssize_t r = recv(c->fd, buf + got, n - got, 0);
        IT_ASSERT(r > 0, "raw read: connection ended after %zu of %zu bytes", got, n);
        got += (size_t)r;
    }
}

/* Whatever the client's fragmentation, each broker message is one frame. */
START_TEST(one_frame_per_message)
{
    it_broker_t b;
    msg_server_t m;
    size_t sizes[] = {300, 100000};
    it_broker_start(&b, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "big.t");
    for (size_t i = 0; i < 2; i++) {
        size_t dlen = sizes[i];
        char *data = malloc(dlen + 3);
        data[0] = '"';
        memset(data + 1, 'y', dlen);
        data[dlen + 1] = '"';
        data[dlen + 2] = '\0';
        size_t cap = dlen + 128;
        char *req = malloc(cap);
        int n = snprintf(req, cap, "{\"op\":\"publish\",\"topic\":\"big.t\",\"data\":%s,\"id\":1}",
                         data);
        it_send_fragmented(p, WS_OP_TEXT, req, (size_t)n, 1000, false);
        it_expect_ack(p, "1", &m);

        uint8_t hdr[10];
        read_exact(s, hdr, 2);
        IT_ASSERT(hdr[0] == 0x81, "message frame: first byte 0x%02x, expected 0x81 (FIN, text)",
                  hdr[0]);
        IT_ASSERT((hdr[1] & 0x80) == 0, "broker frame is masked");
        uint64_t len = hdr[1] & 0x7f;
        if (len == 126) {
            read_exact(s, hdr + 2, 2);
            len = (uint64_t)hdr[2] << 8 | hdr[3];
        } else if (len == 127) {
            read_exact(s, hdr + 2, 8);
            len = 0;
            for (int k = 2; k < 10; k++)
                len = len << 8 | hdr[k];
        }
        IT_ASSERT(len > dlen && len < dlen + 200, "frame length %llu for %zu bytes of data",
                  (unsigned long long)len, dlen);
        char *payload = malloc(len);
        read_exact(s, (uint8_t *)payload, len);
        IT_ASSERT(msg_parse_server(payload, len, &m) == MSG_OK && m.op == MSG_S_MESSAGE &&
                      it_span_is(m.data, data),
                  "the single frame does not hold the whole message");
        free(payload);
        free(req);
        free(data);
    }
    it_conn_free(s);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

/* A publisher's burst, read by the broker in one go, reaches every
 * subscriber as single messages would: each once, gap-free and in seq
 * order, each in a frame of its own, the publisher's ack before its own
 * copy. (Consecutive messages of one topic are queued joined where a
 * connection takes them all as they are; with a 4 KiB backlog the longer
 * runs are judged one message at a time, the shorter ones still joined.) */
#define BURST_N      60
#define BURST_ROUNDS 3
/* 19 messages of about 260 bytes: a run longer than 4 KiB */
#define BURST_PAD                                                                                  \
    "0123456789012345678901234567890123456789012345678901234567890123456789"                       \
    "0123456789012345678901234567890123456789012345678901234567890123456789"                       \
    "012345678901234567890123456789012345678901234567890123456789"

static void burst_expect(it_conn_t *c, int round, bool a, bool bt, uint64_t *seq_a, uint64_t *seq_b)
{
    for (int i = 0; i < BURST_N; i++) {
        bool on_b = i % 20 == 19;
        if (on_b ? !bt : !a)
            continue;
        char data[320];
        snprintf(data, sizeof(data), "{\"r\":%d,\"i\":%d,\"pad\":\"%s\"}", round, i, BURST_PAD);
        uint64_t *seq = on_b ? seq_b : seq_a;
        it_expect_message(c, on_b ? "burst.b" : "burst.a", ++*seq, data);
    }
}

static void burst_case(const char *backlog)
{
    it_broker_t b;
    if (backlog != NULL)
        it_broker_start(&b, "--max-backlog", backlog);
    else
        it_broker_start(&b, NULL);
    it_conn_t *one = it_ws_hello(b.port, NULL), *many = it_ws_hello(b.port, NULL);
    it_conn_t *other = it_ws_hello(b.port, NULL), *p = it_ws_hello(b.port, NULL);
    it_conn_t *late = it_ws_hello(b.port, NULL);
    snprintf(one->name, sizeof(one->name), "sub burst.a");
    snprintf(many->name, sizeof(many->name), "sub burst.a burst.* >");
    snprintf(other->name, sizeof(other->name), "sub burst.b");
    snprintf(late->name, sizeof(late->name), "sub burst.a from round 1");
    snprintf(p->name, sizeof(p->name), "publisher");
    it_subscribe(one, "burst.a");
    it_subscribe(many, "burst.a");
    it_subscribe(many, "burst.*");
    it_subscribe(many, ">");
    it_subscribe(other, "burst.b");
    it_subscribe(p, "burst.a");
    uint64_t sa[5] = {0}, sb[5] = {0}; /* last seq seen: one, many, other, p, late */
    size_t cap = BURST_N * 400, len;
    uint8_t *buf = malloc(cap);
    ck_assert(buf != NULL);
    for (int r = 0; r < BURST_ROUNDS; r++) {
        if (r == 1) {
            it_subscribe(late, "burst.a");
            sa[4] = sa[0];
        }
        len = 0;
        for (int i = 0; i < BURST_N; i++) {
            char req[384];
            int n = snprintf(req, sizeof(req),
                             "{\"op\":\"publish\",\"topic\":\"%s\",\"id\":%d,\"data\":{\"r\":%d,"
                             "\"i\":%d,\"pad\":\"%s\"}}",
                             i % 20 == 19 ? "burst.b" : "burst.a", r * 1000 + i, r, i, BURST_PAD);
            len += it_frame(p, buf + len, WS_OP_TEXT, true, 0, true, req, (size_t)n);
        }
        it_send_raw(p, buf, len);
        /* The publisher: every ack, and its own copy of each burst.a
         * message only after that message's ack. */
        int acks = 0, own = 0, own_want = BURST_N - BURST_N / 20;
        while (acks < BURST_N || own < own_want) {
            msg_server_t m;
            const char *raw = it_expect_json(p, &m, IT_TIMEOUT);
            if (m.op == MSG_S_ACK) {
                char id[16];
                snprintf(id, sizeof(id), "%d", r * 1000 + acks);
                IT_ASSERT(it_span_is(m.id, id), "publisher: ack %s, expected id %s", raw, id);
                acks++;
                continue;
            }
            IT_ASSERT(
                m.op == MSG_S_MESSAGE && strcmp(m.topic, "burst.a") == 0 && m.seq == sa[3] + 1,
                "publisher: %s, expected burst.a seq %llu", raw, (unsigned long long)(sa[3] + 1));
            sa[3]++;
            /* message k of burst.a is publish number k + k / 19 of the round */
            int i = own + own / 19;
            IT_ASSERT(acks > i, "publisher: its message %d came before its ack (%d acks)", i, acks);
            own++;
        }
        burst_expect(one, r, true, false, &sa[0], &sb[0]);
        burst_expect(many, r, true, true, &sa[1], &sb[1]);
        burst_expect(other, r, false, true, &sa[2], &sb[2]);
        if (r >= 1)
            burst_expect(late, r, true, false, &sa[4], &sb[4]);
    }
    free(buf);
    it_conn_t *all[] = {one, many, other, p, late};
    for (size_t i = 0; i < 5; i++) {
        it_expect_silence(all[i], 100);
        it_conn_free(all[i]);
    }
    it_broker_stop(&b);
}

START_TEST(bursts_of_one_topic)
{
    burst_case(NULL);
    burst_case("4k");
}
END_TEST

static Suite *pubsub_suite(void)
{
    Suite *s = suite_create("pubsub");
    TCase *tc = tcase_create("pubsub");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, hello_defaults);
    tcase_add_test(tc, hello_follows_flags);
    tcase_add_test(tc, section8_example);
    tcase_add_test(tc, ids_and_silent_success);
    tcase_add_test(tc, subscribe_ack_seq_epoch);
    tcase_add_test(tc, ping_op);
    tcase_add_test(tc, error_bad_json);
    tcase_add_test(tc, error_bad_request);
    tcase_add_test(tc, error_since_on_pattern);
    tcase_add_test(tc, error_unknown_op);
    tcase_add_test(tc, error_bad_topic);
    tcase_add_test(tc, error_not_subscribed);
    tcase_add_test(tc, error_too_many_subscriptions);
    tcase_add_test(tc, wildcards);
    tcase_add_test(tc, one_delivery_per_connection);
    tcase_add_test(tc, unsubscribe_stops_delivery);
    tcase_add_test(tc, data_byte_exact);
    tcase_add_test(tc, seq_per_topic);
    tcase_add_test(tc, publisher_ack_before_own_message);
    tcase_add_test(tc, fragmented_client_messages);
    tcase_add_test(tc, unknown_members_ignored);
    tcase_add_test(tc, one_frame_per_message);
    tcase_add_test(tc, bursts_of_one_topic);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(pubsub_suite());
}
