/*
 * http.c - the HTTP gateway's framing: libhttp-parser callbacks that turn
 * the byte stream into requests, the session and thread lifecycle, the
 * response writers, and the net_proto vtable the event loop calls.
 *
 * Parsing is streaming: http_parser_execute consumes every byte it is
 * given and reports pieces through callbacks, so the session copies what
 * it needs as it arrives - the request target, the few headers the
 * gateway reads (X-Cloister-Tenant, Accept, Expect), and the body when the
 * route uses one.  on_message_complete pauses the parser, so a process
 * call handles one request at a time and pipelined requests are answered
 * in order.  When a request must wait (an invocation, a deploy), the
 * session is `busy`: process returns with the rest of the input
 * unconsumed, the connection is suspended, and the next process call
 * (after net_waker_resume) answers it before parsing further.
 *
 * Limits, checked while bytes arrive, so nothing large is buffered to be
 * refused: the request head (request line + headers) beyond
 * max_header_bytes gets 431; a body announced (Content-Length) beyond the
 * route's limit gets 413 at once, before it is read, and a chunked body
 * gets 413 when it passes the limit; both close the connection, because
 * the rest of the body would otherwise be read as requests.  A malformed
 * request gets 400 and the connection closes.  A body sent to a route
 * that takes none (or to a request already refused with 404/405/400) is
 * read and discarded, and the connection stays usable.
 *
 * Responses are HTTP/1.1 with Date, Content-Type, Content-Length (chunked
 * only for deploy progress streams) and "Connection: close" when the
 * connection will close (the client asked, HTTP/1.0 without keep-alive, or
 * an error); "Connection: keep-alive" for an HTTP/1.0 client that asked.
 * "Expect: 100-continue" is answered with "100 Continue" before the body
 * is read, or with the final refusal (and close) when the head is already
 * refused.
 *
 * Threading: a session, its parser and its thread state are used by the
 * session's worker thread only.
 */
#include "http_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/err.h"
#include "../common/log.h"

static const char MOD[] = "http";

/* Request bodies past this capacity are not kept between requests. */
#define HTTP_BODY_KEEP (64u * 1024)

/* ---- names ------------------------------------------------------------- */

int http_name_valid(const char *p, size_t n)
{
    if (n == 0 || n > RT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- responses ------------------------------------------------------------ */

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default:  return "Unknown";
    }
}

void http_count_response(http_context *ctx, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        __atomic_fetch_add(&ctx->counters.responses[cls], 1, __ATOMIC_RELAXED);
}

/* The Date header's value, formatted once per second per thread. */
static const char *http_date(http_thread *t)
{
    time_t now = time(NULL);
    if (now != t->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(t->date, sizeof t->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        t->date_sec = now;
    }
    return t->date;
}

/* Whether the connection ends after this response. */
static int http_ends_after(const http_session *s)
{
    return s->closing || s->req.last || !s->req.keep_alive;
}

static void http_emit_head(http_session *s, int status, const char *ctype, const char *extra,
                      const char *framing)
{
    int end = http_ends_after(s);
    const char *conn = end ? "Connection: close\r\n"
                           : s->req.http10 ? "Connection: keep-alive\r\n" : "";
    if (cl_buf_printf(s->out, "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%s%s%s%s\r\n", status,
                      http_reason(status), http_date(s->thr),
                      ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "",
                      extra ? extra : "", framing, conn) != CL_OK)
        s->failed = 1;
    if (end)
        s->closing = 1;
    http_count_response(s->thr->ctx, status);
}

void http_respond(http_session *s, int status, const char *ctype, const char *extra,
                  const void *body, size_t len)
{
    char framing[48];
    if (status == 204) {
        framing[0] = '\0';
        len = 0;
    } else {
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", len);
    }
    http_emit_head(s, status, status == 204 ? NULL : ctype, extra, framing);
    if (len && !s->req.is_head && cl_buf_append(s->out, body, len) != CL_OK)
        s->failed = 1;
}

static void http_respond_v(http_session *s, int status, const char *ctype, const char *extra,
                           int json, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));
static void http_respond_v(http_session *s, int status, const char *ctype, const char *extra,
                           int json, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (json) {
        http_respond_json(s, status, extra, json_pack("{s:s}", "error", msg));
        return;
    }
    size_t n = strlen(msg);
    if (n + 1 < sizeof msg) {
        msg[n++] = '\n';
        msg[n] = '\0';
    }
    http_respond(s, status, ctype, extra, msg, n);
}

