/*
 * locks.h - the lock table behind cloister_lock / cloister_unlock.
 *
 * A lock is named by a byte string (host.c passes the tenant's namespace
 * prefix followed by the guest's name, so tenants never share a lock) and
 * is held by one owner at a time: the invocation that acquired it
 * (rt_call.owner, nonzero).  A hold is a *lease*: it ends at unlock, when
 * the runtime calls rt_locks_release_all() after the invocation (also
 * after a trap or a time-out), or at the latest when the lease runs out
 * (default 30 s), so a holder that never comes back cannot block the
 * others for ever.  Every grant carries a *fencing token* taken from one
 * counter per table, so tokens strictly increase across grants (of the
 * same lock and of all locks): a later holder always has a larger token.
 *
 * Waiting: an acquirer blocks its thread on the lock's condition variable
 * until the lock is free, the holder's lease runs out, or its deadline
 * passes (the caller's min(timeout, invocation deadline)).  No spinning.
 *
 * Release consistency (PSL).  On one node the store is sequentially
 * consistent: a write made under the lock is installed in the store
 * before its holder calls unlock, and unlock -> next grant is ordered by
 * the lock's stripe mutex, so the next holder reads it.  The cluster
 * version keeps this interface: the releaser passes its *state version*
 * (what its writes reached, e.g. a hybrid logical clock) to
 * rt_locks_release(), and the grant hands it to the next holder
 * (rt_lock_grant.state_version), whose reads must then reflect at least
 * that version.  On one node the version is carried but nothing needs to
 * wait for it.  A lock nobody holds or waits for is forgotten; its
 * version is kept conservatively as the largest released in its stripe
 * (versions only grow), so a grant never carries less than the last
 * release of that lock.  rt_locks_release_all (the end of an invocation)
 * passes no new version.
 *
 * Threading: every function may be called from any thread.  Internally
 * the table is split into stripes (each a mutex and hash buckets); a
 * stripe's mutex is a leaf lock, held only for a table operation or while
 * waiting on a condition variable (which releases it).  Entries exist only
 * while a lock is held or waited for, so the table's size follows the
 * locks in use, not the names ever used.
 *
 * Callers: host.c (cloister_lock / cloister_unlock, rt_host_call_end) and
 * the runtime core, which owns the table (one per node).
 */
#ifndef CLOISTER_RUNTIME_LOCKS_H
#define CLOISTER_RUNTIME_LOCKS_H

#include <stddef.h>
#include <stdint.h>

#include "call.h"            /* typedef struct rt_locks rt_locks */
#include "../store/store.h"

#define RT_LOCK_NAME_MAX STORE_KEY_MAX      /* namespace + name, as keys */
#define RT_LOCK_DEFAULT_LEASE_MS 30000u

typedef struct rt_lock_grant {
    uint64_t token;          /* fencing token, strictly increasing per table */
    uint64_t state_version;  /* what the previous holder released with (0: none) */
    uint64_t lease_until_ns; /* CLOCK_MONOTONIC end of the lease */
} rt_lock_grant;

/* lease_ms 0 = RT_LOCK_DEFAULT_LEASE_MS.  CL_OK, CL_ENOMEM, CL_ECRYPTO. */
int rt_locks_create(uint32_t lease_ms, rt_locks **out) __attribute__((warn_unused_result));
/* No thread may be waiting in, or later use, the table. */
void rt_locks_destroy(rt_locks *l);

/*
 * Acquires lock `name` for `owner` (nonzero), waiting until deadline_ns
 * (CLOCK_MONOTONIC; a deadline already passed means "try once").  The
 * owner already holding it gets CL_OK again, its lease renewed and its
 * token unchanged (holds do not nest: one release frees it).
 * Returns CL_OK (grant filled if non-NULL), CL_EAGAIN (deadline passed),
 * CL_EINVAL (owner 0, empty name or longer than RT_LOCK_NAME_MAX),
 * CL_ENOMEM.
 */
int rt_locks_acquire(rt_locks *l, const uint8_t *name, size_t len, uint64_t owner,
                     uint64_t deadline_ns, rt_lock_grant *grant);

/*
 * Releases `owner`'s hold of `name`, recording state_version for the next
 * holder.  CL_OK, or CL_ENOTFOUND when owner does not hold it (never did,
 * released already, or its lease ran out: it was then no longer
 * protected, which the caller must learn).
 */
int rt_locks_release(rt_locks *l, const uint8_t *name, size_t len, uint64_t owner,
                     uint64_t state_version);

/* Releases every lock `owner` holds; returns how many.  Cheap when the
 * table is empty (no mutex taken). */
int rt_locks_release_all(rt_locks *l, uint64_t owner);

/* CLOCK_MONOTONIC now, in ns: the clock of every deadline here. */
uint64_t rt_locks_now_ns(void);

#endif
