"""Issue 12 (and issue 14 item 4): every glibc look-up path and every way around the hooks
from inside the process, under remote DNS, with a capture in the client namespace. The
resolver in resolv.conf (192.0.2.53) answers nothing: a query that left shows as a leak.

- gethostbyaddr with lengths 4, 5, 16 and AF_INET6 (v4-mapped, length 4): never a PTR query;
- getaddrinfo_a (GAI_WAIT; GAI_NOWAIT with SIGEV_SIGNAL and SIGEV_THREAD): the placeholder,
  then a proxied connect;
- res_query: answered by the in-process responder (A: the placeholder; MX: refused at once);
- rcmd, rexec, ruserok, getnetbyname(_r), getnetbyaddr, which look up (and connect) inside
  libc where no hook sees it: refused or "not found" at once, nothing sent;
- connect() taken with dlsym(dlopen("libc.so.6")), dlvsym(..., "GLIBC_2.2.5"), dlsym(RTLD_NEXT),
  Python's ctypes.CDLL("libc.so.6").connect; getaddrinfo taken with dlsym: all proxied;
- AF_UNSPEC gives both placeholders: curl -4 and curl -6 by name both work; with AI_ADDRCONFIG
  only the family the host has an address of (a v4-only and a v6-only namespace).
"""

import socket
import subprocess
import sys
import time

import pytest

import netns
from conftest import curl, py, run_proxified
from leakcheck import assert_no_leak

P4 = netns.PROXY4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
NAME = netns.TARGET_NAME
T4 = netns.TARGET4
PORT = str(netns.HTTP_PORT)


@pytest.fixture(scope="module")
def dns_paths(topo):
    d = topo.run_dir / "dnspaths"
    d.mkdir(exist_ok=True)
    exe = d / "dns_paths"
    src = netns.HERE / "csrc" / "dns_paths.c"
    cc = subprocess.run(["cc", "-O1", "-Wall", "-o", str(exe), str(src), "-lanl", "-lresolv", "-ldl"],
                        capture_output=True, text=True, timeout=120)
    if cc.returncode != 0:
        pytest.fail(f"cc failed on {src} (install with: scripts/setup.sh):\n{cc.stderr}", pytrace=False)
    return exe


def _proxied(capture, what):
    assert capture.sent_to(P4, proto=6), f"{what}: nothing went to the proxy:\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_gethostbyaddr_every_length_no_ptr(topo, capture, proxify_bin, dns_paths):
    r = run_proxified(DANTE, [dns_paths, "gethostbyaddr"])
    assert r.rc == 0, f"{r}"
    lines = dict(ln.split(": ", 1) for ln in r.stdout.splitlines())
    assert set(lines) == {"len4", "len5", "len16", "inet6-mapped", "inet6-len4", "inet6-full"}, r
    for k, v in lines.items():
        assert v.startswith("(null)"), f"{k}: an answer for an address nobody named? {r}"
    assert r.elapsed < 5, f"took {r.elapsed:.1f}s: a PTR query timed out?\n{r}"
    assert_no_leak(capture, "gethostbyaddr")


def test_getaddrinfo_a(topo, capture, proxify_bin, dns_paths):
    r = run_proxified(DANTE, [dns_paths, "gai_a", NAME, PORT])
    assert r.rc == 0, f"getaddrinfo_a:\n{r}"
    out = r.stdout
    assert "wait 240." in out and "status HTTP/1.0 200" in out, f"GAI_WAIT + connect:\n{r}"
    assert "nowait-signal rc=0 err=0 240." in out and "signal=1" in out, f"GAI_NOWAIT signal:\n{r}"
    assert "nowait-thread rc=0 err=0 thread=1" in out, f"GAI_NOWAIT thread:\n{r}"
    _proxied(capture, "getaddrinfo_a")


def test_res_query_answered_in_process(topo, capture, proxify_bin, dns_paths):
    r = run_proxified(DANTE, [dns_paths, "res_query", NAME])
    assert r.rc == 0 and "A 240." in r.stdout, f"res_query A:\n{r}"
    assert "MX -1 h_errno=3" in r.stdout, f"res_query MX (REFUSED: NO_RECOVERY):\n{r}"
    assert r.elapsed < 3, f"{r}"
    assert_no_leak(capture, "res_query")


def test_lookups_inside_libc_are_refused(topo, capture, proxify_bin, dns_paths):
    """rcmd/rexec resolve and connect inside libc; ruserok resolves; getnetby* ask the
    `networks:` sources (here made `files dns` for the client namespace)."""
    from pathlib import Path
    ns_file = Path(f"/etc/netns/{netns.NS_CLIENT}/nsswitch.conf")
    had = ns_file.exists()
    text = Path("/etc/nsswitch.conf").read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("networks:")]
    ns_file.write_text("\n".join(lines + ["networks: files dns", ""]))
    try:
        r = run_proxified(DANTE, [dns_paths, "legacy", NAME], timeout=30)
    finally:
        if not had:
            ns_file.unlink()
    assert r.rc == 0, f"{r}"
    out = dict(ln.split(" ", 1) for ln in r.stdout.splitlines())
    assert out["rcmd"].startswith("-1 Permission denied"), r
    assert out["rexec"].startswith("-1 Permission denied"), r
    assert out["ruserok"] == "-1", r
    assert out["getnetbyname"] == "null" and out["getnetbyname_r"].startswith("2 null"), r
    assert out["getnetbyaddr"] == "null", r
    assert "refusing rcmd() to " + NAME in r.stderr, f"one line must say why:\n{r}"
    assert r.elapsed < 5, f"took {r.elapsed:.1f}s: a query timed out?\n{r}"
    assert_no_leak(capture, "rcmd/rexec/ruserok/getnetby*")


