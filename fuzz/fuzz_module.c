/*
 * fuzz_module.c - libFuzzer target for the WebAssembly inspector
 * (src/runtime/module.c), the first code that reads a deployed module.
 *
 * Each input is a module.  It is inspected twice, under the default
 * limits and under tight ones (a 1-page memory cap and a size cap of
 * three quarters of the input, so the refusal paths run too).  Beyond "no
 * crash, no hang, no leak, no sanitizer report", an accepted module must
 * satisfy what the runtime relies on: handle and memory exported with the
 * right kinds, every import bound to an ABI entry, counts consistent, the
 * memory within the cap; a refused one must come with a message.
 *
 * Seeds (fuzz/corpus/fuzz_module/): the hello example, the ok_* test
 * modules and a few hand-made ones.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "runtime/module.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

static void inspect(const uint8_t *data, size_t size, const wasm_module_limits *lim)
{
    wasm_module_info info;
    cl_buf err;
    cl_buf_init(&err);
    int rc = wasm_module_inspect(data, size, lim, &info, &err);
    if (rc != CL_OK) {
        check(rc == CL_EINVAL || rc == CL_ETOOBIG || rc == CL_ENOMEM);
        check(err.len > 0 && memchr(err.data, '\n', err.len) == NULL);
        check(info.nimports == 0 && info.exports == NULL);
    } else {
        uint32_t cap = lim && lim->max_memory_pages ? lim->max_memory_pages
                                                    : WASM_DEFAULT_MAX_MEMORY_PAGES;
        check(err.len == 0);
        check(info.module_bytes == size);
        check(info.nfuncs == info.nimports + info.nfuncs_defined);
        check(info.memory_min_pages <= cap);
        check(info.memory_min_pages <= info.memory_max_pages);
        check(!(info.has_start && info.has_initialize));
        for (uint32_t i = 0; i < info.nimports; i++)
            check(info.imports[i].abi != NULL && info.imports[i].type_index < info.ntypes);
        for (uint32_t i = 0; i < info.nexports; i++)
            check(info.exports[i].name[info.exports[i].name_len] == '\0');
        const wasm_export_info *h = wasm_module_find_export(&info, "handle");
        const wasm_export_info *m = wasm_module_find_export(&info, "memory");
        check(h && h->kind == WASM_EXTERN_FUNC && h->index < info.nfuncs);
        check(m && m->kind == WASM_EXTERN_MEMORY);
    }
    wasm_module_info_fini(&info);
    cl_buf_fini(&err, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    inspect(data, size, NULL);
    wasm_module_limits tight = { .max_module_bytes = size / 4 * 3 + 8, .max_memory_pages = 1 };
    inspect(data, size, &tight);
    return 0;
}
