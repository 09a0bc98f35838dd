"""Issue 16: `proxify run --trace FILE` writes one JSON line per decision and per outcome
(proxied, direct, denied and failing connects, name look-ups under remote DNS, a forked
child's own lines), bounded by PROXIFY_TRACE_MAX; `proxify trace [--summary] FILE` reads it
back. And a wrong password's one line names where the credentials came from."""

import json
import re

import netns
from conftest import PROXIFY_BIN, curl, py, run_in_client, run_proxified
from leakcheck import assert_no_leak
from test_chains import tiny  # noqa: F401 (the fixture: tinyproxy with Basic auth)

P4, T4 = netns.PROXY4, netns.TARGET4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
NAME = netns.TARGET_NAME
DENIED = "203.0.113.99"
# The proxy host: reached directly by a rule (nothing leaves the client but to it).
DIRECT = f"{P4}:80"


def read_trace(path):
    lines = path.read_text().splitlines()
    assert lines, f"the trace {path} is empty"
    return [json.loads(ln) for ln in lines]


def sh(*cmds):
    return ["sh", "-c", "; ".join(" ".join(c) for c in cmds) + "; exit 0"]


def run_four(tmp_path):
    """A proxied fetch, a failing one (nothing listens on the target's port 9: Dante says
    refused), a denied one and a direct one, in one traced run."""
    trace = tmp_path / "t.jsonl"
    # -4: one address (one connect) per name.
    cmds = sh(curl(f"http://{NAME}/", "-4"), curl(f"http://{NAME}:9/", "-4"),
              curl(f"http://{DENIED}/"), curl(f"http://{DIRECT}/"))
    r = run_proxified(DANTE, cmds, opts=["--trace", str(trace), "--rule", f"{DENIED}/32 deny",
                                          "--rule", f"{DIRECT} direct"])
    return r, trace


def test_trace_lines(topo, capture, proxify_bin, tmp_path):
    r, trace = run_four(tmp_path)
    assert topo.token in r.stdout, f"the proxied fetch should work\n{r}"
    ev = read_trace(trace)
    for e in ev:
        assert isinstance(e["t"], float) and e["t"] > 1.6e9 and isinstance(e["pid"], int), e
        assert e["ev"] in ("decision", "outcome"), e
    by = lambda ev_, call, dest: [e for e in ev if e["ev"] == ev_ and e["call"] == call and e["dest"] == dest]

    # The name looked up under remote DNS, then the connect to the name.
    look = by("decision", "getaddrinfo", NAME)
    assert look and look[0]["route"] == "chain" and look[0]["result"] == "ok", ev
    d = by("decision", "connect", f"{NAME}:80")
    assert len(d) == 1 and d[0]["route"] == "chain" and d[0]["rule"] == "no rule matched", ev
    assert d[0]["proxies"] == [f"socks5h://{P4}:{netns.DANTE_PORT}"], d
    o = by("outcome", "connect", f"{NAME}:80")
    assert len(o) == 1 and o[0]["result"] == "ok" and 0 <= o[0]["ms"] < 2000, o
    assert o[0]["pid"] == d[0]["pid"]

    # Refused by the target, said by Dante: the errno name.
    o = by("outcome", "connect", f"{NAME}:9")
    assert len(o) == 1 and o[0]["result"] == "ECONNREFUSED" and o[0]["route"] == "chain", ev

    # Denied by a rule: the rule's text, as the -v line gives it, and EACCES.
    d = by("decision", "connect", f"{DENIED}:80")
    assert len(d) == 1 and d[0]["route"] == "deny" and d[0]["result"] == "EACCES", ev
    assert f'rule 1 "{DENIED}/32 deny" (--rule)' in d[0]["rule"], d

    # Direct by a rule.
    d = by("decision", "connect", DIRECT)
    assert len(d) == 1 and d[0]["route"] == "direct" and "rule 2" in d[0]["rule"], ev
    assert by("outcome", "connect", DIRECT), ev
    assert_no_leak(capture)


def test_trace_table_and_summary(topo, capture, proxify_bin, tmp_path):
    r, trace = run_four(tmp_path)
    with trace.open("a") as f:
        f.write("not a trace line\n")
    t = run_in_client([PROXIFY_BIN, "trace", trace])
    assert t.rc == 0 and "1 of" in t.stderr and "skipped" in t.stderr, t
    rows = {ln.split()[0]: ln.split() for ln in t.stdout.splitlines()[1:]}
    assert t.stdout.startswith("DESTINATION"), t
    # DESTINATION CALLS COUNT ROUTE FAILED MEDIAN
    assert rows[f"{NAME}:80"][2:] == ["1", f"socks5h://{P4}:{netns.DANTE_PORT}", "0"] + rows[f"{NAME}:80"][5:], t
    assert re.fullmatch(r"\d+\.\d", rows[f"{NAME}:80"][5]), t
    assert rows[f"{NAME}:9"][4] == "1", t
    assert rows[f"{DENIED}:80"][3] == "deny", t
    assert rows[DIRECT][3] == "direct", t
    s = run_in_client([PROXIFY_BIN, "trace", "--summary", trace])
    assert s.rc == 0, s
    first = s.stdout.splitlines()[0]
    assert re.match(r"connects: 4  proxied: 2  direct: 1  denied: 1  failed: 1\b", first), s
    assert "top " in s.stdout and f"{NAME}:80" in s.stdout, s
    bad = run_in_client([PROXIFY_BIN, "trace", tmp_path / "missing.jsonl"])
    assert bad.rc == 2 and bad.stderr.startswith("proxify: cannot read the trace"), bad
    assert "panicked" not in bad.stderr + t.stderr + s.stderr
    assert_no_leak(capture)


