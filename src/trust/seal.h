/*
 * seal.h - the trust boundary for data at rest in untrusted memory.
 *
 * Cloister's threat model (README, "Threat model") treats the value arena
 * as memory outside the enclave: the adversary can read, change, copy and
 * restore it at will.  This module is the only code that moves value bytes
 * across that boundary, in both directions:
 *
 *   seal_to_untrusted()        trusted plaintext  -> untrusted ciphertext
 *   seal_open_from_untrusted() untrusted ciphertext -> trusted plaintext
 *
 * Values are sealed with AES-256-GCM.  The 16-byte tag is returned to the
 * caller, which keeps it in trusted memory (the store index), so a
 * ciphertext can only be opened against the tag of the write that made it.
 * The associated data supplied by the caller binds the ciphertext to its
 * context (the store binds key, version and flags), which is what makes a
 * value moved to another key, or an older copy put back, fail to open.
 *
 * Nonces are 12 bytes: a 4-byte domain and an 8-byte sequence number.  The
 * caller guarantees that (domain, seq) never repeats under one key; the
 * store uses its write counter (the CAS id), which only grows.
 *
 * Simulation mode: the sealing key is drawn from the OS RNG when the key
 * object is created and lives only in this process's memory.  With TEE
 * hardware it would be derived from the enclave's sealing identity; only
 * seal_key_create() changes for that.
 *
 * Threading: a seal_key is immutable after creation and may be shared; a
 * seal_ctx holds OpenSSL cipher state and must be used by one thread at a
 * time (create one per worker thread).
 */
#ifndef CLOISTER_TRUST_SEAL_H
#define CLOISTER_TRUST_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_LEN   32
#define SEAL_TAG_LEN   16
#define SEAL_NONCE_LEN 12

/* Nonce domains: one per kind of object sealed under the same key. */
enum seal_domain {
    SEAL_DOMAIN_VALUE = 1,  /* store values */
    SEAL_DOMAIN_MODULE = 2, /* function modules (runtime) */
};

typedef struct seal_key seal_key;
typedef struct seal_ctx seal_ctx;

/* Creates a fresh random sealing key.  *out is owned by the caller and must
 * be released with seal_key_destroy(), which zeroes it. */
int seal_key_create(seal_key **out) __attribute__((warn_unused_result));
void seal_key_destroy(seal_key *k);

/* Per-thread cipher context bound to key k (k must outlive it). */
int seal_ctx_create(const seal_key *k, seal_ctx **out) __attribute__((warn_unused_result));
void seal_ctx_destroy(seal_ctx *c);

/*
 * Encrypts len bytes of trusted plaintext `pt` into `untrusted_dst` (len
 * bytes; may be the arena) and writes the tag to `tag` (trusted memory).
 * `aad` (aadlen bytes) is authenticated but not stored.
 * Returns CL_OK or CL_ECRYPTO.
 */
int seal_to_untrusted(seal_ctx *c, uint32_t domain, uint64_t seq,
                      const uint8_t *aad, size_t aadlen,
                      const uint8_t *pt, size_t len,
                      uint8_t *untrusted_dst, uint8_t tag[SEAL_TAG_LEN])
    __attribute__((warn_unused_result));

/*
 * Copies len bytes of ciphertext from `untrusted_src` into `trusted_dst`
 * first (so the adversary cannot change them between check and use), then
 * authenticates them with `tag`, `aad` and the nonce and decrypts in place.
 * On CL_OK trusted_dst holds the plaintext.  On CL_EINTEGRITY (tag
 * mismatch: altered, moved or stale ciphertext) trusted_dst is zeroed and
 * must not be shown to anyone.  CL_ECRYPTO on library failure.
 */
int seal_open_from_untrusted(seal_ctx *c, uint32_t domain, uint64_t seq,
                             const uint8_t *aad, size_t aadlen,
                             const uint8_t *untrusted_src, size_t len,
                             const uint8_t tag[SEAL_TAG_LEN],
                             uint8_t *trusted_dst)
    __attribute__((warn_unused_result));

/* A keyed 64-bit fingerprint of `data` for log lines, so that an item can
 * be named in a log without revealing its key.  Stable for the lifetime
 * of k. */
uint64_t seal_fingerprint(const seal_key *k, const uint8_t *data, size_t len);

/* Constant-time comparison: 0 when equal. */
int seal_memcmp_ct(const void *a, const void *b, size_t len);

#endif
