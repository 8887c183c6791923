/* test_index.c - the trusted hash index: insert/lookup/delete, growth with
 * many keys (also concurrent), stripe locking, the record allocator and its
 * trusted-memory limit, keyed hashing. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/store/index.h"

#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#define MiB (1u << 20)

#define OK(call)                                                              \
    do {                                                                      \
        int ok_rc_ = (call);                                                  \
        REQUIRE(ok_rc_ == CL_OK);                                             \
    } while (0)

static size_t key_of(char *buf, unsigned i) { return (size_t)sprintf(buf, "key:%u", i); }

/* Inserts key (stripe taken here); grows when asked.  Returns the record. */
static kv_item *insert(kv_index *ix, const char *key, size_t klen)
{
    kv_item *it;
    if (kv_index_item_alloc(ix, klen, &it) != CL_OK)
        return NULL;
    memcpy(it->key, key, klen);
    it->hash = kv_index_hash(ix, (const uint8_t *)key, klen);
    kv_index_lock(ix, it->hash);
    int grow = do_kv_index_link(ix, it);
    kv_index_unlock(ix, it->hash);
    if (grow)
        kv_index_grow(ix);
    return it;
}

static kv_item *lookup(kv_index *ix, const char *key, size_t klen)
{
    uint64_t h = kv_index_hash(ix, (const uint8_t *)key, klen);
    kv_index_lock(ix, h);
    kv_item *it = do_kv_index_find(ix, h, (const uint8_t *)key, klen);
    kv_index_unlock(ix, h);
    return it;
}

static int erase(kv_index *ix, const char *key, size_t klen)
{
    uint64_t h = kv_index_hash(ix, (const uint8_t *)key, klen);
    kv_index_lock(ix, h);
    kv_item *it = do_kv_index_find(ix, h, (const uint8_t *)key, klen);
    if (it)
        do_kv_index_unlink(ix, it);
    kv_index_unlock(ix, h);
    if (it)
        kv_index_item_free(ix, it);
    return it != NULL;
}

static void test_insert_lookup_delete(void)
{
    kv_index *ix;
    OK(kv_index_create(64 * MiB, 12, &ix));
    kv_item *a = insert(ix, "alpha", 5), *b = insert(ix, "beta", 4);
    REQUIRE(a && b);
    a->cas = 11;
    CHECK(lookup(ix, "alpha", 5) == a);
    CHECK(lookup(ix, "beta", 4) == b);
    CHECK(lookup(ix, "alph", 4) == NULL);
    CHECK(lookup(ix, "alphaa", 6) == NULL);
    CHECK(lookup(ix, "gamma", 5) == NULL);
    CHECK_EQ(lookup(ix, "alpha", 5)->cas, 11);
    CHECK_EQ(kv_index_count(ix), 2);
    /* binary keys are fine: any bytes, 1..250 */
    char bin[250];
    for (int i = 0; i < 250; i++)
        bin[i] = (char)(i * 37);
    bin[7] = 0;
    kv_item *c = insert(ix, bin, 250);
    REQUIRE(c != NULL);
    CHECK(lookup(ix, bin, 250) == c);
    CHECK(lookup(ix, bin, 249) == NULL);

    CHECK(erase(ix, "alpha", 5));
    CHECK(!erase(ix, "alpha", 5));
    CHECK(lookup(ix, "alpha", 5) == NULL);
    CHECK(lookup(ix, "beta", 4) == b);
    CHECK_EQ(kv_index_count(ix), 2);

    kv_item *bad;
    CHECK_EQ(kv_index_item_alloc(ix, 0, &bad), CL_EBADKEY);
    CHECK_EQ(kv_index_item_alloc(ix, 251, &bad), CL_EBADKEY);
    kv_index_destroy(ix);
}

