/*
 * mc_text.c - memcached's classic text commands: get gets gat gats, set add
 * replace append prepend cas, delete, incr decr, touch, flush_all, version,
 * verbosity, quit.
 *
 * Replies and error strings are memcached 1.6.18's (protocol.txt, checked
 * against the real server).  Deliberate differences:
 *   - when a storage line's <bytes> field is valid but another field is
 *     not (bad key, flags, exptime or cas unique), the data block is
 *     swallowed after the CLIENT_ERROR; memcached would run the value
 *     bytes as a command line;
 *   - keys with control bytes are refused (CLIENT_ERROR bad command line
 *     format) in every command, as protocol.txt says; memcached only
 *     checks their length;
 *   - flags must fit in 32 bits (memcached silently truncates);
 *   - "gat <exptime>" without keys is "ERROR", like "get" (memcached: END);
 *   - an error in a retrieval command (key too long, integrity failure,
 *     reply too large) replaces the whole reply of that command by one
 *     error line, with no partial VALUEs and no END.  memcached does the
 *     same for its own mid-get errors, and every client reads a single
 *     error line as the complete answer.  Above all, a key whose sealed
 *     value fails authentication is never silently skipped: a miss would
 *     invite the client to think the key absent.
 *
 * noreply (last token) suppresses the reply line, errors included, as in
 * memcached.
 */
#include "mc_int.h"

#include <string.h>

#include "../common/err.h"
#include "../common/log.h"
#include "../kv/kv_async.h"

/* ---- retrieval ----------------------------------------------------------------- */

typedef struct mc_value_sink {
    mc_req *r;
    const uint8_t *key;
    size_t klen;
    int with_cas;
    size_t start;   /* out->len before this command's reply */
    size_t cap;     /* largest reply this command may build */
    int failed;     /* returned NULL (the store accepts that for empty values) */
} mc_value_sink;

/* Runs under the item's lock: formats the VALUE line and hands the store
 * the spot for the plaintext; everything is reserved up front so nothing
 * reallocates while the store writes into it. */
static uint8_t *mc_value_to_reply(void *arg, const store_meta *m)
{
    mc_value_sink *k = arg;
    cl_buf *out = k->r->out;
    size_t hdr = 6 + k->klen + 1 + 10 + 1 + 10 + 1 + 20 + 2;
    if (out->len - k->start > k->cap || m->len > k->cap - (out->len - k->start) ||
        cl_buf_reserve(out, hdr + m->len + 2) != CL_OK) {
        k->failed = 1;
        return NULL;
    }
    mc_put(k->r, "VALUE ", 6);
    mc_put(k->r, k->key, k->klen);
    mc_put(k->r, " ", 1);
    mc_put_u64(k->r, m->flags);
    mc_put(k->r, " ", 1);
    mc_put_u64(k->r, m->len);
    if (k->with_cas) {
        mc_put(k->r, " ", 1);
        mc_put_u64(k->r, m->cas);
    }
    mc_put(k->r, "\r\n", 2);
    return cl_buf_extend(out, m->len);
}

/* ---- cluster get and set without blocking the worker ------------------------------
 *
 * On a cluster a plain get of one key and a plain set wait for a quorum.
 * Rather than block the worker (and every other connection it serves),
 * the first dispatch starts the operation (kv_async.h), suspends the
 * connection and returns MC_SUSPENDED having consumed nothing; the engine
 * resumes the connection when the result is in the session, and the loop
 * dispatches the same request again, which takes the result and replies.
 * Everything else, and a start that fails, takes the blocking kv call. */

#define MC_RC_SUSPENDED 1   /* not a CL_* code */

static void mc_wake(void *waker) { net_waker_resume(waker); }

/* Suspends the connection; NULL when out of memory (then block instead). */
static net_waker *mc_suspend(mc_req *r)
{
    return net_conn_suspend(net_session_conn(r->sess));
}

