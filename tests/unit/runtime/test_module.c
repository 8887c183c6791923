/* test_module.c - WebAssembly inspection (module.c): every refusal with
 * the message the user sees, byte-level hostile modules, truncation at
 * every offset, and the info reported for accepted modules (the hello
 * example, a command, a reactor, a minimal module).
 *
 * Modules come from three places: build/examples/hello.wasm,
 * build/tests/modules/{ok,bad}_NAME.wasm (from tests/modules, found next
 * to this executable), and bytes assembled below. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/runtime/module.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

static char build_dir[PATH_MAX];   /* the build directory (parent of tests/) */

static uint8_t *load(const char *rel, size_t *len)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/%s", build_dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s (build the wasm_modules target)\n", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Inspects; checks the return code and that the message contains `want`. */
static void expect_at(const char *file, int line, const uint8_t *w, size_t n,
                      const wasm_module_limits *lim, int want_rc, const char *want)
{
    wasm_module_info info;
    cl_buf err;
    cl_buf_init(&err);
    int rc = wasm_module_inspect(w, n, lim, &info, &err);
    if (cl_buf_append(&err, "", 1) != CL_OK)
        abort();
    int ok = rc == want_rc && (want == NULL || strstr((char *)err.data, want) != NULL) &&
             (rc == CL_OK || strlen((char *)err.data) > 0);
    th_check(ok, file, line, want ? want : "(no message expected)");
    if (!ok)
        fprintf(stderr, "     rc %d (%s), message: \"%s\"\n", rc, cl_errname(rc), (char *)err.data);
    wasm_module_info_fini(&info);
    cl_buf_fini(&err, 0);
}
#define EXPECT(w, n, lim, rc, msg) expect_at(__FILE__, __LINE__, (w), (n), (lim), (rc), (msg))

static void expect_file_at(const char *file, int line, const char *rel, int want_rc, const char *want)
{
    size_t n;
    uint8_t *w = load(rel, &n);
    th_check(w != NULL, file, line, rel);
    if (w)
        expect_at(file, line, w, n, NULL, want_rc, want);
    free(w);
}
#define EXPECT_FILE(rel, rc, msg) expect_file_at(__FILE__, __LINE__, (rel), (rc), (msg))

/* A module assembled in memory. */
typedef struct mb { uint8_t b[4096]; size_t n; } mb;

static void put(mb *m, const void *p, size_t n) { memcpy(m->b + m->n, p, n); m->n += n; }
static void leb(mb *m, uint32_t v)
{
    do {
        uint8_t byte = v & 0x7F;
        v >>= 7;
        if (v)
            byte |= 0x80;
        put(m, &byte, 1);
    } while (v);
}
static void header(mb *m) { m->n = 0; put(m, "\0asm\1\0\0\0", 8); }
static void section(mb *m, uint8_t id, const uint8_t *c, size_t n)
{
    put(m, &id, 1);
    leb(m, (uint32_t)n);
    put(m, c, n);
}
#define SEC(m, id, ...)                                                       \
    do {                                                                      \
        const uint8_t c_[] = { __VA_ARGS__ };                                 \
        section((m), (id), c_, sizeof c_);                                    \
    } while (0)

/* sections of the minimal module: () -> i32 handle returning 7, one page */
#define TYPE_SEC(m)   SEC(m, 1, 1, 0x60, 0, 1, 0x7F)
#define FUNC_SEC(m)   SEC(m, 3, 1, 0)
#define MEM_SEC(m)    SEC(m, 5, 1, 0, 1)
#define EXPORT_SEC(m) SEC(m, 7, 2, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0, \
                          6, 'h', 'a', 'n', 'd', 'l', 'e', 0, 0)
#define CODE_SEC(m)   SEC(m, 10, 1, 4, 0, 0x41, 7, 0x0B)

static void minimal(mb *m)
{
    header(m);
    TYPE_SEC(m);
    FUNC_SEC(m);
    MEM_SEC(m);
    EXPORT_SEC(m);
    CODE_SEC(m);
}

