#!/usr/bin/python3
"""lincheck.py - a linearizability checker for histories of memcached-style
operations recorded by concurrent clients, with the recorder that makes
those histories.

Who uses it: the cluster fault tests (clients talk the memcached text
protocol to cloisterd nodes while nodes are killed and restarted) record a
History through RecordingClient and call check(); test_lincheck.py tests
the checker itself; test_lincheck_single.py records against one live
cloisterd.  Standard library only; runs under Debian's /usr/bin/python3.
CLI: `lincheck.py HISTORY.jsonl [--timeout S]` exits 0 (linearizable),
1 (not linearizable), 2 (unknown: time budget spent, or a bad history).

History model.  An operation is
    {client, op, key, args, result, call_time, return_time}
with times in integer nanoseconds (time.monotonic_ns()).  return_time None
means the client never learned the outcome (time-out, connection lost,
SERVER_ERROR): the operation may or may not have taken effect, at any
moment after its call.  As in Porcupine, such an operation is treated as
returning at +infinity with an unconstrained result; a read with an
unknown outcome constrains nothing and is dropped.  A failed operation that
certainly had no effect is simply not recorded (History.discard).

Supported operations (args -> results; a missing key reads as None):
    get                   []              -> value | None (miss)
    gets                  []              -> [value, cas_token] | None
    set                   [value]         -> "STORED"
    add                   [value]         -> "STORED" | "NOT_STORED"
    replace               [value]         -> "STORED" | "NOT_STORED"
    append, prepend       [value]         -> "STORED" | "NOT_STORED"
    cas                   [value, token]  -> "STORED" | "EXISTS" | "NOT_FOUND"
    delete                []              -> "DELETED" | "NOT_FOUND"
    incr, decr            [delta]         -> int | "NOT_FOUND" | "CLIENT_ERROR"
Values are str (bytes as latin-1); flags and expiry are not modelled (use
exptime 0); incr wraps at 2^64, decr floors at 0, both answer CLIENT_ERROR
for a value that is not a decimal number of at most 20 digits below 2^64,
and store the result without padding (cloisterd; memcached pads an in-place
decr with spaces - avoid decr when checking memcached).

CAS tokens.  The checker cannot know the token a write will produce, so
the state of a key is (value, token) where token is None ("not yet
learned") after every successful write.  A gets result fixes the token of
the current version.  Invariants the model relies on (memcached and
cloisterd guarantee them: the CAS id changes with every write and is never
reused):
  - every successful write (set, add, replace, append, prepend, cas, incr,
    decr; delete removes the version) creates a new version whose token
    differs from every token of the key's earlier versions;
  - a client only uses a token returned by an earlier gets on the same
    key, so that gets is linearized before the cas.  Hence cas succeeds
    iff the current version's token is known and equals the cas token;
    when the current token is not yet learned, the cas token belongs to an
    older version and the cas must answer EXISTS.
  - a gets that would learn a token already learned for another version
    (one returned by another linearized gets while a different version was
    current) is inconsistent: this catches stale reads that return an old
    value with its old token.  The set of learned tokens is a function of
    the set of linearized operations, so memoising on (set, state) stays
    exact.
check() rejects (ValueError) a history with a cas token that no gets on
the same key returned.

Algorithm.  Keys are independent registers, so the history is split by key
(P-compositionality: a history is linearizable iff each per-key
sub-history is) and each key is checked alone by Wing & Gong's search
with Lowe's memoisation, as Porcupine does: the call/return events sorted
by time form a doubly linked list; the search repeatedly linearizes a call
that precedes the first pending return (lifting its call and return out of
the list), backtracks when no candidate fits, and never revisits a
(linearized set, state) pair.  Events at equal times order calls before
returns, so touching operations count as concurrent (the lenient reading).
Operations with unknown outcomes stay out of the list: they are optional,
tried only when no completed operation fits, a lost set or delete is never
tried right after another lost operation (it would hide it), a node whose
lost operations are a superset of an explored node's is skipped, and a
first search allows one lost operation at a time (see check_key).  The
search stops at a deadline and answers "unknown", never hangs.  On a
violation the report names the longest linearizable prefix found, the
state after it, and every operation that could come next with the result
the model expected instead.

Cost.  Linear in the history when few operations overlap; 2,000 ops per
key with 8 clients take well under a second.  The worst case is
exponential, in the number of overlapping operations and above all in the
number of lost non-blind writes (incr, decr, append, prepend, add,
replace): many of those make the answer "unknown".  Fault tests should
prefer get/gets/set/cas/delete, for which 30% lost replies are still
cheap, and keep lost incr/append/... to a few percent.
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time

LINEARIZABLE = "linearizable"
VIOLATION = "not linearizable"
UNKNOWN = "unknown"

# Operation name -> number of args.
OP_ARITY = {"get": 0, "gets": 0, "delete": 0,
            "set": 1, "add": 1, "replace": 1, "append": 1, "prepend": 1,
            "cas": 2, "incr": 1, "decr": 1}
READS = ("get", "gets")
U64 = 1 << 64


# ---------------------------------------------------------------------------
# History: the operations and their recorder

class Op:
    """One operation.  Times are int nanoseconds; ret None = outcome unknown.
    id is the operation's index in its history (set by the History or by
    load_history), used only in reports."""

    __slots__ = ("id", "client", "op", "key", "args", "result", "call", "ret")

    def __init__(self, client, op, key, args=(), result=None, call=0, ret=None, id=-1):
        self.id = id
        self.client = client
        self.op = op
        self.key = key
        self.args = list(args)
        self.result = result
        self.call = call
        self.ret = ret

    def to_json(self):
        return {"client": self.client, "op": self.op, "key": self.key, "args": self.args,
                "result": self.result, "call_time": self.call, "return_time": self.ret}

    @classmethod
    def from_json(cls, d, id=-1):
        return cls(d["client"], d["op"], d["key"], d.get("args", []), d.get("result"),
                   d["call_time"], d.get("return_time"), id)

    def __repr__(self):
        return "Op(%s)" % describe(self)


class History:
    """A thread-safe recorder.  Each client thread brackets every request:

        op = h.begin(client, "cas", key, [value, token])   # before sending
        ...send, read the reply...
        h.end(op, "STORED")        # the reply was read
        h.unknown(op)              # sent, but no reply (time-out, EOF, SERVER_ERROR)
        h.discard(op)              # certainly not executed (e.g. never sent)

    begin() stamps call_time, end() stamps return_time, both with
    time.monotonic_ns(), so times are comparable across threads of one
    process.  An operation left open (neither ended nor discarded) counts
    as unknown: check the history once the clients have stopped.  ops()
    returns the operations recorded so far in begin order; save()/load()
    keep a history as JSON lines (one operation per line), the artifact a
    failing test leaves behind."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ops = []

    def begin(self, client, op, key, args=()):
        o = Op(client, op, key, args, None, 0, None)
        with self._lock:
            o.id = len(self._ops)
            self._ops.append(o)
            o.call = time.monotonic_ns()
        return o

    def end(self, o, result):
        t = time.monotonic_ns()
        o.result = result
        o.ret = t

    def unknown(self, o):
        o.ret = None
        o.result = None

    def discard(self, o):
        with self._lock:
            o.op = None             # dropped by ops()

    def ops(self):
        with self._lock:
            return [o for o in self._ops if o.op is not None]

    def __len__(self):
        return len(self.ops())

    def save(self, path):
        save_history(self.ops(), path)

    @staticmethod
    def load(path):
        return load_history(path)


