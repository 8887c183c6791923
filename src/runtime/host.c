/*
 * host.c - the functions a module may import: the Cloister ABI
 * (include/cloister/function.h, module "cloister") and the WASI subset
 * (module "wasi_snapshot_preview1") that wasi-libc needs for printf,
 * malloc, time, random and exit.
 *
 * Every function here is what wasm2c 1.0.32's output calls, with exactly
 * its name and C type (Z_<module>Z_<name>, first argument the module's
 * host instance pointer, which we ignore: the invocation is found through
 * the thread-local rt_current_call, so instances can be cloned byte for
 * byte).  rt_imports[] lists them all; module.c checks imports against it.
 *
 * Rules every function follows:
 *   - guest pointers are u32 offsets; every (offset, length) is checked
 *     with rt_call_range() first and fails with CLOISTER_EFAULT (WASI:
 *     EFAULT), so bad pointers never fault the node;
 *   - guest memory is untrusted input that may change under us (a native
 *     function's shared window): each length, pointer or key is read once
 *     into a local copy before it is checked and used.  Value bytes are
 *     passed to the store unchanged; the store reads them exactly once
 *     (while sealing), so a concurrent change can only pick which bytes
 *     are stored;
 *   - values are decrypted into a trusted per-thread scratch buffer and
 *     only then copied to the guest (never unauthenticated plaintext in
 *     guest-visible memory);
 *   - all checks happen before any effect, so a failed call changes
 *     nothing;
 *   - blocking (lock waits, poll_oneoff) ends by the invocation's deadline.
 *
 * Keys: store key = rt_call.ns (tenant prefix, first byte
 * RT_RESERVED_KEY_BYTE, which no front door accepts) + the guest's key.
 * The total must fit STORE_KEY_MAX, so guest keys (and lock names) are
 * limited to STORE_KEY_MAX - ns_len bytes.
 */
#include "host.h"
#include "sandbox.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>
#include <wasm-rt.h>

#include <cloister/function.h>

#include "../common/err.h"
#include "../common/log.h"
#include "../repl/repl.h"
#include "call.h"
#include "fnlog.h"
#include "locks.h"
#include "runtime.h"

struct Z_cloister_instance_t;
struct Z_wasi_snapshot_preview1_instance_t;
typedef struct Z_cloister_instance_t cl_inst;
typedef struct Z_wasi_snapshot_preview1_instance_t wasi_inst;

/* ---- the invocation, guest memory ------------------------------------------------ */

/*
 * The invocation this thread is serving, or NULL when guest code runs
 * outside one (then every import fails softly).  Host code needs no
 * marking for time-outs: the sandbox's timer unwinds the guest only when
 * it catches the program counter in the module's own code (trap.h), and
 * our blocking calls (lock waits, poll_oneoff sleeps) end by the
 * invocation's deadline on their own.
 */
__thread rt_call *rt_current_call;

/* Every import starts here: first the stack check (sandbox.h), so an
 * import entered with the guest's stack nearly gone ends the call before
 * host code takes a lock it could not give back. */
static inline rt_call *host_call(void)
{
    rt_host_stack_check();
    return rt_current_call;
}

/* Fallback until the sandbox provides its own: unwind through wasm-rt's
 * trap path (the sandbox's wasm_rt_trap).  See host.h. */
__attribute__((weak, noreturn)) void rt_sandbox_exit(void)
{
    wasm_rt_trap(WASM_RT_TRAP_UNREACHABLE);
}

static inline uint8_t *gptr(const rt_call *c, uint32_t off) { return c->mem_base + off; }

static inline void put_u32(rt_call *c, uint32_t off, uint32_t v) { memcpy(gptr(c, off), &v, 4); }
static inline void put_u64(rt_call *c, uint32_t off, uint64_t v) { memcpy(gptr(c, off), &v, 8); }
static inline uint32_t get_u32(const rt_call *c, uint32_t off)
{
    uint32_t v;
    memcpy(&v, gptr(c, off), 4);
    return v;
}

static uint64_t now_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- keys, errors, scratch --------------------------------------------------- */

/*
 * Builds the store key for the guest key at (off, len) into key: the
 * namespace, then a copy of the guest's bytes.  Returns the key's length,
 * or CLOISTER_EFAULT / CLOISTER_EINVAL (empty) / CLOISTER_ETOOBIG.
 */
static int host_key(const rt_call *c, uint32_t off, uint32_t len, uint8_t key[STORE_KEY_MAX])
{
    CL_ASSERT(c->ns_len > 0 && c->ns_len < STORE_KEY_MAX && c->ns[0] == RT_RESERVED_KEY_BYTE);
    if (!rt_call_range(c, off, len))
        return CLOISTER_EFAULT;
    if (len == 0)
        return CLOISTER_EINVAL;
    if (len > STORE_KEY_MAX - c->ns_len)
        return CLOISTER_ETOOBIG;
    memcpy(key, c->ns, c->ns_len);
    memcpy(key + c->ns_len, gptr(c, off), len);
    return (int)(c->ns_len + len);
}

