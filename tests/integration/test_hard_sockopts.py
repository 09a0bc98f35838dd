"""Socket options survive a proxied connect (issue 5). csrc/hard_sockopt.c sets TCP_NODELAY,
SO_KEEPALIVE, SO_RCVBUF, IP_TOS, SO_BINDTODEVICE, SOCK_CLOEXEC (and SOCK_NONBLOCK) and binds to
the client's address before connect(), then reads everything back.

getsockname: proxify documents that getsockname() on a proxied connection reports the proxy
side (the BND.ADDR:BND.PORT of the proxy's reply). Dante binds its outgoing socket on its
external address (203.0.113.1) and logs it; the test compares the two. That the local bind()
really held is shown by getsockname before connect() and by the capture: the SYN to the proxy
leaves from 198.51.100.2:BIND_PORT.

BIND_PORT is chosen by the kernel (the program binds port 0) and read back from getsockname: a
fixed port inside the ephemeral range (ip_local_port_range) can be taken by any other
connection of the client namespace (issue 17: 40124 failed with EADDRINUSE once)."""

import re

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, build_c, expect_ok, kv
from leakcheck import assert_no_leak

DEVICE = "eth0"  # the client's veth towards the proxy host
DANTE_LOG = "dante-noauth.log"


@pytest.fixture(scope="module")
def sockopt_bin(topo):
    return build_c(topo, "hard_sockopt")


def _dante_external(topo, client_port):
    """Dante's log line for the connection from CLIENT4:client_port: the external address."""
    text = (topo.run_dir / DANTE_LOG).read_text(errors="replace")
    pat = re.compile(rf"{re.escape(netns.CLIENT4)}\.{client_port} {re.escape(netns.PROXY4)}\.{netns.DANTE_PORT}"
                     rf" -> (\S+)\.(\d+) {re.escape(netns.TARGET4)}\.{netns.ECHO_PORT}")
    found = pat.findall(text)
    return found[-1] if found else None


@pytest.mark.parametrize("mode", ["block", "nonblock"])
def test_socket_options_survive(topo, capture, proxify_bin, sockopt_bin, mode):
    r = run_proxified(DANTE, [sockopt_bin, mode, netns.TARGET4, netns.ECHO_PORT, netns.CLIENT4, 0, DEVICE])
    what = f"socket options ({mode})"
    expect_ok(r, what)
    v = kv(r.stdout)
    # The port the kernel chose for bind(CLIENT4, 0), as the program read it back.
    bound = v.get("before.getsockname", "")
    assert bound.startswith(f"{netns.CLIENT4}:"), f"{what}: bind() did not hold\n{r}"
    port = int(bound.rsplit(":", 1)[1])
    assert port != 0, f"{what}: getsockname after bind(port 0) reports port 0\n{r}"
    assert v.get("echo") == "ok", f"{what}: the proxied connection did not echo\n{r}"
    assert v["connect"] == ("0" if mode == "block" else "EINPROGRESS"), f"{what}: connect() result\n{r}"
    for when in ("after", "end"):
        assert v[f"{when}.nodelay"] == "1", f"{what}: TCP_NODELAY lost ({when})\n{r}"
        assert v[f"{when}.keepalive"] == "1", f"{what}: SO_KEEPALIVE lost ({when})\n{r}"
        assert int(v[f"{when}.rcvbuf"]) >= 65536 and v[f"{when}.rcvbuf"] == v["before.rcvbuf"], \
            f"{what}: SO_RCVBUF changed ({when})\n{r}"
        assert v[f"{when}.tos"] == "16", f"{what}: IP_TOS lost ({when})\n{r}"
        assert v[f"{when}.bindtodevice"] == DEVICE, f"{what}: SO_BINDTODEVICE lost ({when})\n{r}"
        assert v[f"{when}.cloexec"] == "1", f"{what}: FD_CLOEXEC lost ({when})\n{r}"
        assert v[f"{when}.nonblock"] == ("1" if mode == "nonblock" else "0"), \
            f"{what}: O_NONBLOCK not as the program set it ({when})\n{r}"
    assert v["getpeername"] == f"{netns.TARGET4}:{netns.ECHO_PORT}", f"{what}: getpeername\n{r}"
    # bind() held: before connect() the socket is on the client's address, and the capture
    # shows the connection to the proxy leaving from exactly that address and port.
    assert v["before.getsockname"] == f"{netns.CLIENT4}:{port}", f"{what}: bind() did not hold\n{r}"
    syns = [p for p in capture.sent_to(netns.PROXY4, proto=6, dport=netns.DANTE_PORT) if p.note == "S"]
    assert syns and all(str(p.src) == netns.CLIENT4 and p.sport == port for p in syns), \
        f"{what}: the SYN to the proxy did not leave from {netns.CLIENT4}:{port}:\n{capture.summary()}"
    # After connect(): the documented proxy side (BND), as Dante reports it in its log.
    ext = _dante_external(topo, port)
    assert ext, f"{what}: no Dante log line for the connection from {netns.CLIENT4}.{port}"
    assert v["after.getsockname"] == f"{ext[0]}:{ext[1]}", \
        f"{what}: getsockname after connect should report Dante's BND {ext[0]}:{ext[1]}\n{r}"
    assert ext[0] == netns.PROXY_T4, f"{what}: Dante's external address is {ext[0]}, expected {netns.PROXY_T4}"
    assert_no_leak(capture, what)
