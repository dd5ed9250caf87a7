/*
 * soak.h - the soak test of the real broker (docs/SOAK.md).
 *
 * One process, one thread, one epoll loop drives every client connection:
 * publishers, subscribers (concrete and wildcard), churners, a slow
 * consumer, clients that never answer Pings, garbage and clients that
 * vanish mid-handshake or mid-frame. A ledger of every topic's seq numbers
 * tells, for every well-behaved subscriber, exactly which messages it must
 * receive; anything lost, duplicated, reordered, unexpected or corrupted is
 * a violation, and so is a wrong HTTP status or close code, a stall, a
 * broker that does not stay flat in memory or does not exit 0 on SIGTERM.
 *
 * Files: soak.c (configuration, phases, final audit, summary), net.c
 * (event loop, connections, HTTP and WebSocket client side), roles.c (what
 * each kind of client does), ledger.c (topics, patterns and the delivery
 * checks), broker.c (the broker process, RSS, /metrics, fd limits).
 */
#ifndef WSBROKER_SOAK_H
#define WSBROKER_SOAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wsproto/msg.h"
#include "wsproto/topic.h"
#include "wsproto/ws_frame.h"
#include "wsproto/ws_handshake.h"

/* ---- configuration (soak.c) ---- */

typedef struct soak_cfg {
    double seconds; /* load phase, ramp-up included */
    int conns;      /* connections open at once, all roles */
    double rate;    /* publishes per second, all publishers together */
    double churn;   /* churning subscribers opened per second */
    double garbage; /* garbage and vanishing connections opened per second */
    int workers;    /* broker worker threads */
    bool slow_drop; /* --slow-consumer drop instead of close */
    uint64_t seed;
    const char *broker;   /* broker executable */
    const char *log_path; /* broker output; NULL: a temporary file */
    int rss_check;        /* 1: enforce the RSS criterion, 0: report only */
    double rss_tol_mib;   /* RSS criterion: absolute tolerance */
    double rss_tol_pct;   /* ... or this percentage of the baseline, if larger */
    double warmup;        /* seconds of load before the RSS baseline */
    double slack;         /* multiplier for every timing bound (sanitizers) */
    double ping_interval, ping_timeout, handshake_timeout, close_timeout;
    uint64_t max_backlog, max_message;
    int srcaddrs; /* source addresses 127.0.0.2 .. used by clients */
    int verbose;
    const char *sanitizer; /* "", "address" or "thread" */
    int race;              /* > 0: run race.c's scenario this many times instead */
} soak_cfg_t;

/* ---- time and randomness ---- */

int64_t now_ms(void);
extern uint64_t grng; /* seeds the connections' generators */
uint64_t rng_next(uint64_t *s);
/* Uniform in [0, n). */
uint32_t rng_below(uint64_t *s, uint32_t n);
/* Uniform in [lo, hi). */
double rng_range(uint64_t *s, double lo, double hi);

/* ---- topics and patterns (ledger.c) ---- */

typedef struct topic {
    char name[40];
    uint8_t len;
    uint16_t group;
    uint16_t col;
    uint64_t sent;      /* publish requests handed to the socket: the highest seq assignable */
    uint64_t confirmed; /* highest seq acknowledged (ack, or pong after it) */
} topic_t;

enum pat_kind {
    PK_CONCRETE = 0, /* soak.g1.t2 */
    PK_GROUP_STAR,   /* soak.g1.* */
    PK_GROUP_GT,     /* soak.g1.> */
    PK_COLUMN,       /* soak.*.t2 */
    PK_LEAD_STAR,    /* *.g1.t2 */
    PK_ALL,          /* soak.> */
    PK_COUNT,
};

typedef struct pattern {
    char text[40];
    uint8_t len;
    uint8_t kind;
    bool wildcard;
    uint32_t *topics; /* sorted indices of the matching topics */
    uint32_t ntopics;
} pattern_t;

/* Publishing groups: each group of TOPICS_PER_GROUP topics has exactly one
 * publisher at a time, so the k-th publish on a topic gets seq k. */
