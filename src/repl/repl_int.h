/*
 * repl_int.h - the replication engine's internals, shared by its files:
 *
 *   repl.c     lifecycle, submissions, the op table, timers, messages in
 *              and out, completion, statistics, the blocking helpers
 *   replica.c  the replica rules (QUERY/WRITE/PREPARE/ACCEPT/PUSH/SYNC)
 *              over the local store, the promise table
 *   strong.c   the proposer: ABD get and put, CASPaxos read-modify-write
 *   eventual.c eventual mode: local writes, batched push, anti-entropy
 *   lock.c     locks: the lock register, waiting, catch-up, release
 *   recover.c  recovery of a restarted node: fence, copy, ready
 *
 * Everything here runs on the repl thread, except the inbox (submissions
 * from any thread, under inbox_lock) and the statistics (atomics).
 * Nothing here may block.
 */
#ifndef CLOISTER_REPL_REPL_INT_H
#define CLOISTER_REPL_REPL_INT_H

#include <pthread.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../store/store.h"
#include "hlc.h"
#include "repl.h"
#include "wire.h"

#define SLOT_BITS 16
#define NSLOTS (1u << SLOT_BITS)             /* operations in flight at most */
#define PROMISE_BITS 16                      /* promise table: 2^16 shared slots */
#define KTAB_BITS 12                         /* keys with a write in flight */
#define AE_BUCKETS 256                       /* anti-entropy digest buckets */
#define LOCK_PREFIX "\x01L"                  /* lock registers' keys: prefix + name */
#define LOCK_PREFIX_LEN 2
#define RS_MAX 256                           /* release set entries kept per lock */
#define REPL_VALUE_MAX (1536u << 10)            /* largest value replicated (messages < 4 MiB) */
#define TRIES_MAX 8                          /* RMW attempts with unknown outcome kept */

typedef uint8_t nodeset;                     /* bit i = node id i (1..7) */

enum op_kind { OPK_GET, OPK_PUT, OPK_RMW, OPK_LOCK, OPK_UNLOCK, OPK_FETCH };

enum op_phase {
    PH_NEW,        /* not started */
    PH_QUEUED,     /* waits for an earlier write of the same key from this node */
    PH_QUERY,      /* ABD read: QUERY */
    PH_WRITEBACK,  /* ABD read: WRITE the newest back */
    PH_WQUERY,     /* ABD write: QUERY for the newest ts and vec */
    PH_WRITE,      /* ABD write: WRITE */
    PH_PREPARE,    /* CASPaxos: PREPARE */
    PH_ACCEPT,     /* CASPaxos: ACCEPT */
    PH_BACKOFF,    /* waiting before the next attempt */
    PH_LOCKWAIT,   /* lock held by someone else: poll again later */
    PH_CATCHUP,    /* lock granted: fetching the release set (children) */
    PH_PUSH,       /* eventual unlock: pushing the write set, waiting for acks */
    PH_DONE,
};

/* A value an operation holds (its own copy of the blob). */
typedef struct rval {
    uint64_t version;
    uint32_t flags;
    int64_t exptime;
    uint8_t kind;    /* REC_* */
    uint8_t xbit;
    cl_buf blob;
} rval;

/* A write attempt of an RMW whose outcome is not known (it may have been
 * chosen): its ballot and the result the caller would get. */
struct attempt {
    uint64_t ballot;
    int rc;
    uint32_t flags;
    int64_t exptime;
    uint8_t present;
    cl_buf data;     /* the value after the op */
};

struct wkey_own {    /* a write-set entry copied into the op */
    uint8_t klen;
    uint8_t key[WIRE_KEY_MAX];
    uint64_t version;
};

