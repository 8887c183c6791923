/*
 * store.h - the single-node store engine: a trusted index over sealed values.
 *
 * Split design (Avocado): keys and metadata (length, flags, expiry, CAS id,
 * arena location, AEAD tag) live in a hash index in trusted process memory;
 * value bytes live in the arena, an untrusted mapping, sealed with
 * AES-256-GCM by the trust module (trust/seal.h).  The associated data of
 * every sealed value binds its key, its CAS id (which is also the nonce
 * sequence and changes with every write) and its flags, so an altered
 * byte, a value copied to another key, or an older arena restored is
 * reported as CL_EINTEGRITY and never returned as data.
 *
 * Semantics follow memcached 1.6, with storage instead of cache semantics
 * by default: when the arena is full a write fails with CL_EFULL and
 * nothing is evicted, unless the store was created with evict_lru.
 * Expired items are never returned and their memory is reclaimed lazily.
 *
 * Threading: the store is shared by all worker threads; each thread uses
 * its own store_thread (cipher context, scratch space, counters).  Every
 * operation is atomic with respect to the others on the same key.
 *
 * Times: exptime arguments are absolute Unix seconds (0 = never expires,
 * a value <= now means already expired); use store_exptime() to convert
 * memcached's client form.
 *
 * Anti-stampede state (memcached's meta "stale-while-revalidate"): an
 * item may be *stale* (invalidated by store_invalidate() or by a
 * store_set() with stale_if_older, still readable) and its *recache
 * token* may be out (one reader was told to recompute the value).  A
 * reader that asks for it (store_get_opts.recache) wins the token when
 * none is out and the item is stale, expires before recache_before, or
 * was just created for it (vivify); every later reader sees token_sent.
 * Both bits live in the item under its lock, so exactly one reader wins.
 * Writes of a new value clear them (set, add, replace, cas, append,
 * prepend), except a stale_if_older store, which marks the new value
 * stale and keeps the token; touches and incr/decr keep them (as
 * memcached's in-place incr does).
 *
 * Replication (repl/) adds three things, all unused by a single node:
 *   - a *version* per item (u64 trusted metadata, 0 = none), set by
 *     store_set (store_write.version) and reported in store_meta;
 *   - *tombstones*: items that only remember a deletion's version (and
 *     the replication layer's few bytes of metadata as their value).
 *     Every ordinary read, write condition, delete, touch and incr
 *     treats a tombstone as absent; only raw reads and scans see it; it
 *     is counted in store_stats.tombstones, not in curr_items;
 *   - versioned items are never forgotten: expiry and flush_all hide
 *     them like any item, but the record (and its version) stays until
 *     it is overwritten; when memory runs short an expired versioned
 *     item gives its arena chunk back and becomes a tombstone without
 *     bytes.  (So a replica never loses a version and an old write can
 *     never come back.)  Eviction (evict_lru) is not for replicated
 *     stores.
 *   - store_scan(): a resumable enumeration of every record, safe
 *     concurrently with writes (recovery, anti-entropy).
 * A replicated store is written only through store_set with a version
 * (incr/append/touch/invalidate keep an item's version as it is).
 */
#ifndef CLOISTER_STORE_STORE_H
#define CLOISTER_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_KEY_MAX 250                 /* bytes, as memcached */
#define STORE_DEFAULT_MAX_VALUE (1u << 20)

typedef struct store store;
typedef struct store_thread store_thread;

typedef struct store_config {
    size_t memory_bytes;    /* arena (untrusted) size; --memory */
    size_t index_bytes;     /* bound on trusted index memory; 0 = memory_bytes / 2 + 16 MiB */
    size_t max_value;       /* largest value accepted; 0 = STORE_DEFAULT_MAX_VALUE; --max-value */
    const char *arena_file; /* back the arena with this file (created or truncated); NULL = anonymous */
    int evict_lru;          /* 1: evict least recently used items when full (--evict lru) */
} store_config;

