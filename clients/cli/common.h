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

#include <wsbroker/client.h>

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

/* After a connection failure (err, detail from on_state): a hint naming the
 * options that fix it (" (--cafile ...)" for a certificate that is not
 * trusted), or "". */
const char *cli_hint(int err, const char *detail);

/* Options both tools share for the connection: --cafile, --insecure,
 * --no-deflate, and their --help lines. */
enum { CLI_OPT_CAFILE = 1000, CLI_OPT_INSECURE, CLI_OPT_NO_DEFLATE };
#define CLI_CONN_OPTIONS                                                                           \
    {"cafile", required_argument, NULL, CLI_OPT_CAFILE},                                           \
        {"insecure", no_argument, NULL, CLI_OPT_INSECURE},                                         \
        {"no-deflate", no_argument, NULL, CLI_OPT_NO_DEFLATE},                                     \
    {                                                                                              \
        "verbose", no_argument, NULL, 'v'                                                          \
    }
#define CLI_CONN_HELP                                                                              \
    "      --cafile FILE    wss:// only: trust the CA certificates in FILE (PEM)\n"                \
    "                       instead of the system's\n"                                             \
    "      --insecure       wss:// only: do not verify the broker's certificate\n"                 \
    "                       or name (self-signed test setups; never in production)\n"              \
    "      --no-deflate     do not offer permessage-deflate compression (offered\n"                \
    "                       by default; used when the broker agrees)\n"                            \
    "  -t, --token TOKEN    send 'Authorization: Bearer TOKEN' (default: the\n"                    \
    "                       WSBROKER_TOKEN environment variable, if set)\n"                        \
    "  -v, --verbose        say on stderr how the connection was made (TLS\n"                      \
    "                       version, negotiated extension)\n"

/* Apply one of the CLI_OPT_* options (ch) to o. Returns false for any other
 * option. */
bool cli_conn_option(int ch, const char *arg, wsc_options_t *o);

#endif
