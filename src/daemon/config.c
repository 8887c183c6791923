/*
 * config.c - cloisterd's settings table, flag parser and config file
 * reader; see config.h.
 *
 * Precedence: defaults < config file < command line.  argv is scanned
 * once to find --config (and --help/--version), the file is applied, then
 * the command-line settings are applied in their order.  Every message
 * names the flag (or file:line) and says what would be accepted.
 */
#include "config.h"

#include "../common/log.h"
#include "../coord/coord.h"
#include "../net/addr.h"
#include "../repl/transport.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_THREADS 1024
#define MAX_VALUE_LIMIT ((size_t)1 << 30) /* the store's ceiling (1 GiB) */
#define MAX_MEMORY_MB ((size_t)1 << 22)   /* 4 TiB: far beyond any host, catches typos */
#define MAX_FN_MEMORY_MB 4096             /* the 32-bit linear memory: 65536 pages */
#define MAX_FN_TIMEOUT_MS 3600000u        /* an hour */
#define MAX_FN_BYTES ((size_t)1 << 30)    /* output and body caps */
#define DEFAULT_HTTP "127.0.0.1:8080"
#define DEFAULT_STATE_DIR "./cloister-state"

typedef int (*config_setter)(daemon_config *cfg, const char *value, char *err, size_t errlen);

typedef struct config_option {
    const char *name;   /* long flag, and the name in a config file */
    int short_name;     /* 0 = none */
    const char *arg;    /* value shape for --help; NULL = a switch */
    config_setter set;
    const char *help;
    const char *dflt;   /* default shown in --help; NULL = none */
    int in_file;        /* may be set from a config file */
} config_option;

__attribute__((format(printf, 3, 4)))
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int set_string(char **dst, const char *value, const char *flag, char *err, size_t errlen)
{
    if (value[0] == '\0')
        return errf(err, errlen, "--%s needs a non-empty value", flag);
    char *s = strdup(value);
    if (!s)
        return errf(err, errlen, "out of memory");
    free(*dst);
    *dst = s;
    return 0;
}

/* Parses an unsigned decimal with an optional k/m/g suffix (powers of
 * 1024, optionally followed by "b"; only when `suffixes`). */
static int parse_size(const char *v, int suffixes, size_t *out)
{
    if (!isdigit((unsigned char)v[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return -1;
    unsigned shift = 0;
    if (suffixes && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        default: return -1;
        }
        end++;
        if (tolower((unsigned char)*end) == 'b')
            end++;
    }
    if (*end != '\0' || n > (SIZE_MAX >> shift))
        return -1;
    *out = (size_t)n << shift;
    return 0;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = { "1", "yes", "true", "on" };
    static const char *const no[] = { "0", "no", "false", "off" };
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* ---- setters -------------------------------------------------------------- */

static int set_listen(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_addr_parse(v, &ss, &len) != 0)
        return errf(err, errlen,
                    "--listen '%s' is not a usable address: expected HOST:PORT, e.g. "
                    "127.0.0.1:11211 or [::1]:11211 (port 0 picks a free port)", v);
    return set_string(&cfg->listen, v, "listen", err, errlen);
}

static int set_tls_cert(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->tls_cert, v, "tls-cert", err, errlen);
}

static int set_tls_key(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->tls_key, v, "tls-key", err, errlen);
}

static int set_tls_ca(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->tls_ca, v, "tls-ca", err, errlen);
}

static int set_plaintext(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    if (!v)
        return cfg->plaintext = 1, 0;
    if (parse_bool(v, &cfg->plaintext) != 0)
        return errf(err, errlen, "plaintext takes yes or no, not '%s'", v);
    return 0;
}

static int set_arena_file(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->arena_file, v, "arena-file", err, errlen);
}

