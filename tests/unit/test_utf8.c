/*
 * test_utf8.c - unit suite for the incremental UTF-8 validator.
 *
 * The validator is checked against a slow reference written from RFC 3629's
 * definition (decode, then range-check the code point) rather than from
 * byte tables, so the two do not share a mistake. Fail-fast is checked as
 * a position: the byte at which the input stops being a prefix of any
 * valid text is the byte whose utf8_feed call must return UTF8_REJECT.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsproto/utf8.h"

/* ---- reference model ---- */

/* True if p[0..n) can be extended to valid UTF-8; *complete tells whether
 * it already ends at a code point boundary. A partial sequence is viable
 * when the code points it could still become (its value with the missing
 * bits all 0 .. all 1) overlap the scalar values its length may encode. */
static bool ref_prefix_ok(const uint8_t *p, size_t n, bool *complete)
{
    size_t i = 0;
    bool boundary = true;

    while (i < n) {
        uint8_t b = p[i];
        int len;
        uint32_t v, minv;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, v = b & 0x1F, minv = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, v = b & 0x0F, minv = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, v = b & 0x07, minv = 0x10000;
        } else {
            return false;
        }
        int k;
        for (k = 1; k < len && i + (size_t)k < n; k++) {
            if ((p[i + (size_t)k] & 0xC0) != 0x80)
                return false;
            v = v << 6 | (p[i + (size_t)k] & 0x3F);
        }
        int missing = len - k;
        uint32_t lo = v << (6 * missing);
        uint32_t hi = lo | ((1u << (6 * missing)) - 1);
        if (lo < minv)
            lo = minv;
        if (hi > 0x10FFFF)
            hi = 0x10FFFF;
        if (lo > hi)
            return false;
        if (lo >= 0xD800 && hi <= 0xDFFF)
            return false;
        boundary = missing == 0;
        i += (size_t)k;
    }
    if (complete)
        *complete = boundary;
    return true;
}

/* Index of the first byte that makes p invalid, or n if there is none. */
static size_t ref_fail_at(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ref_prefix_ok(p, i + 1, NULL))
            return i;
    return n;
}

static bool ref_valid(const uint8_t *p, size_t n)
{
    bool complete = false;
    return ref_prefix_ok(p, n, &complete) && complete;
}

/* Encode v in len bytes, overlong or out of range if asked to. */
static size_t enc(uint8_t *out, uint32_t v, int len)
{
    static const uint8_t lead[5] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    for (int i = len - 1; i > 0; i--) {
        out[i] = (uint8_t)(0x80 | (v & 0x3F));
        v >>= 6;
    }
    out[0] = (uint8_t)(lead[len] | v);
    return (size_t)len;
}

static int natural_len(uint32_t v)
{
    return v < 0x80 ? 1 : v < 0x800 ? 2 : v < 0x10000 ? 3 : 4;
}

/* Feed p one byte at a time; return the index of the byte rejected, or n. */
static size_t bytewise_fail_at(const uint8_t *p, size_t n, int *last)
{
    utf8_t u;
    utf8_init(&u);
    *last = UTF8_OK;
    for (size_t i = 0; i < n; i++) {
        uint8_t *b = guard_copy(p + i, 1);
        *last = utf8_feed(&u, b, 1);
        if (*last == UTF8_REJECT)
            return i;
    }
    return n;
}

/* Check p every way: whole, split at every offset, byte by byte. */
static void check_all_ways(const uint8_t *p, size_t n)
{
    bool want = ref_valid(p, n);
    size_t fail_at = ref_fail_at(p, n);
    uint8_t *g = guard_copy(p, n);

    ck_assert_msg(utf8_valid(g, n) == want, "utf8_valid disagrees (len %zu)", n);

    int last;
    size_t at = bytewise_fail_at(p, n, &last);
    ck_assert_uint_eq(at, fail_at);
    if (fail_at == n)
        ck_assert_int_eq(last, want ? UTF8_OK : UTF8_PARTIAL);

    for (size_t cut = 0; cut <= n; cut++) {
        utf8_t u;
        utf8_init(&u);
        int r1 = utf8_feed(&u, guard_copy_slot(1, p, cut), cut);
        ck_assert_int_eq(r1 == UTF8_REJECT, fail_at < cut);
        int r2 = utf8_feed(&u, guard_copy_slot(2, p + cut, n - cut), n - cut);
        int expect = fail_at < n ? UTF8_REJECT : want ? UTF8_OK : UTF8_PARTIAL;
        ck_assert_int_eq(r2, expect);
    }
}

/* ---- tests ---- */

