/*
 * index.c - the trusted hash index (index.h): a chained hash table under
 * lock stripes, plus the record allocator.
 *
 * Memory accounting: `trusted` counts the kv_index struct (stripes and
 * allocator heads), the bucket array and every 64 KiB record block; it is
 * what kv_index_trusted_bytes() reports and what `limit` bounds.
 */
#include "index.h"
#include "../common/err.h"
#include "../common/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define KV_STRIPE_BITS 11                      /* 2048 stripes */
#define KV_STRIPES (1u << KV_STRIPE_BITS)
#define KV_MAX_POWER 32
#define KV_REC_ALIGN 16
#define KV_REC_MIN (((sizeof(kv_item) + 1) + KV_REC_ALIGN - 1) & ~(size_t)(KV_REC_ALIGN - 1))
#define KV_REC_MAX (((sizeof(kv_item) + KV_INDEX_KEY_MAX) + KV_REC_ALIGN - 1) & ~(size_t)(KV_REC_ALIGN - 1))
#define KV_REC_CLASSES ((KV_REC_MAX - KV_REC_MIN) / KV_REC_ALIGN + 1)
#define KV_BLOCK_BYTES (64u << 10)

struct kv_stripe {
    pthread_mutex_t lock;
} __attribute__((aligned(64)));

struct kv_rec_class {
    pthread_mutex_t lock;
    kv_item *free;       /* freed records, linked through h_next */
    uint8_t *carve;      /* unused tail of the newest block */
    size_t carve_left;
} __attribute__((aligned(64)));

/* Blocks are chained for kv_index_destroy(); records follow the header. */
struct kv_block {
    struct kv_block *next;
} __attribute__((aligned(KV_REC_ALIGN)));

struct kv_index {
    uint64_t seed;
    kv_item **table;     /* written with every stripe held, read with one */
    uint64_t mask;
    unsigned power;
    uint64_t count;      /* linked records (atomic) */
    size_t limit;
    size_t trusted;      /* atomic */
    pthread_mutex_t grow_lock;
    pthread_mutex_t blocks_lock;
    struct kv_block *blocks;
    struct kv_rec_class rc[KV_REC_CLASSES];
    struct kv_stripe stripes[KV_STRIPES];
};

static size_t rec_size(unsigned rc) { return KV_REC_MIN + (size_t)rc * KV_REC_ALIGN; }

static unsigned rec_class_for(size_t klen)
{
    size_t need = sizeof(kv_item) + klen;
    return need <= KV_REC_MIN ? 0 : (unsigned)((need - KV_REC_MIN + KV_REC_ALIGN - 1) / KV_REC_ALIGN);
}

/* Adds n bytes to the trusted total if the limit allows.  1 on success. */
static int trusted_reserve(kv_index *ix, size_t n)
{
    size_t before = __atomic_fetch_add(&ix->trusted, n, __ATOMIC_RELAXED);
    if (before + n <= ix->limit)
        return 1;
    __atomic_fetch_sub(&ix->trusted, n, __ATOMIC_RELAXED);
    return 0;
}

int kv_index_create(size_t limit_bytes, unsigned hashpower, kv_index **out)
{
    if (hashpower < KV_STRIPE_BITS)
        hashpower = KV_STRIPE_BITS;
    if (hashpower > KV_MAX_POWER)
        return CL_EINVAL;
    size_t table_bytes = ((size_t)1 << hashpower) * sizeof(kv_item *);
    if (sizeof(kv_index) + table_bytes > limit_bytes)
        return CL_EINVAL;

    kv_index *ix = aligned_alloc(64, (sizeof *ix + 63) & ~(size_t)63);
    if (!ix)
        return CL_ENOMEM;
    memset(ix, 0, sizeof *ix);
    if (getrandom(&ix->seed, sizeof ix->seed, 0) != (ssize_t)sizeof ix->seed) {
        free(ix);
        return CL_ECRYPTO;
    }
    ix->table = calloc((size_t)1 << hashpower, sizeof(kv_item *));
    if (!ix->table) {
        free(ix);
        return CL_ENOMEM;
    }
    ix->power = hashpower;
    ix->mask = ((uint64_t)1 << hashpower) - 1;
    ix->limit = limit_bytes;
    ix->trusted = sizeof *ix + table_bytes;
    pthread_mutex_init(&ix->grow_lock, NULL);
    pthread_mutex_init(&ix->blocks_lock, NULL);
    for (unsigned i = 0; i < KV_REC_CLASSES; i++)
        pthread_mutex_init(&ix->rc[i].lock, NULL);
    for (unsigned i = 0; i < KV_STRIPES; i++)
        pthread_mutex_init(&ix->stripes[i].lock, NULL);
    *out = ix;
    return CL_OK;
}