typedef struct op {
    struct op *next;              /* inbox, key wait queue */
    struct op *t_prev, *t_next;   /* the active list */
    struct op *k_next;            /* key table chain */
    struct op *k_wait, *k_wait_tail;
    struct op *parent;            /* a FETCH's lock op */
    uint8_t kind, phase, mode, klen;
    uint8_t in_ktab;
    uint8_t local_broken;         /* the local copy failed its check: ask peers for values */
    uint8_t read_only;            /* a get finishing as a CASPaxos keep (strong.c) */
    uint8_t polling;              /* a waiting lock reading its register (strong_poll) */
    uint64_t uid;                 /* unique per op (timer pass) */
    uint32_t slot;                /* op table slot (NSLOTS: none) */
    uint64_t rid;                 /* request id of the current round */
    uint64_t khash;
    uint64_t deadline_us;         /* the op fails at this time */
    uint64_t timer_us;            /* next retransmission / end of a wait */
    uint64_t rto_us;
    unsigned attempt;             /* rounds restarted (backoff) */
    unsigned polls;               /* lock: times found held (poll backoff) */

    /* round state */
    nodeset sent, replied, counted, acked, nacked, broken, at_hi, notready;
    uint64_t round_ts;            /* WRITE/WRITEBACK/ACCEPT: the version written; PREPARE: ballot */
    uint64_t known_ts;            /* the local version when the round started */
    int local_ok;                 /* the local replica took part (counted) */
    uint64_t hi, lo;              /* newest / oldest ts among counted replies */
    uint64_t seen;                /* the largest ts or promise met (next ballot above it) */
    uint64_t nack_acc;            /* WRITE: the newest accepted ts among NACKs */
    int have_best;                /* best holds the value at hi */
    rval best;                    /* the newest value a reply carried */
    int hivec_ok;                 /* PUT: hivec is the vec of the value at hi */
    rvec hivec;

    /* RMW */
    uint64_t first_ts;            /* the first ballot (history clock check) */
    struct attempt *tries;        /* TRIES_MAX of them, allocated at the first write */
    unsigned n_tries;
    int writing;                  /* the current ACCEPT carries a new value (not a keep) */
    int keep_rc;                  /* the rc to complete with after a keep accept */
    struct attempt *keep_res;     /* ... or this earlier attempt's result */
    rval acc;                     /* the value the current ACCEPT/WRITE carries */

    /* API */
    repl_done_fn done;
    void *arg;
    repl_rmw_fn fn;
    void *fn_arg;
    uint32_t v_flags;             /* PUT */
    int64_t v_exptime;
    int v_present;
    const uint8_t *v_data;        /* in tail */
    size_t v_len;

    /* locks */
    uint64_t owner, token;
    unsigned lease_ms;
    unsigned wait_ms;             /* LOCK: as submitted */
    uint64_t wait_until_us;       /* LOCK: no new attempt after this */
    struct wkey_own *ws;          /* UNLOCK: the write set (in tail) */
    uint32_t n_ws;
    uint32_t children;            /* FETCH ops outstanding */
    int child_rc;
    uint64_t need_version;        /* FETCH */
    repl *eng;                    /* for the lock functions */
    cl_buf fnbuf;                 /* the lock functions' output value */

    uint8_t key[WIRE_KEY_MAX];
    uint8_t tail[] __attribute__((aligned(16))); /* PUT value bytes / UNLOCK write set */
} op;

struct due;

struct slot {
    uint64_t rid;
    op *o;
};

struct recover_peer {
    uint64_t cursor;
    uint64_t rid;
    uint64_t sent_us;
    uint8_t state;                /* 0 idle, 1 probe sent, 2 probed, 3 copying, 4 done */
};

struct repl {
    repl_config cfg;
    repl_namespace *ns;           /* owned copies of the prefixes */
    repl_transport tr;
    int attached;
    store *st;
    store_thread *t;              /* used on the repl thread only */
    int self, n, maj;
    uint64_t epoch;
    hlc clock;
    uint64_t rng;

    int ready;                    /* answers replica requests */
    nodeset up;                   /* peers reachable now */
    uint64_t peer_epoch[REPL_MAX_NODES + 1];

    cl_buf out[REPL_MAX_NODES + 1];
    cl_buf scratch;               /* local value reads */
    uint64_t now_us;              /* this step's time */

    pthread_mutex_t inbox_lock;
    op *inbox_head, *inbox_tail;
    int closed;

    struct slot *slots;
    uint32_t *free_slots;
    uint32_t n_free;
    uint64_t rid_seq;
    uint64_t uid_seq;
    op *active;                   /* every op with a slot */
    uint64_t next_timer_us;
    struct due *due;              /* the timer pass's work list (repl.c) */
    size_t due_cap;

    op *ktab[1u << KTAB_BITS];

    uint64_t *promise;            /* per key hash slot */
    uint64_t promise_floor;       /* every key: promised at least this (recovery fence) */
    uint64_t promise_max;         /* largest promise ever made or floor */

    /* eventual */
    cl_buf push;                  /* PUSH entries waiting (one shared record, see eventual.c) */
    uint32_t push_n;
    uint64_t push_due_us;
    uint64_t digest[AE_BUCKETS];
    uint64_t ae_due_us;
    int ae_next_peer;
    uint64_t ae_rid;

    /* recovery */
    struct recover_peer rec[REPL_MAX_NODES + 1];
    uint64_t fence;
    int rec_phase;                /* 0 none, 1 probing, 2 copying */
    uint64_t rec_seen;            /* the largest promise/version/floor peers reported */

    repl_stats stats;             /* written on the repl thread with atomics */
};

/* ---- repl.c --------------------------------------------------------------- */
#define STAT_INC(r, f) __atomic_add_fetch(&(r)->stats.f, 1, __ATOMIC_RELAXED)
#define STAT_ADD(r, f, n) __atomic_add_fetch(&(r)->stats.f, (n), __ATOMIC_RELAXED)

uint64_t repl_wall_ms(repl *r);
uint64_t repl_rand(repl *r);
uint64_t repl_key_hash(const uint8_t *key, size_t klen);
int repl_key_mode(const repl *r, const uint8_t *key, size_t klen);
/* A new version above everything seen (and above `floor`). */
uint64_t repl_new_version(repl *r, uint64_t floor);
/* The output buffer for a peer (a record appended to it leaves at the
 * end of the step). */
