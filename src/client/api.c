/*
 * api.c - the node's HTTP API as C calls (api.h).
 *
 * Deploy asks for the progress stream (`progress=1`, frontdoor/http_job.c):
 * the node answers 200 at once with a chunked body of lines, one per
 * progress step ("STAGE PCT", e.g. "compile 40"), and a last line of
 * JSON that is either the deployed function object (with "status": 201
 * and "cached") or {"status": 4xx/5xx, "error": why}.  Lines are also
 * accepted in server-sent-event form ("data: ..."), and a node that
 * answers without streaming (a plain 201 or 4xx) works too.
 */
#include "api.h"

#include "../common/err.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 512


static int open_node(const client_node *n, client_conn **c, int timeout_ms, char *err, size_t errlen)
{
    int rc = client_conn_open(n->http_addr, &n->tls,
                              n->connect_timeout_ms > 0 ? n->connect_timeout_ms : 5000, c, err,
                              errlen);
    if (rc == CL_OK)
        client_conn_set_timeout(*c, timeout_ms > 0 ? timeout_ms : n->timeout_ms > 0 ? n->timeout_ms : 60000);
    return rc;
}

/* Builds "prefix[NAME][suffix]?query" with each given query parameter
 * escaped.  keys/values: NULL-terminated pairs, NULL values skipped. */
static int build_path(char *out, size_t cap, const char *prefix, const char *name,
                      const char *suffix, const char *const *params)
{
    char esc[200];
    size_t n = (size_t)snprintf(out, cap, "%s", prefix);
    if (name) {
        if (client_http_escape(name, esc, sizeof esc) != 0)
            return -1;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s", esc);
    }
    if (suffix)
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s", suffix);
    char sep = '?';
    for (size_t i = 0; params && params[i]; i += 2) {
        if (!params[i + 1])
            continue;
        if (client_http_escape(params[i + 1], esc, sizeof esc) != 0)
            return -1;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%c%s=%s", sep, params[i], esc);
        sep = '&';
    }
    return n < cap ? 0 : -1;
}

void client_error_message(const client_http_response *resp, char *msg, size_t cap)
{
    const cl_buf *b = &resp->body;
    if (b->len > 0) {
        json_t *j = json_loadb((const char *)b->data, b->len, 0, NULL);
        const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
        if (e) {
            snprintf(msg, cap, "%s", e);
            json_decref(j);
            return;
        }
        json_decref(j);
        /* Text: the first line, without control bytes. */
        size_t n = 0;
        for (size_t i = 0; i < b->len && n + 1 < cap && b->data[i] != '\n'; i++)
            msg[n++] = isprint(b->data[i]) ? (char)b->data[i] : '?';
        msg[n] = '\0';
        if (n > 0)
            return;
    }
    snprintf(msg, cap, "%s", resp->reason[0] ? resp->reason : "no explanation given");
}

static int http_failure(const client_http_response *resp, int *status, char *err, size_t errlen)
{
    char msg[512];
    client_error_message(resp, msg, sizeof msg);
    if (status)
        *status = resp->status;
    return client_fail(CL_EPROTO, err, errlen, "%s", msg);
}

/* Copies a function object into f; 0, or -1 when it is not one. */
static int fn_from_json(json_t *o, client_fn *f)
{
    memset(f, 0, sizeof *f);
    f->cached = -1;
    const char *name = json_string_value(json_object_get(o, "name"));
    if (!json_is_object(o) || !name)
        return -1;
    const char *s;
    snprintf(f->name, sizeof f->name, "%s", name);
    if ((s = json_string_value(json_object_get(o, "tenant"))))
        snprintf(f->tenant, sizeof f->tenant, "%s", s);
    if ((s = json_string_value(json_object_get(o, "kind"))))
        snprintf(f->kind, sizeof f->kind, "%s", s);
    if ((s = json_string_value(json_object_get(o, "sha256"))))
        snprintf(f->sha256, sizeof f->sha256, "%s", s);
    json_t *v;
    if (json_is_integer(v = json_object_get(o, "size")))
        f->size = (uint64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(o, "deployed_at")))
        f->deployed_at = (int64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(o, "invocations")))
        f->invocations = (uint64_t)json_integer_value(v);
    if (json_is_integer(v = json_object_get(o, "errors")))
        f->errors = (uint64_t)json_integer_value(v);
    if (json_is_boolean(v = json_object_get(o, "cached")))
        f->cached = json_is_true(v);
    return 0;
}

/* ---- deploy ------------------------------------------------------------- */

typedef struct deploy_stream {
    cl_buf line;                 /* the incomplete line so far */
    client_progress_fn progress;
    void *arg;
    int done;                    /* the last object was seen */
    int failed_status;           /* its "status" when it was an error */
    char error[512];
    client_fn fn;
    int streaming;               /* the answer is a 200 progress stream */
} deploy_stream;

