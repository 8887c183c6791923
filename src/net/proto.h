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
 *
 * Asynchronous completion: a protocol whose request must wait for slow
 * work (an invocation on another thread, a deploy) suspends the
 * connection instead of blocking - see net_conn_suspend below.
 */
#ifndef CLOISTER_NET_PROTO_H
#define CLOISTER_NET_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"

typedef struct net_conn net_conn;     /* a connection (net/server.c) */
typedef struct net_waker net_waker;   /* resumes one suspension */

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
     * resynchronised).  Must not block: work that must wait suspends the
     * connection (net_conn_suspend), and the call after the resume,
     * which may have len == 0, continues it.
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

/*
 * ---- Asynchronous completion ----------------------------------------------
 *
 * Inside process(), a protocol may call net_conn_suspend(conn): once
 * process returns, the loop writes what is in `out` but neither calls
 * process again nor reads the connection (input already read stays
 * buffered; what the client sends meanwhile waits in the socket) until
 * the returned waker is resumed.  net_waker_resume may be called from any
 * thread, once per waker; the owning worker then calls process again - at
 * least once even with no input (len 0) - and the protocol completes the
 * request it left pending, then goes on with the buffered input.
 *
 * Ownership: the waker is a small refcounted token shared by the loop and
 * the protocol.  The protocol owns one reference from net_conn_suspend
 * and gives it up by calling net_waker_resume exactly once, from whatever
 * thread finishes the work (it is the only way to release it).  A waker
 * outlives its connection: if the client goes away (a reset is noticed
 * while suspended; an end of stream after the resume), or the server
 * stops, the connection closes as usual - session_fini runs on the
 * worker - and the waker goes dead: net_waker_alive returns 0 and
 * net_waker_resume only drops the reference.  So pending work must keep
 * its own state outside the session (the session is freed when the
 * connection closes), reach the connection only through the waker, and
 * may check net_waker_alive to give up early.  A waker never touches the
 * server after its connection closed: resuming after net_server_destroy
 * is safe.
 *
 * If process asks to close, the close wins; suspending twice in one call
 * keeps only the second waker live.
 */

/* The connection serving `session` (a pointer the loop passed to
 * session_init or process).  Worker thread only. */
net_conn *net_session_conn(void *session);

/* Suspends conn after the current process call (worker thread, inside
 * process only).  Returns the waker (one reference for the caller), or
 * NULL when out of memory (then nothing is suspended). */
net_waker *net_conn_suspend(net_conn *conn) __attribute__((warn_unused_result));

/* Resumes the suspended connection, or does nothing if it has closed; in
 * both cases gives up the caller's reference.  Any thread. */
void net_waker_resume(net_waker *w);

/* 1 while the waker's connection is open.  Any thread; a hint only (the
 * connection may close right after). */
int net_waker_alive(net_waker *w);

#endif
