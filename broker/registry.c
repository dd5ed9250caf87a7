/*
 * registry.c - topic sequence numbers, history, eviction and cross-worker
 * interest (see registry.h).
 *
 * Topics live in REG_STRIPES hash maps, each behind its own mutex, chosen
 * by the high bits of the topic's hash: publishes on different topics rarely
 * contend. A topic's history is a ring of references to the very frames
 * that were fanned out, stamped with the time they were published.
 *
 * Lock order: the eviction lock, then a stripe mutex, then the CLOCK list
 * lock or the interest RW lock, then a worker's inbox lock (inside the post
 * callback). Only the thread holding the eviction lock frees topics.
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
#include <wsproto/topic.h>

#include "link.h"
#include "ptable.h"
#include "smap.h"

#define REG_STRIPE_BITS 6
#define REG_STRIPES     (1 << REG_STRIPE_BITS)

typedef struct hist {
    frame_t *f;
    uint64_t at; /* ms, monotonic */
} hist_t;

typedef struct topic {
    uint64_t seq;
    uint64_t gen; /* epoch generation: 0 is the broker's epoch */
    link_t clock; /* r->clock, in creation order */
    hist_t *hist; /* ring of retained messages, oldest at head */
    uint32_t hcap, hlen, hhead;
    uint8_t stripe;
    bool used; /* CLOCK reference bit */
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
    reg_cfg_t cfg;
    pthread_mutex_t evict_mu; /* held by the one thread evicting */
    pthread_mutex_t clock_mu; /* the CLOCK list and its hand */
    link_t clock;
    link_t *hand;
    _Atomic uint64_t ntopics, evicted, retained, gens;
    char epoch[REG_EPOCH_LEN + 1];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

reg_t *reg_new(const reg_cfg_t *cfg, reg_post_fn post, void *arg)
{
    reg_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    for (int i = 0; i < REG_STRIPES; i++) {
        pthread_mutex_init(&r->stripes[i].mu, NULL);
        smap_init(&r->stripes[i].topics);
    }
    pthread_rwlock_init(&r->ilock, NULL);
    pthread_mutex_init(&r->evict_mu, NULL);
    pthread_mutex_init(&r->clock_mu, NULL);
    link_init(&r->clock);
    r->hand = &r->clock;
    ptable_init(&r->interest);
    r->post = post;
    r->post_arg = arg;
    r->cfg = *cfg;
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

static void hist_clear(reg_t *r, topic_t *t)
{
    for (uint32_t i = 0; i < t->hlen; i++)
        frame_unref(t->hist[(t->hhead + i) % t->hcap].f);
    atomic_fetch_sub_explicit(&r->retained, t->hlen, memory_order_relaxed);
    free(t->hist);
    t->hist = NULL;
    t->hcap = t->hlen = t->hhead = 0;
}

void reg_free(reg_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < REG_STRIPES; i++) {
        smap_t *m = &r->stripes[i].topics;
        for (size_t j = 0; j < m->cap; j++)
            if (m->slots[j].hash != 0) {
                hist_clear(r, m->slots[j].value);
                free(m->slots[j].value);
            }
        smap_destroy(m);
        pthread_mutex_destroy(&r->stripes[i].mu);
    }
    /* Workers drop their interest as their connections close, so the
     * interest table is empty by now. */
    ptable_destroy(&r->interest);
    pthread_rwlock_destroy(&r->ilock);
    pthread_mutex_destroy(&r->evict_mu);
    pthread_mutex_destroy(&r->clock_mu);
    free(r);
}

const char *reg_epoch(const reg_t *r)
{
    return r->epoch;
}

/* The epoch of t: the broker's, then "-<gen>" once the topic was
 * recreated. Every subscribe and history reply carries one. */
static void topic_epoch(const reg_t *r, const topic_t *t, char out[REG_EPOCH_MAX])
{
    size_t n = REG_EPOCH_LEN;
    memcpy(out, r->epoch, n);
    if (t->gen != 0) {
        out[n++] = '-';
        n += msg_u64(out + n, t->gen);
    }
    out[n] = '\0';
}

static uint8_t stripe_index(const char *topic, size_t len)
{
    /* High bits for the stripe: the stripe's map uses the low ones. */
    return (uint8_t)(smap_hash(topic, len) >> (64 - REG_STRIPE_BITS));
}

/* The topic, created (seq 0) if new; NULL on ENOMEM. *created tells which.
 * Stripe lock held. */
static topic_t *topic_get(reg_t *r, uint8_t si, const char *name, size_t len, bool *created)
{
    stripe_t *s = &r->stripes[si];
    topic_t *t = smap_get(&s->topics, name, len);
    *created = false;
    if (t != NULL)
        return t;
    t = calloc(1, sizeof(*t) + len + 1);
    if (t == NULL)
        return NULL;
    t->len = len;
    t->stripe = si;
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    if (smap_put(&s->topics, t->name, len, t) != 0) {
        free(t);
        return NULL;
    }
    /* Once topics have been evicted, a new topic may be one coming back:
     * it gets an epoch of its own, so old seqs never pass as current. */
    if (atomic_load_explicit(&r->evicted, memory_order_relaxed) > 0)
        t->gen = atomic_fetch_add_explicit(&r->gens, 1, memory_order_relaxed) + 1;
    pthread_mutex_lock(&r->clock_mu);
    link_insert_tail(&r->clock, &t->clock);
    pthread_mutex_unlock(&r->clock_mu);
    atomic_fetch_add_explicit(&r->ntopics, 1, memory_order_relaxed);
    *created = true;
    return t;
}

/* Drop retained messages older than the TTL. Stripe lock held. */
static void hist_expire(reg_t *r, topic_t *t, uint64_t now)
{
    uint64_t ttl = r->cfg.history_ttl_ms;
    if (ttl == 0)
        return;
    uint32_t dropped = 0;
    while (t->hlen > 0 && t->hist[t->hhead].at + ttl <= now) {
        frame_unref(t->hist[t->hhead].f);
        t->hhead = (t->hhead + 1) % t->hcap;
        t->hlen--;
        dropped++;
    }
    atomic_fetch_sub_explicit(&r->retained, dropped, memory_order_relaxed);
    if (t->hlen == 0 && t->hist != NULL) {
        free(t->hist);
        t->hist = NULL;
        t->hcap = t->hhead = 0;
    }
}

/* The topic keeps as many messages as it may (history > 0). */
static bool hist_full(const reg_t *r, const topic_t *t)
{
    return t->hlen == r->cfg.history;
}

/* Keep a reference to f as the newest message. The ring grows to the
 * configured size only as messages come, so a topic published once holds
 * one slot. Returns 0, or -1 on ENOMEM (f not kept). Stripe lock held. */
static int hist_push(reg_t *r, topic_t *t, frame_t *f, uint64_t now)
{
    uint32_t max = r->cfg.history;
    if (hist_full(r, t)) {
        frame_unref(t->hist[t->hhead].f);
        t->hist[t->hhead] = (hist_t){frame_ref(f), now};
        t->hhead = (t->hhead + 1) % t->hcap;
        return 0;
    }
    if (t->hlen == t->hcap) {
        uint32_t ncap = t->hcap ? t->hcap * 2 : 1;
        if (ncap > max)
            ncap = max;
        hist_t *nh = malloc(ncap * sizeof(*nh));
        if (nh == NULL)
            return -1;
        for (uint32_t i = 0; i < t->hlen; i++)
            nh[i] = t->hist[(t->hhead + i) % t->hcap];
        free(t->hist);
        t->hist = nh;
        t->hcap = ncap;
        t->hhead = 0;
    }
    t->hist[(t->hhead + t->hlen) % t->hcap] = (hist_t){frame_ref(f), now};
    t->hlen++;
    atomic_fetch_add_explicit(&r->retained, 1, memory_order_relaxed);
    return 0;
}

/* When the ring is full and nothing but the ring holds its oldest frame,
 * that frame made ready for the next message (cap payload bytes) and
 * taken out of the ring; NULL otherwise. Stripe lock held. */
static frame_t *hist_recycle(reg_t *r, topic_t *t, size_t cap, size_t tlen)
{
    if (!hist_full(r, t))
        return NULL;
    frame_t *f = frame_reuse(t->hist[t->hhead].f, cap, tlen);
    if (f != NULL) {
        t->hhead = (t->hhead + 1) % t->hcap;
        t->hlen--;
        atomic_fetch_sub_explicit(&r->retained, 1, memory_order_relaxed);
    }
    return f;
}

static void or_mask(void *value, void *arg)
{
    *(uint64_t *)arg |= ((interest_t *)value)->workers;
}

static uint64_t interest_of(reg_t *r, const char *topic, size_t len)
{
    uint64_t mask = 0;
    pthread_rwlock_rdlock(&r->ilock);
    ptable_match(&r->interest, topic, len, or_mask, &mask);
    pthread_rwlock_unlock(&r->ilock);
    return mask;
}

/* --max-topics: evict unused topics nobody subscribes to until the table is
 * back under the limit (at most two turns of the hand: when every topic is
 * subscribed to, nothing can go). One thread evicts at a time; others carry
 * on, since the one at work will get the count down. */
static void evict(reg_t *r)
{
    uint64_t max = r->cfg.max_topics;
    if (max == 0 || atomic_load(&r->ntopics) <= max || pthread_mutex_trylock(&r->evict_mu) != 0)
        return;
    uint64_t steps = 2 * atomic_load(&r->ntopics) + 2;
    while (atomic_load(&r->ntopics) > max && steps-- > 0) {
        pthread_mutex_lock(&r->clock_mu);
        link_t *l = r->hand == &r->clock ? r->clock.next : r->hand;
        if (l == &r->clock) {
            pthread_mutex_unlock(&r->clock_mu);
            break;
        }
        r->hand = l->next;
        pthread_mutex_unlock(&r->clock_mu);
        /* t stays valid: only this thread frees topics. */
        topic_t *t = link_entry(l, topic_t, clock);
        stripe_t *s = &r->stripes[t->stripe];
        pthread_mutex_lock(&s->mu);
        if (t->used) {
            t->used = false;
        } else if (interest_of(r, t->name, t->len) == 0) {
            smap_del(&s->topics, t->name, t->len);
            pthread_mutex_lock(&r->clock_mu);
            if (r->hand == &t->clock)
                r->hand = t->clock.next;
            link_remove(&t->clock);
            pthread_mutex_unlock(&r->clock_mu);
            hist_clear(r, t);
            free(t);
            atomic_fetch_sub(&r->ntopics, 1);
            atomic_fetch_add(&r->evicted, 1);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&r->evict_mu);
}

uint64_t reg_publish(reg_t *r, const char *topic, size_t tlen, const char *data, size_t dlen,
                     uint64_t *targets)
{
    *targets = 0;
    uint8_t si = stripe_index(topic, tlen);
    stripe_t *s = &r->stripes[si];
    bool created;
    pthread_mutex_lock(&s->mu);
    topic_t *t = topic_get(r, si, topic, tlen, &created);
    if (t == NULL) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    t->used = true;
    uint64_t mask = interest_of(r, topic, tlen);
    /* Encoded only when someone listens or history keeps it; the seq is
     * taken either way, but only once the frame exists, so a failed
     * allocation leaves no gap. */
    uint64_t seq = t->seq + 1;
    frame_t *f = NULL;
    if (mask != 0 || r->cfg.history > 0) {
        size_t cap = msg_message_size(topic, tlen, seq, dlen);
        uint64_t now = 0;
        if (r->cfg.history > 0) {
            now = now_ms();
            hist_expire(r, t, now);
            f = hist_recycle(r, t, cap, tlen);
        }
        if (f == NULL)
            f = frame_new(cap, tlen);
        if (f == NULL) {
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        size_t n = msg_encode_message((char *)frame_payload(f), cap, topic, tlen, seq, data, dlen);
        frame_seal(f, WS_OP_TEXT, n);
        frame_set_topic(f, topic, tlen, seq);
        if (r->cfg.history > 0) {
            if (hist_push(r, t, f, now) != 0) {
                pthread_mutex_unlock(&s->mu);
                frame_unref(f);
                return 0;
            }
            /* The oldest frame is the next one recycled: its lines, cold
             * since it was sent, are fetched while other topics publish
             * (as many as this message took: the next is much the same). */
            if (hist_full(r, t))
                frame_prefetch(t->hist[t->hhead].f, frame_size(cap, tlen));
        }
        *targets = mask;
        for (int w = 0; mask != 0; w++, mask >>= 1)
            if (mask & 1)
                r->post(r->post_arg, w, frame_ref(f));
    }
    t->seq = seq;
    pthread_mutex_unlock(&s->mu);
    if (f != NULL)
        frame_unref(f);
    if (created)
        evict(r);
    return seq;
}

void reg_fanout(reg_t *r, frame_t *f)
{
    uint64_t mask = interest_of(r, f->topic, f->topic_len);
    for (int w = 0; mask != 0; w++, mask >>= 1)
        if (mask & 1)
            r->post(r->post_arg, w, frame_ref(f));
    frame_unref(f);
}

/* References to the ring entries i..hlen-1 (oldest first) in a new array. */
static frame_t **hist_copy(const topic_t *t, uint32_t from, size_t *n)
{
    *n = t->hlen - from;
    if (*n == 0)
        return NULL;
    frame_t **out = malloc(*n * sizeof(*out));
    if (out == NULL)
        return NULL;
    for (uint32_t i = from; i < t->hlen; i++)
        out[i - from] = frame_ref(t->hist[(t->hhead + i) % t->hcap].f);
    return out;
}

int reg_subscribe(reg_t *r, const char *topic, size_t tlen, reg_sub_t *s)
{
    s->frames = NULL;
    s->nframes = 0;
    s->recovered = -1;
    uint8_t si = stripe_index(topic, tlen);
    stripe_t *st = &r->stripes[si];
    bool created = false;
    topic_t none = {0}; /* a topic nobody published to: seq 0, no history */
    pthread_mutex_lock(&st->mu);
    topic_t *t = smap_get(&st->topics, topic, tlen);
    /* Until a topic has been evicted, every topic's epoch is the broker's:
     * a subscription need not create one (idle subscribers to topics never
     * published to cost no topic). Afterwards the topic is created, which
     * fixes its epoch before the ack names it. */
    if (t == NULL && atomic_load_explicit(&r->evicted, memory_order_relaxed) == 0)
        t = &none;
    else if (t == NULL)
        t = topic_get(r, si, topic, tlen, &created);
    if (t == NULL) {
        pthread_mutex_unlock(&st->mu);
        return -1;
    }
    t->used = true;
    hist_expire(r, t, now_ms());
    s->seq = t->seq;
    topic_epoch(r, t, s->topic_epoch);
    /* Which retained messages to replay: index "from" in the ring. */
    uint32_t from = t->hlen;
    if (s->has_since) {
        bool same_epoch = s->epoch == NULL || (s->epoch_len == strlen(s->topic_epoch) &&
                                               memcmp(s->epoch, s->topic_epoch, s->epoch_len) == 0);
        if (!same_epoch || s->since > t->seq) {
            s->recovered = 0; /* another seq space: nothing of it applies */
        } else {
            uint64_t oldest = t->hlen > 0 ? t->hist[t->hhead].f->seq : t->seq + 1;
            s->recovered = oldest <= s->since + 1;
            /* Every retained message after since (all of them are newer
             * than anything the client saw, even when some are missing). */
            uint64_t skip = s->since >= oldest ? s->since - oldest + 1 : 0;
            from = (uint32_t)(skip < t->hlen ? skip : t->hlen);
        }
    }
    if (s->last >= 0) {
        /* With since as well: the newer bound wins (after a change of
         * epoch from == hlen already, and nothing is replayed). */
        uint32_t want_from = (uint64_t)s->last >= t->hlen ? 0 : t->hlen - (uint32_t)s->last;
        if (!s->has_since || want_from > from)
            from = want_from;
    }
    int rc = 0;
    if (from < t->hlen) {
        s->frames = hist_copy(t, from, &s->nframes);
        if (s->frames == NULL) {
            s->nframes = 0;
            rc = -1;
        }
    }
    pthread_mutex_unlock(&st->mu);
    if (created)
        evict(r);
    return rc;
}

void reg_sub_release(reg_sub_t *s)
{
    for (size_t i = 0; i < s->nframes; i++)
        if (s->frames[i] != NULL)
            frame_unref(s->frames[i]);
    free(s->frames);
    s->frames = NULL;
    s->nframes = 0;
}

int reg_replay_pattern(reg_t *r, const char *pattern, size_t plen, uint64_t last, reg_replay_fn cb,
                       void *arg)
{
    if (last == 0 || r->cfg.history == 0)
        return 0;
    /* Per stripe: snapshot under the lock, call back after it. */
    typedef struct pick {
        uint64_t seq;
        size_t first, n;
    } pick_t;
    pick_t *picks = NULL;
    frame_t **frames = NULL;
    size_t pcap = 0, fcap = 0;
    int rc = 0;
    uint64_t now = now_ms();
    for (int i = 0; i < REG_STRIPES && rc == 0; i++) {
        stripe_t *st = &r->stripes[i];
        size_t np = 0, nf = 0;
        pthread_mutex_lock(&st->mu);
        for (size_t j = 0; j < st->topics.cap && rc == 0; j++) {
            if (st->topics.slots[j].hash == 0)
                continue;
            topic_t *t = st->topics.slots[j].value;
            if (!topic_match(pattern, plen, t->name, t->len))
                continue;
            hist_expire(r, t, now);
            if (t->hlen == 0)
                continue;
            t->used = true;
            uint32_t take = last < t->hlen ? (uint32_t)last : t->hlen;
            if (np == pcap || nf + take > fcap) {
                size_t npc = pcap ? pcap * 2 : 16, nfc = fcap ? fcap * 2 : 64;
                while (nfc < nf + take)
                    nfc *= 2;
                pick_t *pp = np == pcap ? realloc(picks, npc * sizeof(*pp)) : picks;
                if (pp != NULL)
                    picks = pp;
                frame_t **ff = nf + take > fcap ? realloc(frames, nfc * sizeof(*ff)) : frames;
                if (ff != NULL)
                    frames = ff;
                if (pp == NULL || ff == NULL) {
                    rc = -1;
                    break;
                }
                if (np == pcap)
                    pcap = npc;
                if (nf + take > fcap)
                    fcap = nfc;
            }
            picks[np] = (pick_t){t->seq, nf, take};
            for (uint32_t k = t->hlen - take; k < t->hlen; k++)
                frames[nf++] = frame_ref(t->hist[(t->hhead + k) % t->hcap].f);
            np++;
        }
        pthread_mutex_unlock(&st->mu);
        for (size_t p = 0; p < np; p++) {
            if (rc == 0) {
                cb(arg, picks[p].seq, frames + picks[p].first, picks[p].n);
            } else {
                for (size_t k = 0; k < picks[p].n; k++)
                    frame_unref(frames[picks[p].first + k]);
            }
        }
    }
    free(picks);
    free(frames);
    return rc;
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
        if (in != NULL) {
            if (in->workers == 0 && r->cfg.on_interest != NULL)
                r->cfg.on_interest(r->cfg.on_interest_arg, pattern, len, wildcard, true);
            in->workers |= bit;
        }
    } else if (in != NULL) {
        in->workers &= ~bit;
        if (in->workers == 0) {
            if (r->cfg.on_interest != NULL)
                r->cfg.on_interest(r->cfg.on_interest_arg, pattern, len, wildcard, false);
            ptable_remove(&r->interest, pattern, len, wildcard);
            free(in);
        }
    }
    pthread_rwlock_unlock(&r->ilock);
    return rc;
}

void reg_sweep(reg_t *r, int w, int n)
{
    if (r->cfg.history == 0 || r->cfg.history_ttl_ms == 0)
        return;
    uint64_t now = now_ms();
    for (int i = w; i < REG_STRIPES; i += n) {
        stripe_t *st = &r->stripes[i];
        pthread_mutex_lock(&st->mu);
        for (size_t j = 0; j < st->topics.cap; j++) {
            topic_t *t = st->topics.slots[j].value;
            if (st->topics.slots[j].hash != 0 && t->hlen > 0)
                hist_expire(r, t, now);
        }
        pthread_mutex_unlock(&st->mu);
    }
}

void reg_get_stats(reg_t *r, reg_stats_t *out)
{
    out->topics = atomic_load_explicit(&r->ntopics, memory_order_relaxed);
    out->evicted = atomic_load_explicit(&r->evicted, memory_order_relaxed);
    out->retained = atomic_load_explicit(&r->retained, memory_order_relaxed);
}
