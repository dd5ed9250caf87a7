/*
 * wsbroker/client.h - C client for the wsbroker WebSocket pub/sub broker.
 *
 * Two ways to use it:
 *
 *  - Asynchronous (wsc_connect ... wsc_close): the client lives on a
 *    uv_loop_t that the application owns and runs. Every function must be
 *    called on the thread running that loop, and every callback is called
 *    from inside uv_run on that thread. The client reconnects by itself
 *    (exponential backoff with full jitter), resubscribes after a reconnect
 *    and asks the broker to replay what it missed on concrete topics.
 *
 *  - Blocking (wsc_sync_*): for simple programs. A wsc_sync_t owns a private
 *    loop and runs it inside each call, with a timeout.
 *
 * URLs are ws://host[:port][/path][?query] or wss://... (port 80, 443 for
 * wss, and path "/" by default; IPv6 hosts in brackets). The broker's
 * pub/sub endpoint is /ws (or /).
 *
 * wss:// runs TLS 1.2 or 1.3 on OpenSSL. The broker's certificate is
 * verified against the system's CA store (or ca_file) and must name the
 * URL's host (a DNS name, or an IP address for a numeric host); the host
 * name is sent as SNI. insecure turns both checks off, for test setups with
 * self-signed certificates only.
 *
 * permessage-deflate (RFC 7692) is offered on every connection unless
 * deflate is off. When the broker accepts it, compressed messages are
 * inflated (never past max_message, nor past the broker's own max_message
 * from its hello plus the envelope of a message), and with deflate_send
 * the client compresses what it sends too.
 *
 * Strings passed in are copied; nothing the caller passes must outlive the
 * call. Strings and spans handed to callbacks are valid only until the
 * callback returns. Data is always one JSON value in its exact wire bytes.
 *
 * libuv writes to sockets with write(2): a process using this library
 * should ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) so that a broker that
 * goes away shows up as an error, not as a killed process.
 */
#ifndef WSBROKER_CLIENT_H
#define WSBROKER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(WSC_BUILDING)
#define WSC_API __attribute__((visibility("default")))
#else
#define WSC_API
#endif

#define WSC_VERSION_MAJOR 0
#define WSC_VERSION_MINOR 1
#define WSC_VERSION_PATCH 0
#define WSC_VERSION       "0.1.0"

/* Error codes: every function returning int returns WSC_OK or one of
 * these; callbacks carry them in wsc_result_t.err and the state callback. */
typedef enum wsc_err {
    WSC_OK = 0,
    WSC_E_INVAL = -1,           /* bad argument: URL, option, JSON data, UTF-8 */
    WSC_E_NOMEM = -2,           /* out of memory */
    WSC_E_CLOSED = -3,          /* client closed, or disconnected with reconnect off */
    WSC_E_OUTBOX_FULL = -4,     /* too many requests or bytes waiting to be sent */
    WSC_E_CONNECT = -5,         /* name resolution or TCP connect failed */
    WSC_E_HANDSHAKE = -6,       /* the broker refused the WebSocket upgrade */
    WSC_E_PROTOCOL = -7,        /* the broker broke RFC 6455 or the wire protocol */
    WSC_E_TIMEOUT = -8,         /* connect, liveness check or a blocking call timed out */
    WSC_E_BROKER = -9,          /* the broker answered with an error (see code) */
    WSC_E_DISCONNECTED = -10,   /* the connection was lost before the answer came */
    WSC_E_TOO_BIG = -11,        /* request larger than the broker accepts */
    WSC_E_NOT_SUBSCRIBED = -12, /* unsubscribe of a pattern this client has not subscribed */
    WSC_E_CANCELED = -13,       /* subscribe overtaken by an unsubscribe before it was sent */
    WSC_E_TLS = -14,            /* TLS handshake failed or the certificate was not trusted */
    WSC_E_TOKEN = -15,          /* token_cb had no token for a connection attempt */
} wsc_err_t;

/* Static English text for an error code; never NULL. */
WSC_API const char *wsc_strerror(int err);

typedef enum wsc_state {
    WSC_CONNECTING = 1, /* first connection attempt in progress */
    WSC_OPEN,           /* connected; the broker's hello has arrived */
    WSC_RECONNECTING,   /* connection lost or attempt failed; waiting to retry */
    WSC_CLOSED,         /* final: wsc_close called, or lost with reconnect off */
} wsc_state_t;

