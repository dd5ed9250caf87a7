/*
 * test_topic.c - topic grammar, matching and covering (PROTOCOL.md section 3).
 *
 * Every input is placed against a PROT_NONE page with guard_copy, so a
 * read past the end of a topic or pattern faults.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsproto/topic.h"

static int check_str(const char *t, bool pattern)
{
    size_t n = strlen(t);
    return topic_check((const char *)guard_copy(t, n), n, pattern);
}

static bool match(const char *pat, const char *topic)
{
    size_t pl = strlen(pat), tl = strlen(topic);
    const char *p = (const char *)guard_copy_slot(0, pat, pl);
    const char *t = (const char *)guard_copy_slot(1, topic, tl);
    return topic_match(p, pl, t, tl);
}

static bool covers(const char *outer, const char *inner)
{
    size_t ol = strlen(outer), il = strlen(inner);
    const char *o = (const char *)guard_copy_slot(0, outer, ol);
    const char *i = (const char *)guard_copy_slot(1, inner, il);
    return topic_covers(o, ol, i, il);
}

static bool is_pattern(const char *t)
{
    size_t n = strlen(t);
    return topic_is_pattern((const char *)guard_copy(t, n), n);
}

START_TEST(check_valid_topics)
{
    static const char *const ok[] = {
        "chat", "chat.lobby",  "a.b.c.d", "a*b",     "*a", "a>",
        ">a.b", "a-b_c/d:e!~", "x.a*b.y", "A.Z.0.9", "!",  "~",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(check_str(ok[i], false) == TOPIC_OK, "%s", ok[i]);
        ck_assert_msg(check_str(ok[i], true) == TOPIC_OK, "%s", ok[i]);
    }
}
END_TEST

START_TEST(check_empty)
{
    ck_assert_int_eq(topic_check((const char *)guard_copy("", 0), 0, false), TOPIC_E_EMPTY);
    ck_assert_int_eq(topic_check((const char *)guard_copy("", 0), 0, true), TOPIC_E_EMPTY);
}
END_TEST

START_TEST(check_empty_segments)
{
    static const char *const bad[] = {"a..b", ".a", "a.", ".", "..", "a.b.", ".*", "*.", "a..>"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(check_str(bad[i], false) == TOPIC_E_SEGMENT ||
                          check_str(bad[i], false) == TOPIC_E_WILDCARD,
                      "%s", bad[i]);
        ck_assert_msg(check_str(bad[i], true) == TOPIC_E_SEGMENT, "%s", bad[i]);
    }
    ck_assert_int_eq(check_str("a..b", false), TOPIC_E_SEGMENT);
    ck_assert_int_eq(check_str(".a", false), TOPIC_E_SEGMENT);
    ck_assert_int_eq(check_str("a.", false), TOPIC_E_SEGMENT);
}
END_TEST

START_TEST(check_length_limit)
{
    char t[TOPIC_MAX + 2];
    memset(t, 'x', sizeof t);
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 255), 255, false), TOPIC_OK);
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 255), 255, true), TOPIC_OK);
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 256), 256, false), TOPIC_E_LONG);
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 256), 256, true), TOPIC_E_LONG);
    /* 255 bytes made of segments, ending in a wildcard */
    for (size_t i = 1; i < 253; i += 2)
        t[i] = '.';
    t[253] = '.';
    t[254] = '>';
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 255), 255, true), TOPIC_OK);
    ck_assert_int_eq(topic_check((const char *)guard_copy(t, 255), 255, false), TOPIC_E_WILDCARD);
}
END_TEST

