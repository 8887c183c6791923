/*
 * mc.c - get/set/delete in memcached's text protocol (mc.h).
 *
 * Replies are read into a small buffer owned by each call: a line, and
 * for `get` the data block announced by "VALUE key flags bytes" (its
 * length parsed strictly and bounded before any allocation).
 */
#include "mc.h"

#include "../common/err.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_KEY_MAX 250
#define MC_VALUE_MAX ((size_t)1 << 30)


int client_mc_key_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > MC_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
            return 0;
    return 1;
}

typedef struct mc_reader {
    client_conn *c;
    cl_buf in;
    size_t pos;
    char *err;
    size_t errlen;
} mc_reader;

static int mc_fill(mc_reader *r)
{
    if (cl_buf_reserve(&r->in, 65536) != CL_OK)
        return client_fail(CL_ENOMEM, r->err, r->errlen, "out of memory");
    size_t got;
    int rc = client_conn_read(r->c, r->in.data + r->in.len, 65536, &got, r->err, r->errlen);
    if (rc != CL_OK)
        return rc;
    if (got == 0)
        return client_fail(CL_EIO, r->err, r->errlen, "%s closed the connection",
                    client_conn_addr(r->c));
    r->in.len += got;
    return CL_OK;
}

/* The next line (without CRLF), NUL-terminated in place. */
static int mc_line(mc_reader *r, char **line)
{
    for (;;) {
        for (size_t i = r->pos; i + 1 < r->in.len; i++) {
            if (r->in.data[i] == '\r' && r->in.data[i + 1] == '\n') {
                r->in.data[i] = '\0';
                *line = (char *)r->in.data + r->pos;
                r->pos = i + 2;
                return CL_OK;
            }
        }
        if (r->in.len - r->pos > 8192)
            return client_fail(CL_EPROTO, r->err, r->errlen, "malformed reply from %s",
                        client_conn_addr(r->c));
        int rc = mc_fill(r);
        if (rc != CL_OK)
            return rc;
    }
}

/* Maps an error line; 1 if it was one (err filled). */
static int mc_error_line(mc_reader *r, const char *line, int *rc)
{
    if (strncmp(line, "SERVER_ERROR", 12) == 0 || strncmp(line, "CLIENT_ERROR", 12) == 0 ||
        strcmp(line, "ERROR") == 0) {
        *rc = client_fail(CL_EPROTO, r->err, r->errlen, "%s answered: %s", client_conn_addr(r->c), line);
        return 1;
    }
    return 0;
}

static int mc_send(client_conn *c, const char *head, const uint8_t *data, size_t len,
                   char *err, size_t errlen)
{
    int rc = client_conn_write(c, head, strlen(head), err, errlen);
    if (rc == CL_OK && data) {
        rc = client_conn_write(c, data, len, err, errlen);
        if (rc == CL_OK)
            rc = client_conn_write(c, "\r\n", 2, err, errlen);
    }
    return rc;
}

static int bad_key(const char *key, char *err, size_t errlen)
{
    return client_fail(CL_EINVAL, err, errlen,
                       "'%s' is not a usable key: 1 to 250 bytes, no spaces or control characters", key);
}

/* Sends one request and reads the first reply line into *line (valid until
 * the reader's buffer changes).  An ERROR/CLIENT_ERROR/SERVER_ERROR line
 * becomes the error it names.  The caller frees r->in in every case. */
static int mc_exchange(mc_reader *r, const char *head, const uint8_t *val, size_t len, char **line)
{
    cl_buf_init(&r->in);
    int rc = mc_send(r->c, head, val, len, r->err, r->errlen);
    if (rc == CL_OK && (rc = mc_line(r, line)) == CL_OK)
        mc_error_line(r, *line, &rc);
    return rc;
}