def test_trace_is_capped(topo, capture, proxify_bin, tmp_path):
    trace = tmp_path / "t.jsonl"
    cap = 1500
    cmds = sh(*[curl(f"http://{NAME}/")] * 6)
    r = run_proxified(DANTE, cmds, opts=["--trace", str(trace)], env={"PROXIFY_TRACE_MAX": str(cap)})
    assert r.stdout.count(topo.token) == 6, f"every fetch should work\n{r}"
    text = trace.read_text()
    lines = [json.loads(ln) for ln in text.splitlines()]
    trunc = [e for e in lines if e["ev"] == "truncated"]
    assert len(trunc) == 1 and lines[-1]["ev"] == "truncated" and lines[-1]["cap"] == cap, lines
    assert len(text) - len(text.splitlines()[-1]) - 1 <= cap, f"{len(text)} bytes for a cap of {cap}"
    assert len(text) <= cap + 400
    assert_no_leak(capture)


FORK = f"""
import os, socket
socket.create_connection(({NAME!r}, 80), timeout=5).close()
pid = os.fork()
if pid == 0:
    socket.create_connection(({NAME!r}, {netns.ECHO_PORT}), timeout=5).close()
    os._exit(0)
os.waitpid(pid, 0)
print(os.getpid(), pid)
"""


def test_forked_child_lines_carry_its_pid(topo, capture, proxify_bin, tmp_path):
    trace = tmp_path / "t.jsonl"
    r = run_proxified(DANTE, py(FORK), opts=["--trace", str(trace)])
    assert r.rc == 0, r
    parent, child = map(int, r.stdout.split())
    ev = read_trace(trace)
    mine = {(e["ev"], e["dest"]): e["pid"] for e in ev if e["call"] == "connect"}
    assert mine[("decision", f"{NAME}:80")] == parent and mine[("outcome", f"{NAME}:80")] == parent, ev
    echo = f"{NAME}:{netns.ECHO_PORT}"
    assert mine[("decision", echo)] == child and mine[("outcome", echo)] == child, ev
    assert_no_leak(capture)


UDP_SEND = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"ping", ({T4!r}, {netns.ECHO_PORT}))
print("sent")
"""


def test_udp_association_is_traced(topo, capture, proxify_bin, tmp_path):
    trace = tmp_path / "t.jsonl"
    r = run_proxified(DANTE, py(UDP_SEND), opts=["--trace", str(trace)])
    assert r.rc == 0 and r.stdout.strip() == "sent", r
    dest = f"{T4}:{netns.ECHO_PORT}"
    ev = [e for e in read_trace(trace) if e["call"] == "udp-associate"]
    assert [e["ev"] for e in ev] == ["decision", "outcome"], ev
    assert all(e["dest"] == dest and e["route"] == "chain" for e in ev), ev
    assert ev[0]["rule"] == "no rule matched" and ev[0]["proxies"] == [DANTE], ev
    assert ev[1]["result"] == "ok" and ev[1]["ms"] >= 0, ev
    assert_no_leak(capture)


FDS = f"""
import fcntl, os, resource, socket
soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
mine = [int(f) for f in os.listdir("/proc/self/fd")
        if os.path.realpath(f"/proc/self/fd/{{f}}").endswith("t.jsonl")]
