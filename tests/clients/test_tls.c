/*
 * test_tls.c - libwsbroker-client over wss:// and with permessage-deflate:
 * round trips through the real broker's TLS port with certificates made by
 * the openssl command (CA file, host names and addresses, self-signed,
 * insecure), the failures a user must be told about (untrusted
 * certificate, wrong name, unreadable CA file, TLS to a plain port and the
 * reverse), and the negotiation itself against a scripted server that
 * records what the client sent (SNI, the offer) and answers what a broker
 * must not (a parameter never offered, an extension never offered, a
 * compressed message past the broker's own max_message), plus the frames
 * the client compresses with deflate_send under a window limit.
 *
 * Every test runs in its own process with its own broker (or scripted
 * server) on free loopback ports, and every wait is bounded.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <zlib.h>

#include <wsproto/pmd.h>

#include "client_int.h"
#include "tutil.h"

#define WAIT 5000

static struct {
    uv_loop_t loop;
    it_broker_t broker;
    tl_certs_t certs;
    char url[96];
} fx;

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&fx, 0, sizeof(fx));
    fx.broker = IT_BROKER_NONE;
    ck_assert_int_eq(uv_loop_init(&fx.loop), 0);
    tl_make_certs(&fx.certs);
}

static void teardown(void)
{
    ck_assert_msg(tl_drain(&fx.loop), "the loop still had handles 5 s after the clients closed");
    uv_loop_close(&fx.loop);
    it_broker_release(&fx.broker);
    tl_remove_certs(&fx.certs);
}

static int start_tls(const char *cert, const char *key, const char *const *args)
{
    return tl_start_tls_broker(&fx.broker, cert, key, args, fx.url, sizeof(fx.url));
}

/* A client on url recording into r; opts as given (recorder callbacks set). */
static wsc_client_t *client_at(const char *url, rec_t *r, wsc_options_t *o)
{
    wsc_error_t err;
    wsc_client_t *c = wsc_connect(&fx.loop, url, o, &err);
    ck_assert_msg(c != NULL, "wsc_connect %s: %s", url, err.text);
    (void)r;
    return c;
}

static wsc_client_t *open_at(const char *url, rec_t *r, wsc_options_t *o)
{
    wsc_client_t *c = client_at(url, r, o);
    ck_assert_msg(tl_run_until(&fx.loop, rec_is_open, r, WAIT), "%s did not open (last: %s)", url,
                  r->nstates ? r->states[r->nstates - 1].detail : "no state change");
    return c;
}

/* The client fails once (reconnect off) and reports err; returns the
 * detail. */
static const char *expect_failure(const char *url, wsc_options_t *o, rec_t *r, int err)
{
    o->reconnect = false;
    wsc_client_t *c = client_at(url, r, o);
    ck_assert_msg(tl_run_until(&fx.loop, rec_is_closed, r, WAIT), "%s: no failure (%zu states, %s)",
                  url, r->nstates, r->nstates ? r->states[r->nstates - 1].detail : "");
    ck_assert_msg(r->states[0].state == WSC_CLOSED && r->states[0].err == err,
                  "%s: state %s err %d (%s), want err %d", url, wsc_state_name(r->states[0].state),
                  r->states[0].err, r->states[0].detail, err);
    wsc_close(c);
    return r->states[0].detail;
}

/* ---- messages of any size ---- */

typedef struct big {
    size_t n;
    char *data[8];
    size_t len[8];
} big_t;

static big_t *big_rec;

static void on_big(wsc_client_t *c, const wsc_message_t *m, void *user)
{
    (void)c;
    (void)user;
    if (big_rec->n < 8) {
        big_rec->data[big_rec->n] = malloc(m->data_len);
        memcpy(big_rec->data[big_rec->n], m->data, m->data_len);
        big_rec->len[big_rec->n++] = m->data_len;
    }
}

static bool big_has(void *n)
{
    return big_rec->n >= *(size_t *)n;
}

/* A JSON string of len bytes: compressible (repeating words) or not. */
static char *json_text(size_t len, bool compressible)
{
    char *s = malloc(len);
    uint64_t x = 0x2545F4914F6CDD1DULL;
    static const char words[] = "publish subscribe broker topic message ";
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        s[i] = compressible ? words[i % (sizeof(words) - 1)] : alpha[x & 63];
    }
    s[0] = s[len - 1] = '"';
    return s;
}

