/* test_strong.c - STRONG mode on the simulated network (simnet.h): every
 * operation's meaning on 3 and 5 nodes, one-round-trip reads when the
 * replicas agree (messages counted), write-back when they do not,
 * concurrent increments from every node under loss, duplication and
 * reordering that end exact, progress with a minority crashed, clean
 * failure without a majority, and replayed messages that change
 * nothing. */
#include "simnet.h"

#define OK(x) CHECK_EQ((x), CL_OK)

static void basic(int n)
{
    sim s;
    sim_init(&s, n, 1000 + (uint64_t)n, NULL);
    sim_start(&s);
    sim_res r;
    CHECK_EQ(sim_get(&s, 1, "a", &r), CL_ENOTFOUND);
    OK(sim_put(&s, 1, "a", "alpha", &r));
    uint64_t v1 = r.version;
    CHECK(v1 != 0);
    for (int i = 1; i <= n; i++) { /* every node reads it */
        OK(sim_get(&s, i, "a", &r));
        CHECK(sim_holds(&r, "alpha"));
        CHECK_EQ(r.version, v1);
    }
    OK(sim_put(&s, n, "a", "beta", &r));
    CHECK(r.version > v1);
    OK(sim_get(&s, 1, "a", &r));
    CHECK(sim_holds(&r, "beta"));
    /* blind delete: a tombstone */
    OK(sim_put(&s, 2, "a", NULL, &r));
    for (int i = 1; i <= n; i++)
        CHECK_EQ(sim_get(&s, i, "a", &r), CL_ENOTFOUND);
    /* flags and exptime travel */
    repl_val v = { .present = 1, .flags = 42, .exptime = 0, .data = (const uint8_t *)"f",
                   .len = 1 };
    memset(&r, 0, sizeof r);
    REQUIRE(repl_put(s.node[1].r, sim_k("fl"), 2, &v, sim_res_cb, &r) == CL_OK);
    OK(sim_wait(&s, &r));
    OK(sim_get(&s, n, "fl", &r));
    CHECK_EQ(r.flags, 42);
    /* an expired value reads as absent */
    v.exptime = (int64_t)(s.wall_base_ms / 1000) - 5;
    memset(&r, 0, sizeof r);
    REQUIRE(repl_put(s.node[1].r, sim_k("ex"), 2, &v, sim_res_cb, &r) == CL_OK);
    OK(sim_wait(&s, &r));
    CHECK_EQ(sim_get(&s, 2, "ex", &r), CL_ENOTFOUND);
    /* bad submissions are refused without a callback */
    CHECK_EQ(repl_get(s.node[1].r, sim_k(""), 0, sim_res_cb, &r), CL_EBADKEY);
    uint8_t big[300];
    memset(big, 'k', sizeof big);
    CHECK_EQ(repl_get(s.node[1].r, big, sizeof big, sim_res_cb, &r), CL_EBADKEY);
    sim_fini(&s);
}

static void test_basic_3(void) { basic(3); }
static void test_basic_5(void) { basic(5); }

static int rmw_kind(sim *s, int node, const char *key, repl_op_kind kind, const char *data,
                    uint64_t cas, sim_res *r)
{
    repl_op op;
    repl_op_init(&op, kind);
    op.data = (const uint8_t *)data;
    op.len = data ? strlen(data) : 0;
    op.cas = cas;
    op.delta = 1;
    int rc = sim_rmw(s, node, key, &op, r);
    repl_op_fini(&op);
    return rc;
}

