/*
 * fnlog.c - a function's log ring (see fnlog.h).
 *
 * The ring is one byte array holding records back to back, wrapping at the
 * end: [u64 unix time in ns][u32 length][length bytes].  `head` is the
 * offset of the oldest record and `used` the bytes in use, so the next
 * record goes at (head + used) % cap.  Records may straddle the end of the
 * array; ring_put/ring_get copy in at most two pieces.  One mutex guards
 * the ring; readers copy it out under the mutex and format it outside.
 */
#include "fnlog.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/err.h"

#define REC_HDR 12u
#define FNLOG_MIN_BYTES 4096u

struct rt_fnlog {
    pthread_mutex_t mu;
    uint8_t *ring;
    size_t cap, head, used;
    uint64_t lines, dropped;
};

int rt_fnlog_create(size_t cap_bytes, rt_fnlog **out)
{
    if (cap_bytes == 0)
        cap_bytes = RT_FNLOG_DEFAULT_BYTES;
    if (cap_bytes < FNLOG_MIN_BYTES)
        cap_bytes = FNLOG_MIN_BYTES;
    rt_fnlog *l = calloc(1, sizeof *l);
    if (!l)
        return CL_ENOMEM;
    l->ring = malloc(cap_bytes);
    if (!l->ring) {
        free(l);
        return CL_ENOMEM;
    }
    l->cap = cap_bytes;
    pthread_mutex_init(&l->mu, NULL);
    *out = l;
    return CL_OK;
}

void rt_fnlog_destroy(rt_fnlog *l)
{
    if (!l)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l->ring);
    free(l);
}

static void ring_put(rt_fnlog *l, size_t pos, const void *src, size_t n)
{
    size_t first = l->cap - pos < n ? l->cap - pos : n;
    memcpy(l->ring + pos, src, first);
    memcpy(l->ring, (const uint8_t *)src + first, n - first);
}

static void ring_get(const rt_fnlog *l, size_t pos, void *dst, size_t n)
{
    size_t first = l->cap - pos < n ? l->cap - pos : n;
    memcpy(dst, l->ring + pos, first);
    memcpy((uint8_t *)dst + first, l->ring, n - first);
}

/* Drops the oldest record (mutex held, ring not empty). */
static void do_drop_oldest(rt_fnlog *l)
{
    uint32_t len;
    ring_get(l, (l->head + 8) % l->cap, &len, sizeof len);
    size_t rec = REC_HDR + len;
    l->head = (l->head + rec) % l->cap;
    l->used -= rec;
    l->lines--;
    l->dropped++;
}

void rt_fnlog_append(rt_fnlog *l, const uint8_t *msg, size_t len)
{
    if (len > 0 && msg[len - 1] == '\n')
        len--;
    if (len > 0 && msg[len - 1] == '\r')
        len--;
    if (len > RT_FNLOG_LINE_MAX)
        len = RT_FNLOG_LINE_MAX;
    uint8_t line[RT_FNLOG_LINE_MAX];
    for (size_t i = 0; i < len; i++) {
        uint8_t b = msg[i];
        line[i] = (b < 0x20 && b != '\t') || b == 0x7f ? '?' : b;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint32_t len32 = (uint32_t)len;
    size_t rec = REC_HDR + len;   /* <= 4 KiB minimum capacity */

    pthread_mutex_lock(&l->mu);
    while (l->cap - l->used < rec)
        do_drop_oldest(l);
    size_t pos = (l->head + l->used) % l->cap;
    ring_put(l, pos, &ns, 8);
    ring_put(l, (pos + 8) % l->cap, &len32, 4);
    ring_put(l, (pos + REC_HDR) % l->cap, line, len);
    l->used += rec;
    l->lines++;
    pthread_mutex_unlock(&l->mu);
}

void rt_fnlog_counts(rt_fnlog *l, uint64_t *lines, uint64_t *dropped)
{
    pthread_mutex_lock(&l->mu);
    if (lines)
        *lines = l->lines;
    if (dropped)
        *dropped = l->dropped;
    pthread_mutex_unlock(&l->mu);
}

/* Appends "2024-01-02T03:04:05.678Z " for ns since the epoch. */
static int format_time(cl_buf *out, uint64_t ns)
{
    time_t sec = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&sec, &tm);
    return cl_buf_printf(out, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ ", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         (unsigned)(ns % 1000000000u / 1000000u));
}

int rt_fnlog_read(rt_fnlog *l, cl_buf *out)
{
    int rc = CL_OK;
    uint8_t *snap = NULL;

    pthread_mutex_lock(&l->mu);
    size_t used = l->used;
    uint64_t dropped = l->dropped;
    if (used) {
        snap = malloc(used);
        if (snap)
            ring_get(l, l->head, snap, used);
    }
    pthread_mutex_unlock(&l->mu);
    if (used && !snap)
        return CL_ENOMEM;

    if (dropped && (rc = cl_buf_printf(out, "(%llu older lines dropped)\n",
                                       (unsigned long long)dropped)) != CL_OK)
        goto done;
    for (size_t off = 0; off < used;) {
        uint64_t ns;
        uint32_t len;
        memcpy(&ns, snap + off, 8);
        memcpy(&len, snap + off + 8, 4);
        if ((rc = format_time(out, ns)) != CL_OK ||
            (rc = cl_buf_append(out, snap + off + REC_HDR, len)) != CL_OK ||
            (rc = cl_buf_append(out, "\n", 1)) != CL_OK)
            goto done;
        off += REC_HDR + len;
    }
done:
    free(snap);
    return rc;
}
