/*
 * template.h - a loaded module (rt_code) and its memory template; private
 * to the sandbox (sandbox.c, template.c, wasm_rt.c).
 *
 * The template is an instance frozen right after instantiation, the
 * reactor's `_initialize` and the optional `init` export:
 *   - its linear memory, in a sealed memfd (only up to the last non-zero
 *     page; the rest of the memory is zero) that every instance maps
 *     MAP_PRIVATE, so instances share its pages until they write them;
 *   - its instance struct bytes (globals, e.g. the stack pointer; the
 *     memory and table structs; data/elem "dropped" flags);
 *   - its tables' elements.
 * An instance is made from it by mapping the memory into a slot and
 * copying the struct, then fixing the pointers a copy gets wrong: the
 * memory's data pointer (-> the slot), each table's data pointer (-> the
 * slot's own copy of the elements), and every funcref whose
 * module_instance is the template instance (in tables and in funcref
 * globals) -> the new instance.  Pointers to imported modules' instances
 * are fixed sentinels (host functions find their invocation through the
 * thread-local rt_current_call), so they copy as they are.
 *
 * An rt_code is immutable once loaded and shared by every sandbox
 * (thread); only its reference count and `retired` flag change (atomics).
 */
#ifndef CLOISTER_RUNTIME_TEMPLATE_H
#define CLOISTER_RUNTIME_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>
#include <wasm-rt.h>

#include "sandbox.h"
#include "shim.h"

#define RT_WASM_PAGE  65536u
#define RT_MAX_PAGES  65535u          /* wasm_rt_memory_t.size is 32 bits wide */
/* Every linear memory sits at the start of a reservation this large: any
 * address wasm2c's code can form (32-bit index + 32-bit offset + access
 * size) falls inside it, so out-of-bounds accesses fault here. */
#define RT_SLOT_BYTES (((size_t)8 << 30) + ((size_t)64 << 10))
#define RT_MAX_TABLES 16
#define RT_TABLE_MAX_ELEMS (1u << 20)

typedef struct rt_table_tmpl {
    size_t off;          /* offset of the table struct in the instance */
    int funcref;         /* wasm_rt_funcref_table_t, else wasm_rt_externref_table_t */
    uint32_t size, max_size;
    void *elems;         /* the template's elements (size of them) */
} rt_table_tmpl;

struct rt_code {
    int refs;                     /* atomic */
    int retired;                  /* atomic: no new invocations; drop idle instances */
    int so_fd;                    /* the object, open while loaded (see rt_code_load) */
    void *dl;
    const cl_fn_shim *shim;
    uintptr_t text_lo, text_hi;   /* the module's machine code */
    rt_limits lim;

    int memfd;                    /* template memory, sealed; -1 when all zero */
    size_t file_bytes;            /* mapped from memfd: [0, file_bytes) */
    size_t mem_bytes;             /* template memory size: [file_bytes, mem_bytes) is zero */
    size_t mem_off;               /* offset of the wasm_rt_memory_t in the instance */

    uint8_t *inst;                /* the template instance struct (its address is `self`) */
    size_t inst_size;
    size_t *self_offs;            /* funcref module_instance fields outside tables */
    size_t nself;
    rt_table_tmpl tables[RT_MAX_TABLES];
    int ntables;
};

/* While a template is instantiated (rt_guest_state.instantiating), the
 * allocations wasm_rt.c sees are reported here. */
typedef struct rt_inst_ctx {
    uint8_t *inst;
    size_t inst_size;
    uint8_t *slot;                /* scratch reservation for the memory */
    size_t extent;
    uint32_t limit_pages;
    int nmem;
    size_t mem_off;
    int ntables;
    struct { size_t off; int funcref; } tables[RT_MAX_TABLES];
    const char *why;              /* why instantiation was refused (then it traps) */
    uint32_t want_pages;
} rt_inst_ctx;

/* wasm_rt.c -> template.c; both trap on refusal, with ctx->why set. */
void rt_inst_ctx_add_memory(rt_inst_ctx *ctx, wasm_rt_memory_t *m, uint32_t initial, uint32_t max);
void rt_inst_ctx_add_table(rt_inst_ctx *ctx, void *table, int funcref);

/*
 * Maps c's template memory at base (a slot reservation), discarding
 * whatever the slot showed before: `same` says the slot already has c's
 * template mapped (then changed pages are dropped with MADV_DONTNEED),
 * else everything in [0, *extent) is replaced.  Afterwards *extent =
 * c->mem_bytes and nothing beyond it is accessible.  On failure the
 * slot's contents are undefined: the caller must unmap it.
 */
int rt_code_map_memory(const rt_code *c, uint8_t *base, size_t *extent, int same);

/*
 * Writes c's template instance into inst (c->inst_size bytes), with
 * memory at mem_base.  `reuse_tables`: inst holds a previous instance of
 * c whose table buffers are reused (else none are allocated).  On
 * CL_ENOMEM every table buffer is freed and set to NULL.
 */
int rt_code_copy_instance(const rt_code *c, uint8_t *inst, uint8_t *mem_base, int reuse_tables);

/* Frees the table buffers of an instance of c. */
void rt_code_free_tables(const rt_code *c, uint8_t *inst);

static inline wasm_rt_memory_t *rt_code_memory(const rt_code *c, uint8_t *inst)
{
    return (wasm_rt_memory_t *)(void *)(inst + c->mem_off);
}

#endif
