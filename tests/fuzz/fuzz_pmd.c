/*
 * fuzz_pmd.c - libFuzzer target for permessage-deflate (protocol/src/pmd.c,
 * RFC 7692): extension negotiation, the bounded inflater and the deflater.
 *
 * Input: byte 0 picks the options (server policy, context takeover, window
 * bits, the inflate limit), byte 1 is a length L; the next L bytes are
 * Sec-WebSocket-Extensions values (split on '\n' into several headers, the
 * way a request may repeat the header), the rest is a payload. Every
 * string and payload is a fresh exact-size heap copy, so ASan sees a read
 * past the bytes handed over. Properties checked (a violation aborts):
 *
 *   - negotiation: when pmd_negotiate() accepts an offer, the parameters
 *     are in range and honour the policy, pmd_format_response() writes a
 *     printable header value, pmd_parse_response() accepts it and reads
 *     back the same parameters; pmd_parse_response() on the raw values
 *     never crashes and, when it accepts one, its parameters are in range
 *     and format again to a value it accepts;
 *   - inflate: the payload, read as the compressed data of a message (and
 *     as two messages, with and without context takeover), never yields
 *     more than the limit: PMD_OK means at most max bytes were appended,
 *     anything else is an error code; the buffer never grows past max + 1;
 *   - round trip: the payload split in two messages, compressed with the
 *     window and takeover byte 0 picks, inflates back to the same bytes
 *     (the second message depends on the first when context is taken
 *     over), and a limit of one byte less than a message is PMD_E_TOO_BIG.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_dict.h"
#include "wsproto/pmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_HEADERS 8

static uint8_t *copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

static void check_params(const pmd_params_t *p)
{
    CHECK(p->server_max_window_bits >= 8 && p->server_max_window_bits <= 15);
    CHECK(p->client_max_window_bits >= 8 && p->client_max_window_bits <= 15);
}

static bool same_params(const pmd_params_t *a, const pmd_params_t *b)
{
    return a->server_no_context_takeover == b->server_no_context_takeover &&
           a->client_no_context_takeover == b->client_no_context_takeover &&
           a->server_max_window_bits_sent == b->server_max_window_bits_sent &&
           a->client_max_window_bits_sent == b->client_max_window_bits_sent &&
           (!a->server_max_window_bits_sent ||
            a->server_max_window_bits == b->server_max_window_bits) &&
           (!a->client_max_window_bits_sent ||
            a->client_max_window_bits == b->client_max_window_bits);
}

/* Format p, check the text and parse it back. */
static void format_and_parse(const pmd_params_t *p)
{
    char out[256];
    size_t n = pmd_format_response(p, out, sizeof(out));
    CHECK(n > 0 && n < sizeof(out));
    for (size_t i = 0; i < n; i++)
        CHECK(out[i] >= 0x20 && out[i] < 0x7f);
    CHECK(strncmp(out, PMD_NAME, strlen(PMD_NAME)) == 0);
    char *exact = (char *)copy((const uint8_t *)out, n);
    pmd_params_t back;
    CHECK(pmd_parse_response((wsh_str_t){exact, n}, &back) == PMD_OK);
    check_params(&back);
    CHECK(same_params(p, &back));
    /* too small a buffer is refused, never overrun */
    CHECK(pmd_format_response(p, out, n) == 0);
    free(exact);
}

static void fuzz_negotiation(uint8_t opt, const uint8_t *hdr, size_t len)
{
    wsh_header_t headers[MAX_HEADERS + 1];
    char *copies[MAX_HEADERS];
    size_t n = 0, start = 0;
    /* one unrelated header first: only Sec-WebSocket-Extensions counts */
    headers[n++] = (wsh_header_t){{"Sec-WebSocket-Protocol", 22}, {"permessage-deflate", 18}};
    for (size_t i = 0; i <= len && n <= MAX_HEADERS; i++) {
        if (i == len || hdr[i] == '\n') {
            copies[n - 1] = (char *)copy(hdr + start, i - start);
            headers[n] = (wsh_header_t){
                {(opt & 0x40) ? "sec-websocket-extensions" : "Sec-WebSocket-Extensions", 24},
                {copies[n - 1], i - start}};
            n++;
            start = i + 1;
        }
    }
    pmd_policy_t policy = {.server_no_context_takeover = opt & 1,
                           .client_no_context_takeover = (opt >> 1) & 1};
    pmd_params_t p;
    memset(&p, 0xa5, sizeof(p));
    int r = pmd_negotiate(headers, n, &policy, &p);
    CHECK(r == PMD_OK || r == PMD_NONE);
    if (r == PMD_OK) {
        check_params(&p);
        CHECK(!policy.server_no_context_takeover || p.server_no_context_takeover);
        CHECK(!policy.client_no_context_takeover || p.client_no_context_takeover);
        /* the server never limits the client's window: it inflates with 15 */
        CHECK(!p.client_max_window_bits_sent && p.client_max_window_bits == 15);
        format_and_parse(&p);
        /* a deflater for what the client allows us is always possible */
        pmd_deflater_t d;
        CHECK(pmd_deflater_init(&d, p.server_max_window_bits, p.server_no_context_takeover) ==
              PMD_OK);
        pmd_deflater_end(&d);
    }
    /* each value read as a server's response */
    for (size_t h = 1; h < n; h++) {
        pmd_params_t q;
        if (pmd_parse_response(headers[h].value, &q) == PMD_OK) {
            check_params(&q);
            format_and_parse(&q);
        }
    }
    for (size_t h = 0; h + 1 < n; h++)
        free(copies[h]);
}

