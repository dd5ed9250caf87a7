/*
 * bench.h - wsbroker-bench, the load generator: shared types.
 *
 * One process, N threads, one uv_loop per thread. Every connection belongs
 * to exactly one thread and is touched only on that thread's loop. The main
 * thread does not run a loop: it drives the run through a global phase
 * (bench_t.phase, written by main, read by the threads) and reads each
 * thread's live counters (tstats_t, written by the owning thread only, with
 * relaxed atomics so that progress lines need no locks). Everything else a
 * thread owns (histogram, error details, per-connection state) is merged by
 * main after the threads have been joined.
 *
 * Files and prefixes: main.c (options, orchestration of the phases, the
 * report), thread.c thr_ (a bench thread's loop and phase handling),
 * conn.c conn_ (one WebSocket client connection), scenario.c scen_ (roles,
 * publishing, flow control, verification), payload.c payload_ (payload
 * format), stats.c hist_/proc_/err_ (histogram, /proc,
 * error tallies), selftest.c (checks of the pure parts).
 */
#ifndef WSBENCH_BENCH_H
#define WSBENCH_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <uv.h>

#include <wsproto/msg.h>
#include <wsproto/pmd.h>
#include <wsproto/ws_frame.h>
#include <wsproto/ws_handshake.h>

/* ---- Options ---- */

typedef enum scen_kind {
    SC_FANOUT = 1,
    SC_PAIRS,
    SC_CONNS,
    SC_LATENCY,
} scen_kind_t;

#define BENCH_MAX_URLS 8

/* One broker endpoint (a cluster's node when --url is repeated). */
typedef struct bendpoint {
    const char *url;
    char host[256];     /* as written in the URL, without brackets */
    char hostport[300]; /* Host header value */
    char target[512];   /* request target, e.g. "/ws" */
    int port;
    bool host_is_ip; /* no SNI; the certificate must name the address */
    struct sockaddr_storage addr;
} bendpoint_t;

typedef struct opts {
    scen_kind_t scenario;
    const char *name;               /* scenario name as typed */
    bendpoint_t ep[BENCH_MAX_URLS]; /* one per --url; connection k goes to ep[k % nep] */
    unsigned nep;
    bool tls;           /* wss:// (every --url alike) */
    bool insecure;      /* --insecure: no certificate or name check */
    const char *cafile; /* --cafile: CAs to trust instead of the system's */
    bool deflate;       /* --deflate: offer permessage-deflate, compress publishes */
    double duration;    /* measured window, seconds */
    double warmup;      /* publishing before the window, seconds */
    double drain;       /* bound on waiting for acks and in-flight deliveries */
    double hold;        /* conns: how long the connections stay open */
    double setup_timeout;
    double rate;         /* latency: publishes per second, all publishers */
    double connect_rate; /* connections started per second, 0: unlimited */
    size_t payload;      /* bytes of the "data" JSON value */
    unsigned threads;
    unsigned subs, pubs, pairs, conns;
    unsigned window;  /* unacked publishes per publisher */
    unsigned max_lag; /* publishes a subscriber may be behind, on average */
    unsigned connect_inflight;
    int broker_pid; /* 0: none */
    bool allow_remote;
} opts_t;

/* ---- Run phases (bench_t.phase) ---- */

enum {
    PH_INIT = 0,
    PH_SETUP, /* connect, handshake, subscribe */
    PH_RUN,   /* publish: warm-up, then the measured window */
    PH_STOP,  /* publishers stop and wait for their outstanding acks */
    PH_DRAIN, /* final seqs known: subscribers catch up */
    PH_HOLD,  /* conns: idle connections held open */
    PH_CLOSE, /* close handshakes */
    PH_EXIT,  /* drop whatever is left and leave the loop */
};

/* ---- Latency histogram: log-linear, 64 sub-buckets per power of two
 * (relative error below 1.6 %), values in nanoseconds. ---- */

#define HIST_SUB_BITS 6
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min, max;
    uint64_t b[HIST_BUCKETS];
} hist_t;

void hist_init(hist_t *h);
void hist_add(hist_t *h, uint64_t v);
void hist_merge(hist_t *into, const hist_t *from);
/* Value at quantile q (0..1): the midpoint of the bucket holding that rank,
 * clamped to [min, max]. 0 for an empty histogram. */
