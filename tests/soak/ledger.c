/*
 * ledger.c - topics, patterns, payloads and the delivery checks.
 *
 * Every topic has exactly one publisher at a time and the broker starts
 * empty, so the k-th publish on a topic must get seq k: the ledger knows,
 * for every topic, how many publishes were sent (the highest seq that can
 * exist) and how many were confirmed (acked, or answered by a pong sent
 * after them). From that, for every subscriber and topic:
 *
 *   - an episode starts at the first subscribe ack that covers the topic.
 *     Concrete: the ack carries the topic's seq A, and the first message
 *     due is exactly A + 1. Wildcard: every publish sent after the ack was
 *     read must arrive, so the first message may be no later than
 *     sent + 1 (earlier is allowed: a publish already on the wire may be
 *     processed after the subscribe).
 *   - within an episode, seqs are consecutive: a repeat is a duplicate, a
 *     smaller one a reorder, a larger one a loss.
 *   - the episode ends at the unsubscribe ack (or the broker's Close reply)
 *     that leaves the topic uncovered; every publish confirmed before that
 *     unsubscribe (or Close) was sent must have arrived by then.
 *   - a message on a topic no acked pattern covers is a stray.
 */
#include "soak.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

topic_t *topics;
uint32_t ntopics;
group_t *groups;
uint32_t ngroups, ngroups_id, ngroups_noid, ngroups_churn;
uint32_t flood_group;
pattern_t *patterns;
uint32_t npatterns;
uint32_t pattern_vanish;
uint32_t pattern_flood;

static uint32_t kind_first[PK_COUNT], kind_n[PK_COUNT];
/* Pick weights per kind, in thousandths. */
static const uint32_t kind_weight[PK_COUNT] = {
    [PK_CONCRETE] = 760, [PK_GROUP_STAR] = 100, [PK_GROUP_GT] = 60,
    [PK_COLUMN] = 10,    [PK_LEAD_STAR] = 68,   [PK_ALL] = 2,
};

/* Topic name lookup: open addressing over the names. */
static int32_t *tindex;
static uint32_t tindex_cap;

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

int32_t topic_find(const char *name, size_t len)
{
    for (uint32_t i = name_hash(name, len) & (tindex_cap - 1);; i = (i + 1) & (tindex_cap - 1)) {
        int32_t t = tindex[i];
        if (t < 0)
            return -1;
        if (topics[t].len == len && memcmp(topics[t].name, name, len) == 0)
            return t;
    }
}

static void add_pattern(const char *text, int kind)
{
    pattern_t *p = &patterns[npatterns++];
    snprintf(p->text, sizeof(p->text), "%s", text);
    p->len = (uint8_t)strlen(p->text);
    p->kind = (uint8_t)kind;
    p->wildcard = topic_is_pattern(p->text, p->len);
    if (topic_check(p->text, p->len, true) != TOPIC_OK) {
        fprintf(stderr, "soak: bad pattern %s\n", p->text);
        exit(3);
    }
    p->topics = malloc(ntopics * sizeof(uint32_t));
    if (p->topics == NULL)
        exit(3);
    for (uint32_t t = 0; t < ntopics; t++)
        if (topic_match(p->text, p->len, topics[t].name, topics[t].len))
            p->topics[p->ntopics++] = t;
}

