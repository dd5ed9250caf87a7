/*
 * test_alloc.c - libwsproto under allocation failure: it allocates nothing.
 *
 * Every allocation function of the process is replaced here (malloc,
 * calloc, realloc, the aligned ones; glibc routes its own allocations
 * through them, strtod()'s included). While a test is "armed", each of
 * them counts the call and fails it, as an exhausted heap would. Each test
 * drives a part of the library's API through its work (a whole opening
 * handshake on both sides, frames both ways, every message parser and
 * encoder, topics, UTF-8) with the allocator armed, then disarms it and
 * checks both that the results are right and that no allocation was
 * attempted. Since the library asks for no memory, no allocation failure
 * can reach it; if one ever does, this suite says where.
 *
 * Under ASan and TSan the sanitizer owns the allocator, so the calls are
 * counted through its malloc hook instead and not failed; the assertion
 * that none happened is the same.
 */
#define _GNU_SOURCE /* asprintf */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wsproto/msg.h"
#include "wsproto/topic.h"
#include "wsproto/utf8.h"
#include "wsproto/ws_error.h"
#include "wsproto/ws_frame.h"
#include "wsproto/ws_handshake.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif

static volatile int armed;
static volatile long attempts;

#ifdef SANITIZED

int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    if (armed)
        attempts++;
}

static void on_free(const volatile void *p)
{
    (void)p;
}

static void install(void)
{
    ck_assert_int_ne(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free), 0);
}

#else

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

/* True if the allocation is to fail (and is counted). */
static int fail_now(void)
{
    if (!armed)
        return 0;
    attempts++;
    return 1;
}