def save_history(ops, path):
    """Writes ops as JSON lines (atomically: a temp file renamed over path)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for o in ops:
            f.write(json.dumps(o.to_json() if isinstance(o, Op) else o, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load_history(path):
    """Reads a JSON-lines history; returns a list of Op (ids = line order).
    Blank lines are skipped; a malformed line raises ValueError."""
    ops = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ops.append(Op.from_json(json.loads(line), len(ops)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError("%s:%d: not an operation: %s" % (path, n, e))
    return ops


def _as_ops(history):
    """Op objects from a History, Ops or dicts, numbered by position (the
    numbers reports show; also the line numbers of a saved history)."""
    if isinstance(history, History):
        history = history.ops()
    out = []
    for i, o in enumerate(history):
        if not isinstance(o, Op):
            o = Op.from_json(o)
        o.id = i
        out.append(o)
    return out


def _result_ok(o):
    """True if o's result is one its operation can give."""
    r = o.result
    if o.op == "get":
        return r is None or isinstance(r, str)
    if o.op == "gets":
        return r is None or (isinstance(r, (tuple, list)) and len(r) == 2 and isinstance(r[0], str)
                             and isinstance(r[1], (int, str)) and not isinstance(r[1], bool))
    if o.op in ("incr", "decr"):
        return ((isinstance(r, int) and not isinstance(r, bool) and 0 <= r < U64)
                or r in ("NOT_FOUND", "CLIENT_ERROR"))
    return r in {"set": ("STORED",), "cas": ("STORED", "EXISTS", "NOT_FOUND"),
                 "delete": ("DELETED", "NOT_FOUND")}.get(o.op, ("STORED", "NOT_STORED"))


