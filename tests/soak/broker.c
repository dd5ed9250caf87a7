/*
 * broker.c - the broker process under test: start it on a free loopback
 * port with the soak's settings, read its RSS, parse its /metrics, stop it
 * with SIGTERM.
 */
#define _GNU_SOURCE
#include "soak.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static pid_t pid;
static int port;
static int exit_status = -1;
static char logpath[512];
static bool keep;

pid_t broker_pid(void)
{
    return pid;
}

int broker_port(void)
{
    return port;
}

const char *broker_log(void)
{
    return logpath;
}

void broker_log_keep(void)
{
    keep = true;
}

long raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur >= want)
        return (long)rl.rlim_cur;
    struct rlimit nl = rl;
    nl.rlim_cur = (rlim_t)want;
    if ((long)nl.rlim_max < want)
        nl.rlim_max = (rlim_t)want;
    if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
        return want;
    /* Not allowed to raise the hard limit: take what there is. */
    nl.rlim_max = rl.rlim_max;
    nl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
        return (long)nl.rlim_cur;
    return (long)rl.rlim_cur;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof(a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int p = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        p = ntohs(a.sin_port);
    close(fd);
    return p;
}

/* Blocking GET path on a fresh connection within timeout_ms; returns the
 * status or -1. */
static int quick_get(const char *path, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char req[128], buf[2048];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&p, 1, left) <= 0)
            break;
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got >= sizeof(buf) - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    return status;
}

static pid_t spawn(char *const *argv, int logfd)
{
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 1, sizeof(*envp));
    if (envp == NULL)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "WSBROKER_", 9) != 0)
            envp[k++] = environ[i];
    pid_t parent = getpid();
    pid_t p = fork();
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    free(envp);
    return p;
}

int broker_start(void)
{
    if (cfg.log_path != NULL) {
        snprintf(logpath, sizeof(logpath), "%s", cfg.log_path);
        keep = true;
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(logpath, sizeof(logpath), "%s/wsbroker-soak-%d.log", tmp ? tmp : "/tmp",
                 (int)getpid());
    }
    char sp[16], workers[16], pi[32], pt[32], ht[32], ct[32], mm[32], mb[32];
    snprintf(workers, sizeof(workers), "%d", cfg.workers);
    snprintf(pi, sizeof(pi), "%g", cfg.ping_interval);
    snprintf(pt, sizeof(pt), "%g", cfg.ping_timeout);
    snprintf(ht, sizeof(ht), "%g", cfg.handshake_timeout);
    snprintf(ct, sizeof(ct), "%g", cfg.close_timeout);
    snprintf(mm, sizeof(mm), "%llu", (unsigned long long)cfg.max_message);
    snprintf(mb, sizeof(mb), "%llu", (unsigned long long)cfg.max_backlog);
    for (int attempt = 0; attempt < 5; attempt++) {
        port = free_port();
        if (port <= 0) {
            fprintf(stderr, "soak: no free loopback port\n");
            return -1;
        }
        snprintf(sp, sizeof(sp), "%d", port);
        char *argv[] = {(char *)cfg.broker,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        sp,
                        "--workers",
                        workers,
                        "--ping-interval",
                        pi,
                        "--ping-timeout",
                        pt,
                        "--handshake-timeout",
                        ht,
                        "--close-timeout",
                        ct,
                        "--max-message",
                        mm,
                        "--max-backlog",
                        mb,
                        "--slow-consumer",
                        cfg.slow_drop ? "drop" : "close",
                        "--max-subscriptions",
                        "64",
                        "--log-level",
                        "info",
                        NULL};
        int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0) {
            fprintf(stderr, "soak: cannot create %s: %s\n", logpath, strerror(errno));
            return -1;
        }
        pid = spawn(argv, logfd);
        close(logfd);
        if (pid <= 0) {
            fprintf(stderr, "soak: fork: %s\n", strerror(errno));
            return -1;
        }
        int64_t deadline = now_ms() + 10000;
        while (now_ms() < deadline) {
            int ws;
            if (waitpid(pid, &ws, WNOHANG) == pid) {
                pid = 0;
                break;
            }
            if (quick_get("/healthz", 1000) == 200) {
                st.expect_plain++; /* the broker counts this request too */
                note("broker pid %d on 127.0.0.1:%d: %s --workers %s --ping-interval %s "
                     "--ping-timeout %s --handshake-timeout %s --close-timeout %s --max-message %s "
                     "--max-backlog %s --slow-consumer %s --max-subscriptions 64 (log %s)",
                     (int)pid, port, cfg.broker, workers, pi, pt, ht, ct, mm, mb,
                     cfg.slow_drop ? "drop" : "close", logpath);
                return 0;
            }
            usleep(20000);
        }
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            pid = 0;
            fprintf(stderr, "soak: broker did not answer /healthz within 10 s\n");
            broker_log_tail(4000);
            return -1;
        }
    }
    fprintf(stderr, "soak: the broker exited at start five times\n");
    broker_log_tail(4000);
    return -1;
}

