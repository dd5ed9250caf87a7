/*
 * harness.h - drive the real wsbroker process over real loopback sockets.
 *
 * A test starts the broker (it_broker_start), talks to it with blocking
 * clients whose every read waits at most a given number of milliseconds
 * (it_recv and the it_expect_* checks), and stops it with SIGTERM, which
 * must end the process with exit status 0 (it_broker_stop).
 *
 * Failures abort the current Check test with a message that names the
 * test's file and line, what was expected and what arrived, and print the
 * tail of the broker's captured stdout/stderr. That output is in a file in
 * /tmp, deleted by it_broker_stop and it_broker_release and at the end of
 * a test that passed; a test that failed, also through Check's own
 * assertions, or timed out keeps it. The broker dies with the test process
 * (PR_SET_PDEATHSIG), so a failed or timed-out test leaves no process
 * behind.
 *
 * Every function is safe to call from several threads as long as each
 * it_conn_t is used by one thread at a time, except the failing checks:
 * threads other than the test's main thread should report problems back
 * instead of calling it_fail.
 */
#ifndef WSBROKER_IT_HARNESS_H
#define WSBROKER_IT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>

#include "wsproto/msg.h"
#include "wsproto/ws_frame.h"
#include "wsproto/ws_handshake.h"

#define IT_HOST    "127.0.0.1"
#define IT_TIMEOUT 3000 /* default wait for one expected event, ms */

/* ---- failing ---- */

/* Abort the test with "file:line: message", after printing the broker log
 * tail. Never returns. */
void it_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define it_fail(...) it_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define IT_ASSERT(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            it_fail_at(__FILE__, __LINE__, __VA_ARGS__);                                           \
    } while (0)

/* Run a suite (Check's default fork mode: every test in its own process)
 * and return the exit status for main(): 0 if every test passed. */
int it_run_suite(Suite *s);

/* Milliseconds on a monotonic clock. */
int64_t it_now_ms(void);
void it_sleep_ms(int ms);

/* ---- the broker process ---- */

typedef struct it_broker {
    pid_t pid; /* 0 when not running */
    int port;
    int logfd;         /* the broker's stdout and stderr, -1 when released */
    char log_path[64]; /* that file (see above) */
    char url[64];      /* ws://127.0.0.1:PORT/ws */
} it_broker_t;

/* TLS runs: with IT_TLS=1 in the environment, brokers started on a free
 * port also get --tls-port with a test certificate, and b->port is a relay
 * in the test process that carries every plain connection to it over TLS;
 * suites written for ws:// then drive the TLS transport unchanged. Brokers
 * on a fixed port (restart tests) stay plain. */
bool it_tls_mode(void);
/* The directory holding this process's test certificate (cert.pem, a
 * self-signed certificate for localhost and 127.0.0.1) and key.pem. */
const char *it_tls_files(void);
/* Start a relay to tls_port; returns the port it listens on. */
int it_relay_start(int tls_port);

/* A broker not started (yet): what it_broker_release may see. */
#define IT_BROKER_NONE ((it_broker_t){.pid = 0, .logfd = -1})

/* Broker arguments for a test that holds connections it does not read for
 * a while, lets a reader fall far behind, or reads frame by frame with
 * auto_pong off: no heartbeat, so no Ping or 1001 'ping timeout' can come
 * between however slowly the test runs. Every other connection must be
 * read with it_next or the it_expect_* checks, which answer the broker's
 * Pings (default interval 20 s, timeout 10 s): a test must never depend on
 * ending before the first Ping of a heartbeat it did not configure. */
#define IT_NO_HEARTBEAT "--ping-interval", "0"

/* Start WSBROKER_BIN --bind 127.0.0.1 --port P args... with WSBROKER_*
 * variables removed from its environment and env ("NAME=value" strings)
 * added. P is a free port; a start that fails is retried with a new port.
 * Returns once GET /healthz answers 200 (at most 10 s), else fails. args
 * and env are NULL-terminated (either may be NULL). */
void it_broker_start_env(it_broker_t *b, const char *const *args, const char *const *env);
#define it_broker_start(b, ...)                                                                    \
    it_broker_start_env((b), (const char *const[]){__VA_ARGS__, NULL}, NULL)

