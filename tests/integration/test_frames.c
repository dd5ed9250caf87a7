/*
 * test_frames.c - RFC 6455 framing as the broker enforces it: the close
 * codes of PROTOCOL.md section 7 for every kind of bad client, the close
 * handshake, Ping/Pong, and the /echo endpoint. Each bad client is followed
 * by a healthy publisher and subscriber on the same broker, and the broker
 * must still exit 0 on SIGTERM at the end.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* After a protocol error the broker may stop parsing, so it may not see the
 * client's Close: a short close timeout keeps each bad client cheap. The
 * clients here read frame by frame with auto_pong off, so the broker sends
 * no heartbeat Pings that could come between. */
#define CLOSE_FAST "--close-timeout", "0.3", IT_NO_HEARTBEAT

/* The broker must answer what the client did with Close code; the client
 * then answers the Close and the broker must close TCP (at the latest when
 * its close timeout runs out). */
#define expect_rejected(c, code, what) expect_rejected_at(__FILE__, __LINE__, (c), (code), (what))
static void expect_rejected_at(const char *file, int line, it_conn_t *c, int code, const char *what)
{
    char d[400];
    it_ev_t ev;
    do
        ev = it_recv(c, IT_TIMEOUT);
    while (ev.type == IT_EV_PONG);
    if (ev.type != IT_EV_CLOSE || ev.close_code != code)
        it_fail_at(file, line, "%s: expected Close %d, got %s", what, code,
                   it_ev_describe(&ev, d, sizeof(d)));
    it_try_send(c, (uint8_t[]){0x88, 0x82, 0, 0, 0, 0, (uint8_t)(code >> 8), (uint8_t)code}, 8);
    ev = it_recv(c, 2000);
    if (ev.type != IT_EV_EOF)
        it_fail_at(file, line,
                   "%s: after the close handshake expected the broker to close TCP, "
                   "got %s",
                   what, it_ev_describe(&ev, d, sizeof(d)));
    int port = c->port;
    it_conn_free(c);
    /* The next client is served as if nothing happened. */
    it_check_alive_at(file, line, port);
}

static it_conn_t *client(int port)
{
    it_conn_t *c = it_ws_hello(port, NULL);
    c->auto_pong = false;
    return c;
}

