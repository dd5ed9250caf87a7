/*
 * soak.c - the soak test's main program: configuration, the run's phases,
 * the final audit against /metrics, the RSS criterion and the summary.
 *
 *   ramp   long-lived subscribers connect (at most 2000/s, 256 in the
 *          handshake at once) while everything else already runs
 *   load   until --seconds: publishing, churn, garbage, vanishing, mute
 *          and slow consumers; RSS and /metrics sampled every second
 *   drain  publishing stops, churners close with a Close handshake, every
 *          publish is confirmed, every subscriber must catch up
 *   audit  /metrics must match what the clients know exactly: open
 *          connections and subscriptions, publishes, close codes sent,
 *          ping timeouts, slow-consumer closes, handshake rejects, topics
 *   term   SIGTERM: every remaining client gets Close 1001 "server shutting
 *          down", and the broker exits with status 0
 *
 * Exit status 0 only if nothing was violated (docs/SOAK.md).
 */
#define _GNU_SOURCE
#include "soak.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef WSBROKER_BIN
#error "WSBROKER_BIN must name the broker executable"
#endif
#ifndef SOAK_SANITIZE
#define SOAK_SANITIZE ""
#endif

soak_cfg_t cfg;
stats_t st;
int phase;
int64_t t_load0;
metrics_t last_metrics;
uint64_t grng;

#define MAX_DETAILS 40
#define MAX_SAMPLES 100000

static long rss[MAX_SAMPLES];      /* KiB, one per second from t_load0; -1 missing */
static int64_t stall[MAX_SAMPLES]; /* longest soak loop iteration in that second, ms */
static int nrss;
static int64_t t_begin, t_ramp_done;
static uint32_t peak_conns;
static int64_t loop_max_ms; /* longest loop iteration since the last sample */

/* Recent long iterations of the test's own loop (its clients read nothing
 * meanwhile). */
#define NSTALLS 64
static struct {
    int64_t from, to;
} stalls[NSTALLS];
static unsigned nstalls;

bool client_stalled(int64_t since, int64_t min_ms)
{
    for (unsigned i = 0; i < NSTALLS && i < nstalls; i++)
        if (stalls[i].to >= since && stalls[i].to - stalls[i].from >= min_ms)
            return true;
    return false;
}

/* ---- small helpers ---- */

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return n == 0 ? 0 : (uint32_t)(rng_next(s) % n);
}

double rng_range(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

static double elapsed(void)
{
    return (double)(now_ms() - t_begin) / 1000.0;
}

static void violation_v(bool always, const char *fmt, va_list ap)
{
    st.violations++;
    if (st.violations > MAX_DETAILS && !always) {
        if (st.violations == MAX_DETAILS + 1)
            fprintf(stderr, "soak: [%.1fs] more violations follow; only counted from here\n",
                    elapsed());
        return;
    }
    fprintf(stderr, "soak: [%.1fs] VIOLATION: ", elapsed());
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void violation(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    violation_v(false, fmt, ap);
    va_end(ap);
}

void violation_major(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    violation_v(true, fmt, ap);
    va_end(ap);
}

void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("soak: ");
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* ---- configuration ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: wsbroker-soak [OPTION]...\n"
            "Soak test of the real broker (docs/SOAK.md). Every option has an environment\n"
            "variable: --seconds is SOAK_SECONDS, --conns SOAK_CONNS, ...; options win.\n"
            "\n"
            "  --long              the long form: 600 s, 10000 connections, 400 publishes/s,\n"
            "                      500 churners/s, heartbeat 5 s (SOAK_LONG=1)\n"
            "  --seconds S         load phase, ramp-up included (default 45)\n"
            "  --conns N           connections open at once, all roles (default 2000)\n"
            "  --rate R            publishes per second, all publishers (default 1000)\n"
            "  --churn C           churning subscribers opened per second (default 500)\n"
            "  --garbage G         garbage and vanishing connections per second (default 60)\n"
            "  --workers W         broker worker threads (default 2)\n"
            "  --slow-consumer P   close (default) or drop: the broker's policy under test\n"
            "  --seed N            random seed (default: from the clock, printed)\n"
            "  --broker PATH       broker executable (default: the one built with this test)\n"
            "  --log PATH          keep the broker's output there\n"
            "  --rss-check on|off  enforce the RSS criterion (default: on, off under sanitizers)\n"
            "  --rss-tol-mib X     RSS tolerance in MiB (default 1)\n"
            "  --rss-tol-pct P     ... or P %% of the baseline, if larger (default 2)\n"
            "  --warmup S          seconds of load before the RSS baseline (default: 1/3)\n"
            "  --ping-interval S   the broker's --ping-interval (default 3; 5 in the long form)\n"
            "  --ping-timeout S    the broker's --ping-timeout (default 3; 5 in the long form)\n"
            "  --race N            instead of the soak: N rounds of the unsubscribe/Close\n"
            "                      after a publish ack check (race.c)\n"
            "Sanitizer builds scale connections and rates down and stretch time bounds.\n");
}

