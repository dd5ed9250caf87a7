/*
 * conn.c - connection lifecycle, input parsing and output queueing (see
 * conn.h for the state machine).
 */
#include "conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <wsproto/utf8.h>
#include <wsproto/ws_handshake.h>

#include "auth.h"
#include "http.h"
#include "log.h"
#include "outq.h"
#include "pubsub.h"
#include "tls.h"

#define IOV_BATCH 256
#define READS     4 /* reads per readiness: fair to the other connections */

static void finish_if_flushed(conn_t *c);
static int write_now(conn_t *c);

/* ---- Worker-local lists and bookkeeping. ---- */

static void sup_move(conn_t *c, link_t *list)
{
    link_remove(&c->sup);
    c->since = wrk_now(c->w);
    link_insert_tail(list, &c->sup);
}

/* Turn fd away with a 503 and close it, without a conn_t: the answer fits
 * in an empty socket buffer, so one non-blocking send either goes out or
 * the peer is not worth waiting for. Shutting down the write side first and
 * reading what the peer already sent makes the close a FIN, not a RST that
 * could destroy the answer before the peer reads it. */
static void refuse(wrk_t *w, int fd, const char *why, bool tls)
{
    static const char head[] = "HTTP/1.1 503 Service Unavailable\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Connection: close\r\n"
                               "Content-Length: %zu\r\n\r\n%s\n";
    char buf[256];
    int n = snprintf(buf, sizeof(buf), head, strlen(why) + 1, why);
    if (n > 0 && (size_t)n < sizeof(buf) && !tls) { /* TLS: no way to say it */
        ssize_t sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent;
    }
    shutdown(fd, SHUT_WR);
    char sink[1024];
    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
    close(fd);
    STAT_ADD(&w->stats, conns_refused, 1);
    LOG_LIMITED(LOG_WARN, w->id, 0, "connection_refused", "reason=\"%s\" limit=%u", why,
                w->b->conn_limit);
}

void conn_accept(wrk_t *w, int fd, bool tls)
{
    broker_t *b = w->b;
    const char *why = NULL; /* refused with a 503; else closed silently */
    lim_ip_t *ip = NULL;
    conn_t *c = NULL;
    uint32_t open = atomic_fetch_add_explicit(&b->tcp_conns, 1, memory_order_relaxed);
    if (open >= b->conn_limit || w->phase > 0) {
        why = w->phase > 0 ? "server shutting down" : "connection limit reached";
        goto fail;
    }
    if (b->ips != NULL) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        bool full = false;
        if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
            ip = lim_ip_acquire(b->ips, (struct sockaddr *)&ss, &full);
        if (ip == NULL) {
            if (full)
                STAT_ADD(&w->stats, refused_per_ip, 1);
            why = full ? "too many connections from this address" : "out of memory";
            goto fail;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL || (ip != NULL && conn_x(c) == NULL)) {
        why = "out of memory";
        goto fail;
    }
    c->fd = fd;
    c->w = w;
    c->id = ++w->next_id;
    if (ip != NULL)
        c->x->ip = ip;
    if (tls && (c->tls = tls_new(b)) == NULL)
        goto fail;
    c->flags |= CF_EV_IN;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        goto fail;
    if (b->cluster != NULL)
        wrk_conn_index(w, c, true);
    w->nconns++;
    wrk_conn_added(w);
    STAT_ADD(&w->stats, tcp_open, 1);
    sup_move(c, &w->hs_list);
    if (log_min_level <= LOG_DEBUG) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char peer[64] = "?";
        int port = 0;
        if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET6) {
                uv_ip6_name((struct sockaddr_in6 *)&ss, peer, sizeof(peer));
                port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            } else {
                uv_ip4_name((struct sockaddr_in *)&ss, peer, sizeof(peer));
                port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            }
        }
        LOG(LOG_DEBUG, w->id, c->id, "accept", "peer=%s:%d", peer, port);
    }
    /* The listener defers accepting until the client has sent something
     * (TCP_DEFER_ACCEPT), so its request is usually here already: read it
     * now instead of on the next poll. */
    conn_readable(c);
    return;

fail:
    atomic_fetch_sub_explicit(&b->tcp_conns, 1, memory_order_relaxed);
    if (ip != NULL)
        lim_ip_release(b->ips, ip);
    if (c != NULL) {
        tls_free(c->tls);
        free(c->x);
        free(c);
    }
    if (why != NULL)
        refuse(w, fd, why, tls);
    else
        close(fd);
}