cloexec = [bool(fcntl.fcntl(f, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for f in mine]
# The program closes its low fds and opens files: none lands on the trace.
os.closerange(3, 64)
keep = [open("/dev/null") for _ in range(20)]
socket.create_connection(({NAME!r}, 80), timeout=5).close()
print(soft, mine, cloexec)
"""


def test_trace_fd_is_high_and_close_on_exec(topo, capture, proxify_bin, tmp_path):
    trace = tmp_path / "t.jsonl"
    r = run_proxified(DANTE, py(FDS), opts=["--trace", str(trace)])
    assert r.rc == 0, r
    soft, rest = r.stdout.split(" ", 1)
    fds, cloexec = rest.strip().rsplit("] ", 1)
    fds = [int(x) for x in fds.strip("[").split(",") if x.strip()]
    assert len(fds) == 1 and fds[0] >= min(int(soft), 1024) - 64, r
    assert cloexec == "[True]", r
    # Lines written after the program closed its low fds still reach the file.
    assert [e for e in read_trace(trace) if e["ev"] == "outcome" and e["dest"] == f"{NAME}:80"], trace.read_text()
    assert_no_leak(capture)


def test_a_child_may_trace_elsewhere(topo, capture, proxify_bin, tmp_path):
    """PROXIFY_TRACE says where lines go, not where connections go: a child of the traced
    command may change it (an exec that changes a setting is refused otherwise)."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    cmd = ["sh", "-c", f"PROXIFY_TRACE={second} PROXIFY_TRACE_MAX=100000 {' '.join(curl(f'http://{NAME}/'))}"]
    r = run_proxified(DANTE, cmd, opts=["--trace", str(first)])
    assert topo.token in r.stdout and not r.proxify_lines(), r
    assert [e for e in read_trace(second) if e["ev"] == "outcome" and e["result"] == "ok"], second.read_text()
    assert_no_leak(capture)


LISTEN = f"""
import socket
c = socket.create_connection(({NAME!r}, 80), timeout=5)
l = socket.socket()
l.bind(("0.0.0.0", 0))
l.listen(1)  # one connection expected after a proxied one: a SOCKS BIND
lo = socket.socket()
lo.bind(("127.0.0.1", 0))
lo.listen(5)  # a loopback listener stays local
print(lo.getsockname()[1])
"""


def test_listeners_are_traced(topo, capture, proxify_bin, tmp_path):
    trace = tmp_path / "t.jsonl"
    r = run_proxified(DANTE, py(LISTEN), opts=["--trace", str(trace)])
    assert r.rc == 0, r
    ev = [e for e in read_trace(trace) if e["call"] == "listen"]
    bind = [e for e in ev if e["route"] == "chain"]
    assert [e["ev"] for e in bind] == ["decision", "outcome"], ev
    # The peer the BIND expects: the proxied connection's host, any port.
    assert bind[0]["dest"] == f"{NAME}:0" and "BIND through the proxy" in bind[0]["rule"], ev
    assert bind[1]["result"] == "ok" and bind[1]["ms"] >= 0, ev
    local = [e for e in ev if e["route"] == "direct"]
    port = int(r.stdout.strip())
    assert len(local) == 1 and local[0]["dest"] == f"127.0.0.1:{port}" and local[0]["result"] == "ok", ev
    assert "local listener" in local[0]["rule"], ev
    assert_no_leak(capture)


def test_untraced_run_writes_nothing(topo, capture, proxify_bin, tmp_path):
    r = run_proxified(DANTE, curl(f"http://{NAME}/"), env={"PROXIFY_TRACE_MAX": "10"})
    assert topo.token in r.stdout and not r.proxify_lines(), r
    assert list(tmp_path.iterdir()) == []
    assert_no_leak(capture)
# ---- a wrong password names where the credentials came from ---------------------------------
def wrong(topo):
    return f"socks5h://{netns.TEST_USER}:wrong-{topo.password}@{P4}:{netns.DANTE_AUTH_PORT}"


def one_line(r):
    assert r.rc != 0 and "panicked" not in r.stderr, r
    lines = r.proxify_lines()
    assert len(lines) == 1, f"one proxify: line expected\n{r}"
    return lines[0]


def test_wrong_password_from_the_flag(topo, capture, proxify_bin):
    r = run_proxified(wrong(topo), curl(f"http://{T4}/"))
    line = one_line(r)
    assert "username/password" in line and "the proxy URL given with -x" in line, r
    assert topo.password not in line
    assert_no_leak(capture)


def test_wrong_password_from_the_environment(topo, capture, proxify_bin):
    r = run_proxified(None, curl(f"http://{T4}/"), env={"PROXIFY_PROXY": wrong(topo)})
    line = one_line(r)
    assert "username/password" in line and "PROXIFY_PROXY" in line, r
    assert_no_leak(capture)


def test_wrong_password_from_a_file(topo, capture, proxify_bin, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(f'timeout = 2\nproxy = "{wrong(topo)}"\n')
    r = run_proxified(None, curl(f"http://{T4}/"), opts=["-f", str(conf)])
    line = one_line(r)
    assert "username/password" in line and f"{conf}:2" in line and "proxy" in line, r
    assert_no_leak(capture)


def test_wrong_password_from_a_proxychains_conf(topo, capture, proxify_bin, tmp_path):
    conf = tmp_path / "proxychains.conf"
    conf.write_text(f"strict_chain\nproxy_dns\n[ProxyList]\nsocks5 {P4} {netns.DANTE_AUTH_PORT} "
                    f"{netns.TEST_USER} wrong-{topo.password}\n")
    r = run_proxified(None, curl(f"http://{T4}/"), opts=["-f", str(conf)])
    line = one_line(r)
    assert "username/password" in line and f"{conf}:4" in line, r
    assert_no_leak(capture)


def test_wrong_http_password_from_the_flag(topo, tiny, capture, proxify_bin):  # noqa: F811
    """A wrong Basic password (tinyproxy answers 401; others 407): the line names where it
    came from."""
    r = run_proxified(tiny.auth_url("not-" + tiny.password), curl(f"http://{T4}/"))
    line = one_line(r)
    # tinyproxy answers 401 (not 407): the proxy's refusal, with the credentials named.
    assert "HTTP proxy" in line and ("401" in line or "407" in line or "rejected" in line), r
    assert "the proxy URL given with -x" in line and tiny.password not in line, r
    assert_no_leak(capture)
