"""Programs behave as without proxify: loopback and --direct go direct, output is silent
unless asked, getpeername reports the destination, non-blocking sockets and asyncio work,
UDP never goes out directly, and the CLI passes exit statuses through."""

import re

import pytest

import netns
from conftest import curl, py, run_proxified, urllib_get
from leakcheck import assert_no_leak

P4 = netns.PROXY4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
URL4 = f"http://{netns.TARGET4}/"
LOOPBACK_URL = f"http://127.0.0.1:{netns.LOOPBACK_HTTP_PORT}/"


def _proxy_traffic(capture):
    return capture.sent_to(P4, proto=6) + capture.sent_to(netns.PROXY6, proto=6)


@pytest.mark.parametrize("cmd", [curl(LOOPBACK_URL), urllib_get(f"http://localhost:{netns.LOOPBACK_HTTP_PORT}/")],
                         ids=["curl-127.0.0.1", "python-localhost"])
def test_loopback_goes_direct(topo, capture, proxify_bin, cmd):
    r = run_proxified(DANTE, cmd)
    assert r.rc == 0 and r.stdout.strip() == topo.loopback_token, f"loopback service not reached:\n{r}"
    assert not _proxy_traffic(capture), f"loopback traffic went to the proxy:\n{capture.summary()}"
    assert_no_leak(capture)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_direct_cidr_goes_direct(topo, capture, proxify_bin, how):
    opts, env = (["--direct", "203.0.113.0/24"], None) if how == "flag" else ([], {"PROXIFY_DIRECT": "203.0.113.0/24"})
    r = run_proxified(DANTE, curl(URL4, "--max-time", "3"), opts=opts, env=env)
    # The client has no route to the target except through the proxy host, which does not
    # forward: a direct attempt fails, and the capture shows it left the client directly.
    assert r.rc != 0 and not r.signalled, f"a direct connection should fail here:\n{r}"
    assert capture.sent_to(netns.TARGET4, proto=6, dport=80), \
        f"--direct: no direct SYN to {netns.TARGET4}:80 in the capture:\n{r}\n{capture.summary()}"
    assert not capture.sent_to(P4, proto=6, dport=netns.DANTE_PORT), \
        f"--direct: the connection went to the proxy anyway:\n{capture.summary()}"


def test_quiet_failure_prints_nothing(topo, capture, proxify_bin):
    r = run_proxified(f"socks5h://{P4}:{netns.DOWN_PORT}", curl(URL4), opts=["-q"])
    assert r.rc != 0, f"the proxy is down; the command should fail:\n{r}"
    assert "proxify" not in r.stderr, f"-q: proxify printed something:\n{r}"
    assert_no_leak(capture)


def test_successful_run_is_silent(topo, capture, proxify_bin):
    r = run_proxified(DANTE, curl(URL4))
    assert r.rc == 0 and r.stdout.strip() == topo.token, f"fetch failed:\n{r}"
    assert r.stderr == "", f"a successful run printed on stderr:\n{r}"
    assert_no_leak(capture)


def test_debug_log_shows_decisions(topo, capture, proxify_bin):
    r = run_proxified(DANTE, ["sh", "-c", f"curl -sS --max-time 5 {URL4}; curl -sS --max-time 5 {LOOPBACK_URL}"],
                      env={"PROXIFY_LOG": "debug"})
    assert r.rc == 0 and topo.token in r.stdout and topo.loopback_token in r.stdout, f"fetches failed:\n{r}"
    assert re.search(re.escape(netns.TARGET4), r.stderr), f"debug log does not mention the destination:\n{r}"
    assert re.search(r"prox", r.stderr, re.I), f"debug log does not say the connection was proxied:\n{r}"
    assert re.search(r"direct", r.stderr, re.I), f"debug log does not say loopback went direct:\n{r}"
    assert_no_leak(capture)


def test_debug_log_to_file(topo, capture, proxify_bin):
    logfile = topo.run_dir / "shim-debug.log.txt"
    logfile.unlink(missing_ok=True)
    r = run_proxified(DANTE, curl(URL4), env={"PROXIFY_LOG": "debug", "PROXIFY_LOG_FILE": str(logfile)})
    assert r.rc == 0 and r.stdout.strip() == topo.token, f"fetch failed:\n{r}"
    assert r.stderr == "", f"with PROXIFY_LOG_FILE the log must not go to stderr:\n{r}"
    assert logfile.exists() and netns.TARGET4 in logfile.read_text(errors="replace"), \
        f"PROXIFY_LOG_FILE={logfile} has no decision line for {netns.TARGET4}"
    assert_no_leak(capture)


GETPEERNAME_SCRIPT = """
import socket, struct, sys
fam, addr = socket.{fam}, {addr!r}
s = socket.socket(fam, socket.SOCK_STREAM)
# Bounds a blocking connect (a direct attempt would hang) without making the socket non-blocking.
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
s.connect(addr)
peer = s.getpeername()[:2]
assert peer == addr[:2], f"getpeername() = {{peer!r}}, expected {{addr[:2]!r}}"
s.settimeout(5)
s.sendall(b"hello through proxify")
data = b""
while len(data) < 21:
    chunk = s.recv(100)
    if not chunk:
        break
    data += chunk
assert data == b"hello through proxify", f"echo returned {{data!r}}"
print("ok", peer)
"""


