/*
 * smap.c - open-addressing string hash map (see smap.h).
 */
#include "smap.h"

#include <stdlib.h>
#include <string.h>

uint64_t smap_hash(const char *key, size_t len)
{
    /* FNV-1a, then a final avalanche so linear probing sees mixed low bits. */
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

void smap_init(smap_t *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->count = 0;
}

void smap_destroy(smap_t *m)
{
    free(m->slots);
    smap_init(m);
}

static smap_entry_t *find(const smap_t *m, uint64_t h, const char *key, size_t len)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        smap_entry_t *e = &m->slots[i];
        if (e->hash == 0)
            return NULL;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
}

void *smap_get(const smap_t *m, const char *key, size_t len)
{
    smap_entry_t *e = find(m, smap_hash(key, len), key, len);
    return e ? e->value : NULL;
}

static void place(smap_entry_t *slots, size_t cap, const smap_entry_t *src)
{
    size_t mask = cap - 1;
    size_t i = src->hash & mask;
    while (slots[i].hash != 0)
        i = (i + 1) & mask;
    slots[i] = *src;
}

static int grow(smap_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 8;
    smap_entry_t *ns = calloc(ncap, sizeof(*ns));
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].hash != 0)
            place(ns, ncap, &m->slots[i]);
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int smap_put(smap_t *m, const char *key, size_t len, void *value)
{
    /* Keep the load factor at or below 3/4. */
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return -1;
    smap_entry_t e = {smap_hash(key, len), key, len, value};
    place(m->slots, m->cap, &e);
    m->count++;
    return 0;
}

void *smap_del(smap_t *m, const char *key, size_t len)
{
    smap_entry_t *e = find(m, smap_hash(key, len), key, len);
    if (e == NULL)
        return NULL;
    void *value = e->value;
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(e - m->slots);
    /* Backward-shift: move later members of the probe run into the hole
     * when their home slot does not lie cyclically in (hole, j]. */
    for (size_t j = (hole + 1) & mask; m->slots[j].hash != 0; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        size_t dist_j = (j - home) & mask;
        size_t dist_hole = (j - hole) & mask;
        if (dist_j >= dist_hole) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].hash = 0;
    m->slots[hole].key = NULL;
    m->slots[hole].value = NULL;
    m->count--;
    return value;
}