static void rmw_semantics(int n)
{
    sim s;
    sim_init(&s, n, 2000 + (uint64_t)n, NULL);
    sim_start(&s);
    sim_res r;
    int last = n;
    OK(rmw_kind(&s, 1, "k", REPL_OP_ADD, "one", 0, &r));
    CHECK_EQ(rmw_kind(&s, 2, "k", REPL_OP_ADD, "two", 0, &r), CL_ENOTSTORED);
    OK(rmw_kind(&s, last, "k", REPL_OP_REPLACE, "three", 0, &r));
    CHECK_EQ(rmw_kind(&s, 1, "nope", REPL_OP_REPLACE, "x", 0, &r), CL_ENOTSTORED);
    OK(sim_get(&s, 2, "k", &r));
    CHECK(sim_holds(&r, "three"));
    uint64_t ver = r.version;
    /* cas */
    CHECK_EQ(rmw_kind(&s, 1, "k", REPL_OP_CAS, "four", ver + 1, &r), CL_EEXISTS);
    OK(rmw_kind(&s, 1, "k", REPL_OP_CAS, "four", ver, &r));
    CHECK(r.version > ver);
    CHECK_EQ(rmw_kind(&s, 2, "k", REPL_OP_CAS, "five", ver, &r), CL_EEXISTS);
    CHECK_EQ(rmw_kind(&s, 2, "absent", REPL_OP_CAS, "x", 5, &r), CL_ENOTFOUND);
    /* append / prepend */
    OK(rmw_kind(&s, 2, "k", REPL_OP_APPEND, "-end", 0, &r));
    OK(rmw_kind(&s, last, "k", REPL_OP_PREPEND, "start-", 0, &r));
    OK(sim_get(&s, 1, "k", &r));
    CHECK(sim_holds(&r, "start-four-end"));
    CHECK_EQ(rmw_kind(&s, 1, "nope", REPL_OP_APPEND, "x", 0, &r), CL_ENOTSTORED);
    /* incr / decr */
    OK(sim_put(&s, 1, "n", "10", &r));
    OK(rmw_kind(&s, 2, "n", REPL_OP_INCR, NULL, 0, &r));
    CHECK(sim_holds(&r, "11"));
    repl_op op;
    repl_op_init(&op, REPL_OP_DECR);
    op.delta = 100;
    OK(sim_rmw(&s, last, "n", &op, &r));
    CHECK(sim_holds(&r, "0"));
    CHECK_EQ(op.number, 0);
    repl_op_fini(&op);
    repl_op_init(&op, REPL_OP_INCR);
    op.delta = UINT64_MAX; /* wraps from 0 */
    OK(sim_rmw(&s, 1, "n", &op, &r));
    CHECK(sim_holds(&r, "18446744073709551615"));
    repl_op_fini(&op);
    CHECK_EQ(rmw_kind(&s, 1, "k", REPL_OP_INCR, NULL, 0, &r), CL_ENONNUMERIC);
    CHECK_EQ(rmw_kind(&s, 1, "nope", REPL_OP_INCR, NULL, 0, &r), CL_ENOTFOUND);
    repl_op_init(&op, REPL_OP_INCR);
    op.vivify = 1;
    op.initial = 7;
    OK(sim_rmw(&s, 2, "viv", &op, &r));
    CHECK(sim_holds(&r, "7"));
    repl_op_fini(&op);
    /* touch */
    repl_op_init(&op, REPL_OP_TOUCH);
    op.exptime = (int64_t)(s.wall_base_ms / 1000) + 3600;
    OK(sim_rmw(&s, 1, "k", &op, &r));
    repl_op_fini(&op);
    OK(sim_get(&s, last, "k", &r));
    CHECK(sim_holds(&r, "start-four-end"));
    CHECK_EQ(r.exptime, (int64_t)(s.wall_base_ms / 1000) + 3600);
    /* delete with a reply */
    OK(sim_get(&s, 1, "k", &r));
    CHECK_EQ(rmw_kind(&s, 2, "k", REPL_OP_DELETE, NULL, r.version + 1, &r), CL_EEXISTS);
    OK(rmw_kind(&s, 2, "k", REPL_OP_DELETE, NULL, 0, &r));
    CHECK_EQ(rmw_kind(&s, 1, "k", REPL_OP_DELETE, NULL, 0, &r), CL_ENOTFOUND);
    CHECK_EQ(sim_get(&s, last, "k", &r), CL_ENOTFOUND);
    OK(rmw_kind(&s, 1, "k", REPL_OP_ADD, "reborn", 0, &r)); /* add after delete */
    /* kv_cas (runtime) */
    CHECK_EQ(rmw_kind(&s, 1, "kv", REPL_OP_KVCAS, "x", 1, &r), CL_ECONFLICT);
    OK(rmw_kind(&s, 1, "kv", REPL_OP_KVCAS, "x", 0, &r));
    uint64_t kv1 = r.version;
    CHECK_EQ(rmw_kind(&s, 2, "kv", REPL_OP_KVCAS, "y", 0, &r), CL_ECONFLICT);
    OK(rmw_kind(&s, 2, "kv", REPL_OP_KVCAS, "y", kv1, &r));
    OK(sim_get(&s, last, "kv", &r));
    CHECK(sim_holds(&r, "y"));
    sim_fini(&s);
}

