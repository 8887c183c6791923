/* test_compile.c - the compile cache (compile.c): hello.wasm compiled into
 * a shared object whose cloister_fn_shim is right, a second compile served
 * from the cache, a tampered, moved or cut entry detected and rebuilt,
 * wasm2c's refusal passed on, concurrent compiles of one module done once,
 * progress reported, tools that hang or fail handled, the default
 * compiler (clang-14, else cc) chosen; the memory-base
 * rewrite of the generated C: its output on real wasm2c code, its refusal
 * of code in any other shape, and a module run in a sandbox whose stores
 * alias its loads and whose memory grows in loops and in callees.
 *
 * Real compiles take seconds: this file does five (hello three times, a
 * small command module once, the rewrite's module once); the failure
 * cases use fake compilers (shell scripts).  Needs wat2wasm (wabt) on
 * PATH for the rewrite's module. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/runtime/compile.h"
#include "../../../src/runtime/module.h"
#include "../../../src/runtime/sandbox.h"
#include "../../../src/runtime/shim.h"

#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static char build_dir[PATH_MAX];
static char cache_dir[PATH_MAX];
static uint8_t mac_key[COMPILE_KEY_LEN];

typedef struct module { uint8_t *bytes; size_t len; uint8_t hash[32]; } module;

static void load(const char *rel, module *m)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", build_dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        fprintf(stderr, "cannot open %s (build the wasm_modules target)\n", path);
    REQUIRE(f != NULL);
    fseek(f, 0, SEEK_END);
    m->len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    m->bytes = malloc(m->len);
    REQUIRE(m->bytes && fread(m->bytes, 1, m->len, f) == m->len);
    fclose(f);
    REQUIRE(EVP_Digest(m->bytes, m->len, m->hash, NULL, EVP_sha256(), NULL) == 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Counts directory entries whose name starts with `prefix` (or ends with
 * it, for suffixes starting with '.'). */
