/*
 * http_job.c - the gateway's work that may outlive one process() call:
 * invocations (run by the runtime's executor threads, or -- short
 * WebAssembly functions -- by the runtime inline on this worker thread,
 * completing before rt_invoke returns, so the answer goes out in the same
 * process() call without suspending the connection) and deploys (run on
 * a thread of their own, because rt_deploy blocks for seconds while it
 * compiles).
 *
 * A job is the one gateway object that two threads share: the session's
 * worker thread and the thread completing the work (an executor running
 * the done callback, or the deploy thread; for an inline invocation the
 * worker itself).  Rules:
 *   - refs counts its holders: the session (until it ends or moves on to
 *     a new job) and the work in flight (until its completion has run).
 *     The last unref frees it, on whichever thread that is.
 *   - `mu` guards done, refs, waker and progress; the results (res and
 *     output, or rc, info and err) are written by the completing thread
 *     before it sets done under mu, and read by the session only after it
 *     saw done under mu.
 *   - waker is set by the session when it suspends its connection on the
 *     job; whoever takes it (completion, progress) resumes it.  If the
 *     connection closed meanwhile, resuming is a no-op (net/proto.h), and
 *     the session dropped its reference in session_fini: the work
 *     completes into a job nobody reads, and is freed.  Nothing of the
 *     session is reachable from the job, so a client that vanishes can
 *     never cause a use after free.
 *   - a session keeps its job for the next request when it is the only
 *     holder again, so steady-state invocations allocate no job.
 *
 * Deploys: at most ctx->max_deploys run at once (others get 503); each is
 * a detached thread that holds ctx until it has counted itself out
 * (http_context_fini waits for that).  The module bytes move from the
 * session's body buffer into the job, uncopied.  Without a connection
 * (sessions driven directly) the deploy runs on the calling thread.
 *
 * Progress (`?progress=1`, or `Accept: text/event-stream`): the response
 * is 200 with chunked transfer encoding, sent at once; every progress
 * report of rt_deploy becomes a line "STAGE PCT\n" (e.g. "compile 40"),
 * and the last line is the result as JSON: the function object with
 * "status":201 and "cached", or {"status":4xx/5xx,"error":...}.  With
 * Accept: text/event-stream the same lines are server-sent events:
 * "event: progress\ndata: compile 40\n\n" ... "event: result\ndata:
 * {...}\n\n".  HTTP/1.0 clients get no stream (no chunked encoding).
 */
#include "http_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"

static const char MOD[] = "http";

#define JOB_OUTPUT_KEEP (64u * 1024)   /* output capacity kept between invocations */

enum { JOB_INVOKE = 1, JOB_DEPLOY = 2 };

struct http_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* signalled on done and progress (direct sessions wait) */
    int refs;                   /* under mu */
    uint8_t kind;
    uint8_t done;               /* under mu */
    uint8_t stream;             /* 0, or the request's progress mode (1 lines, 2 SSE) */
    net_waker *waker;           /* under mu: the suspended session's */

    /* invoke: written by the completion */
    cl_buf output;
    rt_result res;

    /* deploy */
    http_context *ctx;
    char tenant[RT_NAME_MAX + 1], name[RT_NAME_MAX + 1];
    cl_buf module;              /* the request body, moved in */
    int rc;                     /* written by the deploy thread */
    rt_fn_info info;
    cl_buf err;
    cl_buf progress;            /* under mu: lines not yet sent */
    char last_stage[16];        /* under mu: to drop repeated reports */
    int last_pct;
};

/* ---- lifetime ------------------------------------------------------------- */

