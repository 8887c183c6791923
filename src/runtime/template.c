/*
 * template.c - loading a compiled module (rt_code), making its memory
 * template, and writing instances from it (template.h explains the
 * template and the pointer fix-ups).
 *
 * Called by the runtime core (rt_code_load/ref/unref/retire) and by
 * sandbox.c (rt_code_map_memory / copy_instance / free_tables).
 * Loading runs guest code (instantiation, `_initialize`, `init`), so it
 * happens on a thread that owns an rt_sandbox, inside rt_trap_run; the
 * template's memory is built in a scratch reservation of its own that is
 * unmapped afterwards.
 */
#include "template.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/log.h"
#include "trap.h"

#define RT_DEFAULT_PAGES      1024u
#define RT_DEFAULT_TIMEOUT_MS 5000u
#define RT_MAX_INSTANCE_BYTES ((size_t)64 << 20)
#define RT_OS_PAGE            4096u

/* What the imports' instance pointers are set to: fixed, so instance
 * structs copy byte for byte; host functions never look at them. */
static char host_cloister_sentinel, host_wasi_sentinel;

/* ---- instantiation context (called from wasm_rt.c) ------------------------------ */

__attribute__((noreturn)) static void ctx_refuse(rt_inst_ctx *ctx, const char *why)
{
    ctx->why = why;
    wasm_rt_trap(WASM_RT_TRAP_OOB);
}

static int in_instance(const rt_inst_ctx *ctx, const void *p, size_t len)
{
    const uint8_t *b = p;
    return b >= ctx->inst && len <= ctx->inst_size && (size_t)(b - ctx->inst) <= ctx->inst_size - len;
}

void rt_inst_ctx_add_memory(rt_inst_ctx *ctx, wasm_rt_memory_t *m, uint32_t initial, uint32_t max)
{
    rt_guest *g = &rt_guest_state;
    size_t bytes = (size_t)initial * RT_WASM_PAGE;

    if (!in_instance(ctx, m, sizeof *m))
        ctx_refuse(ctx, "module memory outside its instance (imported memories are not supported)");
    if (ctx->nmem++)
        ctx_refuse(ctx, "module defines more than one memory");
    if (initial > ctx->limit_pages) {
        ctx->want_pages = initial;
        ctx_refuse(ctx, "initial memory over the limit");
    }
    if (bytes && mprotect(ctx->slot, bytes, PROT_READ | PROT_WRITE) != 0)
        ctx_refuse(ctx, "out of memory");
    ctx->extent = bytes;
    m->data = ctx->slot;
    m->pages = initial;
    m->max_pages = max;
    m->size = (uint32_t)bytes;
    ctx->mem_off = (size_t)((uint8_t *)m - ctx->inst);
    g->mem = m;
    if (rt_current_call) {
        rt_current_call->mem_base = m->data;
        rt_current_call->mem_size = m->size;
    }
}

void rt_inst_ctx_add_table(rt_inst_ctx *ctx, void *table, int funcref)
{
    wasm_rt_funcref_table_t *t = table;   /* both table types share the layout */

    if (!in_instance(ctx, t, sizeof *t) || ctx->ntables == RT_MAX_TABLES) {
        free(t->data);
        t->data = NULL;
        ctx_refuse(ctx, in_instance(ctx, t, sizeof *t) ? "module defines too many tables"
                                                       : "imported tables are not supported");
    }
    ctx->tables[ctx->ntables].off = (size_t)((uint8_t *)t - ctx->inst);
    ctx->tables[ctx->ntables].funcref = funcref;
    ctx->ntables++;
}

/* ---- loading ------------------------------------------------------------------------- */

struct text_search {
    uintptr_t base;
    uintptr_t lo, hi;
};

static int find_text(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct text_search *s = arg;
    int i;

    (void)size;
    if (info->dlpi_addr != s->base)
        return 0;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = s->base + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (!s->lo || lo < s->lo)
            s->lo = lo;
        if (hi > s->hi)
            s->hi = hi;
    }
    return s->lo != 0;
}

