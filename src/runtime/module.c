/*
 * module.c - WebAssembly binary inspection (see module.h for what is
 * checked and why).
 *
 * A single forward pass over the sections.  The cursor (P->p) never
 * passes P->end, the end of the current section (or of the module
 * between sections), and every read checks that first; a section must be
 * consumed exactly.  Counts are checked against the limits and against
 * the bytes left (every entry takes at least one byte) before anything is
 * allocated for them, so a hostile count cannot make us allocate more
 * than a small multiple of the module's size.
 *
 * Sections whose contents only wasm2c needs (element, data, and the code
 * of each function body) are framed and bounded here, not decoded.
 */
#include "module.h"
#include "../common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    SEC_CUSTOM = 0, SEC_TYPE, SEC_IMPORT, SEC_FUNCTION, SEC_TABLE, SEC_MEMORY,
    SEC_GLOBAL, SEC_EXPORT, SEC_START, SEC_ELEMENT, SEC_CODE, SEC_DATA,
    SEC_DATACOUNT, SEC_COUNT
};

/* value types */
enum {
    VT_I32 = 0x7F, VT_I64 = 0x7E, VT_F32 = 0x7D, VT_F64 = 0x7C,
    VT_V128 = 0x7B, VT_FUNCREF = 0x70, VT_EXTERNREF = 0x6F,
};

typedef struct wtype {
    uint32_t off;           /* params then results in P->valtypes */
    uint16_t np, nr;
} wtype;

typedef struct parser {
    const uint8_t *base;    /* the module */
    const uint8_t *p;       /* cursor */
    const uint8_t *end;     /* end of the current section (or module) */
    const char *section;    /* current section's name, for messages */
    uint32_t max_pages;
    wasm_module_info *info;
    cl_buf *err;
    int failed;             /* the first error; later ones are not reported */

    wtype *types;
    uint8_t *valtypes;      /* pool behind types[] */
    uint32_t *func_types;   /* type index of every function (imports first) */
    uint32_t nmemories;
    int have_funcsec, have_code, have_datacount;
    uint32_t datacount;
    uint32_t start_func;
    int have_start;
} parser;

/* ---- errors ---------------------------------------------------------------- */

static int fail(parser *P, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *P, int rc, const char *fmt, ...)
{
    if (P->failed)
        return P->failed;
    P->failed = rc;
    if (P->err) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (n > 0 && cl_buf_append(P->err, msg, strnlen(msg, sizeof msg)) != CL_OK) {
            /* out of memory: the error code alone must do */
        }
    }
    return rc;
}

static size_t offset(const parser *P) { return (size_t)(P->p - P->base); }

static int malformed(parser *P, const char *what)
{
    if (P->section)
        return fail(P, CL_EINVAL, "malformed module: %s in the %s section (byte 0x%zx)",
                    what, P->section, offset(P));
    return fail(P, CL_EINVAL, "malformed module: %s (byte 0x%zx)", what, offset(P));
}

static int truncated(parser *P)
{
    if (P->section)
        return fail(P, CL_EINVAL, "malformed module: an item runs past the end of the %s "
                    "section (byte 0x%zx)", P->section, offset(P));
    return malformed(P, "unexpected end of the module");
}

/* A wasm name for a message: printable ASCII kept, the rest \xNN, long
 * names cut.  out must hold 4 * 48 + 4 bytes. */
#define NAME_SHOWN 48
static const char *show_name(const uint8_t *s, uint32_t len, char *out)
{
    char *o = out;
    for (uint32_t i = 0; i < len && i < NAME_SHOWN; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\' && c != '"')
            *o++ = (char)c;
        else
            o += sprintf(o, "\\x%02x", c);
    }
    if (len > NAME_SHOWN)
        o += sprintf(o, "...");
    *o = '\0';
    return out;
}

static const char *valtype_name(uint8_t t)
{
    switch (t) {
    case VT_I32: return "i32";
    case VT_I64: return "i64";
    case VT_F32: return "f32";
    case VT_F64: return "f64";
    case VT_V128: return "v128";
    case VT_FUNCREF: return "funcref";
    case VT_EXTERNREF: return "externref";
    }
    return "?";
}

