/*
 * thread.c - one bench thread: a uv_loop, the connections assigned to it,
 * and its reaction to the run phases.
 *
 * The thread learns about phase changes by polling bench_t.phase from a
 * short repeating timer (5 ms; 1 ms in the latency scenario, whose
 * publishers it paces). A uv_async_t would wake it sooner, but
 * main could then call uv_async_send on a handle the thread has already
 * closed on its way out; a few milliseconds of reaction time cost nothing
 * here. Phases are entered in order even if the thread misses one, so every
 * entry action (copying the run times, final accounting, closing) runs
 * exactly once.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "bench.h"

#define RBUF_SIZE (256u << 10)

static void close_handles(bthread_t *th)
{
    if (th->handles_closed)
        return;
    th->handles_closed = true;
    uv_close((uv_handle_t *)&th->tick, NULL);
    uv_close((uv_handle_t *)&th->cork, NULL);
}

void thr_refill(bthread_t *th)
{
    if (th->refilling || th->seen_phase != PH_SETUP)
        return;
    th->refilling = true;
    size_t limit = th->nconns;
    if (th->connect_rate > 0) {
        double elapsed = (double)(th->now - th->b->t_setup) / 1e9;
        size_t allowed = (size_t)(elapsed * th->connect_rate) + 1;
        if (allowed < limit)
            limit = allowed;
    }
    while (th->next_start < limit && th->inflight < th->inflight_max)
        conn_start(&th->conns[th->next_start++]);
    th->refilling = false;
}

static void enter_phase(bthread_t *th, int ph)
{
    switch (ph) {
    case PH_SETUP:
        thr_refill(th);
        break;
    case PH_RUN:
        scen_run_start(th);
        break;
    case PH_CLOSE:
        if (!th->finished)
            scen_finish(th);
        for (size_t i = 0; i < th->nconns; i++)
            conn_close(&th->conns[i]);
        break;
    case PH_EXIT:
        if (!th->finished)
            scen_finish(th);
        for (size_t i = 0; i < th->nconns; i++)
            conn_abort(&th->conns[i]);
        close_handles(th);
        break;
    default:
        break;
    }
}

static void on_tick(uv_timer_t *t)
{
    bthread_t *th = t->data;
    th->now = now_ns();
    if (th->now >= th->t_measure && th->now < th->t_end && th->last_tick != 0) {
        uint64_t period = (uint64_t)th->tick_ms * 1000000u, d = th->now - th->last_tick;
        uint64_t late = d > period ? d - period : 0;
        if (late > th->stall_max_ns)
            th->stall_max_ns = late;
        if (late > 10000000u)
            th->stalls_10ms++;
    }
    th->last_tick = th->now;
    int ph = atomic_load_explicit(&th->b->phase, memory_order_acquire);
    while (th->seen_phase < ph && !th->handles_closed)
        enter_phase(th, ++th->seen_phase);
    if (th->handles_closed)
        return;
    switch (ph) {
    case PH_SETUP:
        thr_refill(th);
        break;
    case PH_RUN:
    case PH_STOP:
        scen_run_tick(th);
        break;
    case PH_DRAIN:
        scen_drain_tick(th);
        break;
    default:
        break;
    }
}

static void on_cork(uv_prepare_t *p)
{
    conn_flush_all(p->data);
}

int thr_init(bthread_t *th)
{
    const bench_t *b = th->b;
    unsigned ms = b->o.scenario == SC_LATENCY ? 1 : 5;

    if (uv_loop_init(&th->loop) != 0)
        return -1;
    th->loop.data = th;
    uv_timer_init(&th->loop, &th->tick);
    th->tick.data = th;
    uv_prepare_init(&th->loop, &th->cork);
    th->cork.data = th;
    uv_prepare_start(&th->cork, on_cork);
    th->tick_ms = ms;
    uv_timer_start(&th->tick, on_tick, ms, ms);

    th->rbuf_cap = RBUF_SIZE;
    th->rbuf = malloc(th->rbuf_cap);
    size_t pmax = payload_max(b->o.payload);
    th->data = malloc(pmax);
    msg_span_t id = {"18446744073709551615", 20};
    th->scratch_cap = msg_publish_bound(TOPIC_NAME_MAX, pmax, id) + 512;
    th->scratch = malloc(th->scratch_cap);
    th->dirty = calloc(th->nconns ? th->nconns : 1, sizeof *th->dirty);
    hist_init(&th->lat);
    th->t_run = th->t_measure = th->t_end = UINT64_MAX;
    if (getrandom(&th->rng, sizeof th->rng, 0) != sizeof th->rng)
        th->rng = now_ns();
    th->rng |= 1;
    if (th->rbuf == NULL || th->data == NULL || th->scratch == NULL || th->dirty == NULL)
        return -1;
    if (b->o.deflate && pmd_inflater_init(&th->inf, true) != PMD_OK)
        return -1;
    return 0;
}

void thr_main(void *arg)
{
    bthread_t *th = arg;
    uv_run(&th->loop, UV_RUN_DEFAULT);
    uv_loop_close(&th->loop);
}

void thr_free(bthread_t *th)
{
    pmd_inflater_end(&th->inf);
    pmd_deflater_end(&th->def);
    free(th->ibuf.buf);
    free(th->zbuf);
    free(th->rbuf);
    free(th->data);
    free(th->scratch);
    free(th->dirty);
    free(th->conns);
    free(th->pubs);
}