cl_buf *repl_out(repl *r, int node);
int repl_reachable(const repl *r);   /* voters reachable now, self included if ready */
/* Op table and lifecycle. */
int op_start_round(repl *r, op *o);           /* new rid, clears round state; CL_ENOMEM */
void op_arm(repl *r, op *o, uint64_t at_us);  /* timer */
void op_finish(repl *r, op *o, int rc, const repl_val *val, uint64_t token);
op *op_new_internal(repl *r, int kind, const uint8_t *key, size_t klen);
void op_begin(repl *r, op *o);                /* dispatches a new op by kind */
void rval_set(rval *v, const wire_rec *rec);  /* copies */
void rval_fini(rval *v);
/* Reads the local raw record of key into r->scratch (value if want):
 * CL_OK, CL_ENOTFOUND (rec kind NONE, version 0), CL_EINTEGRITY (meta
 * filled, no value). */
int local_read(repl *r, const uint8_t *key, size_t klen, int want, wire_rec *rec);
/* Appends the record of a store scan item (key, version, metadata, the
 * sealed blob as stored) to out.  CL_OK, CL_ENOMEM, or CL_EINTEGRITY
 * (its value failed to open; out is left as it was). */
int scan_rec_append(cl_buf *out, const uint8_t *key, size_t klen, const store_meta *m,
                    store_scan_item *it);
/* Decodes a record into the API's view of a value at wall time now. */
void rec_to_val(const wire_rec *rec, uint64_t now_ms, repl_val *v);

/* ---- replica.c -------------------------------------------------------------- */
uint64_t promise_of(repl *r, uint64_t khash);
void promise_raise(repl *r, uint64_t khash, uint64_t b);
/* Stores a record in the local replica (if_newer).  CL_OK, CL_EEXISTS
 * (not newer), or a store error. */
int replica_store(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, int if_newer);
/* The replica rules, for the local replica and for requests from peers. */
struct rr {                        /* a replica's answer */
    uint8_t status;
    uint64_t ts;                   /* accepted ts (or the broken copy's) */
    uint64_t promise;              /* NACK: max(promise, accepted) */
};
void replica_write(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, int repair,
                   struct rr *out);
void replica_prepare(repl *r, const uint8_t *key, size_t klen, uint64_t ballot, struct rr *out);
void replica_accept(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, struct rr *out);
/* Handles one request record from a peer; replies go to repl_out(from). */
void replica_on_request(repl *r, int from, uint8_t type, wire_rd *body);

/* ---- strong.c ------------------------------------------------------------------ */
void strong_begin(repl *r, op *o);
void strong_on_reply(repl *r, op *o, int from, const wire_reply *rp);
void strong_resend(repl *r, op *o, nodeset to);
void strong_timer(repl *r, op *o);
void strong_key_release(repl *r, op *o);      /* starts the next queued op of the key */
void strong_unqueue(repl *r, op *o);          /* a queued op leaves its key's queue */
/* Starts the CASPaxos part of an op (RMW, lock, unlock): queues behind an
 * earlier write of the same key from this node, or begins an attempt. */
void strong_rmw_begin(repl *r, op *o);
/* A read of a lock op's register (ABD, no promise raised), completing
 * through lock_rmw_done with o->polling set. */
void strong_poll(repl *r, op *o);

/* ---- eventual.c ------------------------------------------------------------------ */
void ev_begin(repl *r, op *o);
/* Applies a pushed/pulled record (LWW); keeps the digest.  1 if applied. */
int ev_apply(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec);
void ev_note_write(repl *r, const uint8_t *key, size_t klen, uint64_t old_v, uint64_t new_v);
void ev_queue_push(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec);
void ev_tick(repl *r);
void ev_on_digest(repl *r, int from, wire_rd *body);
void ev_on_diff(repl *r, int from, wire_rd *body);

/* ---- lock.c ------------------------------------------------------------------------ */
void lock_begin(repl *r, op *o);
/* The RMW of a lock op completed (rc, value after). */
void lock_rmw_done(repl *r, op *o, int rc, const repl_val *val);
void lock_timer(repl *r, op *o);
void lock_child_done(repl *r, op *parent, int rc);
/* A lock op ends without a grant: if an acquire of it wrote, release
 * whatever its owner holds (the grant may have happened). */
void lock_abandoned(repl *r, const op *o);
void lock_push_reply(repl *r, op *o, int from, const wire_reply *rp);
void fetch_begin(repl *r, op *o);
void fetch_on_reply(repl *r, op *o, int from, const wire_reply *rp);
void fetch_resend(repl *r, op *o);

/* ---- recover.c ---------------------------------------------------------------------- */
void recover_start(repl *r);
void recover_tick(repl *r);
void recover_on_synced(repl *r, int from, wire_rd *body);
void recover_on_reply(repl *r, int from, const wire_reply *rp);
/* Serves a SYNC request (replica side): fence, then a slice of the store. */
void recover_serve(repl *r, int from, wire_rd *body);

#endif
