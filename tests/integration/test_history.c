/*
 * test_history.c - retained history and recovery (PROTOCOL.md sections 2
 * and 4): `last` on concrete topics and patterns, `since` with and without
 * the epoch, truthful `recovered`, history TTL, replay racing live
 * publishers on other workers (no gap, no duplicate), and the --max-topics
 * bound with eviction, new epochs and flat memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <errno.h>

#include "harness.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* Subscribe with extra members (e.g. ",\"last\":3") and return the ack. */
static void subscribe_ex(it_conn_t *c, const char *topic, const char *extra, msg_server_t *ack)
{
    char id[16];
    snprintf(id, sizeof(id), "%u", ++c->next_id);
    it_send_json(c, "{\"op\":\"subscribe\",\"topic\":\"%s\",\"id\":%s%s}", topic, id, extra);
    it_expect_ack(c, id, ack);
}

static void publish_n(it_conn_t *p, const char *topic, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"n\":%d}", i);
        IT_ASSERT(it_publish(p, topic, data) == (uint64_t)i, "publish %d on %s", i, topic);
    }
}

/* The next messages are topic's seqs from..to with data {"n":seq}. */
static void expect_seqs(it_conn_t *c, const char *topic, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"n\":%d}", i);
        it_expect_message(c, topic, (uint64_t)i, data);
    }
}

START_TEST(last_replays_the_latest)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "5");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    publish_n(p, "h.a", 1, 8);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    subscribe_ex(s, "h.a", ",\"last\":3", &ack);
    IT_ASSERT(ack.has_seq && ack.seq == 8 && ack.epoch[0] != '\0', "ack seq %llu epoch '%s'",
              (unsigned long long)ack.seq, ack.epoch);
    expect_seqs(s, "h.a", 6, 8);
    publish_n(p, "h.a", 9, 9);
    expect_seqs(s, "h.a", 9, 9);
    it_sync(s);
    /* More than retained: the five kept. */
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    subscribe_ex(s2, "h.a", ",\"last\":100", &ack);
    expect_seqs(s2, "h.a", 5, 9);
    it_sync(s2);
    /* last 0 and no last: nothing. */
    it_conn_t *s3 = it_ws_hello(b.port, NULL);
    subscribe_ex(s3, "h.a", ",\"last\":0", &ack);
    subscribe_ex(s3, "h.b", "", &ack);
    IT_ASSERT(ack.seq == 0, "h.b never published: seq %llu", (unsigned long long)ack.seq);
    it_sync(s3);
    IT_ASSERT(it_metric(b.port, "wsbroker_messages_retained") == 5, "retained gauge");
    it_conn_free(p);
    it_conn_free(s);
    it_conn_free(s2);
    it_conn_free(s3);
    it_broker_stop(&b);
}
END_TEST

