"""Issue 12: remote DNS holds for every resolver. Programs with their own DNS client (dig,
host, nslookup, node's c-ares, Python sockets, Chromium headless, ...) send queries to the nameservers of
/etc/resolv.conf; under remote DNS proxify answers them in-process (placeholders for A/AAAA,
REFUSED for the rest), so nothing reaches the resolver.

Two resolver set-ups, each test run under both:
- "dead": the topology's resolv.conf (192.0.2.53, where nothing answers): a query that left
  would show in the capture (and the program would time out);
- "loopback": a query-logging dnsmasq on 127.0.0.1 in the client namespace, resolv.conf
  pointing at it (loopback traffic is invisible to the capture): its log must show ZERO
  queries for the name.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from conftest import py, run_proxified, run_in_client
from leakcheck import assert_no_leak

P4 = netns.PROXY4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
NAME = netns.TARGET_NAME  # resolved by Dante (the proxy host's /etc/hosts)
CANARY = "192.0.2.99"  # what the loopback dnsmasq would answer: a leak would show it
SETUP_HINT = "install with: scripts/setup.sh"
RESOLV = Path(f"/etc/netns/{netns.NS_CLIENT}/resolv.conf")


def _require(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing prerequisites: {', '.join(missing)} -- {SETUP_HINT}", pytrace=False)


@pytest.fixture(scope="module")
def loopback_dnsmasq(topo):
    """dnsmasq on 127.0.0.1:53 in the client namespace, logging every query to a file."""
    _require("dnsmasq", "dig", "host", "nslookup", "cc")
    d = topo.run_dir / "dnsresp"
    d.mkdir(exist_ok=True)
    log = d / "queries.log"
    log.write_text("")
    p = netns.Proc("client-dnsmasq", netns.in_ns(netns.NS_CLIENT,
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        "--listen-address=127.0.0.1", "--port=53", f"--address=/{NAME}/{CANARY}",
        "--log-queries", f"--log-facility={log}", f"--pid-file={d / 'dnsmasq.pid'}",
        "--user=root"), d / "dnsmasq.out")
    try:
        topo.wait_tcp(netns.NS_CLIENT, "127.0.0.1", 53, p)
    except BaseException as e:
        p.stop()
        pytest.fail(f"could not start the loopback dnsmasq: {e}", pytrace=False)
    try:
        yield log
    finally:
        p.stop()


class Resolver:
    def __init__(self, kind, log):
        self.kind, self.log = kind, log
        self.start = log.stat().st_size if log else 0

    def queries_for(self, name):
        if self.log is None:
            return []
        with open(self.log, "rb") as f:
            f.seek(self.start)
            text = f.read().decode(errors="replace")
        return [ln for ln in text.splitlines() if "query[" in ln and name.lower() in ln.lower()]

    def check(self, capture, what, name=NAME):
        assert_no_leak(capture, what)
        q = self.queries_for(name)
        assert not q, f"{what}: the loopback resolver was asked for {name}:\n" + "\n".join(q)


@pytest.fixture(params=["dead", "loopback"])
def resolver(request, topo):
    if request.param == "dead":
        yield Resolver("dead", None)
        return
    log = request.getfixturevalue("loopback_dnsmasq")
    old = RESOLV.read_text()
    RESOLV.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    try:
        # The loopback resolver answers (so a leak would be visible, not a timeout).
        r = run_in_client(["dig", "+short", "+tries=1", "+time=2", NAME])
        assert r.stdout.strip() == CANARY, f"the loopback dnsmasq does not answer:\n{r}"
        yield Resolver("loopback", log)
    finally:
        RESOLV.write_text(old)


def sh(cmd, *, opts=(), timeout=30):
    return run_proxified(DANTE, ["sh", "-c", cmd], opts=opts, timeout=timeout)


def _placeholder(s):
    return s.startswith("240.") or s.startswith("100::")


# ---- dig, host, nslookup, getent ----------------------------------------------------------

def test_dig_short_then_curl(resolver, capture, proxify_bin):
    r = sh(f"a=$(dig +short +tries=1 +time=3 {NAME}) && echo addr=$a && "
           f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://$a:{netns.HTTP_PORT}/")
    assert r.rc == 0, f"dig + curl failed:\n{r}"
    addr = r.stdout.split("addr=")[1].split()[0]
    assert addr.startswith("240."), f"dig did not print a placeholder:\n{r}"
    assert r.stdout.strip().endswith("200"), f"curl to the placeholder did not get the page:\n{r}"
    resolver.check(capture, "dig + curl")


def test_dig_aaaa(resolver, capture, proxify_bin):
    r = sh(f"dig +short +tries=1 +time=3 AAAA {NAME}")
    assert r.rc == 0 and r.stdout.strip().startswith("100::"), f"no IPv6 placeholder:\n{r}"
    resolver.check(capture, "dig AAAA")


@pytest.mark.parametrize("transport", ["", "+tcp"])
def test_dig_mx_refused_fast(resolver, capture, proxify_bin, transport):
    t0 = time.monotonic()
    r = sh(f"dig {transport} +tries=1 +time=3 MX {NAME}")
    took = time.monotonic() - t0
    assert "status: REFUSED" in r.stdout or "status: SERVFAIL" in r.stdout, f"not refused:\n{r}"
    assert took < 2.5, f"dig {transport} MX took {took:.2f}s (a timeout, not an immediate answer):\n{r}"
    resolver.check(capture, f"dig {transport} MX")


def test_dig_ptr_of_placeholder(resolver, capture, proxify_bin):
    r = sh(f"a=$(dig +short +tries=1 +time=3 {NAME}) && dig +short +tries=1 +time=3 -x $a")
    assert r.rc == 0 and r.stdout.strip() == NAME + ".", f"PTR of the placeholder:\n{r}"
    resolver.check(capture, "dig -x")


def test_dig_tcp_then_curl(resolver, capture, proxify_bin):
    """DNS over TCP to the system resolver (dig +tcp, host -T): answered in-process on a
    loopback stream of proxify's, the same placeholders as over UDP."""
    r = sh(f"a=$(dig +tcp +short +tries=1 +time=3 {NAME}) && echo addr=$a && "
           f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://$a:{netns.HTTP_PORT}/ && "
           f"echo && host -T -W 3 -t AAAA {NAME}", opts=["-v"])
    assert r.rc == 0, f"dig +tcp + curl failed:\n{r}"
    addr = r.stdout.split("addr=")[1].split()[0]
    assert addr.startswith("240."), f"dig +tcp did not print a placeholder:\n{r}"
    assert "200" in r.stdout and "has IPv6 address 100::" in r.stdout, f"curl or host -T:\n{r}"
    assert any("TCP connection to the resolver" in ln for ln in r.stderr.splitlines()), \
        f"-v must say the TCP connection was answered in-process:\n{r}"
    resolver.check(capture, "dig +tcp")


