/*
 * fuzz_topic.c - differential libFuzzer target for topics and patterns
 * (protocol/src/topic.c, PROTOCOL.md section 3).
 *
 * The input is up to three strings separated by '\n' (a byte no topic may
 * hold): A, B and C. Every string, and the whole input, is checked with
 * topic_check() against ref_check(), a reference written here over split
 * segments instead of one walk over the bytes: same verdict, same error
 * code. Then, for the strings that are valid:
 *
 *   - topic_is_pattern() is true exactly for patterns with a wildcard
 *     segment, i.e. those topic_check(t, false) refuses with
 *     TOPIC_E_WILDCARD;
 *   - topic_match(pattern, topic) agrees with ref_match(), a recursive
 *     matcher over segment arrays;
 *   - topic_covers(outer, inner) is what it promises: if it says yes, outer
 *     matches every topic inner matches (checked on instances of inner);
 *     if it says no, some instance of inner is not matched by outer. The
 *     instances replace each '*' of inner by a literal of outer or by a
 *     fresh segment, and '>' by one to (segments of outer + 1) of those;
 *     that is enough to find a counterexample when one exists, because
 *     outer can only tell its own literals apart. Inputs with too many
 *     instances are checked on the first ones only (soundness).
 *   - covers is reflexive, ">" covers everything, a concrete inner is
 *     covered exactly when it is matched, covers is transitive on A, B, C,
 *     and two patterns that cover each other are the same pattern.
 *
 * Every string is a private heap copy of exactly its length, so a read
 * past its end is an overflow ASan reports. A violated property aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_dict.h"
#include "wsproto/topic.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* The reference code is not what is being fuzzed: it gets no coverage
 * instrumentation, which would cost most of the time of a run and guide
 * the fuzzer by the oracle's branches instead of the library's. */
#define ORACLE __attribute__((no_sanitize("coverage")))

#define SEG_MAX   (TOPIC_MAX / 2 + 1) /* "a.b.c": at most 128 segments in 255 bytes */
#define INST_MAX  512                 /* instances of a pattern checked per pair */
#define ALPHA_MAX 8                   /* literals of outer used in instances, plus one fresh */

typedef struct seg {
    const char *p;
    size_t len;
} seg_t;

typedef struct segs {
    seg_t s[TOPIC_MAX + 2];
    size_t n;
} segs_t;

/* t[0..len) split at every '.', empty segments included. */
ORACLE static void split(const char *t, size_t len, segs_t *out)
{
    size_t start = 0;
    out->n = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || t[i] == '.') {
            out->s[out->n].p = t + start;
            out->s[out->n].len = i - start;
            out->n++;
            start = i + 1;
        }
    }
}

ORACLE static bool seg_is(seg_t s, char w)
{
    return s.len == 1 && s.p[0] == w;
}

