/*
 * msg.c - the JSON messages of PROTOCOL.md section 2.
 *
 * Client requests (msg_parse, the broker's hot path) and broker messages
 * (msg_parse_server, what clients and the bench read for every delivery)
 * are read in one pass over the bytes, without cJSON and without
 * allocating. scan_json() is a strict RFC 8259 validator driven by a
 * 256-entry character-class table; while it walks the whole message it
 * records, for the first top-level occurrence of each member the caller
 * looks for, the exact bytes of its value. Those spans are what the broker
 * forwards ("data") and echoes ("id") verbatim, and what strings and
 * numbers are decoded from. The type of a member is the first byte of its
 * span. Member names are compared after unescaping and, as cJSON's
 * strcmp() lookup did before, only up to a decoded NUL ("data\u0000x" is
 * "data"). When a member appears twice, the first one counts, whatever its
 * type: {"seq":"x","seq":5} has no usable seq.
 *
 * What scan_json() accepts, exactly:
 *   - one JSON text, optionally after a UTF-8 byte order mark, with only
 *     space, tab, LF and CR around and between tokens; nothing may follow
 *     the top-level value but whitespace;
 *   - strings without raw bytes below 0x20; escapes are the eight
 *     two-byte ones (\" \\ \/ \b \f \n \r \t) and \uXXXX with four hex
 *     digits of either case. A \u escape for a high surrogate (D800-DBFF)
 *     must be followed at once by a \u escape for a low one (DC00-DFFF); a
 *     low surrogate on its own is refused. RFC 8259's grammar lets lone
 *     surrogates through, but they have no UTF-8 form, cJSON refused them
 *     too, and refusing keeps every forwarded string decodable. \u0000 is
 *     accepted (a decoded topic keeps the NUL and then fails topic_check);
 *   - numbers by the RFC grammar -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?
 *     [0-9]+)?, of any length: integers ("last", "since", "seq",
 *     "max_message") are converted as digits-only values that saturate at
 *     UINT64_MAX, and "heartbeat" as a correctly rounded double;
 *   - the literals true, false and null, spelled exactly;
 *   - at most MSG_DEPTH_MAX (1000) arrays and objects open at once, the
 *     message object included. That is cJSON's CJSON_NESTING_LIMIT, the
 *     bound this parser had before, so no depth that passed now fails; one
 *     bit per level (object or array) keeps the stack at 128 bytes.
 * Bytes from 0x80 up are not looked at: the broker validates every text
 * message as UTF-8 (ws_frame.c, utf8.h) before msg_parse() sees it, so
 * they are not checked again here; the client library's frame parser does
 * the same for what the broker sends. A caller feeding other bytes gets
 * non-UTF-8 strings passed through unchanged.
 *
 * Compared with the parsers this replaces (cJSON_ParseWithLength plus a
 * raw-span scanner that was already stricter than cJSON, for requests and
 * for broker messages alike), results are the same for every input
 * (differential fuzz runs against cJSON check rc, why and every field)
 * except:
 *   - a \u escape with a non-hex digit ("\uZZZZ", "\u12 4") is now
 *     bad_json. cJSON read it as U+0000 and the old scanner let it pass, so
 *     such bytes used to be forwarded in "data";
 *   - a top-level value that is not an object and that only cJSON's
 *     leniency took for JSON ("[01]", "1 x", a string with a raw tab) now
 *     gets "message is not valid JSON" instead of "message is not a JSON
 *     object", and a byte order mark followed by one digit (which cJSON
 *     refused: it skips a BOM only when 2 or more bytes follow) the
 *     reverse. Both are bad_json either way.
 * The strictness over cJSON is otherwise unchanged: cJSON took any byte up
 * to 0x20 as whitespace, raw control bytes in strings and numbers such as
 * 01, 1., -.5 or 1.e5 (strtod's grammar), and ignored anything after the
 * value; all of these are bad_json, so every "data" forwarded is strict
 * RFC 8259 JSON.
 *
 * Encoders write compact JSON into the caller's buffer through a small
 * bounded writer. Nothing in this file allocates.
 */
#include "wsproto/msg.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define STR(x)  #x
#define XSTR(x) STR(x)

/* ---------------------------------------------------------------------
 * Character tables
 * ------------------------------------------------------------------- */

enum {
    CC_WS = 1,    /* the four JSON whitespace bytes */
    CC_DIGIT = 2, /* 0-9 */
    CC_PLAIN = 4, /* stands for itself in a string: not '"', '\\' or below 0x20 */
};

#define CC_OF(c)                                                                                   \
    (((c) == ' ' || (c) == '\t' || (c) == '\n' || (c) == '\r' ? CC_WS : 0) |                       \
     ((c) >= '0' && (c) <= '9' ? CC_DIGIT : 0) |                                                   \
     ((c) >= 0x20 && (c) != '"' && (c) != '\\' ? CC_PLAIN : 0))
#define HEX_OF(c)                                                                                  \
    ((c) >= '0' && (c) <= '9'   ? (c) - '0'                                                        \
     : (c) >= 'a' && (c) <= 'f' ? (c) - 'a' + 10                                                   \
     : (c) >= 'A' && (c) <= 'F' ? (c) - 'A' + 10                                                   \
                                : -1)

/* The 256 entries F(0) .. F(255) of a byte table. */
#define T4(F, c)  F(c), F((c) + 1), F((c) + 2), F((c) + 3)
#define T16(F, c) T4(F, c), T4(F, (c) + 4), T4(F, (c) + 8), T4(F, (c) + 12)
#define T64(F, c) T16(F, c), T16(F, (c) + 16), T16(F, (c) + 32), T16(F, (c) + 48)
#define T256(F)   T64(F, 0), T64(F, 64), T64(F, 128), T64(F, 192)

static const uint8_t cclass[256] = {T256(CC_OF)};
static const int8_t hexval[256] = {T256(HEX_OF)};

#define IS_DIGIT(c) (cclass[(unsigned char)(c)] & CC_DIGIT)

/* s[0..n) equals the literal lit of n bytes (1 <= n <= 16), compared as two
 * overlapping words. The parsers match names this way because a compiler
 * may turn memcmp() into a library call, which costs more than the match. */
static inline __attribute__((always_inline)) bool eq_lit(const void *s, const char *lit, size_t n)
{
    const char *a = s;
    if (n >= 8) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, a, 8);
        memcpy(&y0, lit, 8);
        memcpy(&x1, a + n - 8, 8);
        memcpy(&y1, lit + n - 8, 8);
        return x0 == y0 && x1 == y1;
    }
    if (n >= 4) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, lit, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, lit + n - 4, 4);
        return x0 == y0 && x1 == y1;
    }
    if (n >= 2) {
        uint16_t x0, x1, y0, y1;
        memcpy(&x0, a, 2);
        memcpy(&y0, lit, 2);
        memcpy(&x1, a + n - 2, 2);
        memcpy(&y1, lit + n - 2, 2);
        return x0 == y0 && x1 == y1;
    }
    return a[0] == lit[0];
}

