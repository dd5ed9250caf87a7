/*
 * conn.h - one client connection, from accept to close.
 *
 *   HTTP ──(upgrade 101)──> OPEN ──(Close sent or received)──> CLOSING ──> CLOSED
 *     └──(plain HTTP or a rejected upgrade: response)──────────> CLOSING
 *
 * A connection belongs to one worker and is touched only on that worker's
 * loop. Input is read into the worker's shared buffer and parsed in place;
 * a connection keeps bytes of its own only for an unfinished HTTP head or an
 * unfinished message. Output is a ring of frame references (shared with
 * other connections) flushed with vectored writes once per loop iteration.
 * Closing is a state: conn_close() queues a Close frame and unlinks the
 * connection from every subscription at once, conn_abort() drops TCP, and
 * the memory goes after the worker's current epoll batch.
 *
 * The HTTP phase (request head, upgrade, plain responses) is http.c's; it
 * hands an upgraded connection back with conn_open_ws().
 */
#ifndef WSBROKER_CONN_H
#define WSBROKER_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>
#include <wsproto/pmd.h>
#include <wsproto/ws_frame.h>

#include "frame.h"
#include "limit.h"
#include "link.h"
#include "outq.h"
#include "worker.h"

typedef enum conn_state {
    CONN_HTTP = 0,
    CONN_OPEN,
    CONN_CLOSING,
    CONN_CLOSED,
} conn_state_t;

typedef enum conn_endpoint {
    EP_NONE = 0,
    EP_PUBSUB, /* /ws and / */
    EP_ECHO,   /* /echo */
} conn_endpoint_t;

enum {
    CF_WS = 1 << 0,         /* counted as an open WebSocket */
    CF_CLOSE_SENT = 1 << 1, /* our Close frame is queued */
    CF_CLOSE_RCVD = 1 << 2, /* the peer's Close arrived */
    CF_FINISH = 1 << 3,     /* shut TCP down once the queue is flushed */
    CF_SHUT = 1 << 4,       /* shutdown(SHUT_WR) done */
    CF_WRITING = 1 << 5,    /* the socket is full: waiting for EPOLLOUT */
    CF_PAUSED = 1 << 6,     /* reading stopped (backlog or shutdown) */
    CF_DROPPING = 1 << 7,   /* slow-consumer drop policy active */
    CF_DISCARD = 1 << 8,    /* input is ignored (parser failed, or shut) */
    CF_SLOW = 1 << 9,       /* marked for a slow-consumer close */
    CF_DEAD = 1 << 10,      /* socket failed during a delivery batch */
    CF_THROTTLED = 1 << 11, /* input held back: a target worker's inbox is full */
    CF_PMD = 1 << 12,       /* permessage-deflate negotiated */
    CF_EV_IN = 1 << 13,     /* the epoll set watches EPOLLIN for it */
    CF_EV_OUT = 1 << 14,    /* ... and EPOLLOUT */
};

struct fileop;
struct auth;
struct expiry;
struct lim_ip;
struct tls;
struct http_head;
struct conn;

/* A message being reassembled (fragmented, or split across reads): only a
 * connection in the middle of one has it. */
typedef struct conn_msg {
    link_t partial; /* w->msg_list, by start */
    struct conn *c;
    uint64_t since; /* ms: its first bytes */
    size_t len, cap;
    uint8_t *data;
} conn_msg_t;

/* A connection held back by full inboxes (conn_throttle), with the input
 * read but not processed yet. */
typedef struct conn_held {
    link_t link; /* w->throttled */
    struct conn *c;
    uint8_t *stash; /* or NULL */
    uint32_t stash_len;
} conn_held_t;

/* What only some connections need, allocated by the first that does. */
typedef struct conn_x {
    struct fileop *file;      /* a static file being sent (http.c), or NULL */
    struct lim_ip *ip;        /* its address's count (--max-connections-per-ip) */
    pmd_deflater_t *deflater; /* its own compression context, or NULL (shared) */
    struct auth *auth;        /* grants of its token (--auth-secret), or NULL */
    struct expiry *expiry;    /* closes it when the token expires, or NULL */
    lim_rate_t rate;          /* --rate-limit */
} conn_x_t;

/* An idle subscribed connection is this struct alone (plus its
 * subscriptions): everything a connection needs only at times hangs off
 * a pointer that is NULL the rest of the time. */
typedef struct conn {
    int fd; /* in the worker's epoll set (data.ptr == this) */
    uint8_t state;
    uint8_t endpoint;
    uint16_t flags;
    uint32_t nsubs;
    wrk_t *w;
    uint64_t id;
    link_t sup;         /* w->hs_list, ping_list or closing_list; then w->dead */
    link_t wait;        /* w->wait_list */
    link_t pending;     /* w->replies or w->pending */
    link_t subs;        /* sub_t.by_conn */
    uint64_t since;     /* ms: accept, last Ping or close start (list order) */
    uint64_t ping_sent; /* ms: the unanswered Ping */
    uint64_t stamp;     /* last delivery round that reached this connection */

    /* input */
    ws_decoder_t wp;
    struct http_head *head; /* unfinished HTTP head (http.c), or NULL */
    conn_msg_t *msg;        /* unfinished message, or NULL */
    conn_held_t *held;      /* while CF_THROTTLED */
    struct tls *tls;        /* the TLS session on --tls-port, or NULL */
    conn_x_t *x;            /* or NULL */

    outq_t out; /* output: frames waiting for the socket */
} conn_t;