static double num(const char *name, const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !isfinite(d) || d < 0) {
        fprintf(stderr, "wsbroker-soak: bad value '%s' for %s\n", v, name);
        exit(2);
    }
    return d;
}

enum {
    O_LONG = 256,
    O_SECONDS,
    O_CONNS,
    O_RATE,
    O_CHURN,
    O_GARBAGE,
    O_WORKERS,
    O_SLOW,
    O_SEED,
    O_BROKER,
    O_LOG,
    O_RSS_CHECK,
    O_RSS_MIB,
    O_RSS_PCT,
    O_WARMUP,
    O_RACE,
    O_PING_INTERVAL,
    O_PING_TIMEOUT,
    O_HELP,
};

static const struct {
    int opt;
    const char *flag, *env;
} opts[] = {
    {O_LONG, "long", "SOAK_LONG"},
    {O_SECONDS, "seconds", "SOAK_SECONDS"},
    {O_CONNS, "conns", "SOAK_CONNS"},
    {O_RATE, "rate", "SOAK_RATE"},
    {O_CHURN, "churn", "SOAK_CHURN"},
    {O_GARBAGE, "garbage", "SOAK_GARBAGE"},
    {O_WORKERS, "workers", "SOAK_WORKERS"},
    {O_SLOW, "slow-consumer", "SOAK_SLOW_CONSUMER"},
    {O_SEED, "seed", "SOAK_SEED"},
    {O_BROKER, "broker", "SOAK_BROKER"},
    {O_LOG, "log", "SOAK_LOG"},
    {O_RSS_CHECK, "rss-check", "SOAK_RSS_CHECK"},
    {O_RSS_MIB, "rss-tol-mib", "SOAK_RSS_TOL_MIB"},
    {O_RSS_PCT, "rss-tol-pct", "SOAK_RSS_TOL_PCT"},
    {O_WARMUP, "warmup", "SOAK_WARMUP"},
    {O_RACE, "race", "SOAK_RACE"},
    {O_PING_INTERVAL, "ping-interval", "SOAK_PING_INTERVAL"},
    {O_PING_TIMEOUT, "ping-timeout", "SOAK_PING_TIMEOUT"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void apply(int opt, const char *name, const char *v)
{
    switch (opt) {
    case O_LONG:
        if (v == NULL || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0) {
            cfg.seconds = 600;
            cfg.conns = 10000;
            cfg.rate = 400;
            cfg.churn = 500;
            cfg.ping_interval = 5;
            cfg.ping_timeout = 5;
        }
        break;
    case O_SECONDS:
        cfg.seconds = num(name, v);
        break;
    case O_CONNS:
        cfg.conns = (int)num(name, v);
        break;
    case O_RATE:
        cfg.rate = num(name, v);
        break;
    case O_CHURN:
        cfg.churn = num(name, v);
        break;
    case O_GARBAGE:
        cfg.garbage = num(name, v);
        break;
    case O_WORKERS:
        cfg.workers = (int)num(name, v);
        break;
    case O_SLOW:
        if (strcmp(v, "close") != 0 && strcmp(v, "drop") != 0) {
            fprintf(stderr, "wsbroker-soak: %s must be close or drop\n", name);
            exit(2);
        }
        cfg.slow_drop = strcmp(v, "drop") == 0;
        break;
    case O_SEED:
        cfg.seed = (uint64_t)num(name, v);
        break;
    case O_BROKER:
        cfg.broker = v;
        break;
    case O_LOG:
        cfg.log_path = v;
        break;
    case O_RSS_CHECK:
        cfg.rss_check = strcmp(v, "on") == 0 || strcmp(v, "1") == 0;
        break;
    case O_RSS_MIB:
        cfg.rss_tol_mib = num(name, v);
        break;
    case O_RSS_PCT:
        cfg.rss_tol_pct = num(name, v);
        break;
    case O_WARMUP:
        cfg.warmup = num(name, v);
        break;
    case O_RACE:
        cfg.race = (int)num(name, v);
        break;
    case O_PING_INTERVAL:
        cfg.ping_interval = num(name, v);
        break;
    case O_PING_TIMEOUT:
        cfg.ping_timeout = num(name, v);
        break;
    default:
        break;
    }
}

static void configure(int argc, char **argv)
{
    cfg.sanitizer = SOAK_SANITIZE;
    cfg.seconds = 45;
    cfg.conns = 2000;
    cfg.rate = 1000;
    cfg.churn = 500;
    cfg.garbage = 60;
    cfg.slack = 1;
    cfg.rss_check = 1;
    if (strcmp(cfg.sanitizer, "address") == 0) {
        cfg.conns = 800;
        cfg.rate = 300;
        cfg.churn = 100;
        cfg.garbage = 20;
        cfg.slack = 2;
        cfg.rss_check = 0;
    } else if (strcmp(cfg.sanitizer, "thread") == 0) {
        cfg.conns = 500;
        cfg.rate = 150;
        cfg.churn = 60;
        cfg.garbage = 12;
        cfg.slack = 3;
        cfg.rss_check = 0;
    }
    cfg.workers = 2;
    cfg.broker = WSBROKER_BIN;
    cfg.rss_tol_mib = 1.0;
    cfg.rss_tol_pct = 2;
    cfg.ping_interval = 3;
    cfg.ping_timeout = 3;
    cfg.handshake_timeout = 2;
    cfg.close_timeout = 2;
    cfg.max_message = 64 * 1024;
    cfg.max_backlog = 1024 * 1024;
    cfg.srcaddrs = 8;
    cfg.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);

    /* --long first, so that explicit settings win over it. */
    const char *lv = getenv("SOAK_LONG");
    if (lv != NULL)
        apply(O_LONG, "SOAK_LONG", lv);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--long") == 0)
            apply(O_LONG, "--long", NULL);
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v != NULL && opts[i].opt != O_LONG)
            apply(opts[i].opt, opts[i].env, v);
    }
    struct option lo[NOPTS + 2];
    for (size_t i = 0; i < NOPTS; i++)
        lo[i] =
            (struct option){opts[i].flag, opts[i].opt == O_LONG ? no_argument : required_argument,
                            NULL, opts[i].opt};
    lo[NOPTS] = (struct option){"help", no_argument, NULL, O_HELP};
    lo[NOPTS + 1] = (struct option){NULL, 0, NULL, 0};
    int o;
    while ((o = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (o == O_HELP) {
            usage(stdout);
            exit(0);
        }
        if (o == '?') {
            usage(stderr);
            exit(2);
        }
        if (o == O_LONG)
            continue;
        for (size_t i = 0; i < NOPTS; i++)
            if (opts[i].opt == o)
                apply(o, opts[i].flag, optarg);
    }
    if (optind < argc) {
        usage(stderr);
        exit(2);
    }
    if (cfg.conns < 100 || cfg.seconds < 20 || cfg.workers < 1 || cfg.rate < 1) {
        fprintf(stderr, "wsbroker-soak: need --conns >= 100, --seconds >= 20, --rate >= 1\n");
        exit(2);
    }
    if (cfg.warmup <= 0)
        cfg.warmup = cfg.seconds / 3;
    grng = cfg.seed;
}