def _validate(ops):
    """Raises ValueError on an operation the model cannot interpret."""
    for o in ops:
        what = "operation %s" % describe(o)
        if o.op not in OP_ARITY:
            raise ValueError("%s: unsupported op %r" % (what, o.op))
        if len(o.args) != OP_ARITY[o.op]:
            raise ValueError("%s: %s takes %d args" % (what, o.op, OP_ARITY[o.op]))
        if not isinstance(o.key, str) or (o.args and o.op not in ("incr", "decr")
                                          and not isinstance(o.args[0], str)):
            raise ValueError("%s: keys and values must be strings" % what)
        if o.op in ("incr", "decr") and not (isinstance(o.args[0], int) and 0 <= o.args[0] < U64):
            raise ValueError("%s: delta must be an integer in [0, 2^64)" % what)
        if o.op == "cas" and not isinstance(o.args[1], (int, str)):
            raise ValueError("%s: cas token must be an integer or a string" % what)
        if not isinstance(o.call, int) or (o.ret is not None and
                                           (not isinstance(o.ret, int) or o.ret < o.call)):
            raise ValueError("%s: times must be integers with call <= return" % what)
        if o.ret is not None and not _result_ok(o):
            raise ValueError("%s: impossible result %r" % (what, o.result))
    tokens = {}     # key -> tokens returned by completed gets
    for o in ops:
        if o.op == "gets" and o.ret is not None and o.result is not None:
            tokens.setdefault(o.key, set()).add(o.result[1])
    for o in ops:
        if o.op == "cas" and o.args[1] not in tokens.get(o.key, ()):
            raise ValueError("operation %s: cas token %r was not returned by any gets of key %r"
                             % (describe(o), o.args[1], o.key))


# ---------------------------------------------------------------------------
# The sequential specification of one key
#
# State: (value, token).  value None = the key is absent (token None then);
# token None with a value = the current version's token is not yet learned.
# step(state, op, learned) -> the state after op, or None if op's recorded
# result is impossible in `state`.  learned: the tokens returned by the
# gets operations linearized so far ({token: count}).  An op with an
# unknown outcome (ret None) accepts whatever result the model gives.

def _arith(value, op, delta):
    """incr/decr on a present value -> (result, new value string) or
    ("CLIENT_ERROR", None) if the value is not a number."""
    if not (value.isdigit() and value.isascii() and len(value) <= 20 and int(value) < U64):
        return "CLIENT_ERROR", None
    n = int(value)
    n = (n + delta) % U64 if op == "incr" else max(n - delta, 0)
    return n, str(n)


def step(state, o, learned):
    value, token = state
    kind, args, pending = o.op, o.args, o.ret is None
    r = o.result

    if kind == "get":
        return state if r == value else None
    if kind == "gets":
        if r is None or value is None:
            return state if r is None and value is None else None
        v, t = r
        if v != value:
            return None
        if token is None:
            return (value, t) if t not in learned else None
        return state if t == token else None

    # Writes: compute the model's result and next state.
    if kind == "set":
        want, nxt = "STORED", (args[0], None)
    elif kind == "add":
        want, nxt = ("STORED", (args[0], None)) if value is None else ("NOT_STORED", state)
    elif kind == "replace":
        want, nxt = ("NOT_STORED", state) if value is None else ("STORED", (args[0], None))
    elif kind in ("append", "prepend"):
        if value is None:
            want, nxt = "NOT_STORED", state
        else:
            new = value + args[0] if kind == "append" else args[0] + value
            want, nxt = "STORED", (new, None)
    elif kind == "cas":
        if value is None:
            want, nxt = "NOT_FOUND", state
        elif token is not None and token == args[1]:
            want, nxt = "STORED", (args[0], None)
        else:
            want, nxt = "EXISTS", state
    elif kind == "delete":
        want, nxt = ("NOT_FOUND", state) if value is None else ("DELETED", (None, None))
    elif kind in ("incr", "decr"):
        if value is None:
            want, nxt = "NOT_FOUND", state
        else:
            want, new = _arith(value, kind, args[0])
            nxt = state if new is None else (new, None)
    else:
        raise ValueError("unsupported op %r" % kind)
    return nxt if pending or r == want else None


