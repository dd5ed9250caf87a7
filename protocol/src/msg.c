/*
 * msg.c - the JSON messages of PROTOCOL.md section 2.
 *
 * Client requests (msg_parse, the broker's hot path) are read in one pass
 * over the bytes, without cJSON and without allocating. scan_request() is
 * a strict RFC 8259 validator driven by a 256-entry character-class table;
 * while it walks the whole message it records, for the first top-level
 * occurrence of each member we care about (op, id, topic, data, last,
 * since, epoch), the exact bytes of its value. Those spans are what the
 * broker forwards ("data") and echoes ("id") verbatim, and what op, topic
 * and epoch are decoded from. The type of a member is the first byte of
 * its span. Member names are compared after unescaping and, as cJSON's
 * strcmp() lookup did before, only up to a decoded NUL ("data\u0000x" is
 * "data"); the first occurrence wins.
 *
 * What scan_request() accepts, exactly:
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
 *     [0-9]+)?, of any length: only "last" and "since" are converted, as
 *     digits-only integers that saturate at UINT64_MAX;
 *   - the literals true, false and null, spelled exactly;
 *   - at most MSG_DEPTH_MAX (1000) arrays and objects open at once, the
 *     message object included. That is cJSON's CJSON_NESTING_LIMIT, the
 *     bound this parser had before, so no depth that passed now fails; one
 *     bit per level (object or array) keeps the stack at 128 bytes.
 * Bytes from 0x80 up are not looked at: the broker validates every text
 * message as UTF-8 (ws_frame.c, utf8.h) before msg_parse() sees it, so
 * they are not checked again here. A caller feeding other bytes gets
 * non-UTF-8 strings passed through unchanged.
 *
 * Compared with the two-pass parser this replaces (cJSON_ParseWithLength
 * plus a raw-span scanner that was already stricter than cJSON), results
 * are the same for every input (a differential fuzz run against it agreed
 * on rc, why and every field) except:
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
 * Broker messages (msg_parse_server, used by clients and not hot) are still
 * parsed with cJSON plus the raw-span scanner at the end of this file.
 * Encoders write compact JSON into the caller's buffer through a small
 * bounded writer; nothing here allocates except cJSON in msg_parse_server.
 */
#include "wsproto/msg.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

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
static size_t decode_string(msg_span_t sp, char *out, size_t cap)
{
    size_t n = 0;
    if (sp.len >= 2)
        n = json_unescape((const unsigned char *)sp.p + 1, sp.len - 2, out, cap);
    out[n < cap ? n : cap] = '\0';
    return n;
}

/* A non-negative JSON integer: digits only, saturating at UINT64_MAX. */
static bool parse_u64(msg_span_t sp, uint64_t *v)
{
    uint64_t r = 0;
    if (sp.len == 0)
        return false;
    for (size_t i = 0; i < sp.len; i++) {
        unsigned char c = (unsigned char)sp.p[i];
        if (!IS_DIGIT(c))
            return false;
        unsigned d = (unsigned)(c - '0');
        r = r > (UINT64_MAX - d) / 10 ? UINT64_MAX : r * 10 + d;
    }
    *v = r;
    return true;
}

/* ---------------------------------------------------------------------
 * Single-pass validating scanner for client requests
 * ------------------------------------------------------------------- */

#define MSG_DEPTH_MAX 1000 /* open arrays and objects, the message included */

enum { RK_OP, RK_ID, RK_TOPIC, RK_DATA, RK_LAST, RK_SINCE, RK_EPOCH, RK_COUNT };

/* The members scan_request() found: raw value spans (p NULL: absent) and,
 * bit k of esc, whether string member k holds an escape. */
typedef struct req_members {
    msg_span_t v[RK_COUNT];
    unsigned esc;
} req_members_t;

typedef enum scan_rc {
    SCAN_BAD,    /* not strict JSON */
    SCAN_OBJECT, /* strict JSON, an object: members filled in */
    SCAN_OTHER,  /* strict JSON, but not an object */
} scan_rc_t;

#define SKIP_WS(p, end)                                                                            \
    do {                                                                                           \
        while ((p) < (end) && (cclass[*(p)] & CC_WS))                                              \
            (p)++;                                                                                 \
    } while (0)

