/*
 * lock.c - locks with release consistency (repl.h, "LOCKS"), and the
 * fetch of one key from the peers that lock catch-up and eventual-mode
 * repair use.
 *
 * A lock is the strong register LOCK_PREFIX + name; its value is
 *     u64 owner | u64 token | u64 lease_end_ms | u16 n |
 *     n x (u8 klen | key | u64 version)              (the release set)
 * changed only by CASPaxos (strong.c) with the two functions below, so
 * grants are linearizable: at most one owner holds an unexpired lease.
 *
 *   lock:   RMW(acquire) --granted--> CATCHUP: one FETCH child per release-
 *                                     set key this node is behind on --all
 *                                     done--> CL_OK(token)
 *                        --held by another--> LOCKWAIT --poll: read--> RMW again
 *                                                   ^      (held: LOCKWAIT) when free
 *                                                   --wait over--> CL_ETIMEDOUT
 *   unlock: [eventual write set: PUSH it (acknowledged) to a majority]
 *           -> RMW(release: owner and token must match, else CL_ESTALE)
 *
 * A catch-up that cannot finish (the only copies are unreachable) fails
 * the lock with CL_ETIMEDOUT and releases it again, so the caller never
 * proceeds without the previous holder's writes.
 */
#include "repl_int.h"
#include "../common/err.h"
#include "../common/log.h"

#define LOCK_HDR (8 + 8 + 8 + 2)
/* A waiter polls by reading the register (an ABD read raises no promise,
 * so waiters do not compete with the holder's unlock round), and tries
 * the acquire RMW again only when the read finds the lock free or its
 * lease over.  The delay doubles from 1 ms up to 32 ms (plus up to as
 * much again at random). */
#define POLL_MIN_US 1000
#define POLL_MAX_US 32000

struct lockval {
    uint64_t owner, token, lease_end;
    uint16_t n;
    const uint8_t *rs;       /* n entries, encoded */
    size_t rs_len;
};

static int lock_parse(const repl_val *v, struct lockval *lv)
{
    memset(lv, 0, sizeof *lv);
    if (!v->present)
        return 1; /* never locked */
    wire_rd r;
    wire_rd_init(&r, v->data, v->len);
    lv->owner = wire_u64(&r);
    lv->token = wire_u64(&r);
    lv->lease_end = wire_u64(&r);
    const uint8_t *np = wire_bytes(&r, 2);
    if (r.bad)
        return 0;
    lv->n = (uint16_t)(np[0] | np[1] << 8);
    lv->rs = r.p;
    for (unsigned i = 0; i < lv->n; i++) {
        const uint8_t *k;
        uint8_t kl;
        wire_key(&r, &k, &kl);
        (void)wire_u64(&r);
    }
    if (r.bad)
        return 0;
    lv->rs_len = (size_t)(r.p - lv->rs);
    return 1;
}

static uint8_t *lock_hdr_put(uint8_t *p, uint64_t owner, uint64_t token, uint64_t lease_end,
                             uint16_t n)
{
    p = wire_put_u64(p, owner);
    p = wire_put_u64(p, token);
    p = wire_put_u64(p, lease_end);
    *p++ = (uint8_t)n;
    *p++ = (uint8_t)(n >> 8);
    return p;
}

static int acquire_fn(void *arg, const repl_val *cur, repl_val *next)
{
    op *o = arg;
    struct lockval lv;
    if (!lock_parse(cur, &lv))
        memset(&lv, 0, sizeof lv); /* unreadable: treat as free (it is ours to fix) */
    uint64_t now = repl_wall_ms(o->eng);
    int mine = lv.owner == o->owner && lv.lease_end >= now;
    if (lv.owner && lv.lease_end >= now && !mine)
        return CL_EAGAIN;
    uint64_t token = mine ? lv.token : lv.token + 1;
    o->fnbuf.len = 0;
    uint8_t *p = cl_buf_extend(&o->fnbuf, LOCK_HDR + lv.rs_len);
    if (!p)
        return CL_ENOMEM;
    p = lock_hdr_put(p, o->owner, token, now + o->lease_ms, lv.n);
    if (lv.rs_len)
        memcpy(p, lv.rs, lv.rs_len);
    next->present = 1;
    next->flags = 0;
    next->exptime = 0;
    next->data = o->fnbuf.data;
    next->len = o->fnbuf.len;
    return REPL_RMW_WRITE;
}

