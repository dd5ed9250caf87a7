/*
 * http.h - the HTTP phase of a connection: the request head is gathered,
 * then either upgraded to a WebSocket (/ws, /, /echo) or answered as plain
 * HTTP (/healthz, /metrics, the web client's files). Every plain response
 * closes the connection.
 *
 * Static files from --web-root are opened, checked and read on libuv's
 * thread pool, a chunk at a time, and sent through the connection's output
 * queue, so a slow disk, a FIFO or a big file never blocks a worker and a
 * slow reader never makes the broker hold a whole file in memory.
 */
#ifndef WSBROKER_HTTP_H
#define WSBROKER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

typedef struct conn conn_t;

/* Bytes read from a connection in the HTTP state. */
void http_input(conn_t *c, uint8_t *buf, size_t len);

/* An error response (status and a short text body) as a raw frame with one
 * reference, or NULL on ENOMEM. 405 lists the allowed methods, 426 the
 * supported WebSocket version. */
frame_t *http_error(int status, const char *message);

/* The connection's output queue fell below its low-water mark: a file
 * being sent may continue. */
void http_file_resume(conn_t *c);

/* The connection is going away: detach a file transfer in progress (its
 * thread-pool request finishes on its own and then frees itself). */
void http_file_detach(conn_t *c);

/* Free c's partly gathered request head, if any. */
typedef struct http_head http_head_t;
void http_head_free(conn_t *c);

#endif
