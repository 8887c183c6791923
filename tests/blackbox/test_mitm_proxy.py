# timeout: 300
"""test_mitm_proxy.py - the peer mesh (src/repl/peer.c) under a man in the middle.

Two mesh nodes run as processes (`test_peer serve`, from the unit test
binary, until cloisterd's replication wiring exists), each dialling the
other through a MitmProxy (mitm.py):

    node 1 --dials--> proxy p12 --> node 2's listener
    node 2 --dials--> proxy p21 --> node 1's listener

Each node sends numbered, checksummed messages to the other all the time
and checks what its hooks receive; it prints its counters every 100 ms.
Phases: clean traffic; then, one at a time for a few seconds each, bit
flips, duplicated, reordered, replayed and dropped chunks, delays and
closed connections; the replay of a whole recorded session; restarts
with a newer and with an older epoch.  After every phase:

  - nothing forged or replayed was delivered: every delivered message is
    byte-identical to one the peer sent (bad == 0), in order and at most
    once (disorder == 0), and the numbering only skips where a new
    connection began (gaps <= hellos accepted);
  - nothing was delivered that was not sent (last received <= sent);
  - disruptive faults did drop connections, and they were re-established;
  - once the faults stop, progress resumes (new messages arrive both ways).

Run: /usr/bin/python3 tests/blackbox/test_mitm_proxy.py --build build [-v]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness                      # noqa: E402  (fail, check, Failure, _pdeathsig)
from harness import Failure, check, fail  # noqa: E402
from mitm import MitmProxy          # noqa: E402

RATE = 1000           # messages per second each way
FAULT_SECONDS = 2.0
PROGRESS_TIMEOUT = 25.0
PROGRESS_MSGS = 100


class Node:
    """One `test_peer serve` process and its latest counters."""

    def __init__(self, ctx, node_id, epoch, peers):
        self.ctx = ctx
        self.id = node_id
        self.epoch = epoch
        self.stderr_path = os.path.join(ctx.tmp, "node-%d-epoch-%d.stderr" % (node_id, epoch))
        args = [ctx.binary, "serve", "--id", str(node_id), "--epoch", str(epoch),
                "--listen", "127.0.0.1:0", "--certs", ctx.certs, "--rate", str(RATE)]
        for pid, port in sorted(peers.items()):
            args += ["--peer", "%d=127.0.0.1:%d" % (pid, port)]
        ctx.log("starting: " + " ".join(args))
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr, preexec_fn=harness._pdeathsig)
        ctx.nodes.append(self)
        self._lock = threading.Lock()
        self._status = None
        self.final = None
        self.port = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(15) or self.port is None:
            fail("node %d did not start; stderr:\n%s" % (node_id, self.stderr_tail()))

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            m = re.match(r"LISTENING port=(\d+)$", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()
                continue
            parts = line.split()
            if not parts or parts[0] not in ("STATUS", "FINAL"):
                continue
            st = {}
            for kv in parts[1:]:
                k, _, v = kv.partition("=")
                st[k] = int(v)
            with self._lock:
                if parts[0] == "FINAL":
                    self.final = st
                self._status = st
        self._ready.set()

    def status(self, fresh=True):
        """The latest counters; fresh: one printed after this call."""
        with self._lock:
            old = self._status
        if fresh:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with self._lock:
                    if self._status is not old and self._status is not None:
                        break
                if self.proc.poll() is not None:
                    fail("node %d exited (status %s); stderr:\n%s"
                         % (self.id, self.proc.returncode, self.stderr_tail()))
                time.sleep(0.02)
        with self._lock:
            if self._status is None:
                fail("node %d prints no status" % self.id)
            return dict(self._status)

    def stderr_tail(self, lines=30):
        try:
            with open(self.stderr_path, "rb") as f:
                text = f.read().decode(errors="replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "\n".join(text[-lines:]) if text else "(empty stderr)"

    def stop(self):
        """SIGTERM; fails unless it exits 0 (under ASan: no leak) with a
        FINAL line.  Returns the final counters."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            fail("node %d did not stop within 15 s of SIGTERM" % self.id)
        self._reader.join(5)
        self._stderr.close()
        if self in self.ctx.nodes:
            self.ctx.nodes.remove(self)
        if rc != 0:
            fail("node %d exited with status %s; stderr:\n%s" % (self.id, rc, self.stderr_tail()))
        check(self.final is not None, "node %d printed no FINAL line" % self.id)
        return self.final


