/*
 * sandbox.c - per-thread sandboxes: the pool of instance slots, calls
 * into guest code with limits, and explicit instances (sandbox.h).
 *
 * A slot is an RT_SLOT_BYTES reservation plus the instance that lives in
 * it.  Its states:
 *   FREE  no instance; nothing accessible (reservation only)
 *   IDLE  a pristine instance of `code` (template memory mapped, nothing
 *         changed, no private pages), ready for the next call of `code`
 *   BUSY  in a call or held through rt_instance_*
 * A slot is created for an instance and unmapped when its instance is
 * dropped (trim, retired code, failure); between the two it is IDLE or
 * BUSY.  Invariants: `extent` bounds every byte of the reservation that
 * may be accessible or own a page; beyond it the reservation is PROT_NONE
 * with no pages.  A slot holds one reference to `code` while code != NULL.
 * Leaving BUSY always goes through slot_load (restore to the template)
 * or slot_destroy (unmap), so an IDLE slot never holds anything a call
 * wrote.
 *
 * IDLE slots are on `idle` (least recently used first) and on their
 * code's list in `by_code` (a small open-addressing map code -> most
 * recently idled slot).  Everything here is touched only by the
 * sandbox's own thread, except the stats (atomics).
 */
#include "sandbox.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../common/err.h"
#include "../common/log.h"
#include "template.h"
#include "trap.h"

#define RT_DEFAULT_SLOTS 64

typedef enum { SLOT_IDLE = 1, SLOT_BUSY } slot_state;

struct rt_slot {
    rt_sandbox *sb;
    uint8_t *base;             /* RT_SLOT_BYTES reservation */
    size_t extent;
    rt_code *code;             /* the instance's code (a reference), or NULL */
    uint8_t *inst;             /* instance struct (inst_cap bytes, 64-aligned) */
    size_t inst_cap;
    int has_tables;            /* inst's table buffers are allocated */
    int pristine;              /* the instance equals its template */
    slot_state state;
    struct rt_slot *prev, *next;     /* idle LRU list */
    struct rt_slot *cprev, *cnext;   /* idle slots of the same code */
};

typedef struct slot_list {
    struct rt_slot *head, *tail;
} slot_list;

typedef struct code_entry {
    rt_code *code;             /* NULL: empty bucket */
    struct rt_slot *head;      /* its idle slots, most recently idled first */
} code_entry;

struct rt_sandbox {
    pthread_t thread;
    size_t max_slots;
    slot_list idle;
    code_entry *by_code;
    size_t map_cap, map_used;  /* power of two; load <= 1/2 */
    rt_sandbox_stats st;       /* updated with relaxed atomics */
};

static __thread rt_sandbox *thread_sandbox;

#define STAT_ADD(sb, f, n) __atomic_add_fetch(&(sb)->st.f, (n), __ATOMIC_RELAXED)
#define STAT_SUB(sb, f, n) __atomic_sub_fetch(&(sb)->st.f, (n), __ATOMIC_RELAXED)

/* ---- lists ----------------------------------------------------------------------- */

static void list_push_tail(slot_list *l, struct rt_slot *s)
{
    s->next = NULL;
    s->prev = l->tail;
    if (l->tail)
        l->tail->next = s;
    else
        l->head = s;
    l->tail = s;
}

static void list_remove(slot_list *l, struct rt_slot *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        l->tail = s->prev;
    s->prev = s->next = NULL;
}

/* ---- code -> idle slots map ---------------------------------------------------------- */

static size_t code_hash(const rt_code *c, size_t cap)
{
    return (size_t)(((uintptr_t)c >> 4) * 0x9e3779b97f4a7c15ull) & (cap - 1);
}

static code_entry *map_find(rt_sandbox *sb, const rt_code *c)
{
    size_t i;

    if (!sb->map_cap)
        return NULL;
    for (i = code_hash(c, sb->map_cap); sb->by_code[i].code; i = (i + 1) & (sb->map_cap - 1))
        if (sb->by_code[i].code == c)
            return &sb->by_code[i];
    return NULL;
}

