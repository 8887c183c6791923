/*
 * test_locks.c - the lock table: mutual exclusion under contention (4
 * threads x many lock/increment/unlock cycles end at the exact count),
 * waits that time out and waits that are woken by a release, re-locking,
 * release by a non-holder, release_all, lease expiry, increasing fencing
 * tokens, the state version handed to the next holder, bad arguments.
 */
#include "../harness.h"

#include <pthread.h>
#include <sched.h>

#include "common/err.h"
#include "runtime/locks.h"

#define MS 1000000ull

static const uint8_t *N(const char *s) { return (const uint8_t *)s; }

static void test_basic(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(0, &l) == CL_OK);
    rt_lock_grant g1, g2, g3;
    uint64_t now = rt_locks_now_ns();
    CHECK_EQ(rt_locks_acquire(l, N("\x01tA/a"), 5, 1, now, &g1), CL_OK);
    CHECK(g1.token > 0);
    CHECK_EQ(g1.state_version, 0);
    CHECK(g1.lease_until_ns >= now + (RT_LOCK_DEFAULT_LEASE_MS - 1000) * MS);
    /* the holder may lock again: same hold, same token */
    CHECK_EQ(rt_locks_acquire(l, N("\x01tA/a"), 5, 1, now, &g2), CL_OK);
    CHECK_EQ(g2.token, g1.token);
    /* someone else: try once, then fail */
    CHECK_EQ(rt_locks_acquire(l, N("\x01tA/a"), 5, 2, 0, NULL), CL_EAGAIN);
    /* the same name in another namespace is another lock */
    CHECK_EQ(rt_locks_acquire(l, N("\x01tB/a"), 5, 2, 0, &g3), CL_OK);
    CHECK(g3.token > g1.token);
    /* only the holder releases */
    CHECK_EQ(rt_locks_release(l, N("\x01tA/a"), 5, 2, 0), CL_ENOTFOUND);
    CHECK_EQ(rt_locks_release(l, N("\x01tA/a"), 5, 1, 7), CL_OK);
    CHECK_EQ(rt_locks_release(l, N("\x01tA/a"), 5, 1, 0), CL_ENOTFOUND);   /* once */
    CHECK_EQ(rt_locks_release(l, N("\x01tA/zz"), 6, 1, 0), CL_ENOTFOUND);  /* never held */
    /* the next holder gets a larger token and (at least) the released version */
    CHECK_EQ(rt_locks_acquire(l, N("\x01tA/a"), 5, 2, 0, &g2), CL_OK);
    CHECK(g2.token > g3.token);
    CHECK(g2.state_version >= 7);
    CHECK_EQ(rt_locks_release(l, N("\x01tA/a"), 5, 2, 0), CL_OK);
    CHECK_EQ(rt_locks_release(l, N("\x01tB/a"), 5, 2, 0), CL_OK);
    /* bad arguments */
    uint8_t long_name[RT_LOCK_NAME_MAX + 1];
    memset(long_name, 'n', sizeof long_name);
    CHECK_EQ(rt_locks_acquire(l, N("x"), 1, 0, 0, NULL), CL_EINVAL);
    CHECK_EQ(rt_locks_acquire(l, N("x"), 0, 1, 0, NULL), CL_EINVAL);
    CHECK_EQ(rt_locks_acquire(l, long_name, sizeof long_name, 1, 0, NULL), CL_EINVAL);
    CHECK_EQ(rt_locks_acquire(l, long_name, RT_LOCK_NAME_MAX, 1, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_release(l, long_name, RT_LOCK_NAME_MAX, 1, 0), CL_OK);
    rt_locks_destroy(l);
}

static void test_timeout(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(0, &l) == CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("t"), 1, 1, 0, NULL), CL_OK);
    uint64_t t0 = rt_locks_now_ns();
    CHECK_EQ(rt_locks_acquire(l, N("t"), 1, 2, t0 + 60 * MS, NULL), CL_EAGAIN);
    uint64_t waited = rt_locks_now_ns() - t0;
    CHECK(waited >= 60 * MS);
    CHECK(waited < 2000 * MS);
    /* the timed-out waiter left nothing behind: the holder still has it */
    CHECK_EQ(rt_locks_release(l, N("t"), 1, 1, 0), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("t"), 1, 2, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_release(l, N("t"), 1, 2, 0), CL_OK);
    rt_locks_destroy(l);
}

struct waiter {
    rt_locks *l;
    uint64_t owner, deadline;
    int rc;
    rt_lock_grant g;
    uint64_t got_at;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    w->rc = rt_locks_acquire(w->l, N("w"), 1, w->owner, w->deadline, &w->g);
    w->got_at = rt_locks_now_ns();
    return NULL;
}

/* A waiter is woken by the release (long before its deadline) and
 * receives the releaser's state version. */
static void test_wakeup_and_version(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(0, &l) == CL_OK);
    rt_lock_grant g1;
    CHECK_EQ(rt_locks_acquire(l, N("w"), 1, 1, 0, &g1), CL_OK);
    struct waiter w = {.l = l, .owner = 2, .deadline = rt_locks_now_ns() + 10000 * MS};
    pthread_t t;
    pthread_create(&t, NULL, wait_thread, &w);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t released = rt_locks_now_ns();
    CHECK_EQ(rt_locks_release(l, N("w"), 1, 1, 42), CL_OK);
    pthread_join(t, NULL);
    CHECK_EQ(w.rc, CL_OK);
    CHECK(w.got_at - released < 2000 * MS);
    CHECK(w.g.token > g1.token);
    CHECK_EQ(w.g.state_version, 42);
    CHECK_EQ(rt_locks_release(l, N("w"), 1, 2, 0), CL_OK);
    rt_locks_destroy(l);
}

