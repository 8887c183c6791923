/*
 * repl.c - the replication engine's core (repl.h): lifecycle, the inbox
 * of submissions, the op table, timers, the message loop, completion,
 * statistics and the blocking helpers.  The protocol itself lives in
 * replica.c (replica rules), strong.c (ABD + CASPaxos proposer),
 * eventual.c, lock.c and recover.c (repl_int.h lists them).
 *
 * Operations.  A submission (any thread) allocates one op holding its
 * arguments (key, value bytes, write set) and appends it to the inbox
 * under inbox_lock, waking the repl thread only when the inbox was empty.
 * On the repl thread an op gets a slot in the op table; each protocol
 * round draws a request id rid = seq << SLOT_BITS | slot, and a reply is
 * matched by one array lookup: slots[rid & mask].rid == rid.  A reply to
 * an earlier round, another incarnation (epoch) or a finished op is
 * dropped and counted (replayed_dropped).  Ops with a slot are also on the
 * active list, which the timer pass walks when some timer is due.
 *
 * Messages.  Records for a peer are appended to out[peer] during a step
 * and leave as one transport message at the end of the step (on_tick,
 * on_wake, on_peer; on_message only when much is pending), followed by
 * one transport flush.  The transport calls on_tick after each batch of
 * messages, so replies to a batch of requests leave together.
 *
 * Invariants: an op is finished exactly once (op_finish), which runs its
 * callback, releases its slot, starts the next op queued on its key and
 * frees it.  Nothing here blocks; no lock is held while a callback runs.
 */
#include "repl_int.h"
#include "../common/err.h"
#include "../common/log.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_PUSH_US 500
#define DEFAULT_AE_MS 1000
#define DEFAULT_RETRY_MS 50
#define DEFAULT_FENCE_MS 2000
#define FLUSH_EARLY_BYTES (256u << 10)
#define OUT_FLUSH_BYTES (512u << 10)

/* ---- small services ------------------------------------------------------ */

