# timeout: 600
"""test_cluster_functions.py - functions on a 3-node cluster.

A cluster from `cloister up` (coordinator + 3 attested nodes on loopback);
functions are deployed through one node and invoked through all of them
over HTTPS with the cluster's client certificate:

  deployed_anywhere   a function deployed through node 1 answers on nodes 2
                      and 3 at its first invocation; a removal through node
                      2 reaches the others
  locked_counter      1,000 concurrent invocations of counter_locked spread
                      over the three nodes (get + set under a cluster lock)
                      end at exactly 1,000, each value returned once
  locked_under_faults 600 more while node 3 is killed (SIGKILL) and
                      restarted: exactly 600 again, and the restarted node
                      reads the final value after its recovery
  atomic_counter      counter (one kv_incr each) from all nodes: exact

Every process is stopped in a finally block (`cloister down`, then the
pids in cluster.json).  Standard library only.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HTTP_TIMEOUT = 120.0


class Cluster:
    def __init__(self, build, tmp):
        self.build = build
        self.dir = os.path.join(tmp, "cluster")
        self.cli = os.path.join(build, "cloister")

    def run(self, *args, timeout=180):
        r = subprocess.run([self.cli, "--dir", self.dir] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def must(self, *args, timeout=180):
        rc, so, se = self.run(*args, timeout=timeout)
        if rc != 0:
            raise AssertionError("cloister %s failed (%d): %s%s" % (" ".join(args), rc, so, se))
        return so

    def info(self):
        with open(os.path.join(self.dir, "cluster.json")) as f:
            return json.load(f)

    def up(self):
        self.must("up", "--nodes", "3", timeout=300)
        info = self.info()
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.dir, info["ca"]))
        self.ctx.load_cert_chain(os.path.join(self.dir, info["client_cert"]),
                                 os.path.join(self.dir, info["client_key"]))

    def down(self):
        try:
            self.run("down", timeout=60)
        except Exception:
            pass
        try:
            info = self.info()
            pids = [n.get("pid") for n in info["nodes"]] + [info["coordinator"].get("pid")]
            for pid in pids:
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        except Exception:
            pass

    def gateway(self, node_index):
        host, port = self.info()["nodes"][node_index]["http"].rsplit(":", 1)
        return Gateway(host, int(port), self.ctx)


class Gateway:
    """One keep-alive HTTPS connection to a node's gateway."""

    def __init__(self, host, port, ctx):
        self.host, self.port, self.ctx = host, port, ctx
        self.conn = None

    def request(self, method, path, body=b""):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                        timeout=HTTP_TIMEOUT)
            try:
                self.conn.request(method, path, body=body)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def invoke(self, name, data=b""):
        return self.request("POST", "/function/" + name, data)

    def ok(self, name, data=b""):
        status, body = self.invoke(name, data)
        if status != 200:
            raise AssertionError("invoke %s %r on %s:%d: HTTP %d %r" % (name, data, self.host,
                                                                       self.port, status, body))
        return body

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def eq(got, want, what):
    if got != want:
        if isinstance(got, list) and isinstance(want, list):
            dup = sorted({x for x in got if got.count(x) > 1})
            missing = sorted(set(want) - set(got))
            raise AssertionError("%s: %d values, duplicated %s, missing %s" % (
                what, len(got), dup[:20], missing[:20]))
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def module(build, name):
    return os.path.join(build, "examples", name + ".wasm")


def hammer(cl, name, total, nodes, threads):
    """total invocations of name spread over `nodes`; returns the replies."""
    replies, errors = [], []
    lock = threading.Lock()
    per = total // threads

    def work(t):
        gws = [cl.gateway(i) for i in nodes]
        try:
            for k in range(per):
                body = gws[(t + k) % len(gws)].ok(name, b"incr")
                with lock:
                    replies.append(int(body.strip()))
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(repr(e))
        finally:
            for g in gws:
                g.close()

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "invocations failed: %s" % errors[:3])
    return replies


