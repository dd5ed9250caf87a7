/*
 * worker.c - worker threads: listener, inbox, supervisor and shutdown.
 *
 * The supervisor keeps each connection on exactly one time-ordered list for
 * its state (handshake, open, closing) plus, after an unanswered Ping, the
 * wait list. Every list has one fixed timeout, so appending at the tail
 * keeps it sorted and a tick only looks at the expired heads.
 *
 * Shutdown runs in two phases so that every message acknowledged before it
 * is delivered: (1) every worker stops accepting and reading, so no new
 * publish can start; when the last worker is quiet, (2) every worker drains
 * its inbox, sends Close 1001 to each connection and waits up to
 * --close-timeout for the close handshakes before stopping its loop.
 */
#define _GNU_SOURCE /* accept4 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "pubsub.h"
#include "tls.h"

#define LISTEN_BACKLOG 4096
#define ACCEPT_BATCH   64  /* connections accepted per loop iteration */
#define ACCEPT_RETRY   100 /* ms before accepting again after EMFILE */

static uint64_t ms(double seconds)
{
    return (uint64_t)(seconds * 1000.0 + 0.5);
}

static int listen_socket(const cfg_t *cfg, int id, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (uv_ip4_addr(cfg->bind, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(cfg->bind, port, (struct sockaddr_in6 *)&ss) != 0) {
        LOG(LOG_ERROR, id, 0, "listen_failed", "bind=%s error=\"bad address\"", cfg->bind);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG(LOG_ERROR, id, 0, "listen_failed", "error=\"%s\"", strerror(errno));
        return -1;
    }
    /* defer: the kernel hands over a connection once its first bytes are
     * in (or after about a second of SYN-ACK retries), so accepting and
     * reading the request take one wake-up, not two. TCP_NODELAY here is
     * inherited by every accepted socket: no setsockopt per connection. */
    int one = 1, defer = 1;
    socklen_t slen =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof(defer)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, slen) != 0 || listen(fd, LISTEN_BACKLOG) != 0) {
        LOG(LOG_ERROR, id, 0, "listen_failed", "bind=%s port=%d error=\"%s\"", cfg->bind, port,
            strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

wrk_t *wrk_new(broker_t *b, int id)
{
    wrk_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->id = id;
    w->b = b;
    w->cfg = b->cfg;
    for (int i = 0; i < 2; i++)
        w->lsn[i] = (lsn_t){.fd = -1, .tls = i == 1, .w = w};
    pthread_mutex_init(&w->inbox_mu, NULL);
    ptable_init(&w->subs);
    link_init(&w->hs_list);
    link_init(&w->ping_list);
    link_init(&w->wait_list);
    link_init(&w->closing_list);
    link_init(&w->msg_list);
    link_init(&w->replies);
    link_init(&w->pending);
    link_init(&w->throttled);
    link_init(&w->dead);
    link_init(&w->filters);
    smap_init(&w->byid);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0 || uv_loop_init(&w->loop) != 0) {
        if (w->epfd >= 0)
            close(w->epfd);
        free(w);
        return NULL;
    }
    int ports[2] = {b->cfg->port, b->cfg->tls_port};
    bool failed = false;
    for (int i = 0; i < 2; i++)
        if (ports[i] != 0 && (w->lsn[i].fd = listen_socket(b->cfg, id, ports[i])) < 0)
            failed = true;
    if (failed) {
        for (int i = 0; i < 2; i++)
            if (w->lsn[i].fd >= 0)
                close(w->lsn[i].fd);
        uv_loop_close(&w->loop);
        close(w->epfd);
        free(w);
        return NULL;
    }
    return w;
}

/* ---- Connections' sockets: one epoll set per worker, itself polled by
 * the loop. A connection then costs a descriptor and a few bytes of
 * bookkeeping instead of a libuv stream handle, and its reads and writes
 * are plain recv/sendmsg calls. ---- */

#define IO_BATCH 256

/* Everything ready in the worker's epoll set, a few batches at most, then
 * the loop's other work gets its turn. */
static void io_poll(wrk_t *w)
{
    struct epoll_event ev[IO_BATCH];
    for (int round = 0; round < 4; round++) {
        int n = epoll_wait(w->epfd, ev, IO_BATCH, 0);
        for (int i = 0; i < n; i++) {
            conn_t *c = ev[i].data.ptr;
            if (c->state == CONN_CLOSED)
                continue; /* closed earlier in this batch; freed later */
            uint32_t e = ev[i].events;
            if ((e & (EPOLLERR | EPOLLHUP)) && (c->flags & CF_PAUSED)) {
                conn_abort(c); /* gone, and not being read: nothing to wait for */
                continue;
            }
            if (e & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_readable(c);
            if ((e & EPOLLOUT) && c->state != CONN_CLOSED)
                conn_writable(c);
        }
        if (n < IO_BATCH)
            break;
    }
}

static void on_io(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    io_poll(p->data);
}

/* The worker's epoll set is itself watched by the loop's epoll, so a
 * connection is read only when that nested set wakes the loop. Stalls of
 * seconds seen in benchmarks (requests unread while the set was ready)
 * turned out to be CPU starvation by other sessions' processes, not a
 * lost wake-up: the worker was runnable, and neither this nor the
 * previous build stalled once those were gone; a minimal program nesting
 * two sets the same way never lost a wake-up either. As a bound on the
 * one thing not ruled out, a worker with connections also polls its set
 * every RESCUE_MS (a worker without connections is not woken). */
#define RESCUE_MS 5

static void on_rescue(uv_timer_t *t)
{
    wrk_t *w = t->data;
    if (w->nconns == 0) {
        uv_timer_stop(t);
        return;
    }
    io_poll(w);
}

void wrk_conn_added(wrk_t *w)
{
    if (!uv_is_active((uv_handle_t *)&w->rescue))
        uv_timer_start(&w->rescue, on_rescue, RESCUE_MS, RESCUE_MS);
}

/* ---- Connections by id (cluster mode: the link's answers name them). ---- */

struct conn *wrk_conn(wrk_t *w, uint64_t id)
{
    return smap_get(&w->byid, (const char *)&id, sizeof(id));
}

void wrk_conn_index(wrk_t *w, struct conn *c, bool on)
{
    /* The key bytes live in the connection (its id), as smap wants. */
    if (on)
        smap_put(&w->byid, (const char *)&c->id, sizeof(c->id), c);
    else
        smap_del(&w->byid, (const char *)&c->id, sizeof(c->id));
}

/* ---- Inbox: frames posted by publishers on any worker. ---- */

/* The worker running on this thread, if any. */
static __thread wrk_t *self;

void wrk_post(void *broker, int wid, frame_t *f)
{
    wrk_t *w = ((broker_t *)broker)->workers[wid];
    pthread_mutex_lock(&w->inbox_mu);
    if (w->inbox_len == w->inbox_cap) {
        size_t ncap = w->inbox_cap ? w->inbox_cap * 2 : 256;
        frame_t **ni = realloc(w->inbox, ncap * sizeof(*ni));
        if (ni == NULL) {
            pthread_mutex_unlock(&w->inbox_mu);
            LOG(LOG_ERROR, w->id, 0, "inbox_full", "error=ENOMEM");
            frame_unref(f);
            return;
        }
        w->inbox = ni;
        w->inbox_cap = ncap;
    }
    w->inbox[w->inbox_len++] = f;
    w->inbox_bytes += f->len;
    bool was_empty = w->inbox_len == 1;
    bool over = w->inbox_bytes > WRK_INBOX_BYTES || w->inbox_len > WRK_INBOX_LEN;
    pthread_mutex_unlock(&w->inbox_mu);
    uint64_t bit = 1ull << w->id;
    if (over && !(atomic_load(&w->b->congested) & bit))
        atomic_fetch_or(&w->b->congested, bit);
    if (w == self) {
        /* A publish on this worker: drained before this iteration's flush,
         * no wake-up needed. Other posters that find the inbox non-empty
         * rely on that drain too. */
        w->self_posted = true;
    } else if (was_empty) {
        /* Coalesced by libuv; only the first post after a drain must wake. */
        uv_async_send(&w->wake);
    }
}

/* Take what the inbox holds as the batch to deliver (the batch before it
 * is done). */
static void take_inbox(wrk_t *w)
{
    pthread_mutex_lock(&w->inbox_mu);
    frame_t **batch = w->inbox;
    size_t n = w->inbox_len, cap = w->inbox_cap;
    w->inbox = w->batch;
    w->inbox_cap = w->batch_cap;
    w->inbox_len = 0;
    w->inbox_bytes = 0;
    pthread_mutex_unlock(&w->inbox_mu);
    w->batch = batch;
    w->batch_cap = cap;
    w->batch_len = n;
    w->batch_pos = 0;
    w->batch_gen = w->drains++;
    broker_t *b = w->b;
    uint64_t bit = 1ull << w->id;
    if (atomic_load(&b->congested) & bit) {
        /* Taken whole: no longer congested. Wake the workers holding back
         * publishers (they check again; see wrk_release_throttled). */
        atomic_fetch_and(&b->congested, ~bit);
        for (int i = 0; i < b->nworkers; i++)
            if (atomic_load(&b->workers[i]->has_throttled))
                uv_async_send(&b->workers[i]->wake);
    }
}

/* Deliver what the inbox holds now: one swap per call, so a post that
 * arrives meanwhile finds the inbox empty and wakes the loop again, and a
 * busy publisher cannot starve this worker's reads. A batch is delivered
 * in slices of about DRAIN_SLICE_NS: past that the rest waits for the
 * next loop turn (a wake-up is sent), so a batch of many messages to many
 * subscribers does not keep the worker from its sockets, HTTP requests
 * and timers for seconds. whole: deliver the unfinished batch and one
 * fresh swap completely (shutdown, and the drain before an unsubscribe or
 * Close reply, which must see every message posted before it). */
#define DRAIN_SLICE_NS    (5 * 1000000ull)
#define DRAIN_CHECK_EVERY 32

/* Runs (pubsub_deliver_run): messages of up to RUN_FRAME bytes, RUN_BYTES
 * in all, are joined; larger ones are not worth a copy. */
#define RUN_FRAME 4096
#define RUN_BYTES (64 * 1024)

static bool joinable(const frame_t *f)
{
    return f->kind == FK_FANOUT && f->len <= RUN_FRAME;
}

/* How many of the n frames at b, at least one, form a run. */
static size_t run_length(frame_t *const *b, size_t n)
{
    const frame_t *f = b[0];
    size_t k = 1, bytes = f->len;
    if (!joinable(f))
        return 1;
    for (; k < n; k++) {
        const frame_t *g = b[k];
        if (!joinable(g) || bytes + g->len > RUN_BYTES || g->topic_len != f->topic_len ||
            memcmp(g->topic, f->topic, f->topic_len) != 0)
            break;
        bytes += g->len;
    }
    return k;
}

static void drain_inbox_as(wrk_t *w, bool whole)
{
    if (w->draining)
        return;
    w->draining = true;
    bool swapped = false;
    uint64_t t0 = whole ? 0 : uv_hrtime();
    for (;;) {
        if (w->batch_pos == w->batch_len) {
            if (swapped)
                break;
            take_inbox(w);
            swapped = true;
        }
        frame_t **batch = w->batch;
        size_t i = w->batch_pos, n = w->batch_len, done = 0;
        while (i < n) {
            frame_t *f = batch[i];
            size_t k = run_length(batch + i, n - i);
            w->batch_pos = i += k;
            if (k > 1)
                pubsub_deliver_run(w, batch + i - k, k);
            else if (f->kind == FK_FANOUT)
                pubsub_deliver(w, f);
            else
                pubsub_control(w, f);
            if (!whole && (done += k) >= DRAIN_CHECK_EVERY && i < n) {
                done = 0;
                if (uv_hrtime() - t0 > DRAIN_SLICE_NS)
                    break;
            }
        }
        if (i == n) {
            pubsub_drained(w, w->batch_gen);
        } else {
            /* The rest on the next loop turn, before anything posted since. */
            uv_async_send(&w->wake);
            break;
        }
    }
    conn_settle(w);
    w->draining = false;
}

static void drain_inbox(wrk_t *w)
{
    drain_inbox_as(w, false);
}

void wrk_drain_inbox(wrk_t *w)
{
    drain_inbox_as(w, true);
}

/* Let throttled connections go on once none of the workers they posted to
 * is congested. Runs from the wake-up and the supervisor tick (a fallback:
 * the flag/bit handshake with drain_inbox already guarantees a wake-up). */
static void release_throttled(wrk_t *w)
{
    /* Shutting down: held-back publishes are never processed (nothing new
     * may be published once the workers went quiet); conn_close lets the
     * rest of the input through only to find the peer's Close. */
    if (link_empty(&w->throttled) || w->phase > 0)
        return;
    if (atomic_load(&w->b->congested) & w->throttle_mask)
        return;
    link_t batch;
    link_init(&batch);
    /* Move the list aside: releasing parses held-back input, which may
     * throttle connections again. */
    batch.next = w->throttled.next;
    batch.prev = w->throttled.prev;
    batch.next->prev = &batch;
    batch.prev->next = &batch;
    link_init(&w->throttled);
    w->throttle_mask = 0;
    atomic_store(&w->has_throttled, false);
    link_t *l;
    while ((l = link_first(&batch)) != NULL)
        conn_unthrottle(link_entry(l, conn_held_t, link)->c);
}

static void on_wake(uv_async_t *a)
{
    wrk_t *w = a->data;
    drain_inbox(w);
    release_throttled(w);
}

/* ---- Output: flushed once per loop iteration. ----
 *
 * Connections with replies (acks, Close, HTTP; w->replies) are all
 * flushed every turn, first. Those with messages only (w->pending) follow,
 * and a turn flushes them for about FLUSH_SLICE_NS; the rest keep their
 * place and go first in the next turn. A turn thus stays short however
 * many subscribers a message reaches (new requests, acks and timers are
 * not held up behind a fan-out), and what a subscriber is sent meanwhile
 * joins the write it was waiting for: under load there are fewer, fuller
 * writes, the kernel's cost being mostly per call (docs/ARCHITECTURE.md).
 * Nothing waits when there is no backlog: a turn that flushes everything
 * is the usual case.
 *
 * With a backlog, the next turn follows at once (an idle handle keeps the
 * poll from blocking) while the thread has its CPU to itself. When it was
 * preempted in the last FLUSH_SHARED_MS, the CPU is shared, with the other
 * workers or with the programs reading at the other end, and spinning on
 * only takes their time: the loop then waits up to FLUSH_PAUSE_MS (or for
 * input) first. The readers catch up meanwhile and each subscriber's next
 * write carries more: in fan-out to 1,000 subscribers, with the load
 * generator on the same two cores, about 90 messages per write instead of
 * 37, less than half the CPU per delivery, and a lower tail latency too
 * (docs/BENCHMARKS.md). */
#define FLUSH_SLICE_NS    (1000 * 1000ull)
#define FLUSH_CHECK_EVERY 16
#define FLUSH_PAUSE_MS    1
#define FLUSH_SHARED_MS   20 /* how long one preemption counts */

static void on_more(uv_idle_t *h)
{
    (void)h; /* only keeps the loop from blocking in its poll */
}

static void on_pace(uv_timer_t *t)
{
    (void)t; /* only ends the poll's wait */
}

/* Whether this thread was preempted since the last call. */
static bool preempted(wrk_t *w)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) != 0)
        return false;
    bool yes = ru.ru_nivcsw != w->nivcsw;
    w->nivcsw = ru.ru_nivcsw;
    return yes;
}

