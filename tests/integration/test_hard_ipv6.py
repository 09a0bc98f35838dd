"""IPv6 everywhere (issue 5): a proxy given by its IPv6 address; an AF_INET6 socket connecting
to an IPv4-mapped address (as Java does); getaddrinfo AF_UNSPEC/AF_INET6 under remote DNS
returns placeholders that connect; ::1 and link-local stay direct."""

import ipaddress
import re

import pytest

import netns
from conftest import py, run_proxified
from hardcase import DANTE, DANTE6, expect_fail_closed, expect_ok, kv, proxy_syns, start_loopback_echo, start_or_fail
from leakcheck import assert_no_leak

NAME, T4, T6, ECHO = netns.TARGET_NAME, netns.TARGET4, netns.TARGET6, netns.ECHO_PORT
V4_PH, V6_PH = ipaddress.ip_network("240.0.0.0/4"), ipaddress.ip_network("100::/64")
LOOP6_PORT = 7106

# Connects (family, address, port[, scope]) given on the command line, echoes, and prints
# peer=... echo=ok, or error=ERRNO.
CONNECT = """
import errno, socket, sys
fam = {"4": socket.AF_INET, "6": socket.AF_INET6}[sys.argv[1]]
s = socket.socket(fam, socket.SOCK_STREAM)
if len(sys.argv) > 4 and sys.argv[4] == "v6only":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.settimeout(5)
addr = (sys.argv[2], int(sys.argv[3]))
if len(sys.argv) > 4 and sys.argv[4].startswith("scope="):
    addr = addr + (0, socket.if_nametoindex(sys.argv[4][6:]))
try:
    s.connect(addr)
except OSError as e:
    print("error=" + errno.errorcode.get(e.errno, str(e.errno)))
    sys.exit(3)
p = s.getpeername()
s.sendall(b"v6-echo\\n")
data = b""
while len(data) < 8:
    chunk = s.recv(8 - len(data))
    if not chunk:
        break
    data += chunk
print("peer=%s/%d echo=%s" % (p[0], p[1], "ok" if data == b"v6-echo\\n" else repr(data)))
"""

# getaddrinfo(NAME, family) under remote DNS, then connect + echo to every distinct address.
GAI = f"""
import socket, sys
fam = {{"unspec": socket.AF_UNSPEC, "inet6": socket.AF_INET6}}[sys.argv[1]]
res = socket.getaddrinfo({NAME!r}, {ECHO}, fam, socket.SOCK_STREAM)
print("addrs=" + ",".join(r[4][0] for r in res))
for f, _, _, _, sa in res:
    s = socket.socket(f, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sa)
    s.sendall(b"gai\\n")
    assert s.recv(10) == b"gai\\n"
    print("connected=" + sa[0])
    s.close()
"""


@pytest.fixture(scope="module")
def loop6_echo(topo):
    s = start_or_fail(lambda: start_loopback_echo(topo, "::1", LOOP6_PORT, "hard-ipv6-loopback-echo"),
                      "the ::1 echo server")
    yield s
    s.stop()


def test_ipv6_proxy_address_by_v6_literal(topo, capture, proxify_bin):
    r = run_proxified(DANTE6, py(CONNECT) + ["6", T6, ECHO])
    what = f"AF_INET6 to [{T6}]:{ECHO} via {DANTE6}"
    expect_ok(r, what)
    assert kv(r.stdout) == {"peer": f"{T6}/{ECHO}", "echo": "ok"}, f"{what}\n{r}"
    assert capture.sent_to(netns.PROXY6, proto=6, dport=netns.DANTE_PORT), f"{what}: no traffic to the v6 proxy"
    assert_no_leak(capture, what)


def test_ipv6_proxy_address_by_name(topo, capture, proxify_bin):
    """With only an IPv6 proxy, AF_UNSPEC lookups return the IPv6 placeholder first."""
    r = run_proxified(DANTE6, py(GAI) + ["unspec"])
    what = f"{NAME} (AF_UNSPEC) via {DANTE6}"
    expect_ok(r, what)
    addrs = kv(r.stdout)["addrs"].split(",")
    assert ipaddress.ip_address(addrs[0]) in V6_PH, f"{what}: first answer should be an IPv6 placeholder\n{r}"
    assert r.stdout.count("connected=") == len(addrs), f"{what}\n{r}"
    assert_no_leak(capture, what)