/* "(i32 i32) -> i64", "() -> ()", "(i32) -> (i32 i64)"; long lists cut. */
static const char *show_functype(const uint8_t *par, size_t np, const uint8_t *res, size_t nr,
                                 char *out, size_t cap)
{
    size_t n = 0;
#define PUT(...) do { int k_ = snprintf(out + n, cap - n, __VA_ARGS__); \
                      if (k_ > 0) n += (size_t)k_ < cap - n ? (size_t)k_ : cap - n - 1; } while (0)
    PUT("(");
    for (size_t i = 0; i < np && i < 12; i++)
        PUT("%s%s", i ? " " : "", valtype_name(par[i]));
    if (np > 12)
        PUT(" ... %zu params", np);
    PUT(") -> ");
    if (nr == 1) {
        PUT("%s", valtype_name(res[0]));
    } else {
        PUT("(");
        for (size_t i = 0; i < nr && i < 12; i++)
            PUT("%s%s", i ? " " : "", valtype_name(res[i]));
        if (nr > 12)
            PUT(" ... %zu results", nr);
        PUT(")");
    }
#undef PUT
    return out;
}

static const char *show_type(const parser *P, uint32_t ti, char *out, size_t cap)
{
    const wtype *t = &P->types[ti];
    const uint8_t *v = P->valtypes + t->off;
    return show_functype(v, t->np, v + t->np, t->nr, out, cap);
}

/* ---- primitive reads ---------------------------------------------------------- */

static int rd_u8(parser *P, uint8_t *v)
{
    *v = 0;
    if (P->p >= P->end)
        return truncated(P);
    *v = *P->p++;
    return CL_OK;
}

/* Unsigned LEB128, at most 5 bytes, no bits beyond 32. */
static int rd_u32(parser *P, uint32_t *out)
{
    uint32_t v = 0;
    *out = 0;
    for (int i = 0; i < 5; i++) {
        if (P->p >= P->end)
            return truncated(P);
        uint8_t b = *P->p++;
        if (i == 4 && (b & 0xF0))
            return malformed(P, "integer too long or too large");
        v |= (uint32_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return CL_OK;
        }
    }
    return malformed(P, "integer too long");   /* not reached */
}

/* Signed LEB128 of `bits` (32 or 64), value not needed: checks the
 * length and that the unused bits of the last byte extend the sign. */
static int skip_sleb(parser *P, int bits)
{
    int maxb = (bits + 6) / 7;
    for (int i = 0; i < maxb; i++) {
        if (P->p >= P->end)
            return truncated(P);
        uint8_t b = *P->p++;
        if (i == maxb - 1) {
            int used = bits - 7 * i;
            uint8_t mask = (uint8_t)((0x7F << (used - 1)) & 0x7F);
            if ((b & 0x80) || ((b & mask) != 0 && (b & mask) != mask))
                return malformed(P, "integer too long or too large");
            return CL_OK;
        }
        if (!(b & 0x80))
            return CL_OK;
    }
    return CL_OK;
}

static int rd_skip(parser *P, size_t n)
{
    if ((size_t)(P->end - P->p) < n)
        return truncated(P);
    P->p += n;
    return CL_OK;
}

static int utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i - 1 < k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int rd_name(parser *P, const uint8_t **s, uint32_t *len)
{
    int rc = rd_u32(P, len);
    if (rc)
        return rc;
    if (*len > WASM_MAX_NAME_BYTES)
        return malformed(P, "name too long");
    if ((size_t)(P->end - P->p) < *len)
        return truncated(P);
    *s = P->p;
    if (!utf8_valid(*s, *len))
        return malformed(P, "name is not valid UTF-8");
    P->p += *len;
    return CL_OK;
}

/* Reads a vector count and checks it against a limit and the bytes left
 * (each entry takes at least min_entry bytes). */
static int rd_count(parser *P, uint32_t limit, size_t min_entry, const char *what, uint32_t *n)
{
    int rc = rd_u32(P, n);
    if (rc)
        return rc;
    if (*n > limit)
        return fail(P, CL_EINVAL, "module declares %u %s; the limit is %u", *n, what, limit);
    if ((uint64_t)*n * min_entry > (uint64_t)(P->end - P->p))
        return fail(P, CL_EINVAL, "malformed module: the %s section declares %u %s but holds "
                    "only %zu bytes (byte 0x%zx)", P->section, *n, what,
                    (size_t)(P->end - P->p), offset(P));
    return CL_OK;
}

static int rd_valtype(parser *P, uint8_t *t)
{
    int rc = rd_u8(P, t);
    if (rc)
        return rc;
    switch (*t) {
    case VT_I32: case VT_I64: case VT_F32: case VT_F64:
    case VT_V128: case VT_FUNCREF: case VT_EXTERNREF:
        return CL_OK;
    }
    P->p--;
    return malformed(P, "unknown value type");
}

