/*
 * sandbox.h - running compiled WebAssembly functions safely: loaded
 * modules and their memory templates (rt_code), per-thread sandboxes with
 * pools of instance slots (rt_sandbox), limits and traps.
 *
 * Used by the runtime core (rt.c, exec threads), the tests and the
 * benchmarks.  Internals: trap.c (signals, stack guard, timer),
 * template.c (loading, templates, instance copies), sandbox.c (slots and
 * calls), wasm_rt.c (wabt's wasm-rt.h, implemented thread-safe).
 *
 * Model.  A module is compiled (compile.c) into a shared object exporting
 * `cloister_fn_shim` (shim.h).  rt_code_load() loads it once per node and
 * makes its MEMORY TEMPLATE: it instantiates the module, runs `_initialize`
 * (reactors) and then `init` (if exported) - under the same trap and time
 * limits as calls - and freezes the result (template.h).  Every invocation
 * then runs in an instance restored from that template, copy-on-write, so
 * no state survives from one invocation to the next: a function keeps
 * state in the store.
 *
 * Command modules (built without -mexec-model=reactor, with a `main`):
 * `_start` (main) never runs.  wasm-ld wraps every export of a command
 * module other than _start so that it runs the module's constructors
 * before and its destructors (stdio flush) after, so `handle` works as it
 * is, on a fresh instance each time.
 *
 * Slots.  An instance lives in a slot: an 8 GiB + 64 KiB PROT_NONE address
 * reservation of which the first `pages * 64 KiB` are read/write.  Out of
 * bounds accesses fault in the reservation and become traps; memory.grow
 * is mprotect, refused (-1 to the guest) beyond the page limit.  A slot
 * is repurposed across functions and tenants: before it shows a function
 * anything, every byte the previous instance could reach is replaced by
 * the new function's template or by inaccessible, page-less memory
 * (mmap MAP_FIXED), so no instance ever sees another's memory
 * (GHSA-wh6w-3828-g9qf).
 *
 * Threads.  An rt_sandbox belongs to the thread that created it (a
 * pthread, not the main thread): every rt_sandbox_* and rt_instance_*
 * call except rt_sandbox_get_stats must be made on that thread.  An
 * rt_code may be used by every sandbox at once.  The sandbox uses the
 * real-time signal SIGRTMIN+5 (its wall-time timer), SIGSEGV and SIGBUS
 * (faults it turns into traps; others go to the previous disposition),
 * and a 64 KiB guard band at the bottom of the thread's stack (trap.h).
 * Under AddressSanitizer it sets allow_user_segv_handler=1:handle_segv=0
 * (__asan_default_options in trap.c).
 *
 * Host functions (host.c) find the invocation through rt_current_call
 * (call.h).  Its mem_base/mem_size are kept current across memory.grow,
 * and deadline_ns is the invocation's deadline.  Every host function
 * calls rt_host_stack_check() first (below).  WASI proc_exit: set
 * call->exited and call->exit_code, then call rt_sandbox_exit() (host.h);
 * the sandbox ends the call normally (exit code 0 -> RT_OK, else
 * RT_FN_ERROR with that code).  The time-out unwinds the guest only when
 * its program counter is in the module's own code, never host code, so a
 * host function must bound its waits by call->deadline_ns.  After each
 * call (and after rt_code_load's init) the caller ends the rt_call with
 * rt_host_call_end() (host.h): pending log lines, locks still held.
 *
 * Modules must be compiled with -fstack-clash-protection (no stack frame
 * may step over the guard band) and with WASM_RT_MEMCHECK_SIGNAL_HANDLER
 * (the default on 64-bit).
 */
#ifndef CLOISTER_RUNTIME_SANDBOX_H
#define CLOISTER_RUNTIME_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "call.h"
#include "runtime.h"

typedef struct rt_code rt_code;
typedef struct rt_sandbox rt_sandbox;
typedef struct rt_slot rt_instance;   /* an instance is a slot that holds one */

/* ---- for host functions ------------------------------------------------------ */

#define RT_HOST_STACK (128u * 1024)   /* stack a host function may count on */

extern __thread uintptr_t rt_host_stack_floor;   /* 0 on threads without a sandbox */

/* Ends the guest's call with "trap: call stack exhausted" (returns only
 * when no guest code runs on this thread). */
void rt_sandbox_stack_exhausted(void);

/*
 * First thing in every host function, before it takes a lock or
 * allocates: when the guest has left less than RT_HOST_STACK bytes of
 * stack, the call ends here with "call stack exhausted" rather than host
 * code running out of stack where it cannot be unwound.  One compare.
 */
static inline void rt_host_stack_check(void)
{
    if (__builtin_expect((uintptr_t)__builtin_frame_address(0) < rt_host_stack_floor, 0))
        rt_sandbox_stack_exhausted();
}

/* ---- limits -------------------------------------------------------------- */

typedef struct rt_limits {
    uint32_t max_memory_pages;   /* linear memory cap, 64 KiB pages (0: 1024 = 64 MiB; at most 65535) */
    uint32_t timeout_ms;         /* wall time of init and of each call without a deadline (0: 5000) */
} rt_limits;

/* ---- loaded modules ------------------------------------------------------- */

