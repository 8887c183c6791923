/*
 * cloister/function.h - the ABI between a Cloister function and its node.
 *
 * A function is a WebAssembly module (built e.g. with
 * `clang-14 --target=wasm32-wasi -mexec-model=reactor`) or a native shared
 * object built from C against this same header.  It exports
 *
 *     int32_t handle(void);
 *
 * which runs once per invocation: 0 answers HTTP 200 with the output as the
 * body; any other value answers HTTP 500 with the output as the body.  An
 * optional `void init(void)` export runs once when the function's memory
 * template is made (after a reactor's `_initialize`), so state it builds
 * is shared copy-on-write by every instance.
 *
 * The functions below are imported from module "cloister" under their
 * name without the `cloister_` prefix ("input", "kv_get", ...).  Keys are
 * byte strings of at least 1 byte, always inside the calling function's
 * tenant namespace: a function can neither name nor reach another
 * tenant's keys.  The namespace prefix takes 3 + (tenant name length) of
 * the store's 250 bytes (240 left for tenant "default"); longer keys fail
 * with CLOISTER_ETOOBIG.  Values are at most the node's --max-value.
 *
 * Return codes: >= 0 success; the negative CLOISTER_E* codes below.
 * Pointers are into the function's own memory; a range that is not
 * entirely inside it fails the call with CLOISTER_EFAULT (it never traps
 * the node).  A native function reads and writes its own pointers in its
 * worker process, so a bad pointer there crashes that invocation (HTTP
 * 500) instead; the worker is replaced.
 */
#ifndef CLOISTER_FUNCTION_H
#define CLOISTER_FUNCTION_H

#include <stdint.h>

#define CLOISTER_ENOTFOUND    (-1)  /* no such key */
#define CLOISTER_ECONFLICT    (-2)  /* cas: the version did not match */
#define CLOISTER_ETOOBIG      (-3)  /* key or value too large; output limit reached */
#define CLOISTER_EFULL        (-4)  /* the store is full */
#define CLOISTER_EINTEGRITY   (-5)  /* the stored value failed authentication */
#define CLOISTER_ETIMEDOUT    (-6)  /* lock: not acquired within the timeout */
#define CLOISTER_ENOTHELD     (-7)  /* unlock: the caller does not hold the lock */
#define CLOISTER_EINVAL       (-8)  /* bad argument (e.g. empty key) */
#define CLOISTER_EFAULT       (-9)  /* a pointer/length pair outside the function's memory */
#define CLOISTER_ENOTNUMBER   (-10) /* kv_incr: the value is not a decimal integer */
#define CLOISTER_EUNAVAILABLE (-11) /* the store cannot answer now (e.g. no quorum) */

#if defined(__wasm__)
#define CLOISTER_IMPORT(name) __attribute__((import_module("cloister"), import_name(name)))
#define CLOISTER_EXPORT(name) __attribute__((export_name(name)))
#else
#define CLOISTER_IMPORT(name)
#define CLOISTER_EXPORT(name) __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Copies up to cap bytes of the request body into buf; returns the body's
 * full length (call with cap 0 to learn it). */
CLOISTER_IMPORT("input")
int32_t cloister_input(uint8_t *buf, uint32_t cap);

/* Appends len bytes to the response body.  0, or CLOISTER_ETOOBIG when the
 * invocation's output limit would be exceeded (nothing is appended). */
CLOISTER_IMPORT("output")
int32_t cloister_output(const uint8_t *buf, uint32_t len);

/* Reads key: returns the value's length (its first min(len, cap) bytes
 * copied to buf) and, if version is not NULL, its version (changes on
 * every write).  CLOISTER_ENOTFOUND, CLOISTER_EINTEGRITY, ... */
CLOISTER_IMPORT("kv_get")
int64_t cloister_kv_get(const uint8_t *key, uint32_t klen, uint8_t *buf, uint32_t cap,
                        uint64_t *version);

/* Writes key = val.  0 or a negative error. */
CLOISTER_IMPORT("kv_set")
int32_t cloister_kv_set(const uint8_t *key, uint32_t klen, const uint8_t *val, uint32_t vlen);

/* Deletes key.  0 or CLOISTER_ENOTFOUND. */
CLOISTER_IMPORT("kv_delete")
int32_t cloister_kv_delete(const uint8_t *key, uint32_t klen);

/* Writes key = val only if its version is expected_version (0: only if
 * the key does not exist).  0, or CLOISTER_ECONFLICT. */
CLOISTER_IMPORT("kv_cas")
int32_t cloister_kv_cas(const uint8_t *key, uint32_t klen, uint64_t expected_version,
                        const uint8_t *val, uint32_t vlen);

/* Atomically adds delta to the decimal integer stored at key (a missing
 * key counts as 0; the result is clamped to [0, 2^63-1]) and stores
 * the result in *result (if not NULL).  0, CLOISTER_ENOTNUMBER, ... */
CLOISTER_IMPORT("kv_incr")
int32_t cloister_kv_incr(const uint8_t *key, uint32_t klen, int64_t delta, int64_t *result);

/* Batch get.  `keys` holds n keys, each a little-endian u32 length and its
 * bytes (keys_len bytes in all).  For each key in order, writes to buf a
 * little-endian i32 (the value's length, or a negative CLOISTER_E* code)
 * followed by the value's bytes.  Returns the bytes the full answer needs;
 * when that is more than cap, buf holds only the entries that fit whole
 * and the caller can retry with a larger buffer. */
CLOISTER_IMPORT("kv_get_many")
int64_t cloister_kv_get_many(const uint8_t *keys, uint32_t keys_len, uint32_t n,
                             uint8_t *buf, uint32_t cap);

/* Release-consistent locks (PSL): acquire lock `name` (in the tenant's
 * namespace), waiting at most timeout_ms.  Writes made while holding a
 * lock are visible to its next holder.  A lock is released by unlock, or
 * automatically when the invocation ends.  0, CLOISTER_ETIMEDOUT. */
CLOISTER_IMPORT("lock")
int32_t cloister_lock(const uint8_t *name, uint32_t nlen, uint32_t timeout_ms);

/* 0, or CLOISTER_ENOTHELD. */
CLOISTER_IMPORT("unlock")
int32_t cloister_unlock(const uint8_t *name, uint32_t nlen);

/* Appends one line to the function's log (`cloister logs NAME`). */
CLOISTER_IMPORT("log")
void cloister_log(const uint8_t *msg, uint32_t len);

#ifdef __cplusplus
}
#endif

#endif
