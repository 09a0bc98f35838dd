"""fork and exec (issue 5): forking while other threads are inside proxify's code never
deadlocks the child; a remote-DNS name resolved in a parent is connected from a forked child;
a placeholder handed as text to a sibling process (`addr=$(getent ahosts ...); curl $addr`)."""

import ipaddress
import sys

import netns
from conftest import py, run_proxified
from hardcase import DANTE, expect_fail_closed, expect_ok, kv
from leakcheck import assert_no_leak

NAME, T4, ECHO = netns.TARGET_NAME, netns.TARGET4, netns.ECHO_PORT
PLACEHOLDERS = [ipaddress.ip_network(n) for n in ("240.0.0.0/4", "100::/64")]
FORKS = 50
FORK_LIMIT_S = 60

# Four threads loop on getaddrinfo + proxied connect + echo (by name and by address) while the
# main thread forks 50 times; each child connects by name through the proxy, echoes and exits.
# A child that does not exit within its deadline is killed (by PID) and counted as stuck.
FORK_STRESS = f"""
import os, signal, socket, sys, threading, time
NAME, ADDR, PORT, FORKS = {NAME!r}, {T4!r}, {ECHO}, {FORKS}
stop = threading.Event()
counts = [0] * 4
errors = []

def echo(sock, msg):
    sock.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = sock.recv(len(msg) - len(got))
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    return got == msg

def worker(i):
    while not stop.is_set():
        try:
            socket.getaddrinfo(NAME, PORT, socket.AF_UNSPEC, socket.SOCK_STREAM)
            with socket.create_connection((NAME if i % 2 else ADDR, PORT), timeout=10) as s:
                if not echo(s, b"worker-%d\\n" % i):
                    raise ValueError("bad echo")
            counts[i] += 1
        except Exception as e:
            errors.append(repr(e))

threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
for t in threads:
    t.start()
end = time.monotonic() + 10
while min(counts) == 0 and time.monotonic() < end:
    time.sleep(0.01)
children = {{}}
for k in range(FORKS):
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            with socket.create_connection((NAME, PORT), timeout=5) as s:
                code = 0 if echo(s, b"child-%d\\n" % k) else 2
        except BaseException:
            code = 4
        os._exit(code)
    children[pid] = time.monotonic()
    time.sleep(0.02)
ok = failed = stuck = 0
deadline = time.monotonic() + 20
while children and time.monotonic() < deadline:
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid == 0:
        time.sleep(0.01)
        continue
    children.pop(pid, None)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        ok += 1
    else:
        failed += 1
for pid in list(children):
    stuck += 1
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
stop.set()
for t in threads:
    t.join(15)
alive = sum(t.is_alive() for t in threads)
print(f"children_ok={{ok}} children_failed={{failed}} children_stuck={{stuck}} "
      f"worker_conns={{sum(counts)}} worker_min={{min(counts)}} worker_errors={{len(errors)}} "
      f"threads_alive={{alive}}")
if errors:
    print("first_worker_error=" + errors[0].replace(" ", "_"))
sys.exit(0 if ok == FORKS and not errors and not alive else 1)
"""

PARENT_CHILD = f"""
import os, socket, sys, time
addr = socket.getaddrinfo({NAME!r}, {ECHO}, socket.AF_INET, socket.SOCK_STREAM)[0][4]
print("parent_resolved=" + addr[0], flush=True)
pid = os.fork()
if pid == 0:
    code = 3
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(addr)
        peer = s.getpeername()
        s.sendall(b"from-the-child\\n")
        data = s.recv(100)
        print("child_peer=%s:%d child_echo=%s" % (peer[0], peer[1], data.decode().strip()), flush=True)
        code = 0 if data == b"from-the-child\\n" else 2
    except OSError as e:
        print("child_error=" + repr(e).replace(" ", "_"), flush=True)
    os._exit(code)
end = time.monotonic() + 15
while time.monotonic() < end:
    p, status = os.waitpid(pid, os.WNOHANG)
    if p:
        sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 9)
    time.sleep(0.01)
os.kill(pid, 9)
print("child_stuck=1")
sys.exit(8)
"""