void kv_index_destroy(kv_index *ix)
{
    if (!ix)
        return;
    for (struct kv_block *b = ix->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    for (unsigned i = 0; i < KV_STRIPES; i++)
        pthread_mutex_destroy(&ix->stripes[i].lock);
    for (unsigned i = 0; i < KV_REC_CLASSES; i++)
        pthread_mutex_destroy(&ix->rc[i].lock);
    pthread_mutex_destroy(&ix->grow_lock);
    pthread_mutex_destroy(&ix->blocks_lock);
    free(ix->table);
    free(ix);
}

uint64_t kv_index_hash(const kv_index *ix, const uint8_t *key, size_t klen)
{
    return XXH3_64bits_withSeed(key, klen, ix->seed);
}

static pthread_mutex_t *stripe_of(kv_index *ix, uint64_t hash)
{
    return &ix->stripes[hash & (KV_STRIPES - 1)].lock;
}

void kv_index_lock(kv_index *ix, uint64_t hash) { pthread_mutex_lock(stripe_of(ix, hash)); }
int kv_index_trylock(kv_index *ix, uint64_t hash) { return pthread_mutex_trylock(stripe_of(ix, hash)); }
void kv_index_unlock(kv_index *ix, uint64_t hash) { pthread_mutex_unlock(stripe_of(ix, hash)); }

/* ---- table operations (stripe held) ------------------------------------------ */

kv_item *do_kv_index_find(kv_index *ix, uint64_t hash, const uint8_t *key, size_t klen)
{
    for (kv_item *it = ix->table[hash & ix->mask]; it; it = it->h_next)
        if (it->hash == hash && it->klen == klen && memcmp(it->key, key, klen) == 0)
            return it;
    return NULL;
}

int do_kv_index_link(kv_index *ix, kv_item *it)
{
    kv_item **b = &ix->table[it->hash & ix->mask];
    it->h_next = *b;
    *b = it;
    uint64_t n = __atomic_add_fetch(&ix->count, 1, __ATOMIC_RELAXED);
    uint64_t buckets = ix->mask + 1;
    return n > buckets + buckets / 2 && ix->power < KV_MAX_POWER;
}

void do_kv_index_unlink(kv_index *ix, kv_item *it)
{
    kv_item **pp = &ix->table[it->hash & ix->mask];
    while (*pp != it) {
        CL_ASSERT(*pp != NULL); /* the record is linked */
        pp = &(*pp)->h_next;
    }
    *pp = it->h_next;
    it->h_next = NULL;
    __atomic_sub_fetch(&ix->count, 1, __ATOMIC_RELAXED);
}

void kv_index_grow(kv_index *ix)
{
    if (pthread_mutex_trylock(&ix->grow_lock) != 0)
        return; /* another thread is growing it */
    uint64_t buckets = ix->mask + 1; /* only growers write mask; we are the one */
    uint64_t count = __atomic_load_n(&ix->count, __ATOMIC_RELAXED);
    size_t old_bytes = buckets * sizeof(kv_item *);
    if (count <= buckets + buckets / 2 || ix->power >= KV_MAX_POWER ||
        !trusted_reserve(ix, old_bytes)) { /* new table = old + old_bytes */
        pthread_mutex_unlock(&ix->grow_lock);
        return;
    }
    kv_item **nt = calloc(buckets * 2, sizeof *nt);
    if (!nt) {
        __atomic_fetch_sub(&ix->trusted, old_bytes, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&ix->grow_lock);
        return;
    }
    for (unsigned i = 0; i < KV_STRIPES; i++)
        pthread_mutex_lock(&ix->stripes[i].lock);

    uint64_t nmask = buckets * 2 - 1;
    for (uint64_t b = 0; b < buckets; b++) {
        kv_item *it = ix->table[b];
        while (it) {
            kv_item *next = it->h_next;
            kv_item **nb = &nt[it->hash & nmask];
            it->h_next = *nb;
            *nb = it;
            it = next;
        }
    }
    kv_item **old = ix->table;
    ix->table = nt;
    ix->mask = nmask;
    __atomic_store_n(&ix->power, ix->power + 1, __ATOMIC_RELAXED);

    for (unsigned i = KV_STRIPES; i-- > 0;)
        pthread_mutex_unlock(&ix->stripes[i].lock);
    free(old);
    pthread_mutex_unlock(&ix->grow_lock);
    cl_log_debug("index", "hash table grown to 2^%u buckets", ix->power);
}

/* ---- resumable scan ------------------------------------------------------------- */

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}

