/*
 * ws_error.c - text for the library's error codes and their RFC 6455 close
 * codes.
 *
 * The mapping is deliberately total: every int has a message and a close
 * code, so a caller can pass whatever a parser returned without checking
 * the range first. Only the four WebSocket-level errors have a specific
 * close code; everything else (HTTP errors, caller mistakes, and values that
 * are not errors at all) is 1011, "the server hit a condition it did not
 * expect".
 */
#include "wsproto/ws_error.h"

const char *ws_strerror(int err)
{
    switch (err) {
    case WS_OK:
        return "success";
    case WS_AGAIN:
        return "incomplete input, more bytes needed";
    case WS_E_PROTO:
        return "WebSocket protocol violation";
    case WS_E_UTF8:
        return "invalid UTF-8 in text data";
    case WS_E_TOO_BIG:
        return "message too big";
    case WS_E_NOMEM:
        return "out of memory";
    case WS_E_HTTP_BAD:
        return "malformed HTTP head";
    case WS_E_HTTP_TOO_BIG:
        return "HTTP head too large";
    case WS_E_NOSPACE:
        return "output buffer too small";
    case WS_E_INVAL:
        return "invalid argument";
    default:
        return "unknown error";
    }
}

uint16_t ws_close_code(int err)
{
    switch (err) {
    case WS_E_PROTO:
        return WS_CLOSE_PROTOCOL;
    case WS_E_UTF8:
        return WS_CLOSE_INVALID_DATA;
    case WS_E_TOO_BIG:
        return WS_CLOSE_TOO_BIG;
    default:
        return WS_CLOSE_INTERNAL;
    }
}

bool ws_close_code_valid(uint16_t code)
{
    /* 1004 is reserved, 1005 and 1006 are "no code"/"no close frame"
     * markers that must never be sent, 1015 is the TLS-failure marker, and
     * 1016-2999 are reserved for future RFCs; 3000-3999 are registered
     * with IANA and 4000-4999 are private use. */
    if (code >= 1000 && code <= 1003)
        return true;
    if (code >= 1007 && code <= 1014)
        return true;
    return code >= 3000 && code <= 4999;
}
