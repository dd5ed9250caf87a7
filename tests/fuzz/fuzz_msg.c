/*
 * fuzz_msg.c - differential libFuzzer target for the JSON message codec.
 *
 * msg_parse() validates client requests with its own single-pass scanner.
 * Every input (and the input wrapped as the "data" of a publish) is checked
 * against two independent judges:
 *
 *   - ref_parse(), a plain recursive-descent RFC 8259 validator written
 *     here for clarity, not speed. In strict mode msg_parse() must agree with
 *     it exactly on "is this JSON" and "is it an object". With leniency flags
 *     it models what cJSON 1.7 accepts beyond RFC 8259 (any byte up to 0x20
 *     as whitespace, raw control bytes in strings, strtod's number grammar,
 *     \u escapes with non-hex digits read as U+0000, bytes after the value).
 *   - cJSON_ParseWithLength(), the parser msg_parse() used before. If cJSON
 *     rejects the bytes, msg_parse() must reject them too (a byte order
 *     mark and one digit, which cJSON refuses, is "not an object" to
 *     msg_parse(): bad_json either way). If cJSON accepts them and
 *     msg_parse() does not, the bytes must be valid under the leniencies
 *     above: those are msg_parse()'s documented strictness, and any other
 *     disagreement aborts. If msg_parse() accepts, cJSON must
 *     agree on the result: op, topic, epoch, last and since by value, and
 *     "data" and "id" by parsing their spans and comparing the trees with
 *     cJSON_Compare(); the rc and the "why" text must be what the request
 *     checks give for cJSON's view of the members.
 *
 * msg_parse_server() reads broker messages with the same validator. Every
 * input is also checked as a broker message: valid exactly when the strict
 * reference says it is an object with a string "op", and then every member
 * as cJSON reads it (id and data by their spans, seq and max_message by
 * value, heartbeat bit for bit against cJSON's strtod(), the six strings
 * cut to their buffers).
 *
 * It also keeps the codec's own invariants: every raw span lies inside the
 * input, re-encoding a parsed publish (msg_encode_message then
 * msg_parse_server, msg_encode_publish then msg_parse) gives back the same
 * topic, data and id, and the topic functions agree with each other.
 * A violated invariant aborts, which libFuzzer reports as a crash.
 */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_dict.h"
#include "wsproto/msg.h"
#include "wsproto/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

#define WHY_NOT_JSON   "message is not valid JSON"
#define WHY_NOT_OBJECT "message is not a JSON object"
#define WHY_ID         "\"id\" must be a string or a number"
#define WHY_OP         "message needs a string \"op\" member"
#define WHY_DATA       "publish needs a \"data\" member"
#define WHY_LAST       "\"last\" must be an integer >= 0"
#define WHY_SINCE      "\"since\" must be an integer >= 0"
#define DEPTH_MAX      1000 /* msg.c's MSG_DEPTH_MAX and cJSON's CJSON_NESTING_LIMIT */

/* The reference code is not what is being fuzzed: no coverage
 * instrumentation, so that runs are faster and the fuzzer is guided by
 * the library's branches, not the oracle's. */
#define ORACLE __attribute__((no_sanitize("coverage")))

/* ---------------------------------------------------------------------
 * Reference validator
 * ------------------------------------------------------------------- */

enum {
    LAX_WS = 1,     /* any byte up to 0x20 is whitespace */
    LAX_CTRL = 2,   /* raw bytes below 0x20 inside strings */
    LAX_NUMBER = 4, /* strtod() over the run of [0-9+-.eE], as cJSON reads numbers */
    LAX_HEX = 8,    /* \u with non-hex digits stands for U+0000 */
    LAX_TRAIL = 16, /* anything may follow the top-level value */
    LAX_CJSON = LAX_WS | LAX_CTRL | LAX_NUMBER | LAX_HEX | LAX_TRAIL,
};

typedef struct ref {
    const unsigned char *s;
    size_t n, i;
    unsigned lax;
    int depth;
} ref_t;

typedef enum ref_rc { REF_BAD, REF_OBJECT, REF_OTHER } ref_rc_t;

