/*
 * msg.c - the JSON messages of PROTOCOL.md section 2.
 *
 * Parsing a message takes two passes and one allocation burst:
 *
 *   1. cJSON_ParseWithLength() validates the text (string escapes,
 *      surrogate pairs, nesting) and gives the type of every member.
 *   2. scan_object() walks the same bytes once more and records, for the
 *      first top-level occurrence of each member we care about, the exact
 *      bytes of its value. That is what the broker forwards ("data") and
 *      echoes ("id") without re-serialising, and what string members are
 *      decoded from.
 *
 * The scanner compares keys the way cJSON_GetObjectItemCaseSensitive()
 * does (after unescaping, up to the first NUL), so both always pick the
 * same member; msg_parse() checks that they agree. The scanner is also
 * stricter than cJSON where cJSON is lenient and the bytes would be passed
 * on to other clients: raw control characters inside strings or between
 * tokens, numbers such as 01, 1. or -01, and anything after the closing
 * brace are rejected, so every forwarded "data" is strict RFC 8259 JSON.
 *
 * String members are decoded from their raw bytes, not taken from
 * cJSON's NUL-terminated valuestring, so "a\u0000b" keeps its length
 * (and then fails the topic grammar) instead of silently becoming "a".
 *
 * Encoders write compact JSON into the caller's buffer through a small
 * bounded writer; nothing here allocates except cJSON during a parse.
 */
#include "wsproto/msg.h"

#include <cJSON.h>
#include <math.h>
#include <string.h>

#define SCAN_FAIL ((size_t)-1)

#define STR(x)  #x
#define XSTR(x) STR(x)

/* ---------------------------------------------------------------------
 * Raw-span scanner
 * ------------------------------------------------------------------- */

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

static size_t json_unescape(const unsigned char *s, size_t n, char *out, size_t cap);

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

/* ---------------------------------------------------------------------
 * Decoding values from raw spans
 * ------------------------------------------------------------------- */

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The code unit of "\uXXXX" starting at s[i] (the backslash), or -1. */
static long utf16_unit(const unsigned char *s, size_t n, size_t i)
{
    long v = 0;
    if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
        return -1;
    for (size_t k = i + 2; k < i + 6; k++) {
        int d = hex_digit(s[k]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Decode the inside of a JSON string s[0..n) into out. Writes at most cap
 * bytes and returns the decoded length, or cap + 1 as soon as the result
 * would be longer than cap (out then holds its first cap bytes). The input
 * was validated by cJSON; malformed escapes just end the string. */
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
        if (!is_digit(c))
            return false;
        unsigned d = (unsigned)(c - '0');
        r = r > (UINT64_MAX - d) / 10 ? UINT64_MAX : r * 10 + d;
    }
    *v = r;
    return true;
}

/* ---------------------------------------------------------------------
 * Client requests
 * ------------------------------------------------------------------- */

enum { RK_OP, RK_ID, RK_TOPIC, RK_DATA, RK_LAST, RK_SINCE, RK_EPOCH, RK_COUNT };

static const scan_key_t req_keys[RK_COUNT] = {
    KEY("op"), KEY("id"), KEY("topic"), KEY("data"), KEY("last"), KEY("since"), KEY("epoch"),
};

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

static msg_op_t op_from(const char *s, size_t n)
{
    static const struct {
        const char *name;
        msg_op_t op;
    } ops[] = {
        {"subscribe", MSG_OP_SUBSCRIBE},
        {"unsubscribe", MSG_OP_UNSUBSCRIBE},
        {"publish", MSG_OP_PUBLISH},
        {"ping", MSG_OP_PING},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strlen(ops[i].name) == n && memcmp(ops[i].name, s, n) == 0)
            return ops[i].op;
    }
    return 0;
}