/* ---- round trips through the broker ---- */

/* Subscribe on sub, publish three messages on pub (small, large and
 * compressible, large and random), check each arrives intact. */
static void round_trip(wsc_client_t *sub, rec_t *a, wsc_client_t *pub, rec_t *b)
{
    big_t got = {0};
    big_rec = &got;
    ck_assert_int_eq(wsc_subscribe(sub, "tls.t", NULL, rec_result_cb, a), WSC_OK);
    ck_assert(rec_wait_results(&fx.loop, a, 1, WAIT));
    ck_assert_int_eq(a->results[0].err, WSC_OK);
    char *texts[3] = {strdup("{\"small\":true}"), json_text(200000, true),
                      json_text(150000, false)};
    size_t lens[3] = {strlen(texts[0]), 200000, 150000};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wsc_publish(pub, "tls.t", texts[i], lens[i], rec_result_cb, b), WSC_OK);
    ck_assert(rec_wait_results(&fx.loop, b, 3, WAIT));
    for (int i = 0; i < 3; i++)
        ck_assert_msg(b->results[i].err == WSC_OK, "publish %d: %s", i, b->results[i].message);
    size_t want = 3;
    ck_assert_msg(tl_run_until(&fx.loop, big_has, &want, WAIT), "%zu of 3 messages", got.n);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(got.len[i], lens[i]);
        ck_assert_msg(memcmp(got.data[i], texts[i], lens[i]) == 0, "message %d differs", i);
        free(got.data[i]);
        free(texts[i]);
    }
    big_rec = NULL;
}

START_TEST(wss_round_trip_with_ca_file)
{
    static const char *const hosts[] = {"127.0.0.1", "localhost"};
    rec_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    int port = start_tls(fx.certs.cert, fx.certs.key, NULL);
    char url[96];
    snprintf(url, sizeof(url), "wss://%s:%d/ws", hosts[_i], port);

    wsc_options_t o;
    rec_options(a, &o);
    o.ca_file = fx.certs.ca;
    o.on_message = on_big;
    wsc_client_t *sub = open_at(url, a, &o);
    ck_assert_msg(strncmp(wsc_tls_version(sub), "TLSv1.", 6) == 0, "tls version '%s'",
                  wsc_tls_version(sub));
    ck_assert_msg(strncmp(wsc_extensions(sub), "permessage-deflate", 18) == 0, "extensions '%s'",
                  wsc_extensions(sub));
    ck_assert_ptr_nonnull(strstr(a->states[0].detail, "wss://"));
    ck_assert_ptr_nonnull(strstr(a->states[0].detail, "permessage-deflate"));
    ck_assert_ptr_nonnull(strstr(a->states[0].detail, "TLSv1."));

    rec_options(b, &o);
    o.ca_file = fx.certs.ca;
    o.deflate_send = true;
    wsc_client_t *pub = open_at(url, b, &o);
    round_trip(sub, a, pub, b);
    wsc_close(sub);
    wsc_close(pub);

    /* The blocking helpers over wss:// too. */
    wsc_error_t err;
    wsc_result_t r;
    wsc_message_t m;
    rec_options(a, &o);
    o.ca_file = fx.certs.ca;
    wsc_sync_t *s = wsc_sync_connect(url, &o, WAIT, &err);
    ck_assert_msg(s != NULL, "%s", err.text);
    ck_assert_int_eq(wsc_sync_subscribe(s, "tls.s", NULL, WAIT, &r), WSC_OK);
    ck_assert_int_eq(wsc_sync_publish(s, "tls.s", "[1,2]", 5, WAIT, &r), WSC_OK);
    ck_assert_int_eq(wsc_sync_next(s, WAIT, &m), WSC_OK);
    ck_assert_int_eq((int)m.data_len, 5);
    ck_assert(memcmp(m.data, "[1,2]", 5) == 0);
    wsc_sync_close(s);
    free(a);
    free(b);
}
END_TEST

/* Plain ws:// with and without deflate, against a broker compressing each
 * message once for everyone (shared: no context takeover), one keeping a
 * context per connection (dedicated: the client's inflater keeps its
 * window across messages), and one that does not do deflate at all. */