START_TEST(since_recovers_what_was_missed)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "10");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    subscribe_ex(s, "h.r", "", &ack);
    char epoch[MSG_EPOCH_MAX + 1];
    snprintf(epoch, sizeof(epoch), "%s", ack.epoch);
    publish_n(p, "h.r", 1, 3);
    expect_seqs(s, "h.r", 1, 3);
    it_conn_free(s); /* disconnect, miss 4..6 */
    publish_n(p, "h.r", 4, 6);
    s = it_ws_hello(b.port, NULL);
    char extra[MSG_EPOCH_MAX + 64];
    snprintf(extra, sizeof(extra), ",\"since\":3,\"epoch\":\"%s\"", epoch);
    subscribe_ex(s, "h.r", extra, &ack);
    IT_ASSERT(ack.recovered == 1 && ack.seq == 6 && strcmp(ack.epoch, epoch) == 0,
              "recovered %d seq %llu epoch %s", ack.recovered, (unsigned long long)ack.seq,
              ack.epoch);
    expect_seqs(s, "h.r", 4, 6);
    publish_n(p, "h.r", 7, 7);
    expect_seqs(s, "h.r", 7, 7);
    it_sync(s);

    /* Nothing missed: recovered, nothing replayed. */
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    snprintf(extra, sizeof(extra), ",\"since\":7,\"epoch\":\"%s\"", epoch);
    subscribe_ex(s2, "h.r", extra, &ack);
    IT_ASSERT(ack.recovered == 1, "since = latest: recovered %d", ack.recovered);
    it_sync(s2);
    /* Without an epoch: the current one is assumed. */
    it_conn_t *s3 = it_ws_hello(b.port, NULL);
    subscribe_ex(s3, "h.r", ",\"since\":5", &ack);
    IT_ASSERT(ack.recovered == 1, "since without epoch: recovered %d", ack.recovered);
    expect_seqs(s3, "h.r", 6, 7);
    it_sync(s3);
    /* Another epoch: not recovered, nothing replayed (those seqs mean
     * something else here). */
    it_conn_t *s4 = it_ws_hello(b.port, NULL);
    subscribe_ex(s4, "h.r", ",\"since\":2,\"epoch\":\"0123456789abcdef\"", &ack);
    IT_ASSERT(ack.recovered == 0, "another epoch: recovered %d", ack.recovered);
    it_sync(s4);
    /* A seq from the future of this epoch: not recovered. */
    it_conn_t *s5 = it_ws_hello(b.port, NULL);
    snprintf(extra, sizeof(extra), ",\"since\":99,\"epoch\":\"%s\"", epoch);
    subscribe_ex(s5, "h.r", extra, &ack);
    IT_ASSERT(ack.recovered == 0, "since past the latest seq: recovered %d", ack.recovered);
    it_sync(s5);
    /* since on a pattern is a bad request. */
    it_send_json(s5, "{\"op\":\"subscribe\",\"topic\":\"h.*\",\"since\":1,\"id\":\"x\"}");
    it_expect_error(s5, "\"x\"", "bad_request");
    it_conn_t *conns[] = {p, s, s2, s3, s4, s5};
    for (size_t i = 0; i < 6; i++)
        it_conn_free(conns[i]);
    it_broker_stop(&b);
}
END_TEST

START_TEST(since_past_history_is_not_recovered)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "3");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    publish_n(p, "h.g", 1, 10);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    subscribe_ex(s, "h.g", ",\"since\":2", &ack);
    IT_ASSERT(ack.recovered == 0 && ack.seq == 10, "4..7 are gone: recovered %d", ack.recovered);
    /* What is still retained comes anyway: all newer than what it saw. */
    expect_seqs(s, "h.g", 8, 10);
    it_sync(s);
    /* since 7 needs 8..10, all retained. */
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    subscribe_ex(s2, "h.g", ",\"since\":7", &ack);
    IT_ASSERT(ack.recovered == 1, "8..10 retained: recovered %d", ack.recovered);
    expect_seqs(s2, "h.g", 8, 10);
    it_sync(s2);
    /* No history at all: recovered only when nothing was missed. */
    it_broker_t nb;
    it_broker_start(&nb, "--workers", "1");
    it_conn_t *np = it_ws_hello(nb.port, NULL);
    publish_n(np, "h.n", 1, 2);
    it_conn_t *ns = it_ws_hello(nb.port, NULL);
    subscribe_ex(ns, "h.n", ",\"since\":1", &ack);
    IT_ASSERT(ack.recovered == 0, "no history, one missed: recovered %d", ack.recovered);
    subscribe_ex(ns, "h.m", ",\"since\":0,\"last\":5", &ack);
    IT_ASSERT(ack.recovered == 1, "no history, nothing missed: recovered %d", ack.recovered);
    it_sync(ns);
    it_conn_free(np);
    it_conn_free(ns);
    it_broker_stop(&nb);
    it_conn_free(p);
    it_conn_free(s);
    it_conn_free(s2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(last_on_patterns)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "4");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    publish_n(p, "w.a", 1, 5);
    publish_n(p, "w.b", 1, 2);
    publish_n(p, "x.c", 1, 3);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    subscribe_ex(s, "w.*", ",\"last\":3", &ack);
    /* Per topic in order; topics in any order. */
    uint64_t next_a = 3, next_b = 1;
    for (int i = 0; i < 5; i++) {
        msg_server_t m;
        it_expect_op(s, MSG_S_MESSAGE, &m);
        if (strcmp(m.topic, "w.a") == 0) {
            IT_ASSERT(m.seq == next_a++, "w.a replay seq %llu", (unsigned long long)m.seq);
        } else {
            IT_ASSERT(strcmp(m.topic, "w.b") == 0 && m.seq == next_b++, "replay %s seq %llu",
                      m.topic, (unsigned long long)m.seq);
        }
    }
    IT_ASSERT(next_a == 6 && next_b == 3, "replay incomplete");
    publish_n(p, "w.a", 6, 6);
    expect_seqs(s, "w.a", 6, 6);
    it_sync(s);
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    subscribe_ex(s2, ">", ",\"last\":1", &ack);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        msg_server_t m;
        it_expect_op(s2, MSG_S_MESSAGE, &m);
        seen |= strcmp(m.topic, "w.a") == 0 && m.seq == 6   ? 1
                : strcmp(m.topic, "w.b") == 0 && m.seq == 2 ? 2
                : strcmp(m.topic, "x.c") == 0 && m.seq == 3 ? 4
                                                            : 8;
    }
    IT_ASSERT(seen == 7, "'>' last 1: got set %d", seen);
    it_sync(s2);
    it_conn_free(p);
    it_conn_free(s);
    it_conn_free(s2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(history_expires)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "10", "--history-ttl", "0.3");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    publish_n(p, "h.t", 1, 3);
    it_sleep_ms(500);
    publish_n(p, "h.t", 4, 4);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    subscribe_ex(s, "h.t", ",\"last\":10", &ack);
    expect_seqs(s, "h.t", 4, 4);
    it_sync(s);
    subscribe_ex(s, "h.u", "", &ack);
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    subscribe_ex(s2, "h.t", ",\"since\":1", &ack);
    IT_ASSERT(ack.recovered == 0, "2 and 3 expired: recovered %d", ack.recovered);
    expect_seqs(s2, "h.t", 4, 4);
    it_sync(s2);
    /* The sweeper empties topics nobody touches. */
    it_sleep_ms(SANITIZED ? 3000 : 1500);
    double retained = it_metric(b.port, "wsbroker_messages_retained");
    IT_ASSERT(retained == 0, "retained after the TTL: %g", retained);
    it_conn_free(p);
    it_conn_free(s);
    it_conn_free(s2);
    it_broker_stop(&b);
}
END_TEST