/* ---------------------------------------------------------------------
 * Decoding values from raw spans
 * ------------------------------------------------------------------- */

/* The code unit of "\uXXXX" starting at s[i] (the backslash), or -1. */
static long utf16_unit(const unsigned char *s, size_t n, size_t i)
{
    long v = 0;
    if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
        return -1;
    for (size_t k = i + 2; k < i + 6; k++) {
        int d = hexval[s[k]];
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decode the inside of a JSON string s[0..n) into out. Writes at most cap
 * bytes and returns the decoded length, or cap + 1 as soon as the result
 * would be longer than cap (out then holds its first cap bytes). The input
 * was validated before; malformed escapes just end the string. */
static size_t json_unescape(const unsigned char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (o >= cap)                                                                              \
            return cap + 1;                                                                        \
        out[o++] = (char)(c);                                                                      \
    } while (0)

    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c != '\\') {
            PUT(c);
            continue;
        }
        if (i + 1 >= n)
            return o;
        switch (s[i + 1]) {
        case 'b':
            c = '\b';
            break;
        case 'f':
            c = '\f';
            break;
        case 'n':
            c = '\n';
            break;
        case 'r':
            c = '\r';
            break;
        case 't':
            c = '\t';
            break;
        case 'u': {
            long cp = utf16_unit(s, n, i);
            if (cp < 0)
                return o;
            i += 5;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = utf16_unit(s, n, i + 1);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    i += 6;
                }
            }
            if (cp < 0x80) {
                PUT(cp);
            } else if (cp < 0x800) {
                PUT(0xC0 | (cp >> 6));
                PUT(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                PUT(0xE0 | (cp >> 12));
                PUT(0x80 | ((cp >> 6) & 0x3F));
                PUT(0x80 | (cp & 0x3F));
            } else {
                PUT(0xF0 | (cp >> 18));
                PUT(0x80 | ((cp >> 12) & 0x3F));
                PUT(0x80 | ((cp >> 6) & 0x3F));
                PUT(0x80 | (cp & 0x3F));
            }
            continue;
        }
        default: /* '"', '\\', '/' stand for themselves */
            c = s[i + 1];
            break;
        }
        PUT(c);
        i++;
    }
    return o;
#undef PUT
}

/* Decode the raw JSON string sp (quotes included) into out[cap + 1]: the
 * result is NUL-terminated and cut to cap bytes. Returns the decoded length,
 * or cap + 1 if it was longer. */
static __attribute__((noinline, cold)) size_t decode_string(msg_span_t sp, char *out, size_t cap)
{
    size_t n = 0;
    if (sp.len >= 2)
        n = json_unescape((const unsigned char *)sp.p + 1, sp.len - 2, out, cap);
    out[n < cap ? n : cap] = '\0';
    return n;
}

/* Digits are converted 8 at a time: the 8 bytes ending where the digits
 * end are loaded as a little-endian word, the bytes before the n digits
 * cleared (they read as leading zeros), and the digits combined in place,
 * pairs of bytes into 16-bit lanes, pairs of those into 32-bit lanes, then
 * the two halves; no lane can overflow into the next. Returns false if one
 * of the n bytes is not a digit (the same test as digit_run(), on bytes
 * that cannot carry into them). */
static inline bool dec8(const char *end, size_t n, uint64_t *v)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t w, keep = ~0ull << (8 * (8 - n));
    memcpy(&w, end - 8, sizeof w);
    w &= keep;
    uint64_t hit =
        ((w & ones * 0xF0) ^ ones * 0x30) | (((w + ones * 6) & ones * 0xF0) ^ ones * 0x30);
    if ((hit & keep) != 0)
        return false;
    w -= ones * 0x30 & keep;
    w = (w & 0x00FF00FF00FF00FFull) * 10 + (w >> 8 & 0x00FF00FF00FF00FFull);
    w = (w & 0x0000FFFF0000FFFFull) * 100 + (w >> 16 & 0x0000FFFF0000FFFFull);
    *v = (w & 0xFFFFFFFFull) * 10000 + (w >> 32);
    return true;
}

/* A non-negative JSON integer: digits only, saturating at UINT64_MAX. lo
 * is the first byte of the buffer sp lies in: up to 16 digits are read 8
 * at a time when the 8 bytes before their end are inside it. */
static inline __attribute__((always_inline)) bool parse_u64(msg_span_t sp, const char *lo,
                                                            uint64_t *v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (sp.len >= 1 && sp.len <= 16 && (size_t)(sp.p - lo) + sp.len >= (sp.len > 8 ? 16u : 8u)) {
        uint64_t hi = 0, low;
        size_t nlow = sp.len < 8 ? sp.len : 8;
        if (!dec8(sp.p + sp.len, nlow, &low))
            return false;
        if (sp.len > 8 && !dec8(sp.p + sp.len - 8, sp.len - 8, &hi))
            return false;
        *v = hi * 100000000 + low;
        return true;
    }
#else
    (void)lo;
#endif
    uint64_t r = 0;
    if (sp.len == 0)
        return false;
    size_t i = 0, fast = sp.len < 19 ? sp.len : 19; /* 19 digits never overflow */
    for (; i < fast; i++) {
        unsigned d = (unsigned char)sp.p[i] - (unsigned)'0';
        if (d > 9)
            return false;
        r = r * 10 + d;
    }
    for (; i < sp.len; i++) {
        unsigned d = (unsigned char)sp.p[i] - (unsigned)'0';
        if (d > 9)
            return false;
        r = r <= (UINT64_MAX - d) / 10 ? r * 10 + d : UINT64_MAX;
    }
    *v = r;
    return true;
}

/* ---------------------------------------------------------------------
 * Single-pass validating scanner
 * ------------------------------------------------------------------- */

#define MSG_DEPTH_MAX 1000 /* open arrays and objects, the message included */

/* The members of a message that scan_json() looks for, by index: bit k of
 * found says member k was seen (v[k] is then the raw text of its first
 * value), bit k of esc that this value is a string holding an escape. The
 * key function maps a member name (without escapes) to an index below 32,
 * or -1 for a member nobody asked for. */
typedef struct members {
    msg_span_t *v;
    unsigned found;
    unsigned esc;
} members_t;

typedef int (*member_key_fn)(const unsigned char *name, size_t n);

typedef enum scan_rc {
    SCAN_BAD,    /* not strict JSON */
    SCAN_OBJECT, /* strict JSON, an object: members filled in */
    SCAN_OTHER,  /* strict JSON, but not an object */
} scan_rc_t;

/* No whitespace byte is above ' ', and compact JSON has none: one compare
 * decides in the common case, without a table lookup. */
#define SKIP_WS(p, end)                                                                            \
    do {                                                                                           \
        while ((p) < (end) && *(p) <= ' ' && (cclass[*(p)] & CC_WS))                               \
            (p)++;                                                                                 \
    } while (0)