#define TOPICS_PER_GROUP 8
enum grp_kind {
    GK_ID,    /* long-lived publisher, every publish with an id */
    GK_NOID,  /* long-lived publisher without ids, confirmed by ping/pong */
    GK_CHURN, /* short-lived publishers that take turns */
    GK_FLOOD, /* big messages, fast while a slow consumer holds */
};

typedef struct group {
    char name[16];
    uint8_t kind;
    uint32_t first_topic;
    struct conn *owner;
    bool dead; /* its publisher vanished with publishes unconfirmed: not reused */
} group_t;

/* ---- client connections (net.c) ---- */

enum role {
    R_PUB,     /* publisher with ids */
    R_PUBN,    /* publisher without ids */
    R_PUBC,    /* churning publisher with ids */
    R_SUB,     /* long-lived subscriber */
    R_CHURN,   /* short-lived subscriber: subscribe, unsubscribe, close */
    R_SLOW,    /* slow consumer: small SO_RCVBUF, stops reading */
    R_MUTE,    /* reads but never answers a Ping: must get 1001 */
    R_GARBAGE, /* bad HTTP, bad frames, bad requests: exact status/code */
    R_VANISH,  /* goes away mid-handshake or mid-frame */
    R_METRICS, /* GET /metrics once a second */
    R_COUNT,
};

enum cstate {
    CS_CONNECTING,
    CS_HTTP, /* request sent, response head not complete */
    CS_BODY, /* plain HTTP: reading the body until EOF */
    CS_OPEN, /* WebSocket open */
    CS_DONE, /* about to be freed */
};

enum cflag {
    F_HELLO = 1 << 0,      /* hello received */
    F_CLOSE_SENT = 1 << 1, /* we sent a Close frame */
    F_CLOSE_RCVD = 1 << 2, /* the broker sent a Close frame */
    F_WANT_OUT = 1 << 3,   /* EPOLLOUT registered */
    F_NOREAD = 1 << 4,     /* EPOLLIN not registered (slow consumer holding) */
    F_EOF_OK = 1 << 5,     /* EOF or reset is expected now */
    F_CHECKED = 1 << 6,    /* well-behaved: deliveries are checked strictly */
    F_LEAVING = 1 << 7,    /* asked to finish (drain phase or end of life) */
    F_RESET = 1 << 8,      /* the broker reset the connection */
    F_NOHELLO = 1 << 9,    /* endpoint without a hello (/echo): open at the 101 */
    F_COUNTED = 1 << 10,   /* counted in the role's tallies already */
    F_STALLED = 1 << 11,   /* a stall was reported already */
    F_GRACE = 1 << 12,     /* a deadline was extended once: the test itself stalled */
};

/* One topic as seen by one subscriber connection. An "episode" runs from
 * the first subscribe ack that covers the topic to the unsubscribe ack (or
 * the broker's Close reply) that leaves it uncovered; within an episode the
 * connection must see consecutive seqs. */
typedef struct tent {
    uint32_t topic;
    uint16_t nact;  /* acked patterns covering it, no unsubscribe sent */
    uint16_t nuns;  /* patterns covering it with an unsubscribe in flight */
    bool exact;     /* the episode began with a concrete ack: start is exact */
    uint64_t start; /* exact: the first seq due; else: the latest first seq allowed */
    uint64_t last;  /* last seq received in this episode, 0 before the first */
    uint64_t must;  /* seq that must have arrived when the episode ends */
} tent_t;

enum sub_state { SS_PENDING, SS_ACTIVE, SS_UNSUB };

typedef struct csub {
    uint32_t pattern;
    uint8_t state;
} csub_t;

enum req_type { REQ_SUB, REQ_UNSUB, REQ_PUB, REQ_PING, REQ_BAD };

