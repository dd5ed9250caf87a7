/*
 * test_msg.c - the JSON message codec (PROTOCOL.md sections 2 and 8).
 *
 * Inputs are parsed from guard-page copies, so a parser that reads past
 * the message faults; encoders write into buffers that end at a guard page
 * too, so writing past cap faults.
 */
#include <check.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "wsproto/msg.h"

static msg_request_t req;
static const char *why;

static int parse_n(const char *s, size_t n)
{
    return msg_parse((const char *)guard_copy(s, n), n, &req, &why);
}

static int parse(const char *s)
{
    return parse_n(s, strlen(s));
}

#define ck_span(sp, want)                                                                          \
    do {                                                                                           \
        msg_span_t sp_ = (sp);                                                                     \
        const char *w_ = (want);                                                                   \
        ck_assert_msg(sp_.len == strlen(w_) && memcmp(sp_.p, w_, sp_.len) == 0,                    \
                      "span '%.*s' != '%s'", (int)sp_.len, sp_.p ? sp_.p : "", w_);                \
    } while (0)

static msg_span_t span(const char *s)
{
    msg_span_t sp = {s, s != NULL ? strlen(s) : 0};
    return sp;
}

static const msg_span_t no_id = {NULL, 0};

/* ---- client requests: success ---- */

START_TEST(parse_subscribe)
{
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"chat.*\",\"id\":1}"), MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_SUBSCRIBE);
    ck_assert(req.has_topic);
    ck_span(req.topic, "chat.*");
    ck_span(req.id, "1");
    ck_assert(!req.has_data && !req.has_last && !req.has_since && !req.has_epoch);

    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"a.b\"}"), MSG_OK);
    ck_assert_uint_eq(req.id.len, 0);
    ck_span(req.topic, "a.b");
}
END_TEST

START_TEST(parse_subscribe_history)
{
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"last\":10,\"since\":0,"
                           "\"epoch\":\"e-1\",\"id\":\"s1\"}"),
                     MSG_OK);
    ck_assert(req.has_last && req.last == 10);
    ck_assert(req.has_since && req.since == 0);
    ck_assert(req.has_epoch);
    ck_span(req.epoch, "e-1");
    ck_span(req.id, "\"s1\"");

    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"since\":18446744073709551615}"),
                     MSG_OK);
    ck_assert(req.since == UINT64_MAX);
    /* beyond 64 bits: still an integer >= 0, saturates */
    ck_assert_int_eq(
        parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"last\":123456789012345678901234567890}"),
        MSG_OK);
    ck_assert(req.has_last && req.last == UINT64_MAX);
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"since\":9007199254740993}"),
                     MSG_OK);
    ck_assert(req.since == 9007199254740993ull); /* exact past 2^53 */
}
END_TEST

START_TEST(parse_unsubscribe)
{
    ck_assert_int_eq(parse("{\"topic\":\"chat.>\",\"op\":\"unsubscribe\",\"id\":7}"), MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_UNSUBSCRIBE);
    ck_span(req.topic, "chat.>");
    ck_span(req.id, "7");
    /* history members belong to subscribe; elsewhere they are unknown members */
    ck_assert_int_eq(parse("{\"op\":\"unsubscribe\",\"topic\":\"t\",\"last\":\"x\"}"), MSG_OK);
    ck_assert(!req.has_last);
}
END_TEST

START_TEST(parse_publish_example)
{
    ck_assert_int_eq(
        parse("{\"op\":\"publish\",\"topic\":\"chat.lobby\",\"data\":{\"text\":\"hi\"},\"id\":2}"),
        MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_PUBLISH);
    ck_span(req.topic, "chat.lobby");
    ck_assert(req.has_data);
    ck_span(req.data, "{\"text\":\"hi\"}");
    ck_span(req.id, "2");
    ck_assert(why == NULL);
}
END_TEST

START_TEST(parse_publish_data_exact)
{
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\": {\"a\" : 1.50e3, "
                           "\"b\":\"\\u00e9\"} }"),
                     MSG_OK);
    ck_span(req.data, "{\"a\" : 1.50e3, \"b\":\"\\u00e9\"}");

    static const char *const values[] = {
        "null",
        "true",
        "false",
        "0",
        "-0",
        "123456789012345678901234567890",
        "-1.25E-7",
        "1e400",
        "\"\"",
        "\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\ud83d\\ude00\"",
        "[]",
        "{}",
        "[1, [2, [3, {\"x\": [4]}]], \"]\", \"}\", {\"data\": 5}]",
        "{\"nested\":{\"data\":{\"id\":1}},\"arr\":[{},[],\"\\\"\"]}",
        "\"\xc3\xa9\xe2\x82\xac\"",
        "[\r\n\t1 ,\t2\n]",
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char m[512];
        snprintf(m, sizeof m, "{\"op\":\"publish\",\"data\":%s,\"topic\":\"t\",\"id\":\"x\"}",
                 values[i]);
        ck_assert_msg(parse(m) == MSG_OK, "%s: %s", m, why);
        ck_span(req.data, values[i]);
        ck_span(req.id, "\"x\"");
    }
}
END_TEST

START_TEST(parse_publish_nested_deep)
{
    enum { DEPTH = 500 };
    char m[2 * DEPTH + 64];
    size_t n = (size_t)sprintf(m, "{\"op\":\"publish\",\"topic\":\"t\",\"data\":");
    for (int i = 0; i < DEPTH; i++)
        m[n++] = '[';
    for (int i = 0; i < DEPTH; i++)
        m[n++] = ']';
    m[n++] = '}';
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_assert_uint_eq(req.data.len, 2 * DEPTH);
    ck_assert(req.data.p[0] == '[' && req.data.p[2 * DEPTH - 1] == ']');
}
END_TEST

START_TEST(parse_publish_big_data)
{
    size_t dlen = 60000;
    char *m = malloc(dlen + 64);
    size_t n = (size_t)sprintf(m, "{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"");
    memset(m + n, 'z', dlen);
    n += dlen;
    memcpy(m + n, "\"}", 2);
    n += 2;
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_assert_uint_eq(req.data.len, dlen + 2);
    free(m);
}
END_TEST

START_TEST(parse_ping)
{
    ck_assert_int_eq(parse("{\"op\":\"ping\"}"), MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_PING);
    ck_assert_uint_eq(req.id.len, 0);
    ck_assert(!req.has_topic);
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"id\":\"p-1\",\"topic\":5,\"data\":1}"), MSG_OK);
    ck_span(req.id, "\"p-1\"");
    ck_assert(!req.has_topic && !req.has_data);
}
END_TEST

START_TEST(parse_id_spellings)
{
    static const char *const ids[] = {
        "0",    "-1",         "1.5e+3",      "123456789012345678901234567890",
        "\"\"", "\"a\\\"b\"", "\"\\u00e9\"", "-0.0"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char m[256];
        snprintf(m, sizeof m, "{ \"id\" :\t%s , \"op\":\"ping\"}", ids[i]);
        ck_assert_msg(parse(m) == MSG_OK, "%s", m);
        ck_span(req.id, ids[i]);
    }
}
END_TEST

START_TEST(parse_whitespace_and_bom)
{
    ck_assert_int_eq(parse(" \t\r\n{ \"op\" : \"ping\" , \"id\" : 3 } \n"), MSG_OK);
    ck_span(req.id, "3");
    ck_assert_int_eq(parse("\xef\xbb\xbf{\"op\":\"ping\"}"), MSG_OK);
}
END_TEST

START_TEST(parse_unknown_members_ignored)
{
    ck_assert_int_eq(parse("{\"x\":{\"data\":5,\"id\":6,\"op\":\"y\"},\"op\":\"publish\","
                           "\"s\":\"\\\"data\\\":8\",\"topic\":\"t\",\"data\":7,\"v\":[1]}"),
                     MSG_OK);
    ck_span(req.data, "7");
    ck_assert_uint_eq(req.id.len, 0);
}
END_TEST

START_TEST(parse_duplicate_keys_first_wins)
{
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"a\",\"data\":1,\"data\":2,"
                           "\"topic\":\"b\",\"id\":3,\"id\":4}"),
                     MSG_OK);
    ck_span(req.data, "1");
    ck_span(req.topic, "a");
    ck_span(req.id, "3");
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"op\":\"publish\"}"), MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_PING);
    /* the first id is mistyped: that is the one that counts */
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"id\":null,\"id\":1}"), MSG_E_BAD_REQUEST);
    ck_assert_uint_eq(req.id.len, 0);
}
END_TEST

START_TEST(parse_escaped_keys)
{
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"d\\u0061ta\":[1]}"), MSG_OK);
    ck_span(req.data, "[1]");
    ck_assert_int_eq(parse("{\"\\u006fp\":\"ping\",\"\\u0069\\u0064\":9}"), MSG_OK);
    ck_span(req.id, "9");
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"d\\u0061ta\":1,\"data\":2}"),
                     MSG_OK);
    ck_span(req.data, "1");
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\":1,\"d\\u0061ta\":2}"),
                     MSG_OK);
    ck_span(req.data, "1");
    /* escaped op value and topic */
    ck_assert_int_eq(parse("{\"op\":\"p\\u0069ng\"}"), MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_PING);
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"a\\u002eb\\/c\"}"), MSG_OK);
    ck_span(req.topic, "a.b/c");
    /* long escaped keys are not ours */
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"d\\u0061ta_and_more_x\":1}"),
                     MSG_E_BAD_REQUEST);
    /* like cJSON's strcmp(), a decoded NUL ends a key */
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\\u0000zz\":[2]}"), MSG_OK);
    ck_span(req.data, "[2]");
}
END_TEST

START_TEST(parse_member_names_case_sensitive)
{
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"Data\":1}"), MSG_E_BAD_REQUEST);
    ck_assert_int_eq(parse("{\"OP\":\"ping\"}"), MSG_E_BAD_REQUEST);
    ck_assert_int_eq(parse("{\"op\":\"Ping\"}"), MSG_E_UNKNOWN_OP);
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"ID\":[]}"), MSG_OK);
}
END_TEST

START_TEST(parse_topic_decoding)
{
    char m[12000], t[10001];
    memset(t, 'x', sizeof t - 1);
    t[sizeof t - 1] = '\0';
    for (size_t len = 250; len <= 260; len++) {
        snprintf(m, sizeof m, "{\"op\":\"publish\",\"topic\":\"%.*s\",\"data\":0}", (int)len, t);
        ck_assert_int_eq(parse(m), MSG_OK);
        ck_assert_uint_eq(req.topic.len, len <= TOPIC_MAX ? len : TOPIC_MAX + 1);
    }
    snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%s\"}", t);
    ck_assert_int_eq(parse(m), MSG_OK);
    ck_assert_uint_eq(req.topic.len, TOPIC_MAX + 1);

    /* the limit is on decoded bytes: 255 escaped characters are fine */
    size_t n = (size_t)sprintf(m, "{\"op\":\"subscribe\",\"topic\":\"");
    for (int i = 0; i < TOPIC_MAX; i++)
        n += (size_t)sprintf(m + n, "\\u0041");
    n += (size_t)sprintf(m + n, "\"}");
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_assert_uint_eq(req.topic.len, TOPIC_MAX);
    ck_assert(req.topic.p[0] == 'A' && req.topic.p[TOPIC_MAX - 1] == 'A');
    /* ... and 128 two-byte characters are 256 bytes */
    n = (size_t)sprintf(m, "{\"op\":\"subscribe\",\"topic\":\"");
    for (int i = 0; i < 128; i++)
        n += (size_t)sprintf(m + n, "\\u00e9");
    n += (size_t)sprintf(m + n, "\"}");
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_assert_uint_eq(req.topic.len, TOPIC_MAX + 1);

    /* an escaped NUL keeps its place instead of cutting the topic */
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"a\\u0000b\",\"data\":0}"), MSG_OK);
    ck_assert_uint_eq(req.topic.len, 3);
    ck_assert(memcmp(req.topic.p, "a\0b", 3) == 0);
    ck_assert_int_eq(topic_check(req.topic.p, req.topic.len, false), TOPIC_E_CHAR);

    /* the publish example with a wildcard: the codec accepts it, the
     * grammar check rejects it with the message of PROTOCOL.md section 8 */
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"chat.*\",\"data\":1,\"id\":3}"),
                     MSG_OK);
    int te = topic_check(req.topic.p, req.topic.len, false);
    ck_assert_int_eq(te, TOPIC_E_WILDCARD);
    ck_assert_str_eq(topic_strerror(te), "publish topic may not contain wildcards");
}
END_TEST

START_TEST(parse_epoch_limit)
{
    char m[256], e[MSG_EPOCH_MAX + 2];
    memset(e, 'e', sizeof e);
    snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":\"%.*s\"}",
             MSG_EPOCH_MAX, e);
    ck_assert_int_eq(parse(m), MSG_OK);
    ck_assert_uint_eq(req.epoch.len, MSG_EPOCH_MAX);
    ck_assert(req.epoch_buf[MSG_EPOCH_MAX] == '\0');
    snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":\"%.*s\",\"id\":1}",
             MSG_EPOCH_MAX + 1, e);
    ck_assert_int_eq(parse(m), MSG_E_BAD_REQUEST);
    ck_assert_str_eq(why, "\"epoch\" must be a string of at most 64 bytes");
    ck_span(req.id, "1");
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":\"\"}"), MSG_OK);
    ck_assert(req.has_epoch && req.epoch.len == 0);
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":\"\\u00e9x\"}"),
                     MSG_OK);
    ck_span(req.epoch, "\xc3\xa9x");
}
END_TEST

