/*
 * link.h - intrusive circular doubly linked lists.
 *
 * A list head is a link_t whose next/prev point to itself when empty. An
 * element embeds a link_t and is recovered with link_entry (container_of).
 * An unlinked element has next == NULL, so link_linked() tells whether it is
 * on a list; link_remove() on an unlinked element is a no-op.
 */
#ifndef WSBROKER_LINK_H
#define WSBROKER_LINK_H

#include <stdbool.h>
#include <stddef.h>

typedef struct link {
    struct link *next, *prev;
} link_t;

#define link_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void link_init(link_t *head)
{
    head->next = head->prev = head;
}

static inline bool link_empty(const link_t *head)
{
    return head->next == head;
}

static inline bool link_linked(const link_t *l)
{
    return l->next != NULL;
}

static inline void link_insert_tail(link_t *head, link_t *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

static inline void link_remove(link_t *l)
{
    if (l->next == NULL)
        return;
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

static inline link_t *link_first(const link_t *head)
{
    return head->next == head ? NULL : head->next;
}

#endif
