/*
 * recover.c - a restarted node's way back into the quorums (repl.h,
 * "RECOVERY"), and the replica side that serves it.
 *
 * A node created with cfg.recover has lost its state (memory only) and
 * must not vote until it has it back, or a quorum counting it could miss
 * a chosen value or accept what it had promised to refuse.  States:
 *
 *   PROBE  SYNC(max_bytes 0) to every reachable peer; each answers with
 *          the largest promise/version it knows.  After a majority of
 *          peers answered: FENCE = version above all of that and above
 *          this node's wall clock, plus fence_ms of margin.  Every ballot
 *          made before the crash is below it (hlc.h: versions follow the
 *          wall clocks, which agree to within the margin).
 *   COPY   per peer, SYNC(cursor, FENCE, 256 KiB) until its cursor comes
 *          back 0: the peer raises its promise floor to FENCE first (so a
 *          prepare this node promised before the crash can no longer
 *          complete anywhere it reads), then sends a slice of its store
 *          (store_scan: every record with a version, tombstones too); this
 *          node keeps the newer of each pair.
 *   READY  once a majority of peers (not counting this node: n = 3 needs
 *          both) were copied completely: the promise floor becomes FENCE
 *          (or larger), and the node answers replica requests again.
 * Requests are retransmitted after RESEND_US; a peer that is itself
 * recovering answers NOTREADY and is asked again later.  A copy races
 * with writes going on: what it misses was chosen by a majority of ready
 * nodes that excludes this one, which ABD tolerates like any lagging
 * replica.
 */
#include "repl_int.h"
#include "../common/err.h"
#include "../common/log.h"

#define SYNC_BYTES (256u << 10)
#define RESEND_US 100000

enum { RS_IDLE, RS_PROBING, RS_PROBED, RS_COPYING, RS_DONE };

static void send_sync(repl *r, int peer, uint64_t cursor, uint64_t fence, uint32_t max_bytes)
{
    struct recover_peer *p = &r->rec[peer];
    uint8_t *w = wire_open(repl_out(r, peer), W_SYNC, 8 + 8 + 8 + 8 + 4);
    if (!w)
        return;
    p->rid = (1ull << 63) | ++r->rid_seq;
    p->sent_us = r->now_us;
    w = wire_put_u64(w, r->epoch);
    w = wire_put_u64(w, p->rid);
    w = wire_put_u64(w, cursor);
    w = wire_put_u64(w, fence);
    wire_put_u32(w, max_bytes);
}

static int count_state(const repl *r, int at_least)
{
    int c = 0;
    for (int i = 1; i <= r->n; i++)
        if (i != r->self && r->rec[i].state >= at_least)
            c++;
    return c;
}

void recover_start(repl *r)
{
    r->rec_phase = 1;
    memset(r->rec, 0, sizeof r->rec);
    cl_log_info("repl", "node %d (epoch %llu): recovering, copying state from a majority",
                r->self, (unsigned long long)r->epoch);
}

void recover_tick(repl *r)
{
    if (r->ready)
        return;
    if (r->rec_phase == 0)
        recover_start(r);
    if (r->n == 1) { /* nothing to copy from */
        r->ready = 1;
        return;
    }
    if (r->rec_phase == 1) {
        if (count_state(r, RS_PROBED) >= r->maj) {
            uint64_t h = hlc_of_ms(repl_wall_ms(r));
            if (version_hlc(r->rec_seen) > h)
                h = version_hlc(r->rec_seen);
            if (r->clock.last > h)
                h = r->clock.last;
            h += (uint64_t)r->cfg.fence_ms << HLC_LOGICAL_BITS;
            r->fence = version_make(h, 0);
            hlc_observe(&r->clock, h);
            r->rec_phase = 2;
            for (int i = 1; i <= r->n; i++) {
                r->rec[i].state = i == r->self ? RS_IDLE : RS_COPYING;
                r->rec[i].cursor = 0;
                r->rec[i].rid = 0;
            }
        } else {
            for (int i = 1; i <= r->n; i++) {
                struct recover_peer *p = &r->rec[i];
                if (i == r->self || !(r->up & (1u << i)) || p->state >= RS_PROBED)
                    continue;
                if (p->state == RS_IDLE || r->now_us - p->sent_us >= RESEND_US) {
                    p->state = RS_PROBING;
                    send_sync(r, i, 0, 0, 0);
                }
            }
            return;
        }
    }
    if (count_state(r, RS_DONE) >= r->maj) {
        if (r->fence > r->promise_floor)
            r->promise_floor = r->fence;
        if (r->rec_seen > r->promise_floor)
            r->promise_floor = r->rec_seen;
        if (r->promise_floor > r->promise_max)
            r->promise_max = r->promise_floor;
        __atomic_store_n(&r->ready, 1, __ATOMIC_RELAXED);
        cl_log_info("repl", "node %d: recovered (%llu records copied); voting again",
                    r->self, (unsigned long long)r->stats.recovered_records);
        return;
    }
    for (int i = 1; i <= r->n; i++) {
        struct recover_peer *p = &r->rec[i];
        if (i == r->self || !(r->up & (1u << i)) || p->state != RS_COPYING)
            continue;
        if (p->rid == 0 || r->now_us - p->sent_us >= RESEND_US)
            send_sync(r, i, p->cursor, r->fence, SYNC_BYTES);
    }
}

