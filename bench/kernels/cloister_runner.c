/*
 * cloister_runner.c - the Cloister column of the compute benchmark: runs a
 * kernel's .wasm through the real function runtime, in process.
 *
 *     cloister_runner MODULE.wasm [--reps N] [--warmup N] [--state DIR]
 *
 * Creates a store and a runtime (src/runtime/runtime.h) exactly as
 * cloisterd does, deploys the module (validate, wasm2c, cc, compile cache
 * in DIR/cache: a second run with the same DIR reuses the compiled code),
 * then invokes it warmup times untimed and reps times timed, each
 * invocation a normal rt_invoke_wait() (an instance from the function's
 * memory template, run on an executor thread).  Prints one JSON line:
 *     {"runner":"cloister","output":"matmul 1f...","times_s":[...],
 *      "handle_s":[...],"deploy_s":1.9,"cached":false}
 * times_s is the wall time of each rt_invoke_wait() (what a caller waits,
 * queueing and instance set-up included); handle_s is the runtime's own
 * duration_ns.  Every run must succeed with the same output, else exit 1.
 *
 * Built by CMake into build/bench/cloister_runner (a rule the lead adds:
 * it links cl_runtime and exports its symbols like cloisterd, see
 * bench/kernels/README.md); bench/compute.py runs it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/buf.h"
#include "common/err.h"
#include "runtime/runtime.h"
#include "store/store.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            uint8_t *b = realloc(buf, cap);
            if (!b)
                goto fail;
            buf = b;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    *data = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

static void progress(void *arg, const char *stage, int pct)
{
    (void)arg;
    fprintf(stderr, "cloister_runner: deploy %s %d%%\n", stage, pct);
}

static void print_json_string(const uint8_t *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            printf("\\%c", s[i]);
        else if (s[i] < 0x20 || s[i] >= 0x7f)
            printf("\\u%04x", s[i]);
        else
            putchar(s[i]);
    }
    putchar('"');
}

static void print_times(const char *name, const double *t, int n)
{
    printf(",\"%s\":[", name);
    for (int i = 0; i < n; i++)
        printf("%s%.6f", i ? "," : "", t[i]);
    putchar(']');
}

int main(int argc, char **argv)
{
    const char *path = NULL, *state_dir = "cloister-bench-state";
    int reps = 5, warmup = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc)
            warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
            state_dir = argv[++i];
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else {
            path = NULL;
            break;
        }
    }
    if (!path || reps < 1 || reps > 1000 || warmup < 0 || warmup > 100) {
        fprintf(stderr, "usage: %s MODULE.wasm [--reps 1..1000] [--warmup 0..100] [--state DIR]\n",
                argv[0]);
        return 2;
    }

    int ret = 1, rc;
    uint8_t *module = NULL;
    size_t module_len = 0;
    store *st = NULL;
    rt *r = NULL;
    cl_buf out, err, first;
    cl_buf_init(&out);
    cl_buf_init(&err);
    cl_buf_init(&first);
    double *times = calloc((size_t)reps, sizeof *times);
    double *handle_times = calloc((size_t)reps, sizeof *handle_times);
    if (!times || !handle_times)
        goto done;

    if (read_file(path, &module, &module_len) != 0) {
        fprintf(stderr, "cloister_runner: cannot read %s: %s\n", path, strerror(errno));
        goto done;
    }
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "cloister_runner: cannot create %s: %s\n", state_dir, strerror(errno));
        goto done;
    }
    store_config sc = { .memory_bytes = 64u << 20 };
    if ((rc = store_create(&sc, &st)) != CL_OK) {
        fprintf(stderr, "cloister_runner: store: %s\n", cl_strerror(rc));
        goto done;
    }
    rt_config rc_cfg = {
        .store = st,
        .state_dir = state_dir,
        .exec_threads = 1,
        .max_memory_pages = 4096,       /* 256 MiB: kernels use a few tens of MiB */
        .timeout_ms = 600000,           /* a slow run is measured, not killed */
    };
    if ((rc = rt_create(&rc_cfg, &r)) != CL_OK) {
        fprintf(stderr, "cloister_runner: runtime: %s\n", cl_strerror(rc));
        goto done;
    }

    rt_fn_info info;
    double t0 = now_s();
    rc = rt_deploy(r, "bench", "kernel", module, module_len, progress, NULL, &info, &err);
    double deploy_s = now_s() - t0;
    if (rc != CL_OK) {
        fprintf(stderr, "cloister_runner: deploy %s: %s: %.*s\n", path, cl_strerror(rc),
                (int)err.len, (const char *)err.data);
        goto done;
    }

    for (int i = 0; i < warmup + reps; i++) {
        rt_result res = { 0 };
        cl_buf_truncate(&out, 0);
        t0 = now_s();
        rc = rt_invoke_wait(r, "bench", "kernel", NULL, 0, &out, &res);
        double t = now_s() - t0;
        if (rc != CL_OK || res.status != RT_OK) {
            fprintf(stderr, "cloister_runner: invocation %d: %s, status %d (%s), code %d: %.*s\n",
                    i + 1, cl_strerror(rc), (int)res.status, res.detail, (int)res.code,
                    (int)out.len, (const char *)out.data);
            goto done;
        }
        if (i == 0) {
            if (cl_buf_append(&first, out.data, out.len) != CL_OK)
                goto done;
        } else if (out.len != first.len || memcmp(out.data, first.data, out.len) != 0) {
            fprintf(stderr, "cloister_runner: run %d output %.*s differs from run 1's %.*s\n",
                    i + 1, (int)out.len, (const char *)out.data, (int)first.len,
                    (const char *)first.data);
            goto done;
        }
        if (i >= warmup) {
            times[i - warmup] = t;
            handle_times[i - warmup] = (double)res.duration_ns * 1e-9;
        }
    }

    size_t n = first.len;
    while (n > 0 && first.data[n - 1] == '\n')
        n--;
    printf("{\"runner\":\"cloister\",\"output\":");
    print_json_string(first.data, n);
    print_times("times_s", times, reps);
    print_times("handle_s", handle_times, reps);
    printf(",\"deploy_s\":%.3f,\"cached\":%s}\n", deploy_s, info.cached ? "true" : "false");
    ret = 0;
done:
    if (r)
        rt_destroy(r);
    if (st)
        store_destroy(st);
    cl_buf_fini(&out, 0);
    cl_buf_fini(&err, 0);
    cl_buf_fini(&first, 0);
    free(module);
    free(times);
    free(handle_times);
    return ret;
}