def test_host_and_nslookup(resolver, capture, proxify_bin):
    r = sh(f"host -W 3 -t A {NAME}")
    assert r.rc == 0 and "has address 240." in r.stdout, f"host:\n{r}"
    # Plain `host` also asks for MX, which is refused at once (no DNS server named).
    r = sh(f"host -W 3 {NAME}")
    assert "has address 240." in r.stdout and "has IPv6 address 100::" in r.stdout, f"host:\n{r}"
    assert "REFUSED" in r.stdout and r.elapsed < 2.5, f"host:\n{r}"
    r = sh(f"nslookup -timeout=3 {NAME}")
    assert r.rc == 0 and "Address: 240." in r.stdout, f"nslookup:\n{r}"
    resolver.check(capture, "host, nslookup")


def test_getent_hosts(resolver, capture, proxify_bin):
    r = sh(f"getent hosts {NAME} && getent ahosts {NAME}")
    lines = r.stdout.splitlines()
    assert r.rc == 0 and lines and all(_placeholder(ln.split()[0]) for ln in lines), f"getent:\n{r}"
    resolver.check(capture, "getent")


# ---- a program's own UDP client --------------------------------------------------------

RAW_CLIENT = r"""
import json, socket, struct, sys
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
def query(name, qtype=1, qid=0x1234):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        q += bytes([len(l)]) + l.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)
def addr(reply):
    return ".".join(map(str, reply[-4:]))
out = {}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(query(sys.argv[1]), (ns, 53))
data, src = s.recvfrom(2048)
out["unconnected"] = [addr(data), list(src), data[:2].hex(), data[3] & 15]
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3)
c.connect((ns, 53))
c.send(query(sys.argv[1], qid=0x4321))
data = c.recv(2048)
out["connected"] = [addr(data), list(c.getpeername()), data[:2].hex()]
c.send(query(sys.argv[1], 15, qid=7))
out["mx_rcode"] = c.recv(2048)[3] & 15
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); v6.settimeout(3)
v6.sendto(query(sys.argv[1], 28), ("::ffff:" + ns, 53))
data, src = v6.recvfrom(2048)
out["v6sock"] = [socket.inet_ntop(socket.AF_INET6, data[-16:]), src[0], src[1]]
print(json.dumps(out))
"""