static int map_grow(rt_sandbox *sb)
{
    size_t cap = sb->map_cap ? sb->map_cap * 2 : 16, i, j;
    code_entry *m = calloc(cap, sizeof *m);

    if (!m)
        return CL_ENOMEM;
    for (i = 0; i < sb->map_cap; i++) {
        if (!sb->by_code[i].code)
            continue;
        for (j = code_hash(sb->by_code[i].code, cap); m[j].code; j = (j + 1) & (cap - 1))
            ;
        m[j] = sb->by_code[i];
    }
    free(sb->by_code);
    sb->by_code = m;
    sb->map_cap = cap;
    return CL_OK;
}

/* Entry for c, created if missing (NULL on CL_ENOMEM). */
static code_entry *map_get(rt_sandbox *sb, rt_code *c)
{
    code_entry *e = map_find(sb, c);
    size_t i;

    if (e)
        return e;
    if ((sb->map_used + 1) * 2 > sb->map_cap && map_grow(sb) != CL_OK)
        return NULL;
    for (i = code_hash(c, sb->map_cap); sb->by_code[i].code; i = (i + 1) & (sb->map_cap - 1))
        ;
    sb->by_code[i].code = c;
    sb->by_code[i].head = NULL;
    sb->map_used++;
    return &sb->by_code[i];
}

