/*
 * locks.c - the single-node lock table (see locks.h for the semantics).
 *
 * Layout: LOCK_STRIPES stripes, each a mutex, a count of its entries and
 * BUCKETS_PER_STRIPE hash chains.  A name's hash (XXH3, random seed per
 * table, so guests cannot aim names at one chain) picks its stripe and its
 * chain.  An entry is created by the first acquirer and freed when it is
 * released with nobody waiting; an entry with owner 0 is free.  Waiters
 * count themselves in the entry so it is never freed under them, and
 * release broadcasts (a waiter that also timed out must not swallow the
 * only wake-up).
 *
 * Invariants (stripe mutex held):
 *   - an entry is in exactly one chain, that of its hash;
 *   - owner == 0 implies waiters > 0 (else the entry would have been freed);
 *   - tokens come from one atomic counter, taken under the stripe mutex at
 *     grant time, so successive grants of one lock get increasing tokens.
 */
#include "locks.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>
#include <xxhash.h>

#include "../common/err.h"

#define LOCK_STRIPES 64u
#define BUCKETS_PER_STRIPE 16u

typedef struct lock_entry {
    struct lock_entry *next;
    uint64_t hash;
    uint64_t owner;          /* 0: free (someone is waiting) */
    uint64_t token;
    uint64_t lease_until_ns;
    uint64_t state_version;  /* set by the last release */
    uint32_t waiters;
    pthread_cond_t cv;       /* CLOCK_MONOTONIC */
    size_t len;
    uint8_t name[];
} lock_entry;

typedef struct lock_stripe {
    pthread_mutex_t mu;
    uint32_t nentries;       /* written under mu, read relaxed by release_all */
    uint64_t freed_version;  /* largest state version of an entry freed here */
    lock_entry *chain[BUCKETS_PER_STRIPE];
} __attribute__((aligned(64))) lock_stripe;

struct rt_locks {
    lock_stripe stripes[LOCK_STRIPES];
    uint64_t seed;
    uint64_t lease_ns;
    uint64_t next_token;     /* atomic */
    pthread_condattr_t cvattr;
};

uint64_t rt_locks_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int rt_locks_create(uint32_t lease_ms, rt_locks **out)
{
    rt_locks *l;
    if (posix_memalign((void **)&l, 64, sizeof *l) != 0)
        return CL_ENOMEM;
    memset(l, 0, sizeof *l);
    if (RAND_bytes((unsigned char *)&l->seed, sizeof l->seed) != 1) {
        free(l);
        return CL_ECRYPTO;
    }
    l->lease_ns = (uint64_t)(lease_ms ? lease_ms : RT_LOCK_DEFAULT_LEASE_MS) * 1000000u;
    l->next_token = 1;
    pthread_condattr_init(&l->cvattr);
    pthread_condattr_setclock(&l->cvattr, CLOCK_MONOTONIC);
    for (unsigned i = 0; i < LOCK_STRIPES; i++)
        pthread_mutex_init(&l->stripes[i].mu, NULL);
    *out = l;
    return CL_OK;
}

static void entry_free(lock_entry *e)
{
    pthread_cond_destroy(&e->cv);
    free(e);
}

void rt_locks_destroy(rt_locks *l)
{
    if (!l)
        return;
    for (unsigned i = 0; i < LOCK_STRIPES; i++) {
        lock_stripe *s = &l->stripes[i];
        for (unsigned b = 0; b < BUCKETS_PER_STRIPE; b++) {
            for (lock_entry *e = s->chain[b], *next; e; e = next) {
                next = e->next;
                entry_free(e);
            }
        }
        pthread_mutex_destroy(&s->mu);
    }
    pthread_condattr_destroy(&l->cvattr);
    free(l);
}

static inline lock_stripe *stripe_of(rt_locks *l, uint64_t h) { return &l->stripes[h % LOCK_STRIPES]; }
static inline lock_entry **chain_of(lock_stripe *s, uint64_t h)
{
    return &s->chain[(h / LOCK_STRIPES) % BUCKETS_PER_STRIPE];
}

