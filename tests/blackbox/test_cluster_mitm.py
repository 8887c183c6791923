# timeout: 600
"""test_cluster_mitm.py - a strong 3-node cluster whose peer traffic
crosses a man in the middle (mitm.MitmProxy): nothing forged, replayed or
mangled is ever accepted, no client ever reads a wrong value, and
progress resumes once the faults stop.

The cluster is started by hand (cluster.ManualCluster: coordinator,
`cloister attest`, nodes), each node listening on its real --peer port
and advertising a proxy in front of it (--peer-advertise), so every peer
connection dialled to node i crosses proxies[i].  Clients talk to the
nodes' memcached ports directly (TLS, recorded by lincheck).

Phases, each a few seconds under load (5 recording clients: get, gets,
set, cas, delete on shared keys, sets of a private key each), faults on
every proxy in both directions: bit flips, dropped chunks, duplicated
chunks, reordered chunks, replayed earlier chunks, delays, closed
connections, then all of them at once.  After each phase:
  - the faults stop and every client succeeds again within
    PROGRESS_TIMEOUT seconds;
  - every node still runs; a phase that mangled the TLS stream (flip,
    drop, duplicate, reorder, replay, when the proxy applied it) shows in
    the nodes' logs as peer connections closed and set up again.
Then a recorded peer session is replayed whole to a node's peer port (it
must be refused: the node logs it, stays up and serves), the final round
checks that no acknowledged write was lost, the whole history must be
linearizable (values are unique per write, so a forged or stale value
cannot pass), and every node exits 0 on SIGTERM with no sanitizer report.

Also: refused_rmw_on_a_lagging_node_keeps_the_cas_id, a deterministic
case of what the phases above hit by chance (an add or cas that changes
nothing, run on a node that missed the last set, re-proposes the value
under a new version: the value and its CAS id stay); and the
--peer-advertise flag's usage rules.

Run: /usr/bin/python3 tests/blackbox/test_cluster_mitm.py --build build [-v]
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402
import harness as H  # noqa: E402
import lincheck as L  # noqa: E402
from harness import check, eq  # noqa: E402

CLIENTS = 5
PHASE_SECONDS = 3.0
PROGRESS_TIMEOUT = 20.0
MIX = ("get", "get", "gets", "gets", "set", "set", "cas", "cas", "delete")

# (name, faults for MitmProxy.set_faults, whether it breaks the TLS stream)
PHASES = [
    ("flip", dict(flip=0.05), True),
    ("drop", dict(drop=0.05), True),
    ("duplicate", dict(duplicate=0.05), True),
    ("reorder", dict(reorder=0.05), True),
    ("replay", dict(replay=0.05), True),
    ("delay", dict(delay=0.3, delay_max=0.2), False),
    ("close", dict(close=0.02), False),
    ("everything", dict(flip=0.01, drop=0.01, duplicate=0.01, reorder=0.01, replay=0.01,
                        delay=0.05, close=0.005, delay_max=0.1), True),
]
MANGLING = ("flip", "drop", "duplicate", "reorder", "replay")

suite = H.Suite("cluster under a man in the middle")

CLOSED = re.compile(r"\[peer\] node \d+: connection (?:to|from) .*closed|"
                    r"\[peer\] node \d+: connection to node \d+ .*: ")


def peer_closures(cl):
    """Peer connection failures the nodes logged so far (all nodes)."""
    return sum(len(CLOSED.findall(cl.log(i))) for i in cl.ids())


def proxy_stats(cl):
    total = {}
    for p in cl.proxies.values():
        for k, v in p.stats().items():
            total[k] = total.get(k, 0) + v
    return total


@suite.test
def faults_on_every_peer_link(env):
    with C.ManualCluster(env, nodes=3, proxies=True, seed=env.opts.seed) as cl:
        for i in cl.ids():
            check(cl.proxies[i].stats()["connections"] >= 2,
                  "node %d's proxy carried %d connections: the peers do not dial through it"
                  % (i, cl.proxies[i].stats()["connections"]))
        hist = L.History()
        clients = C.start_load(env, cl, hist, CLIENTS, mix=MIX)
        report = []
        try:
            time.sleep(1.0)
            C.wait_progress(clients, time.monotonic(), PROGRESS_TIMEOUT)
            for name, faults, mangles in PHASES:
                before, closures = proxy_stats(cl), peer_closures(cl)
                lost_before = sum(x.unknown for x in clients)
                delay_max = faults.pop("delay_max", 0.05)
                for p in cl.proxies.values():
                    p.set_faults(delay_max=delay_max, **faults)
                time.sleep(PHASE_SECONDS)
                for p in cl.proxies.values():
                    p.clear_faults()
                healed = C.wait_progress(clients, time.monotonic(), PROGRESS_TIMEOUT)
                after = proxy_stats(cl)
                applied = {f: after[f] - before[f] for f in faults if f in after}
                for i in cl.ids():
                    check(cl.exit_status(i) is None, "node %d died during the %s phase "
                          "(status %s)\n%s" % (i, name, cl.exit_status(i), cl.log_tail(i)))
                closed = peer_closures(cl) - closures
                if mangles and any(applied.get(f) for f in MANGLING):
                    check(closed > 0, "the %s phase mangled the peer streams (%s) but no node "
                          "logged a refused or closed connection" % (name, applied))
                report.append("%s: %s applied, %d peer connections refused/closed, %d lost "
                              "replies, progress %.1f s after" % (
                                  name, applied, closed,
                                  sum(x.unknown for x in clients) - lost_before, healed))
                env.log(report[-1])
        finally:
            for p in cl.proxies.values():
                p.clear_faults()
            C.stop_load(clients)
        for line in report:
            print("    " + line)

        # A whole recorded peer session, replayed to the node behind the proxy.
        p = cl.proxies[2]
        closures = peer_closures(cl)
        sent, received, closed_by_node = p.replay_connection(0)
        check(sent > 0, "the proxy recorded nothing to replay")
        check(closed_by_node, "node 2 kept a replayed peer session open (%d bytes sent, %d "
              "received)" % (sent, received))
        check(cl.exit_status(2) is None, "node 2 died of a replayed session")
        C.wait_until(lambda: peer_closures(cl) > closures, 10,
                     "node 2 logging the refused replayed session")

        C.final_round(cl, hist, clients)
        mix = C.op_mix(hist.ops())
        env.log("ops: %s" % sorted(mix.items()))
        print("    %d ops, %d with lost replies" % (len(hist.ops()),
                                                   sum(1 for o in hist.ops() if o.ret is None)))
        C.check_linearizable(env, hist, clients, "mitm")


@suite.test
def refused_rmw_on_a_lagging_node_keeps_the_cas_id(env):
    """A deterministic case of what the phases above can hit by chance:
    node 3 misses a set (its proxy refuses every connection), then a
    read-modify-write that changes nothing (add of a present key, cas
    with a stale CAS id) runs on node 3 and settles the value under a new
    version.  The value and its CAS id must not change: a cas with the id
    from before the refused operation succeeds."""
    with C.ManualCluster(env, nodes=3, proxies=True, seed=env.opts.seed) as cl:
        n1, n3 = cl.connect(1), cl.connect(3)
        try:
            for j, refused in enumerate((b"add %s 0 0 2\r\nzz\r\n", b"cas %s 0 0 2 1\r\nzz\r\n")):
                k = env.key("y%d" % j)
                n1.must_set(k, b"v1")
                _, _, cas_v1 = n1.gets(k)
                cl.proxies[3].set_faults(close=1.0)
                cl.proxies[3].close_all()
                time.sleep(0.3)
                n1.must_set(k, b"v2")              # nodes 1 and 2 only
                _, v, cas = n1.gets(k)
                cl.proxies[3].clear_faults()
                C.wait_until(lambda: all(cl.stats(i)["repl_peers_up"] == "2" for i in cl.ids()),
                             20, "peer links up again")
                line = n3.request(refused % k)
                check(line in (b"NOT_STORED\r\n", b"EXISTS\r\n"), "%r: %r" % (refused, line))
                got = n1.gets(k)
                eq(got[1], b"v2", "the value after %r on node 3" % (refused % k).split(b"\r\n")[0])
                eq(got[2], cas, "v2's CAS id after %r on node 3" % (refused % k).split(b"\r\n")[0])
                eq(n3.gets(k)[2], cas, "v2's CAS id read through node 3")
                eq(n3.request(b"cas %s 0 0 2 %d\r\nxx\r\n" % (k, cas_v1)), b"EXISTS\r\n",
                   "cas with the id of the overwritten v1")
                eq(n1.request(b"cas %s 0 0 2 %d\r\nv3\r\n" % (k, cas)), b"STORED\r\n",
                   "cas with v2's id, from before the refused operation")
                eq(n3.get(k), (0, b"v3"), "the cas, read through node 3")
                _, _, fresh = n1.gets(k)
                eq(n1.request(b"cas %s 0 0 2 %d\r\nv4\r\n" % (k, fresh)), b"STORED\r\n",
                   "cas with the id of a fresh gets")
                eq(n3.get(k), (0, b"v4"), "the last cas, read through node 3")
        finally:
            n1.close()
            n3.close()


@suite.test
def peer_advertise_flag(env):
    """--peer-advertise (the peer address reported to the coordinator,
    here a proxy's) is documented and only makes sense with --join."""
    rc, out, _ = env.run_daemon(["--help"])
    eq(rc, 0, "cloisterd --help")
    check(re.search(r"--peer-advertise HOST:PORT", out), "--help does not mention --peer-advertise")
    for args, word in ((["--peer-advertise", "127.0.0.1:7201"], "--join"),
                       (["--coordinator", "--manifest", "m.json", "--peer-advertise",
                         "127.0.0.1:7201"], "--peer-advertise"),
                       (["--join", "127.0.0.1:1", "--node-id", "1", "--peer", "127.0.0.1:2",
                         "--peer-advertise", "nohost"], "--peer-advertise")):
        rc, _, err = env.run_daemon(args)
        eq(rc, 2, "cloisterd %s (stderr: %s)" % (" ".join(args), err.strip()))
        check(word in err, "cloisterd %s: stderr does not mention %s: %s" % (args, word, err))


if __name__ == "__main__":
    C.arm_deadline(__file__)
    suite.main()
