/*
 * strong.c - the proposer of STRONG mode (repl.h): ABD reads and blind
 * writes, CASPaxos read-modify-writes, on the same registers.
 *
 * State machines (phases of struct op; every arrow starts a new round,
 * i.e. a new request id, so replies of older rounds are dropped):
 *
 *   get:  QUERY --all agree--> done
 *               --differ or a copy broken--> WRITEBACK --majority ACK--> done
 *                                                      --NACK majority--> as an rmw that
 *                                                        keeps (re-proposes) the value
 *               --own copy changed or broken--> BACKOFF -> QUERY (values from peers)
 *   put:  WQUERY --majority--> WRITE --majority ACK--> done
 *                                    --all NACK, none holds it--> BACKOFF -> WQUERY
 *                                    --else--> CL_ETIMEDOUT (outcome unknown)
 *   rmw:  [QUEUED] -> PREPARE --majority PROMISE--> f(newest) -> ACCEPT --majority ACK--> done
 *                                                  (keep, promises agree, never wrote -> done)
 *                                                  (history clock names an earlier attempt:
 *                                                   its result, after ACCEPT unless clean)
 *                            --NACK majority--> BACKOFF -> PREPARE (larger ballot)
 *                                      ACCEPT --NACK majority--> BACKOFF -> PREPARE
 *
 * The local replica takes part in every round without a message (it is
 * applied first), unless it is RECOVERING.  A round's request goes to
 * every reachable peer; it is retransmitted (same id) to those that have
 * not answered after rto, doubling to 1 s, and to a peer the moment it
 * comes back.  A round that can no longer reach a majority (replicas
 * that went away or answer NOT READY, NACKs) starts again after a backoff
 * instead of waiting for its deadline; an RMW may, a blind write may not
 * (it waits: its outcome would be unknown).  The operation fails at its
 * deadline (CL_ETIMEDOUT, or CL_ENOQUORUM when too few replicas are
 * reachable).
 *
 * Replies counted per round: `counted` (votes), `at_hi` (replicas known
 * to hold the newest version hi), `broken` (copies that failed their
 * integrity check), `acked`/`nacked`.  The value at hi is the local copy
 * (read at completion, version re-checked) or `best`, copied from the
 * reply that carried it; peers send values only when their version
 * differs from the proposer's, so agreeing replicas cost no value bytes.
 *
 * History clock (repl.h): an RMW's value gets vec[self] = its ballot; a
 * retry that finds vec[self] >= its first ballot completes with that
 * earlier attempt's result.  One write per key per node at a time: RMWs
 * queue on the key table (ktab) behind the one in flight.
 */
#include "repl_int.h"
#include "../common/err.h"
#include "../common/log.h"

#include <stdlib.h>
#include <string.h>

#define RTO_MAX_US 1000000
#define BACKOFF_MAX_MS 32

static int count(nodeset s) { return __builtin_popcount(s); }
static nodeset bit(int node) { return (nodeset)(1u << node); }
static nodeset peers_all(const repl *r) { return (nodeset)(((1u << (r->n + 1)) - 2) & ~bit(r->self)); }

static void get_round(repl *r, op *o);
static void put_query(repl *r, op *o);
static void rmw_attempt(repl *r, op *o);
static void check(repl *r, op *o);

/* ---- the key table: one write per key per node ------------------------------ */

static op **ktab_head(repl *r, uint64_t h) { return &r->ktab[h & ((1u << KTAB_BITS) - 1)]; }

static op *ktab_find(repl *r, const op *o)
{
    for (op *k = *ktab_head(r, o->khash); k; k = k->k_next)
        if (k->khash == o->khash && k->klen == o->klen && memcmp(k->key, o->key, o->klen) == 0)
            return k;
    return NULL;
}

static void ktab_add(repl *r, op *o)
{
    op **h = ktab_head(r, o->khash);
    o->k_next = *h;
    *h = o;
    o->in_ktab = 1;
}

void strong_key_release(repl *r, op *o)
{
    op **pp = ktab_head(r, o->khash);
    while (*pp && *pp != o)
        pp = &(*pp)->k_next;
    if (*pp)
        *pp = o->k_next;
    o->in_ktab = 0;
    o->k_next = NULL;
    op *w = o->k_wait;
    o->k_wait = o->k_wait_tail = NULL;
    if (!w)
        return;
    /* the first waiter takes the key and inherits the rest of the queue */
    w->k_wait = w->next;
    w->k_wait_tail = w->next ? o->k_wait_tail : NULL;
    if (w->next) {
        op *t = w->next;
        while (t->next)
            t = t->next;
        w->k_wait_tail = t;
    }
    w->next = NULL;
    ktab_add(r, w);
    if (r->closed) {
        op_finish(r, w, CL_ECLOSED, NULL, 0);
        return;
    }
    w->phase = PH_NEW;
    rmw_attempt(r, w);
}

