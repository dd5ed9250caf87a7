/*
 * test_tls.c - the broker's TLS listener (--tls-port, broker/tls.c) against
 * clients written here on OpenSSL, and against raw TCP: plain HTTP,
 * garbage and a truncated ClientHello on the TLS port, a client that stops
 * mid-handshake (closed at --handshake-timeout, counted, never in the way
 * of a concurrent client), protocol versions (TLS 1.1 refused, 1.2 and 1.3
 * accepted), ALPN, client certificates (--tls-ca), SIGHUP reload (new
 * certificate for new connections, open ones untouched, a bad file keeps
 * the old one), close_notify then FIN after a Close handshake, the
 * slow-consumer policy over TLS, and 1,000 TLS connects and disconnects.
 *
 * The certificates are made at start with the openssl command in a
 * temporary folder (removed at exit): a server certificate for 127.0.0.1
 * with serial 0x1001 and a second one with serial 0x2002, and two CAs with
 * a client certificate each.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static char dir[64]; /* the certificates */

static void path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- a TLS client on a blocking socket ---- */

typedef struct tcli_opts {
    int min_version, max_version; /* 0: OpenSSL's defaults */
    const unsigned char *alpn;    /* wire format, or NULL */
    unsigned alpn_len;
    const char *cert, *key; /* client certificate files in dir, or NULL */
    bool seclevel0;         /* allow what OpenSSL's defaults refuse (TLS 1.1) */
} tcli_opts_t;

typedef struct tcli {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    uint8_t in[4 << 20]; /* received plaintext not yet consumed */
    size_t in_len;
} tcli_t;

static _Thread_local char tcli_err[512];

static void set_timeout(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static const char *ossl_err(void)
{
    static _Thread_local char buf[256];
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, sizeof(buf), "errno %d (%s)", errno, strerror(errno));
    else
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
}

static void tcli_free(tcli_t *c)
{
    if (c == NULL)
        return;
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

/* Connect and complete the handshake, or return NULL with tcli_err set.
 * rcvbuf > 0 sets SO_RCVBUF first. */
static tcli_t *tcli_connect_ex(int port, const tcli_opts_t *o, int rcvbuf)
{
    static const tcli_opts_t none = {0};
    if (o == NULL)
        o = &none;
    tcli_t *c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->fd = it_tcp_connect(port, rcvbuf);
    if (c->fd < 0) {
        snprintf(tcli_err, sizeof(tcli_err), "connect: %s", strerror(-c->fd));
        free(c);
        return NULL;
    }
    set_timeout(c->fd, IT_TIMEOUT);
    c->ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(c->ctx);
    if (o->seclevel0)
        SSL_CTX_set_cipher_list(c->ctx, "DEFAULT:@SECLEVEL=0");
    if (o->min_version)
        SSL_CTX_set_min_proto_version(c->ctx, o->min_version);
    if (o->max_version)
        SSL_CTX_set_max_proto_version(c->ctx, o->max_version);
    if (o->alpn)
        SSL_CTX_set_alpn_protos(c->ctx, o->alpn, o->alpn_len);
    if (o->cert) {
        char cert[128], key[128];
        path(cert, sizeof(cert), o->cert);
        path(key, sizeof(key), o->key);
        ck_assert_int_eq(SSL_CTX_use_certificate_file(c->ctx, cert, SSL_FILETYPE_PEM), 1);
        ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(c->ctx, key, SSL_FILETYPE_PEM), 1);
    }
    c->ssl = SSL_new(c->ctx);
    ck_assert_ptr_nonnull(c->ssl);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1) {
        snprintf(tcli_err, sizeof(tcli_err), "handshake: %s", ossl_err());
        tcli_free(c);
        return NULL;
    }
    return c;
}
#define tcli_connect(port, o) tcli_connect_ex((port), (o), 0)

static tcli_t *tcli_must(int port, const tcli_opts_t *o)
{
    tcli_t *c = tcli_connect(port, o);
    IT_ASSERT(c != NULL, "TLS connect to %d: %s", port, tcli_err);
    return c;
}

static bool tcli_write(tcli_t *c, const void *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        int n = SSL_write(c->ssl, (const uint8_t *)buf + off, (int)(len - off));
        if (n <= 0)
            return false;
        off += (size_t)n;
    }
    return true;
}

enum { RD_EOF = 0, RD_ERR = -1, RD_TIMEOUT = -2, RD_NOTIFY = -3 };

/* Read more plaintext into c->in. Returns the count, RD_NOTIFY on
 * close_notify, RD_EOF on a FIN without it, RD_TIMEOUT, or RD_ERR. */
static int tcli_fill(tcli_t *c, int timeout_ms)
{
    if (c->in_len == sizeof(c->in))
        return RD_ERR;
    set_timeout(c->fd, timeout_ms);
    errno = 0;
    int n = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof(c->in) - c->in_len));
    if (n > 0) {
        c->in_len += (size_t)n;
        return n;
    }
    int e = SSL_get_error(c->ssl, n);
    int saved = errno;
    snprintf(tcli_err, sizeof(tcli_err), "SSL_read: SSL error %d, %s", e, ossl_err());
    if (e == SSL_ERROR_ZERO_RETURN)
        return RD_NOTIFY;
    if (e == SSL_ERROR_WANT_READ && (saved == EAGAIN || saved == EWOULDBLOCK))
        return RD_TIMEOUT;
    if (e == SSL_ERROR_SYSCALL && saved == 0)
        return RD_EOF;
    return RD_ERR;
}

static bool tcli_need(tcli_t *c, size_t n, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    while (c->in_len < n) {
        int left = (int)(end - it_now_ms());
        if (left <= 0 || tcli_fill(c, left) <= 0)
            return false;
    }
    return true;
}