@pytest.mark.parametrize("proxy", [DANTE, DANTE6], ids=["v4-proxy", "v6-proxy"])
def test_ipv4_mapped_destination_java_style(topo, capture, proxify_bin, proxy):
    mapped = f"::ffff:{T4}"
    r = run_proxified(proxy, py(CONNECT) + ["6", mapped, ECHO])
    what = f"AF_INET6 socket to [{mapped}]:{ECHO} via {proxy}"
    expect_ok(r, what)
    assert kv(r.stdout) == {"peer": f"{mapped}/{ECHO}", "echo": "ok"}, f"{what}\n{r}"
    assert proxy_syns(capture), f"{what}: nothing went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_v6only_socket_cannot_reach_v4_proxy_fails_closed(topo, capture, proxify_bin):
    """An IPV6_V6ONLY socket cannot use the IPv4-mapped proxy address: one line, an errno."""
    r = run_proxified(DANTE, py(CONNECT) + ["6", T6, ECHO, "v6only"])
    what = "IPV6_V6ONLY socket, IPv4-only proxy"
    expect_fail_closed(r, what, must_not_contain=("echo=ok",))
    assert kv(r.stdout).get("error") == "EAFNOSUPPORT", f"{what}: expected EAFNOSUPPORT\n{r}"
    assert_no_leak(capture, what)


@pytest.mark.parametrize("family", ["unspec", "inet6"])
def test_getaddrinfo_remote_dns_placeholders_connect(topo, capture, proxify_bin, family):
    r = run_proxified(DANTE, py(GAI) + [family])
    what = f"getaddrinfo({NAME}, AF_{family.upper()}) under remote DNS via {DANTE}"
    expect_ok(r, what)
    addrs = [ipaddress.ip_address(a) for a in kv(r.stdout)["addrs"].split(",")]
    assert addrs and all(a in V4_PH or a in V6_PH for a in addrs), f"{what}: non-placeholder answers\n{r}"
    if family == "inet6":
        assert all(a in V6_PH for a in addrs), f"{what}: AF_INET6 must return 100::/64 placeholders\n{r}"
    assert r.stdout.count("connected=") == len(addrs), f"{what}: not every answer connected\n{r}"
    # Never asked the (dead) local resolver: the leak check would show a query to 192.0.2.53.
    assert_no_leak(capture, what)


def test_ipv6_loopback_stays_direct(topo, capture, proxify_bin, loop6_echo):
    r = run_proxified(DANTE, py(CONNECT) + ["6", "::1", LOOP6_PORT], env={"PROXIFY_LOG": "debug"})
    what = f"[::1]:{LOOP6_PORT} under {DANTE}"
    no_lines = [ln for ln in r.stderr.splitlines() if not re.search(r"\] (debug|info):", ln)]
    assert r.rc == 0 and not no_lines, f"{what}: failed or printed more than log lines\n{r}"
    assert kv(r.stdout) == {"peer": f"::1/{LOOP6_PORT}", "echo": "ok"}, f"{what}\n{r}"
    assert re.search(rf"to \[::1\]:{LOOP6_PORT}: direct", r.stderr), f"{what}: no 'direct' decision logged\n{r}"
    assert not proxy_syns(capture), f"{what}: ::1 went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_ipv6_link_local_stays_direct(topo, capture, proxify_bin):
    """fe80::1 scoped to lo: the kernel has no route there (ENETUNREACH at once, no packet
    anywhere). What matters is that proxify decided `direct` and did not touch the proxy."""
    r = run_proxified(DANTE, py(CONNECT) + ["6", "fe80::1", 9, "scope=lo"], env={"PROXIFY_LOG": "debug"})
    what = "fe80::1%lo under a proxy"
    no_crash_lines = [ln for ln in r.stderr.splitlines() if not re.search(r"\] (debug|info):", ln)]
    assert r.rc == 3 and not no_crash_lines, f"{what}: expected a plain connect error\n{r}"
    assert kv(r.stdout)["error"] in ("ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"), f"{what}\n{r}"
    assert re.search(r"to \[fe80::1%\d+\]:9: direct \(IPv6 link-local\)", r.stderr), \
        f"{what}: the debug log should say direct (IPv6 link-local)\n{r}"
    assert not proxy_syns(capture), f"{what}: link-local went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)