void strong_unqueue(repl *r, op *o)
{
    op *k = ktab_find(r, o);
    if (!k)
        return;
    op **pp = &k->k_wait;
    op *prev = NULL;
    while (*pp && *pp != o) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = o->next;
    if (k->k_wait_tail == o)
        k->k_wait_tail = prev;
    o->next = NULL;
}

/* ---- sending ----------------------------------------------------------------- */

/* The peers a round's request goes to now: reachable, not answered. */
static nodeset targets(const repl *r, const op *o, nodeset to)
{
    return (nodeset)(to & r->up & ~o->replied & peers_all(r));
}

static void send_query(repl *r, op *o, nodeset to, uint8_t flags)
{
    for (int i = 1; i <= r->n; i++) {
        if (!(to & bit(i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), W_QUERY, 8 + 8 + 1 + 8 + 1 + o->klen);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, o->rid);
        p = wire_put_u8(p, flags);
        p = wire_put_u64(p, o->known_ts);
        wire_put_key(p, o->key, o->klen);
        o->sent |= bit(i);
    }
}

static wire_rec acc_rec(const op *o)
{
    wire_rec rec = { o->acc.version, o->acc.flags, o->acc.exptime, o->acc.kind, o->acc.xbit,
                     o->acc.blob.data, (uint32_t)o->acc.blob.len };
    return rec;
}

static void send_write(repl *r, op *o, nodeset to, uint8_t type, uint8_t flags)
{
    wire_rec rec = acc_rec(o);
    size_t len = 8 + 8 + (type == W_WRITE ? 1 : 0) + 1 + o->klen + wire_rec_size(&rec);
    for (int i = 1; i <= r->n; i++) {
        if (!(to & bit(i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), type, len);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, o->rid);
        if (type == W_WRITE)
            p = wire_put_u8(p, flags);
        p = wire_put_key(p, o->key, o->klen);
        wire_put_rec(p, &rec);
        o->sent |= bit(i);
    }
}

static void send_prepare(repl *r, op *o, nodeset to)
{
    for (int i = 1; i <= r->n; i++) {
        if (!(to & bit(i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), W_PREPARE, 8 + 8 + 8 + 8 + 1 + o->klen);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, o->rid);
        p = wire_put_u64(p, o->round_ts);
        p = wire_put_u64(p, o->known_ts);
        wire_put_key(p, o->key, o->klen);
        o->sent |= bit(i);
    }
}

void strong_resend(repl *r, op *o, nodeset to)
{
    to = targets(r, o, to);
    if (!to)
        return;
    switch (o->phase) {
    case PH_QUERY:
        send_query(r, o, to, QF_VALUE);
        break;
    case PH_WQUERY:
        send_query(r, o, to, QF_VEC);
        break;
    case PH_WRITEBACK:
        send_write(r, o, (nodeset)(to & ~o->acked), W_WRITE, WF_REPAIR);
        break;
    case PH_WRITE:
        send_write(r, o, to, W_WRITE, 0);
        break;
    case PH_PREPARE:
        send_prepare(r, o, to);
        break;
    case PH_ACCEPT:
        send_write(r, o, to, W_ACCEPT, 0);
        break;
    default:
        break;
    }
}

/* ---- replies and the round state ------------------------------------------------ */

/* Replicas that may still answer this round: reachable peers that have
 * not, and the local replica if it votes and has not. */
static nodeset pending(const repl *r, const op *o)
{
    nodeset p = (nodeset)(r->up & peers_all(r) & ~o->replied);
    if (r->ready && !(o->replied & bit(r->self)))
        p |= bit(r->self);
    return p;
}

/* Notes a version reported by a vote (QUERY / PREPARE rounds). */
static void note_version(op *o, int node, uint64_t ts, int broken)
{
    int first = o->counted == 0;
    o->counted |= bit(node);
    if (broken)
        o->broken |= bit(node);
    if (ts > o->seen)
        o->seen = ts;
    if (ts < o->lo)
        o->lo = ts;
    if (first || ts > o->hi) {
        if (o->have_best && o->best.version != ts)
            o->have_best = 0;
        o->hivec_ok = 0;
        o->hi = ts;
        o->at_hi = broken ? 0 : bit(node);
    } else if (ts == o->hi && !broken) {
        o->at_hi |= bit(node);
    }
}

/* Every replica answered and none has a good copy at hi: the value is
 * lost (every copy failed its integrity check). */
static int hi_lost(const repl *r, const op *o)
{
    nodeset known = o->replied;
    if (!r->ready)
        known |= bit(r->self);
    return count(known) == r->n;
}

/* Where the value at hi can be read: 1 best, 2 the local copy, 3 none
 * needed (hi = 0: the key was never written), 0 not available yet. */
