/*
 * http_routes.c - the gateway's route table and its handlers.
 *
 * A route is one row {method, path pattern, where the function name is,
 * which body limit applies, handler}; adding an endpoint is one row and
 * one handler.  Patterns are literal paths in which "{name}" matches one
 * non-empty path segment.  Routing happens when a request's head is
 * complete (http.c calls http_route_request), so the body limit is known
 * before the body arrives and a refused request's body is never kept.
 *
 * Refusals while routing (text/plain, or {"error": ...} for /system/
 * paths, which the CLI reads as JSON): 404 no route for the path, 405 the
 * path exists for other methods (with Allow), 400 a bad request target,
 * a missing or invalid name or tenant.
 *
 * The tenant is the `tenant` query parameter, else the X-Cloister-Tenant
 * header, else "default" (not authenticated yet: see http.h).
 *
 * Handlers run on the session's worker thread.  Quick ones (list, remove,
 * logs, metrics) call the runtime directly; invoke and deploy go through
 * http_job.c.
 */
#include "http_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/err.h"

#define HTTP_PATH_MAX 512    /* longer paths match no route */
#define HTTP_QVAL_MAX 128    /* longest query value kept */

/* ---- handlers ------------------------------------------------------------ */

static http_context *ctx_of(http_session *s) { return s->thr->ctx; }

static void h_invoke(http_session *s) { http_job_invoke(s); }
static void h_deploy(http_session *s) { http_job_deploy(s); }

static void h_healthz(http_session *s)
{
    http_respond(s, 200, "text/plain; charset=utf-8", NULL, "ok\n", 3);
}

static void h_sysinfo(http_session *s)
{
    const char *v = ctx_of(s)->version ? ctx_of(s)->version : CLOISTER_VERSION;
    http_respond_json(s, 200, NULL, json_pack("{s:s,s:s}", "provider", "cloister", "version", v));
}

static void h_metrics(http_session *s)
{
    cl_buf text;
    cl_buf_init(&text);
    if (http_metrics_render(ctx_of(s), &text) != CL_OK)
        http_respond_text(s, 500, NULL, "out of memory");
    else
        http_respond(s, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text.data, text.len);
    cl_buf_fini(&text, 0);
}

json_t *http_fn_json(const rt_fn_info *info)
{
    static const char hex[] = "0123456789abcdef";
    char sha[65];
    for (int i = 0; i < 32; i++) {
        sha[2 * i] = hex[info->hash[i] >> 4];
        sha[2 * i + 1] = hex[info->hash[i] & 15];
    }
    sha[64] = '\0';
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I}",
                     "name", info->name, "tenant", info->tenant,
                     "kind", info->kind == RT_KIND_NATIVE ? "native" : "wasm",
                     "sha256", sha, "size", (json_int_t)info->module_bytes,
                     "deployed_at", (json_int_t)info->deployed_at,
                     "invocations", (json_int_t)info->invocations,
                     "errors", (json_int_t)info->errors);
}

/* The functions of one tenant, collected from ops->list. */
typedef struct fn_list {
    const char *tenant;
    const char *only;           /* a single name, or NULL for all */
    rt_fn_info *items;
    size_t n, cap;
    int oom;
} fn_list;

