/*
 * peer.h - the production transport of the replication engine: a mutual
 * TLS 1.3 mesh between the nodes of a cluster (transport.h is the
 * contract it implements).
 *
 * A peer_mesh owns one thread, the *repl thread*, which runs an epoll
 * loop over: the listener; one outgoing connection per peer (dialled,
 * re-dialled with backoff when lost; the only connection this node sends
 * on to that peer); the incoming connections of the peers (read only); an
 * eventfd for wake().  Every engine hook (repl_engine_hooks) runs on that
 * thread.  Engine messages leave through the repl_transport returned by
 * peer_mesh_transport: send() appends a frame to the peer's output buffer
 * and flush() writes it, so a burst of messages to one peer leaves in few
 * TLS records and few system calls.
 *
 * Authenticity and freshness of what reaches on_message:
 *   - TLS 1.3 only, both sides present certificates and both verify the
 *     chain against the cluster CA, then call verify_peer (the RA-TLS
 *     check, trust/) which names the node;
 *   - the hello frame's node id must equal the certificate's, and its
 *     epoch must be >= the highest epoch ever seen from that node (an
 *     older incarnation is refused, logged with the reason);
 *   - the listener answers with a welcome frame naming itself and its
 *     epoch; the dialler checks it the same way, and only then reports
 *     the peer up;
 *   - data frames carry seq = previous + 1 per connection, and a frame
 *     over REPL_MAX_MSG or out of sequence drops the connection.
 * Nothing of a payload, and no key material, is ever logged.
 *
 * Frames (all integers little-endian; transport.h):
 *   hello   dialler -> listener, first:   u32 len=16 | "CLP1" | u32 from_id | u64 epoch
 *   welcome listener -> dialler, answer:  u32 len=16 | "CLPW" | u32 from_id | u64 epoch
 *   data    dialler -> listener:          u32 len    | u64 seq | payload (len - 8 bytes)
 * After the welcome the listener sends nothing more; the dialler reads
 * its connection only to notice the end.
 *
 * Hooks: on_message's msg is valid only during the call (it points into
 * the connection's input buffer); on_peer(id, 1) means our connection to
 * id is usable (its welcome was checked), on_peer(id, 0) that it was
 * lost; on_tick comes after every batch of messages and about every
 * millisecond while busy (every 10 ms when idle).
 *
 * Called by the daemon (wiring of repl.c) and by tests.  Lifecycle:
 * create (binds the listener, so the port is known) -> start (the repl
 * thread begins dialling) -> stop (joins the thread; no hook runs after
 * it returns) -> destroy.  A mesh runs once (no start after stop).  The
 * transport's wake() may be called from any thread until destroy; the
 * engine must stop taking submissions before that.
 */
#ifndef CLOISTER_REPL_PEER_H
#define CLOISTER_REPL_PEER_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "transport.h"

typedef struct peer_mesh peer_mesh;

/*
 * Names the node a verified peer certificate belongs to.  Called on the
 * repl thread after the TLS handshake has verified the chain against the
 * cluster CA.  Returns CL_OK with *node_id_out set, or an error (e.g.
 * CL_EATTEST) with a one-line reason in why[cap] (logged; must not hold
 * secrets).  peer_cert is borrowed for the call.
 */
typedef int (*peer_verify_fn)(void *arg, X509 *peer_cert, int *node_id_out,
                              char *why, size_t cap);

typedef struct peer_node {
    int id;                   /* 1..REPL_MAX_NODES, not self */
    const char *addr;         /* HOST:PORT to dial (may be a proxy in front of it);
                                 NULL: not known yet (peer_mesh_set_peer_addr) */
    uint64_t min_epoch;       /* lowest acceptable epoch of that node (0: any) */
} peer_node;

