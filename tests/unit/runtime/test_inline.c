/*
 * test_inline.c - invocations run inline on the calling thread (rt.c,
 * "Inline invocations"), end to end through the real runtime:
 *   - a new version runs on the executors first (probation), then on the
 *     caller's thread, with `done` called there before rt_invoke returns;
 *     the main thread and a runtime made with no_inline never run inline;
 *   - modules importing a call that waits (cloister.lock) never do;
 *   - inline, traps (unreachable, out of bounds, stack overflow) fail only
 *     their invocation, a runaway loop is stopped by the time-out (also one
 *     looping in host code), and the thread goes on serving; a version
 *     that ran long inline goes back to the executors (back-off);
 *   - every inline invocation starts from the template, and a function
 *     never sees another's memory in the thread's slots;
 *   - a thread's inline state is freed when it exits, and survives the
 *     runtime it served (a new runtime on the same thread works).
 *
 * Work runs on "agent" threads (run_on) because the main thread cannot
 * host a sandbox.  Whether a given invocation ran inline is read from
 * rt_metrics.inline_invocations around it (one invocation at a time);
 * probation and the back-off depend on measured times, so the tests wait
 * for the first inline run (bounded) instead of counting on it.
 *
 * The build directory is found from /proc/self/exe (BUILD/tests/test_inline).
 */
#include "../harness.h"

#include "../../../src/common/err.h"
#include "../../../src/common/log.h"
#include "../../../src/runtime/runtime.h"

#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 300
#define INLINE_WAIT_S 20.0  /* seconds to wait for a version's first inline run */

static char build_dir[4096];
static char state_dir[256];
static store *st_store;

/* ---- agent threads: run a function on a thread of their own ---------------- */

typedef struct agent {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(void *);   /* under mu: work to run, NULL when done */
    void *arg;
    int stop;
} agent;

static void *agent_main(void *p)
{
    agent *a = p;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->fn && !a->stop)
            pthread_cond_wait(&a->cv, &a->mu);
        if (!a->fn)
            break;
        pthread_mutex_unlock(&a->mu);
        a->fn(a->arg);
        pthread_mutex_lock(&a->mu);
        a->fn = NULL;
        pthread_cond_broadcast(&a->cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static void agent_start(agent *a)
{
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    REQUIRE(pthread_create(&a->tid, NULL, agent_main, a) == 0);
}

/* Runs fn(arg) on a's thread and waits for it. */
static void run_on(agent *a, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&a->mu);
    a->fn = fn;
    a->arg = arg;
    pthread_cond_broadcast(&a->cv);
    while (a->fn)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static void agent_stop(agent *a)
{
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->tid, NULL);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
}

/* ---- helpers ------------------------------------------------------------------- */

static rt *make_rt(int no_inline)
{
    rt_config cfg = {
        .store = st_store,
        .state_dir = state_dir,
        .exec_threads = 2,
        .timeout_ms = TIMEOUT_MS,
        .no_inline = no_inline,
    };
    rt *r = NULL;
    int rc = rt_create(&cfg, &r);
    if (rc != CL_OK)
        fprintf(stderr, "     rt_create: %s\n", cl_strerror(rc));
    return r;
}

static int deploy_file(rt *r, const char *name, const char *rel)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", build_dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "     cannot open %s: %s\n", path, strerror(errno));
        return CL_EIO;
    }
    cl_buf mod, err;
    cl_buf_init(&mod);
    cl_buf_init(&err);
    int rc = CL_OK;
    for (;;) {
        if ((rc = cl_buf_reserve(&mod, 65536)) != CL_OK)
            break;
        size_t n = fread(mod.data + mod.len, 1, 65536, f);
        mod.len += n;
        if (n < 65536)
            break;
    }
    fclose(f);
    if (rc == CL_OK)
        rc = rt_deploy(r, "t", name, mod.data, mod.len, NULL, NULL, NULL, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     deploy %s: %s: %.*s\n", rel, cl_strerror(rc), (int)err.len,
                (const char *)err.data);
    cl_buf_fini(&mod, 0);
    cl_buf_fini(&err, 0);
    return rc;
}

static uint64_t inlined(rt *r)
{
    rt_metrics m;
    rt_get_metrics(r, &m);
    return m.inline_invocations;
}

/* One invocation, waited for; *ran_inline says where it ran. */
static rt_status invoke(rt *r, const char *name, const void *in, size_t n, cl_buf *out,
                        rt_result *res, int *ran_inline)
{
    uint64_t before = inlined(r);
    out->len = 0;
    CHECK_EQ(rt_invoke_wait(r, "t", name, in, n, out, res), CL_OK);
    if (ran_inline)
        *ran_inline = inlined(r) == before + 1;
    return res->status;
}

