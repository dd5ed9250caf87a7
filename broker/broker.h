/*
 * broker.h - process-wide state shared by the workers: the frozen
 * configuration, the topic registry and the shutdown protocol. Everything
 * here is either read-only after start or atomic.
 */
#ifndef WSBROKER_BROKER_H
#define WSBROKER_BROKER_H

#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "limit.h"
#include "registry.h"

typedef struct wrk wrk_t;

typedef struct broker {
    const cfg_t *cfg;
    reg_t *reg;
    wrk_t **workers;
    int nworkers;
    uint64_t start_ns;          /* uv_hrtime() at start */
    uint32_t conn_limit;        /* TCP connections at once: --max-connections
                                 * capped by the descriptor budget */
    _Atomic uint32_t tcp_conns; /* accepted TCP connections, any state */
    _Atomic uint64_t congested; /* bit w: worker w's inbox is over its limit */
    lim_ips_t *ips;             /* --max-connections-per-ip, or NULL */
    struct tls_server *tls;     /* --tls-port's server context, or NULL */
    struct cluster *cluster;    /* --redis link, or NULL (one node) */
    _Atomic int shutting_down;  /* /healthz answers 503, handshakes 503 */
    _Atomic int quiesce_left;   /* workers yet to stop reading (shutdown phase 1) */
    _Atomic int workers_running;
} broker_t;

/* Begin graceful shutdown (main thread, on SIGTERM/SIGINT). */
void broker_shutdown(broker_t *b);

#endif
