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
#include "registry.h"

typedef struct wrk wrk_t;

typedef struct broker {
    const cfg_t *cfg;
    reg_t *reg;
    wrk_t **workers;
    int nworkers;
    uint64_t start_ns;         /* uv_hrtime() at start */
    _Atomic uint32_t ws_open;  /* WebSocket connections, for --max-connections */
    _Atomic int shutting_down; /* /healthz answers 503, handshakes 503 */
    _Atomic int quiesce_left;  /* workers yet to stop reading (shutdown phase 1) */
    _Atomic int workers_running;
    uv_async_t *main_wake; /* a worker exited; main thread joins */
} broker_t;

/* Begin graceful shutdown (main thread, on SIGTERM/SIGINT). */
void broker_shutdown(broker_t *b);

#endif
