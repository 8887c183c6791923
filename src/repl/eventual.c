/*
 * eventual.c - EVENTUAL mode (repl.h): local writes stamped with the
 * hybrid logical clock, batched pushes, last-writer-wins, anti-entropy.
 *
 * Writes.  A put or RMW of an eventual key applies to the local store at
 * once (version = hlc_next, above the key's current version) and is
 * acknowledged; the record is appended to r->push, one PUSH body shared
 * by all peers, which leaves every push_interval_us (or at 1 MiB) to
 * every reachable peer.  Pushes are not acknowledged and may be lost:
 * anti-entropy repairs that.
 *
 * Applying (pushes, anti-entropy, lock catch-up, recovery): a record
 * replaces the local one only if its version is larger (store if_newer),
 * so replicas converge to the largest version whatever the order, and
 * replays change nothing.  Deletes are tombstones.
 *
 * Anti-entropy digest: AE_BUCKETS buckets by key hash (the same hash on
 * every node); bucket b = XOR over its eventual keys of
 * XXH3(key, seed = version).  It is updated on every local change of an
 * eventual key (ev_note_write), so it costs nothing to keep.  Every
 * antientropy_ms the node sends its digest to the next reachable peer;
 * the peer answers DIFF (the buckets that differ) and pushes its own
 * entries of those buckets; on DIFF this node pushes its entries too.
 * Each side sends at most AE_PUSH_MAX bytes per exchange; what is left
 * differs at the next one.  Finding a bucket's entries scans the store.
 *
 * Reads are local; a local copy that fails its integrity check is
 * fetched again from the peers (lock.c's fetch), then read.
 */
#include "repl_int.h"
#include "../common/err.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define PUSH_MAX (512u << 10)
#define AE_PUSH_MAX (512u << 10)

static uint64_t digest_elem(const uint8_t *key, size_t klen, uint64_t version)
{
    return XXH3_64bits_withSeed(key, klen, version);
}

static unsigned bucket_of(const uint8_t *key, size_t klen)
{
    return (unsigned)(repl_key_hash(key, klen) & (AE_BUCKETS - 1));
}

void ev_note_write(repl *r, const uint8_t *key, size_t klen, uint64_t old_v, uint64_t new_v)
{
    uint64_t *d = &r->digest[bucket_of(key, klen)];
    if (old_v)
        *d ^= digest_elem(key, klen, old_v);
    if (new_v)
        *d ^= digest_elem(key, klen, new_v);
}

int ev_apply(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec)
{
    if (repl_key_mode(r, key, klen) != REPL_EVENTUAL)
        return 0;
    wire_rec cur;
    uint64_t old = local_read(r, key, klen, 0, &cur) == CL_OK ? cur.version : 0;
    if (rec->version <= old)
        return 0;
    if (replica_store(r, key, klen, rec, 1) != CL_OK)
        return 0;
    hlc_observe(&r->clock, version_hlc(rec->version));
    ev_note_write(r, key, klen, old, rec->version);
    STAT_INC(r, applied_remote);
    return 1;
}

static void push_send(repl *r)
{
    if (!r->push_n)
        return;
    for (int i = 1; i <= r->n; i++) {
        if (i == r->self || !(r->up & (1u << i)))
            continue;
        uint8_t *p = wire_open(repl_out(r, i), W_PUSH, 8 + 8 + 1 + 4 + r->push.len);
        if (!p)
            continue;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, 0);
        p = wire_put_u8(p, 0);
        p = wire_put_u32(p, r->push_n);
        memcpy(p, r->push.data, r->push.len);
    }
    STAT_ADD(r, pushed, r->push_n);
    r->push.len = 0;
    r->push_n = 0;
    cl_buf_shrink(&r->push, 64u << 10);
}

void ev_queue_push(repl *r, const uint8_t *key, size_t klen, const wire_rec *rec)
{
    if (r->n == 1)
        return;
    if (r->push_n && r->push.len + 1 + klen + wire_rec_size(rec) > PUSH_MAX)
        push_send(r);
    uint8_t *p = cl_buf_extend(&r->push, 1 + klen + wire_rec_size(rec));
    if (!p)
        return; /* anti-entropy will carry it */
    p = wire_put_key(p, key, (uint8_t)klen);
    wire_put_rec(p, rec);
    if (r->push_n++ == 0)
        r->push_due_us = r->now_us + r->cfg.push_interval_us;
}

