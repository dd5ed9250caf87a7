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