static void test_growth(void)
{
    kv_index *ix;
    OK(kv_index_create(256 * MiB, 0, &ix));
    unsigned p0 = kv_index_hashpower(ix);
    CHECK_EQ(p0, 11); /* raised to the stripe count */
    CHECK_EQ(kv_index_stripe_count(), 1u << 11);
    size_t t0 = kv_index_trusted_bytes(ix);
    enum { N = 50000 };
    char k[32];
    int ok = 1;
    for (unsigned i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        ok &= insert(ix, k, n) != NULL;
    }
    CHECK(ok);
    CHECK_EQ(kv_index_count(ix), N);
    /* load factor kept at most 1.5 */
    CHECK(((uint64_t)1 << kv_index_hashpower(ix)) * 3 / 2 >= N);
    CHECK(kv_index_hashpower(ix) >= 15);
    CHECK_EQ(kv_index_table_bytes(ix), ((size_t)1 << kv_index_hashpower(ix)) * sizeof(void *));
    CHECK(kv_index_trusted_bytes(ix) >= t0 + kv_index_table_bytes(ix) / 2 + (size_t)N * 112);
    int found = 0;
    for (unsigned i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        kv_item *it = lookup(ix, k, n);
        found += it && it->klen == n && memcmp(it->key, k, n) == 0;
    }
    CHECK_EQ(found, N);
    for (unsigned i = 0; i < N; i += 2) {
        size_t n = key_of(k, i);
        erase(ix, k, n);
    }
    found = 0;
    for (unsigned i = 0; i < N; i++) {
        size_t n = key_of(k, i);
        found += lookup(ix, k, n) != NULL;
    }
    CHECK_EQ(found, N / 2);
    CHECK_EQ(kv_index_count(ix), N / 2);
    kv_index_destroy(ix);
}

/* ---- stripes ----------------------------------------------------------------- */

struct grow_arg {
    kv_index *ix;
    volatile int done;
};

static void *grow_thread(void *p)
{
    struct grow_arg *g = p;
    kv_index_grow(g->ix);
    g->done = 1;
    return NULL;
}

static void *trylock_thread(void *p)
{
    kv_index *ix = ((void **)p)[0];
    uint64_t h = *(uint64_t *)((void **)p)[1];
    intptr_t r = kv_index_trylock(ix, h);
    if (r == 0)
        kv_index_unlock(ix, h);
    return (void *)r;
}

static int try_from_other_thread(kv_index *ix, uint64_t h)
{
    void *args[2] = { ix, &h };
    pthread_t th;
    void *r;
    pthread_create(&th, NULL, trylock_thread, args);
    pthread_join(th, &r);
    return (int)(intptr_t)r;
}

static void test_stripes(void)
{
    kv_index *ix;
    OK(kv_index_create(64 * MiB, 0, &ix));
    uint64_t mask = kv_index_stripe_count() - 1;
    /* find keys sharing a stripe with "a" and one that does not */
    uint64_t ha = kv_index_hash(ix, (const uint8_t *)"a", 1), same = 0, other = 0;
    char k[32];
    for (unsigned i = 0; !same || !other; i++) {
        size_t n = key_of(k, i);
        uint64_t h = kv_index_hash(ix, (const uint8_t *)k, n);
        if ((h & mask) == (ha & mask) && !same)
            same = h;
        else if ((h & mask) != (ha & mask) && !other)
            other = h;
    }
    kv_index_lock(ix, ha);
    CHECK_EQ(try_from_other_thread(ix, other), 0);     /* different stripe: free */
    CHECK_EQ(try_from_other_thread(ix, same), EBUSY);  /* same stripe: held */
    CHECK_EQ(try_from_other_thread(ix, ha), EBUSY);
    kv_index_unlock(ix, ha);
    CHECK_EQ(try_from_other_thread(ix, same), 0);

    /* growth waits for every stripe: it cannot run while one is held */
    for (unsigned i = 0; i < 4000; i++) {
        size_t n = key_of(k, i);
        kv_item *it;
        OK(kv_index_item_alloc(ix, n, &it));
        memcpy(it->key, k, n);
        it->hash = kv_index_hash(ix, it->key, n);
        kv_index_lock(ix, it->hash);
        do_kv_index_link(ix, it); /* no growth yet: load factor now ~2 */
        kv_index_unlock(ix, it->hash);
    }
    unsigned p0 = kv_index_hashpower(ix);
    kv_index_lock(ix, ha);
    struct grow_arg g = { ix, 0 };
    pthread_t th;
    pthread_create(&th, NULL, grow_thread, &g);
    usleep(50 * 1000);
    CHECK(!g.done);
    CHECK_EQ(kv_index_hashpower(ix), p0);
    kv_index_unlock(ix, ha);
    pthread_join(th, NULL);
    CHECK(g.done);
    CHECK_EQ(kv_index_hashpower(ix), p0 + 1);
    int found = 0;
    for (unsigned i = 0; i < 4000; i++) {
        size_t n = key_of(k, i);
        found += lookup(ix, k, n) != NULL;
    }
    CHECK_EQ(found, 4000);
    kv_index_destroy(ix);
}

/* ---- concurrent inserts, deletes and growth ------------------------------------- */

struct worker_arg {
    kv_index *ix;
    unsigned base, n;
    int errors;
};

/* Inserts base+i for every i; for every i divisible by 3 also deletes
 * base+i/2 (inserted earlier, and deleted by no other i). */