/* Store (CL_E*) error -> ABI (CLOISTER_E*) error. */
static int host_err(int rc)
{
    switch (rc) {
    case CL_OK:          return 0;
    case CL_ENOTFOUND:   return CLOISTER_ENOTFOUND;
    case CL_EEXISTS:
    case CL_ENOTSTORED:
    case CL_ECONFLICT:   return CLOISTER_ECONFLICT;
    case CL_ETOOBIG:     return CLOISTER_ETOOBIG;
    case CL_EFULL:       return CLOISTER_EFULL;
    case CL_EINTEGRITY:  return CLOISTER_EINTEGRITY;
    case CL_ENONNUMERIC: return CLOISTER_ENOTNUMBER;
    case CL_EBADKEY:
    case CL_EINVAL:      return CLOISTER_EINVAL;
    default:             return CLOISTER_EUNAVAILABLE;  /* ENOMEM, ECRYPTO, ... */
    }
}

/* The executor thread's scratch buffer for decrypted values: grows to the
 * largest value read on this thread and is freed when the thread exits. */
static __thread cl_buf host_scratch;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p) { cl_buf_fini(p, 1); }
static void scratch_key_make(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

static uint8_t *scratch_sink(void *arg, const store_meta *m)
{
    cl_buf *b = arg;
    if (m->len > b->cap) {
        if (!b->data) {
            pthread_once(&scratch_once, scratch_key_make);
            pthread_setspecific(scratch_key, b);
        }
        b->len = 0;
        if (cl_buf_reserve(b, m->len) != CL_OK)
            return NULL;
    }
    return b->data;
}

/* Reads key into the scratch buffer.  CL_OK (value = host_scratch.data,
 * meta filled) or a store error. */
static int host_read(rt_call *c, const uint8_t *key, size_t klen, int want_value, store_meta *meta)
{
    store_get_opts o = {.want_value = want_value};
    return kv_get(c->kv, key, klen, &o, scratch_sink, &host_scratch, meta);
}

/* ---- module "cloister" --------------------------------------------------------- */

uint32_t Z_cloisterZ_input(cl_inst *inst, uint32_t buf, uint32_t cap)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    int32_t ret;
    if (!rt_call_range(c, buf, cap)) {
        ret = CLOISTER_EFAULT;
    } else {
        size_t n = c->input_len < cap ? c->input_len : cap;
        if (n)
            memcpy(gptr(c, buf), c->input, n);
        ret = c->input_len > INT32_MAX ? INT32_MAX : (int32_t)c->input_len;
    }
    return (uint32_t)ret;
}

uint32_t Z_cloisterZ_output(cl_inst *inst, uint32_t buf, uint32_t len)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    int32_t ret = 0;
    if (!rt_call_range(c, buf, len))
        ret = CLOISTER_EFAULT;
    else if (!c->output)
        ret = CLOISTER_EUNAVAILABLE;
    else if (len > c->max_output || c->output->len > c->max_output - len)
        ret = CLOISTER_ETOOBIG;
    else if (cl_buf_append(c->output, gptr(c, buf), len) != CL_OK)
        ret = CLOISTER_EUNAVAILABLE;
    return (uint32_t)ret;
}

uint64_t Z_cloisterZ_kv_get(cl_inst *inst, uint32_t key, uint32_t klen, uint32_t buf,
                            uint32_t cap, uint32_t version)
{
    rt_call *c = host_call();
    if (!c)
        return (uint64_t)(int64_t)CLOISTER_EUNAVAILABLE;
    uint8_t k[STORE_KEY_MAX];
    int64_t ret;
    int kl = host_key(c, key, klen, k);
    if (kl < 0) {
        ret = kl;
    } else if (!rt_call_range(c, buf, cap) || (version && !rt_call_range(c, version, 8))) {
        ret = CLOISTER_EFAULT;
    } else {
        store_meta m;
        int rc = host_read(c, k, (size_t)kl, 1, &m);
        if (rc != CL_OK) {
            ret = host_err(rc);
        } else {
            size_t n = m.len < cap ? m.len : cap;
            if (n)
                memcpy(gptr(c, buf), host_scratch.data, n);
            if (version)
                put_u64(c, version, m.cas);
            ret = m.len;
        }
    }
    return (uint64_t)ret;
}

/* ---- release sets (cluster) --------------------------------------------------- */

#define RT_CLUSTER_LEASE_MS 30000u   /* a lock's lease on a cluster (as locks.c's) */

/* Remembers a write made while this invocation holds a lock (cluster
 * only): the next holder of the lock, on any node, catches up on it
 * before it proceeds (repl.h, LOCKS).  Writes of a strong namespace are
 * linearizable anyway; the engine keeps only what it needs. */
static void wset_note(rt_call *c, const uint8_t *k, size_t kl, uint64_t version)
{
    if (!kv_replicated(c->kv) || c->nheld == 0 || version == 0)
        return;
    __typeof__(c->wset[0]) *e = &c->wset[c->wset_n++ % RT_MAX_WSET];
    e->klen = (uint8_t)kl;
    memcpy(e->key, k, kl);
    e->version = version;
}

/* Releases held lock i on a cluster, recording the write set.  CL_OK,
 * CL_ESTALE (the lease ran out and the lock moved on), ... */
