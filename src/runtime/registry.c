/*
 * registry.c - deployed functions by (tenant, name), and their records
 * and modules in the store (registry.h).
 *
 * Table: chained hash buckets (FNV-1a of tenant NUL name), doubled when
 * the load passes 1; guarded by one rwlock, held shared by lookups just
 * long enough to take a reference, exclusively by install/remove.
 *
 * Reference counts: the registry holds one reference to every rt_fn in
 * its table and one to each name's current version; every rt_fn_ver
 * holds one to its rt_fn.  A removed name leaves the table at once; its
 * objects are freed when the last invocation using them lets go.
 *
 * Store records are JSON (jansson); every value read back is checked
 * (shape, names, lengths, the module's SHA-256) before it is used, since
 * in a cluster it may come from another node.
 */
#include "registry.h"

#include "../common/err.h"
#include "../common/log.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char MOD[] = "registry";

#define INDEX_KEY "\x01i/functions"
#define INDEX_RETRIES 256

struct rt_registry {
    pthread_rwlock_t lock;
    rt_fn **buckets;
    size_t nbuckets;            /* power of two */
    size_t count;
    rt_registry_hooks hooks;
};

/* ---- names and hashing --------------------------------------------------- */

int rt_name_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok || n >= RT_NAME_MAX)
            return 0;
    }
    return n > 0;
}

static uint64_t name_hash(const char *tenant, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = tenant; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    h = (h ^ 0) * 0x100000001b3ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h;
}

void rt_sha256_hex(const uint8_t sha256[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[sha256[i] >> 4];
        hex[2 * i + 1] = digits[sha256[i] & 15];
    }
    hex[64] = '\0';
}

