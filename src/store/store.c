/*
 * store.c - the single-node store engine (store.h): the trusted index
 * (index.h) over values sealed in the untrusted arena (arena.h).
 *
 * Item lifecycle.  A write allocates a fresh arena chunk, takes a new CAS
 * id from the global counter, seals the value into the chunk (nonce =
 * SEAL_DOMAIN_VALUE || cas; AAD = klen || key || cas BE64 || flags BE32),
 * and only then points the record at it; the previous chunk is freed
 * after the stripe lock is released (no reader can still be in it: reads
 * decrypt with the stripe held).  A failed write leaves the old item
 * untouched.  Because CAS ids are never reused and every write (not
 * touch) takes one, a (key, nonce) pair never repeats, and the tag kept
 * in the record makes any other ciphertext at that offset -- flipped,
 * copied from another key, or an older copy restored -- fail to open.
 * One operation rewrites a chunk in place: store_invalidate() gives the
 * item a new CAS id without a new value, so it opens the value into
 * trusted scratch and seals it again, under the new id, into the same
 * chunk (the stripe is held throughout, so no reader sees the middle).
 *
 * Locks, in the only order in which they nest:
 *     stripe (index.h) -> LRU list of a class -> arena class -> arena pool
 *     stripe -> index record class
 * Reclaim/eviction walks an LRU tail while holding that LRU lock and may
 * only *try* victims' stripe locks (as memcached's lru_pull_tail).  The
 * arena is never asked for a chunk while a stripe is held, because a
 * failed allocation reclaims, which needs other stripes; appends therefore
 * size the new chunk optimistically and re-check the item's CAS.  Index
 * growth takes all stripes and is triggered only with none held.
 *
 * Expiry and flush are lazy: item_state() hides expired and flushed items,
 * which are unlinked when a lookup meets them, or when an allocation fails
 * and the class's LRU tail is scanned.  flush_all now records the CAS
 * counter (cas <= flush_cas is invisible), a delayed flush a time.
 *
 * Anti-stampede state (store.h) is two record bits under the stripe lock:
 * KV_ITEM_STALE and KV_ITEM_TOKEN_SENT.  store_get with `recache` tests
 * and sets TOKEN_SENT in the same critical section, so one reader wins.
 * A vivifying store_get creates its empty item through store_put (ADD)
 * with TOKEN_SENT already set, then looks again: it won iff the item it
 * finds still has the CAS id its add returned; anyone who found the item
 * in between already saw the token out.  do_item_install() sets the bits
 * a write leaves (none for a new value).
 *
 * LRU: one list per arena class; an item moves to the head when written
 * into a new class and otherwise at most once per LRU_BUMP_SECONDS when
 * used, so reads rarely touch the LRU lock.
 *
 * Statistics: each store_thread counts into its own struct (plain read,
 * relaxed atomic store, by the owner only); store_get_stats sums them with
 * relaxed loads, plus the counters of threads already destroyed.
 *
 * Memory: untrusted = arena chunks handed out (a value of n bytes takes the
 * smallest class chunk >= n; no header, the tag is in the record).
 * Trusted = index (table + 64 KiB record blocks; bounded by index_bytes,
 * CL_EFULL beyond), arena metadata (about arena/512), per-thread scratch
 * (max_value each).  A record is sizeof(kv_item) (96) + key, rounded to 16.
 *
 * Limits worth knowing: arena pages change class only when all their
 * chunks are free, so with evict_lru a write of a size class that owns no
 * page in a full arena still fails with CL_EFULL (memcached without slab
 * automove behaves alike).  The sink of store_get runs with the stripe
 * held: it must not call back into the store.
 *
 * Called by: the front doors (frontdoor/mc_*.c), one store_thread per
 * worker thread.
 */
#include "store.h"
#include "arena.h"
#include "index.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../trust/seal.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LRU_BUMP_SECONDS 60
#define RECLAIM_DEPTH 64          /* LRU tail items examined for expired ones */
#define ALLOC_ATTEMPTS 16         /* reclaim-and-retry rounds before CL_EFULL */
#define REL_EXPTIME_MAX 2592000   /* 30 days: larger client exptimes are absolute */
#define VIVIFY_ATTEMPTS 4         /* vivify rounds that lose to short-lived items */
#define AAD_MAX (1 + STORE_KEY_MAX + 8 + 4)
#define INDEX_DEFAULT_EXTRA (16u << 20)
#define INDEX_HASHPOWER 16        /* initial buckets, as memcached */

#define STORE_COUNTERS(X)                                                     \
    X(cmd_get) X(cmd_set) X(cmd_touch)                                        \
    X(get_hits) X(get_misses) X(get_expired) X(get_flushed)                   \
    X(delete_hits) X(delete_misses)                                           \
    X(incr_hits) X(incr_misses) X(decr_hits) X(decr_misses)                   \
    X(cas_hits) X(cas_misses) X(cas_badval)                                   \
    X(touch_hits) X(touch_misses)                                             \
    X(evictions) X(reclaimed) X(expired_unfetched) X(evicted_unfetched)       \
    X(out_of_memory) X(integrity_failures) X(total_items)

struct store_counters {
#define X(name) uint64_t name;
    STORE_COUNTERS(X)
#undef X
    int64_t bytes;   /* value bytes this thread added minus those it removed */
};

struct store_lru {
    pthread_mutex_t lock;
    kv_item *head, *tail;
} __attribute__((aligned(64)));

struct store {
    size_t max_value;
    int evict_lru;
    int arith_cls;                /* arena class of a 20-digit number */
    arena *arena;
    kv_index *index;
    seal_key *key;
    struct store_lru lru[ARENA_MAX_CLASSES];

    pthread_mutex_t flush_lock;   /* serialises store_flush; readers use atomics */
    uint64_t flush_cas;           /* items with cas <= flush_cas are flushed */
    int64_t flush_at;             /* delayed flush: items stored before it vanish at it */
    int64_t flush_past;           /* an older delayed flush that has fired */
    uint64_t cmd_flush;
    uint64_t tombs;               /* records that are tombstones (atomic) */

    pthread_mutex_t threads_lock; /* the thread list, retired, thread_trusted */
    store_thread *threads;
    struct store_counters retired;
    size_t thread_trusted;

    uint64_t next_cas __attribute__((aligned(64))); /* own cache line: every write hits it */
};

struct store_thread {
    store *s;
    seal_ctx *seal;
    uint8_t *scratch;             /* max_value bytes of trusted plaintext (append) */
    store_thread *prev, *next;
    struct store_counters c;
} __attribute__((aligned(64)));