/* Start with no --port: env must provide the port (WSBROKER_PORT) and this
 * function waits for /healthz on port. */
void it_broker_start_at(it_broker_t *b, int port, const char *const *args, const char *const *env);

/* Start with --port port (e.g. again on the port of a broker that was
 * stopped: clients reconnect there). Not retried on another port. */
/* Start with the broker's stderr on errfd (say, a pipe nobody reads);
 * stdout still goes to the log. */
void it_broker_start_stderr(it_broker_t *b, const char *const *args, int errfd);

void it_broker_start_port(it_broker_t *b, int port, const char *const *args,
                          const char *const *env);

/* Send SIGTERM and wait up to timeout_ms for the exit. Returns the wait
 * status, or -1 if the process did not exit (it is then SIGKILLed). */
int it_broker_term(it_broker_t *b, int timeout_ms);

/* Wait up to timeout_ms for the process to exit, without signalling it.
 * Returns the wait status, or -1 if it is still running. */
int it_broker_wait(it_broker_t *b, int timeout_ms);

/* it_broker_term with a 10 s bound, failing unless the exit status is 0;
 * then deletes the log. */
#define it_broker_stop(b) it_broker_stop_at(__FILE__, __LINE__, (b))
void it_broker_stop_at(const char *file, int line, it_broker_t *b);

/* SIGKILL (also when paused) and reap, if running. The log stays. */
void it_broker_kill(it_broker_t *b);

/* The end of a test whose broker is not stopped with it_broker_stop: kill
 * it if it still runs and delete its log. Fine on IT_BROKER_NONE. */
void it_broker_release(it_broker_t *b);

/* SIGSTOP, returning once every thread of the broker is stopped: it keeps
 * its sockets (connects still complete in the backlog) but answers
 * nothing. it_broker_resume sends SIGCONT. */
void it_broker_pause(it_broker_t *b);
void it_broker_resume(it_broker_t *b);

/* Wait at most timeout_ms until GET /healthz on port answers 200. */
bool it_wait_healthy(int port, int timeout_ms);

/* True while the process has not exited (reaps it if it has). */
bool it_broker_alive(it_broker_t *b);

/* Print the last max bytes of the broker's output to stderr. */
void it_broker_dump(const it_broker_t *b, size_t max);

/* Copy the broker's whole output so far into out (NUL-terminated, cut to
 * cap - 1 bytes). Returns the length. */
size_t it_broker_log(const it_broker_t *b, char *out, size_t cap);

/* Start another program (argv[0] looked up in PATH) with stdout and stderr
 * on outfd; it dies with the test. Returns the pid (reap it with waitpid). */
pid_t it_spawn(const char *const *argv, int outfd);

/* A port nobody listens on right now. */
int it_free_port(void);

/* Run WSBROKER_BIN with args (NULL-terminated, argv[0] added) and env, wait
 * at most timeout_ms. Captures stdout and stderr (NUL-terminated, cut to
 * fit). Returns the exit status, or -1 if killed on timeout/signal. */
int it_run(const char *const *args, const char *const *env, char *out, size_t out_cap, char *err,
           size_t err_cap, int timeout_ms);

/* ---- raw TCP ---- */

/* Connect to 127.0.0.1:port. rcvbuf > 0 sets SO_RCVBUF before connecting.
 * Returns the fd or -errno. */
int it_tcp_connect(int port, int rcvbuf);
/* Send everything within timeout_ms. Returns false on error or timeout. */
bool it_tcp_send(int fd, const void *buf, size_t len, int timeout_ms);
/* Close with SO_LINGER 0: the peer gets a RST. */
void it_tcp_reset(int fd);

/* ---- plain HTTP ---- */

typedef struct it_http {
    int status; /* > 0: parsed status; see it_http_raw for the rest */
    char head[WSH_MAX_HEAD];
    size_t head_len;
    wsh_response_t res; /* points into head */
    char *body;         /* malloc'd, NUL-terminated; freed by it_http_free */
    size_t body_len;
    bool closed; /* the broker closed the connection after answering */
} it_http_t;

