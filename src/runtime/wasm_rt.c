/*
 * wasm_rt.c - Cloister's implementation of wabt 1.0.32's wasm-rt.h: the
 * runtime functions that wasm2c's generated code calls.
 *
 * Compiled function modules (dlopen()ed shared objects) bind to these
 * symbols in the executable.  Unlike wabt's own libwasm-rt-impl, every
 * function here is thread-safe: trap and exception unwind targets are
 * per thread (trap.h), and the function-type registry is shared under a
 * mutex, so equal signatures get equal indices in every module (which is
 * what call_indirect's type check compares).
 *
 * Memories live in the 8 GiB slot reservations of the sandbox: while a
 * template is instantiated (template.c) allocation goes through its
 * instantiation context; during a call, memory.grow is mprotect within
 * the invocation's page limit and keeps rt_current_call's window current.
 * A memory allocated outside the sandbox (nobody does, but the header
 * allows it) gets its own reservation, freed by wasm_rt_free_memory.
 *
 * Process-wide state: the type registry, the tag counter, the list of
 * standalone memories, the initialised flag.  All of it lives as long as
 * the process: wasm_rt_free() keeps it, since loaded modules hold indices.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <wasm-rt.h>

#include "../common/log.h"
#include "call.h"
#include "sandbox.h"
#include "template.h"
#include "trap.h"

#if !WASM_RT_MEMCHECK_SIGNAL_HANDLER || WASM_RT_USE_STACK_DEPTH_COUNT
#error "Cloister runs wasm2c code with signal-handler bounds checks"
#endif

/* ---- init, traps ----------------------------------------------------------- */

static int rt_initialized;

void wasm_rt_init(void)
{
    __atomic_store_n(&rt_initialized, 1, __ATOMIC_RELEASE);
}

bool wasm_rt_is_initialized(void)
{
    return __atomic_load_n(&rt_initialized, __ATOMIC_ACQUIRE) != 0;
}

void wasm_rt_free(void)
{
    /* Nothing to free: the registry outlives every module (see above). */
}

void wasm_rt_trap(wasm_rt_trap_t code)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf *t = g->target;

    if (!t) {
        cl_log_error("sandbox", "wasm_rt_trap(%s) outside guest code", wasm_rt_strerror(code));
        abort();
    }
    g->target = NULL;
    siglongjmp(*t, code == WASM_RT_TRAP_NONE ? WASM_RT_TRAP_UNREACHABLE : (int)code);
}

const char *wasm_rt_strerror(wasm_rt_trap_t trap)
{
    switch (trap) {
    case WASM_RT_TRAP_NONE:               return "no error";
    case WASM_RT_TRAP_OOB:                return "out of bounds memory access";
    case WASM_RT_TRAP_INT_OVERFLOW:       return "integer overflow";
    case WASM_RT_TRAP_DIV_BY_ZERO:        return "integer divide by zero";
    case WASM_RT_TRAP_INVALID_CONVERSION: return "invalid conversion to integer";
    case WASM_RT_TRAP_UNREACHABLE:        return "unreachable";
    case WASM_RT_TRAP_CALL_INDIRECT:      return "indirect call signature mismatch or undefined element";
    case WASM_RT_TRAP_UNCAUGHT_EXCEPTION: return "uncaught exception";
#if !WASM_RT_MERGED_OOB_AND_EXHAUSTION_TRAPS
    case WASM_RT_TRAP_EXHAUSTION:         return "call stack exhausted";
#endif
    }
    return "unknown trap";
}

/* ---- function types ------------------------------------------------------------ */

typedef struct fsig {
    uint32_t nparams, nresults;
    uint8_t *types;             /* params then results */
} fsig;

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static fsig *sigs;
static uint32_t nsigs, capsigs;

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...)
{
    size_t n = (size_t)params + results;
    uint8_t small[64], *types = n <= sizeof small ? small : malloc(n);
    va_list ap;
    uint32_t i, idx;

    CL_ASSERT(types != NULL);
    va_start(ap, results);
    for (i = 0; i < n; i++)
        types[i] = (uint8_t)va_arg(ap, int);   /* wasm_rt_type_t, promoted */
    va_end(ap);

    pthread_mutex_lock(&sig_lock);
    for (idx = 0; idx < nsigs; idx++)
        if (sigs[idx].nparams == params && sigs[idx].nresults == results &&
            memcmp(sigs[idx].types, types, n) == 0)
            goto out;
    if (nsigs == capsigs) {
        capsigs = capsigs ? capsigs * 2 : 64;
        sigs = realloc(sigs, capsigs * sizeof *sigs);
        CL_ASSERT(sigs != NULL);
    }
    sigs[idx].nparams = params;
    sigs[idx].nresults = results;
    sigs[idx].types = malloc(n ? n : 1);
    CL_ASSERT(sigs[idx].types != NULL);
    memcpy(sigs[idx].types, types, n);
    nsigs++;
out:
    pthread_mutex_unlock(&sig_lock);
    if (types != small)
        free(types);
    return idx + 1;   /* 0 is the null funcref's type */
}

