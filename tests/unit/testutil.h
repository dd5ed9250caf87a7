/*
 * testutil.h - helpers shared by the unit suites.
 *
 * guard_copy() places input so that it ends exactly at an inaccessible page
 * (picohttpparser's trick): a parser that reads one byte past its input
 * faults instead of passing by luck. xorshift gives reproducible random
 * splits for "same input, every fragmentation" tests.
 */
#ifndef WSBROKER_TESTUTIL_H
#define WSBROKER_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Copy len bytes of src so that the copy ends at a PROT_NONE page. The
 * returned memory is writable and stays valid until the next guard_copy
 * call on the same slot (0..3). len must be at most 64 KiB. */
uint8_t *guard_copy_slot(int slot, const void *src, size_t len);
#define guard_copy(src, len) guard_copy_slot(0, (src), (len))

/* Deterministic PRNG for random splits. */
typedef struct xorshift {
    uint64_t s;
} xorshift_t;
uint64_t xorshift_next(xorshift_t *x);
/* A number in [lo, hi]. */
size_t xorshift_range(xorshift_t *x, size_t lo, size_t hi);

#endif