enum {
    IT_HTTP_EOF = -1,     /* connection closed (or reset) before a full head */
    IT_HTTP_TIMEOUT = -2, /* no full response in time */
    IT_HTTP_REFUSED = -3, /* connect failed */
    IT_HTTP_BAD = -4,     /* response head did not parse */
};

/* Send req[0..len) on a new connection and read the response: the head,
 * the body (Content-Length, or up to EOF), then up to 1 s more to see
 * whether the broker closes. Returns the status or an IT_HTTP_* value.
 * piece > 0 sends the request piece bytes at a time with delay_ms between
 * pieces. */
int it_http_raw(int port, const char *req, size_t len, size_t piece, int delay_ms, it_http_t *r,
                int timeout_ms);
/* GET path with Host and extra header lines (each ending CRLF, or NULL). */
int it_http_get(int port, const char *path, const char *extra, it_http_t *r);
void it_http_free(it_http_t *r);
/* Copy the first header named name into out (NUL-terminated). Returns false
 * if there is none. */
bool it_http_header(const it_http_t *r, const char *name, char *out, size_t cap);

/* Sum of the samples of metric name (any labels) in /metrics, or -1 when the
 * metric is absent. Fails the test if /metrics does not answer 200. */
double it_metric(int port, const char *name);

/* ---- WebSocket client ---- */

typedef struct it_conn {
    int fd;
    int port;
    char name[32];   /* shown in failure messages */
    bool auto_pong;  /* it_expect_* answer Pings and skip them (default on) */
    bool eof, reset; /* the broker closed (reset: with a RST) */
    ws_parser_t wp;
    uint8_t *in; /* received bytes not yet parsed: in[in_off..in_len) */
    size_t in_off, in_len, in_cap;
    uint8_t *msg; /* message being reassembled */
    size_t msg_len, msg_cap;
    uint8_t msg_op;
    uint8_t ctl[WS_MAX_CONTROL + 1];
    uint64_t rng;
    unsigned next_id; /* for the ids of it_subscribe, it_publish, it_sync */
    char errtext[128];
} it_conn_t;

typedef enum it_ev_type {
    IT_EV_TEXT = 1,
    IT_EV_BINARY,
    IT_EV_PING,
    IT_EV_PONG,
    IT_EV_CLOSE,
    IT_EV_EOF,
    IT_EV_TIMEOUT,
    IT_EV_ERROR, /* the broker's bytes broke RFC 6455; c->errtext says how */
} it_ev_type_t;

/* One received WebSocket event. data is NUL-terminated and stays valid until
 * the next receive on the connection. */
typedef struct it_ev {
    it_ev_type_t type;
    const uint8_t *data; /* message, ping/pong payload or close reason */
    size_t len;
    int close_code; /* IT_EV_CLOSE: the code, 0 if the payload was empty */
} it_ev_t;

/* Upgrade a new connection to path with extra header lines (or NULL).
 * Returns the connection on 101 (after wsh_check_101; bytes after the head
 * are kept for the frame parser), else NULL with *status set (an IT_HTTP_*
 * value when there was no response). r, if given, receives the response
 * (the caller frees it with it_http_free). piece/delay_ms as in it_http_raw. */
it_conn_t *it_ws_try(int port, const char *path, const char *extra, int rcvbuf, size_t piece,
                     int delay_ms, int *status, it_http_t *r);
/* Upgrade or fail. */
#define it_ws_open(port, path) it_ws_open_at(__FILE__, __LINE__, (port), (path), NULL, 0)
it_conn_t *it_ws_open_at(const char *file, int line, int port, const char *path, const char *extra,
                         int rcvbuf);
/* Upgrade to /ws and expect the hello (copied to *hello if not NULL). */
#define it_ws_hello(port, hello) it_ws_hello_at(__FILE__, __LINE__, (port), 0, (hello))
it_conn_t *it_ws_hello_at(const char *file, int line, int port, int rcvbuf, msg_server_t *hello);

/* Make a client of an fd that has completed an upgrade; rest[0..len) are
 * bytes already received after the 101 head. Takes ownership of fd. */
it_conn_t *it_conn_wrap(int fd, int port, const void *rest, size_t len);

/* Close the socket (FIN) and free the connection. NULL is fine. */
void it_conn_free(it_conn_t *c);
/* Close with a RST and free. */
void it_conn_reset(it_conn_t *c);