/* Nothing left to write: no frame in the ring, no ciphertext waiting. */
static bool out_empty(const conn_t *c)
{
    return c->out.len == 0 && (c->tls == NULL || tls_pending(c->tls).len == 0);
}

/* Output to flush (worker.c, on_check): messages put c on the worker's
 * pending list, which a loop turn flushes in a bounded slice; replies,
 * Close and HTTP on its replies list (moving it there from pending),
 * which every turn flushes whole, so a publisher's acks never wait behind
 * a fan-out. */
static void mark_pending(conn_t *c)
{
    if (!link_linked(&c->pending))
        link_insert_tail(&c->w->pending, &c->pending);
}

static void mark_reply(conn_t *c)
{
    link_remove(&c->pending);
    link_insert_tail(&c->w->replies, &c->pending);
}

/* What the worker's epoll set watches for c: reading unless paused,
 * writing while output waits for room in the socket. */
static int set_watch(conn_t *c)
{
    uint16_t want = (c->flags & CF_PAUSED ? 0 : CF_EV_IN) | (c->flags & CF_WRITING ? CF_EV_OUT : 0);
    if (want == (c->flags & (CF_EV_IN | CF_EV_OUT)) || c->state == CONN_CLOSED)
        return 0;
    struct epoll_event e = {
        .events = (want & CF_EV_IN ? EPOLLIN : 0) | (want & CF_EV_OUT ? EPOLLOUT : 0),
        .data.ptr = c,
    };
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
        return -1;
    c->flags = (uint16_t)((c->flags & ~(CF_EV_IN | CF_EV_OUT)) | want);
    return 0;
}

/* set_watch, dropping c if the kernel refuses (out of memory). */
static void watch(conn_t *c)
{
    if (set_watch(c) != 0)
        conn_abort(c);
}

void conn_pause(conn_t *c)
{
    if (!(c->flags & CF_PAUSED) && c->state != CONN_CLOSED) {
        c->flags |= CF_PAUSED;
        watch(c);
    }
}

void conn_resume(conn_t *c)
{
    if ((c->flags & CF_PAUSED) && c->state != CONN_CLOSED) {
        c->flags &= ~CF_PAUSED;
        watch(c);
    }
}

void conn_send(conn_t *c, frame_t *f)
{
    if (f == NULL) {
        conn_abort(c);
        return;
    }
    /* After our Close nothing else may follow it. */
    if (c->state == CONN_CLOSED || ((c->flags & CF_CLOSE_SENT) && f->opcode != WS_OP_CLOSE)) {
        frame_unref(f);
        return;
    }
    uint64_t queued = c->out.bytes;
    if (outq_push(&c->out, &c->w->rings, f) != 0) {
        frame_unref(f);
        conn_abort(c);
        return;
    }
    mark_reply(c);
    uint64_t limit = c->w->cfg->max_backlog;
    /* One reply, however big (--max-message may exceed --max-backlog),
     * does not make a peer that had read everything a slow consumer. */
    if (queued > limit && c->out.bytes > 2 * limit && c->state == CONN_OPEN) {
        conn_close_slow(c);
    } else if (c->out.bytes > limit && c->state == CONN_OPEN) {
        /* Replies pile up: stop reading requests until the peer reads. */
        conn_pause(c);
    }
}

/* Remember c for closing after the delivery batch: closing now would
 * unsubscribe c while the batch walks the subscription lists. dead: its
 * socket failed (abort); otherwise it is a slow consumer (Close 1008). */
static void mark_slow(conn_t *c, bool dead)
{
    wrk_t *w = c->w;
    if (w->nslow == w->slow_cap) {
        size_t ncap = w->slow_cap ? w->slow_cap * 2 : 16;
        conn_t **ns = realloc(w->slow, ncap * sizeof(*ns));
        if (ns == NULL) {
            /* Cannot remember it: shed its messages instead. */
            c->flags |= CF_DROPPING;
            return;
        }
        w->slow = ns;
        w->slow_cap = ncap;
    }
    w->slow[w->nslow++] = c;
    c->flags |= CF_SLOW | (dead ? CF_DEAD : 0);
}

/* Whether c compresses a message of this payload length. */
static bool wants_deflate(const conn_t *c, const frame_t *f)
{
    if (!(c->flags & CF_PMD))
        return false;
    uint8_t l7 = f->data[1] & 0x7f;
    size_t hdr = l7 < 126 ? 2 : l7 == 126 ? 4 : 10;
    return f->len - hdr >= c->w->cfg->deflate_min;
}

