/*
 * tls.c - the TLS transport (see tls.h).
 */
#include "tls.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "log.h"

#define TLS_RECORD   16384        /* plaintext per record (the TLS maximum) */
#define TLS_OUT_HIGH (256 * 1024) /* ciphertext made ahead of the socket */
#define TLS_OUT_KEEP (16 * 1024)  /* output buffer kept while idle */

struct tls_server {
    pthread_mutex_t mu; /* ctx may be swapped by SIGHUP */
    SSL_CTX *ctx;
};

struct tls {
    SSL *ssl;
    BIO *rbio, *wbio; /* memory BIOs, owned by ssl */
    uint8_t *out;     /* ciphertext: out[off..len) is not written yet */
    size_t off, len, cap;
    bool established, notified;
    bool began; /* some of a handshake arrived */
};

/* The first error on OpenSSL's queue, as text (and clear the queue). */
static const char *ssl_error(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, cap, "unknown error");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

/* ALPN: this is an HTTP/1.1 server (the WebSocket upgrade needs it). */
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* A server context from the configured files, or NULL with *err set. */
static SSL_CTX *make_ctx(const cfg_t *cfg, char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        ssl_error(err, cap);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    /* TLS 1.2 suites with forward secrecy and AEAD; 1.3 keeps its own. */
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    const char *what = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
        what = "certificate chain";
    else if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1)
        what = "private key";
    else if (SSL_CTX_check_private_key(ctx) != 1)
        what = "key does not match the certificate";
    else if (cfg->tls_ca != NULL) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            what = "client CA file";
        } else {
            SSL_CTX_set_client_CA_list(ctx, names);
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        }
    }
    if (what != NULL) {
        char detail[256];
        snprintf(err, cap, "%s: %s", what, ssl_error(detail, sizeof(detail)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int tls_server_init(broker_t *b)
{
    const cfg_t *cfg = b->cfg;
    if (cfg->tls_port == 0)
        return 0;
    char err[512];
    SSL_CTX *ctx = make_ctx(cfg, err, sizeof(err));
    if (ctx == NULL) {
        fprintf(stderr, "wsbroker: cannot use --tls-cert %s / --tls-key %s: %s\n", cfg->tls_cert,
                cfg->tls_key, err);
        return -1;
    }
    b->tls = calloc(1, sizeof(*b->tls));
    if (b->tls == NULL) {
        SSL_CTX_free(ctx);
        return -1;
    }
    pthread_mutex_init(&b->tls->mu, NULL);
    b->tls->ctx = ctx;
    return 0;
}

void tls_server_free(broker_t *b)
{
    if (b->tls == NULL)
        return;
    SSL_CTX_free(b->tls->ctx);
    pthread_mutex_destroy(&b->tls->mu);
    free(b->tls);
    b->tls = NULL;
}

int tls_server_reload(broker_t *b)
{
    if (b->tls == NULL) {
        LOG(LOG_INFO, -1, 0, "reload", "tls=off");
        return 0;
    }
    char err[512];
    SSL_CTX *ctx = make_ctx(b->cfg, err, sizeof(err));
    if (ctx == NULL) {
        LOG(LOG_ERROR, -1, 0, "tls_reload_failed",
            "error=\"%s\" action=\"kept the old certificate\"", err);
        return -1;
    }
    pthread_mutex_lock(&b->tls->mu);
    SSL_CTX *old = b->tls->ctx;
    b->tls->ctx = ctx;
    pthread_mutex_unlock(&b->tls->mu);
    SSL_CTX_free(old); /* open sessions hold their own reference */
    LOG(LOG_INFO, -1, 0, "tls_reloaded", "cert=%s", b->cfg->tls_cert);
    return 0;
}

tls_t *tls_new(broker_t *b)
{
    tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    pthread_mutex_lock(&b->tls->mu);
    t->ssl = SSL_new(b->tls->ctx);
    pthread_mutex_unlock(&b->tls->mu);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* An empty read BIO means "more to come", not end of stream. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_free(tls_t *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    free(t->out);
    free(t);
}

bool tls_established(const tls_t *t)
{
    return t->established;
}

uv_buf_t tls_pending(const tls_t *t)
{
    return uv_buf_init((char *)t->out + t->off, (unsigned)(t->len - t->off));
}

void tls_written(tls_t *t, size_t n)
{
    t->off += n;
    if (t->off == t->len) {
        t->off = t->len = 0;
        if (t->cap > TLS_OUT_KEEP) {
            free(t->out);
            t->out = NULL;
            t->cap = 0;
        }
    }
}

/* Move what OpenSSL wrote into the output buffer; it joins c's backlog.
 * Returns 0, or -1 on ENOMEM. */
static int collect(conn_t *c)
{
    tls_t *t = c->tls;
    size_t avail;
    while ((avail = BIO_ctrl_pending(t->wbio)) > 0) {
        if (t->len + avail > t->cap) {
            if (t->off > 0) {
                memmove(t->out, t->out + t->off, t->len - t->off);
                t->len -= t->off;
                t->off = 0;
            }
            size_t ncap = t->cap ? t->cap : 4096;
            while (ncap < t->len + avail)
                ncap *= 2;
            uint8_t *n = realloc(t->out, ncap);
            if (n == NULL)
                return -1;
            t->out = n;
            t->cap = ncap;
        }
        int r = BIO_read(t->wbio, t->out + t->len, (int)avail);
        if (r <= 0)
            break;
        t->len += (size_t)r;
        c->out.bytes += (uint64_t)r;
    }
    return 0;
}

/* Drop c after a TLS failure, counting it. */
static void fail(conn_t *c, const char *what)
{
    char err[256];
    STAT_ADD(&c->w->stats, tls_failures, 1);
    LOG_LIMITED(LOG_INFO, c->w->id, c->id, "tls_failed", "stage=%s error=\"%s\"", what,
                ssl_error(err, sizeof(err)));
    conn_abort(c);
}

void tls_peer_closed(conn_t *c)
{
    tls_t *t = c->tls;
    if (t->established || !t->began)
        return;
    STAT_ADD(&c->w->stats, tls_failures, 1);
    LOG_LIMITED(LOG_INFO, c->w->id, c->id, "tls_failed", "stage=%s error=\"%s\"", "handshake",
                "closed mid-handshake");
}

void tls_input(conn_t *c, const uint8_t *data, size_t len)
{
    tls_t *t = c->tls;
    t->began = true;
    if (BIO_write(t->rbio, data, (int)len) != (int)len) {
        fail(c, "read");
        return;
    }
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                /* Send the alert OpenSSL prepared, if any, then drop. */
                if (collect(c) == 0 && t->len > t->off) {
                    ssize_t w =
                        send(c->fd, t->out + t->off, t->len - t->off, MSG_NOSIGNAL | MSG_DONTWAIT);
                    (void)w;
                }
                fail(c, "handshake");
                return;
            }
            if (collect(c) != 0) {
                conn_abort(c);
                return;
            }
            conn_flush(c);
            return;
        }
        t->established = true;
        STAT_ADD(&c->w->stats, tls_handshakes, 1);
    }
    /* Every record that arrived: the plaintext goes up in the worker's read
     * buffer (data was copied into the BIO, so it is free again). */
    uint8_t *plain = c->w->rbuf;
    for (;;) {
        int n = SSL_read(t->ssl, plain, WRK_READ_BUF);
        if (n > 0) {
            conn_input(c, plain, (size_t)n);
            if (c->state == CONN_CLOSED || (c->flags & CF_DISCARD))
                break;
            continue;
        }
        int e = SSL_get_error(t->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            /* close_notify: the peer is done, as with a TCP EOF. */
            conn_abort(c);
            return;
        }
        fail(c, "read");
        return;
    }
    if (c->state == CONN_CLOSED)
        return;
    /* Handshake completion, session tickets, alerts. */
    if (collect(c) != 0) {
        conn_abort(c);
        return;
    }
    if (t->len > t->off)
        conn_flush(c);
}

int tls_encrypt(conn_t *c)
{
    static __thread uint8_t plain[TLS_RECORD];
    tls_t *t = c->tls;
    if (!t->established)
        return 0;
    while (t->len - t->off < TLS_OUT_HIGH) {
        size_t n = conn_take_plain(c, plain, sizeof(plain));
        if (n == 0)
            break;
        /* A memory BIO takes everything: the write is whole or fails. */
        if (SSL_write(t->ssl, plain, (int)n) != (int)n || collect(c) != 0) {
            fail(c, "write");
            return -1;
        }
    }
    return 0;
}

bool tls_close_notify(conn_t *c)
{
    tls_t *t = c->tls;
    if (!t->established || t->notified)
        return false;
    t->notified = true;
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    if (collect(c) != 0)
        return false;
    return t->len > t->off;
}
