/*
 * tls.h - wss://: TLS between libuv's socket and a connection, on OpenSSL
 * with memory BIOs.
 *
 *   socket --ciphertext--> tls_input --plaintext--> conn_input (HTTP, frames)
 *   ring of frames --conn_take_plain--> tls_encrypt --ciphertext--> socket
 *
 * The connection's output is still the ring of shared frames: a published
 * message is encoded once whatever the transport, and only encryption is
 * per connection. A flush gathers the queued frames into records of up to
 * 16 KiB and writes the resulting ciphertext with one write, as the plain
 * path does with its iovecs. Ciphertext waiting for the socket counts in
 * the connection's backlog like queued frames do.
 *
 * The server context (certificate chain, key, optional client CA) is
 * broker-wide; SIGHUP rebuilds it from the files and swaps it in for new
 * connections, keeping the old one (and every open connection) when a file
 * is bad.
 */
#ifndef WSBROKER_TLS_H
#define WSBROKER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "broker.h"

typedef struct conn conn_t;
typedef struct tls tls_t;

/* Load the context from --tls-cert/--tls-key/--tls-ca (when --tls-port is
 * set). Returns 0, or -1 after printing why to stderr. */
int tls_server_init(broker_t *b);
void tls_server_free(broker_t *b);

/* SIGHUP: rebuild the context from the files. Returns 0, or -1 (logged;
 * the old context stays). */
int tls_server_reload(broker_t *b);

/* A server session for a new connection; NULL on ENOMEM. */
tls_t *tls_new(broker_t *b);
void tls_free(tls_t *t);

/* The handshake has completed. */
bool tls_established(const tls_t *t);

/* Ciphertext read from c's socket: run the handshake, then hand every
 * plaintext byte to conn_input. May close or abort c. */
void tls_input(conn_t *c, const uint8_t *data, size_t len);

/* Encrypt c's queued frames (bounded, so one flush stays short). Returns 0,
 * or -1 after aborting c. */
int tls_encrypt(conn_t *c);

/* Ciphertext waiting for the socket, and its consumption. */
uv_buf_t tls_pending(const tls_t *t);
void tls_written(tls_t *t, size_t n);

/* The peer closed the connection (EOF or reset): a handshake it had begun
 * and not finished is a truncated handshake, counted and logged as a TLS
 * failure. */
void tls_peer_closed(conn_t *c);

/* Queue close_notify once, before TCP is shut down. True if it added
 * ciphertext to write first. */
bool tls_close_notify(conn_t *c);

#endif
