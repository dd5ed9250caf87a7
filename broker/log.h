/*
 * log.h - structured one-line logs to stderr.
 *
 *   2026-11-25T14:50:00.123Z level=info worker=1 conn=42 event=open peer=127.0.0.1:50512
 *
 * Each line is written with one fputs, so lines from different threads never
 * interleave. The level is set once in main before any thread starts.
 */
#ifndef WSBROKER_LOG_H
#define WSBROKER_LOG_H

#include <stdint.h>

typedef enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
} log_level_t;

extern log_level_t log_min_level;

/* Parse "debug", "info", "warn", "error"; -1 if none. */
int log_parse_level(const char *s);

/* worker < 0 and conn == 0 omit those fields. fmt (may be NULL) appends
 * "key=value ..." text. */
void log_write(log_level_t level, int worker, uint64_t conn, const char *event, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));

#define LOG(level, worker, conn, event, ...)                                                       \
    do {                                                                                           \
        if ((level) >= log_min_level)                                                              \
            log_write((level), (worker), (conn), (event), __VA_ARGS__);                            \
    } while (0)

#endif
