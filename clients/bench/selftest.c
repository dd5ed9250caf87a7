/*
 * selftest.c - `wsbroker-bench selftest`: checks of the parts of the bench
 * that need no broker (histogram, seq verification, message parsing,
 * payload format), so that a wrong figure can be told from a wrong
 * measuring stick.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* Within the histogram's resolution (1/64 of the value) of want. */
static bool near(uint64_t got, uint64_t want)
{
    uint64_t d = got > want ? got - want : want - got;
    return d <= want / 64 + 1;
}

static void test_hist(void)
{
    static hist_t h, h2;
    hist_init(&h);
    CHECK(hist_quantile(&h, 0.5) == 0);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_add(&h, v * 1000);
    CHECK(h.count == 100000);
    CHECK(h.min == 1000 && h.max == 100000000);
    CHECK(near(hist_quantile(&h, 0.5), 50000000));
    CHECK(near(hist_quantile(&h, 0.99), 99000000));
    CHECK(near(hist_quantile(&h, 0.999), 99900000));
    CHECK(hist_quantile(&h, 1.0) == 100000000);
    CHECK(hist_quantile(&h, 0.0) == 1000);

    /* Small values are exact. */
    hist_init(&h2);
    for (uint64_t v = 0; v < 64; v++)
        hist_add(&h2, v);
    CHECK(hist_quantile(&h2, 0.5) == 31);

    /* One outlier among many equal values. */
    hist_init(&h2);
    for (int i = 0; i < 999; i++)
        hist_add(&h2, 5000);
    hist_add(&h2, 7000000000ull);
    CHECK(near(hist_quantile(&h2, 0.99), 5000));
    CHECK(near(hist_quantile(&h2, 0.999), 5000));
    CHECK(hist_quantile(&h2, 1.0) == 7000000000ull);

    hist_merge(&h, &h2);
    CHECK(h.count == 101000 && h.max == 7000000000ull && h.min == 1000);

    /* Huge values do not overflow the bucket table. */
    hist_add(&h2, UINT64_MAX);
    CHECK(hist_quantile(&h2, 1.0) == UINT64_MAX);
}

/* The bench reads broker messages with msg_parse_server(): what it relies
 * on (topic, seq, id, data spans that hold a payload) comes through. */
static void test_parse(void)
{
    msg_server_t m;
    const char *msg = "{\"op\":\"message\",\"topic\":\"bench.x.1\",\"seq\":42,"
                      "\"data\":{\"t\":123,\"pad\":\"a\\\"}b\"}}";
    CHECK(msg_parse_server(msg, strlen(msg), &m) == MSG_OK);
    CHECK(m.op == MSG_S_MESSAGE);
    CHECK(strcmp(m.topic, "bench.x.1") == 0);
    CHECK(m.has_seq && m.seq == 42);
    CHECK(m.data.len == strlen("{\"t\":123,\"pad\":\"a\\\"}b\"}"));
    uint64_t t;
    CHECK(payload_time(m.data.p, m.data.len, &t) && t == 123);

    const char *ack = " { \"id\" : 17 , \"op\" : \"ack\", \"topic\":\"a\",\"seq\":3 } ";
    CHECK(msg_parse_server(ack, strlen(ack), &m) == MSG_OK);
    CHECK(m.op == MSG_S_ACK && m.id.len == 2 && memcmp(m.id.p, "17", 2) == 0);
    CHECK(m.has_seq && m.seq == 3);

    const char *first = "{\"op\":\"ack\",\"op\":\"error\",\"id\":1,\"id\":2}";
    CHECK(msg_parse_server(first, strlen(first), &m) == MSG_OK);
    CHECK(m.op == MSG_S_ACK && m.id.len == 1 && m.id.p[0] == '1');

    const char *bad[] = {"", "[]", "{}", "{\"op\":\"ack\"", "{\"op\":\"ack\",}", "{\"seq\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(msg_parse_server(bad[i], strlen(bad[i]), &m) == MSG_E_BAD_JSON);
    CHECK(msg_parse_server("{\"op\":\"later\"}", 14, &m) == MSG_E_UNKNOWN_OP && m.op == 0);

    uint64_t v;
    char text[24];
    static const uint64_t samples[] = {0,
                                       9,
                                       10,
                                       99,
                                       100,
                                       12345678,
                                       99999999,
                                       100000000,
                                       1234567890123ull,
                                       10000000000000000ull,
                                       UINT64_MAX};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char want[24];
        size_t n = dec_text(text, samples[i]);
        CHECK(n == (size_t)snprintf(want, sizeof want, "%llu", (unsigned long long)samples[i]) &&
              memcmp(text, want, n) == 0);
        CHECK(dec_u64(text, n, &v) && v == samples[i]);
    }
    CHECK(dec_u64("18446744073709551615", 20, &v) && v == UINT64_MAX);
    CHECK(!dec_u64("18446744073709551616", 20, &v));
    CHECK(!dec_u64("-1", 2, &v) && !dec_u64("", 0, &v) && !dec_u64("1.5", 3, &v));
    CHECK(!dec_u64(NULL, 0, &v));
}