static rt_status invoke_sel(rt *r, const char *name, uint32_t sel, cl_buf *out, rt_result *res,
                            int *ran_inline)
{
    uint8_t in[4] = { (uint8_t)sel, (uint8_t)(sel >> 8), (uint8_t)(sel >> 16), (uint8_t)(sel >> 24) };
    return invoke(r, name, in, sizeof in, out, res, ran_inline);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Invokes `name` (input `in`, which must succeed) until one invocation ran
 * inline (at most INLINE_WAIT_S); returns how many it took, or 0. */
static int until_inline(rt *r, const char *name, const void *in, size_t n)
{
    cl_buf out;
    cl_buf_init(&out);
    int k = 0, ran = 0;
    double end = now_s() + INLINE_WAIT_S;
    while (!ran && now_s() < end) {
        rt_result res;
        k++;
        if (invoke(r, name, in, n, &out, &res, &ran) != RT_OK) {
            fprintf(stderr, "     %s: status %d %s\n", name, res.status, res.detail);
            ran = 0;
            break;
        }
    }
    if (!ran)
        fprintf(stderr, "     %s: no inline run in %d invocations\n", name, k);
    cl_buf_fini(&out, 0);
    return ran ? k : 0;
}

static const uint8_t sel0[4] = { 0 };

/* ---- tests ----------------------------------------------------------------------- */

typedef struct ctx {
    rt *r;
    int n;
    int ok;
} ctx;

/* rt_invoke's completion, as seen by the caller. */
typedef struct completion {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, returned, done_before_return;
    pthread_t thread;
    rt_result res;
} completion;

static void on_done(void *arg, const rt_result *res)
{
    completion *c = arg;
    pthread_mutex_lock(&c->mu);
    c->thread = pthread_self();
    c->done_before_return = !c->returned;
    c->res = *res;
    c->done = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* rt_invoke, then waits for done; 1 if done ran on this thread before
 * rt_invoke returned. */
static int invoke_async(rt *r, const char *name, const char *in, cl_buf *out, rt_result *res)
{
    completion c = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    out->len = 0;
    CHECK_EQ(rt_invoke(r, "t", name, (const uint8_t *)in, strlen(in), out, on_done, &c), CL_OK);
    pthread_mutex_lock(&c.mu);
    c.returned = 1;
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    *res = c.res;
    int here = c.done_before_return && pthread_equal(c.thread, pthread_self());
    CHECK(c.done_before_return == here);   /* before the return means on this thread */
    return here;
}

static void probation_then_inline(void *arg)
{
    ctx *c = arg;
    cl_buf out;
    cl_buf_init(&out);
    rt_result res;

    /* Probation: a new version runs on the executors first. */
    int ran = 1;
    CHECK_EQ(invoke(c->r, "hello", "Ada", 3, &out, &res, &ran), RT_OK);
    CHECK_EQ(ran, 0);
    CHECK(out.len == 12 && memcmp(out.data, "Hello, Ada!\n", 12) == 0);
    c->n = until_inline(c->r, "hello", "Ada", 3);
    CHECK(c->n >= 7);               /* INLINE_PROBATION (8) runs, one made above */

    /* Inline: `done` runs here before rt_invoke returns (a few tries: a
     * noisy machine may make the version back off for a moment). */
    int here = 0;
    for (int i = 0; i < 100 && !here; i++) {
        here = invoke_async(c->r, "hello", "Bo", &out, &res);
        CHECK_EQ(res.status, RT_OK);
        CHECK(out.len == 11 && memcmp(out.data, "Hello, Bo!\n", 11) == 0);
        if (!here)
            usleep(20000);
    }
    CHECK(here);
    cl_buf_fini(&out, 0);
}

static void test_probation_then_inline(void)
{
    rt *r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "hello", "examples/hello.wasm") == CL_OK);
    agent a;
    agent_start(&a);
    ctx c = { .r = r };
    run_on(&a, probation_then_inline, &c);

    /* The main thread never runs an invocation itself. */
    cl_buf out;
    cl_buf_init(&out);
    for (int i = 0; i < 20; i++) {
        rt_result res;
        int ran = 1;
        CHECK_EQ(invoke(r, "hello", NULL, 0, &out, &res, &ran), RT_OK);
        CHECK_EQ(ran, 0);
    }
    cl_buf_fini(&out, 0);
    rt_metrics m;
    rt_get_metrics(r, &m);
    uint64_t slots_with_agent = m.slots;
    CHECK(m.inline_invocations >= 1);
    CHECK(m.invocations >= m.inline_invocations + 20);

    /* The agent's sandbox goes when its thread exits. */
    agent_stop(&a);
    rt_get_metrics(r, &m);
    CHECK(m.slots < slots_with_agent);
    rt_destroy(r);
}

