# modes: plain tls
# timeout: 120
"""test_lincheck_single.py - concurrent histories recorded against one live
cloisterd must be linearizable; the recorder (lincheck.RecordingClient)
on the real protocol.

  - 4 client threads, each with its own connection, run get/gets/set/cas/
    delete/incr/add/append on 3 shared keys (1,500 ops each, at most 2 s;
    at full speed, so their requests overlap); the recorded history (cas
    both winning and losing) is linearizable, and the same history with
    one read made stale is not;
  - the recorder's failure paths, against a fake server: a request sent
    but never answered is recorded with an unknown outcome (and the client
    reconnects for the next one); a request that could not be sent (no
    server) is not recorded.

A failing history is kept as BUILD/lincheck-histories/<case>-<mode>.jsonl
(check it again with `lincheck.py FILE`).  The cluster fault tests use the
same recorder against several nodes.

Run: /usr/bin/python3 tests/blackbox/test_lincheck_single.py --build build [--mode tls]
"""

import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
import lincheck as L  # noqa: E402
from harness import check, eq, fail  # noqa: E402

suite = H.Suite("lincheck single node")

CLIENTS = 4
DURATION = 2.0          # seconds of load at most...
MAX_OPS = 1500          # ...and ops per client at most (a few thousand per key)


def _client_context(env):
    return env.certs.client_context() if env.tls else None


def _keep(env, name, history):
    """Saves a failing history under the build dir; returns its path."""
    d = os.path.join(env.opts.build, "lincheck-histories")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "%s-%s.jsonl" % (name, env.mode))
    L.save_history(history if isinstance(history, list) else history.ops(), path)
    return path


def _run_clients(env, server, keys, seconds):
    """CLIENTS threads issuing random ops on keys for `seconds`; returns the
    History.  Values are unique decimal numbers, so incr applies to most of
    them and a value names the write that made it."""
    hist = L.History()
    errors = []
    deadline = time.monotonic() + seconds
    ctx = _client_context(env)

    def worker(c):
        rng = random.Random("%d:%d" % (env.opts.seed, c))
        cl = L.RecordingClient(hist, c, [(server.host, server.port)], ctx, timeout=H.IO_TIMEOUT)
        tokens = {}             # key -> token from this client's last gets
        seq = 0
        try:
            while time.monotonic() < deadline and seq < MAX_OPS:
                key = rng.choice(keys)
                seq += 1
                value = "%d" % ((c + 1) * 10 ** 7 + seq)
                kind = rng.choice(("get", "get", "gets", "gets", "set", "set", "cas", "cas",
                                   "cas", "delete", "incr", "add", "append"))
                if kind == "cas" and key not in tokens:
                    kind = "gets"
                if kind == "get":
                    r = cl.get(key)
                elif kind == "gets":
                    r = cl.gets(key)
                    if isinstance(r, list):
                        tokens[key] = r[1]
                elif kind == "cas":
                    r = cl.cas(key, value, tokens[key])
                elif kind == "delete":
                    r = cl.delete(key)
                elif kind == "incr":
                    r = cl.incr(key, rng.randrange(1, 10))
                elif kind == "append":
                    r = cl.append(key, "%d" % rng.randrange(10))
                else:
                    r = getattr(cl, kind)(key, value)
                if r is L.OUTCOME_UNKNOWN or r is L.NOT_SENT:
                    errors.append("client %d: %s %s: no reply" % (c, kind, key))
                    return
        except Exception as e:      # noqa: BLE001 - reported by the case
            errors.append("client %d: %r" % (c, e))
        finally:
            cl.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail("clients failed (no faults were injected): " + "; ".join(errors[:4]))
    return hist


def _overlapping(ops):
    """How many ops overlap in time an op of another client."""
    ops = sorted(ops, key=lambda o: o.call)
    hit = set()
    for x, a in enumerate(ops):
        for b in ops[x + 1:]:
            if b.call > a.ret:
                break
            if b.client != a.client:
                hit.update((a.id, b.id))
    return len(hit)


