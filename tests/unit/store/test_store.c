/* test_store.c - the store engine through its public API (store.h): every
 * operation and error code, expiry and flush, storage vs LRU semantics,
 * value-size limits, statistics, the anti-stampede state (vivify, recache
 * tokens, invalidation; one winner among racing threads), and the
 * value-region adversary acting through --arena-file (bit flips, values
 * moved between keys, rollback). */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)

#define OK(call)                                                              \
    do {                                                                      \
        int ok_rc_ = (call);                                                  \
        if (ok_rc_ != CL_OK)                                                  \
            fprintf(stderr, "     %s -> %s\n", #call, cl_errname(ok_rc_));    \
        REQUIRE(ok_rc_ == CL_OK);                                             \
    } while (0)

static char tmpdir[64];

/* ---- helpers ------------------------------------------------------------------ */

struct sink {
    uint8_t *buf;
    size_t cap, len;
    int calls;
    int refuse;
};

static uint8_t *sink_fn(void *arg, const store_meta *m)
{
    struct sink *k = arg;
    k->calls++;
    if (k->refuse || m->len > k->cap)
        return NULL;
    k->len = m->len;
    return k->buf;
}

static void sink_init(struct sink *k, size_t cap)
{
    memset(k, 0, sizeof *k);
    k->cap = cap;
    k->buf = malloc(cap ? cap : 1);
}

static struct sink S; /* shared by the single-threaded tests */

static const uint8_t *K(const char *s) { return (const uint8_t *)s; }

static int set(store_thread *t, const char *key, const char *val, uint32_t flags, int64_t exptime)
{
    store_write w = { .mode = STORE_SET, .flags = flags, .exptime = exptime };
    return store_set(t, K(key), strlen(key), K(val), strlen(val), &w, NULL);
}

static int put(store_thread *t, store_mode mode, const char *key, const char *val, uint64_t cas,
               uint64_t *cas_out)
{
    store_write w = { .mode = mode, .flags = 0, .exptime = 0, .cas = cas };
    return store_set(t, K(key), strlen(key), K(val), strlen(val), &w, cas_out);
}

/* Gets key into S; returns the code. */
static int get(store_thread *t, const char *key, store_meta *m)
{
    S.len = 0;
    S.calls = 0;
    return store_get(t, K(key), strlen(key), NULL, sink_fn, &S, m);
}

/* 1 if key holds exactly val. */
static int holds(store_thread *t, const char *key, const char *val)
{
    return get(t, key, NULL) == CL_OK && S.len == strlen(val) && memcmp(S.buf, val, S.len) == 0;
}

static store *make_store(size_t memory, size_t max_value, const char *file, int evict,
                         store_thread **t)
{
    store_config cfg = { .memory_bytes = memory, .max_value = max_value,
                         .arena_file = file, .evict_lru = evict };
    store *s;
    OK(store_create(&cfg, &s));
    OK(store_thread_create(s, t));
    return s;
}

static void drop_store(store *s, store_thread *t)
{
    store_thread_destroy(t);
    store_destroy(s);
}

static store_stats stats_of(store *s)
{
    store_stats st;
    store_get_stats(s, &st);
    return st;
}

static void wait_until(int64_t when)
{
    while (store_now() < when)
        usleep(20 * 1000);
}

/* ---- basic operations ------------------------------------------------------ */

static void test_create_errors(void)
{
    store_config cfg = { 0 };
    store *s = NULL;
    CHECK_EQ(store_create(&cfg, &s), CL_EINVAL);
    cfg.memory_bytes = 4 * MiB;
    cfg.max_value = 8 * MiB;
    CHECK_EQ(store_create(&cfg, &s), CL_EINVAL);
    cfg.max_value = 0;
    cfg.arena_file = "/nonexistent-dir/arena";
    CHECK_EQ(store_create(&cfg, &s), CL_EIO);
    cfg.arena_file = NULL;
    cfg.index_bytes = 1000; /* too small for even the first table */
    CHECK_EQ(store_create(&cfg, &s), CL_EINVAL);
    CHECK(s == NULL);
    cfg.index_bytes = 0;
    OK(store_create(&cfg, &s));
    CHECK_EQ(store_max_value(s), STORE_DEFAULT_MAX_VALUE);
    store_stats st;
    store_get_stats(s, &st);
    CHECK_EQ(st.limit_maxbytes, 4 * MiB);
    CHECK_EQ(st.trusted_limit, 2 * MiB + 16 * MiB);
    store_destroy(s);
}

static void test_set_get(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    uint64_t c1, c2;
    int64_t now = store_now();

    CHECK_EQ(get(t, "nope", &m), CL_ENOTFOUND);
    CHECK_EQ(S.calls, 0);
    store_write w = { .mode = STORE_SET, .flags = 0xdeadbeef, .exptime = now + 1000 };
    CHECK_EQ(store_set(t, K("k"), 1, K("hello"), 5, &w, &c1), CL_OK);
    CHECK(c1 > 0);
    memset(&m, 0, sizeof m);
    CHECK_EQ(get(t, "k", &m), CL_OK);
    CHECK_EQ(S.calls, 1);
    CHECK_EQ(S.len, 5);
    CHECK_MEM(S.buf, "hello", 5);
    CHECK_EQ(m.flags, 0xdeadbeef);
    CHECK_EQ(m.len, 5);
    CHECK_EQ(m.cas, c1);
    CHECK_EQ(m.exptime, now + 1000);
    CHECK(m.last_access >= now && m.last_access <= now + 1);
    CHECK_EQ(m.fetched, 0);
    CHECK(m.slab_class >= 0);
    CHECK_EQ(get(t, "k", &m), CL_OK);
    CHECK_EQ(m.fetched, 1); /* fetched before this access */

    /* every write takes a new, larger CAS id */
    CHECK_EQ(store_set(t, K("k"), 1, K("world!"), 6, NULL, &c2), CL_OK);
    CHECK(c2 > c1);
    CHECK_EQ(get(t, "k", &m), CL_OK);
    CHECK_EQ(m.cas, c2);
    CHECK_EQ(m.flags, 0);
    CHECK_EQ(m.exptime, 0);
    CHECK_EQ(m.fetched, 0); /* a write clears it */
    CHECK(holds(t, "k", "world!"));

    /* metadata only: the sink is not called */
    store_get_opts meta_only = { .want_value = 0 };
    S.calls = 0;
    CHECK_EQ(store_get(t, K("k"), 1, &meta_only, sink_fn, &S, &m), CL_OK);
    CHECK_EQ(S.calls, 0);
    CHECK_EQ(m.len, 6);

    /* no_bump leaves the fetched bit alone */
    OK(set(t, "nb", "x", 0, 0));
    store_get_opts nobump = { .want_value = 1, .no_bump = 1 };
    CHECK_EQ(store_get(t, K("nb"), 2, &nobump, sink_fn, &S, &m), CL_OK);
    CHECK_EQ(store_get(t, K("nb"), 2, &nobump, sink_fn, &S, &m), CL_OK);
    CHECK_EQ(m.fetched, 0);

    /* a sink that refuses: CL_ENOMEM, nothing changes */
    S.refuse = 1;
    CHECK_EQ(get(t, "k", &m), CL_ENOMEM);
    S.refuse = 0;
    CHECK(holds(t, "k", "world!"));

    /* empty values */
    OK(set(t, "empty", "", 7, 0));
    CHECK_EQ(get(t, "empty", &m), CL_OK);
    CHECK_EQ(m.len, 0);
    CHECK_EQ(m.flags, 7);

    /* keys: any bytes, 1..250 */
    uint8_t key[251];
    for (int i = 0; i < 251; i++)
        key[i] = (uint8_t)(i * 13);
    key[3] = 0;
    key[4] = ' ';
    key[5] = '\n';
    CHECK_EQ(store_set(t, key, 250, K("max"), 3, NULL, NULL), CL_OK);
    CHECK_EQ(store_get(t, key, 250, NULL, sink_fn, &S, &m), CL_OK);
    CHECK_MEM(S.buf, "max", 3);
    CHECK_EQ(store_get(t, key, 249, NULL, sink_fn, &S, &m), CL_ENOTFOUND);
    store_arith_op ar = { .incr = 1, .delta = 1 };
    CHECK_EQ(store_set(t, key, 251, K("x"), 1, NULL, NULL), CL_EBADKEY);
    CHECK_EQ(store_set(t, key, 0, K("x"), 1, NULL, NULL), CL_EBADKEY);
    CHECK_EQ(store_get(t, key, 251, NULL, sink_fn, &S, &m), CL_EBADKEY);
    CHECK_EQ(store_get(t, key, 0, NULL, sink_fn, &S, &m), CL_EBADKEY);
    CHECK_EQ(store_delete(t, key, 251, 0), CL_EBADKEY);
    CHECK_EQ(store_delete(t, key, 0, 0), CL_EBADKEY);
    CHECK_EQ(store_touch(t, key, 251, 0), CL_EBADKEY);
    CHECK_EQ(store_touch(t, key, 0, 0), CL_EBADKEY);
    CHECK_EQ(store_arith(t, key, 251, &ar, NULL, NULL), CL_EBADKEY);
    CHECK_EQ(store_arith(t, key, 0, &ar, NULL, NULL), CL_EBADKEY);

    store_stats st = stats_of(s);
    CHECK_EQ(st.curr_items, 4);
    CHECK(st.get_hits >= 8);
    CHECK_EQ(st.get_misses, 2);
    drop_store(s, t);
}

static void test_write_modes(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    uint64_t c, c2;
    store_meta m;

    CHECK_EQ(put(t, STORE_REPLACE, "a", "1", 0, NULL), CL_ENOTSTORED);
    CHECK_EQ(put(t, STORE_APPEND, "a", "1", 0, NULL), CL_ENOTSTORED);
    CHECK_EQ(put(t, STORE_PREPEND, "a", "1", 0, NULL), CL_ENOTSTORED);
    CHECK_EQ(get(t, "a", NULL), CL_ENOTFOUND);
    CHECK_EQ(put(t, STORE_ADD, "a", "first", 0, &c), CL_OK);
    CHECK_EQ(put(t, STORE_ADD, "a", "second", 0, NULL), CL_ENOTSTORED);
    CHECK(holds(t, "a", "first"));
    CHECK_EQ(put(t, STORE_REPLACE, "a", "third", 0, &c2), CL_OK);
    CHECK(c2 > c);
    CHECK(holds(t, "a", "third"));

    /* cas */
    CHECK_EQ(put(t, STORE_SET, "a", "stale", c, NULL), CL_EEXISTS);
    CHECK(holds(t, "a", "third"));
    CHECK_EQ(put(t, STORE_SET, "missing", "x", c2, NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "missing", NULL), CL_ENOTFOUND);
    CHECK_EQ(put(t, STORE_SET, "a", "fourth", c2, &c), CL_OK);
    CHECK(holds(t, "a", "fourth"));
    CHECK_EQ(put(t, STORE_SET, "a", "fifth", c2, NULL), CL_EEXISTS); /* c2 is used up */
    store_stats st = stats_of(s);
    CHECK_EQ(st.cas_hits, 1);
    CHECK_EQ(st.cas_badval, 2);
    CHECK_EQ(st.cas_misses, 1);

    /* append / prepend keep flags and exptime, take a new CAS id */
    int64_t exp = store_now() + 5000;
    OK(set(t, "ap", "middle", 42, exp));
    CHECK_EQ(get(t, "ap", &m), CL_OK);
    uint64_t before = m.cas;
    CHECK_EQ(put(t, STORE_APPEND, "ap", "-end", 0, &c), CL_OK);
    CHECK_EQ(put(t, STORE_PREPEND, "ap", "start-", 0, &c2), CL_OK);
    CHECK(holds(t, "ap", "start-middle-end"));
    CHECK_EQ(get(t, "ap", &m), CL_OK);
    CHECK_EQ(m.flags, 42);
    CHECK_EQ(m.exptime, exp);
    CHECK(c > before && c2 > c && m.cas == c2);
    CHECK_EQ(put(t, STORE_APPEND, "ap", "!", c, NULL), CL_EEXISTS); /* cas honoured */
    CHECK_EQ(put(t, STORE_APPEND, "ap", "!", c2, NULL), CL_OK);
    CHECK(holds(t, "ap", "start-middle-end!"));
    /* growing across size classes */
    char big[5000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ(put(t, STORE_APPEND, "ap", big, 0, NULL), CL_OK);
    CHECK_EQ(get(t, "ap", &m), CL_OK);
    CHECK_EQ(m.len, 17 + 4999);
    CHECK_MEM(S.buf, "start-middle-end!bbb", 20);
    CHECK_EQ(S.buf[m.len - 1], 'b');
    CHECK_EQ(m.flags, 42);

    /* invalid mode */
    store_write bad = { .mode = (store_mode)99 };
    CHECK_EQ(store_set(t, K("a"), 1, K("x"), 1, &bad, NULL), CL_EINVAL);
    CHECK(holds(t, "a", "fourth"));
    drop_store(s, t);
}

static void test_delete_touch(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    uint64_t c;
    store_meta m;
    CHECK_EQ(store_delete(t, K("d"), 1, 0), CL_ENOTFOUND);
    CHECK_EQ(put(t, STORE_SET, "d", "v", 0, &c), CL_OK);
    CHECK_EQ(store_delete(t, K("d"), 1, c + 1), CL_EEXISTS);
    CHECK(holds(t, "d", "v"));
    CHECK_EQ(store_delete(t, K("d"), 1, c), CL_OK);
    CHECK_EQ(get(t, "d", NULL), CL_ENOTFOUND);
    OK(set(t, "d", "v2", 0, 0));
    CHECK_EQ(store_delete(t, K("d"), 1, 0), CL_OK);
    CHECK_EQ(store_delete(t, K("d"), 1, 0), CL_ENOTFOUND);

    CHECK_EQ(store_touch(t, K("tt"), 2, 0), CL_ENOTFOUND);
    CHECK_EQ(put(t, STORE_SET, "tt", "v", 0, &c), CL_OK);
    int64_t exp = store_now() + 777;
    CHECK_EQ(store_touch(t, K("tt"), 2, exp), CL_OK);
    CHECK_EQ(get(t, "tt", &m), CL_OK);
    CHECK_EQ(m.exptime, exp);
    CHECK_EQ(m.cas, c); /* touch is not a write */
    /* gat: get and touch */
    store_get_opts gat = { .want_value = 1, .touch = 1, .exptime = exp + 1 };
    CHECK_EQ(store_get(t, K("tt"), 2, &gat, sink_fn, &S, &m), CL_OK);
    CHECK_EQ(m.exptime, exp + 1);
    CHECK_EQ(get(t, "tt", &m), CL_OK);
    CHECK_EQ(m.exptime, exp + 1);
    /* touch into the past expires it */
    CHECK_EQ(store_touch(t, K("tt"), 2, store_now() - 1), CL_OK);
    CHECK_EQ(get(t, "tt", &m), CL_ENOTFOUND);

    store_stats st = stats_of(s);
    CHECK_EQ(st.delete_hits, 2);
    CHECK_EQ(st.delete_misses, 2);
    CHECK_EQ(st.touch_hits, 3);
    CHECK_EQ(st.touch_misses, 1);
    CHECK_EQ(st.cmd_touch, 4);
    drop_store(s, t);
}

static int arith(store_thread *t, const char *key, int incr, uint64_t delta, uint64_t *v)
{
    store_arith_op a = { .incr = incr, .delta = delta };
    return store_arith(t, K(key), strlen(key), &a, v, NULL);
}

static void test_arith(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    uint64_t v = 12345;
    store_meta m;

    CHECK_EQ(arith(t, "n", 1, 1, &v), CL_ENOTFOUND);
    CHECK_EQ(v, 12345); /* untouched */
    OK(set(t, "n", "10", 5, 0));
    CHECK_EQ(get(t, "n", &m), CL_OK);
    uint64_t c0 = m.cas;
    CHECK_EQ(arith(t, "n", 1, 5, &v), CL_OK);
    CHECK_EQ(v, 15);
    CHECK(holds(t, "n", "15"));
    CHECK_EQ(arith(t, "n", 0, 6, &v), CL_OK);
    CHECK_EQ(v, 9);
    CHECK(holds(t, "n", "9")); /* exact decimal, no padding */
    CHECK_EQ(arith(t, "n", 0, 100, &v), CL_OK);
    CHECK_EQ(v, 0); /* decr floors at 0 */
    CHECK(holds(t, "n", "0"));
    CHECK_EQ(get(t, "n", &m), CL_OK);
    CHECK_EQ(m.flags, 5);
    CHECK(m.cas > c0);

    OK(set(t, "w", "18446744073709551615", 0, 0));
    CHECK_EQ(arith(t, "w", 1, 2, &v), CL_OK);
    CHECK_EQ(v, 1); /* incr wraps at 2^64 */
    CHECK(holds(t, "w", "1"));

    static const char *const bad[] = { "abc", "12a", " 1", "1 ", "-1", "",
                                       "18446744073709551616", "000000000000000000001" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        OK(set(t, "bad", bad[i], 0, 0));
        CHECK_EQ(arith(t, "bad", 1, 1, &v), CL_ENONNUMERIC);
        CHECK(holds(t, "bad", bad[i]));
    }
    OK(set(t, "z", "00000000000000000007", 0, 0)); /* 20 digits are fine */
    CHECK_EQ(arith(t, "z", 1, 1, &v), CL_OK);
    CHECK_EQ(v, 8);

    /* cas and vivify (meta ma) */
    CHECK_EQ(get(t, "n", &m), CL_OK);
    store_arith_op a = { .incr = 1, .delta = 3, .cas = m.cas + 1 };
    CHECK_EQ(store_arith(t, K("n"), 1, &a, &v, NULL), CL_EEXISTS);
    a.cas = m.cas;
    store_meta m2;
    CHECK_EQ(store_arith(t, K("n"), 1, &a, &v, &m2), CL_OK);
    CHECK_EQ(v, 3);
    CHECK(m2.cas > m.cas && m2.len == 1 && m2.flags == 5);
    int64_t exp = store_now() + 99;
    store_arith_op viv = { .incr = 1, .delta = 3, .vivify = 1, .initial = 42, .exptime = exp };
    CHECK_EQ(store_arith(t, K("new"), 3, &viv, &v, &m2), CL_OK);
    CHECK_EQ(v, 42); /* created with the initial value, delta not applied */
    CHECK_EQ(m2.exptime, exp);
    CHECK(holds(t, "new", "42"));
    CHECK_EQ(store_arith(t, K("new"), 3, &viv, &v, NULL), CL_OK);
    CHECK_EQ(v, 45);

    store_stats st = stats_of(s);
    CHECK_EQ(st.incr_hits, 5); /* n, w, z, n with cas, new */
    CHECK_EQ(st.decr_hits, 2);
    CHECK_EQ(st.incr_misses, 2);
    drop_store(s, t);
}

/* ---- expiry and flush -------------------------------------------------------------- */

static void test_exptime_conversion(void)
{
    int64_t now = store_now();
    CHECK_EQ(store_exptime(0), 0);
    CHECK(store_exptime(100) >= now + 100 && store_exptime(100) <= now + 101);
    CHECK(store_exptime(2592000) >= now + 2592000);
    CHECK_EQ(store_exptime(2592001), 2592001); /* absolute (long past) */
    CHECK_EQ(store_exptime(now + 5000000), now + 5000000);
    int64_t neg = store_exptime(-1);
    CHECK(neg != 0 && neg <= now);
}

static void test_expiry(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    /* already expired: stored (replacing), but never visible */
    OK(set(t, "old", "v", 0, 0));
    OK(set(t, "old", "v2", 0, store_exptime(-1)));
    CHECK_EQ(get(t, "old", &m), CL_ENOTFOUND);
    OK(set(t, "past", "v", 0, store_now() - 10));
    CHECK_EQ(get(t, "past", NULL), CL_ENOTFOUND);
    CHECK_EQ(put(t, STORE_REPLACE, "past", "x", 0, NULL), CL_ENOTSTORED); /* expired = absent */
    OK(set(t, "past", "v", 0, store_now() - 10));
    CHECK_EQ(put(t, STORE_ADD, "past", "added", 0, NULL), CL_OK);
    CHECK(holds(t, "past", "added"));
    CHECK_EQ(store_touch(t, K("old"), 3, 0), CL_ENOTFOUND);
    CHECK_EQ(store_delete(t, K("old"), 3, 0), CL_ENOTFOUND);
    store_stats st = stats_of(s);
    CHECK_EQ(st.get_expired, 2);
    CHECK(st.reclaimed >= 2);
    CHECK(st.expired_unfetched >= 2);

    /* a one-second TTL, then a delayed flush a second later */
    int64_t now = store_now();
    OK(set(t, "ttl", "short", 0, now + 1));
    OK(set(t, "keep", "long", 0, now + 1000));
    OK(set(t, "flushme", "x", 0, 0));
    CHECK(holds(t, "ttl", "short"));
    store_flush(s, now + 2);
    wait_until(now + 1);
    CHECK_EQ(get(t, "ttl", NULL), CL_ENOTFOUND);
    CHECK(holds(t, "flushme", "x")); /* not yet */
    CHECK(holds(t, "keep", "long"));
    wait_until(now + 2);
    CHECK_EQ(get(t, "flushme", NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "keep", NULL), CL_ENOTFOUND); /* stored before the flush time */
    OK(set(t, "after", "y", 0, 0));               /* stored at the flush second: survives */
    CHECK(holds(t, "after", "y"));
    st = stats_of(s);
    CHECK_EQ(st.get_expired, 3);
    CHECK_EQ(st.get_flushed, 2);
    CHECK_EQ(st.cmd_flush, 1);
    drop_store(s, t);
}

static void test_flush_now(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    OK(set(t, "a", "1", 0, 0));
    OK(set(t, "b", "2", 0, 0));
    store_flush(s, 0);
    CHECK_EQ(get(t, "a", NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "b", NULL), CL_ENOTFOUND);
    OK(set(t, "c", "3", 0, 0)); /* same second, after the flush: visible */
    CHECK(holds(t, "c", "3"));
    CHECK_EQ(put(t, STORE_ADD, "a", "new", 0, NULL), CL_OK);
    CHECK(holds(t, "a", "new"));
    /* a delayed flush is cancelled by an immediate one, and the latest
     * delayed request replaces an earlier one */
    store_flush(s, store_now() + 1000);
    store_flush(s, 0);
    OK(set(t, "d", "4", 0, 0));
    CHECK(holds(t, "d", "4"));
    store_flush(s, store_now() + 1000);
    store_flush(s, store_now() + 2000);
    CHECK(holds(t, "d", "4"));
    /* flushed items are reclaimed when the arena runs short (see test_storage) */
    store_stats st = stats_of(s);
    CHECK_EQ(st.cmd_flush, 5);
    CHECK_EQ(st.get_flushed, 2);
    drop_store(s, t);
}

/* ---- storage vs cache semantics --------------------------------------------------- */

static void fill_value(char *v, size_t len, unsigned i)
{
    for (size_t j = 0; j < len; j++)
        v[j] = (char)('a' + (i + j) % 26);
    v[len] = 0;
}

static void test_storage_full(void)
{
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, NULL, 0, &t);
    char key[32], val[1001];
    unsigned n = 0;
    int rc;
    for (;;) {
        snprintf(key, sizeof key, "full:%u", n);
        fill_value(val, 1000, n);
        rc = set(t, key, val, 0, 0);
        if (rc != CL_OK)
            break;
        n++;
    }
    CHECK_EQ(rc, CL_EFULL);
    CHECK(n > 3000 && n < 4 * MiB / 1000);
    store_stats st = stats_of(s);
    CHECK_EQ(st.evictions, 0);
    CHECK_EQ(st.out_of_memory, 1);
    CHECK_EQ(st.curr_items, n);
    CHECK(st.untrusted_bytes > 3 * MiB && st.untrusted_bytes <= 4 * MiB);
    /* everything stored is intact */
    int intact = 0;
    for (unsigned i = 0; i < n; i++) {
        snprintf(key, sizeof key, "full:%u", i);
        fill_value(val, 1000, i);
        intact += holds(t, key, val);
    }
    CHECK_EQ(intact, n);
    /* a failed overwrite (needs a class with no page) leaves the item as it was */
    char big[20001];
    fill_value(big, 20000, 1);
    CHECK_EQ(set(t, "full:0", big, 0, 0), CL_EFULL);
    fill_value(val, 1000, 0);
    CHECK(holds(t, "full:0", val));
    CHECK_EQ(put(t, STORE_APPEND, "full:1", big, 0, NULL), CL_EFULL);
    fill_value(val, 1000, 1);
    CHECK(holds(t, "full:1", val));
    /* deleting makes room again */
    CHECK_EQ(store_delete(t, K("full:5"), 6, 0), CL_OK);
    OK(set(t, "fresh", val, 0, 0));
    CHECK_EQ(set(t, "fresh2", val, 0, 0), CL_EFULL);

    /* expired and flushed items are reclaimed for new writes */
    CHECK_EQ(store_touch(t, K("full:7"), 6, store_now() - 1), CL_OK);
    OK(set(t, "fresh2", val, 0, 0));
    store_flush(s, 0);
    unsigned m = 0;
    for (; m < n; m++) {
        snprintf(key, sizeof key, "again:%u", m);
        if (set(t, key, val, 0, 0) != CL_OK)
            break;
    }
    CHECK(m >= n - 2);
    st = stats_of(s);
    CHECK_EQ(st.evictions, 0);
    CHECK(st.reclaimed >= m);
    drop_store(s, t);
}

static void test_evict_lru(void)
{
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, NULL, 1, &t);
    char key[32], val[1001];
    unsigned n = 12000; /* about three times what fits */
    int fails = 0;
    for (unsigned i = 0; i < n; i++) {
        snprintf(key, sizeof key, "lru:%u", i);
        fill_value(val, 1000, i);
        fails += set(t, key, val, 0, 0) != CL_OK;
        if (i == 0) /* fetched once: an eviction that is not "unfetched" */
            CHECK(holds(t, key, val));
    }
    CHECK_EQ(fails, 0);
    store_stats st = stats_of(s);
    CHECK(st.evictions >= n - 4 * MiB / 1000);
    CHECK_EQ(st.evicted_unfetched, st.evictions - 1);
    CHECK_EQ(st.curr_items, n - st.evictions);
    CHECK_EQ(st.out_of_memory, 0);
    /* the oldest are gone, the newest are there */
    CHECK_EQ(get(t, "lru:0", NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "lru:1", NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "lru:2000", NULL), CL_ENOTFOUND);
    int present = 0;
    for (unsigned i = n - 1000; i < n; i++) {
        snprintf(key, sizeof key, "lru:%u", i);
        fill_value(val, 1000, i);
        present += holds(t, key, val);
    }
    CHECK_EQ(present, 1000);
    drop_store(s, t);
}