/* A connection that passes conn_takes_as_is goes straight to the push
 * below; keep the two in step. */
conn_dlv_t conn_deliver(conn_t *c, frame_t *f)
{
    if (c->state != CONN_OPEN || (c->flags & CF_SLOW))
        return DLV_NONE;
    wrk_t *w = c->w;
    const cfg_t *cfg = w->cfg;
    if (c->flags & CF_DROPPING) {
        if (c->out.bytes >= cfg->max_backlog / 2) {
            STAT_ADD(&w->stats, slow_drops, 1);
            return DLV_NONE;
        }
        c->flags &= ~CF_DROPPING;
    }
    /* What goes on the wire: f, its shared compressed twin, or (with a
     * context of its own) a compression made for c once it is sure to be
     * queued (a compressed message c never gets would corrupt the
     * context); judged on f's length then, which is the larger. */
    frame_t *g = f;
    conn_dlv_t how = DLV_SAME;
    if (wants_deflate(c, f)) {
        if (conn_deflater(c) != NULL) {
            how = DLV_OWN;
        } else if ((g = frame_twin(f, &w->deflater)) != NULL) {
            how = DLV_TWIN;
        } else {
            g = f; /* no memory to compress: send it as it is */
        }
    }
    /* The backlog is what the kernel will not take: before judging, hand
     * it what is queued (a burst read in one go is queued before the
     * loop's flush, and would otherwise count against a reader keeping up). */
    if (c->out.bytes + g->len > cfg->max_backlog && !(c->flags & CF_WRITING) && write_now(c) < 0) {
        mark_slow(c, true);
        return DLV_NONE;
    }
    /* Nothing queued: not behind, whatever the size of the message. */
    if (c->out.bytes > 0 && c->out.bytes + g->len > cfg->max_backlog) {
        if (cfg->slow_consumer == SLOW_DROP) {
            c->flags |= CF_DROPPING;
            STAT_ADD(&w->stats, slow_drops, 1);
            LOG(LOG_DEBUG, w->id, c->id, "slow_consumer_drop", "backlog=%llu",
                (unsigned long long)c->out.bytes);
        } else {
            mark_slow(c, false);
        }
        return DLV_NONE;
    }
    if (how == DLV_OWN && (g = frame_deflate(f, c->x->deflater)) == NULL) {
        mark_slow(c, false);
        return DLV_NONE;
    }
    if (outq_push(&c->out, &c->w->rings, g) != 0) {
        if (how == DLV_OWN) {
            /* The context already holds it: c cannot continue. */
            frame_unref(g);
        }
        mark_slow(c, false);
        return DLV_NONE;
    }
    mark_pending(c);
    return how;
}

bool conn_takes_as_is(const conn_t *c, size_t len)
{
    return c->state == CONN_OPEN && !(c->flags & (CF_SLOW | CF_DROPPING | CF_PMD)) &&
           c->out.bytes + len <= c->w->cfg->max_backlog;
}

bool conn_queue_run(conn_t *c, frame_t *run)
{
    if (outq_push(&c->out, &c->w->rings, run) != 0)
        return false;
    mark_pending(c);
    return true;
}

void conn_settle(wrk_t *w)
{
    /* Closing may not add to the list (it only delivers control frames). */
    for (size_t i = 0; i < w->nslow; i++) {
        conn_t *c = w->slow[i];
        bool dead = c->flags & CF_DEAD;
        c->flags &= ~(CF_SLOW | CF_DEAD);
        if (dead)
            conn_abort(c);
        else
            conn_close_slow(c);
    }
    w->nslow = 0;
}

void conn_close_slow(conn_t *c)
{
    if (c->state != CONN_OPEN)
        return;
    STAT_ADD(&c->w->stats, slow_closes, 1);
    LOG(LOG_INFO, c->w->id, c->id, "slow_consumer_close", "backlog=%llu",
        (unsigned long long)c->out.bytes);
    /* Queued messages would only delay the Close behind the backlog the
     * peer is not reading: skip them. */
    outq_drop_unsent(&c->out);
    conn_close(c, WS_CLOSE_POLICY, "slow consumer", false);
}

/* ---- Writing. ---- */

/* Account for n bytes written from the head of the queue. */
static void consume(conn_t *c, size_t n)
{
    STAT_ADD(&c->w->stats, bytes_out, n);
    outq_advance(&c->out, &c->w->rings, n);
}

