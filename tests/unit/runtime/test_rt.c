/*
 * test_rt.c - the runtime core (runtime/runtime.h) end to end, in
 * process: deploy real modules (the examples and test modules the build
 * makes, and the native hello.so), invoke them, and check
 * errors, redeploys, removal, logs, traps and time-outs, state kept in
 * the store across invocations, tenant isolation, persistence of the
 * registry in the store (a second runtime on the same store finds every
 * function, and the compile cache makes that cheap), concurrency (1,000
 * concurrent increments under a lock end at exactly 1,000), and metrics.
 *
 * The build directory is found from /proc/self/exe (BUILD/tests/test_rt).
 */
#include "../harness.h"

#include "../../../src/common/err.h"
#include "../../../src/common/log.h"
#include "../../../src/runtime/runtime.h"

#include <errno.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char build_dir[4096];
static char state_dir[256];
static store *st_store;
static rt *R;

/* ---- helpers ------------------------------------------------------------------- */

static int read_file(const char *rel, cl_buf *out)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", build_dir, rel);
    out->len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "     cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (cl_buf_reserve(out, 65536) != CL_OK)
            break;
        size_t n = fread(out->data + out->len, 1, 65536, f);
        out->len += n;
        if (n < 65536)
            break;
    }
    fclose(f);
    return 0;
}

static rt *make_rt(const char *dir, int threads)
{
    rt_config cfg = {
        .store = st_store,
        .state_dir = dir,
        .exec_threads = threads,
        .timeout_ms = 1000,
        .max_input_bytes = 1 << 20,
    };
    rt *r = NULL;
    int rc = rt_create(&cfg, &r);
    if (rc != CL_OK)
        fprintf(stderr, "     rt_create: %s\n", cl_strerror(rc));
    return r;
}

/* Deploys a file of the build directory; returns the rt_deploy code. */
static int deploy_file(rt *r, const char *tenant, const char *name, const char *rel,
                       rt_fn_info *info, cl_buf *err)
{
    cl_buf mod;
    cl_buf_init(&mod);
    if (read_file(rel, &mod) != 0) {
        cl_buf_fini(&mod, 0);
        return CL_EIO;
    }
    err->len = 0;
    int rc = rt_deploy(r, tenant, name, mod.data, mod.len, NULL, NULL, info, err);
    if (rc != CL_OK)
        fprintf(stderr, "     deploy %s as %s/%s: %s: %.*s\n", rel, tenant, name, cl_strerror(rc),
                (int)err->len, (const char *)err->data);
    cl_buf_fini(&mod, 0);
    return rc;
}

/* Invokes and returns the status; the output (NUL-terminated) in out. */
static rt_status invoke(rt *r, const char *tenant, const char *name, const char *input,
                        cl_buf *out, rt_result *res)
{
    out->len = 0;
    rt_result tmp;
    if (!res)
        res = &tmp;
    int rc = rt_invoke_wait(r, tenant, name, (const uint8_t *)input, input ? strlen(input) : 0,
                            out, res);
    CHECK_EQ(rc, CL_OK);
    if (cl_buf_reserve(out, 1) == CL_OK)
        out->data[out->len] = '\0';
    return res->status;
}

static rt_status invoke_sel(rt *r, const char *tenant, const char *name, uint32_t sel,
                            cl_buf *out, rt_result *res)
{
    out->len = 0;
    uint8_t in[4] = { (uint8_t)sel, (uint8_t)(sel >> 8), (uint8_t)(sel >> 16), (uint8_t)(sel >> 24) };
    CHECK_EQ(rt_invoke_wait(r, tenant, name, in, 4, out, res), CL_OK);
    return res->status;
}

static int out_is(const cl_buf *b, const char *s)
{
    int ok = b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
    if (!ok)
        fprintf(stderr, "     output %.*s (%zu bytes), expected %s", (int)b->len,
                (const char *)b->data, b->len, s);
    return ok;
}

/* A hand-made module whose `init` traps (unreachable); handle returns 0. */
static const uint8_t init_trap_wasm[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x08, 0x02, 0x60, 0x00, 0x01, 0x7f, 0x60, 0x00, 0x00,           /* types */
    0x03, 0x03, 0x02, 0x00, 0x01,                                         /* funcs */
    0x05, 0x03, 0x01, 0x00, 0x01,                                         /* memory 1 */
    0x07, 0x1a, 0x03,                                                     /* exports */
    0x06, 'h', 'a', 'n', 'd', 'l', 'e', 0x00, 0x00,
    0x04, 'i', 'n', 'i', 't', 0x00, 0x01,
    0x06, 'm', 'e', 'm', 'o', 'r', 'y', 0x02, 0x00,
    0x0a, 0x0a, 0x02, 0x04, 0x00, 0x41, 0x00, 0x0b, 0x03, 0x00, 0x00, 0x0b, /* code */
};

