/*
 * invoke_bench.c - the in-process half of the invocation benchmark
 * (bench/invoke.sh): latency of warm calls, of instances from a memory
 * template and of first calls after a deploy, and resident memory per
 * idle instance, all through the real runtime (src/runtime/).
 *
 *     invoke_bench --hello HELLO.wasm [--variant V.wasm]... --state DIR
 *                  [--iters N] [--deploys N] [--instances N]
 *
 * Prints JSON lines on stdout, one per measurement:
 *     {"bench":"invoke","metric":"warm_call","n":10000,"p50_us":..,"p99_us":..,"max_us":..}
 *     {"bench":"invoke","metric":"idle_instance_rss","instances":1000,"functions":10,
 *      "rss_kib_per_instance":..,"pss_kib_per_instance":..}
 * Measurements (each against its peer in the same run):
 *   warm_call         rt_instance_call on one instance, left as it was
 *   reset             rt_instance_reset (restore in place from the template)
 *   reset_call        reset + the first call on the restored instance
 *   create_call       rt_instance_create into a new slot + first call
 *                     (during the memory test: no idle instance to reuse)
 *   sandbox_call      rt_sandbox_call: what an invocation runs (an idle
 *                     pristine instance, call, restore)
 *   invoke_wait       rt_invoke_wait from main: through the executor threads
 *   invoke_inline     rt_invoke_wait from a pthread, which runs hello
 *                     inline once it has passed probation (runtime.h)
 *   deploy_fresh / deploy_cached  rt_deploy + first rt_invoke_wait, with a
 *                     fresh state dir (wasm2c + cc) / with a warm cache
 *   idle_instance_rss RSS and PSS growth per instance for 1,000 instances
 *                     of the given modules, each called once and then
 *                     reset to its template (as idle instances in the pool
 *                     are); also "after_call" figures before the reset.
 * Every call must return RT_OK with output starting "Hello", else exit 1.
 *
 * Sandbox calls must run on a thread that is not the main thread
 * (sandbox.h), so the sandbox part runs on one pthread; deploys run on
 * main.  The compile cache used for the sandbox part lives in
 * DIR/sandbox-cache with a fixed MAC key (a benchmark, not a node).
 * Built by CMake into build/bench/invoke_bench (cloister_runs_functions).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/sha.h>

#include "common/buf.h"
#include "common/err.h"
#include "runtime/compile.h"
#include "runtime/host.h"
#include "runtime/module.h"
#include "runtime/runtime.h"
#include "runtime/sandbox.h"
#include "store/store.h"

#define MAX_MODULES 32

static const char *hello_path;
static const char *module_paths[MAX_MODULES];   /* [0] = hello */
static int nmodules;
static const char *state_dir;
static int iters = 10000, deploys = 3, ninstances = 1000;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    long n;

    if (!f)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return -1;
    }
    *data = malloc(n > 0 ? (size_t)n : 1);
    *len = (size_t)n;
    if (!*data || fread(*data, 1, *len, f) != *len) {
        fclose(f);
        free(*data);
        return -1;
    }
    fclose(f);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts t and prints its percentiles as one JSON line. */
static void report(const char *metric, uint64_t *t, int n)
{
    if (n <= 0)
        return;
    qsort(t, (size_t)n, sizeof *t, cmp_u64);
    double p50 = (double)t[(size_t)n / 2] / 1e3;
    double p99 = (double)t[(size_t)((double)n * 0.99) < (size_t)n ? (size_t)((double)n * 0.99) : (size_t)n - 1] / 1e3;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)t[i];
    printf("{\"bench\":\"invoke\",\"metric\":\"%s\",\"n\":%d,\"p50_us\":%.2f,\"p99_us\":%.2f,"
           "\"mean_us\":%.2f,\"max_us\":%.2f}\n",
           metric, n, p50, p99, sum / n / 1e3, (double)t[n - 1] / 1e3);
    fflush(stdout);
}

