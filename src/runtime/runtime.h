/*
 * runtime.h - the function runtime: deploy, list, remove and invoke
 * functions (WebAssembly modules or native shared objects).
 *
 * This is the runtime's whole public API, used by the HTTP gateway
 * (frontdoor/http*.c) and cloisterd.  Inside, the runtime is:
 *
 *   rt.c        this API: deploy (validate, compile, load, commit to the
 *               store, swap), invoke (queue to an executor, run, count),
 *               list, remove, logs, metrics; owns everything below
 *   registry.c  functions by (tenant, name): module hash, kind, sizes,
 *               deploy time, counters; the module bytes and the registry
 *               records are kept sealed in the store (reserved keys), so
 *               every node can run every function
 *   module.c    WebAssembly binary inspection/validation (sections,
 *               imports against the ABI, exports, limits)
 *   compile.c   wasm2c + cc into a shared object, cached by module hash
 *   wasm_rt.c   Cloister's implementation of wabt's wasm-rt.h (thread
 *               safe traps, memories in sandbox slots)
 *   sandbox.c   slots (reserved address ranges with guard pages), memory
 *   template.c  templates (copy-on-write restore), limits; trap.c: trap
 *   trap.c      handling (signals, stack guard, wall-time timer)
 *   host.c      the imports: cloister_* (function.h) and the WASI subset
 *   locks.c     the lock table behind cloister_lock/unlock
 *   fnlog.c     each function's log ring
 *   native.c    native functions in pre-forked, seccomp-confined workers
 *   exec.c      the executor threads that run invocations
 *
 * Threading: deploy, remove and list may be called from any thread;
 * invocations report completion through a callback.  They run on the
 * runtime's executor threads, or -- short WebAssembly functions that
 * import nothing that waits (rt.c, "Inline invocations") -- on the thread
 * that called rt_invoke, before it returns; a thread that does so keeps a
 * sandbox and a store thread of its own until it exits.  A deploy blocks
 * (compiling takes seconds); call it off the network threads.
 *
 * Versions: a redeploy swaps the function's code atomically; invocations
 * already running finish on the version they started with, which is
 * released with the last of them.  Counters and the log belong to the
 * name and survive redeploys (not a removal).
 *
 * Namespaces: a tenant's function keys are stored under a reserved prefix
 * that no memcached client can name (front doors refuse keys starting
 * with RT_RESERVED_KEY_BYTE), so functions of one tenant cannot reach
 * another's keys and clients cannot forge them.
 */
#ifndef CLOISTER_RUNTIME_RUNTIME_H
#define CLOISTER_RUNTIME_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../store/store.h"

#define RT_NAME_MAX 64              /* function and tenant names: [A-Za-z0-9_.-]{1,64} */
#define RT_RESERVED_KEY_BYTE 0x01   /* first byte of every key the runtime owns */

typedef struct rt rt;

typedef struct rt_config {
    store *store;                 /* required; holds module bytes and records too */
    struct repl *repl;            /* a cluster's replication engine (NULL: one node): function
                                     state, records and modules are replicated through it */
    const char *state_dir;        /* required; created if missing: the compile cache
                                     (state_dir/cache) and the platform key */
    int exec_threads;             /* executor threads; 0 = number of CPUs */
    size_t max_module_bytes;      /* largest module accepted (default 16 MiB) */
    uint32_t max_memory_pages;    /* per-instance linear memory cap, 64 KiB pages (default 1024 = 64 MiB) */
    uint32_t timeout_ms;          /* per-invocation wall time (default 5000) */
    size_t max_output_bytes;      /* per-invocation output cap (default 4 MiB) */
    size_t max_input_bytes;       /* request body cap (default 4 MiB) */
    int native_workers;           /* pre-forked processes per native function (default 2) */
    int no_inline;                /* 1: every invocation runs on an executor thread */
    const char *cc;               /* C compiler (default: clang-14 when it runs, else "cc":
                                     clang vectorises the memory-base-rewritten code) */
    const char *wasm2c;           /* wasm2c (default: the one CMake found) */
} rt_config;

/*
 * Creates the runtime: state directory, compile cache, executor threads,
 * then the functions recorded in the store (a restarted single node has
 * none; a cluster node learns every function this way).  When the
 * compile cache cannot be opened (e.g. wasm2c missing) the runtime still
 * starts: WebAssembly deploys are refused with the reason.  Returns
 * CL_OK, CL_EINVAL (no store / state_dir), CL_EIO (state_dir cannot be
 * created), CL_ENOMEM.
 */
int rt_create(const rt_config *cfg, rt **out) __attribute__((warn_unused_result));

/* Finishes queued invocations, stops the executors, unloads everything.
 * No other call may be running or start; threads that ran invocations
 * inline should have exited (each that has not frees its sandbox when it
 * exits or next invokes).  NULL is a no-op. */
void rt_destroy(rt *r);

/* ---- deploy / list / remove ------------------------------------------- */

typedef enum rt_kind { RT_KIND_WASM = 1, RT_KIND_NATIVE = 2 } rt_kind;