/* Limits: flags 0 {min} or 1 {min, max}.  Memories may also say shared
 * (2, 3) or 64-bit (4..7), which Cloister does not run. */
static int rd_limits(parser *P, int memory, uint32_t *min, uint32_t *max, int *has_max)
{
    uint8_t flags;
    int rc = rd_u8(P, &flags);
    if (rc)
        return rc;
    if (memory && flags >= 4 && flags <= 7)
        return fail(P, CL_EINVAL, "64-bit memory (memory64) is not supported");
    if (memory && (flags == 2 || flags == 3))
        return fail(P, CL_EINVAL, "shared memory (the threads proposal) is not supported");
    if (flags > 1) {
        P->p--;
        return malformed(P, "unknown limits flags");
    }
    if ((rc = rd_u32(P, min)))
        return rc;
    *has_max = flags == 1;
    *max = 0;
    if (*has_max && (rc = rd_u32(P, max)))
        return rc;
    if (*has_max && *max < *min)
        return fail(P, CL_EINVAL, "%s minimum %u is above its maximum %u",
                    memory ? "memory" : "table", *min, *max);
    return CL_OK;
}

/* A constant expression (global initialisers): one value-producing
 * instruction, then `end`. */
static int skip_const_expr(parser *P)
{
    uint8_t op;
    uint32_t idx;
    int rc;
    for (;;) {
        if ((rc = rd_u8(P, &op)))
            return rc;
        switch (op) {
        case 0x0B: return CL_OK;                             /* end */
        case 0x41: rc = skip_sleb(P, 32); break;             /* i32.const */
        case 0x42: rc = skip_sleb(P, 64); break;             /* i64.const */
        case 0x43: rc = rd_skip(P, 4); break;                /* f32.const */
        case 0x44: rc = rd_skip(P, 8); break;                /* f64.const */
        case 0x23: case 0xD2: rc = rd_u32(P, &idx); break;   /* global.get, ref.func */
        case 0xD0: rc = rd_u8(P, &op); break;                /* ref.null t */
        default:
            P->p--;
            return malformed(P, "unsupported instruction in a constant expression");
        }
        if (rc)
            return rc;
    }
}

/* ---- sections ------------------------------------------------------------------- */

static int parse_types(parser *P)
{
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_TYPES, 3, "types", &n);
    if (rc)
        return rc;
    size_t pool = (size_t)(P->end - P->p);
    P->types = calloc(n ? n : 1, sizeof *P->types);
    P->valtypes = malloc(pool ? pool : 1);
    if (!P->types || !P->valtypes)
        return fail(P, CL_ENOMEM, "out of memory inspecting the module");
    uint32_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t form;
        uint32_t np, nr;
        if ((rc = rd_u8(P, &form)))
            return rc;
        if (form != 0x60) {
            P->p--;
            return malformed(P, "a type is not a function type");
        }
        P->types[i].off = used;
        if ((rc = rd_u32(P, &np)))
            return rc;
        if (np > WASM_MAX_PARAMS)
            return fail(P, CL_EINVAL, "type %u has %u parameters; the limit is %u", i, np,
                        WASM_MAX_PARAMS);
        for (uint32_t j = 0; j < np; j++)
            if ((rc = rd_valtype(P, &P->valtypes[used++])))
                return rc;
        if ((rc = rd_u32(P, &nr)))
            return rc;
        if (nr > WASM_MAX_RESULTS)
            return fail(P, CL_EINVAL, "type %u has %u results; the limit is %u", i, nr,
                        WASM_MAX_RESULTS);
        for (uint32_t j = 0; j < nr; j++)
            if ((rc = rd_valtype(P, &P->valtypes[used++])))
                return rc;
        P->types[i].np = (uint16_t)np;
        P->types[i].nr = (uint16_t)nr;
    }
    P->info->ntypes = n;
    return CL_OK;
}

/* Converts an ABI signature ("iiiii:I") to value types.  Returns 0 if
 * it does not fit (the table's signatures are short). */