/* A module using every section Cloister accepts, for the truncation test. */
static void full(mb *m)
{
    header(m);
    SEC(m, 0, 4, 'n', 'o', 't', 'e', 'x', 'y');                               /* custom */
    SEC(m, 1, 2, 0x60, 0, 1, 0x7F, 0x60, 2, 0x7F, 0x7F, 1, 0x7F);              /* type */
    SEC(m, 2, 1, 8, 'c', 'l', 'o', 'i', 's', 't', 'e', 'r',                   /* import */
        6, 'o', 'u', 't', 'p', 'u', 't', 0, 1);
    SEC(m, 3, 1, 0);                                                          /* function */
    SEC(m, 4, 1, 0x70, 1, 1, 2);                                              /* table */
    SEC(m, 5, 1, 1, 1, 4);                                                    /* memory 1..4 */
    SEC(m, 6, 2, 0x7F, 1, 0x41, 0x80, 0x80, 0x04, 0x0B,                       /* global */
        0x7E, 0, 0x42, 0x7F, 0x0B);
    SEC(m, 7, 2, 6, 'm', 'e', 'm', 'o', 'r', 'y', 2, 0,                       /* export */
        6, 'h', 'a', 'n', 'd', 'l', 'e', 0, 1);
    SEC(m, 9, 1, 0, 0x41, 0, 0x0B, 1, 1);                                     /* element */
    SEC(m, 12, 1);                                                            /* data count */
    SEC(m, 10, 1, 6, 1, 2, 0x7F, 0x41, 7, 0x0B);                              /* code */
    SEC(m, 11, 1, 0, 0x41, 16, 0x0B, 2, 'h', 'i');                            /* data */
}

/* ---- accepted modules ---------------------------------------------------------- */

static void test_accepts_minimal(void)
{
    mb m;
    wasm_module_info info;
    minimal(&m);
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
    REQUIRE(wasm_module_inspect(m.b, m.n, NULL, &info, NULL) == CL_OK);
    CHECK_EQ(info.nimports, 0);
    CHECK_EQ(info.nfuncs, 1);
    CHECK_EQ(info.nexports, 2);
    CHECK_EQ(info.memory_min_pages, 1);
    CHECK_EQ(info.memory_has_max, 0);
    CHECK_EQ(info.memory_max_pages, WASM_MAX_PAGES);
    CHECK(!info.imports_cloister && !info.imports_wasi);
    CHECK(!info.has_initialize && !info.has_start && !info.has_init);
    const wasm_export_info *h = wasm_module_find_export(&info, "handle");
    REQUIRE(h != NULL);
    CHECK_EQ(h->kind, WASM_EXTERN_FUNC);
    CHECK_EQ(h->index, 0);
    CHECK(wasm_module_find_export(&info, "hand") == NULL);
    wasm_module_info_fini(&info);

    full(&m);
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
    REQUIRE(wasm_module_inspect(m.b, m.n, NULL, &info, NULL) == CL_OK);
    CHECK_EQ(info.nimports, 1);
    CHECK_EQ(info.nfuncs, 2);
    CHECK_EQ(info.ntables, 1);
    CHECK_EQ(info.nglobals, 2);
    CHECK_EQ(info.nelem, 1);
    CHECK_EQ(info.ndata, 1);
    CHECK_EQ(info.memory_max_pages, 4);
    CHECK(info.imports_cloister && !info.imports_wasi);
    wasm_module_info_fini(&info);
}

static void test_accepts_hello(void)
{
    size_t n;
    uint8_t *w = load("examples/hello.wasm", &n);
    REQUIRE(w != NULL);
    wasm_module_info info;
    cl_buf err;
    cl_buf_init(&err);
    CHECK_EQ(wasm_module_inspect(w, n, NULL, &info, &err), CL_OK);
    CHECK_EQ(err.len, 0);
    CHECK_EQ(info.module_bytes, n);
    CHECK(info.nimports >= 2);
    CHECK(info.imports_cloister);
    CHECK(info.imports_wasi);       /* printf -> fd_write */
    CHECK(info.has_initialize);     /* built as a reactor */
    CHECK(!info.has_start);
    CHECK(!info.has_init);
    CHECK(info.memory_min_pages >= 1);
    CHECK_EQ(info.nfuncs, info.nimports + info.nfuncs_defined);
    int saw_input = 0;
    for (uint32_t i = 0; i < info.nimports; i++) {
        CHECK(info.imports[i].abi != NULL);
        if (info.imports[i].abi && strcmp(info.imports[i].abi->name, "input") == 0)
            saw_input = 1;
    }
    CHECK(saw_input);
    const wasm_export_info *mem = wasm_module_find_export(&info, "memory");
    CHECK(mem && mem->kind == WASM_EXTERN_MEMORY);
    wasm_module_info_fini(&info);
    cl_buf_fini(&err, 0);
    free(w);
}

