/*
 * harness.c - the broker process and a blocking, timeout-bounded client for
 * the integration suites (see harness.h).
 *
 * Every wait is a poll() against a deadline on the monotonic clock, so a
 * broker that hangs makes a test fail with a message instead of stalling
 * the suite. Received bytes go through libwsproto's parser in client role:
 * anything the broker sends that breaks RFC 6455 is reported as such.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef WSBROKER_BIN
#error "WSBROKER_BIN must name the broker executable"
#endif

extern char **environ;

/* The broker whose log a failure prints. Set by the test's main thread. */
static it_broker_t *cur_broker;

static int quick_get(int port, const char *path, it_http_t *r, int timeout_ms);

/* ---- time and failing ---- */

int64_t it_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void it_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - it_now_ms();
    return left < 0 ? 0 : (int)left;
}

void it_fail_at(const char *file, int line, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    int n = snprintf(msg, sizeof(msg), "%s:%d: ", file, line);
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL %s\n", msg);
    if (cur_broker != NULL && cur_broker->logfd >= 0)
        it_broker_dump(cur_broker, 6000);
    ck_abort_msg("%s", msg);
    abort(); /* ck_abort_msg does not return; this keeps noreturn honest */
}

int it_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    signal(SIGPIPE, SIG_IGN);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}

/* Printable excerpt of bytes for failure messages. */
static const char *excerpt(const uint8_t *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        if (o > 300) {
            o += (size_t)snprintf(out + o, cap - o, "...(%zu bytes)", n);
            break;
        }
        if (p[i] >= 0x20 && p[i] < 0x7f)
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
    }
    out[o < cap ? o : cap - 1] = '\0';
    return out;
}

/* ---- the broker process ---- */

int it_free_port(void)
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

/* Environment for the child: ours without WSBROKER_*, plus env. The array
 * is malloc'd; the strings are borrowed. */
static char **child_env(const char *const *env)
{
    size_t n = 0, extra = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    while (env != NULL && env[extra] != NULL)
        extra++;
    char **out = calloc(n + extra + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "WSBROKER_", 9) != 0)
            out[k++] = environ[i];
    for (size_t i = 0; i < extra; i++)
        out[k++] = (char *)env[i];
    out[k] = NULL;
    return out;
}

/* fork + exec prog (WSBROKER_BIN, or a command found in PATH) with argv
 * (argv[0] included). The child dies with the calling thread. Returns the
 * pid or -1. */
static pid_t spawn_prog(const char *prog, char *const *argv, const char *const *env, int outfd,
                        int errfd)
{
    char **envp = child_env(env);
    pid_t parent = getpid();
    if (envp == NULL)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(outfd, 1);
        dup2(errfd, 2);
        close_range(3, ~0U, 0);
        if (strchr(prog, '/') != NULL)
            execve(prog, argv, envp);
        else
            execvpe(prog, argv, envp);
        _exit(127);
    }
    free(envp);
    return pid;
}

static pid_t spawn(char *const *argv, const char *const *env, int outfd, int errfd)
{
    return spawn_prog(WSBROKER_BIN, argv, env, outfd, errfd);
}

pid_t it_spawn(const char *const *argv, int outfd)
{
    return spawn_prog(argv[0], (char *const *)argv, NULL, outfd, outfd);
}

/* An unlinked temp file for a command's output. */
static int make_tempfile(void)
{
    char path[] = "/tmp/wsbroker-it-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        unlink(path);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    return fd;
}

/* Broker logs of this process not deleted yet. A passing Check test ends
 * its process with exit(), which runs remove_logs; a failing one ends with
 * _exit() (or a signal on timeout), so its logs stay for a look. */
typedef struct log_entry {
    pid_t pid; /* the process that created it: a forked child leaves its
                  parent's logs alone */
    char path[64];
} log_entry_t;

static pthread_mutex_t logs_mu = PTHREAD_MUTEX_INITIALIZER;
static log_entry_t *logs;
static size_t nlogs, logs_cap;
static pid_t logs_atexit_pid;

static void remove_logs(void)
{
    pthread_mutex_lock(&logs_mu);
    for (size_t i = 0; i < nlogs; i++)
        if (logs[i].pid == getpid())
            unlink(logs[i].path);
    pthread_mutex_unlock(&logs_mu);
}

static void remember_log(const char *path)
{
    pthread_mutex_lock(&logs_mu);
    if (logs_atexit_pid != getpid() && atexit(remove_logs) == 0)
        logs_atexit_pid = getpid();
    if (nlogs == logs_cap) {
        size_t ncap = logs_cap ? logs_cap * 2 : 16;
        log_entry_t *n = realloc(logs, ncap * sizeof(*n));
        if (n != NULL) {
            logs = n;
            logs_cap = ncap;
        }
    }
    if (nlogs < logs_cap) {
        logs[nlogs].pid = getpid();
        snprintf(logs[nlogs].path, sizeof(logs[nlogs].path), "%s", path);
        nlogs++;
    }
    pthread_mutex_unlock(&logs_mu);
}

static void forget_log(const char *path)
{
    pthread_mutex_lock(&logs_mu);
    for (size_t i = 0; i < nlogs; i++) {
        if (logs[i].pid == getpid() && strcmp(logs[i].path, path) == 0) {
            logs[i] = logs[--nlogs];
            break;
        }
    }
    pthread_mutex_unlock(&logs_mu);
}

/* The broker's log: a named file, deleted when the broker is stopped or
 * released, or when the test passes; a failed test leaves it behind. */
static int make_logfile(it_broker_t *b)
{
    snprintf(b->log_path, sizeof(b->log_path), "/tmp/wsbroker-test-XXXXXX.log");
    int fd = mkstemps(b->log_path, 4);
    if (fd >= 0) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        remember_log(b->log_path);
    } else {
        b->log_path[0] = '\0';
    }
    return fd;
}

static void close_log(it_broker_t *b)
{
    if (cur_broker == b)
        cur_broker = NULL;
    if (b->logfd >= 0)
        close(b->logfd);
    b->logfd = -1;
    if (b->log_path[0] != '\0') {
        unlink(b->log_path);
        forget_log(b->log_path);
    }
    b->log_path[0] = '\0';
}

