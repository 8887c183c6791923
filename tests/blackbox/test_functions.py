# modes: plain tls
# timeout: 900
"""test_functions.py - functions end to end: cloisterd's HTTP gateway and
runtime, driven by the `cloister` CLI and by raw HTTP(S).

  - the CLI: --help, usage errors (exit 2), a clear message when no node
    listens; deploy (with progress on stderr), invoke (--data,
    --data-file, stdin), ls (table and --json), logs, rm, kv get/set/delete
    over the memcached protocol, --dir DIR/cluster.json;
  - raw HTTP: POST /function/NAME, GET/POST/DELETE /system/functions,
    GET /healthz and /metrics; statuses 200, 201, 204, 400 (malformed
    module, bad name), 404 (unknown function), 413 (body over --max-body),
    500 with the trap's name, 504 (runaway loop stopped at --fn-timeout);
  - state: the counter example keeps its count in the store across
    invocations; two tenants' counters and functions are separate;
  - a refused deploy leaves the deployed function serving;
  - a restart with the same --state-dir reuses the compile cache.
In TLS mode every HTTP and memcached connection is TLS 1.3 verified
against the test CA.

Run: /usr/bin/python3 tests/blackbox/test_functions.py --build build [--mode tls]
"""

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("functions")

CLI_TIMEOUT = 300     # seconds; a first deploy compiles (wasm2c + cc)


def module(env, rel):
    path = os.path.join(env.opts.build, rel)
    check(os.path.exists(path), "%s is missing (build the wasm_modules target)" % path)
    return path


def cli(env, srv, *args, data=None, tenant=None, node=True):
    """Runs build/cloister against srv: (status, stdout bytes, stderr text)."""
    a = [os.path.join(env.opts.build, "cloister")]
    if node and srv is not None:
        a += ["--node", "127.0.0.1:%d" % srv.http_port, "--memcached", "127.0.0.1:%d" % srv.port]
        a += ["--ca", env.certs.ca] if srv.tls else ["--plaintext"]
    if tenant:
        a += ["--tenant", tenant]
    a += list(args)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLOISTER_")}
    r = subprocess.run(a, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=CLI_TIMEOUT, env=clean, preexec_fn=H._pdeathsig)
    env.log("cloister %s -> %d" % (" ".join(args), r.returncode))
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def cli_ok(env, srv, *args, **kw):
    rc, out, err = cli(env, srv, *args, **kw)
    if rc != 0:
        H.fail("cloister %s: exit %d; stderr: %s" % (" ".join(args), rc, err.strip()))
    return out, err


def http_req(env, srv, method, path, body=None, headers=None):
    """One HTTP(S) request to srv's gateway: (status, headers dict, body)."""
    if srv.tls:
        c = http.client.HTTPSConnection("127.0.0.1", srv.http_port, timeout=CLI_TIMEOUT,
                                        context=env.certs.client_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=CLI_TIMEOUT)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def deploy(env, srv, name, rel, tenant=None):
    """Deploys a module through the CLI; returns the CLI's stderr."""
    args = ["deploy", module(env, rel), "--name", name]
    out, err = cli_ok(env, srv, *args, tenant=tenant)
    check(b"deployed" in out, "deploy printed %r" % out)
    return err


