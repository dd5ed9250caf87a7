/*
 * utf8.h - incremental UTF-8 validator (RFC 3629).
 *
 * Validates text split at arbitrary byte boundaries, e.g. across WebSocket
 * fragments. It fails fast: an invalid byte is reported by the call that
 * sees it, not at the end of the text (overlong forms, surrogates and code
 * points above U+10FFFF are rejected at the first byte that proves them,
 * as RFC 6455 conformance suites require).
 */
#ifndef WSPROTO_UTF8_H
#define WSPROTO_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct utf8 {
    /* private: bytes still expected in the current sequence, and the
     * allowed range of the next byte */
    uint8_t need;
    uint8_t lo, hi;
} utf8_t;

enum {
    UTF8_OK = 0,      /* valid and at a code point boundary */
    UTF8_PARTIAL = 1, /* valid so far, in the middle of a code point */
    UTF8_REJECT = -1, /* invalid; the validator stays rejected */
};

void utf8_init(utf8_t *u);

/* Feed n more bytes. Returns UTF8_OK, UTF8_PARTIAL or UTF8_REJECT. */
int utf8_feed(utf8_t *u, const uint8_t *p, size_t n);

/* Whole-buffer check: true if p[0..n) is complete, valid UTF-8. */
bool utf8_valid(const uint8_t *p, size_t n);

#endif
