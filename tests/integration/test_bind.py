"""Issue 4: SOCKS BIND, against real servers in the namespaces.

vsftpd on the target host (active and passive mode allowed) is reachable only through Dante:
active-mode downloads make the client listen through a BIND. A "call-back" server on the
target host connects to whatever address a client names, for the readiness tests. Our own
Dante instance without `bind` in its rules and a fake SOCKS5 server of ours refuse BIND.
Local listeners (loopback, fixed ports, no proxied connection) must stay plain local
listeners. Every case runs under `proxify run` with a capture in the client namespace."""

import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import sys

import pytest

import netns
from conftest import py, run_proxified
from leakcheck import assert_no_leak

P4 = netns.PROXY4
T4 = netns.TARGET4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
FTP_PORT = 21
CALLBACK_PORT = 9009  # target host: "CALL HOST PORT TOKEN" -> connects to HOST:PORT, sends TOKEN
DANTE_NOBIND_PORT = 1185  # our Dante whose rules allow connect and udpassociate, not bind
FAKE_REFUSE_PORT = 1186  # fake SOCKS5: BIND answered with REP 7 (command not supported)
FAKE_SECOND_FAIL_PORT = 1187  # fake SOCKS5: first BIND reply fine, second reply REP 5
FAKE_BND_PORT = 4444
FTP_USER = "daemon"  # vsftpd's anonymous user: needs an existing home directory
SETUP_HINT = "install with: scripts/setup.sh"

CALLBACK_SERVER = r"""
import socket, sys, threading
def handle(c):
    with c:
        c.settimeout(20)
        try:
            words = c.makefile("rb").readline().decode().split()
            if len(words) != 4 or words[0] != "CALL":
                c.sendall(b"ERR bad request\n")
                return
            with socket.create_connection((words[1], int(words[2])), timeout=5) as s:
                s.sendall(words[3].encode())
            c.sendall(b"OK\n")
        except OSError as e:
            try:
                c.sendall(("ERR %s\n" % e).encode())
            except OSError:
                pass
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

FAKE_BIND_PROXY = r"""
import socket, struct, sys, threading, time
HOST, PORT, MODE, BND_PORT = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def exact(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise ConnectionError("closed")
        b += d
    return b
def handle(c):
    c.settimeout(20)
    with c:
        try:
            _, n = exact(c, 2); exact(c, n)
            c.sendall(b"\x05\x00")
            ver, cmd, _, atyp = exact(c, 4)
            alen = {1: 4, 4: 16}.get(atyp) or exact(c, 1)[0]
            exact(c, alen + 2)
            print("request cmd", cmd, flush=True)
            if cmd != 2 or MODE == "refuse":
                c.sendall(bytes([5, 7, 0, 1]) + bytes(6))
                return
            c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton(HOST) + struct.pack("!H", BND_PORT))
            time.sleep(0.3)
            c.sendall(bytes([5, 5, 0, 1]) + bytes(6))
            while c.recv(4096):
                pass
        except (OSError, ConnectionError) as e:
            print("connection ended:", e, flush=True)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((HOST, PORT))
srv.listen(16)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

VSFTPD_CONF = """\
listen=YES
listen_ipv6=NO
listen_address={addr}
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
anon_root={root}
no_anon_password=YES
ftp_username={user}
nopriv_user={user}
secure_chroot_dir={empty}
port_enable=YES
pasv_enable=YES
connect_from_port_20=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
xferlog_enable=YES
vsftpd_log_file={log}
dual_log_enable=NO
syslog_enable=NO
"""


class FtpEnv:
    def __init__(self, d, sha256, size):
        self.dir, self.sha256, self.size = d, sha256, size


