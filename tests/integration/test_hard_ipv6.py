"""IPv6 everywhere (issue 5): a proxy given by its IPv6 address; an AF_INET6 socket connecting
to an IPv4-mapped address (as Java does); getaddrinfo AF_UNSPEC/AF_INET6 under remote DNS
returns placeholders that connect; ::1 and link-local stay direct."""

import ipaddress
import json
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


# Issue 17 item 1: a socket whose family cannot reach the proxy (AF_INET with an IPv6-only
# proxy, IPV6_V6ONLY with an IPv4-only one) is replaced by one of the proxy's family under the
# same fd number, with its flags and options; the program keeps seeing its own family.
REPLACED = """
import errno, fcntl, json, os, select, socket, sys
fam = {"4": socket.AF_INET, "6": socket.AF_INET6}[sys.argv[1]]
target, port, how = sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(fam, socket.SOCK_STREAM)
fd = s.fileno()
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x20)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 9)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
s.set_inheritable(True)
sndbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
if how == "bound":
    s.bind(("198.51.100.2", 0))
if how == "wildcard-port":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0" if fam == socket.AF_INET else "::", 0))
    bound_port = s.getsockname()[1]
res = {}
try:
    if how in ("nonblocking", "epoll-before"):
        s.setblocking(False)
        if how == "epoll-before":
            # Registered before connect(), as some event loops do: the registration must
            # follow the socket to its replacement.
            ep = select.epoll()
            ep.register(fd, select.EPOLLOUT)
        rc = s.connect_ex((target, port))
        res["nonblock_kept"] = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        res["connect_ex"] = errno.errorcode.get(rc, str(rc))
        if how == "epoll-before":
            res["epoll"] = [e for _, e in ep.poll(10)] == [select.EPOLLOUT]
        else:
            p = select.poll()
            p.register(s, select.POLLOUT)
            p.poll(10000)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        s.setblocking(True)
    else:
        s.settimeout(10)  # Python's timeouts: O_NONBLOCK under the hood
        nb_before = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        s.connect((target, port))
        res["nonblock_kept"] = nb_before == bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK)
except OSError as e:
    print(json.dumps({"error": errno.errorcode.get(e.errno, str(e.errno))}))
    sys.exit(3)
s.settimeout(10)
s.sendall(b"replaced\\n")
data = b""
while len(data) < 9:
    chunk = s.recv(9 - len(data))
    if not chunk:
        break
    data += chunk
name = s.getsockname()
res.update({
    "echo": data == b"replaced\\n",
    "fileno": s.fileno() == fd,
    "so_domain": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
    "family": s.family == fam,
    "sockname_len": len(name),
    "peer": list(s.getpeername()[:2]),
    "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    "keepidle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    "keepintvl": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
    "nodelay": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
    "sndbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == sndbuf,
    "inheritable": s.get_inheritable(),
})
if how == "wildcard-port":
    res["kept_port"] = name[1] == bound_port
print(json.dumps(res))
"""

REPLACED_CASES = {
    # family, target, proxy, how
    "v4-socket-v6-proxy": ("4", T4, DANTE6, "blocking"),
    "v4-socket-v6-proxy-nonblocking": ("4", T4, DANTE6, "nonblocking"),
    "v4-socket-v6-proxy-epoll-registered-before-connect": ("4", T4, DANTE6, "epoll-before"),
    "v4-socket-v6-proxy-wildcard-port": ("4", T4, DANTE6, "wildcard-port"),
    "v6only-socket-v4-proxy": ("6", T6, DANTE, "blocking"),
}


@pytest.mark.parametrize("case", REPLACED_CASES)
def test_socket_replaced_for_a_proxy_of_the_other_family(topo, capture, proxify_bin, case):
    fam, target, proxy, how = REPLACED_CASES[case]
    r = run_proxified(proxy, py(REPLACED) + [fam, target, ECHO, how])
    what = f"{case}: AF_INET{'6' if fam == '6' else ''} socket to {target} via {proxy}"
    expect_ok(r, what)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    want_domain = 10 if fam == "6" else 2
    assert res["echo"] and res["fileno"], f"{what}: no echo, or a different fd\n{r}"
    assert res["so_domain"] == want_domain and res["family"], f"{what}: SO_DOMAIN must stay the program's\n{r}"
    assert res["sockname_len"] == (4 if fam == "6" else 2), f"{what}: getsockname in another family\n{r}"
    assert res["peer"] == [target, ECHO], f"{what}: getpeername\n{r}"
    assert (res["keepalive"], res["keepidle"], res["keepintvl"], res["nodelay"]) == (1, 77, 9, 1), \
        f"{what}: TCP options were not carried over\n{r}"
    assert res["sndbuf"] and res["inheritable"], f"{what}: SO_SNDBUF or close-on-exec changed\n{r}"
    assert res["nonblock_kept"], f"{what}: O_NONBLOCK was not carried over\n{r}"
    if how == "epoll-before":
        assert res.get("epoll"), f"{what}: the epoll registration made before connect() saw no EPOLLOUT\n{r}"
    if how in ("nonblocking", "epoll-before"):
        assert res["connect_ex"] == "EINPROGRESS", f"{what}: a non-blocking connect must say EINPROGRESS\n{r}"
    if how == "wildcard-port":
        assert res["kept_port"], f"{what}: the bound port was not kept\n{r}"
    proxy_host = netns.PROXY6 if proxy == DANTE6 else netns.PROXY4
    assert capture.sent_to(proxy_host, proto=6, dport=netns.DANTE_PORT), f"{what}: nothing went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_replacement_refused_for_a_socket_bound_to_its_own_address(topo, capture, proxify_bin):
    """A socket bound to a v4 source address cannot become an IPv6 one: an errno and one line."""
    r = run_proxified(DANTE6, py(REPLACED) + ["4", T4, ECHO, "bound"])
    what = "AF_INET socket bound to 198.51.100.2, IPv6-only proxy"
    expect_fail_closed(r, what, must_not_contain=('"echo": true',))
    assert json.loads(r.stdout.strip().splitlines()[-1]).get("error") == "EADDRNOTAVAIL", f"{what}\n{r}"
    assert len(r.proxify_lines()) == 1 and "bound to 198.51.100.2" in r.proxify_lines()[0], \
        f"{what}: one line naming the bound address\n{r}"
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