ORACLE static bool ref_value(ref_t *r);

ORACLE static bool ref_is_ws(const ref_t *r, unsigned char c)
{
    if (r->lax & LAX_WS)
        return c <= 0x20;
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

ORACLE static void ref_ws(ref_t *r)
{
    while (r->i < r->n && ref_is_ws(r, r->s[r->i]))
        r->i++;
}

ORACLE static bool ref_at(const ref_t *r, char c)
{
    return r->i < r->n && r->s[r->i] == (unsigned char)c;
}

ORACLE static long ref_hex4(const unsigned char *p)
{
    long v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = p[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Like cJSON: first find the closing quote (a backslash hides the byte
 * after it), then check the escapes between the quotes. */
ORACLE static bool ref_string(ref_t *r)
{
    size_t start = ++r->i, end = start;
    while (end < r->n && r->s[end] != '"') {
        if (r->s[end] == '\\') {
            if (end + 1 >= r->n)
                return false;
            end++;
        }
        end++;
    }
    if (end >= r->n)
        return false;
    for (size_t k = start; k < end;) {
        unsigned char c = r->s[k];
        if (c < 0x20 && !(r->lax & LAX_CTRL))
            return false;
        if (c != '\\') {
            k++;
            continue;
        }
        unsigned char e = r->s[k + 1];
        if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
            e == 't') {
            k += 2;
            continue;
        }
        if (e != 'u' || end - k < 6)
            return false;
        long hi = ref_hex4(r->s + k + 2);
        if (hi < 0 && (r->lax & LAX_HEX))
            hi = 0;
        if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
            return false;
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            if (end - (k + 6) < 6 || r->s[k + 6] != '\\' || r->s[k + 7] != 'u')
                return false;
            long lo = ref_hex4(r->s + k + 8);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return false;
            k += 12;
        } else {
            k += 6;
        }
    }
    r->i = end + 1;
    return true;
}

ORACLE static bool ref_digits(ref_t *r)
{
    size_t from = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9')
        r->i++;
    return r->i > from;
}

ORACLE static bool ref_number(ref_t *r)
{
    if (r->lax & LAX_NUMBER) {
        size_t k = 0;
        while (r->i + k < r->n && r->s[r->i + k] != '\0' &&
               strchr("0123456789+-.eE", r->s[r->i + k]) != NULL)
            k++;
        char *tmp = malloc(k + 1), *after;
        REQUIRE(tmp != NULL);
        memcpy(tmp, r->s + r->i, k);
        tmp[k] = '\0';
        strtod(tmp, &after);
        size_t used = (size_t)(after - tmp);
        free(tmp);
        r->i += used;
        return used > 0;
    }
    if (ref_at(r, '-'))
        r->i++;
    if (ref_at(r, '0'))
        r->i++;
    else if (!ref_digits(r))
        return false;
    if (ref_at(r, '.')) {
        r->i++;
        if (!ref_digits(r))
            return false;
    }
    if (ref_at(r, 'e') || ref_at(r, 'E')) {
        r->i++;
        if (ref_at(r, '+') || ref_at(r, '-'))
            r->i++;
        if (!ref_digits(r))
            return false;
    }
    return true;
}

ORACLE static bool ref_word(ref_t *r, const char *w)
{
    size_t n = strlen(w);
    if (r->n - r->i < n || memcmp(r->s + r->i, w, n) != 0)
        return false;
    r->i += n;
    return true;
}

ORACLE static bool ref_container(ref_t *r, char close, bool object)
{
    if (r->depth >= DEPTH_MAX)
        return false;
    r->depth++;
    r->i++;
    ref_ws(r);
    if (ref_at(r, close)) {
        r->i++;
        r->depth--;
        return true;
    }
    for (;;) {
        ref_ws(r);
        if (object) {
            if (!ref_at(r, '"') || !ref_string(r))
                return false;
            ref_ws(r);
            if (!ref_at(r, ':'))
                return false;
            r->i++;
            ref_ws(r);
        }
        if (!ref_value(r))
            return false;
        ref_ws(r);
        if (ref_at(r, ',')) {
            r->i++;
            continue;
        }
        if (!ref_at(r, close))
            return false;
        r->i++;
        r->depth--;
        return true;
    }
}

ORACLE static bool ref_value(ref_t *r)
{
    if (r->i >= r->n)
        return false;
    switch (r->s[r->i]) {
    case '{':
        return ref_container(r, '}', true);
    case '[':
        return ref_container(r, ']', false);
    case '"':
        return ref_string(r);
    case 't':
        return ref_word(r, "true");
    case 'f':
        return ref_word(r, "false");
    case 'n':
        return ref_word(r, "null");
    default:
        if (r->s[r->i] == '-' || (r->s[r->i] >= '0' && r->s[r->i] <= '9'))
            return ref_number(r);
        return false;
    }
}

ORACLE static ref_rc_t ref_parse(const char *buf, size_t len, unsigned lax)
{
    ref_t r = {(const unsigned char *)buf, len, 0, lax, 0};
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0)
        r.i = 3;
    ref_ws(&r);
    bool object = ref_at(&r, '{');
    if (!ref_value(&r))
        return REF_BAD;
    if (!(lax & LAX_TRAIL)) {
        ref_ws(&r);
        if (r.i != r.n)
            return REF_BAD;
    }
    return object ? REF_OBJECT : REF_OTHER;
}