def expected(state, o):
    """What the model would answer to o in state (for reports)."""
    value, token = state
    if o.op == "get":
        return value
    if o.op == "gets":
        if value is None:
            return None
        return [value, token if token is not None else "<any token not yet seen>"]
    probe = Op(o.client, o.op, o.key, o.args, None, o.call, None)
    for r in ("STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED", "CLIENT_ERROR"):
        probe.result, probe.ret = r, o.call
        if step(state, probe, {}) is not None:
            return r
    if o.op in ("incr", "decr"):
        return _arith(value, o.op, o.args[0])[0]
    return "?"


# ---------------------------------------------------------------------------
# The search for one key

class KeyResult:
    """The verdict for one key.  outcome: LINEARIZABLE, VIOLATION or UNKNOWN.
    For a violation: prefix (the longest linearizable sequence of ops the
    search found), state (after it) and frontier (the ops that could come
    next, each with the model's expected result); explain() renders them."""

    def __init__(self, key, outcome, ops, elapsed, visited):
        self.key = key
        self.outcome = outcome
        self.ops = ops
        self.elapsed = elapsed
        self.visited = visited      # distinct (set, state) pairs explored
        self.prefix = []
        self.state = (None, None)
        self.frontier = []          # [(op, expected result)]

    def explain(self, t0=None, tail=8):
        """A readable report; t0: the time origin (ns) for printed times."""
        t0 = t0 if t0 is not None else min((o.call for o in self.ops), default=0)
        head = "key %r: %s (%d ops, %.2fs, %d states)" % (
            self.key, self.outcome, len(self.ops), self.elapsed, self.visited)
        if self.outcome != VIOLATION:
            return head
        lines = [head,
                 "  longest linearizable prefix: %d of the %d completed ops (%d ops in all); "
                 "it ends:" % (sum(o.ret is not None for o in self.prefix),
                               sum(o.ret is not None for o in self.ops), len(self.prefix))]
        if len(self.prefix) > tail:
            lines.append("    ...")
        lines += ["    " + describe(o, t0) for o in self.prefix[-tail:]]
        lines.append("  state then: %s" % describe_state(self.state))
        lines.append("  one of these must come next, and none can (recorded result vs the "
                     "model's):")
        maybe = [(o, want) for o, want in self.frontier if o.ret is None]
        for o, want in self.frontier:
            if o.ret is not None:
                lines.append("    %s   (expected %r)" % (describe(o, t0), want))
        if maybe:
            lines.append("  ops with unknown outcomes that could also take effect here:")
            lines += ["    %s   (would answer %r)" % (describe(o, t0), want)
                      for o, want in maybe[:tail]]
            if len(maybe) > tail:
                lines.append("    ... and %d more" % (len(maybe) - tail))
        return "\n".join(lines)


def check_key(key, ops, deadline):
    """Checks the operations of one key; returns a KeyResult.  deadline:
    time.monotonic() value after which the answer is UNKNOWN.

    Ops with unknown outcomes may take effect at any time after their call,
    so every one of them is a candidate at every later step; trying all
    their combinations at each dead end is what makes a search slow.  So
    the first search lets at most one of them in between two completed
    ops.  A linearization it finds is a linearization; if it finds none
    and that limit cut no branch, none exists; otherwise the unlimited
    search decides."""
    t_start = time.monotonic()
    # Reads with an unknown outcome constrain nothing.
    ops = sorted((o for o in ops if not (o.ret is None and o.op in READS)), key=lambda o: o.call)
    visited = 0
    for max_chain in (1, None):
        outcome, n, best, cut = _search(ops, deadline, max_chain)
        visited += n
        if outcome != VIOLATION or not cut:
            break
    res = KeyResult(key, outcome, ops, time.monotonic() - t_start, visited)
    if outcome == VIOLATION:
        _fill_violation(res, ops, best)
    return res