static int mc_kv_get(mc_req *r, const store_get_opts *o, struct mc_value_sink *sink, int single)
{
    mc_session *s = r->sess;
    if (s->pend) {
        CL_ASSERT(s->pend_kind == MC_PEND_GET && single);
        kv_pending *p = s->pend;
        s->pend = NULL;
        return kv_get_finish(p, mc_value_to_reply, sink, NULL);
    }
    if (single && kv_get_async_ok(r->kv, sink->key, sink->klen, o)) {
        net_waker *w = mc_suspend(r);
        if (w) {
            if (kv_get_start(r->kv, sink->key, sink->klen, mc_wake, w, &s->pend) == CL_OK) {
                s->pend_kind = MC_PEND_GET;
                return MC_RC_SUSPENDED;
            }
            net_waker_resume(w); /* never waited for: an extra, empty resume */
        }
    }
    return kv_get(r->kv, sink->key, sink->klen, o, mc_value_to_reply, sink, NULL);
}

static int mc_kv_set(mc_req *r, const mc_token *key, size_t bytes, const store_write *w)
{
    mc_session *s = r->sess;
    if (s->pend) {
        CL_ASSERT(s->pend_kind == MC_PEND_SET);
        kv_pending *p = s->pend;
        s->pend = NULL;
        return kv_set_finish(p, NULL);
    }
    if (kv_set_async_ok(r->kv, w) && bytes <= r->kv->max_value) {
        net_waker *k = mc_suspend(r);
        if (k) {
            if (kv_set_start(r->kv, key->p, key->n, r->data, bytes, w, mc_wake, k, &s->pend) ==
                CL_OK) {
                s->pend_kind = MC_PEND_SET;
                return MC_RC_SUSPENDED;
            }
            net_waker_resume(k);
        }
    }
    return kv_set(r->kv, key->p, key->n, r->data, bytes, w, NULL);
}

static int mc_retrieve(mc_req *r, int with_cas, int touch)
{
    store_get_opts opts = { .want_value = 1 };
    const uint8_t *p = r->tok[1].p;
    if (touch) {
        int64_t e;
        if (!mc_parse_i64(r->tok[1].p, r->tok[1].n, &e)) {
            mc_reply_client_error(r, MC_ERR_EXPTIME);
            return MC_DONE;
        }
        opts.touch = 1;
        opts.exptime = store_exptime(e);
        p = r->tok[2].p;
    }
    const uint8_t *end = r->line + r->linelen;
    size_t maxv = mc_max_value(r);
    mc_value_sink sink = {
        .r = r,
        .with_cas = with_cas,
        .start = r->out->len,
        .cap = maxv > MC_GET_REPLY_MAX / 2 ? 2 * maxv : MC_GET_REPLY_MAX,
    };
    int keys = 0; /* cluster: only a one-key get may suspend (nothing written before it) */
    for (const uint8_t *q = p; kv_replicated(r->kv) && q < end && keys < 2; q++)
        keys += *q != ' ' && (q == p || q[-1] == ' ');
    while (p < end) {
        if (*p == ' ') {
            p++;
            continue;
        }
        const uint8_t *k = p;
        while (p < end && *p != ' ')
            p++;
        sink.key = k;
        sink.klen = (size_t)(p - k);
        const char *err = NULL;
        if (!mc_key_ok(k, sink.klen)) {
            err = MC_ERR_FORMAT;
            mc_count(&r->thr->ctx->counters.client_errors);
        } else {
            int rc = mc_kv_get(r, &opts, &sink, keys == 1);
            if (rc == MC_RC_SUSPENDED)
                return MC_SUSPENDED;
            if (sink.failed)
                rc = CL_ENOMEM;
            if (rc == CL_OK)
                mc_put(r, "\r\n", 2);
            else if (rc == CL_ENOMEM)
                err = MC_ERR_NOMEM_GET;
            else if (rc != CL_ENOTFOUND)
                err = mc_store_error_text(rc);
        }
        if (err) {
            cl_buf_truncate(r->out, sink.start);
            mc_reply(r, err);
            return MC_DONE;
        }
    }
    mc_put(r, "END\r\n", 5);
    return MC_DONE;
}

