/* buf.c - see buf.h. */
#include "buf.h"
#include "err.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void cl_buf_fini(cl_buf *b, int wipe)
{
    if (b->data && wipe)
        OPENSSL_cleanse(b->data, b->cap);
    free(b->data);
    cl_buf_init(b);
}

int cl_buf_reserve(cl_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return CL_OK;
    if (extra > SIZE_MAX - b->len)
        return CL_ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return CL_ENOMEM;
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return CL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return CL_OK;
}

int cl_buf_append(cl_buf *b, const void *p, size_t n)
{
    int rc = cl_buf_reserve(b, n);
    if (rc != CL_OK)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return CL_OK;
}

int cl_buf_printf(cl_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return CL_EINVAL;
    if ((size_t)n < sizeof small)
        return cl_buf_append(b, small, (size_t)n);
    int rc = cl_buf_reserve(b, (size_t)n + 1);
    if (rc != CL_OK)
        return rc;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return CL_OK;
}

uint8_t *cl_buf_extend(cl_buf *b, size_t n)
{
    if (cl_buf_reserve(b, n) != CL_OK)
        return NULL;
    uint8_t *p = b->data + b->len;
    b->len += n;
    return p;
}

void cl_buf_consume(cl_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void cl_buf_shrink(cl_buf *b, size_t keep)
{
    if (b->len == 0 && b->cap > keep) {
        free(b->data);
        cl_buf_init(b);
    }
}