/* Removes e, shifting later entries of its probe run back (no tombstones). */
static void map_delete(rt_sandbox *sb, code_entry *e)
{
    size_t mask = sb->map_cap - 1, i = (size_t)(e - sb->by_code), j = i, k;

    sb->by_code[i].code = NULL;
    for (;;) {
        j = (j + 1) & mask;
        if (!sb->by_code[j].code)
            break;
        k = code_hash(sb->by_code[j].code, sb->map_cap);
        /* entry j may move to i if its home k is not in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
            sb->by_code[i] = sb->by_code[j];
            sb->by_code[j].code = NULL;
            i = j;
        }
    }
    sb->map_used--;
}

/* ---- idle instances ----------------------------------------------------------------- */

static int idle_push(rt_sandbox *sb, struct rt_slot *s)
{
    code_entry *e = map_get(sb, s->code);

    if (!e)
        return CL_ENOMEM;
    s->state = SLOT_IDLE;
    list_push_tail(&sb->idle, s);
    s->cprev = NULL;
    s->cnext = e->head;
    if (e->head)
        e->head->cprev = s;
    e->head = s;
    STAT_ADD(sb, idle, 1);
    return CL_OK;
}

static void idle_remove(rt_sandbox *sb, struct rt_slot *s)
{
    list_remove(&sb->idle, s);
    if (s->cnext)
        s->cnext->cprev = s->cprev;
    if (s->cprev) {
        s->cprev->cnext = s->cnext;
    } else {
        code_entry *e = map_find(sb, s->code);
        CL_ASSERT(e && e->head == s);
        e->head = s->cnext;
        if (!e->head)
            map_delete(sb, e);
    }
    s->cprev = s->cnext = NULL;
    STAT_SUB(sb, idle, 1);
}

static struct rt_slot *idle_take(rt_sandbox *sb, rt_code *c)
{
    code_entry *e = map_find(sb, c);
    struct rt_slot *s = e ? e->head : NULL;

    if (s) {
        idle_remove(sb, s);
        s->state = SLOT_BUSY;
        STAT_ADD(sb, busy, 1);
    }
    return s;
}

/* ---- slots ------------------------------------------------------------------------------- */

static void slot_drop_instance(struct rt_slot *s)
{
    if (s->code) {
        if (s->has_tables)
            rt_code_free_tables(s->code, s->inst);
        rt_code_unref(s->code);
    }
    s->code = NULL;
    s->has_tables = 0;
    s->pristine = 0;
}

/* Unmaps the slot and frees it (the caller has taken it off the lists). */
static void slot_destroy(rt_sandbox *sb, struct rt_slot *s)
{
    slot_drop_instance(s);
    munmap(s->base, RT_SLOT_BYTES);
    free(s->inst);
    free(s);
    STAT_SUB(sb, slots, 1);
}

static struct rt_slot *slot_new(rt_sandbox *sb)
{
    struct rt_slot *s = calloc(1, sizeof *s);

    if (!s)
        return NULL;
    s->base = mmap(NULL, RT_SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->base == MAP_FAILED) {
        free(s);
        return NULL;
    }
    s->sb = sb;
    STAT_ADD(sb, slots, 1);
    return s;
}

/* A slot to put a new instance in: a new one, or the least recently used
 * idle one (its instance is dropped).  NULL when every slot is busy (or
 * memory is short). */
static struct rt_slot *slot_take(rt_sandbox *sb, int *repurposed)
{
    struct rt_slot *s = NULL;

    *repurposed = 0;
    if (sb->st.slots < sb->max_slots && (s = slot_new(sb)) != NULL) {
        /* new */
    } else if ((s = sb->idle.head) != NULL) {
        idle_remove(sb, s);
        *repurposed = 1;
    } else {
        return NULL;
    }
    s->state = SLOT_BUSY;
    STAT_ADD(sb, busy, 1);
    return s;
}

/*
 * Makes s hold a pristine instance of c: in place if it holds one of c
 * already (a reset), else replacing whatever it held.  On failure the
 * slot's mapping is undefined and the caller must destroy it.
 */
static int slot_load(struct rt_slot *s, rt_code *c)
{
    int same = s->code == c, rc;

    if (!same)
        slot_drop_instance(s);
    if ((rc = rt_code_map_memory(c, s->base, &s->extent, same)) != CL_OK)
        return rc;
    if (s->inst_cap < c->inst_size) {   /* only when !same: no tables held */
        uint8_t *p = aligned_alloc(64, c->inst_size);
        if (!p)
            return CL_ENOMEM;
        free(s->inst);
        s->inst = p;
        s->inst_cap = c->inst_size;
    }
    rc = rt_code_copy_instance(c, s->inst, s->base, s->has_tables);
    s->has_tables = rc == CL_OK;
    if (!same) {
        rt_code_ref(c);
        s->code = c;
    }
    s->pristine = rc == CL_OK;
    return rc;
}

/* Ends a use of s: restores it to its code's template and makes it idle,
 * or destroys it (retired code, failure). */
static void slot_release(rt_sandbox *sb, struct rt_slot *s)
{
    CL_ASSERT(s->state == SLOT_BUSY);
    STAT_SUB(sb, busy, 1);
    if (s->code && !__atomic_load_n(&s->code->retired, __ATOMIC_ACQUIRE)) {
        if (!s->pristine) {
            if (slot_load(s, s->code) != CL_OK)
                goto destroy;
            STAT_ADD(sb, resets, 1);
        }
        if (idle_push(sb, s) == CL_OK)
            return;
    }
destroy:
    slot_destroy(sb, s);
}

/* ---- calls ----------------------------------------------------------------------------- */

struct handle_run {
    uint32_t (*handle)(void *inst);
    void *inst;
    uint32_t ret;
};

static void run_handle(void *arg)
{
    struct handle_run *r = arg;
    r->ret = r->handle(r->inst);
}

static void set_detail(rt_result *res, const char *a, const char *b)
{
    snprintf(res->detail, sizeof res->detail, "%s%s", a, b);
}

/* Runs handle on the instance in s, as it is. */
static void slot_run(rt_sandbox *sb, struct rt_slot *s, rt_call *call, rt_result *res)
{
    rt_guest *g = &rt_guest_state;
    rt_code *c = s->code;
    wasm_rt_memory_t *m = rt_code_memory(c, s->inst);
    struct handle_run run = { c->shim->handle, s->inst, 0 };
    uint64_t t0 = rt_now_ns();
    int trap;

    res->from_template = s->pristine;   /* rt_sandbox_call overrides */
    s->pristine = 0;
    if (!call->deadline_ns)
        call->deadline_ns = t0 + (uint64_t)c->lim.timeout_ms * 1000000u;
    call->mem_base = m->data;
    call->mem_size = m->size;
    call->exited = 0;
    call->exit_code = 0;

    g->mem_lo = (uintptr_t)s->base;
    g->mem_hi = (uintptr_t)s->base + RT_SLOT_BYTES;
    g->code_lo = c->text_lo;
    g->code_hi = c->text_hi;
    g->mem = m;
    g->max_pages = c->lim.max_memory_pages;
    g->extent = &s->extent;
    rt_current_call = call;
    trap = rt_trap_run(run_handle, &run, call->deadline_ns);
    rt_current_call = NULL;
    rt_guest_leave(g);

    res->duration_ns = rt_now_ns() - t0;
    STAT_ADD(sb, calls, 1);
    if (call->exited) {
        res->code = call->exit_code;
        res->status = call->exit_code ? RT_FN_ERROR : RT_OK;
        if (call->exit_code)
            snprintf(res->detail, sizeof res->detail, "exited with status %d", (int)call->exit_code);
    } else if (trap == 0) {
        res->code = (int32_t)run.ret;
        res->status = run.ret ? RT_FN_ERROR : RT_OK;
    } else if (trap == RT_TRAP_TIMEOUT) {
        res->status = RT_TIMEOUT;
        set_detail(res, "timeout: ", "wall-time limit exceeded");
        STAT_ADD(sb, timeouts, 1);
    } else {
        res->status = RT_TRAP;
        set_detail(res, "trap: ", rt_trap_name(trap));
        STAT_ADD(sb, traps, 1);
    }
}

static int instance_from_template(rt_sandbox *sb, rt_code *code, struct rt_slot **out)
{
    int repurposed, rc;
    struct rt_slot *s = slot_take(sb, &repurposed);

    *out = NULL;
    if (!s)
        return CL_EAGAIN;
    if ((rc = slot_load(s, code)) != CL_OK) {
        STAT_SUB(sb, busy, 1);
        slot_destroy(sb, s);
        return rc;
    }
    STAT_ADD(sb, instances_from_template, 1);
    if (repurposed)
        STAT_ADD(sb, repurposed, 1);
    *out = s;
    return CL_OK;
}

int rt_sandbox_call(rt_sandbox *sb, rt_code *code, rt_call *call, rt_result *res)
{
    struct rt_slot *s;
    int rc, from_template;

    CL_ASSERT(pthread_equal(sb->thread, pthread_self()));
    memset(res, 0, sizeof *res);
    s = idle_take(sb, code);
    from_template = s == NULL;
    if (!s && (rc = instance_from_template(sb, code, &s)) != CL_OK) {
        res->status = rc == CL_EAGAIN ? RT_OVERLOADED : RT_INTERNAL;
        snprintf(res->detail, sizeof res->detail, "%s",
                 rc == CL_EAGAIN ? "no free instance slot" : "cannot make an instance");
        return rc;
    }
    slot_run(sb, s, call, res);
    res->from_template = from_template;
    slot_release(sb, s);
    return CL_OK;
}

/* ---- explicit instances -------------------------------------------------------------- */

int rt_instance_create(rt_sandbox *sb, rt_code *code, rt_instance **out)
{
    struct rt_slot *s;

    CL_ASSERT(pthread_equal(sb->thread, pthread_self()));
    s = idle_take(sb, code);
    if (s) {
        *out = s;
        return CL_OK;
    }
    return instance_from_template(sb, code, out);
}

int rt_instance_call(rt_instance *in, rt_call *call, rt_result *res)
{
    CL_ASSERT(in->state == SLOT_BUSY && pthread_equal(in->sb->thread, pthread_self()));
    memset(res, 0, sizeof *res);
    if (!in->code || !in->has_tables) {
        res->status = RT_INTERNAL;
        snprintf(res->detail, sizeof res->detail, "instance lost");
        return CL_EINVAL;
    }
    slot_run(in->sb, in, call, res);
    return CL_OK;
}

int rt_instance_reset(rt_instance *in)
{
    int rc;

    CL_ASSERT(in->state == SLOT_BUSY && pthread_equal(in->sb->thread, pthread_self()));
    if (!in->code)
        return CL_EINVAL;
    if (in->pristine)
        return CL_OK;
    rc = slot_load(in, in->code);
    if (rc != CL_OK) {
        /* nothing of the old instance may stay reachable */
        slot_drop_instance(in);
        if (mmap(in->base, RT_SLOT_BYTES, PROT_NONE,
                 MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) != MAP_FAILED)
            in->extent = 0;
        return rc;
    }
    STAT_ADD(in->sb, resets, 1);
    return CL_OK;
}

void rt_instance_destroy(rt_instance *in)
{
    if (in)
        slot_release(in->sb, in);
}

/* ---- sandbox ------------------------------------------------------------------------------ */

int rt_sandbox_create(const rt_sandbox_config *cfg, rt_sandbox **out)
{
    rt_sandbox *sb;
    int rc;

    *out = NULL;
    if (thread_sandbox)
        return CL_EEXISTS;
    if ((rc = rt_trap_thread_init()) != CL_OK)
        return rc;
    sb = calloc(1, sizeof *sb);
    if (!sb) {
        rt_trap_thread_fini();
        return CL_ENOMEM;
    }
    sb->thread = pthread_self();
    sb->max_slots = cfg && cfg->max_slots ? cfg->max_slots : RT_DEFAULT_SLOTS;
    thread_sandbox = sb;
    *out = sb;
    return CL_OK;
}

void rt_sandbox_trim(rt_sandbox *sb, size_t keep_idle)
{
    struct rt_slot *s, *next;

    CL_ASSERT(pthread_equal(sb->thread, pthread_self()));
    for (s = sb->idle.head; s; s = next) {
        next = s->next;
        if (__atomic_load_n(&s->code->retired, __ATOMIC_ACQUIRE) || sb->st.idle > keep_idle) {
            idle_remove(sb, s);
            slot_destroy(sb, s);
        }
    }
}

void rt_sandbox_destroy(rt_sandbox *sb)
{
    if (!sb)
        return;
    CL_ASSERT(pthread_equal(sb->thread, pthread_self()));
    if (sb->st.busy)
        cl_log_error("sandbox", "destroying a sandbox with %llu instances in use",
                     (unsigned long long)sb->st.busy);
    rt_sandbox_trim(sb, 0);
    free(sb->by_code);
    free(sb);
    thread_sandbox = NULL;
    rt_trap_thread_fini();
}

void rt_sandbox_get_stats(const rt_sandbox *sb, rt_sandbox_stats *out)
{
    out->slots = __atomic_load_n(&sb->st.slots, __ATOMIC_RELAXED);
    out->idle = __atomic_load_n(&sb->st.idle, __ATOMIC_RELAXED);
    out->busy = __atomic_load_n(&sb->st.busy, __ATOMIC_RELAXED);
    out->instances_from_template = __atomic_load_n(&sb->st.instances_from_template, __ATOMIC_RELAXED);
    out->repurposed = __atomic_load_n(&sb->st.repurposed, __ATOMIC_RELAXED);
    out->resets = __atomic_load_n(&sb->st.resets, __ATOMIC_RELAXED);
    out->calls = __atomic_load_n(&sb->st.calls, __ATOMIC_RELAXED);
    out->traps = __atomic_load_n(&sb->st.traps, __ATOMIC_RELAXED);
    out->timeouts = __atomic_load_n(&sb->st.timeouts, __ATOMIC_RELAXED);
}