static int count_entries(const char *dir, const char *affix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name), a = strlen(affix);
        if (affix[0] == '.' ? (l > a && strcmp(e->d_name + l - a, affix) == 0)
                            : strncmp(e->d_name, affix, a) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* The path of the one entry file in the cache whose name is not `skip`. */
static int find_entry(const char *skip, char *out, size_t cap)
{
    DIR *d = opendir(cache_dir);
    struct dirent *e;
    int found = 0;
    while (d && (e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 3 && strcmp(e->d_name + l - 3, ".fn") == 0 && (!skip || !strstr(skip, e->d_name))) {
            if (snprintf(out, cap, "%s/%s", cache_dir, e->d_name) < (int)cap)
                found++;
        }
    }
    if (d)
        closedir(d);
    return found;
}

/* ---- progress ------------------------------------------------------------------ */

typedef struct progress_log {
    int calls, translate_done, compile_done, backwards;
    char last_stage[16];
    int last_pct;
} progress_log;

static void on_progress(void *arg, const char *stage, int pct)
{
    progress_log *p = arg;
    p->calls++;
    if (strcmp(stage, p->last_stage) == 0 && pct < p->last_pct)
        p->backwards++;
    snprintf(p->last_stage, sizeof p->last_stage, "%s", stage);
    p->last_pct = pct;
    if (strcmp(stage, "translate") == 0 && pct == 100)
        p->translate_done++;
    if (strcmp(stage, "compile") == 0 && pct == 100)
        p->compile_done++;
}

/* ---- tests ------------------------------------------------------------------------ */

static compile_cache *cache;
static module hello, command, tiny, bad;
static char hello_entry[PATH_MAX];

/* hello's instance struct as wasm2c lays it out (see `wasm2c -n fn
 * hello.wasm`): one pointer per imported module, the stack pointer
 * global, the memory, the function table. */
struct hello_instance {
    void *cloister, *wasi;
    uint32_t stack_pointer;
    wasm_rt_memory_t memory;
    wasm_rt_funcref_table_t table;
};

enum { REACTOR = 1, COMMAND = 2 };

static void check_shim(const compile_artifact *a, int kind, size_t instance_size)
{
    char path[COMPILE_PATH_MAX];
    compile_artifact_path(a, path);
    CHECK(strncmp(path, "/proc/self/fd/", 14) == 0);
    /* RTLD_LAZY: the imports and wasm_rt_* are not in this test program;
     * only the data symbol is looked at. */
    void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
    if (!h)
        fprintf(stderr, "     dlopen: %s\n", dlerror());
    REQUIRE(h != NULL);
    const cl_fn_shim *s = dlsym(h, CL_FN_SHIM_SYMBOL);
    REQUIRE(s != NULL);
    CHECK_EQ(s->abi, CL_FN_SHIM_ABI);
    if (instance_size)
        CHECK_EQ(s->instance_size, instance_size);
    CHECK(s->instance_size >= sizeof(wasm_rt_memory_t));
    CHECK(s->init_module && s->instantiate && s->free_instance && s->memory && s->handle);
    CHECK_EQ(s->initialize != NULL, kind == REACTOR);
    CHECK_EQ(s->start != NULL, kind == COMMAND);
    CHECK(s->init == NULL);
    /* everything else stays hidden */
    CHECK(dlsym(h, "Z_fn_instantiate") == NULL);
    CHECK(dlsym(h, "Z_fnZ_handle") == NULL);
    dlclose(h);
}

static void test_compile_hello(void)
{
    wasm_module_info info = { .imports_cloister = 1, .imports_wasi = 1, .has_initialize = 1 };
    compile_artifact a;
    progress_log p = { .last_pct = -1 };
    cl_buf err;
    cl_buf_init(&err);
    double t0 = now_s();
    int rc = compile_module(cache, hello.hash, hello.bytes, hello.len, &info, on_progress, &p, &a, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    printf("     hello compiled in %.2f s, %zu bytes\n", now_s() - t0, a.so_bytes);
    CHECK_EQ(a.cached, 0);
    CHECK(a.fd >= 0);
    CHECK(a.so_bytes > 1000);
    CHECK_EQ(err.len, 0);
    check_shim(&a, REACTOR, sizeof(struct hello_instance));

    /* the memfd is sealed: what was verified cannot change */
    CHECK(fcntl(a.fd, F_GET_SEALS) & F_SEAL_WRITE);
    CHECK(write(a.fd, "x", 1) < 0);
    compile_artifact_release(&a);
    CHECK_EQ(a.fd, -1);

    CHECK(p.translate_done == 1);
    CHECK(p.compile_done == 1);
    CHECK_EQ(p.backwards, 0);
    CHECK_EQ(strcmp(p.last_stage, "compile"), 0);

    compile_stats st;
    compile_cache_stats(cache, &st);
    CHECK_EQ(st.compiles, 1);
    CHECK_EQ(st.hits, 0);
    CHECK_EQ(count_entries(cache_dir, "work-"), 0);
    CHECK_EQ(find_entry(NULL, hello_entry, sizeof hello_entry), 1);
    cl_buf_fini(&err, 0);
}

static void test_second_compile_is_a_hit(void)
{
    wasm_module_info info = { .imports_cloister = 1, .imports_wasi = 1, .has_initialize = 1 };
    compile_artifact a;
    progress_log p = { .last_pct = -1 };
    double t0 = now_s();
    REQUIRE(compile_module(cache, hello.hash, hello.bytes, hello.len, &info, on_progress, &p, &a, NULL) == CL_OK);
    double took = now_s() - t0;
    CHECK_EQ(a.cached, 1);
    CHECK(took < 0.5);
    CHECK_EQ(p.calls, 0);        /* no compiler ran */
    check_shim(&a, REACTOR, sizeof(struct hello_instance));
    compile_artifact_release(&a);

    /* lookup only (a restart): no module bytes needed */
    REQUIRE(compile_module(cache, hello.hash, NULL, 0, NULL, NULL, NULL, &a, NULL) == CL_OK);
    CHECK_EQ(a.cached, 1);
    compile_artifact_release(&a);

    /* a module never compiled: lookup misses */
    uint8_t other[32] = { 1, 2, 3 };
    CHECK_EQ(compile_module(cache, other, NULL, 0, NULL, NULL, NULL, &a, NULL), CL_ENOTFOUND);
    CHECK_EQ(a.fd, -1);

    compile_stats st;
    compile_cache_stats(cache, &st);
    CHECK_EQ(st.compiles, 1);
    CHECK_EQ(st.hits, 2);
}

static void flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b;
    REQUIRE(pread(fd, &b, 1, off) == 1);
    b ^= 0x20;
    REQUIRE(pwrite(fd, &b, 1, off) == 1);
    close(fd);
}

static void test_tampered_entry_is_rebuilt(void)
{
    wasm_module_info info = { .imports_cloister = 1, .imports_wasi = 1, .has_initialize = 1 };
    compile_artifact a;
    struct stat st0;
    REQUIRE(stat(hello_entry, &st0) == 0);
    /* the operator patches one byte of the code on disk */
    flip_byte(hello_entry, st0.st_size / 2);

    cl_buf err;
    cl_buf_init(&err);
    REQUIRE(compile_module(cache, hello.hash, hello.bytes, hello.len, &info, NULL, NULL, &a, &err) == CL_OK);
    CHECK_EQ(a.cached, 0);           /* detected, deleted, compiled again */
    check_shim(&a, REACTOR, sizeof(struct hello_instance));
    compile_artifact_release(&a);
    compile_stats st;
    compile_cache_stats(cache, &st);
    CHECK_EQ(st.rejected, 1);
    CHECK_EQ(st.compiles, 2);

    /* the rebuilt entry is good again */
    REQUIRE(compile_module(cache, hello.hash, NULL, 0, NULL, NULL, NULL, &a, NULL) == CL_OK);
    CHECK_EQ(a.cached, 1);
    compile_artifact_release(&a);

    /* the MAC itself altered: same verdict (lookup only, so it just misses) */
    flip_byte(hello_entry, 20);
    CHECK_EQ(compile_module(cache, hello.hash, NULL, 0, NULL, NULL, NULL, &a, NULL), CL_ENOTFOUND);
    CHECK(access(hello_entry, F_OK) != 0);   /* deleted */
    compile_cache_stats(cache, &st);
    CHECK_EQ(st.rejected, 2);
    cl_buf_fini(&err, 0);
}

static void test_wasm2c_refusal_is_reported(void)
{
    wasm_module_info info = { 0 };
    compile_artifact a;
    cl_buf err;
    cl_buf_init(&err);
    int rc = compile_module(cache, bad.hash, bad.bytes, bad.len, &info, NULL, NULL, &a, &err);
    CHECK_EQ(rc, CL_EINVAL);
    REQUIRE(cl_buf_append(&err, "", 1) == CL_OK);
    const char *want = "module does not validate: type mismatch in implicit return, "
                       "expected [i32] but got [i64] (byte 0x";
    CHECK(strstr((char *)err.data, want) == (char *)err.data);
    CHECK(strchr((char *)err.data, '\n') == NULL);
    if (!strstr((char *)err.data, want))
        fprintf(stderr, "     message: %s\n", (char *)err.data);
    CHECK_EQ(count_entries(cache_dir, "work-"), 0);     /* cleaned up */
    CHECK_EQ(a.fd, -1);

    /* bytes that do not hash to the given identity are refused */
    err.len = 0;
    CHECK_EQ(compile_module(cache, hello.hash, bad.bytes, bad.len, &info, NULL, NULL, &a, &err), CL_EINVAL);
    cl_buf_fini(&err, 0);
}

/* The command module imports from wasi_snapshot_preview1 first and
 * cloister second, so it also checks the shim passes Z_fn_instantiate's
 * host pointers in wasm2c's order (a mismatch fails to compile). */
#define RACERS 4
static int race_rc[RACERS], race_cached[RACERS];

static void *racer(void *arg)
{
    long i = (long)arg;
    wasm_module_info info = { .imports_cloister = 1, .imports_wasi = 1, .has_start = 1 };
    compile_artifact a;
    race_rc[i] = compile_module(cache, command.hash, command.bytes, command.len, &info, NULL, NULL,
                                &a, NULL);
    race_cached[i] = a.cached;
    if (race_rc[i] == CL_OK)
        compile_artifact_release(&a);
    return NULL;
}

static void test_concurrent_compiles_compile_once(void)
{
    compile_stats before, after;
    compile_cache_stats(cache, &before);
    pthread_t t[RACERS];
    for (long i = 0; i < RACERS; i++)
        REQUIRE(pthread_create(&t[i], NULL, racer, (void *)i) == 0);
    int compiled = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(race_rc[i], CL_OK);
        compiled += !race_cached[i];
    }
    CHECK_EQ(compiled, 1);
    compile_cache_stats(cache, &after);
    CHECK_EQ(after.compiles - before.compiles, 1);
    CHECK_EQ(after.hits - before.hits, RACERS - 1);

    compile_artifact a;
    REQUIRE(compile_module(cache, command.hash, NULL, 0, NULL, NULL, NULL, &a, NULL) == CL_OK);
    check_shim(&a, COMMAND, 0);
    compile_artifact_release(&a);
}

