"""Optimistic data (issue 15): `?optimistic=1` on a SOCKS5 proxy without authentication.

connect() returns once the TCP connect to the proxy is up and greeting + CONNECT request are
sent (one write); the program's first data goes right behind them; the proxy's two replies are
read before the program's first read sees a byte; a refused request is the first read's
ECONNRESET. Through Dante (which takes a pipelined handshake), each case with a packet capture:
nothing leaks, and the capture shows the program's data leave before the proxy's CONNECT reply
came back (without the option it can only leave after it). No timing is asserted.
"""

import ipaddress
import json
import struct
import sys
from pathlib import Path

import pytest

import netns
from conftest import curl, run_proxified
from hardcase import DANTE, expect_ok, no_crash, proxy_syns
from leakcheck import assert_no_leak

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "optimistic_client.py"
TFO = HERE / "tfo_client.py"
T4, ECHO = netns.TARGET4, netns.ECHO_PORT
OPT = DANTE + "?optimistic=1"
CLOSED = 9  # nothing listens on the target host's port 9: Dante's connect is refused
MSG = b"optimistic-echo\n"
GREETING = b"\x05\x01\x00"


def tcp_segments(path, port=netns.DANTE_PORT):
    """The client<->proxy TCP segments with data, in capture order: (client port, outgoing,
    payload)."""
    data = Path(path).read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    out, off = [], 24
    proxy = ipaddress.ip_address(netns.PROXY4)
    while off + 16 <= len(data):
        _ts, _us, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if linktype == 113:  # LINUX_SLL
            pkttype, ethertype, body = struct.unpack("!H", frame[0:2])[0], struct.unpack("!H", frame[14:16])[0], frame[16:]
        else:  # LINUX_SLL2
            ethertype, pkttype, body = struct.unpack("!H", frame[0:2])[0], frame[10], frame[20:]
        if ethertype != 0x0800 or len(body) < 20 or body[9] != 6:
            continue
        ihl = (body[0] & 15) * 4
        total = struct.unpack("!H", body[2:4])[0]
        src, dst = ipaddress.ip_address(body[12:16]), ipaddress.ip_address(body[16:20])
        tcp = body[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        outgoing = pkttype == 4
        if payload and ((outgoing and dst == proxy and dport == port) or
                        (not outgoing and src == proxy and sport == port)):
            out.append((sport if outgoing else dport, outgoing, payload))
    return out


def connections(capture, data=MSG, port=netns.DANTE_PORT):
    """Per connection to the proxy, in the capture: (did the program's `data` leave before the
    proxy's CONNECT reply — its 10 bytes after the 2 of the method selection — came in, the
    first segment sent, the segments)."""
    capture.stop()
    segs = tcp_segments(capture.path, port)
    out = []
    for port in dict.fromkeys(c for c, _, _ in segs):
        mine = [(o, p) for c, o, p in segs if c == port]
        sent, got, early = b"", 0, False
        for outgoing, payload in mine:
            if outgoing:
                sent += payload
                if data in sent:
                    early = got < 12
                    break
            else:
                got += len(payload)
        out.append((early, next((p for o, p in mine if o), b""), mine))
    return out


def one_segment_first(conns, what):
    """Greeting and CONNECT request went out first, in one segment, on every connection."""
    assert conns, f"{what}: no connection to the proxy in the capture"
    for _, first, segs in conns:
        assert first.startswith(GREETING + b"\x05\x01\x00"), \
            f"{what}: greeting and request not in one first segment: {first!r} {segs}"


# The proxy answers within microseconds here, so whether the program's data or the proxy's
# reply crosses the capture first is a race (the data usually wins). Without the option the
# data can only ever follow the reply (the control test), so one connection out of a few
# that shows it ahead proves the data does not wait for the reply.
ATTEMPTS = 5


def result(r, what):
    no_crash(r, what)
    lines = r.stdout.strip().splitlines()
    assert lines, f"{what}: the client printed nothing\n{r}"
    return json.loads(lines[-1])


def test_blocking_client_data_rides_behind_the_request(topo, capture, proxify_bin):
    what = f"blocking connect + send to {T4}:{ECHO} via {OPT}"
    for _ in range(ATTEMPTS):
        r = run_proxified(OPT, [sys.executable, str(CLIENT), "blocking", T4, ECHO], opts=["-vv"])
        res = result(r, what)
        assert r.rc == 0, f"{what}\n{r}"
        assert "error" not in res and res["echo"], f"{what}: no echo\n{res}\n{r}"
        assert res["peer"] == [T4, ECHO] and res["so_error"] == 0, f"{what}: {res}"
        assert "optimistic data" in r.stderr, f"{what}: the optimistic path did not run\n{r}"
    conns = connections(capture)
    assert len(conns) == ATTEMPTS, f"{what}: {conns}"
    one_segment_first(conns, what)
    assert_no_leak(capture, what)


@pytest.mark.parametrize("mode", ["blocking", "nonblock-epoll"])
def test_data_goes_before_the_reply(topo, capture, proxify_bin, mode):
    """A proxy that answers nothing until the program's first data byte has arrived (hostile
    `data-first`): only data that really rides behind the request, before any reply, gets the
    echo. Without the option the same connect waits for a method selection that never comes."""
    proxy = hostile("data-first")
    what = f"{mode}: connect + send via {proxy}"
    r = run_proxified(proxy, [sys.executable, str(CLIENT), mode, T4, ECHO])
    res = result(r, what)
    assert r.rc == 0 and "error" not in res and res["echo"], f"{what}: no echo\n{res}\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify printed something\n{r}"
    plain = proxy.split("?")[0]
    r = run_proxified(plain, [sys.executable, str(CLIENT), "refused", T4, ECHO])
    res = result(r, f"{mode}: without the option")
    assert not res.get("echo") and res.get("got", "") == "", \
        f"without ?optimistic=1 the data cannot go first: {res}\n{r}"
    assert_no_leak(capture, what)


def test_without_the_option_data_waits_for_the_reply(topo, capture, proxify_bin):
    """The control case: the same client, no option — the data leaves after the reply."""
    r = run_proxified(DANTE, [sys.executable, str(CLIENT), "blocking", T4, ECHO], opts=["-vv"])
    what = f"blocking connect + send to {T4}:{ECHO} via {DANTE}"
    res = result(r, what)
    assert r.rc == 0 and res.get("echo"), f"{what}\n{res}\n{r}"
    assert "optimistic data" not in r.stderr, f"{what}\n{r}"
    conns = connections(capture)
    assert conns and not any(early for early, _, _ in conns), \
        f"{what}: the data left before the reply without ?optimistic=1: {conns}"
    assert_no_leak(capture, what)


def test_curl_through_optimistic(topo, capture, proxify_bin):
    r = run_proxified(OPT, curl(f"http://{T4}/"))
    what = f"curl http://{T4}/ via {OPT}"
    expect_ok(r, what)
    assert r.stdout.strip() == topo.token, f"{what}: not the target's page\n{r}"
    one_segment_first(connections(capture, b"GET / HTTP/1.1"), what)
    assert_no_leak(capture, what)


def test_nonblocking_epoll_client(topo, capture, proxify_bin):
    r = run_proxified(OPT, [sys.executable, str(CLIENT), "nonblock-epoll", T4, ECHO], opts=["-vv"])
    what = f"non-blocking connect + epoll to {T4}:{ECHO} via {OPT}"
    res = result(r, what)
    assert r.rc == 0 and "error" not in res, f"{what}\n{res}\n{r}"
    assert res["connect"] in ("EINPROGRESS", 0) and res["writable"], f"{what}: {res}"
    assert res["so_error"] == 0 and res["peer"] == [T4, ECHO], f"{what}: {res}"
    assert res["echo"], f"{what}: no echo\n{res}\n{r}"
    assert "optimistic data" in r.stderr, f"{what}: the optimistic path did not run\n{r}"
    one_segment_first(connections(capture), what)
    assert_no_leak(capture, what)


def hostile(mode):
    return f"socks5h://{netns.PROXY4}:{netns.HOSTILE_PORTS[mode]}?optimistic=1"


REJECT5 = f"socks5h://{netns.PROXY4}:{netns.REJECT_PORT_BASE + 5}?optimistic=1"
FAILING = {
    # Dante cannot reach the destination (a closed port on the target host): REP 5.
    "closed-port": (OPT, CLOSED),
    # A proxy that refuses with REP 5 and closes.
    "reject": (REJECT5, ECHO),
    # A proxy that never answers: the handshake timeout (2 s here).
    "silent": (hostile("silent"), ECHO),
    # A proxy that closes in the middle of the CONNECT reply: EOF.
    "short-close": (hostile("short-close"), ECHO),
}


# A non-blocking program waiting in epoll for a proxy that never answers is not woken at the
# handshake timeout (it waits for its own): the silent case is blocking only.
CASES = [(m, c) for m in ("refused", "refused-nonblock") for c in FAILING
         if (m, c) != ("refused-nonblock", "silent")]


@pytest.mark.parametrize("mode,case", CASES)
def test_refused_request_is_econnreset_on_the_first_read(topo, capture, proxify_bin, mode, case):
    proxy, port = FAILING[case]
    proxy_port = int(proxy.rsplit(":", 1)[1].split("?")[0])
    client_mode = "refused" if mode == "refused" else "nonblock-epoll"
    r = run_proxified(proxy, [sys.executable, str(CLIENT), client_mode, T4, port])
    what = f"{mode}: connect to {T4}:{port} via {proxy} ({case})"
    res = result(r, what)
    assert res.get("connect") in (0, "EINPROGRESS"), f"{what}: connect() must not fail\n{res}\n{r}"
    assert res.get("error") == "ECONNRESET", f"{what}: the first read (or a send after the refusal came) must fail with ECONNRESET\n{res}\n{r}"
    assert res.get("got", "") == "", f"{what}: bytes came through\n{res}"
    lines = r.proxify_lines()
    assert len(lines) == 1 and "cannot connect to" in lines[0], f"{what}: one warning line\n{r}"
    # connect() succeeded for a request the proxy refuses: it returned before the reply. The
    # program's data then left (to the proxy only) — unless the refusal was back before the
    # send, which then failed with ECONNRESET instead of the read.
    conns = connections(capture, port=proxy_port)
    one_segment_first(conns, what)
    if "sent" in res:
        assert any(MSG in b"".join(p for o, p in segs if o) for _, _, segs in conns), \
            f"{what}: the program's data did not go behind the request: {conns}"
    assert_no_leak(capture, what)


@pytest.mark.parametrize("mode", ["blocking", "nonblock-epoll"])
def test_replies_byte_by_byte(topo, capture, proxify_bin, mode):
    """A proxy that sends every reply byte in its own segment, ~5 ms apart: a non-blocking read
    before the replies are whole says EAGAIN (the program waits again), a blocking one waits;
    either way the echo comes whole, and nothing of the replies."""
    proxy = hostile("split")
    r = run_proxified(proxy, [sys.executable, str(CLIENT), mode, T4, ECHO])
    what = f"{mode} to {T4}:{ECHO} via {proxy}"
    res = result(r, what)
    assert r.rc == 0 and "error" not in res and res["echo"], f"{what}: no echo\n{res}\n{r}"
    assert res["peer"] == [T4, ECHO] and res["so_error"] == 0, f"{what}: {res}"
    assert not r.proxify_lines(), f"{what}\n{r}"
    port = netns.HOSTILE_PORTS["split"]
    one_segment_first(connections(capture, port=port), what)
    assert_no_leak(capture, what)


@pytest.mark.parametrize("mode", ["sendto", "sendto-nonblock", "sendmsg"])
def test_fast_open_first_write(topo, capture, proxify_bin, mode):
    r = run_proxified(OPT, [sys.executable, str(TFO), mode, T4, ECHO])
    what = f"TCP Fast Open ({mode}) to {T4}:{ECHO} via {OPT}"
    expect_ok(r, what)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in res and res["echo"] is True and res["peer"] == [T4, ECHO], f"{what}: {res}\n{r}"
    if mode != "sendto-nonblock":
        assert res["sent"] == len(b"fast-open-echo\n"), f"{what}: {res}"
    assert proxy_syns(capture), f"{what}: nothing went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_ignored_with_credentials(topo, capture, proxify_bin):
    """A SOCKS5 proxy with username/password: the option does not apply (one -v line), the
    connect is the usual one and works."""
    proxy = (f"socks5h://{netns.TEST_USER}:{topo.password}@{netns.PROXY4}:{netns.DANTE_AUTH_PORT}"
             "?optimistic=1")
    r = run_proxified(proxy, [sys.executable, str(CLIENT), "blocking", T4, ECHO], opts=["-vv"])
    what = f"blocking connect + send to {T4}:{ECHO} via Dante with auth and ?optimistic=1"
    res = result(r, what)
    assert r.rc == 0 and "error" not in res and res["echo"], f"{what}\n{res}\n{r}"
    ignored = [ln for ln in r.stderr.splitlines() if "?optimistic=1 ignored" in ln]
    assert len(ignored) == 1, f"{what}: one line saying the option is ignored\n{r}"
    assert "greeting and request sent (optimistic data)" not in r.stderr, f"{what}\n{r}"
    assert topo.password not in r.stderr, f"{what}: the password was printed\n{r}"
    conns = connections(capture, port=netns.DANTE_AUTH_PORT)
    assert conns and not any(early for early, _, _ in conns), f"{what}: {conns}"
    assert_no_leak(capture, what)
