/*
 * test_registry.c - the function registry (runtime/registry.h): names,
 * versions and their reference counts, counters kept across redeploys,
 * log hooks, records as JSON, and modules / records / the index kept in
 * a real store (chunked, verified by SHA-256, tamper and loss detected).
 */
#include "../harness.h"

#include "../../../src/runtime/registry.h"
#include "../../../src/common/err.h"

#include <openssl/evp.h>
#include <pthread.h>

/* ---- helpers ---------------------------------------------------------------- */

static int released;            /* code_release calls (atomic) */
static int logs_made, logs_freed;

static void count_release(void *code)
{
    (void)code;
    __atomic_add_fetch(&released, 1, __ATOMIC_RELAXED);
}

static rt_fnlog *fake_log_create(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&logs_made, 1, __ATOMIC_RELAXED);
    return (rt_fnlog *)malloc(1);
}

static void fake_log_destroy(void *arg, rt_fnlog *l)
{
    (void)arg;
    __atomic_add_fetch(&logs_freed, 1, __ATOMIC_RELAXED);
    free(l);
}

static rt_fn_ver *make_ver(rt_registry *reg, const char *tenant, const char *name,
                           uint8_t hash_byte)
{
    rt_fn_ver *v = rt_fn_ver_new();
    REQUIRE(v != NULL);
    v->fn = rt_registry_fn_for(reg, tenant, name);
    REQUIRE(v->fn != NULL);
    v->kind = RT_KIND_WASM;
    memset(v->sha256, hash_byte, 32);
    v->module_bytes = 100 + hash_byte;
    v->deployed_at = 1700000000;
    v->code = (void *)(uintptr_t)(0x1000 + hash_byte);
    v->code_release = count_release;
    return v;
}

static void sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned len;
    REQUIRE(EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1);
}

/* ---- names ------------------------------------------------------------------------ */

static void test_names(void)
{
    CHECK(rt_name_valid("hello"));
    CHECK(rt_name_valid("a"));
    CHECK(rt_name_valid("Tenant_1.x-y"));
    char n64[65];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    CHECK(rt_name_valid(n64));
    char n65[66];
    memset(n65, 'a', 65);
    n65[65] = '\0';
    CHECK(!rt_name_valid(n65));
    CHECK(!rt_name_valid(""));
    CHECK(!rt_name_valid("a/b"));
    CHECK(!rt_name_valid("a b"));
    CHECK(!rt_name_valid("\x01t"));
    CHECK(!rt_name_valid("caf\xc3\xa9"));
}

/* ---- the table ------------------------------------------------------------------------- */

