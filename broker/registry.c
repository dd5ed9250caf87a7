/*
 * registry.c - topic sequence numbers and cross-worker interest (see
 * registry.h).
 *
 * Topics live in REG_STRIPES hash maps, each behind its own mutex, chosen
 * by the topic's hash: publishes on different topics rarely contend. A
 * topic entry is kept for the broker's lifetime so that its seq never
 * restarts within an epoch.
 *
 * Lock order: stripe mutex, then the interest RW lock, then a worker's inbox
 * lock (inside the post callback). Nothing takes them in another order.
 */
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <wsproto/msg.h>

#include "ptable.h"
#include "smap.h"

#define REG_STRIPE_BITS 6
#define REG_STRIPES     (1 << REG_STRIPE_BITS)

typedef struct topic {
    uint64_t seq;
    size_t len;
    char name[];
} topic_t;

typedef struct stripe {
    pthread_mutex_t mu;
    smap_t topics;
} __attribute__((aligned(64))) stripe_t;

typedef struct interest {
    uint64_t workers; /* bit w: worker w has a matching subscription */
    size_t len;
    char pattern[];
} interest_t;

struct reg {
    stripe_t stripes[REG_STRIPES];
    pthread_rwlock_t ilock;
    ptable_t interest;
    reg_post_fn post;
    void *post_arg;
    int nworkers;
    _Atomic uint64_t ntopics;
    char epoch[REG_EPOCH_LEN + 1];
};

reg_t *reg_new(int nworkers, reg_post_fn post, void *arg)
{
    reg_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    for (int i = 0; i < REG_STRIPES; i++) {
        pthread_mutex_init(&r->stripes[i].mu, NULL);
        smap_init(&r->stripes[i].topics);
    }
    pthread_rwlock_init(&r->ilock, NULL);
    ptable_init(&r->interest);
    r->post = post;
    r->post_arg = arg;
    r->nworkers = nworkers;
    uint8_t rnd[REG_EPOCH_LEN / 2];
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        /* No entropy source: time and address still differ per start. */
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)r;
        memcpy(rnd, &t, sizeof(rnd));
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(r->epoch + 2 * i, 3, "%02x", rnd[i]);
    return r;
}

void reg_free(reg_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < REG_STRIPES; i++) {
        smap_t *m = &r->stripes[i].topics;
        for (size_t j = 0; j < m->cap; j++)
            if (m->slots[j].hash != 0)
                free(m->slots[j].value);
        smap_destroy(m);
        pthread_mutex_destroy(&r->stripes[i].mu);
    }
    /* Workers drop their interest as their connections close, so the
     * interest table is empty by now. */
    ptable_destroy(&r->interest);
    pthread_rwlock_destroy(&r->ilock);
    free(r);
}

const char *reg_epoch(const reg_t *r)
{
    return r->epoch;
}

static stripe_t *stripe_of(reg_t *r, const char *topic, size_t len)
{
    /* High bits for the stripe: the stripe's map uses the low ones. */
    return &r->stripes[smap_hash(topic, len) >> (64 - REG_STRIPE_BITS)];
}

/* Create and insert a topic with seq 0. Stripe lock held. */
static topic_t *topic_new(stripe_t *s, const char *name, size_t len)
{
    topic_t *t = malloc(sizeof(*t) + len + 1);
    if (t == NULL)
        return NULL;
    t->seq = 0;
    t->len = len;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    if (smap_put(&s->topics, t->name, len, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

static void or_mask(void *value, void *arg)
{
    *(uint64_t *)arg |= ((interest_t *)value)->workers;
}

uint64_t reg_publish(reg_t *r, const char *topic, size_t tlen, const char *data, size_t dlen,
                     uint64_t *targets)
{
    *targets = 0;
    stripe_t *s = stripe_of(r, topic, tlen);
    pthread_mutex_lock(&s->mu);
    topic_t *t = smap_get(&s->topics, topic, tlen);
    if (t == NULL && (t = topic_new(s, topic, tlen)) != NULL)
        atomic_fetch_add_explicit(&r->ntopics, 1, memory_order_relaxed);
    if (t == NULL) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    uint64_t mask = 0;
    pthread_rwlock_rdlock(&r->ilock);
    ptable_match(&r->interest, topic, tlen, or_mask, &mask);
    pthread_rwlock_unlock(&r->ilock);
    /* Encoded only when someone listens; the seq is taken either way, but
     * only once the frame exists, so a failed allocation leaves no gap. */
    uint64_t seq = t->seq + 1;
    frame_t *f = NULL;
    *targets = mask;
    if (mask != 0) {
        size_t cap = msg_message_bound(tlen, dlen);
        f = frame_new(cap, tlen);
        if (f == NULL) {
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        size_t n = msg_encode_message((char *)frame_payload(f), cap, topic, tlen, seq, data, dlen);
        frame_seal(f, WS_OP_TEXT, n);
        frame_set_topic(f, topic, tlen, seq);
        for (int w = 0; mask != 0; w++, mask >>= 1)
            if (mask & 1)
                r->post(r->post_arg, w, frame_ref(f));
    }
    t->seq = seq;
    pthread_mutex_unlock(&s->mu);
    if (f != NULL)
        frame_unref(f);
    return seq;
}

uint64_t reg_topic_seq(reg_t *r, const char *topic, size_t tlen)
{
    stripe_t *s = stripe_of(r, topic, tlen);
    pthread_mutex_lock(&s->mu);
    topic_t *t = smap_get(&s->topics, topic, tlen);
    uint64_t seq = t ? t->seq : 0;
    pthread_mutex_unlock(&s->mu);
    return seq;
}

int reg_interest(reg_t *r, int w, const char *pattern, size_t len, bool wildcard, bool on)
{
    int rc = 0;
    uint64_t bit = 1ull << w;
    pthread_rwlock_wrlock(&r->ilock);
    interest_t *in = ptable_get(&r->interest, pattern, len);
    if (on) {
        if (in == NULL) {
            in = malloc(sizeof(*in) + len + 1);
            if (in == NULL) {
                rc = -1;
            } else {
                in->workers = 0;
                in->len = len;
                memcpy(in->pattern, pattern, len);
                in->pattern[len] = '\0';
                if (ptable_put(&r->interest, in->pattern, len, wildcard, in) != 0) {
                    free(in);
                    in = NULL;
                    rc = -1;
                }
            }
        }
        if (in != NULL)
            in->workers |= bit;
    } else if (in != NULL) {
        in->workers &= ~bit;
        if (in->workers == 0) {
            ptable_remove(&r->interest, pattern, len, wildcard);
            free(in);
        }
    }
    pthread_rwlock_unlock(&r->ilock);
    return rc;
}

uint64_t reg_topic_count(reg_t *r)
{
    return atomic_load_explicit(&r->ntopics, memory_order_relaxed);
}