def _search(ops, deadline, max_chain):
    """Wing & Gong's search over ops (one key, no reads with unknown
    outcomes), with at most max_chain unknown-outcome ops in a row (None:
    no limit).  Returns (outcome, nodes visited, the linearization with
    the most completed ops seen, whether max_chain cut a branch)."""
    n = len(ops)
    # Completed ops live in a doubly linked list of events: entry 0 is the
    # head, the call of op i is entry 1 + 2i and its return 2 + 2i; calls
    # sort before returns at equal times.  Ops with unknown outcomes have
    # no return and gate nothing: they stay out of the list, in `pending`
    # (sorted by call time), and are tried only when no completed op can
    # go next.
    events = []
    for i, o in enumerate(ops):
        if o.ret is not None:
            events += [(o.call, 0, 1 + 2 * i), (o.ret, 1, 2 + 2 * i)]
    events.sort()
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    last = 0
    for _, _, e in events:
        nxt[last], prv[e] = e, last
        last = e
    pending = sorted((i for i, o in enumerate(ops) if o.ret is None), key=lambda i: ops[i].call)
    pcall = [ops[i].call for i in pending]
    npend = len(pending)
    plifted = [False] * len(pending)
    # A pending set or delete right after another pending op would hide
    # that op's effect: the same state is reached by leaving the other op
    # out (tried from the same parent), so that order is never tried.
    pblind = [ops[i].op in ("set", "delete") for i in pending]
    chainable = not all(pblind)

    # Bit of op i in `done` (completed ops, numbered in call order) or in
    # `pend` (the others, numbered by slot).
    bits = [0] * n
    rank = 0
    for i, o in enumerate(ops):
        if o.ret is not None:
            bits[i], rank = 1 << rank, rank + 1
    for slot, i in enumerate(pending):
        bits[i] = 1 << slot
    learns = [o.result[1] if o.op == "gets" and o.result is not None else None for o in ops]
    learned = {}
    # Memo: (done, state) -> the `pend` sets already explored with them;
    # done/pend: bitmasks of the linearized completed/unknown-outcome ops.
    # A node is redundant if an explored node has the same done and state
    # and a subset of its pend: unknown-outcome ops are optional and gate
    # nothing, so having used fewer of them leaves at least the same
    # choices.  With no unknown outcomes this is Lowe's (set, state) cache.
    cache = {}
    visited = 0
    # The search path, as a linked list of frames so that a snapshot is
    # O(1): (op, list entry, pending slot or -1, state before, limit,
    # chain before, parent frame); None when empty.
    top = None
    state = (None, None)
    done = pend = 0
    chain = 0           # unknown-outcome ops linearized since the last completed one
    cut = False
    best, best_done = None, 0       # frame ending the path with the most completed ops
    n_done = 0
    iterations = 0

    # j < 0: walking the list from e, trying calls until the first return.
    # j >= 0: trying pending[j:] called before `limit`, the time of that
    # first return (the earliest return not yet linearized).
    e, j, limit = nxt[0], -1, 0
    while True:
        iterations += 1
        if iterations & 4095 == 0 and time.monotonic() > deadline:
            return UNKNOWN, visited, _path(best), cut
        if j < 0:
            if e == -1:
                # Every completed op is linearized; the pending ones left
                # need not have happened.
                return LINEARIZABLE, visited, _path(best), cut
            if not e & 1:
                j, limit = 0, ops[(e >> 1) - 1].ret
                continue
            i = e >> 1
        else:
            if chain == max_chain:
                # (Conservatively: a pending op may have been a candidate.)
                cut = cut or (chainable and pcall[0] <= limit)
                j = npend
            after_pending = chain > 0
            while j < npend and pcall[j] <= limit and (
                    plifted[j] or (pblind[j] and after_pending)):
                j += 1
            if j == npend or pcall[j] > limit:
                # No op can go next: backtrack.
                if top is None:
                    return VIOLATION, visited, _path(best), cut
                i, e, j, state, limit, chain, top = top
                if j < 0:
                    done ^= bits[i]
                    n_done -= 1
                    # Put the return back, then the call (reverse order of lifting).
                    r = e + 1
                    nxt[prv[r]] = r
                    if nxt[r] != -1:
                        prv[nxt[r]] = r
                    nxt[prv[e]] = e
                    prv[nxt[e]] = e             # nxt[e] is at least its return
                    e = nxt[e]
                else:
                    pend ^= bits[i]
                    plifted[j] = False
                    j += 1
                t = learns[i]
                if t is not None:
                    learned[t] -= 1
                    if not learned[t]:
                        del learned[t]
                continue
            i = pending[j]

        new = step(state, ops[i], learned)
        if new is not None:
            d, p = (done | bits[i], pend) if j < 0 else (done, pend | bits[i])
            # Cache key: done as (k, done >> k), k its count of trailing
            # ones.  The k ops called first are all linearized; the rest
            # of the set spans the ops called while op k ran (op k is not
            # linearized, so nothing called after it returned is), which
            # keeps keys small however long the history.
            k = ((d + 1) & ~d).bit_length() - 1
            ck = (k, d >> k, new)
            seen = cache.get(ck)
            if seen is None:
                cache[ck] = [p]
            elif any(q & ~p == 0 for q in seen):
                new = None
            else:
                seen[:] = [q for q in seen if p & ~q] + [p]
        if new is None:
            if j < 0:
                e = nxt[e]
            else:
                j += 1
            continue

        # Linearize op i next.
        visited += 1
        top = (i, e, j, state, limit, chain, top)
        t = learns[i]
        if t is not None:
            learned[t] = learned.get(t, 0) + 1
        state, done, pend = new, d, p
        if j < 0:
            n_done += 1
            if n_done > best_done:
                best, best_done = top, n_done
            chain = 0
            # Lift the call and its return out of the list.
            r = e + 1
            nxt[prv[e]] = nxt[e]
            prv[nxt[e]] = prv[e]
            nxt[prv[r]] = nxt[r]
            if nxt[r] != -1:
                prv[nxt[r]] = prv[r]
        else:
            chain += 1
            plifted[j] = True
        e, j = nxt[0], -1