/* Output waits for the next turn: when. */
static void pace(wrk_t *w)
{
    if (!w->behind) {
        w->behind = true;
        preempted(w); /* counting from here */
    } else if (preempted(w)) {
        w->shared_until = uv_now(&w->loop) + FLUSH_SHARED_MS;
    }
    if (uv_now(&w->loop) < w->shared_until) {
        STAT_ADD(&w->stats, flush_pauses, 1);
        uv_idle_stop(&w->more);
        if (!uv_is_active((uv_handle_t *)&w->pace))
            uv_timer_start(&w->pace, on_pace, FLUSH_PAUSE_MS, 0);
    } else {
        uv_idle_start(&w->more, on_more);
    }
}

static void on_check(uv_check_t *h)
{
    wrk_t *w = h->data;
    link_t *l;
    if (w->self_posted) {
        w->self_posted = false;
        drain_inbox(w);
    }
    uint64_t t0 = 0;
    unsigned n = 0;
    for (;;) {
        /* Replies first, also those a flush below queues. */
        if ((l = link_first(&w->replies)) == NULL) {
            if ((l = link_first(&w->pending)) == NULL)
                break;
            if (n == 0)
                t0 = uv_hrtime();
            else if (n % FLUSH_CHECK_EVERY == 0 && uv_hrtime() - t0 > FLUSH_SLICE_NS)
                break;
            n++;
        }
        link_remove(l);
        conn_flush(link_entry(l, conn_t, pending));
    }
    if (link_empty(&w->pending)) {
        uv_idle_stop(&w->more);
        uv_timer_stop(&w->pace);
        w->behind = false;
    } else {
        pace(w);
    }
    conn_free_closed(w);
}

