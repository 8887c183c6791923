/*
 * cluster.h - cloisterd as a member of a cluster (--join) and as the
 * cluster's coordinator (--coordinator).
 *
 * A joining node binds its listeners first (so it can report the real
 * ports), then attests to the coordinator (coord/join.h), then installs
 * the issued certificate into the listeners' TLS context before any
 * connection is accepted.  The join result stays in daemon_cluster for
 * the daemon's lifetime: it is what the replication layer starts from.
 *
 * Called by cloisterd.c's main() only, on the main thread, at start-up.
 */
#ifndef CLOISTER_DAEMON_CLUSTER_H
#define CLOISTER_DAEMON_CLUSTER_H

#include <jansson.h>
#include <openssl/ssl.h>

#include "../coord/join.h"
#include "../repl/peer.h"
#include "../repl/repl.h"
#include "config.h"

/* Worker threads of a cluster node unless --threads says otherwise.  A
 * plain get or set suspends its connection while replicas answer
 * (kv_async.h), so a few workers serve many connections; the other
 * commands still wait on their worker (kv.h).  More workers cost a context
 * switch per request each: 32 ran YCSB-A ~15-40% slower than 8 on 2 cores. */
#define CLUSTER_THREADS 8

typedef struct daemon_cluster {
    int joined;                 /* 1 after a successful --join */
    coord_join_result join;
    /* The replication layer (cluster_start_replication): the engine and
     * the mutual-TLS mesh whose thread drives it. */
    repl *repl;
    peer_mesh *mesh;
    repl_namespace *ns;         /* the engine's namespace table (owned) */
    char **ns_prefix;           /* its prefix strings (owned) */
    size_t n_ns;
} daemon_cluster;

/*
 * Attests to the coordinator at cfg->join and joins as cfg->node_id,
 * reporting the bound memcached and HTTP addresses and cfg->peer.  On
 * failure prints the reason (for a refusal, the coordinator's: e.g. "the
 * coordinator refused: measurement 3fa1.. is not allowed by the
 * manifest") to stderr and the log, and returns the CL_E* code.
 */
int cluster_join(const daemon_config *cfg, const char *memcached, const char *http,
                 daemon_cluster *out);

/* Installs the node's certificate into ctx (a server context from
 * net_tls_ctx_new) and requires client certificates from the cluster CA,
 * or from cfg->tls_ca when given.  CL_OK, or a code with a message
 * printed. */
int cluster_tls_setup(const daemon_cluster *cl, const daemon_config *cfg, SSL_CTX *ctx);

/* Adds the ready file's cluster fields to obj (nothing unless joined).
 * CL_OK or CL_ENOMEM. */
int cluster_ready_fields(const daemon_cluster *cl, const daemon_config *cfg, json_t *obj);

/* A peer_verify_fn (repl/peer.h) for the peer mesh: arg = &cl->join.policy.
 * Runs attest_verify_peer on a certificate whose chain the handshake
 * verified against the cluster CA. */
int cluster_verify_peer(void *arg, X509 *peer_cert, int *node_id, char *why, size_t cap);

/*
 * Starts replication after a successful join: the engine over `st` (its
 * namespaces: every tenant's from the manifest, for memcached keys the
 * default tenant's, and the runtime's reserved keys always strong) and
 * the peer mesh listening on cfg->peer, dialling every other node.
 * A node that joined before (join.recover) starts RECOVERING.  CL_OK, or
 * a code with a message printed.  Before the front doors start.
 */
int cluster_start_replication(daemon_cluster *cl, const daemon_config *cfg, store *st);

/* Stops the mesh (its thread) and destroys the engine: pending
 * operations fail with CL_ECLOSED.  After the front doors and the
 * runtime stopped, before the store is destroyed. */
void cluster_stop_replication(daemon_cluster *cl);

void cluster_fini(daemon_cluster *cl);

/* Runs the coordinator until SIGTERM/SIGINT arrives on the signalfd sfd.
 * Returns the process exit status (0 after a clean stop, 1 when start-up
 * failed). */
int cluster_run_coordinator(const daemon_config *cfg, int sfd,
                            int (*wait_for_stop)(int sfd),
                            int (*write_ready)(const char *path, json_t *obj));

#endif