def _path(frame):
    """The op indices of a search path, first to last."""
    out = []
    while frame is not None:
        out.append(frame[0])
        frame = frame[-1]
    out.reverse()
    return out


def _fill_violation(res, ops, best):
    """Replays the best prefix and lists the ops that could follow it:
    those called before the earliest return among the remaining completed
    ops (one of the completed ones must be linearized next)."""
    state, learned = (None, None), {}
    for i in best:
        state = step(state, ops[i], learned)
        if ops[i].op == "gets" and ops[i].result is not None:
            t = ops[i].result[1]
            learned[t] = learned.get(t, 0) + 1
    done = set(best)
    rest = [o for i, o in enumerate(ops) if i not in done]
    first_ret = min((o.ret for o in rest if o.ret is not None), default=None)
    res.prefix = [ops[i] for i in best]
    res.state = state
    res.frontier = [(o, expected(state, o)) for o in sorted(rest, key=lambda o: o.call)
                    if first_ret is None or o.call <= first_ret]


# ---------------------------------------------------------------------------
# The checker

class CheckResult:
    """outcome: LINEARIZABLE if every key is, VIOLATION if some key is not,
    else UNKNOWN.  keys: {key: KeyResult}.  ok: outcome == LINEARIZABLE."""

    def __init__(self, keys, t0):
        self.keys = keys
        self.t0 = t0
        outcomes = [k.outcome for k in keys.values()]
        self.outcome = (VIOLATION if VIOLATION in outcomes else
                        UNKNOWN if UNKNOWN in outcomes else LINEARIZABLE)

    @property
    def ok(self):
        return self.outcome == LINEARIZABLE

    def explain(self):
        """One line per key, the full report for each key not linearizable."""
        bad = [k for k in self.keys.values() if k.outcome != LINEARIZABLE]
        n_ops = sum(len(k.ops) for k in self.keys.values())
        lines = ["%s: %d keys, %d ops" % (self.outcome, len(self.keys), n_ops)]
        lines += [k.explain(self.t0) for k in bad]
        return "\n".join(lines)