static void test_moved_or_cut_entry_is_refused(void)
{
    char other_entry[PATH_MAX], copy[PATH_MAX * 2 + 16];
    compile_artifact a;
    wasm_module_info info = { .imports_cloister = 1, .imports_wasi = 1, .has_initialize = 1 };
    /* recompile hello (its entry was deleted above) so two entries exist */
    REQUIRE(compile_module(cache, hello.hash, hello.bytes, hello.len, &info, NULL, NULL, &a, NULL) == CL_OK);
    compile_artifact_release(&a);
    REQUIRE(find_entry(hello_entry, other_entry, sizeof other_entry) == 1);

    /* hello's valid entry put under the command module's name: the MAC
     * binds the key */
    snprintf(copy, sizeof copy, "cp %s %s", hello_entry, other_entry);
    REQUIRE(system(copy) == 0);
    CHECK_EQ(compile_module(cache, command.hash, NULL, 0, NULL, NULL, NULL, &a, NULL), CL_ENOTFOUND);

    /* cut short */
    REQUIRE(truncate(hello_entry, 100) == 0);
    CHECK_EQ(compile_module(cache, hello.hash, NULL, 0, NULL, NULL, NULL, &a, NULL), CL_ENOTFOUND);
    /* replaced by something that is not an entry at all */
    REQUIRE(symlink("/etc/passwd", hello_entry) == 0);
    CHECK_EQ(compile_module(cache, hello.hash, NULL, 0, NULL, NULL, NULL, &a, NULL), CL_ENOTFOUND);
    CHECK(access(hello_entry, F_OK) != 0 && errno == ENOENT);   /* the link was removed */
    compile_stats st;
    compile_cache_stats(cache, &st);
    CHECK_EQ(st.rejected, 5);
    CHECK_EQ(st.compiles, 4);
}

/* ---- tools that fail ------------------------------------------------------------------ */

static void write_script(const char *path, const char *body)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fprintf(f, "#!/bin/sh\nif [ \"$1\" = --version ]; then echo fake 1.0; exit 0; fi\n%s\n", body);
    fclose(f);
    REQUIRE(chmod(path, 0700) == 0);
}

static void test_missing_tools(void)
{
    compile_config cfg = { .dir = cache_dir, .mac_key = mac_key, .wasm2c = "/nonexistent/wasm2c" };
    compile_cache *c = NULL;
    cl_buf err;
    cl_buf_init(&err);
    CHECK_EQ(compile_cache_open(&cfg, &c, &err), CL_ECONFIG);
    CHECK(c == NULL);
    REQUIRE(cl_buf_append(&err, "", 1) == CL_OK);
    CHECK(strstr((char *)err.data, "cannot run /nonexistent/wasm2c") != NULL);
    cfg.wasm2c = NULL;
    cfg.cc = "no-such-compiler-xyz";
    err.len = 0;
    CHECK_EQ(compile_cache_open(&cfg, &c, &err), CL_ECONFIG);
    /* a cache directory that cannot be made */
    cfg.cc = NULL;
    cfg.dir = "/nonexistent/dir/cache";
    err.len = 0;
    CHECK(compile_cache_open(&cfg, &c, &err) != CL_OK);
    CHECK(err.len > 0);
    cl_buf_fini(&err, 0);
}

static int process_gone(pid_t pid)
{
    char path[64], state = '?';
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    int ok = fscanf(f, "%*d %*s %c", &state) == 1;
    fclose(f);
    return ok && (state == 'Z' || state == 'X');   /* dead, maybe not yet reaped by init */
}

static void test_compiler_failure_and_timeout(void)
{
    char dir[] = "/tmp/cl-compile-fake-XXXXXX", failing[128], hanging[128], pidfile[128], sub[128];
    REQUIRE(mkdtemp(dir));
    snprintf(failing, sizeof failing, "%s/failing-cc", dir);
    snprintf(hanging, sizeof hanging, "%s/hanging-cc", dir);
    snprintf(pidfile, sizeof pidfile, "%s/child.pid", dir);
    snprintf(sub, sizeof sub, "%s/cache", dir);
    write_script(failing, "echo 'fn.c:12:3: error: something broke' >&2; exit 1");
    char body[512];
    snprintf(body, sizeof body, "sleep 30 &\necho $! > %s\nwait", pidfile);
    write_script(hanging, body);

    wasm_module_info info = { 0 };
    compile_artifact a;
    compile_cache *c = NULL;
    cl_buf err;
    cl_buf_init(&err);

    compile_config cfg = { .dir = sub, .mac_key = mac_key, .cc = failing };
    REQUIRE(compile_cache_open(&cfg, &c, &err) == CL_OK);
    CHECK_EQ(compile_module(c, tiny.hash, tiny.bytes, tiny.len, &info, NULL, NULL, &a, &err), CL_EIO);
    REQUIRE(cl_buf_append(&err, "", 1) == CL_OK);
    CHECK(strstr((char *)err.data, "the C compiler failed (exit status 1): fn.c:12:3: error: something broke") != NULL);
    if (!strstr((char *)err.data, "the C compiler failed"))
        fprintf(stderr, "     message: %s\n", (char *)err.data);
    CHECK_EQ(count_entries(sub, "work-"), 0);
    CHECK_EQ(count_entries(sub, ".fn"), 0);
    compile_cache_close(c);

    cfg.cc = hanging;
    cfg.compile_timeout_ms = 300;
    err.len = 0;
    REQUIRE(compile_cache_open(&cfg, &c, &err) == CL_OK);
    double t0 = now_s();
    CHECK_EQ(compile_module(c, tiny.hash, tiny.bytes, tiny.len, &info, NULL, NULL, &a, &err), CL_EIO);
    CHECK(now_s() - t0 < 5);
    REQUIRE(cl_buf_append(&err, "", 1) == CL_OK);
    CHECK(strstr((char *)err.data, "the C compiler took longer than") != NULL);
    /* the compiler's own children were stopped with it */
    FILE *f = fopen(pidfile, "r");
    int child = 0;
    CHECK(f && fscanf(f, "%d", &child) == 1 && child > 0);
    if (f)
        fclose(f);
    usleep(100 * 1000);
    if (child > 0)
        CHECK(process_gone(child));
    compile_cache_close(c);

    /* a stale work directory left by a crash is removed on open */
    char stale[256];
    snprintf(stale, sizeof stale, "%s/work-crashed", sub);
    REQUIRE(mkdir(stale, 0700) == 0);
    FILE *junk = fopen(strcat(strcpy(body, stale), "/fn.c"), "w");
    if (junk)
        fclose(junk);
    struct timeval old[2] = { { time(NULL) - 7200, 0 }, { time(NULL) - 7200, 0 } };
    REQUIRE(utimes(stale, old) == 0);
    cfg.cc = NULL;
    REQUIRE(compile_cache_open(&cfg, &c, &err) == CL_OK);
    CHECK(access(stale, F_OK) != 0);
    compile_cache_close(c);

    snprintf(body, sizeof body, "rm -rf %s", dir);
    CHECK_EQ(system(body), 0);
    cl_buf_fini(&err, 0);
}