bool broker_exited(int *status)
{
    if (pid <= 0) {
        *status = exit_status;
        return true;
    }
    int ws;
    if (waitpid(pid, &ws, WNOHANG) == pid) {
        pid = 0;
        exit_status = ws;
        *status = ws;
        return true;
    }
    return false;
}

int broker_term(int timeout_ms)
{
    int ws;
    if (broker_exited(&ws))
        return ws;
    kill(pid, SIGTERM);
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (broker_exited(&ws))
            return ws;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    pid = 0;
    return -1;
}

long broker_rss_kib(void)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    const char *p = strstr(buf, "VmRSS:");
    long kib = -1;
    if (p != NULL)
        sscanf(p + 6, "%ld", &kib);
    return kib;
}

void broker_log_tail(size_t max)
{
    int fd = open(logpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat sb;
    if (fstat(fd, &sb) == 0) {
        off_t from = sb.st_size > (off_t)max ? sb.st_size - (off_t)max : 0;
        char *buf = malloc(max + 1);
        if (buf != NULL) {
            ssize_t n = pread(fd, buf, max, from);
            if (n > 0) {
                buf[n] = '\0';
                fprintf(stderr,
                        "---- broker log %s (last %zd of %lld bytes) ----\n%s---- end ----\n",
                        logpath, n, (long long)sb.st_size, buf);
            }
            free(buf);
        }
    }
    close(fd);
}

void broker_log_done(bool passed)
{
    if (passed && !keep)
        unlink(logpath);
    else
        fprintf(stderr, "soak: broker log kept at %s\n", logpath);
}

/* ---- /metrics ---- */

static const struct {
    const char *name;
    size_t off;
} mfields[] = {
    {"wsbroker_connections_open", offsetof(metrics_t, conns_open)},
    {"wsbroker_connections_total", offsetof(metrics_t, conns_total)},
    {"wsbroker_tcp_connections_open", offsetof(metrics_t, tcp_open)},
    {"wsbroker_http_requests_total", offsetof(metrics_t, http_requests)},
    {"wsbroker_handshake_rejects_total", offsetof(metrics_t, handshake_rejects)},
    {"wsbroker_messages_published_total", offsetof(metrics_t, published)},
    {"wsbroker_messages_delivered_total", offsetof(metrics_t, delivered)},
    {"wsbroker_slow_consumer_closes_total", offsetof(metrics_t, slow_closes)},
    {"wsbroker_slow_consumer_drops_total", offsetof(metrics_t, slow_drops)},
    {"wsbroker_subscriptions", offsetof(metrics_t, subscriptions)},
    {"wsbroker_ping_timeouts_total", offsetof(metrics_t, ping_timeouts)},
    {"wsbroker_topics", offsetof(metrics_t, topics)},
};

void metrics_parse(const char *body, size_t len, metrics_t *m)
{
    memset(m, 0, sizeof(*m));
    int found = 0;
    const char *p = body, *end = body + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (*p != '#' && le > p) {
            const char *sp = memchr(p, ' ', (size_t)(le - p));
            if (sp != NULL) {
                size_t nlen = (size_t)(sp - p);
                double v = strtod(sp + 1, NULL);
                for (size_t i = 0; i < sizeof(mfields) / sizeof(mfields[0]); i++)
                    if (strlen(mfields[i].name) == nlen && memcmp(p, mfields[i].name, nlen) == 0) {
                        *(double *)((char *)m + mfields[i].off) = v;
                        found++;
                    }
                int code;
                if (nlen > 30 &&
                    sscanf(p, "wsbroker_close_frames_sent_total{code=\"%d\"}", &code) == 1 &&
                    code >= 1000 && code < 1016)
                    m->closes_sent[code - 1000] = v;
                else if (nlen > 30 &&
                         sscanf(p, "wsbroker_close_frames_received_total{code=\"%d\"}", &code) ==
                             1 &&
                         code >= 1000 && code < 1016)
                    m->closes_received[code - 1000] = v;
            }
        }
        p = le + 1;
    }
    m->valid = found >= (int)(sizeof(mfields) / sizeof(mfields[0]));
}
