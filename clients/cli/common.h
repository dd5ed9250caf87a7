/*
 * common.h - helpers shared by wsbroker-pub and wsbroker-sub: messages on
 * stderr prefixed with the program name, and option value parsing.
 *
 * Exit codes of both tools: CLI_OK (0), CLI_FAIL (1: cannot connect,
 * connection lost, broker refused), CLI_USAGE (2: bad command line).
 */
#ifndef WSBROKER_CLI_COMMON_H
#define WSBROKER_CLI_COMMON_H

#include <stdbool.h>
#include <stdint.h>

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Set once at start: the name used in messages ("wsbroker-pub"). */
void cli_init(const char *prog);

/* "prog: message\n" on stderr. */
void cli_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Usage error: message, a hint to try --help, exit CLI_USAGE. */
void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A duration in seconds ("10", "0.5"): > 0 and at most a day. Returns
 * milliseconds, or exits with a usage error naming opt. */
unsigned cli_seconds(const char *opt, const char *value);

/* A non-negative integer, or a usage error naming opt. */
uint64_t cli_uint(const char *opt, const char *value);

/* Print "prog (wsbroker) VERSION" and exit 0. */
void cli_version(void) __attribute__((noreturn));

/* The detail of a state change without the library's "; retry in N ms". */
void cli_strip_retry(const char *detail, char *out, unsigned cap);

#endif
