/*
 * net.c - the client side of every soak connection: one epoll loop,
 * non-blocking sockets, an output buffer per connection, a timer heap, and
 * the HTTP and WebSocket parsing of what the broker sends (libwsproto).
 *
 * Connections are never freed inside a callback: conn_free closes the
 * socket and marks the connection done, and the memory goes at the end of
 * the loop iteration, so every caller can test c->state == CS_DONE after
 * calling out.
 */
#define _GNU_SOURCE
#include "soak.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF_SIZE     (256 * 1024)
#define HEAD_MAX      (16 * 1024)
#define BODY_MAX      (1024 * 1024)
#define OUT_MAX       (16 * 1024 * 1024)
#define FRAME_PAYLOAD (70 * 1024)

uint32_t live_by_role[R_COUNT];
uint32_t live_total;
uint32_t live_connecting;

static int ep = -1;
static conn_t **slots;
static uint32_t nslots, slots_cap;
static uint32_t *free_slots;
static uint32_t nfree, free_cap;
static conn_t **heap; /* 1-based min-heap on when */
static uint32_t heap_len, heap_cap;
static conn_t **graveyard; /* done, freed at the end of the iteration */
static uint32_t ngrave, grave_cap;
static uint8_t rbuf[RBUF_SIZE];
static uint8_t fbuf[WS_MAX_HEADER + FRAME_PAYLOAD];
static uint32_t src_rr;

static void *grow(void *p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    uint32_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(p, (size_t)ncap * elem);
    if (np == NULL) {
        fprintf(stderr, "soak: out of memory\n");
        exit(3);
    }
    *cap = ncap;
    return np;
}

int loop_init(void)
{
    ep = epoll_create1(EPOLL_CLOEXEC);
    return ep < 0 ? -1 : 0;
}

/* ---- timers ---- */

static void heap_swap(uint32_t a, uint32_t b)
{
    conn_t *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    heap[a]->heap_idx = a;
    heap[b]->heap_idx = b;
}

static void heap_up(uint32_t i)
{
    while (i > 1 && heap[i / 2]->when > heap[i]->when) {
        heap_swap(i, i / 2);
        i /= 2;
    }
}