static void job_free(http_job *j)
{
    cl_buf_fini(&j->output, 1);
    cl_buf_fini(&j->module, 1);
    cl_buf_fini(&j->err, 0);
    cl_buf_fini(&j->progress, 0);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void job_unref(http_job *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (last)
        job_free(j);
}

/* The session's job, reset for a new request of `kind`; NULL on out of
 * memory.  A job still held by unfinished work is left to it. */
static http_job *job_get(http_session *s, int kind)
{
    http_job *j = s->job;
    if (j) {
        pthread_mutex_lock(&j->mu);
        int shared = j->refs > 1;
        pthread_mutex_unlock(&j->mu);
        if (shared) {
            job_unref(j);
            s->job = j = NULL;
        }
    }
    if (!j) {
        j = calloc(1, sizeof *j);
        if (!j)
            return NULL;
        if (pthread_mutex_init(&j->mu, NULL) != 0) {
            free(j);
            return NULL;
        }
        if (pthread_cond_init(&j->cv, NULL) != 0) {
            pthread_mutex_destroy(&j->mu);
            free(j);
            return NULL;
        }
        j->refs = 1;
        s->job = j;
    }
    j->kind = (uint8_t)kind;
    j->done = 0;
    j->stream = 0;
    j->waker = NULL;
    j->output.len = 0;
    memset(&j->res, 0, sizeof j->res);
    j->ctx = s->thr->ctx;
    memcpy(j->tenant, s->req.tenant, sizeof j->tenant);
    memcpy(j->name, s->req.name, sizeof j->name);
    j->rc = 0;
    memset(&j->info, 0, sizeof j->info);
    j->err.len = 0;
    j->progress.len = 0;
    j->last_stage[0] = '\0';
    j->last_pct = -1;
    return j;
}

void http_job_detach(http_session *s)
{
    http_job *j = s->job;
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    net_waker *w = j->waker;
    j->waker = NULL;
    pthread_mutex_unlock(&j->mu);
    if (w)
        net_waker_resume(w); /* the connection is gone: only drops the reference */
    job_unref(j);
    s->job = NULL;
    s->busy = 0;
}

/* Marks the job done (results already written) and lets the session
 * know; drops the work's reference.  Any thread. */
static void job_complete(http_job *j)
{
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    net_waker *w = j->waker;
    j->waker = NULL;
    pthread_cond_broadcast(&j->cv);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (w)
        net_waker_resume(w);
    if (last)
        job_free(j);
}

/* ---- answers ----------------------------------------------------------------- */

static void answer_invoke(http_session *s, http_job *j)
{
    static const char bin[] = "application/octet-stream";
    const rt_result *r = &j->res;
    const char *d = r->detail[0] ? r->detail : NULL;
    switch (r->status) {
    case RT_OK:
        http_respond(s, 200, bin, NULL, j->output.data, j->output.len);
        break;
    case RT_FN_ERROR:
        if (j->output.len)
            http_respond(s, 500, bin, NULL, j->output.data, j->output.len);
        else
            http_respond_text(s, 500, NULL, "error: handle returned %d", (int)r->code);
        break;
    case RT_NOT_FOUND:
        http_respond_text(s, 404, NULL, "function '%s' not found", j->name);
        break;
    case RT_TRAP:
        http_respond_text(s, 500, NULL, "%s", d ? d : "trap");
        break;
    case RT_TIMEOUT:
        http_respond_text(s, 504, NULL, "%s", d ? d : "timeout: the function ran out of time");
        break;
    case RT_TOO_LARGE:
        http_respond_text(s, 413, NULL, "%s", d ? d : "request body too large");
        break;
    case RT_CRASH:
        http_respond_text(s, 500, NULL, "%s", d ? d : "crash: the function's worker died");
        break;
    case RT_OVERLOADED:
        http_respond_text(s, 503, "Retry-After: 1\r\n", "%s", d ? d : "overloaded: try again later");
        break;
    default:
        http_respond_text(s, 500, NULL, "%s", d ? d : "internal error");
        break;
    }
    if (j->output.cap > JOB_OUTPUT_KEEP)
        cl_buf_fini(&j->output, 1);
    j->output.len = 0;
}

static int deploy_status(int rc)
{
    switch (rc) {
    case CL_OK:      return 201;
    case CL_EINVAL:  return 400;
    case CL_ETOOBIG: return 413;
    case CL_EAGAIN:  return 503;
    default:         return 500;
    }
}

/* The deploy's result as JSON (with "status" when streamed). */
static json_t *deploy_json(http_job *j, int with_status)
{
    int status = deploy_status(j->rc);
    json_t *o;
    if (j->rc == CL_OK) {
        o = http_fn_json(&j->info);
        if (o && json_object_set_new(o, "cached", json_boolean(j->info.cached)) != 0) {
            json_decref(o);
            o = NULL;
        }
    } else {
        char why[512];
        if (j->err.len)
            snprintf(why, sizeof why, "%.*s", (int)j->err.len, (const char *)j->err.data);
        else
            snprintf(why, sizeof why, "%s", cl_strerror(j->rc));
        o = json_pack("{s:s}", "error", why);
    }
    if (o && with_status && json_object_set_new(o, "status", json_integer(status)) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* One progress or result line as a chunk of the stream. */
static void stream_line(http_session *s, int sse, const char *event, const char *line, size_t n)
{
    if (!sse) {
        http_stream_chunk(s, line, n);
        return;
    }
    cl_buf b;
    cl_buf_init(&b);
    if (cl_buf_printf(&b, "event: %s\ndata: %.*s\n", event, (int)n, line) != CL_OK)
        s->failed = 1;
    else
        http_stream_chunk(s, b.data, b.len);
    cl_buf_fini(&b, 0);
}

static void stream_progress(http_session *s, int sse, const cl_buf *lines)
{
    size_t i = 0;
    while (i < lines->len) {
        const uint8_t *nl = memchr(lines->data + i, '\n', lines->len - i);
        size_t end = nl ? (size_t)(nl - lines->data) + 1 : lines->len;
        stream_line(s, sse, "progress", (const char *)lines->data + i, end - i);
        i = end;
    }
}

static void answer_deploy(http_session *s, http_job *j)
{
    if (!j->stream) {
        int status = deploy_status(j->rc);
        http_respond_json(s, status, status == 503 ? "Retry-After: 1\r\n" : NULL, deploy_json(j, 0));
        return;
    }
    json_t *o = deploy_json(j, 1);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        s->failed = 1;
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n';
    stream_line(s, j->stream == 2, "result", text, n + 1);
    free(text);
    http_stream_end(s);
}

/* ---- waiting ------------------------------------------------------------------- */

int http_job_poll(http_session *s)
{
    http_job *j = s->job;
    for (;;) {
        cl_buf lines;
        int suspended = 0;
        cl_buf_init(&lines);

        pthread_mutex_lock(&j->mu);
        for (;;) {
            if (j->stream && j->progress.len) { /* take the lines; send them unlocked */
                lines = j->progress;
                cl_buf_init(&j->progress);
            }
            if (j->done)
                break;
            if (s->conn && !j->waker)
                j->waker = net_conn_suspend(s->conn);
            if (j->waker) {
                suspended = 1;
                break;
            }
            if (lines.len)
                break;
            /* No connection to suspend (or no memory for a waker): wait here. */
            pthread_cond_wait(&j->cv, &j->mu);
        }
        int done = j->done;
        pthread_mutex_unlock(&j->mu);

        if (lines.len) {
            stream_progress(s, j->stream == 2, &lines);
            cl_buf_fini(&lines, 0);
        }
        if (done)
            break;
        if (suspended)
            return 0;
    }
    s->busy = 0;
    if (j->kind == JOB_INVOKE)
        answer_invoke(s, j);
    else
        answer_deploy(s, j);
    return 1;
}

/* ---- invoke ------------------------------------------------------------------------ */

static void invoke_done(void *arg, const rt_result *res)
{
    http_job *j = arg;
    j->res = *res;
    job_complete(j);
}

void http_job_invoke(http_session *s)
{
    http_context *ctx = s->thr->ctx;
    http_job *j = job_get(s, JOB_INVOKE);
    if (!j) {
        http_respond_text(s, 500, NULL, "out of memory");
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->refs++; /* the invocation's */
    pthread_mutex_unlock(&j->mu);
    s->busy = 1;

    int rc = ctx->ops->invoke(ctx->runtime, s->req.tenant, s->req.name, s->body.data, s->body.len,
                              &j->output, invoke_done, j);
    if (rc != CL_OK) {
        /* Not started, so the callback will not run (unless it already
         * has, for an immediate failure). */
        pthread_mutex_lock(&j->mu);
        int ran = j->done;
        pthread_mutex_unlock(&j->mu);
        if (!ran) {
            j->res.status = rc == CL_EAGAIN ? RT_OVERLOADED : rc == CL_ETOOBIG ? RT_TOO_LARGE
                                                                                : RT_INTERNAL;
            snprintf(j->res.detail, sizeof j->res.detail, "%s",
                     rc == CL_EAGAIN || rc == CL_ETOOBIG ? "" : cl_strerror(rc));
            job_complete(j);
        }
    }
    http_job_poll(s);
}

/* ---- deploy ------------------------------------------------------------------------- */

static void deploy_progress(void *arg, const char *stage, int pct)
{
    http_job *j = arg;
    net_waker *w = NULL;
    pthread_mutex_lock(&j->mu);
    if (j->stream && (pct != j->last_pct || strncmp(stage, j->last_stage, sizeof j->last_stage) != 0)) {
        j->last_pct = pct;
        snprintf(j->last_stage, sizeof j->last_stage, "%s", stage);
        if (cl_buf_printf(&j->progress, "%s %d\n", stage, pct) == CL_OK) {
            w = j->waker;
            j->waker = NULL;
            pthread_cond_broadcast(&j->cv);
        }
    }
    pthread_mutex_unlock(&j->mu);
    if (w)
        net_waker_resume(w);
}

/* Runs the deploy (on its thread, or inline) and completes the job. */
static void deploy_run(http_job *j)
{
    http_context *ctx = j->ctx;
    j->rc = ctx->ops->deploy(ctx->runtime, j->tenant, j->name, j->module.data, j->module.len,
                             deploy_progress, j, &j->info, &j->err);
    cl_buf_fini(&j->module, 1);
    /* Free the deploy slot before the client hears the answer, so its next
     * deploy is never refused as "too many in progress" by this one. */
    pthread_mutex_lock(&ctx->mu); /* the last use of ctx (job_complete needs none) */
    ctx->deploys_running--;
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    job_complete(j);
}

static void *deploy_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cl-deploy");
    deploy_run(arg);
    return NULL;
}

void http_job_deploy(http_session *s)
{
    http_context *ctx = s->thr->ctx;

    pthread_mutex_lock(&ctx->mu);
    int busy = ctx->deploys_running >= ctx->max_deploys;
    if (!busy)
        ctx->deploys_running++;
    pthread_mutex_unlock(&ctx->mu);
    if (busy) {
        http_respond_error(s, 503, "Retry-After: 1\r\n",
                           "too many deploys in progress (%d); try again", ctx->max_deploys);
        return;
    }
    http_job *j = job_get(s, JOB_DEPLOY);
    if (!j) {
        pthread_mutex_lock(&ctx->mu);
        ctx->deploys_running--;
        pthread_cond_broadcast(&ctx->cv);
        pthread_mutex_unlock(&ctx->mu);
        http_respond_error(s, 500, NULL, "out of memory");
        return;
    }
    cl_buf_fini(&j->module, 1);
    j->module = s->body; /* moved, not copied */
    cl_buf_init(&s->body);
    j->stream = s->req.http10 ? 0 : s->req.progress;
    pthread_mutex_lock(&j->mu);
    j->refs++; /* the deploy's */
    pthread_mutex_unlock(&j->mu);
    s->busy = 1;
    if (j->stream)
        http_stream_begin(s, 200, j->stream == 2 ? "text/event-stream" : "text/plain; charset=utf-8");

    if (!s->conn) {
        deploy_run(j);
    } else {
        pthread_attr_t attr;
        pthread_t tid;
        int e = pthread_attr_init(&attr);
        if (e == 0) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            e = pthread_create(&tid, &attr, deploy_main, j);
            pthread_attr_destroy(&attr);
        }
        if (e != 0) {
            cl_log_warn(MOD, "cannot start a deploy thread: %s", strerror(e));
            j->rc = CL_EAGAIN;
            if (cl_buf_printf(&j->err, "cannot start a deploy thread; try again") != CL_OK)
                j->err.len = 0; /* the answer falls back to cl_strerror */
            cl_buf_fini(&j->module, 1);
            job_complete(j);
            pthread_mutex_lock(&ctx->mu);
            ctx->deploys_running--;
            pthread_cond_broadcast(&ctx->cv);
            pthread_mutex_unlock(&ctx->mu);
        }
    }
    http_job_poll(s);
}
