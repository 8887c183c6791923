/*
 * rt.c - the function runtime's core (runtime.h): deploy, remove, list,
 * logs, invoke, metrics; it owns the registry, the compile cache, the
 * executor pool, the lock table and the counters.
 *
 * Deploy, in order, touching nothing shared until the last step:
 *   1. names, size, kind ("\0asm" WebAssembly / "\x7fELF" native), SHA-256;
 *   2. wasm: module.c inspects and validates (its message is the user's),
 *      compile.c translates and compiles or finds the object in the cache,
 *      sandbox.c loads it and builds the memory template, running
 *      `_initialize` and `init` (a trap there fails the deploy with the
 *      trap's name) on a short-lived loader thread that owns a sandbox;
 *      native: native.c checks the ELF and starts its worker pool;
 *   3. commit, under admin_mu: module chunks, record and index into the
 *      store (sealed, reserved keys; registry.h), then the registry swap.
 *      A failure in the store undoes what this deploy wrote; the swap
 *      itself cannot fail.  The old version keeps serving the invocations
 *      that hold it and is released with the last of them.
 *
 * Invoke: look up (one shared-lock moment in the registry and a
 * reference), then either run it inline on the calling thread (below) or
 * copy the input into a job and queue it to the executor pool (exec.c).
 * Either way: build the rt_call (tenant namespace, store thread, locks,
 * owner id, deadline, log, output, limits), run it in the thread's
 * sandbox (or on a native worker), always end it with rt_host_call_end
 * (flushes the guest's last log line, releases every lock it still
 * holds), count, and call `done`.
 *
 * Inline invocations.  Handing an invocation to an executor and its
 * completion back costs two thread wake-ups, more than running a short
 * function (hello: ~10 us).  So a WebAssembly invocation runs on the
 * thread that called rt_invoke (the gateway's network worker) when
 *   - that thread can host a sandbox (a pthread; not main, not an
 *     executor) and hosts no other runtime's inline state;
 *   - the module imports nothing that waits (waiting_imports[]: lock
 *     waits, WASI sleeps), since a wait would hold every connection of
 *     that network worker;
 *   - its version is on probation no more: INLINE_PROBATION executor runs
 *     in a row of at most INLINE_MAX_NS wall time each (a longer one
 *     restarts the count), so a function that is always slow never runs
 *     inline;
 *   - and is not backing off: an inline run that used more than
 *     INLINE_MAX_NS of the thread's CPU time (CPU, so being preempted does
 *     not count) puts its version back on probation and keeps it off
 *     inline runs for INLINE_BACKOFF times that CPU time.
 * So, beyond its first millisecond, an inline run holds its network
 * worker (and every connection on it) at most 1/(INLINE_BACKOFF + 1) of
 * the time per version, however its code behaves; a runaway loop holds it
 * until the time-out, as it would hold an executor, and keeps the version
 * off for 16 time-outs.  The back-off is by time, not by count, because
 * this CPU time is noisy: on the shared 2-vCPU development VM, ~1 run in
 * 10,000 of hello (~10 us) measures 1-10 ms (the kernel waiting on the
 * other vCPU, most likely for TLB shoot-downs), which must cost little
 * (a few ms of executor runs), while a function that is slow for real
 * must not return every few requests.  Native functions always go to the
 * executors.  Limits, traps, time-outs and slot isolation are the
 * sandbox's (sandbox.h) and identical on every thread.  A thread's
 * inline state (an rt_worker: store thread, sandbox, rt_call) is made on
 * its first inline invocation and freed by a pthread key destructor when
 * the thread exits; inline_mu (process-wide: the state can outlive its
 * runtime) guards each state's runtime link and every runtime's list of
 * them.  Retired code's idle instances leave an inline sandbox at its
 * next invocation (retire_gen) or right after the run that used them.
 *
 * Threads and locks: admin_mu serialises the commit of deploys and
 * removals (and guards admin_kv, the store handle they use); it is held
 * while writing to the store and taking the registry's lock, never while
 * compiling or running guest code.  Lock order: admin_mu -> registry lock
 * -> store stripes; inline_mu -> the store's thread-list lock.  Counters
 * are relaxed atomics.
 *
 * Chunks: modules are kept in chunks of min(--max-value, 64 KiB); every
 * node of a cluster is expected to use the same --max-value.
 */
#include "runtime.h"

#include "call.h"
#include "compile.h"
#include "exec.h"
#include "fnlog.h"
#include "host.h"
#include "locks.h"
#include "module.h"
#include "native.h"
#include "registry.h"
#include "sandbox.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../kv/kv.h"
#include "../trust/platform.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char MOD[] = "runtime";

#define DEFAULT_MAX_MODULE ((size_t)16 << 20)
#define DEFAULT_MAX_PAGES 1024u
#define DEFAULT_TIMEOUT_MS 5000u
#define DEFAULT_MAX_OUTPUT ((size_t)4 << 20)
#define DEFAULT_MAX_INPUT ((size_t)4 << 20)
#define DEFAULT_NATIVE_WORKERS 2
#define MAX_CHUNK_BYTES ((size_t)64 << 10)
#define QUEUE_PER_THREAD 1024         /* invocations that may wait, per executor */
#define KEEP_IDLE 64                  /* idle instances an executor keeps */
#define INLINE_MAX_NS 1000000ull      /* a run longer than this (1 ms) is not short */
#define INLINE_PROBATION 8            /* short executor runs in a row before inline runs */
#define INLINE_BACKOFF 16             /* after an inline run of CPU time t > 1 ms: none for 16 t */
#define NATIVE_MEMORY_SLACK ((size_t)64 << 20) /* libc, loader, region: beyond linear memory */

/* Global counters (relaxed atomics). */
typedef struct rt_counters {
    uint64_t invocations, errors, traps, timeouts, crashes, from_template, deploys, inlined;
    uint64_t latency_count, latency_sum_ns;
    uint64_t latency[RT_LATENCY_BUCKETS];   /* per bucket (made cumulative when read) */
} rt_counters;

/* An executor thread's state, or an inline thread's (see "Inline
 * invocations"; then r is atomic and NULL once the runtime is gone, and
 * the fields after `call` are used). */
typedef struct rt_worker {
    struct rt *r;
    store_thread *st;
    kv_thread kv;               /* st, or the replicated store over it */
    rt_sandbox *sb;
    rt_call call;               /* reused by every invocation on this thread */
    struct rt_worker *prev, *next;  /* in r->inline_workers, under inline_mu */
    uint64_t trim_gen;          /* r->retire_gen when the sandbox was last trimmed */
} rt_worker;

/* v->code of a WebAssembly version: the loaded code, and what decides
 * whether its invocations may run inline. */
typedef struct rt_wasm_fn {
    rt_code *code;
    uint8_t waits;              /* imports one of waiting_imports[]: never inline */
    uint8_t retired;            /* atomic: replaced or removed */
    uint32_t short_runs;        /* atomic: executor runs in a row under INLINE_MAX_NS */
    uint64_t backoff_until;     /* atomic: no inline runs before (CLOCK_MONOTONIC ns) */
} rt_wasm_fn;

