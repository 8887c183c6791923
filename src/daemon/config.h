/*
 * config.h - cloisterd's settings: command-line flags and config file.
 *
 * One table (config.c) lists every setting once, with its flag, its
 * value's shape, its default and its help line; getopt_long, the config
 * file reader and --help are all driven from it, so they cannot disagree.
 * A config file holds lines "name = value" or "name value" using the long
 * flag names without "--" ('#' starts a comment; a switch such as
 * plaintext may stand alone or take yes/no/true/false/1/0).  Flags on the
 * command line override the file, whatever their order.
 *
 * Called by cloisterd.c's main() only, before any thread exists.
 */
#ifndef CLOISTER_DAEMON_CONFIG_H
#define CLOISTER_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef struct daemon_config {
    char *listen;        /* memcached protocol address, "HOST:PORT" */
    char *tls_cert;      /* PEM certificate (chain allowed) */
    char *tls_key;       /* PEM private key */
    char *tls_ca;        /* PEM CA: require client certificates signed by it */
    int plaintext;       /* serve without TLS (must be asked for) */
    char *arena_file;    /* back the value arena with this file; NULL = anonymous memory */
    size_t memory_mb;    /* arena size in MiB */
    size_t max_value;    /* largest value in bytes */
    int threads;         /* worker threads */
    int threads_given;   /* --threads was set (else a cluster node runs CLUSTER_THREADS) */
    int evict_lru;       /* 1: --evict lru */
    char *config_file;   /* the file read, if any */
    char *ready_file;    /* JSON written once listening */
    char *http;          /* HTTP gateway address, "HOST:PORT" */
    char *state_dir;     /* compile cache and platform key */
    int fn_threads;      /* executor threads running functions */
    unsigned fn_timeout_ms;  /* wall time per invocation */
    size_t fn_memory_mb; /* linear memory cap per instance */
    size_t fn_max_output;/* output bytes per invocation */
    size_t max_body;     /* request body bytes per invocation */
    /* cluster (docs/ATTESTATION.md) */
    int coordinator;     /* run as the coordinator, not as a node */
    char *manifest;      /* the coordinator's manifest */
    char *platform_dir;  /* the simulated platform; NULL = state_dir */
    char *join;          /* coordinator "HOST:PORT": attest and join the cluster */
    int node_id;         /* with --join: this node's id in the manifest */
    char *peer;          /* with --join: replication address "HOST:PORT" */
    char *peer_advertise;/* with --join: the replication address reported to the
                            coordinator (e.g. a proxy in front of --peer); NULL = peer */
    int expect_coordinator_set;
    unsigned char expect_coordinator[32]; /* SHA-256 the coordinator must measure as */
    int log_level;       /* CL_LOG_*; after parsing, raised by one per -v */
    int verbose;         /* number of -v */
} daemon_config;

/* What daemon_config_parse tells main to do. */
enum {
    CONFIG_RUN = 0,      /* start the daemon */
    CONFIG_EXIT = 1,     /* --help or --version was printed: exit 0 */
    CONFIG_USAGE = 2,    /* bad usage; errbuf says what and what to do: exit 2 */
};

/* Fills in the defaults. */
void daemon_config_init(daemon_config *cfg);

/* Frees the strings; the struct may be reused after daemon_config_init. */
void daemon_config_fini(daemon_config *cfg);

/*
 * Reads argv (and the --config file if one is named), then checks the
 * combination.  Help and version text go to `out`.  Returns CONFIG_RUN,
 * CONFIG_EXIT or CONFIG_USAGE (with a one-line message in errbuf).
 */
int daemon_config_parse(daemon_config *cfg, int argc, char **argv, FILE *out,
                        char *errbuf, size_t errlen);

/* Writes the --help text. */
void daemon_config_usage(FILE *out);

#endif