void http_respond_text(http_session *s, int status, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    http_respond_v(s, status, "text/plain; charset=utf-8", extra, 0, fmt, ap);
    va_end(ap);
}

void http_respond_error(http_session *s, int status, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    http_respond_v(s, status, NULL, extra, 1, fmt, ap);
    va_end(ap);
}

void http_respond_json(http_session *s, int status, const char *extra, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        http_respond_text(s, 500, NULL, "out of memory");
        return;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL; the length is passed explicitly */
    http_respond(s, status, "application/json", extra, text, n + 1);
    free(text);
}

void http_stream_begin(http_session *s, int status, const char *ctype)
{
    http_emit_head(s, status, ctype, NULL, "Transfer-Encoding: chunked\r\n");
}

void http_stream_chunk(http_session *s, const void *p, size_t n)
{
    if (n == 0)
        return; /* a zero-length chunk would end the body */
    if (cl_buf_printf(s->out, "%zx\r\n", n) != CL_OK || cl_buf_append(s->out, p, n) != CL_OK ||
        cl_buf_append(s->out, "\r\n", 2) != CL_OK)
        s->failed = 1;
}

void http_stream_end(http_session *s)
{
    if (cl_buf_append(s->out, "0\r\n\r\n", 5) != CL_OK)
        s->failed = 1;
}

/* ---- parser callbacks ------------------------------------------------------- */

static http_session *cb_session(http_parser *p) { return p->data; }

/* Counts head bytes; past the limit the request is refused with 431. */
static int head_grow(http_session *s, size_t n)
{
    s->req.head_bytes += n;
    if (s->req.head_bytes > s->thr->ctx->max_header_bytes) {
        s->req.reject = 431;
        s->req.reject_why = "request head too large";
        return -1;
    }
    return 0;
}

static int cb_message_begin(http_parser *p)
{
    http_session *s = cb_session(p);
    memset(&s->req, 0, sizeof s->req);
    s->url.len = 0;
    s->body.len = 0;
    return 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    http_session *s = cb_session(p);
    if (head_grow(s, n) < 0)
        return -1;
    return cl_buf_append(&s->url, at, n) == CL_OK ? 0 : -1;
}

static int cb_header_field(http_parser *p, const char *at, size_t n)
{
    http_session *s = cb_session(p);
    http_request *r = &s->req;
    if (head_grow(s, n) < 0)
        return -1;
    if (r->field_done) { /* a new header starts */
        r->field_len = 0;
        r->field_done = 0;
        r->hdr = HTTP_H_NONE;
    }
    for (size_t i = 0; i < n; i++) {
        if (r->field_len < sizeof r->field)
            r->field[r->field_len] = (char)tolower((unsigned char)at[i]);
        if (r->field_len <= sizeof r->field)
            r->field_len++;
    }
    return 0;
}

static int field_is(const http_request *r, const char *name)
{
    size_t n = strlen(name);
    return r->field_len == n && memcmp(r->field, name, n) == 0;
}

static void value_add(char *buf, uint16_t *len, size_t cap, const char *at, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (*len < cap - 1)
            buf[*len] = at[i];
        if (*len < cap)
            (*len)++;
    }
}

static int cb_header_value(http_parser *p, const char *at, size_t n)
{
    http_session *s = cb_session(p);
    http_request *r = &s->req;
    if (head_grow(s, n) < 0)
        return -1;
    if (!r->field_done) {
        r->field_done = 1;
        r->hdr = field_is(r, "x-cloister-tenant") ? HTTP_H_TENANT
               : field_is(r, "accept")            ? HTTP_H_ACCEPT
               : field_is(r, "expect")            ? HTTP_H_EXPECT
                                                  : HTTP_H_NONE;
        if (r->hdr == HTTP_H_TENANT)
            r->tenant_hdr_seen = 1;
        /* A repeated header: the values are joined, as a list would be. */
        if (r->hdr == HTTP_H_ACCEPT && r->accept_len)
            value_add(r->accept, &r->accept_len, sizeof r->accept, ",", 1);
    }
    switch (r->hdr) {
    case HTTP_H_TENANT:
        value_add(r->tenant_hdr, &r->tenant_hdr_len, sizeof r->tenant_hdr, at, n);
        break;
    case HTTP_H_ACCEPT:
        value_add(r->accept, &r->accept_len, sizeof r->accept, at, n);
        break;
    case HTTP_H_EXPECT:
        value_add(r->expect, &r->expect_len, sizeof r->expect, at, n);
        break;
    default:
        break;
    }
    return 0;
}