static void test_index_full(void)
{
    store_config cfg = { .memory_bytes = 16 * MiB, .index_bytes = 1 * MiB };
    store *s;
    store_thread *t;
    OK(store_create(&cfg, &s));
    OK(store_thread_create(s, &t));
    char key[32];
    unsigned n = 0;
    int rc;
    while ((rc = set(t, (snprintf(key, sizeof key, "ix:%u", n), key), "v", 0, 0)) == CL_OK)
        n++;
    CHECK_EQ(rc, CL_EFULL);
    CHECK(n > 1000);
    store_stats st = stats_of(s);
    CHECK(st.trusted_bytes - st.trusted_limit < 4 * MiB); /* + arena metadata, scratch */
    CHECK_EQ(st.curr_items, n);
    CHECK_EQ(st.out_of_memory, 1);
    /* overwrites of existing keys need no new record */
    OK(set(t, "ix:3", "other", 0, 0));
    CHECK(holds(t, "ix:3", "other"));
    store_arith_op viv = { .incr = 1, .vivify = 1 };
    CHECK_EQ(store_arith(t, K("ix:new"), 6, &viv, NULL, NULL), CL_EFULL);
    /* an expired item gives its record to a new key */
    CHECK_EQ(store_touch(t, K("ix:9"), 4, store_now() - 1), CL_OK);
    OK(set(t, "ix:new", "v", 0, 0));
    drop_store(s, t);
}

