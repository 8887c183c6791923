/*
 * host.h - the functions a module may import: the table every other
 * part of the runtime consults.
 *
 * host.c defines the imports (module "cloister": function.h; module
 * "wasi_snapshot_preview1": the WASI subset) as the C functions wasm2c's
 * output calls (Z_cloisterZ_kv_get, Z_wasi_snapshot_preview1Z_fd_write,
 * ...), and lists each one in rt_imports[].  module.c validates a
 * module's import section against this table (name and signature), so a
 * module importing anything else is refused at deploy with a clear
 * message; and because the table references every host function, the
 * linker keeps them all in cloisterd for dlopen()ed modules to bind to.
 *
 * Signatures use wasm value types: 'i' i32, 'I' i64, 'f' f32, 'F' f64;
 * "params:results", e.g. "iiiii:I" for kv_get, "i:" for proc_exit.
 *
 * Keys and lock names: the store key is the tenant's namespace prefix
 * (rt_call.ns, RT_NS_MAX bytes at most) followed by the guest's key, and
 * must fit STORE_KEY_MAX, so a guest key may be at most
 * STORE_KEY_MAX - ns_len bytes (>= 183); longer ones get CLOISTER_ETOOBIG.
 */
#ifndef CLOISTER_RUNTIME_HOST_H
#define CLOISTER_RUNTIME_HOST_H

#include <stddef.h>

typedef struct rt_import {
    const char *module;     /* "cloister" or "wasi_snapshot_preview1" */
    const char *name;       /* "kv_get", "fd_write", ... */
    const char *signature;  /* "iiiii:I" */
    void (*fn)(void);       /* the host function (cast) */
} rt_import;

extern const rt_import rt_imports[];
extern const size_t rt_nimports;

/* The entry for (module, name), or NULL if the ABI does not offer it. */
const rt_import *rt_import_find(const char *module, size_t mlen, const char *name, size_t nlen);

/*
 * Ends an invocation's use of the host (rt.c calls it after every
 * invocation, trapped and timed-out ones included, before reusing or
 * freeing the rt_call): logs the guest's unfinished stdout/stderr line,
 * and releases every lock the invocation still holds.
 */
struct rt_call;
void rt_host_call_end(struct rt_call *c);

/*
 * WASI proc_exit: host.c sets rt_call.exited and exit_code, then calls
 * this to unwind the guest to where the sandbox entered it, never
 * returning to guest code (no host lock is held at that point).  The
 * sandbox may define it (a strong definition wins); host.c's weak
 * fallback raises wasm_rt_trap(WASM_RT_TRAP_UNREACHABLE) through the
 * normal trap path, so the sandbox must check rt_call.exited after a
 * trap: then it is an exit with exit_code, not a trap.
 */
__attribute__((noreturn)) void rt_sandbox_exit(void);

#endif
