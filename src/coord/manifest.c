/*
 * manifest.c - reading and checking the coordinator's manifest
 * (manifest.h).  Every error names the file and the JSON path of the
 * offending field and says what would be accepted.
 */
#include "manifest.h"

#include "../common/err.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_VALIDITY_S 60u
#define MAX_VALIDITY_S 31536000u   /* one year */

typedef struct mparse {
    const char *path;
    char *err;
    size_t errlen;
} mparse;

__attribute__((format(printf, 2, 3)))
static int bad(mparse *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "manifest %s: %s", p->path, msg);
    return CL_ECONFIG;
}

const char *coord_mode_name(repl_mode mode)
{
    return mode == REPL_EVENTUAL ? "eventual" : "strong";
}

int coord_addr_host(const char *addr, char *host, size_t cap)
{
    const char *p;
    size_t hlen;
    if (!addr)
        return -1;
    for (const char *c = addr; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f)
            return -1;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        hlen = (size_t)(close - addr - 1);
        addr++;
        p = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || strchr(addr, ':') != colon)
            return -1;
        hlen = (size_t)(colon - addr);
        p = colon + 1;
    }
    if (hlen == 0 || hlen >= cap || *p == '\0' || strlen(p) > 5 ||
        strspn(p, "0123456789") != strlen(p))
        return -1;
    long port = strtol(p, NULL, 10);
    if (port < 1 || port > 65535)
        return -1;
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    return 0;
}

/* Fails on any key of obj not in `allowed` (NULL-terminated). */
static int only_keys(mparse *p, json_t *obj, const char *where, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], k) != 0)
            i++;
        if (!allowed[i])
            return bad(p, "%s: unknown field \"%s\"", where, k);
    }
    return CL_OK;
}

/* Parses a list of 64-hex values or "self" into the policy via add(). */
static int hex_list(mparse *p, json_t *arr, const char *name, const uint8_t self[32],
                    attest_policy *pol, int (*add)(attest_policy *, const uint8_t *))
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return bad(p, "\"%s\" must be a non-empty array of 64-digit hex strings or \"self\"", name);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *s = json_string_value(v);
        uint8_t h[32];
        if (s && strcmp(s, "self") == 0)
            memcpy(h, self, 32);
        else if (!s || attest_unhex(s, h, 32) != 0)
            return bad(p, "%s[%zu]: expected 64 hex digits (a SHA-256) or \"self\"", name, i);
        if (add(pol, h) != CL_OK)
            return CL_ENOMEM;
    }
    return CL_OK;
}

static int copy_addr(mparse *p, json_t *node, const char *field, size_t i, char *dst)
{
    json_t *v = json_object_get(node, field);
    if (!v || json_is_null(v))
        return CL_OK;
    const char *s = json_string_value(v);
    char host[COORD_MAX_ADDR];
    if (!s || strlen(s) >= COORD_MAX_ADDR || coord_addr_host(s, host, sizeof host) != 0)
        return bad(p, "nodes[%zu].%s: expected \"HOST:PORT\" (e.g. 127.0.0.1:7001)", i, field);
    strcpy(dst, s);
    return CL_OK;
}

