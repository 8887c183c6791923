# timeout: 300
"""test_cluster_basic.py - a 3-node strong cluster made by `cloister up`,
reached over TLS on every node's memcached port (cluster.py).

  - every text command keeps its meaning across nodes: set on one, get on
    another; gets gives the same CAS id on every node and a cas with it
    succeeds anywhere (once); add, replace, append, prepend, incr, decr,
    delete, touch, gat, gats; multi-get; noreply; values near 1 MB;
    oversized values refused with the connection kept; flush_all refused
    with a clear SERVER_ERROR and nothing flushed;
  - meta commands across nodes: ms, mg (value, flags, CAS, size), md, ma,
    mn, ms with a CAS id from another node;
  - SIGKILL of a node: a client of another node sees no error, not even at
    the moment of the kill; the restarted node recovers and serves every
    value written meanwhile; a rolling kill/restart of all three nodes
    loses no acknowledged write (a node that came back empty would make
    the last round lose data);
  - a majority silent (SIGSTOP): reads, sets and RMWs fail with
    "SERVER_ERROR no quorum ..." within the engine's time-out, the client
    connection survives and works again once they resume; a majority
    killed: the same error; the two restarted with empty memory cannot
    recover from a majority, so they answer SERVER_ERROR, never a miss;
  - `cloister status` lists the coordinator and every node with its state
    and says how many run.

Run: /usr/bin/python3 tests/blackbox/test_cluster_basic.py --build build [-v] [-k NAME]
"""

import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402
import harness as H  # noqa: E402
from harness import check, eq, fail  # noqa: E402

suite = H.Suite("cluster basic")

ENGINE_TIMEOUT = 5.0     # repl_config.op_timeout_ms default
ERROR_SLACK = 10.0       # scheduling on a loaded machine, ASan


def _conns(c):
    return {i: c.connect(i, timeout=30) for i in c.ids()}


def _close(conns):
    for x in conns.values():
        x.close()


def _values(conn, cmd):
    """Sends a retrieval command, returns {key: (flags, data, cas)}."""
    conn.send(cmd)
    return {k: (f, d, cas) for k, f, d, cas in conn.read_values("reply to %s" % H.short(cmd, 60))}


