/*
 * tutil.c - see tutil.h.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tutil.h"

int64_t tb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int tb_free_port(void)
{
    for (int tries = 0; tries < 20; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t alen = sizeof(a);
        int port = -1;
        if (fd < 0)
            return -1;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
            port = ntohs(a.sin_port);
        close(fd);
        if (port > 0)
            return port;
    }
    return -1;
}

/* 0: /healthz answered 200; -1: no answer yet. */
static int probe_health(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char buf[256];
    int rc = -1;
    if (fd < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) &&
            poll(&p, 1, 500) == 1) {
            ssize_t n = read(fd, buf, sizeof(buf) - 1);
            if (n > 12) {
                buf[n] = '\0';
                if (strncmp(buf, "HTTP/1.1 200", 12) == 0)
                    rc = 0;
            }
        }
    }
    close(fd);
    return rc;
}

bool tb_wait_healthy(int port, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    do {
        if (probe_health(port) == 0)
            return true;
        sleep_ms(10);
    } while (tb_now_ms() < deadline);
    return false;
}

static pid_t spawn(tb_broker_t *b, const char *const *args)
{
    const char *argv[48];
    char portstr[16];
    size_t k = 0;
    snprintf(portstr, sizeof(portstr), "%d", b->port);
    argv[k++] = WSBROKER_BIN;
    argv[k++] = "--bind";
    argv[k++] = "127.0.0.1";
    argv[k++] = "--port";
    argv[k++] = portstr;
    argv[k++] = "--workers";
    argv[k++] = "1";
    argv[k++] = "--log-level";
    argv[k++] = "warn";
    for (size_t i = 0; args != NULL && args[i] != NULL && k < 46; i++)
        argv[k++] = args[i];
    argv[k] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int out = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int in = open("/dev/null", O_RDONLY);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
    if (in >= 0)
        dup2(in, 0);
    signal(SIGPIPE, SIG_DFL);
    execv(WSBROKER_BIN, (char *const *)argv);
    _exit(127);
}

bool tb_start(tb_broker_t *b, int port, const char *const *args)
{
    for (int tries = 0; tries < 5; tries++) {
        b->port = port > 0 ? port : tb_free_port();
        snprintf(b->url, sizeof(b->url), "ws://127.0.0.1:%d/ws", b->port);
        snprintf(b->log, sizeof(b->log), "/tmp/wsc-test-broker-%d.log", (int)getpid());
        b->pid = spawn(b, args);
        if (b->pid < 0)
            return false;
        int64_t deadline = tb_now_ms() + 10000;
        while (tb_now_ms() < deadline) {
            int st;
            if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
                b->pid = 0;
                break;
            }
            if (probe_health(b->port) == 0)
                return true;
            sleep_ms(10);
        }
        if (b->pid > 0) {
            tb_kill(b);
            return false;
        }
        if (port > 0) {
            /* The fixed port may still be held by the previous broker's
             * sockets for a moment: try again on the same port. */
            sleep_ms(100);
        }
    }
    return false;
}