/* ---- client requests: errors ---- */

static int parse_srv(const char *s, size_t n);

static void expect_err(const char *m, int err, const char *id, const char *why_part)
{
    /* bytes that are not JSON, or not an object, are no broker message either */
    if (err == MSG_E_BAD_JSON)
        ck_assert_msg(parse_srv(m, strlen(m)) == MSG_E_BAD_JSON, "server accepted %s", m);
    int rc = parse(m);
    ck_assert_msg(rc == err, "%s: got %d want %d (%s)", m, rc, err, why ? why : "");
    ck_assert_msg(why != NULL && strlen(why) > 5, "%s: no reason", m);
    if (id == NULL)
        ck_assert_msg(req.id.len == 0, "%s: unexpected id", m);
    else
        ck_span(req.id, id);
    if (why_part != NULL)
        ck_assert_msg(strstr(why, why_part) != NULL, "%s: reason '%s' lacks '%s'", m, why,
                      why_part);
}

START_TEST(err_bad_json)
{
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "}",
        "not json",
        "{\"op\":\"ping\"",
        "{\"op\":\"ping\",}",
        "{\"op\" \"ping\"}",
        "{op:\"ping\"}",
        "{'op':'ping'}",
        "{\"op\":\"ping\"}}",
        "{\"op\":\"ping\"} x",
        "{\"op\":\"ping\"}{}",
        "{\"op\":\"ping\",\"id\":\"\\x\"}",
        "{\"op\":\"ping\",\"id\":\"\\ud800\"}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":01}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":-01}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":1.}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[1.]}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[01]}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":.5}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":tru}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[1,]}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":NaN}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"a\tb\"}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"a\x01\"}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[\"\x1f\"]}",
        "{\"op\":\"ping\",\x01\"id\":1}",
        "{\"op\":\"ping\"}\x0b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_err(bad[i], MSG_E_BAD_JSON, NULL, "JSON");
        ck_assert_str_eq(msg_err_code(MSG_E_BAD_JSON), "bad_json");
    }
    /* an embedded NUL byte (valid UTF-8, never valid outside a string in JSON) */
    ck_assert_int_eq(parse_n("{\"op\":\"ping\"\0}", 14), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse_n("{\"op\":\"pi\0ng\"}", 14), MSG_E_BAD_JSON);
    ck_assert_int_eq(msg_parse(NULL, 0, &req, &why), MSG_E_BAD_JSON);
}
END_TEST

START_TEST(err_not_object)
{
    static const char *const bad[] = {
        "[]", "[{\"op\":\"ping\"}]", "\"op\"", "1", "null", "true", " false "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(bad[i], MSG_E_BAD_JSON, NULL, "object");
}
END_TEST

START_TEST(err_every_prefix_is_bad_json)
{
    static const char *const good[] = {
        "{\"op\":\"publish\",\"topic\":\"chat.lobby\",\"data\":{\"text\":\"hi\"},\"id\":2}",
        "{\"op\":\"subscribe\",\"topic\":\"a\\u00e9\",\"last\":5,\"since\":1,\"epoch\":\"x\"}",
        "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[1,-2.5e3,true,false,null,\"\\\"\"]}",
        "{\"op\":\"ping\",\"id\":-12.5}",
    };
    for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
        size_t n = strlen(good[g]);
        ck_assert_int_eq(parse_n(good[g], n), MSG_OK);
        for (size_t cut = 0; cut < n; cut++)
            ck_assert_msg(parse_n(good[g], cut) == MSG_E_BAD_JSON, "%.*s", (int)cut, good[g]);
    }
}
END_TEST

START_TEST(err_op)
{
    expect_err("{}", MSG_E_BAD_REQUEST, NULL, "\"op\"");
    expect_err("{\"id\":1}", MSG_E_BAD_REQUEST, "1", "\"op\"");
    expect_err("{\"op\":1,\"id\":\"a\"}", MSG_E_BAD_REQUEST, "\"a\"", "\"op\"");
    expect_err("{\"op\":null}", MSG_E_BAD_REQUEST, NULL, "\"op\"");
    expect_err("{\"op\":[\"ping\"],\"id\":2}", MSG_E_BAD_REQUEST, "2", "\"op\"");
    ck_assert_str_eq(msg_err_code(MSG_E_BAD_REQUEST), "bad_request");

    expect_err("{\"op\":\"pong\"}", MSG_E_UNKNOWN_OP, NULL, "op");
    expect_err("{\"op\":\"pong\",\"id\":5}", MSG_E_UNKNOWN_OP, "5", "op");
    expect_err("{\"id\":\"x\",\"op\":\"\"}", MSG_E_UNKNOWN_OP, "\"x\"", NULL);
    expect_err("{\"op\":\"pingx\"}", MSG_E_UNKNOWN_OP, NULL, NULL);
    expect_err("{\"op\":\"pin\"}", MSG_E_UNKNOWN_OP, NULL, NULL);
    expect_err("{\"op\":\"ping\\u0000\"}", MSG_E_UNKNOWN_OP, NULL, NULL);
    expect_err("{\"op\":\"subscribe_to_everything_now\"}", MSG_E_UNKNOWN_OP, NULL, NULL);
    ck_assert_str_eq(msg_err_code(MSG_E_UNKNOWN_OP), "unknown_op");
}
END_TEST

START_TEST(err_id_type)
{
    static const char *const ids[] = {"null", "true", "false", "{}", "[1]", "{\"a\":1}"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char m[128];
        snprintf(m, sizeof m, "{\"op\":\"ping\",\"id\":%s}", ids[i]);
        expect_err(m, MSG_E_BAD_REQUEST, NULL, "\"id\"");
        /* the id check comes first, even before a missing op */
        snprintf(m, sizeof m, "{\"id\":%s}", ids[i]);
        expect_err(m, MSG_E_BAD_REQUEST, NULL, "\"id\"");
    }
}
END_TEST

START_TEST(err_topic_and_data)
{
    expect_err("{\"op\":\"subscribe\"}", MSG_E_BAD_REQUEST, NULL,
               "subscribe needs a string \"topic\"");
    expect_err("{\"op\":\"subscribe\",\"id\":1}", MSG_E_BAD_REQUEST, "1", "\"topic\"");
    expect_err("{\"op\":\"subscribe\",\"topic\":1,\"id\":1}", MSG_E_BAD_REQUEST, "1", "\"topic\"");
    expect_err("{\"op\":\"unsubscribe\",\"topic\":null}", MSG_E_BAD_REQUEST, NULL,
               "unsubscribe needs a string \"topic\"");
    expect_err("{\"op\":\"unsubscribe\",\"topic\":[\"a\"],\"id\":\"u\"}", MSG_E_BAD_REQUEST,
               "\"u\"", "\"topic\"");
    expect_err("{\"op\":\"publish\",\"data\":1}", MSG_E_BAD_REQUEST, NULL,
               "publish needs a string \"topic\"");
    expect_err("{\"op\":\"publish\",\"topic\":{},\"data\":1,\"id\":2}", MSG_E_BAD_REQUEST, "2",
               "\"topic\"");
    expect_err("{\"op\":\"publish\",\"topic\":\"t\"}", MSG_E_BAD_REQUEST, NULL,
               "publish needs a \"data\" member");
    expect_err("{\"op\":\"publish\",\"topic\":\"t\",\"id\":3}", MSG_E_BAD_REQUEST, "3",
               "publish needs a \"data\" member");
    ck_assert_int_eq(parse("{\"op\":\"publish\",\"topic\":\"t\",\"data\":null}"), MSG_OK);
    ck_span(req.data, "null");
}
END_TEST

START_TEST(err_last_since_epoch)
{
    static const char *const bad[] = {"-1",   "1.5",  "1.0", "1e2", "\"3\"",
                                      "true", "null", "[1]", "-0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char m[128];
        snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"t\",\"last\":%s}", bad[i]);
        expect_err(m, MSG_E_BAD_REQUEST, NULL, "\"last\"");
        snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"t\",\"since\":%s,\"id\":4}",
                 bad[i]);
        expect_err(m, MSG_E_BAD_REQUEST, "4", "\"since\"");
    }
    expect_err("{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":1}", MSG_E_BAD_REQUEST, NULL,
               "\"epoch\"");
    expect_err("{\"op\":\"subscribe\",\"topic\":\"t\",\"epoch\":null,\"id\":\"e\"}",
               MSG_E_BAD_REQUEST, "\"e\"", "\"epoch\"");
    ck_assert_int_eq(parse("{\"op\":\"subscribe\",\"topic\":\"t\",\"last\":0}"), MSG_OK);
    ck_assert(req.has_last && req.last == 0);
}
END_TEST

/* ---- strict JSON: what the single-pass validator accepts ---- */

/* {"op":"publish","topic":"t","data":V} with V the n bytes at v. */
static int parse_data_n(const char *v, size_t n)
{
    static const char head[] = "{\"op\":\"publish\",\"topic\":\"t\",\"data\":";
    static char m[70000];
    ck_assert_uint_lt(n, sizeof m - sizeof head);
    memcpy(m, head, sizeof head - 1);
    memcpy(m + sizeof head - 1, v, n);
    m[sizeof head - 1 + n] = '}';
    return parse_n(m, sizeof head + n);
}

static msg_server_t srv;

/* {"op":"message","topic":"t","seq":1,"data":V} through msg_parse_server(),
 * which shares the validator: the same values pass and fail. */
static int parse_srv_data_n(const char *v, size_t n)
{
    static const char head[] = "{\"op\":\"message\",\"topic\":\"t\",\"seq\":1,\"data\":";
    static char m[70000];
    ck_assert_uint_lt(n, sizeof m - sizeof head);
    memcpy(m, head, sizeof head - 1);
    memcpy(m + sizeof head - 1, v, n);
    m[sizeof head - 1 + n] = '}';
    size_t len = sizeof head + n;
    return msg_parse_server((const char *)guard_copy(m, len), len, &srv);
}

static void data_ok(const char *v, size_t n)
{
    ck_assert_msg(parse_data_n(v, n) == MSG_OK, "'%.*s' refused: %s", (int)n, v, why);
    ck_assert_msg(req.data.len == n && memcmp(req.data.p, v, n) == 0, "'%.*s': span '%.*s'", (int)n,
                  v, (int)req.data.len, req.data.p);
    ck_assert_msg(parse_srv_data_n(v, n) == MSG_OK, "server: '%.*s' refused", (int)n, v);
    ck_assert_msg(srv.data.len == n && memcmp(srv.data.p, v, n) == 0, "server: '%.*s': span '%.*s'",
                  (int)n, v, (int)srv.data.len, srv.data.p);
    ck_assert(srv.op == MSG_S_MESSAGE && srv.has_seq && srv.seq == 1);
}

static void data_bad(const char *v, size_t n)
{
    ck_assert_msg(parse_data_n(v, n) == MSG_E_BAD_JSON, "'%.*s' accepted", (int)n, v);
    ck_assert_str_eq(why, "message is not valid JSON");
    ck_assert_msg(parse_srv_data_n(v, n) == MSG_E_BAD_JSON, "server: '%.*s' accepted", (int)n, v);
}

#define DATA_OK(lit)  data_ok((lit), sizeof(lit) - 1)
#define DATA_BAD(lit) data_bad((lit), sizeof(lit) - 1)

