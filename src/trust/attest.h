/*
 * attest.h - remote attestation: measurements, quotes, the policy that
 * decides which quotes to accept, and attested (RA-TLS) certificates.
 *
 * A node proves what code it runs by a *quote*: a statement signed by the
 * platform (the CPU) that binds
 *   measurement  SHA-256 of the running binary (what code),
 *   pubkey_hash  SHA-256 of the DER SubjectPublicKeyInfo of the TLS key
 *                the code generated (which channel speaks for that code),
 *   nonce        32 bytes chosen by the verifier (freshness: a quote made
 *                for one challenge is worthless for the next).
 * The coordinator verifies a node's quote and issues it a certificate from
 * the cluster CA with the quote inside (extension ATTEST_QUOTE_OID), so a
 * peer can re-check, at every handshake, that the certificate's key
 * belongs to allowed code (attest_verify_peer).  Clients verify the
 * coordinator's quote once (`cloister attest`) and plain TLS against the
 * cluster CA afterwards.  docs/ATTESTATION.md describes the flows.
 *
 * Quote wire format (ATTEST_QUOTE_LEN = 200 bytes, integers big-endian):
 *     0  magic "CLQT"
 *     4  u16 version (1)          6  u16 reserved (0)
 *     8  measurement[32]         40  pubkey_hash[32]
 *    72  nonce[32]              104  platform_key[32]  (Ed25519 public key)
 *   136  signature[64]: Ed25519 by platform_key over bytes 0..135
 * The platform key travels in the quote so that a refusal can say "foreign
 * platform" apart from "forged"; it is trusted only if the policy lists it.
 *
 * Who creates quotes: only the platform backend (attest_sim.c today; an
 * SGX/TDX backend later), which measures the binary itself, so a caller
 * cannot put a measurement of its choice into a quote.  Verification
 * (attest.c) is ordinary code and is the same for every backend.
 *
 * Every refusal returns CL_EATTEST and writes one line into `why` that
 * names the reason ("measurement 3fa1c2d4e5f6.. is not allowed by the
 * manifest", "quote signature invalid (forged or altered)", ...), fit for
 * a log line and for the refused party.  No key material is ever logged.
 *
 * Threading: the functions here are reentrant; an attest_platform and an
 * attest_policy are read-only after setup and may be shared by threads.
 */
#ifndef CLOISTER_TRUST_ATTEST_H
#define CLOISTER_TRUST_ATTEST_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#define ATTEST_HASH_LEN 32
#define ATTEST_NONCE_LEN 32
#define ATTEST_PLATFORM_KEY_LEN 32
#define ATTEST_SIG_LEN 64
#define ATTEST_QUOTE_SIGNED_LEN 136
#define ATTEST_QUOTE_LEN (ATTEST_QUOTE_SIGNED_LEN + ATTEST_SIG_LEN)
#define ATTEST_QUOTE_VERSION 1
#define ATTEST_WHY_LEN 256          /* a `why` buffer this size never truncates */

/* The X.509 extension (non-critical) that carries a quote: the extension
 * value is the DER OCTET STRING of the 200 quote bytes.  The arc is a
 * UUID OID (ITU-T X.667: 2.25.<UUID as an integer>, no registration
 * needed; UUID 1d32ebf6-9597-4819-9093-2daf7562fc20) under which Cloister
 * numbers its own objects; .1 is the quote. */
#define ATTEST_OID_ARC "2.25.38812012623370293091328918477672217632"
#define ATTEST_QUOTE_OID ATTEST_OID_ARC ".1"

/* Common names of the certificates the cluster CA issues. */
#define ATTEST_NODE_CN_PREFIX "cloister-node-"
#define ATTEST_COORDINATOR_CN "cloister-coordinator"

typedef struct attest_quote {
    uint16_t version;
    uint8_t measurement[ATTEST_HASH_LEN];
    uint8_t pubkey_hash[ATTEST_HASH_LEN];
    uint8_t nonce[ATTEST_NONCE_LEN];
    uint8_t platform_key[ATTEST_PLATFORM_KEY_LEN];
    uint8_t signature[ATTEST_SIG_LEN];
} attest_quote;

/* ---- measurement (attest_sim.c) --------------------------------------------- */

/* SHA-256 of the file at path.  CL_OK, CL_EIO (cannot read; errno kept). */
int attest_measure_file(const char *path, uint8_t out[ATTEST_HASH_LEN])
    __attribute__((warn_unused_result));

/* SHA-256 of this process's binary (/proc/self/exe).  CL_OK or CL_EIO. */
int attest_measure_self(uint8_t out[ATTEST_HASH_LEN]) __attribute__((warn_unused_result));

/* ---- the platform: who signs quotes (attest_sim.c) -------------------------- */

/*
 * SIMULATION MODE.  The platform's attestation key stands for the CPU
 * vendor's attestation key (SGX's QE/PCK chain, TDX's, SEV's VCEK).  Here
 * it is an Ed25519 key derived deterministically from the platform root
 * key (platform.h: PLATFORM_DIR/platform.key, label "attestation"), so
 * every process given the same platform directory is "the same CPU".
 * Whoever can read platform.key can sign any quote: simulation mode does
 * not protect against the machine's operator (docs/ATTESTATION.md).
 */
typedef struct attest_platform attest_platform;

