/*
 * smap.h - open-addressing hash map from byte strings to pointers.
 *
 * Keys are not copied: the caller keeps each key's bytes alive for as long
 * as the entry exists (in this broker the value owns its key). Linear
 * probing with backward-shift deletion, so there are no tombstones and
 * lookups stay short after churn. The hash is keyed at process start, so
 * which strings collide cannot be chosen from outside. Not thread-safe; the
 * owner locks.
 */
#ifndef WSBROKER_SMAP_H
#define WSBROKER_SMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct smap_entry {
    uint64_t hash; /* 0: empty slot */
    const char *key;
    size_t len;
    void *value;
} smap_entry_t;

typedef struct smap {
    smap_entry_t *slots;
    size_t cap; /* power of two, or 0 before the first insert */
    size_t count;
} smap_t;

/* Keyed hash of key (never 0). Slots use its low bits; callers that split
 * a table further (the registry's lock stripes) take the high bits. */
uint64_t smap_hash(const char *key, size_t len);

/* Set the hash key (16 random bytes), once, before any map is filled. */
void smap_seed(const uint8_t key[16]);

void smap_init(smap_t *m);
/* Frees the table, not the keys or values. */
void smap_destroy(smap_t *m);
void *smap_get(const smap_t *m, const char *key, size_t len);
/* Insert key (which must not be present). Returns 0, or -1 on ENOMEM. */
int smap_put(smap_t *m, const char *key, size_t len, void *value);
/* Remove key; returns its value, or NULL if absent. */
void *smap_del(smap_t *m, const char *key, size_t len);

/* Iterate: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].hash) ... */

#endif
