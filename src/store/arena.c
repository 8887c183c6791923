/*
 * arena.c - the untrusted value region and its slab allocator (arena.h).
 *
 * Trusted metadata, one record per page:
 *   - which class owns the page (-1: in the pool),
 *   - how many of its chunks are handed out,
 *   - links in its class's list of pages that still have a free chunk
 *     ("partial" list) or in the pool's free-page stack,
 *   - a free bitmap (1 = free) of page_size / 4096 words, so that even
 *     the 64-byte class fits; total bitmap memory is arena size / 512.
 * A class allocates from the head of its partial list, scanning the
 * page's bitmap from a hint (the lowest word that may hold a free bit), so
 * both alloc and free are O(1) amortised.  A page whose last chunk is
 * freed returns to the pool at once: that is what lets memory move to
 * another size class without a rebalancer, as long as pages empty out.
 *
 * Pages leave the pool lowest index first, so a fresh arena fills from
 * offset 0 upwards (handy when a test inspects the file).
 */
#include "arena.h"
#include "../common/err.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE_NONE UINT32_MAX
#define ARENA_MAX_VALUE (1u << 30)   /* 1 GiB: chunk sizes stay uint32 */
#define GROWTH_NUM 5                 /* class sizes grow by 5/4 */
#define GROWTH_DEN 4

struct arena_page {
    int32_t cls;        /* owning class, -1 while in the pool */
    uint32_t used;      /* chunks handed out */
    uint32_t prev, next;/* partial list of its class, or pool stack (next) */
    uint32_t hint;      /* lowest bitmap word that may have a free bit */
    uint32_t partial;   /* 1 while on its class's partial list */
};

struct arena_class {
    pthread_mutex_t lock;
    uint32_t chunk_size;
    uint32_t per_page;  /* chunks per page */
    uint32_t words;     /* bitmap words in use per page: ceil(per_page / 64) */
    uint32_t partial;   /* head of the partial list */
    uint64_t pages;     /* written under lock, read racily by stats */
    uint64_t used;
} __attribute__((aligned(64)));

struct arena {
    uint8_t *base;
    size_t size;              /* bytes mapped (the file size) */
    size_t page_size;
    uint32_t npages;
    uint32_t words_per_page;  /* bitmap words reserved per page */
    int nclasses;
    struct arena_page *pages;
    uint64_t *bits;
    pthread_mutex_t pool_lock;
    uint32_t pool;            /* free page stack */
    uint64_t pages_used;
    size_t trusted;
    struct arena_class cls[ARENA_MAX_CLASSES];
};

