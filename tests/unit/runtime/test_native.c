/* test_native.c - native functions (runtime/native.c + the cloister-native
 * worker, src/worker/): examples' hello.so; the ABI through the shared
 * mailbox against a real store (kv, cas, incr, batch get, locks, log,
 * printf, init); forbidden system calls (files, sockets, fork, exec,
 * threads, raw writes, executable memory) fail that invocation with SIGSYS
 * and the worker is replaced; crashes, exits and runaway loops; parallel
 * invocations on several workers; 200 increments under a lock; the
 * file system closed to the .so's constructors (Landlock); load errors;
 * and a hostile worker that writes garbage into its shared region.
 *
 * Test functions are C sources below, compiled at test time with
 * `cc -shared -fPIC` into a temporary directory (the hostile ones include
 * src/worker/worker.h to reach the region directly).  hello.so comes from
 * the build (cmake --build BUILD --target example_hello). */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/runtime/fnlog.h"
#include "../../../src/runtime/host.h"
#include "../../../src/runtime/locks.h"
#include "../../../src/runtime/native.h"

#include <cloister/function.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

static char root[PATH_MAX], build[PATH_MAX], tmp[64];
static store *st;
static rt_locks *locks;
static rt_fnlog *fnlog;
static uint64_t next_owner = 1;
static const uint8_t ns[] = "\x01tA/";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- test functions (compiled at test time) --------------------------------- */

