/* test_recovery.c - a restarted node (empty store, next epoch) copies the
 * state from a majority before it votes again: it never counts toward a
 * quorum while RECOVERING, and no acknowledged write is lost across
 * repeated crashes and restarts of minorities, also with writes going on
 * during the recoveries. */
#include "simnet.h"

#define OK(x) CHECK_EQ((x), CL_OK)

/* Node 3 restarts but cannot reach node 2, so it stays RECOVERING; when
 * node 1 can then talk only to node 3, nothing completes (3 does not
 * vote).  Healed, 3 recovers, and has every value. */
static void test_no_vote_until_synced(void)
{
    sim s;
    repl_config base = { .op_timeout_ms = 400 };
    sim_init(&s, 3, 7000, &base);
    sim_start(&s);
    sim_res r;
    OK(sim_put(&s, 1, "a", "1", &r));
    OK(sim_put(&s, 2, "b", "2", &r));
    sim_crash(&s, 3);
    OK(sim_put(&s, 1, "c", "3", &r)); /* while 3 is down */
    sim_partition(&s, 3, 2, 1);
    sim_restart(&s, 3);
    sim_run_for(&s, 300000);
    CHECK(!repl_ready(s.node[3].r));
    CHECK_EQ(sim_stats(&s, 3).ready, 0);
    sim_partition(&s, 1, 2, 1); /* 1 sees only the recovering 3 */
    CHECK_EQ(sim_get(&s, 1, "a", &r), CL_ETIMEDOUT);
    CHECK_EQ(sim_put(&s, 1, "d", "x", &r), CL_ETIMEDOUT);
    /* 3 may propose (counting its peers only): through 2 it can't reach */
    sim_heal(&s);
    sim_run_for(&s, 300000);
    CHECK(repl_ready(s.node[3].r));
    store_meta m;
    OK(sim_local(&s, 3, "a", &m));
    OK(sim_local(&s, 3, "b", &m));
    OK(sim_local(&s, 3, "c", &m));
    OK(sim_get(&s, 3, "c", &r));
    CHECK(sim_holds(&r, "3"));
    CHECK(sim_stats(&s, 3).recovered_records >= 3);
    sim_fini(&s);
}

/* A recovering node may act as proposer, counting only its peers: an
 * operation submitted the moment it restarts completes. */
static void test_recovering_proposer(void)
{
    sim s;
    sim_init(&s, 3, 7100, NULL);
    s.delay_us = 2000; /* recovery takes a few round trips */
    sim_start(&s);
    sim_res r, g, p;
    OK(sim_put(&s, 1, "k", "v", &r));
    sim_crash(&s, 2);
    sim_restart(&s, 2);
    CHECK(!repl_ready(s.node[2].r));
    sim_get_start(&s, 2, "k", &g);
    sim_put_start(&s, 2, "k2", "w", &p);
    sim_run_until(&s, &g.done, 1000000);
    CHECK(g.done && sim_holds(&g, "v"));
    OK(sim_wait(&s, &p));
    sim_run_for(&s, 100000);
    CHECK(repl_ready(s.node[2].r));
    OK(sim_get(&s, 3, "k2", &r));
    CHECK(sim_holds(&r, "w"));
    sim_fini(&s);
}

/* Rounds of: crash a random minority, write (acknowledged) while it is
 * down and while it recovers, restart it.  At the end every key holds
 * its last acknowledged value on every node, or the value of a later
 * write whose outcome was reported unknown.  (A write racing a
 * recovery fence may be refused by the fenced replicas after another
 * stored it: CL_ETIMEDOUT, never a silent loss.) */