static int cluster_unlock(rt_call *c, int i)
{
    repl_wkey ws[RT_MAX_WSET];
    uint32_t n = c->wset_n < RT_MAX_WSET ? c->wset_n : RT_MAX_WSET;
    for (uint32_t j = 0; j < n; j++)
        ws[j] = (repl_wkey){c->wset[j].key, c->wset[j].klen, c->wset[j].version};
    int rc = repl_unlock_sync(c->kv->r, c->held[i].name, c->held[i].len, c->owner,
                              c->held[i].token, ws, n);
    /* An unlock whose outcome is unknown (no quorum in time) is tried
     * again: a lock left held would block every other holder until its
     * lease ran out.  A retry after a release that did happen finds the
     * lock no longer ours (CL_ESTALE): released either way. */
    for (int tries = 0; tries < 2 && (rc == CL_ETIMEDOUT || rc == CL_ENOQUORUM); tries++) {
        rc = repl_unlock_sync(c->kv->r, c->held[i].name, c->held[i].len, c->owner,
                              c->held[i].token, ws, n);
        if (rc == CL_ESTALE)
            rc = CL_OK;
    }
    c->held[i] = c->held[--c->nheld];
    if (c->nheld == 0)
        c->wset_n = 0;
    return rc;
}

static int held_index(const rt_call *c, const uint8_t *k, size_t kl)
{
    for (int i = 0; i < c->nheld; i++)
        if (c->held[i].len == kl && memcmp(c->held[i].name, k, kl) == 0)
            return i;
    return -1;
}

/* cloister_lock on a cluster: a lease on a replicated lock register. */
static int32_t cluster_lock(rt_call *c, const uint8_t *k, size_t kl, uint64_t deadline_ns)
{
    int i = held_index(c, k, kl);
    if (i < 0 && c->nheld == RT_MAX_HELD_LOCKS)
        return CLOISTER_EINVAL;
    uint64_t now = rt_locks_now_ns();
    unsigned wait_ms = deadline_ns > now ? (unsigned)((deadline_ns - now) / 1000000u) : 0;
    uint64_t token;
    int rc = repl_lock_sync(c->kv->r, k, kl, c->owner, RT_CLUSTER_LEASE_MS, wait_ms, &token);
    if (rc != CL_OK)
        return rc == CL_ETIMEDOUT ? CLOISTER_ETIMEDOUT : host_err(rc);
    if (i < 0) {                  /* a re-lock renews the lease: same token */
        i = c->nheld++;
        memcpy(c->held[i].name, k, kl);
        c->held[i].len = (uint32_t)kl;
    }
    c->held[i].token = token;
    return 0;
}

/* kv_set and kv_cas: check the key and value, then store with `w`.  A
 * CAS that finds no item is a conflict (the version cannot match). */
static int32_t host_write(rt_call *c, uint32_t key, uint32_t klen, uint32_t val, uint32_t vlen,
                          const store_write *w)
{
    uint8_t k[STORE_KEY_MAX];
    int kl = host_key(c, key, klen, k);
    if (kl < 0)
        return kl;
    if (!rt_call_range(c, val, vlen))
        return CLOISTER_EFAULT;
    if (c->max_value && vlen > c->max_value)
        return CLOISTER_ETOOBIG;
    uint64_t version = 0;
    int rc = kv_set(c->kv, k, (size_t)kl, gptr(c, val), vlen, w, &version);
    if (rc == CL_OK)
        wset_note(c, k, (size_t)kl, version);
    return w->cas && rc == CL_ENOTFOUND ? CLOISTER_ECONFLICT : host_err(rc);
}

uint32_t Z_cloisterZ_kv_set(cl_inst *inst, uint32_t key, uint32_t klen, uint32_t val, uint32_t vlen)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    store_write w = {.mode = STORE_SET};
    return (uint32_t)host_write(c, key, klen, val, vlen, &w);
}

uint32_t Z_cloisterZ_kv_delete(cl_inst *inst, uint32_t key, uint32_t klen)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    uint8_t k[STORE_KEY_MAX];
    int kl = host_key(c, key, klen, k);
    if (kl < 0)
        return (uint32_t)kl;
    uint64_t version = 0;
    int rc = kv_delete_v(c->kv, k, (size_t)kl, 0, &version);
    if (rc == CL_OK)
        wset_note(c, k, (size_t)kl, version);
    return (uint32_t)host_err(rc);
}

/* expected 0: add if absent (an existing key is a conflict); otherwise
 * replace if the CAS id matches. */
uint32_t Z_cloisterZ_kv_cas(cl_inst *inst, uint32_t key, uint32_t klen, uint64_t expected,
                            uint32_t val, uint32_t vlen)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    store_write w = {.mode = expected ? STORE_SET : STORE_ADD, .cas = expected};
    return (uint32_t)host_write(c, key, klen, val, vlen, &w);
}

/* Parses a stored decimal number (as the store's incr accepts it). */
static int parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || v > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
            return 0;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 1;
}

/*
 * The clamp of kv_incr after the store's add went past INT64_MAX (or
 * wrapped, for a huge number stored by kv_set): replaces the value by
 * INT64_MAX with compare-and-swap against the add's CAS id, unless a
 * concurrent writer has meanwhile brought it back into range.  Returns
 * CL_OK with the final value in *out, or a store error.
 */
