/*
 * kv_async.h - the two hot cluster calls of kv.h without blocking: a plain
 * read (kv_get) and a plain set (kv_set), for a caller that must not wait
 * (a network worker serving many connections, net/proto.h).
 *
 * kv_*_start submits the operation and returns at once; `wake(wake_arg)`
 * then runs exactly once, on the replication thread, after the result is
 * kept (it must not block: e.g. net_waker_resume).  The caller, told it is
 * done, takes the result with kv_*_finish, which has the meaning and return
 * codes of kv_get / kv_set and frees the pending operation.  A caller that
 * can no longer take the result (its connection closed) calls
 * kv_pending_abandon instead; the operation is freed when it completes.
 *
 * kv_*_async_ok says whether the call would go to the replication engine
 * (and so is worth starting asynchronously); when it returns 0 the caller
 * uses kv_get / kv_set, which answer without waiting for peers (a single
 * node, an eventual-mode read) or need what this path does not do.
 */
#ifndef CLOISTER_KV_KV_ASYNC_H
#define CLOISTER_KV_KV_ASYNC_H

#include "kv.h"

typedef struct kv_pending kv_pending;
typedef void (*kv_wake_fn)(void *wake_arg);

/* 1 if kv_get(kt, key, klen, opts, ...) would be a replicated read. */
int kv_get_async_ok(const kv_thread *kt, const uint8_t *key, size_t klen,
                    const store_get_opts *opts);
/* 1 if kv_set(kt, ..., w, ...) would be a replicated blind write. */
int kv_set_async_ok(const kv_thread *kt, const store_write *w);

/* CL_OK: submitted, *out holds the pending operation and wake will run.
 * Otherwise an error code; nothing was submitted and wake will not run. */
int kv_get_start(kv_thread *kt, const uint8_t *key, size_t klen, kv_wake_fn wake,
                 void *wake_arg, kv_pending **out) __attribute__((warn_unused_result));
int kv_set_start(kv_thread *kt, const uint8_t *key, size_t klen, const uint8_t *val,
                 size_t len, const store_write *w, kv_wake_fn wake, void *wake_arg,
                 kv_pending **out) __attribute__((warn_unused_result));

/* The result, as kv_get / kv_set would have given it; frees p.  Only
 * after wake ran. */
int kv_get_finish(kv_pending *p, store_sink_fn sink, void *arg, store_meta *meta);
int kv_set_finish(kv_pending *p, uint64_t *cas_out);

/* The result will not be taken: p is freed now if done, else when done. */
void kv_pending_abandon(kv_pending *p);

#endif