TCP_CLIENT = r"""
import json, select, socket, struct, sys
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
def query(name, qtype=1, qid=0x1234):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for l in name.split("."):
        q += bytes([len(l)]) + l.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    return struct.pack(">H", len(q)) + q
def read_msg(s):
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
        d = s.recv(4096)
        if not d:
            raise SystemExit("EOF before a whole reply: %r" % buf)
        buf += d
    n = struct.unpack(">H", buf[:2])[0]
    return buf[2:2 + n], buf[2 + n:]
out = {}
# Blocking; two queries pipelined in one write, the length prefix of a third written alone.
s = socket.create_connection((ns, 53), timeout=3)
out["peer"] = list(s.getpeername())
s.sendall(query(sys.argv[1], 1, 0x1111) + query(sys.argv[1], 28, 0x2222))
a, rest = read_msg(s)
s2 = socket.socket(); s2.close()
b = rest if rest else b""
if not b:
    b, rest = read_msg(s)
else:
    class Buf:
        def __init__(self, d, s): self.d, self.s = d, s
        def recv(self, n):
            if self.d:
                d, self.d = self.d, b""
                return d
            return self.s.recv(n)
    b, rest = read_msg(Buf(rest, s))
out["a"] = [a[:2].hex(), ".".join(map(str, a[-4:]))]
out["aaaa"] = [b[:2].hex(), socket.inet_ntop(socket.AF_INET6, b[-16:])]
q = query(sys.argv[1], 15, 0x3333)
s.sendall(q[:2]); s.sendall(q[2:])
mx, _ = read_msg(s)
out["mx"] = [mx[:2].hex(), mx[3] & 15]
s.shutdown(socket.SHUT_WR)
out["eof"] = s.recv(100) == b""
s.close()
# Non-blocking, woken by poll like an event loop.
n = socket.socket(socket.AF_INET6 if ":" in ns else socket.AF_INET, socket.SOCK_STREAM)
n.setblocking(False)
rc = n.connect_ex((ns, 53))
p = select.poll(); p.register(n, select.POLLOUT)
assert p.poll(3000), "never writable"
out["nb_connect"] = [rc in (0, 115), n.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]
n.send(query(sys.argv[1], 1, 0x4444))
p = select.poll(); p.register(n, select.POLLIN)
assert p.poll(3000), "the reply never made the socket readable"
n.setblocking(True); n.settimeout(3)
r, _ = read_msg(n)
out["nb"] = [r[:2].hex(), ".".join(map(str, r[-4:]))]
print(json.dumps(out))
"""