static int hex_decode(const char *hex, uint8_t *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < 2 * n; i++) {
        char c = hex[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return -1;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return 0;
}

/* ---- reference counts ------------------------------------------------------ */

rt_fn_ver *rt_fn_ver_new(void)
{
    rt_fn_ver *v = calloc(1, sizeof *v);
    if (v)
        v->refs = 1;
    return v;
}

void rt_fn_ver_ref(rt_fn_ver *v)
{
    __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
}

void rt_fn_ref(rt_fn *fn)
{
    __atomic_add_fetch(&fn->refs, 1, __ATOMIC_RELAXED);
}

void rt_fn_unref(rt_fn *fn)
{
    if (!fn || __atomic_sub_fetch(&fn->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (fn->log && fn->log_destroy)
        fn->log_destroy(fn->log_arg, fn->log);
    free(fn);
}

void rt_fn_ver_unref(rt_fn_ver *v)
{
    if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (v->code && v->code_release)
        v->code_release(v->code);
    rt_fn_unref(v->fn);
    free(v);
}

/* ---- the table -------------------------------------------------------------- */

int rt_registry_create(const rt_registry_hooks *hooks, rt_registry **out)
{
    *out = NULL;
    rt_registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return CL_ENOMEM;
    reg->nbuckets = 64;
    reg->buckets = calloc(reg->nbuckets, sizeof *reg->buckets);
    if (!reg->buckets) {
        free(reg);
        return CL_ENOMEM;
    }
    if (hooks)
        reg->hooks = *hooks;
    pthread_rwlock_init(&reg->lock, NULL);
    *out = reg;
    return CL_OK;
}

void rt_registry_destroy(rt_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->nbuckets; i++) {
        rt_fn *fn = reg->buckets[i];
        while (fn) {
            rt_fn *next = fn->chain;
            rt_fn_ver *v = fn->current;
            fn->current = NULL;
            rt_fn_ver_unref(v);
            rt_fn_unref(fn);
            fn = next;
        }
    }
    pthread_rwlock_destroy(&reg->lock);
    free(reg->buckets);
    free(reg);
}

/* The name's rt_fn in the table, or NULL.  Lock held (either way). */
static rt_fn *do_find(rt_registry *reg, const char *tenant, const char *name, uint64_t h)
{
    for (rt_fn *fn = reg->buckets[h & (reg->nbuckets - 1)]; fn; fn = fn->chain)
        if (fn->hash == h && strcmp(fn->tenant, tenant) == 0 && strcmp(fn->name, name) == 0)
            return fn;
    return NULL;
}

/* Doubles the table; silently keeps the old size without memory.  Lock
 * held exclusively. */
static void do_grow(rt_registry *reg)
{
    size_t n = reg->nbuckets * 2;
    rt_fn **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < reg->nbuckets; i++) {
        rt_fn *fn = reg->buckets[i];
        while (fn) {
            rt_fn *next = fn->chain;
            fn->chain = b[fn->hash & (n - 1)];
            b[fn->hash & (n - 1)] = fn;
            fn = next;
        }
    }
    free(reg->buckets);
    reg->buckets = b;
    reg->nbuckets = n;
}

rt_fn_ver *rt_registry_get(rt_registry *reg, const char *tenant, const char *name)
{
    uint64_t h = name_hash(tenant, name);
    pthread_rwlock_rdlock(&reg->lock);
    rt_fn *fn = do_find(reg, tenant, name, h);
    rt_fn_ver *v = fn ? fn->current : NULL;
    if (v)
        rt_fn_ver_ref(v);
    pthread_rwlock_unlock(&reg->lock);
    return v;
}

rt_fn *rt_registry_get_fn(rt_registry *reg, const char *tenant, const char *name)
{
    uint64_t h = name_hash(tenant, name);
    pthread_rwlock_rdlock(&reg->lock);
    rt_fn *fn = do_find(reg, tenant, name, h);
    if (fn)
        rt_fn_ref(fn);
    pthread_rwlock_unlock(&reg->lock);
    return fn;
}

/* A new rt_fn for the table (one reference: the table's), with its log. */
static rt_fn *fn_new(rt_registry *reg, const char *tenant, const char *name, uint64_t h)
{
    rt_fn *fn = calloc(1, sizeof *fn);
    if (!fn)
        return NULL;
    snprintf(fn->tenant, sizeof fn->tenant, "%s", tenant);
    snprintf(fn->name, sizeof fn->name, "%s", name);
    fn->hash = h;
    fn->refs = 1;
    fn->log_destroy = reg->hooks.log_destroy;
    fn->log_arg = reg->hooks.arg;
    if (reg->hooks.log_create) {
        fn->log = reg->hooks.log_create(reg->hooks.arg);
        if (!fn->log) {
            free(fn);
            return NULL;
        }
    }
    return fn;
}

rt_fn *rt_registry_fn_for(rt_registry *reg, const char *tenant, const char *name)
{
    uint64_t h = name_hash(tenant, name);
    pthread_rwlock_rdlock(&reg->lock);
    rt_fn *fn = do_find(reg, tenant, name, h);
    if (fn)
        rt_fn_ref(fn);
    pthread_rwlock_unlock(&reg->lock);
    return fn ? fn : fn_new(reg, tenant, name, h);
}

void rt_registry_install(rt_registry *reg, rt_fn_ver *v, rt_fn_ver **old)
{
    rt_fn *fn = v->fn;
    CL_ASSERT(fn != NULL);
    rt_fn *dropped = NULL;
    pthread_rwlock_wrlock(&reg->lock);
    rt_fn **pp = &reg->buckets[fn->hash & (reg->nbuckets - 1)];
    while (*pp && !((*pp)->hash == fn->hash && strcmp((*pp)->tenant, fn->tenant) == 0 &&
                    strcmp((*pp)->name, fn->name) == 0))
        pp = &(*pp)->chain;
    rt_fn *cur = *pp;
    rt_fn_ver *prev = NULL;
    if (cur != fn) {
        if (cur) {
            /* The name was removed and made again while v was being
             * prepared: v's rt_fn takes the place of the newer one. */
            *pp = cur->chain;
            cur->chain = NULL;
            prev = cur->current;
            cur->current = NULL;
            dropped = cur;
            reg->count--;
        }
        rt_fn_ref(fn);                               /* the table's */
        size_t b = fn->hash & (reg->nbuckets - 1);
        fn->chain = reg->buckets[b];
        reg->buckets[b] = fn;
        if (++reg->count > reg->nbuckets)
            do_grow(reg);
    } else {
        prev = fn->current;
    }
    fn->current = v;                                 /* the caller's reference moves here */
    pthread_rwlock_unlock(&reg->lock);

    rt_fn_unref(dropped);
    if (old)
        *old = prev;
    else
        rt_fn_ver_unref(prev);
}

int rt_registry_remove(rt_registry *reg, const char *tenant, const char *name, rt_fn_ver **old)
{
    if (old)
        *old = NULL;
    uint64_t h = name_hash(tenant, name);
    pthread_rwlock_wrlock(&reg->lock);
    rt_fn **pp = &reg->buckets[h & (reg->nbuckets - 1)];
    while (*pp && !((*pp)->hash == h && strcmp((*pp)->tenant, tenant) == 0 &&
                    strcmp((*pp)->name, name) == 0))
        pp = &(*pp)->chain;
    rt_fn *fn = *pp;
    if (!fn) {
        pthread_rwlock_unlock(&reg->lock);
        return CL_ENOTFOUND;
    }
    *pp = fn->chain;
    fn->chain = NULL;
    reg->count--;
    rt_fn_ver *v = fn->current;
    fn->current = NULL;
    pthread_rwlock_unlock(&reg->lock);

    if (old)
        *old = v;
    else
        rt_fn_ver_unref(v);
    rt_fn_unref(fn);                                 /* the table's */
    return CL_OK;
}

size_t rt_registry_snapshot(rt_registry *reg, rt_fn_ver ***out)
{
    *out = NULL;
    pthread_rwlock_rdlock(&reg->lock);
    size_t n = 0;
    rt_fn_ver **arr = reg->count ? malloc(reg->count * sizeof *arr) : NULL;
    if (arr) {
        for (size_t i = 0; i < reg->nbuckets; i++)
            for (rt_fn *fn = reg->buckets[i]; fn; fn = fn->chain)
                if (fn->current) {
                    rt_fn_ver_ref(fn->current);
                    arr[n++] = fn->current;
                }
    }
    pthread_rwlock_unlock(&reg->lock);
    if (n == 0) {
        free(arr);
        return 0;
    }
    *out = arr;
    return n;
}

size_t rt_registry_count(rt_registry *reg)
{
    pthread_rwlock_rdlock(&reg->lock);
    size_t n = reg->count;
    pthread_rwlock_unlock(&reg->lock);
    return n;
}

int rt_registry_module_in_use(rt_registry *reg, const uint8_t sha256[32],
                              const char *tenant, const char *name)
{
    int used = 0;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->nbuckets && !used; i++)
        for (rt_fn *fn = reg->buckets[i]; fn && !used; fn = fn->chain)
            if (fn->current && memcmp(fn->current->sha256, sha256, 32) == 0 &&
                !(strcmp(fn->tenant, tenant) == 0 && strcmp(fn->name, name) == 0))
                used = 1;
    pthread_rwlock_unlock(&reg->lock);
    return used;
}

