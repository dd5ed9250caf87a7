/*
 * test_auth.c - PROTOCOL.md section 6 and the limits against abuse:
 * tokens at the handshake (header and query; missing, malformed, wrongly
 * signed, alg none, expired, not yet valid, bad claims), ACL rules with
 * cover semantics, expiry of an open connection, `wsbroker token`, the
 * publish rate limit and the per-address connection limit.
 *
 * Tokens are signed here with OpenSSL directly, not with the broker's code.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define SECRET "test-secret-of-some-length-0123456789"

static void b64url(const void *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

/* header and claims JSON -> token signed with key (NULL: empty signature). */
static char *make_token(const char *header, const char *claims, const char *key)
{
    static char tok[4096];
    char h[1024], c[2048], s[64] = "";
    b64url(header, strlen(header), h);
    b64url(claims, strlen(claims), c);
    snprintf(tok, sizeof(tok), "%s.%s", h, c);
    if (key != NULL) {
        unsigned char mac[32];
        unsigned int n;
        HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)tok, strlen(tok), mac, &n);
        b64url(mac, n, s);
    }
    size_t len = strlen(tok);
    snprintf(tok + len, sizeof(tok) - len, ".%s", s);
    return tok;
}

static const char hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static char *token_acl(const char *pub, const char *sub, long exp_in)
{
    char claims[1024];
    long now = (long)time(NULL);
    if (exp_in != 0)
        snprintf(claims, sizeof(claims),
                 "{\"sub\":\"tester\",\"exp\":%ld,\"acl\":{\"publish\":%s,\"subscribe\":%s}}",
                 now + exp_in, pub, sub);
    else
        snprintf(claims, sizeof(claims),
                 "{\"sub\":\"tester\",\"acl\":{\"publish\":%s,\"subscribe\":%s}}", pub, sub);
    return make_token(hs256, claims, SECRET);
}

/* Upgrade to path with the token in an Authorization header (or NULL). */
static it_conn_t *open_with(int port, const char *token, int *status)
{
    char extra[4200] = "";
    if (token != NULL)
        snprintf(extra, sizeof(extra), "Authorization: Bearer %s\r\n", token);
    it_http_t r;
    it_conn_t *c = it_ws_try(port, "/ws", token ? extra : NULL, 0, 0, 0, status, &r);
    if (c == NULL) {
        char www[128];
        if (*status == 401)
            IT_ASSERT(it_http_header(&r, "WWW-Authenticate", www, sizeof(www)) &&
                          strncmp(www, "Bearer", 6) == 0,
                      "401 without WWW-Authenticate: Bearer");
        it_http_free(&r);
        return NULL;
    }
    msg_server_t m;
    it_expect_op(c, MSG_S_HELLO, &m);
    return c;
}

static void expect_401(int port, const char *token, const char *what)
{
    int st;
    it_conn_t *c = open_with(port, token, &st);
    IT_ASSERT(c == NULL && st == 401, "%s: expected 401, got %d", what, st);
}

START_TEST(handshake_needs_a_valid_token)
{
    it_broker_t b;
    it_broker_start(&b, "--auth-secret", SECRET);
    long now = (long)time(NULL);
    char claims[256];
    expect_401(b.port, NULL, "no token");
    expect_401(b.port, "not-a-token", "garbage");
    expect_401(b.port, "a.b.c", "three garbage parts");
    expect_401(b.port, make_token(hs256, "{\"sub\":\"x\"}", "another secret"), "wrong key");
    expect_401(b.port, make_token("{\"alg\":\"none\"}", "{\"sub\":\"x\"}", NULL), "alg none");
    expect_401(b.port, make_token("{\"alg\":\"none\"}", "{\"sub\":\"x\"}", SECRET),
               "alg none, signed anyway");
    expect_401(b.port, make_token("{\"alg\":\"HS512\"}", "{\"sub\":\"x\"}", SECRET), "alg HS512");
    expect_401(b.port, make_token("{\"typ\":\"JWT\"}", "{\"sub\":\"x\"}", SECRET), "no alg");
    snprintf(claims, sizeof(claims), "{\"sub\":\"x\",\"exp\":%ld}", now - 10);
    expect_401(b.port, make_token(hs256, claims, SECRET), "expired");
    snprintf(claims, sizeof(claims), "{\"sub\":\"x\",\"nbf\":%ld}", now + 600);
    expect_401(b.port, make_token(hs256, claims, SECRET), "not yet valid");
    expect_401(b.port, make_token(hs256, "{\"sub\":\"x\",\"exp\":\"soon\"}", SECRET),
               "exp not a number");
    expect_401(b.port, make_token(hs256, "{\"acl\":{\"publish\":[\"a..b\"]}}", SECRET),
               "bad pattern in acl");
    expect_401(b.port, make_token(hs256, "[1,2]", SECRET), "claims not an object");
    /* A valid token whose signature was altered by one character. */
    char *good = token_acl("[\"a.>\"]", "[\"a.>\"]", 600);
    char altered[4096];
    snprintf(altered, sizeof(altered), "%s", good);
    char *last = altered + strlen(altered) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    expect_401(b.port, altered, "altered signature");

    int st;
    it_conn_t *c = open_with(b.port, good, &st);
    IT_ASSERT(c != NULL, "valid token in the header: %d", st);
    it_conn_free(c);
    /* In the query, for browsers; percent-encoding allowed. */
    char path[4200];
    snprintf(path, sizeof(path), "/ws?x=1&token=%s", good);
    c = it_ws_try(b.port, path, NULL, 0, 0, 0, &st, NULL);
    IT_ASSERT(c != NULL, "valid token in the query: %d", st);
    it_conn_free(c);
    /* /echo and plain HTTP need no token. */
    c = it_ws_try(b.port, "/echo", NULL, 0, 0, 0, &st, NULL);
    IT_ASSERT(c != NULL, "/echo without a token: %d", st);
    it_conn_free(c);
    it_http_t r;
    IT_ASSERT(it_http_get(b.port, "/healthz", NULL, &r) == 200, "/healthz");
    it_http_free(&r);
    IT_ASSERT(it_metric(b.port, "wsbroker_auth_failures_total") == 14, "401s counted: %g",
              it_metric(b.port, "wsbroker_auth_failures_total"));
    it_broker_stop(&b);
}
END_TEST

