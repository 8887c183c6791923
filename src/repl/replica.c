/*
 * replica.c - the replica side of the protocol (repl.h, "Replica rules"):
 * what this node does with QUERY, WRITE, PREPARE, ACCEPT and PUSH, for
 * requests from peers and, without a message, for its own proposer.
 *
 * State: the accepted record of every key is the local store's (version,
 * value or tombstone); the promise is r->promise[hash & mask] raised to
 * at least r->promise_floor (the recovery fence).  Every rule reads the
 * version first (metadata only, nothing decrypted) and opens the sealed
 * value only when it has to travel, so agreeing replicas cost a lookup.
 * A value that fails its integrity check is reported BROKEN with its
 * version; a WRITE with the REPAIR flag rewrites it.
 *
 * Rules are idempotent and versions only grow, so a duplicated, delayed
 * or replayed request changes nothing: that is the replica's whole
 * defence against replays (the transport already drops other
 * incarnations' frames).  A recovering replica answers strong requests
 * WS_NOTREADY (not a vote) and never changes state for them.
 */
#include "repl_int.h"
#include "../common/err.h"

uint64_t promise_of(repl *r, uint64_t khash)
{
    uint64_t p = r->promise[khash & (((uint64_t)1 << PROMISE_BITS) - 1)];
    return p > r->promise_floor ? p : r->promise_floor;
}

void promise_raise(repl *r, uint64_t khash, uint64_t b)
{
    uint64_t *p = &r->promise[khash & (((uint64_t)1 << PROMISE_BITS) - 1)];
    if (b > *p)
        *p = b;
    if (b > r->promise_max)
        r->promise_max = b;
}

int replica_store(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, int if_newer)
{
    if (rec->kind == REC_NONE || rec->version == 0)
        return CL_EINVAL;
    store_write w = {
        .mode = STORE_SET,
        .flags = rec->flags,
        .exptime = rec->exptime,
        .version = rec->version,
        .tombstone = rec->kind == REC_TOMB,
        .if_newer = if_newer,
        .xbit = rec->xbit,
    };
    static const uint8_t none;
    int rc = store_set(r->t, key, klen, rec->blen ? rec->blob : &none, rec->blen, &w, NULL);
    if (rc == CL_OK && rec->version > r->stats.newest_version)
        __atomic_store_n(&r->stats.newest_version, rec->version, __ATOMIC_RELAXED);
    return rc;
}

/* The local version of key (0: none). */
static uint64_t local_version(repl *r, const uint8_t *key, size_t klen)
{
    wire_rec cur;
    return local_read(r, key, klen, 0, &cur) == CL_OK ? cur.version : 0;
}

void replica_write(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, int repair,
                   struct rr *out)
{
    uint64_t h = repl_key_hash(key, klen);
    uint64_t p = promise_of(r, h); /* the recovery floor included (spec/README.md, 1) */
    hlc_observe(&r->clock, version_hlc(rec->version));
    out->promise = p;
    if (rec->version >= p && !repair) { /* the common case: one store call */
        int rc = replica_store(r, key, klen, rec, 1);
        int ok = rc == CL_OK || rc == CL_EEXISTS; /* EEXISTS: it has a newer one */
        out->status = ok ? WS_OK : WS_FAIL;
        out->ts = ok ? rec->version : 0;
        return;
    }
    uint64_t cur = local_version(r, key, klen);
    out->ts = cur;
    if (rec->version < p) {
        out->status = WS_NACK;
        STAT_INC(r, nacks);
        return;
    }
    out->status = WS_OK;
    if (rec->version > cur || (repair && rec->version >= cur)) {
        if (replica_store(r, key, klen, rec, 0) != CL_OK) {
            out->status = WS_FAIL;
            return;
        }
        out->ts = rec->version;
        if (repair && rec->version == cur)
            STAT_INC(r, repairs);
    }
}

