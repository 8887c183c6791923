/*
 * server.c - the epoll event loop: listeners, connections, TLS, buffers.
 *
 * Threading model
 * ---------------
 * One acceptor thread and N worker threads, started by net_server_start.
 *
 * The acceptor owns one listening socket per listener (no SO_REUSEPORT)
 * and its own epoll instance.  It accepts in batches (accept4 until
 * EAGAIN, at most NET_ACCEPTS_PER_EVENT per readiness) and hands each new
 * descriptor to the worker with the fewest connections, ties broken
 * round-robin, by appending {fd, listener} to that worker's inbox (a
 * mutex-protected array) and, once per batch, writing the worker's notify
 * eventfd.  It never reads, writes or keeps a connection.  A worker's
 * load is assigned - released: connections the acceptor gave it (counted
 * by the acceptor) minus those it has finished (counted by the worker),
 * so descriptors still in an inbox count too and a burst of connects
 * cannot pile onto one worker before it has woken up.  Why a thread of
 * its own rather than worker 0's loop: accepting stays prompt however
 * long a worker's batch runs, a connection storm costs no worker's
 * request time, and every worker runs the same loop.  The thread sleeps
 * in epoll_wait while no one connects.  (The kernel's SO_REUSEPORT hash,
 * used before, split 50 connections over 2 workers as unevenly as 29/21,
 * differently on every run.)
 *
 * Worker t owns:
 *   - its epoll instance (level-triggered) and notify eventfd;
 *   - per listener, the protocol's thread state (proto->thread_init);
 *   - every connection handed to it, for the connection's whole life:
 *     socket, SSL object (the TLS handshake runs here), protocol session,
 *     input and output buffers;
 *   - a read buffer (NET_RBUF_SIZE) shared by its connections and a small
 *     pool of recycled connection buffers;
 *   - its counters (written by the worker only, read with relaxed atomic
 *     loads by net_server_get_stats and the acceptor from any thread).
 * The inbox is the only state two threads write, under its mutex, once
 * per new connection; the request path takes no lock.  Between epoll
 * batches a worker calls sched_yield(), so a worker that always finds
 * work does not hold its core until the scheduler tick (see worker_loop).
 * The controlling thread only creates, starts, stops and destroys.  The
 * stop eventfd is in every epoll set: written once by net_server_stop,
 * never read, so it stays readable and every thread sees it.  Descriptors
 * still in an inbox at stop are closed by net_server_stop after every
 * thread has exited.
 *
 * Per connection data path
 * ------------------------
 *   read:    into the worker's read buffer (one read(2) per readiness
 *            unless it filled the buffer); when a request is incomplete,
 *            its bytes move to the connection's own input buffer and
 *            later reads go straight there, sized by the protocol's
 *            *want hint, so a 1 MiB value is read without re-copying.
 *   process: proto->process over the input in slices of
 *            NET_PROCESS_SLICE bytes, appending to the connection's output
 *            buffer; slices bound how much output one batch can create.
 *   write:   once per batch of input (pipelined requests share a write),
 *            or earlier when the output passes NET_OUT_HIGH_WATER.
 *   backpressure: when the socket does not take all the output, the
 *            connection waits for EPOLLOUT and neither reads nor
 *            processes until the output is drained, so a client that
 *            never reads costs at most ~NET_OUT_HIGH_WATER plus one
 *            slice's replies plus one read buffer of input.
 *   idle:    when a batch ends with nothing pending, the connection gives
 *            its buffers back to the worker's pool; an idle connection
 *            holds only its net_conn, protocol session and SSL object
 *            (whose record buffers OpenSSL releases: SSL_MODE_RELEASE_BUFFERS).
 *   TLS:     the same path through SSL_read/SSL_write.  epoll cannot see
 *            records OpenSSL has already pulled in (read-ahead), so a TLS
 *            read continues while SSL_has_pending(), and a connection
 *            resuming after backpressure re-reads when OpenSSL holds data.
 *            WANT_READ/WANT_WRITE are honoured in both directions.
 *   close:   on EOF the input already received is still answered; a
 *            protocol *close, a socket error, a failed handshake or input
 *            beyond proto->max_pending closes just that connection.
 *   suspend: a protocol that calls net_conn_suspend inside process stops
 *            the connection after that call: its output is still
 *            written, the rest of the input stays buffered, and epoll
 *            watches nothing but errors and hang-ups (a client that
 *            resets is closed at once) until the waker is resumed.  The
 *            read interest is dropped lazily, when input arrives while
 *            suspended, so a request/response client (which sends nothing
 *            while it waits) costs no epoll_ctl per suspension.
 *
 * Suspension and wakers
 * ---------------------
 * A waker (net_waker) is the only connection object other threads may
 * hold.  It carries a mutex, the connection pointer (NULL once the
 * connection closed: "dead") and a reference count: one for the
 * connection while it is the connection's current waker, one for the
 * protocol until it calls net_waker_resume, one for the worker's resume
 * list while queued.  net_waker_resume locks the waker and, if it is
 * alive, appends it to the owning worker's inbox and writes the worker's
 * notify eventfd, all under the waker's mutex; conn_close marks the
 * waker dead under the same mutex.  So a resume either reaches the worker
 * before the connection closes, or sees it dead and touches nothing of
 * the server: the worker (and the server) may be gone by then.  The
 * worker takes resumed wakers after the rest of an epoll batch (so no
 * event of the batch can name a connection a resume closed), re-checks
 * that each is still its connection's current waker, and serves the
 * connection.  A connection keeps its waker for the next suspension when
 * nobody else holds it, so steady-state suspensions do not allocate.
 *
 * Never: block, take a lock on the data path, touch another worker's
 * connections, or log request bytes.
 */
#include "server.h"

#include "addr.h"
#include "tls.h"
#include "../common/err.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#define NET_RBUF_SIZE        (64 * 1024)  /* per-worker read buffer */
#define NET_READ_CHUNK       (16 * 1024)  /* least free space for a read into a connection buffer */
#define NET_PROCESS_SLICE    (16 * 1024)  /* input handed to proto->process per call */
#define NET_OUT_HIGH_WATER   (256 * 1024) /* write before producing more output */
#define NET_READS_PER_EVENT  4            /* plaintext reads per readiness (fairness) */
#define NET_ACCEPTS_PER_EVENT 64          /* then workers are woken and stop is checked */
#define NET_EPOLL_EVENTS     256
#define NET_POOL_MAX         16           /* recycled buffers per worker */
#define NET_POOL_BUF_MAX     (64 * 1024)  /* larger buffers are freed, not recycled */
#define NET_DEFAULT_MAX_PENDING ((size_t)64 << 20) /* when proto->max_pending is 0 */
#define NET_DEFAULT_BACKLOG  1024

