/*
 * test_pmd.c - permessage-deflate (RFC 7692): negotiation of every
 * parameter on both sides, compression and bounded decompression with and
 * without context takeover, the 256-byte window, and RFC 7692's examples.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsproto/pmd.h"

static const pmd_policy_t nopolicy = {false, false};

/* Negotiate over request headers given as "Sec-WebSocket-Extensions" values. */
static int negotiate(const char *const *values, size_t n, const pmd_policy_t *pol, pmd_params_t *p)
{
    wsh_header_t h[8];
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(values[i]);
        h[i].name = (wsh_str_t){"Sec-WebSocket-Extensions", 24};
        h[i].value = (wsh_str_t){(const char *)guard_copy_slot((int)i, values[i], len), len};
    }
    return pmd_negotiate(h, n, pol, p);
}

static int one(const char *v, pmd_params_t *p)
{
    return negotiate(&v, 1, &nopolicy, p);
}

static const char *response(const pmd_params_t *p)
{
    static char buf[256];
    ck_assert_uint_gt(pmd_format_response(p, buf, sizeof(buf)), 0);
    return buf;
}

START_TEST(negotiate_parameters)
{
    pmd_params_t p;
    ck_assert_int_eq(one("permessage-deflate", &p), PMD_OK);
    ck_assert_str_eq(response(&p), "permessage-deflate");
    ck_assert_int_eq(one("permessage-deflate; client_max_window_bits", &p), PMD_OK);
    ck_assert_str_eq(response(&p), "permessage-deflate"); /* never limits the client */
    ck_assert_int_eq(one("permessage-deflate; client_max_window_bits=10", &p), PMD_OK);
    ck_assert_str_eq(response(&p), "permessage-deflate");
    ck_assert_int_eq(one("permessage-deflate; server_no_context_takeover", &p), PMD_OK);
    ck_assert(p.server_no_context_takeover);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_no_context_takeover");
    ck_assert_int_eq(one("permessage-deflate;client_no_context_takeover", &p), PMD_OK);
    ck_assert(p.client_no_context_takeover);
    ck_assert_str_eq(response(&p), "permessage-deflate; client_no_context_takeover");
    ck_assert_int_eq(one("PerMessage-Deflate ; server_max_window_bits = 9", &p), PMD_OK);
    ck_assert_uint_eq(p.server_max_window_bits, 9);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_max_window_bits=9");
    ck_assert_int_eq(one("permessage-deflate; server_max_window_bits=\"12\"", &p), PMD_OK);
    ck_assert_uint_eq(p.server_max_window_bits, 12);
    ck_assert_int_eq(one("permessage-deflate; server_max_window_bits=8; "
                         "server_no_context_takeover; client_no_context_takeover; "
                         "client_max_window_bits",
                         &p),
                     PMD_OK);
    ck_assert_str_eq(response(&p), "permessage-deflate; server_no_context_takeover; "
                                   "client_no_context_takeover; server_max_window_bits=8");
    /* The policy adds no-context-takeover on either side. */
    const pmd_policy_t shared = {true, true};
    const char *v = "permessage-deflate; client_max_window_bits";
    ck_assert_int_eq(negotiate(&v, 1, &shared, &p), PMD_OK);
    ck_assert_str_eq(response(&p),
                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
}
END_TEST

START_TEST(negotiate_declines_bad_offers)
{
    pmd_params_t p;
    static const char *const bad[] = {
        "permessage-deflate; server_max_window_bits",       /* needs a value */
        "permessage-deflate; server_max_window_bits=7",     /* out of range */
        "permessage-deflate; server_max_window_bits=16",    /* out of range */
        "permessage-deflate; server_max_window_bits=010",   /* leading zero */
        "permessage-deflate; server_max_window_bits=+9",    /* sign */
        "permessage-deflate; client_max_window_bits=foo",   /* not a number */
        "permessage-deflate; server_no_context_takeover=1", /* no value allowed */
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=9; client_max_window_bits=10",
        "permessage-deflate; unknown_parameter",
        "x-webkit-deflate-frame",
        "permessage-deflate-x",
        "",
        "; permessage-deflate",
        "permessage-deflate; =9",
        "permessage-deflate; server_max_window_bits=\"9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(one(bad[i], &p) == PMD_NONE, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(negotiate_picks_the_first_acceptable)
{
    pmd_params_t p;
    /* The first offer is bad, the second acceptable. */
    ck_assert_int_eq(one("permessage-deflate; server_max_window_bits=20, "
                         "permessage-deflate; server_no_context_takeover, permessage-deflate",
                         &p),
                     PMD_OK);
    ck_assert(p.server_no_context_takeover);
    /* Another extension first. */
    ck_assert_int_eq(one("foo; bar=\"baz\", permessage-deflate; server_max_window_bits=10", &p),
                     PMD_OK);
    ck_assert_uint_eq(p.server_max_window_bits, 10);
    /* Offers spread over several headers: in header order. */
    const char *h[] = {"foo", "permessage-deflate; server_max_window_bits=11",
                       "permessage-deflate"};
    ck_assert_int_eq(negotiate(h, 3, &nopolicy, &p), PMD_OK);
    ck_assert_uint_eq(p.server_max_window_bits, 11);
    const char *h2[] = {"permessage-deflate; bogus",
                        "permessage-deflate; server_max_window_bits=13"};
    ck_assert_int_eq(negotiate(h2, 2, &nopolicy, &p), PMD_OK);
    ck_assert_uint_eq(p.server_max_window_bits, 13);
    ck_assert_int_eq(negotiate(h, 0, &nopolicy, &p), PMD_NONE);
}
END_TEST

START_TEST(client_side)
{
    char buf[128];
    ck_assert_uint_gt(pmd_format_offer(false, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "permessage-deflate; client_max_window_bits");
    ck_assert_uint_gt(pmd_format_offer(true, buf, sizeof(buf)), 0);
    ck_assert_str_eq(buf, "permessage-deflate; client_max_window_bits; client_no_context_takeover");
    pmd_params_t p;
    const char *ok = "permessage-deflate; server_no_context_takeover; client_max_window_bits=10";
    ck_assert_int_eq(pmd_parse_response((wsh_str_t){ok, strlen(ok)}, &p), PMD_OK);
    ck_assert(p.server_no_context_takeover && p.client_max_window_bits_sent);
    ck_assert_uint_eq(p.client_max_window_bits, 10);
    static const char *const bad[] = {
        "permessage-deflate; client_max_window_bits", /* a response needs the value */
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; mystery",
        "other-extension",
    };
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(pmd_parse_response((wsh_str_t){bad[i], strlen(bad[i])}, &p) == PMD_E_BAD,
                      "accepted '%s'", bad[i]);
}
END_TEST

/* ---- compression ---- */

static size_t deflate_msg(pmd_deflater_t *d, const void *in, size_t len, uint8_t *out)
{
    ssize_t n = pmd_deflate(d, in, len, out, pmd_deflate_bound(d, len));
    ck_assert_int_gt(n, 0);
    return (size_t)n;
}

START_TEST(rfc7692_examples)
{
    /* Section 7.2.3.1: "Hello" compressed without context takeover. */
    static const uint8_t hello[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    pmd_inflater_t i;
    ck_assert_int_eq(pmd_inflater_init(&i, false), PMD_OK);
    pmd_buf_t out = {0};
    ck_assert_int_eq(pmd_inflate(&i, hello, sizeof(hello), 100, &out), PMD_OK);
    ck_assert_uint_eq(out.len, 5);
    ck_assert(memcmp(out.buf, "Hello", 5) == 0);
    /* 7.2.3.2: the same again, sharing the window (a back-reference). */
    static const uint8_t again[] = {0xf2, 0x00, 0x11, 0x00, 0x00};
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, again, sizeof(again), 100, &out), PMD_OK);
    ck_assert_uint_eq(out.len, 5);
    ck_assert(memcmp(out.buf, "Hello", 5) == 0);
    /* 7.2.3.3: a stored (uncompressed) block. */
    static const uint8_t stored[] = {0x00, 0x05, 0x00, 0xfa, 0xff, 'H', 'e', 'l', 'l', 'o', 0x00};
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, stored, sizeof(stored), 100, &out), PMD_OK);
    ck_assert(out.len == 5 && memcmp(out.buf, "Hello", 5) == 0);
    /* 7.2.3.5: a final block (BFINAL set) ends the stream; the next
     * message starts a new one. */
    static const uint8_t final[] = {0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00};
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, final, sizeof(final), 100, &out), PMD_OK);
    ck_assert(out.len == 5 && memcmp(out.buf, "Hello", 5) == 0);
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, hello, sizeof(hello), 100, &out), PMD_OK);
    ck_assert(out.len == 5 && memcmp(out.buf, "Hello", 5) == 0);
    /* 7.2.3.6: an empty message is one empty stored block. */
    pmd_deflater_t d;
    ck_assert_int_eq(pmd_deflater_init(&d, 15, true), PMD_OK);
    uint8_t buf[64];
    size_t n = deflate_msg(&d, "", 0, buf);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(buf[0], 0x00);
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, buf, n, 100, &out), PMD_OK);
    ck_assert_uint_eq(out.len, 0);
    pmd_deflater_end(&d);
    pmd_inflater_end(&i);
    free(out.buf);
}
END_TEST