void rt_fn_ver_info(const rt_fn_ver *v, rt_fn_info *info)
{
    memset(info, 0, sizeof *info);
    snprintf(info->tenant, sizeof info->tenant, "%s", v->fn->tenant);
    snprintf(info->name, sizeof info->name, "%s", v->fn->name);
    info->kind = v->kind;
    memcpy(info->hash, v->sha256, 32);
    info->module_bytes = v->module_bytes;
    info->deployed_at = v->deployed_at;
    info->invocations = __atomic_load_n(&v->fn->invocations, __ATOMIC_RELAXED);
    info->errors = __atomic_load_n(&v->fn->errors, __ATOMIC_RELAXED);
    info->cached = v->cached;
}

/* ---- records as JSON --------------------------------------------------------- */

char *rt_record_to_json(const rt_record *rec)
{
    char hex[65];
    rt_sha256_hex(rec->sha256, hex);
    json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:I}",
                          "version", 1, "tenant", rec->tenant, "name", rec->name,
                          "kind", rec->kind == RT_KIND_NATIVE ? "native" : "wasm",
                          "sha256", hex, "bytes", (json_int_t)rec->module_bytes,
                          "chunk_bytes", (json_int_t)rec->chunk_bytes,
                          "deployed_at", (json_int_t)rec->deployed_at);
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

