/*
 * ws_frame.c - RFC 6455 frame decoder (push parser with the message layer)
 * and frame encoder.
 *
 * The decoder is a three-state machine:
 *
 *   HEADER   collect 2..14 header bytes into p->hdr. The first two bytes are
 *            checked as each arrives (opcode, RSV bits, FIN of control
 *            frames and message sequencing on byte 0; MASK bit for the role
 *            and control length on byte 1); the rest when the header is
 *            complete (minimal length encoding, 63-bit length, message size
 *            limit).
 *   DATA     payload of a text/binary/continuation frame: unmasked in place
 *            and handed out as a view of the caller's buffer, one chunk per
 *            call, UTF-8 checked on the way for text.
 *   CONTROL  payload of a ping/pong/close frame, whole for its event: a
 *            view of the caller's buffer when it is all there and no
 *            control buffer is set (ws_decoder_t), else copied into p->ctl
 *            (at most 125 bytes), then checked.
 *
 * A call consumes header bytes and, in the same call, as much payload as
 * the buffer holds, and returns after at most one event. Errors are sticky:
 * the state records the error so that a caller who feeds again gets it
 * again instead of undefined parsing.
 */
#include "wsproto/ws_frame.h"

#include <string.h>

enum {
    ST_HEADER = 0,
    ST_DATA = 1,
    ST_CONTROL = 2,
    ST_FAILED = 0x80, /* | -ws_err_t */
};

#define B0_FIN     0x80
#define B0_RSV1    0x40
#define B0_RSV23   0x30
#define B0_OPCODE  0x0F
#define B1_MASK    0x80
#define B1_LEN     0x7F
#define LEN_16BIT  126
#define LEN_64BIT  127
#define CLOSE_CODE 2 /* bytes of the status code in a Close payload */

void ws_decoder_init(ws_decoder_t *p, ws_role_t role, uint64_t max_message, unsigned flags)
{
    memset(p, 0, sizeof *p);
    p->state = ST_HEADER;
    p->role = (uint8_t)role;
    p->flags = (uint8_t)flags;
    p->hdr_need = 2;
    p->max_message = max_message;
    utf8_init(&p->utf8);
}

bool ws_decoder_in_message(const ws_decoder_t *p)
{
    return p->msg_opcode != 0;
}

bool ws_decoder_needs_ctl(const ws_decoder_t *p)
{
    return p->state == ST_CONTROL && p->ctl == NULL;
}

void ws_parser_init(ws_parser_t *p, ws_role_t role, uint64_t max_message, unsigned flags)
{
    ws_decoder_init(&p->d, role, max_message, flags);
    p->d.ctl = p->ctl;
}

bool ws_parser_in_message(const ws_parser_t *p)
{
    return ws_decoder_in_message(&p->d);
}

static ssize_t fail(ws_decoder_t *p, int err)
{
    p->state = (uint8_t)(ST_FAILED | -err);
    return err;
}

/* Bytes of extended payload length that follow a 7-bit length field. */
static unsigned ext_len_bytes(uint8_t len7)
{
    if (len7 == LEN_64BIT)
        return 8;
    return len7 == LEN_16BIT ? 2 : 0;
}

/* Check the first header byte: opcode, FIN and RSV bits, and the message
 * sequence. Everything here is known from one byte, so fail at once. */
static int header_byte0(const ws_decoder_t *p)
{
    uint8_t b0 = p->hdr[0];
    uint8_t op = b0 & B0_OPCODE;

    if (op >= WS_OP_CLOSE) {
        if (op > WS_OP_PONG || !(b0 & B0_FIN) || (b0 & (B0_RSV1 | B0_RSV23)))
            return WS_E_PROTO;
        return 0;
    }
    if (op > WS_OP_BINARY || (b0 & B0_RSV23))
        return WS_E_PROTO;
    if (op == WS_OP_CONT) {
        /* continuation without a start; RSV1 belongs to the first frame
         * of a message only (RFC 7692 section 6.1) */
        if (p->msg_opcode == 0 || (b0 & B0_RSV1))
            return WS_E_PROTO;
    } else {
        if (p->msg_opcode != 0) /* new message inside a fragmented one */
            return WS_E_PROTO;
        if ((b0 & B0_RSV1) && !(p->flags & WS_PARSER_ALLOW_RSV1))
            return WS_E_PROTO;
    }
    return 0;
}

/* Check the second header byte (MASK bit for the role, control payload
 * length) and work out the length of the whole header. */
static int header_byte1(ws_decoder_t *p)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    uint8_t op = b0 & B0_OPCODE;
    uint8_t len7 = b1 & B1_LEN;
    bool masked = (b1 & B1_MASK) != 0;

    if (masked != (p->role == WS_ROLE_SERVER))
        return WS_E_PROTO;
    if (op >= WS_OP_CLOSE) {
        if (len7 > WS_MAX_CONTROL)
            return WS_E_PROTO;
        if (op == WS_OP_CLOSE && len7 == 1) /* half a status code */
            return WS_E_PROTO;
    }
    p->opcode = op;
    p->fin = (b0 & B0_FIN) != 0;
    p->masked = masked;
    p->hdr_need = (uint8_t)(2 + ext_len_bytes(len7) + (masked ? 4 : 0));
    return 0;
}