def test_python_tcp_client(resolver, capture, proxify_bin):
    """A program's own DNS-over-TCP client: pipelined queries, a query split across writes,
    the end of the stream after shutdown, a non-blocking socket woken by poll."""
    r = run_proxified(DANTE, py(TCP_CLIENT) + [NAME])
    assert r.rc == 0, f"the TCP client failed:\n{r}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ns = RESOLV.read_text().split()[1]
    assert out["peer"] == [ns, 53], out
    assert out["a"][0] == "1111" and out["a"][1].startswith("240."), out
    assert out["aaaa"][0] == "2222" and out["aaaa"][1].startswith("100::"), out
    assert out["mx"] == ["3333", 5], out
    assert out["eof"] is True, out
    assert out["nb_connect"] == [True, 0], out
    assert out["nb"][0] == "4444" and out["nb"][1] == out["a"][1], out
    resolver.check(capture, "python TCP client")


def test_direct_name_is_asked_of_the_resolver(loopback_dnsmasq, topo, capture, proxify_bin):
    """A name the rules send direct: its queries pass to the system resolver, over UDP and
    over TCP (on a connection of proxify's), and get the resolver's own answer."""
    old = RESOLV.read_text()
    RESOLV.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    try:
        res = Resolver("loopback", loopback_dnsmasq)
        r = sh(f"dig +short +tries=1 +time=3 {NAME} && dig +tcp +short +tries=1 +time=3 {NAME}",
               opts=["--rule", f"{NAME} direct"])
        assert r.rc == 0 and r.stdout.split() == [CANARY, CANARY], f"direct name:\n{r}"
        assert len(res.queries_for(NAME)) == 2, "the resolver must have been asked twice"
        assert_no_leak(capture, "direct name")
    finally:
        RESOLV.write_text(old)


def test_python_udp_client(resolver, capture, proxify_bin):
    r = run_proxified(DANTE, py(RAW_CLIENT) + [NAME])
    assert r.rc == 0, f"the UDP client failed:\n{r}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ns = RESOLV.read_text().split()[1]
    a, src, qid, rcode = out["unconnected"]
    assert a.startswith("240.") and src == [ns, 53] and qid == "1234" and rcode == 0, out
    a, peer, qid = out["connected"]
    assert a.startswith("240.") and peer == [ns, 53] and qid == "4321", out
    assert out["mx_rcode"] == 5, out
    a6, src6, port6 = out["v6sock"]
    assert a6.startswith("100::") and src6 == "::ffff:" + ns and port6 == 53, out
    resolver.check(capture, "python UDP client")



def test_short_address_buffer_is_not_overrun(resolver, topo, capture, proxify_bin):
    """recvfrom and recvmsg of the responder's answer into a 4-byte address buffer: the address
    is truncated to it and its full length reported, as the kernel does; nothing is written past
    the buffer (csrc/short_buffers.c checks a canary behind it)."""
    from hardcase import build_c
    prog = build_c(topo, "short_buffers")
    ns = RESOLV.read_text().split()[1]
    r = run_proxified(DANTE, [str(prog), "dns", ns, NAME])
    assert r.rc == 0, f"the client failed:\n{r}"
    for call in ("recvfrom", "recvmsg"):
        assert f"{call} alen=16 canary=ok" in r.stdout, f"{call} overran the address buffer\n{r}"
    resolver.check(capture, "short address buffer")

# ---- node (c-ares) -------------------------------------------------------------------------

NODE = r"""
const dns = require('dns'), net = require('net');
const r = new dns.Resolver({timeout: 3000, tries: 1});
r.resolve4(process.argv[1], (err, addrs) => {
  if (err) { console.log('ERR ' + err.code); process.exit(1); }
  const s = net.connect({host: addrs[0], port: %d}, () => {
    s.end('GET / HTTP/1.0\r\nHost: x\r\n\r\n');
  });
  let got = '';
  s.on('data', d => got += d);
  s.on('end', () => { console.log(addrs[0] + ' ' + got.split('\r\n')[0]); });
  s.on('error', e => { console.log('CONNECT ' + e.code); process.exit(1); });
});
""" % netns.HTTP_PORT