static void tcli_consume(tcli_t *c, size_t n)
{
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
}

/* An HTTP request; the status of the response (its head is consumed, and
 * its body when it has a Content-Length), or -1. */
static int tcli_http(tcli_t *c, const char *req, char *head, size_t cap)
{
    if (!tcli_write(c, req, strlen(req)))
        return -1;
    char *end = NULL;
    while ((end = memmem(c->in, c->in_len, "\r\n\r\n", 4)) == NULL) {
        if (tcli_fill(c, IT_TIMEOUT) <= 0)
            return -1;
    }
    size_t hl = (size_t)(end + 4 - (char *)c->in);
    snprintf(head, cap, "%.*s", (int)hl, (char *)c->in);
    tcli_consume(c, hl);
    const char *cl = strcasestr(head, "\r\nContent-Length:");
    if (cl != NULL) {
        size_t body = strtoul(cl + 17, NULL, 10);
        if (!tcli_need(c, body, IT_TIMEOUT))
            return -1;
        tcli_consume(c, body);
    }
    int status = 0;
    if (sscanf(head, "HTTP/1.1 %d", &status) != 1)
        return -1;
    return status;
}

#define UPGRADE(path)                                                                              \
    "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"    \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

/* A masked frame. */
static bool ws_send(tcli_t *c, int op, const void *p, size_t len)
{
    uint8_t *f = malloc(len + 14);
    ck_assert_ptr_nonnull(f);
    size_t h = 0;
    f[h++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        f[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(len >> 8);
        f[h++] = (uint8_t)len;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(f + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        f[h + i] = ((const uint8_t *)p)[i] ^ key[i & 3];
    bool ok = tcli_write(c, f, h + len);
    free(f);
    return ok;
}
#define ws_text(c, s) ws_send((c), WS_OP_TEXT, (s), strlen(s))

/* The next frame: its opcode, its payload copied NUL-terminated into out.
 * Returns the opcode, or a negative RD_* value (RD_ERR for a frame too big
 * for out). */
static int ws_recv(tcli_t *c, char *out, size_t cap, size_t *len, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    for (;;) {
        size_t hl = 2;
        if (c->in_len >= 2) {
            uint8_t l7 = c->in[1] & 0x7f;
            hl = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
        }
        if (c->in_len >= hl) {
            uint64_t n = c->in[1] & 0x7f;
            if (n == 126)
                n = (uint64_t)c->in[2] << 8 | c->in[3];
            else if (n == 127) {
                n = 0;
                for (int i = 2; i < 10; i++)
                    n = n << 8 | c->in[i];
            }
            if (n + 1 > cap)
                return RD_ERR;
            if (c->in_len >= hl + n) {
                int op = c->in[0] & 0x0f;
                memcpy(out, c->in + hl, n);
                out[n] = '\0';
                *len = n;
                tcli_consume(c, hl + n);
                return op;
            }
        }
        int left = (int)(end - it_now_ms());
        if (left <= 0)
            return RD_TIMEOUT;
        int r = tcli_fill(c, left);
        if (r <= 0)
            return r;
    }
}

/* The next text frame, which must contain every string of the
 * NULL-terminated list. Returns it (static). */
#define ws_expect(c, ...) ws_expect_at(__FILE__, __LINE__, (c), __VA_ARGS__, NULL)
static const char *ws_expect_at(const char *file, int line, tcli_t *c, ...)
{
    static char buf[1 << 16];
    size_t len;
    int op = ws_recv(c, buf, sizeof(buf), &len, IT_TIMEOUT);
    if (op != WS_OP_TEXT)
        it_fail_at(file, line, "expected a text frame, got %d (%s)", op, tcli_err);
    va_list ap;
    va_start(ap, c);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        if (strstr(buf, s) == NULL)
            it_fail_at(file, line, "expected '%s' in: %.300s", s, buf);
    }
    va_end(ap);
    return buf;
}

/* Upgrade to /ws over TLS and read the hello. */
static tcli_t *wss_hello(int tls_port, const tcli_opts_t *o)
{
    tcli_t *c = tcli_must(tls_port, o);
    char head[2048];
    int st = tcli_http(c, UPGRADE("/ws"), head, sizeof(head));
    IT_ASSERT(st == 101, "wss upgrade: expected 101, got %d: %s", st, head);
    ws_expect(c, "\"op\":\"hello\"");
    return c;
}

/* Subscriber and publisher over TLS: one message with exact data. */
static void wss_round_trip(int tls_port, const char *topic)
{
    tcli_t *sub = wss_hello(tls_port, NULL), *pub = wss_hello(tls_port, NULL);
    char req[512], want[512];
    snprintf(req, sizeof(req), "{\"op\":\"subscribe\",\"topic\":\"%s\",\"id\":1}", topic);
    IT_ASSERT(ws_text(sub, req), "send subscribe");
    ws_expect(sub, "\"op\":\"ack\"", "\"id\":1");
    snprintf(req, sizeof(req),
             "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":{\"v\":[1,\"tls\"]},\"id\":7}", topic);
    IT_ASSERT(ws_text(pub, req), "send publish");
    ws_expect(pub, "\"op\":\"ack\"", "\"id\":7");
    snprintf(want, sizeof(want), "\"topic\":\"%s\"", topic);
    ws_expect(sub, "\"op\":\"message\"", want, "\"data\":{\"v\":[1,\"tls\"]}");
    tcli_free(sub);
    tcli_free(pub);
}

/* ---- raw TCP on the TLS port ---- */

/* After sending bytes, the broker must close within timeout_ms (FIN or
 * RST, possibly after a TLS alert). */
static bool closed_within(int fd, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    char buf[4096];
    for (;;) {
        int left = (int)(end - it_now_ms());
        if (left <= 0)
            return false;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return true;
    }
}

/* A real ClientHello, as a client on memory BIOs writes it. */
static size_t client_hello(uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set_connect_state(ssl);
    ck_assert_int_le(SSL_do_handshake(ssl), 0); /* waits for the ServerHello */
    int n = BIO_read(wb, out, (int)cap);
    ck_assert_int_gt(n, 100);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static char tls_port_arg[16];
static int tls_port;

/* Start a broker with a TLS port and the first server certificate (as
 * cert.pem/key.pem in dir, which the reload test overwrites) plus args. */
#define start_tls(b, ...) start_tls_args((b), (const char *const[]){__VA_ARGS__, NULL})
static void start_tls_args(it_broker_t *b, const char *const *extra)
{
    static char cert[128], key[128];
    path(cert, sizeof(cert), "a.pem");
    path(key, sizeof(key), "a.key");
    const char *args[32] = {"--tls-port", tls_port_arg, "--tls-cert", cert, "--tls-key", key};
    size_t n = 6;
    for (size_t i = 0; extra[i] != NULL && n < 31; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    for (int attempt = 0; attempt < 5; attempt++) {
        tls_port = it_free_port();
        snprintf(tls_port_arg, sizeof(tls_port_arg), "%d", tls_port);
        it_broker_start_env(b, args, NULL);
        /* the TLS listener is up once a handshake completes */
        tcli_t *c = NULL;
        for (int i = 0; i < 50 && (c = tcli_connect(tls_port, NULL)) == NULL; i++)
            it_sleep_ms(100);
        if (c != NULL) {
            tcli_free(c);
            return;
        }
        it_broker_release(b); /* the TLS port was taken meanwhile: again */
    }
    it_fail("the broker's TLS port never answered: %s", tcli_err);
}

static double metric(const it_broker_t *b, const char *name)
{
    return it_metric(b->port, name);
}

/* Wait until metric name reaches at least v (it is updated by the workers
 * as they go). */
static bool metric_reaches(const it_broker_t *b, const char *name, double v, int timeout_ms)
{
    int64_t end = it_now_ms() + timeout_ms;
    do {
        if (metric(b, name) >= v)
            return true;
        it_sleep_ms(50);
    } while (it_now_ms() < end);
    return false;
}

START_TEST(plain_http_to_tls_port)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    double before = metric(&b, "wsbroker_tls_failures_total");
    int fd = it_tcp_connect(tls_port, 0);
    ck_assert_int_ge(fd, 0);
    const char *req = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    IT_ASSERT(it_tcp_send(fd, req, strlen(req), IT_TIMEOUT), "send");
    char buf[512];
    set_timeout(fd, IT_TIMEOUT);
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    /* at most a TLS alert record (type 21), never an HTTP answer */
    IT_ASSERT(n <= 0 || buf[0] == 21, "plain HTTP on the TLS port got %zd bytes back: %.*s", n,
              (int)(n > 0 ? n : 0), buf);
    IT_ASSERT(n <= 0 || closed_within(fd, IT_TIMEOUT), "plain HTTP on the TLS port: not closed");
    close(fd);
    IT_ASSERT(metric_reaches(&b, "wsbroker_tls_failures_total", before + 1, IT_TIMEOUT),
              "wsbroker_tls_failures_total did not count plain HTTP");
    /* the same request in TLS is answered */
    tcli_t *c = tcli_must(tls_port, NULL);
    char head[1024];
    IT_ASSERT(
        tcli_http(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", head, sizeof(head)) == 200,
        "GET /healthz over TLS: %s", head);
    tcli_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(garbage_and_truncated_hello)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    double before = metric(&b, "wsbroker_tls_failures_total");
    /* garbage: bytes that are no TLS record */
    uint8_t junk[3000];
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        junk[i] = (uint8_t)x;
    }
    junk[0] = 0x47; /* not a record type */
    int fd = it_tcp_connect(tls_port, 0);
    ck_assert_int_ge(fd, 0);
    it_tcp_send(fd, junk, sizeof(junk), IT_TIMEOUT); /* may be cut short by a reset */
    IT_ASSERT(closed_within(fd, IT_TIMEOUT), "garbage on the TLS port: not closed");
    close(fd);
    /* a record header announcing more than TLS allows */
    static const uint8_t huge[] = {0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00};
    fd = it_tcp_connect(tls_port, 0);
    IT_ASSERT(it_tcp_send(fd, huge, sizeof(huge), IT_TIMEOUT), "send");
    IT_ASSERT(closed_within(fd, IT_TIMEOUT), "oversized record on the TLS port: not closed");
    close(fd);
    /* half a real ClientHello, then FIN */
    uint8_t hello[4096];
    size_t n = client_hello(hello, sizeof(hello));
    fd = it_tcp_connect(tls_port, 0);
    IT_ASSERT(it_tcp_send(fd, hello, n / 2, IT_TIMEOUT), "send");
    shutdown(fd, SHUT_WR);
    IT_ASSERT(closed_within(fd, IT_TIMEOUT), "truncated ClientHello then FIN: not closed");
    close(fd);
    /* a ClientHello cut inside the record header */
    fd = it_tcp_connect(tls_port, 0);
    IT_ASSERT(it_tcp_send(fd, hello, 3, IT_TIMEOUT), "send");
    shutdown(fd, SHUT_WR);
    IT_ASSERT(closed_within(fd, IT_TIMEOUT), "3 bytes of ClientHello then FIN: not closed");
    close(fd);
    /* each of the four: the two truncated handshakes too */
    IT_ASSERT(metric_reaches(&b, "wsbroker_tls_failures_total", before + 4, IT_TIMEOUT),
              "wsbroker_tls_failures_total: %g, expected at least %g",
              metric(&b, "wsbroker_tls_failures_total"), before + 4);
    wss_round_trip(tls_port, "after.garbage");
    it_broker_stop(&b);
}
END_TEST

START_TEST(stalled_handshake_times_out_without_blocking_others)
{
    it_broker_t b;
    /* one worker: a stalled handshake must not hold the loop others use */
    start_tls(&b, IT_NO_HEARTBEAT, "--handshake-timeout", "3", "--workers", "1");
    double before = metric(&b, "wsbroker_tls_handshake_timeouts_total");
    uint8_t hello[4096];
    size_t n = client_hello(hello, sizeof(hello));
    enum { STALLED = 8 };
    int fds[STALLED];
    int64_t t0 = it_now_ms();
    for (int i = 0; i < STALLED; i++) {
        fds[i] = it_tcp_connect(tls_port, 0);
        ck_assert_int_ge(fds[i], 0);
        /* half open: nothing, part of the ClientHello, or all of it and
         * then silence instead of the client's Finished */
        size_t part = i % 3 == 0 ? 0 : i % 3 == 1 ? n / 2 : n;
        if (part > 0)
            IT_ASSERT(it_tcp_send(fds[i], hello, part, IT_TIMEOUT), "send");
    }
    /* meanwhile a good client does everything, several times */
    for (int k = 0; k < 3; k++)
        wss_round_trip(tls_port, "busy.worker");
    int64_t t1 = it_now_ms();
    IT_ASSERT(t1 - t0 < 2500, "good clients took %lld ms beside stalled handshakes",
              (long long)(t1 - t0));
    for (int i = 0; i < STALLED; i++) {
        IT_ASSERT(closed_within(fds[i], 6000), "stalled handshake %d not closed", i);
        int64_t el = it_now_ms() - t0;
        IT_ASSERT(el >= 2800, "stalled handshake %d closed after %lld ms, before the timeout", i,
                  (long long)el);
        close(fds[i]);
    }
    IT_ASSERT(
        metric_reaches(&b, "wsbroker_tls_handshake_timeouts_total", before + STALLED, IT_TIMEOUT),
        "wsbroker_tls_handshake_timeouts_total: %g, expected %g",
        metric(&b, "wsbroker_tls_handshake_timeouts_total"), before + STALLED);
    wss_round_trip(tls_port, "after.stall");
    it_broker_stop(&b);
}
END_TEST

START_TEST(protocol_versions)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    double before = metric(&b, "wsbroker_tls_failures_total");
    /* a client that would speak TLS 1.1 (and 1.0) and nothing newer */
    tcli_opts_t old = {.max_version = TLS1_1_VERSION, .seclevel0 = true};
    tcli_t *c = tcli_connect(tls_port, &old);
    IT_ASSERT(c == NULL, "TLS 1.1 was accepted (%s)", c ? SSL_get_version(c->ssl) : "");
    IT_ASSERT(metric_reaches(&b, "wsbroker_tls_failures_total", before + 1, IT_TIMEOUT),
              "refused TLS 1.1 handshake not counted");
    /* the same client allowed TLS 1.2 gets it: the refusal was the version */
    tcli_opts_t v12 = {.max_version = TLS1_2_VERSION, .seclevel0 = true};
    c = tcli_must(tls_port, &v12);
    ck_assert_int_eq(SSL_version(c->ssl), TLS1_2_VERSION);
    tcli_free(c);
    tcli_opts_t v13 = {.min_version = TLS1_3_VERSION};
    c = tcli_must(tls_port, &v13);
    ck_assert_int_eq(SSL_version(c->ssl), TLS1_3_VERSION);
    tcli_free(c);
    it_broker_stop(&b);
}
END_TEST

START_TEST(alpn)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    static const unsigned char h2_h11[] = "\x02h2\x08http/1.1";
    tcli_opts_t o = {.alpn = h2_h11, .alpn_len = sizeof(h2_h11) - 1};
    tcli_t *c = tcli_must(tls_port, &o);
    const unsigned char *sel = NULL;
    unsigned sel_len = 0;
    SSL_get0_alpn_selected(c->ssl, &sel, &sel_len);
    IT_ASSERT(sel_len == 8 && memcmp(sel, "http/1.1", 8) == 0, "ALPN selected '%.*s'", (int)sel_len,
              sel ? (const char *)sel : "");
    char head[1024];
    IT_ASSERT(
        tcli_http(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", head, sizeof(head)) == 200,
        "GET /healthz after ALPN: %s", head);
    tcli_free(c);
    /* only h2 offered: nothing is selected, and HTTP/1.1 still works */
    static const unsigned char h2[] = "\x02h2";
    tcli_opts_t o2 = {.alpn = h2, .alpn_len = sizeof(h2) - 1};
    c = tcli_must(tls_port, &o2);
    SSL_get0_alpn_selected(c->ssl, &sel, &sel_len);
    IT_ASSERT(sel_len == 0, "ALPN selected '%.*s' from an offer of h2 only", (int)sel_len, sel);
    tcli_free(c);
    it_broker_stop(&b);
}
END_TEST

/* A client certificate is refused when the handshake fails, or (TLS 1.3,
 * where the client finishes first) when the first request gets no answer. */
static bool client_refused(int port, const tcli_opts_t *o)
{
    tcli_t *c = tcli_connect(port, o);
    if (c == NULL)
        return true;
    char head[1024];
    int st = tcli_http(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", head, sizeof(head));
    tcli_free(c);
    return st != 200;
}

START_TEST(client_certificates)
{
    it_broker_t b;
    char ca[128];
    path(ca, sizeof(ca), "ca1.pem");
    start_tls(&b, IT_NO_HEARTBEAT, "--tls-ca", ca);
    double before = metric(&b, "wsbroker_tls_failures_total");
    IT_ASSERT(client_refused(tls_port, NULL), "no client certificate was accepted");
    tcli_opts_t wrong = {.cert = "client2.pem", .key = "client2.key"};
    IT_ASSERT(client_refused(tls_port, &wrong), "a certificate of another CA was accepted");
    tcli_opts_t wrong12 = {
        .cert = "client2.pem", .key = "client2.key", .max_version = TLS1_2_VERSION};
    IT_ASSERT(tcli_connect(tls_port, &wrong12) == NULL,
              "TLS 1.2 handshake with a certificate of another CA completed");
    IT_ASSERT(metric_reaches(&b, "wsbroker_tls_failures_total", before + 3, IT_TIMEOUT),
              "refused client certificates not counted: %g",
              metric(&b, "wsbroker_tls_failures_total") - before);
    tcli_opts_t right = {.cert = "client1.pem", .key = "client1.key"};
    IT_ASSERT(!client_refused(tls_port, &right), "the right CA's client was refused: %s", tcli_err);
    tcli_t *c = wss_hello(tls_port, &right);
    IT_ASSERT(ws_text(c, "{\"op\":\"ping\",\"id\":3}"), "send");
    ws_expect(c, "\"op\":\"pong\"", "\"id\":3");
    tcli_free(c);
    it_broker_stop(&b);
}
END_TEST

static long peer_serial(tcli_t *c)
{
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    ck_assert_ptr_nonnull(x);
    long s = ASN1_INTEGER_get(X509_get_serialNumber(x));
    X509_free(x);
    return s;
}

static void copy_file(const char *from, const char *to)
{
    char a[128], b2[128], tmp[140];
    path(a, sizeof(a), from);
    path(b2, sizeof(b2), to);
    snprintf(tmp, sizeof(tmp), "%s.tmp", b2);
    FILE *in = fopen(a, "rb"), *out = fopen(tmp, "wb");
    ck_assert(in != NULL && out != NULL);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
    ck_assert_int_eq(rename(tmp, b2), 0);
}

/* Wait for the broker's log to hold `what` count times. */
static bool log_count_reaches(const it_broker_t *b, const char *what, int count, int timeout_ms)
{
    static char log[1 << 18];
    int64_t end = it_now_ms() + timeout_ms;
    do {
        it_broker_log(b, log, sizeof(log));
        int k = 0;
        for (const char *p = log; (p = strstr(p, what)) != NULL; p++)
            k++;
        if (k >= count)
            return true;
        it_sleep_ms(50);
    } while (it_now_ms() < end);
    return false;
}

START_TEST(sighup_reloads_certificate)
{
    it_broker_t b;
    /* the broker reads live.pem/live.key, which this test replaces */
    copy_file("a.pem", "live.pem");
    copy_file("a.key", "live.key");
    static char cert[128], key[128];
    path(cert, sizeof(cert), "live.pem");
    path(key, sizeof(key), "live.key");
    tls_port = it_free_port();
    snprintf(tls_port_arg, sizeof(tls_port_arg), "%d", tls_port);
    it_broker_start(&b, "--tls-port", tls_port_arg, "--tls-cert", cert, "--tls-key", key,
                    IT_NO_HEARTBEAT);
    tcli_t *old = NULL;
    for (int i = 0; i < 50 && (old = tcli_connect(tls_port, NULL)) == NULL; i++)
        it_sleep_ms(100);
    IT_ASSERT(old != NULL, "TLS port: %s", tcli_err);
    tcli_free(old);
    old = wss_hello(tls_port, NULL);
    ck_assert_int_eq(peer_serial(old), 0x1001);
    IT_ASSERT(ws_text(old, "{\"op\":\"subscribe\",\"topic\":\"reload.t\",\"id\":1}"), "send");
    ws_expect(old, "\"op\":\"ack\"");

    copy_file("b.pem", "live.pem");
    copy_file("b.key", "live.key");
    ck_assert_int_eq(kill(b.pid, SIGHUP), 0);
    IT_ASSERT(log_count_reaches(&b, "event=tls_reloaded", 1, IT_TIMEOUT),
              "no tls_reloaded in the log after SIGHUP");
    tcli_t *c = tcli_must(tls_port, NULL);
    IT_ASSERT(peer_serial(c) == 0x2002, "after reload, serial %lx", peer_serial(c));
    tcli_free(c);
    /* the connection opened before is untouched: same session, still works */
    ck_assert_int_eq(peer_serial(old), 0x1001);
    tcli_t *pub = wss_hello(tls_port, NULL);
    IT_ASSERT(ws_text(pub, "{\"op\":\"publish\",\"topic\":\"reload.t\",\"data\":42,\"id\":2}"),
              "send");
    ws_expect(pub, "\"op\":\"ack\"");
    ws_expect(old, "\"op\":\"message\"", "\"data\":42");

    /* a bad certificate file: logged, the old context stays */
    FILE *f = fopen(cert, "w");
    ck_assert_ptr_nonnull(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    ck_assert_int_eq(kill(b.pid, SIGHUP), 0);
    IT_ASSERT(log_count_reaches(&b, "event=tls_reload_failed", 1, IT_TIMEOUT),
              "no tls_reload_failed in the log after SIGHUP with a bad file");
    c = tcli_must(tls_port, NULL);
    IT_ASSERT(peer_serial(c) == 0x2002, "after a failed reload, serial %lx", peer_serial(c));
    tcli_free(c);
    /* a key that does not match the certificate: refused as well */
    copy_file("b.pem", "live.pem");
    copy_file("a.key", "live.key");
    ck_assert_int_eq(kill(b.pid, SIGHUP), 0);
    IT_ASSERT(log_count_reaches(&b, "event=tls_reload_failed", 2, IT_TIMEOUT),
              "no tls_reload_failed for a key of another certificate");
    c = tcli_must(tls_port, NULL);
    ck_assert_int_eq(peer_serial(c), 0x2002);
    tcli_free(c);
    IT_ASSERT(ws_text(pub, "{\"op\":\"publish\",\"topic\":\"reload.t\",\"data\":43,\"id\":3}"),
              "send");
    ws_expect(old, "\"op\":\"message\"", "\"data\":43");
    tcli_free(pub);
    tcli_free(old);
    it_broker_stop(&b);
}
END_TEST

START_TEST(close_notify_then_fin)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    tcli_t *c = wss_hello(tls_port, NULL);
    static const uint8_t close_1000[] = {0x03, 0xe8, 'b', 'y', 'e'};
    IT_ASSERT(ws_send(c, WS_OP_CLOSE, close_1000, sizeof(close_1000)), "send Close");
    char buf[256];
    size_t len;
    int op = ws_recv(c, buf, sizeof(buf), &len, IT_TIMEOUT);
    IT_ASSERT(op == WS_OP_CLOSE && len >= 2 && ((uint8_t)buf[0] << 8 | (uint8_t)buf[1]) == 1000,
              "expected Close 1000, got op %d len %zu", op, len);
    /* then close_notify, and nothing else in TLS */
    int r = tcli_fill(c, IT_TIMEOUT);
    IT_ASSERT(r == RD_NOTIFY, "after the Close: expected close_notify, got %d (%s)", r, tcli_err);
    IT_ASSERT((SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN) != 0, "no close_notify seen");
    /* then the FIN: the socket reads end of file */
    set_timeout(c->fd, IT_TIMEOUT);
    char rest[64];
    ssize_t n = recv(c->fd, rest, sizeof(rest), 0);
    IT_ASSERT(n == 0, "after close_notify: expected FIN, got %zd (%s)", n,
              n < 0 ? strerror(errno) : "data");
    tcli_free(c);

    /* the broker's own Close (shutdown) also ends with close_notify, FIN */
    c = wss_hello(tls_port, NULL);
    ck_assert_int_eq(kill(b.pid, SIGTERM), 0);
    op = ws_recv(c, buf, sizeof(buf), &len, IT_TIMEOUT);
    IT_ASSERT(op == WS_OP_CLOSE && ((uint8_t)buf[0] << 8 | (uint8_t)buf[1]) == 1001,
              "expected Close 1001 on shutdown, got op %d", op);
    IT_ASSERT(ws_send(c, WS_OP_CLOSE, buf, 2), "answer Close");
    r = tcli_fill(c, IT_TIMEOUT);
    IT_ASSERT(r == RD_NOTIFY, "on shutdown: expected close_notify, got %d (%s)", r, tcli_err);
    n = recv(c->fd, rest, sizeof(rest), 0);
    IT_ASSERT(n == 0, "on shutdown: expected FIN after close_notify, got %zd", n);
    tcli_free(c);
    int st = it_broker_wait(&b, 10000);
    IT_ASSERT(st == 0, "broker exit status %d after SIGTERM", st);
    it_broker_release(&b);
}
END_TEST

#define FLOOD_MSGS 2500
#define FLOOD_DATA 4000 /* bytes per message: ~10 MB in all */

typedef struct reader {
    tcli_t *c;
    atomic_int done; /* messages read so far */
    char error[256]; /* empty when every message arrived in order */
} reader_t;

/* Thread: the attentive subscriber reads every message, in order. */
static void *attentive_reader(void *arg)
{
    reader_t *r = arg;
    static char got[8192];
    for (int k = 1; k <= FLOOD_MSGS; k++) {
        size_t len;
        int op = ws_recv(r->c, got, sizeof(got), &len, 10000);
        char want[32];
        snprintf(want, sizeof(want), "\"data\":\"%d:", k);
        if (op != WS_OP_TEXT || strstr(got, want) == NULL) {
            snprintf(r->error, sizeof(r->error),
                     "attentive subscriber: expected %d, got op %d %.80s", k, op,
                     op == WS_OP_TEXT ? got : tcli_err);
            break;
        }
        atomic_store(&r->done, k);
    }
    return NULL;
}

START_TEST(slow_consumer_over_tls)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT, "--max-backlog", "65536", "--close-timeout", "30");
    tcli_t *slow = tcli_connect_ex(tls_port, NULL, 4096);
    IT_ASSERT(slow != NULL, "connect: %s", tcli_err);
    char head[1024];
    IT_ASSERT(tcli_http(slow, UPGRADE("/ws"), head, sizeof(head)) == 101, "upgrade: %s", head);
    ws_expect(slow, "\"op\":\"hello\"");
    IT_ASSERT(ws_text(slow, "{\"op\":\"subscribe\",\"topic\":\"flood\",\"id\":1}"), "send");
    ws_expect(slow, "\"op\":\"ack\"");
    tcli_t *good = wss_hello(tls_port, NULL);
    IT_ASSERT(ws_text(good, "{\"op\":\"subscribe\",\"topic\":\"flood\",\"id\":1}"), "send");
    ws_expect(good, "\"op\":\"ack\"");
    tcli_t *pub = wss_hello(tls_port, NULL);
    double closes0 = metric(&b, "wsbroker_slow_consumer_closes_total");

    /* ~10 MB while the slow one reads nothing and the other reads all */
    reader_t r = {.c = good};
    atomic_init(&r.done, 0);
    pthread_t th;
    IT_ASSERT(pthread_create(&th, NULL, attentive_reader, &r) == 0, "pthread_create");
    static char req[FLOOD_DATA + 128];
    for (int k = 1; k <= FLOOD_MSGS; k++) {
        /* At most 4 messages (16 KB) ahead of the attentive reader: it is
         * never behind by the backlog limit, however the machine schedules
         * its thread; the slow one, reading nothing, soon is. */
        int64_t deadline = it_now_ms() + 10000;
        while (k - atomic_load(&r.done) > 4 && it_now_ms() < deadline)
            usleep(50);
        int n =
            snprintf(req, sizeof(req), "{\"op\":\"publish\",\"topic\":\"flood\",\"data\":\"%d:", k);
        memset(req + n, 'x', FLOOD_DATA - 16);
        n += FLOOD_DATA - 16;
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\"}");
        if (!ws_send(pub, WS_OP_TEXT, req, (size_t)n))
            break;
    }
    pthread_join(th, NULL);
    IT_ASSERT(r.error[0] == '\0', "%s", r.error);
    IT_ASSERT(ws_text(pub, "{\"op\":\"ping\",\"id\":5}"), "send");
    ws_expect(pub, "\"op\":\"pong\"", "\"id\":5");
    IT_ASSERT(metric_reaches(&b, "wsbroker_slow_consumer_closes_total", closes0 + 1, IT_TIMEOUT),
              "the slow TLS subscriber was not closed as a slow consumer");

    /* the slow one now reads: messages in order, then Close 1008 */
    static char got[8192];
    int code = -1, prev = 0;
    for (;;) {
        size_t len;
        int op = ws_recv(slow, got, sizeof(got), &len, 10000);
        if (op == WS_OP_TEXT) {
            int k = 0;
            const char *d = strstr(got, "\"data\":\"");
            IT_ASSERT(d && sscanf(d + 8, "%d", &k) == 1 && k == prev + 1,
                      "slow subscriber: after %d got %.60s", prev, got);
            prev = k;
            continue;
        }
        IT_ASSERT(op == WS_OP_CLOSE && len >= 2, "slow subscriber: op %d (%s) after message %d", op,
                  tcli_err, prev);
        code = (uint8_t)got[0] << 8 | (uint8_t)got[1];
        IT_ASSERT(strcmp(got + 2, "slow consumer") == 0, "close reason '%s'", got + 2);
        break;
    }
    IT_ASSERT(code == 1008, "slow subscriber closed with %d", code);
    IT_ASSERT(prev < FLOOD_MSGS, "slow subscriber got every message: never closed");
    ck_assert_double_eq(metric(&b, "wsbroker_slow_consumer_closes_total"), closes0 + 1);
    /* and the others go on */
    IT_ASSERT(ws_text(pub, "{\"op\":\"publish\",\"topic\":\"flood\",\"data\":\"last\",\"id\":9}"),
              "send");
    ws_expect(pub, "\"op\":\"ack\"", "\"id\":9");
    ws_expect(good, "\"data\":\"last\"");
    tcli_free(slow);
    tcli_free(good);
    tcli_free(pub);
    it_broker_stop(&b);
}
END_TEST

/* A message larger than --max-backlog (possible whenever --max-message is
 * larger) goes to a reader that keeps up, on /echo and on /ws, over TLS
 * and plain TCP: the backlog limit is about a reader falling behind, not
 * about the size of one message. */
START_TEST(message_larger_than_backlog)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT, "--max-message", "4m", "--max-backlog", "1m", "--deflate",
              "off");
    size_t big = 3u << 20;
    char *data = malloc(big + 128), *got = malloc(big + 128);
    ck_assert(data != NULL && got != NULL);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    /* /echo over TLS */
    tcli_t *e = tcli_must(tls_port, NULL);
    char head[1024];
    IT_ASSERT(tcli_http(e, UPGRADE("/echo"), head, sizeof(head)) == 101, "upgrade: %s", head);
    IT_ASSERT(ws_send(e, WS_OP_BINARY, data, big), "send");
    size_t len = 0;
    int op = ws_recv(e, got, big + 128, &len, 10000);
    IT_ASSERT(op == WS_OP_BINARY && len == big && memcmp(got, data, big) == 0,
              "wss /echo of %zu bytes with --max-backlog 1m: op %d, %zu bytes (%s)", big, op, len,
              op == WS_OP_CLOSE ? got + 2 : "");
    tcli_free(e);
    /* /echo over plain TCP */
    it_conn_t *pe = it_ws_open(b.port, "/echo");
    it_send_frame(pe, WS_OP_BINARY, true, data, big);
    it_ev_t ev = it_next(pe, 10000);
    IT_ASSERT(ev.type == IT_EV_BINARY && ev.len == big && memcmp(ev.data, data, big) == 0,
              "ws /echo of %zu bytes with --max-backlog 1m: event %d, %zu bytes", big, ev.type,
              ev.len);
    it_conn_free(pe);
    /* pub/sub over TLS: the subscriber reads it whole */
    tcli_t *sub = wss_hello(tls_port, NULL), *pub = wss_hello(tls_port, NULL);
    IT_ASSERT(ws_text(sub, "{\"op\":\"subscribe\",\"topic\":\"big\",\"id\":1}"), "send");
    ws_expect(sub, "\"op\":\"ack\"");
    int n = snprintf(got, 64, "{\"op\":\"publish\",\"topic\":\"big\",\"data\":\"");
    memcpy(got + n, data, big);
    n += (int)big;
    n += snprintf(got + n, 64, "\",\"id\":2}");
    IT_ASSERT(ws_send(pub, WS_OP_TEXT, got, (size_t)n), "send");
    ws_expect(pub, "\"op\":\"ack\"", "\"id\":2");
    op = ws_recv(sub, got, big + 128, &len, 10000);
    IT_ASSERT(op == WS_OP_TEXT && len > big &&
                  memcmp(strstr(got, "\"data\":\"") + 8, data, big) == 0,
              "wss subscriber of a %zu-byte message with --max-backlog 1m: op %d, %zu bytes (%s)",
              big, op, len, op == WS_OP_CLOSE ? got + 2 : "");
    tcli_free(sub);
    tcli_free(pub);
    ck_assert_double_eq(metric(&b, "wsbroker_slow_consumer_closes_total"), 0);
    free(data);
    free(got);
    it_broker_stop(&b);
}
END_TEST

