/*
 * race.c - `wsbroker-soak --race N`: a targeted check of one ordering the
 * soak test found broken under load, made deterministic.
 *
 * PROTOCOL.md section 4: a message is delivered to the subscribers
 * subscribed when the broker processes the publish. So once a publisher
 * holds the ack of a publish, a subscriber that sends its unsubscribe (or
 * its Close) only afterwards must receive that message before the
 * unsubscribe ack (or before the broker's Close reply).
 *
 * The scenario puts the publisher on one worker and the subscriber on
 * another (the hello's client id names the worker), keeps the subscriber's
 * worker busy reading bursts of requests from other connections, makes the
 * subscriber's socket readable (a Ping) just before the publish, and sends
 * the unsubscribe (even iterations) or a Close (odd ones) the moment the
 * publish ack arrives. Every iteration where the acked message did not
 * arrive first is a violation.
 */
#define _GNU_SOURCE
#include "soak.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF      (256 * 1024)
#define NLOADERS  50
#define BURST_REQ 1000 /* requests per loader per iteration (divided by the slack) */

typedef struct bc {
    int fd;
    int worker;
    ws_parser_t wp;
    uint8_t *buf;
    size_t off, len;
    uint8_t *msg;
    size_t mlen, mcap;
    uint64_t rng;
} bc_t;

enum { EV_TEXT = 1, EV_CLOSE, EV_TIMEOUT, EV_EOF };

static void bc_send(bc_t *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

static size_t frame(bc_t *c, uint8_t *out, size_t cap, uint8_t op, const void *p, size_t n)
{
    uint8_t mask[4];
    uint64_t r = rng_next(&c->rng);
    memcpy(mask, &r, 4);
    ssize_t k = ws_frame_encode(out, cap, op, true, p, n, mask);
    return k > 0 ? (size_t)k : 0;
}

static void bc_frame(bc_t *c, uint8_t op, const void *p, size_t n)
{
    uint8_t out[512];
    bc_send(c, out, frame(c, out, sizeof(out), op, p, n));
}

static void bc_text(bc_t *c, const char *s)
{
    bc_frame(c, WS_OP_TEXT, s, strlen(s));
}

/* Wait up to timeout_ms for the next text message or Close. Pings are
 * answered. For EV_TEXT, data and len hold the message until the next call. */
static int bc_next(bc_t *c, int timeout_ms, const uint8_t **data, size_t *len)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        while (c->off < c->len) {
            ws_event_t ev;
            ssize_t k = ws_parser_feed(&c->wp, c->buf + c->off, c->len - c->off, &ev);
            if (k < 0)
                return EV_EOF;
            c->off += (size_t)k;
            if (ev.type == WS_EV_PING) {
                bc_frame(c, WS_OP_PONG, ev.data, ev.len);
            } else if (ev.type == WS_EV_CLOSE) {
                *len = ev.close_code;
                return EV_CLOSE;
            } else if (ev.type == WS_EV_DATA) {
                if (ev.first)
                    c->mlen = 0;
                if (c->mlen + ev.len > c->mcap) {
                    c->mcap = (c->mlen + ev.len) * 2;
                    c->msg = realloc(c->msg, c->mcap);
                    if (c->msg == NULL)
                        exit(3);
                }
                memcpy(c->msg + c->mlen, ev.data, ev.len);
                c->mlen += ev.len;
                if (ev.fin) {
                    *data = c->msg;
                    *len = c->mlen;
                    return EV_TEXT;
                }
            }
        }
        c->off = c->len = 0;
        int left = (int)(deadline - now_ms());
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return EV_TIMEOUT;
        ssize_t n = recv(c->fd, c->buf, RBUF, 0);
        if (n <= 0)
            return EV_EOF;
        c->len = (size_t)n;
    }
}

/* Next broker message parsed into m; false on timeout, EOF or Close. */
static bool bc_msg(bc_t *c, msg_server_t *m, int timeout_ms)
{
    const uint8_t *d;
    size_t n;
    if (bc_next(c, timeout_ms, &d, &n) != EV_TEXT)
        return false;
    return msg_parse_server((const char *)d, n, m) == MSG_OK;
}