bool it_broker_alive(it_broker_t *b)
{
    int st;
    if (b->pid <= 0)
        return false;
    if (waitpid(b->pid, &st, WNOHANG) == b->pid) {
        b->pid = 0;
        return false;
    }
    return true;
}

size_t it_broker_log(const it_broker_t *b, char *out, size_t cap)
{
    struct stat st;
    size_t got = 0;
    if (cap == 0)
        return 0;
    if (b->logfd >= 0 && fstat(b->logfd, &st) == 0) {
        ssize_t n = pread(b->logfd, out, cap - 1, 0);
        got = n > 0 ? (size_t)n : 0;
    }
    out[got] = '\0';
    return got;
}

void it_broker_dump(const it_broker_t *b, size_t max)
{
    struct stat st;
    if (b->logfd < 0 || fstat(b->logfd, &st) != 0)
        return;
    size_t size = (size_t)st.st_size;
    size_t from = size > max ? size - max : 0;
    char *buf = malloc(max + 1);
    if (buf == NULL)
        return;
    ssize_t n = pread(b->logfd, buf, size - from, (off_t)from);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    fprintf(stderr,
            "---- broker output (port %d, last %zd of %zu bytes of %s) ----\n%s%s---- end ----\n",
            b->port, n, size, b->log_path, buf, n > 0 && buf[n - 1] != '\n' ? "\n" : "");
    free(buf);
}

/* Wait until /healthz answers 200 (or 503 "degraded": a cluster node
 * without its Redis), the process b (if not NULL) exits, or deadline. A refused connection is tried
 * again 20 ms later. */
static int wait_healthy(it_broker_t *b, int port, int64_t deadline)
{
    while (it_now_ms() < deadline) {
        it_http_t r;
        if (b != NULL && !it_broker_alive(b))
            return -1;
        int st = quick_get(port, "/healthz", &r,
                           remaining(deadline) < 1000 ? remaining(deadline) : 1000);
        /* Up, or up without its Redis (cluster mode): serving either way. */
        bool up = st == 200 || (st == 503 && r.body != NULL && strstr(r.body, "degraded"));
        it_http_free(&r);
        if (up)
            return 0;
        it_sleep_ms(20);
    }
    return -2;
}

bool it_wait_healthy(int port, int timeout_ms)
{
    return wait_healthy(NULL, port, it_now_ms() + timeout_ms) == 0;
}

/* it_broker_start_stderr: the broker's stderr for the next start, or -1. */
static int stderr_fd = -1;

/* ---- TLS runs ---- */

static char tls_dir[64];

static void tls_cleanup(void)
{
    char cmd[128];
    if (tls_dir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tls_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "[harness] could not remove %s\n", tls_dir);
}

bool it_tls_mode(void)
{
    const char *v = getenv("IT_TLS");
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

const char *it_tls_files(void)
{
    if (tls_dir[0] != '\0')
        return tls_dir;
    snprintf(tls_dir, sizeof(tls_dir), "/tmp/wsbroker-it-tls-XXXXXX");
    IT_ASSERT(mkdtemp(tls_dir) != NULL, "mkdtemp: %s", strerror(errno));
    atexit(tls_cleanup);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
             "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 "
             "-keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
             tls_dir, tls_dir);
    IT_ASSERT(system(cmd) == 0, "openssl could not make a test certificate");
    return tls_dir;
}

/* Start the broker on a free port (fixed_port 0), on fixed_port with
 * --port (port_flag) or on fixed_port given by env (not port_flag). In a
 * TLS run (IT_TLS=1) a broker on a free port also listens on --tls-port
 * and b->port is a relay carrying plain connections to it over TLS. */
static void start(it_broker_t *b, int fixed_port, bool port_flag, const char *const *args,
                  const char *const *env)
{
    char *argv[64];
    char portstr[16], tlsport[16], cert[96], key[96];
    size_t nargs = 0;
    while (args != NULL && args[nargs] != NULL)
        nargs++;
    IT_ASSERT(nargs + 12 < sizeof(argv) / sizeof(argv[0]), "too many broker arguments");
    bool tls = fixed_port <= 0 && it_tls_mode();
    signal(SIGPIPE, SIG_IGN);
    b->pid = 0;
    b->logfd = make_logfile(b);
    IT_ASSERT(b->logfd >= 0, "cannot create the broker log file: %s", strerror(errno));
    cur_broker = b;

    for (int attempt = 0; attempt < 4; attempt++) {
        size_t k = 0;
        b->port = fixed_port > 0 ? fixed_port : it_free_port();
        IT_ASSERT(b->port > 0, "no free loopback port");
        snprintf(portstr, sizeof(portstr), "%d", b->port);
        argv[k++] = (char *)WSBROKER_BIN;
        argv[k++] = (char *)"--bind";
        argv[k++] = (char *)IT_HOST;
        if (fixed_port <= 0 || port_flag) {
            argv[k++] = (char *)"--port";
            argv[k++] = portstr;
        }
        int tls_port = 0;
        if (tls) {
            const char *dir = it_tls_files();
            tls_port = it_free_port();
            snprintf(tlsport, sizeof(tlsport), "%d", tls_port);
            snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
            snprintf(key, sizeof(key), "%s/key.pem", dir);
            argv[k++] = (char *)"--tls-port";
            argv[k++] = tlsport;
            argv[k++] = (char *)"--tls-cert";
            argv[k++] = cert;
            argv[k++] = (char *)"--tls-key";
            argv[k++] = key;
        }
        for (size_t i = 0; i < nargs; i++)
            argv[k++] = (char *)args[i];
        argv[k] = NULL;
        b->pid = spawn(argv, env, b->logfd, stderr_fd >= 0 ? stderr_fd : b->logfd);
        IT_ASSERT(b->pid > 0, "fork failed: %s", strerror(errno));
        if (tls && wait_healthy(b, b->port, it_now_ms() + 10000) == 0)
            b->port = it_relay_start(tls_port); /* everything else goes over TLS */
        snprintf(b->url, sizeof(b->url), "ws://%s:%d/ws", IT_HOST, b->port);
        int r = wait_healthy(b, b->port, it_now_ms() + 10000);
        if (r == 0) {
            fprintf(stderr, "[harness] broker pid %d on port %d%s, output in %s\n", (int)b->pid,
                    b->port, tls ? " (a relay to its --tls-port)" : "", b->log_path);
            return;
        }
        if (r == -2) {
            it_fail("broker (pid %d, port %d) did not answer GET /healthz with 200 within 10 s",
                    (int)b->pid, b->port);
        }
        if (fixed_port > 0)
            break;
        dprintf(b->logfd, "[harness] broker exited before becoming healthy on port %d\n", b->port);
    }
    it_fail("broker exited before answering GET /healthz (port %d)", b->port);
}

