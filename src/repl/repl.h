/*
 * repl.h - the replication engine: every key of the store as a register
 * replicated on all n nodes of the cluster (n = 3 or 5), in one of two
 * consistency modes chosen per namespace (key prefix).
 *
 * STRONG (default): each key is a linearizable register; the cluster
 * tolerates floor((n-1)/2) crashed nodes.
 *   Versions.  Every value carries a version ts = (counter << 8) | node_id,
 *   node ids 1..n: one totally ordered space for ABD timestamps and
 *   CASPaxos ballots, unique per proposer.  The version is also the CAS id
 *   memcached clients see (gets, mg c).
 *   Replica state per key: accepted = (ts, value or tombstone) and a
 *   promised ballot p (kept in trusted memory; conservatively it may be
 *   shared by keys that hash alike - a larger promise only rejects more).
 *   Replica rules:
 *     QUERY            -> reply (accepted.ts, value).
 *     WRITE(ts, v)     -> ts < p: NACK(p).  ts > accepted.ts, or the local
 *                         copy is broken (failed authentication) and
 *                         ts >= accepted.ts: accepted = (ts, v), ACK.
 *                         Otherwise ACK without change (already newer).
 *     PREPARE(b)       -> b > p and b > accepted.ts: p = b, PROMISE(accepted).
 *                         Otherwise NACK(max(p, accepted.ts)).
 *     ACCEPT(b, v)     -> b >= p and b > accepted.ts: accepted = (b, v), ACK.
 *                         Otherwise NACK(max(p, accepted.ts)).
 *   Proposer (the node a client talks to; it is also a replica, applied
 *   locally without a message):
 *     get (ABD read):  QUERY all, wait for a majority.  All replies carry
 *                      the same ts -> done in one round trip.  Otherwise
 *                      WRITE the newest (ts, v) back to a majority (a NACK
 *                      restarts the read), then done.
 *     set / blind delete (ABD write): QUERY a majority for the newest ts,
 *                      WRITE((max counter + 1) << 8 | self) to all, wait for a
 *                      majority of ACKs; a NACK(p) restarts with counter > p.
 *     read-modify-write (CASPaxos: cas, add, replace, append, prepend,
 *                      incr, decr, delete with a reply, touch, locks):
 *                      PREPARE(b) to all; on a majority of PROMISEs run the
 *                      caller's pure function on the newest accepted value;
 *                      if it writes, ACCEPT(b, f(v)) to all and wait for a
 *                      majority of ACKs; any NACK majority or time-out ->
 *                      retry with a larger ballot (randomised backoff).
 *   Freshness: every request carries the proposer's epoch and a request id;
 *   replies echo both and are matched to an outstanding request, so a
 *   duplicated, delayed or replayed message never completes the wrong
 *   operation; replica rules are idempotent.
 *   The model in spec/repl.pml checks these rules (3 replicas, 2 clients).
 *
 * EVENTUAL: a write applies to the local replica and is acknowledged at
 *   once, with version = hybrid logical clock (physical ms and a logical
 *   counter, shifted << 8 | node_id); it is pushed to every peer
 *   asynchronously in batches; a replica applies a pushed value when its
 *   version is larger (last writer wins; deletes are tombstones).
 *   Anti-entropy: periodically each node compares per-bucket digests of
 *   (key, version) with a peer and pulls what it misses, so a node that
 *   missed updates (crashed, partitioned) converges.  Reads are local.
 *
 * LOCKS (PSL release consistency), in either mode: a lock is a strong
 *   register (CASPaxos) holding {owner, lease expiry, fencing token,
 *   release set}.  repl_lock grants when the lock is free or its lease has
 *   run out, with a fencing token larger than every earlier grant.
 *   repl_unlock stores the releaser's write set (the keys it wrote under
 *   the lock and their versions; in eventual mode after pushing them).
 *   Before a grant completes on a node, that node catches up: every key in
 *   the previous holder's release set is at least at the recorded version
 *   locally (fetched from peers if needed).  So writes made under a lock
 *   are visible to the next holder on any node.
 *
 * RECOVERY.  A node that restarts (the coordinator says so: its epoch is
 *   not its first) starts RECOVERING: it answers no replica request (so it
 *   never counts toward a quorum) until it has copied, from a majority of
 *   peers, every key's newest accepted value and the largest promise, and
 *   merged them.  It may still act as proposer meanwhile (counting only
 *   its peers).  A value whose local copy fails its integrity check counts
 *   as broken: the replica answers without it, the read completes from the
 *   others and its write-back repairs the copy.
 *
 * Threading: repl_* submission functions may be called from any thread;
 *   they copy their arguments and hand the operation to the repl thread
 *   (transport.h).  Completion callbacks run on the repl thread, once per
 *   operation, and must not block (typically: format a reply, then
 *   net_waker_resume, or signal a condition variable).  Pointers in a
 *   result are valid only during the callback.  The *_sync helpers block
 *   the calling thread (executor threads of the runtime; never a network
 *   worker, never the repl thread).
 */
#ifndef CLOISTER_REPL_REPL_H
#define CLOISTER_REPL_REPL_H

#include <stddef.h>
#include <stdint.h>

#include "transport.h"

typedef struct store store;
typedef struct repl repl;

typedef enum repl_mode { REPL_STRONG = 0, REPL_EVENTUAL = 1 } repl_mode;

typedef struct repl_namespace {
    const char *prefix;   /* key prefix (bytes); "" matches every key */
    repl_mode mode;
} repl_namespace;

