"""Remote-DNS placeholders honour their block (issue 14 items 5 and 6).

Item 6: a block of /17 to /24 is no longer widened to /16, a /16's last name stays inside it,
255.255.0.0/16 does not wrap, and a full block fails resolution with EAI_AGAIN and one warning
line for the run (not one per name). Item 5: with `remote_dns_subnet 127` placeholders are
recognised before the loopback check (the name goes to the proxy), 127.0.0.0/16 stays
loopback, and a placeholder block overlapping a direct block is refused with one line.
The placeholder blocks used here (240.0.0.0/4, proxify's default space, and 127/8) never
reach the network: the capture checks it."""

import ipaddress

import pytest

import netns
from conftest import curl, py, run_proxified
from hardcase import DANTE, no_crash
from leakcheck import assert_no_leak

RESOLVE_MANY = r"""
import socket, sys
n = int(sys.argv[1])
addrs, fails = [], []
for k in range(n):
    try:
        ai = socket.getaddrinfo(f"n{k}.block.example", 80, socket.AF_INET, socket.SOCK_STREAM)
        addrs.append(ai[0][4][0])
    except socket.gaierror as e:
        fails.append((k, e.errno))
print("resolved", len(addrs), "distinct", len(set(addrs)))
print("first", addrs[0] if addrs else "-", "last", addrs[-1] if addrs else "-")
print("fail_errnos", sorted(set(e for _, e in fails)), "fails", len(fails),
      "first_fail", fails[0][0] if fails else -1)
print("EAI_AGAIN", socket.EAI_AGAIN, "EAI_NONAME", socket.EAI_NONAME)
with open(sys.argv[2], "w") as f:
    f.write("\n".join(addrs))
"""


def _resolve_many(topo, block, n, extra_fail=3):
    out = topo.run_dir / f"placeholders-{block.replace('/', '_')}.txt"
    r = run_proxified(DANTE, py(RESOLVE_MANY) + [str(n + extra_fail), str(out)],
                      env={"PROXIFY_REMOTE_DNS_SUBNET": block}, timeout=120)
    no_crash(r, f"resolving {n + extra_fail} names in {block}")
    assert r.rc == 0, f"the resolver script failed\n{r}"
    return r, out.read_text().split()


def _kv(r):
    words = r.stdout.split()
    return {words[i]: words[i + 1] for i in range(len(words) - 1)}


@pytest.mark.parametrize("block,capacity,first,last", [
    ("240.7.0.0/24", 254, "240.7.0.1", "240.7.0.254"),
    ("240.9.128.0/20", 4094, "240.9.128.1", "240.9.143.254"),
    ("240.8.0.0/16", 65534, "240.8.0.1", "240.8.255.254"),
    ("255.255.0.0/16", 65534, "255.255.0.1", "255.255.255.254"),
], ids=["/24", "/20", "/16", "255.255/16"])
def test_block_is_honoured_and_full_fails_once(topo, capture, proxify_bin, block, capacity, first, last):
    r, addrs = _resolve_many(topo, block, capacity)
    net = ipaddress.ip_network(block)
    assert len(addrs) == capacity, f"{block}: expected exactly {capacity} names to resolve\n{r}"
    assert len(set(addrs)) == capacity, f"{block}: an address was handed out twice\n{r}"
    outside = [a for a in addrs if ipaddress.ip_address(a) not in net]
    assert not outside, f"{block}: placeholders outside the block: {outside[:5]}\n{r}"
    special = [a for a in addrs if a in (str(net.network_address), str(net.broadcast_address))]
    assert not special, f"{block}: network/broadcast handed out: {special}\n{r}"
    assert (addrs[0], addrs[-1]) == (first, last), f"{block}: first/last placeholder\n{r}"
    kv = _kv(r)
    assert kv["fail_errnos"] == f"[{kv['EAI_AGAIN']}]", f"{block}: a full block must fail with EAI_AGAIN\n{r}"
    assert f"fails 3 first_fail {capacity}" in r.stdout, f"{block}: the names past the block must fail\n{r}"
    full = [ln for ln in r.proxify_lines() if "full" in ln]
    assert len(full) == 1 and len(r.proxify_lines()) == 1, \
        f"{block}: expected one warning line for the full table, saw:\n{r.proxify_lines()}"
    assert_no_leak(capture, f"resolving in {block}")


def test_subnet_127_names_go_to_the_proxy(topo, capture, proxify_bin):
    """proxychains' `remote_dns_subnet 127`: a name's placeholder is a 127.x address that
    must go to the proxy by name (today it is loopback, direct, and the fetch fails)."""
    r = run_proxified(DANTE, curl(f"http://{netns.TARGET_NAME}/"),
                      env={"PROXIFY_REMOTE_DNS_SUBNET": "127.0.0.0/8"})
    no_crash(r, "subnet 127")
    assert r.rc == 0 and r.stdout.strip() == topo.token, \
        f"subnet 127: {netns.TARGET_NAME} did not come through the proxy\n{r}"
    assert not r.proxify_lines(), f"subnet 127: proxify printed something\n{r}"
    assert_no_leak(capture, "subnet 127")


def test_subnet_127_keeps_local_services_local(topo, capture, proxify_bin):
    """127.0.0.0/16 stays loopback under a 127/8 block, before and after names resolve."""
    code = ("import socket,urllib.request;"
            f"socket.getaddrinfo('{netns.TARGET_NAME}',80,socket.AF_INET);"
            f"print(urllib.request.urlopen('http://127.0.0.1:{netns.LOOPBACK_HTTP_PORT}/',timeout=5).read().decode())")
    r = run_proxified(DANTE, py(code), env={"PROXIFY_REMOTE_DNS_SUBNET": "127.0.0.0/8"})
    no_crash(r, "subnet 127, local service")
    assert r.rc == 0 and not r.proxify_lines(), f"subnet 127: the local service was not reached\n{r}"
    assert_no_leak(capture, "subnet 127, local service")


@pytest.mark.parametrize("opts,env", [
    (["--direct", "127.1.0.0/16"], {"PROXIFY_REMOTE_DNS_SUBNET": "127.0.0.0/8"}),
    (["--rule", "240.0.0.0/8 direct"], {}),
], ids=["direct-block", "direct-rule"])
def test_overlapping_block_is_refused(topo, capture, proxify_bin, opts, env):
    r = run_proxified(DANTE, ["true"], opts=opts, env=env)
    no_crash(r, "overlap")
    assert r.rc != 0, f"a placeholder block overlapping a direct block must be refused\n{r}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "overlaps" in lines[0], f"expected one line naming the overlap\n{r}"
    assert_no_leak(capture, "overlap")