void it_broker_start_env(it_broker_t *b, const char *const *args, const char *const *env)
{
    start(b, 0, false, args, env);
}

void it_broker_start_stderr(it_broker_t *b, const char *const *args, int errfd)
{
    stderr_fd = errfd;
    start(b, 0, false, args, NULL);
    stderr_fd = -1;
}

void it_broker_start_at(it_broker_t *b, int port, const char *const *args, const char *const *env)
{
    start(b, port, false, args, env);
}

void it_broker_start_port(it_broker_t *b, int port, const char *const *args, const char *const *env)
{
    start(b, port, true, args, env);
}

/* Wait until pid exits or deadline. Returns true with *st set once it has
 * been reaped. Blocks in poll on a pidfd; where there is none (kernels
 * before 5.3), checks every 2 ms. */
static bool reap_until(pid_t pid, int *st, int64_t deadline)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    bool done = false;
    for (;;) {
        pid_t r = waitpid(pid, st, WNOHANG);
        if (r == pid) {
            done = true;
            break;
        }
        if ((r < 0 && errno != EINTR) || it_now_ms() >= deadline)
            break;
        if (pfd >= 0) {
            struct pollfd p = {.fd = pfd, .events = POLLIN};
            poll(&p, 1, remaining(deadline));
        } else {
            it_sleep_ms(2);
        }
    }
    if (pfd >= 0)
        close(pfd);
    return done;
}

int it_broker_wait(it_broker_t *b, int timeout_ms)
{
    int st;
    if (b->pid <= 0)
        return -1;
    if (!reap_until(b->pid, &st, it_now_ms() + timeout_ms))
        return -1;
    b->pid = 0;
    return st;
}

int it_broker_term(it_broker_t *b, int timeout_ms)
{
    int st;
    if (b->pid <= 0)
        return -1;
    kill(b->pid, SIGTERM);
    st = it_broker_wait(b, timeout_ms);
    if (st != -1 || b->pid <= 0)
        return st;
    kill(b->pid, SIGKILL);
    waitpid(b->pid, &st, 0);
    b->pid = 0;
    return -1;
}

void it_broker_stop_at(const char *file, int line, it_broker_t *b)
{
    IT_ASSERT(b->pid > 0, "stop: the broker is not running (it crashed or exited early)");
    int st = it_broker_term(b, 10000);
    if (st == -1)
        it_fail_at(file, line, "broker did not exit within 10 s of SIGTERM (killed)");
    if (WIFSIGNALED(st))
        it_fail_at(file, line, "broker died of signal %d on SIGTERM, expected exit 0",
                   WTERMSIG(st));
    if (WEXITSTATUS(st) != 0)
        it_fail_at(file, line, "broker exited with status %d on SIGTERM, expected 0",
                   WEXITSTATUS(st));
    close_log(b);
}

void it_broker_kill(it_broker_t *b)
{
    int st;
    if (b->pid <= 0)
        return;
    kill(b->pid, SIGKILL);
    while (waitpid(b->pid, &st, 0) < 0 && errno == EINTR)
        ;
    b->pid = 0;
}

void it_broker_release(it_broker_t *b)
{
    it_broker_kill(b);
    close_log(b);
}

/* True once every thread of pid is stopped (state T or t in /proc). */
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
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* the thread is gone */
        ssize_t n = read(fd, stat, sizeof(stat) - 1);
        close(fd);
        stat[n > 0 ? n : 0] = '\0';
        const char *p = strrchr(stat, ')');
        if (p != NULL && p[1] == ' ' && p[2] != 'T' && p[2] != 't')
            stopped = false;
    }
    if (d != NULL)
        closedir(d);
    return stopped;
}

void it_broker_pause(it_broker_t *b)
{
    IT_ASSERT(b->pid > 0, "pause: the broker is not running");
    IT_ASSERT(kill(b->pid, SIGSTOP) == 0, "SIGSTOP: %s", strerror(errno));
    int64_t deadline = it_now_ms() + 2000;
    while (!all_stopped(b->pid)) {
        IT_ASSERT(it_now_ms() < deadline, "broker pid %d: not every thread stopped within 2 s",
                  (int)b->pid);
        it_sleep_ms(2);
    }
}

void it_broker_resume(it_broker_t *b)
{
    IT_ASSERT(b->pid > 0, "resume: the broker is not running");
    IT_ASSERT(kill(b->pid, SIGCONT) == 0, "SIGCONT: %s", strerror(errno));
}

