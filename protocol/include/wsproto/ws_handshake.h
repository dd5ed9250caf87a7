/*
 * ws_handshake.h - HTTP/1.1 request and response heads, and the RFC 6455
 * opening handshake on both sides.
 *
 * Parsing follows picohttpparser's contract: the caller accumulates the head
 * in its own buffer (at most WSH_MAX_HEAD bytes) and calls the parser after
 * every read; `*scanned` remembers how far the search for the blank line got,
 * so a peer sending one byte at a time costs O(bytes), not O(bytes^2). On
 * success every string in the result points into the caller's buffer.
 * Nothing here allocates.
 */
#ifndef WSPROTO_WS_HANDSHAKE_H
#define WSPROTO_WS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws_error.h"

#define WSH_MAX_HEAD 8192  /* request head limit -> 431 */
#define WSH_MAX_HEADERS 64 /* more header lines -> 431 */
#define WSH_ACCEPT_LEN 28  /* base64(SHA-1) */
#define WSH_KEY_LEN 24     /* base64 of a 16-byte nonce */
#define WSH_SUBPROTOCOL "wsbroker.v1"

typedef struct wsh_str {
    const char *p;
    size_t len;
} wsh_str_t;

typedef struct wsh_header {
    wsh_str_t name;
    wsh_str_t value; /* leading and trailing spaces/tabs removed */
} wsh_header_t;

typedef struct wsh_request {
    wsh_str_t method;
    wsh_str_t target; /* as sent, e.g. "/ws?token=x" */
    wsh_str_t path;   /* target up to '?' */
    wsh_str_t query;  /* after '?', without it; len 0 if none */
    int minor_version; /* HTTP/1.x */
    size_t num_headers;
    wsh_header_t headers[WSH_MAX_HEADERS];
} wsh_request_t;

typedef struct wsh_response {
    int minor_version;
    int status;
    wsh_str_t reason;
    size_t num_headers;
    wsh_header_t headers[WSH_MAX_HEADERS];
} wsh_response_t;

/* Parse a request head from buf[0..len). *scanned must be 0 for a new
 * request and is updated between calls. Returns the head length in bytes
 * (> 0, including the final CRLF CRLF), WS_AGAIN if the head is not complete,
 * WS_E_HTTP_BAD if it is malformed (400), or WS_E_HTTP_TOO_BIG (431) when the
 * head exceeds WSH_MAX_HEAD bytes or WSH_MAX_HEADERS lines. Bytes after the
 * head (e.g. early WebSocket frames) are not looked at. Accepts bare LF line
 * ends; rejects obsolete line folding, control characters in header values
 * and header names that are not RFC 9110 tokens. */
int wsh_parse_request(const char *buf, size_t len, size_t *scanned, wsh_request_t *req);

/* The same for a response head (client side). */
int wsh_parse_response(const char *buf, size_t len, size_t *scanned, wsh_response_t *res);

/* First header named name (case-insensitive), or NULL. */
const wsh_str_t *wsh_header_get(const wsh_header_t *headers, size_t n, const char *name);

/* True if the comma-separated list value contains token (case-insensitive,
 * optional whitespace around elements, parameters after ';' ignored). */
bool wsh_has_token(wsh_str_t value, const char *token);

/* Outcome of validating an upgrade request. */
typedef struct wsh_upgrade {
    int status;        /* 101 if acceptable, else 400 or 426 */
    const char *error; /* static reason when status != 101 */
    char accept[WSH_ACCEPT_LEN + 1]; /* Sec-WebSocket-Accept, NUL-terminated */
    bool subprotocol;  /* the client offered WSH_SUBPROTOCOL */
    wsh_str_t origin;  /* Origin header, len 0 if absent */
    wsh_str_t extensions; /* Sec-WebSocket-Extensions as sent, len 0 if absent */
} wsh_upgrade_t;

/* True if the request asks for a WebSocket at all (has an Upgrade header or
 * a Sec-WebSocket-Key), as opposed to plain HTTP. */
bool wsh_wants_upgrade(const wsh_request_t *req);

/* Validate an RFC 6455 opening handshake: method GET, HTTP/1.1 or later,
 * Upgrade containing "websocket", Connection containing "upgrade",
 * Sec-WebSocket-Key the base64 form of 16 bytes (else 400), and
 * Sec-WebSocket-Version 13 (absent or other -> 426). Fills *up and returns
 * up->status. */
int wsh_check_upgrade(const wsh_request_t *req, wsh_upgrade_t *up);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), NUL-terminated. */
void wsh_accept_key(const char *key, size_t key_len, char out[WSH_ACCEPT_LEN + 1]);

/* Reason phrase for a status code ("Switching Protocols", "Not Found", ...). */
const char *wsh_status_text(int status);

/* The 101 response. extensions is the Sec-WebSocket-Extensions value to
 * send, or NULL. Returns the length written, or WS_E_NOSPACE. */
int wsh_write_101(char *out, size_t cap, const wsh_upgrade_t *up, const char *extensions);

/* A response head with Content-Length and "Connection: close". extra is NULL
 * or more header lines, each ending in CRLF. Returns the length written, or
 * WS_E_NOSPACE. */
int wsh_write_head(char *out, size_t cap, int status, const char *content_type,
                   size_t content_length, const char *extra);

/* A complete error response with a short text/plain body ("<message>\n").
 * 426 carries "Sec-WebSocket-Version: 13". Returns the length written, or
 * WS_E_NOSPACE. */
int wsh_write_error(char *out, size_t cap, int status, const char *message);

/* Client side: a key from 16 random bytes (base64, NUL-terminated). */
void wsh_make_key(const uint8_t nonce[16], char out[WSH_KEY_LEN + 1]);

/* Client side: the upgrade request for host ("name:port") and target
 * ("/ws?x=y"). extra is NULL or more header lines ending in CRLF. Returns
 * the length written, or WS_E_NOSPACE. */
int wsh_write_request(char *out, size_t cap, const char *host, const char *target,
                      const char *key, const char *extra);

/* Client side: check a parsed response against the key that was sent:
 * status 101, Upgrade websocket, Connection upgrade, the right Accept.
 * Returns WS_OK or WS_E_HTTP_BAD. */
int wsh_check_101(const wsh_response_t *res, const char *key);

#endif