class Ctx:
    def __init__(self, opts):
        self.opts = opts
        self.binary = os.path.join(opts.build, "tests", "test_peer")
        self.tmp = tempfile.mkdtemp(prefix="cloister-mitm-")
        self.certs = os.path.join(self.tmp, "certs")
        os.mkdir(self.certs)
        self.nodes = []
        self.n1 = self.n2 = None
        self.p12 = self.p21 = None

    def log(self, msg):
        if self.opts.verbose:
            print("    # " + msg, flush=True)

    def cleanup(self):
        for n in list(self.nodes):
            try:
                n.proc.kill()
                n.proc.wait()
            except OSError:
                pass
        for p in (self.p12, self.p21):
            if p:
                p.stop()
        if self.opts.keep:
            print("kept " + self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Checks

def invariants(ctx, what):
    """Nothing forged, replayed, reordered or unsent was delivered."""
    s1 = ctx.n1.status()
    s2 = ctx.n2.status()
    # Receivers first, senders after: a sender's count only grows.
    for rx, tx, a, b in ((s1, s2, 1, 2), (s2, s1, 2, 1)):
        check(rx["bad"] == 0, "%s: node %d delivered %d forged/corrupt messages"
              % (what, a, rx["bad"]))
        check(rx["disorder"] == 0, "%s: node %d delivered %d duplicated, reordered or stale "
              "messages" % (what, a, rx["disorder"]))
        check(rx["gaps.%d" % b] <= rx["hellos"],
              "%s: node %d saw %d gaps in node %d's numbering but only %d connections"
              % (what, a, rx["gaps.%d" % b], b, rx["hellos"]))
    t1 = ctx.n1.status()
    t2 = ctx.n2.status()
    for rx, tx, a, b in ((s1, t2, 1, 2), (s2, t1, 2, 1)):
        if rx["ep.%d" % b] == tx["epoch"]:
            check(rx["last.%d" % b] <= tx["sent.%d" % a],
                  "%s: node %d received message %d from node %d, which sent only %d"
                  % (what, a, rx["last.%d" % b], b, tx["sent.%d" % a]))
    return s1, s2


def progress(ctx, what, before1, before2, need=PROGRESS_MSGS):
    """Both directions deliver `need` more messages than in before*."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while True:
        s1 = ctx.n1.status()
        s2 = ctx.n2.status()
        g1 = s1["received"] - before1["received"]
        g2 = s2["received"] - before2["received"]
        if g1 >= need and g2 >= need:
            ctx.log("%s: progress %d / %d messages" % (what, g1, g2))
            return s1, s2
        if time.monotonic() > deadline:
            fail("%s: no progress after %.0f s: node 1 got %d, node 2 got %d new messages "
                 "(need %d); node 1 stderr:\n%s\nnode 2 stderr:\n%s"
                 % (what, PROGRESS_TIMEOUT, g1, g2, need, ctx.n1.stderr_tail(10),
                    ctx.n2.stderr_tail(10)))
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# Phases

def phase_setup(ctx):
    r = subprocess.run([ctx.binary, "pki", ctx.certs, "2"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    check(r.returncode == 0, "test_peer pki failed: %s" % r.stderr.decode(errors="replace"))
    ctx.p12 = MitmProxy(seed=ctx.opts.seed)
    ctx.p21 = MitmProxy(seed=ctx.opts.seed + 1)
    ctx.n1 = Node(ctx, 1, 1, {2: ctx.p12.port})
    ctx.p21.set_target("127.0.0.1", ctx.n1.port)
    ctx.n2 = Node(ctx, 2, 1, {1: ctx.p21.port})
    ctx.p12.set_target("127.0.0.1", ctx.n2.port)
    zero = {"received": 0}
    progress(ctx, "clean traffic", zero, zero, need=300)
    s1, s2 = invariants(ctx, "clean traffic")
    check(s1["up"] == 1 and s2["up"] == 1, "both nodes should see their peer up")
    check(s1["gaps.2"] == 0 and s2["gaps.1"] == 0, "no gaps without faults")


def fault_phase(ctx, name, disruptive, every=True, **faults):
    before1, before2 = invariants(ctx, "before " + name)
    st12, st21 = ctx.p12.stats(), ctx.p21.stats()
    ctx.p12.set_faults(**faults)
    ctx.p21.set_faults(**faults)
    time.sleep(FAULT_SECONDS)
    ctx.p12.clear_faults()
    ctx.p21.clear_faults()
    applied = {k: ctx.p12.stats()[k] - st12[k] + ctx.p21.stats()[k] - st21[k]
               for k in faults if k != "delay_max"}
    ctx.log("%s: proxies applied %s" % (name, applied))
    check((all if every else any)(v > 0 for v in applied.values()),
          "%s: the proxies did not apply the faults: %s" % (name, applied))
    mid1, mid2 = invariants(ctx, "during " + name)
    if disruptive:
        lost = (mid1["downs"] - before1["downs"]) + (mid2["downs"] - before2["downs"])
        broken = sum(mid[k] - before[k] for mid, before in ((mid1, before1), (mid2, before2))
                     for k in ("proto", "hs_fail", "refused_cert"))
        check(lost > 0, "%s: no connection was dropped" % name)
        ctx.log("%s: %d connections lost, %d failed set-ups/frames" % (name, lost, broken))
    s1, s2 = progress(ctx, "after " + name, mid1, mid2)
    invariants(ctx, "after " + name)
    if disruptive:
        check(s1["hellos"] > before1["hellos"] and s2["hellos"] > before2["hellos"],
              "%s: connections were not re-established both ways" % name)


def phase_flip(ctx):
    fault_phase(ctx, "bit flips", True, flip=0.3)


def phase_duplicate(ctx):
    fault_phase(ctx, "duplicated chunks", True, duplicate=0.3)


def phase_reorder(ctx):
    fault_phase(ctx, "reordered chunks", True, reorder=0.3)


def phase_replay(ctx):
    fault_phase(ctx, "replayed chunks", True, replay=0.3)


def phase_drop(ctx):
    fault_phase(ctx, "dropped chunks", True, drop=0.3)


def phase_close(ctx):
    fault_phase(ctx, "closed connections", True, close=0.05)


def phase_delay(ctx):
    # Delays keep the byte stream intact: traffic must go on meanwhile.
    before1 = ctx.n1.status()
    fault_phase(ctx, "delays", False, delay=0.5, delay_max=0.03)
    after1 = ctx.n1.status()
    check(after1["downs"] == before1["downs"], "delays alone should not drop a connection")


def phase_mixed(ctx):
    fault_phase(ctx, "all faults at once", True, every=False, flip=0.05, duplicate=0.05, reorder=0.05,
                replay=0.05, drop=0.05, delay=0.1, delay_max=0.02, close=0.01)


def phase_session_replay(ctx):
    """A recorded session of node 1 (hello, data) played again to node 2."""
    check(ctx.p12.recordings() > 0, "no recorded session")
    before2 = invariants(ctx, "before session replay")[1]
    results = [ctx.p12.replay_connection(i) for i in range(min(3, ctx.p12.recordings()))]
    ctx.log("session replays (sent, received, closed): %s" % results)
    check(all(r[2] for r in results), "node 2 kept a replayed session open: %s" % results)
    s2 = ctx.n2.status()
    check(s2["hs_fail"] + s2["refused_cert"] >= before2["hs_fail"] + before2["refused_cert"]
          + len(results), "node 2 did not refuse the replayed handshakes: %s -> %s"
          % (before2["hs_fail"], s2["hs_fail"]))
    check(s2["hellos"] == before2["hellos"], "a replayed session got its hello accepted")
    invariants(ctx, "after session replay")
    progress(ctx, "after session replay", ctx.n1.status(), s2)


def restart_node2(ctx, epoch):
    ctx.n2.stop()
    ctx.n2 = Node(ctx, 2, epoch, {1: ctx.p21.port})
    ctx.p12.set_target("127.0.0.1", ctx.n2.port)


def phase_restart_newer(ctx):
    before1 = invariants(ctx, "before restart")[0]
    restart_node2(ctx, 3)
    s1, _ = progress(ctx, "after restart with epoch 3", before1, {"received": 0})
    check(s1["ep.2"] == 3, "node 1 should now hear epoch 3 from node 2, has %d" % s1["ep.2"])
    invariants(ctx, "after restart")


def phase_restart_older(ctx):
    """Node 2 comes back as epoch 2 (< 3 seen): refused both ways."""
    restart_node2(ctx, 2)
    time.sleep(0.3)     # frames of epoch 3 still buffered at node 1 are delivered by now
    before1 = ctx.n1.status()
    deadline = time.monotonic() + 15
    while True:
        s1 = ctx.n1.status()
        if s1["refused_epoch"] >= before1["refused_epoch"] + 2:
            break
        if time.monotonic() > deadline:
            fail("node 1 did not refuse the older incarnation: %s" % s1)
        time.sleep(0.1)
    time.sleep(0.5)
    s1, s2 = ctx.n1.status(), ctx.n2.status()
    check(s1["ep.2"] == 3, "node 1 accepted messages of epoch %d after epoch 3" % s1["ep.2"])
    check(s1["up"] == 0 and s2["up"] == 0, "an old incarnation got a usable connection")
    check(s2["received"] == 0, "node 1 sent to the old incarnation")
    check(s1["received"] == before1["received"],
          "node 1 delivered messages of the old incarnation")
    invariants(ctx, "old incarnation")
    restart_node2(ctx, 4)
    progress(ctx, "after restart with epoch 4", ctx.n1.status(), {"received": 0})
    check(ctx.n1.status()["ep.2"] == 4, "node 1 should hear epoch 4")


def phase_shutdown(ctx):
    f1 = ctx.n1.stop()
    f2 = ctx.n2.stop()
    for f, a in ((f1, 1), (f2, 2)):
        check(f["bad"] == 0 and f["disorder"] == 0,
              "node %d final counters: bad %d, disorder %d" % (a, f["bad"], f["disorder"]))
    print("    node 1: received %d, %d connections accepted, %d lost, %d failed handshakes, "
          "%d frames refused; node 2: received %d"
          % (f1["received"], f1["hellos"], f1["downs"], f1["hs_fail"] + f1["refused_cert"],
             f1["proto"], f2["received"]), flush=True)


PHASES = [phase_setup, phase_flip, phase_duplicate, phase_reorder, phase_replay, phase_drop,
          phase_close, phase_delay, phase_mixed, phase_session_replay, phase_restart_newer,
          phase_restart_older, phase_shutdown]


def main():
    p = argparse.ArgumentParser(description="peer mesh under a man in the middle")
    p.add_argument("--build", default="build")
    p.add_argument("--mode", default="plain", help="ignored (the mesh is always TLS)")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("-k", dest="only", default=None, help="run phases whose name contains this "
                   "(setup and shutdown always run)")
    p.add_argument("-v", dest="verbose", action="store_true")
    p.add_argument("--keep", action="store_true")
    opts = p.parse_args()
    opts.build = os.path.abspath(opts.build)
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    ctx = Ctx(opts)
    print("test_mitm_proxy: build=%s seed=%d" % (opts.build, opts.seed), flush=True)
    passed = failed = 0
    try:
        if not os.access(ctx.binary, os.X_OK):
            print("FAIL: %s not found (build the test_peer target first)" % ctx.binary)
            failed += 1
            return
        for phase in PHASES:
            name = phase.__name__
            essential = phase in (phase_setup, phase_shutdown)
            if opts.only and opts.only not in name and not essential:
                continue
            t0 = time.monotonic()
            try:
                phase(ctx)
            except Failure as e:
                failed += 1
                print("FAIL %s (%.1fs)\n    %s" % (name, time.monotonic() - t0,
                                                  str(e).replace("\n", "\n    ")), flush=True)
                if essential:
                    break
                continue
            except Exception:
                failed += 1
                print("FAIL %s\n    %s" % (name, traceback.format_exc().rstrip()), flush=True)
                if essential:
                    break
                continue
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    finally:
        ctx.cleanup()
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