void ledger_init(int conns)
{
    uint32_t g = (uint32_t)(conns / 100);
    g = g < 8 ? 8 : g > 64 ? 64 : g;
    ngroups_id = g;
    ngroups_noid = g / 4 < 2 ? 2 : g / 4;
    ngroups_churn = ngroups_noid;
    ngroups = ngroups_id + ngroups_noid + ngroups_churn + 1;
    flood_group = ngroups - 1;
    groups = calloc(ngroups, sizeof(*groups));
    ntopics = ngroups * TOPICS_PER_GROUP;
    topics = calloc(ntopics, sizeof(*topics));
    if (groups == NULL || topics == NULL)
        exit(3);
    for (uint32_t i = 0; i < ngroups; i++) {
        group_t *gr = &groups[i];
        if (i < ngroups_id) {
            gr->kind = GK_ID;
            snprintf(gr->name, sizeof(gr->name), "g%u", i);
        } else if (i < ngroups_id + ngroups_noid) {
            gr->kind = GK_NOID;
            snprintf(gr->name, sizeof(gr->name), "n%u", i - ngroups_id);
        } else if (i < flood_group) {
            gr->kind = GK_CHURN;
            snprintf(gr->name, sizeof(gr->name), "c%u", i - ngroups_id - ngroups_noid);
        } else {
            gr->kind = GK_FLOOD;
            snprintf(gr->name, sizeof(gr->name), "f0");
        }
        gr->first_topic = i * TOPICS_PER_GROUP;
        for (uint32_t k = 0; k < TOPICS_PER_GROUP; k++) {
            topic_t *t = &topics[gr->first_topic + k];
            /* Outside soak.>: only a few subscribers take the flood. */
            snprintf(t->name, sizeof(t->name), "%s.%s.t%u", gr->kind == GK_FLOOD ? "flood" : "soak",
                     gr->name, k);
            t->len = (uint8_t)strlen(t->name);
            t->group = (uint16_t)i;
            t->col = (uint16_t)k;
        }
    }
    tindex_cap = 16;
    while (tindex_cap < ntopics * 4)
        tindex_cap *= 2;
    tindex = malloc(tindex_cap * sizeof(*tindex));
    if (tindex == NULL)
        exit(3);
    memset(tindex, 0xff, tindex_cap * sizeof(*tindex));
    for (uint32_t t = 0; t < ntopics; t++) {
        uint32_t i = name_hash(topics[t].name, topics[t].len) & (tindex_cap - 1);
        while (tindex[i] >= 0)
            i = (i + 1) & (tindex_cap - 1);
        tindex[i] = (int32_t)t;
    }

    uint32_t cap = ntopics * 2 + ngroups * 2 + TOPICS_PER_GROUP + 4;
    patterns = calloc(cap, sizeof(*patterns));
    if (patterns == NULL)
        exit(3);
    char buf[64];
    kind_first[PK_CONCRETE] = npatterns;
    for (uint32_t t = 0; t < ntopics; t++)
        add_pattern(topics[t].name, PK_CONCRETE);
    kind_first[PK_GROUP_STAR] = npatterns;
    for (uint32_t i = 0; i < flood_group; i++) {
        snprintf(buf, sizeof(buf), "soak.%s.*", groups[i].name);
        add_pattern(buf, PK_GROUP_STAR);
    }
    kind_first[PK_GROUP_GT] = npatterns;
    for (uint32_t i = 0; i < flood_group; i++) {
        snprintf(buf, sizeof(buf), "soak.%s.>", groups[i].name);
        add_pattern(buf, PK_GROUP_GT);
    }
    kind_first[PK_COLUMN] = npatterns;
    for (uint32_t k = 0; k < TOPICS_PER_GROUP; k++) {
        snprintf(buf, sizeof(buf), "soak.*.t%u", k);
        add_pattern(buf, PK_COLUMN);
    }
    kind_first[PK_LEAD_STAR] = npatterns;
    for (uint32_t t = 0; t < ntopics; t++) {
        snprintf(buf, sizeof(buf), "*.%s.t%u", groups[topics[t].group].name, topics[t].col);
        add_pattern(buf, PK_LEAD_STAR);
    }
    kind_first[PK_ALL] = npatterns;
    add_pattern("soak.>", PK_ALL);
    for (int k = 0; k < PK_COUNT; k++)
        kind_n[k] = (k + 1 < PK_COUNT ? kind_first[k + 1] : npatterns) - kind_first[k];
    /* Never published; vanishing clients send half publishes to it. */
    pattern_vanish = npatterns;
    add_pattern("soak.vanish", PK_CONCRETE);
    pattern_flood = npatterns;
    add_pattern("flood.>", PK_ALL);
}

uint32_t pattern_pick(uint64_t *rng, int kind)
{
    if (kind < 0) {
        uint32_t r = rng_below(rng, 1000);
        kind = 0;
        while (kind < PK_COUNT - 1 && r >= kind_weight[kind]) {
            r -= kind_weight[kind];
            kind++;
        }
    }
    return kind_first[kind] + rng_below(rng, kind_n[kind]);
}