static const char fn_main_src[] =
    "#include <cloister/function.h>\n"
    "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <time.h>\n"
    "#include <unistd.h>\n#include <fcntl.h>\n#include <pthread.h>\n#include <sys/mman.h>\n"
    "#include <sys/socket.h>\n"
    "#define S(x) (const uint8_t *)(x), (uint32_t)strlen(x)\n"
    "static int init_calls;\n"
    "CLOISTER_EXPORT(\"init\") void init(void) { init_calls++; printf(\"init ran\\n\"); }\n"
    "static void out(const char *s) { cloister_output((const uint8_t *)s, (uint32_t)strlen(s)); }\n"
    "static void outf(const char *f, long long v) { char b[64]; snprintf(b, sizeof b, f, v); out(b); }\n"
    "static void *thr(void *a) { return a; }\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) {\n"
    "  char in[256]; int32_t n = cloister_input((uint8_t *)in, sizeof in - 1);\n"
    "  if (n < 0 || n > 255) return 1; in[n] = 0;\n"
    "  if (!strcmp(in, \"init\")) { outf(\"%lld\", init_calls); return 0; }\n"
    "  if (!strcmp(in, \"incr\")) {\n"
    "    if (cloister_lock(S(\"L\"), 2000) != 0) return 2;\n"
    "    uint8_t v[32]; int64_t r = cloister_kv_get(S(\"count\"), v, sizeof v - 1, NULL);\n"
    "    long long x = 0; if (r >= 0) { v[r] = 0; x = atoll((char *)v); }\n"
    "    char b[32]; snprintf(b, sizeof b, \"%lld\", x + 1);\n"
    "    int rc = cloister_kv_set(S(\"count\"), S(b));\n"
    "    cloister_unlock(S(\"L\"));\n"
    "    return rc;\n"
    "  }\n"
    "  if (!strcmp(in, \"kv\")) {\n"
    "    uint8_t buf[64]; uint64_t ver = 0, ver2 = 0; int64_t r; int64_t res = 0;\n"
    "    outf(\"set=%lld \", cloister_kv_set(S(\"k1\"), S(\"v1\")));\n"
    "    r = cloister_kv_get(S(\"k1\"), buf, sizeof buf, &ver);\n"
    "    outf(\"get=%lld \", r); cloister_output(buf, r > 0 ? (uint32_t)r : 0);\n"
    "    outf(\" ver=%lld \", ver != 0);\n"
    "    outf(\"short=%lld \", cloister_kv_get(S(\"k1\"), buf, 1, NULL));\n"
    "    outf(\"badcas=%lld \", cloister_kv_cas(S(\"k1\"), ver + 12345, S(\"x\")));\n"
    "    outf(\"cas=%lld \", cloister_kv_cas(S(\"k1\"), ver, S(\"v2\")));\n"
    "    cloister_kv_get(S(\"k1\"), buf, sizeof buf, &ver2);\n"
    "    outf(\"newver=%lld \", ver2 != ver);\n"
    "    outf(\"incr=%lld \", cloister_kv_incr(S(\"n\"), 5, &res)); outf(\"res=%lld \", res);\n"
    "    outf(\"del=%lld \", cloister_kv_delete(S(\"k1\")));\n"
    "    outf(\"gone=%lld \", cloister_kv_get(S(\"k1\"), buf, sizeof buf, NULL));\n"
    "    outf(\"empty=%lld \", cloister_kv_get((const uint8_t *)\"\", 0, buf, sizeof buf, NULL));\n"
    "    cloister_kv_set(S(\"m1\"), S(\"abc\"));\n"
    "    uint8_t keys[64]; uint32_t l = 2; memcpy(keys, &l, 4); memcpy(keys + 4, \"m1\", 2);\n"
    "    memcpy(keys + 6, &l, 4); memcpy(keys + 10, \"m2\", 2);\n"
    "    uint8_t mb[64]; r = cloister_kv_get_many(keys, 12, 2, mb, sizeof mb);\n"
    "    int32_t c0, c1; memcpy(&c0, mb, 4); memcpy(&c1, mb + 7, 4);\n"
    "    outf(\"many=%lld \", r); outf(\"c0=%lld \", c0); outf(\"c1=%lld \", c1);\n"
    "    outf(\"unlock=%lld\", cloister_unlock(S(\"nolock\")));\n"
    "    return 0;\n"
    "  }\n"
    "  if (!strcmp(in, \"big\")) {\n"
    "    size_t len = 900 * 1024; uint8_t *a = malloc(len), *b = malloc(len + 10);\n"
    "    for (size_t i = 0; i < len; i++) a[i] = (uint8_t)(i * 7 + 3);\n"
    "    int rc = cloister_kv_set(S(\"big\"), a, (uint32_t)len);\n"
    "    int64_t r = cloister_kv_get(S(\"big\"), b, (uint32_t)len + 10, NULL);\n"
    "    outf(\"%lld \", rc); outf(\"%lld \", r); outf(\"%lld\", r == (int64_t)len && !memcmp(a, b, len));\n"
    "    free(a); free(b); return 0;\n"
    "  }\n"
    "  if (!strcmp(in, \"log\")) { printf(\"printf %d\\n\", 7); puts(\"puts line\");\n"
    "    fprintf(stderr, \"to stderr\"); cloister_log(S(\"direct\")); printf(\"tail\"); return 0; }\n"
    "  if (!strcmp(in, \"fail\")) { out(\"bad thing\"); return 7; }\n"
    "  if (!strcmp(in, \"bigout\")) { static uint8_t b[8192]; memset(b, 'x', sizeof b);\n"
    "    int r1 = cloister_output(b, 4000), r2 = cloister_output(b, 8192);\n"
    "    char t[32]; snprintf(t, sizeof t, \"|%d|%d\", r1, r2); out(t); return 0; }\n"
    "  if (!strcmp(in, \"sleep\")) { struct timespec ts = {0, 300000000}; nanosleep(&ts, NULL);\n"
    "    out(\"slept\"); return 0; }\n"
    "  if (!strcmp(in, \"malloc\")) { char *p = malloc((size_t)512 << 20);\n"
    "    out(p ? \"got\" : \"null\"); free(p); return 0; }\n"
    "  if (!strcmp(in, \"time\")) { struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);\n"
    "    unsigned char r[8]; arc4random_buf(r, sizeof r); outf(\"%lld\", ts.tv_sec > 1600000000); return 0; }\n"
    "  if (!strcmp(in, \"spin\")) { for (volatile int i = 0;; i++) {} }\n"
    "  if (!strcmp(in, \"kvspin\")) { uint8_t b[4]; for (;;) cloister_kv_get(S(\"x\"), b, 4, NULL); }\n"
    "  if (!strcmp(in, \"open\")) { FILE *f = fopen(\"/etc/hostname\", \"r\"); out(f ? \"opened\" : \"failed\"); return 0; }\n"
    "  if (!strcmp(in, \"socket\")) { outf(\"%lld\", socket(AF_INET, SOCK_STREAM, 0)); return 0; }\n"
    "  if (!strcmp(in, \"fork\")) { outf(\"%lld\", fork()); return 0; }\n"
    "  if (!strcmp(in, \"exec\")) { char *a[] = {\"/bin/true\", NULL}; execv(a[0], a); out(\"no\"); return 0; }\n"
    "  if (!strcmp(in, \"thread\")) { pthread_t t; outf(\"%lld\", pthread_create(&t, NULL, thr, NULL)); return 0; }\n"
    "  if (!strcmp(in, \"write1\")) { outf(\"%lld\", write(1, \"x\", 1)); return 0; }\n"
    "  if (!strcmp(in, \"mmapx\")) { void *p = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);\n"
    "    out(p == MAP_FAILED ? \"failed\" : \"mapped\"); return 0; }\n"
    "  if (!strcmp(in, \"segv\")) { *(volatile int *)0 = 1; return 0; }\n"
    "  if (!strcmp(in, \"abort\")) abort();\n"
    "  if (!strcmp(in, \"exit\")) exit(3);\n"
    "  out(\"ok:\"); out(in); return 0;\n"
    "}\n";

