/*
 * kv.c - store semantics over the local store or the replicated store
 * (see kv.h).
 *
 * The read-modify-write step functions (rmw_*) run on the replication
 * engine's thread, possibly several times for one operation (CASPaxos
 * retries), so they only read their argument and write *next and their
 * own scratch buffer.  Each mirrors the rule store.c applies under its
 * stripe lock; the error codes are the store's.
 */
#include "kv.h"
#include "../common/err.h"
#include "../repl/repl.h"

#include <stdio.h>
#include <string.h>

void kv_thread_init(kv_thread *kt, store *s, store_thread *st, repl *r)
{
    kt->st = st;
    kt->r = r;
    kt->max_value = store_max_value(s);
    cl_buf_init(&kt->scratch);
}

void kv_thread_fini(kv_thread *kt)
{
    cl_buf_fini(&kt->scratch, 1);
}

static void meta_from(store_meta *m, const repl_val *v)
{
    memset(m, 0, sizeof *m);
    m->flags = v->flags;
    m->len = (uint32_t)v->len;
    m->cas = v->version;
    m->exptime = v->exptime;
}

/* A quorum answer into the thread's scratch buffer, grown as needed. */
static int get_into_scratch(kv_thread *kt, const uint8_t *key, size_t klen, repl_val *out)
{
    for (;;) {
        int rc = repl_get_sync(kt->r, key, klen, kt->scratch.data, kt->scratch.cap, out);
        if (rc != CL_ETOOBIG || out->len <= kt->scratch.cap)
            return rc;
        if (cl_buf_reserve(&kt->scratch, out->len) != CL_OK)
            return CL_ENOMEM;
    }
}

static int rmw_into_scratch(kv_thread *kt, const uint8_t *key, size_t klen, repl_rmw_fn fn,
                            void *arg, repl_val *out)
{
    for (;;) {
        int rc = repl_rmw_sync(kt->r, key, klen, fn, arg, kt->scratch.data, kt->scratch.cap, out);
        if (rc != CL_ETOOBIG || out->len <= kt->scratch.cap)
            return rc;
        if (cl_buf_reserve(&kt->scratch, out->len) != CL_OK)
            return CL_ENOMEM;
    }
}

/* Hands a value to a store_get sink, as store_get does. */
static int deliver(const repl_val *v, store_sink_fn sink, void *arg, store_meta *meta)
{
    store_meta m;
    meta_from(&m, v);
    if (sink) {
        uint8_t *dst = sink(arg, &m);
        if (!dst && m.len)
            return CL_ENOMEM;
        if (m.len)
            memcpy(dst, v->data, m.len);
    }
    if (meta)
        *meta = m;
    return CL_OK;
}

/* ---- touch ------------------------------------------------------------------ */

typedef struct touch_arg {
    int64_t exptime;
} touch_arg;

static int rmw_touch(void *arg, const repl_val *cur, repl_val *next)
{
    const touch_arg *t = arg;
    if (!cur->present)
        return CL_ENOTFOUND;
    *next = *cur;
    next->exptime = t->exptime;
    return REPL_RMW_WRITE;
}

int kv_get(kv_thread *kt, const uint8_t *key, size_t klen, const store_get_opts *opts,
           store_sink_fn sink, void *arg, store_meta *meta)
{
    if (!kt->r)
        return store_get(kt->st, key, klen, opts, sink, arg, meta);
    if (opts && (opts->recache || opts->vivify))
        return CL_EUNSUPPORTED;
    repl_val v;
    int rc;
    if (opts && opts->touch) {
        touch_arg t = {opts->exptime};
        rc = rmw_into_scratch(kt, key, klen, rmw_touch, &t, &v);
    } else {
        rc = get_into_scratch(kt, key, klen, &v);
        if (rc == CL_OK && !v.present)
            rc = CL_ENOTFOUND;
    }
    if (rc != CL_OK)
        return rc;
    return deliver(&v, opts && !opts->want_value ? NULL : sink, arg, meta);
}

/* ---- writes ------------------------------------------------------------------- */

typedef struct set_arg {
    const store_write *w;
    const uint8_t *val;
    size_t len;
    size_t max_value;
    cl_buf joined;          /* append / prepend result */
} set_arg;

static int rmw_set(void *arg, const repl_val *cur, repl_val *next)
{
    set_arg *s = arg;
    const store_write *w = s->w;
    if (w->cas) {
        if (!cur->present)
            return CL_ENOTFOUND;
        if (cur->version != w->cas)
            return CL_EEXISTS;
    }
    switch (w->mode) {
    case STORE_ADD:
        if (cur->present)
            return CL_ENOTSTORED;
        break;
    case STORE_REPLACE:
    case STORE_APPEND:
    case STORE_PREPEND:
        if (!cur->present)
            return CL_ENOTSTORED;
        break;
    case STORE_SET:
        break;
    }
    *next = (repl_val){.present = 1, .flags = w->flags, .exptime = w->exptime,
                       .data = s->val, .len = s->len};
    if (w->mode == STORE_APPEND || w->mode == STORE_PREPEND) {
        if (cur->len > s->max_value || s->len > s->max_value - cur->len)
            return CL_ETOOBIG;
        s->joined.len = 0;
        const repl_val first = w->mode == STORE_APPEND ? *cur : *next;
        const repl_val second = w->mode == STORE_APPEND ? *next : *cur;
        if (cl_buf_append(&s->joined, first.data, first.len) != CL_OK ||
            cl_buf_append(&s->joined, second.data, second.len) != CL_OK)
            return CL_ENOMEM;
        next->flags = cur->flags;       /* kept, as memcached keeps them */
        next->exptime = cur->exptime;
        next->data = s->joined.data;
        next->len = s->joined.len;
    }
    return REPL_RMW_WRITE;
}

