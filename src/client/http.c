/*
 * http.c - the client's HTTP/1.1 request writer and response reader
 * (http.h).
 *
 * Reading is a small state machine over one input buffer: head (until
 * CRLF CRLF), then the body by Content-Length, chunked coding, or until
 * the peer closes.  1xx interim responses are skipped.  Lengths from the
 * wire are parsed strictly (digits / hex digits only, overflow checked).
 */
#include "http.h"

#include "../common/err.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_CHUNK 65536


void client_http_response_init(client_http_response *r)
{
    memset(r, 0, sizeof *r);
    cl_buf_init(&r->body);
}

void client_http_response_fini(client_http_response *r)
{
    cl_buf_fini(&r->body, 0);
    client_http_response_init(r);
}

int client_http_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            if (n + 1 >= cap)
                return -1;
            out[n++] = (char)c;
        } else {
            if (n + 3 >= cap)
                return -1;
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (n >= cap)
        return -1;
    out[n] = '\0';
    return 0;
}

/* The reader: bytes received and not yet parsed are in.data[pos, len). */
typedef struct reader {
    client_conn *c;
    cl_buf in;
    size_t pos;
    int eof;
    char *err;
    size_t errlen;
} reader;

/* Receives more bytes.  CL_OK (r->eof set at the end), or an error. */
static int reader_fill(reader *r)
{
    if (r->pos > 0 && r->pos == r->in.len) {
        r->in.len = 0;
        r->pos = 0;
    }
    if (cl_buf_reserve(&r->in, READ_CHUNK) != CL_OK)
        return client_fail(CL_ENOMEM, r->err, r->errlen, "out of memory");
    size_t got = 0;
    int rc = client_conn_read(r->c, r->in.data + r->in.len, READ_CHUNK, &got, r->err, r->errlen);
    if (rc != CL_OK)
        return rc;
    if (got == 0)
        r->eof = 1;
    r->in.len += got;
    return CL_OK;
}

/* Finds a CRLF at or after from; returns its offset or -1. */
static long find_crlf(const reader *r, size_t from)
{
    for (size_t i = from; i + 1 < r->in.len; i++)
        if (r->in.data[i] == '\r' && r->in.data[i + 1] == '\n')
            return (long)i;
    return -1;
}

static int parse_decimal(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) || v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

typedef struct head_info {
    int chunked;
    int has_length;
    uint64_t length;
} head_info;

/* Parses one response head (r->in.data[r->pos, end)) into resp and hi. */
static int parse_head(reader *r, size_t end, client_http_response *resp, head_info *hi)
{
    char *h = (char *)r->in.data + r->pos;
    size_t n = end - r->pos;
    memset(hi, 0, sizeof *hi);
    /* Status line: HTTP/1.x SP 3DIGIT SP reason */
    char *line_end = memchr(h, '\r', n);
    if (!line_end || n < 12 || strncmp(h, "HTTP/1.", 7) != 0 || h[8] != ' ' ||
        !isdigit((unsigned char)h[9]) || !isdigit((unsigned char)h[10]) ||
        !isdigit((unsigned char)h[11]))
        return client_fail(CL_EPROTO, r->err, r->errlen,
                    "%s did not answer with HTTP (is this the node's HTTP address, and does it "
                    "speak TLS? see --plaintext)", client_conn_addr(r->c));
    resp->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    size_t rl = (size_t)(line_end - h);
    size_t rstart = rl > 12 ? 13 : rl;
    snprintf(resp->reason, sizeof resp->reason, "%.*s", (int)(rl - rstart), h + rstart);
    resp->content_type[0] = '\0';

    char *p = line_end + 2;
    char *stop = h + n;
    while (p < stop) {
        char *e = memchr(p, '\r', (size_t)(stop - p));
        if (!e)
            e = stop;
        char *colon = memchr(p, ':', (size_t)(e - p));
        if (colon) {
            size_t nlen = (size_t)(colon - p);
            char *v = colon + 1;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            size_t vlen = (size_t)(e - v);
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
                if (parse_decimal(v, vlen, &hi->length) != 0)
                    return client_fail(CL_EPROTO, r->err, r->errlen, "malformed Content-Length from %s",
                                client_conn_addr(r->c));
                hi->has_length = 1;
            } else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
                if (vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0)
                    hi->chunked = 1;
            } else if (nlen == 12 && strncasecmp(p, "content-type", 12) == 0) {
                snprintf(resp->content_type, sizeof resp->content_type, "%.*s", (int)vlen, v);
            }
        }
        p = e + 2;
    }
    return CL_OK;
}

