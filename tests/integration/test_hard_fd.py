"""fd juggling (issue 5): proxify's per-fd state follows the socket through dup, dup2, dup3,
fcntl(F_DUPFD*), close, close_range and closefrom; a reused fd number never inherits stale
state; a program closing every fd (as daemons do) keeps working, UDP association included;
syscall(SYS_connect) goes through the proxy. The C helper is csrc/hard_fd.c."""

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, build_c, expect_ok, proxy_syns, start_or_fail, start_udp_echo
from leakcheck import assert_no_leak

T4, ECHO = netns.TARGET4, netns.ECHO_PORT


@pytest.fixture(scope="module")
def fd_bin(topo):
    return build_c(topo, "hard_fd")


@pytest.fixture(scope="module")
def udp_echo(topo):
    s = start_or_fail(lambda: start_udp_echo(topo), "the UDP echo server on the target host")
    yield s
    s.stop()


def _run(fd_bin, mode, *extra):
    return run_proxified(DANTE, [fd_bin, mode, T4, ECHO, *extra])


def _check(r, what, capture):
    expect_ok(r, what)
    assert r.stdout.rstrip().endswith("done"), f"{what}: the helper did not finish\n{r}"
    assert "FAIL" not in r.stdout, f"{what}\n{r}"
    assert not capture.sent_to(T4), f"{what}: packets went to the target directly:\n{capture.summary()}"
    assert proxy_syns(capture), f"{what}: nothing went to the proxy:\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_dup_family_and_reused_numbers(topo, capture, proxify_bin, fd_bin):
    """dup/dup2/dup3/F_DUPFD/F_DUPFD_CLOEXEC/SYS_dup: getpeername on each reports the
    destination; after close of the original a dup still echoes; a fresh socket on a reused
    number (and dup2/dup3 of an unconnected socket over a proxied dup) reports ENOTCONN."""
    _check(_run(fd_bin, "dups"), "dup family", capture)


def test_dup_made_before_connect_sees_peer(topo, capture, proxify_bin, fd_bin):
    """A dup made before the proxied connect is the same socket: getpeername on it must report
    the destination, not the proxy (the fd table keys state by fd number, so this needs the
    connect to reach every fd of the socket)."""
    _check(_run(fd_bin, "dup-before-connect"), "dup made before the proxied connect", capture)


@pytest.mark.parametrize("mode", ["closerange", "closefrom", "daemon"])
def test_mass_close_keeps_working(topo, capture, proxify_bin, fd_bin, udp_echo, mode):
    """A UDP association (proxify's own control fd) and a proxied TCP socket are open; the
    program then runs close_range(first, ~0U, 0) / closefrom(first) / close(3..1023) (and, for
    `daemon`, dup2(/dev/null) over 3..63): the TCP socket is gone, the UDP association still
    relays, a fresh socket is unconnected, and new proxied connections work."""
    r = _run(fd_bin, mode, T4, ECHO)
    _check(r, mode, capture)
    assert "survived" in r.stdout, f"{mode}: the UDP association did not survive\n{r}"


def test_syscall_connect_goes_through_proxy(topo, capture, proxify_bin, fd_bin):
    r = _run(fd_bin, "syscall")
    _check(r, "syscall(SYS_connect)", capture)
    syns = [p for p in capture.sent_to(netns.PROXY4, proto=6, dport=netns.DANTE_PORT) if p.note == "S"]
    assert len(syns) == 1, f"syscall(SYS_connect): expected one SYN to the proxy, saw {len(syns)}:\n" \
                           f"{capture.summary()}"


def test_select_with_one_set_as_read_and_write(topo, capture, proxify_bin):
    """select(n, &s, &s, NULL) — one fd_set passed twice, as C allows — on a proxied
    non-blocking connect: it reports the connected socket (csrc/short_buffers.c)."""
    prog = build_c(topo, "short_buffers")
    r = run_proxified(DANTE, [prog, "select", T4, ECHO])
    expect_ok(r, "select with one set twice")
    assert "select connected" in r.stdout, r
    assert not capture.sent_to(T4), f"packets went to the target directly:\n{capture.summary()}"
    assert_no_leak(capture, "select with one set twice")