/* The header is complete: decode the length and key, apply the message
 * layer and switch to the payload state. */
static int header_end(ws_decoder_t *p)
{
    uint8_t len7 = p->hdr[1] & B1_LEN;
    uint64_t len = len7;
    size_t at = 2;

    if (len7 == LEN_16BIT) {
        len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
        at = 4;
        if (len < LEN_16BIT)
            return WS_E_PROTO; /* non-minimal */
    } else if (len7 == LEN_64BIT) {
        len = 0;
        for (at = 2; at < 10; at++)
            len = len << 8 | p->hdr[at];
        if (len >> 63)
            return WS_E_PROTO; /* the most significant bit must be 0 */
        if (len <= 0xFFFF)
            return WS_E_PROTO; /* non-minimal */
    }
    if (p->masked)
        memcpy(p->mask, p->hdr + at, sizeof p->mask);
    p->mask_off = 0;
    p->remaining = len;

    if (p->opcode >= WS_OP_CLOSE) {
        p->ctl_len = 0;
        p->state = ST_CONTROL;
        return 0;
    }
    if (p->opcode != WS_OP_CONT) {
        p->msg_opcode = p->opcode;
        p->msg_rsv1 = (p->hdr[0] & B0_RSV1) != 0;
        p->msg_first = true;
        p->msg_len = 0;
        utf8_init(&p->utf8);
    }
    if (p->max_message != 0 && len > p->max_message - p->msg_len)
        return WS_E_TOO_BIG;
    p->msg_len += len;
    p->state = ST_DATA;
    return 0;
}

static size_t take(uint64_t remaining, size_t avail)
{
    return remaining < avail ? (size_t)remaining : avail;
}

static ssize_t feed_control(ws_decoder_t *p, uint8_t *buf, size_t len, size_t off, ws_event_t *ev)
{
    size_t n = take(p->remaining, len - off);
    const uint8_t *payload = p->ctl;

    if (p->ctl == NULL && p->ctl_len == 0 && n == p->remaining) {
        /* Whole in buf: unmask in place, the event points there. */
        payload = buf + off;
        if (p->masked)
            ws_mask(buf + off, n, p->mask, 0);
        p->ctl_len = (uint8_t)n;
        p->remaining = 0;
        off += n;
    } else if (p->ctl == NULL) {
        return (ssize_t)off; /* split: ws_decoder_needs_ctl() */
    } else if (n > 0) {
        memcpy(p->ctl + p->ctl_len, buf + off, n);
        if (p->masked)
            ws_mask(p->ctl + p->ctl_len, n, p->mask, p->mask_off);
        p->mask_off = (uint8_t)((p->mask_off + n) & 3);
        p->ctl_len = (uint8_t)(p->ctl_len + n);
        p->remaining -= n;
        off += n;
    }
    if (p->remaining > 0)
        return (ssize_t)off;

    p->state = ST_HEADER;
    if (p->opcode == WS_OP_CLOSE && p->ctl_len >= CLOSE_CODE) {
        uint16_t code = (uint16_t)(payload[0] << 8 | payload[1]);
        if (!ws_close_code_valid(code))
            return fail(p, WS_E_PROTO);
        if (!utf8_valid(payload + CLOSE_CODE, p->ctl_len - CLOSE_CODE))
            return fail(p, WS_E_UTF8);
        ev->type = WS_EV_CLOSE;
        ev->close_code = code;
        ev->data = payload + CLOSE_CODE;
        ev->len = p->ctl_len - CLOSE_CODE;
        return (ssize_t)off;
    }
    ev->type = p->opcode == WS_OP_PING   ? WS_EV_PING
               : p->opcode == WS_OP_PONG ? WS_EV_PONG
                                         : WS_EV_CLOSE; /* empty: code 0 */
    ev->data = payload;
    ev->len = p->ctl_len;
    return (ssize_t)off;
}

static ssize_t feed_data(ws_decoder_t *p, uint8_t *buf, size_t len, size_t off, ws_event_t *ev)
{
    size_t n = take(p->remaining, len - off);
    uint8_t *d = buf + off;

    if (n == 0 && p->remaining > 0)
        return (ssize_t)off; /* header done, payload still to come */
    if (p->masked) {
        ws_mask(d, n, p->mask, p->mask_off);
        p->mask_off = (uint8_t)((p->mask_off + n) & 3);
    }
    p->remaining -= n;
    off += n;

    bool frame_done = p->remaining == 0;
    bool fin = frame_done && p->fin;
    if (p->msg_opcode == WS_OP_TEXT && !p->msg_rsv1 && !(p->flags & WS_PARSER_SKIP_UTF8)) {
        int u = utf8_feed(&p->utf8, d, n);
        if (u == UTF8_REJECT || (fin && u != UTF8_OK))
            return fail(p, WS_E_UTF8);
    }

    ev->type = WS_EV_DATA;
    ev->opcode = p->msg_opcode;
    ev->first = p->msg_first;
    ev->fin = fin;
    ev->rsv1 = p->msg_rsv1;
    ev->data = d;
    ev->len = n;
    p->msg_first = false;
    if (frame_done) {
        p->state = ST_HEADER;
        if (fin) {
            p->msg_opcode = 0;
            p->msg_rsv1 = false;
            p->msg_len = 0;
        }
    }
    return (ssize_t)off;
}

