/*
 * cluster.c - joining a cluster and running the coordinator (cluster.h).
 */
#include "cluster.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../coord/coord.h"
#include "../net/tls.h"

#include <jansson.h>
#include <signal.h>
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
        .peer = cfg->peer,
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

void cluster_fini(daemon_cluster *cl)
{
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
