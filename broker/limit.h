/*
 * limit.h - limits against abuse that are not a single counter: the
 * number of connections from one IP address (--max-connections-per-ip),
 * shared by the workers, and the per-connection publish rate
 * (--rate-limit, --rate-burst), a token bucket.
 */
#ifndef WSBROKER_LIMIT_H
#define WSBROKER_LIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct lim_ips lim_ips_t;
typedef struct lim_ip lim_ip_t;

/* A table allowing max connections per address (IPv4, or IPv6 by /64
 * prefix, since one host easily has many addresses of its /64). */
lim_ips_t *lim_ips_new(uint32_t max);
void lim_ips_free(lim_ips_t *t);

/* Count a connection from addr. Returns its slot (to release later), or
 * NULL when the address is at its limit (or memory ran out: *full tells
 * which). Any thread. */
lim_ip_t *lim_ip_acquire(lim_ips_t *t, const struct sockaddr *addr, bool *full);
void lim_ip_release(lim_ips_t *t, lim_ip_t *slot);

/* Token bucket, in thousandths of a message, refilled rate per second up
 * to burst. */
typedef struct lim_rate {
    uint32_t milli;      /* tokens * 1000 */
    uint32_t at;         /* ms of the last refill (loop clock, truncated) */
    uint32_t over_at;    /* ms: start of the current spell of refusals; 0: none */
    uint32_t refused_at; /* ms: the last refusal */
} lim_rate_t;

void lim_rate_init(lim_rate_t *r, double burst, uint64_t now_ms);

/* Take one token at now_ms: true if allowed. */
bool lim_rate_take(lim_rate_t *r, double rate, double burst, uint64_t now_ms);

/* A refusal at now_ms: returns for how long (ms) the client has been over
 * the limit, i.e. refused at least once a second without a break. */
uint32_t lim_rate_refused(lim_rate_t *r, uint64_t now_ms);

#endif
