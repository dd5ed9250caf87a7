/*
 * tutil.c - see tutil.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tutil.h"

/* ---- loops ---- */

typedef struct tl_wait {
    bool expired;
} tl_wait_t;

static void on_expire(uv_timer_t *t)
{
    ((tl_wait_t *)t->data)->expired = true;
    uv_stop(t->loop);
}

bool tl_run_until(uv_loop_t *loop, tl_cond_fn cond, void *arg, int timeout_ms)
{
    uv_timer_t t;
    tl_wait_t w = {false};
    if (cond(arg))
        return true;
    /* The loop's clock stood still while the test blocked (starting or
     * stopping a broker): without this the wait could end at once. */
    uv_update_time(loop);
    uv_timer_init(loop, &t);
    t.data = &w;
    uv_timer_start(&t, on_expire, (uint64_t)timeout_ms, 0);
    while (!w.expired && !cond(arg))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void tl_run_for(uv_loop_t *loop, int ms)
{
    tl_run_until(loop, never, NULL, ms);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static bool loop_empty(void *arg)
{
    return !uv_loop_alive((uv_loop_t *)arg);
}

bool tl_drain(uv_loop_t *loop)
{
    int64_t deadline = it_now_ms() + 5000;
    while (uv_loop_alive(loop) && it_now_ms() < deadline)
        uv_run(loop, UV_RUN_NOWAIT), it_sleep_ms(1);
    bool clean = loop_empty(loop);
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return clean;
}

/* ---- certificates, TLS brokers, tokens ---- */

void tl_make_certs(tl_certs_t *t)
{
    char cmd[256];
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "/tmp/wsc-certs-XXXXXX");
    IT_ASSERT(mkdtemp(t->dir) != NULL, "mkdtemp failed");
    snprintf(cmd, sizeof(cmd), "bash '%s' '%s'", WSC_MAKE_CERTS, t->dir);
    IT_ASSERT(system(cmd) == 0, "%s failed (is the openssl command installed?)", cmd);
    snprintf(t->ca, sizeof(t->ca), "%s/ca.pem", t->dir);
    snprintf(t->cert, sizeof(t->cert), "%s/server.pem", t->dir);
    snprintf(t->key, sizeof(t->key), "%s/server.key", t->dir);
    snprintf(t->other_cert, sizeof(t->other_cert), "%s/other.pem", t->dir);
    snprintf(t->other_key, sizeof(t->other_key), "%s/other.key", t->dir);
    snprintf(t->self_cert, sizeof(t->self_cert), "%s/self.pem", t->dir);
    snprintf(t->self_key, sizeof(t->self_key), "%s/self.key", t->dir);
}

void tl_remove_certs(tl_certs_t *t)
{
    char cmd[128];
    if (t->dir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", t->dir);
    t->dir[0] = '\0';
}

int tl_start_tls_broker_at(it_broker_t *b, int port_, int tls_port, const char *cert,
                           const char *key, const char *const *args, char *url, size_t cap)
{
    const char *argv[40] = {"--workers", "1",         "--log-level", "warn",      "--tls-cert",
                            cert,        "--tls-key", key,           "--tls-port"};
    char port[16];
    size_t k = 9;
    if (tls_port == 0)
        tls_port = it_free_port();
    snprintf(port, sizeof(port), "%d", tls_port);
    argv[k++] = port;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        IT_ASSERT(k < sizeof(argv) / sizeof(argv[0]) - 1, "too many broker arguments");
        argv[k++] = args[i];
    }
    argv[k] = NULL;
    if (port_ > 0)
        it_broker_start_port(b, port_, argv, NULL);
    else
        it_broker_start_env(b, argv, NULL);
    snprintf(url, cap, "wss://127.0.0.1:%d/ws", tls_port);
    return tls_port;
}

const char *tl_mint_token(const char *secret, const char *const *args)
{
    static char out[4096];
    char err[512];
    const char *argv[32] = {"token", "--secret", secret};
    size_t k = 3;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        IT_ASSERT(k < sizeof(argv) / sizeof(argv[0]) - 1, "too many token arguments");
        argv[k++] = args[i];
    }
    argv[k] = NULL;
    int st = it_run(argv, NULL, out, sizeof(out), err, sizeof(err), 10000);
    IT_ASSERT(st == 0, "wsbroker token exited %d: %s", st, err);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    IT_ASSERT(n > 20 && strchr(out, '.') != NULL, "wsbroker token printed '%s'", out);
    return out;
}

