/*
 * subs.c - the client's subscriptions: a chained hash table from pattern
 * string to entry (message delivery looks up concrete topics in it to
 * track seq), plus a list in creation order, the order in which a new
 * connection subscribes again. The table doubles when it holds more
 * entries than buckets, so lookups stay O(1) for any number of patterns.
 */
#include <stdlib.h>
#include <string.h>

#include "client_int.h"

static size_t hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

wsc_sub_t *wsc__subs_find(const wsc_subs_t *t, const char *p, size_t len)
{
    if (t->nbuckets == 0)
        return NULL;
    for (wsc_sub_t *s = t->buckets[hash(p, len) & (t->nbuckets - 1)]; s != NULL; s = s->hnext) {
        if (s->len == len && memcmp(s->pattern, p, len) == 0)
            return s;
    }
    return NULL;
}

static bool grow(wsc_subs_t *t)
{
    size_t n = t->nbuckets == 0 ? 16 : t->nbuckets * 2;
    wsc_sub_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return false;
    for (wsc_sub_t *s = t->head; s != NULL; s = s->next) {
        size_t i = hash(s->pattern, s->len) & (n - 1);
        s->hnext = b[i];
        b[i] = s;
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return true;
}

wsc_sub_t *wsc__subs_add(wsc_subs_t *t, const char *p, size_t len, bool concrete)
{
    if (t->count >= t->nbuckets && !grow(t) && t->nbuckets == 0)
        return NULL;
    wsc_sub_t *s = calloc(1, sizeof(*s) + len + 1);
    if (s == NULL)
        return NULL;
    memcpy(s->pattern, p, len);
    s->len = len;
    s->concrete = concrete;
    size_t i = hash(p, len) & (t->nbuckets - 1);
    s->hnext = t->buckets[i];
    t->buckets[i] = s;
    s->prev = t->tail;
    if (t->tail != NULL)
        t->tail->next = s;
    else
        t->head = s;
    t->tail = s;
    t->count++;
    return s;
}

void wsc__subs_remove(wsc_subs_t *t, wsc_sub_t *s)
{
    wsc_sub_t **pp = &t->buckets[hash(s->pattern, s->len) & (t->nbuckets - 1)];
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        t->head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    else
        t->tail = s->prev;
    t->count--;
    free(s);
}

void wsc__subs_free(wsc_subs_t *t)
{
    wsc_sub_t *s = t->head;
    while (s != NULL) {
        wsc_sub_t *next = s->next;
        free(s);
        s = next;
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}
