/*
 * api.h - the node's HTTP API as C calls: deploy, invoke, list, remove,
 * logs (src/frontdoor/http.h is the server side and lists the routes).
 *
 * Each call opens one connection (conn.h), makes one request (http.h)
 * and closes it.  The tenant, when given, travels as the `tenant` query
 * parameter; without it the node uses its default tenant.
 *
 * Results: CL_OK for a 2xx answer.  For any other HTTP status the call
 * returns CL_EPROTO with *status set and err holding the node's own
 * explanation (the "error" member of its JSON answer, or its text).
 * Transport failures return CL_EIO / CL_ETLS / CL_EAGAIN (status 0) with
 * err saying what failed (callers add what to do about it).
 *
 * Called by the `cloister` CLI (src/cli/).
 */
#ifndef CLOISTER_CLIENT_API_H
#define CLOISTER_CLIENT_API_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "conn.h"
#include "http.h"

typedef struct client_node {
    const char *http_addr;       /* "HOST:PORT" of the gateway */
    client_tls tls;
    int connect_timeout_ms;      /* 0: 5000 */
    int timeout_ms;              /* per read/write; 0: 60000 */
} client_node;

/* A function as the node describes it (GET /system/functions). */
typedef struct client_fn {
    char name[65];
    char tenant[65];
    char kind[16];               /* "wasm" / "native" */
    char sha256[65];             /* hex */
    uint64_t size;               /* module bytes */
    int64_t deployed_at;         /* Unix seconds */
    uint64_t invocations, errors;
    int cached;                  /* deploy answers: compiled code came from the cache (-1 unknown) */
} client_fn;

/* Deploy progress: stage ("validate", "translate", "compile", "load",
 * "template", ...) and percent 0..100. */
typedef void (*client_progress_fn)(void *arg, const char *stage, int pct);

/* POST /system/functions?name=NAME&progress=1.  progress may be NULL.
 * On CL_OK, *out describes the deployed function. */
int client_deploy(const client_node *n, const char *tenant, const char *name,
                  const uint8_t *module, size_t len, client_progress_fn progress, void *arg,
                  client_fn *out, int *status, char *err, size_t errlen);

/* POST /function/NAME.  Returns CL_OK whenever the node answered (any
 * status): resp has the status and the body, which the caller prints. */
int client_invoke(const client_node *n, const char *tenant, const char *name,
                  const uint8_t *input, size_t len, client_http_response *resp,
                  char *err, size_t errlen);

/* GET /system/functions.  *fns is malloc()ed (free it), *count set. */
int client_list(const client_node *n, const char *tenant, client_fn **fns, size_t *count,
                int *status, char *err, size_t errlen);

/* DELETE /system/functions?name=NAME. */
int client_remove(const client_node *n, const char *tenant, const char *name,
                  int *status, char *err, size_t errlen);

/* GET /system/functions/NAME/logs: the text replaces out's contents. */
int client_logs(const client_node *n, const char *tenant, const char *name, cl_buf *out,
                int *status, char *err, size_t errlen);

/* The explanation in an error answer: its JSON "error" member, else its
 * text (first line, bounded), else the reason phrase.  Writes to msg. */
void client_error_message(const client_http_response *resp, char *msg, size_t cap);

#endif
