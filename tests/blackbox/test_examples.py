# modes: plain
# timeout: 600
"""test_examples.py - every example function, end to end through cloisterd.

Each case deploys examples from BUILD/examples (built by the wasm_modules
and example_NAME targets) through the HTTP gateway, exactly as a user would
(`POST /system/functions?name=NAME` with the module as the body), invokes
them with `POST /function/NAME` and checks their real replies:

  hello           greets the body; its log line reaches GET /system/logs
  counter         keeps its count across invocations; commands; errors are 500
  counter tenants the same function in two tenants counts separately
  wordcount       exact counts and top words of a known text; running total
  bank            opens, balances, refuses overdrafts; 8 concurrent transfer
                  streams conserve money while audits always see the true total
  counter_locked  1,000 concurrent increments (8 threads x 125 keep-alive
                  requests) end at exactly 1,000, each value returned once
  native          hello.so and counter.so as native functions; the native and
                  WebAssembly counters of one tenant share its keys

The file's cloisterd is the harness's shared server, which serves the
gateway on a free loopback port (Server.http_port, from the ready file) and
keeps its compile cache in the file's temporary state directory.  Loopback
only; standard library only.
"""

import hashlib
import http.client
import json
import os
import random
import select
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Suite, check, eq, fail, short  # noqa: E402

suite = Suite("examples", threads=4)

HTTP_TIMEOUT = 120.0     # a deploy compiles (wasm2c + cc), slowly under ASan


# ---------------------------------------------------------------------------
# The gateway

def gateway_address(env):
    """(host, port) of the shared server's HTTP gateway."""
    server = env.server()
    check(server.http_port, "cloisterd's ready file has no \"http\" address")
    return server.host, server.http_port


class Gateway:
    """One keep-alive HTTP(S) connection to the gateway."""

    def __init__(self, env, tenant=None):
        self.env = env
        self.tenant = tenant
        host, port = gateway_address(env)
        if env.tls:
            ctx = env.certs.client_context()
            self.conn = http.client.HTTPSConnection(host, port, timeout=HTTP_TIMEOUT, context=ctx)
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT)

    def request(self, method, path, body=None):
        """(status, body bytes).  A request is sent once, never retried (an
        invocation is not idempotent); a connection the server closed while
        it was idle is reopened before sending."""
        headers = {"Content-Type": "application/octet-stream"}
        if self.tenant:
            headers["X-Cloister-Tenant"] = self.tenant
        sock = self.conn.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.conn.close()           # EOF (or stray bytes) while idle: start afresh
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def deploy(self, name, path):
        """Deploys the module file at path as name; returns the deploy's JSON."""
        with open(path, "rb") as f:
            module = f.read()
        status, body = self.request("POST", "/system/functions?name=" + name, module)
        check(status in (200, 201), "deploy %s: HTTP %d %s" % (name, status, short(body, 600)))
        try:
            info = json.loads(body)
        except ValueError:
            fail("deploy %s: the reply is not JSON: %s" % (name, short(body)))
        eq(info.get("name"), name, "deploy %s: name in the reply" % name)
        eq(info.get("sha256"), hashlib.sha256(module).hexdigest(),
           "deploy %s: sha256 (the module's identity)" % name)
        return info

    def invoke(self, name, data=b""):
        """(status, body) of POST /function/NAME."""
        if isinstance(data, str):
            data = data.encode()
        return self.request("POST", "/function/" + name, data)

    def ok(self, name, data=b""):
        """The body of an invocation that must succeed (HTTP 200)."""
        status, body = self.invoke(name, data)
        if status != 200:
            fail("invoke %s %s: HTTP %d %s" % (name, short(data, 80), status, short(body, 400)))
        return body

    def close(self):
        self.conn.close()


def module_path(env, name, ext="wasm"):
    path = os.path.join(env.opts.build, "examples", "%s.%s" % (name, ext))
    check(os.path.exists(path),
          "%s is missing: build it (cmake --build %s --target wasm_modules example_%s)"
          % (path, env.opts.build, name))
    return path


