/*
 * tutil.h - helpers for the client tests: bounded runs of a libuv loop, and
 * a recorder that collects everything a client reports. The broker process
 * (start on a free loopback port, stop, kill, pause) and the clock come
 * from the integration harness (tests/integration/harness.h).
 *
 * Every wait is bounded.
 */
#ifndef WSBROKER_TEST_CLIENTS_TUTIL_H
#define WSBROKER_TEST_CLIENTS_TUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsbroker/client.h>

#include "harness.h"

/* ---- loops ---- */

typedef bool (*tl_cond_fn)(void *arg);

/* Run loop until cond(arg) holds, at most timeout_ms. Returns cond(arg). */
bool tl_run_until(uv_loop_t *loop, tl_cond_fn cond, void *arg, int timeout_ms);

/* Run loop for ms milliseconds. */
void tl_run_for(uv_loop_t *loop, int ms);

/* Close every handle left on loop (wsc_close must have been called) and
 * run it until it is empty; fails if that takes more than 5 s. */
bool tl_drain(uv_loop_t *loop);

/* ---- certificates (tests/clients/make_certs.sh) ---- */

typedef struct tl_certs {
    char dir[64];
    char ca[96];                        /* the test CA */
    char cert[96], key[96];             /* signed by it: localhost, 127.0.0.1 */
    char other_cert[96], other_key[96]; /* signed by it: other.invalid only */
    char self_cert[96], self_key[96];   /* self-signed: localhost, 127.0.0.1 */
} tl_certs_t;

/* Make them in a new temporary directory (fails the test if it cannot). */
void tl_make_certs(tl_certs_t *t);
/* Delete the directory. */
void tl_remove_certs(tl_certs_t *t);

/* Start a broker (one worker, warnings only) with a TLS listener beside its
 * plain one, using cert and key, plus args (NULL-terminated, may be NULL).
 * The ports are free ones, or port and tls_port when not 0 (a broker
 * started again where clients will reconnect). Returns the TLS port; url
 * receives "wss://127.0.0.1:PORT/ws". */
int tl_start_tls_broker_at(it_broker_t *b, int port, int tls_port, const char *cert,
                           const char *key, const char *const *args, char *url, size_t cap);
#define tl_start_tls_broker(b, cert, key, args, url, cap)                                          \
    tl_start_tls_broker_at((b), 0, 0, (cert), (key), (args), (url), (cap))

/* Run `wsbroker token --secret secret args...` and return its token in a
 * static buffer (fails the test if it does not print one). */
const char *tl_mint_token(const char *secret, const char *const *args);

/* ---- a recorder of client events ---- */

#define REC_MAX 256

typedef struct rec_msg {
    char topic[256];
    uint64_t seq;
    char data[512];
    char raw[768];
} rec_msg_t;

typedef struct rec_result {
    int err;
    char code[32];
    char message[256];
    char topic[256];
    bool has_seq;
    uint64_t seq;
    char epoch[72];
    int recovered;
} rec_result_t;

typedef struct rec_state {
    wsc_state_t state;
    int err;
    char detail[320];
} rec_state_t;

typedef struct rec_stale {
    wsc_stale_reason_t reason;
    char pattern[256];
    uint64_t last_seq, seq;
    char old_epoch[72], epoch[72];
} rec_stale_t;

typedef struct rec {
    rec_msg_t msgs[REC_MAX];
    size_t nmsgs;       /* recorded (at most REC_MAX) */
    size_t nmsgs_total; /* received */
    rec_result_t results[REC_MAX];
    size_t nresults;
    rec_state_t states[REC_MAX];
    size_t nstates;
    rec_stale_t stale[REC_MAX];
    size_t nstale;
    rec_result_t errors[REC_MAX];
    size_t nerrors;
} rec_t;

/* Options with every callback pointing at the recorder, fast reconnects
 * (backoff 20..200 ms) and connect timeout 3 s. */
void rec_options(rec_t *r, wsc_options_t *o);

/* A wsc_result_cb recording into the rec_t given as user. */
void rec_result_cb(wsc_client_t *c, const wsc_result_t *res, void *user);

/* Conditions for tl_run_until; arg is the rec_t. */
bool rec_is_open(void *r);
bool rec_not_open(void *r);
bool rec_is_closed(void *r);

/* Wait helpers: run until the recorder has at least n of something. */
bool rec_wait_msgs(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms);
bool rec_wait_results(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms);
bool rec_wait_states(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms);
bool rec_wait_stale(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms);

/* The last recorded state, or 0. */
wsc_state_t rec_last_state(const rec_t *r);

#endif