/* With no compiler configured: clang-14 when it runs, else cc. */
static void test_default_compiler(void)
{
    char dir[] = "/tmp/cl-compile-cc-XXXXXX", cc[128], clang[128], sub[128];
    char *saved_path = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    REQUIRE(saved_path && mkdtemp(dir));
    snprintf(cc, sizeof cc, "%s/cc", dir);
    snprintf(clang, sizeof clang, "%s/clang-14", dir);
    snprintf(sub, sizeof sub, "%s/cache", dir);
    write_script(cc, "echo 'plain cc ran' >&2; exit 1");
    REQUIRE(setenv("PATH", dir, 1) == 0);   /* no other thread runs now */

    compile_config cfg = { .dir = sub, .mac_key = mac_key };
    wasm_module_info info = { 0 };
    compile_artifact a;
    compile_cache *c = NULL;
    cl_buf err;
    cl_buf_init(&err);
    for (int with_clang = 0; with_clang < 2; with_clang++) {
        if (with_clang)
            write_script(clang, "echo 'clang-14 ran' >&2; exit 1");
        err.len = 0;
        REQUIRE(compile_cache_open(&cfg, &c, &err) == CL_OK);
        CHECK_EQ(compile_module(c, tiny.hash, tiny.bytes, tiny.len, &info, NULL, NULL, &a, &err), CL_EIO);
        REQUIRE(cl_buf_append(&err, "", 1) == CL_OK);
        CHECK(strstr((char *)err.data, with_clang ? "clang-14 ran" : "plain cc ran") != NULL);
        compile_cache_close(c);
    }
    REQUIRE(setenv("PATH", saved_path, 1) == 0);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    free(saved_path);
    cl_buf_fini(&err, 0);
}

/* ---- the memory-base rewrite ---------------------------------------------------------- */

/*
 * The rewrite's module.  The request body's first 4 bytes select a case;
 * handle returns 0 when every check in it held, else the number of the
 * check that failed (or traps, for 4 and 5):
 *   0  init's store is in the template (a base cached during init)
 *   1  stores that overlap loads: byte into word, half-word into
 *      double-word, pointer chasing, an overlapping byte copy, prefix
 *      sums through two pointers one element apart (i32 and f64: a
 *      vectoriser that assumed no overlap computes other numbers)
 *   2  memory.grow in a loop, each new page written at once and read
 *      back by another function; growing to the maximum and past it
 *   3  a callee grows the memory and marks the new page; the caller,
 *      which used the memory before the call, reads and writes the page
 *   4  grow, then a load just past the new end: traps
 *   5  a load at index -2 + offset 4 (past 4 GiB): traps
 *   6  every load and store helper once, on values with the sign bit
 *      set (sign and zero extension, truncation, f32 bits)
 */