def run_threads(n, target):
    """Runs target(i) on n threads; fails with the first exception raised."""
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:      # reported below, with the thread
            errors.append("thread %d: %s: %s" % (i, type(e).__name__, e))

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail("; ".join(errors[:4]))


# ---------------------------------------------------------------------------
# Cases

@suite.test
def hello_greets(env):
    gw = Gateway(env)
    info = gw.deploy("hello", module_path(env, "hello"))
    eq(info.get("kind"), "wasm", "hello kind")
    eq(gw.ok("hello", "Ada"), b"Hello, Ada!\n", "hello Ada")
    eq(gw.ok("hello"), b"Hello, world!\n", "hello with an empty body")
    eq(gw.ok("hello", "x" * 500), b"Hello, " + b"x" * 120 + b"!\n", "hello cuts long names")
    # The fprintf(stderr, ...) line went to the function's log.
    status, log = gw.request("GET", "/system/logs?name=hello")
    eq(status, 200, "GET /system/logs?name=hello status")
    check(b"greeted a 3-byte name" in log, "hello's log lacks its line: %s" % short(log, 400))
    # Deploying the same module again is accepted and reuses the compiled code.
    again = gw.deploy("hello", module_path(env, "hello"))
    eq(again.get("cached"), True, "redeploy of the same module: cached")
    eq(gw.ok("hello", "again"), b"Hello, again!\n", "hello after redeploy")
    status, _ = gw.invoke("no-such-function")
    eq(status, 404, "invoke of an unknown function")
    gw.close()


@suite.test
def counter_keeps_state(env):
    gw = Gateway(env)
    gw.deploy("counter", module_path(env, "counter"))
    eq(gw.ok("counter", "reset"), b"0\n", "counter reset")
    for want in (1, 2, 3):
        eq(gw.ok("counter"), b"%d\n" % want, "counter increment %d" % want)
    eq(gw.ok("counter", "get"), b"3\n", "counter get")
    eq(gw.ok("counter", "get"), b"3\n", "counter get does not increment")
    eq(gw.ok("counter", " incr\n"), b"4\n", "counter incr (whitespace ignored)")
    eq(gw.ok("counter", "add 10"), b"14\n", "counter add 10")
    eq(gw.ok("counter", "add -100"), b"0\n", "counter add -100 stops at 0")
    status, body = gw.invoke("counter", "explode")
    eq(status, 500, "counter: unknown command status")
    check(body.startswith(b"error: unknown command"), "counter error body: %s" % short(body))
    eq(gw.ok("counter", "get"), b"0\n", "counter unchanged by the failed command")
    # A new connection (and whatever instance serves it) sees the same state.
    gw2 = Gateway(env)
    eq(gw2.ok("counter"), b"1\n", "counter from a second connection")
    gw2.close()
    gw.close()


@suite.test
def counter_tenants_are_separate(env):
    a, b = Gateway(env, tenant="alpha"), Gateway(env, tenant="beta")
    for gw in (a, b):
        gw.deploy("counter", module_path(env, "counter"))
        eq(gw.ok("counter", "reset"), b"0\n", "reset in tenant %s" % gw.tenant)
    for _ in range(3):
        a.ok("counter")
    eq(b.ok("counter"), b"1\n", "tenant beta's count after alpha counted to 3")
    eq(a.ok("counter", "get"), b"3\n", "tenant alpha's count")
    a.close()
    b.close()


WORDCOUNT_TEXT = (b"The quick brown fox jumps over the lazy dog.\n"
                  b"The dog sleeps; the fox doesn't.\n"
                  b"'Quoted' words, UPPER and lower: the THE The.\n")