def test_node_resolver_then_connect(resolver, capture, proxify_bin):
    _require("node")
    r = run_proxified(DANTE, ["node", "-e", NODE, NAME])
    assert r.rc == 0 and r.stdout.startswith("240.") and " 200 " in r.stdout, f"node:\n{r}"
    resolver.check(capture, "node dns.Resolver")


# ---- Ruby Resolv, aiohttp + aiodns (c-ares), nmap ------------------------------------------

RUBY = "require 'resolv'; puts Resolv::DNS.open { |d| d.getaddress(ARGV[0]).to_s }"


def test_ruby_resolv_then_curl(resolver, capture, proxify_bin):
    _require("ruby")
    r = sh(f"a=$(ruby -e \"{RUBY}\" {NAME}) && echo addr=$a && "
           f"curl -sS --max-time 5 -o /dev/null -w '%{{http_code}}' http://$a:{netns.HTTP_PORT}/")
    assert r.rc == 0 and "addr=240." in r.stdout and r.stdout.strip().endswith("200"), f"ruby:\n{r}"
    resolver.check(capture, "ruby Resolv")


AIOHTTP = f"""
import asyncio, aiohttp
async def main():
    conn = aiohttp.TCPConnector(resolver=aiohttp.AsyncResolver())
    async with aiohttp.ClientSession(connector=conn) as s:
        async with s.get("http://{NAME}:{netns.HTTP_PORT}/", timeout=aiohttp.ClientTimeout(total=5)) as r:
            print(r.status)
asyncio.run(main())
"""
DEBIAN_PYTHON = "/usr/bin/python3"  # python3-aiohttp / python3-aiodns are Debian's


def test_aiohttp_with_aiodns(resolver, capture, proxify_bin):
    chk = subprocess.run([DEBIAN_PYTHON, "-c", "import aiohttp, aiodns"], capture_output=True)
    if chk.returncode != 0:
        pytest.fail(f"aiohttp/aiodns missing for {DEBIAN_PYTHON} -- {SETUP_HINT}", pytrace=False)
    r = run_proxified(DANTE, [DEBIAN_PYTHON, "-c", AIOHTTP])
    assert r.rc == 0 and r.stdout.strip() == "200", f"aiohttp + aiodns:\n{r}"
    resolver.check(capture, "aiohttp + aiodns")


def test_nmap_connect_scan_by_name(resolver, capture, proxify_bin):
    _require("nmap")
    r = sh(f"nmap -sT -Pn -p {netns.HTTP_PORT} {NAME}", timeout=30)
    assert r.rc == 0 and f"{netns.HTTP_PORT}/tcp open" in r.stdout, f"nmap:\n{r}"
    # Its reverse look-up of the placeholder is answered in-process: no resolver time-out.
    assert r.elapsed < 4, f"nmap took {r.elapsed:.1f}s:\n{r}"
    resolver.check(capture, "nmap -sT")


CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                  "--no-default-browser-check", "--virtual-time-budget=5000"]


