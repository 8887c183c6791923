/*
 * mc.h - the memcached front door: memcached 1.6's text and meta protocols
 * (doc/protocol.txt of memcached 1.6.18) executed against the store.
 *
 * The front door turns request bytes into reply bytes and nothing else: it
 * never touches a socket (the event loop in net/ calls it through the
 * net_proto vtable `mc_net_proto`), and unit tests and the fuzzer drive a
 * session directly with mc_session_process().
 *
 * Objects and lifetimes:
 *   mc_context  one per listener, filled in by the daemon, outlives every
 *               thread and session; read-only for the front door except
 *               the atomic counters at its end (zero-initialise the struct).
 *   mc_thread   one per worker thread (owns a store_thread); used by that
 *               thread only.
 *   mc_session  one per connection, caller-allocated (net allocates
 *               session_size zeroed bytes); no heap memory of its own
 *               except, on a cluster, the operation of a request that
 *               suspended the connection (see mc_text.c).
 *
 * Replies are appended to a caller-owned cl_buf; in steady state nothing is
 * allocated per request (the buffer keeps its capacity).
 */
#ifndef CLOISTER_FRONTDOOR_MC_H
#define CLOISTER_FRONTDOOR_MC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "../net/proto.h"
#include "../store/store.h"

/* Longest request line, "\r\n" excluded: retrieval commands (get, gets,
 * gat, gats) may carry many keys; every other line is short.  A longer
 * line gets "CLIENT_ERROR line too long" and the connection is closed. */
#define MC_LINE_MAX      (8u * 1024)
#define MC_LINE_MAX_GET  (64u * 1024)

/* Replies one mc_session_process call produces before it returns early;
 * equal to the event loop's output high-water mark. */
#define MC_OUT_BATCH     (256u * 1024)

/* Counters only the front door sees; summed over all threads with atomic
 * adds (they change on rare paths only). */
typedef struct mc_counters {
    uint64_t store_too_large;   /* writes refused: value larger than max_value */
    uint64_t client_errors;     /* CLIENT_ERROR and ERROR replies sent */
} mc_counters;

/* What "version" and "STAT version" report by default: the memcached
 * protocol level first, because clients parse it (libmemcached refuses a
 * server whose major version is 0, so "0.1.0" alone breaks memcstat). */
#ifndef CLOISTER_VERSION
#define CLOISTER_VERSION "unknown"   /* normally set by CMake */
#endif
#define MC_VERSION_DEFAULT "1.6.18-cloister-" CLOISTER_VERSION

typedef struct mc_context {
    store *store;               /* required; not owned */
    struct repl *repl;          /* non-NULL on a cluster: commands go through the
                                   replicated store (kv/kv.h); not owned */
    const char *version;        /* "VERSION <version>"; NULL = MC_VERSION_DEFAULT.
                                   Its major number must not be 0 (see above). */
    int64_t started;            /* Unix seconds the daemon started (stats uptime) */
    int threads;                /* worker threads (stats threads) */
    int tls;                    /* 1 when this listener speaks TLS (stats tls) */
    /* Connection gauges for stats; NULL reports 0. */
    void (*conn_stats)(void *arg, uint64_t *curr, uint64_t *total);
    void *conn_stats_arg;
    /* Shown by `stats settings` (NULL strings are shown as "NULL"). */
    const char *listen;         /* "HOST:PORT" */
    const char *arena_file;
    int evict_lru;              /* the store was created with evict_lru */
    mc_counters counters;       /* internal: zero-initialise, never write */
} mc_context;

typedef struct mc_thread mc_thread;

typedef struct kv_pending kv_pending;

typedef struct mc_session {
    mc_thread *thr;
    uint64_t swallow;           /* bytes of a refused data block still to discard */
    kv_pending *pend;           /* cluster: the suspended request's get or set (mc_text.c) */
    int pend_kind;              /* MC_PEND_GET or MC_PEND_SET */
} mc_session;

/* Per worker thread.  CL_OK, CL_ENOMEM, or the error of store_thread_create.
 * ctx must outlive the thread state. */
int mc_thread_create(mc_context *ctx, mc_thread **out) __attribute__((warn_unused_result));
void mc_thread_destroy(mc_thread *t);

/* Per connection (caller-allocated). */
void mc_session_init(mc_session *s, mc_thread *t);
void mc_session_fini(mc_session *s);

/*
 * Consumes complete requests from in[0, len), appends their replies to out
 * and returns the number of bytes consumed.  An incomplete request (a line
 * without its "\n", or a storage command whose data block has not all
 * arrived) is left unconsumed; for the latter *want is set to the total
 * number of bytes that request needs.  *close is set after quit, after a
 * line that is too long, and when a reply could not be buffered (out of
 * memory); the caller flushes `out` and closes.  Once a call has added
 * MC_OUT_BATCH bytes of replies it returns early, leaving complete requests
 * unconsumed: the caller writes, then calls again with the rest (as
 * net/server.c does), without waiting for more input.  Splitting the same
 * input at any points across calls yields the same replies.
 */
size_t mc_session_process(mc_session *s, const uint8_t *in, size_t len,
                          cl_buf *out, int *close, size_t *want);

/* The most unconsumed input a session can ever ask the loop to hold for
 * this context's store: a maximal retrieval line or a storage command with
 * a value of max_value bytes.  mc_net_proto.max_pending is the same bound
 * for the largest max_value the store supports; a daemon may copy the
 * vtable and put this tighter figure in. */
size_t mc_max_pending(const mc_context *ctx);

/* The vtable for net/server.c; proto_arg is an mc_context *. */
extern const net_proto mc_net_proto;

#endif