/* Reaches into the worker's region and breaks the protocol in the ways a
 * hostile function could. */
static const char fn_evil_src[] =
    "#include \"worker/worker.h\"\n"
    "#include <cloister/function.h>\n#include <string.h>\n#include <stdio.h>\n#include <sched.h>\n#include <unistd.h>\n"
    "static void out(const char *s) { cloister_output((const uint8_t *)s, (uint32_t)strlen(s)); }\n"
    "static void hang(void) { for (;;) sched_yield(); }\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) {\n"
    "  char in[64]; int32_t n = cloister_input((uint8_t *)in, sizeof in - 1);\n"
    "  if (n < 0 || n > 63) return 1; in[n] = 0;\n"
    "  if (!strcmp(in, \"len\")) { wk.ctl->code = 0; wk.ctl->output_len = 0xfffffff0u; wk_post(NATIVE_MSG_DONE); hang(); }\n"
    "  if (!strcmp(in, \"op\")) { wk_call(999, 0, 0, 0, 0, 0); out(\"returned\"); return 0; }\n"
    "  if (!strcmp(in, \"op0\")) { wk_call(0, 0, 0, 0, 0, 0); out(\"returned\"); return 0; }\n"
    "  if (!strcmp(in, \"arg\")) { wk_call(NATIVE_OP_KV_DELETE, 1ull << 40, 5, 0, 0, 0); out(\"returned\"); return 0; }\n"
    "  if (!strcmp(in, \"extra\")) { wk_call(NATIVE_OP_KV_DELETE, 8, 1, 77, 0, 0); out(\"returned\"); return 0; }\n"
    "  if (!strcmp(in, \"msg\")) { wk_post(77); hang(); }\n"
    "  if (!strcmp(in, \"ready\")) { wk_post(NATIVE_MSG_READY); hang(); }\n"
    "  if (!strcmp(in, \"flood\")) { uint64_t one = 1; for (int i = 0; i < 100000; i++) (void)!write(NATIVE_FD_NOTIFY, &one, 8); hang(); }\n"
    "  if (!strcmp(in, \"fault\")) {\n"
    "    char b[96]; long long r1 = wk_call(NATIVE_OP_KV_SET, wk.data_cap - 2, 100, 8, 1, 0);\n"
    "    long long r2 = wk_call(NATIVE_OP_KV_GET, 8, 2, wk.data_cap - 4, 0xffffffffu, 0);\n"
    "    long long r3 = wk_call(NATIVE_OP_KV_GET_MANY, 8, 0xffffffffu, 3, 16, 8);\n"
    "    long long r4 = wk_call(NATIVE_OP_LOG, wk.data_cap, 1, 0, 0, 0);\n"
    "    snprintf(b, sizeof b, \"%lld %lld %lld %lld\", r1, r2, r3, r4); out(b); return 0; }\n"
    "  out(\"fine\"); return 0;\n"
    "}\n";

static const char fn_ctor_src[] =
    "#include <cloister/function.h>\n#include <stdio.h>\n#include <string.h>\n#include <fcntl.h>\n#include <errno.h>\n"
    "static int fd = -2, err;\n"
    "__attribute__((constructor)) static void ctor(void) { fd = open(\"/etc/passwd\", O_RDONLY); err = errno;\n"
    "  printf(\"constructor ran\\n\"); }\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) { char b[64];\n"
    "  snprintf(b, sizeof b, \"fd=%d errno=%d\", fd, fd < 0 ? err : 0);\n"
    "  cloister_output((const uint8_t *)b, (uint32_t)strlen(b)); return 0; }\n";