typedef struct req {
    uint32_t id;
    uint8_t type;
    uint8_t resub;  /* REQ_SUB of a pattern already active */
    uint8_t idkind; /* 0: numeric id, 1: string id, 2: no id */
    uint32_t arg;   /* pattern or topic index; REQ_BAD: expected error index */
    uint64_t seq;   /* REQ_PUB: expected seq; REQ_SUB: confirmed seq at send */
    int64_t t;      /* when sent */
    uint64_t *snap; /* REQ_PING of a no-id publisher: its group's sent seqs */
} req_t;

typedef struct conn conn_t;

struct conn {
    int fd;
    uint32_t slot, gen;
    uint8_t role, state, kind, step;
    uint32_t flags;
    int64_t t_start; /* connect() */
    int64_t t_open;  /* WebSocket open (hello) */
    int64_t t_end;   /* role-specific deadline or end of life */
    int64_t t_mark;  /* role-specific time */
    uint64_t rng;
    /* timer */
    int64_t when;
    uint32_t heap_idx; /* 0: not in the heap */
    /* HTTP */
    char *head;
    uint32_t head_len, head_cap;
    size_t head_scan;
    int status;
    char *body;
    uint32_t body_len, body_cap;
    char key[WSH_KEY_LEN + 1];
    /* WebSocket input */
    ws_parser_t wp;
    uint8_t *msg;
    uint32_t msg_len, msg_cap;
    uint8_t msg_op;
    int close_code; /* received; -1 none */
    /* output */
    uint8_t *out;
    uint32_t out_len, out_off, out_cap;
    /* requests awaiting replies (FIFO) */
    req_t *rq;
    uint32_t rq_head, rq_len, rq_cap;
    uint32_t next_id;
    /* subscriptions and ledger */
    csub_t *subs;
    uint32_t nsubs, subs_cap;
    tent_t *te; /* sorted by topic */
    uint32_t nte, te_cap;
    uint32_t actions; /* churner: subscribe/unsubscribe steps left */
    /* publishers */
    int32_t group; /* owned group, -1 none */
    uint32_t rr;   /* next topic in the group */
    double tokens;
    uint32_t since_ping; /* no-id publisher: publishes since the last ping */
    uint64_t received;   /* messages received */
    uint64_t gaps;       /* slow consumer in drop mode: seqs skipped */
    uint64_t base;       /* slow consumer: metric value when it stopped reading */
    uint64_t mark_recv;  /* slow consumer: messages received when it resumed */
    uint16_t sent_code;  /* close code we sent */
    uint32_t npings;     /* WebSocket Pings received from the broker (each answered at once) */
    int64_t t_ping;      /* when the last one was read */
    int64_t t_req;       /* when the HTTP request went out (role_connected) */
};

/* ---- net.c ---- */

/* Open a TCP connection for role (kind is role-specific). rcvbuf > 0 sets
 * SO_RCVBUF first. Returns NULL (and counts a violation) on failure. */
conn_t *conn_new(int role, int kind, int rcvbuf);
/* Free now; reset: close with SO_LINGER 0 (RST). */
void conn_free(conn_t *c, bool reset);
/* Queue bytes (written at once if the socket takes them). */
void conn_send(conn_t *c, const void *buf, size_t len);
/* Send a masked frame; payload at most 64 KiB + 1. */
void conn_frame(conn_t *c, uint8_t opcode, bool fin, const void *payload, size_t len);
void conn_text(conn_t *c, const char *s, size_t len);
/* Send a Close frame (code 0: empty payload) and wait for the broker's. */
void conn_close(conn_t *c, uint16_t code, const char *reason);
/* Upgrade request for path on a connected socket; extra header lines or NULL. */
void conn_upgrade(conn_t *c, const char *path, const char *extra);
/* Stop or resume reading. */
void conn_set_reading(conn_t *c, bool on);
void timer_set(conn_t *c, int64_t when);
void timer_clear(conn_t *c);
/* Append a request to the FIFO; returns it (id filled in). */
req_t *rq_push(conn_t *c, int type);
req_t *rq_front(conn_t *c);
void rq_pop(conn_t *c);
/* Every live connection of a role (for the audit): calls fn for each. */
void conns_each(void (*fn)(conn_t *, void *), void *arg);
int loop_init(void);
/* Run the loop once: wait at most timeout_ms for events, then timers. */
void loop_once(int timeout_ms);
/* Number of connections of each role now (index R_*), and in total. */
extern uint32_t live_by_role[R_COUNT];
extern uint32_t live_total;
extern uint32_t live_connecting; /* not yet WebSocket-open or answered */

