/*
 * test_http_fake.h - a fake runtime for the HTTP gateway's tests and
 * fuzzer: an http_runtime_ops table (`fake_ops`) with deterministic,
 * scriptable behaviour, so the gateway can be tested without compiling
 * functions (and without linking the real rt_* symbols).
 *
 * Invocations, by function name (any tenant; a function must be deployed
 * or be one of these built-ins, else RT_NOT_FOUND):
 *   echo     200, output = input          slow     echo after fake.slow_ms
 *   trap     RT_TRAP "trap: out of bounds memory access"
 *   timeout  RT_TIMEOUT "timeout: exceeded 5000 ms"
 *   fail     RT_FN_ERROR (code 3), output "bad input"
 *   quiet    RT_FN_ERROR (code 7), no output
 *   crash    RT_CRASH "crash: worker died (SIGSEGV)"
 *   busy     RT_OVERLOADED             toobig   RT_TOO_LARGE
 *   refuse   rt_invoke itself returns CL_EAGAIN (done never called)
 *   big      200, FAKE_BIG_OUTPUT bytes of a pattern
 *   deployed functions behave as echo.
 * With fake.async set, completions run on a fake executor thread (after
 * fake.slow_ms for "slow"); otherwise on the calling thread, before
 * rt_invoke returns (as the runtime does for immediate failures).
 *
 * Deploy: the module must start with "\0asm" ("not a WebAssembly module
 * (bad magic)" otherwise, CL_EINVAL); "\0asmFAIL" fails compiling
 * (CL_EIO, "wasm2c: compile failed"); progress: validate 0/100,
 * compile 0/50/100, load 100 (fake.deploy_step_ms apart).  Identity is
 * the SHA-256 of the module; a module deployed before is "cached".
 *
 * Everything is guarded by one mutex; counters feed get_metrics.
 */
#ifndef TEST_HTTP_FAKE_H
#define TEST_HTTP_FAKE_H

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "common/err.h"
#include "common/log.h"
#include "frontdoor/http.h"

#pragma GCC diagnostic ignored "-Wunused-function" /* each user takes a subset */

#define FAKE_MAX_FNS 64
#define FAKE_BIG_OUTPUT (1u << 20)
#define FAKE_EXEC_THREADS 16

typedef struct fake_fn {
    int used;
    rt_fn_info info;
} fake_fn;

typedef struct fake_call {
    struct fake_call *next;
    char name[RT_NAME_MAX + 1];
    cl_buf input;
    cl_buf *output;
    rt_done_fn done;
    void *arg;
} fake_call;

static struct fake_rt {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int async;                  /* complete on the executor thread */
    int slow_ms;                /* "slow" takes this long */
    int deploy_step_ms;         /* between progress reports */
    fake_fn fns[FAKE_MAX_FNS];
    uint8_t seen[FAKE_MAX_FNS][32]; /* hashes ever deployed (the "compile cache") */
    int nseen;
    rt_metrics m;
    fake_call *head, *tail;     /* executor queue */
    int stop;
    int running;                /* executor threads alive */
    pthread_t exec[FAKE_EXEC_THREADS];
    long pending;               /* calls queued or running */
} fake = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void fake_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (ms > 0 && nanosleep(&ts, &ts) != 0)
        ;
}

static int fake_builtin(const char *name)
{
    static const char *const b[] = { "echo", "slow", "trap", "timeout", "fail", "quiet", "crash",
                                     "busy", "toobig", "refuse", "big" };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (strcmp(name, b[i]) == 0)
            return 1;
    return 0;
}

/* Under fake.mu. */
static fake_fn *fake_find(const char *tenant, const char *name)
{
    for (int i = 0; i < FAKE_MAX_FNS; i++)
        if (fake.fns[i].used && strcmp(fake.fns[i].info.tenant, tenant) == 0 &&
            strcmp(fake.fns[i].info.name, name) == 0)
            return &fake.fns[i];
    return NULL;
}

static void fake_count(const rt_result *r)
{
    pthread_mutex_lock(&fake.mu);
    fake.m.invocations++;
    if (r->status != RT_OK)
        fake.m.errors++;
    if (r->status == RT_TRAP)
        fake.m.traps++;
    if (r->status == RT_TIMEOUT)
        fake.m.timeouts++;
    if (r->status == RT_CRASH)
        fake.m.crashes++;
    fake.m.latency_count++;
    fake.m.latency_sum_ns += r->duration_ns;
    for (int i = 0; i < RT_LATENCY_BUCKETS; i++)
        if (i == RT_LATENCY_BUCKETS - 1 || r->duration_ns <= 10000ull << i)
            fake.m.latency_buckets[i]++;
    if (r->from_template)
        fake.m.instances_from_template++;
    pthread_mutex_unlock(&fake.mu);
}