/* ---- per-connection topic entries ---- */

static tent_t *tent_get(conn_t *c, uint32_t t, bool create)
{
    uint32_t lo = 0, hi = c->nte;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (c->te[mid].topic < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < c->nte && c->te[lo].topic == t)
        return &c->te[lo];
    if (!create)
        return NULL;
    if (c->nte == c->te_cap) {
        uint32_t ncap = c->te_cap ? c->te_cap * 2 : 4;
        tent_t *n = realloc(c->te, ncap * sizeof(*n));
        if (n == NULL)
            exit(3);
        c->te = n;
        c->te_cap = ncap;
    }
    memmove(&c->te[lo + 1], &c->te[lo], (c->nte - lo) * sizeof(*c->te));
    c->nte++;
    memset(&c->te[lo], 0, sizeof(*c->te));
    c->te[lo].topic = t;
    return &c->te[lo];
}

bool pattern_disjoint(const conn_t *c, uint32_t p)
{
    const pattern_t *pt = &patterns[p];
    for (uint32_t i = 0; i < pt->ntopics; i++) {
        tent_t *e = tent_get((conn_t *)c, pt->topics[i], false);
        if (e != NULL && e->nact + e->nuns > 0)
            return false;
    }
    /* Subscribes in flight count too. */
    for (uint32_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i].state != SS_PENDING)
            continue;
        const pattern_t *q = &patterns[c->subs[i].pattern];
        for (uint32_t a = 0, b = 0; a < pt->ntopics && b < q->ntopics;) {
            if (pt->topics[a] == q->topics[b])
                return false;
            if (pt->topics[a] < q->topics[b])
                a++;
            else
                b++;
        }
    }
    return true;
}

/* ---- payloads ---- */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

size_t payload_make(char *out, size_t cap, uint64_t seq, uint32_t t)
{
    uint64_t h = mix(seq * 1000003u + t);
    uint32_t pad = (uint32_t)(h % 97);
    if (topics[t].group == flood_group)
        pad = 16384 + (uint32_t)((h >> 8) % 32768);
    else if (h % 64 == 0)
        pad = 1000 + (uint32_t)((h >> 8) % 3000);
    int n = snprintf(out, cap, "[%llu,%u,\"", (unsigned long long)seq, pad);
    if (n < 0 || (size_t)n + pad + 3 > cap)
        return 0;
    for (uint32_t i = 0; i < pad; i++)
        out[n + i] = (char)('a' + (seq + i) % 26);
    n += (int)pad;
    out[n++] = '"';
    out[n++] = ']';
    out[n] = '\0';
    return (size_t)n;
}

static bool payload_ok(msg_span_t d, uint64_t seq, uint32_t t)
{
    static char buf[PAYLOAD_MAX];
    size_t n = payload_make(buf, sizeof(buf), seq, t);
    return d.len == n && memcmp(d.p, buf, n) == 0;
}

/* ---- episodes ---- */

static bool relaxed(const conn_t *c)
{
    return !(c->flags & F_CHECKED);
}

static void lost(conn_t *c, const tent_t *e, uint64_t n, const char *what)
{
    if (relaxed(c)) {
        c->gaps += n;
        st.slow_gaps += n;
        return;
    }
    st.losses += n;
    st.loss_events++;
    violation("loss: %s #%u lost %llu message(s) on %s (%s; episode start %s%llu, last %llu, "
              "due %llu, topic sent %llu confirmed %llu)",
              role_name(c->role), c->slot, (unsigned long long)n, topics[e->topic].name, what,
              e->exact ? "" : "<=", (unsigned long long)e->start, (unsigned long long)e->last,
              (unsigned long long)e->must, (unsigned long long)topics[e->topic].sent,
              (unsigned long long)topics[e->topic].confirmed);
}

/* Losses found when episodes end, reported as one line per unsubscribe
 * ack or Close reply. */
typedef struct endrep {
    uint64_t lost;
    uint32_t topics;
    size_t len;
    char list[300];
} endrep_t;

