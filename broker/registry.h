/*
 * registry.h - the broker-wide topic registry: sequence numbers and the
 * cross-worker interest map. The only state shared by all workers.
 *
 * Publish path (any worker): lock the topic's stripe, take the next seq,
 * look up which workers have a matching subscription, encode the message
 * frame once and post a reference to each of those workers' inboxes, then
 * unlock. Because seq assignment and posting happen under one lock, every
 * inbox receives a topic's messages in seq order, whichever workers publish.
 *
 * Interest changes only when a worker's local subscription count for a
 * pattern goes 0 <-> 1, so the interest map is read-mostly (RW lock).
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

#define REG_EPOCH_LEN 16

reg_t *reg_new(int nworkers, reg_post_fn post, void *arg);
void reg_free(reg_t *r);

/* The epoch of this registry's seq space (changes on every broker start). */
const char *reg_epoch(const reg_t *r);

/* Publish data (raw JSON) on a concrete, valid topic. Returns the message's
 * seq (>= 1), or 0 on ENOMEM; *targets gets the mask of the workers the
 * message was posted to. Any thread. */
uint64_t reg_publish(reg_t *r, const char *topic, size_t tlen, const char *data, size_t dlen,
                     uint64_t *targets);

/* The latest seq of topic, 0 if nothing was published on it yet. */
uint64_t reg_topic_seq(reg_t *r, const char *topic, size_t tlen);

/* Worker w now has (on) or no longer has (!on) a subscription to pattern.
 * Returns 0, or -1 on ENOMEM (interest unchanged). */
int reg_interest(reg_t *r, int w, const char *pattern, size_t len, bool wildcard, bool on);

/* Number of topics that have a seq. */
uint64_t reg_topic_count(reg_t *r);

#endif
