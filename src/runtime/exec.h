/*
 * exec.h - the executor pool: the threads that run function invocations.
 *
 * The runtime (rt.c) queues an invocation as an rt_job and one of N
 * executor threads runs it -- except short WebAssembly invocations, which
 * rt.c runs inline on the calling network worker ("Inline invocations"
 * there) and which never come here.  Every executor thread has state of
 * its own, built on that thread by the owner's thread_init before the
 * pool accepts work (rt.c: a store_thread and a sandbox, whose signal
 * stack and instance slot are per thread), so a job touches nothing
 * another executor uses at the same time.
 *
 * The queue is bounded: when queue_max jobs are already waiting,
 * rt_exec_submit refuses with CL_EAGAIN (the gateway answers 503) rather
 * than letting latency and memory grow without bound.
 *
 * Lifecycle: rt_exec_create starts the threads and waits until every one
 * has initialised; rt_exec_destroy stops accepting work, lets the threads
 * finish every job already queued (so each job's completion runs exactly
 * once), runs thread_fini on each thread and joins them.
 *
 * Threading: rt_exec_submit may be called from any thread.  The queue is
 * one mutex + condition variable (held only to link or unlink a job).
 */
#ifndef CLOISTER_RUNTIME_EXEC_H
#define CLOISTER_RUNTIME_EXEC_H

#include <stddef.h>

typedef struct rt_exec rt_exec;
typedef struct rt_job rt_job;

/* Runs a job on an executor thread, with that thread's state.  The job
 * belongs to the function from the moment it is called (it usually frees
 * the job). */
typedef void (*rt_job_fn)(rt_job *job, void *thread_state);

/* Embed in the caller's own job struct; the pool uses `next` while the
 * job waits. */
struct rt_job {
    rt_job *next;
    rt_job_fn run;
};

typedef struct rt_exec_config {
    int threads;            /* >= 1 */
    size_t queue_max;       /* jobs that may wait; more are refused (>= 1) */
    /* Called on each new thread before it takes work; returns its state,
     * or NULL on failure (rt_exec_create then fails).  May be NULL. */
    void *(*thread_init)(void *arg, int index);
    /* Called on the thread after its last job.  May be NULL. */
    void (*thread_fini)(void *arg, void *thread_state);
    /* Called on the thread when it runs out of work (once per burst of
     * jobs, before it sleeps) and after rt_exec_kick: housekeeping such
     * as dropping instances of removed functions.  May be NULL. */
    void (*thread_idle)(void *arg, void *thread_state);
    void *arg;
    const char *name;       /* thread name prefix (pthread_setname_np), e.g. "cl-exec" */
} rt_exec_config;

/* Starts the threads.  CL_OK, CL_EINVAL (bad config or a thread_init
 * failed), CL_ENOMEM (threads could not be created). */
int rt_exec_create(const rt_exec_config *cfg, rt_exec **out) __attribute__((warn_unused_result));

/* Queues a job.  CL_OK, CL_EAGAIN (queue full), CL_ECLOSED (stopping). */
int rt_exec_submit(rt_exec *e, rt_job *job) __attribute__((warn_unused_result));

/* Makes every thread run thread_idle soon (after its current job). */
void rt_exec_kick(rt_exec *e);

/* Jobs waiting now (not counting running ones). */
size_t rt_exec_queued(rt_exec *e);

/* Number of executor threads. */
int rt_exec_threads(const rt_exec *e);

/* Finishes every queued job, stops and joins the threads, frees.  NULL is
 * a no-op.  Must not be called from an executor thread. */
void rt_exec_destroy(rt_exec *e);

#endif
