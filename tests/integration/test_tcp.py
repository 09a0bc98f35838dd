"""`proxify run` fetches from the target through real SOCKS servers, with no leak.

The client host routes only to the proxy host and cannot resolve target.example; the proxy
host can. Every case runs with a capture in the client namespace."""

import pytest

import netns
from conftest import curl, run_proxified, urllib_get
from leakcheck import assert_no_leak

URL4 = f"http://{netns.TARGET4}/"
URL6 = f"http://[{netns.TARGET6}]/"
URLNAME = f"http://{netns.TARGET_NAME}/"

# name -> proxy URL ({pw} is the test user's password, made up per run)
REMOTE_DNS_PROXIES = {
    "dante-noauth": f"socks5h://{netns.PROXY4}:{netns.DANTE_PORT}",
    "dante-auth": f"socks5h://{netns.TEST_USER}:{{pw}}@{netns.PROXY4}:{netns.DANTE_AUTH_PORT}",
    "microsocks-auth": f"socks5h://{netns.TEST_USER}:{{pw}}@{netns.PROXY4}:{netns.MICROSOCKS_PORT}",
}
V6_PROXY = f"socks5h://[{netns.PROXY6}]:{netns.DANTE_PORT}"
CLIENTS = {"curl": curl, "python-urllib": urllib_get}


def _expect_token(topo, r, what):
    assert r.rc == 0, f"{what}: the command failed\n{r}"
    assert r.stdout.strip() == topo.token, f"{what}: wrong page (expected token {topo.token})\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


def _expect_clean_failure(topo, r, what):
    assert not r.signalled, f"{what}: the command was killed by signal {-r.rc}\n{r}"
    assert r.rc != 0, f"{what}: the command should have failed\n{r}"
    assert topo.token not in r.stdout, f"{what}: the page came through anyway\n{r}"
    assert "Segmentation" not in r.stderr and "panicked" not in r.stderr, f"{what}: crash\n{r}"


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("url", [URL4, URL6, URLNAME], ids=["ipv4", "ipv6", "name"])
@pytest.mark.parametrize("proxy", REMOTE_DNS_PROXIES)
def test_fetch_remote_dns(topo, capture, proxify_bin, proxy, url, client):
    purl = REMOTE_DNS_PROXIES[proxy].format(pw=topo.password)
    r = run_proxified(purl, CLIENTS[client](url))
    _expect_token(topo, r, f"{client} {url} via {proxy}")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("url", [URL4, URL6, URLNAME], ids=["ipv4", "ipv6", "name"])
def test_fetch_via_ipv6_proxy_address(topo, capture, proxify_bin, url, client):
    """An IPv4 URL too (issue 17 item 1): the client's AF_INET socket cannot reach the IPv6
    proxy, so proxify replaces it by an AF_INET6 one under the same fd number."""
    r = run_proxified(V6_PROXY, CLIENTS[client](url))
    _expect_token(topo, r, f"{client} {url} via {V6_PROXY}")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("url", [URL4, URL6], ids=["ipv4", "ipv6"])
def test_fetch_socks5_local_dns_literal(topo, capture, proxify_bin, url, client):
    r = run_proxified(f"socks5://{netns.PROXY4}:{netns.DANTE_PORT}", CLIENTS[client](url))
    _expect_token(topo, r, f"{client} {url} via socks5 (local DNS)")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", CLIENTS)
def test_socks5_local_dns_name_is_resolved_locally(topo, capture, proxify_bin, client):
    """Documents the user's choice: socks5:// (not socks5h://) means names are resolved on
    the client. The client's resolver (192.0.2.53) never answers, so the fetch fails and the
    capture shows the DNS query. This is expected behaviour, not a leak test."""
    r = run_proxified(f"socks5://{netns.PROXY4}:{netns.DANTE_PORT}", CLIENTS[client](URLNAME))
    _expect_clean_failure(topo, r, f"{client} by name via socks5 (local DNS)")
    assert capture.sent_to(netns.DEAD_DNS, proto=17, dport=53), \
        f"socks5:// should resolve names locally, but no DNS query to {netns.DEAD_DNS} was seen:\n" \
        f"{capture.summary()}"


@pytest.mark.parametrize("client", CLIENTS)
def test_fetch_socks4_ipv4_literal(topo, capture, proxify_bin, client):
    r = run_proxified(f"socks4://{netns.PROXY4}:{netns.DANTE_PORT}", CLIENTS[client](URL4))
    _expect_token(topo, r, f"{client} {URL4} via socks4")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", CLIENTS)
def test_socks4_ipv6_literal_fails_cleanly(topo, capture, proxify_bin, client):
    r = run_proxified(f"socks4://{netns.PROXY4}:{netns.DANTE_PORT}", CLIENTS[client](URL6))
    _expect_clean_failure(topo, r, f"{client} {URL6} via socks4 (no IPv6 in SOCKS4)")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("url", [URLNAME, URL4], ids=["name", "ipv4"])
def test_fetch_socks4a_ssh(topo, capture, proxify_bin, url, client):
    r = run_proxified(f"socks4a://{netns.PROXY4}:{netns.SSH_SOCKS_PORT}", CLIENTS[client](url))
    _expect_token(topo, r, f"{client} {url} via socks4a (ssh -D)")
    assert_no_leak(capture)


def test_fetch_large_file_intact(topo, capture, proxify_bin):
    r = run_proxified(f"socks5h://{netns.PROXY4}:{netns.DANTE_PORT}",
                      ["sh", "-c", f"curl -sS --max-time 5 {URLNAME}blob.bin | sha256sum"])
    assert r.rc == 0 and r.stdout.split()[:1] == [topo.blob_sha256], \
        f"blob.bin ({topo.blob_size} bytes) did not arrive intact:\n{r}"
    assert_no_leak(capture)
