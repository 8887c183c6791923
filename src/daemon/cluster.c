/*
 * cluster.c - joining a cluster and running the coordinator (cluster.h).
 */
#include "cluster.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../coord/coord.h"
#include "../net/tls.h"
#include "../runtime/runtime.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char MOD[] = "cluster";

static const char *platform_dir(const daemon_config *cfg)
{
    return cfg->platform_dir ? cfg->platform_dir : cfg->state_dir;
}

int cluster_join(const daemon_config *cfg, const char *memcached, const char *http,
                 daemon_cluster *out)
{
    memset(out, 0, sizeof *out);
    coord_join_config jc = {
        .coordinator = cfg->join,
        .node_id = cfg->node_id,
        .peer = cfg->peer_advertise ? cfg->peer_advertise : cfg->peer,
        .memcached = memcached,
        .http = http,
        .platform_dir = platform_dir(cfg),
        .expect_coordinator = cfg->expect_coordinator_set ? cfg->expect_coordinator : NULL,
    };
    char why[1024];
    int rc = coord_join(&jc, &out->join, why, sizeof why);
    if (rc != CL_OK) {
        cl_log_error(MOD, "cannot join the cluster at %s as node %d: %s", cfg->join,
                     cfg->node_id, why);
        fprintf(stderr, "cloisterd: cannot join the cluster at %s as node %d: %s\n", cfg->join,
                cfg->node_id, why);
        return rc;
    }
    out->joined = 1;
    char mh[2 * ATTEST_HASH_LEN + 1];
    attest_hex(out->join.measurement, 6, mh);
    cl_log_info(MOD, "attested (measurement %s..) and joined the cluster at %s as node %d of %d, "
                "epoch %llu%s", mh, cfg->join, out->join.self, out->join.n,
                (unsigned long long)out->join.epoch,
                out->join.recover ? " (joined before: state must be recovered from peers)" : "");
    return CL_OK;
}

int cluster_tls_setup(const daemon_cluster *cl, const daemon_config *cfg, SSL_CTX *ctx)
{
    char err[512];
    int rc = net_tls_ctx_use_identity(ctx, cl->join.cert, NULL, cl->join.key, err, sizeof err);
    if (rc == CL_OK)
        rc = cfg->tls_ca ? net_tls_ctx_trust_file(ctx, cfg->tls_ca, err, sizeof err)
                         : net_tls_ctx_trust(ctx, cl->join.ca, err, sizeof err);
    if (rc != CL_OK)
        fprintf(stderr, "cloisterd: TLS setup with the issued certificate failed: %s\n", err);
    return rc;
}

int cluster_ready_fields(const daemon_cluster *cl, const daemon_config *cfg, json_t *obj)
{
    if (!cl->joined)
        return CL_OK;
    char mh[2 * ATTEST_HASH_LEN + 1];
    attest_hex(cl->join.measurement, ATTEST_HASH_LEN, mh);
    json_t *fields = json_pack("{s:i, s:i, s:I, s:b, s:s?, s:s, s:s}", "node_id", cl->join.self,
                               "n", cl->join.n, "epoch", (json_int_t)cl->join.epoch, "recover",
                               cl->join.recover, "peer", cfg->peer, "coordinator", cfg->join,
                               "measurement", mh);
    int rc = fields && json_object_update(obj, fields) == 0 ? CL_OK : CL_ENOMEM;
    json_decref(fields);
    return rc;
}

int cluster_verify_peer(void *arg, X509 *peer_cert, int *node_id, char *why, size_t cap)
{
    return attest_verify_peer(peer_cert, arg, node_id, why, cap);
}

/* Appends one namespace (prefix copied). */
static int ns_add(daemon_cluster *cl, const char *a, const char *b, size_t blen, repl_mode mode)
{
    size_t alen = strlen(a);
    char *p = malloc(alen + blen + 1);
    if (!p)
        return CL_ENOMEM;
    memcpy(p, a, alen);
    memcpy(p + alen, b, blen);
    p[alen + blen] = 0;
    cl->ns_prefix[cl->n_ns] = p;
    cl->ns[cl->n_ns] = (repl_namespace){.prefix = p, .mode = mode};
    cl->n_ns++;
    return CL_OK;
}

/*
 * The engine's namespace table.  Keys as the store sees them: memcached
 * clients' keys as sent (the default tenant's namespaces apply to them),
 * a function's keys as "\x01t<tenant>/<key>" (runtime.h), the runtime's
 * own records under other "\x01" prefixes, which stay strong whatever a
 * tenant chose (the function index is updated by compare-and-swap).
 */
static int build_namespaces(daemon_cluster *cl)
{
    const coord_join_result *j = &cl->join;
    size_t cap = 2 * j->n_ns + 1;
    cl->ns = calloc(cap, sizeof *cl->ns);
    cl->ns_prefix = calloc(cap, sizeof *cl->ns_prefix);
    if (!cl->ns || !cl->ns_prefix)
        return CL_ENOMEM;
    char reserved[2] = {RT_RESERVED_KEY_BYTE, 0};
    int rc = ns_add(cl, reserved, "", 0, REPL_STRONG);
    for (size_t i = 0; i < j->n_ns && rc == CL_OK; i++) {
        const coord_join_ns *ns = &j->ns[i];
        char tenant[COORD_MAX_TENANT_NAME + 4];
        snprintf(tenant, sizeof tenant, "%ct%s/", RT_RESERVED_KEY_BYTE, ns->tenant);
        rc = ns_add(cl, tenant, ns->prefix, strlen(ns->prefix), ns->mode);
        if (rc == CL_OK && strcmp(ns->tenant, "default") == 0  /* the gateway's default tenant */)
            rc = ns_add(cl, "", ns->prefix, strlen(ns->prefix), ns->mode);
    }
    return rc;
}