uint64_t hist_quantile(const hist_t *h, double q);

/* ---- Errors, by kind ---- */

typedef enum err_kind {
    ERR_CONNECT = 0, /* TCP connect failed */
    ERR_HANDSHAKE,   /* bad HTTP response, no 101, no hello */
    ERR_CLOSED,      /* broker closed or dropped a connection mid-run */
    ERR_IO,          /* read or write error */
    ERR_PROTOCOL,    /* bad frame or unparseable broker message */
    ERR_BROKER,      /* "error" op received */
    ERR_ACK,         /* ack out of order or for an unknown id */
    ERR_TOPIC,       /* message for a topic this connection did not ask for */
    ERR_SETUP,       /* connection not ready when setup timed out */
    ERR_KINDS
} err_kind_t;

#define CLOSE_CODES_MAX 8

typedef struct errstats {
    uint64_t n[ERR_KINDS];
    struct {
        uint16_t code;
        uint64_t n;
    } close[CLOSE_CODES_MAX]; /* close codes received from the broker */
    char first[200];          /* first error message, for the report */
} errstats_t;

/* ---- Live counters of one thread. Written only by the owner thread
 * (ctr_add), read by main at any time with relaxed loads. ---- */

typedef struct tstats {
    _Atomic uint64_t started, handshakes, subs_ready, pubs_ready, failed, closed;
    _Atomic uint64_t published, acked, delivered, win_published, win_delivered;
    _Atomic uint64_t lost, duplicates, reordered, errors;
    _Atomic uint64_t pubs_done, subs_complete, open;
    _Atomic uint64_t last_handshake_ns, last_ready_ns;
} tstats_t;

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void ctr_set(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- Connections ---- */

enum { ROLE_SUB = 1, ROLE_PUB = 2 };

typedef enum conn_state {
    CS_IDLE = 0,    /* not started */
    CS_CONNECTING,  /* TCP connect pending */
    CS_TLS,         /* wss: TLS handshake in progress */
    CS_HANDSHAKE,   /* upgrade request sent, waiting for 101 */
    CS_HELLO,       /* waiting for the broker's hello */
    CS_SUBSCRIBING, /* subscribe sent, waiting for its ack */
    CS_READY,       /* subscribed (sub) or allowed to publish (pub) */
    CS_CLOSING,     /* our Close frame sent, waiting for the broker's */
    CS_DEAD,        /* uv_close called */
} conn_state_t;

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
} wbuf_t;

struct bthread;

typedef struct bconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct bthread *th;
    struct bconn *peer; /* pairs: the subscriber of this publisher's topic */
    uint32_t topic;     /* index into bench_t.topics */
    uint8_t role;
    uint8_t state;
    uint8_t node;    /* index into opts_t.ep */
    bool inited;     /* uv_tcp_init done: uv_close needed */
    bool writing;    /* a uv_write is in flight (flight holds its bytes) */
    bool dirty;      /* queued in the thread's flush list */
    bool ever_ready; /* reached CS_READY: counts in loss accounting */
    bool blocked;    /* publisher stopped by the window or the lag bound */
    bool stopped;    /* publisher: no more publishes */
    bool done;       /* publisher: stopped and all acks in */
    bool got_close;  /* the broker answered our Close; waiting for EOF */
    bool pmd;        /* permessage-deflate negotiated */
    ws_parser_t wp;
    SSL *ssl;            /* wss: the session on memory BIOs (owns them) */
    BIO *rbio, *wbio;    /* ciphertext in, ciphertext out */
    pmd_inflater_t *inf; /* the broker keeps context across messages: ours */
    uint8_t pmd_wbits;   /* client_max_window_bits the broker allowed */
    char *hs;            /* response head while in CS_HANDSHAKE */
    size_t hs_len, hs_scanned;
    char key[WSH_KEY_LEN + 1];
    wbuf_t out;    /* frames queued since the last flush (plaintext on wss) */
    wbuf_t enc;    /* wss: ciphertext of out, not yet handed to the socket */
    wbuf_t flight; /* bytes owned by the in-flight uv_write */
    wbuf_t msg;    /* reassembly of a message split across reads */
    /* subscriber */
    uint64_t base;     /* topic seq at subscribe time */
    uint64_t last;     /* highest seq seen */
    uint64_t seen;     /* bit i: seq last - i was received */
    uint64_t received; /* unique messages */
    /* publisher */
    uint64_t next_id;                           /* id of the next publish */
    uint64_t ack_id;                            /* id the next ack must carry */
    uint64_t sent, acked, nacked, last_ack_seq; /* nacked: error replies */
} bconn_t;

