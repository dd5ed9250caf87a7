/*
 * pmd.h - permessage-deflate (RFC 7692): negotiation of its four
 * parameters on both sides, and message compression and bounded
 * decompression on zlib.
 *
 * A compressed message is the raw DEFLATE data of the message flushed with
 * Z_SYNC_FLUSH, without the final 00 00 ff ff; its first frame has RSV1
 * set (ws_frame does the framing; this module only transforms payloads).
 *
 * Window size 8: zlib's deflate cannot use a 256-byte window, so when a
 * peer limits us to it we compress with run-length matches only (every
 * distance is 1), which any inflater accepts, whatever its window.
 */
#ifndef WSPROTO_PMD_H
#define WSPROTO_PMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zlib.h>

#include "ws_handshake.h"

#define PMD_NAME "permessage-deflate"

typedef struct pmd_params {
    bool server_no_context_takeover;
    bool client_no_context_takeover;
    uint8_t server_max_window_bits; /* 8..15; 15 when not limited */
    uint8_t client_max_window_bits; /* 8..15; 15 when not limited */
    /* The response names these (the server must name a limit the offer
     * set; a client told client_max_window_bits must keep to it). */
    bool server_max_window_bits_sent, client_max_window_bits_sent;
} pmd_params_t;

/* What the server insists on when it accepts an offer. */
typedef struct pmd_policy {
    bool server_no_context_takeover; /* compress every message on its own */
    bool client_no_context_takeover; /* inflate every message on its own */
} pmd_policy_t;

enum {
    PMD_OK = 0,
    PMD_NONE = 1,       /* nothing acceptable offered: no extension */
    PMD_E_BAD = -1,     /* malformed header or parameters */
    PMD_E_TOO_BIG = -2, /* inflated message over the limit */
    PMD_E_DATA = -3,    /* not valid DEFLATE data */
    PMD_E_NOMEM = -4,
};

/* Server: look at every Sec-WebSocket-Extensions header of the request
 * (in order) and accept the first permessage-deflate offer whose
 * parameters are valid and acceptable, with the policy applied. Returns
 * PMD_OK with *out filled, or PMD_NONE (no offer, or none acceptable;
 * offers of other extensions are ignored). */
int pmd_negotiate(const wsh_header_t *headers, size_t n, const pmd_policy_t *policy,
                  pmd_params_t *out);

/* The Sec-WebSocket-Extensions value accepting p. Returns its length, or 0
 * if cap is too small. */
size_t pmd_format_response(const pmd_params_t *p, char *out, size_t cap);

/* Client: the offer it sends ("permessage-deflate; client_max_window_bits"
 * plus what is asked), and the check of the server's answer (a response
 * value naming permessage-deflate). Returns PMD_OK or PMD_E_BAD. */
size_t pmd_format_offer(bool no_context_takeover, char *out, size_t cap);
int pmd_parse_response(wsh_str_t value, pmd_params_t *out);

/* ---- Compression ---- */

typedef struct pmd_deflater {
    z_stream z;
    bool ready, no_context_takeover;
    int window_bits;
} pmd_deflater_t;

/* window_bits 8..15 (the peer's limit for what we send). Returns PMD_OK or
 * PMD_E_NOMEM. */
int pmd_deflater_init(pmd_deflater_t *d, int window_bits, bool no_context_takeover);
void pmd_deflater_end(pmd_deflater_t *d);

/* Room needed to compress len bytes in one call. */
size_t pmd_deflate_bound(const pmd_deflater_t *d, size_t len);

/* Compress one whole message into out (cap >= pmd_deflate_bound). Returns
 * the compressed length, or a negative PMD_E_*. */
ssize_t pmd_deflate(pmd_deflater_t *d, const uint8_t *in, size_t len, uint8_t *out, size_t cap);

typedef struct pmd_inflater {
    z_stream z;
    bool ready, no_context_takeover;
} pmd_inflater_t;

/* An inflater accepting any window (15 bits). */
int pmd_inflater_init(pmd_inflater_t *i, bool no_context_takeover);
void pmd_inflater_end(pmd_inflater_t *i);

/* A growable output buffer (realloc'd; the caller frees buf). */
typedef struct pmd_buf {
    uint8_t *buf;
    size_t len, cap;
} pmd_buf_t;

/* Decompress one whole message (the payload of all its frames) into out,
 * appending; never more than max bytes: PMD_E_TOO_BIG as soon as the
 * output would pass it, before producing more. Returns PMD_OK or a
 * negative PMD_E_*. */
int pmd_inflate(pmd_inflater_t *i, const uint8_t *in, size_t len, size_t max, pmd_buf_t *out);

#endif
