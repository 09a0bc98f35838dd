#!/usr/bin/env python3
"""The test topology: three network namespaces and the real servers in them.

    client (pxf-c)            proxy (pxf-p)                      target (pxf-t)
    198.51.100.2/24  ------  198.51.100.1/24
    2001:db8:1::2/64         2001:db8:1::1/64
                             203.0.113.1/24      ------------   203.0.113.10/24
                             2001:db8:2::1/64                    2001:db8:2::10/64

* client: default routes (v4 and v6) via the proxy host, so a leak really leaves the client
  and shows in a capture there; resolv.conf points at 192.0.2.53, where nothing answers;
  /etc/hosts has only localhost.
* proxy: forwarding OFF, so a leaked packet never reaches the target. Its /etc/hosts maps
  target.example (v4+v6) and target6.example (v6 only). Runs Dante (no auth and username
  auth), microsocks (auth), `ssh -D` (SOCKS4a), hostile test proxies, a silent listener.
* target: HTTP server (port 80, dual stack) and TCP echo server (port 7); routes only to
  the proxy host's link.

Only documentation ranges and loopback are ever used (checked by `_doc_addr`).
Every process is started by this module, recorded, and stopped by its PID.

Used by tests/integration/conftest.py (pytest session fixture) and by scripts/run.sh:
    netns.py demo [-- CMD...]   bring everything up, run CMD in the client ns, tear down
    netns.py up                 bring the topology and servers up and keep them (Ctrl-C ends)
    netns.py down               remove a leftover topology (kills its processes by PID)
"""

import fcntl
import hashlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# PROXIFY_NS_TAG (a short word, default empty) renames the namespaces, the test user, the lock
# and the run directory, so that several runs on one machine (one checkout or several) can
# each run the suite at the same time: each serves its own pages and tokens from its own files.
TAG = os.environ.get("PROXIFY_NS_TAG", "")
if not TAG.isalnum() and TAG != "" or len(TAG) > 6:
    raise SystemExit("PROXIFY_NS_TAG must be at most 6 letters or digits")
RUN_DIR = REPO / "tests" / (f".run-{TAG}" if TAG else ".run")
NS_CLIENT, NS_PROXY, NS_TARGET = f"pxf{TAG}-c", f"pxf{TAG}-p", f"pxf{TAG}-t"
NAMESPACES = (NS_CLIENT, NS_PROXY, NS_TARGET)

CLIENT4, CLIENT6 = "198.51.100.2", "2001:db8:1::2"
PROXY4, PROXY6 = "198.51.100.1", "2001:db8:1::1"
PROXY_T4, PROXY_T6 = "203.0.113.1", "2001:db8:2::1"
TARGET4, TARGET6 = "203.0.113.10", "2001:db8:2::10"
DEAD_DNS = "192.0.2.53"
TARGET_NAME, TARGET6_NAME = "target.example", "target6.example"

# Ports in the proxy namespace.
DANTE_PORT = 1080  # no auth, SOCKS4 + SOCKS5, v4 and v6 listen addresses
DANTE_AUTH_PORT = 1081  # SOCKS5 username/password (system user)
MICROSOCKS_PORT = 1082  # SOCKS5 username/password
SSH_SOCKS_PORT = 1083  # ssh -D: SOCKS4, 4a, 5
HOSTILE_PORTS = {
    "garbage": 1090,
    "wrong-version": 1091,
    "short-close": 1092,
    "oversize-domain": 1093,
    "split": 1094,
    "silent": 1095,
    "data-first": 1096,
}
REJECT_PORT_BASE = 1100  # hostile `reject CODE` listens on 1100 + CODE (codes 1..8)
SILENT_PORT = 1098  # accepts, never answers
DOWN_PORT = 1099  # nothing listens
SSHD_PORT = 2222  # on 127.0.0.1 in the proxy ns
HTTP_PORT, ECHO_PORT = 80, 7
LOOPBACK_HTTP_PORT = 8080  # 127.0.0.1 in the client ns