static void expect_forbidden(it_conn_t *c, const char *op, const char *topic)
{
    it_send_json(c, "{\"op\":\"%s\",\"topic\":\"%s\",\"data\":1,\"id\":\"f\"}", op, topic);
    it_expect_error(c, "\"f\"", "forbidden");
}

START_TEST(acl_rules)
{
    it_broker_t b;
    it_broker_start(&b, "--auth-secret", SECRET);
    int st;
    it_conn_t *c =
        open_with(b.port, token_acl("[\"chat.>\",\"log.x\"]", "[\"chat.*\",\"news.>\"]", 600), &st);
    IT_ASSERT(c != NULL, "open: %d", st);
    it_conn_t *peer = open_with(b.port, token_acl("[]", "[\">\"]", 600), &st);
    IT_ASSERT(peer != NULL, "open peer: %d", st);
    it_subscribe(peer, "chat.room");
    it_publish(c, "chat.room", "1");
    it_expect_message(peer, "chat.room", 1, "1");
    it_publish(c, "chat.a.b", "2");
    it_publish(c, "log.x", "3");
    expect_forbidden(c, "publish", "log.y");
    expect_forbidden(c, "publish", "chat");
    expect_forbidden(peer, "publish", "chat.room");
    /* Subscribe: the grant must cover the whole requested pattern. */
    it_subscribe(c, "chat.*");
    it_subscribe(c, "chat.room");
    it_subscribe(c, "news.*");
    it_subscribe(c, "news.a.b");
    it_subscribe(c, "news.>");
    expect_forbidden(c, "subscribe", "chat.>");
    expect_forbidden(c, "subscribe", "chat.a.b");
    expect_forbidden(c, "subscribe", ">");
    expect_forbidden(c, "subscribe", "*.room");
    /* Refusals keep the connection. */
    it_sync(c);
    it_subscribe(peer, "anything.at.all");
    /* A token without acl grants nothing. */
    it_conn_t *none = open_with(b.port, make_token(hs256, "{\"sub\":\"nobody\"}", SECRET), &st);
    IT_ASSERT(none != NULL, "token without acl: %d", st);
    expect_forbidden(none, "publish", "chat.room");
    expect_forbidden(none, "subscribe", "chat.room");
    it_sync(none);
    IT_ASSERT(it_metric(b.port, "wsbroker_forbidden_total") == 9, "forbidden counted: %g",
              it_metric(b.port, "wsbroker_forbidden_total"));
    it_conn_free(c);
    it_conn_free(peer);
    it_conn_free(none);
    it_broker_stop(&b);
}
END_TEST

START_TEST(open_connection_closed_when_the_token_expires)
{
    it_broker_t b;
    it_broker_start(&b, "--auth-secret", SECRET);
    int st;
    it_conn_t *c = open_with(b.port, token_acl("[\"t\"]", "[\"t\"]", 2), &st);
    IT_ASSERT(c != NULL, "open: %d", st);
    it_subscribe(c, "t");
    int64_t t0 = it_now_ms();
    it_expect_close(c, 1008, "token expired");
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(took >= 500 && took < 3500, "closed after %lld ms", (long long)took);
    it_conn_free(c);
    IT_ASSERT(it_metric(b.port, "wsbroker_tokens_expired_total") == 1, "not counted");
    it_broker_stop(&b);
}
END_TEST

