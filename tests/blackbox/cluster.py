"""cluster.py - real clusters for the black-box fault tests: start them,
talk to their nodes, break them, and always take them down.

Who uses it: tests/blackbox/test_cluster_*.py (with harness.Suite).
Not a test itself.

  Cluster(env, nodes=3, consistency="strong")   `cloister up` in a fresh
      directory under env.tmp; node stop/start through `cloister node`,
      teardown through `cloister down`.  Node ids are 1-based, as in the
      CLI.
  ManualCluster(env, ..., proxies=True)          the same cluster started
      by hand (coordinator, `cloister attest`, nodes: what cmd_cluster.c
      does), with a mitm.MitmProxy in front of every node's peer port:
      each node listens on its real --peer port and advertises the proxy
      (--peer-advertise), so every peer connection dialled to it crosses
      its proxy.
  Both: connect(i) (a harness.Conn over TLS with the cluster's client
      certificate), stop/kill/start/pause/resume(i), wait_ready(i) (the
      node's `stats` say repl_state ready and all its peers up), logs,
      check_logs() (no sanitizer report, no crash), down().
  Recorded load: LoadClient threads (lincheck.RecordingClient, failing
      over between nodes, unique values, a private key each),
      start_load/wait_progress/stop_load, final_round (no acknowledged
      write lost), check_linearizable (lincheck verdict, failing histories
      kept under BUILD/lincheck-histories/).

Invariant: no process started here outlives the test, whatever happens.
  - the harness's temp dir (env.tmp, which holds every cluster) is
    registered with a reaper before anything is started in it; the
    reaper is a detached process (its own session,
    re-parented away from the test, so ctest's kill of the test's process
    tree does not reach it) that waits for the test process to end (EOF
    on a pipe only the test holds) and then SIGKILLs every process whose
    command line names a registered directory or whose (pid, start time)
    was registered, and removes the temp dir (unless --keep);
  - down() (also run by `with`/finally) runs `cloister down`, then kills
    what is left the same way, by pid;
  - arm_deadline() ends the test file cleanly (finally blocks run) some
    seconds before its ctest time-out.
  Processes are only ever signalled by pid, after checking that the pid
  still belongs to the process that was recorded (start time) or names
  one of our own temporary directories on its command line.
"""

import hashlib
import json
import os
import random
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
import lincheck as L  # noqa: E402

from harness import check, fail  # noqa: E402

CLI_TIMEOUT = 120        # seconds one `cloister` command may take (ASan start-up is slow)
READY_TIMEOUT = 90       # seconds until a (re)started node is ready with all peers up
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:", "Segmentation fault", "double free", "assertion failed",
                   "Assertion `")


# ---------------------------------------------------------------------------
# Processes: identity, sweeping, the reaper

