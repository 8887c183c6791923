"""mitm.py - a man-in-the-middle TCP proxy for black-box tests.

The adversary of the brief's threat model (section 1) on the network:
MitmProxy listens on a free 127.0.0.1 port and forwards every connection
to a target, and the test switches faults on and off while traffic flows:

    drop       discard a chunk
    delay      hold a chunk for up to delay_max seconds (order kept)
    duplicate  send a chunk twice
    reorder    hold a chunk back and send it after the next one
    replay     send an earlier chunk of the same direction again
    flip       flip one random bit of a chunk
    close      close the connection (both sides)

Each fault has a probability per chunk (a chunk is what one recv()
returned, at most 64 KiB).  `direction` limits faults to "c2s" (client to
server), "s2c" or "both".  The client's bytes of every connection are
recorded (the first record_limit bytes), and replay_connection() plays a
recorded connection's client bytes to the target on a new connection -
the replay of a whole session.

Usage:
    with MitmProxy(seed=1) as p:
        p.set_target("127.0.0.1", port)      # may be set after start
        ... point the client at ("127.0.0.1", p.port) ...
        p.set_faults(flip=0.2, duplicate=0.1)
        p.clear_faults()
        p.close_all()
        p.replay_connection(0)
        p.stats()                            # counters

Standard library only; one thread per direction of each connection plus
the accept thread, all daemon threads, all stopped by stop().  Loopback
only.  Not a test itself (no test_ prefix), imported by tests.
"""

import random
import select
import socket
import threading
import time

CHUNK = 65536
HISTORY = 64            # earlier chunks kept per direction, for in-stream replay
HOLD_MAX = 0.05         # a chunk held for reordering goes out after this if no other comes

FAULTS = ("drop", "delay", "duplicate", "reorder", "replay", "flip", "close")


