/*
 * abi.c - include/cloister/function.h inside the worker process.
 *
 * These are the symbols a native function's undefined cloister_* refer
 * to: the executable exports them (ENABLE_EXPORTS) and dlopen binds the
 * .so to them.  cloister_input and cloister_output are served here from
 * the region's input and output areas (no round trip); every other call
 * copies its arguments into the data area, asks the node (wk_call: the
 * node runs the same host function WebAssembly uses, on that area) and
 * copies the results back into the function's memory.
 *
 * Data-area layout of one call: offset 0 stays unused (an offset of 0
 * means NULL, as in WebAssembly), arguments are laid out from
 * NATIVE_DATA_NULL_GUARD upwards, 8-byte aligned, inputs first, then the
 * result buffers.  A call whose inputs do not fit (more than max_value
 * plus NATIVE_DATA_SLACK) fails with CLOISTER_ETOOBIG; result buffers
 * larger than the room left are clamped, which the data area's size
 * makes invisible for single values (a value is at most max_value).
 *
 * stdout and stderr are fopencookie() streams: bytes are cut into lines,
 * each line a cloister_log call (longer than RT_FNLOG_LINE_MAX: cut).
 */
#include <stdio.h>
#include <string.h>

#include <cloister/function.h>

#include "runtime/fnlog.h"
#include "worker.h"

/* ---- data-area layout ---------------------------------------------------------- */

typedef struct win {
    uint64_t used;
} win;

static void win_init(win *w) { w->used = NATIVE_DATA_NULL_GUARD; }

static uint64_t win_room(const win *w)
{
    uint64_t off = (w->used + 7) & ~(uint64_t)7;
    return off < wk.data_cap ? wk.data_cap - off : 0;
}

/* Reserves n bytes (copying src there if not NULL); their offset, or 0
 * if they do not fit. */
static uint64_t win_put(win *w, const void *src, uint64_t n)
{
    uint64_t off = (w->used + 7) & ~(uint64_t)7;
    if (off > wk.data_cap || n > wk.data_cap - off)
        return 0;
    if (src && n)
        memcpy(wk.data + off, src, n);
    w->used = off + n;
    return off;
}

static uint32_t min32(uint64_t a, uint64_t b) { return (uint32_t)(a < b ? a : b); }

/* ---- served locally ------------------------------------------------------------ */

int32_t cloister_input(uint8_t *buf, uint32_t cap)
{
    uint32_t n = min32(wk.input_len, cap);
    if (n)
        memcpy(buf, wk.input, n);
    return (int32_t)wk.input_len;
}

int32_t cloister_output(const uint8_t *buf, uint32_t len)
{
    if (len > wk.max_output - wk.out_len)
        return CLOISTER_ETOOBIG;
    if (len)
        memcpy(wk.output + wk.out_len, buf, len);
    wk.out_len += len;
    return 0;
}

/* ---- through the node ------------------------------------------------------------ */

int64_t cloister_kv_get(const uint8_t *key, uint32_t klen, uint8_t *buf, uint32_t cap,
                        uint64_t *version)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, key, klen), v = 0;
    if (!k || (version && !(v = win_put(&w, NULL, 8))))
        return CLOISTER_ETOOBIG;
    uint32_t c = min32(cap, win_room(&w));
    uint64_t b = win_put(&w, NULL, c);
    int64_t r = wk_call(NATIVE_OP_KV_GET, k, klen, b, c, v);
    if (r >= 0) {
        uint32_t n = min32((uint64_t)r, c);
        if (n)
            memcpy(buf, wk.data + b, n);
        if (version)
            memcpy(version, wk.data + v, 8);
    }
    return r;
}

int32_t cloister_kv_set(const uint8_t *key, uint32_t klen, const uint8_t *val, uint32_t vlen)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, key, klen), v = win_put(&w, val, vlen);
    if (!k || !v)
        return CLOISTER_ETOOBIG;
    return (int32_t)wk_call(NATIVE_OP_KV_SET, k, klen, v, vlen, 0);
}

int32_t cloister_kv_delete(const uint8_t *key, uint32_t klen)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, key, klen);
    if (!k)
        return CLOISTER_ETOOBIG;
    return (int32_t)wk_call(NATIVE_OP_KV_DELETE, k, klen, 0, 0, 0);
}

int32_t cloister_kv_cas(const uint8_t *key, uint32_t klen, uint64_t expected_version,
                        const uint8_t *val, uint32_t vlen)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, key, klen), v = win_put(&w, val, vlen);
    if (!k || !v)
        return CLOISTER_ETOOBIG;
    return (int32_t)wk_call(NATIVE_OP_KV_CAS, k, klen, expected_version, v, vlen);
}

int32_t cloister_kv_incr(const uint8_t *key, uint32_t klen, int64_t delta, int64_t *result)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, key, klen), r = 0;
    if (!k || (result && !(r = win_put(&w, NULL, 8))))
        return CLOISTER_ETOOBIG;
    int32_t rc = (int32_t)wk_call(NATIVE_OP_KV_INCR, k, klen, (uint64_t)delta, r, 0);
    if (rc == 0 && result)
        memcpy(result, wk.data + r, 8);
    return rc;
}