static const char MOD[] = "net";

/* In a worker's epoll set, epoll_event.data.ptr points at an object whose
 * first byte says what it is.  The acceptor's set uses data.u64 instead:
 * a listener index, or ACC_STOP. */
enum { EP_CONN = 1, EP_NOTIFY = 2, EP_STOP = 3 };
static const uint8_t notify_tag = EP_NOTIFY;
static const uint8_t stop_tag = EP_STOP;
#define ACC_STOP UINT64_MAX

enum { CONN_HANDSHAKE = 0, CONN_OPEN = 1 };
enum { IO_AGAIN = -1, IO_EOF = -2, IO_ERROR = -3 };

typedef struct net_listener {
    char *addr;
    const net_proto *proto;
    void *proto_arg;
    SSL_CTX *ssl_ctx;
    int fd;                    /* the listening socket; -1 once closed */
    struct sockaddr_storage bound;
    socklen_t bound_len;
} net_listener;

typedef struct net_worker net_worker;

/* One worker's view of one listener: the protocol's thread state. */
typedef struct net_slot {
    const net_listener *l;
    net_worker *w;             /* the worker this slot belongs to */
    void *thread_state;
    int initialised;
} net_slot;

typedef struct net_conn {
    uint8_t kind;              /* EP_CONN; first (epoll tag) */
    uint8_t state;             /* CONN_HANDSHAKE, CONN_OPEN */
    uint8_t closing;           /* protocol asked to close: flush, then close */
    uint8_t eof;               /* peer finished sending: answer what we have, then close */
    uint8_t need_more;         /* in holds an incomplete request */
    uint8_t hs_want_write;     /* handshake waits for writability */
    uint8_t read_wants_write;  /* SSL_read needs writability */
    uint8_t write_wants_read;  /* SSL_write needs readability */
    uint8_t suspended;         /* the protocol waits for `waker` to be resumed */
    uint8_t resumed;           /* call process once even without input */
    uint8_t susp_in;           /* suspended, EPOLLIN still registered (see conn_mask) */
    uint32_t events;           /* epoll mask registered now */
    int fd;
    SSL *ssl;                  /* NULL for plaintext */
    net_slot *slot;
    cl_buf in;                 /* unconsumed input; empty unless a request is incomplete or held back */
    cl_buf out;                /* output; bytes [out_off, out.len) are not written yet */
    size_t out_off;
    size_t want;               /* bytes the incomplete request needs in total (proto hint), 0 unknown */
    size_t accounted;          /* in.cap + out.cap as counted in the worker's buffer_bytes */
    net_waker *waker;          /* the latest suspension's (one reference), or NULL */
    struct net_conn *prev, *next; /* the worker's list of open connections */
    max_align_t session[];     /* proto->session_size bytes */
} net_conn;

typedef struct net_worker_stats {
    uint64_t curr, total, rejected, hs_failures, bytes_read, bytes_written, buffer_bytes;
    uint64_t released;         /* handed-over descriptors finished: closed, or dropped in setup */
} net_worker_stats;

/* A connection accepted for a worker and not yet set up by it. */
typedef struct net_handoff {
    int fd;
    uint32_t listener;         /* index into net_server.listeners */
} net_handoff;

struct net_waker {
    pthread_mutex_t mu;        /* guards conn; resumes push to the inbox under it */
    net_conn *conn;            /* NULL once the connection closed */
    net_worker *w;             /* the connection's worker; used only while conn is set */
    atomic_int refs;
    net_waker *next;           /* in the inbox's resume list */
};

/* The acceptor appends handoffs, any thread appends resumed wakers; the
 * worker takes everything at once (it swaps the array with its own empty
 * one and takes the list), all under mu.  The array grows, never shrinks. */
typedef struct net_inbox {
    pthread_mutex_t mu;
    net_handoff *items;
    size_t n, cap;
    net_waker *resumed;        /* most recent first */
} net_inbox;

struct net_worker {
    net_server *srv;
    int index;
    int epfd;
    int notify_fd;             /* eventfd: the acceptor's "your inbox has work" */
    pthread_t tid;
    int thread_started;
    net_slot *slots;           /* [srv->n_listeners] */
    uint8_t *rbuf;
    net_conn *conns;
    cl_buf pool[NET_POOL_MAX];
    int pool_n;
    net_inbox inbox;
    net_handoff *batch;        /* the worker's side of the inbox swap */
    size_t batch_cap;
    net_worker_stats st;
};

/* Owned by the acceptor thread, except `rejected` (read by stats). */
typedef struct net_acceptor {
    int epfd;
    pthread_t tid;
    int thread_started;
    int spare_fd;              /* /dev/null, closed to accept-and-drop under EMFILE */
    uint64_t *assigned;        /* [nthreads] descriptors handed to each worker, ever */
    uint8_t *wake;             /* [nthreads] worker needs a notify at the end of the batch */
    int next;                  /* round-robin cursor: ties go to the first worker from here */
    uint64_t rejected;         /* shed for lack of descriptors or memory */
    time_t last_shed_warn;
} net_acceptor;

enum { SRV_CREATED = 0, SRV_RUNNING = 1, SRV_STOPPED = 2 };

struct net_server {
    net_listener *listeners;
    size_t n_listeners;
    int nthreads;
    int backlog;
    net_worker **workers;
    net_acceptor acc;
    int stop_fd;
    int state;
    pthread_mutex_t mu;        /* start handshake only */
    pthread_cond_t cv;
    int reported, init_failed;
};

/* ---- counters ------------------------------------------------------------ */

/* Only the owning thread writes; readers use relaxed loads. */
static inline void stat_add(uint64_t *p, uint64_t d) { __atomic_store_n(p, *p + d, __ATOMIC_RELAXED); }
static inline void stat_sub(uint64_t *p, uint64_t d) { __atomic_store_n(p, *p - d, __ATOMIC_RELAXED); }
static inline uint64_t stat_get(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* ---- buffer pool ---------------------------------------------------------- */

static void pool_get(net_worker *w, cl_buf *b)
{
    if (b->data)
        return;
    if (w->pool_n > 0) {
        *b = w->pool[--w->pool_n];
        return;
    }
    if (cl_buf_reserve(b, NET_READ_CHUNK) != CL_OK)
        cl_buf_init(b); /* grow lazily; the append that needs it reports ENOMEM */
}

static void pool_put(net_worker *w, cl_buf *b)
{
    if (!b->data)
        return;
    if (b->cap <= NET_POOL_BUF_MAX && w->pool_n < NET_POOL_MAX) {
        b->len = 0;
        w->pool[w->pool_n++] = *b;
        cl_buf_init(b);
    } else {
        cl_buf_fini(b, 0);
    }
}

/* ---- connections ---------------------------------------------------------- */

static inline size_t conn_out_pending(const net_conn *c) { return c->out.len - c->out_off; }

static size_t conn_max_pending(const net_conn *c)
{
    size_t m = c->slot->l->proto->max_pending;
    return m ? m : NET_DEFAULT_MAX_PENDING;
}

static const char *conn_peer(const net_conn *c, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) != 0)
        return "?";
    return net_addr_format((struct sockaddr *)&ss, buf, cap);
}

