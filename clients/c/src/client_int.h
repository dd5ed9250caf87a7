/*
 * client_int.h - internals of libwsbroker-client, shared by its modules:
 *
 *   url.c     ws:// and wss:// URL parsing
 *   util.c    error texts, option defaults, backoff, JSON checks
 *   subs.c    the subscription table (pattern -> wsc_sub_t)
 *   conn.c    one TCP connection: connect, TLS, HTTP upgrade with
 *             permessage-deflate, frames in and out
 *   client.c  the client: state machine, reconnect, requests, liveness
 *   sync.c    blocking helpers on a private loop
 *
 * Ownership: the client owns its connection (at most one current; an old
 * one may still be closing), its requests and its subscriptions. Memory of
 * the client and of a connection is released only from libuv close
 * callbacks (c->refs counts the handles and connections still open), so a
 * callback that closes the client never pulls memory from under the code
 * that called it. Everything runs on the loop's thread.
 */
#ifndef WSC_CLIENT_INT_H
#define WSC_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <uv.h>

#include <wsbroker/client.h>
#include <wsproto/msg.h>
#include <wsproto/pmd.h>
#include <wsproto/ws_frame.h>
#include <wsproto/ws_handshake.h>

#define WSC_ERRLEN   256
#define WSC_READ_BUF 65536
#define WSC_EXTLEN   160 /* negotiated Sec-WebSocket-Extensions kept for display */

/* A broker's "message" envelope around data it accepted in a publish of at
 * most its max_message bytes: what an inflated message may exceed that
 * limit by. */
#define WSC_ENVELOPE 256

/* ---- url.c ---- */

typedef struct wsc_url {
    bool tls;            /* wss:// */
    bool host_is_ip;     /* host is an IPv4 or IPv6 address, not a DNS name */
    char host[256];      /* for getaddrinfo, IPv6 without brackets */
    char port[8];        /* decimal */
    char authority[272]; /* Host header: host as written, ":port" if given */
    char target[2048];   /* request target: path and query, at least "/" */
} wsc_url_t;

/* Parse ws[s]://host[:port][/path][?query]. Returns WSC_OK or WSC_E_INVAL
 * with a sentence in err. */
int wsc__url_parse(const char *url, wsc_url_t *u, char *err, size_t errcap);

/* ---- util.c ---- */

/* Full-jitter backoff: a value in [0, min(cap, base * 2^attempt)] picked by
 * rnd (uniform 64-bit random). */
uint64_t wsc__backoff_ms(unsigned base, unsigned cap, unsigned attempt, uint64_t rnd);

/* True if p[0..len) is exactly one JSON value (surrounding whitespace
 * allowed). Otherwise false with a reason in err. */
bool wsc__json_check(const char *p, size_t len, char *err, size_t errcap);

/* ---- lists of requests ---- */

typedef enum wsc_req_kind {
    WSC_REQ_PUBLISH = 1,
    WSC_REQ_SUBSCRIBE,
    WSC_REQ_UNSUBSCRIBE,
} wsc_req_kind_t;

typedef struct wsc_sub wsc_sub_t;

/* One request of the application (or an automatic resubscription). It is
 * in at most one list at a time: the outbox, the in-flight list, a
 * subscription's waiters or the deferred list. */
typedef struct wsc_req {
    struct wsc_req *next, *prev;
    uint64_t id; /* 0 until sent */
    wsc_req_kind_t kind;
    bool internal;    /* automatic resubscription: no callback */
    bool resub;       /* resubscription of an established subscription */
    int deferred_err; /* result when completed from the deferred list */
    wsc_result_cb cb;
    void *user;
    wsc_sub_t *sub;                /* subscribe: its table entry, NULL once removed */
    int64_t last, since;           /* subscribe options, -1 when absent */
    char epoch[MSG_EPOCH_MAX + 1]; /* "" when absent */
    char *text;                    /* publish: the encoded request */
    size_t len;
    size_t topic_len;
    char topic[]; /* topic or pattern, NUL-terminated */
} wsc_req_t;

typedef struct wsc_list {
    wsc_req_t *head, *tail;
    size_t count;
} wsc_list_t;

void wsc__list_push(wsc_list_t *l, wsc_req_t *r);
void wsc__list_push_front(wsc_list_t *l, wsc_req_t *r);
void wsc__list_remove(wsc_list_t *l, wsc_req_t *r);
wsc_req_t *wsc__list_pop(wsc_list_t *l);

/* ---- subs.c ---- */

struct wsc_sub {
    wsc_sub_t *hnext;       /* hash chain */
    wsc_sub_t *next, *prev; /* creation order: resubscription order */
    bool concrete;          /* no wildcard segment: seq tracking and since */
    bool established;       /* the broker acknowledged it at least once */
    bool resub_needed;      /* established, not yet sent on the current connection */
    uint64_t last_seq;      /* concrete and established: highest seq seen */
    char epoch[MSG_EPOCH_MAX + 1];
    wsc_req_t *inflight; /* the subscribe request on the wire, or NULL */
    wsc_list_t waiters;  /* application subscribes not sent yet */
    size_t len;
    char pattern[]; /* NUL-terminated */
};

typedef struct wsc_subs {
    wsc_sub_t **buckets;
    size_t nbuckets;
    size_t count;
    wsc_sub_t *head, *tail;
} wsc_subs_t;

wsc_sub_t *wsc__subs_find(const wsc_subs_t *t, const char *p, size_t len);
/* Add a new entry (the caller checked it is absent). NULL on no memory. */
wsc_sub_t *wsc__subs_add(wsc_subs_t *t, const char *p, size_t len, bool concrete);
/* Unlink and free s. Its waiters and in-flight request are the caller's. */
void wsc__subs_remove(wsc_subs_t *t, wsc_sub_t *s);
/* Free every entry (waiters and requests already dealt with). */
void wsc__subs_free(wsc_subs_t *t);