static void random_json(xorshift_t *x, char *buf, size_t len)
{
    static const char *const words[] = {"{\"op\":\"message\",",
                                        "\"topic\":\"chat.",
                                        "room",
                                        "\",\"seq\":",
                                        "\"data\":{\"text\":\"",
                                        "hello ",
                                        "world ",
                                        "}}",
                                        "0123456789"};
    size_t n = 0;
    while (n < len) {
        const char *w = words[xorshift_range(x, 0, 8)];
        size_t wl = strlen(w);
        if (n + wl > len)
            wl = len - n;
        memcpy(buf + n, w, wl);
        n += wl;
    }
}

START_TEST(roundtrip_every_window_and_takeover)
{
    static char msg[3][70000];
    static uint8_t comp[80000];
    xorshift_t x = {42};
    for (int k = 0; k < 3; k++)
        random_json(&x, msg[k], sizeof(msg[k]));
    for (int wb = 8; wb <= 15; wb++) {
        for (int nct = 0; nct < 2; nct++) {
            pmd_deflater_t d;
            pmd_inflater_t in;
            ck_assert_int_eq(pmd_deflater_init(&d, wb, nct), PMD_OK);
            ck_assert_int_eq(pmd_inflater_init(&in, nct), PMD_OK);
            pmd_buf_t out = {0};
            size_t sizes[] = {1, 100, 5000, 70000};
            for (int k = 0; k < 4; k++) {
                const char *m = msg[k % 3];
                size_t n = deflate_msg(&d, m, sizes[k], comp);
                ck_assert_msg(wb == 8 || sizes[k] < 1000 || n < sizes[k] / 2,
                              "window %d: %zu -> %zu bytes", wb, sizes[k], n);
                out.len = 0;
                ck_assert_int_eq(pmd_inflate(&in, comp, n, 100000, &out), PMD_OK);
                ck_assert_uint_eq(out.len, sizes[k]);
                ck_assert(memcmp(out.buf, m, sizes[k]) == 0);
            }
            free(out.buf);
            pmd_deflater_end(&d);
            pmd_inflater_end(&in);
        }
    }
}
END_TEST

