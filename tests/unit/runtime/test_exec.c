/*
 * test_exec.c - the executor pool (runtime/exec.h) on its own, without
 * rt.c: jobs run on pool threads with that thread's own state, every
 * accepted job runs exactly once, the bounded queue refuses with
 * CL_EAGAIN when full, one thread takes jobs in FIFO order, destroy
 * drains queued jobs (and refuses new ones with CL_ECLOSED) before
 * thread_fini, thread_idle runs after a burst and after rt_exec_kick
 * without the queue's lock held, and several threads can submit at once.
 *
 * Determinism: nothing here depends on timing.  Workers are held busy by
 * "gate" jobs that wait on a condition variable the test opens; every
 * wait is on a predicate under one mutex (g.mu / g.cv), with a generous
 * deadline only so that a bug fails the test instead of hanging it.
 */
#include "../harness.h"

#include "../../../src/common/err.h"
#include "../../../src/runtime/exec.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 8
#define MAX_ORDER 256

/* Per-executor-thread state, made by thread_init on that thread. */
typedef struct tstate {
    pthread_t tid;
    int index;
    int idle_calls;           /* under g.mu */
    long done_at_last_idle;   /* g.completed when thread_idle last ran */
} tstate;

/* Everything the callbacks share with the test, under one mutex. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* broadcast on every change below */
    pthread_t main_tid;
    rt_exec *exec;             /* for thread_idle's rt_exec_queued call */
    int fail_index;            /* thread_init fails for this index (-1: none) */
    int inits, init_index_seen[MAX_THREADS];
    tstate *states[MAX_THREADS];
    int name_ok;               /* every thread's name had the configured prefix */
    const char *prefix;
    int finis, fini_bad;       /* fini_bad: NULL state or wrong thread */
    long done_at_fini;         /* min g.completed seen by thread_fini */
    long queued_at_fini;       /* max rt_exec_queued seen by thread_fini */
    long started, completed;
    int gate_open;
    int wrong_state;           /* a job saw a state that is not its thread's */
    int order[MAX_ORDER], n_order;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

/* Waits (under g.mu) until cond holds; a 30 s deadline turns a hang into a
 * failure.  cond is re-evaluated with g.mu held. */
