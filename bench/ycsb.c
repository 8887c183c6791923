/*
 * bench/ycsb.c - a YCSB-style closed-loop load generator for key-value
 * servers: those that speak memcached's text protocol (memcached itself,
 * cloisterd, a Cloister cluster's nodes), over TLS or in plaintext, and etcd
 * 3.4 through its v3 HTTP/JSON gateway.  bench/run.sh uses it to compare
 * cloisterd with memcached, bench/cluster.sh to compare Cloister clusters
 * with etcd; it can also be used by hand (--help).
 *
 * What it reproduces from YCSB's CoreWorkload:
 *   - keys "user<n>", n = FNV-64(key id) ("hashed" insert order), key ids
 *     0 .. records-1;
 *   - request keys drawn by YCSB's ScrambledZipfianGenerator: Gray et al.'s
 *     zipfian (theta 0.99) over YCSB's fixed item space of 10^10 with its
 *     precomputed zeta, scrambled by FNV-64 modulo records+1, draws past the
 *     last record redrawn (CoreWorkload.nextKeynum);
 *   - workloads A (50% read / 50% update), B (95/5), C (100% read),
 *     F (50% read / 50% read-modify-write); RMW latency counts read + write;
 *   - one outstanding request per connection (closed loop).
 *
 * Targets: a target is one system under test: a protocol, one or more
 * addresses (a cluster's members; connections are spread over them round
 * robin) and its own TLS settings.  --port makes memcached-protocol targets
 * that share --host and the TLS options; --target describes one completely.
 * Protocols:
 *   memcached  text "get KEY" / "set KEY 0 0 N": the same bytes to every
 *              server;
 *   etcd       HTTP/1.1 keep-alive, POST /v3/kv/range {"key": b64} (etcd's
 *              default, linearizable read) and POST /v3/kv/put {"key": b64,
 *              "value": b64}; responses with Content-Length or chunked.
 *
 * Comparing servers fairly on a noisy machine: given several targets, it
 * connects to all of them and serves them in turn, in time slices (--slice,
 * default 0.5 s), each measured separately; a slice's first GUARD_MS are not
 * measured (the previous target's last replies may still be arriving).  Each
 * target so sees the same machine noise, the same client and the same
 * request stream.
 *
 * Trust in the numbers: every value is self-describing (a header with a
 * magic, its length, key id, version and a checksum of the payload, which is
 * derived from key id and version) and every read is verified.  A wrong key,
 * length or checksum, a miss, an error reply, a protocol violation or a
 * request unanswered for REPLY_TIMEOUT_S are counted and make the exit status
 * 1.
 *
 * Threads: main opens every connection (blocking connect and TLS handshake),
 * then each of --threads workers drives its --conns connections per target
 * from one epoll loop, non-blocking, OpenSSL in non-blocking mode.  Workers
 * share only the read-only key table, options and the phase clock, which main
 * sets before starting them; main merges their statistics after joining them.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define NS_PER_S         1000000000ull
#define NS_PER_MS        1000000ull
#define MAX_TARGETS      4         /* systems compared in one run */
#define MAX_ENDPOINTS    8         /* addresses of one target (cluster members) */
#define GUARD_MS         10        /* unmeasured start of each slice */
#define KEY_CAP          28        /* "user" + up to 19 digits + NUL fits */
#define LOAD_WINDOW      16        /* pipelined sets per connection while loading */
#define REPLY_TIMEOUT_S  10        /* a request unanswered this long is an error */
#define REPORT_LIMIT     5         /* failures described on stderr, per worker */
#define STR_(x)          #x
#define STR(x)           STR_(x)
#define VALUE_MAGIC      0x56594c43u   /* "CLYV" little-endian */
#define VALUE_HDR        32        /* sizeof(struct value_hdr) */
#define B64_LEN(n)       (4 * (((size_t)(n) + 2) / 3))   /* padded base64 of n bytes */
#define HTTP_HEAD_CAP    1024      /* request or response head, generously */

/* ---- options (read-only once main has parsed them) ------------------------ */

enum proto { PROTO_MEMCACHED, PROTO_ETCD };
static const char *const proto_names[] = {"memcached", "etcd"};

struct endpoint {
    char host[64];              /* name or address, IPv6 without brackets */
    char port[8];
    char addr[80];              /* "host:port" as given: Host header, reports */
};

struct target {
    const char *name;           /* for reports; default its first address */
    enum proto proto;
    struct endpoint ep[MAX_ENDPOINTS];
    int nep;
    bool tls;
    const char *ca, *cert, *key;
    SSL_CTX *ctx;               /* made by main when tls */
    char tls_version[16];       /* what the handshake settled on */
    char cipher[64];
};

static struct options {
    const char *host;           /* --host, for --port targets */
    struct target target[MAX_TARGETS];
    int ntargets;
    bool tls;                   /* --tls, --ca, --cert, --key: for --port targets */
    const char *ca, *cert, *key;
    char workload;              /* 'A', 'B', 'C', 'F', or 0: no run phase */
    uint32_t records;
    uint32_t value_size;
    int threads;
    int conns;                  /* per thread and target */
    double duration;            /* measured seconds per target, 0 = bounded by --ops */
    uint64_t ops;               /* measured transactions, 0 = bounded by time */
    bool load;
    double warmup;              /* per target */
    double slice;
    uint64_t seed;
    bool json;
} opt = {
    .host = "127.0.0.1", .records = 100000, .value_size = 1000,
    .threads = 2, .conns = 25, .warmup = 1.0, .slice = 0.5, .seed = 1,
};

enum op_kind { OP_READ, OP_UPDATE, OP_RMW, OP_INSERT, OP_ALL, OP_KINDS };
static const char *const op_names[OP_KINDS] = {"read", "update", "rmw", "insert", "all"};

enum phase { PHASE_LOAD, PHASE_RUN };

/* The phase clock, set by main before it starts the workers.  In the run
 * phase, time from t_start is cut into slices of slice_ns served by targets
 * 0, 1, ... in turn; [t_start, t_measure) is warm-up, nothing starts at or
 * after t_end.  With one target there are no slices and no guard. */
static enum phase phase;
static int load_target;         /* the target the load phase fills */
static uint64_t t_start, t_measure, t_end;
static uint64_t slice_ns, guard_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ycsb: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---- random numbers: splitmix64 seeding xoshiro256** ---------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct rng { uint64_t s[4]; };

static void rng_seed(struct rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1), 53 bits, like java.util.Random.nextDouble. */
static double rng_double(struct rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- YCSB's key space ----------------------------------------------------- */

/* YCSB Utils.fnvhash64: FNV-1a over the 8 low-to-high bytes, then Java's
 * Math.abs on the signed result (Long.MIN_VALUE, which Java leaves negative,
 * cannot be a key; we map it to 0). */
static uint64_t ycsb_fnv64(uint64_t v)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= v & 0xff;
        h *= 1099511628211ull;
        v >>= 8;
    }
    int64_t s = (int64_t)h;
    return s == INT64_MIN ? 0 : (uint64_t)(s < 0 ? -s : s);
}

/* ScrambledZipfianGenerator(0, records) as CoreWorkload builds it: an inner
 * ZipfianGenerator(0, ITEM_COUNT, 0.99, ZETAN) whose draws are scrambled with
 * FNV-64 modulo records+1. */
#define ZIPF_ITEM_COUNT 10000000000ull   /* ScrambledZipfianGenerator.ITEM_COUNT */
#define ZIPF_ZETAN      26.46902820178302 /* its zeta(ITEM_COUNT, 0.99) */
#define ZIPF_THETA      0.99

struct zipf {
    double items, alpha, eta, zetan, half_pow_theta;
    uint64_t span;          /* records + 1: the scrambled range, max inclusive */
};

static void zipf_init(struct zipf *z, uint32_t records)
{
    double zeta2 = 1.0 + pow(0.5, ZIPF_THETA);
    z->items = (double)(ZIPF_ITEM_COUNT + 1);
    z->zetan = ZIPF_ZETAN;
    z->alpha = 1.0 / (1.0 - ZIPF_THETA);
    z->eta = (1.0 - pow(2.0 / z->items, 1.0 - ZIPF_THETA)) / (1.0 - zeta2 / z->zetan);
    z->half_pow_theta = pow(0.5, ZIPF_THETA);
    z->span = (uint64_t)records + 1;
}

