/*
 * http.c - plain HTTP responses: /healthz, /metrics and static files from
 * --web-root. Files are read whole (they are a demo page and its script,
 * bounded by HTTP_MAX_FILE) and sent with the same output queue as frames.
 */
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "assets.h"
#include "broker.h"
#include "log.h"
#include "stats.h"

#define HTTP_MAX_FILE (16u << 20)
#define HTTP_HEAD_MAX 512

/* A response with head and body in one raw frame. */
static frame_t *response(int status, const char *type, const void *body, size_t len, bool head_only,
                         const char *extra)
{
    char head[HTTP_HEAD_MAX];
    int n = wsh_write_head(head, sizeof(head), status, type, len, extra);
    if (n < 0)
        return NULL;
    size_t blen = head_only ? 0 : len;
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
    char buf[1024];
    int n = wsh_write_error(buf, sizeof(buf), status, message);
    if (n < 0)
        return NULL;
    return frame_raw(buf, (size_t)n);
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

static frame_t *static_file(const char *root, const wsh_request_t *req, bool head_only)
{
    char rel[1024], full[2048];
    if (safe_path(req->path, rel, sizeof(rel)) != 0)
        return http_error(404, "not found");
    const char *name = rel;
    char with_index[1040];
    if (rel[strlen(rel) - 1] == '/') {
        snprintf(with_index, sizeof(with_index), "%sindex.html", rel);
        name = with_index;
    }
    if ((size_t)snprintf(full, sizeof(full), "%s%s", root, name) >= sizeof(full))
        return http_error(404, "not found");
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return http_error(404, "not found");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > HTTP_MAX_FILE) {
        close(fd);
        return http_error(404, "not found");
    }
    size_t size = (size_t)st.st_size;
    char *body = malloc(size ? size : 1);
    size_t got = 0;
    while (body != NULL && got < size) {
        ssize_t r = read(fd, body + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    frame_t *f = NULL;
    if (body != NULL && got == size)
        f = response(200, content_type(name), body, size, head_only, "Cache-Control: no-cache\r\n");
    else
        f = http_error(500, "could not read file");
    free(body);
    return f;
}

static frame_t *embedded_file(const wsh_request_t *req, bool head_only)
{
    wsh_str_t path = req->path;
    if (str_is(path, "/"))
        path = (wsh_str_t){"/index.html", 11};
    for (const asset_t *a = assets; a->path != NULL; a++)
        if (str_is(path, a->path))
            return response(200, content_type(a->path), a->data, a->len, head_only,
                            "Cache-Control: no-cache\r\n");
    return http_error(404, "not found");
}

frame_t *http_respond(wrk_t *w, const wsh_request_t *req)
{
    bool get = str_is(req->method, "GET");
    bool head = str_is(req->method, "HEAD");
    if (!get && !head) {
        return response(405, "text/plain; charset=utf-8", "method not allowed\n", 19, false,
                        "Allow: GET, HEAD\r\n");
    }
    if (str_is(req->path, "/healthz")) {
        if (atomic_load(&w->b->shutting_down)) {
            static const char body[] = "{\"status\":\"shutting_down\"}";
            return response(503, "application/json", body, sizeof(body) - 1, head, NULL);
        }
        static const char body[] = "{\"status\":\"ok\"}";
        return response(200, "application/json", body, sizeof(body) - 1, head, NULL);
    }
    if (str_is(req->path, "/metrics")) {
        broker_t *b = w->b;
        stats_t *all[CFG_MAX_WORKERS];
        for (int i = 0; i < b->nworkers; i++)
            all[i] = &b->workers[i]->stats;
        size_t len;
        double up = (double)(uv_hrtime() - b->start_ns) / 1e9;
        char *text = stats_render(all, b->nworkers, reg_topic_count(b->reg), up, &len);
        if (text == NULL)
            return http_error(500, "out of memory");
        frame_t *f =
            response(200, "text/plain; version=0.0.4; charset=utf-8", text, len, head, NULL);
        free(text);
        return f;
    }
    if (!w->cfg->web)
        return http_error(404, "not found");
    if (w->cfg->web_root != NULL)
        return static_file(w->cfg->web_root, req, head);
    return embedded_file(req, head);
}