static void never_inline(void *arg)
{
    ctx *c = arg;
    cl_buf out;
    cl_buf_init(&out);
    c->ok = 1;
    for (int i = 0; i < c->n; i++) {
        rt_result res;
        int ran = 1;
        rt_status s = invoke(c->r, c->n > 100 ? "hello" : "locked", "incr", 4, &out, &res, &ran);
        if (s != RT_OK || ran) {
            fprintf(stderr, "     invocation %d: status %d, inline %d\n", i, s, ran);
            c->ok = 0;
        }
    }
    cl_buf_fini(&out, 0);
}

static void test_never_inline(void)
{
    agent a;
    agent_start(&a);

    /* A module that imports cloister.lock (it may wait) stays on the
     * executors, however short its runs. */
    rt *r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "locked", "examples/counter_locked.wasm") == CL_OK);
    cl_buf out;
    cl_buf_init(&out);
    CHECK_EQ(invoke(r, "locked", "reset", 5, &out, &(rt_result){ 0 }, NULL), RT_OK);
    ctx c = { .r = r, .n = 60 };
    run_on(&a, never_inline, &c);
    CHECK(c.ok);
    CHECK_EQ(invoke(r, "locked", "get", 3, &out, &(rt_result){ 0 }, NULL), RT_OK);
    CHECK(out.len == 3 && memcmp(out.data, "60\n", 3) == 0);
    CHECK_EQ(inlined(r), 0);
    rt_destroy(r);

    /* A runtime made with no_inline: nothing runs inline. */
    r = make_rt(1);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "hello", "examples/hello.wasm") == CL_OK);
    c.r = r;
    c.n = 200;
    run_on(&a, never_inline, &c);
    CHECK(c.ok);
    CHECK_EQ(inlined(r), 0);
    rt_destroy(r);   /* the agent, alive, never made inline state */
    agent_stop(&a);
    cl_buf_fini(&out, 0);
}

static void traps_inline(void *arg)
{
    ctx *c = arg;
    rt *r = c->r;
    cl_buf out;
    cl_buf_init(&out);
    rt_result res;
    int ran;
    static const struct { uint32_t sel; rt_status status; const char *detail; } cases[] = {
        { 4, RT_TRAP, "unreachable" },
        { 1, RT_TRAP, "out of bounds" },
        { 5, RT_TRAP, "divide by zero" },
        { 7, RT_TRAP, "exhausted" },        /* stack overflow on this thread's stack */
        { 19, RT_TRAP, "exhausted" },       /* ... met in host code */
        { 15, RT_FN_ERROR, NULL },
        { 14, RT_FN_ERROR, NULL },          /* proc_exit(3) */
    };
    REQUIRE(until_inline(r, "traps", sel0, 4) > 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ran = 0;
        /* A trap is short: the version stays inline (unless a noisy
         * machine made it back off; then retry once it is back). */
        for (int k = 0; k < 50 && !ran; k++) {
            CHECK_EQ(invoke_sel(r, "traps", cases[i].sel, &out, &res, &ran), cases[i].status);
            if (!ran)
                until_inline(r, "traps", sel0, 4);
        }
        CHECK(ran);
        if (cases[i].detail && !strstr(res.detail, cases[i].detail)) {
            fprintf(stderr, "     selector %u: detail \"%s\"\n", cases[i].sel, res.detail);
            CHECK(0);
        }
        /* ... and the thread serves the next one. */
        CHECK_EQ(invoke_sel(r, "traps", 0, &out, &res, NULL), RT_OK);
    }

    /* A runaway loop, inline: stopped at the time-out; then the version
     * backs off to the executors (16 x 300 ms). */
    static const struct { const char *name; uint32_t sel; } loops[] = {
        { "loop", 11 },          /* in guest code */
        { "loop-log", 17 },      /* calling the host in the loop */
    };
    for (size_t i = 0; i < 2; i++) {
        REQUIRE(until_inline(r, loops[i].name, sel0, 4) > 0);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ran = 0;
        CHECK_EQ(invoke_sel(r, loops[i].name, loops[i].sel, &out, &res, &ran), RT_TIMEOUT);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        CHECK(ran);
        CHECK(ms >= TIMEOUT_MS * 0.9 && ms < TIMEOUT_MS * 10);
        ran = 1;
        CHECK_EQ(invoke_sel(r, loops[i].name, 0, &out, &res, &ran), RT_OK);
        CHECK_EQ(ran, 0);
    }
    cl_buf_fini(&out, 0);
}