int cluster_start_replication(daemon_cluster *cl, const daemon_config *cfg, store *st)
{
    const coord_join_result *j = &cl->join;
    peer_node peers[REPL_MAX_NODES];
    size_t np = 0;
    int rc = build_namespaces(cl);
    if (rc != CL_OK)
        goto fail;
    repl_config rc_cfg = {
        .self = j->self,
        .n = j->n,
        .epoch = j->epoch,
        .recover = j->recover,
        .st = st,
        .ns = cl->ns,
        .n_ns = cl->n_ns,
    };
    if ((rc = repl_create(&rc_cfg, &cl->repl)) != CL_OK)
        goto fail;
    for (size_t i = 0; i < j->n_nodes; i++) {
        if (j->nodes[i].id == j->self)
            continue;
        peers[np++] = (peer_node){.id = j->nodes[i].id,
                                  .addr = j->nodes[i].peer[0] ? j->nodes[i].peer : NULL};
    }
    peer_config pc = {
        .self = j->self,
        .epoch = j->epoch,
        .listen = cfg->peer,
        .peers = peers,
        .n_peers = np,
        .cert = j->cert,
        .key = j->key,
        .ca = j->ca,
        .verify_peer = cluster_verify_peer,
        .verify_arg = &cl->join.policy,
        .hooks = repl_hooks(cl->repl),
    };
    if ((rc = peer_mesh_create(&pc, &cl->mesh)) != CL_OK)
        goto fail;
    repl_transport tr = peer_mesh_transport(cl->mesh);
    repl_attach(cl->repl, &tr);
    if ((rc = peer_mesh_start(cl->mesh)) != CL_OK)
        goto fail;
    cl_log_info(MOD, "replication: node %d of %d, epoch %llu, peers on %s, %s", j->self, j->n,
                (unsigned long long)j->epoch, cfg->peer,
                j->recover ? "recovering the state from a majority before voting"
                           : "first start: voting at once");
    return CL_OK;
fail:
    fprintf(stderr, "cloisterd: cannot start replication on --peer %s: %s (see the log)\n",
            cfg->peer ? cfg->peer : "(none)", cl_strerror(rc));
    cluster_stop_replication(cl);
    return rc;
}

void cluster_stop_replication(daemon_cluster *cl)
{
    peer_mesh_stop(cl->mesh);        /* the repl thread: no engine hook runs after this */
    repl_destroy(cl->repl);          /* fails what is pending */
    peer_mesh_destroy(cl->mesh);
    cl->repl = NULL;
    cl->mesh = NULL;
    for (size_t i = 0; i < cl->n_ns; i++)
        free(cl->ns_prefix[i]);
    free(cl->ns_prefix);
    free(cl->ns);
    cl->ns_prefix = NULL;
    cl->ns = NULL;
    cl->n_ns = 0;
}

void cluster_fini(daemon_cluster *cl)
{
    cluster_stop_replication(cl);
    coord_join_result_fini(&cl->join);
    cl->joined = 0;
}

int cluster_run_coordinator(const daemon_config *cfg, int sfd, int (*wait_for_stop)(int sfd),
                            int (*write_ready)(const char *path, json_t *obj))
{
    coord_config cc = {
        .listen = cfg->listen,
        .manifest_file = cfg->manifest,
        .state_dir = cfg->state_dir,
        .platform_dir = platform_dir(cfg),
    };
    coord *c = NULL;
    char err[1024];
    int status = 1;
    if (coord_create(&cc, &c, err, sizeof err) != CL_OK) {
        fprintf(stderr, "cloisterd: cannot start the coordinator: %s\n", err);
        goto out;
    }
    if (coord_start(c) != CL_OK) {
        fprintf(stderr, "cloisterd: cannot start the coordinator's network thread\n");
        goto out;
    }
    char addr[64], mh[2 * ATTEST_HASH_LEN + 1], pk[2 * ATTEST_PLATFORM_KEY_LEN + 1];
    coord_listen_name(c, addr, sizeof addr);
    attest_hex(coord_measurement(c), ATTEST_HASH_LEN, mh);
    attest_hex(coord_platform_key(c), ATTEST_PLATFORM_KEY_LEN, pk);
    cl_log_info(MOD, "cloisterd %s coordinator serving on %s (TLS 1.3, state in %s)",
                CLOISTER_VERSION, addr, cfg->state_dir);
    if (cfg->ready_file) {
        json_t *o = json_pack("{s:i, s:s, s:b, s:s, s:s}", "pid", (int)getpid(), "coordinator",
                              addr, "tls", 1, "measurement", mh, "platform_key", pk);
        int rc = o ? write_ready(cfg->ready_file, o) : -1;
        json_decref(o);
        if (rc != 0)
            goto out;
    }
    int sig = wait_for_stop(sfd);
    cl_log_info(MOD, "received %s; stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    coord_destroy(c);
    return status;
}