int mc_cmd_get(mc_req *r) { return mc_retrieve(r, 0, 0); }
int mc_cmd_gets(mc_req *r) { return mc_retrieve(r, 1, 0); }
int mc_cmd_gat(mc_req *r) { return mc_retrieve(r, 0, 1); }
int mc_cmd_gats(mc_req *r) { return mc_retrieve(r, 1, 1); }

/* ---- storage -------------------------------------------------------------------- */

/* cas with unique 0 can never match (CAS ids start at 1): EXISTS when the
 * item is there, NOT_FOUND otherwise, as memcached answers. */
static int mc_cas_zero(mc_req *r, const mc_token *key)
{
    store_get_opts o = { .want_value = 0, .no_bump = 1 };
    int rc = kv_get(r->kv, key->p, key->n, &o, NULL, NULL, NULL);
    return rc == CL_OK ? CL_EEXISTS : rc;
}

static int mc_storage(mc_req *r, store_mode mode, int is_cas)
{
    int nargs = is_cas ? 6 : 5;   /* tokens before the optional noreply */
    if (r->ntok > nargs)
        r->noreply = mc_tok_eq(&r->tok[nargs], "noreply");

    uint64_t bytes;
    if (!mc_parse_u64(r->tok[4].p, r->tok[4].n, &bytes) || bytes > INT32_MAX - 2) {
        mc_reply_client_error(r, MC_ERR_FORMAT); /* block length unknown: cannot swallow */
        return MC_DONE;
    }
    const mc_token *key = &r->tok[1];
    store_write w = { .mode = mode };
    int64_t exptime;
    if (!mc_key_ok(key->p, key->n) || !mc_parse_u32(r->tok[2].p, r->tok[2].n, &w.flags) ||
        !mc_parse_i64(r->tok[3].p, r->tok[3].n, &exptime) ||
        (is_cas && !mc_parse_u64(r->tok[5].p, r->tok[5].n, &w.cas))) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        mc_swallow(r, bytes + 2);
        return MC_DONE;
    }
    int blk = mc_take_block(r, bytes);
    if (blk != MC_BLOCK_READY)
        return blk;
    w.exptime = store_exptime(exptime);

    int rc;
    if (is_cas && w.cas == 0)
        rc = mc_cas_zero(r, key);
    else
        rc = mc_kv_set(r, key, (size_t)bytes, &w);
    if (rc == MC_RC_SUSPENDED)
        return MC_SUSPENDED;
    if (rc == CL_OK)
        mc_reply(r, "STORED");
    else
        mc_reply_store_error(r, rc);
    return MC_DONE;
}

int mc_cmd_set(mc_req *r) { return mc_storage(r, STORE_SET, 0); }
int mc_cmd_add(mc_req *r) { return mc_storage(r, STORE_ADD, 0); }
int mc_cmd_replace(mc_req *r) { return mc_storage(r, STORE_REPLACE, 0); }
int mc_cmd_append(mc_req *r) { return mc_storage(r, STORE_APPEND, 0); }
int mc_cmd_prepend(mc_req *r) { return mc_storage(r, STORE_PREPEND, 0); }
int mc_cmd_cas(mc_req *r) { return mc_storage(r, STORE_SET, 1); }

/* ---- single-key commands -------------------------------------------------------------- */

/* delete <key> [0] [noreply]: the legacy hold time must be 0. */
int mc_cmd_delete(mc_req *r)
{
    if (r->ntok > 2)
        r->noreply = mc_tok_eq(&r->tok[r->ntok - 1], "noreply");
    int hold0 = r->ntok > 2 && mc_tok_eq(&r->tok[2], "0");
    if ((r->ntok == 3 && !hold0 && !r->noreply) || (r->ntok == 4 && !(hold0 && r->noreply))) {
        mc_reply_client_error(r, MC_ERR_FORMAT ".  Usage: delete <key> [noreply]");
        return MC_DONE;
    }
    const mc_token *key = &r->tok[1];
    if (!mc_key_ok(key->p, key->n)) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        return MC_DONE;
    }
    int rc = kv_delete(r->kv, key->p, key->n, 0);
    if (rc == CL_OK)
        mc_reply(r, "DELETED");
    else
        mc_reply_store_error(r, rc);
    return MC_DONE;
}