typedef struct rt_fn_info {
    char tenant[RT_NAME_MAX + 1];
    char name[RT_NAME_MAX + 1];
    rt_kind kind;
    uint8_t hash[32];             /* SHA-256 of the module: its identity */
    uint64_t module_bytes;
    int64_t deployed_at;          /* Unix seconds */
    uint64_t invocations, errors; /* since the node started */
    int cached;                   /* deploy found the compiled code cached */
} rt_fn_info;

/* Progress of a long deploy: stage is a short word ("validate",
 * "translate", "compile", "load", "template"), pct 0..100. */
typedef void (*rt_progress_fn)(void *arg, const char *stage, int pct);

/*
 * Deploys (or replaces) function `name` of `tenant` from module bytes
 * (kind detected: "\0asm" -> WebAssembly, "\x7fELF" -> native).  Blocks
 * while validating and compiling; call it off the network threads.
 * On failure nothing already deployed changes and `err` gets a message for
 * the user saying why (e.g. "import cloister.fork is not part of the ABI").
 * Returns CL_OK, CL_EINVAL (bad name, malformed or non-validating module,
 * forbidden import, init trapped), CL_ETOOBIG, CL_EIO (compiler failed,
 * or WebAssembly unavailable on this node), CL_EFULL (the store has no
 * room for the module), CL_ENOMEM.  `info` (may be NULL) describes the
 * deployed version; `progress` (may be NULL) is called on this thread.
 */
int rt_deploy(rt *r, const char *tenant, const char *name,
              const uint8_t *module, size_t len,
              rt_progress_fn progress, void *progress_arg,
              rt_fn_info *info, cl_buf *err);

/* CL_OK or CL_ENOTFOUND. */
int rt_remove(rt *r, const char *tenant, const char *name);

/* Calls fn for each deployed function (any order). */
void rt_list(rt *r, void (*fn)(void *arg, const rt_fn_info *info), void *arg);

/* Appends the function's recent log lines (oldest first) to out. */
int rt_logs(rt *r, const char *tenant, const char *name, cl_buf *out);

/* ---- invoke ------------------------------------------------------------- */

typedef enum rt_status {
    RT_OK = 0,          /* handle returned 0 -> HTTP 200 */
    RT_FN_ERROR,        /* handle returned nonzero -> 500, output as body */
    RT_NOT_FOUND,       /* no such function -> 404 */
    RT_TRAP,            /* trap (detail names it) -> 500 */
    RT_TIMEOUT,         /* wall time exceeded -> 504 */
    RT_TOO_LARGE,       /* input over max_input_bytes -> 413 */
    RT_CRASH,           /* native worker died / forbidden syscall -> 500 */
    RT_OVERLOADED,      /* no executor capacity -> 503 */
    RT_INTERNAL,        /* -> 500 */
} rt_status;

typedef struct rt_result {
    rt_status status;
    int32_t code;               /* handle's return value */
    char detail[128];           /* e.g. "trap: out of bounds memory access" */
    uint64_t duration_ns;
    int from_template;          /* instance restored from the template (not a reused warm one) */
} rt_result;

/*
 * Runs function `name` of `tenant` with `input`.  `output` is filled by
 * the function and must stay valid until `done` is called.  `done` runs
 * exactly once: on an executor thread (the input was copied), or on the
 * calling thread before rt_invoke returns -- for immediate failures
 * (RT_NOT_FOUND, RT_TOO_LARGE, RT_OVERLOADED when the executors' queue is
 * full) and for invocations run inline (short WebAssembly functions,
 * when the calling thread is a pthread other than main and not an
 * executor; such a call holds the caller for the function's run, which
 * has been short: a version whose inline run takes over a millisecond of
 * CPU is sent back to the executors for a while, see rt.c).  Returns
 * CL_OK (always: every outcome is reported through `done`).
 */
typedef void (*rt_done_fn)(void *arg, const rt_result *res);
int rt_invoke(rt *r, const char *tenant, const char *name,
              const uint8_t *input, size_t inlen, cl_buf *output,
              rt_done_fn done, void *arg);

/* Synchronous convenience for tests, the CLI's local mode and benchmarks:
 * invokes and waits. */
int rt_invoke_wait(rt *r, const char *tenant, const char *name,
                   const uint8_t *input, size_t inlen, cl_buf *output,
                   rt_result *res);

/* ---- metrics --------------------------------------------------------------- */

#define RT_LATENCY_BUCKETS 16   /* upper bounds: 10us * 2^i; the last is +Inf */

typedef struct rt_metrics {
    uint64_t invocations, errors, traps, timeouts, crashes;
    uint64_t inline_invocations;  /* of the invocations, run on the caller's thread */
    uint64_t instances_from_template, deploys, compiles, cache_hits;
    uint64_t latency_count, latency_sum_ns;
    uint64_t latency_buckets[RT_LATENCY_BUCKETS];   /* cumulative counts */
    uint64_t functions;
    uint64_t idle_instances, slots;
} rt_metrics;

void rt_get_metrics(rt *r, rt_metrics *out);

#endif