static uint32_t zipf_next(const struct zipf *z, struct rng *r)
{
    for (;;) {
        double u = rng_double(r), uz = u * z->zetan;
        uint64_t item;
        if (uz < 1.0)
            item = 0;
        else if (uz < 1.0 + z->half_pow_theta)
            item = 1;
        else
            item = (uint64_t)(z->items * pow(z->eta * u - z->eta + 1.0, z->alpha));
        uint64_t k = ycsb_fnv64(item) % z->span;
        if (k < opt.records)
            return (uint32_t)k;
    }
}

/* Key strings, built once: keys[id] = "user" + decimal(FNV-64(id)). */
struct key { char s[KEY_CAP]; uint32_t len; };
static struct key *keys;

static void keys_build(void)
{
    keys = calloc(opt.records, sizeof *keys);
    if (!keys)
        die("out of memory for %u keys", opt.records);
    for (uint32_t i = 0; i < opt.records; i++)
        keys[i].len = (uint32_t)snprintf(keys[i].s, KEY_CAP, "user%" PRIu64, ycsb_fnv64(i));
}

/* ---- values: self-describing, verifiable ---------------------------------- */

struct value_hdr {
    uint32_t magic;
    uint32_t len;           /* whole value, header included */
    uint64_t key_id;
    uint64_t version;       /* 0 = loaded; else (worker+1) << 48 | sequence */
    uint64_t sum;           /* value_sum() of the payload after the header */
};

static uint64_t value_sum(const char *p, size_t n, uint64_t key_id, uint64_t version)
{
    uint64_t h = key_id * 0x9e3779b97f4a7c15ull ^ version ^ n, w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 29);
}

/* Writes the opt.value_size bytes of (key_id, version) at dst. */
static void value_fill(char *dst, uint32_t key_id, uint64_t version)
{
    size_t len = opt.value_size;
    uint64_t s = (uint64_t)key_id << 32 ^ version * 0xd6e8feb86659fd93ull, r;
    char *p = dst + VALUE_HDR, *end = dst + len;
    for (; end - p >= 8; p += 8) {
        r = splitmix64(&s);
        memcpy(p, &r, 8);
    }
    r = splitmix64(&s);
    memcpy(p, &r, (size_t)(end - p));
    struct value_hdr h = {
        .magic = VALUE_MAGIC, .len = (uint32_t)len, .key_id = key_id, .version = version,
        .sum = value_sum(dst + VALUE_HDR, len - VALUE_HDR, key_id, version),
    };
    memcpy(dst, &h, sizeof h);
}

/* NULL if the value is the intact value of key_id, else what is wrong. */
static const char *value_check(const char *v, size_t len, uint32_t key_id)
{
    struct value_hdr h;
    if (len != opt.value_size)
        return "wrong length";
    memcpy(&h, v, sizeof h);
    if (h.magic != VALUE_MAGIC || h.len != len)
        return "bad header";
    if (h.key_id != key_id)
        return "value of another key";
    if (h.sum != value_sum(v + VALUE_HDR, len - VALUE_HDR, h.key_id, h.version))
        return "checksum mismatch";
    return NULL;
}

/* ---- latency histogram: log-linear, < 0.8% relative error ------------------
 * Values (ns) below HIST_SUB are exact; above, each power of two is split
 * into HIST_HALF equal buckets (HdrHistogram's layout with 8 sub-bucket bits). */

#define HIST_SUB_BITS 8
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_HALF     (HIST_SUB / 2)
#define HIST_GROUPS   40                        /* up to 2^47 ns */
#define HIST_BUCKETS  (HIST_SUB + HIST_GROUPS * HIST_HALF)