void *malloc(size_t n)
{
    return fail_now() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return fail_now() ? NULL : __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

void *memalign(size_t align, size_t n);
void *memalign(size_t align, size_t n)
{
    return fail_now() ? NULL : __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
    return fail_now() ? NULL : __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (fail_now())
        return ENOMEM;
    void *p = __libc_memalign(align, n);
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n)
{
    return fail_now() ? NULL : __libc_memalign(4096, n);
}

static void install(void)
{
    /* the replacements are the ones called, by this file and inside libc */
    char *s = NULL;
    armed = 1;
    void *volatile p = malloc(16);
    int r = asprintf(&s, "%d", 12345);
    armed = 0;
    ck_assert_ptr_null(p);
    ck_assert_int_eq(r, -1);
    ck_assert_int_eq(attempts, 2);
    attempts = 0;
}

#endif

static void arm(void)
{
    attempts = 0;
    armed = 1;
}

/* Stop failing and counting; returns the allocations attempted. */
static long disarm(void)
{
    armed = 0;
    return attempts;
}

static void setup(void)
{
    install();
}

#define RFC_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Both sides of an opening handshake, as the broker and a client do it. */
START_TEST(handshake_allocates_nothing)
{
    static const char req_head[] = "GET /ws?token=x HTTP/1.1\r\n"
                                   "Host: 127.0.0.1:8080\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: keep-alive, Upgrade\r\n"
                                   "Sec-WebSocket-Key: " RFC_KEY "\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                   "Sec-WebSocket-Protocol: wsbroker.v1\r\n"
                                   "Origin: http://127.0.0.1:8080\r\n\r\n";
    static wsh_request_t req;
    static wsh_upgrade_t up;
    static wsh_response_t res;
    static char out101[1024], err[512], reqbuf[1024], accept_long[WSH_ACCEPT_LEN + 1],
        key[WSH_KEY_LEN + 1];
    static char longkey[3000];
    memset(longkey, 'k', sizeof longkey);
    size_t scanned = 0, rscanned = 0;
    const uint8_t nonce[16] = "the sample nonce";

    arm();
    int r = wsh_parse_request(req_head, sizeof req_head - 1, &scanned, &req);
    int status = wsh_check_upgrade(&req, &up);
    int n101 = wsh_write_101(out101, sizeof out101, &up, NULL);
    int rr = n101 > 0 ? wsh_parse_response(out101, (size_t)n101, &rscanned, &res) : -1;
    int ok101 = wsh_check_101(&res, RFC_KEY);
    int nerr = wsh_write_error(err, sizeof err, 426, "unsupported Sec-WebSocket-Version");
    wsh_make_key(nonce, key);
    int nreq = wsh_write_request(reqbuf, sizeof reqbuf, "127.0.0.1:8080", "/ws", key, NULL);
    wsh_accept_key(longkey, sizeof longkey, accept_long);
    long n = disarm();

    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(r, (int)sizeof req_head - 1);
    ck_assert_int_eq(status, 101);
    ck_assert_str_eq(up.accept, RFC_ACCEPT);
    ck_assert_int_gt(n101, 0);
    ck_assert_int_eq(rr, n101);
    ck_assert_int_eq(ok101, WS_OK);
    ck_assert_int_gt(nerr, 0);
    ck_assert_str_eq(key, RFC_KEY);
    ck_assert_int_gt(nreq, 0);
    ck_assert_uint_eq(strlen(accept_long), WSH_ACCEPT_LEN);
}
END_TEST

/* Frames both ways: a masked fragmented text message with a ping between
 * its frames, a close; encoded and parsed. */
START_TEST(frames_allocate_nothing)
{
    static uint8_t wire[4096], payload[300];
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    static ws_parser_t p;
    static uint8_t msg[600];
    size_t msg_len = 0, w = 0;
    int events = 0, closes = 0, pings = 0;
    uint16_t close_code = 0;
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)('a' + i % 26);

    arm();
    ssize_t a = ws_frame_encode(wire + w, sizeof wire - w, WS_OP_TEXT, false, payload, 200, mask);
    w += a > 0 ? (size_t)a : 0;
    ssize_t b = ws_frame_encode(wire + w, sizeof wire - w, WS_OP_PING, true, payload, 5, mask);
    w += b > 0 ? (size_t)b : 0;
    ssize_t c =
        ws_frame_encode(wire + w, sizeof wire - w, WS_OP_CONT, true, payload + 200, 100, mask);
    w += c > 0 ? (size_t)c : 0;
    uint8_t cp[WS_MAX_CONTROL];
    size_t cl = ws_close_payload(cp, 1000, "bye", 3);
    ssize_t d = ws_frame_encode(wire + w, sizeof wire - w, WS_OP_CLOSE, true, cp, cl, mask);
    w += d > 0 ? (size_t)d : 0;

    ws_parser_init(&p, WS_ROLE_SERVER, 1 << 20, 0);
    size_t off = 0;
    ssize_t fr = 0;
    while (off < w) {
        ws_event_t ev;
        fr = ws_parser_feed(&p, wire + off, w - off, &ev);
        if (fr < 0)
            break;
        off += (size_t)fr;
        if (ev.type == WS_EV_DATA) {
            memcpy(msg + msg_len, ev.data, ev.len);
            msg_len += ev.len;
            events++;
        } else if (ev.type == WS_EV_PING) {
            pings++;
        } else if (ev.type == WS_EV_CLOSE) {
            closes++;
            close_code = ev.close_code;
        }
    }
    bool valid = utf8_valid(msg, msg_len);
    const char *text = ws_strerror(WS_E_UTF8);
    uint16_t code = ws_close_code(WS_E_TOO_BIG);
    long n = disarm();

    ck_assert_int_eq(n, 0);
    ck_assert(a > 0 && b > 0 && c > 0 && d > 0);
    ck_assert_int_ge(fr, 0);
    ck_assert_uint_eq(off, w);
    ck_assert_uint_eq(msg_len, 300);
    ck_assert(memcmp(msg, payload, 300) == 0);
    ck_assert(events >= 2 && pings == 1 && closes == 1 && close_code == 1000);
    ck_assert(valid && text != NULL && code == 1009);
}
END_TEST

/* Every message parser and encoder, with members that take their slow
 * paths: escapes, a long number converted to a double, deep nesting. */