static void episode_end(conn_t *c, tent_t *e, endrep_t *r)
{
    if (e->must >= e->start && e->last < e->must) {
        uint64_t from = e->last > 0 ? e->last + 1 : e->start;
        if (e->must >= from) {
            uint64_t n = e->must - from + 1;
            if (relaxed(c)) {
                c->gaps += n;
                st.slow_gaps += n;
            } else {
                st.losses += n;
                st.losses_at_end += n;
                r->lost += n;
                if (++r->topics <= 3 && r->len < sizeof(r->list))
                    r->len += (size_t)snprintf(r->list + r->len, sizeof(r->list) - r->len,
                                               "%s%s seq %llu-%llu", r->topics > 1 ? ", " : "",
                                               topics[e->topic].name, (unsigned long long)from,
                                               (unsigned long long)e->must);
            }
        }
    }
    e->last = 0;
    e->must = 0;
    e->start = 0;
    e->exact = false;
}

static void end_report(const conn_t *c, const endrep_t *r, const char *sent, const char *reply)
{
    if (r->lost == 0)
        return;
    st.loss_events++;
    violation("loss: %s #%u: %llu message(s) on %u topic(s), acknowledged to their publishers "
              "before %s was sent, missing at %s: %s%s",
              role_name(c->role), c->slot, (unsigned long long)r->lost, r->topics, sent, reply,
              r->list, r->topics > 3 ? ", ..." : "");
}

void ledger_sub_ack(conn_t *c, uint32_t p, const req_t *r, uint64_t ack_seq, bool has_seq)
{
    const pattern_t *pt = &patterns[p];
    if (!pt->wildcard) {
        uint32_t t = pt->topics[0];
        if (!has_seq) {
            violation("%s: subscribe ack for concrete %s has no seq", role_name(c->role), pt->text);
            ack_seq = topics[t].sent;
        } else if (ack_seq < r->seq || ack_seq > topics[t].sent) {
            violation("%s: subscribe ack seq %llu for %s outside [%llu confirmed at send, %llu "
                      "sent at ack]",
                      role_name(c->role), (unsigned long long)ack_seq, pt->text,
                      (unsigned long long)r->seq, (unsigned long long)topics[t].sent);
        }
    } else if (has_seq) {
        violation("%s: subscribe ack for pattern %s carries a seq", role_name(c->role), pt->text);
    }
    if (r->resub)
        return; /* the pattern was active already: nothing changes */
    for (uint32_t i = 0; i < pt->ntopics; i++) {
        uint32_t t = pt->topics[i];
        tent_t *e = tent_get(c, t, true);
        if (e->nact + e->nuns == 0) {
            e->last = 0;
            e->must = 0;
            e->exact = !pt->wildcard;
            e->start = pt->wildcard ? topics[t].sent + 1 : ack_seq + 1;
        } else if (pt->wildcard && e->last == 0) {
            /* A wildcard joining a concrete episode before its first
             * message: publishes older than the concrete ack may still be
             * on their way and the wildcard does not filter them. */
            e->exact = false;
        }
        e->nact++;
    }
}

void ledger_unsub_sent(conn_t *c, uint32_t p)
{
    const pattern_t *pt = &patterns[p];
    for (uint32_t i = 0; i < pt->ntopics; i++) {
        tent_t *e = tent_get(c, pt->topics[i], false);
        if (e == NULL || e->nact == 0) {
            violation("soak: unsubscribe of %s without an active subscription", pt->text);
            continue;
        }
        e->nact--;
        e->nuns++;
        if (topics[e->topic].confirmed > e->must)
            e->must = topics[e->topic].confirmed;
    }
}

void ledger_unsub_ack(conn_t *c, uint32_t p)
{
    const pattern_t *pt = &patterns[p];
    endrep_t r = {0, 0, 0, ""};
    for (uint32_t i = 0; i < pt->ntopics; i++) {
        tent_t *e = tent_get(c, pt->topics[i], false);
        if (e == NULL || e->nuns == 0)
            continue;
        e->nuns--;
        if (e->nact + e->nuns == 0)
            episode_end(c, e, &r);
    }
    char what[80];
    snprintf(what, sizeof(what), "the unsubscribe from %s", pt->text);
    end_report(c, &r, what, "its ack");
}

