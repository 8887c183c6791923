/*
 * http.h - a small HTTP/1.1 client over a client_conn (conn.h): one
 * request, one response, as the `cloister` CLI needs.
 *
 * The response parser reads the status line and headers (at most
 * CLIENT_HTTP_MAX_HEAD bytes), then the body framed by Content-Length,
 * by chunked transfer coding, or by the end of the connection.  The body
 * can be collected whole, or handed over piece by piece as it arrives
 * (on_body), which is how `cloister deploy` shows the node's progress
 * stream while it compiles.  Every length from the wire is checked before
 * it is used.
 */
#ifndef CLOISTER_CLIENT_HTTP_H
#define CLOISTER_CLIENT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "conn.h"

#define CLIENT_HTTP_MAX_HEAD (64 * 1024)
#define CLIENT_HTTP_MAX_BODY ((size_t)1 << 30)   /* collected bodies */

typedef struct client_http_header {
    const char *name;
    const char *value;
} client_http_header;

typedef struct client_http_response {
    int status;                 /* 200, 404, ... */
    char reason[128];           /* "OK" */
    char content_type[128];     /* "" when absent */
    cl_buf body;                /* the body, unless on_body took it */
} client_http_response;

/* Receives body bytes as they arrive (after de-chunking).  Returns 0 to
 * go on, nonzero to stop reading (the request then fails with CL_EIO). */
typedef int (*client_http_body_fn)(void *arg, const client_http_response *head,
                                   const uint8_t *data, size_t len);

void client_http_response_init(client_http_response *r);
void client_http_response_fini(client_http_response *r);

/*
 * Sends `method path` with the given headers (Host and Content-Length
 * are added) and body, then reads the one response.  The connection is
 * good for nothing else afterwards: close it.
 * With on_body, body bytes go there instead of into resp->body.
 * Returns CL_OK (any HTTP status), or CL_EIO / CL_ETLS / CL_EAGAIN /
 * CL_EPROTO (malformed response) with a line in err.
 */
int client_http_request(client_conn *c, const char *method, const char *path,
                        const client_http_header *headers, size_t nheaders,
                        const uint8_t *body, size_t len,
                        client_http_response *resp, client_http_body_fn on_body, void *arg,
                        char *err, size_t errlen);

/* Percent-encodes s for a path segment or query value into out (cap
 * bytes with the NUL).  0, or -1 when it does not fit. */
int client_http_escape(const char *s, char *out, size_t cap);

#endif
