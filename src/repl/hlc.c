/*
 * hlc.c - hybrid logical clock (hlc.h).  Kulkarni et al.'s HLC reduced to
 * what the engine needs: one 64-bit value per node, physical milliseconds
 * in the high bits, a counter in the low bits that absorbs events within
 * one millisecond and clocks that run behind what was observed.
 */
#include "hlc.h"

uint64_t hlc_next(hlc *c, uint64_t unix_ms)
{
    uint64_t phys = hlc_of_ms(unix_ms);
    c->last = phys > c->last ? phys : c->last + 1;
    return c->last;
}

void hlc_observe(hlc *c, uint64_t h)
{
    if (h > c->last)
        c->last = h;
}