static int abi_sig(const char *sig, uint8_t *par, size_t *np, uint8_t *res, size_t *nr, size_t cap)
{
    uint8_t *o = par;
    size_t *cnt = np;
    *np = *nr = 0;
    for (const char *c = sig; *c; c++) {
        if (*c == ':') {
            o = res;
            cnt = nr;
            continue;
        }
        if (*cnt >= cap)
            return 0;
        uint8_t t = *c == 'i' ? VT_I32 : *c == 'I' ? VT_I64 : *c == 'f' ? VT_F32 :
                    *c == 'F' ? VT_F64 : 0;
        if (!t)
            return 0;
        o[(*cnt)++] = t;
    }
    return 1;
}

static int check_import(parser *P, const uint8_t *mod, uint32_t mlen, const uint8_t *name,
                        uint32_t nlen, uint32_t ti, const rt_import **abi)
{
    char m[4 * NAME_SHOWN + 4], f[4 * NAME_SHOWN + 4], have[256], want[256];
    *abi = rt_import_find((const char *)mod, mlen, (const char *)name, nlen);
    if (!*abi)
        return fail(P, CL_EINVAL, "import %s.%s is not part of the Cloister ABI",
                    show_name(mod, mlen, m), show_name(name, nlen, f));
    uint8_t par[32], res[32];
    size_t np, nr;
    const wtype *t = &P->types[ti];
    const uint8_t *v = P->valtypes + t->off;
    if (!abi_sig((*abi)->signature, par, &np, res, &nr, sizeof par))
        return fail(P, CL_EINVAL, "import %s.%s: the node's ABI table has a bad signature",
                    show_name(mod, mlen, m), show_name(name, nlen, f));
    if (np == t->np && nr == t->nr && memcmp(par, v, np) == 0 && memcmp(res, v + np, nr) == 0)
        return CL_OK;
    return fail(P, CL_EINVAL, "import %s.%s has type %s, the ABI expects %s",
                show_name(mod, mlen, m), show_name(name, nlen, f),
                show_type(P, ti, have, sizeof have),
                show_functype(par, np, res, nr, want, sizeof want));
}

static int parse_imports(parser *P)
{
    static const char *const kinds[] = { "function", "table", "memory", "global", "tag" };
    wasm_module_info *I = P->info;
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_IMPORTS, 4, "imports", &n);
    if (rc)
        return rc;
    I->imports = calloc(n ? n : 1, sizeof *I->imports);
    if (!I->imports)
        return fail(P, CL_ENOMEM, "out of memory inspecting the module");
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *mod, *name;
        uint32_t mlen, nlen, ti;
        uint8_t kind;
        char m[4 * NAME_SHOWN + 4], f[4 * NAME_SHOWN + 4];
        if ((rc = rd_name(P, &mod, &mlen)) || (rc = rd_name(P, &name, &nlen)) ||
            (rc = rd_u8(P, &kind)))
            return rc;
        if (kind > WASM_EXTERN_TAG) {
            P->p--;
            return malformed(P, "unknown import kind");
        }
        if (kind != WASM_EXTERN_FUNC)
            return fail(P, CL_EINVAL, "import %s.%s is a %s; Cloister offers only functions to "
                        "import%s", show_name(mod, mlen, m), show_name(name, nlen, f),
                        kinds[kind], kind == WASM_EXTERN_MEMORY ?
                        " (the module must define its own memory and export it as \"memory\")" : "");
        if ((rc = rd_u32(P, &ti)))
            return rc;
        if (ti >= I->ntypes)
            return fail(P, CL_EINVAL, "malformed module: import %s.%s uses type %u, but the "
                        "module has %u types", show_name(mod, mlen, m),
                        show_name(name, nlen, f), ti, I->ntypes);
        if ((rc = check_import(P, mod, mlen, name, nlen, ti, &I->imports[i].abi)))
            return rc;
        I->imports[i].type_index = ti;
        I->nimports++;
        I->nfuncs++;
        if (strcmp(I->imports[i].abi->module, "cloister") == 0)
            I->imports_cloister = 1;
        else if (strcmp(I->imports[i].abi->module, "wasi_snapshot_preview1") == 0)
            I->imports_wasi = 1;
        else   /* the shim (compile.c) passes a host pointer for these two only */
            return fail(P, CL_EINVAL, "import %s.%s: host module unknown to the runtime",
                        show_name(mod, mlen, m), show_name(name, nlen, f));
    }
    return CL_OK;
}