static void test_too_big(void)
{
    store_thread *t;
    store *s = make_store(4 * MiB, 10000, NULL, 0, &t);
    CHECK_EQ(store_max_value(s), 10000);
    uint8_t *v = calloc(1, 10001);
    REQUIRE(v != NULL);
    CHECK_EQ(store_set(t, K("big"), 3, v, 10001, NULL, NULL), CL_ETOOBIG);
    CHECK_EQ(get(t, "big", NULL), CL_ENOTFOUND);
    CHECK_EQ(store_set(t, K("big"), 3, v, 10000, NULL, NULL), CL_OK);
    store_write ap = { .mode = STORE_APPEND };
    CHECK_EQ(store_set(t, K("big"), 3, v, 1, &ap, NULL), CL_ETOOBIG);
    store_meta m;
    CHECK_EQ(get(t, "big", &m), CL_OK);
    CHECK_EQ(m.len, 10000);
    OK(set(t, "half", "x", 0, 0));
    CHECK_EQ(store_set(t, K("half"), 4, v, 9999, &ap, NULL), CL_OK);
    CHECK_EQ(store_set(t, K("half"), 4, v, 1, &ap, NULL), CL_ETOOBIG);
    free(v);
    drop_store(s, t);
}

/* ---- statistics ---------------------------------------------------------------- */