static void bc_close(bc_t *c)
{
    if (c == NULL)
        return;
    close(c->fd);
    free(c->buf);
    free(c->msg);
    free(c);
}

static bc_t *bc_open(void)
{
    bc_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        exit(3);
    c->rng = rng_next(&grng) | 1;
    c->buf = malloc(RBUF);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->buf == NULL || c->fd < 0)
        exit(3);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)broker_port())};
    a.sin_addr.s_addr = htonl(0x7f000001u);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        bc_close(c);
        return NULL;
    }
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++)
        nonce[i] = (uint8_t)rng_next(&c->rng);
    char key[WSH_KEY_LEN + 1], host[32], req[512];
    wsh_make_key(nonce, key);
    snprintf(host, sizeof(host), "127.0.0.1:%d", broker_port());
    int n = wsh_write_request(req, sizeof(req), host, "/ws", key, NULL);
    bc_send(c, req, (size_t)n);
    size_t scan = 0;
    static wsh_response_t res;
    int64_t deadline = now_ms() + 5000;
    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0) {
            bc_close(c);
            return NULL;
        }
        ssize_t r = recv(c->fd, c->buf + c->len, RBUF - c->len, 0);
        if (r <= 0) {
            bc_close(c);
            return NULL;
        }
        c->len += (size_t)r;
        int h = wsh_parse_response((const char *)c->buf, c->len, &scan, &res);
        if (h == WS_AGAIN)
            continue;
        if (h < 0 || wsh_check_101(&res, key) != WS_OK) {
            bc_close(c);
            return NULL;
        }
        c->off = (size_t)h;
        break;
    }
    ws_parser_init(&c->wp, WS_ROLE_CLIENT, 0, 0);
    msg_server_t m;
    if (!bc_msg(c, &m, 5000) || m.op != MSG_S_HELLO) {
        bc_close(c);
        return NULL;
    }
    c->worker = atoi(m.client);
    return c;
}

/* A connection on the given worker (others are closed). */
static bc_t *open_on(int worker)
{
    for (int tries = 0; tries < 200; tries++) {
        bc_t *c = bc_open();
        if (c == NULL)
            return NULL;
        if (c->worker == worker)
            return c;
        bc_close(c);
    }
    return NULL;
}

/* Read whatever a loader has without blocking (pongs to its bursts). */
static void drain(bc_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->buf, RBUF, MSG_DONTWAIT);
        if (n <= 0)
            return;
        /* Pings from the broker's heartbeat may be in there: answer any. */
        size_t off = 0;
        while (off < (size_t)n) {
            ws_event_t ev;
            ssize_t k = ws_parser_feed(&c->wp, c->buf + off, (size_t)n - off, &ev);
            if (k < 0)
                return;
            off += (size_t)k;
            if (ev.type == WS_EV_PING)
                bc_frame(c, WS_OP_PONG, ev.data, ev.len);
        }
    }
}

/* Subscribe c to race.t; returns the ack, or false. */
static bool subscribe(bc_t *c, uint64_t *seq, uint64_t *stray)
{
    bc_text(c, "{\"op\":\"subscribe\",\"topic\":\"race.t\",\"id\":\"s\"}");
    msg_server_t m;
    for (;;) {
        if (!bc_msg(c, &m, 5000))
            return false;
        if (m.op == MSG_S_MESSAGE) {
            (*stray)++;
            continue;
        }
        if (m.op == MSG_S_ACK) {
            *seq = m.seq;
            return true;
        }
        if (m.op == MSG_S_ERROR)
            return false;
    }
}