START_TEST(boundaries_valid)
{
    static const uint32_t cps[] = {0x0,     0x7F,    0x80,    0x7FF,   0x800,    0xFFF,   0x1000,
                                   0xCFFF,  0xD000,  0xD7FF,  0xE000,  0xFFFD,   0xFFFE,  0xFFFF,
                                   0x10000, 0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF};
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        uint8_t b[4];
        size_t n = enc(b, cps[i], natural_len(cps[i]));
        ck_assert_msg(utf8_valid(guard_copy(b, n), n), "U+%04X", (unsigned)cps[i]);
        check_all_ways(b, n);
    }
}
END_TEST

START_TEST(every_scalar_value)
{
    /* all of U+0000..U+10FFFF in their shortest form: valid except the
     * surrogates; plus each one preceded and followed by ASCII */
    for (uint32_t v = 0; v <= 0x10FFFF; v++) {
        uint8_t b[6] = {'a'};
        size_t n = enc(b + 1, v, natural_len(v));
        b[n + 1] = 'z';
        bool want = v < 0xD800 || v > 0xDFFF;
        if (utf8_valid(b + 1, n) != want || utf8_valid(b, n + 2) != want)
            ck_abort_msg("U+%04X misjudged", (unsigned)v);
    }
}
END_TEST

START_TEST(every_overlong_rejected_at_first_proof)
{
    /* 2-byte forms of U+0000..U+007F die at the lead (C0/C1); 3-byte forms
     * below U+0800 at the second byte (E0 80..9F); 4-byte forms below
     * U+10000 at the second byte (F0 80..8F) */
    for (int len = 2; len <= 4; len++) {
        uint32_t limit = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        for (uint32_t v = 0; v < limit; v++) {
            uint8_t b[4];
            size_t n = enc(b, v, len);
            int last;
            size_t at = bytewise_fail_at(b, n, &last);
            ck_assert_msg(at == (len == 2 ? 0u : 1u), "overlong U+%04X in %d bytes: at %zu",
                          (unsigned)v, len, at);
            ck_assert(!utf8_valid(b, n));
        }
    }
}
END_TEST

START_TEST(surrogates_rejected_at_second_byte)
{
    for (uint32_t v = 0xD800; v <= 0xDFFF; v++) {
        uint8_t b[3];
        enc(b, v, 3);
        int last;
        ck_assert_uint_eq(bytewise_fail_at(b, 3, &last), 1);
        ck_assert(!utf8_valid(b, 3));
    }
    /* the neighbours are fine */
    ck_assert(utf8_valid((const uint8_t *)"\xED\x9F\xBF", 3));
    ck_assert(utf8_valid((const uint8_t *)"\xEE\x80\x80", 3));
}
END_TEST

START_TEST(above_max_rejected)
{
    /* F4 90.. at the second byte; F5..F7 leads at once */
    for (uint32_t v = 0x110000; v <= 0x1FFFFF; v += 0x3F) {
        uint8_t b[4];
        enc(b, v, 4);
        int last;
        size_t at = bytewise_fail_at(b, 4, &last);
        ck_assert_uint_eq(at, b[0] == 0xF4 ? 1u : 0u);
        ck_assert(!utf8_valid(b, 4));
    }
    /* 5- and 6-byte forms and FE/FF die at the lead */
    for (unsigned lead = 0xF5; lead <= 0xFF; lead++) {
        uint8_t b[6] = {(uint8_t)lead, 0x80, 0x80, 0x80, 0x80, 0x80};
        int last;
        ck_assert_uint_eq(bytewise_fail_at(b, 6, &last), 0);
    }
}
END_TEST

START_TEST(stray_continuation_bytes)
{
    for (unsigned c = 0x80; c <= 0xBF; c++) {
        uint8_t b[3] = {'x', (uint8_t)c, 'y'};
        int last;
        ck_assert_uint_eq(bytewise_fail_at(b, 3, &last), 1);
        /* one continuation too many after a complete sequence */
        uint8_t t[3] = {0xC3, 0xA9, (uint8_t)c};
        ck_assert_uint_eq(bytewise_fail_at(t, 3, &last), 2);
    }
}
END_TEST

START_TEST(truncated_sequences)
{
    static const char *seqs[] = {"\xC2\x80",        "\xDF\xBF",     "\xE0\xA0\x80",
                                 "\xED\x9F\xBF",    "\xEF\xBF\xBF", "\xF0\x90\x80\x80",
                                 "\xF4\x8F\xBF\xBF"};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        size_t n = strlen(seqs[i]);
        for (size_t k = 1; k < n; k++) {
            /* cut at the end: valid so far, but not complete */
            const uint8_t *g = guard_copy(seqs[i], k);
            utf8_t u;
            utf8_init(&u);
            ck_assert_int_eq(utf8_feed(&u, g, k), UTF8_PARTIAL);
            ck_assert(!utf8_valid(g, k));
            /* cut and followed by ASCII: rejected at the ASCII byte */
            uint8_t b[8];
            memcpy(b, seqs[i], k);
            b[k] = 'A';
            int last;
            ck_assert_uint_eq(bytewise_fail_at(b, k + 1, &last), k);
            /* cut and followed by another lead byte */
            b[k] = 0xC3;
            ck_assert_uint_eq(bytewise_fail_at(b, k + 1, &last), k);
            check_all_ways(b, k + 1);
        }
        check_all_ways((const uint8_t *)seqs[i], n);
    }
}
END_TEST