static int incr_clamp(rt_call *c, const uint8_t *k, size_t kl, uint64_t cas, uint64_t *out)
{
    static const char maxs[] = "9223372036854775807";
    for (;;) {
        store_write w = {.mode = STORE_SET, .cas = cas};
        int rc = kv_set(c->kv, k, kl, (const uint8_t *)maxs, sizeof maxs - 1, &w, NULL);
        if (rc == CL_OK) {
            *out = INT64_MAX;
            return CL_OK;
        }
        if (rc != CL_EEXISTS)
            return rc;
        store_meta m;
        uint64_t v;
        if ((rc = host_read(c, k, kl, 1, &m)) != CL_OK)
            return rc;
        if (!parse_u64(host_scratch.data, m.len, &v))
            return CL_ENONNUMERIC;
        if (v <= INT64_MAX) {
            *out = v;
            return CL_OK;
        }
        cas = m.cas;
    }
}

/* Adds delta, clamped to [0, INT64_MAX]: one atomic store_arith (a missing
 * key is created holding the result), plus incr_clamp in the rare case the
 * sum leaves the range. */
uint32_t Z_cloisterZ_kv_incr(cl_inst *inst, uint32_t key, uint32_t klen, uint64_t delta_bits,
                             uint32_t result)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    uint8_t k[STORE_KEY_MAX];
    int32_t ret;
    int64_t delta = (int64_t)delta_bits;
    int kl = host_key(c, key, klen, k);
    if (kl < 0) {
        ret = kl;
    } else if (result && !rt_call_range(c, result, 8)) {
        ret = CLOISTER_EFAULT;
    } else {
        store_arith_op a = {.vivify = 1};
        if (delta >= 0) {
            a.incr = 1;
            a.delta = (uint64_t)delta;
            a.initial = (uint64_t)delta;
        } else {                      /* decr floors at 0, which is the clamp */
            a.incr = 0;
            a.delta = delta == INT64_MIN ? (uint64_t)INT64_MAX + 1 : (uint64_t)-delta;
            a.initial = 0;
        }
        uint64_t v;
        store_meta m;
        int rc = kv_arith(c->kv, k, (size_t)kl, &a, &v, &m);
        /* over the top, or wrapped past 2^64 (then v < delta) */
        if (rc == CL_OK && (v > INT64_MAX || (a.incr && v < a.delta)))
            rc = incr_clamp(c, k, (size_t)kl, m.cas, &v);
        else if (rc == CL_OK)
            wset_note(c, k, (size_t)kl, m.cas);
        ret = host_err(rc);
        if (rc == CL_OK && result)
            put_u64(c, result, v);
    }
    return (uint32_t)ret;
}

/*
 * Batch get (layout in function.h).  The keys area is parsed as it is
 * read, each length read once; a layout that does not hold exactly n keys
 * in keys_len bytes is CLOISTER_EINVAL.  Per-key problems (empty or too
 * long key, not found, integrity) are that entry's code.  Entries are
 * written while they fit whole; after the first that does not, the rest
 * are only measured (metadata, no decryption).  Not a snapshot: each key
 * is read on its own.  CLOISTER_ETIMEDOUT if the invocation's deadline
 * passes during a very large batch.
 */
uint64_t Z_cloisterZ_kv_get_many(cl_inst *inst, uint32_t keys, uint32_t keys_len, uint32_t n,
                                 uint32_t buf, uint32_t cap)
{
    rt_call *c = host_call();
    if (!c)
        return (uint64_t)(int64_t)CLOISTER_EUNAVAILABLE;
    if (!rt_call_range(c, keys, keys_len) || !rt_call_range(c, buf, cap))
        return (uint64_t)(int64_t)CLOISTER_EFAULT;
    uint64_t need = 0, pos = 0;
    int fits = 1;
    for (uint32_t i = 0; i < n; i++) {
        /* A huge batch must not outlive the invocation: the sandbox
         * cannot stop host code, so look at the deadline now and then. */
        if ((i & 255) == 255 && c->deadline_ns && now_ns(CLOCK_MONOTONIC) >= c->deadline_ns)
            return (uint64_t)(int64_t)CLOISTER_ETIMEDOUT;
        if (keys_len - pos < 4)
            return (uint64_t)(int64_t)CLOISTER_EINVAL;
        uint32_t klen = get_u32(c, keys + (uint32_t)pos);
        pos += 4;
        if (klen > keys_len - pos)
            return (uint64_t)(int64_t)CLOISTER_EINVAL;
        uint8_t k[STORE_KEY_MAX];
        int kl = host_key(c, keys + (uint32_t)pos, klen, k);
        pos += klen;
        int32_t code;
        store_meta m = {0};
        if (kl < 0) {
            code = kl;
        } else {
            int rc = host_read(c, k, (size_t)kl, fits, &m);
            code = rc == CL_OK ? (int32_t)m.len : host_err(rc);
        }
        uint64_t entry = 4 + (code >= 0 ? (uint64_t)m.len : 0);
        if (fits && entry <= cap - need) {
            put_u32(c, buf + (uint32_t)need, (uint32_t)code);
            if (code > 0)
                memcpy(gptr(c, buf + (uint32_t)need + 4), host_scratch.data, m.len);
        } else {
            fits = 0;
        }
        need += entry;
    }
    return pos == keys_len ? need : (uint64_t)(int64_t)CLOISTER_EINVAL;
}