START_TEST(strict_numbers)
{
    static const char *const good[] = {
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "1234567890",
        "0.5",
        "-0.5",
        "10.25",
        "0.000001",
        "0e0",
        "0E0",
        "1e5",
        "1E5",
        "1e+5",
        "1e-5",
        "1E+05",
        "-1.5e-10",
        "2.5E+300",
        "1e400",
        "-0.0e-0",
        "9007199254740993",
        "123456789012345678901234567890123456789012345678901234567890123456789012345",
        "0.123456789012345678901234567890123456789012345678901234567890123456789012",
    };
    /* a number ends where the grammar ends, so "01" is 0 followed by junk */
    static const char *const bad[] = {
        "01",       "00",        "-01",  "-00",   "1.",    "-1.",   ".5",       "-.5",
        "+1",       "-",         "--1",  "-+1",   "- 1",   "1e",    "1E",       "1e+",
        "1e-",      "1.e5",      "1.5.", "1.5.5", "1e5.5", "1e5e5", "1ee5",     "0x10",
        "0X1",      "1_000",     "1 2",  "1-2",   "1+2",   "0.e1",  "-e5",      "e5",
        "Infinity", "-Infinity", "NaN",  "0.5e",  "05.5",  "-",     "\xd9\xa1",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        data_ok(good[i], strlen(good[i]));
        char arr[256];
        int n = snprintf(arr, sizeof arr, "[%s,%s]", good[i], good[i]);
        data_ok(arr, (size_t)n);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        data_bad(bad[i], strlen(bad[i]));
        char arr[128];
        int n = snprintf(arr, sizeof arr, "[%s]", bad[i]);
        data_bad(arr, (size_t)n);
    }
    /* a number as the last bytes of the input, against the guard page */
    ck_assert_int_eq(parse("1"), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not a JSON object");
    ck_assert_int_eq(parse("-1.5e-7"), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not a JSON object");
    ck_assert_int_eq(parse("-1.5e-"), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not valid JSON");
}
END_TEST

START_TEST(strict_literals)
{
    DATA_OK("true");
    DATA_OK("false");
    DATA_OK("null");
    DATA_OK("[true,false,null]");
    DATA_OK("{\"t\":true,\"f\":false,\"n\":null}");
    static const char *const bad[] = {"t",         "tr",           "tru",       "f",     "fals",
                                      "n",         "nul",          "TRUE",      "True",  "NULL",
                                      "nULL",      "truex",        "true1",     "nulll", "falsey",
                                      "truefalse", "[true false]", "undefined", "none",  "tRue"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        data_bad(bad[i], strlen(bad[i]));
    /* cut off at the end of the input */
    static const char *const cut[] = {"t", "tru", "fals", "nul"};
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        char m[64];
        int n = snprintf(m, sizeof m, "{\"op\":\"ping\",\"id\":%s", cut[i]);
        ck_assert_int_eq(parse_n(m, (size_t)n), MSG_E_BAD_JSON);
    }
}
END_TEST

/* Every escape, in data (kept verbatim) and in a topic (decoded). */
START_TEST(strict_escapes)
{
    static const struct {
        const char *esc, *dec;
        size_t dlen;
    } good[] = {
        {"\\\"", "\"", 1},
        {"\\\\", "\\", 1},
        {"\\/", "/", 1},
        {"\\b", "\b", 1},
        {"\\f", "\f", 1},
        {"\\n", "\n", 1},
        {"\\r", "\r", 1},
        {"\\t", "\t", 1},
        {"\\u0041", "A", 1},
        {"\\u0000", "\0", 1},
        {"\\u001f", "\x1f", 1},
        {"\\u007F", "\x7f", 1},
        {"\\u00e9", "\xc3\xa9", 2},
        {"\\u00E9", "\xc3\xa9", 2},
        {"\\u07ff", "\xdf\xbf", 2},
        {"\\u0800", "\xe0\xa0\x80", 3},
        {"\\u20ac", "\xe2\x82\xac", 3},
        {"\\uFfFf", "\xef\xbf\xbf", 3},
        {"\\ud7ff", "\xed\x9f\xbf", 3},
        {"\\ue000", "\xee\x80\x80", 3},
        {"\\ud800\\udc00", "\xf0\x90\x80\x80", 4},
        {"\\ud83d\\ude00", "\xf0\x9f\x98\x80", 4},
        {"\\uD83D\\uDE00", "\xf0\x9f\x98\x80", 4},
        {"\\udbff\\udfff", "\xf4\x8f\xbf\xbf", 4},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char v[64], m[128];
        int n = snprintf(v, sizeof v, "\"a%sb\"", good[i].esc);
        data_ok(v, (size_t)n);
        snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%s%s\",\"epoch\":\"%s\"}",
                 good[i].esc, good[i].esc, good[i].esc);
        ck_assert_msg(parse(m) == MSG_OK, "%s: %s", m, why);
        ck_assert_uint_eq(req.topic.len, 2 * good[i].dlen);
        ck_assert(memcmp(req.topic.p, good[i].dec, good[i].dlen) == 0);
        ck_assert(memcmp(req.topic.p + good[i].dlen, good[i].dec, good[i].dlen) == 0);
        ck_assert(req.epoch.len == good[i].dlen &&
                  memcmp(req.epoch.p, good[i].dec, good[i].dlen) == 0);
        /* as a member name: not one of ours, ignored */
        snprintf(m, sizeof m, "{\"%s\":1,\"op\":\"ping\"}", good[i].esc);
        ck_assert_msg(parse(m) == MSG_OK, "%s: %s", m, why);
    }

    static const char *const bad[] = {
        "\\x",
        "\\a",
        "\\0",
        "\\'",
        "\\U0041",
        "\\u",
        "\\u1",
        "\\u12",
        "\\u123",
        "\\u12G4",
        "\\uZZZZ",
        "\\u 123",
        "\\u+123",
        "\\u-123",
        "\\ud800",
        "\\ud800x",
        "\\ud800\\u0041",
        "\\ud800\\ud800",
        "\\ud800\\n",
        "\\ud800\\u",
        "\\ud800\\udc0",
        "\\ud800\\uDBFF",
        "\\ud800\\ue000",
        "\\udc00",
        "\\uDFFF",
        "\\udc00\\ud800",
        "\\\x01",
        "\\\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char v[64], m[128];
        int n = snprintf(v, sizeof v, "\"a%sz\"", bad[i]);
        data_bad(v, (size_t)n);
        snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%s\"}", bad[i]);
        expect_err(m, MSG_E_BAD_JSON, NULL, "not valid JSON");
        snprintf(m, sizeof m, "{\"op\":\"ping\",\"%s\":1}", bad[i]);
        expect_err(m, MSG_E_BAD_JSON, NULL, "not valid JSON");
    }
    /* a backslash as the last byte of the input */
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"id\":\"\\"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"id\":\"\\u00"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("{\"op\":\"ping\",\"id\":\"\\ud800\\u"), MSG_E_BAD_JSON);
    /* an escaped op name too long to be one */
    expect_err("{\"op\":\"\\u0070ublish_and_then_some\"}", MSG_E_UNKNOWN_OP, NULL, NULL);
}
END_TEST

START_TEST(strict_control_bytes)
{
    for (int c = 0; c < 256; c++) {
        bool ctl = c < 0x20;
        char m[64];
        /* raw inside a data string, a topic and a member name */
        int n = snprintf(m, sizeof m, "\"a%cb\"", c);
        if (ctl)
            data_bad(m, (size_t)n);
        else if (c != '"' && c != '\\')
            data_ok(m, (size_t)n);
        if (c == '"' || c == '\\')
            continue;
        n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%c\"}", c);
        ck_assert_int_eq(parse_n(m, (size_t)n), ctl ? MSG_E_BAD_JSON : MSG_OK);
        if (!ctl)
            ck_assert(req.topic.len == 1 && (unsigned char)req.topic.p[0] == c);
        n = snprintf(m, sizeof m, "{\"%c\":0,\"op\":\"ping\"}", c);
        ck_assert_int_eq(parse_n(m, (size_t)n), ctl ? MSG_E_BAD_JSON : MSG_OK);
        /* between tokens only space, tab, LF and CR are whitespace */
        bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r';
        n = snprintf(m, sizeof m, "{\"op\":\"ping\",%c\"id\":1}", c);
        ck_assert_int_eq(parse_n(m, (size_t)n), ws ? MSG_OK : MSG_E_BAD_JSON);
    }
}
END_TEST