/* Strings are scanned 8 bytes at a time with SWAR: a byte below n sets
 * its high bit in (w - n * ONES) & ~w & HIGHS (n <= 0x80), and a zero byte
 * does for n = 1. A borrow only carries upwards, from a byte that already
 * hit, so the lowest hit is exact: on a little-endian machine it is the
 * first byte that is not plain. With SSE2 (every x86-64 has it), messages
 * of 16 bytes or more are scanned through windows instead (strwin_t). */
#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* High bit of every byte of w that is '"', '\\' or below 0x20 (the lowest
 * one exact, see above); 0 if all eight are plain. */
static inline uint64_t word_hits(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"');
    uint64_t b = w ^ (ONES * '\\');
    return (((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS;
}

/* The first byte at or after p that is not CC_PLAIN, or end. */
static inline const unsigned char *plain_run(const unsigned char *p, const unsigned char *end)
{
    for (; end - p >= 8; p += 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        uint64_t hit = word_hits(w);
        if (hit != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return p + (__builtin_ctzll(hit) >> 3);
#else
            break;
#endif
        }
    }
    while (p < end && (cclass[*p] & CC_PLAIN))
        p++;
    return p;
}

/* The code unit of the four hex digits at p, or -1. */
static inline long hex4(const unsigned char *p)
{
    int a = hexval[p[0]], b = hexval[p[1]], c = hexval[p[2]], d = hexval[p[3]];
    if ((a | b | c | d) < 0)
        return -1;
    return (long)a << 12 | b << 8 | c << 4 | d;
}

/* p is a backslash inside a string. Returns the position after its escape,
 * or NULL if the escape is not allowed (see the file comment). */
static __attribute__((noinline)) const unsigned char *req_escape(const unsigned char *p,
                                                                 const unsigned char *end)
{
    if (end - p < 2)
        return NULL;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return p + 2;
    case 'u':
        break;
    default:
        return NULL;
    }
    long hi = end - p >= 6 ? hex4(p + 2) : -1;
    if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF))
        return NULL;
    if (hi < 0xD800 || hi > 0xDBFF)
        return p + 6;
    if (end - p < 12 || p[6] != '\\' || p[7] != 'u')
        return NULL;
    long lo = hex4(p + 8);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return NULL;
    return p + 12;
}

/* With SSE2, string ends are found from a bit mask over a window of the
 * message: bit i of s is set if blk[i] is '"', '\\' or below 0x20. A
 * message of 16 to 64 bytes is one window; a longer one is read through
 * windows of 64 bytes, the last of them its last 64 bytes, so nothing
 * outside the message is read. A message's strings are short and several
 * share a window, so finding where one ends is a shift, a bit scan and a
 * look at that byte, instead of loading and comparing 16 bytes per string.
 * Below 16 bytes, strings are scanned 8 bytes at a time (plain_run). */
typedef struct strwin {
    const unsigned char *blk, *blk_end; /* no window while blk_end <= p */
    uint64_t s;
    bool on; /* windows are used */
} strwin_t;

#ifdef __SSE2__
/* Bit i: b[i] is not plain, for the 16 bytes at b. */
static inline uint64_t specials16(const unsigned char *b)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)b);
    __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1F)), x);
    __m128i qb =
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')), _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(qb, ctl));
}

/* The 64-byte window holding p (< end) of a message longer than 64. */
static __attribute__((noinline)) void win_load(strwin_t *w, const unsigned char *p,
                                               const unsigned char *end)
{
    const unsigned char *b = end - p >= 64 ? p : end - 64;
    w->s = specials16(b) | specials16(b + 16) << 16 | specials16(b + 32) << 32 |
           specials16(b + 48) << 48;
    w->blk = b;
    w->blk_end = b + 64;
}

/* The window of a whole message of 16 to 64 bytes; its last 16 bytes are
 * loaded as such, and their bits already seen dropped. */
static inline void win_whole(strwin_t *w, const unsigned char *b, size_t len)
{
    uint64_t s = 0;
    size_t i = 0;
    for (; len - i >= 16; i += 16)
        s |= specials16(b + i) << i;
    if (i < len)
        s |= specials16(b + len - 16) >> (16 - (len - i)) << i;
    w->s = s;
    w->blk = b;
    w->blk_end = b + len;
}
#endif

/* p is just past an opening quote. Returns the position just past the
 * closing quote, or NULL if the string is not strict JSON. Sets *esc if the
 * string holds an escape. */
static inline __attribute__((always_inline)) const unsigned char *
req_string(const unsigned char *p, const unsigned char *end, bool *esc, strwin_t *w)
{
#ifdef __SSE2__
    while (w->on) {
        if (p >= w->blk_end) {
            if (p == end)
                return NULL;
            win_load(w, p, end);
        }
        uint64_t s = w->s >> (p - w->blk);
        if (s == 0) {
            p = w->blk_end; /* plain to the end of the window */
            continue;
        }
        p += __builtin_ctzll(s);
        if (*p == '"')
            return p + 1;
        if (*p != '\\')
            return NULL; /* a raw control byte */
        *esc = true;
        if ((p = req_escape(p, end)) == NULL)
            return NULL;
    }
#endif
    for (;;) {
        p = plain_run(p, end);
        if (p == end)
            return NULL;
        if (*p == '"')
            return p + 1;
        if (*p != '\\')
            return NULL; /* a raw control byte */
        *esc = true;
        if ((p = req_escape(p, end)) == NULL)
            return NULL;
    }
}

/* The first byte at or after p that is not a digit, or end. A byte b is a
 * digit if its high nibble is 3 and stays 3 when 6 is added; a carry out
 * of b + 6 only reaches bytes above a non-digit, so the lowest hit is
 * exact, as in plain_run(). */
static inline const unsigned char *digit_run(const unsigned char *p, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; end - p >= 8; p += 8) {
        uint64_t w;
        memcpy(&w, p, sizeof w);
        uint64_t hit =
            ((w & ONES * 0xF0) ^ ONES * 0x30) | (((w + ONES * 6) & ONES * 0xF0) ^ ONES * 0x30);
        if (hit != 0)
            return p + (__builtin_ctzll(hit) >> 3);
    }
#endif
    while (p < end && IS_DIGIT(*p))
        p++;
    return p;
}

/* p is '-' or a digit. Returns the position after the number, or NULL. What
 * follows is the caller's business: "01" ends after the 0 and then fails
 * because '1' cannot follow a value. */
static inline __attribute__((always_inline)) const unsigned char *
req_number(const unsigned char *p, const unsigned char *end)
{
    if (*p == '-' && ++p == end)
        return NULL;
    if (*p == '0')
        p++;
    else if (IS_DIGIT(*p))
        p = digit_run(p + 1, end);
    else
        return NULL;
    if (p < end && *p == '.') {
        if (++p == end || !IS_DIGIT(*p))
            return NULL;
        p = digit_run(p + 1, end);
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !IS_DIGIT(*p))
            return NULL;
        p = digit_run(p + 1, end);
    }
    return p;
}

