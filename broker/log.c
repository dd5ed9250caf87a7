/*
 * log.c - structured logging (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

log_level_t log_min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_write(log_level_t level, int worker, uint64_t conn, const char *event, const char *fmt,
               ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    int w = snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s", ts.tv_nsec / 1000000,
                     level_names[level]);
    n += (size_t)w;
    if (worker >= 0)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " worker=%d", worker);
    if (conn != 0)
        n += (size_t)snprintf(line + n, sizeof(line) - n, " conn=%llu", (unsigned long long)conn);
    n += (size_t)snprintf(line + n, sizeof(line) - n, " event=%s", event);
    if (fmt != NULL && n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        n = w < 0 ? n - 1 : n + (size_t)w;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    line[n] = '\0';
    fputs(line, stderr);
}
