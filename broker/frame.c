/*
 * frame.c - shared outbound frames (see frame.h).
 */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

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
    size_t room = frame_room(payload_cap, topic_len);
    if (room > UINT32_MAX)
        return NULL;
    frame_t *f = malloc(frame_size(payload_cap, topic_len));
    return f != NULL ? frame_init(f, room) : NULL;
}

frame_t *frame_reuse(frame_t *f, size_t payload_cap, size_t topic_len)
{
    size_t need = frame_room(payload_cap, topic_len);
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

frame_t *frame_join(frame_t *const *f, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += f[i]->len;
    frame_t *j = frame_new(len, 0);
    if (j == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(j->data + j->len, f[i]->data, f[i]->len);
        j->len += f[i]->len;
    }
    j->opcode = f[n - 1]->opcode;
    j->seq = f[n - 1]->seq;
    return j;
}

void frame_unref(frame_t *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        frame_t *twin = atomic_load_explicit(&f->twin, memory_order_acquire);
        if (twin != NULL)
            frame_unref(twin);
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