static void test_rmw_3(void) { rmw_semantics(3); }
static void test_rmw_5(void) { rmw_semantics(5); }

/* With every replica at the same version a read is one round trip: one
 * QUERY to each peer, one reply from each, no values sent. */
static void test_one_round_read(void)
{
    for (int n = 3; n <= 5; n += 2) {
        sim s;
        sim_init(&s, n, 3000 + (uint64_t)n, NULL);
        sim_start(&s);
        sim_res r;
        OK(sim_put(&s, 1, "k", "value", &r));
        sim_run_for(&s, 10000); /* the write reaches every replica */
        repl_stats before = sim_stats(&s, 2);
        uint64_t msgs = s.msgs_sent;
        OK(sim_get(&s, 2, "k", &r));
        CHECK(sim_holds(&r, "value"));
        CHECK_EQ(s.msgs_sent - msgs, 2 * (uint64_t)(n - 1));
        repl_stats after = sim_stats(&s, 2);
        CHECK_EQ(after.gets_one_round - before.gets_one_round, 1);
        CHECK_EQ(after.writebacks - before.writebacks, 0);
        /* a write: QUERY and WRITE, each a request and a reply per peer */
        msgs = s.msgs_sent;
        OK(sim_put(&s, 2, "k", "v2", &r));
        sim_run_for(&s, 10000);
        CHECK_EQ(s.msgs_sent - msgs, 4 * (uint64_t)(n - 1));
        sim_fini(&s);
    }
}

/* A replica that missed a write: the read sees different versions and
 * writes the newest back, after which that replica has it. */
static void test_writeback(void)
{
    sim s;
    sim_init(&s, 3, 4000, NULL);
    sim_start(&s);
    sim_res r;
    OK(sim_put(&s, 1, "k", "old", &r));
    sim_run_for(&s, 10000);
    sim_isolate(&s, 3, 1);
    OK(sim_put(&s, 1, "k", "new", &r));
    uint64_t vnew = r.version;
    sim_heal(&s);
    store_meta m;
    OK(sim_local(&s, 3, "k", &m));
    CHECK(m.version < vnew); /* node 3 missed it */
    repl_stats before = sim_stats(&s, 3);
    OK(sim_get(&s, 3, "k", &r));
    CHECK(sim_holds(&r, "new"));
    CHECK_EQ(r.version, vnew);
    repl_stats after = sim_stats(&s, 3);
    CHECK_EQ(after.writebacks - before.writebacks, 1);
    CHECK_EQ(after.gets_one_round - before.gets_one_round, 0);
    OK(sim_local(&s, 3, "k", &m));
    CHECK_EQ(m.version, vnew); /* repaired by the write-back */
    /* the next read from it is one round again */
    OK(sim_get(&s, 3, "k", &r));
    CHECK_EQ(sim_stats(&s, 3).gets_one_round - after.gets_one_round, 1);
    sim_fini(&s);
}

/* A CAS id names a change, not a round: a read-modify-write that keeps
 * the value (here an add on a present key) after promises that differ
 * re-proposes it under a newer version, and clients still see the CAS id
 * of the write that made it, so gets -> cas succeeds. */
static void test_cas_id_stable(void)
{
    sim s;
    sim_init(&s, 3, 4100, NULL);
    sim_start(&s);
    sim_res r;
    sim_isolate(&s, 3, 1);
    OK(sim_put(&s, 1, "k", "v", &r)); /* node 3 misses it */
    uint64_t id = r.version;
    sim_heal(&s);
    OK(sim_get(&s, 2, "k", &r));
    CHECK_EQ(r.version, id);
    uint64_t keeps = sim_stats(&s, 3).rmws;
    CHECK_EQ(rmw_kind(&s, 3, "k", REPL_OP_ADD, "other", 0, &r), CL_ENOTSTORED);
    CHECK_EQ(sim_stats(&s, 3).rmws - keeps, 1);
    sim_run_for(&s, 10000);
    store_meta m;
    for (int node = 1; node <= 3; node++) {
        OK(sim_local(&s, node, "k", &m));
        CHECK(m.version > id);      /* re-proposed everywhere under a newer version */
        OK(sim_get(&s, node, "k", &r));
        CHECK(sim_holds(&r, "v"));
        CHECK_EQ(r.version, id);    /* ... with the CAS id of the write */
    }
    OK(rmw_kind(&s, 2, "k", REPL_OP_CAS, "w", id, &r));
    CHECK(r.version > id);
    uint64_t id2 = r.version;
    OK(sim_get(&s, 3, "k", &r));
    CHECK(sim_holds(&r, "w"));
    CHECK_EQ(r.version, id2);
    CHECK_EQ(rmw_kind(&s, 1, "k", REPL_OP_CAS, "x", id, &r), CL_EEXISTS);
    sim_fini(&s);
}

