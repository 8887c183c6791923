/* test_store_repl.c - what the store offers the replication layer
 * (store.h, "Replication"): item versions, tombstones (invisible to every
 * ordinary operation, counted apart), if_newer writes, versioned items
 * that outlive their expiry, raw reads, and the resumable scan, also
 * while another thread writes and the index grows. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/store/store.h"

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

static uint8_t sbuf[4096];
static size_t slen;

static uint8_t *sink_fn(void *arg, const store_meta *m)
{
    (void)arg;
    if (m->len > sizeof sbuf)
        return NULL;
    slen = m->len;
    return sbuf;
}

static const uint8_t *K(const char *s) { return (const uint8_t *)s; }

static store *make(size_t mem, store_thread **t)
{
    store_config cfg = { .memory_bytes = mem, .max_value = 64 * 1024 };
    store *s;
    OK(store_create(&cfg, &s));
    OK(store_thread_create(s, t));
    return s;
}

static int vput(store_thread *t, const char *key, const char *val, uint64_t version,
                int tomb, int if_newer, int64_t exptime)
{
    store_write w = { .mode = STORE_SET, .version = version, .tombstone = tomb,
                      .if_newer = if_newer, .exptime = exptime };
    return store_set(t, K(key), strlen(key), K(val), strlen(val), &w, NULL);
}

static int raw(store_thread *t, const char *key, store_meta *m)
{
    store_get_opts o = { .want_value = 1, .raw = 1 };
    slen = 0;
    return store_get(t, K(key), strlen(key), &o, sink_fn, NULL, m);
}

static int plain(store_thread *t, const char *key, store_meta *m)
{
    slen = 0;
    return store_get(t, K(key), strlen(key), NULL, sink_fn, NULL, m);
}

static store_stats stats_of(store *s)
{
    store_stats st;
    store_get_stats(s, &st);
    return st;
}

static void test_versions(void)
{
    store_thread *t;
    store *s = make(4 * MiB, &t);
    store_meta m;
    OK(vput(t, "k", "one", 0x105, 0, 0, 0));
    OK(plain(t, "k", &m));
    CHECK_EQ(m.version, 0x105);
    CHECK(slen == 3 && memcmp(sbuf, "one", 3) == 0);
    /* if_newer: an equal or older version changes nothing */
    CHECK_EQ(vput(t, "k", "old", 0x105, 0, 1, 0), CL_EEXISTS);
    CHECK_EQ(vput(t, "k", "old", 0x104, 0, 1, 0), CL_EEXISTS);
    OK(plain(t, "k", &m));
    CHECK(slen == 3 && memcmp(sbuf, "one", 3) == 0);
    OK(vput(t, "k", "two", 0x201, 0, 1, 0));
    OK(plain(t, "k", &m));
    CHECK_EQ(m.version, 0x201);
    CHECK(slen == 3 && memcmp(sbuf, "two", 3) == 0);
    /* if_newer on an absent key stores */
    OK(vput(t, "fresh", "x", 7, 0, 1, 0));
    /* the replication layer's bit travels with the version */
    store_write wx = { .mode = STORE_SET, .version = 8, .xbit = 1 };
    OK(store_set(t, K("fresh"), 5, K("hv"), 2, &wx, NULL));
    OK(raw(t, "fresh", &m));
    CHECK(m.xbit && m.version == 8);
    store_write wy = { .mode = STORE_SET, .version = 9 };
    OK(store_set(t, K("fresh"), 5, K("hv"), 2, &wy, NULL));
    OK(raw(t, "fresh", &m));
    CHECK(!m.xbit);
    /* bad combinations */
    store_write w = { .mode = STORE_ADD, .version = 3 };
    CHECK_EQ(store_set(t, K("k"), 1, K("v"), 1, &w, NULL), CL_EINVAL);
    store_write w2 = { .mode = STORE_SET, .tombstone = 1 };
    CHECK_EQ(store_set(t, K("k"), 1, K("v"), 1, &w2, NULL), CL_EINVAL);
    /* unversioned writes stay unversioned; plain memcached paths unchanged */
    store_write w3 = { .mode = STORE_SET };
    OK(store_set(t, K("plain"), 5, K("v"), 1, &w3, NULL));
    OK(plain(t, "plain", &m));
    CHECK_EQ(m.version, 0);
    store_thread_destroy(t);
    store_destroy(s);
}