/* ---- replay racing live publishers ---- */

/* Read the subscriber until its ack with id, checking the messages of topic
 * before it; returns the ack. */
static void race_round(it_conn_t *s, const char *pattern, int round, it_conn_t **pubs, int npubs,
                       const uint8_t *frames, size_t flen, size_t *offs)
{
    char id[16];
    snprintf(id, sizeof(id), "\"r%d\"", round);
    it_send_json(s, "{\"op\":\"subscribe\",\"topic\":\"%s\",\"last\":5,\"id\":%s}", pattern, id);
    uint64_t last_seq = 0;
    bool acked = false;
    int after_ack = 0;
    int64_t end = it_now_ms() + 10000;
    /* After the ack: the replay, then live messages, strictly consecutive. */
    while (after_ack < 40) {
        IT_ASSERT(it_now_ms() < end, "round %d: stuck", round);
        for (int i = 0; i < npubs; i++) {
            it_send_nonblocking(pubs[i], frames, flen, &offs[i]);
            if (offs[i] == flen)
                offs[i] = 0;
        }
        it_ev_t ev = it_recv(s, 50);
        if (ev.type == IT_EV_TIMEOUT || ev.type == IT_EV_PING)
            continue;
        IT_ASSERT(ev.type == IT_EV_TEXT, "round %d: event %d", round, ev.type);
        msg_server_t m;
        IT_ASSERT(msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK, "parse");
        if (!acked) {
            IT_ASSERT(m.op == MSG_S_ACK && it_span_is(m.id, id), "round %d: before the ack: %s",
                      round, ev.data);
            acked = true;
            continue;
        }
        IT_ASSERT(m.op == MSG_S_MESSAGE && strcmp(m.topic, "race.t") == 0, "round %d: got %s",
                  round, ev.data);
        IT_ASSERT(last_seq == 0 || m.seq == last_seq + 1,
                  "round %d: seq %llu after %llu (gap or duplicate)", round,
                  (unsigned long long)m.seq, (unsigned long long)last_seq);
        last_seq = m.seq;
        after_ack++;
    }
    /* Leave and skip what is still on its way. */
    char uid[24];
    snprintf(uid, sizeof(uid), "\"u%d\"", round);
    it_send_json(s, "{\"op\":\"unsubscribe\",\"topic\":\"%s\",\"id\":%s}", pattern, uid);
    for (;;) {
        it_ev_t ev = it_recv(s, 5000);
        IT_ASSERT(ev.type == IT_EV_TEXT, "round %d: no unsubscribe ack", round);
        msg_server_t m;
        IT_ASSERT(msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK, "parse");
        if (m.op == MSG_S_ACK && it_span_is(m.id, uid))
            break;
    }
}