/* The executable range of the loaded object: the timer unwinds only
 * guest code, which is all in there. */
static int code_text_range(rt_code *c)
{
    struct link_map *lm;
    struct text_search s = { 0, 0, 0 };

    if (dlinfo(c->dl, RTLD_DI_LINKMAP, &lm) != 0)
        return CL_EINVAL;
    s.base = lm->l_addr;
    dl_iterate_phdr(find_text, &s);
    if (!s.lo)
        return CL_EINVAL;
    c->text_lo = s.lo;
    c->text_hi = s.hi;
    return CL_OK;
}

struct init_run {
    rt_code *c;
};

/* Guest code: instantiate, then the reactor's _initialize, then init. */
static void run_init(void *arg)
{
    struct init_run *r = arg;
    const cl_fn_shim *sh = r->c->shim;

    sh->instantiate(r->c->inst, &host_cloister_sentinel, &host_wasi_sentinel);
    rt_guest_state.instantiating = NULL;
    if (sh->initialize)
        sh->initialize(r->c->inst);
    if (sh->init && !(rt_current_call && rt_current_call->exited))
        sh->init(r->c->inst);
}

static int page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t acc = 0;
    size_t i;

    for (i = 0; i < RT_OS_PAGE / 8; i++)
        acc |= w[i];
    return acc == 0;
}

