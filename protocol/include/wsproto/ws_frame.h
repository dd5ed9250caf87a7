/*
 * ws_frame.h - RFC 6455 frame decoder and encoder.
 *
 * The decoder is a push parser: the caller hands it whatever bytes it has
 * (one byte at a time works) and gets back at most one event per call. It
 * also does the message layer: fragmentation and continuation, control
 * frames interleaved inside fragmented messages, the message size limit
 * (checked from frame headers, before any payload is buffered) and UTF-8
 * validation of text messages and close reasons across fragment boundaries.
 *
 * Payload is unmasked in place and returned as a view into the caller's
 * buffer: data frames are delivered in chunks as they arrive, and nothing is
 * copied. Control-frame events are always whole: ws_parser_t copies their
 * payload (at most 125 bytes) into a buffer of its own; ws_decoder_t, the
 * same decoder without that buffer (for servers holding many idle
 * connections), hands out a control frame that arrived whole as a view of
 * the caller's buffer too, and asks for a buffer only while one is split
 * across reads.
 */
#ifndef WSPROTO_WS_FRAME_H
#define WSPROTO_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "utf8.h"
#include "ws_error.h"

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

#define WS_MAX_CONTROL       125 /* control payload limit */
#define WS_MAX_HEADER        14  /* 2 + 8 length + 4 mask */
#define WS_MAX_SERVER_HEADER 10

typedef enum ws_role {
    WS_ROLE_SERVER, /* decodes client frames: they must be masked */
    WS_ROLE_CLIENT, /* decodes server frames: they must not be masked */
} ws_role_t;

/* ws_parser_init flags */
enum {
    WS_PARSER_ALLOW_RSV1 = 1 << 0, /* permessage-deflate negotiated */
    WS_PARSER_SKIP_UTF8 = 1 << 1,  /* caller validates text itself */
};

typedef enum ws_ev_type {
    WS_EV_NONE = 0, /* bytes consumed, no event completed */
    WS_EV_DATA,     /* a chunk of a text or binary message */
    WS_EV_PING,
    WS_EV_PONG,
    WS_EV_CLOSE,
} ws_ev_type_t;

typedef struct ws_event {
    ws_ev_type_t type;
    uint8_t opcode; /* WS_EV_DATA: WS_OP_TEXT or WS_OP_BINARY of the message */
    bool first;     /* WS_EV_DATA: first chunk of the message */
    bool fin;       /* WS_EV_DATA: last chunk; the message is complete */
    bool rsv1;      /* WS_EV_DATA: the message's first frame had RSV1 set */
    /* WS_EV_DATA: the chunk, unmasked, inside the buffer passed to
     * ws_parser_feed (may be empty, e.g. for an empty final frame).
     * PING/PONG: the whole payload. CLOSE: the reason text (after the
     * code). Control payloads live in the parser and stay valid until the
     * next ws_parser_feed call (ws_decoder_t: in the caller's buffer, or in
     * d->ctl after a split). */
    const uint8_t *data;
    size_t len;
    uint16_t close_code; /* WS_EV_CLOSE: 0 when the frame had no payload */
} ws_event_t;

typedef struct ws_decoder {
    /* private */
    uint8_t state;
    uint8_t role;
    uint8_t flags;
    uint8_t hdr[WS_MAX_HEADER];
    uint8_t hdr_have, hdr_need;
    uint8_t opcode;     /* current frame */
    uint8_t msg_opcode; /* message in progress, 0 if none */
    bool fin : 1, masked : 1, msg_rsv1 : 1, msg_first : 1;
    uint8_t mask[4];
    uint8_t mask_off;
    utf8_t utf8;
    uint8_t ctl_len;
    uint64_t remaining; /* payload bytes left in the current frame */
    uint64_t msg_len;   /* payload bytes of the message so far */
    uint64_t max_message;
    /* public: room for WS_MAX_CONTROL bytes where a split control frame's
     * payload is gathered, or NULL. Set by the caller when
     * ws_decoder_needs_ctl; it may be released (and set to NULL again) once the
     * control frame's event has been handled (ws_decoder_needs_ctl). */
    uint8_t *ctl;
} ws_decoder_t;

typedef struct ws_parser {
    ws_decoder_t d;
    uint8_t ctl[WS_MAX_CONTROL];
} ws_parser_t;

/* The decoder without a control buffer: as ws_parser_init/feed, except
 * that a control frame whole in buf is unmasked in place and its event
 * points into buf, and that at one split across feeds, while d->ctl is
 * NULL, feeding stops (WS_EV_NONE, possibly 0 bytes consumed) with none of
 * its payload consumed, and ws_decoder_needs_ctl() is true until d->ctl is
 * set. */
void ws_decoder_init(ws_decoder_t *d, ws_role_t role, uint64_t max_message, unsigned flags);
ssize_t ws_decoder_feed(ws_decoder_t *d, uint8_t *buf, size_t len, ws_event_t *ev);
bool ws_decoder_needs_ctl(const ws_decoder_t *d);
bool ws_decoder_in_message(const ws_decoder_t *d);

/* Prepare p for a new connection. max_message bounds the payload of one
 * (possibly fragmented) data message; 0 means no limit. */
void ws_parser_init(ws_parser_t *p, ws_role_t role, uint64_t max_message, unsigned flags);

/* Consume bytes from buf[0..len), unmasking payload in place, and fill *ev.
 * Returns the number of bytes consumed (at least 1 when len > 0), with
 * ev->type == WS_EV_NONE if no event completed; or a negative ws_err_t:
 * WS_E_PROTO (1002), WS_E_UTF8 (1007), WS_E_TOO_BIG (1009). After an error
 * the parser must not be fed again. Call repeatedly until all of buf is
 * consumed, handling each event as it comes. */
ssize_t ws_parser_feed(ws_parser_t *p, uint8_t *buf, size_t len, ws_event_t *ev);

/* True while a fragmented data message is in progress. */
bool ws_parser_in_message(const ws_parser_t *p);

/* Size of a frame header for a payload of len bytes (2..14). */
size_t ws_header_size(uint64_t len, bool masked);

/* Write a frame header into out (room for WS_MAX_HEADER bytes). mask is
 * NULL for server frames, else the 4-byte masking key (client frames).
 * Returns the header length. */
size_t ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, bool rsv1, uint64_t len,
                       const uint8_t *mask);

/* XOR data with mask, starting at mask byte (offset & 3). */
void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);

/* Encode a whole frame into out: header plus payload (masked when mask is
 * non-NULL). payload may already sit inside out (e.g. at out + header size).
 * Returns the frame length, WS_E_NOSPACE if cap is too small, or WS_E_INVAL
 * for a control frame over 125 bytes or without fin. */
ssize_t ws_frame_encode(uint8_t *out, size_t cap, uint8_t opcode, bool fin, const uint8_t *payload,
                        size_t len, const uint8_t *mask);

/* Write a Close payload (code + reason) into out (room for WS_MAX_CONTROL
 * bytes). A reason too long for a control frame is cut at a UTF-8 boundary
 * to 123 bytes. code 0 writes an empty payload. Returns the payload length. */
size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason, size_t reason_len);

#endif
