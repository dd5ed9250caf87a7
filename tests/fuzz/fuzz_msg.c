/*
 * fuzz_msg.c - libFuzzer target for the JSON message codec.
 *
 * Feeds arbitrary bytes to msg_parse() and msg_parse_server() and checks
 * what the broker relies on:
 *   - every raw span lies inside the input;
 *   - a "data" or "id" span parses as JSON on its own;
 *   - re-encoding: msg_encode_message() then msg_parse_server() gives back
 *     the same data bytes, and msg_encode_publish() then msg_parse() gives
 *     back the same topic, data and id;
 *   - the topic functions agree with each other on whatever topic came in.
 * libcjson is not instrumented, so from an empty corpus the fuzzer rarely
 * gets past it; the input is therefore also tried as the "data" value of a
 * publish (its span must be exactly the input, less outer whitespace) and as
 * a topic (escaped, then decoded back to the same bytes).
 * A violated invariant aborts, which libFuzzer reports as a crash.
 */
#include <cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsproto/msg.h"
#include "wsproto/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

static void span_inside(msg_span_t sp, const char *buf, size_t len)
{
    if (sp.len == 0)
        return;
    REQUIRE(sp.p >= buf && sp.p <= buf + len && sp.len <= (size_t)(buf + len - sp.p));
}

static void parses_alone(msg_span_t sp)
{
    cJSON *j = cJSON_ParseWithLength(sp.p, sp.len);
    REQUIRE(j != NULL);
    cJSON_Delete(j);
}