/* Every node increments one counter many times at once, on a network
 * that loses, duplicates and reorders: the end value is exact, every
 * increment returned a distinct number (a linearizable counter), and no
 * operation failed. */
static void concurrent_incr(int n, unsigned loss, unsigned dup, uint64_t seed)
{
    sim s;
    repl_config base = { .op_timeout_ms = 60000 };
    sim_init(&s, n, seed, &base);
    s.loss_pct = loss;
    s.dup_pct = dup;
    s.jitter_us = 2000; /* reorders */
    sim_start(&s);
    sim_res r;
    OK(sim_put(&s, 1, "ctr", "0", &r));
    enum { PER = 40 };
    int total = n * PER;
    sim_res *res = calloc((size_t)total, sizeof *res);
    repl_op *ops = calloc((size_t)total, sizeof *ops);
    REQUIRE(res && ops);
    for (int i = 0; i < total; i++) {
        repl_op_init(&ops[i], REPL_OP_INCR);
        ops[i].delta = 1;
        sim_rmw_start(&s, 1 + i % n, "ctr", &ops[i], &res[i]);
    }
    int all = 0;
    uint64_t end = s.now_us + 60000000;
    while (!all && s.now_us < end) {
        sim_step(&s);
        all = 1;
        for (int i = 0; i < total; i++) {
            if (res[i].done && !res[i].ret_us)
                res[i].ret_us = s.now_us;
            all &= res[i].done;
        }
    }
    CHECK(all);
    uint8_t *seen = calloc((size_t)total + 1, 1);
    int ok = 0, dups = 0, range = 0;
    for (int i = 0; i < total; i++) {
        if (res[i].rc != CL_OK)
            continue;
        ok++;
        uint64_t v = ops[i].number;
        if (v < 1 || v > (uint64_t)total)
            range++;
        else if (seen[v]++)
            dups++;
    }
    CHECK_EQ(ok, total);
    CHECK_EQ(dups, 0);
    CHECK_EQ(range, 0);
    /* real time: an increment that returned before another was called
     * got the smaller number (with distinct numbers 1..N: linearizable) */
    int order = 0;
    for (int i = 0; i < total; i++)
        for (int j = 0; j < total; j++)
            if (res[i].rc == CL_OK && res[j].rc == CL_OK && res[i].ret_us < res[j].call_us &&
                ops[i].number >= ops[j].number)
                order++;
    CHECK_EQ(order, 0);
    s.loss_pct = s.dup_pct = 0;
    OK(sim_get(&s, 1, "ctr", &r));
    char want[16];
    snprintf(want, sizeof want, "%d", total);
    CHECK(sim_holds(&r, want));
    uint64_t retries = 0, dedup = 0;
    for (int i = 1; i <= n; i++) {
        retries += sim_stats(&s, i).rmw_retries;
        dedup += sim_stats(&s, i).rmw_dedup;
    }
    printf("     n=%d loss=%u%% dup=%u%%: %d increments, %llu retries, %llu found chosen, "
           "%llu msgs (%llu lost)\n",
           n, loss, dup, total, (unsigned long long)retries, (unsigned long long)dedup,
           (unsigned long long)s.msgs_sent, (unsigned long long)s.msgs_lost);
    for (int i = 0; i < total; i++)
        repl_op_fini(&ops[i]);
    free(seen);
    free(ops);
    free(res);
    sim_fini(&s);
}

static void test_concurrent_incr_clean(void) { concurrent_incr(3, 0, 0, 11); }
static void test_concurrent_incr_faults_3(void) { concurrent_incr(3, 15, 10, 12); }
static void test_concurrent_incr_faults_5(void) { concurrent_incr(5, 10, 10, 13); }

/* ---- a linearizability check of register histories ------------------------------
 * Wing & Gong's search with memoisation (as Porcupine): find an order of
 * the operations that respects real time (an op returned before another
 * was called comes first) in which every get returns the latest put.
 * Puts whose outcome is unknown (time-out) may take effect at any time
 * after their call, or never; failed gets constrain nothing. */

