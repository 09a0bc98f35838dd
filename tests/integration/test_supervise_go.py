"""A Go program (CGO_ENABLED=0, `golang-go` from Debian) under the supervisor (issue 13):
http.Get by a name only the proxy can resolve (Go's own resolver asks the system resolver,
and the supervisor's DNS responder answers with placeholders from the shared table), 50
concurrent dials, RemoteAddr() reporting the destination. Capture on."""

import os
import shutil
import subprocess

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, INSTALL_HINT, PROXY_DOWN, no_crash
from leakcheck import assert_no_leak

HERE = os.path.dirname(os.path.abspath(__file__))
NAME, T4, ECHO = netns.TARGET_NAME, netns.TARGET4, netns.ECHO_PORT


@pytest.fixture(scope="module")
def supget():
    """gosrc/supget.go built once per session, where any user can run it."""
    if shutil.which("go") is None:
        pytest.fail(f"go not found (Debian package golang-go) -- {INSTALL_HINT}", pytrace=False)
    d = f"/tmp/proxify-sup{netns.TAG}-go"
    os.makedirs(d, exist_ok=True)
    out, src = os.path.join(d, "supget"), os.path.join(HERE, "gosrc", "supget.go")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        env = dict(os.environ, CGO_ENABLED="0", GO111MODULE="off", GOCACHE=os.path.join(d, "cache"),
                   GOPATH=os.path.join(d, "gopath"))
        r = subprocess.run(["go", "build", "-o", out, src], env=env, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            pytest.fail(f"go build failed:\n{r.stderr}\n-- {INSTALL_HINT}", pytrace=False)
    return out


def test_go_by_name_with_50_dials(topo, capture, proxify_bin, supget):
    r = run_proxified(DANTE, [supget, f"http://{NAME}/", f"{NAME}:{ECHO}", "50"], timeout=60)
    no_crash(r, "Go through Dante")
    assert r.rc == 0, r
    assert f"page: {topo.token}" in r.stdout, r
    assert "dials: 50/50" in r.stdout, r
    # RemoteAddr is what Go dialed (the placeholder of the name), not the proxy.
    remote = r.stdout.split("remote:")[1].split()[0]
    assert not remote.startswith(netns.PROXY4), r
    assert not r.proxify_lines(), r
    assert_no_leak(capture, "Go by name")


def test_go_remote_addr_by_address(topo, capture, proxify_bin, supget):
    r = run_proxified(DANTE, [supget, f"http://{T4}/", f"{T4}:{ECHO}", "5"], timeout=60)
    no_crash(r, "Go by address")
    assert r.rc == 0 and f"remote: {T4}:{ECHO}" in r.stdout, r
    assert_no_leak(capture, "Go by address")


def test_go_proxy_down(topo, capture, proxify_bin, supget):
    r = run_proxified(PROXY_DOWN, [supget, f"http://{NAME}/", f"{NAME}:{ECHO}", "3"], timeout=60)
    no_crash(r, "Go, proxy down")
    assert r.rc == 1 and "connection refused" in r.stdout and topo.token not in r.stdout, r
    assert r.proxify_lines(), r
    assert_no_leak(capture, "Go, proxy down")


@pytest.mark.parametrize("nameserver", ["192.0.2.53", "127.0.0.1"])
def test_go_dns_over_tcp(topo, capture, proxify_bin, supget, nameserver):
    """`options use-vc`: Go's resolver asks over TCP. The supervisor answers the stream itself;
    the TCP connect never reaches the resolver (192.0.2.53 would show in the capture; on
    127.0.0.1 nothing listens, so a connect let through would fail the look-up)."""
    from pathlib import Path
    resolv = Path(f"/etc/netns/{netns.NS_CLIENT}/resolv.conf")
    old = resolv.read_text()
    resolv.write_text(f"nameserver {nameserver}\noptions use-vc timeout:2 attempts:1\n")
    try:
        r = run_proxified(DANTE, [supget, f"http://{NAME}/", f"{NAME}:{ECHO}", "3"], timeout=60,
                          opts=["-v"])
    finally:
        resolv.write_text(old)
    no_crash(r, "Go over TCP DNS")
    assert r.rc == 0 and f"page: {topo.token}" in r.stdout and "dials: 3/3" in r.stdout, r
    assert "DNS over TCP" in r.stderr, f"-v must show the TCP queries answered:\n{r}"
    assert_no_leak(capture, "Go with use-vc")
