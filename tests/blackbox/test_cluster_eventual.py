# timeout: 300
"""test_cluster_eventual.py - a 3-node cluster in eventual mode: writes
are acknowledged by the node that takes them, propagate in the
background, and every node converges to the same values, last writer
wins, also after a node was killed and restarted, partitioned away or
frozen while writes went on.

  - `cloister up --consistency eventual`: a set on node 1 then another on
    node 2 of the same key: every node ends with the second; writes of
    many keys spread over the nodes show up everywhere; incr on one node
    is seen on the others; a delete propagates; `cloister status` says
    eventual;
  - a writer keeps writing (sequentially, unique values, round-robin over
    the live nodes) while node 3 is SIGKILLed and restarted: afterwards
    every node reads, for every key, the value written last;
  - the same while node 2 is frozen (SIGSTOP) and thawed;
  - a cluster started by hand with a proxy in front of every peer port
    (cluster.ManualCluster): node 3's proxy refuses every connection (no
    peer can reach node 3) while writes go on on all three nodes,
    node 3 included; once the proxy lets traffic through again, every
    node converges to the last writes.
Convergence is polled with a deadline (CONVERGE_TIMEOUT).

Run: /usr/bin/python3 tests/blackbox/test_cluster_eventual.py --build build [-v]
"""

import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402
import harness as H  # noqa: E402
from harness import check, eq, fail  # noqa: E402

CONVERGE_TIMEOUT = 30.0

suite = H.Suite("cluster eventual")


def read_all(cl, keys, nodes=None):
    """{node: {key: value or None}} with one multi-get per node and 50 keys."""
    out = {}
    for i in nodes or cl.ids():
        conn = cl.connect(i, timeout=20)
        try:
            got = {}
            for j in range(0, len(keys), 50):
                part = keys[j:j + 50]
                conn.send(b"get " + b" ".join(part) + b"\r\n")
                for k, _, data, _ in conn.read_values("get on node %d" % i):
                    got[k] = data
            out[i] = {k: got.get(k) for k in keys}
        finally:
            conn.close()
    return out


def converge(cl, want, what):
    """Polls every node until it reads `want` ({key: value or None});
    returns the seconds it took; fails with the differences."""
    t0 = time.monotonic()
    last = {}

    def done():
        last.clear()
        last.update(read_all(cl, sorted(want)))
        return all(last[i] == want for i in cl.ids())
    try:
        C.wait_until(done, CONVERGE_TIMEOUT, what, 0.2)
    except H.Failure as e:
        diffs = ["node %d: %s = %r, want %r" % (i, k, last.get(i, {}).get(k), v)
                 for i in cl.ids() for k, v in sorted(want.items())
                 if last.get(i, {}).get(k) != v]
        fail("%s; %d differences, e.g.: %s" % (e, len(diffs), "; ".join(diffs[:6])))
    return time.monotonic() - t0


class Writer(threading.Thread):
    """Writes unique values to `nkeys` keys in turn, sequentially, each on
    the next node of `nodes()` (the live ones); remembers the value
    written last per key.  A write to a node that just died is retried
    on the next one; so every key's last write was acknowledged."""

    def __init__(self, env, cl, nodes, prefix, nkeys=40):
        super().__init__(daemon=True)
        self.cl, self.nodes = cl, nodes
        self.keys = [env.key("%s%d" % (prefix, j)) for j in range(nkeys)]
        self.want = {}
        self.stop_ev = threading.Event()
        self.errors = []
        self.writes = 0
        self.per_node = {}

    def run(self):
        conns = {}
        seq = 0
        try:
            while not self.stop_ev.is_set():
                key = self.keys[seq % len(self.keys)]
                seq += 1
                val = b"w%d" % seq
                for attempt in range(10):
                    live = self.nodes()
                    i = live[(seq + attempt) % len(live)]
                    try:
                        if i not in conns:
                            conns[i] = self.cl.connect(i, timeout=10)
                        line = conns[i].set(key, val)
                    except (OSError, H.Failure):
                        conns.pop(i, None)
                        time.sleep(0.05)
                        continue
                    if line != b"STORED\r\n":
                        self.errors.append("set %s on node %d: %r" % (key, i, line))
                        return
                    self.want[key] = val
                    self.writes += 1
                    self.per_node[i] = self.per_node.get(i, 0) + 1
                    break
                else:
                    self.errors.append("set %s: no node took it in 10 tries" % key)
                    return
                time.sleep(0.005)
        except Exception as e:      # noqa: BLE001 - reported by the case
            self.errors.append("writer: %r" % e)
        finally:
            for c in conns.values():
                c.close()

    def finish(self):
        self.stop_ev.set()
        self.join(60)
        check(not self.is_alive(), "the writer did not stop")
        check(not self.errors, "; ".join(self.errors))
        check(self.writes > 20, "only %d writes" % self.writes)
        return dict(self.want)