size_t conn_take_plain(conn_t *c, uint8_t *buf, size_t cap)
{
    size_t n = outq_copy(&c->out, buf, cap);
    outq_advance(&c->out, &c->w->rings, n);
    return n;
}

static void after_output(conn_t *c)
{
    if ((c->flags & (CF_PAUSED | CF_THROTTLED)) == CF_PAUSED &&
        c->out.bytes <= c->w->cfg->max_backlog / 2 && c->w->phase != 1)
        conn_resume(c);
    if (c->x != NULL && c->x->file != NULL)
        http_file_resume(c);
    finish_if_flushed(c);
}

/* What goes to the socket next: the ring's frames on a plain connection;
 * on a TLS one, the ciphertext of the frames the TLS layer took from the
 * ring (tls_encrypt refills it, many frames to a record). */
static size_t out_iov(conn_t *c, struct iovec *iov, uint32_t *n)
{
    if (c->tls == NULL)
        return outq_iov(&c->out, iov, IOV_BATCH, c->w->gather, sizeof(c->w->gather), n);
    if (tls_encrypt(c) != 0) {
        *n = 0;
        return 0;
    }
    uv_buf_t b = tls_pending(c->tls);
    iov[0] = (struct iovec){b.base, b.len};
    *n = b.len > 0;
    return b.len;
}

static void out_written(conn_t *c, size_t n)
{
    if (c->tls == NULL) {
        consume(c, n);
        return;
    }
    STAT_ADD(&c->w->stats, bytes_out, n);
    c->out.bytes -= n;
    tls_written(c->tls, n);
}

/* The kernel takes no more: EPOLLOUT resumes writing (conn_writable). */
static int wait_writable(conn_t *c)
{
    c->flags |= CF_WRITING;
    return set_watch(c);
}

/* Write as much as the kernel takes now. Returns 0, or -1 when the socket
 * failed (the caller decides how to close). Sets CF_WRITING, and watches
 * for EPOLLOUT, when the kernel would take no more. */
static int write_now(conn_t *c)
{
    struct iovec iov[IOV_BATCH];
    /* A few rounds keep a fast reader's socket full; the rest waits for
     * EPOLLOUT (conn_writable). */
    for (int round = 0; round < 4 && !out_empty(c); round++) {
        uint32_t n;
        size_t total = out_iov(c, iov, &n);
        if (c->state == CONN_CLOSED)
            return 0; /* the TLS layer failed and dropped c */
        if (n == 0)
            return 0;
        /* sendmsg, not writev: the socket call skips the VFS write path
         * (file position, write hooks) of a call made per subscriber per
         * loop turn. */
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t rc = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return wait_writable(c);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return -1;
        out_written(c, (size_t)rc);
        if ((size_t)rc < total)
            return wait_writable(c);
    }
    return 0;
}

void conn_flush(conn_t *c)
{
    if (c->state == CONN_CLOSED || (c->flags & CF_WRITING))
        return;
    if (write_now(c) < 0) {
        LOG(LOG_DEBUG, c->w->id, c->id, "write_failed", "error=\"%s\"", strerror(errno));
        conn_abort(c);
        return;
    }
    if (c->state == CONN_CLOSED)
        return;
    if (!(c->flags & CF_WRITING) && !out_empty(c)) {
        /* more than a few rounds: the others first */
        if (wait_writable(c) != 0) {
            conn_abort(c);
            return;
        }
    }
    if (c->flags & CF_WRITING)
        return;
    after_output(c);
}

void conn_writable(conn_t *c)
{
    c->flags &= ~CF_WRITING;
    conn_flush(c);
    /* All written: stop watching for room (one epoll_ctl, not one per
     * round while the peer reads slowly). */
    if (c->state != CONN_CLOSED && !(c->flags & CF_WRITING))
        watch(c);
}

/* Once everything is written and the connection is finishing, send FIN
 * (after TLS's close_notify). */
static void finish_if_flushed(conn_t *c)
{
    if (!(c->flags & CF_FINISH) || (c->flags & (CF_SHUT | CF_WRITING)) || !out_empty(c) ||
        c->state == CONN_CLOSED)
        return;
    if (c->tls != NULL && tls_close_notify(c)) {
        mark_reply(c); /* written by the next flush, which calls us again */
        return;
    }
    /* Then read (and discard) until the peer's EOF, so our last frames are
     * not destroyed by an RST; the closing list bounds the wait. */
    c->flags |= CF_SHUT | CF_DISCARD;
    if (shutdown(c->fd, SHUT_WR) != 0) {
        conn_abort(c);
        return;
    }
    conn_resume(c);
}

