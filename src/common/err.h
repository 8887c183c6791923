/*
 * err.h - the one error vocabulary of Cloister.
 *
 * Every fallible function returns an int that is CL_OK (0) or a negative
 * CL_E* code from the table below; results travel through out-parameters.
 * The table is an X-macro so that the enum and cl_strerror() can never
 * disagree.  Codes are stable: add new rows at the end.
 *
 * These are internal codes.  What a *client* sees (memcached CLIENT_ERROR /
 * SERVER_ERROR lines, HTTP statuses) is mapped from them by each front door.
 */
#ifndef CLOISTER_COMMON_ERR_H
#define CLOISTER_COMMON_ERR_H

#define CL_ERRNO_MAP(X)                                                       \
    X(NOMEM,     1, "out of memory")                                          \
    X(INVAL,     2, "invalid argument")                                       \
    X(NOTFOUND,  3, "not found")                                              \
    X(EXISTS,    4, "already exists")                                         \
    X(NOTSTORED, 5, "not stored")                                             \
    X(TOOBIG,    6, "object too large")                                       \
    X(BADKEY,    7, "bad key (empty, too long or containing control bytes)")  \
    X(INTEGRITY, 8, "integrity check failed: sealed value was altered, "      \
                    "moved or rolled back")                                   \
    X(NONNUMERIC,9, "value is not a decimal 64-bit unsigned number")          \
    X(IO,       10, "I/O error")                                              \
    X(TLS,      11, "TLS error")                                              \
    X(CRYPTO,   12, "cryptographic library failure")                          \
    X(FULL,     13, "out of memory storing object")                           \
    X(AGAIN,    14, "resource temporarily unavailable")                       \
    X(CLOSED,   15, "connection closed")                                      \
    X(PROTO,    16, "protocol error")                                         \
    X(CONFIG,   17, "bad configuration")                                      \
    X(CONFLICT, 18, "version conflict")                                       \
    X(TIMEDOUT, 19, "timed out")                                              \
    X(STALE,    20, "lease expired: the lock has moved on to another holder") \
    X(NOQUORUM, 21, "no quorum: too few replicas reachable")                  \
    X(ATTEST,   22, "attestation failed")                                     \
    X(UNSUPPORTED, 23, "not supported on a replicated store")

enum {
    CL_OK = 0,
#define CL_ERR_ENUM_(name, num, msg) CL_E##name = -(num),
    CL_ERRNO_MAP(CL_ERR_ENUM_)
#undef CL_ERR_ENUM_
};

/* Human-readable text for a CL_E* code (or CL_OK); never NULL. */
const char *cl_strerror(int err);

/* Short symbolic name ("CL_EINTEGRITY"); never NULL. */
const char *cl_errname(int err);

#endif