static void test_install_get_replace_remove(void)
{
    rt_registry_hooks hooks = { fake_log_create, fake_log_destroy, NULL };
    rt_registry *reg;
    REQUIRE(rt_registry_create(&hooks, &reg) == CL_OK);
    released = logs_made = logs_freed = 0;

    CHECK(rt_registry_get(reg, "t", "f") == NULL);
    rt_fn_ver *v1 = make_ver(reg, "t", "f", 1);
    rt_fn_ver *old = (rt_fn_ver *)1;
    rt_registry_install(reg, v1, &old);
    CHECK(old == NULL);
    CHECK(v1->fn != NULL);
    CHECK_EQ(logs_made, 1);
    CHECK_EQ(rt_registry_count(reg), 1);

    /* An invocation holds v1 while v2 replaces it. */
    rt_fn_ver *held = rt_registry_get(reg, "t", "f");
    CHECK(held == v1);
    __atomic_add_fetch(&held->fn->invocations, 5, __ATOMIC_RELAXED);
    __atomic_add_fetch(&held->fn->errors, 2, __ATOMIC_RELAXED);

    rt_fn_ver *v2 = make_ver(reg, "t", "f", 2);
    rt_registry_install(reg, v2, &old);
    CHECK(old == v1);
    CHECK(v2->fn == v1->fn);               /* the same name: counters and log kept */
    CHECK_EQ(logs_made, 1);
    rt_fn_ver_unref(old);                  /* the registry's reference to v1 */
    CHECK_EQ(released, 0);                 /* still held by the invocation */
    rt_fn_ver *cur = rt_registry_get(reg, "t", "f");
    CHECK(cur == v2);
    rt_fn_info info;
    rt_fn_ver_info(cur, &info);
    CHECK(strcmp(info.tenant, "t") == 0 && strcmp(info.name, "f") == 0);
    CHECK_EQ(info.invocations, 5);
    CHECK_EQ(info.errors, 2);
    CHECK_EQ(info.module_bytes, 102);
    CHECK_EQ(info.hash[0], 2);
    rt_fn_ver_unref(cur);
    rt_fn_ver_unref(held);                 /* the invocation ends: v1's code goes */
    CHECK_EQ(released, 1);

    /* Other tenants and names are separate. */
    rt_fn_ver *v3 = make_ver(reg, "u", "f", 3);
    rt_registry_install(reg, v3, NULL);
    CHECK(v3->fn != v2->fn);
    CHECK_EQ(logs_made, 2);
    CHECK_EQ(rt_registry_count(reg), 2);
    rt_fn_ver *g = rt_registry_get(reg, "u", "f");
    CHECK(g == v3);
    rt_fn_ver_unref(g);
    CHECK(rt_registry_get(reg, "t", "g") == NULL);
    CHECK(rt_registry_get(reg, "tf", "") == NULL);

    /* Module use. */
    uint8_t h2[32], h9[32];
    memset(h2, 2, 32);
    memset(h9, 9, 32);
    CHECK(rt_registry_module_in_use(reg, h2, "", ""));
    CHECK(!rt_registry_module_in_use(reg, h2, "t", "f"));   /* only t/f uses it */
    CHECK(!rt_registry_module_in_use(reg, h9, "", ""));

    /* Snapshot. */
    rt_fn_ver **snap;
    size_t n = rt_registry_snapshot(reg, &snap);
    CHECK_EQ(n, 2);
    for (size_t i = 0; i < n; i++)
        rt_fn_ver_unref(snap[i]);
    free(snap);

    /* Remove: gone at once; the log goes with the last reference. */
    rt_fn *fn = rt_registry_get_fn(reg, "t", "f");
    CHECK(fn != NULL);
    CHECK_EQ(rt_registry_remove(reg, "t", "f", &old), CL_OK);
    CHECK(old == v2);
    CHECK(rt_registry_get(reg, "t", "f") == NULL);
    CHECK(rt_registry_get_fn(reg, "t", "f") == NULL);
    CHECK_EQ(rt_registry_remove(reg, "t", "f", NULL), CL_ENOTFOUND);
    CHECK_EQ(rt_registry_count(reg), 1);
    rt_fn_ver_unref(old);
    CHECK_EQ(released, 2);
    CHECK_EQ(logs_freed, 0);               /* fn still referenced here */
    rt_fn_unref(fn);
    CHECK_EQ(logs_freed, 1);

    /* A version prepared before the name was removed and deployed again
     * takes the name over with its own rt_fn. */
    rt_fn_ver *late = make_ver(reg, "u", "f", 7);   /* shares v3's rt_fn */
    CHECK(late->fn == v3->fn);
    CHECK_EQ(rt_registry_remove(reg, "u", "f", NULL), CL_OK);
    rt_fn_ver *again = make_ver(reg, "u", "f", 8);  /* a new rt_fn */
    CHECK(again->fn != late->fn);
    rt_registry_install(reg, again, NULL);
    rt_registry_install(reg, late, &old);
    CHECK(old == again);
    rt_fn_ver_unref(old);
    g = rt_registry_get(reg, "u", "f");
    CHECK(g == late);
    rt_fn_ver_unref(g);
    CHECK_EQ(rt_registry_count(reg), 1);

    /* Deploying the name again starts afresh. */
    rt_fn_ver *v4 = make_ver(reg, "t", "f", 4);
    rt_registry_install(reg, v4, NULL);
    rt_fn_ver_info(v4, &info);
    CHECK_EQ(info.invocations, 0);

    rt_registry_destroy(reg);
    CHECK_EQ(released, 6);                 /* v1..v4, again, late */
    CHECK_EQ(logs_made, 4);                /* t/f twice, u/f twice */
    CHECK_EQ(logs_freed, 4);
}

static void test_many_names_grow(void)
{
    rt_registry *reg;
    REQUIRE(rt_registry_create(NULL, &reg) == CL_OK);
    released = 0;
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "fn%d", i);
        rt_registry_install(reg, make_ver(reg, i % 2 ? "a" : "b", name, (uint8_t)i), NULL);
    }
    CHECK_EQ(rt_registry_count(reg), 1000);
    int found = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "fn%d", i);
        rt_fn_ver *v = rt_registry_get(reg, i % 2 ? "a" : "b", name);
        found += v != NULL && v->sha256[0] == (uint8_t)i;
        rt_fn_ver_unref(v);
        CHECK(rt_registry_get(reg, i % 2 ? "b" : "a", name) == NULL);
    }
    CHECK_EQ(found, 1000);
    rt_registry_destroy(reg);
    CHECK_EQ(released, 1000);
}

