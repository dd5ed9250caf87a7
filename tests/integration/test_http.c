/*
 * test_http.c - plain HTTP on the broker's port and the opening handshake
 * (PROTOCOL.md section 1): /healthz, /metrics, 404/400/431, upgrade errors,
 * subprotocol selection, handshake timeout, Origin checks, the connection
 * limit and the static web root.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

/* Send raw, expect status and the connection closed afterwards. */
#define expect_status_closed(port, raw, status)                                                    \
    expect_status_closed_at(__FILE__, __LINE__, (port), (raw), strlen(raw), (status))
static void expect_status_closed_at(const char *file, int line, int port, const char *raw,
                                    size_t len, int status)
{
    it_http_t r;
    int st = it_http_raw(port, raw, len, 0, 0, &r, IT_TIMEOUT);
    if (st != status)
        it_fail_at(file, line, "request '%.60s...': expected HTTP %d, got %d", raw, status, st);
    if (!r.closed)
        it_fail_at(file, line, "request '%.60s...': HTTP %d but the connection stayed open", raw,
                   status);
    it_http_free(&r);
}

START_TEST(healthz_ok)
{
    it_broker_t b;
    it_http_t r;
    it_broker_start(&b, NULL);
    int st = it_http_get(b.port, "/healthz", NULL, &r);
    IT_ASSERT(st == 200, "GET /healthz: expected 200, got %d", st);
    size_t n = r.body_len;
    while (n > 0 && (r.body[n - 1] == '\n' || r.body[n - 1] == '\r'))
        n--;
    IT_ASSERT(n == strlen("{\"status\":\"ok\"}") && memcmp(r.body, "{\"status\":\"ok\"}", n) == 0,
              "GET /healthz: expected body {\"status\":\"ok\"}, got '%s'", r.body);
    it_http_free(&r);
    it_broker_stop(&b);
}
END_TEST

/* One sample line "name value" or "name{...} value" must exist. */
static void expect_metric_line(const char *body, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = body; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, nl) == 0 && (p[nl] == ' ' || p[nl] == '{'))
            return;
    }
    it_fail("/metrics has no sample of %s:\n%s", name, body);
}