/* key() for a member name with escapes (already validated), decoded and
 * cut at a decoded NUL, as cJSON's strcmp() lookup did. No name looked for
 * is longer than 15 bytes. */
static __attribute__((noinline, cold)) int key_escaped(const unsigned char *k, size_t n,
                                                       member_key_fn key)
{
    char dec[16];
    size_t d = json_unescape(k, n, dec, sizeof dec);
    const char *nul = memchr(dec, '\0', d < sizeof dec ? d : sizeof dec);
    if (nul != NULL)
        d = (size_t)(nul - dec);
    else if (d > sizeof dec)
        return -1;
    return key((const unsigned char *)dec, d);
}

/* Validate buf[0..len) (len > 0) as one strict JSON text and, if it is an
 * object, fill in m (found and esc zeroed by the caller) with the members
 * key() names. One pass, no recursion: the labels are the parser's states
 * and objbits the stack of open containers (bit d set: level d is an
 * object; obj caches the innermost). A member of the message object is at
 * depth 1; cur is its index while its value is scanned (-1: not ours, or a
 * repeat), and its span is recorded once the value is complete. Each state
 * looks at the byte it expects first and skips whitespace only when that
 * byte is not it, so compact JSON pays nothing for whitespace. Always
 * inlined, so that each parser gets its own copy with its key function
 * called directly. */
static inline __attribute__((always_inline)) scan_rc_t scan_json(const char *buf, size_t len,
                                                                 members_t *m, member_key_fn key)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    const unsigned char *vstart = p, *name;
    strwin_t win = {NULL, p, 0, false};
#ifdef __SSE2__
    if (len >= 16) {
        win.on = true;
        if (len <= 64)
            win_whole(&win, p, len);
    }
#endif
    uint64_t objbits[(MSG_DEPTH_MAX + 63) / 64];
    unsigned depth = 0;
    int cur = -1;
    bool esc, obj = false;

    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        p += 3; /* a UTF-8 byte order mark, which cJSON skipped too */
    SKIP_WS(p, end);
    bool top_object = p < end && *p == '{';

value: /* a value starts at p, maybe after whitespace */
    if (p == end)
        return SCAN_BAD;
    switch (*p) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
        p++;
        if (depth == 1)
            vstart = p;
        goto value;
    case '"':
        esc = false;
        if ((p = req_string(p + 1, end, &esc, &win)) == NULL)
            return SCAN_BAD;
        if (esc && depth == 1 && cur >= 0)
            m->esc |= 1u << cur;
        break;
    case '{':
    case '[':
        if (depth == MSG_DEPTH_MAX)
            return SCAN_BAD;
        obj = *p == '{';
        if (obj)
            objbits[depth / 64] |= 1ull << (depth % 64);
        else
            objbits[depth / 64] &= ~(1ull << (depth % 64));
        depth++;
        p++;
        SKIP_WS(p, end);
        if (p < end && *p == (obj ? '}' : ']')) {
            p++;
            goto close;
        }
        if (obj)
            goto key;
        goto value;
    case 't':
        if (end - p < 4 || !eq_lit(p, "true", 4))
            return SCAN_BAD;
        p += 4;
        break;
    case 'f':
        if (end - p < 5 || !eq_lit(p, "false", 5))
            return SCAN_BAD;
        p += 5;
        break;
    case 'n':
        if (end - p < 4 || !eq_lit(p, "null", 4))
            return SCAN_BAD;
        p += 4;
        break;
    default:
        if ((*p != '-' && !IS_DIGIT(*p)) || (p = req_number(p, end)) == NULL)
            return SCAN_BAD;
        break;
    }

after: /* a value ended just before p */
    if (depth <= 1) {
        if (cur >= 0) {
            m->v[cur].p = (const char *)vstart;
            m->v[cur].len = (size_t)(p - vstart);
            m->found |= 1u << cur;
            cur = -1;
        }
        if (depth == 0) {
            SKIP_WS(p, end);
            if (p != end)
                return SCAN_BAD;
            return top_object ? SCAN_OBJECT : SCAN_OTHER;
        }
    }

next: /* inside a container after a value: ',' or its end, maybe after whitespace */
    if (p == end)
        return SCAN_BAD;
    if (*p == ',') {
        p++;
        if (obj)
            goto key;
        goto value;
    }
    if (*p == (obj ? '}' : ']')) {
        p++;
        goto close;
    }
    if (!(cclass[*p] & CC_WS))
        return SCAN_BAD;
    p++;
    goto next;