static int hi_source(const repl *r, const op *o)
{
    if (o->hi == 0)
        return 3;
    if (o->have_best && o->best.version == o->hi)
        return 1;
    if (o->local_ok && o->known_ts == o->hi && !(o->broken & bit(r->self)))
        return 2;
    return 0;
}

/* The value at hi into o->best (reads the local copy if that is where it
 * is).  0 if the local copy changed or failed its check meanwhile. */
static int hi_fetch(repl *r, op *o)
{
    int src = hi_source(r, o);
    if (src == 1)
        return 1;
    if (src == 3) {
        o->best.version = 0;
        o->best.kind = REC_NONE;
        o->best.xbit = 0;
        o->best.flags = 0;
        o->best.exptime = 0;
        o->best.blob.len = 0;
        o->have_best = 1;
        return 1;
    }
    wire_rec cur;
    int rc = local_read(r, o->key, o->klen, 1, &cur);
    if (rc == CL_EINTEGRITY) {
        o->broken |= bit(r->self);
        o->at_hi &= (nodeset)~bit(r->self);
        return 0;
    }
    if (rc != CL_OK || cur.version != o->hi)
        return 0;
    rval_set(&o->best, &cur);
    o->have_best = o->best.kind != REC_NONE;
    return o->have_best;
}

static void backoff(repl *r, op *o)
{
    o->attempt++;
    unsigned span = o->attempt < 6 ? 1u << o->attempt : BACKOFF_MAX_MS;
    if (span > BACKOFF_MAX_MS)
        span = BACKOFF_MAX_MS;
    uint64_t us = 500 + repl_rand(r) % ((uint64_t)span * 1000);
    o->phase = PH_BACKOFF; /* late replies of the old round are dropped */
    op_arm(r, o, r->now_us + us);
}

static void restart(repl *r, op *o)
{
    if (o->polling && !o->read_only) {
        get_round(r, o);
        return;
    }
    switch (o->kind) {
    case OPK_GET:
        get_round(r, o);
        break;
    case OPK_PUT:
        put_query(r, o);
        break;
    default:
        rmw_attempt(r, o);
    }
}

void strong_timer(repl *r, op *o)
{
    switch (o->phase) {
    case PH_BACKOFF:
        restart(r, o);
        break;
    case PH_QUEUED:
    case PH_NEW:
        op_arm(r, o, o->deadline_us);
        break;
    default:
        o->rto_us = o->rto_us * 2 > RTO_MAX_US ? RTO_MAX_US : o->rto_us * 2;
        strong_resend(r, o, peers_all(r));
        op_arm(r, o, r->now_us + o->rto_us);
        check(r, o); /* a peer it waits for may be gone */
    }
}

/* ---- completion ------------------------------------------------------------------ */

static void complete_rec(repl *r, op *o, int rc, const wire_rec *rec)
{
    repl_val v;
    rec_to_val(rec, repl_wall_ms(r), &v);
    if ((o->kind == OPK_GET || o->read_only) && rc == CL_OK && !v.present)
        rc = CL_ENOTFOUND;
    if (o->kind == OPK_LOCK || o->kind == OPK_UNLOCK) {
        if (o->in_ktab)
            strong_key_release(r, o);
        lock_rmw_done(r, o, rc, &v);
        return;
    }
    op_finish(r, o, rc, &v, 0);
}

static wire_rec rval_rec(const rval *v)
{
    wire_rec rec = { v->version, v->flags, v->exptime, v->kind, v->xbit, v->blob.data,
                     (uint32_t)v->blob.len };
    return rec;
}

/* An RMW attempt's recorded result (the value after the op). */
static void complete_attempt(repl *r, op *o, const struct attempt *a)
{
    wire_rec rec = { a->ballot, a->flags, a->exptime, a->present ? REC_VALUE : REC_TOMB, 0,
                     a->data.data, (uint32_t)a->data.len };
    if (a->rc != CL_OK) {
        repl_val v = { 0 };
        if (o->kind == OPK_LOCK || o->kind == OPK_UNLOCK) {
            if (o->in_ktab)
                strong_key_release(r, o);
            lock_rmw_done(r, o, a->rc, &v);
        } else {
            op_finish(r, o, a->rc, &v, 0);
        }
        return;
    }
    complete_rec(r, o, CL_OK, &rec);
}

/* ---- get (ABD read) ------------------------------------------------------------- */