WORDCOUNT_REPLY = (b"lines: 3\nwords: 23\nbytes: %d\ndistinct: 15\n"
                   b"total words seen: %%d\ntop:\n"
                   b"7 the\n2 dog\n2 fox\n1 and\n1 brown\n1 doesn't\n1 jumps\n1 lazy\n"
                   b"1 lower\n1 over\n" % len(WORDCOUNT_TEXT))


@suite.test
def wordcount_counts(env):
    gw = Gateway(env)
    gw.deploy("wordcount", module_path(env, "wordcount"))
    first = gw.ok("wordcount", WORDCOUNT_TEXT)
    lines = first.split(b"\n")
    check(len(lines) > 4 and lines[4].startswith(b"total words seen: "),
          "wordcount reply: %s" % short(first, 600))
    total = int(lines[4].split(b": ")[1])
    check(total >= 23, "total words seen %d < the 23 just counted" % total)
    eq(first, WORDCOUNT_REPLY % total, "wordcount of the known text")
    eq(gw.ok("wordcount", WORDCOUNT_TEXT), WORDCOUNT_REPLY % (total + 23),
       "wordcount again: the running total grows by 23")
    eq(gw.ok("wordcount", b""),
       b"lines: 0\nwords: 0\nbytes: 0\ndistinct: 0\ntotal words seen: %d\ntop:\n" % (total + 23),
       "wordcount of an empty body")
    # A large body: 20,000 words, malloc'd table growth, qsort of 5,000 distinct.
    big = b" ".join(b"w%d" % (i % 5000) for i in range(20000))
    reply = gw.ok("wordcount", big)
    check(b"\nwords: 20000\n" in reply and b"\ndistinct: 5000\n" in reply,
          "wordcount of 20,000 words: %s" % short(reply, 400))
    check(b"\ntop:\n4 w0\n4 w1\n4 w10\n" in reply, "wordcount top of the large body: %s"
          % short(reply, 400))
    gw.close()


def balance(gw, name):
    body = gw.ok("bank", "balance " + name)
    parts = body.split()
    check(len(parts) == 2 and parts[0] == name.encode(), "balance %s: %s" % (name, short(body)))
    return int(parts[1])


@suite.test
def bank_conserves_money(env):
    gw = Gateway(env)
    gw.deploy("bank", module_path(env, "bank"))
    accounts = ["acct%d" % i for i in range(5)]
    for a in accounts:
        eq(gw.ok("bank", "open %s 1000" % a), b"%s 1000\n" % a.encode(), "open " + a)
    total = 1000 * len(accounts)

    # Refusals change nothing.
    status, body = gw.invoke("bank", "open acct0 5")
    eq(status, 500, "reopening an account")
    check(body.startswith(b"error: account acct0 exists"), "reopen body: %s" % short(body))
    status, body = gw.invoke("bank", "transfer acct0 acct1 1001")
    eq(status, 500, "overdraft status")
    eq(body, b"refused: acct0 holds 1000, cannot pay 1001\n", "overdraft reply")
    status, body = gw.invoke("bank", "transfer acct0 nobody 1")
    eq(status, 500, "transfer to a missing account")
    eq(balance(gw, "acct0"), 1000, "acct0 after refused transfers")
    eq(gw.ok("bank", "transfer acct0 acct1 250"), b"acct0 750\nacct1 1250\n", "a transfer")
    eq(gw.ok("bank", "transfer acct1 acct0 250"), b"acct1 1000\nacct0 1000\n", "and back")

    # 8 concurrent streams of random transfers (both directions between the
    # same accounts, so lock order matters), plus an auditor.
    streams, per_stream = 8, 40
    results = [[0, 0] for _ in range(streams)]     # [ok, refused]
    done = threading.Event()
    audits = []

    def stream(i):
        rng = random.Random("%d:bank:%d" % (env.opts.seed, i))
        g = Gateway(env)
        try:
            for _ in range(per_stream):
                src, dst = rng.sample(accounts, 2)
                amount = rng.choice((1, 7, 50, 300, 900, 2500))
                status, body = g.invoke("bank", "transfer %s %s %d" % (src, dst, amount))
                if status == 200:
                    results[i][0] += 1
                elif status == 500 and body.startswith(b"refused: "):
                    results[i][1] += 1
                else:
                    raise AssertionError("transfer %s->%s %d: HTTP %d %s"
                                         % (src, dst, amount, status, short(body)))
        finally:
            g.close()

    def auditor():
        g = Gateway(env)
        try:
            while not done.is_set():
                body = g.ok("bank", "audit " + " ".join(accounts))
                audits.append(body)
        finally:
            g.close()

    audit_thread = threading.Thread(target=auditor)
    audit_thread.start()
    try:
        run_threads(streams, stream)
    finally:
        done.set()
        audit_thread.join()

    for body in audits:
        lines = body.decode().splitlines()
        check(len(lines) == len(accounts) + 1 and lines[-1] == "total %d" % total,
              "an audit during the transfers saw %r (total must stay %d)" % (body, total))
        check(all(int(ln.split()[1]) >= 0 for ln in lines[:-1]), "negative balance: %r" % body)
    check(audits, "the auditor completed no audit")
    oks = sum(r[0] for r in results)
    refused = sum(r[1] for r in results)
    eq(oks + refused, streams * per_stream, "transfers answered")
    check(oks > 0 and refused > 0, "expected both accepted (%d) and refused (%d) transfers"
          % (oks, refused))
    balances = [balance(gw, a) for a in accounts]
    eq(sum(balances), total, "money after %d transfers (%d refused); balances %r"
       % (oks, refused, balances))
    check(min(balances) >= 0, "a balance went negative: %r" % balances)
    env.log("bank: %d transfers, %d refused, %d audits, balances %r"
            % (oks, refused, len(audits), balances))
    gw.close()