/* Readers take and drop references while a writer keeps replacing the
 * version: every replaced version is released exactly once, and never
 * while a reader holds it (a reader checks its version's code is alive). */
typedef struct race {
    rt_registry *reg;
    int stop;
    int bad;
} race;

static void *race_reader(void *arg)
{
    race *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        rt_fn_ver *v = rt_registry_get(r->reg, "t", "hot");
        if (!v)
            continue;
        if (v->code == NULL || v->fn == NULL || strcmp(v->fn->name, "hot") != 0)
            __atomic_add_fetch(&r->bad, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&v->fn->invocations, 1, __ATOMIC_RELAXED);
        rt_fn_ver_unref(v);
    }
    return NULL;
}

static void null_code(void *code)
{
    (void)code;
    __atomic_add_fetch(&released, 1, __ATOMIC_RELAXED);
}

static void test_concurrent_replace(void)
{
    race r = { 0 };
    REQUIRE(rt_registry_create(NULL, &r.reg) == CL_OK);
    released = 0;
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, race_reader, &r);
    const int rounds = 3000;
    for (int i = 0; i < rounds; i++) {
        rt_fn_ver *v = make_ver(r.reg, "t", "hot", (uint8_t)i);
        v->code_release = null_code;
        rt_registry_install(r.reg, v, NULL);
    }
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(r.bad, 0);
    CHECK_EQ(released, rounds - 1);
    rt_registry_destroy(r.reg);
    CHECK_EQ(released, rounds);
}

/* ---- records ----------------------------------------------------------------------- */

static void test_record_json(void)
{
    rt_record a = { .kind = RT_KIND_NATIVE, .module_bytes = 12345, .chunk_bytes = 1000,
                    .deployed_at = 1700000001 };
    strcpy(a.tenant, "acme");
    strcpy(a.name, "wordcount");
    for (int i = 0; i < 32; i++)
        a.sha256[i] = (uint8_t)(i * 7);
    char *json = rt_record_to_json(&a);
    REQUIRE(json != NULL);
    rt_record b;
    CHECK_EQ(rt_record_from_json(json, strlen(json), &b), CL_OK);
    CHECK(strcmp(b.tenant, "acme") == 0 && strcmp(b.name, "wordcount") == 0);
    CHECK_EQ(b.kind, RT_KIND_NATIVE);
    CHECK_MEM(b.sha256, a.sha256, 32);
    CHECK_EQ(b.module_bytes, 12345);
    CHECK_EQ(b.chunk_bytes, 1000);
    CHECK_EQ(b.deployed_at, 1700000001);
    free(json);

    static const char *const bad[] = {
        "",
        "[]",
        "{\"version\":2,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\",\"bytes\":1,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a/x\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\",\"bytes\":1,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"elf\",\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\",\"bytes\":1,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"00000000000000000000000000000000000000000000000000000000000000\",\"bytes\":1,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"000000000000000000000000000000000000000000000000000000000000000g\",\"bytes\":1,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\",\"bytes\":0,"
        "\"chunk_bytes\":1,\"deployed_at\":0}",
        "{\"version\":1,\"tenant\":\"a\",\"name\":\"b\",\"kind\":\"wasm\",\"sha256\":"
        "\"0000000000000000000000000000000000000000000000000000000000000000\",\"bytes\":1,"
        "\"chunk_bytes\":0,\"deployed_at\":0}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rt_record r;
        int rc = rt_record_from_json(bad[i], strlen(bad[i]), &r);
        if (rc != CL_EINVAL)
            fprintf(stderr, "     accepted bad record %zu\n", i);
        CHECK_EQ(rc, CL_EINVAL);
    }
}

/* ---- the store ---------------------------------------------------------------------- */

static store *st_store;
static store_thread *st;
static kv_thread kv;                /* st as the registry sees it (single node) */

static void store_up(void)
{
    store_config sc = { .memory_bytes = 8u << 20, .max_value = 4096 };
    REQUIRE(store_create(&sc, &st_store) == CL_OK);
    REQUIRE(store_thread_create(st_store, &st) == CL_OK);
    kv_thread_init(&kv, st_store, st, NULL);
}

static void store_down(void)
{
    kv_thread_fini(&kv);
    store_thread_destroy(st);
    store_destroy(st_store);
}

