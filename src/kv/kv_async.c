/*
 * kv_async.c - kv_get / kv_set on a cluster without blocking (kv_async.h).
 *
 * A pending operation is shared by the submitting thread and the repl
 * thread.  Its state moves RUNNING -> DONE (the repl thread, after
 * storing the result) or RUNNING -> ABANDONED (the submitter gave up);
 * whichever of the two threads makes the second move frees it, so it is
 * freed exactly once whatever the order.  The result fields are written
 * before the release store of DONE and read after an acquire load.
 */
#include "kv_async.h"
#include "../common/err.h"
#include "../repl/repl.h"

#include <stdlib.h>
#include <string.h>

enum { P_RUNNING = 0, P_DONE = 1, P_ABANDONED = 2 };

struct kv_pending {
    int state;                /* P_*, atomic */
    kv_wake_fn wake;
    void *wake_arg;
    int rc;
    repl_val val;             /* get: data points at buf */
    cl_buf buf;
};

int kv_get_async_ok(const kv_thread *kt, const uint8_t *key, size_t klen,
                    const store_get_opts *opts)
{
    /* kv_get's replicated plain read: no touch, no meta-only options,
     * and not an eventual-mode key (read locally, without waiting). */
    if (!kt->r || (opts && (opts->touch || opts->recache_before || opts->vivify)))
        return 0;
    return repl_mode_of(kt->r, key, klen) != REPL_EVENTUAL;
}

int kv_set_async_ok(const kv_thread *kt, const store_write *w)
{
    return kt->r && w->mode == STORE_SET && !w->cas && !w->stale_if_older;
}

static void pending_done(void *arg, const repl_result *res)
{
    kv_pending *p = arg;
    p->rc = res->rc;
    p->val = res->val;
    p->val.data = NULL;
    if (res->rc == CL_OK && res->val.present && res->val.len) {
        if (cl_buf_append(&p->buf, res->val.data, res->val.len) == CL_OK)
            p->val.data = p->buf.data;
        else
            p->rc = CL_ENOMEM;
    }
    kv_wake_fn wake = p->wake;
    void *wake_arg = p->wake_arg;
    if (__atomic_exchange_n(&p->state, P_DONE, __ATOMIC_ACQ_REL) == P_ABANDONED) {
        cl_buf_fini(&p->buf, 1);
        free(p);
    }
    wake(wake_arg);
}

static kv_pending *pending_new(kv_wake_fn wake, void *wake_arg)
{
    kv_pending *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->wake = wake;
    p->wake_arg = wake_arg;
    cl_buf_init(&p->buf);
    return p;
}

int kv_get_start(kv_thread *kt, const uint8_t *key, size_t klen, kv_wake_fn wake,
                 void *wake_arg, kv_pending **out)
{
    kv_pending *p = pending_new(wake, wake_arg);
    if (!p)
        return CL_ENOMEM;
    int rc = repl_get(kt->r, key, klen, pending_done, p);
    if (rc != CL_OK) {
        free(p);
        return rc;
    }
    *out = p;
    return CL_OK;
}

int kv_set_start(kv_thread *kt, const uint8_t *key, size_t klen, const uint8_t *val,
                 size_t len, const store_write *w, kv_wake_fn wake, void *wake_arg,
                 kv_pending **out)
{
    if (len > kt->max_value)
        return CL_ETOOBIG;
    kv_pending *p = pending_new(wake, wake_arg);
    if (!p)
        return CL_ENOMEM;
    repl_val v = {.present = 1, .flags = w->flags, .exptime = w->exptime,
                  .data = val, .len = len};
    int rc = repl_put(kt->r, key, klen, &v, pending_done, p);
    if (rc != CL_OK) {
        free(p);
        return rc;
    }
    *out = p;
    return CL_OK;
}

static void pending_free(kv_pending *p)
{
    cl_buf_fini(&p->buf, 1);
    free(p);
}

int kv_get_finish(kv_pending *p, store_sink_fn sink, void *arg, store_meta *meta)
{
    int rc = p->rc;
    if (rc == CL_OK && !p->val.present)
        rc = CL_ENOTFOUND;
    if (rc == CL_OK)
        rc = kv_deliver(&p->val, sink, arg, meta);
    pending_free(p);
    return rc;
}

int kv_set_finish(kv_pending *p, uint64_t *cas_out)
{
    int rc = p->rc;
    if (rc == CL_OK && cas_out)
        *cas_out = p->val.version;
    pending_free(p);
    return rc;
}

void kv_pending_abandon(kv_pending *p)
{
    if (__atomic_exchange_n(&p->state, P_ABANDONED, __ATOMIC_ACQ_REL) == P_DONE)
        pending_free(p);
}
