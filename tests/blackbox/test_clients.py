# modes: plain tls
# timeout: 180
"""test_clients.py - unmodified memcached clients against the server.

Plain mode: libmemcached-tools (memccp, memccat, memcstat, memcrm) copy a
file in, read it back byte for byte, parse stats and delete, with their
exit codes checked; pymemcache does multi-key, arithmetic, CAS and
concurrent work.  TLS mode: pymemcache over TLS 1.3 verifying the test CA
does the same; a plaintext client on the TLS port gets no memcached data
and the server keeps serving; with --tls-ca only clients holding a
certificate from that CA are served; TLS below 1.3 is refused (Cloister
only: memcached accepts TLS 1.2).

Run: /usr/bin/python3 tests/blackbox/test_clients.py --build build [--mode tls]
"""

import os
import re
import ssl
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

from pymemcache.client.base import Client, PooledClient  # noqa: E402

suite = H.Suite("clients")


def tool(srv, *args):
    """Runs a libmemcached tool against srv: (status, stdout bytes, stderr)."""
    cmd = [args[0], "--servers=127.0.0.1:%d" % srv.port] + list(args[1:])
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def pyclient(env, srv, cert=None, pooled=False):
    kw = dict(connect_timeout=10, timeout=H.IO_TIMEOUT, default_noreply=False)
    if srv.tls:
        kw["tls_context"] = env.certs.client_context(cert)
    if pooled:
        return PooledClient(("127.0.0.1", srv.port), max_pool_size=8, **kw)
    return Client(("127.0.0.1", srv.port), **kw)


@suite.test(modes=("plain",))
def libmemcached_tools(env):
    srv = env.server()
    blob = os.path.join(env.tmp, "blob.bin")
    text = os.path.join(env.tmp, "notes.txt")
    data = env.rng.randbytes(300_000)
    with open(blob, "wb") as f:
        f.write(data)
    with open(text, "wb") as f:
        f.write(b"hello\r\nworld\n")

    rc, out, err = tool(srv, "memccp", blob)
    eq((rc, out), (0, b""), "memccp blob.bin exit status and output (stderr: %s)" % err)
    rc, out, err = tool(srv, "memccp", "--flags=7", "--expire=1000", text)
    eq((rc, out), (0, b""), "memccp notes.txt (stderr: %s)" % err)

    copy = os.path.join(env.tmp, "copy.bin")
    rc, out, err = tool(srv, "memccat", "--file=" + copy, "blob.bin")
    eq(rc, 0, "memccat --file exit status (stderr: %s)" % err)
    with open(copy, "rb") as f:
        eq(f.read(), data, "memccat --file contents")
    rc, out, err = tool(srv, "memccat", "notes.txt")
    eq((rc, out), (0, b"hello\r\nworld\n\n"), "memccat to stdout (value + newline)")
    c = srv.connect()
    eq(c.get(b"notes.txt"), (7, b"hello\r\nworld\n"), "notes.txt as a text client sees it")

    rc, out, err = tool(srv, "memcstat")
    eq(rc, 0, "memcstat exit status (stderr: %s)" % err)
    lines = out.decode(errors="replace").splitlines()
    eq(lines[0] if lines else "", "Server: 127.0.0.1 (%d)" % srv.port, "memcstat header")
    stats = {}
    for line in lines[1:]:
        m = re.match(r"\t(\w+): (.*)$", line)
        check(m, "memcstat line %r" % line)
        stats[m.group(1)] = m.group(2)
    eq(stats.get("pid"), str(srv.pid), "memcstat pid")
    check(int(stats.get("curr_items", "0")) >= 2, "memcstat curr_items: %r" % stats.get("curr_items"))

    rc, out, err = tool(srv, "memcrm", "blob.bin")
    eq(rc, 0, "memcrm exit status (stderr: %s)" % err)
    eq(c.get(b"blob.bin"), None, "blob.bin after memcrm")
    rc, out, err = tool(srv, "memccat", "blob.bin")
    check(rc != 0 and out == b"", "memccat of a deleted key: status %d, output %r" % (rc, out[:80]))
    rc, out, err = tool(srv, "memcrm", "blob.bin")
    check(rc != 0, "memcrm of a deleted key succeeded")
    eq(c.get(b"notes.txt"), (7, b"hello\r\nworld\n"), "notes.txt untouched")


