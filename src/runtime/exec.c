/*
 * exec.c - the executor pool (exec.h): N threads taking jobs from one
 * bounded FIFO.
 *
 * Invariants: `queued` is the length of the list head..tail; a job is on
 * the list or being run, never both; once `stopping` is set no job is
 * added, and a thread exits only when the list is empty, so every job
 * submitted with CL_OK is run exactly once.  A thread runs thread_idle
 * once after each burst of jobs (when it finds the queue empty) and once
 * per rt_exec_kick, never while holding the queue's mutex.
 *
 * Called by rt.c (rt_create builds the pool, rt_invoke submits).
 */
#include "exec.h"

#include "../common/err.h"
#include "../common/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MOD[] = "exec";

typedef struct exec_thread {
    rt_exec *e;
    int index;
    pthread_t tid;
    int started;               /* pthread_create succeeded */
} exec_thread;

struct rt_exec {
    rt_exec_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t work;       /* signalled when a job is queued or on stop */
    pthread_cond_t ready;      /* signalled as threads finish thread_init */
    rt_job *head, *tail;
    size_t queued;
    int stopping;
    int n_ready, n_failed;     /* thread_init outcomes so far */
    uint64_t kicks;            /* rt_exec_kick calls */
    int sleeping;              /* threads in pthread_cond_wait (signal only then) */
    exec_thread *threads;
};

static void *exec_main(void *arg)
{
    exec_thread *t = arg;
    rt_exec *e = t->e;
    char name[16];
    snprintf(name, sizeof name, "%.10s-%d", e->cfg.name ? e->cfg.name : "cl-exec", t->index);
    pthread_setname_np(pthread_self(), name);

    void *state = NULL;
    int ok = 1;
    if (e->cfg.thread_init) {
        state = e->cfg.thread_init(e->cfg.arg, t->index);
        ok = state != NULL;
    }
    pthread_mutex_lock(&e->mu);
    if (ok)
        e->n_ready++;
    else
        e->n_failed++;
    pthread_cond_broadcast(&e->ready);
    pthread_mutex_unlock(&e->mu);
    if (!ok)
        return NULL;

    uint64_t kicks_seen = 0;
    int idle_due = 0;          /* run thread_idle before sleeping */
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->head && !e->stopping) {
            if (e->kicks != kicks_seen) {
                kicks_seen = e->kicks;
                idle_due = 1;
            }
            if (idle_due)
                break;
            e->sleeping++;
            pthread_cond_wait(&e->work, &e->mu);
            e->sleeping--;
        }
        rt_job *job = e->head;
        if (job) {
            e->head = job->next;
            if (!e->head)
                e->tail = NULL;
            e->queued--;
        }
        int stopping = e->stopping;
        pthread_mutex_unlock(&e->mu);
        if (job) {
            job->next = NULL;
            job->run(job, state);
            idle_due = 1;
        } else if (stopping) {
            break;                     /* stopping and drained */
        } else {
            idle_due = 0;
            if (e->cfg.thread_idle)
                e->cfg.thread_idle(e->cfg.arg, state);
        }
    }
    if (e->cfg.thread_fini)
        e->cfg.thread_fini(e->cfg.arg, state);
    return NULL;
}

/* Stops the threads that were started and joins them. */
static void exec_stop(rt_exec *e)
{
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->cfg.threads; i++) {
        if (e->threads[i].started)
            pthread_join(e->threads[i].tid, NULL);
        e->threads[i].started = 0;     /* so a second stop joins nothing */
    }
}

int rt_exec_create(const rt_exec_config *cfg, rt_exec **out)
{
    *out = NULL;
    if (cfg->threads < 1 || cfg->queue_max < 1)
        return CL_EINVAL;
    rt_exec *e = calloc(1, sizeof *e);
    if (!e)
        return CL_ENOMEM;
    e->cfg = *cfg;
    e->threads = calloc((size_t)cfg->threads, sizeof *e->threads);
    if (!e->threads) {
        free(e);
        return CL_ENOMEM;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->work, NULL);
    pthread_cond_init(&e->ready, NULL);

    int rc = CL_OK, started = 0;
    for (int i = 0; i < cfg->threads; i++) {
        exec_thread *t = &e->threads[i];
        t->e = e;
        t->index = i;
        if (pthread_create(&t->tid, NULL, exec_main, t) != 0) {
            cl_log_error(MOD, "cannot create executor thread %d", i);
            rc = CL_ENOMEM;
            break;
        }
        t->started = 1;
        started++;
    }
    pthread_mutex_lock(&e->mu);
    while (e->n_ready + e->n_failed < started)
        pthread_cond_wait(&e->ready, &e->mu);
    if (rc == CL_OK && e->n_failed)
        rc = CL_EINVAL;
    pthread_mutex_unlock(&e->mu);
    if (rc != CL_OK) {
        if (e->n_failed)
            cl_log_error(MOD, "%d of %d executor threads failed to initialise", e->n_failed,
                         cfg->threads);
        rt_exec_destroy(e);
        return rc;
    }
    *out = e;
    return CL_OK;
}

int rt_exec_submit(rt_exec *e, rt_job *job)
{
    int rc = CL_OK;
    job->next = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        rc = CL_ECLOSED;
    } else if (e->queued >= e->cfg.queue_max) {
        rc = CL_EAGAIN;
    } else {
        if (e->tail)
            e->tail->next = job;
        else
            e->head = job;
        e->tail = job;
        e->queued++;
        if (e->sleeping)
            pthread_cond_signal(&e->work);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void rt_exec_kick(rt_exec *e)
{
    pthread_mutex_lock(&e->mu);
    e->kicks++;
    pthread_cond_broadcast(&e->work);
    pthread_mutex_unlock(&e->mu);
}

size_t rt_exec_queued(rt_exec *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->queued;
    pthread_mutex_unlock(&e->mu);
    return n;
}

int rt_exec_threads(const rt_exec *e)
{
    return e->cfg.threads;
}

void rt_exec_destroy(rt_exec *e)
{
    if (!e)
        return;
    exec_stop(e);
    pthread_cond_destroy(&e->ready);
    pthread_cond_destroy(&e->work);
    pthread_mutex_destroy(&e->mu);
    free(e->threads);
    free(e);
}
