/*
 * coord.c - the coordinator service (coord.h): set-up, the JSON-lines
 * protocol on net/server.c's event loop, and the operations.
 *
 * Operations are a table {name, handler}; a handler returns the reply
 * object, or NULL with a code and a one-line reason that becomes
 * {"error", "code"}.  Handlers run on the single network worker; the
 * member table is additionally guarded by c->lock.
 */
#include "coord.h"
#include "manifest.h"
#include "members.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../net/proto.h"
#include "../net/server.h"
#include "../net/tls.h"
#include "../trust/ca.h"
#include "../trust/cert.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char MOD[] = "coord";

#define COORD_CERT_VALIDITY_S (365LL * 86400)

struct coord {
    coord_manifest manifest;
    attest_platform *platform;
    cluster_ca *ca;
    char *ca_pem;
    EVP_PKEY *key;                 /* this coordinator's TLS key (memory only) */
    uint8_t key_hash[ATTEST_HASH_LEN];
    X509 *cert;
    char *cert_pem;
    SSL_CTX *ssl;
    net_proto proto;
    net_server *srv;
    pthread_mutex_t lock;          /* members */
    coord_members members;
};

typedef struct coord_session {
    uint8_t nonce[ATTEST_NONCE_LEN];
    int has_nonce;
} coord_session;

/* A handler's failure: code and reason. */
typedef struct op_err {
    int code;
    char why[ATTEST_WHY_LEN + 128];
} op_err;

__attribute__((format(printf, 3, 4)))
static json_t *refuse(op_err *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->why, sizeof e->why, fmt, ap);
    va_end(ap);
    e->code = code;
    return NULL;
}

const uint8_t *coord_measurement(const coord *c)
{
    return attest_platform_measurement(c->platform);
}

const uint8_t *coord_platform_key(const coord *c)
{
    return attest_platform_key(c->platform);
}

char *coord_listen_name(const coord *c, char *buf, size_t cap)
{
    return net_server_listener_name(c->srv, 0, buf, cap);
}

/* ---- helpers ----------------------------------------------------------------------- */

static json_t *hex_string(const uint8_t *p, size_t n)
{
    char hex[2 * ATTEST_QUOTE_LEN + 1];
    attest_hex(p, n, hex);
    return json_string(hex);
}

/* A required string field of at most max bytes, or NULL. */
static const char *str_field(json_t *req, const char *k, size_t max)
{
    const char *s = json_string_value(json_object_get(req, k));
    return s && strlen(s) <= max ? s : NULL;
}

/* Parses the public_key field: an EC key in PEM. */
static EVP_PKEY *pubkey_field(json_t *req, op_err *e)
{
    const char *pem = str_field(req, "public_key", 8192);
    EVP_PKEY *key = NULL;
    if (!pem || cert_pubkey_from_pem(pem, &key) != CL_OK) {
        refuse(e, CL_EINVAL, "public_key: expected a PEM public key");
        return NULL;
    }
    if (!EVP_PKEY_is_a(key, "EC")) {
        EVP_PKEY_free(key);
        refuse(e, CL_EINVAL, "public_key: expected an EC (P-256) key");
        return NULL;
    }
    return key;
}

/* Adds host to the list unless it is a wildcard or already there. */
static void add_host(const char **hosts, size_t *n, size_t cap, const char *host)
{
    if (!host[0] || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 ||
        strcmp(host, "::") == 0)
        return;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(hosts[i], host) == 0)
            return;
    if (*n < cap)
        hosts[(*n)++] = host;
}

static json_t *error_reply(const op_err *e)
{
    return json_pack("{s:s, s:i}", "error", e->why, "code", e->code);
}

/* ---- operations ---------------------------------------------------------------------- */

static json_t *op_nonce(coord *c, coord_session *s, json_t *req, op_err *e)
{
    if (RAND_bytes(s->nonce, sizeof s->nonce) != 1)
        return refuse(e, CL_ECRYPTO, "cannot draw a random nonce");
    s->has_nonce = 1;
    return json_pack("{s:o}", "nonce", hex_string(s->nonce, sizeof s->nonce));
}