struct rt {
    rt_config cfg;              /* defaults applied; strings below */
    char *state_dir;
    char *compile_error;        /* why WebAssembly is unavailable (no cache), or NULL */
    store *store;
    size_t max_value, chunk_bytes;
    rt_registry *reg;
    rt_locks *locks;
    compile_cache *cache;       /* NULL: WebAssembly deploys are refused */
    rt_exec *exec;
    int nworkers;
    rt_worker **workers;        /* [nworkers], set by each executor (atomic pointer) */
    pthread_mutex_t admin_mu;
    store_thread *admin_st;     /* under admin_mu */
    kv_thread admin_kv;         /* admin_st as kv (replicated on a cluster); under admin_mu */
    uint64_t next_owner;        /* atomic: lock owner ids, never 0; random high half, so
                                   ids of different nodes of a cluster never meet */
    uint64_t retire_gen;        /* atomic: versions retired so far */
    rt_worker *inline_workers;  /* under inline_mu: threads with inline state for r */
    /* Cluster: the follower thread (see "Following the cluster"). */
    pthread_t follower;
    int follower_started;
    int follower_stop;          /* under follow_mu */
    pthread_mutex_t follow_mu;
    pthread_cond_t follow_cv;
    rt_counters c;
};

/* One queued invocation; the input follows. */
typedef struct rt_inv {
    rt_job job;                 /* first: exec.c hands it back */
    rt *r;
    rt_fn_ver *ver;             /* referenced */
    cl_buf *output;
    rt_done_fn done;
    void *arg;
    uint64_t submitted_ns;
    size_t inlen;
    uint8_t input[];
} rt_inv;

/* ---- small helpers --------------------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void add(uint64_t *p, uint64_t n)
{
    __atomic_add_fetch(p, n, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Replaces err's contents with a formatted message (err may be NULL). */
__attribute__((format(printf, 3, 4)))
static int fail(cl_buf *err, int rc, const char *fmt, ...)
{
    if (!err)
        return rc;
    err->len = 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cl_buf_append(err, msg, strlen(msg)) != CL_OK)
        err->len = 0;
    return rc;
}

/* Removes a trailing newline from a message another module appended. */
static void trim_message(cl_buf *err)
{
    while (err && err->len && (err->data[err->len - 1] == '\n' || err->data[err->len - 1] == '\r'))
        err->len--;
}

static void progress_report(rt_progress_fn fn, void *arg, const char *stage, int pct)
{
    if (fn)
        fn(arg, stage, pct);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    struct stat stt;
    return stat(buf, &stt) == 0 && S_ISDIR(stt.st_mode) ? 0 : -1;
}

/* A worker's handle on the store: its store thread, and the kv view over
 * it that host calls use (the replicated store on a cluster). */
static int worker_store_open(rt *r, rt_worker *w)
{
    int rc = store_thread_create(r->store, &w->st);
    if (rc == CL_OK)
        kv_thread_init(&w->kv, r->store, w->st, r->cfg.repl);
    return rc;
}

static void worker_store_close(rt_worker *w)
{
    if (!w->st)
        return;
    kv_thread_fini(&w->kv);
    store_thread_destroy(w->st);
    w->st = NULL;
}

/* Fills an rt_call for one run of fn's code on this thread. */
static void call_prepare(rt *r, rt_call *c, kv_thread *kv, const rt_fn *fn,
                         const uint8_t *input, size_t inlen, cl_buf *output)
{
    memset(c, 0, offsetof(rt_call, wset));   /* wset entries count only up to wset_n */
    c->input = input;
    c->input_len = inlen;
    c->output = output;
    c->max_output = r->cfg.max_output_bytes;
    c->kv = kv;
    size_t tl = strlen(fn->tenant);
    c->ns[0] = RT_RESERVED_KEY_BYTE;
    c->ns[1] = 't';
    memcpy(c->ns + 2, fn->tenant, tl);
    c->ns[2 + tl] = '/';
    c->ns_len = tl + 3;
    c->max_value = r->max_value;
    c->locks = r->locks;
    c->owner = __atomic_add_fetch(&r->next_owner, 1, __ATOMIC_RELAXED);
    c->deadline_ns = now_ns() + (uint64_t)r->cfg.timeout_ms * 1000000ull;
    c->log = fn->log;
}

/* ---- releasing code ----------------------------------------------------------- */

static void wasm_code_release(void *code)
{
    rt_wasm_fn *wf = code;
    rt_code_unref(wf->code);
    free(wf);
}

static void native_code_release(void *code)
{
    native_pool_destroy(code);
}

/* A version left the registry (replaced or removed): its WebAssembly
 * instances idling in the sandboxes are dropped at the executors' next
 * housekeeping and at each inline thread's next invocation, so the
 * module unloads once its last invocation ends. */
static void version_retire(rt *r, rt_fn_ver *v)
{
    if (v && v->kind == RT_KIND_WASM && v->code) {
        rt_wasm_fn *wf = v->code;
        rt_code_retire(wf->code);
        __atomic_store_n(&wf->retired, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&r->retire_gen, 1, __ATOMIC_RELEASE);
        rt_exec_kick(r->exec);
    }
}

/* Imports whose host functions can wait rather than compute: a module
 * importing one never runs inline.  When kv_* calls come to wait on other
 * nodes (replication), they belong here too. */
static const char *const waiting_imports[][2] = {
    { "cloister", "lock" },
    { "wasi_snapshot_preview1", "poll_oneoff" },
};

static int module_waits(const rt *r, const wasm_module_info *mi)
{
    for (uint32_t i = 0; i < mi->nimports; i++) {
        /* On a cluster every store call waits for a quorum of replicas. */
        if (r->cfg.repl && strcmp(mi->imports[i].abi->module, "cloister") == 0 &&
            strncmp(mi->imports[i].abi->name, "kv_", 3) == 0)
            return 1;
        for (size_t k = 0; k < sizeof waiting_imports / sizeof waiting_imports[0]; k++)
            if (strcmp(mi->imports[i].abi->module, waiting_imports[k][0]) == 0 &&
                strcmp(mi->imports[i].abi->name, waiting_imports[k][1]) == 0)
                return 1;
    }
    return 0;
}

/* ---- loading a version's code --------------------------------------------------- */

typedef struct load_task {
    rt *r;
    rt_fn_ver *v;
    const char *path;
    int waits;                  /* module_waits() */
    cl_buf *err;
    int rc;
} load_task;

/* The loader thread: a sandbox of its own to build the memory template
 * in (rt_code_load runs `_initialize` and `init` as guest code, which
 * needs a sandbox on a thread that is not main). */
static void *load_main(void *arg)
{
    load_task *t = arg;
    rt *r = t->r;
    rt_sandbox *sb = NULL;
    store_thread *st = NULL;
    kv_thread kv;
    rt_call *c = NULL;
    cl_buf out;
    cl_buf_init(&out);
    pthread_setname_np(pthread_self(), "cl-load");

    t->rc = rt_sandbox_create(NULL, &sb);
    if (t->rc != CL_OK) {
        fail(t->err, t->rc, "cannot set up a sandbox to load the module: %s", cl_strerror(t->rc));
        goto out;
    }
    t->rc = store_thread_create(r->store, &st);
    if (t->rc != CL_OK) {
        fail(t->err, t->rc, "out of memory");
        goto out;
    }
    kv_thread_init(&kv, r->store, st, r->cfg.repl);
    c = malloc(sizeof *c);
    if (!c) {
        t->rc = fail(t->err, CL_ENOMEM, "out of memory");
        goto out;
    }
    call_prepare(r, c, &kv, t->v->fn, NULL, 0, &out);
    rt_limits lim = { .max_memory_pages = r->cfg.max_memory_pages, .timeout_ms = r->cfg.timeout_ms };
    rt_code *code = NULL;
    if (t->err)
        t->err->len = 0;
    t->rc = rt_code_load(sb, t->path, &lim, c, &code, t->err);
    rt_host_call_end(c);
    if (t->rc == CL_OK) {
        rt_wasm_fn *wf = calloc(1, sizeof *wf);
        if (!wf) {
            rt_code_unref(code);
            t->rc = fail(t->err, CL_ENOMEM, "out of memory");
            goto out;
        }
        wf->code = code;
        wf->waits = (uint8_t)t->waits;
        t->v->code = wf;
        t->v->code_release = wasm_code_release;
    }
out:
    free(c);
    cl_buf_fini(&out, 1);
    if (st)
        kv_thread_fini(&kv);
    store_thread_destroy(st);
    rt_sandbox_destroy(sb);
    return NULL;
}