START_TEST(window_8_fits_a_256_byte_inflater)
{
    /* Promised window 8: an inflater with a 256-byte window (as the peer
     * may use) must take the output, message after message. */
    static char msg[20000];
    static uint8_t comp[30000], plain[20000];
    xorshift_t x = {7};
    random_json(&x, msg, sizeof(msg));
    pmd_deflater_t d;
    ck_assert_int_eq(pmd_deflater_init(&d, 8, false), PMD_OK);
    z_stream z = {0};
    ck_assert_int_eq(inflateInit2(&z, -8), Z_OK);
    for (int k = 0; k < 5; k++) {
        size_t n = deflate_msg(&d, msg, sizeof(msg), comp);
        memcpy(comp + n, "\x00\x00\xff\xff", 4);
        /* Small output steps: nothing may reach past the 256-byte window. */
        z.next_in = comp;
        z.avail_in = (uInt)(n + 4);
        size_t got = 0;
        while (z.avail_in > 0) {
            z.next_out = plain + got;
            z.avail_out = 100 < sizeof(plain) - got ? 100 : (uInt)(sizeof(plain) - got);
            int r = inflate(&z, Z_SYNC_FLUSH);
            ck_assert_msg(r == Z_OK || r == Z_BUF_ERROR, "inflate: %d %s", r, z.msg ? z.msg : "");
            got = (size_t)(z.next_out - plain);
            if (r == Z_BUF_ERROR && z.avail_out > 0)
                break;
        }
        ck_assert_uint_eq(got, sizeof(msg));
        ck_assert(memcmp(plain, msg, sizeof(msg)) == 0);
    }
    inflateEnd(&z);
    pmd_deflater_end(&d);
}
END_TEST