/* "connecting", "open", "reconnecting", "closed". */
WSC_API const char *wsc_state_name(wsc_state_t state);

typedef struct wsc_client wsc_client_t;

/* The outcome of one request (subscribe, unsubscribe, publish). */
typedef struct wsc_result {
    int err;             /* WSC_OK on ack; WSC_E_BROKER when the broker refused */
    const char *code;    /* broker error code ("bad_topic", "forbidden"...), else "" */
    const char *message; /* human-readable reason, "" on success */
    const char *topic;   /* the request's topic or pattern */
    bool has_seq;
    uint64_t seq;      /* publish: the message's seq; subscribe to a concrete
                          topic: the topic's latest seq (0 if none) */
    const char *epoch; /* subscribe to a concrete topic: the seq epoch, else "" */
    int recovered;     /* subscribe with since: 1 replayed, 0 not recoverable;
                          -1 when not asked */
} wsc_result_t;

/* Called exactly once per accepted request (one that returned WSC_OK). */
typedef void (*wsc_result_cb)(wsc_client_t *c, const wsc_result_t *r, void *user);

/* A message delivered by the broker. */
typedef struct wsc_message {
    const char *topic; /* the concrete topic, NUL-terminated */
    uint64_t seq;      /* per-topic sequence number, gap-free from 1 */
    const char *data;  /* the JSON value exactly as published (not NUL-terminated) */
    size_t data_len;
    const char *raw; /* the whole {"op":"message",...} object as received */
    size_t raw_len;
} wsc_message_t;

typedef void (*wsc_message_cb)(wsc_client_t *c, const wsc_message_t *m, void *user);

/* State changes. A client starts in WSC_CONNECTING without a call; then
 * every change is reported, and WSC_RECONNECTING again after each failed
 * attempt. err and detail say why for RECONNECTING and CLOSED ("connect to
 * 127.0.0.1:8080: connection refused; retry in 412 ms"); for OPEN detail
 * names the server and err is WSC_OK. */
typedef void (*wsc_state_cb)(wsc_client_t *c, wsc_state_t state, int err, const char *detail,
                             void *user);

/* Problems that belong to no request of the caller: a broker error without
 * an id, or an automatic resubscription the broker refused after a
 * reconnect (r->topic names the pattern; it is no longer subscribed). */
typedef void (*wsc_error_cb)(wsc_client_t *c, const wsc_result_t *r, void *user);

typedef enum wsc_stale_reason {
    /* Resubscribed with since after a reconnect and the broker could not
     * replay everything missed (history too short, or a new epoch: the
     * broker restarted without shared history). */
    WSC_STALE_NOT_RECOVERED = 1,
    /* A live message skipped seq numbers (the broker dropped messages for
     * this slow client). */
    WSC_STALE_GAP,
    /* A wildcard subscription was restored after a reconnect: the protocol
     * cannot replay patterns, so messages published in between are lost. */
    WSC_STALE_PATTERN,
} wsc_stale_reason_t;

/* The application's view of a subscription may have missed messages. */
typedef struct wsc_stale {
    wsc_stale_reason_t reason;
    const char *pattern;   /* the subscription (a concrete topic unless PATTERN) */
    uint64_t last_seq;     /* the last seq this client had seen */
    uint64_t seq;          /* NOT_RECOVERED: the topic's seq now; GAP: the seq that arrived */
    const char *old_epoch; /* NOT_RECOVERED: the epoch last_seq belongs to, else "" */
    const char *epoch;     /* NOT_RECOVERED: the broker's current epoch, else "" */
} wsc_stale_t;

typedef void (*wsc_stale_cb)(wsc_client_t *c, const wsc_stale_t *s, void *user);

/* Called on the loop's thread before every connection attempt (the first
 * one and each reconnect), so that an expiring token can be replaced: it
 * returns the token for this attempt, which the library copies at once
 * (it may point to static or reused memory). NULL fails the attempt with
 * WSC_E_TOKEN; the next one follows after the usual backoff (with
 * reconnect off the client closes). It must not block: hand over a token
 * fetched ahead of time. */
typedef const char *(*wsc_token_cb)(wsc_client_t *c, void *user);

/* Client options. Always start from wsc_options_init(): it sets the
 * defaults given below, and fields added in later versions get theirs. */
