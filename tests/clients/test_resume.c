/*
 * test_resume.c - libwsbroker-client against a broker with retained history
 * (--history) and with token authentication (--auth-secret), end to end:
 *
 *  - a client that loses its connection while messages are published gets
 *    exactly the missed ones replayed after it reconnects (since/epoch),
 *    in order, before live ones, and no stale report;
 *  - when the broker cannot replay them (history too short, or a new epoch
 *    after a restart) on_stale says so, with the seqs and epochs;
 *  - the blocking API's since/last;
 *  - tokens: refused without one (401), ACLs (forbidden), and token_cb
 *    asked before every attempt: a bad token is replaced on the next
 *    attempt, and after the broker closes an expired token's connection
 *    (1008) the client comes back with a fresh one and its subscriptions.
 *
 * Each test runs twice: over ws:// and over wss:// with permessage-deflate
 * (compressed in both directions). A connection is dropped by freezing the
 * broker (SIGSTOP) until the client's own liveness check gives up; token_cb
 * holds the reconnect back (returns NULL) while the test publishes what the
 * client will have missed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "client_int.h"
#include "tutil.h"

#define WAIT   5000
#define SECRET "resume-test-secret-0123456789abcdef"

static struct {
    uv_loop_t loop;
    it_broker_t broker;
    tl_certs_t certs;
    char wss[96];
    bool tls; /* this run uses wss:// */
    bool gate_open;
    int token_calls;
    const char *tokens[8]; /* token_cb's answers in turn; the last repeats */
    int ntokens;
} fx;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&fx, 0, sizeof(fx));
    fx.broker = IT_BROKER_NONE;
    ck_assert_int_eq(uv_loop_init(&fx.loop), 0);
    tl_make_certs(&fx.certs);
}

static void teardown(void)
{
    ck_assert_msg(tl_drain(&fx.loop), "the loop still had handles 5 s after the clients closed");
    uv_loop_close(&fx.loop);
    it_broker_release(&fx.broker);
    tl_remove_certs(&fx.certs);
}

/* The broker with args, on port (0: free ones). */
static void start_at(int port, int tls_port, const char *const *args)
{
    tl_start_tls_broker_at(&fx.broker, port, tls_port, fx.certs.cert, fx.certs.key, args, fx.wss,
                           sizeof(fx.wss));
}

static const char *url(void)
{
    return fx.tls ? fx.wss : fx.broker.url;
}

/* Options for this run's transport: the CA, and compression both ways. */
static void options(rec_t *r, wsc_options_t *o)
{
    rec_options(r, o);
    o->ca_file = fx.certs.ca;
    o->deflate_send = fx.tls;
    o->deflate_min_size = 8;
}

/* token_cb: while the gate is open, the next of fx.tokens. */
static const char *gate_token(wsc_client_t *c, void *user)
{
    (void)c;
    (void)user;
    fx.token_calls++;
    if (!fx.gate_open)
        return NULL;
    int i = fx.token_calls - 1;
    return fx.tokens[i < fx.ntokens ? i : fx.ntokens - 1];
}

static wsc_client_t *open_client(rec_t *r, wsc_options_t *o)
{
    wsc_error_t err;
    wsc_client_t *c = wsc_connect(&fx.loop, url(), o, &err);
    ck_assert_msg(c != NULL, "wsc_connect: %s", err.text);
    ck_assert_msg(tl_run_until(&fx.loop, rec_is_open, r, WAIT), "did not open (last: %s)",
                  r->nstates ? r->states[r->nstates - 1].detail : "no state change");
    return c;
}

static size_t count_state(const rec_t *r, wsc_state_t st)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nstates; i++)
        n += r->states[i].state == st;
    return n;
}

typedef struct want_state {
    rec_t *r;
    wsc_state_t st;
    size_t n;
    int err; /* 0: any */
} want_state_t;

static bool have_state(void *arg)
{
    want_state_t *w = arg;
    size_t n = 0;
    for (size_t i = 0; i < w->r->nstates; i++)
        n += w->r->states[i].state == w->st && (w->err == 0 || w->r->states[i].err == w->err);
    return n >= w->n;
}