static const char rewrite_wat[] =
    "(module\n"
    "  (import \"cloister\" \"input\" (func $input (param i32 i32) (result i32)))\n"
    "  (memory (export \"memory\") 1 16)\n"
    "  (func $grow1 (result i32)\n"
    "    (local $old i32)\n"
    "    (local.set $old (memory.grow (i32.const 1)))\n"
    "    (if (i32.ge_s (local.get $old) (i32.const 0))\n"
    "      (then (i32.store (i32.shl (local.get $old) (i32.const 16))\n"
    "                       (i32.add (local.get $old) (i32.const 0x5eed0000)))))\n"
    "    (local.get $old))\n"
    "  (func $peek (param i32) (result i32) (i32.load (local.get 0)))\n"
    "  (func $poke (param i32 i32) (i32.store (local.get 0) (local.get 1)))\n"
    "  (func (export \"init\") (i32.store (i32.const 800) (i32.const 0x1234)))\n"
    "  (func $alias (result i32)\n"
    "    (local $i i32) (local $src i32) (local $dst i32)\n"
    "    (i32.store (i32.const 100) (i32.const 0x11223344))\n"
    "    (i32.store8 (i32.const 101) (i32.const 0xaa))\n"
    "    (if (i32.ne (i32.load (i32.const 100)) (i32.const 0x1122aa44)) (then (return (i32.const 1))))\n"
    "    (i64.store (i32.const 200) (i64.const 0x0102030405060708))\n"
    "    (i32.store16 offset=3 (i32.const 200) (i32.const 0xbeef))\n"
    "    (if (i64.ne (i64.load (i32.const 200)) (i64.const 0x010203beef060708)) (then (return (i32.const 2))))\n"
    "    (if (i32.ne (i32.load offset=2 (i32.const 200)) (i32.const 0x03beef06)) (then (return (i32.const 3))))\n"
    "    (i32.store (i32.const 300) (i32.const 400))\n"
    "    (i32.store (i32.const 400) (i32.const 7))\n"
    "    (i32.store (i32.load (i32.const 300)) (i32.add (i32.load (i32.load (i32.const 300))) (i32.const 2)))\n"
    "    (if (i32.ne (i32.load (i32.const 400)) (i32.const 9)) (then (return (i32.const 4))))\n"
    "    (i32.store8 (i32.const 500) (i32.const 0x5a))\n"
    "    (loop $copy\n"
    "      (i32.store8 offset=501 (local.get $i) (i32.load8_u offset=500 (local.get $i)))\n"
    "      (br_if $copy (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 64))))\n"
    "    (if (i32.ne (i32.load (i32.const 561)) (i32.const 0x5a5a5a5a)) (then (return (i32.const 5))))\n"
    /* i32 prefix sums: dst = src + 4, both loaded from memory */
    "    (i32.store (i32.const 16) (i32.const 1000))\n"
    "    (i32.store (i32.const 20) (i32.const 1004))\n"
    "    (local.set $i (i32.const 0))\n"
    "    (loop $ones\n"
    "      (i32.store offset=1000 (local.get $i) (i32.const 1))\n"
    "      (br_if $ones (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 4))) (i32.const 260))))\n"
    "    (local.set $src (i32.load (i32.const 16)))\n"
    "    (local.set $dst (i32.load (i32.const 20)))\n"
    "    (local.set $i (i32.const 0))\n"
    "    (loop $sum\n"
    "      (i32.store (i32.add (local.get $dst) (local.get $i))\n"
    "        (i32.add (i32.load (i32.add (local.get $dst) (local.get $i)))\n"
    "                 (i32.load (i32.add (local.get $src) (local.get $i)))))\n"
    "      (br_if $sum (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 4))) (i32.const 256))))\n"
    "    (if (i32.ne (i32.load (i32.const 1256)) (i32.const 65)) (then (return (i32.const 6))))\n"
    "    (if (i32.ne (i32.load (i32.const 1040)) (i32.const 11)) (then (return (i32.const 7))))\n"
    /* f64: c[j] = c[j] + 2 c[j-1] over c[0..63] = 1.0, so c[j] = 2^(j+1) - 1 */
    "    (i32.store (i32.const 16) (i32.const 2000))\n"
    "    (i32.store (i32.const 20) (i32.const 2008))\n"
    "    (local.set $i (i32.const 0))\n"
    "    (loop $ones\n"
    "      (f64.store offset=2000 (local.get $i) (f64.const 1))\n"
    "      (br_if $ones (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 8))) (i32.const 512))))\n"
    "    (local.set $src (i32.load (i32.const 16)))\n"
    "    (local.set $dst (i32.load (i32.const 20)))\n"
    "    (local.set $i (i32.const 0))\n"
    "    (loop $axpy\n"
    "      (f64.store (i32.add (local.get $dst) (local.get $i))\n"
    "        (f64.add (f64.load (i32.add (local.get $dst) (local.get $i)))\n"
    "                 (f64.mul (f64.const 2) (f64.load (i32.add (local.get $src) (local.get $i))))))\n"
    "      (br_if $axpy (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 8))) (i32.const 496))))\n"
    "    (if (f64.ne (f64.load (i32.const 2160)) (f64.const 2097151)) (then (return (i32.const 8))))\n"
    "    (if (f64.ne (f64.load (i32.const 2496)) (f64.const 0x1p63)) (then (return (i32.const 9))))\n"
    "    (i32.const 0))\n"
    "  (func $grow_loop (result i32)\n"
    "    (local $i i32) (local $old i32)\n"
    "    (loop $l\n"
    "      (local.set $old (memory.grow (i32.const 1)))\n"
    "      (if (i32.ne (local.get $old) (i32.add (local.get $i) (i32.const 1))) (then (return (i32.const 10))))\n"
    "      (i32.store offset=8 (i32.shl (local.get $old) (i32.const 16)) (local.get $i))\n"
    "      (i32.store (i32.const 600) (i32.add (i32.load (i32.const 600))\n"
    "        (i32.load offset=8 (i32.shl (local.get $old) (i32.const 16)))))\n"
    "      (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1))) (i32.const 7))))\n"
    "    (if (i32.ne (memory.size) (i32.const 8)) (then (return (i32.const 11))))\n"
    "    (if (i32.ne (i32.load (i32.const 600)) (i32.const 21)) (then (return (i32.const 12))))\n"
    "    (if (i32.ne (call $peek (i32.const 0x70008)) (i32.const 6)) (then (return (i32.const 13))))\n"
    "    (call $poke (i32.const 0x60008) (i32.const 99))\n"
    "    (if (i32.ne (i32.load (i32.const 0x60008)) (i32.const 99)) (then (return (i32.const 14))))\n"
    "    (if (i32.ne (memory.grow (i32.const 8)) (i32.const 8)) (then (return (i32.const 15))))\n"
    "    (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 16))))\n"
    "    (i32.store8 (i32.const 0xfffff) (i32.const 0xab))\n"
    "    (if (i32.ne (call $peek (i32.const 0xffffc)) (i32.const 0xab000000)) (then (return (i32.const 17))))\n"
    "    (i32.const 0))\n"
    "  (func $widths (result i32)\n"
    "    (i64.store (i32.const 3000) (i64.const 0x8081828384858687))\n"
    "    (if (i32.ne (i32.load8_s (i32.const 3000)) (i32.const -121)) (then (return (i32.const 30))))\n"
    "    (if (i32.ne (i32.load8_u (i32.const 3000)) (i32.const 0x87)) (then (return (i32.const 31))))\n"
    "    (if (i32.ne (i32.load16_s (i32.const 3000)) (i32.const -31097)) (then (return (i32.const 32))))\n"
    "    (if (i32.ne (i32.load16_u (i32.const 3000)) (i32.const 0x8687)) (then (return (i32.const 33))))\n"
    "    (if (i64.ne (i64.load8_s (i32.const 3001)) (i64.const -122)) (then (return (i32.const 34))))\n"
    "    (if (i64.ne (i64.load8_u (i32.const 3001)) (i64.const 0x86)) (then (return (i32.const 35))))\n"
    "    (if (i64.ne (i64.load16_s (i32.const 3002)) (i64.const -31611)) (then (return (i32.const 36))))\n"
    "    (if (i64.ne (i64.load16_u (i32.const 3002)) (i64.const 0x8485)) (then (return (i32.const 37))))\n"
    "    (if (i64.ne (i64.load32_s (i32.const 3004)) (i64.const -2138996093)) (then (return (i32.const 38))))\n"
    "    (if (i64.ne (i64.load32_u (i32.const 3004)) (i64.const 0x80818283)) (then (return (i32.const 39))))\n"
    "    (if (i64.ne (i64.load (i32.const 3000)) (i64.const 0x8081828384858687)) (then (return (i32.const 40))))\n"
    "    (f32.store (i32.const 3008) (f32.const -1.5))\n"
    "    (if (i32.ne (i32.load (i32.const 3008)) (i32.const 0xbfc00000)) (then (return (i32.const 41))))\n"
    "    (if (f32.ne (f32.load (i32.const 3008)) (f32.const -1.5)) (then (return (i32.const 42))))\n"
    "    (i32.store16 (i32.const 3012) (i32.const 0x12348765))\n"
    "    (if (i32.ne (i32.load (i32.const 3012)) (i32.const 0x8765)) (then (return (i32.const 43))))\n"
    "    (i64.store8 (i32.const 3016) (i64.const 0x1ff))\n"
    "    (i64.store16 (i32.const 3018) (i64.const 0x1fffe))\n"
    "    (if (i32.ne (i32.load (i32.const 3016)) (i32.const 0xfffe00ff)) (then (return (i32.const 44))))\n"
    "    (i64.store32 (i32.const 3020) (i64.const 0x180000001))\n"
    "    (i32.store8 (i32.const 3024) (i32.const 0x180))\n"
    "    (if (i64.ne (i64.load (i32.const 3020)) (i64.const 0x8080000001)) (then (return (i32.const 45))))\n"
    "    (i32.const 0))\n"
    "  (func $grow_in_callee (result i32)\n"
    "    (i32.store (i32.const 700) (i32.const 1))\n"
    "    (if (i32.ne (call $grow1) (i32.const 1)) (then (return (i32.const 20))))\n"
    "    (if (i32.ne (i32.load (i32.const 0x10000)) (i32.const 0x5eed0001)) (then (return (i32.const 21))))\n"
    "    (i32.store (i32.const 0x1fffc) (i32.const 0x77))\n"
    "    (if (i32.ne (call $peek (i32.const 0x1fffc)) (i32.const 0x77)) (then (return (i32.const 22))))\n"
    "    (if (i32.ne (i32.load (i32.const 700)) (i32.const 1)) (then (return (i32.const 23))))\n"
    "    (i32.const 0))\n"
    "  (func (export \"handle\") (result i32)\n"
    "    (local $sel i32)\n"
    "    (drop (call $input (i32.const 0) (i32.const 4)))\n"
    "    (local.set $sel (i32.load (i32.const 0)))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 0))\n"
    "      (then (return (i32.ne (i32.load (i32.const 800)) (i32.const 0x1234)))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 1)) (then (return (call $alias))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 2)) (then (return (call $grow_loop))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 3)) (then (return (call $grow_in_callee))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 4))\n"
    "      (then (drop (call $grow1)) (return (i32.load (i32.const 0x20000)))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 6)) (then (return (call $widths))))\n"
    "    (if (i32.eq (local.get $sel) (i32.const 5))\n"
    "      (then (return (i32.load offset=4 (i32.const -2)))))\n"
    "    (i32.const 100)))\n";