@pytest.mark.parametrize("fam,addr", [("AF_INET", (netns.TARGET4, 7)), ("AF_INET6", (netns.TARGET6, 7, 0, 0))],
                         ids=["ipv4", "ipv6"])
def test_getpeername_reports_destination(topo, capture, proxify_bin, fam, addr):
    r = run_proxified(DANTE, py(GETPEERNAME_SCRIPT.format(fam=fam, addr=addr)))
    assert r.rc == 0 and r.stdout.startswith("ok"), f"getpeername/echo through the proxy failed:\n{r}"
    assert_no_leak(capture)


ASYNCIO_SCRIPT = f"""
import asyncio
async def main():
    r, w = await asyncio.wait_for(asyncio.open_connection({netns.TARGET_NAME!r}, 7), 5)
    w.write(b"ping-async")
    await w.drain()
    data = await asyncio.wait_for(r.readexactly(10), 5)
    assert data == b"ping-async", f"echo returned {{data!r}}"
    w.close()
    await w.wait_closed()
    print("ok")
asyncio.run(main())
"""


def test_asyncio_by_name(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(ASYNCIO_SCRIPT))
    assert r.rc == 0 and r.stdout.strip() == "ok", f"asyncio.open_connection by name failed:\n{r}"
    assert_no_leak(capture)


NONBLOCK_SCRIPT = f"""
import errno, fcntl, os, select, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
rc = s.connect_ex(({netns.TARGET4!r}, 7))
assert rc in (0, errno.EINPROGRESS), f"non-blocking connect returned {{errno.errorcode.get(rc, rc)}}"
if rc:
    _, w, _ = select.select([], [s], [], 5)
    assert w, "the non-blocking connect never became writable"
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert err == 0, f"SO_ERROR after connect: {{errno.errorcode.get(err, err)}}"
flags = fcntl.fcntl(s.fileno(), fcntl.F_GETFL)
assert flags & os.O_NONBLOCK, "O_NONBLOCK is no longer set after the proxied connect"
assert s.getpeername() == ({netns.TARGET4!r}, 7), f"getpeername() = {{s.getpeername()!r}}"
s.send(b"nonblock-echo")
data = b""
while len(data) < 13:
    r, _, _ = select.select([s], [], [], 5)
    assert r, "no echo within 5 s"
    chunk = s.recv(100)
    if not chunk:
        break
    data += chunk
assert data == b"nonblock-echo", f"echo returned {{data!r}}"
print("ok")
"""


def test_nonblocking_socket_keeps_flag(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(NONBLOCK_SCRIPT))
    assert r.rc == 0 and r.stdout.strip() == "ok", f"non-blocking connect through the proxy failed:\n{r}"
    assert_no_leak(capture)


UDP_SCRIPT = f"""
import socket
for how in ("sendto", "connect+send"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        if how == "sendto":
            s.sendto(b"udp must not leave directly", ({netns.TARGET4!r}, 7))
        else:
            s.connect(({netns.TARGET4!r}, 7))
            s.send(b"udp must not leave directly")
        print(how, "accepted")
    except OSError as e:
        print(how, "refused", e)
"""


def test_udp_never_leaves_directly(topo, capture, proxify_bin):
    """A UDP datagram to a proxied destination is either refused (OSError) or relayed through
    the proxy (SOCKS5 UDP ASSOCIATE); it never goes to the target directly."""
    r = run_proxified(DANTE, py(UDP_SCRIPT))
    assert r.rc == 0 and r.stdout.count("\n") == 2, f"the UDP script did not run to the end:\n{r}"
    assert not capture.sent_to(netns.TARGET4, proto=17), \
        f"UDP to the target left the client directly:\n{r}\n{capture.summary()}"
    if "accepted" in r.stdout:
        assert capture.sent_to(P4, proto=17), \
            f"sendto succeeded but no UDP went to the proxy host either:\n{r}\n{capture.summary()}"
    assert_no_leak(capture)


def test_exit_status_passes_through(topo, capture, proxify_bin):
    r = run_proxified(DANTE, ["sh", "-c", "exit 7"])
    assert r.rc == 7, f"proxify run should exit with the command's status (7):\n{r}"


def test_missing_command_gives_127(topo, capture, proxify_bin):
    r = run_proxified(DANTE, ["/nonexistent/proxify-test-command"])
    assert r.rc == 127, f"a command that can't be run should give 127:\n{r}"
    assert r.proxify_lines(), f"no proxify: line naming the problem:\n{r}"


def test_bad_proxy_url_exits_2(topo, capture, proxify_bin):
    r = run_proxified("bogus://198.51.100.1:1080", ["true"])
    assert r.rc == 2, f"an unknown scheme should exit 2:\n{r}"
    assert len(r.stderr.strip().splitlines()) == 1, f"expected one line naming the problem:\n{r}"
    assert "panicked" not in r.stderr, f"panic on bad input:\n{r}"
