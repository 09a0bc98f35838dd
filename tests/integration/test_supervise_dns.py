"""Name look-ups of a statically linked glibc program under the supervisor (csrc/sup_dns.c,
built with `cc -static`): glibc's own resolver asks the resolv.conf nameserver (192.0.2.53,
where nothing answers), and the supervisor answers with placeholders from the shared table,
right in the notified send (the reply is waiting in the program's socket when the send
returns) or, for a write on a connected socket (never notified), from its responder. Capture
on: no query and no connection may leave for anywhere but the proxy host."""

import ipaddress

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, no_crash
from leakcheck import assert_no_leak
from test_supervise import SUP, build_static

NAME, T4, ECHO = netns.TARGET_NAME, netns.TARGET4, netns.ECHO_PORT
PLACEHOLDERS4 = ipaddress.ip_network("240.0.0.0/4")
PLACEHOLDERS6 = ipaddress.ip_network("100::/64")
MSG = "sup-dns-ok"


@pytest.fixture(scope="module")
def sup_dns():
    return build_static("sup_dns")


def replies(r):
    """(id, rcode, answers, first address) of each reply the program printed."""
    out = []
    for line in r.stdout.splitlines():
        if line.startswith("reply "):
            _, i, rc, an, addr = line.split()
            out.append((int(i), int(rc), int(an), addr))
    return out


def placeholder(addr):
    ip = ipaddress.ip_address(addr)
    return ip in (PLACEHOLDERS4 if ip.version == 4 else PLACEHOLDERS6)


def test_getaddrinfo_and_connect_by_name(topo, capture, proxify_bin, sup_dns):
    """glibc's getaddrinfo (A and AAAA in one sendmmsg, the interface addresses over netlink,
    a UDP connect to each address to sort them): placeholders of both families; the connect
    to the first goes through the proxy with the name, which only the proxy can resolve."""
    r = run_proxified(DANTE, [sup_dns, "gai", NAME, str(ECHO), MSG], opts=SUP)
    no_crash(r, "getaddrinfo by name")
    assert r.rc == 0, r
    addrs = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("addr ")]
    assert addrs and all(placeholder(a) for a in addrs), r
    assert {ipaddress.ip_address(a).version for a in addrs} == {4, 6}, r
    assert f"echo {MSG}" in r.stdout, r
    # getpeername reports the placeholder the program connected to, not the proxy.
    peer = r.stdout.split("peer ")[1].split()
    assert placeholder(peer[0]) and peer[1] == str(ECHO), r
    assert not r.proxify_lines(), r
    assert_no_leak(capture, "getaddrinfo by name")


@pytest.mark.parametrize("way", ["mmsg", "v6mmsg", "msg", "sendto", "unbound", "send"])
def test_each_way_of_sending_a_query(topo, capture, proxify_bin, sup_dns, way):
    """A query sent every way a resolver sends one gets its answer (a placeholder), from
    the supervisor: on a connected socket (sendmmsg, sendmsg in two pieces, send), by sendto
    on a bound and on an unbound socket, on an AF_INET6 socket connected IPv4-mapped."""
    r = run_proxified(DANTE, [sup_dns, "query", NAME, way], opts=SUP)
    no_crash(r, f"query by {way}")
    assert r.rc == 0, r
    got = replies(r)
    want = [(0x1234, 4), (0x5678, 6)] if way.endswith("mmsg") else [(0x1234, 4)]
    assert sorted(i for i, *_ in got) == sorted(i for i, _ in want), r
    for (i, rcode, an, addr) in got:
        assert rcode == 0 and an == 1 and placeholder(addr), r
        fam = dict(want)[i]
        assert ipaddress.ip_address(addr).version == fam, r
    if way.endswith("mmsg"):
        assert "sent 2" in r.stdout and "lens " in r.stdout, r
        lens = r.stdout.split("lens ")[1].split()
        assert lens[0] == lens[1] != "0", r
    assert_no_leak(capture, f"query by {way}")


def test_the_same_name_gets_the_same_placeholder(topo, capture, proxify_bin, sup_dns):
    """The reply given in the send and the responder's are from one table."""
    a = replies(run_proxified(DANTE, [sup_dns, "query", NAME, "mmsg"], opts=SUP))
    b = replies(run_proxified(DANTE, [sup_dns, "query", NAME, "send"], opts=SUP))
    assert a and b, (a, b)
    v4a = [x[3] for x in a if x[0] == 0x1234]
    assert v4a == [b[0][3]], (a, b)
    assert_no_leak(capture, "same name")


def test_datagrams_elsewhere_are_still_refused(topo, capture, proxify_bin, sup_dns):
    """sendmmsg to an address that is not the resolver: refused, nothing sent."""
    r = run_proxified(DANTE, [sup_dns, "leak", T4, "53"], opts=SUP)
    no_crash(r, "sendmmsg elsewhere")
    assert "sent -1 EOPNOTSUPP" in r.stdout, r
    assert_no_leak(capture, "sendmmsg elsewhere")
