/*
 * selftest.c - `wsbroker-bench selftest`: checks of the parts of the bench
 * that need no broker (histogram, seq verification, message scanner,
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

static void test_scan(void)
{
    smsg_t m;
    const char *msg = "{\"op\":\"message\",\"topic\":\"bench.x.1\",\"seq\":42,"
                      "\"data\":{\"t\":123,\"pad\":\"a\\\"}b\"}}";
    CHECK(scan_server(msg, strlen(msg), &m) == 0);
    CHECK(m.op == SM_MESSAGE);
    CHECK(m.topic_len == 9 && memcmp(m.topic, "bench.x.1", 9) == 0);
    CHECK(m.has_seq && m.seq == 42);
    CHECK(m.data_len == strlen("{\"t\":123,\"pad\":\"a\\\"}b\"}"));
    uint64_t t;
    CHECK(scan_payload_t(m.data, m.data_len, &t) && t == 123);

    const char *ack = " { \"id\" : 17 , \"op\" : \"ack\", \"topic\":\"a\",\"seq\":3 } ";
    CHECK(scan_server(ack, strlen(ack), &m) == 0);
    CHECK(m.op == SM_ACK && m.id_len == 2 && memcmp(m.id, "17", 2) == 0);
    CHECK(m.has_seq && m.seq == 3);

    const char *nested = "{\"op\":\"message\",\"data\":[1,{\"seq\":9},\"]\"],\"seq\":5,"
                         "\"extra\":null,\"f\":-1.5e3}";
    CHECK(scan_server(nested, strlen(nested), &m) == 0);
    CHECK(m.has_seq && m.seq == 5);

    const char *first = "{\"op\":\"ack\",\"op\":\"error\",\"id\":1,\"id\":2}";
    CHECK(scan_server(first, strlen(first), &m) == 0);
    CHECK(m.op == SM_ACK && m.id_len == 1 && m.id[0] == '1');

    const char *bad[] = {"",
                         "[]",
                         "{}",
                         "{\"op\":\"ack\"",
                         "{\"op\":\"ack\",}",
                         "{\"op\" \"ack\"}",
                         "{\"op\":\"ack\",\"data\":{\"a\":1}",
                         "{\"seq\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(scan_server(bad[i], strlen(bad[i]), &m) < 0);

    const char *pong = "{\"op\":\"pong\"}";
    CHECK(scan_server(pong, strlen(pong), &m) == 0 && m.op == SM_PONG && m.id == NULL);

    uint64_t v;
    CHECK(scan_u64("18446744073709551615", 20, &v) && v == UINT64_MAX);
    CHECK(!scan_u64("18446744073709551616", 20, &v));
    CHECK(!scan_u64("-1", 2, &v) && !scan_u64("", 0, &v) && !scan_u64("1.5", 3, &v));
}

static void test_payload(void)
{
    char buf[4096];
    uint64_t t;
    for (size_t size = 1; size < 300; size++) {
        size_t n = scan_make_payload(buf, size, 98765432109876ull);
        CHECK(n <= scan_payload_max(size));
        if (size >= scan_payload_max(1))
            CHECK(n == size);
        CHECK(scan_payload_t(buf, n, &t) && t == 98765432109876ull);
        CHECK(buf[0] == '{' && buf[n - 1] == '}' && buf[n - 2] == '"');
    }
    size_t n = scan_make_payload(buf, 128, 0);
    CHECK(n == 128 && scan_payload_t(buf, n, &t) && t == 0);
    CHECK(!scan_payload_t("{\"x\":1}", 7, &t));
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
    test_scan();
    test_payload();
    if (failures == 0)
        fprintf(stderr, "selftest: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