START_TEST(inflate_is_bounded)
{
    /* A decompression bomb: 10 MB of zeros in a few KB. */
    size_t big = 10u << 20;
    uint8_t *zeros = calloc(1, big);
    uint8_t *comp = malloc(64 * 1024);
    z_stream z = {0};
    ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = zeros;
    z.avail_in = (uInt)big;
    z.next_out = comp;
    z.avail_out = 64 * 1024;
    ck_assert_int_eq(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    size_t n = 64 * 1024 - z.avail_out - 4;
    deflateEnd(&z);
    ck_assert_uint_lt(n, 20000);
    pmd_inflater_t i;
    ck_assert_int_eq(pmd_inflater_init(&i, true), PMD_OK);
    pmd_buf_t out = {0};
    ck_assert_int_eq(pmd_inflate(&i, comp, n, 1 << 20, &out), PMD_E_TOO_BIG);
    /* It stopped right past the limit instead of producing 10 MB. */
    ck_assert_uint_le(out.cap, (1u << 20) + 1);
    /* Exactly at the limit is fine. */
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, comp, n, big, &out), PMD_OK);
    ck_assert_uint_eq(out.len, big);
    /* Corrupt data. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    out.len = 0;
    ck_assert_int_eq(pmd_inflate(&i, junk, sizeof(junk), 1000, &out), PMD_E_DATA);
    free(out.buf);
    pmd_inflater_end(&i);
    free(zeros);
    free(comp);
}
END_TEST

/* An empty message after others, with context takeover: zlib has nothing
 * to flush after the previous message's flush and writes nothing, yet the
 * message must still be the one empty stored block (RFC 7692 7.2.3.6),
 * and the context must go on working for the messages after it. */
START_TEST(empty_message_keeps_the_context)
{
    for (int wb = 8; wb <= 15; wb++) {
        for (int nct = 0; nct < 2; nct++) {
            pmd_deflater_t d;
            pmd_inflater_t in;
            ck_assert_int_eq(pmd_deflater_init(&d, wb, nct), PMD_OK);
            ck_assert_int_eq(pmd_inflater_init(&in, nct), PMD_OK);
            static const char *const msgs[] = {"", "", "hello hello hello",
                                               "", "", "hello hello hello"};
            uint8_t buf[128];
            pmd_buf_t out = {0};
            for (size_t k = 0; k < sizeof(msgs) / sizeof(msgs[0]); k++) {
                size_t len = strlen(msgs[k]);
                size_t n = deflate_msg(&d, msgs[k], len, buf);
                if (len == 0) {
                    ck_assert_uint_eq(n, 1);
                    ck_assert_uint_eq(buf[0], 0x00);
                }
                out.len = 0;
                ck_assert_int_eq(pmd_inflate(&in, buf, n, 100, &out), PMD_OK);
                ck_assert_uint_eq(out.len, len);
                ck_assert(len == 0 || memcmp(out.buf, msgs[k], len) == 0);
            }
            free(out.buf);
            pmd_deflater_end(&d);
            pmd_inflater_end(&in);
        }
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pmd");
    TCase *tc = tcase_create("pmd");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, negotiate_parameters);
    tcase_add_test(tc, negotiate_declines_bad_offers);
    tcase_add_test(tc, negotiate_picks_the_first_acceptable);
    tcase_add_test(tc, client_side);
    tcase_add_test(tc, rfc7692_examples);
    tcase_add_test(tc, roundtrip_every_window_and_takeover);
    tcase_add_test(tc, window_8_fits_a_256_byte_inflater);
    tcase_add_test(tc, inflate_is_bounded);
    tcase_add_test(tc, empty_message_keeps_the_context);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