static bool span_eq(msg_span_t a, msg_span_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static void check_topic(const char *t, size_t len)
{
    int concrete = topic_check(t, len, false);
    int pattern = topic_check(t, len, true);
    REQUIRE(concrete <= 0 && concrete >= TOPIC_E_GT_LAST);
    REQUIRE(topic_strerror(concrete) != NULL && topic_strerror(pattern) != NULL);
    if (concrete == TOPIC_OK) {
        REQUIRE(pattern == TOPIC_OK);
        REQUIRE(!topic_is_pattern(t, len));
        REQUIRE(topic_match(t, len, t, len));
        REQUIRE(topic_match(">", 1, t, len));
        REQUIRE(topic_covers(t, len, t, len));
    }
    if (pattern == TOPIC_OK) {
        REQUIRE(concrete == TOPIC_OK || concrete == TOPIC_E_WILDCARD);
        REQUIRE(topic_is_pattern(t, len) == (concrete != TOPIC_OK));
        REQUIRE(topic_covers(t, len, t, len));
        REQUIRE(topic_covers(">", 1, t, len));
    }
}

static void check_request(const char *buf, size_t size)
{
    msg_request_t req;
    const char *why = NULL;
    int rc = msg_parse(buf, size, &req, &why);
    REQUIRE(rc == MSG_OK || rc == MSG_E_BAD_JSON || rc == MSG_E_BAD_REQUEST ||
            rc == MSG_E_UNKNOWN_OP);
    REQUIRE((rc == MSG_OK) == (why == NULL));
    REQUIRE(msg_err_code(rc) != NULL);
    if (rc == MSG_E_BAD_JSON)
        REQUIRE(req.id.len == 0);
    span_inside(req.id, buf, size);
    if (req.id.len > 0)
        parses_alone(req.id);
    if (rc != MSG_OK)
        return;

    REQUIRE(req.op >= MSG_OP_SUBSCRIBE && req.op <= MSG_OP_PING);
    REQUIRE(req.has_data == (req.op == MSG_OP_PUBLISH));
    REQUIRE(req.has_topic == (req.op != MSG_OP_PING));
    if (req.has_data) {
        REQUIRE(req.data.len > 0);
        span_inside(req.data, buf, size);
        parses_alone(req.data);
    }
    if (req.has_epoch)
        REQUIRE(req.epoch.p == req.epoch_buf && req.epoch.len <= MSG_EPOCH_MAX);
    if (!req.has_topic)
        return;
    REQUIRE(req.topic.p == req.topic_buf && req.topic.len <= TOPIC_MAX + 1);
    check_topic(req.topic.p, req.topic.len);
    if (req.has_epoch && topic_check(req.topic.p, req.topic.len, true) == TOPIC_OK &&
        topic_check(req.epoch.p, req.epoch.len, false) == TOPIC_OK) {
        REQUIRE(topic_match(req.topic.p, req.topic.len, req.epoch.p, req.epoch.len) ==
                topic_covers(req.topic.p, req.topic.len, req.epoch.p, req.epoch.len));
    }
    if (!req.has_data || req.topic.len > TOPIC_MAX)
        return;

    /* what the broker sends on: the same data bytes reach the subscriber */
    size_t cap = msg_message_bound(req.topic.len, req.data.len);
    char *out = malloc(cap);
    REQUIRE(out != NULL);
    size_t n =
        msg_encode_message(out, cap, req.topic.p, req.topic.len, 7, req.data.p, req.data.len);
    REQUIRE(n > 0 && n <= cap);
    msg_server_t srv;
    REQUIRE(msg_parse_server(out, n, &srv) == MSG_OK);
    REQUIRE(srv.op == MSG_S_MESSAGE && srv.has_seq && srv.seq == 7);
    REQUIRE(span_eq(srv.data, req.data));
    free(out);

    /* what a client sends: a publish re-encoded parses to the same request */
    msg_request_t again;
    cap = msg_publish_bound(req.topic.len, req.data.len, req.id);
    out = malloc(cap);
    REQUIRE(out != NULL);
    n = msg_encode_publish(out, cap, req.topic.p, req.topic.len, req.data.p, req.data.len, req.id);
    REQUIRE(n > 0 && n <= cap);
    REQUIRE(msg_parse(out, n, &again, &why) == MSG_OK);
    REQUIRE(again.op == MSG_OP_PUBLISH);
    REQUIRE(again.topic.len == req.topic.len &&
            memcmp(again.topic.p, req.topic.p, req.topic.len) == 0);
    REQUIRE(span_eq(again.data, req.data));
    REQUIRE(span_eq(again.id, req.id));
    free(out);
}

static void check_server(const char *buf, size_t size)
{
    msg_server_t m;
    int rc = msg_parse_server(buf, size, &m);
    REQUIRE(rc == MSG_OK || rc == MSG_E_BAD_JSON || rc == MSG_E_UNKNOWN_OP);
    span_inside(m.id, buf, size);
    span_inside(m.data, buf, size);
    if (m.id.len > 0)
        parses_alone(m.id);
    if (m.data.len > 0) {
        REQUIRE(m.op == MSG_S_MESSAGE);
        parses_alone(m.data);
    }
    REQUIRE(memchr(m.topic, '\0', sizeof m.topic) != NULL);
    REQUIRE(memchr(m.code, '\0', sizeof m.code) != NULL);
    REQUIRE(memchr(m.message, '\0', sizeof m.message) != NULL);
    REQUIRE(memchr(m.epoch, '\0', sizeof m.epoch) != NULL);
    REQUIRE(memchr(m.client, '\0', sizeof m.client) != NULL);
    REQUIRE(memchr(m.server, '\0', sizeof m.server) != NULL);
    REQUIRE(m.recovered >= -1 && m.recovered <= 1);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void check_as_data(const char *in, size_t size)
{
    static const char head[] = "{\"op\":\"publish\",\"topic\":\"t\",\"data\":";
    size_t hl = sizeof head - 1, n = hl + size + 1;
    char *m = malloc(n);
    REQUIRE(m != NULL);
    memcpy(m, head, hl);
    if (size > 0)
        memcpy(m + hl, in, size);
    m[n - 1] = '}';
    check_request(m, n);

    msg_request_t req;
    const char *why;
    if (msg_parse(m, n, &req, &why) == MSG_OK) {
        size_t a = 0, b = size;
        while (a < b && is_ws(in[a]))
            a++;
        while (b > a && is_ws(in[b - 1]))
            b--;
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(in + a, b - a, &end, 0);
        bool single = j != NULL && end == in + b;
        cJSON_Delete(j);
        REQUIRE(req.data.p >= m + hl && req.data.p + req.data.len <= m + hl + size);
        if (single)
            REQUIRE(req.data.p == m + hl + a && req.data.len == b - a);
    }
    free(m);
}

static void check_as_topic(const char *in, size_t size)
{
    size_t cap = msg_publish_bound(size, 1, (msg_span_t){NULL, 0});
    char *m = malloc(cap);
    REQUIRE(m != NULL);
    size_t n = msg_encode_publish(m, cap, in, size, "1", 1, (msg_span_t){NULL, 0});
    REQUIRE(n > 0);
    msg_request_t req;
    const char *why;
    REQUIRE(msg_parse(m, n, &req, &why) == MSG_OK);
    if (size <= TOPIC_MAX)
        REQUIRE(req.topic.len == size && (size == 0 || memcmp(req.topic.p, in, size) == 0));
    else
        REQUIRE(req.topic.len == TOPIC_MAX + 1);
    free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so a read past the end is a heap overflow ASan sees */
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    if (size > 0)
        memcpy(buf, data, size);
    check_request(buf, size);
    check_server(buf, size);
    check_as_data(buf, size);
    check_as_topic(buf, size);
    if (size <= TOPIC_MAX + 1)
        check_topic(buf, size);
    free(buf);
    return 0;
}