/* c's conn_x_t, allocated if it has none (NULL: out of memory). */
conn_x_t *conn_x(conn_t *c);

static inline struct auth *conn_auth(const conn_t *c)
{
    return c->x != NULL ? c->x->auth : NULL;
}

static inline pmd_deflater_t *conn_deflater(const conn_t *c)
{
    return c->x != NULL ? c->x->deflater : NULL;
}

/* Take over fd, just accepted on w's listener (tls: the --tls-port one).
 * Past the broker's connection limit the peer gets a 503 (on a plain
 * connection) and the socket is closed at once, without allocating. */
void conn_accept(wrk_t *w, int fd, bool tls);

/* Plain bytes from the peer (after TLS, if any): the HTTP head or frames. */
void conn_input(conn_t *c, uint8_t *buf, size_t len);

/* For the TLS layer: move up to cap bytes of queued frames out of the ring
 * into buf (they leave the backlog count; the ciphertext joins it). */
size_t conn_take_plain(conn_t *c, uint8_t *buf, size_t cap);

/* Queue a frame that must not be dropped (reply, control frame, HTTP
 * response). Takes over the caller's reference. Past --max-backlog reading
 * pauses; past twice that the connection is closed as a slow consumer. */
void conn_send(conn_t *c, frame_t *f);

/* What conn_deliver queued. */
typedef enum conn_dlv {
    DLV_NONE = 0, /* nothing (slow consumer, closing) */
    DLV_SAME,     /* f: the caller owes the ring one reference to f */
    DLV_TWIN,     /* f's compressed twin: one reference to f->twin owed */
    DLV_OWN,      /* a compression made for c: nothing owed */
} conn_dlv_t;

/* Queue a published message under the slow-consumer policy, compressed if
 * c negotiated permessage-deflate. Takes no reference itself (the fan-out
 * adds them in bulk, see conn_dlv_t). Never closes c synchronously: a
 * connection over the limit is put on w->slow. */
conn_dlv_t conn_deliver(conn_t *c, frame_t *f);

/* Whether conn_deliver would queue each of some published messages, len
 * bytes in all, as it is: c open, not compressing, not behind, and the
 * messages within its backlog. */
bool conn_takes_as_is(const conn_t *c, size_t len);

/* Queue run (frame_join of such messages) in one piece; the caller owes
 * the ring a reference to it. false: out of memory, nothing queued. */
bool conn_queue_run(conn_t *c, frame_t *run);

/* Close the WebSocket with code and reason: queue the Close, stop message
 * processing, unsubscribe. wait_peer: wait up to --close-timeout for the
 * peer's Close; otherwise shut TCP down as soon as the Close is written. */
void conn_close(conn_t *c, uint16_t code, const char *reason, bool wait_peer);

/* Close c as a slow consumer (1008). */
void conn_close_slow(conn_t *c);

/* Close the connections marked during a delivery batch (slow or failed). */
void conn_settle(wrk_t *w);

/* Drop the TCP connection now. Idempotent. */
void conn_abort(conn_t *c);

/* Write queued output (called from the worker's check handle). */
void conn_flush(conn_t *c);

/* The worker's epoll set says c's socket is readable (or failed) /
 * writable again. */
void conn_readable(conn_t *c);
void conn_writable(conn_t *c);

/* Free the connections closed since the last call (after the worker's
 * epoll batch, which may still name them). */
void conn_free_closed(wrk_t *w);

/* A publish of c's went to workers (bit mask) whose inbox is over its
 * limit: stop reading c and hold back the rest of what was read, until
 * those inboxes drain (conn_unthrottle). */
void conn_throttle(conn_t *c, uint64_t targets);
/* Process the held-back input and read again (unless paused otherwise). */
void conn_unthrottle(conn_t *c);

/* Stop / resume reading, e.g. for shutdown. */
void conn_pause(conn_t *c);
void conn_resume(conn_t *c);

/* Send a WebSocket Ping (supervisor). */
void conn_ping(conn_t *c);

/* Answer an HTTP request with status and a short text body, then close. */
void conn_http_error(conn_t *c, int status, const char *message);

/* HTTP phase (http.c): queue a complete response and close after it
 * (response NULL: out of memory, drop the connection). */
void conn_http_finish(conn_t *c, frame_t *response);
/* The response is sent in parts (a file): stop reading requests and keep
 * the connection on the closing list, whose timeout restarts on every call
 * (--close-timeout is the transfer's progress timeout). */
void conn_http_pending(conn_t *c);
/* The last part of a response sent with conn_http_pending is queued. */
void conn_http_done(conn_t *c);

/* The upgrade succeeded: queue the 101 response (NULL: out of memory) and
 * switch to the WebSocket endpoint ep, with the grants of its token (or
 * NULL; the connection owns them now) and the permessage-deflate
 * parameters agreed (or NULL). */
void conn_open_ws(conn_t *c, conn_endpoint_t ep, frame_t *response, struct auth *auth,
                  const pmd_params_t *pmd);

/* Bytes of WebSocket frames (early frames sent right after the head). */
void conn_ws_input(conn_t *c, uint8_t *buf, size_t len);

#endif