@suite.test
def text_commands_across_nodes(env):
    with C.Cluster(env) as c:
        n = _conns(c)
        try:
            k = env.key("a")
            n[1].must_set(k, b"hello", flags=42)
            eq(n[2].get(k), (42, b"hello"), "get on node 2 after set on node 1")
            eq(n[3].get(k), (42, b"hello"), "get on node 3 after set on node 1")

            # gets/cas: one CAS id for a version, whichever node answers.
            cas2 = n[2].gets(k)[2]
            eq(n[3].gets(k)[2], cas2, "CAS id of the same version on nodes 2 and 3")
            n[3].call(b"cas %s 7 0 5 %d\r\nworld\r\n" % (k, cas2), b"STORED\r\n",
                      "cas on node 3 with node 2's CAS id")
            n[1].call(b"cas %s 0 0 3 %d\r\nold\r\n" % (k, cas2), b"EXISTS\r\n",
                      "cas on node 1 with the now stale CAS id")
            eq(n[1].get(k), (7, b"world"), "value after the cas")
            check(n[1].gets(k)[2] != cas2, "a new version has a new CAS id")
            n[2].call(b"cas %s 0 0 1 %d\r\nx\r\n" % (env.key("none"), cas2), b"NOT_FOUND\r\n",
                      "cas on a key never written")

            # add / replace
            eq(n[2].set(k, b"x", cmd=b"add"), b"NOT_STORED\r\n", "add of a present key")
            ka = env.key("added")
            eq(n[2].set(ka, b"fresh", flags=3, cmd=b"add"), b"STORED\r\n", "add of a new key")
            eq(n[3].get(ka), (3, b"fresh"), "added key on node 3")
            eq(n[3].set(env.key("nope"), b"x", cmd=b"replace"), b"NOT_STORED\r\n",
               "replace of an absent key")
            eq(n[1].get(env.key("nope")), None, "a refused replace stores nothing")
            eq(n[3].set(ka, b"replaced", flags=4, cmd=b"replace"), b"STORED\r\n", "replace")
            eq(n[1].get(ka), (4, b"replaced"), "replaced key on node 1")

            # append / prepend keep the flags
            eq(n[1].set(ka, b">>", flags=99, cmd=b"append"), b"STORED\r\n", "append")
            eq(n[2].set(ka, b"<<", flags=98, cmd=b"prepend"), b"STORED\r\n", "prepend")
            eq(n[3].get(ka), (4, b"<<replaced>>"), "after append on 1 and prepend on 2")
            eq(n[3].set(env.key("nope"), b"x", cmd=b"append"), b"NOT_STORED\r\n",
               "append to an absent key")
            eq(n[3].set(env.key("nope"), b"x", cmd=b"prepend"), b"NOT_STORED\r\n",
               "prepend to an absent key")

            # incr / decr
            kc = env.key("counter")
            n[1].must_set(kc, b"10")
            eq(n[2].request(b"incr %s 5\r\n" % kc), b"15\r\n", "incr on node 2")
            eq(n[3].request(b"decr %s 20\r\n" % kc), b"0\r\n", "decr below 0 on node 3")
            eq(n[1].get(kc), (0, b"0"), "counter on node 1")
            eq(n[1].request(b"incr %s 7\r\n" % kc), b"7\r\n", "incr on node 1")
            eq(n[2].request(b"decr %s 2\r\n" % kc), b"5\r\n", "decr on node 2")
            n[3].must_set(kc, b"18446744073709551615")
            eq(n[1].request(b"incr %s 2\r\n" % kc), b"1\r\n", "incr wraps at 2^64")
            line = n[2].request(b"incr %s 1\r\n" % k)
            check(line.startswith(b"CLIENT_ERROR"), "incr of a non-number: %r" % line)
            eq(n[3].request(b"incr %s 1\r\n" % env.key("nope")), b"NOT_FOUND\r\n",
               "incr of an absent key")
            eq(n[3].request(b"decr %s 1\r\n" % env.key("nope")), b"NOT_FOUND\r\n",
               "decr of an absent key")

            # delete
            eq(n[2].request(b"delete %s\r\n" % ka), b"DELETED\r\n", "delete on node 2")
            eq(n[3].get(ka), None, "deleted key on node 3")
            eq(n[1].request(b"delete %s\r\n" % ka), b"NOT_FOUND\r\n", "second delete on node 1")
            eq(n[1].set(ka, b"again", cmd=b"add"), b"STORED\r\n", "add after delete")
            eq(n[2].get(ka), (0, b"again"), "re-added key on node 2")

            # gat / gats / touch, and expiry seen from another node
            kg = env.key("gat")
            n[1].must_set(kg, b"gv", flags=5)
            got = _values(n[2], b"gat 100 %s\r\n" % kg)
            eq(got, {kg: (5, b"gv", None)}, "gat on node 2")
            got = _values(n[3], b"gats 100 %s\r\n" % kg)
            check(kg in got and got[kg][:2] == (5, b"gv") and got[kg][2],
                  "gats on node 3: %r" % got)
            eq(n[1].request(b"touch %s 100\r\n" % env.key("nope")), b"NOT_FOUND\r\n",
               "touch of an absent key")
            kt = env.key("touched")
            n[1].must_set(kt, b"short")
            eq(n[2].request(b"touch %s 2\r\n" % kt), b"TOUCHED\r\n", "touch on node 2")
            eq(n[3].get(kt), (0, b"short"), "touched key before it expires")
            t_expire = time.time() + 3.2

            # multi-get, in the order asked, absent keys left out
            keys = [env.key("m%d" % j) for j in range(5)]
            for j, kk in enumerate(keys):
                if j != 2:
                    n[1 + j % 3].must_set(kk, b"v%d" % j, flags=j)
            n[3].send(b"get " + b" ".join(keys) + b"\r\n")
            items = n[3].read_values("multi-get")
            eq([(i[0], i[1], i[2]) for i in items],
               [(keys[j], j, b"v%d" % j) for j in (0, 1, 3, 4)], "multi-get on node 3")
            multi = _values(n[2], b"gets " + b" ".join(keys) + b"\r\n")
            for j in (0, 1, 3, 4):
                eq(multi[keys[j]][2], n[1].gets(keys[j])[2],
                   "CAS id of %s via multi-gets" % keys[j])

            # noreply: nothing comes back; the effects are there on other nodes
            kn = env.key("noreply")
            n[1].send(b"set %s 1 0 2 noreply\r\nv1\r\n" % kn +
                      b"append %s 0 0 1 noreply\r\n+\r\n" % kn +
                      b"add %s 0 0 1 noreply\r\nz\r\n" % kn +
                      b"set %s 0 0 1 noreply\r\n4\r\n" % (kn + b"c") +
                      b"incr %s 3 noreply\r\n" % (kn + b"c") +
                      b"delete %s noreply\r\n" % ka +
                      b"touch %s 100 noreply\r\n" % kn)
            n[1].sync()
            eq(n[2].get(kn), (1, b"v1+"), "noreply set + append (+ refused add) on node 2")
            eq(n[3].get(kn + b"c"), (0, b"7"), "noreply incr on node 3")
            eq(n[3].get(ka), None, "noreply delete on node 3")

            # flush_all has no cluster meaning: refused, clearly, nothing flushed
            for cmd in (b"flush_all\r\n", b"flush_all 0\r\n"):
                line = n[1].request(cmd)
                check(line.startswith(b"SERVER_ERROR") and b"not supported" in line,
                      "%r on a cluster node: %r" % (cmd, line))
            eq(n[2].get(k), (7, b"world"), "value after the refused flush_all")

            # server commands on every node
            for i in c.ids():
                v = n[i].request(b"version\r\n")
                check(v.startswith(b"VERSION "), "version on node %d: %r" % (i, v))
                st = n[i].stats()
                eq(st.get("repl_node_id"), str(i), "stats repl_node_id on node %d" % i)
                eq(st.get("repl_nodes"), "3", "stats repl_nodes on node %d" % i)
                eq(st.get("repl_state"), "ready", "stats repl_state on node %d" % i)

            time.sleep(max(0.0, t_expire - time.time()))
            eq(n[1].get(kt), None, "key touched to 2 s on node 2, read 3 s later on node 1")
        finally:
            _close(n)


