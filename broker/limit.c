/*
 * limit.c - per-address connection counts and publish token buckets (see
 * limit.h).
 */
#include "limit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "smap.h"

struct lim_ip {
    uint32_t count;
    uint8_t len;
    char key[17]; /* family byte + 4 or 8 address bytes */
};

struct lim_ips {
    pthread_mutex_t mu;
    smap_t map; /* key -> lim_ip_t */
    uint32_t max;
};

lim_ips_t *lim_ips_new(uint32_t max)
{
    lim_ips_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    smap_init(&t->map);
    t->max = max;
    return t;
}

void lim_ips_free(lim_ips_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->map.cap; i++)
        if (t->map.slots[i].hash != 0)
            free(t->map.slots[i].value);
    smap_destroy(&t->map);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static uint8_t make_key(const struct sockaddr *addr, char key[17])
{
    if (addr->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
            return 5;
        }
        key[0] = 6;
        memcpy(key + 1, a, 8); /* the /64 */
        return 9;
    }
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    return 5;
}

lim_ip_t *lim_ip_acquire(lim_ips_t *t, const struct sockaddr *addr, bool *full)
{
    char key[17];
    uint8_t len = make_key(addr, key);
    *full = false;
    pthread_mutex_lock(&t->mu);
    lim_ip_t *s = smap_get(&t->map, key, len);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s != NULL) {
            s->len = len;
            memcpy(s->key, key, len);
            if (smap_put(&t->map, s->key, len, s) != 0) {
                free(s);
                s = NULL;
            }
        }
    } else if (s->count >= t->max) {
        *full = true;
        s = NULL;
    }
    if (s != NULL)
        s->count++;
    pthread_mutex_unlock(&t->mu);
    return s;
}

void lim_ip_release(lim_ips_t *t, lim_ip_t *s)
{
    pthread_mutex_lock(&t->mu);
    if (--s->count == 0) {
        smap_del(&t->map, s->key, s->len);
        free(s);
    }
    pthread_mutex_unlock(&t->mu);
}

void lim_rate_init(lim_rate_t *r, double burst, uint64_t now_ms)
{
    r->milli = (uint32_t)(burst * 1000.0);
    r->at = (uint32_t)now_ms;
    r->over_at = r->refused_at = 0;
}

uint32_t lim_rate_refused(lim_rate_t *r, uint64_t now_ms)
{
    uint32_t now = (uint32_t)now_ms | 1; /* 0 means "no spell" */
    if (r->over_at == 0 || now - r->refused_at > 1000)
        r->over_at = now;
    r->refused_at = now;
    return now - r->over_at;
}

bool lim_rate_take(lim_rate_t *r, double rate, double burst, uint64_t now_ms)
{
    uint32_t now = (uint32_t)now_ms;
    uint32_t elapsed = now - r->at; /* wraps correctly */
    /* rate per second is rate thousandths per ms. Time that did not yet
     * earn a whole thousandth is kept (at is not moved). */
    double gained = (double)elapsed * rate, cap = burst * 1000.0;
    if (gained >= 1.0 || r->milli >= cap) {
        double milli = r->milli + gained;
        r->milli = (uint32_t)(milli > cap ? cap : milli);
        r->at = now;
    }
    if (r->milli < 1000)
        return false;
    r->milli -= 1000;
    return true;
}
