/*
 * mc.c - the memcached front door's framing and dispatch: splits the input
 * stream into request lines and data blocks, looks the command up in the
 * command table, and runs its handler; plus thread/session lifecycle and
 * the net_proto vtable the event loop calls.
 *
 * Framing rules (memcached 1.6):
 *   - a line ends at "\n"; a "\r" before it is dropped; tokens are split
 *     on spaces (runs of spaces are one separator);
 *   - a storage command's data block is `bytes` bytes followed by "\r\n";
 *     `bytes` + 2 are consumed and if the last two are not "\r\n" the reply
 *     is "CLIENT_ERROR bad data chunk";
 *   - a data block the server refuses before reading it (too large, or a
 *     bad key/flags/exptime on a line whose length field is valid) is
 *     swallowed: its bytes are discarded as they arrive, across calls, so
 *     the stream stays in sync and value bytes are never run as commands;
 *   - a line longer than MC_LINE_MAX (MC_LINE_MAX_GET for get/gets/gat/
 *     gats) gets "CLIENT_ERROR line too long" and the connection closes.
 *
 * Statelessness: an incomplete request is never half-executed.  A storage
 * command whose block has not all arrived is left unconsumed (and *want
 * says how much it needs); it is parsed again when more bytes come.  The
 * only state kept between calls is the swallow count.  This is what makes
 * replies independent of how the input is split.
 *
 * Output is produced in batches: after MC_OUT_BATCH bytes of replies the
 * call returns with complete requests still unconsumed, so the loop can
 * write (and apply backpressure) before a pipeline of large gets turns
 * into gigabytes of buffered replies.
 *
 * Invariants: a handler consumes exactly r->used bytes after the line or
 * returns MC_NEED_MORE having written nothing; replies of one request are
 * contiguous in `out`.
 */
#include "mc_int.h"

#include <stdlib.h>
#include <string.h>

#include "../common/err.h"
#include "../common/log.h"
#include "../kv/kv_async.h"

/* The command table: adding a command is one row and one handler.  Token
 * counts include the command name; a count outside [min, max] is
 * "ERROR", as memcached answers.  Most frequent first. */
#define CMD(name, min, max, fn) { name, sizeof(name) - 1, min, max, fn }
static const mc_cmd mc_commands[] = {
    CMD("get",       2, 0, mc_cmd_get),
    CMD("mg",        2, 0, mc_cmd_mg),
    CMD("set",       5, 6, mc_cmd_set),
    CMD("ms",        2, 0, mc_cmd_ms),
    CMD("gets",      2, 0, mc_cmd_gets),
    CMD("delete",    2, 4, mc_cmd_delete),
    CMD("md",        2, 0, mc_cmd_md),
    CMD("incr",      3, 4, mc_cmd_incr),
    CMD("decr",      3, 4, mc_cmd_decr),
    CMD("ma",        2, 0, mc_cmd_ma),
    CMD("mn",        1, 0, mc_cmd_mn),
    CMD("add",       5, 6, mc_cmd_add),
    CMD("replace",   5, 6, mc_cmd_replace),
    CMD("append",    5, 6, mc_cmd_append),
    CMD("prepend",   5, 6, mc_cmd_prepend),
    CMD("cas",       6, 7, mc_cmd_cas),
    CMD("touch",     3, 4, mc_cmd_touch),
    CMD("gat",       3, 0, mc_cmd_gat),
    CMD("gats",      3, 0, mc_cmd_gats),
    CMD("me",        1, 0, mc_cmd_me),
    CMD("flush_all", 1, 3, mc_cmd_flush_all),
    CMD("version",   1, 0, mc_cmd_version),
    CMD("verbosity", 2, 3, mc_cmd_verbosity),
    CMD("stats",     1, 0, mc_cmd_stats),
    CMD("quit",      1, 0, mc_cmd_quit),
};
#undef CMD

/* ---- replies ---------------------------------------------------------------- */

void mc_put(mc_req *r, const void *p, size_t n)
{
    if (cl_buf_append(r->out, p, n) != CL_OK)
        r->oom = 1;
}

void mc_put_str(mc_req *r, const char *s) { mc_put(r, s, strlen(s)); }

void mc_put_u64(mc_req *r, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mc_put(r, tmp + i, sizeof tmp - i);
}

void mc_put_i64(mc_req *r, int64_t v)
{
    if (v < 0) {
        mc_put(r, "-", 1);
        mc_put_u64(r, (uint64_t)0 - (uint64_t)v);
    } else {
        mc_put_u64(r, (uint64_t)v);
    }
}