static int parse_nodes(mparse *p, json_t *arr, coord_manifest *m)
{
    static const char *const keys[] = { "id", "peer", "memcached", "http", NULL };
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return bad(p, "\"nodes\" must be a non-empty array of {\"id\": N, ...}");
    if (json_array_size(arr) > REPL_MAX_NODES)
        return bad(p, "\"nodes\" lists %zu nodes; at most %d are supported",
                   json_array_size(arr), REPL_MAX_NODES);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        char where[32];
        snprintf(where, sizeof where, "nodes[%zu]", i);
        if (!json_is_object(v))
            return bad(p, "%s: expected an object {\"id\": N, ...}", where);
        int rc = only_keys(p, v, where, keys);
        if (rc != CL_OK)
            return rc;
        json_t *id = json_object_get(v, "id");
        json_int_t n = json_is_integer(id) ? json_integer_value(id) : 0;
        if (n < 1 || n > REPL_MAX_NODES)
            return bad(p, "%s.id: expected a node id 1..%d", where, REPL_MAX_NODES);
        if (coord_manifest_node_get(m, (int)n))
            return bad(p, "%s.id: node %d is listed twice", where, (int)n);
        coord_manifest_node *node = &m->nodes[m->n_nodes];
        memset(node, 0, sizeof *node);
        node->id = (int)n;
        if ((rc = copy_addr(p, v, "peer", i, node->peer)) != CL_OK ||
            (rc = copy_addr(p, v, "memcached", i, node->memcached)) != CL_OK ||
            (rc = copy_addr(p, v, "http", i, node->http)) != CL_OK)
            return rc;
        m->n_nodes++;
    }
    return CL_OK;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < COORD_MAX_TENANT_NAME &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int parse_namespaces(mparse *p, json_t *arr, const char *where, coord_tenant *t)
{
    static const char *const keys[] = { "prefix", "mode", NULL };
    size_t n = arr ? json_array_size(arr) : 1;
    if (arr && (!json_is_array(arr) || n == 0))
        return bad(p, "%s.namespaces: expected a non-empty array of {\"prefix\", \"mode\"}", where);
    t->ns = calloc(n, sizeof *t->ns);
    if (!t->ns)
        return CL_ENOMEM;
    if (!arr) {                          /* default: everything strong */
        t->ns[0].prefix = strdup("");
        t->ns[0].mode = REPL_STRONG;
        t->n_ns = 1;
        return t->ns[0].prefix ? CL_OK : CL_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char w[96];
        snprintf(w, sizeof w, "%s.namespaces[%zu]", where, i);
        if (!json_is_object(v))
            return bad(p, "%s: expected {\"prefix\": \"...\", \"mode\": \"strong\"|\"eventual\"}", w);
        int rc = only_keys(p, v, w, keys);
        if (rc != CL_OK)
            return rc;
        const char *prefix = json_string_value(json_object_get(v, "prefix"));
        json_t *modev = json_object_get(v, "mode");
        const char *mode = modev ? json_string_value(modev) : "strong";
        if (!prefix || strlen(prefix) > 200)
            return bad(p, "%s.prefix: expected a string (a key prefix, \"\" = every key)", w);
        if (!mode || (strcmp(mode, "strong") != 0 && strcmp(mode, "eventual") != 0))
            return bad(p, "%s.mode: expected \"strong\" or \"eventual\"", w);
        for (size_t j = 0; j < t->n_ns; j++)
            if (strcmp(t->ns[j].prefix, prefix) == 0)
                return bad(p, "%s.prefix: \"%s\" is listed twice", w, prefix);
        if (!(t->ns[i].prefix = strdup(prefix)))
            return CL_ENOMEM;
        t->ns[i].mode = strcmp(mode, "eventual") == 0 ? REPL_EVENTUAL : REPL_STRONG;
        t->n_ns++;
    }
    return CL_OK;
}

static int parse_tenants(mparse *p, json_t *arr, coord_manifest *m)
{
    static const char *const keys[] = { "name", "token", "namespaces", NULL };
    if (!arr)
        return CL_OK;
    if (!json_is_array(arr))
        return bad(p, "\"tenants\" must be an array of {\"name\", \"token\", \"namespaces\"}");
    size_t n = json_array_size(arr);
    if (n && !(m->tenants = calloc(n, sizeof *m->tenants)))
        return CL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        char where[32];
        snprintf(where, sizeof where, "tenants[%zu]", i);
        if (!json_is_object(v))
            return bad(p, "%s: expected an object {\"name\": ..., ...}", where);
        int rc = only_keys(p, v, where, keys);
        if (rc != CL_OK)
            return rc;
        const char *name = json_string_value(json_object_get(v, "name"));
        if (!name || !name_ok(name))
            return bad(p, "%s.name: expected 1 to %d letters, digits, '_', '.' or '-'", where,
                       COORD_MAX_TENANT_NAME - 1);
        if (coord_manifest_tenant(m, name))
            return bad(p, "%s.name: tenant \"%s\" is listed twice", where, name);
        json_t *tok = json_object_get(v, "token");
        const char *token = tok ? json_string_value(tok) : NULL;
        if (tok && (!token || strlen(token) < 8 || strlen(token) > 1024))
            return bad(p, "%s.token: expected a string of 8 to 1024 characters", where);
        coord_tenant *t = &m->tenants[m->n_tenants++];
        if (!(t->name = strdup(name)) || (token && !(t->token = strdup(token))))
            return CL_ENOMEM;
        if ((rc = parse_namespaces(p, json_object_get(v, "namespaces"), where, t)) != CL_OK)
            return rc;
    }
    return CL_OK;
}