/* Whitespace of every kind in every gap between tokens. */
START_TEST(strict_whitespace)
{
    static const char *const tok[] = {
        "{",        "\"op\"", ":", "\"publish\"", ",", "\"topic\"", ":",     "\"t\"", ",",
        "\"data\"", ":",      "[", "1",           ",", "{",         "\"k\"", ":",     "null",
        "}",        "]",      ",", "\"id\"",      ":", "7",         "}"};
    static const char *const ws[] = {"", " ", "\t", "\n", "\r", "\r\n", " \t\n\r \t\n\r "};
    size_t ntok = sizeof tok / sizeof tok[0];
    for (size_t w = 0; w < sizeof ws / sizeof ws[0]; w++) {
        for (size_t gap = 0; gap <= ntok; gap++) {
            char m[1024];
            size_t n = 0;
            for (size_t t = 0; t <= ntok; t++) {
                if (t == gap || w == sizeof ws / sizeof ws[0] - 1)
                    n += (size_t)sprintf(m + n, "%s", ws[w]);
                if (t < ntok)
                    n += (size_t)sprintf(m + n, "%s", tok[t]);
            }
            ck_assert_msg(parse_n(m, n) == MSG_OK, "'%s': %s", m, why);
            ck_assert_int_eq(req.op, MSG_OP_PUBLISH);
            ck_span(req.topic, "t");
            ck_span(req.id, "7");
            ck_assert(req.data.p[0] == '[' && req.data.p[req.data.len - 1] == ']');
        }
    }
    static const char *const not_ws[] = {"\v",       "\f",           "\x1c",        "\x1f",
                                         "\xc2\xa0", "\xe2\x80\x8b", "\xef\xbb\xbf"};
    for (size_t i = 0; i < sizeof not_ws / sizeof not_ws[0]; i++) {
        char m[64];
        snprintf(m, sizeof m, "{\"op\":%s\"ping\"}", not_ws[i]);
        expect_err(m, MSG_E_BAD_JSON, NULL, "not valid JSON");
        snprintf(m, sizeof m, "%s{\"op\":\"ping\"}", not_ws[i]);
        ck_assert_int_eq(parse(m),
                         i == sizeof not_ws / sizeof not_ws[0] - 1 ? MSG_OK : MSG_E_BAD_JSON);
    }
    ck_assert_int_eq(parse_n("{\"op\":\"ping\",\0\"id\":1}", 20), MSG_E_BAD_JSON);
    /* a byte order mark: once, first, before any whitespace */
    ck_assert_int_eq(parse("\xef\xbb\xbf \n{\"op\":\"ping\"}"), MSG_OK);
    ck_assert_int_eq(parse(" \xef\xbb\xbf{\"op\":\"ping\"}"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("\xef\xbb\xbf\xef\xbb\xbf{\"op\":\"ping\"}"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("\xef\xbb{\"op\":\"ping\"}"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("\xef\xbb\xbf"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("\xef\xbb"), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("\xef"), MSG_E_BAD_JSON);
}
END_TEST

START_TEST(strict_trailing)
{
    static const char *const tail[] = {"x",    ",",    "}",    "]",       "{}", "[]",
                                       "0",    "\"\"", "/",    "/**/",    " x", "\n}",
                                       "null", "\x0b", "\x7f", "\xc2\xa0"};
    for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++) {
        char m[64];
        snprintf(m, sizeof m, "{\"op\":\"ping\",\"id\":1}%s", tail[i]);
        expect_err(m, MSG_E_BAD_JSON, NULL, "not valid JSON");
        snprintf(m, sizeof m, "[1]%s", tail[i]);
        expect_err(m, MSG_E_BAD_JSON, NULL, "not valid JSON");
    }
    ck_assert_int_eq(parse_n("{\"op\":\"ping\"}\0", 14), MSG_E_BAD_JSON);
    ck_assert_int_eq(parse("{\"op\":\"ping\"} \t\r\n"), MSG_OK);
    ck_assert_int_eq(parse("[1] \t\r\n"), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not a JSON object");
}
END_TEST

/* A message of depth levels: the object, then depth - 1 nested values. */
static size_t nested(char *m, int depth, bool objects)
{
    size_t n = (size_t)sprintf(m, "{\"op\":\"publish\",\"topic\":\"t\",\"data\":");
    for (int i = 1; i < depth; i++)
        n += (size_t)sprintf(m + n, "%s", objects ? "{\"a\":" : (i % 2 ? "[" : "[0,"));
    n += (size_t)sprintf(m + n, "0");
    for (int i = 1; i < depth; i++)
        m[n++] = objects ? '}' : ']';
    m[n++] = '}';
    return n;
}

START_TEST(strict_nesting)
{
    static char m[40000];
    /* at most 1000 open containers, the message object included */
    for (int objects = 0; objects <= 1; objects++) {
        size_t n = nested(m, 1000, objects);
        ck_assert_int_eq(parse_n(m, n), MSG_OK);
        ck_assert(req.data.p[0] == (objects ? '{' : '['));
        ck_assert_uint_eq(req.data.len,
                          n - strlen("{\"op\":\"publish\",\"topic\":\"t\",\"data\":}"));
        n = nested(m, 1001, objects);
        ck_assert_int_eq(parse_n(m, n), MSG_E_BAD_JSON);
        ck_assert_str_eq(why, "message is not valid JSON");
    }
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
        m[n++] = '[';
    for (int i = 0; i < 1000; i++)
        m[n++] = ']';
    ck_assert_int_eq(parse_n(m, n), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not a JSON object");
    memmove(m + 1, m, n);
    m[0] = '[';
    m[n + 1] = ']';
    ck_assert_int_eq(parse_n(m, n + 2), MSG_E_BAD_JSON);
    ck_assert_str_eq(why, "message is not valid JSON");
    /* deep, then shallow again, and a long flat array */
    n = (size_t)sprintf(m, "{\"op\":\"publish\",\"topic\":\"t\",\"data\":[");
    for (int i = 0; i < 3000; i++)
        n += (size_t)sprintf(m + n, "%s",
                             i % 3 == 0   ? "[[{}]],"
                             : i % 3 == 1 ? "{\"x\":[]},"
                                          : "1,");
    n += (size_t)sprintf(m + n, "0],\"id\":5}");
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_span(req.id, "5");

    static const char *const bad[] = {
        "[}",        "{]",         "[[]}",       "{\"a\":[}", "[1}",
        "{\"a\":1]", "[,]",        "[1,,2]",     "[,1]",      "[1,]",
        "{,}",       "{\"a\":1,}", "{\"a\"}",    "{\"a\":}",  "{\"a\" 1}",
        "{1:2}",     "{a:1}",      "{\"a\"::1}", "[\"a\":1]", "{\"a\":1 \"b\":2}",
        "[1 2]",     "{\"a\",1}",  "[",          "]",         "{",
        "}",         "[[]",        "{\"a\":{}",  "{null:1}",  "{\"a\":1}}",
        "[]]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        data_bad(bad[i], strlen(bad[i]));
}
END_TEST

/* Plain runs are scanned 8 bytes at a time: put a special byte at every
 * offset of strings of every length around that width. */
START_TEST(strict_string_every_offset)
{
    static const unsigned char high[] = {0x7f, 0x80, 0x9f, 0xa0, 0xa2, 0xdc, 0xe0, 0xff};
    char t[64], m[128];
    for (size_t len = 1; len <= 40; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            memset(t, 'a', len);
            for (int kind = 0; kind < 3 + (int)sizeof high; kind++) {
                int n;
                if (kind == 0) { /* a raw control byte */
                    t[pos] = '\x01';
                    n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%.*s\"}", (int)len,
                                 t);
                    ck_assert_int_eq(parse_n(m, (size_t)n), MSG_E_BAD_JSON);
                    continue;
                }
                if (kind == 1) { /* a quote ends the string early */
                    t[pos] = '"';
                    n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%.*s\"}", (int)len,
                                 t);
                    ck_assert_int_eq(parse_n(m, (size_t)n), MSG_E_BAD_JSON);
                    continue;
                }
                if (kind == 2) { /* an escape */
                    t[pos] = 'a';
                    n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%.*s\\n%.*s\"}",
                                 (int)pos, t, (int)(len - pos - 1), t);
                    ck_assert_int_eq(parse_n(m, (size_t)n), MSG_OK);
                    ck_assert_uint_eq(req.topic.len, len);
                    ck_assert(req.topic.p[pos] == '\n');
                    continue;
                }
                /* bytes from 0x7f up are plain, including 0x22 | 0x80 and 0x5c | 0x80 */
                t[pos] = (char)high[kind - 3];
                n = snprintf(m, sizeof m, "{\"op\":\"subscribe\",\"topic\":\"%.*s\"}", (int)len, t);
                ck_assert_int_eq(parse_n(m, (size_t)n), MSG_OK);
                ck_assert(req.topic.len == len && memcmp(req.topic.p, t, len) == 0);
            }
        }
    }
}
END_TEST

START_TEST(strict_every_prefix)
{
    const char *m =
        "{\"op\":\"publish\",\"topic\":\"a\\u00e9\\ud83d\\ude00\\n\",\"data\":{\"k\\\"\":"
        "[true,false,null,-0.5e+3,0,\"\\\\\\/\"],\"e\":{}},\"id\":1E-2}";
    size_t n = strlen(m);
    ck_assert_int_eq(parse_n(m, n), MSG_OK);
    ck_span(req.id, "1E-2");
    for (size_t cut = 0; cut < n; cut++)
        ck_assert_msg(parse_n(m, cut) == MSG_E_BAD_JSON, "%.*s", (int)cut, m);
}
END_TEST

/* Where the result differs from the cJSON-based parser this replaced. */
START_TEST(strict_differences)
{
    /* cJSON read a \u escape with non-hex digits as U+0000 */
    expect_err("{\"op\":\"ping\",\"id\":\"\\uZZZZ\"}", MSG_E_BAD_JSON, NULL, "not valid JSON");
    expect_err("{\"op\":\"publish\",\"topic\":\"t\",\"data\":\"\\u12 4\"}", MSG_E_BAD_JSON, NULL,
               "not valid JSON");
    /* not an object, and only cJSON's leniency called it JSON at all */
    static const char *const lenient[] = {"[01]", "1 x", "\"a\tb\"", "[1.]", "[\x01]", "-.5"};
    for (size_t i = 0; i < sizeof lenient / sizeof lenient[0]; i++)
        expect_err(lenient[i], MSG_E_BAD_JSON, NULL, "message is not valid JSON");
}
END_TEST

/* ---- encoders ---- */

/* Encode with fn at every cap from 0 up to len+1 into a buffer that ends at
 * a guard page: smaller caps must return 0, the rest the same bytes. */
typedef size_t (*enc_fn)(char *out, size_t cap, const void *arg);

static void check_encoder(enc_fn fn, const void *arg, const char *want)
{
    size_t n = strlen(want);
    for (size_t cap = 0; cap <= n + 1; cap++) {
        char *out = (char *)guard_copy_slot(2, "", 0) - cap;
        size_t got = fn(out, cap, arg);
        if (cap < n) {
            ck_assert_msg(got == 0, "cap %zu: got %zu for %s", cap, got, want);
        } else {
            ck_assert_msg(got == n && memcmp(out, want, n) == 0, "cap %zu: '%.*s' != '%s'", cap,
                          (int)got, out, want);
        }
    }
}

typedef struct message_args {
    const char *topic;
    size_t topic_len;
    uint64_t seq;
    const char *data;
} message_args_t;

static size_t enc_message(char *out, size_t cap, const void *arg)
{
    const message_args_t *a = arg;
    return msg_encode_message(out, cap, a->topic, a->topic_len, a->seq, a->data,
                              a->data ? strlen(a->data) : 0);
}

START_TEST(encode_message)
{
    message_args_t a = {"chat.lobby", 10, 1, "{\"text\":\"hi\"}"};
    check_encoder(
        enc_message, &a,
        "{\"op\":\"message\",\"topic\":\"chat.lobby\",\"seq\":1,\"data\":{\"text\":\"hi\"}}");
    message_args_t b = {"a\"b\\c", 5, UINT64_MAX, "[1, 2.50e1]"};
    check_encoder(enc_message, &b,
                  "{\"op\":\"message\",\"topic\":\"a\\\"b\\\\c\",\"seq\":18446744073709551615,"
                  "\"data\":[1, 2.50e1]}");
    message_args_t c = {"t", 1, 0, NULL};
    check_encoder(enc_message, &c, "{\"op\":\"message\",\"topic\":\"t\",\"seq\":0,\"data\":null}");
}
END_TEST

typedef struct hello_args {
    const char *client, *server;
    double hb;
    uint64_t max;
} hello_args_t;

static size_t enc_hello(char *out, size_t cap, const void *arg)
{
    const hello_args_t *a = arg;
    return msg_encode_hello(out, cap, a->client, a->server, a->hb, a->max);
}

START_TEST(encode_hello)
{
    hello_args_t a = {"c-42", "wsbroker/0.1.0", 20, 1048576};
    check_encoder(enc_hello, &a,
                  "{\"op\":\"hello\",\"client\":\"c-42\",\"server\":\"wsbroker/0.1.0\","
                  "\"heartbeat\":20,\"max_message\":1048576}");
    static const struct {
        double v;
        const char *s;
    } hb[] = {
        {20, "20"},     {0.25, "0.25"}, {1.5, "1.5"},    {0.001, "0.001"}, {2.1234, "2.123"},
        {2.9996, "3"},  {0, "0"},       {0.0004, "0"},   {100.1, "100.1"}, {-1.5, "-1.5"},
        {-0.0001, "0"}, {NAN, "0"},     {INFINITY, "0"}, {0.1, "0.1"},     {86400.01, "86400.01"}};
    for (size_t i = 0; i < sizeof hb / sizeof hb[0]; i++) {
        char want[160];
        snprintf(want, sizeof want,
                 "{\"op\":\"hello\",\"client\":\"x\",\"server\":\"y\",\"heartbeat\":%s,"
                 "\"max_message\":0}",
                 hb[i].s);
        hello_args_t h = {"x", "y", hb[i].v, 0};
        check_encoder(enc_hello, &h, want);
    }
}
END_TEST

static size_t enc_ack(char *out, size_t cap, const void *arg)
{
    return msg_encode_ack(out, cap, arg);
}

START_TEST(encode_ack)
{
    msg_ack_t a = {span("1"), NULL, 0, false, 0, NULL, -1};
    check_encoder(enc_ack, &a, "{\"op\":\"ack\",\"id\":1}");
    ck_assert_uint_ge(msg_ack_bound(&a), strlen("{\"op\":\"ack\",\"id\":1}"));

    msg_ack_t p = {span("2"), "chat.lobby", 10, true, 1, NULL, -1};
    check_encoder(enc_ack, &p, "{\"op\":\"ack\",\"id\":2,\"topic\":\"chat.lobby\",\"seq\":1}");

    msg_ack_t s = {span("\"s\""), NULL, 0, true, 0, "e1", 0};
    check_encoder(enc_ack, &s,
                  "{\"op\":\"ack\",\"id\":\"s\",\"seq\":0,\"epoch\":\"e1\",\"recovered\":false}");
    msg_ack_t r = {span("3"), "q\"", 2, true, 77, "\"\\", 1};
    check_encoder(enc_ack, &r,
                  "{\"op\":\"ack\",\"id\":3,\"topic\":\"q\\\"\",\"seq\":77,\"epoch\":\"\\\"\\\\\","
                  "\"recovered\":true}");
    msg_ack_t noid = {no_id, NULL, 0, false, 0, NULL, -1};
    check_encoder(enc_ack, &noid, "{\"op\":\"ack\"}");
}
END_TEST

typedef struct error_args {
    msg_span_t id;
    const char *code, *message;
} error_args_t;

static size_t enc_error(char *out, size_t cap, const void *arg)
{
    const error_args_t *a = arg;
    return msg_encode_error(out, cap, a->id, a->code, a->message);
}

START_TEST(encode_error)
{
    error_args_t a = {span("3"), "bad_topic", "publish topic may not contain wildcards"};
    const char *want = "{\"op\":\"error\",\"id\":3,\"code\":\"bad_topic\",\"message\":\"publish "
                       "topic may not contain wildcards\"}";
    check_encoder(enc_error, &a, want);
    ck_assert_uint_ge(msg_error_bound(a.id, a.code, a.message), strlen(want));
    error_args_t b = {no_id, "bad_json", "message is \"not\"\nJSON"};
    check_encoder(enc_error, &b,
                  "{\"op\":\"error\",\"code\":\"bad_json\",\"message\":\"message is "
                  "\\\"not\\\"\\nJSON\"}");
}
END_TEST

static size_t enc_pong(char *out, size_t cap, const void *arg)
{
    return msg_encode_pong(out, cap, *(const msg_span_t *)arg);
}

START_TEST(encode_pong)
{
    msg_span_t id = span("\"p\"");
    check_encoder(enc_pong, &id, "{\"op\":\"pong\",\"id\":\"p\"}");
    check_encoder(enc_pong, &no_id, "{\"op\":\"pong\"}");
}
END_TEST

typedef struct publish_args {
    const char *topic, *data;
    msg_span_t id;
} publish_args_t;

static size_t enc_publish(char *out, size_t cap, const void *arg)
{
    const publish_args_t *a = arg;
    return msg_encode_publish(out, cap, a->topic, strlen(a->topic), a->data, strlen(a->data),
                              a->id);
}

START_TEST(encode_publish)
{
    publish_args_t a = {"chat.lobby", "{\"text\":\"hi\"}", span("2")};
    const char *want =
        "{\"op\":\"publish\",\"topic\":\"chat.lobby\",\"data\":{\"text\":\"hi\"},\"id\":2}";
    check_encoder(enc_publish, &a, want);
    ck_assert_uint_ge(msg_publish_bound(10, 13, a.id), strlen(want));
    publish_args_t b = {"t", "1.0e0", no_id};
    check_encoder(enc_publish, &b, "{\"op\":\"publish\",\"topic\":\"t\",\"data\":1.0e0}");
}
END_TEST

typedef struct sub_args {
    bool unsub;
    const char *pattern;
    msg_span_t id;
    int64_t last, since;
    const char *epoch;
} sub_args_t;

static size_t enc_sub(char *out, size_t cap, const void *arg)
{
    const sub_args_t *a = arg;
    return msg_encode_subscribe(out, cap, a->unsub, a->pattern, strlen(a->pattern), a->id, a->last,
                                a->since, a->epoch);
}

START_TEST(encode_subscribe)
{
    sub_args_t a = {false, "chat.*", span("1"), -1, -1, NULL};
    check_encoder(enc_sub, &a, "{\"op\":\"subscribe\",\"topic\":\"chat.*\",\"id\":1}");
    sub_args_t b = {true, "chat.>", no_id, -1, -1, NULL};
    check_encoder(enc_sub, &b, "{\"op\":\"unsubscribe\",\"topic\":\"chat.>\"}");
    sub_args_t c = {false, "t", span("\"x\""), 5, 0, "ep"};
    check_encoder(enc_sub, &c,
                  "{\"op\":\"subscribe\",\"topic\":\"t\",\"id\":\"x\",\"last\":5,\"since\":0,"
                  "\"epoch\":\"ep\"}");
    sub_args_t d = {false, "t", no_id, -1, INT64_MAX, NULL};
    check_encoder(enc_sub, &d,
                  "{\"op\":\"subscribe\",\"topic\":\"t\",\"since\":9223372036854775807}");
}
END_TEST

START_TEST(escape)
{
    char out[64];
    ck_assert_uint_eq(msg_escape(out, sizeof out, "", 0), 0);
    ck_assert_uint_eq(msg_escape(NULL, 0, "", 0), 0);

    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain.topic", 11, "plain.topic"},
        {"a\"b", 3, "a\\\"b"},
        {"a\\b", 3, "a\\\\b"},
        {"\b\f\n\r\t", 5, "\\b\\f\\n\\r\\t"},
        {"\x01\x1f", 2, "\\u0001\\u001f"},
        {"\0", 1, "\\u0000"},
        {"/\x7f\xc3\xa9\xff", 5, "/\x7f\xc3\xa9\xff"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = strlen(cases[i].out);
        for (size_t cap = 0; cap <= n; cap++) {
            char *o = (char *)guard_copy_slot(2, "", 0) - cap;
            size_t got = msg_escape(o, cap, cases[i].in, cases[i].len);
            if (cap < n)
                ck_assert_uint_eq(got, 0);
            else
                ck_assert(got == n && memcmp(o, cases[i].out, n) == 0);
        }
    }
    /* worst case is 6 bytes per input byte */
    char in[32];
    memset(in, 0x01, sizeof in);
    char big[6 * sizeof in];
    ck_assert_uint_eq(msg_escape(big, sizeof big, in, sizeof in), sizeof big);
    ck_assert_uint_eq(msg_escape(big, sizeof big - 1, in, sizeof in), 0);
}
END_TEST

/* The escaping of one byte, written out plainly. */
static size_t escape_ref(char *out, unsigned char c)
{
    switch (c) {
    case '"':
        return (size_t)sprintf(out, "\\\"");
    case '\\':
        return (size_t)sprintf(out, "\\\\");
    case '\b':
        return (size_t)sprintf(out, "\\b");
    case '\f':
        return (size_t)sprintf(out, "\\f");
    case '\n':
        return (size_t)sprintf(out, "\\n");
    case '\r':
        return (size_t)sprintf(out, "\\r");
    case '\t':
        return (size_t)sprintf(out, "\\t");
    default:
        if (c < 0x20)
            return (size_t)sprintf(out, "\\u%04x", c);
        out[0] = (char)c;
        return 1;
    }
}

/* Plain runs are copied a run at a time: a byte to escape at every offset
 * of inputs around the 8-byte scan, into buffers of every size that ends
 * at a guard page. */
START_TEST(escape_every_offset)
{
    static const unsigned char special[] = {'"', '\\', 0, 0x1f, '\n', 0x7f, 0x80, 0xff};
    char in[80], want[600];
    for (size_t len = 1; len < sizeof in; len++) {
        for (size_t pos = 0; pos < len; pos++) {
            for (size_t k = 0; k < sizeof special; k++) {
                memset(in, 'x', len);
                in[pos] = (char)special[k];
                size_t n = 0;
                for (size_t i = 0; i < len; i++)
                    n += escape_ref(want + n, (unsigned char)in[i]);
                for (size_t cap = n > 8 ? n - 8 : 0; cap <= n + 1; cap++) {
                    char *o = (char *)guard_copy_slot(2, "", 0) - cap;
                    size_t got = msg_escape(o, cap, in, len);
                    if (cap < n)
                        ck_assert_uint_eq(got, 0);
                    else
                        ck_assert(got == n && memcmp(o, want, n) == 0);
                }
            }
        }
    }
}
END_TEST

/* Random bytes of the kinds that stress escaping. */
static void random_bytes(xorshift_t *x, char *out, size_t n)
{
    static const char pool[] = "ab.*>\"\\/\x01\x1f\n\t\x7f\xc3\xa9 {}";
    for (size_t i = 0; i < n; i++)
        out[i] = pool[xorshift_range(x, 0, sizeof pool - 2)];
}

START_TEST(bounds_hold_for_random_inputs)
{
    xorshift_t x = {12345};
    char topic[300], epoch[80], data[200], code[40], message[120];
    static char out[8192];
    for (int iter = 0; iter < 3000; iter++) {
        size_t tl = xorshift_range(&x, 0, sizeof topic);
        size_t dl = xorshift_range(&x, 0, sizeof data);
        random_bytes(&x, topic, tl);
        memset(data, '7', dl);
        msg_span_t id = {"\"some-id\"", xorshift_range(&x, 0, 9)};
        uint64_t seq = xorshift_next(&x) >> xorshift_range(&x, 0, 63);

        size_t n = msg_encode_message(out, sizeof out, topic, tl, seq, data, dl);
        ck_assert(n > 0 && n <= msg_message_bound(tl, dl));
        ck_assert_uint_eq(
            msg_encode_message(out, msg_message_bound(tl, dl), topic, tl, seq, data, dl), n);
        /* the exact size: fits, and one byte less does not */
        ck_assert_uint_eq(msg_message_size(topic, tl, seq, dl), n);
        ck_assert_uint_eq(msg_encode_message(out, n - 1, topic, tl, seq, data, dl), 0);
        ck_assert_uint_eq(msg_escaped_len(topic, tl), msg_escape(out, sizeof out, topic, tl));

        n = msg_encode_publish(out, sizeof out, topic, tl, data, dl, id);
        ck_assert(n > 0 && n <= msg_publish_bound(tl, dl, id));

        size_t el = xorshift_range(&x, 0, sizeof epoch - 1);
        random_bytes(&x, epoch, el);
        epoch[el] = '\0';
        msg_ack_t ack = {id,
                         xorshift_range(&x, 0, 1) ? topic : NULL,
                         tl,
                         xorshift_range(&x, 0, 1) != 0,
                         seq,
                         xorshift_range(&x, 0, 1) ? epoch : NULL,
                         (int)xorshift_range(&x, 0, 2) - 1};
        n = msg_encode_ack(out, sizeof out, &ack);
        ck_assert(n > 0 && n <= msg_ack_bound(&ack) && msg_ack_bound(&ack) - n <= 1);
        ck_assert_uint_eq(msg_encode_ack(out, msg_ack_bound(&ack), &ack), n);

        size_t cl = xorshift_range(&x, 0, sizeof code - 1);
        size_t ml = xorshift_range(&x, 0, sizeof message - 1);
        random_bytes(&x, code, cl);
        random_bytes(&x, message, ml);
        code[cl] = '\0';
        message[ml] = '\0';
        n = msg_encode_error(out, sizeof out, id, code, message);
        ck_assert(n > 0 && n <= msg_error_bound(id, code, message));
    }
    /* bounds saturate instead of wrapping */
    ck_assert_uint_eq(msg_message_bound(SIZE_MAX / 2, 10), SIZE_MAX);
    ck_assert_uint_eq(msg_publish_bound(10, SIZE_MAX - 5, span("1")), SIZE_MAX);
}
END_TEST

/* ---- round trips ---- */

START_TEST(roundtrip_client_encoders)
{
    xorshift_t x = {777};
    static char out[4096];
    char topic[TOPIC_MAX];
    for (int iter = 0; iter < 2000; iter++) {
        size_t tl = xorshift_range(&x, 1, sizeof topic);
        random_bytes(&x, topic, tl);
        const char *data = iter % 2 ? "{\"a\":[1,2.5e-3,\"\\u0000\"]}" : "\"x\\\"y\"";
        msg_span_t id = iter % 3 ? span("\"r\\\\1\"") : no_id;

        size_t n = msg_encode_publish(out, sizeof out, topic, tl, data, strlen(data), id);
        ck_assert_uint_gt(n, 0);
        ck_assert_int_eq(parse_n(out, n), MSG_OK);
        ck_assert_int_eq(req.op, MSG_OP_PUBLISH);
        ck_assert_uint_eq(req.topic.len, tl);
        ck_assert(memcmp(req.topic.p, topic, tl) == 0);
        ck_span(req.data, data);
        ck_assert_uint_eq(req.id.len, id.len);

        int64_t last = (int64_t)xorshift_range(&x, 0, 3) - 1;
        int64_t since = (int64_t)(xorshift_next(&x) >> 1) * (iter % 2 ? 1 : -1);
        bool unsub = iter % 5 == 0;
        n = msg_encode_subscribe(out, sizeof out, unsub, topic, tl, id, last, since,
                                 iter % 4 ? "ep\"och" : NULL);
        ck_assert_uint_gt(n, 0);
        ck_assert_int_eq(parse_n(out, n), MSG_OK);
        ck_assert_int_eq(req.op, unsub ? MSG_OP_UNSUBSCRIBE : MSG_OP_SUBSCRIBE);
        ck_assert(req.topic.len == tl && memcmp(req.topic.p, topic, tl) == 0);
        if (!unsub) {
            ck_assert(req.has_last == (last >= 0));
            if (last >= 0)
                ck_assert(req.last == (uint64_t)last);
            ck_assert(req.has_since == (since >= 0));
            if (since >= 0)
                ck_assert(req.since == (uint64_t)since);
            ck_assert(req.has_epoch == (iter % 4 != 0));
            if (req.has_epoch)
                ck_span(req.epoch, "ep\"och");
        }
    }
}
END_TEST

static int parse_srv(const char *s, size_t n)
{
    return msg_parse_server((const char *)guard_copy(s, n), n, &srv);
}

START_TEST(roundtrip_server_encoders)
{
    static char out[4096];
    xorshift_t x = {99};
    char topic[TOPIC_MAX];
    for (int iter = 0; iter < 1000; iter++) {
        size_t tl = xorshift_range(&x, 1, sizeof topic);
        random_bytes(&x, topic, tl);
        uint64_t seq = xorshift_next(&x);
        const char *data = "{\"a\" : [1.50e3, \"\\u00e9\"]}";
        size_t n = msg_encode_message(out, sizeof out, topic, tl, seq, data, strlen(data));
        ck_assert_int_eq(parse_srv(out, n), MSG_OK);
        ck_assert_int_eq(srv.op, MSG_S_MESSAGE);
        ck_assert(srv.has_seq && srv.seq == seq);
        ck_span(srv.data, data);
        ck_assert(strlen(srv.topic) == tl && memcmp(srv.topic, topic, tl) == 0);
    }

    size_t n = msg_encode_hello(out, sizeof out, "c1", "wsbroker/0.1.0", 0.25, 1048576);
    ck_assert_int_eq(parse_srv(out, n), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_HELLO);
    ck_assert_str_eq(srv.client, "c1");
    ck_assert_str_eq(srv.server, "wsbroker/0.1.0");
    ck_assert(srv.heartbeat == 0.25);
    ck_assert(srv.max_message == 1048576);

    msg_ack_t ack = {span("\"a1\""), "chat.lobby", 10, true, 42, "ep-7", 1};
    n = msg_encode_ack(out, sizeof out, &ack);
    ck_assert_int_eq(parse_srv(out, n), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ACK);
    ck_span(srv.id, "\"a1\"");
    ck_assert_str_eq(srv.topic, "chat.lobby");
    ck_assert(srv.has_seq && srv.seq == 42);
    ck_assert_str_eq(srv.epoch, "ep-7");
    ck_assert_int_eq(srv.recovered, 1);
    ck_assert_uint_eq(srv.data.len, 0);

    n = msg_encode_error(out, sizeof out, span("3"), "bad_topic",
                         "publish topic may not contain wildcards");
    ck_assert_int_eq(parse_srv(out, n), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ERROR);
    ck_span(srv.id, "3");
    ck_assert_str_eq(srv.code, "bad_topic");
    ck_assert_str_eq(srv.message, "publish topic may not contain wildcards");
    ck_assert_int_eq(srv.recovered, -1);
    ck_assert(!srv.has_seq);

    n = msg_encode_pong(out, sizeof out, no_id);
    ck_assert_int_eq(parse_srv(out, n), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_PONG);
    ck_assert_uint_eq(srv.id.len, 0);
}
END_TEST

START_TEST(parse_server_protocol_examples)
{
    const char *m =
        "{\"op\":\"message\",\"topic\":\"chat.lobby\",\"seq\":1,\"data\":{\"text\":\"hi\"}}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_OK);
    ck_assert_str_eq(srv.topic, "chat.lobby");
    ck_span(srv.data, "{\"text\":\"hi\"}");
    m = "{\"op\":\"ack\",\"id\":2,\"topic\":\"chat.lobby\",\"seq\":1}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ACK);
    ck_span(srv.id, "2");
    ck_assert(srv.seq == 1);
}
END_TEST

START_TEST(parse_server_errors_and_limits)
{
    static const char *const bad[] = {
        "", "[]", "{\"op\":1}", "{}", "{\"op\":\"ack\"", "{\"op\":\"pong\"} 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(parse_srv(bad[i], strlen(bad[i])) == MSG_E_BAD_JSON, "%s", bad[i]);
    const char *m = "{\"op\":\"publish\"}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_E_UNKNOWN_OP);

    /* decoded strings are cut to fit and always terminated */
    char big[2000];
    int n = snprintf(big, sizeof big,
                     "{\"op\":\"error\",\"code\":\"%0300d\",\"message\":\"%0900d\"}", 0, 0);
    ck_assert_int_eq(parse_srv(big, (size_t)n), MSG_OK);
    ck_assert_uint_eq(strlen(srv.code), sizeof srv.code - 1);
    ck_assert_uint_eq(strlen(srv.message), sizeof srv.message - 1);

    /* wrong types are ignored, duplicates: first wins, data only for message */
    m = "{\"op\":\"ack\",\"id\":null,\"seq\":\"1\",\"recovered\":1,\"data\":5,\"topic\":7}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_OK);
    ck_assert(srv.id.len == 0 && !srv.has_seq && srv.recovered == -1 && srv.data.len == 0);
    ck_assert_str_eq(srv.topic, "");
    m = "{\"op\":\"message\",\"data\":[1],\"data\":[2],\"seq\":-1,\"topic\":\"a\\u0000b\"}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_OK);
    ck_span(srv.data, "[1]");
    ck_assert(!srv.has_seq);
    ck_assert_str_eq(srv.topic, "a");
    m = "{\"op\":\"hello\",\"heartbeat\":1e1,\"max_message\":1.5}";
    ck_assert_int_eq(parse_srv(m, strlen(m)), MSG_OK);
    ck_assert(srv.heartbeat == 10.0 && srv.max_message == 0);
}
END_TEST

/* The whole of every message, every prefix, at the guard page. */
START_TEST(parse_server_prefixes)
{
    const char *m = "{\"op\":\"ack\",\"id\":\"x\",\"topic\":\"t\\u00e9\",\"seq\":3,\"epoch\":\"e\","
                    "\"recovered\":false}";
    size_t n = strlen(m);
    ck_assert_int_eq(parse_srv(m, n), MSG_OK);
    ck_assert_int_eq(srv.recovered, 0);
    ck_assert_str_eq(srv.topic, "t\xc3\xa9");
    for (size_t cut = 0; cut < n; cut++)
        ck_assert_int_eq(parse_srv(m, cut), MSG_E_BAD_JSON);
}
END_TEST

/* ---- broker messages: msg_parse_server() member by member ---- */

/* The bytes at p are the start of a mapping with a PROT_NONE page just
 * before it: a parser that reads one byte before its input faults. */
static const char *front_guard_copy(const char *s, size_t n)
{
    static char *area;
    static size_t page;
    if (area == NULL) {
        page = (size_t)sysconf(_SC_PAGESIZE);
        area = mmap(NULL, page + 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ck_assert(area != MAP_FAILED);
        ck_assert_int_eq(mprotect(area, page, PROT_NONE), 0);
    }
    ck_assert_uint_le(n, 65536);
    memcpy(area + page, s, n);
    return area + page;
}

static int parse_srv_str(const char *m)
{
    return parse_srv(m, strlen(m));
}

/* Nothing but op set: what every absent member reads as. */
static void srv_only_op(msg_sop_t op)
{
    ck_assert_int_eq(srv.op, op);
    ck_assert(srv.id.len == 0 && srv.id.p == NULL);
    ck_assert(srv.data.len == 0 && srv.data.p == NULL);
    ck_assert(!srv.has_seq && srv.seq == 0);
    ck_assert_int_eq(srv.recovered, -1);
    ck_assert(srv.heartbeat == 0 && srv.max_message == 0);
    ck_assert_str_eq(srv.topic, "");
    ck_assert_str_eq(srv.code, "");
    ck_assert_str_eq(srv.message, "");
    ck_assert_str_eq(srv.epoch, "");
    ck_assert_str_eq(srv.client, "");
    ck_assert_str_eq(srv.server, "");
}

START_TEST(server_every_op)
{
    ck_assert_int_eq(parse_srv_str("{\"op\":\"hello\",\"client\":\"c-17\",\"server\":"
                                   "\"wsbroker/0.1.0\",\"heartbeat\":20,\"max_message\":1048576}"),
                     MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_HELLO);
    ck_assert_str_eq(srv.client, "c-17");
    ck_assert_str_eq(srv.server, "wsbroker/0.1.0");
    ck_assert(srv.heartbeat == 20.0 && srv.max_message == 1048576);
    ck_assert(srv.id.len == 0 && srv.data.len == 0 && !srv.has_seq && srv.recovered == -1);

    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"id\":\"s-1\",\"topic\":\"chat.lobby\","
                                   "\"seq\":41,\"epoch\":\"e1\",\"recovered\":true}"),
                     MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ACK);
    ck_span(srv.id, "\"s-1\"");
    ck_assert_str_eq(srv.topic, "chat.lobby");
    ck_assert(srv.has_seq && srv.seq == 41);
    ck_assert_str_eq(srv.epoch, "e1");
    ck_assert_int_eq(srv.recovered, 1);
    ck_assert(srv.data.len == 0 && srv.heartbeat == 0 && srv.max_message == 0);

    ck_assert_int_eq(parse_srv_str("{\"op\":\"error\",\"id\":7,\"code\":\"bad_topic\","
                                   "\"message\":\"topic has an empty segment\"}"),
                     MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ERROR);
    ck_span(srv.id, "7");
    ck_assert_str_eq(srv.code, "bad_topic");
    ck_assert_str_eq(srv.message, "topic has an empty segment");

    ck_assert_int_eq(parse_srv_str("{\"op\":\"message\",\"topic\":\"a.b\",\"seq\":3,"
                                   "\"data\":[1, {\"x\" : \"y\"}]}"),
                     MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_MESSAGE);
    ck_assert_str_eq(srv.topic, "a.b");
    ck_assert(srv.has_seq && srv.seq == 3);
    ck_span(srv.data, "[1, {\"x\" : \"y\"}]");

    ck_assert_int_eq(parse_srv_str("{\"op\":\"pong\",\"id\":\"p\"}"), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_PONG);
    ck_span(srv.id, "\"p\"");
    ck_assert_int_eq(parse_srv_str("{\"op\":\"pong\"}"), MSG_OK);
    srv_only_op(MSG_S_PONG);

    /* every member in every op is read; data only in message */
    static const char *const ops[] = {"hello", "ack", "error", "message", "pong"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char m[512];
        snprintf(m, sizeof m,
                 "{\"max_message\":9,\"heartbeat\":0.5,\"server\":\"s\",\"client\":\"c\","
                 "\"message\":\"m\",\"code\":\"k\",\"recovered\":false,\"epoch\":\"e\","
                 "\"seq\":8,\"topic\":\"t\",\"data\":{},\"id\":1,\"op\":\"%s\"}",
                 ops[i]);
        ck_assert_int_eq(parse_srv_str(m), MSG_OK);
        ck_assert_int_eq(srv.op, (int)i + 1);
        ck_span(srv.id, "1");
        if (srv.op == MSG_S_MESSAGE)
            ck_span(srv.data, "{}");
        else
            ck_assert(srv.data.len == 0 && srv.data.p == NULL);
        ck_assert(srv.has_seq && srv.seq == 8 && srv.recovered == 0);
        ck_assert(srv.heartbeat == 0.5 && srv.max_message == 9);
        ck_assert_str_eq(srv.topic, "t");
        ck_assert_str_eq(srv.code, "k");
        ck_assert_str_eq(srv.message, "m");
        ck_assert_str_eq(srv.epoch, "e");
        ck_assert_str_eq(srv.client, "c");
        ck_assert_str_eq(srv.server, "s");
    }
    /* a later message leaves nothing of an earlier one behind */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\"}"), MSG_OK);
    srv_only_op(MSG_S_ACK);
}
END_TEST

