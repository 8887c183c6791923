/*
 * matmul - dense matrix multiply of N x N doubles: C += A * B, ROUNDS times.
 *
 * The classic triple loop in i-k-j order (row of A times rows of B, so the
 * inner loop streams through B and C with unit stride), the form compilers
 * vectorise and the usual baseline in benchmark suites (PolyBench gemm).
 * Inputs are pseudo-random in [0, 1); the checksum hashes every element of
 * C.  Working set: 3 x N^2 x 8 bytes = 6 MB at N = 500 (not a power of two,
 * so rows do not all map to the same cache sets).
 */
#include "kernel.h"

#define N 500
#define ROUNDS 8

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    double *a = malloc(sizeof(double) * N * N);
    double *b = malloc(sizeof(double) * N * N);
    double *c = calloc((size_t)N * N, sizeof(double));
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return kern_fail("out of memory");
    }
    uint64_t seed = 1;
    for (size_t i = 0; i < (size_t)N * N; i++) {
        a[i] = kern_rand_unit(&seed);
        b[i] = kern_rand_unit(&seed);
    }

    for (int r = 0; r < ROUNDS; r++)             /* C += A * B, ROUNDS times */
        for (int i = 0; i < N; i++)
            for (int k = 0; k < N; k++) {
                double aik = a[i * N + k];
                for (int j = 0; j < N; j++)
                    c[i * N + j] += aik * b[k * N + j];
            }

    uint64_t h = KERN_SUM_INIT;
    for (size_t i = 0; i < (size_t)N * N; i++)
        h = kern_sum_f64(h, c[i]);
    free(a), free(b), free(c);
    return kern_report("matmul", h);
}
