/*
 * test_hardening.c - limits that hold against a hostile or unlucky client:
 * the connection limit counts every TCP connection and refuses past it
 * without holding memory, descriptor exhaustion pauses accepting instead of
 * spinning, half-open connections stay small, files of the web root never
 * block a worker, incomplete messages time out, browsers from other origins
 * are refused by default, close codes outside the table are counted, and a
 * worker that cannot keep up holds publishers back instead of queueing
 * without bound.
 */
#define _GNU_SOURCE /* prlimit */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1 /* slower, and the allocator's quarantine hides RSS trends */
#else
#define SANITIZED 0
#endif

/* ---- helpers ---- */

/* Read from fd until timeout_ms passes or the peer closes; returns the
 * bytes read (NUL-terminated in buf) and sets *eof. */
static size_t read_some(int fd, char *buf, size_t cap, int timeout_ms, bool *eof)
{
    size_t n = 0;
    *eof = false;
    int64_t end = it_now_ms() + timeout_ms;
    while (n + 1 < cap) {
        int left = (int)(end - it_now_ms());
        if (left <= 0)
            break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            break;
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0) {
            *eof = true;
            break;
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

/* VmRSS of pid, in KiB. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    IT_ASSERT(f != NULL, "cannot read %s", path);
    long kib = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    IT_ASSERT(kib > 0, "no VmRSS for pid %d", (int)pid);
    return kib;
}

/* Descriptors open in pid. */
static int fd_count(pid_t pid)
{
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "ls /proc/%d/fd | wc -l", (int)pid);
    FILE *p = popen(cmd, "r");
    IT_ASSERT(p != NULL, "popen failed");
    int n = -1;
    IT_ASSERT(fscanf(p, "%d", &n) == 1, "cannot count descriptors of %d", (int)pid);
    pclose(p);
    return n;
}

/* Room for many sockets in this test process (CI runs as root). */
static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur >= want)
        return;
    IT_ASSERT(rl.rlim_max >= want, "the hard descriptor limit (%lu) is below %lu",
              (unsigned long)rl.rlim_max, (unsigned long)want);
    rl.rlim_cur = want;
    IT_ASSERT(setrlimit(RLIMIT_NOFILE, &rl) == 0, "cannot raise the descriptor limit to %lu",
              (unsigned long)want);
}

/* The worker id of a /ws client, from the hello's "client" ("<worker>-<n>"). */
static int worker_of(const msg_server_t *hello)
{
    return atoi(hello->client);
}

/* Lines of the broker's log containing text. */
static int log_count(const it_broker_t *b, const char *text)
{
    static char log[1 << 20];
    it_broker_log(b, log, sizeof(log));
    int n = 0;
    for (const char *p = log; (p = strstr(p, text)) != NULL; p++)
        n++;
    return n;
}

/* ---- connection limit and descriptors ---- */