@pytest.fixture(scope="module")
def bind_env(topo):
    """vsftpd and the call-back server on the target host; the Dante without bind and the fake
    BIND proxies on the proxy host. Stopped by PID when the module ends."""
    missing = [t for t in ("vsftpd", "ss") if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        pytest.fail(f"missing prerequisites for the BIND tests: {', '.join(missing)} -- {SETUP_HINT}",
                    pytrace=False)
    try:
        home = pwd.getpwnam(FTP_USER).pw_dir
    except KeyError:
        home = None
    if not home or not os.path.isdir(home):
        pytest.fail(f"vsftpd's anonymous user {FTP_USER!r} needs an existing home directory", pytrace=False)
    vsftpd = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    procs = []

    def spawn(ns, argv, name):
        p = netns.Proc(name, netns.in_ns(ns, *argv), topo.run_dir / f"{name}.log")
        procs.append(p)
        return p

    d = topo.run_dir / "ftp"
    root, empty = d / "root", d / "empty"
    for sub in (d, root, empty):
        sub.mkdir(exist_ok=True)
        os.chmod(sub, 0o755)
    blob = secrets.token_bytes(300 * 1024 + 77)
    (root / "file.bin").write_bytes(blob)
    os.chmod(root / "file.bin", 0o644)
    conf = d / "vsftpd.conf"
    conf.write_text(VSFTPD_CONF.format(addr=netns._doc_addr(T4), port=FTP_PORT, root=root, empty=empty,
                                       user=FTP_USER, log=d / "xfer.log"))
    dante_conf = topo.run_dir / "dante-nobind.conf"
    text = topo._dante_conf("dante-nobind", DANTE_NOBIND_PORT, "none")
    assert "command: connect bind udpassociate" in text, "Dante's rule format changed"
    dante_conf.write_text(text.replace("command: connect bind udpassociate", "command: connect udpassociate"))
    try:
        ftp = spawn(netns.NS_TARGET, [vsftpd, str(conf)], "bind-vsftpd")
        cb = spawn(netns.NS_TARGET, [sys.executable, "-c", CALLBACK_SERVER, T4, str(CALLBACK_PORT)],
                   "bind-callback")
        dante = spawn(netns.NS_PROXY, ["danted", "-f", str(dante_conf), "-p",
                                       str(topo.run_dir / "dante-nobind.pid")], "dante-nobind-stdout")
        fakes = [(spawn(netns.NS_PROXY, [sys.executable, "-c", FAKE_BIND_PROXY, P4, str(port), mode,
                                         str(FAKE_BND_PORT)], f"bind-fake-{mode}"), port)
                 for mode, port in (("refuse", FAKE_REFUSE_PORT), ("second-fail", FAKE_SECOND_FAIL_PORT))]
        topo.wait_tcp(netns.NS_TARGET, T4, FTP_PORT, ftp)
        topo.wait_tcp(netns.NS_TARGET, T4, CALLBACK_PORT, cb)
        topo.wait_tcp(netns.NS_CLIENT, P4, DANTE_NOBIND_PORT, dante)
        for p, port in fakes:
            topo.wait_tcp(netns.NS_CLIENT, P4, port, p)
    except BaseException as e:
        for p in reversed(procs):
            p.stop()
        pytest.fail(f"could not start the BIND test servers: {e}", pytrace=False)
    try:
        yield FtpEnv(d, hashlib.sha256(blob).hexdigest(), len(blob))
    finally:
        for p in reversed(procs):
            p.stop()


def _json(r, what):
    assert not r.signalled, f"{what}: killed by signal {-r.rc} (a crash)\n{r}"
    for bad in ("panicked at", "stack backtrace", "Segmentation fault"):
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"
    lines = r.stdout.strip().splitlines()
    assert r.rc == 0 and lines, f"{what}: the script did not run to its end\n{r}"
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"{what}: no JSON result line\n{r}") from None


def _syns_to_proxy(capture, port):
    return [p for p in capture.sent_to(P4, proto=6, dport=port) if p.note == "S"]


PRELUDE = """
import errno, json, os, selectors, select, socket, subprocess, sys, time
def ename(e):
    if e.errno is None:
        return type(e).__name__
    return errno.errorcode.get(e.errno, str(e.errno))
def listeners(port):
    out = subprocess.run(["ss", "-Htln", "sport = :%d" % port], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if l.strip()]
"""


# ---- FTP through Dante ----------------------------------------------------------------------

FTPLIB_SCRIPT = PRELUDE + """
import ftplib, hashlib
f = ftplib.FTP(timeout=10)
cmds = []
put = f.putcmd
def record(line):
    cmds.append(line)
    put(line)
f.putcmd = record
f.connect(TARGET, 21)
f.login()
f.set_pasv(PASV)
data = bytearray()
f.retrbinary("RETR file.bin", data.extend)
f.quit()
print(json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                  "cmds": [c for c in cmds if c.split()[0] in ("PORT", "EPRT", "PASV", "EPSV")]}))
"""


