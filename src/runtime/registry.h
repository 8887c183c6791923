/*
 * registry.h - the deployed functions, by (tenant, name), and how they are
 * kept in the store.
 *
 * Two reference-counted objects:
 *
 *   rt_fn      a function *name* (tenant, name): its counters and its log.
 *              It lives from the first deploy of the name until the name
 *              is removed and the last invocation that used it is done,
 *              so redeploying keeps counters and log lines.
 *   rt_fn_ver  one deployed *version*: module identity (SHA-256), kind,
 *              size, deploy time, and the loaded code.  A redeploy swaps
 *              the registry's current version atomically; invocations
 *              already running hold a reference to the old one and finish
 *              on it; its code is released with the last reference.
 *
 * The registry's lock (a rwlock) guards the table and each name's
 * current-version pointer only; lookups take it shared for a moment to
 * take a reference.  Counters are atomics.  Nothing here blocks on I/O or
 * runs user code under the lock.
 *
 * Persistence (the rt_persist_* functions): the store keeps, under keys
 * only the runtime can name (first byte RT_RESERVED_KEY_BYTE, refused by
 * every front door), sealed like every other value:
 *
 *   "\x01m/<sha256 hex>/<i>"  module bytes, chunk i (chunks of at most the
 *                             store's max value; shared by every function
 *                             deployed from the same module)
 *   "\x01f/<tenant>/<name>"   the function's record, JSON (rt_record)
 *   "\x01i/functions"         the index: a JSON array of [tenant, name],
 *                             updated with compare-and-swap so concurrent
 *                             deployers (other nodes, later) never lose an
 *                             entry
 *
 * rt_create reads the index and the records back to rebuild the registry
 * (a single node's store is empty after a restart; in a cluster the store
 * is replicated and this is how every node learns every function).
 *
 * Called by rt.c only (and tests/unit/runtime/test_registry.c).
 */
#ifndef CLOISTER_RUNTIME_REGISTRY_H
#define CLOISTER_RUNTIME_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../store/store.h"
#include "call.h"
#include "runtime.h"

typedef struct rt_registry rt_registry;
typedef struct rt_fn rt_fn;
typedef struct rt_fn_ver rt_fn_ver;

struct rt_fn {
    char tenant[RT_NAME_MAX + 1];
    char name[RT_NAME_MAX + 1];
    uint64_t invocations, errors;   /* atomic (__atomic builtins), since the node started */
    rt_fnlog *log;                  /* may be NULL when the registry has no log hooks */
    int refs;                       /* atomic */
    /* registry's, under its lock: */
    rt_fn_ver *current;             /* NULL once removed */
    rt_fn *chain;
    uint64_t hash;
    void (*log_destroy)(void *arg, rt_fnlog *log);  /* the registry's hook, copied */
    void *log_arg;
};

struct rt_fn_ver {
    rt_fn *fn;                      /* from rt_registry_fn_for; referenced */
    rt_kind kind;
    uint8_t sha256[32];
    uint64_t module_bytes;
    uint64_t chunk_bytes;           /* how the module is split in the store */
    int64_t deployed_at;            /* Unix seconds */
    int cached;                     /* the compiled code came from the cache */
    void *code;                     /* rt_code (wasm) or the native function handle */
    void (*code_release)(void *code); /* called with the last reference; may be NULL */
    int refs;                       /* atomic */
};

typedef struct rt_registry_hooks {
    /* Make / free a function's log (fnlog.h).  Both NULL: no logs. */
    rt_fnlog *(*log_create)(void *arg);
    void (*log_destroy)(void *arg, rt_fnlog *log);
    void *arg;
} rt_registry_hooks;

/* 1 if s is a valid tenant or function name: [A-Za-z0-9_.-]{1,64}. */
int rt_name_valid(const char *s);

/* hooks may be NULL.  CL_OK or CL_ENOMEM. */
int rt_registry_create(const rt_registry_hooks *hooks, rt_registry **out)
    __attribute__((warn_unused_result));

/* Drops the registry's references (versions still referenced by running
 * invocations live on until released).  NULL is a no-op. */
void rt_registry_destroy(rt_registry *reg);

/* A new version with one reference (the caller's), fn NULL; fill its
 * fields (fn from rt_registry_fn_for), then install it.  NULL on out of
 * memory. */
rt_fn_ver *rt_fn_ver_new(void);
void rt_fn_ver_ref(rt_fn_ver *v);
void rt_fn_ver_unref(rt_fn_ver *v);     /* NULL is a no-op */
void rt_fn_ref(rt_fn *fn);
void rt_fn_unref(rt_fn *fn);            /* NULL is a no-op */

/* The current version of (tenant, name), referenced (release with
 * rt_fn_ver_unref), or NULL. */
rt_fn_ver *rt_registry_get(rt_registry *reg, const char *tenant, const char *name);

