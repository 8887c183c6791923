/*
 * join.c - the node side of joining the cluster (join.h).
 */
#include "join.h"
#include "client.h"

#include "../common/err.h"
#include "../trust/cert.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 4, 5)))
static int fail(int rc, char *why, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return rc;
}

void coord_join_result_fini(coord_join_result *r)
{
    X509_free(r->cert);
    EVP_PKEY_free(r->key);
    X509_free(r->ca);
    attest_policy_fini(&r->policy);
    for (size_t i = 0; i < r->n_ns; i++)
        free(r->ns[i].prefix);
    free(r->ns);
    memset(r, 0, sizeof *r);
}

static int copy_addr(json_t *o, const char *k, char *dst)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (!s || strlen(s) >= COORD_MAX_ADDR)
        return -1;
    strcpy(dst, s);
    return 0;
}

static int parse_hex_list(json_t *arr, attest_policy *pol,
                          int (*add)(attest_policy *, const uint8_t *))
{
    size_t i;
    json_t *v;
    if (!json_is_array(arr))
        return -1;
    json_array_foreach(arr, i, v) {
        uint8_t h[32];
        if (attest_unhex(json_string_value(v), h, 32) != 0 || add(pol, h) != CL_OK)
            return -1;
    }
    return 0;
}

static int parse_tenants(json_t *arr, coord_join_result *r)
{
    size_t i, j, total = 0;
    json_t *t, *ns;
    if (!json_is_array(arr))
        return -1;
    json_array_foreach(arr, i, t)
        total += json_array_size(json_object_get(t, "namespaces"));
    if (total && !(r->ns = calloc(total, sizeof *r->ns)))
        return -1;
    json_array_foreach(arr, i, t) {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (!name || strlen(name) >= COORD_MAX_TENANT_NAME)
            return -1;
        json_array_foreach(json_object_get(t, "namespaces"), j, ns) {
            const char *prefix = json_string_value(json_object_get(ns, "prefix"));
            const char *mode = json_string_value(json_object_get(ns, "mode"));
            if (!prefix || !mode || r->n_ns >= total)
                return -1;
            coord_join_ns *d = &r->ns[r->n_ns];
            snprintf(d->tenant, sizeof d->tenant, "%s", name);
            d->mode = strcmp(mode, "eventual") == 0 ? REPL_EVENTUAL : REPL_STRONG;
            if (!(d->prefix = strdup(prefix)))
                return -1;
            r->n_ns++;
        }
    }
    return 0;
}

/* Fills r from the join reply (everything but key and ca). */
static int parse_reply(json_t *o, coord_join_result *r, char *why, size_t cap)
{
    json_int_t epoch = json_integer_value(json_object_get(o, "epoch"));
    json_int_t n = json_integer_value(json_object_get(o, "n"));
    json_t *nodes = json_object_get(o, "nodes");
    const char *pem = json_string_value(json_object_get(o, "certificate"));
    size_t i;
    json_t *v;
    if (epoch < 1 || n < 1 || n > REPL_MAX_NODES || !json_is_array(nodes) ||
        json_array_size(nodes) > REPL_MAX_NODES || !pem || cert_from_pem(pem, &r->cert) != CL_OK)
        return fail(CL_EPROTO, why, cap, "the coordinator's join reply is malformed");
    r->epoch = (uint64_t)epoch;
    r->n = (int)n;
    r->recover = json_is_true(json_object_get(o, "recover"));
    r->cert_validity_s = (unsigned)json_integer_value(json_object_get(o, "cert_validity_s"));
    json_array_foreach(nodes, i, v) {
        coord_peer_info *p = &r->nodes[r->n_nodes];
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id < 1 || id > REPL_MAX_NODES || copy_addr(v, "peer", p->peer) ||
            copy_addr(v, "memcached", p->memcached) || copy_addr(v, "http", p->http))
            return fail(CL_EPROTO, why, cap, "the coordinator's node list is malformed");
        p->id = (int)id;
        r->n_nodes++;
    }
    if (parse_hex_list(json_object_get(o, "measurements"), &r->policy,
                       attest_policy_add_measurement) != 0 ||
        parse_hex_list(json_object_get(o, "platform_keys"), &r->policy,
                       attest_policy_add_platform_key) != 0 ||
        parse_tenants(json_object_get(o, "tenants"), r) != 0)
        return fail(CL_EPROTO, why, cap, "the coordinator's policy or tenant list is malformed");
    return CL_OK;
}

/* The certificate must be for our key, from the attested CA, with our
 * quote, and pass the policy every peer will apply to it. */