START_TEST(ws_deflate_on_and_off)
{
    static const char *const modes[] = {"shared", "dedicated", "off"};
    rec_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    const char *const args[] = {"--deflate", modes[_i], NULL};
    start_tls(fx.certs.cert, fx.certs.key, args);
    wsc_options_t o;
    rec_options(a, &o);
    o.on_message = on_big;
    wsc_client_t *sub = open_at(fx.broker.url, a, &o);
    ck_assert_str_eq(wsc_tls_version(sub), "");
    const char *ext = wsc_extensions(sub);
    if (_i < 2) {
        ck_assert_msg(strncmp(ext, "permessage-deflate", 18) == 0, "'%s'", ext);
        ck_assert_msg((strstr(ext, "server_no_context_takeover") != NULL) == (_i == 0), "%s: '%s'",
                      modes[_i], ext);
    } else {
        ck_assert_str_eq(ext, "");
    }
    rec_options(b, &o);
    o.deflate = false;
    wsc_client_t *pub = open_at(fx.broker.url, b, &o);
    ck_assert_str_eq(wsc_extensions(pub), "");
    round_trip(sub, a, pub, b);
    wsc_close(sub);
    wsc_close(pub);
    free(a);
    free(b);
}
END_TEST

START_TEST(certificate_checks)
{
    rec_t *r = calloc(16, sizeof(*r));
    wsc_options_t o;
    wsc_error_t err;
    char url[96];
    const char *d;

    /* Signed by the test CA: the system store does not know it. */
    int port = start_tls(fx.certs.cert, fx.certs.key, NULL);
    rec_options(&r[0], &o);
    d = expect_failure(fx.url, &o, &r[0], WSC_E_TLS);
    ck_assert_msg(strstr(d, "not trusted") != NULL, "%s", d);
    /* TLS to the plain port, plain to the TLS port. */
    snprintf(url, sizeof(url), "wss://127.0.0.1:%d/ws", fx.broker.port);
    rec_options(&r[1], &o);
    o.ca_file = fx.certs.ca;
    d = expect_failure(url, &o, &r[1], WSC_E_TLS);
    ck_assert_msg(strstr(d, "TLS") != NULL, "%s", d);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", port);
    rec_options(&r[2], &o);
    d = expect_failure(url, &o, &r[2], WSC_E_HANDSHAKE);
    /* An unreadable CA file is an invalid option. */
    rec_options(&r[3], &o);
    o.ca_file = "/nonexistent/ca.pem";
    ck_assert_ptr_null(wsc_connect(&fx.loop, fx.url, &o, &err));
    ck_assert_int_eq(err.code, WSC_E_INVAL);
    ck_assert_msg(strstr(err.text, "/nonexistent/ca.pem") != NULL, "%s", err.text);
    it_broker_stop(&fx.broker);

    /* A certificate for another name. */
    port = start_tls(fx.certs.other_cert, fx.certs.other_key, NULL);
    rec_options(&r[4], &o);
    o.ca_file = fx.certs.ca;
    d = expect_failure(fx.url, &o, &r[4], WSC_E_TLS);
    ck_assert_msg(strstr(d, "not valid for 127.0.0.1") != NULL, "%s", d);
    snprintf(url, sizeof(url), "wss://localhost:%d/ws", port);
    rec_options(&r[5], &o);
    o.ca_file = fx.certs.ca;
    d = expect_failure(url, &o, &r[5], WSC_E_TLS);
    ck_assert_msg(strstr(d, "not valid for localhost") != NULL, "%s", d);
    rec_options(&r[6], &o);
    o.insecure = true;
    wsc_client_t *c = open_at(fx.url, &r[6], &o);
    wsc_close(c);
    it_broker_stop(&fx.broker);

    /* Self-signed: refused, unless trusted as its own CA or insecure. */
    port = start_tls(fx.certs.self_cert, fx.certs.self_key, NULL);
    rec_options(&r[7], &o);
    d = expect_failure(fx.url, &o, &r[7], WSC_E_TLS);
    ck_assert_msg(strstr(d, "self-signed") != NULL, "%s", d);
    rec_options(&r[8], &o);
    o.ca_file = fx.certs.self_cert;
    c = open_at(fx.url, &r[8], &o);
    wsc_close(c);
    snprintf(url, sizeof(url), "wss://localhost:%d/ws", port);
    rec_options(&r[9], &o);
    o.insecure = true;
    c = open_at(url, &r[9], &o);
    wsc_close(c);
    it_broker_stop(&fx.broker);
    free(r);
}
END_TEST