/* A sealed value: a chunk and what opening it needs besides the key. */
struct sealed {
    uint64_t off;
    int cls;                      /* -1: none */
    uint32_t len;
    uint64_t cas;
    uint8_t tag[SEAL_TAG_LEN];
};

enum item_state { ITEM_LIVE, ITEM_EXPIRED, ITEM_FLUSHED, ITEM_TOMB };

/* ---- small helpers ------------------------------------------------------- */

#define COUNT(t, name) count_add(&(t)->c.name, 1)

static inline void count_add(uint64_t *p, uint64_t n)
{
    __atomic_store_n(p, *p + n, __ATOMIC_RELAXED); /* only the owner writes */
}

static inline void bytes_add(store_thread *t, int64_t n)
{
    __atomic_store_n(&t->c.bytes, t->c.bytes + n, __ATOMIC_RELAXED);
}

static inline int key_ok(size_t klen) { return klen >= 1 && klen <= STORE_KEY_MAX; }

int64_t store_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return ts.tv_sec;
}

int64_t store_exptime(int64_t client_exptime)
{
    if (client_exptime == 0)
        return 0;
    if (client_exptime < 0)
        return -1; /* any nonzero time <= now is "already expired" */
    if (client_exptime <= REL_EXPTIME_MAX)
        return store_now() + client_exptime;
    return client_exptime;
}

size_t store_max_value(const store *s) { return s->max_value; }

static uint64_t cas_next(store *s)
{
    return __atomic_fetch_add(&s->next_cas, 1, __ATOMIC_RELAXED);
}

static enum item_state item_state(const store *s, const kv_item *it, int64_t now)
{
    if (it->bits & KV_ITEM_TOMB)
        return ITEM_TOMB;
    if (it->cas <= __atomic_load_n(&s->flush_cas, __ATOMIC_ACQUIRE))
        return ITEM_FLUSHED;
    int64_t at = __atomic_load_n(&s->flush_at, __ATOMIC_ACQUIRE);
    if (at && at <= now && (int64_t)it->stored_at < at)
        return ITEM_FLUSHED;
    int64_t past = __atomic_load_n(&s->flush_past, __ATOMIC_ACQUIRE);
    if (past && (int64_t)it->stored_at < past)
        return ITEM_FLUSHED;
    if (it->exptime && it->exptime <= now)
        return ITEM_EXPIRED;
    return ITEM_LIVE;
}