/* ---- the audit ---- */

typedef struct tally {
    uint32_t ws, subs;
} tally_t;

static void tally_cb(conn_t *c, void *arg)
{
    tally_t *t = arg;
    if (c->state == CS_OPEN && (c->role == R_SUB || c->role == R_PUB || c->role == R_PUBN))
        t->ws++;
    if (c->role == R_SUB)
        for (uint32_t i = 0; i < c->nsubs; i++)
            t->subs += c->subs[i].state == SS_ACTIVE;
}

/* Compare a /metrics snapshot with what the clients know. Returns the
 * number of mismatches; report: print them as violations. */
static int audit(const metrics_t *m, bool report)
{
    int bad = 0;
    tally_t t = {0, 0};
    conns_each(tally_cb, &t);
    uint32_t used = 0;
    for (uint32_t i = 0; i < ntopics; i++)
        used += topics[i].sent > 0;
#define EXPECT(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            bad++;                                                                                 \
            if (report)                                                                            \
                violation_major(__VA_ARGS__);                                                      \
        }                                                                                          \
    } while (0)
    EXPECT(m->conns_open == t.ws,
           "audit: broker reports %.0f WebSocket connections open, the clients hold %u",
           m->conns_open, t.ws);
    EXPECT(m->tcp_open == t.ws + 1,
           "audit: broker reports %.0f TCP connections open, the clients hold %u (+1 for "
           "/metrics)",
           m->tcp_open, t.ws);
    EXPECT(m->subscriptions == t.subs,
           "audit: broker reports %.0f subscriptions, the clients hold %u", m->subscriptions,
           t.subs);
    EXPECT(m->published == (double)st.confirmed,
           "audit: broker counted %.0f publishes, the clients had %llu confirmed", m->published,
           (unsigned long long)st.confirmed);
    EXPECT(m->topics == used, "audit: broker has %.0f topics, the clients published to %u",
           m->topics, used);
    EXPECT(m->ping_timeouts == (double)(st.mute_closed + st.stall_timeouts),
           "audit: broker counted %.0f ping timeouts, %llu mute clients were closed for it (and "
           "%llu clients right after the test stalled)",
           m->ping_timeouts, (unsigned long long)st.mute_closed,
           (unsigned long long)st.stall_timeouts);
    if (cfg.slow_drop) {
        EXPECT(m->slow_closes == 0, "audit: %.0f slow-consumer closes under --slow-consumer drop",
               m->slow_closes);
        EXPECT(st.slow_cycles == 0 || m->slow_drops > 0,
               "audit: %llu slow consumers but no message dropped",
               (unsigned long long)st.slow_cycles);
    } else {
        EXPECT(m->slow_closes == (double)(st.slow_closed_1008 + st.slow_closed_eof),
               "audit: broker counted %.0f slow-consumer closes, the slow consumers saw %llu "
               "(%llu Close 1008, %llu closed at --close-timeout)",
               m->slow_closes, (unsigned long long)(st.slow_closed_1008 + st.slow_closed_eof),
               (unsigned long long)st.slow_closed_1008, (unsigned long long)st.slow_closed_eof);
    }
    EXPECT(m->handshake_rejects == (double)st.expect_rejects,
           "audit: broker counted %.0f handshake rejects, expected %llu", m->handshake_rejects,
           (unsigned long long)st.expect_rejects);
    EXPECT(m->http_requests == (double)st.expect_plain,
           "audit: broker counted %.0f plain HTTP requests, expected %llu", m->http_requests,
           (unsigned long long)st.expect_plain);
    EXPECT(m->delivered >= (double)st.deliveries,
           "audit: broker counted %.0f deliveries, the clients received %llu", m->delivered,
           (unsigned long long)st.deliveries);
    for (int i = 0; i < 16; i++) {
        double want = (double)st.close_rcvd[1000 + i] + (i == 8 ? (double)st.slow_closed_eof : 0);
        EXPECT(m->closes_sent[i] == want,
               "audit: broker counted %.0f Close frames with code %d sent, the clients account "
               "for %.0f",
               m->closes_sent[i], 1000 + i, want);
    }
