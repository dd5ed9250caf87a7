/*
 * frame.c - shared outbound frames (see frame.h).
 */
#include "frame.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Small frames (replies: acks, errors, pongs) come from a per-thread stack
 * of equal-sized frames instead of from malloc. A worker makes a burst of
 * acks as it reads a burst of publishes and frees them all when they are
 * written: more than glibc's per-thread cache holds (seven a size), so
 * without the stack the rest went through the arena's bins at every turn.
 * A frame goes back to the stack of whichever thread drops it last. A
 * worker's burst can be large (a turn that reads 500 publishers with 32
 * publishes each makes 16,000 acks before it writes any), so the bound is
 * high, and frame_cache_trim gives back what a thread has stopped using;
 * a stack is released when its thread exits. */
#define SMALL_ROOM 192
#define SMALL_KEPT 16384

typedef struct small_stack {
    frame_t *top;    /* linked through the first bytes of buf */
    unsigned n, low; /* how many; the low mark since the last trim */
} small_stack_t;

static _Thread_local small_stack_t small;
static pthread_key_t small_key;
static pthread_once_t small_once = PTHREAD_ONCE_INIT;

static frame_t *small_next(frame_t *f)
{
    frame_t *next;
    memcpy(&next, f->buf, sizeof next);
    return next;
}

static void small_release(void *arg)
{
    small_stack_t *st = arg;
    while (st->top != NULL) {
        frame_t *f = st->top;
        st->top = small_next(f);
        free(f);
    }
    st->n = st->low = 0;
}

void frame_cache_trim(bool all)
{
    /* Those not taken since the last trim are not needed. */
    for (unsigned k = all ? small.n : small.low; k > 0; k--) {
        frame_t *f = small.top;
        small.top = small_next(f);
        small.n--;
        free(f);
    }
    small.low = small.n;
}

static void small_key_make(void)
{
    (void)pthread_key_create(&small_key, small_release);
}

static void small_push(frame_t *f)
{
    if (small.n >= SMALL_KEPT) {
        free(f);
        return;
    }
    if (small.n == 0) {
        /* registered again after every release: the destructor then
         * empties this thread's stack when the thread exits */
        pthread_once(&small_once, small_key_make);
        (void)pthread_setspecific(small_key, &small);
    }
    memcpy(f->buf, &small.top, sizeof small.top);
    small.top = f;
    small.n++;
}

static frame_t *frame_init(frame_t *f, size_t room)
{
    atomic_init(&f->refs, 1);
    f->len = 0;
    f->data = frame_payload(f);
    f->seq = 0;
    f->topic = NULL;
    f->topic_len = 0;
    f->opcode = 0;
    atomic_init(&f->twin, NULL);
    f->kind = FK_FANOUT;
    f->room = (uint32_t)room;
    f->to = f->token = 0;
    return f;
}

frame_t *frame_new(size_t payload_cap, size_t topic_len)
{
    size_t room = payload_cap + topic_len + 1;
    if (room > UINT32_MAX)
        return NULL;
    if (room <= SMALL_ROOM) {
        frame_t *f = small.top;
        if (f != NULL) {
            small.top = small_next(f);
            if (--small.n < small.low)
                small.low = small.n;
            /* A burst's frames no longer fit in the cache when they come
             * back: fetch the next one's lines (its link, header and the
             * reply's first bytes) while this one is used. */
            if (small.top != NULL)
                frame_prefetch(small.top, 192);
        } else {
            f = malloc(sizeof(*f) + WS_MAX_SERVER_HEADER + SMALL_ROOM);
        }
        return f != NULL ? frame_init(f, SMALL_ROOM) : NULL;
    }
    frame_t *f = malloc(frame_size(payload_cap, topic_len));
    return f != NULL ? frame_init(f, room) : NULL;
}

frame_t *frame_reuse(frame_t *f, size_t payload_cap, size_t topic_len)
{
    size_t need = payload_cap + topic_len + 1;
    /* acquire: what the other holders did with f happened before */
    if (atomic_load_explicit(&f->refs, memory_order_acquire) != 1 || f->room < need ||
        f->room / 2 > need)
        return NULL;
    frame_t *twin = atomic_load_explicit(&f->twin, memory_order_relaxed);
    if (twin != NULL)
        frame_unref(twin);
    return frame_init(f, f->room);
}

void frame_seal(frame_t *f, uint8_t opcode, size_t payload_len)
{
    size_t h = ws_header_size(payload_len, false);
    f->data = frame_payload(f) - h;
    ws_frame_header(f->data, opcode, true, false, payload_len, NULL);
    f->len = (uint32_t)(h + payload_len);
    f->opcode = opcode;
}

void frame_set_topic(frame_t *f, const char *topic, size_t len, uint64_t seq)
{
    char *dst = (char *)f->data + f->len;
    memcpy(dst, topic, len);
    dst[len] = '\0';
    f->topic = dst;
    f->topic_len = (uint16_t)len;
    f->seq = seq;
}

frame_t *frame_make(uint8_t opcode, const void *payload, size_t len)
{
    frame_t *f = frame_new(len, 0);
    if (f == NULL)
        return NULL;
    if (len > 0)
        memcpy(frame_payload(f), payload, len);
    frame_seal(f, opcode, len);
    return f;
}

frame_t *frame_close(uint16_t code, const char *reason)
{
    uint8_t p[WS_MAX_CONTROL];
    size_t n = ws_close_payload(p, code, reason, reason ? strlen(reason) : 0);
    return frame_make(WS_OP_CLOSE, p, n);
}

frame_t *frame_raw(const void *bytes, size_t len)
{
    frame_t *f = frame_new(len, 0);
    if (f == NULL)
        return NULL;
    memcpy(f->data, bytes, len);
    f->len = (uint32_t)len;
    return f;
}

void frame_unref(frame_t *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        frame_t *twin = atomic_load_explicit(&f->twin, memory_order_acquire);
        if (twin != NULL)
            frame_unref(twin);
        if (f->room == SMALL_ROOM)
            small_push(f);
        else
            free(f);
    }
}

const uint8_t *frame_payload_span(const frame_t *f, size_t *len)
{
    uint8_t l7 = f->data[1] & 0x7f;
    size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
    *len = f->len - hdr;
    return f->data + hdr;
}

frame_t *frame_deflate(const frame_t *f, pmd_deflater_t *d)
{
    size_t plen;
    const uint8_t *p = frame_payload_span(f, &plen);
    size_t cap = pmd_deflate_bound(d, plen);
    frame_t *g = frame_new(cap, 0);
    if (g == NULL)
        return NULL;
    ssize_t n = pmd_deflate(d, p, plen, frame_payload(g), cap);
    if (n < 0) {
        frame_unref(g);
        return NULL;
    }
    size_t h = ws_header_size((uint64_t)n, false);
    g->data = frame_payload(g) - h;
    ws_frame_header(g->data, f->opcode, true, true, (uint64_t)n, NULL);
    g->len = (uint32_t)(h + (size_t)n);
    g->opcode = f->opcode;
    return g;
}

frame_t *frame_twin(frame_t *f, pmd_deflater_t *d)
{
    frame_t *t = atomic_load_explicit(&f->twin, memory_order_acquire);
    if (t != NULL)
        return t;
    frame_t *mine = frame_deflate(f, d);
    if (mine == NULL)
        return NULL;
    frame_t *expected = NULL;
    if (atomic_compare_exchange_strong_explicit(&f->twin, &expected, mine, memory_order_acq_rel,
                                                memory_order_acquire))
        return mine;
    frame_unref(mine); /* another worker was first */
    return expected;
}
