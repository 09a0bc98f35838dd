"""The harness checks itself, without proxify: every test proxy works (or misbehaves) as
intended when curl speaks SOCKS by itself, and the leak detector does catch leaks — so a
proxify test that passes means something, and one that fails points at proxify."""

import pytest

import netns
from conftest import curl, py, run_in_client
from leakcheck import assert_no_leak

P4 = netns.PROXY4


def _fetch_ok(topo, r):
    assert r.rc == 0 and r.stdout.strip() == topo.token, f"fetch through the test proxy failed:\n{r}"


@pytest.mark.parametrize("opts,url", [
    (["--socks5-hostname", f"{P4}:1080"], "http://target.example/"),
    (["--socks5-hostname", f"[{netns.PROXY6}]:1080"], "http://target.example/"),
    (["--socks5-hostname", f"{P4}:1080"], "http://[2001:db8:2::10]/"),
    (["--socks4", f"{P4}:1080"], "http://203.0.113.10/"),
    (["--socks4a", f"{P4}:1083"], "http://target.example/"),
    (["--socks4a", f"{P4}:1083"], "http://203.0.113.10/"),
    (["--socks5-hostname", f"{P4}:1094"], "http://target.example/"),
    (["--socks5-hostname", f"{P4}:1094"], "http://[2001:db8:2::10]/"),
], ids=["dante-A", "dante-A-v6-proxy", "dante-A-v6-target", "dante-A-socks4", "ssh-D-socks4a-name",
        "ssh-D-socks4a-literal", "hostile-split-name", "hostile-split-v6"])
def test_curl_own_socks_reaches_target(topo, capture, opts, url):
    _fetch_ok(topo, run_in_client(curl(url, *opts)))
    assert_no_leak(capture)


@pytest.mark.parametrize("port", [netns.DANTE_AUTH_PORT, netns.MICROSOCKS_PORT], ids=["dante-B", "microsocks"])
def test_curl_own_socks_auth(topo, capture, port):
    ok = run_in_client(curl("http://target.example/", "--socks5-hostname", f"{P4}:{port}",
                            "-U", f"{netns.TEST_USER}:{topo.password}"))
    _fetch_ok(topo, ok)
    bad = run_in_client(curl("http://target.example/", "--socks5-hostname", f"{P4}:{port}",
                             "-U", f"{netns.TEST_USER}:wrong-{topo.password}"))
    assert bad.rc != 0 and topo.token not in bad.stdout, f"the proxy accepted a wrong password:\n{bad}"
    none = run_in_client(curl("http://target.example/", "--socks5-hostname", f"{P4}:{port}"))
    assert none.rc != 0 and topo.token not in none.stdout, f"the proxy accepted no authentication:\n{none}"
    assert_no_leak(capture)


@pytest.mark.parametrize("port", [netns.DOWN_PORT, netns.SILENT_PORT, *netns.HOSTILE_PORTS.values(),
                                  netns.REJECT_PORT_BASE + 5],
                         ids=["down", "never-answers", *netns.HOSTILE_PORTS, "reject-5"])
def test_broken_proxies_break_curl_own_socks(topo, capture, port):
    r = run_in_client(curl("http://target.example/", "--socks5-hostname", f"{P4}:{port}", "--max-time", "3"))
    if port == netns.HOSTILE_PORTS["split"]:
        _fetch_ok(topo, r)
    else:
        assert r.rc != 0 and topo.token not in r.stdout, f"a broken proxy on port {port} worked:\n{r}"
    assert_no_leak(capture)


def test_direct_curl_from_client_fails_and_is_reported(topo, capture):
    r = run_in_client(curl("http://203.0.113.10/", "--max-time", "2"))
    assert r.rc != 0, f"the client reached the target without a proxy: the topology is wrong\n{r}"
    assert capture.sent_to(netns.TARGET4, proto=6, dport=80), \
        f"the capture did not see the direct SYN:\n{capture.summary()}"
    with pytest.raises(AssertionError, match="203.0.113.10:80"):
        assert_no_leak(capture)


def test_leak_detector_reports_a_udp_packet(topo, capture):
    r = run_in_client(py("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
                         f"s.sendto(b'leak',({netns.DEAD_DNS!r},53))"))
    assert r.rc == 0, f"could not send the test datagram:\n{r}"
    bad = capture.leaks()
    assert any(p.proto == 17 and str(p.dst) == netns.DEAD_DNS and p.dport == 53 for p in bad), \
        f"the leak detector missed a UDP datagram to {netns.DEAD_DNS}:53:\n{capture.summary()}"
    with pytest.raises(AssertionError, match="LEAK"):
        assert_no_leak(capture)


def test_client_cannot_resolve_target_name(topo, capture):
    r = run_in_client(["getent", "ahosts", "target.example"], timeout=15)
    assert r.rc != 0, f"the client resolved target.example by itself:\n{r}"
    assert capture.sent_to(netns.DEAD_DNS, proto=17, dport=53), \
        f"no DNS query to the dead resolver was seen:\n{capture.summary()}"


def test_loopback_service_without_proxify(topo, capture):
    r = run_in_client(curl(f"http://127.0.0.1:{netns.LOOPBACK_HTTP_PORT}/"))
    assert r.rc == 0 and r.stdout.strip() == topo.loopback_token, f"loopback service not reachable:\n{r}"
    assert_no_leak(capture)