/* ---- Supervisor. ---- */

static void on_tick(uv_timer_t *t)
{
    wrk_t *w = t->data;
    const cfg_t *cfg = w->cfg;
    uint64_t now = wrk_now(w);
    link_t *l;

    release_throttled(w);
    ring_trim(&w->rings, false);
    /* Expired history of idle topics: a sweep per TTL, at most one a second. */
    uint64_t period = ms(cfg->history_ttl) > 1000 ? ms(cfg->history_ttl) : 1000;
    if (cfg->history_ttl > 0 && now - w->swept >= period) {
        w->swept = now;
        reg_sweep(w->b->reg, w->id, w->b->nworkers);
    }

    while ((l = link_first(&w->hs_list)) != NULL) {
        conn_t *c = link_entry(l, conn_t, sup);
        if (c->since + ms(cfg->handshake_timeout) > now)
            break;
        link_remove(l);
        STAT_ADD(&w->stats, handshake_timeouts, 1);
        LOG_LIMITED(LOG_INFO, w->id, c->id, "handshake_timeout", "timeout=%g tls=%s",
                    cfg->handshake_timeout, c->tls ? "yes" : "no");
        if (c->tls != NULL && !tls_established(c->tls)) {
            STAT_ADD(&w->stats, tls_timeouts, 1);
            conn_abort(c); /* no channel to answer on */
        } else {
            conn_http_error(c, 408, "request timeout");
        }
    }
    while ((l = link_first(&w->msg_list)) != NULL) {
        conn_t *c = link_entry(l, conn_msg_t, partial)->c;
        if (c->msg->since + ms(cfg->message_timeout) > now)
            break;
        link_remove(l);
        STAT_ADD(&w->stats, message_timeouts, 1);
        LOG_LIMITED(LOG_INFO, w->id, c->id, "message_timeout", "timeout=%g", cfg->message_timeout);
        conn_close(c, WS_CLOSE_POLICY, "message timeout", false);
    }
    if (cfg->ping_interval > 0) {
        while ((l = link_first(&w->ping_list)) != NULL) {
            conn_t *c = link_entry(l, conn_t, sup);
            if (c->since + ms(cfg->ping_interval) > now)
                break;
            link_remove(l);
            c->since = now;
            link_insert_tail(&w->ping_list, l);
            if (!link_linked(&c->wait)) {
                c->ping_sent = now;
                link_insert_tail(&w->wait_list, &c->wait);
            }
            conn_ping(c);
        }
    }
    while ((l = link_first(&w->wait_list)) != NULL) {
        conn_t *c = link_entry(l, conn_t, wait);
        if (c->ping_sent + ms(cfg->ping_timeout) > now)
            break;
        link_remove(l);
        /* Bytes from the peer not read yet (the loop stalled, or c is held
         * back): it answered; they are read in their turn. */
        int unread = 0;
        if (ioctl(c->fd, FIONREAD, &unread) == 0 && unread > 0)
            continue;
        STAT_ADD(&w->stats, ping_timeouts, 1);
        LOG_LIMITED(LOG_INFO, w->id, c->id, "ping_timeout", "timeout=%g", cfg->ping_timeout);
        conn_close(c, WS_CLOSE_GOING_AWAY, "ping timeout", false);
    }
    while ((l = link_first(&w->closing_list)) != NULL) {
        conn_t *c = link_entry(l, conn_t, sup);
        if (c->since + ms(cfg->close_timeout) > now)
            break;
        /* The peer did not finish the close handshake in time (or did not
         * read our Close): worth an operator's eye, rate-limited. */
        LOG_LIMITED(LOG_INFO, w->id, c->id, "close_timeout", "unsent=%llu",
                    (unsigned long long)c->out.bytes);
        conn_abort(c);
    }
}

