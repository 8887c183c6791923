/* test_compile.c - the compile cache (compile.c): hello.wasm compiled into
 * a shared object whose cloister_fn_shim is right, a second compile served
 * from the cache, a tampered, moved or cut entry detected and rebuilt,
 * wasm2c's refusal passed on, concurrent compiles of one module done once,
 * progress reported, tools that hang or fail handled.
 *
 * Real compiles take seconds: this file does four (hello three times, a
 * small command module once); the failure cases use fake compilers (shell
 * scripts). */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/runtime/compile.h"
#include "../../../src/runtime/shim.h"

#include <dirent.h>
#include <errno.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

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

    compile_cache_close(cache);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK_EQ(system(cmd), 0);
    free(hello.bytes);
    free(command.bytes);
    free(tiny.bytes);
    free(bad.bytes);
    cl_buf_fini(&err, 0);
    return th_done();
}