int kv_set(kv_thread *kt, const uint8_t *key, size_t klen, const uint8_t *val, size_t len,
           const store_write *w, uint64_t *cas_out)
{
    if (!kt->r)
        return store_set(kt->st, key, klen, val, len, w, cas_out);
    if (w->stale_if_older)
        return CL_EUNSUPPORTED;
    if (len > kt->max_value)
        return CL_ETOOBIG;
    int rc;
    repl_val out;
    if (w->mode == STORE_SET && !w->cas) {
        repl_val v = {.present = 1, .flags = w->flags, .exptime = w->exptime,
                      .data = val, .len = len};
        rc = repl_put_sync(kt->r, key, klen, &v, &out.version);
    } else {
        set_arg s = {.w = w, .val = val, .len = len, .max_value = kt->max_value};
        cl_buf_init(&s.joined);
        rc = rmw_into_scratch(kt, key, klen, rmw_set, &s, &out);
        cl_buf_fini(&s.joined, 1);
    }
    if (rc == CL_OK && cas_out)
        *cas_out = out.version;
    return rc;
}

typedef struct del_arg {
    uint64_t cas;
} del_arg;

static int rmw_delete(void *arg, const repl_val *cur, repl_val *next)
{
    const del_arg *d = arg;
    if (!cur->present)
        return CL_ENOTFOUND;
    if (d->cas && cur->version != d->cas)
        return CL_EEXISTS;
    *next = (repl_val){.present = 0};
    return REPL_RMW_WRITE;
}

int kv_delete(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas)
{
    if (!kt->r)
        return store_delete(kt->st, key, klen, cas);
    del_arg d = {cas};
    repl_val out;
    return rmw_into_scratch(kt, key, klen, rmw_delete, &d, &out);
}

int kv_invalidate(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas, int touch,
                  int64_t exptime, uint64_t *cas_out)
{
    if (!kt->r)
        return store_invalidate(kt->st, key, klen, cas, touch, exptime, cas_out);
    return CL_EUNSUPPORTED;
}

int kv_touch(kv_thread *kt, const uint8_t *key, size_t klen, int64_t exptime)
{
    if (!kt->r)
        return store_touch(kt->st, key, klen, exptime);
    touch_arg t = {exptime};
    repl_val out;
    return rmw_into_scratch(kt, key, klen, rmw_touch, &t, &out);
}

/* ---- incr / decr ---------------------------------------------------------------- */

typedef struct arith_arg {
    const store_arith_op *a;
    char digits[24];
} arith_arg;

/* The store's rule: at most 20 decimal digits, fitting in 64 bits. */
static int parse_counter(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int rmw_arith(void *arg, const repl_val *cur, repl_val *next)
{
    arith_arg *x = arg;
    const store_arith_op *a = x->a;
    uint64_t v;
    int64_t exptime;
    if (!cur->present) {
        if (!a->vivify)
            return CL_ENOTFOUND;
        v = a->initial;
        exptime = a->exptime;
        *next = (repl_val){.present = 1, .flags = 0};
    } else {
        if (a->cas && cur->version != a->cas)
            return CL_EEXISTS;
        if (!parse_counter(cur->data, cur->len, &v))
            return CL_ENONNUMERIC;
        v = a->incr ? v + a->delta : (v > a->delta ? v - a->delta : 0);
        exptime = cur->exptime;
        *next = *cur;
    }
    if (a->touch)
        exptime = a->touch_exptime;
    int n = snprintf(x->digits, sizeof x->digits, "%llu", (unsigned long long)v);
    next->exptime = exptime;
    next->data = (const uint8_t *)x->digits;
    next->len = (size_t)n;
    return REPL_RMW_WRITE;
}

int kv_arith(kv_thread *kt, const uint8_t *key, size_t klen, const store_arith_op *a,
             uint64_t *value, store_meta *meta)
{
    if (!kt->r)
        return store_arith(kt->st, key, klen, a, value, meta);
    arith_arg x = {.a = a};
    repl_val out;
    int rc = rmw_into_scratch(kt, key, klen, rmw_arith, &x, &out);
    if (rc != CL_OK)
        return rc;
    if (!parse_counter(out.data, out.len, value))
        return CL_ENONNUMERIC;          /* cannot happen: we wrote it */
    if (meta)
        meta_from(meta, &out);
    return CL_OK;
}