static const char fn_ctor_evil_src[] =
    "#include <cloister/function.h>\n#include <sys/socket.h>\n"
    "__attribute__((constructor)) static void ctor(void) { socket(AF_INET, SOCK_STREAM, 0); }\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) { return 0; }\n";

static const char fn_nohandle_src[] =
    "#include <cloister/function.h>\n"
    "CLOISTER_EXPORT(\"handler\") int32_t handler(void) { return 0; }\n";

static const char fn_undef_src[] =
    "#include <cloister/function.h>\n"
    "extern int no_such_function_xyz(void);\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) { return no_such_function_xyz(); }\n";

static const char fn_init_crash_src[] =
    "#include <cloister/function.h>\n"
    "CLOISTER_EXPORT(\"init\") void init(void) { *(volatile int *)0 = 1; }\n"
    "CLOISTER_EXPORT(\"handle\") int32_t handle(void) { return 0; }\n";

/* Writes src to tmp/name.c, compiles tmp/name.so.  1 on success. */
static int compile_fn(const char *name, const char *src)
{
    char c_path[128], cmd[PATH_MAX * 2 + 256];
    snprintf(c_path, sizeof c_path, "%s/%s.c", tmp, name);
    FILE *f = fopen(c_path, "w");
    if (!f)
        return 0;
    fputs(src, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cc -shared -fPIC -O1 -I%s/include -I%s/src -o %s/%s.so %s",
             root, root, tmp, name, c_path);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "     compiling %s failed: %s\n", name, cmd);
    return rc == 0;
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return 0;
    }
    *len = (size_t)sb.st_size;
    *data = malloc(*len ? *len : 1);
    ssize_t n = read(fd, *data, *len);
    close(fd);
    return n == (ssize_t)*len;
}

/* Creates a pool from tmp/name.so (or an absolute path). */
static int pool_from(const char *name, int workers, native_pool **p, cl_buf *err)
{
    char path[PATH_MAX + 32];
    if (name[0] == '/')
        snprintf(path, sizeof path, "%s", name);
    else
        snprintf(path, sizeof path, "%s/%s.so", tmp, name);
    uint8_t *so;
    size_t len;
    if (!read_file(path, &so, &len)) {
        fprintf(stderr, "     cannot read %s\n", path);
        return CL_EIO;
    }
    native_config cfg = {
        .workers = workers,
        .max_input = 64 * 1024,
        .max_output = 8192,
        .max_value = store_max_value(st),
        .max_memory = 128u << 20,
        .log = fnlog,
    };
    int rc = native_pool_create(&cfg, so, len, p, err);
    free(so);
    return rc;
}

/* One invocation; the result's detail is kept in res, output in out. */
typedef struct inv {
    rt_result res;
    cl_buf out;
    uint64_t ms;
} inv;

static void invoke(native_pool *p, store_thread *t, const char *input, uint32_t timeout_ms, inv *v)
{
    rt_call *c = calloc(1, sizeof *c);
    cl_buf_init(&v->out);
    memset(&v->res, 0, sizeof v->res);
    c->input = (const uint8_t *)input;
    c->input_len = strlen(input);
    c->output = &v->out;
    c->max_output = 6000;
    kv_thread kt;
    kv_thread_init(&kt, st, t, NULL);
    c->kv = &kt;
    memcpy(c->ns, ns, sizeof ns - 1);
    c->ns_len = sizeof ns - 1;
    c->max_value = store_max_value(st);
    c->locks = locks;
    c->owner = __atomic_fetch_add(&next_owner, 1, __ATOMIC_RELAXED);
    c->log = fnlog;
    uint64_t t0 = now_ns();
    c->deadline_ns = t0 + (uint64_t)timeout_ms * 1000000u;
    native_invoke(p, c, &v->res);
    rt_host_call_end(c);
    v->ms = (now_ns() - t0) / 1000000u;
    kv_thread_fini(&kt);
    free(c);
}

static int out_is(const inv *v, const char *s)
{
    return v->out.len == strlen(s) && memcmp(v->out.data, s, v->out.len) == 0;
}

static int detail_has(const inv *v, const char *s) { return strstr(v->res.detail, s) != NULL; }