def deployed_anywhere(cl):
    cl.must("deploy", module(cl.build, "hello"), "--name", "hi")
    for i in (1, 2):
        g = cl.gateway(i)
        body = g.ok("hi", b"cluster")
        check(b"cluster" in body, "hello through node %d: %r" % (i + 1, body))
        g.close()
    h2 = cl.info()["nodes"][1]["http"]
    cl.must("--node", h2, "rm", "hi")
    deadline = time.time() + 10
    g = cl.gateway(0)
    while True:
        status, _ = g.invoke("hi", b"x")
        if status == 404:
            break
        check(time.time() < deadline, "node 1 still serves a function removed through node 2")
        time.sleep(0.2)
    g.close()


def locked_counter(cl):
    cl.must("deploy", module(cl.build, "counter_locked"), "--name", "cl")
    g = cl.gateway(1)
    eq(g.ok("cl", b"reset").strip(), b"0", "reset")
    g.close()
    replies = hammer(cl, "cl", 1000, [0, 1, 2], 10)
    eq(len(replies), 1000, "replies")
    eq(sorted(replies), list(range(1, 1001)), "each value returned once")
    for i in range(3):
        g = cl.gateway(i)
        eq(g.ok("cl", b"get").strip(), b"1000", "final value read through node %d" % (i + 1))
        g.close()


def locked_under_faults(cl):
    g = cl.gateway(0)
    eq(g.ok("cl", b"reset").strip(), b"0", "reset")
    g.close()
    result = {}

    def faults():
        time.sleep(1.0)
        cl.must("node", "stop", "3", "--kill")
        time.sleep(2.0)
        cl.must("node", "start", "3")
        result["restarted"] = True

    f = threading.Thread(target=faults)
    f.start()
    replies = hammer(cl, "cl", 600, [0, 1], 3)
    f.join()
    check(result.get("restarted"), "node 3 was not restarted")
    eq(sorted(replies), list(range(1, 601)), "each value returned once under faults")
    g = cl.gateway(2)
    eq(g.ok("cl", b"get").strip(), b"600", "final value through the restarted node 3")
    g.close()


def atomic_counter(cl):
    cl.must("deploy", module(cl.build, "counter"), "--name", "c")
    g = cl.gateway(0)
    eq(g.ok("c", b"reset").strip(), b"0", "reset")
    g.close()
    replies = hammer(cl, "c", 300, [0, 1, 2], 6)
    eq(sorted(replies), list(range(1, 301)), "kv_incr values")


CASES = [deployed_anywhere, locked_counter, locked_under_faults, atomic_counter]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("-k", default=None, help="run only cases whose name contains this")
    opts = ap.parse_args()
    build = os.path.abspath(opts.build)
    for need in ("cloister", "cloisterd", "examples/counter_locked.wasm"):
        if not os.path.exists(os.path.join(build, need)):
            print("cluster_functions: %s/%s is missing (build it first)" % (build, need))
            return 1
    tmp = tempfile.mkdtemp(prefix="cl-cluster-fn-")
    cl = Cluster(build, tmp)
    failed = 0
    try:
        cl.up()
        for case in CASES:
            if opts.k and opts.k not in case.__name__:
                continue
            t0 = time.time()
            try:
                case(cl)
                print("ok   %s (%.1fs)" % (case.__name__, time.time() - t0))
            except Exception:  # noqa: BLE001 - every failure is reported
                failed += 1
                print("FAIL %s (%.1fs)" % (case.__name__, time.time() - t0))
                traceback.print_exc()
    finally:
        cl.down()
        if failed:
            keep = os.path.join(build, "cluster-functions-failed")
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(cl.dir, keep, ignore=shutil.ignore_patterns("*.key", "platform"),
                            dirs_exist_ok=True)
            print("logs kept in %s" % keep)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failed" % failed if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
