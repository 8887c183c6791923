/*
 * buf.h - a growable byte buffer (trusted memory).
 *
 * Used for connection output, scratch space and building replies.  The
 * buffer owns `data`; cl_buf_fini releases it.  Growth is geometric, so
 * appending is amortised O(1); a buffer reused across requests stops
 * allocating once it has reached its working size.  All size arithmetic is
 * overflow-checked: a request that would overflow returns CL_ENOMEM.
 */
#ifndef CLOISTER_COMMON_BUF_H
#define CLOISTER_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct cl_buf {
    uint8_t *data;
    size_t len;   /* bytes in use */
    size_t cap;   /* bytes allocated */
} cl_buf;

static inline void cl_buf_init(cl_buf *b) { b->data = NULL; b->len = b->cap = 0; }

/* Frees the storage (zeroing it first when `wipe` is set: use for plaintext). */
void cl_buf_fini(cl_buf *b, int wipe);

/* Makes room for `extra` more bytes after len.  CL_OK or CL_ENOMEM. */
int cl_buf_reserve(cl_buf *b, size_t extra) __attribute__((warn_unused_result));

/* Appends n bytes.  CL_OK or CL_ENOMEM. */
int cl_buf_append(cl_buf *b, const void *p, size_t n) __attribute__((warn_unused_result));

/* Appends a formatted string (no NUL kept).  CL_OK or CL_ENOMEM. */
int cl_buf_printf(cl_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), warn_unused_result));

/* Reserves n bytes at the end, advances len, and returns their address
 * (NULL on CL_ENOMEM).  The caller fills them before the next append. */
uint8_t *cl_buf_extend(cl_buf *b, size_t n);

/* Drops the first n bytes (n <= len), moving the rest down. */
void cl_buf_consume(cl_buf *b, size_t n);

/* Truncates to len n (n <= len); used to roll back a partly built reply. */
static inline void cl_buf_truncate(cl_buf *b, size_t n) { b->len = n; }

/* Releases storage beyond `keep` bytes of capacity when the buffer is empty;
 * connections call it when idle so thousands of idle clients stay cheap. */
void cl_buf_shrink(cl_buf *b, size_t keep);

#endif