/* A subscriber whose own limit is below what a compressed message inflates
 * to: the broker's frame is small, the inflated message is not. */
START_TEST(inflate_bounded_by_client_limit)
{
    rec_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    static const char *const args[] = {"--max-message", "64k", NULL};
    start_tls(fx.certs.cert, fx.certs.key, args);
    wsc_options_t o;
    rec_options(a, &o);
    o.ca_file = fx.certs.ca;
    o.max_message = 16384;
    o.reconnect = false;
    wsc_client_t *sub = open_at(fx.url, a, &o);
    wsc_subscribe(sub, "bound.t", NULL, rec_result_cb, a);
    ck_assert(rec_wait_results(&fx.loop, a, 1, WAIT));
    rec_options(b, &o);
    wsc_client_t *pub = open_at(fx.broker.url, b, &o);
    char *text = json_text(40000, true);
    ck_assert_int_eq(wsc_publish(pub, "bound.t", text, 40000, rec_result_cb, b), WSC_OK);
    free(text);
    ck_assert(tl_run_until(&fx.loop, rec_is_closed, a, WAIT));
    const rec_state_t *st = &a->states[a->nstates - 1];
    ck_assert_int_eq(st->err, WSC_E_PROTOCOL);
    ck_assert_msg(strstr(st->detail, "inflates past 16384") != NULL, "%s", st->detail);
    ck_assert_uint_eq(a->nmsgs_total, 0);
    wsc_close(sub);
    wsc_close(pub);
    free(a);
    free(b);
}
END_TEST

/* ---- a scripted server ---- */

typedef struct fake {
    int lfd, port;
    SSL_CTX *ctx;         /* TLS when set */
    char extensions[160]; /* Sec-WebSocket-Extensions to answer, "" for none */
    uint8_t *frames;      /* sent right after the 101 */
    size_t frames_len;
    char head[8192]; /* the request */
    size_t head_len;
    char sni[256];        /* the server name the client sent, "" if none */
    uint8_t got[1 << 16]; /* bytes after the head, until EOF */
    size_t got_len;
} fake_t;

typedef struct fio {
    int fd;
    SSL *ssl;
} fio_t;

static ssize_t fio_read(fio_t *f, void *p, size_t n, int timeout_ms)
{
    if (f->ssl != NULL && SSL_pending(f->ssl) > 0)
        return SSL_read(f->ssl, p, (int)n);
    struct pollfd pf = {.fd = f->fd, .events = POLLIN};
    if (poll(&pf, 1, timeout_ms) != 1)
        return -1;
    if (f->ssl == NULL)
        return read(f->fd, p, n);
    int r = SSL_read(f->ssl, p, (int)n);
    if (r <= 0 && SSL_get_error(f->ssl, r) == SSL_ERROR_WANT_READ)
        return fio_read(f, p, n, timeout_ms);
    return r;
}

static bool fio_write(fio_t *f, const void *p, size_t n)
{
    if (f->ssl != NULL)
        return SSL_write(f->ssl, p, (int)n) == (int)n;
    return write(f->fd, p, n) == (ssize_t)n;
}

static void *fake_run(void *arg)
{
    fake_t *s = arg;
    struct pollfd pf = {.fd = s->lfd, .events = POLLIN};
    if (poll(&pf, 1, WAIT) != 1)
        return NULL;
    fio_t f = {accept(s->lfd, NULL, NULL), NULL};
    if (f.fd < 0)
        return NULL;
    if (s->ctx != NULL) {
        f.ssl = SSL_new(s->ctx);
        SSL_set_fd(f.ssl, f.fd);
        if (SSL_accept(f.ssl) != 1)
            goto out;
        const char *name = SSL_get_servername(f.ssl, TLSEXT_NAMETYPE_host_name);
        snprintf(s->sni, sizeof(s->sni), "%s", name != NULL ? name : "");
    }
    wsh_request_t req;
    size_t scanned = 0;
    int hl = WS_AGAIN;
    while (hl == WS_AGAIN && s->head_len < sizeof(s->head)) {
        ssize_t n = fio_read(&f, s->head + s->head_len, sizeof(s->head) - s->head_len, WAIT);
        if (n <= 0)
            goto out;
        s->head_len += (size_t)n;
        hl = wsh_parse_request(s->head, s->head_len, &scanned, &req);
    }
    if (hl < 0)
        goto out;
    const wsh_str_t *key = wsh_header_get(req.headers, req.num_headers, "Sec-WebSocket-Key");
    char accept_key[WSH_ACCEPT_LEN + 1], resp[512];
    wsh_accept_key(key->p, key->len, accept_key);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                     "Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
                     accept_key, s->extensions[0] ? "Sec-WebSocket-Extensions: " : "",
                     s->extensions, s->extensions[0] ? "\r\n" : "");
    if (!fio_write(&f, resp, (size_t)n))
        goto out;
    if (s->frames_len > 0 && !fio_write(&f, s->frames, s->frames_len))
        goto out;
    for (;;) {
        ssize_t r = fio_read(&f, s->got + s->got_len, sizeof(s->got) - s->got_len, WAIT);
        if (r <= 0 || (s->got_len += (size_t)r) == sizeof(s->got))
            break;
    }