/*
 * The path to dlopen() the artifact by.  dlopen() recognises a library
 * it already has by its path *before* looking at the file, and the
 * artifact's path is "/proc/self/fd/N": once an earlier artifact that
 * had the same fd number is closed, a later module would be handed the
 * earlier module's code.  So while a library is loaded under this path,
 * the artifact is dup()ed to higher numbers until the path is new; the
 * dup (returned, or -1) stays open until the load is done, so no other
 * load can use the number meanwhile.
 */
static int unique_load_path(const compile_artifact *art, char path[COMPILE_PATH_MAX])
{
    compile_artifact_path(art, path);
    int extra = -1, fd = art->fd;
    for (int tries = 0; tries < 4096; tries++) {
        void *h = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
        if (!h)
            break;
        dlclose(h);
        int nfd = fcntl(art->fd, F_DUPFD_CLOEXEC, fd + 1);
        if (nfd < 0)
            break;                  /* rt_code_load will then fail its shim check or load */
        if (extra >= 0)
            close(extra);
        extra = fd = nfd;
        compile_artifact path_art = { .fd = nfd };
        compile_artifact_path(&path_art, path);
    }
    return extra;
}

static int load_wasm(rt *r, rt_fn_ver *v, const uint8_t *module, size_t len,
                     rt_progress_fn progress, void *parg, cl_buf *err)
{
    if (!r->cache)
        return fail(err, CL_EIO, "WebAssembly functions are unavailable on this node: %s",
                    r->compile_error ? r->compile_error : "no compile cache");
    wasm_module_limits lim = { .max_module_bytes = r->cfg.max_module_bytes,
                               .max_memory_pages = r->cfg.max_memory_pages };
    wasm_module_info mi;
    memset(&mi, 0, sizeof mi);
    if (err)
        err->len = 0;
    int rc = wasm_module_inspect(module, len, &lim, &mi, err);
    if (rc != CL_OK) {
        wasm_module_info_fini(&mi);
        if (err && err->len == 0)
            fail(err, rc, "the module is not valid: %s", cl_strerror(rc));
        return rc;
    }
    progress_report(progress, parg, "validate", 100);
    int waits = module_waits(r, &mi);

    compile_artifact art = { .fd = -1 };
    rc = compile_module(r->cache, v->sha256, module, len, &mi, progress, parg, &art, err);
    wasm_module_info_fini(&mi);
    if (rc != CL_OK) {
        if (err && err->len == 0)
            fail(err, rc, "compiling the module failed: %s", cl_strerror(rc));
        return rc;
    }
    v->cached = art.cached;
    progress_report(progress, parg, "load", 0);

    char path[COMPILE_PATH_MAX];
    int extra_fd = unique_load_path(&art, path);
    load_task t = { .r = r, .v = v, .path = path, .waits = waits, .err = err, .rc = CL_OK };
    pthread_t tid;
    if (pthread_create(&tid, NULL, load_main, &t) != 0) {
        if (extra_fd >= 0)
            close(extra_fd);
        compile_artifact_release(&art);
        return fail(err, CL_ENOMEM, "cannot start a thread to load the module");
    }
    pthread_join(tid, NULL);
    if (extra_fd >= 0)
        close(extra_fd);
    compile_artifact_release(&art);
    if (t.rc != CL_OK && err && err->len == 0)
        fail(err, t.rc, "loading the module failed: %s", cl_strerror(t.rc));
    return t.rc;
}

static int load_native(rt *r, rt_fn_ver *v, const uint8_t *so, size_t len,
                       rt_progress_fn progress, void *parg, cl_buf *err)
{
    if (err)
        err->len = 0;
    int rc = native_validate(so, len, err);
    if (rc != CL_OK)
        return rc;
    progress_report(progress, parg, "validate", 100);
    progress_report(progress, parg, "load", 0);
    native_config nc = {
        .workers = r->cfg.native_workers,
        .max_input = r->cfg.max_input_bytes,
        .max_output = r->cfg.max_output_bytes,
        .max_value = r->max_value,
        .max_memory = (size_t)r->cfg.max_memory_pages * 65536 + NATIVE_MEMORY_SLACK,
        .timeout_ms = r->cfg.timeout_ms,
        .log = v->fn->log,
    };
    native_pool *pool = NULL;
    rc = native_pool_create(&nc, so, len, &pool, err);
    if (rc != CL_OK)
        return rc;
    v->code = pool;
    v->code_release = native_code_release;
    return CL_OK;
}

/* Loads v's code from the module bytes (kind already set in v). */
static int version_load(rt *r, rt_fn_ver *v, const uint8_t *module, size_t len,
                        rt_progress_fn progress, void *parg, cl_buf *err)
{
    int rc = v->kind == RT_KIND_WASM ? load_wasm(r, v, module, len, progress, parg, err)
                                     : load_native(r, v, module, len, progress, parg, err);
    trim_message(err);
    if (rc == CL_OK)
        progress_report(progress, parg, "template", 100);
    return rc;
}

/* ---- commit: store, then registry ----------------------------------------------- */

static void record_of(const rt_fn_ver *v, rt_record *rec)
{
    memset(rec, 0, sizeof *rec);
    snprintf(rec->tenant, sizeof rec->tenant, "%s", v->fn->tenant);
    snprintf(rec->name, sizeof rec->name, "%s", v->fn->name);
    rec->kind = v->kind;
    memcpy(rec->sha256, v->sha256, 32);
    rec->module_bytes = v->module_bytes;
    rec->chunk_bytes = v->chunk_bytes;
    rec->deployed_at = v->deployed_at;
}

static const char *store_why(int rc)
{
    return rc == CL_EFULL ? "the store is full (raise --memory)"
         : rc == CL_ETOOBIG ? "a value is larger than the store's --max-value"
         : cl_strerror(rc);
}

/* Makes v (loaded) the current version; takes over the caller's
 * reference to v on CL_OK.  On failure nothing has changed. */
