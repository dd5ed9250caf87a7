/*
 * main.c - wsbroker: parse the configuration, open one SO_REUSEPORT
 * listener per worker, start the worker threads, and turn SIGTERM/SIGINT
 * into a graceful shutdown. The main thread only waits for signals and
 * joins the workers; it never touches a connection.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "broker.h"
#include "cluster.h"
#include "config.h"
#include "log.h"
#include "registry.h"
#include "smap.h"
#include "tls.h"
#include "token.h"
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
        if (sig == SIGHUP) {
            tls_server_reload(b);
            continue;
        }
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

/* Raise the soft descriptor limit to the hard one; returns the limit. */
static uint64_t raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT32_MAX : (uint64_t)rl.rlim_cur;
}

/* Descriptors open now (-1 if /proc is not there). */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    while (readdir(d) != NULL)
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* How many connections may be open at once: --max-connections, capped so
 * that accepting never runs the process out of descriptors. Past the cap a
 * new connection is accepted and answered 503, which needs the descriptor
 * it arrives on; what each worker opens after this point (its wake-up and
 * timer descriptors) and a few for the web root's files are kept back. */
static int connection_limit(const cfg_t *cfg, uint64_t fd_limit)
{
    int used = open_fds();
    if (used < 0)
        used = 16;
    int64_t budget = (int64_t)fd_limit - used - 2 * cfg->workers - 8;
    if (budget < 1) {
        fprintf(stderr,
                "wsbroker: the file descriptor limit (%llu) leaves no room for connections "
                "with %d workers; raise it (ulimit -n) or use fewer --workers\n",
                (unsigned long long)fd_limit, cfg->workers);
        return -1;
    }
    if (budget > UINT32_MAX)
        budget = UINT32_MAX;
    if (cfg->max_connections > 0 && cfg->max_connections < budget)
        budget = cfg->max_connections;
    else if (cfg->max_connections > budget)
        LOG(LOG_WARN, -1, 0, "max_connections_capped", "requested=%u limit=%lld fd_limit=%llu",
            cfg->max_connections, (long long)budget, (unsigned long long)fd_limit);
    return (int)budget;
}

int main(int argc, char **argv)
{
    /* `wsbroker token ...`, or the same program run as wsbroker-token. */
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (strcmp(name, "wsbroker-token") == 0)
        return token_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "token") == 0)
        return token_main(argc - 1, argv + 1);
    cfg_t cfg;
    int rc = cfg_load(&cfg, argc, argv);
    if (rc != 0) {
        cfg_free(&cfg);
        return rc == 1 ? 0 : 2;
    }
    log_min_level = (log_level_t)cfg.log_level;
    signal(SIGPIPE, SIG_IGN);
    uint64_t fd_limit = raise_fd_limit();

    /* Blocked before any thread starts, so every thread inherits it. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    uint8_t key[16];
    if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
        fprintf(stderr, "wsbroker: no random bytes for the hash key (getrandom failed)\n");
        return 1;
    }
    smap_seed(key);

    broker_t b = {.cfg = &cfg, .nworkers = cfg.workers, .start_ns = uv_hrtime()};
    if (cfg.redis != NULL) {
        const char *err = NULL;
        b.cluster = cl_new(&b, cfg.redis, &err);
        if (b.cluster == NULL) {
            fprintf(stderr, "wsbroker: invalid value '%s' for --redis: %s\n", cfg.redis, err);
            return 2;
        }
    }
    reg_cfg_t regcfg = {.nworkers = cfg.workers,
                        .on_interest = b.cluster ? cl_interest : NULL,
                        .on_interest_arg = b.cluster,
                        .history = cfg.history,
                        .history_ttl_ms = (uint64_t)(cfg.history_ttl * 1000.0 + 0.5),
                        .max_topics = cfg.max_topics};
    b.reg = reg_new(&regcfg, wrk_post, &b);
    b.workers = calloc((size_t)cfg.workers, sizeof(*b.workers));
    if (b.reg == NULL || b.workers == NULL) {
        LOG(LOG_ERROR, -1, 0, "startup_failed", "error=ENOMEM");
        return 1;
    }
    for (int i = 0; i < cfg.workers; i++) {
        b.workers[i] = wrk_new(&b, i);
        if (b.workers[i] == NULL) {
            fprintf(stderr, "wsbroker: cannot listen on %s (see the log above)\n", cfg.bind);
            return 1;
        }
    }
    if (cfg.max_conns_per_ip > 0 && (b.ips = lim_ips_new(cfg.max_conns_per_ip)) == NULL) {
        LOG(LOG_ERROR, -1, 0, "startup_failed", "error=ENOMEM");
        return 1;
    }
    if (tls_server_init(&b) != 0)
        return 2;
    int limit = connection_limit(&cfg, fd_limit);
    if (limit < 0)
        return 2;
    b.conn_limit = (uint32_t)limit;
    if (log_start() != 0) {
        fprintf(stderr, "wsbroker: cannot start the log thread\n");
        return 1;
    }
    atomic_store(&b.workers_running, cfg.workers);
    for (int i = 0; i < cfg.workers; i++) {
        if (wrk_start(b.workers[i]) != 0) {
            fprintf(stderr, "wsbroker: worker %d failed to start\n", i);
            return 1;
        }
    }
    if (b.cluster != NULL && cl_start(b.cluster) != 0) {
        fprintf(stderr, "wsbroker: cannot start the cluster link\n");
        return 1;
    }
    LOG(LOG_INFO, -1, 0, "listening",
        "bind=%s port=%d tls_port=%d workers=%d max_connections=%u version=%s epoch=%s echo=%s "
        "web=%s",
        cfg.bind, cfg.port, cfg.tls_port, cfg.workers, b.conn_limit, WSBROKER_VERSION,
        reg_epoch(b.reg), cfg.echo ? "on" : "off",
        !cfg.web       ? "off"
        : cfg.web_root ? cfg.web_root
                       : "built-in");

    supervise(&b, &signals);

    for (int i = 0; i < cfg.workers; i++)
        wrk_join(b.workers[i]);
    for (int i = 0; i < cfg.workers; i++)
        wrk_free(b.workers[i]);
    free(b.workers);
    cl_free(b.cluster);
    reg_free(b.reg);
    lim_ips_free(b.ips);
    tls_server_free(&b);
    LOG(LOG_INFO, -1, 0, "stopped", NULL);
    log_stop();
    cfg_free(&cfg);
    return 0;
}
