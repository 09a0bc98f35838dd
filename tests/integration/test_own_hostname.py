"""The machine's own host name under remote DNS (issue 17 item 11).

The name gethostname() returns is answered locally, as glibc's nss-myhostname answers it: the
host's own addresses (here the client's 198.51.100.2 and 2001:db8:1::2), like an /etc/hosts
entry; never a placeholder, which a later connect would turn into this host's name sent to the
proxy. The client namespace gets a host name of its own through a UTS namespace (unshare
--uts), so the test touches nothing of the machine. Without proxify the client cannot resolve
it at all (its DNS server is dead and nsswitch has no myhostname)."""

import json
import shlex
import shutil
import sys

import pytest

import netns
from conftest import PROXIFY_BIN, TIMEOUT_ENV, run_in_client
from hardcase import DANTE, INSTALL_HINT, no_crash
from leakcheck import assert_no_leak

NAME = "pxf-client-host"
OWN4, OWN6 = netns.CLIENT4, netns.CLIENT6

LOOKUPS = f"""
import json, socket
n = socket.gethostname()
res = {{"gethostname": n}}
res["gethostbyname"] = socket.gethostbyname(n)
res["gethostbyname_ex"] = socket.gethostbyname_ex(n.upper() + ".")[2]
res["unspec"] = sorted({{a[4][0] for a in socket.getaddrinfo(n, 80, 0, socket.SOCK_STREAM)}})
res["inet6"] = sorted({{a[4][0] for a in socket.getaddrinfo(n, 80, socket.AF_INET6, socket.SOCK_STREAM)}})
res["reverse"] = socket.getnameinfo(({OWN4!r}, 80), socket.NI_NAMEREQD)[0]
print(json.dumps(res))
"""


def _in_uts(cmd):
    """CMD under proxify, in the client namespace with host name NAME (a UTS namespace)."""
    if shutil.which("unshare") is None or shutil.which("hostname") is None:
        pytest.fail(f"unshare (util-linux) and hostname are needed -- {INSTALL_HINT}", pytrace=False)
    inner = " ".join([shlex.quote(str(PROXIFY_BIN)), "run", "-x", DANTE, "--", *cmd])
    return run_in_client(["unshare", "--uts", "sh", "-c", f"hostname {NAME} && exec {inner}"], env=TIMEOUT_ENV)


def test_own_hostname_resolves_to_own_addresses(topo, capture, proxify_bin):
    r = _in_uts([shlex.quote(sys.executable), "-c", shlex.quote(LOOKUPS)])
    what = f"look-ups of the own host name {NAME!r} under remote DNS"
    no_crash(r, what)
    assert r.rc == 0 and not r.proxify_lines(), f"{what}: failed\n{r}"
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["gethostname"] == NAME, f"{what}: the UTS namespace did not take\n{r}"
    assert res["gethostbyname"] == OWN4, f"{what}: gethostbyname should give {OWN4}, not a placeholder\n{r}"
    assert res["gethostbyname_ex"] == [OWN4], f"{what}: case and a trailing dot are the same name\n{r}"
    assert res["unspec"] == sorted([OWN4, OWN6]), f"{what}: getaddrinfo AF_UNSPEC\n{r}"
    assert res["inet6"] == [OWN6], f"{what}: getaddrinfo AF_INET6\n{r}"
    assert res["reverse"] == NAME, f"{what}: the own address names the host (as nss-myhostname)\n{r}"
    assert not capture.sent_to(netns.PROXY4) and not capture.sent_to(netns.PROXY6), \
        f"{what}: look-ups of the own name went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_hostname_i(topo, capture, proxify_bin):
    r = _in_uts(["hostname", "-i"])
    what = "hostname -i under remote DNS"
    no_crash(r, what)
    assert r.rc == 0, f"{what}: failed\n{r}"
    addrs = r.stdout.split()
    assert OWN4 in addrs and not any(a.startswith("240.") for a in addrs), \
        f"{what}: should print the host's addresses ({OWN4}), not a placeholder\n{r}"
    assert_no_leak(capture, what)