START_TEST(limit_counts_every_tcp_connection)
{
    /* Six clients that never finish their request hold all six slots; two
     * hundred more are answered 503 at once and closed. */
    it_broker_t b;
    raise_nofile(4096);
    it_broker_start(&b, "--max-connections", "6", "--handshake-timeout", "3", "--log-level",
                    "debug");
    /* The start-up check's /healthz connections must be gone first. */
    int seen = log_count(&b, "event=accept ");
    for (int64_t end = it_now_ms() + 3000; log_count(&b, "event=close") < seen; it_sleep_ms(10))
        IT_ASSERT(it_now_ms() < end, "the /healthz connections were not closed");
    int hold[6];
    for (int i = 0; i < 6; i++) {
        hold[i] = it_tcp_connect(b.port, 0);
        IT_ASSERT(it_tcp_send(hold[i], "G", 1, 1000), "send failed");
    }
    /* Each worker accepts from its own queue: wait until all six are in. */
    for (int64_t end = it_now_ms() + 3000; log_count(&b, "event=accept ") < seen + 6;
         it_sleep_ms(10))
        IT_ASSERT(it_now_ms() < end, "the six connections were not accepted");
    for (int i = 0; i < 200; i++) {
        int fd = it_tcp_connect(b.port, 0);
        IT_ASSERT(it_tcp_send(fd, "G", 1, 1000) || true, "unreachable");
        char buf[512];
        bool eof;
        read_some(fd, buf, sizeof(buf), 2000, &eof);
        IT_ASSERT(strncmp(buf, "HTTP/1.1 503", 12) == 0 && strstr(buf, "connection limit"),
                  "connection %d past the limit: expected a 503, got '%.60s'", i, buf);
        IT_ASSERT(eof, "connection %d past the limit: not closed after the 503", i);
        close(fd);
    }
    /* The half-open ones still get their 408 at the handshake timeout. */
    for (int i = 0; i < 6; i++) {
        char buf[512];
        bool eof;
        read_some(hold[i], buf, sizeof(buf), 4000, &eof);
        IT_ASSERT(strncmp(buf, "HTTP/1.1 408", 12) == 0, "half-open client %d: got '%.40s'", i,
                  buf);
        close(hold[i]);
    }
    /* Their slots free up as the broker sees them go. */
    double refused = -1;
    for (int64_t end = it_now_ms() + 3000; refused < 0 && it_now_ms() < end; it_sleep_ms(20)) {
        it_http_t r;
        if (it_http_get(b.port, "/metrics", NULL, &r) == 200) {
            const char *p = strstr(r.body, "\nwsbroker_connections_refused_total ");
            refused = p ? atof(p + strlen("\nwsbroker_connections_refused_total ")) : 0;
        }
        it_http_free(&r);
    }
    IT_ASSERT(refused >= 200, "refusals not counted in /metrics (%g)", refused);
    it_check_alive(b.port);
    it_broker_stop(&b);
}
END_TEST

START_TEST(half_open_connections_stay_small)
{
    /* A connection that sent one byte of its request holds a small head
     * buffer, not the 8 KiB maximum. */
    enum { N = 1000 };
    it_broker_t b;
    raise_nofile(4096);
    it_broker_start(&b, "--workers", "1", "--handshake-timeout", "30");
    static int fds[N];
    /* Warm up allocator arenas with a first batch, measure the second. */
    for (int i = 0; i < 50; i++) {
        fds[i] = it_tcp_connect(b.port, 0);
        it_tcp_send(fds[i], "G", 1, 1000);
    }
    it_sleep_ms(200);
    long before = rss_kib(b.pid);
    for (int i = 50; i < N; i++) {
        fds[i] = it_tcp_connect(b.port, 0);
        IT_ASSERT(it_tcp_send(fds[i], "G", 1, 1000), "send failed");
    }
    for (int64_t end = it_now_ms() + 5000; it_now_ms() < end; it_sleep_ms(50))
        if (it_metric(b.port, "wsbroker_tcp_connections_open") >= N + 1)
            break;
    it_sleep_ms(200);
    long after = rss_kib(b.pid);
    double per = (double)(after - before) * 1024.0 / (N - 50);
    printf("half-open connections: RSS %ld -> %ld KiB, %.0f bytes each\n", before, after, per);
    IT_ASSERT(SANITIZED || per < 2048,
              "each half-open connection costs %.0f bytes of RSS (limit 2048)", per);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    it_broker_stop(&b);
}
END_TEST

