/*
 * rings.h - a worker's unused output rings, kept for reuse.
 *
 * A connection's output queue is a ring of frame pointers whose size is a
 * power of two. Rings of the two common sizes are kept by the worker while
 * unused, instead of by the connections: an idle connection holds none, one
 * that gets a message now and then takes a small ring, and one that is sent
 * a burst (a publisher's acks for what it wrote in one go) a mid-sized one,
 * neither from malloc. A ring grows RING_SMALL, RING_MID, then doubles.
 * One worker's pool is used by that worker's thread only.
 */
#ifndef WSBROKER_RINGS_H
#define WSBROKER_RINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "frame.h"

#define RING_SMALL 8
#define RING_MID   64

/* Unused rings of one size: a stack threaded through their first slot. */
typedef struct ring_stack {
    void *top;
    uint32_t n, low; /* how many; the low mark since the last trim */
} ring_stack_t;

typedef struct ring_pool {
    ring_stack_t small, mid;
} ring_pool_t;

/* The capacity after cap (0 for a connection that holds none). */
static inline uint32_t ring_next_cap(uint32_t cap)
{
    return cap == 0 ? RING_SMALL : cap == RING_SMALL ? RING_MID : cap * 2;
}

/* A ring of cap slots (from the pool for the two kept sizes); NULL on ENOMEM. */
frame_t **ring_take(ring_pool_t *p, uint32_t cap);

/* Give back ring q of cap slots: kept, or freed beyond the pool's bound (a
 * NULL ring of cap 0 is nothing to give). */
void ring_give(ring_pool_t *p, frame_t **q, uint32_t cap);

/* Free the rings not taken since the last call (a periodic tick), or all. */
void ring_trim(ring_pool_t *p, bool all);

#endif