START_TEST(all_two_byte_inputs)
{
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            uint8_t s[2] = {(uint8_t)a, (uint8_t)b};
            if (utf8_valid(s, 2) != ref_valid(s, 2))
                ck_abort_msg("%02X %02X misjudged", a, b);
            int last;
            if (bytewise_fail_at(s, 2, &last) != ref_fail_at(s, 2))
                ck_abort_msg("%02X %02X rejected at the wrong byte", a, b);
        }
    }
}
END_TEST

START_TEST(all_three_byte_inputs_with_multibyte_leads)
{
    for (unsigned a = 0xC0; a < 0x100; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (unsigned c = 0; c < 256; c++) {
                uint8_t s[3] = {(uint8_t)a, (uint8_t)b, (uint8_t)c};
                if (utf8_valid(s, 3) != ref_valid(s, 3))
                    ck_abort_msg("%02X %02X %02X misjudged", a, b, c);
                utf8_t u;
                utf8_init(&u);
                int r1 = utf8_feed(&u, s, 2);
                int r2 = utf8_feed(&u, s + 2, 1);
                size_t at = ref_fail_at(s, 3);
                if ((r1 == UTF8_REJECT) != (at < 2) || (r2 == UTF8_REJECT) != (at < 3))
                    ck_abort_msg("%02X %02X %02X fail-fast", a, b, c);
            }
        }
    }
}
END_TEST

START_TEST(four_byte_leads_against_reference)
{
    static const uint8_t tail[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                   0xA0, 0xBF, 0xC0, 0xC2, 0xE0, 0xF0, 0xFF};
    for (unsigned a = 0xF0; a < 0x100; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (size_t c = 0; c < sizeof tail; c++) {
                for (size_t d = 0; d < sizeof tail; d++) {
                    uint8_t s[4] = {(uint8_t)a, (uint8_t)b, tail[c], tail[d]};
                    if (utf8_valid(s, 4) != ref_valid(s, 4))
                        ck_abort_msg("%02X %02X %02X %02X misjudged", a, b, tail[c], tail[d]);
                    int last;
                    if (bytewise_fail_at(s, 4, &last) != ref_fail_at(s, 4))
                        ck_abort_msg("%02X %02X %02X %02X fail-fast", a, b, tail[c], tail[d]);
                }
            }
        }
    }
}
END_TEST

START_TEST(random_strings_every_split)
{
    static const uint8_t pool[] = {'a',  0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                   0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE,
                                   0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF8, 0xFE, 0xFF};
    xorshift_t x = {0x5EED0001};
    for (int iter = 0; iter < 4000; iter++) {
        uint8_t s[48];
        size_t n = xorshift_range(&x, 0, sizeof s);
        for (size_t i = 0; i < n; i++) {
            /* bias toward valid text so that failures come late */
            uint64_t r = xorshift_next(&x) % 8;
            if (r < 5 && i + 4 <= n) {
                uint32_t v = (uint32_t)(xorshift_next(&x) % 0x110000);
                if (v >= 0xD800 && v <= 0xDFFF)
                    v = 0x20AC;
                i += enc(s + i, v, natural_len(v)) - 1;
            } else {
                s[i] = pool[xorshift_next(&x) % sizeof pool];
            }
        }
        check_all_ways(s, n);
    }
}
END_TEST

START_TEST(ascii_fast_path_every_position)
{
    /* a bad byte at each position of long ASCII runs, at each alignment,
     * ending at the guard page, so word-at-a-time scanning neither skips
     * it nor reads past the end */
    uint8_t s[200];
    for (size_t n = 1; n <= 72; n++) {
        /* n varies the start alignment, since copies end at the page */
        memset(s, 'q', n);
        ck_assert(utf8_valid(guard_copy(s, n), n));
        for (size_t bad = 0; bad < n; bad++) {
            static const uint8_t bads[] = {0x80, 0xC0, 0xFF, 0xE0};
            for (size_t k = 0; k < sizeof bads; k++) {
                memset(s, 'q', n);
                s[bad] = bads[k];
                uint8_t *g = guard_copy(s, n);
                ck_assert(!utf8_valid(g, n));
                int last;
                ck_assert_uint_eq(bytewise_fail_at(s, n, &last), ref_fail_at(s, n));
            }
            /* a valid 2-byte character at every position */
            memset(s, 'q', n + 1);
            s[bad] = 0xC3;
            s[bad + 1] = 0xA9;
            ck_assert(utf8_valid(guard_copy(s, n + 1), n + 1));
        }
    }
    /* a multi-byte character ending exactly at the guard page */
    memset(s, 'w', sizeof s);
    memcpy(s + sizeof s - 4, "\xF0\x9F\x98\x80", 4);
    ck_assert(utf8_valid(guard_copy(s, sizeof s), sizeof s));
    /* and a truncated one there */
    ck_assert(!utf8_valid(guard_copy(s, sizeof s - 1), sizeof s - 1));
}
END_TEST

