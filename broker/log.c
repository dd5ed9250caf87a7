/*
 * log.c - structured logging through a bounded queue and one writer thread
 * (see log.h).
 */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_QUEUE (256 * 1024) /* bytes of lines waiting for the writer */
#define LOG_LINE  1024

log_level_t log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool running, stopping;
    char buf[LOG_QUEUE]; /* lines waiting, in order */
    size_t len;
    uint64_t dropped_unreported;
    _Atomic uint64_t dropped;
} q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* stderr is gone: nothing better to do with the line */
        p += w;
        n -= (size_t)w;
    }
}

/* Format the common prefix and text (NULL: none) into line; returns its
 * length including the final newline. */
static size_t format_line(char *line, size_t cap, log_level_t level, int worker, uint64_t conn,
                          const char *event, const char *text)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, cap - n, ".%03ldZ level=%s", ts.tv_nsec / 1000000,
                          level_names[level]);
    if (worker >= 0 && n < cap)
        n += (size_t)snprintf(line + n, cap - n, " worker=%d", worker);
    if (conn != 0 && n < cap)
        n += (size_t)snprintf(line + n, cap - n, " conn=%llu", (unsigned long long)conn);
    if (n < cap)
        n += (size_t)snprintf(line + n, cap - n, " event=%s", event);
    if (text != NULL && n < cap - 2)
        n += (size_t)snprintf(line + n, cap - n, " %s", text);
    if (n > cap - 2)
        n = cap - 2;
    line[n++] = '\n';
    line[n] = '\0';
    return n;
}

static void *writer(void *arg)
{
    (void)arg;
    static char out[LOG_QUEUE];
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (q.len == 0 && !q.stopping)
            pthread_cond_wait(&q.cv, &q.mu);
        if (q.len == 0 && q.stopping)
            break;
        size_t n = q.len;
        memcpy(out, q.buf, n);
        q.len = 0;
        uint64_t lost = q.dropped_unreported;
        q.dropped_unreported = 0;
        pthread_mutex_unlock(&q.mu);
        write_all(out, n);
        if (lost > 0) {
            char line[LOG_LINE], text[64];
            snprintf(text, sizeof(text), "lines=%llu", (unsigned long long)lost);
            write_all(line, format_line(line, sizeof(line), LOG_WARN, -1, 0, "log_dropped", text));
        }
        pthread_mutex_lock(&q.mu);
    }
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

int log_start(void)
{
    pthread_mutex_lock(&q.mu);
    q.stopping = false;
    int rc = pthread_create(&q.thread, NULL, writer, NULL);
    q.running = rc == 0;
    pthread_mutex_unlock(&q.mu);
    return rc == 0 ? 0 : -1;
}

void log_stop(void)
{
    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        return;
    }
    q.stopping = true;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    pthread_join(q.thread, NULL);
    pthread_mutex_lock(&q.mu);
    q.running = false;
    pthread_mutex_unlock(&q.mu);
}

uint64_t log_dropped(void)
{
    return atomic_load_explicit(&q.dropped, memory_order_relaxed);
}

void log_write(log_level_t level, int worker, uint64_t conn, const char *event, const char *fmt,
               ...)
{
    char line[LOG_LINE], text[LOG_LINE];
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
    }
    size_t n = format_line(line, sizeof(line), level, worker, conn, event, fmt ? text : NULL);
    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        write_all(line, n);
        return;
    }
    if (q.len + n > sizeof(q.buf)) {
        q.dropped_unreported++;
        pthread_mutex_unlock(&q.mu);
        atomic_fetch_add_explicit(&q.dropped, 1, memory_order_relaxed);
        return;
    }
    memcpy(q.buf + q.len, line, n);
    bool was_empty = q.len == 0;
    q.len += n;
    if (was_empty)
        pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
}

bool log_limit_pass(log_limit_t *l, uint32_t *suppressed)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    if (ts.tv_sec != l->second) {
        l->second = ts.tv_sec;
        l->used = 0;
    }
    if (l->used >= LOG_LIMIT_PER_SECOND) {
        l->suppressed++;
        return false;
    }
    l->used++;
    *suppressed = l->suppressed;
    l->suppressed = 0;
    return true;
}