static void get_round(repl *r, op *o)
{
    op_start_round(r, o);
    o->phase = PH_QUERY;
    o->known_ts = UINT64_MAX; /* peers send their values unless we know ours */
    if (r->ready) {
        wire_rec cur;
        int rc = local_read(r, o->key, o->klen, 0, &cur);
        if (rc == CL_OK || rc == CL_ENOTFOUND) {
            o->replied |= bit(r->self);
            if (o->local_broken) { /* a vote with a version, but no value */
                note_version(o, r->self, cur.version, 1);
            } else {
                o->known_ts = cur.version;
                o->local_ok = 1;
                note_version(o, r->self, cur.version, 0);
            }
        }
    }
    send_query(r, o, targets(r, o, peers_all(r)), QF_VALUE);
    check(r, o);
}

static void writeback(repl *r, op *o)
{
    /* o->best holds the value at hi; replicas known to hold hi count as
     * done already (ABD), the others are written, broken copies repaired */
    nodeset holders = (nodeset)(o->at_hi & ~o->broken);
    nodeset broken = o->broken;
    uint64_t hi = o->hi;
    rval tmp = o->acc;
    o->acc = o->best;
    o->best = tmp;
    o->have_best = 0;
    op_start_round(r, o);
    o->phase = PH_WRITEBACK;
    o->round_ts = hi;
    o->acked = holders;
    o->replied = holders;
    o->broken = broken;
    STAT_INC(r, writebacks);
    if (r->ready && !(holders & bit(r->self))) {
        struct rr rr;
        wire_rec rec = acc_rec(o);
        replica_write(r, o->key, o->klen, &rec, (broken & bit(r->self)) != 0, &rr);
        o->replied |= bit(r->self);
        if (rr.status == WS_OK)
            o->acked |= bit(r->self);
        else
            o->nacked |= bit(r->self);
        if (rr.promise > o->seen)
            o->seen = rr.promise;
    }
    send_write(r, o, targets(r, o, peers_all(r)), W_WRITE, WF_REPAIR);
    check(r, o);
}

static void check_get(repl *r, op *o)
{
    if (o->phase == PH_QUERY) {
        if (count(o->counted) < r->maj) {
            if (count(o->counted) + count(pending(r, o)) < r->maj)
                backoff(r, o); /* too few can still answer: ask again later */
            return;
        }
        if (!hi_source(r, o)) {
            if (hi_lost(r, o))
                op_finish(r, o, CL_EINTEGRITY, NULL, 0);
            return; /* wait for a replica that has it */
        }
        int agree = o->lo == o->hi && !o->broken && count(o->at_hi) == count(o->counted);
        if (!hi_fetch(r, o)) {
            /* the local copy changed under us or failed its check: again,
             * asking the peers for their values this time */
            if (o->broken & bit(r->self))
                o->local_broken = 1;
            backoff(r, o);
            return;
        }
        if (agree) {
            STAT_INC(r, gets_one_round);
            wire_rec rec = rval_rec(&o->best);
            complete_rec(r, o, CL_OK, &rec);
            return;
        }
        if (o->hi == 0) { /* nobody has it, and a broken copy would have a version */
            wire_rec none = { 0 };
            complete_rec(r, o, CL_OK, &none);
            return;
        }
        writeback(r, o);
        return;
    }
    /* WRITEBACK */
    if (count(o->acked) >= r->maj) {
        if (o->broken & o->acked)
            STAT_ADD(r, repairs, (uint64_t)count(o->broken & o->acked));
        wire_rec rec = acc_rec(o);
        complete_rec(r, o, CL_OK, &rec);
        return;
    }
    /* ACKs so far and replicas that may still answer */
    if (count(o->acked) + count(pending(r, o)) < r->maj) {
        /* A promise above hi refuses the write-back: an RMW in progress,
         * a promise slot shared with a busier key, or the recovery fence
         * of a restarted replica (a value older than the fence cannot be
         * written back to it).  Finish the read as a CASPaxos round
         * instead (fn NULL: keep), which can always go above a promise;
         * the value gets a new version and keeps its CAS id. */
        if (o->kind == OPK_GET)
            o->kind = OPK_RMW;
        o->fn = NULL;
        o->read_only = 1;
        rmw_attempt(r, o);
    }
}

/* ---- put (ABD write) ------------------------------------------------------------- */

static void put_query(repl *r, op *o)
{
    op_start_round(r, o);
    o->phase = PH_WQUERY;
    o->known_ts = 0;
    if (r->ready) {
        wire_rec cur;
        int rc = local_read(r, o->key, o->klen, 0, &cur);
        if (rc == CL_OK && cur.xbit) {
            rc = local_read(r, o->key, o->klen, 1, &cur);
            if (rc == CL_OK) {
                const uint8_t *d;
                size_t dl;
                o->hivec_ok = blob_split(cur.blob, cur.blen, 1, &o->hivec, &d, &dl);
            }
        }
        if (rc == CL_OK || rc == CL_ENOTFOUND || rc == CL_EINTEGRITY) {
            uint64_t p = promise_of(r, o->khash);
            o->replied |= bit(r->self);
            int vec_ok = o->hivec_ok;
            note_version(o, r->self, cur.version, rc == CL_EINTEGRITY);
            o->hivec_ok = vec_ok;
            if (p > o->seen)
                o->seen = p;
        }
    }
    send_query(r, o, targets(r, o, peers_all(r)), QF_VEC);
    check(r, o);
}