static int parse_functions(parser *P)
{
    wasm_module_info *I = P->info;
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_FUNCS, 1, "functions", &n);
    if (rc)
        return rc;
    if ((uint64_t)n + I->nimports > WASM_MAX_FUNCS)
        return fail(P, CL_EINVAL, "module declares %llu functions; the limit is %u",
                    (unsigned long long)n + I->nimports, WASM_MAX_FUNCS);
    P->have_funcsec = 1;
    I->nfuncs_defined = n;
    I->nfuncs = I->nimports + n;
    P->func_types = malloc(((size_t)I->nfuncs ? I->nfuncs : 1) * sizeof *P->func_types);
    if (!P->func_types)
        return fail(P, CL_ENOMEM, "out of memory inspecting the module");
    for (uint32_t i = 0; i < I->nimports; i++)
        P->func_types[i] = I->imports[i].type_index;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ti;
        if ((rc = rd_u32(P, &ti)))
            return rc;
        if (ti >= I->ntypes)
            return fail(P, CL_EINVAL, "malformed module: function %u uses type %u, but the "
                        "module has %u types", I->nimports + i, ti, I->ntypes);
        P->func_types[I->nimports + i] = ti;
    }
    return CL_OK;
}

static int parse_tables(parser *P)
{
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_TABLES, 3, "tables", &n);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t t;
        uint32_t min, max;
        int has_max;
        if ((rc = rd_u8(P, &t)))
            return rc;
        if (t != VT_FUNCREF && t != VT_EXTERNREF) {
            P->p--;
            return malformed(P, "a table's element type is not a reference type");
        }
        if ((rc = rd_limits(P, 0, &min, &max, &has_max)))
            return rc;
        if (min > WASM_MAX_TABLE_ELEMS)
            return fail(P, CL_EINVAL, "table %u starts with %u elements; the limit is %u",
                        i, min, WASM_MAX_TABLE_ELEMS);
    }
    P->info->ntables = n;
    return CL_OK;
}

static int parse_memories(parser *P)
{
    wasm_module_info *I = P->info;
    uint32_t n, min, max;
    int has_max, rc = rd_count(P, 1000, 2, "memories", &n);
    if (rc)
        return rc;
    if (n > 1)
        return fail(P, CL_EINVAL, "module defines %u memories; Cloister runs modules with "
                    "one memory", n);
    P->nmemories = n;
    if (n == 0)
        return CL_OK;
    if ((rc = rd_limits(P, 1, &min, &max, &has_max)))
        return rc;
    if (min > WASM_MAX_PAGES || (has_max && max > WASM_MAX_PAGES))
        return fail(P, CL_EINVAL, "malformed module: memory of %u pages is larger than 4 GiB",
                    has_max && max > min ? max : min);
    if (min > P->max_pages)
        return fail(P, CL_ETOOBIG, "memory starts at %u pages (%u MiB); this node allows at "
                    "most %u pages (%u MiB) per instance", min, min / 16,
                    P->max_pages, P->max_pages / 16);
    I->memory_min_pages = min;
    I->memory_has_max = has_max;
    I->memory_max_pages = has_max ? max : WASM_MAX_PAGES;
    return CL_OK;
}

static int parse_globals(parser *P)
{
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_GLOBALS, 3, "globals", &n);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t t, mut;
        if ((rc = rd_valtype(P, &t)) || (rc = rd_u8(P, &mut)))
            return rc;
        if (mut > 1) {
            P->p--;
            return malformed(P, "bad global mutability");
        }
        if ((rc = skip_const_expr(P)))
            return rc;
    }
    P->info->nglobals = n;
    return CL_OK;
}