int client_mc_get(client_conn *c, const char *key, cl_buf *out, char *err, size_t errlen)
{
    out->len = 0;
    if (!client_mc_key_valid(key))
        return bad_key(key, err, errlen);
    char head[MC_KEY_MAX + 16];
    snprintf(head, sizeof head, "get %s\r\n", key);
    mc_reader r = { .c = c, .err = err, .errlen = errlen };
    char *line;
    int rc = mc_exchange(&r, head, NULL, 0, &line);
    if (rc != CL_OK)
        goto out;
    if (strcmp(line, "END") == 0) {
        rc = CL_ENOTFOUND;
        goto out;
    }
    /* VALUE <key> <flags> <bytes> */
    char k[MC_KEY_MAX + 1];
    unsigned flags;
    char bytes_text[24];
    if (sscanf(line, "VALUE %250s %u %23s", k, &flags, bytes_text) != 3 ||
        strspn(bytes_text, "0123456789") != strlen(bytes_text) || strlen(bytes_text) > 12) {
        rc = client_fail(CL_EPROTO, err, errlen, "malformed reply from %s: %.80s", client_conn_addr(c), line);
        goto out;
    }
    size_t n = (size_t)strtoull(bytes_text, NULL, 10);
    if (n > MC_VALUE_MAX) {
        rc = client_fail(CL_EPROTO, err, errlen, "value too large in the reply from %s", client_conn_addr(c));
        goto out;
    }
    while (r.in.len - r.pos < n + 2) {
        rc = mc_fill(&r);
        if (rc != CL_OK)
            goto out;
    }
    if (r.in.data[r.pos + n] != '\r' || r.in.data[r.pos + n + 1] != '\n') {
        rc = client_fail(CL_EPROTO, err, errlen, "malformed data block from %s", client_conn_addr(c));
        goto out;
    }
    if (cl_buf_append(out, r.in.data + r.pos, n) != CL_OK) {
        rc = client_fail(CL_ENOMEM, err, errlen, "out of memory");
        goto out;
    }
    r.pos += n + 2;
    rc = mc_line(&r, &line);
    if (rc == CL_OK && strcmp(line, "END") != 0)
        rc = client_fail(CL_EPROTO, err, errlen, "malformed reply from %s: %.80s", client_conn_addr(c), line);
out:
    cl_buf_fini(&r.in, 0);
    return rc;
}

int client_mc_set(client_conn *c, const char *key, const uint8_t *val, size_t len,
                  char *err, size_t errlen)
{
    if (!client_mc_key_valid(key))
        return bad_key(key, err, errlen);
    char head[MC_KEY_MAX + 48];
    snprintf(head, sizeof head, "set %s 0 0 %zu\r\n", key, len);
    mc_reader r = { .c = c, .err = err, .errlen = errlen };
    char *line;
    int rc = mc_exchange(&r, head, val, len, &line);
    if (rc == CL_OK && strcmp(line, "STORED") != 0)
        rc = client_fail(CL_EPROTO, err, errlen, "%s answered: %.80s", client_conn_addr(c), line);
    cl_buf_fini(&r.in, 0);
    return rc;
}

int client_mc_delete(client_conn *c, const char *key, char *err, size_t errlen)
{
    if (!client_mc_key_valid(key))
        return bad_key(key, err, errlen);
    char head[MC_KEY_MAX + 16];
    snprintf(head, sizeof head, "delete %s\r\n", key);
    mc_reader r = { .c = c, .err = err, .errlen = errlen };
    char *line;
    int rc = mc_exchange(&r, head, NULL, 0, &line);
    if (rc == CL_OK) {
        if (strcmp(line, "NOT_FOUND") == 0)
            rc = CL_ENOTFOUND;
        else if (strcmp(line, "DELETED") != 0)
            rc = client_fail(CL_EPROTO, err, errlen, "%s answered: %.80s", client_conn_addr(c), line);
    }
    cl_buf_fini(&r.in, 0);
    return rc;
}

int client_mc_stats(client_conn *c, client_mc_stat_fn fn, void *arg, char *err, size_t errlen)
{
    mc_reader r = { .c = c, .err = err, .errlen = errlen };
    char *line;
    int rc = mc_exchange(&r, "stats\r\n", NULL, 0, &line);
    while (rc == CL_OK && strcmp(line, "END") != 0) {
        /* STAT <name> <value> */
        char *name = strncmp(line, "STAT ", 5) == 0 ? line + 5 : NULL;
        char *sp = name ? strchr(name, ' ') : NULL;
        if (!sp) {
            rc = client_fail(CL_EPROTO, err, errlen, "malformed stats line from %s: %.80s",
                             client_conn_addr(c), line);
            break;
        }
        *sp = '\0';
        fn(arg, name, sp + 1);
        rc = mc_line(&r, &line);
    }
    cl_buf_fini(&r.in, 1);
    return rc;
}
