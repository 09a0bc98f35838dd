"""Fail closed: a wrong password, a proxy that is down or never answers, a hostile proxy and
an internal failure (forced panic) all make the program's call fail within the timeout, with
one clear "proxify:" line, no crash, and nothing leaving the client host but to the proxy."""

import re

import pytest

import netns
from conftest import PROXIFY_TIMEOUT_S, curl, py, run_proxified, urllib_get
from leakcheck import assert_no_leak

P4 = netns.PROXY4
URL4 = f"http://{netns.TARGET4}/"
MARGIN_S = 2.0

# Connects a plain blocking socket to the target's HTTP port and reports how that ended:
# exit 0 "connected", exit 3 "oserror <errno name> <message>", anything else is a bug.
CONNECT_SCRIPT = f"""
import errno, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# Bounds a blocking connect (a direct attempt would hang) without making the socket non-blocking.
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
try:
    s.connect(({netns.TARGET4!r}, 80))
except OSError as e:
    print("oserror", errno.errorcode.get(e.errno, e.errno), e)
    sys.exit(3)
print("connected")
"""


def _clean_failure(topo, r, what):
    assert not r.signalled, f"{what}: killed by signal {-r.rc} (a crash)\n{r}"
    assert r.rc != 0, f"{what}: the command should have failed\n{r}"
    assert topo.token not in r.stdout, f"{what}: the page came through anyway\n{r}"
    for bad in ("panicked at", "RUST_BACKTRACE", "stack backtrace", "Segmentation fault"):
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"
    assert r.proxify_lines(), f"{what}: no line starting 'proxify:' on stderr\n{r}"


@pytest.mark.parametrize("port", [netns.DANTE_AUTH_PORT, netns.MICROSOCKS_PORT], ids=["dante", "microsocks"])
def test_wrong_password(topo, capture, proxify_bin, port):
    proxy = f"socks5h://{netns.TEST_USER}:wrong-{topo.password}@{P4}:{port}"
    r = run_proxified(proxy, curl(URL4))
    _clean_failure(topo, r, f"wrong password on port {port}")
    assert any(re.search(r"auth|password|credential", ln, re.I) for ln in r.proxify_lines()), \
        f"the proxify: line should say the authentication failed\n{r}"
    assert r.elapsed < 4, f"a wrong password took {r.elapsed:.1f}s to fail\n{r}"
    assert_no_leak(capture)


@pytest.mark.parametrize("port,what", [
    (netns.DOWN_PORT, "proxy down (nothing listens)"),
    (netns.SILENT_PORT, "proxy never answers"),
    (netns.HOSTILE_PORTS["silent"], "hostile proxy 'silent'"),
], ids=["down", "never-answers", "hostile-silent"])
def test_unusable_proxy_fails_within_timeout(topo, capture, proxify_bin, port, what):
    r = run_proxified(f"socks5h://{P4}:{port}", curl(URL4))
    _clean_failure(topo, r, what)
    limit = PROXIFY_TIMEOUT_S + MARGIN_S
    assert r.elapsed < limit, f"{what}: took {r.elapsed:.1f}s, limit {limit}s\n{r}"
    assert_no_leak(capture)


def test_never_answering_proxy_python(topo, capture, proxify_bin):
    r = run_proxified(f"socks5h://{P4}:{netns.SILENT_PORT}", py(CONNECT_SCRIPT))
    assert r.rc == 3, f"python should get an OSError from connect():\n{r}"
    assert r.elapsed < PROXIFY_TIMEOUT_S + MARGIN_S, f"took {r.elapsed:.1f}s\n{r}"
    assert_no_leak(capture)


HOSTILE_FAILING = ["garbage", "wrong-version", "short-close", "oversize-domain"]


@pytest.mark.parametrize("mode", HOSTILE_FAILING)
def test_hostile_proxy_curl(topo, capture, proxify_bin, mode):
    r = run_proxified(f"socks5h://{P4}:{netns.HOSTILE_PORTS[mode]}", curl(URL4))
    _clean_failure(topo, r, f"hostile proxy '{mode}'")
    assert r.rc < 128, f"curl's exit code {r.rc} is not a normal failure code\n{r}"
    assert r.elapsed < PROXIFY_TIMEOUT_S + MARGIN_S, f"took {r.elapsed:.1f}s\n{r}"
    assert_no_leak(capture)


@pytest.mark.parametrize("mode", HOSTILE_FAILING)
def test_hostile_proxy_python(topo, capture, proxify_bin, mode):
    r = run_proxified(f"socks5h://{P4}:{netns.HOSTILE_PORTS[mode]}", py(CONNECT_SCRIPT))
    assert not r.signalled, f"python was killed by signal {-r.rc}\n{r}"
    assert r.rc == 3 and r.stdout.startswith("oserror"), f"python should get an OSError:\n{r}"
    assert_no_leak(capture)


# SOCKS5 reply code -> errno the program must see (None: any error will do).
REPLY_ERRNO = {1: None, 2: "EACCES", 3: "ENETUNREACH", 4: "EHOSTUNREACH", 5: "ECONNREFUSED",
               6: "ETIMEDOUT", 7: None, 8: None}