ORACLE static bool seg_eq(seg_t a, seg_t b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* ---------------------------------------------------------------------
 * Reference implementations
 * ------------------------------------------------------------------- */

/* The grammar of topic.h, segment by segment: within a segment its bytes
 * are checked before its emptiness and its wildcards, and a segment before
 * the next one, which is the order a left-to-right reader finds errors. */
ORACLE static int ref_check(const char *t, size_t len, bool pattern)
{
    static segs_t g;
    if (len == 0)
        return TOPIC_E_EMPTY;
    if (len > TOPIC_MAX)
        return TOPIC_E_LONG;
    split(t, len, &g);
    for (size_t k = 0; k < g.n; k++) {
        for (size_t i = 0; i < g.s[k].len; i++) {
            unsigned char c = (unsigned char)g.s[k].p[i];
            if (c < 0x21 || c > 0x7e)
                return TOPIC_E_CHAR;
        }
        if (g.s[k].len == 0)
            return TOPIC_E_SEGMENT;
        if (seg_is(g.s[k], '*') || seg_is(g.s[k], '>')) {
            if (!pattern)
                return TOPIC_E_WILDCARD;
            if (seg_is(g.s[k], '>') && k + 1 != g.n)
                return TOPIC_E_GT_LAST;
        }
    }
    return TOPIC_OK;
}

/* Does pattern p[i..] match topic t[j..]? */
ORACLE static bool ref_match_at(const segs_t *p, size_t i, const segs_t *t, size_t j)
{
    if (i == p->n)
        return j == t->n;
    if (seg_is(p->s[i], '>'))
        return j < t->n; /* '>' is last: one or more segments */
    if (j == t->n)
        return false;
    if (!seg_is(p->s[i], '*') && !seg_eq(p->s[i], t->s[j]))
        return false;
    return ref_match_at(p, i + 1, t, j + 1);
}

ORACLE static bool ref_match(const char *pat, size_t plen, const char *topic, size_t tlen)
{
    static segs_t p, t;
    split(pat, plen, &p);
    split(topic, tlen, &t);
    return ref_match_at(&p, 0, &t, 0);
}

/* ---------------------------------------------------------------------
 * topic_covers() against topic_match() on instances of inner
 * ------------------------------------------------------------------- */

typedef struct inst {
    const char *o, *i; /* outer and inner as strings */
    size_t olen, ilen;
    const segs_t *inner;
    seg_t alpha[ALPHA_MAX + 1]; /* values a wildcard of inner takes */
    size_t nalpha;
    size_t max_gt; /* segments '>' expands to: 1 .. max_gt */
    seg_t out[SEG_MAX * 2 + 2];
    size_t count;     /* calls of instances() */
    bool all_matched; /* outer matched every instance tried */
    bool exhausted;   /* stopped at INST_MAX */
    bool too_long;    /* an instance was over TOPIC_MAX bytes */
    char *buf;        /* TOPIC_MAX bytes for the instance */
} inst_t;

/* The instance out[0..n) as a topic: inner must match it (it was built
 * that way); record whether outer does. */
ORACLE static void try_instance(inst_t *st, size_t n, size_t len)
{
    /* at the end of a heap block, so that a read past it is an overflow */
    char *t = st->buf + TOPIC_MAX - len, *w = t;
    for (size_t k = 0; k < n; k++) {
        if (k > 0)
            *w++ = '.';
        memcpy(w, st->out[k].p, st->out[k].len);
        w += st->out[k].len;
    }
    REQUIRE((size_t)(w - t) == len);
    REQUIRE(topic_check(t, len, false) == TOPIC_OK);
    REQUIRE(topic_match(st->i, st->ilen, t, len));
    if (!topic_match(st->o, st->olen, t, len))
        st->all_matched = false;
}

/* Instances of inner from segment j on, out[0..n) built so far, len bytes
 * long as a topic. Every call counts against INST_MAX; an instance over
 * TOPIC_MAX bytes is no topic and ends its branch. */
ORACLE static void instances(inst_t *st, size_t j, size_t n, size_t len)
{
    if (st->count++ >= INST_MAX) {
        st->exhausted = true;
        return;
    }
    if (!st->all_matched)
        return; /* a counterexample is enough */
    if (len > TOPIC_MAX) {
        st->too_long = true; /* the grammar is unbounded, topics are not */
        return;
    }
    if (j == st->inner->n) {
        try_instance(st, n, len);
        return;
    }
    seg_t s = st->inner->s[j];
    if (seg_is(s, '*')) {
        for (size_t a = 0; a < st->nalpha && !st->exhausted; a++) {
            st->out[n] = st->alpha[a];
            instances(st, j + 1, n + 1, len + (n > 0) + st->alpha[a].len);
        }
    } else if (seg_is(s, '>')) {
        /* one to max_gt segments, each any value of the alphabet */
        size_t idx[SEG_MAX + 2];
        size_t shortest = SIZE_MAX;
        for (size_t a = 0; a < st->nalpha; a++)
            shortest = st->alpha[a].len < shortest ? st->alpha[a].len : shortest;
        for (size_t k = 1; k <= st->max_gt && k <= SEG_MAX; k++) {
            if (len + k * (shortest + 1) > TOPIC_MAX + 1) {
                st->too_long = true; /* k segments cannot fit */
                return;
            }
            memset(idx, 0, sizeof idx);
            for (;;) {
                size_t add = 0;
                for (size_t q = 0; q < k; q++) {
                    st->out[n + q] = st->alpha[idx[q]];
                    add += (n + q > 0) + st->alpha[idx[q]].len;
                }
                instances(st, j + 1, n + k, len + add);
                if (st->exhausted || !st->all_matched)
                    return;
                size_t q = 0;
                while (q < k && ++idx[q] == st->nalpha)
                    idx[q++] = 0;
                if (q == k)
                    break;
            }
        }
    } else {
        st->out[n] = s;
        instances(st, j + 1, n + 1, len + (n > 0) + s.len);
    }
}

/* topic_covers() is decided on the grammar: a pattern whose '>' could not
 * grow within TOPIC_MAX bytes still counts as unbounded, so "no" is only
 * checked when no instance was cut by the length limit. */
ORACLE static void check_covers(const char *o, size_t olen, const char *i, size_t ilen)
{
    static segs_t og, ig;
    static const char fresh[ALPHA_MAX + 1][3] = {"~0", "~1", "~2", "~3", "~4",
                                                 "~5", "~6", "~7", "~8"};
    split(o, olen, &og);
    split(i, ilen, &ig);
    bool covers = topic_covers(o, olen, i, ilen);

    inst_t st;
    memset(&st, 0, sizeof st);
    st.o = o;
    st.olen = olen;
    st.i = i;
    st.ilen = ilen;
    st.inner = &ig;
    st.all_matched = true;
    st.max_gt = og.n + 1;
    /* the literals of outer, and one segment that is none of them */
    bool complete = true;
    for (size_t k = 0; k < og.n; k++) {
        if (seg_is(og.s[k], '*') || seg_is(og.s[k], '>'))
            continue;
        bool dup = false;
        for (size_t a = 0; a < st.nalpha; a++)
            dup |= seg_eq(st.alpha[a], og.s[k]);
        if (dup)
            continue;
        if (st.nalpha == ALPHA_MAX) {
            complete = false;
            break;
        }
        st.alpha[st.nalpha++] = og.s[k];
    }
    bool have_fresh = false;
    for (int f = 0; f <= ALPHA_MAX && !have_fresh; f++) {
        seg_t cand = {fresh[f], 2};
        bool used = false;
        for (size_t k = 0; k < og.n; k++)
            used |= seg_eq(og.s[k], cand);
        if (!used) {
            st.alpha[st.nalpha++] = cand;
            have_fresh = true;
        }
    }
    st.buf = malloc(TOPIC_MAX);
    REQUIRE(st.buf != NULL);
    instances(&st, 0, 0, 0);
    free(st.buf);
    if (covers)
        REQUIRE(st.all_matched); /* sound: every instance tried is matched */
    else if (complete && have_fresh && !st.exhausted && !st.too_long)
        REQUIRE(!st.all_matched); /* complete: a counterexample exists */
}

/* ---------------------------------------------------------------------
 * The target
 * ------------------------------------------------------------------- */

typedef struct str {
    char *p;
    size_t len;
    int concrete; /* topic_check(.., false) */
    int pattern;  /* topic_check(.., true) */
} str_t;

static void check_one(str_t *s)
{
    s->concrete = topic_check(s->p, s->len, false);
    s->pattern = topic_check(s->p, s->len, true);
    REQUIRE(s->concrete == ref_check(s->p, s->len, false));
    REQUIRE(s->pattern == ref_check(s->p, s->len, true));
    REQUIRE(topic_strerror(s->concrete) != NULL && topic_strerror(s->pattern) != NULL);
    if (s->concrete == TOPIC_OK)
        REQUIRE(s->pattern == TOPIC_OK);
    if (s->pattern != TOPIC_OK)
        return;
    REQUIRE(s->concrete == TOPIC_OK || s->concrete == TOPIC_E_WILDCARD);
    REQUIRE(topic_is_pattern(s->p, s->len) == (s->concrete == TOPIC_E_WILDCARD));
    REQUIRE(topic_covers(s->p, s->len, s->p, s->len));
    REQUIRE(topic_covers(">", 1, s->p, s->len));
    if (s->concrete == TOPIC_OK) {
        REQUIRE(topic_match(s->p, s->len, s->p, s->len));
        REQUIRE(topic_match(">", 1, s->p, s->len));
        REQUIRE(topic_match("*", 1, s->p, s->len) == (memchr(s->p, '.', s->len) == NULL));
    }
}

static void check_pair(const str_t *a, const str_t *b)
{
    if (a->pattern != TOPIC_OK || b->pattern != TOPIC_OK)
        return;
    bool covers = topic_covers(a->p, a->len, b->p, b->len);
    if (b->concrete == TOPIC_OK) {
        bool m = topic_match(a->p, a->len, b->p, b->len);
        REQUIRE(m == ref_match(a->p, a->len, b->p, b->len));
        REQUIRE(covers == m); /* a concrete inner: covered exactly when matched */
    }
    if (covers && topic_covers(b->p, b->len, a->p, a->len))
        REQUIRE(a->len == b->len && memcmp(a->p, b->p, a->len) == 0);
    check_covers(a->p, a->len, b->p, b->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    str_t s[3];
    size_t start = 0, n = 0;
    for (size_t i = 0; i <= size && n < 3; i++) {
        if (i < size && data[i] != '\n')
            continue;
        s[n].len = i - start;
        s[n].p = malloc(s[n].len ? s[n].len : 1);
        REQUIRE(s[n].p != NULL);
        if (s[n].len > 0)
            memcpy(s[n].p, data + start, s[n].len);
        n++;
        start = i + 1;
    }
    for (size_t k = 0; k < n; k++)
        check_one(&s[k]);
    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++)
            check_pair(&s[a], &s[b]);
    }
    /* transitive on the samples */
    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++) {
            for (size_t c = 0; c < n; c++) {
                if (s[a].pattern || s[b].pattern || s[c].pattern)
                    continue;
                if (topic_covers(s[a].p, s[a].len, s[b].p, s[b].len) &&
                    topic_covers(s[b].p, s[b].len, s[c].p, s[c].len))
                    REQUIRE(topic_covers(s[a].p, s[a].len, s[c].p, s[c].len));
            }
        }
    }
    /* the whole input as one topic: '\n' is no topic byte */
    if (size <= TOPIC_MAX + 1) {
        char *w = malloc(size ? size : 1);
        REQUIRE(w != NULL);
        if (size > 0)
            memcpy(w, data, size);
        str_t whole = {w, size, 0, 0};
        check_one(&whole);
        free(w);
    }
    for (size_t k = 0; k < n; k++)
        free(s[k].p);
    return 0;
}