static void test_accepts_command_and_reactor(void)
{
    size_t n;
    wasm_module_info info;
    uint8_t *w = load("tests/modules/ok_command.wasm", &n);
    REQUIRE(w != NULL);
    CHECK_EQ(wasm_module_inspect(w, n, NULL, &info, NULL), CL_OK);
    CHECK(info.has_start);
    CHECK(!info.has_initialize);
    CHECK_EQ(info.nimports, 3);
    CHECK(info.imports_cloister && info.imports_wasi);
    CHECK_EQ(info.memory_min_pages, 2);
    CHECK_EQ(info.memory_has_max, 1);
    CHECK_EQ(info.memory_max_pages, 16);
    CHECK(strcmp(info.imports[0].abi->name, "fd_write") == 0);
    CHECK(strcmp(info.imports[2].abi->name, "proc_exit") == 0);
    wasm_module_info_fini(&info);
    free(w);

    w = load("tests/modules/ok_reactor.wasm", &n);
    REQUIRE(w != NULL);
    CHECK_EQ(wasm_module_inspect(w, n, NULL, &info, NULL), CL_OK);
    CHECK(info.has_initialize);
    CHECK(info.has_init);
    CHECK(!info.has_start);
    CHECK(info.imports_cloister);
    wasm_module_info_fini(&info);
    free(w);

    EXPECT_FILE("tests/modules/ok_tiny.wasm", CL_OK, NULL);
    /* passes inspection: its fault is in the code, for wasm2c to find */
    EXPECT_FILE("tests/modules/bad_validate.wasm", CL_OK, NULL);
}

/* ---- refusals from .wat modules ----------------------------------------------------- */

static void test_refuses_bad_imports(void)
{
    EXPECT_FILE("tests/modules/bad_import_fork.wasm", CL_EINVAL,
                "import cloister.fork is not part of the Cloister ABI");
    EXPECT_FILE("tests/modules/bad_import_env.wasm", CL_EINVAL,
                "import env.abort is not part of the Cloister ABI");
    EXPECT_FILE("tests/modules/bad_import_sig.wasm", CL_EINVAL,
                "import cloister.kv_get has type (i32) -> i32, the ABI expects "
                "(i32 i32 i32 i32 i32) -> i64");
    EXPECT_FILE("tests/modules/bad_import_memory.wasm", CL_EINVAL,
                "import env.memory is a memory; Cloister offers only functions to import");
    EXPECT_FILE("tests/modules/bad_import_table.wasm", CL_EINVAL,
                "import env.table is a table; Cloister offers only functions to import");
    EXPECT_FILE("tests/modules/bad_import_global.wasm", CL_EINVAL,
                "import env.g is a global; Cloister offers only functions to import");
}

static void test_refuses_bad_exports(void)
{
    EXPECT_FILE("tests/modules/bad_no_handle.wasm", CL_EINVAL,
                "module does not export a function \"handle\"");
    EXPECT_FILE("tests/modules/bad_handle_sig.wasm", CL_EINVAL,
                "export \"handle\" has type (i32) -> i32, expected () -> i32");
    EXPECT_FILE("tests/modules/bad_handle_kind.wasm", CL_EINVAL,
                "export \"handle\" is a global, not a function");
    EXPECT_FILE("tests/modules/bad_init_sig.wasm", CL_EINVAL,
                "export \"init\" has type (i32) -> (), expected () -> ()");
    EXPECT_FILE("tests/modules/bad_command_reactor.wasm", CL_EINVAL,
                "module exports both _start and _initialize");
}

static void test_refuses_bad_memory_and_start(void)
{
    EXPECT_FILE("tests/modules/bad_no_memory.wasm", CL_EINVAL,
                "module has no memory; it must define one and export it as \"memory\"");
    EXPECT_FILE("tests/modules/bad_memory_not_exported.wasm", CL_EINVAL,
                "module does not export its memory as \"memory\"");
    EXPECT_FILE("tests/modules/bad_memory_too_big.wasm", CL_ETOOBIG,
                "memory starts at 2000 pages (125 MiB); this node allows at most 1024 pages "
                "(64 MiB) per instance");
    /* a node with a higher cap takes it */
    size_t n;
    uint8_t *w = load("tests/modules/bad_memory_too_big.wasm", &n);
    REQUIRE(w != NULL);
    wasm_module_limits big = { .max_memory_pages = 4096 };
    EXPECT(w, n, &big, CL_OK, NULL);
    free(w);
    EXPECT_FILE("tests/modules/bad_start.wasm", CL_EINVAL, "module has a start section");
}

