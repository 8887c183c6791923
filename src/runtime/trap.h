/*
 * trap.h - the trap boundary: running guest (WebAssembly) code on this
 * thread so that every way it can fail comes back as a code, not a crash.
 *
 * Private to the sandbox (sandbox.c, template.c) and wasm_rt.c.
 *
 * One thread runs at most one piece of guest code at a time.  While it
 * runs, `rt_guest_state` (thread-local) says where a trap lands and what
 * the guest owns; the signal handlers installed here read it:
 *
 *   SIGSEGV/SIGBUS at an address inside [mem_lo, mem_hi) (the instance's
 *     8 GiB slot reservation)                     -> out-of-bounds trap
 *   SIGSEGV on the thread's stack guard band       -> call stack exhausted
 *   the wall-time timer fires while the program
 *     counter is inside the module's machine code  -> time-out
 *   anything else                                  -> not ours: the previous
 *     disposition is restored and the fault happens again (a real crash
 *     is never swallowed)
 *
 * Handlers run on a per-thread sigaltstack.
 *
 * Stack.  The guard band is ours: RT_STACK_GUARD bytes of PROT_NONE at the
 * bottom of the thread's stack (above glibc's own guard page).  Guest
 * code that reaches it traps.  Host functions never get near it: they
 * call rt_host_stack_check() (sandbox.h) on entry, which traps while no
 * lock is held if less than RT_HOST_STACK bytes remain above the band.
 * Small non-guest frames the guest calls without that check (libc's
 * memcpy for memory.copy, wasm_rt_*) that touch the band make it shrink
 * from the top, page by page, so they finish and the guest traps on the
 * band's new top; once half the band is gone such a fault traps at once.
 * The band is whole again when the guest code returns.  Modules must be
 * compiled with -fstack-clash-protection so that no frame steps over it.
 *
 * The timer never unwinds host code: when it fires outside the module's
 * code it only marks the deadline passed and fires again every
 * RT_TIMER_RETRY_NS until it catches the guest in its own code.
 */
#ifndef CLOISTER_RUNTIME_TRAP_H
#define CLOISTER_RUNTIME_TRAP_H

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <wasm-rt.h>

#define RT_STACK_GUARD     (64u * 1024)    /* PROT_NONE band in the thread stack */
#define RT_TIMER_RETRY_NS  1000000ull      /* re-fire period after the deadline */
#define RT_ALTSTACK_BYTES  (64u * 1024)

/* Codes rt_trap_run returns besides wasm_rt_trap_t values. */
#define RT_TRAP_TIMEOUT 100
#define RT_TRAP_EXIT    101   /* rt_sandbox_exit (WASI proc_exit) */

struct rt_inst_ctx;

typedef struct rt_guest {
    /* Where wasm_rt_trap() and the signal handlers land; NULL while no
     * guest code runs on this thread. */
    jmp_buf *volatile target;
    /* Innermost exception handler (wasm_rt_get/set_unwind_target). */
    jmp_buf *unwind;

    /* Set by the caller of rt_trap_run (the sandbox) for one run. */
    uintptr_t mem_lo, mem_hi;       /* the slot reservation: faults here are OOB */
    uintptr_t code_lo, code_hi;     /* the module's machine code */
    wasm_rt_memory_t *mem;          /* the instance's memory ... */
    uint32_t max_pages;             /* ... and its page limit for memory.grow */
    size_t *extent;                 /* slot bytes that may be accessible (grown by memory.grow) */
    struct rt_inst_ctx *instantiating; /* template.c, while a template is instantiated */

    volatile sig_atomic_t deadline_passed;
} rt_guest;

extern __thread rt_guest rt_guest_state;

/* Clears what the caller set for one run. */
static inline void rt_guest_leave(rt_guest *g)
{
    g->mem_lo = g->mem_hi = g->code_lo = g->code_hi = 0;
    g->mem = NULL;
    g->max_pages = 0;
    g->extent = NULL;
    g->instantiating = NULL;
}

/* Installs the process-wide handlers (once) and this thread's altstack,
 * stack guard band and timer.  The thread must have been created with
 * pthread_create (the main thread's stack grows on demand and has no
 * fixed bottom to guard).  CL_OK, CL_EINVAL (main thread, stack too
 * small), CL_ENOMEM. */
int rt_trap_thread_init(void);

/* Undoes rt_trap_thread_init on the same thread. */
void rt_trap_thread_fini(void);

/* 1 if rt_trap_thread_init succeeded on this thread. */
int rt_trap_thread_ready(void);

/*
 * Runs fn(arg) as guest code: returns 0 when it returned normally, else
 * the wasm_rt_trap_t code of the trap that ended it, or RT_TRAP_TIMEOUT.
 * deadline_ns (CLOCK_MONOTONIC; 0 = none) arms this thread's timer.
 * The caller sets mem_lo.. instantiating in rt_guest_state first.
 * Not reentrant: guest code cannot start guest code.
 */
int rt_trap_run(void (*fn)(void *arg), void *arg, uint64_t deadline_ns);

/* "out of bounds memory access", "unreachable", ..., "timeout", "exit". */
const char *rt_trap_name(int code);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t rt_now_ns(void);

#endif
