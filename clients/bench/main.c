/*
 * main.c - wsbroker-bench: options, the run's phases, the report.
 *
 * main parses the options, plans the connections (scenario.c), starts the
 * bench threads (thread.c) and then only watches: it moves bench_t.phase
 * forward when the live counters say a phase is complete or its time is
 * up, prints a progress line to stderr every second, and after joining the
 * threads prints one JSON object with the results to stdout.
 *
 * Every wait has a bound (setup timeout, duration, drain, hold, close), so a
 * run always ends by itself. Exit status: 0 clean; 1 messages lost,
 * duplicated or reordered, or connection errors; 2 the scenario could not
 * run (bad options, nothing connected).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "bench.h"

#define CLOSE_WAIT_S 10.0 /* close handshakes */
#define RSS_SETTLE_S 1.0  /* conns: before reading the broker's RSS */
#define PROGRESS_NS  1000000000ull
#define POLL_NS      20000000ull

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- Options ---- */

static void usage(FILE *f)
{
    fputs("usage: wsbroker-bench SCENARIO [options]\n"
          "\n"
          "Scenarios:\n"
          "  fanout    --subs subscribers on one topic, --pubs publishers on it,\n"
          "            publishing as fast as flow control allows -> deliveries/s\n"
          "  pairs     --pairs topics, one publisher and one subscriber each\n"
          "  conns     --conns idle connections, each subscribed to its own topic\n"
          "            -> handshakes/s and, with --broker-pid, broker RSS per connection\n"
          "  latency   publishes at --rate per second to --subs subscribers\n"
          "            -> latency percentiles\n"
          "  selftest  check the histogram, message parsing and payload code, then exit\n"
          "\n"
          "Options (defaults in brackets):\n"
          "  --url URL             broker endpoint [ws://127.0.0.1:8080/ws], or wss://\n"
          "                        for TLS; repeat it for a cluster's nodes: connection\n"
          "                        k goes to the (k mod n)th, so a pair's subscriber and\n"
          "                        publisher land on different nodes\n"
          "  --cafile FILE         wss://: trust the CA certificates in FILE (PEM)\n"
          "                        instead of the system's bundle ($SSL_CERT_FILE or\n"
          "                        OpenSSL's default file)\n"
          "  --insecure            wss://: do not verify the broker's certificate or name\n"
          "                        (self-signed test setups)\n"
          "  --deflate             offer permessage-deflate; when the broker accepts,\n"
          "                        publishes are compressed too (each on its own)\n"
          "  --duration S          measured window, seconds [10]\n"
          "  --warmup S            publishing before the window, seconds [2]\n"
          "  --drain S             bound on waiting for acks and deliveries after the\n"
          "                        window [5]\n"
          "  --payload BYTES       size of each message's data value [128]\n"
          "  --threads N           bench threads, one event loop each [2]\n"
          "  --connect-rate N/s    connections started per second [unlimited]\n"
          "  --connect-inflight N  connections in setup at once, all threads [256]\n"
          "  --setup-timeout S     bound on connecting and subscribing [60]\n"
          "  --subs N              fanout [1000], latency [100]: subscribers\n"
          "  --pubs N              fanout, latency: publishers [1]\n"
          "  --window N            unacked publishes per publisher [32; latency 256;\n"
          "                        fewer for payloads over 8 KiB: 256 KiB in flight]\n"
          "  --max-lag N           messages a publisher may be ahead of its subscribers\n"
          "                        (on average for a shared topic) [256, less for big\n"
          "                        payloads]\n"
          "  --pairs N             pairs: topics [1000]\n"
          "  --conns N             conns: connections [10000]\n"
          "  --hold S              conns: seconds to hold them open [5]\n"
          "  --broker-pid PID      read the broker's VmRSS and CPU time from /proc (any\n"
          "                        server process, all its threads; the server itself,\n"
          "                        not a wrapper): adds broker CPU %, CPU per delivery\n"
          "                        and, for conns, RSS and CPU per connection\n"
          "  --rate N/s            latency: publishes per second, all publishers [1000]\n"
          "  --allow-remote        allow a target that is not a loopback address\n"
          "  --help\n"
          "\n"
          "Progress goes to stderr once a second; the result is one JSON line on\n"
          "stdout (with the TLS version and the negotiated extension). Exit status: 0 clean, 1 "
          "messages lost/duplicated/reordered or\n"
          "connection errors, 2 could not run.\n",
          f);
}

