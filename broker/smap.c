/*
 * smap.c - open-addressing string hash map (see smap.h).
 */
#include "smap.h"

#include <stdlib.h>
#include <string.h>

/* SipHash-1-3 (Aumasson and Bernstein's keyed hash with one compression
 * and three finalization rounds) under a key chosen at random when the
 * process starts: a client that picks topic names cannot predict which
 * names collide, so it cannot make probe runs long. */
static uint64_t sip_k0 = 0x736f6d6570736575ull, sip_k1 = 0x646f72616e646f6dull;

void smap_seed(const uint8_t key[16])
{
    memcpy(&sip_k0, key, 8);
    memcpy(&sip_k1, key + 8, 8);
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t smap_hash(const char *key, size_t len)
{
    uint64_t v0 = sip_k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = sip_k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = sip_k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = sip_k1 ^ 0x7465646279746573ull;
    const uint8_t *p = (const uint8_t *)key;
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts; the hash is process-local */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    uint64_t h = v0 ^ v1 ^ v2 ^ v3;
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