/* ---- What hangs off a connection at times. ---- */

conn_x_t *conn_x(conn_t *c)
{
    if (c->x == NULL)
        c->x = calloc(1, sizeof(*c->x));
    return c->x;
}

static void msg_free(conn_t *c)
{
    if (c->msg == NULL)
        return;
    link_remove(&c->msg->partial);
    free(c->msg->data);
    free(c->msg);
    c->msg = NULL;
}

static void held_free(conn_t *c)
{
    if (c->held == NULL)
        return;
    link_remove(&c->held->link);
    free(c->held->stash);
    free(c->held);
    c->held = NULL;
}

/* ---- Closing. ---- */

void conn_abort(conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return;
    wrk_t *w = c->w;
    if (c->endpoint == EP_PUBSUB)
        pubsub_close(c);
    c->state = CONN_CLOSED;
    link_remove(&c->sup);
    link_remove(&c->wait);
    link_remove(&c->pending);
    msg_free(c);
    held_free(c);
    if (c->flags & CF_WS)
        STAT_SUB(&w->stats, conns_open, 1);
    http_file_detach(c);
    http_head_free(c);
    LOG(LOG_DEBUG, w->id, c->id, "close", NULL);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    /* Freed after this loop iteration: events of the same epoll batch may
     * still name it (they see CONN_CLOSED). */
    link_insert_tail(&w->dead, &c->sup);
}

/* Free a connection closed during this loop iteration. */
static void conn_free(conn_t *c)
{
    wrk_t *w = c->w;
    outq_clear(&c->out, &w->rings);
    link_remove(&c->sup);
    if (w->b->cluster != NULL)
        wrk_conn_index(w, c, false);
    w->nconns--;
    STAT_SUB(&w->stats, tcp_open, 1);
    atomic_fetch_sub_explicit(&w->b->tcp_conns, 1, memory_order_relaxed);
    if (c->x != NULL && c->x->ip != NULL)
        lim_ip_release(w->b->ips, c->x->ip);
    free(c->wp.ctl);
    tls_free(c->tls); /* after the cancelled writes: they point into it */
    if (conn_deflater(c) != NULL) {
        pmd_deflater_end(c->x->deflater);
        free(c->x->deflater);
    }
    free(c->x);
    free(c);
}

void conn_free_closed(wrk_t *w)
{
    link_t *l;
    while ((l = link_first(&w->dead)) != NULL)
        conn_free(link_entry(l, conn_t, sup));
    if (w->phase == 2 && w->nconns == 0)
        uv_stop(&w->loop);
}

void conn_close(conn_t *c, uint16_t code, const char *reason, bool wait_peer)
{
    if (c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_HTTP) {
        conn_abort(c);
        return;
    }
    if (c->state == CONN_OPEN) {
        c->state = CONN_CLOSING;
        if (c->endpoint == EP_PUBSUB)
            pubsub_close(c);
        link_remove(&c->wait);
        sup_move(c, &c->w->closing_list);
        msg_free(c);
    }
    if (!(c->flags & CF_CLOSE_SENT)) {
        conn_send(c, frame_close(code, reason));
        c->flags |= CF_CLOSE_SENT;
        stats_close_sent(&c->w->stats, code);
        LOG(code == WS_CLOSE_NORMAL || code == WS_CLOSE_GOING_AWAY ? LOG_DEBUG : LOG_INFO, c->w->id,
            c->id, "ws_close_sent", "code=%u reason=\"%s\"", code, reason ? reason : "");
    }
    if (!wait_peer || (c->flags & CF_CLOSE_RCVD))
        c->flags |= CF_FINISH;
    mark_reply(c);
    /* Read on, for the peer's Close: what was held back comes first. */
    if (c->flags & CF_THROTTLED)
        conn_unthrottle(c);
    else if (c->flags & CF_PAUSED)
        conn_resume(c);
}

void conn_throttle(conn_t *c, uint64_t targets)
{
    wrk_t *w = c->w;
    if (c->flags & CF_THROTTLED)
        return;
    conn_held_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return; /* out of memory: the inbox bound is exceeded instead */
    h->c = c;
    c->held = h;
    c->flags |= CF_THROTTLED;
    w->throttle_mask |= targets;
    link_insert_tail(&w->throttled, &h->link);
    atomic_store(&w->has_throttled, true);
    /* Pairs with drain_inbox: it clears its bit, then looks at
     * has_throttled; so either it wakes this worker or this sees the bit
     * already clear. */
    if ((atomic_load(&w->b->congested) & targets) == 0) {
        c->flags &= ~CF_THROTTLED;
        held_free(c);
        return;
    }
    STAT_ADD(&w->stats, publish_throttles, 1);
    conn_pause(c);
}