static void test_persist_module(void)
{
    size_t len = 10000;
    uint8_t *mod = malloc(len);
    REQUIRE(mod != NULL);
    for (size_t i = 0; i < len; i++)
        mod[i] = (uint8_t)(i * 31 + 7);
    uint8_t h[32];
    sha256(mod, len, h);

    CHECK_EQ(rt_persist_put_module(&kv, h, mod, len, 3000), CL_OK);   /* 4 chunks */
    cl_buf back;
    cl_buf_init(&back);
    CHECK_EQ(rt_persist_get_module(&kv, h, len, 3000, &back), CL_OK);
    CHECK_EQ(back.len, len);
    CHECK(back.len == len && memcmp(back.data, mod, len) == 0);

    /* The keys are reserved ones: first byte 0x01, then m/<hex>/<i>. */
    char hex[65];
    rt_sha256_hex(h, hex);
    char key[128];
    int klen = snprintf(key, sizeof key, "\x01m/%s/3", hex);
    store_meta m;
    CHECK_EQ(store_get(st, (const uint8_t *)key, (size_t)klen, &(store_get_opts){ 0 }, NULL, NULL, &m),
             CL_OK);
    CHECK_EQ(m.len, 1000);

    /* A chunk replaced with other bytes of the same length: refused. */
    uint8_t junk[1000];
    memset(junk, 0xAB, sizeof junk);
    store_write w = { .mode = STORE_SET };
    CHECK_EQ(store_set(st, (const uint8_t *)key, (size_t)klen, junk, sizeof junk, &w, NULL), CL_OK);
    CHECK_EQ(rt_persist_get_module(&kv, h, len, 3000, &back), CL_EINTEGRITY);
    CHECK_EQ(back.len, 0);
    /* A chunk of the wrong length: refused. */
    CHECK_EQ(store_set(st, (const uint8_t *)key, (size_t)klen, junk, 999, &w, NULL), CL_OK);
    CHECK_EQ(rt_persist_get_module(&kv, h, len, 3000, &back), CL_EINTEGRITY);
    /* A missing chunk. */
    CHECK_EQ(store_delete(st, (const uint8_t *)key, (size_t)klen, 0), CL_OK);
    CHECK_EQ(rt_persist_get_module(&kv, h, len, 3000, &back), CL_ENOTFOUND);

    /* Deleting removes every chunk. */
    CHECK_EQ(rt_persist_put_module(&kv, h, mod, len, 3000), CL_OK);
    rt_persist_delete_module(&kv, h, len, 3000);
    for (int i = 0; i < 4; i++) {
        klen = snprintf(key, sizeof key, "\x01m/%s/%d", hex, i);
        CHECK_EQ(store_get(st, (const uint8_t *)key, (size_t)klen, NULL, NULL, NULL, NULL),
                 CL_ENOTFOUND);
    }

    /* A chunk larger than the store's max value: nothing is left behind. */
    CHECK_EQ(rt_persist_put_module(&kv, h, mod, len, 8000), CL_ETOOBIG);
    klen = snprintf(key, sizeof key, "\x01m/%s/0", hex);
    CHECK_EQ(store_get(st, (const uint8_t *)key, (size_t)klen, NULL, NULL, NULL, NULL), CL_ENOTFOUND);

    cl_buf_fini(&back, 0);
    free(mod);
}

static void test_persist_record(void)
{
    rt_record a = { .kind = RT_KIND_WASM, .module_bytes = 77, .chunk_bytes = 4096,
                    .deployed_at = 42 };
    strcpy(a.tenant, "t1");
    strcpy(a.name, "hello");
    memset(a.sha256, 0x5c, 32);
    CHECK_EQ(rt_persist_put_record(&kv, &a), CL_OK);
    rt_record b;
    CHECK_EQ(rt_persist_get_record(&kv, "t1", "hello", &b), CL_OK);
    CHECK(strcmp(b.name, "hello") == 0 && b.module_bytes == 77 && b.deployed_at == 42);
    CHECK_EQ(rt_persist_get_record(&kv, "t2", "hello", &b), CL_ENOTFOUND);

    /* A record copied under another function's key is refused. */
    strcpy(a.name, "other");
    char *json = rt_record_to_json(&a);
    const char key[] = "\x01" "f/t1/hello";
    store_write w = { .mode = STORE_SET };
    CHECK_EQ(store_set(st, (const uint8_t *)key, sizeof key - 1, (const uint8_t *)json,
                       strlen(json), &w, NULL), CL_OK);
    free(json);
    CHECK_EQ(rt_persist_get_record(&kv, "t1", "hello", &b), CL_EINVAL);

    CHECK_EQ(rt_persist_delete_record(&kv, "t1", "hello"), CL_OK);
    CHECK_EQ(rt_persist_get_record(&kv, "t1", "hello", &b), CL_ENOTFOUND);
}

