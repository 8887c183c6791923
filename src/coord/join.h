/*
 * join.h - a node joining the cluster: attest the coordinator, prove our
 * own measurement with a quote over a fresh TLS key and the coordinator's
 * challenge, and receive everything the node needs to serve as a member.
 *
 * Sequence (coord.h has the protocol):
 *   1. coord_client_open: the coordinator's quote over our random nonce
 *      must show an allowed measurement (default: ours - it is the same
 *      binary) on our platform, for the TLS key of this connection;
 *   2. "nonce": the coordinator's challenge;
 *   3. a fresh EC P-256 key in memory, our quote over (its hash, the
 *      challenge), "join";
 *   4. the returned certificate must be for our key, issued by the CA
 *      the attested coordinator uses, and carry our quote.
 * The node's private key never leaves this process's memory.
 *
 * Called once by cloisterd at start-up (daemon/cluster.c); the result is
 * then read-only and outlives every user (TLS contexts, the replication
 * transport).
 */
#ifndef CLOISTER_COORD_JOIN_H
#define CLOISTER_COORD_JOIN_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "manifest.h"

typedef struct coord_join_config {
    const char *coordinator;             /* "HOST:PORT" */
    int node_id;                         /* 1..REPL_MAX_NODES */
    const char *peer;                    /* this node's addresses (NULL = none) */
    const char *memcached;
    const char *http;
    const char *platform_dir;
    const uint8_t *measurement;          /* NULL: this binary.  Tests: a stand-in. */
    const uint8_t *expect_coordinator;   /* NULL: our own measurement */
    int timeout_ms;                      /* 0: 10 s */
} coord_join_config;

typedef struct coord_peer_info {
    int id;
    char peer[COORD_MAX_ADDR];           /* "" = not known */
    char memcached[COORD_MAX_ADDR];
    char http[COORD_MAX_ADDR];
} coord_peer_info;

/* A namespace of a tenant, as replicated. */
typedef struct coord_join_ns {
    char tenant[COORD_MAX_TENANT_NAME];
    char *prefix;
    repl_mode mode;
} coord_join_ns;

typedef struct coord_join_result {
    int self;                            /* our node id */
    int n;                               /* cluster size (replicas) */
    uint64_t epoch;                      /* our incarnation: 1, 2, ... */
    int recover;                         /* 1: we joined before: recover state first */
    X509 *cert;                          /* our certificate (quote inside) */
    EVP_PKEY *key;                       /* its private key (memory only) */
    X509 *ca;                            /* the cluster CA */
    coord_peer_info nodes[REPL_MAX_NODES];
    size_t n_nodes;
    attest_policy policy;                /* for attest_verify_peer on peer links */
    coord_join_ns *ns;                   /* every tenant's namespaces */
    size_t n_ns;
    unsigned cert_validity_s;
    uint8_t measurement[ATTEST_HASH_LEN];            /* ours */
    uint8_t coordinator_measurement[ATTEST_HASH_LEN];
} coord_join_result;

/*
 * Joins.  CL_OK with *out filled (release with coord_join_result_fini),
 * or a CL_E* code with why saying what went wrong - for a refusal, the
 * coordinator's own reason ("measurement 3fa1c2d4e5f6.. is not allowed by
 * the manifest").  CL_EATTEST: attestation failed (either side);
 * CL_EIO / CL_ETLS / CL_EAGAIN: the coordinator could not be reached;
 * CL_ECONFIG: the coordinator refused our id or addresses; CL_EPROTO.
 */
int coord_join(const coord_join_config *cfg, coord_join_result *out, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* Frees everything (the key is cleansed).  Safe on a zeroed struct. */
void coord_join_result_fini(coord_join_result *r);

#endif