typedef struct peer_config {
    int self;                 /* this node's id, 1..REPL_MAX_NODES */
    uint64_t epoch;           /* this incarnation; grows with every restart */
    const char *listen;       /* HOST:PORT; port 0 picks a free one */
    const peer_node *peers;   /* the other nodes */
    size_t n_peers;
    /* TLS material, borrowed during create (the mesh keeps references of
     * its own; the caller frees its copies whenever it likes). */
    X509 *cert;               /* this node's certificate (issued by the cluster CA) */
    STACK_OF(X509) *chain;    /* intermediates, or NULL */
    EVP_PKEY *key;            /* its private key */
    X509 *ca;                 /* the cluster CA: the only trust anchor */
    peer_verify_fn verify_peer; /* NULL: peer_cert_node_id (CN "cloister-node-<id>") */
    void *verify_arg;
    repl_engine_hooks hooks;  /* on_message required; the others may be NULL */
    size_t max_out;           /* bytes queued per peer before send() drops; 0 = 64 MiB */
    unsigned reconnect_min_ms;/* first re-dial delay; 0 = 50 */
    unsigned reconnect_max_ms;/* backoff cap; 0 = 1000 */
} peer_config;

/* Creates the mesh: checks the configuration, builds the TLS contexts,
 * resolves the peers' addresses and binds the listener.  CL_OK,
 * CL_EINVAL (bad configuration; logged), CL_ETLS (the key does not match
 * the certificate, ...), CL_EIO (cannot listen), CL_ENOMEM. */
int peer_mesh_create(const peer_config *cfg, peer_mesh **out) __attribute__((warn_unused_result));
/* Starts the repl thread.  CL_OK or CL_ENOMEM. */
int peer_mesh_start(peer_mesh *m) __attribute__((warn_unused_result));
/* Stops and joins the repl thread and closes every connection (no hook
 * runs, and no on_peer(down) is reported).  Idempotent. */
void peer_mesh_stop(peer_mesh *m);
/* Stops if needed and frees everything.  NULL is fine. */
void peer_mesh_destroy(peer_mesh *m);

/* The transport to hand to the engine (repl_attach); ctx = m. */
repl_transport peer_mesh_transport(peer_mesh *m);

/* Changes where node `id` is dialled (e.g. it came back on another port).
 * Any thread, before or after start; used from the next dial on (a
 * connection that is up stays up).  CL_OK, or CL_EINVAL (not a peer, or
 * the address does not parse; a host name is resolved here). */
int peer_mesh_set_peer_addr(peer_mesh *m, int id, const char *addr);

/* The bound listen port; the address as "HOST:PORT" in buf (>= 56 bytes). */
int peer_mesh_port(const peer_mesh *m);
char *peer_mesh_listen_addr(const peer_mesh *m, char *buf, size_t cap);

/* The default verify_peer: the node id from the certificate's single
 * subject CN "cloister-node-<id>" (decimal, 1..REPL_MAX_NODES, no sign or
 * leading zero).  CL_OK or CL_EATTEST with the reason in why. */
int peer_cert_node_id(X509 *cert, int *node_id_out, char *why, size_t cap);

/* Counters, readable from any thread (each read is atomic; the set is
 * not a snapshot). */
typedef struct peer_stats {
    uint64_t msgs_sent, msgs_received;      /* frames queued by send() / delivered */
    uint64_t bytes_sent, bytes_received;    /* TLS plaintext bytes */
    uint64_t ssl_writes, ssl_reads;         /* successful SSL_write/SSL_read calls */
    uint64_t dials, ups, downs;             /* outgoing: attempts, became usable, lost */
    uint64_t accepted, hellos;              /* incoming: TCP accepts, hellos accepted */
    uint64_t hs_failures;                   /* TLS handshakes that failed (either side) */
    uint64_t refused_cert;                  /* chain or verify_peer refused the certificate */
    uint64_t refused_id;                    /* hello/welcome id differs from the certificate's */
    uint64_t refused_epoch;                 /* hello/welcome from an older incarnation */
    uint64_t proto_errors;                  /* bad frame, out of sequence, oversized */
    uint64_t dropped_down, dropped_full;    /* send() refused: peer not up / queue full */
    uint64_t ticks, wakes;
    uint64_t peers_up;                      /* outgoing connections usable now */
} peer_stats;
void peer_mesh_get_stats(const peer_mesh *m, peer_stats *out);

#endif