def sha256_of(env, rel):
    with open(module(env, rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def selector(n):
    return n.to_bytes(4, "little")


# ---------------------------------------------------------------------------

@suite.test
def ready_file_names_http(env):
    srv = env.server()
    check(srv.http_port, "the ready file has no \"http\" address")
    status, _, body = http_req(env, srv, "GET", "/healthz")
    eq(status, 200, "GET /healthz status")


@suite.test(modes=("plain",))
def daemon_function_flags(env):
    rc, out, err = env.run_daemon(["--help"])
    eq(rc, 0, "cloisterd --help")
    for flag in ("--http", "--state-dir", "--fn-threads", "--fn-timeout", "--fn-memory",
                 "--fn-max-output", "--max-body"):
        check(re.search(re.escape(flag) + r"\b", out), "--help does not mention %s" % flag)
    check("127.0.0.1:8080" in out and "cloister-state" in out, "--help shows no defaults")
    base = ["--listen", "127.0.0.1:0", "--plaintext"]
    for args in (["--http", "nowhere"], ["--fn-threads", "0"], ["--fn-timeout", "soon"],
                 ["--fn-memory", "5000"], ["--fn-max-output", "lots"], ["--max-body", "-1"]):
        rc, out, err = env.run_daemon(base + args)
        eq(rc, 2, "exit status of cloisterd %s (stderr %r)" % (" ".join(args), err))
        check(args[0] in err, "the error for %s does not name it: %r" % (args[0], err))
    # The config file takes the same names.
    conf = os.path.join(env.tmp, "fn.conf")
    with open(conf, "w") as f:
        f.write("http = 127.0.0.1:0\nfn-threads = 1\nfn-timeout = 700\nmax-body = 2k\n")
    srv = env.start_server(config=conf)
    status, _, _ = http_req(env, srv, "POST", "/function/none", body=b"x" * 3000)
    eq(status, 413, "max-body from the config file")


@suite.test
def cli_help_and_usage(env):
    rc, out, err = cli(env, None, "--help", node=False)
    eq(rc, 0, "cloister --help exit status")
    for word in (b"deploy", b"invoke", b"ls", b"rm", b"logs", b"kv", b"--node", b"--dir"):
        check(word in out, "cloister --help does not mention %r" % word)
    for cmd in ("deploy", "invoke", "ls", "rm", "logs", "kv"):
        rc, out, err = cli(env, None, cmd, "--help", node=False)
        eq(rc, 0, "cloister %s --help exit status" % cmd)
        check(out.startswith(b"Usage: cloister " + cmd.encode()), "%s --help: %r" % (cmd, out[:80]))
    for args, word in ((["bogus"], "unknown command"), (["invoke"], "missing"),
                       (["ls", "--data", "x"], "--data"), (["invoke", "x", "--nope"], "--nope"),
                       (["kv", "frob", "k"], "frob"), (["invoke", "bad/name"], "name")):
        rc, out, err = cli(env, None, *args, node=False)
        eq(rc, 2, "exit status of cloister %s (stderr %r)" % (" ".join(args), err))
        check(word in err, "cloister %s: stderr does not mention %r: %r" % (" ".join(args), word, err))


@suite.test
def cli_cannot_connect(env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # nothing listens there once closed
    rc, out, err = cli(env, None, "--node", "127.0.0.1:%d" % port, "--plaintext", "ls", node=False)
    eq(rc, 1, "exit status when no node listens")
    check("cannot connect to 127.0.0.1:%d" % port in err and "cloisterd" in err,
          "the error does not say what failed and what to do: %r" % err)


@suite.test
def deploy_invoke_ls_logs_rm(env):
    srv = env.server()
    progress = deploy(env, srv, "hello", "examples/hello.wasm")
    check(re.search(r"validate|translate|compile|load", progress),
          "deploy showed no progress: %r" % progress)

    out, _ = cli_ok(env, srv, "invoke", "hello", "--data", "Ada")
    eq(out, b"Hello, Ada!\n", "invoke --data")
    path = os.path.join(env.tmp, "name.txt")
    with open(path, "wb") as f:
        f.write(b"File")
    out, _ = cli_ok(env, srv, "invoke", "hello", "--data-file", path)
    eq(out, b"Hello, File!\n", "invoke --data-file")
    out, _ = cli_ok(env, srv, "invoke", "hello", "--data-file", "-", data=b"Stdin")
    eq(out, b"Hello, Stdin!\n", "invoke --data-file -")
    out, _ = cli_ok(env, srv, "invoke", "hello")
    eq(out, b"Hello, world!\n", "invoke without data")

    sha = sha256_of(env, "examples/hello.wasm")
    out, _ = cli_ok(env, srv, "ls")
    line = [l for l in out.decode().splitlines() if l.startswith("hello ")]
    check(len(line) == 1, "ls does not list hello: %r" % out)
    check("wasm" in line[0] and sha[:12] in line[0], "ls line for hello: %r" % line[0])
    check(re.search(r"\s4\s+0\s*$", line[0]), "ls counts 4 invocations, 0 errors: %r" % line[0])
    out, _ = cli_ok(env, srv, "ls", "--json")
    fns = {f["name"]: f for f in json.loads(out)}
    eq(fns["hello"]["sha256"], sha, "ls --json sha256")
    eq(fns["hello"]["size"], os.path.getsize(module(env, "examples/hello.wasm")), "ls --json size")
    eq(fns["hello"]["tenant"], "default", "ls --json tenant")

    out, _ = cli_ok(env, srv, "logs", "hello")
    check(b"greeted a 3-byte name" in out, "logs: %r" % out[-300:])

    # Raw HTTP sees the same function.
    status, hdrs, body = http_req(env, srv, "POST", "/function/hello", body=b"HTTP")
    eq((status, body), (200, b"Hello, HTTP!\n"), "POST /function/hello")
    status, hdrs, body = http_req(env, srv, "GET", "/system/functions")
    eq(status, 200, "GET /system/functions")
    fns = {f["name"]: f for f in json.loads(body)}
    eq(fns["hello"]["sha256"], sha, "GET /system/functions sha256")
    check(fns["hello"]["invocations"] >= 5, "invocations counted: %r" % fns["hello"])

    out, _ = cli_ok(env, srv, "rm", "hello")
    rc, out, err = cli(env, srv, "invoke", "hello")
    eq(rc, 1, "invoke of a removed function: exit status")
    check("404" in err, "invoke of a removed function: %r" % err)
    rc, out, err = cli(env, srv, "rm", "hello")
    check(rc == 1 and "404" in err, "rm of a removed function: %d %r" % (rc, err))
    out, _ = cli_ok(env, srv, "ls")
    check(b"hello " not in out, "ls still lists hello: %r" % out)


@suite.test
def http_statuses(env):
    srv = env.start_server(extra=["--max-body", "1024", "--fn-timeout", "500"])
    status, _, body = http_req(env, srv, "POST", "/function/nothing", body=b"x")
    eq(status, 404, "invoke of an unknown function")

    # Deploy over raw HTTP: 201 and the function object.
    with open(module(env, "tests/modules/sb_traps.wasm"), "rb") as f:
        traps = f.read()
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=traps", body=traps)
    eq(status, 201, "POST /system/functions status (%r)" % body[:200])
    obj = json.loads(body)
    eq(obj["name"], "traps", "deploy answer name")
    eq(obj["sha256"], hashlib.sha256(traps).hexdigest(), "deploy answer sha256")

    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(0))
    eq(status, 200, "a call that returns 0")
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(4))
    eq(status, 500, "a trap")
    check(b"unreachable" in body, "the trap is named: %r" % body)
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(1))
    check(status == 500 and b"out of bounds" in body, "OOB trap: %d %r" % (status, body))
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(11))
    eq(status, 504, "a runaway loop is stopped")
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(0) + b"x" * 1100)
    eq(status, 413, "a body over --max-body")
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(0))
    eq(status, 200, "the node still serves")

    # The CLI reports failures with the status, exit 1.
    path = os.path.join(env.tmp, "sel4")
    with open(path, "wb") as f:
        f.write(selector(4))
    rc, out, err = cli(env, srv, "invoke", "traps", "--data-file", path)
    check(rc == 1 and "500" in err and "unreachable" in (err + out.decode(errors="replace")),
          "CLI on a trap: %d %r %r" % (rc, out, err))

    # 400: malformed modules and bad names, with the reason.
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=junk", body=b"not a module")
    eq(status, 400, "deploy of a non-module")
    check(b"WebAssembly" in body, "deploy of a non-module says why: %r" % body)
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=traps",
                           body=b"\0asm\x01\0\0\0\x01\xff")
    eq(status, 400, "deploy of a malformed module")
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=b@d", body=traps)
    eq(status, 400, "deploy under a bad name")
    with open(module(env, "tests/modules/bad_import_fork.wasm"), "rb") as f:
        fork = f.read()
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=fork", body=fork)
    check(status == 400 and b"fork" in body, "a forbidden import is refused: %d %r" % (status, body))
    # ... and the function deployed before still serves.
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(0))
    eq(status, 200, "the deployed function after refused deploys")

    status, _, body = http_req(env, srv, "DELETE", "/system/functions?name=traps")
    check(status in (200, 204), "DELETE /system/functions: %d" % status)
    status, _, body = http_req(env, srv, "POST", "/function/traps", body=selector(0))
    eq(status, 404, "invoke after DELETE")

    status, _, body = http_req(env, srv, "GET", "/metrics")
    eq(status, 200, "GET /metrics")
    check(re.search(rb"(?m)^cloister_\w+", body), "no cloister_ metrics: %r" % body[:300])