/* ---- Topics ---- */

#define TOPIC_NAME_MAX 48

typedef struct btopic {
    char name[TOPIC_NAME_MAX];
    uint8_t len;
    /* Highest seq acked to any publisher of the topic: the seq every
     * subscriber must reach. Any thread may raise it (atomic max). */
    _Atomic uint64_t final_seq;
} btopic_t;

/* ---- Threads ---- */

typedef struct bench bench_t;

typedef struct bthread {
    bench_t *b;
    unsigned idx;
    uv_thread_t tid;
    uv_loop_t loop;
    uv_timer_t tick;   /* phase changes, pacing, connect rate, drain checks */
    uv_prepare_t cork; /* flushes dirty connections before polling */
    int seen_phase;
    bconn_t *conns;
    size_t nconns;
    bconn_t **pubs; /* publishers among conns */
    size_t npubs;
    bconn_t **dirty;
    size_t ndirty;
    size_t next_start; /* conns[next_start] is the next to connect */
    size_t inflight;   /* connecting, not yet ready or failed */
    size_t live;       /* uv_tcp_init'ed and not yet closed */
    size_t inflight_max;
    double connect_rate; /* per second for this thread, 0: unlimited */
    uint64_t rng;
    uint64_t now;  /* CLOCK_MONOTONIC ns, taken once per callback */
    uint8_t *rbuf; /* the thread's one read buffer */
    size_t rbuf_cap;
    char *scratch; /* publish JSON is encoded here, then framed */
    size_t scratch_cap;
    char *data;      /* the payload value being built */
    size_t data_len; /* its length as last built, 0 before the first */
    tstats_t st;
    hist_t lat;
    errstats_t err;
    /* Copied from bench_t when the thread sees PH_RUN. */
    uint64_t t_run, t_measure, t_end;
    uint64_t expected;    /* sum over subscribers of final - base */
    uint64_t missing_end; /* part of lost: final - last at the end */
    uint64_t silent_subs; /* subscribers that received nothing at all */
    /* Lateness of the tick timer inside the measured window: how long this
     * thread could not run its loop (busy with I/O, or not scheduled). */
    unsigned tick_ms;
    uint64_t last_tick;
    uint64_t stall_max_ns;
    uint64_t stalls_10ms;
    bool handles_closed;
    bool finished; /* scen_finish done */
    bool refilling;
    /* permessage-deflate: every message on its own (no context takeover)
     * shares these; connections whose broker keeps context have their own
     * inflater. */
    pmd_inflater_t inf;
    pmd_deflater_t def;
    pmd_buf_t ibuf; /* the inflated message */
    uint8_t *zbuf;  /* a compressed message being framed */
    size_t zcap;
    /* Merged by main after the join. */
    uint64_t compressed_rx, compressed_tx, deflate_conns;
    char ext[160];        /* the first negotiated Sec-WebSocket-Extensions */
    char tls_version[16]; /* the first TLS connection's version */
    /* wss: the thread's own client context. Shared between threads,
     * OpenSSL 3.0 fills certificate caches during verification without
     * locking them (ThreadSanitizer sees it). */
    SSL_CTX *tls_ctx;
} bthread_t;

struct bench {
    opts_t o;
    bthread_t *th;
    btopic_t *topics;
    size_t ntopics;
    size_t total_conns, total_subs, total_pubs;
    uint64_t subs_ready; /* set by main before PH_RUN */
    char runid[16];
    _Atomic int phase;
    /* Set by main before the phase store that publishes them. */
    uint64_t t_setup, t_run, t_measure, t_end;
};

/* ---- conn.c ---- */

/* Start connecting c (thread of c). */
void conn_start(bconn_t *c);
/* Queue a text message, framed and masked; flushed before the next poll. */
int conn_send_text(bconn_t *c, const char *p, size_t len);
/* Send a Close (1000) and wait for the broker's; hard close if not open. */
void conn_close(bconn_t *c);
/* Record an error (see conn_error) and drop c; a connection still in its
 * setup also counts as failed. */