static void fn_list_add(void *arg, const rt_fn_info *info)
{
    fn_list *l = arg;
    if (l->oom || strcmp(info->tenant, l->tenant) != 0 || (l->only && strcmp(info->name, l->only) != 0))
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        rt_fn_info *p = realloc(l->items, cap * sizeof *p);
        if (!p) {
            l->oom = 1;
            return;
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = *info;
}

static int fn_cmp(const void *a, const void *b)
{
    return strcmp(((const rt_fn_info *)a)->name, ((const rt_fn_info *)b)->name);
}

static void h_list(http_session *s)
{
    http_context *ctx = ctx_of(s);
    fn_list l = { .tenant = s->req.tenant };
    ctx->ops->list(ctx->runtime, fn_list_add, &l);
    json_t *arr = l.oom ? NULL : json_array();
    if (arr) {
        if (l.n)
            qsort(l.items, l.n, sizeof *l.items, fn_cmp);
        for (size_t i = 0; i < l.n; i++) {
            if (json_array_append_new(arr, http_fn_json(&l.items[i])) != 0) {
                json_decref(arr);
                arr = NULL;
                break;
            }
        }
    }
    free(l.items);
    http_respond_json(s, 200, NULL, arr);
}

static void h_info(http_session *s)
{
    http_context *ctx = ctx_of(s);
    fn_list l = { .tenant = s->req.tenant, .only = s->req.name };
    ctx->ops->list(ctx->runtime, fn_list_add, &l);
    if (l.oom)
        http_respond_json(s, 500, NULL, NULL);
    else if (l.n == 0)
        http_respond_error(s, 404, NULL, "function '%s' not found", s->req.name);
    else
        http_respond_json(s, 200, NULL, http_fn_json(&l.items[0]));
    free(l.items);
}

static void h_remove(http_session *s)
{
    http_context *ctx = ctx_of(s);
    int rc = ctx->ops->remove(ctx->runtime, s->req.tenant, s->req.name);
    if (rc == CL_OK)
        http_respond(s, 204, NULL, NULL, NULL, 0);
    else if (rc == CL_ENOTFOUND)
        http_respond_error(s, 404, NULL, "function '%s' not found", s->req.name);
    else
        http_respond_error(s, 500, NULL, "cannot remove '%s': %s", s->req.name, cl_strerror(rc));
}

static void h_logs(http_session *s)
{
    http_context *ctx = ctx_of(s);
    cl_buf log;
    cl_buf_init(&log);
    int rc = ctx->ops->logs(ctx->runtime, s->req.tenant, s->req.name, &log);
    if (rc == CL_OK)
        http_respond(s, 200, "text/plain; charset=utf-8", NULL, log.data, log.len);
    else if (rc == CL_ENOTFOUND)
        http_respond_error(s, 404, NULL, "function '%s' not found", s->req.name);
    else
        http_respond_error(s, 500, NULL, "cannot read the log of '%s': %s", s->req.name,
                           cl_strerror(rc));
    cl_buf_fini(&log, 0);
}

/* ---- the table ------------------------------------------------------------- */

static const http_route http_routes[] = {
    { HTTP_POST,   "/function/{name}",              HTTP_NAME_FROM_PATH,  HTTP_BODY_INPUT,  h_invoke },
    { HTTP_GET,    "/system/functions",             HTTP_NAME_FROM_NONE,  HTTP_BODY_NONE,   h_list },
    { HTTP_POST,   "/system/functions",             HTTP_NAME_FROM_QUERY, HTTP_BODY_MODULE, h_deploy },
    { HTTP_DELETE, "/system/functions",             HTTP_NAME_FROM_QUERY, HTTP_BODY_NONE,   h_remove },
    { HTTP_GET,    "/system/function/{name}",       HTTP_NAME_FROM_PATH,  HTTP_BODY_NONE,   h_info },
    { HTTP_GET,    "/system/functions/{name}/logs", HTTP_NAME_FROM_PATH,  HTTP_BODY_NONE,   h_logs },
    { HTTP_GET,    "/system/logs",                  HTTP_NAME_FROM_QUERY, HTTP_BODY_NONE,   h_logs },
    { HTTP_GET,    "/system/info",                  HTTP_NAME_FROM_NONE,  HTTP_BODY_NONE,   h_sysinfo },
    { HTTP_GET,    "/healthz",                      HTTP_NAME_FROM_NONE,  HTTP_BODY_NONE,   h_healthz },
    { HTTP_GET,    "/metrics",                      HTTP_NAME_FROM_NONE,  HTTP_BODY_NONE,   h_metrics },
};
#define HTTP_NROUTES (sizeof http_routes / sizeof http_routes[0])
_Static_assert(HTTP_NROUTES <= 32, "http_request.allow is a 32-bit mask");

/* ---- matching -------------------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes p[0, n) into out (cap bytes, NUL-terminated); '+' is a
 * space when `form` (query strings).  Returns the decoded length, or -1
 * (bad escape, a NUL byte, or too long). */
static ssize_t pct_decode(const char *p, size_t n, char *out, size_t cap, int form)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(p[i + 1]) < 0 || hexval(p[i + 2]) < 0)
                return -1;
            c = (char)(hexval(p[i + 1]) << 4 | hexval(p[i + 2]));
            i += 2;
            if (c == '\0')
                return -1;
        } else if (c == '+' && form) {
            c = ' ';
        }
        if (k + 1 >= cap)
            return -1;
        out[k++] = c;
    }
    out[k] = '\0';
    return (ssize_t)k;
}