static void conn_account(net_worker *w, net_conn *c)
{
    size_t now = c->in.cap + c->out.cap;
    if (now >= c->accounted)
        stat_add(&w->st.buffer_bytes, now - c->accounted);
    else
        stat_sub(&w->st.buffer_bytes, c->accounted - now);
    c->accounted = now;
}

/* ---- wakers (see "Suspension and wakers" above) ----------------------------- */

static void waker_unref(net_waker *k)
{
    if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_destroy(&k->mu);
        free(k);
    }
}

/* Worker: the connection lets go of its waker (it closes, or needs a new
 * one); k goes dead, so a resume still to come does nothing. */
static void waker_kill(net_waker *k)
{
    pthread_mutex_lock(&k->mu);
    k->conn = NULL;
    pthread_mutex_unlock(&k->mu);
    waker_unref(k);
}

net_conn *net_session_conn(void *session)
{
    return (net_conn *)((char *)session - offsetof(net_conn, session));
}

net_waker *net_conn_suspend(net_conn *c)
{
    net_waker *k = c->waker;
    /* Reuse the connection's waker when nobody else holds it; one still
     * held (a resume not yet taken, or a protocol that suspended twice)
     * must not wake this suspension. */
    if (k && atomic_load_explicit(&k->refs, memory_order_acquire) != 1) {
        waker_kill(k);
        c->waker = k = NULL;
    }
    if (!k) {
        k = calloc(1, sizeof *k);
        if (!k)
            return NULL;
        if (pthread_mutex_init(&k->mu, NULL) != 0) {
            free(k);
            return NULL;
        }
        k->conn = c;
        k->w = c->slot->w;
        atomic_init(&k->refs, 1); /* the connection's */
        c->waker = k;
    }
    atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed); /* the caller's */
    c->suspended = 1;
    c->susp_in = 1;
    return k;
}

static void worker_notify(net_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->notify_fd, &one, sizeof one);
    (void)r; /* EAGAIN only when the counter is full: a notify is pending anyway */
}

void net_waker_resume(net_waker *k)
{
    pthread_mutex_lock(&k->mu);
    if (!k->conn) {
        pthread_mutex_unlock(&k->mu);
        waker_unref(k);
        return;
    }
    /* Alive: the worker cannot close the connection (nor exit) until we
     * release k->mu, so it is safe to reach it. */
    net_worker *w = k->w;
    net_inbox *q = &w->inbox;
    pthread_mutex_lock(&q->mu);
    int was_empty = q->n == 0 && !q->resumed;
    k->next = q->resumed; /* the caller's reference moves to the list */
    q->resumed = k;
    pthread_mutex_unlock(&q->mu);
    if (was_empty)
        worker_notify(w);
    pthread_mutex_unlock(&k->mu);
}

int net_waker_alive(net_waker *k)
{
    pthread_mutex_lock(&k->mu);
    int alive = k->conn != NULL;
    pthread_mutex_unlock(&k->mu);
    return alive;
}

/* Frees everything the connection owns.  `graceful`: we chose to close
 * (quit, end of stream), so a TLS close_notify is worth sending. */
static void conn_close(net_worker *w, net_conn *c, int graceful)
{
    const net_proto *p = c->slot->l->proto;

    if (c->waker) { /* dead before session_fini: the protocol's resumes are no-ops */
        waker_kill(c->waker);
        c->waker = NULL;
    }
    if (p->session_fini)
        p->session_fini(c->session, c->slot->thread_state);
    if (c->ssl) {
        if (graceful && c->state == CONN_OPEN)
            (void)SSL_shutdown(c->ssl); /* best effort, non-blocking */
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    /* Deregister explicitly: close() removes an fd from epoll only when no
     * other descriptor shares its open file, and a child being spawned
     * (compile.c, native.c: posix_spawn) holds copies of every fd until
     * its exec closes the CLOEXEC ones -- in that window the epoll set
     * would keep reporting this freed connection. */
    (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pool_put(w, &c->in);
    pool_put(w, &c->out);
    conn_account(w, c);
    stat_add(&w->st.released, 1); /* before curr: the load never looks higher than curr */
    stat_sub(&w->st.curr, 1);
    free(c);
}

static uint32_t conn_mask(const net_conn *c)
{
    if (c->state == CONN_HANDSHAKE)
        return c->hs_want_write ? EPOLLOUT : EPOLLIN;
    if (conn_out_pending(c))
        return c->write_wants_read ? EPOLLIN : EPOLLOUT;
    if (c->suspended) /* only EPOLLERR/EPOLLHUP, which epoll always reports; but
                         EPOLLIN stays registered until input actually arrives
                         (a request/response client sends none while it waits),
                         which saves two epoll_ctl calls per suspension */
        return c->susp_in && c->events == EPOLLIN ? EPOLLIN : 0;
    if (c->read_wants_write)
        return EPOLLOUT;
    return EPOLLIN;
}

/* Registers the events the connection waits for.  0, or -1 (closed). */
static int conn_rearm(net_worker *w, net_conn *c)
{
    uint32_t m = conn_mask(c);
    if (m == c->events)
        return 0;
    struct epoll_event ev = { .events = m, .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        cl_log_warn(MOD, "epoll_ctl: %s; closing a connection", strerror(errno));
        conn_close(w, c, 0);
        return -1;
    }
    c->events = m;
    return 0;
}

static void conn_log_tls(net_conn *c, const char *what, int ssl_err)
{
    if (cl_log_get_level() < CL_LOG_DEBUG) {
        ERR_clear_error();
        return;
    }
    char peer[NET_ADDR_STRLEN], msg[512];
    snprintf(msg, sizeof msg, "TLS %s failed (SSL error %d, errno %d)", what, ssl_err, errno);
    net_tls_drain_errors(msg, sizeof msg);
    cl_log_debug(MOD, "%s: %s", conn_peer(c, peer, sizeof peer), msg);
}

/*
 * Writes pending output.  Returns 1 when all is written, 0 when the socket
 * (or TLS) cannot take more now, -1 when the connection failed (the caller
 * closes it).
 */
static int conn_flush(net_worker *w, net_conn *c)
{
    while (c->out_off < c->out.len) {
        const uint8_t *p = c->out.data + c->out_off;
        size_t n = c->out.len - c->out_off;
        if (c->ssl) {
            int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    c->write_wants_read = e == SSL_ERROR_WANT_READ;
                    return 0;
                }
                conn_log_tls(c, "write", e);
                return -1;
            }
            c->out_off += (size_t)r;
            stat_add(&w->st.bytes_written, (uint64_t)r);
        } else {
            ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -1;
            }
            c->out_off += (size_t)r;
            stat_add(&w->st.bytes_written, (uint64_t)r);
            if ((size_t)r < n)
                return 0; /* the socket buffer is full; EPOLLOUT will tell */
        }
    }
    c->out.len = c->out_off = 0;
    c->write_wants_read = 0;
    return 1;
}