static int release_fn(void *arg, const repl_val *cur, repl_val *next)
{
    op *o = arg;
    repl *r = o->eng;
    struct lockval lv;
    /* token 0: any token of this owner (lock_abandoned) */
    if (!lock_parse(cur, &lv) || !cur->present || lv.owner != o->owner ||
        (o->token && lv.token != o->token))
        return CL_ESTALE;
    /* new release set: the eventual keys of the write set, then the old
     * entries not among them, at most RS_MAX */
    o->fnbuf.len = 0;
    uint8_t *p = cl_buf_extend(&o->fnbuf, LOCK_HDR);
    if (!p)
        return CL_ENOMEM;
    unsigned n = 0;
    for (uint32_t i = 0; i < o->n_ws && n < RS_MAX; i++) {
        struct wkey_own *w = &o->ws[i];
        if (repl_key_mode(r, w->key, w->klen) != REPL_EVENTUAL || !w->version)
            continue;
        uint8_t *q = cl_buf_extend(&o->fnbuf, 1 + w->klen + 8);
        if (!q)
            return CL_ENOMEM;
        q = wire_put_key(q, w->key, w->klen);
        wire_put_u64(q, w->version);
        n++;
    }
    wire_rd rd;
    wire_rd_init(&rd, lv.rs, lv.rs_len);
    for (unsigned i = 0; i < lv.n && n < RS_MAX; i++) {
        const uint8_t *k;
        uint8_t kl;
        wire_key(&rd, &k, &kl);
        uint64_t ver = wire_u64(&rd);
        if (rd.bad)
            break;
        int dup = 0;
        for (uint32_t j = 0; j < o->n_ws && !dup; j++)
            dup = o->ws[j].klen == kl && memcmp(o->ws[j].key, k, kl) == 0;
        if (dup)
            continue;
        uint8_t *q = cl_buf_extend(&o->fnbuf, 1 + kl + 8);
        if (!q)
            return CL_ENOMEM;
        q = wire_put_key(q, k, kl);
        wire_put_u64(q, ver);
        n++;
    }
    lock_hdr_put(o->fnbuf.data, 0, lv.token, 0, (uint16_t)n);
    next->present = 1;
    next->flags = 0;
    next->exptime = 0;
    next->data = o->fnbuf.data;
    next->len = o->fnbuf.len;
    return REPL_RMW_WRITE;
}

/* ---- fetch: a version of one key from the peers ---------------------------------- */

static int local_has(repl *r, const op *o)
{
    wire_rec cur;
    return local_read(r, o->key, o->klen, 0, &cur) == CL_OK && cur.version >= o->need_version;
}

static void fetch_send(repl *r, op *o)
{
    op_start_round(r, o);
    o->phase = PH_QUERY;
    o->known_ts = 0;
    for (int i = 1; i <= r->n; i++) {
        if (i == r->self || !(r->up & (1u << i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), W_QUERY, 8 + 8 + 1 + 8 + 1 + o->klen);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, o->rid);
        p = wire_put_u8(p, QF_VALUE | QF_ANY);
        p = wire_put_u64(p, 0);
        wire_put_key(p, o->key, o->klen);
    }
}

/* The fetch is satisfied: a FETCH completes; an eventual GET answers
 * from the (repaired) local copy. */
static void fetch_done(repl *r, op *o)
{
    if (o->kind == OPK_FETCH) {
        op_finish(r, o, CL_OK, NULL, 0);
        return;
    }
    wire_rec cur;
    int rc = local_read(r, o->key, o->klen, 1, &cur);
    if (rc != CL_OK && rc != CL_ENOTFOUND) {
        op_finish(r, o, rc, NULL, 0);
        return;
    }
    repl_val v;
    rec_to_val(&cur, repl_wall_ms(r), &v);
    op_finish(r, o, v.present ? CL_OK : CL_ENOTFOUND, &v, 0);
}

void fetch_begin(repl *r, op *o)
{
    if (!o->local_broken && local_has(r, o)) {
        fetch_done(r, o);
        return;
    }
    fetch_send(r, o);
}

void fetch_resend(repl *r, op *o)
{
    if (!o->local_broken && local_has(r, o)) { /* arrived meanwhile (a push) */
        fetch_done(r, o);
        return;
    }
    uint64_t rto = o->rto_us * 2 > 1000000 ? 1000000 : o->rto_us * 2;
    fetch_send(r, o);
    o->rto_us = rto;
    op_arm(r, o, r->now_us + rto);
}