/* ---- conn.c ---- */

typedef enum wsc_conn_phase {
    WSC_PH_TCP = 1, /* TCP connect in progress */
    WSC_PH_TLS,     /* wss: TLS handshake in progress */
    WSC_PH_UPGRADE, /* request sent, reading the response head */
    WSC_PH_WS,      /* WebSocket frames */
    WSC_PH_CLOSING, /* our Close sent, waiting for the broker's */
    WSC_PH_DEAD,    /* handle closing; ignore everything */
} wsc_conn_phase_t;

typedef struct wsc_conn {
    wsc_client_t *c;
    uv_tcp_t tcp;
    uv_connect_t creq;
    wsc_conn_phase_t phase;
    char peer[80]; /* "127.0.0.1:8080", for messages */
    char key[WSH_KEY_LEN + 1];
    char *head; /* upgrade response head being read */
    size_t head_len, head_scanned;
    ws_parser_t wp;
    uint8_t *msg; /* fragmented message being reassembled */
    size_t msg_len, msg_cap;
    char *rbuf; /* read buffer, WSC_READ_BUF bytes */

    /* wss: OpenSSL on memory BIOs. Ciphertext read from the socket goes
     * into rbio; SSL_read turns it into plaintext (back into rbuf); frames
     * go through SSL_write, and what lands in wbio is written out. */
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    bool tls_ok;      /* handshake done and no TLS error: close_notify may go */

    /* permessage-deflate, when the broker accepted it */
    bool pmd;
    pmd_params_t pmdp;
    pmd_inflater_t inf; /* the broker's messages */
    pmd_deflater_t def; /* ours, with deflate_send only */
    pmd_buf_t ibuf;     /* the inflated message */
    char ext[WSC_EXTLEN];
} wsc_conn_t;

/* Start a TCP connection to addr. Returns NULL with c->errbuf set when it
 * cannot even start. The connection reports through wsc__on_* below. */
wsc_conn_t *wsc__conn_start(wsc_client_t *c, const struct sockaddr *addr);

/* Queue one masked frame (a text frame compressed when deflate_send
 * applies). Returns WSC_OK, WSC_E_NOMEM or WSC_E_CLOSED. */
int wsc__conn_send(wsc_conn_t *k, uint8_t opcode, const void *payload, size_t len);

/* Bytes handed to libuv and not yet written. */
size_t wsc__conn_queued(const wsc_conn_t *k);

/* Start the close handshake: send Close(code) and keep reading until the
 * broker's Close or EOF ends the connection. */
void wsc__conn_close(wsc_conn_t *k, uint16_t code);

/* Drop the connection now. Idempotent. */
void wsc__conn_abort(wsc_conn_t *k);

/* Called by conn.c (k is c->conn or an old connection still closing). */
void wsc__on_text(wsc_client_t *c, wsc_conn_t *k, const char *p, size_t n);
void wsc__on_rx(wsc_client_t *c, wsc_conn_t *k);
/* The connection failed or ended (before or after the upgrade); err and
 * detail say why. Called at most once per connection. */
void wsc__on_lost(wsc_client_t *c, wsc_conn_t *k, int err, const char *detail);
/* The connection's handle is closed and its memory about to be freed. */
void wsc__on_conn_freed(wsc_client_t *c);
/* The largest size a compressed message from the broker may inflate to. */
size_t wsc__inflate_limit(const wsc_client_t *c);

/* ---- client.c ---- */

struct wsc_client {
    uv_loop_t *loop;
    wsc_options_t o;
    char *token;
    wsc_url_t url;
    SSL_CTX *tls_ctx; /* wss: verification settings shared by its connections */
    wsc_state_t state;
    bool closing; /* wsc_close called */
    bool ever_open;
    unsigned refs;    /* handles and connections still open */
    unsigned attempt; /* failed attempts since the last open */

    uv_timer_t timer;    /* connect timeout, backoff, close timeout */
    uv_timer_t live;     /* client-side liveness */
    uv_timer_t defer;    /* deferred completions */
    struct wsc_gai *gai; /* name resolution in progress */
    struct addrinfo *ai; /* resolved addresses of this attempt */
    struct addrinfo *ai_next;
    char last_conn_err[WSC_ERRLEN];

    wsc_conn_t *conn;         /* current connection, NULL between attempts */
    wsc_conn_t *closing_conn; /* the connection wsc_close is closing */
    bool hello;               /* the current connection got the broker's hello */
    uint64_t last_rx;         /* uv_now of the last byte received */
    uint64_t rx_count;        /* reads on the current connection */
    uint64_t ping_sent;       /* uv_now of our outstanding Ping, 0 if none */
    uint64_t ping_rx;         /* rx_count when that Ping was sent */
    uint64_t server_max;      /* broker's max_message, 0 if unknown */
    char ext[WSC_EXTLEN];     /* wsc_extensions of the open connection */
    char tls_version[16];     /* wsc_tls_version of the open connection */

    uint64_t next_id;
    size_t pending_user; /* application requests not completed yet */
    wsc_list_t outbox;   /* publishes waiting for a connection */
    size_t outbox_bytes;
    wsc_list_t inflight; /* sent, waiting for ack or error */
    wsc_list_t deferred; /* completed inside an API call, reported later */
    wsc_subs_t subs;

    uint8_t rnd[256]; /* random pool: masks, keys, jitter */
    size_t rnd_off;
    char errbuf[WSC_ERRLEN]; /* wsc_last_error */
};

void wsc__random(wsc_client_t *c, void *out, size_t n);

#endif