struct hist {
    uint64_t count, sum, max;
    uint64_t b[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned g = (unsigned)(63 - __builtin_clzll(v)) - (HIST_SUB_BITS - 1);
    if (g > HIST_GROUPS)
        return HIST_BUCKETS - 1;
    return HIST_SUB + (g - 1) * HIST_HALF + (unsigned)((v >> g) - HIST_HALF);
}

/* The midpoint of bucket i. */
static uint64_t hist_value(unsigned i)
{
    if (i < HIST_SUB)
        return i;
    unsigned k = i - HIST_SUB, g = k / HIST_HALF + 1;
    uint64_t sub = k % HIST_HALF + HIST_HALF;
    return (sub << g) + ((1ull << g) >> 1);
}

static void hist_record(struct hist *h, uint64_t v)
{
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    h->b[hist_index(v)]++;
}

static void hist_merge(struct hist *into, const struct hist *h)
{
    into->count += h->count;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->b[i] += h->b[i];
}

/* The q-quantile (0 < q <= 1) in ns. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count), seen = 0;
    if (rank < 1)
        rank = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

/* ---- the phase clock ---------------------------------------------------- */

/* The target served at time t of the run phase. */
static int target_at(uint64_t t)
{
    return opt.ntargets == 1 ? 0 : (int)((t - t_start) / slice_ns % (uint64_t)opt.ntargets);
}

/* Whether a transaction that ran from ts to te is measured. */
static bool in_window(uint64_t ts, uint64_t te)
{
    if (phase == PHASE_LOAD)
        return true;
    if (ts < t_measure || te > t_end)
        return false;
    if (opt.ntargets == 1)
        return true;
    uint64_t slice_start = ts - (ts - t_start) % slice_ns;
    return ts >= slice_start + guard_ns && te <= slice_start + slice_ns;
}

/* Measured seconds per target of a run phase that ran to t_end. */
static double window_seconds(void)
{
    if (opt.ntargets == 1)
        return (double)(t_end - t_measure) / NS_PER_S;
    uint64_t rounds = (t_end - t_measure) / (slice_ns * (uint64_t)opt.ntargets);
    return (double)(rounds * (slice_ns - guard_ns)) / NS_PER_S;
}

/* ---- workers and connections ----------------------------------------------- */

struct pending {
    uint64_t sent;              /* ns */
    uint32_t key;
    bool is_get;
};

/* What a worker counts, per target. */
struct stats {
    struct hist hist[OP_KINDS];
    uint64_t misses, verify_failures, errors;
    uint64_t last_done;         /* completion of the last measured transaction */
};

struct worker;

struct conn {
    struct worker *w;
    int target;
    const struct endpoint *ep;  /* the address it is connected to */
    int fd;                     /* -1 once failed */
    SSL *ssl;                   /* NULL in plaintext */
    bool out_armed;             /* EPOLLOUT registered */
    bool busy;                  /* a transaction or load batch is in progress */
    char *out;                  /* requests not yet sent: out[out_off, out_len) */
    size_t out_len, out_off, out_cap;
    char *in;                   /* bytes received and not yet parsed */
    size_t in_len, in_cap;
    char *body;                 /* etcd: a chunked response body, reassembled (in_cap) */
    char *val;                  /* etcd: a value being encoded or verified
                                   (value_size + 3; never both at once) */
    struct pending pend[LOAD_WINDOW];   /* sent, unanswered, oldest first */
    unsigned pend_head, pend_n;
    enum op_kind txn;           /* run phase: the transaction in progress */
    uint32_t txn_key;
    uint64_t txn_start;
};

struct worker {
    int id;
    int epfd;
    struct conn *conns;         /* opt.conns per target, target-major */
    int nconns;
    int live;                   /* connections not failed */
    int busy;                   /* connections with conn.busy set */
    bool stop;                  /* start no more transactions */
    struct rng rng;
    struct zipf zipf;
    double read_share;          /* probability that a transaction is a read */
    enum op_kind other;         /* the rest: OP_UPDATE or OP_RMW */
    uint64_t version_seq;
    uint32_t load_next, load_end;
    uint64_t ops_left;          /* --ops: measured transactions still to start */
    unsigned reported;
    struct stats st[MAX_TARGETS];
    pthread_t thread;
};

__attribute__((format(printf, 2, 3)))
static void report_failure(struct worker *w, const char *fmt, ...)
{
    if (w->reported++ >= REPORT_LIMIT)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ycsb: worker %d: ", w->id);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void conn_set_busy(struct conn *c, bool busy)
{
    if (c->busy != busy) {
        c->busy = busy;
        c->w->busy += busy ? 1 : -1;
    }
}

static void conn_set_armed(struct conn *c, bool armed)
{
    struct epoll_event ev = {.events = EPOLLIN | (armed ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->out_armed = armed;
}

/* A connection that failed is closed for good; its unanswered requests are errors. */
static void conn_fail(struct conn *c, const char *why)
{
    struct worker *w = c->w;
    unsigned long e = ERR_get_error();
    char ebuf[160] = "";
    if (e)
        ERR_error_string_n(e, ebuf, sizeof ebuf);
    report_failure(w, "%s connection %d: %s%s%s (%u requests unanswered)",
                   opt.target[c->target].name, (int)(c - w->conns) % opt.conns, why,
                   e ? ": " : "", ebuf, c->pend_n);
    w->st[c->target].errors += c->pend_n ? c->pend_n : 1;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
    c->pend_n = 0;
    conn_set_busy(c, false);
    w->live--;
}

/* Bytes moved (> 0), 0 if the socket would block, -1 on error or EOF. */
static ssize_t conn_send(struct conn *c, const char *p, size_t n)
{
    if (!c->ssl) {
        ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, p, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
}

static ssize_t conn_recv(struct conn *c, char *p, size_t n)
{
    if (!c->ssl) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r > 0)
            return r;
        return r < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, p, (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        if (!c->out_armed)
            conn_set_armed(c, true);
        return 0;
    default:
        return -1;
    }
}

/* Sends what is queued; false if the connection failed. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = conn_send(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            conn_fail(c, "send failed");
            return false;
        }
        if (n == 0) {
            if (!c->out_armed)
                conn_set_armed(c, true);
            return true;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    if (c->out_armed)
        conn_set_armed(c, false);
    return true;
}

static void conn_push(struct conn *c, uint32_t key, bool is_get, uint64_t now)
{
    struct pending *p = &c->pend[(c->pend_head + c->pend_n++) % LOAD_WINDOW];
    p->sent = now;
    p->key = key;
    p->is_get = is_get;
}

/* Requests are only queued when everything before them is sent, so a TLS
 * write that would block is always retried with the same bytes.  The
 * buffers are sized for LOAD_WINDOW requests of either protocol
 * (workers_create). */
static void mc_get(struct conn *c, uint32_t key)
{
    char *p = c->out + c->out_len;
    memcpy(p, "get ", 4);
    memcpy(p + 4, keys[key].s, keys[key].len);
    memcpy(p + 4 + keys[key].len, "\r\n", 2);
    c->out_len += 6 + keys[key].len;
}

static void mc_set(struct conn *c, uint32_t key, uint64_t version)
{
    char *p = c->out + c->out_len;
    int n = sprintf(p, "set %s 0 0 %u\r\n", keys[key].s, opt.value_size);
    value_fill(p + n, key, version);
    memcpy(p + n + opt.value_size, "\r\n", 2);
    c->out_len += (size_t)n + opt.value_size + 2;
}

/* POST /v3/kv/range {"key":K} or /v3/kv/put {"key":K,"value":V}, K and V in
 * base64 as the gateway's JSON mapping of bytes fields wants. */
static void etcd_request(struct conn *c, uint32_t key, bool put, uint64_t version)
{
    size_t klen = B64_LEN(keys[key].len), vlen = B64_LEN(opt.value_size);
    size_t body = 10 + klen + (put ? 11 + vlen : 0);   /* {"key":"K"} + ,"value":"V" */
    char *p = c->out + c->out_len;
    p += sprintf(p, "POST /v3/kv/%s HTTP/1.1\r\nHost: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 put ? "put" : "range", c->ep->addr, body);
    p += sprintf(p, "{\"key\":\"");
    p += EVP_EncodeBlock((unsigned char *)p, (const unsigned char *)keys[key].s, (int)keys[key].len);
    *p++ = '"';
    if (put) {
        value_fill(c->val, key, version);
        p += sprintf(p, ",\"value\":\"");
        p += EVP_EncodeBlock((unsigned char *)p, (const unsigned char *)c->val, (int)opt.value_size);
        *p++ = '"';
    }
    *p++ = '}';
    c->out_len = (size_t)(p - c->out);
}

static void req_get(struct conn *c, uint32_t key, uint64_t now)
{
    if (opt.target[c->target].proto == PROTO_ETCD)
        etcd_request(c, key, false, 0);
    else
        mc_get(c, key);
    conn_push(c, key, true, now);
}

static void req_set(struct conn *c, uint32_t key, uint64_t version, uint64_t now)
{
    if (opt.target[c->target].proto == PROTO_ETCD)
        etcd_request(c, key, true, version);
    else
        mc_set(c, key, version);
    conn_push(c, key, false, now);
}

static uint64_t next_version(struct worker *w)
{
    return (uint64_t)(w->id + 1) << 48 | ++w->version_seq;
}

/* Load phase: sends the next batch of sets, or goes idle when all are stored. */
static void load_next(struct conn *c)
{
    struct worker *w = c->w;
    if (w->load_next >= w->load_end) {
        conn_set_busy(c, false);
        return;
    }
    uint64_t now = now_ns();
    conn_set_busy(c, true);
    while (c->pend_n < LOAD_WINDOW && w->load_next < w->load_end)
        req_set(c, w->load_next++, 0, now);
    conn_flush(c);
}

/* Run phase: starts the next transaction, or goes idle when time or --ops is
 * up or another target's slice has begun. */
static void txn_next(struct conn *c)
{
    struct worker *w = c->w;
    uint64_t now = now_ns();
    if (w->stop || now >= t_end || target_at(now) != c->target) {
        conn_set_busy(c, false);
        return;
    }
    if (opt.ops && now >= t_measure) {
        if (w->ops_left == 0) {
            w->stop = true;
            conn_set_busy(c, false);
            return;
        }
        w->ops_left--;
    }
    conn_set_busy(c, true);
    c->txn = rng_double(&w->rng) < w->read_share ? OP_READ : w->other;
    c->txn_key = zipf_next(&w->zipf, &w->rng);
    c->txn_start = now;
    if (c->txn == OP_UPDATE)
        req_set(c, c->txn_key, next_version(w), now);
    else
        req_get(c, c->txn_key, now);
    conn_flush(c);
}

/* How a reply ended; REPLY_WRONG_KEY is a VALUE naming a key not asked for. */
enum reply { REPLY_STORED, REPLY_VALUE, REPLY_MISS, REPLY_ERROR, REPLY_WRONG_KEY };

static void on_reply(struct conn *c, const struct pending *r, enum reply rep,
                     const char *data, size_t len)
{
    struct worker *w = c->w;
    struct stats *st = &w->st[c->target];
    uint64_t now = now_ns();
    const char *bad;

    if (rep == REPLY_VALUE && (bad = value_check(data, len, r->key)) != NULL) {
        st->verify_failures++;
        report_failure(w, "%s: get %s: %s", opt.target[c->target].name, keys[r->key].s, bad);
    } else if (rep == REPLY_WRONG_KEY) {
        st->verify_failures++;
        report_failure(w, "%s: get %s: reply names another key", opt.target[c->target].name,
                       keys[r->key].s);
    } else if (rep == REPLY_MISS) {
        st->misses++;
        report_failure(w, "%s: get %s: not found", opt.target[c->target].name, keys[r->key].s);
    }

    if (phase == PHASE_LOAD) {
        hist_record(&st->hist[OP_INSERT], now - r->sent);
        hist_record(&st->hist[OP_ALL], now - r->sent);
        st->last_done = now;
        if (c->pend_n == 0)
            load_next(c);
        return;
    }

    bool measured = in_window(c->txn_start, now);
    if (measured)
        hist_record(&st->hist[r->is_get ? OP_READ : OP_UPDATE], now - r->sent);
    if (c->txn == OP_RMW && r->is_get) {
        req_set(c, c->txn_key, next_version(w), now);
        conn_flush(c);
        return;
    }
    if (measured) {
        hist_record(&st->hist[OP_ALL], now - c->txn_start);
        if (c->txn == OP_RMW)
            hist_record(&st->hist[OP_RMW], now - c->txn_start);
        st->last_done = now;
    }
    txn_next(c);
}

/* Parses "VALUE <key> <flags> <bytes>" (line excludes CRLF); false if malformed. */
static bool parse_value_line(const char *line, size_t n, const char **key, size_t *klen,
                             uint64_t *bytes)
{
    const char *p = line + 6, *end = line + n, *sp;
    if (!(sp = memchr(p, ' ', (size_t)(end - p))))
        return false;
    *key = p;
    *klen = (size_t)(sp - p);
    p = sp + 1;
    if (!(sp = memchr(p, ' ', (size_t)(end - p))))          /* flags */
        return false;
    p = sp + 1;
    if (p == end || *p < '0' || *p > '9')
        return false;
    uint64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return false;
    }
    *bytes = v;
    return p == end || *p == ' ';                            /* a cas unique may follow */
}

/* Counts and describes (with its first line) a reply that is an error. */
static void reply_error(struct conn *c, const struct pending *r, const char *what,
                        const char *text, size_t n)
{
    const char *eol = memchr(text, '\n', n);
    if (eol)
        n = (size_t)(eol - text) - (eol > text && eol[-1] == '\r');
    c->w->st[c->target].errors++;
    report_failure(c->w, "%s: %s %s: %s \"%.*s\"", opt.target[c->target].name,
                   r->is_get ? "get" : "set", keys[r->key].s, what, (int)(n < 120 ? n : 120), text);
}

/* Takes the oldest request off the queue and hands its reply on. */
static void reply_done(struct conn *c, enum reply rep, const char *data, size_t len)
{
    struct pending r = c->pend[c->pend_head];
    c->pend_head = (c->pend_head + 1) % LOAD_WINDOW;
    c->pend_n--;
    on_reply(c, &r, rep, data, len);
}

/* memcached: consumes the complete replies from in + *pos; false if the
 * connection failed. */
static bool mc_parse(struct conn *c, size_t *pos)
{
    while (c->pend_n > 0 && c->fd >= 0) {
        const char *p = c->in + *pos, *eol;
        size_t avail = c->in_len - *pos, used, dlen = 0;
        if (!(eol = memmem(p, avail, "\r\n", 2)))
            break;
        size_t line = (size_t)(eol - p);
        const struct pending *r = &c->pend[c->pend_head];
        const char *data = NULL;
        enum reply rep;
        used = line + 2;
        if (r->is_get && line > 6 && memcmp(p, "VALUE ", 6) == 0) {
            const char *k;
            size_t klen;
            uint64_t bytes;
            if (!parse_value_line(p, line, &k, &klen, &bytes)) {
                conn_fail(c, "malformed VALUE line");
                return false;
            }
            if (used + bytes + 7 > c->in_cap) {
                conn_fail(c, "value larger than expected");
                return false;
            }
            if (avail < used + bytes + 7)
                break;
            if (memcmp(p + used + bytes, "\r\nEND\r\n", 7) != 0) {
                conn_fail(c, "value not followed by END");
                return false;
            }
            data = p + used;
            dlen = (size_t)bytes;
            used += (size_t)bytes + 7;
            rep = klen == keys[r->key].len && memcmp(k, keys[r->key].s, klen) == 0
                      ? REPLY_VALUE : REPLY_WRONG_KEY;
        } else if (r->is_get && line == 3 && memcmp(p, "END", 3) == 0) {
            rep = REPLY_MISS;
        } else if (!r->is_get && line == 6 && memcmp(p, "STORED", 6) == 0) {
            rep = REPLY_STORED;
        } else {
            rep = REPLY_ERROR;
            reply_error(c, r, "server replied", p, line);
        }
        *pos += used;
        reply_done(c, rep, data, dlen);
    }
    return c->fd >= 0;
}

/* The parts of an HTTP/1.1 response head the driver needs. */
struct http_head {
    int status;
    long long length;           /* Content-Length, -1 if absent */
    bool chunked;               /* Transfer-Encoding ends with "chunked" */
};

/* Parses a response head of n bytes, its final blank line included. */
static bool http_head_parse(const char *p, size_t n, struct http_head *h)
{
    const char *end = p + n - 2, *line, *eol;
    h->status = 0;
    h->length = -1;
    h->chunked = false;
    if (n < 16 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
        return false;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        h->status = h->status * 10 + (p[i] - '0');
    }
    for (line = memmem(p, n, "\r\n", 2) + 2; line < end; line = eol + 2) {
        eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(eol - line)), *v;
        if (!colon)
            return false;
        size_t name = (size_t)(colon - line), vlen;
        for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
            ;
        vlen = (size_t)(eol - v);
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        if (name == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            if (vlen == 0 || vlen > 12)
                return false;
            h->length = 0;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return false;
                h->length = h->length * 10 + (v[i] - '0');
            }
        } else if (name == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            h->chunked = vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0;
        }
    }
    return true;
}

/* Reassembles a chunked body from the n bytes at p into out (cap bytes):
 * 1 when it is complete (*len body bytes, *used bytes of p consumed, trailer
 * included), 0 if more input is needed, -1 if malformed or over cap. */
static int http_dechunk(const char *p, size_t n, char *out, size_t cap, size_t *len,
                        size_t *used)
{
    size_t pos = 0, got = 0;
    for (;;) {
        const char *eol = memmem(p + pos, n - pos, "\r\n", 2);
        if (!eol)
            return n - pos > 64 ? -1 : 0;
        uint64_t size = 0;
        const char *q = p + pos;
        for (; q < eol && isxdigit((unsigned char)*q); q++) {
            size = size * 16 + (uint64_t)(isdigit((unsigned char)*q) ? *q - '0' : (*q | 0x20) - 'a' + 10);
            if (size > cap)
                return -1;
        }
        if (q == p + pos || (q < eol && *q != ';'))        /* no size, or junk before extensions */
            return -1;
        pos = (size_t)(eol - p) + 2;
        if (size == 0) {                                    /* last chunk: trailer lines, blank line */
            for (;;) {
                if (!(eol = memmem(p + pos, n - pos, "\r\n", 2)))
                    return 0;
                size_t l = (size_t)(eol - (p + pos));
                pos += l + 2;
                if (l == 0)
                    break;
            }
            *len = got;
            *used = pos;
            return 1;
        }
        if (size > cap - got)
            return -1;
        if (n - pos < size + 2)
            return 0;
        if (memcmp(p + pos + size, "\r\n", 2) != 0)
            return -1;
        memcpy(out + got, p + pos, size);
        got += size;
        pos += size + 2;
    }
}

/* The string after the first occurrence of pat (which ends with the opening
 * quote) in [from, end): *len bytes up to the closing quote.  NULL if absent
 * or escaped (base64 never needs escapes). */
static const char *json_string(const char *from, const char *end, const char *pat, size_t *len)
{
    size_t pl = strlen(pat);
    const char *s = memmem(from, (size_t)(end - from), pat, pl), *q;
    if (!s)
        return NULL;
    s += pl;
    if (!(q = memchr(s, '"', (size_t)(end - s))) || memchr(s, '\\', (size_t)(q - s)))
        return NULL;
    *len = (size_t)(q - s);
    return s;
}

/* A range reply for key: REPLY_VALUE with the decoded value in c->val
 * (*vlen bytes), REPLY_MISS (no "kvs"), REPLY_WRONG_KEY, or REPLY_ERROR if it
 * is not a range reply. */
static enum reply etcd_range_reply(struct conn *c, uint32_t key, const char *body, size_t n,
                                   size_t *vlen)
{
    const char *end = body + n, *kvs = memmem(body, n, "\"kvs\":[", 7), *k, *v;
    size_t klen, b64;
    *vlen = 0;
    if (!kvs)
        return n > 10 && memcmp(body, "{\"header\":", 10) == 0 ? REPLY_MISS : REPLY_ERROR;
    if (!(k = json_string(kvs, end, "\"key\":\"", &klen)) ||
        !(v = json_string(kvs, end, "\"value\":\"", &b64)))
        return REPLY_ERROR;
    unsigned char want[B64_LEN(KEY_CAP) + 1];
    int wl = EVP_EncodeBlock(want, (const unsigned char *)keys[key].s, (int)keys[key].len);
    if (klen != (size_t)wl || memcmp(k, want, klen) != 0)
        return REPLY_WRONG_KEY;
    if (b64 != B64_LEN(opt.value_size))
        return REPLY_VALUE;             /* *vlen 0: value_check reports the wrong length */
    int d = EVP_DecodeBlock((unsigned char *)c->val, (const unsigned char *)v, (int)b64);
    if (d < 0)
        return REPLY_ERROR;
    *vlen = (size_t)d - (v[b64 - 1] == '=') - (v[b64 - 2] == '=');
    return REPLY_VALUE;
}

/* etcd's gateway: consumes the complete HTTP responses from in + *pos;
 * false if the connection failed. */
static bool etcd_parse(struct conn *c, size_t *pos)
{
    while (c->pend_n > 0 && c->fd >= 0) {
        const char *p = c->in + *pos, *blank, *body;
        size_t avail = c->in_len - *pos, head, blen, used, vlen = 0;
        struct http_head h;
        if (!(blank = memmem(p, avail, "\r\n\r\n", 4)))
            break;
        head = (size_t)(blank - p) + 4;
        if (!http_head_parse(p, head, &h)) {
            conn_fail(c, "malformed HTTP response head");
            return false;
        }
        if (h.chunked) {
            int r = http_dechunk(p + head, avail - head, c->body, c->in_cap, &blen, &used);
            if (r < 0) {
                conn_fail(c, "malformed or oversized chunked body");
                return false;
            }
            if (r == 0)
                break;
            body = c->body;
        } else if (h.length < 0) {
            conn_fail(c, "HTTP response without Content-Length");
            return false;
        } else {
            if ((unsigned long long)h.length > c->in_cap - head) {
                conn_fail(c, "HTTP response larger than expected");
                return false;
            }
            blen = used = (size_t)h.length;
            if (avail - head < blen)
                break;
            body = p + head;
        }
        const struct pending *r = &c->pend[c->pend_head];
        enum reply rep;
        if (h.status != 200) {
            char what[16];
            snprintf(what, sizeof what, "HTTP %d", h.status);
            reply_error(c, r, what, body, blen);
            rep = REPLY_ERROR;
        } else if (!r->is_get) {
            rep = blen > 10 && memcmp(body, "{\"header\":", 10) == 0 ? REPLY_STORED : REPLY_ERROR;
        } else {
            rep = etcd_range_reply(c, r->key, body, blen, &vlen);
        }
        if (h.status == 200 && rep == REPLY_ERROR)
            reply_error(c, r, "unexpected reply", body, blen);
        *pos += head + used;
        reply_done(c, rep, c->val, vlen);
    }
    return c->fd >= 0;
}

/* Consumes every complete reply in the input; false if the connection failed. */
static bool conn_parse(struct conn *c)
{
    size_t pos = 0;
    bool alive = opt.target[c->target].proto == PROTO_ETCD ? etcd_parse(c, &pos)
                                                           : mc_parse(c, &pos);
    if (!alive)
        return false;
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    if (c->in_len > 0 && c->pend_n == 0) {
        conn_fail(c, "unsolicited bytes from server");
        return false;
    }
    if (c->in_len == c->in_cap) {
        conn_fail(c, "reply too long");
        return false;
    }
    return true;
}

/* Reads what the socket (and OpenSSL's buffer) holds.  Level-triggered
 * epoll reports the socket again if more is left, so a short read ends the
 * loop without the extra read that would return EAGAIN. */
static void conn_read(struct conn *c)
{
    for (;;) {
        size_t space = c->in_cap - c->in_len;
        ssize_t n = conn_recv(c, c->in + c->in_len, space);
        if (n < 0) {
            conn_fail(c, "connection closed or failed");
            return;
        }
        if (n == 0)
            return;
        c->in_len += (size_t)n;
        if (!conn_parse(c))
            return;
        if (c->ssl ? !SSL_has_pending(c->ssl) : (size_t)n < space)
            return;
    }
}

static void conn_on_event(struct conn *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
        conn_fail(c, "connection reset");
        return;
    }
    if (c->out_off < c->out_len && !conn_flush(c))
        return;
    if ((events & EPOLLIN) || (c->ssl && SSL_has_pending(c->ssl)))
        conn_read(c);
}

/* Fails connections whose oldest request went unanswered too long. */
static void worker_check_timeouts(struct worker *w, uint64_t now)
{
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd >= 0 && c->pend_n > 0 &&
            now - c->pend[c->pend_head].sent > REPLY_TIMEOUT_S * NS_PER_S)
            conn_fail(c, "no reply within " STR(REPLY_TIMEOUT_S) " s");
    }
}