@pytest.mark.parametrize("mode", ["dlsym", "dlvsym", "rtld_next"])
def test_connect_taken_with_dlsym_is_proxied(topo, capture, proxify_bin, dns_paths, mode):
    r = run_proxified(DANTE, [dns_paths, mode, T4, PORT])
    assert r.rc == 0 and "status HTTP/1.0 200" in r.stdout, f"{mode}:\n{r}"
    _proxied(capture, mode)


def test_getaddrinfo_taken_with_dlsym(topo, capture, proxify_bin, dns_paths):
    r = run_proxified(DANTE, [dns_paths, "dlsym_gai", NAME, PORT])
    assert r.rc == 0 and "addr 240." in r.stdout and "status HTTP/1.0 200" in r.stdout, f"{r}"
    _proxied(capture, "dlsym getaddrinfo")


CTYPES = f"""
import ctypes, socket, struct
libc = ctypes.CDLL("libc.so.6", use_errno=True)
s = socket.socket()
sa = struct.pack("=HH4s8x", socket.AF_INET, socket.htons({PORT}), socket.inet_aton({T4!r}))
rc = libc.connect(s.fileno(), ctypes.c_char_p(sa), len(sa))
if rc != 0:
    raise SystemExit("connect: " + str(ctypes.get_errno()))
s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
print(s.recv(100).split(b"\\r\\n")[0].decode())
"""


def test_ctypes_libc_connect_is_proxied(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(CTYPES))
    assert r.rc == 0 and "200" in r.stdout, f"ctypes connect:\n{r}"
    _proxied(capture, "ctypes connect")


@pytest.mark.parametrize("flag", ["-4", "-6"])
def test_curl_by_name_either_family(topo, capture, proxify_bin, flag):
    r = run_proxified(DANTE, curl(f"http://{NAME}:{PORT}/", flag, "-o", "/dev/null", "-w", "%{http_code} %{remote_ip}"))
    assert r.rc == 0 and r.stdout.startswith("200"), f"curl {flag}:\n{r}"
    want = "240." if flag == "-4" else "100::"
    assert want in r.stdout, f"curl {flag} used {r.stdout}"
    _proxied(capture, f"curl {flag}")


GAI_UNSPEC = f"""
import socket
print(" ".join(sorted({{a[4][0] for a in socket.getaddrinfo({NAME!r}, 80, type=socket.SOCK_STREAM)}}, key=lambda a: ":" in a)))
print(" ".join(a[4][0] for a in socket.getaddrinfo({NAME!r}, 80, type=socket.SOCK_STREAM)))
"""


def test_af_unspec_gives_both_placeholders_ipv4_first(topo, capture, proxify_bin):
    r = run_proxified(DANTE, py(GAI_UNSPEC))
    assert r.rc == 0, f"{r}"
    both, order = r.stdout.splitlines()[:2]
    assert both.split()[0].startswith("240.") and both.split()[1].startswith("100::"), r
    assert order.split()[0].startswith("240."), f"IPv4 first: {r}"
    assert_no_leak(capture, "getaddrinfo AF_UNSPEC")


ADDRCONFIG_PY = """
import socket
for flags in (0, socket.AI_ADDRCONFIG):
    try:
        r = socket.getaddrinfo({name!r}, 80, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
        print(flags, " ".join(a[4][0] for a in r))
    except socket.gaierror as e:
        print(flags, "error", e.errno)
"""


@pytest.mark.parametrize("host", ["v4-only", "v6-only"])
def test_ai_addrconfig_keeps_the_family_the_host_has(topo, proxify_bin, host):
    """`AI_ADDRCONFIG` with `AF_UNSPEC` on a host with only IPv4 (or only IPv6) addresses:
    only that family's placeholder, as glibc would answer; without the flag both. The program
    runs in a namespace of its own (loopback and a veth pair, one end with a documentation
    address), so nothing can leave it at all: only getaddrinfo is asked."""
    addr = "192.0.2.77/24" if host == "v4-only" else "2001:db8:77::1/64"
    script = ADDRCONFIG_PY.format(name=NAME)
    shell = (
        "set -e; ip link set lo up; ip link add pxfd0 type veth peer name pxfd1; ip link set pxfd1 up; "
        f"ip addr add {addr} dev pxfd0 {'nodad' if ':' in addr else ''}; ip link set pxfd0 up; "
        f'exec "$0" run -x {DANTE} -- "$1" -c "$2"'
    )
    r = subprocess.run(["unshare", "-n", "sh", "-c", shell, str(proxify_bin), sys.executable, script],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{host}: {r.stderr}"
    lines = dict(ln.split(" ", 1) for ln in r.stdout.splitlines())
    plain, cfg = lines["0"].split(), lines[str(socket.AI_ADDRCONFIG)].split()
    assert [a.startswith("240.") for a in plain[:1]] == [True] and any(a.startswith("100::") for a in plain), \
        f"{host}: without AI_ADDRCONFIG both placeholders, IPv4 first: {r.stdout}"
    want = "240." if host == "v4-only" else "100::"
    assert cfg and all(a.startswith(want) for a in cfg), \
        f"{host}: AI_ADDRCONFIG should give only the {want} placeholder: {r.stdout}\n{r.stderr}"