static json_t *op_quote(coord *c, coord_session *s, json_t *req, op_err *e)
{
    uint8_t nonce[ATTEST_NONCE_LEN], raw[ATTEST_QUOTE_LEN];
    if (attest_unhex(str_field(req, "nonce", 64), nonce, sizeof nonce) != 0)
        return refuse(e, CL_EINVAL, "nonce: expected 64 hex digits (32 random bytes)");
    attest_quote q;
    if (attest_quote_create(c->platform, c->key_hash, nonce, &q) != CL_OK)
        return refuse(e, CL_ECRYPTO, "cannot create a quote");
    attest_quote_encode(&q, raw);
    return json_pack("{s:o, s:s, s:s}", "quote", hex_string(raw, sizeof raw), "certificate",
                     c->cert_pem, "ca", c->ca_pem);
}

/* The join request's address `field`, checked against the manifest: a
 * manifest address must be reported unchanged; a missing report takes
 * the manifest's.  *out points at the winning string ("" = unknown). */
static int join_addr(json_t *req, const char *field, const char *manifest_value, int id,
                     const char **out, op_err *e)
{
    json_t *v = json_object_get(req, field);
    const char *s = v && !json_is_null(v) ? json_string_value(v) : NULL;
    char host[COORD_MAX_ADDR];
    if (v && !json_is_null(v) &&
        (!s || strlen(s) >= COORD_MAX_ADDR || coord_addr_host(s, host, sizeof host) != 0)) {
        refuse(e, CL_EINVAL, "%s: expected \"HOST:PORT\"", field);
        return -1;
    }
    if (manifest_value[0] && s && strcmp(s, manifest_value) != 0) {
        refuse(e, CL_ECONFIG, "node %d reports %s address %s but the manifest says %s", id, field,
               s, manifest_value);
        return -1;
    }
    *out = s ? s : manifest_value;
    return 0;
}