/* Runs a call: fills output and calls done. */
static void fake_run(const char *name, const uint8_t *in, size_t inlen, cl_buf *out,
                     rt_done_fn done, void *arg)
{
    rt_result r;
    memset(&r, 0, sizeof r);
    r.duration_ns = 25000; /* 25 us: lands in the 40 us bucket */
    r.from_template = 1;
    if (strcmp(name, "slow") == 0)
        fake_sleep_ms(fake.slow_ms);
    if (strcmp(name, "trap") == 0) {
        r.status = RT_TRAP;
        snprintf(r.detail, sizeof r.detail, "trap: out of bounds memory access");
    } else if (strcmp(name, "timeout") == 0) {
        r.status = RT_TIMEOUT;
        r.duration_ns = 5000000000ull;
        snprintf(r.detail, sizeof r.detail, "timeout: exceeded 5000 ms");
    } else if (strcmp(name, "fail") == 0) {
        r.status = RT_FN_ERROR;
        r.code = 3;
        if (cl_buf_append(out, "bad input", 9) != CL_OK)
            abort();
    } else if (strcmp(name, "quiet") == 0) {
        r.status = RT_FN_ERROR;
        r.code = 7;
    } else if (strcmp(name, "crash") == 0) {
        r.status = RT_CRASH;
        snprintf(r.detail, sizeof r.detail, "crash: worker died (SIGSEGV)");
    } else if (strcmp(name, "busy") == 0) {
        r.status = RT_OVERLOADED;
    } else if (strcmp(name, "toobig") == 0) {
        r.status = RT_TOO_LARGE;
    } else if (strcmp(name, "big") == 0) {
        uint8_t *p = cl_buf_extend(out, FAKE_BIG_OUTPUT);
        if (!p)
            abort();
        for (size_t i = 0; i < FAKE_BIG_OUTPUT; i++)
            p[i] = (uint8_t)('a' + i % 26);
    } else if (inlen && cl_buf_append(out, in, inlen) != CL_OK) {
        abort();
    }
    fake_count(&r);
    done(arg, &r);
}

static void *fake_exec_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&fake.mu);
    for (;;) {
        while (!fake.head && !fake.stop)
            pthread_cond_wait(&fake.cv, &fake.mu);
        if (!fake.head)
            break;
        fake_call *c = fake.head;
        fake.head = c->next;
        if (!fake.head)
            fake.tail = NULL;
        pthread_mutex_unlock(&fake.mu);
        fake_run(c->name, c->input.data, c->input.len, c->output, c->done, c->arg);
        cl_buf_fini(&c->input, 0);
        free(c);
        pthread_mutex_lock(&fake.mu);
        fake.pending--;
        pthread_cond_broadcast(&fake.cv);
    }
    pthread_mutex_unlock(&fake.mu);
    return NULL;
}

/* Starts the executor threads (fake.async = 1). */
static void fake_start_async(void)
{
    fake.async = 1;
    fake.stop = 0;
    for (int i = 0; i < FAKE_EXEC_THREADS; i++)
        if (pthread_create(&fake.exec[i], NULL, fake_exec_main, NULL) != 0)
            abort();
    fake.running = FAKE_EXEC_THREADS;
}

/* Lets queued calls finish, then stops the executor threads. */
static void fake_stop_async(void)
{
    if (!fake.running)
        return;
    pthread_mutex_lock(&fake.mu);
    fake.stop = 1;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
    for (int i = 0; i < fake.running; i++)
        pthread_join(fake.exec[i], NULL);
    fake.running = 0;
    fake.async = 0;
}

/* Waits until no call is queued or running (async mode). */
static void fake_drain(void)
{
    pthread_mutex_lock(&fake.mu);
    while (fake.pending > 0)
        pthread_cond_wait(&fake.cv, &fake.mu);
    pthread_mutex_unlock(&fake.mu);
}

/* ---- the ops ---------------------------------------------------------------- */