static void test_tombstones(void)
{
    store_thread *t;
    store *s = make(4 * MiB, &t);
    store_meta m;
    OK(vput(t, "k", "live", 10, 0, 0, 0));
    OK(vput(t, "k", "meta", 20, 1, 1, 0)); /* tombstone with 4 bytes of metadata */
    CHECK_EQ(plain(t, "k", NULL), CL_ENOTFOUND);
    CHECK_EQ(store_delete(t, K("k"), 1, 0), CL_ENOTFOUND);
    CHECK_EQ(store_touch(t, K("k"), 1, 0), CL_ENOTFOUND);
    store_arith_op a = { .incr = 1, .delta = 1 };
    uint64_t v;
    CHECK_EQ(store_arith(t, K("k"), 1, &a, &v, NULL), CL_ENOTFOUND);
    store_write rep = { .mode = STORE_REPLACE };
    CHECK_EQ(store_set(t, K("k"), 1, K("x"), 1, &rep, NULL), CL_ENOTSTORED);
    store_write app = { .mode = STORE_APPEND };
    CHECK_EQ(store_set(t, K("k"), 1, K("x"), 1, &app, NULL), CL_ENOTSTORED);
    store_write cas = { .mode = STORE_SET, .cas = 1 };
    CHECK_EQ(store_set(t, K("k"), 1, K("x"), 1, &cas, NULL), CL_ENOTFOUND);
    /* raw reads see it, with its bytes and version */
    OK(raw(t, "k", &m));
    CHECK(m.tombstone);
    CHECK_EQ(m.version, 20);
    CHECK(slen == 4 && memcmp(sbuf, "meta", 4) == 0);
    store_stats st = stats_of(s);
    CHECK_EQ(st.tombstones, 1);
    CHECK_EQ(st.curr_items, 0);
    /* an older write cannot bring the value back */
    CHECK_EQ(vput(t, "k", "live", 10, 0, 1, 0), CL_EEXISTS);
    CHECK_EQ(plain(t, "k", NULL), CL_ENOTFOUND);
    /* add sees it as absent and reuses the record */
    store_write add = { .mode = STORE_ADD };
    OK(store_set(t, K("k"), 1, K("added"), 5, &add, NULL));
    OK(plain(t, "k", &m));
    CHECK_EQ(m.version, 0); /* a memcached write carries no version */
    st = stats_of(s);
    CHECK_EQ(st.tombstones, 0);
    CHECK_EQ(st.curr_items, 1);
    /* a tombstone without bytes takes no chunk */
    uint64_t used = stats_of(s).untrusted_bytes;
    OK(vput(t, "bare", "", 30, 1, 0, 0));
    CHECK_EQ(stats_of(s).untrusted_bytes, used);
    OK(raw(t, "bare", &m));
    CHECK(m.tombstone && m.len == 0 && m.version == 30);
    /* and becomes a value again */
    OK(vput(t, "bare", "back", 31, 0, 1, 0));
    OK(plain(t, "bare", &m));
    CHECK(m.version == 31 && slen == 4);
    CHECK_EQ(stats_of(s).tombstones, 0);
    CHECK_EQ(stats_of(s).curr_items, 2);
    /* a tombstone over a tombstone */
    OK(vput(t, "bare", "", 40, 1, 1, 0));
    OK(vput(t, "bare", "z", 41, 1, 1, 0));
    CHECK_EQ(stats_of(s).tombstones, 1);
    CHECK_EQ(raw(t, "absent", &m), CL_ENOTFOUND);
    store_thread_destroy(t);
    store_destroy(s);
}