@pytest.mark.parametrize("mode", ["active", "passive"])
def test_ftp_ftplib(topo, bind_env, capture, proxify_bin, mode):
    code = f"TARGET = {T4!r}\nPASV = {mode == 'passive'}\n" + FTPLIB_SCRIPT
    r = run_proxified(DANTE, py(code))
    res = _json(r, f"ftplib {mode}")
    assert res["size"] == bind_env.size and res["sha256"] == bind_env.sha256, \
        f"ftplib {mode}: the file did not arrive intact:\n{r}"
    if mode == "active":
        ports = [c for c in res["cmds"] if c.startswith("PORT ")]
        assert ports, f"active mode sent no PORT command:\n{r}"
        host = ".".join(ports[0].split()[1].split(",")[:4])
        assert host == netns.PROXY_T4, \
            f"PORT must announce the proxy's BIND address {netns.PROXY_T4}, not {host}:\n{r}"
    else:
        assert any(c.startswith(("PASV", "EPSV")) for c in res["cmds"]), f"passive mode not used:\n{r}"
    assert not r.proxify_lines(), f"proxify printed something on a successful run:\n{r}"
    assert_no_leak(capture, f"ftplib {mode}")


@pytest.mark.parametrize("mode", ["active", "passive"])
def test_ftp_curl(topo, bind_env, capture, proxify_bin, mode):
    out = bind_env.dir / f"curl-{mode}.bin"
    out.unlink(missing_ok=True)
    extra = ["-P", "-"] if mode == "active" else []
    r = run_proxified(DANTE, ["curl", "-sS", "-v", "--max-time", "10", *extra, "-o", str(out),
                              f"ftp://{T4}/file.bin"])
    assert r.rc == 0, f"curl {mode} FTP download failed:\n{r}"
    data = out.read_bytes() if out.exists() else b""
    assert len(data) == bind_env.size and hashlib.sha256(data).hexdigest() == bind_env.sha256, \
        f"curl {mode}: the file did not arrive intact ({len(data)} bytes):\n{r}"
    if mode == "active":
        assert ("> EPRT" in r.stderr or "> PORT" in r.stderr), f"curl did not use active mode:\n{r}"
    assert not r.proxify_lines(), f"proxify printed something on a successful run:\n{r}"
    assert_no_leak(capture, f"curl {mode}")


def _ftp_client_cmd(client, out):
    url = f"ftp://{T4}/file.bin"
    if client == "lftp":
        # lftp binds its data socket to the control connection's local address.
        return ["lftp", "-c", f"set ftp:passive-mode off; set net:max-retries 1; "
                              f"set net:timeout 10; open ftp://{T4}; get file.bin -o {out}"]
    # tnftp -A: active mode; auto-fetch of a URL logs in as anonymous.
    return ["tnftp", "-A", "-V", "-o", str(out), url]


@pytest.mark.parametrize("client", ["lftp", "tnftp"])
def test_ftp_active_clients_under_default_bind(topo, bind_env, capture, proxify_bin, client):
    """Issue 17 item 3: active FTP of lftp and tnftp keeps working under `--bind auto`."""
    if shutil.which(client) is None:
        pytest.fail(f"{client} is missing -- {SETUP_HINT}", pytrace=False)
    out = bind_env.dir / f"{client}-active.bin"
    out.unlink(missing_ok=True)
    r = run_proxified(DANTE, _ftp_client_cmd(client, out), opts=["-v"], timeout=40)
    data = out.read_bytes() if out.exists() else b""
    assert r.rc == 0 and len(data) == bind_env.size and hashlib.sha256(data).hexdigest() == bind_env.sha256, \
        f"{client} active FTP: the file did not arrive intact ({len(data)} bytes):\n{r}"
    assert any("BIND through the proxy" in l for l in r.stderr.splitlines()), \
        f"{client} active mode must listen through a SOCKS BIND (-v shows it):\n{r}"
    assert_no_leak(capture, f"{client} active FTP")


# ---- readiness and non-blocking accept of a BIND socket -------------------------------------