static json_t *nodes_json(coord *c)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < c->manifest.n_nodes; i++) {
        const coord_manifest_node *mn = &c->manifest.nodes[i];
        const coord_member *m = &c->members.m[mn->id];
        json_t *o = json_pack("{s:i, s:s, s:s, s:s}", "id", mn->id,
                              "peer", mn->peer[0] ? mn->peer : m->peer,
                              "memcached", mn->memcached[0] ? mn->memcached : m->memcached,
                              "http", mn->http[0] ? mn->http : m->http);
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static json_t *policy_json(const uint8_t (*list)[32], size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (json_array_append_new(arr, hex_string(list[i], 32)) != 0) {
            json_decref(arr);
            return NULL;
        }
    return arr;
}

static json_t *tenants_json(const coord_manifest *m)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < m->n_tenants; i++) {
        const coord_tenant *t = &m->tenants[i];
        json_t *ns = json_array();
        for (size_t j = 0; ns && j < t->n_ns; j++)
            json_array_append_new(ns, json_pack("{s:s, s:s}", "prefix", t->ns[j].prefix, "mode",
                                                coord_mode_name(t->ns[j].mode)));
        json_t *o = ns ? json_pack("{s:s, s:o}", "name", t->name, "namespaces", ns) : NULL;
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* Issues a certificate of `validity` seconds from now (a minute of slack
 * before, for clocks that disagree a little). */
static int issue(coord *c, EVP_PKEY *key, const char *cn, const char *const *hosts,
                 size_t n_hosts, const attest_quote *q, unsigned usage, int64_t validity,
                 char **pem)
{
    int64_t now = (int64_t)time(NULL);
    ca_request r = { .key = key, .common_name = cn, .hosts = hosts, .n_hosts = n_hosts,
                     .quote = q, .usage = usage, .not_before = now - 60,
                     .not_after = now + validity };
    X509 *x = NULL;
    int rc = ca_issue(c->ca, &r, &x);
    if (rc == CL_OK)
        rc = cert_to_pem(x, pem);
    X509_free(x);
    return rc;
}

static json_t *op_join(coord *c, coord_session *s, json_t *req, op_err *e)
{
    /* One join per challenge, whatever its outcome. */
    uint8_t nonce[ATTEST_NONCE_LEN];
    int had_nonce = s->has_nonce;
    memcpy(nonce, s->nonce, sizeof nonce);
    s->has_nonce = 0;

    json_t *idv = json_object_get(req, "node_id");
    int id = json_is_integer(idv) ? (int)json_integer_value(idv) : 0;
    const coord_manifest_node *mn = json_is_integer(idv) && json_integer_value(idv) > 0 &&
                                    json_integer_value(idv) <= REPL_MAX_NODES
                                        ? coord_manifest_node_get(&c->manifest, id) : NULL;
    if (!json_is_integer(idv))
        return refuse(e, CL_ECONFIG, "node_id: expected an integer");
    if (!mn)
        return refuse(e, CL_ECONFIG, "node %lld is not a node of the manifest",
                      (long long)json_integer_value(idv));
    if (!had_nonce)
        return refuse(e, CL_EATTEST, "no challenge on this connection: ask for a nonce first");
    const char *peer, *memcached, *http;
    if (join_addr(req, "peer", mn->peer, id, &peer, e) ||
        join_addr(req, "memcached", mn->memcached, id, &memcached, e) ||
        join_addr(req, "http", mn->http, id, &http, e))
        return NULL;

    uint8_t raw[ATTEST_QUOTE_LEN], keyhash[ATTEST_HASH_LEN];
    attest_quote q;
    if (attest_unhex(str_field(req, "quote", 2 * ATTEST_QUOTE_LEN), raw, sizeof raw) != 0)
        return refuse(e, CL_EATTEST, "quote: expected %d hex digits", 2 * ATTEST_QUOTE_LEN);
    if (attest_quote_decode(raw, sizeof raw, &q, e->why, sizeof e->why) != CL_OK) {
        e->code = CL_EATTEST;
        return NULL;
    }
    EVP_PKEY *key = pubkey_field(req, e);
    if (!key)
        return NULL;
    json_t *reply = NULL;
    char *pem = NULL;
    if (attest_pubkey_hash(key, keyhash) != CL_OK) {
        refuse(e, CL_ECRYPTO, "cannot hash the public key");
        goto out;
    }
    if (attest_quote_verify(&q, &c->manifest.policy, keyhash, nonce, e->why, sizeof e->why) !=
        CL_OK) {
        e->code = CL_EATTEST;
        goto out;
    }

    /* Certificate names: loopback, and every host the node is reached at. */
    char hostbuf[3][COORD_MAX_ADDR];
    const char *hosts[5];
    size_t n_hosts = 0;
    add_host(hosts, &n_hosts, 5, "127.0.0.1");
    add_host(hosts, &n_hosts, 5, "localhost");
    const char *addrs[3] = { peer, memcached, http };
    for (int i = 0; i < 3; i++)
        if (addrs[i][0] && coord_addr_host(addrs[i], hostbuf[i], sizeof hostbuf[i]) == 0)
            add_host(hosts, &n_hosts, 5, hostbuf[i]);
    char cn[32];
    snprintf(cn, sizeof cn, "%s%d", ATTEST_NODE_CN_PREFIX, id);
    if (issue(c, key, cn, hosts, n_hosts, &q, CA_USAGE_SERVER | CA_USAGE_CLIENT,
              c->manifest.cert_validity_s, &pem) != CL_OK) {
        refuse(e, CL_ECRYPTO, "cannot issue the node certificate");
        goto out;
    }

    pthread_mutex_lock(&c->lock);
    coord_member *m = &c->members.m[id], before = *m;
    int recover = m->epoch > 0;
    m->id = id;
    m->epoch++;
    memcpy(m->measurement, q.measurement, ATTEST_HASH_LEN);
    snprintf(m->peer, sizeof m->peer, "%s", peer);
    snprintf(m->memcached, sizeof m->memcached, "%s", memcached);
    snprintf(m->http, sizeof m->http, "%s", http);
    m->joined_at = (int64_t)time(NULL);
    uint64_t epoch = m->epoch;
    if (coord_members_save(&c->members) != CL_OK) {
        *m = before;                    /* the epoch was not handed out */
        pthread_mutex_unlock(&c->lock);
        refuse(e, CL_EIO, "the coordinator cannot store its member table; try again later");
        goto out;
    }
    json_t *nodes = nodes_json(c);
    pthread_mutex_unlock(&c->lock);

    reply = json_pack("{s:s, s:s, s:i, s:I, s:b, s:i, s:o, s:o, s:o, s:o, s:i}",
                      "certificate", pem, "ca", c->ca_pem, "node_id", id,
                      "epoch", (json_int_t)epoch, "recover", recover,
                      "n", (int)c->manifest.n_nodes, "nodes", nodes,
                      "measurements", policy_json((const uint8_t (*)[32])c->manifest.policy.measurements,
                                                  c->manifest.policy.n_measurements),
                      "platform_keys", policy_json((const uint8_t (*)[32])c->manifest.policy.platform_keys,
                                                   c->manifest.policy.n_platform_keys),
                      "tenants", tenants_json(&c->manifest),
                      "cert_validity_s", (int)c->manifest.cert_validity_s);
    if (!reply) {
        refuse(e, CL_ENOMEM, "out of memory");
        goto out;
    }
    char mh[2 * ATTEST_HASH_LEN + 1];
    attest_hex(q.measurement, 6, mh);
    cl_log_info(MOD, "node %d joined: epoch %llu%s, measurement %s.., peer %s", id,
                (unsigned long long)epoch, recover ? " (it joined before: it recovers)" : "",
                mh, peer[0] ? peer : "(none)");
out:
    free(pem);
    EVP_PKEY_free(key);
    return reply;
}

/* Tokens compared through their SHA-256, so the time taken depends on
 * neither the secret's length nor where the first difference is. */
static int token_matches(const char *want, const char *got)
{
    uint8_t a[32], b[32];
    int ok = EVP_Digest(want, strlen(want), a, NULL, EVP_sha256(), NULL) == 1 &&
             EVP_Digest(got, strlen(got), b, NULL, EVP_sha256(), NULL) == 1 &&
             CRYPTO_memcmp(a, b, sizeof a) == 0;
    OPENSSL_cleanse(a, sizeof a);
    OPENSSL_cleanse(b, sizeof b);
    return ok;
}

static json_t *op_client_cert(coord *c, coord_session *s, json_t *req, op_err *e)
{
    const char *name = str_field(req, "tenant", COORD_MAX_TENANT_NAME);
    const char *token = str_field(req, "token", 1024);
    const coord_tenant *t = name ? coord_manifest_tenant(&c->manifest, name) : NULL;
    /* One answer for an unknown tenant and a wrong token: no probing. */
    if (!t || !t->token || !token || !token_matches(t->token, token))
        return refuse(e, CL_EATTEST, "unknown tenant or wrong token");
    EVP_PKEY *key = pubkey_field(req, e);
    if (!key)
        return NULL;
    char *pem = NULL;
    json_t *reply = NULL;
    if (issue(c, key, t->name, NULL, 0, NULL, CA_USAGE_CLIENT, c->manifest.cert_validity_s,
              &pem) != CL_OK)
        refuse(e, CL_ECRYPTO, "cannot issue the client certificate");
    else if (!(reply = json_pack("{s:s, s:s}", "certificate", pem, "ca", c->ca_pem)))
        refuse(e, CL_ENOMEM, "out of memory");
    else
        cl_log_info(MOD, "issued a client certificate for tenant %s", t->name);
    free(pem);
    EVP_PKEY_free(key);
    return reply;
}

static json_t *op_status(coord *c, coord_session *s, json_t *req, op_err *e)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&c->lock);
    for (int id = 1; arr && id <= REPL_MAX_NODES; id++) {
        const coord_member *m = &c->members.m[id];
        if (!m->id)
            continue;
        json_array_append_new(arr, json_pack("{s:i, s:I, s:o, s:s, s:s, s:s, s:I}", "id", m->id,
                                             "epoch", (json_int_t)m->epoch, "measurement",
                                             hex_string(m->measurement, ATTEST_HASH_LEN),
                                             "peer", m->peer, "memcached", m->memcached, "http",
                                             m->http, "joined", (json_int_t)m->joined_at));
    }
    pthread_mutex_unlock(&c->lock);
    json_t *reply = arr ? json_pack("{s:o, s:i, s:o}", "measurement",
                                    hex_string(coord_measurement(c), ATTEST_HASH_LEN), "n",
                                    (int)c->manifest.n_nodes, "members", arr) : NULL;
    return reply ? reply : refuse(e, CL_ENOMEM, "out of memory");
}