static char rewrite_dir[PATH_MAX + 16];
static module rewrite_mod;

/* Runs argv (PATH searched) to completion; its exit status, -1 if it could not run. */
static int run_tool(const char *const argv[])
{
    pid_t pid;
    int status;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f != NULL);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len + 1);
    REQUIRE(b && fread(b, 1, *len, f) == *len);
    b[*len] = '\0';
    fclose(f);
    return b;
}

/* rewrite.wat -> rewrite.wasm (with names, so wasm2c's C names the functions) -> fn.c */
static void make_rewrite_module(void)
{
    char wat[sizeof rewrite_dir + 32], wasm[sizeof rewrite_dir + 32], fnc[sizeof rewrite_dir + 32];
    snprintf(rewrite_dir, sizeof rewrite_dir, "%s/rewrite", cache_dir);
    REQUIRE(mkdir(rewrite_dir, 0700) == 0);
    snprintf(wat, sizeof wat, "%s/rewrite.wat", rewrite_dir);
    snprintf(wasm, sizeof wasm, "%s/rewrite.wasm", rewrite_dir);
    snprintf(fnc, sizeof fnc, "%s/fn.c", rewrite_dir);
    FILE *f = fopen(wat, "w");
    REQUIRE(f && fwrite(rewrite_wat, 1, sizeof rewrite_wat - 1, f) == sizeof rewrite_wat - 1);
    fclose(f);
    const char *w2w[] = { "wat2wasm", "--debug-names", wat, "-o", wasm, NULL };
    int st = run_tool(w2w);
    if (st != 0)
        fprintf(stderr, "     wat2wasm (wabt) failed or is not on PATH (status %d)\n", st);
    REQUIRE(st == 0);
    const char *w2c[] = { CLOISTER_WASM2C, "-n", "fn", wasm, "-o", fnc, NULL };
    REQUIRE(run_tool(w2c) == 0);
    char *bytes = slurp(wasm, &rewrite_mod.len);
    rewrite_mod.bytes = (uint8_t *)bytes;
    REQUIRE(EVP_Digest(rewrite_mod.bytes, rewrite_mod.len, rewrite_mod.hash, NULL, EVP_sha256(), NULL) == 1);
}

/* The identifier that ends at p (exclusive) in [start, p). */
static size_t ident_before(const char *start, const char *p, const char **id)
{
    const char *q = p;
    while (q > start && (q[-1] == '_' || (q[-1] >= 'a' && q[-1] <= 'z') || (q[-1] >= '0' && q[-1] <= '9')))
        q--;
    *id = q;
    return (size_t)(p - q);
}