typedef struct repl_config {
    int self;                 /* this node's id, 1..n */
    int n;                    /* nodes = replicas of every key: 3 or 5 (1 for tests) */
    uint64_t epoch;           /* this incarnation, from the coordinator; grows per restart */
    int recover;              /* 1: start RECOVERING (see above) */
    store *st;                /* the local replica's storage (sealed) */
    const repl_namespace *ns; /* longest matching prefix wins; none = STRONG */
    size_t n_ns;
    unsigned op_timeout_ms;   /* give up an operation (CL_ETIMEDOUT); 0 = 5000 */
    unsigned push_interval_us;/* eventual: batching delay; 0 = 500 */
    unsigned antientropy_ms;  /* eventual: digest exchange period; 0 = 1000 */
} repl_config;

/* A value as the engine reports it. */
typedef struct repl_val {
    int present;              /* 0: absent (never written, deleted or expired) */
    uint32_t flags;           /* memcached client flags */
    int64_t exptime;          /* absolute Unix seconds, 0 = never */
    uint64_t version;         /* the write's version (also the CAS id) */
    const uint8_t *data;
    size_t len;
} repl_val;

typedef struct repl_result {
    int rc;                   /* CL_OK or a CL_E* code (CL_ENOTFOUND, CL_ETIMEDOUT,
                                 CL_ENOTSTORED, CL_EEXISTS, ...) */
    repl_val val;             /* get: the value; rmw: the value after the op */
    uint64_t token;           /* lock: the fencing token */
} repl_result;

typedef void (*repl_done_fn)(void *arg, const repl_result *res);

/* Read-modify-write step: given the newest value (cur->present may be 0),
 * either fill *next and return REPL_RMW_WRITE (next->data may point into
 * memory owned by arg, valid until done runs; next->version is ignored),
 * return REPL_RMW_KEEP to complete with cur unchanged and rc CL_OK, or
 * return a CL_E* code to complete with that code (e.g. CL_ENOTSTORED for
 * add on a present key).  Runs on the repl thread, possibly several times
 * (retries): it must be pure apart from writing *next and its own scratch. */
#define REPL_RMW_WRITE 1
#define REPL_RMW_KEEP 2
typedef int (*repl_rmw_fn)(void *arg, const repl_val *cur, repl_val *next);

/* Creates the engine; the transport is attached with repl_attach before
 * the repl thread starts.  CL_OK, CL_EINVAL, CL_ENOMEM. */
int repl_create(const repl_config *cfg, repl **out) __attribute__((warn_unused_result));
void repl_attach(repl *r, const repl_transport *tr);
/* The hooks the transport calls (engine = r). */
repl_engine_hooks repl_hooks(repl *r);
/* Fails every pending operation with CL_ECLOSED (callbacks run), frees.
 * Call after the repl thread has stopped. */
void repl_destroy(repl *r);

repl_mode repl_mode_of(const repl *r, const uint8_t *key, size_t klen);
int repl_ready(const repl *r);   /* 0 while RECOVERING */

/* ---- operations (any thread; done runs once on the repl thread) -------- */
/* Every submission returns CL_OK (done will run) or an error without
 * calling done: CL_EBADKEY, CL_ETOOBIG, CL_ECLOSED, CL_ENOMEM. */
int repl_get(repl *r, const uint8_t *key, size_t klen, repl_done_fn done, void *arg);
/* Blind write (memcached set; v->present = 0 writes a tombstone). */
int repl_put(repl *r, const uint8_t *key, size_t klen, const repl_val *v,
             repl_done_fn done, void *arg);
int repl_rmw(repl *r, const uint8_t *key, size_t klen, repl_rmw_fn fn, void *fn_arg,
             repl_done_fn done, void *arg);

/* One key written under a lock, and the version the write produced. */
typedef struct repl_wkey {
    const uint8_t *key;
    size_t klen;
    uint64_t version;
} repl_wkey;

/* Acquires lock `name` for `owner` (nonzero, unique per holder), waiting
 * up to wait_ms; the lease lasts lease_ms.  CL_OK with res->token, or
 * CL_ETIMEDOUT.  Completes only after this node has caught up with the
 * previous holder's release set. */
int repl_lock(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
              unsigned lease_ms, unsigned wait_ms, repl_done_fn done, void *arg);
/* Releases it, recording the write set.  CL_OK, or CL_ESTALE when the
 * lease had run out and the lock moved on (token no longer current). */
int repl_unlock(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                uint64_t token, const repl_wkey *ws, size_t n_ws,
                repl_done_fn done, void *arg);

/* Blocking forms for threads that may block (runtime executors).  The
 * value is copied into buf (cap bytes; CL_ETOOBIG if it does not fit,
 * with *out->len set to the size needed). */
int repl_get_sync(repl *r, const uint8_t *key, size_t klen,
                  uint8_t *buf, size_t cap, repl_val *out);
int repl_put_sync(repl *r, const uint8_t *key, size_t klen, const repl_val *v,
                  uint64_t *version_out);
int repl_rmw_sync(repl *r, const uint8_t *key, size_t klen, repl_rmw_fn fn, void *fn_arg,
                  uint8_t *buf, size_t cap, repl_val *out);

/* ---- observation -------------------------------------------------------- */
typedef struct repl_stats {
    uint64_t gets, gets_one_round, puts, rmws, rmw_retries;
    uint64_t nacks, timeouts, repairs, integrity_failures;
    uint64_t pushed, applied_remote, antientropy_pulled;
    uint64_t lock_grants, lock_waits;
    uint64_t replayed_dropped;   /* stale or duplicate replies ignored */
    int ready;                   /* 0 while RECOVERING */
    int peers_up;
} repl_stats;
void repl_get_stats(repl *r, repl_stats *out);   /* any thread */

#endif