START_TEST(reject_is_sticky_and_empty_feed_reports_state)
{
    utf8_t u;
    utf8_init(&u);
    ck_assert_int_eq(utf8_feed(&u, NULL, 0), UTF8_OK);
    ck_assert_int_eq(utf8_feed(&u, (const uint8_t *)"\xE2\x82", 2), UTF8_PARTIAL);
    ck_assert_int_eq(utf8_feed(&u, NULL, 0), UTF8_PARTIAL);
    ck_assert_int_eq(utf8_feed(&u, (const uint8_t *)"\xAC", 1), UTF8_OK);
    ck_assert_int_eq(utf8_feed(&u, (const uint8_t *)"\xC0", 1), UTF8_REJECT);
    ck_assert_int_eq(utf8_feed(&u, (const uint8_t *)"abc", 3), UTF8_REJECT);
    ck_assert_int_eq(utf8_feed(&u, NULL, 0), UTF8_REJECT);
    utf8_init(&u);
    ck_assert_int_eq(utf8_feed(&u, (const uint8_t *)"abc", 3), UTF8_OK);
    ck_assert(utf8_valid(NULL, 0));
}
END_TEST

START_TEST(long_mixed_text)
{
    /* a long text of every length class, validated whole and in random
     * pieces; then one byte corrupted at random positions */
    static uint8_t s[60000];
    xorshift_t x = {77};
    size_t n = 0;
    while (n + 4 <= sizeof s) {
        uint32_t v;
        switch (xorshift_next(&x) % 4) {
        case 0:
            v = (uint32_t)xorshift_range(&x, 0, 0x7F);
            break;
        case 1:
            v = (uint32_t)xorshift_range(&x, 0x80, 0x7FF);
            break;
        case 2:
            v = (uint32_t)xorshift_range(&x, 0xE000, 0xFFFF);
            break;
        default:
            v = (uint32_t)xorshift_range(&x, 0x10000, 0x10FFFF);
            break;
        }
        n += enc(s + n, v, natural_len(v));
    }
    ck_assert(utf8_valid(guard_copy(s, n), n));
    for (int iter = 0; iter < 50; iter++) {
        utf8_t u;
        utf8_init(&u);
        size_t off = 0;
        int r = UTF8_OK;
        while (off < n) {
            size_t k = xorshift_range(&x, 1, 3000);
            if (k > n - off)
                k = n - off;
            r = utf8_feed(&u, guard_copy(s + off, k), k);
            ck_assert_int_ne(r, UTF8_REJECT);
            off += k;
        }
        ck_assert_int_eq(r, UTF8_OK);
    }
    for (int iter = 0; iter < 200; iter++) {
        size_t pos = xorshift_range(&x, 0, n - 1);
        uint8_t old = s[pos];
        s[pos] = (uint8_t)xorshift_next(&x);
        ck_assert(utf8_valid(s, n) == ref_valid(s, n));
        s[pos] = old;
    }
}
END_TEST

static Suite *utf8_suite(void)
{
    Suite *s = suite_create("utf8");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120); /* generous: ASan on a busy machine */
    tcase_add_test(tc, boundaries_valid);
    tcase_add_test(tc, every_scalar_value);
    tcase_add_test(tc, every_overlong_rejected_at_first_proof);
    tcase_add_test(tc, surrogates_rejected_at_second_byte);
    tcase_add_test(tc, above_max_rejected);
    tcase_add_test(tc, stray_continuation_bytes);
    tcase_add_test(tc, truncated_sequences);
    tcase_add_test(tc, all_two_byte_inputs);
    tcase_add_test(tc, all_three_byte_inputs_with_multibyte_leads);
    tcase_add_test(tc, four_byte_leads_against_reference);
    tcase_add_test(tc, random_strings_every_split);
    tcase_add_test(tc, ascii_fast_path_every_position);
    tcase_add_test(tc, reject_is_sticky_and_empty_feed_reports_state);
    tcase_add_test(tc, long_mixed_text);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(utf8_suite());
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