/* ---- roles.c: callbacks from net.c ---- */

void role_connected(conn_t *c);
/* Complete HTTP response for roles that expect one (status != 101 or a
 * plain request); body complete at EOF. */
void role_http(conn_t *c, int status, const wsh_response_t *res);
void role_body(conn_t *c);
void role_open(conn_t *c); /* after the hello */
void role_text(conn_t *c, const uint8_t *data, size_t len);
void role_binary(conn_t *c, const uint8_t *data, size_t len);
void role_pong(conn_t *c, const uint8_t *data, size_t len);
/* The broker's Close frame (code 0: none). Returns true to reply with a
 * Close of the same code. */
bool role_close(conn_t *c, int code, const uint8_t *reason, size_t len);
void role_eof(conn_t *c, bool reset);
void role_timer(conn_t *c);
/* c is being freed: release what the role holds (group ownership). */
void role_gone(conn_t *c);
/* Called every 10 ms from the main loop: spawn, publish, phase work. */
void roles_tick(void);
void roles_init(void);
/* Drain phase: stop spawning and publishing; leave only long-lived
 * subscribers and publishers. */
void roles_drain(void);
/* True once every publish has been confirmed and every transient client is
 * gone. */
bool roles_quiet(void);
/* True once every long-lived subscriber has had its hello. */
bool roles_ramp_done(void);
/* Long-lived subscribers planned. */
uint32_t roles_target_sub(void);
/* Open one more bad-requests connection (final check of soak.vanish). */
void roles_audit_requests(void);
/* Names of the garbage and vanishing kinds, for the summary. */
uint32_t roles_garbage_kinds(void);
const char *roles_garbage_name(uint32_t k);
uint32_t roles_vanish_kinds(void);
const char *roles_vanish_name(uint32_t k);

/* ---- ledger.c ---- */

extern topic_t *topics;
extern uint32_t ntopics;
extern group_t *groups;
extern uint32_t ngroups, ngroups_id, ngroups_noid, ngroups_churn;
extern uint32_t flood_group; /* the last group */
extern pattern_t *patterns;
extern uint32_t npatterns;
extern uint32_t pattern_vanish; /* "soak.vanish", never published */
extern uint32_t pattern_flood;  /* "flood.>": the flood group */

void ledger_init(int conns);
/* Topic index of a name, or -1. */
int32_t topic_find(const char *name, size_t len);
/* A random pattern of kind k (k < 0: by the configured weights). */
uint32_t pattern_pick(uint64_t *rng, int kind);
/* True if pattern p covers no topic already covered on c. */
bool pattern_disjoint(const conn_t *c, uint32_t p);
/* Payload for the publish that will get seq on topic t: a JSON array
 * [seq, n, "<n letters>"]; n up to 96 (1/64 of them up to 4 KiB), and 16 to
 * 48 KiB on the flood group's topics. */
#define PAYLOAD_MAX (50 * 1024)
size_t payload_make(char *out, size_t cap, uint64_t seq, uint32_t t);
/* Subscriber bookkeeping: a subscribe was sent / acked, an unsubscribe
 * sent / acked; the connection sent its Close / got the broker's reply. */
void ledger_sub_ack(conn_t *c, uint32_t p, const req_t *r, uint64_t ack_seq, bool has_seq);
void ledger_unsub_sent(conn_t *c, uint32_t p);
void ledger_unsub_ack(conn_t *c, uint32_t p);
void ledger_close_sent(conn_t *c);
void ledger_close_done(conn_t *c);
/* A message arrived on c. */
void ledger_message(conn_t *c, const msg_server_t *m);
/* End of run: every episode open now must have reached its topic's final
 * seq. Returns the number of seqs still missing; report: count them as
 * losses with details. */
