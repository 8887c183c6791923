/*
 * http_int.h - what the gateway's files share (not for other layers):
 * the session and request state, the route table entry, the asynchronous
 * job, and the response writers.
 *
 *   http.c          parsing (http_parser callbacks), sessions, the
 *                   net_proto vtable, response framing
 *   http_routes.c   the route table and the handlers
 *   http_job.c      work that may outlive a process() call: invocations
 *                   (runtime executors, or inline on the worker) and
 *                   deploys (a thread each)
 *   http_metrics.c  GET /metrics
 *   http_rt.c       http_rt_ops: the real runtime
 *
 * All session state is touched only by the session's worker thread; a job
 * is the one object shared with other threads (see http_job.c).
 */
#ifndef CLOISTER_FRONTDOOR_HTTP_INT_H
#define CLOISTER_FRONTDOOR_HTTP_INT_H

#include <http_parser.h>
#include <jansson.h>

#include "http.h"

/* ---- requests ---------------------------------------------------------- */

enum { HTTP_H_NONE = 0, HTTP_H_TENANT, HTTP_H_ACCEPT, HTTP_H_EXPECT };

/* A name from the path, the query or a header: absent, valid, or not a
 * valid [A-Za-z0-9_.-]{1,64}. */
enum { HTTP_NAME_ABSENT = 0, HTTP_NAME_OK, HTTP_NAME_BAD };

#define HTTP_HDR_VALUE_MAX 128  /* longest value kept of a header of interest */

typedef struct http_route http_route;

typedef struct http_request {
    /* Filled while the head arrives. */
    size_t head_bytes;              /* request line + headers so far */
    char field[24];                 /* the header name being read (lowercase) */
    uint8_t field_len;              /* > sizeof field: a name of no interest */
    uint8_t field_done;             /* the value of `field` has started */
    uint8_t hdr;                    /* HTTP_H_*: what the current value is */
    char tenant_hdr[HTTP_HDR_VALUE_MAX];
    char accept[HTTP_HDR_VALUE_MAX];
    char expect[HTTP_HDR_VALUE_MAX];
    uint16_t tenant_hdr_len, accept_len, expect_len;  /* > cap - 1: overflowed */
    uint8_t tenant_hdr_seen;        /* X-Cloister-Tenant was sent (maybe empty) */

    /* Decided when the head is complete. */
    const http_route *route;        /* NULL: see `reject` */
    int reject;                     /* status to answer instead of running (0: none) */
    const char *reject_why;         /* its message */
    uint32_t allow;                 /* for 405: routes (bit i = route i) that take the path */
    size_t body_max;                /* 0: the body is read and discarded */
    char name[RT_NAME_MAX + 1];
    char tenant[RT_NAME_MAX + 1];
    uint8_t name_state, tenant_state;
    uint8_t progress;               /* deploy progress wanted: 1 lines, 2 SSE */
    uint8_t keep_alive;
    uint8_t http10;                 /* HTTP/1.0 (no chunked responses) */
    uint8_t is_head;                /* HEAD: routed as GET, answered without the body */
    uint8_t last;                   /* close after answering (upgrade, reject) */
} http_request;

/* ---- sessions -------------------------------------------------------------- */

typedef struct http_job http_job;

struct http_thread {
    http_context *ctx;
    time_t date_sec;                /* the second `date` was formatted for */
    char date[40];                  /* "Sun, 06 Nov 1994 08:49:37 GMT" */
};

struct http_session {
    http_thread *thr;
    net_conn *conn;                 /* NULL: driven directly, cannot suspend */
    http_parser parser;
    cl_buf url;                     /* request target of the current request */
    cl_buf body;                    /* body of the current request (when kept) */
    http_request req;
    cl_buf *out;                    /* valid during a process call */
    http_job *job;                  /* kept across requests; shared while busy */
    uint8_t busy;                   /* the current request waits for `job` */
    uint8_t closing;                /* stop: close after flushing `out` */
    uint8_t failed;                 /* out of memory building a response */
};

/* ---- routes ------------------------------------------------------------------- */

typedef void (*http_handler)(http_session *s);

struct http_route {
    uint8_t method;                 /* enum http_method */
    const char *pattern;            /* literal path; "{name}" matches one segment */
    uint8_t name;                   /* HTTP_NAME_FROM_*: where the function name is */
    uint8_t body;                   /* HTTP_BODY_*: which limit applies */
    http_handler run;
};

enum { HTTP_NAME_FROM_NONE = 0, HTTP_NAME_FROM_PATH, HTTP_NAME_FROM_QUERY };
enum { HTTP_BODY_NONE = 0, HTTP_BODY_INPUT, HTTP_BODY_MODULE };

/* Routes the request whose head is complete: sets req->route (or reject,
 * allow), req->name/tenant and their states, req->body_max.  url is the
 * request target (NUL-terminated). */
void http_route_request(http_session *s, const char *url, size_t len, int method);

/* Runs the routed request (its body is in s->body) or answers its reject. */
void http_route_run(http_session *s);

/* Answers req->reject (text/plain, or {"error"} under /system/), with
 * Allow for 405. */
void http_reject(http_session *s);

/* ---- responses (http.c) ------------------------------------------------------ */

/* Appends a complete response.  `extra` is "Name: value\r\n" lines or NULL.
 * Adds Date, Content-Length (except 204) and Connection as the request
 * needs; counts it.  Failures to buffer set s->failed (the caller closes). */
void http_respond(http_session *s, int status, const char *ctype, const char *extra,
                  const void *body, size_t len);
void http_respond_text(http_session *s, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error": msg} */
void http_respond_error(http_session *s, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Serialises and frees j (NULL: out of memory -> 500). */
void http_respond_json(http_session *s, int status, const char *extra, json_t *j);

/* Streaming (chunked) responses: head, chunks, end. */
void http_stream_begin(http_session *s, int status, const char *ctype);
void http_stream_chunk(http_session *s, const void *p, size_t n);
void http_stream_end(http_session *s);

const char *http_reason(int status);
void http_count_response(http_context *ctx, int status);

/* ---- names -------------------------------------------------------------------- */

/* 1 when p[0, n) is a valid function or tenant name. */
int http_name_valid(const char *p, size_t n);

/* ---- jobs (http_job.c) ----------------------------------------------------------- */

/* Starts invoking req->name with s->body / deploying s->body as req->name.
 * Either answers at once (failed to start, or done synchronously) or
 * leaves s->busy set with the connection suspended (or, without a
 * connection, having waited).  */
void http_job_invoke(http_session *s);
void http_job_deploy(http_session *s);

/* Called by process() while s->busy: writes what the job has produced
 * (progress, the final response) and clears s->busy when it is done;
 * otherwise suspends again.  Returns 1 when the request is answered. */
int http_job_poll(http_session *s);

/* The session ends: lets go of its job (which may still be running). */
void http_job_detach(http_session *s);

/* A function object: {"name","tenant","kind","sha256","size",
 * "deployed_at","invocations","errors"}; NULL on out of memory. */
json_t *http_fn_json(const rt_fn_info *info);

/* ---- metrics (http_metrics.c) -------------------------------------------------- */

/* Appends the Prometheus exposition of ctx to out.  CL_OK or CL_ENOMEM. */
int http_metrics_render(http_context *ctx, cl_buf *out);

#endif