static void test_byte_stats(void)
{
    store_thread *t;
    store *s = make_store(16 * MiB, 0, NULL, 0, &t);
    store_stats a = stats_of(s);
    CHECK_EQ(a.bytes, 0);
    CHECK_EQ(a.untrusted_bytes, 0);
    CHECK_EQ(a.curr_items, 0);
    CHECK(a.trusted_bytes > 0);
    CHECK_EQ(a.hash_bytes, (uint64_t)8 << a.hash_power_level);

    char key[32], val[501];
    fill_value(val, 500, 0);
    for (unsigned i = 0; i < 3000; i++) {
        snprintf(key, sizeof key, "st:%u", i);
        OK(set(t, key, val, 0, 0));
    }
    store_stats b = stats_of(s);
    CHECK_EQ(b.bytes, 3000 * 500);
    CHECK_EQ(b.curr_items, 3000);
    CHECK_EQ(b.total_items, 3000);
    CHECK(b.untrusted_bytes >= 3000 * 500 && b.untrusted_bytes <= 3000 * 500 * 5 / 4);
    CHECK(b.trusted_bytes >= a.trusted_bytes + 3000 * 112); /* a record per item */
    CHECK_EQ(b.cmd_set, 3000);

    for (unsigned i = 0; i < 3000; i += 2) {
        snprintf(key, sizeof key, "st:%u", i);
        OK(store_delete(t, K(key), strlen(key), 0));
    }
    store_stats c = stats_of(s);
    CHECK_EQ(c.bytes, 1500 * 500);
    CHECK_EQ(c.curr_items, 1500);
    CHECK_EQ(c.untrusted_bytes * 2, b.untrusted_bytes);
    OK(set(t, "st:1", "short", 0, 0));
    CHECK_EQ(stats_of(s).bytes, 1499 * 500 + 5);

    /* counters of a destroyed thread are kept */
    store_thread *t2;
    OK(store_thread_create(s, &t2));
    OK(set(t2, "other", "v", 0, 0));
    store_thread_destroy(t2);
    store_stats d = stats_of(s);
    CHECK_EQ(d.cmd_set, 3002);
    CHECK_EQ(d.bytes, 1499 * 500 + 5 + 1);
    drop_store(s, t);
}

/* ---- anti-stampede state: vivify, recache, invalidate (meta N, R, I) ----------- */

static const store_get_opts RECACHE = { .want_value = 1, .recache = 1 };

/* A read with opts into S. */
static int oget(store_thread *t, const char *key, const store_get_opts *o, store_meta *m)
{
    S.len = 0;
    return store_get(t, K(key), strlen(key), o, sink_fn, &S, m);
}

static int invalidate(store_thread *t, const char *key, uint64_t cas, uint64_t *cas_out)
{
    return store_invalidate(t, K(key), strlen(key), cas, 0, 0, cas_out);
}