/* What a lookup reports about an item. */
typedef struct store_meta {
    uint32_t flags;       /* client flags */
    uint32_t len;         /* value length in bytes */
    uint64_t cas;         /* CAS id; unique per write, never reused */
    int64_t exptime;      /* absolute Unix seconds, 0 = never */
    int64_t last_access;  /* Unix seconds of the last fetch or write */
    int fetched;          /* 1 if fetched before this access (meta 'h') */
    int slab_class;       /* arena size class (meta debug) */
    int stale;            /* 1: invalidated; the value needs recaching (meta X) */
    int token_sent;       /* 1: the recache token was handed out before this access (meta Z) */
    int won;              /* 1: this access was handed the recache token (meta W) */
    uint64_t version;     /* replication version; 0 = none */
    int tombstone;        /* raw reads and scans only: a tombstone */
    int expired;          /* raw reads and scans only: expired or flushed (hidden) */
    int xbit;             /* the replication layer's bit (store_write.xbit) */
} store_meta;

/*
 * Creates a store.  Returns CL_OK, CL_EINVAL (bad config), CL_EIO (arena
 * file), CL_ENOMEM, CL_ECRYPTO.  The store owns its arena mapping and
 * sealing key; store_destroy() unmaps, zeroes the key and frees all.
 * No store_thread may be alive when store_destroy() is called.
 */
int store_create(const store_config *cfg, store **out) __attribute__((warn_unused_result));
void store_destroy(store *s);

/* Per-thread handle; one per worker thread, used by that thread only. */
int store_thread_create(store *s, store_thread **out) __attribute__((warn_unused_result));
void store_thread_destroy(store_thread *t);

/* Largest value this store accepts, in bytes. */
size_t store_max_value(const store *s);

/* Converts memcached's exptime (0 = never; <= 30 days = relative seconds;
 * larger = absolute Unix time; negative = already expired) to absolute. */
int64_t store_exptime(int64_t client_exptime);

/* Current time in Unix seconds as the store sees it (coarse clock). */
int64_t store_now(void);

/* ---- reads ---------------------------------------------------------------- */

typedef struct store_get_opts {
    int want_value;       /* 0: metadata only, nothing is decrypted */
    int touch;            /* 1: set exptime to `exptime` (gat, mg T) */
    int64_t exptime;      /* absolute, for touch */
    int no_bump;          /* 1: do not update access time / LRU / fetched (mg u... ) */
    /* Anti-stampede (meta mg; see the top of this file).  Zero for plain
     * reads, which never take a token. */
    int recache;          /* 1: win the recache token if none is out and the item is
                             stale or expires before recache_before (meta->won) */
    int64_t recache_before; /* absolute; 0 = only staleness wins (mg R) */
    int vivify;           /* 1: on a miss, create an empty item (flags 0, exptime
                             vivify_exptime) and win its token (mg N) */
    int64_t vivify_exptime; /* absolute, for vivify; a touch overrides it */
    /* Replication: also find tombstones and expired/flushed versioned
     * items (meta->tombstone, meta->expired tell which); nothing about
     * the item changes (no touch, bump, token or statistics; the other
     * options are ignored), and on CL_EINTEGRITY *meta is filled too. */
    int raw;
} store_get_opts;

/*
 * Called at most once by store_get, with the item locked, to learn where
 * to put m->len bytes of plaintext.  Returns a trusted buffer of at least
 * m->len bytes, or NULL to make store_get fail with CL_ENOMEM (for
 * m->len == 0, NULL is accepted and is not an error).  If
 * store_get then fails with CL_EINTEGRITY the buffer has been zeroed and
 * the caller must discard it (e.g. truncate its reply buffer).
 */
typedef uint8_t *(*store_sink_fn)(void *arg, const store_meta *m);

/*
 * Looks a key up.  On CL_OK fills *meta (if non-NULL) and, when
 * opts->want_value, writes the value through sink.  Returns CL_OK,
 * CL_ENOTFOUND (absent, expired or flushed), CL_EINTEGRITY (the sealed
 * value failed authentication: counted, logged once per key), CL_ENOMEM
 * (sink returned NULL), CL_EBADKEY, and with vivify CL_EFULL (no room for
 * the new item).  A raw read returns CL_ENOTFOUND only when no record
 * exists; a tombstone without bytes has len 0 and the sink is not called.  opts may be NULL (value, no touch).  The token is won,
 * and the touch applied, only when CL_OK is returned.  A vivified item
 * counts as a miss in the statistics.
 */