/*
 * Reads once into dst[0, cap).  Returns the byte count, IO_AGAIN, IO_EOF or
 * IO_ERROR.  *more is set when the read filled dst and more input is
 * likely waiting: for TLS, when OpenSSL still holds data (epoll will not
 * report it, so the caller must read again).
 */
static ssize_t conn_recv(net_worker *w, net_conn *c, uint8_t *dst, size_t cap, int *more)
{
    *more = 0;
    if (!c->ssl) {
        for (;;) {
            ssize_t r = recv(c->fd, dst, cap, 0);
            if (r > 0) {
                stat_add(&w->st.bytes_read, (uint64_t)r);
                *more = (size_t)r == cap;
                return r;
            }
            if (r == 0)
                return IO_EOF;
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? IO_AGAIN : IO_ERROR;
        }
    }

    size_t got = 0;
    c->read_wants_write = 0;
    while (got < cap) {
        size_t n = cap - got;
        int r = SSL_read(c->ssl, dst + got, n > INT_MAX ? INT_MAX : (int)n);
        if (r > 0) {
            got += (size_t)r;
            if (!SSL_has_pending(c->ssl))
                break;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->read_wants_write = 1;
            break;
        }
        /* The end (or a failure) right after data: hand the data over and
         * remember the end here, because epoll will not report it again. */
        if (e == SSL_ERROR_ZERO_RETURN) {
            if (!got)
                return IO_EOF;
        } else {
            conn_log_tls(c, "read", e);
            if (!got)
                return IO_ERROR;
        }
        c->eof = 1;
        break;
    }
    if (got == 0)
        return IO_AGAIN;
    stat_add(&w->st.bytes_read, got);
    *more = got == cap && SSL_has_pending(c->ssl);
    return (ssize_t)got;
}

/*
 * Runs the protocol over in[0, len) and returns the bytes it consumed.
 * Stops early when the output passes the high-water mark (the rest is
 * "held back"), when the protocol asks to close, or when the rest is an
 * incomplete request (need_more, want).
 */
static size_t conn_process(net_conn *c, const uint8_t *in, size_t len)
{
    static const uint8_t none[1];
    const net_proto *p = c->slot->l->proto;
    size_t done = 0;

    if (!in)
        in = none; /* a resumed call with nothing buffered */
    c->need_more = 0;
    c->want = 0;
    while ((done < len || c->resumed) && !c->closing && !c->suspended) {
        if (conn_out_pending(c) >= NET_OUT_HIGH_WATER)
            break;
        size_t avail = len - done;
        size_t n = avail < NET_PROCESS_SLICE ? avail : NET_PROCESS_SLICE;
        for (;;) {
            size_t want = 0;
            int close = 0;
            c->resumed = 0;
            size_t used = p->process(c->session, c->slot->thread_state, in + done, n,
                                     &c->out, &close, &want);
            CL_ASSERT(used <= n);
            done += used;
            if (close) {
                c->closing = 1;
                break;
            }
            if (c->suspended)
                return done; /* the rest waits, held, for net_waker_resume */
            if (avail == 0)
                break; /* the resumed call had no input */
            if (used) {
                if (want > len - done) { /* the rest is the start of a known-size request */
                    c->need_more = 1;
                    c->want = want;
                    return done;
                }
                break;
            }
            if (n == avail || want > avail) { /* incomplete: wait for more input */
                c->need_more = 1;
                c->want = want;
                return done;
            }
            n = want > n ? want : avail; /* the slice cut a request: give it all of it */
        }
    }
    return done;
}

/* Input that is in the worker's read buffer: process it in place and keep
 * only the unconsumed tail.  0, or -1 (closed). */
static int conn_input_rbuf(net_worker *w, net_conn *c, size_t n)
{
    size_t used = conn_process(c, w->rbuf, n);
    if (used == n || c->closing)
        return 0;
    size_t rest = n - used;
    if (c->need_more && rest > conn_max_pending(c))
        goto too_big;
    pool_get(w, &c->in);
    size_t reserve = rest;
    if (c->need_more && c->want > reserve)
        reserve = c->want <= conn_max_pending(c) ? c->want : conn_max_pending(c) + 1;
    if (cl_buf_reserve(&c->in, reserve) != CL_OK || cl_buf_append(&c->in, w->rbuf + used, rest) != CL_OK) {
        cl_log_warn(MOD, "out of memory buffering a request; closing its connection");
        conn_close(w, c, 0);
        return -1;
    }
    return 0;

too_big:;
    char peer[NET_ADDR_STRLEN];
    cl_log_debug(MOD, "%s: request larger than %zu bytes; closing", conn_peer(c, peer, sizeof peer),
                 conn_max_pending(c));
    conn_close(w, c, 0);
    return -1;
}

/* Input that is in the connection's own buffer.  0, or -1 (closed). */
static int conn_input_own(net_worker *w, net_conn *c)
{
    if (c->need_more) {
        if (c->in.len > conn_max_pending(c)) {
            char peer[NET_ADDR_STRLEN];
            cl_log_debug(MOD, "%s: request larger than %zu bytes; closing",
                         conn_peer(c, peer, sizeof peer), conn_max_pending(c));
            conn_close(w, c, 0);
            return -1;
        }
        if (c->want > c->in.len)
            return 0; /* not all of it yet; do not re-parse */
    }
    size_t used = conn_process(c, c->in.data, c->in.len);
    if (c->closing)
        c->in.len = 0;
    else
        cl_buf_consume(&c->in, used);
    return 0;
}

/* Where the next read goes: the connection's buffer when it already holds
 * part of a request (so it is never copied again), else the worker's. */
static int conn_read_target(net_worker *w, net_conn *c, uint8_t **dst, size_t *cap)
{
    if (c->in.len == 0) {
        *dst = w->rbuf;
        *cap = NET_RBUF_SIZE;
        return 0;
    }
    size_t need = NET_READ_CHUNK;
    if (c->want > c->in.len && c->want - c->in.len > need)
        need = c->want - c->in.len;
    size_t max = conn_max_pending(c);
    if (c->in.len < max && need > max - c->in.len + 1)
        need = max - c->in.len + 1; /* just enough to see the limit crossed */
    if (cl_buf_reserve(&c->in, need) != CL_OK)
        return -1;
    *dst = c->in.data + c->in.len;
    *cap = c->in.cap - c->in.len;
    return 0;
}

