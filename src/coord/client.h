/*
 * client.h - talking to the coordinator (coord.h) from a node
 * (join.c) or from `cloister attest`: a blocking TLS connection that is
 * trusted only after the coordinator proved, by a fresh quote, that it
 * runs allowed code on a trusted platform and holds this connection's
 * TLS key.
 *
 * The handshake itself verifies nothing (the caller does not know the
 * cluster CA yet - obtaining it is the point); coord_client_open then
 * sends a random nonce, gets the coordinator's quote, and checks it
 * against the caller's policy and the key of the certificate the
 * coordinator presented in this handshake (TLS 1.3 proved possession of
 * that key).  It also checks that the coordinator's certificate was issued
 * by the CA it sends, so the CA handed to the caller is the one the
 * attested coordinator signs with.
 *
 * One connection per caller; not thread-safe.
 */
#ifndef CLOISTER_COORD_CLIENT_H
#define CLOISTER_COORD_CLIENT_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/x509.h>

#include "../trust/attest.h"

typedef struct coord_client coord_client;

/*
 * Connects to addr ("HOST:PORT") and attests the coordinator under
 * `expect` (allowed coordinator measurements, trusted platform keys).
 * timeout_ms bounds the connect and every later read and write.
 * CL_OK, or CL_EINVAL (address), CL_EIO (connect; why has the errno
 * text), CL_ETLS (handshake), CL_EPROTO (not a coordinator reply),
 * CL_EATTEST (the coordinator failed attestation; why says how).
 */
int coord_client_open(const char *addr, const attest_policy *expect, int timeout_ms,
                      coord_client **out, char *why, size_t cap)
    __attribute__((warn_unused_result));

void coord_client_close(coord_client *c);

/* The cluster CA the attested coordinator sent (borrowed). */
X509 *coord_client_ca(const coord_client *c);
/* The coordinator's verified quote (its measurement and platform). */
const attest_quote *coord_client_quote(const coord_client *c);

/*
 * Sends req (one JSON object; borrowed) and reads one reply object into
 * *reply (the caller's reference).  A reply {"error": reason, "code": n}
 * is returned as that code (CL_EPROTO if n is not one) with why = "the
 * coordinator refused: <reason>" and *reply NULL.  CL_OK, CL_EIO / CL_ETLS / CL_EAGAIN (timed out) /
 * CL_ECLOSED, CL_EPROTO (malformed reply), or the refusal's code.
 */
int coord_client_call(coord_client *c, json_t *req, json_t **reply, char *why, size_t cap)
    __attribute__((warn_unused_result));

#endif