/* The lock name in the tenant's namespace: as a key. */
uint32_t Z_cloisterZ_lock(cl_inst *inst, uint32_t name, uint32_t nlen, uint32_t timeout_ms)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    uint8_t k[STORE_KEY_MAX];
    int32_t ret;
    int kl = host_key(c, name, nlen, k);
    if (kl < 0) {
        ret = kl;
    } else if (kv_replicated(c->kv)) {
        uint64_t deadline = rt_locks_now_ns() + (uint64_t)timeout_ms * 1000000u;
        if (c->deadline_ns && c->deadline_ns < deadline)
            deadline = c->deadline_ns;
        ret = cluster_lock(c, k, (size_t)kl, deadline);
    } else if (!c->locks) {
        ret = CLOISTER_EUNAVAILABLE;
    } else {
        uint64_t deadline = rt_locks_now_ns() + (uint64_t)timeout_ms * 1000000u;
        if (c->deadline_ns && c->deadline_ns < deadline)
            deadline = c->deadline_ns;
        int rc = rt_locks_acquire(c->locks, k, (size_t)kl, c->owner, deadline, NULL);
        if (rc == CL_OK) {
            c->nheld++;               /* an upper bound: re-locking counts again */
            ret = 0;
        } else {
            ret = rc == CL_EAGAIN ? CLOISTER_ETIMEDOUT : host_err(rc);
        }
    }
    return (uint32_t)ret;
}

uint32_t Z_cloisterZ_unlock(cl_inst *inst, uint32_t name, uint32_t nlen)
{
    rt_call *c = host_call();
    if (!c)
        return (uint32_t)CLOISTER_EUNAVAILABLE;
    uint8_t k[STORE_KEY_MAX];
    int32_t ret;
    int kl = host_key(c, name, nlen, k);
    if (kl < 0) {
        ret = kl;
    } else if (kv_replicated(c->kv)) {
        int i = held_index(c, k, (size_t)kl);
        ret = i < 0 || cluster_unlock(c, i) != CL_OK ? CLOISTER_ENOTHELD : 0;
    } else if (!c->locks || rt_locks_release(c->locks, k, (size_t)kl, c->owner, 0) != CL_OK) {
        ret = CLOISTER_ENOTHELD;
    } else {
        if (c->nheld > 0)
            c->nheld--;
        ret = 0;
    }
    return (uint32_t)ret;
}

void Z_cloisterZ_log(cl_inst *inst, uint32_t msg, uint32_t len)
{
    static const char bad[] = "cloister_log: message outside the function's memory";
    rt_call *c = host_call();
    if (!c)
        return;
    if (c->log) {
        if (rt_call_range(c, msg, len))
            rt_fnlog_append(c->log, gptr(c, msg), len);
        else
            rt_fnlog_append(c->log, (const uint8_t *)bad, sizeof bad - 1);
    }
}

/* ---- module "wasi_snapshot_preview1" ------------------------------------------- */

/* WASI preview1 constants (wasi/api.h of wasi-libc). */
enum {
    WASI_ESUCCESS = 0, WASI_EBADF = 8, WASI_EFAULT = 21, WASI_EINVAL = 28, WASI_EIO = 29,
    WASI_ENOSYS = 52, WASI_ENOTSUP = 58, WASI_ESPIPE = 70,
};
#define WASI_CLOCK_REALTIME 0u
#define WASI_CLOCK_MONOTONIC 1u
#define WASI_FILETYPE_CHARACTER_DEVICE 2u
#define WASI_RIGHT_FD_READ (1ull << 1)
#define WASI_RIGHT_FD_WRITE (1ull << 6)
#define WASI_RIGHT_POLL_FD_READWRITE (1ull << 27)
#define WASI_EVENTTYPE_CLOCK 0u
#define WASI_EVENTTYPE_FD_READ 1u
#define WASI_EVENTTYPE_FD_WRITE 2u
#define WASI_SUBCLOCK_ABSTIME 1u
#define WASI_EVENT_HANGUP 1u
#define WASI_IOV_MAX 1024u        /* wasi-libc's IOV_MAX */
#define WASI_POLL_MAX 256u

static int std_fd(uint32_t fd) { return fd <= 2; }

/* Logs the pending text of stdout (which 0) or stderr (1) as one line. */
static void stdio_flush(rt_call *c, int which)
{
    if (c->log)
        rt_fnlog_append(c->log, c->pending[which].buf, c->pending[which].len);
    c->pending[which].len = 0;
}

/* Feeds guest text to the line buffer of stdout (which 0) or stderr (1):
 * each newline ends a log line; a line longer than RT_LOG_LINE_MAX is
 * logged in pieces of that size. */
static void stdio_write(rt_call *c, int which, const uint8_t *p, size_t n)
{
    uint32_t *len = &c->pending[which].len;
    while (n) {
        const uint8_t *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        while (seg) {
            if (*len == RT_LOG_LINE_MAX)
                stdio_flush(c, which);   /* more of a long line follows */
            size_t take = seg < RT_LOG_LINE_MAX - *len ? seg : RT_LOG_LINE_MAX - *len;
            memcpy(c->pending[which].buf + *len, p, take);
            *len += (uint32_t)take;
            p += take;
            n -= take;
            seg -= take;
        }
        if (nl) {
            stdio_flush(c, which);
            p++;
            n--;
        }
    }
}

typedef struct iov { uint32_t buf, len; } iov;