out:
    if (f.ssl != NULL)
        SSL_free(f.ssl);
    close(f.fd);
    return NULL;
}

static void fake_start(fake_t *s, pthread_t *th)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sa);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(s->lfd, 4), 0);
    getsockname(s->lfd, (struct sockaddr *)&sa, &slen);
    s->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(th, NULL, fake_run, s), 0);
}

static void fake_join(fake_t *s, pthread_t th)
{
    pthread_join(th, NULL);
    close(s->lfd);
    if (s->ctx != NULL)
        SSL_CTX_free(s->ctx);
}

static SSL_CTX *server_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    ck_assert(SSL_CTX_use_certificate_chain_file(ctx, fx.certs.cert) == 1);
    ck_assert(SSL_CTX_use_PrivateKey_file(ctx, fx.certs.key, SSL_FILETYPE_PEM) == 1);
    return ctx;
}

/* Append an unmasked server frame to buf. */
static size_t server_frame(uint8_t *buf, bool rsv1, const void *p, size_t n)
{
    size_t h = ws_frame_header(buf, WS_OP_TEXT, true, rsv1, n, NULL);
    memcpy(buf + h, p, n);
    return h + n;
}

/* A compressed server frame of text (no context takeover). */
static size_t server_compressed(uint8_t *buf, const char *text)
{
    pmd_deflater_t d;
    ck_assert_int_eq(pmd_deflater_init(&d, 15, true), PMD_OK);
    size_t cap = pmd_deflate_bound(&d, strlen(text));
    uint8_t *z = malloc(cap);
    ssize_t n = pmd_deflate(&d, (const uint8_t *)text, strlen(text), z, cap);
    ck_assert_int_gt(n, 0);
    size_t len = server_frame(buf, true, z, (size_t)n);
    free(z);
    pmd_deflater_end(&d);
    return len;
}

static const char HELLO[] =
    "{\"op\":\"hello\",\"client\":\"c1\",\"server\":\"fake/1\",\"heartbeat\":0,"
    "\"max_message\":%d}";

/* SNI and the offer, over TLS; a server_max_window_bits answer the offer
 * never asked for fails the connection. */