def _start_time(pid):
    """The process's start time (clock ticks since boot), or None when it
    is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2:].split()
    if not rest or rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _names_dir(args, dirs):
    for a in args:
        s = a.decode(errors="replace")
        for d in dirs:
            if s == d or s.startswith(d + "/"):
                return True
    return False


def sweep(dirs=(), pids=(), wait=10.0):
    """SIGKILLs every live process whose command line names one of dirs
    (an argument equal to a dir or inside it) and every (pid, start time)
    in pids that still matches; waits until they are gone.  Returns the
    pids killed.  Never touches this process."""
    dirs = [os.path.realpath(d) for d in dirs]
    me = os.getpid()
    victims = {}
    for pid, start in pids:
        if pid != me and start is not None and _start_time(pid) == start:
            victims[pid] = start
    if dirs:
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            if _names_dir(_cmdline(pid), dirs):
                st = _start_time(pid)
                if st is not None:
                    victims[pid] = st
    for pid, start in victims.items():
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    for pid, start in victims.items():
        while _start_time(pid) == start and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)     # ours (a child): reap it
            except OSError:
                pass
            time.sleep(0.02)
    return sorted(victims)


class _Reaper:
    """The detached process that cleans up after the test process dies.
    Registry lines: "dir PATH", "rmdir PATH" (also removed), "pid PID START"."""

    def __init__(self):
        fd, self.registry = tempfile.mkstemp(prefix="cloister-reaper-", suffix=".txt")
        os.close(fd)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--reap", self.registry],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self._pipe = p.stdin        # the only write end: EOF when this process ends
        p.wait(10)                  # the first process exits at once; its child stays

    def register_dir(self, d, remove=False):
        """Processes naming d are killed; with remove, d is removed too."""
        self._add("%s %s\n" % ("rmdir" if remove else "dir", os.path.realpath(d)))

    def register_pid(self, pid):
        st = _start_time(pid)
        if st is not None:
            self._add("pid %d %d\n" % (pid, st))

    def _add(self, line):
        with open(self.registry, "a") as f:
            f.write(line)


_reaper = None


def reaper():
    global _reaper
    if _reaper is None:
        _reaper = _Reaper()
    return _reaper


def _read_registry(path):
    dirs, remove, pids = [], [], []
    try:
        with open(path) as f:
            for line in f:
                kind, _, rest = line.rstrip("\n").partition(" ")
                if kind in ("dir", "rmdir") and rest.startswith("/"):
                    dirs.append(rest)
                    if kind == "rmdir":
                        remove.append(rest)
                elif kind == "pid" and len(rest.split()) == 2:
                    pids.append(tuple(int(x) for x in rest.split()))
    except OSError:
        pass
    return dirs, remove, pids


def _reap_main(registry):
    """Runs in the detached reaper: leave the session leader's process
    (so nothing is our parent that a process-tree kill would walk from),
    wait for EOF on stdin, sweep, remove the directories and the registry."""
    if os.fork() > 0:
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    dirs, remove, pids = _read_registry(registry)
    sweep(dirs, pids)
    import shutil
    for d in remove:
        shutil.rmtree(d, ignore_errors=True)
    try:
        os.unlink(registry)
    except OSError:
        pass
    os._exit(0)


# ---------------------------------------------------------------------------
# Deadline

class DeadlineExceeded(BaseException):
    """Raised in the main thread when the file's time budget is spent; a
    BaseException so that harness cases do not catch it, while finally
    blocks still run (teardown)."""


def arm_deadline(test_file, margin=25):
    """Ends the test file `margin` seconds before its `# timeout: N`."""
    budget = 300
    with open(test_file) as f:
        for line in f:
            m = re.match(r"# timeout: (\d+)", line)
            if m:
                budget = int(m.group(1))
                break

    def expired(signum, frame):
        raise DeadlineExceeded("the test file ran for %d s, close to its ctest time-out of "
                               "%d s: stopping (clusters are torn down)"
                               % (budget - margin, budget))
    signal.signal(signal.SIGALRM, expired)
    signal.alarm(max(10, budget - margin))


# ---------------------------------------------------------------------------
# Small helpers

free_ports = H.free_ports


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def split_addr(a):
    host, port = a.rsplit(":", 1)
    return host, int(port)


def wait_until(pred, timeout, what, interval=0.1):
    """Polls pred() until it returns a true value (returned) or fails."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except (OSError, ssl.SSLError, H.Failure) as e:
            last = e
        if time.monotonic() > deadline:
            fail("%s: not within %.0f s%s"
                 % (what, timeout, " (last error: %s)" % last if last else ""))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# A cluster made by `cloister up`