/* Delivers body bytes to the callback or the response buffer. */
static int deliver(reader *r, client_http_response *resp, client_http_body_fn on_body, void *arg,
                   const uint8_t *p, size_t n)
{
    if (n == 0)
        return CL_OK;
    if (on_body) {
        if (on_body(arg, resp, p, n) != 0)
            return client_fail(CL_EIO, r->err, r->errlen, "stopped reading the response");
        return CL_OK;
    }
    if (resp->body.len + n > CLIENT_HTTP_MAX_BODY)
        return client_fail(CL_ETOOBIG, r->err, r->errlen, "the response from %s is too large",
                    client_conn_addr(r->c));
    if (cl_buf_append(&resp->body, p, n) != CL_OK)
        return client_fail(CL_ENOMEM, r->err, r->errlen, "out of memory");
    return CL_OK;
}

static int truncated(reader *r)
{
    return client_fail(CL_EPROTO, r->err, r->errlen, "%s closed the connection in the middle of a response",
                client_conn_addr(r->c));
}

/* Reads exactly `left` body bytes. */
static int read_length(reader *r, client_http_response *resp, client_http_body_fn on_body,
                       void *arg, uint64_t left)
{
    while (left > 0) {
        if (r->pos == r->in.len) {
            int rc = reader_fill(r);
            if (rc != CL_OK)
                return rc;
            if (r->eof && r->pos == r->in.len)
                return truncated(r);
        }
        size_t avail = r->in.len - r->pos;
        size_t take = avail < left ? avail : (size_t)left;
        int rc = deliver(r, resp, on_body, arg, r->in.data + r->pos, take);
        if (rc != CL_OK)
            return rc;
        r->pos += take;
        left -= take;
    }
    return CL_OK;
}

/* Reads a CRLF-terminated line; returns its start offset and sets *end. */
static int read_line(reader *r, size_t *end)
{
    for (;;) {
        long e = find_crlf(r, r->pos);
        if (e >= 0) {
            *end = (size_t)e;
            return CL_OK;
        }
        if (r->in.len - r->pos > 4096)
            return client_fail(CL_EPROTO, r->err, r->errlen, "malformed chunked body from %s",
                        client_conn_addr(r->c));
        int rc = reader_fill(r);
        if (rc != CL_OK)
            return rc;
        if (r->eof)
            return truncated(r);
    }
}

static int read_chunked(reader *r, client_http_response *resp, client_http_body_fn on_body,
                        void *arg)
{
    for (;;) {
        size_t end = 0;
        int rc = read_line(r, &end);
        if (rc != CL_OK)
            return rc;
        uint64_t size = 0;
        size_t i = r->pos, digits = 0;
        for (; i < end && isxdigit(r->in.data[i]); i++, digits++) {
            if (size >> 60)
                return client_fail(CL_EPROTO, r->err, r->errlen, "chunk too large from %s",
                            client_conn_addr(r->c));
            int c = r->in.data[i];
            size = size * 16 + (uint64_t)(isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10));
        }
        if (digits == 0 || (i < end && r->in.data[i] != ';' && r->in.data[i] != ' '))
            return client_fail(CL_EPROTO, r->err, r->errlen, "malformed chunk size from %s",
                        client_conn_addr(r->c));
        r->pos = end + 2;
        if (size == 0) {
            /* Trailers until an empty line. */
            for (;;) {
                rc = read_line(r, &end);
                if (rc != CL_OK)
                    return rc;
                int empty = end == r->pos;
                r->pos = end + 2;
                if (empty)
                    return CL_OK;
            }
        }
        rc = read_length(r, resp, on_body, arg, size);
        if (rc != CL_OK)
            return rc;
        rc = read_line(r, &end);
        if (rc != CL_OK)
            return rc;
        if (end != r->pos)
            return client_fail(CL_EPROTO, r->err, r->errlen, "malformed chunk from %s",
                        client_conn_addr(r->c));
        r->pos = end + 2;
    }
}