close: /* the container that ended just before p is closed */
    depth--;
    if (depth > 0)
        obj = (objbits[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;
    goto after;

key: /* a member name starts at p, maybe after whitespace */
    if (p == end)
        return SCAN_BAD;
    if (*p != '"') {
        if (!(cclass[*p] & CC_WS))
            return SCAN_BAD;
        p++;
        goto key;
    }
    esc = false;
    name = p + 1;
    if ((p = req_string(name, end, &esc, &win)) == NULL)
        return SCAN_BAD;
    if (depth == 1) {
        size_t n = (size_t)(p - 1 - name);
        int k = esc ? key_escaped(name, n, key) : key(name, n);
        if (k >= 0 && !(m->found & (1u << k)))
            cur = k;
    }

colon: /* ':' is next, maybe after whitespace */
    if (p == end)
        return SCAN_BAD;
    if (*p != ':') {
        if (!(cclass[*p] & CC_WS))
            return SCAN_BAD;
        p++;
        goto colon;
    }
    p++;
    if (depth == 1)
        vstart = p;
    goto value;
}

/* ---------------------------------------------------------------------
 * Members, as both parsers read them
 * ------------------------------------------------------------------- */

/* Member k, or {NULL, 0} if the message has none. */
static inline __attribute__((always_inline)) msg_span_t member(const members_t *m, int k)
{
    msg_span_t none = {NULL, 0};
    return m->found & (1u << k) ? m->v[k] : none;
}

/* The type of a member is the first byte of its raw text. */
static inline __attribute__((always_inline)) bool is_string(msg_span_t sp)
{
    return sp.len > 0 && sp.p[0] == '"';
}

static inline __attribute__((always_inline)) bool is_number(msg_span_t sp)
{
    return sp.len > 0 && (sp.p[0] == '-' || IS_DIGIT(sp.p[0]));
}

/* memcpy() for the short strings of a message (a topic, an epoch), which
 * a call to the library's memcpy() costs more than copying. */
static inline __attribute__((always_inline)) void copy_short(char *out, const char *in, size_t n)
{
    uint64_t a, b;
    uint32_t c, d;
    if (n >= 8 && n <= 16) {
        memcpy(&a, in, 8);
        memcpy(&b, in + n - 8, 8);
        memcpy(out, &a, 8);
        memcpy(out + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(&c, in, 4);
        memcpy(&d, in + n - 4, 4);
        memcpy(out, &c, 4);
        memcpy(out + n - 4, &d, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            out[i] = in[i];
    } else {
        memcpy(out, in, n);
    }
}

/* Decode string member k (present, a string) into out[cap + 1] as
 * decode_string() does; one without escapes is copied as it stands. */
static inline __attribute__((always_inline)) size_t member_string(const members_t *m, int k,
                                                                  char *out, size_t cap)
{
    msg_span_t sp = m->v[k];
    if (m->esc & (1u << k))
        return decode_string(sp, out, cap);
    size_t n = sp.len - 2;
    size_t c = n < cap ? n : cap;
    copy_short(out, sp.p + 1, c);
    out[c] = '\0';
    return n > cap ? cap + 1 : n;
}

/* ---------------------------------------------------------------------
 * Client requests
 * ------------------------------------------------------------------- */

enum { RK_OP, RK_ID, RK_TOPIC, RK_DATA, RK_LAST, RK_SINCE, RK_EPOCH, RK_COUNT };

/* The RK_* index of the member name k[0..n), or -1. */
static inline int req_key(const unsigned char *k, size_t n)
{
    switch (n) {
    case 2:
        if (eq_lit(k, "op", 2))
            return RK_OP;
        if (eq_lit(k, "id", 2))
            return RK_ID;
        break;
    case 4:
        if (eq_lit(k, "data", 4))
            return RK_DATA;
        if (eq_lit(k, "last", 4))
            return RK_LAST;
        break;
    case 5:
        if (eq_lit(k, "topic", 5))
            return RK_TOPIC;
        if (eq_lit(k, "since", 5))
            return RK_SINCE;
        if (eq_lit(k, "epoch", 5))
            return RK_EPOCH;
        break;
    default:
        break;
    }
    return -1;
}

static inline __attribute__((always_inline)) msg_op_t op_from(const char *s, size_t n)
{
    switch (n) {
    case 4:
        return eq_lit(s, "ping", 4) ? MSG_OP_PING : 0;
    case 7:
        return eq_lit(s, "publish", 7) ? MSG_OP_PUBLISH : 0;
    case 9:
        return eq_lit(s, "subscribe", 9) ? MSG_OP_SUBSCRIBE : 0;
    case 11:
        return eq_lit(s, "unsubscribe", 11) ? MSG_OP_UNSUBSCRIBE : 0;
    default:
        return 0;
    }
}

/* The op named by the string member "op"; 0 if it names none. */
static msg_op_t member_op(const members_t *m)
{
    msg_span_t sp = m->v[RK_OP];
    char opname[16];
    if (!(m->esc & (1u << RK_OP)))
        return op_from(sp.p + 1, sp.len - 2);
    return op_from(opname, decode_string(sp, opname, sizeof opname - 1));
}

static int check_request(msg_request_t *req, const members_t *m, const char *lo, const char **why)
{
    static const char *const need_topic[] = {
        [MSG_OP_SUBSCRIBE] = "subscribe needs a string \"topic\" member",
        [MSG_OP_UNSUBSCRIBE] = "unsubscribe needs a string \"topic\" member",
        [MSG_OP_PUBLISH] = "publish needs a string \"topic\" member",
    };
    msg_span_t id = member(m, RK_ID);

    if (id.p != NULL) {
        if (!is_string(id) && !is_number(id)) {
            *why = "\"id\" must be a string or a number";
            return MSG_E_BAD_REQUEST;
        }
        req->id = id;
    }

    if (!is_string(member(m, RK_OP))) {
        *why = "message needs a string \"op\" member";
        return MSG_E_BAD_REQUEST;
    }
    req->op = member_op(m);
    if (req->op == 0) {
        *why = "unknown \"op\": expected subscribe, unsubscribe, publish or ping";
        return MSG_E_UNKNOWN_OP;
    }
    if (req->op == MSG_OP_PING)
        return MSG_OK;

    if (!is_string(member(m, RK_TOPIC))) {
        *why = need_topic[req->op];
        return MSG_E_BAD_REQUEST;
    }
    req->has_topic = true;
    req->topic.p = req->topic_buf;
    req->topic.len = member_string(m, RK_TOPIC, req->topic_buf, TOPIC_MAX + 1);
    if (req->topic.len > TOPIC_MAX)
        req->topic.len = TOPIC_MAX + 1;

    if (req->op == MSG_OP_PUBLISH) {
        msg_span_t data = member(m, RK_DATA);
        if (data.p == NULL) {
            *why = "publish needs a \"data\" member";
            return MSG_E_BAD_REQUEST;
        }
        req->has_data = true;
        req->data = data;
        return MSG_OK;
    }
    if (req->op != MSG_OP_SUBSCRIBE)
        return MSG_OK;

    msg_span_t last = member(m, RK_LAST), since = member(m, RK_SINCE), epoch = member(m, RK_EPOCH);
    if (last.p != NULL) {
        if (!parse_u64(last, lo, &req->last)) {
            *why = "\"last\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_last = true;
    }
    if (since.p != NULL) {
        if (!parse_u64(since, lo, &req->since)) {
            *why = "\"since\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_since = true;
    }
    if (epoch.p != NULL) {
        size_t elen = 0;
        if (is_string(epoch))
            elen = member_string(m, RK_EPOCH, req->epoch_buf, MSG_EPOCH_MAX);
        if (!is_string(epoch) || elen > MSG_EPOCH_MAX) {
            *why = "\"epoch\" must be a string of at most " XSTR(MSG_EPOCH_MAX) " bytes";
            return MSG_E_BAD_REQUEST;
        }
        req->has_epoch = true;
        req->epoch.p = req->epoch_buf;
        req->epoch.len = elen;
    }
    return MSG_OK;
}

/* scan_json() for client requests, out of line (see scan_members_srv()). */
static __attribute__((noinline)) scan_rc_t scan_members_req(const char *buf, size_t len,
                                                            members_t *m)
{
    return scan_json(buf, len, m, req_key);
}

int msg_parse(const char *buf, size_t len, msg_request_t *req, const char **why)
{
    msg_span_t v[RK_COUNT];
    members_t m = {v, 0, 0};
    memset(req, 0, offsetof(msg_request_t, topic_buf));
    req->topic_buf[0] = '\0';
    req->epoch_buf[0] = '\0';
    *why = NULL;

    scan_rc_t sr = len > 0 ? scan_members_req(buf, len, &m) : SCAN_BAD;
    if (sr != SCAN_OBJECT) {
        *why = sr == SCAN_OTHER ? "message is not a JSON object" : "message is not valid JSON";
        return MSG_E_BAD_JSON;
    }
    return check_request(req, &m, buf, why);
}

const char *msg_err_code(int err)
{
    switch (err) {
    case MSG_E_BAD_JSON:
        return "bad_json";
    case MSG_E_UNKNOWN_OP:
        return "unknown_op";
    default:
        return "bad_request";
    }
}

/* ---------------------------------------------------------------------
 * Encoders
 * ------------------------------------------------------------------- */

/* The letter of c's two-byte escape (\n for a newline), or 0 if c has
 * none: then it is written as \u00XX below 0x20, as itself otherwise. */
static char short_escape(unsigned char c)
{
    switch (c) {
    case '"':
        return '"';
    case '\\':
        return '\\';
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    default:
        return 0;
    }
}

size_t msg_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        /* bytes that stand for themselves are copied a run at a time */
        size_t run = (size_t)(plain_run(u + i, u + len) - (u + i));
        if (run > 0) {
            if (cap - o < run)
                return 0;
            copy_short(out + o, s + i, run);
            o += run;
            i += run;
            if (i == len)
                break;
        }
        unsigned char c = u[i];
        char e = short_escape(c);
        if (e != 0) {
            if (cap - o < 2)
                return 0;
            out[o++] = '\\';
            out[o++] = e;
        } else if (c < 0x20) {
            if (cap - o < 6)
                return 0;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        } else {
            if (o >= cap)
                return 0;
            out[o++] = (char)c;
        }
    }
    return o;
}

size_t msg_escaped_len(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s, *end = u + len;
    size_t n = 0;
    while (u < end) {
        const unsigned char *q = plain_run(u, end);
        n += (size_t)(q - u);
        if (q == end)
            break;
        n += short_escape(*q) != 0 ? 2 : *q < 0x20 ? 6 : 1; /* as msg_escape */
        u = q + 1;
    }
    return n;
}

/* Bounded writer: once something does not fit, it stays full and the
 * encoder returns 0. */
typedef struct wbuf {
    char *p;
    size_t cap;
    size_t len;
    bool full;
} wbuf_t;

static void put(wbuf_t *w, const char *s, size_t n)
{
    if (w->full || n > w->cap - w->len) {
        w->full = true;
        return;
    }
    if (n > 0)
        memcpy(w->p + w->len, s, n);
    w->len += n;
}

#define PUT_LIT(w, lit) put((w), (lit), sizeof(lit) - 1)

static void put_str(wbuf_t *w, const char *s, size_t n)
{
    PUT_LIT(w, "\"");
    if (!w->full && n > 0) {
        size_t e = msg_escape(w->p + w->len, w->cap - w->len, s, n);
        if (e == 0)
            w->full = true;
        w->len += e;
    }
    PUT_LIT(w, "\"");
}

static void put_cstr(wbuf_t *w, const char *s)
{
    put_str(w, s, s != NULL ? strlen(s) : 0);
}

size_t msg_u64(char *out, uint64_t v)
{
    char d[20];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(out, d + i, sizeof d - i);
    return sizeof d - i;
}

static void put_u64(wbuf_t *w, uint64_t v)
{
    char d[20];
    put(w, d, msg_u64(d, v));
}

/* A JSON value copied verbatim; an empty one is written as null so the
 * output stays JSON. */
static void put_raw(wbuf_t *w, const char *s, size_t n)
{
    if (n == 0)
        PUT_LIT(w, "null");
    else
        put(w, s, n);
}

/* Up to three decimals, no trailing zeros: 20 -> 20, 0.25 -> 0.25. JSON
 * has no NaN or infinity; those print as 0. */
static void put_decimal3(wbuf_t *w, double v)
{
    bool neg = v < 0;
    if (!isfinite(v))
        v = 0;
    if (neg)
        v = -v;
    if (v > 1e15)
        v = 1e15;
    uint64_t m = (uint64_t)(v * 1000.0 + 0.5);
    if (neg && m != 0)
        PUT_LIT(w, "-");
    put_u64(w, m / 1000);
    unsigned frac = (unsigned)(m % 1000);
    if (frac != 0) {
        char f[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                     (char)('0' + frac % 10)};
        size_t n = 4;
        while (f[n - 1] == '0')
            n--;
        put(w, f, n);
    }
}

static size_t finish(const wbuf_t *w)
{
    return w->full ? 0 : w->len;
}

/* Saturating size arithmetic, so a bound never wraps below the truth. */
static size_t sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t escaped_max(size_t n)
{
    return n > SIZE_MAX / 6 ? SIZE_MAX : n * 6;
}

static size_t raw_max(size_t n)
{
    return n < 4 ? 4 : n; /* "null" stands in for an empty value */
}

#define LIT_LEN(lit)   (sizeof(lit) - 1)
#define U64_MAX_DIGITS 20

size_t msg_message_bound(size_t topic_len, size_t data_len)
{
    size_t n = LIT_LEN("{\"op\":\"message\",\"topic\":\"\",\"seq\":,\"data\":}") + U64_MAX_DIGITS;
    return sat_add(sat_add(n, escaped_max(topic_len)), raw_max(data_len));
}

static size_t u64_digits(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

size_t msg_message_size(const char *topic, size_t topic_len, uint64_t seq, size_t data_len)
{
    size_t n = LIT_LEN("{\"op\":\"message\",\"topic\":\"\",\"seq\":,\"data\":}");
    n = sat_add(n, u64_digits(seq));
    n = sat_add(n, data_len == 0 ? LIT_LEN("null") : data_len);
    return sat_add(n, msg_escaped_len(topic, topic_len));
}

size_t msg_encode_message(char *out, size_t cap, const char *topic, size_t topic_len, uint64_t seq,
                          const char *data, size_t data_len)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"message\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"seq\":");
    put_u64(&w, seq);
    PUT_LIT(&w, ",\"data\":");
    put_raw(&w, data, data_len);
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_encode_hello(char *out, size_t cap, const char *client, const char *server,
                        double heartbeat, uint64_t max_message)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"hello\",\"client\":");
    put_cstr(&w, client);
    PUT_LIT(&w, ",\"server\":");
    put_cstr(&w, server);
    PUT_LIT(&w, ",\"heartbeat\":");
    put_decimal3(&w, heartbeat);
    PUT_LIT(&w, ",\"max_message\":");
    put_u64(&w, max_message);
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_ack_bound(const msg_ack_t *ack)
{
    size_t n = LIT_LEN("{\"op\":\"ack\"}");
    if (ack->id.len > 0)
        n = sat_add(n + LIT_LEN(",\"id\":"), ack->id.len);
    if (ack->topic != NULL)
        n = sat_add(sat_add(n, LIT_LEN(",\"topic\":\"\"")),
                    msg_escaped_len(ack->topic, ack->topic_len));
    if (ack->has_seq)
        n = sat_add(n, LIT_LEN(",\"seq\":") + u64_digits(ack->seq));
    if (ack->epoch != NULL)
        n = sat_add(sat_add(n, LIT_LEN(",\"epoch\":\"\"")),
                    msg_escaped_len(ack->epoch, strlen(ack->epoch)));
    if (ack->recovered >= 0)
        n = sat_add(n, LIT_LEN(",\"recovered\":false"));
    return n;
}

/* An ack without an id has nothing to answer; the id member is then left
 * out rather than written empty, so the output is still JSON. */
size_t msg_encode_ack(char *out, size_t cap, const msg_ack_t *ack)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"ack\"");
    if (ack->id.len > 0) {
        PUT_LIT(&w, ",\"id\":");
        put(&w, ack->id.p, ack->id.len);
    }
    if (ack->topic != NULL) {
        PUT_LIT(&w, ",\"topic\":");
        put_str(&w, ack->topic, ack->topic_len);
    }
    if (ack->has_seq) {
        PUT_LIT(&w, ",\"seq\":");
        put_u64(&w, ack->seq);
    }
    if (ack->epoch != NULL) {
        PUT_LIT(&w, ",\"epoch\":");
        put_cstr(&w, ack->epoch);
    }
    if (ack->recovered >= 0) {
        if (ack->recovered)
            PUT_LIT(&w, ",\"recovered\":true");
        else
            PUT_LIT(&w, ",\"recovered\":false");
    }
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_error_bound(msg_span_t id, const char *code, const char *message)
{
    size_t n = LIT_LEN("{\"op\":\"error\",\"id\":,\"code\":\"\",\"message\":\"\"}");
    n = sat_add(n, id.len);
    n = sat_add(n, escaped_max(code != NULL ? strlen(code) : 0));
    return sat_add(n, escaped_max(message != NULL ? strlen(message) : 0));
}

size_t msg_encode_error(char *out, size_t cap, msg_span_t id, const char *code, const char *message)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"error\"");
    if (id.len > 0) {
        PUT_LIT(&w, ",\"id\":");
        put(&w, id.p, id.len);
    }
    PUT_LIT(&w, ",\"code\":");
    put_cstr(&w, code);
    PUT_LIT(&w, ",\"message\":");
    put_cstr(&w, message);
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_encode_pong(char *out, size_t cap, msg_span_t id)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"pong\"");
    if (id.len > 0) {
        PUT_LIT(&w, ",\"id\":");
        put(&w, id.p, id.len);
    }
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_publish_bound(size_t topic_len, size_t data_len, msg_span_t id)
{
    size_t n = LIT_LEN("{\"op\":\"publish\",\"topic\":\"\",\"data\":,\"id\":}");
    n = sat_add(n, escaped_max(topic_len));
    n = sat_add(n, raw_max(data_len));
    return sat_add(n, id.len);
}