static uint64_t tick_ms(const cfg_t *cfg)
{
    double m = cfg->handshake_timeout;
    if (cfg->ping_interval > 0 && cfg->ping_interval < m)
        m = cfg->ping_interval;
    if (cfg->ping_timeout < m)
        m = cfg->ping_timeout;
    if (cfg->close_timeout < m)
        m = cfg->close_timeout;
    if (cfg->message_timeout < m)
        m = cfg->message_timeout;
    uint64_t t = ms(m / 8);
    return t < 5 ? 5 : t > 1000 ? 1000 : t;
}

/* ---- Listener. ----
 *
 * The worker accepts with accept4() itself, from a poll handle on its
 * listening socket, instead of uv_listen: it can then stop accepting when
 * the process runs out of descriptors and start again from a timer. (Left
 * alone, an EMFILE listener stays readable and the loop spins on it; the
 * spare-descriptor trick does not help when several workers race for the
 * one descriptor it frees.) Accepting is bounded per iteration, so a
 * connection storm cannot starve the connections already open. */

static void on_listen_ready(uv_poll_t *p, int status, int events);

static void listen_resume(wrk_t *w)
{
    for (int i = 0; i < 2; i++) {
        lsn_t *l = &w->lsn[i];
        if (w->phase == 0 && l->fd >= 0 && !l->on &&
            uv_poll_start(&l->poll, UV_READABLE, on_listen_ready) == 0)
            l->on = true;
    }
}