START_TEST(replay_races_live_publishers)
{
    /* Publishers on every worker keep publishing to race.t while a
     * subscriber on one of them subscribes with last, takes 40 messages
     * and leaves, over and over: the replay and the live messages must
     * join without a gap or a duplicate, concrete and wildcard. */
    int rounds = SANITIZED ? 600 : 3000;
    it_broker_t b;
    it_broker_start(&b, "--workers", "3", "--history", "20", "--ping-interval", "0");
    it_conn_t *pubs[6];
    for (int i = 0; i < 6; i++)
        pubs[i] = it_ws_hello(b.port, NULL);
    uint8_t frames[16 * 96];
    size_t flen = 0;
    for (int i = 0; i < 16; i++) {
        const char *body = "{\"op\":\"publish\",\"topic\":\"race.t\",\"data\":1}";
        flen += it_frame(pubs[0], frames + flen, WS_OP_TEXT, true, 0, true, body, strlen(body));
    }
    size_t offs[6] = {0};
    it_conn_t *s = it_ws_hello(b.port, NULL);
    for (int r = 0; r < rounds; r++)
        race_round(s, r % 2 ? "race.t" : "race.*", r, pubs, 6, frames, flen, offs);
    printf("replay race: %d rounds without gap or duplicate\n", rounds);
    for (int i = 0; i < 6; i++)
        it_conn_free(pubs[i]);
    it_conn_free(s);
    it_broker_stop(&b);
}
END_TEST

/* ---- --max-topics ---- */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    IT_ASSERT(f != NULL, "cannot read %s", path);
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

START_TEST(max_topics_evicts_unused_topics)
{
    it_broker_t b;
    it_broker_start(&b, "--history", "5", "--max-topics", "50", "--workers", "2");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_conn_t *s = it_ws_hello(b.port, NULL);
    msg_server_t ack;
    /* A subscribed topic and an old client's view of an unsubscribed one. */
    subscribe_ex(s, "keep.me", "", &ack);
    publish_n(p, "keep.me", 1, 3);
    expect_seqs(s, "keep.me", 1, 3);
    publish_n(p, "gone.soon", 1, 4);
    it_conn_t *old = it_ws_hello(b.port, NULL);
    subscribe_ex(old, "gone.soon", ",\"last\":4", &ack);
    char old_epoch[MSG_EPOCH_MAX + 1];
    snprintf(old_epoch, sizeof(old_epoch), "%s", ack.epoch);
    expect_seqs(old, "gone.soon", 1, 4);
    it_conn_free(old);
    /* The broker learns of that close on its own time: until it has, the
     * topic still has a subscriber and is not evictable. */
    int64_t until = it_now_ms() + IT_TIMEOUT;
    while (it_metric(b.port, "wsbroker_subscriptions") > 1 && it_now_ms() < until)
        it_sleep_ms(10);
    IT_ASSERT(it_metric(b.port, "wsbroker_subscriptions") == 1,
              "the old client's subscription stays");
    /* Flood with 2,000 other topics. */
    for (int i = 0; i < 2000; i++) {
        char topic[32];
        snprintf(topic, sizeof(topic), "flood.%d", i);
        it_send_json(p, "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":%d}", topic, i);
    }
    it_sync(p);
    double topics = it_metric(b.port, "wsbroker_topics");
    double evicted = it_metric(b.port, "wsbroker_topics_evicted_total");
    IT_ASSERT(topics <= 50 && evicted >= 1950, "topics %g, evicted %g", topics, evicted);
    /* The subscribed topic kept its seq and history. */
    publish_n(p, "keep.me", 4, 4);
    expect_seqs(s, "keep.me", 4, 4);
    /* The evicted one comes back in a new epoch: the old client cannot
     * recover and sees none of the new seqs as if they were old ones. */
    publish_n(p, "gone.soon", 1, 2);
    it_conn_t *back = it_ws_hello(b.port, NULL);
    char extra[MSG_EPOCH_MAX + 64];
    snprintf(extra, sizeof(extra), ",\"since\":1,\"epoch\":\"%s\"", old_epoch);
    subscribe_ex(back, "gone.soon", extra, &ack);
    IT_ASSERT(ack.recovered == 0 && strcmp(ack.epoch, old_epoch) != 0 && ack.seq == 2,
              "after eviction: recovered %d, epoch %s (old %s), seq %llu", ack.recovered, ack.epoch,
              old_epoch, (unsigned long long)ack.seq);
    /* The new epoch is the broker's with the topic's generation after it. */
    size_t olen = strlen(old_epoch);
    unsigned long long gen = 0;
    char back_epoch[MSG_EPOCH_MAX + 32];
    IT_ASSERT(strncmp(ack.epoch, old_epoch, olen) == 0 && ack.epoch[olen] == '-' &&
                  sscanf(ack.epoch + olen + 1, "%llu", &gen) == 1 && gen >= 1,
              "epoch after eviction '%s' is not '%s-<generation>'", ack.epoch, old_epoch);
    snprintf(back_epoch, sizeof(back_epoch), "%s-%llu", old_epoch, gen);
    IT_ASSERT(strcmp(back_epoch, ack.epoch) == 0, "epoch '%s' is not plain decimal", ack.epoch);
    it_sync(back);
    it_conn_free(back);
    it_conn_free(p);
    it_conn_free(s);
    it_broker_stop(&b);
}
END_TEST