ssize_t ws_parser_feed(ws_parser_t *p, uint8_t *buf, size_t len, ws_event_t *ev)
{
    p->d.ctl = p->ctl; /* (the struct may have been moved since init) */
    return ws_decoder_feed(&p->d, buf, len, ev);
}

ssize_t ws_decoder_feed(ws_decoder_t *p, uint8_t *buf, size_t len, ws_event_t *ev)
{
    size_t off = 0;
    int r;

    memset(ev, 0, sizeof *ev);
    if (p->state & ST_FAILED)
        return -(ssize_t)(p->state & ~ST_FAILED);
    if (len == 0)
        return 0;

    if (p->state == ST_HEADER) {
        while (off < len && p->hdr_have < p->hdr_need) {
            p->hdr[p->hdr_have++] = buf[off++];
            if (p->hdr_have == 1)
                r = header_byte0(p);
            else if (p->hdr_have == 2)
                r = header_byte1(p);
            else
                continue;
            if (r < 0)
                return fail(p, r);
        }
        if (p->hdr_have < p->hdr_need)
            return (ssize_t)off;
        p->hdr_have = 0;
        p->hdr_need = 2;
        if ((r = header_end(p)) < 0)
            return fail(p, r);
    }
    if (p->state == ST_CONTROL)
        return feed_control(p, buf, len, off, ev);
    return feed_data(p, buf, len, off, ev);
}

size_t ws_header_size(uint64_t len, bool masked)
{
    size_t n = 2;

    if (len > 0xFFFF)
        n += 8;
    else if (len >= LEN_16BIT)
        n += 2;
    return n + (masked ? 4 : 0);
}

size_t ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, bool rsv1, uint64_t len,
                       const uint8_t *mask)
{
    uint8_t mbit = mask ? B1_MASK : 0;
    size_t n;

    out[0] = (uint8_t)((fin ? B0_FIN : 0) | (rsv1 ? B0_RSV1 : 0) | (opcode & B0_OPCODE));
    if (len < LEN_16BIT) {
        out[1] = (uint8_t)(mbit | len);
        n = 2;
    } else if (len <= 0xFFFF) {
        out[1] = mbit | LEN_16BIT;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = mbit | LEN_64BIT;
        for (n = 2; n < 10; n++)
            out[n] = (uint8_t)(len >> (8 * (9 - n)));
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset)
{
    size_t i = 0;

    if (len >= 16) {
        /* the key repeats every 4 bytes, so an 8-byte word of it rotated
         * to offset lines up with every 8-byte block of data */
        uint8_t key[8];
        uint64_t k;
        for (i = 0; i < 8; i++)
            key[i] = mask[(offset + i) & 3];
        memcpy(&k, key, sizeof k);
        for (i = 0; i + 32 <= len; i += 32) {
            uint64_t w[4];
            memcpy(w, data + i, sizeof w);
            w[0] ^= k;
            w[1] ^= k;
            w[2] ^= k;
            w[3] ^= k;
            memcpy(data + i, w, sizeof w);
        }
        for (; i + 8 <= len; i += 8) {
            uint64_t w;
            memcpy(&w, data + i, sizeof w);
            w ^= k;
            memcpy(data + i, &w, sizeof w);
        }
    }
    for (; i < len; i++)
        data[i] ^= mask[(offset + i) & 3];
}

ssize_t ws_frame_encode(uint8_t *out, size_t cap, uint8_t opcode, bool fin, const uint8_t *payload,
                        size_t len, const uint8_t *mask)
{
    if (opcode >= WS_OP_CLOSE && (len > WS_MAX_CONTROL || !fin))
        return WS_E_INVAL; /* would be a protocol error on the wire */

    size_t h = ws_header_size(len, mask != NULL);
    if (len > cap || h > cap - len)
        return WS_E_NOSPACE;
    /* payload may already sit in out, e.g. at out + h */
    if (len > 0)
        memmove(out + h, payload, len);
    ws_frame_header(out, opcode, fin, false, len, mask);
    if (mask)
        ws_mask(out + h, len, mask, 0);
    return (ssize_t)(h + len);
}

size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason, size_t reason_len)
{
    const size_t max = WS_MAX_CONTROL - CLOSE_CODE;
    size_t n = reason ? reason_len : 0;

    if (code == 0)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n > max) {
        /* back up to the start of the code point that does not fit */
        n = max;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--;
    }
    if (n > 0)
        memcpy(out + CLOSE_CODE, reason, n);
    return CLOSE_CODE + n;
}