typedef struct coord_op {
    const char *name;
    json_t *(*run)(coord *c, coord_session *s, json_t *req, op_err *e);
} coord_op;

static const coord_op ops[] = {
    { "nonce", op_nonce },
    { "quote", op_quote },
    { "join", op_join },
    { "client_cert", op_client_cert },
    { "status", op_status },
};

/* ---- the protocol on the event loop ----------------------------------------------------- */

static void *proto_thread_init(void *arg, int thread_index)
{
    return arg;
}

static void proto_thread_fini(void *state) {}

static void proto_session_init(void *session, void *state)
{
    memset(session, 0, sizeof(coord_session));
}

static void proto_session_fini(void *session, void *state)
{
    OPENSSL_cleanse(session, sizeof(coord_session));
}

static json_t *handle_line(coord *c, coord_session *s, const uint8_t *line, size_t len)
{
    op_err e = { CL_EPROTO, "" };
    json_t *reply = NULL;
    json_t *req = json_loadb((const char *)line, len, JSON_REJECT_DUPLICATES, NULL);
    const char *op = json_is_object(req) ? json_string_value(json_object_get(req, "op")) : NULL;
    if (!req || !json_is_object(req)) {
        refuse(&e, CL_EPROTO, "expected one JSON object per line");
    } else if (!op) {
        refuse(&e, CL_EPROTO, "missing \"op\"");
    } else {
        size_t i = 0;
        while (i < sizeof ops / sizeof ops[0] && strcmp(ops[i].name, op) != 0)
            i++;
        if (i == sizeof ops / sizeof ops[0]) {
            refuse(&e, CL_EPROTO, "unknown op (nonce, quote, join, client_cert, status)");
        } else {
            reply = ops[i].run(c, s, req, &e);
            json_t *id = json_object_get(req, "node_id");
            if (!reply && strcmp(op, "join") == 0 && json_is_integer(id))
                cl_log_warn(MOD, "refused the join of node %lld: %s",
                            (long long)json_integer_value(id), e.why);
            else if (!reply)
                cl_log_warn(MOD, "refused %s: %s", op, e.why);
        }
    }
    json_decref(req);
    return reply ? reply : error_reply(&e);
}