static void on_accept_retry(uv_timer_t *t)
{
    listen_resume(t->data);
}

/* Out of descriptors: stop accepting on every listener of w for a while. */
static void listen_pause(wrk_t *w, int err)
{
    for (int i = 0; i < 2; i++)
        if (w->lsn[i].on) {
            uv_poll_stop(&w->lsn[i].poll);
            w->lsn[i].on = false;
        }
    STAT_ADD(&w->stats, accept_pauses, 1);
    if (w->starved_since == 0) {
        /* Logged once per spell; accept_resumed ends it. */
        w->starved_since = wrk_now(w);
        LOG(LOG_WARN, w->id, 0, "accept_paused", "error=\"%s\" retry_ms=%d open=%u", strerror(err),
            ACCEPT_RETRY, atomic_load_explicit(&w->b->tcp_conns, memory_order_relaxed));
    }
    uv_timer_start(&w->accept_retry, on_accept_retry, ACCEPT_RETRY, 0);
}

static void on_listen_ready(uv_poll_t *p, int status, int events)
{
    lsn_t *l = p->data;
    wrk_t *w = l->w;
    (void)events;
    if (status < 0) {
        LOG_LIMITED(LOG_WARN, w->id, 0, "accept_failed", "error=%s", uv_strerror(status));
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && l->on; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            if (w->starved_since != 0) {
                LOG(LOG_WARN, w->id, 0, "accept_resumed", "paused_ms=%llu",
                    (unsigned long long)(wrk_now(w) - w->starved_since));
                w->starved_since = 0;
            }
            conn_accept(w, fd, l->tls);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue; /* that one connection is gone; the next may be fine */
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            listen_pause(w, errno);
            return;
        default:
            STAT_ADD(&w->stats, accept_errors, 1);
            LOG_LIMITED(LOG_WARN, w->id, 0, "accept_failed", "error=%s", strerror(errno));
            return;
        }
    }
}