class _Conn:
    """One proxied connection: the client's socket and ours to the target."""

    def __init__(self, index, client, server):
        self.index = index
        self.client = client
        self.server = server
        self.closed = False
        self.lock = threading.Lock()

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class MitmProxy:
    def __init__(self, target=None, host="127.0.0.1", seed=0, record_limit=1 << 20):
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._target = target
        self._faults = dict.fromkeys(FAULTS, 0.0)
        self._delay_max = 0.05
        self._direction = "both"
        self._record_limit = record_limit
        self._recordings = []         # per connection: list of client->server chunks
        self._conns = {}
        self._threads = []
        self._stats = dict.fromkeys(("connections", "refused", "chunks", "bytes") + FAULTS, 0)
        self._stopping = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True,
                                          name="mitm-accept-%d" % self.port)
        self._accepter.start()

    # -- control ------------------------------------------------------------

    def set_target(self, host, port):
        with self._lock:
            self._target = (host, port)

    def set_faults(self, direction="both", delay_max=0.05, **probabilities):
        """Sets fault probabilities (0..1) by name; unnamed faults go to 0."""
        for name, p in probabilities.items():
            if name not in FAULTS:
                raise ValueError("unknown fault %r (known: %s)" % (name, ", ".join(FAULTS)))
            if not 0.0 <= p <= 1.0:
                raise ValueError("probability of %s out of range: %r" % (name, p))
        if direction not in ("both", "c2s", "s2c"):
            raise ValueError("direction must be both, c2s or s2c")
        with self._lock:
            self._faults = dict.fromkeys(FAULTS, 0.0)
            self._faults.update(probabilities)
            self._direction = direction
            self._delay_max = delay_max

    def clear_faults(self):
        self.set_faults()

    def close_all(self):
        """Closes every connection now open."""
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            c.close()
        with self._lock:
            self._stats["close"] += len(conns)

    def stats(self):
        with self._lock:
            s = dict(self._stats)
            s["open"] = len(self._conns)
            s["recorded"] = len(self._recordings)
        return s

    def recordings(self):
        """The number of connections whose client bytes were recorded."""
        with self._lock:
            return len(self._recordings)

    def replay_connection(self, index=0, timeout=5.0):
        """Opens a new connection to the target and sends the recorded
        client chunks of connection `index`, as they were chunked, reading
        whatever comes back.  Returns (bytes_sent, bytes_received,
        closed_by_target)."""
        with self._lock:
            chunks = list(self._recordings[index])
            target = self._target
        sent = received = 0
        closed = False
        s = socket.create_connection(target, timeout=timeout)
        try:
            s.settimeout(0.2)
            deadline = time.monotonic() + timeout
            for ch in chunks:
                try:
                    s.sendall(ch)
                    sent += len(ch)
                except OSError:
                    closed = True
                    break
                received, closed = self._drain(s, received, 0.02)
                if closed:
                    break
            while not closed and time.monotonic() < deadline:
                received, closed = self._drain(s, received, 0.2)
        finally:
            s.close()
        with self._lock:
            self._stats["replay"] += 1
        return sent, received, closed

    @staticmethod
    def _drain(s, received, wait):
        """Reads what is there within `wait` seconds: (received, closed)."""
        end = time.monotonic() + wait
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return received, False
            r, _, _ = select.select([s], [], [], left)
            if not r:
                return received, False
            try:
                data = s.recv(CHUNK)
            except (ConnectionError, OSError):
                return received, True
            if not data:
                return received, True
            received += len(data)

    def stop(self):
        with self._lock:
            self._stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        self.close_all()
        for t in [self._accepter] + self._threads:
            t.join(timeout=2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- forwarding ---------------------------------------------------------

    def _accept_loop(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return      # the listener was closed: stop()
            with self._lock:
                target = self._target
                stopping = self._stopping
            if stopping:
                client.close()
                return
            try:
                if target is None:
                    raise OSError("no target yet")
                server = socket.create_connection(target, timeout=2.0)
                server.settimeout(None)
            except OSError:
                client.close()
                with self._lock:
                    self._stats["refused"] += 1
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                index = len(self._recordings)
                self._recordings.append([])
                conn = _Conn(index, client, server)
                self._conns[index] = conn
                self._stats["connections"] += 1
                for src, dst, d in ((client, server, "c2s"), (server, client, "s2c")):
                    t = threading.Thread(target=self._pump, args=(conn, src, dst, d),
                                         daemon=True, name="mitm-%d-%s" % (index, d))
                    self._threads.append(t)
                    t.start()
                self._threads = [t for t in self._threads if t.is_alive()]

    def _decide(self, direction):
        """The faults to apply to one chunk (names), and the delay."""
        with self._lock:
            if self._direction not in ("both", direction):
                return set(), 0.0
            chosen = {f for f, p in self._faults.items() if p > 0 and self._rng.random() < p}
            delay = self._rng.uniform(0, self._delay_max) if "delay" in chosen else 0.0
            return chosen, delay

    def _count(self, name, n=1):
        with self._lock:
            self._stats[name] += n

    def _pump(self, conn, src, dst, direction):
        history = []
        held = None           # chunks held back for reordering
        try:
            while True:
                r, _, _ = select.select([src], [], [], HOLD_MAX if held else None)
                if not r:     # nothing came after the held chunk: let it go
                    for h in held:
                        dst.sendall(h)
                    held = None
                    continue
                data = src.recv(CHUNK)
                if not data:
                    break
                self._count("chunks")
                self._count("bytes", len(data))
                if direction == "c2s":
                    with self._lock:
                        rec = self._recordings[conn.index]
                        if sum(len(c) for c in rec) + len(data) <= self._record_limit:
                            rec.append(data)
                faults, delay = self._decide(direction)
                out = [data]
                if "close" in faults:
                    self._count("close")
                    break
                if "drop" in faults:
                    self._count("drop")
                    out = []
                if "flip" in faults and out:
                    b = bytearray(data)
                    with self._lock:
                        bit = self._rng.randrange(len(b) * 8)
                    b[bit // 8] ^= 1 << (bit % 8)
                    out = [bytes(b)]
                    self._count("flip")
                if "duplicate" in faults and out:
                    out = out + out[-1:]
                    self._count("duplicate")
                if "replay" in faults and history:
                    with self._lock:
                        old = history[self._rng.randrange(len(history))]
                    out = out + [old]
                    self._count("replay")
                if delay:
                    self._count("delay")
                    time.sleep(delay)
                history.append(data)
                if len(history) > HISTORY:
                    history.pop(0)
                if "reorder" in faults and out and held is None:
                    held = out          # goes out after the next chunk
                    self._count("reorder")
                    continue
                for ch in out:
                    dst.sendall(ch)
                if held:
                    for h in held:
                        dst.sendall(h)
                    held = None
            if held:
                for h in held:
                    dst.sendall(h)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()
            with self._lock:
                self._conns.pop(conn.index, None)