/* Starts every idle connection to target t. */
static void worker_start(struct worker *w, int t)
{
    for (int i = t * opt.conns; i < (t + 1) * opt.conns; i++) {
        struct conn *c = &w->conns[i];
        if (c->fd < 0 || c->busy)
            continue;
        if (phase == PHASE_LOAD)
            load_next(c);
        else
            txn_next(c);
    }
}

/* The event loop of one worker for one phase. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[64];
    uint64_t last_check = now_ns();
    int serving = -1;

    if (phase == PHASE_LOAD)
        worker_start(w, load_target);
    for (;;) {
        uint64_t now = now_ns();
        int timeout_ms = 100;
        if ((phase == PHASE_RUN && now >= t_end) || w->live == 0)
            w->stop = true;
        if (w->stop || phase == PHASE_LOAD) {
            if (w->busy == 0)
                break;
        } else {
            int t = target_at(now);
            if (t != serving) {
                serving = t;
                worker_start(w, t);
            }
            if (opt.ntargets > 1) {
                uint64_t left = slice_ns - (now - t_start) % slice_ns;
                if (left < 100 * NS_PER_MS)
                    timeout_ms = (int)((left + NS_PER_MS - 1) / NS_PER_MS);
            }
        }
        int n = epoll_wait(w->epfd, evs, 64, timeout_ms);
        if (n < 0 && errno != EINTR) {
            perror("ycsb: epoll_wait");
            w->st[0].errors++;
            break;
        }
        for (int i = 0; i < n; i++)
            conn_on_event(evs[i].data.ptr, evs[i].events);
        now = now_ns();
        if (now - last_check > NS_PER_S / 10) {
            worker_check_timeouts(w, now);
            last_check = now;
        }
    }
    return NULL;
}

/* ---- setup ------------------------------------------------------------------ */

