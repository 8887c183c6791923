/*
 * kernel.h - what every compute-benchmark kernel shares: a pseudo-random
 * generator, a checksum, and the one-line report.
 *
 * A kernel (bench/kernels/<name>.c, see README.md) is a Cloister function:
 * handle() runs a fixed workload from scratch, folds its result into a
 * checksum and outputs "<name> <16 hex digits>\n".  The same source is
 * compiled to WebAssembly (clang-14 --target=wasm32-wasi -O2) and natively
 * (gcc -O2), and bench/compute.py requires every runner to print the same
 * line, so the checksum must not depend on the compiler or the platform:
 *
 *   - inputs come from splitmix64 (integer arithmetic only);
 *   - floating point is IEEE-754 double with + - * / and nothing else (no
 *     libm: its last-bit results differ between glibc and wasi-libc), no
 *     -ffast-math, and no FMA contraction (neither x86-64's baseline
 *     instruction set nor WebAssembly has FMA), so every value is
 *     bit-identical everywhere;
 *   - the checksum hashes the bit patterns of the results.
 *
 * Kernels use only malloc/free/memcpy/memset from libc, so their .wasm
 * imports nothing but cloister.output (no WASI), and they free everything
 * they allocate, so handle() can run again in the same instance (Node.js
 * and the native runner call it repeatedly).
 */
#ifndef BENCH_KERNEL_H
#define BENCH_KERNEL_H

#include <cloister/function.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: a fast, well-mixed 64-bit generator. */
static inline uint64_t kern_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A double in [0, 1), exactly representable. */
static inline double kern_rand_unit(uint64_t *state)
{
    return (double)(kern_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

#define KERN_SUM_INIT 0xcbf29ce484222325ull

/* Folds a 64-bit word into checksum h (order matters). */
static inline uint64_t kern_sum_u64(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x100000001b3ull;
    return h ^ (h >> 29);
}

static inline uint64_t kern_sum_f64(uint64_t h, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return kern_sum_u64(h, bits);
}

/* Outputs "<name> <checksum as 16 hex digits>\n" (no printf: no WASI). */
static inline int32_t kern_report(const char *name, uint64_t checksum)
{
    char line[80];
    size_t n = strlen(name);
    if (n > sizeof line - 18)
        n = sizeof line - 18;
    memcpy(line, name, n);
    line[n++] = ' ';
    for (int i = 15; i >= 0; i--)
        line[n++] = "0123456789abcdef"[(checksum >> (4 * i)) & 15];
    line[n++] = '\n';
    return cloister_output((const uint8_t *)line, (uint32_t)n) == 0 ? 0 : 1;
}

/* Reports an internal failure (out of memory, a failed self-check). */
static inline int32_t kern_fail(const char *what)
{
    cloister_output((const uint8_t *)"error: ", 7);
    cloister_output((const uint8_t *)what, (uint32_t)strlen(what));
    cloister_output((const uint8_t *)"\n", 1);
    return 1;
}

#endif
