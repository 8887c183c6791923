/*
 * http_metrics.c - GET /metrics: the node's counters in the Prometheus
 * text exposition format, version 0.0.4 (`# HELP`, `# TYPE`, then
 * `name{labels} value` lines; histograms as cumulative `_bucket{le=...}`
 * series plus `_sum` and `_count`).
 *
 * Sources: the runtime (ops->get_metrics), the store (store_get_stats,
 * when the context has a store) and the gateway's own response counters.
 * Every source may be read from any thread at any time; values may lag a
 * few operations, so the histogram's buckets are clamped to be monotonic
 * and to end at _count.
 *
 * Names (all prefixed cloister_):
 *   build_info{version}                    gauge, 1
 *   invocations_total                      counter
 *   invocation_errors_total{kind}          counter; kind = trap, timeout,
 *                                          crash, fn_error (the rest of
 *                                          the runtime's errors: handle
 *                                          returned nonzero, and others)
 *   invocation_duration_seconds            histogram (10us * 2^i buckets)
 *   functions                              gauge
 *   instances_from_template_total, deploys_total, compiles_total,
 *   compile_cache_hits_total               counters
 *   idle_instances, sandbox_slots          gauges
 *   store_items, store_trusted_bytes, store_untrusted_bytes   gauges
 *   store_integrity_failures_total, store_get_hits_total,
 *   store_get_misses_total                 counters
 *   http_requests_total{code="2xx"}        counter, by status class
 *   http_deploys_running                   gauge
 */
#include "http_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../common/err.h"

typedef struct metrics_out {
    cl_buf *b;
    int rc;
} metrics_out;

static void m_printf(metrics_out *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void m_printf(metrics_out *m, const char *fmt, ...)
{
    if (m->rc != CL_OK)
        return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line || cl_buf_append(m->b, line, (size_t)n) != CL_OK)
        m->rc = CL_ENOMEM;
}

static void m_head(metrics_out *m, const char *name, const char *type, const char *help)
{
    m_printf(m, "# HELP cloister_%s %s\n# TYPE cloister_%s %s\n", name, help, name, type);
}

static void m_one(metrics_out *m, const char *name, const char *type, const char *help, uint64_t v)
{
    m_head(m, name, type, help);
    m_printf(m, "cloister_%s %" PRIu64 "\n", name, v);
}

/* A bucket bound in seconds, without trailing zeros: 10us * 2^i. */
static void bucket_bound(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.5f", 1e-5 * (double)(1u << i));
    char *e = buf + strlen(buf) - 1;
    while (*e == '0')
        *e-- = '\0';
    if (*e == '.')
        *e = '\0';
}

static void render_runtime(metrics_out *m, http_context *ctx)
{
    rt_metrics rm;
    memset(&rm, 0, sizeof rm);
    ctx->ops->get_metrics(ctx->runtime, &rm);

    m_one(m, "invocations_total", "counter", "Function invocations completed.", rm.invocations);

    uint64_t known = rm.traps + rm.timeouts + rm.crashes;
    uint64_t fn_error = rm.errors > known ? rm.errors - known : 0;
    m_head(m, "invocation_errors_total", "counter", "Failed invocations, by kind.");
    m_printf(m, "cloister_invocation_errors_total{kind=\"trap\"} %" PRIu64 "\n", rm.traps);
    m_printf(m, "cloister_invocation_errors_total{kind=\"timeout\"} %" PRIu64 "\n", rm.timeouts);
    m_printf(m, "cloister_invocation_errors_total{kind=\"crash\"} %" PRIu64 "\n", rm.crashes);
    m_printf(m, "cloister_invocation_errors_total{kind=\"fn_error\"} %" PRIu64 "\n", fn_error);

    m_head(m, "invocation_duration_seconds", "histogram", "Invocation wall time.");
    uint64_t prev = 0;
    for (int i = 0; i < RT_LATENCY_BUCKETS - 1; i++) {
        char le[32];
        uint64_t v = rm.latency_buckets[i];
        if (v < prev)
            v = prev;
        if (v > rm.latency_count)
            v = rm.latency_count;
        prev = v;
        bucket_bound(i, le, sizeof le);
        m_printf(m, "cloister_invocation_duration_seconds_bucket{le=\"%s\"} %" PRIu64 "\n", le, v);
    }
    m_printf(m, "cloister_invocation_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
             rm.latency_count);
    m_printf(m, "cloister_invocation_duration_seconds_sum %" PRIu64 ".%09" PRIu64 "\n",
             rm.latency_sum_ns / 1000000000u, rm.latency_sum_ns % 1000000000u);
    m_printf(m, "cloister_invocation_duration_seconds_count %" PRIu64 "\n", rm.latency_count);

    m_one(m, "functions", "gauge", "Functions deployed.", rm.functions);
    m_one(m, "instances_from_template_total", "counter",
          "Instances restored from a memory template.", rm.instances_from_template);
    m_one(m, "deploys_total", "counter", "Successful deploys.", rm.deploys);
    m_one(m, "compiles_total", "counter", "Modules compiled.", rm.compiles);
    m_one(m, "compile_cache_hits_total", "counter", "Deploys that found their code compiled.",
          rm.cache_hits);
    m_one(m, "idle_instances", "gauge", "Instances kept warm.", rm.idle_instances);
    m_one(m, "sandbox_slots", "gauge", "Sandbox slots reserved.", rm.slots);
}

static void render_store(metrics_out *m, store *st)
{
    store_stats ss;
    store_get_stats(st, &ss);
    m_one(m, "store_items", "gauge", "Items in the store.", ss.curr_items);
    m_one(m, "store_trusted_bytes", "gauge", "Trusted memory used by the index and metadata.",
          ss.trusted_bytes);
    m_one(m, "store_untrusted_bytes", "gauge", "Sealed value bytes in the untrusted arena.",
          ss.untrusted_bytes);
    m_one(m, "store_integrity_failures_total", "counter",
          "Values that failed authentication (tampered, moved or rolled back).",
          ss.integrity_failures);
    m_one(m, "store_get_hits_total", "counter", "Reads that found their key.", ss.get_hits);
    m_one(m, "store_get_misses_total", "counter", "Reads that did not find their key.",
          ss.get_misses);
}

int http_metrics_render(http_context *ctx, cl_buf *out)
{
    metrics_out m = { .b = out, .rc = CL_OK };
    char v[64];
    /* A label value must not break the line: keep printable ASCII only,
     * without quotes and backslashes. */
    snprintf(v, sizeof v, "%s", ctx->version ? ctx->version : CLOISTER_VERSION);
    for (char *p = v; *p; p++)
        if (*p < 0x20 || *p > 0x7e || *p == '"' || *p == '\\')
            *p = '_';

    m_head(&m, "build_info", "gauge", "Cloister version.");
    m_printf(&m, "cloister_build_info{version=\"%s\"} 1\n", v);
    render_runtime(&m, ctx);
    if (ctx->store)
        render_store(&m, ctx->store);

    m_head(&m, "http_requests_total", "counter", "HTTP responses sent, by status class.");
    for (int c = 1; c <= 5; c++)
        m_printf(&m, "cloister_http_requests_total{code=\"%dxx\"} %" PRIu64 "\n", c,
                 __atomic_load_n(&ctx->counters.responses[c], __ATOMIC_RELAXED));
    pthread_mutex_lock(&ctx->mu);
    int running = ctx->deploys_running;
    pthread_mutex_unlock(&ctx->mu);
    m_one(&m, "http_deploys_running", "gauge", "Deploys in progress.", (uint64_t)running);
    return m.rc;
}