/* ---------------------------------------------------------------------
 * msg_parse() against cJSON
 * ------------------------------------------------------------------- */

/* Two trees from the same text. cJSON_Compare() calls inf != inf (1e400),
 * so equal printed forms count too. */
ORACLE static bool same_tree(const cJSON *a, const cJSON *b)
{
    if (cJSON_Compare(a, b, true))
        return true;
    char *pa = cJSON_PrintUnformatted(a), *pb = cJSON_PrintUnformatted(b);
    bool same = pa != NULL && pb != NULL && strcmp(pa, pb) == 0;
    free(pa);
    free(pb);
    return same;
}

/* The raw span parses alone, as exactly one value, to the same tree. */
ORACLE static void span_is_item(msg_span_t sp, const cJSON *item)
{
    char *z = malloc(sp.len + 1);
    REQUIRE(z != NULL);
    memcpy(z, sp.p, sp.len);
    z[sp.len] = '\0';
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(z, sp.len, &end, 0);
    REQUIRE(j != NULL && end == z + sp.len);
    REQUIRE(same_tree(j, item));
    cJSON_Delete(j);
    free(z);
}

ORACLE static bool has_escaped_nul(const char *buf, size_t size)
{
    static const char pat[] = "\\u0000";
    for (size_t i = 0; i + 6 <= size; i++) {
        if (memcmp(buf + i, pat, 6) == 0)
            return true;
    }
    return false;
}

/* Our decoded string d[0..n) as cJSON holds it: cut at the first NUL. */
ORACLE static bool same_cstring(const char *d, size_t n, const char *c)
{
    const char *nul = memchr(d, '\0', n);
    size_t upto = nul != NULL ? (size_t)(nul - d) : n;
    return strlen(c) == upto && memcmp(d, c, upto) == 0;
}

ORACLE static msg_op_t op_named(const char *s)
{
    if (strcmp(s, "subscribe") == 0)
        return MSG_OP_SUBSCRIBE;
    if (strcmp(s, "unsubscribe") == 0)
        return MSG_OP_UNSUBSCRIBE;
    if (strcmp(s, "publish") == 0)
        return MSG_OP_PUBLISH;
    if (strcmp(s, "ping") == 0)
        return MSG_OP_PING;
    return 0;
}

ORACLE static bool why_is(const char *why, const char *want)
{
    return why != NULL && strcmp(why, want) == 0;
}

/* An accepted last/since agrees with cJSON's double (exact up to rounding,
 * saturated above 2^64). */
static bool same_u64(uint64_t v, const cJSON *item)
{
    double d = item->valuedouble;
    return (double)v == d || (v == UINT64_MAX && d >= 18446744073709551615.0);
}