START_TEST(server_op)
{
    static const char *const bad_json[] = {
        "{}", "{\"id\":1}", "{\"op\":1}", "{\"op\":null}", "{\"op\":true}", "{\"op\":[\"ack\"]}",
        "{\"op\":{\"ack\":1}}", "{\"Op\":\"ack\"}", "{\"op \":\"ack\"}",
        /* the first op counts, even when it is not a string */
        "{\"op\":1,\"op\":\"ack\"}"};
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        ck_assert_msg(parse_srv_str(bad_json[i]) == MSG_E_BAD_JSON, "%s", bad_json[i]);
        ck_assert_int_eq(srv.op, 0);
    }
    static const char *const unknown[] = {"{\"op\":\"\"}",
                                          "{\"op\":\"Ack\"}",
                                          "{\"op\":\"ack \"}",
                                          "{\"op\":\"acks\"}",
                                          "{\"op\":\"publish\"}",
                                          "{\"op\":\"subscribe\"}",
                                          "{\"op\":\"ping\"}",
                                          "{\"op\":\"messages\"}",
                                          "{\"op\":\"a\"}",
                                          "{\"op\":\"ack\\u0000\"}",
                                          "{\"op\":\"hello_and_more_than_fifteen_bytes\"}"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        ck_assert_msg(parse_srv_str(unknown[i]) == MSG_E_UNKNOWN_OP, "%s", unknown[i]);
        ck_assert_int_eq(srv.op, 0);
    }
    /* op and member names with escapes are decoded; a decoded NUL ends a name */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"\\u0061ck\",\"i\\u0064\":5}"), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ACK);
    ck_span(srv.id, "5");
    ck_assert_int_eq(parse_srv_str("{\"\\u006fp\":\"\\u006d\\u0065ssage\",\"data\":1}"), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_MESSAGE);
    ck_span(srv.data, "1");
    ck_assert_int_eq(parse_srv_str("{\"op\\u0000x\":\"pong\"}"), MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_PONG);
    ck_assert_int_eq(parse_srv_str("{\"op\":\"p\\/ong\"}"), MSG_E_UNKNOWN_OP);
    ck_assert_int_eq(parse_srv_str("{\"op\":\"\\/\"}"), MSG_E_UNKNOWN_OP);
    /* names longer than any we look for, escaped or not, are other members */
    ck_assert_int_eq(parse_srv_str("{\"max_messagemax_message\":1,\"\\u006dax_message_\":2,"
                                   "\"op\":\"hello\"}"),
                     MSG_OK);
    ck_assert(srv.max_message == 0);
}
END_TEST

