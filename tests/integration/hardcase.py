"""Shared by the hard-case tests (test_hard_*.py, issue 5): the C helpers in csrc/ built with
cc, extra servers each module starts (and stops by PID), and the checks every case makes."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
INSTALL_HINT = "install with: scripts/setup.sh"

P4, P6 = netns.PROXY4, netns.PROXY6
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
DANTE6 = f"socks5h://[{P6}]:{netns.DANTE_PORT}"
PROXY_DOWN = f"socks5h://{P4}:{netns.DOWN_PORT}"
SILENT = f"socks5h://{P4}:{netns.HOSTILE_PORTS['silent']}"

CRASH_MARKS = ("panicked at", "RUST_BACKTRACE", "stack backtrace", "Segmentation fault")


def require_tools(*tools):
    """A missing tool is a failure that says how to install it, never a skip."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found -- {INSTALL_HINT}", pytrace=False)


def build_c(topo, name):
    """Compiles csrc/NAME.c into the run directory (once per run) and returns the binary."""
    require_tools("cc")
    out = topo.run_dir / "hard-bin" / name
    if out.exists():
        return out
    out.parent.mkdir(exist_ok=True)
    src = CSRC / f"{name}.c"
    r = subprocess.run(["cc", "-O2", "-Wall", "-pthread", "-o", str(out), str(src)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"cc could not build {src}:\n{r.stderr}\n(a C compiler and the libc headers are "
                    f"needed -- {INSTALL_HINT})", pytrace=False)
    return out


class Server:
    """A helper server in one namespace, started for one test module and stopped by its PID.
    Not registered with the topology (whose check_alive would then see it stopped)."""

    def __init__(self, topo, ns, argv, name, tcp=None):
        self.name = name
        self.proc = netns.Proc(name, netns.in_ns(ns, *map(str, argv)), topo.run_dir / f"{name}.log")
        if tcp:
            try:
                topo.wait_tcp(ns, tcp[0], tcp[1], self.proc)
            except BaseException:
                self.stop()
                raise

    def alive(self):
        return self.proc.alive()

    def stop(self):
        self.proc.stop()


def start_or_fail(fn, what):
    try:
        return fn()
    except Exception as e:
        pytest.fail(f"could not start {what}: {e}", pytrace=False)


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""


def wait_udp_echo(ns, host, port, proc, timeout=10):
    probe = (
        "import socket,sys,time\n"
        f"end=time.monotonic()+{timeout}\n"
        "while time.monotonic()<end:\n"
        f"    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.3)\n"
        "    try:\n"
        f"        s.sendto(b'probe',({host!r},{port}))\n"
        "        if s.recvfrom(100)[0]==b'probe': sys.exit(0)\n"
        "    except OSError: time.sleep(0.05)\n"
        "sys.exit(1)\n")
    r = subprocess.run(netns.in_ns(ns, sys.executable, "-c", probe), capture_output=True,
                       timeout=timeout + 10)
    if r.returncode != 0:
        raise RuntimeError(f"UDP echo on {host}:{port} in {ns} did not answer within {timeout}s:\n"
                           f"{proc.log_tail()}")


def start_udp_echo(topo, port=netns.ECHO_PORT):
    """UDP echo on the target host (port 7, dual stack)."""
    s = Server(topo, netns.NS_TARGET, [sys.executable, "-c", UDP_ECHO, port], "hard-udp-echo")
    try:
        wait_udp_echo(netns.NS_TARGET, netns.TARGET4, port, s.proc)
    except BaseException:
        s.stop()
        raise
    return s


def start_loopback_echo(topo, host, port, name):
    """TCP echo in the client namespace on a loopback address (never proxied)."""
    return Server(topo, netns.NS_CLIENT, [sys.executable, str(HERE / "servers.py"), "echo", host, port],
                  name, tcp=(host, port))


# ---- checks ------------------------------------------------------------------------------
def no_crash(r, what):
    assert not r.signalled, f"{what}: killed by signal {-r.rc} (a crash or a hang)\n{r}"
    for bad in CRASH_MARKS:
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"


def expect_ok(r, what, quiet=True):
    no_crash(r, what)
    assert r.rc == 0, f"{what}: the command failed\n{r}"
    if quiet:
        assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


def expect_fail_closed(r, what, must_not_contain=(), line=True):
    """Failed with an error (no crash, no hang), nothing of the remote side came through, and
    (unless line=False) proxify said why in one 'proxify:' line."""
    no_crash(r, what)
    assert r.rc != 0, f"{what}: the command should have failed\n{r}"
    for s in must_not_contain:
        assert s not in r.stdout, f"{what}: {s!r} came through anyway\n{r}"
    if line:
        assert r.proxify_lines(), f"{what}: no line starting 'proxify:' on stderr\n{r}"


def proxy_syns(capture, port=netns.DANTE_PORT):
    """Outgoing TCP packets from the client to a proxy port (v4 or v6)."""
    return capture.sent_to(P4, proto=6, dport=port) + capture.sent_to(P6, proto=6, dport=port)


def kv(text):
    """key=value lines (and space-separated key=value pairs) into a dict."""
    out = {}
    for line in text.splitlines():
        for part in line.split():
            if "=" in part:
                k, v = part.split("=", 1)
                out[k] = v
    return out


def wait_until(pred, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