START_TEST(descriptor_exhaustion_pauses_accepting)
{
    /* The broker runs out of descriptors (its limit is lowered under it):
     * it neither spins nor stops serving its clients, and accepts again
     * once descriptors are free. */
    enum { FLOOD = 150 };
    it_broker_t b;
    raise_nofile(4096);
    it_broker_start(&b, "--workers", "2", "--ping-interval", "0");
    it_conn_t *on[2] = {NULL, NULL};
    it_conn_t *spare[16];
    int nspare = 0;
    while ((on[0] == NULL || on[1] == NULL) && nspare < 16) {
        msg_server_t hello;
        it_conn_t *c = it_ws_hello_at(__FILE__, __LINE__, b.port, 0, &hello);
        int w = worker_of(&hello);
        if (on[w] == NULL)
            on[w] = c;
        else
            spare[nspare++] = c;
    }
    IT_ASSERT(on[0] != NULL && on[1] != NULL, "no client on each of the two workers");
    int open_now = fd_count(b.pid);
    struct rlimit old;
    IT_ASSERT(prlimit(b.pid, RLIMIT_NOFILE, NULL, &old) == 0, "prlimit: %s", strerror(errno));
    /* Only the soft limit: raising it back needs no privilege. */
    struct rlimit low = {(rlim_t)open_now + 6, old.rlim_max};
    IT_ASSERT(prlimit(b.pid, RLIMIT_NOFILE, &low, NULL) == 0, "prlimit: %s", strerror(errno));
    static int fds[FLOOD];
    /* Each sends a byte: the listener accepts only connections with data
     * (TCP_DEFER_ACCEPT), and the kernel would hold silent ones a second. */
    for (int i = 0; i < FLOOD; i++) {
        fds[i] = it_tcp_connect(b.port, 0);
        IT_ASSERT(fds[i] >= 0 && it_tcp_send(fds[i], "G", 1, 1000), "connect/send failed");
    }
    /* Both workers keep answering their clients while out of descriptors. */
    for (int round = 0; round < 10; round++) {
        for (int w = 0; w < 2; w++)
            it_sync(on[w]);
        it_sleep_ms(100);
    }
    int paused_lines = log_count(&b, "event=accept_paused");
    int failed_lines = log_count(&b, "event=accept_failed");
    printf("out of descriptors for 1 s: %d accept_paused lines, %d accept_failed lines\n",
           paused_lines, failed_lines);
    IT_ASSERT(paused_lines >= 1, "the broker never reported that accepting paused");
    IT_ASSERT(paused_lines + failed_lines < 40, "the log is flooded: %d accept lines in about 1 s",
              paused_lines + failed_lines);
    for (int i = 0; i < FLOOD; i++)
        close(fds[i]);
    IT_ASSERT(prlimit(b.pid, RLIMIT_NOFILE, &old, NULL) == 0, "prlimit: %s", strerror(errno));
    /* Service recovers: new clients are accepted again. */
    int64_t end = it_now_ms() + 5000;
    int st = 0;
    it_conn_t *c = NULL;
    while (c == NULL && it_now_ms() < end) {
        c = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, NULL);
        if (c == NULL)
            it_sleep_ms(50);
    }
    IT_ASSERT(c != NULL, "no new connection accepted after descriptors were freed (%d)", st);
    it_conn_free(c);
    it_check_alive(b.port);
    IT_ASSERT(it_metric(b.port, "wsbroker_accept_pauses_total") >= 1, "pauses not counted");
    for (int w = 0; w < 2; w++)
        it_conn_free(on[w]);
    for (int i = 0; i < nspare; i++)
        it_conn_free(spare[i]);
    it_broker_stop(&b);
}
END_TEST

START_TEST(descriptor_limit_at_start_sets_the_connection_limit)
{
    /* Started with a low descriptor limit, the broker derives its connection
     * limit from it and answers every connection past it with a 503: no
     * client is left hanging in the accept queue. */
    struct rlimit rl = {80, 80};
    IT_ASSERT(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
    it_broker_t b;
    it_broker_start(&b, "--workers", "2");
    static char log[1 << 16];
    /* The port answers as soon as a worker listens; the start line comes
     * once all of them do (later still under a sanitizer). */
    const char *p = NULL;
    for (int64_t end = it_now_ms() + IT_TIMEOUT; p == NULL && it_now_ms() < end;) {
        it_broker_log(&b, log, sizeof(log));
        p = strstr(log, "max_connections=");
        if (p == NULL)
            it_sleep_ms(20);
    }
    IT_ASSERT(p != NULL, "the start line does not say max_connections");
    int limit = atoi(p + strlen("max_connections="));
    IT_ASSERT(limit > 5 && limit < 80, "max_connections=%d with 80 descriptors", limit);
    it_conn_t *held[80];
    int n = 0, refused = 0;
    for (int i = 0; i < limit + 5; i++) {
        int st;
        it_http_t r;
        it_conn_t *c = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, &r);
        if (c != NULL) {
            held[n++] = c;
        } else {
            IT_ASSERT(st == 503, "connection %d: expected 101 or 503, got %d", i, st);
            refused++;
        }
        if (c == NULL)
            it_http_free(&r);
    }
    IT_ASSERT(n == limit && refused == 5, "limit %d: %d upgrades and %d refusals", limit, n,
              refused);
    for (int i = 0; i < n; i++)
        it_conn_free(held[i]);
    it_broker_stop(&b);
}
END_TEST