/* Each member with a value of every type: the wrong types read as absent. */
START_TEST(server_member_types)
{
    static const char *const val[] = {"\"s\\u00e9\"", "12", "-1.5e2", "true",      "false",
                                      "null",         "{}", "[1]",    "{\"a\":[]}"};
    enum { V_STR, V_INT, V_NUM, V_TRUE, V_FALSE, V_NULL };
    static const char *const names[] = {"id",     "data",      "topic",     "seq",
                                        "epoch",  "code",      "message",   "client",
                                        "server", "recovered", "heartbeat", "max_message"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        for (size_t v = 0; v < sizeof val / sizeof val[0]; v++) {
            char m[256];
            snprintf(m, sizeof m, "{\"op\":\"message\",\"%s\":%s}", names[n], val[v]);
            ck_assert_msg(parse_srv_str(m) == MSG_OK, "%s", m);
            const char *name = names[n];
            bool str = v == V_STR, num = v == V_INT || v == V_NUM;
            if (strcmp(name, "id") == 0) {
                ck_assert_uint_eq(srv.id.len, str || num ? strlen(val[v]) : 0);
            } else if (strcmp(name, "data") == 0) {
                ck_span(srv.data, val[v]);
            } else if (strcmp(name, "seq") == 0) {
                ck_assert(srv.has_seq == (v == V_INT) && srv.seq == (v == V_INT ? 12u : 0u));
            } else if (strcmp(name, "recovered") == 0) {
                ck_assert_int_eq(srv.recovered, v == V_TRUE ? 1 : v == V_FALSE ? 0 : -1);
            } else if (strcmp(name, "heartbeat") == 0) {
                ck_assert(srv.heartbeat == (v == V_INT ? 12.0 : v == V_NUM ? -150.0 : 0.0));
            } else if (strcmp(name, "max_message") == 0) {
                ck_assert(srv.max_message == (v == V_INT ? 12u : 0u));
            } else {
                const char *got = strcmp(name, "topic") == 0     ? srv.topic
                                  : strcmp(name, "epoch") == 0   ? srv.epoch
                                  : strcmp(name, "code") == 0    ? srv.code
                                  : strcmp(name, "message") == 0 ? srv.message
                                  : strcmp(name, "client") == 0  ? srv.client
                                                                 : srv.server;
                ck_assert_str_eq(got, str ? "s\xc3\xa9" : "");
            }
        }
    }
    /* data of any other op is not reported */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"data\":{\"a\":1}}"), MSG_OK);
    ck_assert(srv.data.len == 0 && srv.data.p == NULL);
}
END_TEST

START_TEST(server_duplicates_first_wins)
{
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"op\":\"error\",\"id\":1,\"id\":2,"
                                   "\"seq\":3,\"seq\":4,\"topic\":\"a\",\"topic\":\"b\"}"),
                     MSG_OK);
    ck_assert_int_eq(srv.op, MSG_S_ACK);
    ck_span(srv.id, "1");
    ck_assert(srv.seq == 3);
    ck_assert_str_eq(srv.topic, "a");
    /* a first occurrence of the wrong type is not replaced by a later one */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"id\":null,\"id\":2,\"seq\":\"x\",\"seq\":4,"
                                   "\"recovered\":0,\"recovered\":true,\"topic\":1,"
                                   "\"topic\":\"b\"}"),
                     MSG_OK);
    ck_assert(srv.id.len == 0 && !srv.has_seq && srv.recovered == -1);
    ck_assert_str_eq(srv.topic, "");
    /* an escaped spelling of a name is the same member */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"message\",\"d\\u0061ta\":1,\"data\":2}"), MSG_OK);
    ck_span(srv.data, "1");
    /* members inside data are not the message's */
    ck_assert_int_eq(parse_srv_str("{\"data\":{\"op\":\"ack\",\"seq\":1},\"op\":\"message\","
                                   "\"seq\":2}"),
                     MSG_OK);
    ck_assert(srv.op == MSG_S_MESSAGE && srv.seq == 2);
    ck_span(srv.data, "{\"op\":\"ack\",\"seq\":1}");
}
END_TEST