static int check_request(msg_request_t *req, const cJSON **item, const msg_span_t *raw,
                         const char **why)
{
    static const char *const need_topic[] = {
        [MSG_OP_SUBSCRIBE] = "subscribe needs a string \"topic\" member",
        [MSG_OP_UNSUBSCRIBE] = "unsubscribe needs a string \"topic\" member",
        [MSG_OP_PUBLISH] = "publish needs a string \"topic\" member",
    };
    char opname[16];

    if (item[RK_ID] != NULL) {
        if (!cJSON_IsString(item[RK_ID]) && !cJSON_IsNumber(item[RK_ID])) {
            *why = "\"id\" must be a string or a number";
            return MSG_E_BAD_REQUEST;
        }
        req->id = raw[RK_ID];
    }

    if (!cJSON_IsString(item[RK_OP])) {
        *why = "message needs a string \"op\" member";
        return MSG_E_BAD_REQUEST;
    }
    size_t n = decode_string(raw[RK_OP], opname, sizeof opname - 1);
    req->op = op_from(opname, n);
    if (req->op == 0) {
        *why = "unknown \"op\": expected subscribe, unsubscribe, publish or ping";
        return MSG_E_UNKNOWN_OP;
    }
    if (req->op == MSG_OP_PING)
        return MSG_OK;

    if (!cJSON_IsString(item[RK_TOPIC])) {
        *why = need_topic[req->op];
        return MSG_E_BAD_REQUEST;
    }
    req->has_topic = true;
    req->topic.p = req->topic_buf;
    req->topic.len = decode_string(raw[RK_TOPIC], req->topic_buf, TOPIC_MAX + 1);
    if (req->topic.len > TOPIC_MAX)
        req->topic.len = TOPIC_MAX + 1;

    if (req->op == MSG_OP_PUBLISH) {
        if (item[RK_DATA] == NULL) {
            *why = "publish needs a \"data\" member";
            return MSG_E_BAD_REQUEST;
        }
        req->has_data = true;
        req->data = raw[RK_DATA];
        return MSG_OK;
    }
    if (req->op != MSG_OP_SUBSCRIBE)
        return MSG_OK;

    if (item[RK_LAST] != NULL) {
        if (!cJSON_IsNumber(item[RK_LAST]) || !parse_u64(raw[RK_LAST], &req->last)) {
            *why = "\"last\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_last = true;
    }
    if (item[RK_SINCE] != NULL) {
        if (!cJSON_IsNumber(item[RK_SINCE]) || !parse_u64(raw[RK_SINCE], &req->since)) {
            *why = "\"since\" must be an integer >= 0";
            return MSG_E_BAD_REQUEST;
        }
        req->has_since = true;
    }
    if (item[RK_EPOCH] != NULL) {
        size_t elen = 0;
        if (cJSON_IsString(item[RK_EPOCH]))
            elen = decode_string(raw[RK_EPOCH], req->epoch_buf, MSG_EPOCH_MAX);
        if (!cJSON_IsString(item[RK_EPOCH]) || elen > MSG_EPOCH_MAX) {
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
    msg_span_t raw[RK_COUNT] = {{NULL, 0}};
    const cJSON *item[RK_COUNT];
    int rc;

    memset(req, 0, offsetof(msg_request_t, topic_buf));
    req->topic_buf[0] = '\0';
    req->epoch_buf[0] = '\0';
    *why = NULL;

    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (root == NULL) {
        *why = "message is not valid JSON";
        return MSG_E_BAD_JSON;
    }
    if (!cJSON_IsObject(root)) {
        *why = "message is not a JSON object";
        rc = MSG_E_BAD_JSON;
    } else if (!scan_object(buf, len, req_keys, RK_COUNT, raw) ||
               !lookup(root, req_keys, RK_COUNT, raw, item)) {
        *why = "message is not valid JSON";
        rc = MSG_E_BAD_JSON;
    } else {
        rc = check_request(req, item, raw, why);
    }
    cJSON_Delete(root);
    return rc;
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