START_TEST(offer_sni_and_bad_answers)
{
    static const struct {
        bool tls;
        const char *host;
        bool deflate;
        const char *answer;
        const char *why;
    } cases[] = {
        {true, "localhost", true, "permessage-deflate; server_max_window_bits=10", "answered"},
        {true, "127.0.0.1", true, "permessage-deflate; foo=1", "answered"},
        {false, "127.0.0.1", false, "permessage-deflate", "not offered"},
        {false, "127.0.0.1", true, "permessage-deflate, permessage-deflate", "answered"},
        {false, "127.0.0.1", true, "x-webkit-deflate-frame", "answered"},
    };
    fake_t *s = calloc(1, sizeof(*s));
    rec_t *r = calloc(1, sizeof(*r));
    pthread_t th;
    char url[96];
    s->ctx = cases[_i].tls ? server_ctx() : NULL;
    snprintf(s->extensions, sizeof(s->extensions), "%s", cases[_i].answer);
    fake_start(s, &th);
    snprintf(url, sizeof(url), "%s://%s:%d/ws", cases[_i].tls ? "wss" : "ws", cases[_i].host,
             s->port);
    wsc_options_t o;
    rec_options(r, &o);
    o.ca_file = fx.certs.ca;
    o.deflate = cases[_i].deflate;
    o.token = "tok.en";
    const char *d = expect_failure(url, &o, r, WSC_E_HANDSHAKE);
    ck_assert_msg(strstr(d, cases[_i].why) != NULL, "%s", d);
    fake_join(s, th);
    s->head[s->head_len < sizeof(s->head) ? s->head_len : sizeof(s->head) - 1] = '\0';
    if (cases[_i].deflate)
        ck_assert_msg(strstr(s->head, "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                                      "client_max_window_bits\r\n") != NULL,
                      "%s", s->head);
    else
        ck_assert_msg(strstr(s->head, "Sec-WebSocket-Extensions") == NULL, "%s", s->head);
    ck_assert_ptr_nonnull(strstr(s->head, "\r\nAuthorization: Bearer tok.en\r\n"));
    if (cases[_i].tls)
        ck_assert_str_eq(s->sni, strcmp(cases[_i].host, "localhost") == 0 ? "localhost" : "");
    free(s);
    free(r);
}
END_TEST

/* The broker said max_message 1000: a message inflating past 1000 plus the
 * envelope is refused while inflating (1009), whatever the client's own
 * limit. */
START_TEST(inflate_bounded_by_broker_hello)
{
    fake_t *s = calloc(1, sizeof(*s));
    rec_t *r = calloc(1, sizeof(*r));
    pthread_t th;
    char url[96], hello[256];
    static char msg[6000];
    snprintf(s->extensions, sizeof(s->extensions),
             "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    s->frames = malloc(16384);
    snprintf(hello, sizeof(hello), HELLO, 1000);
    s->frames_len = server_frame(s->frames, false, hello, strlen(hello));
    int n = snprintf(msg, sizeof(msg), "{\"op\":\"message\",\"topic\":\"t\",\"seq\":1,\"data\":\"");
    memset(msg + n, 'z', 5000);
    strcpy(msg + n + 5000, "\"}");
    s->frames_len += server_compressed(s->frames + s->frames_len, msg);
    fake_start(s, &th);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s->port);
    wsc_options_t o;
    rec_options(r, &o);
    o.reconnect = false;
    wsc_client_t *c = client_at(url, r, &o);
    ck_assert(tl_run_until(&fx.loop, rec_is_closed, r, WAIT));
    ck_assert_int_eq(r->states[0].state, WSC_OPEN);
    const rec_state_t *st = &r->states[r->nstates - 1];
    ck_assert_int_eq(st->err, WSC_E_PROTOCOL);
    ck_assert_msg(strstr(st->detail, "inflates past 1256") != NULL, "%s", st->detail);
    wsc_close(c);
    fake_join(s, th);
    /* The client said why: Close 1009. */
    ws_parser_t p;
    ws_event_t ev;
    ws_parser_init(&p, WS_ROLE_SERVER, 0, WS_PARSER_ALLOW_RSV1);
    ssize_t used = ws_parser_feed(&p, s->got, s->got_len, &ev);
    ck_assert_int_gt(used, 0);
    ck_assert_int_eq(ev.type, WS_EV_CLOSE);
    ck_assert_int_eq(ev.close_code, 1009);
    ck_assert_uint_eq(r->nmsgs_total, 0);
    free(s->frames);
    free(s);
    free(r);
}
END_TEST

/* A compressed message is delivered; with deflate_send the client
 * compresses its own messages within the window the server allowed
 * (client_max_window_bits=9), each on its own (client_no_context_takeover). */
START_TEST(compressed_both_ways)
{
    fake_t *s = calloc(1, sizeof(*s));
    rec_t *r = calloc(1, sizeof(*r));
    pthread_t th;
    char url[96], hello[256];
    snprintf(s->extensions, sizeof(s->extensions),
             "permessage-deflate; client_no_context_takeover; client_max_window_bits=9");
    s->frames = malloc(16384);
    snprintf(hello, sizeof(hello), HELLO, 1 << 20);
    s->frames_len = server_frame(s->frames, false, hello, strlen(hello));
    s->frames_len += server_compressed(
        s->frames + s->frames_len,
        "{\"op\":\"message\",\"topic\":\"z.t\",\"seq\":7,\"data\":\"caf\xc3\xa9 caf\xc3\xa9\"}");
    fake_start(s, &th);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/ws", s->port);
    wsc_options_t o;
    rec_options(r, &o);
    o.deflate_send = true;
    o.deflate_min_size = 100;
    o.close_timeout_ms = 200;
    wsc_client_t *c = open_at(url, r, &o);
    ck_assert_str_eq(wsc_extensions(c),
                     "permessage-deflate; client_no_context_takeover; client_max_window_bits=9");
    ck_assert(rec_wait_msgs(&fx.loop, r, 1, WAIT));
    ck_assert_str_eq(r->msgs[0].topic, "z.t");
    ck_assert_uint_eq(r->msgs[0].seq, 7);
    ck_assert_str_eq(r->msgs[0].data, "\"caf\xc3\xa9 caf\xc3\xa9\"");
    /* Two identical publishes over 100 bytes (compressed alike: no context
     * is carried over), one under (sent plain). */
    char *text = json_text(3000, true);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(wsc_publish(c, "z.big", text, 3000, NULL, NULL), WSC_OK);
    ck_assert_int_eq(wsc_publish(c, "z.small", "1", 1, NULL, NULL), WSC_OK);
    tl_run_for(&fx.loop, 100);
    wsc_close(c);
    fake_join(s, th);

    ws_parser_t p;
    ws_parser_init(&p, WS_ROLE_SERVER, 0, WS_PARSER_ALLOW_RSV1 | WS_PARSER_SKIP_UTF8);
    uint8_t *in = s->got;
    size_t left = s->got_len;
    int frames = 0;
    size_t first_len = 0;
    while (left > 0 && frames < 3) {
        ws_event_t ev;
        ssize_t used = ws_parser_feed(&p, in, left, &ev);
        ck_assert_int_gt(used, 0);
        in += used;
        left -= (size_t)used;
        if (ev.type != WS_EV_DATA)
            continue;
        ck_assert(ev.first && ev.fin);
        if (frames < 2) {
            ck_assert_msg(ev.rsv1, "publish %d not compressed", frames);
            ck_assert_uint_lt(ev.len, 1000);
            if (frames == 0)
                first_len = ev.len;
            else
                ck_assert_uint_eq(ev.len, first_len);
            /* A 512-byte window inflater must accept it. */
            static uint8_t out[8192];
            z_stream z;
            memset(&z, 0, sizeof(z));
            ck_assert_int_eq(inflateInit2(&z, -9), Z_OK);
            uint8_t msgbuf[4096];
            memcpy(msgbuf, ev.data, ev.len);
            memcpy(msgbuf + ev.len, "\x00\x00\xff\xff", 4);
            z.next_in = msgbuf;
            z.avail_in = (uInt)ev.len + 4;
            z.next_out = out;
            z.avail_out = sizeof(out);
            int zr = inflate(&z, Z_SYNC_FLUSH);
            ck_assert_msg(zr == Z_OK || zr == Z_STREAM_END, "inflate: %d %s", zr,
                          z.msg ? z.msg : "");
            size_t olen = sizeof(out) - z.avail_out;
            inflateEnd(&z);
            out[olen] = '\0';
            ck_assert_msg(strstr((char *)out, "\"op\":\"publish\"") != NULL &&
                              strstr((char *)out, "\"topic\":\"z.big\"") != NULL,
                          "%.80s", out);
            ck_assert_ptr_nonnull(memmem(out, olen, text, 3000));
        } else {
            ck_assert(!ev.rsv1);
            ck_assert_ptr_nonnull(memmem(ev.data, ev.len, "z.small", 7));
        }
        frames++;
    }
    ck_assert_int_eq(frames, 3);
    free(text);
    free(s->frames);
    free(s);
    free(r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("tls");
    struct {
        const char *name;
        const TTest *test;
        int loops;
    } tests[] = {
        {"wss_round_trip_with_ca_file", wss_round_trip_with_ca_file, 2},
        {"ws_deflate_on_and_off", ws_deflate_on_and_off, 3},
        {"certificate_checks", certificate_checks, 1},
        {"inflate_bounded_by_client_limit", inflate_bounded_by_client_limit, 1},
        {"offer_sni_and_bad_answers", offer_sni_and_bad_answers, 5},
        {"inflate_bounded_by_broker_hello", inflate_bounded_by_broker_hello, 1},
        {"compressed_both_ways", compressed_both_ways, 1},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        TCase *tc = tcase_create(tests[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 60);
        tcase_add_loop_test(tc, tests[i].test, 0, tests[i].loops);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