START_TEST(server_strings)
{
    /* every escape decodes, in every string member */
    static const struct {
        const char *esc, *dec;
    } esc[] = {
        {"\\\"", "\""},
        {"\\\\", "\\"},
        {"\\/", "/"},
        {"\\b", "\b"},
        {"\\f", "\f"},
        {"\\n", "\n"},
        {"\\r", "\r"},
        {"\\t", "\t"},
        {"\\u0041", "A"},
        {"\\u00e9", "\xc3\xa9"},
        {"\\u20AC", "\xe2\x82\xac"},
        {"\\ud83d\\ude00", "\xf0\x9f\x98\x80"},
    };
    for (size_t i = 0; i < sizeof esc / sizeof esc[0]; i++) {
        char m[512], want[16];
        snprintf(m, sizeof m,
                 "{\"op\":\"hello\",\"topic\":\"<%s>\",\"code\":\"<%s>\",\"message\":\"<%s>\","
                 "\"epoch\":\"<%s>\",\"client\":\"<%s>\",\"server\":\"<%s>\"}",
                 esc[i].esc, esc[i].esc, esc[i].esc, esc[i].esc, esc[i].esc, esc[i].esc);
        snprintf(want, sizeof want, "<%s>", esc[i].dec);
        ck_assert_msg(parse_srv_str(m) == MSG_OK, "%s", m);
        ck_assert_str_eq(srv.topic, want);
        ck_assert_str_eq(srv.code, want);
        ck_assert_str_eq(srv.message, want);
        ck_assert_str_eq(srv.epoch, want);
        ck_assert_str_eq(srv.client, want);
        ck_assert_str_eq(srv.server, want);
    }
    /* a decoded NUL ends the C string; the bytes after it stay unread */
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"topic\":\"a\\u0000b\"}"), MSG_OK);
    ck_assert_str_eq(srv.topic, "a");
    /* each string is cut to its buffer, with or without escapes, and terminated */
    static struct {
        const char *name;
        size_t size;
    } dst[] = {{"topic", sizeof srv.topic},     {"code", sizeof srv.code},
               {"message", sizeof srv.message}, {"epoch", sizeof srv.epoch},
               {"client", sizeof srv.client},   {"server", sizeof srv.server}};
    for (size_t d = 0; d < sizeof dst / sizeof dst[0]; d++) {
        for (int escaped = 0; escaped <= 1; escaped++) {
            for (size_t len = dst[d].size - 2; len <= dst[d].size + 1; len++) {
                static char m[4096];
                size_t n = (size_t)sprintf(m, "{\"op\":\"error\",\"%s\":\"", dst[d].name);
                for (size_t k = 0; k < len; k++)
                    n += (size_t)sprintf(m + n, "%s", escaped ? "\\u0078" : "x");
                n += (size_t)sprintf(m + n, "\"}");
                ck_assert_int_eq(parse_srv(m, n), MSG_OK);
                const char *got = d == 0   ? srv.topic
                                  : d == 1 ? srv.code
                                  : d == 2 ? srv.message
                                  : d == 3 ? srv.epoch
                                  : d == 4 ? srv.client
                                           : srv.server;
                size_t want = len < dst[d].size - 1 ? len : dst[d].size - 1;
                ck_assert_uint_eq(strlen(got), want);
                for (size_t k = 0; k < want; k++)
                    ck_assert(got[k] == 'x');
            }
        }
    }
    /* a multi-byte character is cut where the buffer ends, like any bytes */
    char m[512];
    int n = snprintf(m, sizeof m, "{\"op\":\"error\",\"code\":\"%030d\\u00e9\"}", 0);
    ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
    ck_assert_uint_eq(strlen(srv.code), 31);
    ck_assert((unsigned char)srv.code[30] == 0xc3);
}
END_TEST

/* seq and max_message: digits-only integers, saturating; heartbeat: any
 * number, as strtod() reads it in the C locale. */
START_TEST(server_numbers)
{
    static const struct {
        const char *text;
        bool integer;
        uint64_t value;
    } ints[] = {
        {"0", true, 0},
        {"7", true, 7},
        {"1048576", true, 1048576},
        {"9999999999999999999", true, 9999999999999999999ull},
        {"18446744073709551615", true, UINT64_MAX},
        {"18446744073709551616", true, UINT64_MAX},
        {"99999999999999999999999999999999999999", true, UINT64_MAX},
        {"-0", false, 0},
        {"-1", false, 0},
        {"1.0", false, 0},
        {"1e3", false, 0},
        {"1E+3", false, 0},
        {"0.5", false, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        char m[256];
        snprintf(m, sizeof m, "{\"op\":\"hello\",\"seq\":%s,\"max_message\":%s,\"heartbeat\":%s}",
                 ints[i].text, ints[i].text, ints[i].text);
        ck_assert_msg(parse_srv_str(m) == MSG_OK, "%s", m);
        ck_assert_msg(srv.has_seq == ints[i].integer, "%s", m);
        ck_assert_msg(srv.seq == ints[i].value && srv.max_message == ints[i].value, "%s", m);
        ck_assert_msg(srv.heartbeat == strtod(ints[i].text, NULL), "%s", m);
    }
    /* integers of any length */
    static char big[8192];
    size_t n = (size_t)sprintf(big, "{\"op\":\"ack\",\"seq\":1");
    memset(big + n, '0', 5000);
    n += 5000;
    n += (size_t)sprintf(big + n, "}");
    ck_assert_int_eq(parse_srv(big, n), MSG_OK);
    ck_assert(srv.has_seq && srv.seq == UINT64_MAX);
    ck_assert_int_eq(parse_srv_str("{\"op\":\"ack\",\"seq\":01}"), MSG_E_BAD_JSON);

    static const char *const dbl[] = {
        "0.25",
        "20",
        "-0",
        "0e0",
        "-1.5",
        "1e1",
        "2.5E-3",
        "1e308",
        "1e309",
        "1e400",
        "-1e400",
        "1e-320",
        "1e-400",
        "4.9e-324",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "0.1",
        "123456.789e-2",
        "9007199254740993",
        "9007199254740993.0000000000000000000001",
        "1e99999999999999999999",
        "1e-99999999999999999999",
        "0.0000000000000000000000001e25",
        "100000000000000000000000000000000000000000000000000e-50",
    };
    for (size_t i = 0; i < sizeof dbl / sizeof dbl[0]; i++) {
        char m[256];
        snprintf(m, sizeof m, "{\"op\":\"hello\",\"heartbeat\":%s}", dbl[i]);
        ck_assert_msg(parse_srv_str(m) == MSG_OK, "%s", m);
        double want = strtod(dbl[i], NULL);
        ck_assert_msg(memcmp(&srv.heartbeat, &want, sizeof want) == 0, "%s: %.17g != %.17g", dbl[i],
                      srv.heartbeat, want);
    }
}
END_TEST

/* Decimal to double past the 800 significant digits kept: the digits beyond
 * still decide the rounding, as they do for strtod(). */
START_TEST(server_numbers_long)
{
    static char num[4096], m[4200];
    /* 2^53 + 1 lies halfway between two doubles: anything after it rounds up */
    static const char *const tails[] = {"", "0", "1", "000001"};
    for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
        for (size_t zeros = 780; zeros <= 820; zeros += 5) {
            size_t n = (size_t)sprintf(num, "9007199254740993.");
            memset(num + n, '0', zeros);
            n += zeros;
            n += (size_t)sprintf(num + n, "%s", tails[t]);
            int len = snprintf(m, sizeof m, "{\"op\":\"hello\",\"heartbeat\":%s}", num);
            ck_assert_int_eq(parse_srv(m, (size_t)len), MSG_OK);
            double want = strtod(num, NULL);
            ck_assert_msg(srv.heartbeat == want, "%zu zeros, tail '%s': %.17g != %.17g", zeros,
                          tails[t], srv.heartbeat, want);
            ck_assert(srv.heartbeat ==
                      (t == 0 || t == 1 ? 9007199254740992.0 : 9007199254740994.0));
        }
    }
    /* random numbers of every shape against strtod() */
    xorshift_t x = {12345};
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = 0;
        if (xorshift_next(&x) % 2)
            num[n++] = '-';
        size_t ilen = xorshift_range(&x, 1, iter % 10 == 0 ? 1200 : 25);
        num[n++] = (char)('1' + xorshift_next(&x) % 9);
        if (xorshift_next(&x) % 8 == 0) {
            num[n - 1] = '0'; /* a lone 0 */
        } else {
            for (size_t k = 1; k < ilen; k++)
                num[n++] = (char)('0' + xorshift_next(&x) % 10);
        }
        if (xorshift_next(&x) % 2) {
            num[n++] = '.';
            size_t flen = xorshift_range(&x, 1, iter % 10 == 1 ? 1200 : 25);
            for (size_t k = 0; k < flen; k++)
                num[n++] = (char)('0' + xorshift_next(&x) % 10);
        }
        if (xorshift_next(&x) % 2)
            n += (size_t)sprintf(num + n, "%c%s%d", xorshift_next(&x) % 2 ? 'e' : 'E',
                                 xorshift_next(&x) % 2   ? "-"
                                 : xorshift_next(&x) % 2 ? "+"
                                                         : "",
                                 (int)(xorshift_next(&x) % 400));
        num[n] = '\0';
        int len = snprintf(m, sizeof m, "{\"heartbeat\":%s,\"op\":\"hello\"}", num);
        ck_assert_int_eq(parse_srv(m, (size_t)len), MSG_OK);
        double want = strtod(num, NULL);
        ck_assert_msg(memcmp(&srv.heartbeat, &want, sizeof want) == 0, "%s: %.17g != %.17g", num,
                      srv.heartbeat, want);
    }
}
END_TEST

/* More digits than any exponent saturation: the digit count still moves the
 * decimal point (1 and a million zeros, times 10^-99999999999, is 0). */
START_TEST(server_numbers_huge)
{
    static const struct {
        const char *head, *tail;
        size_t zeros;
        double want;
    } cases[] = {
        {"1", "e-99999999999", 1100000, 0.0},
        {"1", "e-1100300", 1100000, 1e-300},
        {"-1", "e-1099700", 1100000, -1e300},
        {"0.", "1e1100010", 1100000, 1e9},
        {"0.", "1e99999999999999999999999", 1100000, HUGE_VAL},
        {"1", "e-99999999999999999999999", 1100000, 0.0},
        {"1", "e-99999999999999999999999", 12000000, 0.0},
        {"1", "e-12000300", 12000000, 1e-300},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hl = strlen(cases[i].head), tl = strlen(cases[i].tail);
        size_t cap = 64 + hl + cases[i].zeros + tl;
        char *m = malloc(cap);
        ck_assert_ptr_nonnull(m);
        size_t n = (size_t)sprintf(m, "{\"op\":\"hello\",\"heartbeat\":%s", cases[i].head);
        memset(m + n, '0', cases[i].zeros);
        n += cases[i].zeros;
        n += (size_t)sprintf(m + n, "%s}", cases[i].tail);
        ck_assert_int_eq(msg_parse_server(m, n, &srv), MSG_OK);
        m[n - 1] = '\0';
        double want = strtod(m + strlen("{\"op\":\"hello\",\"heartbeat\":"), NULL);
        ck_assert_msg(srv.heartbeat == want && want == cases[i].want, "case %zu: %g, %g", i,
                      srv.heartbeat, want);
        free(m);
    }
}
END_TEST

/* Integers are read 8 digits at a time from the 8 bytes that end them,
 * when those lie inside the message: every length, every digit at every
 * place, a non-digit at every place, at offsets where that load reaches
 * the start of the message and where it does not. */
START_TEST(server_integers_every_digit)
{
    char num[32], m[128];
    xorshift_t x = {42};
    for (size_t len = 1; len <= 22; len++) {
        for (int round = 0; round < 60; round++) {
            num[0] = (char)('1' + xorshift_next(&x) % 9);
            for (size_t i = 1; i < len; i++)
                num[i] = (char)('0' + (round < 10 ? (size_t)round : xorshift_next(&x) % 10));
            num[len] = '\0';
            uint64_t want = strtoull(num, NULL, 10); /* ERANGE gives UINT64_MAX */
            /* seq right after "{", so that 8 bytes before its end may not exist */
            int n = snprintf(m, sizeof m, "{\"seq\":%s,\"op\":\"ack\"}", num);
            ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
            ck_assert_msg(srv.has_seq && srv.seq == want, "%s", num);
            ck_assert_int_eq(msg_parse_server(front_guard_copy(m, (size_t)n), (size_t)n, &srv),
                             MSG_OK);
            ck_assert_msg(srv.has_seq && srv.seq == want, "%s", num);
            n = snprintf(m, sizeof m, "{\"op\":\"hello\",\"max_message\":%s}", num);
            ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
            ck_assert_msg(srv.max_message == want, "%s", num);
            n = snprintf(m, sizeof m,
                         "{\"op\":\"subscribe\",\"topic\":\"t\",\"last\":%s,\"since\":%s}", num,
                         num);
            ck_assert_int_eq(parse_n(m, (size_t)n), MSG_OK);
            ck_assert_msg(req.last == want && req.since == want, "%s", num);
        }
        /* a fraction, an exponent or a sign anywhere makes it no integer */
        for (size_t pos = 1; pos < len; pos++) {
            static const char *const cut[] = {".5", "e5", "E+1", ".0e-1"};
            for (size_t c = 0; c < sizeof cut / sizeof cut[0]; c++) {
                memset(num, '7', len);
                int k = snprintf(num + pos, sizeof num - pos, "%s", cut[c]);
                memset(num + pos + k, '3', len > pos ? len - pos : 0);
                num[pos + (size_t)k + (len - pos)] = '\0';
                int n = snprintf(m, sizeof m, "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":%s}", num);
                ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
                ck_assert_msg(!srv.has_seq, "%s", num);
            }
        }
        int n = snprintf(m, sizeof m, "{\"op\":\"ack\",\"topic\":\"t\",\"seq\":-%s}", num);
        ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
        ck_assert(!srv.has_seq);
    }
}
END_TEST

