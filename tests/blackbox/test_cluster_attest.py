# timeout: 300
"""test_cluster_attest.py - attestation on a running `cloister up`
cluster: only the measured binary joins, only the cluster's clients get
in.

  - a copy of cloisterd with one byte appended (so its measurement
    differs) started as node 3 (the real node 3 stopped): it refuses a
    coordinator that does not run its own binary, and with
    --expect-coordinator set to the real measurement the coordinator
    refuses it ("not allowed by the manifest", naming its measurement);
    it exits 1 without serving, and the coordinator logs the refusal;
    the real node 3 then rejoins, recovers and serves what was written;
  - memcached clients: the cluster's client certificate works on every
    node; no certificate, a self-signed one, or one from another CA is
    refused during the handshake (no reply ever comes); a plaintext
    client gets nothing; the node is unaffected;
  - the peer port: a TLS client with the cluster's *client* certificate
    (signed by the cluster CA, but carrying no node quote) is refused
    and the node logs why;
  - `cloister attest` against the running coordinator: the right
    --expect (and --expect-binary of cloisterd) saves the cluster CA,
    identical to the one `cloister up` saved; a wrong --expect, the
    modified binary's --expect-binary, a foreign platform key and a
    wrong tenant token fail with exit 1 and a reason, saving nothing.

Run: /usr/bin/python3 tests/blackbox/test_cluster_attest.py --build build [-v]
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster as C  # noqa: E402
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("cluster attestation")


def modified_binary(env, cl):
    """A copy of cloisterd with one byte appended: same code, another
    measurement.  Returns (path, its sha256)."""
    path = os.path.join(env.tmp, "cloisterd-modified")
    if not os.path.exists(path):
        shutil.copy2(cl.cloisterd, path)
        with open(path, "ab") as f:
            f.write(b"\0")
    return path, C.sha256_file(path)


def run_as_node(env, cl, binary, i, extra=()):
    """Runs binary as node i (its addresses; a state dir of its own) to
    completion: (status, output)."""
    nd = cl.node(i)
    sd = os.path.join(env.tmp, "impostor-%d" % env.next_id())
    os.makedirs(sd)
    ready = os.path.join(sd, "ready.json")
    args = [binary, "--join", cl.info["coordinator"]["address"], "--node-id", str(i),
            "--peer", nd["peer"], "--listen", nd["memcached"], "--http", nd["http"],
            "--state-dir", sd, "--platform-dir", os.path.join(cl.dir, "platform"),
            "--ready-file", ready] + list(extra)
    r = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60, preexec_fn=H._pdeathsig)
    check(not os.path.exists(ready), "the refused node wrote its ready file")
    return r.returncode, r.stdout.decode(errors="replace")


def coordinator_log(cl):
    with open(cl.coordinator_log_path(), "rb") as f:
        return f.read().decode(errors="replace")


@suite.test
def modified_binary_is_refused(env):
    with C.Cluster(env) as cl:
        n1 = cl.connect(1)
        try:
            k = env.key("kept")
            n1.must_set(k, b"value")
            cl.stop(3)
            path, digest = modified_binary(env, cl)
            check(digest != cl.info["measurement"], "the modified copy measures the same")

            # It will not trust a coordinator that runs another binary...
            rc, out = run_as_node(env, cl, path, 3)
            eq(rc, 1, "exit status of the modified node (coordinator not its own); output:\n" + out)
            check("failed attestation" in out and cl.info["measurement"][:12] in out,
                  "the modified node says why it refused the coordinator:\n" + out)

            # ...and the coordinator will not admit it.
            rc, out = run_as_node(env, cl, path, 3,
                                  ["--expect-coordinator", cl.info["measurement"]])
            eq(rc, 1, "exit status of the modified node; output:\n" + out)
            check("not allowed by the manifest" in out and digest[:12] in out,
                  "the modified node's output names its refused measurement:\n" + out)
            log = coordinator_log(cl)
            check("refused the join of node 3" in log and digest[:12] in log,
                  "the coordinator logs the refusal:\n" + log[-2000:])

            # Nothing changed for the cluster; the real node 3 comes back.
            eq(n1.get(k), (0, b"value"), "node 1 after the refused join")
            cl.start(3)
            eq(cl.connect(3).get(k), (0, b"value"), "the real node 3 after rejoining")
            check("3 of 3 nodes running" in cl.status(), "cloister status")
        finally:
            n1.close()


def tls_refused(cl, i, ctx):
    """True when node i refuses a client with this context: the handshake
    fails, or the connection closes before any reply to a request."""
    host, port = cl.addr(i)
    raw = socket.create_connection((host, port), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname=host)
    except (ssl.SSLError, ConnectionError, OSError):
        raw.close()
        return True
    try:
        s.settimeout(10)
        s.sendall(b"version\r\n")
        return s.recv(100) == b""
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    finally:
        s.close()


def self_signed(env, name):
    d = os.path.join(env.tmp, name)
    os.makedirs(d, exist_ok=True)
    crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=" + name], capture_output=True)
    check(r.returncode == 0, "openssl: %s" % r.stderr.decode(errors="replace"))
    return crt, key


@suite.test
def clients_need_the_cluster_certificate(env):
    with C.Cluster(env) as cl:
        good = cl.ssl_context()
        for i in cl.ids():
            conn = cl.connect(i, good)
            eq(conn.request(b"version\r\n")[:8], b"VERSION ", "client with the cluster's "
               "certificate on node %d" % i)
            conn.close()
        none = cl.ssl_context(cert=False)
        crt, key = self_signed(env, "self-signed")
        selfsigned = cl.ssl_context(cert=False)
        selfsigned.load_cert_chain(crt, key)
        foreign = env.certs      # a CA of its own, and a client certificate from it
        fctx = cl.ssl_context(cert=False)
        fctx.load_cert_chain(foreign.client, foreign.client_key)
        for name, ctx in (("no certificate", none), ("a self-signed certificate", selfsigned),
                          ("a certificate from another CA", fctx)):
            for i in cl.ids():
                check(tls_refused(cl, i, ctx), "node %d accepted a client with %s" % (i, name))
        # Plaintext to a TLS port: nothing that looks like a memcached reply.
        host, port = cl.addr(1)
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"version\r\n")
            try:
                data = s.recv(100)
            except (ConnectionError, socket.timeout):
                data = b""
            check(not data.startswith(b"VERSION"), "plaintext client got %r" % data)
        # The nodes are unaffected.
        conn = cl.connect(2, good)
        conn.must_set(env.key("after"), b"ok")
        eq(cl.connect(3).get(env.key("after")), (0, b"ok"), "after the refused clients")
        conn.close()


@suite.test
def client_certificate_is_no_node_certificate(env):
    with C.Cluster(env) as cl:
        host, port = C.split_addr(cl.node(1)["peer"])
        ctx = cl.ssl_context()                     # the cluster CA's client certificate
        ctx.check_hostname = False
        before = cl.log(1).count("\n")
        refused = False
        raw = socket.create_connection((host, port), timeout=10)
        try:
            s = ctx.wrap_socket(raw, server_hostname=host)
            s.settimeout(5)
            s.sendall(b"\0\0\0\x10CLP1" + b"\0" * 12)   # a hello claiming to be a node
            refused = s.recv(100) == b""
        except (ssl.SSLError, ConnectionError, OSError):
            refused = True
        finally:
            raw.close()
        check(refused, "node 1's peer port kept a connection with a client certificate open")
        C.wait_until(lambda: "\n".join(cl.log(1).splitlines()[before:]).count("closed") > 0,
                     10, "node 1 logging the refused peer connection")
        eq(cl.stats(1).get("repl_peers_up"), "2", "node 1's peers after the impostor")


@suite.test
def attest_the_running_coordinator(env):
    with C.Cluster(env) as cl:
        coord = cl.info["coordinator"]["address"]
        pub = os.path.join(cl.dir, "platform", "attestation.pub")
        path, digest = modified_binary(env, cl)

        def attest(*args):
            out = os.path.join(env.tmp, "attest-%d" % env.next_id())
            r = subprocess.run([cl.cli, "attest", "--coordinator", coord, "--out", out] +
                               list(args), capture_output=True, timeout=60)
            return r.returncode, r.stdout.decode() + r.stderr.decode(), out

        with open(os.path.join(cl.dir, "ca.pem")) as f:
            ca = f.read()
        for how in (["--expect", cl.info["measurement"]], ["--expect-binary", cl.cloisterd]):
            rc, text, out = attest(*how, "--platform-key", pub)
            eq(rc, 0, "cloister attest %s: %s" % (how[0], text))
            with open(os.path.join(out, "ca.pem")) as f:
                eq(f.read(), ca, "the CA saved by attest %s" % how[0])
        wrong = ("0" if cl.info["measurement"][0] != "0" else "1") + cl.info["measurement"][1:]
        with open(pub) as f:
            key = f.read().strip()
        foreign_key = ("0" if key[0] != "0" else "1") + key[1:]
        for what, args, why in (
                ("a wrong --expect", ["--expect", wrong, "--platform-key", pub], "measurement"),
                ("the modified binary", ["--expect-binary", path, "--platform-key", pub],
                 "measurement"),
                ("a foreign platform key", ["--expect", cl.info["measurement"],
                                            "--platform-key", foreign_key], "platform"),
                ("a wrong token", ["--expect", cl.info["measurement"], "--platform-key", pub,
                                   "--tenant", "default", "--token", "not-the-token"], "token")):
            rc, text, out = attest(*args)
            eq(rc, 1, "cloister attest with %s: %s" % (what, text))
            check(why in text.lower(),
                  "cloister attest with %s says why (%r): %s" % (what, why, text))
            saved = os.listdir(out) if os.path.isdir(out) else []
            check("client.pem" not in saved and "client.key" not in saved,
                  "cloister attest with %s saved %s" % (what, saved))
            if what != "a wrong token":
                check(not saved, "cloister attest with %s saved %s" % (what, saved))


if __name__ == "__main__":
    C.arm_deadline(__file__)
    suite.main()
