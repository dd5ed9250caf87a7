/*
 * failalloc.c - allocation failure injection for fault tests, preloaded
 * into the broker (LD_PRELOAD).
 *
 * Off at start. SIGUSR1 turns it on: from then on each malloc, calloc and
 * realloc fails (NULL, errno ENOMEM) with probability 1/FAILALLOC_RATE
 * (default 20). SIGUSR2 turns it off again. At exit it prints
 * "failalloc: failed=N of M" to stderr, M being the allocations made while
 * it was on, so a test can tell that failures really happened.
 *
 * The real allocator is glibc's, reached through its __libc_* entry points
 * (no dlsym, which itself allocates).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static _Atomic int armed;
static _Atomic unsigned long failed, seen;
static unsigned long rate = 20;

static int fail_now(void)
{
    static __thread uint64_t x;
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    if (x == 0)
        x = (uint64_t)(uintptr_t)&x | 1; /* per-thread seed */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    atomic_fetch_add_explicit(&seen, 1, memory_order_relaxed);
    if (x % rate != 0)
        return 0;
    atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);
    errno = ENOMEM;
    return 1;
}

void *malloc(size_t n)
{
    return fail_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (n != 0 && fail_now())
        return NULL; /* p stays valid, as with a real failure */
    return __libc_realloc(p, n);
}

static void on_signal(int sig)
{
    atomic_store(&armed, sig == SIGUSR1);
}

__attribute__((constructor)) static void setup(void)
{
    const char *r = getenv("FAILALLOC_RATE");
    if (r != NULL && atoi(r) > 0)
        rate = (unsigned long)atoi(r);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
}

__attribute__((destructor)) static void report(void)
{
    char line[96];
    int n = snprintf(line, sizeof(line), "failalloc: failed=%lu of %lu\n", atomic_load(&failed),
                     atomic_load(&seen));
    if (n > 0 && write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