static int read_to_eof(reader *r, client_http_response *resp, client_http_body_fn on_body,
                       void *arg)
{
    for (;;) {
        int rc = deliver(r, resp, on_body, arg, r->in.data + r->pos, r->in.len - r->pos);
        if (rc != CL_OK)
            return rc;
        r->pos = r->in.len;
        if (r->eof)
            return CL_OK;
        rc = reader_fill(r);
        if (rc != CL_OK)
            return rc;
    }
}

/* Reads until a complete head (ending CRLF CRLF) is buffered; *end is
 * the offset of that final CRLF CRLF. */
static int read_head(reader *r, size_t *end)
{
    size_t from = r->pos;
    for (;;) {
        for (size_t i = from; i + 3 < r->in.len; i++)
            if (memcmp(r->in.data + i, "\r\n\r\n", 4) == 0) {
                *end = i;
                return CL_OK;
            }
        if (r->in.len - r->pos > CLIENT_HTTP_MAX_HEAD)
            return client_fail(CL_EPROTO, r->err, r->errlen, "the response head from %s is too large",
                        client_conn_addr(r->c));
        if (r->eof) {
            if (r->in.len == r->pos)
                return client_fail(CL_EPROTO, r->err, r->errlen,
                            "%s closed the connection without answering", client_conn_addr(r->c));
            return truncated(r);
        }
        from = r->in.len > r->pos + 3 ? r->in.len - 3 : r->pos;
        size_t base = r->pos;
        int rc = reader_fill(r);
        if (rc != CL_OK)
            return rc;
        if (r->pos != base)     /* reader_fill compacted: offsets moved */
            from = r->pos;
    }
}

int client_http_request(client_conn *c, const char *method, const char *path,
                        const client_http_header *headers, size_t nheaders,
                        const uint8_t *body, size_t len,
                        client_http_response *resp, client_http_body_fn on_body, void *arg,
                        char *err, size_t errlen)
{
    cl_buf req;
    cl_buf_init(&req);
    /* No "Connection: close": the response is framed (Content-Length or
     * chunked), so the client knows where it ends and closes itself. */
    int rc = cl_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cloister/%s\r\n",
                           method, path, client_conn_addr(c), CLOISTER_VERSION);
    for (size_t i = 0; i < nheaders && rc == CL_OK; i++)
        rc = cl_buf_printf(&req, "%s: %s\r\n", headers[i].name, headers[i].value);
    if (rc == CL_OK && (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0))
        rc = cl_buf_printf(&req, "Content-Length: %zu\r\n", len);
    if (rc == CL_OK)
        rc = cl_buf_append(&req, "\r\n", 2);
    if (rc != CL_OK) {
        cl_buf_fini(&req, 0);
        return client_fail(CL_ENOMEM, err, errlen, "out of memory");
    }
    rc = client_conn_write(c, req.data, req.len, err, errlen);
    cl_buf_fini(&req, 0);
    if (rc == CL_OK && len > 0)
        rc = client_conn_write(c, body, len, err, errlen);
    /* A server may answer (413, 400) and close before it has read the
     * whole body: its answer explains more than the failed write, so
     * look for it before giving up. */
    int write_rc = rc;
    char write_err[256] = "";
    if (write_rc != CL_OK && err)
        snprintf(write_err, sizeof write_err, "%s", err);

    reader r = { .c = c, .err = err, .errlen = errlen };
    cl_buf_init(&r.in);
    resp->body.len = 0;
    for (;;) {
        size_t end = 0;
        rc = read_head(&r, &end);
        if (rc != CL_OK)
            goto out;
        head_info hi;
        rc = parse_head(&r, end + 2, resp, &hi);
        if (rc != CL_OK)
            goto out;
        r.pos = end + 4;
        if (resp->status >= 100 && resp->status < 200)
            continue;                                  /* interim: the real one follows */
        int no_body = strcmp(method, "HEAD") == 0 || resp->status == 204 || resp->status == 304;
        if (no_body)
            rc = CL_OK;
        else if (hi.chunked)
            rc = read_chunked(&r, resp, on_body, arg);
        else if (hi.has_length)
            rc = read_length(&r, resp, on_body, arg, hi.length);
        else
            rc = read_to_eof(&r, resp, on_body, arg);
        break;
    }
out:
    cl_buf_fini(&r.in, 0);
    if (write_rc != CL_OK && (rc != CL_OK || resp->status == 0)) {
        if (err)
            snprintf(err, errlen, "%s", write_err);
        return write_rc;
    }
    return rc;
}