void replica_prepare(repl *r, const uint8_t *key, size_t klen, uint64_t ballot, struct rr *out)
{
    uint64_t h = repl_key_hash(key, klen);
    uint64_t p = promise_of(r, h);
    uint64_t cur = local_version(r, key, klen);
    hlc_observe(&r->clock, version_hlc(ballot));
    out->ts = cur;
    if (ballot > p && ballot > cur) {
        promise_raise(r, h, ballot);
        out->status = WS_OK;
        out->promise = ballot;
    } else {
        out->status = WS_NACK;
        out->promise = p > cur ? p : cur;
        STAT_INC(r, nacks);
    }
}

void replica_accept(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec, struct rr *out)
{
    uint64_t h = repl_key_hash(key, klen);
    uint64_t p = promise_of(r, h);
    hlc_observe(&r->clock, version_hlc(rec->version));
    out->promise = p;
    if (rec->version >= p) { /* store it if newer; else look why */
        int rc = replica_store(r, key, klen, rec, 1);
        if (rc == CL_OK) {
            out->status = WS_OK;
            out->ts = rec->version;
            return;
        }
        if (rc != CL_EEXISTS) {
            out->status = WS_FAIL;
            out->ts = 0;
            return;
        }
    }
    uint64_t cur = local_version(r, key, klen);
    out->ts = cur;
    if (rec->version >= p && rec->version >= cur) {
        out->status = WS_OK;
        out->promise = p;
        if (rec->version > cur) { /* equal: this proposal again */
            if (replica_store(r, key, klen, rec, 0) != CL_OK) {
                out->status = WS_FAIL;
                return;
            }
            out->ts = rec->version;
        }
    } else {
        out->status = WS_NACK;
        out->promise = p > cur ? p : cur;
        STAT_INC(r, nacks);
    }
}

/* ---- requests from peers ---------------------------------------------------- */

static void reply(repl *r, int from, uint64_t epoch, uint64_t rid, uint8_t type, uint8_t status,
                  uint64_t ts, uint64_t promise, const wire_rec *rec, const rvec *vec)
{
    (void)wire_reply_put(repl_out(r, from), epoch, rid, type, status, ts, promise, rec, vec);
}

/* QUERY: the version, and the value when the proposer's differs, and/or
 * the value's history clock. */
static void on_query(repl *r, int from, uint64_t epoch, uint64_t rid, wire_rd *b)
{
    uint8_t flags = wire_u8(b);
    uint64_t known = wire_u64(b);
    const uint8_t *key;
    uint8_t klen;
    if (!wire_key(b, &key, &klen))
        return;
    if (!r->ready && !(flags & QF_ANY)) {
        reply(r, from, epoch, rid, W_QUERY, WS_NOTREADY, 0, 0, NULL, NULL);
        return;
    }
    uint64_t p = promise_of(r, repl_key_hash(key, klen));
    wire_rec cur;
    int rc = local_read(r, key, klen, 0, &cur);
    if (rc != CL_OK) {
        reply(r, from, epoch, rid, W_QUERY, WS_OK, 0, p, NULL, NULL);
        return;
    }
    int want_val = (flags & QF_VALUE) && cur.version != known;
    int want_vec = (flags & QF_VEC) && cur.xbit;
    if (!want_val && !want_vec) {
        reply(r, from, epoch, rid, W_QUERY, WS_OK, cur.version, p, NULL, NULL);
        return;
    }
    rc = local_read(r, key, klen, 1, &cur);
    if (rc == CL_EINTEGRITY) {
        reply(r, from, epoch, rid, W_QUERY, WS_BROKEN, cur.version, p, NULL, NULL);
        return;
    }
    if (rc != CL_OK) { /* vanished or out of memory: answer as if absent would lie */
        reply(r, from, epoch, rid, W_QUERY, WS_FAIL, 0, p, NULL, NULL);
        return;
    }
    rvec vec;
    const uint8_t *d;
    size_t dl;
    int vec_ok = want_vec && blob_split(cur.blob, cur.blen, cur.xbit, &vec, &d, &dl);
    reply(r, from, epoch, rid, W_QUERY, WS_OK, cur.version, p, want_val ? &cur : NULL,
          vec_ok ? &vec : NULL);
}