typedef struct wsc_options {
    const char *token;           /* sent as "Authorization: Bearer <token>"; NULL: none */
    wsc_token_cb token_cb;       /* a fresh token before every attempt; overrides token */
    const char *ca_file;         /* wss: PEM file of the CAs to trust; NULL: the system's store */
    bool insecure;               /* wss: skip certificate and host name checks (tests only) */
    bool deflate;                /* offer permessage-deflate (default true) */
    bool deflate_send;           /* when negotiated, compress messages sent too (default false) */
    size_t deflate_min_size;     /* ... those of at least this many bytes (default 128) */
    bool reconnect;              /* reconnect after a failure (default true) */
    unsigned backoff_min_ms;     /* backoff base (default 250) */
    unsigned backoff_max_ms;     /* backoff cap (default 30000) */
    unsigned connect_timeout_ms; /* resolve + TCP + upgrade + hello (default 10000) */
    unsigned ping_interval_ms;   /* send a Ping after this much silence (default 25000, 0 off) */
    unsigned ping_timeout_ms;    /* then drop the connection after this much more (10000) */
    unsigned close_timeout_ms;   /* wsc_close waits this long for the broker's Close (2000) */
    size_t outbox_max;           /* publishes held while not connected (default 1000) */
    size_t outbox_max_bytes;     /* bytes held while not connected, or queued on the
                                    socket while connected (default 8 MiB) */
    size_t max_message;          /* largest message accepted from the broker (default 64 MiB);
                                    also bounds what a compressed message inflates to */
    wsc_state_cb on_state;
    wsc_message_cb on_message;
    wsc_error_cb on_error;
    wsc_stale_cb on_stale;
    void *user; /* passed to every callback above */
} wsc_options_t;

WSC_API void wsc_options_init(wsc_options_t *o);

/* A failure before there is a client to ask (bad URL, out of memory). */
typedef struct wsc_error {
    int code;
    char text[256];
} wsc_error_t;

/* Create a client on loop and start connecting to url. Returns NULL if the
 * URL or an option is invalid (err->code WSC_E_INVAL, err->text says what;
 * an unreadable ca_file too) or memory runs out; err may be NULL.
 * Connection failures (WSC_E_TLS for a certificate that is not trusted) are
 * reported later through on_state. The loop must outlive the client. */
WSC_API wsc_client_t *wsc_connect(uv_loop_t *loop, const char *url, const wsc_options_t *opts,
                                  wsc_error_t *err);

/* Subscription options; WSC_SUB_OPTS_INIT asks for nothing special. */
typedef struct wsc_sub_opts {
    int64_t last;      /* replay up to N most recent retained messages; -1: no */
    int64_t since;     /* replay retained messages with seq > since (concrete
                          topics only); -1: no */
    const char *epoch; /* with since: the epoch since belongs to; NULL: none */
} wsc_sub_opts_t;

#define WSC_SUB_OPTS_INIT                                                                          \
    {                                                                                              \
        -1, -1, NULL                                                                               \
    }

/* Subscribe to pattern (see PROTOCOL.md: "chat.*", "chat.>", "chat.lobby").
 * opts may be NULL. The subscription is remembered: after a reconnect the
 * client subscribes again, with since/epoch on concrete topics. cb (may be
 * NULL) receives the broker's first answer; requested while not connected,
 * the subscription is made when the connection opens.
 * Returns WSC_OK, WSC_E_INVAL, WSC_E_NOMEM, or WSC_E_CLOSED. */
WSC_API int wsc_subscribe(wsc_client_t *c, const char *pattern, const wsc_sub_opts_t *opts,
                          wsc_result_cb cb, void *user);

/* Remove the subscription to exactly this pattern string. While not
 * connected it completes (cb with WSC_OK) on the next loop iteration.
 * Returns WSC_OK, WSC_E_NOT_SUBSCRIBED, WSC_E_NOMEM or WSC_E_CLOSED. */
WSC_API int wsc_unsubscribe(wsc_client_t *c, const char *pattern, wsc_result_cb cb, void *user);

/* Publish data[0..len), one JSON value (object, string, number...), to
 * topic. cb (may be NULL) gets the ack with the message's seq, or the
 * error. While not connected the publish waits in a bounded outbox and is
 * sent when the connection opens. Delivery is at most once: a publish
 * already sent when the connection drops fails with WSC_E_DISCONNECTED
 * (it may or may not have been delivered) and is not resent.
 * Returns WSC_OK, or without calling cb: WSC_E_INVAL (not one valid JSON
 * value, or not UTF-8; see wsc_last_error), WSC_E_TOO_BIG, WSC_E_OUTBOX_FULL,
 * WSC_E_NOMEM, WSC_E_CLOSED. */
