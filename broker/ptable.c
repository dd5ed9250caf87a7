/*
 * ptable.c - pattern table: hash map for concrete patterns plus a segment
 * trie for wildcard ones (see ptable.h).
 *
 *   chat.*      root -kids[chat]-> n1 -star-> n2 (value)
 *   chat.>      root -kids[chat]-> n1 -gt-> n3 (value)
 *   *.alerts    root -star-> n4 -kids[alerts]-> n5 (value)
 *
 * Matching "chat.room1" visits root, then kids[chat] and star, and at each
 * node first takes the '>' child's value (a '>' matches the one or more
 * segments still unread).
 */
#include "ptable.h"

#include <stdlib.h>
#include <string.h>

struct pnode {
    pnode_t *parent;
    smap_t kids; /* exact segment -> child; keys point into child->seg */
    pnode_t *star;
    pnode_t *gt;
    void *value;
    size_t seg_len;
    char seg[]; /* "*" or ">" for wildcard edges */
};

static pnode_t *node_new(pnode_t *parent, const char *seg, size_t len)
{
    pnode_t *n = calloc(1, sizeof(*n) + len + 1);
    if (n == NULL)
        return NULL;
    n->parent = parent;
    smap_init(&n->kids);
    memcpy(n->seg, seg, len);
    n->seg_len = len;
    return n;
}

static void node_free_tree(pnode_t *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->kids.cap; i++)
        if (n->kids.slots[i].hash != 0)
            node_free_tree(n->kids.slots[i].value);
    smap_destroy(&n->kids);
    node_free_tree(n->star);
    node_free_tree(n->gt);
    free(n);
}

void ptable_init(ptable_t *t)
{
    smap_init(&t->exact);
    t->root = NULL;
    t->nwild = 0;
}

void ptable_destroy(ptable_t *t)
{
    smap_destroy(&t->exact);
    node_free_tree(t->root);
    t->root = NULL;
    t->nwild = 0;
}

static size_t seg_end(const char *s, size_t len)
{
    const char *dot = memchr(s, '.', len);
    return dot ? (size_t)(dot - s) : len;
}

static bool is_star(const char *s, size_t n)
{
    return n == 1 && s[0] == '*';
}

static bool is_gt(const char *s, size_t n)
{
    return n == 1 && s[0] == '>';
}

/* Child of n for one pattern segment; created when create is set. */
static pnode_t *child(pnode_t *n, const char *seg, size_t len, bool create)
{
    pnode_t **edge = is_star(seg, len) ? &n->star : is_gt(seg, len) ? &n->gt : NULL;
    if (edge != NULL) {
        if (*edge == NULL && create)
            *edge = node_new(n, seg, len);
        return *edge;
    }
    pnode_t *c = smap_get(&n->kids, seg, len);
    if (c == NULL && create) {
        c = node_new(n, seg, len);
        if (c != NULL && smap_put(&n->kids, c->seg, len, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

static pnode_t *walk(ptable_t *t, const char *p, size_t len, bool create)
{
    if (t->root == NULL) {
        if (!create)
            return NULL;
        t->root = node_new(NULL, "", 0);
        if (t->root == NULL)
            return NULL;
    }
    pnode_t *n = t->root;
    size_t off = 0;
    for (;;) {
        size_t sl = seg_end(p + off, len - off);
        n = child(n, p + off, sl, create);
        if (n == NULL)
            return NULL;
        off += sl;
        if (off >= len)
            return n;
        off++; /* the dot */
    }
}

/* Remove empty nodes from n upwards. */
static void prune(ptable_t *t, pnode_t *n)
{
    while (n != NULL && n->value == NULL && n->kids.count == 0 && n->star == NULL &&
           n->gt == NULL) {
        pnode_t *parent = n->parent;
        if (parent == NULL) {
            t->root = NULL;
        } else if (parent->star == n) {
            parent->star = NULL;
        } else if (parent->gt == n) {
            parent->gt = NULL;
        } else {
            smap_del(&parent->kids, n->seg, n->seg_len);
        }
        smap_destroy(&n->kids);
        free(n);
        n = parent;
    }
}

void *ptable_get(const ptable_t *t, const char *pattern, size_t len)
{
    void *v = smap_get(&t->exact, pattern, len);
    if (v != NULL || t->root == NULL)
        return v;
    pnode_t *n = walk((ptable_t *)t, pattern, len, false);
    return n ? n->value : NULL;
}

int ptable_put(ptable_t *t, const char *pattern, size_t len, bool wildcard, void *value)
{
    if (!wildcard)
        return smap_put(&t->exact, pattern, len, value);
    pnode_t *n = walk(t, pattern, len, true);
    if (n == NULL) {
        if (t->root != NULL)
            prune(t, t->root);
        return -1;
    }
    n->value = value;
    t->nwild++;
    return 0;
}

void *ptable_remove(ptable_t *t, const char *pattern, size_t len, bool wildcard)
{
    if (!wildcard)
        return smap_del(&t->exact, pattern, len);
    pnode_t *n = walk(t, pattern, len, false);
    if (n == NULL || n->value == NULL)
        return NULL;
    void *v = n->value;
    n->value = NULL;
    t->nwild--;
    prune(t, n);
    return v;
}

static void match_node(const pnode_t *n, const char *s, size_t len, ptable_cb cb, void *arg)
{
    /* s is the unread rest of the topic: one or more segments. */
    if (n->gt != NULL && n->gt->value != NULL)
        cb(n->gt->value, arg);
    size_t sl = seg_end(s, len);
    bool last = sl == len;
    const pnode_t *next[2] = {smap_get(&n->kids, s, sl), n->star};
    for (int i = 0; i < 2; i++) {
        if (next[i] == NULL)
            continue;
        if (last) {
            if (next[i]->value != NULL)
                cb(next[i]->value, arg);
        } else {
            match_node(next[i], s + sl + 1, len - sl - 1, cb, arg);
        }
    }
}

void ptable_match(const ptable_t *t, const char *topic, size_t len, ptable_cb cb, void *arg)
{
    void *v = smap_get(&t->exact, topic, len);
    if (v != NULL)
        cb(v, arg);
    if (t->root != NULL && len > 0)
        match_node(t->root, topic, len, cb, arg);
}