/* A refused last/since: cJSON cannot tell "1.0" from "1", so only check
 * that it is not plainly a non-negative integer spelled in digits. */
ORACLE static bool bad_u64(const cJSON *item, const char *buf, size_t size)
{
    if (!cJSON_IsNumber(item))
        return true;
    double d = item->valuedouble;
    return d < 0 || d != floor(d) || memchr(buf, '.', size) != NULL ||
           memchr(buf, 'e', size) != NULL || memchr(buf, 'E', size) != NULL ||
           memchr(buf, '-', size) != NULL;
}

/* Walk the request checks of msg.h over cJSON's view of the members and
 * require msg_parse()'s outcome at every step. */
ORACLE static void same_request(const char *buf, size_t size, int rc, const msg_request_t *req,
                                const char *why, const cJSON *root)
{
    static const char *const need_topic[] = {
        [MSG_OP_SUBSCRIBE] = "subscribe needs a string \"topic\" member",
        [MSG_OP_UNSUBSCRIBE] = "unsubscribe needs a string \"topic\" member",
        [MSG_OP_PUBLISH] = "publish needs a string \"topic\" member",
    };
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(root, "op");
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(root, "topic");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(root, "last");
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(root, "since");
    const cJSON *epoch = cJSON_GetObjectItemCaseSensitive(root, "epoch");

    bool id_ok = cJSON_IsString(id) || cJSON_IsNumber(id);
    REQUIRE((req->id.len > 0) == id_ok);
    if (id_ok)
        span_is_item(req->id, id);
    if (id != NULL && !id_ok) {
        REQUIRE(rc == MSG_E_BAD_REQUEST && why_is(why, WHY_ID));
        return;
    }
    if (!cJSON_IsString(op)) {
        REQUIRE(rc == MSG_E_BAD_REQUEST && why_is(why, WHY_OP));
        return;
    }
    msg_op_t want = op_named(op->valuestring);
    if (rc == MSG_E_UNKNOWN_OP) {
        /* cJSON cuts "ping\u0000" to a name; msg_parse() keeps the NUL */
        REQUIRE(want == 0 || has_escaped_nul(buf, size));
        return;
    }
    REQUIRE(want != 0 && req->op == want);
    if (want == MSG_OP_PING) {
        REQUIRE(rc == MSG_OK && !req->has_topic);
        return;
    }

    if (!cJSON_IsString(topic)) {
        REQUIRE(rc == MSG_E_BAD_REQUEST && why_is(why, need_topic[want]));
        return;
    }
    REQUIRE(req->has_topic);
    if (req->topic.len <= TOPIC_MAX) {
        REQUIRE(same_cstring(req->topic.p, req->topic.len, topic->valuestring));
    } else {
        /* longer than allowed: topic_buf holds the first TOPIC_MAX + 1 bytes */
        const char *nul = memchr(req->topic.p, '\0', TOPIC_MAX + 1);
        if (nul != NULL)
            REQUIRE(same_cstring(req->topic.p, TOPIC_MAX + 1, topic->valuestring));
        else
            REQUIRE(strlen(topic->valuestring) > TOPIC_MAX &&
                    memcmp(topic->valuestring, req->topic.p, TOPIC_MAX + 1) == 0);
    }

    if (want == MSG_OP_PUBLISH) {
        if (data == NULL) {
            REQUIRE(rc == MSG_E_BAD_REQUEST && why_is(why, WHY_DATA));
            return;
        }
        REQUIRE(rc == MSG_OK && req->has_data);
        span_is_item(req->data, data);
        return;
    }
    if (want == MSG_OP_UNSUBSCRIBE) {
        REQUIRE(rc == MSG_OK && !req->has_last && !req->has_since && !req->has_epoch);
        return;
    }

    if (rc == MSG_E_BAD_REQUEST && why_is(why, WHY_LAST)) {
        REQUIRE(last != NULL && bad_u64(last, buf, size));
        return;
    }
    REQUIRE(req->has_last == (last != NULL));
    if (last != NULL)
        REQUIRE(cJSON_IsNumber(last) && same_u64(req->last, last));
    if (rc == MSG_E_BAD_REQUEST && why_is(why, WHY_SINCE)) {
        REQUIRE(since != NULL && bad_u64(since, buf, size));
        return;
    }
    REQUIRE(req->has_since == (since != NULL));
    if (since != NULL)
        REQUIRE(cJSON_IsNumber(since) && same_u64(req->since, since));
    if (rc == MSG_E_BAD_REQUEST) {
        REQUIRE(why != NULL && strstr(why, "\"epoch\"") != NULL && epoch != NULL);
        REQUIRE(!cJSON_IsString(epoch) || strlen(epoch->valuestring) > MSG_EPOCH_MAX ||
                has_escaped_nul(buf, size));
        return;
    }
    REQUIRE(rc == MSG_OK && req->has_epoch == (epoch != NULL));
    if (epoch != NULL)
        REQUIRE(cJSON_IsString(epoch) &&
                same_cstring(req->epoch.p, req->epoch.len, epoch->valuestring));
}