typedef struct names_seen {
    int n;
    char names[16][140];
} names_seen;

static void collect(void *arg, const char *tenant, const char *name)
{
    names_seen *s = arg;
    if (s->n < 16)
        snprintf(s->names[s->n++], sizeof s->names[0], "%s/%s", tenant, name);
}

static void test_persist_index(void)
{
    names_seen s = { 0 };
    CHECK_EQ(rt_persist_index_list(&kv, collect, &s), CL_OK);   /* no index yet */
    CHECK_EQ(s.n, 0);
    CHECK_EQ(rt_persist_index_update(&kv, "a", "f", 1), CL_OK);
    CHECK_EQ(rt_persist_index_update(&kv, "a", "g", 1), CL_OK);
    CHECK_EQ(rt_persist_index_update(&kv, "b", "f", 1), CL_OK);
    CHECK_EQ(rt_persist_index_update(&kv, "a", "f", 1), CL_OK);   /* already there */
    CHECK_EQ(rt_persist_index_list(&kv, collect, &s), CL_OK);
    CHECK_EQ(s.n, 3);
    CHECK(strcmp(s.names[0], "a/f") == 0 && strcmp(s.names[1], "a/g") == 0 &&
          strcmp(s.names[2], "b/f") == 0);
    CHECK_EQ(rt_persist_index_update(&kv, "a", "g", 0), CL_OK);
    CHECK_EQ(rt_persist_index_update(&kv, "a", "zz", 0), CL_OK);  /* absent: nothing to do */
    s.n = 0;
    CHECK_EQ(rt_persist_index_list(&kv, collect, &s), CL_OK);
    CHECK_EQ(s.n, 2);
    CHECK(strcmp(s.names[0], "a/f") == 0 && strcmp(s.names[1], "b/f") == 0);

    /* A malformed index is reported by list and rewritten by update. */
    const char key[] = "\x01" "i/functions";
    store_write w = { .mode = STORE_SET };
    CHECK_EQ(store_set(st, (const uint8_t *)key, sizeof key - 1, (const uint8_t *)"{oops", 5, &w,
                       NULL), CL_OK);
    CHECK_EQ(rt_persist_index_list(&kv, collect, &s), CL_EINVAL);
    CHECK_EQ(rt_persist_index_update(&kv, "c", "h", 1), CL_OK);
    s.n = 0;
    CHECK_EQ(rt_persist_index_list(&kv, collect, &s), CL_OK);
    CHECK_EQ(s.n, 1);
}

/* Concurrent index writers (as deploys on several nodes will be): every
 * add survives, thanks to compare-and-swap. */
typedef struct idx_writer {
    int id;
    int failures;
} idx_writer;

static void *index_writer(void *arg)
{
    idx_writer *w = arg;
    store_thread *t;
    if (store_thread_create(st_store, &t) != CL_OK) {
        w->failures++;
        return NULL;
    }
    kv_thread kt;
    kv_thread_init(&kt, st_store, t, NULL);
    char name[32];
    for (int i = 0; i < 25; i++) {
        snprintf(name, sizeof name, "w%d-%d", w->id, i);
        if (rt_persist_index_update(&kt, "conc", name, 1) != CL_OK)
            w->failures++;
    }
    kv_thread_fini(&kt);
    store_thread_destroy(t);
    return NULL;
}

static void count_conc(void *arg, const char *tenant, const char *name)
{
    (void)name;
    if (strcmp(tenant, "conc") == 0)
        (*(int *)arg)++;
}

static void test_persist_index_concurrent(void)
{
    pthread_t th[4];
    idx_writer w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (idx_writer){ .id = i };
        pthread_create(&th[i], NULL, index_writer, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(w[i].failures, 0);
    }
    int n = 0;
    CHECK_EQ(rt_persist_index_list(&kv, count_conc, &n), CL_OK);
    CHECK_EQ(n, 100);
}

int main(void)
{
    RUN(test_names);
    RUN(test_install_get_replace_remove);
    RUN(test_many_names_grow);
    RUN(test_concurrent_replace);
    RUN(test_record_json);
    store_up();
    RUN(test_persist_module);
    RUN(test_persist_record);
    RUN(test_persist_index);
    RUN(test_persist_index_concurrent);
    store_down();
    return th_done();
}