START_TEST(thousand_connects)
{
    it_broker_t b;
    start_tls(&b, IT_NO_HEARTBEAT);
    double before = metric(&b, "wsbroker_tls_handshakes_total");
    uint8_t hello[4096];
    size_t hn = client_hello(hello, sizeof(hello));
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        switch (i % 5) {
        case 0: { /* handshake, request, close_notify */
            tcli_t *c = tcli_must(tls_port, NULL);
            char head[1024];
            IT_ASSERT(tcli_http(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", head,
                                sizeof(head)) == 200,
                      "connect %d: GET /healthz", i);
            SSL_shutdown(c->ssl);
            tcli_free(c);
            break;
        }
        case 1: { /* WebSocket upgrade, then RST */
            tcli_t *c = tcli_must(tls_port, NULL);
            char head[1024];
            IT_ASSERT(tcli_http(c, UPGRADE("/ws"), head, sizeof(head)) == 101, "connect %d", i);
            it_tcp_reset(c->fd);
            c->fd = -1;
            tcli_free(c);
            break;
        }
        case 2: { /* handshake, then FIN without close_notify */
            tcli_t *c = tcli_must(tls_port, NULL);
            tcli_free(c);
            break;
        }
        case 3: { /* half a ClientHello, then RST */
            int fd = it_tcp_connect(tls_port, 0);
            ck_assert_int_ge(fd, 0);
            it_tcp_send(fd, hello, hn / 2, IT_TIMEOUT);
            it_tcp_reset(fd);
            break;
        }
        default: { /* connect and close before any byte */
            int fd = it_tcp_connect(tls_port, 0);
            ck_assert_int_ge(fd, 0);
            close(fd);
            break;
        }
        }
    }
    IT_ASSERT(metric_reaches(&b, "wsbroker_tls_handshakes_total", before + 3 * N / 5, IT_TIMEOUT),
              "handshakes counted: %g", metric(&b, "wsbroker_tls_handshakes_total") - before);
    /* every connection is gone again */
    int64_t end = it_now_ms() + 5000;
    double open = 0;
    while ((open = metric(&b, "wsbroker_tcp_connections_open")) > 1 && it_now_ms() < end)
        it_sleep_ms(50);
    IT_ASSERT(open <= 1, "%g TCP connections still open", open);
    wss_round_trip(tls_port, "after.churn");
    /* the exit status is 0 only if, under ASan, the leak check is clean */
    it_broker_stop(&b);
}
END_TEST