/* ---- refusals of hand-made bytes ------------------------------------------------------ */

static void test_refuses_bad_header(void)
{
    mb m;
    minimal(&m);
    EXPECT(m.b, 0, NULL, CL_EINVAL, "not a WebAssembly module");
    EXPECT(NULL, 0, NULL, CL_EINVAL, "");
    EXPECT((const uint8_t *)"\x7f" "ELF\2\1\1\0", 8, NULL, CL_EINVAL,
           "not a WebAssembly module (it does not start with \\0asm)");
    EXPECT(m.b, 6, NULL, CL_EINVAL, "truncated header");
    m.b[4] = 2;
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unsupported WebAssembly binary version 2 (expected 1)");
    m.b[4] = 1;
    m.b[7] = 1;
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unsupported WebAssembly binary version 16777217");
    /* header only: valid framing, but nothing Cloister can run */
    EXPECT(m.b, 8, NULL, CL_EINVAL, "");
}

static void test_refuses_oversized_module(void)
{
    mb m;
    minimal(&m);
    wasm_module_limits small = { .max_module_bytes = 40 };
    EXPECT(m.b, m.n, &small, CL_ETOOBIG, "this node accepts modules of up to 40 bytes");
    /* the default cap is 16 MiB: a huge length is refused before any read */
    EXPECT(m.b, (size_t)17 << 20, NULL, CL_ETOOBIG, "this node accepts modules of up to 16777216");
}

static void test_refuses_bad_sections(void)
{
    mb m;

    /* out of order: memory before function */
    header(&m);
    TYPE_SEC(&m); MEM_SEC(&m); FUNC_SEC(&m); EXPORT_SEC(&m); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "the function section is out of order");

    /* duplicated */
    header(&m);
    TYPE_SEC(&m); TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "duplicate type section");

    /* data count goes between element and code */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m); CODE_SEC(&m); SEC(&m, 12, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "the data count section is out of order");

    /* unknown ids */
    minimal(&m);
    SEC(&m, 14, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unknown section id");
    minimal(&m);
    SEC(&m, 13, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "exception handling (the tag section) is not supported");

    /* declared size beyond the module */
    minimal(&m);
    put(&m, "\x0b\xff\xff\xff\xff\x0f", 6);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "the data section declares 4294967295 bytes but only 0 remain");

    /* a section with bytes left over */
    header(&m);
    SEC(&m, 1, 1, 0x60, 0, 1, 0x7F, 0x00);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unexpected bytes at the end of the section");

    /* a section whose item runs past its end (but not past the module) */
    header(&m);
    SEC(&m, 1, 1, 0x60, 0, 1);
    put(&m, "\x7f\x00\x00\x00", 4);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "runs past the end of the type section");

    /* custom sections are skipped anywhere, but their name must be sound */
    minimal(&m);
    SEC(&m, 0, 3, 'a', 'b', 'c', 0xFF, 0xFF);
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
    minimal(&m);
    SEC(&m, 0, 9, 'a');
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "runs past the end of the custom section");
}

static void test_refuses_bad_leb(void)
{
    mb m;
    /* overlong: a section size in 6 bytes */
    header(&m);
    put(&m, "\x01\x85\x80\x80\x80\x80\x00", 7);
    put(&m, "\x01\x60\x00\x01\x7f", 5);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "integer too long or too large");
    /* 5 bytes with bits above 32 */
    header(&m);
    put(&m, "\x01\xff\xff\xff\xff\x7f", 6);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "integer too long or too large");
    /* 5-byte encoding of a small number is legal */
    header(&m);
    put(&m, "\x01\x85\x80\x80\x80\x00", 6);
    put(&m, "\x01\x60\x00\x01\x7f", 5);
    FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
    /* signed: i32.const with an overlong / out-of-range immediate */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m);
    SEC(&m, 6, 1, 0x7F, 0, 0x41, 0xFF, 0xFF, 0xFF, 0xFF, 0x4F, 0x0B);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "integer too long or too large");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m);
    SEC(&m, 6, 1, 0x7F, 0, 0x41, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x0B);   /* -1 in 5 bytes: legal */
    EXPORT_SEC(&m); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
}

