/*
 * target.c - which node the CLI talks to, and how (cli.h).
 *
 * Precedence, per setting: command-line flag, then environment variable
 * (CLOISTER_NODE, CLOISTER_MEMCACHED, CLOISTER_CA, CLOISTER_CERT,
 * CLOISTER_KEY, CLOISTER_PLAINTEXT=1, CLOISTER_DIR), then the cluster
 * description DIR/cluster.json written by `cloister up`:
 *
 *   {"ca": "ca.crt", "client_cert": "client.crt", "client_key": "client.key",
 *    "plaintext": false,
 *    "nodes": [{"id": 1, "pid": 123, "memcached": "127.0.0.1:P",
 *               "http": "127.0.0.1:P", "peer": "127.0.0.1:P"}, ...]}
 *
 * (relative paths are relative to DIR; the first node is used), then the
 * defaults 127.0.0.1:8080 / 127.0.0.1:11211 over TLS.
 */
#include "cli.h"

#include "../common/err.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_HTTP "127.0.0.1:8080"
#define DEFAULT_MEMCACHED "127.0.0.1:11211"

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cloister%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'cloister %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return CLI_USAGE;
}

static void set_path(char *dst, size_t cap, const char *dir, const char *p)
{
    if (p[0] == '/' || !dir)
        snprintf(dst, cap, "%s", p);
    else
        snprintf(dst, cap, "%s/%s", dir, p);
}

/* Reads DIR/cluster.json into the settings not yet set. */
static int read_cluster(const char *dir, cli_target *t, int have_http, int have_mc,
                        int have_ca, int have_cert, int have_key, int have_plain)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cluster.json", dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) {
        fprintf(stderr, "cloister: cannot read %s: %s\n"
                        "(is DIR a cluster directory made by 'cloister up'?)\n", path, je.text);
        return CLI_FAIL;
    }
    int rc = CLI_OK;
    json_t *nodes = json_object_get(o, "nodes");
    json_t *node = json_array_get(nodes, 0);
    if (!json_is_object(node)) {
        fprintf(stderr, "cloister: %s lists no nodes\n", path);
        rc = CLI_FAIL;
        goto out;
    }
    const char *s;
    if (!have_http && (s = json_string_value(json_object_get(node, "http")))) {
        snprintf(t->http, sizeof t->http, "%s", s);
        t->http_from = "cluster.json";
    }
    if (!have_mc && (s = json_string_value(json_object_get(node, "memcached")))) {
        snprintf(t->memcached, sizeof t->memcached, "%s", s);
        t->memcached_from = "cluster.json";
    }
    if (!have_ca && (s = json_string_value(json_object_get(o, "ca"))))
        set_path(t->ca, sizeof t->ca, dir, s);
    if (!have_cert && (s = json_string_value(json_object_get(o, "client_cert"))))
        set_path(t->cert, sizeof t->cert, dir, s);
    if (!have_key && (s = json_string_value(json_object_get(o, "client_key"))))
        set_path(t->key, sizeof t->key, dir, s);
    if (!have_plain && json_is_true(json_object_get(o, "plaintext")))
        t->plaintext = 1;
out:
    json_decref(o);
    return rc;
}

static const char *pick(const char *flag, const char *env)
{
    if (flag)
        return flag;
    const char *v = getenv(env);
    return v && *v ? v : NULL;
}