/* kB of `field` in /proc/self/smaps_rollup ("Rss", "Pss"). */
static long rollup_kb(const char *field)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);

    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtol(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

/* ---- sandbox part (its own thread) ---------------------------------------------- */

static compile_cache *cache;

static rt_code *load(rt_sandbox *sb, const char *path)
{
    uint8_t *wasm = NULL, hash[32];
    size_t len;
    wasm_module_info info;
    compile_artifact art;
    char so[COMPILE_PATH_MAX];
    rt_code *code = NULL;
    cl_buf err;
    int rc, have_info = 0;

    cl_buf_init(&err);
    if (read_file(path, &wasm, &len) != 0) {
        fprintf(stderr, "invoke_bench: cannot read %s: %s\n", path, strerror(errno));
        goto done;
    }
    SHA256(wasm, len, hash);
    if ((rc = wasm_module_inspect(wasm, len, NULL, &info, &err)) != CL_OK)
        goto fail;
    have_info = 1;
    if ((rc = compile_module(cache, hash, wasm, len, &info, NULL, NULL, &art, &err)) != CL_OK)
        goto fail;
    compile_artifact_path(&art, so);
    rc = rt_code_load(sb, so, NULL, NULL, &code, &err);
    compile_artifact_release(&art);
    if (rc != CL_OK)
        goto fail;
    goto done;
fail:
    fprintf(stderr, "invoke_bench: %s: %s: %.*s\n", path, cl_strerror(rc), (int)err.len,
            (const char *)err.data);
done:
    if (have_info)
        wasm_module_info_fini(&info);
    free(wasm);
    cl_buf_fini(&err, 0);
    return code;
}

static void call_setup(rt_call *c, cl_buf *out)
{
    memset(c, 0, sizeof *c);
    c->input = (const uint8_t *)"Ada";
    c->input_len = 3;
    cl_buf_truncate(out, 0);
    c->output = out;
    c->max_output = 1 << 20;
}

static int check(int rc, const rt_result *res, const cl_buf *out, const char *what)
{
    if (rc == CL_OK && res->status == RT_OK && out->len >= 5 && memcmp(out->data, "Hello", 5) == 0)
        return 0;
    fprintf(stderr, "invoke_bench: %s failed: %s, status %d (%s), output %.*s\n", what,
            cl_strerror(rc), (int)res->status, res->detail, (int)out->len, (const char *)out->data);
    return -1;
}

static int sandbox_part(void)
{
    int ret = -1, n = iters, k = 0;
    rt_sandbox *sb = NULL;
    rt_code *codes[MAX_MODULES] = { 0 };
    rt_instance *in = NULL, **held = NULL;
    uint64_t *t = calloc((size_t)(n > ninstances ? n : ninstances), sizeof *t);
    uint64_t *t2 = calloc((size_t)(n > ninstances ? n : ninstances), sizeof *t2);
    rt_call call;
    rt_result res;
    cl_buf out;
    char dir[4096];
    uint8_t mac_key[COMPILE_KEY_LEN];
    compile_config cc = { 0 };
    cl_buf err;
    int rc;

    cl_buf_init(&out);
    cl_buf_init(&err);
    held = calloc((size_t)ninstances, sizeof *held);
    if (!t || !t2 || !held)
        goto done;
    memset(mac_key, 0x5a, sizeof mac_key);
    snprintf(dir, sizeof dir, "%s/sandbox-cache", state_dir);
    cc.dir = dir;
    cc.mac_key = mac_key;
    if (compile_cache_open(&cc, &cache, &err) != CL_OK) {
        fprintf(stderr, "invoke_bench: compile cache: %.*s\n", (int)err.len, (const char *)err.data);
        goto done;
    }
    rt_sandbox_config sc = { .max_slots = (size_t)ninstances + 16 };
    if ((rc = rt_sandbox_create(&sc, &sb)) != CL_OK) {
        fprintf(stderr, "invoke_bench: sandbox: %s\n", cl_strerror(rc));
        goto done;
    }
    for (int m = 0; m < nmodules; m++)
        if (!(codes[m] = load(sb, module_paths[m])))
            goto done;
    rt_code *hello = codes[0];

    /* warm calls: one instance, never reset */
    if (rt_instance_create(sb, hello, &in) != CL_OK)
        goto done;
    for (int i = 0; i < 100 + n; i++) {
        call_setup(&call, &out);
        uint64_t t0 = now_ns();
        rc = rt_instance_call(in, &call, &res);
        uint64_t dt = now_ns() - t0;
        rt_host_call_end(&call);
        if (check(rc, &res, &out, "warm call") != 0)
            goto done;
        if (i >= 100)
            t[i - 100] = dt;
    }
    report("warm_call", t, n);

    /* reset in place from the template, then the first call */
    for (int i = 0; i < 100 + n; i++) {
        uint64_t t0 = now_ns();
        if (rt_instance_reset(in) != CL_OK)
            goto done;
        uint64_t t1 = now_ns();
        call_setup(&call, &out);
        rc = rt_instance_call(in, &call, &res);
        uint64_t t2v = now_ns();
        rt_host_call_end(&call);
        if (check(rc, &res, &out, "reset call") != 0)
            goto done;
        if (i >= 100) {
            t[i - 100] = t1 - t0;
            t2[i - 100] = t2v - t0;
        }
    }
    report("reset", t, n);
    report("reset_call", t2, n);
    rt_instance_destroy(in);
    in = NULL;

    /* what an invocation runs */
    for (int i = 0; i < 100 + n; i++) {
        call_setup(&call, &out);
        uint64_t t0 = now_ns();
        rc = rt_sandbox_call(sb, hello, &call, &res);
        uint64_t dt = now_ns() - t0;
        rt_host_call_end(&call);
        if (check(rc, &res, &out, "sandbox call") != 0)
            goto done;
        if (i >= 100)
            t[i - 100] = dt;
    }
    report("sandbox_call", t, n);

    /* memory: ninstances instances spread over the modules, each from the
     * template into a new slot, called once, then reset (idle) */
    rt_sandbox_trim(sb, 0);
    long rss0 = rollup_kb("Rss"), pss0 = rollup_kb("Pss");
    k = 0;
    for (k = 0; k < ninstances; k++) {
        rt_code *c = codes[k % nmodules];
        uint64_t t0 = now_ns();
        if ((rc = rt_instance_create(sb, c, &held[k])) != CL_OK) {
            fprintf(stderr, "invoke_bench: instance %d: %s\n", k, cl_strerror(rc));
            goto done;
        }
        uint64_t t1 = now_ns();
        call_setup(&call, &out);
        rc = rt_instance_call(held[k], &call, &res);
        uint64_t t2v = now_ns();
        rt_host_call_end(&call);
        if (check(rc, &res, &out, "instance call") != 0) {
            k++;
            goto done;
        }
        t[k] = t1 - t0;
        t2[k] = t2v - t0;
    }
    long rss1 = rollup_kb("Rss"), pss1 = rollup_kb("Pss");
    for (int i = 0; i < ninstances; i++)
        if (rt_instance_reset(held[i]) != CL_OK)
            goto done;
    long rss2 = rollup_kb("Rss"), pss2 = rollup_kb("Pss");
    report("create", t, ninstances);
    report("create_call", t2, ninstances);
    rt_sandbox_stats st;
    rt_sandbox_get_stats(sb, &st);
    printf("{\"bench\":\"invoke\",\"metric\":\"idle_instance_rss\",\"instances\":%d,\"functions\":%d,"
           "\"rss_before_kib\":%ld,\"rss_kib_per_instance\":%.2f,\"pss_kib_per_instance\":%.2f,"
           "\"after_call_rss_kib_per_instance\":%.2f,\"after_call_pss_kib_per_instance\":%.2f,"
           "\"slots\":%llu,\"from_template\":%llu}\n",
           ninstances, nmodules, rss0, (double)(rss2 - rss0) / ninstances,
           (double)(pss2 - pss0) / ninstances, (double)(rss1 - rss0) / ninstances,
           (double)(pss1 - pss0) / ninstances, (unsigned long long)st.slots,
           (unsigned long long)st.instances_from_template);
    fflush(stdout);
    ret = 0;
done:
    for (int i = 0; i < k && held; i++)
        if (held[i])
            rt_instance_destroy(held[i]);
    if (in)
        rt_instance_destroy(in);
    if (sb)
        rt_sandbox_trim(sb, 0);
    for (int m = 0; m < nmodules; m++)
        if (codes[m])
            rt_code_unref(codes[m]);
    if (sb)
        rt_sandbox_destroy(sb);
    if (cache)
        compile_cache_close(cache);
    cl_buf_fini(&out, 0);
    cl_buf_fini(&err, 0);
    free(held);
    free(t);
    free(t2);
    return ret;
}

static void *sandbox_thread(void *arg)
{
    *(int *)arg = sandbox_part();
    return NULL;
}

/* ---- runtime part (main thread) ----------------------------------------------- */

/* rt_invoke_wait timings on a pthread of its own (inline runs). */
typedef struct inline_task {
    rt *r;
    uint64_t *times;
    int n;
    int ret;
} inline_task;

static void *inline_thread(void *arg)
{
    inline_task *t = arg;
    cl_buf out;
    rt_result res;
    cl_buf_init(&out);
    t->ret = 0;
    for (int i = 0; i < 100 + t->n; i++) {
        cl_buf_truncate(&out, 0);
        uint64_t s = now_ns();
        int rc = rt_invoke_wait(t->r, "bench", "hello", (const uint8_t *)"Ada", 3, &out, &res);
        uint64_t dt = now_ns() - s;
        if (check(rc, &res, &out, "inline invoke") != 0) {
            t->ret = -1;
            break;
        }
        if (i >= 100)
            t->times[i - 100] = dt;
    }
    cl_buf_fini(&out, 0);
    return NULL;
}

/* Deploys hello in a new runtime with state directory `dir` and invokes
 * it once; *deploy_ns and *first_ns get the times.  rt_invoke_wait
 * timings for `ninv` more calls from main go to inv and from a pthread
 * to inl (both NULL or neither). */
static int deploy_once(const char *dir, const uint8_t *mod, size_t len, int want_cached,
                       uint64_t *deploy_ns, uint64_t *first_ns, uint64_t *inv, uint64_t *inl,
                       int ninv)
{
    int ret = -1, rc;
    store *st = NULL;
    rt *r = NULL;
    cl_buf out, err;
    rt_result res;
    rt_fn_info info;

    cl_buf_init(&out);
    cl_buf_init(&err);
    store_config sc = { .memory_bytes = 16u << 20 };
    if ((rc = store_create(&sc, &st)) != CL_OK)
        goto fail;
    rt_config cfg = { .store = st, .state_dir = dir, .exec_threads = 1 };
    if ((rc = rt_create(&cfg, &r)) != CL_OK)
        goto fail;
    uint64_t t0 = now_ns();
    rc = rt_deploy(r, "bench", "hello", mod, len, NULL, NULL, &info, &err);
    uint64_t t1 = now_ns();
    if (rc != CL_OK)
        goto fail;
    rc = rt_invoke_wait(r, "bench", "hello", (const uint8_t *)"Ada", 3, &out, &res);
    uint64_t t2 = now_ns();
    if (check(rc, &res, &out, "first invoke") != 0)
        goto done;
    if (info.cached != want_cached)
        fprintf(stderr, "invoke_bench: deploy in %s: cached=%d, expected %d\n", dir, info.cached,
                want_cached);
    *deploy_ns = t1 - t0;
    *first_ns = t2 - t1;
    for (int i = 0; i < 100 + ninv && inv; i++) {
        cl_buf_truncate(&out, 0);
        uint64_t s = now_ns();
        rc = rt_invoke_wait(r, "bench", "hello", (const uint8_t *)"Ada", 3, &out, &res);
        uint64_t dt = now_ns() - s;
        if (check(rc, &res, &out, "invoke") != 0)
            goto done;
        if (i >= 100)
            inv[i - 100] = dt;
    }
    if (inl) {
        inline_task t = { .r = r, .times = inl, .n = ninv, .ret = -1 };
        pthread_t th;
        if (pthread_create(&th, NULL, inline_thread, &t) != 0)
            goto done;
        pthread_join(th, NULL);
        if (t.ret != 0)
            goto done;
        rt_metrics m;
        rt_get_metrics(r, &m);
        if (m.inline_invocations < (uint64_t)ninv)
            fprintf(stderr, "invoke_bench: only %llu of %d+100 calls on the pthread ran inline\n",
                    (unsigned long long)m.inline_invocations, ninv);
    }
    ret = 0;
    goto done;
fail:
    fprintf(stderr, "invoke_bench: deploy in %s: %s: %.*s\n", dir, cl_strerror(rc), (int)err.len,
            (const char *)err.data);
done:
    if (r)
        rt_destroy(r);
    if (st)
        store_destroy(st);
    cl_buf_fini(&out, 0);
    cl_buf_fini(&err, 0);
    return ret;
}

static int runtime_part(void)
{
    uint8_t *mod = NULL;
    size_t len;
    int ret = -1, nd = deploys;
    uint64_t *dep = calloc((size_t)nd * 3, sizeof *dep), *first = calloc((size_t)nd * 3, sizeof *first);
    uint64_t *inv = calloc((size_t)iters, sizeof *inv), *inl = calloc((size_t)iters, sizeof *inl);
    char dir[4096];

    if (!dep || !first || !inv || !inl || read_file(hello_path, &mod, &len) != 0)
        goto done;
    /* fresh: a new state dir each time (wasm2c + cc) */
    for (int i = 0; i < nd; i++) {
        snprintf(dir, sizeof dir, "%s/fresh-%d", state_dir, i);
        if (deploy_once(dir, mod, len, 0, &dep[i], &first[i], NULL, NULL, 0) != 0)
            goto done;
    }
    /* cached: the state dir of the first fresh deploy, a new runtime each time */
    snprintf(dir, sizeof dir, "%s/fresh-0", state_dir);
    for (int i = 0; i < nd * 2; i++)
        if (deploy_once(dir, mod, len, 1, &dep[nd + i], &first[nd + i], i == 0 ? inv : NULL,
                        i == 0 ? inl : NULL, iters) != 0)
            goto done;
    uint64_t both[64];
    int m = 0;
    for (int i = 0; i < nd && m < 64; i++)
        both[m++] = dep[i] + first[i];
    report("deploy_fresh", both, m);
    report("first_call_after_fresh_deploy", first, nd);
    m = 0;
    for (int i = 0; i < nd * 2 && m < 64; i++)
        both[m++] = dep[nd + i] + first[nd + i];
    report("deploy_cached", both, m);
    report("first_call_after_cached_deploy", first + nd, nd * 2);
    report("invoke_wait", inv, iters);
    report("invoke_inline", inl, iters);
    ret = 0;
done:
    free(mod);
    free(dep);
    free(first);
    free(inv);
    free(inl);
    return ret;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto usage;
        if (strcmp(a, "--hello") == 0)
            hello_path = v;
        else if (strcmp(a, "--variant") == 0 && nmodules < MAX_MODULES - 1)
            module_paths[1 + nmodules++] = v;
        else if (strcmp(a, "--state") == 0)
            state_dir = v;
        else if (strcmp(a, "--iters") == 0)
            iters = atoi(v);
        else if (strcmp(a, "--deploys") == 0)
            deploys = atoi(v);
        else if (strcmp(a, "--instances") == 0)
            ninstances = atoi(v);
        else
            goto usage;
        i++;
    }
    if (!hello_path || !state_dir || iters < 1 || deploys < 1 || deploys > 32 || ninstances < 1)
        goto usage;
    module_paths[0] = hello_path;
    nmodules++;
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "invoke_bench: cannot create %s: %s\n", state_dir, strerror(errno));
        return 1;
    }

    int sret = -1;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 8u << 20);
    if (pthread_create(&th, &attr, sandbox_thread, &sret) != 0)
        return 1;
    pthread_join(th, NULL);
    pthread_attr_destroy(&attr);
    if (sret != 0)
        return 1;
    return runtime_part() == 0 ? 0 : 1;
usage:
    fprintf(stderr, "usage: %s --hello HELLO.wasm [--variant V.wasm]... --state DIR "
                    "[--iters N] [--deploys 1..32] [--instances N]\n", argv[0]);
    return 2;
}