/* ---- web root ---- */

START_TEST(web_root_fifo_and_big_file)
{
    char dir[] = "/tmp/wsbroker-it-web-XXXXXX";
    IT_ASSERT(mkdtemp(dir) != NULL, "mkdtemp");
    char path[512];
    snprintf(path, sizeof(path), "%s/pipe.html", dir);
    IT_ASSERT(mkfifo(path, 0600) == 0, "mkfifo: %s", strerror(errno));
    /* 20 MiB: bigger than anything a worker should read in one go. */
    size_t big = 20u << 20;
    char *data = malloc(big);
    IT_ASSERT(data != NULL, "malloc");
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + (i * 7 + i / 4099) % 26);
    snprintf(path, sizeof(path), "%s/big.txt", dir);
    FILE *f = fopen(path, "w");
    IT_ASSERT(f != NULL && fwrite(data, 1, big, f) == big, "cannot write %s", path);
    fclose(f);

    it_broker_t b;
    it_broker_start(&b, "--workers", "1", "--web-root", dir);
    it_http_t r;
    int st = it_http_get(b.port, "/pipe.html", NULL, &r);
    IT_ASSERT(st == 404, "a FIFO in the web root: expected 404, got %d", st);
    it_http_free(&r);
    st = it_http_get(b.port, "/healthz", NULL, &r);
    IT_ASSERT(st == 200, "/healthz after the FIFO request: %d", st);
    it_http_free(&r);
    st = it_http_get(b.port, "/big.txt", NULL, &r);
    IT_ASSERT(st == 200 && r.body_len == big && memcmp(r.body, data, big) == 0,
              "20 MiB file: status %d, %zu bytes, content %s", st, r.body_len,
              r.body_len == big && memcmp(r.body, data, big) == 0 ? "equal" : "different");
    it_http_free(&r);
    it_check_alive(b.port);
    it_broker_stop(&b);
    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    IT_ASSERT(system(path) == 0, "cleanup");
    free(data);
}
END_TEST

/* ---- incomplete messages ---- */

START_TEST(incomplete_message_times_out)
{
    it_broker_t b;
    it_broker_start(&b, "--message-timeout", "0.5");
    /* A fragmented message whose last fragment never comes. */
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_frame(c, WS_OP_TEXT, false, "{\"op\":", 6);
    int64_t t0 = it_now_ms();
    it_expect_close(c, 1008, "message timeout");
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(took < 2500, "closed after %lld ms", (long long)took);
    it_conn_free(c);

    /* One frame whose payload is trickled in: progress is not completion. */
    c = it_ws_hello(b.port, NULL);
    uint8_t frame[128];
    const char *msg = "{\"op\":\"ping\",\"id\":1}";
    size_t n = it_frame(c, frame, WS_OP_TEXT, true, 0, true, msg, strlen(msg));
    for (size_t i = 0; i + 1 < n; i++) {
        if (!it_try_send(c, frame + i, 1))
            break;
        it_sleep_ms(100);
        if (i > 12)
            break;
    }
    it_expect_close(c, 1008, "message timeout");
    it_conn_free(c);

    /* A message completed in time is fine, however it was split. */
    c = it_ws_hello(b.port, NULL);
    n = it_frame(c, frame, WS_OP_TEXT, true, 0, true, msg, strlen(msg));
    it_send_pieces(c, frame, n, 4, 20);
    it_expect_pong(c, "1");
    it_conn_free(c);
    IT_ASSERT(it_metric(b.port, "wsbroker_message_timeouts_total") == 2, "timeouts not counted");
    it_broker_stop(&b);
}
END_TEST

/* ---- Origin ---- */