void conn_unthrottle(conn_t *c)
{
    if (!(c->flags & CF_THROTTLED))
        return;
    c->flags &= ~CF_THROTTLED;
    uint8_t *held = c->held->stash;
    uint32_t n = c->held->stash_len;
    c->held->stash = NULL;
    held_free(c);
    if (held != NULL) {
        conn_ws_input(c, held, n);
        free(held);
    }
    if ((c->flags & (CF_PAUSED | CF_THROTTLED)) == CF_PAUSED && c->w->phase != 1 &&
        (c->state != CONN_OPEN || c->out.bytes <= c->w->cfg->max_backlog / 2))
        conn_resume(c);
}

void conn_ping(conn_t *c)
{
    conn_send(c, frame_make(WS_OP_PING, NULL, 0));
}

/* ---- HTTP phase (the requests themselves are http.c's). ---- */

void conn_http_pending(conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSING;
    c->flags |= CF_DISCARD;
    sup_move(c, &c->w->closing_list);
    http_head_free(c);
}

void conn_http_done(conn_t *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->flags |= CF_FINISH;
    mark_reply(c);
}

void conn_http_finish(conn_t *c, frame_t *response)
{
    conn_send(c, response);
    if (c->state == CONN_CLOSED)
        return; /* no memory for the response: conn_send dropped c */
    conn_http_pending(c);
    conn_http_done(c);
}

void conn_http_error(conn_t *c, int status, const char *message)
{
    LOG(LOG_DEBUG, c->w->id, c->id, "http_error", "status=%d reason=\"%s\"", status, message);
    conn_http_finish(c, http_error(status, message));
}

void conn_open_ws(conn_t *c, conn_endpoint_t ep, frame_t *response, struct auth *auth,
                  const pmd_params_t *pmd)
{
    wrk_t *w = c->w;
    if (auth != NULL || pmd != NULL) {
        if (conn_x(c) == NULL) {
            if (response != NULL)
                frame_unref(response);
            auth_free(auth);
            conn_abort(c);
            return;
        }
        c->x->auth = auth; /* freed with the session (pubsub_close) or here */
    }
    if (pmd != NULL) {
        /* A context of its own when the broker keeps context between
         * messages, or when the client limits the window (the shared twin
         * uses the full window). */
        if (!pmd->server_no_context_takeover || pmd->server_max_window_bits < 15) {
            pmd_deflater_t *d = malloc(sizeof(*d));
            if (d != NULL && pmd_deflater_init(d, pmd->server_max_window_bits,
                                               pmd->server_no_context_takeover) != PMD_OK) {
                pmd_deflater_end(d);
                free(d);
                d = NULL;
            }
            if (d == NULL) {
                if (response != NULL)
                    frame_unref(response);
                auth_free(c->x->auth);
                c->x->auth = NULL;
                conn_abort(c);
                return;
            }
            c->x->deflater = d;
        }
        c->flags |= CF_PMD;
    }
    conn_send(c, response);
    if (c->state == CONN_CLOSED) {
        if (c->x != NULL) {
            auth_free(c->x->auth);
            c->x->auth = NULL;
        }
        return;
    }
    c->state = CONN_OPEN;
    c->endpoint = (uint8_t)ep;
    c->flags |= CF_WS;
    STAT_ADD(&w->stats, conns_open, 1);
    STAT_ADD(&w->stats, conns_total, 1);
    ws_decoder_init(&c->wp, WS_ROLE_SERVER, w->cfg->max_message,
                    c->flags & CF_PMD ? WS_PARSER_ALLOW_RSV1 : 0);
    sup_move(c, &w->ping_list);
    if (ep == EP_PUBSUB)
        pubsub_open(c);
}

/* ---- WebSocket phase. ---- */

static void on_message(conn_t *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    if (c->endpoint == EP_ECHO) {
        frame_t *f = frame_make(opcode, data, len);
        if (f != NULL && wants_deflate(c, f)) {
            frame_t *g = frame_deflate(f, conn_deflater(c) ? c->x->deflater : &c->w->deflater);
            frame_unref(f);
            f = g;
        }
        conn_send(c, f);
        return;
    }
    pubsub_message(c, data, len);
}

