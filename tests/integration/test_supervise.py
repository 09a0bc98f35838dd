"""The seccomp supervisor (issue 13): a statically linked client (csrc/sup_client.c, built with
`cc -static`, which the shim cannot reach) through the proxy by address, its connects done on
its own socket by `proxify run`'s supervisor. Capture on: nothing may leave for anywhere but
the proxy host."""

import os
import signal
import subprocess
import sys
import time

import pytest

import netns
from conftest import PROXIFY_BIN, PROXIFY_TIMEOUT_S, TIMEOUT_ENV, run_in_client, run_proxified
from hardcase import DANTE, DANTE6, INSTALL_HINT, PROXY_DOWN, SILENT, no_crash, start_loopback_echo
from leakcheck import assert_no_leak
from test_chains import FAR, dante_auth, far, micro  # noqa: F401 (far is a fixture)

HERE = os.path.dirname(os.path.abspath(__file__))
P4, T4, T6, ECHO = netns.PROXY4, netns.TARGET4, netns.TARGET6, netns.ECHO_PORT
MSG = "sup-echo-ok"
SUP = ["--mode", "supervise"]


def build_static(name):
    """csrc/NAME.c built with cc -static, once per session, where any user can run it."""
    out_dir = f"/tmp/proxify-sup{netns.TAG}-bin"
    out = os.path.join(out_dir, name)
    src = os.path.join(HERE, "csrc", f"{name}.c")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    os.makedirs(out_dir, exist_ok=True)
    os.chmod(out_dir, 0o755)
    r = subprocess.run(["cc", "-static", "-O2", "-Wall", "-o", out, src], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"cc -static could not build {src}:\n{r.stderr}\n(gcc and libc6-dev are needed "
                    f"-- {INSTALL_HINT})", pytrace=False)
    return out


@pytest.fixture(scope="module")
def client():
    return build_static("sup_client")


def expect_echo(r, what, peer=f"peer {T4} {ECHO}"):
    no_crash(r, what)
    assert r.rc == 0, f"{what}: failed\n{r}"
    assert peer in r.stdout, f"{what}: getpeername did not report the destination\n{r}"
    assert MSG in r.stdout, f"{what}: the echo did not come back\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


def expect_errno(r, what, name, within):
    no_crash(r, what)
    assert r.rc == 3, f"{what}: expected a failed connect\n{r}"
    assert f"connect: {name}" in r.stdout, f"{what}: expected {name}\n{r}"
    assert MSG not in r.stdout, f"{what}: data came through\n{r}"
    assert r.elapsed < within, f"{what}: took {r.elapsed:.1f}s\n{r}"
    assert r.proxify_lines(), f"{what}: no 'proxify:' line\n{r}"


@pytest.mark.parametrize("nonblock", [False, True], ids=["blocking", "epoll"])
def test_static_client_through_dante(topo, capture, proxify_bin, client, nonblock):
    opts = ["-n"] if nonblock else []
    r = run_proxified(DANTE, [client, *opts, T4, ECHO, MSG], opts=SUP)
    expect_echo(r, "static client through Dante")
    assert_no_leak(capture, "static client through Dante")


def test_auto_mode_supervises_a_static_program(topo, capture, proxify_bin, client):
    r = run_proxified(DANTE, [client, T4, ECHO, MSG])
    expect_echo(r, "static client, default mode")
    assert_no_leak(capture, "static client, default mode")


@pytest.mark.parametrize("proxy", [DANTE, DANTE6], ids=["v4-proxy", "v6-proxy"])
def test_ipv6_destination(topo, capture, proxify_bin, client, proxy):
    r = run_proxified(proxy, [client, T6, ECHO, MSG], opts=SUP)
    expect_echo(r, "static client to an IPv6 target", peer=f"peer {T6} {ECHO}")
    assert_no_leak(capture, "static client to an IPv6 target")


@pytest.mark.parametrize("which", ["microsocks", "dante-auth"])
def test_static_client_with_auth(topo, capture, proxify_bin, client, which):
    proxy = micro(topo) if which == "microsocks" else dante_auth(topo)
    r = run_proxified(proxy, [client, "-n", T4, ECHO, MSG], opts=SUP)
    expect_echo(r, f"static client through {which}")
    assert_no_leak(capture, f"static client through {which}")