/* WRITE (a u8 of flags first) and ACCEPT: a record to store by the rule
 * of its type. */
static void on_store(repl *r, int from, uint8_t type, uint64_t epoch, uint64_t rid, wire_rd *b)
{
    uint8_t flags = type == W_WRITE ? wire_u8(b) : 0;
    const uint8_t *key;
    uint8_t klen;
    wire_rec rec;
    if (!wire_key(b, &key, &klen) || !wire_rec_get(b, &rec) || rec.kind == REC_NONE ||
        rec.version == 0)
        return;
    if (!r->ready) {
        reply(r, from, epoch, rid, type, WS_NOTREADY, 0, 0, NULL, NULL);
        return;
    }
    struct rr rr;
    if (type == W_WRITE)
        replica_write(r, key, klen, &rec, flags & WF_REPAIR, &rr);
    else
        replica_accept(r, key, klen, &rec, &rr);
    reply(r, from, epoch, rid, type, rr.status, rr.ts, rr.promise, NULL, NULL);
}

static void on_prepare(repl *r, int from, uint64_t epoch, uint64_t rid, wire_rd *b)
{
    uint64_t ballot = wire_u64(b);
    uint64_t known = wire_u64(b);
    const uint8_t *key;
    uint8_t klen;
    if (!wire_key(b, &key, &klen) || ballot == 0)
        return;
    if (!r->ready) {
        reply(r, from, epoch, rid, W_PREPARE, WS_NOTREADY, 0, 0, NULL, NULL);
        return;
    }
    struct rr rr;
    replica_prepare(r, key, klen, ballot, &rr);
    if (rr.status != WS_OK || rr.ts == known || rr.ts == 0) {
        reply(r, from, epoch, rid, W_PREPARE, rr.status, rr.ts, rr.promise, NULL, NULL);
        return;
    }
    wire_rec cur;
    int rc = local_read(r, key, klen, 1, &cur);
    if (rc == CL_EINTEGRITY) /* promised, but its value is unusable */
        reply(r, from, epoch, rid, W_PREPARE, WS_BROKEN, cur.version, rr.promise, NULL, NULL);
    else if (rc == CL_OK)
        reply(r, from, epoch, rid, W_PREPARE, WS_OK, cur.version, rr.promise, &cur, NULL);
    else
        reply(r, from, epoch, rid, W_PREPARE, WS_FAIL, 0, rr.promise, NULL, NULL);
}

/* PUSH: eventual-mode records, last writer wins.  Applied while
 * recovering too (it is always safe); strong keys are never taken from
 * a push. */
static void on_push(repl *r, int from, uint64_t epoch, uint64_t rid, wire_rd *b)
{
    uint8_t flags = wire_u8(b);
    uint32_t n = wire_u32(b);
    for (uint32_t i = 0; i < n && !b->bad; i++) {
        const uint8_t *key;
        uint8_t klen;
        wire_rec rec;
        if (!wire_key(b, &key, &klen) || !wire_rec_get(b, &rec))
            return;
        if (rec.kind != REC_NONE && rec.version)
            ev_apply(r, key, klen, &rec);
    }
    if ((flags & PF_ACK) && rid)
        reply(r, from, epoch, rid, W_PUSH, WS_OK, 0, 0, NULL, NULL);
}

void replica_on_request(repl *r, int from, uint8_t type, wire_rd *body)
{
    if (type == W_SYNC) {
        recover_serve(r, from, body);
        return;
    }
    uint64_t epoch = wire_u64(body);
    uint64_t rid = wire_u64(body);
    if (body->bad)
        return;
    switch (type) {
    case W_QUERY:
        on_query(r, from, epoch, rid, body);
        break;
    case W_WRITE:
    case W_ACCEPT:
        on_store(r, from, type, epoch, rid, body);
        break;
    case W_PREPARE:
        on_prepare(r, from, epoch, rid, body);
        break;
    case W_PUSH:
        on_push(r, from, epoch, rid, body);
        break;
    default:
        break; /* unknown record: ignored (a newer peer) */
    }
}