def test_chromium_headless(resolver, topo, capture, proxify_bin, tmp_path):
    """Chromium, with its own resolver: the page of a name only the proxy can resolve."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(f"chromium is missing -- {SETUP_HINT}", pytrace=False)
    profile = tmp_path / "profile"
    r = run_proxified(DANTE, [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                              f"http://{NAME}/"], timeout=90)
    assert r.rc == 0 and topo.token in r.stdout, f"chromium did not show the page:\n{r}"
    resolver.check(capture, "chromium")


# ---- --dns-server: queries proxify cannot answer, forwarded over TCP through the proxy ------
UPSTREAM_PORT = 5353  # a dnsmasq on the target host, reachable only through the proxy
MX_NAME, MX_HOST = "mail.example", "mx1.mail.example"
TXT_NAME, TXT_TEXT = "txt.example", "hello-proxify"


@pytest.fixture(scope="module")
def upstream_dns(topo):
    """dnsmasq on the target host (TCP and UDP, port 5353) with an MX and a TXT record."""
    _require("dnsmasq", "dig")
    d = topo.run_dir / "dnsresp-upstream"
    d.mkdir(exist_ok=True)
    p = netns.Proc("target-dnsmasq", netns.in_ns(netns.NS_TARGET,
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        f"--listen-address={netns._doc_addr(netns.TARGET4)}", f"--port={UPSTREAM_PORT}",
        f"--mx-host={MX_NAME},{MX_HOST},10", f"--txt-record={TXT_NAME},{TXT_TEXT}",
        "--log-queries", f"--log-facility={d / 'queries.log'}", f"--pid-file={d / 'dnsmasq.pid'}",
        "--user=root"), d / "dnsmasq.out")
    try:
        topo.wait_tcp(netns.NS_TARGET, netns.TARGET4, UPSTREAM_PORT, p)
    except BaseException as e:
        p.stop()
        pytest.fail(f"could not start the target's dnsmasq: {e}", pytrace=False)
    try:
        yield f"{netns.TARGET4}:{UPSTREAM_PORT}", d / "queries.log"
    finally:
        p.stop()


@pytest.mark.parametrize("rtype,name,want", [("MX", MX_NAME, MX_HOST), ("TXT", TXT_NAME, TXT_TEXT)])
def test_dns_server_forwards_what_proxify_cannot_answer(resolver, upstream_dns, capture, proxify_bin,
                                                        rtype, name, want):
    server, log = upstream_dns
    r = sh(f"dig +short +tries=1 +time=5 {rtype} {name}", opts=["--dns-server", server, "-v"])
    assert r.rc == 0 and want in r.stdout, f"dig {rtype} {name} was not answered by the upstream:\n{r}"
    assert any("forwarded through the proxy" in ln for ln in r.stderr.splitlines()), \
        f"-v must say the query was forwarded:\n{r}"
    assert name in log.read_text(), f"the upstream dnsmasq never saw the query:\n{r}"
    assert capture.sent_to(P4, proto=6, dport=netns.DANTE_PORT), "nothing went to the proxy"
    resolver.check(capture, f"dig {rtype} with --dns-server", name=name)


def test_dns_server_forwards_over_tcp_from_the_program(resolver, upstream_dns, capture, proxify_bin):
    """dig +tcp MX: the program's TCP query, answered by the upstream through the proxy."""
    server, log = upstream_dns
    r = sh(f"dig +tcp +short +tries=1 +time=5 MX {MX_NAME}", opts=["--dns-server", server, "-v"])
    assert r.rc == 0 and MX_HOST in r.stdout, f"dig +tcp MX was not answered by the upstream:\n{r}"
    assert any("forwarded through the proxy" in ln for ln in r.stderr.splitlines()), \
        f"-v must say the query was forwarded:\n{r}"
    resolver.check(capture, "dig +tcp MX with --dns-server", name=MX_NAME)


def test_dns_server_unreachable_is_servfail_at_once(resolver, capture, proxify_bin):
    """A DNS server the proxy cannot reach: an answer (SERVFAIL), not silence, and no local
    query. (dig prints a status line only for a reply it got; a timeout prints none.)"""
    r = sh(f"dig +tries=1 +time=8 MX {MX_NAME}", opts=["--dns-server", "192.0.2.250:53"])
    assert "status: SERVFAIL" in r.stdout, f"expected SERVFAIL:\n{r}"
    resolver.check(capture, "dig MX with an unreachable --dns-server", name=MX_NAME)