/* Matches path (decoded) against pattern; the "{name}" segment, if any,
 * is returned as [*seg, *seg + *seglen). */
static int path_match(const char *pattern, const char *path, const char **seg, size_t *seglen)
{
    static const char ph[] = "{name}";
    const char *p = pattern, *q = path;
    *seg = NULL;
    *seglen = 0;
    while (*p) {
        if (strncmp(p, ph, sizeof ph - 1) == 0) {
            const char *end = strchr(q, '/');
            size_t n = end ? (size_t)(end - q) : strlen(q);
            if (n == 0)
                return 0;
            *seg = q;
            *seglen = n;
            q += n;
            p += sizeof ph - 1;
            continue;
        }
        if (*p != *q)
            return 0;
        p++;
        q++;
    }
    return *q == '\0';
}

static void reject(http_request *r, int status, const char *why)
{
    r->route = NULL;
    r->reject = status;
    r->reject_why = why;
}

/* Sets *state and copies a name (already decoded) when valid; p NULL: a
 * value that could not be decoded. */
static void name_set(char *dst, uint8_t *state, const char *p, size_t n)
{
    if (!p || !http_name_valid(p, n)) {
        *state = HTTP_NAME_BAD;
        return;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
    *state = HTTP_NAME_OK;
}

static void query_parse(http_request *r, const char *q, size_t n, int name_from_query)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && q[j] != '&')
            j++;
        const char *eq = memchr(q + i, '=', j - i);
        size_t klen = eq ? (size_t)(eq - (q + i)) : j - i;
        const char *v = eq ? eq + 1 : q + j;
        size_t vlen = (size_t)(q + j - v);
        char key[16], val[HTTP_QVAL_MAX];
        ssize_t kn = pct_decode(q + i, klen, key, sizeof key, 1);
        ssize_t vn = pct_decode(v, vlen, val, sizeof val, 1);
        if (kn > 0) {
            if (strcmp(key, "tenant") == 0)
                name_set(r->tenant, &r->tenant_state, vn < 0 ? NULL : val, (size_t)vn);
            else if (strcmp(key, "name") == 0 && name_from_query)
                name_set(r->name, &r->name_state, vn < 0 ? NULL : val, (size_t)vn);
            else if (strcmp(key, "progress") == 0 && vn >= 0 && strcmp(val, "0") != 0 &&
                     strcmp(val, "false") != 0 && r->progress == 0)
                r->progress = 1;
        }
        i = j + 1;
    }
}

