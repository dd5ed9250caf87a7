/*
 * worker.h - one worker thread: its own uv_loop, its own SO_REUSEPORT
 * listener, the connections it accepted, its local subscription table, its
 * inbox of frames posted by publishers on any worker, and the supervisor
 * timer. Connections never move between workers; apart from the inbox
 * (mutex) and the registry, nothing here is touched by another thread.
 */
#ifndef WSBROKER_WORKER_H
#define WSBROKER_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>
#include <wsproto/pmd.h>

#include "broker.h"
#include "frame.h"
#include "link.h"
#include "ptable.h"
#include "rings.h"
#include "stats.h"

#define WRK_READ_BUF   (64 * 1024)
#define WRK_GATHER_BUF (64 * 1024)

typedef struct wrk wrk_t;

/* One listening socket of a worker (SO_REUSEPORT: each worker has its own). */
typedef struct lsn {
    uv_poll_t poll; /* readable: connections to accept on fd */
    int fd;         /* -1: this listener is not configured */
    bool on;        /* polled (not paused, not closed) */
    bool tls;
    wrk_t *w;
} lsn_t;

struct wrk {
    int id;
    broker_t *b;
    const cfg_t *cfg;
    uv_thread_t thread;
    uv_loop_t loop;
    int epfd;                /* the connections' sockets (conn.c), polled below */
    uv_poll_t io;            /* readable: epfd has events */
    link_t dead;             /* closed connections, freed after the epoll batch */
    lsn_t lsn[2];            /* [0] --port (plain), [1] --tls-port */
    uv_timer_t accept_retry; /* resumes accepting after EMFILE/ENFILE */
    uint64_t starved_since;  /* ms: first EMFILE of the current spell, or 0 */
    uv_async_t wake;         /* inbox not empty */
    uv_async_t ctl;          /* shutdown phase requested */
    _Atomic int cmd;         /* requested phase: 1 quiesce, 2 close all */
    int phase;               /* phase reached */
    uv_timer_t tick;         /* supervisor */
    uv_timer_t rescue;       /* re-polls the epoll set while there are connections */
    uv_timer_t drain;        /* shutdown deadline */
    uv_check_t flush;        /* writes queued output once per loop iteration */
    uv_idle_t more;          /* active while output waits for the next turn's flush */
    uv_timer_t pace;         /* the same, on a shared CPU: a pause first (on_check) */
    long nivcsw;             /* this thread's involuntary context switches, last read */
    bool behind;             /* output waits for the next turn */
    uint64_t shared_until;   /* loop time (ms): pause between turns until then */

    pthread_mutex_t inbox_mu;
    frame_t **inbox; /* posted frames, in per-topic seq order */
    size_t inbox_len, inbox_cap;
    size_t inbox_bytes; /* wire bytes of the frames in the inbox */
    bool self_posted;   /* this worker posted to its own inbox: drain in check */
    frame_t **batch;    /* the inbox array being drained */
    size_t batch_cap;
    size_t batch_len, batch_pos; /* its frames; delivered up to pos */
    uint64_t batch_gen;          /* its drain number (pubsub_drained) */
    bool draining;               /* inside drain_inbox (it must not nest) */

    ptable_t subs;              /* pattern -> lpat_t */
    link_t filters;             /* replay filters (pubsub.c), oldest first */
    uint64_t drains;            /* inbox drains started */
    uint64_t next_token;        /* cluster mode: names of pending subscriptions */
    smap_t byid;                /* cluster mode: connection id -> conn_t */
    uint64_t swept;             /* ms: the last history sweep */
    link_t hs_list;             /* HTTP state, by accept time */
    link_t ping_list;           /* open, by time of the last Ping */
    link_t wait_list;           /* Ping sent, nothing received since, by Ping time */
    link_t closing_list;        /* closing, by close start */
    link_t msg_list;            /* incomplete messages, by their start */
    link_t replies;             /* connections with replies to flush (whole, each turn) */
    link_t pending;             /* connections with messages to flush (in slices) */
    link_t throttled;           /* connections held back by full inboxes */
    uint64_t throttle_mask;     /* the workers they wait for */
    _Atomic bool has_throttled; /* throttled is not empty (read by drainers) */
    ring_pool_t rings;          /* unused output rings (rings.h) */
    struct conn **slow;         /* marked slow during a delivery batch */
    size_t nslow, slow_cap;
    uint64_t nconns;
    uint64_t next_id;
    uint64_t stamp; /* delivery round, for one delivery per connection */
    stats_t stats;
    /* permessage-deflate: shared compression (no context takeover, 15
     * bits) and inflation of client messages (no context takeover, which
     * the broker always asks of clients), one each per worker. */
    pmd_deflater_t deflater;
    pmd_inflater_t inflater;
    pmd_buf_t inflated; /* the last inflated message */
    uint8_t rbuf[WRK_READ_BUF];
    uint8_t gather[WRK_GATHER_BUF]; /* small frames copied together for a write (outq_iov) */
};

/* Create worker id with a listening socket bound to the configured address
 * (main thread, before any worker starts). Returns NULL after logging why. */
wrk_t *wrk_new(broker_t *b, int id);
int wrk_start(wrk_t *w);
void wrk_join(wrk_t *w);
void wrk_free(wrk_t *w);

/* Inbox limit: past it the worker is marked congested and the publishers
 * that post to it are throttled until it drains. Posts are never refused,
 * so an inbox holds at most the limit plus one publish per connection. */
#define WRK_INBOX_BYTES (4u << 20)
#define WRK_INBOX_LEN   65536

/* Deliver what other workers posted to w's inbox so far (w's thread). A
 * connection that unsubscribes or closes calls it first: every publish
 * acknowledged before its request reached the broker is then delivered to
 * it before the unsubscribe's ack or the Close reply. Does nothing when
 * called from within a drain. */
void wrk_drain_inbox(wrk_t *w);

/* A connection joined w's epoll set (starts the re-poll, see worker.c). */
void wrk_conn_added(wrk_t *w);

/* reg_post_fn: queue f (one reference, taken over) on worker w's inbox. */
void wrk_post(void *broker, int w, frame_t *f);

/* Cluster mode: worker w's connection with this id, or NULL. */
struct conn *wrk_conn(wrk_t *w, uint64_t id);
/* Cluster mode: keep the id map (c accepted or gone). */
void wrk_conn_index(wrk_t *w, struct conn *c, bool on);

/* Ask worker w to enter shutdown phase (any thread). */
void wrk_command(wrk_t *w, int phase);

/* Milliseconds on w's loop clock. */
static inline uint64_t wrk_now(wrk_t *w)
{
    return uv_now(&w->loop);
}

#endif