/*
 * The rt_fn of (tenant, name), referenced: the table's if the name is
 * deployed, else a new one (with its log) that rt_registry_install will
 * put in the table.  A deploy takes it before loading the new version,
 * so the version's code can log into it from its first instruction
 * (init, native workers).  Hand the reference to the version (v->fn) or
 * drop it with rt_fn_unref.  NULL on out of memory.
 */
rt_fn *rt_registry_fn_for(rt_registry *reg, const char *tenant, const char *name);

/*
 * Makes v (v->fn set by rt_registry_fn_for) the current version of its
 * name.  Takes over the caller's reference to v.  *old (if not NULL)
 * receives the replaced version with the registry's reference, for the
 * caller to release (NULL if the name was new); without `old` it is
 * released here.  If the name was removed and deployed again while v was
 * prepared, v's rt_fn replaces the newer one.  Cannot fail.
 */
void rt_registry_install(rt_registry *reg, rt_fn_ver *v, rt_fn_ver **old);

/* Removes the name.  CL_OK (*old gets the last version, as above) or
 * CL_ENOTFOUND. */
int rt_registry_remove(rt_registry *reg, const char *tenant, const char *name,
                       rt_fn_ver **old);

/* Every current version, referenced, in a malloc()ed array (*out; free
 * it and unref each).  Returns the count; 0 with *out NULL if empty or
 * out of memory. */
size_t rt_registry_snapshot(rt_registry *reg, rt_fn_ver ***out);

/* The name's rt_fn, referenced, or NULL (for its log). */
rt_fn *rt_registry_get_fn(rt_registry *reg, const char *tenant, const char *name);

/* Number of deployed functions. */
size_t rt_registry_count(rt_registry *reg);

/* 1 if a current version other than (tenant, name)'s has this module. */
int rt_registry_module_in_use(rt_registry *reg, const uint8_t sha256[32],
                              const char *tenant, const char *name);

/* Fills info from v and its name's counters. */
void rt_fn_ver_info(const rt_fn_ver *v, rt_fn_info *info);

/* ---- persistence in the store ----------------------------------------- */

/* A function's record as kept under "\x01f/<tenant>/<name>". */
typedef struct rt_record {
    char tenant[RT_NAME_MAX + 1];
    char name[RT_NAME_MAX + 1];
    rt_kind kind;
    uint8_t sha256[32];
    uint64_t module_bytes;
    uint64_t chunk_bytes;           /* module split into chunks of this size */
    int64_t deployed_at;
} rt_record;

/* JSON text of a record (malloc()ed, NUL-terminated) or NULL (no memory). */
char *rt_record_to_json(const rt_record *rec);

/* Parses and checks a record.  CL_OK or CL_EINVAL (malformed). */
int rt_record_from_json(const char *text, size_t len, rt_record *rec);

/* Lower-case hex of a SHA-256 (65 bytes with the NUL). */
void rt_sha256_hex(const uint8_t sha256[32], char hex[65]);

/* Writes the module's chunks (chunk_bytes each, the last shorter).
 * CL_OK, CL_EFULL, CL_ETOOBIG, ... (chunks written before a failure are
 * deleted again). */
int rt_persist_put_module(kv_thread *st, const uint8_t sha256[32], const uint8_t *module,
                          size_t len, size_t chunk_bytes);

/* Reads the module back into out (replacing its contents) and checks its
 * SHA-256.  CL_OK, CL_ENOTFOUND (a chunk is missing), CL_EINTEGRITY
 * (sealing or hash mismatch), CL_ENOMEM. */
int rt_persist_get_module(kv_thread *st, const uint8_t sha256[32], size_t len,
                          size_t chunk_bytes, cl_buf *out);

/* Deletes the module's chunks (missing ones are ignored). */
void rt_persist_delete_module(kv_thread *st, const uint8_t sha256[32], size_t len,
                              size_t chunk_bytes);

/* Writes / reads / deletes a record.  get: CL_OK, CL_ENOTFOUND,
 * CL_EINVAL (malformed), CL_EINTEGRITY. */
int rt_persist_put_record(kv_thread *st, const rt_record *rec);
int rt_persist_get_record(kv_thread *st, const char *tenant, const char *name,
                          rt_record *rec);
int rt_persist_delete_record(kv_thread *st, const char *tenant, const char *name);

/* Adds (add = 1) or removes (tenant, name) in the index, atomically with
 * respect to other writers.  CL_OK (also when already so), CL_EFULL, ... */
int rt_persist_index_update(kv_thread *st, const char *tenant, const char *name, int add);

/* Calls fn for each (tenant, name) in the index.  CL_OK (also when there
 * is no index), CL_EINVAL (malformed index), CL_EINTEGRITY. */
int rt_persist_index_list(kv_thread *st,
                          void (*fn)(void *arg, const char *tenant, const char *name),
                          void *arg);

#endif