void fetch_on_reply(repl *r, op *o, int from, const wire_reply *rp)
{
    if (rp->for_type != W_QUERY || o->phase != PH_QUERY)
        return;
    o->replied |= (nodeset)(1u << from);
    if (rp->status != WS_OK || !rp->has_rec || rp->rec.version < o->need_version ||
        rp->rec.kind == REC_NONE)
        return;
    if (o->local_broken) { /* repair: the same version is rewritten */
        wire_rec cur;
        int lrc = local_read(r, o->key, o->klen, 0, &cur);
        uint64_t old = lrc == CL_OK || lrc == CL_EINTEGRITY ? cur.version : 0;
        if (rp->rec.version < old || replica_store(r, o->key, o->klen, &rp->rec, 0) != CL_OK)
            return;
        if (old != rp->rec.version)
            ev_note_write(r, o->key, o->klen, old, rp->rec.version);
        STAT_INC(r, repairs);
    } else {
        ev_apply(r, o->key, o->klen, &rp->rec);
        if (!local_has(r, o))
            return;
        STAT_INC(r, catchup_fetched);
    }
    fetch_done(r, o);
}

/* ---- lock and unlock ---------------------------------------------------------------- */

static void lock_rmw_start(repl *r, op *o)
{
    o->phase = PH_NEW;
    o->polling = 0;
    o->read_only = 0;
    o->first_ts = 0;
    o->n_tries = 0;
    o->fn = o->kind == OPK_LOCK ? acquire_fn : release_fn;
    o->fn_arg = o;
    strong_rmw_begin(r, o);
}

/* Eventual unlock: the write set's current values, acknowledged by a
 * majority before the release is recorded. */
static void unlock_push(repl *r, op *o)
{
    cl_buf body;
    cl_buf_init(&body);
    uint32_t n = 0;
    for (uint32_t i = 0; i < o->n_ws; i++) {
        struct wkey_own *w = &o->ws[i];
        wire_rec cur;
        if (repl_key_mode(r, w->key, w->klen) != REPL_EVENTUAL ||
            local_read(r, w->key, w->klen, 1, &cur) != CL_OK)
            continue;
        uint8_t *p = cl_buf_extend(&body, 1 + w->klen + wire_rec_size(&cur));
        if (!p)
            break;
        p = wire_put_key(p, w->key, w->klen);
        wire_put_rec(p, &cur);
        n++;
    }
    for (int i = 1; i <= r->n; i++) {
        if (i == r->self || !(r->up & (1u << i)) || (o->acked & (1u << i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), W_PUSH, 8 + 8 + 1 + 4 + body.len);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, o->rid);
        p = wire_put_u8(p, PF_ACK);
        p = wire_put_u32(p, n);
        if (body.len)
            memcpy(p, body.data, body.len);
    }
    cl_buf_fini(&body, 1);
}

void lock_begin(repl *r, op *o)
{
    if (repl_reachable(r) < r->maj) {
        op_finish(r, o, CL_ENOQUORUM, NULL, 0);
        return;
    }
    if (o->kind == OPK_UNLOCK && r->maj > 1) {
        int eventual = 0;
        for (uint32_t i = 0; i < o->n_ws && !eventual; i++)
            eventual = repl_key_mode(r, o->ws[i].key, o->ws[i].klen) == REPL_EVENTUAL;
        if (eventual) {
            op_start_round(r, o);
            o->phase = PH_PUSH;
            unlock_push(r, o);
            return;
        }
    }
    lock_rmw_start(r, o);
}

void lock_push_reply(repl *r, op *o, int from, const wire_reply *rp)
{
    if (rp->for_type != W_PUSH)
        return;
    o->replied |= (nodeset)(1u << from);
    if (rp->status != WS_OK)
        return;
    o->acked |= (nodeset)(1u << from);
    if (__builtin_popcount(o->acked) + 1 >= r->maj)
        lock_rmw_start(r, o);
}

static void lock_release_internal(repl *r, const op *o)
{
    op *u = op_new_internal(r, OPK_UNLOCK, o->key, o->klen);
    if (!u)
        return; /* the lease will run out */
    u->owner = o->owner;
    u->token = o->token;
    op_begin(r, u);
}

void lock_abandoned(repl *r, const op *o)
{
    /* An acquire that wrote and then failed (time-out, no quorum) may have
     * been granted after all, under a token nobody learned: release
     * whatever this owner holds, or its lease would block every other
     * owner until it ran out.  Owners are unique per holder (the
     * runtime's: per invocation), so this can only free our own grant. */
    if (o->kind != OPK_LOCK || o->n_tries == 0 || r->closed)
        return;
    op *u = op_new_internal(r, OPK_UNLOCK, o->key, o->klen);
    if (!u)
        return; /* the lease will run out */
    u->owner = o->owner;
    u->token = 0;
    op_begin(r, u);
}