static int parse_exports(parser *P)
{
    wasm_module_info *I = P->info;
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_EXPORTS, 3, "exports", &n);
    if (rc)
        return rc;
    /* every name fits in the section's bytes, plus a NUL each */
    size_t names_cap = (size_t)(P->end - P->p) + n;
    I->exports = calloc(n ? n : 1, sizeof *I->exports);
    I->names_ = malloc(names_cap ? names_cap : 1);
    if (!I->exports || !I->names_)
        return fail(P, CL_ENOMEM, "out of memory inspecting the module");
    size_t used = 0;
    for (uint32_t i = 0; i < n; i++) {
        wasm_export_info *e = &I->exports[i];
        const uint8_t *name;
        uint32_t nlen, idx, have;
        uint8_t kind;
        char shown[4 * NAME_SHOWN + 4];
        static const char *const kinds[] = { "function", "table", "memory", "global", "tag" };
        if ((rc = rd_name(P, &name, &nlen)) || (rc = rd_u8(P, &kind)))
            return rc;
        if (kind > WASM_EXTERN_TAG) {
            P->p--;
            return malformed(P, "unknown export kind");
        }
        if ((rc = rd_u32(P, &idx)))
            return rc;
        have = kind == WASM_EXTERN_FUNC ? I->nfuncs : kind == WASM_EXTERN_TABLE ? I->ntables :
               kind == WASM_EXTERN_MEMORY ? P->nmemories :
               kind == WASM_EXTERN_GLOBAL ? I->nglobals : 0;
        if (idx >= have)
            return fail(P, CL_EINVAL, "malformed module: export \"%s\" refers to %s %u, which "
                        "does not exist", show_name(name, nlen, shown), kinds[kind], idx);
        memcpy(I->names_ + used, name, nlen);
        I->names_[used + nlen] = '\0';
        e->name = I->names_ + used;
        e->name_len = nlen;
        e->kind = (wasm_extern_kind)kind;
        e->index = idx;
        used += (size_t)nlen + 1;
        I->nexports++;
    }
    return CL_OK;
}

static int parse_start(parser *P)
{
    int rc = rd_u32(P, &P->start_func);
    if (rc)
        return rc;
    P->have_start = 1;
    return CL_OK;
}

/* Element and data segments are wasm2c's to decode; here only their
 * number is bounded (the section's size was checked already). */
static int parse_elements(parser *P)
{
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_SEGMENTS, 1, "element segments", &n);
    if (rc)
        return rc;
    P->info->nelem = n;
    P->p = P->end;
    return CL_OK;
}

static int parse_data(parser *P)
{
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_SEGMENTS, 1, "data segments", &n);
    if (rc)
        return rc;
    if (P->have_datacount && n != P->datacount)
        return fail(P, CL_EINVAL, "malformed module: the data count section says %u segments, "
                    "the data section has %u", P->datacount, n);
    P->info->ndata = n;
    P->p = P->end;
    return CL_OK;
}

static int parse_datacount(parser *P)
{
    int rc = rd_u32(P, &P->datacount);
    if (rc)
        return rc;
    if (P->datacount > WASM_MAX_SEGMENTS)
        return fail(P, CL_EINVAL, "module declares %u data segments; the limit is %u",
                    P->datacount, WASM_MAX_SEGMENTS);
    P->have_datacount = 1;
    return CL_OK;
}

/* Frames every function body and bounds its size and locals; the
 * instructions are wasm2c's to validate. */
static int parse_code(parser *P)
{
    wasm_module_info *I = P->info;
    uint32_t n;
    int rc = rd_count(P, WASM_MAX_FUNCS, 2, "function bodies", &n);
    if (rc)
        return rc;
    if (n != I->nfuncs_defined)
        return fail(P, CL_EINVAL, "malformed module: the function section declares %u "
                    "functions, the code section has %u bodies", I->nfuncs_defined, n);
    P->have_code = 1;
    const uint8_t *section_end = P->end;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t size, groups;
        uint64_t locals = 0;
        if ((rc = rd_u32(P, &size)))
            return rc;
        if (size > WASM_MAX_BODY_BYTES)
            return fail(P, CL_EINVAL, "function %u's body is %u bytes; the limit is %u",
                        I->nimports + i, size, WASM_MAX_BODY_BYTES);
        if ((size_t)(section_end - P->p) < size)
            return truncated(P);
        P->end = P->p + size;          /* read the body's header inside the body */
        if ((rc = rd_u32(P, &groups)))
            return rc;
        for (uint32_t g = 0; g < groups; g++) {
            uint32_t cnt;
            uint8_t t;
            if ((rc = rd_u32(P, &cnt)) || (rc = rd_valtype(P, &t)))
                return rc;
            locals += cnt;
            if (locals > WASM_MAX_LOCALS)
                return fail(P, CL_EINVAL, "function %u declares more than %u locals",
                            I->nimports + i, WASM_MAX_LOCALS);
        }
        P->p = P->end;
        P->end = section_end;
    }
    return CL_OK;
}

static int parse_custom(parser *P)
{
    const uint8_t *name;
    uint32_t len;
    int rc = rd_name(P, &name, &len);
    if (rc)
        return rc;
    P->p = P->end;
    return CL_OK;
}

