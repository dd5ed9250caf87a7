/*
 * stats.h - per-worker counters and their Prometheus text rendering.
 *
 * Each worker owns one stats_t and is its only writer, so counters are
 * bumped with a relaxed load and store (a plain add on x86, no locked
 * instruction); /metrics, served by any worker, reads them with relaxed
 * loads. Totals are summed at render time.
 */
#ifndef WSBROKER_STATS_H
#define WSBROKER_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATS_CLOSE_CODES 16 /* 1000..1015; one more slot counts the rest */

typedef struct stats {
    _Atomic uint64_t conns_open; /* WebSocket connections open now */
    _Atomic uint64_t conns_total;
    _Atomic uint64_t tcp_open;       /* TCP connections (any state) */
    _Atomic uint64_t conns_refused;  /* at accept: connection limit or memory */
    _Atomic uint64_t refused_per_ip; /* of those: --max-connections-per-ip */
    _Atomic uint64_t auth_failures;  /* handshakes refused with 401 */
    _Atomic uint64_t forbidden;      /* operations outside the token's ACL */
    _Atomic uint64_t tokens_expired; /* connections closed: token expired */
    _Atomic uint64_t tls_handshakes; /* TLS handshakes completed */
    _Atomic uint64_t tls_failures;   /* TLS connections dropped for an error */
    _Atomic uint64_t tls_timeouts;   /* TLS handshakes not done in time */
    _Atomic uint64_t rate_limited;   /* publishes refused by --rate-limit */
    _Atomic uint64_t rate_closes;    /* connections closed for exceeding it */
    _Atomic uint64_t accept_pauses;  /* accepting paused: out of descriptors */
    _Atomic uint64_t accept_errors;
    _Atomic uint64_t http_requests;
    _Atomic uint64_t handshake_rejects;
    _Atomic uint64_t handshake_timeouts;
    _Atomic uint64_t message_timeouts;
    _Atomic uint64_t published;
    _Atomic uint64_t publish_throttles; /* publishers held back by full inboxes */
    _Atomic uint64_t delivered;
    _Atomic uint64_t flush_pauses; /* turns that paused before more of a backlog */
    _Atomic uint64_t replayed;     /* retained messages sent for last/since */
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    _Atomic uint64_t slow_closes;
    _Atomic uint64_t slow_drops;
    _Atomic uint64_t subscriptions; /* live subscriptions */
    _Atomic uint64_t closes_sent[STATS_CLOSE_CODES + 1];
    _Atomic uint64_t closes_received[STATS_CLOSE_CODES + 1];
    _Atomic uint64_t ping_timeouts;
} stats_t;

#define STAT_ADD(s, field, n)                                                                      \
    atomic_store_explicit(&(s)->field,                                                             \
                          atomic_load_explicit(&(s)->field, memory_order_relaxed) + (n),           \
                          memory_order_relaxed)
#define STAT_SUB(s, field, n) STAT_ADD(s, field, -(uint64_t)(n))

/* Count a close code the broker sent or received (codes outside 1000..1015,
 * and Close frames without a code, are counted as code="other"). */
void stats_close_sent(stats_t *s, uint16_t code);
void stats_close_received(stats_t *s, uint16_t code);

/* Figures that are not per worker. */
typedef struct stats_global {
    uint64_t topics, topics_evicted, retained;
    uint64_t log_dropped;
    double uptime_s;
    bool cluster; /* cluster mode: the Redis link's figures follow */
    uint64_t redis_up, redis_connects, redis_errors, redis_messages;
} stats_global_t;

/* Render the Prometheus exposition of n workers' stats and the global
 * figures into a malloc'd NUL-terminated buffer (caller frees). NULL on
 * ENOMEM. */
char *stats_render(stats_t *const *workers, int n, const stats_global_t *g, size_t *len);

#endif