static int commit(rt *r, rt_fn_ver *v, const uint8_t *module, size_t len, cl_buf *err)
{
    const char *tenant = v->fn->tenant, *name = v->fn->name;
    rt_record rec;
    record_of(v, &rec);
    rt_fn_ver *old = NULL;

    pthread_mutex_lock(&r->admin_mu);
    kv_thread *st = &r->admin_kv;
    rt_fn_ver *cur = rt_registry_get(r->reg, tenant, name);
    int rc = rt_persist_put_module(st, v->sha256, module, len, v->chunk_bytes);
    if (rc != CL_OK) {
        fail(err, rc, "cannot keep the module in the store: %s", store_why(rc));
        goto out;
    }
    rc = rt_persist_put_record(st, &rec);
    if (rc == CL_OK) {
        rc = rt_persist_index_update(st, tenant, name, 1);
        if (rc != CL_OK) {
            /* Put the previous record back (or none). */
            if (cur) {
                rt_record prev;
                record_of(cur, &prev);
                (void)rt_persist_put_record(st, &prev);
            } else {
                (void)rt_persist_delete_record(st, tenant, name);
            }
        }
    }
    if (rc != CL_OK) {
        fail(err, rc, "cannot record the function in the store: %s", store_why(rc));
        if (!rt_registry_module_in_use(r->reg, v->sha256, "", ""))
            rt_persist_delete_module(st, v->sha256, len, v->chunk_bytes);
        goto out;
    }

    rt_registry_install(r->reg, v, &old);
    if (old) {
        version_retire(r, old);
        if (memcmp(old->sha256, v->sha256, 32) != 0 &&
            !rt_registry_module_in_use(r->reg, old->sha256, "", ""))
            rt_persist_delete_module(st, old->sha256, old->module_bytes, old->chunk_bytes);
    }
out:
    pthread_mutex_unlock(&r->admin_mu);
    rt_fn_ver_unref(cur);
    rt_fn_ver_unref(old);
    return rc;
}

/* ---- deploy ---------------------------------------------------------------------- */

static int kind_of(const uint8_t *m, size_t len, rt_kind *kind)
{
    if (len >= 4 && memcmp(m, "\0asm", 4) == 0)
        *kind = RT_KIND_WASM;
    else if (len >= 4 && memcmp(m, "\x7f" "ELF", 4) == 0)
        *kind = RT_KIND_NATIVE;
    else
        return -1;
    return 0;
}

static int sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 ? CL_OK : CL_ECRYPTO;
}

int rt_deploy(rt *r, const char *tenant, const char *name,
              const uint8_t *module, size_t len,
              rt_progress_fn progress, void *progress_arg,
              rt_fn_info *info, cl_buf *err)
{
    if (!rt_name_valid(tenant))
        return fail(err, CL_EINVAL, "invalid tenant name: expected 1 to %d of A-Z a-z 0-9 _ . -",
                    RT_NAME_MAX);
    if (!rt_name_valid(name))
        return fail(err, CL_EINVAL, "invalid function name: expected 1 to %d of A-Z a-z 0-9 _ . -",
                    RT_NAME_MAX);
    if (len == 0)
        return fail(err, CL_EINVAL, "the module is empty");
    if (len > r->cfg.max_module_bytes)
        return fail(err, CL_ETOOBIG, "the module is %zu bytes; this node accepts at most %zu",
                    len, r->cfg.max_module_bytes);
    rt_kind kind;
    if (kind_of(module, len, &kind) != 0)
        return fail(err, CL_EINVAL, "not a WebAssembly module (which starts with \\0asm) nor a "
                                    "native shared object (ELF)");
    progress_report(progress, progress_arg, "validate", 0);

    rt_fn_ver *v = rt_fn_ver_new();
    if (!v)
        return fail(err, CL_ENOMEM, "out of memory");
    v->fn = rt_registry_fn_for(r->reg, tenant, name);
    if (!v->fn) {
        rt_fn_ver_unref(v);
        return fail(err, CL_ENOMEM, "out of memory");
    }
    v->kind = kind;
    v->module_bytes = len;
    v->chunk_bytes = r->chunk_bytes;
    v->deployed_at = (int64_t)time(NULL);
    int rc = sha256(module, len, v->sha256);
    if (rc != CL_OK) {
        rt_fn_ver_unref(v);
        return fail(err, rc, "cannot hash the module");
    }

    rc = version_load(r, v, module, len, progress, progress_arg, err);
    if (rc == CL_OK) {
        rt_fn_info fi;
        rt_fn_ver_info(v, &fi);
        rc = commit(r, v, module, len, err);   /* takes v on success */
        if (rc == CL_OK) {
            add(&r->c.deploys, 1);
            if (info)
                *info = fi;
            char hex[65];
            rt_sha256_hex(fi.hash, hex);
            cl_log_info(MOD, "deployed %s/%s: %s, sha256 %.16s, %zu bytes%s", tenant, name,
                        kind == RT_KIND_WASM ? "wasm" : "native", hex, len,
                        fi.cached ? " (cached code)" : "");
            return CL_OK;
        }
    }
    rt_fn_ver_unref(v);      /* its code (if loaded) goes with it */
    return rc;
}

static rt_fn_ver *lookup_or_load(rt *r, const char *tenant, const char *name);

/* ---- remove, list, logs ------------------------------------------------------------- */

int rt_remove(rt *r, const char *tenant, const char *name)
{
    if (!rt_name_valid(tenant) || !rt_name_valid(name))
        return CL_ENOTFOUND;
    rt_fn_ver *old = NULL;
    rt_fn_ver *cur = lookup_or_load(r, tenant, name);
    pthread_mutex_lock(&r->admin_mu);
    int rc = cur ? CL_OK : CL_ENOTFOUND;
    if (rc == CL_OK)
        rc = rt_persist_index_update(&r->admin_kv, tenant, name, 0);
    if (rc == CL_OK) {
        (void)rt_persist_delete_record(&r->admin_kv, tenant, name);
        if (rt_registry_remove(r->reg, tenant, name, &old) == CL_OK && old) {
            version_retire(r, old);
            /* On a cluster another node may run another name with this
             * module: its chunks stay (a small leak, noted in the docs). */
            if (!r->cfg.repl && !rt_registry_module_in_use(r->reg, old->sha256, "", ""))
                rt_persist_delete_module(&r->admin_kv, old->sha256, old->module_bytes,
                                         old->chunk_bytes);
        }
        cl_log_info(MOD, "removed %s/%s", tenant, name);
    }
    pthread_mutex_unlock(&r->admin_mu);
    rt_fn_ver_unref(cur);
    rt_fn_ver_unref(old);
    return rc;
}

void rt_list(rt *r, void (*fn)(void *arg, const rt_fn_info *info), void *arg)
{
    rt_fn_ver **all;
    size_t n = rt_registry_snapshot(r->reg, &all);
    for (size_t i = 0; i < n; i++) {
        rt_fn_info info;
        rt_fn_ver_info(all[i], &info);
        fn(arg, &info);
        rt_fn_ver_unref(all[i]);
    }
    free(all);
}

int rt_logs(rt *r, const char *tenant, const char *name, cl_buf *out)
{
    if (!rt_name_valid(tenant) || !rt_name_valid(name))
        return CL_ENOTFOUND;
    rt_fn *fn = rt_registry_get_fn(r->reg, tenant, name);
    if (!fn)
        return CL_ENOTFOUND;
    int rc = fn->log ? rt_fnlog_read(fn->log, out) : CL_OK;
    rt_fn_unref(fn);
    return rc;
}

/* ---- invoke -------------------------------------------------------------------------- */