static const struct section_def {
    const char *name;
    int order;                 /* sections must appear in increasing order */
    int (*parse)(parser *P);
} sections[SEC_COUNT] = {
    [SEC_CUSTOM]    = { "custom",     0,  parse_custom },
    [SEC_TYPE]      = { "type",       1,  parse_types },
    [SEC_IMPORT]    = { "import",     2,  parse_imports },
    [SEC_FUNCTION]  = { "function",   3,  parse_functions },
    [SEC_TABLE]     = { "table",      4,  parse_tables },
    [SEC_MEMORY]    = { "memory",     5,  parse_memories },
    [SEC_GLOBAL]    = { "global",     6,  parse_globals },
    [SEC_EXPORT]    = { "export",     7,  parse_exports },
    [SEC_START]     = { "start",      8,  parse_start },
    [SEC_ELEMENT]   = { "element",    9,  parse_elements },
    [SEC_DATACOUNT] = { "data count", 10, parse_datacount },
    [SEC_CODE]      = { "code",       11, parse_code },
    [SEC_DATA]      = { "data",       12, parse_data },
};

/* ---- whole-module checks ------------------------------------------------------------ */

static int is_name(const wasm_export_info *e, const char *name)
{
    return e->name_len == strlen(name) && memcmp(e->name, name, e->name_len) == 0;
}

const wasm_export_info *wasm_module_find_export(const wasm_module_info *info, const char *name)
{
    for (uint32_t i = 0; i < info->nexports; i++)
        if (is_name(&info->exports[i], name))
            return &info->exports[i];
    return NULL;
}

static const char *const extern_kind_names[] = { "function", "table", "memory", "global", "tag" };

/* Checks an exported function's kind and type; *present says whether it
 * is exported at all. */
static int check_entry(parser *P, const char *name, int nresults, int *present)
{
    const wasm_export_info *e = wasm_module_find_export(P->info, name);
    char have[256];
    *present = e != NULL;
    if (!e)
        return CL_OK;
    if (e->kind != WASM_EXTERN_FUNC)
        return fail(P, CL_EINVAL, "export \"%s\" is a %s, not a function", name,
                    extern_kind_names[e->kind]);
    uint32_t ti = P->func_types[e->index];
    const wtype *t = &P->types[ti];
    if (t->np == 0 && t->nr == nresults &&
        (nresults == 0 || P->valtypes[t->off] == VT_I32))
        return CL_OK;
    return fail(P, CL_EINVAL, "export \"%s\" has type %s, expected %s", name,
                show_type(P, ti, have, sizeof have), nresults ? "() -> i32" : "() -> ()");
}

static int check_module(parser *P)
{
    wasm_module_info *I = P->info;
    int rc, present;
    if (P->have_funcsec && !P->have_code && I->nfuncs_defined > 0)
        return fail(P, CL_EINVAL, "malformed module: %u functions are declared but the module "
                    "has no code section", I->nfuncs_defined);
    if (!P->have_funcsec && P->have_code)
        return fail(P, CL_EINVAL, "malformed module: a code section without a function section");
    if (P->have_datacount && P->datacount != I->ndata)
        return fail(P, CL_EINVAL, "malformed module: the data count section says %u segments, "
                    "the data section has %u", P->datacount, I->ndata);
    if (!P->func_types) {   /* no function section: only imported functions */
        P->func_types = malloc(((size_t)I->nimports ? I->nimports : 1) * sizeof *P->func_types);
        if (!P->func_types)
            return fail(P, CL_ENOMEM, "out of memory inspecting the module");
        for (uint32_t i = 0; i < I->nimports; i++)
            P->func_types[i] = I->imports[i].type_index;
    }
    if (P->have_start)
        return fail(P, CL_EINVAL, "module has a start section (function %u), which would run "
                    "code while an instance is created; use a reactor's _initialize or an "
                    "\"init\" export instead", P->start_func);

    const wasm_export_info *mem = wasm_module_find_export(I, "memory");
    if (P->nmemories == 0)
        return fail(P, CL_EINVAL, "module has no memory; it must define one and export it "
                    "as \"memory\"");
    if (!mem)
        return fail(P, CL_EINVAL, "module does not export its memory as \"memory\"");
    if (mem->kind != WASM_EXTERN_MEMORY)
        return fail(P, CL_EINVAL, "export \"memory\" is a %s, not a memory",
                    extern_kind_names[mem->kind]);

    if ((rc = check_entry(P, "handle", 1, &present)))
        return rc;
    if (!present)
        return fail(P, CL_EINVAL, "module does not export a function \"handle\" "
                    "(int32_t handle(void), type () -> i32)");
    if ((rc = check_entry(P, "_initialize", 0, &I->has_initialize)) ||
        (rc = check_entry(P, "_start", 0, &I->has_start)) ||
        (rc = check_entry(P, "init", 0, &I->has_init)))
        return rc;
    if (I->has_initialize && I->has_start)
        return fail(P, CL_EINVAL, "module exports both _start and _initialize; a WASI module "
                    "is either a command or a reactor");
    return CL_OK;
}