static void listen_close(wrk_t *w)
{
    uv_timer_stop(&w->accept_retry);
    for (int i = 0; i < 2; i++) {
        lsn_t *l = &w->lsn[i];
        if (l->fd < 0)
            continue;
        l->on = false;
        uv_close((uv_handle_t *)&l->poll, NULL);
        close(l->fd);
        l->fd = -1;
    }
}

/* ---- Shutdown. ---- */

void wrk_command(wrk_t *w, int phase)
{
    atomic_store(&w->cmd, phase);
    uv_async_send(&w->ctl);
}

/* Every live connection is on exactly one of these (by state). */
#define EACH_LIST(w, lists) link_t *lists[] = {&(w)->closing_list, &(w)->ping_list, &(w)->hs_list}

static void on_drain_deadline(uv_timer_t *t)
{
    wrk_t *w = t->data;
    EACH_LIST(w, lists);
    /* conn_abort moves c to w->dead. */
    for (int i = 0; i < 3; i++) {
        link_t *l;
        while ((l = link_first(lists[i])) != NULL)
            conn_abort(link_entry(l, conn_t, sup));
    }
}

static void quiesce(wrk_t *w)
{
    w->phase = 1;
    listen_close(w);
    /* Closing and open ones stop reading; then HTTP ones get their 503
     * (which moves them to the closing list, already walked). */
    EACH_LIST(w, lists);
    for (int i = 0; i < 3; i++) {
        for (link_t *l = lists[i]->next; l != lists[i];) {
            conn_t *c = link_entry(l, conn_t, sup);
            l = l->next;
            if (c->state == CONN_HTTP)
                conn_http_error(c, 503, "server shutting down");
            else
                conn_pause(c);
        }
    }
    broker_t *b = w->b;
    if (atomic_fetch_sub(&b->quiesce_left, 1) == 1)
        for (int i = 0; i < b->nworkers; i++)
            wrk_command(b->workers[i], 2);
}

