/*
 * stats.c - counters and /metrics rendering (see stats.h).
 */
#include "stats.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned close_slot(uint16_t code)
{
    return code >= 1000 && code < 1000 + STATS_CLOSE_CODES ? code - 1000u : STATS_CLOSE_CODES;
}

void stats_close_sent(stats_t *s, uint16_t code)
{
    STAT_ADD(s, closes_sent[close_slot(code)], 1);
}

void stats_close_received(stats_t *s, uint16_t code)
{
    STAT_ADD(s, closes_received[close_slot(code)], 1);
}

typedef struct out {
    char *buf;
    size_t len, cap;
    int failed;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out_t *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = (o->cap + (size_t)n) * 2;
        char *nb = realloc(o->buf, ncap);
        if (nb == NULL) {
            o->failed = 1;
            return;
        }
        o->buf = nb;
        o->cap = ncap;
    }
}

#define LOAD(p) atomic_load_explicit(&(p), memory_order_relaxed)

typedef struct metric {
    const char *name;
    const char *type;
    const char *help;
    size_t offset;
} metric_t;

#define M(field, name, type, help)                                                                 \
    {                                                                                              \
        name, type, help, offsetof(stats_t, field)                                                 \
    }

static const metric_t metrics[] = {
    M(conns_open, "wsbroker_connections_open", "gauge", "WebSocket connections open now."),
    M(conns_total, "wsbroker_connections_total", "counter",
      "WebSocket connections accepted (handshake completed)."),
    M(tcp_open, "wsbroker_tcp_connections_open", "gauge",
      "TCP connections open now, in any state."),
    M(conns_refused, "wsbroker_connections_refused_total", "counter",
      "TCP connections answered 503 at accept (connection limit, shutdown or memory)."),
    M(refused_per_ip, "wsbroker_connections_refused_per_ip_total", "counter",
      "Connections answered 503 by --max-connections-per-ip (also in refused_total)."),
    M(auth_failures, "wsbroker_auth_failures_total", "counter",
      "/ws handshakes refused with 401: missing, malformed, badly signed or expired token."),
    M(forbidden, "wsbroker_forbidden_total", "counter",
      "Publishes and subscribes refused by the token's ACL."),
    M(tokens_expired, "wsbroker_tokens_expired_total", "counter",
      "Connections closed (1008) because their token expired."),
    M(tls_handshakes, "wsbroker_tls_handshakes_total", "counter", "TLS handshakes completed."),
    M(tls_failures, "wsbroker_tls_failures_total", "counter",
      "TLS connections dropped for a TLS error (plain HTTP or garbage on the TLS port, bad or "
      "truncated handshakes, refused client certificates)."),
    M(tls_timeouts, "wsbroker_tls_handshake_timeouts_total", "counter",
      "TLS connections dropped for not completing their handshake in time."),
    M(rate_limited, "wsbroker_rate_limited_total", "counter", "Publishes refused by --rate-limit."),
    M(rate_closes, "wsbroker_rate_limit_closes_total", "counter",
      "Connections closed (1008) for exceeding --rate-limit for 5 s."),
    M(accept_pauses, "wsbroker_accept_pauses_total", "counter",
      "Times accepting paused because the process ran out of file descriptors."),
    M(accept_errors, "wsbroker_accept_errors_total", "counter", "Other accept() failures."),
    M(http_requests, "wsbroker_http_requests_total", "counter", "Plain HTTP requests answered."),
    M(handshake_rejects, "wsbroker_handshake_rejects_total", "counter",
      "Upgrade requests answered with an HTTP error."),
    M(handshake_timeouts, "wsbroker_handshake_timeouts_total", "counter",
      "Connections closed (408) for not completing their HTTP request in time."),
    M(message_timeouts, "wsbroker_message_timeouts_total", "counter",
      "Connections closed (1008) for not completing a started message in time."),
    M(published, "wsbroker_messages_published_total", "counter", "Publish requests accepted."),
    M(publish_throttles, "wsbroker_publish_throttles_total", "counter",
      "Times a publisher's input was held back because a worker's inbox was full."),
    M(delivered, "wsbroker_messages_delivered_total", "counter", "Messages queued to subscribers."),
    M(flush_pauses, "wsbroker_flush_pauses_total", "counter",
      "Loop turns that waited up to 1 ms before writing more of a backlog, the worker's CPU "
      "being shared."),
    M(replayed, "wsbroker_messages_replayed_total", "counter",
      "Retained messages queued to subscribers for last/since."),
    M(bytes_in, "wsbroker_bytes_received_total", "counter", "Bytes read from clients."),
    M(bytes_out, "wsbroker_bytes_sent_total", "counter", "Bytes written to clients."),
    M(slow_closes, "wsbroker_slow_consumer_closes_total", "counter",
      "Connections closed by the slow-consumer policy."),
    M(slow_drops, "wsbroker_slow_consumer_drops_total", "counter",
      "Messages skipped by the slow-consumer drop policy."),
    M(subscriptions, "wsbroker_subscriptions", "gauge", "Live subscriptions."),
    M(ping_timeouts, "wsbroker_ping_timeouts_total", "counter",
      "Connections closed for not answering a Ping."),
};

static uint64_t field(const stats_t *s, size_t offset)
{
    return LOAD(*(_Atomic uint64_t *)((char *)s + offset));
}

