/* test_locks.c - locks with release consistency on the simulated
 * network: mutual exclusion across nodes, fencing tokens that increase,
 * renewal by the holder, stale unlocks refused, a crashed holder's lease
 * running out, and the release set: writes made under a lock in
 * eventual mode are visible to the next holder on another node even
 * when the asynchronous pushes never reached it. */
#include "simnet.h"

#define OK(x) CHECK_EQ((x), CL_OK)

static const repl_namespace NS[] = { { "ev:", REPL_EVENTUAL } };

static void lock_start(sim *s, int node, const char *name, uint64_t owner, unsigned lease_ms,
                       unsigned wait_ms, sim_res *o)
{
    memset(o, 0, sizeof *o);
    o->call_us = s->now_us;
    REQUIRE(repl_lock(s->node[node].r, sim_k(name), strlen(name), owner, lease_ms, wait_ms,
                      sim_res_cb, o) == CL_OK);
}

static int lock(sim *s, int node, const char *name, uint64_t owner, unsigned lease_ms,
                unsigned wait_ms, uint64_t *token)
{
    sim_res o;
    lock_start(s, node, name, owner, lease_ms, wait_ms, &o);
    int rc = sim_wait(s, &o);
    if (token)
        *token = o.token;
    if (rc == CL_OK)
        o.ret_us = s->now_us;
    return rc;
}

static int unlock(sim *s, int node, const char *name, uint64_t owner, uint64_t token,
                  const repl_wkey *ws, size_t n_ws)
{
    sim_res o;
    memset(&o, 0, sizeof o);
    REQUIRE(repl_unlock(s->node[node].r, sim_k(name), strlen(name), owner, token, ws, n_ws,
                        sim_res_cb, &o) == CL_OK);
    return sim_wait(s, &o);
}

static void test_mutual_exclusion(void)
{
    sim s;
    sim_init(&s, 3, 10000, NULL);
    sim_start(&s);
    uint64_t t1, t2, t3;
    OK(lock(&s, 1, "L", 101, 10000, 0, &t1));
    CHECK(t1 > 0);
    CHECK_EQ(lock(&s, 2, "L", 202, 10000, 50, &t2), CL_ETIMEDOUT);
    CHECK_EQ(lock(&s, 3, "L", 303, 10000, 0, &t2), CL_ETIMEDOUT);
    CHECK(sim_stats(&s, 2).lock_waits > 0);
    /* the holder again: renewed, same token */
    OK(lock(&s, 1, "L", 101, 10000, 0, &t3));
    CHECK_EQ(t3, t1);
    /* a wrong token or owner is stale */
    CHECK_EQ(unlock(&s, 2, "L", 202, t1, NULL, 0), CL_ESTALE);
    CHECK_EQ(unlock(&s, 1, "L", 101, t1 + 7, NULL, 0), CL_ESTALE);
    OK(unlock(&s, 1, "L", 101, t1, NULL, 0));
    CHECK_EQ(unlock(&s, 1, "L", 101, t1, NULL, 0), CL_ESTALE); /* released already */
    /* token 0: whatever this owner holds, never another owner's grant */
    OK(lock(&s, 1, "Z", 111, 10000, 0, &t3));
    CHECK_EQ(unlock(&s, 2, "Z", 222, 0, NULL, 0), CL_ESTALE);
    OK(unlock(&s, 2, "Z", 111, 0, NULL, 0));
    CHECK_EQ(unlock(&s, 1, "Z", 111, t3, NULL, 0), CL_ESTALE);
    OK(lock(&s, 2, "L", 202, 10000, 0, &t2));
    CHECK(t2 > t1);
    /* another lock is independent */
    uint64_t u;
    OK(lock(&s, 3, "M", 303, 10000, 0, &u));
    /* a waiter is granted when the holder releases */
    sim_res w;
    repl_stats st0 = sim_stats(&s, 3), hold0 = sim_stats(&s, 2);
    lock_start(&s, 3, "L", 303, 10000, 5000, &w);
    sim_run_for(&s, 50000);
    CHECK(!w.done);
    /* it waits by reading the register (no promise raised), one round each */
    CHECK(sim_stats(&s, 3).gets_one_round - st0.gets_one_round >= 3);
    CHECK_EQ(sim_stats(&s, 3).rmw_retries - st0.rmw_retries, 0);
    CHECK_EQ(sim_stats(&s, 2).nacks - hold0.nacks, 0);
    OK(unlock(&s, 2, "L", 202, t2, NULL, 0));
    OK(sim_wait(&s, &w));
    CHECK(w.token > t2);
    sim_fini(&s);
}

/* Many owners on all nodes contend for one lock: at any moment at most
 * one holds it, and tokens strictly increase in grant order. */
