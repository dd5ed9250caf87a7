/*
 * test_error.c - unit tests for ws_error: messages, close-code mapping and
 * the validity rule for close codes received from a peer.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "wsproto/ws_error.h"

static const int all_codes[] = {
    WS_OK,      WS_AGAIN,      WS_E_PROTO,        WS_E_UTF8,    WS_E_TOO_BIG,
    WS_E_NOMEM, WS_E_HTTP_BAD, WS_E_HTTP_TOO_BIG, WS_E_NOSPACE, WS_E_INVAL,
};
#define NCODES (sizeof all_codes / sizeof all_codes[0])

START_TEST(strerror_known_codes_distinct)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *a = ws_strerror(all_codes[i]);
        ck_assert_ptr_nonnull(a);
        ck_assert_uint_gt(strlen(a), 0);
        ck_assert_str_ne(a, ws_strerror(-1000));
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(a, ws_strerror(all_codes[j]));
    }
}
END_TEST

START_TEST(strerror_specific_texts)
{
    ck_assert_str_eq(ws_strerror(WS_OK), "success");
    ck_assert_str_eq(ws_strerror(WS_E_UTF8), "invalid UTF-8 in text data");
    ck_assert_str_eq(ws_strerror(WS_E_HTTP_TOO_BIG), "HTTP head too large");
}
END_TEST

START_TEST(strerror_unknown_never_null)
{
    static const int odd[] = {1, 42, -10, -100, -1000, 0x7fffffff, -0x7fffffff - 1};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        ck_assert_ptr_nonnull(ws_strerror(odd[i]));
        ck_assert_str_eq(ws_strerror(odd[i]), "unknown error");
    }
}
END_TEST

START_TEST(close_code_websocket_errors)
{
    ck_assert_uint_eq(ws_close_code(WS_E_PROTO), 1002);
    ck_assert_uint_eq(ws_close_code(WS_E_UTF8), 1007);
    ck_assert_uint_eq(ws_close_code(WS_E_TOO_BIG), 1009);
    ck_assert_uint_eq(ws_close_code(WS_E_NOMEM), 1011);
    ck_assert_uint_eq(WS_CLOSE_PROTOCOL, 1002);
    ck_assert_uint_eq(WS_CLOSE_INVALID_DATA, 1007);
    ck_assert_uint_eq(WS_CLOSE_TOO_BIG, 1009);
    ck_assert_uint_eq(WS_CLOSE_INTERNAL, 1011);
}
END_TEST

START_TEST(close_code_everything_else_is_1011)
{
    static const int other[] = {
        WS_OK, WS_AGAIN, WS_E_HTTP_BAD, WS_E_HTTP_TOO_BIG, WS_E_NOSPACE, WS_E_INVAL, 7, -1000};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        ck_assert_uint_eq(ws_close_code(other[i]), WS_CLOSE_INTERNAL);
}
END_TEST

START_TEST(close_code_result_is_always_sendable)
{
    for (int err = -50; err <= 50; err++) {
        uint16_t c = ws_close_code(err);
        ck_assert(ws_close_code_valid(c));
    }
}
END_TEST

START_TEST(close_code_valid_boundaries)
{
    static const uint16_t ok[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                  1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    static const uint16_t bad[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                   1016, 1100, 2000, 2999, 5000, 6000, 65535};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(ws_close_code_valid(ok[i]), "%u should be valid", ok[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!ws_close_code_valid(bad[i]), "%u should be invalid", bad[i]);
}
END_TEST

START_TEST(close_code_valid_count)
{
    /* 4 + 8 + 2000 valid codes out of 65536. */
    unsigned n = 0;
    for (unsigned c = 0; c <= 0xffff; c++)
        n += ws_close_code_valid((uint16_t)c) ? 1 : 0;
    ck_assert_uint_eq(n, 2012);
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("ws_error");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, strerror_known_codes_distinct);
    tcase_add_test(tc, strerror_specific_texts);
    tcase_add_test(tc, strerror_unknown_never_null);
    tcase_add_test(tc, close_code_websocket_errors);
    tcase_add_test(tc, close_code_everything_else_is_1011);
    tcase_add_test(tc, close_code_result_is_always_sendable);
    tcase_add_test(tc, close_code_valid_boundaries);
    tcase_add_test(tc, close_code_valid_count);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(error_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