#define WAIT_UNTIL(cond)                                                      \
    do {                                                                      \
        struct timespec dl_;                                                  \
        clock_gettime(CLOCK_REALTIME, &dl_);                                  \
        dl_.tv_sec += 30;                                                     \
        int ok_ = 1;                                                          \
        pthread_mutex_lock(&g.mu);                                            \
        while (!(cond)) {                                                     \
            if (pthread_cond_timedwait(&g.cv, &g.mu, &dl_) == ETIMEDOUT &&    \
                !(cond)) {                                                    \
                ok_ = 0;                                                      \
                break;                                                        \
            }                                                                 \
        }                                                                     \
        pthread_mutex_unlock(&g.mu);                                          \
        REQUIRE(ok_ && #cond);                                                \
    } while (0)

static void reset(void)
{
    pthread_mutex_lock(&g.mu);
    g.main_tid = pthread_self();
    g.exec = NULL;
    g.fail_index = -1;
    g.inits = 0;
    memset(g.init_index_seen, 0, sizeof g.init_index_seen);
    memset(g.states, 0, sizeof g.states);
    g.name_ok = 1;
    g.prefix = NULL;
    g.finis = g.fini_bad = 0;
    g.done_at_fini = -1;
    g.queued_at_fini = 0;
    g.started = g.completed = 0;
    g.gate_open = 0;
    g.wrong_state = 0;
    g.n_order = 0;
    pthread_mutex_unlock(&g.mu);
}

/* ---- pool callbacks ------------------------------------------------------------- */

static void *cb_init(void *arg, int index)
{
    (void)arg;
    char name[16] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    pthread_mutex_lock(&g.mu);
    g.inits++;
    if (index >= 0 && index < MAX_THREADS)
        g.init_index_seen[index]++;
    const char *want = g.prefix ? g.prefix : "cl-exec";
    if (strncmp(name, want, strlen(want)) != 0 || name[strlen(want)] != '-')
        g.name_ok = 0;
    int fail = index == g.fail_index;
    pthread_mutex_unlock(&g.mu);
    if (fail)
        return NULL;
    tstate *s = calloc(1, sizeof *s);   /* freed by cb_fini; ASan reports a missed one */
    if (!s)
        return NULL;
    s->tid = pthread_self();
    s->index = index;
    pthread_mutex_lock(&g.mu);
    if (index >= 0 && index < MAX_THREADS)
        g.states[index] = s;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return s;
}

static void cb_fini(void *arg, void *state)
{
    (void)arg;
    tstate *s = state;
    /* A thread finishes only once the queue is drained (other threads may
     * still be running their last jobs). */
    long queued = g.exec ? (long)rt_exec_queued(g.exec) : 0;
    pthread_mutex_lock(&g.mu);
    g.finis++;
    if (queued > g.queued_at_fini)
        g.queued_at_fini = queued;
    if (!s || !pthread_equal(s->tid, pthread_self()))
        g.fini_bad++;
    if (g.done_at_fini < 0 || g.completed < g.done_at_fini)
        g.done_at_fini = g.completed;
    if (s && s->index >= 0 && s->index < MAX_THREADS)
        g.states[s->index] = NULL;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    free(s);
}

static void cb_idle(void *arg, void *state)
{
    (void)arg;
    tstate *s = state;
    /* Would deadlock if the pool held its queue mutex around thread_idle. */
    (void)rt_exec_queued(g.exec);
    pthread_mutex_lock(&g.mu);
    if (!pthread_equal(s->tid, pthread_self()))
        g.wrong_state++;
    s->idle_calls++;
    s->done_at_last_idle = g.completed;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static rt_exec_config config(int threads, size_t queue_max)
{
    rt_exec_config c = {
        .threads = threads,
        .queue_max = queue_max,
        .thread_init = cb_init,
        .thread_fini = cb_fini,
        .thread_idle = cb_idle,
        .name = g.prefix,
    };
    return c;
}

/* ---- jobs ------------------------------------------------------------------------ */

typedef struct tjob {
    rt_job job;
    int id;
    int gate;                  /* wait until g.gate_open before completing */
    int heap;                  /* free itself when done */
    int runs;                  /* under g.mu (only for jobs the test keeps) */
    pthread_t ran_on;
    tstate *state;
} tjob;

static void job_run(rt_job *j, void *state)
{
    tjob *t = (tjob *)((char *)j - offsetof(tjob, job));
    tstate *s = state;
    pthread_mutex_lock(&g.mu);
    if (!s || !pthread_equal(s->tid, pthread_self()))
        g.wrong_state++;
    t->runs++;
    t->ran_on = pthread_self();
    t->state = s;
    if (g.n_order < MAX_ORDER)
        g.order[g.n_order++] = t->id;
    g.started++;
    pthread_cond_broadcast(&g.cv);
    while (t->gate && !g.gate_open)
        pthread_cond_wait(&g.cv, &g.mu);
    g.completed++;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (t->heap)
        free(t);
}

static tjob *job_new(int id, int gate)
{
    tjob *t = calloc(1, sizeof *t);
    REQUIRE(t);
    t->job.run = job_run;
    t->id = id;
    t->gate = gate;
    t->heap = 1;
    return t;
}

static void gate_open(void)
{
    pthread_mutex_lock(&g.mu);
    g.gate_open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

/* Occupies every worker with a gate job (kept by the caller in gates[])
 * and waits until all of them are running. */
static void block_workers(rt_exec *e, tjob *gates, int n)
{
    for (int i = 0; i < n; i++) {
        gates[i] = (tjob){ .job.run = job_run, .id = 1000 + i, .gate = 1 };
        REQUIRE(rt_exec_submit(e, &gates[i].job) == CL_OK);
    }
    WAIT_UNTIL(g.started >= n);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_bad_config(void)
{
    reset();
    rt_exec *e = (rt_exec *)(uintptr_t)1;   /* must be overwritten with NULL */
    rt_exec_config c = config(0, 4);
    CHECK_EQ(rt_exec_create(&c, &e), CL_EINVAL);
    CHECK(e == NULL);
    c = config(2, 0);
    e = (rt_exec *)(uintptr_t)1;
    CHECK_EQ(rt_exec_create(&c, &e), CL_EINVAL);
    CHECK(e == NULL);
    CHECK_EQ(g.inits, 0);
    rt_exec_destroy(NULL);     /* no-op */
}

/* One thread_init failing fails create; the threads that did initialise
 * are stopped with thread_fini (their states freed; ASan checks).  The
 * pool logs "1 of 3 executor threads failed to initialise": expected. */
static void test_init_failure(void)
{
    reset();
    g.fail_index = 1;
    rt_exec_config c = config(3, 4);
    rt_exec *e = (rt_exec *)(uintptr_t)1;
    CHECK_EQ(rt_exec_create(&c, &e), CL_EINVAL);
    CHECK(e == NULL);
    CHECK_EQ(g.inits, 3);
    CHECK_EQ(g.finis, 2);
    CHECK_EQ(g.fini_bad, 0);
}

/* Jobs run on the pool's threads, each with its own thread's state, N at
 * once; thread_init/fini run once per thread, on that thread. */
static void test_threads_and_states(void)
{
    reset();
    g.prefix = "tx";
    rt_exec_config c = config(3, 8);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    CHECK_EQ(rt_exec_threads(e), 3);
    CHECK_EQ(g.inits, 3);       /* create waits for every thread_init */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(g.init_index_seen[i], 1);
        CHECK(g.states[i] != NULL);
        CHECK(g.states[i] && !pthread_equal(g.states[i]->tid, g.main_tid));
    }
    CHECK(g.name_ok);

    /* Three gate jobs all running at the same time: three distinct threads. */
    tjob gates[3];
    block_workers(e, gates, 3);
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(gates[i].runs, 1);
        CHECK(!pthread_equal(gates[i].ran_on, g.main_tid));
        CHECK(gates[i].state != NULL);
        for (int j = 0; j < i; j++)
            CHECK(!pthread_equal(gates[i].ran_on, gates[j].ran_on));
    }
    pthread_mutex_unlock(&g.mu);
    gate_open();
    WAIT_UNTIL(g.completed == 3);
    rt_exec_destroy(e);
    CHECK_EQ(g.wrong_state, 0);
    CHECK_EQ(g.finis, 3);
    CHECK_EQ(g.fini_bad, 0);
    CHECK_EQ(g.done_at_fini, 3);
    g.prefix = NULL;
}

/* queue_max jobs may wait; one more is refused with CL_EAGAIN and never
 * runs; running jobs do not count against the limit. */
static void test_queue_full(void)
{
    reset();
    rt_exec_config c = config(2, 4);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    tjob gates[2];
    block_workers(e, gates, 2);
    CHECK_EQ(rt_exec_queued(e), 0);

    tjob waiting[4];
    for (int i = 0; i < 4; i++) {
        waiting[i] = (tjob){ .job.run = job_run, .id = i };
        CHECK_EQ(rt_exec_submit(e, &waiting[i].job), CL_OK);
    }
    CHECK_EQ(rt_exec_queued(e), 4);
    tjob refused = { .job.run = job_run, .id = 99 };
    CHECK_EQ(rt_exec_submit(e, &refused.job), CL_EAGAIN);
    CHECK_EQ(rt_exec_submit(e, &refused.job), CL_EAGAIN);
    CHECK_EQ(rt_exec_queued(e), 4);

    gate_open();
    WAIT_UNTIL(g.completed == 6);
    CHECK_EQ(rt_exec_queued(e), 0);
    /* Room again. */
    tjob again = { .job.run = job_run, .id = 7 };
    CHECK_EQ(rt_exec_submit(e, &again.job), CL_OK);
    WAIT_UNTIL(g.completed == 7);
    rt_exec_destroy(e);

    for (int i = 0; i < 4; i++)
        CHECK_EQ(waiting[i].runs, 1);
    CHECK_EQ(refused.runs, 0);
    CHECK_EQ(again.runs, 1);
    CHECK_EQ(g.wrong_state, 0);
}

/* One thread takes jobs in submission order. */
static void test_fifo(void)
{
    reset();
    rt_exec_config c = config(1, 64);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    tjob gate[1];
    block_workers(e, gate, 1);
    enum { N = 50 };
    for (int i = 0; i < N; i++)
        REQUIRE(rt_exec_submit(e, &job_new(i, 0)->job) == CL_OK);
    CHECK_EQ(rt_exec_queued(e), N);
    gate_open();
    WAIT_UNTIL(g.completed == N + 1);
    rt_exec_destroy(e);
    REQUIRE(g.n_order == N + 1);
    CHECK_EQ(g.order[0], 1000);
    int in_order = 1;
    for (int i = 0; i < N; i++)
        if (g.order[i + 1] != i)
            in_order = 0;
    CHECK(in_order);
}

static void *destroy_thread(void *arg)
{
    rt_exec_destroy(arg);
    return NULL;
}

/* Destroy with busy workers and a full queue: new submissions get
 * CL_ECLOSED, every queued job still runs exactly once (heap jobs that
 * free themselves: ASan reports any that did not run), and a thread runs
 * thread_fini only once the queue is empty. */
static void test_destroy_drains(void)
{
    reset();
    rt_exec_config c = config(2, 8);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    tjob gates[2];
    block_workers(e, gates, 2);
    for (int i = 0; i < 8; i++)
        REQUIRE(rt_exec_submit(e, &job_new(i, 0)->job) == CL_OK);

    pthread_t d;
    REQUIRE(pthread_create(&d, NULL, destroy_thread, e) == 0);
    /* The workers are held and the queue is full, so until destroy marks the
     * pool stopping a submission is CL_EAGAIN, and after it CL_ECLOSED; the
     * pool cannot be freed meanwhile (its threads cannot be joined). */
    tjob late = { .job.run = job_run, .id = 98 };
    int rc;
    while ((rc = rt_exec_submit(e, &late.job)) == CL_EAGAIN)
        sched_yield();
    CHECK_EQ(rc, CL_ECLOSED);
    pthread_mutex_lock(&g.mu);
    CHECK_EQ(g.finis, 0);
    CHECK_EQ(g.completed, 0);
    pthread_mutex_unlock(&g.mu);

    gate_open();
    pthread_join(d, NULL);
    CHECK_EQ(g.completed, 10);
    CHECK_EQ(g.started, 10);
    CHECK_EQ(late.runs, 0);
    CHECK_EQ(gates[0].runs, 1);
    CHECK_EQ(gates[1].runs, 1);
    CHECK_EQ(g.finis, 2);
    CHECK_EQ(g.fini_bad, 0);
    CHECK_EQ(g.queued_at_fini, 0);
    CHECK_EQ(g.wrong_state, 0);
}

static int all_idled(int n)
{
    for (int i = 0; i < n; i++)
        if (!g.states[i] || g.states[i]->idle_calls < 1)
            return 0;
    return 1;
}

/* thread_idle runs on every thread after rt_exec_kick, and on a thread
 * after it finishes a burst of jobs; never with the queue locked (cb_idle
 * calls rt_exec_queued). */
static void test_idle_and_kick(void)
{
    reset();
    rt_exec_config c = config(3, 8);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    rt_exec_kick(e);
    WAIT_UNTIL(all_idled(3));
    rt_exec_destroy(e);
    CHECK_EQ(g.wrong_state, 0);

    reset();
    c = config(1, 8);
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    for (int i = 0; i < 3; i++)
        REQUIRE(rt_exec_submit(e, &job_new(i, 0)->job) == CL_OK);
    /* Idle runs once the burst is over: it sees all three done. */
    WAIT_UNTIL(g.states[0]->idle_calls >= 1 && g.states[0]->done_at_last_idle == 3);
    rt_exec_destroy(e);
    CHECK_EQ(g.wrong_state, 0);
}

/* ---- several submitters ----------------------------------------------------------- */

enum { SUBMITTERS = 4, PER_SUBMITTER = 2500, TOTAL = SUBMITTERS * PER_SUBMITTER };
static int runs_by_id[TOTAL];          /* atomics */
static long refusals;                  /* atomic: CL_EAGAIN seen by submitters */

typedef struct cjob {
    rt_job job;
    int id;
} cjob;

static void cjob_run(rt_job *j, void *state)
{
    cjob *t = (cjob *)((char *)j - offsetof(cjob, job));
    tstate *s = state;
    if (!s || !pthread_equal(s->tid, pthread_self()))
        __atomic_add_fetch(&g.wrong_state, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&runs_by_id[t->id], 1, __ATOMIC_RELAXED);
    free(t);
    pthread_mutex_lock(&g.mu);
    g.completed++;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

static void *submitter(void *arg)
{
    rt_exec *e = g.exec;
    int base = (int)(intptr_t)arg * PER_SUBMITTER;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        cjob *t = calloc(1, sizeof *t);
        if (!t)
            abort();
        t->job.run = cjob_run;
        t->id = base + i;
        for (;;) {
            pthread_mutex_lock(&g.mu);
            long seen = g.completed;
            pthread_mutex_unlock(&g.mu);
            int rc = rt_exec_submit(e, &t->job);
            if (rc == CL_OK)
                break;
            if (rc != CL_EAGAIN)
                abort();
            __atomic_add_fetch(&refusals, 1, __ATOMIC_RELAXED);
            /* The queue was full after `seen` completions, so more will come. */
            pthread_mutex_lock(&g.mu);
            while (g.completed == seen)
                pthread_cond_wait(&g.cv, &g.mu);
            pthread_mutex_unlock(&g.mu);
        }
    }
    return NULL;
}

static void test_many_submitters(void)
{
    reset();
    memset(runs_by_id, 0, sizeof runs_by_id);
    refusals = 0;
    rt_exec_config c = config(3, 16);
    rt_exec *e = NULL;
    REQUIRE(rt_exec_create(&c, &e) == CL_OK);
    g.exec = e;
    pthread_t t[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++)
        REQUIRE(pthread_create(&t[i], NULL, submitter, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(t[i], NULL);
    WAIT_UNTIL(g.completed == TOTAL);
    rt_exec_destroy(e);
    int exactly_once = 1;
    for (int i = 0; i < TOTAL; i++)
        if (runs_by_id[i] != 1)
            exactly_once = 0;
    CHECK(exactly_once);
    CHECK_EQ(g.completed, TOTAL);
    CHECK_EQ(g.wrong_state, 0);
    CHECK_EQ(g.finis, 3);
    printf("     %d jobs from %d threads, %ld refusals (queue full)\n", TOTAL, SUBMITTERS,
           refusals);
}

int main(void)
{
    RUN(test_bad_config);
    RUN(test_init_failure);
    RUN(test_threads_and_states);
    RUN(test_queue_full);
    RUN(test_fifo);
    RUN(test_destroy_drains);
    RUN(test_idle_and_kick);
    RUN(test_many_submitters);
    return th_done();
}
