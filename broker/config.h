/*
 * config.h - the broker's configuration: flags, environment variables and
 * their defaults. Parsed once in main and frozen before any worker starts;
 * workers only read it.
 */
#ifndef WSBROKER_CONFIG_H
#define WSBROKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <wsproto/ws_handshake.h>

#define CFG_MAX_WORKERS 64

typedef enum deflate_mode {
    DEFLATE_OFF = 0,
    DEFLATE_SHARED,    /* no server context takeover: compress once per message */
    DEFLATE_DEDICATED, /* a compression context per connection */
} deflate_mode_t;

typedef enum slow_policy {
    SLOW_CLOSE = 0,
    SLOW_DROP,
} slow_policy_t;

typedef struct cfg {
    char bind[64];
    int port;     /* plain ws:// and http://; 0: none */
    int tls_port; /* wss:// and https://; 0: none */
    char *tls_cert, *tls_key, *tls_ca;
    int workers;
    uint64_t max_message;
    uint64_t max_backlog;
    slow_policy_t slow_consumer;
    double ping_interval; /* seconds; 0 disables server pings */
    double ping_timeout;
    double close_timeout;
    double handshake_timeout;
    double message_timeout;   /* a started message must complete within it */
    uint32_t max_connections; /* TCP connections; 0: no limit but the fd limit */
    uint32_t max_subscriptions;
    uint32_t history;    /* messages retained per topic; 0: none */
    double history_ttl;  /* seconds a retained message is kept; 0: no limit */
    uint64_t max_topics; /* topics in the table; 0: no limit */
    uint8_t *auth_key;   /* --auth-secret(-file): HS256 key; NULL: no auth */
    size_t auth_key_len;
    double rate_limit;         /* publishes per second per connection; 0: none */
    double rate_burst;         /* bucket size; 0: rate_limit (at least 1) */
    uint32_t max_conns_per_ip; /* 0: no limit */
    char *redis;               /* --redis URL: cluster mode; NULL: one node */
    deflate_mode_t deflate;
    uint64_t deflate_min; /* messages shorter than this go uncompressed */
    bool echo;
    bool web;       /* serve the web client at all */
    char *web_root; /* NULL: the built-in copy */
    char **origins; /* --allowed-origins besides the same origin; NULL: none */
    size_t norigins;
    bool any_origin; /* --allowed-origins '*' */
    int log_level;
} cfg_t;

/* Fill cfg from defaults, then the environment (WSBROKER_*), then argv.
 * Returns 0 to run, 1 when --help or --version was printed (exit 0), or 2
 * after printing a clear message to stderr (exit 2). */
int cfg_load(cfg_t *cfg, int argc, char **argv);

void cfg_free(cfg_t *cfg);

/* An HS256 secret: the value itself, or (file) the content of the file it
 * names without a final newline. Returns NULL and a malloc'd *key, or a
 * reason. */
const char *cfg_read_secret(const char *value, bool file, uint8_t **key, size_t *len);

/* True if a handshake with this Origin header (present, maybe empty) may
 * proceed: the same origin as its Host header (scheme's default port
 * implied), a page served from this machine (localhost, 127.x, [::1]), one
 * of --allowed-origins, or any with '*'. host may be NULL. */
bool cfg_origin_allowed(const cfg_t *cfg, const wsh_str_t *origin, const wsh_str_t *host);

#endif