/* Next event, waiting at most timeout_ms. Pings are returned like anything
 * else (nothing is answered automatically here). */
it_ev_t it_recv(it_conn_t *c, int timeout_ms);

/* it_recv, but Pings are answered and skipped when c->auto_pong (a failed
 * Pong is IT_EV_ERROR, c->errtext says why). Safe in any thread. A Ping
 * queues behind everything the broker sent before it, so a reader far
 * behind its backlog can still miss the ping timeout: see IT_NO_HEARTBEAT. */
it_ev_t it_next(it_conn_t *c, int timeout_ms);

/* Readable name of an event for messages: "text {...}", "close 1002", ... */
const char *it_ev_describe(const it_ev_t *ev, char *buf, size_t cap);

/* ---- sending ---- */

/* Send as much of buf[*off..len) as c's socket takes now, advancing *off
 * (fails the test if the socket fails). */
void it_send_nonblocking(it_conn_t *c, const uint8_t *buf, size_t len, size_t *off);

/* Build a frame into out (room for len + WS_MAX_HEADER). rsv is the bits
 * 0x40/0x20/0x10 of the first byte. Masked frames get a random key. */
size_t it_frame(it_conn_t *c, uint8_t *out, int opcode, bool fin, int rsv, bool masked,
                const void *payload, size_t len);

/* Send raw bytes or fail. */
#define it_send_raw(c, buf, len) it_send_raw_at(__FILE__, __LINE__, (c), (buf), (len))
void it_send_raw_at(const char *file, int line, it_conn_t *c, const void *buf, size_t len);
/* Send raw bytes; false if the connection broke. */
bool it_try_send(it_conn_t *c, const void *buf, size_t len);
/* Send raw bytes piece bytes at a time, delay_ms apart, or fail. */
#define it_send_pieces(c, buf, len, piece, delay)                                                  \
    it_send_pieces_at(__FILE__, __LINE__, (c), (buf), (len), (piece), (delay))
void it_send_pieces_at(const char *file, int line, it_conn_t *c, const void *buf, size_t len,
                       size_t piece, int delay_ms);

/* One frame with every detail chosen, or fail. */
#define it_send_frame_ex(c, op, fin, rsv, masked, p, n)                                            \
    it_send_frame_ex_at(__FILE__, __LINE__, (c), (op), (fin), (rsv), (masked), (p), (n))
void it_send_frame_ex_at(const char *file, int line, it_conn_t *c, int opcode, bool fin, int rsv,
                         bool masked, const void *payload, size_t len);
/* A masked frame. */
#define it_send_frame(c, op, fin, p, n) it_send_frame_ex(c, op, fin, 0, true, p, n)
/* A whole text message in one frame. */
#define it_send_text(c, s) it_send_frame(c, WS_OP_TEXT, true, (s), strlen(s))
/* A Close frame with code (0: empty payload) and reason. */
#define it_send_close(c, code, reason) it_send_close_at(__FILE__, __LINE__, (c), (code), (reason))
void it_send_close_at(const char *file, int line, it_conn_t *c, int code, const char *reason);
/* One message split into frames of frag bytes (the first carries opcode, the
 * rest are continuations); with ping_between a masked Ping with payload
 * "p<i>" goes between fragments. Returns the number of Pings sent. */
#define it_send_fragmented(c, op, p, n, frag, pings)                                               \
    it_send_fragmented_at(__FILE__, __LINE__, (c), (op), (p), (n), (frag), (pings))
int it_send_fragmented_at(const char *file, int line, it_conn_t *c, int opcode, const void *payload,
                          size_t len, size_t frag, bool ping_between);

/* ---- expectations (all fail the test with what arrived instead) ---- */

/* The next text message, parsed with msg_parse_server into *m (spans point
 * into the connection's buffer until the next receive). Pings are answered
 * and skipped when c->auto_pong. Returns the raw text. */
#define it_expect_json(c, m, t) it_expect_json_at(__FILE__, __LINE__, (c), (m), (t))
const char *it_expect_json_at(const char *file, int line, it_conn_t *c, msg_server_t *m,
                              int timeout_ms);
