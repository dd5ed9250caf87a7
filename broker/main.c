/*
 * main.c - wsbroker: parse the configuration, open one SO_REUSEPORT
 * listener per worker, start the worker threads, and turn SIGTERM/SIGINT
 * into a graceful shutdown. The main thread runs a tiny loop of its own for
 * signals and for joining the workers; it never touches a connection.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "broker.h"
#include "config.h"
#include "log.h"
#include "registry.h"
#include "worker.h"

typedef struct mainctx {
    broker_t *b;
    uv_signal_t sigterm, sigint;
    uv_async_t wake;
    uv_timer_t watchdog;
    int signals;
} mainctx_t;

void broker_shutdown(broker_t *b)
{
    if (atomic_exchange(&b->shutting_down, 1))
        return;
    atomic_store(&b->quiesce_left, b->nworkers);
    for (int i = 0; i < b->nworkers; i++)
        wrk_command(b->workers[i], 1);
}

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    LOG(LOG_ERROR, -1, 0, "shutdown_stuck", "action=exit");
    _exit(1);
}

static void on_signal(uv_signal_t *s, int signum)
{
    mainctx_t *m = s->data;
    if (++m->signals > 1) {
        LOG(LOG_WARN, -1, 0, "shutdown_forced", "signal=%d", signum);
        _exit(1);
    }
    LOG(LOG_INFO, -1, 0, "shutdown", "signal=%d close_timeout=%g", signum,
        m->b->cfg->close_timeout);
    broker_shutdown(m->b);
    /* Workers bound every wait by --close-timeout; this only guards
     * against a bug keeping the process alive. */
    uv_timer_start(&m->watchdog, on_watchdog, (uint64_t)(m->b->cfg->close_timeout * 1000) + 5000,
                   0);
}

static void on_worker_exit(uv_async_t *a)
{
    mainctx_t *m = a->data;
    if (atomic_load(&m->b->workers_running) > 0)
        return;
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->wake, NULL);
    uv_close((uv_handle_t *)&m->watchdog, NULL);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    cfg_t cfg;
    int rc = cfg_load(&cfg, argc, argv);
    if (rc != 0) {
        cfg_free(&cfg);
        return rc == 1 ? 0 : 2;
    }
    log_min_level = (log_level_t)cfg.log_level;
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    broker_t b = {.cfg = &cfg, .nworkers = cfg.workers, .start_ns = uv_hrtime()};
    mainctx_t m = {.b = &b};
    uv_loop_t *loop = uv_default_loop();
    uv_async_init(loop, &m.wake, on_worker_exit);
    m.wake.data = &m;
    b.main_wake = &m.wake;
    b.reg = reg_new(cfg.workers, wrk_post, &b);
    b.workers = calloc((size_t)cfg.workers, sizeof(*b.workers));
    if (b.reg == NULL || b.workers == NULL) {
        LOG(LOG_ERROR, -1, 0, "startup_failed", "error=ENOMEM");
        return 1;
    }
    for (int i = 0; i < cfg.workers; i++) {
        b.workers[i] = wrk_new(&b, i);
        if (b.workers[i] == NULL) {
            fprintf(stderr, "wsbroker: cannot listen on %s port %d (see the log above)\n", cfg.bind,
                    cfg.port);
            return 1;
        }
    }
    uv_signal_init(loop, &m.sigterm);
    uv_signal_init(loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_timer_init(loop, &m.watchdog);
    atomic_store(&b.workers_running, cfg.workers);
    for (int i = 0; i < cfg.workers; i++) {
        if (wrk_start(b.workers[i]) != 0) {
            fprintf(stderr, "wsbroker: worker %d failed to start\n", i);
            return 1;
        }
    }
    LOG(LOG_INFO, -1, 0, "listening",
        "bind=%s port=%d workers=%d version=%s epoch=%s echo=%s web_root=%s", cfg.bind, cfg.port,
        cfg.workers, WSBROKER_VERSION, reg_epoch(b.reg), cfg.echo ? "on" : "off",
        cfg.web_root ? cfg.web_root : "-");

    uv_run(loop, UV_RUN_DEFAULT);

    for (int i = 0; i < cfg.workers; i++)
        wrk_join(b.workers[i]);
    for (int i = 0; i < cfg.workers; i++)
        wrk_free(b.workers[i]);
    free(b.workers);
    reg_free(b.reg);
    uv_loop_close(loop);
    LOG(LOG_INFO, -1, 0, "stopped", NULL);
    cfg_free(&cfg);
    return 0;
}