@suite.test
def deploy_failure_keeps_old_version(env):
    srv = env.server()
    deploy(env, srv, "keep", "examples/hello.wasm")
    bad = os.path.join(env.tmp, "bad.wasm")
    with open(bad, "wb") as f:
        f.write(b"\0asm\x01\0\0\0\x05\x03\x01\x00")   # truncated section
    rc, out, err = cli(env, srv, "deploy", bad, "--name", "keep")
    eq(rc, 1, "deploy of a malformed module: exit status")
    check("400" in err, "the refusal names its status: %r" % err)
    out, _ = cli_ok(env, srv, "invoke", "keep", "--data", "still")
    eq(out, b"Hello, still!\n", "the old version still serves")


@suite.test
def counter_state_and_tenants(env):
    srv = env.server()
    deploy(env, srv, "counter", "examples/counter.wasm", tenant="alice")
    deploy(env, srv, "counter", "examples/counter.wasm", tenant="bob")
    for who in ("alice", "bob"):
        cli_ok(env, srv, "invoke", "counter", "--data", "reset", tenant=who)
    for i in range(1, 4):
        out, _ = cli_ok(env, srv, "invoke", "counter", tenant="alice")
        eq(out, b"%d\n" % i, "alice's counter, invocation %d" % i)
    out, _ = cli_ok(env, srv, "invoke", "counter", tenant="bob")
    eq(out, b"1\n", "bob's counter is his own")
    status, _, body = http_req(env, srv, "POST", "/function/counter?tenant=alice", body=b"get")
    eq((status, body), (200, b"3\n"), "alice's counter over HTTP")
    status, _, body = http_req(env, srv, "POST", "/function/counter", body=b"get",
                           headers={"X-Cloister-Tenant": "bob"})
    eq((status, body), (200, b"1\n"), "bob's counter (tenant header)")

    # Functions are per tenant too.
    deploy(env, srv, "only-bob", "examples/hello.wasm", tenant="bob")
    rc, out, err = cli(env, srv, "invoke", "only-bob", tenant="alice")
    check(rc == 1 and "404" in err, "alice invokes bob's function: %d %r" % (rc, err))
    out, _ = cli_ok(env, srv, "ls", "--json", tenant="alice")
    eq(sorted(f["name"] for f in json.loads(out)), ["counter"], "alice's functions")

    # The count is in the store, sealed and namespaced: memcached clients
    # cannot name it.
    rc, out, err = cli(env, srv, "kv", "get", "count")
    eq(rc, 1, "kv get of a function's key from outside")