/* ---- recorder ---- */

static void copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void on_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nstates < REC_MAX) {
        rec_state_t *s = &r->states[r->nstates++];
        s->state = st;
        s->err = err;
        copy(s->detail, sizeof(s->detail), detail, strlen(detail));
    }
}

static void on_message(wsc_client_t *c, const wsc_message_t *m, void *user)
{
    rec_t *r = user;
    (void)c;
    r->nmsgs_total++;
    if (r->nmsgs < REC_MAX) {
        rec_msg_t *x = &r->msgs[r->nmsgs++];
        copy(x->topic, sizeof(x->topic), m->topic, strlen(m->topic));
        x->seq = m->seq;
        copy(x->data, sizeof(x->data), m->data, m->data_len);
        copy(x->raw, sizeof(x->raw), m->raw, m->raw_len);
    }
}

static void fill_result(rec_result_t *x, const wsc_result_t *res)
{
    x->err = res->err;
    copy(x->code, sizeof(x->code), res->code, strlen(res->code));
    copy(x->message, sizeof(x->message), res->message, strlen(res->message));
    copy(x->topic, sizeof(x->topic), res->topic, strlen(res->topic));
    x->has_seq = res->has_seq;
    x->seq = res->seq;
    copy(x->epoch, sizeof(x->epoch), res->epoch, strlen(res->epoch));
    x->recovered = res->recovered;
}

void rec_result_cb(wsc_client_t *c, const wsc_result_t *res, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nresults < REC_MAX)
        fill_result(&r->results[r->nresults++], res);
}

static void on_error(wsc_client_t *c, const wsc_result_t *res, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nerrors < REC_MAX)
        fill_result(&r->errors[r->nerrors++], res);
}

static void on_stale(wsc_client_t *c, const wsc_stale_t *s, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nstale < REC_MAX) {
        rec_stale_t *x = &r->stale[r->nstale++];
        x->reason = s->reason;
        copy(x->pattern, sizeof(x->pattern), s->pattern, strlen(s->pattern));
        x->last_seq = s->last_seq;
        x->seq = s->seq;
        copy(x->old_epoch, sizeof(x->old_epoch), s->old_epoch, strlen(s->old_epoch));
        copy(x->epoch, sizeof(x->epoch), s->epoch, strlen(s->epoch));
    }
}

void rec_options(rec_t *r, wsc_options_t *o)
{
    wsc_options_init(o);
    o->backoff_min_ms = 20;
    o->backoff_max_ms = 200;
    o->connect_timeout_ms = 3000;
    o->on_state = on_state;
    o->on_message = on_message;
    o->on_error = on_error;
    o->on_stale = on_stale;
    o->user = r;
}

wsc_state_t rec_last_state(const rec_t *r)
{
    return r->nstates > 0 ? r->states[r->nstates - 1].state : 0;
}

bool rec_is_open(void *r)
{
    return rec_last_state(r) == WSC_OPEN;
}

bool rec_not_open(void *r)
{
    wsc_state_t s = rec_last_state(r);
    return s == WSC_RECONNECTING || s == WSC_CLOSED;
}

bool rec_is_closed(void *r)
{
    return rec_last_state(r) == WSC_CLOSED;
}

typedef struct count_wait {
    const size_t *have;
    size_t want;
} count_wait_t;

static bool have_count(void *arg)
{
    count_wait_t *w = arg;
    return *w->have >= w->want;
}

static bool wait_count(uv_loop_t *loop, const size_t *have, size_t n, int timeout_ms)
{
    count_wait_t w = {have, n};
    return tl_run_until(loop, have_count, &w, timeout_ms);
}

bool rec_wait_msgs(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nmsgs, n, timeout_ms);
}

bool rec_wait_results(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nresults, n, timeout_ms);
}

bool rec_wait_states(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nstates, n, timeout_ms);
}

bool rec_wait_stale(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nstale, n, timeout_ms);
}