int it_run(const char *const *args, const char *const *env, char *out, size_t out_cap, char *err,
           size_t err_cap, int timeout_ms)
{
    char *argv[64];
    size_t k = 0;
    int st = -1;
    int ofd = make_tempfile(), efd = make_tempfile();
    IT_ASSERT(ofd >= 0 && efd >= 0, "cannot create temp files");
    signal(SIGPIPE, SIG_IGN);
    argv[k++] = (char *)WSBROKER_BIN;
    while (args != NULL && args[k - 1] != NULL && k < 63) {
        argv[k] = (char *)args[k - 1];
        k++;
    }
    argv[k] = NULL;
    pid_t pid = spawn(argv, env, ofd, efd);
    IT_ASSERT(pid > 0, "fork failed");
    if (!reap_until(pid, &st, it_now_ms() + timeout_ms)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    it_broker_t tmp = {.logfd = ofd};
    if (out != NULL)
        it_broker_log(&tmp, out, out_cap);
    tmp.logfd = efd;
    if (err != NULL)
        it_broker_log(&tmp, err, err_cap);
    close(ofd);
    close(efd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* ---- raw TCP ---- */

int it_tcp_connect(int port, int rcvbuf)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    while (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

bool it_tcp_send(int fd, const void *buf, size_t len, int timeout_ms)
{
    const uint8_t *p = buf;
    int64_t deadline = it_now_ms() + timeout_ms;
    /* Send first and poll only when the socket is full: one syscall per
     * send in the common case. */
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return false;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int r = poll(&pfd, 1, remaining(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
    }
    return true;
}

void it_tcp_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* Read what is available within the deadline into buf. Returns bytes read,
 * 0 on EOF, -1 on reset or error (errno kept), -2 on timeout. Tries the
 * read first and blocks in poll only when nothing is waiting, so a busy
 * connection costs one syscall per buffer-full. */
static ssize_t read_some(int fd, void *buf, size_t cap, int64_t deadline)
{
    for (;;) {
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, remaining(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return -2;
    }
}

/* Send req, piece bytes at a time when piece > 0. */
static bool send_request(int fd, const char *req, size_t len, size_t piece, int delay_ms,
                         int64_t deadline)
{
    if (piece == 0)
        return it_tcp_send(fd, req, len, remaining(deadline));
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        if (!it_tcp_send(fd, req + off, n, remaining(deadline)))
            return false;
        if (delay_ms > 0 && off + n < len)
            it_sleep_ms(delay_ms);
    }
    return true;
}

typedef struct acc {
    char *p;
    size_t len, cap;
} acc_t;

static bool acc_read(int fd, acc_t *a, int64_t deadline, ssize_t *res)
{
    if (a->cap - a->len < 16384) {
        size_t ncap = a->cap ? a->cap * 2 : 65536;
        char *np = realloc(a->p, ncap);
        if (np == NULL)
            return false;
        a->p = np;
        a->cap = ncap;
    }
    *res = read_some(fd, a->p + a->len, a->cap - a->len - 1, deadline);
    if (*res > 0)
        a->len += (size_t)*res;
    return *res > 0;
}

/* Exchange a request for a response on fd. With upgrade and a 101 answer,
 * stops right after the head and hands the bytes after it to *rest. */
static int http_exchange(int fd, const char *req, size_t len, size_t piece, int delay_ms,
                         it_http_t *r, int timeout_ms, int close_wait_ms, bool upgrade, acc_t *rest)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    acc_t a = {0};
    size_t scanned = 0;
    ssize_t got = 0;
    int hl = WS_AGAIN;

    memset(r, 0, sizeof(*r));
    r->status = IT_HTTP_TIMEOUT;
    if (!send_request(fd, req, len, piece, delay_ms, deadline)) {
        /* The broker may have answered and closed already (431, 408). */
        deadline = it_now_ms() + 1000;
    }
    while (hl == WS_AGAIN) {
        if (!acc_read(fd, &a, deadline, &got)) {
            r->status = got == -2 ? IT_HTTP_TIMEOUT : IT_HTTP_EOF;
            r->closed = got != -2;
            goto done;
        }
        hl = wsh_parse_response(a.p, a.len, &scanned, &r->res);
    }
    if (hl < 0 || (size_t)hl > sizeof(r->head)) {
        r->status = IT_HTTP_BAD;
        goto done;
    }
    memcpy(r->head, a.p, (size_t)hl);
    r->head_len = (size_t)hl;
    scanned = 0;
    wsh_parse_response(r->head, r->head_len, &scanned, &r->res);
    r->status = r->res.status;

    if (upgrade && r->status == 101) {
        rest->len = a.len - (size_t)hl;
        rest->p = malloc(rest->len + 1);
        if (rest->p != NULL)
            memcpy(rest->p, a.p + hl, rest->len);
        goto done;
    }

    const wsh_str_t *cl = wsh_header_get(r->res.headers, r->res.num_headers, "Content-Length");
    size_t want = SIZE_MAX;
    if (cl != NULL) {
        want = 0;
        for (size_t i = 0; i < cl->len && cl->p[i] >= '0' && cl->p[i] <= '9'; i++)
            want = want * 10 + (size_t)(cl->p[i] - '0');
    }
    while (a.len - (size_t)hl < want) {
        if (!acc_read(fd, &a, deadline, &got)) {
            r->closed = got != -2;
            break;
        }
    }
    size_t blen = a.len - (size_t)hl;
    if (blen > want)
        blen = want;
    r->body = malloc(blen + 1);
    if (r->body != NULL) {
        memcpy(r->body, a.p + hl, blen);
        r->body[blen] = '\0';
        r->body_len = blen;
    }
    if (!r->closed && close_wait_ms > 0) {
        int64_t close_deadline = it_now_ms() + close_wait_ms;
        for (;;) {
            char sink[4096];
            ssize_t n = read_some(fd, sink, sizeof(sink), close_deadline);
            if (n == 0 || n == -1) {
                r->closed = true;
                break;
            }
            if (n == -2)
                break;
        }
    }
done:
    free(a.p);
    return r->status;
}

int it_http_raw(int port, const char *req, size_t len, size_t piece, int delay_ms, it_http_t *r,
                int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    int fd = it_tcp_connect(port, 0);
    if (fd < 0) {
        r->status = IT_HTTP_REFUSED;
        return r->status;
    }
    int st = http_exchange(fd, req, len, piece, delay_ms, r, timeout_ms, 1000, false, NULL);
    close(fd);
    return st;
}

/* A quick GET for polling: no wait for the broker to close. */
static int quick_get(int port, const char *path, it_http_t *r, int timeout_ms)
{
    char req[256];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, IT_HOST, port);
    memset(r, 0, sizeof(*r));
    int fd = it_tcp_connect(port, 0);
    if (fd < 0) {
        r->status = IT_HTTP_REFUSED;
        return r->status;
    }
    int st = http_exchange(fd, req, (size_t)n, 0, 0, r, timeout_ms, 0, false, NULL);
    close(fd);
    return st;
}

int it_http_get(int port, const char *path, const char *extra, it_http_t *r)
{
    char req[WSH_MAX_HEAD * 2];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n", path, IT_HOST,
                     port, extra != NULL ? extra : "");
    IT_ASSERT(n > 0 && (size_t)n < sizeof(req), "request too long");
    return it_http_raw(port, req, (size_t)n, 0, 0, r, IT_TIMEOUT);
}

void it_http_free(it_http_t *r)
{
    free(r->body);
    r->body = NULL;
}

bool it_http_header(const it_http_t *r, const char *name, char *out, size_t cap)
{
    if (r->status <= 0)
        return false;
    const wsh_str_t *v = wsh_header_get(r->res.headers, r->res.num_headers, name);
    if (v == NULL)
        return false;
    size_t n = v->len < cap - 1 ? v->len : cap - 1;
    memcpy(out, v->p, n);
    out[n] = '\0';
    return true;
}

double it_metric(int port, const char *name)
{
    it_http_t r;
    size_t nl = strlen(name);
    double sum = -1;
    int st = quick_get(port, "/metrics", &r, IT_TIMEOUT);
    IT_ASSERT(st == 200, "GET /metrics: expected 200, got %d", st);
    for (const char *line = r.body; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        if (line[0] != '#' && strncmp(line, name, nl) == 0 &&
            (line[nl] == ' ' || line[nl] == '{')) {
            const char *v = line + nl;
            if (*v == '{')
                v = strchr(v, '}');
            if (v != NULL && (end == NULL || v < end)) {
                char *stop;
                double d = strtod(v + 1, &stop);
                if (stop != v + 1)
                    sum = (sum < 0 ? 0 : sum) + d;
            }
        }
        line = end != NULL ? end + 1 : NULL;
    }
    it_http_free(&r);
    return sum;
}

/* ---- WebSocket client ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

it_conn_t *it_ws_try(int port, const char *path, const char *extra, int rcvbuf, size_t piece,
                     int delay_ms, int *status, it_http_t *r)
{
    uint8_t nonce[16];
    char key[WSH_KEY_LEN + 1];
    char req[WSH_MAX_HEAD * 2];
    it_http_t local;
    acc_t rest = {0};

    if (r == NULL)
        r = &local;
    memset(r, 0, sizeof(*r));
    if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce))
        memset(nonce, 7, sizeof(nonce));
    wsh_make_key(nonce, key);
    char host[64];
    snprintf(host, sizeof(host), "%s:%d", IT_HOST, port);
    int n = wsh_write_request(req, sizeof(req), host, path, key, extra);
    IT_ASSERT(n > 0, "wsh_write_request failed (%d)", n);

    int fd = it_tcp_connect(port, rcvbuf);
    if (fd < 0) {
        *status = IT_HTTP_REFUSED;
        return NULL;
    }
    *status = http_exchange(fd, req, (size_t)n, piece, delay_ms, r, IT_TIMEOUT, 1000, true, &rest);
    if (*status != 101) {
        close(fd);
        if (r == &local)
            it_http_free(r);
        return NULL;
    }
    if (wsh_check_101(&r->res, key) != WS_OK) {
        char buf[600];
        close(fd);
        free(rest.p);
        it_fail("upgrade of %s: 101 response failed wsh_check_101 (key %s): %s", path, key,
                excerpt((const uint8_t *)r->head, r->head_len, buf, sizeof(buf)));
    }

    it_conn_t *c = it_conn_wrap(fd, port, rest.p, rest.len);
    free(rest.p);
    return c;
}

it_conn_t *it_conn_wrap(int fd, int port, const void *rest, size_t len)
{
    it_conn_t *c = calloc(1, sizeof(*c));
    IT_ASSERT(c != NULL, "out of memory");
    c->fd = fd;
    c->port = port;
    c->auto_pong = true;
    snprintf(c->name, sizeof(c->name), "client fd %d", fd);
    ws_parser_init(&c->wp, WS_ROLE_CLIENT, 0, 0);
    c->in_cap = len > 65536 ? len : 65536;
    c->in = malloc(c->in_cap);
    IT_ASSERT(c->in != NULL, "out of memory");
    if (len > 0)
        memcpy(c->in, rest, len);
    c->in_len = len;
    c->rng = ((uint64_t)it_now_ms() << 20) ^ ((uint64_t)fd << 8) ^ (uint64_t)(uintptr_t)c ^
             0x9e3779b97f4a7c15ULL;
    return c;
}

it_conn_t *it_ws_open_at(const char *file, int line, int port, const char *path, const char *extra,
                         int rcvbuf)
{
    int status;
    it_http_t r;
    it_conn_t *c = it_ws_try(port, path, extra, rcvbuf, 0, 0, &status, &r);
    if (c == NULL) {
        char buf[600];
        excerpt((const uint8_t *)r.head, r.head_len, buf, sizeof(buf));
        it_http_free(&r);
        it_fail_at(file, line, "upgrade to %s: expected 101, got %d%s%s", path, status,
                   r.head_len ? ": " : " (no response)", buf);
    }
    return c;
}

it_conn_t *it_ws_hello_at(const char *file, int line, int port, int rcvbuf, msg_server_t *hello)
{
    msg_server_t m;
    it_conn_t *c = it_ws_open_at(file, line, port, "/ws", NULL, rcvbuf);
    it_expect_json_at(file, line, c, &m, IT_TIMEOUT);
    if (m.op != MSG_S_HELLO)
        it_fail_at(file, line, "first message on /ws: expected hello, got %.*s", (int)c->msg_len,
                   (const char *)c->msg);
    if (hello != NULL)
        *hello = m;
    return c;
}

void it_conn_free(it_conn_t *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->in);
    free(c->msg);
    free(c);
}

void it_conn_reset(it_conn_t *c)
{
    if (c == NULL)
        return;
    it_tcp_reset(c->fd);
    c->fd = -1;
    it_conn_free(c);
}

static bool msg_append(it_conn_t *c, const uint8_t *p, size_t n)
{
    if (c->msg_len + n + 1 > c->msg_cap) {
        size_t ncap = c->msg_cap ? c->msg_cap : 4096;
        while (ncap < c->msg_len + n + 1)
            ncap *= 2;
        uint8_t *np = realloc(c->msg, ncap);
        if (np == NULL)
            return false;
        c->msg = np;
        c->msg_cap = ncap;
    }
    memcpy(c->msg + c->msg_len, p, n);
    c->msg_len += n;
    c->msg[c->msg_len] = '\0';
    return true;
}

it_ev_t it_recv(it_conn_t *c, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    it_ev_t out = {0};
    for (;;) {
        while (c->in_off < c->in_len) {
            ws_event_t ev;
            ssize_t n = ws_parser_feed(&c->wp, c->in + c->in_off, c->in_len - c->in_off, &ev);
            if (n < 0) {
                snprintf(c->errtext, sizeof(c->errtext), "broker sent bytes the parser rejects: %s",
                         ws_strerror((int)n));
                c->in_off = c->in_len;
                out.type = IT_EV_ERROR;
                return out;
            }
            c->in_off += (size_t)n;
            switch (ev.type) {
            case WS_EV_NONE:
                break;
            case WS_EV_DATA:
                if (ev.first) {
                    c->msg_len = 0;
                    c->msg_op = ev.opcode;
                    msg_append(c, (const uint8_t *)"", 0);
                }
                if (!msg_append(c, ev.data, ev.len)) {
                    snprintf(c->errtext, sizeof(c->errtext), "out of memory");
                    out.type = IT_EV_ERROR;
                    return out;
                }
                if (ev.fin) {
                    out.type = c->msg_op == WS_OP_TEXT ? IT_EV_TEXT : IT_EV_BINARY;
                    out.data = c->msg;
                    out.len = c->msg_len;
                    return out;
                }
                break;
            case WS_EV_PING:
            case WS_EV_PONG:
            case WS_EV_CLOSE:
                memcpy(c->ctl, ev.data, ev.len);
                c->ctl[ev.len] = '\0';
                out.data = c->ctl;
                out.len = ev.len;
                out.type = ev.type == WS_EV_PING   ? IT_EV_PING
                           : ev.type == WS_EV_PONG ? IT_EV_PONG
                                                   : IT_EV_CLOSE;
                out.close_code = ev.close_code;
                return out;
            }
        }
        if (c->eof) {
            out.type = IT_EV_EOF;
            return out;
        }
        c->in_off = c->in_len = 0;
        ssize_t n = read_some(c->fd, c->in, c->in_cap, deadline);
        if (n == -2) {
            out.type = IT_EV_TIMEOUT;
            return out;
        }
        if (n <= 0) {
            c->eof = true;
            c->reset = n < 0;
            continue;
        }
        c->in_len = (size_t)n;
    }
}

const char *it_ev_describe(const it_ev_t *ev, char *buf, size_t cap)
{
    char ex[400];
    switch (ev->type) {
    case IT_EV_TEXT:
        snprintf(buf, cap, "text message %s", excerpt(ev->data, ev->len, ex, sizeof(ex)));
        break;
    case IT_EV_BINARY:
        snprintf(buf, cap, "binary message of %zu bytes", ev->len);
        break;
    case IT_EV_PING:
        snprintf(buf, cap, "Ping '%s'", excerpt(ev->data, ev->len, ex, sizeof(ex)));
        break;
    case IT_EV_PONG:
        snprintf(buf, cap, "Pong '%s'", excerpt(ev->data, ev->len, ex, sizeof(ex)));
        break;
    case IT_EV_CLOSE:
        snprintf(buf, cap, "Close %d '%s'", ev->close_code,
                 excerpt(ev->data, ev->len, ex, sizeof(ex)));
        break;
    case IT_EV_EOF:
        snprintf(buf, cap, "end of connection");
        break;
    case IT_EV_TIMEOUT:
        snprintf(buf, cap, "nothing (timeout)");
        break;
    case IT_EV_ERROR:
        snprintf(buf, cap, "invalid data from the broker");
        break;
    }
    return buf;
}

/* ---- sending ---- */

size_t it_frame(it_conn_t *c, uint8_t *out, int opcode, bool fin, int rsv, bool masked,
                const void *payload, size_t len)
{
    size_t h = 0;
    out[h++] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (opcode & 0x0f));
    uint8_t mbit = masked ? 0x80 : 0;
    if (len < 126) {
        out[h++] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        out[h++] = mbit | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (len > 0)
        memcpy(out + h + (masked ? 4 : 0), payload, len);
    if (masked) {
        uint32_t k = (uint32_t)rng_next(&c->rng);
        memcpy(out + h, &k, 4);
        for (size_t i = 0; i < len; i++)
            out[h + 4 + i] ^= out[h + (i & 3)];
        h += 4;
    }
    return h + len;
}

bool it_try_send(it_conn_t *c, const void *buf, size_t len)
{
    return it_tcp_send(c->fd, buf, len, 10000);
}

void it_send_raw_at(const char *file, int line, it_conn_t *c, const void *buf, size_t len)
{
    if (!it_try_send(c, buf, len))
        it_fail_at(file, line, "%s: sending %zu bytes failed: %s", c->name, len,
                   errno ? strerror(errno) : "timeout");
}

void it_send_pieces_at(const char *file, int line, it_conn_t *c, const void *buf, size_t len,
                       size_t piece, int delay_ms)
{
    const uint8_t *p = buf;
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        it_send_raw_at(file, line, c, p + off, n);
        if (delay_ms > 0 && off + n < len)
            it_sleep_ms(delay_ms);
    }
}

void it_send_frame_ex_at(const char *file, int line, it_conn_t *c, int opcode, bool fin, int rsv,
                         bool masked, const void *payload, size_t len)
{
    uint8_t small[256];
    uint8_t *buf = len + WS_MAX_HEADER <= sizeof(small) ? small : malloc(len + WS_MAX_HEADER);
    if (buf == NULL)
        it_fail_at(file, line, "out of memory");
    size_t n = it_frame(c, buf, opcode, fin, rsv, masked, payload, len);
    bool ok = it_try_send(c, buf, n);
    if (buf != small)
        free(buf);
    if (!ok)
        it_fail_at(file, line, "%s: sending a frame (opcode %d, %zu bytes) failed", c->name, opcode,
                   len);
}

void it_send_close_at(const char *file, int line, it_conn_t *c, int code, const char *reason)
{
    uint8_t p[WS_MAX_CONTROL + 2];
    size_t n = 0;
    if (code > 0) {
        p[n++] = (uint8_t)(code >> 8);
        p[n++] = (uint8_t)code;
        size_t rl = reason != NULL ? strlen(reason) : 0;
        if (rl > WS_MAX_CONTROL - 2)
            rl = WS_MAX_CONTROL - 2;
        if (rl > 0)
            memcpy(p + n, reason, rl);
        n += rl;
    }
    it_send_frame_ex_at(file, line, c, WS_OP_CLOSE, true, 0, true, p, n);
}

int it_send_fragmented_at(const char *file, int line, it_conn_t *c, int opcode, const void *payload,
                          size_t len, size_t frag, bool ping_between)
{
    const uint8_t *p = payload;
    size_t off = 0;
    int pings = 0;
    do {
        size_t n = len - off < frag ? len - off : frag;
        bool fin = off + n == len;
        it_send_frame_ex_at(file, line, c, off == 0 ? opcode : WS_OP_CONT, fin, 0, true, p + off,
                            n);
        off += n;
        if (ping_between && !fin) {
            char pp[16];
            int pl = snprintf(pp, sizeof(pp), "p%d", pings++);
            it_send_frame_ex_at(file, line, c, WS_OP_PING, true, 0, true, pp, (size_t)pl);
        }
    } while (off < len);
    return pings;
}

/* ---- expectations ---- */

static const char *sop_name(int op)
{
    switch (op) {
    case MSG_S_HELLO:
        return "hello";
    case MSG_S_ACK:
        return "ack";
    case MSG_S_ERROR:
        return "error";
    case MSG_S_MESSAGE:
        return "message";
    case MSG_S_PONG:
        return "pong";
    }
    return "?";
}

it_ev_t it_next(it_conn_t *c, int timeout_ms)
{
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        it_ev_t ev = it_recv(c, remaining(deadline));
        if (ev.type != IT_EV_PING || !c->auto_pong)
            return ev;
        uint8_t frame[WS_MAX_CONTROL + WS_MAX_HEADER];
        size_t n = it_frame(c, frame, WS_OP_PONG, true, 0, true, ev.data, ev.len);
        if (!it_try_send(c, frame, n)) {
            snprintf(c->errtext, sizeof(c->errtext), "sending a Pong failed: %s",
                     errno ? strerror(errno) : "timeout");
            ev.type = IT_EV_ERROR;
            return ev;
        }
    }
}