size_t msg_encode_publish(char *out, size_t cap, const char *topic, size_t topic_len,
                          const char *data, size_t data_len, msg_span_t id)
{
    wbuf_t w = {out, cap, 0, false};
    PUT_LIT(&w, "{\"op\":\"publish\",\"topic\":");
    put_str(&w, topic, topic_len);
    PUT_LIT(&w, ",\"data\":");
    put_raw(&w, data, data_len);
    if (id.len > 0) {
        PUT_LIT(&w, ",\"id\":");
        put(&w, id.p, id.len);
    }
    PUT_LIT(&w, "}");
    return finish(&w);
}

size_t msg_encode_subscribe(char *out, size_t cap, bool unsubscribe, const char *pattern,
                            size_t pattern_len, msg_span_t id, int64_t last, int64_t since,
                            const char *epoch)
{
    wbuf_t w = {out, cap, 0, false};
    if (unsubscribe)
        PUT_LIT(&w, "{\"op\":\"unsubscribe\",\"topic\":");
    else
        PUT_LIT(&w, "{\"op\":\"subscribe\",\"topic\":");
    put_str(&w, pattern, pattern_len);
    if (id.len > 0) {
        PUT_LIT(&w, ",\"id\":");
        put(&w, id.p, id.len);
    }
    if (last >= 0) {
        PUT_LIT(&w, ",\"last\":");
        put_u64(&w, (uint64_t)last);
    }
    if (since >= 0) {
        PUT_LIT(&w, ",\"since\":");
        put_u64(&w, (uint64_t)since);
    }
    if (epoch != NULL) {
        PUT_LIT(&w, ",\"epoch\":");
        put_cstr(&w, epoch);
    }
    PUT_LIT(&w, "}");
    return finish(&w);
}

