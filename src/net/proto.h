/*
 * proto.h - how a request/response protocol plugs into the event loop.
 *
 * The network layer (net/server.c) owns sockets, TLS and buffering; a
 * protocol (the memcached front door today; the HTTP gateway and peer RPC
 * later) only turns input bytes into output bytes.  This header is the
 * whole contract between them, so a front door never touches a socket and
 * the loop never parses a request.
 *
 * Threading: every callback runs on the worker thread that owns the
 * connection; a session is never used by two threads.
 */
#ifndef CLOISTER_NET_PROTO_H
#define CLOISTER_NET_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

typedef struct net_proto {
    const char *name;                      /* for logs: "memcached", "http" */

    /* Per worker thread: called once on the thread before it serves, with
     * the listener's proto_arg and the thread index.  Returns the thread
     * state passed to every other callback, or NULL on failure (the
     * server then fails to start). */
    void *(*thread_init)(void *proto_arg, int thread_index);
    void (*thread_fini)(void *thread_state);

    /* Per connection: the loop allocates session_size zeroed bytes and
     * calls session_init; session_fini runs when the connection closes
     * for any reason (including a client that vanished mid-request). */
    size_t session_size;
    void (*session_init)(void *session, void *thread_state);
    void (*session_fini)(void *session, void *thread_state);

    /*
     * Consumes as many complete requests from in[0, len) as it can,
     * appending their replies to out, and returns how many bytes it
     * consumed.  Bytes of an incomplete request are left unconsumed; the
     * loop calls again with them at the front once more bytes arrive.
     * Sets *close = 1 to close the connection after `out` is flushed
     * (quit, or a protocol error after which the stream cannot be
     * resynchronised).  Must not block.
     *
     * *want, when set nonzero, tells the loop how many bytes in total the
     * pending request needs (e.g. a 1 MiB value), so it can read them
     * without repeated reallocation; 0 when unknown.
     */
    size_t (*process)(void *session, void *thread_state,
                      const uint8_t *in, size_t len, cl_buf *out,
                      int *close, size_t *want);

    /* Upper bound on buffered unconsumed input per connection; past it the
     * loop closes the connection (protects memory against a client that
     * sends a never-ending request). */
    size_t max_pending;
} net_proto;

#endif
