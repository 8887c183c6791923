/*
 * arena.h - the untrusted value region and its slab allocator.
 *
 * The arena is one mapping of `bytes` bytes that the threat model places
 * outside the trust boundary: the adversary may read, change, copy and
 * restore it at any moment.  It holds nothing but sealed value bytes
 * (ciphertext); the store seals into it and opens from it through
 * trust/seal.h.  With a file (`--arena-file`) the mapping is MAP_SHARED,
 * so tests can act as the adversary through the file.
 *
 * Allocation is slab style (memcached's slabs.c): the region is cut into
 * pages of arena_page_size() bytes; a page is handed on demand to one size
 * class and cut into that class's fixed-size chunks.  Class sizes grow by
 * a factor of ~1.25 from 64 bytes; the last class is a whole page, so any
 * value up to max_value fits in one chunk.  A page whose chunks are all
 * free goes back to the shared pool and may then serve another class.
 *
 * Invariant that makes this safe against the adversary: ALL allocator
 * metadata (page ownership, per-page free bitmaps, class lists, counters)
 * lives in trusted heap memory; nothing is ever read from the arena by
 * this module, so arena bytes cannot steer any trusted write.  Offsets
 * given to arena_free() come from trusted records (the store index); a
 * bad one is an internal bug and aborts (CL_ASSERT).
 *
 * Threading: each class has its own mutex; the page pool has one more,
 * always taken inside a class lock (class -> pool), never the reverse.
 * Both are leaves: no other lock is taken while holding them.
 *
 * Called by: store.c only.
 */
#ifndef CLOISTER_STORE_ARENA_H
#define CLOISTER_STORE_ARENA_H

#include <stddef.h>
#include <stdint.h>

#define ARENA_MIN_CHUNK   64u         /* smallest chunk, bytes */
#define ARENA_MIN_PAGE    (1u << 20)  /* pages are at least 1 MiB */
#define ARENA_MAX_CLASSES 96          /* enough for 1.25 growth up to 1 GiB pages */

typedef struct arena arena;

typedef struct arena_class_stats {
    uint32_t chunk_size;    /* bytes per chunk */
    uint32_t per_page;      /* chunks per page */
    uint64_t pages;         /* pages owned by this class */
    uint64_t used_chunks;   /* chunks handed out */
} arena_class_stats;

/*
 * Maps a `bytes`-byte arena able to hold values of up to max_value bytes.
 * file: NULL for anonymous private memory, else a path created (mode 0600)
 * or truncated and mapped shared.  Returns CL_OK, CL_EINVAL (bytes smaller
 * than one page, or max_value too large), CL_EIO (file), CL_ENOMEM.
 */
int arena_create(size_t bytes, size_t max_value, const char *file, arena **out)
    __attribute__((warn_unused_result));
void arena_destroy(arena *a);

/* Class whose chunks hold `len` bytes, or -1 if len exceeds max_value's class. */
int arena_class_for(const arena *a, size_t len);
int arena_class_count(const arena *a);
size_t arena_chunk_size(const arena *a, int cls);
size_t arena_page_size(const arena *a);

/*
 * Hands out one chunk of class cls: *off is its offset in the arena.
 * CL_OK, or CL_EFULL when the class has no free chunk and the pool no free
 * page (the caller may reclaim or evict and try again).
 */
int arena_alloc(arena *a, int cls, uint64_t *off) __attribute__((warn_unused_result));

/* Returns a chunk obtained from arena_alloc(a, cls, ...). */
void arena_free(arena *a, int cls, uint64_t off);

/* Address of offset `off` (for sealing into / opening from the chunk). */
uint8_t *arena_ptr(const arena *a, uint64_t off);

/* Gauges; racy reads that may lag concurrent operations slightly. */
uint64_t arena_bytes_used(const arena *a);   /* sum of handed-out chunk sizes */
uint64_t arena_pages_used(const arena *a);
uint64_t arena_pages_total(const arena *a);
size_t arena_size(const arena *a);           /* bytes mapped */
size_t arena_trusted_bytes(const arena *a);  /* trusted metadata footprint */
void arena_class_stats_get(const arena *a, int cls, arena_class_stats *out);

#endif