START_TEST(check_bad_bytes)
{
    static const unsigned char bad[] = {' ', 0x7f, 0x00, 0x01, '\t', '\n', 0x1f, 0x80, 0xc3, 0xff};
    for (size_t i = 0; i < sizeof bad; i++) {
        char t[5] = {'a', '.', (char)bad[i], 'b', 0};
        ck_assert_msg(topic_check((const char *)guard_copy(t, 4), 4, false) == TOPIC_E_CHAR,
                      "byte 0x%02x", bad[i]);
        ck_assert_msg(topic_check((const char *)guard_copy(t, 4), 4, true) == TOPIC_E_CHAR,
                      "byte 0x%02x", bad[i]);
        ck_assert_msg(topic_check((const char *)guard_copy(t + 2, 1), 1, false) == TOPIC_E_CHAR,
                      "byte 0x%02x alone", bad[i]);
    }
    /* UTF-8 "café" */
    ck_assert_int_eq(check_str("caf\xc3\xa9", false), TOPIC_E_CHAR);
    ck_assert_int_eq(check_str("chat room", true), TOPIC_E_CHAR);
    /* every byte of the printable range is fine on its own (except '.') */
    for (int c = 0x21; c <= 0x7e; c++) {
        char t[1] = {(char)c};
        int want = c == '.'                 ? TOPIC_E_SEGMENT
                   : (c == '*' || c == '>') ? TOPIC_E_WILDCARD
                                            : TOPIC_OK;
        ck_assert_msg(topic_check((const char *)guard_copy(t, 1), 1, false) == want, "byte %c", c);
    }
}
END_TEST

START_TEST(check_wildcards)
{
    ck_assert_int_eq(check_str("chat.*", true), TOPIC_OK);
    ck_assert_int_eq(check_str("chat.>", true), TOPIC_OK);
    ck_assert_int_eq(check_str("*", true), TOPIC_OK);
    ck_assert_int_eq(check_str(">", true), TOPIC_OK);
    ck_assert_int_eq(check_str("*.*.>", true), TOPIC_OK);
    ck_assert_int_eq(check_str("a.*.b", true), TOPIC_OK);

    ck_assert_int_eq(check_str("chat.*", false), TOPIC_E_WILDCARD);
    ck_assert_int_eq(check_str("chat.>", false), TOPIC_E_WILDCARD);
    ck_assert_int_eq(check_str("*", false), TOPIC_E_WILDCARD);
    ck_assert_int_eq(check_str(">", false), TOPIC_E_WILDCARD);
    ck_assert_int_eq(check_str("a.*.b", false), TOPIC_E_WILDCARD);

    ck_assert_int_eq(check_str(">.a", true), TOPIC_E_GT_LAST);
    ck_assert_int_eq(check_str("a.>.b", true), TOPIC_E_GT_LAST);
    ck_assert_int_eq(check_str(">.>", true), TOPIC_E_GT_LAST);

    /* inside a longer segment they are ordinary characters */
    ck_assert_int_eq(check_str("a*b", false), TOPIC_OK);
    ck_assert_int_eq(check_str("a>b.>c.**.>>", false), TOPIC_OK);
    ck_assert(!is_pattern("a*b"));
    ck_assert(!is_pattern("**.>>.x*"));
    ck_assert(!is_pattern("chat.lobby"));
    ck_assert(is_pattern("chat.*"));
    ck_assert(is_pattern("chat.>"));
    ck_assert(is_pattern("*"));
    ck_assert(is_pattern(">"));
    ck_assert(is_pattern("*.b"));
    ck_assert(is_pattern("a.*.b"));
}
END_TEST

START_TEST(strerror_messages)
{
    ck_assert_str_eq(topic_strerror(TOPIC_E_WILDCARD), "publish topic may not contain wildcards");
    static const int errs[] = {TOPIC_E_EMPTY,   TOPIC_E_LONG,     TOPIC_E_CHAR,
                               TOPIC_E_SEGMENT, TOPIC_E_WILDCARD, TOPIC_E_GT_LAST};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        const char *m = topic_strerror(errs[i]);
        ck_assert_ptr_nonnull(m);
        ck_assert(strlen(m) > 5);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(m, topic_strerror(errs[j]));
    }
    ck_assert_ptr_nonnull(topic_strerror(-100));
    ck_assert_ptr_nonnull(topic_strerror(TOPIC_OK));
}
END_TEST

START_TEST(match_protocol_examples)
{
    ck_assert(match("chat.*", "chat.room1"));
    ck_assert(!match("chat.*", "chat"));
    ck_assert(!match("chat.*", "chat.room1.x"));
    ck_assert(match("chat.>", "chat.room1"));
    ck_assert(match("chat.>", "chat.room1.x"));
    ck_assert(!match("chat.>", "chat"));
    ck_assert(match("chat.*", "chat.lobby"));
}
END_TEST

