/*
 * stats.c - latency histogram, error tallies and /proc readers.
 *
 * The histogram is log-linear (HdrHistogram's idea, our own code): values
 * below 64 ns have one bucket each; above, every power of two is split into
 * 64 equal sub-buckets, so a bucket is never wider than 1/64 of its lower
 * bound. Adding a sample is a shift and an increment; quantiles are a scan
 * over 3776 counters, whatever the number of samples.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
    unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* Lowest value and width of bucket i. */
static void hist_bucket(unsigned i, uint64_t *lo, uint64_t *width)
{
    if (i < HIST_SUB) {
        *lo = i;
        *width = 1;
        return;
    }
    unsigned e = i / HIST_SUB + HIST_SUB_BITS - 1;
    unsigned sub = i % HIST_SUB;
    *lo = (uint64_t)(HIST_SUB + sub) << (e - HIST_SUB_BITS);
    *width = (uint64_t)1 << (e - HIST_SUB_BITS);
}

void hist_init(hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void hist_add(hist_t *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* Rank of the sample at quantile q, 1-based, rounded up. */
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t lo, width;
            hist_bucket(i, &lo, &width);
            uint64_t v = lo + width / 2;
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

static void close_code_add(errstats_t *e, uint16_t code, uint64_t n)
{
    for (int i = 0; i < CLOSE_CODES_MAX; i++) {
        if (e->close[i].n == 0)
            e->close[i].code = code;
        if (e->close[i].code == code) {
            e->close[i].n += n;
            return;
        }
    }
}

void err_close_code(errstats_t *e, uint16_t code)
{
    close_code_add(e, code, 1);
}

void err_merge(errstats_t *into, const errstats_t *from)
{
    for (int k = 0; k < ERR_KINDS; k++)
        into->n[k] += from->n[k];
    for (int i = 0; i < CLOSE_CODES_MAX && from->close[i].n != 0; i++)
        close_code_add(into, from->close[i].code, from->close[i].n);
    if (into->first[0] == '\0')
        memcpy(into->first, from->first, sizeof into->first);
}

long proc_rss_kib(int pid)
{
    char path[64], line[256];
    long kib = -1;
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: fields are
     * counted from the last ')'. utime and stime are fields 14 and 15. */
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (p == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

int machine_cpu(machine_cpu_t *m)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    /* user nice system idle iowait irq softirq steal */
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 7)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    double t = (double)(hz > 0 ? hz : 100);
    m->process = (double)(v[0] + v[1] + v[2]) / t;
    m->irq = (double)(v[5] + v[6]) / t;
    m->steal = (double)v[7] / t;
    return 0;
}

double self_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}
