/*
 * http.h - the HTTP gateway: a node's OpenFaaS-style HTTP/1.1 API
 * (invoke, deploy, list, remove, logs, health, Prometheus metrics).
 *
 * The gateway is a net_proto (`http_net_proto`, proto_arg an
 * http_context *): it turns request bytes into response bytes and never
 * touches a socket.  Requests are parsed with libhttp-parser (keep-alive,
 * pipelining, Content-Length and chunked bodies).  Work that takes long
 * (an invocation, a deploy) suspends the connection (net_conn_suspend in
 * net/proto.h) and resumes it when the work completes, so a network
 * worker never waits for a function.
 *
 * Routes (BRIEF §4; tenant = `tenant` query parameter, else the
 * X-Cloister-Tenant header, else "default"; names [A-Za-z0-9_.-]{1,64}):
 *
 *   POST   /function/NAME                 invoke: 200 + output; 404, 413,
 *                                         500 ("trap: ..." / the function's
 *                                         output when handle returned
 *                                         nonzero), 503, 504
 *   GET    /system/functions              200 JSON array of function objects
 *   GET    /system/function/NAME          200 one function object, 404
 *   POST   /system/functions?name=NAME    deploy (body = module): 201 +
 *                                         function object with "cached";
 *                                         400/413/503 {"error": why};
 *                                         `?progress=1` or `Accept:
 *                                         text/event-stream`: streamed
 *                                         progress (see http_job.c)
 *   DELETE /system/functions?name=NAME    204, 404 {"error": ...}
 *   GET    /system/functions/NAME/logs    200 text/plain log, 404
 *   GET    /system/logs?name=NAME         the same (OpenFaaS spelling)
 *   GET    /system/info                   200 {"provider","version"}
 *   GET    /healthz                       200 "ok\n"
 *   GET    /metrics                       Prometheus text format 0.0.4
 *
 * HEAD works wherever GET does.  Errors are text/plain ("why\n") except
 * under /system/, where they are {"error": "why"}.
 *
 * Tenants are not authenticated yet: any client may name any tenant.
 * The cluster manifest (BRIEF §5) brings per-tenant credentials; until
 * then the tenant is a namespace selector, not a security boundary
 * between HTTP clients (functions still cannot reach other tenants' keys).
 *
 * Objects and lifetimes:
 *   http_context  one per listener, caller-allocated, outlives every
 *                 thread and session: http_context_init, fill in the
 *                 public fields, hand it to the server; after the server
 *                 stopped, http_context_fini (waits for deploy threads),
 *                 then destroy the runtime.
 *   http_thread   one per worker thread.
 *   http_session  one per connection.
 */
#ifndef CLOISTER_FRONTDOOR_HTTP_H
#define CLOISTER_FRONTDOOR_HTTP_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../net/proto.h"
#include "../runtime/runtime.h"
#include "../store/store.h"

#define HTTP_DEFAULT_MAX_HEADER   (16u * 1024)  /* request line + headers */
#define HTTP_DEFAULT_MAX_BODY     (4u << 20)    /* invoke bodies (= rt max_input_bytes) */
#define HTTP_DEFAULT_MAX_MODULE   (16u << 20)   /* deploy bodies (= rt max_module_bytes) */
#define HTTP_DEFAULT_MAX_DEPLOYS  2             /* deploys running at once; more get 503 */

/* Responses one process call produces before it returns early, leaving
 * pipelined requests unconsumed (the loop writes, then calls again). */
#define HTTP_OUT_BATCH            (256u * 1024)

/*
 * What the gateway needs of the runtime, as a table so that tests and the
 * fuzzer can run the gateway against a fake runtime without defining the
 * rt_* symbols.  Each entry has the contract of the rt_* function of the
 * same name in runtime/runtime.h.  http_rt_ops (http_rt.c) is the real
 * runtime; only a program that uses it links cl_runtime's code.
 */
