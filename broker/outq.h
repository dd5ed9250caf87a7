/*
 * outq.h - a connection's output queue: a ring of shared frames (frame.h)
 * waiting for the socket, the bytes of the first one already written, and
 * the total not yet written. The ring's storage comes from the worker's
 * pool (rings.h) and goes back to it as soon as the queue is empty, so an
 * idle connection holds none. Used by one worker's thread only.
 */
#ifndef WSBROKER_OUTQ_H
#define WSBROKER_OUTQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "frame.h"
#include "rings.h"

typedef struct outq {
    frame_t **q; /* cap slots (a power of two), or NULL when empty */
    uint32_t cap, head, len;
    uint32_t off;   /* bytes of the first frame already written */
    uint64_t bytes; /* queued and not yet written */
} outq_t;

static inline frame_t *outq_at(const outq_t *o, uint32_t i)
{
    return o->q[(o->head + i) & (o->cap - 1)];
}

/* Room for one more frame: the next ring size. Returns -1 on ENOMEM. */
int outq_grow(outq_t *o, ring_pool_t *pool);

/* Append f (the queue takes the caller's reference). Returns -1 on ENOMEM,
 * leaving f to the caller. */
static inline int outq_push(outq_t *o, ring_pool_t *pool, frame_t *f)
{
    if (o->len == o->cap && outq_grow(o, pool) != 0)
        return -1;
    o->q[(o->head + o->len) & (o->cap - 1)] = f;
    o->len++;
    o->bytes += f->len;
    return 0;
}

/* n bytes of the head are gone (written, or taken for encryption): the
 * frames they complete are released. */
void outq_advance(outq_t *o, ring_pool_t *pool, size_t n);

/* Release every frame, and the ring. */
void outq_clear(outq_t *o, ring_pool_t *pool);

/* Release the frames not yet begun (closing: they will never be sent); a
 * partly written frame stays, to be completed. */
void outq_drop_unsent(outq_t *o);

/* Point iov (at most max entries) at the head of the queue. Runs of two or
 * more frames of up to OUTQ_GATHER_FRAME bytes are copied back to back
 * into gather (gcap bytes) and go out as one entry; a lone or large frame
 * is pointed at in place. Sets *n to the number of entries; returns their
 * total length. */
#define OUTQ_GATHER_FRAME 1024
size_t outq_iov(const outq_t *o, struct iovec *iov, uint32_t max, uint8_t *gather, size_t gcap,
                uint32_t *n);

/* Copy up to cap bytes from the head into buf (not consuming them). */
size_t outq_copy(const outq_t *o, uint8_t *buf, size_t cap);

#endif