static size_t aad_build(uint8_t aad[AAD_MAX], const uint8_t *key, size_t klen,
                        uint64_t cas, uint32_t flags)
{
    aad[0] = (uint8_t)klen;
    memcpy(aad + 1, key, klen);
    uint8_t *p = aad + 1 + klen;
    for (int i = 0; i < 8; i++)
        *p++ = (uint8_t)(cas >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(flags >> (24 - 8 * i));
    return (size_t)(p - aad);
}

static void meta_fill(const kv_item *it, store_meta *m)
{
    m->flags = it->flags;
    m->len = it->len;
    m->cas = it->cas;
    m->exptime = it->exptime;
    m->last_access = it->last_access;
    m->fetched = (it->bits & KV_ITEM_FETCHED) != 0;
    m->slab_class = it->cls;
    m->stale = (it->bits & KV_ITEM_STALE) != 0;
    m->token_sent = (it->bits & KV_ITEM_TOKEN_SENT) != 0;
    m->won = 0;
    m->version = it->version;
    m->tombstone = 0;
    m->expired = 0;
    m->xbit = (it->bits & KV_ITEM_XBIT) != 0;
}

/* ---- LRU (per arena class) ------------------------------------------------ */

static void do_lru_link(struct store_lru *l, kv_item *it)
{
    it->lru_prev = NULL;
    it->lru_next = l->head;
    if (l->head)
        l->head->lru_prev = it;
    l->head = it;
    if (!l->tail)
        l->tail = it;
}

static void do_lru_unlink(struct store_lru *l, kv_item *it)
{
    if (it->lru_prev)
        it->lru_prev->lru_next = it->lru_next;
    else
        l->head = it->lru_next;
    if (it->lru_next)
        it->lru_next->lru_prev = it->lru_prev;
    else
        l->tail = it->lru_prev;
    it->lru_prev = it->lru_next = NULL;
}

/* The lru_* functions take the list lock; the item's stripe is held. */
static void lru_link(store *s, kv_item *it, uint32_t now)
{
    struct store_lru *l = &s->lru[it->cls];
    it->lru_time = now;
    pthread_mutex_lock(&l->lock);
    do_lru_link(l, it);
    pthread_mutex_unlock(&l->lock);
}

static void lru_unlink(store *s, kv_item *it)
{
    struct store_lru *l = &s->lru[it->cls];
    pthread_mutex_lock(&l->lock);
    do_lru_unlink(l, it);
    pthread_mutex_unlock(&l->lock);
}

static void lru_bump(store *s, kv_item *it, uint32_t now)
{
    if (now - it->lru_time < LRU_BUMP_SECONDS)
        return;
    struct store_lru *l = &s->lru[it->cls];
    it->lru_time = now;
    pthread_mutex_lock(&l->lock);
    do_lru_unlink(l, it);
    do_lru_link(l, it);
    pthread_mutex_unlock(&l->lock);
}

/* ---- removal and reclaim ---------------------------------------------------- */

/* Unlinks and frees an item: stripe held, and the LRU lock iff lru_held. */
static void do_item_free(store_thread *t, kv_item *it, int lru_held)
{
    store *s = t->s;
    do_kv_index_unlink(s->index, it);
    if (!(it->bits & KV_ITEM_NOCHUNK)) {
        if (lru_held)
            do_lru_unlink(&s->lru[it->cls], it);
        else
            lru_unlink(s, it);
        arena_free(s->arena, it->cls, it->off);
    }
    if (it->bits & KV_ITEM_TOMB)
        __atomic_sub_fetch(&s->tombs, 1, __ATOMIC_RELAXED);
    bytes_add(t, -(int64_t)it->len);
    kv_index_item_free(s->index, it);
}

/*
 * Turns a hidden versioned record (expired, flushed or a tombstone) into
 * a tombstone without bytes: its chunk goes back to the arena, its
 * version stays (stripe held; the LRU lock iff lru_held).
 */
static void do_item_strip(store_thread *t, kv_item *it, int lru_held)
{
    store *s = t->s;
    CL_ASSERT(!(it->bits & KV_ITEM_NOCHUNK));
    if (lru_held)
        do_lru_unlink(&s->lru[it->cls], it);
    else
        lru_unlink(s, it);
    arena_free(s->arena, it->cls, it->off);
    bytes_add(t, -(int64_t)it->len);
    if (!(it->bits & KV_ITEM_TOMB))
        __atomic_add_fetch(&s->tombs, 1, __ATOMIC_RELAXED);
    it->len = 0;
    it->off = 0;
    it->bits = KV_ITEM_TOMB | KV_ITEM_NOCHUNK;
}

static void count_reclaimed(store_thread *t, const kv_item *it)
{
    COUNT(t, reclaimed);
    if (!(it->bits & KV_ITEM_FETCHED))
        COUNT(t, expired_unfetched);
}

/*
 * Finds key's record if it is live (stripe held).  An expired or flushed
 * record met on the way is freed at once, unless it has a version: then
 * it stays, hidden, as does a tombstone, and *kept (if non-NULL) points
 * at it so a write can reuse the record.  *why (if non-NULL) says why
 * nothing live was found, else ITEM_LIVE.
 */
static kv_item *do_item_find_live(store_thread *t, uint64_t h, const uint8_t *key,
                                  size_t klen, int64_t now, enum item_state *why,
                                  kv_item **kept)
{
    kv_item *it = do_kv_index_find(t->s->index, h, key, klen);
    enum item_state st = it ? item_state(t->s, it, now) : ITEM_LIVE;
    if (why)
        *why = st;
    if (kept)
        *kept = NULL;
    if (it && st != ITEM_LIVE) {
        if (it->version || st == ITEM_TOMB) {
            if (kept)
                *kept = it;
        } else {
            count_reclaimed(t, it);
            do_item_free(t, it, 0);
        }
        it = NULL;
    }
    return it;
}

/*
 * Frees one item of class cls: an expired or flushed one among the
 * RECLAIM_DEPTH oldest, else (evict_lru only) the oldest one not in use.
 * Call with no stripe held.  Returns 1 if an item was freed.
 */
static int reclaim(store_thread *t, int cls)
{
    store *s = t->s;
    struct store_lru *l = &s->lru[cls];
    int64_t now = store_now();
    int freed = 0;

    pthread_mutex_lock(&l->lock);
    int depth = 0;
    for (kv_item *it = l->tail; it && depth < RECLAIM_DEPTH; it = it->lru_prev, depth++) {
        uint64_t h = it->hash; /* immutable while linked; the LRU lock keeps it linked */
        if (kv_index_trylock(s->index, h) != 0)
            continue;
        if (item_state(s, it, now) != ITEM_LIVE) {
            if (it->version || (it->bits & KV_ITEM_TOMB)) {
                do_item_strip(t, it, 1); /* keeps the version, frees the chunk */
            } else {
                count_reclaimed(t, it);
                do_item_free(t, it, 1);
            }
            freed = 1;
        }
        kv_index_unlock(s->index, h);
        if (freed)
            break;
    }
    if (!freed && s->evict_lru) {
        depth = 0;
        for (kv_item *it = l->tail; it && depth < RECLAIM_DEPTH; it = it->lru_prev, depth++) {
            uint64_t h = it->hash;
            if (kv_index_trylock(s->index, h) != 0)
                continue;
            COUNT(t, evictions);
            if (!(it->bits & KV_ITEM_FETCHED))
                COUNT(t, evicted_unfetched);
            do_item_free(t, it, 1);
            kv_index_unlock(s->index, h);
            freed = 1;
            break;
        }
    }
    pthread_mutex_unlock(&l->lock);
    return freed;
}

/* Frees one item of any class, smallest classes first (index full). */
static int reclaim_any(store_thread *t)
{
    for (int c = 0; c < arena_class_count(t->s->arena); c++)
        if (reclaim(t, c))
            return 1;
    return 0;
}

/* A chunk of class cls, reclaiming (or evicting) as needed.  No stripe held. */
static int chunk_alloc(store_thread *t, int cls, struct sealed *v)
{
    v->cls = cls;
    for (int i = 0; i < ALLOC_ATTEMPTS; i++) {
        if (arena_alloc(t->s->arena, cls, &v->off) == CL_OK)
            return CL_OK;
        if (!reclaim(t, cls))
            break;
    }
    COUNT(t, out_of_memory);
    return CL_EFULL;
}

/* A record for a new key (stripe held).  CL_EFULL means: release the
 * stripe, reclaim_any(), and try again. */
static int do_record_alloc(store_thread *t, uint64_t h, const uint8_t *key, size_t klen,
                           kv_item **out)
{
    kv_item *it;
    int rc = kv_index_item_alloc(t->s->index, klen, &it);
    if (rc != CL_OK)
        return rc;
    it->hash = h;
    memcpy(it->key, key, klen);
    *out = it;
    return CL_OK;
}

/* ---- sealing ------------------------------------------------------------------ */

static void integrity_failure(store_thread *t, kv_item *it)
{
    COUNT(t, integrity_failures);
    if (it->bits & KV_ITEM_LOGGED)
        return;
    it->bits |= KV_ITEM_LOGGED;
    cl_log_warn("store", "item %016" PRIx64 ": sealed value failed authentication "
                "(altered, moved or rolled back in the arena); reads fail until it is "
                "overwritten or deleted (logged once per item)",
                seal_fingerprint(t->s->key, it->key, it->klen));
}

/* Opens it's value into dst (it->len bytes; stripe held).  CL_OK,
 * CL_EINTEGRITY (counted, logged once; dst zeroed), CL_ECRYPTO. */
static int do_item_open(store_thread *t, kv_item *it, uint8_t *dst)
{
    uint8_t aad[AAD_MAX], dummy;
    size_t n = aad_build(aad, it->key, it->klen, it->cas, it->flags);
    int rc = seal_open_from_untrusted(t->seal, SEAL_DOMAIN_VALUE, it->cas, aad, n,
                                      arena_ptr(t->s->arena, it->off), it->len, it->tag,
                                      dst ? dst : &dummy);
    if (rc == CL_EINTEGRITY)
        integrity_failure(t, it);
    return rc;
}

/* Seals pt into the chunk v (allocated), under a new CAS id.  Stripe held,
 * so CAS ids grow per key in the order writes are applied. */
static int do_value_seal(store_thread *t, const uint8_t *key, size_t klen, uint32_t flags,
                         const uint8_t *pt, size_t len, struct sealed *v)
{
    uint8_t aad[AAD_MAX];
    v->cas = cas_next(t->s);
    v->len = (uint32_t)len;
    if (v->cls < 0) { /* no chunk: nothing to seal */
        v->off = 0;
        memset(v->tag, 0, sizeof v->tag);
        return CL_OK;
    }
    size_t n = aad_build(aad, key, klen, v->cas, flags);
    return seal_to_untrusted(t->seal, SEAL_DOMAIN_VALUE, v->cas, aad, n, pt, len,
                             arena_ptr(t->s->arena, v->off), v->tag);
}

/*
 * Points `it` at the sealed value v (stripe held), with record bits
 * `bits` (KV_ITEM_STALE / KV_ITEM_TOKEN_SENT to keep, KV_ITEM_TOMB for a
 * tombstone; the others start clear) and version `version`.  v->cls < 0
 * means no chunk (a tombstone without bytes: on no LRU list).  A new
 * record (linked == 0) is linked into the index and its LRU; an existing
 * one hands its previous chunk back in *old for the caller to free after
 * unlocking.  Returns 1 if the index wants to grow.
 */
static int do_item_install(store_thread *t, kv_item *it, int linked, const struct sealed *v,
                           uint32_t flags, int64_t exptime, uint8_t bits, uint64_t version,
                           uint32_t now, struct sealed *old)
{
    store *s = t->s;
    int grow = 0;
    int had_chunk = linked && !(it->bits & KV_ITEM_NOCHUNK);
    int has_chunk = v->cls >= 0;
    old->cls = -1;
    if (linked) {
        if (had_chunk) {
            old->cls = it->cls;
            old->off = it->off;
        }
        if (it->bits & KV_ITEM_TOMB)
            __atomic_sub_fetch(&s->tombs, 1, __ATOMIC_RELAXED);
        bytes_add(t, (int64_t)v->len - (int64_t)it->len);
        if (had_chunk && !has_chunk) {
            lru_unlink(s, it);
        } else if (!had_chunk && has_chunk) {
            it->cls = (uint8_t)v->cls;
            lru_link(s, it, now);
        } else if (has_chunk && it->cls != v->cls) {
            lru_unlink(s, it);
            it->cls = (uint8_t)v->cls;
            lru_link(s, it, now);
        } else if (has_chunk) {
            lru_bump(s, it, now);
        }
    } else {
        grow = do_kv_index_link(s->index, it);
        if (has_chunk) {
            it->cls = (uint8_t)v->cls;
            lru_link(s, it, now);
        }
        bytes_add(t, v->len);
    }
    if (!has_chunk)
        bits |= KV_ITEM_NOCHUNK;
    if (bits & KV_ITEM_TOMB)
        __atomic_add_fetch(&s->tombs, 1, __ATOMIC_RELAXED);
    it->version = version;
    it->off = v->off;
    it->len = v->len;
    it->cas = v->cas;
    memcpy(it->tag, v->tag, SEAL_TAG_LEN);
    it->flags = flags;
    it->exptime = exptime;
    it->stored_at = now;
    it->last_access = now;
    it->bits = bits;
    COUNT(t, total_items);
    return grow;
}

/* After unlocking: frees the replaced chunk and grows the index if asked. */
static void write_finish(store_thread *t, const struct sealed *old, int grow)
{
    if (old->cls >= 0)
        arena_free(t->s->arena, old->cls, old->off);
    if (grow)
        kv_index_grow(t->s->index);
}

/* ---- lifecycle ------------------------------------------------------------------ */

int store_create(const store_config *cfg, store **out)
{
    if (!cfg || cfg->memory_bytes == 0)
        return CL_EINVAL;
    size_t max_value = cfg->max_value ? cfg->max_value : STORE_DEFAULT_MAX_VALUE;
    if (max_value > UINT32_MAX)
        return CL_EINVAL;
    size_t index_bytes = cfg->index_bytes ? cfg->index_bytes
                                          : cfg->memory_bytes / 2 + INDEX_DEFAULT_EXTRA;
    store *s = aligned_alloc(64, (sizeof *s + 63) & ~(size_t)63);
    if (!s)
        return CL_ENOMEM;
    memset(s, 0, sizeof *s);
    s->max_value = max_value;
    s->evict_lru = cfg->evict_lru != 0;
    s->next_cas = 1;

    int rc = arena_create(cfg->memory_bytes, max_value, cfg->arena_file, &s->arena);
    if (rc != CL_OK)
        goto fail;
    /* A smaller first table when the index budget is small (tests). */
    unsigned power = INDEX_HASHPOWER;
    while (power > 1 && ((size_t)8 << power) > index_bytes / 4)
        power--;
    rc = kv_index_create(index_bytes, power, &s->index);
    if (rc != CL_OK)
        goto fail;
    rc = seal_key_create(&s->key);
    if (rc != CL_OK)
        goto fail;
    s->arith_cls = arena_class_for(s->arena, STORE_U64_DIGITS);
    CL_ASSERT(s->arith_cls >= 0);
    for (int i = 0; i < ARENA_MAX_CLASSES; i++)
        pthread_mutex_init(&s->lru[i].lock, NULL);
    pthread_mutex_init(&s->flush_lock, NULL);
    pthread_mutex_init(&s->threads_lock, NULL);
    *out = s;
    return CL_OK;

fail:
    kv_index_destroy(s->index);
    arena_destroy(s->arena);
    free(s);
    return rc;
}

void store_destroy(store *s)
{
    if (!s)
        return;
    CL_ASSERT(s->threads == NULL);
    kv_index_destroy(s->index); /* frees every record with its blocks */
    arena_destroy(s->arena);
    seal_key_destroy(s->key);
    for (int i = 0; i < ARENA_MAX_CLASSES; i++)
        pthread_mutex_destroy(&s->lru[i].lock);
    pthread_mutex_destroy(&s->flush_lock);
    pthread_mutex_destroy(&s->threads_lock);
    free(s);
}

int store_thread_create(store *s, store_thread **out)
{
    store_thread *t = aligned_alloc(64, (sizeof *t + 63) & ~(size_t)63);
    if (!t)
        return CL_ENOMEM;
    memset(t, 0, sizeof *t);
    t->s = s;
    t->scratch = malloc(s->max_value);
    if (!t->scratch) {
        free(t);
        return CL_ENOMEM;
    }
    int rc = seal_ctx_create(s->key, &t->seal);
    if (rc != CL_OK) {
        free(t->scratch);
        free(t);
        return rc;
    }
    pthread_mutex_lock(&s->threads_lock);
    t->next = s->threads;
    if (s->threads)
        s->threads->prev = t;
    s->threads = t;
    s->thread_trusted += sizeof *t + s->max_value;
    pthread_mutex_unlock(&s->threads_lock);
    *out = t;
    return CL_OK;
}

void store_thread_destroy(store_thread *t)
{
    if (!t)
        return;
    store *s = t->s;
    pthread_mutex_lock(&s->threads_lock);
    if (t->prev)
        t->prev->next = t->next;
    else
        s->threads = t->next;
    if (t->next)
        t->next->prev = t->prev;
#define X(name) s->retired.name += t->c.name;
    STORE_COUNTERS(X)
#undef X
    s->retired.bytes += t->c.bytes;
    s->thread_trusted -= sizeof *t + s->max_value;
    pthread_mutex_unlock(&s->threads_lock);
    OPENSSL_cleanse(t->scratch, s->max_value);
    free(t->scratch);
    seal_ctx_destroy(t->seal);
    free(t);
}

/* ---- reads ---------------------------------------------------------------------- */

static int store_put(store_thread *t, uint64_t h, const uint8_t *key, size_t klen,
                     const uint8_t *val, size_t len, const store_write *w, uint8_t bits,
                     uint64_t *cas_out);

/* Whether a read with opts wins the item's recache token (stripe held). */
static int do_recache_wins(const kv_item *it, const store_get_opts *opts)
{
    if (!opts->recache || (it->bits & KV_ITEM_TOKEN_SENT))
        return 0;
    if (it->bits & KV_ITEM_STALE)
        return 1;
    return opts->recache_before && it->exptime && it->exptime < opts->recache_before;
}

static void count_get_miss(store_thread *t, const store_get_opts *opts, enum item_state why)
{
    COUNT(t, get_misses);
    if (why == ITEM_EXPIRED)
        COUNT(t, get_expired);
    else if (why == ITEM_FLUSHED)
        COUNT(t, get_flushed);
    if (opts->touch)
        COUNT(t, touch_misses);
}

/* Fills the raw-read view of a record: state bits, and no length for a
 * record without a chunk. */
static void meta_fill_raw(const store *s, const kv_item *it, int64_t now, store_meta *m)
{
    meta_fill(it, m);
    enum item_state st = item_state(s, it, now);
    m->tombstone = st == ITEM_TOMB;
    m->expired = st == ITEM_EXPIRED || st == ITEM_FLUSHED;
}

/* store_get with opts->raw: any record, nothing changes (see store.h). */
static int store_get_raw(store_thread *t, const uint8_t *key, size_t klen,
                         const store_get_opts *opts, store_sink_fn sink, void *arg,
                         store_meta *meta)
{
    store *s = t->s;
    uint64_t h = kv_index_hash(s->index, key, klen);
    kv_index_lock(s->index, h);
    kv_item *it = do_kv_index_find(s->index, h, key, klen);
    if (!it) {
        kv_index_unlock(s->index, h);
        return CL_ENOTFOUND;
    }
    store_meta m;
    meta_fill_raw(s, it, store_now(), &m);
    int rc = CL_OK;
    if (opts->want_value && !(it->bits & KV_ITEM_NOCHUNK)) {
        uint8_t *dst = sink(arg, &m);
        rc = dst || m.len == 0 ? do_item_open(t, it, dst) : CL_ENOMEM;
    }
    kv_index_unlock(s->index, h);
    if (meta && (rc == CL_OK || rc == CL_EINTEGRITY))
        *meta = m;
    return rc;
}

int store_get(store_thread *t, const uint8_t *key, size_t klen,
              const store_get_opts *opts, store_sink_fn sink, void *arg,
              store_meta *meta)
{
    static const store_get_opts plain_get = { .want_value = 1 };
    store *s = t->s;
    if (!opts)
        opts = &plain_get;
    if (!key_ok(klen))
        return CL_EBADKEY;
    if (opts->raw)
        return store_get_raw(t, key, klen, opts, sink, arg, meta);
    COUNT(t, cmd_get);
    if (opts->touch)
        COUNT(t, cmd_touch);

    uint64_t h = kv_index_hash(s->index, key, klen);
    uint64_t vivified = 0;   /* CAS id of the item this call created */
    int missed = 0;          /* the miss is counted already */
    int64_t now;
    kv_item *it;
    for (int attempt = 0;; attempt++) {
        kv_index_lock(s->index, h);
        now = store_now();
        enum item_state why;
        it = do_item_find_live(t, h, key, klen, now, &why, NULL);
        if (!it && !missed) {
            count_get_miss(t, opts, why);
            missed = 1;
        }
        if (it || !opts->vivify || vivified || attempt == VIVIFY_ATTEMPTS)
            break;
        /* Vivify: no chunk may be allocated under the stripe, so add the
         * empty item unlocked, born with its token out, and look again.
         * (CL_ENOTSTORED: another writer's item appeared meanwhile.) */
        kv_index_unlock(s->index, h);
        store_write w = { .mode = STORE_ADD, .exptime = opts->vivify_exptime };
        int rc = store_put(t, h, key, klen, (const uint8_t *)"", 0, &w, KV_ITEM_TOKEN_SENT,
                           &vivified);
        if (rc != CL_OK && rc != CL_ENOTSTORED)
            return rc;
    }
    if (!it) {
        kv_index_unlock(s->index, h);
        return CL_ENOTFOUND;
    }

    store_meta m;
    meta_fill(it, &m);
    int created = vivified && it->cas == vivified;
    if (created) {
        m.token_sent = 0; /* set at birth, for this caller */
        m.won = 1;
    } else {
        m.won = do_recache_wins(it, opts);
    }
    if (opts->touch)
        m.exptime = opts->exptime;
    int rc = CL_OK;
    if (opts->want_value) {
        /* A zero-length value needs no buffer: NULL is accepted for it. */
        uint8_t *dst = sink(arg, &m);
        rc = dst || m.len == 0 ? do_item_open(t, it, dst) : CL_ENOMEM;
    }
    if (rc == CL_OK) {
        if (m.won)
            it->bits |= KV_ITEM_TOKEN_SENT;
        if (opts->touch)
            it->exptime = opts->exptime;
        if (!opts->no_bump) {
            it->bits |= KV_ITEM_FETCHED;
            it->last_access = (uint32_t)now;
            lru_bump(s, it, (uint32_t)now);
        }
    } else if (created) {
        do_item_free(t, it, 0); /* it existed only to carry this caller's token */
    }
    kv_index_unlock(s->index, h);

    if (rc == CL_OK) {
        if (!missed) {
            COUNT(t, get_hits);
            if (opts->touch)
                COUNT(t, touch_hits);
        }
        if (meta)
            *meta = m;
    }
    return rc;
}

/* ---- writes ------------------------------------------------------------------------ */

/* The conditions of a write against the live item `it` (or NULL).  *stale
 * is set when the write is allowed only as a stale one (stale_if_older). */
static int write_check(const store_write *w, const kv_item *it, int *stale)
{
    *stale = 0;
    if (w->cas) {
        if (!it)
            return CL_ENOTFOUND;
        if (it->cas != w->cas) {
            if (!w->stale_if_older || w->cas > it->cas ||
                (w->mode != STORE_SET && w->mode != STORE_REPLACE))
                return CL_EEXISTS;
            *stale = 1;
        }
    }
    switch (w->mode) {
    case STORE_ADD:
        return it ? CL_ENOTSTORED : CL_OK;
    case STORE_REPLACE:
    case STORE_APPEND:
    case STORE_PREPEND:
        return it ? CL_OK : CL_ENOTSTORED;
    case STORE_SET:
        return CL_OK;
    }
    return CL_EINVAL;
}

/* set / add / replace / cas; a new item starts with record bits `bits`. */
static int store_put(store_thread *t, uint64_t h, const uint8_t *key, size_t klen,
                     const uint8_t *val, size_t len, const store_write *w, uint8_t bits,
                     uint64_t *cas_out)
{
    store *s = t->s;
    if (len > s->max_value)
        return CL_ETOOBIG;
    struct sealed v = { .cls = -1 }, old;
    int rc;
    int bare = w->tombstone && len == 0; /* a tombstone without bytes takes no chunk */
    if (!bare) {
        rc = chunk_alloc(t, arena_class_for(s->arena, len), &v);
        if (rc != CL_OK)
            return rc;
    }
    if (w->tombstone)
        bits |= KV_ITEM_TOMB;
    if (w->xbit)
        bits |= KV_ITEM_XBIT;

    for (int attempt = 0;; attempt++) {
        kv_index_lock(s->index, h);
        int64_t now = store_now();
        kv_item *kept;
        kv_item *it = do_item_find_live(t, h, key, klen, now, NULL, &kept);
        int stale;
        rc = write_check(w, it, &stale);
        if (rc == CL_OK && w->if_newer) {
            const kv_item *cur = it ? it : kept;
            if (cur && cur->version >= w->version)
                rc = CL_EEXISTS;
        }
        int linked = it != NULL;
        if (rc == CL_OK && !it && kept) { /* hidden or tombstone: reuse the record */
            it = kept;
            linked = 1;
        }
        if (rc == CL_OK && !it)
            rc = do_record_alloc(t, h, key, klen, &it);
        if (rc == CL_OK) {
            rc = do_value_seal(t, key, klen, w->flags, val, len, &v);
            if (rc != CL_OK && !linked)
                kv_index_item_free(s->index, it);
        }
        if (rc != CL_OK) {
            kv_index_unlock(s->index, h);
            if (rc == CL_EFULL && attempt < ALLOC_ATTEMPTS && reclaim_any(t))
                continue; /* the index was full: an item was freed, try again */
            if (rc == CL_EFULL)
                COUNT(t, out_of_memory);
            if (v.cls >= 0)
                arena_free(s->arena, v.cls, v.off);
            return rc;
        }
        int64_t exptime = w->exptime;
        if (stale) { /* as memcached: the old TTL and token stay, the value is stale */
            exptime = it->exptime;
            bits = KV_ITEM_STALE | (it->bits & KV_ITEM_TOKEN_SENT);
        }
        int grow = do_item_install(t, it, linked, &v, w->flags, exptime, bits, w->version,
                                   (uint32_t)now, &old);
        kv_index_unlock(s->index, h);
        write_finish(t, &old, grow);
        if (cas_out)
            *cas_out = v.cas;
        return CL_OK;
    }
}

/*
 * append / prepend.  The new chunk's size depends on the current value,
 * and no chunk may be allocated under the stripe, so: look (locked),
 * allocate (unlocked), then re-check under the lock that the item still
 * has the CAS id we sized for; if not, start over.
 */
static int store_concat(store_thread *t, uint64_t h, const uint8_t *key, size_t klen,
                        const uint8_t *val, size_t len, const store_write *w, uint64_t *cas_out)
{
    store *s = t->s;
    for (;;) {
        kv_index_lock(s->index, h);
        kv_item *it = do_item_find_live(t, h, key, klen, store_now(), NULL, NULL);
        int stale; /* always 0: append/prepend never store stale */
        int rc = write_check(w, it, &stale);
        uint64_t seen_cas = it ? it->cas : 0;
        uint32_t old_len = it ? it->len : 0;
        kv_index_unlock(s->index, h);
        if (rc != CL_OK)
            return rc;
        if (len > s->max_value - old_len)
            return CL_ETOOBIG;
        size_t new_len = old_len + len;

        struct sealed v, old;
        rc = chunk_alloc(t, arena_class_for(s->arena, new_len), &v);
        if (rc != CL_OK)
            return rc;

        kv_index_lock(s->index, h);
        int64_t now = store_now();
        it = do_item_find_live(t, h, key, klen, now, NULL, NULL);
        if (!it || it->cas != seen_cas) { /* changed meanwhile: decide again */
            kv_index_unlock(s->index, h);
            arena_free(s->arena, v.cls, v.off);
            continue;
        }
        uint8_t *buf = t->scratch;
        int append = w->mode == STORE_APPEND;
        rc = do_item_open(t, it, append ? buf : buf + len);
        if (rc == CL_OK) {
            memcpy(append ? buf + old_len : buf, val, len);
            rc = do_value_seal(t, key, klen, it->flags, buf, new_len, &v);
        }
        if (rc != CL_OK) {
            kv_index_unlock(s->index, h);
            arena_free(s->arena, v.cls, v.off);
            OPENSSL_cleanse(buf, new_len);
            return rc;
        }
        int grow = do_item_install(t, it, 1, &v, it->flags, it->exptime, 0, it->version,
                                   (uint32_t)now, &old);
        kv_index_unlock(s->index, h);
        OPENSSL_cleanse(buf, new_len);
        write_finish(t, &old, grow);
        if (cas_out)
            *cas_out = v.cas;
        return CL_OK;
    }
}

int store_set(store_thread *t, const uint8_t *key, size_t klen,
              const uint8_t *val, size_t len, const store_write *w,
              uint64_t *cas_out)
{
    static const store_write plain_set = { .mode = STORE_SET };
    if (!key_ok(klen))
        return CL_EBADKEY;
    if (!w)
        w = &plain_set;
    if ((unsigned)w->mode > STORE_PREPEND)
        return CL_EINVAL;
    if ((w->version || w->tombstone || w->if_newer || w->xbit) &&
        (w->mode != STORE_SET || w->cas || w->stale_if_older))
        return CL_EINVAL;
    if ((w->tombstone || w->if_newer) && !w->version)
        return CL_EINVAL;
    COUNT(t, cmd_set);
    uint64_t h = kv_index_hash(t->s->index, key, klen);
    int rc = w->mode == STORE_APPEND || w->mode == STORE_PREPEND
                 ? store_concat(t, h, key, klen, val, len, w, cas_out)
                 : store_put(t, h, key, klen, val, len, w, 0, cas_out);
    if (w->cas) {
        if (rc == CL_OK)
            COUNT(t, cas_hits);
        else if (rc == CL_ENOTFOUND)
            COUNT(t, cas_misses);
        else if (rc == CL_EEXISTS)
            COUNT(t, cas_badval);
    }
    return rc;
}

int store_delete(store_thread *t, const uint8_t *key, size_t klen, uint64_t cas)
{
    store *s = t->s;
    if (!key_ok(klen))
        return CL_EBADKEY;
    uint64_t h = kv_index_hash(s->index, key, klen);
    kv_index_lock(s->index, h);
    kv_item *it = do_item_find_live(t, h, key, klen, store_now(), NULL, NULL);
    int rc = !it ? CL_ENOTFOUND : cas && it->cas != cas ? CL_EEXISTS : CL_OK;
    if (rc == CL_OK)
        do_item_free(t, it, 0);
    kv_index_unlock(s->index, h);
    if (rc == CL_OK)
        COUNT(t, delete_hits);
    else if (rc == CL_ENOTFOUND)
        COUNT(t, delete_misses);
    return rc;
}

/*
 * Gives `it` a new CAS id, same value (stripe held): opens the value into
 * trusted scratch and seals it again into its own chunk under the new id
 * (the id is fresh, so the nonce is too).  CL_OK; CL_ENOTFOUND (a flush
 * that covers the old id ran since the lookup: the item is freed rather
 * than revived by an id above the flush's); CL_EINTEGRITY (item
 * unchanged); CL_ECRYPTO (the chunk may hold a partial ciphertext: the
 * item is freed).
 */
static int do_item_reseal(store_thread *t, kv_item *it)
{
    store *s = t->s;
    uint64_t cas = cas_next(s); /* taken before the flush check, see above */
    if (it->cas <= __atomic_load_n(&s->flush_cas, __ATOMIC_ACQUIRE)) {
        do_item_free(t, it, 0);
        return CL_ENOTFOUND;
    }
    uint8_t *buf = t->scratch;
    int rc = do_item_open(t, it, buf);
    if (rc != CL_OK)
        return rc;
    uint8_t aad[AAD_MAX];
    size_t n = aad_build(aad, it->key, it->klen, cas, it->flags);
    rc = seal_to_untrusted(t->seal, SEAL_DOMAIN_VALUE, cas, aad, n, buf, it->len,
                           arena_ptr(s->arena, it->off), it->tag);
    OPENSSL_cleanse(buf, it->len);
    if (rc != CL_OK) {
        do_item_free(t, it, 0);
        return rc;
    }
    it->cas = cas;
    return CL_OK;
}

int store_invalidate(store_thread *t, const uint8_t *key, size_t klen, uint64_t cas,
                     int touch, int64_t exptime, uint64_t *cas_out)
{
    store *s = t->s;
    if (!key_ok(klen))
        return CL_EBADKEY;
    uint64_t h = kv_index_hash(s->index, key, klen);
    kv_index_lock(s->index, h);
    kv_item *it = do_item_find_live(t, h, key, klen, store_now(), NULL, NULL);
    int rc = !it ? CL_ENOTFOUND : cas && it->cas != cas ? CL_EEXISTS : do_item_reseal(t, it);
    if (rc == CL_OK) {
        if (touch)
            it->exptime = exptime;
        it->bits = (uint8_t)((it->bits | KV_ITEM_STALE) & ~KV_ITEM_TOKEN_SENT);
        if (cas_out)
            *cas_out = it->cas;
    }
    kv_index_unlock(s->index, h);
    if (rc == CL_ENOTFOUND)
        COUNT(t, delete_misses);
    return rc;
}

int store_touch(store_thread *t, const uint8_t *key, size_t klen, int64_t exptime)
{
    store *s = t->s;
    if (!key_ok(klen))
        return CL_EBADKEY;
    COUNT(t, cmd_touch);
    uint64_t h = kv_index_hash(s->index, key, klen);
    kv_index_lock(s->index, h);
    int64_t now = store_now();
    kv_item *it = do_item_find_live(t, h, key, klen, now, NULL, NULL);
    if (it) {
        it->exptime = exptime;
        it->bits |= KV_ITEM_FETCHED; /* as memcached: a touch is a use */
        it->last_access = (uint32_t)now;
        lru_bump(s, it, (uint32_t)now);
    }
    kv_index_unlock(s->index, h);
    if (!it) {
        COUNT(t, touch_misses);
        return CL_ENOTFOUND;
    }
    COUNT(t, touch_hits);
    return CL_OK;
}

/* ---- incr / decr ------------------------------------------------------------- */

int store_parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > STORE_U64_DIGITS)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        unsigned d = p[i] - '0';
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