TEST_USER = f"proxifytest{TAG}"
LOCK_FILE = f"/run/lock/proxify-netns{TAG}.lock"  # one topology per tag: the names are fixed
LOCK_WAIT_S = 900

_DOC_NETS = [ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32",
    "127.0.0.0/8", "::1/128")]


def _doc_addr(addr):
    """Refuse any address outside the documentation ranges and loopback."""
    ip = ipaddress.ip_interface(addr).ip
    if not any(ip in n for n in _DOC_NETS):
        raise ValueError(f"address {addr} is outside the documentation ranges and loopback")
    return addr


def log(msg):
    if os.environ.get("PXF_VERBOSE"):
        print(f"netns: {msg}", file=sys.stderr, flush=True)


def sh(*argv, check=True, timeout=20, input=None):
    """Runs a short command (ip, sysctl, ...) and returns its stdout."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def ns_pids(ns):
    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in r.stdout.split()] if r.returncode == 0 else []


def _wait_pid_gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.02)
    return False


def kill_ns_processes(ns):
    """Stops every process still inside namespace `ns`, each by its PID."""
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 3)):
        pids = ns_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        for pid in pids:
            _wait_pid_gone(pid, grace)


def remove_topology():
    """Removes namespaces and /etc/netns files left by this module (this run or an aborted one)."""
    existing = set(sh("ip", "netns", "list", check=False).split())
    for ns in NAMESPACES:
        if ns in existing:
            kill_ns_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


class Proc:
    """A process we started; stopped by its PID."""

    def __init__(self, name, argv, logfile):
        self.name, self.argv, self.logfile = name, argv, logfile
        self._log = open(logfile, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5):
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, sig)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._log.close()

    def log_tail(self, n=20):
        try:
            lines = Path(self.logfile).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _wait_tcp_script(host, port, timeout):
    return (
        "import socket,sys,time\n"
        f"end=time.monotonic()+{timeout}\n"
        "while time.monotonic()<end:\n"
        "    try:\n"
        f"        socket.create_connection(({host!r},{port}),timeout=0.5).close();sys.exit(0)\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
        "sys.exit(1)\n")


def _take_lock():
    """Waits (bounded) until no other run on this machine holds the topology."""
    Path(LOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
    f = open(LOCK_FILE, "a+")
    end, said = time.monotonic() + LOCK_WAIT_S, False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > end:
                f.close()
                raise RuntimeError(f"another test topology held {LOCK_FILE} for {LOCK_WAIT_S}s")
            if not said:
                f.seek(0)
                print(f"netns: waiting for another test topology (pid {f.read().strip() or '?'}) "
                      "to finish", file=sys.stderr, flush=True)
                said = True
            time.sleep(1)
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Topology:
    def __init__(self, run_dir=RUN_DIR):
        self.run_dir = Path(run_dir)
        self._lock = None
        self.procs = []
        self.token = secrets.token_hex(16)
        self.password = None
        self.blob_size = 0
        self.blob_sha256 = None
        self.loopback_token = secrets.token_hex(16)

    # ---- lifecycle -------------------------------------------------------------------
    def up(self):
        if os.geteuid() != 0:
            raise RuntimeError("the test topology needs root (network namespaces)")
        self._lock = self._lock or _take_lock()
        remove_topology()  # stale namespaces from an aborted run
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        os.chmod(self.run_dir, 0o755)
        for ns in NAMESPACES:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # client <-> proxy link
        sh("ip", "-n", NS_CLIENT, "link", "add", "eth0", "type", "veth", "peer", "name", "cli0",
           "netns", NS_PROXY)
        # proxy <-> target link
        sh("ip", "-n", NS_PROXY, "link", "add", "tgt0", "type", "veth", "peer", "name", "eth0",
           "netns", NS_TARGET)
        self._addr(NS_CLIENT, "eth0", f"{CLIENT4}/24", f"{CLIENT6}/64")
        self._addr(NS_PROXY, "cli0", f"{PROXY4}/24", f"{PROXY6}/64")
        self._addr(NS_PROXY, "tgt0", f"{PROXY_T4}/24", f"{PROXY_T6}/64")
        self._addr(NS_TARGET, "eth0", f"{TARGET4}/24", f"{TARGET6}/64")
        # The client sends everything to the proxy host: a leak leaves the client.
        sh("ip", "-n", NS_CLIENT, "route", "add", "default", "via", _doc_addr(PROXY4))
        sh("ip", "-n", NS_CLIENT, "-6", "route", "add", "default", "via", _doc_addr(PROXY6))
        # The proxy host never forwards: a leak never reaches the target.
        for key in ("net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"):
            sh(*in_ns(NS_PROXY, "sysctl", "-q", "-w", key))
        # Name service files, bind-mounted by `ip netns exec` over /etc/*.
        self._etc(NS_CLIENT, hosts="127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        self._etc(NS_PROXY, hosts=(
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
            f"{TARGET4} {TARGET_NAME}\n{TARGET6} {TARGET_NAME}\n{TARGET6} {TARGET6_NAME}\n"))
        self._etc(NS_TARGET, hosts="127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
        for ns in NAMESPACES:
            self.check_ns_has_only_doc_addresses(ns)

    def _addr(self, ns, dev, a4, a6):
        sh("ip", "-n", ns, "addr", "add", _doc_addr(a4), "dev", dev)
        sh("ip", "-n", ns, "addr", "add", _doc_addr(a6), "dev", dev, "nodad")
        sh("ip", "-n", ns, "link", "set", dev, "up")

    def _etc(self, ns, hosts):
        d = Path(f"/etc/netns/{ns}")
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text(hosts)
        # Nothing answers at 192.0.2.53 (and nothing routes there except from the client).
        (d / "resolv.conf").write_text(
            f"nameserver {_doc_addr(DEAD_DNS)}\noptions timeout:1 attempts:1\n")
        (d / "nsswitch.conf").write_text(
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")

    def check_ns_has_only_doc_addresses(self, ns):
        for line in sh("ip", "-n", ns, "-o", "addr", "show").splitlines():
            f = line.split()
            addr = f[3]
            if ipaddress.ip_interface(addr).ip.is_link_local:
                continue
            _doc_addr(addr)

    def down(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep tearing down
                print(f"netns: stopping {p.name} (pid {p.pid}): {e}", file=sys.stderr)
        self.procs.clear()
        if self._lock:  # only the run that holds the lock owns the namespaces
            remove_topology()
            self._lock.close()  # releases the flock
            self._lock = None

    # ---- processes ---------------------------------------------------------------------
    def spawn(self, ns, argv, name):
        p = Proc(name, in_ns(ns, *argv), self.run_dir / f"{name}.log")
        self.procs.append(p)
        log(f"started {name} pid {p.pid}")
        return p

    def wait_tcp(self, ns, host, port, proc=None, timeout=10):
        r = subprocess.run(in_ns(ns, sys.executable, "-c", _wait_tcp_script(host, port, timeout)),
                           capture_output=True, timeout=timeout + 10)
        if r.returncode != 0:
            extra = f"\n--- {proc.name} log ---\n{proc.log_tail()}" if proc else ""
            state = "" if proc is None or proc.alive() else f" ({proc.name} exited)"
            raise RuntimeError(f"{host}:{port} in {ns} did not accept within {timeout}s{state}{extra}")

    # ---- servers -----------------------------------------------------------------------
    def start_target_servers(self):
        www = self.run_dir / "www"
        www.mkdir()
        (www / "index.html").write_text(self.token + "\n")
        blob = secrets.token_bytes(256 * 1024 + 123)
        (www / "blob.bin").write_bytes(blob)
        self.blob_size, self.blob_sha256 = len(blob), hashlib.sha256(blob).hexdigest()
        http = self.spawn(NS_TARGET, [sys.executable, "-m", "http.server", "--bind", "::",
                                      "--directory", str(www), str(HTTP_PORT)], "target-http")
        echo = self.spawn(NS_TARGET, [sys.executable, str(HERE / "servers.py"), "echo",
                                      "::", str(ECHO_PORT)], "target-echo")
        for host in (TARGET4, TARGET6):
            self.wait_tcp(NS_TARGET, host, HTTP_PORT, http)
            self.wait_tcp(NS_TARGET, host, ECHO_PORT, echo)

    def start_client_loopback_http(self):
        www = self.run_dir / "www-loopback"
        www.mkdir()
        (www / "index.html").write_text(self.loopback_token + "\n")
        p = self.spawn(NS_CLIENT, [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                   "--directory", str(www), str(LOOPBACK_HTTP_PORT)], "client-loopback-http")
        self.wait_tcp(NS_CLIENT, "127.0.0.1", LOOPBACK_HTTP_PORT, p)

    def ensure_test_user(self):
        """The system user Dante's `socksmethod: username` checks; a fresh password per run."""
        if subprocess.run(["getent", "passwd", TEST_USER], capture_output=True).returncode != 0:
            sh("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER)
        self.password = secrets.token_hex(12)
        sh("chpasswd", input=f"{TEST_USER}:{self.password}\n")
        return self.password

    def _dante_conf(self, name, port, method):
        return (
            f"logoutput: {self.run_dir / (name + '.log')}\n"
            f"internal: {_doc_addr(PROXY4)} port = {port}\n"
            f"internal: {_doc_addr(PROXY6)} port = {port}\n"
            "external: tgt0\n"
            "clientmethod: none\n"
            f"socksmethod: {method}\n"
            "user.privileged: root\n"
            "user.unprivileged: nobody\n"
            "client pass {\n  from: 198.51.100.0/24 to: 0/0\n  log: error\n}\n"
            "client pass {\n  from: 2001:db8:1::/64 to: 0/0\n  log: error\n}\n"
            "socks pass {\n  from: 198.51.100.0/24 to: 0/0\n"
            "  command: connect bind udpassociate\n  log: connect error\n}\n"
            "socks pass {\n  from: 2001:db8:1::/64 to: 0/0\n"
            "  command: connect bind udpassociate\n  log: connect error\n}\n"
            "socks pass {\n  from: 0/0 to: 198.51.100.0/24\n  command: bindreply udpreply\n  log: error\n}\n"
            "socks pass {\n  from: 0/0 to: 2001:db8:1::/64\n  command: bindreply udpreply\n  log: error\n}\n")

    def start_dante(self, name, port, method):
        conf = self.run_dir / f"{name}.conf"
        conf.write_text(self._dante_conf(name, port, method))
        # Foreground (no -D), so the PID we hold is the server's.
        p = self.spawn(NS_PROXY, ["danted", "-f", str(conf), "-p", str(self.run_dir / f"{name}.pid")],
                       name + "-stdout")
        self.wait_tcp(NS_CLIENT, PROXY4, port, p)
        self.wait_tcp(NS_CLIENT, PROXY6, port, p)
        return p

    def start_microsocks(self):
        p = self.spawn(NS_PROXY, ["microsocks", "-i", PROXY4, "-p", str(MICROSOCKS_PORT),
                                  "-u", TEST_USER, "-P", self.password], "microsocks")
        self.wait_tcp(NS_CLIENT, PROXY4, MICROSOCKS_PORT, p)
        return p

    def start_ssh_socks(self):
        """sshd on 127.0.0.1:2222 in the proxy ns, and `ssh -D 198.51.100.1:1083` to it."""
        d = self.run_dir / "ssh"
        d.mkdir()
        hostkey, clientkey = d / "hostkey", d / "clientkey"
        for key in (hostkey, clientkey):
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "proxify-test", "-f", str(key))
        (d / "authorized_keys").write_text((d / "clientkey.pub").read_text())
        (d / "sshd_config").write_text(
            f"Port {SSHD_PORT}\nListenAddress 127.0.0.1\nHostKey {hostkey}\n"
            f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding yes\n"
            "PermitTTY no\nX11Forwarding no\nLogLevel ERROR\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        sshd = self.spawn(NS_PROXY, ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], "sshd")
        self.wait_tcp(NS_PROXY, "127.0.0.1", SSHD_PORT, sshd)
        ssh = self.spawn(NS_PROXY, [
            "ssh", "-F", "/dev/null", "-N", "-D", f"{PROXY4}:{SSH_SOCKS_PORT}",
            "-o", "GatewayPorts=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
            "-i", str(clientkey), "-p", str(SSHD_PORT), "root@127.0.0.1"], "ssh-D")
        self.wait_tcp(NS_CLIENT, PROXY4, SSH_SOCKS_PORT, ssh)

    def start_silent(self):
        p = self.spawn(NS_PROXY, [sys.executable, str(HERE / "servers.py"), "silent", PROXY4,
                                  str(SILENT_PORT)], "silent-listener")
        self.wait_tcp(NS_CLIENT, PROXY4, SILENT_PORT, p)

    def start_hostile(self, mode, port, *args):
        p = self.spawn(NS_PROXY, [sys.executable, str(HERE / "hostile_proxy.py"), str(port), mode,
                                  *map(str, args), "--host", PROXY4], f"hostile-{mode}-{port}")
        return p

    def start_all_hostile(self):
        started = [(self.start_hostile(m, port), port) for m, port in HOSTILE_PORTS.items()]
        started += [(self.start_hostile("reject", REJECT_PORT_BASE + c, c), REJECT_PORT_BASE + c)
                    for c in range(1, 9)]
        for p, port in started:
            self.wait_tcp(NS_CLIENT, PROXY4, port, p)

    def start_all(self):
        """Everything the integration suite uses."""
        self.start_target_servers()
        self.start_client_loopback_http()
        self.ensure_test_user()
        self.start_dante("dante-noauth", DANTE_PORT, "none")
        self.start_dante("dante-auth", DANTE_AUTH_PORT, "username")
        self.start_microsocks()
        self.start_ssh_socks()
        self.start_silent()
        self.start_all_hostile()

    def check_alive(self):
        dead = [f"{p.name} (pid {p.pid}, exit {p.popen.returncode}):\n{p.log_tail(10)}"
                for p in self.procs if not p.alive()]
        if dead:
            raise RuntimeError("test servers died:\n" + "\n".join(dead))


def _clean_env(extra=None):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def main(argv):
    cmd = argv[0] if argv else "demo"
    if cmd == "down":
        lock = _take_lock()
        try:
            remove_topology()
        finally:
            lock.close()
        return 0
    if cmd not in ("demo", "up"):
        print(__doc__, file=sys.stderr)
        return 2
    topo = Topology()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        topo.up()
        if cmd == "up":
            topo.start_all()
            print(f"topology up; password for {TEST_USER}: {topo.password}; Ctrl-C tears down",
                  file=sys.stderr)
            while True:
                time.sleep(3600)
        topo.start_target_servers()
        topo.start_dante("dante-noauth", DANTE_PORT, "none")
        rest = argv[1:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        if not rest:
            print("netns.py demo -- COMMAND...", file=sys.stderr)
            return 2
        print(f"run: client {CLIENT4} (routes only to the proxy host, its DNS server {DEAD_DNS} "
              f"is dead) -> Dante on {PROXY4}:{DANTE_PORT} -> {TARGET_NAME} ({TARGET4}, known only "
              f"to the proxy host)\n+ ip netns exec {NS_CLIENT} {' '.join(rest)}", file=sys.stderr, flush=True)
        r = subprocess.run(in_ns(NS_CLIENT, *rest), env=_clean_env(), stdin=subprocess.DEVNULL,
                           timeout=120)
        if r.returncode == 0:
            print(f"run: OK, the page above is the target's (random per run: {topo.token})",
                  file=sys.stderr)
        else:
            print(f"run: the command failed (exit {r.returncode})", file=sys.stderr)
        return r.returncode
    except KeyboardInterrupt:
        return 130
    finally:
        topo.down()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