@suite.test
def counter_locked_1000_concurrent_increments(env):
    gw = Gateway(env)
    gw.deploy("counter_locked", module_path(env, "counter_locked"))
    eq(gw.ok("counter_locked", "reset"), b"0\n", "counter_locked reset")
    threads, per_thread = 8, 125
    seen = [[] for _ in range(threads)]

    def incr(i):
        g = Gateway(env)                 # one keep-alive connection per thread
        try:
            for _ in range(per_thread):
                seen[i].append(int(g.ok("counter_locked", "incr")))
        finally:
            g.close()

    run_threads(threads, incr)
    eq(gw.ok("counter_locked", "get"), b"%d\n" % (threads * per_thread),
       "counter_locked after %d concurrent increments" % (threads * per_thread))
    values = sorted(v for s in seen for v in s)
    eq(values, list(range(1, threads * per_thread + 1)),
       "each increment returned a distinct value (no lost update)")
    gw.close()


@suite.test
def native_functions(env):
    gw = Gateway(env)
    info = gw.deploy("hello-native", module_path(env, "hello", "so"))
    eq(info.get("kind"), "native", "hello.so kind")
    eq(gw.ok("hello-native", "Grace"), b"Hello, Grace!\n", "native hello")
    eq(gw.ok("hello-native"), b"Hello, world!\n", "native hello, empty body")

    gw.deploy("counter-native", module_path(env, "counter", "so"))
    gw.deploy("counter", module_path(env, "counter"))
    eq(gw.ok("counter-native", "reset"), b"0\n", "native counter reset")
    eq(gw.ok("counter-native"), b"1\n", "native counter increment")
    eq(gw.ok("counter-native"), b"2\n", "native counter increment again")
    # Same tenant, same key "count": the WebAssembly build sees the same state.
    eq(gw.ok("counter"), b"3\n", "wasm counter after two native increments")
    eq(gw.ok("counter-native", "get"), b"3\n", "native counter get")
    status, body = gw.invoke("counter-native", "explode")
    eq(status, 500, "native counter: unknown command status")
    check(body.startswith(b"error: unknown command"), "native error body: %s" % short(body))
    gw.close()


if __name__ == "__main__":
    suite.main()
