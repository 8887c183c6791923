/*
 * worker.h - the inside of cloister-native, the process that runs one
 * native function for the node (see src/runtime/native.h for the design,
 * the protocol and the confinement policy).
 *
 *   main.c     start-up (map the region, confine, load the .so, init),
 *              the request loop, and the mailbox (wk_post, wk_wait,
 *              wk_call); the worker's only mutable global state, `wk`
 *   abi.c      the cloister_* functions of include/cloister/function.h,
 *              exported from this executable so the dlopen()ed .so binds
 *              to them; stdout/stderr replaced by streams that log lines
 *   confine.c  Landlock, the two seccomp filters, resource limits
 *
 * The worker trusts the node (its region header and replies) and nothing
 * else: the function's code runs in this process, so every promise made
 * here is only as strong as the kernel-enforced confinement.
 */
#ifndef CLOISTER_WORKER_WORKER_H
#define CLOISTER_WORKER_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/native.h"

typedef struct wk_state {
    native_ctl *ctl;          /* the region's header */
    uint8_t *input;           /* areas inside the region */
    uint8_t *output;
    uint8_t *data;
    uint64_t input_cap, output_cap, data_cap;
    uint32_t n2w_seen, w2n_seq;
    pid_t pid, ppid;
    /* the invocation being run */
    uint32_t input_len, max_output, out_len;
} wk_state;

extern wk_state wk;

/* Posts message `msg` (its fields already written to wk.ctl). */
void wk_post(uint32_t msg);

/* Waits for the node's next message and returns its type.  Exits the
 * process when the node has gone away. */
uint32_t wk_wait(void);

/* One host call: op(args) served by the node; returns its result.  The
 * arguments are data-area offsets or plain values, as native.h says. */
int64_t wk_call(uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4);

/* abi.c: replaces stdout and stderr by line-logging streams.  0 or -1. */
int wk_stdio_install(void);
/* Flushes both streams and logs a last unterminated line, if any. */
void wk_stdio_flush(void);

/* confine.c.  Each returns 0, or -1 with a message in err (size n). */
int wk_confine_prepare(char *err, size_t n);       /* build both filters */
int wk_confine_landlock(int *applied, char *err, size_t n);
int wk_confine_load_stage(char *err, size_t n);    /* the dynamic loader's filter */
int wk_confine_limits(uint64_t max_memory, char *err, size_t n);  /* RLIMIT_DATA */
int wk_confine_run_stage(char *err, size_t n);

#endif