@pytest.mark.parametrize("code", sorted(REPLY_ERRNO))
def test_reply_code_maps_to_errno(topo, capture, proxify_bin, code):
    r = run_proxified(f"socks5h://{P4}:{netns.REJECT_PORT_BASE + code}", py(CONNECT_SCRIPT))
    assert not r.signalled, f"python was killed by signal {-r.rc}\n{r}"
    assert r.rc == 3, f"reply code {code} should make connect() fail:\n{r}"
    want = REPLY_ERRNO[code]
    if want:
        assert r.stdout.split()[1] == want, f"reply code {code} should give {want}:\n{r}"
    assert_no_leak(capture)


def test_reject_curl(topo, capture, proxify_bin):
    r = run_proxified(f"socks5h://{P4}:{netns.REJECT_PORT_BASE + 5}", curl(URL4))
    _clean_failure(topo, r, "proxy refuses the connection (reply 5)")
    assert_no_leak(capture)


@pytest.mark.parametrize("client", ["curl", "python"])
def test_split_replies_work(topo, capture, proxify_bin, client):
    url = f"http://{netns.TARGET_NAME}/"
    cmd = curl(url) if client == "curl" else urllib_get(url)
    r = run_proxified(f"socks5h://{P4}:{netns.HOSTILE_PORTS['split']}", cmd)
    assert r.rc == 0 and r.stdout.strip() == topo.token, \
        f"replies split into 1-byte segments must still work:\n{r}"
    assert_no_leak(capture)


@pytest.mark.parametrize("fault,url", [("panic-connect", URL4), ("panic-resolve", f"http://{netns.TARGET_NAME}/")])
def test_forced_internal_failure_fails_closed(topo, capture, proxify_bin, fault, url):
    r = run_proxified(f"socks5h://{P4}:{netns.DANTE_PORT}", curl(url),
                      env={"PROXIFY_TEST_FAULT": fault, "RUST_BACKTRACE": "1"})
    _clean_failure(topo, r, f"PROXIFY_TEST_FAULT={fault}")
    lines = r.proxify_lines()
    assert len(lines) == 1, f"{fault}: expected exactly one proxify: line, got {len(lines)}\n{r}"
    assert re.search(r"internal", lines[0], re.I), f"{fault}: the line should say 'internal error'\n{r}"
    assert "backtrace" not in r.stderr.lower(), f"{fault}: backtrace text on stderr\n{r}"
    assert_no_leak(capture)


UDP_SEND = f"""
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"ping", ({netns.TARGET4!r}, 7))
    print("sent")
except OSError as e:
    print("oserror", errno.errorcode.get(e.errno, e.errno))
"""


def test_udp_through_a_proxy_without_udp_says_what_to_do(topo, capture, proxify_bin):
    """microsocks answers UDP ASSOCIATE with "command not supported": the datagram fails
    (EOPNOTSUPP, never sent direct) and the one line says UDP needs a proxy that supports it
    and that `proxify check` shows which do."""
    proxy = f"socks5h://{netns.TEST_USER}:{topo.password}@{P4}:{netns.MICROSOCKS_PORT}"
    r = run_proxified(proxy, py(UDP_SEND))
    assert not r.signalled and r.stdout.split()[:1] == ["oserror"] and r.stdout.split()[1:] in (["EOPNOTSUPP"], ["ENOTSUP"]), f"sendto should fail\n{r}"
    lines = r.proxify_lines()
    assert len(lines) == 1 and "supports UDP ASSOCIATE" in lines[0] and "proxify check" in lines[0], \
        f"one line naming the fix expected\n{r}"
    assert_no_leak(capture)


# Issue 14 item 12: an fd proxify cannot track (beyond its table, or a chunk that cannot be
# allocated) must fail closed, never go out untracked. The `fdtable-full` test fault makes every
# new entry fail the way such an fd does.
FDTABLE_FULL = {
    "tcp-blocking": """
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect((T4, 7)); print("result=connected")
except OSError as e:
    print("result=" + (errno.errorcode.get(e.errno) or str(e)))
""",
    "tcp-nonblocking": """
import select, socket
s = socket.socket()
s.setblocking(False)
rc = s.connect_ex((T4, 7))
if rc == errno.EINPROGRESS:
    select.select([], [s], [], 5)
    rc = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
print("result=" + (errno.errorcode.get(rc) if rc else "connected"))
""",
    "udp": """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"x", (T4, 7)); print("result=sent")
except OSError as e:
    print("result=" + (errno.errorcode.get(e.errno) or str(e)))
""",
}


@pytest.mark.parametrize("case", FDTABLE_FULL)
def test_untrackable_socket_fails_closed(topo, capture, proxify_bin, case):
    code = f"import errno\nT4 = {netns.TARGET4!r}\n" + FDTABLE_FULL[case]
    r = run_proxified(f"socks5h://{P4}:{netns.DANTE_PORT}", py(code),
                      env={"PROXIFY_TEST_FAULT": "fdtable-full"})
    assert not r.signalled and "panicked" not in r.stderr, f"{case}: crashed\n{r}"
    result = dict(ln.split("=", 1) for ln in r.stdout.split() if "=" in ln).get("result")
    assert result == "EMFILE", f"{case}: expected EMFILE, got {result}\n{r}"
    lines = r.proxify_lines()
    assert len(lines) == 1 and "table" in lines[0], f"{case}: expected one line about the fd table\n{r}"
    assert not capture.sent_to(netns.TARGET4), f"{case}: packets went to the target directly\n{capture.summary()}"
    assert_no_leak(capture, f"fdtable-full {case}")