static int reap(tb_broker_t *b, int timeout_ms)
{
    int64_t deadline = tb_now_ms() + timeout_ms;
    int st;
    while (b->pid > 0) {
        pid_t r = waitpid(b->pid, &st, WNOHANG);
        if (r == b->pid) {
            b->pid = 0;
            return st;
        }
        if ((r < 0 && errno != EINTR) || tb_now_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
    return -1;
}

bool tb_stop(tb_broker_t *b)
{
    if (b->pid <= 0)
        return false;
    kill(b->pid, SIGTERM);
    int st = reap(b, 10000);
    if (b->pid > 0) {
        tb_kill(b);
        return false;
    }
    return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

void tb_kill(tb_broker_t *b)
{
    if (b->pid <= 0)
        return;
    kill(b->pid, SIGKILL);
    reap(b, 10000);
}

/* True once every thread of pid is stopped (state T in /proc). */
static bool all_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    bool stopped = d != NULL;
    while (stopped && (e = readdir(d)) != NULL) {
        char stat[512], file[128];
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof(file), "%s/%.32s/stat", path, e->d_name);
        FILE *f = fopen(file, "r");
        if (f == NULL)
            continue;
        size_t n = fread(stat, 1, sizeof(stat) - 1, f);
        fclose(f);
        stat[n] = '\0';
        const char *p = strrchr(stat, ')');
        if (p != NULL && p[1] == ' ' && p[2] != 'T' && p[2] != 't')
            stopped = false;
    }
    if (d != NULL)
        closedir(d);
    return stopped;
}

void tb_remove_log(tb_broker_t *b)
{
    if (b->log[0] != '\0')
        unlink(b->log);
}

void tb_pause(tb_broker_t *b)
{
    if (b->pid <= 0)
        return;
    kill(b->pid, SIGSTOP);
    for (int i = 0; i < 400 && !all_stopped(b->pid); i++)
        sleep_ms(5);
}

void tb_resume(tb_broker_t *b)
{
    if (b->pid > 0)
        kill(b->pid, SIGCONT);
}

/* ---- loops ---- */

typedef struct tl_wait {
    bool expired;
} tl_wait_t;

static void on_expire(uv_timer_t *t)
{
    ((tl_wait_t *)t->data)->expired = true;
    uv_stop(t->loop);
}

bool tl_run_until(uv_loop_t *loop, tl_cond_fn cond, void *arg, int timeout_ms)
{
    uv_timer_t t;
    tl_wait_t w = {false};
    if (cond(arg))
        return true;
    uv_timer_init(loop, &t);
    t.data = &w;
    uv_timer_start(&t, on_expire, (uint64_t)timeout_ms, 0);
    while (!w.expired && !cond(arg))
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void tl_run_for(uv_loop_t *loop, int ms)
{
    tl_run_until(loop, never, NULL, ms);
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static bool loop_empty(void *arg)
{
    return !uv_loop_alive((uv_loop_t *)arg);
}

bool tl_drain(uv_loop_t *loop)
{
    int64_t deadline = tb_now_ms() + 5000;
    while (uv_loop_alive(loop) && tb_now_ms() < deadline)
        uv_run(loop, UV_RUN_NOWAIT), sleep_ms(1);
    bool clean = loop_empty(loop);
    uv_walk(loop, close_any, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return clean;
}

/* ---- recorder ---- */

static void copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static void on_state(wsc_client_t *c, wsc_state_t st, int err, const char *detail, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nstates < REC_MAX) {
        rec_state_t *s = &r->states[r->nstates++];
        s->state = st;
        s->err = err;
        copy(s->detail, sizeof(s->detail), detail, strlen(detail));
    }
}

static void on_message(wsc_client_t *c, const wsc_message_t *m, void *user)
{
    rec_t *r = user;
    (void)c;
    r->nmsgs_total++;
    if (r->nmsgs < REC_MAX) {
        rec_msg_t *x = &r->msgs[r->nmsgs++];
        copy(x->topic, sizeof(x->topic), m->topic, strlen(m->topic));
        x->seq = m->seq;
        copy(x->data, sizeof(x->data), m->data, m->data_len);
        copy(x->raw, sizeof(x->raw), m->raw, m->raw_len);
    }
}

static void fill_result(rec_result_t *x, const wsc_result_t *res)
{
    x->err = res->err;
    copy(x->code, sizeof(x->code), res->code, strlen(res->code));
    copy(x->message, sizeof(x->message), res->message, strlen(res->message));
    copy(x->topic, sizeof(x->topic), res->topic, strlen(res->topic));
    x->has_seq = res->has_seq;
    x->seq = res->seq;
    copy(x->epoch, sizeof(x->epoch), res->epoch, strlen(res->epoch));
    x->recovered = res->recovered;
}

void rec_result_cb(wsc_client_t *c, const wsc_result_t *res, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nresults < REC_MAX)
        fill_result(&r->results[r->nresults++], res);
}

static void on_error(wsc_client_t *c, const wsc_result_t *res, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nerrors < REC_MAX)
        fill_result(&r->errors[r->nerrors++], res);
}

static void on_stale(wsc_client_t *c, const wsc_stale_t *s, void *user)
{
    rec_t *r = user;
    (void)c;
    if (r->nstale < REC_MAX) {
        rec_stale_t *x = &r->stale[r->nstale++];
        x->reason = s->reason;
        copy(x->pattern, sizeof(x->pattern), s->pattern, strlen(s->pattern));
        x->last_seq = s->last_seq;
        x->seq = s->seq;
        copy(x->old_epoch, sizeof(x->old_epoch), s->old_epoch, strlen(s->old_epoch));
        copy(x->epoch, sizeof(x->epoch), s->epoch, strlen(s->epoch));
    }
}

void rec_options(rec_t *r, wsc_options_t *o)
{
    wsc_options_init(o);
    o->backoff_min_ms = 20;
    o->backoff_max_ms = 200;
    o->connect_timeout_ms = 3000;
    o->on_state = on_state;
    o->on_message = on_message;
    o->on_error = on_error;
    o->on_stale = on_stale;
    o->user = r;
}

wsc_state_t rec_last_state(const rec_t *r)
{
    return r->nstates > 0 ? r->states[r->nstates - 1].state : 0;
}

bool rec_is_open(void *r)
{
    return rec_last_state(r) == WSC_OPEN;
}

bool rec_not_open(void *r)
{
    wsc_state_t s = rec_last_state(r);
    return s == WSC_RECONNECTING || s == WSC_CLOSED;
}

bool rec_is_closed(void *r)
{
    return rec_last_state(r) == WSC_CLOSED;
}

typedef struct count_wait {
    const size_t *have;
    size_t want;
} count_wait_t;

static bool have_count(void *arg)
{
    count_wait_t *w = arg;
    return *w->have >= w->want;
}

static bool wait_count(uv_loop_t *loop, const size_t *have, size_t n, int timeout_ms)
{
    count_wait_t w = {have, n};
    return tl_run_until(loop, have_count, &w, timeout_ms);
}

bool rec_wait_msgs(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nmsgs, n, timeout_ms);
}

bool rec_wait_results(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nresults, n, timeout_ms);
}

bool rec_wait_states(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nstates, n, timeout_ms);
}

bool rec_wait_stale(uv_loop_t *loop, rec_t *r, size_t n, int timeout_ms)
{
    return wait_count(loop, &r->nstale, n, timeout_ms);
}