START_TEST(metrics_counters_move)
{
    it_broker_t b;
    it_http_t r;
    const char *names[] = {"wsbroker_connections_open", "wsbroker_connections_total",
                           "wsbroker_messages_published_total",
                           "wsbroker_messages_delivered_total"};
    it_broker_start(&b, NULL);
    int st = it_http_get(b.port, "/metrics", NULL, &r);
    IT_ASSERT(st == 200, "GET /metrics: expected 200, got %d", st);
    char ctype[128] = "";
    it_http_header(&r, "Content-Type", ctype, sizeof(ctype));
    IT_ASSERT(strncmp(ctype, "text/plain", 10) == 0,
              "GET /metrics: expected Content-Type text/plain (Prometheus text), got '%s'", ctype);
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        expect_metric_line(r.body, names[i]);
    it_http_free(&r);

    double open0 = it_metric(b.port, "wsbroker_connections_open");
    double total0 = it_metric(b.port, "wsbroker_connections_total");
    double pub0 = it_metric(b.port, "wsbroker_messages_published_total");
    double del0 = it_metric(b.port, "wsbroker_messages_delivered_total");

    it_conn_t *s1 = it_ws_hello(b.port, NULL);
    it_conn_t *s2 = it_ws_hello(b.port, NULL);
    it_conn_t *p = it_ws_hello(b.port, NULL);
    it_subscribe(s1, "m.t");
    it_subscribe(s2, "m.>");
    it_publish(p, "m.t", "1");
    it_publish(p, "m.t", "2");
    for (int i = 1; i <= 2; i++) {
        it_expect_message(s1, "m.t", (uint64_t)i, NULL);
        it_expect_message(s2, "m.t", (uint64_t)i, NULL);
    }
    double open1 = it_metric(b.port, "wsbroker_connections_open");
    double total1 = it_metric(b.port, "wsbroker_connections_total");
    double pub1 = it_metric(b.port, "wsbroker_messages_published_total");
    double del1 = it_metric(b.port, "wsbroker_messages_delivered_total");
    IT_ASSERT(open1 == open0 + 3, "connections_open: expected %g + 3 with 3 clients, got %g", open0,
              open1);
    IT_ASSERT(total1 >= total0 + 3, "connections_total: expected >= %g + 3, got %g", total0,
              total1);
    IT_ASSERT(pub1 == pub0 + 2, "messages_published_total: expected %g + 2, got %g", pub0, pub1);
    IT_ASSERT(del1 == del0 + 4,
              "messages_delivered_total: expected %g + 4 (2 messages x 2 "
              "subscribers), got %g",
              del0, del1);

    it_conn_free(s1);
    it_conn_free(s2);
    it_conn_free(p);
    double open2 = -1;
    for (int64_t end = it_now_ms() + 3000; it_now_ms() < end; it_sleep_ms(20)) {
        open2 = it_metric(b.port, "wsbroker_connections_open");
        if (open2 == open0)
            break;
    }
    IT_ASSERT(open2 == open0,
              "connections_open: expected back to %g after the clients left, got %g", open0, open2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(unknown_path_404)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    expect_status_closed(b.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    expect_status_closed(b.port, "GET /healthz/x HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    it_broker_stop(&b);
}
END_TEST

START_TEST(malformed_400)
{
    it_broker_t b;
    it_broker_start(&b, NULL);
    expect_status_closed(b.port, "GARBAGE\r\n\r\n", 400);
    expect_status_closed(b.port, "GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n", 400);
    expect_status_closed(b.port, "GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400);
    expect_status_closed(b.port, "GET /healthz HTTP/1.1\r\nX: a\001b\r\n\r\n", 400);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

/* A request head of total bytes: one big header; complete or not. */
static char *big_head(size_t total, bool complete)
{
    char *p = malloc(total + 1);
    const char *start = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ";
    size_t sl = strlen(start), tail = complete ? 4 : 0;
    memcpy(p, start, sl);
    memset(p + sl, 'a', total - sl - tail);
    memcpy(p + total - tail, "\r\n\r\n", tail);
    p[total] = '\0';
    return p;
}

START_TEST(head_over_8k_431)
{
    it_broker_t b;
    it_http_t r;
    it_broker_start(&b, NULL);

    char *ok = big_head(8000, true);
    int st = it_http_raw(b.port, ok, strlen(ok), 0, 0, &r, IT_TIMEOUT);
    IT_ASSERT(st == 200, "an 8000-byte request head: expected 200, got %d", st);
    it_http_free(&r);
    free(ok);

    char *complete = big_head(8300, true);
    expect_status_closed(b.port, complete, 431);
    free(complete);

    char *endless = big_head(8300, false);
    expect_status_closed(b.port, endless, 431);
    free(endless);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(upgrade_errors)
{
    it_broker_t b;
    it_http_t r;
    it_broker_start(&b, NULL);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         400);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: abc\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         400);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         400);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         400);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         400);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         400);

    const char *v8 = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n";
    int st = it_http_raw(b.port, v8, strlen(v8), 0, 0, &r, IT_TIMEOUT);
    IT_ASSERT(st == 426, "Sec-WebSocket-Version 8: expected 426, got %d", st);
    char v[32] = "";
    IT_ASSERT(it_http_header(&r, "Sec-WebSocket-Version", v, sizeof(v)) && strcmp(v, "13") == 0,
              "426 response must carry Sec-WebSocket-Version: 13, got '%s'", v);
    IT_ASSERT(r.closed, "426: the connection stayed open");
    it_http_free(&r);

    /* Token lists and case in Upgrade/Connection are fine. */
    const char *mixed = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
                        "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n";
    int fd = it_tcp_connect(b.port, 0);
    IT_ASSERT(fd >= 0, "connect failed");
    IT_ASSERT(it_tcp_send(fd, mixed, strlen(mixed), IT_TIMEOUT), "send failed");
    char resp[512];
    size_t got = 0;
    int64_t end = it_now_ms() + IT_TIMEOUT;
    while (got < 12 && it_now_ms() < end) {
        ssize_t n = read(fd, resp + got, sizeof(resp) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    resp[got] = '\0';
    IT_ASSERT(strncmp(resp, "HTTP/1.1 101", 12) == 0,
              "Connection: keep-alive, Upgrade and Upgrade: WebSocket: expected 101, got '%.40s'",
              resp);
    close(fd);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(upgrade_dribbled)
{
    it_broker_t b;
    int st;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_try(b.port, "/ws", NULL, 0, 1, 1, &st, NULL);
    IT_ASSERT(c != NULL, "request sent one byte at a time: expected 101, got %d", st);
    it_expect_op(c, MSG_S_HELLO, &m);
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(upgrade_root_path_and_early_frame)
{
    it_broker_t b;
    msg_server_t m;
    it_broker_start(&b, NULL);
    it_conn_t *c = it_ws_open(b.port, "/");
    it_expect_op(c, MSG_S_HELLO, &m);
    it_conn_free(c);

    /* A frame sent in the same segment as the request head. */
    char req[1024];
    uint8_t frame[64];
    it_conn_t tmp = {.rng = 12345};
    size_t fl = it_frame(&tmp, frame, WS_OP_TEXT, true, 0, true, "{\"op\":\"ping\",\"id\":1}",
                         strlen("{\"op\":\"ping\",\"id\":1}"));
    int n = snprintf(req, sizeof(req),
                     "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n");
    memcpy(req + n, frame, fl);
    int fd = it_tcp_connect(b.port, 0);
    IT_ASSERT(fd >= 0, "connect failed");
    IT_ASSERT(it_tcp_send(fd, req, (size_t)n + fl, IT_TIMEOUT), "send failed");
    /* Read the 101 head, then the frames, with a client built on the fd. */
    char head[2048];
    size_t got = 0;
    char *end = NULL;
    int64_t deadline = it_now_ms() + IT_TIMEOUT;
    while (end == NULL && got < sizeof(head) - 1 && it_now_ms() < deadline) {
        ssize_t r = read(fd, head + got, sizeof(head) - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        head[got] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    IT_ASSERT(end != NULL && strncmp(head, "HTTP/1.1 101", 12) == 0, "expected 101, got '%.40s'",
              head);
    it_conn_t *c2 = it_conn_wrap(fd, b.port, end + 4, got - (size_t)(end + 4 - head));
    it_expect_op(c2, MSG_S_HELLO, &m);
    it_expect_pong(c2, "1");
    it_conn_free(c2);
    it_broker_stop(&b);
}
END_TEST

START_TEST(subprotocol_selected)
{
    it_broker_t b;
    it_http_t r;
    int st;
    char v[64];
    it_broker_start(&b, NULL);

    it_conn_t *c =
        it_ws_try(b.port, "/ws", "Sec-WebSocket-Protocol: chat, wsbroker.v1\r\n", 0, 0, 0, &st, &r);
    IT_ASSERT(c != NULL, "offering wsbroker.v1: expected 101, got %d", st);
    IT_ASSERT(it_http_header(&r, "Sec-WebSocket-Protocol", v, sizeof(v)) &&
                  strcmp(v, "wsbroker.v1") == 0,
              "offering 'chat, wsbroker.v1': expected Sec-WebSocket-Protocol: wsbroker.v1, got "
              "'%s'",
              it_http_header(&r, "Sec-WebSocket-Protocol", v, sizeof(v)) ? v : "(none)");
    it_http_free(&r);
    it_conn_free(c);

    c = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, &r);
    IT_ASSERT(c != NULL, "no subprotocol: expected 101, got %d", st);
    IT_ASSERT(!it_http_header(&r, "Sec-WebSocket-Protocol", v, sizeof(v)),
              "no subprotocol offered, yet the broker selected '%s'", v);
    it_http_free(&r);
    it_conn_free(c);

    c = it_ws_try(b.port, "/ws", "Sec-WebSocket-Protocol: chat\r\n", 0, 0, 0, &st, &r);
    IT_ASSERT(c != NULL, "offering only 'chat': expected 101 (no subprotocol required), got %d",
              st);
    IT_ASSERT(!it_http_header(&r, "Sec-WebSocket-Protocol", v, sizeof(v)),
              "offering only 'chat', yet the broker selected '%s'", v);
    it_http_free(&r);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

/* Connect, send prefix (may be empty), then wait for the broker to close.
 * Returns the ms until EOF; a response before it must be 408. */
static int64_t wait_closed_after(int port, const char *prefix, int dribble_ms)
{
    int fd = it_tcp_connect(port, 0);
    IT_ASSERT(fd >= 0, "connect failed");
    int64_t t0 = it_now_ms();
    if (*prefix != '\0')
        IT_ASSERT(it_tcp_send(fd, prefix, strlen(prefix), IT_TIMEOUT), "send failed");
    char buf[1024];
    size_t got = 0;
    int64_t deadline = t0 + 4000;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - it_now_ms());
        if (left <= 0)
            it_fail("a client that never finishes its request head was not closed within 4 s "
                    "(--handshake-timeout 0.5)");
        int wait = dribble_ms > 0 && dribble_ms < left ? dribble_ms : left;
        if (poll(&pfd, 1, wait) == 0) {
            if (dribble_ms > 0 && send(fd, "X", 1, MSG_NOSIGNAL) != 1)
                break;
            continue;
        }
        ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int64_t took = it_now_ms() - t0;
    buf[got] = '\0';
    IT_ASSERT(got == 0 || strncmp(buf, "HTTP/1.1 408", 12) == 0,
              "handshake timeout: expected 408 or a bare close, got '%.60s'", buf);
    close(fd);
    return took;
}

START_TEST(handshake_timeout)
{
    it_broker_t b;
    it_broker_start(&b, "--handshake-timeout", "0.5");
    int64_t t = wait_closed_after(b.port, "GET /ws HTTP/1.1\r\nHost: x\r\n", 0);
    IT_ASSERT(t >= 300 && t <= 2500, "partial head: closed after %lld ms, expected about 500",
              (long long)t);
    t = wait_closed_after(b.port, "", 0);
    IT_ASSERT(t >= 300 && t <= 2500, "silent client: closed after %lld ms, expected about 500",
              (long long)t);
    t = wait_closed_after(b.port, "GET /ws HTTP/1.1\r\nX-Slow: ", 100);
    IT_ASSERT(t >= 300 && t <= 2500,
              "client sending one header byte per 100 ms: closed after %lld ms, expected about 500",
              (long long)t);
    /* A client that completes in time is unaffected. */
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_sleep_ms(800);
    it_sync(c);
    it_conn_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(allowed_origins)
{
    it_broker_t b;
    int st;
    it_broker_start(&b, "--allowed-origins", "http://a.example");
    it_conn_t *c = it_ws_try(b.port, "/ws", "Origin: http://b.example\r\n", 0, 0, 0, &st, NULL);
    IT_ASSERT(c == NULL && st == 403, "Origin http://b.example: expected 403, got %d", st);
    c = it_ws_try(b.port, "/ws", "Origin: http://a.example.evil\r\n", 0, 0, 0, &st, NULL);
    IT_ASSERT(c == NULL && st == 403, "Origin http://a.example.evil: expected 403, got %d", st);
    c = it_ws_try(b.port, "/ws", "Origin: http://a.example\r\n", 0, 0, 0, &st, NULL);
    IT_ASSERT(c != NULL, "Origin http://a.example: expected 101, got %d", st);
    msg_server_t m;
    it_expect_op(c, MSG_S_HELLO, &m);
    it_conn_free(c);
    expect_status_closed(b.port,
                         "GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: http://c.example\r\n"
                         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         403);
    it_broker_stop(&b);
}
END_TEST

START_TEST(max_connections)
{
    it_broker_t b;
    int st;
    it_http_t r;
    it_broker_start(&b, "--max-connections", "2");
    /* Every TCP connection counts, the start-up check's /healthz ones too
     * until the broker has seen them close: wait for the two slots. */
    it_conn_t *cs[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        for (int64_t end = it_now_ms() + 3000; cs[i] == NULL; it_sleep_ms(10)) {
            cs[i] = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, NULL);
            IT_ASSERT(cs[i] != NULL || (st == 503 && it_now_ms() < end),
                      "connection %d with --max-connections 2: %d", i + 1, st);
        }
        msg_server_t hello;
        it_expect_op(cs[i], MSG_S_HELLO, &hello);
    }
    it_conn_t *c1 = cs[0], *c2 = cs[1];
    it_conn_t *c3 = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, &r);
    IT_ASSERT(c3 == NULL && st == 503,
              "third connection with --max-connections 2: expected 503, "
              "got %d",
              st);
    IT_ASSERT(r.closed, "503: the connection stayed open");
    it_http_free(&r);
    it_sync(c1);
    it_sync(c2);

    /* A slot freed by a leaving client becomes available again. */
    it_conn_free(c1);
    c3 = NULL;
    for (int64_t end = it_now_ms() + 3000; c3 == NULL && it_now_ms() < end; it_sleep_ms(20)) {
        c3 = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, NULL);
        IT_ASSERT(c3 != NULL || st == 503, "expected 101 or 503 while a slot frees, got %d", st);
    }
    IT_ASSERT(c3 != NULL, "after one of 2 clients left, a new one still got 503 for 3 s");
    msg_server_t m;
    it_expect_op(c3, MSG_S_HELLO, &m);
    it_conn_free(c2);
    it_conn_free(c3);
    it_broker_stop(&b);
}
END_TEST

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    IT_ASSERT(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

START_TEST(web_root)
{
    it_broker_t b;
    it_http_t r;
    char dir[] = "/tmp/wsbroker-it-web-XXXXXX";
    IT_ASSERT(mkdtemp(dir) != NULL, "mkdtemp failed");
    write_file(dir, "index.html", "<!doctype html><h1>wsbroker demo</h1>\n");
    write_file(dir, "app.js", "console.log('hi');\n");
    it_broker_start(&b, "--web-root", dir);

    int st = it_http_get(b.port, "/", NULL, &r);
    IT_ASSERT(st == 200 && strcmp(r.body, "<!doctype html><h1>wsbroker demo</h1>\n") == 0,
              "GET / with a web root: expected 200 and index.html, got %d '%s'", st,
              r.body ? r.body : "");
    it_http_free(&r);
    st = it_http_get(b.port, "/app.js", NULL, &r);
    IT_ASSERT(st == 200 && strcmp(r.body, "console.log('hi');\n") == 0,
              "GET /app.js: expected 200 and the file, got %d '%s'", st, r.body ? r.body : "");
    it_http_free(&r);
    st = it_http_get(b.port, "/missing.js", NULL, &r);
    IT_ASSERT(st == 404, "GET /missing.js: expected 404, got %d", st);
    it_http_free(&r);
    st = it_http_get(b.port, "/../../../../etc/passwd", NULL, &r);
    IT_ASSERT(st != 200, "GET /../../../../etc/passwd must not be served, got 200");
    it_http_free(&r);
    /* The WebSocket endpoints stay where they are. */
    it_conn_t *c = it_ws_open(b.port, "/");
    msg_server_t m;
    it_expect_op(c, MSG_S_HELLO, &m);
    it_conn_free(c);
    it_broker_stop(&b);
    char path[600];
    snprintf(path, sizeof(path), "%s/index.html", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/app.js", dir);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, healthz_ok);
    tcase_add_test(tc, metrics_counters_move);
    tcase_add_test(tc, unknown_path_404);
    tcase_add_test(tc, malformed_400);
    tcase_add_test(tc, head_over_8k_431);
    tcase_add_test(tc, upgrade_errors);
    tcase_add_test(tc, upgrade_dribbled);
    tcase_add_test(tc, upgrade_root_path_and_early_frame);
    tcase_add_test(tc, subprotocol_selected);
    tcase_add_test(tc, handshake_timeout);
    tcase_add_test(tc, allowed_origins);
    tcase_add_test(tc, max_connections);
    tcase_add_test(tc, web_root);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return it_run_suite(http_suite());
}