static int set_memory(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t mb;
    if (parse_size(v, 0, &mb) != 0 || mb == 0 || mb > MAX_MEMORY_MB)
        return errf(err, errlen, "--memory '%s' is not a size in megabytes (a whole number, e.g. 64)", v);
    cfg->memory_mb = mb;
    return 0;
}

static int set_max_value(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 1, &n) != 0 || n == 0 || n > MAX_VALUE_LIMIT)
        return errf(err, errlen,
                    "--max-value '%s' is not a size between 1 byte and 1g "
                    "(bytes, or with a k/m/g suffix, e.g. 1048576 or 1m)", v);
    cfg->max_value = n;
    return 0;
}

static int set_threads(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 0, &n) != 0 || n == 0 || n > MAX_THREADS)
        return errf(err, errlen, "--threads '%s' is not a thread count between 1 and %d", v,
                    MAX_THREADS);
    cfg->threads = (int)n;
    cfg->threads_given = 1;
    return 0;
}

static int set_evict(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    if (strcmp(v, "lru") == 0)
        cfg->evict_lru = 1;
    else if (strcmp(v, "none") == 0)
        cfg->evict_lru = 0;
    else
        return errf(err, errlen, "--evict '%s' is not a policy: use lru or none", v);
    return 0;
}

static int set_config(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->config_file, v, "config", err, errlen);
}

static int set_ready_file(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->ready_file, v, "ready-file", err, errlen);
}

static int set_http(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_addr_parse(v, &ss, &len) != 0)
        return errf(err, errlen,
                    "--http '%s' is not a usable address: expected HOST:PORT, e.g. "
                    "127.0.0.1:8080 or [::1]:8080 (port 0 picks a free port)", v);
    return set_string(&cfg->http, v, "http", err, errlen);
}

static int set_state_dir(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->state_dir, v, "state-dir", err, errlen);
}

static int set_fn_threads(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 0, &n) != 0 || n == 0 || n > MAX_THREADS)
        return errf(err, errlen, "--fn-threads '%s' is not a thread count between 1 and %d", v,
                    MAX_THREADS);
    cfg->fn_threads = (int)n;
    return 0;
}

static int set_fn_timeout(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 0, &n) != 0 || n == 0 || n > MAX_FN_TIMEOUT_MS)
        return errf(err, errlen,
                    "--fn-timeout '%s' is not a time in milliseconds between 1 and %u", v,
                    MAX_FN_TIMEOUT_MS);
    cfg->fn_timeout_ms = (unsigned)n;
    return 0;
}

static int set_fn_memory(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 0, &n) != 0 || n == 0 || n > MAX_FN_MEMORY_MB)
        return errf(err, errlen, "--fn-memory '%s' is not a size in megabytes between 1 and %d",
                    v, MAX_FN_MEMORY_MB);
    cfg->fn_memory_mb = n;
    return 0;
}

static int set_fn_max_output(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 1, &n) != 0 || n == 0 || n > MAX_FN_BYTES)
        return errf(err, errlen, "--fn-max-output '%s' is not a size between 1 byte and 1g "
                    "(bytes, or with a k/m/g suffix, e.g. 4m)", v);
    cfg->fn_max_output = n;
    return 0;
}

static int set_max_body(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 1, &n) != 0 || n == 0 || n > MAX_FN_BYTES)
        return errf(err, errlen, "--max-body '%s' is not a size between 1 byte and 1g "
                    "(bytes, or with a k/m/g suffix, e.g. 4m)", v);
    cfg->max_body = n;
    return 0;
}

static int set_log_level(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, names[i]) == 0) {
            cfg->log_level = i;
            return 0;
        }
    }
    return errf(err, errlen, "--log-level '%s' is not a level: use error, warn, info or debug", v);
}

static int set_verbose(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    cfg->verbose++; /* applied on top of the final --log-level */
    return 0;
}