static void test_refuses_huge_counts(void)
{
    mb m;
    /* counts beyond the limits */
    header(&m);
    TYPE_SEC(&m);
    SEC(&m, 3, 0x80, 0x89, 0x7A);       /* 2,000,000 functions */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "module declares 2000000 functions; the limit is 1000000");
    header(&m);
    SEC(&m, 1, 0xC1, 0x84, 0x3D);       /* 1,000,001 types */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "the limit is 1000000");
    header(&m);
    SEC(&m, 2, 0xA1, 0x8D, 0x06);       /* 100,001 imports */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "module declares 100001 imports; the limit is 100000");
    /* counts within the limits but beyond the bytes present */
    header(&m);
    TYPE_SEC(&m);
    SEC(&m, 3, 0xE8, 0x07, 0);          /* 1000 functions in 1 byte */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "declares 1000 functions but holds only 1 bytes");
    header(&m);
    SEC(&m, 1, 0x90, 0x4E, 0x60, 0, 0); /* 10000 types in 3 bytes */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "declares 10000 types but holds only 3 bytes");
    /* parameters, locals, tables */
    header(&m);
    SEC(&m, 1, 1, 0x60, 0xE9, 0x07);    /* 1001 params */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "type 0 has 1001 parameters; the limit is 1000");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m);
    SEC(&m, 10, 1, 8, 2, 0xA0, 0x9C, 0x01, 0x7F, 1, 0x7E, 0x0B);   /* 20000 + 1 ... */
    EXPECT(m.b, m.n, NULL, CL_OK, NULL);
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m);
    SEC(&m, 10, 1, 10, 2, 0xA0, 0x9C, 0x01, 0x7F, 0xB1, 0xEA, 0x01, 0x7E, 0x0B); /* 20000 + 30001 */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "function 0 declares more than 50000 locals");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m);
    SEC(&m, 4, 1, 0x70, 0, 0x81, 0xAD, 0xE2, 0x04);   /* 10,000,001 elements */
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "table 0 starts with 10000001 elements");
    /* a body larger than the code section */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m);
    SEC(&m, 10, 1, 0x7F, 0, 0x41, 7, 0x0B);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "runs past the end of the code section");
}

static void test_refuses_bad_structure(void)
{
    mb m;
    /* function and code counts differ */
    header(&m);
    TYPE_SEC(&m); SEC(&m, 3, 2, 0, 0); MEM_SEC(&m); EXPORT_SEC(&m); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "the function section declares 2 functions, the code section has 1");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "1 functions are declared but the module has no code section");
    /* type index out of range */
    header(&m);
    TYPE_SEC(&m); SEC(&m, 3, 1, 5);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "function 0 uses type 5, but the module has 1 types");
    /* export of something that does not exist */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m);
    SEC(&m, 7, 1, 6, 'h', 'a', 'n', 'd', 'l', 'e', 0, 9);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "export \"handle\" refers to function 9, which does not exist");
    /* export name not UTF-8 */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m);
    SEC(&m, 7, 1, 2, 0xC0, 0x80, 0, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "name is not valid UTF-8");
    /* memory: two of them, shared, 64-bit, larger than 4 GiB, min > max */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); SEC(&m, 5, 2, 0, 1, 0, 1);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "module defines 2 memories; Cloister runs modules with one memory");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); SEC(&m, 5, 1, 3, 1, 2);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "shared memory (the threads proposal) is not supported");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); SEC(&m, 5, 1, 4, 1);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "64-bit memory (memory64) is not supported");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); SEC(&m, 5, 1, 0, 0x81, 0x80, 0x04);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "memory of 65537 pages is larger than 4 GiB");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); SEC(&m, 5, 1, 1, 3, 2);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "memory minimum 3 is above its maximum 2");
    /* memory exported under the right name but as something else */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m);
    SEC(&m, 7, 1, 6, 'm', 'e', 'm', 'o', 'r', 'y', 0, 0);
    CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "export \"memory\" is a function, not a memory");
    /* globals: bad constant expression, bad mutability */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); SEC(&m, 6, 1, 0x7F, 0, 0x6A, 0x0B);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unsupported instruction in a constant expression");
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); SEC(&m, 6, 1, 0x7F, 2, 0x41, 0, 0x0B);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "bad global mutability");
    /* unknown value type */
    header(&m);
    SEC(&m, 1, 1, 0x60, 1, 0x40, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "unknown value type");
    /* a start section, byte-made */
    header(&m);
    TYPE_SEC(&m); FUNC_SEC(&m); MEM_SEC(&m); EXPORT_SEC(&m); SEC(&m, 8, 0); CODE_SEC(&m);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "module has a start section (function 0)");
    /* an import with a weird name is shown escaped, not raw */
    header(&m);
    TYPE_SEC(&m);
    SEC(&m, 2, 1, 3, 'e', '\n', 'v', 1, 'x', 0, 0);
    EXPECT(m.b, m.n, NULL, CL_EINVAL, "import e\\x0av.x is not part of the Cloister ABI");
}