static void test_vivify(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    int64_t exp = store_now() + 30;
    store_get_opts viv = { .want_value = 1, .recache = 1, .vivify = 1, .vivify_exptime = exp };

    store_stats st0 = stats_of(s);
    CHECK_EQ(oget(t, "v", &viv, &m), CL_OK);
    CHECK(m.won && !m.token_sent && !m.stale && !m.fetched);
    CHECK_EQ(m.len, 0);
    CHECK_EQ(m.flags, 0);
    CHECK_EQ(m.exptime, exp);
    uint64_t cas = m.cas;
    store_stats st = stats_of(s);
    CHECK_EQ(st.cmd_get - st0.cmd_get, 1);
    CHECK_EQ(st.get_misses - st0.get_misses, 1); /* the key was absent */
    CHECK_EQ(st.get_hits, st0.get_hits);
    CHECK_EQ(st.cmd_set, st0.cmd_set);
    CHECK_EQ(st.curr_items, 1);

    /* every later reader learns the token is out; nobody wins again */
    CHECK_EQ(oget(t, "v", &viv, &m), CL_OK);
    CHECK(!m.won && m.token_sent && !m.stale && m.fetched);
    CHECK_EQ(m.cas, cas); /* the same item, not created again */
    CHECK_EQ(oget(t, "v", &RECACHE, &m), CL_OK);
    CHECK(!m.won && m.token_sent);
    CHECK_EQ(get(t, "v", &m), CL_OK); /* a plain read sees the state, takes nothing */
    CHECK(!m.won && m.token_sent);
    CHECK_EQ(stats_of(s).get_hits - st0.get_hits, 3);

    /* a write ends it: a vivifying read then just reads */
    OK(set(t, "v", "real", 0, 0));
    CHECK_EQ(oget(t, "v", &viv, &m), CL_OK);
    CHECK(!m.won && !m.token_sent && !m.stale);
    CHECK(S.len == 4 && memcmp(S.buf, "real", 4) == 0);
    /* a delete too: the next vivifying reader wins a new empty item */
    CHECK_EQ(store_delete(t, K("v"), 1, 0), CL_OK);
    CHECK_EQ(oget(t, "v", &viv, &m), CL_OK);
    CHECK(m.won && m.len == 0);

    /* a touch in the same read wins over the vivify TTL */
    store_get_opts vt = viv;
    vt.touch = 1;
    vt.exptime = exp + 70;
    CHECK_EQ(oget(t, "vt", &vt, &m), CL_OK);
    CHECK(m.won);
    CHECK_EQ(m.exptime, exp + 70);
    CHECK_EQ(get(t, "vt", &m), CL_OK);
    CHECK_EQ(m.exptime, exp + 70);

    /* an item born expired is a miss, and nothing is left behind */
    store_get_opts past = viv;
    past.vivify_exptime = -1;
    CHECK_EQ(oget(t, "gone", &past, &m), CL_ENOTFOUND);
    CHECK_EQ(get(t, "gone", NULL), CL_ENOTFOUND);
    drop_store(s, t);

    /* no room for the new item: the read fails, nothing is created */
    s = make_store(4 * MiB, 64 * 1024, NULL, 0, &t);
    char key[32], val[1001];
    unsigned n = 0;
    for (;; n++) {
        snprintf(key, sizeof key, "full:%u", n);
        fill_value(val, 1000, n);
        if (set(t, key, val, 0, 0) != CL_OK)
            break;
    }
    CHECK_EQ(oget(t, "new", &viv, &m), CL_EFULL);
    CHECK_EQ(stats_of(s).curr_items, n);
    CHECK_EQ(oget(t, "full:0", &viv, &m), CL_OK); /* present keys still read */
    CHECK(!m.won && m.len == 1000);
    drop_store(s, t);
}

static void test_recache_ttl(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    int64_t now = store_now();
    store_get_opts r30 = { .want_value = 1, .recache = 1, .recache_before = now + 30 };

    /* 10 s left < 30: the first reader wins, the others are told */
    OK(set(t, "r", "x", 0, now + 10));
    CHECK_EQ(oget(t, "r", &r30, &m), CL_OK);
    CHECK(m.won && !m.token_sent && !m.stale);
    CHECK_EQ(oget(t, "r", &r30, &m), CL_OK);
    CHECK(!m.won && m.token_sent);
    CHECK_EQ(oget(t, "r", &RECACHE, &m), CL_OK);
    CHECK(!m.won && m.token_sent);
    /* a touch leaves the token out; a write hands it back */
    OK(store_touch(t, K("r"), 1, now + 5));
    CHECK_EQ(oget(t, "r", &r30, &m), CL_OK);
    CHECK(!m.won && m.token_sent);
    OK(set(t, "r", "y", 0, now + 10));
    CHECK_EQ(oget(t, "r", &r30, &m), CL_OK);
    CHECK(m.won && !m.token_sent);

    /* enough TTL left, or none at all: no token */
    OK(set(t, "long", "x", 0, now + 100));
    CHECK_EQ(oget(t, "long", &r30, &m), CL_OK);
    CHECK(!m.won && !m.token_sent);
    OK(set(t, "never", "x", 0, 0));
    CHECK_EQ(oget(t, "never", &r30, &m), CL_OK);
    CHECK(!m.won && !m.token_sent);

    /* a read that does not ask, or fails, takes nothing */
    OK(set(t, "r2", "x", 0, now + 10));
    store_get_opts ask_not = r30;
    ask_not.recache = 0;
    CHECK_EQ(oget(t, "r2", &ask_not, &m), CL_OK);
    CHECK(!m.won && !m.token_sent);
    S.refuse = 1;
    CHECK_EQ(oget(t, "r2", &r30, &m), CL_ENOMEM);
    S.refuse = 0;
    CHECK_EQ(oget(t, "r2", &r30, &m), CL_OK);
    CHECK(m.won);

    /* R judges the TTL the item had before this read's touch */
    OK(set(t, "r3", "x", 0, now + 10));
    store_get_opts rt = r30;
    rt.touch = 1;
    rt.exptime = now + 100;
    CHECK_EQ(oget(t, "r3", &rt, &m), CL_OK);
    CHECK(m.won);
    CHECK_EQ(m.exptime, now + 100);
    drop_store(s, t);
}

static void test_invalidate(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    int64_t now = store_now();
    uint64_t c1, c2, c3, c4;

    OK(put(t, STORE_SET, "i", "value", 0, &c1));
    store_stats st0 = stats_of(s);
    CHECK_EQ(invalidate(t, "nope", 0, NULL), CL_ENOTFOUND);
    CHECK_EQ(invalidate(t, "i", c1 + 1, NULL), CL_EEXISTS);
    CHECK_EQ(store_invalidate(t, K(""), 0, 0, 0, 0, NULL), CL_EBADKEY);
    OK(invalidate(t, "i", c1, &c2));
    CHECK(c2 > c1);
    CHECK_EQ(stats_of(s).delete_misses - st0.delete_misses, 1);
    CHECK_EQ(stats_of(s).delete_hits, st0.delete_hits);

    /* still served (same value and TTL), stale, under the new CAS */
    CHECK(holds(t, "i", "value"));
    CHECK_EQ(get(t, "i", &m), CL_OK);
    CHECK(m.stale && !m.token_sent && !m.won);
    CHECK_EQ(m.cas, c2);
    CHECK_EQ(m.exptime, 0);
    /* the first recache reader wins, later ones are told */
    CHECK_EQ(oget(t, "i", &RECACHE, &m), CL_OK);
    CHECK(m.won && m.stale && !m.token_sent);
    CHECK(S.len == 5 && memcmp(S.buf, "value", 5) == 0);
    CHECK_EQ(oget(t, "i", &RECACHE, &m), CL_OK);
    CHECK(!m.won && m.stale && m.token_sent);

    /* invalidating again takes the token back; touch sets the TTL */
    OK(store_invalidate(t, K("i"), 1, 0, 1, now + 30, &c3));
    CHECK(c3 > c2);
    CHECK_EQ(get(t, "i", &m), CL_OK);
    CHECK(m.stale && !m.token_sent);
    CHECK_EQ(m.exptime, now + 30);
    CHECK_EQ(oget(t, "i", &RECACHE, &m), CL_OK);
    CHECK(m.won);

    /* a writer holding an older CAS: refused, unless stale_if_older, which
     * stores the value stale, keeping the TTL and the token */
    store_write w = { .mode = STORE_SET, .flags = 7, .exptime = 0, .cas = c1 };
    CHECK_EQ(store_set(t, K("i"), 1, K("older"), 5, &w, NULL), CL_EEXISTS);
    w.stale_if_older = 1;
    OK(store_set(t, K("i"), 1, K("older"), 5, &w, &c4));
    CHECK(c4 > c3);
    CHECK(holds(t, "i", "older"));
    CHECK_EQ(get(t, "i", &m), CL_OK);
    CHECK(m.stale && m.token_sent);
    CHECK_EQ(m.exptime, now + 30);
    CHECK_EQ(m.flags, 7);
    CHECK_EQ(m.cas, c4);
    /* a newer CAS is refused; add, append and prepend never store stale */
    w.cas = c4 + 1000;
    CHECK_EQ(store_set(t, K("i"), 1, K("newer"), 5, &w, NULL), CL_EEXISTS);
    w.cas = c1;
    w.mode = STORE_APPEND;
    CHECK_EQ(store_set(t, K("i"), 1, K("+"), 1, &w, NULL), CL_EEXISTS);
    w.mode = STORE_PREPEND;
    CHECK_EQ(store_set(t, K("i"), 1, K("+"), 1, &w, NULL), CL_EEXISTS);
    w.mode = STORE_ADD;
    CHECK_EQ(store_set(t, K("i"), 1, K("+"), 1, &w, NULL), CL_EEXISTS);
    w.mode = STORE_REPLACE;
    OK(store_set(t, K("i"), 1, K("repl"), 4, &w, &c4));
    CHECK_EQ(get(t, "i", &m), CL_OK);
    CHECK(m.stale && m.token_sent);
    CHECK_EQ(stats_of(s).cas_hits - st0.cas_hits, 2);
    /* the current CAS is a plain compare-and-set: fresh again */
    w.mode = STORE_SET;
    w.cas = c4;
    w.exptime = now + 60;
    OK(store_set(t, K("i"), 1, K("fresh"), 5, &w, NULL));
    CHECK_EQ(get(t, "i", &m), CL_OK);
    CHECK(!m.stale && !m.token_sent);
    CHECK_EQ(m.exptime, now + 60);

    /* touch and incr keep the state, as memcached; append clears it */
    OK(set(t, "n", "10", 3, 0));
    OK(invalidate(t, "n", 0, NULL));
    CHECK_EQ(oget(t, "n", &RECACHE, &m), CL_OK);
    CHECK(m.won);
    OK(store_touch(t, K("n"), 1, now + 90));
    uint64_t v;
    CHECK_EQ(arith(t, "n", 1, 1, &v), CL_OK);
    CHECK_EQ(v, 11);
    CHECK_EQ(get(t, "n", &m), CL_OK);
    CHECK(m.stale && m.token_sent);
    CHECK_EQ(m.exptime, now + 90);
    CHECK_EQ(m.flags, 3);
    OK(put(t, STORE_APPEND, "n", "0", 0, NULL));
    CHECK_EQ(get(t, "n", &m), CL_OK);
    CHECK(!m.stale && !m.token_sent);
    CHECK(holds(t, "n", "110"));

    /* an empty value can be invalidated too */
    OK(set(t, "e", "", 0, 0));
    OK(invalidate(t, "e", 0, NULL));
    CHECK_EQ(oget(t, "e", &RECACHE, &m), CL_OK);
    CHECK(m.won && m.stale && m.len == 0);

    /* flush_all covers items invalidated before it */
    OK(invalidate(t, "i", 0, NULL));
    store_flush(s, 0);
    CHECK_EQ(get(t, "i", NULL), CL_ENOTFOUND);
    CHECK_EQ(invalidate(t, "n", 0, NULL), CL_ENOTFOUND);
    CHECK_EQ(stats_of(s).integrity_failures, 0);
    drop_store(s, t);
}

