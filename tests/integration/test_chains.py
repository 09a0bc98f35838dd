"""Issue 6: chains, chain modes, routing rules, proxychains.conf files and `proxify check`,
against real servers in the namespaces.

Besides the session's servers (Dante :1080 / :1081, microsocks :1082 in the proxy ns), this
module starts:
* a second proxy host, namespace pxf-p2, linked only to the proxy host (192.0.2.128/30) and to
  the target host (192.0.2.132/30), with a Dante of its own on 192.0.2.130:1080. The client
  cannot reach it (it routes only to the proxy host, which never forwards): a hop there is
  reachable only through a hop on the proxy host. Its /etc/hosts alone knows far.example, so
  a fetch of http://far.example/ works only when the name reaches that last hop.
* tinyproxy (Debian) on 198.51.100.1:8888 (no auth) and :8889 (Basic auth), for HTTP
  CONNECT hops.
Every process is stopped by its PID when the module ends, and pxf-p2 is removed.

Direct routes (direct rules, NO_PROXY, localnet, local DNS) send packets to somewhere other
than the proxy host on purpose: those cases check that exactly the expected packets left the
client, and nothing else."""

import ipaddress
import json
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

import pytest

import netns
from conftest import PROXIFY_BIN, curl, py, run_in_client, run_proxified
from leakcheck import assert_no_leak

INSTALL_HINT = "install with: scripts/setup.sh"

P4, T4 = netns.PROXY4, netns.TARGET4
URL4 = f"http://{T4}/"
URLNAME = f"http://{netns.TARGET_NAME}/"

# The second proxy host.
NS_FAR = f"pxf{netns.TAG}-p2"
HOP_P, HOP_FAR = "192.0.2.129", "192.0.2.130"  # proxy host <-> far host, /30
FAR_T, T_FAR = "192.0.2.133", "192.0.2.134"  # far host <-> target host, /30
FAR_PORT = 1080
FAR_NAME = "far.example"  # known only to the far host
URLFAR = f"http://{FAR_NAME}/"

TINY_PORT, TINY_AUTH_PORT = 8888, 8889
TINY_USER = "alice"

DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
DOWN = f"socks5h://{P4}:{netns.DOWN_PORT}"
FAR = f"socks5h://{HOP_FAR}:{FAR_PORT}"
TINY = f"http://{P4}:{TINY_PORT}"


def dante_auth(topo):
    return f"socks5h://{netns.TEST_USER}:{topo.password}@{P4}:{netns.DANTE_AUTH_PORT}"


def micro(topo):
    return f"socks5h://{netns.TEST_USER}:{topo.password}@{P4}:{netns.MICROSOCKS_PORT}"


def xs(*hops):
    out = []
    for h in hops:
        out += ["-x", h]
    return out


# ---- servers of this module -----------------------------------------------------------------
class Servers:
    def __init__(self, topo):
        self.topo = topo
        self.procs = []

    def spawn(self, ns, argv, name):
        p = netns.Proc(name, netns.in_ns(ns, *map(str, argv)), self.topo.run_dir / f"{name}.log")
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception as e:  # keep stopping the others
                print(f"test_chains: stopping {p.name} (pid {p.pid}): {e}", file=sys.stderr)
        self.procs.clear()

    def check_alive(self):
        dead = [f"{p.name} (pid {p.pid}, exit {p.popen.returncode}):\n{p.log_tail(10)}"
                for p in self.procs if not p.alive()]
        if dead:
            pytest.fail("a server of test_chains died:\n" + "\n".join(dead), pytrace=False)


class LogMark:
    """What a server wrote to its log since this mark."""

    def __init__(self, path):
        self.path = Path(path)
        self.start = self.path.stat().st_size if self.path.exists() else 0

    def new(self):
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")


def _remove_far_ns():
    if NS_FAR in netns.sh("ip", "netns", "list", check=False).split():
        netns.kill_ns_processes(NS_FAR)  # only ever ours: left by an aborted run of this module
        netns.sh("ip", "netns", "del", NS_FAR, check=False)
    shutil.rmtree(f"/etc/netns/{NS_FAR}", ignore_errors=True)


def _far_conf(run_dir):
    # `external: tgt0`: the far host's link to the target host.
    return (
        f"logoutput: {run_dir / 'dante-far.log'}\n"
        f"internal: {netns._doc_addr(HOP_FAR)} port = {FAR_PORT}\n"
        "external: tgt0\n"
        "clientmethod: none\nsocksmethod: none\n"
        "user.privileged: root\nuser.unprivileged: nobody\n"
        "client pass {\n  from: 0/0 to: 0/0\n  log: error\n}\n"
        "socks pass {\n  from: 0/0 to: 0/0\n  command: connect\n  log: connect error\n}\n")


