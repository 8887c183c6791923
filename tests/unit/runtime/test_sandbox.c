/*
 * test_sandbox.c - the WebAssembly sandbox (src/runtime/sandbox.c,
 * template.c, trap.c, wasm_rt.c) with real modules: hello, every trap,
 * time-outs, the memory bomb, template restore, the repurposed-slot leak
 * (GHSA-wh6w-3828-g9qf), many instances, several threads at once, command
 * modules, load errors, and real crashes that must not be swallowed.
 *
 * Modules: build/examples/hello.wasm and build/tests/modules/sb_*.wasm
 * (CMake), compiled here with the runtime's own compile cache (compile.c,
 * module.c) in a temporary directory; imports bind to the real host
 * functions (host.c).  Prints timings and memory per instance (measured,
 * not asserted: the targets belong to the benchmarks).
 *
 * Guest code runs only on pthreads (never the main thread), so main()
 * runs everything on a test thread.
 */
#include "../harness.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "common/buf.h"
#include "common/err.h"
#include "runtime/compile.h"
#include "runtime/module.h"
#include "runtime/sandbox.h"
#include "runtime/trap.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static char exe_dir[1024];   /* the build's tests/ directory */
static char tmp_dir[256];
static compile_cache *cache;
static rt_sandbox *sb;              /* the test thread's sandbox */

/* ---- helpers ---------------------------------------------------------------------- */

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
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
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

/* Compiles the module at wasm_path (through the compile cache) and loads
 * it; returns its rt_code, or NULL with the load's rc in *rc_out. */
static rt_code *load_wasm(const char *wasm_path, const rt_limits *lim, rt_call *init_call,
                          int *rc_out, cl_buf *err)
{
    uint8_t *wasm, hash[32];
    size_t len;
    wasm_module_info info;
    compile_artifact art;
    char so[COMPILE_PATH_MAX];
    rt_code *code = NULL;
    int rc;

    if (read_file(wasm_path, &wasm, &len) != 0) {
        fprintf(stderr, "cannot read %s (build the wasm_modules target)\n", wasm_path);
        REQUIRE(0);
    }
    SHA256(wasm, len, hash);
    rc = wasm_module_inspect(wasm, len, NULL, &info, err);
    if (rc != CL_OK) {
        fprintf(stderr, "%s: %.*s\n", wasm_path, (int)(err ? err->len : 0), err ? (char *)err->data : "");
        REQUIRE(rc == CL_OK);
    }
    rc = compile_module(cache, hash, wasm, len, &info, NULL, NULL, &art, err);
    if (rc != CL_OK)
        fprintf(stderr, "%s: %.*s\n", wasm_path, (int)(err ? err->len : 0), err ? (char *)err->data : "");
    REQUIRE(rc == CL_OK);
    compile_artifact_path(&art, so);
    rc = rt_code_load(sb, so, lim, init_call, &code, err);
    compile_artifact_release(&art);
    wasm_module_info_fini(&info);
    free(wasm);
    if (rc_out)
        *rc_out = rc;
    return rc == CL_OK ? code : NULL;
}

static rt_code *load_module(const char *name, const rt_limits *lim)
{
    char path[PATH_MAX];
    cl_buf err;
    rt_code *c;
    int rc;

    cl_buf_init(&err);
    if (strcmp(name, "hello") == 0)
        snprintf(path, sizeof path, "%s/../examples/hello.wasm", exe_dir);
    else
        snprintf(path, sizeof path, "%s/modules/%s.wasm", exe_dir, name);
    c = load_wasm(path, lim, NULL, &rc, &err);
    if (!c)
        fprintf(stderr, "load %s: %s: %.*s\n", name, cl_strerror(rc), (int)err.len, (char *)err.data);
    cl_buf_fini(&err, 0);
    REQUIRE(c != NULL);
    return c;
}

static void call_setup(rt_call *c, cl_buf *out, const void *in, size_t inlen)
{
    memset(c, 0, sizeof *c);
    c->input = in;
    c->input_len = inlen;
    cl_buf_truncate(out, 0);
    c->output = out;
    c->max_output = 1 << 20;
}