/* ---- exceptions ---------------------------------------------------------------- */

#define RT_EXCEPTION_MAX 256

static uint32_t next_tag;
static __thread struct {
    uint32_t tag, size;
    uint8_t data[RT_EXCEPTION_MAX];
} exc;

uint32_t wasm_rt_register_tag(uint32_t size)
{
    (void)size;   /* checked when an exception is loaded */
    return __atomic_fetch_add(&next_tag, 1, __ATOMIC_RELAXED);
}

void wasm_rt_load_exception(uint32_t tag, uint32_t size, const void *values)
{
    if (size > RT_EXCEPTION_MAX)
        wasm_rt_trap(WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
    exc.tag = tag;
    exc.size = size;
    if (size)
        memcpy(exc.data, values, size);
}

void wasm_rt_throw(void)
{
    rt_guest *g = &rt_guest_state;

    if (!g->unwind)
        wasm_rt_trap(WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
    siglongjmp(*g->unwind, WASM_RT_TRAP_UNCAUGHT_EXCEPTION);
}

WASM_RT_UNWIND_TARGET *wasm_rt_get_unwind_target(void)
{
    return rt_guest_state.unwind;
}

void wasm_rt_set_unwind_target(WASM_RT_UNWIND_TARGET *target)
{
    rt_guest_state.unwind = target;
}

uint32_t wasm_rt_exception_tag(void)
{
    return exc.tag;
}

uint32_t wasm_rt_exception_size(void)
{
    return exc.size;
}

void *wasm_rt_exception(void)
{
    return exc.data;
}

/* ---- memories ------------------------------------------------------------------- */

/* Memories allocated outside the sandbox: each has its own reservation. */
#define RT_MAX_STANDALONE 64
static pthread_mutex_t standalone_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *standalone[RT_MAX_STANDALONE];

/* A refusal during instantiation (which always runs as guest code). */
__attribute__((noreturn)) static void refuse(void)
{
    wasm_rt_trap(WASM_RT_TRAP_OOB);
}

void wasm_rt_allocate_memory(wasm_rt_memory_t *m, uint32_t initial, uint32_t max)
{
    rt_guest *g = &rt_guest_state;
    uint8_t *p;
    int i;

    if (g->instantiating) {
        rt_inst_ctx_add_memory(g->instantiating, m, initial, max);
        return;
    }
    if (initial > RT_MAX_PAGES)
        refuse();
    p = mmap(NULL, RT_SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        refuse();
    if (initial && mprotect(p, (size_t)initial * RT_WASM_PAGE, PROT_READ | PROT_WRITE) != 0) {
        munmap(p, RT_SLOT_BYTES);
        refuse();
    }
    pthread_mutex_lock(&standalone_lock);
    for (i = 0; i < RT_MAX_STANDALONE && standalone[i]; i++)
        ;
    if (i < RT_MAX_STANDALONE)
        standalone[i] = p;
    pthread_mutex_unlock(&standalone_lock);
    if (i == RT_MAX_STANDALONE) {
        munmap(p, RT_SLOT_BYTES);
        refuse();
    }
    m->data = p;
    m->pages = initial;
    m->max_pages = max;
    m->size = initial * RT_WASM_PAGE;
}

uint32_t wasm_rt_grow_memory(wasm_rt_memory_t *m, uint32_t delta)
{
    rt_guest *g = &rt_guest_state;
    uint32_t old = m->pages;
    uint64_t want = (uint64_t)old + delta, limit = m->max_pages;
    size_t from, len;

    rt_host_stack_check();
    if (g->mem == m && g->max_pages < limit)
        limit = g->max_pages;
    if (limit > RT_MAX_PAGES)
        limit = RT_MAX_PAGES;
    if (want > limit)
        return UINT32_MAX;
    if (delta == 0)
        return old;
    from = (size_t)old * RT_WASM_PAGE;
    len = (size_t)delta * RT_WASM_PAGE;
    /* The slot must know what may be accessible before it is. */
    if (g->mem == m && g->extent && *g->extent < from + len)
        *g->extent = from + len;
    if (mprotect(m->data + from, len, PROT_READ | PROT_WRITE) != 0)
        return UINT32_MAX;
    m->pages = (uint32_t)want;
    m->size = (uint32_t)(want * RT_WASM_PAGE);
    if (g->mem == m && rt_current_call) {
        rt_current_call->mem_base = m->data;
        rt_current_call->mem_size = m->size;
    }
    return old;
}

void wasm_rt_free_memory(wasm_rt_memory_t *m)
{
    int i, found = 0;

    /* Sandbox memories belong to their slots (the sandbox never frees
     * instances through wasm2c's Z_*_free); only standalone ones go. */
    pthread_mutex_lock(&standalone_lock);
    for (i = 0; i < RT_MAX_STANDALONE; i++)
        if (m->data && standalone[i] == m->data) {
            standalone[i] = NULL;
            found = 1;
        }
    pthread_mutex_unlock(&standalone_lock);
    if (found)
        munmap(m->data, RT_SLOT_BYTES);
    m->data = NULL;
    m->pages = m->size = 0;
}

/* ---- tables ------------------------------------------------------------------------ */

static void *table_alloc(uint32_t n, size_t elem)
{
    void *p;

    if (n > RT_TABLE_MAX_ELEMS)
        refuse();
    if (n == 0)
        return NULL;
    p = calloc(n, elem);
    if (!p)
        refuse();
    return p;
}

void wasm_rt_allocate_funcref_table(wasm_rt_funcref_table_t *t, uint32_t elements, uint32_t max)
{
    rt_guest *g = &rt_guest_state;

    t->data = table_alloc(elements, sizeof *t->data);
    t->size = elements;
    t->max_size = max;
    if (g->instantiating)
        rt_inst_ctx_add_table(g->instantiating, t, 1);
}

void wasm_rt_allocate_externref_table(wasm_rt_externref_table_t *t, uint32_t elements, uint32_t max)
{
    rt_guest *g = &rt_guest_state;

    t->data = table_alloc(elements, sizeof *t->data);
    t->size = elements;
    t->max_size = max;
    if (g->instantiating)
        rt_inst_ctx_add_table(g->instantiating, t, 0);
}

void wasm_rt_free_funcref_table(wasm_rt_funcref_table_t *t)
{
    free(t->data);
    t->data = NULL;
    t->size = 0;
}

void wasm_rt_free_externref_table(wasm_rt_externref_table_t *t)
{
    free(t->data);
    t->data = NULL;
    t->size = 0;
}

/* New element count, or 0 when the table may not grow to it. */
static uint64_t table_grow_to(uint32_t size, uint32_t max, uint32_t delta)
{
    uint64_t want = (uint64_t)size + delta;

    if (want > max || want > RT_TABLE_MAX_ELEMS)
        return 0;
    return want;
}

/* Grows a table of `elem`-byte entries by delta, filling with *init; the
 * old size, or UINT32_MAX when it may not or cannot grow (as wasm says). */
static uint32_t table_grow(void **data, uint32_t *size, uint32_t max, size_t elem,
                           uint32_t delta, const void *init)
{
    uint32_t old = *size;
    if (delta == 0)
        return old;
    uint64_t want = table_grow_to(old, max, delta);
    uint8_t *p;
    if (!want || !(p = realloc(*data, (size_t)want * elem)))
        return UINT32_MAX;
    for (uint64_t i = old; i < want; i++)
        memcpy(p + i * elem, init, elem);
    *data = p;
    *size = (uint32_t)want;
    return old;
}

uint32_t wasm_rt_grow_funcref_table(wasm_rt_funcref_table_t *t, uint32_t delta, wasm_rt_funcref_t init)
{
    return table_grow((void **)&t->data, &t->size, t->max_size, sizeof *t->data, delta, &init);
}

uint32_t wasm_rt_grow_externref_table(wasm_rt_externref_table_t *t, uint32_t delta, wasm_rt_externref_t init)
{
    return table_grow((void **)&t->data, &t->size, t->max_size, sizeof *t->data, delta, &init);
}