/* Reads and checks an iovec array once.  WASI errno; *total = sum. */
static uint32_t iovs_read(const rt_call *c, uint32_t iovs, uint32_t n, iov *out, uint64_t *total)
{
    if (n > WASI_IOV_MAX)
        return WASI_EINVAL;
    if (!rt_call_range(c, iovs, (uint64_t)n * 8))
        return WASI_EFAULT;
    *total = 0;
    for (uint32_t i = 0; i < n; i++) {
        out[i].buf = get_u32(c, iovs + 8 * i);
        out[i].len = get_u32(c, iovs + 8 * i + 4);
        if (!rt_call_range(c, out[i].buf, out[i].len))
            return WASI_EFAULT;
        *total += out[i].len;
    }
    return *total > UINT32_MAX ? WASI_EINVAL : WASI_ESUCCESS;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_write(wasi_inst *inst, uint32_t fd, uint32_t iovs,
                                            uint32_t iovs_len, uint32_t nwritten)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    iov v[WASI_IOV_MAX];
    uint64_t total = 0;
    uint32_t err;
    if (fd != 1 && fd != 2)
        err = WASI_EBADF;
    else if (!rt_call_range(c, nwritten, 4))
        err = WASI_EFAULT;
    else if ((err = iovs_read(c, iovs, iovs_len, v, &total)) == WASI_ESUCCESS) {
        for (uint32_t i = 0; i < iovs_len; i++)
            stdio_write(c, (int)fd - 1, gptr(c, v[i].buf), v[i].len);
        put_u32(c, nwritten, (uint32_t)total);
    }
    return err;
}

/* stdin is empty: reads return 0 bytes (end of file). */
uint32_t Z_wasi_snapshot_preview1Z_fd_read(wasi_inst *inst, uint32_t fd, uint32_t iovs,
                                           uint32_t iovs_len, uint32_t nread)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    iov v[WASI_IOV_MAX];
    uint64_t total;
    uint32_t err;
    if (fd != 0)
        err = WASI_EBADF;
    else if (!rt_call_range(c, nread, 4))
        err = WASI_EFAULT;
    else if ((err = iovs_read(c, iovs, iovs_len, v, &total)) == WASI_ESUCCESS)
        put_u32(c, nread, 0);
    return err;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_close(wasi_inst *inst, uint32_t fd)
{
    return std_fd(fd) ? WASI_ESUCCESS : WASI_EBADF;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_seek(wasi_inst *inst, uint32_t fd, uint64_t offset,
                                           uint32_t whence, uint32_t newoffset)
{
    return std_fd(fd) ? WASI_ESPIPE : WASI_EBADF;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_tell(wasi_inst *inst, uint32_t fd, uint32_t offset)
{
    return std_fd(fd) ? WASI_ESPIPE : WASI_EBADF;
}

/* fds 0-2 are character devices without seek/tell rights, which is what
 * makes wasi-libc treat them as terminals (stdout line-buffered). */
uint32_t Z_wasi_snapshot_preview1Z_fd_fdstat_get(wasi_inst *inst, uint32_t fd, uint32_t stat)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    uint32_t err = WASI_ESUCCESS;
    if (!std_fd(fd)) {
        err = WASI_EBADF;
    } else if (!rt_call_range(c, stat, 24)) {
        err = WASI_EFAULT;
    } else {
        uint8_t st[24] = {0};
        st[0] = WASI_FILETYPE_CHARACTER_DEVICE;          /* fs_filetype; fs_flags (u16 @2) = 0 */
        uint64_t rights = WASI_RIGHT_POLL_FD_READWRITE |
                          (fd == 0 ? WASI_RIGHT_FD_READ : WASI_RIGHT_FD_WRITE);
        memcpy(st + 8, &rights, 8);                      /* fs_rights_base; inheriting @16 = 0 */
        memcpy(gptr(c, stat), st, sizeof st);
    }
    return err;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_fdstat_set_flags(wasi_inst *inst, uint32_t fd, uint32_t flags)
{
    if (!std_fd(fd))
        return WASI_EBADF;
    return flags == 0 ? WASI_ESUCCESS : WASI_ENOTSUP;
}

/* No preopened directories: wasi-libc asks from fd 3 up until EBADF. */
uint32_t Z_wasi_snapshot_preview1Z_fd_prestat_get(wasi_inst *inst, uint32_t fd, uint32_t buf)
{
    return WASI_EBADF;
}

uint32_t Z_wasi_snapshot_preview1Z_fd_prestat_dir_name(wasi_inst *inst, uint32_t fd, uint32_t path,
                                                       uint32_t len)
{
    return WASI_EBADF;
}

/* No file system: there is no directory fd to open a path under. */
uint32_t Z_wasi_snapshot_preview1Z_path_open(wasi_inst *inst, uint32_t dirfd, uint32_t dirflags,
                                             uint32_t path, uint32_t path_len, uint32_t oflags,
                                             uint64_t rights, uint64_t inheriting, uint32_t fdflags,
                                             uint32_t fd_out)
{
    return WASI_EBADF;
}

/* Empty argument and environment lists. */
static uint32_t two_zeros(uint32_t a, uint32_t b)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    uint32_t err = WASI_ESUCCESS;
    if (!rt_call_range(c, a, 4) || !rt_call_range(c, b, 4)) {
        err = WASI_EFAULT;
    } else {
        put_u32(c, a, 0);
        put_u32(c, b, 0);
    }
    return err;
}

uint32_t Z_wasi_snapshot_preview1Z_args_sizes_get(wasi_inst *inst, uint32_t argc, uint32_t size)
{
    return two_zeros(argc, size);
}

uint32_t Z_wasi_snapshot_preview1Z_args_get(wasi_inst *inst, uint32_t argv, uint32_t buf)
{
    return WASI_ESUCCESS;   /* nothing to write */
}

uint32_t Z_wasi_snapshot_preview1Z_environ_sizes_get(wasi_inst *inst, uint32_t count, uint32_t size)
{
    return two_zeros(count, size);
}

uint32_t Z_wasi_snapshot_preview1Z_environ_get(wasi_inst *inst, uint32_t environ, uint32_t buf)
{
    return WASI_ESUCCESS;
}

static int wasi_clock(uint32_t id, clockid_t *out)
{
    if (id == WASI_CLOCK_REALTIME)
        *out = CLOCK_REALTIME;
    else if (id == WASI_CLOCK_MONOTONIC)
        *out = CLOCK_MONOTONIC;
    else
        return 0;
    return 1;
}

uint32_t Z_wasi_snapshot_preview1Z_clock_res_get(wasi_inst *inst, uint32_t id, uint32_t res)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    uint32_t err = WASI_ESUCCESS;
    clockid_t cid;
    struct timespec ts;
    if (!wasi_clock(id, &cid))
        err = WASI_EINVAL;
    else if (!rt_call_range(c, res, 8))
        err = WASI_EFAULT;
    else if (clock_getres(cid, &ts) != 0)
        err = WASI_EIO;
    else
        put_u64(c, res, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    return err;
}

uint32_t Z_wasi_snapshot_preview1Z_clock_time_get(wasi_inst *inst, uint32_t id, uint64_t precision,
                                                  uint32_t time)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    uint32_t err = WASI_ESUCCESS;
    clockid_t cid;
    if (!wasi_clock(id, &cid))
        err = WASI_EINVAL;
    else if (!rt_call_range(c, time, 8))
        err = WASI_EFAULT;
    else
        put_u64(c, time, now_ns(cid));
    return err;
}