/* Builds the blob vec | data (or just data) into v. */
static int blob_build(rval *v, const rvec *vec, const uint8_t *data, size_t len)
{
    v->blob.len = 0;
    int has = 0;
    for (int i = 1; i < VEC_SLOTS; i++)
        has |= vec->b[i] != 0;
    v->xbit = (uint8_t)has;
    size_t hl = has ? wire_vec_size(vec) : 0;
    uint8_t *p = cl_buf_extend(&v->blob, hl + len + 1);
    if (!p)
        return CL_ENOMEM;
    v->blob.len = hl + len;
    if (has)
        p = wire_put_vec(p, vec);
    if (len)
        memcpy(p, data, len);
    return CL_OK;
}

static void put_write(repl *r, op *o)
{
    if (!r->ready && r->rec_phase < 2) {
        /* Recovering, before its fence is known: a version made now could
         * fall below the fence its peers are about to take, and they would
         * refuse it.  Once the fence is set, this clock is above it. */
        backoff(r, o);
        return;
    }
    uint64_t floor = o->seen > o->hi ? o->seen : o->hi;
    rvec vec;
    memset(&vec, 0, sizeof vec);
    if (o->hivec_ok)
        vec = o->hivec;
    o->acc.version = repl_new_version(r, floor);
    /* A new value: its own CAS id; and a blind write, so a retrying RMW
     * can tell it may have hidden an attempt (a value without a vector
     * is a blind write by itself: see blind_of). */
    vec.b[VEC_ORIGIN] = 0;
    vec.b[VEC_BLIND] = 0;
    for (int i = 1; i <= REPL_MAX_NODES; i++)
        if (vec.b[i])
            vec.b[VEC_BLIND] = o->acc.version;
    o->acc.flags = o->v_flags;
    o->acc.exptime = o->v_exptime;
    o->acc.kind = o->v_present ? REC_VALUE : REC_TOMB;
    if (blob_build(&o->acc, &vec, o->v_data, o->v_len) != CL_OK) {
        op_finish(r, o, CL_ENOMEM, NULL, 0);
        return;
    }
    op_start_round(r, o);
    o->phase = PH_WRITE;
    o->round_ts = o->acc.version;
    if (r->ready) {
        struct rr rr;
        wire_rec rec = acc_rec(o);
        replica_write(r, o->key, o->klen, &rec, 0, &rr);
        o->replied |= bit(r->self);
        if (rr.status == WS_OK) {
            o->acked |= bit(r->self);
        } else {
            o->nacked |= bit(r->self);
            if (rr.promise > o->seen)
                o->seen = rr.promise;
            if (rr.ts > o->nack_acc)
                o->nack_acc = rr.ts;
        }
    }
    send_write(r, o, targets(r, o, peers_all(r)), W_WRITE, 0);
    check(r, o);
}

static void check_put(repl *r, op *o)
{
    if (o->phase == PH_WQUERY) {
        if (count(o->counted) >= r->maj)
            put_write(r, o);
        return;
    }
    if (count(o->acked) >= r->maj) {
        wire_rec rec = acc_rec(o);
        complete_rec(r, o, CL_OK, &rec);
        return;
    }
    /* F1 (spec/repl.pml): retry only when no replica can hold the version */
    nodeset known = o->replied;
    if (!r->ready)
        known |= bit(r->self); /* a recovering self never stored it */
    if (count(known) == r->n && o->acked == 0 && o->nack_acc < o->round_ts) {
        STAT_INC(r, rmw_retries);
        backoff(r, o);
        return;
    }
    if (count(known) == r->n) /* someone holds it, or may: unknown outcome */
        op_finish(r, o, CL_ETIMEDOUT, NULL, 0);
}

/* ---- read-modify-write (CASPaxos) ---------------------------------------------------- */

void strong_rmw_begin(repl *r, op *o)
{
    op *k = ktab_find(r, o);
    if (k) { /* wait for this node's earlier write of the key */
        o->phase = PH_QUEUED;
        o->next = NULL;
        if (k->k_wait_tail)
            k->k_wait_tail->next = o;
        else
            k->k_wait = o;
        k->k_wait_tail = o;
        op_arm(r, o, o->deadline_us);
        return;
    }
    ktab_add(r, o);
    rmw_attempt(r, o);
}