/* SWAR: true if none of the 8 bytes in w is '"', '\\' or below 0x20, i.e.
 * all of them are CC_PLAIN. A byte below n sets its high bit in
 * (w - n * ONES) & ~w & HIGHS (n <= 0x80), and a zero byte does for n = 1;
 * without such a byte no borrow crosses bytes, so the test is exact. */
#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline bool word_plain(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"');
    uint64_t b = w ^ (ONES * '\\');
    uint64_t hit = ((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b);
    return (hit & HIGHS) == 0;
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
static const unsigned char *req_escape(const unsigned char *p, const unsigned char *end)
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

/* p is just past an opening quote. Returns the position just past the
 * closing quote, or NULL if the string is not strict JSON. Sets *esc if the
 * string holds an escape. Plain runs go 8 bytes at a time. */
static inline const unsigned char *req_string(const unsigned char *p, const unsigned char *end,
                                              bool *esc)
{
    for (;;) {
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, sizeof w);
            if (!word_plain(w))
                break;
            p += 8;
        }
        while (p < end && (cclass[*p] & CC_PLAIN))
            p++;
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

/* p is '-' or a digit. Returns the position after the number, or NULL. What
 * follows is the caller's business: "01" ends after the 0 and then fails
 * because '1' cannot follow a value. */
static inline const unsigned char *req_number(const unsigned char *p, const unsigned char *end)
{
    if (*p == '-' && ++p == end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (IS_DIGIT(*p)) {
        do
            p++;
        while (p < end && IS_DIGIT(*p));
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        if (++p == end || !IS_DIGIT(*p))
            return NULL;
        do
            p++;
        while (p < end && IS_DIGIT(*p));
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !IS_DIGIT(*p))
            return NULL;
        do
            p++;
        while (p < end && IS_DIGIT(*p));
    }
    return p;
}

/* The RK_* index of the member name k[0..n) as sent, or -1. */
static int req_key(const unsigned char *k, size_t n)
{
    switch (n) {
    case 2:
        if (k[0] == 'o' && k[1] == 'p')
            return RK_OP;
        if (k[0] == 'i' && k[1] == 'd')
            return RK_ID;
        break;
    case 4:
        if (memcmp(k, "data", 4) == 0)
            return RK_DATA;
        if (memcmp(k, "last", 4) == 0)
            return RK_LAST;
        break;
    case 5:
        if (memcmp(k, "topic", 5) == 0)
            return RK_TOPIC;
        if (memcmp(k, "since", 5) == 0)
            return RK_SINCE;
        if (memcmp(k, "epoch", 5) == 0)
            return RK_EPOCH;
        break;
    default:
        break;
    }
    return -1;
}

/* req_key() for a name with escapes (already validated): decoded, and cut
 * at a decoded NUL. No name we look for is longer than 5 bytes. */
static int req_key_escaped(const unsigned char *k, size_t n)
{
    char dec[8];
    size_t d = json_unescape(k, n, dec, sizeof dec);
    const char *nul = memchr(dec, '\0', d < sizeof dec ? d : sizeof dec);
    if (nul != NULL)
        d = (size_t)(nul - dec);
    else if (d > sizeof dec)
        return -1;
    return req_key((const unsigned char *)dec, d);
}

/* Validate buf[0..len) (len > 0) as one strict JSON text and, if it is an
 * object, fill in m (zeroed by the caller). One pass, no recursion: the
 * labels are the parser's states and objbits the stack of open containers
 * (bit d set: level d is an object). A member of the message object is at
 * depth 1; cur is its RK_* index while its value is scanned (-1: not ours,
 * or a repeat), and its span is recorded once the value is complete. */
static scan_rc_t scan_request(const char *buf, size_t len, req_members_t *m)
{
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    const unsigned char *vstart = p, *name;
    uint64_t objbits[(MSG_DEPTH_MAX + 63) / 64];
    unsigned depth = 0;
    int cur = -1;
    bool esc, obj;

    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        p += 3; /* a UTF-8 byte order mark, which cJSON skipped too */
    SKIP_WS(p, end);
    bool top_object = p < end && *p == '{';

value: /* a value starts at p */
    if (p == end)
        return SCAN_BAD;
    switch (*p) {
    case '"':
        esc = false;
        if ((p = req_string(p + 1, end, &esc)) == NULL)
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
            depth--;
            break;
        }
        if (obj)
            goto key;
        goto value;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return SCAN_BAD;
        p += 4;
        break;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return SCAN_BAD;
        p += 5;
        break;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
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
            cur = -1;
        }
        if (depth == 0) {
            SKIP_WS(p, end);
            if (p != end)
                return SCAN_BAD;
            return top_object ? SCAN_OBJECT : SCAN_OTHER;
        }
    }
    SKIP_WS(p, end);
    if (p == end)
        return SCAN_BAD;
    obj = (objbits[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;
    if (*p == ',') {
        p++;
        SKIP_WS(p, end);
        if (obj)
            goto key;
        goto value;
    }
    if (*p != (obj ? '}' : ']'))
        return SCAN_BAD;
    p++;
    depth--;
    goto after;

key: /* a member name starts at p */
    if (p == end || *p != '"')
        return SCAN_BAD;
    esc = false;
    name = p + 1;
    if ((p = req_string(name, end, &esc)) == NULL)
        return SCAN_BAD;
    if (depth == 1) {
        size_t n = (size_t)(p - 1 - name);
        int k = esc ? req_key_escaped(name, n) : req_key(name, n);
        if (k >= 0 && m->v[k].p == NULL)
            cur = k;
    }
    SKIP_WS(p, end);
    if (p == end || *p != ':')
        return SCAN_BAD;
    p++;
    SKIP_WS(p, end);
    if (depth == 1)
        vstart = p;
    goto value;
}

/* ---------------------------------------------------------------------
 * Client requests
 * ------------------------------------------------------------------- */

static bool is_string(msg_span_t sp)
{
    return sp.len > 0 && sp.p[0] == '"';
}

static bool is_number(msg_span_t sp)
{
    return sp.len > 0 && (sp.p[0] == '-' || IS_DIGIT(sp.p[0]));
}

/* Decode string member k into out[cap + 1] as decode_string() does; one
 * without escapes is copied as it stands. */
static size_t member_string(const req_members_t *m, int k, char *out, size_t cap)
{
    msg_span_t sp = m->v[k];
    if (m->esc & (1u << k))
        return decode_string(sp, out, cap);
    size_t n = sp.len - 2;
    size_t c = n < cap ? n : cap;
    memcpy(out, sp.p + 1, c);
    out[c] = '\0';
    return n > cap ? cap + 1 : n;
}

static msg_op_t op_from(const char *s, size_t n)
{
    switch (n) {
    case 4:
        return memcmp(s, "ping", 4) == 0 ? MSG_OP_PING : 0;
    case 7:
        return memcmp(s, "publish", 7) == 0 ? MSG_OP_PUBLISH : 0;
    case 9:
        return memcmp(s, "subscribe", 9) == 0 ? MSG_OP_SUBSCRIBE : 0;
    case 11:
        return memcmp(s, "unsubscribe", 11) == 0 ? MSG_OP_UNSUBSCRIBE : 0;
    default:
        return 0;
    }
}

/* The op named by the string member "op"; 0 if it names none. */
static msg_op_t member_op(const req_members_t *m)
{
    msg_span_t sp = m->v[RK_OP];
    char opname[16];
    if (!(m->esc & (1u << RK_OP)))
        return op_from(sp.p + 1, sp.len - 2);
    return op_from(opname, decode_string(sp, opname, sizeof opname - 1));
}

static int check_request(msg_request_t *req, const req_members_t *m, const char **why)
{
    static const char *const need_topic[] = {
        [MSG_OP_SUBSCRIBE] = "subscribe needs a string \"topic\" member",
        [MSG_OP_UNSUBSCRIBE] = "unsubscribe needs a string \"topic\" member",
        [MSG_OP_PUBLISH] = "publish needs a string \"topic\" member",
    };
    const msg_span_t *v = m->v;

    if (v[RK_ID].p != NULL) {
        if (!is_string(v[RK_ID]) && !is_number(v[RK_ID])) {
            *why = "\"id\" must be a string or a number";
            return MSG_E_BAD_REQUEST;
        }
        req->id = v[RK_ID];
    }

    if (!is_string(v[RK_OP])) {
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

    if (!is_string(v[RK_TOPIC])) {
        *why = need_topic[req->op];
        return MSG_E_BAD_REQUEST;
    }
    req->has_topic = true;
    req->topic.p = req->topic_buf;
    req->topic.len = member_string(m, RK_TOPIC, req->topic_buf, TOPIC_MAX + 1);
    if (req->topic.len > TOPIC_MAX)
        req->topic.len = TOPIC_MAX + 1;

    if (req->op == MSG_OP_PUBLISH) {
        if (v[RK_DATA].p == NULL) {
            *why = "publish needs a \"data\" member";
            return MSG_E_BAD_REQUEST;
        }
        req->has_data = true;
        req->data = v[RK_DATA];
        return MSG_OK;
    }
    if (req->op != MSG_OP_SUBSCRIBE)
        return MSG_OK;

    if (v[RK_LAST].p != NULL) {
        if (!parse_u64(v[RK_LAST], &req->last)) {
            *why = "\"last\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_last = true;
    }
    if (v[RK_SINCE].p != NULL) {
        if (!parse_u64(v[RK_SINCE], &req->since)) {
            *why = "\"since\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_since = true;
    }
    if (v[RK_EPOCH].p != NULL) {
        size_t elen = 0;
        if (is_string(v[RK_EPOCH]))
            elen = member_string(m, RK_EPOCH, req->epoch_buf, MSG_EPOCH_MAX);
        if (!is_string(v[RK_EPOCH]) || elen > MSG_EPOCH_MAX) {
            *why = "\"epoch\" must be a string of at most " XSTR(MSG_EPOCH_MAX) " bytes";
            return MSG_E_BAD_REQUEST;
        }
        req->has_epoch = true;
        req->epoch.p = req->epoch_buf;
        req->epoch.len = elen;
    }
    return MSG_OK;
}

int msg_parse(const char *buf, size_t len, msg_request_t *req, const char **why)
{
    req_members_t m;
    memset(&m, 0, sizeof m);
    memset(req, 0, offsetof(msg_request_t, topic_buf));
    req->topic_buf[0] = '\0';
    req->epoch_buf[0] = '\0';
    *why = NULL;

    scan_rc_t sr = len > 0 ? scan_request(buf, len, &m) : SCAN_BAD;
    if (sr != SCAN_OBJECT) {
        *why = sr == SCAN_OTHER ? "message is not a JSON object" : "message is not valid JSON";
        return MSG_E_BAD_JSON;
    }
    return check_request(req, &m, why);
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

size_t msg_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char e = 0;
        switch (c) {
        case '"':
            e = '"';
            break;
        case '\\':
            e = '\\';
            break;
        case '\b':
            e = 'b';
            break;
        case '\f':
            e = 'f';
            break;
        case '\n':
            e = 'n';
            break;
        case '\r':
            e = 'r';
            break;
        case '\t':
            e = 't';
            break;
        default:
            break;
        }
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

static void put_u64(wbuf_t *w, uint64_t v)
{
    char d[20];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(w, d + i, sizeof d - i);
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
        n = sat_add(sat_add(n, LIT_LEN(",\"topic\":\"\"")), escaped_max(ack->topic_len));
    if (ack->has_seq)
        n = sat_add(n, LIT_LEN(",\"seq\":") + U64_MAX_DIGITS);
    if (ack->epoch != NULL)
        n = sat_add(sat_add(n, LIT_LEN(",\"epoch\":\"\"")), escaped_max(strlen(ack->epoch)));
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
 *
 * cJSON validates and types the members; a raw-span scanner then walks
 * the same bytes to find the exact text of each member's value, stricter
 * than cJSON where cJSON is lenient (control bytes, number spellings,
 * trailing bytes). It relies on cJSON having checked the structure.
 * ------------------------------------------------------------------- */

#define SCAN_FAIL ((size_t)-1)

typedef struct scan_key {
    const char *name;
    size_t len;
} scan_key_t;

#define KEY(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static size_t skip_ws(const unsigned char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"'. Returns the index after the closing quote. Sets *esc when
 * the string holds a backslash escape. */
static size_t scan_string(const unsigned char *s, size_t len, size_t i, bool *esc)
{
    for (i++; i < len; i++) {
        unsigned char c = s[i];
        if (c == '"')
            return i + 1;
        if (c == '\\') {
            *esc = true;
            i++; /* the escaped byte; \uXXXX digits are plain bytes */
        } else if (c < 0x20) {
            return SCAN_FAIL;
        }
    }
    return SCAN_FAIL;
}

/* RFC 8259 number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t scan_number(const unsigned char *s, size_t len, size_t i)
{
    if (i < len && s[i] == '-')
        i++;
    if (i >= len || !is_digit(s[i]))
        return SCAN_FAIL;
    if (s[i] == '0')
        i++;
    else
        while (i < len && is_digit(s[i]))
            i++;
    if (i < len && s[i] == '.') {
        if (++i >= len || !is_digit(s[i]))
            return SCAN_FAIL;
        while (i < len && is_digit(s[i]))
            i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= len || !is_digit(s[i]))
            return SCAN_FAIL;
        while (i < len && is_digit(s[i]))
            i++;
    }
    /* cJSON hands "01" or "1.e5" to strtod(); we do not */
    if (i < len &&
        (is_digit(s[i]) || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || s[i] == '+' || s[i] == '-'))
        return SCAN_FAIL;
    return i;
}

static size_t scan_literal(const unsigned char *s, size_t len, size_t i)
{
    static const char *const words[] = {"true", "false", "null"};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        size_t n = strlen(words[k]);
        if (len - i >= n && memcmp(s + i, words[k], n) == 0)
            return i + n;
    }
    return SCAN_FAIL;
}

/* s[i] is '{' or '['. The structure was already validated by cJSON, so
 * counting brackets finds the end; every byte is still bounds-checked and
 * checked for strictness. */
static size_t scan_nested(const unsigned char *s, size_t len, size_t i)
{
    size_t depth = 0;
    bool esc;
    while (i < len) {
        switch (s[i]) {
        case '"':
            i = scan_string(s, len, i, &esc);
            break;
        case '{':
        case '[':
            depth++;
            i++;
            break;
        case '}':
        case ']':
            i++;
            if (--depth == 0) /* entered on an opener, so depth >= 1 here */
                return i;
            break;
        case ' ':
        case '\t':
        case '\n':
        case '\r':
        case ',':
        case ':':
            i++;
            break;
        case 't':
        case 'f':
        case 'n':
            i = scan_literal(s, len, i);
            break;
        default:
            i = scan_number(s, len, i);
            break;
        }
        if (i == SCAN_FAIL)
            return SCAN_FAIL;
    }
    return SCAN_FAIL;
}

static size_t scan_value(const unsigned char *s, size_t len, size_t i)
{
    bool esc;
    switch (s[i]) {
    case '"':
        return scan_string(s, len, i, &esc);
    case '{':
    case '[':
        return scan_nested(s, len, i);
    case 't':
    case 'f':
    case 'n':
        return scan_literal(s, len, i);
    default:
        return scan_number(s, len, i);
    }
}

/* Index in keys[] of the key s[0..n), or -1. Like cJSON's strcmp(), a
 * decoded NUL ends the key. */
static int key_index(const unsigned char *s, size_t n, bool esc, const scan_key_t *keys,
                     size_t nkeys)
{
    char dec[16];
    const char *k = (const char *)s;
    if (esc) {
        size_t d = json_unescape(s, n, dec, sizeof dec);
        const char *nul = memchr(dec, '\0', d < sizeof dec ? d : sizeof dec);
        if (nul != NULL)
            d = (size_t)(nul - dec);
        else if (d > sizeof dec)
            return -1; /* longer than any name we look for */
        k = dec;
        n = d;
    }
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].len == n && memcmp(keys[i].name, k, n) == 0)
            return (int)i;
    }
    return -1;
}

/* Walk the top-level object in buf[0..len) once and store in spans[k] the
 * raw value of the first member named keys[k]. false: not strict JSON. */
static bool scan_object(const char *buf, size_t len, const scan_key_t *keys, size_t nkeys,
                        msg_span_t *spans)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;

    if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF)
        i = 3; /* cJSON skips a UTF-8 byte order mark; so do we */
    i = skip_ws(s, len, i);
    if (i >= len || s[i] != '{')
        return false;
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}')
        return skip_ws(s, len, i + 1) == len;

    for (;;) {
        bool esc = false;
        if (i >= len || s[i] != '"')
            return false;
        size_t kstart = i + 1;
        if ((i = scan_string(s, len, i, &esc)) == SCAN_FAIL)
            return false;
        int k = key_index(s + kstart, i - 1 - kstart, esc, keys, nkeys);

        i = skip_ws(s, len, i);
        if (i >= len || s[i] != ':')
            return false;
        i = skip_ws(s, len, i + 1);
        if (i >= len)
            return false;
        size_t vstart = i;
        if ((i = scan_value(s, len, i)) == SCAN_FAIL)
            return false;
        if (k >= 0 && spans[k].p == NULL) {
            spans[k].p = buf + vstart;
            spans[k].len = i - vstart;
        }

        i = skip_ws(s, len, i);
        if (i < len && s[i] == ',') {
            i = skip_ws(s, len, i + 1);
            continue;
        }
        if (i < len && s[i] == '}')
            return skip_ws(s, len, i + 1) == len;
        return false;
    }
}