typedef struct http_runtime_ops {
    int (*deploy)(rt *r, const char *tenant, const char *name,
                  const uint8_t *module, size_t len,
                  rt_progress_fn progress, void *progress_arg,
                  rt_fn_info *info, cl_buf *err);
    int (*remove)(rt *r, const char *tenant, const char *name);
    void (*list)(rt *r, void (*fn)(void *arg, const rt_fn_info *info), void *arg);
    int (*logs)(rt *r, const char *tenant, const char *name, cl_buf *out);
    int (*invoke)(rt *r, const char *tenant, const char *name,
                  const uint8_t *input, size_t inlen, cl_buf *output,
                  rt_done_fn done, void *arg);
    void (*get_metrics)(rt *r, rt_metrics *out);
} http_runtime_ops;

extern const http_runtime_ops http_rt_ops;

/* HTTP responses sent, by status class: [1] = 1xx ... [5] = 5xx
 * ([0] unused).  Atomic adds; read with relaxed loads. */
typedef struct http_counters {
    uint64_t responses[6];
} http_counters;

typedef struct http_context {
    /* Filled in by the owner after http_context_init. */
    rt *runtime;                     /* passed to ops; not owned */
    const http_runtime_ops *ops;     /* required: &http_rt_ops, or a fake */
    store *store;                    /* store counters for /metrics; NULL: none */
    const char *version;             /* /system/info and cloister_build_info; NULL: CLOISTER_VERSION */
    size_t max_header_bytes;         /* 431 beyond; default HTTP_DEFAULT_MAX_HEADER */
    size_t max_body_bytes;           /* invoke bodies, 413 beyond; default HTTP_DEFAULT_MAX_BODY */
    size_t max_module_bytes;         /* deploy bodies, 413 beyond; default HTTP_DEFAULT_MAX_MODULE */
    int max_deploys;                 /* concurrent deploys; default HTTP_DEFAULT_MAX_DEPLOYS */

    /* Internal: counters and the deploy threads' bookkeeping. */
    http_counters counters;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int deploys_running;             /* detached deploy threads alive (under mu) */
} http_context;

/* Zeroes ctx and sets the defaults above.  CL_OK or CL_ENOMEM. */
int http_context_init(http_context *ctx) __attribute__((warn_unused_result));

/* Waits until every deploy thread has finished (each holds ctx), then
 * releases ctx's resources.  Call after the server that used ctx stopped
 * and before the runtime is destroyed. */
void http_context_fini(http_context *ctx);

/* Per worker thread (state of the vtable's thread_init).  CL_OK or
 * CL_ENOMEM.  ctx must outlive it. */
typedef struct http_thread http_thread;
int http_thread_create(http_context *ctx, http_thread **out) __attribute__((warn_unused_result));
void http_thread_destroy(http_thread *t);

/*
 * A session driven directly (tests, the fuzzer; the event loop uses the
 * vtable instead).  With conn NULL the session cannot suspend: it waits
 * for an invocation on the calling thread and runs a deploy there.
 * CL_OK or CL_ENOMEM.
 */
typedef struct http_session http_session;
int http_session_create(http_thread *t, net_conn *conn, http_session **out)
    __attribute__((warn_unused_result));
void http_session_destroy(http_session *s);

/*
 * Consumes request bytes from in[0, len) and appends responses to out;
 * returns the bytes consumed.  The gateway parses as a stream: it keeps
 * what it needs of a partial request (URL, headers of interest, body) in
 * the session, so it consumes everything it is given except when it stops
 * early: after HTTP_OUT_BATCH bytes of responses, while a suspended
 * request waits, or on *close (a malformed request, Connection: close,
 * an error after which the stream cannot be trusted).
 */
size_t http_session_process(http_session *s, const uint8_t *in, size_t len,
                            cl_buf *out, int *close);

/* The vtable for net/server.c; proto_arg is an http_context *. */
extern const net_proto http_net_proto;

#endif
