/*
 * repl.h - the replication engine: every key of the store as a register
 * replicated on all n nodes of the cluster (n = 3 or 5), in one of two
 * consistency modes chosen per namespace (key prefix).
 *
 * STRONG (default): each key is a linearizable register; the cluster
 *   tolerates floor((n-1)/2) crashed nodes.
 *   Versions.  Every value carries a version ts = hlc << 8 | node_id
 *   (hlc.h: a hybrid logical clock, node ids 1..n): one totally ordered
 *   space for ABD timestamps, CASPaxos ballots and eventual-mode stamps,
 *   unique per node, roughly following real time.  The CAS id memcached
 *   clients see (gets, mg c) is the version of the value's last change:
 *   a re-proposal of an unchanged value under a newer ballot keeps it
 *   (the value records it, "origin" below).
 *   Replica state per key: accepted = (ts, value or tombstone) in the
 *   local store (store.h versions and tombstones) and a promised ballot p
 *   (trusted memory, a table indexed by key hash: keys that hash alike
 *   share a slot, which only rejects more; plus a floor for every key,
 *   raised by recovery fences).  Replica rules (spec/repl.pml checks them):
 *     QUERY            -> reply (accepted.ts, value if the proposer's ts differs).
 *     WRITE(ts, v)     -> ts < p: NACK(p) (p includes the recovery floor:
 *                         a restarted replica's copy may predate this
 *                         write, so no vote below its fence may count).
 *                         ts > accepted.ts (or ts >=
 *                         accepted.ts with the REPAIR flag: the proposer saw
 *                         the copy fail its integrity check): accepted =
 *                         (ts, v).  ACK (also when already newer).
 *     PREPARE(b)       -> b > p and b > accepted.ts: p = b, PROMISE(accepted).
 *                         Otherwise NACK(max(p, accepted.ts)).
 *     ACCEPT(b, v)     -> b >= p and b >= accepted.ts: accepted = (b, v)
 *                         (b == accepted.ts: the same proposal again, no
 *                         change), ACK.  Otherwise NACK(max(p, accepted.ts)).
 *   A copy that fails its integrity check answers BROKEN(its version): it
 *   votes, but its value is taken from another replica, and the proposer
 *   writes that value back over it (repair).
 *   History clock.  A strong value carries a small vector: per node, the
 *   largest ballot of that node whose change the value includes.  An RMW
 *   sets its own entry to its ballot; every write inherits the vector of
 *   the newest value it saw (a blind write: of the newest reply to its
 *   QUERY).  A node runs one write per key at a time (later ones queue),
 *   so "my entry >= my first ballot" tells a retrying RMW that an earlier
 *   attempt of its own was chosen: it completes with that attempt's
 *   result instead of applying its function twice.  Two more entries:
 *   "blind", the version of the newest blind write the value descends
 *   from (a blind write sets it to its own version, everything else
 *   inherits it; a value without a vector is a blind write itself), and
 *   "origin", the version of the value's last change when a re-proposal
 *   gave it a newer one.  A blind write inherits a vector that may be
 *   older than an RMW attempt in flight, and can overwrite that attempt
 *   after it was chosen; or it inherits the vector of an attempt that
 *   sat on a minority and was never chosen: so a retrying RMW that wrote
 *   before and finds "blind" newer than its first write cannot tell from
 *   its entry, and reports CL_ETIMEDOUT (unknown) rather than apply f
 *   again or claim the attempt (spec/README.md, findings 2 and 3).  (The vector lives in the sealed
 *   value; store xbit marks values that have one.)
 *   Proposer (the node a client talks to; it is also a replica, applied
 *   locally without a message):
 *     get (ABD read):  QUERY all, wait for a majority.  All carry the same
 *                      ts -> done in one round trip (peers send no value
 *                      then).  Otherwise WRITE the newest back to a
 *                      majority.  If a promise refuses the write-back (an
 *                      RMW in progress, a shared promise slot), the read
 *                      finishes as a CASPaxos round that re-proposes the
 *                      newest value (a new version, the same CAS id).  So
 *                      does a write-back a majority can no longer ACK.
 *     set / blind delete (ABD write): QUERY a majority for the newest ts
 *                      (and promise), WRITE(new version above both) to all,
 *                      wait for a majority of ACKs.  If the WRITE cannot
 *                      get a majority: retry only when every replica
 *                      NACKed and none holds the version (then none ever
 *                      will); otherwise the outcome is unknown:
 *                      CL_ETIMEDOUT.  (A write racing a recovery fence
 *                      can end so.)  A recovering proposer makes no
 *                      version before its fence is known (its clock is
 *                      then above it).
 *     read-modify-write (CASPaxos: cas, add, replace, append, prepend,
 *                      incr, decr, delete with a reply, touch, locks):
 *                      PREPARE(b) to all; on a majority of PROMISEs take
 *                      the newest accepted value; if its history clock
 *                      shows an earlier attempt of this op, that attempt's
 *                      result is the answer; else run the caller's pure
 *                      function on it.  A write, or a keep after promises
 *                      that differ, ACCEPTs (b, value) and waits for a
 *                      majority of ACKs; a keep after identical promises
 *                      completes at once, unless an earlier attempt of the
 *                      op wrote (then b must be chosen to bury it; a key
 *                      never written is re-proposed as a tombstone).  A
 *                      NACK majority or a lost round retries with a larger
 *                      ballot after a random backoff.  Outcomes are never
 *                      guessed: an op that gives up after a write it cannot
 *                      confirm reports CL_ETIMEDOUT (unknown).
 *   Freshness: every request carries the proposer's epoch and a request
 *   id (one per round); replies echo both and are matched in O(1) to the
 *   live round of an operation, so a duplicated, delayed or replayed
 *   message never completes the wrong operation; replica rules are
 *   idempotent and versions only grow (tombstones keep a deleted key's
 *   version, expired values keep theirs), so a replayed request changes
 *   nothing.  Lost requests are retransmitted (same id) until answered.
 *
 * EVENTUAL: a write applies to the local replica and is acknowledged at
 *   once, with version = the hybrid logical clock; it is pushed to every
 *   peer asynchronously in batches (every push_interval_us); a replica
 *   applies a pushed value when its version is larger (last writer wins;
 *   deletes are tombstones).  RMWs (incr, cas, ...) run on the local copy.
 *   Anti-entropy: every antientropy_ms a node sends one peer (in turn)
 *   its digest of the eventual keys (AE_BUCKETS buckets, each the XOR of
 *   hash(key, version) over its keys, kept up to date on every change);
 *   both push every entry of the buckets that differ, so a node that
 *   missed updates (crashed, partitioned, lost pushes) converges.  Reads
 *   are local.
 *
 * LOCKS (PSL release consistency), in either mode: a lock is a strong
 *   register (key "\x01L" + name, CASPaxos) holding {owner, lease end
 *   (wall-clock ms), fencing token, release set}.  repl_lock grants when
 *   the lock is free, its lease has run out, or the owner already holds
 *   it (lease renewed, same token); a new grant's token is the previous
 *   token + 1, so tokens of one lock strictly increase.  While it is held
 *   by another, the request polls (every few ms, by ABD reads, which raise
 *   no promise) until wait_ms, and runs the acquire RMW again when a read
 *   finds the lock free or its lease over.
 *   repl_unlock (in eventual mode after pushing the written values to a
 *   majority) stores the releaser's write set merged into the lock's
 *   release set (eventual-mode keys only: strong keys are linearizable
 *   anyway; at most RS_MAX keys, newest kept).  Before a grant completes
 *   on a node, that node catches up: every key of the release set is at
 *   least at the recorded version locally (fetched from peers if
 *   needed).  So writes made under a lock are visible to the next holder
 *   on any node.  Leases assume clocks agree to well under a lease.
 *
 * RECOVERY.  A node that restarts (cfg.recover) starts RECOVERING: it
 *   answers no strong replica request (WS_NOTREADY: it never counts
 *   toward a quorum; eventual pushes are applied) until it has copied,
 *   from a majority of its peers, every record (SYNC, resumable scans of
 *   their stores) and the largest promise.  First it fences: it asks the
 *   peers for the largest promise/version they know, then every copy
 *   request raises the peer's promise floor to FENCE = that + fence_ms
 *   of clock margin (above every ballot made before the crash, which it
 *   may have promised and forgotten), and it takes FENCE as its own
 *   floor.  It may act as proposer meanwhile (counting only its peers).
 *
 * Threading: repl_* submission functions may be called from any thread;
 *   they copy their arguments and hand the operation to the repl thread
 *   (transport.h).  Completion callbacks run on the repl thread, once per
 *   operation, and must not block (typically: format a reply, then
 *   net_waker_resume, or signal a condition variable).  Pointers in a
 *   result are valid only during the callback.  The *_sync helpers block
 *   the calling thread (never the repl thread): the runtime's executors,
 *   and the memcached front door's workers through kv.h, which is why a
 *   cluster node runs more of them.
 *
 * The store: in a cluster the engine owns the local store.  Nothing else
 *   may write it (writes go through repl_*); eventual-mode keys may be
 *   read directly with store_get (their values are stored as they are;
 *   tombstones and expired values are invisible), strong-mode values may
 *   carry the history clock in front of the bytes (store xbit) and are
 *   read through repl_get.  flush_all has no cluster meaning yet.
 *
 * Files: repl.c (lifecycle, op table, timers), replica.c (the rules),
 *   strong.c (ABD + CASPaxos proposer), eventual.c, lock.c, recover.c,
 *   wire.[ch] (messages), hlc.[ch], ops.[ch] (memcached RMW functions).
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
    unsigned retry_ms;        /* first retransmission time-out (doubles, <= 1 s); 0 = 50 */
    unsigned fence_ms;        /* recovery fence margin: more than the clock skew; 0 = 2000 */
    /* Wall clock in Unix milliseconds (hybrid logical clock, lease ends);
     * NULL = CLOCK_REALTIME.  Tests pass a simulated one. */
    uint64_t (*wall_ms)(void *wall_arg);
    void *wall_arg;
    uint64_t seed;            /* backoff randomness; 0 = from the OS */
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
/* Largest value the cluster replicates: the store's max_value less the
 * history clock, at most 1.5 MiB (messages stay below REPL_MAX_MSG).
 * Larger puts are CL_ETOOBIG; so is an RMW whose result is larger. */