ORACLE static void differential(const char *buf, size_t size, int rc, const msg_request_t *req,
                                const char *why)
{
    bool valid = rc != MSG_E_BAD_JSON || why_is(why, WHY_NOT_OBJECT);
    if (rc == MSG_E_BAD_JSON)
        REQUIRE(why_is(why, WHY_NOT_OBJECT) || why_is(why, WHY_NOT_JSON));

    /* exact agreement with the strict reference */
    ref_rc_t strict = ref_parse(buf, size, 0);
    REQUIRE(valid == (strict != REF_BAD));
    REQUIRE(why_is(why, WHY_NOT_OBJECT) == (strict == REF_OTHER));

    cJSON *root = cJSON_ParseWithLength(buf, size);
    if (root == NULL) {
        /* cJSON skips a byte order mark only if 2 or more bytes follow it,
         * so it refuses a BOM and one digit; that is no object either way */
        REQUIRE(!valid ||
                (size == 4 && rc == MSG_E_BAD_JSON && memcmp(buf, "\xEF\xBB\xBF", 3) == 0));
    } else if (!valid) {
        /* cJSON took it; msg_parse() may refuse only by documented strictness */
        REQUIRE(ref_parse(buf, size, LAX_CJSON) != REF_BAD);
    } else if (rc == MSG_E_BAD_JSON) {
        REQUIRE(!cJSON_IsObject(root));
    } else {
        REQUIRE(cJSON_IsObject(root));
        same_request(buf, size, rc, req, why, root);
    }
    cJSON_Delete(root);
}

/* ---------------------------------------------------------------------
 * Invariants of the codec
 * ------------------------------------------------------------------- */

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
    differential(buf, size, rc, &req, why);
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
    REQUIRE(n == msg_message_size(req.topic.p, req.topic.len, 7, req.data.len));
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

ORACLE static msg_sop_t sop_named(const char *s)
{
    static const char *const names[] = {"hello", "ack", "error", "message", "pong"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0)
            return (msg_sop_t)(i + 1);
    }
    return 0;
}

/* A decoded string of msg_server_t against cJSON's: the same up to the
 * first NUL, cut to the buffer, or empty if cJSON has no string there. */
ORACLE static void same_cut(const char *ours, size_t size, const cJSON *item)
{
    REQUIRE(memchr(ours, '\0', size) != NULL);
    if (!cJSON_IsString(item)) {
        REQUIRE(ours[0] == '\0');
        return;
    }
    size_t want = strlen(item->valuestring);
    if (want > size - 1)
        want = size - 1;
    REQUIRE(strlen(ours) == want && memcmp(ours, item->valuestring, want) == 0);
}

/* msg_parse_server() against the strict reference and cJSON: the same
 * strictness as msg_parse(), and every member as cJSON reads it. */
