/*
 * index.h - the trusted hash index: item records keyed by their key.
 *
 * Every stored item has one record (kv_item) in trusted memory holding its
 * key and all metadata; the value bytes are sealed in the arena at
 * (it->off, it->cls).  Records are found through a chained hash table
 * whose buckets are protected by lock stripes: stripe = hash & stripe mask,
 * bucket = hash & bucket mask, and since there are never fewer buckets
 * than stripes, each bucket belongs to exactly one stripe for ever.  A
 * thread holding a key's stripe lock may read and change that key's
 * record and chain; operations on keys of different stripes run in
 * parallel.
 *
 * The hash is XXH3-64 with a random per-index seed, so clients cannot
 * aim keys at one chain.
 *
 * Growth: when the load factor exceeds 1.5 the table doubles.
 * kv_index_link() reports that; the caller, after releasing its stripe,
 * calls kv_index_grow(), which takes every stripe lock in ascending order
 * and rehashes (a stop-the-world pause of roughly 10-20 ns per item; at
 * most one grower runs, others skip).  It must be called with no stripe
 * held.  Growth stops at the trusted-memory limit (chains get longer).
 *
 * Records come from a size-class allocator (key length rounded up to 16
 * bytes) carved from 64 KiB blocks: no malloc per operation in steady
 * state.  Blocks are counted against the trusted-memory limit given to
 * kv_index_create(); a record that would need a block beyond it is
 * CL_EFULL.  Freed records are reused within their class; blocks are
 * never returned to the OS.
 *
 * Lock order: grow mutex -> stripes (ascending, only in grow); a stripe ->
 * record class lock (leaf).  Nothing else nests two stripes, except by
 * trylock.
 *
 * Called by: store.c (which owns LRU links, arena fields and policy).
 */
#ifndef CLOISTER_STORE_INDEX_H
#define CLOISTER_STORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "../trust/seal.h"

/* Item record bits. */
enum {
    KV_ITEM_FETCHED    = 1 << 0,  /* read since written (meta 'h') */
    KV_ITEM_LOGGED     = 1 << 1,  /* integrity failure already logged */
    KV_ITEM_STALE      = 1 << 2,  /* invalidated, still served (meta X; store.c) */
    KV_ITEM_TOKEN_SENT = 1 << 3,  /* its recache token is out (meta W, then Z; store.c) */
    KV_ITEM_TOMB       = 1 << 4,  /* tombstone: remembers a deletion's version (store.c) */
    KV_ITEM_NOCHUNK    = 1 << 5,  /* holds no arena chunk and is on no LRU list (a
                                     tombstone without bytes; store.c) */
    KV_ITEM_XBIT       = 1 << 6,  /* one bit kept for the replication layer (store.h) */
};

/*
 * The record.  All fields are protected by the stripe lock of `hash`,
 * except lru_prev/lru_next, which the LRU list lock of class `cls`
 * protects (store.c).  `hash`, `klen` and `key` never change while the
 * record is linked.
 */
typedef struct kv_item {
    struct kv_item *h_next;                 /* hash chain (free list when free) */
    struct kv_item *lru_prev, *lru_next;    /* LRU of arena class cls */
    uint64_t hash;
    uint64_t cas;                           /* CAS id = nonce sequence of the sealed value */
    uint64_t version;                       /* replication version (repl/), 0 = none */
    int64_t exptime;                        /* absolute Unix seconds, 0 = never */
    uint64_t off;                           /* arena offset of the sealed value */
    uint32_t len;                           /* value length (plaintext = ciphertext) */
    uint32_t flags;                         /* client flags */
    uint32_t stored_at;                     /* Unix seconds of the write (delayed flush) */
    uint32_t last_access;                   /* Unix seconds of the last fetch or write */
    uint32_t lru_time;                      /* Unix seconds of the last LRU bump */
    uint8_t cls;                            /* arena class of the chunk */
    uint8_t bits;                           /* KV_ITEM_* */
    uint8_t klen;                           /* 1..250 */
    uint8_t rec_class;                      /* record size class (allocator) */
    uint8_t tag[SEAL_TAG_LEN];              /* AEAD tag of the sealed value */
    uint8_t key[];                          /* klen bytes */
} kv_item;

typedef struct kv_index kv_index;

#define KV_INDEX_KEY_MAX 250

/*
 * Creates an index whose trusted memory (table, records, stripes) stays
 * within limit_bytes, starting with 2^hashpower buckets (raised to the
 * stripe count if smaller).  CL_OK, CL_EINVAL (limit below the initial
 * footprint), CL_ENOMEM, CL_ECRYPTO (no seed).
 */
int kv_index_create(size_t limit_bytes, unsigned hashpower, kv_index **out)
    __attribute__((warn_unused_result));
/* Frees the table, every record and block.  No lock may be held. */
void kv_index_destroy(kv_index *ix);

uint64_t kv_index_hash(const kv_index *ix, const uint8_t *key, size_t klen);

/* Stripe locks.  trylock returns 0 when acquired (pthread convention). */
void kv_index_lock(kv_index *ix, uint64_t hash);
int kv_index_trylock(kv_index *ix, uint64_t hash);
void kv_index_unlock(kv_index *ix, uint64_t hash);

/* do_ functions: the caller holds the stripe lock of `hash` / it->hash. */
kv_item *do_kv_index_find(kv_index *ix, uint64_t hash, const uint8_t *key, size_t klen);
/* Links a record (it->hash, key set).  Returns 1 if the table should grow. */
int do_kv_index_link(kv_index *ix, kv_item *it);
void do_kv_index_unlink(kv_index *ix, kv_item *it);

/* Doubles the table if the load factor calls for it and the limit allows.
 * Takes every stripe: call with no stripe lock held. */
void kv_index_grow(kv_index *ix);

/* A record for a key of klen bytes, its key and klen set, other fields
 * zero.  CL_OK, CL_EFULL (trusted limit), CL_ENOMEM, CL_EBADKEY. */
int kv_index_item_alloc(kv_index *ix, size_t klen, kv_item **out)
    __attribute__((warn_unused_result));
/* Returns an unlinked record to its class. */
void kv_index_item_free(kv_index *ix, kv_item *it);

/*
 * Visits one bucket for a resumable scan (cursor 0 starts one): takes the
 * bucket's stripe, calls fn on every record in it (stripe held; fn must
 * not take another stripe), releases it and returns the next cursor, 0
 * when the scan is complete.  The cursor walks bucket indexes in
 * reverse-bit order (Redis's dictScan), so every record linked for the
 * whole scan is visited at least once even if the table grows between
 * calls; a record may be visited twice.  Call with no stripe held.
 */
uint64_t kv_index_scan(kv_index *ix, uint64_t cursor,
                       void (*fn)(void *arg, kv_item *it), void *arg);

/* Gauges (racy reads). */
uint64_t kv_index_count(const kv_index *ix);
unsigned kv_index_hashpower(const kv_index *ix);
size_t kv_index_table_bytes(const kv_index *ix);
size_t kv_index_trusted_bytes(const kv_index *ix);
size_t kv_index_limit(const kv_index *ix);
unsigned kv_index_stripe_count(void);

#endif