/* A complete message whose first frame had RSV1: inflate it (bounded by
 * --max-message) and check text for UTF-8, then handle it. */
static void on_compressed(conn_t *c, uint8_t opcode, const uint8_t *data, size_t len)
{
    wrk_t *w = c->w;
    w->inflated.len = 0;
    int r = pmd_inflate(&w->inflater, data, len, w->cfg->max_message, &w->inflated);
    if (r == PMD_E_TOO_BIG) {
        conn_close(c, WS_CLOSE_TOO_BIG, "message too big", false);
        return;
    }
    if (r != PMD_OK) {
        conn_close(c, r == PMD_E_NOMEM ? WS_CLOSE_INTERNAL : WS_CLOSE_INVALID_DATA,
                   r == PMD_E_NOMEM ? "out of memory" : "invalid compressed data", false);
        return;
    }
    if (opcode == WS_OP_TEXT && !utf8_valid(w->inflated.buf, w->inflated.len)) {
        conn_close(c, WS_CLOSE_INVALID_DATA, "invalid UTF-8 in text message", false);
        return;
    }
    on_message(c, opcode, w->inflated.buf, w->inflated.len);
    if (w->inflated.cap > 256 * 1024) {
        /* One big message should not pin its buffer on the worker. */
        free(w->inflated.buf);
        w->inflated = (pmd_buf_t){0};
    }
}

/* Make room for need bytes of the message being reassembled. rest is what
 * the current frame's header still announces: a message that fits in
 * SIZE_FROM_HEADER bytes gets its whole buffer at once; a bigger one grows
 * by doubling, never past what its frames announced, so a peer cannot make
 * the broker reserve --max-message by sending a header alone. */
#define SIZE_FROM_HEADER (64 * 1024)

static int msg_reserve(conn_msg_t *m, size_t need, uint64_t rest)
{
    if (need <= m->cap)
        return 0;
    size_t announced = need + (size_t)rest;
    size_t ncap;
    if (announced <= SIZE_FROM_HEADER) {
        ncap = announced;
    } else {
        ncap = m->cap ? m->cap * 2 : 4096;
        while (ncap < need)
            ncap *= 2;
        if (ncap > announced)
            ncap = announced;
    }
    uint8_t *nm = realloc(m->data, ncap);
    if (nm == NULL)
        return -1;
    m->data = nm;
    m->cap = ncap;
    return 0;
}

/* A message has started and not finished: the supervisor closes c if it
 * does not complete within --message-timeout. NULL: out of memory. */
static conn_msg_t *msg_begin(conn_t *c)
{
    if (c->msg == NULL) {
        if ((c->msg = calloc(1, sizeof(*c->msg))) == NULL)
            return NULL;
        c->msg->c = c;
        c->msg->since = wrk_now(c->w);
        link_insert_tail(&c->w->msg_list, &c->msg->partial);
    }
    c->msg->len = 0;
    return c->msg;
}

static void on_data(conn_t *c, const ws_event_t *ev)
{
    if (c->state != CONN_OPEN)
        return; /* after our Close, data is read and ignored */
    if (ev->first && ev->opcode == WS_OP_BINARY && c->endpoint == EP_PUBSUB) {
        conn_close(c, WS_CLOSE_UNSUPPORTED, "binary messages are not supported", true);
        return;
    }
    if (ev->first && ev->fin) {
        (ev->rsv1 ? on_compressed : on_message)(c, ev->opcode, ev->data, ev->len);
        return;
    }
    conn_msg_t *m = ev->first ? msg_begin(c) : c->msg;
    /* The parser already bounded the message by --max-message. */
    if (m == NULL || msg_reserve(m, m->len + ev->len, ev->fin ? 0 : c->wp.remaining) != 0) {
        conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
        return;
    }
    if (ev->len > 0)
        memcpy(m->data + m->len, ev->data, ev->len);
    m->len += ev->len;
    if (ev->fin) {
        c->msg = NULL; /* (closing from inside must not free it) */
        link_remove(&m->partial);
        (ev->rsv1 ? on_compressed : on_message)(c, ev->opcode, m->data, m->len);
        free(m->data);
        free(m);
    }
}