size_t repl_max_value(const repl *r);
int repl_ready(const repl *r);   /* 0 while RECOVERING */

/* ---- operations (any thread; done runs once on the repl thread) -------- */
/* Every submission returns CL_OK (done will run) or an error without
 * calling done: CL_EBADKEY, CL_ETOOBIG, CL_ECLOSED, CL_ENOMEM. */
/* Read: CL_OK (res->val), CL_ENOTFOUND (absent, deleted or expired),
 * CL_EINTEGRITY (every copy failed its check), CL_ETIMEDOUT, CL_ENOQUORUM. */
int repl_get(repl *r, const uint8_t *key, size_t klen, repl_done_fn done, void *arg);
/* Blind write (memcached set; v->present = 0 writes a tombstone).  The
 * result's val.version is the new version. */
int repl_put(repl *r, const uint8_t *key, size_t klen, const repl_val *v,
             repl_done_fn done, void *arg);
/* Read-modify-write (ops.h has memcached's).  In eventual mode it runs on
 * the local copy and is pushed like a put. */
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
 * lease had run out and the lock moved on (token no longer current).
 * Token 0 releases the owner's grant whatever its token (for a grant of
 * unknown outcome: owners must be unique per holder).  A lock whose
 * acquire wrote and then failed is released so by the engine itself. */
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
int repl_lock_sync(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                   unsigned lease_ms, unsigned wait_ms, uint64_t *token_out);
int repl_unlock_sync(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                     uint64_t token, const repl_wkey *ws, size_t n_ws);

/* ---- observation -------------------------------------------------------- */
typedef struct repl_stats {
    uint64_t gets, gets_one_round, puts, rmws, rmw_retries;
    uint64_t writebacks;         /* ABD reads that wrote the newest value back */
    uint64_t rmw_dedup;          /* RMW retries that found their earlier attempt chosen */
    uint64_t nacks, timeouts, repairs, integrity_failures;
    uint64_t pushed, applied_remote, antientropy_pulled;
    uint64_t lock_grants, lock_waits, lock_releases, catchup_fetched;
    uint64_t replayed_dropped;   /* stale or duplicate replies ignored */
    uint64_t msgs_in, msgs_out;  /* transport messages (each a batch of records) */
    uint64_t recovered_records;  /* records copied while RECOVERING */
    uint64_t newest_version;     /* the largest version this replica stored (lag) */
    int ready;                   /* 0 while RECOVERING */
    int peers_up;
    int self, n;                 /* this node's id, the cluster size */
    uint64_t epoch;              /* this incarnation */
} repl_stats;
void repl_get_stats(repl *r, repl_stats *out);   /* any thread */

#endif
