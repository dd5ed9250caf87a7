/*
 * http.c - the HTTP phase of a connection (see http.h): gathering the
 * request head, the WebSocket upgrade, and plain responses.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <wsproto/pmd.h>
#include <wsproto/ws_handshake.h>

#include "assets.h"
#include "auth.h"
#include "broker.h"
#include "cluster.h"
#include "conn.h"
#include "log.h"
#include "stats.h"

#define HTTP_HEAD_MAX   512
#define HEAD_MIN_CAP    256
#define FILE_CHUNK      (64 * 1024)
#define FILE_QUEUE_HIGH (4 * FILE_CHUNK) /* output queued before reading more */

static const char cache_no[] = "Cache-Control: no-cache\r\n";

/* ---- Responses. ---- */

/* A response head (and body unless head_only) in one raw frame. body_len is
 * the Content-Length; body may be NULL when only the head is wanted. */
static frame_t *response(int status, const char *type, const void *body, size_t body_len,
                         bool head_only, const char *extra)
{
    char head[HTTP_HEAD_MAX];
    int n = wsh_write_head(head, sizeof(head), status, type, body_len, extra);
    if (n < 0)
        return NULL;
    size_t blen = head_only ? 0 : body_len;
    frame_t *f = frame_new((size_t)n + blen, 0);
    if (f == NULL)
        return NULL;
    memcpy(f->data, head, (size_t)n);
    if (blen > 0)
        memcpy(f->data + n, body, blen);
    f->len = (uint32_t)((size_t)n + blen);
    return f;
}

frame_t *http_error(int status, const char *message)
{
    char body[256];
    if (message == NULL)
        message = wsh_status_text(status);
    int n = snprintf(body, sizeof(body), "%s\n", message);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    const char *extra = status == 405   ? "Allow: GET, HEAD\r\n"
                        : status == 426 ? "Sec-WebSocket-Version: 13\r\n"
                        : status == 401 ? "WWW-Authenticate: Bearer realm=\"wsbroker\"\r\n"
                                        : NULL;
    return response(status, "text/plain; charset=utf-8", body, (size_t)n, false, extra);
}

