/*
 * compile.h - WebAssembly module -> loadable shared object, through
 * wabt's wasm2c and the system C compiler, with a compile cache.
 *
 * rt_deploy (rt.c) calls compile_module() after wasm_module_inspect()
 * accepted the module; on a restart the registry calls it again for
 * every deployed function and normally hits the cache.
 *
 * Cache key = SHA-256 over: a format tag, CL_FN_SHIM_ABI, the shim
 * generator's version, `wasm2c --version`, `cc --version`, the compiler
 * flags, the bytes of wasm-rt.h, and the module's SHA-256.  Anything that
 * could change the code produced changes the key, so a stale object is
 * rebuilt rather than misused.
 *
 * The cache directory is on untrusted disk: whoever owns the disk could
 * swap a shared object, which would be code injection into the node.  So
 * every entry carries an HMAC-SHA256 (key: platform_derive(root,
 * "compile-cache")) over the cache key and the object's bytes; loading
 * reads the whole entry into memory, verifies the MAC in constant time,
 * and only then copies the object into a sealed memfd.  The sandbox
 * dlopen()s that memfd (compile_artifact_path), so the bytes verified are
 * the bytes loaded.  An entry that fails verification is logged (without
 * secrets), deleted and rebuilt.  Simulation mode limits: the MAC key
 * comes from a file on that same disk (trust/platform.h), and the tools
 * read and write their files in a work directory there, so whoever can
 * change files *while* a compile runs could change its output; with TEE
 * hardware the compile would run on trusted storage.
 *
 * Compiling happens in a private directory under the cache directory
 * (work-XXXXXX, 0700); the tools run as child processes in their own
 * process group, with a time limit (the whole group is killed at the
 * limit), stdin from /dev/null and their output captured: wasm2c's
 * validation errors become the user's message.  Generated code is always
 * compiled without sanitizers.  Concurrent compiles of one module (threads
 * or processes) are serialised by an flock on KEY.lock, so they compile
 * once and the others find the result.
 *
 * Children are reaped with waitpid(pid): SIGCHLD must not be set to
 * SIG_IGN, and no other thread may reap with waitpid(-1).
 *
 * Threading: a compile_cache may be used by any number of threads.
 */
#ifndef CLOISTER_RUNTIME_COMPILE_H
#define CLOISTER_RUNTIME_COMPILE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "module.h"
#include "runtime.h"

#define COMPILE_KEY_LEN 32

typedef struct compile_cache compile_cache;

typedef struct compile_config {
    const char *dir;                /* cache directory; created 0700 if missing (its parent must exist) */
    const uint8_t *mac_key;         /* COMPILE_KEY_LEN bytes; copied, wiped on close */
    const char *wasm2c;             /* NULL: CLOISTER_WASM2C (found by CMake) */
    const char *cc;                 /* NULL: "clang-14" if it runs, else "cc" */
    uint32_t translate_timeout_ms;  /* wasm2c; 0: 60 s */
    uint32_t compile_timeout_ms;    /* cc; 0: 300 s */
} compile_config;

/*
 * Opens (creating if needed) the cache and identifies the toolchain (runs
 * `wasm2c --version` and `cc --version` once).  Removes work directories
 * left over by a crash.  On failure err says what is wrong (e.g. wasm2c
 * missing).  Returns CL_OK, CL_EINVAL, CL_ECONFIG (tool missing or
 * broken), CL_EIO, CL_ENOMEM.
 */
int compile_cache_open(const compile_config *cfg, compile_cache **out, cl_buf *err)
    __attribute__((warn_unused_result));
void compile_cache_close(compile_cache *c);

/* The result of compile_module: a verified shared object in memory. */
typedef struct compile_artifact {
    int fd;             /* sealed memfd with the object; owned by the caller, -1 when released */
    size_t so_bytes;
    int cached;         /* 1: found in the cache; 0: compiled by this call */
} compile_artifact;

#define COMPILE_PATH_MAX 32

/* "/proc/self/fd/N": the path to dlopen() (valid while fd is open). */
void compile_artifact_path(const compile_artifact *a, char out[COMPILE_PATH_MAX]);

/* Closes the fd (after dlopen, which keeps its own mapping). */
void compile_artifact_release(compile_artifact *a);

/*
 * Produces the shared object for the module whose SHA-256 is `hash`.
 * Cached: verifies and returns it (wasm may then be NULL: with wasm NULL
 * a miss returns CL_ENOTFOUND).  Otherwise translates `wasm` (len bytes,
 * which must hash to `hash`; `info` from wasm_module_inspect of the same
 * bytes), compiles, installs the entry and returns it.  `progress` (may
 * be NULL) is called on this thread with stages "translate" and
 * "compile" and a percentage, at most a few times a second.
 * Returns CL_OK (*out filled); CL_EINVAL (wasm2c refused the module --
 * err has its reason -- or the bytes do not match `hash`); CL_EIO (a tool
 * failed or timed out, or the cache could not be written: err says
 * which); CL_ENOTFOUND (lookup only); CL_ENOMEM.
 */
int compile_module(compile_cache *c, const uint8_t hash[32], const uint8_t *wasm, size_t len,
                   const wasm_module_info *info, rt_progress_fn progress, void *progress_arg,
                   compile_artifact *out, cl_buf *err)
    __attribute__((warn_unused_result));

/* Counters since open (for rt_metrics): objects compiled, cache hits,
 * entries that failed verification, objects compiled without the
 * memory-base rewrite (generated code not in the shape it knows; logged). */
typedef struct compile_stats {
    uint64_t compiles, hits, rejected, unrewritten;
} compile_stats;
void compile_cache_stats(compile_cache *c, compile_stats *out);

/*
 * The memory-base rewrite of wasm2c's generated C (compile.c, "Memory
 * base"), exposed for tests.  Appends to `out` the code of src (len bytes,
 * a fn.c from `wasm2c -n fn`) with every load/store helper call of each
 * function going through a local copy of the memory's base address;
 * *sites = how many calls were rewritten.  Returns CL_OK; CL_EINVAL when
 * src is not in the shape the rewrite was written for (*why, a static
 * string, says what differs; out is left as it was); CL_ENOMEM.
 */
int compile_rewrite_memory_base(const char *src, size_t len, cl_buf *out, size_t *sites,
                                const char **why)
    __attribute__((warn_unused_result));

#endif