void lock_rmw_done(repl *r, op *o, int rc, const repl_val *val)
{
    if (o->kind == OPK_UNLOCK) {
        if (rc == CL_OK)
            STAT_INC(r, lock_releases);
        op_finish(r, o, rc, NULL, 0);
        return;
    }
    struct lockval lv;
    if (o->polling) { /* a read of the register while waiting */
        o->polling = 0;
        o->read_only = 0;
        uint64_t now = repl_wall_ms(r);
        int free_now = rc == CL_ENOTFOUND;
        if (rc == CL_OK) /* unreadable counts as free: acquire_fn repairs it */
            free_now = !lock_parse(val, &lv) || !lv.owner || lv.lease_end < now ||
                       lv.owner == o->owner;
        if (free_now) {
            lock_rmw_start(r, o);
            return;
        }
        rc = CL_EAGAIN; /* held, or the read failed: wait and read again */
    }
    if (rc == CL_EAGAIN) {
        if (r->now_us >= o->wait_until_us) {
            op_finish(r, o, CL_ETIMEDOUT, NULL, 0);
            return;
        }
        STAT_INC(r, lock_waits);
        o->phase = PH_LOCKWAIT;
        uint64_t delay = o->polls < 5 ? (uint64_t)POLL_MIN_US << o->polls : POLL_MAX_US;
        if (delay > POLL_MAX_US)
            delay = POLL_MAX_US;
        o->polls++;
        op_arm(r, o, r->now_us + delay + repl_rand(r) % delay);
        return;
    }
    if (rc != CL_OK || !lock_parse(val, &lv)) {
        op_finish(r, o, rc != CL_OK ? rc : CL_EPROTO, NULL, 0);
        return;
    }
    STAT_INC(r, lock_grants);
    o->token = lv.token;
    /* catch up with the release set */
    wire_rd rd;
    wire_rd_init(&rd, lv.rs, lv.rs_len);
    o->children = 1; /* held by this loop: a fetch may finish at once */
    o->child_rc = CL_OK;
    o->phase = PH_CATCHUP;
    for (unsigned i = 0; i < lv.n; i++) {
        const uint8_t *k;
        uint8_t kl;
        wire_key(&rd, &k, &kl);
        uint64_t ver = wire_u64(&rd);
        if (rd.bad)
            break;
        if (repl_key_mode(r, k, kl) != REPL_EVENTUAL)
            continue;
        wire_rec cur;
        if (local_read(r, k, kl, 0, &cur) == CL_OK && cur.version >= ver)
            continue;
        op *f = op_new_internal(r, OPK_FETCH, k, kl);
        if (!f) {
            o->child_rc = CL_ENOMEM;
            break;
        }
        f->need_version = ver;
        f->parent = o;
        o->children++;
        op_begin(r, f);
    }
    lock_child_done(r, o, CL_OK); /* the loop's own hold */
}

void lock_child_done(repl *r, op *parent, int rc)
{
    CL_ASSERT(parent->children > 0);
    parent->children--;
    if (rc != CL_OK)
        parent->child_rc = rc;
    if (parent->children || parent->phase != PH_CATCHUP)
        return;
    if (parent->child_rc != CL_OK) {
        if (!r->closed)
            lock_release_internal(r, parent);
        op_finish(r, parent, parent->child_rc == CL_ECLOSED ? CL_ECLOSED : CL_ETIMEDOUT, NULL, 0);
        return;
    }
    op_finish(r, parent, CL_OK, NULL, parent->token);
}

void lock_timer(repl *r, op *o)
{
    switch (o->phase) {
    case PH_LOCKWAIT:
        if (r->now_us >= o->wait_until_us) {
            op_finish(r, o, CL_ETIMEDOUT, NULL, 0);
            return;
        }
        strong_poll(r, o);
        break;
    case PH_PUSH:
        o->rto_us = o->rto_us * 2 > 1000000 ? 1000000 : o->rto_us * 2;
        unlock_push(r, o);
        op_arm(r, o, r->now_us + o->rto_us);
        break;
    case PH_CATCHUP:
        op_arm(r, o, o->deadline_us);
        break;
    default:
        strong_timer(r, o);
    }
}