static int log_has(const char *s)
{
    cl_buf b;
    cl_buf_init(&b);
    int ok = rt_fnlog_read(fnlog, &b) == CL_OK && cl_buf_append(&b, "", 1) == CL_OK &&
             strstr((const char *)b.data, s) != NULL;
    cl_buf_fini(&b, 0);
    return ok;
}

static store_thread *main_thread;

/* ---- tests ---------------------------------------------------------------------- */

static void test_validate(void)
{
    cl_buf err;
    cl_buf_init(&err);
    static const uint8_t junk[] = "this is not an ELF file at all, just text.........................";
    CHECK_EQ(native_validate(junk, sizeof junk, &err), CL_EINVAL);
    CHECK(err.len > 0);
    uint8_t elf[64] = { 0x7f, 'E', 'L', 'F', 2, 1, 1 };
    err.len = 0;
    CHECK_EQ(native_validate(elf, 10, &err), CL_EINVAL);           /* truncated header */
    elf[16] = 2;                                                   /* ET_EXEC */
    err.len = 0;
    CHECK_EQ(native_validate(elf, sizeof elf, &err), CL_EINVAL);
    CHECK(memmem(err.data, err.len, "shared object", 13) != NULL);
    cl_buf_fini(&err, 0);
}

static void test_hello(void)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/examples/hello.so", build);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "     %s missing: build the target example_hello\n", path);
        REQUIRE(access(path, R_OK) == 0);
    }
    native_pool *p = NULL;
    cl_buf err;
    cl_buf_init(&err);
    int rc = pool_from(path, 1, &p, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    inv v;
    invoke(p, main_thread, "Ada", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "Hello, Ada!\n"));
    cl_buf_fini(&v.out, 0);
    invoke(p, main_thread, "", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "Hello, world!\n"));
    cl_buf_fini(&v.out, 0);

    /* Warm latency, for the record (not a timed assertion). */
    uint64_t t0 = now_ns();
    for (int i = 0; i < 200; i++) {
        invoke(p, main_thread, "x", 2000, &v);
        cl_buf_fini(&v.out, 0);
    }
    printf("     hello.so warm invocation: %.1f us\n", (double)(now_ns() - t0) / 200 / 1000);
    native_stats s;
    native_pool_stats(p, &s);
    CHECK_EQ(s.invocations, 202);
    CHECK_EQ(s.spawns, 1);
    CHECK_EQ(s.live, 1);
    native_pool_destroy(p);
    cl_buf_fini(&err, 0);
}

static native_pool *main_pool;