START_TEST(unmasked_frame_1002)
{
    it_broker_t b;
    it_broker_start(&b, CLOSE_FAST);
    const char *ping = "{\"op\":\"ping\",\"id\":1}";
    it_conn_t *c = client(b.port);
    it_send_frame_ex(c, WS_OP_TEXT, true, 0, false, ping, strlen(ping));
    expect_rejected(c, 1002, "unmasked text frame");
    c = client(b.port);
    it_send_frame_ex(c, WS_OP_PING, true, 0, false, "x", 1);
    expect_rejected(c, 1002, "unmasked ping");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(reserved_opcode_1002)
{
    it_broker_t b;
    int ops[] = {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF};
    it_broker_start(&b, CLOSE_FAST);
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "reserved opcode 0x%X", ops[i]);
        it_conn_t *c = client(b.port);
        it_send_frame(c, ops[i], true, "x", 1);
        expect_rejected(c, 1002, what);
    }
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(rsv_bits_1002)
{
    it_broker_t b;
    int rsv[] = {0x40, 0x20, 0x10};
    const char *ping = "{\"op\":\"ping\"}";
    it_broker_start(&b, CLOSE_FAST);
    for (size_t i = 0; i < 3; i++) {
        char what[64];
        snprintf(what, sizeof(what), "text frame with RSV bit 0x%02X", rsv[i]);
        it_conn_t *c = client(b.port);
        it_send_frame_ex(c, WS_OP_TEXT, true, rsv[i], true, ping, strlen(ping));
        expect_rejected(c, 1002, what);
    }
    it_conn_t *c = client(b.port);
    it_send_frame_ex(c, WS_OP_PING, true, 0x40, true, "x", 1);
    expect_rejected(c, 1002, "ping with RSV1");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(bad_control_frames_1002)
{
    it_broker_t b;
    uint8_t big[126];
    memset(big, 'a', sizeof(big));
    it_broker_start(&b, CLOSE_FAST);
    it_conn_t *c = client(b.port);
    it_send_frame(c, WS_OP_PING, true, big, 126);
    expect_rejected(c, 1002, "ping with 126 bytes");
    c = client(b.port);
    it_send_frame(c, WS_OP_PONG, true, big, 126);
    expect_rejected(c, 1002, "pong with 126 bytes");
    c = client(b.port);
    big[0] = 0x03;
    big[1] = 0xe8;
    it_send_frame(c, WS_OP_CLOSE, true, big, 126);
    expect_rejected(c, 1002, "close with 126 bytes");
    c = client(b.port);
    it_send_frame(c, WS_OP_PING, false, "x", 1);
    expect_rejected(c, 1002, "fragmented ping (FIN clear)");
    c = client(b.port);
    it_send_frame(c, WS_OP_CLOSE, false, "\x03\xe8", 2);
    expect_rejected(c, 1002, "fragmented close (FIN clear)");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(bad_fragmentation_1002)
{
    it_broker_t b;
    it_broker_start(&b, CLOSE_FAST);
    it_conn_t *c = client(b.port);
    it_send_frame(c, WS_OP_CONT, true, "{}", 2);
    expect_rejected(c, 1002, "continuation without a start");
    c = client(b.port);
    it_send_frame(c, WS_OP_CONT, false, "{", 1);
    expect_rejected(c, 1002, "non-final continuation without a start");
    c = client(b.port);
    it_send_frame(c, WS_OP_TEXT, false, "{\"op\":", 6);
    it_send_frame(c, WS_OP_TEXT, true, "\"ping\"}", 7);
    expect_rejected(c, 1002, "text frame inside a fragmented text message");
    c = client(b.port);
    it_send_frame(c, WS_OP_TEXT, false, "{\"op\":", 6);
    it_send_frame(c, WS_OP_BINARY, true, "x", 1);
    expect_rejected(c, 1002, "binary frame inside a fragmented text message");
    c = client(b.port);
    /* A complete fragmented message, then a stray continuation. */
    it_send_frame(c, WS_OP_TEXT, false, "{\"op\":", 6);
    it_send_frame(c, WS_OP_CONT, true, "\"ping\"}", 7);
    it_expect_pong(c, NULL);
    it_send_frame(c, WS_OP_CONT, true, "x", 1);
    expect_rejected(c, 1002, "continuation after a finished message");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(bad_close_payload_1002)
{
    it_broker_t b;
    int codes[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535};
    it_broker_start(&b, CLOSE_FAST);
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char what[64];
        uint8_t payload[2] = {(uint8_t)(codes[i] >> 8), (uint8_t)codes[i]};
        snprintf(what, sizeof(what), "client Close with code %d", codes[i]);
        it_conn_t *c = client(b.port);
        it_send_frame(c, WS_OP_CLOSE, true, payload, 2);
        expect_rejected(c, 1002, what);
    }
    it_conn_t *c = client(b.port);
    it_send_frame(c, WS_OP_CLOSE, true, "\x03", 1);
    expect_rejected(c, 1002, "client Close with a 1-byte payload");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(binary_on_ws_1003)
{
    it_broker_t b;
    const char *ping = "{\"op\":\"ping\"}";
    it_broker_start(&b, CLOSE_FAST);
    it_conn_t *c = client(b.port);
    it_send_frame(c, WS_OP_BINARY, true, ping, strlen(ping));
    expect_rejected(c, 1003, "binary message on /ws");
    c = client(b.port);
    it_send_frame(c, WS_OP_BINARY, false, "{", 1);
    it_send_frame(c, WS_OP_CONT, true, "}", 1);
    expect_rejected(c, 1003, "fragmented binary message on /ws");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(invalid_utf8_1007)
{
    it_broker_t b;
    const char *bad[] = {"\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
                         "\"abc\xc3"};
    it_broker_start(&b, CLOSE_FAST);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "invalid UTF-8 text #%zu", i);
        it_conn_t *c = client(b.port);
        it_send_frame(c, WS_OP_TEXT, true, bad[i], strlen(bad[i]));
        expect_rejected(c, 1007, what);
    }
    /* A sequence split across fragments is fine when valid ... */
    const char *start = "{\"op\":\"ping\",\"id\":\"\xe2\x9c";
    it_conn_t *c = client(b.port);
    it_send_frame(c, WS_OP_TEXT, false, start, strlen(start));
    it_send_frame(c, WS_OP_CONT, true, "\x93\"}", 3);
    it_expect_pong(c, "\"\xe2\x9c\x93\"");
    /* ... and rejected when its continuation byte is wrong. */
    it_send_frame(c, WS_OP_TEXT, false, start, strlen(start));
    it_send_frame(c, WS_OP_CONT, true, "\x20\"}", 3);
    expect_rejected(c, 1007, "invalid UTF-8 split across fragments");
    c = client(b.port);
    it_send_frame(c, WS_OP_CLOSE, true, "\x03\xe8\xc3\x28", 4);
    expect_rejected(c, 1007, "close reason that is not UTF-8");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

/* A publish of exactly len bytes. */
static char *publish_of_len(size_t len)
{
    const char *head = "{\"op\":\"publish\",\"topic\":\"big.t\",\"id\":1,\"data\":\"";
    char *p = malloc(len + 1);
    size_t hl = strlen(head);
    memcpy(p, head, hl);
    memset(p + hl, 'x', len - hl - 2);
    memcpy(p + len - 2, "\"}", 2);
    p[len] = '\0';
    return p;
}

START_TEST(too_big_1009)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, CLOSE_FAST, "--max-message", "1024");
    it_conn_t *c = client(b.port);
    char *exact = publish_of_len(1024);
    it_send_text(c, exact);
    it_expect_ack(c, "1", &m);
    it_send_fragmented(c, WS_OP_TEXT, exact, 1024, 100, false);
    it_expect_ack(c, "1", &m);
    free(exact);

    char *over = publish_of_len(1025);
    it_send_text(c, over);
    expect_rejected(c, 1009, "a 1025-byte message with --max-message 1024");
    c = client(b.port);
    it_send_fragmented(c, WS_OP_TEXT, over, 1025, 300, false);
    expect_rejected(c, 1009, "a 1025-byte message in 300-byte fragments");
    free(over);

    /* Only a header announcing a huge frame: no need to wait for it. */
    c = client(b.port);
    uint8_t hdr[14] = {0x81, 0xff, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4};
    it_send_raw(c, hdr, sizeof(hdr));
    expect_rejected(c, 1009, "a frame header announcing 1 TiB");
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(close_handshake)
{
    it_broker_t b;
    it_broker_start(&b, CLOSE_FAST);
    struct {
        int code;
        const char *reason;
        int reply;
    } cases[] = {{1000, "bye", 1000},   {1000, NULL, 1000},  {0, NULL, 1000},
                 {1001, "going", 1001}, {3000, "app", 3000}, {4999, "", 4999}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        it_conn_t *c = client(b.port);
        snprintf(c->name, sizeof(c->name), "client Close %d", cases[i].code);
        it_send_close(c, cases[i].code, cases[i].reason);
        it_expect_close(c, cases[i].reply, NULL);
        it_expect_eof(c, 2000);
        it_conn_free(c);
    }
    /* A publish racing with a subscriber's Close. */
    it_conn_t *s = client(b.port);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s, "gone.t");
    it_send_close(s, 1000, NULL);
    it_publish(p, "gone.t", "1");
    int code = it_read_close(s, true, NULL, IT_TIMEOUT);
    IT_ASSERT(code == 1000, "Close 1000 from a subscriber: expected Close 1000 back, got %d", code);
    it_expect_eof(s, 2000);
    it_conn_free(s);
    it_conn_free(p);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(ping_pong)
{
    it_broker_t b;
    uint8_t payload[125];
    char d[400];
    for (int i = 0; i < 125; i++)
        payload[i] = (uint8_t)(i * 7);
    it_broker_start(&b, CLOSE_FAST);
    it_conn_t *c = client(b.port);
    size_t sizes[] = {0, 5, 125};
    for (size_t i = 0; i < 3; i++) {
        it_send_frame(c, WS_OP_PING, true, payload, sizes[i]);
        it_ev_t ev = it_recv(c, IT_TIMEOUT);
        IT_ASSERT(ev.type == IT_EV_PONG && ev.len == sizes[i] &&
                      memcmp(ev.data, payload, sizes[i]) == 0,
                  "Ping with %zu bytes: expected a Pong with the same payload, got %s", sizes[i],
                  it_ev_describe(&ev, d, sizeof(d)));
    }
    /* An unsolicited Pong needs no answer. */
    it_send_frame(c, WS_OP_PONG, true, "u", 1);
    it_sync(c);
    it_send_close(c, 1000, NULL);
    it_expect_close(c, 1000, NULL);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

/* Send msg on c (in frag-byte fragments if frag > 0) and expect it back. */
static void echo_roundtrip(it_conn_t *c, int opcode, const uint8_t *msg, size_t len, size_t frag)
{
    char d[400];
    if (frag > 0)
        it_send_fragmented(c, opcode, msg, len, frag, true);
    else
        it_send_frame(c, opcode, true, msg, len);
    for (;;) {
        it_ev_t ev = it_recv(c, 10000);
        if (ev.type == IT_EV_PONG)
            continue;
        IT_ASSERT(ev.type == (opcode == WS_OP_TEXT ? IT_EV_TEXT : IT_EV_BINARY) && ev.len == len &&
                      (len == 0 || memcmp(ev.data, msg, len) == 0),
                  "/echo of a %zu-byte %s message%s: got %s", len,
                  opcode == WS_OP_TEXT ? "text" : "binary", frag ? " (fragmented)" : "",
                  it_ev_describe(&ev, d, sizeof(d)));
        break;
    }
}

START_TEST(echo_endpoint)
{
    it_broker_t b;
    size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1048576};
    size_t maxlen = 1048576;
    uint8_t *text = malloc(maxlen), *bin = malloc(maxlen);
    for (size_t i = 0; i < maxlen; i++) {
        text[i] = (uint8_t)('a' + i % 26);
        bin[i] = (uint8_t)(i * 31 + (i >> 8));
    }
    it_broker_start(&b, CLOSE_FAST);
    it_conn_t *c = it_ws_open(b.port, "/echo");
    c->auto_pong = false;
    snprintf(c->name, sizeof(c->name), "/echo client");
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        echo_roundtrip(c, WS_OP_TEXT, text, sizes[i], 0);
        echo_roundtrip(c, WS_OP_BINARY, bin, sizes[i], 0);
    }
    echo_roundtrip(c, WS_OP_TEXT, (const uint8_t *)"h\xc3\xa9llo \xe2\x9c\x93", 10, 1);
    echo_roundtrip(c, WS_OP_TEXT, text, 3000, 1000);
    echo_roundtrip(c, WS_OP_BINARY, bin, 70000, 16384);
    echo_roundtrip(c, WS_OP_BINARY, bin, 5, 1);
    it_send_frame(c, WS_OP_PING, true, "e", 1);
    char d[400];
    it_ev_t ev = it_recv(c, IT_TIMEOUT);
    IT_ASSERT(ev.type == IT_EV_PONG && ev.len == 1 && ev.data[0] == 'e',
              "/echo: Ping 'e' expected Pong 'e', got %s", it_ev_describe(&ev, d, sizeof(d)));
    it_send_frame(c, WS_OP_TEXT, true, "\xff", 1);
    expect_rejected(c, 1007, "/echo: invalid UTF-8 text");
    c = it_ws_open(b.port, "/echo");
    it_send_frame(c, WS_OP_BINARY, true, bin, maxlen);
    ev = it_recv(c, 10000);
    IT_ASSERT(ev.type == IT_EV_BINARY && ev.len == maxlen, "/echo of 1 MiB: got %s",
              it_ev_describe(&ev, d, sizeof(d)));
    /* Header of a 1 MiB + 1 frame and the start of its payload. */
    uint8_t part[1024] = {0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0x01, 9, 9, 9, 9};
    it_send_raw(c, part, sizeof(part));
    expect_rejected(c, 1009, "/echo: 1 MiB + 1 byte with the default --max-message");
    free(text);
    free(bin);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(no_echo_404)
{
    it_broker_t b;
    int st;
    it_broker_start(&b, CLOSE_FAST, "--no-echo");
    it_conn_t *c = it_ws_try(b.port, "/echo", NULL, 0, 0, 0, &st, NULL);
    IT_ASSERT(c == NULL && st == 404, "--no-echo: upgrade to /echo expected 404, got %d", st);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

static Suite *frames_suite(void)
{
    Suite *s = suite_create("frames");
    TCase *tc = tcase_create("frames");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, unmasked_frame_1002);
    tcase_add_test(tc, reserved_opcode_1002);
    tcase_add_test(tc, rsv_bits_1002);
    tcase_add_test(tc, bad_control_frames_1002);
    tcase_add_test(tc, bad_fragmentation_1002);
    tcase_add_test(tc, bad_close_payload_1002);
    tcase_add_test(tc, binary_on_ws_1003);
    tcase_add_test(tc, invalid_utf8_1007);
    tcase_add_test(tc, too_big_1009);
    tcase_add_test(tc, close_handshake);
    tcase_add_test(tc, ping_pong);
    tcase_add_test(tc, echo_endpoint);
    tcase_add_test(tc, no_echo_404);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(frames_suite());
}