/* Next event, answering and skipping Pings when c->auto_pong. */
static it_ev_t next_event(const char *file, int line, it_conn_t *c, int64_t deadline)
{
    it_ev_t ev = it_next(c, remaining(deadline));
    if (ev.type == IT_EV_ERROR)
        it_fail_at(file, line, "%s: %s", c->name, c->errtext);
    return ev;
}

const char *it_expect_json_at(const char *file, int line, it_conn_t *c, msg_server_t *m,
                              int timeout_ms)
{
    char d[600];
    it_ev_t ev = next_event(file, line, c, it_now_ms() + timeout_ms);
    if (ev.type != IT_EV_TEXT)
        it_fail_at(file, line, "%s: expected a JSON text message, got %s", c->name,
                   it_ev_describe(&ev, d, sizeof(d)));
    int r = msg_parse_server((const char *)ev.data, ev.len, m);
    if (r != MSG_OK)
        it_fail_at(file, line, "%s: broker message does not parse (%d): %s", c->name, r,
                   excerpt(ev.data, ev.len, d, sizeof(d)));
    return (const char *)ev.data;
}

const char *it_expect_op_at(const char *file, int line, it_conn_t *c, msg_sop_t op, msg_server_t *m)
{
    const char *raw = it_expect_json_at(file, line, c, m, IT_TIMEOUT);
    if (m->op != op)
        it_fail_at(file, line, "%s: expected %s, got %s", c->name, sop_name(op), raw);
    return raw;
}