static void test_abi(void)
{
    inv v;
    invoke(main_pool, main_thread, "kv", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    REQUIRE(cl_buf_append(&v.out, "", 1) == CL_OK);
    const char *want = "set=0 get=2 v1 ver=1 short=2 badcas=-2 cas=0 newver=1 incr=0 res=5 "
                       "del=0 gone=-1 empty=-8 many=11 c0=3 c1=-1 unlock=-7";
    if (v.out.len == 0 || strcmp((char *)v.out.data, want) != 0)
        fprintf(stderr, "     got  %s\n     want %s\n", v.out.len ? (char *)v.out.data : "", want);
    CHECK(v.out.len && strcmp((char *)v.out.data, want) == 0);
    cl_buf_fini(&v.out, 0);

    /* The keys are in the tenant's namespace in the real store. */
    store_meta m;
    store_get_opts o = { .want_value = 0 };
    CHECK_EQ(store_get(main_thread, (const uint8_t *)"\x01tA/m1", 6, &o, NULL, NULL, &m), CL_OK);
    CHECK_EQ(m.len, 3);
    CHECK_EQ(store_get(main_thread, (const uint8_t *)"m1", 2, &o, NULL, NULL, &m), CL_ENOTFOUND);

    /* Values near max_value go through the data area whole. */
    invoke(main_pool, main_thread, "big", 5000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "0 921600 1"));
    cl_buf_fini(&v.out, 0);

    /* init ran once in this worker, before the first invocation. */
    invoke(main_pool, main_thread, "init", 2000, &v);
    CHECK(out_is(&v, "1"));
    cl_buf_fini(&v.out, 0);
    CHECK(log_has("init ran"));

    /* printf, puts, stderr and cloister_log all reach the function's log. */
    invoke(main_pool, main_thread, "log", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    cl_buf_fini(&v.out, 0);
    CHECK(log_has("printf 7"));
    CHECK(log_has("puts line"));
    CHECK(log_has("to stderr"));
    CHECK(log_has("direct"));
    CHECK(log_has("tail"));

    /* Nonzero return: RT_FN_ERROR with the output. */
    invoke(main_pool, main_thread, "fail", 2000, &v);
    CHECK_EQ(v.res.status, RT_FN_ERROR);
    CHECK_EQ(v.res.code, 7);
    CHECK(out_is(&v, "bad thing"));
    cl_buf_fini(&v.out, 0);

    /* Output limit (max_output 6000): the second append is refused whole. */
    invoke(main_pool, main_thread, "bigout", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK_EQ(v.out.len, 4000 + 5);
    CHECK(v.out.len == 4005 && memcmp(v.out.data + 4000, "|0|-3", 5) == 0);
    cl_buf_fini(&v.out, 0);

    /* Input over the pool's request area. */
    char *huge = malloc(70000);
    memset(huge, 'a', 69999);
    huge[69999] = '\0';
    invoke(main_pool, main_thread, huge, 2000, &v);
    CHECK_EQ(v.res.status, RT_TOO_LARGE);
    cl_buf_fini(&v.out, 0);
    free(huge);

    /* Clocks and randomness are allowed. */
    invoke(main_pool, main_thread, "time", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "1"));
    cl_buf_fini(&v.out, 0);
}

static void test_forbidden(void)
{
    static const char *const bad[] = { "open", "socket", "fork", "exec", "thread", "write1", "mmapx" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        inv v;
        invoke(main_pool, main_thread, bad[i], 2000, &v);
        CHECK_EQ(v.res.status, RT_CRASH);
        CHECK(detail_has(&v, "SIGSYS (forbidden system call)"));
        if (v.res.status != RT_CRASH || !detail_has(&v, "SIGSYS"))
            fprintf(stderr, "     %s: status %d detail \"%s\" output \"%.*s\"\n", bad[i],
                    v.res.status, v.res.detail, (int)v.out.len, v.out.data ? (char *)v.out.data : "");
        cl_buf_fini(&v.out, 0);
        /* The worker was replaced: the next invocation works. */
        invoke(main_pool, main_thread, "again", 2000, &v);
        CHECK_EQ(v.res.status, RT_OK);
        CHECK(out_is(&v, "ok:again"));
        cl_buf_fini(&v.out, 0);
    }
}

static void test_crashes(void)
{
    struct { const char *in, *want; } cases[] = {
        { "segv", "native function crashed: SIGSEGV (segmentation fault)" },
        { "abort", "native function crashed: SIGABRT (aborted)" },
        { "exit", "native function exited with status 3" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        inv v;
        invoke(main_pool, main_thread, cases[i].in, 2000, &v);
        CHECK_EQ(v.res.status, RT_CRASH);
        CHECK(strcmp(v.res.detail, cases[i].want) == 0);
        if (strcmp(v.res.detail, cases[i].want) != 0)
            fprintf(stderr, "     %s: \"%s\"\n", cases[i].in, v.res.detail);
        cl_buf_fini(&v.out, 0);
        invoke(main_pool, main_thread, "next", 2000, &v);
        CHECK_EQ(v.res.status, RT_OK);
        cl_buf_fini(&v.out, 0);
    }

    /* A runaway loop is stopped at the deadline, not waited for. */
    inv v;
    invoke(main_pool, main_thread, "spin", 300, &v);
    CHECK_EQ(v.res.status, RT_TIMEOUT);
    CHECK(v.ms >= 290 && v.ms < 2000);
    cl_buf_fini(&v.out, 0);
    invoke(main_pool, main_thread, "next", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    cl_buf_fini(&v.out, 0);
    /* ... also when it keeps the node busy with host calls. */
    invoke(main_pool, main_thread, "kvspin", 300, &v);
    CHECK_EQ(v.res.status, RT_TIMEOUT);
    CHECK(v.ms >= 290 && v.ms < 2000);
    cl_buf_fini(&v.out, 0);

    /* A memory bomb meets the worker's data limit (not under ASan, whose
     * shadow memory rules out RLIMIT_DATA). */
#ifndef TEST_ASAN
    invoke(main_pool, main_thread, "malloc", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "null"));
    cl_buf_fini(&v.out, 0);
#else
    printf("     (memory limit not checked: RLIMIT_DATA is off under ASan)\n");
#endif

    native_stats s;
    native_pool_stats(main_pool, &s);
    CHECK(s.crashes >= 10);
    CHECK(s.timeouts >= 2);
    CHECK_EQ(s.live, s.workers);
}

struct par_arg {
    native_pool *p;
    const char *input;
    int n;
    int ok;
};

static void *par_thread(void *arg)
{
    struct par_arg *a = arg;
    store_thread *t;
    if (store_thread_create(st, &t) != CL_OK)
        return NULL;
    for (int i = 0; i < a->n; i++) {
        inv v;
        invoke(a->p, t, a->input, 10000, &v);
        a->ok += v.res.status == RT_OK;
        cl_buf_fini(&v.out, 0);
    }
    store_thread_destroy(t);
    return NULL;
}

static uint8_t *count_sink(void *arg, const store_meta *m) { return m->len < 32 ? arg : NULL; }

static void test_concurrent(void)
{
    native_pool *p = NULL;
    cl_buf err;
    cl_buf_init(&err);
    REQUIRE(pool_from("fn_main", 3, &p, &err) == CL_OK);

    /* Three 300 ms sleeps on three workers overlap. */
    pthread_t th[4];
    struct par_arg a[4];
    uint64_t t0 = now_ns();
    for (int i = 0; i < 3; i++) {
        a[i] = (struct par_arg){ p, "sleep", 1, 0 };
        pthread_create(&th[i], NULL, par_thread, &a[i]);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    uint64_t ms = (now_ns() - t0) / 1000000u;
    CHECK_EQ(a[0].ok + a[1].ok + a[2].ok, 3);
    CHECK(ms < 800);
    printf("     3 x 300 ms sleeps on 3 workers: %llu ms\n", (unsigned long long)ms);

    /* 4 threads x 50 read-increment-write under one lock end at exactly 200. */
    for (int i = 0; i < 4; i++) {
        a[i] = (struct par_arg){ p, "incr", 50, 0 };
        pthread_create(&th[i], NULL, par_thread, &a[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(a[0].ok + a[1].ok + a[2].ok + a[3].ok, 200);
    uint8_t val[32] = { 0 };
    store_meta m;
    CHECK_EQ(store_get(main_thread, (const uint8_t *)"\x01tA/count", 9, NULL, count_sink, val, &m), CL_OK);
    CHECK(m.len == 3 && memcmp(val, "200", 3) == 0);
    native_pool_destroy(p);
    cl_buf_fini(&err, 0);
}

static void test_hostile_worker(void)
{
    native_pool *p = NULL;
    cl_buf err;
    cl_buf_init(&err);
    REQUIRE(pool_from("fn_evil", 1, &p, &err) == CL_OK);
    static const char *const bad[] = { "len", "op", "op0", "arg", "extra", "msg", "ready" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        inv v;
        invoke(p, main_thread, bad[i], 2000, &v);
        CHECK_EQ(v.res.status, RT_CRASH);
        CHECK(detail_has(&v, "broke the worker protocol"));
        CHECK_EQ(v.out.len, 0);
        if (v.res.status != RT_CRASH)
            fprintf(stderr, "     %s: status %d \"%s\"\n", bad[i], v.res.status, v.res.detail);
        cl_buf_fini(&v.out, 0);
        invoke(p, main_thread, "x", 2000, &v);
        CHECK_EQ(v.res.status, RT_OK);
        CHECK(out_is(&v, "fine"));
        cl_buf_fini(&v.out, 0);
    }
    /* A flood of wake-ups with no message, then silence: the node is not
     * fooled and stops at the deadline. */
    inv v;
    invoke(p, main_thread, "flood", 300, &v);
    CHECK_EQ(v.res.status, RT_TIMEOUT);
    CHECK(v.ms < 2000);
    cl_buf_fini(&v.out, 0);
    /* Offsets and lengths outside the data area are the host's
     * CLOISTER_EFAULT, never an access outside the region. */
    invoke(p, main_thread, "fault", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(out_is(&v, "-9 -9 -9 0"));
    if (!out_is(&v, "-9 -9 -9 0"))
        fprintf(stderr, "     fault: \"%.*s\"\n", (int)v.out.len, v.out.data ? (char *)v.out.data : "");
    cl_buf_fini(&v.out, 0);
    native_pool_destroy(p);
    cl_buf_fini(&err, 0);
}

static void test_load_errors(void)
{
    struct { const char *fn, *want; } cases[] = {
        { "fn_nohandle", "native function does not export handle" },
        { "fn_undef", "undefined symbol: no_such_function_xyz" },
        { "fn_ctor_evil", "native function crashed while loading: SIGSYS (forbidden system call)" },
        { "fn_init_crash", "native function crashed while loading: SIGSEGV (segmentation fault)" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        native_pool *p = NULL;
        cl_buf err;
        cl_buf_init(&err);
        int rc = pool_from(cases[i].fn, 2, &p, &err);
        CHECK_EQ(rc, CL_EINVAL);
        CHECK(p == NULL);
        int found = err.len && memmem(err.data, err.len, cases[i].want, strlen(cases[i].want));
        CHECK(found);
        if (!found)
            fprintf(stderr, "     %s: \"%.*s\"\n", cases[i].fn, (int)err.len, (char *)err.data);
        cl_buf_fini(&err, 0);
    }
}

static void test_constructor_confined(void)
{
    native_pool *p = NULL;
    cl_buf err;
    cl_buf_init(&err);
    REQUIRE(pool_from("fn_ctor", 1, &p, &err) == CL_OK);
    native_stats s;
    native_pool_stats(p, &s);
    inv v;
    invoke(p, main_thread, "", 2000, &v);
    CHECK_EQ(v.res.status, RT_OK);
    CHECK(log_has("constructor ran"));
    if (s.landlock) {
        char want[64];
        snprintf(want, sizeof want, "fd=-1 errno=%d", EACCES);
        CHECK(out_is(&v, want));
    } else {
        printf("     (Landlock unavailable: constructors may read files; not checked)\n");
    }
    cl_buf_fini(&v.out, 0);
    native_pool_destroy(p);
    cl_buf_fini(&err, 0);
}

static void remove_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "     could not remove %s\n", tmp);
}

int main(void)
{
    /* The sources: this file is ROOT/tests/unit/runtime/test_native.c.
     * The build: this program is BUILD/tests/test_native. */
    snprintf(root, sizeof root, "%s", __FILE__);
    char *cut = strstr(root, "/tests/unit/runtime/");
    REQUIRE(cut != NULL);
    *cut = '\0';
    ssize_t n = readlink("/proc/self/exe", build, sizeof build - 1);
    REQUIRE(n > 0);
    build[n] = '\0';
    *strrchr(build, '/') = '\0';
    *strrchr(build, '/') = '\0';

    snprintf(tmp, sizeof tmp, "/tmp/cl-native-XXXXXX");
    REQUIRE(mkdtemp(tmp) != NULL);
    atexit(remove_tmp);   /* also when a REQUIRE stops the program */
    REQUIRE(compile_fn("fn_main", fn_main_src));
    REQUIRE(compile_fn("fn_evil", fn_evil_src));
    REQUIRE(compile_fn("fn_ctor", fn_ctor_src));
    REQUIRE(compile_fn("fn_ctor_evil", fn_ctor_evil_src));
    REQUIRE(compile_fn("fn_nohandle", fn_nohandle_src));
    REQUIRE(compile_fn("fn_undef", fn_undef_src));
    REQUIRE(compile_fn("fn_init_crash", fn_init_crash_src));

    store_config scfg = { .memory_bytes = 32u << 20 };
    REQUIRE(store_create(&scfg, &st) == CL_OK);
    REQUIRE(store_thread_create(st, &main_thread) == CL_OK);
    REQUIRE(rt_locks_create(0, &locks) == CL_OK);
    REQUIRE(rt_fnlog_create(0, &fnlog) == CL_OK);

    RUN(test_validate);
    RUN(test_hello);
    cl_buf err;
    cl_buf_init(&err);
    uint64_t t0 = now_ns();
    int rc = pool_from("fn_main", 2, &main_pool, &err);
    printf("     pool of 2 workers started in %.1f ms\n", (double)(now_ns() - t0) / 1e6);
    if (rc != CL_OK)
        fprintf(stderr, "     %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    cl_buf_fini(&err, 0);
    RUN(test_abi);
    RUN(test_forbidden);
    RUN(test_crashes);
    RUN(test_concurrent);
    RUN(test_hostile_worker);
    RUN(test_load_errors);
    RUN(test_constructor_confined);
    native_pool_destroy(main_pool);

    rt_fnlog_destroy(fnlog);
    rt_locks_destroy(locks);
    store_thread_destroy(main_thread);
    store_destroy(st);
    return th_done();
}