static void rmw_attempt(repl *r, op *o)
{
    uint64_t b = repl_new_version(r, o->seen);
    if (!o->first_ts)
        o->first_ts = b;
    else
        STAT_INC(r, rmw_retries);
    op_start_round(r, o);
    o->phase = PH_PREPARE;
    o->round_ts = b;
    o->known_ts = UINT64_MAX;
    if (r->ready) {
        struct rr rr;
        replica_prepare(r, o->key, o->klen, b, &rr);
        o->replied |= bit(r->self);
        if (rr.status == WS_OK && o->local_broken) {
            note_version(o, r->self, rr.ts, 1);
        } else if (rr.status == WS_OK) {
            o->known_ts = rr.ts;
            o->local_ok = 1;
            note_version(o, r->self, rr.ts, 0);
        } else {
            o->nacked |= bit(r->self);
            if (rr.promise > o->seen)
                o->seen = rr.promise;
        }
    }
    send_prepare(r, o, targets(r, o, peers_all(r)));
    check(r, o);
}

static void accept_round(repl *r, op *o)
{
    op_start_round(r, o);
    o->phase = PH_ACCEPT;
    if (r->ready) {
        struct rr rr;
        wire_rec rec = acc_rec(o);
        replica_accept(r, o->key, o->klen, &rec, &rr);
        o->replied |= bit(r->self);
        if (rr.status == WS_OK)
            o->acked |= bit(r->self);
        else {
            o->nacked |= bit(r->self);
            if (rr.promise > o->seen)
                o->seen = rr.promise;
        }
    }
    send_write(r, o, targets(r, o, peers_all(r)), W_ACCEPT, 0);
    check(r, o);
}

/* The newest blind write value v (with history clock vec) descends from:
 * a value without a vector was written by one. */
static uint64_t blind_of(const rval *v, const rvec *vec)
{
    if (v->kind == REC_NONE)
        return 0;
    return v->xbit ? vec->b[VEC_BLIND] : v->version;
}

/* v's CAS id: the version of its last real change. */
static uint64_t origin_of(const rval *v, const rvec *vec)
{
    return vec->b[VEC_ORIGIN] ? vec->b[VEC_ORIGIN] : v->version;
}

/* Ends an RMW (or lock op) with rc and no value. */
static void rmw_fail(repl *r, op *o, int rc)
{
    repl_val none = { 0 };
    if (o->kind == OPK_LOCK || o->kind == OPK_UNLOCK) {
        if (o->in_ktab)
            strong_key_release(r, o);
        lock_rmw_done(r, o, rc, &none);
        return;
    }
    op_finish(r, o, rc, &none, 0);
}

static struct attempt *attempt_find(op *o, uint64_t ballot)
{
    for (unsigned i = 0; i < o->n_tries; i++)
        if (o->tries[i].ballot == ballot)
            return &o->tries[i];
    return NULL;
}

