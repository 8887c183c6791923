/*
 * stencil - 2D Jacobi iteration with the 5-point stencil.
 *
 * An N x N grid of doubles with a fixed boundary; each sweep replaces
 * every interior point by 0.2 x (itself + its four neighbours), reading
 * one grid and writing the other, then the grids swap (PolyBench
 * jacobi-2d).  STEPS sweeps; the checksum hashes the final grid.
 * Working set: 2 x N^2 x 8 bytes = 4 MB at N = 500 (memory-bandwidth
 * and cache bound rather than arithmetic bound).
 */
#include "kernel.h"

#define N 500
#define STEPS 2000

static void sweep(const double *restrict in, double *restrict out)
{
    for (int i = 1; i < N - 1; i++)
        for (int j = 1; j < N - 1; j++)
            out[i * N + j] = 0.2 * (in[i * N + j] + in[(i - 1) * N + j] + in[(i + 1) * N + j] +
                                    in[i * N + j - 1] + in[i * N + j + 1]);
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    double *g = malloc(sizeof(double) * N * N);
    double *h2 = malloc(sizeof(double) * N * N);
    if (!g || !h2) {
        free(g), free(h2);
        return kern_fail("out of memory");
    }
    uint64_t seed = 2;
    for (size_t i = 0; i < (size_t)N * N; i++)
        g[i] = kern_rand_unit(&seed);
    memcpy(h2, g, sizeof(double) * N * N);      /* same boundary in both */

    for (int t = 0; t < STEPS; t++) {
        sweep(g, h2);
        double *tmp = g;
        g = h2;
        h2 = tmp;
    }

    uint64_t h = KERN_SUM_INIT;
    for (size_t i = 0; i < (size_t)N * N; i++)
        h = kern_sum_f64(h, g[i]);
    free(g), free(h2);
    return kern_report("stencil", h);
}