START_TEST(token_subcommand)
{
    char dir[] = "/tmp/wsbroker-it-tok-XXXXXX";
    IT_ASSERT(mkdtemp(dir) != NULL, "mkdtemp");
    char file[256];
    snprintf(file, sizeof(file), "%s/secret", dir);
    FILE *f = fopen(file, "w");
    IT_ASSERT(f != NULL, "fopen");
    fputs(SECRET "\n", f);
    fclose(f);
    char out[8192], err[1024];
    int st =
        it_run((const char *const[]){"token", "--secret-file", file, "--sub", "cli", "--publish",
                                     "cli.>", "--subscribe", "cli.*", "--ttl", "600", NULL},
               NULL, out, sizeof(out), err, sizeof(err), 5000);
    IT_ASSERT(st == 0, "wsbroker token: status %d, %s", st, err);
    out[strcspn(out, "\n")] = '\0';
    it_broker_t b;
    char arg[300];
    snprintf(arg, sizeof(arg), "%s", file);
    it_broker_start(&b, "--auth-secret-file", arg);
    it_conn_t *c = open_with(b.port, out, &st);
    IT_ASSERT(c != NULL, "minted token refused: %d", st);
    it_subscribe(c, "cli.x");
    expect_forbidden(c, "subscribe", "cli.>");
    it_conn_t *p = open_with(b.port, out, &st);
    it_publish(p, "cli.x", "\"hi\"");
    it_expect_message(c, "cli.x", 1, "\"hi\"");
    it_conn_free(c);
    it_conn_free(p);
    it_broker_stop(&b);
    st = it_run((const char *const[]){"token", "--secret", "x", "--publish", "a..b", NULL}, NULL,
                out, sizeof(out), err, sizeof(err), 5000);
    IT_ASSERT(st == 2 && strstr(err, "a..b"), "bad pattern: status %d, %s", st, err);
    st = it_run((const char *const[]){"token", "--sub", "x", NULL}, NULL, out, sizeof(out), err,
                sizeof(err), 5000);
    IT_ASSERT(st == 2 && strstr(err, "secret"), "no secret: status %d, %s", st, err);
    st = it_run((const char *const[]){"token", "--help", NULL}, NULL, out, sizeof(out), err,
                sizeof(err), 5000);
    IT_ASSERT(st == 0 && strstr(out, "--subscribe"), "--help: status %d", st);
    /* The same program run as wsbroker-token (the build's symlink). */
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "'%s-token' --secret '%s' --sub alias --publish 'a.>' --ttl 60",
             WSBROKER_BIN, SECRET);
    FILE *tp = popen(cmd, "r");
    IT_ASSERT(tp != NULL, "popen %s", cmd);
    char tok[2048] = "";
    size_t tn = fread(tok, 1, sizeof(tok) - 1, tp);
    tok[tn] = '\0';
    IT_ASSERT(pclose(tp) == 0 && strncmp(tok, "eyJ", 3) == 0 && strchr(tok, '.') != NULL,
              "wsbroker-token: %s", tok);
    st = it_run((const char *const[]){"--auth-secret-file", "/nonexistent/secret", NULL}, NULL, out,
                sizeof(out), err, sizeof(err), 5000);
    IT_ASSERT(st == 2 && strstr(err, "auth-secret-file"), "missing secret file: %d %s", st, err);
    snprintf(arg, sizeof(arg), "rm -rf '%s'", dir);
    IT_ASSERT(system(arg) == 0, "cleanup");
}
END_TEST

/* ---- limits ---- */

