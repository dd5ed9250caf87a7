/*
 * relay.c - the TLS runs of the integration suites (IT_TLS=1): a relay in
 * the test process takes each plain TCP connection of a test and carries
 * it over TLS to the broker's --tls-port, so that every suite written for
 * ws:// drives the broker's TLS transport unchanged.
 *
 * One thread, poll(2) over every socket, non-blocking OpenSSL. Each
 * direction has a small buffer and a side is only read while its buffer
 * has room, so a test that stops reading stops the relay reading from the
 * broker and the broker sees the backpressure. Endings are mirrored: a FIN
 * (or close_notify) from one side becomes a FIN on the other, a reset
 * becomes a reset.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.h"

#define BUF     16384
#define SOCKBUF 32768

typedef struct pipe_ {
    uint8_t buf[BUF];
    size_t len;
} pipe_t;

typedef struct link_ {
    int plain, tls; /* the test's socket, the socket to the broker */
    SSL *ssl;
    bool handshaken;
    bool plain_eof, tls_eof; /* FIN (or close_notify) read from that side */
    bool up_shut, down_shut; /* FIN passed on to the broker / the test */
    bool dead;
    pipe_t up, down; /* test -> broker, broker -> test */
} link_t_;

typedef struct relay {
    int listen_fd, tls_port;
    SSL_CTX *ctx;
    link_t_ **links;
    size_t n, cap;
} relay_t;

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void reset_close(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void drop(link_t_ *l, bool reset_plain, bool reset_tls)
{
    if (reset_plain)
        reset_close(l->plain);
    else
        close(l->plain);
    if (reset_tls)
        reset_close(l->tls);
    else
        close(l->tls);
    SSL_free(l->ssl);
    l->dead = true;
}

static void accept_one(relay_t *r)
{
    int fd = accept(r->listen_fd, NULL, NULL);
    if (fd < 0)
        return;
    int t = socket(AF_INET, SOCK_STREAM, 0);
    int sz = SOCKBUF, one = 1;
    setsockopt(t, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->tls_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (t < 0 || connect(t, (struct sockaddr *)&a, sizeof(a)) != 0) {
        /* The broker refused: the test sees the same. */
        reset_close(fd);
        if (t >= 0)
            close(t);
        return;
    }
    nonblock(fd);
    nonblock(t);
    link_t_ *l = calloc(1, sizeof(*l));
    SSL *ssl = SSL_new(r->ctx);
    if (l == NULL || ssl == NULL) {
        free(l);
        SSL_free(ssl);
        reset_close(fd);
        close(t);
        return;
    }
    l->plain = fd;
    l->tls = t;
    l->ssl = ssl;
    SSL_set_fd(ssl, t);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set_connect_state(ssl);
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        link_t_ **nl = realloc(r->links, ncap * sizeof(*nl));
        if (nl == NULL) {
            drop(l, true, true);
            free(l);
            return;
        }
        r->links = nl;
        r->cap = ncap;
    }
    r->links[r->n++] = l;
}

/* Move whatever can move now; true if anything did. */
static bool pump(link_t_ *l)
{
    bool moved = false;
    if (!l->handshaken) {
        int rc = SSL_do_handshake(l->ssl);
        if (rc == 1) {
            l->handshaken = true;
            moved = true;
        } else {
            int e = SSL_get_error(l->ssl, rc);
            ERR_clear_error();
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                drop(l, true, false); /* refused or dropped during the handshake */
                return false;
            }
            return false;
        }
    }
    /* test -> relay */
    if (!l->plain_eof && l->up.len < BUF) {
        ssize_t n = recv(l->plain, l->up.buf + l->up.len, BUF - l->up.len, 0);
        if (n > 0) {
            l->up.len += (size_t)n;
            moved = true;
        } else if (n == 0) {
            l->plain_eof = true;
            moved = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            drop(l, false, true); /* the test reset: reset the broker side */
            return false;
        }
    }
    /* relay -> broker */
    if (l->up.len > 0) {
        int n = SSL_write(l->ssl, l->up.buf, (int)l->up.len);
        if (n > 0) {
            memmove(l->up.buf, l->up.buf + n, l->up.len - (size_t)n);
            l->up.len -= (size_t)n;
            moved = true;
        } else {
            int e = SSL_get_error(l->ssl, n);
            ERR_clear_error();
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                drop(l, true, true);
                return false;
            }
        }
    }
    if (l->plain_eof && l->up.len == 0 && !l->up_shut) {
        SSL_shutdown(l->ssl);
        ERR_clear_error();
        shutdown(l->tls, SHUT_WR);
        l->up_shut = true;
        moved = true;
    }
    /* broker -> relay */
    while (!l->tls_eof && l->down.len < BUF) {
        int n = SSL_read(l->ssl, l->down.buf + l->down.len, (int)(BUF - l->down.len));
        if (n > 0) {
            l->down.len += (size_t)n;
            moved = true;
            continue;
        }
        int e = SSL_get_error(l->ssl, n);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
            l->tls_eof = true;
            moved = true;
            break;
        }
        /* The broker reset the connection: so does the relay. */
        drop(l, true, false);
        return false;
    }
    /* relay -> test */
    if (l->down.len > 0) {
        ssize_t n = send(l->plain, l->down.buf, l->down.len, MSG_NOSIGNAL);
        if (n > 0) {
            memmove(l->down.buf, l->down.buf + n, l->down.len - (size_t)n);
            l->down.len -= (size_t)n;
            moved = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            drop(l, false, true);
            return false;
        }
    }
    if (l->tls_eof && l->down.len == 0 && !l->down_shut) {
        shutdown(l->plain, SHUT_WR);
        l->down_shut = true;
        moved = true;
    }
    if (l->up_shut && l->down_shut) {
        drop(l, false, false);
        return false;
    }
    return moved;
}

