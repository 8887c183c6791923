/*
 * cert.h - key pairs and certificates in memory: generation and PEM
 * conversion for the keys and certificates that attestation hands around
 * (node TLS keys, the cluster CA's certificate, client certificates).
 *
 * Node keys never touch the disk: a node generates its TLS key in memory,
 * has it attested (attest.h) and receives a certificate for it, all as
 * OpenSSL objects; PEM is only the wire format of the coordinator protocol
 * and of the files `cloister attest` writes.
 *
 * Ownership: every *out object or string is the caller's (X509_free,
 * EVP_PKEY_free, free; a private-key PEM must be wiped with
 * cert_pem_free_secret).  Functions leave OpenSSL's error queue empty.
 * Reentrant.
 */
#ifndef CLOISTER_TRUST_CERT_H
#define CLOISTER_TRUST_CERT_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A fresh EC P-256 key pair.  CL_OK or CL_ECRYPTO. */
int cert_key_generate(EVP_PKEY **out) __attribute__((warn_unused_result));

/* PEM text (NUL-terminated, malloc'd) of a certificate, a public key
 * (SubjectPublicKeyInfo) or a private key (unencrypted PKCS#8).
 * CL_OK, CL_ENOMEM or CL_ECRYPTO. */
int cert_to_pem(X509 *cert, char **out) __attribute__((warn_unused_result));
int cert_pubkey_to_pem(EVP_PKEY *key, char **out) __attribute__((warn_unused_result));
int cert_privkey_to_pem(EVP_PKEY *key, char **out) __attribute__((warn_unused_result));
/* Wipes and frees a PEM string that holds a private key.  NULL is a no-op. */
void cert_pem_free_secret(char *pem);

/* Parses the first certificate / public key in PEM text.  CL_OK, or
 * CL_EINVAL when the text holds none. */
int cert_from_pem(const char *pem, X509 **out) __attribute__((warn_unused_result));
int cert_pubkey_from_pem(const char *pem, EVP_PKEY **out) __attribute__((warn_unused_result));

/* 1 when `cert` names `ca` as its issuer and carries a valid signature by
 * ca's key (no validity-period or purpose checks: that is the TLS
 * stack's job); 0 otherwise. */
int cert_issued_by(X509 *cert, X509 *ca);

#endif