/*
 * Loads the shared object at `so` (a path, e.g. "/proc/self/fd/N" for a
 * memfd the compile cache has verified), checks its shim, and builds its
 * memory template by running guest code on this thread, which must own
 * `sb`.  `init_call` is the context host functions see during
 * `_initialize` and `init` (store, namespace, log, output buffer; its
 * input may be empty); NULL gives them an empty one (no store: st NULL,
 * no log).  Limits apply to init and to every call.  On success *out has
 * one reference.  On failure `err` (if not NULL) says why, for the user:
 * "init trapped: out of bounds memory access", "module needs 2000 pages
 * of memory; the limit is 1024", ...
 * Returns CL_OK, CL_EINVAL (bad object, trap or exit in init), CL_ETOOBIG
 * (initial memory over the limit), CL_ENOMEM.
 */
int rt_code_load(rt_sandbox *sb, const char *so, const rt_limits *lim,
                 rt_call *init_call, rt_code **out, cl_buf *err)
    __attribute__((warn_unused_result));

/* References (any thread).  The module is unloaded when the last one goes:
 * the registry holds one, every slot holding an instance of it another. */
void rt_code_ref(rt_code *c);
void rt_code_unref(rt_code *c);

/* Marks c as replaced or removed: sandboxes drop its idle instances at
 * their next rt_sandbox_trim (so the last references go).  Any thread. */
void rt_code_retire(rt_code *c);

/* Template facts (for metrics and tests). */
typedef struct rt_code_info {
    uint32_t mem_pages;          /* template memory, pages */
    size_t template_file_bytes;  /* bytes shared by every instance (the rest is zero) */
    size_t instance_bytes;       /* instance struct */
    int has_init, has_initialize, has_start;
} rt_code_info;
void rt_code_get_info(const rt_code *c, rt_code_info *out);

/* ---- sandboxes ----------------------------------------------------------- */

typedef struct rt_sandbox_config {
    /* Instance slots, idle or busy.  Each reserves 8 GiB of address space
     * (no memory): 64 slots x 64 threads = 32 TiB of the 128 TiB a process
     * has.  0: 64. */
    size_t max_slots;
} rt_sandbox_config;

/* Creates the calling thread's sandbox (one per thread): its signal
 * stack, stack guard band and timer.  cfg may be NULL.  CL_OK,
 * CL_EINVAL (main thread, small stack), CL_EEXISTS (this thread has
 * one), CL_ENOMEM. */
int rt_sandbox_create(const rt_sandbox_config *cfg, rt_sandbox **out)
    __attribute__((warn_unused_result));

/* Releases every slot (no instance may be in use) and the thread's
 * signal stack, guard band and timer.  Same thread.  NULL is a no-op. */
void rt_sandbox_destroy(rt_sandbox *sb);

/*
 * Runs `handle` of code in a fresh instance: an idle instance of code in
 * this sandbox if there is one (already restored to the template), else
 * one restored from the template into a free slot, a new slot, or the
 * least recently used idle slot of another function (repurposed).
 * Sets rt_current_call = call while guest code runs; fills call->mem_base,
 * mem_size and (if 0) deadline_ns = now + timeout; resets exited.
 * Afterwards the instance is restored to the template at once (its
 * changes are dropped; it stays mapped as code's idle instance, which
 * costs no memory pages) and the slot goes back to the pool.
 * res: RT_OK / RT_FN_ERROR (code = handle's value or the exit code) /
 * RT_TRAP ("trap: out of bounds memory access", "trap: unreachable",
 * "trap: integer divide by zero", "trap: call stack exhausted", ...) /
 * RT_TIMEOUT; from_template = 1 when the instance had to be restored into
 * a slot for this call; duration_ns covers guest code only.
 * Returns CL_OK when the call ran (whatever res says); CL_EAGAIN (every
 * slot busy: res RT_OVERLOADED) or CL_ENOMEM (res RT_INTERNAL) when not.
 */
int rt_sandbox_call(rt_sandbox *sb, rt_code *code, rt_call *call, rt_result *res);

/* Drops idle instances of retired code, then idle instances beyond
 * `keep_idle` (least recently used first), and unmaps free slots beyond
 * that; their slots' address space is released. */
void rt_sandbox_trim(rt_sandbox *sb, size_t keep_idle);

typedef struct rt_sandbox_stats {
    uint64_t slots;                    /* reserved slots */
    uint64_t idle;                     /* idle instances (pristine, mapped) */
    uint64_t busy;                     /* instances in use (calls, rt_instance_*) */
    uint64_t instances_from_template;  /* template restored into a slot */
    uint64_t repurposed;               /* ... of which into another function's slot */
    uint64_t resets;                   /* instances restored in place after use */
    uint64_t calls, traps, timeouts;
} rt_sandbox_stats;

/* Any thread (values read without a lock; each one is exact). */
void rt_sandbox_get_stats(const rt_sandbox *sb, rt_sandbox_stats *out);

/* ---- explicit instances (benchmarks, tests) --------------------------------- */

/* A pristine instance of code (as rt_sandbox_call would get), held until
 * destroyed.  CL_OK, CL_EAGAIN (no slot), CL_ENOMEM. */
int rt_instance_create(rt_sandbox *sb, rt_code *code, rt_instance **out)
    __attribute__((warn_unused_result));

/* Calls `handle` on the instance as it is: its memory and globals keep
 * what earlier calls left (warm).  Same result rules as rt_sandbox_call;
 * from_template = 1 if the instance was pristine.  CL_OK, or CL_EINVAL if
 * the instance was lost (a failed reset). */
int rt_instance_call(rt_instance *in, rt_call *call, rt_result *res);

/* Restores the instance to the template in place.  CL_OK or CL_ENOMEM
 * (the instance is then lost: calls fail until it is destroyed). */
int rt_instance_reset(rt_instance *in);

/* Restores it and returns it to the pool as an idle instance. */
void rt_instance_destroy(rt_instance *in);

#endif