/* ---------------------------------------------------------------------
 * Broker messages, parsed on the client side
 * ------------------------------------------------------------------- */

enum {
    SK_OP,
    SK_ID,
    SK_DATA,
    SK_TOPIC,
    SK_SEQ,
    SK_EPOCH,
    SK_RECOVERED,
    SK_CODE,
    SK_MESSAGE,
    SK_CLIENT,
    SK_SERVER,
    SK_HEARTBEAT,
    SK_MAX_MESSAGE,
    SK_COUNT
};

/* The SK_* index of the member name k[0..n), or -1. */
static inline int srv_key(const unsigned char *k, size_t n)
{
    switch (n) {
    case 2:
        if (eq_lit(k, "op", 2))
            return SK_OP;
        if (eq_lit(k, "id", 2))
            return SK_ID;
        break;
    case 3:
        if (eq_lit(k, "seq", 3))
            return SK_SEQ;
        break;
    case 4:
        if (eq_lit(k, "data", 4))
            return SK_DATA;
        if (eq_lit(k, "code", 4))
            return SK_CODE;
        break;
    case 5:
        if (eq_lit(k, "topic", 5))
            return SK_TOPIC;
        if (eq_lit(k, "epoch", 5))
            return SK_EPOCH;
        break;
    case 6:
        if (eq_lit(k, "client", 6))
            return SK_CLIENT;
        if (eq_lit(k, "server", 6))
            return SK_SERVER;
        break;
    case 7:
        if (eq_lit(k, "message", 7))
            return SK_MESSAGE;
        break;
    case 9:
        if (eq_lit(k, "recovered", 9))
            return SK_RECOVERED;
        if (eq_lit(k, "heartbeat", 9))
            return SK_HEARTBEAT;
        break;
    case 11:
        if (eq_lit(k, "max_message", 11))
            return SK_MAX_MESSAGE;
        break;
    default:
        break;
    }
    return -1;
}

static inline __attribute__((always_inline)) msg_sop_t sop_from(const char *s, size_t n)
{
    switch (n) {
    case 3:
        return eq_lit(s, "ack", 3) ? MSG_S_ACK : 0;
    case 4:
        return eq_lit(s, "pong", 4) ? MSG_S_PONG : 0;
    case 5:
        if (eq_lit(s, "hello", 5))
            return MSG_S_HELLO;
        return eq_lit(s, "error", 5) ? MSG_S_ERROR : 0;
    case 7:
        return eq_lit(s, "message", 7) ? MSG_S_MESSAGE : 0;
    default:
        return 0;
    }
}