/*
 * Ends a batch: writes the output, closes if the connection is done,
 * re-registers interest, returns buffers of an idle connection to the pool.
 */
static void conn_finish(net_worker *w, net_conn *c)
{
    if (conn_out_pending(c)) {
        int f = conn_flush(w, c);
        if (f < 0) {
            conn_close(w, c, 0);
            return;
        }
    }
    if (!conn_out_pending(c) &&
        (c->closing || (c->eof && !c->suspended && (c->in.len == 0 || c->need_more)))) {
        conn_close(w, c, 1);
        return;
    }
    if (conn_rearm(w, c) < 0)
        return;
    if (!conn_out_pending(c))
        pool_put(w, &c->out);
    if (c->in.len == 0)
        pool_put(w, &c->in);
    conn_account(w, c);
}

/*
 * Serves a connection that may have work: held-back input first, then
 * reads (when try_read) until the socket is drained, the output blocks,
 * or the fairness budget is spent; one write at the end.
 */
static void conn_serve(net_worker *w, net_conn *c, int try_read)
{
    int rounds = NET_READS_PER_EVENT;
    int fresh = 0; /* bytes were just read into c->in */

    for (;;) {
        /* Held-back complete requests, an incomplete one that grew, or
         * a resumed request. */
        if ((c->in.len || c->resumed) && !c->closing && !c->suspended &&
            (fresh || !c->need_more)) {
            fresh = 0;
            if (conn_input_own(w, c) < 0)
                return;
        }
        if (conn_out_pending(c) >= NET_OUT_HIGH_WATER) {
            int f = conn_flush(w, c);
            if (f < 0) {
                conn_close(w, c, 0);
                return;
            }
            if (f == 0)
                break; /* backpressure: no reading until drained */
            continue;
        }
        if (!try_read || c->closing || c->eof || c->suspended)
            break;

        uint8_t *dst;
        size_t cap;
        int more;
        if (conn_read_target(w, c, &dst, &cap) < 0) {
            cl_log_warn(MOD, "out of memory buffering a request; closing its connection");
            conn_close(w, c, 0);
            return;
        }
        ssize_t r = conn_recv(w, c, dst, cap, &more);
        if (r == IO_AGAIN)
            break;
        if (r == IO_ERROR) {
            conn_close(w, c, 0);
            return;
        }
        if (r == IO_EOF) {
            c->eof = 1;
            continue; /* answer what is buffered, then close */
        }
        if (dst == w->rbuf) {
            if (conn_input_rbuf(w, c, (size_t)r) < 0)
                return;
        } else {
            c->in.len += (size_t)r; /* processed at the top of the loop */
            fresh = 1;
        }
        try_read = more && (c->ssl || --rounds > 0);
    }
    conn_finish(w, c);
}

static void conn_handshake(net_worker *w, net_conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = CONN_OPEN;
        conn_serve(w, c, 1); /* the first request may already be buffered */
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        conn_rearm(w, c);
        return;
    }
    stat_add(&w->st.hs_failures, 1);
    conn_log_tls(c, "handshake", e);
    conn_close(w, c, 0);
}

static void conn_on_event(net_worker *w, net_conn *c, uint32_t events)
{
    if (c->state == CONN_HANDSHAKE) {
        conn_handshake(w, c);
        return;
    }
    int readable = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    if (c->suspended && !conn_out_pending(c)) {
        /* Watching only for the client going away; input that arrives
         * meanwhile waits in the socket, unwatched until the resume. */
        if (events & (EPOLLHUP | EPOLLERR)) {
            conn_close(w, c, 0);
        } else if (c->susp_in) {
            c->susp_in = 0;
            conn_rearm(w, c);
        }
        return;
    }
    if (conn_out_pending(c)) { /* paused by backpressure */
        int f = conn_flush(w, c);
        if (f < 0) {
            conn_close(w, c, 0);
            return;
        }
        if (f == 0) {
            conn_rearm(w, c);
            return;
        }
        /* Drained.  A plaintext socket that was not reported readable is
         * left to epoll; OpenSSL may hold decrypted input epoll cannot see. */
        conn_serve(w, c, readable || (c->ssl && SSL_has_pending(c->ssl)));
        return;
    }
    conn_serve(w, c, 1);
}

static void conn_open(net_worker *w, net_slot *sl, int fd)
{
    const net_proto *p = sl->l->proto;
    net_conn *c = calloc(1, sizeof *c + p->session_size);
    if (!c)
        goto reject;
    c->kind = EP_CONN;
    c->fd = fd;
    c->slot = sl;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sl->l->ssl_ctx) {
        c->ssl = SSL_new(sl->l->ssl_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
            goto reject;
        SSL_set_accept_state(c->ssl);
        c->state = CONN_HANDSHAKE;
    } else {
        c->state = CONN_OPEN;
    }
    c->events = EPOLLIN;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        goto reject;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    stat_add(&w->st.curr, 1);
    stat_add(&w->st.total, 1);
    if (p->session_init)
        p->session_init(c->session, sl->thread_state);
    return;

reject:
    cl_log_warn(MOD, "cannot set up a new connection (out of memory?); dropped it");
    stat_add(&w->st.rejected, 1);
    stat_add(&w->st.released, 1);
    if (c) {
        SSL_free(c->ssl);
        ERR_clear_error();
        free(c);
    }
    close(fd);
}

/* ---- handing connections over: acceptor -> worker --------------------------- */

/* Acceptor thread: appends h to w's inbox.  *was_empty tells whether the
 * worker has taken everything before, i.e. needs a notify for this one.
 * CL_OK or CL_ENOMEM. */
static int inbox_push(net_worker *w, net_handoff h, int *was_empty)
{
    net_inbox *q = &w->inbox;
    int rc = CL_OK;
    pthread_mutex_lock(&q->mu);
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        net_handoff *p = realloc(q->items, cap * sizeof *p);
        if (!p) {
            rc = CL_ENOMEM;
            goto out;
        }
        q->items = p;
        q->cap = cap;
    }
    *was_empty = q->n == 0 && !q->resumed;
    q->items[q->n++] = h;
out:
    pthread_mutex_unlock(&q->mu);
    return rc;
}

/* Worker thread: serves the connections whose wakers were resumed
 * (list most recent first; served oldest first). */