START_TEST(match_literals)
{
    ck_assert(match("chat", "chat"));
    ck_assert(match("chat.lobby", "chat.lobby"));
    ck_assert(!match("chat", "chats"));
    ck_assert(!match("chats", "chat"));
    ck_assert(!match("chat", "chat.lobby"));
    ck_assert(!match("chat.lobby", "chat"));
    ck_assert(!match("chat.lobby", "chat.lobbx"));
    ck_assert(!match("chat.lobby", "Chat.lobby"));
    ck_assert(!match("a.b", "ab"));
    ck_assert(!match("ab", "a.b"));
    /* a*b is literal */
    ck_assert(match("a*b", "a*b"));
    ck_assert(!match("a*b", "axb"));
    ck_assert(!match("a*b", "a.b"));
    ck_assert(match("x.a>", "x.a>"));
    ck_assert(!match("x.a>", "x.a.b"));
}
END_TEST

START_TEST(match_wildcards)
{
    ck_assert(match("*", "a"));
    ck_assert(!match("*", "a.b"));
    ck_assert(match(">", "a"));
    ck_assert(match(">", "a.b.c"));
    ck_assert(match("*.b", "a.b"));
    ck_assert(!match("*.b", "a.c"));
    ck_assert(!match("*.b", "b"));
    ck_assert(match("a.*.c", "a.xyz.c"));
    ck_assert(!match("a.*.c", "a.c"));
    ck_assert(!match("a.*.c", "a.x.y.c"));
    ck_assert(match("*.*", "a.b"));
    ck_assert(!match("*.*", "a"));
    ck_assert(!match("*.*", "a.b.c"));
    ck_assert(match("*.>", "a.b"));
    ck_assert(match("*.>", "a.b.c"));
    ck_assert(!match("*.>", "a"));
    ck_assert(match("a.*.>", "a.b.c"));
    ck_assert(!match("a.*.>", "a.b"));
    ck_assert(match("a*.*", "a*.x"));
    ck_assert(!match("a*.*", "ab.x"));
}
END_TEST

START_TEST(match_max_length)
{
    char t[TOPIC_MAX];
    memset(t, 'q', sizeof t);
    t[1] = '.';
    ck_assert(topic_match((const char *)guard_copy_slot(0, t, 255), 255,
                          (const char *)guard_copy_slot(1, t, 255), 255));
    ck_assert(topic_match(">", 1, (const char *)guard_copy_slot(1, t, 255), 255));
    ck_assert(topic_match("q.>", 3, (const char *)guard_copy_slot(1, t, 255), 255));
    ck_assert(topic_match("q.*", 3, (const char *)guard_copy_slot(1, t, 255), 255));
    ck_assert(!topic_match("q", 1, (const char *)guard_copy_slot(1, t, 255), 255));
}
END_TEST

START_TEST(covers_cases)
{
    ck_assert(covers("chat.>", "chat.*"));
    ck_assert(covers("chat.>", "chat.a.b"));
    ck_assert(covers("chat.>", "chat.>"));
    ck_assert(covers("chat.>", "chat.*.>"));
    ck_assert(!covers("chat.*", "chat.>"));
    ck_assert(!covers("chat.>", "chat"));
    ck_assert(!covers("chat.>", "other.x"));
    ck_assert(covers("chat.*", "chat.*"));
    ck_assert(covers("chat.*", "chat.lobby"));
    ck_assert(!covers("chat.*", "chat.lobby.x"));
    ck_assert(!covers("chat.lobby", "chat.*"));
    ck_assert(covers("chat.lobby", "chat.lobby"));
    ck_assert(!covers("chat.lobby", "chat.lobbyx"));
    ck_assert(covers(">", ">"));
    ck_assert(covers(">", "*"));
    ck_assert(covers(">", "a.b.*.>"));
    ck_assert(!covers("*", ">"));
    ck_assert(covers("*", "*"));
    ck_assert(covers("*.*", "a.*"));
    ck_assert(!covers("a.*", "*.*"));
    ck_assert(!covers("a.*", "a"));
    ck_assert(!covers("a", "a.*"));
    ck_assert(covers("*.>", "a.>"));
    ck_assert(!covers("*.>", ">"));
    ck_assert(!covers("a.b.>", "a.>"));
    ck_assert(covers("a*b.>", "a*b.c"));
    ck_assert(!covers("a*b.>", "axb.c"));
}
END_TEST