READINESS_SCRIPT = PRELUDE + """
res = {}
ctl = socket.create_connection((TARGET, CALLBACK_PORT), timeout=5)
l = socket.socket()
l.bind(("0.0.0.0", 0))
if SHOWS == "asked":
    ctl.getsockname()  # what an FTP client reads for PORT, before it listens
    l.listen(8)
else:
    l.listen(1)  # one connection expected: what a BIND carries (Python's ftplib does this)
bnd = l.getsockname()
res["bnd"] = list(bnd)
l.setblocking(False)
sel = selectors.DefaultSelector()  # epoll
sel.register(l, selectors.EVENT_READ)
pl = select.poll()
pl.register(l, select.POLLIN)
res["before"] = [len(sel.select(timeout=0.2)), len(pl.poll(0)), len(select.select([l], [], [], 0)[0])]
try:
    l.accept()
    res["accept_before"] = "accepted"
except OSError as e:
    res["accept_before"] = ename(e)
token = os.urandom(8).hex()
ctl.sendall(("CALL %s %d %s\\n" % (bnd[0], bnd[1], token)).encode())
ev = sel.select(timeout=5)
res["after"] = [len(ev), len(pl.poll(0)), len(select.select([l], [], [], 0)[0])]
conn, peer = l.accept()
res["peer"] = peer[0]
res["getpeername"] = conn.getpeername()[0]
res["domains"] = [l.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN), conn.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)]
res["inheritable"] = conn.get_inheritable()
conn.settimeout(5)
got = b""
while True:
    d = conn.recv(100)
    if not d:
        break
    got += d
res["token"] = got.decode() == token
res["callback"] = ctl.makefile("rb").readline().decode().strip()
print(json.dumps(res))
"""


@pytest.mark.parametrize("shows", ["backlog1", "asked", "backlog1-ipv6-proxy"])
def test_bind_readiness_and_nonblocking_accept(topo, bind_env, capture, proxify_bin, shows):
    """Under the default `--bind auto`, a listener on an ephemeral port becomes a BIND when the
    program shows it will announce the address: a backlog of one, or getsockname() of the
    proxied connection before listen(). Through an IPv6-only proxy address, the AF_INET
    listener is replaced by an AF_INET6 socket and still answers as AF_INET (issue 17 item 1)."""
    proxy = f"socks5h://[{netns.PROXY6}]:{netns.DANTE_PORT}" if shows.endswith("ipv6-proxy") else DANTE
    code = f"TARGET = {T4!r}\nCALLBACK_PORT = {CALLBACK_PORT}\nSHOWS = {shows!r}\n" + READINESS_SCRIPT
    r = run_proxified(proxy, py(code))
    res = _json(r, "BIND readiness")
    assert res["bnd"][0] == netns.PROXY_T4 and res["bnd"][1] != 0, \
        f"getsockname of the BIND socket must be the proxy's address:\n{r}"
    assert res["before"] == [0, 0, 0], f"the listening socket was ready before any connection:\n{r}"
    assert res["accept_before"] == "EAGAIN", f"non-blocking accept with no connection must fail EAGAIN:\n{r}"
    assert res["after"] == [1, 1, 1], f"epoll/poll/select did not report the connection:\n{r}"
    assert res["peer"] == T4 and res["getpeername"] == T4, f"accepted peer must be the target:\n{r}"
    assert res["domains"] == [socket.AF_INET, socket.AF_INET], f"SO_DOMAIN must stay AF_INET:\n{r}"
    assert res["inheritable"] is False, f"accept4(SOCK_CLOEXEC) not honoured:\n{r}"
    assert res["token"] and res["callback"] == "OK", f"the call-back data did not arrive:\n{r}"
    assert not r.proxify_lines(), f"proxify printed something on a successful run:\n{r}"
    assert_no_leak(capture, "BIND readiness")


# ---- local listeners stay local ---------------------------------------------------------------

LOCAL_SCRIPT = PRELUDE + """
res = {}
if PROXIED:
    c = socket.create_connection((TARGET, 7), timeout=5)
    c.sendall(b"x")
    res["proxied"] = c.recv(1) == b"x"
fam = socket.AF_INET6 if ":" in HOST else socket.AF_INET
if HOST == "":
    l = socket.create_server(("", 0))  # bind, then listen() with Python's default backlog
else:
    l = socket.socket(fam)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((HOST, PORT))
    l.listen(4)
name = l.getsockname()
res["name"] = [name[0], name[1]]
res["ss"] = listeners(name[1])
l.settimeout(5)
cli = socket.create_connection(("::1" if fam == socket.AF_INET6 else "127.0.0.1", name[1]), timeout=5)
conn, peer = l.accept()
cli.sendall(b"ping")
conn.settimeout(5)
ping = conn.recv(4)
conn.sendall(b"pong")
res["exchange"] = [ping.decode(), cli.recv(4).decode()]
res["peer"] = peer[0]
print(json.dumps(res))
"""