static void close_all(wrk_t *w)
{
    w->phase = 2;
    drain_inbox_as(w, true);
    /* The closing ones read on (for the peer's Close), then the open ones
     * are closed (which moves them to the closing list, already walked). */
    EACH_LIST(w, lists);
    for (int i = 0; i < 3; i++) {
        for (link_t *l = lists[i]->next; l != lists[i];) {
            conn_t *c = link_entry(l, conn_t, sup);
            l = l->next;
            if (c->state == CONN_OPEN)
                conn_close(c, WS_CLOSE_GOING_AWAY, "server shutting down", true);
            else if (c->state == CONN_CLOSING)
                conn_resume(c);
        }
    }
    uv_timer_start(&w->drain, on_drain_deadline, ms(w->cfg->close_timeout), 0);
    if (w->nconns == 0)
        uv_stop(&w->loop);
}

static void on_ctl(uv_async_t *a)
{
    wrk_t *w = a->data;
    int cmd = atomic_load(&w->cmd);
    if (cmd >= 1 && w->phase == 0)
        quiesce(w);
    if (cmd >= 2 && w->phase == 1)
        close_all(w);
}

/* ---- Thread. ---- */

static void run(void *arg)
{
    wrk_t *w = arg;
    self = w;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Stopped: every connection is gone. Close the worker's own handles. */
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->ctl, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_close((uv_handle_t *)&w->rescue, NULL);
    uv_close((uv_handle_t *)&w->drain, NULL);
    uv_close((uv_handle_t *)&w->flush, NULL);
    uv_close((uv_handle_t *)&w->more, NULL);
    uv_close((uv_handle_t *)&w->pace, NULL);
    uv_close((uv_handle_t *)&w->accept_retry, NULL);
    uv_close((uv_handle_t *)&w->io, NULL);
    listen_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    conn_free_closed(w);
    drain_inbox_as(w, true); /* frames posted after the drain: release them */
    LOG(LOG_DEBUG, w->id, 0, "worker_stopped", NULL);
    atomic_fetch_sub(&w->b->workers_running, 1);
}