@suite.test
def big_values_across_nodes(env):
    with C.Cluster(env) as c:
        n = _conns(c)
        try:
            bigs = {}
            for j, size in enumerate((1000000, 999999, 1 << 19)):
                kb = env.key("big%d" % j)
                bigs[kb] = env.rng.randbytes(size)
                n[1 + j].must_set(kb, bigs[kb], flags=j)
            for i in c.ids():
                for j, (kb, v) in enumerate(bigs.items()):
                    got = n[i].get(kb)
                    check(got == (j, v), "value of %d bytes read on node %d: %s"
                          % (len(v), i, "miss" if got is None else "%d bytes, flags %d, %s"
                             % (len(got[1]), got[0], "equal" if got[1] == v else "different")))
            items = _values(n[2], b"get " + b" ".join(bigs) + b"\r\n")
            check(all(items[kb][1] == v for kb, v in bigs.items()), "multi-get of big values")
            # Too large: refused, the old value kept, the connection usable.
            kb = next(iter(bigs))
            line = n[3].set(kb, b"x" * (2 << 20))
            check(line.startswith(b"SERVER_ERROR"), "a 2 MiB value: %r" % line)
            n[3].sync()
            check(n[1].get(kb)[1] == bigs[kb], "old value kept after a refused big set")
            # The largest value the cluster takes, whatever it is, round-trips.
            km = env.key("max")
            line = n[1].set(km, b"m" * (1 << 20))
            if line == b"STORED\r\n":
                eq(n[2].get(km), (0, b"m" * (1 << 20)), "a 1 MiB value on node 2")
            else:
                check(line.startswith(b"SERVER_ERROR object too large"), "1 MiB set: %r" % line)
            # An append that makes a value too large is refused too.
            line = n[2].set(kb, b"y" * 100000, cmd=b"append")
            check(line.startswith(b"SERVER_ERROR"), "append past the value limit: %r" % line)
            check(n[3].get(kb)[1] == bigs[kb], "value after a refused append")
            # Appends and prepends whose result outgrows the front door's
            # first scratch buffer (4 KiB) apply exactly once (a regression:
            # such a read-modify-write once ran again after it had applied).
            kg = env.key("grow")
            n[1].must_set(kg, b"s" * 3000)
            want = b"s" * 3000
            for step in range(6):
                part = bytes([0x61 + step]) * (1500 + 700 * step)
                cmd = b"append" if step % 2 == 0 else b"prepend"
                eq(n[1 + step % 3].set(kg, part, cmd=cmd), b"STORED\r\n", "%s %d" % (cmd, step))
                want = want + part if cmd == b"append" else part + want
                for i in c.ids():
                    eq(n[i].get(kg), (0, want), "value after %s %d, read on node %d"
                       % (cmd.decode(), step, i))
        finally:
            _close(n)