/* The entry for name, or NULL (stripe mutex held). */
static lock_entry *do_find(lock_stripe *s, uint64_t h, const uint8_t *name, size_t len)
{
    for (lock_entry *e = *chain_of(s, h); e; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

/* Frees e; its state version survives as the stripe's floor (versions
 * only grow, so a new entry starting from the floor asks for at least
 * what its previous holder released with). */
static void do_unlink_free(lock_stripe *s, lock_entry *e)
{
    if (e->state_version > s->freed_version)
        s->freed_version = e->state_version;
    lock_entry **pp = chain_of(s, e->hash);
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    __atomic_store_n(&s->nentries, s->nentries - 1, __ATOMIC_RELAXED);
    entry_free(e);
}

/* Frees the hold of e (held): the next waiter, if any, takes it. */
static void do_release(lock_stripe *s, lock_entry *e, uint64_t state_version)
{
    e->owner = 0;
    e->state_version = state_version;
    if (e->waiters)
        pthread_cond_broadcast(&e->cv);
    else
        do_unlink_free(s, e);
}

static struct timespec mono_ts(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    return ts;
}

int rt_locks_acquire(rt_locks *l, const uint8_t *name, size_t len, uint64_t owner,
                     uint64_t deadline_ns, rt_lock_grant *grant)
{
    if (owner == 0 || len == 0 || len > RT_LOCK_NAME_MAX)
        return CL_EINVAL;
    uint64_t h = XXH3_64bits_withSeed(name, len, l->seed);
    lock_stripe *s = stripe_of(l, h);
    int rc = CL_OK;

    pthread_mutex_lock(&s->mu);
    lock_entry *e = do_find(s, h, name, len);
    if (!e) {
        e = malloc(sizeof *e + len);
        if (!e) {
            pthread_mutex_unlock(&s->mu);
            return CL_ENOMEM;
        }
        memset(e, 0, sizeof *e);
        e->hash = h;
        e->len = len;
        e->state_version = s->freed_version;
        memcpy(e->name, name, len);
        pthread_cond_init(&e->cv, &l->cvattr);
        lock_entry **chain = chain_of(s, h);
        e->next = *chain;
        *chain = e;
        __atomic_store_n(&s->nentries, s->nentries + 1, __ATOMIC_RELAXED);
    }
    for (;;) {
        uint64_t now = rt_locks_now_ns();
        if (e->owner == owner) {             /* already ours: renew */
            e->lease_until_ns = now + l->lease_ns;
            break;
        }
        if (e->owner == 0 || e->lease_until_ns <= now) {   /* free, or the lease ran out */
            e->owner = owner;
            e->token = __atomic_fetch_add(&l->next_token, 1, __ATOMIC_RELAXED);
            e->lease_until_ns = now + l->lease_ns;
            break;
        }
        if (now >= deadline_ns) {
            rc = CL_EAGAIN;                  /* e is held: it stays */
            break;
        }
        uint64_t wake = deadline_ns < e->lease_until_ns ? deadline_ns : e->lease_until_ns;
        struct timespec ts = mono_ts(wake);
        e->waiters++;
        int w = pthread_cond_timedwait(&e->cv, &s->mu, &ts);
        e->waiters--;
        (void)w;                             /* re-checked above either way */
    }
    if (rc == CL_OK && grant) {
        grant->token = e->token;
        grant->state_version = e->state_version;
        grant->lease_until_ns = e->lease_until_ns;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rt_locks_release(rt_locks *l, const uint8_t *name, size_t len, uint64_t owner,
                     uint64_t state_version)
{
    if (owner == 0 || len == 0 || len > RT_LOCK_NAME_MAX)
        return CL_ENOTFOUND;
    uint64_t h = XXH3_64bits_withSeed(name, len, l->seed);
    lock_stripe *s = stripe_of(l, h);
    int rc = CL_OK;

    pthread_mutex_lock(&s->mu);
    lock_entry *e = do_find(s, h, name, len);
    if (!e || e->owner != owner) {
        rc = CL_ENOTFOUND;
    } else {
        if (e->lease_until_ns <= rt_locks_now_ns())
            rc = CL_ENOTFOUND;   /* it ran out: free it, but tell the holder */
        do_release(s, e, state_version);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rt_locks_release_all(rt_locks *l, uint64_t owner)
{
    int n = 0;
    if (owner == 0)
        return 0;
    for (unsigned i = 0; i < LOCK_STRIPES; i++) {
        lock_stripe *s = &l->stripes[i];
        /* The owner's own acquisitions happened before this call (same
         * thread, or handed over with synchronisation), so a zero count
         * means it holds nothing here. */
        if (__atomic_load_n(&s->nentries, __ATOMIC_RELAXED) == 0)
            continue;
        pthread_mutex_lock(&s->mu);
        for (unsigned b = 0; b < BUCKETS_PER_STRIPE; b++) {
            for (lock_entry *e = s->chain[b], *next; e; e = next) {
                next = e->next;
                if (e->owner == owner) {
                    do_release(s, e, e->state_version);
                    n++;
                }
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}