uint64_t ledger_missing(conn_t *c, bool report);
/* Release c's ledger memory. */
void ledger_free(conn_t *c);

/* ---- broker.c ---- */

typedef struct metrics {
    bool valid;
    int64_t t;
    double conns_open, conns_total, tcp_open, http_requests, handshake_rejects;
    double published, delivered, slow_closes, slow_drops, subscriptions, ping_timeouts;
    double topics;
    double closes_sent[16], closes_received[16]; /* 1000..1015 */
} metrics_t;

int broker_start(void);
/* SIGTERM; returns the wait status after at most timeout_ms (-1: still
 * running, then killed). */
int broker_term(int timeout_ms);
/* Non-blocking: true (and *status) if the broker has exited. */
bool broker_exited(int *status);
pid_t broker_pid(void);
int broker_port(void);
const char *broker_log(void);
void broker_log_tail(size_t max);
void broker_log_keep(void);
/* Remove the log of a passing run unless asked to keep it. */
void broker_log_done(bool passed);
/* VmRSS of the broker in KiB, or -1. */
long broker_rss_kib(void);
/* Parse a /metrics body. */
void metrics_parse(const char *body, size_t len, metrics_t *m);
/* Raise RLIMIT_NOFILE to at least want; returns the soft limit obtained. */
long raise_nofile(long want);

/* ---- race.c ---- */

/* The unsubscribe/Close-after-ack ordering check; returns 0 or 2 (usage),
 * violations are counted through violation(). */
int race_main(int iterations);

/* ---- soak.c: shared state and reporting ---- */

enum phase { PH_RAMP, PH_LOAD, PH_DRAIN, PH_AUDIT, PH_TERM, PH_DONE };

typedef struct stats {
    uint64_t tcp_opened, ws_opened, closed;
    uint64_t deliveries, losses, duplicates, reorders, strays, corrupt;
    uint64_t losses_at_end; /* of losses: acked before an unsubscribe/Close, not delivered */
    uint64_t loss_events;   /* violations reported for losses (one per gap or per end) */
    uint64_t published, confirmed, acks, pongs;
    uint64_t slow_cycles, slow_closed_1008, slow_closed_eof, slow_gaps;
    uint64_t mute_closed, garbage_done, vanished, churned;
    uint64_t close_rcvd[5000]; /* Close frames received by our clients, by code */
    uint64_t close_other;
    uint64_t http_status[600];
    uint64_t expect_sent[16]; /* close codes 1000..1015 the broker must have sent */
    uint64_t errors_ok;       /* error replies that were expected */
    uint64_t expect_rejects;  /* upgrades the broker must count as handshake rejects */
    uint64_t expect_plain;    /* plain HTTP requests it must count (metrics included) */
    uint64_t metrics_fetched;
    uint64_t gk_done[32]; /* garbage connections checked, by kind */
    uint64_t vk_done[16]; /* vanishing connections, by kind */
    uint64_t violations;
    uint64_t truncated;      /* slow consumer: frame cut by the broker's abort */
    uint64_t stall_timeouts; /* 1001 ping timeouts right after the test itself stalled */
    uint64_t trickle_late;   /* trickled upgrades the test itself finished too late: 408 */
    uint64_t late_requests;  /* requests the test itself sent too late: 408 */
    uint64_t graces;         /* deadlines extended because the test itself stalled */
} stats_t;

extern soak_cfg_t cfg;
extern stats_t st;
extern int phase;
extern int64_t t_load0; /* start of the load phase */
extern metrics_t last_metrics;

/* Record a violation: printed (the first 40 in full), counted, and the run
 * fails. */
void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same, always printed (audit results, the broker's exit). */
void violation_major(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *role_name(int role);
/* True if an iteration of the test's own loop lasting min_ms or more ended
 * at or after since. */
bool client_stalled(int64_t since, int64_t min_ms);

#endif
