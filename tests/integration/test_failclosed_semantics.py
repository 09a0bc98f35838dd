"""A blocking proxied connect behaves as the kernel's (issue 14 items 8, 9, 10; issue 17
item 7). The C helper is csrc/failclosed.c.

- EINTR: a signal without SA_RESTART interrupts a blocking proxied connect (EINTR, as a direct
  connect), and a second connect while the handshake goes on says EALREADY.
- SO_SNDTIMEO: a blocking connect gives up after it with EINPROGRESS; the handshake is
  abandoned and the socket disconnected (getpeername: ENOTCONN).
- connect(AF_UNSPEC) dissolves a proxied TCP socket (getpeername ENOTCONN, a new connect
  works); on UDP, replies to datagrams sent after AF_UNSPEC still arrive.
- An fd closed by another thread during a blocking proxied connect and reused by a fresh
  socket is never touched (its O_NONBLOCK stays)."""

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, SILENT, build_c, kv, no_crash, proxy_syns, start_or_fail, start_udp_echo
from leakcheck import assert_no_leak

T4, ECHO = netns.TARGET4, netns.ECHO_PORT
# Long enough that a connect waiting for the handshake timeout is told apart from one that
# stopped at the signal or SO_SNDTIMEO (a bound that only catches hangs, not a speed check).
SLOW = {"PROXIFY_CONNECT_TIMEOUT": "10", "PROXIFY_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def fc_bin(topo):
    return build_c(topo, "failclosed")


@pytest.fixture(scope="module")
def udp_echo(topo):
    s = start_or_fail(lambda: start_udp_echo(topo), "the UDP echo server on the target host")
    yield s
    s.stop()


def _done(r, what):
    no_crash(r, what)
    assert r.rc == 0 and r.stdout.rstrip().endswith("done"), f"{what}: the helper did not finish\n{r}"
    return kv(r.stdout)


def test_eintr_interrupts_a_blocking_proxied_connect(topo, capture, proxify_bin, fc_bin):
    r = run_proxified(SILENT, [fc_bin, "eintr", T4, 80], env=SLOW)
    v = _done(r, "EINTR")
    assert v["first"] == "EINTR", f"the alarm (no SA_RESTART) must interrupt the connect\n{r}"
    assert float(v["elapsed"]) < 5, f"the connect waited past the alarm\n{r}"
    assert v["second"] == "EALREADY", f"a retried connect during the handshake: EALREADY\n{r}"
    assert v["nonblock"] == "0", f"the socket must stay blocking\n{r}"
    assert not capture.sent_to(T4), f"EINTR: packets to the target directly\n{capture.summary()}"
    assert_no_leak(capture, "EINTR")


def test_sndtimeo_bounds_a_blocking_proxied_connect(topo, capture, proxify_bin, fc_bin):
    r = run_proxified(SILENT, [fc_bin, "sndtimeo", T4, 80, 1000], env=SLOW)
    v = _done(r, "SO_SNDTIMEO")
    assert v["first"] == "EINPROGRESS", f"SO_SNDTIMEO=1s: the connect must give up with EINPROGRESS\n{r}"
    assert 0.5 < float(v["elapsed"]) < 5, f"SO_SNDTIMEO=1s not honoured\n{r}"
    assert v["getpeername"] == "ENOTCONN", f"the abandoned socket must be disconnected\n{r}"
    assert v["nonblock"] == "0", f"the socket must stay blocking\n{r}"
    assert_no_leak(capture, "SO_SNDTIMEO")


def test_sndtimeo_longer_than_the_handshake_changes_nothing(topo, capture, proxify_bin, fc_bin):
    r = run_proxified(DANTE, [fc_bin, "sndtimeo", T4, ECHO, 5000])
    v = _done(r, "SO_SNDTIMEO=5s through Dante")
    assert v["first"] == "0" and v["getpeername"] == "0", f"a working proxy within SO_SNDTIMEO\n{r}"
    assert proxy_syns(capture)
    assert_no_leak(capture, "SO_SNDTIMEO=5s")


def test_af_unspec_dissolves_proxied_sockets(topo, capture, proxify_bin, fc_bin, udp_echo):
    r = run_proxified(DANTE, [fc_bin, "unspec", T4, ECHO, T4, ECHO])
    v = _done(r, "AF_UNSPEC")
    assert v["tcp_connect"] == "0" and v["tcp_peer"] == f"{T4}:{ECHO}", f"proxied connect\n{r}"
    assert v["tcp_unspec"] == "0", f"connect(AF_UNSPEC) on a proxied TCP socket\n{r}"
    assert v["tcp_peer_after"] == "ENOTCONN", f"after AF_UNSPEC getpeername must say ENOTCONN\n{r}"
    assert v["tcp_reconnect"] == "0" and v["tcp_echo_after"] == "1", \
        f"a new connect after AF_UNSPEC must work (through the proxy)\n{r}"
    assert v["udp_connect"] == "0" and v["udp_echo"] == "1", f"proxied UDP echo\n{r}"
    assert v["udp_unspec"] == "0" and v["udp_peer_after"] == "ENOTCONN", f"UDP AF_UNSPEC\n{r}"
    assert v["udp_reply_after"] == "1", f"after AF_UNSPEC on UDP the echo's reply was lost\n{r}"
    assert not capture.sent_to(T4), f"AF_UNSPEC: packets to the target directly\n{capture.summary()}"
    assert_no_leak(capture, "AF_UNSPEC")


def test_fd_reused_after_close_is_not_touched(topo, capture, proxify_bin, fc_bin):
    r = run_proxified(SILENT, [fc_bin, "fdreuse", T4, 80])
    v = _done(r, "fd reuse")
    assert v["reused"] == "1", f"the socketpair did not take the closed number (test set-up)\n{r}"
    assert v["nonblock"] == "1", f"proxify changed the flags of the socket that reused the fd\n{r}"
    assert v["connect"] != "0", f"the connect of a closed fd cannot succeed\n{r}"
    assert_no_leak(capture, "fd reuse")