static void worker_resume(net_worker *w, net_waker *list)
{
    net_waker *fifo = NULL;
    while (list) {
        net_waker *k = list;
        list = k->next;
        k->next = fifo;
        fifo = k;
    }
    while (fifo) {
        net_waker *k = fifo;
        fifo = k->next;
        pthread_mutex_lock(&k->mu);
        net_conn *c = k->conn; /* only this thread clears it, so it stays valid below */
        pthread_mutex_unlock(&k->mu);
        if (c && c->waker == k && c->suspended) {
            c->suspended = 0;
            c->resumed = 1;
            /* Plaintext input that came meanwhile is reported by epoll
             * once re-armed; OpenSSL may hold some that epoll cannot see. */
            conn_serve(w, c, c->ssl && SSL_has_pending(c->ssl));
        }
        waker_unref(k); /* the list's reference */
    }
}

/*
 * Worker thread: sets up every connection waiting in the inbox and serves
 * the resumed ones.  The notify counter is reset before the inbox is
 * taken, so a push that lands after the swap finds the inbox empty and
 * notifies again.
 */
static void worker_take_inbox(net_worker *w)
{
    uint64_t v;
    ssize_t r = read(w->notify_fd, &v, sizeof v);
    (void)r; /* EAGAIN: a notify already consumed; the swap below still runs */

    net_inbox *q = &w->inbox;
    pthread_mutex_lock(&q->mu);
    net_handoff *items = q->items;
    size_t n = q->n, cap = q->cap;
    q->items = w->batch;
    q->cap = w->batch_cap;
    q->n = 0;
    net_waker *resumed = q->resumed;
    q->resumed = NULL;
    pthread_mutex_unlock(&q->mu);
    w->batch = items;
    w->batch_cap = cap;

    for (size_t i = 0; i < n; i++)
        conn_open(w, &w->slots[items[i].listener], items[i].fd);
    worker_resume(w, resumed);
}

/* ---- the acceptor ------------------------------------------------------------ */

/* The worker with the fewest connections (assigned - released, so those
 * still in an inbox count); among equals the first from the round-robin
 * cursor, so ties rotate. */
static int acceptor_pick(net_server *s)
{
    net_acceptor *a = &s->acc;
    int best = a->next;
    uint64_t best_load = UINT64_MAX;
    for (int k = 0; k < s->nthreads; k++) {
        int t = (a->next + k) % s->nthreads;
        uint64_t load = a->assigned[t] - stat_get(&s->workers[t]->st.released);
        if (load < best_load) {
            best = t;
            best_load = load;
        }
    }
    a->next = (best + 1) % s->nthreads;
    return best;
}

static void acceptor_dispatch(net_server *s, size_t li, int fd)
{
    net_acceptor *a = &s->acc;
    int t = acceptor_pick(s);
    int was_empty = 0;
    a->assigned[t]++;
    if (inbox_push(s->workers[t], (net_handoff){ .fd = fd, .listener = (uint32_t)li },
                   &was_empty) != CL_OK) {
        a->assigned[t]--;
        cl_log_warn(MOD, "out of memory handing over a new connection; dropped it");
        stat_add(&a->rejected, 1);
        close(fd);
        return;
    }
    if (was_empty)
        a->wake[t] = 1;
}

/* Notifies, once each, the workers that got connections in this batch. */
static void acceptor_wake(net_server *s)
{
    for (int t = 0; t < s->nthreads; t++) {
        if (!s->acc.wake[t])
            continue;
        s->acc.wake[t] = 0;
        uint64_t one = 1;
        ssize_t r = write(s->workers[t]->notify_fd, &one, sizeof one);
        (void)r; /* EAGAIN only when the counter is full: a notify is pending anyway */
    }
}

/* Out of descriptors: accept with the spare and drop at once, so the
 * client learns (reset) instead of waiting, and level-triggered epoll does
 * not spin on a backlog we cannot drain. */
static void acceptor_shed(net_server *s, const net_listener *l)
{
    net_acceptor *a = &s->acc;
    time_t now = time(NULL);
    if (now != a->last_shed_warn) {
        a->last_shed_warn = now;
        cl_log_warn(MOD, "out of file descriptors; refusing new connections (raise `ulimit -n`)");
    }
    if (a->spare_fd >= 0) {
        close(a->spare_fd);
        int fd = accept(l->fd, NULL, NULL);
        if (fd >= 0) {
            close(fd);
            stat_add(&a->rejected, 1);
        }
        a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
}

/* Accepts until EAGAIN, or NET_ACCEPTS_PER_EVENT (then the loop wakes the
 * workers, checks for stop, and level-triggered epoll brings us back). */
static void acceptor_accept(net_server *s, size_t li)
{
    const net_listener *l = &s->listeners[li];
    for (int i = 0; i < NET_ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            acceptor_dispatch(s, li, fd);
            continue;
        }
        switch (errno) {
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EMFILE:
        case ENFILE:
            acceptor_shed(s, l);
            return;
        case EAGAIN:
#if EAGAIN != EWOULDBLOCK
        case EWOULDBLOCK:
#endif
            return;
        default:
            cl_log_warn(MOD, "accept on %s: %s", l->addr, strerror(errno));
            return;
        }
    }
}

static void *acceptor_main(void *arg)
{
    net_server *s = arg;
    pthread_setname_np(pthread_self(), "cl-net-accept");
    struct epoll_event ev[16];
    for (;;) {
        int n = epoll_wait(s->acc.epfd, ev, (int)(sizeof ev / sizeof ev[0]), -1);
        if (n < 0) {
            CL_ASSERT(errno == EINTR);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == ACC_STOP)
                return NULL; /* what is in the inboxes, net_server_stop closes */
            acceptor_accept(s, (size_t)ev[i].data.u64);
        }
        acceptor_wake(s);
    }
}

/* ---- workers -------------------------------------------------------------- */