static int upgrade_status(int port, const char *host, const char *origin_line)
{
    char req[1024];
    snprintf(req, sizeof(req),
             "GET /ws HTTP/1.1\r\nHost: %s\r\n%sUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
             host, origin_line);
    it_http_t r;
    int st = it_http_raw(port, req, strlen(req), 0, 0, &r, 3000);
    it_http_free(&r);
    return st;
}

START_TEST(origin_same_origin_by_default)
{
    it_broker_t b;
    it_broker_start(&b, "--workers", "1");
    char host[64], line[128];
    snprintf(host, sizeof(host), "127.0.0.1:%d", b.port);
    IT_ASSERT(upgrade_status(b.port, host, "") == 101, "no Origin (not a browser): refused");
    snprintf(line, sizeof(line), "Origin: http://127.0.0.1:%d\r\n", b.port);
    IT_ASSERT(upgrade_status(b.port, host, line) == 101, "same origin refused");
    snprintf(line, sizeof(line), "Origin: HTTP://127.0.0.1:%d\r\n", b.port);
    IT_ASSERT(upgrade_status(b.port, host, line) == 101, "same origin, other case, refused");
    IT_ASSERT(upgrade_status(b.port, "broker.example", "Origin: https://broker.example\r\n") == 101,
              "https origin behind a TLS proxy (Host without port) refused");
    IT_ASSERT(upgrade_status(b.port, "broker.example:80", "Origin: http://broker.example\r\n") ==
                  101,
              "default port spelled out in Host refused");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: http://evil.example\r\n") == 403,
              "a page of another site may connect by default");
    /* Pages from this machine are not cross-site attackers. */
    snprintf(line, sizeof(line), "Origin: http://127.0.0.1:%d\r\n", b.port + 1);
    IT_ASSERT(upgrade_status(b.port, host, line) == 101, "a local page on another port refused");
    IT_ASSERT(upgrade_status(b.port, "broker.example", "Origin: http://localhost:5173\r\n") == 101,
              "a localhost page refused");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: http://127.0.0.1.evil.example\r\n") == 403,
              "a host merely starting with 127. accepted");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: http://localhost.evil.example\r\n") == 403,
              "a host merely starting with localhost accepted");
    IT_ASSERT(upgrade_status(b.port, "broker.example", "Origin: https://broker.example:8443\r\n") ==
                  403,
              "another port of the broker's host accepted");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: \r\n") == 403,
              "an empty Origin skips the check");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: null\r\n") == 403, "Origin null accepted");
    snprintf(line, sizeof(line), "Origin: http://127.0.0.1:%d/path\r\n", b.port);
    IT_ASSERT(upgrade_status(b.port, host, line) == 403, "an Origin with a path accepted");
    IT_ASSERT(log_count(&b, "event=origin_refused") >= 1, "refusals not logged");
    it_broker_stop(&b);

    it_broker_start(&b, "--workers", "1", "--allowed-origins", "https://app.example");
    snprintf(host, sizeof(host), "127.0.0.1:%d", b.port);
    IT_ASSERT(upgrade_status(b.port, host, "Origin: https://app.example\r\n") == 101,
              "listed origin refused");
    snprintf(line, sizeof(line), "Origin: http://127.0.0.1:%d\r\n", b.port);
    IT_ASSERT(upgrade_status(b.port, host, line) == 101, "same origin refused with a list");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: https://other.example\r\n") == 403,
              "unlisted origin accepted");
    it_broker_stop(&b);

    it_broker_start(&b, "--workers", "1", "--allowed-origins", "*");
    snprintf(host, sizeof(host), "127.0.0.1:%d", b.port);
    IT_ASSERT(upgrade_status(b.port, host, "Origin: https://any.example\r\n") == 101,
              "'*' refused an origin");
    IT_ASSERT(upgrade_status(b.port, host, "Origin: null\r\n") == 101, "'*' refused null");
    it_broker_stop(&b);
}
END_TEST

/* ---- metrics ---- */

