/*
 * module.h - inspect and validate a WebAssembly binary before anything
 * else touches it.
 *
 * rt_deploy (rt.c) calls wasm_module_inspect() on every uploaded module
 * first; only a module it accepts goes on to wasm2c and the C compiler
 * (compile.c), which also uses the info to generate the module's shim.
 *
 * What is checked here (the structure; the instruction-level validation
 * is wasm2c's, which refuses invalid code before translating it):
 *   - magic and version; every section's id, order, uniqueness and size;
 *     every LEB128 (no overlong or overflowing encodings); UTF-8 names;
 *     every declared count against sane limits (WASM_MAX_*) and against
 *     the bytes actually present, before anything is allocated for it;
 *   - the module size against the node's cap;
 *   - imports: functions only, each one in the ABI table rt_imports
 *     (host.h) with exactly its signature; no imported memory, table or
 *     global (the node offers none);
 *   - memory: exactly one, defined by the module and exported as
 *     "memory", 32-bit, not shared, its initial size within the
 *     per-instance cap;
 *   - exports: `handle` () -> i32 required; `_initialize`, `_start`,
 *     `init` optional, each () -> () when present; not both `_start` and
 *     `_initialize` (a WASI module is a command or a reactor);
 *   - no start section: it would run guest code inside instantiation, at
 *     every instance creation and outside the invocation's limits; WASI
 *     reactors use `_initialize`, and `init` covers one-time set-up (both
 *     run once, before the template is taken).
 * Every refusal comes with one line for the user that says why, e.g.
 * "import cloister.fork is not part of the Cloister ABI".
 *
 * The parser reads only from the given bytes, never past `len`, keeps no
 * pointer into them after it returns, and allocates at most O(len).
 * Thread-safe (no shared state).
 */
#ifndef CLOISTER_RUNTIME_MODULE_H
#define CLOISTER_RUNTIME_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "host.h"

/* Limits on what a module may declare (the JS embedding's limits, which
 * every toolchain stays within); anything above is refused. */
#define WASM_MAX_TYPES        1000000
#define WASM_MAX_FUNCS        1000000
#define WASM_MAX_IMPORTS      100000
#define WASM_MAX_EXPORTS      100000
#define WASM_MAX_GLOBALS      1000000
#define WASM_MAX_TABLES       100000
#define WASM_MAX_TABLE_ELEMS  10000000
#define WASM_MAX_SEGMENTS     100000      /* data or element segments */
#define WASM_MAX_PARAMS       1000
#define WASM_MAX_RESULTS      1000
#define WASM_MAX_LOCALS       50000       /* per function */
#define WASM_MAX_BODY_BYTES   7654321     /* per function */
#define WASM_MAX_NAME_BYTES   100000
#define WASM_PAGE_BYTES       65536u
#define WASM_MAX_PAGES        65536u      /* 4 GiB: the 32-bit address space */

#define WASM_DEFAULT_MAX_MODULE_BYTES ((size_t)16 << 20)
#define WASM_DEFAULT_MAX_MEMORY_PAGES 1024u

typedef struct wasm_module_limits {
    size_t max_module_bytes;    /* 0: WASM_DEFAULT_MAX_MODULE_BYTES */
    uint32_t max_memory_pages;  /* initial memory cap per instance; 0: default */
} wasm_module_limits;

typedef enum wasm_extern_kind {
    WASM_EXTERN_FUNC = 0,
    WASM_EXTERN_TABLE = 1,
    WASM_EXTERN_MEMORY = 2,
    WASM_EXTERN_GLOBAL = 3,
    WASM_EXTERN_TAG = 4,
} wasm_extern_kind;

/* An accepted module's imports are all functions from the ABI table. */
typedef struct wasm_import_info {
    const rt_import *abi;       /* its rt_imports entry: module, name, signature */
    uint32_t type_index;
} wasm_import_info;

typedef struct wasm_export_info {
    const char *name;           /* NUL-terminated copy owned by the info */
    uint32_t name_len;          /* bytes (a wasm name may contain NUL) */
    wasm_extern_kind kind;
    uint32_t index;             /* in the kind's index space */
} wasm_export_info;

typedef struct wasm_module_info {
    size_t module_bytes;
    uint32_t ntypes;
    uint32_t nimports;
    wasm_import_info *imports;  /* in the module's order */
    uint32_t nexports;
    wasm_export_info *exports;  /* in the module's order */
    uint32_t nfuncs;            /* imported + defined */
    uint32_t nfuncs_defined;
    uint32_t ntables, nglobals, ndata, nelem;
    /* The (one, defined, exported) linear memory, in 64 KiB pages.  With
     * no declared maximum, memory_max_pages is WASM_MAX_PAGES. */
    uint32_t memory_min_pages;
    uint32_t memory_max_pages;
    int memory_has_max;
    /* Which host modules it imports from: wasm2c's Z_fn_instantiate takes
     * one pointer per imported module (the shim needs to know which). */
    int imports_cloister;
    int imports_wasi;
    /* Optional exports (each () -> ()).  handle and memory always exist. */
    int has_initialize;         /* "_initialize": a WASI reactor */
    int has_start;              /* "_start": a WASI command */
    int has_init;               /* "init": runs once before the template */

    char *names_;               /* storage behind exports[].name */
} wasm_module_info;

/*
 * Parses and checks `len` bytes of `wasm` under `lim` (NULL: defaults).
 * On CL_OK fills *info (release it with wasm_module_info_fini).  On
 * failure *info is left empty (fini is harmless) and one line saying why,
 * meant for the user, is appended to err (if not NULL).
 * Returns CL_OK; CL_EINVAL (malformed, or not something Cloister runs);
 * CL_ETOOBIG (module or its initial memory above the node's caps);
 * CL_ENOMEM.
 */
int wasm_module_inspect(const uint8_t *wasm, size_t len, const wasm_module_limits *lim,
                        wasm_module_info *info, cl_buf *err)
    __attribute__((warn_unused_result));

void wasm_module_info_fini(wasm_module_info *info);

/* The export named `name` (NUL-terminated), or NULL. */
const wasm_export_info *wasm_module_find_export(const wasm_module_info *info, const char *name);

#endif