static void test_arith_touch(void)
{
    store_thread *t;
    store *s = make_store(8 * MiB, 0, NULL, 0, &t);
    store_meta m;
    uint64_t v;
    int64_t now = store_now();
    OK(set(t, "a", "1", 0, now + 10));
    store_stats st0 = stats_of(s);
    store_arith_op op = { .incr = 1, .delta = 1, .touch = 1, .touch_exptime = now + 50 };
    OK(store_arith(t, K("a"), 1, &op, &v, &m));
    CHECK_EQ(v, 2);
    CHECK_EQ(m.exptime, now + 50); /* the metadata returned is the item's */
    CHECK_EQ(get(t, "a", &m), CL_OK);
    CHECK_EQ(m.exptime, now + 50);
    CHECK_EQ(stats_of(s).cmd_touch, st0.cmd_touch); /* one arithmetic operation */
    /* a vivified item takes the touch TTL too */
    op.vivify = 1;
    op.initial = 5;
    op.exptime = now + 10;
    OK(store_arith(t, K("b"), 1, &op, &v, &m));
    CHECK_EQ(v, 5);
    CHECK_EQ(m.exptime, now + 50);
    /* a failed operation touches nothing */
    OK(set(t, "c", "x", 0, now + 10));
    CHECK_EQ(store_arith(t, K("c"), 1, &op, &v, NULL), CL_ENONNUMERIC);
    CHECK_EQ(get(t, "c", &m), CL_OK);
    CHECK_EQ(m.exptime, now + 10);
    op.vivify = 0;
    CHECK_EQ(store_arith(t, K("d"), 1, &op, &v, NULL), CL_ENOTFOUND);
    CHECK_EQ(get(t, "d", NULL), CL_ENOTFOUND);
    drop_store(s, t);
}

/* ---- the adversary at the arena file -------------------------------------------- */

struct file {
    const char *path;
    size_t size;
};

static uint8_t *snapshot(const struct file *f)
{
    uint8_t *b = malloc(f->size);
    int fd = open(f->path, O_RDONLY);
    if (!b || fd < 0 || pread(fd, b, f->size, 0) != (ssize_t)f->size) {
        fprintf(stderr, "cannot read %s\n", f->path);
        exit(1);
    }
    close(fd);
    return b;
}

static void file_write(const struct file *f, size_t off, const void *p, size_t n)
{
    int fd = open(f->path, O_WRONLY);
    if (fd < 0 || pwrite(fd, p, n, (off_t)off) != (ssize_t)n) {
        fprintf(stderr, "cannot write %s\n", f->path);
        exit(1);
    }
    close(fd);
}

/* Where the ciphertext of a len-byte value written between snapshots a
 * and b starts: 1 if the changed range pins it down exactly. */
static int locate(const uint8_t *a, const uint8_t *b, size_t size, size_t len, size_t *start)
{
    size_t first = SIZE_MAX, last = 0;
    for (size_t i = 0; i < size; i++)
        if (a[i] != b[i]) {
            if (first == SIZE_MAX)
                first = i;
            last = i;
        }
    *start = first;
    return first != SIZE_MAX && last - first + 1 == len;
}

/* Writes key=val and finds its ciphertext in the file (rewriting if a
 * ciphertext happens to begin or end with an unchanged byte). */
static size_t write_and_locate(store_thread *t, const struct file *f, const char *key, const char *val)
{
    for (int tries = 0; tries < 20; tries++) {
        uint8_t *a = snapshot(f);
        OK(set(t, key, val, 0, 0));
        uint8_t *b = snapshot(f);
        size_t start;
        int ok = locate(a, b, f->size, strlen(val), &start);
        free(a);
        free(b);
        if (ok)
            return start;
    }
    REQUIRE(!"could not locate a value in the arena file");
    return 0;
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static void test_tamper_flip(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/arena-flip", tmpdir);
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, path, 0, &t);
    struct file f = { path, 4 * MiB };
    char v1[301], v2[301], v3[301];
    fill_value(v1, 300, 1);
    fill_value(v2, 300, 2);
    fill_value(v3, 300, 3);
    OK(set(t, "k1", v1, 0, 0));
    size_t at = write_and_locate(t, &f, "k2", v2);
    OK(set(t, "k3", v3, 0, 0));

    /* no plaintext in the file */
    uint8_t *snap = snapshot(&f);
    CHECK(memmem(snap, f.size, v1, 32) == NULL);
    CHECK(memmem(snap, f.size, v2, 32) == NULL);
    CHECK(memmem(snap, f.size, v3, 32) == NULL);

    uint8_t byte = snap[at + 150] ^ 0x04; /* flip one bit in the middle of k2's value */
    free(snap);
    file_write(&f, at + 150, &byte, 1);

    memset(S.buf, 0x55, 300);
    CHECK_EQ(get(t, "k2", NULL), CL_EINTEGRITY);
    CHECK_EQ(S.calls, 1);
    CHECK(all_zero(S.buf, 300)); /* the sink's buffer was wiped */
    CHECK(holds(t, "k1", v1));
    CHECK(holds(t, "k3", v3));
    CHECK_EQ(get(t, "k2", NULL), CL_EINTEGRITY); /* stays failed, counted again */
    CHECK_EQ(stats_of(s).integrity_failures, 2);
    /* metadata-only reads do not decrypt; a write through it fails cleanly */
    store_get_opts meta_only = { 0 };
    CHECK_EQ(store_get(t, K("k2"), 2, &meta_only, sink_fn, &S, NULL), CL_OK);
    CHECK_EQ(put(t, STORE_APPEND, "k2", "x", 0, NULL), CL_EINTEGRITY);
    CHECK_EQ(arith(t, "k2", 1, 1, NULL), CL_ENONNUMERIC); /* 300 bytes: not a number */
    CHECK_EQ(stats_of(s).integrity_failures, 3);
    /* an overwrite repairs it */
    OK(set(t, "k2", "repaired", 0, 0));
    CHECK(holds(t, "k2", "repaired"));

    /* a tampered counter */
    size_t nat = write_and_locate(t, &f, "ctr", "12345");
    file_write(&f, nat, "9", 1);
    CHECK_EQ(arith(t, "ctr", 1, 1, NULL), CL_EINTEGRITY);
    CHECK_EQ(stats_of(s).integrity_failures, 4);
    drop_store(s, t);
    unlink(path);
}