WSC_API int wsc_publish(wsc_client_t *c, const char *topic, const char *data, size_t len,
                        wsc_result_cb cb, void *user);

/* wsc_publish of text[0..len) (UTF-8) as a JSON string. */
WSC_API int wsc_publish_text(wsc_client_t *c, const char *topic, const char *text, size_t len,
                             wsc_result_cb cb, void *user);

/* Why the last call on c failed (a sentence), "" if it did not. */
WSC_API const char *wsc_last_error(const wsc_client_t *c);

WSC_API wsc_state_t wsc_state(const wsc_client_t *c);

/* While WSC_OPEN: the Sec-WebSocket-Extensions value the broker accepted
 * ("permessage-deflate; server_no_context_takeover; ..."), and the TLS
 * version of a wss:// connection ("TLSv1.3"). "" when there is none, or
 * when not open. */
WSC_API const char *wsc_extensions(const wsc_client_t *c);
WSC_API const char *wsc_tls_version(const wsc_client_t *c);

/* Requests accepted but not yet answered (in the outbox or in flight). */
WSC_API size_t wsc_pending(const wsc_client_t *c);

/* Close the client. Requests not yet answered get their callback with
 * WSC_E_CLOSED before this returns, and on_state reports WSC_CLOSED unless
 * it already did; no callback is called after that. An open connection is
 * closed with the WebSocket close handshake in the background (at most
 * close_timeout_ms); keep running the loop until it has released its
 * handles, then the client's memory is freed. c must not be used after
 * this call. May be called from inside a callback. */
WSC_API void wsc_close(wsc_client_t *c);

/* ---- Blocking helpers ------------------------------------------------ */

typedef struct wsc_sync wsc_sync_t;

/* Connect and wait until the connection is open, at most timeout_ms (< 0:
 * no limit). opts may be NULL for the defaults; its on_state and on_message
 * are used by the helper itself and ignored, on_error, on_stale and
 * token_cb are called from inside the wsc_sync_* calls. Returns NULL on failure with err
 * (may be NULL) describing it. */
WSC_API wsc_sync_t *wsc_sync_connect(const char *url, const wsc_options_t *opts, int timeout_ms,
                                     wsc_error_t *err);

/* Subscribe, unsubscribe or publish, then wait for the answer at most
 * timeout_ms. Returns WSC_OK, or an error (WSC_E_BROKER when the broker
 * refused, WSC_E_TIMEOUT, ...); r (may be NULL) receives the details, its
 * strings valid until the next call on s. */
WSC_API int wsc_sync_subscribe(wsc_sync_t *s, const char *pattern, const wsc_sub_opts_t *opts,
                               int timeout_ms, wsc_result_t *r);
WSC_API int wsc_sync_unsubscribe(wsc_sync_t *s, const char *pattern, int timeout_ms,
                                 wsc_result_t *r);
WSC_API int wsc_sync_publish(wsc_sync_t *s, const char *topic, const char *data, size_t len,
                             int timeout_ms, wsc_result_t *r);

/* The next message, waiting at most timeout_ms (0: only what has already
 * arrived). Returns WSC_OK with *m valid until the next call on s,
 * WSC_E_TIMEOUT, or WSC_E_CLOSED when the connection is gone for good.
 * Messages that arrive while another call waits are queued (at most
 * 10000; the newest are dropped beyond that, see wsc_sync_dropped). */
WSC_API int wsc_sync_next(wsc_sync_t *s, int timeout_ms, wsc_message_t *m);

/* Messages dropped because the queue of wsc_sync_next was full. */
WSC_API uint64_t wsc_sync_dropped(const wsc_sync_t *s);

/* Why the last failed call on s failed, "" if it did not. */
WSC_API const char *wsc_sync_error(const wsc_sync_t *s);

/* The underlying client, e.g. for wsc_state. Do not close it. */
WSC_API wsc_client_t *wsc_sync_client(wsc_sync_t *s);

/* Close the connection (close handshake, at most close_timeout_ms) and
 * free everything. NULL is fine. */
WSC_API void wsc_sync_close(wsc_sync_t *s);

#ifdef __cplusplus
}
#endif

#endif
