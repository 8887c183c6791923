/*
 * coord.h - the coordinator: the cluster's configuration and attestation
 * service (`cloisterd --coordinator`).  It holds the manifest
 * (manifest.h), verifies the quotes of joining nodes, issues their
 * certificates from the cluster CA (trust/ca.h) with the quote inside,
 * hands out epochs (members.h), issues tenants' client certificates, and
 * proves its own measurement to anyone who asks (`cloister attest`, and
 * every node before it joins).
 *
 * Protocol.  TLS 1.3; the coordinator presents a certificate issued by
 * its own CA with its own quote inside; callers present none (they are
 * authenticated by their quotes or tokens).  Then JSON lines: one request
 * object per line, one reply object per line, in order, any number per
 * connection; requests longer than COORD_MAX_LINE close the connection.
 * A refusal is {"error": "<one line>", "code": <CL_E* number>}.
 *
 *   {"op":"nonce"}
 *       -> {"nonce": hex32}          a fresh challenge bound to this
 *          connection; the next join on it must quote it (used once).
 *   {"op":"quote", "nonce": hex32}
 *       -> {"quote": hex200, "certificate": PEM, "ca": PEM}
 *          the coordinator's quote over the caller's nonce and the TLS
 *          key of this connection, its certificate, the cluster CA.
 *   {"op":"join", "node_id": N, "peer"|"memcached"|"http": "H:P" (each
 *    optional), "public_key": PEM, "quote": hex200}
 *       -> {"certificate", "ca", "node_id", "epoch", "recover", "n",
 *           "nodes": [{"id","peer","memcached","http"}],
 *           "measurements": [hex], "platform_keys": [hex],
 *           "tenants": [{"name", "namespaces": [{"prefix","mode"}]}],
 *           "cert_validity_s"}
 *          The quote must verify under the manifest (trusted platform,
 *          allowed measurement), be for public_key and carry this
 *          connection's nonce.  The epoch (per node id, +1 per join) is
 *          stored before the reply is sent; recover is true when this
 *          node id joined before.  Addresses not known are "".
 *   {"op":"client_cert", "tenant": T, "token": S, "public_key": PEM}
 *       -> {"certificate": PEM, "ca": PEM}   CN = T, clientAuth only.
 *   {"op":"status"}
 *       -> {"measurement": hex, "n": N, "members": [{"id", "epoch",
 *           "measurement", "peer", "memcached", "http", "joined"}]}
 *
 * Every refusal is also logged with its reason (never a token or a key).
 *
 * Threads: one network worker (net/server.c) serves every connection; a
 * mutex guards the member table, so coord_* calls from other threads are
 * safe.  Lifecycle: coord_create (loads everything, binds) -> coord_start
 * -> coord_destroy (stops, frees).
 */
#ifndef CLOISTER_COORD_COORD_H
#define CLOISTER_COORD_COORD_H

#include <stddef.h>
#include <stdint.h>

#include "../trust/attest.h"

#define COORD_MAX_LINE (64u << 10)
#define COORD_DEFAULT_LISTEN "127.0.0.1:7000"

typedef struct coord coord;

typedef struct coord_config {
    const char *listen;             /* "HOST:PORT"; port 0 = any free port */
    const char *manifest_file;
    const char *state_dir;          /* CA, members.json; created (0700) if missing */
    const char *platform_dir;       /* the simulated platform; NULL = state_dir */
    const uint8_t *measurement;     /* NULL: this binary.  Tests: a stand-in. */
} coord_config;

/*
 * Opens the platform, loads the manifest, the CA and the member table,
 * makes the coordinator's TLS key and certificate and binds the listener.
 * CL_OK, or a CL_E* code with err saying what is wrong and what to do.
 */
int coord_create(const coord_config *cfg, coord **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Starts serving.  CL_OK or CL_ENOMEM / CL_EINVAL (thread start failed). */
int coord_start(coord *c) __attribute__((warn_unused_result));

/* Stops serving and frees everything (keys wiped).  NULL is a no-op. */
void coord_destroy(coord *c);

/* The bound address, "127.0.0.1:40123".  Returns buf. */
char *coord_listen_name(const coord *c, char *buf, size_t cap);

/* The coordinator's measurement and its platform's public key. */
const uint8_t *coord_measurement(const coord *c);
const uint8_t *coord_platform_key(const coord *c);

#endif