static size_t proto_process(void *session, void *state, const uint8_t *in, size_t len,
                            cl_buf *out, int *close, size_t *want)
{
    coord *c = state;
    size_t used = 0;
    *want = 0;
    for (;;) {
        const uint8_t *nl = memchr(in + used, '\n', len - used);
        if (!nl)
            break;
        size_t n = (size_t)(nl - (in + used));
        json_t *reply = handle_line(c, session, in + used, n);
        used += n + 1;
        char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
        json_decref(reply);
        if (!text || cl_buf_append(out, text, strlen(text)) != CL_OK ||
            cl_buf_append(out, "\n", 1) != CL_OK) {
            free(text);
            *close = 1;
            return len;
        }
        free(text);
    }
    return used;
}

/* ---- set-up --------------------------------------------------------------------------- */

/* The coordinator's own TLS identity: a fresh key, a certificate from the
 * cluster CA for the listen host and loopback, with its quote inside (no
 * challenge: callers get fresh quotes with the "quote" op). */
static int make_identity(coord *c, const char *listen, char *err, size_t errlen)
{
    uint8_t zero[ATTEST_NONCE_LEN] = { 0 };
    attest_quote q;
    char host[COORD_MAX_ADDR] = "";
    const char *hosts[3];
    size_t n_hosts = 0;
    add_host(hosts, &n_hosts, 3, "127.0.0.1");
    add_host(hosts, &n_hosts, 3, "localhost");
    if (coord_addr_host(listen, host, sizeof host) == 0)
        add_host(hosts, &n_hosts, 3, host);
    if (cert_key_generate(&c->key) != CL_OK || attest_pubkey_hash(c->key, c->key_hash) != CL_OK ||
        attest_quote_create(c->platform, c->key_hash, zero, &q) != CL_OK ||
        issue(c, c->key, ATTEST_COORDINATOR_CN, hosts, n_hosts, &q, CA_USAGE_SERVER,
              COORD_CERT_VALIDITY_S, &c->cert_pem) != CL_OK ||
        cert_from_pem(c->cert_pem, &c->cert) != CL_OK || cert_to_pem(ca_cert(c->ca), &c->ca_pem) != CL_OK) {
        snprintf(err, errlen, "cannot create the coordinator's TLS key and certificate");
        return CL_ECRYPTO;
    }
    int rc = net_tls_ctx_new(NET_TLS_SERVER, &c->ssl, err, errlen);
    if (rc == CL_OK)
        rc = net_tls_ctx_use_identity(c->ssl, c->cert, NULL, c->key, err, errlen);
    return rc;
}