bool it_span_is(msg_span_t s, const char *text)
{
    size_t n = strlen(text);
    return s.len == n && (n == 0 || memcmp(s.p, text, n) == 0);
}

void it_expect_ack_at(const char *file, int line, it_conn_t *c, const char *id, msg_server_t *m)
{
    msg_server_t local;
    if (m == NULL)
        m = &local;
    const char *raw = it_expect_op_at(file, line, c, MSG_S_ACK, m);
    if (!it_span_is(m->id, id))
        it_fail_at(file, line, "%s: expected ack with id %s, got %s", c->name, id, raw);
}

void it_expect_error_at(const char *file, int line, it_conn_t *c, const char *id, const char *code)
{
    msg_server_t m;
    const char *raw = it_expect_json_at(file, line, c, &m, IT_TIMEOUT);
    if (m.op != MSG_S_ERROR || strcmp(m.code, code) != 0)
        it_fail_at(file, line, "%s: expected error %s (id %s), got %s", c->name, code,
                   id ? id : "none", raw);
    if (id == NULL ? m.id.len != 0 : !it_span_is(m.id, id))
        it_fail_at(file, line, "%s: expected error with id %s, got %s", c->name, id ? id : "absent",
                   raw);
    if (m.message[0] == '\0')
        it_fail_at(file, line, "%s: error without a message: %s", c->name, raw);
}