class Cluster:
    """A local cluster in a fresh directory under env.tmp.  Use as a
    context manager (or call down() in a finally)."""

    def __init__(self, env, nodes=3, consistency="strong", memory=None, name="cluster"):
        self.env = env
        self.n = nodes
        self.consistency = consistency
        self.memory = memory
        self.dir = os.path.realpath(os.path.join(env.tmp, "%s-%d" % (name, env.next_id())))
        self.cli = os.path.join(env.opts.build, "cloister")
        self.cloisterd = os.path.join(env.opts.build, "cloisterd")
        self.paused = set()
        self.info = None
        self._down = False

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    def up(self):
        os.makedirs(self.dir)
        reaper().register_dir(self.env.tmp, remove=not self.env.opts.keep)
        args = ["up", "--nodes", str(self.n), "--consistency", self.consistency]
        if self.memory:
            args += ["--memory", str(self.memory)]
        try:
            rc, out, err = self.run_cli(*args)
            if rc != 0:
                fail("cloister up failed (status %s):\n%s%s\n%s" % (rc, out, err, self.logs_tail()))
            self.reload()
            for i in self.ids():
                self.wait_ready(i)
        except BaseException:
            self.down(check_logs=False)
            raise
        self.env.log("cluster of %d up in %s" % (self.n, self.dir))
        return self

    def down(self, check_logs=True):
        """Stops everything (cloister down, then SIGKILL by pid what is
        left); then, with check_logs, fails on a sanitizer report or crash
        in any log.  Idempotent."""
        if self._down:
            return
        self._down = True
        for i in list(self.paused):
            self.resume(i)
        try:
            if os.path.exists(os.path.join(self.dir, "cluster.json")):
                self.run_cli("down", timeout=60)
        except (subprocess.TimeoutExpired, OSError):
            pass
        left = self._sweep()
        if left:
            self.env.log("killed %d processes left after cloister down: %s" % (len(left), left))
        if check_logs:
            self.check_logs()

    def _sweep(self):
        pids = []
        if self.info:
            pids = [(p, _start_time(p)) for p in self._recorded_pids()]
        return sweep([self.dir], pids)

    def _recorded_pids(self):
        out = [self.info["coordinator"]["pid"]] if self.info else []
        out += [nd["pid"] for nd in (self.info or {}).get("nodes", [])]
        return [p for p in out if p]

    # -- the CLI ----------------------------------------------------------------
    def run_cli(self, *args, timeout=CLI_TIMEOUT):
        """Runs `cloister --dir DIR ARGS`: (status, stdout, stderr)."""
        r = subprocess.run([self.cli, "--dir", self.dir] + list(args), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def reload(self):
        with open(os.path.join(self.dir, "cluster.json")) as f:
            self.info = json.load(f)
        for p in self._recorded_pids():
            reaper().register_pid(p)
        return self.info

    def status(self):
        rc, out, err = self.run_cli("status")
        check(rc == 0, "cloister status failed (%s): %s" % (rc, err))
        return out

    # -- nodes ---------------------------------------------------------------------
    def ids(self):
        return list(range(1, self.n + 1))

    def node(self, i):
        return self.info["nodes"][i - 1]

    def addr(self, i):
        return split_addr(self.node(i)["memcached"])

    def addrs(self):
        return [self.addr(i) for i in self.ids()]

    def pid(self, i):
        return self.node(i)["pid"]

    def alive(self, i):
        p = self.pid(i)
        return bool(p) and _start_time(p) is not None

    def stop(self, i, kill=False):
        """`cloister node stop i [--kill]`."""
        self.resume(i)
        args = ["node", "stop", str(i)] + (["--kill"] if kill else [])
        rc, out, err = self.run_cli(*args)
        check(rc == 0, "cloister node stop %d failed (%s): %s%s" % (i, rc, out, err))
        self.reload()
        check(not self.pid(i), "node %d still has a pid after stop" % i)

    def kill(self, i):
        self.stop(i, kill=True)

    def start(self, i, ready=True):
        """`cloister node start i`; with ready, waits until it serves
        with every peer up (a restarted node has then recovered)."""
        rc, out, err = self.run_cli("node", "start", str(i))
        if rc != 0:
            fail("cloister node start %d failed (%s): %s%s\n%s" % (i, rc, out, err,
                                                                   self.log_tail(i)))
        self.reload()
        if ready:
            self.wait_ready(i)

    def pause(self, i):
        """SIGSTOP: the node is alive but silent (a hung or partitioned node)."""
        os.kill(self.pid(i), signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i):
        if i in self.paused:
            self.paused.discard(i)
            if self.alive(i):
                os.kill(self.pid(i), signal.SIGCONT)

    def ssl_context(self, cert=True):
        """TLS 1.3 client context trusting the cluster CA; with cert, the
        cluster's client certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(os.path.join(self.dir, "ca.pem"))
        if cert:
            ctx.load_cert_chain(os.path.join(self.dir, "client.pem"),
                                os.path.join(self.dir, "client.key"))
        return ctx

    def connect(self, i, ctx=None, timeout=H.IO_TIMEOUT):
        """A harness.Conn to node i's memcached port over TLS."""
        host, port = self.addr(i)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock = (ctx or self.ssl_context()).wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        c = H.Conn(sock, "node %d" % i)
        sock.settimeout(timeout)
        return c

    def stats(self, i):
        c = self.connect(i, timeout=10)
        try:
            return c.stats()
        finally:
            c.close()

    def wait_ready(self, i, timeout=READY_TIMEOUT):
        """Until node i says repl_state ready with all n-1 peers up."""
        def ready():
            st = self.stats(i)
            return st.get("repl_state") == "ready" and int(st.get("repl_peers_up", 0)) == self.n - 1
        try:
            wait_until(ready, timeout, "node %d ready with %d peers up" % (i, self.n - 1), 0.2)
        except H.Failure as e:
            fail("%s\n%s" % (e, self.log_tail(i)))

    # -- logs ----------------------------------------------------------------------
    def log_path(self, i):
        return os.path.join(self.dir, "node-%d" % i, "cloisterd.log")

    def coordinator_log_path(self):
        return os.path.join(self.dir, "coordinator", "cloisterd.log")

    def _log_paths(self):
        return [self.coordinator_log_path()] + [self.log_path(i) for i in self.ids()]

    def log(self, i):
        try:
            with open(self.log_path(i), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, i, lines=25):
        text = self.log(i).splitlines()
        return "node %d log (%s), last lines:\n%s" % (i, self.log_path(i),
                                                     "\n".join(text[-lines:]))

    def logs_tail(self, lines=10):
        return "\n".join(self.log_tail(i, lines) for i in self.ids())

    def check_logs(self):
        """Fails if a log shows a sanitizer report or a crash."""
        for path in self._log_paths():
            try:
                with open(path, "rb") as f:
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            for mark in SANITIZER_MARKS:
                i = text.find(mark)
                if i >= 0:
                    fail("%s reports %r:\n%s" % (path, mark, text[max(0, i - 500):i + 3000]))


# ---------------------------------------------------------------------------
# A cluster started by hand, with proxies in the peer path

class ManualCluster(Cluster):
    """What `cloister up` does, done here, so that nodes can advertise a
    proxy in front of their peer port.  proxies: a mitm.MitmProxy per
    node (self.proxies[i]); every connection another node dials to node i
    crosses proxies[i].  The manifest lists the nodes' peer (= proxy)
    addresses and leaves memcached/http for the nodes to report."""

    def __init__(self, env, nodes=3, consistency="strong", memory=None, proxies=True,
                 name="manual", seed=1):
        super().__init__(env, nodes, consistency, memory, name)
        self.use_proxies = proxies
        self.seed = seed
        self.proxies = {}
        self.procs = {}            # id (0 = coordinator) -> Popen
        self._logs = {}

    def up(self):
        reaper().register_dir(self.env.tmp, remove=not self.env.opts.keep)
        for attempt in range(1, 4):
            os.makedirs(self.dir)
            try:
                self._up()
                return self
            except H.Failure as e:
                self.down(check_logs=False)
                if "Address already in use" not in str(e) or attempt == 3:
                    raise
            except BaseException:
                self.down(check_logs=False)
                raise
            # Another program took a port between our pick and a listen:
            # keep the logs aside and start again on new ports.
            self.env.log("a port was taken meanwhile; starting again on new ports")
            os.rename(self.dir, "%s-port-clash-%d" % (self.dir, attempt))
            self._down = False
            self.procs, self.proxies, self._logs = {}, {}, {}
        return self

    def _up(self):
        from mitm import MitmProxy
        ports = free_ports(1 + 3 * self.n)
        self.coordinator = "127.0.0.1:%d" % ports[0]
        nodes = []
        for i in self.ids():
            mc, http, peer = ports[3 * i - 2:3 * i + 1]
            nd = {"id": i, "pid": 0, "memcached": "127.0.0.1:%d" % mc,
                  "http": "127.0.0.1:%d" % http, "peer": "127.0.0.1:%d" % peer,
                  "advertise": "127.0.0.1:%d" % peer, "state_dir": "node-%d" % i}
            if self.use_proxies:
                p = MitmProxy(target=("127.0.0.1", peer), seed=self.seed * 100 + i)
                self.proxies[i] = p
                nd["advertise"] = "127.0.0.1:%d" % p.port
            nodes.append(nd)
        self.measurement = sha256_file(self.cloisterd)
        self.token = secrets.token_hex(16)
        manifest = {"measurements": [self.measurement],
                    "nodes": [{"id": nd["id"], "peer": nd["advertise"]} for nd in nodes],
                    "tenants": [{"name": "default", "token": self.token,
                                 "namespaces": [{"prefix": "", "mode": self.consistency}]}],
                    "cert_validity_s": 86400}
        self.manifest = os.path.join(self.dir, "manifest.json")
        with open(self.manifest, "w") as f:
            json.dump(manifest, f, indent=2)
        self.info = {"coordinator": {"address": self.coordinator, "pid": 0}, "nodes": nodes,
                     "ca": "ca.pem", "client_cert": "client.pem", "client_key": "client.key",
                     "consistency": self.consistency, "measurement": self.measurement,
                     "cloisterd": self.cloisterd}
        platform = os.path.join(self.dir, "platform")
        sd = os.path.join(self.dir, "coordinator")
        self._spawn(0, [self.cloisterd, "--coordinator", "--manifest", self.manifest,
                        "--listen", self.coordinator, "--state-dir", sd,
                        "--platform-dir", platform, "--ready-file", os.path.join(sd, "ready.json")],
                    sd)
        r = subprocess.run([self.cli, "attest", "--coordinator", self.coordinator, "--expect",
                            self.measurement, "--platform-key",
                            os.path.join(platform, "attestation.pub"), "--tenant", "default",
                            "--token", self.token, "--out", self.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=CLI_TIMEOUT)
        check(r.returncode == 0, "cloister attest failed: %s" % r.stderr.decode(errors="replace"))
        self._save()
        for i in self.ids():
            self.start(i, ready=False)
        for i in self.ids():
            self.wait_ready(i)

    def _spawn(self, i, args, sd):
        os.makedirs(sd, exist_ok=True)
        ready = os.path.join(sd, "ready.json")
        try:
            os.unlink(ready)
        except OSError:
            pass
        log = open(os.path.join(sd, "cloisterd.log"), "ab")
        self.env.log("starting: " + " ".join(args))
        # No PR_SET_PDEATHSIG: it fires when the *thread* that started the
        # child ends, and nodes may be restarted from a fault thread; the
        # reaper covers this process dying.
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        reaper().register_pid(p.pid)
        self.procs[i] = p
        what = "node %d" % i if i else "the coordinator"
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(ready):
            if p.poll() is not None:
                fail("%s exited with status %s during start-up; log:\n%s"
                     % (what, p.returncode, self._tail(os.path.join(sd, "cloisterd.log"))))
            if time.monotonic() > deadline:
                fail("%s not ready after %d s" % (what, READY_TIMEOUT))
            time.sleep(0.02)
        if i:
            self.node(i)["pid"] = p.pid
        else:
            self.info["coordinator"]["pid"] = p.pid
        self._save()

    @staticmethod
    def _tail(path, lines=25):
        try:
            with open(path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _save(self):
        tmp = os.path.join(self.dir, ".cluster.json")
        with open(tmp, "w") as f:
            json.dump(self.info, f, indent=2)
        os.rename(tmp, os.path.join(self.dir, "cluster.json"))

    def reload(self):
        return self.info

    def start(self, i, ready=True):
        nd = self.node(i)
        sd = os.path.join(self.dir, nd["state_dir"])
        args = [self.cloisterd, "--join", self.coordinator, "--node-id", str(i),
                "--peer", nd["peer"], "--peer-advertise", nd["advertise"],
                "--listen", nd["memcached"], "--http", nd["http"], "--state-dir", sd,
                "--platform-dir", os.path.join(self.dir, "platform"),
                "--ready-file", os.path.join(sd, "ready.json")]
        if self.memory:
            args += ["--memory", str(self.memory)]
        self._spawn(i, args, sd)
        if ready:
            self.wait_ready(i)

    def stop(self, i, kill=False):
        """SIGTERM (the node must exit 0) or SIGKILL."""
        self.resume(i)
        p = self.procs.pop(i, None)
        self.node(i)["pid"] = 0
        self._save()
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            rc = p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            fail("node %d did not stop within 30 s of SIGTERM" % i)
        if not kill and rc != 0:
            fail("node %d exited with status %s on SIGTERM\n%s" % (i, rc, self.log_tail(i)))

    def exit_status(self, i):
        """None while node i runs, else its exit status."""
        p = self.procs.get(i)
        return p.poll() if p else None

    def down(self, check_logs=True):
        if self._down:
            return
        self._down = True
        errors = []
        for i in list(self.paused):
            self.resume(i)
        for i in sorted(self.procs, reverse=True):      # nodes first, the coordinator last
            p = self.procs[i]
            if p.poll() is not None:
                if i and check_logs:
                    errors.append("node %d had exited (status %s) before the end:\n%s"
                                  % (i, p.returncode, self.log_tail(i)))
                continue
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(30)
                if rc != 0 and check_logs:
                    errors.append("%s exited with status %s on SIGTERM" %
                                  ("node %d" % i if i else "the coordinator", rc))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                errors.append("%s did not stop within 30 s of SIGTERM" %
                              ("node %d" % i if i else "the coordinator"))
        self.procs = {}
        for p in self.proxies.values():
            p.stop()
        self._sweep()
        if check_logs:
            self.check_logs()
            if errors:
                fail("; ".join(errors))


# ---------------------------------------------------------------------------
# Recorded load: clients whose histories lincheck judges

LOAD_CLIENT_TIMEOUT = 12.0   # > the engine's 5 s operation time-out: SERVER_ERROR comes first
LOAD_RATE = 80               # ops per second per client at most: histories stay cheap to check
STRONG_MIX = ("get", "get", "gets", "gets", "set", "set", "cas", "cas", "delete", "incr")


class LoadClient(threading.Thread):
    """One recording client (lincheck.RecordingClient over TLS) of a
    cluster: random ops from `mix` on the shared keys, and now and then a
    set of its private key (one writer: its last acknowledged value must
    survive).  Starts on node c % n + 1 and fails over to the next node
    when a connection breaks.  Values are unique per write."""

    def __init__(self, env, cl, hist, c, shared, mix=STRONG_MIX, rate=LOAD_RATE):
        super().__init__(daemon=True, name="client-%d" % c)
        self.cl, self.hist, self.c = cl, hist, c
        self.shared = shared
        self.mix = mix
        self.rate = rate
        self.private = env.key("private%d" % c).decode()
        self.rng = random.Random("%d:client:%d" % (env.opts.seed, c))
        first = c % cl.n
        addrs = cl.addrs()
        self.rc = L.RecordingClient(hist, c, addrs[first:] + addrs[:first], cl.ssl_context(),
                                    timeout=LOAD_CLIENT_TIMEOUT)
        self.stop_ev = threading.Event()
        self.seq = 0
        self.ops = self.unknown = self.not_sent = 0
        self.last_ok = 0.0        # monotonic time of the last definite reply
        self.private_writes = []  # (value, "ok" | "unknown"), in order
        self.errors = []

    def value(self):
        self.seq += 1
        return "%d" % ((self.c + 1) * 10 ** 9 + self.seq * 1000)

    def run(self):
        tokens = {}
        t0 = time.monotonic()
        try:
            while not self.stop_ev.is_set():
                ahead = self.ops / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
                r = self._step(tokens)
                self.ops += 1
                if r is L.OUTCOME_UNKNOWN:
                    self.unknown += 1
                elif r is L.NOT_SENT:
                    self.not_sent += 1
                    time.sleep(0.05)        # its node is down: the next try fails over
                else:
                    self.last_ok = time.monotonic()
        except Exception as e:      # noqa: BLE001 - reported by the case
            self.errors.append("client %d: %r" % (self.c, e))
        finally:
            self.rc.close()

    def _step(self, tokens):
        if self.rng.random() < 0.15:
            v = self.value()
            r = self.rc.set(self.private, v)
            if r is not L.NOT_SENT:
                self.private_writes.append((v, "ok" if r == "STORED" else "unknown"))
            return r
        key = self.rng.choice(self.shared)
        kind = self.rng.choice(self.mix)
        if kind == "cas" and key not in tokens:
            kind = "gets"
        if kind == "get":
            return self.rc.get(key)
        if kind == "gets":
            r = self.rc.gets(key)
            if isinstance(r, list):
                tokens[key] = r[1]
            return r
        if kind == "set":
            return self.rc.set(key, self.value())
        if kind == "cas":
            return self.rc.cas(key, self.value(), tokens.pop(key))
        if kind == "delete":
            return self.rc.delete(key)
        return self.rc.incr(key, self.rng.randrange(1, 10))


def start_load(env, cl, hist, clients, shared_keys=4, mix=STRONG_MIX):
    shared = [env.key("k%d" % j).decode() for j in range(shared_keys)]
    out = [LoadClient(env, cl, hist, c, shared, mix) for c in range(clients)]
    for x in out:
        x.start()
    return out


def wait_progress(clients, since, timeout):
    """Until every client has had a definite reply after `since`; returns
    the seconds that took."""
    try:
        wait_until(lambda: all(x.last_ok > since for x in clients), timeout,
                   "every client succeeding again after the faults stopped", 0.05)
    except H.Failure as e:
        fail("%s: %s" % (e, "; ".join(
            "client %d: %s, %d ops, %d lost replies, last success %.1f s before"
            % (x.c, "running" if x.is_alive() else "ended", x.ops, x.unknown, since - x.last_ok)
            for x in clients)))
    return time.monotonic() - since


def stop_load(clients):
    for x in clients:
        x.stop_ev.set()
    for x in clients:
        x.join(LOAD_CLIENT_TIMEOUT * 3)
    check(not any(x.is_alive() for x in clients), "a client thread did not stop")
    errors = [e for x in clients for e in x.errors]
    check(not errors, "; ".join(errors))


def _read_everything(cl, hist, keys, tag):
    """Reads every key on every node (recorded as clients 100+i); no
    faults now, so every read must be answered."""
    reads = {}
    for i in cl.ids():
        rc = L.RecordingClient(hist, 100 + i, [cl.addr(i)], cl.ssl_context(),
                               timeout=LOAD_CLIENT_TIMEOUT)
        for key in keys:
            r = rc.get(key)
            check(r is not L.OUTCOME_UNKNOWN and r is not L.NOT_SENT,
                  "%s read of %s on node %d: no reply" % (tag, key, i))
            reads[(i, key)] = r
        rc.close()
    return reads


def final_round(cl, hist, clients):
    """After the faults (load stopped): no acknowledged write lost.  A
    private key has one writer, so on every node it holds that client's
    last acknowledged value, or a later one whose reply was lost; then a
    fresh write per client, acknowledged with no faults, reads back on
    every node.  Everything is recorded in hist."""
    reads = _read_everything(cl, hist, clients[0].shared + [x.private for x in clients], "final")
    for x in clients:
        done = [j for j, (v, s) in enumerate(x.private_writes) if s == "ok"]
        if not done:
            continue
        last = x.private_writes[done[-1]][0]
        allowed = {v for v, s in x.private_writes[done[-1]:]}
        for i in cl.ids():
            got = reads[(i, x.private)]
            check(got in allowed, "client %d's private key reads %r on node %d; its last "
                  "acknowledged write was %s (later writes with lost replies: %s)"
                  % (x.c, got, i, last, sorted(allowed - {last})))
    for x in clients:
        rc = L.RecordingClient(hist, x.c, [cl.addr(x.c % cl.n + 1)], cl.ssl_context(),
                               timeout=LOAD_CLIENT_TIMEOUT)
        v = x.value()
        r = rc.set(x.private, v)
        rc.close()
        check(r == "STORED", "final set by client %d: %r" % (x.c, r))
        x.private_writes.append((v, "ok"))
    reads = _read_everything(cl, hist, [x.private for x in clients], "read-back")
    for x in clients:
        for i in cl.ids():
            check(reads[(i, x.private)] == x.private_writes[-1][0],
                  "client %d's final write %s reads as %r on node %d"
                  % (x.c, x.private_writes[-1][0], reads[(i, x.private)], i))


def keep_history(env, name, hist):
    """Saves a history as BUILD/lincheck-histories/cluster-NAME.jsonl."""
    d = os.path.join(env.opts.build, "lincheck-histories")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "cluster-%s.jsonl" % name)
    L.save_history(hist.ops(), path)
    return path


def op_mix(ops):
    """{(op, outcome): count}, values folded into "value"."""
    mix = {}
    for o in ops:
        r = ("lost" if o.ret is None else "miss" if o.result is None
             else o.result if o.result in ("STORED", "NOT_STORED", "EXISTS", "NOT_FOUND",
                                           "DELETED", "CLIENT_ERROR") else "value")
        mix[(o.op, r)] = mix.get((o.op, r), 0) + 1
    return mix


def check_linearizable(env, hist, clients, name, timeout=150.0):
    """lincheck must say linearizable (a violation, or no verdict within
    the budget, fails and keeps the history); then the same history with
    one final private read turned into an older acknowledged value must
    be rejected, which shows the verdict came from a checker that reads
    these histories."""
    t1 = time.monotonic()
    res = L.check(hist, timeout=timeout)
    print("    lincheck: %s, %d ops, %.1f s"
          % (res.outcome, len(hist.ops()), time.monotonic() - t1))
    if res.outcome != L.LINEARIZABLE:
        fail("%s\nhistory kept in %s" % (res.explain(), keep_history(env, name, hist)))
    for x in clients:
        old = [v for v, s in x.private_writes[:-2] if s == "ok"]
        reads = [o for o in hist.ops() if o.key == x.private and o.op == "get"
                 and o.client >= 100 and o.result == x.private_writes[-1][0]]
        if old and reads:
            r = reads[-1]
            saved, r.result = r.result, old[0]
            try:
                res = L.check(hist.ops(), timeout=timeout)
            finally:
                r.result = saved
            check(res.outcome == L.VIOLATION, "a stale final read (%s instead of %s) was "
                  "judged %s" % (old[0], saved, res.outcome))
            return
    fail("no client has two acknowledged private writes: cannot build a stale history")


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--reap":
    _reap_main(sys.argv[2])
