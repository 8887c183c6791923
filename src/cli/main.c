/*
 * main.c - `cloister`, the command-line tool: parses the options, finds
 * the command in the table and runs it (cli.h).
 *
 * Options may come before or after the command and its arguments
 * (`cloister --node A invoke hello --data x` = `cloister invoke hello
 * --data x --node A`); "--" ends the options (for a value that starts
 * with '-').  Each command accepts the global options plus its own; any
 * other option is a usage error naming it.
 */
#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    int (*run)(const cli_opts *o);
    unsigned options;          /* OPT_* bits it takes */
    int min_args, max_args;    /* positional arguments after the command */
    const char *synopsis;
    const char *help;
} cli_command;

static const cli_command commands[] = {
    { "deploy", cmd_deploy, OPT_NAME, 1, 1, "deploy FILE [--name NAME] [--tenant T]",
      "Deploys FILE (a WebAssembly module, .wasm, or a native shared object, .so) as\n"
      "function NAME (default: FILE's base name), replacing any function of that\n"
      "name.  Shows the node's progress while it validates and compiles.\n" },
    { "invoke", cmd_invoke, OPT_DATA | OPT_DATA_FILE, 1, 1,
      "invoke NAME [--data STR | --data-file FILE|-] [--tenant T]",
      "Invokes function NAME with the request body STR, the contents of FILE, or\n"
      "standard input (--data-file -), and prints the function's output.  When the\n"
      "function fails (HTTP 500: it trapped or returned nonzero; 504: it ran out of\n"
      "time) its output is still printed, and the status and reason go to stderr;\n"
      "the exit status is then 1.\n" },
    { "ls", cmd_ls, OPT_JSON, 0, 0, "ls [--tenant T] [--json]",
      "Lists the deployed functions: name, tenant, kind, SHA-256 (short), module\n"
      "size, deploy time, invocations and errors since the node started.\n"
      "--json prints the node's JSON instead of the table.\n" },
    { "rm", cmd_rm, 0, 1, 1, "rm NAME [--tenant T]",
      "Removes function NAME.  Invocations already running finish.\n" },
    { "logs", cmd_logs, 0, 1, 1, "logs NAME [--tenant T]",
      "Prints the recent log lines of function NAME (cloister_log, printf and the\n"
      "runtime's own notes such as traps), oldest first.\n" },
    { "kv", cmd_kv, 0, 2, 3, "kv get KEY | kv set KEY VALUE | kv delete KEY",
      "Reads, writes or deletes KEY in the node's store over the memcached protocol\n"
      "(--memcached HOST:PORT).  get prints the value as stored.  These are the\n"
      "store's plain keys; functions keep their own keys in per-tenant namespaces\n"
      "that the memcached protocol cannot name.\n" },
    { "attest", cmd_attest,
      OPT_COORDINATOR | OPT_EXPECT | OPT_EXPECT_BINARY | OPT_PLATFORM_KEY | OPT_OUT | OPT_TOKEN,
      0, 0,
      "attest --coordinator HOST:PORT (--expect HEX | --expect-binary FILE)\n"
      "          --platform-key HEX|FILE --out DIR [--tenant T --token S]",
      "Verifies the cluster's coordinator: it must answer a fresh challenge with a\n"
      "quote, signed by the trusted platform key, showing the expected measurement\n"
      "(--expect: a SHA-256 in hex; --expect-binary: the SHA-256 of FILE, e.g. the\n"
      "cloisterd you built) for the very TLS key it uses.  Then saves the cluster CA\n"
      "to DIR/ca.pem: from then on plain TLS verification against it (--ca) is\n"
      "enough to know a node is attested.  With --tenant T --token S it also\n"
      "obtains a client certificate for tenant T (DIR/client.pem, DIR/client.key).\n"
      "--platform-key: the platform's attestation key, hex or a file holding it\n"
      "(the coordinator logs it; PLATFORM_DIR/attestation.pub).\n" },
    { "up", cmd_up, OPT_NODES | OPT_CONSISTENCY | OPT_CLOISTERD | OPT_MEMORY, 0, 0,
      "up [--nodes N] [--dir DIR] [--consistency strong|eventual] [--memory MB]\n"
      "          [--cloisterd PATH]",
      "Starts a local cluster on 127.0.0.1: a coordinator and N nodes (default 3;\n"
      "1, 3, 5 or 7), with state under DIR (default ./cloister-cluster).  Writes the\n"
      "manifest (the allowed measurement is the SHA-256 of the cloisterd binary),\n"
      "attests the coordinator, saves the cluster CA and a client certificate for\n"
      "the default tenant, starts the nodes (each attests and joins) and writes\n"
      "DIR/cluster.json, which other commands read with --dir DIR.\n"
      "--consistency: the default tenant's mode (default strong).  --memory: each\n"
      "node's value arena in MB.  --cloisterd: the daemon binary (default: the one\n"
      "next to this program).\n" },
    { "down", cmd_down, 0, 0, 0, "down [--dir DIR]",
      "Stops every node and the coordinator of the cluster in DIR.\n" },
    { "node", cmd_node, OPT_KILL, 2, 2, "node stop|start ID [--dir DIR] [--kill]",
      "Stops (SIGTERM; --kill: SIGKILL, as a crash) or restarts node ID.  A restarted\n"
      "node attests again, copies the state from a majority and then serves;\n"
      "DIR/cluster.json is updated with its new pid.\n" },
    { "status", cmd_status, OPT_JSON, 0, 0, "status [--dir DIR] [--json]",
      "Shows the cluster in DIR: the coordinator, and per node its pid, addresses,\n"
      "whether it runs, and what it reports about replication (ready or\n"
      "recovering, peers reachable, epoch).\n" },
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const char global_help[] =
    "Global options:\n"
    "  --node HOST:PORT        the node's HTTP gateway (default 127.0.0.1:8080)\n"
    "  --memcached HOST:PORT   the node's memcached address (default 127.0.0.1:11211)\n"
    "  --dir DIR               take the node, CA and client certificate from\n"
    "                          DIR/cluster.json (written by 'cloister up')\n"
    "  --ca FILE               CA certificate (PEM) to verify the node with\n"
    "                          (default: the system's trusted CAs)\n"
    "  --cert FILE, --key FILE client certificate and key (PEM), when the node\n"
    "                          requires one\n"
    "  --plaintext             talk to a node started with --plaintext (no TLS)\n"
    "  --tenant T              the tenant whose functions to act on (default: the\n"
    "                          node's default tenant)\n"
    "  --timeout SECONDS       give up on a silent node after this long\n"
    "                          (default 60; deploy 600)\n"
    "  -h, --help              show help (also: cloister COMMAND --help)\n"
    "  --version               print the version\n"
    "Environment: CLOISTER_NODE, CLOISTER_MEMCACHED, CLOISTER_DIR, CLOISTER_CA,\n"
    "CLOISTER_CERT, CLOISTER_KEY, CLOISTER_PLAINTEXT=1 stand in for the flags.\n";

static void usage(FILE *out)
{
    fprintf(out, "Usage: cloister [OPTIONS] COMMAND [ARGS]\n"
                 "Deploy and invoke functions on a Cloister node, and reach its store.\n\n"
                 "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %s\n", commands[i].synopsis);
    fprintf(out, "\n%s\nExit status: 0 success, 1 failure, 2 bad usage.\n", global_help);
}

static void command_usage(const cli_command *c, FILE *out)
{
    fprintf(out, "Usage: cloister %s\n\n%s\n%s", c->synopsis, c->help, global_help);
}

static const cli_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

enum {
    O_NODE = 256, O_MEMCACHED, O_CA, O_CERT, O_KEY, O_DIR, O_TENANT, O_PLAINTEXT, O_TIMEOUT,
    O_NAME, O_DATA, O_DATA_FILE, O_JSON, O_VERSION, O_HELP,
    O_COORDINATOR, O_EXPECT, O_EXPECT_BINARY, O_PLATFORM_KEY, O_OUT, O_TOKEN,
    O_NODES, O_CONSISTENCY, O_KILL, O_CLOISTERD, O_MEMORY,
};

static const struct option longopts[] = {
    { "node", required_argument, NULL, O_NODE },
    { "memcached", required_argument, NULL, O_MEMCACHED },
    { "ca", required_argument, NULL, O_CA },
    { "cert", required_argument, NULL, O_CERT },
    { "key", required_argument, NULL, O_KEY },
    { "dir", required_argument, NULL, O_DIR },
    { "tenant", required_argument, NULL, O_TENANT },
    { "plaintext", no_argument, NULL, O_PLAINTEXT },
    { "timeout", required_argument, NULL, O_TIMEOUT },
    { "name", required_argument, NULL, O_NAME },
    { "data", required_argument, NULL, O_DATA },
    { "data-file", required_argument, NULL, O_DATA_FILE },
    { "json", no_argument, NULL, O_JSON },
    { "coordinator", required_argument, NULL, O_COORDINATOR },
    { "expect", required_argument, NULL, O_EXPECT },
    { "expect-binary", required_argument, NULL, O_EXPECT_BINARY },
    { "platform-key", required_argument, NULL, O_PLATFORM_KEY },
    { "out", required_argument, NULL, O_OUT },
    { "token", required_argument, NULL, O_TOKEN },
    { "nodes", required_argument, NULL, O_NODES },
    { "consistency", required_argument, NULL, O_CONSISTENCY },
    { "kill", no_argument, NULL, O_KILL },
    { "cloisterd", required_argument, NULL, O_CLOISTERD },
    { "memory", required_argument, NULL, O_MEMORY },
    { "version", no_argument, NULL, O_VERSION },
    { "help", no_argument, NULL, O_HELP },
    { NULL, 0, NULL, 0 },
};

static const char *option_name(unsigned bit)
{
    switch (bit) {
    case OPT_NAME: return "--name";
    case OPT_DATA: return "--data";
    case OPT_DATA_FILE: return "--data-file";
    case OPT_JSON: return "--json";
    case OPT_COORDINATOR: return "--coordinator";
    case OPT_EXPECT: return "--expect";
    case OPT_EXPECT_BINARY: return "--expect-binary";
    case OPT_PLATFORM_KEY: return "--platform-key";
    case OPT_OUT: return "--out";
    case OPT_TOKEN: return "--token";
    case OPT_NODES: return "--nodes";
    case OPT_CONSISTENCY: return "--consistency";
    case OPT_KILL: return "--kill";
    case OPT_CLOISTERD: return "--cloisterd";
    case OPT_MEMORY: return "--memory";
    default: return "?";
    }
}

int main(int argc, char **argv)
{
    cli_opts o;
    memset(&o, 0, sizeof o);
    signal(SIGPIPE, SIG_IGN);    /* a node that closes early is an error, not a kill */
    int help = 0, c;
    char **pos = calloc((size_t)argc + 1, sizeof *pos);
    int npos = 0;
    if (!pos) {
        fprintf(stderr, "cloister: out of memory\n");
        return CLI_FAIL;
    }
    opterr = 0;
    /* "-" first: non-options are returned in order as 1, so positional
     * arguments and options may be mixed. */
    while ((c = getopt_long(argc, argv, "-:h", longopts, NULL)) != -1) {
        switch (c) {
        case 1: pos[npos++] = optarg; break;
        case O_NODE: o.node = optarg; break;
        case O_MEMCACHED: o.memcached = optarg; break;
        case O_CA: o.ca = optarg; break;
        case O_CERT: o.cert = optarg; break;
        case O_KEY: o.key = optarg; break;
        case O_DIR: o.dir = optarg; break;
        case O_TENANT: o.tenant = optarg; break;
        case O_PLAINTEXT: o.plaintext = 1; break;
        case O_TIMEOUT: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 86400) {
                free(pos);
                return cli_usage_error(NULL, "--timeout '%s' is not a number of seconds (1..86400)",
                                       optarg);
            }
            o.timeout_s = (int)v;
            break;
        }
        case O_NAME: o.name = optarg; o.given |= OPT_NAME; break;
        case O_DATA: o.data = optarg; o.given |= OPT_DATA; break;
        case O_DATA_FILE: o.data_file = optarg; o.given |= OPT_DATA_FILE; break;
        case O_JSON: o.json = 1; o.given |= OPT_JSON; break;
        case O_COORDINATOR: o.coordinator = optarg; o.given |= OPT_COORDINATOR; break;
        case O_EXPECT: o.expect = optarg; o.given |= OPT_EXPECT; break;
        case O_EXPECT_BINARY: o.expect_binary = optarg; o.given |= OPT_EXPECT_BINARY; break;
        case O_PLATFORM_KEY: o.platform_key = optarg; o.given |= OPT_PLATFORM_KEY; break;
        case O_OUT: o.out = optarg; o.given |= OPT_OUT; break;
        case O_TOKEN: o.token = optarg; o.given |= OPT_TOKEN; break;
        case O_NODES:
        case O_MEMORY: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 1048576) {
                free(pos);
                return cli_usage_error(NULL, "%s '%s' is not a positive number",
                                       c == O_NODES ? "--nodes" : "--memory", optarg);
            }
            if (c == O_NODES) {
                o.nodes = (int)v;
                o.given |= OPT_NODES;
            } else {
                o.memory_mb = (int)v;
                o.given |= OPT_MEMORY;
            }
            break;
        }
        case O_CONSISTENCY: o.consistency = optarg; o.given |= OPT_CONSISTENCY; break;
        case O_KILL: o.kill = 1; o.given |= OPT_KILL; break;
        case O_CLOISTERD: o.cloisterd = optarg; o.given |= OPT_CLOISTERD; break;
        case O_VERSION:
            printf("cloister %s\n", CLOISTER_VERSION);
            free(pos);
            return CLI_OK;
        case 'h':
        case O_HELP: help = 1; break;
        case ':':
            free(pos);
            return cli_usage_error(NULL, "%s needs a value", argv[optind - 1]);
        default:
            free(pos);
            return cli_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    while (optind < argc)                  /* after "--" */
        pos[npos++] = argv[optind++];

    int rc;
    if (npos == 0) {
        if (help) {
            usage(stdout);
            rc = CLI_OK;
        } else {
            usage(stderr);
            rc = CLI_USAGE;
        }
        goto out;
    }
    const char *name = pos[0];
    if (strcmp(name, "help") == 0) {
        const cli_command *cmd = npos > 1 ? find_command(pos[1]) : NULL;
        if (npos > 1 && !cmd) {
            rc = cli_usage_error(NULL, "unknown command '%s'", pos[1]);
            goto out;
        }
        if (cmd)
            command_usage(cmd, stdout);
        else
            usage(stdout);
        rc = CLI_OK;
        goto out;
    }
    const cli_command *cmd = find_command(name);
    if (!cmd) {
        rc = cli_usage_error(NULL, "unknown command '%s' (commands: deploy, invoke, ls, rm, "
                                   "logs, kv, attest, up, down, node, status)", name);
        goto out;
    }
    if (help) {
        command_usage(cmd, stdout);
        rc = CLI_OK;
        goto out;
    }
    unsigned extra = o.given & ~cmd->options;
    if (extra) {
        rc = cli_usage_error(cmd->name, "%s is not an option of '%s'",
                             option_name(extra & -extra), cmd->name);
        goto out;
    }
    o.argc = npos - 1;
    o.argv = pos + 1;
    if (o.argc < cmd->min_args || o.argc > cmd->max_args) {
        rc = cli_usage_error(cmd->name, "%s arguments; usage: cloister %s",
                             o.argc < cmd->min_args ? "missing" : "too many", cmd->synopsis);
        goto out;
    }
    rc = cmd->run(&o);
out:
    free(pos);
    return rc;
}