void ledger_close_sent(conn_t *c)
{
    for (uint32_t i = 0; i < c->nte; i++) {
        tent_t *e = &c->te[i];
        if (e->nact + e->nuns == 0)
            continue;
        e->nuns += e->nact;
        e->nact = 0;
        if (topics[e->topic].confirmed > e->must)
            e->must = topics[e->topic].confirmed;
    }
}

void ledger_close_done(conn_t *c)
{
    endrep_t r = {0, 0, 0, ""};
    for (uint32_t i = 0; i < c->nte; i++) {
        tent_t *e = &c->te[i];
        if (e->nact + e->nuns == 0)
            continue;
        e->nact = e->nuns = 0;
        episode_end(c, e, &r);
    }
    end_report(c, &r, "its Close", "the broker's Close reply");
}

void ledger_message(conn_t *c, const msg_server_t *m)
{
    st.deliveries++;
    c->received++;
    int32_t t = topic_find(m->topic, strlen(m->topic));
    if (t < 0) {
        st.strays++;
        violation("%s #%u: message on topic '%s' that nobody publishes", role_name(c->role),
                  c->slot, m->topic);
        return;
    }
    if (!m->has_seq) {
        violation("%s: message on %s without a seq", role_name(c->role), m->topic);
        return;
    }
    uint64_t s = m->seq;
    if (s == 0 || s > topics[t].sent || !payload_ok(m->data, s, (uint32_t)t)) {
        st.corrupt++;
        violation("%s #%u: message on %s seq %llu does not carry that publish's data (sent %llu): "
                  "%.*s",
                  role_name(c->role), c->slot, m->topic, (unsigned long long)s,
                  (unsigned long long)topics[t].sent, (int)(m->data.len > 80 ? 80 : m->data.len),
                  m->data.p ? m->data.p : "");
        return;
    }
    tent_t *e = tent_get(c, (uint32_t)t, false);
    if (e == NULL || e->nact + e->nuns == 0) {
        st.strays++;
        violation("%s #%u: message on %s seq %llu without an acked subscription covering it",
                  role_name(c->role), c->slot, m->topic, (unsigned long long)s);
        return;
    }
    if (e->last == 0) {
        if (e->exact && s < e->start) {
            st.strays++;
            violation("%s #%u: message on %s seq %llu predates the subscribe ack (seq %llu)",
                      role_name(c->role), c->slot, m->topic, (unsigned long long)s,
                      (unsigned long long)(e->start - 1));
        } else if (s > e->start) {
            lost(c, e, s - e->start, "first message after the subscribe ack");
        }
    } else if (s == e->last) {
        st.duplicates++;
        violation("%s #%u: duplicate %s seq %llu", role_name(c->role), c->slot, m->topic,
                  (unsigned long long)s);
        return;
    } else if (s < e->last) {
        st.reorders++;
        violation("%s #%u: reorder on %s: seq %llu after %llu", role_name(c->role), c->slot,
                  m->topic, (unsigned long long)s, (unsigned long long)e->last);
        return;
    } else if (s > e->last + 1) {
        lost(c, e, s - e->last - 1, "gap");
    }
    e->last = s;
}

uint64_t ledger_missing(conn_t *c, bool report)
{
    uint64_t missing = 0;
    for (uint32_t i = 0; i < c->nte; i++) {
        tent_t *e = &c->te[i];
        if (e->nact + e->nuns == 0)
            continue;
        uint64_t fin = topics[e->topic].confirmed;
        if (fin < e->start || e->last >= fin)
            continue;
        uint64_t from = e->last > 0 ? e->last + 1 : e->start;
        uint64_t n = fin - from + 1;
        missing += n;
        if (report) {
            e->must = fin;
            lost(c, e, n, "missing at the end of the run");
            e->last = fin; /* counted once */
        }
    }
    return missing;
}

void ledger_free(conn_t *c)
{
    free(c->te);
    c->te = NULL;
    c->nte = c->te_cap = 0;
}