static SSL_CTX *tls_ctx_create(const struct target *t)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* read_ahead: one read() takes a whole record instead of header + body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (t->ca) {
        if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1)
            die("cannot load CA file %s", t->ca);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (t->cert && SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1)
        die("cannot load client certificate %s", t->cert);
    if (t->key && SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1)
        die("cannot load client key %s", t->key);
    return ctx;
}

/* Blocking connect and handshake; the socket is left non-blocking. */
static void conn_open(struct conn *c, const struct addrinfo *ai)
{
    const struct target *t = &opt.target[c->target];
    const char *addr = c->ep->addr, *host = c->ep->host;
    int one = 1;
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0)
        die("cannot connect to %s (%s): %s", addr, t->name, strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (t->ctx) {
        c->ssl = SSL_new(t->ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
            die("SSL_new failed");
        if (t->ca && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1) {
            SSL_set1_host(c->ssl, host);
            SSL_set_tlsext_host_name(c->ssl, host);
        }
        if (SSL_connect(c->ssl) != 1) {
            char ebuf[200];
            ERR_error_string_n(ERR_get_error(), ebuf, sizeof ebuf);
            long vr = SSL_get_verify_result(c->ssl);
            die("TLS handshake with %s (%s) failed: %s%s%s", addr, t->name, ebuf,
                vr != X509_V_OK ? "; certificate: " : "",
                vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
        }
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* Opens every connection: per worker, opt.conns to each target, spread over
 * the target's addresses round robin across all workers. */
static struct worker *workers_create(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai[MAX_TARGETS][MAX_ENDPOINTS];
    size_t out_cap[MAX_TARGETS], in_cap[MAX_TARGETS];
    for (int t = 0; t < opt.ntargets; t++) {
        const struct target *tg = &opt.target[t];
        for (int e = 0; e < tg->nep; e++) {
            int rc = getaddrinfo(tg->ep[e].host, tg->ep[e].port, &hints, &ai[t][e]);
            if (rc != 0)
                die("cannot resolve %s (%s): %s", tg->ep[e].addr, tg->name, gai_strerror(rc));
        }
        if (tg->proto == PROTO_ETCD) {
            /* A range reply: head, JSON framing and revisions, base64 key and value. */
            in_cap[t] = 2 * HTTP_HEAD_CAP + B64_LEN(KEY_CAP) + 2 * B64_LEN(opt.value_size);
            out_cap[t] = LOAD_WINDOW * (HTTP_HEAD_CAP + B64_LEN(KEY_CAP) + B64_LEN(opt.value_size));
        } else {
            in_cap[t] = (size_t)opt.value_size + KEY_CAP + 64;
            out_cap[t] = LOAD_WINDOW * ((size_t)opt.value_size + KEY_CAP + 32);
        }
    }
    struct worker *ws = calloc((size_t)opt.threads, sizeof *ws);
    if (!ws)
        die("out of memory");
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->nconns = opt.conns * opt.ntargets;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
        if (w->epfd < 0 || !w->conns)
            die("cannot create worker %d", i);
        zipf_init(&w->zipf, opt.records);
        for (int j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            int t = j / opt.conns, e = (i * opt.conns + j % opt.conns) % opt.target[t].nep;
            c->w = w;
            c->target = t;
            c->ep = &opt.target[t].ep[e];
            c->out_cap = out_cap[t];
            c->in_cap = in_cap[t];
            c->out = malloc(c->out_cap);
            c->in = malloc(c->in_cap);
            if (!c->out || !c->in)
                die("out of memory");
            if (opt.target[t].proto == PROTO_ETCD) {
                c->body = malloc(c->in_cap);
                c->val = malloc((size_t)opt.value_size + 3);
                if (!c->body || !c->val)
                    die("out of memory");
            }
            conn_open(c, ai[t][e]);
            w->live++;
        }
    }
    for (int t = 0; t < opt.ntargets; t++) {
        SSL *ssl = ws[0].conns[t * opt.conns].ssl;
        if (ssl) {
            snprintf(opt.target[t].tls_version, sizeof opt.target[t].tls_version, "%s",
                     SSL_get_version(ssl));
            snprintf(opt.target[t].cipher, sizeof opt.target[t].cipher, "%s",
                     SSL_get_cipher_name(ssl));
        }
        for (int e = 0; e < opt.target[t].nep; e++)
            freeaddrinfo(ai[t][e]);
    }
    return ws;
}

static void workers_destroy(struct worker *ws)
{
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &ws[i];
        for (int j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            if (c->ssl)
                SSL_free(c->ssl);
            if (c->fd >= 0)
                close(c->fd);
            free(c->out);
            free(c->in);
            free(c->body);
            free(c->val);
        }
        free(w->conns);
        close(w->epfd);
    }
    free(ws);
}

/* ---- phases and the report ----------------------------------------------- */

struct totals {
    struct stats st;            /* merged over workers; last_done = the latest */
    double seconds;             /* measured window */
};

static void worker_reset(struct worker *w)
{
    memset(w->st, 0, sizeof w->st);
    w->reported = 0;
    w->busy = 0;
    w->stop = false;
    rng_seed(&w->rng, opt.seed * 0x100000001b3ull + (uint64_t)w->id);
    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->in_len = c->out_len = c->out_off = 0;
        c->pend_n = c->pend_head = 0;
        c->busy = false;
    }
}

/* Runs one phase on every worker; tot[t] receives target t's figures. */
static void phase_run(struct worker *ws, enum phase ph, int target, struct totals *tot)
{
    double read_share = opt.workload == 'B' ? 0.95 : opt.workload == 'C' ? 1.0 : 0.5;
    uint64_t n = (uint64_t)opt.ntargets;

    phase = ph;
    load_target = target;
    t_start = now_ns();
    if (ph == PHASE_LOAD) {
        t_measure = t_start;
        t_end = UINT64_MAX;
    } else if (n == 1) {
        t_measure = t_start + (uint64_t)(opt.warmup * NS_PER_S);
        t_end = opt.duration > 0 ? t_measure + (uint64_t)(opt.duration * NS_PER_S) : UINT64_MAX;
    } else {
        slice_ns = (uint64_t)(opt.slice * NS_PER_S);
        guard_ns = GUARD_MS * NS_PER_MS;
        uint64_t warm = (uint64_t)ceil(opt.warmup / opt.slice);
        uint64_t rounds = (uint64_t)ceil(opt.duration / opt.slice);
        t_measure = t_start + warm * n * slice_ns;
        t_end = t_measure + rounds * n * slice_ns;
    }
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &ws[i];
        worker_reset(w);
        w->read_share = read_share;
        w->other = opt.workload == 'F' ? OP_RMW : OP_UPDATE;
        w->load_next = (uint32_t)((uint64_t)opt.records * (uint64_t)i / (uint64_t)opt.threads);
        w->load_end = (uint32_t)((uint64_t)opt.records * (uint64_t)(i + 1) / (uint64_t)opt.threads);
        w->ops_left = opt.ops / (uint64_t)opt.threads + ((uint64_t)i < opt.ops % (uint64_t)opt.threads);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            die("cannot start worker %d", i);
    }
    memset(tot, 0, sizeof *tot * (size_t)opt.ntargets);
    for (int i = 0; i < opt.threads; i++) {
        struct worker *w = &ws[i];
        pthread_join(w->thread, NULL);
        for (int t = 0; t < opt.ntargets; t++) {
            struct stats *into = &tot[t].st, *from = &w->st[t];
            for (int k = 0; k < OP_KINDS; k++)
                hist_merge(&into->hist[k], &from->hist[k]);
            into->misses += from->misses;
            into->verify_failures += from->verify_failures;
            into->errors += from->errors;
            if (from->last_done > into->last_done)
                into->last_done = from->last_done;
        }
    }
    for (int t = 0; t < opt.ntargets; t++) {
        uint64_t last = tot[t].st.last_done > t_measure ? tot[t].st.last_done : t_measure;
        if (ph == PHASE_RUN && t_end != UINT64_MAX)
            tot[t].seconds = window_seconds();
        else
            tot[t].seconds = (double)(last - t_measure) / NS_PER_S;
    }
}