static int fake_invoke(rt *r, const char *tenant, const char *name, const uint8_t *input,
                       size_t inlen, cl_buf *output, rt_done_fn done, void *arg)
{
    (void)r;
    pthread_mutex_lock(&fake.mu);
    fake_fn *f = fake_find(tenant, name);
    if (f)
        f->info.invocations++;
    pthread_mutex_unlock(&fake.mu);
    if (strcmp(name, "refuse") == 0)
        return CL_EAGAIN;
    if (!f && !fake_builtin(name)) {
        rt_result res;
        memset(&res, 0, sizeof res);
        res.status = RT_NOT_FOUND;
        done(arg, &res); /* an immediate failure: on the calling thread */
        return CL_OK;
    }
    if (!fake.async) {
        fake_run(name, input, inlen, output, done, arg);
        return CL_OK;
    }
    fake_call *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    snprintf(c->name, sizeof c->name, "%s", f ? "echo" : name);
    cl_buf_init(&c->input);
    if (inlen && cl_buf_append(&c->input, input, inlen) != CL_OK)
        abort();
    c->output = output;
    c->done = done;
    c->arg = arg;
    pthread_mutex_lock(&fake.mu);
    fake.pending++;
    if (fake.tail)
        fake.tail->next = c;
    else
        fake.head = c;
    fake.tail = c;
    pthread_cond_signal(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
    return CL_OK;
}

static void fake_progress(rt_progress_fn progress, void *arg, const char *stage, int pct)
{
    if (progress)
        progress(arg, stage, pct);
    if (fake.deploy_step_ms)
        fake_sleep_ms(fake.deploy_step_ms);
}

static int fake_deploy(rt *r, const char *tenant, const char *name, const uint8_t *module,
                       size_t len, rt_progress_fn progress, void *parg, rt_fn_info *info,
                       cl_buf *err)
{
    (void)r;
    fake_progress(progress, parg, "validate", 0);
    if (len < 4 || memcmp(module, "\0asm", 4) != 0) {
        if (cl_buf_printf(err, "not a WebAssembly module (bad magic)") != CL_OK)
            abort();
        return CL_EINVAL;
    }
    fake_progress(progress, parg, "validate", 100);
    fake_progress(progress, parg, "compile", 0);
    if (len >= 8 && memcmp(module + 4, "FAIL", 4) == 0) {
        if (cl_buf_printf(err, "wasm2c: compile failed") != CL_OK)
            abort();
        return CL_EIO;
    }
    uint8_t hash[32];
    SHA256(module, len, hash);
    fake_progress(progress, parg, "compile", 50);
    fake_progress(progress, parg, "compile", 100);
    fake_progress(progress, parg, "load", 100);

    pthread_mutex_lock(&fake.mu);
    int cached = 0;
    for (int i = 0; i < fake.nseen; i++)
        if (memcmp(fake.seen[i], hash, 32) == 0)
            cached = 1;
    if (!cached && fake.nseen < FAKE_MAX_FNS)
        memcpy(fake.seen[fake.nseen++], hash, 32);
    fake_fn *f = fake_find(tenant, name);
    for (int i = 0; !f && i < FAKE_MAX_FNS; i++)
        if (!fake.fns[i].used)
            f = &fake.fns[i];
    if (!f) {
        pthread_mutex_unlock(&fake.mu);
        return CL_EFULL;
    }
    memset(f, 0, sizeof *f);
    f->used = 1;
    snprintf(f->info.tenant, sizeof f->info.tenant, "%s", tenant);
    snprintf(f->info.name, sizeof f->info.name, "%s", name);
    f->info.kind = RT_KIND_WASM;
    memcpy(f->info.hash, hash, 32);
    f->info.module_bytes = len;
    f->info.deployed_at = 1700000000;
    f->info.cached = cached;
    *info = f->info;
    fake.m.deploys++;
    fake.m.functions++;
    if (cached)
        fake.m.cache_hits++;
    else
        fake.m.compiles++;
    pthread_mutex_unlock(&fake.mu);
    return CL_OK;
}

static int fake_remove(rt *r, const char *tenant, const char *name)
{
    (void)r;
    pthread_mutex_lock(&fake.mu);
    fake_fn *f = fake_find(tenant, name);
    if (f) {
        f->used = 0;
        fake.m.functions--;
    }
    pthread_mutex_unlock(&fake.mu);
    return f ? CL_OK : CL_ENOTFOUND;
}

static void fake_list(rt *r, void (*fn)(void *arg, const rt_fn_info *info), void *arg)
{
    (void)r;
    pthread_mutex_lock(&fake.mu);
    fake_fn copy[FAKE_MAX_FNS];
    memcpy(copy, fake.fns, sizeof copy);
    pthread_mutex_unlock(&fake.mu);
    for (int i = FAKE_MAX_FNS - 1; i >= 0; i--) /* not in name order */
        if (copy[i].used)
            fn(arg, &copy[i].info);
}

static int fake_logs(rt *r, const char *tenant, const char *name, cl_buf *out)
{
    (void)r;
    pthread_mutex_lock(&fake.mu);
    fake_fn *f = fake_find(tenant, name);
    uint64_t n = f ? f->info.invocations : 0;
    pthread_mutex_unlock(&fake.mu);
    if (!f)
        return CL_ENOTFOUND;
    return cl_buf_printf(out, "log of %s/%s: %llu invocations\n", tenant, name,
                         (unsigned long long)n);
}

static void fake_get_metrics(rt *r, rt_metrics *out)
{
    (void)r;
    pthread_mutex_lock(&fake.mu);
    *out = fake.m;
    pthread_mutex_unlock(&fake.mu);
}

static const http_runtime_ops fake_ops = {
    .deploy = fake_deploy,
    .remove = fake_remove,
    .list = fake_list,
    .logs = fake_logs,
    .invoke = fake_invoke,
    .get_metrics = fake_get_metrics,
};

/* Forgets every function and counter (between tests; not while async calls run). */
static void fake_reset(void)
{
    pthread_mutex_lock(&fake.mu);
    memset(fake.fns, 0, sizeof fake.fns);
    memset(&fake.m, 0, sizeof fake.m);
    fake.nseen = 0;
    fake.slow_ms = 0;
    fake.deploy_step_ms = 0;
    pthread_mutex_unlock(&fake.mu);
}

#endif
