/*
 * test_sync.c - the blocking helpers (wsc_sync_*): connect with a timeout,
 * subscribe, publish and wait for the ack, next message with a timeout,
 * refusals, and what a dead broker looks like to each call.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "tutil.h"

#define WAIT 5000

static it_broker_t broker = IT_BROKER_NONE;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    it_broker_start(&broker, "--workers", "1", "--log-level", "warn");
}

static void teardown(void)
{
    it_broker_release(&broker); /* only reached when the test passed: a failed test keeps the
                                   broker's log */
}

START_TEST(connect_failures)
{
    wsc_error_t err;
    wsc_options_t o;
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", it_free_port());

    /* Reconnect off: the refusal itself, at once. */
    wsc_options_init(&o);
    o.reconnect = false;
    int64_t t0 = it_now_ms();
    ck_assert_ptr_null(wsc_sync_connect(url, &o, WAIT, &err));
    ck_assert_int_lt(it_now_ms() - t0, 1000);
    ck_assert_int_eq(err.code, WSC_E_CONNECT);
    ck_assert_ptr_nonnull(strstr(err.text, "refused"));

    /* Reconnect on: retries until the timeout, then names the last error. */
    wsc_options_init(&o);
    o.backoff_min_ms = 10;
    o.backoff_max_ms = 50;
    t0 = it_now_ms();
    ck_assert_ptr_null(wsc_sync_connect(url, &o, 300, &err));
    int64_t took = it_now_ms() - t0;
    ck_assert_int_ge(took, 250);
    ck_assert_int_lt(took, 2000);
    ck_assert_int_eq(err.code, WSC_E_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(err.text, "last error"));

    ck_assert_ptr_null(wsc_sync_connect("http://127.0.0.1/", NULL, WAIT, &err));
    ck_assert_int_eq(err.code, WSC_E_INVAL);
}
END_TEST

START_TEST(publish_and_next)
{
    wsc_error_t err;
    wsc_result_t r;
    wsc_message_t m;
    wsc_options_t o;
    wsc_options_init(&o);
    o.reconnect = false;
    wsc_sync_t *sub = wsc_sync_connect(broker.url, &o, WAIT, &err);
    ck_assert_msg(sub != NULL, "%s", err.text);
    wsc_sync_t *pub = wsc_sync_connect(broker.url, NULL, WAIT, &err);
    ck_assert_msg(pub != NULL, "%s", err.text);
    ck_assert_int_eq(wsc_state(wsc_sync_client(sub)), WSC_OPEN);

    ck_assert_int_eq(wsc_sync_subscribe(sub, "sync.>", NULL, WAIT, &r), WSC_OK);
    ck_assert_str_eq(r.topic, "sync.>");
    ck_assert_int_eq(wsc_sync_subscribe(sub, "sync.a", NULL, WAIT, &r), WSC_OK);
    ck_assert(r.has_seq);
    ck_assert_uint_gt(strlen(r.epoch), 0);

    int64_t t0 = it_now_ms();
    ck_assert_int_eq(wsc_sync_next(sub, 150, &m), WSC_E_TIMEOUT);
    int64_t took = it_now_ms() - t0;
    ck_assert_int_ge(took, 140);
    ck_assert_int_lt(took, 1000);
    ck_assert_int_eq(wsc_sync_next(sub, 0, &m), WSC_E_TIMEOUT);

    for (int i = 1; i <= 3; i++) {
        char d[16];
        snprintf(d, sizeof(d), "[%d]", i);
        ck_assert_int_eq(wsc_sync_publish(pub, "sync.a", d, strlen(d), WAIT, &r), WSC_OK);
        ck_assert(r.has_seq);
        ck_assert_uint_eq(r.seq, (uint64_t)i);
    }
    for (int i = 1; i <= 3; i++) {
        char d[16];
        snprintf(d, sizeof(d), "[%d]", i);
        ck_assert_int_eq(wsc_sync_next(sub, WAIT, &m), WSC_OK);
        ck_assert_str_eq(m.topic, "sync.a");
        ck_assert_uint_eq(m.seq, (uint64_t)i);
        ck_assert_uint_eq(m.data_len, strlen(d));
        ck_assert(memcmp(m.data, d, m.data_len) == 0);
    }

    ck_assert_int_eq(wsc_sync_publish(pub, "sync.*", "1", 1, WAIT, &r), WSC_E_BROKER);
    ck_assert_str_eq(r.code, "bad_topic");
    ck_assert_ptr_nonnull(strstr(wsc_sync_error(pub), "bad_topic"));
    ck_assert_int_eq(wsc_sync_publish(pub, "sync.a", "{x", 2, WAIT, &r), WSC_E_INVAL);
    ck_assert_ptr_nonnull(strstr(wsc_sync_error(pub), "JSON"));

    ck_assert_int_eq(wsc_sync_unsubscribe(sub, "sync.a", WAIT, &r), WSC_OK);
    ck_assert_int_eq(wsc_sync_unsubscribe(sub, "nope", WAIT, &r), WSC_E_NOT_SUBSCRIBED);
    ck_assert_uint_eq(wsc_sync_dropped(sub), 0);

    /* The broker goes away: a client without reconnect reports it. */
    it_broker_stop(&broker); /* fails unless it exits 0 on SIGTERM */
    ck_assert_int_eq(wsc_sync_next(sub, WAIT, &m), WSC_E_CLOSED);
    ck_assert_int_eq(wsc_sync_publish(sub, "sync.a", "1", 1, WAIT, &r), WSC_E_CLOSED);
    /* With reconnect on, once the loss is seen, a publish waits in the
     * outbox until the timeout. */
    ck_assert_int_eq(wsc_sync_next(pub, 300, &m), WSC_E_TIMEOUT);
    ck_assert_int_eq(wsc_state(wsc_sync_client(pub)), WSC_RECONNECTING);
    ck_assert_int_eq(wsc_sync_publish(pub, "sync.a", "1", 1, 200, &r), WSC_E_TIMEOUT);
    wsc_sync_close(sub);
    wsc_sync_close(pub);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("sync");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, connect_failures);
    tcase_add_test(tc, publish_and_next);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
