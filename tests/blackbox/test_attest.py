# timeout: 300
"""test_attest.py - attestation with real processes: `cloisterd
--coordinator`, nodes that `--join` it, and `cloister attest`.

  - a node attests to the coordinator, gets a certificate from the cluster
    CA (with its quote in the X.509 extension) and serves memcached over
    TLS with it; a client that knows only the CA saved by `cloister attest`
    verifies it (and must present a client certificate from the cluster
    CA: none, or one from another CA, is refused); a restarted node gets
    the next epoch and is told to recover;
  - a node whose measurement the manifest does not allow exits 1 and its
    stderr (its log) says why, naming its measurement; the coordinator
    logs the refusal; so does a node id the manifest does not list, and a
    node that expects another coordinator measurement;
  - `cloister attest` with the right --expect / --expect-binary saves
    ca.pem (and client.pem/client.key with the tenant's token); a wrong
    --expect, a foreign platform key or a wrong token fail with exit 1
    and the reason, and save nothing; bad usage exits 2;
  - cloisterd's cluster flags: --help names them, contradictions are usage
    errors.

Run: /usr/bin/python3 tests/blackbox/test_attest.py --build build
"""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("attest")

TOKEN = "tenant-token-0123456789"
QUOTE_OID = "2.25.38812012623370293091328918477672217632.1"
JOIN_TIMEOUT = 60


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class Coordinator:
    """`cloisterd --coordinator` on a free port.  Like H.Server it is
    stopped at the end of its case (start_coordinator) and at exit."""

    def __init__(self, env, manifest, name="coord"):
        self.env = env
        self.dir = os.path.join(env.tmp, "%s-%d" % (name, env.next_id()))
        os.mkdir(self.dir)
        self.platform = os.path.join(env.tmp, "platform")   # one "CPU" for the whole file
        self.state = os.path.join(self.dir, "state")
        self.manifest = os.path.join(self.dir, "manifest.json")
        with open(self.manifest, "w") as f:
            json.dump(manifest, f)
        self.ready = os.path.join(self.dir, "ready.json")
        self.log_path = os.path.join(self.dir, "coordinator.log")
        self.proc = None
        self.stopped = False

    def start(self):
        args = [self.env.cloisterd, "--coordinator", "--manifest", self.manifest,
                "--listen", "127.0.0.1:0", "--state-dir", self.state,
                "--platform-dir", self.platform, "--ready-file", self.ready]
        self.env.log("starting: " + " ".join(args))
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log_file,
                                     stderr=self.log_file, preexec_fn=H._pdeathsig)
        H._live_servers.append(self)
        deadline = time.monotonic() + H.START_TIMEOUT
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                H.fail("coordinator exited with %s; log:\n%s" % (self.proc.returncode, self.log()))
            if time.monotonic() > deadline:
                H.fail("coordinator not ready; log:\n%s" % self.log())
            time.sleep(0.01)
        with open(self.ready) as f:
            info = json.load(f)
        eq(info.get("pid"), self.proc.pid, "coordinator ready file pid")
        self.addr = info["coordinator"]
        self.measurement = info["measurement"]
        self.platform_key = info["platform_key"]
        check(re.match(r"127\.0\.0\.1:\d+$", self.addr), "coordinator address %r" % self.addr)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, check=True):
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        if self in H._live_servers:
            H._live_servers.remove(self)
        alive = self.proc.poll() is None
        if alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(H.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log_file.close()
        if check and (not alive or rc != 0):
            H.fail("coordinator: alive=%s status %s; log:\n%s" % (alive, rc, self.log()))


def manifest(measurements=("self",), tenants=True):
    m = {"measurements": list(measurements),
         "nodes": [{"id": 1}, {"id": 2}, {"id": 3}],
         "cert_validity_s": 3600}
    if tenants:
        m["tenants"] = [{"name": "default", "token": TOKEN,
                         "namespaces": [{"prefix": "", "mode": "strong"}]}]
    return m


def start_coordinator(env, **kw):
    """A coordinator stopped (and checked) with the case's servers."""
    c = Coordinator(env, manifest(**kw))
    env._case_servers.append(c)
    return c.start()


def node_args(env, coord, node_id, extra=()):
    state = os.path.join(env.tmp, "node-%d-%d" % (node_id, env.next_id()))
    return ["--join", coord.addr, "--node-id", str(node_id), "--listen", "127.0.0.1:0",
            "--peer", "127.0.0.1:%d" % H._free_port(),
            "--platform-dir", coord.platform, "--state-dir", state,
            "--threads", "1", "--fn-threads", "1"] + list(extra)


def cloister(env, *args):
    r = subprocess.run([os.path.join(env.opts.build, "cloister")] + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60, preexec_fn=H._pdeathsig)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def attest(env, coord, out, *extra, expect=None):
    args = ["attest", "--coordinator", coord.addr,
            "--platform-key", os.path.join(coord.platform, "attestation.pub"), "--out", out]
    args += ["--expect", expect] if expect else ["--expect-binary", env.cloisterd]
    return cloister(env, *(args + list(extra)))


def tls_connect(port, ca, cert=None, key=None):
    """A TLS 1.3 connection verified against `ca` only, for 127.0.0.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    sock = socket.create_connection(("127.0.0.1", port), timeout=H.IO_TIMEOUT)
    try:
        return H.Conn(ctx.wrap_socket(sock, server_hostname="127.0.0.1"), "node:%d" % port)
    except BaseException:
        sock.close()
        raise


def refused(port, ca, cert=None, key=None):
    """True when the node refuses the TLS client (at the handshake or at
    the first request, as TLS 1.3 servers check client certificates after
    the client's side of the handshake is done)."""
    try:
        c = tls_connect(port, ca, cert, key)
        c.send(b"version\r\n")
        data = c.sock.recv(100)
        c.close()
        return data == b""
    except (ssl.SSLError, ConnectionError, OSError):
        return True


@suite.test
def node_joins_and_serves_with_issued_certificate(env):
    coord = start_coordinator(env)
    out = os.path.join(env.tmp, "client-a")
    rc, so, se = attest(env, coord, out, "--tenant", "default", "--token", TOKEN)
    eq(rc, 0, "cloister attest status (stderr: %s)" % se.strip())
    check(coord.measurement in so, "attest output does not show the measurement: %r" % so)
    ca, cert, key = (os.path.join(out, n) for n in ("ca.pem", "client.pem", "client.key"))
    for p in (ca, cert, key):
        check(os.path.exists(p), "cloister attest did not write %s" % p)
    eq(os.stat(key).st_mode & 0o077, 0, "client.key permissions")
    eq(coord.measurement, sha256_file(env.cloisterd), "coordinator measurement = sha256(cloisterd)")

    node = env.start_server(tls=True, minimal=True, extra=node_args(env, coord, 1))
    with open(node.ready_file) as f:
        info = json.load(f)
    eq(info.get("node_id"), 1, "ready file node_id")
    eq(info.get("epoch"), 1, "ready file epoch")
    eq(info.get("recover"), False, "ready file recover")
    eq(info.get("coordinator"), coord.addr, "ready file coordinator")
    eq(info.get("measurement"), coord.measurement, "ready file measurement")

    # Verified with nothing but the saved CA; a client certificate from it works.
    # The manifest has three nodes and only this one runs: it serves the
    # session but refuses to decide a write alone (no quorum), and says so.
    c = tls_connect(node.port, ca, cert, key)
    check(c.request(b"version\r\n").startswith(b"VERSION "), "version over attested TLS")
    eq(c.set(b"attested", b"hello"),
       b"SERVER_ERROR no quorum: too few replicas answered in time\r\n",
       "a write with 1 of 3 replicas up")
    der = c.sock.getpeercert(binary_form=True)
    c.close()
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text"], input=der,
                          stdout=subprocess.PIPE, check=True).stdout.decode()
    check(QUOTE_OID in text, "node certificate lacks the quote extension %s" % QUOTE_OID)
    check("CN = cloister-node-1" in text, "node certificate subject: %s" % text[:400])
    check("IP Address:127.0.0.1" in text, "node certificate SAN lacks 127.0.0.1")

    # No client certificate, or one from another CA: refused.
    check(refused(node.port, ca), "node accepted a client without a certificate")
    check(refused(node.port, ca, env.certs.rogue_client, env.certs.rogue_client_key),
          "node accepted a client certificate from a foreign CA")
    # A client that trusts another CA does not accept the node.
    try:
        tls_connect(node.port, env.certs.ca, cert, key).close()
        H.fail("a client trusting a foreign CA accepted the node's certificate")
    except ssl.SSLCertVerificationError:
        pass

    # A restart is a new incarnation: epoch 2, recover.
    node.stop()
    node = env.start_server(tls=True, minimal=True, extra=node_args(env, coord, 1))
    with open(node.ready_file) as f:
        info = json.load(f)
    eq(info.get("epoch"), 2, "epoch after a restart")
    eq(info.get("recover"), True, "recover after a restart")
    node.stop()
    check("node 1 joined: epoch 2" in coord.log(), "coordinator log lacks the second join")


@suite.test
def wrong_measurement_refused_with_reason(env):
    other = sha256_file(os.path.join(env.opts.build, "cloister"))   # not cloisterd
    coord = start_coordinator(env, measurements=[other])
    rc, so, se = env.run_daemon(node_args(env, coord, 1), timeout=JOIN_TIMEOUT)
    eq(rc, 1, "exit status of a node the manifest does not allow (stderr: %s)" % se.strip())
    mine = sha256_file(env.cloisterd)[:12]
    check("not allowed by the manifest" in se and mine in se,
          "the node's log does not say why (want 'not allowed by the manifest' and %s): %s"
          % (mine, se))
    check("refused the join of node 1" in coord.log() and mine in coord.log(),
          "the coordinator did not log the refusal: %s" % coord.log())


@suite.test
def unknown_node_and_wrong_coordinator_refused(env):
    coord = start_coordinator(env)
    rc, so, se = env.run_daemon(node_args(env, coord, 5), timeout=JOIN_TIMEOUT)
    eq(rc, 1, "exit status for a node id the manifest does not list")
    check("node 5 is not a node of the manifest" in se, "reason missing: %s" % se)
    rc, so, se = env.run_daemon(node_args(env, coord, 2, ["--expect-coordinator", "00" * 32]),
                                timeout=JOIN_TIMEOUT)
    eq(rc, 1, "exit status of a node that expects another coordinator")
    check("failed attestation" in se and "--expect-coordinator" in se, "reason missing: %s" % se)


@suite.test
def attest_cli_expectations(env):
    coord = start_coordinator(env)
    good = sha256_file(env.cloisterd)
    out = os.path.join(env.tmp, "attest-good")
    rc, so, se = attest(env, coord, out, expect=good)
    eq(rc, 0, "attest with the right --expect (stderr: %s)" % se.strip())
    check(os.path.exists(os.path.join(out, "ca.pem")), "ca.pem not saved")
    with open(os.path.join(coord.state, "ca.pem")) as f, open(os.path.join(out, "ca.pem")) as g:
        eq(g.read(), f.read(), "saved CA = the coordinator's cluster CA")

    bad_out = os.path.join(env.tmp, "attest-bad")
    wrong = ("0" if good[0] != "0" else "1") + good[1:]
    rc, so, se = attest(env, coord, bad_out, expect=wrong)
    eq(rc, 1, "attest with a wrong --expect")
    check("failed attestation" in se and good[:12] in se, "reason missing: %s" % se)
    check(not os.path.exists(os.path.join(bad_out, "ca.pem")), "ca.pem saved despite the failure")

    rc, so, se = cloister(env, "attest", "--coordinator", coord.addr, "--expect", good,
                          "--platform-key", "ab" * 32, "--out", bad_out)
    eq(rc, 1, "attest with a foreign platform key")
    check("untrusted platform" in se, "reason missing: %s" % se)

    rc, so, se = attest(env, coord, bad_out, "--tenant", "default", "--token", "wrong-token-000")
    eq(rc, 1, "attest with a wrong token")
    check("wrong token" in se, "reason missing: %s" % se)
    check(not os.path.exists(os.path.join(bad_out, "client.key")), "client.key saved")

    for args in (["attest", "--coordinator", coord.addr, "--out", bad_out, "--platform-key",
                  "ab" * 32],
                 ["attest", "--coordinator", coord.addr, "--expect", "xyz", "--out", bad_out,
                  "--platform-key", "ab" * 32],
                 ["attest", "--coordinator", coord.addr, "--expect", good, "--out", bad_out,
                  "--platform-key", "ab" * 32, "--tenant", "default"]):
        rc, so, se = cloister(env, *args)
        eq(rc, 2, "usage error for %s (stderr: %s)" % (args, se.strip()))


@suite.test
def cluster_flags(env):
    rc, so, se = env.run_daemon(["--help"])
    eq(rc, 0, "--help")
    for flag in ("--coordinator", "--manifest", "--platform-dir", "--join", "--node-id", "--peer",
                 "--expect-coordinator"):
        check(re.search(re.escape(flag) + r"\b", so), "--help does not mention %s" % flag)
    cases = [
        (["--coordinator"], "--manifest"),
        (["--manifest", "m.json"], "--coordinator"),
        (["--join", "127.0.0.1:1"], "--node-id"),
        (["--join", "127.0.0.1:1", "--node-id", "1"], "--peer"),
        (["--join", "127.0.0.1:1", "--node-id", "1", "--plaintext"], "--plaintext"),
        (["--join", "127.0.0.1:1", "--node-id", "9"], "--node-id"),
        (["--node-id", "1", "--plaintext"], "--join"),
        (["--coordinator", "--manifest", "m.json", "--tls-cert", "x", "--tls-key", "y"],
         "--tls-cert"),
        (["--join", "127.0.0.1:1", "--node-id", "1", "--expect-coordinator", "abc"],
         "--expect-coordinator"),
    ]
    for args, word in cases:
        rc, so, se = env.run_daemon(args)
        eq(rc, 2, "exit status of cloisterd %s (stderr: %s)" % (" ".join(args), se.strip()))
        check(word in se, "cloisterd %s: stderr does not mention %s: %s" % (args, word, se))
    # A coordinator that is not there: a clear failure, not a hang.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, so, se = env.run_daemon(["--join", "127.0.0.1:%d" % port, "--node-id", "1",
                                 "--peer", "127.0.0.1:%d" % H._free_port(),
                                 "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                                 "--state-dir", os.path.join(env.tmp, "nocoord")],
                                timeout=JOIN_TIMEOUT)
    eq(rc, 1, "exit status without a coordinator")
    check("cannot connect" in se, "reason missing: %s" % se)


if __name__ == "__main__":
    suite.main()