static void on_close_frame(conn_t *c, const ws_event_t *ev)
{
    stats_close_received(&c->w->stats, ev->close_code);
    LOG(LOG_DEBUG, c->w->id, c->id, "ws_close_received", "code=%u", ev->close_code);
    c->flags |= CF_CLOSE_RCVD;
    /* Publishes acknowledged before the peer's Close are delivered before
     * the reply (they may be waiting in the inbox). */
    if (c->state == CONN_OPEN && c->endpoint == EP_PUBSUB)
        wrk_drain_inbox(c->w);
    if (c->state == CONN_CLOSED)
        return; /* dropped by that delivery */
    if (c->state == CONN_OPEN) {
        uint16_t code = ev->close_code ? ev->close_code : WS_CLOSE_NORMAL;
        conn_close(c, code, NULL, false);
    } else {
        c->flags |= CF_FINISH | CF_DISCARD;
        mark_reply(c);
    }
}

void conn_ws_input(conn_t *c, uint8_t *buf, size_t len)
{
    if (c->flags & CF_THROTTLED) {
        /* More early input behind held-back input: it waits too. */
        conn_held_t *h = c->held;
        uint8_t *ns = realloc(h->stash, (size_t)h->stash_len + len);
        if (ns == NULL) {
            conn_abort(c);
            return;
        }
        memcpy(ns + h->stash_len, buf, len);
        h->stash = ns;
        h->stash_len += (uint32_t)len;
        return;
    }
    size_t off = 0;
    while (off < len) {
        ws_event_t ev;
        ssize_t n = ws_decoder_feed(&c->wp, buf + off, len - off, &ev);
        if (n < 0) {
            c->flags |= CF_DISCARD;
            if (c->state == CONN_OPEN) {
                uint16_t code = ws_close_code((int)n);
                conn_close(c, code, ws_strerror((int)n), false);
            } else {
                conn_abort(c);
            }
            return;
        }
        off += (size_t)n;
        switch (ev.type) {
        case WS_EV_DATA:
            on_data(c, &ev);
            break;
        case WS_EV_PING:
            if (c->state == CONN_OPEN)
                conn_send(c, frame_make(WS_OP_PONG, ev.data, ev.len));
            break;
        case WS_EV_CLOSE:
            on_close_frame(c, &ev);
            break;
        case WS_EV_PONG:
        case WS_EV_NONE:
            break;
        }
        if (c->wp.ctl != NULL && ev.type != WS_EV_NONE && ev.type != WS_EV_DATA) {
            free(c->wp.ctl); /* that control frame is handled */
            c->wp.ctl = NULL;
        } else if (ws_decoder_needs_ctl(&c->wp) && off < len) {
            /* A control frame split across reads: the only time c holds a
             * buffer for one. */
            if ((c->wp.ctl = malloc(WS_MAX_CONTROL)) == NULL) {
                conn_abort(c);
                return;
            }
        }
        if (c->state == CONN_CLOSED || (c->flags & CF_DISCARD))
            return;
        if ((c->flags & CF_THROTTLED) && off < len) {
            /* Keep the unparsed rest (still masked) for conn_unthrottle. */
            conn_held_t *h = c->held;
            h->stash = malloc(len - off);
            if (h->stash == NULL) {
                conn_close(c, WS_CLOSE_INTERNAL, "out of memory", false);
                return;
            }
            memcpy(h->stash, buf + off, len - off);
            h->stash_len = (uint32_t)(len - off);
            return;
        }
    }
}

void conn_readable(conn_t *c)
{
    for (int i = 0; i < READS && c->state != CONN_CLOSED && !(c->flags & CF_PAUSED); i++) {
        ssize_t n = recv(c->fd, c->w->rbuf, sizeof(c->w->rbuf), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            LOG(LOG_DEBUG, c->w->id, c->id, "peer_closed", "error=\"%s\"",
                n == 0 ? "end of file" : strerror(errno));
            if (c->tls != NULL)
                tls_peer_closed(c);
            conn_abort(c);
            return;
        }
        STAT_ADD(&c->w->stats, bytes_in, (uint64_t)n);
        if (c->flags & CF_DISCARD)
            continue;
        /* Anything from the peer answers an outstanding Ping. */
        link_remove(&c->wait);
        if (c->tls != NULL)
            tls_input(c, c->w->rbuf, (size_t)n);
        else
            conn_input(c, c->w->rbuf, (size_t)n);
        if ((size_t)n < sizeof(c->w->rbuf))
            return; /* the socket is empty */
    }
}

void conn_input(conn_t *c, uint8_t *buf, size_t len)
{
    if (c->state == CONN_HTTP)
        http_input(c, buf, len);
    else
        conn_ws_input(c, buf, len);
}