@suite.test
def waiting_requests_pipelined_and_abandoned(env):
    """A plain get or set frees its worker while the replicas answer (the
    connection is suspended): pipelined requests on one connection still
    answer in order, a client that hangs up mid-wait harms nothing (its
    set still lands, the node keeps serving; ASan checks for leaks), and
    many connections are served by the default 8 workers."""
    with C.Cluster(env) as c:
        n = _conns(c)
        try:
            ks = [env.key("p%d" % i) for i in range(40)]
            batch = b"".join(b"set %s 0 0 %d\r\nv%d\r\n" % (k, len(b"v%d" % i), i)
                             for i, k in enumerate(ks))
            batch += b"".join(b"get %s\r\n" % k for k in ks)
            n[1].send(batch)
            for i in range(len(ks)):
                eq(n[1].read_line("set %d" % i), b"STORED\r\n", "pipelined set %d" % i)
            for i, k in enumerate(ks):
                eq(n[1].read_line("get %d" % i), b"VALUE %s 0 %d\r\n" % (k, len(b"v%d" % i)),
                   "pipelined get %d" % i)
                eq(n[1].read_line("value"), b"v%d\r\n" % i, "pipelined value %d" % i)
                eq(n[1].read_line("end"), b"END\r\n", "pipelined END %d" % i)
            # hang up while waiting
            gone = [env.key("gone%d" % i) for i in range(30)]
            for i, k in enumerate(gone):
                conn = c.connect(1 + i % 3)
                conn.send(b"set %s 0 0 4\r\ngone\r\nget %s\r\n" % (k, k))
                conn.sock.close()
            for i, k in enumerate(gone):
                C.wait_until(lambda: n[2].get(k) == (0, b"gone"), 10,
                             "the set of a client that hung up (%d)" % i)
            # many connections at once, one request each, answered
            many = [c.connect(1) for _ in range(64)]
            try:
                for i, conn in enumerate(many):
                    conn.send(b"set %s 0 0 1\r\nx\r\n" % env.key("m%d" % i))
                for i, conn in enumerate(many):
                    eq(conn.read_line("reply"), b"STORED\r\n", "connection %d of 64" % i)
            finally:
                for conn in many:
                    conn.close()
        finally:
            _close(n)


def _meta(conn, req):
    """One meta request; returns (code, {flag letter: token}, data|None)."""
    line = conn.request(req).rstrip(b"\r\n")
    if line.startswith((b"SERVER_ERROR", b"CLIENT_ERROR", b"ERROR")):
        fail("%r: %r" % (req, line))
    parts = line.split()
    code, rest = parts[0], parts[1:]
    data = None
    if code == b"VA":
        size = int(rest[0])
        rest = rest[1:]
        data = conn.read_exact(size + 2)[:-2]
    return code, {p[:1].decode(): p[1:].decode() for p in rest}, data


