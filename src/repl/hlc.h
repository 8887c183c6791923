/*
 * hlc.h - hybrid logical clock and the version numbers built from it.
 *
 * Every version in the replication engine (ABD timestamps, CASPaxos
 * ballots, eventual-mode write stamps, recovery fences) is one u64:
 *
 *     version = hlc << 8 | node_id        (node ids 1..7; bits 3..7 zero)
 *     hlc     = (wall ms since 2020-01-01) << 15 | logical counter
 *
 * so versions are unique per node, totally ordered, and roughly follow
 * real time (41 bits of milliseconds last until 2089).  hlc_next() never
 * goes backwards and is strictly larger than everything observed, so a
 * node that has seen version v makes versions > v from then on.  The
 * physical part is what bounds "every version made before now" when a
 * recovering node fences the cluster (recover.c).
 *
 * Not thread-safe: one hlc belongs to the repl thread.
 */
#ifndef CLOISTER_REPL_HLC_H
#define CLOISTER_REPL_HLC_H

#include <stdint.h>

#define HLC_EPOCH_MS 1577836800000ull   /* 2020-01-01T00:00:00Z */
#define HLC_LOGICAL_BITS 15

typedef struct hlc {
    uint64_t last;   /* the largest hlc value made or observed */
} hlc;

/* The hlc value of wall-clock time ms (Unix milliseconds). */
static inline uint64_t hlc_of_ms(uint64_t unix_ms)
{
    return unix_ms > HLC_EPOCH_MS ? (unix_ms - HLC_EPOCH_MS) << HLC_LOGICAL_BITS : 0;
}

/* Unix milliseconds of an hlc value (its physical part). */
static inline uint64_t hlc_ms(uint64_t h) { return (h >> HLC_LOGICAL_BITS) + HLC_EPOCH_MS; }

static inline uint64_t version_make(uint64_t h, int node) { return h << 8 | (uint64_t)(node & 7); }
static inline uint64_t version_hlc(uint64_t v) { return v >> 8; }
static inline int version_node(uint64_t v) { return (int)(v & 7); }

/* A new hlc value: > every value made or observed, >= the wall clock. */
uint64_t hlc_next(hlc *c, uint64_t unix_ms);
/* Raises the clock to at least h (a value seen in a message). */
void hlc_observe(hlc *c, uint64_t h);

#endif