static void wait_state(rec_t *r, wsc_state_t st, size_t n, int err, int timeout_ms)
{
    want_state_t w = {r, st, n, err};
    ck_assert_msg(tl_run_until(&fx.loop, have_state, &w, timeout_ms),
                  "no %zu %s states (err %d) within %d ms; last: %s", n, wsc_state_name(st), err,
                  timeout_ms, r->nstates ? r->states[r->nstates - 1].detail : "none");
}

/* A publisher on its own private loop. */
static wsc_sync_t *publisher(void)
{
    rec_t dummy;
    wsc_options_t o;
    wsc_error_t err;
    options(&dummy, &o);
    wsc_sync_t *p = wsc_sync_connect(url(), &o, WAIT, &err);
    ck_assert_msg(p != NULL, "publisher: %s", err.text);
    return p;
}

static void publish_n(wsc_sync_t *p, const char *topic, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char data[64];
        wsc_result_t r;
        snprintf(data, sizeof(data), "{\"n\":%d,\"pad\":\"%032d\"}", i, i);
        ck_assert_int_eq(wsc_sync_publish(p, topic, data, strlen(data), WAIT, &r), WSC_OK);
        ck_assert_uint_eq(r.seq, (uint64_t)i);
    }
}

/* The recorder's messages from index at on are topic's seqs in order. */
static void expect_seqs(const rec_t *r, size_t at, const char *topic, const int *seqs, size_t n)
{
    ck_assert_msg(r->nmsgs == at + n, "%zu messages, want %zu", r->nmsgs, at + n);
    for (size_t i = 0; i < n; i++) {
        const rec_msg_t *m = &r->msgs[at + i];
        char data[64];
        snprintf(data, sizeof(data), "{\"n\":%d,\"pad\":\"%032d\"}", seqs[i], seqs[i]);
        ck_assert_str_eq(m->topic, topic);
        ck_assert_msg(m->seq == (uint64_t)seqs[i], "message %zu: seq %llu, want %d", at + i,
                      (unsigned long long)m->seq, seqs[i]);
        ck_assert_str_eq(m->data, data);
    }
}

/* Freeze the broker until the client gives up on its connection, with the
 * gate shut so that it cannot come back; then thaw it. */
static void drop_connection(rec_t *r)
{
    size_t reconnecting = count_state(r, WSC_RECONNECTING);
    fx.gate_open = false;
    it_broker_pause(&fx.broker);
    want_state_t w = {r, WSC_RECONNECTING, reconnecting + 1, 0};
    bool dropped = tl_run_until(&fx.loop, have_state, &w, WAIT);
    it_broker_resume(&fx.broker);
    ck_assert_msg(dropped, "the client did not notice the frozen broker");
    /* Held back by the gate: an attempt failed for want of a token. */
    wait_state(r, WSC_RECONNECTING, 1, WSC_E_TOKEN, WAIT);
}

/* A subscriber with quick liveness checks and the gate as token_cb. */
static wsc_client_t *gated_subscriber(rec_t *r, const char *topic, char *epoch)
{
    wsc_options_t o;
    options(r, &o);
    o.ping_interval_ms = 150;
    o.ping_timeout_ms = 250;
    o.token_cb = gate_token;
    fx.tokens[0] = "no.auth-needed";
    fx.ntokens = 1;
    fx.gate_open = true;
    wsc_client_t *c = open_client(r, &o);
    ck_assert_int_eq(wsc_subscribe(c, topic, NULL, rec_result_cb, r), WSC_OK);
    ck_assert(rec_wait_results(&fx.loop, r, 1, WAIT));
    ck_assert_int_eq(r->results[0].err, WSC_OK);
    ck_assert(r->results[0].has_seq);
    ck_assert_uint_eq(r->results[0].seq, 0);
    ck_assert(r->results[0].epoch[0] != '\0');
    snprintf(epoch, MSG_EPOCH_MAX + 1, "%.64s", r->results[0].epoch);
    if (fx.tls)
        ck_assert_msg(strncmp(wsc_extensions(c), "permessage-deflate", 18) == 0, "'%s'",
                      wsc_extensions(c));
    return c;
}

