"""Fixtures of the integration suite: the namespace topology (once per session), a packet
capture in the client namespace (once per test) and helpers that run commands there."""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import leakcheck  # noqa: E402
import netns  # noqa: E402

PREREQS = {
    "danted": "dante-server", "microsocks": "microsocks", "tcpdump": "tcpdump", "ip": "iproute2",
    "curl": "curl", "ssh": "openssh-client", "ssh-keygen": "openssh-client",
    "chpasswd": "passwd", "useradd": "passwd",
}

# Every proxified command runs with these (2 s to reach the proxy, 2 s for the handshake).
TIMEOUT_ENV = {"PROXIFY_CONNECT_TIMEOUT": "2", "PROXIFY_TIMEOUT": "2"}
PROXIFY_TIMEOUT_S = 2.0
COMMAND_TIMEOUT = 30  # hard limit for any one command of a test


def _target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR") or netns.REPO / "target")


PROXIFY_BIN = Path(os.environ.get("PROXIFY_BIN") or _target_dir() / "release" / "proxify")
SHIM = PROXIFY_BIN.parent / "libproxify.so"


def pytest_configure(config):
    # A SIGTERM (CI time limit, `timeout`) must still tear the topology down: make it an
    # interrupt, which pytest answers by running the fixtures' teardown.
    def on_term(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)


def check_prereqs():
    problems = []
    if os.geteuid() != 0:
        problems.append("the integration tests need root (network namespaces, tcpdump)")
    for tool, pkg in PREREQS.items():
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (Debian package {pkg})")
    if not Path("/usr/sbin/sshd").exists():
        problems.append("/usr/sbin/sshd not found (Debian package openssh-server)")
    if problems:
        pytest.fail("missing prerequisites: " + "; ".join(problems) + " -- install with: scripts/setup.sh",
                    pytrace=False)


@pytest.fixture(scope="session")
def topo():
    check_prereqs()
    t = netns.Topology()
    try:
        t.up()
        t.start_all()
    except BaseException as e:
        t.down()
        pytest.fail(f"could not bring up the test topology: {e}", pytrace=False)
    try:
        yield t
    finally:
        t.down()


@pytest.fixture
def capture(topo, request):
    """A packet capture in the client namespace for the duration of one test."""
    topo.check_alive()
    name = request.node.name.replace("/", "_").replace("[", "-").replace("]", "")[:120]
    d = topo.run_dir / "captures"
    d.mkdir(exist_ok=True)
    cap = leakcheck.Capture(d / f"{name}.pcap")
    try:
        yield cap
    finally:
        cap.stop()


@pytest.fixture
def proxify_bin():
    for f in (PROXIFY_BIN, SHIM):
        if not f.exists():
            pytest.fail(f"{f} is missing: run cargo build --release (or scripts/setup.sh)", pytrace=False)
    return PROXIFY_BIN


@dataclass
class Result:
    argv: list
    rc: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def signalled(self):
        return self.rc < 0

    def proxify_lines(self):
        return [ln for ln in self.stderr.splitlines() if ln.startswith("proxify:")]

    def __str__(self):
        def cut(s, n=1500):
            return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"

        return (f"command: {' '.join(map(str, self.argv))}\nexit: {self.rc}  elapsed: {self.elapsed:.2f}s\n"
                f"stdout: {cut(self.stdout)!r}\nstderr: {cut(self.stderr)!r}")


def run_in_client(argv, env=None, timeout=COMMAND_TIMEOUT, input=None):
    """Runs argv in the client namespace with a clean environment (no *_proxy variables)."""
    full_env = netns._clean_env(env)
    t0 = time.monotonic()
    p = subprocess.Popen(netns.in_ns(netns.NS_CLIENT, *map(str, argv)), env=full_env,
                         stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)  # the process group we created for it
        out, err = p.communicate(timeout=10)
        raise AssertionError(f"command did not finish within {timeout}s: {' '.join(map(str, argv))}\n"
                             f"stdout: {out[-1000:]!r}\nstderr: {err[-1000:]!r}")
    return Result(list(argv), p.returncode, out, err, time.monotonic() - t0)


def run_proxified(proxy, cmd, *, opts=(), env=None, timeout=COMMAND_TIMEOUT):
    """`proxify run -x PROXY [OPTS] -- CMD` in the client namespace."""
    full = dict(TIMEOUT_ENV)
    full.update(env or {})
    argv = [str(PROXIFY_BIN), "run"] + (["-x", proxy] if proxy else []) + list(opts) + ["--", *cmd]
    return run_in_client(argv, env=full, timeout=timeout)


FETCH_TIMEOUT = 5  # seconds a client may take for one fetch (the namespaces answer in ms)


def curl(url, *extra):
    return ["curl", "-sS", "--max-time", str(FETCH_TIMEOUT), *extra, url]


def py(code):
    return [sys.executable, "-c", code]


def urllib_get(url):
    return py("import urllib.request;"
              f"print(urllib.request.urlopen({url!r},timeout={FETCH_TIMEOUT}).read().decode())")


# ---- failure diagnostics: what the servers logged during a failed test --------------------
def _log_sizes(run_dir):
    return {p: p.stat().st_size for p in Path(run_dir).glob("*.log")}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    t = item.funcargs.get("topo")
    item._pxf_logs = _log_sizes(t.run_dir) if t else None
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    before = getattr(item, "_pxf_logs", None)
    t = item.funcargs.get("topo")
    if before is None or t is None:
        return
    for path, size in sorted(_log_sizes(t.run_dir).items()):
        start = before.get(path, 0)
        if size > start:
            with open(path, "rb") as f:
                f.seek(max(start, size - 3000))
                text = f.read().decode(errors="replace")
            rep.sections.append((f"{path.name} during this test", text))
    cap = item.funcargs.get("capture")
    if cap is not None:
        try:
            rep.sections.append(("client capture", cap.summary()))
        except Exception as e:  # a broken capture must not hide the real failure
            rep.sections.append(("client capture", f"unreadable: {e}"))
