"""`proxify run --enforce` (issue 13): the shim preloaded AND the seccomp supervisor under it.
The shim carries what it sees; a connect it cannot see (an inline `syscall` instruction, a
static program the command execs) reaches the supervisor, which carries it through the proxy
on the program's own socket. The shim's own connects to the proxy go as they are. Capture on:
nothing may leave for anywhere but the proxy host."""

import os
import subprocess
import sys

import pytest

import netns
from conftest import curl, run_proxified
from hardcase import DANTE, INSTALL_HINT, PROXY_DOWN, expect_fail_closed, no_crash
from leakcheck import assert_no_leak
from test_supervise import build_static

HERE = os.path.dirname(os.path.abspath(__file__))
P4, T4, ECHO = netns.PROXY4, netns.TARGET4, netns.ECHO_PORT
MSG = "enforce-echo-ok"
ENF = ["--enforce"]
PROXY_NAME = "proxy.example"  # known only to the loopback dnsmasq below
RESOLV = f"/etc/netns/{netns.NS_CLIENT}/resolv.conf"


@pytest.fixture(scope="module")
def raw_client():
    """csrc/raw_client.c (sup_client.c with inline-syscall connects), dynamically linked."""
    out_dir = f"/tmp/proxify-sup{netns.TAG}-bin"
    out = os.path.join(out_dir, "raw_client")
    srcs = [os.path.join(HERE, "csrc", n) for n in ("raw_client.c", "sup_client.c")]
    if os.path.exists(out) and all(os.path.getmtime(out) >= os.path.getmtime(s) for s in srcs):
        return out
    os.makedirs(out_dir, exist_ok=True)
    os.chmod(out_dir, 0o755)
    r = subprocess.run(["cc", "-O2", "-Wall", "-o", out, srcs[0]], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        pytest.fail(f"cc could not build {srcs[0]}:\n{r.stderr}\n({INSTALL_HINT})", pytrace=False)
    return out


@pytest.fixture(scope="module")
def static_client():
    return build_static("sup_client")


@pytest.fixture
def proxy_by_name(topo):
    """A dnsmasq on 127.0.0.1:53 in the client namespace that alone knows PROXY_NAME, and
    resolv.conf pointing at it for the test; stopped by PID, resolv.conf put back."""
    d = topo.run_dir / "enforce-dns"
    d.mkdir(exist_ok=True)
    p = netns.Proc("enforce-dnsmasq", netns.in_ns(netns.NS_CLIENT,
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        "--listen-address=127.0.0.1", "--port=53", f"--address=/{PROXY_NAME}/{P4}",
        f"--pid-file={d / 'dnsmasq.pid'}", "--user=root"), d / "dnsmasq.out")
    try:
        topo.wait_tcp(netns.NS_CLIENT, "127.0.0.1", 53, p)
    except BaseException as e:
        p.stop()
        pytest.fail(f"could not start the loopback dnsmasq: {e}", pytrace=False)
    with open(RESOLV) as f:
        old = f.read()
    try:
        with open(RESOLV, "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        yield f"socks5h://{PROXY_NAME}:{netns.DANTE_PORT}"
    finally:
        with open(RESOLV, "w") as f:
            f.write(old)
        p.stop()


def expect_echo(r, what):
    no_crash(r, what)
    assert r.rc == 0, f"{what}: failed\n{r}"
    assert f"peer {T4} {ECHO}" in r.stdout, f"{what}: getpeername did not report the destination\n{r}"
    assert MSG in r.stdout, f"{what}: the echo did not come back\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


def expect_page(topo, r, what):
    no_crash(r, what)
    assert r.rc == 0, f"{what}: failed\n{r}"
    assert r.stdout.strip() == topo.token, f"{what}: wrong page\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


@pytest.mark.parametrize("nonblock", [False, True], ids=["blocking", "epoll"])
def test_inline_syscall_connect_is_proxied(topo, capture, proxify_bin, raw_client, nonblock):
    opts = ["-n"] if nonblock else []
    r = run_proxified(DANTE, [raw_client, *opts, T4, ECHO, MSG], opts=ENF)
    expect_echo(r, "inline-syscall connect under --enforce")
    assert_no_leak(capture, "inline-syscall connect under --enforce")


@pytest.mark.parametrize("how", ["env", "file"])
def test_enforce_from_environment_and_file(topo, capture, proxify_bin, raw_client, how):
    if how == "env":
        r = run_proxified(DANTE, [raw_client, T4, ECHO, MSG], env={"PROXIFY_ENFORCE": "1"})
    else:
        conf = topo.run_dir / "enforce.toml"
        conf.write_text(f'enforce = true\nproxy = "{DANTE}"\n')
        r = run_proxified(None, [raw_client, T4, ECHO, MSG], opts=["-f", str(conf)])
    expect_echo(r, f"--enforce from the {how}")
    assert_no_leak(capture, f"--enforce from the {how}")


@pytest.mark.parametrize("by", ["address", "name"])
def test_dynamic_client_through_the_shim(topo, capture, proxify_bin, by):
    host = T4 if by == "address" else netns.TARGET_NAME
    r = run_proxified(DANTE, curl(f"http://{host}/"), opts=ENF)
    expect_page(topo, r, f"curl by {by} under --enforce")
    assert_no_leak(capture, f"curl by {by} under --enforce")


def test_proxy_given_by_host_name(topo, capture, proxify_bin, raw_client, proxy_by_name):
    r = run_proxified(proxy_by_name, curl(f"http://{netns.TARGET_NAME}/"), opts=ENF)
    expect_page(topo, r, "curl, proxy by host name, under --enforce")
    r = run_proxified(proxy_by_name, [raw_client, T4, ECHO, MSG], opts=ENF)
    expect_echo(r, "inline-syscall connect, proxy by host name")
    assert_no_leak(capture, "proxy by host name under --enforce")


def test_dynamic_program_execs_a_static_one(topo, capture, proxify_bin, static_client):
    cmd = ["/bin/sh", "-c", f'exec "$0" {T4} {ECHO} {MSG}', static_client]
    r = run_proxified(DANTE, cmd, opts=ENF)
    expect_echo(r, "sh execs a static client under --enforce")
    # Without --enforce the shim refuses that exec (nothing runs unproxied).
    r = run_proxified(DANTE, cmd)
    no_crash(r, "sh execs a static client, preload")
    assert r.rc != 0 and MSG not in r.stdout, r
    assert_no_leak(capture, "sh execs a static client")


def test_child_cannot_turn_enforcement_off(topo, capture, proxify_bin, static_client):
    cmd = ["/usr/bin/env", "PROXIFY_ENFORCE=0", static_client, T4, ECHO, MSG]
    r = run_proxified(DANTE, cmd, opts=ENF)
    no_crash(r, "PROXIFY_ENFORCE=0 in a child")
    assert r.rc != 0 and MSG not in r.stdout, r
    assert any("PROXIFY_ENFORCE" in ln for ln in r.proxify_lines()), r
    assert_no_leak(capture, "PROXIFY_ENFORCE=0 in a child")


def test_proxy_down_fails_closed(topo, capture, proxify_bin, raw_client):
    r = run_proxified(PROXY_DOWN, [raw_client, T4, ECHO, MSG], opts=ENF)
    no_crash(r, "inline-syscall connect, proxy down")
    assert r.rc == 3 and "connect: ECONNREFUSED" in r.stdout and MSG not in r.stdout, r
    assert r.proxify_lines(), r
    r = run_proxified(PROXY_DOWN, curl(f"http://{T4}/"), opts=ENF)
    expect_fail_closed(r, "curl, proxy down", must_not_contain=(topo.token,))
    assert_no_leak(capture, "proxy down under --enforce")


def test_io_uring_is_refused(topo, capture, proxify_bin):
    code = ("import ctypes\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "params = ctypes.create_string_buffer(120)\n"
            "r = libc.syscall(425, 8, params)\n"
            "print('io_uring_setup', r, ctypes.get_errno())\n")
    r = run_proxified(DANTE, [sys.executable, "-c", code], opts=ENF)
    no_crash(r, "io_uring_setup under --enforce")
    assert f"io_uring_setup -1 {38}" in r.stdout, r  # ENOSYS
    assert_no_leak(capture, "io_uring under --enforce")
