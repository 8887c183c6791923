/* test_eventual.c - EVENTUAL mode on the simulated network: writes are
 * applied locally and acknowledged without a quorum, pushed in batches,
 * resolved last-writer-wins by hybrid logical clock; nodes that missed
 * pushes (partitioned, lossy links, restarted) converge through
 * anti-entropy; deletes are tombstones that win when newer. */
#include "simnet.h"

#define OK(x) CHECK_EQ((x), CL_OK)

static const repl_namespace NS[] = { { "ev:", REPL_EVENTUAL } };

static void setup(sim *s, int n, uint64_t seed, unsigned ae_ms)
{
    repl_config base = { .ns = NS, .n_ns = 1, .antientropy_ms = ae_ms };
    sim_init(s, n, seed, &base);
    sim_start(s);
}

/* Every node holds the same version of key (and the same value or none).
 * Returns the version. */
static uint64_t converged(sim *s, const char *key, const char *want)
{
    uint64_t v0 = 0;
    for (int i = 1; i <= s->n; i++) {
        sim_res r;
        int rc = sim_get(s, i, key, &r);
        if (want) {
            CHECK(sim_holds(&r, want));
        } else {
            CHECK_EQ(rc, CL_ENOTFOUND);
        }
        store_meta m;
        if (sim_local(s, i, key, &m) == CL_OK) {
            if (i == 1)
                v0 = m.version;
            CHECK_EQ(m.version, v0);
        }
    }
    return v0;
}

static void test_local_ack(void)
{
    sim s;
    setup(&s, 3, 9000, 10000);
    sim_isolate(&s, 1, 1);
    uint64_t msgs = s.msgs_sent;
    sim_res r;
    OK(sim_put(&s, 1, "ev:k", "mine", &r)); /* no quorum needed */
    CHECK(r.version != 0);
    OK(sim_get(&s, 1, "ev:k", &r)); /* reads are local */
    CHECK(sim_holds(&r, "mine"));
    CHECK_EQ(sim_get(&s, 2, "ev:k", &r), CL_ENOTFOUND); /* not there yet */
    CHECK(s.msgs_sent - msgs <= 2); /* at most the (lost) pushes */
    sim_heal(&s);
    sim_fini(&s);
}

/* Many writes in one instant leave as one push message per peer. */
static void test_batched_push(void)
{
    sim s;
    setup(&s, 3, 9100, 10000);
    sim_run_for(&s, 2000);
    uint64_t msgs = s.msgs_sent;
    sim_res res[50];
    for (int i = 0; i < 50; i++) {
        char key[16], val[16];
        snprintf(key, sizeof key, "ev:%d", i);
        snprintf(val, sizeof val, "v%d", i);
        sim_put_start(&s, 1, key, val, &res[i]);
    }
    sim_run_for(&s, 5000);
    for (int i = 0; i < 50; i++)
        CHECK(res[i].done && res[i].rc == CL_OK);
    CHECK_EQ(s.msgs_sent - msgs, 2); /* one PUSH to each peer */
    CHECK_EQ(sim_stats(&s, 1).pushed, 50);
    for (int i = 0; i < 50; i += 7) {
        char key[16], val[16];
        snprintf(key, sizeof key, "ev:%d", i);
        snprintf(val, sizeof val, "v%d", i);
        converged(&s, key, val);
    }
    CHECK(sim_stats(&s, 3).applied_remote >= 50);
    sim_fini(&s);
}

/* Writes on both sides of a partition, pushes lost; after healing,
 * anti-entropy makes every node agree, the later write winning. */
static void test_partition_converges(void)
{
    sim s;
    setup(&s, 3, 9200, 100);
    sim_res r;
    OK(sim_put(&s, 1, "ev:shared", "before", &r));
    OK(sim_put(&s, 2, "ev:gone", "to be deleted", &r));
    sim_run_for(&s, 10000);
    sim_isolate(&s, 3, 1);
    OK(sim_put(&s, 1, "ev:a", "from 1", &r));
    OK(sim_put(&s, 3, "ev:b", "from 3", &r));
    OK(sim_put(&s, 1, "ev:shared", "1 first", &r));
    sim_run_for(&s, 5000); /* later in time */
    OK(sim_put(&s, 3, "ev:shared", "3 later", &r));
    uint64_t v3 = r.version;
    OK(sim_put(&s, 3, "ev:gone", NULL, &r)); /* delete while cut off */
    sim_run_for(&s, 500000); /* anti-entropy cannot cross the cut */
    CHECK_EQ(sim_get(&s, 1, "ev:b", &r), CL_ENOTFOUND);
    sim_heal(&s);
    sim_run_for(&s, 1000000);
    converged(&s, "ev:a", "from 1");
    converged(&s, "ev:b", "from 3");
    CHECK_EQ(converged(&s, "ev:shared", "3 later"), v3);
    converged(&s, "ev:gone", NULL);
    uint64_t ae = 0;
    for (int i = 1; i <= 3; i++)
        ae += sim_stats(&s, i).antientropy_pulled;
    CHECK(ae > 0);
    sim_fini(&s);
}

/* A lossy network: pushes are lost, anti-entropy repairs. */
static void test_lossy_converges(void)
{
    sim s;
    setup(&s, 5, 9300, 100);
    s.loss_pct = 30;
    s.dup_pct = 10;
    s.jitter_us = 3000;
    char key[16], val[16];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "ev:%d", i % 20);
        snprintf(val, sizeof val, "w%d", i);
        sim_res r;
        OK(sim_put(&s, 1 + i % 5, key, val, &r));
        sim_run_for(&s, 300);
    }
    sim_run_for(&s, 3000000);
    s.loss_pct = s.dup_pct = 0;
    sim_run_for(&s, 1000000);
    for (int k = 0; k < 20; k++) {
        snprintf(key, sizeof key, "ev:%d", k);
        /* the last write of key k was i = 80 + k */
        snprintf(val, sizeof val, "w%d", 80 + k);
        converged(&s, key, val);
    }
    sim_fini(&s);
}

/* RMWs run on the local copy; a restarted node copies the state. */
static void test_rmw_and_restart(void)
{
    sim s;
    setup(&s, 3, 9400, 100);
    sim_res r;
    repl_op op;
    repl_op_init(&op, REPL_OP_INCR);
    op.delta = 5;
    op.vivify = 1;
    op.initial = 1;
    OK(sim_rmw(&s, 2, "ev:n", &op, &r));
    CHECK(sim_holds(&r, "1"));
    OK(sim_rmw(&s, 2, "ev:n", &op, &r));
    CHECK(sim_holds(&r, "6"));
    repl_op_fini(&op);
    repl_op_init(&op, REPL_OP_ADD);
    op.data = (const uint8_t *)"x";
    op.len = 1;
    CHECK_EQ(sim_rmw(&s, 2, "ev:n", &op, &r), CL_ENOTSTORED);
    repl_op_fini(&op);
    sim_crash(&s, 3);
    OK(sim_put(&s, 1, "ev:while-down", "yes", &r));
    sim_restart(&s, 3);
    sim_run_for(&s, 300000);
    CHECK(repl_ready(s.node[3].r));
    converged(&s, "ev:n", "6");
    converged(&s, "ev:while-down", "yes");
    sim_fini(&s);
}

int main(void)
{
    RUN(test_local_ack);
    RUN(test_batched_push);
    RUN(test_partition_converges);
    RUN(test_lossy_converges);
    RUN(test_rmw_and_restart);
    return th_done();
}