static void *worker(void *p)
{
    struct worker_arg *w = p;
    char k[32];
    for (unsigned i = 0; i < w->n; i++) {
        size_t n = key_of(k, w->base + i);
        if (!insert(w->ix, k, n))
            w->errors++;
        if (i % 3 == 0) {
            n = key_of(k, w->base + i / 2);
            if (!erase(w->ix, k, n))
                w->errors++;
        }
    }
    return NULL;
}

static void test_concurrent(void)
{
    kv_index *ix;
    OK(kv_index_create(256 * MiB, 0, &ix));
    enum { T = 3, N = 20000 };
    struct worker_arg w[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        w[i] = (struct worker_arg){ ix, (unsigned)i * 1000000u, N, 0 };
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(w[i].errors, 0);
    }
    /* recount exactly what must be present */
    char k[32];
    unsigned expect = 0, found = 0, wrong = 0;
    for (int t = 0; t < T; t++) {
        static uint8_t gone[N];
        memset(gone, 0, sizeof gone);
        for (unsigned i = 0; i < N; i += 3)
            gone[i / 2] = 1;
        for (unsigned i = 0; i < N; i++) {
            size_t n = key_of(k, w[t].base + i);
            int present = lookup(ix, k, n) != NULL;
            expect += !gone[i];
            found += present;
            wrong += present == gone[i];
        }
    }
    CHECK_EQ(wrong, 0);
    CHECK_EQ(found, expect);
    CHECK_EQ(kv_index_count(ix), expect);
    CHECK(kv_index_hashpower(ix) > 11);
    kv_index_destroy(ix);
}

/* ---- record allocator ------------------------------------------------------------ */

static void test_record_limit(void)
{
    kv_index *ix;
    OK(kv_index_create(64 * MiB, 11, &ix));
    size_t base = kv_index_trusted_bytes(ix);
    kv_index_destroy(ix);

    /* room for the table and exactly two record blocks */
    OK(kv_index_create(base + 2 * 65536 + 1000, 11, &ix));
    CHECK_EQ(kv_index_limit(ix), base + 2 * 65536 + 1000);
    kv_item *its[4096];
    int n = 0;
    while (n < 4096 && kv_index_item_alloc(ix, 10, &its[n]) == CL_OK)
        n++;
    CHECK(n > 1000 && n < 1300); /* 2 blocks of 112-byte records */
    kv_item *x;
    CHECK_EQ(kv_index_item_alloc(ix, 10, &x), CL_EFULL);
    CHECK_EQ(kv_index_item_alloc(ix, 200, &x), CL_EFULL); /* another class needs a block too */
    CHECK(kv_index_trusted_bytes(ix) <= kv_index_limit(ix));
    /* records are zeroed, distinct and do not overlap */
    int ok = 1;
    for (int i = 0; i < n; i++) {
        ok &= its[i]->klen == 10 && its[i]->cas == 0;
        if (i)
            ok &= (uint8_t *)its[i] >= (uint8_t *)its[i - 1] + sizeof(kv_item) + 10 ||
                  (uint8_t *)its[i] + sizeof(kv_item) + 10 <= (uint8_t *)its[i - 1];
    }
    CHECK(ok);
    /* a freed record is reused (key wiped) */
    memcpy(its[7]->key, "secretkey!", 10);
    kv_index_item_free(ix, its[7]);
    CHECK_EQ(kv_index_item_alloc(ix, 9, &x), CL_OK); /* same class (112 bytes) */
    CHECK(x == its[7]);
    static const uint8_t zero[10];
    CHECK_MEM(x->key, zero, 10);
    kv_index_destroy(ix);

    CHECK_EQ(kv_index_create(1000, 11, &ix), CL_EINVAL); /* table alone exceeds it */
}

static void test_keyed_hash(void)
{
    kv_index *a, *b;
    OK(kv_index_create(64 * MiB, 11, &a));
    OK(kv_index_create(64 * MiB, 11, &b));
    int differ = 0;
    char k[32];
    for (unsigned i = 0; i < 8; i++) {
        size_t n = key_of(k, i);
        differ += kv_index_hash(a, (uint8_t *)k, n) != kv_index_hash(b, (uint8_t *)k, n);
        CHECK_EQ(kv_index_hash(a, (uint8_t *)k, n), kv_index_hash(a, (uint8_t *)k, n));
    }
    CHECK_EQ(differ, 8); /* random seeds */
    kv_index_destroy(a);
    kv_index_destroy(b);
}

int main(void)
{
    RUN(test_insert_lookup_delete);
    RUN(test_growth);
    RUN(test_stripes);
    RUN(test_concurrent);
    RUN(test_record_limit);
    RUN(test_keyed_hash);
    return th_done();
}
