/*
 * utf8.c - incremental, fail-fast UTF-8 validator (RFC 3629).
 *
 * The validator keeps three bytes of state: how many continuation bytes the
 * current sequence still needs, and the range the next byte must fall in.
 * Every restriction of RFC 3629 is expressed as a narrowed range for the
 * first continuation byte, decided by the lead byte:
 *
 *   lead      code points          continuation ranges
 *   00..7F    U+0000..U+007F       -
 *   C2..DF    U+0080..U+07FF       80..BF
 *   E0        U+0800..U+0FFF       A0..BF, 80..BF          (no overlongs)
 *   E1..EC    U+1000..U+CFFF       80..BF, 80..BF
 *   ED        U+D000..U+D7FF       80..9F, 80..BF          (no surrogates)
 *   EE..EF    U+E000..U+FFFF       80..BF, 80..BF
 *   F0        U+10000..U+3FFFF     90..BF, 80..BF, 80..BF  (no overlongs)
 *   F1..F3    U+40000..U+FFFFF     80..BF, 80..BF, 80..BF
 *   F4        U+100000..U+10FFFF   80..8F, 80..BF, 80..BF  (<= U+10FFFF)
 *
 * Everything else (80..BF as a lead, C0, C1, F5..FF) is rejected at once,
 * so an invalid byte is reported by the very call that contains it.
 *
 * Runs of ASCII are skipped eight bytes at a time, since most text the
 * broker validates is JSON that is mostly or entirely ASCII. A multi-byte
 * sequence that lies wholly inside the buffer is checked in one step; only
 * one cut by the end of a buffer goes through the byte-at-a-time state.
 */
#include "wsproto/utf8.h"

#include <string.h>

/* need value of a validator that has seen an invalid byte */
#define UTF8_DEAD 0xFF

#define CONT_LO 0x80
#define CONT_HI 0xBF

#define HIGH_BITS 0x8080808080808080ull

void utf8_init(utf8_t *u)
{
    u->need = 0;
    u->lo = CONT_LO;
    u->hi = CONT_HI;
}

/* Set up *u for the sequence started by non-ASCII byte b; false if b can
 * not start a sequence. */
static bool lead_byte(utf8_t *u, uint8_t b)
{
    u->lo = CONT_LO;
    u->hi = CONT_HI;
    if (b < 0xC2) /* stray continuation byte, or overlong C0/C1 */
        return false;
    if (b < 0xE0) {
        u->need = 1;
    } else if (b < 0xF0) {
        u->need = 2;
        if (b == 0xE0)
            u->lo = 0xA0;
        else if (b == 0xED)
            u->hi = 0x9F;
    } else if (b < 0xF5) {
        u->need = 3;
        if (b == 0xF0)
            u->lo = 0x90;
        else if (b == 0xF4)
            u->hi = 0x8F;
    } else {
        return false;
    }
    return true;
}

/* Skip the ASCII prefix of p[0..end), a word at a time. */
static const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end)
{
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        if (w & HIGH_BITS)
            break;
        p += 8;
    }
    while (p < end && *p < 0x80)
        p++;
    return p;
}

int utf8_feed(utf8_t *u, const uint8_t *p, size_t n)
{
    utf8_t s = *u;

    if (s.need == UTF8_DEAD)
        return UTF8_REJECT;
    if (n == 0) /* p may be NULL */
        return s.need ? UTF8_PARTIAL : UTF8_OK;

    const uint8_t *end = p + n;

    /* finish a sequence left open by the previous call */
    while (s.need > 0 && p < end) {
        uint8_t b = *p++;
        if (b < s.lo || b > s.hi)
            goto reject;
        s.need--;
        s.lo = CONT_LO;
        s.hi = CONT_HI;
    }
    while (p < end) {
        if (*p < 0x80) {
            p = skip_ascii(p, end);
            continue;
        }
        if (!lead_byte(&s, *p++))
            goto reject;
        if ((size_t)(end - p) < s.need) {
            /* the sequence runs past this buffer: check what is here and
             * leave the rest to the next call */
            while (p < end) {
                if (*p < s.lo || *p > s.hi)
                    goto reject;
                p++;
                s.need--;
                s.lo = CONT_LO;
                s.hi = CONT_HI;
            }
            break;
        }
        /* the whole sequence is here: the first continuation byte has the
         * range the lead byte chose, the others are plain 80..BF */
        if (p[0] < s.lo || p[0] > s.hi)
            goto reject;
        for (unsigned k = 1; k < s.need; k++)
            if ((p[k] & 0xC0) != 0x80)
                goto reject;
        p += s.need;
        s.need = 0;
    }
    *u = s;
    return s.need ? UTF8_PARTIAL : UTF8_OK;

reject:
    u->need = UTF8_DEAD;
    return UTF8_REJECT;
}

bool utf8_valid(const uint8_t *p, size_t n)
{
    utf8_t u;

    utf8_init(&u);
    return utf8_feed(&u, p, n) == UTF8_OK;
}