def _stale_read(ops):
    """A get r and a value it certainly cannot return: the value of a set
    w1 that returned before another set w2 of the key began, where w2
    returned before r began.  Values of sets have 8 digits and are unique;
    appends make longer ones; an incr result is excluded explicitly.  So
    only w1 wrote that value.  Returns (r, value) or None."""
    sets = [o for o in ops if o.op == "set"]
    made = {str(o.result) for o in ops if o.op in ("incr", "decr")}
    for r in ops:
        if r.op != "get" or r.result is None:
            continue
        for w2 in sets:
            if w2.key != r.key or w2.ret >= r.call:
                continue
            for w1 in sets:
                if (w1.key == r.key and w1.ret < w2.call and w1.args[0] != r.result
                        and w1.args[0] not in made):
                    return r, w1.args[0]
    return None


@suite.test
def concurrent_history_is_linearizable(env):
    server = env.server()
    keys = [env.key("k%d" % i).decode() for i in range(3)]
    hist = _run_clients(env, server, keys, DURATION)
    ops = hist.ops()
    kinds = {}
    for o in ops:
        r = o.result
        k = (o.op, r if r in ("STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED",
                              "CLIENT_ERROR") else "value" if r is not None else "miss")
        kinds[k] = kinds.get(k, 0) + 1
    env.log("%d ops: %s" % (len(ops), sorted(kinds.items())))
    check(len(ops) >= 200, "only %d ops in %.0fs" % (len(ops), DURATION))
    check(all(o.ret is not None for o in ops), "every op answered (no faults)")
    overlapping = _overlapping(ops)
    env.log("%d of %d ops overlap another client's" % (overlapping, len(ops)))
    check(overlapping >= len(ops) // 10, "only %d of %d ops overlap another client's: "
          "too little concurrency to test anything" % (overlapping, len(ops)))
    for want in (("cas", "STORED"), ("cas", "EXISTS"), ("gets", "value"), ("incr", "value"),
                 ("set", "STORED"), ("delete", "DELETED")):
        check(kinds.get(want, 0) > 0,
              "history has no %s -> %s (ops: %s)" % (want + (sorted(kinds.items()),)))
    t0 = time.monotonic()
    res = L.check(hist, timeout=60)
    dt = time.monotonic() - t0
    print("    %d ops on %d keys, %d clients: %s in %.2fs"
          % (len(ops), len(keys), CLIENTS, res.outcome, dt))
    if not res.ok:
        fail("%s\nhistory kept in %s" % (res.explain(), _keep(env, "concurrent", hist)))

    # The same history with one read made stale must be rejected.
    found = _stale_read(ops)
    check(found is not None, "no read after two ordered sets: cannot build a stale history")
    r, old = found
    saved, r.result = r.result, old
    try:
        res = L.check(ops, timeout=60)
    finally:
        r.result = saved
    eq(res.outcome, L.VIOLATION, "verdict with %s made stale (%r)" % (L.describe(r), old))
    check("#%d " % r.id in res.explain(), "report names the stale read:\n" + res.explain())


@suite.test(modes=("plain",))
def recorder_failure_paths(env):
    """Against a fake server that accepts and reads but never answers: the
    op is recorded with an unknown outcome; against a port nobody listens
    on: nothing is recorded.  (Plain TCP only: the fake speaks no TLS.)"""
    hist = L.History()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(0.05)
    port = lsock.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(lsock.accept()[0])     # never answered
            except socket.timeout:
                pass
    t = threading.Thread(target=serve)
    t.start()
    try:
        cl = L.RecordingClient(hist, 7, [("127.0.0.1", port)], None, timeout=0.3)
        check(cl.set("k", "1") is L.OUTCOME_UNKNOWN, "unanswered set -> OUTCOME_UNKNOWN")
        check(cl.get("k") is L.OUTCOME_UNKNOWN, "unanswered get -> OUTCOME_UNKNOWN")
        eq([(o.op, o.ret) for o in hist.ops()], [("set", None), ("get", None)], "recorded ops")
        eq(len(accepted), 2, "connections (a new one after a lost reply)")
        check(L.check(hist).ok, "a history of lost replies is linearizable")
    finally:
        stop.set()
        t.join()
        lsock.close()
        for s in accepted:
            s.close()
    # A port nobody listens on: the request is never sent, never recorded.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        cl = L.RecordingClient(hist, 8, [("127.0.0.1", port)], None, timeout=0.3)
        check(cl.delete("k") is L.NOT_SENT, "no server -> NOT_SENT")
    eq(len(hist.ops()), 2, "ops recorded after a request that was not sent")


if __name__ == "__main__":
    suite.main()
