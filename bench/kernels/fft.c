/*
 * fft - radix-2 complex FFT (iterative, in place, decimation in time).
 *
 * N = 2^LOG2N complex doubles in split re/im arrays; each round is a
 * forward transform followed by the inverse (scaled by 1/N), so values
 * stay bounded over ROUNDS rounds; the checksum hashes the final arrays.
 *
 * Twiddle factors come from a table of cos/sin(2 pi k / N), k < N/2,
 * computed here with Taylor series on [0, pi/2] and the quadrant symmetry
 * - not with libm's sin/cos, whose last bits differ between glibc and
 * wasi-libc and would make the checksums differ (see kernel.h).
 */
#include "kernel.h"

#define LOG2N 16
#define N (1 << LOG2N)
#define ROUNDS 72

static const double PI = 3.14159265358979323846;

/* cos and sin of x in [0, pi/2] by their Taylor series (|error| < 1e-15). */
static void sincos_quarter(double x, double *s, double *c)
{
    double x2 = x * x, ts = x, tc = 1.0, ss = x, cc = 1.0;
    for (int n = 1; n <= 12; n++) {
        ts *= -x2 / ((2 * n) * (2 * n + 1));
        tc *= -x2 / ((2 * n - 1) * (2 * n));
        ss += ts;
        cc += tc;
    }
    *s = ss;
    *c = cc;
}

/* cos_t[k], sin_t[k] = cos, sin of 2 pi k / N for k < N/2. */
static void make_twiddles(double *cos_t, double *sin_t)
{
    for (int k = 0; k < N / 2; k++) {
        int q = k <= N / 4 ? k : N / 2 - k;         /* angle folded into [0, pi/2] */
        double s, c;
        sincos_quarter(2.0 * PI * q / N, &s, &c);
        cos_t[k] = k <= N / 4 ? c : -c;
        sin_t[k] = s;
    }
}

/* sign -1: forward (e^{-i...}); +1: inverse (unscaled). */
static void fft(double *re, double *im, const double *cos_t, const double *sin_t, double sign)
{
    for (unsigned i = 1, j = 0; i < N; i++) {       /* bit-reversal permutation */
        unsigned bit = N >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j |= bit;
        if (i < j) {
            double t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (int len = 2; len <= N; len <<= 1) {
        int half = len >> 1, step = N / len;
        for (int i = 0; i < N; i += len)
            for (int j = 0; j < half; j++) {
                double wr = cos_t[j * step], wi = sign * sin_t[j * step];
                int p = i + j, q = p + half;
                double xr = re[q] * wr - im[q] * wi;
                double xi = re[q] * wi + im[q] * wr;
                re[q] = re[p] - xr;
                im[q] = im[p] - xi;
                re[p] += xr;
                im[p] += xi;
            }
    }
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    double *re = malloc(sizeof(double) * N), *im = malloc(sizeof(double) * N);
    double *cos_t = malloc(sizeof(double) * N / 2), *sin_t = malloc(sizeof(double) * N / 2);
    if (!re || !im || !cos_t || !sin_t) {
        free(re), free(im), free(cos_t), free(sin_t);
        return kern_fail("out of memory");
    }
    make_twiddles(cos_t, sin_t);
    uint64_t seed = 4;
    for (int i = 0; i < N; i++) {
        re[i] = kern_rand_unit(&seed) - 0.5;
        im[i] = kern_rand_unit(&seed) - 0.5;
    }

    for (int r = 0; r < ROUNDS; r++) {
        fft(re, im, cos_t, sin_t, -1.0);
        fft(re, im, cos_t, sin_t, 1.0);
        for (int i = 0; i < N; i++) {
            re[i] *= 1.0 / N;
            im[i] *= 1.0 / N;
        }
    }

    uint64_t h = KERN_SUM_INIT;
    for (int i = 0; i < N; i++)
        h = kern_sum_f64(kern_sum_f64(h, re[i]), im[i]);
    free(re), free(im), free(cos_t), free(sin_t);
    return kern_report("fft", h);
}
