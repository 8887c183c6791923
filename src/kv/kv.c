/*
 * kv.c - store semantics over the local store or the replicated store
 * (see kv.h).  The read-modify-write commands use the engine's step
 * functions (repl/ops.h), which apply the rules store.c applies under its
 * stripe lock and answer with the store's error codes.
 */
#include "kv.h"
#include "../common/err.h"
#include "../repl/ops.h"
#include "../repl/repl.h"

#include <string.h>

void kv_thread_init(kv_thread *kt, store *s, store_thread *st, repl *r)
{
    kt->st = st;
    kt->r = r;
    kt->max_value = store_max_value(s);
    cl_buf_init(&kt->scratch);
}

/* The scratch buffer must exist before a call: an answer that does not
 * fit says so (CL_ETOOBIG) and the caller grows it. */
static int scratch_ready(kv_thread *kt)
{
    return kt->scratch.data ? CL_OK : cl_buf_reserve(&kt->scratch, 4096);
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
    if (scratch_ready(kt) != CL_OK)
        return CL_ENOMEM;
    for (;;) {
        int rc = repl_get_sync(kt->r, key, klen, kt->scratch.data, kt->scratch.cap, out);
        if (rc != CL_ETOOBIG || out->len <= kt->scratch.cap)
            return rc;
        if (cl_buf_reserve(&kt->scratch, out->len) != CL_OK)
            return CL_ENOMEM;
    }
}

int kv_deliver(const repl_val *v, store_sink_fn sink, void *arg, store_meta *meta)
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

/* One CASPaxos read-modify-write (repl/ops.h); the value after it in the
 * scratch buffer.  The buffer is made large enough for any value first:
 * an answer that did not fit would come back as CL_ETOOBIG after the
 * operation took effect, and running it again (as a read may be) would
 * apply an append or an incr twice.  CL_ETOOBIG is then the operation's
 * own answer (the result would exceed --max-value). */
static int run_op(kv_thread *kt, const uint8_t *key, size_t klen, repl_op *op, repl_val *out)
{
    op->max_len = kt->max_value;
    int rc = cl_buf_reserve(&kt->scratch, kt->max_value + REPL_OP_OVERHEAD);
    if (rc == CL_OK)
        rc = repl_rmw_sync(kt->r, key, klen, repl_op_fn, op, kt->scratch.data, kt->scratch.cap,
                           out);
    repl_op_fini(op);
    return rc;
}

/* An eventual-mode read straight from the local replica (repl.h allows
 * it): no hand-off to the repl thread.  The client's CAS id is the
 * replicated version, so the sink sees that in place of the store's own. */
typedef struct local_sink {
    store_sink_fn sink;
    void *arg;
} local_sink;

static uint8_t *local_sink_fn(void *arg, const store_meta *m)
{
    local_sink *ls = arg;
    store_meta mv = *m;
    mv.cas = m->version;
    return ls->sink(ls->arg, &mv);
}

static int get_local(kv_thread *kt, const uint8_t *key, size_t klen, const store_get_opts *opts,
                     store_sink_fn sink, void *arg, store_meta *meta)
{
    local_sink ls = {sink, arg};
    store_get_opts o = opts ? *opts : (store_get_opts){.want_value = 1};
    int rc = store_get(kt->st, key, klen, &o, sink ? local_sink_fn : NULL, &ls, meta);
    if (rc == CL_OK && meta)
        meta->cas = meta->version;
    return rc;
}

int kv_get(kv_thread *kt, const uint8_t *key, size_t klen, const store_get_opts *opts,
           store_sink_fn sink, void *arg, store_meta *meta)
{
    if (!kt->r)
        return store_get(kt->st, key, klen, opts, sink, arg, meta);
    /* No value of a replicated store is ever stale (invalidation is
     * refused), so a plain recache request (meta mg) can never win a token
     * and is an ordinary read; an early-recache time (mg R) or a vivify
     * (mg N) needs token state the replicas do not share. */
    if (opts && (opts->recache_before || opts->vivify))
        return CL_EUNSUPPORTED;
    if (!(opts && opts->touch) && repl_mode_of(kt->r, key, klen) == REPL_EVENTUAL)
        return get_local(kt, key, klen, opts, sink, arg, meta);
    repl_val v;
    int rc;
    if (opts && opts->touch) {
        repl_op op;
        repl_op_init(&op, REPL_OP_TOUCH);
        op.exptime = opts->exptime;
        rc = run_op(kt, key, klen, &op, &v);
    } else {
        rc = get_into_scratch(kt, key, klen, &v);
        if (rc == CL_OK && !v.present)
            rc = CL_ENOTFOUND;
    }
    if (rc != CL_OK)
        return rc;
    return kv_deliver(&v, opts && !opts->want_value ? NULL : sink, arg, meta);
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
        static const repl_op_kind kinds[] = {
            [STORE_SET] = REPL_OP_CAS, [STORE_ADD] = REPL_OP_ADD,
            [STORE_REPLACE] = REPL_OP_REPLACE, [STORE_APPEND] = REPL_OP_APPEND,
            [STORE_PREPEND] = REPL_OP_PREPEND,
        };
        repl_op op;
        repl_op_init(&op, kinds[w->mode]);
        op.data = val;
        op.len = len;
        op.flags = w->flags;
        op.exptime = w->exptime;
        op.cas = w->cas;
        rc = run_op(kt, key, klen, &op, &out);
    }
    if (rc == CL_OK && cas_out)
        *cas_out = out.version;
    return rc;
}

int kv_delete(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas)
{
    return kv_delete_v(kt, key, klen, cas, NULL);
}

int kv_delete_v(kv_thread *kt, const uint8_t *key, size_t klen, uint64_t cas,
                uint64_t *version_out)
{
    if (!kt->r)
        return store_delete(kt->st, key, klen, cas);
    repl_op op;
    repl_op_init(&op, REPL_OP_DELETE);
    op.cas = cas;
    repl_val out;
    int rc = run_op(kt, key, klen, &op, &out);
    if (rc == CL_OK && version_out)
        *version_out = out.version;
    return rc;
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
    repl_op op;
    repl_op_init(&op, REPL_OP_TOUCH);
    op.exptime = exptime;
    repl_val out;
    return run_op(kt, key, klen, &op, &out);
}

int kv_arith(kv_thread *kt, const uint8_t *key, size_t klen, const store_arith_op *a,
             uint64_t *value, store_meta *meta)
{
    if (!kt->r)
        return store_arith(kt->st, key, klen, a, value, meta);
    repl_op op;
    repl_op_init(&op, a->incr ? REPL_OP_INCR : REPL_OP_DECR);
    op.delta = a->delta;
    op.cas = a->cas;
    op.vivify = a->vivify;
    op.initial = a->initial;
    op.vivify_exptime = a->exptime;
    op.touch = a->touch;
    op.touch_exptime = a->touch_exptime;
    repl_val out;
    int rc = run_op(kt, key, klen, &op, &out);
    if (rc != CL_OK)
        return rc;
    *value = op.number;
    if (meta)
        meta_from(meta, &out);
    return CL_OK;
}