enum { LIN_MAX = 48 };

struct hop {
    int put;          /* 1 put, 0 get */
    int val;          /* put: its value id (>0); get: the id read (0 = absent) */
    uint64_t call, ret; /* ret = UINT64_MAX: unknown outcome */
};

struct lin {
    const struct hop *h;
    int n;
    uint64_t must;    /* ops that must be linearized */
    uint64_t *seen;   /* memo: visited (mask, cur) */
    size_t cap;
};

static int lin_memo(struct lin *l, uint64_t mask, int cur)
{
    uint64_t key = mask * 131 + (uint64_t)cur + 1, h = key * 0x9E3779B97F4A7C15ull;
    for (size_t i = h & (l->cap - 1);; i = (i + 1) & (l->cap - 1)) {
        if (l->seen[i] == key)
            return 1;
        if (!l->seen[i]) {
            l->seen[i] = key;
            return 0;
        }
    }
}

static int lin_rec(struct lin *l, uint64_t mask, int cur)
{
    if ((mask & l->must) == l->must)
        return 1;
    if (lin_memo(l, mask, cur))
        return 0;
    uint64_t min_ret = UINT64_MAX;
    for (int j = 0; j < l->n; j++)
        if (!(mask >> j & 1) && l->h[j].ret < min_ret)
            min_ret = l->h[j].ret;
    for (int i = 0; i < l->n; i++) {
        if (mask >> i & 1 || l->h[i].call > min_ret)
            continue;
        if (l->h[i].put) {
            if (lin_rec(l, mask | 1ull << i, l->h[i].val))
                return 1;
        } else if (l->h[i].val == cur && lin_rec(l, mask | 1ull << i, cur)) {
            return 1;
        }
    }
    return 0;
}

static int linearizable(const struct hop *h, int n)
{
    struct lin l = { h, n, 0, NULL, 1u << 20 };
    for (int i = 0; i < n; i++)
        if (h[i].ret != UINT64_MAX)
            l.must |= 1ull << i;
    l.seen = calloc(l.cap, sizeof *l.seen);
    REQUIRE(l.seen != NULL);
    int ok = lin_rec(&l, 0, 0);
    free(l.seen);
    return ok;
}

static void test_lincheck_self(void)
{
    /* a stale read after a completed write is caught */
    struct hop bad[] = { { 1, 1, 0, 10 }, { 0, 0, 20, 30 } };
    CHECK(!linearizable(bad, 2));
    struct hop good[] = { { 1, 1, 0, 10 }, { 0, 1, 20, 30 }, { 1, 2, 5, 40 }, { 0, 2, 35, 50 } };
    CHECK(linearizable(good, 4));
    struct hop back[] = { { 1, 1, 0, 10 }, { 1, 2, 20, 30 }, { 0, 2, 40, 50 }, { 0, 1, 60, 70 } };
    CHECK(!linearizable(back, 4)); /* reads going back in time */
    struct hop unk[] = { { 1, 1, 0, UINT64_MAX }, { 0, 0, 5, 8 }, { 0, 1, 10, 12 } };
    CHECK(linearizable(unk, 3)); /* an unknown put taking effect late */
}

/* Clients on every node run gets and puts of one register on a faulty
 * network; the recorded history must be linearizable.  Many seeds. */
