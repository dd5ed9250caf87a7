/*
 * main.c - wsbroker: parse the configuration, open one SO_REUSEPORT
 * listener per worker, start the worker threads, and turn SIGTERM/SIGINT
 * into a graceful shutdown. The main thread only waits for signals and
 * joins the workers; it never touches a connection.
 */
#include <pthread.h>
#include <signal.h>
#include <time.h>
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

void broker_shutdown(broker_t *b)
{
    if (atomic_exchange(&b->shutting_down, 1))
        return;
    atomic_store(&b->quiesce_left, b->nworkers);
    for (int i = 0; i < b->nworkers; i++)
        wrk_command(b->workers[i], 1);
}

/* Wait for SIGTERM/SIGINT (blocked in every thread, so they stay pending
 * until taken here, synchronously: no handler runs on a worker thread) and
 * for the workers to finish after a shutdown. A second signal, or workers
 * still running long after --close-timeout, ends the process at once. */
static void supervise(broker_t *b, const sigset_t *signals)
{
    int received = 0;
    uint64_t deadline = 0;
    while (atomic_load(&b->workers_running) > 0) {
        struct timespec wait = {received ? 0 : 1, received ? 20000000 : 0};
        int sig = sigtimedwait(signals, NULL, &wait);
        if (sig > 0 && ++received == 1) {
            LOG(LOG_INFO, -1, 0, "shutdown", "signal=%d close_timeout=%g", sig,
                b->cfg->close_timeout);
            broker_shutdown(b);
            deadline = uv_hrtime() + (uint64_t)((b->cfg->close_timeout + 5) * 1e9);
        } else if (sig > 0) {
            LOG(LOG_WARN, -1, 0, "shutdown_forced", "signal=%d", sig);
            _exit(1);
        }
        if (deadline != 0 && uv_hrtime() > deadline) {
            LOG(LOG_ERROR, -1, 0, "shutdown_stuck", "action=exit");
            _exit(1);
        }
    }
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

    /* Blocked before any thread starts, so every thread inherits it. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    broker_t b = {.cfg = &cfg, .nworkers = cfg.workers, .start_ns = uv_hrtime()};
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
    atomic_store(&b.workers_running, cfg.workers);
    for (int i = 0; i < cfg.workers; i++) {
        if (wrk_start(b.workers[i]) != 0) {
            fprintf(stderr, "wsbroker: worker %d failed to start\n", i);
            return 1;
        }
    }
    LOG(LOG_INFO, -1, 0, "listening",
        "bind=%s port=%d workers=%d version=%s epoch=%s echo=%s web=%s", cfg.bind, cfg.port,
        cfg.workers, WSBROKER_VERSION, reg_epoch(b.reg), cfg.echo ? "on" : "off",
        !cfg.web       ? "off"
        : cfg.web_root ? cfg.web_root
                       : "built-in");

    supervise(&b, &signals);

    for (int i = 0; i < cfg.workers; i++)
        wrk_join(b.workers[i]);
    for (int i = 0; i < cfg.workers; i++)
        wrk_free(b.workers[i]);
    free(b.workers);
    reg_free(b.reg);
    LOG(LOG_INFO, -1, 0, "stopped", NULL);
    cfg_free(&cfg);
    return 0;
}