/* Counts load/store helper calls still taking the memory struct. */
static int unrewritten_sites(const char *code, size_t len)
{
    static const char site[] = "(&instance->w2c_memory, ";
    int n = 0;
    const char *end = code + len, *p = code, *id;
    while ((p = memmem(p, (size_t)(end - p), site, sizeof site - 1)) != NULL) {
        size_t l = ident_before(code, p, &id);
        if (l > 4 && (id[0] == 'i' || id[0] == 'f') && (memmem(id, l, "_load", 5) || memmem(id, l, "_store", 6)))
            n++;
        p += sizeof site - 1;
    }
    return n;
}

static void test_rewrite_output(void)
{
    char fnc[sizeof rewrite_dir + 32];
    size_t len, sites = 0, hello_len;
    snprintf(fnc, sizeof fnc, "%s/fn.c", rewrite_dir);
    char *src = slurp(fnc, &len);
    const char *why = NULL;
    cl_buf out;
    cl_buf_init(&out);

    REQUIRE(unrewritten_sites(src, len) > 30);
    int rc = compile_rewrite_memory_base(src, len, &out, &sites, &why);
    if (rc != CL_OK)
        fprintf(stderr, "     not rewritten: %s\n", why ? why : "?");
    REQUIRE(rc == CL_OK);
    CHECK(why == NULL);
    CHECK_EQ(sites, (size_t)unrewritten_sites(src, len));
    CHECK_EQ(unrewritten_sites((char *)out.data, out.len), 0);
    REQUIRE(cl_buf_append(&out, "", 1) == CL_OK);
    const char *o = (const char *)out.data;
    /* a function's base is read first thing, then used by every access */
    CHECK(strstr(o, "static u32 w2c_peek(Z_fn_instance_t* instance, u32 w2c_p0) {\n"
                    "  u8* const cl_mem_base = instance->w2c_memory.data;\n") != NULL);
    CHECK(strstr(o, "cl_mem_i32_load(cl_mem_base, (u64)(w2c_i0));") != NULL);
    CHECK(strstr(o, "cl_mem_i32_store8(cl_mem_base, (u64)(w2c_i0) + 501, w2c_i1);") != NULL);
    CHECK(strstr(o, "cl_mem_f64_load(cl_mem_base, ") != NULL);
    CHECK(strstr(o, "CL_MEM_STORE(i64_store32, u32, u64)\n") != NULL);
    /* what is not a load or store still takes the memory itself */
    CHECK(strstr(o, "wasm_rt_grow_memory(&instance->w2c_memory, ") != NULL);
    CHECK(strstr(o, "wasm_rt_allocate_memory(&instance->w2c_memory, ") != NULL);
    /* one declaration per function that touches memory, none elsewhere:
     * init, grow1, peek, poke, alias, grow_loop, widths, grow_in_callee, handle */
    int decls = 0;
    for (const char *p = o; (p = strstr(p, "u8* const cl_mem_base")) != NULL; p++)
        decls++;
    CHECK_EQ(decls, 9);
    CHECK(strstr(o, "void Z_fnZ_init(Z_fn_instance_t* instance) {\n  return w2c_init(instance);") != NULL);

    /* hello (wasi-libc, every kind of helper) rewrites completely too */
    char hello_wasm[PATH_MAX * 2], hello_c[sizeof rewrite_dir + 32];
    snprintf(hello_wasm, sizeof hello_wasm, "%s/examples/hello.wasm", build_dir);
    snprintf(hello_c, sizeof hello_c, "%s/hello.c", rewrite_dir);
    const char *w2c[] = { CLOISTER_WASM2C, "-n", "fn", hello_wasm, "-o", hello_c, NULL };
    REQUIRE(run_tool(w2c) == 0);
    char *hello_src = slurp(hello_c, &hello_len);
    out.len = 0;
    CHECK_EQ(compile_rewrite_memory_base(hello_src, hello_len, &out, &sites, &why), CL_OK);
    CHECK(sites > 300);
    CHECK_EQ(sites, (size_t)unrewritten_sites(hello_src, hello_len));
    CHECK_EQ(unrewritten_sites((char *)out.data, out.len), 0);
    free(hello_src);
    cl_buf_fini(&out, 0);
    free(src);
}

/* src with the first `from` replaced by `to` (malloc'd, NUL-terminated). */
static char *edited(const char *src, size_t len, const char *from, const char *to, size_t *outlen)
{
    const char *at = memmem(src, len, from, strlen(from));
    REQUIRE(at != NULL);
    size_t head = (size_t)(at - src), fl = strlen(from), tl = strlen(to);
    char *e = malloc(len - fl + tl + 1);
    REQUIRE(e != NULL);
    memcpy(e, src, head);
    memcpy(e + head, to, tl);
    memcpy(e + head + tl, at + fl, len - head - fl);
    *outlen = len - fl + tl;
    e[*outlen] = '\0';
    return e;
}

/* Code in any other shape is refused whole, and out is left as it was. */
static void test_rewrite_refuses_other_shapes(void)
{
    static const struct { const char *from, *to; } edits[] = {
        /* a helper missing, or defined twice */
        { "DEFINE_LOAD(i64_load16_s, s16, s64, u64)\n", "" },
        { "DEFINE_STORE(i32_store, u32, u32)\n", "DEFINE_STORE(i32_store, u32, u32)\nDEFINE_STORE(i32_store, u32, u32)\n" },
        /* a helper that addresses memory some other way */
        { "wasm_rt_memcpy(&result, &mem->data[addr], sizeof(t1));", "wasm_rt_memcpy(&result, &mem->data[addr + 1], sizeof(t1));" },
        { "wasm_rt_memcpy(&mem->data[addr], &wrapped, sizeof(t1));", "wasm_rt_memcpy(&mem->data[addr ^ 1], &wrapped, sizeof(t1));" },
        /* bounds checked in software, not by guard pages */
        { "#define MEMCHECK(mem, a, t)\n", "#define MEMCHECK(mem, a, t) RANGE_CHECK(mem, a, sizeof(t))\n" },
        /* the names the rewrite adds already used */
        { "static u32 w2c_peek(", "static u32 cl_mem_base_w2c_peek(" },
        /* a function whose body ends in a way the rewrite does not know */
        { "(Z_fn_instance_t* instance, u32 w2c_p0) {\n", "(Z_fn_instance_t* instance, u32 w2c_p0) {\n{\n}\n" },
    };
    char fnc[sizeof rewrite_dir + 32];
    size_t len, sites;
    snprintf(fnc, sizeof fnc, "%s/fn.c", rewrite_dir);
    char *src = slurp(fnc, &len);
    cl_buf out;
    cl_buf_init(&out);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        size_t elen;
        char *e = edited(src, len, edits[i].from, edits[i].to, &elen);
        const char *why = NULL;
        REQUIRE(cl_buf_append(&out, "keep", 4) == CL_OK);
        sites = 99;
        int rc = compile_rewrite_memory_base(e, elen, &out, &sites, &why);
        if (rc != CL_EINVAL)
            fprintf(stderr, "     edit %zu was rewritten\n", i);
        CHECK_EQ(rc, CL_EINVAL);
        CHECK(why != NULL && strlen(why) > 10);
        CHECK_EQ(sites, 0);
        CHECK(out.len == 4 && memcmp(out.data, "keep", 4) == 0);
        out.len = 0;
        free(e);
    }
    cl_buf_fini(&out, 0);
    free(src);
}