static void *run(void *arg)
{
    relay_t *r = arg;
    struct pollfd *pfd = NULL;
    size_t pcap = 0;
    for (;;) {
        /* Settle every link, then wait for the sockets that can move. */
        for (size_t i = 0; i < r->n; i++) {
            for (int k = 0; k < 64 && pump(r->links[i]); k++)
                ;
        }
        size_t keep = 0;
        for (size_t i = 0; i < r->n; i++) {
            if (r->links[i]->dead)
                free(r->links[i]);
            else
                r->links[keep++] = r->links[i];
        }
        r->n = keep;
        if (2 * r->n + 1 > pcap) {
            pcap = 2 * r->n + 64;
            pfd = realloc(pfd, pcap * sizeof(*pfd));
            if (pfd == NULL)
                return NULL;
        }
        pfd[0] = (struct pollfd){r->listen_fd, POLLIN, 0};
        for (size_t i = 0; i < r->n; i++) {
            link_t_ *l = r->links[i];
            short pe = 0, te = POLLIN;
            if (!l->plain_eof && l->up.len < BUF)
                pe |= POLLIN;
            if (l->down.len > 0)
                pe |= POLLOUT;
            if (l->up.len > 0 || !l->handshaken)
                te |= POLLOUT;
            pfd[1 + 2 * i] = (struct pollfd){l->plain, pe, 0};
            pfd[2 + 2 * i] = (struct pollfd){l->tls, te, 0};
        }
        poll(pfd, 1 + 2 * r->n, 50);
        if (pfd[0].revents & POLLIN)
            for (int k = 0; k < 16; k++) {
                size_t before = r->n;
                accept_one(r);
                if (r->n == before)
                    break;
            }
    }
    return NULL;
}

int it_relay_start(int tls_port)
{
    relay_t *r = calloc(1, sizeof(*r));
    IT_ASSERT(r != NULL, "relay: out of memory");
    r->tls_port = tls_port;
    /* Relay threads run until the process exits: OpenSSL must not free
     * its locks at exit under them (the first initialisation decides). */
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
    r->ctx = SSL_CTX_new(TLS_client_method());
    IT_ASSERT(r->ctx != NULL, "relay: SSL_CTX_new failed");
    /* The test's self-signed certificate: the relay checks nothing. */
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    IT_ASSERT(r->listen_fd >= 0 && bind(r->listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
                  listen(r->listen_fd, 4096) == 0 &&
                  getsockname(r->listen_fd, (struct sockaddr *)&a, &len) == 0,
              "relay: cannot listen: %s", strerror(errno));
    pthread_t t;
    IT_ASSERT(pthread_create(&t, NULL, run, r) == 0, "relay: no thread");
    pthread_detach(t);
    return ntohs(a.sin_port);
}