/* The promises are in and the value at hi is in o->best: decide. */
static void rmw_decide(repl *r, op *o)
{
    uint64_t b = o->round_ts;
    /* Finishing without an ACCEPT needs identical promises (the value is
     * on a majority) and no earlier writing attempt of this op: one may sit
     * on a minority above hi, and only a chosen ballot b buries it. */
    int agree = o->lo == o->hi && !o->broken && count(o->at_hi) == count(o->counted) &&
                o->n_tries == 0;
    wire_rec cur_rec = rval_rec(&o->best);
    rvec vec;
    const uint8_t *d;
    size_t dl;
    if (!blob_split(cur_rec.blob, cur_rec.blen, cur_rec.xbit, &vec, &d, &dl)) {
        memset(&vec, 0, sizeof vec);
        d = cur_rec.blob;
        dl = cur_rec.blen;
    }
    uint64_t blind = blind_of(&o->best, &vec);

    /* the current value re-proposed under ballot b (a keep, or finishing) */
    o->acc.version = b;
    o->acc.flags = o->best.flags;
    o->acc.exptime = o->best.exptime;
    o->acc.kind = o->best.kind;
    o->acc.xbit = o->best.xbit;
    o->acc.blob.len = 0;
    o->writing = 0;
    o->keep_res = NULL;
    o->keep_rc = CL_OK;

    if (!o->read_only && o->n_tries && blind > o->tries[0].ballot) {
        /* A blind write newer than our first attempt is in the history.
         * It may have overwritten a chosen attempt, which then never
         * reached the clock we read (spec/README.md, finding 2), or it
         * may have inherited the clock of an attempt that was never
         * chosen, sitting on a minority when the write queried (finding
         * 3).  Either way the clock cannot tell: the outcome is unknown. */
        STAT_INC(r, rmw_dedup);
        rmw_fail(r, o, CL_ETIMEDOUT);
        return;
    } else if (!o->read_only && vec.b[r->self] && vec.b[r->self] >= o->first_ts) {
        /* an earlier attempt of this op was chosen */
        struct attempt *a = attempt_find(o, vec.b[r->self]);
        STAT_INC(r, rmw_dedup);
        if (!a) { /* cannot happen: our ballots on this key are ours alone */
            cl_log_warn("repl", "history clock names an unknown attempt");
            rmw_fail(r, o, CL_ETIMEDOUT);
            return;
        }
        if (agree) {
            complete_attempt(r, o, a);
            return;
        }
        o->keep_res = a;
    } else {
        repl_val cur, next;
        rec_to_val(&cur_rec, repl_wall_ms(r), &cur);
        memset(&next, 0, sizeof next);
        int frc = o->fn ? o->fn(o->fn_arg, &cur, &next) : REPL_RMW_KEEP;
        if (frc == REPL_RMW_WRITE) {
            if (o->n_tries == TRIES_MAX) { /* too many unknown outcomes: give up */
                op_finish(r, o, CL_ETIMEDOUT, NULL, 0);
                return;
            }
            if (!o->tries && !(o->tries = calloc(TRIES_MAX, sizeof *o->tries))) {
                op_finish(r, o, CL_ENOMEM, NULL, 0);
                return;
            }
            if ((next.present ? next.len : 0) > repl_max_value(r)) {
                /* with an earlier attempt possibly chosen later, unknown */
                op_finish(r, o, o->n_tries ? CL_ETIMEDOUT : CL_ETOOBIG, NULL, 0);
                return;
            }
            struct attempt *a = &o->tries[o->n_tries++];
            a->ballot = b;
            a->rc = CL_OK;
            a->flags = next.flags;
            a->exptime = next.exptime;
            a->present = next.present != 0;
            a->data.len = 0;
            size_t nlen = next.present ? next.len : 0;
            vec.b[r->self] = b;
            vec.b[VEC_BLIND] = blind;
            vec.b[VEC_ORIGIN] = 0;
            o->acc.flags = next.flags;
            o->acc.exptime = next.exptime;
            o->acc.kind = next.present ? REC_VALUE : REC_TOMB;
            if ((nlen && cl_buf_append(&a->data, next.data, nlen) != CL_OK) ||
                blob_build(&o->acc, &vec, next.data, nlen) != CL_OK) {
                o->n_tries--;
                op_finish(r, o, o->n_tries ? CL_ETIMEDOUT : CL_ENOMEM, NULL, 0);
                return;
            }
            o->writing = 1;
            accept_round(r, o);
            return;
        }
        o->keep_rc = frc == REPL_RMW_KEEP ? CL_OK : frc;
        if (agree) {
            if (o->keep_rc == CL_OK)
                complete_rec(r, o, CL_OK, &cur_rec);
            else if (o->kind == OPK_LOCK || o->kind == OPK_UNLOCK) {
                if (o->in_ktab)
                    strong_key_release(r, o);
                lock_rmw_done(r, o, o->keep_rc, &cur);
            } else {
                rmw_fail(r, o, o->keep_rc);
            }
            return;
        }
    }
    /* re-propose the current value under b: it may sit on a minority only
     * (F2), and a chosen b buries our earlier attempts.  The value keeps
     * its CAS id (origin) and its blind-write ancestry.  "Never written"
     * is re-proposed as a tombstone (still absent). */
    if (o->best.kind == REC_NONE) {
        o->acc.kind = REC_TOMB;
        o->acc.xbit = 0;
        o->acc.flags = 0;
        o->acc.exptime = 0;
    } else {
        vec.b[VEC_BLIND] = blind;
        vec.b[VEC_ORIGIN] = origin_of(&o->best, &vec);
        if (blob_build(&o->acc, &vec, d, dl) != CL_OK) {
            op_finish(r, o, o->n_tries ? CL_ETIMEDOUT : CL_ENOMEM, NULL, 0);
            return;
        }
    }
    accept_round(r, o);
}

