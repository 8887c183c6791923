/*
 * native_runner.c - the native column of the compute benchmark: a tiny
 * host that a kernel is linked with (gcc -O2 kernel.c native_runner.c) and
 * that times the kernel's handle() called directly.
 *
 *     native-matmul [--reps N] [--warmup N]
 *
 * Runs handle() warmup times untimed, then reps times timed (wall clock,
 * CLOCK_MONOTONIC), and prints one JSON line:
 *     {"runner":"native","output":"matmul 1f...","times_s":[0.41,0.40,...]}
 * Every run must return 0 and output the same bytes; otherwise it prints
 * the difference and exits 1.  bench/compute.py builds and runs it (it is
 * not a CMake target: it links one kernel, not the project's libraries).
 *
 * It provides the part of include/cloister/function.h that kernels use:
 * an empty request body, the response (kept per run), and the log (to
 * stderr).  Kernels call nothing else.
 */
#include <cloister/function.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char output[4096];
static size_t output_len;

int32_t cloister_input(uint8_t *buf, uint32_t cap)
{
    (void)buf, (void)cap;
    return 0;
}

int32_t cloister_output(const uint8_t *buf, uint32_t len)
{
    if (len > sizeof output - output_len)
        return CLOISTER_ETOOBIG;
    memcpy(output + output_len, buf, len);
    output_len += len;
    return 0;
}

void cloister_log(const uint8_t *msg, uint32_t len)
{
    fprintf(stderr, "%.*s\n", (int)len, (const char *)msg);
}

extern int32_t handle(void);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Prints s as a JSON string body (the kernel's output is short ASCII). */
static void print_json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    int reps = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--reps N] [--warmup N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || warmup < 0 || warmup > 100) {
        fprintf(stderr, "%s: --reps must be 1..1000 and --warmup 0..100\n", argv[0]);
        return 2;
    }

    double *times = calloc((size_t)reps, sizeof *times);
    char first[sizeof output];
    size_t first_len = 0;
    if (!times)
        return 1;
    for (int r = 0; r < warmup + reps; r++) {
        output_len = 0;
        double t0 = now_s();
        int32_t rc = handle();
        double t1 = now_s();
        if (rc != 0) {
            fprintf(stderr, "%s: handle returned %d: %.*s\n", argv[0], (int)rc,
                    (int)output_len, output);
            return 1;
        }
        if (r == 0) {
            memcpy(first, output, output_len);
            first_len = output_len;
        } else if (output_len != first_len || memcmp(first, output, first_len) != 0) {
            fprintf(stderr, "%s: run %d output %.*s differs from run 1's %.*s\n", argv[0], r + 1,
                    (int)output_len, output, (int)first_len, first);
            return 1;
        }
        if (r >= warmup)
            times[r - warmup] = t1 - t0;
    }

    while (first_len > 0 && first[first_len - 1] == '\n')
        first_len--;
    printf("{\"runner\":\"native\",\"output\":");
    print_json_string(first, first_len);
    printf(",\"times_s\":[");
    for (int i = 0; i < reps; i++)
        printf("%s%.6f", i ? "," : "", times[i]);
    printf("]}\n");
    free(times);
    return 0;
}