int store_get(store_thread *t, const uint8_t *key, size_t klen,
              const store_get_opts *opts, store_sink_fn sink, void *arg,
              store_meta *meta);

/* ---- writes --------------------------------------------------------------- */

typedef enum store_mode {
    STORE_SET = 0,
    STORE_ADD,       /* only if absent */
    STORE_REPLACE,   /* only if present */
    STORE_APPEND,    /* present: value = old + new; flags/exptime kept */
    STORE_PREPEND,   /* present: value = new + old; flags/exptime kept */
} store_mode;

typedef struct store_write {
    store_mode mode;
    uint32_t flags;
    int64_t exptime;     /* absolute */
    uint64_t cas;        /* nonzero: succeed only if the item exists with this CAS id */
    int stale_if_older;  /* with cas, set/replace only: a cas older (smaller) than the
                            item's still stores, but the new item is stale and keeps
                            the old exptime and token state (meta ms I) */
    /* Replication (mode STORE_SET only; all zero for a single node): */
    uint64_t version;    /* the item's new version; 0 = none */
    int tombstone;       /* 1: store a tombstone (val: its metadata bytes, may be empty) */
    int if_newer;        /* 1: store only if version > the version of the key's record
                            (live, hidden or tombstone; absent = 0), else CL_EEXISTS */
    int xbit;            /* one bit the store keeps for the replication layer with the
                            version (its meaning is repl's: the value starts with a
                            header); reported in store_meta.xbit */
} store_write;

/*
 * Stores len bytes of val under key.  Returns CL_OK (and the new CAS id in
 * *cas_out if non-NULL), CL_ENOTSTORED (add: present; replace/append/
 * prepend: absent), CL_EEXISTS (cas given and the item's differs),
 * CL_ENOTFOUND (cas given and the item is absent), CL_EEXISTS (if_newer and
 * the record is not older), CL_ETOOBIG (len, or
 * the appended result, exceeds max_value), CL_EFULL (no room and no
 * eviction), CL_EINTEGRITY (append/prepend to a value that fails
 * authentication), CL_EBADKEY.  On any failure the previous item is left
 * exactly as it was.
 */
int store_set(store_thread *t, const uint8_t *key, size_t klen,
              const uint8_t *val, size_t len, const store_write *w,
              uint64_t *cas_out);

/* Deletes key.  cas nonzero: only if it matches.  CL_OK, CL_ENOTFOUND,
 * CL_EEXISTS, CL_EBADKEY. */
int store_delete(store_thread *t, const uint8_t *key, size_t klen, uint64_t cas);

/*
 * Marks key stale instead of deleting it (meta md I): the value stays
 * readable, the token is taken back so the next recache reader wins it,
 * and the item gets a new CAS id (so a writer holding the old one can
 * only store a stale value).  cas nonzero: only if it matches.  touch: also
 * set exptime (absolute).  Returns CL_OK (the new CAS id in *cas_out if
 * non-NULL), CL_ENOTFOUND, CL_EEXISTS, CL_EINTEGRITY (the value failed
 * authentication; item unchanged), CL_ECRYPTO (the item is dropped),
 * CL_EBADKEY.
 */
int store_invalidate(store_thread *t, const uint8_t *key, size_t klen, uint64_t cas,
                     int touch, int64_t exptime, uint64_t *cas_out);

/* Sets a new absolute exptime.  CL_OK, CL_ENOTFOUND, CL_EBADKEY. */
int store_touch(store_thread *t, const uint8_t *key, size_t klen, int64_t exptime);

/* The request of store_arith().  (The typedef cannot share the function's
 * name; `struct store_arith` and `store_arith_op` both name it.) */
typedef struct store_arith {
    int incr;             /* 1: add delta (wraps at 2^64); 0: subtract (floors at 0) */
    uint64_t delta;
    uint64_t cas;         /* nonzero: only if it matches */
    int vivify;           /* 1: when absent, create with `initial` (meta ma N) */
    uint64_t initial;
    int64_t exptime;      /* absolute, for a vivified item */
    int touch;            /* 1: on success also set exptime to touch_exptime, vivified
                             or not, in the same step (meta ma T) */
    int64_t touch_exptime; /* absolute, for touch */
} store_arith_op;

