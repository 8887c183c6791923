/*
 * conn.h - one client connection to a Cloister node: TCP, then TLS 1.3
 * (OpenSSL) unless plaintext was asked for.
 *
 * The client library's HTTP (http.h) and memcached (mc.h) speakers sit
 * on top of this; the `cloister` CLI is their user.  A connection is
 * blocking with a per-operation timeout (SO_RCVTIMEO / SO_SNDTIMEO), which
 * is all a command-line client needs.
 *
 * TLS: the server certificate is verified against --ca (or the system's
 * trust store when none is given) and against the host that was dialled
 * (IP address or DNS name); a client certificate is presented when one is
 * configured.  Nothing is ever sent before the handshake succeeded.
 *
 * Errors: every function returns CL_OK or a CL_E* code and, on failure,
 * writes one line for the user into the caller's error buffer, e.g.
 * "cannot connect to 127.0.0.1:8080: Connection refused".
 */
#ifndef CLOISTER_CLIENT_CONN_H
#define CLOISTER_CLIENT_CONN_H

#include <stddef.h>
#include <stdint.h>

typedef struct client_tls {
    int plaintext;            /* 1: no TLS */
    const char *ca_file;      /* PEM CA to verify the node against; NULL: system store */
    const char *cert_file;    /* client certificate (PEM), or NULL */
    const char *key_file;     /* its key, or NULL */
} client_tls;

typedef struct client_conn client_conn;

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port.  0 or -1. */
/* Formats a message into err (if given) and returns rc: the one way the
 * client library reports an error. */
int client_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

int client_split_addr(const char *addr, char *host, size_t hostcap, char *port, size_t portcap);

/*
 * Connects to addr ("HOST:PORT") within timeout_ms and, unless
 * tls->plaintext, completes a verified TLS 1.3 handshake.  Returns CL_OK,
 * CL_EINVAL (bad address), CL_EIO (connect failed; err says why, with
 * the errno text), CL_ETLS (handshake or verification failed),
 * CL_ECONFIG (certificate files unusable).
 */
int client_conn_open(const char *addr, const client_tls *tls, int timeout_ms,
                     client_conn **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void client_conn_close(client_conn *c);

/* Sends all n bytes.  CL_OK, CL_EIO / CL_ETLS (err filled). */
int client_conn_write(client_conn *c, const void *p, size_t n, char *err, size_t errlen);

/* Reads at least 1 byte (at most cap) into p; *got = 0 means the peer
 * closed.  CL_OK, CL_EAGAIN (timed out), CL_EIO / CL_ETLS. */
int client_conn_read(client_conn *c, void *p, size_t cap, size_t *got, char *err, size_t errlen);

/* Changes the timeout of later reads and writes. */
void client_conn_set_timeout(client_conn *c, int timeout_ms);

/* "host:port" as dialled. */
const char *client_conn_addr(const client_conn *c);

#endif
