/*
 * ca.h - the cluster certificate authority: an EC P-256 key and a
 * self-signed certificate, kept by the coordinator, that issues the
 * certificates of attested nodes (with their quote inside, RA-TLS style),
 * of the coordinator itself and of tenants' clients.
 *
 * Storage: STATE_DIR/ca.pem (the certificate, public) and STATE_DIR/ca.key
 * (the private key as encrypted PKCS#8 PEM, mode 0600).  The key is
 * encrypted under a passphrase derived from the platform root key
 * (platform.h, label "cluster-ca"): sealed to the platform, as an enclave
 * would seal it to its CPU.  SIMULATION MODE: the platform root key is
 * itself a file on the same machine, so whoever can read both files can
 * use the CA; the sealing only keeps a copied state directory useless on
 * another platform.  docs/ATTESTATION.md says what that means.
 *
 * Created on first open; later opens load and check it (the key must
 * match the certificate).  A cluster_ca is read-only after ca_open and
 * may issue from several threads at once.
 */
#ifndef CLOISTER_TRUST_CA_H
#define CLOISTER_TRUST_CA_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "attest.h"

#define CA_CERT_FILE "ca.pem"
#define CA_KEY_FILE "ca.key"
#define CA_COMMON_NAME "Cloister cluster CA"

typedef struct cluster_ca cluster_ca;

/*
 * Loads the CA from state_dir, or creates it there (10 years' validity)
 * when neither file exists.  platform_dir holds the platform root key
 * that seals ca.key.  CL_OK, or CL_ECONFIG (one file without the other, a
 * key that does not open with this platform's key or does not match the
 * certificate), CL_EIO, CL_ECRYPTO, CL_ENOMEM; err gets one line for the
 * user.
 */
int ca_open(const char *state_dir, const char *platform_dir, cluster_ca **out,
            char *err, size_t errlen) __attribute__((warn_unused_result));

/* A CA that lives only in memory (tests: a foreign CA). */
int ca_create_ephemeral(const char *common_name, cluster_ca **out)
    __attribute__((warn_unused_result));

/* Wipes the key and frees.  NULL is a no-op. */
void ca_destroy(cluster_ca *ca);

/* The CA certificate (borrowed: valid while ca lives). */
X509 *ca_cert(const cluster_ca *ca);

enum { CA_USAGE_SERVER = 1, CA_USAGE_CLIENT = 2 };

typedef struct ca_request {
    EVP_PKEY *key;             /* the subject's key (only its public half is used) */
    const char *common_name;   /* e.g. "cloister-node-3", a tenant's name */
    const char *const *hosts;  /* subjectAltNames: IPv4/IPv6 literals or DNS names */
    size_t n_hosts;
    const attest_quote *quote; /* NULL: no quote extension */
    unsigned usage;            /* CA_USAGE_* bits: extendedKeyUsage */
    int64_t not_before;        /* Unix seconds */
    int64_t not_after;
} ca_request;

/*
 * Issues a certificate: X.509 v3, random serial, signed with ECDSA-SHA256,
 * basicConstraints CA:FALSE, keyUsage digitalSignature, the requested
 * extendedKeyUsage, subject/authority key identifiers, the hosts as
 * subjectAltNames and the quote extension.  CL_OK, CL_EINVAL (a host that
 * is neither an IP literal nor a DNS name, an empty or over-long common
 * name, not_after <= not_before), CL_ECRYPTO, CL_ENOMEM.
 */
int ca_issue(const cluster_ca *ca, const ca_request *req, X509 **out)
    __attribute__((warn_unused_result));

#endif