void conn_fail(bconn_t *c, err_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Drop the TCP connection now. */
void conn_abort(bconn_t *c);
/* c finished its setup (subscribed, or hello seen for a publisher). */
void conn_ready(bconn_t *c);
/* Write out every connection marked dirty on this thread. */
void conn_flush_all(bthread_t *th);
void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
/* Record an error on th; msg is printf-formatted into the first-error slot
 * and, for the first few errors, to stderr. */
void conn_error(bthread_t *th, err_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t now_ns(void);
uint64_t rng_next(uint64_t *s);

/* ---- thread.c ---- */

/* Prepare th's loop and buffers (main thread, before the thread starts). */
int thr_init(bthread_t *th);
void thr_main(void *arg);
/* Start more connections if the setup phase, the connect rate and the
 * in-flight bound allow. */
void thr_refill(bthread_t *th);
void thr_free(bthread_t *th);

/* ---- scenario.c (called by conn.c and thread.c) ---- */

void scen_on_hello(bconn_t *c);
/* A complete broker message after hello, parsed by msg_parse_server() (op
 * 0: an op this bench does not know); its spans are valid during the call
 * only. */
void scen_on_message(bconn_t *c, const msg_server_t *m);
/* c died (error or close); called once, before its handle is closed. */
void scen_on_dead(bconn_t *c);
/* Build topics and per-thread connection lists. 0 or -1 (message printed). */
int scen_plan(bench_t *b);
/* Check seq s against subscriber c's history and record it. SEQ_NEXT: the
 * highest so far, *gap seqs were skipped before it (lost unless they come
 * late); SEQ_LATE: one of the skipped seqs; SEQ_DUP: seen before, or from
 * before the subscription. */
enum { SEQ_NEXT = 0, SEQ_LATE, SEQ_DUP };
int scen_seq(bconn_t *c, uint64_t s, uint64_t *gap);
/* PH_RUN entry: copy the run times, start publishing. */
void scen_run_start(bthread_t *th);
/* Tick during PH_RUN and PH_STOP: pacing, stop, done checks. */
void scen_run_tick(bthread_t *th);
/* Tick during PH_DRAIN: count subscribers that reached their final seq. */
void scen_drain_tick(bthread_t *th);
/* After a read callback: unblock publishers waiting for deliveries. */
void scen_after_read(bthread_t *th);
/* Once, before closing: tail loss and expected deliveries. */
void scen_finish(bthread_t *th);

/* ---- payload.c ---- */

/* Write v in decimal at out (up to 20 bytes, no NUL); returns the length. */
size_t dec_text(char *out, uint64_t v);
/* Parse an unsigned decimal integer filling p[0..n) exactly. */
bool dec_u64(const char *p, size_t n, uint64_t *v);
/* Build the payload {"t":T,"pad":"xxx"} into out, padded to size bytes when
 * it fits (never shorter than the unpadded form). Returns its length. */
size_t payload_make(char *out, size_t size, uint64_t t);
/* payload_make() into out, which holds the len bytes payload_make() or
 * this function wrote there last for the same size (len 0: none): when t
 * has as many digits as the t there, only the digits are rewritten. */
size_t payload_update(char *out, size_t len, size_t size, uint64_t t);
/* Longest payload payload_make writes for a requested size. */
size_t payload_max(size_t size);
/* The t of a payload made by payload_make. */
bool payload_time(const char *p, size_t n, uint64_t *t);

/* ---- stats.c ---- */

/* VmRSS of pid in KiB, or -1. */
long proc_rss_kib(int pid);
/* User + system CPU seconds of pid, or -1. */
double proc_cpu_s(int pid);
double self_cpu_s(void);
/* CPU seconds since boot, all processors (/proc/stat): in processes (user,
 * nice, system), in hard and soft interrupts and stolen by the hypervisor.
 * Softirq work run in a process's context (most loopback TCP) is counted
 * under irq here but also in that process's own utime/stime, so the CPU of
 * everything else is process + irq - (bench + broker), and approximate. */
typedef struct machine_cpu {
    double process, irq, steal;
} machine_cpu_t;
int machine_cpu(machine_cpu_t *m);
void err_merge(errstats_t *into, const errstats_t *from);
void err_close_code(errstats_t *e, uint16_t code);

/* ---- selftest.c ---- */

int selftest_run(void);

#endif
