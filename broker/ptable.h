/*
 * ptable.h - a table of subscription patterns, matched against topics.
 *
 * Concrete patterns ("chat.lobby") live in a hash map keyed by the whole
 * string, so the common case costs one lookup. Patterns with wildcard
 * segments live in a segment trie whose nodes have '*' and '>' edges next to
 * their exact children; matching walks exact and '*' edges in step with the
 * topic's segments and takes '>' values along the way. Each pattern maps to
 * one caller value; the table never interprets it. Used for a worker's local
 * subscriptions and for the registry's cross-worker interest map. Not
 * thread-safe.
 */
#ifndef WSBROKER_PTABLE_H
#define WSBROKER_PTABLE_H

#include <stdbool.h>
#include <stddef.h>

#include "smap.h"

typedef struct pnode pnode_t;

typedef struct ptable {
    smap_t exact;  /* concrete pattern -> value */
    pnode_t *root; /* wildcard patterns; NULL while there are none */
    size_t nwild;
} ptable_t;

typedef void (*ptable_cb)(void *value, void *arg);

void ptable_init(ptable_t *t);
/* Frees the table's own memory; values are the caller's. */
void ptable_destroy(ptable_t *t);

/* Value stored for pattern, or NULL. */
void *ptable_get(const ptable_t *t, const char *pattern, size_t len);

/* Store value for pattern (not present yet). For concrete patterns the key
 * bytes are NOT copied: they must stay valid until ptable_remove (keep them
 * in the value). Returns 0, or -1 on ENOMEM. */
int ptable_put(ptable_t *t, const char *pattern, size_t len, bool wildcard, void *value);

/* Remove pattern; returns its value or NULL. */
void *ptable_remove(ptable_t *t, const char *pattern, size_t len, bool wildcard);

/* Call cb once for each stored pattern that matches the concrete topic. */
void ptable_match(const ptable_t *t, const char *topic, size_t len, ptable_cb cb, void *arg);

#endif