static bool str_is(wsh_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".md", "text/markdown; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    if (dot != NULL)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode the path into out and refuse anything that could leave the
 * web root: "..", NUL, backslashes, hidden files. Returns 0 or -1. */
static int safe_path(wsh_str_t path, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < path.len; i++) {
        char ch = path.p[i];
        if (ch == '%') {
            int hi = i + 2 < path.len ? hexval(path.p[i + 1]) : -1;
            int lo = i + 2 < path.len ? hexval(path.p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || ch == '\\' || o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    if (out[0] != '/')
        return -1;
    /* Reject any segment that starts with a dot ("..", ".git", ...). */
    for (const char *p = out; (p = strchr(p, '/')) != NULL; p++)
        if (p[1] == '.')
            return -1;
    return 0;
}

/* ---- Static files from --web-root, on the thread pool. ---- */

typedef struct fileop {
    uv_fs_t req;
    conn_t *c; /* NULL once the connection has gone */
    uv_file fd;
    uint64_t off, size;
    bool head_only;
    bool busy; /* a thread-pool request is in flight */
    const char *type;
    frame_t *chunk; /* the buffer being read into */
} fileop_t;

static void file_open_done(uv_fs_t *req);
static void file_stat_done(uv_fs_t *req);
static void file_read_done(uv_fs_t *req);

/* Release everything; the connection (if any) no longer refers to op. */
static void file_free(fileop_t *op)
{
    if (op->fd >= 0) {
        uv_fs_t close_req;
        /* Synchronous: closing a regular file does not wait on the disk. */
        uv_fs_close(NULL, &close_req, op->fd, NULL);
        uv_fs_req_cleanup(&close_req);
    }
    if (op->chunk != NULL)
        frame_unref(op->chunk);
    if (op->c != NULL)
        op->c->x->file = NULL;
    free(op);
}

/* End the transfer with an error response (if nothing was sent yet) or by
 * dropping the connection (mid-body: the client sees a short body). */
static void file_fail(fileop_t *op, int status, const char *message, bool started)
{
    conn_t *c = op->c;
    file_free(op);
    if (c == NULL)
        return;
    if (started)
        conn_abort(c);
    else
        conn_http_finish(c, http_error(status, message));
}

static void file_read_next(fileop_t *op)
{
    conn_t *c = op->c;
    if (op->off >= op->size) {
        file_free(op);
        conn_http_done(c);
        return;
    }
    size_t want = op->size - op->off < FILE_CHUNK ? (size_t)(op->size - op->off) : FILE_CHUNK;
    op->chunk = frame_new(want, 0);
    if (op->chunk == NULL) {
        file_fail(op, 500, NULL, true);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)op->chunk->data, (unsigned)want);
    op->busy = true;
    if (uv_fs_read(&c->w->loop, &op->req, op->fd, &b, 1, (int64_t)op->off, file_read_done) != 0) {
        op->busy = false;
        file_fail(op, 500, NULL, true);
    }
}

static void file_read_done(uv_fs_t *req)
{
    fileop_t *op = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    op->busy = false;
    if (op->c == NULL) {
        file_free(op);
        return;
    }
    if (n <= 0) {
        /* The file shrank or failed under us: the promised length cannot be
         * kept, so the connection is dropped. */
        LOG(LOG_WARN, op->c->w->id, op->c->id, "file_read_failed", "error=%s",
            n < 0 ? uv_strerror((int)n) : "short file");
        file_fail(op, 500, NULL, true);
        return;
    }
    frame_t *f = op->chunk;
    op->chunk = NULL;
    f->len = (uint32_t)n;
    op->off += (uint64_t)n;
    conn_t *c = op->c;
    conn_send(c, f);
    if (c->state == CONN_CLOSED)
        return;           /* conn_send aborted: the detach freed op */
    conn_http_pending(c); /* progress: restart the transfer's timeout */
    if (c->out.bytes < FILE_QUEUE_HIGH)
        file_read_next(op);
}

void http_file_resume(conn_t *c)
{
    fileop_t *op = c->x != NULL ? c->x->file : NULL;
    if (op != NULL && !op->busy && op->chunk == NULL && c->out.bytes < FILE_QUEUE_HIGH &&
        c->state != CONN_CLOSED)
        file_read_next(op);
}

void http_file_detach(conn_t *c)
{
    fileop_t *op = c->x != NULL ? c->x->file : NULL;
    if (op == NULL)
        return;
    c->x->file = NULL;
    op->c = NULL;
    if (!op->busy)
        file_free(op);
    /* else: the request's callback sees op->c == NULL and frees op. */
}

static void file_stat_done(uv_fs_t *req)
{
    fileop_t *op = req->data;
    op->busy = false;
    if (op->c == NULL) {
        uv_fs_req_cleanup(req);
        file_free(op);
        return;
    }
    bool ok = req->result == 0 && S_ISREG(req->statbuf.st_mode);
    op->size = req->statbuf.st_size;
    uv_fs_req_cleanup(req);
    if (!ok) {
        file_fail(op, 404, "not found", false);
        return;
    }
    conn_t *c = op->c;
    frame_t *head = response(200, op->type, NULL, op->size, true, cache_no);
    if (head == NULL) {
        file_fail(op, 500, NULL, false);
        return;
    }
    conn_send(c, head);
    if (c->state == CONN_CLOSED)
        return;
    if (op->head_only)
        op->size = 0;
    file_read_next(op);
}

static void file_open_done(uv_fs_t *req)
{
    fileop_t *op = req->data;
    ssize_t fd = req->result;
    uv_fs_req_cleanup(req);
    op->busy = false;
    if (fd >= 0)
        op->fd = (uv_file)fd;
    if (op->c == NULL) {
        file_free(op);
        return;
    }
    if (fd < 0) {
        if (fd == UV_EMFILE || fd == UV_ENFILE)
            file_fail(op, 503, "server busy", false);
        else
            file_fail(op, 404, "not found", false);
        return;
    }
    op->busy = true;
    if (uv_fs_fstat(&op->c->w->loop, &op->req, op->fd, file_stat_done) != 0) {
        op->busy = false;
        file_fail(op, 500, NULL, false);
    }
}

/* Start sending a file of the web root; the response follows later. */
static void static_file(conn_t *c, const char *root, const wsh_request_t *req, bool head_only)
{
    char rel[1024], full[2048];
    if (safe_path(req->path, rel, sizeof(rel)) != 0) {
        conn_http_finish(c, http_error(404, "not found"));
        return;
    }
    const char *name = rel;
    char with_index[1040];
    if (rel[strlen(rel) - 1] == '/') {
        snprintf(with_index, sizeof(with_index), "%sindex.html", rel);
        name = with_index;
    }
    if ((size_t)snprintf(full, sizeof(full), "%s%s", root, name) >= sizeof(full)) {
        conn_http_finish(c, http_error(404, "not found"));
        return;
    }
    fileop_t *op = conn_x(c) != NULL ? calloc(1, sizeof(*op)) : NULL;
    if (op == NULL) {
        conn_http_finish(c, http_error(500, NULL));
        return;
    }
    op->c = c;
    op->fd = -1;
    op->head_only = head_only;
    op->type = content_type(name);
    op->req.data = op;
    c->x->file = op;
    conn_http_pending(c);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (fstat then
     * refuses anything that is not a regular file). */
    op->busy = true;
    if (uv_fs_open(&c->w->loop, &op->req, full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0,
                   file_open_done) != 0) {
        op->busy = false;
        file_fail(op, 404, "not found", false);
    }
}

static frame_t *embedded_file(const wsh_request_t *req, bool head_only)
{
    wsh_str_t path = req->path;
    if (str_is(path, "/"))
        path = (wsh_str_t){"/index.html", 11};
    for (const asset_t *a = assets; a->path != NULL; a++)
        if (str_is(path, a->path))
            return response(200, content_type(a->path), a->data, a->len, head_only, cache_no);
    return http_error(404, "not found");
}

static frame_t *metrics(wrk_t *w, bool head_only)
{
    broker_t *b = w->b;
    stats_t *all[CFG_MAX_WORKERS];
    for (int i = 0; i < b->nworkers; i++)
        all[i] = &b->workers[i]->stats;
    reg_stats_t rs;
    reg_get_stats(b->reg, &rs);
    stats_global_t g = {.topics = rs.topics,
                        .topics_evicted = rs.evicted,
                        .retained = rs.retained,
                        .log_dropped = log_dropped(),
                        .uptime_s = (double)(uv_hrtime() - b->start_ns) / 1e9,
                        .cluster = b->cluster != NULL};
    if (b->cluster != NULL)
        cl_stats(b->cluster, &g.redis_up, &g.redis_connects, &g.redis_errors, &g.redis_messages);
    size_t len;
    char *text = stats_render(all, b->nworkers, &g, &len);
    if (text == NULL)
        return http_error(500, "out of memory");
    frame_t *f =
        response(200, "text/plain; version=0.0.4; charset=utf-8", text, len, head_only, NULL);
    free(text);
    return f;
}

/* Answer a request without Upgrade. */
static void respond(conn_t *c, const wsh_request_t *req)
{
    wrk_t *w = c->w;
    bool get = str_is(req->method, "GET");
    bool head = str_is(req->method, "HEAD");
    STAT_ADD(&w->stats, http_requests, 1);
    if (!get && !head) {
        conn_http_finish(c, http_error(405, "method not allowed"));
        return;
    }
    frame_t *f;
    if (str_is(req->path, "/healthz")) {
        static const char ok[] = "{\"status\":\"ok\"}";
        static const char down[] = "{\"status\":\"shutting_down\"}";
        static const char degraded[] = "{\"status\":\"degraded\",\"redis\":\"unreachable\"}";
        bool stopping = atomic_load(&w->b->shutting_down);
        bool cut_off = w->b->cluster != NULL && !cl_up(w->b->cluster);
        f = stopping ? response(503, "application/json", down, sizeof(down) - 1, head, NULL)
            : cut_off
                ? response(503, "application/json", degraded, sizeof(degraded) - 1, head, NULL)
                : response(200, "application/json", ok, sizeof(ok) - 1, head, NULL);
    } else if (str_is(req->path, "/metrics")) {
        f = metrics(w, head);
    } else if (!w->cfg->web) {
        f = http_error(404, "not found");
    } else if (w->cfg->web_root != NULL) {
        static_file(c, w->cfg->web_root, req, head);
        return;
    } else {
        f = embedded_file(req, head);
    }
    conn_http_finish(c, f);
}

/* ---- Upgrade. ---- */

static void upgrade(conn_t *c, const wsh_request_t *req)
{
    wrk_t *w = c->w;
    const cfg_t *cfg = w->cfg;
    conn_endpoint_t ep = EP_NONE;
    if (str_is(req->path, "/ws") || str_is(req->path, "/"))
        ep = EP_PUBSUB;
    else if (str_is(req->path, "/echo") && cfg->echo)
        ep = EP_ECHO;

    wsh_upgrade_t up;
    int status = wsh_check_upgrade(req, &up);
    const char *why = up.error;
    if (status == 101 && ep == EP_NONE) {
        status = 404;
        why = "no WebSocket endpoint at this path";
    }
    if (status == 101) {
        const wsh_str_t *origin = wsh_header_get(req->headers, req->num_headers, "origin");
        const wsh_str_t *host = wsh_header_get(req->headers, req->num_headers, "host");
        if (origin != NULL && !cfg_origin_allowed(cfg, origin, host)) {
            status = 403;
            why = "origin not allowed";
            LOG_LIMITED(LOG_WARN, w->id, c->id, "origin_refused",
                        "origin=\"%.*s\" host=\"%.*s\" hint=\"see --allowed-origins\"",
                        (int)(origin->len > 200 ? 200 : origin->len), origin->p,
                        host ? (int)(host->len > 200 ? 200 : host->len) : 0, host ? host->p : "");
        }
    }
    if (status == 101 && atomic_load(&w->b->shutting_down)) {
        status = 503;
        why = "server shutting down";
    }
    auth_t *auth = NULL;
    if (status == 101 && ep == EP_PUBSUB && cfg->auth_key != NULL) {
        auth = auth_check(cfg->auth_key, cfg->auth_key_len, req, (int64_t)time(NULL), &why);
        if (auth == NULL) {
            status = 401;
            STAT_ADD(&w->stats, auth_failures, 1);
        }
    }
    if (status != 101) {
        STAT_ADD(&w->stats, handshake_rejects, 1);
        LOG_LIMITED(LOG_INFO, w->id, c->id, "handshake_rejected",
                    "status=%d reason=\"%s\" path=%.*s", status, why ? why : "",
                    (int)(req->path.len > 200 ? 200 : req->path.len), req->path.p);
        conn_http_finish(c, http_error(status, why ? why : wsh_status_text(status)));
        return;
    }
    /* permessage-deflate: the first acceptable offer. Clients always
     * compress without context takeover (one inflater per worker serves
     * them all); the broker does too in shared mode (one compression per
     * message, shared by every subscriber). */
    pmd_params_t pmd;
    char ext[160];
    bool deflate = false;
    if (cfg->deflate != DEFLATE_OFF) {
        pmd_policy_t policy = {.server_no_context_takeover = cfg->deflate == DEFLATE_SHARED,
                               .client_no_context_takeover = true};
        deflate = pmd_negotiate(req->headers, req->num_headers, &policy, &pmd) == PMD_OK &&
                  pmd_format_response(&pmd, ext, sizeof(ext)) > 0;
    }
    char resp[512];
    int n = wsh_write_101(resp, sizeof(resp), &up, deflate ? ext : NULL);
    if (n < 0) {
        auth_free(auth);
        conn_abort(c);
        return;
    }
    LOG(LOG_DEBUG, w->id, c->id, "ws_open", "path=%.*s sub=\"%s\"", (int)req->path.len, req->path.p,
        auth ? auth_subject(auth) : "");
    conn_open_ws(c, ep, frame_raw(resp, (size_t)n), auth, deflate ? &pmd : NULL);
}

static void on_request(conn_t *c, const wsh_request_t *req)
{
    if (wsh_wants_upgrade(req))
        upgrade(c, req);
    else
        respond(c, req);
}

/* ---- Gathering the head. ---- */

/* An HTTP head that did not arrive in one read, gathered here. */
struct http_head {
    uint32_t len, cap;
    size_t scanned; /* the parser's resume point */
    char buf[];
};

void http_head_free(conn_t *c)
{
    free(c->head);
    c->head = NULL;
}

/* Make room for need bytes of head in c->head: the buffer grows with what
 * arrives (an idle half-open connection holds a few hundred bytes, not
 * WSH_MAX_HEAD). Returns 0, or -1 on ENOMEM. */
static int head_reserve(conn_t *c, size_t need)
{
    http_head_t *h = c->head;
    uint32_t have = h != NULL ? h->cap : 0;
    if (need <= have)
        return 0;
    size_t cap = have ? have : HEAD_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > WSH_MAX_HEAD)
        cap = WSH_MAX_HEAD;
    http_head_t *nh = realloc(h, sizeof(*nh) + cap);
    if (nh == NULL)
        return -1;
    if (h == NULL)
        nh->len = 0, nh->scanned = 0;
    nh->cap = (uint32_t)cap;
    c->head = nh;
    return 0;
}

void http_input(conn_t *c, uint8_t *buf, size_t len)
{
    wsh_request_t req;
    int r;
    size_t scanned = 0;
    if (c->head == NULL) {
        /* Fast path: the whole head arrived in one read; parse it in place. */
        r = wsh_parse_request((const char *)buf, len, &scanned, &req);
        if (r > 0) {
            on_request(c, &req);
            if (c->state == CONN_OPEN && (size_t)r < len)
                conn_ws_input(c, buf + r, len - (size_t)r);
            return;
        }
        if (r != WS_AGAIN) {
            conn_http_finish(c, http_error(r == WS_E_HTTP_TOO_BIG ? 431 : 400,
                                           r == WS_E_HTTP_TOO_BIG ? "request head too large"
                                                                  : "malformed HTTP request"));
            return;
        }
    }
    /* Keep at most WSH_MAX_HEAD bytes; the parser says 431 past that. */
    uint32_t have = c->head != NULL ? c->head->len : 0;
    size_t take = len < WSH_MAX_HEAD - have ? len : WSH_MAX_HEAD - have;
    if (head_reserve(c, have + take) != 0) {
        conn_abort(c);
        return;
    }
    http_head_t *h = c->head;
    if (have == 0)
        h->scanned = scanned;
    memcpy(h->buf + h->len, buf, take);
    h->len += (uint32_t)take;
    buf += take;
    len -= take;
    r = wsh_parse_request(h->buf, h->len, &h->scanned, &req);
    if (r == WS_AGAIN && h->len < WSH_MAX_HEAD)
        return;
    if (r == WS_AGAIN || r == WS_E_HTTP_TOO_BIG) {
        conn_http_finish(c, http_error(431, "request head too large"));
        return;
    }
    if (r < 0) {
        conn_http_finish(c, http_error(400, "malformed HTTP request"));
        return;
    }
    /* The head is complete in h; bytes after it are early frames. */
    c->head = NULL;
    char *head = h->buf;
    uint32_t head_len = h->len;
    on_request(c, &req);
    if (c->state == CONN_OPEN) {
        if ((uint32_t)r < head_len)
            conn_ws_input(c, (uint8_t *)head + r, head_len - (uint32_t)r);
        if (len > 0 && c->state == CONN_OPEN)
            conn_ws_input(c, buf, len);
    }
    free(h);
}