static void log_failure(const rt_fn *fn, const rt_result *res)
{
    if (!fn->log)
        return;
    char line[256];
    int n;
    switch (res->status) {
    case RT_FN_ERROR:
        n = snprintf(line, sizeof line, "invocation failed: handle returned %d", (int)res->code);
        break;
    case RT_TRAP:
    case RT_TIMEOUT:
    case RT_CRASH:
    case RT_OVERLOADED:
    case RT_INTERNAL:
    case RT_TOO_LARGE:
        n = snprintf(line, sizeof line, "invocation failed: %s",
                     res->detail[0] ? res->detail
                     : res->status == RT_TIMEOUT ? "timed out"
                     : res->status == RT_OVERLOADED ? "no executor capacity"
                     : res->status == RT_TOO_LARGE ? "request body too large"
                     : "internal error");
        break;
    default:
        return;
    }
    rt_fnlog_append(fn->log, (const uint8_t *)line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Counts one finished (or refused) invocation of v. */
static void account(rt *r, rt_fn_ver *v, const rt_result *res, uint64_t elapsed_ns, int ran)
{
    add(&v->fn->invocations, 1);
    add(&r->c.invocations, 1);
    if (res->status != RT_OK) {
        add(&v->fn->errors, 1);
        add(&r->c.errors, 1);
        log_failure(v->fn, res);
    }
    if (res->status == RT_TRAP)
        add(&r->c.traps, 1);
    else if (res->status == RT_TIMEOUT)
        add(&r->c.timeouts, 1);
    else if (res->status == RT_CRASH)
        add(&r->c.crashes, 1);
    if (!ran)
        return;
    if (res->from_template)
        add(&r->c.from_template, 1);
    /* Bucket i holds latencies <= 10us * 2^i; the last one, the rest. */
    int b = 0;
    uint64_t bound = 10000;
    while (b < RT_LATENCY_BUCKETS - 1 && elapsed_ns > bound) {
        b++;
        bound <<= 1;
    }
    add(&r->c.latency[b], 1);
    add(&r->c.latency_count, 1);
    add(&r->c.latency_sum_ns, elapsed_ns);
}

/* Runs one invocation of v on this thread with w's store thread and
 * sandbox (WebAssembly) or on a native worker; fills res. */
static void call_run(rt *r, rt_worker *w, rt_fn_ver *v, const uint8_t *input, size_t inlen,
                     cl_buf *output, rt_result *res)
{
    rt_call *c = &w->call;
    memset(res, 0, sizeof *res);
    call_prepare(r, c, &w->kv, v->fn, input, inlen, output);
    if (v->kind == RT_KIND_WASM)
        (void)rt_sandbox_call(w->sb, ((rt_wasm_fn *)v->code)->code, c, res); /* res says what happened */
    else
        native_invoke(v->code, c, res);
    rt_host_call_end(c);
}

/* Counts, reports and lets go of a finished invocation. */
static void call_finish(rt *r, rt_fn_ver *v, rt_result *res, uint64_t elapsed,
                        rt_done_fn done, void *arg)
{
    if (res->duration_ns == 0)
        res->duration_ns = elapsed;
    account(r, v, res, elapsed, 1);
    done(arg, res);
    rt_fn_ver_unref(v);
}

static void invocation_run(rt_job *job, void *state)
{
    rt_inv *inv = (rt_inv *)job;
    rt_worker *w = state;
    rt_fn_ver *v = inv->ver;
    rt_result res;

    call_run(inv->r, w, v, inv->input, inv->inlen, inv->output, &res);
    if (v->kind == RT_KIND_WASM) {
        /* Probation for inline runs: short executor runs in a row. */
        rt_wasm_fn *wf = v->code;
        uint32_t n = __atomic_load_n(&wf->short_runs, __ATOMIC_RELAXED);
        if (res.duration_ns > INLINE_MAX_NS) {
            if (n)
                __atomic_store_n(&wf->short_runs, 0, __ATOMIC_RELAXED);
        } else if (n < INLINE_PROBATION) {
            __atomic_add_fetch(&wf->short_runs, 1, __ATOMIC_RELAXED);
        }
    }
    call_finish(inv->r, v, &res, now_ns() - inv->submitted_ns, inv->done, inv->arg);
    free(inv);
}

/* ---- inline invocations (see the top of the file) ------------------------------------ */

static pthread_mutex_t inline_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t inline_once = PTHREAD_ONCE_INIT;
static pthread_key_t inline_key;            /* this thread's rt_worker: freed at its exit */
static int inline_key_ok;
static __thread rt_worker *inline_self;     /* the same, for a quick look */
static __thread uint8_t inline_unable;      /* this thread cannot run invocations inline */

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int inline_allowed(const rt_wasm_fn *wf, uint64_t now)
{
    return !wf->waits && __atomic_load_n(&wf->short_runs, __ATOMIC_RELAXED) >= INLINE_PROBATION &&
           now >= __atomic_load_n(&wf->backoff_until, __ATOMIC_RELAXED);
}

/* Frees this thread's inline state (its own thread: the sandbox is
 * thread-bound).  The store thread goes under inline_mu, so a runtime
 * being destroyed meanwhile cannot take its store away first. */
static void inline_worker_free(void *arg)
{
    rt_worker *w = arg;
    pthread_mutex_lock(&inline_mu);
    rt *r = __atomic_load_n(&w->r, __ATOMIC_RELAXED);
    if (r) {
        if (w->prev)
            w->prev->next = w->next;
        else
            r->inline_workers = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    worker_store_close(w);
    pthread_mutex_unlock(&inline_mu);
    rt_sandbox_destroy(w->sb);
    free(w);
    inline_self = NULL;
}

static void inline_key_create(void)
{
    inline_key_ok = pthread_key_create(&inline_key, inline_worker_free) == 0;
}

/* This thread's inline state for r, made on first use; NULL when the
 * thread cannot run r's invocations inline. */
static rt_worker *inline_worker(rt *r)
{
    rt_worker *w = inline_self;
    if (w) {
        rt *owner = __atomic_load_n(&w->r, __ATOMIC_ACQUIRE);
        if (owner == r)
            return w;
        if (owner)
            return NULL;                 /* it serves another runtime */
        pthread_setspecific(inline_key, NULL);
        inline_worker_free(w);           /* its runtime is gone */
    }
    if (inline_unable)
        return NULL;
    inline_unable = 1;                   /* until this succeeds */
    pthread_once(&inline_once, inline_key_create);
    if (!inline_key_ok || getpid() == gettid())   /* main: no sandbox (trap.h) */
        return NULL;
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    if (worker_store_open(r, w) != CL_OK || rt_sandbox_create(NULL, &w->sb) != CL_OK ||
        pthread_setspecific(inline_key, w) != 0) {
        rt_sandbox_destroy(w->sb);
        worker_store_close(w);
        free(w);
        return NULL;
    }
    w->trim_gen = __atomic_load_n(&r->retire_gen, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&inline_mu);
    w->next = r->inline_workers;
    if (w->next)
        w->next->prev = w;
    r->inline_workers = w;
    __atomic_store_n(&w->r, r, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&inline_mu);
    inline_unable = 0;
    inline_self = w;
    return w;
}

/* rt_destroy: the inline states of threads still alive lose their store
 * thread and their runtime now; each thread frees the rest (its sandbox)
 * when it exits or invokes again. */
static void inline_workers_orphan(rt *r)
{
    int n = 0;
    pthread_mutex_lock(&inline_mu);
    for (rt_worker *w = r->inline_workers, *next; w; w = next) {
        next = w->next;
        worker_store_close(w);
        w->prev = w->next = NULL;
        __atomic_store_n(&w->r, NULL, __ATOMIC_RELEASE);
        n++;
    }
    r->inline_workers = NULL;
    pthread_mutex_unlock(&inline_mu);
    if (n)
        cl_log_warn(MOD, "%d threads that ran invocations inline outlive the runtime; "
                         "each frees its sandbox when it exits", n);
}

/* Runs v (allowed inline) on this thread, with w, and completes it.
 * `start` is now_ns(). */
static void inline_run(rt *r, rt_worker *w, rt_fn_ver *v, const uint8_t *input, size_t inlen,
                       cl_buf *output, rt_done_fn done, void *arg, uint64_t start)
{
    rt_wasm_fn *wf = v->code;
    uint64_t gen = __atomic_load_n(&r->retire_gen, __ATOMIC_ACQUIRE);
    if (gen != w->trim_gen) {            /* drop idle instances of retired code */
        w->trim_gen = gen;
        rt_sandbox_trim(w->sb, KEEP_IDLE);
    }
    uint64_t cpu = thread_cpu_ns();
    rt_result res;
    call_run(r, w, v, input, inlen, output, &res);
    uint64_t end = now_ns();
    /* CPU time <= wall time: read the clock again only when it matters. */
    cpu = end - start > INLINE_MAX_NS ? thread_cpu_ns() - cpu : 0;
    if (cpu > INLINE_MAX_NS) {           /* probation again, and a back-off */
        __atomic_store_n(&wf->short_runs, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&wf->backoff_until, end + INLINE_BACKOFF * cpu, __ATOMIC_RELAXED);
        cl_log((cpu > 100 * INLINE_MAX_NS) ? CL_LOG_INFO : CL_LOG_DEBUG, MOD,
               "%s/%s used %.1f ms of CPU inline; its invocations run on the executor threads "
               "for %.1f s", v->fn->tenant, v->fn->name, cpu / 1e6, INLINE_BACKOFF * cpu / 1e9);
    }
    if (__atomic_load_n(&wf->retired, __ATOMIC_ACQUIRE))
        rt_sandbox_trim(w->sb, KEEP_IDLE); /* its idle instance goes now */
    add(&r->c.inlined, 1);
    call_finish(r, v, &res, end - start, done, arg);
}

/* Completes an invocation that never reached an executor. */
static int invoke_refused(rt *r, rt_fn_ver *v, rt_status status, const char *detail,
                          rt_done_fn done, void *arg)
{
    rt_result res;
    memset(&res, 0, sizeof res);
    res.status = status;
    snprintf(res.detail, sizeof res.detail, "%s", detail);
    if (v) {
        account(r, v, &res, 0, 0);
        rt_fn_ver_unref(v);
    }
    done(arg, &res);
    return CL_OK;
}

int rt_invoke(rt *r, const char *tenant, const char *name,
              const uint8_t *input, size_t inlen, cl_buf *output,
              rt_done_fn done, void *arg)
{
    char detail[sizeof ((rt_result *)0)->detail];
    rt_fn_ver *v = rt_name_valid(tenant) && rt_name_valid(name)
                       ? lookup_or_load(r, tenant, name) : NULL;
    if (!v) {
        snprintf(detail, sizeof detail, "no function %.64s", name);
        return invoke_refused(r, NULL, RT_NOT_FOUND, detail, done, arg);
    }
    if (inlen > r->cfg.max_input_bytes) {
        snprintf(detail, sizeof detail, "request body of %zu bytes; the limit is %zu", inlen,
                 r->cfg.max_input_bytes);
        return invoke_refused(r, v, RT_TOO_LARGE, detail, done, arg);
    }
    uint64_t now = now_ns();
    if (v->kind == RT_KIND_WASM && !r->cfg.no_inline && inline_allowed(v->code, now)) {
        rt_worker *w = inline_worker(r);
        if (w) {
            inline_run(r, w, v, input, inlen, output, done, arg, now);
            return CL_OK;
        }
    }
    rt_inv *inv = malloc(sizeof *inv + inlen);
    if (!inv)
        return invoke_refused(r, v, RT_INTERNAL, "out of memory", done, arg);
    inv->r = r;
    inv->ver = v;
    inv->output = output;
    inv->done = done;
    inv->arg = arg;
    inv->inlen = inlen;
    if (inlen)
        memcpy(inv->input, input, inlen);
    inv->job.run = invocation_run;
    inv->submitted_ns = now;
    int rc = rt_exec_submit(r->exec, &inv->job);
    if (rc == CL_OK)
        return CL_OK;
    free(inv);
    if (rc == CL_EAGAIN) {
        snprintf(detail, sizeof detail, "all %d executor threads are busy and the queue is full",
                 r->nworkers);
        return invoke_refused(r, v, RT_OVERLOADED, detail, done, arg);
    }
    return invoke_refused(r, v, RT_INTERNAL, "the runtime is shutting down", done, arg);
}

typedef struct invoke_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    rt_result res;
} invoke_waiter;

static void invoke_wait_done(void *arg, const rt_result *res)
{
    invoke_waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->res = *res;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int rt_invoke_wait(rt *r, const char *tenant, const char *name,
                   const uint8_t *input, size_t inlen, cl_buf *output, rt_result *res)
{
    invoke_waiter w = { .done = 0 };
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = rt_invoke(r, tenant, name, input, inlen, output, invoke_wait_done, &w);
    if (rc == CL_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        *res = w.res;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

/* ---- metrics ------------------------------------------------------------------------- */

void rt_get_metrics(rt *r, rt_metrics *out)
{
    memset(out, 0, sizeof *out);
    out->invocations = load(&r->c.invocations);
    out->errors = load(&r->c.errors);
    out->traps = load(&r->c.traps);
    out->timeouts = load(&r->c.timeouts);
    out->crashes = load(&r->c.crashes);
    out->instances_from_template = load(&r->c.from_template);
    out->deploys = load(&r->c.deploys);
    if (r->cache) {
        compile_stats cs;
        compile_cache_stats(r->cache, &cs);
        out->compiles = cs.compiles;
        out->cache_hits = cs.hits;
    }
    uint64_t sum = 0;
    for (int i = 0; i < RT_LATENCY_BUCKETS; i++) {
        sum += load(&r->c.latency[i]);
        out->latency_buckets[i] = sum;
    }
    out->latency_count = load(&r->c.latency_count);
    out->latency_sum_ns = load(&r->c.latency_sum_ns);
    out->inline_invocations = load(&r->c.inlined);
    out->functions = rt_registry_count(r->reg);
    rt_sandbox_stats ss;
    for (int i = 0; i < r->nworkers; i++) {
        rt_worker *w = __atomic_load_n(&r->workers[i], __ATOMIC_ACQUIRE);
        if (!w)
            continue;
        rt_sandbox_get_stats(w->sb, &ss);
        out->idle_instances += ss.idle;
        out->slots += ss.slots;
    }
    pthread_mutex_lock(&inline_mu);
    for (rt_worker *w = r->inline_workers; w; w = w->next) {
        rt_sandbox_get_stats(w->sb, &ss);
        out->idle_instances += ss.idle;
        out->slots += ss.slots;
    }
    pthread_mutex_unlock(&inline_mu);
}

/* ---- executor threads ------------------------------------------------------------------ */

static void *worker_init(void *arg, int index)
{
    rt *r = arg;
    rt_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->r = r;
    int rc = worker_store_open(r, w);
    if (rc == CL_OK)
        rc = rt_sandbox_create(NULL, &w->sb);
    if (rc != CL_OK) {
        cl_log_error(MOD, "executor %d cannot start: %s", index, cl_strerror(rc));
        worker_store_close(w);
        free(w);
        return NULL;
    }
    __atomic_store_n(&r->workers[index], w, __ATOMIC_RELEASE);
    return w;
}

static void worker_fini(void *arg, void *state)
{
    rt *r = arg;
    rt_worker *w = state;
    for (int i = 0; i < r->nworkers; i++)
        if (__atomic_load_n(&r->workers[i], __ATOMIC_ACQUIRE) == w)
            __atomic_store_n(&r->workers[i], NULL, __ATOMIC_RELEASE);
    rt_sandbox_destroy(w->sb);
    worker_store_close(w);
    free(w);
}

static void worker_idle(void *arg, void *state)
{
    rt_worker *w = state;
    rt_sandbox_trim(w->sb, KEEP_IDLE);
}

/* ---- reload from the store --------------------------------------------------------------- */

typedef struct name_list {
    size_t n, cap;
    char (*names)[2][RT_NAME_MAX + 1];
} name_list;

static void collect_name(void *arg, const char *tenant, const char *name)
{
    name_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *p = realloc(l->names, cap * sizeof *l->names);
        if (!p)
            return;
        l->names = p;
        l->cap = cap;
    }
    snprintf(l->names[l->n][0], RT_NAME_MAX + 1, "%s", tenant);
    snprintf(l->names[l->n][1], RT_NAME_MAX + 1, "%s", name);
    l->n++;
}

/* Loads one function recorded in the store into the registry. */
static int reload_one(rt *r, const char *tenant, const char *name, cl_buf *err)
{
    rt_record rec;
    int rc = rt_persist_get_record(&r->admin_kv, tenant, name, &rec);
    if (rc != CL_OK)
        return fail(err, rc, "its record cannot be read: %s", cl_strerror(rc));
    if (rec.module_bytes > r->cfg.max_module_bytes)
        return fail(err, CL_ETOOBIG, "its module is larger than this node accepts");
    cl_buf mod;
    cl_buf_init(&mod);
    rc = rt_persist_get_module(&r->admin_kv, rec.sha256, rec.module_bytes, rec.chunk_bytes, &mod);
    if (rc != CL_OK) {
        cl_buf_fini(&mod, 0);
        return fail(err, rc, "its module cannot be read: %s", cl_strerror(rc));
    }
    rt_fn_ver *v = rt_fn_ver_new();
    if (v)
        v->fn = rt_registry_fn_for(r->reg, tenant, name);
    if (!v || !v->fn) {
        rt_fn_ver_unref(v);
        cl_buf_fini(&mod, 0);
        return fail(err, CL_ENOMEM, "out of memory");
    }
    v->kind = rec.kind;
    memcpy(v->sha256, rec.sha256, 32);
    v->module_bytes = rec.module_bytes;
    v->chunk_bytes = rec.chunk_bytes;
    v->deployed_at = rec.deployed_at;
    rc = version_load(r, v, mod.data, mod.len, NULL, NULL, err);
    cl_buf_fini(&mod, 0);
    if (rc != CL_OK) {
        rt_fn_ver_unref(v);
        return rc;
    }
    rt_fn_ver *old = NULL;
    rt_registry_install(r->reg, v, &old);
    if (old) {                           /* redeployed through another node */
        version_retire(r, old);
        rt_fn_ver_unref(old);
    }
    return CL_OK;
}

static void reload(rt *r)
{
    name_list l = { 0 };
    pthread_mutex_lock(&r->admin_mu);
    int rc = rt_persist_index_list(&r->admin_kv, collect_name, &l);
    if (rc != CL_OK)
        cl_log_error(MOD, "the function index in the store cannot be read: %s", cl_strerror(rc));
    size_t loaded = 0;
    cl_buf err;
    cl_buf_init(&err);
    for (size_t i = 0; i < l.n; i++) {
        rc = reload_one(r, l.names[i][0], l.names[i][1], &err);
        if (rc == CL_OK)
            loaded++;
        else
            cl_log_warn(MOD, "function %s/%s from the store is not loaded: %.*s", l.names[i][0],
                        l.names[i][1], (int)err.len, (const char *)err.data);
    }
    pthread_mutex_unlock(&r->admin_mu);
    if (l.n)
        cl_log_info(MOD, "loaded %zu of %zu functions recorded in the store", loaded, l.n);
    cl_buf_fini(&err, 0);
    free(l.names);
}

/* ---- following the cluster ------------------------------------------------------------------
 *
 * On a cluster, functions are deployed and removed through any node: the
 * records, modules and index are in the replicated store.  A node learns
 * them at start (reload), at the first invocation of a name it does not
 * know (lookup_or_load), and once a second from the follower thread,
 * which loads what is new or was redeployed and drops what was removed.
 * So a deploy is visible everywhere at once; a removal or a redeploy
 * through another node within about a second.
 */
#define FOLLOW_INTERVAL_MS 1000

/* 1 if the store's record names a different deployment than v. */
static int record_differs(const rt_record *rec, const rt_fn_ver *v)
{
    return memcmp(rec->sha256, v->sha256, 32) != 0 || rec->deployed_at != v->deployed_at;
}

static void follow_once(rt *r)
{
    name_list l = { 0 };
    cl_buf err;
    cl_buf_init(&err);
    pthread_mutex_lock(&r->admin_mu);
    if (rt_persist_index_list(&r->admin_kv, collect_name, &l) != CL_OK)
        goto out;
    for (size_t i = 0; i < l.n; i++) {
        const char *tenant = l.names[i][0], *name = l.names[i][1];
        rt_record rec;
        if (rt_persist_get_record(&r->admin_kv, tenant, name, &rec) != CL_OK)
            continue;
        rt_fn_ver *cur = rt_registry_get(r->reg, tenant, name);
        if ((!cur || record_differs(&rec, cur)) && reload_one(r, tenant, name, &err) != CL_OK)
            cl_log_warn(MOD, "function %s/%s deployed through another node is not loaded: %.*s",
                        tenant, name, (int)err.len, (const char *)err.data);
        rt_fn_ver_unref(cur);
    }
    rt_fn_ver **all;
    size_t n = rt_registry_snapshot(r->reg, &all);
    for (size_t i = 0; i < n; i++) {
        const rt_fn *fn = all[i]->fn;
        int listed = 0;
        for (size_t j = 0; j < l.n && !listed; j++)
            listed = strcmp(l.names[j][0], fn->tenant) == 0 && strcmp(l.names[j][1], fn->name) == 0;
        rt_fn_ver *old = NULL;
        if (!listed && rt_registry_remove(r->reg, fn->tenant, fn->name, &old) == CL_OK && old) {
            cl_log_info(MOD, "removed %s/%s (removed through another node)", fn->tenant, fn->name);
            version_retire(r, old);
            rt_fn_ver_unref(old);
        }
        rt_fn_ver_unref(all[i]);
    }
    free(all);
out:
    pthread_mutex_unlock(&r->admin_mu);
    cl_buf_fini(&err, 0);
    free(l.names);
}

static void *follower_main(void *arg)
{
    rt *r = arg;
    pthread_setname_np(pthread_self(), "cl-follow");
    pthread_mutex_lock(&r->follow_mu);
    while (!r->follower_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += FOLLOW_INTERVAL_MS / 1000;
        while (!r->follower_stop && pthread_cond_timedwait(&r->follow_cv, &r->follow_mu, &ts) == 0)
            ;
        if (r->follower_stop)
            break;
        pthread_mutex_unlock(&r->follow_mu);
        follow_once(r);
        pthread_mutex_lock(&r->follow_mu);
    }
    pthread_mutex_unlock(&r->follow_mu);
    return NULL;
}

/* The current version of a name; on a cluster, loaded from the store if
 * another node deployed it.  Referenced, or NULL. */
static rt_fn_ver *lookup_or_load(rt *r, const char *tenant, const char *name)
{
    rt_fn_ver *v = rt_registry_get(r->reg, tenant, name);
    if (v || !r->cfg.repl)
        return v;
    cl_buf err;
    cl_buf_init(&err);
    pthread_mutex_lock(&r->admin_mu);
    v = rt_registry_get(r->reg, tenant, name);     /* loaded meanwhile? */
    if (!v && reload_one(r, tenant, name, &err) == CL_OK)
        v = rt_registry_get(r->reg, tenant, name);
    pthread_mutex_unlock(&r->admin_mu);
    cl_buf_fini(&err, 0);
    return v;
}

/* ---- create / destroy ---------------------------------------------------------------------- */

static rt_fnlog *log_create(void *arg)
{
    rt_fnlog *l = NULL;
    return rt_fnlog_create(0, &l) == CL_OK ? l : NULL;
}

static void log_destroy(void *arg, rt_fnlog *l)
{
    rt_fnlog_destroy(l);
}

/* Opens the compile cache in state_dir/cache with the platform's key.
 * On failure WebAssembly is unavailable (compile_error says why) but the
 * runtime still serves native functions. */
static void open_cache(rt *r)
{
    uint8_t root[PLATFORM_KEY_LEN], mac[PLATFORM_KEY_LEN];
    cl_buf err;
    cl_buf_init(&err);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/cache", r->state_dir);
    int rc = platform_key_load(r->state_dir, root);
    if (rc == CL_OK)
        rc = platform_derive(root, "compile-cache", mac);
    platform_key_wipe(root, sizeof root);
    if (rc != CL_OK) {
        fail(&err, rc, "the platform key in %s cannot be used: %s", r->state_dir, cl_strerror(rc));
    } else {
        compile_config cc = { .dir = dir, .mac_key = mac, .wasm2c = r->cfg.wasm2c, .cc = r->cfg.cc };
        rc = compile_cache_open(&cc, &r->cache, &err);
        if (rc != CL_OK && err.len == 0)
            fail(&err, rc, "the compile cache in %s cannot be opened: %s", dir, cl_strerror(rc));
    }
    platform_key_wipe(mac, sizeof mac);
    if (rc != CL_OK) {
        trim_message(&err);
        r->compile_error = strndup((const char *)err.data, err.len);
        cl_log_error(MOD, "WebAssembly functions are unavailable: %.*s", (int)err.len,
                     (const char *)err.data);
    }
    cl_buf_fini(&err, 0);
}

int rt_create(const rt_config *cfg, rt **out)
{
    *out = NULL;
    if (!cfg->store || !cfg->state_dir || !cfg->state_dir[0])
        return CL_EINVAL;
    rt *r = calloc(1, sizeof *r);
    if (!r)
        return CL_ENOMEM;
    r->cfg = *cfg;
    r->store = cfg->store;
    pthread_mutex_init(&r->admin_mu, NULL);
    pthread_mutex_init(&r->follow_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->follow_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!r->cfg.max_module_bytes)
        r->cfg.max_module_bytes = DEFAULT_MAX_MODULE;
    if (!r->cfg.max_memory_pages)
        r->cfg.max_memory_pages = DEFAULT_MAX_PAGES;
    if (r->cfg.max_memory_pages > WASM_MAX_PAGES - 1)
        r->cfg.max_memory_pages = WASM_MAX_PAGES - 1;
    if (!r->cfg.timeout_ms)
        r->cfg.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!r->cfg.max_output_bytes)
        r->cfg.max_output_bytes = DEFAULT_MAX_OUTPUT;
    if (!r->cfg.max_input_bytes)
        r->cfg.max_input_bytes = DEFAULT_MAX_INPUT;
    if (r->cfg.native_workers <= 0)
        r->cfg.native_workers = DEFAULT_NATIVE_WORKERS;
    if (r->cfg.exec_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        r->cfg.exec_threads = n > 0 ? (int)n : 1;
    }
    r->max_value = store_max_value(r->store);
    r->chunk_bytes = r->max_value < MAX_CHUNK_BYTES ? r->max_value : MAX_CHUNK_BYTES;
    uint32_t salt = 0;
    if (RAND_bytes((unsigned char *)&salt, sizeof salt) != 1)
        salt = (uint32_t)getpid() ^ (uint32_t)now_ns();
    r->next_owner = (uint64_t)(salt | 1u) << 32;

    int rc = CL_ENOMEM;
    r->state_dir = strdup(cfg->state_dir);
    r->cfg.state_dir = r->state_dir;
    if (!r->state_dir)
        goto fail;
    if (mkdir_p(r->state_dir) != 0) {
        cl_log_error(MOD, "cannot create the state directory %s: %s", r->state_dir, strerror(errno));
        rc = CL_EIO;
        goto fail;
    }
    open_cache(r);

    rt_registry_hooks hooks = { .log_create = log_create, .log_destroy = log_destroy, .arg = r };
    if ((rc = rt_registry_create(&hooks, &r->reg)) != CL_OK)
        goto fail;
    if ((rc = rt_locks_create(0, &r->locks)) != CL_OK)
        goto fail;
    if ((rc = store_thread_create(r->store, &r->admin_st)) != CL_OK)
        goto fail;
    kv_thread_init(&r->admin_kv, r->store, r->admin_st, r->cfg.repl);

    r->nworkers = r->cfg.exec_threads;
    r->workers = calloc((size_t)r->nworkers, sizeof *r->workers);
    if (!r->workers) {
        rc = CL_ENOMEM;
        goto fail;
    }
    rt_exec_config ec = {
        .threads = r->nworkers,
        .queue_max = (size_t)r->nworkers * QUEUE_PER_THREAD,
        .thread_init = worker_init,
        .thread_fini = worker_fini,
        .thread_idle = worker_idle,
        .arg = r,
        .name = "cl-exec",
    };
    if ((rc = rt_exec_create(&ec, &r->exec)) != CL_OK) {
        cl_log_error(MOD, "cannot start %d executor threads: %s", r->nworkers, cl_strerror(rc));
        goto fail;
    }
    reload(r);
    if (r->cfg.repl) {
        if (pthread_create(&r->follower, NULL, follower_main, r) != 0) {
            rc = CL_ENOMEM;
            goto fail;
        }
        r->follower_started = 1;
    }
    *out = r;
    return CL_OK;
fail:
    rt_destroy(r);
    return rc;
}

void rt_destroy(rt *r)
{
    if (!r)
        return;
    if (r->follower_started) {
        pthread_mutex_lock(&r->follow_mu);
        r->follower_stop = 1;
        pthread_cond_signal(&r->follow_cv);
        pthread_mutex_unlock(&r->follow_mu);
        pthread_join(r->follower, NULL);
    }
    inline_workers_orphan(r);         /* normally none: their threads have exited */
    rt_exec_destroy(r->exec);         /* runs what is queued; no invocation after this */
    rt_registry_destroy(r->reg);      /* versions: code released (instances are gone) */
    if (r->admin_st) {
        kv_thread_fini(&r->admin_kv);
        store_thread_destroy(r->admin_st);
    }
    if (r->locks)
        rt_locks_destroy(r->locks);
    compile_cache_close(r->cache);
    pthread_mutex_destroy(&r->admin_mu);
    pthread_mutex_destroy(&r->follow_mu);
    pthread_cond_destroy(&r->follow_cv);
    free(r->workers);
    free(r->compile_error);
    free(r->state_dir);
    free(r);
}