static void test_register_histories(void)
{
    int trials = 0, bad = 0, writebacks = 0, total_ops = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        sim s;
        repl_config base = { .op_timeout_ms = 20000 };
        int n = seed % 3 ? 3 : 5;
        sim_init(&s, n, 20000 + seed, &base);
        s.loss_pct = seed % 4 < 2 ? 40 : 15;
        s.dup_pct = 5;
        s.jitter_us = 10000;
        sim_start(&s);
        enum { CL = 6, PER = 8 };
        struct hop h[CL * PER];
        int nh = 0;
        sim_res cur[CL];
        int left[CL], idx[CL], next_val = 1;
        char vals[CL][16];
        for (int c = 0; c < CL; c++) {
            left[c] = PER;
            idx[c] = -1;
            cur[c].done = 1;
        }
        uint64_t end = s.now_us + 120000000;
        int running = 1;
        while (running && s.now_us < end) {
            running = 0;
            for (int c = 0; c < CL; c++) {
                if (!cur[c].done) {
                    running = 1;
                    continue;
                }
                if (idx[c] >= 0) { /* record the finished op */
                    struct hop *o = &h[idx[c]];
                    if (o->put) {
                        o->ret = cur[c].rc == CL_OK ? s.now_us : UINT64_MAX;
                    } else if (cur[c].rc == CL_OK || cur[c].rc == CL_ENOTFOUND) {
                        o->ret = s.now_us;
                        o->val = cur[c].rc == CL_OK ? atoi((const char *)cur[c].data + 1) : 0;
                    } else {
                        o->ret = 0; /* failed get: dropped below */
                    }
                    idx[c] = -1;
                }
                if (left[c]-- <= 0)
                    continue;
                running = 1;
                int node = 1 + (int)(sim_rand(&s) % (uint64_t)n);
                struct hop *o = &h[nh];
                idx[c] = nh++;
                o->call = s.now_us;
                int put = sim_rand(&s) % 2;
                if (put && seed % 2) /* half the runs write through node 1 only */
                    node = 1;
                if (put) {
                    o->put = 1;
                    o->val = next_val++;
                    snprintf(vals[c], sizeof vals[c], "v%d", o->val);
                    sim_put_start(&s, node, "reg", vals[c], &cur[c]);
                } else {
                    o->put = 0;
                    memset(cur[c].data, 0, 16);
                    sim_get_start(&s, node, "reg", &cur[c]);
                }
            }
            sim_step(&s);
        }
        /* drop failed gets */
        int m = 0;
        for (int i = 0; i < nh; i++)
            if (h[i].put || h[i].ret)
                h[m++] = h[i];
        trials++;
        total_ops += m;
        if (!linearizable(h, m)) {
            bad++;
            fprintf(stderr, "     seed %llu: history not linearizable\n", (unsigned long long)seed);
        }
        for (int i = 1; i <= n; i++)
            writebacks += (int)sim_stats(&s, i).writebacks;
        sim_fini(&s);
    }
    CHECK_EQ(bad, 0);
    CHECK(writebacks > 0); /* the faults made replicas disagree */
    printf("     %d histories (%d ops, %d write-backs), %d not linearizable\n", trials, total_ops,
           writebacks, bad);
}

/* A minority down: everything goes on.  A majority down: operations fail
 * (CL_ENOQUORUM or CL_ETIMEDOUT), nothing wrong is returned, and the
 * data is there when the nodes are back. */
static void test_crashes(void)
{
    sim s;
    repl_config base = { .op_timeout_ms = 500 };
    sim_init(&s, 5, 5000, &base);
    sim_start(&s);
    sim_res r;
    OK(sim_put(&s, 1, "k", "v1", &r));
    sim_crash(&s, 4);
    sim_crash(&s, 5);
    OK(sim_put(&s, 2, "k", "v2", &r));
    OK(sim_get(&s, 3, "k", &r));
    CHECK(sim_holds(&r, "v2"));
    repl_op op;
    repl_op_init(&op, REPL_OP_APPEND);
    op.data = (const uint8_t *)"+";
    op.len = 1;
    OK(sim_rmw(&s, 1, "k", &op, &r));
    /* the third node cut off: no majority can talk, operations time out */
    sim_isolate(&s, 3, 1);
    int rc = sim_get(&s, 1, "k", &r);
    CHECK(rc == CL_ETIMEDOUT);
    rc = sim_put(&s, 2, "k", "lost?", &r);
    CHECK(rc == CL_ETIMEDOUT); /* its outcome is unknown */
    rc = sim_rmw(&s, 1, "k", &op, &r);
    CHECK(rc == CL_ETIMEDOUT);
    sim_heal(&s);
    /* healed: the last acknowledged value, or a later one whose outcome
     * was unknown - never anything else */
    OK(sim_get(&s, 2, "k", &r));
    CHECK(sim_holds(&r, "v2+") || sim_holds(&r, "lost?") || sim_holds(&r, "lost?+") ||
          sim_holds(&r, "v2++"));
    char seen[64];
    snprintf(seen, sizeof seen, "%.*s", (int)r.len, r.data);
    /* the crashed minority comes back and catches up */
    sim_restart(&s, 4);
    sim_restart(&s, 5);
    sim_run_for(&s, 500000);
    CHECK(repl_ready(s.node[4].r));
    CHECK(repl_ready(s.node[5].r));
    OK(sim_get(&s, 5, "k", &r));
    CHECK(sim_holds(&r, seen));
    /* a majority crashed: refused at once */
    sim_crash(&s, 3);
    sim_crash(&s, 4);
    sim_crash(&s, 5);
    CHECK_EQ(sim_get(&s, 1, "k", &r), CL_ENOQUORUM);
    CHECK_EQ(sim_put(&s, 1, "k", "x", &r), CL_ENOQUORUM);
    CHECK_EQ(sim_rmw(&s, 2, "k", &op, &r), CL_ENOQUORUM);
    repl_op_fini(&op);
    sim_fini(&s);
}