def test_wrong_password_fails_closed(topo, capture, proxify_bin, client):
    proxy = f"socks5h://{netns.TEST_USER}:wrong-{topo.password}@{P4}:{netns.MICROSOCKS_PORT}"
    r = run_proxified(proxy, [client, T4, ECHO, MSG], opts=SUP)
    expect_errno(r, "wrong password", "EACCES", 10)
    # The line says where the credentials came from (issue 16).
    assert any("the credentials come from the proxy URL given with -x" in ln for ln in r.proxify_lines()), str(r)
    assert_no_leak(capture, "wrong password")


def test_two_hop_chain(topo, far, capture, proxify_bin, client):  # noqa: F811
    r = run_proxified(None, [client, T4, ECHO, MSG], opts=SUP + ["-x", DANTE, "-x", FAR])
    expect_echo(r, "static client through a 2-hop chain")
    assert_no_leak(capture, "static client through a 2-hop chain")


@pytest.mark.parametrize("nonblock", [False, True], ids=["blocking", "epoll"])
def test_dynamic_chain_skips_a_dead_hop(topo, capture, proxify_bin, client, nonblock):
    """The supervisor's dynamic chain retries without the hop that proved dead (the retry of
    proxify_core::hops, the same as the shim's), and says so under -v."""
    opts = ["-n"] if nonblock else []
    r = run_proxified(None, [client, *opts, T4, ECHO, MSG],
                      opts=SUP + ["-x", PROXY_DOWN, "-x", DANTE, "--chain-mode", "dynamic", "-v"])
    no_crash(r, "dynamic chain, dead first hop")
    assert r.rc == 0 and MSG in r.stdout, f"dynamic chain, dead first hop: failed\n{r}"
    assert f"skipping dead hop socks5h://{P4}:{netns.DOWN_PORT}" in r.stderr, \
        f"-v should log the skipped hop\n{r}"
    assert_no_leak(capture, "dynamic chain, dead first hop")


@pytest.mark.parametrize("nonblock", [False, True], ids=["blocking", "epoll"])
def test_proxy_down(topo, capture, proxify_bin, client, nonblock):
    opts = ["-n"] if nonblock else []
    r = run_proxified(PROXY_DOWN, [client, *opts, T4, ECHO, MSG], opts=SUP)
    expect_errno(r, "proxy down", "ECONNREFUSED", 10)
    assert_no_leak(capture, "proxy down")


def test_silent_proxy_times_out(topo, capture, proxify_bin, client):
    r = run_proxified(SILENT, [client, T4, ECHO, MSG], opts=SUP)
    expect_errno(r, "silent proxy", "ETIMEDOUT", PROXIFY_TIMEOUT_S + 8)
    assert r.elapsed >= PROXIFY_TIMEOUT_S - 0.5, f"gave up before the timeout\n{r}"
    assert_no_leak(capture, "silent proxy")


@pytest.mark.parametrize("mode,errno_name", [("garbage", "EPROTO"), ("short-close", "ECONNRESET"),
                                             ("wrong-version", "EPROTO")])
def test_hostile_proxy(topo, capture, proxify_bin, client, mode, errno_name):
    proxy = f"socks5h://{P4}:{netns.HOSTILE_PORTS[mode]}"
    r = run_proxified(proxy, [client, T4, ECHO, MSG], opts=SUP)
    no_crash(r, mode)
    assert r.rc == 3 and "connect: " in r.stdout and MSG not in r.stdout, r
    assert r.proxify_lines(), r
    assert_no_leak(capture, f"hostile proxy {mode}")


def test_slow_proxy_does_not_block_another_connect(topo, capture, proxify_bin, client):
    """One supervisor, two programs: one connect stuck at a silent proxy, one through Dante
    (a rule); the second finishes long before the first times out."""
    conf = topo.run_dir / "sup-slow.toml"
    conf.write_text(f'proxy = "{SILENT}"\n[[chain]]\nname = "fast"\nhops = ["{DANTE}"]\n'
                    f'[[rule]]\nmatch = "{T4}"\naction = "proxy fast"\n')
    code = (
        "import subprocess, sys, time\n"
        f"slow = subprocess.Popen([{client!r}, '192.0.2.77', '80', 'x'], stdout=subprocess.PIPE, text=True)\n"
        "t0 = time.monotonic()\n"
        f"fast = subprocess.run([{client!r}, {T4!r}, '{ECHO}', {MSG!r}], capture_output=True, text=True)\n"
        "took = time.monotonic() - t0\n"
        "print(fast.stdout, 'fast-took', round(took, 2))\n"
        "print('slow:', slow.communicate()[0])\n")
    r = run_proxified(None, [sys.executable, "-c", code], opts=SUP + ["-f", str(conf)])
    no_crash(r, "slow and fast")
    assert MSG in r.stdout and "slow: connect: ETIMEDOUT" in r.stdout, r
    took = float(r.stdout.split("fast-took")[1].split()[0])
    assert took < PROXIFY_TIMEOUT_S, f"the fast connect waited for the slow one\n{r}"
    assert_no_leak(capture, "slow and fast")