/* covers(o, i) must hold exactly when every topic i matches is matched by
 * o; check that against brute force over a small alphabet. */
static const char *const pats[] = {"a",     "b",     "*",     ">",     "a.a",  "a.b",   "a.*",
                                   "*.a",   "*.*",   "a.>",   "*.>",   "b.>",  "a.a.a", "a.*.a",
                                   "*.*.*", "a.*.>", "*.b.>", "a.b.a", "a.a.b"};
static const char *const topics[] = {"a",     "b",     "c",       "a.a",     "a.b",
                                     "b.a",   "c.c",   "a.a.a",   "a.b.a",   "a.a.b",
                                     "b.b.b", "a.c.a", "a.a.a.a", "a.b.c.d", "b.a.b.a"};

START_TEST(covers_matches_brute_force)
{
    size_t np = sizeof pats / sizeof pats[0], nt = sizeof topics / sizeof topics[0];
    for (size_t o = 0; o < np; o++) {
        ck_assert_int_eq(check_str(pats[o], true), TOPIC_OK);
        for (size_t i = 0; i < np; i++) {
            bool all = true;
            for (size_t t = 0; t < nt; t++) {
                if (match(pats[i], topics[t]) && !match(pats[o], topics[t]))
                    all = false;
            }
            /* ">" and "*.>" reach deeper than our sample; they are only
             * covered by patterns ending in '>' at the same or lower depth */
            bool got = covers(pats[o], pats[i]);
            if (got)
                ck_assert_msg(all, "%s covers %s but misses a topic", pats[o], pats[i]);
            else if (all)
                ck_assert_msg(strchr(pats[i], '>') != NULL, "%s should cover %s", pats[o], pats[i]);
        }
    }
}
END_TEST

START_TEST(match_equals_covers_on_topics)
{
    size_t np = sizeof pats / sizeof pats[0], nt = sizeof topics / sizeof topics[0];
    for (size_t p = 0; p < np; p++) {
        for (size_t t = 0; t < nt; t++)
            ck_assert_msg(match(pats[p], topics[t]) == covers(pats[p], topics[t]), "%s %s", pats[p],
                          topics[t]);
    }
    for (size_t t = 0; t < nt; t++)
        ck_assert(match(topics[t], topics[t]));
}
END_TEST

/* Covering is decided on the grammar, where '>' has no depth limit: near
 * the 255-byte limit a pattern ending in '>' is still not covered by a
 * bounded one, even when every topic it can match in 255 bytes is. For an
 * ACL that errs on the side of refusing. */
START_TEST(covers_ignores_the_length_limit)
{
    char inner[256], topic[256];
    memset(inner, 'x', 253);
    memcpy(inner + 253, ".>", 3);
    ck_assert_int_eq(check_str(inner, true), TOPIC_OK);
    /* the only topics inner matches: 253 x's, a dot and one byte */
    memset(topic, 'x', 253);
    memcpy(topic + 253, ".y", 3);
    ck_assert(match(inner, topic));
    ck_assert(match("*.*", topic));
    ck_assert(!covers("*.*", inner));
    ck_assert(covers("*.>", inner));
    ck_assert(covers(inner, inner));
}
END_TEST

static Suite *topic_suite(void)
{
    Suite *s = suite_create("topic");
    TCase *tc = tcase_create("check");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, check_valid_topics);
    tcase_add_test(tc, check_empty);
    tcase_add_test(tc, check_empty_segments);
    tcase_add_test(tc, check_length_limit);
    tcase_add_test(tc, check_bad_bytes);
    tcase_add_test(tc, check_wildcards);
    tcase_add_test(tc, strerror_messages);
    suite_add_tcase(s, tc);

    tc = tcase_create("match");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, match_protocol_examples);
    tcase_add_test(tc, match_literals);
    tcase_add_test(tc, match_wildcards);
    tcase_add_test(tc, match_max_length);
    suite_add_tcase(s, tc);

    tc = tcase_create("covers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, covers_cases);
    tcase_add_test(tc, covers_matches_brute_force);
    tcase_add_test(tc, match_equals_covers_on_topics);
    tcase_add_test(tc, covers_ignores_the_length_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(topic_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