#undef EXPECT
    return bad;
}

/* ---- RSS ---- */

static double mib(long kib)
{
    return (double)kib / 1024.0;
}

static long max_rss(int from, int to)
{
    long m = -1;
    for (int i = from < 0 ? 0 : from; i <= to && i < nrss; i++)
        if (rss[i] > m)
            m = rss[i];
    return m;
}

/* A second in which the soak process itself stalled (its clients did not
 * read): the broker rightly queues output then, and glibc keeps the high
 * water mark. */
#define STALL_MS 200

static bool disturbed(int i)
{
    return stall[i] >= STALL_MS || (i > 0 && stall[i - 1] >= STALL_MS);
}

/* The criterion (docs/SOAK.md): baseline B = max RSS over the 5 s ending at
 * the warm-up W; final F = max RSS over the second half of the load phase
 * (not before W). The RSS increases between consecutive samples after W in
 * seconds when the soak process stalled for STALL_MS or more (or the second
 * after) are excused, E. Pass if F - B - E <= max(tol_mib, tol_pct % of B).
 * The least-squares slope after W is printed too. */
static bool rss_verdict(char *out, size_t cap)
{
    int load = (int)cfg.seconds;
    int w = (int)ceil(cfg.warmup);
    int ramp = t_ramp_done > 0 ? (int)((t_ramp_done - t_load0 + 999) / 1000) : load;
    if (w < ramp + 5)
        w = ramp + 5;
    int half = load / 2 > w ? load / 2 : w;
    if (w >= load - 5 || nrss < load) {
        snprintf(out, cap, "rss: not judged (warm-up %d s leaves too little of a %d s run)", w,
                 load);
        return !cfg.rss_check;
    }
    long b = max_rss(w - 5, w), f = max_rss(half, load - 1);
    double tol = cfg.rss_tol_mib;
    if (mib(b) * cfg.rss_tol_pct / 100.0 > tol)
        tol = mib(b) * cfg.rss_tol_pct / 100.0;
    long excused = 0;
    int nstall = 0;
    for (int i = w + 1; i < load && i < nrss; i++) {
        nstall += stall[i] >= STALL_MS;
        if (disturbed(i) && rss[i] > rss[i - 1] && rss[i - 1] >= 0)
            excused += rss[i] - rss[i - 1];
    }
    double growth = mib(f) - mib(b) - mib(excused);
    if (2 * nstall > load - w) {
        snprintf(out, cap,
                 "rss: not judged: the soak client stalled >= %d ms in %d of the %d s after the "
                 "warm-up (machine overloaded)",
                 STALL_MS, nstall, load - w - 1);
        return !cfg.rss_check;
    }
    /* Slope over [w, load). */
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    for (int i = w; i < load && i < nrss; i++) {
        if (rss[i] < 0)
            continue;
        sx += i;
        sy += (double)rss[i];
        sxx += (double)i * i;
        sxy += (double)i * (double)rss[i];
        n++;
    }
    double slope = n > 1 ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0; /* KiB/s */
    bool ok = growth <= tol;
    snprintf(out, cap,
             "rss: baseline %.2f MiB (max over %d-%d s), final %.2f MiB (max over %d-%d s), "
             "excused %.2f MiB (%d s with the soak client stalled >= %d ms), growth %+.2f MiB, "
             "tolerance %.2f MiB, slope after warm-up %+.1f KiB/min: %s%s",
             mib(b), w - 5, w, mib(f), half, load - 1, mib(excused), nstall, STALL_MS, growth, tol,
             slope * 60, ok ? "flat" : "GROWING",
             cfg.rss_check ? "" : " (not enforced in this build)");
    return ok || !cfg.rss_check;
}