START_TEST(publish_rate_limit)
{
    it_broker_t b;
    it_broker_start(&b, "--rate-limit", "10", "--rate-burst", "5");
    it_conn_t *c = it_ws_hello(b.port, NULL);
    for (int i = 1; i <= 12; i++)
        it_send_json(c, "{\"op\":\"publish\",\"topic\":\"r\",\"data\":%d,\"id\":%d}", i, i);
    int acks = 0, limited = 0;
    for (int i = 1; i <= 12; i++) {
        msg_server_t m;
        it_expect_json(c, &m, IT_TIMEOUT);
        if (m.op == MSG_S_ACK) {
            acks++;
        } else {
            IT_ASSERT(m.op == MSG_S_ERROR && strcmp(m.code, "rate_limited") == 0, "got %s", m.code);
            limited++;
        }
    }
    IT_ASSERT(acks >= 5 && acks <= 6 && limited == 12 - acks, "burst 5: %d acks, %d refused", acks,
              limited);
    /* Tokens come back at 10 per second; a second without a refusal ends
     * the spell. */
    it_sleep_ms(1200);
    it_publish(c, "r", "0");
    /* Keep exceeding: closed after 5 s of refusals. A pause of over a
     * second between two refusals (this process or the broker not
     * scheduled on a loaded machine) starts the count again, so the bound
     * leaves room for a few. */
    int64_t t0 = it_now_ms();
    int code = 0;
    while (it_now_ms() - t0 < 30000 && code == 0) {
        it_send_json(c, "{\"op\":\"publish\",\"topic\":\"r\",\"data\":0}");
        for (;;) {
            it_ev_t ev = it_recv(c, 0);
            if (ev.type == IT_EV_CLOSE) {
                code = ev.close_code;
                break;
            }
            if (ev.type != IT_EV_TEXT)
                break;
        }
        it_sleep_ms(20);
    }
    IT_ASSERT(code == 1008, "no close 1008 for a client over the limit for 30 s (%d)", code);
    int64_t took = it_now_ms() - t0;
    IT_ASSERT(took >= 4500, "closed after only %lld ms", (long long)took);
    it_conn_free(c);
    /* Others are unaffected. */
    it_conn_t *d = it_ws_hello(b.port, NULL);
    it_publish(d, "r", "1");
    it_conn_free(d);
    IT_ASSERT(it_metric(b.port, "wsbroker_rate_limit_closes_total") == 1, "close not counted");
    IT_ASSERT(it_metric(b.port, "wsbroker_rate_limited_total") > 100, "refusals not counted");
    it_broker_stop(&b);
}
END_TEST

/* A /ws connection, tried every 20 ms for up to ms while refused; NULL if
 * it never was accepted (*st: the last answer). */
static it_conn_t *ws_within(int port, int ms, int *st)
{
    it_conn_t *c = it_ws_try(port, "/ws", NULL, 0, 0, 0, st, NULL);
    for (int64_t end = it_now_ms() + ms; c == NULL && it_now_ms() < end;) {
        it_sleep_ms(20);
        c = it_ws_try(port, "/ws", NULL, 0, 0, 0, st, NULL);
    }
    return c;
}

START_TEST(connections_per_address)
{
    it_broker_t b;
    it_broker_start(&b, "--max-connections-per-ip", "3");
    it_conn_t *c[3];
    int st = 0;
    /* A connection counts until the broker has seen it close, and the
     * start-up probe (GET /healthz) may not be seen yet on a busy machine:
     * the first three may be refused for a moment, not for good. */
    for (int i = 0; i < 3; i++) {
        c[i] = ws_within(b.port, 3000, &st);
        IT_ASSERT(c[i] != NULL, "connection %d of 3 refused for 3 s (%d)", i + 1, st);
        msg_server_t m;
        it_expect_json(c[i], &m, IT_TIMEOUT);
        IT_ASSERT(m.op == MSG_S_HELLO, "connection %d: expected the hello first", i + 1);
    }
    it_http_t r;
    it_conn_t *x = it_ws_try(b.port, "/ws", NULL, 0, 0, 0, &st, &r);
    /* Over TLS a refusal at accept cannot be answered: the socket closes. */
    IT_ASSERT(x == NULL && ((st == 503 && strstr(r.body, "this address")) ||
                            (it_tls_mode() && st == IT_HTTP_EOF)),
              "fourth connection: %d", st);
    it_http_free(&r);
    it_conn_free(c[0]);
    x = ws_within(b.port, 3000, &st);
    IT_ASSERT(x != NULL, "a freed slot was not reused");
    it_conn_free(x);
    for (int i = 1; i < 3; i++)
        it_conn_free(c[i]);
    /* The slots free up as the broker sees the clients go. */
    double refused = -1;
    for (int64_t end = it_now_ms() + 3000; refused < 1 && it_now_ms() < end; it_sleep_ms(20)) {
        it_http_t m;
        if (it_http_get(b.port, "/metrics", NULL, &m) == 200) {
            const char *p = strstr(m.body, "\nwsbroker_connections_refused_per_ip_total ");
            refused = p ? atof(p + strlen("\nwsbroker_connections_refused_per_ip_total ")) : 0;
        }
        it_http_free(&m);
    }
    IT_ASSERT(refused >= 1, "per-address refusals not counted (%g)", refused);
    it_broker_stop(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = tcase_create("auth");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, handshake_needs_a_valid_token);
    tcase_add_test(tc, acl_rules);
    tcase_add_test(tc, open_connection_closed_when_the_token_expires);
    tcase_add_test(tc, token_subcommand);
    tcase_add_test(tc, publish_rate_limit);
    tcase_add_test(tc, connections_per_address);
    suite_add_tcase(s, tc);
    return it_run_suite(s);
}