int rt_record_from_json(const char *text, size_t len, rt_record *rec)
{
    memset(rec, 0, sizeof *rec);
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!o)
        return CL_EINVAL;
    int version = 0;
    const char *tenant, *name, *kind, *hex;
    json_int_t bytes, chunk, at;
    int rc = CL_EINVAL;
    if (json_unpack(o, "{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "version", &version,
                    "tenant", &tenant, "name", &name, "kind", &kind, "sha256", &hex,
                    "bytes", &bytes, "chunk_bytes", &chunk, "deployed_at", &at) != 0)
        goto out;
    if (version != 1 || !rt_name_valid(tenant) || !rt_name_valid(name) || bytes <= 0 ||
        chunk <= 0 || at < 0 || hex_decode(hex, rec->sha256, 32) != 0)
        goto out;
    if (strcmp(kind, "wasm") == 0)
        rec->kind = RT_KIND_WASM;
    else if (strcmp(kind, "native") == 0)
        rec->kind = RT_KIND_NATIVE;
    else
        goto out;
    snprintf(rec->tenant, sizeof rec->tenant, "%s", tenant);
    snprintf(rec->name, sizeof rec->name, "%s", name);
    rec->module_bytes = (uint64_t)bytes;
    rec->chunk_bytes = (uint64_t)chunk;
    rec->deployed_at = at;
    rc = CL_OK;
out:
    json_decref(o);
    return rc;
}

/* ---- the store ----------------------------------------------------------------- */

/* Store keys never exceed STORE_KEY_MAX: "\x01f/" 64 "/" 64 is 132 bytes. */
static size_t module_key(uint8_t key[STORE_KEY_MAX], const uint8_t sha256[32], size_t i)
{
    char hex[65];
    rt_sha256_hex(sha256, hex);
    return (size_t)snprintf((char *)key, STORE_KEY_MAX, "%cm/%s/%zu", RT_RESERVED_KEY_BYTE, hex, i);
}

static size_t record_key(uint8_t key[STORE_KEY_MAX], const char *tenant, const char *name)
{
    return (size_t)snprintf((char *)key, STORE_KEY_MAX, "%cf/%s/%s", RT_RESERVED_KEY_BYTE,
                            tenant, name);
}

/* store_get sink: the value replaces the buffer's contents. */
static uint8_t *sink_to_buf(void *arg, const store_meta *m)
{
    cl_buf *b = arg;
    b->len = 0;
    if (m->len == 0)
        return b->data;
    if (cl_buf_reserve(b, m->len) != CL_OK)
        return NULL;
    b->len = m->len;
    return b->data;
}

static int get_value(kv_thread *st, const uint8_t *key, size_t klen, cl_buf *out,
                     uint64_t *cas)
{
    store_meta m;
    out->len = 0;
    int rc = kv_get(st, key, klen, NULL, sink_to_buf, out, &m);
    if (rc != CL_OK) {
        out->len = 0;
        return rc;
    }
    if (cas)
        *cas = m.cas;
    return CL_OK;
}

static size_t chunk_count(size_t len, size_t chunk_bytes)
{
    return len / chunk_bytes + (len % chunk_bytes != 0);
}