/* Wait until the broker has read everything p sent: its pong. The socket
 * buffers hold tens of thousands of publishes, each a new topic (and an
 * eviction): a sanitized broker needs seconds for them. */
static void sync_slow(it_conn_t *p)
{
    it_send_json(p, "{\"op\":\"ping\",\"id\":\"slow\"}");
    msg_server_t m;
    const char *raw = it_expect_json(p, &m, 120000);
    IT_ASSERT(m.op == MSG_S_PONG, "expected the pong, got %s", raw);
}

START_TEST(million_topics_memory_bounded)
{
    /* One million distinct topics published once each, with history on: the
     * table stays at --max-topics and memory stops growing. */
    int total = SANITIZED ? 200000 : 1000000;
    it_broker_t b;
    it_broker_start(&b, "--history", "10", "--max-topics", "100000", "--workers", "2");
    it_conn_t *p = it_ws_hello(b.port, NULL);
    static uint8_t buf[1 << 16];
    long before = rss_kib(b.pid), at_limit = 0;
    int sent = 0;
    while (sent < total) {
        size_t len = 0;
        while (len + 128 < sizeof(buf) && sent < total) {
            char body[96];
            int n = snprintf(body, sizeof(body),
                             "{\"op\":\"publish\",\"topic\":\"m.%d.x\",\"data\":%d}", sent, sent);
            len += it_frame(p, buf + len, WS_OP_TEXT, true, 0, true, body, (size_t)n);
            sent++;
        }
        it_send_raw(p, buf, len);
        if (sent >= 150000 && at_limit == 0) {
            sync_slow(p);
            at_limit = rss_kib(b.pid);
        }
    }
    sync_slow(p);
    long after = rss_kib(b.pid);
    double topics = it_metric(b.port, "wsbroker_topics");
    double evicted = it_metric(b.port, "wsbroker_topics_evicted_total");
    printf("%d topics published once (history 10, max-topics 100000): RSS %ld KiB before, "
           "%ld at 150,000 topics, %ld after; %g topics kept, %g evicted\n",
           total, before, at_limit, after, topics, evicted);
    IT_ASSERT(topics <= 100000 && evicted >= total - 100000, "topics %g evicted %g", topics,
              evicted);
    IT_ASSERT(SANITIZED || after - at_limit < 16 * 1024,
              "RSS kept growing past the limit: %ld -> %ld KiB", at_limit, after);
    it_conn_free(p);
    it_broker_stop(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("history");
    TCase *tc = tcase_create("history");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, last_replays_the_latest);
    tcase_add_test(tc, since_recovers_what_was_missed);
    tcase_add_test(tc, since_past_history_is_not_recovered);
    tcase_add_test(tc, last_on_patterns);
    tcase_add_test(tc, history_expires);
    tcase_add_test(tc, replay_races_live_publishers);
    tcase_add_test(tc, max_topics_evicts_unused_topics);
    tcase_add_test(tc, million_topics_memory_bounded);
    suite_add_tcase(s, tc);
    return it_run_suite(s);
}