@suite.test
def kv_commands(env):
    srv = env.server()
    key = env.key("k").decode()
    cli_ok(env, srv, "kv", "set", key, "some value")
    out, _ = cli_ok(env, srv, "kv", "get", key)
    eq(out, b"some value", "kv get")
    c = srv.connect()
    eq(c.get(key.encode()), (0, b"some value"), "the value over memcached")
    cli_ok(env, srv, "kv", "delete", key)
    rc, out, err = cli(env, srv, "kv", "get", key)
    check(rc == 1 and "not found" in err, "kv get of a deleted key: %d %r" % (rc, err))


@suite.test
def cluster_json_dir(env):
    srv = env.server()
    d = os.path.join(env.tmp, "cluster")
    os.makedirs(d, exist_ok=True)
    desc = {"nodes": [{"id": 1, "pid": srv.pid, "memcached": "127.0.0.1:%d" % srv.port,
                       "http": "127.0.0.1:%d" % srv.http_port, "peer": ""}]}
    if srv.tls:
        desc["ca"] = env.certs.ca
    else:
        desc["plaintext"] = True
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump(desc, f)
    deploy(env, srv, "viadir", "examples/hello.wasm")
    out, _ = cli_ok(env, None, "--dir", d, "invoke", "viadir", "--data", "dir", node=False)
    eq(out, b"Hello, dir!\n", "invoke through --dir")
    rc, out, err = cli(env, None, "--dir", os.path.join(env.tmp, "nowhere"), "ls", node=False)
    check(rc == 1 and "cluster.json" in err, "a missing cluster.json: %d %r" % (rc, err))


@suite.test
def restart_reuses_compile_cache(env):
    state = os.path.join(env.tmp, "state-restart")
    srv = env.start_server(extra=["--state-dir", state])
    with open(module(env, "examples/wordcount.wasm"), "rb") as f:
        wc = f.read()
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=wc", body=wc)
    eq(status, 201, "first deploy (%r)" % body[:200])
    first = json.loads(body)
    srv.stop()
    srv = env.start_server(extra=["--state-dir", state])
    status, _, body = http_req(env, srv, "GET", "/system/functions")
    eq(json.loads(body), [], "a restarted single node has no functions (the store is memory)")
    status, _, body = http_req(env, srv, "POST", "/system/functions?name=wc", body=wc)
    eq(status, 201, "deploy after the restart")
    again = json.loads(body)
    eq(again.get("cached"), True, "the restart reused the compile cache")
    eq(again["sha256"], first["sha256"], "same identity")


if __name__ == "__main__":
    suite.main()
