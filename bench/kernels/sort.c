/*
 * sort - quicksort and mergesort of N pseudo-random 32-bit integers.
 *
 * Both sorts are written here (libc's qsort is a different algorithm in
 * glibc and in wasi-libc, so it would not compare like with like):
 * quicksort with median-of-three pivots and insertion sort below 16
 * elements, smaller side first by recursion (depth <= log2 N), and a
 * bottom-up mergesort through a scratch array.  Each sorts its own copy of
 * the same input; the results must be sorted and equal, and the checksum
 * hashes the sorted array.  Branchy, integer, memory-streaming code: the
 * opposite profile of the floating-point kernels.
 */
#include "kernel.h"

#define N (1 << 21)

static void insertion_sort(uint32_t *a, long n)
{
    for (long i = 1; i < n; i++) {
        uint32_t v = a[i];
        long j = i;
        for (; j > 0 && a[j - 1] > v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

static void quick_sort(uint32_t *a, long n)
{
    while (n > 16) {
        uint32_t x = a[0], y = a[n / 2], z = a[n - 1];      /* median of three */
        uint32_t pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        long i = 0, j = n - 1;
        for (;;) {                                           /* Hoare partition */
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i >= j)
                break;
            uint32_t t = a[i]; a[i] = a[j]; a[j] = t;
            i++, j--;
        }
        long left = j + 1;          /* a[0..j] <= pivot <= a[j+1..n) */
        if (left < n - left) {
            quick_sort(a, left);
            a += left, n -= left;
        } else {
            quick_sort(a + left, n - left);
            n = left;
        }
    }
    insertion_sort(a, n);
}

/* Sorts a[0..n) using tmp; returns whichever of the two holds the result. */
static uint32_t *merge_sort(uint32_t *a, uint32_t *tmp, long n)
{
    for (long width = 1; width < n; width *= 2) {
        for (long lo = 0; lo < n; lo += 2 * width) {
            long mid = lo + width < n ? lo + width : n;
            long hi = lo + 2 * width < n ? lo + 2 * width : n;
            long i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = a[j] < a[i] ? a[j++] : a[i++];
            while (i < mid)
                tmp[k++] = a[i++];
            while (j < hi)
                tmp[k++] = a[j++];
        }
        uint32_t *t = a; a = tmp; tmp = t;
    }
    return a;
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    uint32_t *input = malloc(sizeof(uint32_t) * N);
    uint32_t *q = malloc(sizeof(uint32_t) * N);
    uint32_t *m = malloc(sizeof(uint32_t) * N);
    uint32_t *tmp = malloc(sizeof(uint32_t) * N);
    int32_t ret;
    if (!input || !q || !m || !tmp) {
        ret = kern_fail("out of memory");
        goto out;
    }
    uint64_t seed = 5;
    for (long i = 0; i < N; i++)
        input[i] = (uint32_t)kern_rand(&seed);
    memcpy(q, input, sizeof(uint32_t) * N);
    memcpy(m, input, sizeof(uint32_t) * N);

    quick_sort(q, N);
    const uint32_t *merged = merge_sort(m, tmp, N);

    uint64_t h = KERN_SUM_INIT;
    for (long i = 0; i < N; i++) {
        if ((i > 0 && q[i - 1] > q[i]) || q[i] != merged[i]) {
            ret = kern_fail("the sorts disagree or did not sort");
            goto out;
        }
        h = kern_sum_u64(h, q[i]);
    }
    ret = kern_report("sort", h);
out:
    free(input), free(q), free(m), free(tmp);
    return ret;
}
