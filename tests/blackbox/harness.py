"""harness.py - shared machinery for the black-box tests of cloisterd.

Every tests/blackbox/test_*.py builds a Suite, registers its cases with
@suite.test and calls suite.main().  ctest runs each file as
    /usr/bin/python3 test_x.py --build BUILD_DIR [--mode plain|tls]
and the harness starts a fresh server on a free loopback port, hands each
case an Env (servers, connections, certificates, a seeded RNG), prints one
line per case and a final "N passed, N failed", and exits non-zero if any
case failed.

--server memcached runs the same cases against Debian's memcached 1.6.18
(the behaviour cloisterd must match); cases marked cloister_only (tamper,
Cloister's stats fields, its command-line flags) are skipped there.

Invariants:
  - every server this process starts is stopped (SIGTERM, then SIGKILL)
    at the end of the case that started it, at exit, and - through
    PR_SET_PDEATHSIG - even if this process is killed;
  - cloisterd is expected to exit 0 on SIGTERM (under ASan a leak or an
    error report makes it exit non-zero, which fails the case);
  - loopback only; standard library only (pymemcache is imported by the
    tests that use it, not here).
"""

import argparse
import atexit
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

IO_TIMEOUT = 15.0        # seconds a single reply may take (ASan is slow)
START_TIMEOUT = 30.0     # seconds until a server must be listening
STOP_TIMEOUT = 10.0      # seconds between SIGTERM and exit

_live_servers = []       # every Server started and not yet stopped


class Failure(Exception):
    """A failed expectation in a test case."""


def fail(msg):
    raise Failure(msg)


