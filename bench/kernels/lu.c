/*
 * lu - LU decomposition (Doolittle, in place, no pivoting) of an N x N
 * matrix of doubles.
 *
 * A = L U with L unit lower triangular; after the loop the strict lower
 * triangle holds L and the upper triangle U (PolyBench lu).  Without
 * pivoting the matrix must be safe to factor: random entries in [0, 1)
 * plus N on the diagonal make it strictly diagonally dominant, so every
 * pivot is far from zero.  About 2/3 N^3 flops; the inner loop is an
 * axpy over a row.  ROUNDS factorisations, each of a fresh copy of a
 * slightly different matrix; the checksum hashes every factored matrix.
 * Working set: 2 x N^2 x 8 bytes = 4 MB at N = 500.
 */
#include "kernel.h"

#define N 500
#define ROUNDS 12

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    double *orig = malloc(sizeof(double) * N * N);
    double *a = malloc(sizeof(double) * N * N);
    if (!orig || !a) {
        free(orig), free(a);
        return kern_fail("out of memory");
    }
    uint64_t seed = 3;
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++)
            orig[i * N + j] = kern_rand_unit(&seed);
        orig[i * N + i] += N;
    }

    uint64_t h = KERN_SUM_INIT;
    for (int r = 0; r < ROUNDS; r++) {
        memcpy(a, orig, sizeof(double) * N * N);
        orig[r] += 1.0;                         /* the next round factors another matrix */
        for (int k = 0; k < N; k++) {
            double pivot = a[k * N + k];
            for (int i = k + 1; i < N; i++) {
                double l = a[i * N + k] / pivot;
                a[i * N + k] = l;
                for (int j = k + 1; j < N; j++)
                    a[i * N + j] -= l * a[k * N + j];
            }
        }
        for (size_t i = 0; i < (size_t)N * N; i++)
            h = kern_sum_f64(h, a[i]);
    }
    free(orig), free(a);
    return kern_report("lu", h);
}