ORACLE static void differential_server(const char *buf, size_t size, int rc, const msg_server_t *m)
{
    ref_rc_t strict = ref_parse(buf, size, 0);
    if (strict != REF_OBJECT)
        REQUIRE(rc == MSG_E_BAD_JSON);

    cJSON *root = cJSON_ParseWithLength(buf, size);
    if (root == NULL) {
        /* the byte order mark and one digit: no object either way */
        REQUIRE(rc == MSG_E_BAD_JSON);
        return;
    }
    if (strict == REF_BAD) {
        REQUIRE(ref_parse(buf, size, LAX_CJSON) != REF_BAD);
        cJSON_Delete(root);
        return;
    }
    if (strict == REF_OTHER) {
        REQUIRE(!cJSON_IsObject(root));
        cJSON_Delete(root);
        return;
    }
    REQUIRE(cJSON_IsObject(root));
#define ITEM(name) cJSON_GetObjectItemCaseSensitive(root, name)
    const cJSON *op = ITEM("op");
    if (!cJSON_IsString(op)) {
        REQUIRE(rc == MSG_E_BAD_JSON);
        cJSON_Delete(root);
        return;
    }
    msg_sop_t want = sop_named(op->valuestring);
    if (rc == MSG_E_UNKNOWN_OP) {
        /* cJSON cuts "ack\u0000" to a name; msg_parse_server() keeps the NUL */
        REQUIRE(m->op == 0 && (want == 0 || has_escaped_nul(buf, size)));
        cJSON_Delete(root);
        return;
    }
    REQUIRE(rc == MSG_OK && m->op == want);

    const cJSON *id = ITEM("id"), *data = ITEM("data"), *seq = ITEM("seq");
    bool id_ok = cJSON_IsString(id) || cJSON_IsNumber(id);
    REQUIRE((m->id.len > 0) == id_ok);
    if (id_ok)
        span_is_item(m->id, id);
    if (want == MSG_S_MESSAGE && data != NULL)
        span_is_item(m->data, data);
    else
        REQUIRE(m->data.len == 0 && m->data.p == NULL);

    if (!cJSON_IsNumber(seq))
        REQUIRE(!m->has_seq && m->seq == 0);
    else if (m->has_seq)
        REQUIRE(same_u64(m->seq, seq));
    else
        REQUIRE(bad_u64(seq, buf, size));

    const cJSON *mm = ITEM("max_message");
    if (!cJSON_IsNumber(mm))
        REQUIRE(m->max_message == 0);
    else if (m->max_message != 0 || mm->valuedouble != 0)
        REQUIRE(same_u64(m->max_message, mm) || (m->max_message == 0 && bad_u64(mm, buf, size)));

    const cJSON *rec = ITEM("recovered");
    REQUIRE(m->recovered == (cJSON_IsBool(rec) ? cJSON_IsTrue(rec) ? 1 : 0 : -1));

    /* cJSON's valuedouble is strtod() of the same text (C locale here) */
    const cJSON *hb = ITEM("heartbeat");
    double hbw = cJSON_IsNumber(hb) ? hb->valuedouble : 0.0;
    REQUIRE(memcmp(&m->heartbeat, &hbw, sizeof hbw) == 0);

    same_cut(m->topic, sizeof m->topic, ITEM("topic"));
    same_cut(m->code, sizeof m->code, ITEM("code"));
    same_cut(m->message, sizeof m->message, ITEM("message"));
    same_cut(m->epoch, sizeof m->epoch, ITEM("epoch"));
    same_cut(m->client, sizeof m->client, ITEM("client"));
    same_cut(m->server, sizeof m->server, ITEM("server"));
#undef ITEM
    cJSON_Delete(root);
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
    if (rc != MSG_OK)
        REQUIRE(m.op == 0 && m.id.len == 0 && m.data.len == 0 && !m.has_seq);
    differential_server(buf, size, rc, &m);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The input as the "data" of a publish: a single valid value gets exactly
 * its own bytes (less outer whitespace) as the span. */
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
        REQUIRE(req.data.p >= m + hl && req.data.p + req.data.len <= m + hl + size);
        if (ref_parse(in + a, b - a, 0) != REF_BAD)
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
    buf[0] = '\0';
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