def short(x, limit=200):
    """repr() of x, cut in the middle when long."""
    r = repr(x)
    if len(r) <= limit:
        return r
    size = " (%d bytes)" % len(x) if isinstance(x, (bytes, bytearray)) else ""
    return "%s ...%s... %s" % (r[:limit // 2], size, r[-limit // 2:])


def check(cond, msg):
    if not cond:
        fail(msg)


def eq(got, want, what="value"):
    """Fails unless got == want, showing both (bytes shortened)."""
    if got != want:
        fail("%s: expected %s, got %s" % (what, short(want, 400), short(got, 400)))


# ---------------------------------------------------------------------------
# Certificates

class Certs:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, a
    client certificate from the same CA, and a client certificate from an
    unrelated CA (must be refused when the server requires client certs)."""

    def __init__(self, directory):
        self.dir = directory
        p = lambda name: os.path.join(directory, name)
        self.ca, self.ca_key = p("ca.crt"), p("ca.key")
        self.server, self.server_key = p("server.crt"), p("server.key")
        self.client, self.client_key = p("client.crt"), p("client.key")
        self.rogue_ca, self.rogue_ca_key = p("rogue-ca.crt"), p("rogue-ca.key")
        self.rogue_client, self.rogue_client_key = p("rogue-client.crt"), p("rogue-client.key")
        self._make_ca(self.ca, self.ca_key, "cloister-test-ca")
        self._make_ca(self.rogue_ca, self.rogue_ca_key, "rogue-ca")
        self._make_leaf(self.server, self.server_key, "localhost", self.ca, self.ca_key,
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                        "extendedKeyUsage=serverAuth\n")
        self._make_leaf(self.client, self.client_key, "test-client", self.ca, self.ca_key,
                        "extendedKeyUsage=clientAuth\n")
        self._make_leaf(self.rogue_client, self.rogue_client_key, "rogue-client",
                        self.rogue_ca, self.rogue_ca_key, "extendedKeyUsage=clientAuth\n")

    @staticmethod
    def _openssl(*args):
        r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr.decode(errors="replace")))

    def _make_ca(self, crt, key, cn):
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=" + cn,
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _make_leaf(self, crt, key, cn, ca, ca_key, extensions):
        csr, ext = crt + ".csr", crt + ".ext"
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + extensions)
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        self._openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                      "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)

    def client_context(self, cert=None):
        """TLS 1.3 client context verifying against the test CA.  cert:
        None, "client" (signed by the test CA) or "rogue" (another CA)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(self.ca)
        if cert == "client":
            ctx.load_cert_chain(self.client, self.client_key)
        elif cert == "rogue":
            ctx.load_cert_chain(self.rogue_client, self.rogue_client_key)
        return ctx


# ---------------------------------------------------------------------------
# Connections

class Conn:
    """One client connection (plain TCP or TLS) with exact-byte helpers."""

    def __init__(self, sock, label):
        self.sock = sock
        self.label = label
        self.buf = b""
        sock.settimeout(IO_TIMEOUT)

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout=None):
        """Reads more bytes into buf.  Returns False on EOF."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
            chunk = b""
        finally:
            if timeout is not None:
                self.sock.settimeout(IO_TIMEOUT)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n, what="reply"):
        while len(self.buf) < n:
            try:
                more = self._fill()
            except socket.timeout:
                fail("%s: timed out after %.0fs waiting for %d bytes, have %s"
                     % (what, IO_TIMEOUT, n, short(self.buf)))
            if not more:
                fail("%s: connection closed after %s (wanted %d bytes)" % (what, short(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_line(self, what="reply"):
        """One line including its \\r\\n."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out, self.buf = self.buf[:i + 2], self.buf[i + 2:]
                return out
            try:
                more = self._fill()
            except socket.timeout:
                fail("%s: timed out waiting for a line, have %s" % (what, short(self.buf)))
            if not more:
                fail("%s: connection closed, have %s" % (what, short(self.buf)))

    def expect(self, want, what=None):
        """Reads exactly len(want) bytes and compares them byte for byte;
        fails as soon as the bytes received differ (no waiting for more)."""
        what = what or ("reply to %s" % self.label)
        while len(self.buf) < len(want) and want.startswith(self.buf):
            try:
                more = self._fill()
            except socket.timeout:
                fail("%s: timed out after %.0fs waiting for %s, have %s"
                     % (what, IO_TIMEOUT, short(want), short(self.buf)))
            if not more:
                fail("%s: connection closed; expected %s, have %s" % (what, short(want), short(self.buf)))
        got = self.buf[:len(want)]
        if got != want:
            # Show a little of what follows, to make the mismatch readable.
            try:
                self._fill(timeout=0.05)
            except (socket.timeout, ssl.SSLError, OSError):
                pass
            fail("%s: expected %s, got %s (then %s)"
                 % (what, short(want), short(got), short(self.buf[len(want):len(want) + 120])))
        self.buf = self.buf[len(want):]

    def call(self, request, want, what=None):
        """Sends request and expects exactly the bytes want back."""
        self.send(request)
        self.expect(want, what or ("reply to %s" % short(request, 80)))

    def request(self, request):
        """Sends request and returns the first reply line."""
        self.send(request)
        return self.read_line("reply to %s" % short(request, 80))

    def read_values(self, what="retrieval"):
        """Reads VALUE blocks up to END; returns [(key, flags, data, cas|None)]."""
        items = []
        while True:
            line = self.read_line(what)
            if line == b"END\r\n":
                return items
            m = re.match(rb"VALUE (\S+) (\d+) (\d+)(?: (\d+))?\r\n$", line)
            if not m:
                fail("%s: bad line %s" % (what, short(line)))
            data = self.read_exact(int(m.group(3)) + 2, what)
            if data[-2:] != b"\r\n":
                fail("%s: data block not terminated by \\r\\n: %s" % (what, short(data)))
            cas = int(m.group(4)) if m.group(4) is not None else None
            items.append((m.group(1), int(m.group(2)), data[:-2], cas))

    # Small conveniences over the text protocol.
    def set(self, key, value, flags=0, exptime=0, cmd=b"set"):
        """Stores and returns the reply line (e.g. b"STORED\\r\\n")."""
        self.send(b"%s %s %d %d %d\r\n%s\r\n" % (cmd, key, flags, exptime, len(value), value))
        return self.read_line("reply to %s %s" % (cmd.decode(), short(key, 60)))

    def must_set(self, key, value, flags=0, exptime=0):
        eq(self.set(key, value, flags, exptime), b"STORED\r\n", "set %s" % short(key, 60))

    def get(self, key):
        """(flags, value) or None; fails on anything but a well-formed reply."""
        self.send(b"get " + key + b"\r\n")
        items = self.read_values("get %s" % short(key, 60))
        if not items:
            return None
        check(len(items) == 1 and items[0][0] == key, "get %s returned %r" % (key, items))
        return items[0][1], items[0][2]

    def gets(self, key):
        """(flags, value, cas) or None."""
        self.send(b"gets " + key + b"\r\n")
        items = self.read_values("gets %s" % short(key, 60))
        if not items:
            return None
        check(len(items) == 1 and items[0][0] == key and items[0][3] is not None,
              "gets %s returned %r" % (key, items))
        return items[0][1], items[0][2], items[0][3]

    def stats(self, arg=b""):
        """Parses a stats reply into {name: value-as-str}; checks its shape."""
        self.send(b"stats" + (b" " + arg if arg else b"") + b"\r\n")
        out = {}
        while True:
            line = self.read_line("stats")
            if line == b"END\r\n":
                return out
            m = re.match(rb"STAT (\S+) (\S[^\r\n]*)\r\n$", line)
            if not m:
                fail("stats: malformed line %s" % short(line))
            out[m.group(1).decode()] = m.group(2).decode()

    def sync(self):
        """Round trip with a command whose reply is fixed (mn -> MN)."""
        self.call(b"mn\r\n", b"MN\r\n", "sync (mn)")

    def wait_closed(self, timeout=IO_TIMEOUT):
        """True if the peer closes within timeout.  Bytes received before
        the close stay in self.buf."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                if not self._fill(timeout=left):
                    return True
            except socket.timeout:
                return False
            except (ssl.SSLError, ConnectionError, OSError):
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Servers

def _pdeathsig():
    """preexec_fn: the child gets SIGKILL if this (parent) process dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count):
    """count distinct free loopback ports, bound together and released.

    They are drawn at random from below the kernel's ephemeral range: a
    port the kernel picks for bind(0) may be handed to someone's outgoing
    connection (or to a test running in parallel) before our server
    listens on it.  The window between release and listen remains."""
    low, base = _ephemeral_low(), 20000
    rng = random.SystemRandom()
    socks = []
    try:
        attempts = 0
        while len(socks) < count:
            s = socket.socket()
            port = 0
            if low > base + 1000 and attempts < 64 * count:
                port = rng.randrange(base, low)
            attempts += 1
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                if port == 0:
                    raise
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _free_port():
    return free_ports(1)[0]