uint64_t kv_index_scan(kv_index *ix, uint64_t cursor,
                       void (*fn)(void *arg, kv_item *it), void *arg)
{
    /* A bucket's stripe is its low KV_STRIPE_BITS, whatever the table size,
     * and the table only changes with every stripe held: lock first, then
     * read the mask. */
    pthread_mutex_t *lock = &ix->stripes[cursor & (KV_STRIPES - 1)].lock;
    pthread_mutex_lock(lock);
    uint64_t mask = ix->mask;
    for (kv_item *it = ix->table[cursor & mask], *next; it; it = next) {
        next = it->h_next;
        fn(arg, it);
    }
    pthread_mutex_unlock(lock);
    cursor |= ~mask;
    cursor = rev64(cursor);
    cursor++;
    return rev64(cursor);
}

/* ---- record allocator ----------------------------------------------------------- */

int kv_index_item_alloc(kv_index *ix, size_t klen, kv_item **out)
{
    if (klen == 0 || klen > KV_INDEX_KEY_MAX)
        return CL_EBADKEY;
    unsigned rc = rec_class_for(klen);
    size_t size = rec_size(rc);
    struct kv_rec_class *c = &ix->rc[rc];
    kv_item *it;

    pthread_mutex_lock(&c->lock);
    if (c->free) {
        it = c->free;
        c->free = it->h_next;
    } else {
        if (c->carve_left < size) {
            if (!trusted_reserve(ix, KV_BLOCK_BYTES)) {
                pthread_mutex_unlock(&c->lock);
                return CL_EFULL;
            }
            struct kv_block *b = malloc(KV_BLOCK_BYTES);
            if (!b) {
                __atomic_fetch_sub(&ix->trusted, KV_BLOCK_BYTES, __ATOMIC_RELAXED);
                pthread_mutex_unlock(&c->lock);
                return CL_ENOMEM;
            }
            pthread_mutex_lock(&ix->blocks_lock);
            b->next = ix->blocks;
            ix->blocks = b;
            pthread_mutex_unlock(&ix->blocks_lock);
            c->carve = (uint8_t *)(b + 1);
            c->carve_left = KV_BLOCK_BYTES - sizeof *b;
        }
        it = (kv_item *)c->carve;
        c->carve += size;
        c->carve_left -= size;
    }
    pthread_mutex_unlock(&c->lock);

    memset(it, 0, sizeof *it);
    it->rec_class = (uint8_t)rc;
    it->klen = (uint8_t)klen;
    *out = it;
    return CL_OK;
}

void kv_index_item_free(kv_index *ix, kv_item *it)
{
    struct kv_rec_class *c = &ix->rc[it->rec_class];
    /* Keys are tenant data: do not leave them lying in free records. */
    memset(it->key, 0, it->klen);
    pthread_mutex_lock(&c->lock);
    it->h_next = c->free;
    c->free = it;
    pthread_mutex_unlock(&c->lock);
}

/* ---- gauges ---------------------------------------------------------------- */

uint64_t kv_index_count(const kv_index *ix) { return __atomic_load_n(&ix->count, __ATOMIC_RELAXED); }
unsigned kv_index_hashpower(const kv_index *ix) { return __atomic_load_n(&ix->power, __ATOMIC_RELAXED); }
size_t kv_index_table_bytes(const kv_index *ix) { return ((size_t)1 << kv_index_hashpower(ix)) * sizeof(kv_item *); }
size_t kv_index_trusted_bytes(const kv_index *ix) { return __atomic_load_n(&ix->trusted, __ATOMIC_RELAXED); }
size_t kv_index_limit(const kv_index *ix) { return ix->limit; }
unsigned kv_index_stripe_count(void) { return KV_STRIPES; }
