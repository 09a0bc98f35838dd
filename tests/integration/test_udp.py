"""Issue 3: UDP through SOCKS5 UDP ASSOCIATE, against real servers in the namespaces.

A UDP echo server (dual stack, port 7) and dnsmasq run on the target host; the client reaches
them only through Dante's UDP relay. A fake SOCKS5 proxy of ours (proxy host, ports
FAKE_BAD_PORT / FAKE_CLOSE_PORT) sends malformed datagrams from its relay and from elsewhere,
or drops the control connection. Every case runs under `proxify run` with a capture in the
client namespace and fails on any packet that left the client for anywhere but the proxy."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import netns
from conftest import py, run_proxified
from leakcheck import assert_no_leak

P4, P6 = netns.PROXY4, netns.PROXY6
T4, T6 = netns.TARGET4, netns.TARGET6
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
DANTE_V6 = f"socks5h://[{P6}]:{netns.DANTE_PORT}"
UDP_ECHO_PORT = 7
DNS_NAME, DNS_ANSWER = "udp.example", "203.0.113.77"
FAKE_BAD_PORT, FAKE_CLOSE_PORT = 1180, 1181  # our fake SOCKS5 UDP proxies, on PROXY4
SETUP_HINT = "install with: scripts/setup.sh"

# ---- servers (started by the module fixture, stopped by PID) -----------------------------

UDP_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("::", int(sys.argv[1])))
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(data, addr)
"""