/* Look every key of keys[] up with cJSON and check that the scanner found
 * the same members. */
static bool lookup(const cJSON *root, const scan_key_t *keys, size_t nkeys, const msg_span_t *raw,
                   const cJSON **item)
{
    for (size_t k = 0; k < nkeys; k++) {
        item[k] = cJSON_GetObjectItemCaseSensitive(root, keys[k].name);
        if ((item[k] != NULL) != (raw[k].p != NULL))
            return false;
    }
    return true;
}

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

static const scan_key_t srv_keys[SK_COUNT] = {
    KEY("op"),     KEY("id"),        KEY("data"),        KEY("topic"),   KEY("seq"),
    KEY("epoch"),  KEY("recovered"), KEY("code"),        KEY("message"), KEY("client"),
    KEY("server"), KEY("heartbeat"), KEY("max_message"),
};

static msg_sop_t sop_from(const char *s, size_t n)
{
    static const struct {
        const char *name;
        msg_sop_t op;
    } ops[] = {
        {"hello", MSG_S_HELLO},     {"ack", MSG_S_ACK},   {"error", MSG_S_ERROR},
        {"message", MSG_S_MESSAGE}, {"pong", MSG_S_PONG},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strlen(ops[i].name) == n && memcmp(ops[i].name, s, n) == 0)
            return ops[i].op;
    }
    return 0;
}