/* ---- progress ---- */

static uint64_t last_deliveries, last_published;

static void sample(void)
{
    int64_t now = now_ms();
    long kib = broker_rss_kib();
    if (phase <= PH_DRAIN && t_load0 > 0) {
        int i = (int)((now - t_load0) / 1000);
        while (nrss <= i && nrss < MAX_SAMPLES)
            rss[nrss++] = -1;
        if (i >= 0 && i < MAX_SAMPLES && rss[i] < 0)
            rss[i] = kib;
        if (i >= 0 && i < MAX_SAMPLES && loop_max_ms > stall[i])
            stall[i] = loop_max_ms;
    }
    if (live_total > peak_conns)
        peak_conns = live_total;
    static const char *const names[] = {"ramp", "load", "drain", "audit", "term", "done"};
    printf(
        "soak: t=%5.1fs %-5s conns %5u (sub %u churn %u pub %u other %u) | deliveries %llu "
        "(+%llu/s) publishes %llu (+%llu/s) | broker: %.0f ws open, rss %.1f MiB | loop max %lld "
        "ms | violations %llu\n",
        elapsed(), names[phase], live_total, live_by_role[R_SUB], live_by_role[R_CHURN],
        live_by_role[R_PUB] + live_by_role[R_PUBN] + live_by_role[R_PUBC],
        live_total - live_by_role[R_SUB] - live_by_role[R_CHURN] - live_by_role[R_PUB] -
            live_by_role[R_PUBN] - live_by_role[R_PUBC],
        (unsigned long long)st.deliveries, (unsigned long long)(st.deliveries - last_deliveries),
        (unsigned long long)st.published, (unsigned long long)(st.published - last_published),
        last_metrics.conns_open, mib(kib), (long long)loop_max_ms,
        (unsigned long long)st.violations);
    loop_max_ms = 0;
    fflush(stdout);
    last_deliveries = st.deliveries;
    last_published = st.published;
}