/* Marks the offsets where a section ends: a prefix that stops there is
 * a well-framed module that may lack only optional sections, so it may be
 * accepted; a prefix that stops anywhere else must be refused. */
static void section_ends(const uint8_t *w, size_t n, uint8_t *is_end)
{
    size_t p = 8;
    while (p < n) {
        p++;                            /* id */
        uint32_t size = 0;
        int s = 0;
        uint8_t b;
        do {
            b = w[p++];
            size |= (uint32_t)(b & 0x7F) << s;
            s += 7;
        } while (b & 0x80);
        p += size;
        if (p <= n)
            is_end[p] = 1;
    }
}

/* Every prefix is parsed from an exact-size heap copy, so ASan sees any
 * read past the end.  `stride` > 1 samples long modules. */
static void truncations(const uint8_t *w, size_t n, size_t stride)
{
    uint8_t *is_end = calloc(n + 1, 1);
    REQUIRE(is_end != NULL);
    section_ends(w, n, is_end);
    unsigned long refused = 0, expected = 0;
    for (size_t k = 0; k < n; k += (k < 4096 ? 1 : stride)) {
        uint8_t *copy = malloc(k ? k : 1);
        REQUIRE(copy != NULL);
        memcpy(copy, w, k);
        wasm_module_info info;
        cl_buf err;
        cl_buf_init(&err);
        int rc = wasm_module_inspect(copy, k, NULL, &info, &err);
        if (!is_end[k]) {
            expected++;
            if (rc != CL_OK && err.len > 0)
                refused++;
            else
                fprintf(stderr, "     prefix of %zu bytes: rc %d, %zu-byte message\n", k, rc, err.len);
        } else if (rc != CL_OK) {
            CHECK(err.len > 0);
        }
        wasm_module_info_fini(&info);
        cl_buf_fini(&err, 0);
        free(copy);
    }
    CHECK(expected > 0);
    CHECK_EQ(refused, expected);
    free(is_end);
}

static void test_truncations(void)
{
    mb m;
    full(&m);
    truncations(m.b, m.n, 1);
    minimal(&m);
    truncations(m.b, m.n, 1);
    size_t n;
    uint8_t *w = load("tests/modules/ok_command.wasm", &n);
    REQUIRE(w != NULL);
    truncations(w, n, 1);
    free(w);
    w = load("examples/hello.wasm", &n);
    REQUIRE(w != NULL);
    truncations(w, n, 61);
    free(w);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    REQUIRE(k > 0);
    exe[k] = '\0';
    *strrchr(exe, '/') = '\0';          /* build/tests */
    *strrchr(exe, '/') = '\0';          /* build */
    snprintf(build_dir, sizeof build_dir, "%s", exe);

    RUN(test_accepts_minimal);
    RUN(test_accepts_hello);
    RUN(test_accepts_command_and_reactor);
    RUN(test_refuses_bad_imports);
    RUN(test_refuses_bad_exports);
    RUN(test_refuses_bad_memory_and_start);
    RUN(test_refuses_bad_header);
    RUN(test_refuses_oversized_module);
    RUN(test_refuses_bad_sections);
    RUN(test_refuses_bad_leb);
    RUN(test_refuses_huge_counts);
    RUN(test_refuses_bad_structure);
    RUN(test_truncations);
    return th_done();
}