void mc_reply(mc_req *r, const char *line)
{
    if (r->noreply)
        return;
    mc_put_str(r, line);
    mc_put(r, "\r\n", 2);
}

void mc_reply_client_error(mc_req *r, const char *line)
{
    mc_count(&r->thr->ctx->counters.client_errors);
    mc_reply(r, line);
}

void mc_reply_store_error(mc_req *r, int rc)
{
    if (rc == CL_ETOOBIG)
        mc_count(&r->thr->ctx->counters.store_too_large);
    if (rc == CL_EBADKEY || rc == CL_ENONNUMERIC)
        mc_count(&r->thr->ctx->counters.client_errors);
    mc_reply(r, mc_store_error_text(rc));
}

int mc_take_block(mc_req *r, uint64_t bytes)
{
    if (bytes > mc_max_value(r)) {
        mc_reply_store_error(r, CL_ETOOBIG);
        mc_swallow(r, bytes + 2);
        return MC_DONE;
    }
    if (r->avail < bytes + 2) {
        r->need = (size_t)bytes + 2;
        return MC_NEED_MORE;
    }
    r->used = (size_t)bytes + 2;
    if (r->data[bytes] != '\r' || r->data[bytes + 1] != '\n') {
        mc_reply_client_error(r, MC_ERR_DATA_CHUNK);
        return MC_DONE;
    }
    return MC_BLOCK_READY;
}

void mc_swallow(mc_req *r, uint64_t n)
{
    uint64_t here = n < r->avail ? n : r->avail;
    r->used = (size_t)here;
    r->sess->swallow = n - here;
}

/* ---- framing and dispatch ----------------------------------------------------- */

static size_t mc_tokenize(mc_req *r)
{
    const uint8_t *p = r->line, *end = r->line + r->linelen;
    r->ntok = 0;
    r->more = 0;
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        if (p == end)
            break;
        const uint8_t *s = p;
        while (p < end && *p != ' ')
            p++;
        if (r->ntok == MC_MAX_TOKENS) {
            r->more = 1;
            break;
        }
        r->tok[r->ntok].p = s;
        r->tok[r->ntok].n = (size_t)(p - s);
        r->ntok++;
    }
    return (size_t)r->ntok;
}

static const mc_cmd *mc_lookup(const mc_token *t)
{
    for (size_t i = 0; i < sizeof mc_commands / sizeof mc_commands[0]; i++) {
        const mc_cmd *c = &mc_commands[i];
        if (c->namelen == t->n && memcmp(c->name, t->p, t->n) == 0)
            return c;
    }
    return NULL;
}

static int mc_dispatch(mc_req *r)
{
    if (mc_tokenize(r) == 0) {
        mc_reply_client_error(r, "ERROR");
        return MC_DONE;
    }
    const mc_cmd *c = mc_lookup(&r->tok[0]);
    if (!c || r->ntok < c->min_tokens ||
        (c->max_tokens && (r->more || r->ntok > c->max_tokens))) {
        mc_reply_client_error(r, "ERROR");
        return MC_DONE;
    }
    return c->handler(r);
}

/* The line limit for a request starting at p: retrieval commands may be
 * long.  Called only when more than MC_LINE_MAX bytes are waiting, so the
 * prefix is always there to look at. */
static size_t mc_line_limit(const uint8_t *p, size_t avail)
{
    static const char *const long_ok[] = { "get ", "gets ", "gat ", "gats " };
    for (size_t i = 0; i < sizeof long_ok / sizeof long_ok[0]; i++) {
        size_t n = strlen(long_ok[i]);
        if (avail >= n && memcmp(p, long_ok[i], n) == 0)
            return MC_LINE_MAX_GET;
    }
    return MC_LINE_MAX;
}