@pytest.fixture(scope="module")
def far(topo):
    """The second proxy host (pxf-p2) and its Dante, reachable only through the proxy host."""
    if shutil.which("danted") is None:
        pytest.fail(f"danted not found (Debian package dante-server) -- {INSTALL_HINT}", pytrace=False)
    srv = Servers(topo)
    _remove_far_ns()
    try:
        sh = netns.sh
        sh("ip", "netns", "add", NS_FAR)
        sh("ip", "-n", NS_FAR, "link", "set", "lo", "up")
        sh("ip", "-n", netns.NS_PROXY, "link", "add", "hop0", "type", "veth", "peer", "name", "eth0",
           "netns", NS_FAR)
        sh("ip", "-n", NS_FAR, "link", "add", "tgt0", "type", "veth", "peer", "name", "eth1",
           "netns", netns.NS_TARGET)
        for ns, dev, addr in ((netns.NS_PROXY, "hop0", HOP_P), (NS_FAR, "eth0", HOP_FAR),
                              (NS_FAR, "tgt0", FAR_T), (netns.NS_TARGET, "eth1", T_FAR)):
            sh("ip", "-n", ns, "addr", "add", netns._doc_addr(f"{addr}/30"), "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # The far host reaches the target's usual address over its own link, and everything
        # else (the proxy host's Dante connects from 203.0.113.1) back through the proxy host.
        sh("ip", "-n", NS_FAR, "route", "add", netns._doc_addr(f"{T4}/32"), "via", T_FAR)
        sh("ip", "-n", NS_FAR, "route", "add", "default", "via", netns._doc_addr(HOP_P))
        sh(*netns.in_ns(NS_FAR, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0"))
        d = Path(f"/etc/netns/{NS_FAR}")
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text(f"127.0.0.1 localhost\n{T4} {FAR_NAME}\n")
        (d / "resolv.conf").write_text(f"nameserver {netns.DEAD_DNS}\noptions timeout:1 attempts:1\n")
        (d / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
        topo.check_ns_has_only_doc_addresses(NS_FAR)
        conf = topo.run_dir / "dante-far.conf"
        conf.write_text(_far_conf(topo.run_dir))
        p = srv.spawn(NS_FAR, ["danted", "-f", conf, "-p", topo.run_dir / "dante-far.pid"],
                      "dante-far-stdout")
        topo.wait_tcp(netns.NS_PROXY, HOP_FAR, FAR_PORT, p)
    except BaseException as e:
        srv.stop()
        _remove_far_ns()
        pytest.fail(f"could not set up the second proxy host: {e}", pytrace=False)
    try:
        yield srv
    finally:
        srv.stop()
        _remove_far_ns()


class Tiny:
    def __init__(self, srv, password, run_dir):
        self.srv, self.password = srv, password
        self.log = {TINY_PORT: run_dir / f"tinyproxy-{TINY_PORT}.log",
                    TINY_AUTH_PORT: run_dir / f"tinyproxy-{TINY_AUTH_PORT}.log"}

    def auth_url(self, password=None):
        return f"http://{TINY_USER}:{password or self.password}@{P4}:{TINY_AUTH_PORT}"


def _tiny_conf(run_dir, port, auth):
    conf = (
        f"Port {port}\nListen {netns._doc_addr(P4)}\nTimeout 30\nMaxClients 50\n"
        "Allow 198.51.100.0/24\n"
        "Allow 203.0.113.1\n"  # the proxy host's Dante connects from its external address
        "ConnectPort 80\nConnectPort 7\nConnectPort 1080\n"
        f"PidFile \"{run_dir / f'tinyproxy-{port}.pid'}\"\n"
        f"LogFile \"{run_dir / f'tinyproxy-{port}.log'}\"\nLogLevel Connect\n")
    if auth:
        conf += f"BasicAuth {TINY_USER} {auth}\n"
    return conf


@pytest.fixture(scope="module")
def tiny(topo):
    """tinyproxy in the proxy ns: :8888 without auth, :8889 with Basic auth."""
    exe = shutil.which("tinyproxy") or ("/usr/sbin/tinyproxy" if os.path.exists("/usr/sbin/tinyproxy") else None)
    if exe is None:
        pytest.fail(f"tinyproxy not found (Debian package tinyproxy) -- {INSTALL_HINT}", pytrace=False)
    srv = Servers(topo)
    password = secrets.token_hex(8)
    try:
        started = []
        for port, auth in ((TINY_PORT, None), (TINY_AUTH_PORT, password)):
            conf = topo.run_dir / f"tinyproxy-{port}.conf"
            conf.write_text(_tiny_conf(topo.run_dir, port, auth))
            # -d: foreground, so the PID we hold is the server's.
            started.append((srv.spawn(netns.NS_PROXY, [exe, "-d", "-c", conf], f"tinyproxy-{port}-stdout"),
                            port))
        for p, port in started:
            topo.wait_tcp(netns.NS_CLIENT, P4, port, p)
    except BaseException as e:
        srv.stop()
        pytest.fail(f"could not start tinyproxy: {e}", pytrace=False)
    try:
        yield Tiny(srv, password, topo.run_dir)
    finally:
        srv.stop()


# ---- checks ---------------------------------------------------------------------------------
CRASH_MARKS = ("panicked at", "stack backtrace", "RUST_BACKTRACE", "Segmentation fault")


def no_crash(r, what):
    assert not r.signalled, f"{what}: killed by signal {-r.rc}\n{r}"
    for bad in CRASH_MARKS:
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"


def expect_token(topo, r, what, count=1, quiet=True):
    no_crash(r, what)
    assert r.rc == 0, f"{what}: the command failed\n{r}"
    got = r.stdout.split()
    assert got == [topo.token] * count, f"{what}: expected the target's page {count}x ({topo.token})\n{r}"
    if quiet:
        assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"


def expect_failure(topo, r, what, line=True):
    no_crash(r, what)
    assert r.rc != 0, f"{what}: the command should have failed\n{r}"
    assert topo.token not in r.stdout, f"{what}: the page came through anyway\n{r}"
    if line:
        assert r.proxify_lines(), f"{what}: no line starting 'proxify:' on stderr\n{r}"


def syns(capture, port, dst=P4):
    """Connection attempts (pure SYNs) the client sent to dst:port."""
    return [p for p in capture.sent_to(dst, proto=6, dport=port) if p.note == "S"]


def proxy_ports(capture):
    """The proxy host ports the client opened connections to, with their counts."""
    out = {}
    for p in capture.stop():
        if p.outgoing and p.dst == ipaddress.ip_address(P4) and p.proto == 6 and p.note == "S":
            out[p.dport] = out.get(p.dport, 0) + 1
    return out


def assert_only_expected(capture, expected, what):
    """Like assert_no_leak, for a case that sends some packets elsewhere on purpose: every
    packet that is not to the proxy host must match `expected`, and at least one does."""
    out = capture.leaks()
    seen = [p for p in out if expected(p)]
    bad = [p for p in out if not expected(p)]
    assert seen, f"{what}: the expected packets did not leave the client:\n{capture.summary()}"
    assert not bad, (f"LEAK during {what}: unexpected packets:\n"
                     + "\n".join(f"  {p}" for p in bad[:30]) + f"\n(capture: {capture.path})")


def to_target(port):
    t = ipaddress.ip_address(T4)
    return lambda p: p.dst == t and p.proto == 6 and p.dport == port


def dns_query(p):
    return p.dst == ipaddress.ip_address(netns.DEAD_DNS) and p.proto == 17 and p.dport == 53


def fetch_n(url, n):
    """A program making n connections one after the other (urllib: one per request)."""
    return py("import urllib.request\n"
              f"for i in range({n}):\n"
              f"    print(urllib.request.urlopen({url!r}, timeout=5).read().decode().strip(), flush=True)\n")


def connect_probe(host, port, timeout=1.0):
    """Prints 'connected' or 'errno NAME' (or 'timeout') for one connect()."""
    return py("import errno, socket\n"
              f"s = socket.socket(); s.settimeout({timeout})\n"
              "try:\n"
              f"    s.connect(({host!r}, {port})); print('connected')\n"
              "except socket.timeout:\n"
              "    print('timeout')\n"
              "except OSError as e:\n"
              "    print('errno', errno.errorcode.get(e.errno, e.errno))\n")


# ---- topology sanity: the far hop really is reachable only through the first one -----------
def test_far_host_unreachable_from_client(topo, far, capture, proxify_bin):
    r = run_in_client(connect_probe(HOP_FAR, FAR_PORT))
    assert r.rc == 0 and r.stdout.strip() != "connected", \
        f"the client must not reach the far proxy {HOP_FAR} directly\n{r}"
    # ... and far.example is known to the far host only: a chain ending at the proxy host's
    # Dante cannot fetch it.
    r = run_proxified(DANTE, curl(URLFAR))
    expect_failure(topo, r, f"{URLFAR} via {DANTE} alone (the name is unknown there)")
    assert capture.sent_to(HOP_FAR, proto=6), "the direct probe should have shown in the capture"
    assert_only_expected(capture, lambda p: p.dst == ipaddress.ip_address(HOP_FAR) and p.dport == FAR_PORT,
                         "the direct probe of the far proxy")


# ---- strict chains --------------------------------------------------------------------------
CHAINS = {
    # name: (hops, the name the last hop can resolve)
    "microsocks-dante": (lambda t: [micro(t), DANTE], netns.TARGET_NAME),
    "dante-far": (lambda t: [DANTE, FAR], FAR_NAME),
    "microsocks-far": (lambda t: [micro(t), FAR], FAR_NAME),
    "danteauth-microsocks-dante": (lambda t: [dante_auth(t), micro(t), DANTE], netns.TARGET_NAME),
    "danteauth-microsocks-far": (lambda t: [dante_auth(t), micro(t), FAR], FAR_NAME),
}


@pytest.mark.parametrize("dest", ["ipv4", "name"])
@pytest.mark.parametrize("chain", CHAINS)
def test_strict_chain(topo, far, capture, proxify_bin, chain, dest):
    far.check_alive()
    make, name = CHAINS[chain]
    hops = make(topo)
    url = URL4 if dest == "ipv4" else f"http://{name}/"
    far_log = LogMark(topo.run_dir / "dante-far.log")
    r = run_proxified(None, curl(url), opts=xs(*hops))
    expect_token(topo, r, f"{url} through {chain}")
    assert_no_leak(capture, f"{chain} to {url}")
    assert not capture.sent_to(netns.DEAD_DNS), f"a DNS query left the client:\n{capture.summary()}"
    first_port = int(hops[0].rsplit(":", 1)[1])
    assert set(proxy_ports(capture)) == {first_port}, \
        f"the client must connect to the first hop only (:{first_port}), saw {proxy_ports(capture)}"
    if hops[-1] == FAR:
        assert f"{T4}.80" in far_log.new(), \
            f"the far Dante logged no connection to the target:\n{far_log.new()}"


def test_http_alone(topo, tiny, capture, proxify_bin):
    log = LogMark(tiny.log[TINY_PORT])
    for url in (URL4, URLNAME):
        r = run_proxified(TINY, curl(url))
        expect_token(topo, r, f"{url} via {TINY}")
    new = log.new()
    assert f"CONNECT {T4}:80" in new and f"CONNECT {netns.TARGET_NAME}:80" in new, \
        f"tinyproxy should have seen both CONNECTs (the name sent as a name):\n{new}"
    assert_no_leak(capture)
    assert not capture.sent_to(netns.DEAD_DNS)


def test_http_basic_auth(topo, tiny, capture, proxify_bin):
    r = run_proxified(tiny.auth_url(), curl(URLNAME))
    expect_token(topo, r, "through tinyproxy with Basic auth")
    wrong = "not-" + tiny.password
    r = run_proxified(tiny.auth_url(wrong), curl(URLNAME))
    expect_failure(topo, r, "tinyproxy with a wrong password")
    lines = r.proxify_lines()
    assert len(lines) == 1 and f"{P4}:{TINY_AUTH_PORT}" in lines[0], \
        f"one line naming the HTTP proxy expected\n{r}"
    assert wrong not in r.stderr and tiny.password not in r.stderr, f"a password was printed\n{r}"
    assert_no_leak(capture)


def test_socks5_then_http(topo, tiny, capture, proxify_bin):
    log = LogMark(tiny.log[TINY_PORT])
    r = run_proxified(None, curl(URLNAME), opts=xs(DANTE, TINY))
    expect_token(topo, r, "socks5h Dante -> tinyproxy")
    assert f"CONNECT {netns.TARGET_NAME}:80" in log.new(), \
        f"the name should have reached tinyproxy, the last hop:\n{log.new()}"
    assert_no_leak(capture)
    assert proxy_ports(capture) == {netns.DANTE_PORT: 1}, proxy_ports(capture)


def test_http_then_socks5h_far(topo, tiny, far, capture, proxify_bin):
    log = LogMark(tiny.log[TINY_PORT])
    r = run_proxified(None, curl(URLFAR), opts=xs(TINY, FAR))
    expect_token(topo, r, "tinyproxy -> far Dante (socks5h)")
    assert f"CONNECT {HOP_FAR}:{FAR_PORT}" in log.new(), f"tinyproxy log:\n{log.new()}"
    assert_no_leak(capture)
    assert not capture.sent_to(netns.DEAD_DNS)
    assert proxy_ports(capture) == {TINY_PORT: 1}, proxy_ports(capture)


# ---- chain modes ----------------------------------------------------------------------------
def test_dynamic_skips_dead_first_hop(topo, capture, proxify_bin):
    r = run_proxified(None, curl(URLNAME), opts=xs(DOWN, DANTE) + ["--chain-mode", "dynamic", "-v"])
    expect_token(topo, r, "dynamic chain with a dead first hop")
    assert re.search(rf"skipping dead hop \S*{re.escape(P4)}:{netns.DOWN_PORT}", r.stderr), \
        f"-v should log the skipped hop\n{r}"
    assert_no_leak(capture)


def test_dynamic_dead_hop_shared_between_threads(topo, capture, proxify_bin):
    """Two threads connect one after the other: the first finds the hop dead, the second
    does not try it again."""
    code = ("import threading, urllib.request\n"
            "def get():\n"
            f"    print(urllib.request.urlopen({URL4!r}, timeout=5).read().decode().strip(), flush=True)\n"
            "for i in range(2):\n"
            "    t = threading.Thread(target=get); t.start(); t.join()\n")
    r = run_proxified(None, py(code), opts=xs(DOWN, DANTE, micro(topo)) + ["--chain-mode", "dynamic"])
    expect_token(topo, r, "dynamic chain, two threads", count=2)
    ports = proxy_ports(capture)
    assert ports.get(netns.DOWN_PORT) == 1 and ports.get(netns.DANTE_PORT) == 2, \
        f"the dead hop should be tried once, the next hop twice: {ports}"
    assert_no_leak(capture)


def test_dynamic_dead_middle_hop(topo, capture, proxify_bin):
    hops = [DANTE, DOWN, micro(topo)]
    r = run_proxified(None, curl(URL4), opts=xs(*hops) + ["--chain-mode", "dynamic", "-v"])
    expect_token(topo, r, "dynamic chain with a dead middle hop")
    assert f"{P4}:{netns.DOWN_PORT}" in r.stderr and "skipping dead hop" in r.stderr, r
    assert_no_leak(capture)


def test_strict_dead_middle_hop_fails(topo, capture, proxify_bin):
    hops = [DANTE, DOWN, micro(topo)]
    r = run_proxified(None, curl(URL4), opts=xs(*hops))
    expect_failure(topo, r, "strict chain with a dead middle hop")
    lines = r.proxify_lines()
    assert len(lines) == 1, f"one 'proxify:' line expected\n{r}"
    m = re.search(r"hop (\d) of 3 \(([^)]*)\)", lines[0])
    assert m, f"the line should name the hop where the chain broke\n{r}"
    n, named = int(m.group(1)), m.group(2)
    masked = [DANTE, DOWN, micro(topo).replace(topo.password, "***")]
    assert n in (1, 2) and named == masked[n - 1], f"hop {n} is not {named}\n{r}"
    assert topo.password not in r.stderr
    assert_no_leak(capture)
    assert set(proxy_ports(capture)) == {netns.DANTE_PORT}, proxy_ports(capture)


def test_round_robin_uses_both_hops(topo, capture, proxify_bin):
    opts = xs(DANTE, micro(topo)) + ["--chain-mode", "round_robin", "--chain-len", "1"]
    for run in range(2):
        r = run_proxified(None, fetch_n(URL4, 2), opts=opts)
        expect_token(topo, r, f"round_robin run {run + 1}", count=2)
    ports = proxy_ports(capture)
    assert ports == {netns.DANTE_PORT: 2, netns.MICROSOCKS_PORT: 2}, \
        f"two runs of two connections each should use each hop twice: {ports}"
    assert_no_leak(capture)


def test_random_chain_len_1(topo, capture, proxify_bin):
    n = 16
    opts = xs(DANTE, micro(topo)) + ["--chain-mode", "random", "--chain-len", "1"]
    r = run_proxified(None, fetch_n(URL4, n), opts=opts)
    expect_token(topo, r, "random chain", count=n)
    ports = proxy_ports(capture)
    assert sum(ports.values()) == n and set(ports) == {netns.DANTE_PORT, netns.MICROSOCKS_PORT}, \
        f"{n} connections, one hop each, should use both hops (chance of one only: 2^-{n - 1}): {ports}"
    assert_no_leak(capture)


# ---- routing rules --------------------------------------------------------------------------
def test_rule_cidr_deny(topo, capture, proxify_bin):
    r = run_proxified(DANTE, connect_probe(T4, 80), opts=["--rule", "203.0.113.0/24 deny"])
    no_crash(r, "deny rule")
    assert r.stdout.split() == ["errno", "EACCES"], f"connect should fail with EACCES\n{r}"
    assert any("denied by rule" in ln for ln in r.proxify_lines()), r
    assert_no_leak(capture)
    assert not proxy_ports(capture), f"no proxy connection expected: {proxy_ports(capture)}"


def test_rule_cidr_direct(topo, capture, proxify_bin):
    r = run_proxified(DANTE, connect_probe(T4, 80), opts=["--rule", "203.0.113.0/24 direct"])
    no_crash(r, "direct rule")
    # The proxy host does not forward: a direct connection cannot succeed here.
    assert r.stdout.strip() == "timeout", f"the direct connect should time out\n{r}"
    assert_only_expected(capture, to_target(80), "a direct rule")
    assert not proxy_ports(capture), f"no proxy connection expected: {proxy_ports(capture)}"


def test_rule_name_suffix_direct_resolves_locally(topo, capture, proxify_bin):
    r = run_proxified(DANTE, curl(URLNAME), opts=["--rule", "*.example direct"])
    expect_failure(topo, r, "*.example direct (resolved at the dead resolver)", line=False)
    assert capture.sent_to(netns.DEAD_DNS, proto=17, dport=53), \
        f"the name should have been resolved locally:\n{capture.summary()}"
    assert_only_expected(capture, dns_query, "a direct name rule")
    assert not proxy_ports(capture), f"no proxy connection expected: {proxy_ports(capture)}"


def _corp_toml(topo):
    path = topo.run_dir / "chains-corp.toml"
    path.write_text(
        f'proxy = "{DANTE}"\n\n'
        "[[chain]]\n"
        'name = "corp"\n'
        f'hops = ["{micro(topo)}"]\n\n'
        "[[rule]]\n"
        f'match = "{netns.TARGET_NAME}"\n'
        'action = "proxy corp"\n')
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("url,port", [(URLNAME, netns.MICROSOCKS_PORT), (URL4, netns.DANTE_PORT)],
                         ids=["name-corp", "ipv4-default"])
def test_rule_named_chain_from_toml(topo, capture, proxify_bin, url, port):
    r = run_proxified(None, curl(url), opts=["-f", _corp_toml(topo)])
    expect_token(topo, r, f"{url} with the corp rule")
    assert set(proxy_ports(capture)) == {port}, \
        f"{url} should go through :{port} only, saw {proxy_ports(capture)}"
    assert_no_leak(capture)


def test_rule_port_deny(topo, capture, proxify_bin):
    code = ("import errno, socket, urllib.request\n"
            "try:\n"
            f"    socket.create_connection(({T4!r}, 7), timeout=3); print('connected')\n"
            "except OSError as e:\n"
            "    print('errno', errno.errorcode.get(e.errno, e.errno))\n"
            f"print(urllib.request.urlopen({URL4!r}, timeout=5).read().decode().strip())\n")
    r = run_proxified(DANTE, py(code), opts=["--rule", f"{T4}:7 deny"])
    no_crash(r, "port rule")
    assert r.rc == 0 and r.stdout.split() == ["errno", "EACCES", topo.token], \
        f":7 denied with EACCES, :80 fetched through the proxy\n{r}"
    assert any("denied by rule" in ln for ln in r.proxify_lines()), r
    assert_no_leak(capture)
    assert proxy_ports(capture) == {netns.DANTE_PORT: 1}, proxy_ports(capture)


@pytest.mark.parametrize("var", ["NO_PROXY", "no_proxy"])
def test_no_proxy_is_direct(topo, capture, proxify_bin, var):
    # Only with --no-proxy-env (ignored by default: tests/integration/test_no_proxy_env.py).
    r = run_proxified(DANTE, connect_probe(T4, 80), opts=["--no-proxy-env"], env={var: f"localhost,{T4}"})
    no_crash(r, var)
    assert r.stdout.strip() == "timeout", f"{var}: the direct connect should time out\n{r}"
    assert_only_expected(capture, to_target(80), var)
    assert not proxy_ports(capture), f"no proxy connection expected: {proxy_ports(capture)}"


def test_dnat(topo, capture, proxify_bin):
    r = run_proxified(DANTE, curl("http://203.0.113.99/"), opts=["--dnat", f"203.0.113.99:80 {T4}:80"])
    expect_token(topo, r, "dnat 203.0.113.99:80 -> target")
    assert_no_leak(capture)
    assert proxy_ports(capture) == {netns.DANTE_PORT: 1}, proxy_ports(capture)


# ---- proxychains.conf -----------------------------------------------------------------------
STOCK = Path("/etc/proxychains4.conf")
STOCK_PROXY = "socks4 \t127.0.0.1 9050"


def _pc_copy(topo, name, edit=None):
    """A copy of Debian's stock proxychains4.conf whose [ProxyList] names our Dante."""
    if not STOCK.exists():
        pytest.fail(f"{STOCK} not found (Debian package proxychains4) -- {INSTALL_HINT}", pytrace=False)
    lines = STOCK.read_text().splitlines()
    assert lines.count(STOCK_PROXY) == 1, f"{STOCK} is not the stock file (no {STOCK_PROXY!r} line)"
    lines[lines.index(STOCK_PROXY)] = f"socks5 {P4} {netns.DANTE_PORT}"
    if edit:
        lines = edit(lines)
    path = topo.run_dir / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_proxychains_stock_file(topo, capture, proxify_bin):
    path = _pc_copy(topo, "proxychains4.conf")
    r = run_proxified(None, curl(URLNAME), opts=["-f", path])
    expect_token(topo, r, f"-f {path} (the stock file, [ProxyList] edited)")
    assert_no_leak(capture)
    assert not capture.sent_to(netns.DEAD_DNS)


def test_proxychains_env_file(topo, capture, proxify_bin):
    path = _pc_copy(topo, "proxychains4-env.conf")
    r = run_proxified(None, curl(URLNAME), opts=["--proxychains"], env={"PROXYCHAINS_CONF_FILE": str(path)})
    expect_token(topo, r, "--proxychains with PROXYCHAINS_CONF_FILE")
    assert_no_leak(capture)
    assert proxy_ports(capture) == {netns.DANTE_PORT: 1}, proxy_ports(capture)


def test_proxychains_dynamic_dead_first(topo, capture, proxify_bin):
    def edit(lines):
        lines = ["#strict_chain" if ln == "strict_chain" else ln for ln in lines]
        lines = ["dynamic_chain" if ln == "#dynamic_chain" else ln for ln in lines]
        i = lines.index("[ProxyList]")
        return lines[:i + 1] + [f"socks5 {P4} {netns.DOWN_PORT}"] + lines[i + 1:]

    path = _pc_copy(topo, "proxychains4-dynamic.conf", edit)
    text = path.read_text().splitlines()
    assert "dynamic_chain" in text and "strict_chain" not in text
    r = run_proxified(None, curl(URLNAME), opts=["-f", path, "-v"])
    expect_token(topo, r, "dynamic_chain with a dead first entry")
    assert f"skipping dead hop socks5h://{P4}:{netns.DOWN_PORT}" in r.stderr, r
    assert_no_leak(capture)


def test_proxychains_localnet_direct(topo, capture, proxify_bin):
    def edit(lines):
        i = lines.index("[ProxyList]")
        return lines[:i] + ["localnet 203.0.113.0/255.255.255.0"] + lines[i:]

    path = _pc_copy(topo, "proxychains4-localnet.conf", edit)
    r = run_proxified(None, connect_probe(T4, 80), opts=["-f", path])
    no_crash(r, "localnet")
    assert r.stdout.strip() == "timeout", f"the direct connect should time out\n{r}"
    assert_only_expected(capture, to_target(80), "localnet")
    assert not proxy_ports(capture), proxy_ports(capture)


BROKEN = {
    "unknown-key": ("tcp_connect_time_out 8000", "tcp_connect_timeout 8000", "tcp_connect_timeout"),
    "bad-proxy-type": (f"socks5 {P4} {netns.DANTE_PORT}", f"socks6 {P4} {netns.DANTE_PORT}", "socks6"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_proxychains_broken_file(topo, capture, proxify_bin, case):
    old, new, word = BROKEN[case]

    def edit(lines):
        assert lines.count(old) == 1, f"{old!r} not in the stock file"
        lines[lines.index(old)] = new
        return lines

    path = _pc_copy(topo, f"proxychains4-{case}.conf", edit)
    lineno = path.read_text().splitlines().index(new) + 1
    marker = topo.run_dir / f"chains-ran-{case}"
    r = run_proxified(None, ["touch", str(marker)], opts=["-f", path])
    no_crash(r, case)
    assert r.rc == 2, f"a broken config must exit 2\n{r}"
    assert not marker.exists(), f"the command ran despite the broken config\n{r}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{path}:{lineno}:" in lines[0] and word in lines[0], \
        f"one line naming {path}:{lineno} and {word!r} expected\n{r}"
    assert_no_leak(capture)
    assert not proxy_ports(capture)


# ---- proxify check --------------------------------------------------------------------------
def _check(*args):
    return run_in_client([str(PROXIFY_BIN), "check", *args])


def test_check_dante(topo, capture, proxify_bin):
    r = _check("-x", DANTE, f"{T4}:80")
    no_crash(r, "check Dante")
    assert r.rc == 0, f"check should pass\n{r}"
    assert "UDP ASSOCIATE: yes" in r.stdout and "BIND: yes" in r.stdout, r
    assert f"CONNECT to {T4}:80 works" in r.stdout, r
    assert_no_leak(capture)


def test_check_microsocks(topo, capture, proxify_bin):
    r = _check("-x", micro(topo), f"{T4}:80")
    no_crash(r, "check microsocks")
    assert r.rc == 0, f"check should pass (UDP not asked for)\n{r}"
    assert "UDP ASSOCIATE: no" in r.stdout, r
    assert topo.password not in r.stdout + r.stderr, "the password was printed"
    r = _check("--require", "udp", "-x", micro(topo), f"{T4}:80")
    no_crash(r, "check microsocks --require udp")
    assert r.rc == 1, f"--require udp must fail on microsocks\n{r}"
    assert_no_leak(capture)


def test_check_json(topo, far, capture, proxify_bin):
    r = _check("--json", "-x", DANTE, f"{T4}:80")
    no_crash(r, "check --json")
    j = json.loads(r.stdout)
    assert r.rc == 0 and j["ok"] is True and j["exit"] == 0, r
    assert j["supports"]["udp"] == "yes" and j["supports"]["bind"] == "yes", j
    # A chain through the far host, the name resolved by the last hop.
    r = _check("--json", "-x", micro(topo), "-x", FAR, f"{FAR_NAME}:80")
    j = json.loads(r.stdout)
    assert r.rc == 0 and j["ok"] is True, r
    assert [h["url"] for h in j["chain"]["hops"]] == [micro(topo).replace(topo.password, "***"), FAR], j
    assert j["supports"]["udp"] == "n/a", j
    # A dead hop: exit 1, ok false.
    r = _check("--json", "-x", DANTE, "-x", DOWN, f"{T4}:80")
    j = json.loads(r.stdout)
    assert r.rc == 1 and j["ok"] is False, r
    assert_no_leak(capture)


def _decision_lines(r, dest):
    return [ln for ln in r.stderr.splitlines() if re.search(rf"^proxify\[\d+\] \w+: connect fd \d+ to {re.escape(dest)}: (through|direct) ", ln)]


@pytest.mark.parametrize("level", ["-v", "-vv"])
def test_one_decision_line_per_connect(topo, capture, proxify_bin, level):
    """`-v` prints each connect's decision as one line (route and the rule that chose it);
    `-vv` adds the exchange but still one decision line: the rules run once per connect."""
    r = run_proxified(DANTE, curl(URL4), opts=[level])
    no_crash(r, level)
    assert r.rc == 0 and r.stdout.strip() == topo.token, f"fetch failed\n{r}"
    lines = _decision_lines(r, f"{T4}:80")
    assert len(lines) == 1, f"{level}: expected one decision line for {T4}:80, got {lines}\n{r}"
    assert f"through {DANTE} (no rule matched)" in lines[0], lines[0]
    assert_no_leak(capture)


def test_direct_rule_decision_line_names_the_rule(topo, capture, proxify_bin):
    r = run_proxified(DANTE, connect_probe(T4, 80), opts=["-v", "--rule", f"{T4}/32 direct"])
    no_crash(r, "direct rule -v")
    assert r.stdout.strip() == "timeout", f"the direct connect should time out\n{r}"
    lines = _decision_lines(r, f"{T4}:80")
    assert len(lines) == 1 and f'direct by rule 1 "{T4}/32 direct"' in lines[0], \
        f"-v should name the rule that sent it direct, once\n{r}"
    assert_only_expected(capture, to_target(80), "a direct rule")