int rt_persist_put_module(kv_thread *st, const uint8_t sha256[32], const uint8_t *module,
                          size_t len, size_t chunk_bytes)
{
    if (chunk_bytes == 0 || len == 0)
        return CL_EINVAL;
    size_t n = chunk_count(len, chunk_bytes);
    store_write w = { .mode = STORE_SET };
    uint8_t key[STORE_KEY_MAX];
    for (size_t i = 0; i < n; i++) {
        size_t off = i * chunk_bytes;
        size_t part = len - off < chunk_bytes ? len - off : chunk_bytes;
        size_t klen = module_key(key, sha256, i);
        int rc = kv_set(st, key, klen, module + off, part, &w, NULL);
        if (rc != CL_OK) {
            for (size_t j = 0; j < i; j++) {
                klen = module_key(key, sha256, j);
                kv_delete(st, key, klen, 0);
            }
            return rc;
        }
    }
    return CL_OK;
}

int rt_persist_get_module(kv_thread *st, const uint8_t sha256[32], size_t len,
                          size_t chunk_bytes, cl_buf *out)
{
    out->len = 0;
    if (chunk_bytes == 0 || len == 0)
        return CL_EINVAL;
    if (cl_buf_reserve(out, len) != CL_OK)
        return CL_ENOMEM;
    cl_buf part;
    cl_buf_init(&part);
    size_t n = chunk_count(len, chunk_bytes);
    uint8_t key[STORE_KEY_MAX];
    int rc = CL_OK;
    for (size_t i = 0; i < n && rc == CL_OK; i++) {
        size_t want = i + 1 < n ? chunk_bytes : len - i * chunk_bytes;
        size_t klen = module_key(key, sha256, i);
        rc = get_value(st, key, klen, &part, NULL);
        if (rc == CL_OK && part.len != want)
            rc = CL_EINTEGRITY;
        if (rc == CL_OK)
            rc = cl_buf_append(out, part.data, part.len);
    }
    cl_buf_fini(&part, 0);
    if (rc == CL_OK) {
        uint8_t digest[32];
        unsigned dlen = 0;
        if (EVP_Digest(out->data, out->len, digest, &dlen, EVP_sha256(), NULL) != 1)
            rc = CL_ECRYPTO;
        else if (memcmp(digest, sha256, 32) != 0)
            rc = CL_EINTEGRITY;
    }
    if (rc != CL_OK)
        out->len = 0;
    return rc;
}

void rt_persist_delete_module(kv_thread *st, const uint8_t sha256[32], size_t len,
                              size_t chunk_bytes)
{
    if (chunk_bytes == 0)
        return;
    uint8_t key[STORE_KEY_MAX];
    size_t n = chunk_count(len, chunk_bytes);
    for (size_t i = 0; i < n; i++) {
        size_t klen = module_key(key, sha256, i);
        kv_delete(st, key, klen, 0);
    }
}

int rt_persist_put_record(kv_thread *st, const rt_record *rec)
{
    char *json = rt_record_to_json(rec);
    if (!json)
        return CL_ENOMEM;
    uint8_t key[STORE_KEY_MAX];
    size_t klen = record_key(key, rec->tenant, rec->name);
    store_write w = { .mode = STORE_SET };
    int rc = kv_set(st, key, klen, (const uint8_t *)json, strlen(json), &w, NULL);
    free(json);
    return rc;
}

int rt_persist_get_record(kv_thread *st, const char *tenant, const char *name, rt_record *rec)
{
    uint8_t key[STORE_KEY_MAX];
    size_t klen = record_key(key, tenant, name);
    cl_buf b;
    cl_buf_init(&b);
    int rc = get_value(st, key, klen, &b, NULL);
    if (rc == CL_OK) {
        rc = rt_record_from_json((const char *)b.data, b.len, rec);
        if (rc == CL_OK && (strcmp(rec->tenant, tenant) != 0 || strcmp(rec->name, name) != 0))
            rc = CL_EINVAL;   /* a record under another function's key */
    }
    cl_buf_fini(&b, 0);
    return rc;
}