/* ---- end of run ---- */

typedef struct miss {
    uint64_t n;
    bool report;
} miss_t;

static void miss_cb(conn_t *c, void *arg)
{
    miss_t *m = arg;
    if ((c->flags & F_CHECKED) && c->state == CS_OPEN)
        m->n += ledger_missing(c, m->report);
}

static uint64_t missing_total(bool report)
{
    miss_t m = {0, report};
    conns_each(miss_cb, &m);
    return m.n;
}

static void left_cb(conn_t *c, void *arg)
{
    int *n = arg;
    if ((*n)++ < 10)
        violation("%s #%u still open (state %d, flags 0x%x, %u requests outstanding)",
                  role_name(c->role), c->slot, c->state, c->flags, c->rq_len);
}

static const char *describe(int status, char *buf, size_t cap)
{
    if (status == -1)
        snprintf(buf, cap, "did not exit (killed)");
    else if (WIFEXITED(status))
        snprintf(buf, cap, "exit status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "wait status 0x%x", status);
    return buf;
}

static void summary(int status, bool rss_ok, const char *rss_line)
{
    char buf[64], closes[1024] = "", http[512] = "", series[4096] = "";
    size_t o = 0;
    for (int code = 0; code < 5000; code++)
        if (st.close_rcvd[code] > 0)
            o += (size_t)snprintf(closes + o, sizeof(closes) - o, "%s%d:%llu", o ? "," : "", code,
                                  (unsigned long long)st.close_rcvd[code]);
    if (st.close_other > 0)
        snprintf(closes + o, sizeof(closes) - o, "%sother:%llu", o ? "," : "",
                 (unsigned long long)st.close_other);
    o = 0;
    for (int s = 0; s < 600; s++)
        if (st.http_status[s] > 0)
            o += (size_t)snprintf(http + o, sizeof(http) - o, "%s%d:%llu", o ? "," : "", s,
                                  (unsigned long long)st.http_status[s]);
    int step = (int)cfg.seconds / 20 > 0 ? (int)cfg.seconds / 20 : 1;
    o = 0;
    for (int i = 0; i < nrss && o < sizeof(series) - 32; i += step)
        if (rss[i] >= 0)
            o += (size_t)snprintf(series + o, sizeof(series) - o, "%s%d:%.1f", o ? "," : "", i,
                                  mib(rss[i]));
    if (nrss > 0 && rss[nrss - 1] >= 0 && o < sizeof(series) - 32)
        snprintf(series + o, sizeof(series) - o, "%s%d:%.1f", o ? "," : "", nrss - 1,
                 mib(rss[nrss - 1]));
    bool pass = st.violations == 0 && rss_ok;
    printf("soak: garbage by kind:");
    for (uint32_t k = 0; k < roles_garbage_kinds(); k++)
        printf(" %s=%llu", roles_garbage_name(k), (unsigned long long)st.gk_done[k]);
    printf("\nsoak: vanished by kind:");
    for (uint32_t k = 0; k < roles_vanish_kinds(); k++)
        printf(" %s=%llu", roles_vanish_name(k), (unsigned long long)st.vk_done[k]);
    printf("\nsoak: %s\n", rss_line);
    printf("soak-summary: result=%s build=%s seconds=%.0f wall=%.1fs conns=%d peak_open=%u "
           "tcp_opened=%llu ws_opened=%llu churned=%llu publishes=%llu confirmed=%llu "
           "deliveries=%llu losses=%llu(at_unsubscribe_or_close=%llu) duplicates=%llu "
           "reorders=%llu strays=%llu corrupt=%llu "
           "slow_consumers=%llu(close1008=%llu,closed_at_timeout=%llu,gaps=%llu) mute=%llu "
           "stall_timeouts=%llu trickle_late=%llu late_requests=%llu graces=%llu "
           "garbage=%llu vanished=%llu closes={%s} http={%s} rss_mib={%s} broker=\"%s\" "
           "violations=%llu(of_them_losses=%llu)\n",
           pass ? "PASS" : "FAIL", cfg.sanitizer[0] ? cfg.sanitizer : "plain", cfg.seconds,
           elapsed(), cfg.conns, peak_conns, (unsigned long long)st.tcp_opened,
           (unsigned long long)st.ws_opened, (unsigned long long)st.churned,
           (unsigned long long)st.published, (unsigned long long)st.confirmed,
           (unsigned long long)st.deliveries, (unsigned long long)st.losses,
           (unsigned long long)st.losses_at_end, (unsigned long long)st.duplicates,
           (unsigned long long)st.reorders, (unsigned long long)st.strays,
           (unsigned long long)st.corrupt, (unsigned long long)st.slow_cycles,
           (unsigned long long)st.slow_closed_1008, (unsigned long long)st.slow_closed_eof,
           (unsigned long long)st.slow_gaps, (unsigned long long)st.mute_closed,
           (unsigned long long)st.stall_timeouts, (unsigned long long)st.trickle_late,
           (unsigned long long)st.late_requests, (unsigned long long)st.graces,
           (unsigned long long)st.garbage_done, (unsigned long long)st.vanished, closes, http,
           series, describe(status, buf, sizeof(buf)), (unsigned long long)st.violations,
           (unsigned long long)st.loss_events);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    configure(argc, argv);
    t_begin = now_ms();

    long want = (long)cfg.conns + 4096;
    long got = raise_nofile(want);
    if (got < want) {
        int fit = (int)(got - 4096);
        if (fit < 100) {
            fprintf(stderr, "wsbroker-soak: only %ld file descriptors allowed\n", got);
            return 2;
        }
        note("RLIMIT_NOFILE is %ld (raising it needs root): %d connections instead of %d", got, fit,
             cfg.conns);
        cfg.conns = fit;
    }
    note("build %s; %g s load, %d connections, %g publishes/s, %g churners/s, %g garbage/s, "
         "%d workers, --slow-consumer %s, seed %llu, nofile %ld",
         cfg.sanitizer[0] ? cfg.sanitizer : "plain", cfg.seconds, cfg.conns, cfg.rate, cfg.churn,
         cfg.garbage, cfg.workers, cfg.slow_drop ? "drop" : "close", (unsigned long long)cfg.seed,
         got);
    if (loop_init() != 0 || broker_start() != 0)
        return 1;
    if (cfg.race > 0) {
        int rc = race_main(cfg.race);
        int ws = broker_term((int)((cfg.close_timeout + 10) * 1000));
        char b[64];
        if (ws == -1 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            violation_major("the broker's %s, expected exit status 0", describe(ws, b, sizeof(b)));
            broker_log_tail(8000);
        }
        printf("soak-race: result=%s broker=\"%s\" violations=%llu\n",
               rc == 0 && st.violations == 0 ? "PASS" : "FAIL", describe(ws, b, sizeof(b)),
               (unsigned long long)st.violations);
        broker_log_done(rc == 0 && st.violations == 0);
        return rc != 0 ? rc : st.violations == 0 ? 0 : 1;
    }
    ledger_init(cfg.conns);
    phase = PH_RAMP;
    t_load0 = now_ms();
    roles_init();

    int64_t next_tick = t_load0, next_sample = t_load0 + 1000, t_phase = t_load0;
    int64_t t_quiet = 0, t_req_done = 0;
    int status = -1;
    bool exited = false;
    int64_t t_iter = now_ms();
    while (phase != PH_DONE) {
        loop_once(5);
        int64_t now = now_ms();
        if (now - t_iter > loop_max_ms)
            loop_max_ms = now - t_iter;
        if (now - t_iter >= 500) {
            stalls[nstalls % NSTALLS].from = t_iter;
            stalls[nstalls % NSTALLS].to = now;
            nstalls++;
        }
        t_iter = now;
        if (now >= next_tick) {
            roles_tick();
            next_tick = now + 10;
        }
        if (now >= next_sample) {
            sample();
            next_sample += 1000;
        }
        if (phase < PH_TERM && broker_exited(&status)) {
            char b[64];
            violation_major("the broker died during the run: %s", describe(status, b, sizeof(b)));
            broker_log_tail(8000);
            exited = true;
            phase = PH_DONE;
            break;
        }
        switch (phase) {
        case PH_RAMP:
        case PH_LOAD:
            if (phase == PH_RAMP && roles_ramp_done()) {
                phase = PH_LOAD;
                t_ramp_done = now;
                note("ramp done: %u long-lived subscribers open after %.1f s", roles_target_sub(),
                     (double)(now - t_load0) / 1000.0);
            }
            if (now - t_load0 >= (int64_t)(cfg.seconds * 1000)) {
                if (phase == PH_RAMP)
                    violation("ramp: not every long-lived subscriber was open by the end");
                phase = PH_DRAIN;
                roles_drain();
                t_phase = now;
                note("load over at %.1f s: draining", elapsed());
            }
            break;
        case PH_DRAIN:
            if (!roles_quiet()) {
                if (now - t_phase > (int64_t)(20000 * cfg.slack)) {
                    violation_major(
                        "drain: transient clients or unconfirmed publishes remain after "
                        "%.0f s",
                        20 * cfg.slack);
                    t_quiet = now - (int64_t)(10000 * cfg.slack) - 1;
                } else {
                    break;
                }
            }
            if (t_quiet == 0)
                t_quiet = now;
            if (missing_total(false) == 0 || now - t_quiet > (int64_t)(10000 * cfg.slack)) {
                missing_total(true);
                note("drained in %.1f s: every publish confirmed (%llu), subscribers caught up",
                     (double)(now - t_phase) / 1000.0, (unsigned long long)st.confirmed);
                phase = PH_AUDIT;
                t_phase = now;
                roles_audit_requests();
            }
            break;
        case PH_AUDIT:
            if (live_by_role[R_GARBAGE] > 0) {
                if (now - t_phase > (int64_t)(10000 * cfg.slack)) {
                    violation_major("audit: the bad-requests check did not finish");
                    t_req_done = now;
                }
                break;
            }
            if (t_req_done == 0)
                t_req_done = now;
            if (last_metrics.t <= t_req_done || live_by_role[R_METRICS] > 0)
                break;
            if (audit(&last_metrics, false) != 0 && now - t_req_done < (int64_t)(5000 * cfg.slack))
                break;
            if (audit(&last_metrics, true) == 0)
                note("audit: /metrics matches the clients (%.0f open, %.0f subscriptions, %.0f "
                     "publishes, %.0f topics, close codes, ping timeouts, slow closes, rejects)",
                     last_metrics.conns_open, last_metrics.subscriptions, last_metrics.published,
                     last_metrics.topics);
            phase = PH_TERM;
            t_phase = now;
            kill(broker_pid(), SIGTERM);
            note("SIGTERM sent to the broker at %.1f s", elapsed());
            break;
        case PH_TERM:
            if (!exited && broker_exited(&status)) {
                exited = true;
                t_quiet = now;
            }
            if (exited && (live_total == 0 || now - t_quiet > 2000)) {
                int n = 0;
                conns_each(left_cb, &n);
                phase = PH_DONE;
            } else if (!exited &&
                       now - t_phase > (int64_t)((cfg.close_timeout + 10) * 1000 * cfg.slack)) {
                violation_major("the broker did not exit within %.0f s of SIGTERM",
                                (cfg.close_timeout + 10) * cfg.slack);
                status = broker_term(1000);
                exited = true;
                phase = PH_DONE;
            }
            break;
        default:
            break;
        }
    }
    if (!exited)
        status = broker_term(5000);
    char b[64];
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        violation_major("the broker's %s, expected exit status 0", describe(status, b, sizeof(b)));
        broker_log_tail(8000);
    }
    char rss_line[512];
    bool rss_ok = rss_verdict(rss_line, sizeof(rss_line));
    if (!rss_ok)
        broker_log_keep();
    summary(status, rss_ok, rss_line);
    bool pass = st.violations == 0 && rss_ok;
    broker_log_done(pass);
    return pass ? 0 : 1;
}
