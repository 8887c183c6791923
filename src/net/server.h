/*
 * server.h - the multi-threaded event loop that serves net_proto protocols.
 *
 * A server has one or more listeners (an address, a protocol from
 * net/proto.h, its argument, and a TLS context or NULL for plaintext), one
 * acceptor thread and N worker threads.  Each listener has one listening
 * socket; the acceptor accepts on all of them and hands every new
 * connection to the worker with the fewest connections (ties in turn),
 * so connections are spread evenly and deterministically.  A connection
 * then lives and dies on that worker, which owns an epoll instance for
 * its connections.  Nothing about a connection is shared between threads,
 * so the data path takes no locks.
 *
 * Lifecycle (all from one controlling thread, usually main):
 *   net_server_create   binds every listening socket (so the bound port of
 *                       a "HOST:0" listener is known before start; an
 *                       address already listened on fails here)
 *   net_server_start    starts the workers, each calls proto->thread_init,
 *                       then the acceptor
 *   net_server_stop     wakes every thread; workers close every connection
 *                       (session_fini) and call thread_fini; joins them
 *   net_server_destroy  stops if needed, closes the listening sockets
 *
 * Process-wide side effects of net_server_create: SIGPIPE is ignored (a
 * peer that vanished must cost an EPIPE, not the process) and the
 * RLIMIT_NOFILE soft limit is raised to the hard limit.
 *
 * The threading model and per-thread ownership are described at the top
 * of server.c.
 */
#ifndef CLOISTER_NET_SERVER_H
#define CLOISTER_NET_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "proto.h"

typedef struct net_server net_server;

typedef struct net_listener_config {
    const char *addr;        /* "HOST:PORT", "[V6]:PORT"; port 0 = any free port */
    const net_proto *proto;  /* not copied: must outlive the server */
    void *proto_arg;         /* handed to proto->thread_init */
    SSL_CTX *ssl_ctx;        /* NULL: plaintext.  The server takes its own
                                reference (SSL_CTX_up_ref). */
} net_listener_config;

typedef struct net_server_config {
    const net_listener_config *listeners; /* copied; strings need not outlive the call */
    size_t n_listeners;                   /* >= 1 */
    int threads;                          /* worker threads; <= 0: number of CPUs */
    int backlog;                          /* listen(2) backlog; <= 0: 1024 */
} net_server_config;

/* Counters summed over the workers (or of one worker: see
 * net_server_get_thread_stats); may lag a few operations. */
typedef struct net_stats {
    uint64_t curr_connections;   /* open now */
    uint64_t total_connections;  /* accepted since start */
    uint64_t rejected_connections; /* refused: out of file descriptors or memory */
    uint64_t tls_handshake_failures;
    uint64_t bytes_read;         /* application bytes (after TLS decryption) */
    uint64_t bytes_written;      /* application bytes (before TLS encryption) */
    uint64_t buffer_bytes;       /* capacity of connection input/output buffers held now */
    uint64_t threads;
} net_stats;

/*
 * Binds all listeners.  Returns CL_OK, CL_EINVAL (bad address or config;
 * the address is logged), CL_EIO (socket/bind/listen failed; logged with
 * the address and errno), CL_ENOMEM.  Nothing runs until net_server_start.
 */
int net_server_create(const net_server_config *cfg, net_server **out)
    __attribute__((warn_unused_result));

/*
 * Starts the worker threads and waits until each has run thread_init for
 * every listener.  Returns CL_OK, or CL_EINVAL if a thread_init returned
 * NULL / CL_ENOMEM if a thread could not be created (the server is then
 * stopped again and may only be destroyed).
 */
int net_server_start(net_server *s) __attribute__((warn_unused_result));

/* Stops serving: closes every connection, runs session_fini and
 * thread_fini, joins the workers.  Returns promptly even with clients
 * connected.  Idempotent. */
void net_server_stop(net_server *s);

/* Stops if running, closes listening sockets, frees.  NULL is a no-op. */
void net_server_destroy(net_server *s);

/* Number of worker threads. */
int net_server_threads(const net_server *s);

/* The address listener i is bound to (with the real port when 0 was
 * asked).  Returns CL_OK or CL_EINVAL (no such listener). */
int net_server_listener_addr(const net_server *s, size_t i,
                             struct sockaddr_storage *out, socklen_t *outlen);

/* The same as text, "127.0.0.1:40123" (see net/addr.h).  Returns buf. */
char *net_server_listener_name(const net_server *s, size_t i, char *buf, size_t cap);

/* Connection counters; safe from any thread at any time. */
void net_server_get_stats(const net_server *s, net_stats *out);

/* The counters of worker `thread` (0 <= thread < net_server_threads) alone,
 * with out->threads = 1; connections refused by the acceptor before any
 * worker saw them count only in net_server_get_stats.  Safe from any
 * thread at any time.  Returns CL_OK, or CL_EINVAL (no such thread; *out
 * is zeroed). */
int net_server_get_thread_stats(const net_server *s, int thread, net_stats *out);

#endif