# A SOCKS5 server that only does UDP ASSOCIATE, with a relay that misbehaves.
#   argv: HOST PORT MODE    MODE "bad": on the client's first datagram, send it malformed and
#   foreign datagrams, then one good reply ("GOOD:" + payload); afterwards echo ("ECHO:" +
#   payload). MODE "close": echo the first datagram, then close the control connection.
FAKE_UDP_PROXY = r"""
import socket, struct, sys, threading
HOST, PORT, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
OTHER_IP = sys.argv[4]  # another address of this host, for a datagram from a foreign IP
TARGET = sys.argv[5]

def log(*a):
    print(*a, flush=True)

def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise ConnectionError("closed")
        b += d
    return b

def hdr(ip, port, frag=0):
    return bytes([0, 0, frag, 1]) + socket.inet_aton(ip) + struct.pack("!H", port)

def parse(d):
    atyp = d[3]
    if atyp == 1:
        return d[10:]
    if atyp == 4:
        return d[22:]
    return d[5 + d[4] + 2:]

def handle(c):
    c.settimeout(30)
    with c:
        try:
            _, n = exact(c, 2); exact(c, n)
            c.sendall(b"\x05\x00")
            ver, cmd, _, atyp = exact(c, 4)
            alen = {1: 4, 4: 16}.get(atyp) or exact(c, 1)[0]
            exact(c, alen + 2)
            if cmd != 3:
                c.sendall(bytes([5, 7, 0, 1]) + bytes(6))
                return
            relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            relay.bind((HOST, 0))
            relay.settimeout(20)
            rogue_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rogue_port.bind((HOST, 0))
            rogue_ip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rogue_ip.bind((OTHER_IP, relay.getsockname()[1]))
            c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(HOST) + struct.pack("!H", relay.getsockname()[1]))
            data, client = relay.recvfrom(65535)
            payload = parse(data)
            log("first datagram from", client, payload)
            good = hdr(TARGET, 7)
            if MODE == "close":
                relay.sendto(good + b"ECHO:" + payload, client)
                c.shutdown(socket.SHUT_RDWR)
                c.close()
                log("control connection closed")
                while True:
                    data, src = relay.recvfrom(65535)
                    log("AFTER CLOSE: datagram from", src, data[:40])
            bad = [
                b"",                                            # empty
                b"\x00",                                        # 1 byte
                b"\x00\x00\x00",                                # header cut after FRAG
                b"\x00\x00\x00\x01\xcb\x00",                    # IPv4 address cut short
                b"\x00\x00\x00\x04" + bytes(8),                 # IPv6 address cut short
                b"\x00\x00\x00\x09" + bytes(6) + b"BADATYP",    # unknown ATYP
                b"\x00\x00\x00\x03\xff" + b"x" * 20,            # domain longer than the datagram
                b"\x00\x00\x00\x03\x00" + b"\x00\x07ZERO",      # domain of length 0 ... then data
                b"\x00\x01\x00\x01" + socket.inet_aton(TARGET) + b"\x00\x07RSV",  # RSV != 0
                hdr(TARGET, 7, frag=1) + b"FRAG1",              # fragments are dropped
                hdr(TARGET, 7, frag=0x81) + b"FRAG81",
            ]
            for d in bad:
                relay.sendto(d, client)
            rogue_port.sendto(good + b"ROGUE-PORT", client)   # right IP, wrong port
            rogue_ip.sendto(good + b"ROGUE-IP", client)       # right port, wrong IP
            relay.sendto(good + b"GOOD:" + payload, client)
            log("bad burst sent")
            while True:
                data, src = relay.recvfrom(65535)
                relay.sendto(good + b"ECHO:" + parse(data), src)
        except (OSError, ConnectionError, IndexError) as e:
            log("connection ended:", e)

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((HOST, PORT))
srv.listen(16)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

MMSG_C = r"""
/* sendmmsg/recvmmsg through the association: argv: IP PORT CONNECTED(0|1) TOKEN */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#define N 8
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &dst.sin_addr);
    int connected = atoi(argv[3]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct timeval tv = {3, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connected && connect(s, (struct sockaddr *)&dst, sizeof dst) != 0) {
        printf("connect failed errno=%d\n", errno); return 1;
    }
    char out[N][64];
    struct mmsghdr m[N];
    struct iovec iov[N];
    memset(m, 0, sizeof m);
    for (int i = 0; i < N; i++) {
        snprintf(out[i], sizeof out[i], "mmsg-%d-%s", i, argv[4]);
        iov[i].iov_base = out[i];
        iov[i].iov_len = strlen(out[i]);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        if (!connected) { m[i].msg_hdr.msg_name = &dst; m[i].msg_hdr.msg_namelen = sizeof dst; }
    }
    int sent = sendmmsg(s, m, N, 0);
    printf("sendmmsg=%d", sent);
    for (int i = 0; i < N; i++) printf(" len%d=%u/%zu", i, m[i].msg_len, iov[i].iov_len);
    printf("\n");
    if (sent != N) return 1;
    int seen[N] = {0}, got = 0, calls = 0, bad = 0;
    while (got < N && calls < 50) {
        char in[N][128];
        struct sockaddr_in from[N];
        struct iovec riov[N];
        struct mmsghdr r[N];
        memset(r, 0, sizeof r);
        for (int i = 0; i < N; i++) {
            riov[i].iov_base = in[i];
            riov[i].iov_len = sizeof in[i];
            r[i].msg_hdr.msg_iov = &riov[i];
            r[i].msg_hdr.msg_iovlen = 1;
            r[i].msg_hdr.msg_name = &from[i];
            r[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(s, r, N, MSG_WAITFORONE, NULL);
        calls++;
        if (n < 0) { printf("recvmmsg failed errno=%d after %d\n", errno, got); return 1; }
        for (int i = 0; i < n; i++) {
            char src[64];
            inet_ntop(AF_INET, &from[i].sin_addr, src, sizeof src);
            int k = -1;
            sscanf(in[i], "mmsg-%d-", &k);
            int ok = k >= 0 && k < N && !seen[k] && r[i].msg_len == strlen(out[k])
                     && memcmp(in[i], out[k], r[i].msg_len) == 0
                     && r[i].msg_hdr.msg_namelen == sizeof(struct sockaddr_in)
                     && from[i].sin_family == AF_INET && strcmp(src, argv[1]) == 0
                     && ntohs(from[i].sin_port) == atoi(argv[2]);
            printf("got len=%u from=%s:%d namelen=%u %s\n", r[i].msg_len, src,
                   ntohs(from[i].sin_port), r[i].msg_hdr.msg_namelen, ok ? "ok" : "BAD");
            if (!ok) bad++; else { seen[k] = 1; got++; }
        }
    }
    printf("received=%d bad=%d calls=%d\n", got, bad, calls);
    return got == N && bad == 0 ? 0 : 1;
}
"""


def _require(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing prerequisites for the UDP tests: {', '.join(missing)} -- {SETUP_HINT}",
                    pytrace=False)


def _wait_udp_echo(timeout=10):
    probe = (
        "import socket,sys,time\n"
        f"end=time.monotonic()+{timeout}\n"
        "while time.monotonic()<end:\n"
        "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.2)\n"
        f"    s.sendto(b'ping',({T4!r},{UDP_ECHO_PORT}))\n"
        "    try:\n"
        "        s.recvfrom(16);sys.exit(0)\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
        "sys.exit(1)\n")
    r = subprocess.run(netns.in_ns(netns.NS_TARGET, sys.executable, "-c", probe), timeout=timeout + 10)
    return r.returncode == 0


@pytest.fixture(scope="module")
def udp_env(topo):
    """The UDP echo server and dnsmasq on the target host, our fake UDP proxies on the proxy
    host, and the mmsg test program (compiled here). Stopped by PID when the module ends."""
    _require("dnsmasq", "dig", "cc")
    procs = []

    def spawn(ns, argv, name):
        p = netns.Proc(name, netns.in_ns(ns, *argv), topo.run_dir / f"{name}.log")
        procs.append(p)
        return p

    d = topo.run_dir / "udp"
    d.mkdir(exist_ok=True)
    try:
        echo = spawn(netns.NS_TARGET, [sys.executable, "-c", UDP_ECHO_SERVER, str(UDP_ECHO_PORT)],
                     "udp-echo")
        dns = spawn(netns.NS_TARGET, [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={netns._doc_addr(T4)}", f"--address=/{DNS_NAME}/{DNS_ANSWER}",
            f"--pid-file={d / 'dnsmasq.pid'}", "--log-facility=-", "--user=root", "--port=53"],
            "udp-dnsmasq")
        fakes = [spawn(netns.NS_PROXY, [sys.executable, "-c", FAKE_UDP_PROXY, P4, str(port), mode,
                                        netns.PROXY_T4, T4], f"udp-fake-{mode}")
                 for mode, port in (("bad", FAKE_BAD_PORT), ("close", FAKE_CLOSE_PORT))]
        src = d / "mmsg.c"
        src.write_text(MMSG_C)
        cc = subprocess.run(["cc", "-O1", "-Wall", "-o", str(d / "mmsg"), str(src)],
                            capture_output=True, text=True, timeout=60)
        if cc.returncode != 0:
            raise RuntimeError(f"cc failed on {src}:\n{cc.stderr}")
        if not _wait_udp_echo():
            raise RuntimeError(f"the UDP echo server did not answer:\n{echo.log_tail()}")
        topo.wait_tcp(netns.NS_TARGET, T4, 53, dns)  # dnsmasq serves TCP too: it is up
        for p, port in zip(fakes, (FAKE_BAD_PORT, FAKE_CLOSE_PORT)):
            topo.wait_tcp(netns.NS_CLIENT, P4, port, p)
    except BaseException as e:
        for p in reversed(procs):
            p.stop()
        pytest.fail(f"could not start the UDP test servers: {e}", pytrace=False)
    try:
        yield d
    finally:
        for p in reversed(procs):
            p.stop()


def run_py(proxy, code, **kw):
    return run_proxified(proxy, py(code), **kw)


def _json(r, what):
    """The JSON object on the last stdout line of a script that must have run to its end."""
    assert not r.signalled, f"{what}: killed by signal {-r.rc} (a crash)\n{r}"
    for bad in ("panicked at", "stack backtrace", "Segmentation fault"):
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"
    lines = r.stdout.strip().splitlines()
    assert r.rc == 0 and lines, f"{what}: the script did not run to its end\n{r}"
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"{what}: no JSON result line\n{r}") from None


def _udp_went_via_proxy(capture):
    return capture.sent_to(P4, proto=17) + capture.sent_to(P6, proto=17)


def _no_udp_to_target(capture):
    direct = [p for a in (T4, T6) for p in capture.sent_to(a, proto=17)]
    assert not direct, f"UDP went to the target directly:\n{capture.summary()}"


def _ok_run(r, capture, what):
    assert not r.proxify_lines(), f"{what}: proxify printed something on a successful run\n{r}"
    assert _udp_went_via_proxy(capture), f"{what}: no UDP to the proxy host in the capture:\n{capture.summary()}"
    _no_udp_to_target(capture)
    assert_no_leak(capture, what)


PRELUDE = """
import errno, json, os, socket, struct, sys, time
def ename(e):
    if e.errno is None:
        return type(e).__name__
    return errno.errorcode.get(e.errno, str(e.errno))
def sock(fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(5)
    return s
"""


# ---- through Dante ----------------------------------------------------------------------

@pytest.mark.parametrize("opts", [[], ["--enforce"]], ids=["preload", "enforce"])
def test_sendto_recvfrom_ipv4(topo, udp_env, capture, proxify_bin, opts):
    """Under --enforce the shim's datagrams to Dante's relay (a hop's IP) pass the supervisor."""
    code = PRELUDE + f"""
s = sock()
out = []
for i in range(3):
    msg = b"dgram-%d-" % i + os.urandom(8).hex().encode()
    s.sendto(msg, ({T4!r}, {UDP_ECHO_PORT}))
    data, src = s.recvfrom(2048)
    out.append([data == msg, list(src)])
print(json.dumps({{"replies": out}}))
"""
    r = run_py(DANTE, code, opts=opts)
    res = _json(r, "sendto/recvfrom")
    assert res["replies"] == [[True, [T4, UDP_ECHO_PORT]]] * 3, f"wrong echo or source:\n{r}"
    _ok_run(r, capture, "sendto/recvfrom")


@pytest.mark.parametrize("opts", [[], ["--enforce"]], ids=["preload", "enforce"])
def test_connected_send_recv_getpeername(topo, udp_env, capture, proxify_bin, opts):
    code = PRELUDE + f"""
s = sock()
s.connect(({T4!r}, {UDP_ECHO_PORT}))
peer = s.getpeername()
local = s.getsockname()
msg = b"connected-" + os.urandom(8).hex().encode()
n = s.send(msg)
data = s.recv(2048)
s.send(msg + b"-2")
data2, src2 = s.recvfrom(2048)
print(json.dumps({{"peer": list(peer), "local_port": local[1], "sent": n, "len": len(msg),
                  "echo": data == msg, "echo2": data2 == msg + b"-2", "src2": list(src2)}}))
"""
    r = run_py(DANTE, code, opts=opts)
    res = _json(r, "connected UDP")
    assert res["peer"] == [T4, UDP_ECHO_PORT], f"getpeername is not the target:\n{r}"
    assert res["local_port"] != 0, f"getsockname has no port:\n{r}"
    assert res["sent"] == res["len"], f"send() did not report the payload length:\n{r}"
    assert res["echo"] and res["echo2"], f"wrong echo:\n{r}"
    assert res["src2"] == [T4, UDP_ECHO_PORT], f"recvfrom source on a connected socket:\n{r}"
    _ok_run(r, capture, "connected UDP")


def test_connected_os_read_write(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
s = sock()
s.connect(({T4!r}, {UDP_ECHO_PORT}))
fd = s.fileno()
s.settimeout(None)  # os.read blocks on the fd itself
msg = b"rw-" + os.urandom(8).hex().encode()
n = os.write(fd, msg)
data = os.read(fd, 2048)
parts = [b"vec-", os.urandom(4).hex().encode(), b"-tail"]
nv = os.writev(fd, parts)
a, b = bytearray(6), bytearray(100)
nr = os.readv(fd, [a, b])
got = bytes(a) + bytes(b)[:max(0, nr - 6)]
print(json.dumps({{"write": n, "len": len(msg), "echo": data == msg,
                  "writev": nv, "vlen": sum(map(len, parts)), "readv": nr,
                  "vecho": got == b"".join(parts)}}))
"""
    r = run_py(DANTE, code)
    res = _json(r, "os.write/os.read")
    assert res["write"] == res["len"] and res["echo"], f"write/read through the association:\n{r}"
    assert res["writev"] == res["vlen"] and res["readv"] == res["vlen"] and res["vecho"], \
        f"writev/readv through the association:\n{r}"
    _ok_run(r, capture, "os.write/os.read")


@pytest.mark.parametrize("proxy", [DANTE, DANTE_V6], ids=["proxy-v4", "proxy-v6"])
def test_ipv6(topo, udp_env, capture, proxify_bin, proxy):
    code = PRELUDE + f"""
s = sock(socket.AF_INET6)
msg = b"v6-" + os.urandom(8).hex().encode()
s.sendto(msg, ({T6!r}, {UDP_ECHO_PORT}))
data, src = s.recvfrom(2048)
c = sock(socket.AF_INET6)
c.connect(({T6!r}, {UDP_ECHO_PORT}))
c.send(msg)
cdata = c.recv(2048)
print(json.dumps({{"echo": data == msg, "src": list(src[:2]), "peer": list(c.getpeername()[:2]),
                  "cecho": cdata == msg}}))
"""
    r = run_py(proxy, code)
    res = _json(r, f"IPv6 via {proxy}")
    assert res["echo"] and res["src"] == [T6, UDP_ECHO_PORT], f"IPv6 sendto/recvfrom:\n{r}"
    assert res["cecho"] and res["peer"] == [T6, UDP_ECHO_PORT], f"IPv6 connected:\n{r}"
    _ok_run(r, capture, f"IPv6 via {proxy}")


@pytest.mark.parametrize("case", ["v4-socket-v6-proxy", "v6only-socket-v4-proxy"])
def test_socket_of_the_other_family_is_replaced(topo, udp_env, capture, proxify_bin, case):
    """Issue 17 item 1, UDP: a socket whose family cannot reach the proxy is replaced by one of
    the proxy's family under the same fd number; the program keeps seeing its own family."""
    v4 = case.startswith("v4")
    proxy, target = (DANTE_V6, T4) if v4 else (DANTE, T6)
    code = PRELUDE + f"""
fam = socket.AF_INET if {v4} else socket.AF_INET6
s = sock(fam)
if fam == socket.AF_INET6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
fd = s.fileno()
msg = b"swap-" + os.urandom(8).hex().encode()
s.sendto(msg, ({target!r}, {UDP_ECHO_PORT}))
data, src = s.recvfrom(2048)
c = sock(fam)
c.connect(({target!r}, {UDP_ECHO_PORT}))
c.send(msg)
cdata = c.recv(2048)
print(json.dumps({{"echo": data == msg, "src": list(src[:2]), "fileno": s.fileno() == fd,
                  "domain": s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
                  "name_len": len(s.getsockname()), "broadcast": s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST),
                  "cecho": cdata == msg, "peer": list(c.getpeername()[:2]),
                  "cdomain": c.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)}}))
"""
    r = run_py(proxy, code)
    what = f"UDP {case} via {proxy}"
    res = _json(r, what)
    want = 2 if v4 else 10
    assert res["echo"] and res["src"] == [target, UDP_ECHO_PORT] and res["fileno"], f"{what}: sendto/recvfrom:\n{r}"
    assert res["domain"] == want and res["cdomain"] == want, f"{what}: SO_DOMAIN must stay the program's:\n{r}"
    assert res["name_len"] == (2 if v4 else 4), f"{what}: getsockname in another family:\n{r}"
    assert res["broadcast"] == 1, f"{what}: SO_BROADCAST was not carried over:\n{r}"
    assert res["cecho"] and res["peer"] == [target, UDP_ECHO_PORT], f"{what}: connected socket:\n{r}"
    _ok_run(r, capture, what)


def test_by_name_sendto_reports_placeholder(topo, udp_env, capture, proxify_bin):
    """sendto(("target.example", 7)) under remote DNS: the name goes to the proxy in the UDP
    header, and the reply's source is the placeholder address the program used."""
    code = PRELUDE + f"""
ph = socket.getaddrinfo({netns.TARGET_NAME!r}, {UDP_ECHO_PORT}, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
s = sock()
msg = b"name-" + os.urandom(8).hex().encode()
s.sendto(msg, ({netns.TARGET_NAME!r}, {UDP_ECHO_PORT}))
s.settimeout(3)
try:
    data, src = s.recvfrom(2048)
    res = {{"echo": data == msg, "src": list(src)}}
except OSError as e:
    res = {{"error": ename(e)}}
res["placeholder"] = list(ph)
print(json.dumps(res))
"""
    r = run_py(DANTE, code)
    res = _json(r, "sendto by name")
    ph = res["placeholder"]
    assert not ph[0].startswith(("203.0.113.", "2001:db8:")), f"the name was resolved locally:\n{r}"
    assert res.get("echo") and res.get("src") == ph, \
        f"the reply to a datagram sent by name must come from the placeholder {ph}:\n{r}"
    _ok_run(r, capture, "sendto by name")
    assert not capture.sent_to(netns.DEAD_DNS), f"a DNS query left the client:\n{capture.summary()}"


def test_by_name_connected(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
ph = socket.getaddrinfo({netns.TARGET_NAME!r}, {UDP_ECHO_PORT}, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
s = sock()
s.connect(({netns.TARGET_NAME!r}, {UDP_ECHO_PORT}))
msg = b"cname-" + os.urandom(8).hex().encode()
s.send(msg)
data, src = s.recvfrom(2048)
print(json.dumps({{"echo": data == msg, "src": list(src), "peer": list(s.getpeername()),
                  "placeholder": list(ph)}}))
"""
    r = run_py(DANTE, code)
    res = _json(r, "connected by name")
    assert res["echo"], f"no echo through the association by name:\n{r}"
    assert res["peer"] == res["placeholder"] == res["src"], \
        f"getpeername/recvfrom must report the placeholder:\n{r}"
    _ok_run(r, capture, "connected by name")


SIZES_SCRIPT = PRELUDE + """
# Datagrams from 1 byte to the largest that fits the link MTU after the IP/UDP headers and
# the RFC 1928 header, with fragmentation forbidden (so one byte more must fail EMSGSIZE).
fam = socket.AF_INET6 if ":" in TARGET else socket.AF_INET
mtu = int(open("/sys/class/net/eth0/mtu").read())
ip_udp = (48 if RELAY_V6 else 28)
socks_hdr = 4 + (16 if fam == socket.AF_INET6 else 4) + 2
largest = mtu - ip_udp - socks_hdr
s = sock(fam)
if RELAY_V6:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
else:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)    # IP_MTU_DISCOVER = IP_PMTUDISC_DO
bad = []
sizes = sorted({1, 2, 3, 10, 100, 512, 1000, 1024, 1200, 1400, largest - 1, largest})
for n in sizes:
    msg = os.urandom(n)
    s.sendto(msg, (TARGET, 7))
    data, src = s.recvfrom(65535)
    if data != msg or src[0] != TARGET:
        bad.append([n, len(data), src[0]])
try:
    s.sendto(os.urandom(largest + 1), (TARGET, 7))
    over = "sent"
except OSError as e:
    over = ename(e)
print(json.dumps({"mtu": mtu, "largest": largest, "sizes": sizes, "bad": bad, "over": over}))
"""


@pytest.mark.parametrize("target,proxy,relay_v6", [(T4, DANTE, False), (T6, DANTE_V6, True)],
                         ids=["ipv4", "ipv6-relay-v6"])
def test_sizes_up_to_mtu(topo, udp_env, capture, proxify_bin, target, proxy, relay_v6):
    code = f"TARGET = {target!r}\nRELAY_V6 = {relay_v6}\n" + SIZES_SCRIPT
    r = run_py(proxy, code)
    res = _json(r, "datagram sizes")
    # veth MTU 1500: IPv4 1500-20-8-10 = 1462; IPv6 relay + IPv6 target 1500-40-8-22 = 1430.
    assert res["mtu"] == 1500 and res["largest"] == (1430 if relay_v6 else 1462), f"MTU arithmetic:\n{r}"
    assert res["bad"] == [], f"datagrams not echoed intact (size, got, source):\n{r}"
    assert res["over"] == "EMSGSIZE", \
        f"{res['largest'] + 1} bytes should not fit the MTU with DF set (the header is counted):\n{r}"
    _ok_run(r, capture, "datagram sizes")


def test_ten_thousand_datagrams(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
N, WINDOW = 10000, 64
s = sock()
s.settimeout(3)
dst = ({T4!r}, {UDP_ECHO_PORT})
seen = bytearray(N)
sent = got = dup = wrong = 0
t0 = time.monotonic()
while got < N and time.monotonic() - t0 < 60:
    while sent < N and sent - got < WINDOW:
        s.sendto(struct.pack("!I", sent) + b"x" * 60, dst)
        sent += 1
    try:
        data, src = s.recvfrom(2048)
    except socket.timeout:
        break
    i = struct.unpack("!I", data[:4])[0]
    if src != dst or len(data) != 64 or i >= N:
        wrong += 1
    elif seen[i]:
        dup += 1
    else:
        seen[i] = 1
        got += 1
el = time.monotonic() - t0
print(json.dumps({{"sent": sent, "got": got, "dup": dup, "wrong": wrong, "seconds": el,
                  "per_second": int(got / el) if el else 0}}))
"""
    r = run_py(DANTE, code, timeout=90)
    res = _json(r, "10,000 datagrams")
    assert res["sent"] == 10000 and res["got"] == 10000, f"datagrams lost:\n{r}"
    assert res["dup"] == 0 and res["wrong"] == 0, f"duplicated or wrong datagrams:\n{r}"
    assert res["seconds"] < 60, f"too slow:\n{r}"
    _ok_run(r, capture, "10,000 datagrams")


def test_msg_peek_trunc_dontwait(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
s = sock()
dst = ({T4!r}, {UDP_ECHO_PORT})
res = {{}}
def empty():
    s.setblocking(False)  # a timeout socket would wait before recv: ask the kernel directly
    try:
        s.recv(2048, socket.MSG_DONTWAIT)
        return False
    except BlockingIOError:
        return True
    finally:
        s.settimeout(5)
res["dontwait_empty"] = empty()
msg = os.urandom(100)
s.sendto(msg, dst)
d1, a1 = s.recvfrom(2048, socket.MSG_PEEK)
d2, a2 = s.recvfrom(2048, socket.MSG_PEEK)
d3, a3 = s.recvfrom(2048)
res["peek"] = [d1 == msg, d2 == msg, d3 == msg, list(a1), list(a3), empty()]
# MSG_TRUNC: the real length of a datagram longer than the buffer; the rest is discarded
s.sendto(msg, dst)
buf = bytearray(10)
time.sleep(0.2)
n = s.recv_into(buf, 10, socket.MSG_TRUNC)
res["trunc"] = [n, bytes(buf) == msg[:10], empty()]
# MSG_PEEK|MSG_TRUNC, then the datagram is still there in full
s.sendto(msg, dst)
time.sleep(0.2)
buf = bytearray(10)
n = s.recv_into(buf, 10, socket.MSG_PEEK | socket.MSG_TRUNC)
d, a = s.recvfrom(2048)
res["peek_trunc"] = [n, bytes(buf) == msg[:10], d == msg, empty()]
# recvmsg with a small buffer: MSG_TRUNC in msg_flags, the length is what was copied
s.sendto(msg, dst)
data, anc, flags, addr = s.recvmsg(10)
res["recvmsg"] = [len(data), data == msg[:10], bool(flags & socket.MSG_TRUNC), list(addr), empty()]
# a buffer that fits: no MSG_TRUNC
s.sendto(msg, dst)
data, anc, flags, addr = s.recvmsg(2048)
res["recvmsg_fit"] = [len(data), bool(flags & socket.MSG_TRUNC)]
print(json.dumps(res))
"""
    r = run_py(DANTE, code)
    res = _json(r, "MSG_PEEK/MSG_TRUNC")
    t = [T4, UDP_ECHO_PORT]
    assert res["dontwait_empty"], f"MSG_DONTWAIT on an empty socket must fail EAGAIN:\n{r}"
    assert res["peek"] == [True, True, True, t, t, True], f"MSG_PEEK:\n{r}"
    assert res["trunc"] == [100, True, True], f"MSG_TRUNC must return the payload length (100):\n{r}"
    assert res["peek_trunc"] == [100, True, True, True], f"MSG_PEEK|MSG_TRUNC:\n{r}"
    assert res["recvmsg"] == [10, True, True, t, True], f"recvmsg truncation flags:\n{r}"
    assert res["recvmsg_fit"] == [100, False], f"recvmsg of a whole datagram:\n{r}"
    _ok_run(r, capture, "MSG_PEEK/MSG_TRUNC")


@pytest.mark.parametrize("connected", [False, True], ids=["sendto", "connected"])
def test_sendmmsg_recvmmsg(topo, udp_env, capture, proxify_bin, connected):
    token = os.urandom(6).hex()
    r = run_proxified(DANTE, [str(udp_env / "mmsg"), T4, str(UDP_ECHO_PORT), str(int(connected)), token])
    assert not r.signalled and r.rc == 0, f"sendmmsg/recvmmsg through the association failed:\n{r}"
    assert "sendmmsg=8" in r.stdout and "received=8 bad=0" in r.stdout, f"unexpected output:\n{r}"
    _ok_run(r, capture, "sendmmsg/recvmmsg")


def test_dig_through_proxy(topo, udp_env, capture, proxify_bin):
    r = run_proxified(DANTE, ["dig", "+short", "+tries=1", "+time=3", f"@{T4}", DNS_NAME])
    assert r.rc == 0 and r.stdout.strip() == DNS_ANSWER, f"dig through the proxy did not answer:\n{r}"
    assert not capture.sent_to(T4, proto=17, dport=53), f"the DNS query went direct:\n{capture.summary()}"
    _ok_run(r, capture, "dig")


# ---- refusals and a hostile relay ---------------------------------------------------------

def test_socks4_refuses_udp(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
res = {{}}
s = sock()
try:
    s.sendto(b"must not leave", ({T4!r}, {UDP_ECHO_PORT}))
    res["sendto"] = "sent"
except OSError as e:
    res["sendto"] = ename(e)
c = sock()
try:
    c.connect(({T4!r}, {UDP_ECHO_PORT}))
    c.send(b"must not leave")
    res["connect"] = "sent"
except OSError as e:
    res["connect"] = ename(e)
print(json.dumps(res))
"""
    r = run_py(f"socks4://{P4}:{netns.DANTE_PORT}", code)
    res = _json(r, "UDP via SOCKS4")
    assert res["sendto"] != "sent" and res["connect"] != "sent", f"UDP via SOCKS4 must fail:\n{r}"
    assert r.proxify_lines(), f"no 'proxify:' line explaining the refusal:\n{r}"
    _no_udp_to_target(capture)
    assert not _udp_went_via_proxy(capture), f"a datagram went out:\n{capture.summary()}"
    assert_no_leak(capture)


@pytest.mark.parametrize("peek", [False, True], ids=["recvfrom", "peek-first"])
def test_relay_bad_input_dropped(topo, udp_env, capture, proxify_bin, peek):
    code = PRELUDE + f"""
s = sock()
dst = ({T4!r}, {UDP_ECHO_PORT})
msg = b"hello-" + os.urandom(6).hex().encode()
s.sendto(msg, dst)
res = {{}}
if {peek}:
    pd, pa = s.recvfrom(2048, socket.MSG_PEEK)
    res["peeked"] = [pd == b"GOOD:" + msg, list(pa)]
data, src = s.recvfrom(2048)
res["first"] = [data == b"GOOD:" + msg, list(src), data[:40].decode("latin-1")]
time.sleep(0.3)
s.setblocking(False)
try:
    extra = s.recv(2048)
    res["extra"] = extra[:40].decode("latin-1")
except BlockingIOError:
    res["extra"] = None
s.settimeout(5)
s.sendto(b"again", dst)
data, src = s.recvfrom(2048)
res["again"] = [data == b"ECHO:again", list(src)]
print(json.dumps(res))
"""
    r = run_py(f"socks5h://{P4}:{FAKE_BAD_PORT}", code)
    res = _json(r, "bad datagrams from the relay")
    t = [T4, UDP_ECHO_PORT]
    if peek:
        assert res["peeked"] == [True, t], f"MSG_PEEK must skip the bad datagrams:\n{r}"
    assert res["first"][:2] == [True, t], \
        f"the first datagram delivered must be the good one (all bad ones dropped):\n{r}"
    assert res["extra"] is None, f"something else was delivered after the good datagram:\n{r}"
    assert res["again"] == [True, t], f"the association stopped working after bad input:\n{r}"
    # The hostile datagrams did reach the client's socket (11 malformed, 2 foreign, good, echo).
    came = [p for p in capture.stop() if not p.outgoing and p.proto == 17
            and str(p.dst) == netns.CLIENT4 and str(p.src) in (P4, netns.PROXY_T4)]
    assert len(came) >= 15, f"the fake relay's datagrams did not arrive ({len(came)}):\n{capture.summary(80)}"
    _no_udp_to_target(capture)
    assert_no_leak(capture)


def test_relay_control_connection_closed(topo, udp_env, capture, proxify_bin):
    code = PRELUDE + f"""
s = sock()
dst = ({T4!r}, {UDP_ECHO_PORT})
s.sendto(b"one", dst)
data, src = s.recvfrom(2048)
res = {{"first": [data.decode("latin-1"), list(src)]}}
time.sleep(0.5)  # the proxy closes the control connection right after its echo
after = []
for i in range(3):
    try:
        s.sendto(b"after-close", dst)
        after.append("sent")
    except OSError as e:
        after.append(ename(e))
res["after"] = after
print(json.dumps(res))
"""
    r = run_py(f"socks5h://{P4}:{FAKE_CLOSE_PORT}", code)
    res = _json(r, "control connection closed")
    assert res["first"] == ["ECHO:one", [T4, UDP_ECHO_PORT]], f"the association did not work at first:\n{r}"
    assert all(a != "sent" for a in res["after"]), \
        f"sends after the proxy closed the control connection must fail:\n{r}"
    assert r.proxify_lines(), f"no 'proxify:' line explaining the failure:\n{r}"
    log = (topo.run_dir / "udp-fake-close.log").read_text(errors="replace")
    assert "AFTER CLOSE" not in log, f"a datagram reached the relay after the association ended:\n{log}"
    _no_udp_to_target(capture)
    assert_no_leak(capture)


def test_dnat_to_a_direct_address_sends_there_not_to_the_original(topo, udp_env, capture, proxify_bin):
    """`--dnat` rewriting a UDP destination to one that is routed direct (here a loopback echo
    in the client's own namespace): the datagram goes to the rewritten address, never to the
    original one (which would leave the client unproxied)."""
    code = PRELUDE + f"""
import threading
echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
echo.bind(("127.0.0.1", 29999))
def serve():
    d, a = echo.recvfrom(2048)
    echo.sendto(b"local:" + d, a)
threading.Thread(target=serve, daemon=True).start()
s = sock()
s.sendto(b"hi", ({T4!r}, 9999))
data, src = s.recvfrom(2048)
print(json.dumps({{"data": data.decode(), "src": list(src)}}))
"""
    r = run_proxified(DANTE, [sys.executable, "-c", code],
                      opts=["--dnat", f"{T4}:9999 127.0.0.1:29999"])
    res = _json(r, "UDP dnat to a direct address")
    assert res["data"] == "local:hi", f"the datagram did not reach the rewritten address:\n{r}"
    _no_udp_to_target(capture)
    assert_no_leak(capture, "UDP dnat to a direct address")
