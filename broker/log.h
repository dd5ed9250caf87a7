/*
 * log.h - structured one-line logs to stderr.
 *
 *   2026-11-25T14:50:00.123Z level=info worker=1 conn=42 event=open peer=127.0.0.1:50512
 *
 * Worker threads never wait on stderr: a line is formatted by the caller
 * and appended to a bounded in-memory queue, and one log thread writes the
 * queue out. When stderr is slower than the broker (a full pipe, a stalled
 * terminal), lines that do not fit are dropped and counted, and the next
 * line written says how many were lost. Events a client can trigger at will
 * (rejected handshakes, refused connections, timeouts) go through
 * LOG_LIMITED, which lets a few lines per second through per call site and
 * thread and reports how many it suppressed.
 *
 * The level is set once in main before any thread starts.
 */
#ifndef WSBROKER_LOG_H
#define WSBROKER_LOG_H

#include <stdbool.h>
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

/* Start the log thread (before the workers). Until then, and after
 * log_stop, lines are written directly. Returns 0 or -1. */
int log_start(void);
/* Write out everything queued and stop the log thread. */
void log_stop(void);
/* Lines dropped because the queue was full, since start. */
uint64_t log_dropped(void);

/* worker < 0 and conn == 0 omit those fields. fmt (may be NULL) appends
 * "key=value ..." text. */
void log_write(log_level_t level, int worker, uint64_t conn, const char *event, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));

#define LOG(level, worker, conn, event, ...)                                                       \
    do {                                                                                           \
        if ((level) >= log_min_level)                                                              \
            log_write((level), (worker), (conn), (event), __VA_ARGS__);                            \
    } while (0)

/* Per call site and thread: the budget of lines in the current second. */
typedef struct log_limit {
    int64_t second;
    uint32_t used;
    uint32_t suppressed;
} log_limit_t;

#define LOG_LIMIT_PER_SECOND 5

/* True if a line may be written now; *suppressed is set to the lines held
 * back since the last one written. */
bool log_limit_pass(log_limit_t *l, uint32_t *suppressed);

/* Like LOG, at most LOG_LIMIT_PER_SECOND lines per second from this call
 * site on this thread; the first line after a quiet spell carries
 * "suppressed=N" when lines were held back. */
#define LOG_LIMITED(level, worker, conn, event, fmt, ...)                                          \
    do {                                                                                           \
        static __thread log_limit_t log_limit_;                                                    \
        uint32_t log_suppressed_;                                                                  \
        if ((level) >= log_min_level && log_limit_pass(&log_limit_, &log_suppressed_)) {           \
            if (log_suppressed_ > 0)                                                               \
                log_write((level), (worker), (conn), (event), fmt " suppressed=%u", __VA_ARGS__,   \
                          log_suppressed_);                                                        \
            else                                                                                   \
                log_write((level), (worker), (conn), (event), fmt, __VA_ARGS__);                   \
        }                                                                                          \
    } while (0)

#endif