/* Stores a new local version of an eventual key and queues its push. */
static int ev_write(repl *r, op *o, int present, uint32_t flags, int64_t exptime,
                    const uint8_t *data, size_t len, uint64_t *version)
{
    wire_rec cur;
    uint64_t old = local_read(r, o->key, o->klen, 0, &cur) == CL_OK ? cur.version : 0;
    static const uint8_t none;
    wire_rec rec = { repl_new_version(r, old), flags, exptime, present ? REC_VALUE : REC_TOMB,
                     0, len ? data : &none, (uint32_t)len };
    int rc = replica_store(r, o->key, o->klen, &rec, 1);
    if (rc != CL_OK)
        return rc;
    ev_note_write(r, o->key, o->klen, old, rec.version);
    ev_queue_push(r, o->key, o->klen, &rec);
    *version = rec.version;
    return CL_OK;
}

void ev_begin(repl *r, op *o)
{
    wire_rec cur;
    repl_val v;
    uint64_t version;
    int rc;
    switch (o->kind) {
    case OPK_GET:
        STAT_INC(r, gets);
        rc = local_read(r, o->key, o->klen, 1, &cur);
        if (rc == CL_EINTEGRITY && r->n > 1) { /* fetch a good copy, then answer */
            o->need_version = cur.version;
            o->local_broken = 1;
            fetch_begin(r, o);
            return;
        }
        if (rc != CL_OK && rc != CL_ENOTFOUND) {
            op_finish(r, o, rc, NULL, 0);
            return;
        }
        rec_to_val(&cur, repl_wall_ms(r), &v);
        op_finish(r, o, v.present ? CL_OK : CL_ENOTFOUND, &v, 0);
        return;
    case OPK_PUT:
        STAT_INC(r, puts);
        rc = ev_write(r, o, o->v_present, o->v_flags, o->v_exptime, o->v_data, o->v_len,
                      &version);
        memset(&v, 0, sizeof v);
        v.present = o->v_present;
        v.flags = o->v_flags;
        v.exptime = o->v_exptime;
        v.version = version;
        v.data = o->v_data;
        v.len = o->v_len;
        op_finish(r, o, rc, rc == CL_OK ? &v : NULL, 0);
        return;
    default: { /* RMW on the local copy */
        STAT_INC(r, rmws);
        rc = local_read(r, o->key, o->klen, 1, &cur);
        if (rc != CL_OK && rc != CL_ENOTFOUND) {
            op_finish(r, o, rc, NULL, 0);
            return;
        }
        /* cur points into r->scratch, which ev_write reuses: keep a copy */
        rval_set(&o->best, &cur);
        wire_rec held = { o->best.version, o->best.flags, o->best.exptime, o->best.kind,
                          o->best.xbit, o->best.blob.data, (uint32_t)o->best.blob.len };
        rec_to_val(&held, repl_wall_ms(r), &v);
        repl_val next;
        memset(&next, 0, sizeof next);
        int frc = o->fn(o->fn_arg, &v, &next);
        if (frc == REPL_RMW_WRITE) {
            rc = ev_write(r, o, next.present, next.flags, next.exptime, next.data,
                          next.present ? next.len : 0, &version);
            next.version = version;
            op_finish(r, o, rc, rc == CL_OK ? &next : NULL, 0);
        } else {
            op_finish(r, o, frc == REPL_RMW_KEEP ? CL_OK : frc, &v, 0);
        }
        return;
    }
    }
}

/* ---- anti-entropy -------------------------------------------------------------- */

struct ae_push {
    repl *r;
    cl_buf *out;
    const uint8_t *want;     /* bitmap of buckets */
    uint32_t n;
    int full;
};