void recover_on_reply(repl *r, int from, const wire_reply *rp)
{
    struct recover_peer *p = &r->rec[from];
    if (r->ready || rp->epoch != r->epoch || rp->rid != p->rid)
        return;
    if (rp->status == WS_NOTREADY) { /* it is recovering too: ask it again later */
        p->rid = 0;
        p->sent_us = r->now_us;
        if (p->state == RS_PROBING)
            p->state = RS_IDLE;
    }
}

void recover_on_synced(repl *r, int from, wire_rd *b)
{
    uint64_t epoch = wire_u64(b);
    uint64_t rid = wire_u64(b);
    uint64_t next = wire_u64(b);
    uint64_t seen = wire_u64(b);
    uint32_t n = wire_u32(b);
    struct recover_peer *p = &r->rec[from];
    if (b->bad || r->ready || epoch != r->epoch || rid != p->rid || rid == 0)
        return;
    p->rid = 0;
    if (seen > r->rec_seen)
        r->rec_seen = seen;
    hlc_observe(&r->clock, version_hlc(seen));
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *key;
        uint8_t klen;
        wire_rec rec;
        if (!wire_key(b, &key, &klen) || !wire_rec_get(b, &rec))
            return; /* malformed: ask again at the next resend */
        if (rec.kind == REC_NONE || !rec.version)
            continue;
        int applied;
        if (repl_key_mode(r, key, klen) == REPL_EVENTUAL) {
            applied = ev_apply(r, key, klen, &rec);
        } else {
            applied = replica_store(r, key, klen, &rec, 1) == CL_OK;
            hlc_observe(&r->clock, version_hlc(rec.version));
        }
        if (applied)
            STAT_INC(r, recovered_records);
    }
    if (p->state == RS_PROBING) {
        p->state = RS_PROBED;
    } else if (p->state == RS_COPYING) {
        p->cursor = next;
        if (next == 0)
            p->state = RS_DONE;
        else
            send_sync(r, from, next, r->fence, SYNC_BYTES);
    }
    recover_tick(r);
}

/* ---- serving a copy ----------------------------------------------------------------- */

struct serve {
    repl *r;
    cl_buf *out;
    uint32_t n;
};

static void serve_cb(void *arg, const uint8_t *key, size_t klen, const store_meta *m,
                     store_scan_item *it)
{
    struct serve *s = arg;
    if (!m->version)
        return;
    /* a copy broken here is left out: the recovering node gets it elsewhere */
    if (scan_rec_append(s->out, key, klen, m, it) == CL_OK)
        s->n++;
}

void recover_serve(repl *r, int from, wire_rd *b)
{
    uint64_t epoch = wire_u64(b);
    uint64_t rid = wire_u64(b);
    uint64_t cursor = wire_u64(b);
    uint64_t fence = wire_u64(b);
    uint32_t max_bytes = wire_u32(b);
    if (b->bad)
        return;
    cl_buf *out = repl_out(r, from);
    if (!r->ready) {
        (void)wire_reply_put(out, epoch, rid, W_SYNC, WS_NOTREADY, 0, 0, NULL, NULL);
        return;
    }
    if (fence > r->promise_floor)
        r->promise_floor = fence;
    if (r->promise_floor > r->promise_max)
        r->promise_max = r->promise_floor;
    uint64_t seen = version_make(r->clock.last, 7);
    if (r->promise_max > seen)
        seen = r->promise_max;
    size_t at = wire_open_var(out, W_SYNCED);
    if (at == SIZE_MAX)
        return;
    uint8_t hdr[8 + 8 + 8 + 8 + 4];
    uint8_t *p = wire_put_u64(hdr, epoch);
    p = wire_put_u64(p, rid);
    p = wire_put_u64(p, 0); /* next cursor, patched below */
    p = wire_put_u64(p, seen);
    wire_put_u32(p, 0);    /* count, patched below */
    if (cl_buf_append(out, hdr, sizeof hdr) != CL_OK) {
        out->len = at;
        return;
    }
    struct serve s = { r, out, 0 };
    size_t start = out->len;
    if (max_bytes) {
        int more;
        do {
            more = store_scan(r->t, &cursor, 1, serve_cb, &s);
        } while (more && out->len - start < max_bytes);
        if (!more)
            cursor = 0;
    } else {
        cursor = 0;
    }
    wire_put_u64(out->data + at + 5 + 16, cursor);
    wire_put_u32(out->data + at + 5 + 32, s.n);
    wire_close(out, at);
}