static double us(uint64_t ns) { return (double)ns / 1000.0; }

static bool totals_ok(const struct totals *tot)
{
    return tot->st.misses == 0 && tot->st.verify_failures == 0 && tot->st.errors == 0 &&
           tot->st.hist[OP_ALL].count > 0;
}

static double per_sec(const struct totals *tot, uint64_t count)
{
    return tot->seconds > 0 ? (double)count / tot->seconds : 0.0;
}

/* A target's addresses, space-separated, into buf (MAX_ENDPOINTS * 82 bytes). */
static void addrs_join(const struct target *tg, char *buf)
{
    char *p = buf;
    for (int e = 0; e < tg->nep; e++)
        p += sprintf(p, "%s%s", e ? " " : "", tg->ep[e].addr);
    *p = 0;
}

static void report_text(FILE *f, enum phase ph, const struct target *tg, const struct totals *tot)
{
    const struct hist *all = &tot->st.hist[OP_ALL];
    char what[32];
    if (ph == PHASE_LOAD)
        snprintf(what, sizeof what, "load");
    else
        snprintf(what, sizeof what, "workload %c", opt.workload);
    char addrs[MAX_ENDPOINTS * 82];
    addrs_join(tg, addrs);
    fprintf(f, "ycsb %s: %s (%s at %s) %s%s%s, %d threads x %d conns, %u records x %u B\n",
            what, tg->name, proto_names[tg->proto], addrs, tg->tls ? tg->tls_version : "plaintext",
            tg->tls ? " " : "", tg->cipher, opt.threads, opt.conns, opt.records, opt.value_size);
    fprintf(f, "  %.2f s measured, %" PRIu64 " ops, %.0f ops/s\n", tot->seconds, all->count,
            per_sec(tot, all->count));
    fprintf(f, "  %-7s %10s %10s %9s %9s %9s %9s %9s\n", "op", "count", "ops/s", "mean_us",
            "p50_us", "p99_us", "p99.9_us", "max_us");
    for (int k = 0; k < OP_KINDS; k++) {
        const struct hist *h = &tot->st.hist[k];
        if (h->count == 0)
            continue;
        fprintf(f, "  %-7s %10" PRIu64 " %10.0f %9.1f %9.1f %9.1f %9.1f %9.1f\n", op_names[k],
                h->count, per_sec(tot, h->count), us(h->sum) / (double)h->count,
                us(hist_quantile(h, 0.50)), us(hist_quantile(h, 0.99)),
                us(hist_quantile(h, 0.999)), us(h->max));
    }
    fprintf(f, "  verification: %" PRIu64 " failures, %" PRIu64 " misses, %" PRIu64 " errors%s\n",
            tot->st.verify_failures, tot->st.misses, tot->st.errors,
            totals_ok(tot) ? "" : "  <-- FAILED");
}