int wrk_start(wrk_t *w)
{
    uv_loop_t *loop = &w->loop;
    if (w->cfg->deflate != DEFLATE_OFF && (pmd_deflater_init(&w->deflater, 15, true) != PMD_OK ||
                                           pmd_inflater_init(&w->inflater, true) != PMD_OK)) {
        LOG(LOG_ERROR, w->id, 0, "startup_failed", "error=\"zlib: out of memory\"");
        return -1;
    }
    uv_async_init(loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_async_init(loop, &w->ctl, on_ctl);
    w->ctl.data = w;
    uv_timer_init(loop, &w->tick);
    w->tick.data = w;
    uv_timer_init(loop, &w->rescue);
    w->rescue.data = w;
    uv_timer_init(loop, &w->drain);
    w->drain.data = w;
    uv_check_init(loop, &w->flush);
    w->flush.data = w;
    uv_check_start(&w->flush, on_check);
    uv_idle_init(loop, &w->more);
    w->more.data = w;
    uv_timer_init(loop, &w->pace);
    uv_poll_init(loop, &w->io, w->epfd);
    w->io.data = w;
    uv_poll_start(&w->io, UV_READABLE, on_io);
    uint64_t t = tick_ms(w->cfg);
    uv_timer_start(&w->tick, on_tick, t, t);
    uv_timer_init(loop, &w->accept_retry);
    w->accept_retry.data = w;
    int rc = 0;
    for (int i = 0; i < 2 && rc == 0; i++) {
        lsn_t *l = &w->lsn[i];
        if (l->fd < 0)
            continue;
        rc = uv_poll_init(loop, &l->poll, l->fd);
        if (rc == 0) {
            l->poll.data = l;
            rc = uv_poll_start(&l->poll, UV_READABLE, on_listen_ready);
            l->on = rc == 0;
        }
    }
    if (rc != 0) {
        LOG(LOG_ERROR, w->id, 0, "listen_failed", "error=%s", uv_strerror(rc));
        return -1;
    }
    rc = uv_thread_create(&w->thread, run, w);
    if (rc != 0) {
        LOG(LOG_ERROR, w->id, 0, "thread_failed", "error=%s", uv_strerror(rc));
        return -1;
    }
    return 0;
}

void wrk_join(wrk_t *w)
{
    uv_thread_join(&w->thread);
}

void wrk_free(wrk_t *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < 2; i++)
        if (w->lsn[i].fd >= 0)
            close(w->lsn[i].fd);
    uv_loop_close(&w->loop);
    ptable_destroy(&w->subs);
    smap_destroy(&w->byid);
    pthread_mutex_destroy(&w->inbox_mu);
    for (size_t i = 0; i < w->inbox_len; i++)
        frame_unref(w->inbox[i]);
    for (size_t i = w->batch_pos; i < w->batch_len; i++)
        frame_unref(w->batch[i]);
    free(w->inbox);
    free(w->batch);
    free(w->slow);
    ring_trim(&w->rings, true);
    pmd_deflater_end(&w->deflater);
    pmd_inflater_end(&w->inflater);
    free(w->inflated.buf);
    close(w->epfd);
    free(w);
}