uint32_t Z_wasi_snapshot_preview1Z_random_get(wasi_inst *inst, uint32_t buf, uint32_t len)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    uint32_t err = WASI_ESUCCESS;
    if (!rt_call_range(c, buf, len)) {
        err = WASI_EFAULT;
    } else {
        for (uint32_t done = 0; done < len;) {
            uint32_t n = len - done < (1u << 20) ? len - done : (1u << 20);
            if (RAND_bytes(gptr(c, buf + done), (int)n) != 1) {
                err = WASI_EIO;
                break;
            }
            done += n;
        }
    }
    return err;
}

void Z_wasi_snapshot_preview1Z_proc_exit(wasi_inst *inst, uint32_t code)
{
    rt_call *c = host_call();
    if (c) {
        c->exited = 1;
        c->exit_code = (int32_t)code;
    }
    rt_sandbox_exit();
}

uint32_t Z_wasi_snapshot_preview1Z_sched_yield(wasi_inst *inst)
{
    return WASI_ESUCCESS;
}

/*
 * poll_oneoff: clock subscriptions sleep (at most until the invocation's
 * deadline); fd subscriptions are ready at
 * once for stdin (end of file) and stdout/stderr, EBADF for other fds.
 * Subscription: 48 bytes (userdata u64 @0, tag u8 @8; clock: id u32 @16,
 * timeout u64 @24, precision u64 @32, flags u16 @40; fd: fd u32 @16).
 * Event: 32 bytes (userdata @0, error u16 @8, type u8 @10, nbytes u64 @16,
 * flags u16 @24).
 */
