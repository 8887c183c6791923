/*
 * native.h - native functions: a .so built from C against
 * include/cloister/function.h, run in pre-forked worker processes
 * (build/cloister-native, src/worker/) confined by Landlock and seccomp,
 * talking to the node over one shared-memory region per worker.
 *
 * The node side (native.c) keeps, per deployed native function, a pool of
 * K workers.  An invocation takes an idle worker, copies the request body
 * into the worker's region, wakes it, and then serves the worker's host
 * calls (cloister_kv_get, _lock, _log, ...) on the invoking executor
 * thread, through the *same* host functions WebAssembly uses (host.c's
 * rt_imports[]), with the rt_call's guest-memory window pointed at the
 * worker's data area.  It ends when the worker posts DONE (handle's
 * return value and the output length), dies (RT_CRASH, the signal named:
 * a forbidden system call is SIGSYS) or passes the deadline (SIGKILL,
 * RT_TIMEOUT).  A worker that crashed or timed out is replaced at once.
 *
 * Trust: the worker runs untrusted code and can write anything into its
 * region at any time.  The node copies each field it reads there exactly
 * once, validates lengths, message types and op codes before use, never
 * follows a pointer or an offset it did not bound, and never waits
 * without a deadline (it polls a pidfd with the notification eventfd, so
 * a worker that dies or goes silent is noticed).  The region memfd is
 * sealed against shrinking, so the worker cannot make the node's mapping
 * fault.  Host functions see the data area as guest memory: they must
 * check every range (rt_call_range) and read each guest byte range once
 * (call.h), as they must for WebAssembly.
 *
 * Confinement of a worker (src/worker/main.c, confine.c), in order:
 *   1. started with posix_spawn, empty environment, clean signal mask and
 *      dispositions, its own process group, fds 0/1 = /dev/null, 2 = the
 *      node's stderr (only the worker's start-up and sanitizer runtimes
 *      could write there), 3 = its region memfd, 4 = the verified .so (a
 *      sealed memfd), 5 = the notification eventfd, nothing else; no core
 *      dumps, not dumpable (no ptrace, no /proc/PID/mem); a node running
 *      as root has its workers drop to uid/gid 65534 (nobody);
 *   2. Landlock (when the kernel has it): every file-system access right
 *      denied under every path; PR_SET_NO_NEW_PRIVS;
 *   3. seccomp "load" filter: the run-time allow-list plus what the
 *      dynamic loader needs (read-only openat, read, fstat, mmap/mprotect
 *      with PROT_EXEC, close, seccomp); everything else kills the process;
 *   4. dlopen("/proc/self/fd/4") - the .so's constructors run here, already
 *      without network, processes, or (with Landlock) files;
 *   5. seccomp "run" filter (stacked, so only further restricts): exactly
 *      the allow-list below; `init` runs after it, then the request loop.
 * Run-time allow-list (anything else: SECCOMP_RET_KILL_PROCESS, which the
 * node reports as SIGSYS): exit, exit_group, futex, write only to fd 5,
 * clock_gettime, clock_getres, gettimeofday, time, nanosleep,
 * clock_nanosleep, getrandom, brk, mmap only anonymous and without
 * PROT_EXEC, mprotect without PROT_EXEC, munmap, mremap, madvise,
 * rt_sigreturn, rt_sigprocmask, sched_yield, restart_syscall, getpid,
 * gettid, getppid, tgkill only to itself (abort/raise), sigaltstack only
 * to query (sanitizer runtimes do, on longjmp).
 *
 * stdout/stderr of the function (printf, puts, fprintf(stderr, ...)) are
 * stdio streams the worker replaces with fopencookie() streams cut into
 * lines that go to the function's log as cloister_log calls; a raw
 * write(2) to fd 1 or 2 is a forbidden system call.
 *
 * Who calls this: rt.c (deploy: native_validate + native_pool_create, the
 * pool becoming the version's code with native_pool_destroy as its
 * release; invoke: native_invoke on an executor thread).  The protocol
 * section at the end is shared with src/worker/.
 */
#ifndef CLOISTER_RUNTIME_NATIVE_H
#define CLOISTER_RUNTIME_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "call.h"
#include "runtime.h"