START_TEST(messages_allocate_nothing)
{
    static char pub[4096], hello[2048], out[4096], esc[600];
    static msg_request_t req;
    static msg_server_t srv, srv2;
    const char *why = NULL;
    int pn = snprintf(pub, sizeof pub,
                      "{\"op\":\"publish\",\"topic\":\"chat.\\u00e9\",\"data\":"
                      "[[[[{\"k\":\"\\ud83d\\ude00\"}]]]],\"id\":\"x\\\"y\"}");
    static char ones[901];
    memset(ones, '1', 900);
    /* 0.0111...: 900 significant digits, more than the 800 kept */
    int hn = snprintf(hello, sizeof hello,
                      "{\"op\":\"hello\",\"client\":\"c\\n1\",\"server\":\"wsbroker\","
                      "\"heartbeat\":0.0%se0,\"max_message\":1048576}",
                      ones);
    msg_ack_t ack = {{"\"a\"", 3}, "chat.lobby", 10, true, 42, "ep", 1};

    arm();
    int r1 = msg_parse(pub, (size_t)pn, &req, &why);
    int r2 = msg_parse_server(hello, (size_t)hn, &srv);
    size_t e1 = msg_encode_message(out, sizeof out, "chat.\"x\"", 8, 7, "{\"a\":1}", 7);
    int r3 = msg_parse_server(out, e1, &srv2);
    size_t e2 = msg_encode_hello(out, sizeof out, "c1", "wsbroker/0.1", 20.5, 1 << 20);
    size_t e3 = msg_encode_ack(out, sizeof out, &ack);
    size_t e4 = msg_encode_error(out, sizeof out, (msg_span_t){"1", 1}, "bad_json", "no");
    size_t e5 = msg_encode_pong(out, sizeof out, (msg_span_t){NULL, 0});
    size_t e6 = msg_encode_publish(out, sizeof out, "t", 1, "[1]", 3, (msg_span_t){"2", 1});
    size_t e7 =
        msg_encode_subscribe(out, sizeof out, false, "a.>", 3, (msg_span_t){"3", 1}, 5, 1, "ep");
    size_t e8 = msg_escape(esc, sizeof esc, "a\"b\\c\x01\n\xc3\xa9", 9);
    const char *code = msg_err_code(MSG_E_UNKNOWN_OP);
    long n = disarm();

    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(r1, MSG_OK);
    ck_assert_int_eq(req.op, MSG_OP_PUBLISH);
    ck_assert(req.topic.len == 7 && memcmp(req.topic.p, "chat.\xc3\xa9", 7) == 0);
    ck_assert_int_eq(r2, MSG_OK);
    ck_assert(srv.op == MSG_S_HELLO && srv.max_message == 1048576);
    ck_assert(srv.heartbeat > 0.0111 && srv.heartbeat < 0.0112);
    ck_assert_str_eq(srv.client, "c\n1");
    ck_assert_int_eq(r3, MSG_OK);
    ck_assert_str_eq(srv2.topic, "chat.\"x\"");
    ck_assert(srv2.has_seq && srv2.seq == 7);
    ck_assert(e1 > 0 && e2 > 0 && e3 > 0 && e4 > 0 && e5 > 0 && e6 > 0 && e7 > 0 && e8 > 0);
    ck_assert_str_eq(code, "unknown_op");
}
END_TEST

START_TEST(topics_allocate_nothing)
{
    arm();
    int a = topic_check("chat.lobby", 10, false);
    int b = topic_check("chat.>", 6, true);
    bool m = topic_match("chat.*", 6, "chat.lobby", 10);
    bool c = topic_covers("chat.>", 6, "chat.*", 6);
    bool p = topic_is_pattern("chat.*", 6);
    const char *s = topic_strerror(TOPIC_E_GT_LAST);
    long n = disarm();

    ck_assert_int_eq(n, 0);
    ck_assert(a == TOPIC_OK && b == TOPIC_OK && m && c && p && s != NULL);
}
END_TEST

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc = tcase_create("none");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, handshake_allocates_nothing);
    tcase_add_test(tc, frames_allocate_nothing);
    tcase_add_test(tc, messages_allocate_nothing);
    tcase_add_test(tc, topics_allocate_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