int coord_manifest_load(const char *path, const uint8_t self_measurement[ATTEST_HASH_LEN],
                        const uint8_t self_platform_key[ATTEST_PLATFORM_KEY_LEN],
                        coord_manifest *m, char *err, size_t errlen)
{
    static const char *const keys[] = { "measurements", "platform_keys", "nodes", "tenants",
                                        "cert_validity_s", NULL };
    mparse p = { path, err, errlen };
    memset(m, 0, sizeof *m);
    attest_policy_init(&m->policy);
    m->policy.allowed = "allowed by the manifest";
    m->cert_validity_s = COORD_DEFAULT_VALIDITY_S;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    int rc;
    if (!root) {
        if (je.line <= 0)
            snprintf(err, errlen, "cannot read manifest %s: %s", path, je.text);
        else
            snprintf(err, errlen, "manifest %s:%d:%d: %s", path, je.line, je.column, je.text);
        return CL_ECONFIG;
    }
    if (!json_is_object(root)) {
        rc = bad(&p, "expected a JSON object");
        goto out;
    }
    if ((rc = only_keys(&p, root, "top level", keys)) != CL_OK)
        goto out;
    rc = hex_list(&p, json_object_get(root, "measurements"), "measurements", self_measurement,
                  &m->policy, attest_policy_add_measurement);
    if (rc != CL_OK)
        goto out;
    json_t *pk = json_object_get(root, "platform_keys");
    if (pk)
        rc = hex_list(&p, pk, "platform_keys", self_platform_key, &m->policy,
                      attest_policy_add_platform_key);
    else
        rc = attest_policy_add_platform_key(&m->policy, self_platform_key);
    if (rc != CL_OK)
        goto out;
    if ((rc = parse_nodes(&p, json_object_get(root, "nodes"), m)) != CL_OK ||
        (rc = parse_tenants(&p, json_object_get(root, "tenants"), m)) != CL_OK)
        goto out;
    json_t *val = json_object_get(root, "cert_validity_s");
    if (val) {
        json_int_t s = json_is_integer(val) ? json_integer_value(val) : 0;
        if (s < MIN_VALIDITY_S || s > MAX_VALIDITY_S) {
            rc = bad(&p, "cert_validity_s: expected seconds between %u and %u", MIN_VALIDITY_S,
                     MAX_VALIDITY_S);
            goto out;
        }
        m->cert_validity_s = (unsigned)s;
    }
out:
    json_decref(root);
    if (rc == CL_ENOMEM)
        snprintf(err, errlen, "manifest %s: out of memory", path);
    if (rc != CL_OK)
        coord_manifest_fini(m);
    return rc;
}

void coord_manifest_fini(coord_manifest *m)
{
    attest_policy_fini(&m->policy);
    for (size_t i = 0; i < m->n_tenants; i++) {
        coord_tenant *t = &m->tenants[i];
        free(t->name);
        if (t->token) {
            OPENSSL_cleanse(t->token, strlen(t->token));
            free(t->token);
        }
        for (size_t j = 0; j < t->n_ns; j++)
            free(t->ns[j].prefix);
        free(t->ns);
    }
    free(m->tenants);
    memset(m, 0, sizeof *m);
}

const coord_manifest_node *coord_manifest_node_get(const coord_manifest *m, int id)
{
    for (size_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].id == id)
            return &m->nodes[i];
    return NULL;
}

const coord_tenant *coord_manifest_tenant(const coord_manifest *m, const char *name)
{
    for (size_t i = 0; i < m->n_tenants; i++)
        if (strcmp(m->tenants[i].name, name) == 0)
            return &m->tenants[i];
    return NULL;
}