/* it_expect_json, then the op must be op. */
#define it_expect_op(c, op, m) it_expect_op_at(__FILE__, __LINE__, (c), (op), (m))
const char *it_expect_op_at(const char *file, int line, it_conn_t *c, msg_sop_t op,
                            msg_server_t *m);
/* An ack whose raw id is id. */
#define it_expect_ack(c, id, m) it_expect_ack_at(__FILE__, __LINE__, (c), (id), (m))
void it_expect_ack_at(const char *file, int line, it_conn_t *c, const char *id, msg_server_t *m);
/* An error with code; id is the raw id or NULL for "no id". */
#define it_expect_error(c, id, code) it_expect_error_at(__FILE__, __LINE__, (c), (id), (code))
void it_expect_error_at(const char *file, int line, it_conn_t *c, const char *id, const char *code);
/* A pong; id is the raw id or NULL for "no id". */
#define it_expect_pong(c, id) it_expect_pong_at(__FILE__, __LINE__, (c), (id))
void it_expect_pong_at(const char *file, int line, it_conn_t *c, const char *id);
/* A message on topic; seq 0 accepts any; data (raw) NULL accepts any.
 * Returns its seq. */
#define it_expect_message(c, topic, seq, data)                                                     \
    it_expect_message_at(__FILE__, __LINE__, (c), (topic), (seq), (data))
uint64_t it_expect_message_at(const char *file, int line, it_conn_t *c, const char *topic,
                              uint64_t seq, const char *data);

/* Read until a Close frame and return its code (0 for an empty payload);
 * reason (if not NULL, room for 126) receives its reason. Data messages
 * before it are skipped when skip_data, else they fail the test. Returns
 * IT_CLOSE_EOF if the connection ended without a Close; fails on timeout. */
#define IT_CLOSE_EOF (-1)
#define it_read_close(c, skip, reason, t)                                                          \
    it_read_close_at(__FILE__, __LINE__, (c), (skip), (reason), (t))
int it_read_close_at(const char *file, int line, it_conn_t *c, bool skip_data, char *reason,
                     int timeout_ms);
/* The next event must be a Close with code (and reason, unless NULL). */
#define it_expect_close(c, code, reason)                                                           \
    it_expect_close_at(__FILE__, __LINE__, (c), (code), (reason))
void it_expect_close_at(const char *file, int line, it_conn_t *c, int code, const char *reason);
/* The broker must close the TCP connection within timeout_ms, sending
 * nothing more. */
#define it_expect_eof(c, t) it_expect_eof_at(__FILE__, __LINE__, (c), (t))
void it_expect_eof_at(const char *file, int line, it_conn_t *c, int timeout_ms);
/* Nothing at all may arrive within ms. */
#define it_expect_silence(c, ms) it_expect_silence_at(__FILE__, __LINE__, (c), (ms))
void it_expect_silence_at(const char *file, int line, it_conn_t *c, int ms);

/* ---- requests ---- */

/* Send a JSON text (one frame). */
#define it_send_json(c, ...) it_send_json_at(__FILE__, __LINE__, (c), __VA_ARGS__)
void it_send_json_at(const char *file, int line, it_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Subscribe with an id and expect the ack. */
#define it_subscribe(c, pattern) it_subscribe_at(__FILE__, __LINE__, (c), (pattern))
void it_subscribe_at(const char *file, int line, it_conn_t *c, const char *pattern);
/* Publish raw JSON data with an id, expect the ack, return its seq. The
 * publisher must not be subscribed to topic (its own message would follow). */
#define it_publish(c, topic, data) it_publish_at(__FILE__, __LINE__, (c), (topic), (data))
uint64_t it_publish_at(const char *file, int line, it_conn_t *c, const char *topic,
                       const char *data);
/* Round trip a ping op: everything the broker sent before it has arrived,
 * and nothing else may come first. */
#define it_sync(c) it_sync_at(__FILE__, __LINE__, (c))
void it_sync_at(const char *file, int line, it_conn_t *c);

/* A new client can subscribe, publish and receive: the broker is healthy. */
#define it_check_alive(port) it_check_alive_at(__FILE__, __LINE__, (port))
void it_check_alive_at(const char *file, int line, int port);

/* Equal raw span. */
bool it_span_is(msg_span_t s, const char *text);

#endif