/* ---- tests ------------------------------------------------------------------------ */

static void test_deploy_invoke_hello(void)
{
    cl_buf mod, err, out;
    cl_buf_init(&mod);
    cl_buf_init(&err);
    cl_buf_init(&out);
    REQUIRE(read_file("examples/hello.wasm", &mod) == 0);
    uint8_t h[32];
    unsigned hl;
    EVP_Digest(mod.data, mod.len, h, &hl, EVP_sha256(), NULL);

    rt_fn_info info;
    int rc = rt_deploy(R, "t1", "hello", mod.data, mod.len, NULL, NULL, &info, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     %.*s\n", (int)err.len, (const char *)err.data);
    REQUIRE(rc == CL_OK);
    CHECK(strcmp(info.tenant, "t1") == 0 && strcmp(info.name, "hello") == 0);
    CHECK_EQ(info.kind, RT_KIND_WASM);
    CHECK_MEM(info.hash, h, 32);
    CHECK_EQ(info.module_bytes, mod.len);
    CHECK(info.deployed_at > 1600000000);

    rt_result res;
    CHECK_EQ(invoke(R, "t1", "hello", "Cloister", &out, &res), RT_OK);
    CHECK(out_is(&out, "Hello, Cloister!\n"));
    CHECK_EQ(res.code, 0);
    CHECK_EQ(invoke(R, "t1", "hello", NULL, &out, NULL), RT_OK);
    CHECK(out_is(&out, "Hello, world!\n"));

    /* The function's stderr is its log. */
    cl_buf log;
    cl_buf_init(&log);
    CHECK_EQ(rt_logs(R, "t1", "hello", &log), CL_OK);
    CHECK(log.len > 0 && memmem(log.data, log.len, "greeted a 8-byte name", 21) != NULL);
    cl_buf_fini(&log, 0);

    /* The same module under another name compiles no more. */
    rc = rt_deploy(R, "t1", "hello2", mod.data, mod.len, NULL, NULL, &info, &err);
    CHECK_EQ(rc, CL_OK);
    CHECK_EQ(info.cached, 1);
    CHECK_EQ(invoke(R, "t1", "hello2", "again", &out, NULL), RT_OK);
    CHECK(out_is(&out, "Hello, again!\n"));

    cl_buf_fini(&mod, 0);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

typedef struct progress_seen {
    int calls;
    int saw_validate, saw_template;
} progress_seen;

static void on_progress(void *arg, const char *stage, int pct)
{
    progress_seen *p = arg;
    p->calls++;
    if (strcmp(stage, "validate") == 0)
        p->saw_validate = 1;
    if (strcmp(stage, "template") == 0 && pct == 100)
        p->saw_template = 1;
}

static void test_progress(void)
{
    cl_buf mod, err;
    cl_buf_init(&mod);
    cl_buf_init(&err);
    REQUIRE(read_file("examples/hello.wasm", &mod) == 0);
    progress_seen p = { 0 };
    CHECK_EQ(rt_deploy(R, "t1", "hello3", mod.data, mod.len, on_progress, &p, NULL, &err), CL_OK);
    CHECK(p.saw_validate);
    CHECK(p.saw_template);
    CHECK_EQ(rt_remove(R, "t1", "hello3"), CL_OK);
    cl_buf_fini(&mod, 0);
    cl_buf_fini(&err, 0);
}

static int err_has(const cl_buf *err, const char *word)
{
    return err->len && memmem(err->data, err->len, word, strlen(word)) != NULL;
}

static void test_deploy_errors(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info info;
    static const uint8_t junk[] = "this is not a module";
    static const uint8_t bad_wasm[] = { 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0xff };

    CHECK_EQ(rt_deploy(R, "t1", "bad/name", junk, sizeof junk, NULL, NULL, &info, &err), CL_EINVAL);
    CHECK(err_has(&err, "name"));
    CHECK_EQ(rt_deploy(R, "", "x", junk, sizeof junk, NULL, NULL, &info, &err), CL_EINVAL);
    CHECK(err_has(&err, "tenant"));
    CHECK_EQ(rt_deploy(R, "t1", "x", junk, 0, NULL, NULL, &info, &err), CL_EINVAL);
    CHECK(err_has(&err, "empty"));
    CHECK_EQ(rt_deploy(R, "t1", "x", junk, sizeof junk, NULL, NULL, &info, &err), CL_EINVAL);
    CHECK(err_has(&err, "WebAssembly"));

    /* Oversized: refused before anything looks at it. */
    size_t big = ((size_t)16 << 20) + 1;
    uint8_t *huge = calloc(1, big);
    REQUIRE(huge != NULL);
    memcpy(huge, "\0asm\1\0\0\0", 8);
    CHECK_EQ(rt_deploy(R, "t1", "x", huge, big, NULL, NULL, &info, &err), CL_ETOOBIG);
    CHECK(err_has(&err, "at most"));
    free(huge);

    /* A malformed module does not disturb what is deployed under the name. */
    CHECK_EQ(rt_deploy(R, "t1", "hello", bad_wasm, sizeof bad_wasm, NULL, NULL, &info, &err),
             CL_EINVAL);
    CHECK(err.len > 0);
    CHECK_EQ(invoke(R, "t1", "hello", "still", &out, NULL), RT_OK);
    CHECK(out_is(&out, "Hello, still!\n"));

    /* A module whose init traps is refused with the trap's name. */
    CHECK_EQ(rt_deploy(R, "t1", "hello", init_trap_wasm, sizeof init_trap_wasm, NULL, NULL, &info,
                       &err), CL_EINVAL);
    if (!err_has(&err, "unreachable"))
        fprintf(stderr, "     init trap message: %.*s\n", (int)err.len, (const char *)err.data);
    CHECK(err_has(&err, "unreachable"));
    CHECK_EQ(invoke(R, "t1", "hello", "still", &out, NULL), RT_OK);

    /* A module importing what the ABI does not give. */
    cl_buf mod;
    cl_buf_init(&mod);
    if (read_file("tests/modules/bad_import_fork.wasm", &mod) == 0) {
        CHECK_EQ(rt_deploy(R, "t1", "fork", mod.data, mod.len, NULL, NULL, &info, &err), CL_EINVAL);
        CHECK(err_has(&err, "fork"));
        CHECK_EQ(invoke(R, "t1", "fork", NULL, &out, NULL), RT_NOT_FOUND);
    } else {
        CHECK(0);
    }
    cl_buf_fini(&mod, 0);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

static void test_invoke_errors(void)
{
    cl_buf out;
    cl_buf_init(&out);
    rt_result res;
    CHECK_EQ(invoke(R, "t1", "nope", NULL, &out, &res), RT_NOT_FOUND);
    CHECK_EQ(invoke(R, "t2", "hello", NULL, &out, &res), RT_NOT_FOUND);   /* other tenant */
    CHECK_EQ(invoke(R, "t1", "../hello", NULL, &out, &res), RT_NOT_FOUND);

    /* Input over max_input_bytes (1 MiB here). */
    size_t n = (1 << 20) + 1;
    uint8_t *in = malloc(n);
    REQUIRE(in != NULL);
    memset(in, 'a', n);
    CHECK_EQ(rt_invoke_wait(R, "t1", "hello", in, n, &out, &res), CL_OK);
    CHECK_EQ(res.status, RT_TOO_LARGE);
    CHECK_EQ(rt_invoke_wait(R, "t1", "hello", in, n - 1, &out, &res), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    free(in);
    cl_buf_fini(&out, 0);
}

static void test_traps_and_timeouts(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info info;
    REQUIRE(deploy_file(R, "t1", "traps", "tests/modules/sb_traps.wasm", &info, &err) == CL_OK);
    rt_result res;
    CHECK_EQ(invoke_sel(R, "t1", "traps", 0, &out, &res), RT_OK);
    CHECK_EQ(invoke_sel(R, "t1", "traps", 4, &out, &res), RT_TRAP);
    CHECK(strstr(res.detail, "unreachable") != NULL);
    CHECK_EQ(invoke_sel(R, "t1", "traps", 1, &out, &res), RT_TRAP);
    CHECK(strstr(res.detail, "out of bounds") != NULL);
    CHECK_EQ(invoke_sel(R, "t1", "traps", 5, &out, &res), RT_TRAP);
    CHECK_EQ(invoke_sel(R, "t1", "traps", 15, &out, &res), RT_FN_ERROR);
    CHECK_EQ(res.code, 7);
    uint64_t t0 = (uint64_t)time(NULL);
    CHECK_EQ(invoke_sel(R, "t1", "traps", 11, &out, &res), RT_TIMEOUT);   /* runaway loop */
    CHECK((uint64_t)time(NULL) - t0 < 10);
    /* The node goes on: the next invocation is fine. */
    CHECK_EQ(invoke_sel(R, "t1", "traps", 0, &out, &res), RT_OK);

    /* Failures are counted and logged. */
    cl_buf log;
    cl_buf_init(&log);
    CHECK_EQ(rt_logs(R, "t1", "traps", &log), CL_OK);
    CHECK(log.len && memmem(log.data, log.len, "unreachable", 11) != NULL);
    CHECK(log.len && memmem(log.data, log.len, "handle returned 7", 17) != NULL);
    cl_buf_fini(&log, 0);

    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

typedef struct listed {
    int n;
    rt_fn_info infos[32];
} listed;

static void collect(void *arg, const rt_fn_info *info)
{
    listed *l = arg;
    if (l->n < 32)
        l->infos[l->n++] = *info;
}

static const rt_fn_info *find(const listed *l, const char *tenant, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->infos[i].tenant, tenant) == 0 && strcmp(l->infos[i].name, name) == 0)
            return &l->infos[i];
    return NULL;
}

static void test_redeploy_and_counters(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info a, b;
    REQUIRE(deploy_file(R, "t1", "swap", "examples/hello.wasm", &a, &err) == CL_OK);
    CHECK_EQ(invoke(R, "t1", "swap", "x", &out, NULL), RT_OK);
    CHECK_EQ(invoke(R, "t1", "swap", "y", &out, NULL), RT_OK);
    REQUIRE(deploy_file(R, "t1", "swap", "examples/counter.wasm", &b, &err) == CL_OK);
    CHECK(memcmp(a.hash, b.hash, 32) != 0);
    CHECK_EQ(b.invocations, 2);                 /* counters belong to the name */
    CHECK_EQ(invoke(R, "t1", "swap", "reset", &out, NULL), RT_OK);
    CHECK(out_is(&out, "0\n"));
    CHECK_EQ(invoke(R, "t1", "swap", "bogus", &out, NULL), RT_FN_ERROR);

    listed l = { 0 };
    rt_list(R, collect, &l);
    const rt_fn_info *i = find(&l, "t1", "swap");
    CHECK(i != NULL);
    if (i) {
        CHECK_MEM(i->hash, b.hash, 32);
        CHECK_EQ(i->invocations, 4);
        CHECK_EQ(i->errors, 1);
        CHECK_EQ(i->kind, RT_KIND_WASM);
    }
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

static void test_state_and_tenants(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info info;
    REQUIRE(deploy_file(R, "t1", "counter", "examples/counter.wasm", &info, &err) == CL_OK);
    REQUIRE(deploy_file(R, "t2", "counter", "examples/counter.wasm", &info, &err) == CL_OK);
    CHECK_EQ(invoke(R, "t1", "counter", "reset", &out, NULL), RT_OK);
    CHECK_EQ(invoke(R, "t2", "counter", "reset", &out, NULL), RT_OK);
    CHECK_EQ(invoke(R, "t1", "counter", "incr", &out, NULL), RT_OK);
    CHECK_EQ(invoke(R, "t1", "counter", "incr", &out, NULL), RT_OK);
    CHECK_EQ(invoke(R, "t1", "counter", "add 5", &out, NULL), RT_OK);
    CHECK(out_is(&out, "7\n"));
    CHECK_EQ(invoke(R, "t2", "counter", "incr", &out, NULL), RT_OK);
    CHECK(out_is(&out, "1\n"));                  /* t2's key is its own */
    CHECK_EQ(invoke(R, "t1", "counter", "get", &out, NULL), RT_OK);
    CHECK(out_is(&out, "7\n"));

    /* The key lives in t1's namespace in the store, sealed like any value. */
    store_thread *st;
    REQUIRE(store_thread_create(st_store, &st) == CL_OK);
    static const char key[] = "\x01" "tt1/count";
    store_meta m;
    CHECK_EQ(store_get(st, (const uint8_t *)key, sizeof key - 1, &(store_get_opts){ 0 }, NULL, NULL,
                       &m), CL_OK);
    CHECK_EQ(m.len, 1);
    CHECK_EQ(store_get(st, (const uint8_t *)"count", 5, &(store_get_opts){ 0 }, NULL, NULL, &m),
             CL_ENOTFOUND);
    store_thread_destroy(st);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

/* 1,000 invocations queued at once. */
typedef struct burst {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left, ok;
    cl_buf outs[1000];
} burst;

static void burst_done(void *arg, const rt_result *res)
{
    burst *b = arg;
    pthread_mutex_lock(&b->mu);
    if (res->status == RT_OK)
        b->ok++;
    else
        fprintf(stderr, "     invocation: status %d %s\n", res->status, res->detail);
    if (--b->left == 0)
        pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static int run_burst(const char *name, int n)
{
    burst *b = calloc(1, sizeof *b);
    REQUIRE(b != NULL);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->left = n;
    for (int i = 0; i < n; i++) {
        cl_buf_init(&b->outs[i]);
        CHECK_EQ(rt_invoke(R, "t1", name, (const uint8_t *)"incr", 4, &b->outs[i], burst_done, b),
                 CL_OK);
    }
    pthread_mutex_lock(&b->mu);
    while (b->left)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    int ok = b->ok;
    for (int i = 0; i < n; i++)
        cl_buf_fini(&b->outs[i], 0);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return ok;
}

static void test_concurrent_increments(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info info;
    REQUIRE(deploy_file(R, "t1", "locked", "examples/counter_locked.wasm", &info, &err) == CL_OK);
    CHECK_EQ(invoke(R, "t1", "locked", "reset", &out, NULL), RT_OK);
    CHECK_EQ(run_burst("locked", 1000), 1000);
    CHECK_EQ(invoke(R, "t1", "locked", "get", &out, NULL), RT_OK);
    CHECK(out_is(&out, "1000\n"));

    CHECK_EQ(invoke(R, "t1", "counter", "reset", &out, NULL), RT_OK);
    CHECK_EQ(run_burst("counter", 1000), 1000);
    CHECK_EQ(invoke(R, "t1", "counter", "get", &out, NULL), RT_OK);
    CHECK(out_is(&out, "1000\n"));
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

/* Redeploying while invocations run: every invocation completes, on the
 * old or the new version. */
typedef struct churn {
    int stop, ok, bad;
} churn;

static void *churn_invoker(void *arg)
{
    churn *c = arg;
    cl_buf out;
    cl_buf_init(&out);
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        rt_result res;
        /* hello greets the world, counter counts: both answer 200. */
        CHECK_EQ(rt_invoke_wait(R, "churn", "churn", NULL, 0, &out, &res), CL_OK);
        if (res.status == RT_OK && out.len > 0)
            __atomic_add_fetch(&c->ok, 1, __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&c->bad, 1, __ATOMIC_RELAXED);
    }
    cl_buf_fini(&out, 0);
    return NULL;
}

static void test_redeploy_under_load(void)
{
    cl_buf err;
    cl_buf_init(&err);
    rt_fn_info info;
    REQUIRE(deploy_file(R, "churn", "churn", "examples/hello.wasm", &info, &err) == CL_OK);
    churn c = { 0 };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, churn_invoker, &c);
    for (int i = 0; i < 6; i++)
        CHECK_EQ(deploy_file(R, "churn", "churn", i % 2 ? "examples/hello.wasm" : "examples/counter.wasm",
                             &info, &err), CL_OK);
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(c.bad, 0);
    CHECK(c.ok > 0);
    cl_buf_fini(&err, 0);
}

static void test_native(void)
{
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);
    rt_fn_info info;
    int rc = deploy_file(R, "t1", "hello-native", "examples/hello.so", &info, &err);
    CHECK_EQ(rc, CL_OK);
    if (rc == CL_OK) {
        CHECK_EQ(info.kind, RT_KIND_NATIVE);
        CHECK_EQ(invoke(R, "t1", "hello-native", "native", &out, NULL), RT_OK);
        CHECK(out_is(&out, "Hello, native!\n"));
        CHECK_EQ(rt_remove(R, "t1", "hello-native"), CL_OK);
    }
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

static void test_remove(void)
{
    cl_buf out, log;
    cl_buf_init(&out);
    cl_buf_init(&log);
    CHECK_EQ(rt_remove(R, "t1", "hello2"), CL_OK);
    CHECK_EQ(invoke(R, "t1", "hello2", NULL, &out, NULL), RT_NOT_FOUND);
    CHECK_EQ(rt_remove(R, "t1", "hello2"), CL_ENOTFOUND);
    CHECK_EQ(rt_logs(R, "t1", "hello2", &log), CL_ENOTFOUND);
    CHECK_EQ(rt_remove(R, "t1", "bad/name"), CL_ENOTFOUND);
    /* Its sibling with the same module is untouched. */
    CHECK_EQ(invoke(R, "t1", "hello", "sibling", &out, NULL), RT_OK);
    CHECK(out_is(&out, "Hello, sibling!\n"));
    listed l = { 0 };
    rt_list(R, collect, &l);
    CHECK(find(&l, "t1", "hello2") == NULL);
    CHECK(find(&l, "t1", "hello") != NULL);
    cl_buf_fini(&out, 0);
    cl_buf_fini(&log, 0);
}

static void test_metrics(void)
{
    rt_metrics m;
    rt_get_metrics(R, &m);
    CHECK(m.invocations >= 2000);
    CHECK(m.errors >= 5);
    CHECK(m.traps >= 3);
    CHECK(m.timeouts >= 1);
    CHECK(m.deploys >= 5);
    CHECK(m.compiles + m.cache_hits >= 5);
    CHECK(m.functions >= 5);
    CHECK(m.latency_count > 0);
    CHECK_EQ(m.latency_buckets[RT_LATENCY_BUCKETS - 1], m.latency_count);
    for (int i = 1; i < RT_LATENCY_BUCKETS; i++)
        CHECK(m.latency_buckets[i] >= m.latency_buckets[i - 1]);
    CHECK(m.slots >= 1);
}

/* A second runtime on the same store finds every function (the store
 * keeps the registry), and the compile cache serves their code. */
static void test_persistence(void)
{
    listed before = { 0 };
    rt_list(R, collect, &before);
    rt_destroy(R);
    R = NULL;

    store_thread *st;
    REQUIRE(store_thread_create(st_store, &st) == CL_OK);
    static const char rec[] = "\x01" "f/t1/hello";
    store_meta m;
    CHECK_EQ(store_get(st, (const uint8_t *)rec, sizeof rec - 1, &(store_get_opts){ 0 }, NULL, NULL, &m),
             CL_OK);
    store_thread_destroy(st);

    R = make_rt(state_dir, 2);
    REQUIRE(R != NULL);
    listed after = { 0 };
    rt_list(R, collect, &after);
    CHECK_EQ(after.n, before.n);
    for (int i = 0; i < before.n; i++) {
        const rt_fn_info *a = find(&after, before.infos[i].tenant, before.infos[i].name);
        CHECK(a != NULL);
        if (a) {
            CHECK_MEM(a->hash, before.infos[i].hash, 32);
            CHECK_EQ(a->deployed_at, before.infos[i].deployed_at);
        }
    }
    rt_metrics mt;
    rt_get_metrics(R, &mt);
    CHECK_EQ(mt.compiles, 0);                    /* everything came from the cache */
    cl_buf out;
    cl_buf_init(&out);
    CHECK_EQ(invoke(R, "t1", "hello", "again", &out, NULL), RT_OK);
    CHECK(out_is(&out, "Hello, again!\n"));
    CHECK_EQ(invoke(R, "t1", "counter", "get", &out, NULL), RT_OK);
    CHECK(out_is(&out, "1000\n"));               /* state is in the store, not the instance */
    cl_buf_fini(&out, 0);
}

int main(int argc, char **argv)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(n > 0);
    exe[n] = '\0';
    snprintf(build_dir, sizeof build_dir, "%s", argc > 1 ? argv[1] : dirname(dirname(exe)));
    snprintf(state_dir, sizeof state_dir, "/tmp/cloister-test-rt-XXXXXX");
    REQUIRE(mkdtemp(state_dir) != NULL);
    cl_log_set_level(CL_LOG_WARN);

    store_config sc = { .memory_bytes = 64u << 20 };
    REQUIRE(store_create(&sc, &st_store) == CL_OK);
    R = make_rt(state_dir, 2);
    REQUIRE(R != NULL);

    RUN(test_deploy_invoke_hello);
    RUN(test_progress);
    RUN(test_deploy_errors);
    RUN(test_invoke_errors);
    RUN(test_traps_and_timeouts);
    RUN(test_redeploy_and_counters);
    RUN(test_state_and_tenants);
    RUN(test_concurrent_increments);
    RUN(test_redeploy_under_load);
    RUN(test_native);
    RUN(test_remove);
    RUN(test_metrics);
    RUN(test_persistence);

    rt_destroy(R);
    store_destroy(st_store);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", state_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", state_dir);
    return th_done();
}
