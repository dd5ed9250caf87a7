/*
 * testutil.c - guard-page copies and a small PRNG for the unit suites.
 */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_AREA (64 * 1024)

static uint8_t *slots[4];

static uint8_t *slot_base(int slot)
{
    if (slots[slot] == NULL) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uint8_t *m = mmap(NULL, GUARD_AREA + page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            abort();
        if (mprotect(m + GUARD_AREA, page, PROT_NONE) != 0)
            abort();
        slots[slot] = m;
    }
    return slots[slot];
}

uint8_t *guard_copy_slot(int slot, const void *src, size_t len)
{
    if (slot < 0 || slot > 3 || len > GUARD_AREA)
        abort();
    uint8_t *dst = slot_base(slot) + GUARD_AREA - len;
    if (len > 0)
        memcpy(dst, src, len);
    return dst;
}

uint64_t xorshift_next(xorshift_t *x)
{
    uint64_t s = x->s ? x->s : 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    x->s = s;
    return s;
}

size_t xorshift_range(xorshift_t *x, size_t lo, size_t hi)
{
    return lo + (size_t)(xorshift_next(x) % (uint64_t)(hi - lo + 1));
}