/* Writes the memory's non-zero pages to a sealed memfd. */
static int snapshot_memory(rt_code *c, const uint8_t *mem, size_t bytes)
{
    size_t end = bytes, off, run;

    while (end >= RT_OS_PAGE && page_is_zero(mem + end - RT_OS_PAGE))
        end -= RT_OS_PAGE;
    c->mem_bytes = bytes;
    c->file_bytes = end;
    c->memfd = -1;
    if (end == 0)
        return CL_OK;
    c->memfd = memfd_create("cloister-template", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (c->memfd < 0 || ftruncate(c->memfd, (off_t)end) != 0)
        return CL_ENOMEM;
    for (off = 0; off < end; off += run) {
        int zero = page_is_zero(mem + off);
        for (run = RT_OS_PAGE; off + run < end && page_is_zero(mem + off + run) == zero; run += RT_OS_PAGE)
            ;
        if (!zero && pwrite(c->memfd, mem + off, run, (off_t)off) != (ssize_t)run)
            return CL_ENOMEM;   /* short writes do not happen on a memfd; ENOSPC might */
    }
    if (fcntl(c->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
        return CL_ENOMEM;
    return CL_OK;
}

static int overlaps_struct(const rt_code *c, size_t off)
{
    int i;

    if (off + 8 > c->mem_off && off < c->mem_off + sizeof(wasm_rt_memory_t))
        return 1;
    for (i = 0; i < c->ntables; i++)
        if (off + 8 > c->tables[i].off && off < c->tables[i].off + sizeof(wasm_rt_funcref_table_t))
            return 1;
    return 0;
}

/* Finds funcref values outside tables (funcref globals) that close over
 * the template instance: an aligned word equal to its address, preceded
 * by a pointer into the module's code (wasm_rt_funcref_t is {type, func,
 * module_instance}).  Guest code cannot see or forge these pointers. */
static int find_self_refs(rt_code *c)
{
    uintptr_t self = (uintptr_t)c->inst, v, f;
    size_t off, cap = 0;

    for (off = 16; off + 8 <= c->inst_size; off += 8) {
        memcpy(&v, c->inst + off, 8);
        if (v != self || overlaps_struct(c, off))
            continue;
        memcpy(&f, c->inst + off - 8, 8);
        if (f < c->text_lo || f >= c->text_hi)
            continue;
        if (c->nself == cap) {
            size_t *p = realloc(c->self_offs, (cap = cap ? cap * 2 : 8) * sizeof *p);
            if (!p)
                return CL_ENOMEM;
            c->self_offs = p;
        }
        c->self_offs[c->nself++] = off;
    }
    return CL_OK;
}

static void code_free(rt_code *c)
{
    int i;

    if (!c)
        return;
    for (i = 0; i < c->ntables; i++)
        free(c->tables[i].elems);
    free(c->self_offs);
    free(c->inst);
    if (c->memfd >= 0)
        close(c->memfd);
    if (c->dl)
        dlclose(c->dl);
    if (c->so_fd >= 0)
        close(c->so_fd);
    free(c);
}

__attribute__((format(printf, 2, 3))) static void seterr(cl_buf *err, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl_buf_truncate(err, 0);
    if (cl_buf_append(err, msg, strlen(msg)) != CL_OK)
        cl_buf_truncate(err, 0);
}

static int check_shim(rt_code *c, cl_buf *err)
{
    const cl_fn_shim *sh = dlsym(c->dl, CL_FN_SHIM_SYMBOL);

    if (!sh) {
        seterr(err, "%s", "compiled module has no " CL_FN_SHIM_SYMBOL);
        return CL_EINVAL;
    }
    if (sh->abi != CL_FN_SHIM_ABI) {
        seterr(err, "%s", "compiled module has a different shim ABI (stale compile cache?)");
        return CL_EINVAL;
    }
    if (!sh->handle) {
        seterr(err, "%s", "module does not export handle");
        return CL_EINVAL;
    }
    if (!sh->memory || !sh->instantiate || !sh->init_module) {
        seterr(err, "%s", "module does not export its memory");
        return CL_EINVAL;
    }
    if (sh->instance_size == 0 || sh->instance_size > RT_MAX_INSTANCE_BYTES) {
        seterr(err, "%s", "module instance too large");
        return CL_ETOOBIG;
    }
    c->shim = sh;
    return CL_OK;
}

/* Instantiates and initialises the module in a scratch reservation and
 * freezes the result into c. */
static int build_template(rt_code *c, rt_call *init_call, cl_buf *err)
{
    rt_guest *g = &rt_guest_state;
    rt_inst_ctx ctx;
    rt_call empty;
    cl_buf sink;
    struct init_run run = { c };
    uint8_t *slot;
    int rc = CL_OK, trap, i;

    c->inst_size = (c->shim->instance_size + 63) & ~(size_t)63;
    c->inst = aligned_alloc(64, c->inst_size);
    slot = mmap(NULL, RT_SLOT_BYTES, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!c->inst || slot == MAP_FAILED) {
        if (slot != MAP_FAILED)
            munmap(slot, RT_SLOT_BYTES);
        return CL_ENOMEM;
    }
    memset(c->inst, 0, c->inst_size);
    memset(&ctx, 0, sizeof ctx);
    ctx.inst = c->inst;
    ctx.inst_size = c->inst_size;
    ctx.slot = slot;
    ctx.limit_pages = c->lim.max_memory_pages;
    cl_buf_init(&sink);
    if (!init_call) {
        memset(&empty, 0, sizeof empty);
        empty.output = &sink;
        empty.max_output = 64 * 1024;
        init_call = &empty;
    }
    init_call->exited = 0;
    init_call->exit_code = 0;
    if (!init_call->deadline_ns)
        init_call->deadline_ns = rt_now_ns() + (uint64_t)c->lim.timeout_ms * 1000000u;

    g->mem_lo = (uintptr_t)slot;
    g->mem_hi = (uintptr_t)slot + RT_SLOT_BYTES;
    g->code_lo = c->text_lo;
    g->code_hi = c->text_hi;
    g->mem = NULL;
    g->max_pages = c->lim.max_memory_pages;
    g->extent = &ctx.extent;
    g->instantiating = &ctx;
    rt_current_call = init_call;
    trap = rt_trap_run(run_init, &run, init_call->deadline_ns);
    rt_current_call = NULL;
    rt_guest_leave(g);
    cl_buf_fini(&sink, 1);

    /* The tables are the template's now, whatever happened. */
    for (i = 0; i < ctx.ntables; i++) {
        wasm_rt_funcref_table_t *t = (void *)(c->inst + ctx.tables[i].off);
        c->tables[i].off = ctx.tables[i].off;
        c->tables[i].funcref = ctx.tables[i].funcref;
        c->tables[i].elems = t->data;
        c->tables[i].size = t->size;
        c->tables[i].max_size = t->max_size;
    }
    c->ntables = ctx.ntables;

    if (init_call->exited && init_call->exit_code != 0) {
        seterr(err, "initialisation exited with status %d", (int)init_call->exit_code);
        rc = CL_EINVAL;
    } else if (trap && !init_call->exited) {
        if (ctx.want_pages) {
            seterr(err, "module needs %u pages of memory; the limit is %u",
                   ctx.want_pages, ctx.limit_pages);
            rc = CL_ETOOBIG;
        } else if (ctx.why) {
            seterr(err, "module refused: %s", ctx.why);
            rc = CL_EINVAL;
        } else {
            if (trap == RT_TRAP_TIMEOUT)
                seterr(err, "initialisation timed out");
            else
                seterr(err, "initialisation trapped: %s", rt_trap_name(trap));
            rc = CL_EINVAL;
        }
    } else if (ctx.nmem != 1) {
        seterr(err, "%s", "module has no memory");
        rc = CL_EINVAL;
    } else if ((uint8_t *)c->shim->memory(c->inst) != c->inst + ctx.mem_off) {
        seterr(err, "%s", "module's exported memory is not its own");
        rc = CL_EINVAL;
    }
    if (rc == CL_OK) {
        wasm_rt_memory_t *m = (void *)(c->inst + ctx.mem_off);
        c->mem_off = ctx.mem_off;
        rc = snapshot_memory(c, slot, m->size);
        m->data = NULL;   /* copies point theirs at their slot */
        if (rc == CL_OK)
            rc = find_self_refs(c);
        if (rc != CL_OK)
            seterr(err, "%s", "out of memory making the template");
    }
    munmap(slot, RT_SLOT_BYTES);
    return rc;
}

int rt_code_load(rt_sandbox *sb, const char *so, const rt_limits *lim,
                 rt_call *init_call, rt_code **out, cl_buf *err)
{
    rt_code *c;
    char path[32];
    int rc;

    (void)sb;   /* it proves guest code may run on this thread */
    *out = NULL;
    if (!rt_trap_thread_ready()) {
        seterr(err, "%s", "rt_code_load must run on a sandbox thread");
        return CL_EINVAL;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return CL_ENOMEM;
    c->memfd = c->so_fd = -1;
    c->refs = 1;
    c->lim.max_memory_pages = lim && lim->max_memory_pages ? lim->max_memory_pages : RT_DEFAULT_PAGES;
    if (c->lim.max_memory_pages > RT_MAX_PAGES)
        c->lim.max_memory_pages = RT_MAX_PAGES;
    c->lim.timeout_ms = lim && lim->timeout_ms ? lim->timeout_ms : RT_DEFAULT_TIMEOUT_MS;

    /* glibc's dlopen returns an object already loaded under the same
     * name, and "/proc/self/fd/N" names get reused; so load through a
     * descriptor of our own, open until the object is unloaded: no other
     * object can have its name meanwhile. */
    c->so_fd = open(so, O_RDONLY | O_CLOEXEC);
    if (c->so_fd < 0) {
        seterr(err, "cannot open compiled module: %s", strerror(errno));
        rc = CL_EINVAL;
        goto fail;
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", c->so_fd);
    c->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!c->dl) {
        seterr(err, "cannot load compiled module: %s", dlerror());
        rc = CL_EINVAL;
        goto fail;
    }
    if ((rc = check_shim(c, err)) != CL_OK)
        goto fail;
    if ((rc = code_text_range(c)) != CL_OK) {
        seterr(err, "%s", "compiled module has no code segment");
        goto fail;
    }
    wasm_rt_init();
    c->shim->init_module();
    if ((rc = build_template(c, init_call, err)) != CL_OK)
        goto fail;
    *out = c;
    return CL_OK;
fail:
    code_free(c);
    return rc;
}

void rt_code_ref(rt_code *c)
{
    __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void rt_code_unref(rt_code *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        code_free(c);
}

void rt_code_retire(rt_code *c)
{
    __atomic_store_n(&c->retired, 1, __ATOMIC_RELEASE);
}

void rt_code_get_info(const rt_code *c, rt_code_info *out)
{
    out->mem_pages = (uint32_t)(c->mem_bytes / RT_WASM_PAGE);
    out->template_file_bytes = c->file_bytes;
    out->instance_bytes = c->shim->instance_size;
    out->has_init = c->shim->init != NULL;
    out->has_initialize = c->shim->initialize != NULL;
    out->has_start = c->shim->start != NULL;
}

/* ---- instances from the template ---------------------------------------------------------- */

int rt_code_map_memory(const rt_code *c, uint8_t *base, size_t *extent, int same)
{
    const int rw = PROT_READ | PROT_WRITE;
    const int anon = MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_NORESERVE;

    if (same) {
        /* Private copies go; the template's pages and zeros show again. */
        if (*extent && madvise(base, *extent, MADV_DONTNEED) != 0)
            return CL_ENOMEM;
        if (*extent > c->mem_bytes &&
            mprotect(base + c->mem_bytes, *extent - c->mem_bytes, PROT_NONE) != 0)
            return CL_ENOMEM;
    } else {
        /* MAP_FIXED replaces every old page at once. */
        if (c->file_bytes &&
            mmap(base, c->file_bytes, rw, MAP_PRIVATE | MAP_FIXED, c->memfd, 0) == MAP_FAILED)
            return CL_ENOMEM;
        if (c->mem_bytes > c->file_bytes &&
            mmap(base + c->file_bytes, c->mem_bytes - c->file_bytes, rw, anon, -1, 0) == MAP_FAILED)
            return CL_ENOMEM;
        if (*extent > c->mem_bytes &&
            mmap(base + c->mem_bytes, *extent - c->mem_bytes, PROT_NONE, anon, -1, 0) == MAP_FAILED)
            return CL_ENOMEM;
    }
    *extent = c->mem_bytes;
    return CL_OK;
}

static size_t elem_size(const rt_table_tmpl *t)
{
    return t->funcref ? sizeof(wasm_rt_funcref_t) : sizeof(wasm_rt_externref_t);
}

int rt_code_copy_instance(const rt_code *c, uint8_t *inst, uint8_t *mem_base, int reuse_tables)
{
    void *old[RT_MAX_TABLES];
    uintptr_t self = (uintptr_t)c->inst;
    int i, rc = CL_OK;
    size_t k;

    for (i = 0; i < c->ntables; i++)
        old[i] = reuse_tables ? ((wasm_rt_funcref_table_t *)(void *)(inst + c->tables[i].off))->data : NULL;
    memcpy(inst, c->inst, c->inst_size);
    rt_code_memory(c, inst)->data = mem_base;
    for (k = 0; k < c->nself; k++)
        memcpy(inst + c->self_offs[k], &inst, sizeof inst);

    for (i = 0; i < c->ntables; i++) {
        const rt_table_tmpl *tt = &c->tables[i];
        wasm_rt_funcref_table_t *t = (void *)(inst + tt->off);
        size_t bytes = (size_t)tt->size * elem_size(tt);
        void *p = NULL;

        if (rc == CL_OK && bytes) {
            p = realloc(old[i], bytes);
            if (p) {
                old[i] = NULL;
                memcpy(p, tt->elems, bytes);
            } else {
                rc = CL_ENOMEM;
            }
        }
        free(old[i]);
        t->data = p;
        if (p && tt->funcref) {
            wasm_rt_funcref_t *e = p;
            for (k = 0; k < tt->size; k++)
                if ((uintptr_t)e[k].module_instance == self)
                    e[k].module_instance = inst;
        }
    }
    if (rc != CL_OK)
        rt_code_free_tables(c, inst);
    return rc;
}

void rt_code_free_tables(const rt_code *c, uint8_t *inst)
{
    int i;

    for (i = 0; i < c->ntables; i++) {
        wasm_rt_funcref_table_t *t = (void *)(inst + c->tables[i].off);
        free(t->data);
        t->data = NULL;
    }
}