/* The module compiled by the cache (rewritten: nothing counted as
 * unrewritten) and run in a sandbox, on a thread of its own. */
static void run_rewrite_module(void)
{
    wasm_module_info info;
    compile_artifact a;
    compile_stats before, after;
    char so[COMPILE_PATH_MAX];
    rt_sandbox *sb = NULL;
    rt_code *code = NULL;
    cl_buf err, out;
    cl_buf_init(&err);
    cl_buf_init(&out);

    REQUIRE(wasm_module_inspect(rewrite_mod.bytes, rewrite_mod.len, NULL, &info, &err) == CL_OK);
    CHECK(info.has_init);
    compile_cache_stats(cache, &before);
    int rc = compile_module(cache, rewrite_mod.hash, rewrite_mod.bytes, rewrite_mod.len, &info,
                            NULL, NULL, &a, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    compile_cache_stats(cache, &after);
    CHECK_EQ(after.compiles - before.compiles, 1);
    CHECK_EQ(after.unrewritten, before.unrewritten);

    REQUIRE(rt_sandbox_create(NULL, &sb) == CL_OK);
    compile_artifact_path(&a, so);
    rc = rt_code_load(sb, so, NULL, NULL, &code, &err);
    if (rc != CL_OK)
        fprintf(stderr, "     load: %.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    compile_artifact_release(&a);

    static const struct { uint32_t sel; rt_status status; } cases[] = {
        { 0, RT_OK }, { 1, RT_OK }, { 2, RT_OK }, { 3, RT_OK }, { 4, RT_TRAP }, { 5, RT_TRAP },
        { 6, RT_OK },
        { 2, RT_OK }, { 3, RT_OK },   /* again, in the instance restored from the template */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rt_call call;
        rt_result res;
        memset(&call, 0, sizeof call);
        call.input = (const uint8_t *)&cases[i].sel;
        call.input_len = 4;
        call.output = &out;
        call.max_output = 4096;
        CHECK_EQ(rt_sandbox_call(sb, code, &call, &res), CL_OK);
        rt_host_call_end(&call);
        if (res.status != cases[i].status || (res.status == RT_OK && res.code != 0))
            fprintf(stderr, "     case %u: status %d, code %d, %s\n", cases[i].sel, (int)res.status,
                    (int)res.code, res.detail);
        CHECK_EQ(res.status, cases[i].status);
        if (cases[i].status == RT_OK)
            CHECK_EQ(res.code, 0);
        else
            CHECK(strcmp(res.detail, "trap: out of bounds memory access") == 0);
    }
    rt_code_unref(code);
    rt_sandbox_trim(sb, 0);
    rt_sandbox_destroy(sb);
    wasm_module_info_fini(&info);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&out, 0);
}

static void *rewrite_thread(void *arg)
{
    (void)arg;
    run_rewrite_module();
    return NULL;
}

static void test_rewritten_module_runs(void)
{
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, rewrite_thread, NULL) == 0);   /* guest code runs on pthreads only */
    pthread_join(t, NULL);
}

int main(void)
{
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(k > 0);
    exe[k] = '\0';
    *strrchr(exe, '/') = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(build_dir, sizeof build_dir, "%s", exe);

    load("examples/hello.wasm", &hello);
    load("tests/modules/ok_command.wasm", &command);
    load("tests/modules/ok_tiny.wasm", &tiny);
    load("tests/modules/bad_validate.wasm", &bad);
    for (size_t i = 0; i < sizeof mac_key; i++)
        mac_key[i] = (uint8_t)(i * 37 + 11);

    char tmp[] = "/tmp/cl-compile-XXXXXX";
    REQUIRE(mkdtemp(tmp));
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", tmp);
    compile_config cfg = { .dir = cache_dir, .mac_key = mac_key };
    cl_buf err;
    cl_buf_init(&err);
    int rc = compile_cache_open(&cfg, &cache, &err);
    if (rc != CL_OK)
        fprintf(stderr, "%.*s\n", (int)err.len, (char *)err.data);
    REQUIRE(rc == CL_OK);
    struct stat st;
    REQUIRE(stat(cache_dir, &st) == 0);
    CHECK_EQ(st.st_mode & 0777, 0700);

    RUN(test_compile_hello);
    RUN(test_second_compile_is_a_hit);
    RUN(test_tampered_entry_is_rebuilt);
    RUN(test_wasm2c_refusal_is_reported);
    RUN(test_concurrent_compiles_compile_once);
    RUN(test_moved_or_cut_entry_is_refused);
    RUN(test_missing_tools);
    RUN(test_compiler_failure_and_timeout);
    RUN(test_default_compiler);
    make_rewrite_module();
    RUN(test_rewrite_output);
    RUN(test_rewrite_refuses_other_shapes);
    RUN(test_rewritten_module_runs);

    compile_cache_close(cache);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK_EQ(system(cmd), 0);
    free(hello.bytes);
    free(command.bytes);
    free(tiny.bytes);
    free(bad.bytes);
    free(rewrite_mod.bytes);
    cl_buf_fini(&err, 0);
    return th_done();
}