def exercise_pymemcache(env, mc, prefix):
    """The same workload in both modes; fails on any difference."""
    k = lambda name: prefix + name.encode()
    values = {k("m%03d" % i): env.rng.randbytes(env.rng.randrange(0, 3000)) for i in range(200)}
    eq(mc.set_many(values), [], "set_many failed keys")
    got = mc.get_many(list(values) + [k("absent")])
    eq(got, values, "get_many")
    big = env.rng.randbytes(700_000)
    check(mc.set(k("big"), big), "set of a 700 KB value")
    eq(mc.get(k("big")), big, "700 KB value")

    check(mc.set(k("n"), b"41"), "set n")
    eq(mc.incr(k("n"), 1), 42, "incr")
    eq(mc.decr(k("n"), 50), 0, "decr floors at 0")
    eq(mc.incr(k("absent"), 1), None, "incr of an absent key")

    val, cas = mc.gets(k("m000"))
    eq(val, values[k("m000")], "gets value")
    check(mc.cas(k("m000"), b"new", cas) is True, "cas with the current unique")
    check(mc.cas(k("m000"), b"newer", cas) is False, "cas with a stale unique")
    eq(mc.get(k("m000")), b"new", "after cas")
    eq(mc.cas(k("absent"), b"x", cas), None, "cas on an absent key")

    check(mc.add(k("m001"), b"x") is False, "add over an existing key")
    check(mc.replace(k("absent"), b"x") is False, "replace of an absent key")
    check(mc.append(k("m002"), b"<tail") and mc.prepend(k("m002"), b"head>"), "append/prepend")
    eq(mc.get(k("m002")), b"head>" + values[k("m002")] + b"<tail", "after append/prepend")
    check(mc.touch(k("m003"), 1000), "touch")

    check(mc.delete(k("m004")) is True, "delete")
    check(mc.delete(k("m004")) is False, "delete of a deleted key")
    eq(mc.get(k("m004")), None, "get after delete")
    eq(mc.delete_many([k("m%03d" % i) for i in range(10, 20)]), True, "delete_many")
    eq(mc.get_many([k("m%03d" % i) for i in range(10, 20)]), {}, "after delete_many")
    stats = mc.stats()
    check(int(stats[b"curr_items"]) >= 150, "pymemcache stats curr_items %r" % stats.get(b"curr_items"))
    check(mc.version(), "version")


MEMCACHED_TLS_STALL = {"tls": "1.6.18 stalls on pipelined TLS input larger than one record"}


@suite.test(memcached_xfail=MEMCACHED_TLS_STALL)
def pymemcache_client(env):
    srv = env.server()
    mc = pyclient(env, srv)
    try:
        exercise_pymemcache(env, mc, env.key(""))
    finally:
        mc.close()


@suite.test
def pymemcache_concurrent(env):
    """Several threads through a connection pool, each on its own keys."""
    srv = env.server()
    mc = pyclient(env, srv, pooled=True)
    errors = []

    def worker(t):
        try:
            for i in range(150):
                key = b"%s-t%d-%d" % (env.key("c"), t, i)
                value = b"%d:%d:" % (t, i) + b"x" * (i * 7)
                if not mc.set(key, value):
                    errors.append("set %r failed" % key)
                got = mc.get(key)
                if got != value:
                    errors.append("thread %d key %d read %r" % (t, i, H.short(got or b"")))
                    return
        except Exception as e:          # reported below, in the main thread
            errors.append("thread %d: %r" % (t, e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    mc.close()
    eq(errors, [], "errors from worker threads")


def is_refused(srv, cert):
    """True if a TLS client with `cert` gets no service: the handshake or the
    first exchange fails, or the connection closes with no reply."""
    try:
        c = srv.connect(cert=cert)
    except (ssl.SSLError, OSError):
        return True
    try:
        c.send(b"version\r\n")
    except (ssl.SSLError, OSError):
        return True
    closed = c.wait_closed(10)
    got = c.buf
    c.close()
    check(not got, "client without a valid certificate got data: %r" % got)
    return closed


@suite.test(modes=("tls",))
def plaintext_client_on_tls_port(env):
    srv = env.server()
    k = env.key("k")
    s = srv.raw_socket()
    try:
        s.sendall(b"set %s 0 0 5\r\nhello\r\nget %s\r\nversion\r\n" % (k, k))
        c = H.Conn(s, "raw")
        check(c.wait_closed(10), "plaintext connection on the TLS port still open after 10 s")
        # Only a TLS alert record (content type 21) may come back.
        check(c.buf == b"" or c.buf[:1] == b"\x15", "plaintext client received %r" % c.buf)
    finally:
        s.close()
    tc = srv.connect()
    tc.call(b"get %s\r\n" % k, b"END\r\n", "nothing stored by the plaintext client")
    tc.must_set(k, b"ok")
    eq(tc.get(k), (0, b"ok"), "TLS client after the plaintext attempt")


@suite.test(modes=("tls",))
def tls_client_certificates(env):
    srv = env.start_server(tls_ca=True)
    check(is_refused(srv, None), "a client without a certificate was served")
    check(is_refused(srv, "rogue"), "a client with a certificate from another CA was served")
    mc = pyclient(env, srv, cert="client")
    try:
        values = {b"cert:%d" % i: b"v%d" % i for i in range(5)}
        eq(mc.set_many(values), [], "set_many with a client certificate")
        eq(mc.get_many(list(values)), values, "get_many with a client certificate")
        check(mc.delete(b"cert:0"), "delete with a client certificate")
    finally:
        mc.close()
    c = srv.connect(cert="client")
    c.call(b"get cert:0 cert:1\r\n", b"VALUE cert:1 0 2\r\nv1\r\nEND\r\n")
    check(is_refused(srv, None), "a client without a certificate was served (second try)")
    c.sync()


@suite.test(modes=("tls",), cloister_only=True)
def tls_below_1_3_refused(env):
    srv = env.server()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(env.certs.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    s = srv.raw_socket()
    try:
        try:
            ts = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        except (ssl.SSLError, OSError):
            ts = None
        check(ts is None, "TLS 1.2 handshake accepted (%s)" % (ts and ts.version()))
    finally:
        s.close()
    c = srv.connect()
    c.sync()
    check(c.sock.version() == "TLSv1.3", "negotiated %s" % c.sock.version())


if __name__ == "__main__":
    suite.main()