static void test_contention(void)
{
    sim s;
    sim_init(&s, 3, 10100, NULL);
    s.jitter_us = 500;
    sim_start(&s);
    enum { OWNERS = 9, ROUNDS = 3 };
    sim_res res[OWNERS];
    int rounds[OWNERS] = { 0 };
    int holder = -1, overlaps = 0, grants = 0;
    uint64_t last_token = 0, bad_tokens = 0;
    for (int i = 0; i < OWNERS; i++)
        lock_start(&s, 1 + i % 3, "hot", 1000 + (uint64_t)i, 60000, 20000, &res[i]);
    uint64_t end = s.now_us + 60u * 1000 * 1000;
    while (grants < OWNERS * ROUNDS && s.now_us < end) {
        sim_step(&s);
        for (int i = 0; i < OWNERS; i++) {
            if (!res[i].done)
                continue;
            res[i].done = 0;
            if (res[i].rc != CL_OK) { /* timed out waiting: try again */
                lock_start(&s, 1 + i % 3, "hot", 1000 + (uint64_t)i, 60000, 20000, &res[i]);
                continue;
            }
            if (holder != -1)
                overlaps++;
            holder = i;
            grants++;
            if (res[i].token <= last_token)
                bad_tokens++;
            last_token = res[i].token;
            /* hold a little, release, and queue up again */
            sim_run_for(&s, 2000);
            holder = -1;
            CHECK_EQ(unlock(&s, 1 + (i + 1) % 3, "hot", 1000 + (uint64_t)i, res[i].token,
                            NULL, 0),
                     CL_OK);
            if (++rounds[i] < ROUNDS)
                lock_start(&s, 1 + i % 3, "hot", 1000 + (uint64_t)i, 60000, 20000, &res[i]);
        }
    }
    CHECK_EQ(grants, OWNERS * ROUNDS);
    CHECK_EQ(overlaps, 0);
    CHECK_EQ(bad_tokens, 0);
    sim_fini(&s);
}

/* The holder's node crashes: its lease runs out and another node's
 * waiter gets the lock with a larger token. */
static void test_lease_expiry(void)
{
    sim s;
    sim_init(&s, 3, 10200, NULL);
    sim_start(&s);
    uint64_t t1, t2;
    OK(lock(&s, 1, "L", 1, 300, 0, &t1));
    uint64_t granted_at = s.now_us;
    sim_crash(&s, 1);
    sim_res w;
    lock_start(&s, 2, "L", 2, 5000, 3000, &w);
    OK(sim_wait(&s, &w));
    t2 = w.token;
    CHECK(t2 > t1);
    CHECK(s.now_us - granted_at >= 300000); /* not before the lease ended */
    CHECK(s.now_us - granted_at < 1500000);
    sim_fini(&s);
}

/* Eventual mode: the holder on node 1 writes ev:x, the pushes to node 2
 * are lost (cut), anti-entropy is slow; the next holder on node 2 still
 * reads the value, because the grant carried the release set and node 2
 * caught up before the grant completed. */
static void test_release_set_eventual(void)
{
    repl_config base = { .ns = NS, .n_ns = 1, .antientropy_ms = 600000 };
    sim s;
    sim_init(&s, 3, 10300, &base);
    sim_start(&s);
    sim_partition(&s, 1, 2, 1);
    uint64_t t1, t2;
    OK(lock(&s, 1, "L", 1, 10000, 0, &t1));
    sim_res r;
    CHECK_EQ(sim_put(&s, 1, "ev:x", "written under the lock", &r), CL_OK);
    repl_wkey ws = { sim_k("ev:x"), 4, r.version };
    OK(sim_put(&s, 1, "ev:y", "another", &r));
    repl_wkey ws2[2] = { ws, { sim_k("ev:y"), 4, r.version } };
    OK(unlock(&s, 1, "L", 1, t1, ws2, 2));
    sim_run_for(&s, 20000);
    CHECK_EQ(sim_get(&s, 2, "ev:x", &r), CL_ENOTFOUND); /* never pushed to node 2 */
    OK(lock(&s, 2, "L", 2, 10000, 0, &t2));
    OK(sim_get(&s, 2, "ev:x", &r));
    CHECK(sim_holds(&r, "written under the lock"));
    OK(sim_get(&s, 2, "ev:y", &r));
    CHECK(sim_holds(&r, "another"));
    CHECK(sim_stats(&s, 2).catchup_fetched >= 1);
    /* node 2 releases with nothing new; node 1's next grant still
     * carries what it needs (the set accumulates) */
    OK(unlock(&s, 2, "L", 2, t2, NULL, 0));
    sim_heal(&s);
    uint64_t t3;
    OK(lock(&s, 3, "L", 3, 10000, 0, &t3));
    OK(sim_get(&s, 3, "ev:x", &r));
    CHECK(sim_holds(&r, "written under the lock"));
    sim_fini(&s);
}

/* The holder's node crashes right after unlock: its writes were pushed to
 * a majority at unlock, so the next holder still catches up (here from
 * node 3; node 2 never got the asynchronous push). */
static void test_holder_crash_after_unlock(void)
{
    repl_config base = { .ns = NS, .n_ns = 1, .antientropy_ms = 600000 };
    sim s;
    sim_init(&s, 3, 10400, &base);
    sim_start(&s);
    uint64_t t1, t2;
    sim_partition(&s, 1, 2, 1);
    OK(lock(&s, 1, "L", 1, 10000, 0, &t1));
    sim_res r;
    OK(sim_put(&s, 1, "ev:x", "survives its writer", &r));
    repl_wkey ws = { sim_k("ev:x"), 4, r.version };
    OK(unlock(&s, 1, "L", 1, t1, &ws, 1));
    sim_crash(&s, 1);
    sim_heal(&s);
    CHECK_EQ(sim_get(&s, 2, "ev:x", &r), CL_ENOTFOUND);
    OK(lock(&s, 2, "L", 2, 10000, 0, &t2));
    CHECK(t2 > t1);
    OK(sim_get(&s, 2, "ev:x", &r));
    CHECK(sim_holds(&r, "survives its writer"));
    sim_fini(&s);
}

int main(void)
{
    RUN(test_mutual_exclusion);
    RUN(test_contention);
    RUN(test_lease_expiry);
    RUN(test_release_set_eventual);
    RUN(test_holder_crash_after_unlock);
    return th_done();
}