static void ae_scan_cb(void *arg, const uint8_t *key, size_t klen, const store_meta *m,
                       store_scan_item *it)
{
    struct ae_push *a = arg;
    if (a->full || !m->version || repl_key_mode(a->r, key, klen) != REPL_EVENTUAL)
        return;
    unsigned b = bucket_of(key, klen);
    if (!(a->want[b / 8] & (1u << (b % 8))))
        return;
    int rc = scan_rec_append(a->out, key, klen, m, it);
    if (rc == CL_ENOMEM)
        a->full = 1;
    if (rc != CL_OK)
        return; /* (a broken copy: the peer keeps its own) */
    a->n++;
    if (a->out->len > AE_PUSH_MAX)
        a->full = 1;
}

/* Pushes this node's entries of the buckets in `want` to peer `to`. */
static void ae_push_buckets(repl *r, int to, const uint8_t *want)
{
    cl_buf *out = repl_out(r, to);
    size_t at = wire_open_var(out, W_PUSH);
    if (at == SIZE_MAX)
        return;
    uint8_t hdr[8 + 8 + 1 + 4];
    uint8_t *p = wire_put_u64(hdr, r->epoch);
    p = wire_put_u64(p, 0);
    p = wire_put_u8(p, 0);
    wire_put_u32(p, 0);
    if (cl_buf_append(out, hdr, sizeof hdr) != CL_OK) {
        out->len = at;
        return;
    }
    struct ae_push a = { r, out, want, 0, 0 };
    uint64_t cursor = 0;
    while (store_scan(r->t, &cursor, 4096, ae_scan_cb, &a) && !a.full)
        ;
    if (a.n == 0) {
        out->len = at;
        if (at == 1) /* only the version byte is left */
            out->len = 0;
        return;
    }
    wire_put_u32(out->data + at + 5 + 17, a.n);
    wire_close(out, at);
    STAT_ADD(r, antientropy_pulled, a.n);
}

void ev_on_digest(repl *r, int from, wire_rd *b)
{
    uint64_t epoch = wire_u64(b);
    uint64_t rid = wire_u64(b);
    uint32_t n = wire_u32(b);
    if (b->bad || n != AE_BUCKETS)
        return;
    uint8_t diff[AE_BUCKETS / 8];
    memset(diff, 0, sizeof diff);
    int any = 0;
    for (unsigned i = 0; i < AE_BUCKETS; i++) {
        uint64_t d = wire_u64(b);
        if (b->bad)
            return;
        if (d != r->digest[i]) {
            diff[i / 8] |= (uint8_t)(1u << (i % 8));
            any = 1;
        }
    }
    if (!any)
        return;
    uint8_t *p = wire_open(repl_out(r, from), W_DIFF, 8 + 8 + 4 + sizeof diff);
    if (!p)
        return;
    p = wire_put_u64(p, epoch);
    p = wire_put_u64(p, rid);
    p = wire_put_u32(p, AE_BUCKETS);
    memcpy(p, diff, sizeof diff);
    ae_push_buckets(r, from, diff);
}

void ev_on_diff(repl *r, int from, wire_rd *b)
{
    uint64_t epoch = wire_u64(b);
    (void)wire_u64(b);
    uint32_t n = wire_u32(b);
    const uint8_t *diff = wire_bytes(b, AE_BUCKETS / 8);
    if (b->bad || n != AE_BUCKETS || epoch != r->epoch)
        return;
    ae_push_buckets(r, from, diff);
}

void ev_tick(repl *r)
{
    if (r->push_n && r->now_us >= r->push_due_us)
        push_send(r);
    if (r->n == 1 || r->now_us < r->ae_due_us)
        return;
    r->ae_due_us = r->now_us + (uint64_t)r->cfg.antientropy_ms * 1000;
    for (int k = 0; k < r->n; k++) { /* the next reachable peer, in turn */
        int peer = (r->ae_next_peer + k) % r->n + 1;
        if (peer == r->self || !(r->up & (1u << peer)))
            continue;
        r->ae_next_peer = peer % r->n;
        uint8_t *p = wire_open(repl_out(r, peer), W_DIGEST, 8 + 8 + 4 + 8 * AE_BUCKETS);
        if (!p)
            return;
        p = wire_put_u64(p, r->epoch);
        p = wire_put_u64(p, ++r->ae_rid);
        p = wire_put_u32(p, AE_BUCKETS);
        for (unsigned i = 0; i < AE_BUCKETS; i++)
            p = wire_put_u64(p, r->digest[i]);
        return;
    }
}