typedef struct native_pool native_pool;

typedef struct native_config {
    int workers;              /* processes per function (default 2) */
    size_t max_input;         /* request area per worker (default 4 MiB; < 2 GiB) */
    size_t max_output;        /* response area per worker (default 4 MiB; < 2 GiB) */
    size_t max_value;         /* the store's max value: sizes the host-call data area (default 1 MiB) */
    size_t max_memory;        /* RLIMIT_DATA of a worker, bytes (0 = no limit; ignored under ASan) */
    uint32_t timeout_ms;      /* invocation wall time when rt_call.deadline_ns is 0 (default 5000) */
    uint32_t start_timeout_ms;/* spawn + load + init of one worker (default 10000) */
    const char *worker_path;  /* NULL: cloister-native next to (or one level above) /proc/self/exe */
    rt_fnlog *log;            /* log for printf/cloister_log during init; NULL drops those lines */
} native_config;

/*
 * Cheap structural check of a native module before anything is spawned:
 * an ELF64 little-endian shared object (ET_DYN) for this machine, not
 * truncated.  Whether it loads (undefined symbols, no `handle` export)
 * is learned by native_pool_create.  CL_OK or CL_EINVAL with a message
 * for the user appended to err (may be NULL).
 */
int native_validate(const uint8_t *so, size_t len, cl_buf *err);

/*
 * Starts the pool: copies the .so into a sealed memfd and spawns
 * cfg->workers workers, waiting until each has loaded the .so, found
 * `handle`, run `init` and reported ready.  cfg may be NULL (defaults);
 * it is copied (cfg->log must outlive the pool).  On failure nothing is
 * left running and err (may be NULL) says why in words for the user,
 * e.g. "native function does not export handle" or "native function
 * crashed while loading: SIGSYS (forbidden system call)".
 * Returns CL_OK, CL_EINVAL (the .so does not load or crashes in init),
 * CL_EIO (the worker program cannot be started), CL_ENOMEM.
 */
int native_pool_create(const native_config *cfg, const uint8_t *so, size_t len,
                       native_pool **out, cl_buf *err) __attribute__((warn_unused_result));

/* Kills every worker (SIGKILL), reaps them and frees the pool.  No
 * invocation may be running on it (rt.c holds the version's reference
 * for each).  NULL is a no-op.  Signature fits rt_fn_ver.code_release. */
void native_pool_destroy(native_pool *p);

/*
 * Runs one invocation on an idle worker, blocking the calling thread
 * until it ends.  The caller fills c as for WebAssembly (input,
 * input_len, output, max_output, st, ns, max_value, locks, owner,
 * deadline_ns, log; c->output empty: max_output bounds this
 * invocation's bytes); native_invoke points c->mem_base/mem_size at the
 * worker's data area while it serves host calls (rt_current_call = c
 * during each) and clears them before returning.  It never sets c->stop
 * and nothing else may for a native call (host.c would unwind a guest
 * that is not on this thread).  Held locks are NOT released here: the
 * caller calls rt_host_call_end(c) after every invocation, as for
 * WebAssembly.  Fills res->status (RT_OK, RT_FN_ERROR, RT_CRASH,
 * RT_TIMEOUT, RT_TOO_LARGE, RT_INTERNAL), res->code and res->detail;
 * output is appended to c->output.  Thread-safe: up to `workers`
 * invocations run at once, more wait for a free worker until their
 * deadline (then RT_TIMEOUT).
 */
void native_invoke(native_pool *p, rt_call *c, rt_result *res);

typedef struct native_stats {
    uint64_t invocations, crashes, timeouts, spawns;
    int workers, live, landlock;   /* landlock: 1 if workers have no file system */
} native_stats;

void native_pool_stats(native_pool *p, native_stats *out);