/* ---- certificates ---- */

static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    char full[2200];
    snprintf(full, sizeof(full), "cd '%s' && { %s; } >>openssl.log 2>&1", dir, cmd);
    if (system(full) != 0) {
        fprintf(stderr, "test_tls: failed: %s (see %s/openssl.log)\n", cmd, dir);
        exit(EXIT_FAILURE);
    }
}

static void make_certificates(void)
{
    snprintf(dir, sizeof(dir), "/tmp/wsbroker-tls-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(EXIT_FAILURE);
    }
#define EC  "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 2"
#define SAN "-addext subjectAltName=IP:127.0.0.1,DNS:localhost"
    sh("openssl req -x509 " EC " -keyout a.key -out a.pem -subj /CN=127.0.0.1 " SAN
       " -set_serial 0x1001");
    sh("openssl req -x509 " EC " -keyout b.key -out b.pem -subj /CN=127.0.0.1 " SAN
       " -set_serial 0x2002");
    for (int i = 1; i <= 2; i++) {
        sh("openssl req -x509 " EC " -keyout ca%d.key -out ca%d.pem -subj /CN=wsbroker-test-ca%d"
           " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
           i, i, i);
        sh("openssl req -new " EC " -keyout client%d.key -out client%d.csr -subj /CN=client%d", i,
           i, i);
        sh("openssl x509 -req -in client%d.csr -CA ca%d.pem -CAkey ca%d.key -set_serial %d"
           " -days 2 -out client%d.pem",
           i, i, i, 10 + i, i);
    }
#undef EC
#undef SAN
}

static void remove_certificates(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_tls: could not remove %s\n", dir);
}

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, plain_http_to_tls_port);
    tcase_add_test(tc, garbage_and_truncated_hello);
    tcase_add_test(tc, stalled_handshake_times_out_without_blocking_others);
    tcase_add_test(tc, protocol_versions);
    tcase_add_test(tc, alpn);
    tcase_add_test(tc, client_certificates);
    tcase_add_test(tc, sighup_reloads_certificate);
    tcase_add_test(tc, close_notify_then_fin);
    tcase_add_test(tc, slow_consumer_over_tls);
    tcase_add_test(tc, message_larger_than_backlog);
    tcase_add_test(tc, thousand_connects);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_certificates();
    int rc = it_run_suite(tls_suite());
    remove_certificates();
    return rc;
}