int race_main(int iterations)
{
    if (cfg.workers < 2) {
        fprintf(stderr, "wsbroker-soak --race needs --workers 2 or more\n");
        return 2;
    }
    bc_t *pub = open_on(0), *sub = open_on(1);
    bc_t *load[NLOADERS];
    for (int i = 0; i < NLOADERS; i++)
        if ((load[i] = open_on(1)) == NULL)
            pub = NULL;
    if (pub == NULL || sub == NULL) {
        violation("race: could not place connections on workers 0 and 1");
        return 1;
    }
    uint64_t seq = 0, stray = 0;
    if (!subscribe(sub, &seq, &stray)) {
        violation("race: subscribe failed");
        return 1;
    }
    /* One burst of small requests, sent by every loader each iteration. */
    size_t blen = 0;
    uint8_t *burst = malloc(BURST_REQ * 32);
    if (burst == NULL)
        exit(3);
    int nreq = (int)(BURST_REQ / cfg.slack);
    int wait = (int)(5000 * cfg.slack);
    for (int i = 0; i < nreq; i++)
        blen += frame(sub, burst + blen, 32, WS_OP_TEXT, "{\"op\":\"ping\"}", 13);
    int lost_unsub = 0, lost_close = 0, n_unsub = 0, n_close = 0;
    char req[160];
    for (int it = 0; it < iterations; it++) {
        for (int i = 0; i < NLOADERS; i++)
            bc_send(load[i], burst, blen);
        bc_frame(sub, WS_OP_PING, "x", 1);
        snprintf(req, sizeof(req),
                 "{\"op\":\"publish\",\"topic\":\"race.t\",\"data\":%d,\"id\":%d}", it, it);
        bc_text(pub, req);
        msg_server_t m;
        bool acked = false;
        while (bc_msg(pub, &m, wait))
            if (m.op == MSG_S_ACK) {
                acked = true;
                break;
            }
        if (!acked) {
            violation("race: publish %d not acknowledged within %d ms", it, wait);
            break;
        }
        uint64_t s = m.seq;
        bool by_close = it % 2 == 1;
        if (by_close)
            bc_frame(sub, WS_OP_CLOSE, "\x03\xe8", 2);
        else
            bc_text(sub, "{\"op\":\"unsubscribe\",\"topic\":\"race.t\",\"id\":\"u\"}");
        bool got = false, done = false;
        while (!done) {
            const uint8_t *d;
            size_t n;
            int ev = bc_next(sub, wait, &d, &n);
            if (ev == EV_CLOSE && by_close) {
                done = true;
            } else if (ev == EV_TEXT && msg_parse_server((const char *)d, n, &m) == MSG_OK) {
                if (m.op == MSG_S_MESSAGE && m.seq == s)
                    got = true;
                if (m.op == MSG_S_ACK && !by_close)
                    done = true;
            } else if (ev != EV_TEXT) {
                violation("race: subscriber got %s waiting for the %s reply",
                          ev == EV_TIMEOUT ? "nothing" : "EOF or a bad frame",
                          by_close ? "Close" : "unsubscribe");
                goto out;
            }
        }
        if (by_close)
            n_close++;
        else
            n_unsub++;
        if (!got) {
            if (by_close)
                lost_close++;
            else
                lost_unsub++;
            violation("race: iteration %d: publish seq %llu was acknowledged before the %s was "
                      "sent, and the subscriber got its %s without the message",
                      it, (unsigned long long)s, by_close ? "Close" : "unsubscribe",
                      by_close ? "Close reply" : "unsubscribe ack");
        }
        for (int i = 0; i < NLOADERS; i++)
            drain(load[i]);
        if (by_close) {
            bc_close(sub);
            if ((sub = open_on(1)) == NULL) {
                violation("race: could not reconnect the subscriber");
                goto out;
            }
        }
        if (!subscribe(sub, &seq, &stray)) {
            violation("race: resubscribe failed");
            goto out;
        }
    }
out:
    if (stray > 0)
        violation("race: %llu message(s) arrived while not subscribed", (unsigned long long)stray);
    printf("soak-race: %d unsubscribes, %d lost an acknowledged message; %d Closes, %d lost one; "
           "%llu strays\n",
           n_unsub, lost_unsub, n_close, lost_close, (unsigned long long)stray);
    free(burst);
    bc_close(pub);
    bc_close(sub);
    for (int i = 0; i < NLOADERS; i++)
        bc_close(load[i]);
    return 0;
}
