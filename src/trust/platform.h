/*
 * platform.h - the platform's persistent sealing key and the keys derived
 * from it (simulation backend).
 *
 * Some state must survive a restart of the node and stay authentic while
 * it sits on the untrusted disk: today the compile cache (compile.c MACs
 * every compiled function with a key derived here), later sealed state of
 * other layers.  On TEE hardware the root of that is the CPU's sealing
 * identity (SGX EGETKEY with the enclave's MRENCLAVE/MRSIGNER policy, the
 * TDX/SEV equivalents): a key only the same code on the same CPU can
 * re-derive, which never exists outside the enclave.
 *
 * SIMULATION MODE: there is no such hardware here, so the root key is 32
 * random bytes in the file STATE_DIR/platform.key (mode 0600), created on
 * first use.  Whoever can read that file -- the machine's operator, root,
 * anyone with the disk -- can derive every key below, and so forge a
 * compile-cache entry or read what is sealed under them.  The file stops
 * other unprivileged users and detects accidental corruption; it does not
 * protect against the operator.  Only platform_key_load() changes when a
 * hardware backend is added; derivation and every caller stay as they are.
 *
 * Derived keys: HKDF-SHA256 (RFC 5869) of the root key, with a fixed salt
 * and a purpose label as `info`, so each purpose ("compile-cache", ...)
 * gets an independent key and no two purposes can be confused.
 *
 * Key material: callers keep keys in their own memory for as short a time
 * as they can and wipe them with platform_key_wipe() on every exit path.
 * Nothing here logs a key.  Thread-safe (no global state).
 */
#ifndef CLOISTER_TRUST_PLATFORM_H
#define CLOISTER_TRUST_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#define PLATFORM_KEY_LEN 32
#define PLATFORM_KEY_FILE "platform.key"

/*
 * Loads the root key from state_dir/platform.key into key, creating the
 * file (32 random bytes, mode 0600, written to a temporary file and
 * linked into place, so a reader never sees a partial key and two
 * processes starting at once end up with the same key) if it does not
 * exist.  state_dir must exist.
 * Returns CL_OK; CL_ECONFIG when the file is not a regular file, has the
 * wrong size, or is readable or writable by group or others (a message
 * saying which is logged); CL_EIO on I/O errors; CL_ECRYPTO if the RNG
 * fails.  On failure key is zeroed.
 */
int platform_key_load(const char *state_dir, uint8_t key[PLATFORM_KEY_LEN])
    __attribute__((warn_unused_result));

/*
 * Derives the key for purpose `label` (a short ASCII word such as
 * "compile-cache") from the root key: HKDF-SHA256(salt =
 * "cloister platform v1", ikm = root, info = label), 32 bytes.
 * Deterministic: the same root and label always give the same key.
 * Returns CL_OK or CL_ECRYPTO (out zeroed).
 */
int platform_derive(const uint8_t root[PLATFORM_KEY_LEN], const char *label,
                    uint8_t out[PLATFORM_KEY_LEN])
    __attribute__((warn_unused_result));

/* Zeroes key material in a way the compiler cannot optimise away. */
void platform_key_wipe(void *key, size_t len);

#endif