static void test_expired_versioned_kept(void)
{
    store_thread *t;
    store *s = make(4 * MiB, &t);
    store_meta m;
    int64_t past = store_now() - 10;
    OK(vput(t, "e", "gone", 50, 0, 0, past));
    CHECK_EQ(plain(t, "e", NULL), CL_ENOTFOUND);
    CHECK_EQ(plain(t, "e", NULL), CL_ENOTFOUND);
    OK(raw(t, "e", &m));
    CHECK(m.expired && !m.tombstone && m.version == 50);
    CHECK_EQ(vput(t, "e", "older", 49, 0, 1, 0), CL_EEXISTS);
    /* flush hides versioned items but keeps their versions */
    OK(vput(t, "f", "val", 60, 0, 0, 0));
    store_flush(s, 0);
    CHECK_EQ(plain(t, "f", NULL), CL_ENOTFOUND);
    OK(raw(t, "f", &m));
    CHECK(m.expired && m.version == 60);
    OK(vput(t, "f", "new", 61, 0, 1, 0));
    OK(plain(t, "f", &m));
    CHECK_EQ(m.version, 61);
    /* unversioned expired items still go away as before */
    store_write w = { .mode = STORE_SET, .exptime = past };
    OK(store_set(t, K("u"), 1, K("x"), 1, &w, NULL));
    CHECK_EQ(plain(t, "u", NULL), CL_ENOTFOUND);
    CHECK_EQ(raw(t, "u", &m), CL_ENOTFOUND);
    store_thread_destroy(t);
    store_destroy(s);
}

/* Memory pressure turns expired versioned items into tombstones without
 * bytes: their chunks are reused, their versions stay. */
static void test_reclaim_strips(void)
{
    store_thread *t;
    store *s = make(2 * MiB, &t);
    int64_t past = store_now() - 10;
    char key[32], val[1000];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = 0;
    /* 5000 values of 1 KB do not fit in 2 MiB: every write past the
     * first ~2000 strips an older expired one */
    int n = 5000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "x%d", i);
        OK(vput(t, key, val, 100 + (uint64_t)i, 0, 0, past));
    }
    int stored = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "live%d", i);
        if (vput(t, key, val, 1000000 + (uint64_t)i, 0, 0, 0) == CL_OK)
            stored++;
    }
    CHECK_EQ(stored, 200);
    store_stats st = stats_of(s);
    CHECK(st.tombstones >= 3000);
    /* every stripped record still knows its version */
    store_meta m;
    int tombs = 0, versions_ok = 1;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "x%d", i);
        if (raw(t, key, &m) != CL_OK) {
            versions_ok = 0;
            continue;
        }
        if (m.version != 100 + (uint64_t)i)
            versions_ok = 0;
        if (m.tombstone) {
            tombs++;
            CHECK_EQ(m.len, 0);
        }
    }
    CHECK(versions_ok);
    CHECK(tombs >= 3000);
    CHECK_EQ(st.out_of_memory, 0);
    store_thread_destroy(t);
    store_destroy(s);
}

/* ---- scan ------------------------------------------------------------------ */

struct seen {
    uint8_t *hits;   /* per key index */
    size_t n;
    int bad;
    int tombs, expired, values_ok;
    store_thread *t;
    int read_values;
};

static void scan_cb(void *arg, const uint8_t *key, size_t klen, const store_meta *m,
                    store_scan_item *it)
{
    struct seen *s = arg;
    char buf[64];
    if (klen >= sizeof buf || klen < 2) {
        s->bad++;
        return;
    }
    memcpy(buf, key, klen);
    buf[klen] = 0;
    if (buf[0] != 'k') /* keys written by the concurrent writer */
        return;
    long i = strtol(buf + 1, NULL, 10);
    if (i < 0 || (size_t)i >= s->n) {
        s->bad++;
        return;
    }
    s->hits[i]++;
    if (m->version != (uint64_t)i + 1)
        s->bad++;
    s->tombs += m->tombstone;
    s->expired += m->expired;
    if (s->read_values && m->len) {
        uint8_t v[64];
        if (m->len < sizeof v && store_scan_value(it, v) == CL_OK &&
            memcmp(v, buf, klen) == 0)
            s->values_ok++;
    }
}