@suite.test
def meta_commands_across_nodes(env):
    with C.Cluster(env) as c:
        n = _conns(c)
        try:
            k = env.key("meta")
            eq(_meta(n[1], b"ms %s 5 F9 T0\r\nhello\r\n" % k)[0], b"HD", "ms on node 1")
            code, fl, data = _meta(n[2], b"mg %s v f c s\r\n" % k)
            eq((code, data, fl.get("f"), fl.get("s")), (b"VA", b"hello", "9", "5"),
               "mg v f c s on node 2")
            cas = fl.get("c")
            check(cas and cas.isdigit(), "mg c on node 2: %r" % fl)
            eq(_meta(n[3], b"mg %s c\r\n" % k), (b"HD", {"c": cas}, None), "mg c on node 3")
            eq(n[3].get(k), (9, b"hello"), "get of an ms value")
            eq(_meta(n[3], b"ms %s 3 C%s\r\nnew\r\n" % (k, cas.encode()))[0], b"HD",
               "ms C<cas from node 2> on node 3")
            eq(_meta(n[1], b"ms %s 3 C%s\r\nold\r\n" % (k, cas.encode()))[0], b"EX",
               "ms with the stale CAS on node 1")
            eq(_meta(n[1], b"mg %s v\r\n" % k), (b"VA", {}, b"new"), "mg v on node 1")
            eq(_meta(n[2], b"mg %s v\r\n" % env.key("absent")), (b"EN", {}, None),
               "mg of an absent key")

            kc = env.key("mcount")
            eq(_meta(n[2], b"ma %s\r\n" % kc)[0], b"NF", "ma on an absent key")
            eq(_meta(n[2], b"ms %s 2\r\n10\r\n" % kc)[0], b"HD", "ms of a counter")
            eq(_meta(n[3], b"ma %s D5 v\r\n" % kc), (b"VA", {}, b"15"), "ma D5 v on node 3")
            eq(_meta(n[1], b"ma %s MD D20 v\r\n" % kc), (b"VA", {}, b"0"), "ma MD D20 v on node 1")
            eq(n[2].get(kc), (0, b"0"), "counter on node 2")
            eq(_meta(n[1], b"ma %s N0 J13 v\r\n" % env.key("viv")), (b"VA", {}, b"13"),
               "ma N0 J13 (auto-create) on node 1")
            eq(n[3].get(env.key("viv")), (0, b"13"), "auto-created counter on node 3")

            eq(_meta(n[1], b"md %s\r\n" % k)[0], b"HD", "md on node 1")
            eq(_meta(n[2], b"mg %s v\r\n" % k)[0], b"EN", "mg on node 2 after md")
            eq(n[3].get(k), None, "get on node 3 after md")
            eq(_meta(n[3], b"md %s\r\n" % k)[0], b"NF", "md of a deleted key")
            eq(_meta(n[3], b"mn\r\n")[0], b"MN", "mn")
        finally:
            _close(n)


class _Writer(threading.Thread):
    """Sets unique values on one node until stopped; every reply must be
    STORED (a node of the cluster dying must not show to other nodes'
    clients)."""

    def __init__(self, c, node, prefix):
        super().__init__(daemon=True)
        self.c, self.node, self.prefix = c, node, prefix
        self.stop_ev = threading.Event()
        self.acked = {}
        self.errors = []

    def run(self):
        conn = None
        try:
            conn = self.c.connect(self.node, timeout=30)
            j = 0
            while not self.stop_ev.is_set():
                key = b"%s:%d" % (self.prefix, j % 50)
                val = b"w%d" % j
                t0 = time.monotonic()
                line = conn.set(key, val)
                if line != b"STORED\r\n":
                    self.errors.append("set %s on node %d: %r after %.2fs"
                                       % (key, self.node, line, time.monotonic() - t0))
                    return
                self.acked[key] = val
                j += 1
        except Exception as e:      # noqa: BLE001 - reported by the case
            self.errors.append("writer on node %d: %r" % (self.node, e))
        finally:
            if conn:
                conn.close()