/* incr/decr's number format, shared with the replicated store (repl/ops.c):
 * strict decimal, 1..STORE_U64_DIGITS digits, value < 2^64.  Parse: 1 on
 * success.  Format: the digits written to buf, no terminator. */
#define STORE_U64_DIGITS 20
int store_parse_u64(const uint8_t *p, size_t n, uint64_t *out);
size_t store_format_u64(uint64_t v, uint8_t buf[STORE_U64_DIGITS]);

/*
 * incr/decr.  The stored value must be a decimal number of at most 20
 * digits that fits in 64 bits.  Returns CL_OK (result in *value, new
 * metadata in *meta if non-NULL), CL_ENOTFOUND, CL_EEXISTS (cas),
 * CL_ENONNUMERIC, CL_EINTEGRITY, CL_EFULL, CL_EBADKEY.
 */
int store_arith(store_thread *t, const uint8_t *key, size_t klen,
                const store_arith_op *a, uint64_t *value, store_meta *meta);

/*
 * flush_all: every item stored before `when` (absolute Unix seconds; 0 =
 * now) stops being visible at `when`.  Items written after an immediate
 * flush are unaffected, even within the same second.
 */
void store_flush(store *s, int64_t when);

/* ---- enumeration (replication) ------------------------------------------ */

/* A record met by store_scan; valid only during the callback. */
typedef struct store_scan_item store_scan_item;

/*
 * Called once per record by store_scan with the record's stripe held:
 * it must not call into the store except store_scan_value, and must be
 * quick (other threads wait on the stripe).  m->tombstone / m->expired
 * say what the record is (m->version 0: not replicated).
 */
typedef void (*store_scan_fn)(void *arg, const uint8_t *key, size_t klen,
                              const store_meta *m, store_scan_item *it);

/* From a scan callback: opens the record's value into dst (m->len
 * bytes).  CL_OK, CL_EINTEGRITY (dst zeroed; counted), CL_ECRYPTO. */
int store_scan_value(store_scan_item *it, uint8_t *dst) __attribute__((warn_unused_result));

/*
 * Resumable enumeration of every record (live, hidden and tombstones).
 * *cursor = 0 starts a scan; each call visits buckets until about
 * max_items records were reported (at least one bucket), updates *cursor
 * and returns 1 while more remain, 0 when the scan is complete.  Safe
 * concurrently with every other operation: a record present for the
 * whole scan is reported at least once (possibly twice, if the index
 * grows); records written meanwhile may or may not be.
 */
int store_scan(store_thread *t, uint64_t *cursor, size_t max_items,
               store_scan_fn fn, void *arg);

/* ---- statistics ----------------------------------------------------------- */

typedef struct store_stats {
    uint64_t curr_items, total_items;   /* curr_items: records that are not tombstones */
    uint64_t tombstones;                /* records that remember a deletion (replication) */
    uint64_t bytes;              /* sum of value lengths (plaintext) */
    uint64_t trusted_bytes;      /* trusted memory in use: index + item metadata */
    uint64_t trusted_limit;      /* index_bytes */
    uint64_t untrusted_bytes;    /* arena bytes in use (chunks handed out) */
    uint64_t limit_maxbytes;     /* arena size */
    uint64_t cmd_get, cmd_set, cmd_touch, cmd_flush;
    uint64_t get_hits, get_misses, get_expired, get_flushed;
    uint64_t delete_hits, delete_misses;
    uint64_t incr_hits, incr_misses, decr_hits, decr_misses;
    uint64_t cas_hits, cas_misses, cas_badval;
    uint64_t touch_hits, touch_misses;
    uint64_t evictions, reclaimed, expired_unfetched, evicted_unfetched;
    uint64_t out_of_memory;      /* writes refused with CL_EFULL */
    uint64_t integrity_failures; /* values that failed authentication */
    uint64_t hash_power_level, hash_bytes;
} store_stats;

/* Sums the per-thread counters and global gauges.  Safe to call from any
 * thread at any time; counters may be a few operations behind. */
void store_get_stats(store *s, store_stats *out);

#endif