def test_loopback_is_connected_by_the_supervisor(topo, capture, proxify_bin, client):
    srv = start_loopback_echo(topo, "127.0.0.1", 7007, "sup-loop-echo")
    try:
        r = run_proxified(PROXY_DOWN, [client, "127.0.0.1", 7007, MSG], opts=SUP)
        expect_echo(r, "loopback", peer="peer 127.0.0.1 7007")
    finally:
        srv.stop()
    assert_no_leak(capture, "loopback")


def test_rules_direct_and_deny(topo, capture, proxify_bin, client):
    # Dante's own port, direct by rule: connected by the supervisor, getpeername the real peer.
    r = run_proxified(PROXY_DOWN, [client, P4, netns.DANTE_PORT, "x"], opts=SUP + ["--direct", f"{P4}/32"])
    no_crash(r, "direct rule")
    assert f"peer {P4} {netns.DANTE_PORT}" in r.stdout, r
    r = run_proxified(DANTE, [client, T4, ECHO, MSG], opts=SUP + ["--rule", f"{T4} deny"])
    expect_errno(r, "deny rule", "EACCES", 5)
    assert_no_leak(capture, "rules")


def test_sigalrm_storm_during_connects(topo, capture, proxify_bin, client):
    r = run_proxified(DANTE, [client, "-a", "-c", "20", T4, ECHO, MSG], opts=SUP)
    no_crash(r, "SIGALRM storm")
    assert r.rc == 0 and r.stdout.count(MSG) == 20, r
    assert "connect:" not in r.stdout, r
    assert_no_leak(capture, "SIGALRM storm")