static void copy_string(const cJSON *it, msg_span_t raw, char *out, size_t size)
{
    if (cJSON_IsString(it))
        decode_string(raw, out, size - 1);
}

/* Members of the wrong type are treated as absent: a client library reports
 * what the broker said and does not police it. */
int msg_parse_server(const char *buf, size_t len, msg_server_t *m)
{
    msg_span_t raw[SK_COUNT] = {{NULL, 0}};
    const cJSON *item[SK_COUNT];
    char opname[16];
    int rc = MSG_OK;

    memset(m, 0, sizeof *m);
    m->recovered = -1;

    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (root == NULL)
        return MSG_E_BAD_JSON;
    if (!cJSON_IsObject(root) || !scan_object(buf, len, srv_keys, SK_COUNT, raw) ||
        !lookup(root, srv_keys, SK_COUNT, raw, item) || !cJSON_IsString(item[SK_OP])) {
        rc = MSG_E_BAD_JSON;
        goto out;
    }

    m->op = sop_from(opname, decode_string(raw[SK_OP], opname, sizeof opname - 1));
    if (m->op == 0) {
        rc = MSG_E_UNKNOWN_OP;
        goto out;
    }

    if (cJSON_IsString(item[SK_ID]) || cJSON_IsNumber(item[SK_ID]))
        m->id = raw[SK_ID];
    if (m->op == MSG_S_MESSAGE && item[SK_DATA] != NULL)
        m->data = raw[SK_DATA];
    if (cJSON_IsNumber(item[SK_SEQ]))
        m->has_seq = parse_u64(raw[SK_SEQ], &m->seq);
    if (cJSON_IsBool(item[SK_RECOVERED]))
        m->recovered = cJSON_IsTrue(item[SK_RECOVERED]) ? 1 : 0;
    if (cJSON_IsNumber(item[SK_HEARTBEAT]))
        m->heartbeat = item[SK_HEARTBEAT]->valuedouble;
    if (cJSON_IsNumber(item[SK_MAX_MESSAGE]) && !parse_u64(raw[SK_MAX_MESSAGE], &m->max_message))
        m->max_message = 0;
    copy_string(item[SK_TOPIC], raw[SK_TOPIC], m->topic, sizeof m->topic);
    copy_string(item[SK_CODE], raw[SK_CODE], m->code, sizeof m->code);
    copy_string(item[SK_MESSAGE], raw[SK_MESSAGE], m->message, sizeof m->message);
    copy_string(item[SK_EPOCH], raw[SK_EPOCH], m->epoch, sizeof m->epoch);
    copy_string(item[SK_CLIENT], raw[SK_CLIENT], m->client, sizeof m->client);
    copy_string(item[SK_SERVER], raw[SK_SERVER], m->server, sizeof m->server);
out:
    cJSON_Delete(root);
    return rc;
}