char *stats_render(stats_t *const *workers, int n, const stats_global_t *g, size_t *len)
{
    out_t o = {malloc(8192), 0, 8192, 0};
    if (o.buf == NULL)
        return NULL;
    for (size_t m = 0; m < sizeof(metrics) / sizeof(metrics[0]); m++) {
        uint64_t total = 0;
        for (int w = 0; w < n; w++)
            total += field(workers[w], metrics[m].offset);
        put(&o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", metrics[m].name, metrics[m].help,
            metrics[m].name, metrics[m].type, metrics[m].name, (unsigned long long)total);
    }
    static const char *const dirs[2] = {"sent", "received"};
    for (int d = 0; d < 2; d++) {
        put(&o,
            "# HELP wsbroker_close_frames_%s_total Close frames %s, by status code.\n"
            "# TYPE wsbroker_close_frames_%s_total counter\n",
            dirs[d], dirs[d], dirs[d]);
        for (int c = 0; c <= STATS_CLOSE_CODES; c++) {
            uint64_t total = 0;
            for (int w = 0; w < n; w++)
                total += d == 0 ? LOAD(workers[w]->closes_sent[c])
                                : LOAD(workers[w]->closes_received[c]);
            if (total == 0)
                continue;
            if (c == STATS_CLOSE_CODES)
                put(&o, "wsbroker_close_frames_%s_total{code=\"other\"} %llu\n", dirs[d],
                    (unsigned long long)total);
            else
                put(&o, "wsbroker_close_frames_%s_total{code=\"%d\"} %llu\n", dirs[d], 1000 + c,
                    (unsigned long long)total);
        }
    }
    put(&o,
        "# HELP wsbroker_protocol_errors_total Connections closed for a protocol error, by close "
        "code.\n# TYPE wsbroker_protocol_errors_total counter\n");
    static const int perr[] = {1002, 1003, 1007, 1009};
    for (size_t i = 0; i < sizeof(perr) / sizeof(perr[0]); i++) {
        uint64_t total = 0;
        for (int w = 0; w < n; w++)
            total += LOAD(workers[w]->closes_sent[perr[i] - 1000]);
        put(&o, "wsbroker_protocol_errors_total{code=\"%d\"} %llu\n", perr[i],
            (unsigned long long)total);
    }
    put(&o, "# HELP wsbroker_worker_connections_open WebSocket connections open, per worker.\n"
            "# TYPE wsbroker_worker_connections_open gauge\n");
    for (int w = 0; w < n; w++)
        put(&o, "wsbroker_worker_connections_open{worker=\"%d\"} %llu\n", w,
            (unsigned long long)LOAD(workers[w]->conns_open));
    put(&o, "# HELP wsbroker_worker_messages_delivered_total Messages queued to subscribers, per "
            "worker.\n# TYPE wsbroker_worker_messages_delivered_total counter\n");
    for (int w = 0; w < n; w++)
        put(&o, "wsbroker_worker_messages_delivered_total{worker=\"%d\"} %llu\n", w,
            (unsigned long long)LOAD(workers[w]->delivered));
    put(&o,
        "# HELP wsbroker_topics Topics with a sequence number.\n# TYPE wsbroker_topics gauge\n"
        "wsbroker_topics %llu\n"
        "# HELP wsbroker_topics_evicted_total Topics forgotten to stay within --max-topics.\n"
        "# TYPE wsbroker_topics_evicted_total counter\nwsbroker_topics_evicted_total %llu\n"
        "# HELP wsbroker_messages_retained Messages held in history.\n"
        "# TYPE wsbroker_messages_retained gauge\nwsbroker_messages_retained %llu\n"
        "# HELP wsbroker_workers Worker threads.\n# TYPE wsbroker_workers gauge\n"
        "wsbroker_workers %d\n"
        "# HELP wsbroker_uptime_seconds Seconds since start.\n"
        "# TYPE wsbroker_uptime_seconds gauge\nwsbroker_uptime_seconds %.3f\n"
        "# HELP wsbroker_log_lines_dropped_total Log lines dropped because stderr did not keep "
        "up.\n# TYPE wsbroker_log_lines_dropped_total counter\n"
        "wsbroker_log_lines_dropped_total %llu\n",
        (unsigned long long)g->topics, (unsigned long long)g->topics_evicted,
        (unsigned long long)g->retained, n, g->uptime_s, (unsigned long long)g->log_dropped);
    if (g->cluster)
        put(&o,
            "# HELP wsbroker_redis_up 1 while the cluster link to Redis is up.\n"
            "# TYPE wsbroker_redis_up gauge\nwsbroker_redis_up %llu\n"
            "# HELP wsbroker_redis_connects_total Times the link to Redis came up.\n"
            "# TYPE wsbroker_redis_connects_total counter\nwsbroker_redis_connects_total %llu\n"
            "# HELP wsbroker_redis_errors_total Publishes and subscriptions refused as "
            "unavailable by the cluster link.\n"
            "# TYPE wsbroker_redis_errors_total counter\nwsbroker_redis_errors_total %llu\n"
            "# HELP wsbroker_redis_messages_total Messages received from Redis.\n"
            "# TYPE wsbroker_redis_messages_total counter\nwsbroker_redis_messages_total %llu\n",
            (unsigned long long)g->redis_up, (unsigned long long)g->redis_connects,
            (unsigned long long)g->redis_errors, (unsigned long long)g->redis_messages);
    if (o.failed) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