static int parse_num(const char *name, const char *s, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && strcmp(end, "/s") == 0)
        end += 2;
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "wsbroker-bench: --%s: expected a number from %g to %g, got \"%s\"\n", name,
                min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_uint(const char *name, const char *s, unsigned min, unsigned max, unsigned *out)
{
    double v;
    if (parse_num(name, s, min, max, &v) < 0)
        return -1;
    if (v != floor(v)) {
        fprintf(stderr, "wsbroker-bench: --%s: expected a whole number, got \"%s\"\n", name, s);
        return -1;
    }
    *out = (unsigned)v;
    return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

/* ws[s]://host[:port][/path] -> e->host, port, hostport, target, addr. */
static int parse_url(opts_t *o, bendpoint_t *e)
{
    const char *u = e->url, *p, *h, *he;
    bool tls;
    if (strncmp(u, "ws://", 5) == 0) {
        h = u + 5;
        tls = false;
    } else if (strncmp(u, "wss://", 6) == 0) {
        h = u + 6;
        tls = true;
    } else {
        fprintf(stderr, "wsbroker-bench: --url must start with ws:// or wss:// (got \"%s\")\n", u);
        return -1;
    }
    if (e != o->ep && tls != o->tls) {
        fprintf(stderr, "wsbroker-bench: every --url must be ws:// or every one wss://\n");
        return -1;
    }
    o->tls = tls;
    if (*h == '[') {
        he = strchr(h, ']');
        if (he == NULL)
            goto bad;
        p = he + 1;
        h++;
    } else {
        he = h + strcspn(h, ":/?");
        p = he;
    }
    if (he == h || (size_t)(he - h) >= sizeof e->host)
        goto bad;
    memcpy(e->host, h, (size_t)(he - h));
    e->host[he - h] = '\0';
    {
        unsigned char a[16];
        e->host_is_ip = inet_pton(AF_INET, e->host, a) == 1 || inet_pton(AF_INET6, e->host, a) == 1;
    }
    e->port = tls ? 443 : 80;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535)
            goto bad;
        e->port = (int)port;
        p = end;
    }
    if (*p != '\0' && *p != '/' && *p != '?')
        goto bad;
    snprintf(e->target, sizeof e->target, "%s%s", *p == '/' ? "" : "/", p);
    snprintf(e->hostport, sizeof e->hostport, strchr(e->host, ':') ? "[%s]:%d" : "%s:%d", e->host,
             e->port);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    char port[8];
    snprintf(port, sizeof port, "%d", e->port);
    int r = getaddrinfo(e->host, port, &hints, &res);
    if (r != 0) {
        fprintf(stderr, "wsbroker-bench: cannot resolve %s: %s\n", e->host, gai_strerror(r));
        return -1;
    }
    memcpy(&e->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (!o->allow_remote && !is_loopback((const struct sockaddr *)&e->addr)) {
        fprintf(stderr,
                "wsbroker-bench: %s is not a loopback address; load tests here target "
                "127.0.0.1/localhost (--allow-remote overrides)\n",
                e->host);
        return -1;
    }
    return 0;
bad:
    fprintf(stderr, "wsbroker-bench: bad --url \"%s\"\n", u);
    return -1;
}

enum {
    O_URL = 256,
    O_DURATION,
    O_WARMUP,
    O_DRAIN,
    O_PAYLOAD,
    O_THREADS,
    O_CRATE,
    O_CINFLIGHT,
    O_SETUP,
    O_SUBS,
    O_PUBS,
    O_WINDOW,
    O_LAG,
    O_PAIRS,
    O_CONNS,
    O_HOLD,
    O_PID,
    O_RATE,
    O_REMOTE,
    O_CAFILE,
    O_INSECURE,
    O_DEFLATE,
    O_HELP,
};

/* Returns 0 to run, 1 after --help or selftest (status in *status), -1 on a
 * bad command line. */