class Server:
    """A running cloisterd or memcached on 127.0.0.1.

    Options use cloisterd's names and are translated for memcached:
    memory (MB), max_value (bytes), threads, evict ("lru"|"none"; the
    default for both servers here is storage semantics), arena_file,
    tls (bool), tls_ca (require client certificates), config (a path,
    cloisterd only), extra (raw extra arguments)."""

    def __init__(self, env, tls=None, memory=None, max_value=None, threads=None,
                 evict=None, arena_file=None, tls_ca=False, config=None, extra=(),
                 minimal=False):
        self.env = env
        self.kind = env.opts.server
        self.tls = env.tls if tls is None else tls
        self.tls_ca = tls_ca
        self.host = "127.0.0.1"
        self.port = None
        self.http_port = None   # cloisterd's HTTP gateway (from the ready file)
        self.proc = None
        self.stopped = False
        self.stderr_path = os.path.join(env.tmp, "server-%d.stderr" % env.next_id())
        self.args = self._args(memory, max_value, threads, evict, arena_file, tls_ca,
                               config, list(extra), minimal)

    def _args(self, memory, max_value, threads, evict, arena_file, tls_ca, config, extra,
              minimal):
        c = self.env.certs if self.tls else None      # made on first use only
        if self.kind == "memcached":
            self.port = _free_port()
            a = ["memcached", "-l", self.host, "-p", str(self.port), "-U", "0", "-c", "4096"]
            if os.geteuid() == 0:
                a += ["-u", "root"]     # memcached refuses to run as root otherwise
            if memory is not None:
                a += ["-m", str(memory)]
            if max_value is not None:
                # -I also bounds memcached's slab chunk size, which must not exceed it.
                a += ["-I", str(max_value), "-o", "slab_chunk_max=%d" % (max_value // 2)]
            if threads is not None:
                a += ["-t", str(threads)]
            if evict != "lru":
                a += ["-M"]
            if self.tls:
                o = "ssl_chain_cert=%s,ssl_key=%s" % (c.server, c.server_key)
                if tls_ca:
                    o += ",ssl_ca_cert=%s,ssl_verify_mode=2" % c.ca
                a += ["-Z", "-o", o]
            return a + extra
        self.ready_file = os.path.join(self.env.tmp, "ready-%d.json" % self.env.next_id())
        a = [self.env.cloisterd, "--ready-file", self.ready_file]
        if not minimal:         # minimal: the rest comes from config/extra
            a += ["--listen", "127.0.0.1:0"]
            if self.tls:
                a += ["--tls-cert", c.server, "--tls-key", c.server_key]
                if tls_ca:
                    a += ["--tls-ca", c.ca]
            else:
                a += ["--plaintext"]
        for flag, v in (("--memory", memory), ("--max-value", max_value),
                        ("--threads", threads), ("--evict", evict),
                        ("--arena-file", arena_file), ("--config", config)):
            if v is not None:
                a += [flag, str(v)]
        # The HTTP gateway on a free port, and one state directory (compile
        # cache, platform key) for every server of this file, unless the
        # case chooses its own.
        if "--http" not in extra:
            a += ["--http", "127.0.0.1:0"]
        if "--state-dir" not in extra:
            a += ["--state-dir", self.env.state_dir]
        return a + extra

    def start(self):
        self.env.log("starting: " + " ".join(self.args))
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.stderr_file, stderr=self.stderr_file,
                                     preexec_fn=_pdeathsig)
        _live_servers.append(self)
        try:
            if self.kind == "memcached":
                self._wait_port()
            else:
                self._wait_ready_file()
        except BaseException:
            self.stop(check=False)
            raise
        return self

    def _wait_ready_file(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                fail("cloisterd exited with status %s before it was ready; stderr:\n%s"
                     % (self.proc.returncode, self.stderr_tail()))
            if os.path.exists(self.ready_file):
                try:
                    with open(self.ready_file) as f:
                        info = json.load(f)
                    break
                except ValueError as e:
                    fail("ready file is not complete JSON (must be written atomically): %s" % e)
            if time.monotonic() > deadline:
                fail("cloisterd not ready after %.0fs; stderr:\n%s" % (START_TIMEOUT, self.stderr_tail()))
            time.sleep(0.01)
        check(isinstance(info, dict), "ready file is not a JSON object: %r" % info)
        eq(info.get("pid"), self.proc.pid, "ready file pid")
        eq(info.get("tls"), bool(self.tls), "ready file tls")
        m = re.match(r"127\.0\.0\.1:(\d+)$", str(info.get("memcached")))
        check(m and int(m.group(1)) > 0, "ready file memcached address: %r" % info.get("memcached"))
        self.port = int(m.group(1))
        if "http" in info:
            m = re.match(r"127\.0\.0\.1:(\d+)$", str(info.get("http")))
            check(m and int(m.group(1)) > 0, "ready file http address: %r" % info.get("http"))
            self.http_port = int(m.group(1))

    def _wait_port(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                fail("memcached exited with status %s; stderr:\n%s"
                     % (self.proc.returncode, self.stderr_tail()))
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    fail("memcached not listening after %.0fs" % START_TIMEOUT)
                time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def raw_socket(self):
        """A connected TCP socket with no TLS, whatever the server mode."""
        return socket.create_connection((self.host, self.port), timeout=IO_TIMEOUT)

    def connect(self, cert=None, tls=None, label=None):
        """A Conn in the server's mode (TLS 1.3 verified against the test
        CA when the server serves TLS).  cert: None/"client"/"rogue"."""
        use_tls = self.tls if tls is None else tls
        sock = self.raw_socket()
        if use_tls:
            try:
                sock = self.env.certs.client_context(cert).wrap_socket(
                    sock, server_hostname="127.0.0.1")
            except BaseException:
                sock.close()
                raise
        return Conn(sock, label or ("%s:%d" % (self.host, self.port)))

    def stderr_tail(self, lines=40):
        try:
            with open(self.stderr_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no stderr)"
        text = data.decode(errors="replace").splitlines()
        return "\n".join(text[-lines:]) if text else "(empty stderr)"

    def stop(self, check=True, sig=signal.SIGTERM):
        """Stops the server; with check, fails unless it was still running
        and exits 0 within STOP_TIMEOUT of SIGTERM.  Returns the exit status."""
        if self.proc is None or self.stopped:
            return self.proc and self.proc.returncode
        self.stopped = True
        if self in _live_servers:
            _live_servers.remove(self)
        was_alive = self.proc.poll() is None
        if was_alive:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        t0 = time.monotonic()
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
            elapsed = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.stderr_file.close()
            if check:
                fail("%s (pid %d) still running %.0fs after signal %d; killed. stderr:\n%s"
                     % (self.kind, self.proc.pid, STOP_TIMEOUT, sig, self.stderr_tail()))
            return None
        self.stderr_file.close()
        if check:
            if not was_alive:
                fail("%s (pid %d) had died (status %s) before it was stopped; stderr:\n%s"
                     % (self.kind, self.proc.pid, rc, self.stderr_tail()))
            if rc != 0:
                fail("%s exited with status %s on signal %d; stderr:\n%s"
                     % (self.kind, rc, sig, self.stderr_tail()))
        self.env.log("%s pid %d stopped (status %s, %.2fs)" % (self.kind, self.proc.pid, rc, elapsed))
        return rc


@atexit.register
def _stop_all():
    for s in list(_live_servers):
        try:
            s.stop(check=False)
        except Exception:
            pass


def _on_signal(signum, frame):
    sys.exit(128 + signum)      # runs atexit handlers


# ---------------------------------------------------------------------------
# Test environment and runner

class Env:
    """What a test case gets: options, certificates, a temp dir, a seeded
    RNG, the file's shared server and servers of its own."""

    def __init__(self, opts, server_options=None):
        self.opts = opts
        self.server_options = server_options or {}
        self.mode = opts.mode
        self.tls = opts.mode == "tls"
        self.tmp = tempfile.mkdtemp(prefix="cloister-bb-")
        self.state_dir = os.path.join(self.tmp, "state")   # cloisterd --state-dir
        self.cloisterd = os.path.join(opts.build, "cloisterd")
        self.rng = random.Random(opts.seed)
        self._ids = 0
        self._shared = None
        self._case_servers = []
        self._certs = None

    @property
    def memcached(self):
        return self.opts.server == "memcached"

    @property
    def certs(self):
        if self._certs is None:
            d = os.path.join(self.tmp, "certs")
            os.mkdir(d)
            self._certs = Certs(d)
        return self._certs

    def next_id(self):
        self._ids += 1
        return self._ids

    def log(self, msg):
        if self.opts.verbose:
            print("    # " + msg, flush=True)

    def server(self):
        """The file's shared default server (started on first use)."""
        if self._shared is None or not self._shared.alive():
            if self._shared is not None:
                s, self._shared = self._shared, None
                s.stop(check=True)      # reports how it died
            self._shared = Server(self, **self.server_options).start()
        return self._shared

    def start_server(self, **kw):
        """A server of the case's own, stopped (and checked) when the case ends."""
        s = Server(self, **kw)
        self._case_servers.append(s)
        return s.start()

    def run_daemon(self, args, timeout=20):
        """Runs cloisterd with args to completion: (status, stdout, stderr)."""
        r = subprocess.run([self.cloisterd] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, preexec_fn=_pdeathsig)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def key(self, name):
        """A key unique to this process and case, so cases never collide."""
        return ("%s:%s" % (self._case, name)).encode()

    def _end_case(self):
        errors = []
        for s in self._case_servers:
            try:
                s.stop(check=True)
            except Failure as e:
                errors.append(str(e))
        self._case_servers = []
        if self._shared is not None and not self._shared.alive():
            s, self._shared = self._shared, None
            try:
                s.stop(check=True)
            except Failure as e:
                errors.append("shared server: " + str(e))
        return errors

    def finish(self):
        errors = []
        if self._shared is not None:
            try:
                self._shared.stop(check=True)
            except Failure as e:
                errors.append("shared server: " + str(e))
            self._shared = None
        if not self.opts.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("kept " + self.tmp)
        return errors


class Suite:
    """A file's test cases.  Use @suite.test or @suite.test(cloister_only=True,
    modes=("plain",)), then suite.main()."""

    def __init__(self, name, **server_options):
        """server_options: Server keyword arguments for the file's shared
        server (env.server())."""
        self.name = name
        self.server_options = server_options
        self.cases = []

    def test(self, fn=None, cloister_only=False, modes=None, memcached_xfail=None):
        """Registers a case.  cloister_only: skipped with --server memcached.
        modes: the modes it runs in (default all).  memcached_xfail:
        {mode: reason} for a known memcached 1.6.18 bug the case exposes;
        with --server memcached in that mode a failure is reported as xfail."""
        def register(f):
            self.cases.append((f, cloister_only, modes, memcached_xfail or {}))
            return f
        return register(fn) if fn is not None else register

    def main(self):
        p = argparse.ArgumentParser(description="Cloister black-box tests: " + self.name)
        p.add_argument("--build", default="build", help="build directory holding cloisterd")
        p.add_argument("--mode", choices=("plain", "tls"), default="plain")
        p.add_argument("--server", choices=("cloisterd", "memcached"), default="cloisterd",
                       help="memcached: validate the tests against memcached 1.6")
        p.add_argument("--seed", type=int, default=20240611)
        p.add_argument("-k", dest="only", default=None, help="run cases whose name contains this")
        p.add_argument("-v", dest="verbose", action="store_true")
        p.add_argument("--keep", action="store_true", help="keep the temp dir")
        opts = p.parse_args()
        opts.build = os.path.abspath(opts.build)

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        if opts.server == "cloisterd" and not os.access(os.path.join(opts.build, "cloisterd"), os.X_OK):
            print("FAIL: %s/cloisterd not found (build it first)" % opts.build)
            print("0 passed, 1 failed")
            sys.exit(1)

        env = Env(opts, self.server_options)
        print("%s: server=%s mode=%s seed=%d" % (self.name, opts.server, opts.mode, opts.seed),
              flush=True)
        passed = failed = 0
        skipped = []
        for fn, cloister_only, modes, xfail in self.cases:
            name = fn.__name__
            if opts.only and opts.only not in name:
                continue
            if cloister_only and env.memcached:
                skipped.append(name + " (cloisterd only)")
                continue
            if modes and opts.mode not in modes:
                skipped.append("%s (mode %s only)" % (name, "/".join(modes)))
                continue
            env._case = name
            env.rng = random.Random("%d:%s" % (opts.seed, name))
            t0 = time.monotonic()
            errors = []
            try:
                fn(env)
            except Failure as e:
                errors.append(str(e))
            except Exception:
                errors.append(traceback.format_exc().rstrip())
            errors += env._end_case()
            dt = time.monotonic() - t0
            reason = xfail.get(opts.mode) if env.memcached else None
            if errors and reason:
                print("xfail %s (%.1fs): memcached bug: %s" % (name, dt, reason))
                print("    " + errors[0].splitlines()[-1][:300])
            elif errors:
                failed += 1
                print("FAIL %s (%.1fs)" % (name, dt))
                for e in errors:
                    print("    " + e.replace("\n", "\n    "))
            else:
                passed += 1
                print("ok   %s (%.1fs)" % (name, dt))
            sys.stdout.flush()
        for e in env.finish():
            failed += 1
            print("FAIL at shutdown: " + e)
        if skipped:
            print("skipped: " + ", ".join(skipped))
        print("%d passed, %d failed" % (passed, failed))
        sys.exit(1 if failed else 0)