static void test_payload(void)
{
    char buf[4096];
    uint64_t t;
    for (size_t size = 1; size < 300; size++) {
        size_t n = payload_make(buf, size, 98765432109876ull);
        CHECK(n <= payload_max(size));
        if (size >= payload_max(1))
            CHECK(n == size);
        CHECK(payload_time(buf, n, &t) && t == 98765432109876ull);
        CHECK(buf[0] == '{' && buf[n - 1] == '}' && buf[n - 2] == '"');
    }
    /* payload_update() gives what payload_make() gives, across digit counts */
    static const uint64_t ts[] = {5,
                                  7,
                                  10,
                                  99,
                                  100,
                                  123456789012ull,
                                  999999999999ull,
                                  1000000000000ull,
                                  42,
                                  18446744073709551615ull,
                                  1};
    char upd[512], ref[512];
    for (size_t size = 1; size < 200; size += 37) {
        size_t len = 0;
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            len = payload_update(upd, len, size, ts[i]);
            size_t rl = payload_make(ref, size, ts[i]);
            CHECK(len == rl && memcmp(upd, ref, rl) == 0);
        }
    }
    size_t n = payload_make(buf, 128, 0);
    CHECK(n == 128 && payload_time(buf, n, &t) && t == 0);
    CHECK(!payload_time("{\"x\":1}", 7, &t));
    CHECK(!payload_time("{\"t\":,", 6, &t) && !payload_time("{\"t\":", 5, &t));
    const char *big = "{\"t\":9223372036854775807,\"pad\":\"\"}";
    CHECK(payload_time(big, strlen(big), &t) && t == 9223372036854775807ull);
    const char *huge = "{\"t\":12345678901234567890}";
    CHECK(!payload_time(huge, strlen(huge), &t));
}

static void test_seq(void)
{
    static bconn_t c;
    uint64_t gap;
    c.base = c.last = 10;
    c.seen = ~(uint64_t)0;
    CHECK(scen_seq(&c, 11, &gap) == SEQ_NEXT && gap == 0);
    CHECK(scen_seq(&c, 12, &gap) == SEQ_NEXT && gap == 0);
    CHECK(scen_seq(&c, 12, &gap) == SEQ_DUP);
    CHECK(scen_seq(&c, 9, &gap) == SEQ_DUP);  /* before the subscription */
    CHECK(scen_seq(&c, 10, &gap) == SEQ_DUP); /* the subscribe ack's seq */
    CHECK(scen_seq(&c, 16, &gap) == SEQ_NEXT && gap == 3);
    CHECK(scen_seq(&c, 14, &gap) == SEQ_LATE);
    CHECK(scen_seq(&c, 14, &gap) == SEQ_DUP);
    CHECK(scen_seq(&c, 13, &gap) == SEQ_LATE);
    CHECK(scen_seq(&c, 15, &gap) == SEQ_LATE);
    CHECK(scen_seq(&c, 11, &gap) == SEQ_DUP);
    CHECK(scen_seq(&c, 17, &gap) == SEQ_NEXT && gap == 0);
    /* A jump beyond the 64-seq window, then a late one inside it and one
     * outside it. */
    CHECK(scen_seq(&c, 217, &gap) == SEQ_NEXT && gap == 199);
    CHECK(scen_seq(&c, 216, &gap) == SEQ_LATE);
    CHECK(scen_seq(&c, 216, &gap) == SEQ_DUP);
    CHECK(scen_seq(&c, 100, &gap) == SEQ_LATE);
    CHECK(c.last == 217);
}

int selftest_run(void)
{
    test_hist();
    test_seq();
    test_parse();
    test_payload();
    if (failures == 0)
        fprintf(stderr, "selftest: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