static void worker_report(net_worker *w, int ok)
{
    net_server *s = w->srv;
    pthread_mutex_lock(&s->mu);
    s->reported++;
    if (!ok)
        s->init_failed = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void worker_fini(net_worker *w)
{
    while (w->conns)
        conn_close(w, w->conns, 0);
    /* Every waker is dead now, so no resume can be queued any more; drop
     * those that were. */
    pthread_mutex_lock(&w->inbox.mu);
    net_waker *k = w->inbox.resumed;
    w->inbox.resumed = NULL;
    pthread_mutex_unlock(&w->inbox.mu);
    while (k) {
        net_waker *next = k->next;
        waker_unref(k);
        k = next;
    }
    for (size_t i = 0; i < w->srv->n_listeners; i++) {
        net_slot *sl = &w->slots[i];
        if (sl->initialised && sl->l->proto->thread_fini)
            sl->l->proto->thread_fini(sl->thread_state);
        sl->initialised = 0;
    }
    while (w->pool_n > 0)
        cl_buf_fini(&w->pool[--w->pool_n], 0);
    free(w->rbuf);
    w->rbuf = NULL;
    ERR_clear_error();
}

static int worker_init(net_worker *w)
{
    w->rbuf = malloc(NET_RBUF_SIZE);
    if (!w->rbuf)
        return CL_ENOMEM;
    for (size_t i = 0; i < w->srv->n_listeners; i++) {
        net_slot *sl = &w->slots[i];
        if (sl->l->proto->thread_init) {
            sl->thread_state = sl->l->proto->thread_init(sl->l->proto_arg, w->index);
            if (!sl->thread_state) {
                cl_log_error(MOD, "%s: per-thread setup failed on worker %d",
                             sl->l->proto->name, w->index);
                return CL_EINVAL;
            }
        }
        sl->initialised = 1;
    }
    return CL_OK;
}

static void worker_loop(net_worker *w)
{
    struct epoll_event ev[NET_EPOLL_EVENTS];

    for (;;) {
        int n = epoll_wait(w->epfd, ev, NET_EPOLL_EVENTS, -1);
        if (n < 0) {
            CL_ASSERT(errno == EINTR);
            continue;
        }
        int notified = 0;
        for (int i = 0; i < n; i++) {
            switch (*(const uint8_t *)ev[i].data.ptr) {
            case EP_STOP:
                return;
            case EP_NOTIFY:
                notified = 1; /* after the batch: a resume may close a connection
                                 that has an event further down */
                break;
            case EP_CONN:
                conn_on_event(w, ev[i].data.ptr, ev[i].events);
                break;
            default:
                CL_ASSERT(!"unknown epoll tag");
            }
        }
        if (notified)
            worker_take_inbox(w);
        /* Offer the CPU between batches.  A loaded worker always finds
         * work, so it would otherwise run until the scheduler tick (4 ms
         * at HZ=250) preempts it, and whatever waits on its core -- a
         * co-located client, the other worker -- waits that long.  Those
         * waits set the p99 of bench/run.sh on a 2-core machine (~4 ms;
         * ~1-2 ms with the yield).  Alone on its core, sched_yield returns
         * at once (~0.2 us per batch). */
        sched_yield();
    }
}

static void *worker_main(void *arg)
{
    net_worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "cl-net-%d", w->index);
    pthread_setname_np(pthread_self(), name);

    int rc = worker_init(w);
    worker_report(w, rc == CL_OK);
    if (rc == CL_OK)
        worker_loop(w);
    worker_fini(w);
    return NULL;
}

/* ---- server --------------------------------------------------------------- */

static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            cl_log_warn(MOD, "cannot raise the open files limit: %s", strerror(errno));
    }
}

/* A listening socket.  SO_REUSEADDR lets a restarted server bind while
 * old connections sit in TIME_WAIT; without SO_REUSEPORT, bind fails if
 * anybody listens on the address already. */
static int listen_socket(const struct sockaddr *sa, socklen_t len, int backlog)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        (sa->sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
        bind(fd, sa, len) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Binds listener li, learns its port (for port 0) and registers it with
 * the acceptor. */
static int server_bind(net_server *s, size_t li)
{
    net_listener *l = &s->listeners[li];
    struct sockaddr_storage ss;
    socklen_t len;

    if (net_addr_parse(l->addr, &ss, &len) != CL_OK) {
        cl_log_error(MOD, "cannot parse listen address '%s' (expected HOST:PORT or [IPV6]:PORT)",
                     l->addr);
        return CL_EINVAL;
    }
    l->fd = listen_socket((struct sockaddr *)&ss, len, s->backlog);
    if (l->fd < 0)
        goto fail;
    l->bound_len = sizeof l->bound;
    if (getsockname(l->fd, (struct sockaddr *)&l->bound, &l->bound_len) != 0)
        goto fail;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = li };
    if (epoll_ctl(s->acc.epfd, EPOLL_CTL_ADD, l->fd, &ev) != 0)
        goto fail;
    return CL_OK;

fail:
    cl_log_error(MOD, "cannot listen on %s: %s", l->addr, strerror(errno));
    return CL_EIO;
}

static void server_close_listeners(net_server *s)
{
    for (size_t i = 0; s->listeners && i < s->n_listeners; i++) {
        if (s->listeners[i].fd >= 0) {
            close(s->listeners[i].fd);
            s->listeners[i].fd = -1;
        }
    }
}

/* Closes descriptors handed over but never taken.  Every thread has exited. */
static void server_drain_inboxes(net_server *s)
{
    for (int t = 0; s->workers && t < s->nthreads; t++) {
        net_worker *w = s->workers[t];
        if (!w)
            continue;
        for (size_t i = 0; i < w->inbox.n; i++)
            close(w->inbox.items[i].fd);
        w->inbox.n = 0;
    }
}

static int worker_create(net_server *s, int t, net_worker **out)
{
    net_worker *w = calloc(1, sizeof *w);
    *out = w;
    if (!w)
        return CL_ENOMEM;
    w->srv = s;
    w->index = t;
    pthread_mutex_init(&w->inbox.mu, NULL);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->slots = calloc(s->n_listeners, sizeof *w->slots);
    if (!w->slots)
        return CL_ENOMEM;
    for (size_t i = 0; i < s->n_listeners; i++) {
        w->slots[i].l = &s->listeners[i];
        w->slots[i].w = w;
    }
    struct epoll_event stop = { .events = EPOLLIN, .data.ptr = (void *)&stop_tag };
    struct epoll_event notify = { .events = EPOLLIN, .data.ptr = (void *)&notify_tag };
    if (w->epfd < 0 || w->notify_fd < 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, s->stop_fd, &stop) != 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->notify_fd, &notify) != 0) {
        cl_log_error(MOD, "epoll/eventfd: %s", strerror(errno));
        return CL_EIO;
    }
    return CL_OK;
}

static void worker_destroy(net_worker *w)
{
    if (!w)
        return;
    if (w->epfd >= 0)
        close(w->epfd);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    pthread_mutex_destroy(&w->inbox.mu);
    free(w->inbox.items);
    free(w->batch);
    free(w->slots);
    free(w);
}

static int acceptor_create(net_server *s)
{
    net_acceptor *a = &s->acc;
    a->assigned = calloc((size_t)s->nthreads, sizeof *a->assigned);
    a->wake = calloc((size_t)s->nthreads, sizeof *a->wake);
    if (!a->assigned || !a->wake)
        return CL_ENOMEM;
    a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event stop = { .events = EPOLLIN, .data.u64 = ACC_STOP };
    if (a->epfd < 0 || epoll_ctl(a->epfd, EPOLL_CTL_ADD, s->stop_fd, &stop) != 0) {
        cl_log_error(MOD, "epoll: %s", strerror(errno));
        return CL_EIO;
    }
    return CL_OK;
}