/* ---- entry point ---------------------------------------------------------------------- */

static int parse_module(parser *P, size_t len)
{
    static const uint8_t magic[4] = { 0x00, 0x61, 0x73, 0x6D };
    int rc, last_order = 0;
    uint32_t seen = 0;
    if (len < 4 || memcmp(P->base, magic, 4) != 0)
        return fail(P, CL_EINVAL, "not a WebAssembly module (it does not start with \\0asm)");
    if (len < 8)
        return fail(P, CL_EINVAL, "malformed module: truncated header");
    uint32_t version = (uint32_t)P->base[4] | (uint32_t)P->base[5] << 8 |
                       (uint32_t)P->base[6] << 16 | (uint32_t)P->base[7] << 24;
    if (version != 1)
        return fail(P, CL_EINVAL, "unsupported WebAssembly binary version %u (expected 1)", version);
    P->p = P->base + 8;

    while (P->p < P->base + len) {
        uint8_t id;
        uint32_t size;
        P->section = NULL;
        P->end = P->base + len;
        const uint8_t *header = P->p;
        if ((rc = rd_u8(P, &id)) || (rc = rd_u32(P, &size)))
            return rc;
        if (id >= SEC_COUNT) {
            P->p = header;
            if (id == 13)
                return fail(P, CL_EINVAL, "exception handling (the tag section) is not supported");
            return malformed(P, "unknown section id");
        }
        const struct section_def *s = &sections[id];
        if (size > (size_t)(P->end - P->p))
            return fail(P, CL_EINVAL, "malformed module: the %s section declares %u bytes but "
                        "only %zu remain (byte 0x%zx)", s->name, size,
                        (size_t)(P->end - P->p), (size_t)(header - P->base));
        if (id != SEC_CUSTOM) {
            if (seen & (1u << id))
                return fail(P, CL_EINVAL, "malformed module: duplicate %s section (byte 0x%zx)",
                            s->name, (size_t)(header - P->base));
            if (s->order < last_order)
                return fail(P, CL_EINVAL, "malformed module: the %s section is out of order "
                            "(byte 0x%zx)", s->name, (size_t)(header - P->base));
            seen |= 1u << id;
            last_order = s->order;
        }
        P->section = s->name;
        P->end = P->p + size;
        if ((rc = s->parse(P)))
            return rc;
        if (P->p != P->end)
            return malformed(P, "unexpected bytes at the end of the section");
    }
    P->section = NULL;
    return check_module(P);
}

int wasm_module_inspect(const uint8_t *wasm, size_t len, const wasm_module_limits *lim,
                        wasm_module_info *info, cl_buf *err)
{
    size_t max_bytes = lim && lim->max_module_bytes ? lim->max_module_bytes
                                                    : WASM_DEFAULT_MAX_MODULE_BYTES;
    parser P = {
        .base = wasm,
        .max_pages = lim && lim->max_memory_pages ? lim->max_memory_pages
                                                  : WASM_DEFAULT_MAX_MEMORY_PAGES,
        .info = info,
        .err = err,
    };
    int rc;
    memset(info, 0, sizeof *info);
    if (len > max_bytes)
        rc = fail(&P, CL_ETOOBIG, "module is %zu bytes (%.1f MiB); this node accepts modules "
                  "of up to %zu bytes (%.1f MiB)", len, len / 1048576.0, max_bytes,
                  max_bytes / 1048576.0);
    else if (!wasm)
        rc = fail(&P, CL_EINVAL, "empty module");
    else
        rc = parse_module(&P, len);
    free(P.types);
    free(P.valtypes);
    free(P.func_types);
    if (rc != CL_OK) {
        wasm_module_info_fini(info);
        return rc;
    }
    info->module_bytes = len;
    return CL_OK;
}

void wasm_module_info_fini(wasm_module_info *info)
{
    free(info->imports);
    free(info->exports);
    free(info->names_);
    memset(info, 0, sizeof *info);
}