static void test_traps_inline(void)
{
    rt *r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "traps", "tests/modules/sb_traps.wasm") == CL_OK);
    REQUIRE(deploy_file(r, "loop", "tests/modules/sb_traps.wasm") == CL_OK);
    REQUIRE(deploy_file(r, "loop-log", "tests/modules/sb_traps.wasm") == CL_OK);
    agent a;
    agent_start(&a);
    ctx c = { .r = r };
    run_on(&a, traps_inline, &c);
    rt_metrics m;
    rt_get_metrics(r, &m);
    CHECK(m.traps >= 5);
    CHECK(m.timeouts >= 2);
    agent_stop(&a);
    rt_destroy(r);
}

static void isolation_inline(void *arg)
{
    ctx *c = arg;
    rt *r = c->r;
    cl_buf out;
    cl_buf_init(&out);
    rt_result res;
    REQUIRE(until_inline(r, "a", NULL, 0) > 0);
    REQUIRE(until_inline(r, "b", NULL, 0) > 0);
    REQUIRE(until_inline(r, "state", NULL, 0) > 0);
    int inline_b = 0, inline_state = 0;
    for (int i = 0; i < 50; i++) {
        int ran;
        /* a fills its memory with a secret; b counts what it sees of it. */
        CHECK_EQ(invoke(r, "a", NULL, 0, &out, &res, NULL), RT_OK);
        CHECK_EQ(invoke(r, "b", NULL, 0, &out, &res, &ran), RT_OK);
        CHECK_EQ(res.code, 0);
        inline_b += ran;
        /* Every invocation starts from the template: 16 16 43 1 2 0. */
        CHECK_EQ(invoke(r, "state", NULL, 0, &out, &res, &ran), RT_OK);
        inline_state += ran;
        static const uint32_t fresh[6] = { 16, 16, 43, 1, 2, 0 };
        CHECK(out.len == sizeof fresh && memcmp(out.data, fresh, sizeof fresh) == 0);
    }
    CHECK(inline_b > 0 && inline_state > 0);
    cl_buf_fini(&out, 0);
}

static void test_isolation_inline(void)
{
    rt *r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "a", "tests/modules/sb_secret_a.wasm") == CL_OK);
    REQUIRE(deploy_file(r, "b", "tests/modules/sb_secret_b.wasm") == CL_OK);
    REQUIRE(deploy_file(r, "state", "tests/modules/sb_state.wasm") == CL_OK);
    agent a;
    agent_start(&a);
    ctx c = { .r = r };
    run_on(&a, isolation_inline, &c);
    agent_stop(&a);
    rt_destroy(r);
}

static void reach_inline(void *arg)
{
    ctx *c = arg;
    c->n = until_inline(c->r, "hello", NULL, 0);
}

static void test_state_outlives_runtime(void)
{
    agent a;
    agent_start(&a);
    rt *r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "hello", "examples/hello.wasm") == CL_OK);
    ctx c = { .r = r };
    run_on(&a, reach_inline, &c);
    CHECK(c.n > 0);
    /* The agent lives on with inline state for r; r goes (warning). */
    int level = CL_LOG_ERROR;
    cl_log_set_level(level);
    rt_destroy(r);
    cl_log_set_level(CL_LOG_WARN);

    /* A new runtime: the agent drops the old state and serves this one. */
    r = make_rt(0);
    REQUIRE(r != NULL);
    REQUIRE(deploy_file(r, "hello", "examples/hello.wasm") == CL_OK);
    c.r = r;
    c.n = 0;
    run_on(&a, reach_inline, &c);
    CHECK(c.n > 0);
    agent_stop(&a);
    rt_destroy(r);
}

int main(int argc, char **argv)
{
    (void)argc;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(n > 0);
    exe[n] = '\0';
    snprintf(build_dir, sizeof build_dir, "%s", dirname(dirname(exe)));   /* BUILD/tests/x -> BUILD */
    (void)argv;
    cl_log_set_level(CL_LOG_WARN);

    snprintf(state_dir, sizeof state_dir, "/tmp/cloister-test-inline-XXXXXX");
    REQUIRE(mkdtemp(state_dir) != NULL);
    store_config sc = { .memory_bytes = 64u << 20 };
    REQUIRE(store_create(&sc, &st_store) == CL_OK);

    RUN(test_probation_then_inline);
    RUN(test_never_inline);
    RUN(test_traps_inline);
    RUN(test_isolation_inline);
    RUN(test_state_outlives_runtime);

    store_destroy(st_store);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", state_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", state_dir);
    return th_done();
}