int coord_create(const coord_config *cfg, coord **out, char *err, size_t errlen)
{
    *out = NULL;
    coord *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return CL_ENOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    const char *platform_dir = cfg->platform_dir ? cfg->platform_dir : cfg->state_dir;
    int rc;
    if (mkdir(cfg->state_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the state directory %s: %s", cfg->state_dir,
                 strerror(errno));
        rc = CL_EIO;
        goto fail;
    }
    if ((rc = attest_platform_open(platform_dir, cfg->measurement, &c->platform)) != CL_OK) {
        snprintf(err, errlen, "cannot open the platform in %s: %s (see the log line above)",
                 platform_dir, cl_strerror(rc));
        goto fail;
    }
    if ((rc = coord_manifest_load(cfg->manifest_file, coord_measurement(c), coord_platform_key(c),
                                  &c->manifest, err, errlen)) != CL_OK ||
        (rc = ca_open(cfg->state_dir, platform_dir, &c->ca, err, errlen)) != CL_OK ||
        (rc = coord_members_load(&c->members, cfg->state_dir, platform_dir, err, errlen)) != CL_OK ||
        (rc = make_identity(c, cfg->listen, err, errlen)) != CL_OK)
        goto fail;

    c->proto = (net_proto){
        .name = "coordinator",
        .thread_init = proto_thread_init,
        .thread_fini = proto_thread_fini,
        .session_size = sizeof(coord_session),
        .session_init = proto_session_init,
        .session_fini = proto_session_fini,
        .process = proto_process,
        .max_pending = COORD_MAX_LINE,
    };
    net_listener_config lc = { .addr = cfg->listen, .proto = &c->proto, .proto_arg = c,
                               .ssl_ctx = c->ssl };
    net_server_config nc = { .listeners = &lc, .n_listeners = 1, .threads = 1 };
    if ((rc = net_server_create(&nc, &c->srv)) != CL_OK) {
        snprintf(err, errlen, "cannot listen on %s (see the log line above); choose another "
                 "--listen address or stop what uses it", cfg->listen);
        goto fail;
    }
    char mh[2 * ATTEST_HASH_LEN + 1], pk[2 * ATTEST_PLATFORM_KEY_LEN + 1];
    attest_hex(coord_measurement(c), ATTEST_HASH_LEN, mh);
    attest_hex(coord_platform_key(c), ATTEST_PLATFORM_KEY_LEN, pk);
    cl_log_info(MOD, "coordinator measurement %s", mh);
    cl_log_info(MOD, "platform attestation key %s (simulation mode)", pk);
    cl_log_info(MOD, "manifest %s: %zu nodes, %zu allowed measurements, %zu trusted platforms, "
                "%zu tenants", cfg->manifest_file, c->manifest.n_nodes,
                c->manifest.policy.n_measurements, c->manifest.policy.n_platform_keys,
                c->manifest.n_tenants);
    *out = c;
    return CL_OK;
fail:
    coord_destroy(c);
    return rc;
}

int coord_start(coord *c)
{
    return net_server_start(c->srv);
}

void coord_destroy(coord *c)
{
    if (!c)
        return;
    net_server_destroy(c->srv);
    SSL_CTX_free(c->ssl);
    X509_free(c->cert);
    EVP_PKEY_free(c->key);
    free(c->cert_pem);
    free(c->ca_pem);
    ca_destroy(c->ca);
    coord_members_fini(&c->members);
    coord_manifest_fini(&c->manifest);
    attest_platform_close(c->platform);
    pthread_mutex_destroy(&c->lock);
    free(c);
}