@suite.test
def writes_converge_last_writer_wins(env):
    with C.Cluster(env, consistency="eventual") as cl:
        out = cl.status()
        check(re.search(r"3 nodes, eventual consistency", out), "status:\n" + out)
        n = {i: cl.connect(i, timeout=20) for i in cl.ids()}
        try:
            k = env.key("lww")
            n[1].must_set(k, b"first")
            n[2].must_set(k, b"second")
            dt = converge(cl, {k: b"second"}, "the second of two sets on different nodes")
            env.log("last writer won everywhere after %.2f s" % dt)

            want = {}
            for j in range(60):
                key = env.key("spread%d" % j)
                want[key] = b"v%d-on-%d" % (j, j % 3 + 1)
                n[j % 3 + 1].must_set(key, want[key])
            converge(cl, want, "60 keys written on three nodes")

            kc = env.key("counter")
            n[2].must_set(kc, b"10")
            converge(cl, {kc: b"10"}, "the counter's first value")
            eq(n[1].request(b"incr %s 5\r\n" % kc), b"15\r\n", "incr on node 1")
            converge(cl, {kc: b"15"}, "an incr on node 1")
            eq(n[3].request(b"decr %s 3\r\n" % kc), b"12\r\n", "decr on node 3")
            converge(cl, {kc: b"12"}, "a decr on node 3")

            eq(n[3].request(b"delete %s\r\n" % k), b"DELETED\r\n", "delete on node 3")
            converge(cl, {k: None}, "a delete on node 3")
            n[1].must_set(k, b"reborn")
            converge(cl, {k: b"reborn"}, "a set after the delete")
        finally:
            for c in n.values():
                c.close()


@suite.test
def killed_node_catches_up(env):
    with C.Cluster(env, consistency="eventual") as cl:
        down = set()
        w = Writer(env, cl, lambda: [i for i in cl.ids() if i not in down], "kill")
        w.start()
        try:
            time.sleep(1.0)
            down.add(3)
            cl.kill(3)
            time.sleep(2.0)
            cl.start(3)
            down.discard(3)
            time.sleep(2.0)
        finally:
            want = w.finish()
        env.log("%d writes, per node %s" % (w.writes, w.per_node))
        check(w.per_node.get(3, 0) > 0, "no write went to node 3 after its restart")
        dt = converge(cl, want, "every node after node 3 was killed and restarted")
        print("    %d writes; converged %.1f s after the last" % (w.writes, dt))


@suite.test
def frozen_node_catches_up(env):
    with C.Cluster(env, consistency="eventual") as cl:
        frozen = set()
        w = Writer(env, cl, lambda: [i for i in cl.ids() if i not in frozen], "frozen")
        w.start()
        try:
            time.sleep(1.0)
            frozen.add(2)
            cl.pause(2)
            time.sleep(3.0)
            cl.resume(2)
            frozen.discard(2)
            time.sleep(1.0)
        finally:
            cl.resume(2)
            want = w.finish()
        dt = converge(cl, want, "every node after node 2 was frozen and thawed")
        print("    %d writes; converged %.1f s after the last" % (w.writes, dt))


@suite.test
def partitioned_node_converges(env):
    with C.ManualCluster(env, nodes=3, consistency="eventual", proxies=True,
                         seed=env.opts.seed) as cl:
        w = Writer(env, cl, lambda: cl.ids(), "part")
        w.start()
        try:
            time.sleep(1.0)
            p = cl.proxies[3]
            p.set_faults(close=1.0)      # every chunk toward node 3 closes its connection
            p.close_all()
            before = dict(w.per_node)
            time.sleep(3.0)
            during = {i: w.per_node.get(i, 0) - before.get(i, 0) for i in cl.ids()}
            # While cut off, node 3 misses what the others take.
            stale = read_all(cl, w.keys, nodes=[3])[3]
            p.clear_faults()
            time.sleep(1.0)
        finally:
            want = w.finish()
        check(during.get(3, 0) > 0 and during.get(1, 0) > 0,
              "writes during the partition, per node: %s" % during)
        missed = sum(1 for k in w.keys if stale[k] != w.want.get(k))
        check(missed > 0, "node 3 missed nothing while nobody could reach it")
        dt = converge(cl, want, "every node after node 3's partition healed")
        print("    %d writes (%s during the partition); node 3 was behind on %d keys; "
              "converged %.1f s after the last write" % (w.writes, during, missed, dt))


if __name__ == "__main__":
    C.arm_deadline(__file__)
    suite.main()