uint64_t repl_wall_ms(repl *r)
{
    if (r->cfg.wall_ms)
        return r->cfg.wall_ms(r->cfg.wall_arg);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t repl_rand(repl *r)
{
    uint64_t x = r->rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t repl_key_hash(const uint8_t *key, size_t klen)
{
    return XXH3_64bits(key, klen); /* the same on every node: digests compare */
}

int repl_key_mode(const repl *r, const uint8_t *key, size_t klen)
{
    if (klen >= LOCK_PREFIX_LEN && memcmp(key, LOCK_PREFIX, LOCK_PREFIX_LEN) == 0)
        return REPL_STRONG;
    size_t best = 0;
    int mode = REPL_STRONG;
    for (size_t i = 0; i < r->cfg.n_ns; i++) {
        size_t pl = strlen(r->ns[i].prefix);
        if (pl <= klen && pl >= best && memcmp(key, r->ns[i].prefix, pl) == 0) {
            best = pl;
            mode = r->ns[i].mode;
        }
    }
    return mode;
}

repl_mode repl_mode_of(const repl *r, const uint8_t *key, size_t klen)
{
    return (repl_mode)repl_key_mode(r, key, klen);
}

int repl_ready(const repl *r) { return __atomic_load_n(&r->ready, __ATOMIC_RELAXED); }

uint64_t repl_new_version(repl *r, uint64_t floor)
{
    hlc_observe(&r->clock, version_hlc(floor));
    return version_make(hlc_next(&r->clock, repl_wall_ms(r)), r->self);
}

/* Sends one peer's pending output now. */
static void send_one(repl *r, int node)
{
    cl_buf *b = &r->out[node];
    if (r->attached && (r->up & (1u << node)))
        r->tr.send(r->tr.ctx, node, b->data, b->len);
    STAT_INC(r, msgs_out);
    b->len = 0;
    cl_buf_shrink(b, 64u << 10);
}

/* A message stays below REPL_MAX_MSG: what is pending for a peer leaves
 * before it passes OUT_FLUSH_BYTES, and no record appended after this
 * call is larger than a value plus PUSH_MAX / AE_PUSH_MAX / SYNC_BYTES
 * (each at most 512 KiB; values at most REPL_VALUE_MAX). */
cl_buf *repl_out(repl *r, int node)
{
    if (r->out[node].len > OUT_FLUSH_BYTES)
        send_one(r, node);
    return &r->out[node];
}

int repl_reachable(const repl *r)
{
    return __builtin_popcount(r->up) + (r->ready ? 1 : 0);
}

/* Sends every pending output buffer, then one transport flush. */
static void flush_out(repl *r)
{
    int sent = 0;
    for (int i = 1; i <= r->n; i++) {
        if (r->out[i].len == 0)
            continue;
        send_one(r, i);
        sent = 1;
    }
    if (sent && r->attached)
        r->tr.flush(r->tr.ctx);
}

/* ---- values ---------------------------------------------------------------- */

void rval_set(rval *v, const wire_rec *rec)
{
    v->version = rec->version;
    v->flags = rec->flags;
    v->exptime = rec->exptime;
    v->kind = rec->kind;
    v->xbit = rec->xbit;
    v->blob.len = 0;
    if (rec->blen && cl_buf_append(&v->blob, rec->blob, rec->blen) != CL_OK) {
        /* out of memory: keep the version, lose the bytes -> treated as broken */
        v->kind = REC_NONE;
    }
}

void rval_fini(rval *v) { cl_buf_fini(&v->blob, 1); }

static uint8_t *scratch_sink(void *arg, const store_meta *m)
{
    cl_buf *b = arg;
    b->len = 0;
    if (cl_buf_reserve(b, m->len ? m->len : 1) != CL_OK)
        return NULL;
    b->len = m->len;
    return b->data;
}

int local_read(repl *r, const uint8_t *key, size_t klen, int want, wire_rec *rec)
{
    store_get_opts o = { .raw = 1, .want_value = want };
    store_meta m;
    r->scratch.len = 0;
    memset(rec, 0, sizeof *rec);
    int rc = store_get(r->t, key, klen, &o, scratch_sink, &r->scratch, &m);
    if (rc == CL_ENOTFOUND || ((rc == CL_OK || rc == CL_EINTEGRITY) && m.version == 0))
        return CL_ENOTFOUND; /* an unversioned item is no replica state */
    if (rc != CL_OK && rc != CL_EINTEGRITY)
        return rc;
    rec->version = m.version;
    rec->flags = m.flags;
    rec->exptime = m.exptime;
    rec->kind = m.tombstone ? REC_TOMB : REC_VALUE;
    rec->xbit = (uint8_t)m.xbit;
    if (rc == CL_EINTEGRITY) {
        STAT_INC(r, integrity_failures);
        return rc;
    }
    if (want) {
        rec->blob = r->scratch.data;
        rec->blen = (uint32_t)(m.tombstone && m.len == 0 ? 0 : m.len);
        if (m.len == 0)
            rec->blob = NULL;
    }
    return CL_OK;
}

int scan_rec_append(cl_buf *out, const uint8_t *key, size_t klen, const store_meta *m,
                    store_scan_item *it)
{
    size_t at = out->len;
    uint8_t *p = cl_buf_extend(out, 1 + klen + WIRE_REC_HDR + m->len);
    if (!p)
        return CL_ENOMEM;
    p = wire_put_key(p, key, (uint8_t)klen);
    p = wire_put_u64(p, m->version);
    p = wire_put_u32(p, m->flags);
    p = wire_put_u64(p, (uint64_t)m->exptime);
    p = wire_put_u8(p, m->tombstone ? REC_TOMB : REC_VALUE);
    p = wire_put_u8(p, (uint8_t)m->xbit);
    p = wire_put_u32(p, m->len);
    if (m->len && store_scan_value(it, p) != CL_OK) {
        out->len = at;
        return CL_EINTEGRITY;
    }
    return CL_OK;
}

void rec_to_val(const wire_rec *rec, uint64_t now_ms, repl_val *v)
{
    memset(v, 0, sizeof *v);
    v->version = rec->version;
    v->flags = rec->flags;
    v->exptime = rec->exptime;
    int64_t now_s = (int64_t)(now_ms / 1000);
    v->present = rec->kind == REC_VALUE && (rec->exptime == 0 || rec->exptime > now_s);
    if (!v->present)
        return;
    rvec vec;
    const uint8_t *d;
    size_t dl;
    if (blob_split(rec->blob, rec->blen, rec->xbit, &vec, &d, &dl)) {
        v->data = d;
        v->len = dl;
        if (vec.b[VEC_ORIGIN]) /* re-proposed unchanged: the CAS id of its last change */
            v->version = vec.b[VEC_ORIGIN];
    }
}

/* ---- op table ---------------------------------------------------------------- */

static void active_link(repl *r, op *o)
{
    o->t_prev = NULL;
    o->t_next = r->active;
    if (r->active)
        r->active->t_prev = o;
    r->active = o;
}

static void active_unlink(repl *r, op *o)
{
    if (o->t_prev)
        o->t_prev->t_next = o->t_next;
    else
        r->active = o->t_next;
    if (o->t_next)
        o->t_next->t_prev = o->t_prev;
    o->t_prev = o->t_next = NULL;
}

int op_start_round(repl *r, op *o)
{
    CL_ASSERT(o->slot < NSLOTS);
    o->rid = (++r->rid_seq << SLOT_BITS) | o->slot;
    r->slots[o->slot].rid = o->rid;
    o->sent = o->replied = o->counted = o->acked = o->nacked = o->broken = 0;
    o->at_hi = o->notready = 0;
    o->hi = 0;
    o->lo = UINT64_MAX;
    o->nack_acc = 0;
    o->have_best = 0;
    o->hivec_ok = 0;
    o->local_ok = 0;
    o->rto_us = (uint64_t)r->cfg.retry_ms * 1000;
    op_arm(r, o, r->now_us + o->rto_us);
    return CL_OK;
}

void op_arm(repl *r, op *o, uint64_t at_us)
{
    o->timer_us = at_us;
    if (at_us < r->next_timer_us)
        r->next_timer_us = at_us;
}

static op *op_alloc(size_t tail)
{
    op *o = calloc(1, sizeof *o + tail);
    if (o)
        o->slot = NSLOTS;
    return o;
}

static void op_free(op *o)
{
    rval_fini(&o->best);
    rval_fini(&o->acc);
    if (o->tries) {
        for (unsigned i = 0; i < TRIES_MAX; i++)
            cl_buf_fini(&o->tries[i].data, 1);
        free(o->tries);
    }
    cl_buf_fini(&o->fnbuf, 1);
    free(o);
}

/* A new op of kind on key with `tail` bytes after it. */
static op *op_make(repl *r, int kind, const uint8_t *key, size_t klen, size_t tail)
{
    op *o = op_alloc(tail);
    if (!o)
        return NULL;
    o->kind = (uint8_t)kind;
    o->klen = (uint8_t)klen;
    memcpy(o->key, key, klen);
    o->khash = repl_key_hash(key, klen);
    o->mode = (uint8_t)repl_key_mode(r, key, klen);
    return o;
}

op *op_new_internal(repl *r, int kind, const uint8_t *key, size_t klen)
{
    return op_make(r, kind, key, klen, 0);
}

void op_finish(repl *r, op *o, int rc, const repl_val *val, uint64_t token)
{
    CL_ASSERT(o->phase != PH_DONE);
    if (o->phase == PH_QUEUED)
        strong_unqueue(r, o);
    o->phase = PH_DONE;
    if (rc == CL_ETIMEDOUT)
        STAT_INC(r, timeouts);
    if (o->done) {
        repl_result res = { .rc = rc, .token = token };
        if (val)
            res.val = *val;
        o->done(o->arg, &res);
    }
    if (o->slot < NSLOTS) {
        r->slots[o->slot].rid = 0;
        r->slots[o->slot].o = NULL;
        r->free_slots[r->n_free++] = o->slot;
        active_unlink(r, o);
    }
    if (o->in_ktab)
        strong_key_release(r, o);
    if (o->kind == OPK_LOCK && rc != CL_OK)
        lock_abandoned(r, o);
    op *parent = o->parent;
    op_free(o);
    if (parent)
        lock_child_done(r, parent, rc);
}

void op_begin(repl *r, op *o)
{
    if (r->n_free == 0) {
        op_finish(r, o, CL_EAGAIN, NULL, 0);
        return;
    }
    o->slot = r->free_slots[--r->n_free];
    o->uid = ++r->uid_seq;
    o->eng = r;
    r->slots[o->slot].o = o;
    r->slots[o->slot].rid = 0;
    active_link(r, o);
    o->deadline_us = r->now_us + (uint64_t)r->cfg.op_timeout_ms * 1000;
    if (o->kind == OPK_LOCK) { /* it may wait wait_ms, then needs one more round */
        o->wait_until_us = r->now_us + (uint64_t)o->wait_ms * 1000;
        o->deadline_us += (uint64_t)o->wait_ms * 1000;
    }
    if (o->deadline_us < r->next_timer_us)
        r->next_timer_us = o->deadline_us;
    switch (o->kind) {
    case OPK_GET:
    case OPK_PUT:
    case OPK_RMW:
        if (o->mode == REPL_EVENTUAL)
            ev_begin(r, o);
        else
            strong_begin(r, o);
        break;
    case OPK_LOCK:
    case OPK_UNLOCK:
        lock_begin(r, o);
        break;
    case OPK_FETCH:
        fetch_begin(r, o);
        break;
    default:
        op_finish(r, o, CL_EINVAL, NULL, 0);
    }
}

/* ---- timers ---------------------------------------------------------------------- */

struct due {
    uint32_t slot;
    uint64_t uid;
    int deadline;
};

/* What a strong op that ran out of time reports: CL_ENOQUORUM when too
 * few replicas are reachable and it certainly wrote nothing, else
 * CL_ETIMEDOUT (for a write: the outcome is unknown). */
static int timeout_rc(const repl *r, const op *o)
{
    if (o->mode != REPL_STRONG || repl_reachable(r) >= r->maj || o->n_tries)
        return CL_ETIMEDOUT;
    switch (o->phase) {
    case PH_WRITE:
    case PH_WRITEBACK:
    case PH_ACCEPT:
    case PH_LOCKWAIT:
        return CL_ETIMEDOUT;
    default:
        return CL_ENOQUORUM;
    }
}

static void run_timers(repl *r)
{
    uint64_t now = r->now_us;
    if (now < r->next_timer_us)
        return;
    /* Collect first: handling one op may finish others (a lock and its
     * fetches), so each is looked up again by (slot, rid). */
    struct due *due = r->due;
    size_t due_cap = r->due_cap, n = 0;
    uint64_t next = UINT64_MAX;
    for (op *o = r->active; o; o = o->t_next) {
        int dl = o->deadline_us <= now;
        if (dl || o->timer_us <= now) {
            if (n == due_cap) {
                size_t cap = due_cap ? due_cap * 2 : 256;
                struct due *d = realloc(due, cap * sizeof *d);
                if (!d)
                    break;
                r->due = due = d;
                r->due_cap = due_cap = cap;
            }
            due[n++] = (struct due){ o->slot, o->uid, dl };
        } else {
            if (o->timer_us < next)
                next = o->timer_us;
            if (o->deadline_us < next)
                next = o->deadline_us;
        }
    }
    r->next_timer_us = next;
    for (size_t i = 0; i < n; i++) {
        op *o = r->slots[due[i].slot].o;
        if (!o || o->uid != due[i].uid)
            continue;
        if (due[i].deadline && o->phase != PH_CATCHUP) {
            op_finish(r, o, timeout_rc(r, o), NULL, 0);
            continue;
        }
        if (o->kind == OPK_GET && o->mode == REPL_EVENTUAL) {
            fetch_resend(r, o);
            continue;
        }
        switch (o->kind) {
        case OPK_FETCH:
            fetch_resend(r, o);
            break;
        case OPK_LOCK:
        case OPK_UNLOCK:
            lock_timer(r, o);
            break;
        default:
            strong_timer(r, o);
        }
        if (o == r->slots[due[i].slot].o && o->timer_us < r->next_timer_us)
            r->next_timer_us = o->timer_us;
    }
}

/* ---- the hooks ------------------------------------------------------------------------ */

static void drain_inbox(repl *r)
{
    pthread_mutex_lock(&r->inbox_lock);
    op *o = r->inbox_head;
    r->inbox_head = r->inbox_tail = NULL;
    pthread_mutex_unlock(&r->inbox_lock);
    while (o) {
        op *next = o->next;
        o->next = NULL;
        op_begin(r, o);
        o = next;
    }
}

static void on_reply(repl *r, int from, const wire_reply *rp)
{
    if (rp->for_type == W_SYNC) {
        recover_on_reply(r, from, rp);
        return;
    }
    if (rp->epoch != r->epoch || rp->rid == 0) {
        STAT_INC(r, replayed_dropped);
        return;
    }
    struct slot *s = &r->slots[rp->rid & (NSLOTS - 1)];
    op *o = s->o;
    if (!o || s->rid != rp->rid || (o->replied & (1u << from)) || o->phase == PH_DONE) {
        STAT_INC(r, replayed_dropped);
        return;
    }
    if (o->kind == OPK_GET && o->mode == REPL_EVENTUAL) { /* repairing its copy */
        fetch_on_reply(r, o, from, rp);
        return;
    }
    switch (o->kind) {
    case OPK_FETCH:
        fetch_on_reply(r, o, from, rp);
        break;
    case OPK_UNLOCK:
        if (o->phase == PH_PUSH) {
            lock_push_reply(r, o, from, rp);
            break;
        }
        __attribute__((fallthrough)); /* its RMW */
    default:
        strong_on_reply(r, o, from, rp);
    }
}

static void hook_message(void *engine, int from, uint64_t epoch, const uint8_t *msg, size_t len)
{
    repl *r = engine;
    STAT_INC(r, msgs_in);
    if (from < 1 || from > r->n || from == r->self)
        return;
    if (epoch < r->peer_epoch[from]) {
        STAT_INC(r, replayed_dropped); /* an older incarnation of that node */
        return;
    }
    r->peer_epoch[from] = epoch;
    if (r->attached)
        r->now_us = r->tr.now_us(r->tr.ctx);
    wire_rd m;
    wire_rd_init(&m, msg, len);
    if (wire_u8(&m) != WIRE_VERSION)
        return;
    uint8_t type;
    wire_rd body;
    while (wire_next(&m, &type, &body)) {
        switch (type) {
        case W_REPLY: {
            wire_reply rp;
            if (wire_reply_get(&body, &rp))
                on_reply(r, from, &rp);
            break;
        }
        case W_SYNCED:
            recover_on_synced(r, from, &body);
            break;
        case W_DIGEST:
            ev_on_digest(r, from, &body);
            break;
        case W_DIFF:
            ev_on_diff(r, from, &body);
            break;
        default:
            replica_on_request(r, from, type, &body);
        }
    }
    size_t pending = 0;
    for (int i = 1; i <= r->n; i++)
        pending += r->out[i].len;
    if (pending > FLUSH_EARLY_BYTES)
        flush_out(r);
}

static void hook_tick(void *engine, uint64_t now_us)
{
    repl *r = engine;
    r->now_us = now_us;
    if (__atomic_load_n(&r->inbox_head, __ATOMIC_RELAXED))
        drain_inbox(r);
    run_timers(r);
    ev_tick(r);
    if (!r->ready)
        recover_tick(r);
    flush_out(r);
}

static void hook_wake(void *engine)
{
    repl *r = engine;
    if (r->attached)
        r->now_us = r->tr.now_us(r->tr.ctx);
    drain_inbox(r);
    flush_out(r);
}

static void hook_peer(void *engine, int node, int up)
{
    repl *r = engine;
    if (node < 1 || node > r->n || node == r->self)
        return;
    if (r->attached)
        r->now_us = r->tr.now_us(r->tr.ctx);
    if (up) {
        r->up |= (nodeset)(1u << node);
        /* resend current rounds to it at once rather than at the next time-out */
        for (op *o = r->active; o; o = o->t_next)
            if (o->kind != OPK_FETCH && o->mode == REPL_STRONG)
                strong_resend(r, o, (nodeset)(1u << node));
    } else {
        r->up &= (nodeset)~(1u << node);
        r->out[node].len = 0;
        /* rounds that waited for it look again at their next timer pass
         * (strong_timer): a majority may be out of reach now */
        for (op *o = r->active; o; o = o->t_next)
            if (o->kind != OPK_FETCH && o->mode == REPL_STRONG && o->timer_us > r->now_us &&
                o->phase != PH_BACKOFF && o->phase != PH_LOCKWAIT && o->phase != PH_QUEUED &&
                o->phase != PH_CATCHUP && o->phase != PH_PUSH)
                op_arm(r, o, r->now_us);
    }
    __atomic_store_n(&r->stats.peers_up, __builtin_popcount(r->up), __ATOMIC_RELAXED);
    if (!r->ready)
        recover_tick(r);
    flush_out(r);
}

repl_engine_hooks repl_hooks(repl *r)
{
    repl_engine_hooks h = { r, hook_message, hook_tick, hook_wake, hook_peer };
    return h;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int repl_create(const repl_config *cfg, repl **out)
{
    if (!cfg || !cfg->st || cfg->n < 1 || cfg->n > REPL_MAX_NODES || cfg->self < 1 ||
        cfg->self > cfg->n || cfg->n_ns > 64 || (cfg->n_ns && !cfg->ns))
        return CL_EINVAL;
    for (size_t i = 0; i < cfg->n_ns; i++)
        if (!cfg->ns[i].prefix || strlen(cfg->ns[i].prefix) > WIRE_KEY_MAX ||
            (cfg->ns[i].mode != REPL_STRONG && cfg->ns[i].mode != REPL_EVENTUAL))
            return CL_EINVAL;
    repl *r = calloc(1, sizeof *r);
    if (!r)
        return CL_ENOMEM;
    int rc = CL_ENOMEM;
    r->cfg = *cfg;
    if (!r->cfg.op_timeout_ms)
        r->cfg.op_timeout_ms = DEFAULT_TIMEOUT_MS;
    if (!r->cfg.push_interval_us)
        r->cfg.push_interval_us = DEFAULT_PUSH_US;
    if (!r->cfg.antientropy_ms)
        r->cfg.antientropy_ms = DEFAULT_AE_MS;
    if (!r->cfg.retry_ms)
        r->cfg.retry_ms = DEFAULT_RETRY_MS;
    if (!r->cfg.fence_ms)
        r->cfg.fence_ms = DEFAULT_FENCE_MS;
    pthread_mutex_init(&r->inbox_lock, NULL);
    r->ns = calloc(cfg->n_ns ? cfg->n_ns : 1, sizeof *r->ns);
    if (!r->ns)
        goto fail;
    for (size_t i = 0; i < cfg->n_ns; i++) {
        r->ns[i].mode = cfg->ns[i].mode;
        r->ns[i].prefix = strdup(cfg->ns[i].prefix);
        if (!r->ns[i].prefix)
            goto fail;
    }
    r->cfg.ns = r->ns;
    r->st = cfg->st;
    r->self = cfg->self;
    r->n = cfg->n;
    r->maj = cfg->n / 2 + 1;
    r->epoch = cfg->epoch;
    r->rng = cfg->seed;
    if (!r->rng && getrandom(&r->rng, sizeof r->rng, 0) != (ssize_t)sizeof r->rng)
        r->rng = (uint64_t)time(NULL);
    r->rng |= 1;
    r->slots = calloc(NSLOTS, sizeof *r->slots);
    r->free_slots = malloc(NSLOTS * sizeof *r->free_slots);
    r->promise = calloc((size_t)1 << PROMISE_BITS, sizeof *r->promise);
    if (!r->slots || !r->free_slots || !r->promise)
        goto fail;
    for (uint32_t i = 0; i < NSLOTS; i++)
        r->free_slots[i] = NSLOTS - 1 - i;
    r->n_free = NSLOTS;
    r->next_timer_us = UINT64_MAX;
    rc = store_thread_create(r->st, &r->t);
    if (rc != CL_OK)
        goto fail;
    r->ready = !cfg->recover;
    r->stats.ready = r->ready;
    hlc_next(&r->clock, repl_wall_ms(r));
    *out = r;
    return CL_OK;

fail:
    if (r->ns)
        for (size_t i = 0; i < cfg->n_ns; i++)
            free((char *)r->ns[i].prefix);
    free(r->ns);
    free(r->slots);
    free(r->free_slots);
    free(r->promise);
    pthread_mutex_destroy(&r->inbox_lock);
    free(r);
    return rc;
}

void repl_attach(repl *r, const repl_transport *tr)
{
    r->tr = *tr;
    r->attached = 1;
    r->now_us = tr->now_us(tr->ctx);
    r->ae_due_us = r->now_us + (uint64_t)r->cfg.antientropy_ms * 1000;
}

void repl_destroy(repl *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->inbox_lock);
    r->closed = 1;
    op *in = r->inbox_head;
    r->inbox_head = r->inbox_tail = NULL;
    pthread_mutex_unlock(&r->inbox_lock);
    /* A lock op waiting for its fetches finishes when the last one does. */
    while (r->active) {
        op *o = r->active;
        while (o && o->phase == PH_CATCHUP && o->children)
            o = o->t_next;
        if (!o)
            break; /* cannot happen: the children are active too */
        op_finish(r, o, CL_ECLOSED, NULL, 0);
    }
    while (in) {
        op *next = in->next;
        op_finish(r, in, CL_ECLOSED, NULL, 0);
        in = next;
    }
    for (int i = 0; i <= REPL_MAX_NODES; i++)
        cl_buf_fini(&r->out[i], 1);
    cl_buf_fini(&r->scratch, 1);
    cl_buf_fini(&r->push, 1);
    store_thread_destroy(r->t);
    for (size_t i = 0; i < r->cfg.n_ns; i++)
        free((char *)r->ns[i].prefix);
    free(r->ns);
    free(r->slots);
    free(r->free_slots);
    free(r->promise);
    free(r->due);
    pthread_mutex_destroy(&r->inbox_lock);
    free(r);
}

/* ---- submissions ---------------------------------------------------------------------- */

static int submit(repl *r, op *o)
{
    pthread_mutex_lock(&r->inbox_lock);
    if (r->closed) {
        pthread_mutex_unlock(&r->inbox_lock);
        op_free(o);
        return CL_ECLOSED;
    }
    int was_empty = r->inbox_head == NULL;
    if (r->inbox_tail)
        r->inbox_tail->next = o;
    else
        r->inbox_head = o;
    r->inbox_tail = o;
    int attached = r->attached;
    pthread_mutex_unlock(&r->inbox_lock);
    if (was_empty && attached)
        r->tr.wake(r->tr.ctx);
    return CL_OK;
}

static int key_ok(const uint8_t *key, size_t klen)
{
    return key && klen >= 1 && klen <= WIRE_KEY_MAX;
}

size_t repl_max_value(const repl *r)
{
    size_t m = store_max_value(r->st);
    m = m > WIRE_VEC_MAX ? m - WIRE_VEC_MAX : 0;
    return m < REPL_VALUE_MAX ? m : REPL_VALUE_MAX;
}

static op *op_user(repl *r, int kind, const uint8_t *key, size_t klen, size_t tail,
                   repl_done_fn done, void *arg)
{
    op *o = op_make(r, kind, key, klen, tail);
    if (o) {
        o->done = done;
        o->arg = arg;
    }
    return o;
}

int repl_get(repl *r, const uint8_t *key, size_t klen, repl_done_fn done, void *arg)
{
    if (!key_ok(key, klen))
        return CL_EBADKEY;
    op *o = op_user(r, OPK_GET, key, klen, 0, done, arg);
    return o ? submit(r, o) : CL_ENOMEM;
}

int repl_put(repl *r, const uint8_t *key, size_t klen, const repl_val *v,
             repl_done_fn done, void *arg)
{
    if (!key_ok(key, klen))
        return CL_EBADKEY;
    size_t len = v->present ? v->len : 0;
    if (len > repl_max_value(r))
        return CL_ETOOBIG;
    op *o = op_user(r, OPK_PUT, key, klen, len, done, arg);
    if (!o)
        return CL_ENOMEM;
    o->v_present = v->present != 0;
    o->v_flags = v->flags;
    o->v_exptime = v->exptime;
    o->v_len = len;
    o->v_data = o->tail;
    if (len)
        memcpy(o->tail, v->data, len);
    return submit(r, o);
}

int repl_rmw(repl *r, const uint8_t *key, size_t klen, repl_rmw_fn fn, void *fn_arg,
             repl_done_fn done, void *arg)
{
    if (!key_ok(key, klen))
        return CL_EBADKEY;
    if (!fn)
        return CL_EINVAL;
    op *o = op_user(r, OPK_RMW, key, klen, 0, done, arg);
    if (!o)
        return CL_ENOMEM;
    o->fn = fn;
    o->fn_arg = fn_arg;
    return submit(r, o);
}

/* The lock register's key: LOCK_PREFIX + name. */
static int lock_key(const uint8_t *name, size_t nlen, uint8_t *key, size_t *klen)
{
    if (!name || nlen == 0 || nlen > WIRE_KEY_MAX - LOCK_PREFIX_LEN)
        return CL_EBADKEY;
    memcpy(key, LOCK_PREFIX, LOCK_PREFIX_LEN);
    memcpy(key + LOCK_PREFIX_LEN, name, nlen);
    *klen = nlen + LOCK_PREFIX_LEN;
    return CL_OK;
}

int repl_lock(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
              unsigned lease_ms, unsigned wait_ms, repl_done_fn done, void *arg)
{
    uint8_t key[WIRE_KEY_MAX];
    size_t klen;
    int rc = lock_key(name, nlen, key, &klen);
    if (rc != CL_OK)
        return rc;
    if (!owner || !lease_ms)
        return CL_EINVAL;
    op *o = op_user(r, OPK_LOCK, key, klen, 0, done, arg);
    if (!o)
        return CL_ENOMEM;
    o->owner = owner;
    o->lease_ms = lease_ms;
    o->wait_ms = wait_ms;
    return submit(r, o);
}

int repl_unlock(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                uint64_t token, const repl_wkey *ws, size_t n_ws,
                repl_done_fn done, void *arg)
{
    uint8_t key[WIRE_KEY_MAX];
    size_t klen;
    int rc = lock_key(name, nlen, key, &klen);
    if (rc != CL_OK)
        return rc;
    if (!owner || n_ws > 65536 || (n_ws && !ws))
        return CL_EINVAL;
    for (size_t i = 0; i < n_ws; i++)
        if (!key_ok(ws[i].key, ws[i].klen))
            return CL_EBADKEY;
    op *o = op_user(r, OPK_UNLOCK, key, klen, n_ws * sizeof(struct wkey_own), done, arg);
    if (!o)
        return CL_ENOMEM;
    o->owner = owner;
    o->token = token;
    o->ws = (struct wkey_own *)(void *)o->tail;
    o->n_ws = (uint32_t)n_ws;
    for (size_t i = 0; i < n_ws; i++) {
        o->ws[i].klen = (uint8_t)ws[i].klen;
        memcpy(o->ws[i].key, ws[i].key, ws[i].klen);
        o->ws[i].version = ws[i].version;
    }
    return submit(r, o);
}

/* ---- statistics ------------------------------------------------------------------------- */

void repl_get_stats(repl *r, repl_stats *out)
{
    const uint64_t *src = (const uint64_t *)(const void *)&r->stats;
    uint64_t *dst = (uint64_t *)(void *)out;
    size_t words = offsetof(repl_stats, ready) / sizeof(uint64_t);
    for (size_t i = 0; i < words; i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    out->ready = __atomic_load_n(&r->ready, __ATOMIC_RELAXED);
    out->peers_up = __atomic_load_n(&r->stats.peers_up, __ATOMIC_RELAXED);
    out->self = r->self;
    out->n = r->n;
    out->epoch = r->epoch;
}

/* ---- blocking helpers ---------------------------------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int rc;
    uint8_t *buf;
    size_t cap;
    repl_val val;
    uint64_t token;
};

static void waiter_init(struct waiter *w, uint8_t *buf, size_t cap)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->buf = buf;
    w->cap = cap;
}

static void waiter_done(void *arg, const repl_result *res)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = res->rc;
    w->val = res->val;
    w->val.data = NULL;
    w->token = res->token;
    if (res->rc == CL_OK && res->val.present && w->buf) {
        if (res->val.len <= w->cap)
            memcpy(w->buf, res->val.data, res->val.len);
        else
            w->rc = CL_ETOOBIG; /* val.len says how much is needed */
    }
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int waiter_wait(struct waiter *w, int submit_rc, repl_val *out)
{
    if (submit_rc == CL_OK) {
        pthread_mutex_lock(&w->mu);
        while (!w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
    } else {
        w->rc = submit_rc;
    }
    if (out) {
        *out = w->val;
        out->data = w->val.present && w->rc == CL_OK ? w->buf : NULL;
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    return w->rc;
}

int repl_get_sync(repl *r, const uint8_t *key, size_t klen,
                  uint8_t *buf, size_t cap, repl_val *out)
{
    struct waiter w;
    waiter_init(&w, buf, cap);
    return waiter_wait(&w, repl_get(r, key, klen, waiter_done, &w), out);
}

int repl_put_sync(repl *r, const uint8_t *key, size_t klen, const repl_val *v,
                  uint64_t *version_out)
{
    struct waiter w;
    waiter_init(&w, NULL, 0);
    repl_val res;
    int rc = waiter_wait(&w, repl_put(r, key, klen, v, waiter_done, &w), &res);
    if (rc == CL_OK && version_out)
        *version_out = res.version;
    return rc;
}

int repl_rmw_sync(repl *r, const uint8_t *key, size_t klen, repl_rmw_fn fn, void *fn_arg,
                  uint8_t *buf, size_t cap, repl_val *out)
{
    struct waiter w;
    waiter_init(&w, buf, cap);
    return waiter_wait(&w, repl_rmw(r, key, klen, fn, fn_arg, waiter_done, &w), out);
}

int repl_lock_sync(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                   unsigned lease_ms, unsigned wait_ms, uint64_t *token_out)
{
    struct waiter w;
    waiter_init(&w, NULL, 0);
    int rc = waiter_wait(&w, repl_lock(r, name, nlen, owner, lease_ms, wait_ms, waiter_done, &w),
                         NULL);
    if (rc == CL_OK && token_out)
        *token_out = w.token;
    return rc;
}

int repl_unlock_sync(repl *r, const uint8_t *name, size_t nlen, uint64_t owner,
                     uint64_t token, const repl_wkey *ws, size_t n_ws)
{
    struct waiter w;
    waiter_init(&w, NULL, 0);
    return waiter_wait(&w, repl_unlock(r, name, nlen, owner, token, ws, n_ws, waiter_done, &w),
                       NULL);
}