/* One flat JSON object per line, so shell tools can pick fields. */
static void report_json(FILE *f, enum phase ph, const struct target *tg, const struct totals *tot)
{
    const struct hist *all = &tot->st.hist[OP_ALL];
    char addrs[MAX_ENDPOINTS * 82];
    addrs_join(tg, addrs);
    fprintf(f, "{\"server\":\"%s\",\"phase\":\"%s\",\"workload\":\"%c\",\"proto\":\"%s\","
               "\"addrs\":\"%s\",\"host\":\"%s\",\"port\":%s,\"tls\":%s,\"tls_version\":\"%s\",\"cipher\":\"%s\","
               "\"threads\":%d,\"conns\":%d,\"records\":%u,\"value_size\":%u,\"seed\":%" PRIu64 ","
               "\"slice_s\":%.3f,\"seconds\":%.3f,\"ops\":%" PRIu64 ",\"ops_per_sec\":%.1f,"
               "\"mean_us\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
            tg->name, ph == PHASE_LOAD ? "load" : "run", ph == PHASE_LOAD ? '-' : opt.workload,
            proto_names[tg->proto], addrs, tg->ep[0].host, tg->ep[0].port,
            tg->tls ? "true" : "false", tg->tls_version, tg->cipher,
            opt.threads, opt.conns, opt.records, opt.value_size, opt.seed,
            opt.ntargets > 1 ? opt.slice : 0.0, tot->seconds, all->count,
            per_sec(tot, all->count), all->count ? us(all->sum) / (double)all->count : 0.0,
            us(hist_quantile(all, 0.50)), us(hist_quantile(all, 0.99)),
            us(hist_quantile(all, 0.999)), us(all->max));
    for (int k = 0; k < OP_ALL; k++) {
        const struct hist *h = &tot->st.hist[k];
        if (h->count == 0)
            continue;
        fprintf(f, ",\"%s_ops\":%" PRIu64 ",\"%s_p50_us\":%.1f,\"%s_p99_us\":%.1f,\"%s_p999_us\":%.1f",
                op_names[k], h->count, op_names[k], us(hist_quantile(h, 0.50)), op_names[k],
                us(hist_quantile(h, 0.99)), op_names[k], us(hist_quantile(h, 0.999)));
    }
    fprintf(f, ",\"misses\":%" PRIu64 ",\"verify_failures\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"ok\":%s}\n",
            tot->st.misses, tot->st.verify_failures, tot->st.errors,
            totals_ok(tot) ? "true" : "false");
    fflush(f);
}

/* Reports a phase for every target; false if any of them failed. */
static bool report(enum phase ph, const struct totals *tot)
{
    bool ok = true;
    for (int t = 0; t < opt.ntargets; t++) {
        report_text(opt.json ? stderr : stdout, ph, &opt.target[t], &tot[t]);
        if (opt.json)
            report_json(stdout, ph, &opt.target[t], &tot[t]);
        ok = ok && totals_ok(&tot[t]);
    }
    return ok;
}

/* ---- options ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
"usage: ycsb [options]\n"
"YCSB workloads against memcached-protocol servers (get/set) or etcd 3.4's\n"
"HTTP/JSON gateway (/v3/kv/range, /v3/kv/put), closed loop.\n"
"Systems under test (up to %d, served in turn, --slice each):\n"
"  --port PORT          a memcached-protocol server at --host:PORT (default\n"
"                       11211); repeat it to compare servers\n"
"  --name NAME          a name for the server of the matching --port (reports)\n"
"  --host HOST          address of the --port servers (default 127.0.0.1)\n"
"  --tls                use TLS with the --port servers; --ca FILE verifies\n"
"                       them against FILE\n"
"  --ca FILE            CA certificate(s) to verify the --port servers with\n"
"  --cert FILE, --key FILE   client certificate and key (optional)\n"
"  --target SPEC        a system described completely (not with --port): SPEC\n"
"                       is comma-separated items: name=NAME,\n"
"                       proto=memcached|etcd (default memcached),\n"
"                       addr=HOST:PORT (repeat for a cluster's members, up to\n"
"                       %d; connections are spread over them), tls, ca=FILE,\n"
"                       cert=FILE, key=FILE (ca, cert and key imply tls)\n"
"  --slice SECONDS      time slice per system when comparing (default 0.5)\n"
"Work:\n"
"  --load               load phase: store every record once (pipelined)\n"
"  --workload A|B|C|F   run phase: A 50/50 read/update, B 95/5, C read only,\n"
"                       F 50%% read / 50%% read-modify-write\n"
"  --records N          records (default 100000)\n"
"  --value-size BYTES   value size, >= %d (default 1000)\n"
"  --threads N          worker threads (default 2)\n"
"  --conns N            connections per thread and system (default 25)\n"
"  --duration SECONDS   measured seconds per system (default 10 unless --ops)\n"
"  --ops N              stop after N measured transactions (one system only)\n"
"  --warmup SECONDS     unmeasured run per system before measuring (default 1)\n"
"  --seed N             random seed (default 1)\n"
"  --json               one JSON line per system and phase on stdout, the text\n"
"                       report on stderr\n"
"Example: ycsb --target name=etcd,proto=etcd,addr=127.0.0.1:2379 \\\n"
"              --target name=node,tls,ca=ca.crt,addr=127.0.0.1:11211 --load --workload A\n"
"Exit status: 0 if every reply was verified, 1 on any miss, corrupt value or\n"
"error, 2 on bad usage or a failed setup.\n", MAX_TARGETS, MAX_ENDPOINTS, VALUE_HDR);
}

/* HOST:PORT or [V6]:PORT into e; false if malformed. */
static bool parse_endpoint(const char *s, struct endpoint *e)
{
    const char *colon = strrchr(s, ':'), *h = s;
    size_t hl;
    if (!colon || strlen(s) >= sizeof e->addr)
        return false;
    hl = (size_t)(colon - s);
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof e->host || strlen(colon + 1) >= sizeof e->port)
        return false;
    for (size_t i = 0; i < hl; i++)
        if (!isalnum((unsigned char)h[i]) && !strchr(".-:_", h[i]))
            return false;
    memcpy(e->host, h, hl);
    e->host[hl] = 0;
    strcpy(e->port, colon + 1);
    strcpy(e->addr, s);
    char *end;
    long port = strtol(e->port, &end, 10);
    return *e->port && !*end && port >= 1 && port <= 65535;
}

static void check_name(const char *what, const char *name)
{
    if (!*name || strlen(name) > 64 || strpbrk(name, "\"\\"))
        die("%s: a name of 1 to 64 characters without quotes, got '%s'", what, name);
}

/* --target SPEC: see usage().  The parsed copy lives as long as the process. */
static void parse_target(const char *spec)
{
    if (opt.ntargets == MAX_TARGETS)
        die("at most %d systems", MAX_TARGETS);
    struct target *t = &opt.target[opt.ntargets++];
    char *copy = strdup(spec), *save = NULL, *item;
    if (!copy)
        die("out of memory");
    for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *v = strchr(item, '=');
        if (v)
            *v++ = 0;
        if (strcmp(item, "tls") == 0 && !v) {
            t->tls = true;
        } else if (!v || !*v) {
            die("--target: '%s' needs a value (see --help)", item);
        } else if (strcmp(item, "name") == 0) {
            check_name("--target name", v);
            t->name = v;
        } else if (strcmp(item, "proto") == 0) {
            if (strcmp(v, "memcached") == 0)
                t->proto = PROTO_MEMCACHED;
            else if (strcmp(v, "etcd") == 0)
                t->proto = PROTO_ETCD;
            else
                die("--target: proto is memcached or etcd, got '%s'", v);
        } else if (strcmp(item, "addr") == 0) {
            if (t->nep == MAX_ENDPOINTS)
                die("--target: at most %d addresses", MAX_ENDPOINTS);
            if (!parse_endpoint(v, &t->ep[t->nep++]))
                die("--target: addr: expected HOST:PORT or [V6]:PORT, got '%s'", v);
        } else if (strcmp(item, "ca") == 0) {
            t->ca = v;
            t->tls = true;
        } else if (strcmp(item, "cert") == 0) {
            t->cert = v;
            t->tls = true;
        } else if (strcmp(item, "key") == 0) {
            t->key = v;
            t->tls = true;
        } else {
            die("--target: unknown item '%s' (see --help)", item);
        }
    }
    if (t->nep == 0)
        die("--target '%s': no addr=HOST:PORT", spec);
    if ((t->cert != NULL) != (t->key != NULL))
        die("--target '%s': cert and key go together", spec);
}