static void deploy_line(deploy_stream *d, char *line, size_t len)
{
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
        line[--len] = '\0';
    if (len >= 5 && strncmp(line, "data:", 5) == 0) {
        line += 5;
        len -= 5;
        while (len && *line == ' ')
            line++, len--;
    }
    if (len == 0 || line[0] == ':' || strncmp(line, "event:", 6) == 0)
        return;                  /* blank lines, SSE comments and event names */
    if (line[0] != '{') {
        /* A progress line: "STAGE PCT". */
        char stage[32];
        int pct = -1;
        if (sscanf(line, "%31s %d", stage, &pct) >= 1 && d->progress)
            d->progress(d->arg, stage, pct);
        return;
    }
    json_t *o = json_loadb(line, len, 0, NULL);
    if (!o)
        return;
    const char *stage = json_string_value(json_object_get(o, "stage"));
    const char *error = json_string_value(json_object_get(o, "error"));
    if (error) {
        d->done = 1;
        snprintf(d->error, sizeof d->error, "%s", error);
        json_t *st = json_object_get(o, "status");
        d->failed_status = json_is_integer(st) ? (int)json_integer_value(st) : 400;
    } else if (json_object_get(o, "name") && json_object_get(o, "sha256")) {
        d->done = 1;
        fn_from_json(o, &d->fn);
    } else if (json_is_object(json_object_get(o, "function"))) {
        d->done = 1;
        fn_from_json(json_object_get(o, "function"), &d->fn);
        json_t *c = json_object_get(o, "cached");
        if (json_is_boolean(c))
            d->fn.cached = json_is_true(c);
    } else if (stage && d->progress) {
        json_t *p = json_object_get(o, "pct");
        d->progress(d->arg, stage, json_is_integer(p) ? (int)json_integer_value(p) : -1);
    }
    json_decref(o);
}

static int deploy_body(void *arg, const client_http_response *head, const uint8_t *p, size_t n)
{
    deploy_stream *d = arg;
    if (head->status != 200) {
        d->streaming = 0;        /* a plain answer: keep it for the error message */
        return cl_buf_append(&d->line, p, n) == CL_OK ? 0 : -1;
    }
    d->streaming = 1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (cl_buf_append(&d->line, "", 1) != CL_OK)
                return -1;
            deploy_line(d, (char *)d->line.data, d->line.len - 1);
            d->line.len = 0;
        } else if (d->line.len < (1u << 20)) {
            if (cl_buf_append(&d->line, &p[i], 1) != CL_OK)
                return -1;
        }
    }
    return 0;
}

int client_deploy(const client_node *n, const char *tenant, const char *name,
                  const uint8_t *module, size_t len, client_progress_fn progress, void *arg,
                  client_fn *out, int *status, char *err, size_t errlen)
{
    *status = 0;
    char path[PATH_MAX_LEN];
    const char *params[] = { "name", name, "tenant", tenant, "progress", "1", NULL };
    if (build_path(path, sizeof path, "/system/functions", NULL, NULL, params) != 0)
        return client_fail(CL_EINVAL, err, errlen, "name or tenant too long");
    client_conn *c;
    int rc = open_node(n, &c, n->timeout_ms > 0 ? n->timeout_ms : 600000, err, errlen);
    if (rc != CL_OK)
        return rc;
    deploy_stream d = { .progress = progress, .arg = arg };
    cl_buf_init(&d.line);
    client_http_response resp;
    client_http_response_init(&resp);
    client_http_header hdr[] = { { "Content-Type", "application/wasm" } };
    rc = client_http_request(c, "POST", path, hdr, 1, module, len, &resp, deploy_body, &d, err,
                             errlen);
    client_conn_close(c);
    if (rc != CL_OK)
        goto out;
    *status = resp.status;
    if (resp.status == 200 && d.streaming) {
        if (d.line.len > 0) {                   /* a last line without "\n" */
            if (cl_buf_append(&d.line, "", 1) == CL_OK)
                deploy_line(&d, (char *)d.line.data, d.line.len - 1);
        }
        if (!d.done) {
            rc = client_fail(CL_EPROTO, err, errlen, "the node ended the deploy without a result");
        } else if (d.error[0]) {
            *status = d.failed_status;
            rc = client_fail(CL_EPROTO, err, errlen, "%s", d.error);
        } else {
            *out = d.fn;
        }
    } else {
        /* Not streamed: the whole answer is in d.line. */
        resp.body = d.line;
        cl_buf_init(&d.line);
        if (resp.status / 100 != 2) {
            rc = http_failure(&resp, status, err, errlen);
        } else {
            json_t *o = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
            if (!o || fn_from_json(json_is_object(json_object_get(o, "function"))
                                       ? json_object_get(o, "function") : o, out) != 0)
                rc = client_fail(CL_EPROTO, err, errlen, "the node's deploy answer is not a function object");
            json_decref(o);
        }
    }
out:
    cl_buf_fini(&d.line, 0);
    client_http_response_fini(&resp);
    return rc;
}