@suite.test
def killed_nodes_recover_without_losing_writes(env):
    with C.Cluster(env) as c:
        acked = {}
        round_no = 0
        for victim in (2, 3, 1):
            alive = [i for i in c.ids() if i != victim]
            round_no += 1
            w = _Writer(c, alive[0], env.key("bg%d" % round_no))
            w.start()
            try:
                time.sleep(0.5)
                c.kill(victim)          # SIGKILL while the writer runs
                time.sleep(1.0)
            finally:
                w.stop_ev.set()
                w.join(60)
            check(not w.errors, "a client of a live node saw the kill of node %d: %s"
                  % (victim, w.errors))
            check(len(w.acked) > 0, "the writer got nothing done")
            acked.update(w.acked)
            # Operations continue on the others: sets, RMWs, deletes.
            n = {i: c.connect(i, timeout=30) for i in alive}
            try:
                for j in range(20):
                    key = env.key("r%d:%d" % (round_no, j))
                    val = b"%d-%d" % (round_no, j)
                    n[alive[j % 2]].must_set(key, val)
                    acked[key] = val
                ka = env.key("appended")
                line = n[alive[0]].set(ka, b"%d;" % round_no, cmd=b"append")
                if line == b"NOT_STORED\r\n":
                    n[alive[0]].must_set(ka, b"%d;" % round_no)
                else:
                    eq(line, b"STORED\r\n", "append with node %d down" % victim)
                acked[ka] = b"".join(b"%d;" % r for r in range(1, round_no + 1))
                kc = env.key("count")
                if round_no == 1:
                    n[alive[1]].must_set(kc, b"100")
                eq(n[alive[1]].request(b"incr %s 1\r\n" % kc), b"%d\r\n" % (100 + round_no),
                   "incr with node %d down" % victim)
                acked[kc] = b"%d" % (100 + round_no)
                kd = env.key("r%d:0" % round_no)
                eq(n[alive[1]].request(b"delete %s\r\n" % kd), b"DELETED\r\n",
                   "delete with node %d down" % victim)
                acked[kd] = None
                for key, val in acked.items():
                    got = n[alive[1]].get(key)
                    eq(got and got[1], val, "%s on node %d while node %d is down"
                       % (key, alive[1], victim))
            finally:
                _close(n)
            c.start(victim)             # returns once it has recovered, peers up
            back = c.connect(victim, timeout=30)
            try:
                for key, val in acked.items():
                    got = back.get(key)
                    eq(got and got[1], val, "%s on restarted node %d" % (key, victim))
            finally:
                back.close()
            check("recovered" in c.log(victim), "node %d's log does not say it recovered:\n%s"
                  % (victim, c.log_tail(victim)))
        # Every node has been killed and restarted once: still nothing lost.
        n = _conns(c)
        try:
            keys = sorted(acked)
            for i in c.ids():
                for j in range(0, len(keys), 40):
                    part = keys[j:j + 40]
                    got = _values(n[i], b"get " + b" ".join(part) + b"\r\n")
                    for key in part:
                        eq(got.get(key, (0, None))[1], acked[key],
                           "%s on node %d after the rolling restart" % (key, i))
        finally:
            _close(n)