void http_route_request(http_session *s, const char *url, size_t len, int method)
{
    http_request *r = &s->req;
    http_context *ctx = s->thr->ctx;
    struct http_parser_url u;
    char path[HTTP_PATH_MAX];

    /* HEAD is GET without the body (http_respond leaves it out). */
    r->is_head = method == HTTP_HEAD;
    if (r->is_head)
        method = HTTP_GET;
    http_parser_url_init(&u);
    if (len > UINT16_MAX || http_parser_parse_url(url, len, 0, &u) != 0 ||
        !(u.field_set & (1u << UF_PATH))) {
        reject(r, 400, "bad request target");
        return;
    }
    if (pct_decode(url + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len, path,
                   sizeof path, 0) < 0) {
        reject(r, 404, "not found");
        return;
    }

    const http_route *hit = NULL;
    const char *seg = NULL;
    size_t seglen = 0;
    r->allow = 0;
    for (size_t i = 0; i < HTTP_NROUTES; i++) {
        const char *sg;
        size_t sl;
        if (!path_match(http_routes[i].pattern, path, &sg, &sl))
            continue;
        if (http_routes[i].method == method && !hit) {
            hit = &http_routes[i];
            seg = sg;
            seglen = sl;
        }
        r->allow |= 1u << i;
    }
    if (!hit) {
        reject(r, r->allow ? 405 : 404, r->allow ? "method not allowed" : "not found");
        return;
    }

    if (hit->name == HTTP_NAME_FROM_PATH)
        name_set(r->name, &r->name_state, seg, seglen);
    if (u.field_set & (1u << UF_QUERY))
        query_parse(r, url + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len,
                    hit->name == HTTP_NAME_FROM_QUERY);
    if (r->tenant_state == HTTP_NAME_ABSENT && r->tenant_hdr_seen)
        name_set(r->tenant, &r->tenant_state,
                 r->tenant_hdr_len < sizeof r->tenant_hdr ? r->tenant_hdr : NULL, r->tenant_hdr_len);
    if (r->tenant_state == HTTP_NAME_ABSENT) {
        strcpy(r->tenant, "default");
        r->tenant_state = HTTP_NAME_OK;
    }
    if (r->accept_len && strstr(r->accept, "text/event-stream"))
        r->progress = 2;

    if (r->tenant_state == HTTP_NAME_BAD) {
        reject(r, 400, "invalid tenant name (expected [A-Za-z0-9_.-]{1,64})");
        return;
    }
    if (hit->name != HTTP_NAME_FROM_NONE && r->name_state == HTTP_NAME_ABSENT) {
        reject(r, 400, "missing function name (?name=NAME)");
        return;
    }
    if (hit->name != HTTP_NAME_FROM_NONE && r->name_state == HTTP_NAME_BAD) {
        reject(r, 400, "invalid function name (expected [A-Za-z0-9_.-]{1,64})");
        return;
    }
    r->route = hit;
    r->body_max = hit->body == HTTP_BODY_INPUT  ? ctx->max_body_bytes
                : hit->body == HTTP_BODY_MODULE ? ctx->max_module_bytes
                                                : 0;
}

void http_reject(http_session *s)
{
    http_request *r = &s->req;
    char extra[128] = "";
    if (r->reject == 405) {
        size_t n = (size_t)snprintf(extra, sizeof extra, "Allow:");
        uint32_t seen = 0; /* methods already listed, by enum http_method */
        for (size_t i = 0; i < HTTP_NROUTES; i++) {
            unsigned m = http_routes[i].method;
            if (!(r->allow & (1u << i)) || (seen & (1u << m)))
                continue;
            n += (size_t)snprintf(extra + n, sizeof extra - n, "%s %s", seen ? "," : "",
                                  http_method_str(m));
            seen |= 1u << m;
        }
        snprintf(extra + n, sizeof extra - n, "\r\n");
    }
    static const char sys[] = "/system/";
    int json = s->url.len >= sizeof sys - 1 && memcmp(s->url.data, sys, sizeof sys - 1) == 0;
    const char *why = r->reject_why ? r->reject_why : http_reason(r->reject);
    if (json)
        http_respond_error(s, r->reject, extra[0] ? extra : NULL, "%s", why);
    else
        http_respond_text(s, r->reject, extra[0] ? extra : NULL, "%s", why);
}

void http_route_run(http_session *s)
{
    if (s->req.route)
        s->req.route->run(s);
    else
        http_reject(s);
}