/* ---- the protocol between node and worker (shared with src/worker/) ------
 *
 * Region (one memfd per worker, sealed against resizing, mapped shared by
 * both):  [ctl: 4 KiB][input area][output area][data area], each area
 * page-aligned, offsets and sizes in the ctl header (written by the node
 * before the worker starts).
 *
 * Messages go one at a time, strictly alternating after READY: the
 * sender writes the message fields, then bumps its sequence word with a
 * release store; node -> worker wakes the worker with FUTEX_WAKE on
 * n2w_seq; worker -> node writes 8 bytes to NATIVE_FD_NOTIFY (an eventfd
 * the node polls together with the worker's pidfd).
 *
 *   worker: READY | FAIL(err)                         (once, at start)
 *   node:   RUN(input_len, max_output)
 *   worker: CALL(op, arg[]) -> node: REPLY(ret)        (any number)
 *   worker: DONE(code, output_len)
 *
 * Host calls: arg[] are the wasm-level arguments of the import named by
 * the op (see native_ops in native.c), with every pointer an offset into
 * the data area; offset 0 means NULL, so the worker never places data
 * below NATIVE_DATA_NULL_GUARD.
 */
#define NATIVE_MAGIC 0x574e4c43u       /* "CLNW" */
#define NATIVE_ABI 1
#define NATIVE_FD_REGION 3
#define NATIVE_FD_SO 4
#define NATIVE_FD_NOTIFY 5
#define NATIVE_CTL_SIZE 4096u
#define NATIVE_NARGS 5
#define NATIVE_ERR_MAX 256
#define NATIVE_DATA_NULL_GUARD 8u
#define NATIVE_DATA_SLACK (64u * 1024) /* data area = max_value + this (keys, headers) */

enum native_msg {
    NATIVE_MSG_NONE = 0,
    NATIVE_MSG_RUN = 1,    /* node: run handle on input_len bytes of the input area */
    NATIVE_MSG_REPLY = 2,  /* node: the host call's result is in ret */
    NATIVE_MSG_READY = 3,  /* worker: loaded, initialised, waiting */
    NATIVE_MSG_CALL = 4,   /* worker: host call op(arg[]) */
    NATIVE_MSG_DONE = 5,   /* worker: handle returned code; output_len bytes of output */
    NATIVE_MSG_FAIL = 6,   /* worker: cannot start; err says why */
};

/* Host-call op codes: one per cloister_* import that needs the node
 * (input and output are served inside the worker from its areas). */
enum native_op {
    NATIVE_OP_KV_GET = 1,      /* kv_get(key, klen, buf, cap, version) */
    NATIVE_OP_KV_SET,          /* kv_set(key, klen, val, vlen) */
    NATIVE_OP_KV_DELETE,       /* kv_delete(key, klen) */
    NATIVE_OP_KV_CAS,          /* kv_cas(key, klen, expected, val, vlen) */
    NATIVE_OP_KV_INCR,         /* kv_incr(key, klen, delta, result) */
    NATIVE_OP_KV_GET_MANY,     /* kv_get_many(keys, keys_len, n, buf, cap) */
    NATIVE_OP_LOCK,            /* lock(name, nlen, timeout_ms) */
    NATIVE_OP_UNLOCK,          /* unlock(name, nlen) */
    NATIVE_OP_LOG,             /* log(msg, len) */
    NATIVE_OP_COUNT
};

typedef struct native_ctl {
    /* layout: written by the node before the worker starts */
    uint32_t magic, abi;
    uint64_t input_off, input_cap;
    uint64_t output_off, output_cap;
    uint64_t data_off, data_cap;
    uint64_t max_memory;              /* RLIMIT_DATA for the worker; 0 = none */

    /* node -> worker */
    _Alignas(64) uint32_t n2w_seq;    /* futex word */
    uint32_t n2w_msg;
    uint32_t input_len;               /* RUN */
    uint32_t max_output;              /* RUN: <= output_cap */
    int64_t ret;                      /* REPLY */

    /* worker -> node: untrusted */
    _Alignas(64) uint32_t w2n_seq;
    uint32_t w2n_msg;
    uint32_t op;                      /* CALL */
    uint32_t landlock;                /* READY: 1 if Landlock closed the file system */
    uint64_t arg[NATIVE_NARGS];       /* CALL */
    int32_t code;                     /* DONE */
    uint32_t output_len;              /* DONE */
    char err[NATIVE_ERR_MAX];         /* FAIL */
} native_ctl;

_Static_assert(sizeof(native_ctl) <= NATIVE_CTL_SIZE, "native_ctl fits its page");

#endif