static const char *value_str(char *buf, uint16_t len, size_t cap)
{
    buf[len < cap ? len : cap - 1] = '\0';
    return buf;
}

static int cb_headers_complete(http_parser *p)
{
    http_session *s = cb_session(p);
    http_request *r = &s->req;
    http_context *ctx = s->thr->ctx;

    r->http10 = p->http_major == 1 && p->http_minor == 0;
    r->keep_alive = (uint8_t)http_should_keep_alive(p);
    if (cl_buf_append(&s->url, "", 1) != CL_OK) /* NUL-terminate */
        return -1;
    s->url.len--;
    value_str(r->tenant_hdr, r->tenant_hdr_len, sizeof r->tenant_hdr);
    value_str(r->accept, r->accept_len, sizeof r->accept);
    value_str(r->expect, r->expect_len, sizeof r->expect);

    if (p->method == HTTP_CONNECT) {
        r->reject = 400;
        r->reject_why = "CONNECT is not supported";
        return -1;
    }
    /* An upgrade is declined by answering normally; what follows the
     * request would not be HTTP, so the connection ends after it. */
    if (p->upgrade)
        r->last = 1;
    http_route_request(s, (const char *)s->url.data, s->url.len, p->method);

    int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    if (!has_body)
        return 0;
    if (r->route && r->body_max && (p->flags & F_CONTENTLENGTH) &&
        p->content_length > r->body_max) {
        r->reject = 413;
        r->reject_why = "request body too large";
        r->route = NULL;
        return -1; /* answered at once, before the body is read; then close */
    }
    int expect_continue = r->expect_len && strcasecmp(r->expect, "100-continue") == 0;
    if (r->reject && expect_continue)
        return -1; /* refuse now rather than invite the body */
    if (expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (cl_buf_append(s->out, cont, sizeof cont - 1) != CL_OK)
            return -1;
        http_count_response(ctx, 100);
    }
    if (r->body_max && (p->flags & F_CONTENTLENGTH) && cl_buf_reserve(&s->body, p->content_length) != CL_OK)
        return -1;
    return 0;
}

static int cb_body(http_parser *p, const char *at, size_t n)
{
    http_session *s = cb_session(p);
    http_request *r = &s->req;
    if (!r->route || r->body_max == 0)
        return 0; /* discarded */
    if (n > r->body_max - s->body.len) {
        r->reject = 413;
        r->reject_why = "request body too large";
        r->route = NULL;
        return -1;
    }
    return cl_buf_append(&s->body, at, n) == CL_OK ? 0 : -1;
}

static int cb_message_complete(http_parser *p)
{
    http_session *s = cb_session(p);
    s->req.keep_alive = (uint8_t)http_should_keep_alive(p);
    http_parser_pause(p, 1); /* one request per turn: see http_session_process */
    return 0;
}

static const http_parser_settings http_settings = {
    .on_message_begin = cb_message_begin,
    .on_url = cb_url,
    .on_header_field = cb_header_field,
    .on_header_value = cb_header_value,
    .on_headers_complete = cb_headers_complete,
    .on_body = cb_body,
    .on_message_complete = cb_message_complete,
};

/* ---- sessions ---------------------------------------------------------------- */

static void http_session_init(http_session *s, http_thread *t, net_conn *conn)
{
    memset(s, 0, sizeof *s);
    s->thr = t;
    s->conn = conn;
    http_parser_init(&s->parser, HTTP_REQUEST);
    s->parser.data = s;
    cl_buf_init(&s->url);
    cl_buf_init(&s->body);
}

static void http_session_fini(http_session *s)
{
    http_job_detach(s);
    cl_buf_fini(&s->url, 0);
    cl_buf_fini(&s->body, 1);
}

int http_session_create(http_thread *t, net_conn *conn, http_session **out)
{
    http_session *s = malloc(sizeof *s);
    *out = s;
    if (!s)
        return CL_ENOMEM;
    http_session_init(s, t, conn);
    return CL_OK;
}

void http_session_destroy(http_session *s)
{
    if (!s)
        return;
    http_session_fini(s);
    free(s);
}

/* A request has been parsed completely: run it. */
static void http_request_run(http_session *s)
{
    http_route_run(s);
    if (!s->busy && s->body.cap > HTTP_BODY_KEEP)
        cl_buf_fini(&s->body, 1);
    if (s->url.cap > s->thr->ctx->max_header_bytes / 4)
        cl_buf_fini(&s->url, 0);
}