def check(history, timeout=60.0):
    """Checks a history (a History, or a list of Op or of operation dicts;
    Op.id is set to each op's position).  All keys share the `timeout`
    seconds.  Raises ValueError on a malformed history (see _validate)."""
    ops = _as_ops(history)
    _validate(ops)
    deadline = time.monotonic() + timeout
    by_key = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    t0 = min((o.call for o in ops), default=0)
    return CheckResult({k: check_key(k, v, deadline) for k, v in by_key.items()}, t0)


# ---------------------------------------------------------------------------
# Reports

def describe(o, t0=0):
    """'#12 c3 cas("v5", 17) -> STORED @[1.204, 1.210]ms' (times from t0)."""
    args = ", ".join(repr(a) for a in o.args)
    if o.ret is None:
        res, span = "?", "[%.3f, inf)" % ((o.call - t0) / 1e6)
    else:
        res = repr(list(o.result) if isinstance(o.result, tuple) else o.result)
        span = "[%.3f, %.3f]" % ((o.call - t0) / 1e6, (o.ret - t0) / 1e6)
    return "#%s c%s %s(%s) -> %s @%sms" % (o.id, o.client, o.op, args, res, span)


def describe_state(state):
    value, token = state
    if value is None:
        return "absent"
    if isinstance(token, tuple):
        return "value %r, cas token %r or a fresh one" % (value, token[1])
    return "value %r, cas token %s" % (value, "not yet seen" if token is None else repr(token))


# ---------------------------------------------------------------------------
# Recording memcached client