/*
 * Opens the platform in platform_dir (created, mode 0700, if missing; its
 * parent must exist).  measurement: what this platform reports as the
 * running code; NULL = measure this binary (production).  Tests pass a
 * measurement to stand in for another binary.  Also writes the public
 * attestation key, in hex, to platform_dir/attestation.pub (public data,
 * for `cloister attest --platform-key FILE`).
 * CL_OK, CL_ECONFIG / CL_EIO (platform key file; logged), CL_ECRYPTO,
 * CL_ENOMEM.
 */
int attest_platform_open(const char *platform_dir, const uint8_t *measurement,
                         attest_platform **out) __attribute__((warn_unused_result));
/* Zeroes and frees.  NULL is a no-op. */
void attest_platform_close(attest_platform *p);

/* The Ed25519 public key that verifies this platform's quotes. */
const uint8_t *attest_platform_key(const attest_platform *p);
/* The measurement this platform puts in its quotes. */
const uint8_t *attest_platform_measurement(const attest_platform *p);

/* Signs a quote over (the platform's measurement, pubkey_hash, nonce).
 * CL_OK or CL_ECRYPTO. */
int attest_quote_create(const attest_platform *p, const uint8_t pubkey_hash[ATTEST_HASH_LEN],
                        const uint8_t nonce[ATTEST_NONCE_LEN], attest_quote *out)
    __attribute__((warn_unused_result));

/* ---- encoding (attest.c) ------------------------------------------------------ */

void attest_quote_encode(const attest_quote *q, uint8_t out[ATTEST_QUOTE_LEN]);

/* Parses exactly len bytes.  CL_OK, or CL_EATTEST (wrong length, magic,
 * version or reserved bits; `why` says which).  Does not verify. */
int attest_quote_decode(const uint8_t *in, size_t len, attest_quote *q, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* ---- policy and verification (attest.c) -------------------------------------- */

/* What a verifier accepts: allowed measurements and trusted platform keys
 * (owned arrays; grow with the _add functions).  `allowed` names the
 * rule in refusals - "measurement 3fa1.. is not <allowed>" - e.g.
 * "allowed by the manifest" (a static string; NULL: "allowed by the
 * policy"). */
typedef struct attest_policy {
    const char *allowed;
    uint8_t (*measurements)[ATTEST_HASH_LEN];
    size_t n_measurements;
    uint8_t (*platform_keys)[ATTEST_PLATFORM_KEY_LEN];
    size_t n_platform_keys;
} attest_policy;

void attest_policy_init(attest_policy *p);
void attest_policy_fini(attest_policy *p);
/* Adds an entry (a duplicate is ignored).  CL_OK or CL_ENOMEM. */
int attest_policy_add_measurement(attest_policy *p, const uint8_t m[ATTEST_HASH_LEN])
    __attribute__((warn_unused_result));
int attest_policy_add_platform_key(attest_policy *p, const uint8_t k[ATTEST_PLATFORM_KEY_LEN])
    __attribute__((warn_unused_result));
/* dst = a deep copy of src (dst uninitialised).  CL_OK or CL_ENOMEM. */
int attest_policy_copy(attest_policy *dst, const attest_policy *src)
    __attribute__((warn_unused_result));

/*
 * Verifies a decoded quote, in this order: the platform key is trusted,
 * the signature is valid, the measurement is allowed, the quote is for
 * the TLS key whose hash is expect_pubkey_hash, and carries expect_nonce
 * (NULL: not checked - a quote inside a certificate, whose freshness the
 * CA vouched for when it issued the certificate).  Hashes are compared in
 * constant time.  CL_OK, or CL_EATTEST with the first failed check in why.
 */
int attest_quote_verify(const attest_quote *q, const attest_policy *pol,
                        const uint8_t expect_pubkey_hash[ATTEST_HASH_LEN],
                        const uint8_t *expect_nonce, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* ---- attested certificates (attest.c) ---------------------------------------- */

/* Adds the quote extension to a certificate being built (before it is
 * signed).  CL_OK, CL_ECRYPTO, CL_ENOMEM. */
int attest_cert_add_quote(X509 *cert, const attest_quote *q) __attribute__((warn_unused_result));

/* Extracts and decodes the quote of a certificate.  CL_OK, or CL_EATTEST
 * (no quote extension, or a malformed one). */
int attest_cert_quote(X509 *cert, attest_quote *q, char *why, size_t cap)
    __attribute__((warn_unused_result));

/*
 * Decides whether the peer presenting `cert` is an attested node: the
 * certificate carries a quote that verifies under `pol` (trusted platform,
 * allowed measurement), the quote is for this certificate's public key,
 * and the subject's common name is "cloister-node-<id>" with 1 <= id <=
 * 65535; *node_id receives the id.
 * Call it AFTER OpenSSL's chain verification against the cluster CA
 * succeeded (the handshake did that): this function does not check the
 * issuer, the signature on the certificate or its validity period.
 * CL_OK, or CL_EATTEST with why filled.
 */
int attest_verify_peer(X509 *cert, const attest_policy *pol, int *node_id, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* ---- small helpers (attest.c) ------------------------------------------------- */

/* Lowercase hex of n bytes into out (2n + 1 bytes, NUL-terminated). */
void attest_hex(const uint8_t *p, size_t n, char *out);
/* Parses exactly 2n hex digits (either case).  0 on success, -1 otherwise. */
int attest_unhex(const char *s, uint8_t *out, size_t n);

/* SHA-256 of key's DER SubjectPublicKeyInfo (what quotes bind).
 * CL_OK or CL_ECRYPTO. */
int attest_pubkey_hash(EVP_PKEY *key, uint8_t out[ATTEST_HASH_LEN])
    __attribute__((warn_unused_result));

#endif