int cli_target_resolve(const cli_opts *o, cli_target *t)
{
    memset(t, 0, sizeof *t);
    const char *http = pick(o->node, "CLOISTER_NODE");
    const char *mc = pick(o->memcached, "CLOISTER_MEMCACHED");
    const char *ca = pick(o->ca, "CLOISTER_CA");
    const char *cert = pick(o->cert, "CLOISTER_CERT");
    const char *key = pick(o->key, "CLOISTER_KEY");
    const char *dir = pick(o->dir, "CLOISTER_DIR");
    const char *plain_env = getenv("CLOISTER_PLAINTEXT");
    int plain_given = o->plaintext || (plain_env && strcmp(plain_env, "1") == 0);

    if (http) {
        snprintf(t->http, sizeof t->http, "%s", http);
        t->http_from = o->node ? "--node" : "CLOISTER_NODE";
    }
    if (mc) {
        snprintf(t->memcached, sizeof t->memcached, "%s", mc);
        t->memcached_from = o->memcached ? "--memcached" : "CLOISTER_MEMCACHED";
    }
    if (ca)
        snprintf(t->ca, sizeof t->ca, "%s", ca);
    if (cert)
        snprintf(t->cert, sizeof t->cert, "%s", cert);
    if (key)
        snprintf(t->key, sizeof t->key, "%s", key);
    t->plaintext = plain_given;
    if (dir) {
        int rc = read_cluster(dir, t, http != NULL, mc != NULL, ca != NULL, cert != NULL,
                              key != NULL, plain_given);
        if (rc != CLI_OK)
            return rc;
    }
    if (!t->http[0]) {
        snprintf(t->http, sizeof t->http, "%s", DEFAULT_HTTP);
        t->http_from = "default";
    }
    if (!t->memcached[0]) {
        snprintf(t->memcached, sizeof t->memcached, "%s", DEFAULT_MEMCACHED);
        t->memcached_from = "default";
    }
    if (t->plaintext && (ca || cert || key))
        return cli_usage_error(NULL, "--plaintext contradicts --ca/--cert/--key: choose TLS or "
                                     "plaintext");
    if ((t->cert[0] != 0) != (t->key[0] != 0))
        return cli_usage_error(NULL, "a client certificate needs both --cert FILE and --key FILE");
    char host[256], port[16];
    if (client_split_addr(t->http, host, sizeof host, port, sizeof port) != 0)
        return cli_usage_error(NULL, "%s '%s' is not an address: expected HOST:PORT, e.g. %s",
                               t->http_from, t->http, DEFAULT_HTTP);
    if (client_split_addr(t->memcached, host, sizeof host, port, sizeof port) != 0)
        return cli_usage_error(NULL, "%s '%s' is not an address: expected HOST:PORT, e.g. %s",
                               t->memcached_from, t->memcached, DEFAULT_MEMCACHED);
    return CLI_OK;
}

void cli_target_tls(const cli_target *t, client_tls *tls)
{
    tls->plaintext = t->plaintext;
    tls->ca_file = t->ca[0] ? t->ca : NULL;
    tls->cert_file = t->cert[0] ? t->cert : NULL;
    tls->key_file = t->key[0] ? t->key : NULL;
}

void cli_target_node(const cli_target *t, const cli_opts *o, client_node *n)
{
    memset(n, 0, sizeof *n);
    n->http_addr = t->http;
    cli_target_tls(t, &n->tls);
    n->timeout_ms = o->timeout_s > 0 ? o->timeout_s * 1000 : 0;
}

int cli_report(const cli_target *t, const char *what, int rc, const char *err, int memcached)
{
    fprintf(stderr, "cloister: %s: %s", what, err && *err ? err : cl_strerror(rc));
    if (rc == CL_EIO && err && strncmp(err, "cannot connect", 14) == 0) {
        const char *addr = memcached ? t->memcached : t->http;
        const char *flag = memcached ? "--listen" : "--http";
        fprintf(stderr, " — is cloisterd running? start it with\n"
                        "  cloisterd %s %s --tls-cert FILE --tls-key FILE   (or --plaintext)\n"
                        "or point cloister at the node with %s HOST:PORT or --dir DIR",
                flag, addr, memcached ? "--memcached" : "--node");
    } else if (rc == CL_EAGAIN) {
        fprintf(stderr, " (raise --timeout SECONDS if the node is just slow)");
    }
    fputc('\n', stderr);
    return CLI_FAIL;
}