/* Every message delivered during some operations is delivered again
 * afterwards (requests and replies, as a replaying adversary inside the
 * transport would): nothing changes. */
static void test_replay(void)
{
    sim s;
    sim_init(&s, 3, 6000, NULL);
    sim_start(&s);
    sim_res r;
    s.record = 1;
    OK(sim_put(&s, 1, "k", "first", &r));
    repl_op op;
    repl_op_init(&op, REPL_OP_APPEND);
    op.data = (const uint8_t *)"+a";
    op.len = 2;
    OK(sim_rmw(&s, 2, "k", &op, &r));
    OK(sim_put(&s, 3, "k2", "x", &r));
    OK(sim_put(&s, 3, "k2", NULL, &r)); /* deleted */
    OK(sim_get(&s, 1, "k", &r));
    sim_run_for(&s, 10000);
    s.record = 0;
    OK(sim_put(&s, 1, "k", "second", &r)); /* newer than everything recorded */
    uint64_t vk = r.version;
    sim_run_for(&s, 10000);
    uint64_t dropped = 0;
    for (int i = 1; i <= 3; i++)
        dropped += sim_stats(&s, i).replayed_dropped;
    for (size_t i = 0; i < s.log_n; i++)
        sim_inject(&s, s.log[i]);
    sim_run_for(&s, 10000);
    uint64_t dropped2 = 0;
    for (int i = 1; i <= 3; i++)
        dropped2 += sim_stats(&s, i).replayed_dropped;
    CHECK(dropped2 > dropped); /* stale replies were recognised */
    for (int i = 1; i <= 3; i++) {
        store_meta m;
        OK(sim_local(&s, i, "k", &m));
        CHECK_EQ(m.version, vk);
        OK(sim_local(&s, i, "k2", &m));
        CHECK(m.tombstone);
        OK(sim_get(&s, i, "k", &r));
        CHECK(sim_holds(&r, "second"));
        CHECK_EQ(sim_get(&s, i, "k2", &r), CL_ENOTFOUND);
    }
    /* messages of an older incarnation: node 3 restarts, and everything
     * it sent before is delivered again under its old epoch */
    sim_crash(&s, 3);
    sim_restart(&s, 3);
    sim_run_for(&s, 100000);
    REQUIRE(repl_ready(s.node[3].r));
    uint64_t d1 = sim_stats(&s, 1).replayed_dropped + sim_stats(&s, 2).replayed_dropped;
    size_t old = 0;
    for (size_t i = 0; i < s.log_n; i++)
        if (s.log[i]->from == 3 && s.log[i]->to != 3) {
            sim_inject_as(&s, s.log[i], 1);
            old++;
        }
    CHECK(old > 0);
    uint64_t d2 = sim_stats(&s, 1).replayed_dropped + sim_stats(&s, 2).replayed_dropped;
    CHECK_EQ(d2 - d1, old); /* every one refused at the door */
    for (int i = 1; i <= 3; i++) {
        OK(sim_get(&s, i, "k", &r));
        CHECK(sim_holds(&r, "second"));
        CHECK_EQ(r.version, vk);
    }
    repl_op_fini(&op);
    sim_fini(&s);
}

int main(void)
{
    RUN(test_basic_3);
    RUN(test_basic_5);
    RUN(test_rmw_3);
    RUN(test_rmw_5);
    RUN(test_one_round_read);
    RUN(test_writeback);
    RUN(test_cas_id_stable);
    RUN(test_concurrent_incr_clean);
    RUN(test_concurrent_incr_faults_3);
    RUN(test_concurrent_incr_faults_5);
    RUN(test_lincheck_self);
    RUN(test_register_histories);
    RUN(test_crashes);
    RUN(test_replay);
    return th_done();
}