START_TEST(close_codes_outside_the_table_are_counted)
{
    it_broker_t b;
    it_broker_start(&b, "--workers", "1");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    it_send_close(c, 4000, "application code");
    it_expect_close(c, 4000, NULL);
    it_conn_free(c);
    double other = -1;
    for (int64_t end = it_now_ms() + 2000; it_now_ms() < end; it_sleep_ms(20)) {
        it_http_t r;
        IT_ASSERT(it_http_get(b.port, "/metrics", NULL, &r) == 200, "/metrics");
        const char *p = strstr(r.body, "wsbroker_close_frames_received_total{code=\"other\"} ");
        other = p ? atof(p + strlen("wsbroker_close_frames_received_total{code=\"other\"} ")) : 0;
        const char *q = strstr(r.body, "wsbroker_close_frames_sent_total{code=\"other\"} ");
        double sent = q ? atof(q + strlen("wsbroker_close_frames_sent_total{code=\"other\"} ")) : 0;
        it_http_free(&r);
        if (other == 1 && sent == 1)
            break;
    }
    IT_ASSERT(other == 1, "close code 4000 received: 'other' bucket says %g", other);
    it_broker_stop(&b);
}
END_TEST

/* ---- cross-worker backpressure ---- */

START_TEST(full_inbox_holds_publishers_back)
{
    /* Worker 1 fans every message out to many subscribers and cannot keep
     * up with a publisher on worker 0 that sends without ids (so no reply
     * backlog slows it down). The inbox between them stays bounded: the
     * broker holds the publisher back and its memory stays flat, no
     * publish is lost, and a subscriber that reads gets every message in
     * order. */
    enum { FANS = 300, BATCH = 100, MSGS = SANITIZED ? 200000 : 1000000 };
    raise_nofile(8192);
    it_broker_t b;
    it_broker_start(&b, "--workers", "2", "--slow-consumer", "drop", "--max-backlog", "256k",
                    "--ping-interval", "0");
    it_conn_t *pub = NULL, *reader = NULL;
    static it_conn_t *fans[FANS], *others[4 * FANS];
    int nfans = 0, nothers = 0;
    while (pub == NULL || reader == NULL || nfans < FANS) {
        msg_server_t hello;
        it_conn_t *c = it_ws_hello_at(__FILE__, __LINE__, b.port, 4096, &hello);
        if (worker_of(&hello) == 0 && pub == NULL) {
            pub = c;
        } else if (worker_of(&hello) == 1 && reader == NULL) {
            it_conn_free(c); /* the reader keeps a normal receive buffer */
            do {
                if (reader != NULL)
                    others[nothers++] = reader;
                reader = it_ws_hello_at(__FILE__, __LINE__, b.port, 0, &hello);
            } while (worker_of(&hello) != 1 && nothers < 4 * FANS);
            it_subscribe(reader, "flood");
        } else if (worker_of(&hello) == 1) {
            fans[nfans++] = c;
            it_send_json(c, "{\"op\":\"subscribe\",\"topic\":\"flood\"}");
        } else {
            IT_ASSERT(nothers < 4 * FANS, "connections do not reach worker 1");
            others[nothers++] = c;
        }
    }
    it_sync(fans[nfans - 1]);
    long before = rss_kib(b.pid);
    /* BATCH publishes of ~100 bytes, framed once and sent again and again. */
    static uint8_t batch[BATCH * 128];
    size_t blen = 0;
    for (int i = 0; i < BATCH; i++) {
        char body[112];
        snprintf(body, sizeof(body), "{\"op\":\"publish\",\"topic\":\"flood\",\"data\":\"%064d\"}",
                 i);
        blen += it_frame(pub, batch + blen, WS_OP_TEXT, true, 0, true, body, strlen(body));
    }
    /* The reader is held to order; what it misses while the test process
     * is not scheduled is dropped by the slow-consumer policy, as for any
     * subscriber. The publisher is held to "no publish lost". */
    uint64_t last_seen = 0, received = 0;
    long max_rss = before;
    int64_t t0 = it_now_ms();
    int batches = 0;
    size_t off = 0;
    int64_t deadline = it_now_ms() + 150000;
    for (;;) {
        IT_ASSERT(it_now_ms() < deadline, "stuck after %d batches", batches);
        bool sending = batches < MSGS / BATCH;
        if (sending) {
            it_send_nonblocking(pub, batch, blen, &off);
            if (off == blen) {
                batches++;
                off = 0;
            }
        }
        if (!sending)
            break;
        it_ev_t ev = it_recv(reader, 0);
        while (ev.type == IT_EV_TEXT) {
            msg_server_t m;
            IT_ASSERT(msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                          m.op == MSG_S_MESSAGE,
                      "reader got %s", ev.data);
            IT_ASSERT(m.seq > last_seen && m.seq <= MSGS, "reader: seq %llu after %llu",
                      (unsigned long long)m.seq, (unsigned long long)last_seen);
            last_seen = m.seq;
            received++;
            ev = it_recv(reader, 0);
        }
        IT_ASSERT(ev.type == IT_EV_TIMEOUT, "reader: unexpected event %d", ev.type);
        if ((batches & 63) == 0) {
            long rss = rss_kib(b.pid);
            if (rss > max_rss)
                max_rss = rss;
        }
    }
    /* Every publish took a seq: the next one is MSGS + 1, acknowledged once
     * the broker has read all the others. Worker 1 may still be working
     * through its inbox then (one drain can take seconds under a
     * sanitizer): it is done when every message went to every subscriber,
     * queued or dropped. Meanwhile, and then until it is quiet for a
     * second, the reader takes what the broker holds for it (in order; some
     * may have been dropped). With its backlog gone, a last publish reaches
     * it as the very next message. */
    it_send_json(pub, "{\"op\":\"publish\",\"topic\":\"flood\",\"data\":0,\"id\":\"last\"}");
    bool acked = false, drained = false;
    double want = (double)(MSGS + 1) * (nfans + 1);
    int64_t quiet_since = 0, looked = 0;
    while (!drained || it_now_ms() - quiet_since < 1000) {
        IT_ASSERT(it_now_ms() < deadline, "stuck after the flood (acked: %d)", acked);
        if (!acked) {
            it_ev_t a = it_recv(pub, 0);
            msg_server_t m;
            if (a.type == IT_EV_TEXT) {
                IT_ASSERT(msg_parse_server((const char *)a.data, a.len, &m) == MSG_OK &&
                              m.op == MSG_S_ACK && m.seq == MSGS + 1,
                          "publisher: expected the ack of seq %d, got %.80s", MSGS + 1, a.data);
                acked = true;
            } else {
                IT_ASSERT(a.type == IT_EV_TIMEOUT, "publisher: unexpected event %d", a.type);
            }
        }
        if (acked && !drained && it_now_ms() - looked >= 100) {
            looked = it_now_ms();
            drained = it_metric(b.port, "wsbroker_messages_delivered_total") +
                          it_metric(b.port, "wsbroker_slow_consumer_drops_total") >=
                      want;
            quiet_since = it_now_ms();
        }
        it_ev_t ev = it_recv(reader, 10);
        if (ev.type == IT_EV_TIMEOUT)
            continue;
        msg_server_t m;
        IT_ASSERT(ev.type == IT_EV_TEXT &&
                      msg_parse_server((const char *)ev.data, ev.len, &m) == MSG_OK &&
                      m.op == MSG_S_MESSAGE && m.seq > last_seen && m.seq <= MSGS + 1,
                  "reader after %llu: got event %d %.80s", (unsigned long long)last_seen, ev.type,
                  ev.type == IT_EV_TEXT ? (const char *)ev.data : "");
        last_seen = m.seq;
        if (m.seq <= MSGS)
            received++;
        quiet_since = it_now_ms();
    }
    it_send_json(pub, "{\"op\":\"publish\",\"topic\":\"flood\",\"data\":0,\"id\":\"final\"}");
    msg_server_t ack;
    it_expect_ack(pub, "\"final\"", &ack);
    IT_ASSERT(ack.seq == MSGS + 2, "final publish got seq %llu", (unsigned long long)ack.seq);
    IT_ASSERT(it_expect_message(reader, "flood", MSGS + 2, "0") == MSGS + 2, "final message");
    printf("reader: %llu of %d messages in order, last seq %llu\n", (unsigned long long)received,
           MSGS, (unsigned long long)last_seen);
    double throttles = it_metric(b.port, "wsbroker_publish_throttles_total");
    printf("flood of %d messages to %d subscribers in %lld ms: RSS %ld -> max %ld KiB, "
           "%g throttles\n",
           MSGS, nfans + 1, (long long)(it_now_ms() - t0), before, max_rss, throttles);
    IT_ASSERT(SANITIZED || max_rss - before < 48 * 1024, "RSS grew by %ld KiB during the flood",
              max_rss - before);
    IT_ASSERT(throttles >= 1, "the publisher was never held back");
    it_conn_free(pub);
    it_conn_free(reader);
    for (int i = 0; i < nfans; i++)
        it_conn_free(fans[i]);
    for (int i = 0; i < nothers; i++)
        it_conn_free(others[i]);
    it_broker_stop(&b);
}
END_TEST