int net_server_create(const net_server_config *cfg, net_server **out)
{
    *out = NULL;
    if (!cfg || !cfg->listeners || cfg->n_listeners == 0)
        return CL_EINVAL;
    for (size_t i = 0; i < cfg->n_listeners; i++)
        if (!cfg->listeners[i].addr || !cfg->listeners[i].proto || !cfg->listeners[i].proto->process)
            return CL_EINVAL;

    signal(SIGPIPE, SIG_IGN);
    raise_nofile_limit();

    int rc = CL_ENOMEM;
    net_server *s = calloc(1, sizeof *s);
    if (!s)
        return CL_ENOMEM;
    s->stop_fd = s->acc.epfd = s->acc.spare_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->backlog = cfg->backlog > 0 ? cfg->backlog : NET_DEFAULT_BACKLOG;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->nthreads = cfg->threads > 0 ? cfg->threads : (ncpu > 0 ? (int)ncpu : 1);

    s->n_listeners = cfg->n_listeners;
    s->listeners = calloc(s->n_listeners, sizeof *s->listeners);
    s->workers = calloc((size_t)s->nthreads, sizeof *s->workers);
    if (!s->listeners || !s->workers)
        goto fail;
    for (size_t i = 0; i < s->n_listeners; i++) {
        const net_listener_config *lc = &cfg->listeners[i];
        net_listener *l = &s->listeners[i];
        l->fd = -1;
        l->addr = strdup(lc->addr);
        if (!l->addr)
            goto fail;
        l->proto = lc->proto;
        l->proto_arg = lc->proto_arg;
        if (lc->ssl_ctx && SSL_CTX_up_ref(lc->ssl_ctx))
            l->ssl_ctx = lc->ssl_ctx;
    }

    rc = CL_EIO;
    s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_fd < 0)
        goto fail;
    if ((rc = acceptor_create(s)) != CL_OK)
        goto fail;
    for (int t = 0; t < s->nthreads; t++)
        if ((rc = worker_create(s, t, &s->workers[t])) != CL_OK)
            goto fail;
    for (size_t i = 0; i < s->n_listeners; i++)
        if ((rc = server_bind(s, i)) != CL_OK)
            goto fail;

    *out = s;
    return CL_OK;

fail:
    net_server_destroy(s);
    return rc;
}

int net_server_start(net_server *s)
{
    if (s->state != SRV_CREATED)
        return CL_EINVAL;
    s->state = SRV_RUNNING;

    int rc = CL_OK, started = 0;
    for (int t = 0; t < s->nthreads; t++) {
        net_worker *w = s->workers[t];
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
            cl_log_error(MOD, "cannot start worker thread %d: %s", t, strerror(errno));
            rc = CL_ENOMEM;
            break;
        }
        w->thread_started = 1;
        started++;
    }
    pthread_mutex_lock(&s->mu);
    while (s->reported < started)
        pthread_cond_wait(&s->cv, &s->mu);
    if (s->init_failed && rc == CL_OK)
        rc = CL_EINVAL;
    pthread_mutex_unlock(&s->mu);

    /* Connections are handed out only once every worker can take them. */
    if (rc == CL_OK) {
        if (pthread_create(&s->acc.tid, NULL, acceptor_main, s) != 0) {
            cl_log_error(MOD, "cannot start the acceptor thread: %s", strerror(errno));
            rc = CL_ENOMEM;
        } else {
            s->acc.thread_started = 1;
        }
    }
    if (rc != CL_OK)
        net_server_stop(s);
    return rc;
}

void net_server_stop(net_server *s)
{
    if (!s || s->state != SRV_RUNNING)
        return;
    uint64_t one = 1;
    ssize_t wr = write(s->stop_fd, &one, sizeof one);
    CL_ASSERT(wr == (ssize_t)sizeof one);
    if (s->acc.thread_started) {
        pthread_join(s->acc.tid, NULL);
        s->acc.thread_started = 0;
    }
    for (int t = 0; t < s->nthreads; t++) {
        net_worker *w = s->workers[t];
        if (w->thread_started) {
            pthread_join(w->tid, NULL);
            w->thread_started = 0;
        }
    }
    server_drain_inboxes(s);
    server_close_listeners(s); /* new clients are refused, not queued */
    s->state = SRV_STOPPED;
}

void net_server_destroy(net_server *s)
{
    if (!s)
        return;
    net_server_stop(s);
    server_close_listeners(s);
    server_drain_inboxes(s);
    for (int t = 0; s->workers && t < s->nthreads; t++)
        worker_destroy(s->workers[t]);
    if (s->acc.epfd >= 0)
        close(s->acc.epfd);
    if (s->acc.spare_fd >= 0)
        close(s->acc.spare_fd);
    free(s->acc.assigned);
    free(s->acc.wake);
    for (size_t i = 0; s->listeners && i < s->n_listeners; i++) {
        free(s->listeners[i].addr);
        SSL_CTX_free(s->listeners[i].ssl_ctx);
    }
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->listeners);
    free(s->workers);
    free(s);
}

int net_server_threads(const net_server *s) { return s->nthreads; }

int net_server_listener_addr(const net_server *s, size_t i, struct sockaddr_storage *out,
                             socklen_t *outlen)
{
    if (i >= s->n_listeners)
        return CL_EINVAL;
    memcpy(out, &s->listeners[i].bound, s->listeners[i].bound_len);
    *outlen = s->listeners[i].bound_len;
    return CL_OK;
}

char *net_server_listener_name(const net_server *s, size_t i, char *buf, size_t cap)
{
    if (i >= s->n_listeners) {
        snprintf(buf, cap, "?");
        return buf;
    }
    return net_addr_format((const struct sockaddr *)&s->listeners[i].bound, buf, cap);
}

static void stats_add_worker(net_stats *out, const net_worker_stats *st)
{
    out->curr_connections += stat_get(&st->curr);
    out->total_connections += stat_get(&st->total);
    out->rejected_connections += stat_get(&st->rejected);
    out->tls_handshake_failures += stat_get(&st->hs_failures);
    out->bytes_read += stat_get(&st->bytes_read);
    out->bytes_written += stat_get(&st->bytes_written);
    out->buffer_bytes += stat_get(&st->buffer_bytes);
}

void net_server_get_stats(const net_server *s, net_stats *out)
{
    memset(out, 0, sizeof *out);
    out->threads = (uint64_t)s->nthreads;
    for (int t = 0; t < s->nthreads; t++)
        stats_add_worker(out, &s->workers[t]->st);
    out->rejected_connections += stat_get(&s->acc.rejected);
}

int net_server_get_thread_stats(const net_server *s, int thread, net_stats *out)
{
    memset(out, 0, sizeof *out);
    if (thread < 0 || thread >= s->nthreads)
        return CL_EINVAL;
    out->threads = 1;
    stats_add_worker(out, &s->workers[thread]->st);
    return CL_OK;
}
