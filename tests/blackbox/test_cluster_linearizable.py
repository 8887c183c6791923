# timeout: 600
"""test_cluster_linearizable.py - a strong cluster stays linearizable and
loses no acknowledged write while minority nodes are SIGKILLed and
restarted under load.

  - 3 nodes (`cloister up`): 5 recording clients (cluster.LoadClient:
    lincheck.RecordingClient over TLS), spread over the nodes and failing
    over to the next node when theirs dies, run get/gets/set/cas/delete/
    incr on 4 shared keys and sets of a private key each, for 20 s, while
    a fault thread SIGKILLs a random node, keeps it down a moment,
    restarts it and waits until it has recovered (never two down at
    once).  Then the faults stop and every client must succeed again
    within seconds; a final round reads every key on every node (each
    private key must hold its client's last acknowledged value, or a later
    one whose reply was lost) and writes and reads back a fresh value per
    client.  The whole history must be linearizable (lincheck), and the
    same history with one final read made stale must not be;
  - 5 nodes, two killed at once and restarted together (shorter).

Values are unique per write (client, sequence number), so a stale read
cannot pass for a fresh one.  A failing history is kept as
BUILD/lincheck-histories/cluster-<case>.jsonl (`lincheck.py FILE` checks
it again and prints the report).

Run: /usr/bin/python3 tests/blackbox/test_cluster_linearizable.py --build build [-v] [-k five]
"""

import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402
import harness as H  # noqa: E402
import lincheck as L  # noqa: E402
from harness import check  # noqa: E402

CLIENTS = 5
PROGRESS_TIMEOUT = 15.0  # after the faults stop, every client must succeed within this

suite = H.Suite("cluster linearizability")


class Faults(threading.Thread):
    """Kills `at_once` random nodes (SIGKILL), keeps them down a moment,
    restarts them and waits until they have recovered; repeats."""

    def __init__(self, env, cl, at_once):
        super().__init__(daemon=True, name="faults")
        self.env, self.cl, self.at_once = env, cl, at_once
        self.rng = random.Random("%d:faults" % env.opts.seed)
        self.stop_ev = threading.Event()
        self.rounds = 0
        self.errors = []

    def run(self):
        try:
            while not self.stop_ev.wait(self.rng.uniform(0.8, 2.0)):
                victims = self.rng.sample(self.cl.ids(), self.at_once)
                for v in victims:
                    self.cl.kill(v)
                self.env.log("killed %s" % victims)
                time.sleep(self.rng.uniform(0.3, 2.0))
                for v in victims:
                    self.cl.start(v, ready=False)
                for v in victims:
                    self.cl.wait_ready(v)
                self.rounds += 1
                self.env.log("restarted %s: recovered" % victims)
        except BaseException as e:  # noqa: BLE001 - reported by the case
            self.errors.append("fault thread: %s" % e)


def run_under_faults(env, nodes, at_once, duration, name):
    with C.Cluster(env, nodes=nodes) as cl:
        hist = L.History()
        t0 = time.monotonic()
        clients = C.start_load(env, cl, hist, CLIENTS)
        faults = Faults(env, cl, at_once)
        try:
            time.sleep(1.0)
            faults.start()
            time.sleep(duration)
        finally:
            faults.stop_ev.set()
            if faults.is_alive():
                faults.join(C.READY_TIMEOUT * 2 + 60)
        check(not faults.is_alive(), "the fault thread did not finish")
        check(not faults.errors, "; ".join(faults.errors))
        check(faults.rounds >= 2, "only %d kill rounds in %.0f s" % (faults.rounds, duration))
        healed = C.wait_progress(clients, time.monotonic(), PROGRESS_TIMEOUT)
        time.sleep(0.5)
        C.stop_load(clients)
        C.final_round(cl, hist, clients)
        ops = hist.ops()
        print("    %d nodes, %d killed at a time: %d kill rounds, %d ops (%d with lost replies, "
              "%d not sent) in %.0f s; every client succeeding again %.1f s after the last "
              "restart" % (nodes, at_once, faults.rounds, len(ops),
                           sum(1 for o in ops if o.ret is None),
                           sum(x.not_sent for x in clients), time.monotonic() - t0, healed))
        check(len(ops) >= 500, "only %d operations: too little load to test anything" % len(ops))
        mix = C.op_mix(ops)
        env.log("ops: %s" % sorted(mix.items()))
        for want in (("cas", "STORED"), ("cas", "EXISTS"), ("incr", "value"),
                     ("delete", "DELETED"), ("gets", "value")):
            check(mix.get(want),
                  "the history has no %s -> %s: %s" % (want + (sorted(mix.items()),)))
        C.check_linearizable(env, hist, clients, name)


@suite.test
def three_nodes_one_killed_at_a_time(env):
    run_under_faults(env, 3, 1, 20.0, "3-nodes")


@suite.test
def five_nodes_two_killed_at_once(env):
    run_under_faults(env, 5, 2, 12.0, "5-nodes")


if __name__ == "__main__":
    C.arm_deadline(__file__)
    suite.main()