static void test_tamper_move(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/arena-move", tmpdir);
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, path, 0, &t);
    struct file f = { path, 4 * MiB };
    char va[201], vb[201];
    fill_value(va, 200, 7);
    fill_value(vb, 200, 8);
    size_t a = write_and_locate(t, &f, "alice", va);
    size_t b = write_and_locate(t, &f, "mallory", vb);
    CHECK(a != b);
    uint8_t *snap = snapshot(&f);
    file_write(&f, b, snap + a, 200); /* alice's sealed value onto mallory's */
    free(snap);
    CHECK_EQ(get(t, "mallory", NULL), CL_EINTEGRITY);
    CHECK(holds(t, "alice", va));
    CHECK_EQ(stats_of(s).integrity_failures, 1);

    /* swapping two values: both fail, neither shows the other's data */
    char vc[201];
    fill_value(vc, 200, 9);
    size_t c = write_and_locate(t, &f, "carol", vc);
    snap = snapshot(&f);
    file_write(&f, a, snap + c, 200);
    file_write(&f, c, snap + a, 200);
    free(snap);
    memset(S.buf, 0x55, 200);
    CHECK_EQ(get(t, "alice", NULL), CL_EINTEGRITY);
    CHECK(all_zero(S.buf, 200));
    CHECK_EQ(get(t, "carol", NULL), CL_EINTEGRITY);
    CHECK_EQ(stats_of(s).integrity_failures, 3);
    drop_store(s, t);
    unlink(path);
}

static void test_tamper_rollback(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/arena-rollback", tmpdir);
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, path, 0, &t);
    struct file f = { path, 4 * MiB };
    char v1[257], v2[257], v3[257];
    fill_value(v1, 256, 1);
    fill_value(v2, 256, 2);
    fill_value(v3, 256, 3);
    OK(set(t, "stable", "unchanged", 0, 0));
    size_t x = write_and_locate(t, &f, "acct", v1);
    uint8_t *old = snapshot(&f);                       /* the adversary keeps a copy */
    /* Newer values go elsewhere and free their predecessor's chunk, so
     * one of the next few lands on x again (write_and_locate may itself
     * write more than once, so the exact round is not fixed). */
    size_t z = 0;
    int rounds = 0;
    do {
        z = write_and_locate(t, &f, "acct", rounds % 2 ? v3 : v2);
    } while (z != x && ++rounds < 16);
    CHECK_EQ(z, x); /* so restoring the copy puts v1's ciphertext where the newest is */
    CHECK(holds(t, "acct", rounds % 2 ? v3 : v2));
    file_write(&f, 0, old, f.size);                    /* roll the whole arena back */
    free(old);
    memset(S.buf, 0x55, 256);
    CHECK_EQ(get(t, "acct", NULL), CL_EINTEGRITY);
    CHECK(all_zero(S.buf, 256));
    CHECK(holds(t, "stable", "unchanged")); /* untouched since the copy: still fine */
    CHECK_EQ(stats_of(s).integrity_failures, 1);
    /* deleting a failed item works; the key can be used again */
    CHECK_EQ(store_delete(t, K("acct"), 4, 0), CL_OK);
    OK(set(t, "acct", v2, 0, 0));
    CHECK(holds(t, "acct", v2));
    drop_store(s, t);
    unlink(path);
}

/* Invalidation re-seals a value in place under its new CAS id: the old
 * ciphertext put back is a rollback, and a value that fails to open is
 * left exactly as it was. */
static void test_tamper_invalidate(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/arena-invalidate", tmpdir);
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, path, 0, &t);
    struct file f = { path, 4 * MiB };
    char v[257], w[257];
    fill_value(v, 256, 4);
    fill_value(w, 256, 5);
    size_t at = write_and_locate(t, &f, "inv", v);
    uint8_t *before = snapshot(&f);
    OK(invalidate(t, "inv", 0, NULL));
    uint8_t *after = snapshot(&f);
    CHECK(memcmp(before + at, after + at, 256) != 0); /* a new ciphertext in the same chunk */
    CHECK(memmem(after, f.size, v, 32) == NULL);
    free(after);
    CHECK(holds(t, "inv", v));
    file_write(&f, at, before + at, 256); /* the pre-invalidation ciphertext back */
    free(before);
    CHECK_EQ(get(t, "inv", NULL), CL_EINTEGRITY);
    CHECK_EQ(stats_of(s).integrity_failures, 1);

    size_t bt = write_and_locate(t, &f, "bad", w);
    uint8_t *snap = snapshot(&f);
    uint8_t byte = snap[bt + 10] ^ 0x01;
    free(snap);
    file_write(&f, bt + 10, &byte, 1);
    store_meta m0, m1;
    store_get_opts meta_only = { 0 };
    OK(store_get(t, K("bad"), 3, &meta_only, NULL, NULL, &m0));
    CHECK_EQ(invalidate(t, "bad", 0, NULL), CL_EINTEGRITY);
    OK(store_get(t, K("bad"), 3, &meta_only, NULL, NULL, &m1));
    CHECK_EQ(m1.cas, m0.cas);
    CHECK(!m1.stale);
    CHECK_EQ(stats_of(s).integrity_failures, 2);
    drop_store(s, t);
    unlink(path);
}

/* ---- threads ----------------------------------------------------------------------- */

#define MT_VALUE_MAX (16 * 128)
#define MT_COUNTERS 4

struct mt_arg {
    store_thread *t;
    unsigned id, ops, seed;
    unsigned nkeys;              /* keys mt:0 .. mt:nkeys-1 */
    unsigned base, sizes;        /* values are base..base+sizes-1 tokens */
    int logs;                    /* also append to log:0 / log:1 */
    unsigned incrs[MT_COUNTERS];
    unsigned appends[2];
    unsigned bad, errors, hits;
};

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

/* Values are repetitions of one 16-byte token naming writer and sequence;
 * any mix of two writes is detectable. */
static size_t mt_value(char *v, const struct mt_arg *a, unsigned seq)
{
    char tok[17];
    snprintf(tok, sizeof tok, "w%02u:%011u", a->id, seq);
    size_t n = a->base + seq % a->sizes;
    for (size_t i = 0; i < n; i++)
        memcpy(v + 16 * i, tok, 16);
    return 16 * n;
}

static int mt_consistent(const uint8_t *v, size_t len)
{
    if (len == 0 || len % 16)
        return 0;
    for (size_t i = 16; i < len; i += 16)
        if (memcmp(v, v + i, 16))
            return 0;
    return v[0] == 'w';
}