void it_expect_pong_at(const char *file, int line, it_conn_t *c, const char *id)
{
    msg_server_t m;
    const char *raw = it_expect_json_at(file, line, c, &m, IT_TIMEOUT);
    if (m.op != MSG_S_PONG)
        it_fail_at(file, line, "%s: expected pong (id %s), got %s", c->name, id ? id : "none", raw);
    if (id == NULL ? m.id.len != 0 : !it_span_is(m.id, id))
        it_fail_at(file, line, "%s: expected pong with id %s, got %s", c->name, id ? id : "absent",
                   raw);
}

uint64_t it_expect_message_at(const char *file, int line, it_conn_t *c, const char *topic,
                              uint64_t seq, const char *data)
{
    msg_server_t m;
    const char *raw = it_expect_json_at(file, line, c, &m, IT_TIMEOUT);
    if (m.op != MSG_S_MESSAGE || strcmp(m.topic, topic) != 0 || !m.has_seq ||
        (seq != 0 && m.seq != seq) || (data != NULL && !it_span_is(m.data, data)))
        it_fail_at(file, line, "%s: expected message on %s seq %llu data %s, got %s", c->name,
                   topic, (unsigned long long)seq, data ? data : "(any)", raw);
    return m.seq;
}

int it_read_close_at(const char *file, int line, it_conn_t *c, bool skip_data, char *reason,
                     int timeout_ms)
{
    char d[600];
    int64_t deadline = it_now_ms() + timeout_ms;
    for (;;) {
        it_ev_t ev = next_event(file, line, c, deadline);
        switch (ev.type) {
        case IT_EV_CLOSE:
            if (reason != NULL)
                memcpy(reason, ev.data, ev.len + 1);
            return ev.close_code;
        case IT_EV_EOF:
            return IT_CLOSE_EOF;
        case IT_EV_TEXT:
        case IT_EV_BINARY:
            if (skip_data)
                continue;
            it_fail_at(file, line, "%s: expected a Close, got %s", c->name,
                       it_ev_describe(&ev, d, sizeof(d)));
        case IT_EV_PING:
        case IT_EV_PONG:
            continue;
        default:
            it_fail_at(file, line, "%s: expected a Close within %d ms, got %s", c->name, timeout_ms,
                       it_ev_describe(&ev, d, sizeof(d)));
        }
    }
}

