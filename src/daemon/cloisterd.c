/*
 * cloisterd.c - the node daemon's main(): settings, then store, listeners
 * (memcached front door and HTTP gateway on one event loop), function
 * runtime, then wait for a stop signal.
 *
 * Threads: main parses the settings, builds everything, starts the
 * network workers (net/server.c: N threads, each with its own epoll and
 * its own connections; both protocols share them), the runtime's
 * executor threads (runtime/exec.c, --fn-threads) and then only waits on
 * a signalfd.  SIGTERM and SIGINT are blocked in every thread (the mask
 * is set before any thread starts and inherited), so they are read from
 * the signalfd by main and nowhere else.  SIGPIPE is ignored.
 *
 * Startup binds the listeners before it creates the runtime, so a port
 * in use fails fast, before the state directory is touched.
 *
 * Shutdown order is the reverse of startup: stop the network workers
 * (they close every connection and drop their store threads), wait for
 * the gateway's deploy threads (http_context_fini), destroy the runtime
 * (its executors finish queued invocations, then stop), then the store
 * (which zeroes its keys and unmaps the arena).  Files the user named
 * (arena file, ready file, certificates, state directory) are left in
 * place.
 *
 * Cluster modes (cluster.h): with --coordinator the process is the
 * coordinator and nothing else; with --join the node binds its listeners,
 * attests to the coordinator, installs the issued certificate, then
 * starts as above.  A node the coordinator refuses exits 1 with the
 * coordinator's reason on stderr and in the log.
 *
 * Exit status: 0 after a clean stop, 1 when startup fails, 2 for bad usage.
 */
#include "cluster.h"
#include "config.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../frontdoor/http.h"
#include "../frontdoor/mc.h"
#include "../net/addr.h"
#include "../net/server.h"
#include "../net/tls.h"
#include "../runtime/runtime.h"
#include "../store/store.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static const char MOD[] = "daemon";

/* mc_context.conn_stats: the event loop's connection counters. */
static void conn_stats(void *arg, uint64_t *curr, uint64_t *total)
{
    net_server *const *srv = arg;
    net_stats st;
    net_server_get_stats(*srv, &st);
    *curr = st.curr_connections;
    *total = st.total_connections;
}

/* Writes the ready file (the JSON object obj) atomically: a temporary
 * file in the same directory, then rename(2), so a reader sees nothing or
 * all of it.  0 or -1 (message printed). */
static int write_ready_file(const char *path, json_t *obj)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return -1;
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (ok) {
        ok = json_dumpf(obj, f, JSON_COMPACT) == 0 && fputc('\n', f) != EOF;
        ok = (fclose(f) == 0) && ok;
        ok = ok && rename(tmp, path) == 0;
        if (!ok)
            unlink(tmp);
    }
    if (!ok)
        fprintf(stderr, "cloisterd: cannot write the ready file '%s': %s\n", path, strerror(errno));
    free(tmp);
    return ok ? 0 : -1;
}

/* The node's ready file: {"pid", "memcached", "http", "tls"} and, in a
 * cluster, the cluster fields (cluster.h). */
static int write_node_ready_file(const daemon_config *cfg, const daemon_cluster *cl,
                                 const char *addr, const char *http, int tls)
{
    json_t *o = json_pack("{s:i, s:s, s:s, s:b}", "pid", (int)getpid(), "memcached", addr,
                          "http", http, "tls", tls);
    int rc = o && cluster_ready_fields(cl, cfg, o) == CL_OK ? write_ready_file(cfg->ready_file, o)
                                                             : -1;
    json_decref(o);
    return rc;
}

/* Creates the function runtime (state directory, compile cache, executor
 * threads) from the settings.  CL_OK, or a code with a message printed. */
static int start_runtime(const daemon_config *cfg, store *st, struct repl *engine, rt **out)
{
    rt_config rcfg = {
        .store = st,
        .repl = engine,
        .state_dir = cfg->state_dir,
        .exec_threads = cfg->fn_threads,
        .max_memory_pages = (uint32_t)(cfg->fn_memory_mb * 16), /* 64 KiB pages */
        .timeout_ms = cfg->fn_timeout_ms,
        .max_output_bytes = cfg->fn_max_output,
        .max_input_bytes = cfg->max_body,
    };
    int rc = rt_create(&rcfg, out);
    if (rc != CL_OK)
        fprintf(stderr, "cloisterd: cannot start the function runtime with --state-dir '%s': %s "
                        "(see the log lines above)\n", cfg->state_dir, cl_strerror(rc));
    return rc;
}