#define DBL_DIGITS_MAX 800 /* significant digits kept for strtod() */
#define DBL_EXP_MAX    100000
/* The written exponent stops growing here: far beyond DBL_EXP_MAX plus the
 * digit count of any message, so adding the scale cannot flip its sign. */
#define EXP_SATURATE 100000000000000000ll

/* A (validated) JSON number as a double, correctly rounded, the value
 * cJSON's strtod() gave. strtod() reads the locale's decimal point, and
 * the buffer is not NUL-terminated, so the number is rewritten as
 * [-]DIGITS e EXP without a point. Beyond 800 significant digits the rest
 * only decides rounding: it is replaced by one sticky digit, which rounds
 * the same since every double and every midpoint between two doubles has
 * fewer than 770 significant digits. Exponents are clamped far beyond the
 * range of a double. errno is left as it was. */
static __attribute__((noinline, cold)) double json_double(msg_span_t sp)
{
    char t[1 + DBL_DIGITS_MAX + 1 + 2 + 8 + 1];
    const char *p = sp.p, *end = sp.p + sp.len;
    size_t o = 0, kept = 0;
    int64_t scale = 0, exp = 0; /* value: DIGITS * 10^(scale + exp) */
    bool sticky = false;

    if (p < end && *p == '-')
        t[o++] = *p++;
    for (; p < end && IS_DIGIT(*p); p++) {
        if (kept == 0 && *p == '0')
            continue;
        if (kept < DBL_DIGITS_MAX) {
            t[o++] = *p;
            kept++;
        } else {
            sticky |= *p != '0';
            scale++;
        }
    }
    if (p < end && *p == '.') {
        for (p++; p < end && IS_DIGIT(*p); p++) {
            if (kept == 0 && *p == '0') {
                scale--;
            } else if (kept < DBL_DIGITS_MAX) {
                t[o++] = *p;
                kept++;
                scale--;
            } else {
                sticky |= *p != '0';
            }
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        bool neg = ++p < end && *p == '-';
        if (p < end && (*p == '-' || *p == '+'))
            p++;
        for (; p < end && IS_DIGIT(*p); p++) {
            if (exp < EXP_SATURATE)
                exp = exp * 10 + (*p - '0');
        }
        if (neg)
            exp = -exp;
    }
    if (kept == 0) {
        t[o++] = '0';
    } else {
        if (sticky) {
            t[o++] = '1';
            scale--;
        }
        exp += scale;
        exp = exp > DBL_EXP_MAX ? DBL_EXP_MAX : exp < -DBL_EXP_MAX ? -DBL_EXP_MAX : exp;
        t[o++] = 'e';
        if (exp < 0) {
            t[o++] = '-';
            exp = -exp;
        }
        char d[8];
        size_t nd = 0;
        do {
            d[nd++] = (char)('0' + exp % 10);
            exp /= 10;
        } while (exp != 0);
        while (nd > 0)
            t[o++] = d[--nd];
    }
    t[o] = '\0';
    int saved = errno;
    double v = strtod(t, NULL);
    errno = saved;
    return v;
}

/* scan_json() for broker messages, out of line: the code that reads the
 * members stays small enough for the compiler to inline its helpers. */
static __attribute__((noinline)) scan_rc_t scan_members_srv(const char *buf, size_t len,
                                                            members_t *m)
{
    return scan_json(buf, len, m, srv_key);
}

/* Where the string members go in msg_server_t. */
static const struct {
    uint16_t off, size;
} srv_strings[SK_COUNT] = {
    [SK_TOPIC] = {offsetof(msg_server_t, topic), sizeof(((msg_server_t *)0)->topic)},
    [SK_CODE] = {offsetof(msg_server_t, code), sizeof(((msg_server_t *)0)->code)},
    [SK_MESSAGE] = {offsetof(msg_server_t, message), sizeof(((msg_server_t *)0)->message)},
    [SK_EPOCH] = {offsetof(msg_server_t, epoch), sizeof(((msg_server_t *)0)->epoch)},
    [SK_CLIENT] = {offsetof(msg_server_t, client), sizeof(((msg_server_t *)0)->client)},
    [SK_SERVER] = {offsetof(msg_server_t, server), sizeof(((msg_server_t *)0)->server)},
};
#define SRV_STRINGS                                                                                \
    (1u << SK_TOPIC | 1u << SK_CODE | 1u << SK_MESSAGE | 1u << SK_EPOCH | 1u << SK_CLIENT |        \
     1u << SK_SERVER)

/* Members of the wrong type are treated as absent: a client library reports
 * what the broker said and does not police it. */
int msg_parse_server(const char *buf, size_t len, msg_server_t *m)
{
    msg_span_t v[SK_COUNT];
    members_t sm = {v, 0, 0};
    char opname[16];

    m->op = 0;
    m->id.p = m->data.p = NULL;
    m->id.len = m->data.len = 0;
    m->has_seq = false;
    m->seq = 0;
    m->recovered = -1;
    m->heartbeat = 0;
    m->max_message = 0;
    m->topic[0] = m->code[0] = m->message[0] = m->epoch[0] = m->client[0] = m->server[0] = '\0';

    if (len == 0 || scan_members_srv(buf, len, &sm) != SCAN_OBJECT ||
        !is_string(member(&sm, SK_OP)))
        return MSG_E_BAD_JSON;
    msg_span_t op = sm.v[SK_OP];
    if (sm.esc & (1u << SK_OP))
        m->op = sop_from(opname, decode_string(op, opname, sizeof opname - 1));
    else
        m->op = sop_from(op.p + 1, op.len - 2);
    if (m->op == 0)
        return MSG_E_UNKNOWN_OP;

    msg_span_t sp = member(&sm, SK_ID);
    if (is_string(sp) || is_number(sp))
        m->id = sp;
    if (m->op == MSG_S_MESSAGE)
        m->data = member(&sm, SK_DATA);
    sp = member(&sm, SK_SEQ);
    if (is_number(sp))
        m->has_seq = parse_u64(sp, buf, &m->seq);
    sp = member(&sm, SK_RECOVERED);
    if (sp.len > 0 && (sp.p[0] == 't' || sp.p[0] == 'f'))
        m->recovered = sp.p[0] == 't';
    sp = member(&sm, SK_HEARTBEAT);
    if (is_number(sp))
        m->heartbeat = json_double(sp);
    sp = member(&sm, SK_MAX_MESSAGE);
    if (is_number(sp) && !parse_u64(sp, buf, &m->max_message))
        m->max_message = 0;
    /* the strings present, each decoded, cut to fit and NUL-terminated */
    for (unsigned want = sm.found & SRV_STRINGS; want != 0; want &= want - 1) {
        int k = __builtin_ctz(want);
        if (is_string(v[k]))
            member_string(&sm, k, (char *)m + srv_strings[k].off, srv_strings[k].size - 1u);
    }
    return MSG_OK;
}
