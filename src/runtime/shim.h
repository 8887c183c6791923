/*
 * shim.h - the one symbol every compiled WebAssembly function exports.
 *
 * wasm2c names a module's entry points after the module (we translate
 * every module with `-n fn`, so they are Z_fn_instantiate, Z_fnZ_handle,
 * ...) and lays out its instance struct per module.  compile.c therefore
 * generates, next to wasm2c's output, a small C file that includes the
 * generated header and defines `cloister_fn_shim` below, which gives the
 * sandbox a fixed interface to any module: the instance size, and
 * pointers to the entry points the module has (NULL for absent optional
 * exports).  The shared object is dlopen()ed RTLD_LOCAL, so every module
 * can use the same names; its imports (Z_cloisterZ_*,
 * Z_wasi_snapshot_preview1Z_*) and the wasm_rt_* runtime resolve against
 * cloisterd's own exported symbols (host.c, wasm_rt.c).
 *
 * Bump CL_FN_SHIM_ABI when this struct changes: the compile cache keys on
 * it, so stale shared objects are rebuilt rather than misused.
 */
#ifndef CLOISTER_RUNTIME_SHIM_H
#define CLOISTER_RUNTIME_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <wasm-rt.h>

#define CL_FN_SHIM_ABI 1
#define CL_FN_SHIM_SYMBOL "cloister_fn_shim"

typedef struct cl_fn_shim {
    uint32_t abi;                       /* CL_FN_SHIM_ABI */
    size_t instance_size;               /* sizeof(Z_fn_instance_t) */
    void (*init_module)(void);          /* Z_fn_init_module: once per load */
    /* Z_fn_instantiate; the host pointers are passed through to imports
     * (the runtime passes fixed sentinels and finds the invocation through
     * a thread-local, so instances can be cloned byte for byte). */
    void (*instantiate)(void *inst, void *cloister_host, void *wasi_host);
    void (*free_instance)(void *inst);  /* Z_fn_free */
    wasm_rt_memory_t *(*memory)(void *inst);   /* exported "memory" (required) */
    void (*initialize)(void *inst);     /* "_initialize" (reactor) or NULL */
    void (*start)(void *inst);          /* "_start" (command) or NULL */
    void (*init)(void *inst);           /* "init" or NULL */
    uint32_t (*handle)(void *inst);     /* "handle" (required) */
} cl_fn_shim;

#endif