# Fixed ports lie below ip_local_port_range (32768-60999 by default), so no other connection
# of the client namespace can hold them.
LOCAL_CASES = {
    "fixed-127.0.0.1": (False, "127.0.0.1", 20471),
    "fixed-0.0.0.0": (False, "0.0.0.0", 20472),
    "ephemeral-0.0.0.0": (False, "0.0.0.0", 0),
    "ephemeral-[::]": (False, "::", 0),
    "proxied-then-fixed-0.0.0.0": (True, "0.0.0.0", 20473),
    "proxied-then-ephemeral-127.0.0.1": (True, "127.0.0.1", 0),
    # Issue 17 item 3: a server on an ephemeral port after a proxied connection (an OAuth
    # callback, a test server) stays local under the default `--bind auto`.
    "proxied-then-ephemeral-0.0.0.0": (True, "0.0.0.0", 0),
    "proxied-then-ephemeral-[::]": (True, "::", 0),
    "proxied-then-create_server": (True, "", 0),
}


@pytest.mark.parametrize("case", LOCAL_CASES)
def test_local_listeners_unaffected(topo, bind_env, capture, proxify_bin, case):
    proxied, host, port = LOCAL_CASES[case]
    code = f"TARGET = {T4!r}\nPROXIED = {proxied}\nHOST = {host!r}\nPORT = {port}\n" + LOCAL_SCRIPT
    r = run_proxified(DANTE, py(code))
    res = _json(r, f"local listener {case}")
    assert res["name"][0] == (host or "0.0.0.0") and (port == 0 or res["name"][1] == port), \
        f"getsockname must be the local address, not the proxy's:\n{r}"
    assert res["ss"], f"no local listener on port {res['name'][1]} in `ss -ltn`:\n{r}"
    assert res["exchange"] == ["ping", "pong"], f"the local client was not served:\n{r}"
    assert not r.proxify_lines(), f"proxify printed something:\n{r}"
    syns = _syns_to_proxy(capture, netns.DANTE_PORT)
    assert len(syns) == (1 if proxied else 0), \
        f"expected {1 if proxied else 0} connection(s) to the proxy (no BIND):\n{capture.summary()}"
    assert_no_leak(capture, f"local listener {case}")


NODE_LISTEN_AFTER_PROXIED = r"""
const net = require('net');
const out = {};
const c = net.connect(ECHO, TARGET, () => c.write('x'));
c.setTimeout(10000, () => { console.error('timeout'); process.exit(5); });
c.on('error', e => { console.error('proxied connect: ' + e.code); process.exit(3); });
c.once('data', d => {
  out.proxied = d.toString() === 'x';
  const srv = net.createServer(s => s.on('data', m => { s.end('pong:' + m); }));
  srv.on('error', e => { console.error('listen: ' + e.code); process.exit(4); });
  srv.listen(0, () => {
    out.name = srv.address();
    const cli = net.connect(out.name.port, '127.0.0.1', () => cli.write('ping'));
    cli.on('error', e => { console.error('local connect: ' + e.code); process.exit(6); });
    cli.on('data', m => {
      out.reply = m.toString();
      console.log(JSON.stringify(out));
      cli.destroy(); c.destroy(); srv.close();
    });
  });
});
"""