static int mc_arith(mc_req *r, int incr)
{
    if (r->ntok == 4)
        r->noreply = mc_tok_eq(&r->tok[3], "noreply");
    const mc_token *key = &r->tok[1];
    if (!mc_key_ok(key->p, key->n)) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        return MC_DONE;
    }
    store_arith_op a = { .incr = incr };
    if (!mc_parse_u64(r->tok[2].p, r->tok[2].n, &a.delta)) {
        mc_reply_client_error(r, "CLIENT_ERROR invalid numeric delta argument");
        return MC_DONE;
    }
    uint64_t value;
    int rc = kv_arith(r->kv, key->p, key->n, &a, &value, NULL);
    if (rc != CL_OK) {
        mc_reply_store_error(r, rc);
    } else if (!r->noreply) {
        mc_put_u64(r, value);
        mc_put(r, "\r\n", 2);
    }
    return MC_DONE;
}

int mc_cmd_incr(mc_req *r) { return mc_arith(r, 1); }
int mc_cmd_decr(mc_req *r) { return mc_arith(r, 0); }

int mc_cmd_touch(mc_req *r)
{
    if (r->ntok == 4)
        r->noreply = mc_tok_eq(&r->tok[3], "noreply");
    const mc_token *key = &r->tok[1];
    if (!mc_key_ok(key->p, key->n)) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        return MC_DONE;
    }
    int64_t e;
    if (!mc_parse_i64(r->tok[2].p, r->tok[2].n, &e)) {
        mc_reply_client_error(r, MC_ERR_EXPTIME);
        return MC_DONE;
    }
    int rc = kv_touch(r->kv, key->p, key->n, store_exptime(e));
    if (rc == CL_OK)
        mc_reply(r, "TOUCHED");
    else
        mc_reply_store_error(r, rc);
    return MC_DONE;
}

/* ---- server commands ---------------------------------------------------------------- */

/* flush_all [delay] [noreply] */
int mc_cmd_flush_all(mc_req *r)
{
    if (r->ntok > 1)
        r->noreply = mc_tok_eq(&r->tok[r->ntok - 1], "noreply");
    int64_t delay = 0;
    if (r->ntok > 1 && !(r->ntok == 2 && r->noreply) &&
        !mc_parse_i64(r->tok[1].p, r->tok[1].n, &delay)) {
        mc_reply_client_error(r, MC_ERR_EXPTIME);
        return MC_DONE;
    }
    if (kv_replicated(r->kv)) {
        mc_reply_store_error(r, CL_EUNSUPPORTED);
        return MC_DONE;
    }
    store_flush(r->thr->ctx->store, delay > 0 ? store_exptime(delay) : 0);
    mc_reply(r, "OK");
    return MC_DONE;
}

int mc_cmd_version(mc_req *r)
{
    const char *v = r->thr->ctx->version ? r->thr->ctx->version : MC_VERSION_DEFAULT;
    mc_put(r, "VERSION ", 8);
    mc_put_str(r, v);
    mc_put(r, "\r\n", 2);
    return MC_DONE;
}

/* verbosity <level> [noreply]: 0 = warnings and errors, 1 = info (the
 * daemon's default), 2 and more = debug.  The level is process-wide. */
int mc_cmd_verbosity(mc_req *r)
{
    if (r->ntok == 3)
        r->noreply = mc_tok_eq(&r->tok[2], "noreply");
    uint32_t v;
    if (!mc_parse_u32(r->tok[1].p, r->tok[1].n, &v)) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        return MC_DONE;
    }
    cl_log_set_level(v == 0 ? CL_LOG_WARN : v == 1 ? CL_LOG_INFO : CL_LOG_DEBUG);
    mc_reply(r, "OK");
    return MC_DONE;
}

int mc_cmd_quit(mc_req *r)
{
    r->close = 1;
    return MC_DONE;
}