static int check_certificate(coord_join_result *r, int id, char *why, size_t cap)
{
    char detail[ATTEST_WHY_LEN];
    int got_id = 0;
    if (X509_check_private_key(r->cert, r->key) != 1 || !cert_issued_by(r->cert, r->ca))
        return fail(CL_EATTEST, why, cap, "the coordinator issued a certificate that is not "
                    "for this node's key or not from the cluster CA");
    if (attest_verify_peer(r->cert, &r->policy, &got_id, detail, sizeof detail) != CL_OK)
        return fail(CL_EATTEST, why, cap, "the issued certificate would not pass attestation "
                    "by peers: %s", detail);
    if (got_id != id)
        return fail(CL_EATTEST, why, cap, "the issued certificate names node %d, not %d", got_id,
                    id);
    return CL_OK;
}

int coord_join(const coord_join_config *cfg, coord_join_result *r, char *why, size_t cap)
{
    memset(r, 0, sizeof *r);
    attest_policy_init(&r->policy);
    r->policy.allowed = "allowed by the manifest";
    attest_platform *plat = NULL;
    coord_client *cc = NULL;
    attest_policy expect;
    attest_policy_init(&expect);
    expect.allowed = cfg->expect_coordinator ? "the one given by --expect-coordinator"
                                             : "this node's own (the coordinator must run the "
                                               "same binary, or give --expect-coordinator)";
    json_t *req = NULL, *reply = NULL;
    char *pub_pem = NULL;
    int rc;

    if ((rc = attest_platform_open(cfg->platform_dir, cfg->measurement, &plat)) != CL_OK) {
        fail(rc, why, cap, "cannot open the platform in %s: %s", cfg->platform_dir,
             cl_strerror(rc));
        goto out;
    }
    memcpy(r->measurement, attest_platform_measurement(plat), ATTEST_HASH_LEN);
    const uint8_t *want = cfg->expect_coordinator ? cfg->expect_coordinator : r->measurement;
    if (attest_policy_add_measurement(&expect, want) != CL_OK ||
        attest_policy_add_platform_key(&expect, attest_platform_key(plat)) != CL_OK) {
        rc = fail(CL_ENOMEM, why, cap, "out of memory");
        goto out;
    }
    if ((rc = coord_client_open(cfg->coordinator, &expect, cfg->timeout_ms ? cfg->timeout_ms : 10000,
                                &cc, why, cap)) != CL_OK)
        goto out;
    memcpy(r->coordinator_measurement, coord_client_quote(cc)->measurement, ATTEST_HASH_LEN);
    if (!X509_up_ref(coord_client_ca(cc))) {
        rc = fail(CL_ENOMEM, why, cap, "out of memory");
        goto out;
    }
    r->ca = coord_client_ca(cc);

    /* The challenge, then our quote over it and a fresh key. */
    req = json_pack("{s:s}", "op", "nonce");
    if (!req || (rc = coord_client_call(cc, req, &reply, why, cap)) != CL_OK)
        goto out_rc;
    uint8_t nonce[ATTEST_NONCE_LEN], keyhash[ATTEST_HASH_LEN], raw[ATTEST_QUOTE_LEN];
    if (attest_unhex(json_string_value(json_object_get(reply, "nonce")), nonce, sizeof nonce)) {
        rc = fail(CL_EPROTO, why, cap, "the coordinator sent a malformed nonce");
        goto out;
    }
    attest_quote q;
    char qhex[2 * ATTEST_QUOTE_LEN + 1];
    if (cert_key_generate(&r->key) != CL_OK || attest_pubkey_hash(r->key, keyhash) != CL_OK ||
        attest_quote_create(plat, keyhash, nonce, &q) != CL_OK ||
        cert_pubkey_to_pem(r->key, &pub_pem) != CL_OK) {
        rc = fail(CL_ECRYPTO, why, cap, "cannot create this node's key and quote");
        goto out;
    }
    attest_quote_encode(&q, raw);
    attest_hex(raw, sizeof raw, qhex);
    json_decref(req);
    json_decref(reply);
    reply = NULL;
    req = json_pack("{s:s, s:i, s:s, s:s}", "op", "join", "node_id", cfg->node_id,
                    "public_key", pub_pem, "quote", qhex);
    if (req && cfg->peer)
        json_object_set_new(req, "peer", json_string(cfg->peer));
    if (req && cfg->memcached)
        json_object_set_new(req, "memcached", json_string(cfg->memcached));
    if (req && cfg->http)
        json_object_set_new(req, "http", json_string(cfg->http));
    if (!req || (rc = coord_client_call(cc, req, &reply, why, cap)) != CL_OK)
        goto out_rc;
    r->self = cfg->node_id;
    if ((rc = parse_reply(reply, r, why, cap)) == CL_OK)
        rc = check_certificate(r, cfg->node_id, why, cap);
    goto out;
out_rc:
    if (!req)
        rc = fail(CL_ENOMEM, why, cap, "out of memory");
out:
    free(pub_pem);
    json_decref(req);
    json_decref(reply);
    coord_client_close(cc);
    attest_policy_fini(&expect);
    attest_platform_close(plat);
    if (rc != CL_OK)
        coord_join_result_fini(r);
    return rc;
}