static void test_scan_basic(void)
{
    store_thread *t;
    store *s = make(8 * MiB, &t);
    enum { N = 3000 };
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        if (i % 10 == 3)
            OK(vput(t, key, "", (uint64_t)i + 1, 1, 0, 0));
        else if (i % 10 == 7)
            OK(vput(t, key, key, (uint64_t)i + 1, 0, 0, store_now() - 5));
        else
            OK(vput(t, key, key, (uint64_t)i + 1, 0, 0, 0));
    }
    struct seen sn = { .hits = calloc(N, 1), .n = N, .t = t, .read_values = 1 };
    uint64_t cursor = 0;
    int calls = 0;
    while (store_scan(t, &cursor, 100, scan_cb, &sn))
        calls++;
    CHECK(calls > 10); /* it really is resumable */
    int missing = 0, dup = 0;
    for (int i = 0; i < N; i++) {
        missing += sn.hits[i] == 0;
        dup += sn.hits[i] > 1;
    }
    CHECK_EQ(missing, 0);
    CHECK_EQ(dup, 0);  /* no growth during the scan: exactly once */
    CHECK_EQ(sn.bad, 0);
    CHECK_EQ(sn.tombs, N / 10);
    CHECK_EQ(sn.expired, N / 10);
    CHECK_EQ(sn.values_ok, N - N / 10);
    free(sn.hits);
    store_thread_destroy(t);
    store_destroy(s);
}

struct writer_arg {
    store *s;
    volatile int stop;
    int wrote;
};

static void *writer_main(void *p)
{
    struct writer_arg *w = p;
    store_thread *t;
    if (store_thread_create(w->s, &t) != CL_OK)
        return NULL;
    char key[32];
    for (int i = 0; !w->stop && i < 200000; i++) {
        snprintf(key, sizeof key, "w%d", i);
        store_write wr = { .mode = STORE_SET, .version = 1 };
        if (store_set(t, K(key), strlen(key), K("x"), 1, &wr, NULL) == CL_OK)
            w->wrote++;
    }
    store_thread_destroy(t);
    return NULL;
}

/* A scan running while another thread writes (and the table doubles
 * several times) reports every key present for the whole scan. */
static void test_scan_concurrent(void)
{
    store_thread *t;
    store_config cfg = { .memory_bytes = 64 * MiB, .max_value = 4096 };
    store *s;
    OK(store_create(&cfg, &s));
    OK(store_thread_create(s, &t));
    enum { N = 20000 };
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k%d", i);
        OK(vput(t, key, "v", (uint64_t)i + 1, 0, 0, 0));
    }
    uint64_t power0 = stats_of(s).hash_power_level;
    struct writer_arg wa = { .s = s };
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, writer_main, &wa) == 0);
    struct seen sn = { .hits = calloc(N, 1), .n = N, .t = t };
    uint64_t cursor = 0;
    while (store_scan(t, &cursor, 16, scan_cb, &sn))
        usleep(wa.wrote < 100000 ? 20 : 0); /* let the writer grow the table meanwhile */
    wa.stop = 1;
    pthread_join(th, NULL);
    int missing = 0;
    for (int i = 0; i < N; i++)
        missing += sn.hits[i] == 0;
    CHECK_EQ(missing, 0);
    CHECK_EQ(sn.bad, 0);
    CHECK(wa.wrote > 0);
    printf("     (table 2^%llu -> 2^%llu during the scan, %d writes)\n",
           (unsigned long long)power0, (unsigned long long)stats_of(s).hash_power_level,
           wa.wrote);
    free(sn.hits);
    store_thread_destroy(t);
    store_destroy(s);
}

int main(void)
{
    RUN(test_versions);
    RUN(test_tombstones);
    RUN(test_expired_versioned_kept);
    RUN(test_reclaim_strips);
    RUN(test_scan_basic);
    RUN(test_scan_concurrent);
    return th_done();
}