/* ---- the others ---------------------------------------------------------------- */

/* One request, the whole answer in resp. */
static int simple_request(const client_node *n, const char *method, const char *path,
                          const uint8_t *body, size_t len, client_http_response *resp,
                          char *err, size_t errlen)
{
    client_conn *c;
    int rc = open_node(n, &c, 0, err, errlen);
    if (rc != CL_OK)
        return rc;
    rc = client_http_request(c, method, path, NULL, 0, body, len, resp, NULL, NULL, err, errlen);
    client_conn_close(c);
    return rc;
}

int client_invoke(const client_node *n, const char *tenant, const char *name,
                  const uint8_t *input, size_t len, client_http_response *resp,
                  char *err, size_t errlen)
{
    char path[PATH_MAX_LEN];
    const char *params[] = { "tenant", tenant, NULL };
    if (build_path(path, sizeof path, "/function/", name, NULL, params) != 0)
        return client_fail(CL_EINVAL, err, errlen, "name or tenant too long");
    return simple_request(n, "POST", path, input ? input : (const uint8_t *)"", len, resp, err,
                          errlen);
}

int client_list(const client_node *n, const char *tenant, client_fn **fns, size_t *count,
                int *status, char *err, size_t errlen)
{
    *fns = NULL;
    *count = 0;
    *status = 0;
    char path[PATH_MAX_LEN];
    const char *params[] = { "tenant", tenant, NULL };
    if (build_path(path, sizeof path, "/system/functions", NULL, NULL, params) != 0)
        return client_fail(CL_EINVAL, err, errlen, "tenant too long");
    client_http_response resp;
    client_http_response_init(&resp);
    int rc = simple_request(n, "GET", path, NULL, 0, &resp, err, errlen);
    if (rc != CL_OK)
        goto out;
    *status = resp.status;
    if (resp.status != 200) {
        rc = http_failure(&resp, status, err, errlen);
        goto out;
    }
    json_t *a = json_loadb((const char *)resp.body.data, resp.body.len, 0, NULL);
    if (!json_is_array(a)) {
        json_decref(a);
        rc = client_fail(CL_EPROTO, err, errlen, "the node's function list is not a JSON array");
        goto out;
    }
    size_t na = json_array_size(a);
    client_fn *arr = calloc(na ? na : 1, sizeof *arr);
    if (!arr) {
        json_decref(a);
        rc = client_fail(CL_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < na; i++)
        if (fn_from_json(json_array_get(a, i), &arr[k]) == 0)
            k++;
    json_decref(a);
    *fns = arr;
    *count = k;
out:
    client_http_response_fini(&resp);
    return rc;
}

int client_remove(const client_node *n, const char *tenant, const char *name,
                  int *status, char *err, size_t errlen)
{
    *status = 0;
    char path[PATH_MAX_LEN];
    const char *params[] = { "name", name, "tenant", tenant, NULL };
    if (build_path(path, sizeof path, "/system/functions", NULL, NULL, params) != 0)
        return client_fail(CL_EINVAL, err, errlen, "name or tenant too long");
    client_http_response resp;
    client_http_response_init(&resp);
    int rc = simple_request(n, "DELETE", path, NULL, 0, &resp, err, errlen);
    if (rc == CL_OK) {
        *status = resp.status;
        if (resp.status / 100 != 2)
            rc = http_failure(&resp, status, err, errlen);
    }
    client_http_response_fini(&resp);
    return rc;
}

int client_logs(const client_node *n, const char *tenant, const char *name, cl_buf *out,
                int *status, char *err, size_t errlen)
{
    *status = 0;
    out->len = 0;
    char path[PATH_MAX_LEN];
    const char *params[] = { "tenant", tenant, NULL };
    if (build_path(path, sizeof path, "/system/functions/", name, "/logs", params) != 0)
        return client_fail(CL_EINVAL, err, errlen, "name or tenant too long");
    client_http_response resp;
    client_http_response_init(&resp);
    int rc = simple_request(n, "GET", path, NULL, 0, &resp, err, errlen);
    if (rc == CL_OK) {
        *status = resp.status;
        if (resp.status != 200) {
            rc = http_failure(&resp, status, err, errlen);
        } else {
            cl_buf tmp = *out;
            *out = resp.body;
            resp.body = tmp;
        }
    }
    client_http_response_fini(&resp);
    return rc;
}
