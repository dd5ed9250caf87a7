/*
 * registry.h - the broker-wide topic registry: sequence numbers, retained
 * history, the bound on the number of topics, and the cross-worker
 * interest map. The only state shared by all workers.
 *
 * Publish path (any worker): lock the topic's stripe, take the next seq,
 * look up which workers have a matching subscription, encode the message
 * frame once, keep a reference in the topic's history and post one to each
 * of those workers' inboxes, then unlock. Because seq assignment and posting
 * happen under one lock, every inbox receives a topic's messages in seq
 * order, whichever workers publish.
 *
 * Subscribe path: the worker registers its interest first, then takes a
 * snapshot of the topic under the same lock (latest seq, retained frames).
 * Every message after the snapshot is posted to the worker; every message
 * up to it that will ever reach the worker is already in its inbox. So a
 * subscriber filtering its inbox at the snapshot's seq receives the replay,
 * then the live messages, without a gap or a duplicate.
 *
 * Interest changes only when a worker's local subscription count for a
 * pattern goes 0 <-> 1, so the interest map is read-mostly (RW lock).
 *
 * --max-topics: past the limit, topics nobody subscribes to are evicted in
 * approximately least-recently-used order (the CLOCK algorithm: one "used"
 * bit per topic, set by publishes and subscribes and cleared by a sweeping
 * hand), history with them. A topic created again later starts a new epoch,
 * so a client holding a seq of the old one learns that it cannot recover.
 */
#ifndef WSBROKER_REGISTRY_H
#define WSBROKER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

typedef struct reg reg_t;

/* Hand frame f (one reference, now owned by the callee) to worker w.
 * Called with the topic's stripe lock held; must not call back into the
 * registry. */
typedef void (*reg_post_fn)(void *arg, int w, frame_t *f);

#define REG_EPOCH_LEN 16 /* the broker's epoch: 16 hex digits */
#define REG_EPOCH_MAX 40 /* a topic's epoch: the broker's, or it + "-<n>" */

/* The node as a whole gained (on) or lost its last subscription to
 * pattern (cluster mode subscribes in Redis). Called with the interest
 * lock held; must only queue work. */
typedef void (*reg_interest_fn)(void *arg, const char *pattern, size_t len, bool wildcard, bool on);

typedef struct reg_cfg {
    int nworkers;
    reg_interest_fn on_interest; /* or NULL */
    void *on_interest_arg;
    uint32_t history;        /* messages kept per topic; 0: none */
    uint64_t history_ttl_ms; /* retained messages expire after this; 0: never */
    uint64_t max_topics;     /* 0: no limit */
} reg_cfg_t;

reg_t *reg_new(const reg_cfg_t *cfg, reg_post_fn post, void *arg);
void reg_free(reg_t *r);

/* The epoch of this registry's seq space (changes on every broker start). */
const char *reg_epoch(const reg_t *r);

/* Post an already encoded message frame (topic and seq set; cluster mode:
 * the seq is the cluster's) to every worker with a matching subscription.
 * Takes over the caller's reference. */
void reg_fanout(reg_t *r, frame_t *f);

/* Publish data (raw JSON) on a concrete, valid topic. Returns the message's
 * seq (>= 1), or 0 on ENOMEM; *targets gets the mask of the workers the
 * message was posted to. Any thread. */
uint64_t reg_publish(reg_t *r, const char *topic, size_t tlen, const char *data, size_t dlen,
                     uint64_t *targets);

/* A subscription to a concrete topic: the snapshot and what to replay. */
typedef struct reg_sub {
    /* in */
    bool has_since;
    uint64_t since;
    const char *epoch; /* the client's epoch for since, or NULL */
    size_t epoch_len;
    int64_t last; /* replay at most this many of the latest; -1: not asked */
    /* out */
    uint64_t seq; /* the topic's latest seq at the snapshot */
    char topic_epoch[REG_EPOCH_MAX];
    int recovered;    /* since given: 1 if nothing after it is missing */
    frame_t **frames; /* to replay, oldest first (caller unrefs, frees) */
    size_t nframes;
} reg_sub_t;

/* Take the snapshot of topic for a subscription (creating the topic, which
 * fixes its epoch, once any topic has been evicted: before that a topic not
 * published to is seq 0 in the broker's epoch and is not created), with the
 * frames to replay for since/last. Returns 0, or
 * -1 on ENOMEM. Call after the worker's interest is registered. */
int reg_subscribe(reg_t *r, const char *topic, size_t tlen, reg_sub_t *s);

/* Release what reg_subscribe returned (entries set to NULL are skipped:
 * the caller passed those references on). */
void reg_sub_release(reg_sub_t *s);

/* For each topic matching pattern that retains messages: cb with the topic's
 * snapshot seq and up to last of its latest frames (oldest first; cb
 * takes over the references, the array is reused). Returns 0, or -1 on
 * ENOMEM. Call after the worker's interest is registered. */
typedef void (*reg_replay_fn)(void *arg, uint64_t seq, frame_t **frames, size_t n);
int reg_replay_pattern(reg_t *r, const char *pattern, size_t plen, uint64_t last, reg_replay_fn cb,
                       void *arg);

/* Worker w now has (on) or no longer has (!on) a subscription to pattern.
 * Returns 0, or -1 on ENOMEM (interest unchanged). */
int reg_interest(reg_t *r, int w, const char *pattern, size_t len, bool wildcard, bool on);

/* Drop expired history from worker w's share of the topics (of n workers'),
 * for topics nobody publishes to or subscribes to any more. */
void reg_sweep(reg_t *r, int w, int n);

typedef struct reg_stats {
    uint64_t topics;   /* topics in the table */
    uint64_t evicted;  /* topics evicted by --max-topics, since start */
    uint64_t retained; /* messages held in history */
} reg_stats_t;

void reg_get_stats(reg_t *r, reg_stats_t *out);

#endif