static void store_relaxed(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static uint64_t load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* Fills in the class table: 64, 80, 100, ... (x1.25, multiples of 8) up
 * to half a page, then one class of a whole page (as memcached). */
static void arena_build_classes(arena *a)
{
    size_t size = ARENA_MIN_CHUNK;
    int n = 0;
    while (size <= a->page_size / 2 && n < ARENA_MAX_CLASSES - 1) {
        a->cls[n++].chunk_size = (uint32_t)size;
        size_t next = size * GROWTH_NUM / GROWTH_DEN;
        size = (next + 7) & ~(size_t)7;
    }
    a->cls[n++].chunk_size = (uint32_t)a->page_size;
    a->nclasses = n;
    for (int i = 0; i < n; i++) {
        struct arena_class *c = &a->cls[i];
        c->per_page = (uint32_t)(a->page_size / c->chunk_size);
        c->words = (c->per_page + 63) / 64;
        c->partial = PAGE_NONE;
    }
}

static int arena_map(arena *a, const char *file)
{
    if (!file) {
        void *p = mmap(NULL, a->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return CL_ENOMEM;
        a->base = p;
        return CL_OK;
    }
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        cl_log_error("arena", "cannot open arena file %s: %s", file, strerror(errno));
        return CL_EIO;
    }
    if (ftruncate(fd, (off_t)a->size) != 0) {
        cl_log_error("arena", "cannot size arena file %s: %s", file, strerror(errno));
        close(fd);
        return CL_EIO;
    }
    void *p = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file open */
    if (p == MAP_FAILED) {
        cl_log_error("arena", "cannot map arena file %s: %s", file, strerror(err));
        return CL_EIO;
    }
    a->base = p;
    return CL_OK;
}

int arena_create(size_t bytes, size_t max_value, const char *file, arena **out)
{
    if (max_value == 0 || max_value > ARENA_MAX_VALUE)
        return CL_EINVAL;
    size_t page = max_value < ARENA_MIN_PAGE ? ARENA_MIN_PAGE : (max_value + 4095) & ~(size_t)4095;
    if (bytes < page || bytes / page >= PAGE_NONE)
        return CL_EINVAL;

    arena *a = calloc(1, sizeof *a);
    if (!a)
        return CL_ENOMEM;
    a->size = bytes;
    a->page_size = page;
    a->npages = (uint32_t)(bytes / page);
    a->words_per_page = (uint32_t)(page / (ARENA_MIN_CHUNK * 64));
    arena_build_classes(a);
    a->pages = calloc(a->npages, sizeof *a->pages);
    a->bits = calloc((size_t)a->npages * a->words_per_page, sizeof *a->bits);
    if (!a->pages || !a->bits) {
        free(a->pages);
        free(a->bits);
        free(a);
        return CL_ENOMEM;
    }
    for (uint32_t p = 0; p < a->npages; p++) {
        a->pages[p].cls = -1;
        a->pages[p].next = p + 1 < a->npages ? p + 1 : PAGE_NONE;
    }
    a->pool = 0;
    a->trusted = sizeof *a + (size_t)a->npages * sizeof *a->pages +
                 (size_t)a->npages * a->words_per_page * sizeof *a->bits;

    int rc = arena_map(a, file);
    if (rc != CL_OK) {
        free(a->pages);
        free(a->bits);
        free(a);
        return rc;
    }
    pthread_mutex_init(&a->pool_lock, NULL);
    for (int i = 0; i < a->nclasses; i++)
        pthread_mutex_init(&a->cls[i].lock, NULL);
    *out = a;
    return CL_OK;
}

void arena_destroy(arena *a)
{
    if (!a)
        return;
    munmap(a->base, a->size);
    for (int i = 0; i < a->nclasses; i++)
        pthread_mutex_destroy(&a->cls[i].lock);
    pthread_mutex_destroy(&a->pool_lock);
    free(a->pages);
    free(a->bits);
    free(a);
}

int arena_class_for(const arena *a, size_t len)
{
    if (len > a->cls[a->nclasses - 1].chunk_size)
        return -1;
    int lo = 0, hi = a->nclasses - 1; /* smallest class with chunk_size >= len */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (a->cls[mid].chunk_size >= len)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int arena_class_count(const arena *a) { return a->nclasses; }
size_t arena_chunk_size(const arena *a, int cls) { return a->cls[cls].chunk_size; }
size_t arena_page_size(const arena *a) { return a->page_size; }
size_t arena_size(const arena *a) { return a->size; }
size_t arena_trusted_bytes(const arena *a) { return a->trusted; }
uint64_t arena_pages_total(const arena *a) { return a->npages; }
uint64_t arena_pages_used(const arena *a) { return load_relaxed(&a->pages_used); }

uint8_t *arena_ptr(const arena *a, uint64_t off)
{
    return a->base + off;
}

/* ---- partial lists and the pool (class lock held) ------------------------- */

static void partial_push(arena *a, struct arena_class *c, uint32_t p)
{
    struct arena_page *pg = &a->pages[p];
    pg->prev = PAGE_NONE;
    pg->next = c->partial;
    if (c->partial != PAGE_NONE)
        a->pages[c->partial].prev = p;
    c->partial = p;
    pg->partial = 1;
}

static void partial_remove(arena *a, struct arena_class *c, uint32_t p)
{
    struct arena_page *pg = &a->pages[p];
    if (pg->prev != PAGE_NONE)
        a->pages[pg->prev].next = pg->next;
    else
        c->partial = pg->next;
    if (pg->next != PAGE_NONE)
        a->pages[pg->next].prev = pg->prev;
    pg->prev = pg->next = PAGE_NONE;
    pg->partial = 0;
}

static uint32_t pool_take(arena *a)
{
    pthread_mutex_lock(&a->pool_lock);
    uint32_t p = a->pool;
    if (p != PAGE_NONE) {
        a->pool = a->pages[p].next;
        store_relaxed(&a->pages_used, a->pages_used + 1);
    }
    pthread_mutex_unlock(&a->pool_lock);
    return p;
}

static void pool_put(arena *a, uint32_t p)
{
    pthread_mutex_lock(&a->pool_lock);
    a->pages[p].cls = -1;
    a->pages[p].next = a->pool;
    a->pool = p;
    store_relaxed(&a->pages_used, a->pages_used - 1);
    pthread_mutex_unlock(&a->pool_lock);
}

/* Gives page p to class c: every chunk free, on the partial list. */
static void page_adopt(arena *a, struct arena_class *c, int cls, uint32_t p)
{
    struct arena_page *pg = &a->pages[p];
    uint64_t *w = a->bits + (size_t)p * a->words_per_page;
    uint32_t full = c->per_page / 64, rest = c->per_page % 64;
    for (uint32_t i = 0; i < full; i++)
        w[i] = ~(uint64_t)0;
    if (rest)
        w[full] = ((uint64_t)1 << rest) - 1;
    pg->cls = cls;
    pg->used = 0;
    pg->hint = 0;
    partial_push(a, c, p);
    store_relaxed(&c->pages, c->pages + 1);
}

/* ---- alloc / free ------------------------------------------------------------ */

int arena_alloc(arena *a, int cls, uint64_t *off)
{
    CL_ASSERT(cls >= 0 && cls < a->nclasses);
    struct arena_class *c = &a->cls[cls];
    pthread_mutex_lock(&c->lock);
    uint32_t p = c->partial;
    if (p == PAGE_NONE) {
        p = pool_take(a);
        if (p == PAGE_NONE) {
            pthread_mutex_unlock(&c->lock);
            return CL_EFULL;
        }
        page_adopt(a, c, cls, p);
    }
    struct arena_page *pg = &a->pages[p];
    uint64_t *w = a->bits + (size_t)p * a->words_per_page;
    uint32_t i = pg->hint;
    while (w[i] == 0) {
        i++;
        CL_ASSERT(i < c->words); /* a partial page has a free chunk */
    }
    uint32_t idx = i * 64 + (uint32_t)__builtin_ctzll(w[i]);
    w[i] &= w[i] - 1;
    pg->hint = i;
    if (++pg->used == c->per_page)
        partial_remove(a, c, p);
    store_relaxed(&c->used, c->used + 1);
    pthread_mutex_unlock(&c->lock);
    *off = (uint64_t)p * a->page_size + (uint64_t)idx * c->chunk_size;
    return CL_OK;
}

void arena_free(arena *a, int cls, uint64_t off)
{
    CL_ASSERT(cls >= 0 && cls < a->nclasses);
    CL_ASSERT(off < (uint64_t)a->npages * a->page_size);
    struct arena_class *c = &a->cls[cls];
    uint32_t p = (uint32_t)(off / a->page_size);
    uint64_t in_page = off % a->page_size;
    struct arena_page *pg = &a->pages[p];
    uint64_t *w = a->bits + (size_t)p * a->words_per_page;

    pthread_mutex_lock(&c->lock);
    CL_ASSERT(pg->cls == cls && in_page % c->chunk_size == 0);
    uint32_t idx = (uint32_t)(in_page / c->chunk_size);
    uint32_t word = idx / 64;
    uint64_t bit = (uint64_t)1 << (idx % 64);
    CL_ASSERT(idx < c->per_page && !(w[word] & bit)); /* no double free */
    w[word] |= bit;
    if (word < pg->hint)
        pg->hint = word;
    if (pg->used-- == c->per_page)
        partial_push(a, c, p);
    store_relaxed(&c->used, c->used - 1);
    if (pg->used == 0) {
        partial_remove(a, c, p);
        store_relaxed(&c->pages, c->pages - 1);
        pool_put(a, p);
    }
    pthread_mutex_unlock(&c->lock);
}

/* ---- statistics ---------------------------------------------------------- */

uint64_t arena_bytes_used(const arena *a)
{
    uint64_t sum = 0;
    for (int i = 0; i < a->nclasses; i++)
        sum += load_relaxed(&a->cls[i].used) * a->cls[i].chunk_size;
    return sum;
}

void arena_class_stats_get(const arena *a, int cls, arena_class_stats *out)
{
    const struct arena_class *c = &a->cls[cls];
    out->chunk_size = c->chunk_size;
    out->per_page = c->per_page;
    out->pages = load_relaxed(&c->pages);
    out->used_chunks = load_relaxed(&c->used);
}
