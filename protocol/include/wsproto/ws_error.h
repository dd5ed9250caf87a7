/*
 * ws_error.h - error codes shared by every protocol module, and the RFC 6455
 * close codes they map to.
 *
 * Functions of libwsproto return a non-negative value on success and one of
 * the negative ws_err_t values on failure. WS_AGAIN ("need more input") is
 * not a failure. Each WebSocket error maps to exactly one close code, so the
 * connection layer closes table-driven and never guesses.
 */
#ifndef WSPROTO_WS_ERROR_H
#define WSPROTO_WS_ERROR_H

#include <stdbool.h>
#include <stdint.h>

typedef enum ws_err {
    WS_OK = 0,
    WS_AGAIN = -1,          /* incomplete input: feed more bytes */
    WS_E_PROTO = -2,        /* RFC 6455 protocol violation -> 1002 */
    WS_E_UTF8 = -3,         /* invalid UTF-8 in text or close reason -> 1007 */
    WS_E_TOO_BIG = -4,      /* message over the configured maximum -> 1009 */
    WS_E_NOMEM = -5,        /* allocation failed -> 1011 */
    WS_E_HTTP_BAD = -6,     /* malformed HTTP head -> 400 */
    WS_E_HTTP_TOO_BIG = -7, /* HTTP head over WSH_MAX_HEAD -> 431 */
    WS_E_NOSPACE = -8,      /* caller's output buffer too small */
    WS_E_INVAL = -9,        /* invalid argument from the caller */
} ws_err_t;

/* RFC 6455 section 7.4 status codes used by this project. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never on the wire */
    WS_CLOSE_ABNORMAL = 1006,  /* never on the wire */
    WS_CLOSE_INVALID_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013,
};

/* Static English text for err; never NULL. */
const char *ws_strerror(int err);

/* The close code a WebSocket error maps to (1002, 1007, 1009, 1011);
 * 1011 for anything that is not a WebSocket-level error. */
uint16_t ws_close_code(int err);

/* True if code may appear in a Close frame received from a peer
 * (RFC 6455 7.4.1/7.4.2 and the IANA registry: 1000-1003, 1007-1014,
 * 3000-4999). 1004, 1005, 1006, 1015 and everything else are invalid. */
bool ws_close_code_valid(uint16_t code);

#endif