static void check_rmw(repl *r, op *o)
{
    if (o->phase == PH_PREPARE) {
        if (count(o->nacked) > r->n - r->maj) {
            backoff(r, o);
            return;
        }
        if (count(o->counted) < r->maj) {
            /* a replica that went away (or answers NOT READY) will not
             * vote: retry rather than wait for the deadline */
            if (count(o->counted) + count(pending(r, o)) < r->maj)
                backoff(r, o);
            return;
        }
        if (!hi_source(r, o)) {
            if (hi_lost(r, o))
                op_finish(r, o, CL_EINTEGRITY, NULL, 0);
            return;
        }
        if (!hi_fetch(r, o)) {
            if (o->broken & bit(r->self))
                o->local_broken = 1;
            backoff(r, o); /* the local copy changed or broke: start over */
            return;
        }
        rmw_decide(r, o);
        return;
    }
    /* ACCEPT */
    if (count(o->acked) >= r->maj) {
        if (o->broken & o->acked)
            STAT_ADD(r, repairs, (uint64_t)count(o->broken & o->acked));
        if (o->writing) {
            complete_attempt(r, o, attempt_find(o, o->round_ts));
        } else if (o->keep_res) {
            complete_attempt(r, o, o->keep_res);
        } else {
            wire_rec rec = acc_rec(o);
            if (o->keep_rc == CL_OK) {
                complete_rec(r, o, CL_OK, &rec);
            } else {
                repl_val v;
                rec_to_val(&rec, repl_wall_ms(r), &v);
                if (o->kind == OPK_LOCK || o->kind == OPK_UNLOCK) {
                    if (o->in_ktab)
                        strong_key_release(r, o);
                    lock_rmw_done(r, o, o->keep_rc, &v);
                } else {
                    op_finish(r, o, o->keep_rc, &v, 0);
                }
            }
        }
        return;
    }
    if (count(o->nacked) > r->n - r->maj || count(o->acked) + count(pending(r, o)) < r->maj)
        backoff(r, o);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static void check(repl *r, op *o)
{
    switch (o->phase) {
    case PH_QUERY:
    case PH_WRITEBACK:
        check_get(r, o);
        break;
    case PH_WQUERY:
    case PH_WRITE:
        check_put(r, o);
        break;
    case PH_PREPARE:
    case PH_ACCEPT:
        check_rmw(r, o);
        break;
    default:
        break;
    }
}

void strong_poll(repl *r, op *o)
{
    o->polling = 1;
    o->read_only = 0;
    get_round(r, o);
}

void strong_begin(repl *r, op *o)
{
    if (repl_reachable(r) < r->maj) {
        op_finish(r, o, CL_ENOQUORUM, NULL, 0);
        return;
    }
    switch (o->kind) {
    case OPK_GET:
        STAT_INC(r, gets);
        get_round(r, o);
        break;
    case OPK_PUT:
        STAT_INC(r, puts);
        put_query(r, o);
        break;
    default:
        STAT_INC(r, rmws);
        strong_rmw_begin(r, o);
    }
}

void strong_on_reply(repl *r, op *o, int from, const wire_reply *rp)
{
    uint8_t want;
    switch (o->phase) {
    case PH_QUERY:
    case PH_WQUERY:
        want = W_QUERY;
        break;
    case PH_WRITEBACK:
    case PH_WRITE:
        want = W_WRITE;
        break;
    case PH_PREPARE:
        want = W_PREPARE;
        break;
    case PH_ACCEPT:
        want = W_ACCEPT;
        break;
    default:
        STAT_INC(r, replayed_dropped);
        return;
    }
    if (rp->for_type != want) {
        STAT_INC(r, replayed_dropped);
        return;
    }
    o->replied |= bit(from);
    hlc_observe(&r->clock, version_hlc(rp->ts > rp->promise ? rp->ts : rp->promise));
    if (rp->status == WS_NOTREADY) {
        o->notready |= bit(from);
        check(r, o); /* no vote: a majority may now be out of reach */
        return;
    }
    switch (o->phase) {
    case PH_QUERY:
    case PH_WQUERY:
    case PH_PREPARE:
        if (rp->status == WS_NACK) { /* PREPARE only */
            o->nacked |= bit(from);
            if (rp->promise > o->seen)
                o->seen = rp->promise;
            break;
        }
        if (rp->status == WS_FAIL)
            break; /* no vote */
        if (rp->promise > o->seen && o->phase == PH_WQUERY)
            o->seen = rp->promise;
        note_version(o, from, rp->ts, rp->status == WS_BROKEN);
        if (rp->status == WS_OK && rp->has_rec && rp->rec.version == o->hi &&
            rp->rec.kind != REC_NONE && !(o->have_best && o->best.version == o->hi)) {
            rval_set(&o->best, &rp->rec);
            o->have_best = o->best.kind != REC_NONE;
        }
        if (o->phase == PH_WQUERY && rp->ts == o->hi && rp->status == WS_OK) {
            if (rp->has_vec) {
                o->hivec = rp->vec;
                o->hivec_ok = 1;
            } else if (!o->hivec_ok) {
                /* no vec: the value at hi has none (xbit clear) */
                memset(&o->hivec, 0, sizeof o->hivec);
                o->hivec_ok = 1;
            }
        }
        break;
    default: /* WRITE, WRITEBACK, ACCEPT */
        if (rp->status == WS_OK) {
            o->acked |= bit(from);
        } else {
            o->nacked |= bit(from);
            if (rp->promise > o->seen)
                o->seen = rp->promise;
            if (rp->ts > o->nack_acc)
                o->nack_acc = rp->ts;
        }
    }
    check(r, o);
}