size_t store_format_u64(uint64_t v, uint8_t buf[STORE_U64_DIGITS])
{
    uint8_t tmp[STORE_U64_DIGITS];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

int store_arith(store_thread *t, const uint8_t *key, size_t klen,
                const store_arith_op *a, uint64_t *value, store_meta *meta)
{
    store *s = t->s;
    if (!key_ok(klen))
        return CL_EBADKEY;
    uint64_t h = kv_index_hash(s->index, key, klen);
    struct sealed v, old;
    /* Every result fits in the class of 20 digits: allocate it up front. */
    int rc = chunk_alloc(t, s->arith_cls, &v);
    if (rc != CL_OK)
        return rc;

    uint8_t num[STORE_U64_DIGITS];
    for (int attempt = 0;; attempt++) {
        kv_index_lock(s->index, h);
        int64_t now = store_now();
        kv_item *kept;
        kv_item *it = do_item_find_live(t, h, key, klen, now, NULL, &kept);
        int linked = it != NULL, hit = 0;
        rc = CL_OK;
        uint64_t result = 0;
        uint32_t flags = 0;
        int64_t exptime = 0;
        uint8_t bits = 0;
        if (!it) {
            if (a->vivify && kept) { /* a hidden versioned record: reuse it */
                it = kept;
                linked = 1;
            } else {
                rc = a->vivify ? do_record_alloc(t, h, key, klen, &it) : CL_ENOTFOUND;
            }
            result = a->initial;
            exptime = a->exptime;
        } else if (a->cas && it->cas != a->cas) {
            rc = CL_EEXISTS;
        } else if (it->len == 0 || it->len > STORE_U64_DIGITS) {
            rc = CL_ENONNUMERIC;
        } else if ((rc = do_item_open(t, it, num)) == CL_OK) {
            uint64_t cur;
            if (!store_parse_u64(num, it->len, &cur))
                rc = CL_ENONNUMERIC;
            else if (a->incr)
                result = cur + a->delta; /* wraps, as memcached */
            else
                result = cur > a->delta ? cur - a->delta : 0;
            hit = 1;
            flags = it->flags;
            exptime = it->exptime;
            bits = it->bits & (KV_ITEM_STALE | KV_ITEM_TOKEN_SENT); /* as memcached's in-place incr */
        }
        if (a->touch)
            exptime = a->touch_exptime;
        if (rc == CL_OK)
            rc = do_value_seal(t, key, klen, flags, num, store_format_u64(result, num), &v);
        if (rc != CL_OK) {
            if (it && !linked)
                kv_index_item_free(s->index, it);
            kv_index_unlock(s->index, h);
            if (rc == CL_EFULL && attempt < ALLOC_ATTEMPTS && reclaim_any(t))
                continue;
            if (rc == CL_EFULL)
                COUNT(t, out_of_memory);
            arena_free(s->arena, v.cls, v.off);
            OPENSSL_cleanse(num, sizeof num);
            if (rc == CL_ENOTFOUND)
                a->incr ? COUNT(t, incr_misses) : COUNT(t, decr_misses);
            return rc;
        }
        int grow = do_item_install(t, it, linked, &v, flags, exptime, bits, it->version,
                                   (uint32_t)now, &old);
        store_meta m;
        meta_fill(it, &m);
        kv_index_unlock(s->index, h);
        OPENSSL_cleanse(num, sizeof num);
        write_finish(t, &old, grow);
        if (hit)
            a->incr ? COUNT(t, incr_hits) : COUNT(t, decr_hits);
        else
            a->incr ? COUNT(t, incr_misses) : COUNT(t, decr_misses);
        if (value)
            *value = result;
        if (meta)
            *meta = m;
        return CL_OK;
    }
}

/* ---- flush ------------------------------------------------------------------- */

void store_flush(store *s, int64_t when)
{
    pthread_mutex_lock(&s->flush_lock);
    int64_t now = store_now();
    int64_t at = s->flush_at;
    if (at && at <= now) { /* a delayed flush has fired: keep its effect */
        if (at > s->flush_past)
            __atomic_store_n(&s->flush_past, at, __ATOMIC_RELEASE);
    }
    if (when <= now) {
        /* Every CAS id handed out so far belongs to an item stored before
         * this flush; writes that follow take larger ids and survive. */
        uint64_t cas = __atomic_load_n(&s->next_cas, __ATOMIC_RELAXED) - 1;
        __atomic_store_n(&s->flush_cas, cas, __ATOMIC_RELEASE);
        __atomic_store_n(&s->flush_at, 0, __ATOMIC_RELEASE); /* cancels a pending one */
    } else {
        __atomic_store_n(&s->flush_at, when, __ATOMIC_RELEASE); /* the latest request wins */
    }
    __atomic_add_fetch(&s->cmd_flush, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&s->flush_lock);
}

/* ---- enumeration ------------------------------------------------------------- */

struct store_scan_item {
    store_thread *t;
    kv_item *it;
};

struct scan_ctx {
    store_thread *t;
    store_scan_fn fn;
    void *arg;
    int64_t now;
    size_t seen;
};

static void scan_one(void *arg, kv_item *it)
{
    struct scan_ctx *c = arg;
    store_meta m;
    meta_fill_raw(c->t->s, it, c->now, &m);
    struct store_scan_item si = { c->t, it };
    c->fn(c->arg, it->key, it->klen, &m, &si);
    c->seen++;
}

int store_scan_value(store_scan_item *si, uint8_t *dst)
{
    if (si->it->bits & KV_ITEM_NOCHUNK)
        return CL_OK;
    return do_item_open(si->t, si->it, dst);
}

int store_scan(store_thread *t, uint64_t *cursor, size_t max_items,
               store_scan_fn fn, void *arg)
{
    struct scan_ctx c = { t, fn, arg, store_now(), 0 };
    do {
        *cursor = kv_index_scan(t->s->index, *cursor, scan_one, &c);
    } while (*cursor != 0 && c.seen < max_items);
    return *cursor != 0;
}

/* ---- statistics -------------------------------------------------------------- */

void store_get_stats(store *s, store_stats *out)
{
    memset(out, 0, sizeof *out);
    int64_t bytes;
    pthread_mutex_lock(&s->threads_lock);
#define X(name) out->name = s->retired.name;
    STORE_COUNTERS(X)
#undef X
    bytes = s->retired.bytes;
    for (store_thread *t = s->threads; t; t = t->next) {
#define X(name) out->name += __atomic_load_n(&t->c.name, __ATOMIC_RELAXED);
        STORE_COUNTERS(X)
#undef X
        bytes += __atomic_load_n(&t->c.bytes, __ATOMIC_RELAXED);
    }
    size_t thread_trusted = s->thread_trusted;
    pthread_mutex_unlock(&s->threads_lock);

    out->cmd_flush = __atomic_load_n(&s->cmd_flush, __ATOMIC_RELAXED);
    uint64_t tombs = __atomic_load_n(&s->tombs, __ATOMIC_RELAXED);
    uint64_t records = kv_index_count(s->index);
    out->tombstones = tombs;
    out->curr_items = records > tombs ? records - tombs : 0;
    out->bytes = bytes > 0 ? (uint64_t)bytes : 0;
    out->trusted_bytes = kv_index_trusted_bytes(s->index) + arena_trusted_bytes(s->arena) +
                         sizeof *s + thread_trusted;
    out->trusted_limit = kv_index_limit(s->index);
    out->untrusted_bytes = arena_bytes_used(s->arena);
    out->limit_maxbytes = arena_size(s->arena);
    out->hash_power_level = kv_index_hashpower(s->index);
    out->hash_bytes = kv_index_table_bytes(s->index);
}