/* Blocks until SIGTERM or SIGINT; returns its number. */
static int wait_for_stop(int sfd)
{
    for (;;) {
        struct signalfd_siginfo si;
        ssize_t r = read(sfd, &si, sizeof si);
        if (r == (ssize_t)sizeof si)
            return (int)si.ssi_signo;
        if (r < 0 && errno != EINTR) {
            cl_log_error(MOD, "signalfd: %s; stopping", strerror(errno));
            return SIGTERM;
        }
    }
}

int main(int argc, char **argv)
{
    daemon_config cfg;
    char err[1024];
    int status = 1;
    SSL_CTX *ssl_ctx = NULL;
    store *st = NULL;
    net_server *srv = NULL;
    rt *runtime = NULL;
    http_context http;
    int http_ready = 0;
    int sfd = -1;
    daemon_cluster cluster;
    memset(&cluster, 0, sizeof cluster);

    daemon_config_init(&cfg);
    switch (daemon_config_parse(&cfg, argc, argv, stdout, err, sizeof err)) {
    case CONFIG_EXIT:
        daemon_config_fini(&cfg);
        return 0;
    case CONFIG_USAGE:
        fprintf(stderr, "cloisterd: %s\nTry 'cloisterd --help' for the list of options.\n", err);
        daemon_config_fini(&cfg);
        return 2;
    default:
        break;
    }
    cl_log_set_level(cfg.log_level);

    /* Before any thread exists, so that every thread inherits the mask. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0 ||
        (sfd = signalfd(-1, &stop_signals, SFD_CLOEXEC)) < 0) {
        fprintf(stderr, "cloisterd: cannot set up signal handling: %s\n", strerror(errno));
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);

    if (cfg.coordinator) {
        status = cluster_run_coordinator(&cfg, sfd, wait_for_stop, write_ready_file);
        goto out;
    }

    int tls = cfg.tls_cert != NULL || cfg.join != NULL;
    if (cfg.join && !cfg.threads_given)
        cfg.threads = CLUSTER_THREADS;   /* see cluster.h */
    if (cfg.join) {
        /* The certificate arrives after the listeners are bound (cluster.h). */
        if (net_tls_ctx_new(NET_TLS_SERVER, &ssl_ctx, err, sizeof err) != CL_OK) {
            fprintf(stderr, "cloisterd: TLS setup failed: %s\n", err);
            goto out;
        }
    } else if (tls) {
        net_tls_config tc = { .cert_file = cfg.tls_cert, .key_file = cfg.tls_key,
                              .ca_file = cfg.tls_ca };
        if (net_tls_server_ctx_create(&tc, &ssl_ctx, err, sizeof err) != CL_OK) {
            fprintf(stderr, "cloisterd: TLS setup failed: %s\n", err);
            goto out;
        }
    }

    store_config sc = {
        .memory_bytes = cfg.memory_mb << 20,
        .max_value = cfg.max_value,
        .arena_file = cfg.arena_file,
        .evict_lru = cfg.evict_lru,
    };
    int rc = store_create(&sc, &st);
    if (rc != CL_OK) {
        if (rc == CL_EIO)
            fprintf(stderr, "cloisterd: cannot set up the arena%s%s%s (see the log line above)\n",
                    cfg.arena_file ? " file '" : "", cfg.arena_file ? cfg.arena_file : "",
                    cfg.arena_file ? "'" : "");
        else if (rc == CL_EINVAL)
            fprintf(stderr, "cloisterd: the store refuses --memory %zu with --max-value %zu "
                            "(the arena needs room for at least one page of the largest value): "
                            "raise --memory or lower --max-value\n", cfg.memory_mb, cfg.max_value);
        else
            fprintf(stderr, "cloisterd: cannot create the store: %s\n", cl_strerror(rc));
        goto out;
    }

    char bound[NET_ADDR_STRLEN] = "";
    mc_context mc = {
        .store = st,
        .started = (int64_t)time(NULL),
        .threads = cfg.threads,
        .tls = tls,
        .conn_stats = conn_stats,
        .conn_stats_arg = &srv,
        .listen = bound,
        .arena_file = cfg.arena_file,
        .evict_lru = cfg.evict_lru,
    };
    net_proto proto = mc_net_proto;
    proto.max_pending = mc_max_pending(&mc);

    /* The gateway's context; the runtime is attached once it exists
     * (before the workers start and call thread_init). */
    if (http_context_init(&http) != CL_OK) {
        fprintf(stderr, "cloisterd: out of memory\n");
        goto out;
    }
    http_ready = 1;
    http.ops = &http_rt_ops;
    http.store = st;
    http.version = CLOISTER_VERSION;
    http.max_body_bytes = cfg.max_body;

    net_listener_config lc[2] = {
        { .addr = cfg.listen, .proto = &proto, .proto_arg = &mc, .ssl_ctx = ssl_ctx },
        { .addr = cfg.http, .proto = &http_net_proto, .proto_arg = &http, .ssl_ctx = ssl_ctx },
    };
    net_server_config nc = { .listeners = lc, .n_listeners = 2, .threads = cfg.threads };
    if (net_server_create(&nc, &srv) != CL_OK) {
        fprintf(stderr, "cloisterd: cannot listen on %s or %s (see the log line above); "
                        "choose other --listen / --http addresses or stop what uses them\n",
                cfg.listen, cfg.http);
        goto out;
    }
    char http_bound[NET_ADDR_STRLEN] = "";
    net_server_listener_name(srv, 0, bound, sizeof bound);
    net_server_listener_name(srv, 1, http_bound, sizeof http_bound);

    if (cfg.join && (cluster_join(&cfg, bound, http_bound, &cluster) != CL_OK ||
                     cluster_tls_setup(&cluster, &cfg, ssl_ctx) != CL_OK ||
                     cluster_start_replication(&cluster, &cfg, st) != CL_OK))
        goto out;
    mc.repl = cluster.repl;

    if (start_runtime(&cfg, st, cluster.repl, &runtime) != CL_OK)
        goto out;
    http.runtime = runtime;

    if (net_server_start(srv) != CL_OK) {
        fprintf(stderr, "cloisterd: cannot start the worker threads\n");
        goto out;
    }

    cl_log_info(MOD, "cloisterd %s serving memcached on %s and HTTP%s on %s, TLS %s, "
                     "memory %zu MB, max value %zu bytes, arena %s, %d threads, eviction %s",
                CLOISTER_VERSION, bound, tls ? "S" : "", http_bound,
                !tls ? "off (plaintext)"
                     : cfg.tls_ca || cluster.joined ? "1.3 with client certificates" : "1.3",
                cfg.memory_mb, cfg.max_value, cfg.arena_file ? cfg.arena_file : "in anonymous memory",
                cfg.threads, cfg.evict_lru ? "lru" : "none");
    cl_log_info(MOD, "functions: %d executor threads, time-out %u ms, memory %zu MB per "
                     "instance, output %zu bytes, request body %zu bytes, state in %s",
                cfg.fn_threads, cfg.fn_timeout_ms, cfg.fn_memory_mb, cfg.fn_max_output,
                cfg.max_body, cfg.state_dir);
    if (cfg.ready_file && write_node_ready_file(&cfg, &cluster, bound, http_bound, tls) != 0)
        goto out;

    int sig = wait_for_stop(sfd);
    cl_log_info(MOD, "received %s; stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;

out:
    net_server_destroy(srv); /* stops the workers first: no store thread outlives this */
    if (http_ready)
        http_context_fini(&http); /* waits for deploy threads, which use the runtime */
    rt_destroy(runtime);          /* finishes queued invocations, stops the executors */
    cluster_stop_replication(&cluster); /* the engine uses the store */
    store_destroy(st);
    SSL_CTX_free(ssl_ctx);
    cluster_fini(&cluster);
    if (sfd >= 0)
        close(sfd);
    if (status == 0)
        cl_log_info(MOD, "stopped");
    daemon_config_fini(&cfg);
    return status;
}
