/*
 * manifest.h - the coordinator's manifest: which code may join the
 * cluster, which nodes exist, which tenants may get client certificates
 * and how each tenant's namespaces are replicated.
 *
 * A JSON file (docs/ATTESTATION.md has an example):
 *   {
 *     "measurements":  ["<64 hex>" | "self", ...],     required, non-empty
 *     "platform_keys": ["<64 hex>" | "self", ...],     optional, default ["self"]
 *     "nodes": [{"id": 1, "peer": "H:P", "memcached": "H:P", "http": "H:P"}, ...],
 *                                                      required, ids 1..REPL_MAX_NODES
 *     "tenants": [{"name": "default", "token": "...",
 *                  "namespaces": [{"prefix": "", "mode": "strong"}]}, ...],
 *                                                      optional
 *     "cert_validity_s": 86400                         optional, 60 .. 31536000
 *   }
 * "self" means the coordinator's own measurement (it is the same binary
 * as the nodes) or its own platform's key.  Node addresses are optional;
 * when given, a joining node must report the same ones.  A tenant without
 * a token cannot obtain client certificates.  Namespaces default to one
 * strong namespace covering every key (prefix "").  Unknown fields are
 * errors, so a typo is not silently ignored.
 *
 * Tokens are secrets: the manifest file should be readable by the
 * coordinator's user only; tokens are never logged or sent to nodes.
 *
 * Read once by coord.c at start-up; immutable afterwards.
 */
#ifndef CLOISTER_COORD_MANIFEST_H
#define CLOISTER_COORD_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "../repl/repl.h"
#include "../trust/attest.h"

#define COORD_MAX_ADDR 256        /* "HOST:PORT" strings, with the NUL */
#define COORD_MAX_TENANT_NAME 64
#define COORD_DEFAULT_VALIDITY_S 86400u

typedef struct coord_manifest_node {
    int id;                             /* 1..REPL_MAX_NODES */
    char peer[COORD_MAX_ADDR];          /* "" = not fixed by the manifest */
    char memcached[COORD_MAX_ADDR];
    char http[COORD_MAX_ADDR];
} coord_manifest_node;

typedef struct coord_namespace {
    char *prefix;                       /* key prefix; "" = every key */
    repl_mode mode;
} coord_namespace;

typedef struct coord_tenant {
    char *name;
    char *token;                        /* NULL: no client certificates */
    coord_namespace *ns;
    size_t n_ns;
} coord_tenant;

typedef struct coord_manifest {
    attest_policy policy;               /* allowed measurements, trusted platforms */
    coord_manifest_node nodes[REPL_MAX_NODES];
    size_t n_nodes;                     /* the cluster size n */
    coord_tenant *tenants;
    size_t n_tenants;
    unsigned cert_validity_s;
} coord_manifest;

/*
 * Reads and checks the manifest at path.  self_measurement and
 * self_platform_key are what "self" stands for.  CL_OK, or CL_ECONFIG
 * with err naming the file and the field ("manifest m.json: nodes[1].id:
 * 9 is not a node id (1..7)"), CL_ENOMEM.
 */
int coord_manifest_load(const char *path, const uint8_t self_measurement[ATTEST_HASH_LEN],
                        const uint8_t self_platform_key[ATTEST_PLATFORM_KEY_LEN],
                        coord_manifest *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void coord_manifest_fini(coord_manifest *m);

/* The manifest's entry for node id / tenant name, or NULL. */
const coord_manifest_node *coord_manifest_node_get(const coord_manifest *m, int id);
const coord_tenant *coord_manifest_tenant(const coord_manifest *m, const char *name);

/* Splits "HOST:PORT" / "[V6]:PORT" (port 1..65535; HOST non-empty, no
 * spaces or control bytes) and copies HOST into host.  0, or -1 when
 * addr is not such an address or host does not fit. */
int coord_addr_host(const char *addr, char *host, size_t cap);

/* "strong" / "eventual". */
const char *coord_mode_name(repl_mode mode);

#endif