static void churn(int n, uint64_t seed)
{
    sim s;
    repl_config base = { .op_timeout_ms = 2000 };
    sim_init(&s, n, seed, &base);
    s.jitter_us = 500;
    sim_start(&s);
    enum { KEYS = 12, ROUNDS = 8 };
    char last[KEYS][32], maybe[KEYS][32];
    int written[KEYS];
    memset(written, 0, sizeof written);
    memset(maybe, 0, sizeof maybe);
    int minority = (n - 1) / 2;
    int acked = 0, unknown = 0, during = 0;
    for (int round = 0; round < ROUNDS; round++) {
        int down[SIM_MAX + 1] = { 0 };
        for (int c = 0; c < minority; c++) {
            int id;
            do
                id = 1 + (int)(sim_rand(&s) % (uint64_t)n);
            while (down[id]);
            down[id] = 1;
            sim_crash(&s, id);
        }
        /* writes while it is down */
        for (int k = 0; k < KEYS; k++) {
            int node;
            do
                node = 1 + (int)(sim_rand(&s) % (uint64_t)n);
            while (down[node]);
            char key[16], val[32];
            snprintf(key, sizeof key, "key%d", k);
            snprintf(val, sizeof val, "r%d-k%d", round, k);
            sim_res r;
            int rc = sim_put(&s, node, key, val, &r);
            if (rc == CL_OK) {
                memcpy(last[k], val, sizeof val);
                maybe[k][0] = 0;
                written[k] = 1;
                acked++;
            } else {
                unknown++;
            }
        }
        /* restart, and write while it recovers */
        sim_res pend[KEYS];
        char pval[KEYS][32];
        for (int id = 1; id <= n; id++)
            if (down[id])
                sim_restart(&s, id);
        for (int k = 0; k < KEYS; k += 3) {
            char key[16];
            snprintf(key, sizeof key, "key%d", k);
            snprintf(pval[k], sizeof pval[k], "rec%d-k%d", round, k);
            int node;
            do
                node = 1 + (int)(sim_rand(&s) % (uint64_t)n);
            while (down[node]);
            sim_put_start(&s, node, key, pval[k], &pend[k]);
        }
        sim_run_for(&s, 400000);
        for (int k = 0; k < KEYS; k += 3) {
            sim_wait(&s, &pend[k]);
            if (pend[k].rc == CL_OK) {
                memcpy(last[k], pval[k], sizeof pval[k]);
                maybe[k][0] = 0;
                written[k] = 1;
            } else {
                CHECK_EQ(pend[k].rc, CL_ETIMEDOUT);
                memcpy(maybe[k], pval[k], sizeof pval[k]);
                during++;
            }
        }
        for (int id = 1; id <= n; id++)
            CHECK(repl_ready(s.node[id].r));
    }
    /* every acknowledged value is there, read through every node */
    int bad = 0;
    for (int k = 0; k < KEYS; k++) {
        if (!written[k])
            continue;
        char key[16];
        snprintf(key, sizeof key, "key%d", k);
        for (int id = 1; id <= n; id++) {
            sim_res r;
            if (sim_get(&s, id, key, &r) != CL_OK ||
                !(sim_holds(&r, last[k]) || (maybe[k][0] && sim_holds(&r, maybe[k])))) {
                bad++;
                fprintf(stderr, "     %s via node %d: rc %s, %.*s, want %s\n", key, id,
                        cl_errname(r.rc), (int)r.len, r.data, last[k]);
            }
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(unknown, 0);
    printf("     n=%d: %d rounds, %d acknowledged writes, all present (%d writes during "
           "recovery of unknown outcome)\n", n, ROUNDS, acked, during);
    sim_fini(&s);
}

static void test_churn_3(void) { churn(3, 7200); }
static void test_churn_5(void) { churn(5, 7300); }

/* After a recovery, ballots made before it cannot complete: the fence
 * makes every replica the recovering node read refuse them, and
 * proposers move above it (they keep working). */
static void test_fence(void)
{
    sim s;
    sim_init(&s, 3, 7400, NULL);
    sim_start(&s);
    sim_res r;
    repl_op op;
    repl_op_init(&op, REPL_OP_INCR);
    op.delta = 1;
    OK(sim_put(&s, 1, "n", "0", &r));
    OK(sim_rmw(&s, 1, "n", &op, &r));
    sim_crash(&s, 2);
    sim_restart(&s, 2);
    sim_run_for(&s, 200000);
    REQUIRE(repl_ready(s.node[2].r));
    uint64_t nacks = 0;
    for (int i = 1; i <= 3; i++)
        nacks += sim_stats(&s, i).nacks;
    for (int i = 1; i <= 3; i++)
        OK(sim_rmw(&s, i, "n", &op, &r));
    OK(sim_get(&s, 2, "n", &r));
    CHECK(sim_holds(&r, "4"));
    uint64_t nacks2 = 0;
    for (int i = 1; i <= 3; i++)
        nacks2 += sim_stats(&s, i).nacks;
    CHECK(nacks2 > nacks); /* the fence refused the first ballot below it */
    repl_op_fini(&op);
    sim_fini(&s);
}

int main(void)
{
    RUN(test_no_vote_until_synced);
    RUN(test_recovering_proposer);
    RUN(test_churn_3);
    RUN(test_churn_5);
    RUN(test_fence);
    return th_done();
}