class RecordingClient:
    """A memcached text-protocol client (plain TCP or TLS) that records
    every request in a History.  One per thread; not thread-safe itself.

    Each method returns the reply in the history's result vocabulary, or
    OUTCOME_UNKNOWN when the request was sent but no complete reply came
    (time-out, connection lost, SERVER_ERROR, an unparsable reply); the
    operation is then recorded with an unknown outcome and the connection
    is dropped.  A request that could not be sent because no connection
    could be made is not recorded (it certainly had no effect) and returns
    NOT_SENT.  The next request reconnects, trying `addrs` in turn.  Keys
    and values are str (sent as latin-1); exptime and flags are 0."""

    def __init__(self, history, client, addrs, ssl_context=None, timeout=2.0):
        self.history = history
        self.client = client
        self.addrs = list(addrs)            # [(host, port)]
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._next_addr = 0
        self._sock = None
        self._buf = b""

    # -- connection ---------------------------------------------------------
    def _connect(self):
        host, port = self.addrs[self._next_addr % len(self.addrs)]
        self._next_addr += 1
        s = socket.create_connection((host, port), timeout=self.timeout)
        try:
            if self.ssl_context is not None:
                s = self.ssl_context.wrap_socket(s, server_hostname=host)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            s.close()
            raise
        self._sock, self._buf = s, b""

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock, self._buf = None, b""

    def _line(self):
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 2:]
                return line
            self._more()

    def _exact(self, n):
        while len(self._buf) < n:
            self._more()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _more(self):
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self._buf += chunk

    # -- one recorded request -------------------------------------------------
    def _request(self, op, key, args, data, parse):
        """Sends data, parses the reply with parse() and records it."""
        if self._sock is None:
            try:
                self._connect()
            except (OSError, ssl.SSLError):
                self.close()
                return NOT_SENT
        rec = self.history.begin(self.client, op, key, args)
        try:
            self._sock.sendall(data)
            result = parse()
        except (OSError, ssl.SSLError, ValueError, _ReplyUnknown):
            # socket.timeout is an OSError; ValueError: an unparsable reply.
            self.history.unknown(rec)
            self.close()
            return OUTCOME_UNKNOWN
        self.history.end(rec, result)
        return result

    def _status(self, allowed):
        line = self._line()
        if line.startswith(b"SERVER_ERROR"):
            raise _ReplyUnknown()
        s = line.decode("latin-1")
        if s not in allowed:
            raise ValueError("unexpected reply %r" % s)
        return s

    def _values(self):
        """VALUE lines up to END -> [(value, cas or None)]."""
        items = []
        while True:
            line = self._line()
            if line == b"END":
                return items
            if line.startswith(b"SERVER_ERROR"):
                raise _ReplyUnknown()
            parts = line.split()
            if len(parts) not in (4, 5) or parts[0] != b"VALUE":
                raise ValueError("unexpected reply %r" % line)
            data = self._exact(int(parts[3]) + 2)
            if data[-2:] != b"\r\n":
                raise ValueError("bad data block")
            cas = int(parts[4]) if len(parts) == 5 else None
            items.append((data[:-2].decode("latin-1"), cas))

    # -- commands -----------------------------------------------------------------
    def get(self, key):
        def parse():
            items = self._values()
            return items[0][0] if items else None
        return self._request("get", key, [], b"get %s\r\n" % key.encode("latin-1"), parse)

    def gets(self, key):
        def parse():
            items = self._values()
            return [items[0][0], items[0][1]] if items else None
        return self._request("gets", key, [], b"gets %s\r\n" % key.encode("latin-1"), parse)

    def _store(self, cmd, key, value, cas=None):
        v = value.encode("latin-1")
        line = b"%s %s 0 0 %d" % (cmd.encode(), key.encode("latin-1"), len(v))
        if cas is not None:
            line += b" %d" % cas
        args = [value] if cas is None else [value, cas]
        allowed = ("STORED", "EXISTS", "NOT_FOUND") if cas is not None else ("STORED", "NOT_STORED")
        return self._request(cmd, key, args, line + b"\r\n" + v + b"\r\n",
                             lambda: self._status(allowed))

    def set(self, key, value):
        return self._store("set", key, value)

    def add(self, key, value):
        return self._store("add", key, value)

    def replace(self, key, value):
        return self._store("replace", key, value)

    def append(self, key, value):
        return self._store("append", key, value)

    def prepend(self, key, value):
        return self._store("prepend", key, value)

    def cas(self, key, value, token):
        return self._store("cas", key, value, token)

    def delete(self, key):
        return self._request("delete", key, [], b"delete %s\r\n" % key.encode("latin-1"),
                             lambda: self._status(("DELETED", "NOT_FOUND")))

    def _arith(self, cmd, key, delta):
        def parse():
            line = self._line()
            if line.isdigit():
                return int(line)
            if line == b"NOT_FOUND":
                return "NOT_FOUND"
            if line.startswith(b"CLIENT_ERROR"):
                return "CLIENT_ERROR"       # non-numeric value: a definite answer
            if line.startswith(b"SERVER_ERROR"):
                raise _ReplyUnknown()
            raise ValueError("unexpected reply %r" % line)
        return self._request(cmd, key, [delta], b"%s %s %d\r\n"
                             % (cmd.encode(), key.encode("latin-1"), delta), parse)

    def incr(self, key, delta=1):
        return self._arith("incr", key, delta)

    def decr(self, key, delta=1):
        return self._arith("decr", key, delta)


class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


OUTCOME_UNKNOWN = _Marker("OUTCOME_UNKNOWN")   # sent; the reply never came
NOT_SENT = _Marker("NOT_SENT")                 # no connection; not recorded


class _ReplyUnknown(Exception):
    """A reply that does not say whether the request took effect."""


# ---------------------------------------------------------------------------
# CLI

def main(argv=None):
    p = argparse.ArgumentParser(description="Check a JSON-lines history for linearizability. "
                                "Exit 0: linearizable, 1: not, 2: unknown or bad history.")
    p.add_argument("history", help="JSON lines, one operation per line")
    p.add_argument("--timeout", type=float, default=60.0, help="time budget in seconds")
    p.add_argument("-v", dest="verbose", action="store_true", help="a line for every key")
    opts = p.parse_args(argv)
    try:
        res = check(load_history(opts.history), opts.timeout)
    except (OSError, ValueError) as e:
        print("lincheck: %s" % e, file=sys.stderr)
        return 2
    print(res.explain())
    if opts.verbose:
        for k in res.keys.values():
            if k.outcome == LINEARIZABLE:
                print(k.explain(res.t0))
    return {LINEARIZABLE: 0, VIOLATION: 1}.get(res.outcome, 2)


if __name__ == "__main__":
    sys.exit(main())