uint32_t Z_wasi_snapshot_preview1Z_poll_oneoff(wasi_inst *inst, uint32_t in, uint32_t out,
                                               uint32_t nsubs, uint32_t nevents)
{
    rt_call *c = host_call();
    if (!c)
        return WASI_ENOSYS;
    struct sub { uint64_t userdata, when; uint8_t type; uint16_t error; } s[WASI_POLL_MAX];
    uint32_t nready = 0, n = 0;
    uint64_t earliest = UINT64_MAX;
    if (nsubs == 0 || nsubs > WASI_POLL_MAX)
        return WASI_EINVAL;
    if (!rt_call_range(c, in, (uint64_t)nsubs * 48) || !rt_call_range(c, out, (uint64_t)nsubs * 32) ||
        !rt_call_range(c, nevents, 4))
        return WASI_EFAULT;
    uint64_t mono = now_ns(CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < nsubs; i++) {
        uint8_t raw[48];
        memcpy(raw, gptr(c, in + 48 * i), sizeof raw);
        memcpy(&s[i].userdata, raw, 8);
        s[i].type = raw[8];
        s[i].error = WASI_ESUCCESS;
        s[i].when = 0;
        if (s[i].type == WASI_EVENTTYPE_CLOCK) {
            uint32_t id;
            uint64_t timeout;
            uint16_t flags;
            clockid_t cid;
            memcpy(&id, raw + 16, 4);
            memcpy(&timeout, raw + 24, 8);
            memcpy(&flags, raw + 40, 2);
            if (!wasi_clock(id, &cid)) {
                s[i].error = WASI_EINVAL;
                nready++;
                continue;
            }
            if (flags & WASI_SUBCLOCK_ABSTIME) {   /* to a relative wait */
                uint64_t now = now_ns(cid);
                timeout = timeout > now ? timeout - now : 0;
            }
            s[i].when = timeout > UINT64_MAX - mono ? UINT64_MAX : mono + timeout;
            if (s[i].when < earliest)
                earliest = s[i].when;
        } else if (s[i].type == WASI_EVENTTYPE_FD_READ || s[i].type == WASI_EVENTTYPE_FD_WRITE) {
            uint32_t fd;
            memcpy(&fd, raw + 16, 4);
            int ok = s[i].type == WASI_EVENTTYPE_FD_READ ? fd == 0 : (fd == 1 || fd == 2);
            s[i].error = ok ? WASI_ESUCCESS : WASI_EBADF;
            nready++;
        } else {
            return WASI_EINVAL;
        }
    }
    if (nready == 0) {   /* clocks only: sleep until the first one */
        uint64_t until = earliest;
        if (c->deadline_ns && c->deadline_ns < until)
            until = c->deadline_ns;
        struct timespec ts = {.tv_sec = (time_t)(until / 1000000000u),
                              .tv_nsec = (long)(until % 1000000000u)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;   /* the sandbox's timer signal: sleep on to the same end */
    }
    mono = now_ns(CLOCK_MONOTONIC);
    for (uint32_t i = 0; i < nsubs; i++) {
        int fired = s[i].type == WASI_EVENTTYPE_CLOCK ? (s[i].error || s[i].when <= mono) : 1;
        if (!fired)
            continue;
        uint8_t ev[32] = {0};
        memcpy(ev, &s[i].userdata, 8);
        memcpy(ev + 8, &s[i].error, 2);
        ev[10] = s[i].type;
        if (s[i].type == WASI_EVENTTYPE_FD_READ && !s[i].error) {
            uint16_t hup = WASI_EVENT_HANGUP;   /* stdin: at end of file */
            memcpy(ev + 24, &hup, 2);
        }
        memcpy(gptr(c, out + 32 * n), ev, sizeof ev);
        n++;
    }
    put_u32(c, nevents, n);
    return WASI_ESUCCESS;
}

/* ---- end of an invocation ---------------------------------------------------- */

void rt_host_call_end(rt_call *c)
{
    for (int i = 0; i < 2; i++)
        if (c->pending[i].len)
            stdio_flush(c, i);
    if (c->kv && kv_replicated(c->kv)) {
        while (c->nheld > 0)
            (void)cluster_unlock(c, c->nheld - 1);   /* a lapsed lease has nothing to release */
    } else if (c->locks && c->owner) {
        rt_locks_release_all(c->locks, c->owner);
    }
    c->nheld = 0;
}

/* ---- the import table ---------------------------------------------------------- */

#define CL_IMPORT(name, sig) {"cloister", #name, sig, (void (*)(void))Z_cloisterZ_##name}
#define WASI_IMPORT(name, sig) \
    {"wasi_snapshot_preview1", #name, sig, (void (*)(void))Z_wasi_snapshot_preview1Z_##name}

const rt_import rt_imports[] = {
    CL_IMPORT(input, "ii:i"),
    CL_IMPORT(output, "ii:i"),
    CL_IMPORT(kv_get, "iiiii:I"),
    CL_IMPORT(kv_set, "iiii:i"),
    CL_IMPORT(kv_delete, "ii:i"),
    CL_IMPORT(kv_cas, "iiIii:i"),
    CL_IMPORT(kv_incr, "iiIi:i"),
    CL_IMPORT(kv_get_many, "iiiii:I"),
    CL_IMPORT(lock, "iii:i"),
    CL_IMPORT(unlock, "ii:i"),
    CL_IMPORT(log, "ii:"),
    WASI_IMPORT(args_get, "ii:i"),
    WASI_IMPORT(args_sizes_get, "ii:i"),
    WASI_IMPORT(environ_get, "ii:i"),
    WASI_IMPORT(environ_sizes_get, "ii:i"),
    WASI_IMPORT(clock_res_get, "ii:i"),
    WASI_IMPORT(clock_time_get, "iIi:i"),
    WASI_IMPORT(fd_close, "i:i"),
    WASI_IMPORT(fd_fdstat_get, "ii:i"),
    WASI_IMPORT(fd_fdstat_set_flags, "ii:i"),
    WASI_IMPORT(fd_prestat_get, "ii:i"),
    WASI_IMPORT(fd_prestat_dir_name, "iii:i"),
    WASI_IMPORT(fd_read, "iiii:i"),
    WASI_IMPORT(fd_seek, "iIii:i"),
    WASI_IMPORT(fd_tell, "ii:i"),
    WASI_IMPORT(fd_write, "iiii:i"),
    WASI_IMPORT(path_open, "iiiiiIIii:i"),
    WASI_IMPORT(poll_oneoff, "iiii:i"),
    WASI_IMPORT(proc_exit, "i:"),
    WASI_IMPORT(random_get, "ii:i"),
    WASI_IMPORT(sched_yield, ":i"),
};
const size_t rt_nimports = sizeof rt_imports / sizeof rt_imports[0];

const rt_import *rt_import_find(const char *module, size_t mlen, const char *name, size_t nlen)
{
    for (size_t i = 0; i < rt_nimports; i++) {
        const rt_import *im = &rt_imports[i];
        if (strlen(im->module) == mlen && memcmp(im->module, module, mlen) == 0 &&
            strlen(im->name) == nlen && memcmp(im->name, name, nlen) == 0)
            return im;
    }
    return NULL;
}
