"""Threads (issue 5): 64 threads open 1,000 proxied connections (half by address, half by a
remote-DNS name) and all succeed in bounded time; a proxied connect stuck on a proxy that
never answers does not stall an unproxied loopback call in another thread."""

import ipaddress

import pytest

import netns
from conftest import PROXIFY_TIMEOUT_S, run_proxified
from hardcase import DANTE, SILENT, build_c, expect_ok, kv, proxy_syns, start_loopback_echo, start_or_fail
from leakcheck import assert_no_leak

THREADS, TOTAL = 64, 1000
MANY_LIMIT_S = 60  # 1,000 handshakes through Dante take a few seconds here
LOOP_PORT = 7107  # loopback echo in the client namespace
LOOPBACK_LIMIT_MS = 200


@pytest.fixture(scope="module")
def loop_echo(topo):
    s = start_or_fail(lambda: start_loopback_echo(topo, "127.0.0.1", LOOP_PORT, "hard-threads-loopback-echo"),
                      "the loopback echo server")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def threads_bin(topo):
    return build_c(topo, "hard_threads")


def test_64_threads_1000_connections(topo, capture, proxify_bin, threads_bin):
    r = run_proxified(DANTE, [threads_bin, "many", THREADS, TOTAL, netns.TARGET4, netns.TARGET_NAME,
                              netns.ECHO_PORT], timeout=MANY_LIMIT_S + 15)
    what = f"{THREADS} threads, {TOTAL} proxied connections"
    expect_ok(r, what)
    v = kv(r.stdout)
    assert int(v["ok"]) == TOTAL and int(v["fail"]) == 0, f"{what}: not all connections worked\n{r}"
    assert r.elapsed < MANY_LIMIT_S, f"{what}: took {r.elapsed:.1f}s (limit {MANY_LIMIT_S}s)\n{r}"
    # Every thread resolved the name to the same remote-DNS placeholder (never a real lookup).
    addrs = v["name_addrs"].split(",")
    assert len(addrs) == 1 and ipaddress.ip_address(addrs[0]) in ipaddress.ip_network("240.0.0.0/4"), \
        f"{what}: target.example should map to one placeholder in 240.0.0.0/4, got {addrs}\n{r}"
    syns = [p for p in proxy_syns(capture) if p.note == "S"]
    assert len(syns) >= TOTAL, f"{what}: only {len(syns)} SYNs to the proxy for {TOTAL} connections"
    assert_no_leak(capture, what)


def test_stuck_proxied_connect_does_not_stall_loopback(topo, capture, proxify_bin, threads_bin, loop_echo):
    """Thread A connects through the `silent` hostile proxy (accepts, never answers) and sits
    in connect() until proxify's handshake timeout; meanwhile the main thread's loopback echo
    round trips and a remote-DNS lookup each finish in < 200 ms."""
    r = run_proxified(SILENT, [threads_bin, "stall", netns.TARGET4, netns.HTTP_PORT, LOOP_PORT, 5])
    what = "loopback calls while another thread's proxied connect is stuck"
    assert r.rc == 0 and not r.signalled, f"{what}: helper failed\n{r}"
    v = kv(r.stdout.splitlines()[-1])
    assert v["stuck_during_all"] == "1", \
        f"{what}: the proxied connect finished before the loopback calls did, so this proved nothing\n{r}"
    assert float(v["loopback_worst_ms"]) < LOOPBACK_LIMIT_MS, \
        f"{what}: a loopback round trip took {v['loopback_worst_ms']} ms (limit {LOOPBACK_LIMIT_MS})\n{r}"
    assert v["dns_rc"] == "0" and float(v["dns_ms"]) < LOOPBACK_LIMIT_MS, \
        f"{what}: the remote-DNS lookup failed or took {v['dns_ms']} ms\n{r}"
    # The stuck connect itself failed closed with a time-out, within the timeout plus margin.
    assert v["stuck_rc"] == "-1" and v["stuck_errno"] == "ETIMEDOUT", f"{what}: stuck connect ended wrongly\n{r}"
    assert float(v["stuck_ms"]) < (PROXIFY_TIMEOUT_S * 2 + 2) * 1000, f"{what}: stuck connect took too long\n{r}"
    assert r.proxify_lines(), f"{what}: the timed-out connect printed no 'proxify:' line\n{r}"
    assert loop_echo.alive()
    assert_no_leak(capture, what)