/* One invocation with a 4-byte selector as the body. */
static int invoke_sel(rt_sandbox *s, rt_code *code, uint32_t sel, rt_result *res, cl_buf *out)
{
    rt_call call;
    call_setup(&call, out, &sel, sizeof sel);
    return rt_sandbox_call(s, code, &call, res);
}

static uint32_t out_u32(const cl_buf *out, size_t i)
{
    uint32_t v = 0;
    if (out->len >= (i + 1) * 4)
        memcpy(&v, out->data + i * 4, 4);
    return v;
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
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

static long pss_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long v = -1;

    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Pss:", 4) == 0)
            v = strtol(line + 4, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct thread_arg {
    void (*fn)(void *);
    void *arg;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *a = p;
    a->fn(a->arg);
    return NULL;
}

static void run_thread(void (*fn)(void *), void *arg)
{
    pthread_t t;
    thread_arg a = { fn, arg };
    REQUIRE(pthread_create(&t, NULL, thread_main, &a) == 0);
    pthread_join(t, NULL);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_hello(void)
{
    rt_code *c = load_module("hello", NULL);
    rt_call call;
    rt_result res;
    cl_buf out;

    cl_buf_init(&out);
    call_setup(&call, &out, "Cloister", 8);
    CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    CHECK_EQ(res.from_template, 1);
    CHECK(out.len == 17 && memcmp(out.data, "Hello, Cloister!\n", 17) == 0);
    CHECK(call.mem_size == 2 * 65536 || call.mem_size >= 65536);

    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    CHECK_EQ(res.from_template, 0);   /* the idle instance, restored after the last call */
    CHECK(out.len == 14 && memcmp(out.data, "Hello, world!\n", 14) == 0);
    cl_buf_fini(&out, 0);
    rt_code_unref(c);
}

struct trap_case {
    uint32_t sel;
    rt_status status;
    int32_t code;
    const char *detail;
};

static void test_traps(void)
{
    static const struct trap_case cases[] = {
        { 0, RT_OK, 0, "" },
        { 1, RT_TRAP, 0, "trap: out of bounds memory access" },
        { 2, RT_TRAP, 0, "trap: out of bounds memory access" },
        { 3, RT_TRAP, 0, "trap: out of bounds memory access" },
        { 4, RT_TRAP, 0, "trap: unreachable" },
        { 5, RT_TRAP, 0, "trap: integer divide by zero" },
        { 6, RT_TRAP, 0, "trap: integer overflow" },
        { 7, RT_TRAP, 0, "trap: call stack exhausted" },
        { 8, RT_TRAP, 0, "trap: indirect call signature mismatch or undefined element" },
        { 9, RT_TRAP, 0, "trap: indirect call signature mismatch or undefined element" },
        { 10, RT_TRAP, 0, "trap: indirect call signature mismatch or undefined element" },
        { 13, RT_OK, 0, "" },
        { 14, RT_FN_ERROR, 3, "exited with status 3" },
        { 15, RT_FN_ERROR, 7, "" },
        { 16, RT_TRAP, 0, "trap: invalid conversion to integer" },
        { 19, RT_TRAP, 0, "trap: call stack exhausted" },
        { 7, RT_TRAP, 0, "trap: call stack exhausted" },   /* the guard band is back */
    };
    rt_limits lim = { 64, 5000 };
    rt_code *c = load_module("sb_traps", &lim);
    rt_result res;
    cl_buf out;
    size_t i;
    rt_sandbox_stats st0, st1;

    cl_buf_init(&out);
    rt_sandbox_get_stats(sb, &st0);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct trap_case *k = &cases[i];
        CHECK_EQ(invoke_sel(sb, c, k->sel, &res, &out), CL_OK);
        if (res.status != k->status || res.code != k->code || strcmp(res.detail, k->detail) != 0)
            fprintf(stderr, "selector %u: status %d code %d detail \"%s\"\n",
                    k->sel, res.status, res.code, res.detail);
        CHECK_EQ(res.status, k->status);
        CHECK_EQ(res.code, k->code);
        CHECK(strcmp(res.detail, k->detail) == 0);
        /* the thread, the sandbox and the function go on working */
        CHECK_EQ(invoke_sel(sb, c, 0, &res, &out), CL_OK);
        CHECK_EQ(res.status, RT_OK);
    }
    /* memory.grow in a call: the host's window follows it */
    CHECK_EQ(invoke_sel(sb, c, 18, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    CHECK(out.len == 4 && memcmp(out.data, "BYE!", 4) == 0);
    rt_sandbox_get_stats(sb, &st1);
    CHECK_EQ(st1.traps - st0.traps, 13);
    CHECK_EQ(st1.idle, st0.idle + 1);
    cl_buf_fini(&out, 0);
    rt_code_unref(c);
}

static void test_timeout(void)
{
    rt_limits lim = { 64, 200 };
    rt_code *c = load_module("sb_traps", &lim);
    rt_result res;
    rt_call call;
    cl_buf out;
    uint32_t sel = 11;
    uint64_t t0;

    cl_buf_init(&out);
    /* a runaway loop is stopped at the deadline */
    t0 = now_ns();
    CHECK_EQ(invoke_sel(sb, c, 11, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_TIMEOUT);
    CHECK(strcmp(res.detail, "timeout: wall-time limit exceeded") == 0);
    CHECK(res.duration_ns >= 190000000ull && now_ns() - t0 < 1000000000ull);
    CHECK_EQ(invoke_sel(sb, c, 0, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_OK);

    /* a loop spending most of its time in a host function: the timer
     * never unwinds host code, it catches the guest between calls */
    t0 = now_ns();
    CHECK_EQ(invoke_sel(sb, c, 17, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_TIMEOUT);
    CHECK(now_ns() - t0 < 1000000000ull);

    /* the caller's deadline wins */
    call_setup(&call, &out, &sel, sizeof sel);
    call.deadline_ns = now_ns() + 30000000ull;
    t0 = now_ns();
    CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
    CHECK_EQ(res.status, RT_TIMEOUT);
    CHECK(now_ns() - t0 < 1000000000ull);   /* generous: a loaded machine */

    /* a deadline already past: not run at all */
    call_setup(&call, &out, &sel, sizeof sel);
    call.deadline_ns = now_ns() - 1;
    CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
    CHECK_EQ(res.status, RT_TIMEOUT);

    CHECK_EQ(invoke_sel(sb, c, 0, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    cl_buf_fini(&out, 0);
    rt_code_unref(c);
}

static void test_memory_bomb(void)
{
    rt_limits lim = { 64, 5000 };
    rt_code *c = load_module("sb_traps", &lim);
    rt_result res;
    cl_buf out, err;
    char path[PATH_MAX];
    int rc;
    long rss0 = status_kb("VmRSS");

    cl_buf_init(&out);
    cl_buf_init(&err);
    /* grows page by page until refused: the guest sees -1 at the limit */
    CHECK_EQ(invoke_sel(sb, c, 12, &res, &out), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    CHECK_EQ(out_u32(&out, 0), 64);
    /* the grown pages are gone again */
    CHECK(status_kb("VmRSS") - rss0 < 2048);
    CHECK_EQ(invoke_sel(sb, c, 12, &res, &out), CL_OK);
    CHECK_EQ(out_u32(&out, 0), 64);
    rt_code_unref(c);

    /* a module whose initial memory is over the limit is refused at load */
    lim.max_memory_pages = 4;
    snprintf(path, sizeof path, "%s/modules/sb_secret_b.wasm", exe_dir);
    c = load_wasm(path, &lim, NULL, &rc, &err);
    CHECK(c == NULL);
    CHECK_EQ(rc, CL_ETOOBIG);
    CHECK(err.len > 0 && memmem(err.data, err.len, "needs 8 pages", 13) != NULL);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

static void check_state(const cl_buf *out, const uint32_t want[6])
{
    uint32_t got[6];
    int i;

    CHECK_EQ(out->len, 24);
    for (i = 0; i < 6; i++) {
        got[i] = out_u32(out, (size_t)i);
        CHECK_EQ(got[i], want[i]);
    }
}

static void test_template_state(void)
{
    static const uint32_t fresh[6] = { 16, 16, 43, 1, 2, 0 };
    static const uint32_t warm[6] = { 17, 17, 44, 1, 3, 9 };
    rt_code *c = load_module("sb_state", NULL);
    rt_code_info info;
    rt_instance *in, *in2;
    rt_call call;
    rt_result res;
    cl_buf out;
    int i;

    cl_buf_init(&out);
    rt_code_get_info(c, &info);
    CHECK_EQ(info.mem_pages, 2);          /* init grew it */
    CHECK(info.has_init);
    CHECK(info.template_file_bytes > 0 && info.template_file_bytes <= 4096);

    /* every call starts from the template: globals, memory, size, funcrefs */
    for (i = 0; i < 3; i++) {
        call_setup(&call, &out, NULL, 0);
        CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        check_state(&out, fresh);
    }

    /* an explicit instance keeps its state between calls until reset */
    CHECK_EQ(rt_instance_create(sb, c, &in), CL_OK);
    CHECK_EQ(rt_instance_create(sb, c, &in2), CL_OK);   /* a second one, from the template */
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    CHECK_EQ(res.from_template, 1);
    check_state(&out, fresh);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    CHECK_EQ(res.from_template, 0);
    check_state(&out, warm);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in2, &call, &res), CL_OK);   /* untouched by in's calls */
    check_state(&out, fresh);
    CHECK_EQ(rt_instance_reset(in), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    check_state(&out, fresh);
    rt_instance_destroy(in);
    rt_instance_destroy(in2);

    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_sandbox_call(sb, c, &call, &res), CL_OK);
    check_state(&out, fresh);
    cl_buf_fini(&out, 0);
    rt_code_unref(c);
}

/* GHSA-wh6w-3828-g9qf: a slot repurposed from one function to another
 * must show the second nothing of the first, including pages the first
 * grew into and pages beyond the first's size. */
static void leak_thread(void *arg)
{
    rt_sandbox_config cfg = { 1 };   /* one slot: every switch repurposes it */
    rt_sandbox *own;
    rt_code *a, *b;
    rt_result res;
    rt_call call;
    rt_instance *in;
    rt_sandbox_stats st;
    cl_buf out;
    int i;

    (void)arg;
    REQUIRE(rt_sandbox_create(&cfg, &own) == CL_OK);
    sb = own;
    a = load_module("sb_secret_a", NULL);
    b = load_module("sb_secret_b", NULL);
    cl_buf_init(&out);
    for (i = 0; i < 3; i++) {
        call_setup(&call, &out, NULL, 0);
        CHECK_EQ(rt_sandbox_call(own, a, &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        call_setup(&call, &out, NULL, 0);
        CHECK_EQ(rt_sandbox_call(own, b, &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);   /* handle returns the secret's hits: 0 */
        CHECK_EQ(res.code, 0);
        CHECK_EQ(res.from_template, 1);
    }
    /* the same after a warm instance of a that was never reset */
    CHECK_EQ(rt_instance_create(own, a, &in), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    rt_instance_destroy(in);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_sandbox_call(own, b, &call, &res), CL_OK);
    CHECK_EQ(res.status, RT_OK);
    CHECK_EQ(res.code, 0);
    rt_sandbox_get_stats(own, &st);
    CHECK_EQ(st.slots, 1);
    CHECK(st.repurposed >= 7);

    /* every slot busy: refused, not queued */
    CHECK_EQ(rt_instance_create(own, a, &in), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_sandbox_call(own, b, &call, &res), CL_EAGAIN);
    CHECK_EQ(res.status, RT_OVERLOADED);
    rt_instance_destroy(in);

    cl_buf_fini(&out, 0);
    rt_code_unref(a);
    rt_code_unref(b);
    rt_sandbox_destroy(own);
}

static void test_repurposed_slot_leak(void)
{
    rt_sandbox *mine = sb;
    run_thread(leak_thread, NULL);
    sb = mine;
}

static void test_command_module(void)
{
    char wasm[PATH_MAX], cmd[PATH_MAX * 3];
    rt_code *cmdc, *reac;
    rt_code_info info;
    rt_instance *in;
    rt_call call;
    rt_result res;
    cl_buf out, err;
    int rc;

    cl_buf_init(&out);
    cl_buf_init(&err);
    /* the default exec model (command), built here */
    snprintf(wasm, sizeof wasm, "%s/sb_command_cmd.wasm", tmp_dir);
    /* the source tree is where this file is */
    snprintf(cmd, sizeof cmd, "clang-14 --target=wasm32-wasi -O2 -I%.*s/include -o %s %.*s/tests/modules/sb_command.c",
             (int)(strstr(__FILE__, "/tests/unit/") - __FILE__), __FILE__, wasm,
             (int)(strstr(__FILE__, "/tests/unit/") - __FILE__), __FILE__);
    REQUIRE(system(cmd) == 0);
    cmdc = load_wasm(wasm, NULL, NULL, &rc, &err);
    REQUIRE(cmdc != NULL);
    rt_code_get_info(cmdc, &info);
    CHECK(info.has_start && !info.has_initialize);
    reac = load_module("sb_command", NULL);
    rt_code_get_info(reac, &info);
    CHECK(!info.has_start && info.has_initialize);

    for (int i = 0; i < 2; i++) {
        call_setup(&call, &out, NULL, 0);
        CHECK_EQ(rt_sandbox_call(sb, cmdc, &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        CHECK(out.len == 13 && memcmp(out.data, "ctor=1 main=0", 13) == 0);
        call_setup(&call, &out, NULL, 0);
        CHECK_EQ(rt_sandbox_call(sb, reac, &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        CHECK(out.len == 13 && memcmp(out.data, "ctor=1 main=0", 13) == 0);
    }
    /* warm: a command module's handle runs the constructors every time */
    CHECK_EQ(rt_instance_create(sb, cmdc, &in), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    if (!(out.len == 13 && memcmp(out.data, "ctor=2 main=0", 13) == 0))
        fprintf(stderr, "warm command instance said \"%.*s\"\n", (int)out.len, (char *)out.data);
    CHECK(out.len == 13 && memcmp(out.data, "ctor=2 main=0", 13) == 0);
    rt_instance_destroy(in);
    CHECK_EQ(rt_instance_create(sb, reac, &in), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    call_setup(&call, &out, NULL, 0);
    CHECK_EQ(rt_instance_call(in, &call, &res), CL_OK);
    CHECK(out.len == 13 && memcmp(out.data, "ctor=1 main=0", 13) == 0);
    rt_instance_destroy(in);

    rt_code_unref(cmdc);
    rt_code_unref(reac);
    cl_buf_fini(&out, 0);
    cl_buf_fini(&err, 0);
}

static void test_load_errors(void)
{
    char path[PATH_MAX];
    rt_limits lim = { 16, 200 };
    rt_call init;
    rt_code *c;
    cl_buf err, out;
    uint32_t sel;
    int rc;

    cl_buf_init(&err);
    cl_buf_init(&out);
    CHECK_EQ(rt_code_load(sb, "/nonexistent/fn.so", NULL, NULL, &c, &err), CL_EINVAL);
    CHECK(c == NULL && err.len > 0);

    snprintf(path, sizeof path, "%s/modules/sb_badinit.wasm", exe_dir);
    /* init traps */
    sel = 1;
    call_setup(&init, &out, &sel, sizeof sel);
    c = load_wasm(path, &lim, &init, &rc, &err);
    CHECK(c == NULL && rc == CL_EINVAL);
    CHECK(err.len && memmem(err.data, err.len, "initialisation trapped: unreachable", 35));
    /* init loops: stopped by the time limit */
    sel = 2;
    call_setup(&init, &out, &sel, sizeof sel);
    c = load_wasm(path, &lim, &init, &rc, &err);
    CHECK(c == NULL && rc == CL_EINVAL);
    CHECK(err.len && memmem(err.data, err.len, "initialisation timed out", 24));
    /* init exits with a failure */
    sel = 3;
    call_setup(&init, &out, &sel, sizeof sel);
    c = load_wasm(path, &lim, &init, &rc, &err);
    CHECK(c == NULL && rc == CL_EINVAL);
    CHECK(err.len && memmem(err.data, err.len, "exited with status 5", 20));
    /* init exits with 0: fine, and the template is what it left */
    sel = 4;
    call_setup(&init, &out, &sel, sizeof sel);
    c = load_wasm(path, &lim, &init, &rc, &err);
    CHECK(c != NULL);
    CHECK(out.len == 4 && out_u32(&out, 0) == 4);   /* init saw its call: input, output */
    if (c) {
        rt_result res;
        CHECK_EQ(invoke_sel(sb, c, 0, &res, &out), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        CHECK_EQ(out_u32(&out, 0), 4);   /* memory as init left it */
        rt_code_unref(c);
    }
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

/* Many instances of several functions alive at once; memory per
 * instance and time to make one from the template (printed). */
static void many_thread(void *arg)
{
#ifdef UNDER_ASAN
    enum { NFN = 10, NINST = 200 };
#else
    enum { NFN = 10, NINST = 1000 };
#endif
    rt_sandbox_config cfg = { NINST };
    rt_sandbox *own;
    rt_code *fns[NFN];
    static rt_instance *in[NINST];
    static uint64_t t_create[NINST];
    rt_call call;
    rt_result res;
    cl_buf out;
    rt_sandbox_stats st;
    long rss0, rss_warm, rss_idle, pss0, pss_warm, pte0, pte1;
    uint64_t t0, t_reset = 0, t_call = 0;
    char name[16];
    int i, ok = 1;

    (void)arg;
    REQUIRE(rt_sandbox_create(&cfg, &own) == CL_OK);
    sb = own;
    cl_buf_init(&out);
    for (i = 0; i < NFN; i++)
        fns[i] = load_module("hello", NULL);   /* ten functions (ten loaded objects) */

    rss0 = status_kb("VmRSS");
    pss0 = pss_kb();
    pte0 = status_kb("VmPTE");
    for (i = 0; i < NINST; i++) {
        t0 = now_ns();
        REQUIRE(rt_instance_create(own, fns[i % NFN], &in[i]) == CL_OK);
        t_create[i] = now_ns() - t0;
    }
    for (i = 0; i < NINST; i++) {
        snprintf(name, sizeof name, "f%d", i);
        call_setup(&call, &out, name, strlen(name));
        t0 = now_ns();
        rt_instance_call(in[i], &call, &res);
        t_call += now_ns() - t0;
        ok &= res.status == RT_OK && out.len == strlen(name) + 9 &&
              memcmp(out.data + 7, name, strlen(name)) == 0;
    }
    CHECK(ok);
    rss_warm = status_kb("VmRSS");
    pss_warm = pss_kb();
    pte1 = status_kb("VmPTE");
    rt_sandbox_get_stats(own, &st);
    CHECK_EQ(st.busy, NINST);
    CHECK_EQ(st.slots, NINST);
    for (i = 0; i < NINST; i++) {
        t0 = now_ns();
        rt_instance_destroy(in[i]);   /* reset: back to an idle instance */
        t_reset += now_ns() - t0;
    }
    rss_idle = status_kb("VmRSS");
    rt_sandbox_get_stats(own, &st);
    CHECK_EQ(st.idle, NINST);
    CHECK_EQ(st.busy, 0);

    qsort(t_create, NINST, sizeof t_create[0], cmp_u64);
    printf("  %d instances of %d functions (hello):\n", NINST, NFN);
    printf("    instance from template: p50 %.1f us, p99 %.1f us, max %.1f us\n",
           t_create[NINST / 2] / 1e3, t_create[NINST * 99 / 100] / 1e3, t_create[NINST - 1] / 1e3);
    printf("    first call on it: %.1f us avg; restore after use: %.1f us avg\n",
           t_call / 1e3 / NINST, t_reset / 1e3 / NINST);
    printf("    RSS per instance after one call (warm): %.1f KiB (PSS %.1f KiB, page tables %.1f KiB)\n",
           (double)(rss_warm - rss0) / NINST, (double)(pss_warm - pss0) / NINST,
           (double)(pte1 - pte0) / NINST);
    printf("    RSS per idle (restored) instance: %.1f KiB\n", (double)(rss_idle - rss0) / NINST);

    /* another function's instances repurpose the idle slots (LRU first) */
    {
        rt_code *other = load_module("sb_state", NULL);
        for (i = 0; i < NINST / 2; i++) {
            t0 = now_ns();
            REQUIRE(rt_instance_create(own, other, &in[i]) == CL_OK);
            t_create[i] = now_ns() - t0;
        }
        rt_sandbox_get_stats(own, &st);
        CHECK_EQ(st.repurposed, NINST / 2);
        CHECK_EQ(st.slots, NINST);
        for (i = 0; i < NINST / 2; i++)
            rt_instance_destroy(in[i]);
        qsort(t_create, NINST / 2, sizeof t_create[0], cmp_u64);
        printf("    instance from template into a repurposed slot: p50 %.1f us, p99 %.1f us\n",
               t_create[NINST / 4] / 1e3, t_create[NINST / 2 * 99 / 100] / 1e3);
        rt_code_retire(other);
        rt_sandbox_trim(own, SIZE_MAX);   /* drops the retired function's idle instances */
        rt_sandbox_get_stats(own, &st);
        CHECK_EQ(st.idle, NINST / 2);
        CHECK_EQ(st.slots, NINST / 2);
        rt_code_unref(other);
    }

    /* pristine idle instances are taken again at once */
    for (i = 0; i < NFN; i++) {
        call_setup(&call, &out, "x", 1);
        CHECK_EQ(rt_sandbox_call(own, fns[i], &call, &res), CL_OK);
        CHECK_EQ(res.status, RT_OK);
        CHECK_EQ(res.from_template, 0);
    }

    rt_code_retire(fns[0]);
    rt_sandbox_trim(own, SIZE_MAX);
    rt_sandbox_get_stats(own, &st);
    CHECK_EQ(st.idle, NINST / 2 - NINST / 2 / NFN);
    rt_sandbox_trim(own, 10);
    rt_sandbox_get_stats(own, &st);
    CHECK_EQ(st.idle, 10);
    CHECK_EQ(st.slots, 10);

    for (i = 0; i < NFN; i++)
        rt_code_unref(fns[i]);
    cl_buf_fini(&out, 0);
    rt_sandbox_destroy(own);
}

static void test_many_instances(void)
{
    rt_sandbox *mine = sb;
    run_thread(many_thread, NULL);
    sb = mine;
}

/* Several threads, each with its own sandbox, invoking the same and
 * different functions at once, traps and time-outs included. */
typedef struct conc_arg {
    rt_code *hello, *state, *traps;
    int iterations;
    int failures;
    int index;
} conc_arg;

static void conc_thread(void *p)
{
    conc_arg *a = p;
    rt_sandbox *own;
    rt_call call;
    rt_result res;
    cl_buf out;
    char name[32];
    int i;

    if (rt_sandbox_create(NULL, &own) != CL_OK) {
        a->failures++;
        return;
    }
    cl_buf_init(&out);
    for (i = 0; i < a->iterations; i++) {
        int len = snprintf(name, sizeof name, "t%d-%d", a->index, i);
        call_setup(&call, &out, name, (size_t)len);
        rt_sandbox_call(own, a->hello, &call, &res);
        if (res.status != RT_OK || out.len != (size_t)len + 9 || memcmp(out.data + 7, name, (size_t)len) != 0)
            a->failures++;

        call_setup(&call, &out, NULL, 0);
        rt_sandbox_call(own, a->state, &call, &res);
        if (res.status != RT_OK || out_u32(&out, 0) != 16 || out_u32(&out, 1) != 16 || out_u32(&out, 2) != 43)
            a->failures++;

        uint32_t sel = (uint32_t[]){ 1, 7, 8, 4 }[i % 4];
        invoke_sel(own, a->traps, sel, &res, &out);
        if (res.status != RT_TRAP)
            a->failures++;
        if (i % 16 == a->index) {
            sel = 11;
            call_setup(&call, &out, &sel, sizeof sel);
            call.deadline_ns = now_ns() + 5000000ull;
            rt_sandbox_call(own, a->traps, &call, &res);
            if (res.status != RT_TIMEOUT)
                a->failures++;
        }
    }
    cl_buf_fini(&out, 0);
    rt_sandbox_destroy(own);
}

static void test_concurrency(void)
{
    enum { NT = 4 };
    rt_limits lim = { 64, 5000 };
    conc_arg args[NT];
    pthread_t t[NT];
    thread_arg ta[NT];
    rt_code *hello = load_module("hello", NULL), *state = load_module("sb_state", NULL),
            *traps = load_module("sb_traps", &lim);
    uint64_t t0 = now_ns();
    int i, n = 0;

    for (i = 0; i < NT; i++) {
        args[i] = (conc_arg){ hello, state, traps, 150, 0, i };
        ta[i] = (thread_arg){ conc_thread, &args[i] };
        REQUIRE(pthread_create(&t[i], NULL, thread_main, &ta[i]) == 0);
    }
    for (i = 0; i < NT; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(args[i].failures, 0);
        n += args[i].iterations;
    }
    printf("  %d threads x %d iterations (hello, state, a trap, sometimes a time-out): %.0f ms\n",
           NT, n / NT, (now_ns() - t0) / 1e6);
    rt_code_unref(hello);
    rt_code_unref(state);
    rt_code_unref(traps);
}

/* ---- real crashes are not swallowed --------------------------------------------------- */

static void deref_null(void *arg)
{
    volatile int *p = arg;
    *p = 1;
}

static void raise_segv(void *arg)
{
    (void)arg;
    pthread_kill(pthread_self(), SIGSEGV);   /* delivered before it returns */
}

static void crash_thread(void *arg)
{
    void (*fn)(void *) = (void (*)(void *))(uintptr_t)arg;
    rt_sandbox *own;
    uint8_t *slot = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (rt_sandbox_create(NULL, &own) != CL_OK)
        _exit(2);
    /* as if a guest ran with this memory and this code */
    rt_guest_state.mem_lo = (uintptr_t)slot;
    rt_guest_state.mem_hi = (uintptr_t)slot + (1 << 20);
    rt_guest_state.code_lo = (uintptr_t)deref_null;
    rt_guest_state.code_hi = (uintptr_t)deref_null + 16;
    rt_trap_run(fn, NULL, 0);
    _exit(3);   /* the fault was swallowed */
}

/* Runs fn as guest code in a child; returns its wait status. */
static int crash_child(void (*fn)(void *))
{
    pid_t pid = fork();
    int status = 0;

    if (pid == 0) {
        run_thread(crash_thread, (void *)(uintptr_t)fn);
        _exit(4);
    }
    REQUIRE(pid > 0);
    waitpid(pid, &status, 0);
    return status;
}

static void test_crash_not_swallowed(void)
{
    int st;

    st = crash_child(deref_null);    /* a fault outside every slot */
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV))
        fprintf(stderr, "fault: status %#x\n", st);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
    st = crash_child(raise_segv);    /* a SIGSEGV sent by someone */
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV))
        fprintf(stderr, "kill: status %#x\n", st);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

/* ---- main -------------------------------------------------------------------------------- */

static void all_tests(void *arg)
{
    (void)arg;
    REQUIRE(rt_sandbox_create(NULL, &sb) == CL_OK);
    RUN(test_hello);
    RUN(test_traps);
    RUN(test_timeout);
    RUN(test_memory_bomb);
    RUN(test_template_state);
    RUN(test_repurposed_slot_leak);
    RUN(test_command_module);
    RUN(test_load_errors);
    RUN(test_many_instances);
    RUN(test_concurrency);
    RUN(test_crash_not_swallowed);
    rt_sandbox_destroy(sb);
}

int main(void)
{
    char self[PATH_MAX], cmd[PATH_MAX + 16];
    uint8_t mac_key[COMPILE_KEY_LEN];
    compile_config cfg;
    cl_buf err;
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);

    REQUIRE(n > 0 && (size_t)n < sizeof exe_dir);
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    memcpy(exe_dir, self, strlen(self) + 1);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/cl-sandbox-test-XXXXXX");
    REQUIRE(mkdtemp(tmp_dir) != NULL);

    memset(mac_key, 7, sizeof mac_key);
    memset(&cfg, 0, sizeof cfg);
    snprintf(self, sizeof self, "%s/cache", tmp_dir);
    cfg.dir = self;
    cfg.mac_key = mac_key;
    cl_buf_init(&err);
    if (compile_cache_open(&cfg, &cache, &err) != CL_OK)
        fprintf(stderr, "compile cache: %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(cache != NULL);
    cl_buf_fini(&err, 0);

    run_thread(all_tests, NULL);

    compile_cache_close(cache);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp_dir);
    return th_done();
}
