/*
 * frame.h - immutable, reference-counted outbound WebSocket frames.
 *
 * A published message is encoded once into one frame_t and the same bytes
 * are queued on every subscriber on every worker: delivery costs a pointer
 * and a reference, never a copy. The payload is written first at a fixed
 * offset and the header is then put in the headroom in front of it, so
 * header and payload are contiguous and go out in one iovec. The topic and
 * seq ride along for matching and for per-subscription seq filters.
 *
 * Ownership: frame_* constructors return a frame with one reference, owned
 * by the caller. Once a frame is shared it is read-only. References may be
 * taken and dropped on any thread.
 */
#ifndef WSBROKER_FRAME_H
#define WSBROKER_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <wsproto/pmd.h>
#include <wsproto/ws_frame.h>

typedef struct frame {
    atomic_uint refs;
    uint32_t len;      /* bytes on the wire, starting at data */
    uint8_t *data;     /* first byte of the frame */
    uint64_t seq;      /* message frames: the topic's seq; else 0 */
    const char *topic; /* message frames: NUL-terminated topic; else NULL */
    uint16_t topic_len;
    uint8_t opcode;
    /* Inbox items other than fan-out (cluster mode's answers): a frame for
     * one connection, or a subscription's state change. */
    uint8_t kind;   /* FK_* */
    uint32_t room;  /* bytes after the headroom: payload and topic */
    uint64_t to;    /* FK_DIRECT, FK_SUB_*: the connection's id */
    uint64_t token; /* the subscription it concerns, 0 if none */
    /* The same message compressed (permessage-deflate, no context
     * takeover, 15-bit window), made by the first worker that needs it and
     * shared from then on; freed with this frame. */
    _Atomic(struct frame *) twin;
    uint8_t buf[]; /* [WS_MAX_SERVER_HEADER headroom][payload][topic NUL] */
} frame_t;

enum {
    FK_FANOUT = 0, /* a published message: every matching subscriber */
    FK_DIRECT,     /* queue on connection `to` (with token: replayed for it) */
    FK_SUB_READY,  /* subscription `token` of `to` is live from seq on */
    FK_SUB_FAILED, /* subscription `token` of `to` could not be made */
};

/* A frame with room for payload_cap payload bytes and a topic of topic_len
 * bytes. Write the payload at frame_payload(), then call frame_seal(). NULL
 * on ENOMEM. */
frame_t *frame_new(size_t payload_cap, size_t topic_len);

static inline uint8_t *frame_payload(frame_t *f)
{
    return f->buf + WS_MAX_SERVER_HEADER;
}

/* f made anew for payload_cap and topic_len bytes, as frame_new would
 * return it, when the caller holds its only reference and it has room
 * (but not more than twice what is asked); NULL otherwise, f untouched.
 * A retained message that leaves a topic's history makes room for the
 * next one without a trip through the allocator. */
frame_t *frame_reuse(frame_t *f, size_t payload_cap, size_t topic_len);

/* Ask for the first `bytes` bytes of f's memory in the cache, for writing,
 * without waiting (f need not be live). */
static inline void frame_prefetch(const frame_t *f, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char *)f + o, 1, 3);
}

/* The room (frame_t.room) for a payload of payload_cap bytes and a topic of
 * topic_len, and the bytes such a frame occupies. */
static inline size_t frame_room(size_t payload_cap, size_t topic_len)
{
    return payload_cap + topic_len + 1;
}

static inline size_t frame_size(size_t payload_cap, size_t topic_len)
{
    return sizeof(frame_t) + WS_MAX_SERVER_HEADER + frame_room(payload_cap, topic_len);
}

/* Write the header for a payload_len-byte FIN frame in front of the payload. */
void frame_seal(frame_t *f, uint8_t opcode, size_t payload_len);

/* Copy topic into the frame and set seq. */
void frame_set_topic(frame_t *f, const char *topic, size_t len, uint64_t seq);

/* One-call constructors: a FIN frame with a copy of payload. */
frame_t *frame_make(uint8_t opcode, const void *payload, size_t len);
/* A Close frame with code and reason (code 0: empty payload). */
frame_t *frame_close(uint16_t code, const char *reason);
/* Raw bytes (an HTTP response), no WebSocket header. */
frame_t *frame_raw(const void *bytes, size_t len);
/* The n frames of f back to back, as one frame that writes them all (a
 * run of messages queued in one piece). Seq and opcode are the last
 * one's; no topic. NULL on ENOMEM. */
frame_t *frame_join(frame_t *const *f, size_t n);

static inline frame_t *frame_ref(frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

/* Add n references at once (fan-out takes one per subscriber). */
static inline void frame_ref_n(frame_t *f, unsigned n)
{
    atomic_fetch_add_explicit(&f->refs, n, memory_order_relaxed);
}

void frame_unref(frame_t *f);

/* The payload of a FIN frame made here (after its header). */
const uint8_t *frame_payload_span(const frame_t *f, size_t *len);

/* f's payload compressed with d into a new frame (RSV1 set, same opcode),
 * with one reference; NULL on failure. */
frame_t *frame_deflate(const frame_t *f, pmd_deflater_t *d);

/* f's compressed twin, made with d (no context takeover, 15 bits) if f has
 * none yet. The twin belongs to f: callers add references for what they
 * queue. NULL on failure. Any thread. */
frame_t *frame_twin(frame_t *f, pmd_deflater_t *d);

#endif