/* ---- logging ---- */

START_TEST(unread_stderr_does_not_stall_workers)
{
    /* stderr is a pipe nobody reads: once its 64 KiB fill up, a worker
     * writing a log line would block. With debug logging every connection
     * logs several lines; the workers must keep serving anyway. */
    int p[2];
    IT_ASSERT(pipe(p) == 0, "pipe");
    it_broker_t b;
    it_broker_start_stderr(
        &b, (const char *const[]){"--log-level", "debug", "--workers", "2", NULL}, p[1]);
    close(p[1]);
    it_conn_t *sub = it_ws_hello(b.port, NULL);
    it_subscribe(sub, "log.t");
    it_conn_t *pub = it_ws_hello(b.port, NULL);
    for (int i = 0; i < 3000; i++) {
        int st;
        it_conn_t *c = it_ws_try(b.port, "/nowhere", NULL, 0, 0, 0, &st, NULL);
        IT_ASSERT(c == NULL && st == 404, "upgrade to a bad path: %d", st);
    }
    /* The pipe is long full; the broker still answers at once. */
    int64_t t0 = it_now_ms();
    for (int i = 1; i <= 20; i++) {
        char data[16];
        snprintf(data, sizeof(data), "%d", i);
        IT_ASSERT(it_publish(pub, "log.t", data) == (uint64_t)i, "publish %d", i);
        it_expect_message(sub, "log.t", (uint64_t)i, data);
    }
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(took < 2000, "20 round trips took %lld ms with stderr blocked", (long long)took);
    double dropped = it_metric(b.port, "wsbroker_log_lines_dropped_total");
    IT_ASSERT(dropped > 0, "no log line was dropped, yet stderr was never read");
    it_conn_free(sub);
    it_conn_free(pub);
    /* Reading the pipe again lets the log thread finish: clean exit. */
    char buf[65536];
    int flags = fcntl(p[0], F_GETFL);
    fcntl(p[0], F_SETFL, flags | O_NONBLOCK);
    kill(b.pid, SIGTERM);
    int64_t end = it_now_ms() + 10000;
    int st = -1;
    while (it_now_ms() < end) {
        while (read(p[0], buf, sizeof(buf)) > 0)
            ;
        st = it_broker_wait(&b, 20);
        if (st != -1)
            break;
    }
    IT_ASSERT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
    close(p[0]);
    it_broker_release(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hardening");
    TCase *tc = tcase_create("limits");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, limit_counts_every_tcp_connection);
    tcase_add_test(tc, half_open_connections_stay_small);
    tcase_add_test(tc, descriptor_exhaustion_pauses_accepting);
    tcase_add_test(tc, descriptor_limit_at_start_sets_the_connection_limit);
    tcase_add_test(tc, web_root_fifo_and_big_file);
    tcase_add_test(tc, incomplete_message_times_out);
    tcase_add_test(tc, origin_same_origin_by_default);
    tcase_add_test(tc, close_codes_outside_the_table_are_counted);
    tcase_add_test(tc, full_inbox_holds_publishers_back);
    tcase_add_test(tc, unread_stderr_does_not_stall_workers);
    suite_add_tcase(s, tc);
    return it_run_suite(s);
}