size_t mc_session_process(mc_session *s, const uint8_t *in, size_t len,
                          cl_buf *out, int *close, size_t *want)
{
    size_t pos = 0, out0 = out->len;
    *want = 0;
    while (pos < len) {
        if (s->swallow) {
            uint64_t n = len - pos < s->swallow ? len - pos : s->swallow;
            pos += (size_t)n;
            s->swallow -= n;
            continue;
        }
        const uint8_t *p = in + pos;
        size_t avail = len - pos;
        size_t limit = avail > MC_LINE_MAX ? mc_line_limit(p, avail) : MC_LINE_MAX;
        const uint8_t *nl = memchr(p, '\n', avail < limit + 1 ? avail : limit + 1);
        if (!nl) {
            if (avail > limit) {
                mc_count(&s->thr->ctx->counters.client_errors);
                if (cl_buf_append(out, "CLIENT_ERROR line too long\r\n", 28) != CL_OK)
                    cl_log_warn("mc", "cannot buffer reply; closing connection");
                *close = 1;
                return len;
            }
            break; /* wait for the rest of the line */
        }

        mc_req r;
        r.sess = s;
        r.thr = s->thr;
        r.kv = &s->thr->kv;
        r.out = out;
        r.line = p;
        r.linelen = (size_t)(nl - p);
        if (r.linelen && p[r.linelen - 1] == '\r')
            r.linelen--;
        r.data = nl + 1;
        r.avail = len - (pos + (size_t)(nl - p) + 1);
        r.used = r.need = 0;
        r.noreply = r.close = r.oom = 0;

        size_t mark = out->len;
        int res = mc_dispatch(&r);
        if (res == MC_NEED_MORE) {
            CL_ASSERT(out->len == mark && r.need > r.avail);
            *want = (size_t)(nl - p) + 1 + r.need;
            break;
        }
        if (res == MC_SUSPENDED) {
            CL_ASSERT(out->len == mark && s->pend);
            break; /* this request again after the resume */
        }
        CL_ASSERT(r.used <= r.avail);
        pos += (size_t)(nl - p) + 1 + r.used;
        if (r.oom) {
            cl_log_warn("mc", "cannot buffer reply; closing connection");
            *close = 1;
            break;
        }
        if (r.close) {
            *close = 1;
            break;
        }
        if (out->len - out0 >= MC_OUT_BATCH)
            break; /* let the caller write before more replies pile up */
    }
    return pos;
}

/* ---- lifecycle ------------------------------------------------------------------ */

int mc_thread_create(mc_context *ctx, mc_thread **out)
{
    mc_thread *t = calloc(1, sizeof *t);
    if (!t)
        return CL_ENOMEM;
    t->ctx = ctx;
    int rc = store_thread_create(ctx->store, &t->st);
    if (rc != CL_OK) {
        free(t);
        return rc;
    }
    kv_thread_init(&t->kv, ctx->store, t->st, ctx->repl);
    *out = t;
    return CL_OK;
}

void mc_thread_destroy(mc_thread *t)
{
    if (!t)
        return;
    kv_thread_fini(&t->kv);
    store_thread_destroy(t->st);
    free(t);
}

void mc_session_init(mc_session *s, mc_thread *t)
{
    s->thr = t;
    s->swallow = 0;
    s->pend = NULL;
    s->pend_kind = 0;
}

void mc_session_fini(mc_session *s)
{
    s->swallow = 0;
    if (s->pend) /* closed while suspended: the operation still completes */
        kv_pending_abandon(s->pend);
    s->pend = NULL;
}

size_t mc_max_pending(const mc_context *ctx)
{
    return MC_LINE_MAX_GET + 2 + store_max_value(ctx->store) + 2;
}

/* ---- net_proto glue -------------------------------------------------------------- */

static void *mc_np_thread_init(void *proto_arg, int thread_index)
{
    mc_thread *t;
    int rc = mc_thread_create(proto_arg, &t);
    if (rc != CL_OK) {
        cl_log_error("mc", "worker %d: cannot create thread state: %s", thread_index,
                     cl_strerror(rc));
        return NULL;
    }
    return t;
}

static void mc_np_thread_fini(void *ts) { mc_thread_destroy(ts); }
static void mc_np_session_init(void *s, void *ts) { mc_session_init(s, ts); }
static void mc_np_session_fini(void *s, void *ts) { mc_session_fini(s); }

static size_t mc_np_process(void *s, void *ts, const uint8_t *in, size_t len,
                            cl_buf *out, int *close, size_t *want)
{
    return mc_session_process(s, in, len, out, close, want);
}

const net_proto mc_net_proto = {
    .name = "memcached",
    .thread_init = mc_np_thread_init,
    .thread_fini = mc_np_thread_fini,
    .session_size = sizeof(mc_session),
    .session_init = mc_np_session_init,
    .session_fini = mc_np_session_fini,
    .process = mc_np_process,
    /* The session bounds itself (lines by MC_LINE_MAX_GET, values by
     * max_value, refused values are swallowed); this is that bound for
     * the largest max_value the store allows (1 GiB). */
    .max_pending = MC_LINE_MAX_GET + 2 + (1u << 30) + 2,
};
