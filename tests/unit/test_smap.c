/*
 * test_smap.c - the broker's string hash map (broker/smap.c): the keyed
 * hash keeps probe runs short even for keys chosen to collide under an
 * unkeyed hash, and insert/get/delete stay consistent through churn.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smap.h"
#include "testutil.h"

/* The hash the registry used before it was keyed: FNV-1a with a final
 * mix. Anyone could compute it offline to find colliding topic names. */
static uint64_t unkeyed(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

/* Longest distance of an entry from its home slot. */
static size_t max_probe(const smap_t *m)
{
    size_t worst = 0, mask = m->cap - 1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].hash != 0) {
            size_t d = (i - (m->slots[i].hash & mask)) & mask;
            if (d > worst)
                worst = d;
        }
    return worst;
}

START_TEST(colliding_names_do_not_collide)
{
    /* 2048 topic names whose unkeyed hash agrees in the low 12 bits: in a
     * table of 4096 slots they would all share one home slot. */
    enum { N = 2048 };
    static char names[N][24];
    size_t found = 0;
    for (uint64_t i = 0; found < N; i++) {
        char name[24];
        int len = snprintf(name, sizeof(name), "t.%llu", (unsigned long long)i);
        if ((unkeyed(name, (size_t)len) & 0xfff) == 0x5a5)
            memcpy(names[found++], name, (size_t)len + 1);
    }
    uint8_t key[16];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)(i * 37 + 11);
    smap_seed(key);
    smap_t m;
    smap_init(&m);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(smap_put(&m, names[i], strlen(names[i]), names[i]), 0);
    ck_assert_uint_eq(m.cap, 4096);
    size_t worst = max_probe(&m);
    /* Random placement of 2048 keys in 4096 slots: runs of a few dozen. */
    ck_assert_msg(worst < 64, "longest probe %zu for keys colliding without a key", worst);
    /* The old hash: every key on one home slot. */
    size_t same_home = 0;
    for (size_t i = 0; i < N; i++)
        same_home += (unkeyed(names[i], strlen(names[i])) & 4095) == 0x5a5;
    ck_assert_uint_eq(same_home, N);
    for (size_t i = 0; i < N; i++)
        ck_assert_ptr_eq(smap_get(&m, names[i], strlen(names[i])), names[i]);
    smap_destroy(&m);
}
END_TEST

START_TEST(different_keys_different_hashes)
{
    uint8_t a[16] = {1}, b[16] = {2};
    smap_seed(a);
    uint64_t ha = smap_hash("chat.lobby", 10);
    smap_seed(b);
    uint64_t hb = smap_hash("chat.lobby", 10);
    ck_assert_uint_ne(ha, hb);
    ck_assert_uint_ne(smap_hash("", 0), 0);
}
END_TEST

START_TEST(churn_stays_consistent)
{
    enum { N = 5000 };
    static char names[N][16];
    static bool present[N];
    smap_t m;
    smap_init(&m);
    xorshift_t x = {0x9e3779b97f4a7c15ull};
    for (int i = 0; i < N; i++)
        snprintf(names[i], sizeof(names[i]), "k%d", i);
    for (int round = 0; round < 200000; round++) {
        size_t i = xorshift_range(&x, 0, N - 1);
        size_t len = strlen(names[i]);
        if (present[i]) {
            ck_assert_ptr_eq(smap_del(&m, names[i], len), names[i]);
            present[i] = false;
        } else {
            ck_assert_ptr_null(smap_get(&m, names[i], len));
            ck_assert_int_eq(smap_put(&m, names[i], len, names[i]), 0);
            present[i] = true;
        }
    }
    size_t count = 0;
    for (int i = 0; i < N; i++) {
        void *v = smap_get(&m, names[i], strlen(names[i]));
        ck_assert(present[i] ? v == names[i] : v == NULL);
        count += present[i];
    }
    ck_assert_uint_eq(m.count, count);
    smap_destroy(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smap");
    TCase *tc = tcase_create("smap");
    tcase_add_test(tc, colliding_names_do_not_collide);
    tcase_add_test(tc, different_keys_different_hashes);
    tcase_add_test(tc, churn_stays_consistent);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