static int set_addr(char **dst, const char *flag, const char *example, const char *v, char *err,
                    size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_addr_parse(v, &ss, &len) != 0)
        return errf(err, errlen, "--%s '%s' is not a usable address: expected HOST:PORT, e.g. %s",
                    flag, v, example);
    return set_string(dst, v, flag, err, errlen);
}

static int set_coordinator(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    if (!v)
        return cfg->coordinator = 1, 0;
    if (parse_bool(v, &cfg->coordinator) != 0)
        return errf(err, errlen, "coordinator takes yes or no, not '%s'", v);
    return 0;
}

static int set_manifest(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->manifest, v, "manifest", err, errlen);
}

static int set_platform_dir(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_string(&cfg->platform_dir, v, "platform-dir", err, errlen);
}

static int set_join(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_addr(&cfg->join, "join", "127.0.0.1:7000", v, err, errlen);
}

static int set_peer(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_addr(&cfg->peer, "peer", "127.0.0.1:7101", v, err, errlen);
}

static int set_peer_advertise(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    return set_addr(&cfg->peer_advertise, "peer-advertise", "127.0.0.1:7201", v, err, errlen);
}

static int set_node_id(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    size_t n;
    if (parse_size(v, 0, &n) != 0 || n < 1 || n > REPL_MAX_NODES)
        return errf(err, errlen, "--node-id '%s' is not a node id: use 1 to %d, as in the "
                    "coordinator's manifest", v, REPL_MAX_NODES);
    cfg->node_id = (int)n;
    return 0;
}

static int set_expect_coordinator(daemon_config *cfg, const char *v, char *err, size_t errlen)
{
    if (attest_unhex(v, cfg->expect_coordinator, sizeof cfg->expect_coordinator) != 0)
        return errf(err, errlen, "--expect-coordinator '%s' is not a measurement: expected 64 hex "
                    "digits (sha256sum of the coordinator's binary)", v);
    cfg->expect_coordinator_set = 1;
    return 0;
}

/* Handled by daemon_config_parse itself. */
static int set_nothing(daemon_config *cfg, const char *v, char *err, size_t errlen) { return 0; }

/* ---- the table ------------------------------------------------------------- */

enum { OPT_HELP = 0, OPT_VERSION = 1, OPT_CONFIG = 2 };