void it_expect_close_at(const char *file, int line, it_conn_t *c, int code, const char *reason)
{
    char d[600];
    it_ev_t ev = next_event(file, line, c, it_now_ms() + IT_TIMEOUT);
    if (ev.type != IT_EV_CLOSE || ev.close_code != code ||
        (reason != NULL && strcmp((const char *)ev.data, reason) != 0))
        it_fail_at(file, line, "%s: expected Close %d%s%s%s, got %s", c->name, code,
                   reason ? " '" : "", reason ? reason : "", reason ? "'" : "",
                   it_ev_describe(&ev, d, sizeof(d)));
}

void it_expect_eof_at(const char *file, int line, it_conn_t *c, int timeout_ms)
{
    char d[600];
    it_ev_t ev = it_recv(c, timeout_ms);
    if (ev.type == IT_EV_ERROR)
        it_fail_at(file, line, "%s: %s", c->name, c->errtext);
    if (ev.type != IT_EV_EOF)
        it_fail_at(file, line,
                   "%s: expected the broker to close the connection within %d ms, "
                   "got %s",
                   c->name, timeout_ms, it_ev_describe(&ev, d, sizeof(d)));
}

void it_expect_silence_at(const char *file, int line, it_conn_t *c, int ms)
{
    char d[600];
    it_ev_t ev = next_event(file, line, c, it_now_ms() + ms);
    if (ev.type != IT_EV_TIMEOUT)
        it_fail_at(file, line, "%s: expected nothing for %d ms, got %s", c->name, ms,
                   it_ev_describe(&ev, d, sizeof(d)));
}

/* ---- requests ---- */

void it_send_json_at(const char *file, int line, it_conn_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL)
        it_fail_at(file, line, "out of memory");
    va_start(ap, fmt);
    vsnprintf(buf, (size_t)n + 1, fmt, ap);
    va_end(ap);
    it_send_frame_ex_at(file, line, c, WS_OP_TEXT, true, 0, true, buf, (size_t)n);
    free(buf);
}

void it_subscribe_at(const char *file, int line, it_conn_t *c, const char *pattern)
{
    char id[32];
    snprintf(id, sizeof(id), "\"sub-%u\"", ++c->next_id);
    it_send_json_at(file, line, c, "{\"op\":\"subscribe\",\"topic\":\"%s\",\"id\":%s}", pattern,
                    id);
    it_expect_ack_at(file, line, c, id, NULL);
}

uint64_t it_publish_at(const char *file, int line, it_conn_t *c, const char *topic,
                       const char *data)
{
    char id[32];
    msg_server_t m;
    snprintf(id, sizeof(id), "\"pub-%u\"", ++c->next_id);
    it_send_json_at(file, line, c, "{\"op\":\"publish\",\"topic\":\"%s\",\"data\":%s,\"id\":%s}",
                    topic, data, id);
    it_expect_ack_at(file, line, c, id, &m);
    if (strcmp(m.topic, topic) != 0 || !m.has_seq || m.seq == 0)
        it_fail_at(file, line, "%s: publish ack must carry topic %s and seq >= 1, got %.*s",
                   c->name, topic, (int)c->msg_len, (const char *)c->msg);
    return m.seq;
}

void it_sync_at(const char *file, int line, it_conn_t *c)
{
    char id[32];
    snprintf(id, sizeof(id), "\"sync-%u\"", ++c->next_id);
    it_send_json_at(file, line, c, "{\"op\":\"ping\",\"id\":%s}", id);
    it_expect_pong_at(file, line, c, id);
}

void it_check_alive_at(const char *file, int line, int port)
{
    it_conn_t *sub = it_ws_hello_at(file, line, port, 0, NULL);
    it_conn_t *pub = it_ws_hello_at(file, line, port, 0, NULL);
    it_subscribe_at(file, line, sub, "alive.check");
    uint64_t seq = it_publish_at(file, line, pub, "alive.check", "{\"alive\":true}");
    it_expect_message_at(file, line, sub, "alive.check", seq, "{\"alive\":true}");
    it_conn_free(sub);
    it_conn_free(pub);
}

void it_send_nonblocking(it_conn_t *c, const uint8_t *buf, size_t len, size_t *off)
{
    while (*off < len) {
        ssize_t n = send(c->fd, buf + *off, len - *off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        IT_ASSERT(n > 0, "send failed: %s", n < 0 ? strerror(errno) : "connection closed");
        *off += (size_t)n;
    }
}