static uint64_t parse_u64(const char *name, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        die("%s: expected an integer in [%" PRIu64 ", %" PRIu64 "], got '%s'", name, min, max, s);
    return v;
}

static double parse_seconds(const char *name, const char *s, double min)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= min) || v > 86400)
        die("%s: expected seconds in [%g, 86400], got '%s'", name, min, s);
    return v;
}

static void options_parse(int argc, char **argv)
{
    enum { O_HOST = 256, O_PORT, O_NAME, O_TARGET, O_SLICE, O_TLS, O_CA, O_CERT, O_KEY,
           O_WORKLOAD, O_RECORDS, O_VSIZE, O_THREADS, O_CONNS, O_DURATION, O_OPS, O_LOAD,
           O_WARMUP, O_SEED, O_JSON, O_HELP };
    static const struct option lo[] = {
        {"host", 1, 0, O_HOST}, {"port", 1, 0, O_PORT}, {"name", 1, 0, O_NAME},
        {"target", 1, 0, O_TARGET}, {"slice", 1, 0, O_SLICE}, {"tls", 0, 0, O_TLS},
        {"ca", 1, 0, O_CA}, {"cert", 1, 0, O_CERT}, {"key", 1, 0, O_KEY},
        {"workload", 1, 0, O_WORKLOAD}, {"records", 1, 0, O_RECORDS},
        {"value-size", 1, 0, O_VSIZE}, {"threads", 1, 0, O_THREADS}, {"conns", 1, 0, O_CONNS},
        {"duration", 1, 0, O_DURATION}, {"ops", 1, 0, O_OPS}, {"load", 0, 0, O_LOAD},
        {"warmup", 1, 0, O_WARMUP}, {"seed", 1, 0, O_SEED}, {"json", 0, 0, O_JSON},
        {"help", 0, 0, O_HELP}, {0, 0, 0, 0},
    };
    const char *ports[MAX_TARGETS], *names[MAX_TARGETS];
    int ch, nports = 0, nnames = 0;
    bool port_opts = false;     /* any of the options that describe --port servers */
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case O_HOST: opt.host = optarg; port_opts = true; break;
        case O_PORT:
            if (nports == MAX_TARGETS)
                die("at most %d --port", MAX_TARGETS);
            parse_u64("--port", optarg, 1, 65535);
            ports[nports++] = optarg;
            break;
        case O_NAME:
            if (nnames == MAX_TARGETS)
                die("--name: at most %d names", MAX_TARGETS);
            check_name("--name", optarg);
            names[nnames++] = optarg;
            break;
        case O_TARGET: parse_target(optarg); break;
        case O_SLICE: opt.slice = parse_seconds("--slice", optarg, 0.1); break;
        case O_TLS: opt.tls = true; port_opts = true; break;
        case O_CA: opt.ca = optarg; port_opts = true; break;
        case O_CERT: opt.cert = optarg; port_opts = true; break;
        case O_KEY: opt.key = optarg; port_opts = true; break;
        case O_WORKLOAD:
            if (strlen(optarg) != 1 || !strchr("ABCFabcf", optarg[0]))
                die("--workload: expected A, B, C or F, got '%s'", optarg);
            opt.workload = (char)(optarg[0] & ~0x20);
            break;
        case O_RECORDS: opt.records = (uint32_t)parse_u64("--records", optarg, 1, 100000000); break;
        case O_VSIZE:
            opt.value_size = (uint32_t)parse_u64("--value-size", optarg, VALUE_HDR, 1 << 20);
            break;
        case O_THREADS: opt.threads = (int)parse_u64("--threads", optarg, 1, 256); break;
        case O_CONNS: opt.conns = (int)parse_u64("--conns", optarg, 1, 10000); break;
        case O_DURATION: opt.duration = parse_seconds("--duration", optarg, 0); break;
        case O_OPS: opt.ops = parse_u64("--ops", optarg, 1, UINT64_MAX); break;
        case O_LOAD: opt.load = true; break;
        case O_WARMUP: opt.warmup = parse_seconds("--warmup", optarg, 0); break;
        case O_SEED: opt.seed = parse_u64("--seed", optarg, 0, UINT64_MAX); break;
        case O_JSON: opt.json = true; break;
        case 'h': case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);
    if (!opt.load && !opt.workload)
        die("nothing to do: give --load and/or --workload (see --help)");
    if (opt.ntargets > 0 && (nports || nnames || port_opts))
        die("--target describes a system completely: do not mix it with "
            "--port, --name, --host, --tls, --ca, --cert or --key");
    if (opt.ntargets == 0) {
        if ((opt.cert != NULL) != (opt.key != NULL))
            die("--cert and --key go together");
        if ((opt.ca || opt.cert) && !opt.tls)
            die("--ca/--cert/--key need --tls");
        if (nports == 0)
            ports[nports++] = "11211";
        if (nnames > nports)
            die("more --name than --port");
        for (int i = 0; i < nports; i++) {
            struct target *t = &opt.target[opt.ntargets++];
            struct endpoint *e = &t->ep[t->nep++];
            char addr[sizeof e->addr];
            int n = snprintf(addr, sizeof addr, strchr(opt.host, ':') ? "[%s]:%s" : "%s:%s",
                             opt.host, ports[i]);
            if (n < 0 || (size_t)n >= sizeof addr || !parse_endpoint(addr, e))
                die("--host: not a host name or address: '%s'", opt.host);
            t->name = i < nnames ? names[i] : NULL;
            t->proto = PROTO_MEMCACHED;
            t->tls = opt.tls;
            t->ca = opt.ca;
            t->cert = opt.cert;
            t->key = opt.key;
        }
    }
    if (opt.ops && opt.ntargets > 1)
        die("--ops measures one system; compare systems with --duration");
    if (opt.duration == 0 && opt.ops == 0)
        opt.duration = 10;
    for (int t = 0; t < opt.ntargets; t++) {
        if (!opt.target[t].name) {
            struct endpoint *e = &opt.target[t].ep[0];
            char *s;
            if (asprintf(&s, "%s:%s", e->host, e->port) < 0)
                die("out of memory");
            opt.target[t].name = s;
        }
    }
}

int main(int argc, char **argv)
{
    options_parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    keys_build();

    for (int t = 0; t < opt.ntargets; t++)
        if (opt.target[t].tls)
            opt.target[t].ctx = tls_ctx_create(&opt.target[t]);
    struct worker *ws = workers_create();
    struct totals *tot = calloc(MAX_TARGETS, sizeof *tot);
    if (!tot)
        die("out of memory");
    bool ok = true;

    if (opt.load) {
        for (int t = 0; t < opt.ntargets && ok; t++) {
            phase_run(ws, PHASE_LOAD, t, tot);
            report_text(opt.json ? stderr : stdout, PHASE_LOAD, &opt.target[t], &tot[t]);
            if (opt.json)
                report_json(stdout, PHASE_LOAD, &opt.target[t], &tot[t]);
            ok = totals_ok(&tot[t]);
        }
    }
    if (ok && opt.workload) {
        phase_run(ws, PHASE_RUN, 0, tot);
        ok = report(PHASE_RUN, tot);
    }
    workers_destroy(ws);
    for (int t = 0; t < opt.ntargets; t++)
        SSL_CTX_free(opt.target[t].ctx);
    free(tot);
    free(keys);
    return ok ? 0 : 1;
}