@suite.test
def majority_down_fails_clearly(env):
    with C.Cluster(env) as c:
        conn = c.connect(1, timeout=60)
        try:
            k = env.key("q")
            conn.must_set(k, b"before")
            c.pause(2)
            c.pause(3)
            for req in (b"get %s\r\n" % k, b"set %s 0 0 5\r\nafter\r\n" % k,
                        b"incr %s 1\r\n" % k):
                t0 = time.monotonic()
                line = conn.request(req)
                dt = time.monotonic() - t0
                env.log("%r with 2 of 3 nodes silent: %r after %.1fs" % (req[:20], line, dt))
                check(line.startswith(b"SERVER_ERROR") and b"quorum" in line,
                      "%r with 2 of 3 nodes silent: %r" % (req, line))
                check(dt <= ENGINE_TIMEOUT + ERROR_SLACK,
                      "%r took %.1fs to fail (engine time-out %.0fs)" % (req, dt, ENGINE_TIMEOUT))
            eq(conn.request(b"version\r\n")[:8], b"VERSION ", "the connection survives")
            c.resume(2)
            c.resume(3)

            def back():
                line = conn.request(b"get %s\r\n" % k)
                if line.startswith(b"SERVER_ERROR"):
                    return None
                m = re.match(rb"VALUE \S+ 0 (\d+)\r\n$", line)
                check(m, "get after resume: %r" % line)
                data = conn.read_exact(int(m.group(1)) + 2)[:-2]
                conn.expect(b"END\r\n")
                return data
            t0 = time.monotonic()
            got = C.wait_until(back, 30, "reads after the majority came back")
            env.log("reads work again %.1fs after the resume" % (time.monotonic() - t0))
            check(got in (b"before", b"after"), "value after resume: %r (the set whose outcome "
                  "was unknown may or may not have taken effect)" % got)
            conn.must_set(k, b"again")
            eq(c.connect(3).get(k), (0, b"again"), "a write after resume, read on node 3")

            c.kill(2)
            c.kill(3)
            t0 = time.monotonic()
            line = conn.request(b"get %s\r\n" % k)
            dt = time.monotonic() - t0
            env.log("get with 2 of 3 nodes killed: %r after %.1fs" % (line, dt))
            check(line.startswith(b"SERVER_ERROR") and b"quorum" in line,
                  "get with 2 of 3 nodes killed: %r" % line)
            check(dt <= ENGINE_TIMEOUT + ERROR_SLACK, "took %.1fs to fail" % dt)
            line = conn.set(k, b"lost")
            check(line.startswith(b"SERVER_ERROR"), "set with 2 of 3 nodes killed: %r" % line)
            eq(conn.request(b"version\r\n")[:8], b"VERSION ", "the connection survives")

            # Both come back with empty memory: they may never count toward a
            # quorum before they recovered from a majority, which no longer
            # exists, so the cluster refuses to answer rather than lose data.
            c.start(2, ready=False)
            c.start(3, ready=False)
            for i in (2, 3):
                other = c.connect(i, timeout=60)
                try:
                    t0 = time.monotonic()
                    line = other.request(b"get %s\r\n" % k)
                    env.log("get on restarted node %d: %r after %.1fs" % (i, line,
                                                                       time.monotonic() - t0))
                    check(line.startswith(b"SERVER_ERROR"),
                          "get on node %d, restarted empty after a majority crash: %r "
                          "(a miss or a value from empty replicas would lose writes)" % (i, line))
                finally:
                    other.close()
        finally:
            conn.close()


@suite.test
def status_lists_nodes(env):
    """The facts, not the layout: the header, the coordinator, one line per
    node with its id, pid, memcached address and state, the count."""
    with C.Cluster(env) as c:
        out = c.status()
        check(re.search(r"3 nodes, strong consistency", out), "status header:\n" + out)
        coord = re.escape(c.info["coordinator"]["address"])
        check(re.search(r"coordinator\s+%s,?\s+running" % coord, out),
              "status: coordinator line:\n" + out)
        for i in c.ids():
            nd = c.node(i)
            pat = r"(?m)^%d\s+%d\s+%s\s.*\b(running|ready)\b" % (i, nd["pid"],
                                                                re.escape(nd["memcached"]))
            check(re.search(pat, out), "status: line of node %d:\n%s" % (i, out))
        check("3 of 3 nodes running" in out, "status summary:\n" + out)
        # lag and each node's attested measurement; --json carries the same
        n1 = c.connect(1)
        try:
            n1.must_set(env.key("lag"), b"x")
        finally:
            n1.close()
        time.sleep(0.2)
        out = c.status()
        short_m = c.info["measurement"][:12]
        for i in c.ids():
            check(re.search(r"(?m)^%d\s.*\bready\b.*\s0ms\s+%s$" % (i, short_m), out),
                  "status: node %d with lag 0ms and measurement %s:\n%s" % (i, short_m, out))
        rc, js, err = c.run_cli("status", "--json")
        eq(rc, 0, "status --json: %s" % err)
        nodes = json.loads(js)["nodes"]
        eq([(nd["lag_ms"], nd["measurement"]) for nd in nodes],
           [(0, c.info["measurement"])] * 3, "status --json lag and measurements")
        c.kill(2)
        out = c.status()
        check(re.search(r"(?m)^2\s+(-|0)\s+%s\s.*\bstopped$" % re.escape(c.node(2)["memcached"]),
                        out), "status: node 2 stopped:\n" + out)
        check("2 of 3 nodes running" in out, "status summary with node 2 down:\n" + out)
        c.start(2)
        check("3 of 3 nodes running" in c.status(), "status after restart")


if __name__ == "__main__":
    C.arm_deadline(__file__)
    suite.main()