static void *mt_worker(void *p)
{
    struct mt_arg *a = p;
    struct sink k;
    sink_init(&k, MT_VALUE_MAX);
    char key[16], val[MT_VALUE_MAX];
    for (unsigned i = 0; i < a->ops; i++) {
        unsigned r = rnd(&a->seed);
        unsigned op = r % 100;
        snprintf(key, sizeof key, "mt:%u", (r >> 8) % a->nkeys);
        int rc;
        if (op < 45) {
            rc = store_get(a->t, K(key), strlen(key), NULL, sink_fn, &k, NULL);
            if (rc == CL_OK) {
                a->hits++;
                a->bad += !mt_consistent(k.buf, k.len);
            } else if (rc != CL_ENOTFOUND) {
                a->errors++;
            }
        } else if (op < 80) {
            size_t n = mt_value(val, a, i);
            rc = store_set(a->t, K(key), strlen(key), K(val), n, NULL, NULL);
            a->errors += rc != CL_OK;
        } else if (op < 85) {
            rc = store_delete(a->t, K(key), strlen(key), 0);
            a->errors += rc != CL_OK && rc != CL_ENOTFOUND;
        } else if (op < 90) { /* read-modify-write with cas */
            store_meta m;
            rc = store_get(a->t, K(key), strlen(key), NULL, sink_fn, &k, &m);
            if (rc == CL_OK) {
                size_t n = mt_value(val, a, i);
                store_write w = { .mode = STORE_SET, .cas = m.cas };
                rc = store_set(a->t, K(key), strlen(key), K(val), n, &w, NULL);
                a->errors += rc != CL_OK && rc != CL_EEXISTS && rc != CL_ENOTFOUND;
            }
        } else if (op < 95 && a->logs) { /* append / prepend a record of ours */
            unsigned l = r % 2;
            char rec[4] = { 'a', (char)('0' + a->id), ';', 0 };
            snprintf(key, sizeof key, "log:%u", l);
            store_write w = { .mode = (r >> 3) % 2 ? STORE_APPEND : STORE_PREPEND };
            rc = store_set(a->t, K(key), strlen(key), K(rec), 3, &w, NULL);
            if (rc == CL_OK)
                a->appends[l]++;
            else
                a->errors++;
        } else {
            unsigned c = r % MT_COUNTERS;
            snprintf(key, sizeof key, "ctr:%u", c);
            store_arith_op op2 = { .incr = 1, .delta = 1, .vivify = 1, .initial = 1 };
            rc = store_arith(a->t, K(key), strlen(key), &op2, NULL, NULL);
            if (rc == CL_OK)
                a->incrs[c]++;
            else
                a->errors++;
        }
    }
    free(k.buf);
    return NULL;
}

static void run_threads(store *s, unsigned nthreads, const struct mt_arg *proto, struct mt_arg *args)
{
    pthread_t th[8];
    for (unsigned i = 0; i < nthreads; i++) {
        args[i] = *proto;
        args[i].id = i;
        args[i].seed = 1234 + i * 7919;
        OK(store_thread_create(s, &args[i].t));
        pthread_create(&th[i], NULL, mt_worker, &args[i]);
    }
    for (unsigned i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
}

static void test_threads(void)
{
    store_thread *t;
    store *s = make_store(32 * MiB, 0, NULL, 0, &t);
    enum { T = 4, OPS = 30000 };
    struct mt_arg args[T];
    struct mt_arg proto = { .ops = OPS, .nkeys = 48, .base = 1, .sizes = 97, .logs = 1 };
    OK(set(t, "log:0", "", 0, 0));
    OK(set(t, "log:1", "", 0, 0));
    run_threads(s, T, &proto, args);
    unsigned bad = 0, errors = 0, hits = 0;
    for (unsigned i = 0; i < T; i++) {
        bad += args[i].bad;
        errors += args[i].errors;
        hits += args[i].hits;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(errors, 0);
    CHECK(hits > OPS);
    /* every increment counted exactly once */
    for (unsigned c = 0; c < MT_COUNTERS; c++) {
        unsigned sum = 0;
        for (unsigned i = 0; i < T; i++)
            sum += args[i].incrs[c];
        char key[16], want[24];
        snprintf(key, sizeof key, "ctr:%u", c);
        snprintf(want, sizeof want, "%u", sum);
        CHECK(holds(t, key, want));
    }
    /* every append landed exactly once, none torn */
    for (unsigned l = 0; l < 2; l++) {
        char key[16];
        snprintf(key, sizeof key, "log:%u", l);
        CHECK_EQ(get(t, key, NULL), CL_OK);
        unsigned seen[T] = { 0 }, total = 0, torn = 0;
        for (size_t i = 0; i + 3 <= S.len; i += 3) {
            if (S.buf[i] != 'a' || S.buf[i + 2] != ';' || S.buf[i + 1] < '0' || S.buf[i + 1] >= '0' + T)
                torn++;
            else
                seen[S.buf[i + 1] - '0']++;
        }
        CHECK_EQ(S.len % 3, 0);
        CHECK_EQ(torn, 0);
        for (unsigned i = 0; i < T; i++) {
            CHECK_EQ(seen[i], args[i].appends[l]);
            total += seen[i];
        }
        CHECK(total > 500);
    }
    store_stats st = stats_of(s);
    CHECK_EQ(st.integrity_failures, 0);
    for (unsigned i = 0; i < T; i++)
        store_thread_destroy(args[i].t);
    CHECK_EQ(stats_of(s).cmd_get, st.cmd_get); /* folded in, not lost */
    drop_store(s, t);
}

/* Threads in a small arena with eviction: reclaim runs concurrently with
 * reads and writes of the items it picks. */
static void test_threads_evicting(void)
{
    store_thread *t;
    store *s = make_store(4 * MiB, 64 * 1024, NULL, 1, &t);
    enum { T = 3, OPS = 20000 };
    struct mt_arg args[T];
    struct mt_arg proto = { .ops = OPS, .nkeys = 20000, .base = 60, .sizes = 4 };
    run_threads(s, T, &proto, args);
    unsigned bad = 0, errors = 0;
    for (unsigned i = 0; i < T; i++) {
        bad += args[i].bad;
        errors += args[i].errors;
        store_thread_destroy(args[i].t);
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(errors, 0);
    store_stats st = stats_of(s);
    CHECK(st.evictions > 1000);
    CHECK_EQ(st.out_of_memory, 0);
    CHECK_EQ(st.integrity_failures, 0);
    CHECK(st.untrusted_bytes <= 4 * MiB);
    drop_store(s, t);
}

/* Readers racing for one token: exactly one wins per key, whether the key
 * is vivified by the race or was invalidated before it. */
#define RACE_KEYS 3000
#define RACE_THREADS 4

struct race_arg {
    store_thread *t;
    const char *prefix;
    int vivify;
    uint8_t won[RACE_KEYS];
    unsigned errors;
};

static void *race_worker(void *p)
{
    struct race_arg *a = p;
    store_get_opts o = { .recache = 1, .vivify = a->vivify };
    char key[32];
    for (unsigned i = 0; i < RACE_KEYS; i++) {
        snprintf(key, sizeof key, "%s:%u", a->prefix, i);
        store_meta m;
        int rc = store_get(a->t, K(key), strlen(key), &o, NULL, NULL, &m);
        if (rc != CL_OK)
            a->errors++;
        else
            a->won[i] = (uint8_t)m.won;
    }
    return NULL;
}

static void race(store *s, const char *prefix, int vivify)
{
    static struct race_arg args[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].prefix = prefix;
        args[i].vivify = vivify;
        OK(store_thread_create(s, &args[i].t));
        pthread_create(&th[i], NULL, race_worker, &args[i]);
    }
    for (unsigned i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    unsigned unique = 0, errors = 0;
    for (unsigned k = 0; k < RACE_KEYS; k++) {
        unsigned winners = 0;
        for (unsigned i = 0; i < RACE_THREADS; i++)
            winners += args[i].won[k];
        unique += winners == 1;
    }
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        errors += args[i].errors;
        store_thread_destroy(args[i].t);
    }
    CHECK_EQ(errors, 0);
    CHECK_EQ(unique, RACE_KEYS);
}

static void test_threads_recache(void)
{
    store_thread *t;
    store *s = make_store(32 * MiB, 0, NULL, 0, &t);
    race(s, "viv", 1);
    CHECK_EQ(stats_of(s).curr_items, RACE_KEYS);
    char key[32];
    for (unsigned i = 0; i < RACE_KEYS; i++) {
        snprintf(key, sizeof key, "stale:%u", i);
        OK(set(t, key, "v", 0, 0));
        OK(invalidate(t, key, 0, NULL));
    }
    race(s, "stale", 0);
    drop_store(s, t);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cl-store-XXXXXX");
    char *dir = mkdtemp(tmpdir);
    REQUIRE(dir != NULL);
    sink_init(&S, 2 * MiB);

    RUN(test_create_errors);
    RUN(test_set_get);
    RUN(test_write_modes);
    RUN(test_delete_touch);
    RUN(test_arith);
    RUN(test_exptime_conversion);
    RUN(test_expiry);
    RUN(test_flush_now);
    RUN(test_storage_full);
    RUN(test_evict_lru);
    RUN(test_index_full);
    RUN(test_too_big);
    RUN(test_byte_stats);
    RUN(test_vivify);
    RUN(test_recache_ttl);
    RUN(test_invalidate);
    RUN(test_arith_touch);
    RUN(test_tamper_flip);
    RUN(test_tamper_move);
    RUN(test_tamper_rollback);
    RUN(test_tamper_invalidate);
    RUN(test_threads);
    RUN(test_threads_evicting);
    RUN(test_threads_recache);

    free(S.buf);
    rmdir(tmpdir);
    return th_done();
}
