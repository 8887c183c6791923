/*
 * call.h - one invocation as the host functions see it.
 *
 * The sandbox (sandbox.c) fills an rt_call, points the thread-local
 * rt_current_call at it for the duration of the guest's code, and the
 * host functions (host.c: cloister_* and the WASI subset) find
 * everything there: the guest memory they may touch, the request body,
 * the response being built, the tenant's key namespace, the store and
 * lock handles, and the function's log.  Native functions (native.c) use
 * the same rt_call on the node side, with `mem` describing the shared
 * memory window of the worker process, so every host operation has one
 * implementation.
 *
 * Guest pointers are offsets into [mem_base, mem_base + mem_size); host
 * code must check every (offset, length) with rt_call_range() before use
 * and fail the call with CLOISTER_EFAULT otherwise.  Guest memory is
 * untrusted input: read each value once (copy, then use).
 */
#ifndef CLOISTER_RUNTIME_CALL_H
#define CLOISTER_RUNTIME_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../kv/kv.h"
#include "../store/store.h"

typedef struct rt_locks rt_locks;    /* locks.c */
typedef struct rt_fnlog rt_fnlog;    /* the function's log ring (fnlog.c) */

#define RT_NS_MAX (2 + 64 + 1)       /* RT_RESERVED_KEY_BYTE 't' tenant '/' */
#define RT_MAX_HELD_LOCKS 16
#define RT_MAX_WSET 64               /* writes remembered for a lock's release set (cluster) */
#define RT_LOG_LINE_MAX 1024u        /* longest log line (fnlog.h RT_FNLOG_LINE_MAX) */

typedef struct rt_call {
    /* guest memory window; refreshed by the sandbox after memory.grow */
    uint8_t *mem_base;
    uint64_t mem_size;

    const uint8_t *input;            /* request body (trusted copy) */
    size_t input_len;
    cl_buf *output;                  /* response body being built */
    size_t max_output;

    kv_thread *kv;                   /* the thread's store handle (replicated on a cluster) */
    uint8_t ns[RT_NS_MAX];           /* key prefix of the tenant's namespace */
    size_t ns_len;
    size_t max_value;

    rt_locks *locks;                 /* lock table */
    uint64_t owner;                  /* unique id of this invocation (lock owner) */
    uint64_t deadline_ns;            /* CLOCK_MONOTONIC deadline (lock waits stop there) */
    int nheld;                       /* locks held, released at the end of the call */
    struct { uint8_t name[64 + 250]; uint32_t len; uint64_t token; } held[RT_MAX_HELD_LOCKS];

    rt_fnlog *log;                   /* the function's log */

    int exited;                      /* WASI proc_exit was called */
    int32_t exit_code;

    /* WASI stdout (0) / stderr (1) text not yet ended by a newline: host.c
     * logs it line by line; rt_host_call_end() logs the rest. */
    struct { uint32_t len; uint8_t buf[RT_LOG_LINE_MAX]; } pending[2];

    /* Cluster only: the keys this invocation wrote while holding a lock,
     * with the versions the writes produced, for the release set the
     * unlock records (repl.h, LOCKS).  The last RT_MAX_WSET are kept (a
     * ring: wset_n counts every write, wset[i % RT_MAX_WSET]).  Not cleared
     * per call beyond wset_n (call_prepare zeroes up to `wset`). */
    uint32_t wset_n;
    struct { uint8_t klen; uint8_t key[STORE_KEY_MAX]; uint64_t version; } wset[RT_MAX_WSET];
} rt_call;

extern __thread rt_call *rt_current_call;  /* defined in host.c */

/* 1 if [off, off + len) lies inside the guest memory window. */
static inline int rt_call_range(const rt_call *c, uint64_t off, uint64_t len)
{
    return off <= c->mem_size && len <= c->mem_size - off;
}

#endif
