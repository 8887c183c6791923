/*
 * kv.h - the key-value store as the front doors and the runtime see it:
 * the local store on a single node, the replicated store on a cluster.
 *
 * Every function has the meaning, arguments and return codes of the
 * store_* function of the same name (store/store.h), so a caller written
 * against the single-node store keeps its meaning on a cluster.  With
 * kv_thread.r == NULL each call is the store call itself.  With a
 * replication engine (repl/repl.h) attached:
 *   - a plain read is an ABD read (kv_get);
 *   - a plain set is an ABD write (repl_put);
 *   - everything that reads and then writes - add, replace, append,
 *     prepend, cas, delete (which reports NOT_FOUND), incr/decr, touch,
 *     gat - is one CASPaxos read-modify-write whose step function
 *     (repl/ops.h) applies the rule the store applies locally;
 *   - the CAS id a client sees is the value's replicated version;
 *   - what has no replicated meaning yet is refused with CL_EUNSUPPORTED
 *     rather than answered from one replica: the anti-stampede state of
 *     meta commands (early recache R, vivify N, invalidate, stale-if-older) and
 *     flush_all.  Access times and "fetched" bits stay local.
 *
 * The cluster calls block the calling thread until a quorum answered
 * (repl_*_sync); kv_async.h has a plain get and set that do not.  Callers: the memcached front door's workers (the daemon
 * runs more of them in cluster mode), the runtime's executors, the
 * function registry.
 */
#ifndef CLOISTER_KV_KV_H
#define CLOISTER_KV_KV_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../store/store.h"

typedef struct repl repl;

/* One per thread, like store_thread (which it wraps). */
typedef struct kv_thread {
    store_thread *st;   /* this thread's handle on the local store */
    repl *r;            /* NULL: single node */
    size_t max_value;   /* the store's limit (store_max_value) */
    cl_buf scratch;     /* cluster: values in transit (owned) */
} kv_thread;

void kv_thread_init(kv_thread *kt, store *s, store_thread *st, repl *r);
void kv_thread_fini(kv_thread *kt);

static inline int kv_replicated(const kv_thread *kt) { return kt->r != NULL; }

int kv_get(kv_thread *kt, const uint8_t *key, size_t klen, const store_get_opts *opts,
           store_sink_fn sink, void *arg, store_meta *meta);
int kv_set(kv_thread *kt, const uint8_t *key, size_t klen, const uint8_t *val, size_t len,
           const store_write *w, uint64_t *cas_out);
int kv_delete(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas);
/* kv_delete, also reporting the deletion's version on a cluster (0 on a
 * single node): what a lock's release set records. */
int kv_delete_v(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas,
                uint64_t *version_out);
int kv_invalidate(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas, int touch,
                  int64_t exptime, uint64_t *cas_out);
int kv_touch(kv_thread *kt, const uint8_t *key, size_t klen, int64_t exptime);
int kv_arith(kv_thread *kt, const uint8_t *key, size_t klen, const store_arith_op *a,
             uint64_t *value, store_meta *meta);

/* Hands a replicated value to a store_get sink and meta as store_get
 * does (the CAS id is the value's version).  CL_OK or CL_ENOMEM.  For
 * kv_async.c. */
struct repl_val;
int kv_deliver(const struct repl_val *v, store_sink_fn sink, void *arg, store_meta *meta);

#endif