START_TEST(missed_messages_are_replayed)
{
    static const char *const args[] = {"--history", "100", NULL};
    rec_t *r = calloc(1, sizeof(*r));
    char epoch[MSG_EPOCH_MAX + 1];
    fx.tls = _i == 1;
    start_at(0, 0, args);
    wsc_client_t *c = gated_subscriber(r, "r.t", epoch);
    wsc_sync_t *p = publisher();
    publish_n(p, "r.t", 1, 3);
    ck_assert(rec_wait_msgs(&fx.loop, r, 3, WAIT));

    drop_connection(r);
    publish_n(p, "r.t", 4, 8); /* missed */
    fx.gate_open = true;
    wait_state(r, WSC_OPEN, 2, 0, WAIT);
    ck_assert(rec_wait_msgs(&fx.loop, r, 8, WAIT));
    publish_n(p, "r.t", 9, 9); /* live */
    ck_assert(rec_wait_msgs(&fx.loop, r, 9, WAIT));
    tl_run_for(&fx.loop, 100);
    static const int seqs[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    expect_seqs(r, 0, "r.t", seqs, 9);
    ck_assert_uint_eq(r->nstale, 0);
    ck_assert_uint_eq(r->nresults, 1); /* the resubscription calls no callback */
    ck_assert_uint_eq(r->nerrors, 0);
    ck_assert_int_ge(fx.token_calls, 3);
    wsc_sync_close(p);
    wsc_close(c);
    free(r);
}
END_TEST

START_TEST(unrecoverable_gaps_are_reported)
{
    static const char *const args[] = {"--history", "3", NULL};
    rec_t *r = calloc(1, sizeof(*r));
    char epoch[MSG_EPOCH_MAX + 1];
    fx.tls = _i == 1;
    start_at(0, 0, args);
    int port = fx.broker.port, tls_port = atoi(strrchr(fx.wss, ':') + 1);
    wsc_client_t *c = gated_subscriber(r, "u.t", epoch);
    wsc_sync_t *p = publisher();
    publish_n(p, "u.t", 1, 3);
    ck_assert(rec_wait_msgs(&fx.loop, r, 3, WAIT));

    /* 4..10 published while away; only 8..10 are still retained. */
    drop_connection(r);
    publish_n(p, "u.t", 4, 10);
    fx.gate_open = true;
    ck_assert(rec_wait_stale(&fx.loop, r, 1, WAIT));
    ck_assert_int_eq(r->stale[0].reason, WSC_STALE_NOT_RECOVERED);
    ck_assert_str_eq(r->stale[0].pattern, "u.t");
    ck_assert_uint_eq(r->stale[0].last_seq, 3);
    ck_assert_uint_eq(r->stale[0].seq, 10);
    ck_assert_str_eq(r->stale[0].old_epoch, epoch);
    ck_assert_str_eq(r->stale[0].epoch, epoch);
    /* What is retained still comes, then live messages. */
    ck_assert(rec_wait_msgs(&fx.loop, r, 6, WAIT));
    publish_n(p, "u.t", 11, 11);
    ck_assert(rec_wait_msgs(&fx.loop, r, 7, WAIT));
    static const int seqs[] = {1, 2, 3, 8, 9, 10, 11};
    expect_seqs(r, 0, "u.t", seqs, 7);
    wsc_sync_close(p);

    /* A broker restarted on the same ports: a new epoch, nothing to replay. */
    it_broker_stop(&fx.broker);
    wait_state(r, WSC_RECONNECTING, count_state(r, WSC_RECONNECTING) + 1, 0, WAIT);
    start_at(port, tls_port, args);
    ck_assert(rec_wait_stale(&fx.loop, r, 2, 10000));
    ck_assert_int_eq(r->stale[1].reason, WSC_STALE_NOT_RECOVERED);
    ck_assert_uint_eq(r->stale[1].last_seq, 11);
    ck_assert_uint_eq(r->stale[1].seq, 0);
    ck_assert_str_eq(r->stale[1].old_epoch, epoch);
    ck_assert_str_ne(r->stale[1].epoch, epoch);
    p = publisher();
    publish_n(p, "u.t", 1, 1);
    ck_assert(rec_wait_msgs(&fx.loop, r, 8, WAIT));
    ck_assert_uint_eq(r->msgs[7].seq, 1);
    wsc_sync_close(p);
    wsc_close(c);
    free(r);
}
END_TEST

START_TEST(blocking_since_and_last)
{
    static const char *const args[] = {"--history", "5", NULL};
    fx.tls = _i == 1;
    start_at(0, 0, args);
    wsc_sync_t *p = publisher();
    publish_n(p, "s.t", 1, 7);
    wsc_sync_t *s = publisher();
    wsc_result_t r;
    wsc_message_t m;
    wsc_sub_opts_t so = WSC_SUB_OPTS_INIT;
    so.last = 2;
    ck_assert_int_eq(wsc_sync_subscribe(s, "s.t", &so, WAIT, &r), WSC_OK);
    ck_assert_uint_eq(r.seq, 7);
    char epoch[MSG_EPOCH_MAX + 1];
    snprintf(epoch, sizeof(epoch), "%s", r.epoch);
    for (uint64_t want = 6; want <= 7; want++) {
        ck_assert_int_eq(wsc_sync_next(s, WAIT, &m), WSC_OK);
        ck_assert_uint_eq(m.seq, want);
    }
    ck_assert_int_eq(wsc_sync_unsubscribe(s, "s.t", WAIT, &r), WSC_OK);

    so = (wsc_sub_opts_t)WSC_SUB_OPTS_INIT;
    so.since = 4;
    so.epoch = epoch;
    ck_assert_int_eq(wsc_sync_subscribe(s, "s.t", &so, WAIT, &r), WSC_OK);
    ck_assert_int_eq(r.recovered, 1);
    for (uint64_t want = 5; want <= 7; want++) {
        ck_assert_int_eq(wsc_sync_next(s, WAIT, &m), WSC_OK);
        ck_assert_uint_eq(m.seq, want);
    }
    ck_assert_int_eq(wsc_sync_unsubscribe(s, "s.t", WAIT, &r), WSC_OK);

    so.since = 1; /* 2 is gone */
    ck_assert_int_eq(wsc_sync_subscribe(s, "s.t", &so, WAIT, &r), WSC_OK);
    ck_assert_int_eq(r.recovered, 0);
    ck_assert_int_eq(wsc_sync_unsubscribe(s, "s.t", WAIT, &r), WSC_OK);
    so.since = 7;
    so.epoch = "another-epoch";
    ck_assert_int_eq(wsc_sync_subscribe(s, "s.t", &so, WAIT, &r), WSC_OK);
    ck_assert_int_eq(r.recovered, 0);
    wsc_sync_close(s);
    wsc_sync_close(p);
}
END_TEST

/* ---- tokens ---- */

static char *mint(const char *secret, const char *ttl)
{
    const char *const args[] = {"--sub",  "tester", "--publish", "auth.>", "--subscribe",
                                "auth.>", "--ttl",  ttl,         NULL};
    return strdup(tl_mint_token(secret, args));
}

START_TEST(tokens_and_token_cb)
{
    static const char *const args[] = {"--auth-secret", SECRET, NULL};
    fx.tls = _i == 1;
    start_at(0, 0, args);
    rec_t *r = calloc(4, sizeof(*r));
    wsc_options_t o;
    wsc_error_t err;

    /* No token: 401 at the upgrade. */
    options(&r[0], &o);
    o.reconnect = false;
    wsc_client_t *c = wsc_connect(&fx.loop, url(), &o, &err);
    ck_assert(tl_run_until(&fx.loop, rec_is_closed, &r[0], WAIT));
    ck_assert_int_eq(r[0].states[0].err, WSC_E_HANDSHAKE);
    ck_assert_msg(strstr(r[0].states[0].detail, "HTTP 401") != NULL, "%s", r[0].states[0].detail);
    wsc_close(c);

    /* A token: what its ACL grants, and forbidden beyond it. */
    char *good = mint(SECRET, "600"), *bad = mint("not-the-secret", "600");
    char *brief = mint(SECRET, "2");
    options(&r[1], &o);
    o.token = good;
    c = open_client(&r[1], &o);
    wsc_subscribe(c, "auth.a", NULL, rec_result_cb, &r[1]);
    wsc_subscribe(c, "other.>", NULL, rec_result_cb, &r[1]);
    wsc_publish(c, "auth.a", "1", 1, rec_result_cb, &r[1]);
    wsc_publish(c, "other.a", "2", 1, rec_result_cb, &r[1]);
    ck_assert(rec_wait_results(&fx.loop, &r[1], 4, WAIT));
    ck_assert_int_eq(r[1].results[0].err, WSC_OK);
    ck_assert_int_eq(r[1].results[1].err, WSC_E_BROKER);
    ck_assert_str_eq(r[1].results[1].code, "forbidden");
    ck_assert_int_eq(r[1].results[2].err, WSC_OK);
    ck_assert_int_eq(r[1].results[3].err, WSC_E_BROKER);
    ck_assert_str_eq(r[1].results[3].code, "forbidden");
    ck_assert(rec_wait_msgs(&fx.loop, &r[1], 1, WAIT));
    ck_assert_str_eq(r[1].msgs[0].topic, "auth.a");

    /* token_cb, asked before each attempt: a badly signed token first (401),
     * then one that expires in 2 s (the broker closes with 1008), then a
     * lasting one; the subscription comes back with it. */
    fx.tokens[0] = bad;
    fx.tokens[1] = brief;
    fx.tokens[2] = good;
    fx.ntokens = 3;
    fx.gate_open = true;
    options(&r[2], &o);
    o.token_cb = gate_token;
    wsc_client_t *t = wsc_connect(&fx.loop, url(), &o, &err);
    ck_assert_msg(t != NULL, "%s", err.text);
    wait_state(&r[2], WSC_OPEN, 1, 0, WAIT);
    ck_assert_int_eq(fx.token_calls, 2);
    ck_assert_int_eq(r[2].states[0].state, WSC_RECONNECTING);
    ck_assert_int_eq(r[2].states[0].err, WSC_E_HANDSHAKE);
    ck_assert_msg(strstr(r[2].states[0].detail, "401") != NULL, "%s", r[2].states[0].detail);
    wsc_subscribe(t, "auth.t", NULL, rec_result_cb, &r[2]);
    ck_assert(rec_wait_results(&fx.loop, &r[2], 1, WAIT));
    ck_assert_int_eq(r[2].results[0].err, WSC_OK);
    wait_state(&r[2], WSC_OPEN, 2, 0, 8000);
    ck_assert_int_eq(fx.token_calls, 3);
    bool expired = false;
    for (size_t i = 0; i < r[2].nstates; i++)
        expired |= strstr(r[2].states[i].detail, "1008 token expired") != NULL;
    ck_assert_msg(expired, "no 'token expired' close seen");
    tl_run_for(&fx.loop, 200); /* the resubscription */
    wsc_publish(c, "auth.t", "\"again\"", 7, rec_result_cb, &r[1]);
    ck_assert(rec_wait_msgs(&fx.loop, &r[2], 1, WAIT));
    ck_assert_str_eq(r[2].msgs[0].data, "\"again\"");
    ck_assert_uint_eq(r[2].nerrors, 0);

    /* The blocking helper passes token_cb on. */
    fx.token_calls = 0;
    fx.tokens[0] = good;
    fx.ntokens = 1;
    options(&r[3], &o);
    o.token_cb = gate_token;
    wsc_sync_t *s = wsc_sync_connect(url(), &o, WAIT, &err);
    ck_assert_msg(s != NULL, "%s", err.text);
    ck_assert_int_eq(fx.token_calls, 1);
    wsc_sync_close(s);

    wsc_close(c);
    wsc_close(t);
    free(good);
    free(bad);
    free(brief);
    free(r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("resume");
    struct {
        const char *name;
        const TTest *test;
    } tests[] = {
        {"missed_messages_are_replayed", missed_messages_are_replayed},
        {"unrecoverable_gaps_are_reported", unrecoverable_gaps_are_reported},
        {"blocking_since_and_last", blocking_since_and_last},
        {"tokens_and_token_cb", tokens_and_token_cb},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 90);
        tcase_add_loop_test(tc, tests[i].test, 0, 2); /* 0: ws://, 1: wss:// + deflate */
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