int rt_persist_delete_record(kv_thread *st, const char *tenant, const char *name)
{
    uint8_t key[STORE_KEY_MAX];
    size_t klen = record_key(key, tenant, name);
    return kv_delete(st, key, klen, 0);
}

/* Parses the index value into a JSON array (a new reference). */
static json_t *index_parse(const cl_buf *b)
{
    json_t *a = json_loadb((const char *)b->data, b->len, 0, NULL);
    if (!a || !json_is_array(a)) {
        json_decref(a);
        return NULL;
    }
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e) {
        if (!json_is_array(e) || json_array_size(e) != 2 ||
            !json_is_string(json_array_get(e, 0)) || !json_is_string(json_array_get(e, 1))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int rt_persist_index_update(kv_thread *st, const char *tenant, const char *name, int add)
{
    const uint8_t *key = (const uint8_t *)INDEX_KEY;
    size_t klen = sizeof INDEX_KEY - 1;
    cl_buf b;
    cl_buf_init(&b);
    int rc = CL_EAGAIN;
    for (int attempt = 0; attempt < INDEX_RETRIES && rc == CL_EAGAIN; attempt++) {
        uint64_t cas = 0;
        rc = get_value(st, key, klen, &b, &cas);
        json_t *a;
        if (rc == CL_ENOTFOUND) {
            a = json_array();
            cas = 0;
        } else if (rc == CL_OK) {
            a = index_parse(&b);
            if (!a) {
                cl_log_error(MOD, "the function index in the store is malformed; rewriting it");
                a = json_array();
            }
        } else {
            break;
        }
        if (!a) {
            rc = CL_ENOMEM;
            break;
        }
        /* Find the entry. */
        size_t i, found = (size_t)-1;
        json_t *e;
        json_array_foreach(a, i, e) {
            if (strcmp(json_string_value(json_array_get(e, 0)), tenant) == 0 &&
                strcmp(json_string_value(json_array_get(e, 1)), name) == 0)
                found = i;
        }
        if ((found != (size_t)-1) == !!add) {
            json_decref(a);
            rc = CL_OK;                        /* already as wanted */
            break;
        }
        if (add)
            json_array_append_new(a, json_pack("[s, s]", tenant, name));
        else
            json_array_remove(a, found);
        char *text = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        if (!text) {
            rc = CL_ENOMEM;
            break;
        }
        store_write w = { .mode = cas ? STORE_SET : STORE_ADD, .cas = cas };
        rc = kv_set(st, key, klen, (const uint8_t *)text, strlen(text), &w, NULL);
        free(text);
        if (rc == CL_EEXISTS || rc == CL_ENOTFOUND || rc == CL_ENOTSTORED)
            rc = CL_EAGAIN;                    /* another writer came first: again */
    }
    cl_buf_fini(&b, 0);
    if (rc == CL_EAGAIN)
        cl_log_error(MOD, "could not update the function index after %d attempts", INDEX_RETRIES);
    return rc;
}

int rt_persist_index_list(kv_thread *st,
                          void (*fn)(void *arg, const char *tenant, const char *name), void *arg)
{
    cl_buf b;
    cl_buf_init(&b);
    int rc = get_value(st, (const uint8_t *)INDEX_KEY, sizeof INDEX_KEY - 1, &b, NULL);
    if (rc == CL_ENOTFOUND) {
        cl_buf_fini(&b, 0);
        return CL_OK;
    }
    if (rc == CL_OK) {
        json_t *a = index_parse(&b);
        if (!a) {
            rc = CL_EINVAL;
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(a, i, e) {
                const char *t = json_string_value(json_array_get(e, 0));
                const char *n = json_string_value(json_array_get(e, 1));
                if (rt_name_valid(t) && rt_name_valid(n))
                    fn(arg, t, n);
            }
            json_decref(a);
        }
    }
    cl_buf_fini(&b, 0);
    return rc;
}