/* One kv_get_many round trip; *b and *c say where the answer is.  *fits
 * is 0 (and nothing is sent) when the keys alone overflow the data area. */
static int64_t get_many_once(const uint8_t *keys, uint32_t keys_len, uint32_t n, uint32_t cap,
                             uint64_t *b, uint32_t *c, int *fits)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, keys, keys_len);
    *fits = k != 0;
    if (!k)
        return CLOISTER_ETOOBIG;
    *c = min32(cap, win_room(&w));
    *b = win_put(&w, NULL, *c);
    return wk_call(NATIVE_OP_KV_GET_MANY, k, keys_len, n, *b, *c);
}

int64_t cloister_kv_get_many(const uint8_t *keys, uint32_t keys_len, uint32_t n,
                             uint8_t *buf, uint32_t cap)
{
    uint64_t b = 0;
    uint32_t c = 0;
    int fits;
    int64_t r = get_many_once(keys, keys_len, n, cap, &b, &c, &fits);
    if (fits && r < 0)
        return r;
    if (fits && ((uint64_t)r <= c || c == cap)) {
        /* The whole answer, or as much as the caller's own cap allows. */
        uint32_t m = min32((uint64_t)r, c);
        if (m)
            memcpy(buf, wk.data + b, m);
        return r;
    }
    /* The caller could take more than the data area holds: one key at a
     * time, keeping whole entries while they fit (the documented prefix). */
    uint64_t total = 0, pos = 0;
    int room = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t klen;
        if (keys_len - pos < 4)
            return CLOISTER_EINVAL;
        memcpy(&klen, keys + pos, 4);
        if (klen > keys_len - pos - 4)
            return CLOISTER_EINVAL;
        r = get_many_once(keys + pos, 4 + klen, 1, UINT32_MAX, &b, &c, &fits);
        if (r < 0)
            return r;
        if (room && (uint64_t)r <= c && (uint64_t)r <= cap - total) {
            memcpy(buf + total, wk.data + b, (size_t)r);
        } else {
            room = 0;
        }
        total += (uint64_t)r;
        pos += 4 + (uint64_t)klen;
    }
    return (int64_t)total;
}

int32_t cloister_lock(const uint8_t *name, uint32_t nlen, uint32_t timeout_ms)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, name, nlen);
    if (!k)
        return CLOISTER_ETOOBIG;
    return (int32_t)wk_call(NATIVE_OP_LOCK, k, nlen, timeout_ms, 0, 0);
}

int32_t cloister_unlock(const uint8_t *name, uint32_t nlen)
{
    win w;
    win_init(&w);
    uint64_t k = win_put(&w, name, nlen);
    if (!k)
        return CLOISTER_ETOOBIG;
    return (int32_t)wk_call(NATIVE_OP_UNLOCK, k, nlen, 0, 0, 0);
}

void cloister_log(const uint8_t *msg, uint32_t len)
{
    win w;
    win_init(&w);
    if (len > RT_FNLOG_LINE_MAX)
        len = RT_FNLOG_LINE_MAX;   /* the log cuts longer lines anyway */
    uint64_t m = win_put(&w, msg, len);
    if (m)
        (void)wk_call(NATIVE_OP_LOG, m, len, 0, 0, 0);
}

/* ---- stdout / stderr to the log ----------------------------------------------------- */

typedef struct line_stream {
    char line[RT_FNLOG_LINE_MAX];
    size_t len;
} line_stream;

static line_stream out_lines, err_lines;

static ssize_t line_write(void *cookie, const char *buf, size_t size)
{
    line_stream *s = cookie;
    for (size_t i = 0; i < size; i++) {
        if (buf[i] == '\n' || s->len == sizeof s->line) {
            cloister_log((const uint8_t *)s->line, (uint32_t)s->len);
            s->len = 0;
            if (buf[i] == '\n')
                continue;
        }
        s->line[s->len++] = buf[i];
    }
    return (ssize_t)size;
}

static void line_flush(line_stream *s)
{
    if (s->len) {
        cloister_log((const uint8_t *)s->line, (uint32_t)s->len);
        s->len = 0;
    }
}

int wk_stdio_install(void)
{
    cookie_io_functions_t io = { .read = NULL, .write = line_write, .seek = NULL, .close = NULL };
    FILE *o = fopencookie(&out_lines, "w", io);
    FILE *e = fopencookie(&err_lines, "w", io);
    if (!o || !e)
        return -1;
    setvbuf(o, NULL, _IOFBF, 4096);
    setvbuf(e, NULL, _IOFBF, 4096);
    stdout = o;
    stderr = e;
    return 0;
}

void wk_stdio_flush(void)
{
    fflush(stdout);
    fflush(stderr);
    line_flush(&out_lines);
    line_flush(&err_lines);
}