static int opt_parse(opts_t *o, int argc, char **argv, int *status)
{
    static const struct option lo[] = {
        {"url", required_argument, NULL, O_URL},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"drain", required_argument, NULL, O_DRAIN},
        {"payload", required_argument, NULL, O_PAYLOAD},
        {"threads", required_argument, NULL, O_THREADS},
        {"connect-rate", required_argument, NULL, O_CRATE},
        {"connect-inflight", required_argument, NULL, O_CINFLIGHT},
        {"setup-timeout", required_argument, NULL, O_SETUP},
        {"subs", required_argument, NULL, O_SUBS},
        {"pubs", required_argument, NULL, O_PUBS},
        {"window", required_argument, NULL, O_WINDOW},
        {"max-lag", required_argument, NULL, O_LAG},
        {"pairs", required_argument, NULL, O_PAIRS},
        {"conns", required_argument, NULL, O_CONNS},
        {"hold", required_argument, NULL, O_HOLD},
        {"broker-pid", required_argument, NULL, O_PID},
        {"rate", required_argument, NULL, O_RATE},
        {"allow-remote", no_argument, NULL, O_REMOTE},
        {"cafile", required_argument, NULL, O_CAFILE},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"deflate", no_argument, NULL, O_DEFLATE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    unsigned u, subs = 0, window = 0, pid = 0;
    int r = 0, ch;

    memset(o, 0, sizeof *o);
    o->duration = 10;
    o->warmup = 2;
    o->drain = 5;
    o->hold = 5;
    o->setup_timeout = 60;
    o->rate = 1000;
    o->payload = 128;
    o->threads = 2;
    o->pubs = 1;
    o->pairs = 1000;
    o->conns = 10000;
    o->connect_inflight = 256;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        const char *n = ch >= O_URL && ch <= O_HELP ? lo[ch - O_URL].name : "";
        switch (ch) {
        case O_URL:
            if (o->nep == BENCH_MAX_URLS) {
                fprintf(stderr, "wsbroker-bench: at most %d --url\n", BENCH_MAX_URLS);
                return -1;
            }
            o->ep[o->nep++].url = optarg;
            break;
        case O_DURATION:
            r |= parse_num(n, optarg, 0.1, 86400, &o->duration);
            break;
        case O_WARMUP:
            r |= parse_num(n, optarg, 0, 3600, &o->warmup);
            break;
        case O_DRAIN:
            r |= parse_num(n, optarg, 0, 600, &o->drain);
            break;
        case O_PAYLOAD:
            r |= parse_uint(n, optarg, 1, 16u << 20, &u);
            o->payload = u;
            break;
        case O_THREADS:
            r |= parse_uint(n, optarg, 1, 64, &o->threads);
            break;
        case O_CRATE:
            r |= parse_num(n, optarg, 0, 1e7, &o->connect_rate);
            break;
        case O_CINFLIGHT:
            r |= parse_uint(n, optarg, 1, 100000, &o->connect_inflight);
            break;
        case O_SETUP:
            r |= parse_num(n, optarg, 1, 3600, &o->setup_timeout);
            break;
        case O_SUBS:
            r |= parse_uint(n, optarg, 1, 1000000, &subs);
            break;
        case O_PUBS:
            r |= parse_uint(n, optarg, 1, 100000, &o->pubs);
            break;
        case O_WINDOW:
            r |= parse_uint(n, optarg, 1, 1000000, &window);
            break;
        case O_LAG:
            r |= parse_uint(n, optarg, 1, 10000000, &o->max_lag);
            break;
        case O_PAIRS:
            r |= parse_uint(n, optarg, 1, 1000000, &o->pairs);
            break;
        case O_CONNS:
            r |= parse_uint(n, optarg, 1, 1000000, &o->conns);
            break;
        case O_HOLD:
            r |= parse_num(n, optarg, 0, 86400, &o->hold);
            break;
        case O_PID:
            r |= parse_uint(n, optarg, 1, 1u << 30, &pid);
            o->broker_pid = (int)pid;
            break;
        case O_RATE:
            r |= parse_num(n, optarg, 0.001, 1e8, &o->rate);
            break;
        case O_REMOTE:
            o->allow_remote = true;
            break;
        case O_CAFILE:
            o->cafile = optarg;
            break;
        case O_INSECURE:
            o->insecure = true;
            break;
        case O_DEFLATE:
            o->deflate = true;
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            *status = 0;
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (r != 0)
        return -1;
    if (optind != argc - 1) {
        fprintf(stderr, "wsbroker-bench: expected exactly one scenario\n");
        usage(stderr);
        return -1;
    }
    o->name = argv[optind];
    if (strcmp(o->name, "selftest") == 0) {
        *status = selftest_run();
        return 1;
    } else if (strcmp(o->name, "fanout") == 0)
        o->scenario = SC_FANOUT;
    else if (strcmp(o->name, "pairs") == 0)
        o->scenario = SC_PAIRS;
    else if (strcmp(o->name, "conns") == 0)
        o->scenario = SC_CONNS;
    else if (strcmp(o->name, "latency") == 0)
        o->scenario = SC_LATENCY;
    else {
        fprintf(stderr, "wsbroker-bench: unknown scenario \"%s\"\n", o->name);
        return -1;
    }
    o->subs = subs ? subs : o->scenario == SC_LATENCY ? 100 : 1000;
    /* Defaults that keep the run inside a memory budget: about 64 MiB of
     * messages queued towards all subscribers together (broker queues and
     * socket buffers), at most 256 per subscriber, which is also well under
     * the broker's default 8 MiB --max-backlog; and at most 256 KiB of
     * unacked publishes per publisher. A window wider than the lag would
     * never be used. */
    size_t frame = o->payload + 128;
    size_t receivers = o->scenario == SC_PAIRS ? o->pairs : o->subs;
    if (o->max_lag == 0) {
        size_t lag = (64u << 20) / (receivers * frame);
        o->max_lag = lag > 256 ? 256 : lag < 1 ? 1 : (unsigned)lag;
    }
    if (window != 0) {
        o->window = window;
    } else {
        size_t w = o->scenario == SC_LATENCY ? 256 : 32;
        size_t wmax = (256u << 10) / frame;
        if (w > wmax)
            w = wmax;
        if (w > o->max_lag)
            w = o->max_lag;
        o->window = w < 1 ? 1 : (unsigned)w;
    }
    if (o->nep == 0)
        o->ep[o->nep++].url = "ws://127.0.0.1:8080/ws";
    for (unsigned i = 0; i < o->nep; i++)
        if (parse_url(o, &o->ep[i]) < 0)
            return -1;
    return 0;
}

/* ---- Environment ---- */

static int raise_nofile(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) {
        fprintf(stderr,
                "wsbroker-bench: %zu connections need about %zu file descriptors; the limit "
                "is %llu (raise the hard limit: ulimit -Hn)\n",
                need - 64, need, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

static int check_ports(size_t conns)
{
    unsigned lo, hi;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f == NULL)
        return 0;
    int n = fscanf(f, "%u %u", &lo, &hi);
    fclose(f);
    if (n != 2 || hi < lo)
        return 0;
    size_t ports = hi - lo + 1;
    if (conns > ports) {
        fprintf(stderr,
                "wsbroker-bench: %zu connections from one source address need more than the "
                "%zu local ports of net.ipv4.ip_local_port_range (%u-%u)\n",
                conns, ports, lo, hi);
        return -1;
    }
    if (conns > ports / 2)
        fprintf(stderr,
                "wsbroker-bench: note: %zu connections use %zu of %zu local ports; "
                "TIME_WAIT from earlier runs may make connects fail\n",
                conns, conns, ports);
    return 0;
}

/* ---- Watching the threads ---- */

static uint64_t sum_at(const bench_t *b, size_t off)
{
    uint64_t s = 0;
    for (unsigned i = 0; i < b->o.threads; i++)
        s += ctr_get((_Atomic uint64_t *)((char *)&b->th[i].st + off));
    return s;
}

static uint64_t max_at(const bench_t *b, size_t off)
{
    uint64_t m = 0;
    for (unsigned i = 0; i < b->o.threads; i++) {
        uint64_t v = ctr_get((_Atomic uint64_t *)((char *)&b->th[i].st + off));
        if (v > m)
            m = v;
    }
    return m;
}

#define SUM(b, f)   sum_at((b), offsetof(tstats_t, f))
#define MAXOF(b, f) max_at((b), offsetof(tstats_t, f))

static void set_phase(bench_t *b, int ph)
{
    atomic_store_explicit(&b->phase, ph, memory_order_release);
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

typedef struct progress {
    uint64_t next, last_t, last_pub, last_del;
} progress_t;

static void progress(bench_t *b, progress_t *p, const char *what)
{
    uint64_t now = now_ns();
    if (now < p->next)
        return;
    double dt = p->last_t ? (double)(now - p->last_t) / 1e9 : 0;
    uint64_t pub = SUM(b, acked), del = SUM(b, delivered);
    double el = (double)(now - b->t_setup) / 1e9;
    if (b->o.scenario == SC_CONNS ||
        atomic_load_explicit(&b->phase, memory_order_relaxed) == PH_SETUP)
        fprintf(stderr,
                "[%s %6.1fs] %-7s ready %llu/%zu  failed %llu  handshakes %llu  open %llu  "
                "errors %llu\n",
                b->o.name, el, what, (unsigned long long)(SUM(b, subs_ready) + SUM(b, pubs_ready)),
                b->total_conns, (unsigned long long)SUM(b, failed),
                (unsigned long long)SUM(b, handshakes), (unsigned long long)SUM(b, open),
                (unsigned long long)SUM(b, errors));
    else
        fprintf(stderr,
                "[%s %6.1fs] %-7s published/s %.0f  delivered/s %.0f  lost %lld  dup %llu  "
                "reordered %llu  errors %llu  open %llu\n",
                b->o.name, el, what, dt > 0 ? (double)(pub - p->last_pub) / dt : 0,
                dt > 0 ? (double)(del - p->last_del) / dt : 0, (long long)SUM(b, lost),
                (unsigned long long)SUM(b, duplicates), (unsigned long long)SUM(b, reordered),
                (unsigned long long)SUM(b, errors), (unsigned long long)SUM(b, open));
    p->last_t = now;
    p->last_pub = pub;
    p->last_del = del;
    p->next = (p->next ? p->next : now) + PROGRESS_NS;
    if (p->next < now)
        p->next = now + PROGRESS_NS;
}

/* Sleep in short steps until deadline, printing progress, or until done()
 * says the phase is complete. Returns true if done() ended the wait. */
static bool wait_until(bench_t *b, progress_t *p, const char *what, uint64_t deadline,
                       bool (*done)(bench_t *))
{
    for (;;) {
        if (done != NULL && done(b))
            return true;
        uint64_t now = now_ns();
        if (now >= deadline || interrupted)
            return false;
        progress(b, p, what);
        uint64_t left = deadline - now;
        sleep_ns(left < POLL_NS ? left : POLL_NS);
    }
}

static bool setup_done(bench_t *b)
{
    return SUM(b, subs_ready) + SUM(b, pubs_ready) + SUM(b, failed) >= b->total_conns;
}

static bool pubs_done(bench_t *b)
{
    return SUM(b, pubs_done) >= SUM(b, pubs_ready);
}

static bool subs_done(bench_t *b)
{
    return SUM(b, subs_complete) >= SUM(b, subs_ready);
}

static bool all_closed(bench_t *b)
{
    return SUM(b, open) == 0;
}

/* ---- Report ---- */

typedef struct result {
    double setup_s, handshakes_per_s, ready_per_s, window_s, drain_s;
    double bench_cpu_s, broker_cpu_s; /* broker: -1 when /proc could not be read */
    machine_cpu_t machine;            /* in the measured window */
    double close_s;                   /* from PH_CLOSE until every connection was closed */
    double setup_bench_cpu_s, setup_broker_cpu_s;
    long rss_before, rss_after, rss_closed;
    bool ran, setup_timeout, drain_timeout;
    uint64_t not_ready;
    const char *failure;
} result_t;

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* Append to buf (capacity cap, *n bytes used), truncating when full. */
static void append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    va_list ap;
    if (*n >= cap - 1)
        return;
    va_start(ap, fmt);
    int r = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (r > 0)
        *n = *n + (size_t)r < cap - 1 ? *n + (size_t)r : cap - 1;
}

static double us(uint64_t ns)
{
    return round((double)ns / 100.0) / 10.0;
}

static int report(bench_t *b, const result_t *r)
{
    const opts_t *o = &b->o;
    hist_t lat;
    errstats_t err;
    uint64_t expected = 0, errors = 0;
    FILE *f = stdout;

    hist_init(&lat);
    memset(&err, 0, sizeof err);
    for (unsigned i = 0; i < o->threads; i++) {
        hist_merge(&lat, &b->th[i].lat);
        err_merge(&err, &b->th[i].err);
        expected += b->th[i].expected;
    }
    err.n[ERR_SETUP] += r->not_ready;
    for (int k = 0; k < ERR_KINDS; k++)
        errors += err.n[k];
    if (r->not_ready > 0 && err.first[0] == '\0')
        snprintf(err.first, sizeof err.first, "%llu connections not ready after %.0f s",
                 (unsigned long long)r->not_ready, o->setup_timeout);

    uint64_t sent = SUM(b, published), acked = SUM(b, acked), delivered = SUM(b, delivered);
    uint64_t lost = SUM(b, lost), dups = SUM(b, duplicates), reord = SUM(b, reordered);
    uint64_t missing_end = 0, silent = 0;
    for (unsigned i = 0; i < o->threads; i++) {
        missing_end += b->th[i].missing_end;
        silent += b->th[i].silent_subs;
    }
    uint64_t subs = SUM(b, subs_ready), pubs = SUM(b, pubs_ready);
    double win = r->window_s > 0 ? r->window_s : 1;

    fprintf(f, "{\"scenario\":\"%s\",\"date_utc\":", o->name);
    {
        char d[32];
        time_t t = time(NULL);
        strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
        json_str(f, d);
    }
    fprintf(f, ",\"params\":{\"url\":");
    json_str(f, o->ep[0].url);
    if (o->nep > 1) {
        fprintf(f, ",\"urls\":[");
        for (unsigned i = 0; i < o->nep; i++) {
            fputs(i ? "," : "", f);
            json_str(f, o->ep[i].url);
        }
        fputc(']', f);
    }
    fprintf(f, ",\"threads\":%u,\"payload\":%zu", o->threads, o->payload);
    switch (o->scenario) {
    case SC_FANOUT:
        fprintf(f, ",\"subs\":%u,\"pubs\":%u", o->subs, o->pubs);
        break;
    case SC_PAIRS:
        fprintf(f, ",\"pairs\":%u", o->pairs);
        break;
    case SC_CONNS:
        fprintf(f, ",\"conns\":%u,\"hold_s\":%g", o->conns, o->hold);
        break;
    case SC_LATENCY:
        fprintf(f, ",\"subs\":%u,\"pubs\":%u,\"rate\":%g", o->subs, o->pubs, o->rate);
        break;
    }
    if (o->scenario != SC_CONNS)
        fprintf(f, ",\"window\":%u,\"max_lag\":%u,\"duration_s\":%g,\"warmup_s\":%g", o->window,
                o->max_lag, o->duration, o->warmup);
    if (o->connect_rate > 0)
        fprintf(f, ",\"connect_rate\":%g", o->connect_rate);
    fprintf(f, ",\"deflate\":%s", o->deflate ? "true" : "false");
    fprintf(f, "}");

    /* How the connections were made: the first TLS version and negotiated
     * extension seen (every connection of a run goes to one broker). */
    const char *tls_version = "", *ext = "";
    uint64_t deflate_conns = 0, zrx = 0, ztx = 0;
    for (unsigned i = 0; i < o->threads; i++) {
        if (tls_version[0] == '\0')
            tls_version = b->th[i].tls_version;
        if (ext[0] == '\0')
            ext = b->th[i].ext;
        deflate_conns += b->th[i].deflate_conns;
        zrx += b->th[i].compressed_rx;
        ztx += b->th[i].compressed_tx;
    }
    fprintf(f, ",\"tls\":");
    json_str(f, tls_version);
    fprintf(f, ",\"extensions\":");
    json_str(f, ext);
    fprintf(f,
            ",\"deflate_connections\":%llu,\"compressed_received\":%llu,\"compressed_sent\":%llu",
            (unsigned long long)deflate_conns, (unsigned long long)zrx, (unsigned long long)ztx);

    fprintf(f, ",\"connections\":%zu,\"ready\":%llu,\"failed\":%llu", b->total_conns,
            (unsigned long long)(subs + pubs), (unsigned long long)SUM(b, failed));
    fprintf(f, ",\"setup_s\":%.3f,\"handshakes_per_s\":%.0f,\"subscribed_per_s\":%.0f", r->setup_s,
            r->handshakes_per_s, r->ready_per_s);
    fprintf(f, ",\"setup_bench_cpu_s\":%.2f", r->setup_bench_cpu_s);
    if (o->broker_pid && r->setup_broker_cpu_s >= 0) {
        fprintf(f, ",\"setup_broker_cpu_s\":%.2f", r->setup_broker_cpu_s);
        uint64_t hs = SUM(b, handshakes);
        if (hs > 0)
            fprintf(f, ",\"setup_broker_us_per_conn\":%.1f",
                    r->setup_broker_cpu_s * 1e6 / (double)hs);
    }

    if (o->scenario == SC_CONNS) {
        if (o->broker_pid) {
            fprintf(f, ",\"rss_kib_before\":%ld,\"rss_kib_after\":%ld,\"rss_kib_closed\":%ld",
                    r->rss_before, r->rss_after, r->rss_closed);
            if (r->rss_before >= 0 && r->rss_after >= 0 && subs > 0)
                fprintf(f, ",\"per_conn_bytes\":%.0f",
                        (double)(r->rss_after - r->rss_before) * 1024.0 / (double)subs);
        }
    } else {
        fprintf(f, ",\"duration_s\":%.3f,\"drain_s\":%.3f", r->window_s, r->drain_s);
        fprintf(f, ",\"sent\":%llu,\"published\":%llu,\"unacked\":%llu", (unsigned long long)sent,
                (unsigned long long)acked, (unsigned long long)(sent - acked));
        fprintf(f, ",\"publishes_per_s\":%.0f", (double)SUM(b, win_published) / win);
        fprintf(f, ",\"expected\":%llu,\"delivered\":%llu,\"deliveries_per_s\":%.0f",
                (unsigned long long)expected, (unsigned long long)delivered,
                (double)SUM(b, win_delivered) / win);
        fprintf(f, ",\"lost\":%llu,\"missing_at_end\":%llu,\"duplicates\":%llu,\"reordered\":%llu",
                (unsigned long long)lost, (unsigned long long)missing_end, (unsigned long long)dups,
                (unsigned long long)reord);
        fprintf(f, ",\"silent_subscribers\":%llu", (unsigned long long)silent);
        fprintf(f, ",\"latency_us\":{\"samples\":%llu", (unsigned long long)lat.count);
        if (lat.count > 0)
            fprintf(f,
                    ",\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_9\":%.1f,\"max\":%.1f,"
                    "\"mean\":%.1f",
                    us(hist_quantile(&lat, 0.5)), us(hist_quantile(&lat, 0.9)),
                    us(hist_quantile(&lat, 0.99)), us(hist_quantile(&lat, 0.999)), us(lat.max),
                    us(lat.sum / lat.count));
        fprintf(f, "}");
        uint64_t stall = 0, stalls = 0;
        for (unsigned i = 0; i < o->threads; i++) {
            if (b->th[i].stall_max_ns > stall)
                stall = b->th[i].stall_max_ns;
            stalls += b->th[i].stalls_10ms;
        }
        fprintf(f, ",\"loop_stall_max_ms\":%.1f,\"loop_stalls_over_10ms\":%llu",
                (double)stall / 1e6, (unsigned long long)stalls);
        fprintf(f, ",\"bench_cpu_s\":%.2f", r->bench_cpu_s);
        if (o->broker_pid && r->broker_cpu_s >= 0) {
            uint64_t wd = SUM(b, win_delivered);
            fprintf(f, ",\"broker_cpu_s\":%.2f,\"broker_cpu_pct\":%.0f", r->broker_cpu_s,
                    100.0 * r->broker_cpu_s / win);
            if (wd > 0)
                fprintf(f, ",\"broker_us_per_delivery\":%.3f", r->broker_cpu_s * 1e6 / (double)wd);
            fprintf(f, ",\"other_cpu_s\":%.2f",
                    r->machine.process + r->machine.irq - r->bench_cpu_s - r->broker_cpu_s);
        }
        fprintf(f, ",\"process_cpu_s\":%.2f,\"irq_cpu_s\":%.2f,\"steal_cpu_s\":%.2f",
                r->machine.process, r->machine.irq, r->machine.steal);
    }

    fprintf(f, ",\"close_s\":%.3f", r->close_s);
    fprintf(f, ",\"errors\":{\"total\":%llu", (unsigned long long)errors);
    static const char *const kinds[ERR_KINDS] = {
        "connect", "handshake",   "closed_by_broker", "io", "protocol", "broker_error",
        "ack",     "wrong_topic", "setup_timeout",
    };
    for (int k = 0; k < ERR_KINDS; k++)
        if (err.n[k] != 0)
            fprintf(f, ",\"%s\":%llu", kinds[k], (unsigned long long)err.n[k]);
    if (err.close[0].n != 0) {
        fprintf(f, ",\"close_codes\":{");
        for (int i = 0; i < CLOSE_CODES_MAX && err.close[i].n != 0; i++)
            fprintf(f, "%s\"%u\":%llu", i ? "," : "", err.close[i].code,
                    (unsigned long long)err.close[i].n);
        fprintf(f, "}");
    }
    if (err.first[0] != '\0') {
        fprintf(f, ",\"first\":");
        json_str(f, err.first);
    }
    fprintf(f, "}");

    char why[512] = "";
    size_t n = 0;
    int status = 0;
    if (!r->ran) {
        append(why, sizeof why, &n, "%s", r->failure ? r->failure : "the scenario could not run");
        status = 2;
    } else {
        if (interrupted)
            append(why, sizeof why, &n, "interrupted; ");
        if (lost)
            append(why, sizeof why, &n,
                   "%llu messages lost (%llu of them still missing when the drain ended); ",
                   (unsigned long long)lost, (unsigned long long)missing_end);
        if (silent)
            append(why, sizeof why, &n,
                   "%llu subscribers received nothing at all (a second broker process "
                   "listening on the same port?); ",
                   (unsigned long long)silent);
        if (dups)
            append(why, sizeof why, &n, "%llu duplicates; ", (unsigned long long)dups);
        if (reord)
            append(why, sizeof why, &n, "%llu reordered; ", (unsigned long long)reord);
        if (errors)
            append(why, sizeof why, &n, "%llu errors; ", (unsigned long long)errors);
        if (r->drain_timeout)
            append(why, sizeof why, &n, "drain timed out; ");
        if (n >= 2) {
            why[n - 2] = '\0'; /* the last "; " */
            status = 1;
        }
    }
    fprintf(f, ",\"ok\":%s", status == 0 ? "true" : "false");
    if (status != 0) {
        fprintf(f, ",\"failure\":");
        json_str(f, why);
    }
    fprintf(f, "}\n");
    fflush(f);

    if (status == 0)
        fprintf(stderr, "wsbroker-bench: %s: OK\n", o->name);
    else
        fprintf(stderr, "wsbroker-bench: %s: FAILED: %s\n", o->name, why);
    return status;
}

/* ---- TLS ---- */

/* A bench thread's client context (one per thread): TLS 1.2 at least, the
 * broker's certificate checked against --cafile or the system's CA bundle
 * unless --insecure. The bundle file ($SSL_CERT_FILE, else OpenSSL's
 * default, /etc/ssl/certs/ca-certificates.crt on Debian) is read once here;
 * the hashed directory is not used, so that handshakes never touch the
 * file system while they are measured. */
static int make_tls_ctx(bench_t *b, SSL_CTX **out)
{
    const opts_t *o = &b->o;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return -1;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    const char *file = o->cafile != NULL ? o->cafile : getenv(X509_get_default_cert_file_env());
    if (file == NULL || file[0] == '\0')
        file = X509_get_default_cert_file();
    if (SSL_CTX_load_verify_locations(ctx, file, NULL) != 1) {
        char why[160];
        ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
        fprintf(stderr, "wsbroker-bench: cannot load the CA certificates in %s: %s\n", file, why);
        SSL_CTX_free(ctx);
        return -1;
    }
    SSL_CTX_set_verify(ctx, o->insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
    *out = ctx;
    return 0;
}

/* ---- Run ---- */

/* CPU seconds between two proc_cpu_s() readings of the broker, -1 if either
 * failed (the broker exited, or its /proc entry is not readable). */
static double cpu_delta(double before, double after)
{
    return before < 0 || after < 0 ? -1 : after - before;
}

static void run(bench_t *b, result_t *r)
{
    const opts_t *o = &b->o;
    progress_t pg = {0};

    if (o->broker_pid && o->scenario == SC_CONNS)
        r->rss_before = proc_rss_kib(o->broker_pid);
    double cpu_setup = self_cpu_s();
    double bcpu_setup = o->broker_pid ? proc_cpu_s(o->broker_pid) : 0;
    b->t_setup = now_ns();
    set_phase(b, PH_SETUP);
    uint64_t setup_end = b->t_setup + (uint64_t)(o->setup_timeout * 1e9);
    bool ok = wait_until(b, &pg, "setup", setup_end, setup_done);
    uint64_t t = now_ns();
    uint64_t ready = SUM(b, subs_ready) + SUM(b, pubs_ready);
    r->setup_s = (double)(t - b->t_setup) / 1e9;
    r->setup_bench_cpu_s = self_cpu_s() - cpu_setup;
    if (o->broker_pid)
        r->setup_broker_cpu_s = cpu_delta(bcpu_setup, proc_cpu_s(o->broker_pid));
    r->setup_timeout = !ok && !interrupted;
    r->not_ready = b->total_conns - ready - SUM(b, failed);
    uint64_t last_hs = MAXOF(b, last_handshake_ns), last_ready = MAXOF(b, last_ready_ns);
    if (last_hs > b->t_setup)
        r->handshakes_per_s = (double)SUM(b, handshakes) / ((double)(last_hs - b->t_setup) / 1e9);
    if (last_ready > b->t_setup)
        r->ready_per_s = (double)ready / ((double)(last_ready - b->t_setup) / 1e9);
    fprintf(stderr, "[%s] setup: %llu/%zu ready in %.2f s, %.0f handshakes/s%s\n", o->name,
            (unsigned long long)ready, b->total_conns, r->setup_s, r->handshakes_per_s,
            r->setup_timeout ? " (timed out)" : "");

    if (interrupted) {
        r->failure = "interrupted during setup";
        return;
    }
    if (o->scenario == SC_CONNS) {
        if (ready == 0) {
            r->failure = "no connection could be set up";
            return;
        }
        r->ran = true;
        set_phase(b, PH_HOLD);
        uint64_t hold_end = now_ns() + (uint64_t)(o->hold * 1e9);
        if (o->broker_pid) {
            uint64_t settle = now_ns() + (uint64_t)(RSS_SETTLE_S * 1e9);
            wait_until(b, &pg, "hold", settle < hold_end ? settle : hold_end, NULL);
            r->rss_after = proc_rss_kib(o->broker_pid);
        }
        wait_until(b, &pg, "hold", hold_end, NULL);
        return;
    }
    b->subs_ready = SUM(b, subs_ready);
    if (b->subs_ready == 0 || SUM(b, pubs_ready) == 0) {
        r->failure = "no subscriber or no publisher could be set up";
        return;
    }
    r->ran = true;
    b->t_run = now_ns();
    b->t_measure = b->t_run + (uint64_t)(o->warmup * 1e9);
    b->t_end = b->t_measure + (uint64_t)(o->duration * 1e9);
    set_phase(b, PH_RUN);
    double cpu0 = 0, bcpu0 = 0;
    machine_cpu_t m0 = {0, 0, 0}, m1 = {0, 0, 0};
    wait_until(b, &pg, "warmup", b->t_measure, NULL);
    if (!interrupted) {
        cpu0 = self_cpu_s();
        bcpu0 = o->broker_pid ? proc_cpu_s(o->broker_pid) : 0;
        machine_cpu(&m0);
        wait_until(b, &pg, "measure", b->t_end, NULL);
    }
    set_phase(b, PH_STOP);
    t = now_ns();
    uint64_t window_end = t < b->t_end ? t : b->t_end;
    r->window_s = window_end > b->t_measure ? (double)(window_end - b->t_measure) / 1e9 : 0;
    r->bench_cpu_s = self_cpu_s() - cpu0;
    machine_cpu(&m1);
    r->machine.process = m1.process - m0.process;
    r->machine.irq = m1.irq - m0.irq;
    r->machine.steal = m1.steal - m0.steal;
    if (o->broker_pid)
        r->broker_cpu_s = cpu_delta(bcpu0, proc_cpu_s(o->broker_pid));

    uint64_t drain_end = t + (uint64_t)(o->drain * 1e9);
    bool drained = wait_until(b, &pg, "stop", drain_end, pubs_done);
    set_phase(b, PH_DRAIN);
    drained = wait_until(b, &pg, "drain", drain_end, subs_done) && drained;
    r->drain_timeout = !drained && !interrupted;
    r->drain_s = (double)(now_ns() - t) / 1e9;
    if (r->drain_timeout)
        fprintf(stderr, "[%s] drain: not every ack or delivery arrived within %.1f s\n", o->name,
                o->drain);
}

int main(int argc, char **argv)
{
    static bench_t bench;
    bench_t *b = &bench;
    result_t res = {.rss_before = -1, .rss_after = -1, .rss_closed = -1};
    int status = 2;

    signal(SIGPIPE, SIG_IGN);
    int r = opt_parse(&b->o, argc, argv, &status);
    if (r != 0)
        return r > 0 ? status : 2;
    if (raise_nofile(b->o.scenario == SC_CONNS   ? (size_t)b->o.conns + 64
                     : b->o.scenario == SC_PAIRS ? 2 * (size_t)b->o.pairs + 64
                                                 : (size_t)b->o.subs + b->o.pubs + 64) < 0)
        return 2;
    if (check_ports(b->o.scenario == SC_CONNS   ? b->o.conns
                    : b->o.scenario == SC_PAIRS ? 2 * (size_t)b->o.pairs
                                                : (size_t)b->o.subs + b->o.pubs) < 0)
        return 2;
    if (b->o.broker_pid && proc_rss_kib(b->o.broker_pid) < 0) {
        fprintf(stderr, "wsbroker-bench: cannot read /proc/%d/status\n", b->o.broker_pid);
        return 2;
    }
    snprintf(b->runid, sizeof b->runid, "%08x", (unsigned)(getpid() ^ (now_ns() >> 10)));
    if (scen_plan(b) < 0)
        return 2;
    for (unsigned i = 0; b->o.tls && i < b->o.threads; i++)
        if (make_tls_ctx(b, &b->th[i].tls_ctx) < 0)
            return 2;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fprintf(stderr, "[%s] %zu connections (%zu subscribers, %zu publishers) to %s, %u threads\n",
            b->o.name, b->total_conns, b->total_subs, b->total_pubs, b->o.ep[0].url, b->o.threads);
    for (unsigned i = 0; i < b->o.threads; i++) {
        if (thr_init(&b->th[i]) < 0) {
            fprintf(stderr, "wsbroker-bench: cannot set up thread %u\n", i);
            return 2;
        }
    }
    for (unsigned i = 0; i < b->o.threads; i++) {
        if (uv_thread_create(&b->th[i].tid, thr_main, &b->th[i]) != 0) {
            fprintf(stderr, "wsbroker-bench: cannot start thread %u\n", i);
            return 2;
        }
    }

    run(b, &res);

    progress_t pg = {0};
    set_phase(b, PH_CLOSE);
    uint64_t t_close = now_ns();
    if (!wait_until(b, &pg, "close", t_close + (uint64_t)(CLOSE_WAIT_S * 1e9), all_closed))
        fprintf(stderr, "[%s] close: %llu connections still open after %.0f s, dropping them\n",
                b->o.name, (unsigned long long)SUM(b, open), CLOSE_WAIT_S);
    res.close_s = (double)(now_ns() - t_close) / 1e9;
    set_phase(b, PH_EXIT);
    for (unsigned i = 0; i < b->o.threads; i++)
        uv_thread_join(&b->th[i].tid);
    if (b->o.scenario == SC_CONNS && b->o.broker_pid && res.ran) {
        sleep_ns((uint64_t)(RSS_SETTLE_S * 1e9));
        res.rss_closed = proc_rss_kib(b->o.broker_pid);
    }
    status = report(b, &res);
    for (unsigned i = 0; i < b->o.threads; i++) {
        SSL_CTX_free(b->th[i].tls_ctx);
        thr_free(&b->th[i]);
    }
    free(b->th);
    free(b->topics);
    return status;
}