/* ids are kept as sent, of any length */
START_TEST(server_big_ids)
{
    static char m[70000], id[65536];
    for (size_t len = 1; len < sizeof id - 100; len = len * 3 + 1) {
        memset(id, '9', len);
        id[len] = '\0';
        size_t n = (size_t)snprintf(m, sizeof m, "{\"op\":\"ack\",\"id\":%s,\"seq\":1}", id);
        ck_assert_int_eq(parse_srv(m, n), MSG_OK);
        ck_assert(srv.id.len == len && memcmp(srv.id.p, id, len) == 0 && srv.seq == 1);
        n = (size_t)snprintf(m, sizeof m, "{\"op\":\"ack\",\"id\":\"%s\\u00e9\"}", id);
        ck_assert_int_eq(parse_srv(m, n), MSG_OK);
        ck_assert(srv.id.len == len + 8 && srv.id.p[0] == '"' &&
                  memcmp(srv.id.p + len + 1, "\\u00e9\"", 7) == 0);
    }
    ck_assert_int_eq(parse_srv_str("{\"op\":\"pong\",\"id\":-1.5e-300}"), MSG_OK);
    ck_span(srv.id, "-1.5e-300");
}
END_TEST

START_TEST(server_malformed)
{
    static const char *const bad[] = {
        "",
        " ",
        "{",
        "[]",
        "\"ack\"",
        "1",
        "null",
        "{\"op\":\"ack\"",
        "{\"op\":\"ack\",}",
        "{\"op\" \"ack\"}",
        "{\"op\":\"ack\"}}",
        "{\"op\":\"ack\"} x",
        "{\"op\":\"ack\"}{}",
        "{op:\"ack\"}",
        "{'op':'ack'}",
        "{\"op\":\"ack\",\"seq\":01}",
        "{\"op\":\"ack\",\"seq\":1.}",
        "{\"op\":\"ack\",\"seq\":+1}",
        "{\"op\":\"ack\",\"seq\":NaN}",
        "{\"op\":\"ack\",\"heartbeat\":Infinity}",
        "{\"op\":\"ack\",\"recovered\":tru}",
        "{\"op\":\"ack\",\"recovered\":True}",
        "{\"op\":\"ack\",\"topic\":\"a\tb\"}",
        "{\"op\":\"ack\",\"topic\":\"\\x\"}",
        "{\"op\":\"ack\",\"topic\":\"\\uZZZZ\"}",
        "{\"op\":\"ack\",\"topic\":\"\\ud800\"}",
        "{\"op\":\"ack\",\"topic\":\"\\udc00\\ud800\"}",
        "{\"op\":\"message\",\"data\":[1,]}",
        "{\"op\":\"message\",\"data\":{\"a\"}}",
        "{\"op\":\"message\",\"data\":[}",
        "{\"op\":\"ack\"/**/}",
        "{\"op\":\"ack\"}\x0b",
        "\x0b{\"op\":\"ack\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(parse_srv_str(bad[i]) == MSG_E_BAD_JSON, "%s", bad[i]);
        srv_only_op(0);
    }
    ck_assert_int_eq(parse_srv("{\"op\":\"ack\"\0}", 13), MSG_E_BAD_JSON);
    ck_assert_int_eq(msg_parse_server(NULL, 0, &srv), MSG_E_BAD_JSON);
    /* 1000 open containers at most, the message included */
    static char m[40000];
    for (int depth = 999; depth <= 1001; depth++) {
        size_t n = (size_t)sprintf(m, "{\"op\":\"message\",\"data\":");
        for (int i = 1; i < depth; i++)
            m[n++] = '[';
        for (int i = 1; i < depth; i++)
            m[n++] = ']';
        m[n++] = '}';
        ck_assert_int_eq(parse_srv(m, n), depth <= 1000 ? MSG_OK : MSG_E_BAD_JSON);
    }
    /* whitespace and a byte order mark are allowed where JSON allows them */
    ck_assert_int_eq(parse_srv_str("\xef\xbb\xbf \t{ \"op\" :\r\n\"ack\" , \"seq\" : 5 }\n"),
                     MSG_OK);
    ck_assert(srv.op == MSG_S_ACK && srv.seq == 5);
}
END_TEST

/* Strings are found through one window over a message of 16 to 64 bytes
 * and windows of 64 bytes over a longer one, the last of them its last 64
 * bytes: put the end of a string, a control byte, an escape or a high byte
 * at every offset of messages of many lengths, at both guard pages. */
START_TEST(server_string_every_offset)
{
    static const char lens[] = {1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, 127};
    static char t[200], m[512];
    for (size_t pad = 0; pad <= 64; pad++) {
        for (size_t li = 0; li < sizeof lens; li++) {
            size_t len = (size_t)lens[li];
            for (size_t pos = 0; pos < len; pos++) {
                for (int kind = 0; kind < 4; kind++) {
                    memset(t, 'a', len);
                    /* {"op":"error","code":"<pad>","message":"<t>"} */
                    int n;
                    if (kind == 2) /* an escape at pos */
                        n = snprintf(m, sizeof m,
                                     "{\"op\":\"error\",\"code\":\"%.*s\",\"message\":\"%.*s"
                                     "\\t%.*s\"}",
                                     (int)pad, t, (int)pos, t, (int)(len - pos - 1), t);
                    else {
                        t[pos] = kind == 0 ? '\x1f' : kind == 1 ? '"' : '\xff';
                        n = snprintf(m, sizeof m,
                                     "{\"op\":\"error\",\"code\":\"%.*s\",\"message\":\"%.*s\"}",
                                     (int)pad,
                                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                                     (int)len, t);
                    }
                    int want = kind == 0 || kind == 1 ? MSG_E_BAD_JSON : MSG_OK;
                    ck_assert_msg(parse_srv(m, (size_t)n) == want, "%s", m);
                    int rc = msg_parse_server(front_guard_copy(m, (size_t)n), (size_t)n, &srv);
                    ck_assert_int_eq(rc, want);
                    if (want != MSG_OK)
                        continue;
                    size_t mlen = len < sizeof srv.message - 1 ? len : sizeof srv.message - 1;
                    ck_assert_uint_eq(strlen(srv.message), mlen);
                    if (pos < mlen)
                        ck_assert(srv.message[pos] == (kind == 2 ? '\t' : '\xff'));
                    ck_assert_uint_eq(strlen(srv.code), pad < 31 ? pad : 31);
                }
            }
        }
    }
}
END_TEST

/* Short messages: every length below the 16- and 64-byte windows. */
START_TEST(server_short_messages)
{
    char m[128];
    for (size_t tl = 0; tl < 80; tl++) {
        int n = snprintf(m, sizeof m, "{\"op\":\"ack\",\"topic\":\"%.*s\"}", (int)tl,
                         "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrst"
                         "uvwxyzabcdef");
        ck_assert_int_eq(parse_srv(m, (size_t)n), MSG_OK);
        ck_assert_uint_eq(strlen(srv.topic), tl);
        ck_assert_int_eq(msg_parse_server(front_guard_copy(m, (size_t)n), (size_t)n, &srv), MSG_OK);
        for (int cut = 0; cut < n; cut++)
            ck_assert_int_eq(parse_srv(m, (size_t)cut), MSG_E_BAD_JSON);
    }
}
END_TEST

static Suite *msg_suite(void)
{
    Suite *s = suite_create("msg");
    TCase *tc = tcase_create("parse");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, parse_subscribe);
    tcase_add_test(tc, parse_subscribe_history);
    tcase_add_test(tc, parse_unsubscribe);
    tcase_add_test(tc, parse_publish_example);
    tcase_add_test(tc, parse_publish_data_exact);
    tcase_add_test(tc, parse_publish_nested_deep);
    tcase_add_test(tc, parse_publish_big_data);
    tcase_add_test(tc, parse_ping);
    tcase_add_test(tc, parse_id_spellings);
    tcase_add_test(tc, parse_whitespace_and_bom);
    tcase_add_test(tc, parse_unknown_members_ignored);
    tcase_add_test(tc, parse_duplicate_keys_first_wins);
    tcase_add_test(tc, parse_escaped_keys);
    tcase_add_test(tc, parse_member_names_case_sensitive);
    tcase_add_test(tc, parse_topic_decoding);
    tcase_add_test(tc, parse_epoch_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, err_bad_json);
    tcase_add_test(tc, err_not_object);
    tcase_add_test(tc, err_every_prefix_is_bad_json);
    tcase_add_test(tc, err_op);
    tcase_add_test(tc, err_id_type);
    tcase_add_test(tc, err_topic_and_data);
    tcase_add_test(tc, err_last_since_epoch);
    suite_add_tcase(s, tc);

    tc = tcase_create("strict");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, strict_numbers);
    tcase_add_test(tc, strict_literals);
    tcase_add_test(tc, strict_escapes);
    tcase_add_test(tc, strict_control_bytes);
    tcase_add_test(tc, strict_whitespace);
    tcase_add_test(tc, strict_trailing);
    tcase_add_test(tc, strict_nesting);
    tcase_add_test(tc, strict_string_every_offset);
    tcase_add_test(tc, strict_every_prefix);
    tcase_add_test(tc, strict_differences);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, encode_message);
    tcase_add_test(tc, encode_hello);
    tcase_add_test(tc, encode_ack);
    tcase_add_test(tc, encode_error);
    tcase_add_test(tc, encode_pong);
    tcase_add_test(tc, encode_publish);
    tcase_add_test(tc, encode_subscribe);
    tcase_add_test(tc, escape);
    tcase_add_test(tc, escape_every_offset);
    tcase_add_test(tc, bounds_hold_for_random_inputs);
    suite_add_tcase(s, tc);

    tc = tcase_create("roundtrip");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, roundtrip_client_encoders);
    tcase_add_test(tc, roundtrip_server_encoders);
    tcase_add_test(tc, parse_server_protocol_examples);
    tcase_add_test(tc, parse_server_errors_and_limits);
    tcase_add_test(tc, parse_server_prefixes);
    suite_add_tcase(s, tc);

    tc = tcase_create("server");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, server_every_op);
    tcase_add_test(tc, server_op);
    tcase_add_test(tc, server_member_types);
    tcase_add_test(tc, server_duplicates_first_wins);
    tcase_add_test(tc, server_strings);
    tcase_add_test(tc, server_numbers);
    tcase_add_test(tc, server_numbers_long);
    tcase_add_test(tc, server_numbers_huge);
    tcase_add_test(tc, server_integers_every_digit);
    tcase_add_test(tc, server_big_ids);
    tcase_add_test(tc, server_malformed);
    tcase_add_test(tc, server_string_every_offset);
    tcase_add_test(tc, server_short_messages);
    suite_add_tcase(s, tc);
    return s;
}

/* ---- micro-benchmark: "test_msg --bench [iterations]"; never run by ctest ---- */

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* What the old msg_parse() did before its own scan: parse into a cJSON
 * tree, look the seven members up, free the tree. A lower bound of its
 * cost, kept here as the yardstick for the single pass. */
static int cjson_pass(const char *m, size_t n)
{
    static const char *const keys[] = {"op", "id", "topic", "data", "last", "since", "epoch"};
    cJSON *root = cJSON_ParseWithLength(m, n);
    int found = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        found += cJSON_GetObjectItemCaseSensitive(root, keys[k]) != NULL;
    cJSON_Delete(root);
    return found;
}

static int bench(long iters)
{
    if (iters < 1)
        iters = 1;
    char m[512], pad[129];
    memset(pad, 'x', 128);
    pad[128] = '\0';
    size_t n = (size_t)snprintf(m, sizeof m,
                                "{\"op\":\"publish\",\"topic\":\"bench.pair.123\",\"data\":{\"t\":"
                                "123456789,\"pad\":\"%s\"},\"id\":42}",
                                pad);
    msg_request_t r;
    const char *w;
    if (msg_parse(m, n, &r, &w) != MSG_OK || cjson_pass(m, n) != 4) {
        fprintf(stderr, "bench message does not parse\n");
        return EXIT_FAILURE;
    }
    double best_new = 0, best_cjson = 0;
    volatile size_t sink = 0;
    for (int round = 0; round < 5; round++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++)
            sink += (size_t)msg_parse(m, n, &r, &w) + r.data.len;
        double t1 = now_ns();
        for (long i = 0; i < iters; i++)
            sink += (size_t)cjson_pass(m, n);
        double t2 = now_ns();
        double a = (t1 - t0) / (double)iters, b = (t2 - t1) / (double)iters;
        if (round == 0 || a < best_new)
            best_new = a;
        if (round == 0 || b < best_cjson)
            best_cjson = b;
    }
    printf("message: %zu bytes, %ld parses per round, best of 5 rounds\n", n, iters);
    printf("msg_parse, single pass:              %8.1f ns/parse\n", best_new);
    printf("cJSON pass of the old msg_parse:     %8.1f ns/parse (parse, 7 lookups, delete)\n",
           best_cjson);
    printf("ratio: %.1fx\n", best_cjson / best_new);
    return sink != 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bench") == 0)
        return bench(argc > 2 ? atol(argv[2]) : 1000000);
    SRunner *sr = srunner_create(msg_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