static void test_release_all(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(0, &l) == CL_OK);
    CHECK_EQ(rt_locks_release_all(l, 9), 0);   /* empty table */
    CHECK_EQ(rt_locks_acquire(l, N("a"), 1, 1, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("b"), 1, 1, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("c"), 1, 1, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("d"), 1, 2, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_release_all(l, 1), 3);
    CHECK_EQ(rt_locks_release_all(l, 1), 0);
    CHECK_EQ(rt_locks_acquire(l, N("a"), 1, 3, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("b"), 1, 3, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("c"), 1, 3, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_acquire(l, N("d"), 1, 3, 0, NULL), CL_EAGAIN);   /* still owner 2's */
    CHECK_EQ(rt_locks_release_all(l, 3), 3);

    /* release_all wakes a waiter */
    CHECK_EQ(rt_locks_acquire(l, N("w"), 1, 1, 0, NULL), CL_OK);
    struct waiter w = {.l = l, .owner = 4, .deadline = rt_locks_now_ns() + 10000 * MS};
    pthread_t t;
    pthread_create(&t, NULL, wait_thread, &w);
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK_EQ(rt_locks_release_all(l, 1), 1);
    pthread_join(t, NULL);
    CHECK_EQ(w.rc, CL_OK);
    CHECK_EQ(rt_locks_release_all(l, 4), 1);
    CHECK_EQ(rt_locks_release_all(l, 2), 1);
    rt_locks_destroy(l);
}

/* A holder that never releases loses the lock when its lease runs out:
 * a waiter takes it over with a larger token, and the old holder's late
 * unlock is refused. */
static void test_lease_expiry(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(80, &l) == CL_OK);
    rt_lock_grant g1, g2;
    CHECK_EQ(rt_locks_acquire(l, N("x"), 1, 1, 0, &g1), CL_OK);
    uint64_t t0 = rt_locks_now_ns();
    CHECK_EQ(rt_locks_acquire(l, N("x"), 1, 2, t0 + 5000 * MS, &g2), CL_OK);
    uint64_t waited = rt_locks_now_ns() - t0;
    CHECK(waited >= 60 * MS);
    CHECK(waited < 3000 * MS);
    CHECK(g2.token > g1.token);
    CHECK_EQ(rt_locks_release(l, N("x"), 1, 1, 0), CL_ENOTFOUND);
    CHECK_EQ(rt_locks_release(l, N("x"), 1, 2, 0), CL_OK);

    /* expired with nobody waiting: the late unlock still says "not held" */
    CHECK_EQ(rt_locks_acquire(l, N("y"), 1, 1, 0, NULL), CL_OK);
    struct timespec ts = {0, 120 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK_EQ(rt_locks_release(l, N("y"), 1, 1, 0), CL_ENOTFOUND);
    CHECK_EQ(rt_locks_acquire(l, N("y"), 1, 2, 0, NULL), CL_OK);
    CHECK_EQ(rt_locks_release_all(l, 2), 1);
    rt_locks_destroy(l);
}

#define THREADS 4
#define CYCLES 3000

struct worker {
    rt_locks *l;
    uint64_t owner;
    long *counter;
    int *inside;
    int overlap, failures;
    uint64_t last_token;
    int tokens_increase;
};

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    w->tokens_increase = 1;
    for (int i = 0; i < CYCLES; i++) {
        rt_lock_grant g;
        int rc = rt_locks_acquire(w->l, N("\x01tA/counter"), 11, w->owner,
                                  rt_locks_now_ns() + 10000 * MS, &g);
        if (rc != CL_OK) {
            w->failures++;
            continue;
        }
        if (g.token <= w->last_token)
            w->tokens_increase = 0;
        w->last_token = g.token;
        if (__atomic_add_fetch(w->inside, 1, __ATOMIC_SEQ_CST) != 1)
            w->overlap++;
        long v = __atomic_load_n(w->counter, __ATOMIC_RELAXED);   /* racy on purpose */
        if (i % 7 == 0)
            sched_yield();
        __atomic_store_n(w->counter, v + 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(w->inside, 1, __ATOMIC_SEQ_CST);
        if (rt_locks_release(w->l, N("\x01tA/counter"), 11, w->owner, 0) != CL_OK)
            w->failures++;
    }
    return NULL;
}

static void test_mutual_exclusion(void)
{
    rt_locks *l;
    REQUIRE(rt_locks_create(0, &l) == CL_OK);
    long counter = 0;
    int inside = 0;
    struct worker w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.l = l, .owner = (uint64_t)i + 100, .counter = &counter, .inside = &inside};
        pthread_create(&t[i], NULL, worker_thread, &w[i]);
    }
    int overlap = 0, failures = 0, increase = 1;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        overlap += w[i].overlap;
        failures += w[i].failures;
        increase &= w[i].tokens_increase;
    }
    CHECK_EQ(failures, 0);
    CHECK_EQ(overlap, 0);
    CHECK_EQ(counter, THREADS * CYCLES);
    CHECK(increase);
    CHECK_EQ(rt_locks_release_all(l, 100), 0);   /* nothing left held */
    rt_locks_destroy(l);
}

int main(void)
{
    RUN(test_basic);
    RUN(test_timeout);
    RUN(test_wakeup_and_version);
    RUN(test_release_all);
    RUN(test_lease_expiry);
    RUN(test_mutual_exclusion);
    return th_done();
}
