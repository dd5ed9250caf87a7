/*
 * http.h - plain HTTP on the broker's port: /healthz, /metrics and the
 * static files of the web root. Every response closes the connection.
 */
#ifndef WSBROKER_HTTP_H
#define WSBROKER_HTTP_H

#include <wsproto/ws_handshake.h>

#include "frame.h"
#include "worker.h"

/* The full response (head and body) to a request without Upgrade, as a raw
 * frame with one reference owned by the caller; NULL on ENOMEM. */
frame_t *http_respond(wrk_t *w, const wsh_request_t *req);

/* An error response (status and short text body). */
frame_t *http_error(int status, const char *message);

#endif