def _placeholder(a):
    return any(ipaddress.ip_address(a) in n for n in PLACEHOLDERS)


def test_fork_while_threads_proxy(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(FORK_STRESS), timeout=FORK_LIMIT_S + 15)
    what = f"{FORKS} forks while 4 threads proxy"
    v = kv(r.stdout)
    assert v.get("children_stuck") == "0", f"{what}: forked children deadlocked\n{r}"
    expect_ok(r, what)
    assert v["children_ok"] == str(FORKS), f"{what}: not every child's proxied connect worked\n{r}"
    assert int(v["worker_min"]) > 0 and v["worker_errors"] == "0", f"{what}: the threads failed\n{r}"
    assert r.elapsed < FORK_LIMIT_S, f"{what}: took {r.elapsed:.1f}s\n{r}"
    assert_no_leak(capture, what)


def test_name_resolved_in_parent_connected_in_child(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(PARENT_CHILD))
    what = "name resolved in the parent, connected in a forked child"
    expect_ok(r, what)
    v = kv(r.stdout)
    assert _placeholder(v["parent_resolved"]), f"{what}: the parent got no placeholder\n{r}"
    assert v["child_peer"] == f"{v['parent_resolved']}:{ECHO}" and v["child_echo"] == "from-the-child", \
        f"{what}\n{r}"
    assert_no_leak(capture, what)


SIBLING = ("echo dnsfd=${PROXIFY_DNS_FD:-none}; "
           f"addr=$(getent ahosts {NAME} | head -1 | cut -d' ' -f1); echo addr=$addr; "
           "curl -sS --max-time 5 http://$addr/; c=$?; echo curl_rc=$c; "
           # A sibling whose environment was scrubbed: proxify's exec hook puts LD_PRELOAD and
           # PROXIFY_* back, so it is proxied all the same (else the capture shows a leak).
           "env -i $(command -v curl) -sS --max-time 5 http://$addr/; echo scrubbed_curl_rc=$?; "
           f"{sys.executable} -c \"import socket,errno,sys\n"
           "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
           "s.settimeout(5)\n"
           "try:\n    s.connect((sys.argv[1], 80)); print('py=connected')\n"
           "except OSError as e:\n    print('py=' + errno.errorcode.get(e.errno, str(e.errno)))\" $addr; exit $c")


def test_placeholder_handed_to_a_sibling(topo, capture, proxify_bin):
    """`sh -c 'addr=$(getent ahosts target.example | head -1 | cut -d" " -f1); curl http://$addr/'`:
    getent and curl are separate processes (siblings under sh). With the tree-wide name map
    (the CLI hands a memfd down in PROXIFY_DNS_FD) curl must get the page. Without it (the
    per-process map, README "Limits") the connect must fail closed: EHOSTUNREACH and one
    proxify line, never a direct connection. A second curl runs under `env -i`."""
    r = run_proxified(DANTE, ["sh", "-c", SIBLING])
    what = "placeholder passed as text from getent to curl"
    v = kv(r.stdout)
    assert v.get("addr") and _placeholder(v["addr"]), f"{what}: getent printed no placeholder\n{r}"
    if v["dnsfd"] != "none":
        assert r.stdout.count(topo.token) == 2 and v["curl_rc"] == v["scrubbed_curl_rc"] == "0", \
            f"{what}: PROXIFY_DNS_FD is set (tree-wide map), so the siblings must reach the page\n{r}"
        assert v["py"] == "connected", f"{what}: the sibling python connect failed\n{r}"
        assert not r.proxify_lines(), f"{what}: proxify printed something\n{r}"
    else:
        expect_fail_closed(r, what, must_not_contain=(topo.token,))
        assert v["curl_rc"] != "0" and v["scrubbed_curl_rc"] != "0" and v["py"] == "EHOSTUNREACH", \
            f"{what}: per-process map: the sibling's connect must fail with EHOSTUNREACH\n{r}"
    assert_no_leak(capture, what)