static void heap_down(uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i, r = l + 1, m = i;
        if (l <= heap_len && heap[l]->when < heap[m]->when)
            m = l;
        if (r <= heap_len && heap[r]->when < heap[m]->when)
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

void timer_clear(conn_t *c)
{
    uint32_t i = c->heap_idx;
    if (i == 0)
        return;
    heap_swap(i, heap_len);
    heap_len--;
    c->heap_idx = 0;
    if (i <= heap_len) {
        heap_up(i);
        heap_down(i);
    }
}

void timer_set(conn_t *c, int64_t when)
{
    if (c->state == CS_DONE)
        return;
    timer_clear(c);
    heap = grow(heap, &heap_cap, heap_len + 2, sizeof(*heap));
    c->when = when;
    heap[++heap_len] = c;
    c->heap_idx = heap_len;
    heap_up(heap_len);
}

/* ---- requests FIFO ---- */

req_t *rq_push(conn_t *c, int type)
{
    if (c->rq_len == c->rq_cap) {
        uint32_t ncap = c->rq_cap ? c->rq_cap * 2 : 8;
        req_t *n = malloc(ncap * sizeof(*n));
        if (n == NULL) {
            fprintf(stderr, "soak: out of memory\n");
            exit(3);
        }
        for (uint32_t i = 0; i < c->rq_len; i++)
            n[i] = c->rq[(c->rq_head + i) % c->rq_cap];
        free(c->rq);
        c->rq = n;
        c->rq_cap = ncap;
        c->rq_head = 0;
    }
    req_t *r = &c->rq[(c->rq_head + c->rq_len) % c->rq_cap];
    c->rq_len++;
    memset(r, 0, sizeof(*r));
    r->id = ++c->next_id;
    r->type = (uint8_t)type;
    r->t = now_ms();
    return r;
}

req_t *rq_front(conn_t *c)
{
    return c->rq_len > 0 ? &c->rq[c->rq_head] : NULL;
}

void rq_pop(conn_t *c)
{
    if (c->rq_len == 0)
        return;
    free(c->rq[c->rq_head].snap);
    c->rq[c->rq_head].snap = NULL;
    c->rq_head = (c->rq_head + 1) % c->rq_cap;
    c->rq_len--;
}

/* ---- connections ---- */

static void update_events(conn_t *c)
{
    struct epoll_event ev = {0};
    if (c->state == CS_CONNECTING)
        ev.events = EPOLLOUT;
    else
        ev.events =
            ((c->flags & F_NOREAD) ? 0 : EPOLLIN) | ((c->flags & F_WANT_OUT) ? EPOLLOUT : 0);
    ev.data.u64 = ((uint64_t)c->gen << 32) | c->slot;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        violation("epoll_ctl: %s", strerror(errno));
}

conn_t *conn_new(int role, int kind, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        violation("%s: socket: %s", role_name(role), strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (cfg.srcaddrs > 0) {
        /* Several loopback source addresses: the 4-tuples of a long run
         * (live connections plus the broker's TIME_WAIT ones) do not fit in
         * one address's ephemeral port range. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000002u + (src_rr++ % (uint32_t)cfg.srcaddrs));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            violation("%s: bind to a loopback source address: %s", role_name(role),
                      strerror(errno));
            close(fd);
            return NULL;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)broker_port())};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        violation("%s: connect: %s", role_name(role), strerror(errno));
        close(fd);
        return NULL;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        fprintf(stderr, "soak: out of memory\n");
        exit(3);
    }
    if (nfree > 0) {
        c->slot = free_slots[--nfree];
    } else {
        slots = grow(slots, &slots_cap, nslots + 1, sizeof(*slots));
        c->slot = nslots++;
    }
    static uint32_t gens;
    c->gen = ++gens;
    slots[c->slot] = c;
    c->fd = fd;
    c->role = (uint8_t)role;
    c->kind = (uint8_t)kind;
    c->state = CS_CONNECTING;
    c->close_code = -1;
    c->group = -1;
    c->rng = rng_next(&grng) | 1;
    c->t_start = now_ms();
    struct epoll_event ev = {.events = EPOLLOUT};
    ev.data.u64 = ((uint64_t)c->gen << 32) | c->slot;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        violation("epoll_ctl add: %s", strerror(errno));
        close(fd);
        slots[c->slot] = NULL;
        free_slots = grow(free_slots, &free_cap, nfree + 1, sizeof(*free_slots));
        free_slots[nfree++] = c->slot;
        free(c);
        return NULL;
    }
    live_by_role[role]++;
    live_total++;
    live_connecting++;
    return c;
}

static void handshake_over(conn_t *c)
{
    if (c->state == CS_CONNECTING || c->state == CS_HTTP) {
        if (live_connecting > 0)
            live_connecting--;
    }
}

void conn_free(conn_t *c, bool reset)
{
    if (c->state == CS_DONE)
        return;
    role_gone(c);
    handshake_over(c);
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    timer_clear(c);
    c->state = CS_DONE;
    live_by_role[c->role]--;
    live_total--;
    st.closed++;
    graveyard = grow(graveyard, &grave_cap, ngrave + 1, sizeof(*graveyard));
    graveyard[ngrave++] = c;
}

static void bury(void)
{
    for (uint32_t i = 0; i < ngrave; i++) {
        conn_t *c = graveyard[i];
        slots[c->slot] = NULL;
        free_slots = grow(free_slots, &free_cap, nfree + 1, sizeof(*free_slots));
        free_slots[nfree++] = c->slot;
        while (c->rq_len > 0)
            rq_pop(c);
        free(c->rq);
        free(c->head);
        free(c->body);
        free(c->msg);
        free(c->out);
        free(c->subs);
        ledger_free(c);
        free(c);
    }
    ngrave = 0;
}

void conns_each(void (*fn)(conn_t *, void *), void *arg)
{
    for (uint32_t i = 0; i < nslots; i++)
        if (slots[i] != NULL && slots[i]->state != CS_DONE)
            fn(slots[i], arg);
}

void conn_set_reading(conn_t *c, bool on)
{
    if (c->state == CS_DONE)
        return;
    uint32_t old = c->flags;
    if (on)
        c->flags &= ~(uint32_t)F_NOREAD;
    else
        c->flags |= F_NOREAD;
    if (old != c->flags)
        update_events(c);
}

/* ---- output ---- */

static void flush(conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        /* Reset or closed by the broker: the read side reports it. */
        c->out_off = c->out_len;
        break;
    }
    bool want = c->out_off < c->out_len;
    if (!want)
        c->out_off = c->out_len = 0;
    if (want != !!(c->flags & F_WANT_OUT)) {
        if (want)
            c->flags |= F_WANT_OUT;
        else
            c->flags &= ~(uint32_t)F_WANT_OUT;
        if (c->state != CS_CONNECTING)
            update_events(c);
    }
}

void conn_send(conn_t *c, const void *buf, size_t len)
{
    if (c->state == CS_DONE || len == 0)
        return;
    if (c->out_len - c->out_off + len > OUT_MAX) {
        violation("%s: output to the broker over %d MiB (it stopped reading)", role_name(c->role),
                  OUT_MAX >> 20);
        conn_free(c, true);
        return;
    }
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_off > 0 && c->out_off > c->out_cap / 2) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    c->out = grow(c->out, &c->out_cap, c->out_len + (uint32_t)len, 1);
    memcpy(c->out + c->out_len, buf, len);
    c->out_len += (uint32_t)len;
    if (c->state != CS_CONNECTING && !(c->flags & F_WANT_OUT))
        flush(c);
}

void conn_frame(conn_t *c, uint8_t opcode, bool fin, const void *payload, size_t len)
{
    uint8_t mask[4];
    uint64_t r = rng_next(&c->rng);
    memcpy(mask, &r, 4);
    if (len > FRAME_PAYLOAD) {
        violation("frame of %zu bytes is larger than the soak client sends", len);
        return;
    }
    ssize_t n = ws_frame_encode(fbuf, sizeof(fbuf), opcode, fin, payload, len, mask);
    if (n < 0) {
        violation("ws_frame_encode: %s", ws_strerror((int)n));
        return;
    }
    conn_send(c, fbuf, (size_t)n);
}

void conn_text(conn_t *c, const char *s, size_t len)
{
    conn_frame(c, WS_OP_TEXT, true, s, len);
}

void conn_close(conn_t *c, uint16_t code, const char *reason)
{
    uint8_t p[WS_MAX_CONTROL];
    size_t n = ws_close_payload(p, code, reason, reason ? strlen(reason) : 0);
    conn_frame(c, WS_OP_CLOSE, true, p, n);
    c->flags |= F_CLOSE_SENT;
}

void conn_upgrade(conn_t *c, const char *path, const char *extra)
{
    uint8_t nonce[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(&c->rng);
        memcpy(nonce + i, &r, 8);
    }
    wsh_make_key(nonce, c->key);
    char host[32], req[1024];
    snprintf(host, sizeof(host), "127.0.0.1:%d", broker_port());
    int n = wsh_write_request(req, sizeof(req), host, path, c->key, extra);
    if (n < 0) {
        violation("wsh_write_request failed");
        return;
    }
    conn_send(c, req, (size_t)n);
}

/* ---- input ---- */

static void deliver(conn_t *c, uint8_t op, const uint8_t *data, size_t len)
{
    if (c->flags & F_CLOSE_RCVD) {
        violation("%s: data frame after the broker's Close", role_name(c->role));
        return;
    }
    if (op == WS_OP_TEXT)
        role_text(c, data, len);
    else
        role_binary(c, data, len);
}

static void ws_input(conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (off < len && c->state == CS_OPEN) {
        ws_event_t ev;
        ssize_t r = ws_parser_feed(&c->wp, buf + off, len - off, &ev);
        if (r < 0) {
            violation("%s: the broker sent an invalid frame: %s", role_name(c->role),
                      ws_strerror((int)r));
            conn_free(c, true);
            return;
        }
        off += (size_t)r;
        switch (ev.type) {
        case WS_EV_DATA:
            if (ev.first && ev.fin) {
                deliver(c, ev.opcode, ev.data, ev.len);
                break;
            }
            if (ev.first) {
                c->msg_len = 0;
                c->msg_op = ev.opcode;
            }
            c->msg = grow(c->msg, &c->msg_cap, c->msg_len + (uint32_t)ev.len + 1, 1);
            if (ev.len > 0)
                memcpy(c->msg + c->msg_len, ev.data, ev.len);
            c->msg_len += (uint32_t)ev.len;
            if (ev.fin) {
                deliver(c, c->msg_op, c->msg, c->msg_len);
                if (c->state != CS_DONE && c->msg_cap > 65536) {
                    free(c->msg);
                    c->msg = NULL;
                    c->msg_cap = 0;
                }
                c->msg_len = 0;
            }
            break;
        case WS_EV_PING:
            c->npings++;
            c->t_ping = now_ms();
            if (c->role != R_MUTE && !(c->flags & (F_CLOSE_SENT | F_CLOSE_RCVD)))
                conn_frame(c, WS_OP_PONG, true, ev.data, ev.len);
            break;
        case WS_EV_PONG:
            role_pong(c, ev.data, ev.len);
            break;
        case WS_EV_CLOSE: {
            if (c->flags & F_CLOSE_RCVD) {
                violation("%s: second Close frame from the broker", role_name(c->role));
                break;
            }
            c->flags |= F_CLOSE_RCVD;
            c->close_code = ev.close_code;
            if (ev.close_code < 5000)
                st.close_rcvd[ev.close_code]++;
            else
                st.close_other++;
            bool reply = role_close(c, ev.close_code, ev.data, ev.len);
            if (c->state == CS_DONE)
                return;
            if (reply && !(c->flags & F_CLOSE_SENT))
                conn_close(c, ev.close_code, NULL);
            c->flags |= F_EOF_OK;
            /* The broker closes TCP next; role_timer reports it if not. */
            timer_set(c, now_ms() + (int64_t)((cfg.close_timeout + 3) * 1000 * cfg.slack));
            break;
        }
        case WS_EV_NONE:
            break;
        }
    }
}

static void http_input(conn_t *c, const uint8_t *buf, size_t len)
{
    if (c->head_len + len > HEAD_MAX) {
        violation("%s: HTTP response head over %d bytes", role_name(c->role), HEAD_MAX);
        conn_free(c, true);
        return;
    }
    c->head = grow(c->head, &c->head_cap, c->head_len + (uint32_t)len + 1, 1);
    memcpy(c->head + c->head_len, buf, len);
    c->head_len += (uint32_t)len;
    static wsh_response_t res;
    int h = wsh_parse_response(c->head, c->head_len, &c->head_scan, &res);
    if (h == WS_AGAIN)
        return;
    if (h < 0) {
        violation("%s: unparsable HTTP response from the broker: %s", role_name(c->role),
                  ws_strerror(h));
        conn_free(c, true);
        return;
    }
    c->status = res.status;
    if (res.status >= 0 && res.status < 600)
        st.http_status[res.status]++;
    handshake_over(c);
    if (res.status == 101 && c->key[0] != '\0') {
        if (wsh_check_101(&res, c->key) != WS_OK) {
            violation("%s: 101 response does not complete the handshake", role_name(c->role));
            conn_free(c, true);
            return;
        }
        c->state = CS_OPEN;
        st.ws_opened++;
        ws_parser_init(&c->wp, WS_ROLE_CLIENT, 0, 0);
        uint32_t rest = c->head_len - (uint32_t)h;
        uint8_t *tail = NULL;
        if (rest > 0) {
            tail = malloc(rest);
            if (tail == NULL)
                exit(3);
            memcpy(tail, c->head + h, rest);
        }
        free(c->head);
        c->head = NULL;
        c->head_len = c->head_cap = 0;
        if (c->flags & F_NOHELLO) {
            c->t_open = now_ms();
            role_open(c);
        }
        if (rest > 0 && c->state == CS_OPEN)
            ws_input(c, tail, rest);
        free(tail);
        return;
    }
    role_http(c, res.status, &res);
    if (c->state != CS_HTTP)
        return;
    c->state = CS_BODY;
    uint32_t rest = c->head_len - (uint32_t)h;
    if (rest > 0) {
        c->body = grow(c->body, &c->body_cap, rest + 1, 1);
        memcpy(c->body, c->head + h, rest);
        c->body_len = rest;
    }
}

static void on_eof(conn_t *c, bool reset)
{
    if (reset)
        c->flags |= F_RESET;
    if (c->state == CS_BODY) {
        if (c->body != NULL)
            c->body[c->body_len] = '\0';
        role_body(c);
    } else {
        role_eof(c, reset);
    }
    conn_free(c, false);
}

static bool read_once(conn_t *c);

static void on_readable(conn_t *c)
{
    /* A slow consumer draining through its 4 KiB window gets a few
     * reads in a row, or megabytes of backlog would take minutes. */
    int rounds = c->role == R_SLOW ? 64 : 1;
    for (int i = 0; i < rounds && c->state != CS_DONE && !(c->flags & F_NOREAD); i++)
        if (!read_once(c))
            return;
}

/* One recv and its processing; false when there was nothing more to read. */
static bool read_once(conn_t *c)
{
    ssize_t n = recv(c->fd, rbuf, sizeof(rbuf), 0);
    if (n == 0) {
        on_eof(c, false);
        return false;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return false;
        on_eof(c, true);
        return false;
    }
    switch (c->state) {
    case CS_HTTP:
        http_input(c, rbuf, (size_t)n);
        break;
    case CS_BODY:
        if (c->body_len + (uint32_t)n > BODY_MAX) {
            violation("%s: HTTP body over %d bytes", role_name(c->role), BODY_MAX);
            conn_free(c, true);
            return false;
        }
        c->body = grow(c->body, &c->body_cap, c->body_len + (uint32_t)n + 1, 1);
        memcpy(c->body + c->body_len, rbuf, (size_t)n);
        c->body_len += (uint32_t)n;
        break;
    case CS_OPEN:
        ws_input(c, rbuf, (size_t)n);
        break;
    default:
        break;
    }
    return true;
}

static void on_event(conn_t *c, uint32_t events)
{
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) != 0)
            err = errno;
        if (err != 0) {
            violation("%s: connect to the broker failed: %s", role_name(c->role), strerror(err));
            conn_free(c, false);
            return;
        }
        c->state = CS_HTTP;
        st.tcp_opened++;
        update_events(c);
        if (c->out_len > c->out_off)
            flush(c);
        role_connected(c);
        return;
    }
    if ((events & EPOLLOUT) && (c->flags & F_WANT_OUT))
        flush(c);
    if (c->state == CS_DONE)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
}

void loop_once(int timeout_ms)
{
    struct epoll_event evs[4096];
    if (heap_len > 0) {
        int64_t d = heap[1]->when - now_ms();
        if (d < timeout_ms)
            timeout_ms = d < 0 ? 0 : (int)d;
    }
    int n = epoll_wait(ep, evs, 4096, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t slot = (uint32_t)evs[i].data.u64;
        uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
        if (slot >= nslots)
            continue;
        conn_t *c = slots[slot];
        if (c == NULL || c->gen != gen || c->state == CS_DONE)
            continue;
        on_event(c, evs[i].events);
    }
    int64_t now = now_ms();
    while (heap_len > 0 && heap[1]->when <= now) {
        conn_t *c = heap[1];
        timer_clear(c);
        if (c->state != CS_DONE)
            role_timer(c);
    }
    bury();
}