/* The parser stopped on an error: answer it and close. */
static void http_parse_failed(http_session *s)
{
    http_request *r = &s->req;
    enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
    r->last = 1;
    if (r->reject) {
        http_reject(s);
    } else if (e == HPE_HEADER_OVERFLOW) {
        http_respond_text(s, 431, NULL, "request head too large");
    } else if (e >= HPE_CB_message_begin && e <= HPE_CB_chunk_complete) {
        http_respond_text(s, 500, NULL, "out of memory");
    } else {
        http_respond_text(s, 400, NULL, "bad request: %s", http_errno_description(e));
    }
    s->closing = 1;
}

size_t http_session_process(http_session *s, const uint8_t *in, size_t len,
                            cl_buf *out, int *close)
{
    size_t done = 0, out0 = out->len;

    s->out = out;
    if (s->busy && !http_job_poll(s))
        goto out; /* still waiting */
    while (!s->busy && !s->closing && !s->failed && done < len &&
           out->len - out0 < HTTP_OUT_BATCH) {
        size_t n = http_parser_execute(&s->parser, &http_settings, (const char *)in + done,
                                       len - done);
        done += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&s->parser, 0);
            http_request_run(s);
            continue;
        }
        if (e != HPE_OK) {
            http_parse_failed(s);
            break;
        }
        /* Everything was consumed and the request is not complete yet. */
    }
out:
    if (s->failed) {
        cl_log_warn(MOD, "out of memory building a response; closing its connection");
        s->closing = 1;
    }
    *close = s->closing;
    s->out = NULL;
    return s->closing ? len : done;
}

/* ---- context and threads ------------------------------------------------------- */

int http_context_init(http_context *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->max_header_bytes = HTTP_DEFAULT_MAX_HEADER;
    ctx->max_body_bytes = HTTP_DEFAULT_MAX_BODY;
    ctx->max_module_bytes = HTTP_DEFAULT_MAX_MODULE;
    ctx->max_deploys = HTTP_DEFAULT_MAX_DEPLOYS;
    if (pthread_mutex_init(&ctx->mu, NULL) != 0)
        return CL_ENOMEM;
    if (pthread_cond_init(&ctx->cv, NULL) != 0) {
        pthread_mutex_destroy(&ctx->mu);
        return CL_ENOMEM;
    }
    return CL_OK;
}

void http_context_fini(http_context *ctx)
{
    pthread_mutex_lock(&ctx->mu);
    while (ctx->deploys_running > 0)
        pthread_cond_wait(&ctx->cv, &ctx->mu);
    pthread_mutex_unlock(&ctx->mu);
    pthread_cond_destroy(&ctx->cv);
    pthread_mutex_destroy(&ctx->mu);
}

int http_thread_create(http_context *ctx, http_thread **out)
{
    http_thread *t = calloc(1, sizeof *t);
    *out = t;
    if (!t)
        return CL_ENOMEM;
    t->ctx = ctx;
    t->date_sec = -1;
    return CL_OK;
}

void http_thread_destroy(http_thread *t) { free(t); }

/* ---- net_proto glue ---------------------------------------------------------------- */

static void *http_np_thread_init(void *proto_arg, int thread_index)
{
    http_context *ctx = proto_arg;
    http_thread *t;
    if (!ctx || !ctx->ops) {
        cl_log_error(MOD, "worker %d: the HTTP gateway has no runtime", thread_index);
        return NULL;
    }
    if (http_thread_create(ctx, &t) != CL_OK) {
        cl_log_error(MOD, "worker %d: out of memory", thread_index);
        return NULL;
    }
    return t;
}

static void http_np_thread_fini(void *ts) { http_thread_destroy(ts); }

static void http_np_session_init(void *s, void *ts)
{
    http_session_init(s, ts, net_session_conn(s));
}

static void http_np_session_fini(void *s, void *ts) { http_session_fini(s); }

static size_t http_np_process(void *s, void *ts, const uint8_t *in, size_t len,
                              cl_buf *out, int *close, size_t *want)
{
    *want = 0; /* the session keeps partial requests itself */
    return http_session_process(s, in, len, out, close);
}

const net_proto http_net_proto = {
    .name = "http",
    .thread_init = http_np_thread_init,
    .thread_fini = http_np_thread_fini,
    .session_size = sizeof(http_session),
    .session_init = http_np_session_init,
    .session_fini = http_np_session_fini,
    .process = http_np_process,
    /* The session consumes as it parses; input is held back only while a
     * request waits or a batch of responses is written, never more than
     * one read's worth. */
    .max_pending = 1u << 20,
};