static const config_option options[] = {
    [OPT_HELP]    = { "help", 'h', NULL, set_nothing, "show this help and exit", NULL, 0 },
    [OPT_VERSION] = { "version", 0, NULL, set_nothing, "print the version and exit", NULL, 0 },
    [OPT_CONFIG]  = { "config", 0, "FILE", set_config,
                      "read settings from FILE: lines 'name = value' with the long flag "
                      "names; '#' comments; flags given here override it", NULL, 0 },
    { "listen", 0, "HOST:PORT", set_listen,
      "serve the memcached protocol on this address ([V6]:PORT for IPv6; port 0 = any free port)",
      "127.0.0.1:11211", 1 },
    { "tls-cert", 0, "FILE", set_tls_cert, "TLS certificate, PEM (followed by its chain, if any)",
      NULL, 1 },
    { "tls-key", 0, "FILE", set_tls_key, "private key of --tls-cert, PEM, unencrypted", NULL, 1 },
    { "tls-ca", 0, "FILE", set_tls_ca,
      "require client certificates signed by a CA in FILE (PEM)", NULL, 1 },
    { "plaintext", 0, NULL, set_plaintext,
      "serve without TLS (needed when no --tls-cert/--tls-key are given; loopback or "
      "trusted networks only)", NULL, 1 },
    { "arena-file", 0, "PATH", set_arena_file,
      "keep the (sealed) value arena in this file, created or truncated; it is left in "
      "place at exit", "anonymous memory", 1 },
    { "memory", 0, "MB", set_memory, "size of the value arena in megabytes", "64", 1 },
    { "max-value", 0, "BYTES", set_max_value,
      "largest value accepted; k/m suffixes allowed (e.g. 512k, 2m)", "1048576", 1 },
    { "threads", 0, "N", set_threads,
      "worker threads (a cluster node's workers wait for replicas, so it runs more)",
      "number of CPUs; 32 with --join", 1 },
    { "evict", 0, "lru|none", set_evict,
      "when memory is full: none = refuse writes (storage semantics), lru = evict the least "
      "recently used items (cache semantics)", "none", 1 },
    { "http", 0, "HOST:PORT", set_http,
      "serve the HTTP gateway (invoke, deploy, list, remove, logs, /healthz, /metrics) on this "
      "address: HTTPS with --tls-cert/--tls-key, plain HTTP only with --plaintext (port 0 = any "
      "free port)", DEFAULT_HTTP, 1 },
    { "state-dir", 0, "DIR", set_state_dir,
      "keep the compile cache (DIR/cache) and the platform key here; created if missing",
      DEFAULT_STATE_DIR " (relative to the working directory)", 1 },
    { "fn-threads", 0, "N", set_fn_threads, "executor threads that run functions",
      "number of CPUs", 1 },
    { "fn-timeout", 0, "MS", set_fn_timeout,
      "wall time one invocation may take, in milliseconds; a function still running then is "
      "stopped (HTTP 504)", "5000", 1 },
    { "fn-memory", 0, "MB", set_fn_memory,
      "linear memory one function instance may grow to, in megabytes", "64", 1 },
    { "fn-max-output", 0, "BYTES", set_fn_max_output,
      "largest response body one invocation may produce; k/m suffixes allowed", "4m", 1 },
    { "max-body", 0, "BYTES", set_max_body,
      "largest request body an invocation accepts (HTTP 413 beyond); k/m suffixes allowed",
      "4m", 1 },
    { "join", 0, "HOST:PORT", set_join,
      "join the cluster whose coordinator listens at HOST:PORT: attest this binary to it, then "
      "serve with the certificate it issues (instead of --tls-cert/--tls-key; clients need "
      "certificates from the cluster CA)", NULL, 1 },
    { "node-id", 0, "N", set_node_id, "with --join: this node's id in the manifest (1..7)",
      NULL, 1 },
    { "peer", 0, "HOST:PORT", set_peer,
      "with --join: the address other nodes reach this one at for replication (mutual TLS)",
      NULL, 1 },
    { "peer-advertise", 0, "HOST:PORT", set_peer_advertise,
      "with --join: the replication address reported to the coordinator, when other nodes "
      "reach this one through something in front of --peer (a proxy, a NAT)", "the --peer", 1 },
    { "expect-coordinator", 0, "HEX", set_expect_coordinator,
      "with --join: the coordinator's measurement (SHA-256 of its binary) to insist on",
      "this binary's own measurement", 1 },
    { "coordinator", 0, NULL, set_coordinator,
      "run as the cluster's coordinator instead of a node: verify joining nodes' quotes, issue "
      "certificates from the cluster CA (kept in --state-dir), serve on --listen; needs "
      "--manifest", NULL, 1 },
    { "manifest", 0, "FILE", set_manifest,
      "the coordinator's manifest: allowed measurements, nodes, tenants and their namespaces "
      "(JSON; see docs/ATTESTATION.md)", NULL, 1 },
    { "platform-dir", 0, "DIR", set_platform_dir,
      "the simulated platform (its root key in DIR/platform.key): processes given the same DIR "
      "count as one machine's CPU and trust each other's quotes", "the --state-dir", 1 },
    { "ready-file", 0, "PATH", set_ready_file,
      "once listening, write {\"pid\", \"memcached\", \"http\", \"tls\"} as JSON to PATH "
      "(atomically); with --join also node_id, epoch, recover, peer, coordinator, measurement; "
      "with --coordinator {\"pid\", \"coordinator\", \"measurement\", \"platform_key\"}",
      NULL, 1 },
    { "log-level", 0, "LEVEL", set_log_level, "error, warn, info or debug", "info", 1 },
    { "verbose", 'v', NULL, set_verbose, "log more (repeatable: -vv)", NULL, 0 },
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static const config_option *option_named(const char *name)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* Prints text from column `indent` (the cursor is there), wrapping at
 * `width`, continuation lines indented. */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    int col = indent;
    while (*text) {
        size_t word = strcspn(text, " ");
        if (col > indent && col + 1 + (int)word > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        }
        if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)word, text);
        col += (int)word;
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void daemon_config_usage(FILE *out)
{
    fprintf(out,
            "Usage: cloisterd [OPTION]...\n"
            "Cloister's node daemon: a memcached-protocol (text and meta) key-value store\n"
            "whose values are sealed with AES-256-GCM, and a function runtime (WebAssembly\n"
            "and native functions) behind an HTTP gateway, both served over TLS 1.3.\n"
            "\nOptions:\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &options[i];
        char flag[64];
        if (o->short_name)
            snprintf(flag, sizeof flag, "-%c, --%s%s%s", o->short_name, o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
        else
            snprintf(flag, sizeof flag, "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        char text[512];
        snprintf(text, sizeof text, "%s%s%s%s", o->help, o->dflt ? " (default: " : "",
                 o->dflt ? o->dflt : "", o->dflt ? ")" : "");
        fprintf(out, "  %-26s ", flag);
        print_wrapped(out, text, 29, 79);
    }
    fprintf(out,
            "\nTLS is required unless --plaintext is given: pass --tls-cert and --tls-key\n"
            "(both listeners, memcached and HTTP, use them), or --join HOST:PORT --node-id N\n"
            "to attest to the cluster's coordinator and serve with the certificate it issues.\n"
            "'cloisterd --coordinator --manifest FILE --listen HOST:PORT' runs the coordinator.\n"
            "SIGTERM or SIGINT stops the daemon cleanly (exit status 0).\n"
            "Exit status: 0 after a clean stop, 1 when startup fails (files, ports, memory),\n"
            "2 for bad usage.\n");
}

/* ---- config file ----------------------------------------------------------- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(daemon_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return errf(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = errf(err, errlen, "%s:%d: line too long", path, lineno);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *name = trim(line);
        if (*name == '\0')
            continue;
        char *value = name + strcspn(name, " \t=");
        if (*value) {
            *value++ = '\0';
            value = trim(value);
            if (*value == '=')
                value = trim(value + 1);
        }
        const config_option *o = option_named(name);
        if (!o || !o->in_file) {
            rc = errf(err, errlen, "%s:%d: unknown setting '%s' (see cloisterd --help for names)",
                      path, lineno, name);
            break;
        }
        if (o->arg && *value == '\0') {
            rc = errf(err, errlen, "%s:%d: '%s' needs a value (%s)", path, lineno, name, o->arg);
            break;
        }
        char msg[384];
        if (o->set(cfg, *value ? value : NULL, msg, sizeof msg) != 0)
            rc = errf(err, errlen, "%s:%d: %s", path, lineno, msg);
    }
    if (rc == 0 && ferror(f))
        rc = errf(err, errlen, "cannot read config file '%s': %s", path, strerror(errno));
    fclose(f);
    return rc;
}

/* ---- parsing --------------------------------------------------------------- */

void daemon_config_init(daemon_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->memory_mb = 64;
    cfg->max_value = (size_t)1 << 20;
    cfg->threads = ncpu > 0 ? (ncpu < MAX_THREADS ? (int)ncpu : MAX_THREADS) : 1;
    cfg->log_level = CL_LOG_INFO;
    cfg->fn_threads = cfg->threads;
    cfg->fn_timeout_ms = 5000;
    cfg->fn_memory_mb = 64;
    cfg->fn_max_output = (size_t)4 << 20;
    cfg->max_body = (size_t)4 << 20;
}

void daemon_config_fini(daemon_config *cfg)
{
    free(cfg->listen);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->tls_ca);
    free(cfg->arena_file);
    free(cfg->config_file);
    free(cfg->ready_file);
    free(cfg->http);
    free(cfg->state_dir);
    free(cfg->manifest);
    free(cfg->platform_dir);
    free(cfg->join);
    free(cfg->peer);
    free(cfg->peer_advertise);
    memset(cfg, 0, sizeof *cfg);
}

/* --coordinator and --join each change what the daemon is; their flags
 * make no sense elsewhere. */
static int check_cluster(daemon_config *cfg, char *err, size_t errlen)
{
    int tls_files = cfg->tls_cert || cfg->tls_key;
    if (cfg->coordinator) {
        if (!cfg->manifest)
            return errf(err, errlen, "--coordinator needs --manifest FILE (the allowed "
                        "measurements, nodes and tenants; see docs/ATTESTATION.md)");
        if (cfg->join || cfg->node_id || cfg->peer || cfg->peer_advertise ||
            cfg->expect_coordinator_set)
            return errf(err, errlen, "--join, --node-id, --peer, --peer-advertise and "
                        "--expect-coordinator are for nodes, not for the --coordinator");
        if (tls_files || cfg->tls_ca || cfg->plaintext)
            return errf(err, errlen, "the --coordinator always serves TLS with a certificate from "
                        "its own cluster CA: drop --tls-cert/--tls-key/--tls-ca/--plaintext");
        if (!cfg->listen &&
            set_string(&cfg->listen, COORD_DEFAULT_LISTEN, "listen", err, errlen) != 0)
            return -1;
        return 0;
    }
    if (cfg->manifest)
        return errf(err, errlen, "--manifest is for the --coordinator");
    if (!cfg->join) {
        if (cfg->node_id || cfg->peer || cfg->peer_advertise || cfg->expect_coordinator_set)
            return errf(err, errlen, "--node-id, --peer, --peer-advertise and "
                        "--expect-coordinator need --join HOST:PORT (the coordinator's address)");
        return 0;
    }
    if (!cfg->node_id)
        return errf(err, errlen, "--join needs --node-id N (this node's id in the manifest)");
    if (tls_files || cfg->plaintext)
        return errf(err, errlen, "--join serves TLS with the certificate the coordinator issues: "
                    "drop --tls-cert/--tls-key/--plaintext");
    if (!cfg->peer)
        return errf(err, errlen, "--join needs --peer HOST:PORT: the address the other nodes "
                    "reach this one at for replication");
    return 0;
}

static int check_combination(daemon_config *cfg, char *err, size_t errlen)
{
    if (check_cluster(cfg, err, errlen) != 0)
        return -1;
    if (!cfg->listen && set_string(&cfg->listen, "127.0.0.1:11211", "listen", err, errlen) != 0)
        return -1;
    if (!cfg->http && set_string(&cfg->http, DEFAULT_HTTP, "http", err, errlen) != 0)
        return -1;
    if (!cfg->state_dir &&
        set_string(&cfg->state_dir, DEFAULT_STATE_DIR, "state-dir", err, errlen) != 0)
        return -1;
    if (cfg->max_value > cfg->memory_mb << 20)
        return errf(err, errlen, "--max-value (%zu bytes) is larger than --memory (%zu MB): "
                    "raise --memory or lower --max-value", cfg->max_value, cfg->memory_mb);
    if (cfg->coordinator || cfg->join)
        return 0;      /* TLS with a certificate from the cluster CA (check_cluster) */
    int tls = cfg->tls_cert || cfg->tls_key;
    if (tls && (!cfg->tls_cert || !cfg->tls_key))
        return errf(err, errlen, "--%s is missing: TLS needs both --tls-cert FILE and --tls-key FILE",
                    cfg->tls_cert ? "tls-key" : "tls-cert");
    if (cfg->tls_ca && !tls)
        return errf(err, errlen,
                    "--tls-ca needs --tls-cert and --tls-key too (the server presents its own "
                    "certificate to the clients it verifies)");
    if (tls && cfg->plaintext)
        return errf(err, errlen,
                    "--plaintext contradicts --tls-cert/--tls-key: choose TLS or plaintext");
    if (!tls && !cfg->plaintext)
        return errf(err, errlen,
                    "refusing to serve without TLS: give --tls-cert FILE and --tls-key FILE, or "
                    "--plaintext to serve unencrypted (loopback or trusted networks only), or "
                    "--join HOST:PORT to get a certificate from the cluster's coordinator");
    return 0;
}

int daemon_config_parse(daemon_config *cfg, int argc, char **argv, FILE *out,
                        char *err, size_t errlen)
{
    struct option longopts[N_OPTIONS + 1];
    char shortopts[2 * N_OPTIONS + 2] = ":";
    for (size_t i = 0; i < N_OPTIONS; i++) {
        longopts[i] = (struct option){ options[i].name, options[i].arg ? required_argument : no_argument,
                                       NULL, (int)(256 + i) };
        if (options[i].short_name) {
            char s[3] = { (char)options[i].short_name, options[i].arg ? ':' : '\0', '\0' };
            strcat(shortopts, s);
        }
    }
    longopts[N_OPTIONS] = (struct option){ 0 };

    /* Pass 1: collect, so that the file can be applied first. */
    struct { const config_option *o; const char *value; } *seen = calloc((size_t)argc + 1, sizeof *seen);
    if (!seen)
        return errf(err, errlen, "out of memory"), CONFIG_USAGE;
    size_t nseen = 0;
    int rc = CONFIG_USAGE, c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        const config_option *o = NULL;
        if (c >= 256) {
            o = &options[c - 256];
        } else if (c == '?' || c == ':') {
            const char *arg = argv[optind - 1];
            if (c == ':')
                errf(err, errlen, "%s needs a value", arg);
            else if (optopt && arg[0] == '-' && arg[1] != '-')
                errf(err, errlen, "unknown option '-%c'", optopt);
            else
                errf(err, errlen, "unknown option '%s'", arg);
            goto done;
        } else {
            for (size_t i = 0; i < N_OPTIONS; i++)
                if (options[i].short_name == c)
                    o = &options[i];
        }
        if (o == &options[OPT_HELP]) {
            daemon_config_usage(out);
            rc = CONFIG_EXIT;
            goto done;
        }
        if (o == &options[OPT_VERSION]) {
            fprintf(out, "cloisterd %s\n", CLOISTER_VERSION);
            rc = CONFIG_EXIT;
            goto done;
        }
        seen[nseen].o = o;
        seen[nseen++].value = optarg && o->arg ? optarg : NULL;
    }
    if (optind < argc) {
        errf(err, errlen, "unexpected argument '%s' (all settings are --flags)", argv[optind]);
        goto done;
    }

    for (size_t i = 0; i < nseen; i++)
        if (seen[i].o == &options[OPT_CONFIG] &&
            set_config(cfg, seen[i].value, err, errlen) != 0)
            goto done;
    if (cfg->config_file && load_file(cfg, cfg->config_file, err, errlen) != 0)
        goto done;

    /* Pass 2: the command line overrides the file. */
    for (size_t i = 0; i < nseen; i++) {
        if (seen[i].o == &options[OPT_CONFIG])
            continue;
        if (seen[i].o->set(cfg, seen[i].value, err, errlen) != 0)
            goto done;
    }
    cfg->log_level += cfg->verbose;
    if (cfg->log_level > CL_LOG_DEBUG)
        cfg->log_level = CL_LOG_DEBUG;
    if (check_combination(cfg, err, errlen) != 0)
        goto done;
    rc = CONFIG_RUN;
done:
    free(seen);
    return rc;
}