def test_supervisor_killed_mid_run(topo, capture, proxify_bin, client):
    """After the supervisor is SIGKILLed, the program's next connect fails (ENOSYS): nothing
    goes direct."""
    env = netns._clean_env(dict(TIMEOUT_ENV))
    argv = [str(PROXIFY_BIN), "run", "-x", DANTE, *SUP, "--", client, "-w", "-c", "2", T4, str(ECHO), MSG]
    p = subprocess.Popen(netns.in_ns(netns.NS_CLIENT, *argv), env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write("go\n")
        p.stdin.flush()
        first = []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            first.append(line)
            if MSG in line:
                break
        assert any(MSG in ln for ln in first), f"first connect failed: {first}"
        # `ip netns exec` execs proxify: p.pid is the supervisor; the program is its child.
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1, f"expected one child of the supervisor: {kids}"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        prog = int(kids[0])
        # The program lives on (orphaned): its next connect must fail.
        p.stdin.write("go\n")
        p.stdin.flush()
        p.stdin.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and os.path.exists(f"/proc/{prog}"):
            time.sleep(0.05)
        rest = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert "connect: ENOSYS" in rest, f"after the supervisor died: {rest!r}"
    assert MSG not in rest
    assert_no_leak(capture, "supervisor killed")


def test_exit_status_and_forwarded_signal(topo, proxify_bin):
    r = run_in_client([PROXIFY_BIN, "run", "-x", DANTE, *SUP, "--", "/bin/sh", "-c", "exit 7"])
    assert r.rc == 7, r
    r = run_in_client([PROXIFY_BIN, "run", "-x", DANTE, *SUP, "--", "/bin/sh", "-c", "kill -USR1 $$"])
    assert r.rc == -signal.SIGUSR1, r
    env = netns._clean_env(dict(TIMEOUT_ENV))
    script = 'trap "echo got-term; exit 9" TERM; echo ready; while :; do sleep 0.05; done'
    argv = [str(PROXIFY_BIN), "run", "-x", DANTE, *SUP, "--", "/bin/sh", "-c", script]
    p = subprocess.Popen(netns.in_ns(netns.NS_CLIENT, *argv), env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    assert p.returncode == 9 and "got-term" in out, (p.returncode, out, err)


def test_unprivileged_user(topo, capture, proxify_bin, client):
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", str(PROXIFY_BIN), "run",
            "-x", DANTE, *SUP, "--", client, "-n", T4, ECHO, MSG]
    r = run_in_client(argv, env=dict(TIMEOUT_ENV, HOME="/nonexistent"))
    expect_echo(r, "as nobody")
    assert_no_leak(capture, "as nobody")


@pytest.mark.parametrize("wait", ["killable", "interruptible"])
def test_restarted_connect_during_a_slow_handshake(topo, capture, proxify_bin, client, wait):
    """A SIGALRM (SA_RESTART) every 2 ms while the proxy answers byte by byte (hostile
    'split'). "interruptible": the filter without WAIT_KILLABLE_RECV (as before Linux 5.19), so
    the signals interrupt blocking connects the supervisor is working on and the kernel
    restarts each as a new notification on the same socket, which must get the handshake's
    result (never EALREADY, never a second handshake, never direct)."""
    proxy = f"socks5h://{P4}:{netns.HOSTILE_PORTS['split']}"
    env = {"PROXIFY_TEST_FAULT": "no-killable-wait"} if wait == "interruptible" else {}
    r = run_proxified(proxy, [client, "-a", "-c", "10", T4, ECHO, MSG], opts=SUP, env=env)
    no_crash(r, f"SIGALRM storm, slow handshake, {wait}")
    assert "connect:" not in r.stdout, r
    assert r.rc == 0 and r.stdout.count(MSG) == 10, r
    assert_no_leak(capture, f"SIGALRM storm, slow handshake, {wait}")



def _pids_with_arg(arg):
    """PIDs of the processes whose command line holds `arg` (a path unique to one test)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if arg.encode() in f.read().split(b"\0"):
                    out.append(int(d))
        except OSError:
            pass
    return out


def test_daemonized_grandchild_is_supervised(topo, capture, proxify_bin):
    """fork, setsid, fork: the grandchild connects after the command has exited; the
    supervisor proxify left in the background carries it."""
    prog = build_static("sup_daemon")
    out = topo.run_dir / f"sup-daemon-{os.getpid()}.out"
    if out.exists():
        out.unlink()
    try:
        r = run_proxified(DANTE, [prog, str(out), T4, ECHO, MSG], opts=SUP)
        no_crash(r, "daemon")
        assert r.rc == 0, r
        end = time.monotonic() + 20
        text = ""
        while time.monotonic() < end:
            text = out.read_text() if out.exists() else ""
            if " done " in text:
                break
            time.sleep(0.05)
        assert " done 0" in text, f"the daemon's connect: {text!r}"
        assert f"peer {T4} {ECHO}" in text and MSG in text, text
    finally:
        # The daemon and the background supervisor end by themselves; stop any left, by PID.
        for pid in _pids_with_arg(str(out)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert_no_leak(capture, "daemonized grandchild")


def test_i386_system_calls_are_refused(topo, capture, proxify_bin):
    """`int $0x80` from a static x86-64 program (socketcall and the i386 socket): EPERM,
    nothing leaves (unsupervised, both would make a socket)."""
    prog = build_static("sup_i386")
    r = run_proxified(DANTE, [prog], opts=SUP)
    no_crash(r, "int 0x80")
    assert r.rc == 0, r
    assert "socketcall -1\n" in r.stdout and "socket -1\n" in r.stdout, r  # -EPERM
    assert_no_leak(capture, "int 0x80")


def test_static_udp_is_refused_never_direct(topo, capture, proxify_bin):
    """A static program's datagrams to a proxied destination (sendto, sendmsg, a UDP connect):
    refused with EOPNOTSUPP, nothing sent; a datagram to loopback goes as usual."""
    udp = build_static("sup_udp")
    r = run_proxified(DANTE, [udp, T4, str(ECHO)])
    no_crash(r, "static UDP")
    out = r.stdout
    for what in ("sendto", "sendmsg", "connect"):
        assert f"{what} -1 EOPNOTSUPP" in out, f"{what} must be refused:\n{r}"
    assert "loopback ok" in out, r
    assert_no_leak(capture, "static UDP")