def test_node_listen_after_a_proxied_connection_stays_local(topo, bind_env, capture, proxify_bin):
    """Issue 17 item 3: node's `server.listen(0)` after a proxied connection is a local server
    (a local client reaches it), not a SOCKS BIND at the proxy."""
    if shutil.which("node") is None:
        pytest.fail(f"node is missing -- {SETUP_HINT}", pytrace=False)
    code = f"const TARGET = {T4!r}, ECHO = {netns.ECHO_PORT};\n" + NODE_LISTEN_AFTER_PROXIED
    r = run_proxified(DANTE, ["node", "-e", code], opts=["-v"], timeout=30)
    res = _json(r, "node listen after a proxied connection")
    assert res["proxied"], f"the proxied connection failed:\n{r}"
    assert res["name"]["address"] in ("::", "0.0.0.0") and res["name"]["port"] != 0, \
        f"server.address() must be the local wildcard, not the proxy's:\n{r}"
    assert res["reply"] == "pong:ping", f"the local client was not served:\n{r}"
    assert any("local listener" in l for l in r.stderr.splitlines()), \
        f"-v must show the listen decision:\n{r}"
    syns = _syns_to_proxy(capture, netns.DANTE_PORT)
    assert len(syns) == 1, f"expected only the proxied connection at the proxy (no BIND):\n{capture.summary()}"
    assert_no_leak(capture, "node listen after a proxied connection")


# ---- the proxy refusing BIND ------------------------------------------------------------------

REFUSED_SCRIPT = PRELUDE + """
res = {}
if PROXIED:
    c = socket.create_connection((TARGET, 7), timeout=5)
    c.sendall(b"x")
    res["proxied"] = c.recv(1) == b"x"
l = socket.socket()
l.bind(("0.0.0.0", 0))
port = l.getsockname()[1]
res["port"] = port
try:
    l.listen(1)
    res["listen"] = "ok"
except OSError as e:
    res["listen"] = ename(e)
res["ss"] = listeners(port)
try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    res["local_connect"] = "connected"
except OSError as e:
    res["local_connect"] = ename(e)
l.settimeout(2)
try:
    l.accept()
    res["accept"] = "accepted"
except OSError as e:
    res["accept"] = ename(e)
print(json.dumps(res))
"""


@pytest.mark.parametrize("how", ["dante-rules", "fake-rep-7"])
def test_bind_refused(topo, bind_env, capture, proxify_bin, how):
    if how == "dante-rules":
        proxy, opts, proxied = f"socks5h://{P4}:{DANTE_NOBIND_PORT}", [], True
    else:
        proxy, opts, proxied = f"socks5h://{P4}:{FAKE_REFUSE_PORT}", ["--bind", "always"], False
    code = f"TARGET = {T4!r}\nPROXIED = {proxied}\n" + REFUSED_SCRIPT
    r = run_proxified(proxy, py(code), opts=opts)
    res = _json(r, f"BIND refused ({how})")
    if proxied:
        assert res["proxied"], f"the proxied connection (allowed) failed:\n{r}"
    assert res["listen"] != "ok", f"listen must fail when the proxy refuses BIND:\n{r}"
    assert res["ss"] == [], f"a local listener is exposed on port {res['port']}:\n{r}"
    assert res["local_connect"] == "ECONNREFUSED", f"something accepts locally on port {res['port']}:\n{r}"
    assert res["accept"] != "accepted", f"accept must fail:\n{r}"
    assert r.proxify_lines(), f"no 'proxify:' line explaining the refusal:\n{r}"
    assert _syns_to_proxy(capture, int(proxy.rsplit(":", 1)[1])), \
        f"BIND was never asked of the proxy:\n{capture.summary()}"
    assert_no_leak(capture, f"BIND refused ({how})")


SECOND_FAIL_SCRIPT = PRELUDE + """
res = {}
l = socket.socket()
l.bind(("0.0.0.0", 0))
l.listen(1)
res["name"] = list(l.getsockname())
l.settimeout(5)
try:
    l.accept()
    res["accept"] = "accepted"
except OSError as e:
    res["accept"] = ename(e)
print(json.dumps(res))
"""


def test_bind_second_reply_failure(topo, bind_env, capture, proxify_bin):
    r = run_proxified(f"socks5h://{P4}:{FAKE_SECOND_FAIL_PORT}", py(SECOND_FAIL_SCRIPT), opts=["--bind", "always"])
    res = _json(r, "BIND second reply failure")
    assert res["name"] == [P4, FAKE_BND_PORT], f"getsockname must report BND of the first reply:\n{r}"
    assert res["accept"] not in ("accepted", "TimeoutError"), \
        f"accept must fail with an errno when the second reply is a failure:\n{r}"
    assert r.proxify_lines(), f"no 'proxify:' line explaining the failure:\n{r}"
    assert_no_leak(capture, "BIND second reply failure")
