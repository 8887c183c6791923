/*
 * cli.h - what the files of the `cloister` command-line tool share.
 *
 *   main.c     option parsing, the command table, help, dispatch
 *   target.c   which node to talk to and how (flags, environment,
 *              DIR/cluster.json), and the connection-failure advice
 *   cmd_fn.c   deploy, invoke, ls, rm, logs (the node's HTTP API)
 *   cmd_kv.c   kv get|set|delete (the node's memcached protocol)
 *   cmd_attest.c  attest (the coordinator's quote; saves the cluster CA)
 *   cmd_cluster.c up, down, node stop|start, status (a local cluster)
 *
 * Exit status of every command: 0 success, 1 failure (the node refused,
 * a function failed, the node could not be reached), 2 bad usage.
 */
#ifndef CLOISTER_CLI_CLI_H
#define CLOISTER_CLI_CLI_H

#include <stddef.h>

#include "../client/api.h"
#include "../client/conn.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* Options a command may take (bits of cli_opts.given). */
enum {
    OPT_NAME = 1 << 0,
    OPT_DATA = 1 << 1,
    OPT_DATA_FILE = 1 << 2,
    OPT_JSON = 1 << 3,
    OPT_COORDINATOR = 1 << 4,
    OPT_EXPECT = 1 << 5,
    OPT_EXPECT_BINARY = 1 << 6,
    OPT_PLATFORM_KEY = 1 << 7,
    OPT_OUT = 1 << 8,
    OPT_TOKEN = 1 << 9,
    OPT_NODES = 1 << 10,
    OPT_CONSISTENCY = 1 << 11,
    OPT_KILL = 1 << 12,
    OPT_CLOISTERD = 1 << 13,
    OPT_MEMORY = 1 << 14,
};

typedef struct cli_opts {
    /* global */
    const char *node;          /* --node HOST:PORT (HTTP gateway) */
    const char *memcached;     /* --memcached HOST:PORT */
    const char *ca, *cert, *key;
    const char *dir;           /* --dir DIR (DIR/cluster.json) */
    const char *tenant;
    int plaintext;
    int timeout_s;             /* 0: the command's default */
    /* per command */
    const char *name;          /* deploy --name */
    const char *data;          /* invoke --data */
    const char *data_file;     /* invoke --data-file ('-' = stdin) */
    int json;                  /* ls --json */
    const char *coordinator;   /* attest --coordinator HOST:PORT */
    const char *expect;        /* attest --expect HEX */
    const char *expect_binary; /* attest --expect-binary FILE */
    const char *platform_key;  /* attest --platform-key HEX|FILE */
    const char *out;           /* attest --out DIR */
    const char *token;         /* attest --token S (with --tenant) */
    int nodes;                 /* up --nodes N */
    const char *consistency;   /* up --consistency strong|eventual */
    int kill;                  /* node stop --kill (SIGKILL) */
    const char *cloisterd;     /* up --cloisterd PATH */
    int memory_mb;             /* up --memory MB (each node's arena) */
    unsigned given;            /* OPT_* bits given on the command line */
    /* positional arguments after the command */
    int argc;
    char **argv;
} cli_opts;

/* Where and how to reach the node. */
typedef struct cli_target {
    char http[300];            /* gateway "HOST:PORT" */
    char memcached[300];       /* memcached "HOST:PORT" */
    char ca[4096], cert[4096], key[4096];
    int plaintext;
    const char *http_from;     /* where http came from: "--node", "CLOISTER_NODE", ... */
    const char *memcached_from;
} cli_target;

/* Resolves the target: flags, then CLOISTER_* environment variables,
 * then --dir / CLOISTER_DIR's cluster.json, then the defaults
 * (127.0.0.1:8080 and 127.0.0.1:11211, TLS verified with the system's
 * CAs).  CLI_OK, or CLI_USAGE / CLI_FAIL with a message printed. */
int cli_target_resolve(const cli_opts *o, cli_target *t);

/* The client_node / client_tls for the target. */
void cli_target_node(const cli_target *t, const cli_opts *o, client_node *n);
void cli_target_tls(const cli_target *t, client_tls *tls);

/* Prints "cloister: <what>: <err>" and, when the node could not be
 * reached, what to do about it.  Returns CLI_FAIL. */
int cli_report(const cli_target *t, const char *what, int rc, const char *err, int memcached);

/* Prints a usage error for the command ("cloister CMD: msg" + hint). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cmd_deploy(const cli_opts *o);
int cmd_invoke(const cli_opts *o);
int cmd_ls(const cli_opts *o);
int cmd_rm(const cli_opts *o);
int cmd_logs(const cli_opts *o);
int cmd_kv(const cli_opts *o);
int cmd_attest(const cli_opts *o);
int cmd_up(const cli_opts *o);
int cmd_down(const cli_opts *o);
int cmd_node(const cli_opts *o);
int cmd_status(const cli_opts *o);

#endif