static void fuzz_inflate(uint8_t opt, const uint8_t *in, size_t len)
{
    size_t max = (size_t)(opt & 0x0f) * 97 + (size_t)(len & 0x3f);
    bool nct = (opt >> 4) & 1;
    pmd_inflater_t inf;
    CHECK(pmd_inflater_init(&inf, nct) == PMD_OK);
    size_t half = len / 2;
    const uint8_t *part[2] = {in, in + half};
    size_t plen[2] = {half, len - half};
    pmd_buf_t out = {0};
    for (int m = 0; m < 2; m++) {
        uint8_t *c = copy(part[m], plen[m]);
        size_t base = out.len;
        int r = pmd_inflate(&inf, c, plen[m], max, &out);
        free(c);
        CHECK(r == PMD_OK || r == PMD_E_TOO_BIG || r == PMD_E_DATA);
        CHECK(out.cap <= base + max + 1);
        if (r != PMD_OK)
            break;
        CHECK(out.len - base <= max);
    }
    free(out.buf);
    pmd_inflater_end(&inf);

    /* the whole payload as one message */
    CHECK(pmd_inflater_init(&inf, true) == PMD_OK);
    uint8_t *c = copy(in, len);
    pmd_buf_t one = {0};
    int r = pmd_inflate(&inf, c, len, max, &one);
    CHECK(r == PMD_OK || r == PMD_E_TOO_BIG || r == PMD_E_DATA);
    CHECK(one.cap <= max + 1);
    if (r == PMD_OK)
        CHECK(one.len <= max);
    free(c);
    free(one.buf);
    pmd_inflater_end(&inf);
}

static void fuzz_round_trip(uint8_t opt, const uint8_t *in, size_t len)
{
    int wb = 8 + (opt & 7);
    bool nct = (opt >> 3) & 1;
    pmd_deflater_t d;
    pmd_inflater_t inf;
    CHECK(pmd_deflater_init(&d, wb, nct) == PMD_OK);
    CHECK(pmd_inflater_init(&inf, nct) == PMD_OK);
    size_t half = len / 2;
    const uint8_t *part[2] = {in, in + half};
    size_t plen[2] = {half, len - half};
    for (int m = 0; m < 2; m++) {
        uint8_t *src = copy(part[m], plen[m]);
        size_t cap = pmd_deflate_bound(&d, plen[m]);
        uint8_t *z = malloc(cap);
        CHECK(z != NULL);
        ssize_t zn = pmd_deflate(&d, src, plen[m], z, cap);
        CHECK(zn > 0 && (size_t)zn <= cap);
        uint8_t *exact = copy(z, (size_t)zn);
        pmd_buf_t out = {0};
        CHECK(pmd_inflate(&inf, exact, (size_t)zn, plen[m], &out) == PMD_OK);
        CHECK(out.len == plen[m]);
        CHECK(plen[m] == 0 || memcmp(out.buf, src, plen[m]) == 0);
        free(out.buf);
        if (plen[m] > 0 && nct) {
            /* without takeover each message stands alone: one byte less
             * than it inflates to is refused while inflating */
            pmd_inflater_t small;
            pmd_buf_t o2 = {0};
            CHECK(pmd_inflater_init(&small, true) == PMD_OK);
            CHECK(pmd_inflate(&small, exact, (size_t)zn, plen[m] - 1, &o2) == PMD_E_TOO_BIG);
            CHECK(o2.cap <= plen[m]);
            free(o2.buf);
            pmd_inflater_end(&small);
        }
        free(exact);
        free(z);
        free(src);
    }
    pmd_inflater_end(&inf);
    pmd_deflater_end(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t opt = data[0];
    size_t hlen = data[1];
    if (hlen > size - 2)
        hlen = size - 2;
    const uint8_t *hdr = data + 2, *payload = data + 2 + hlen;
    size_t plen = size - 2 - hlen;
    fuzz_negotiation(opt, hdr, hlen);
    fuzz_inflate(opt, payload, plen);
    fuzz_round_trip(opt, payload, plen);
    return 0;
}
