/*
 * rings.c - a worker's unused output rings (see rings.h).
 */
#include "rings.h"

#include <stdlib.h>

#define KEPT 4096 /* rings of each size per worker; beyond that back to malloc */

static ring_stack_t *stack_of(ring_pool_t *p, uint32_t cap)
{
    return cap == RING_SMALL ? &p->small : cap == RING_MID ? &p->mid : NULL;
}

frame_t **ring_take(ring_pool_t *p, uint32_t cap)
{
    ring_stack_t *st = stack_of(p, cap);
    void **r = st != NULL ? st->top : NULL;
    if (r == NULL)
        return malloc(cap * sizeof(frame_t *));
    st->top = r[0];
    if (--st->n < st->low)
        st->low = st->n;
    return (frame_t **)r;
}

void ring_give(ring_pool_t *p, frame_t **q, uint32_t cap)
{
    ring_stack_t *st = stack_of(p, cap);
    if (st == NULL || st->n >= KEPT) {
        free(q);
        return;
    }
    void **r = (void **)q;
    r[0] = st->top;
    st->top = r;
    st->n++;
}

static void stack_trim(ring_stack_t *st, bool all)
{
    /* Those not taken since the last trim are not needed. */
    for (uint32_t k = all ? st->n : st->low; k > 0; k--) {
        void **r = st->top;
        st->top = r[0];
        st->n--;
        free(r);
    }
    st->low = st->n;
}

void ring_trim(ring_pool_t *p, bool all)
{
    stack_trim(&p->small, all);
    stack_trim(&p->mid, all);
}
