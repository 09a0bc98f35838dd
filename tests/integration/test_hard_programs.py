"""Real programs through Dante (issue 5): curl, wget, git (git:// from a git daemon on the
target host), python3 (urllib, asyncio, threads, fork), ssh to an sshd on the target host
(key auth made by the test), nc, socat and Node.js. Each must work through Dante with no leak,
and each must fail cleanly, with no leak, when the proxy is down."""

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

import netns
from conftest import curl, py, run_proxified, urllib_get
from hardcase import (DANTE, INSTALL_HINT, PROXY_DOWN, Server, expect_fail_closed, expect_ok, proxy_syns,
                      require_tools, start_or_fail)
from leakcheck import assert_no_leak

NAME, T4, T6, ECHO = netns.TARGET_NAME, netns.TARGET4, netns.TARGET6, netns.ECHO_PORT
URLNAME = f"http://{NAME}/"
GIT_PORT, SSH_PORT = 9418, 22

ASYNCIO = f"""
import asyncio
async def main():
    r, w = await asyncio.wait_for(asyncio.open_connection({NAME!r}, {ECHO}), 5)
    w.write(b"asyncio-echo-ok\\n")
    await w.drain()
    line = await asyncio.wait_for(r.readline(), 5)
    print(line.decode().strip())
    w.close()
    await w.wait_closed()
asyncio.run(main())
"""

THREADS = f"""
import sys, threading, urllib.request
out = [None] * 8
def get(i):
    try:
        out[i] = urllib.request.urlopen({URLNAME!r}, timeout=5).read().decode().strip()
    except Exception as e:
        print("thread", i, "error:", e, file=sys.stderr)
ts = [threading.Thread(target=get, args=(i,)) for i in range(8)]
[t.start() for t in ts]
[t.join(20) for t in ts]
ok = [x for x in out if x]
print(ok[0] if ok and len(set(ok)) == 1 and len(ok) == 8 else "threads: %d of 8" % len(ok))
sys.exit(0 if len(ok) == 8 else 1)
"""

FORK = f"""
import os, sys, urllib.request
pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        try:
            page = urllib.request.urlopen({URLNAME!r}, timeout=5).read().decode().strip()
            print(page, flush=True)
            os._exit(0)
        except Exception as e:
            print("child", i, "error:", e, file=sys.stderr, flush=True)
            os._exit(1)
    pids.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
sys.exit(0 if codes == [0] * 4 else 1)
"""

NODE = ("const r=require('http').get(%r,res=>{let b='';res.on('data',d=>b+=d);"
        "res.on('end',()=>{console.log(b.trim());process.exit(res.statusCode===200?0:4)})});"
        "r.setTimeout(5000,()=>{console.error('node: timeout');process.exit(5)});"
        "r.on('error',e=>{console.error('node error: '+(e.code||e.message));process.exit(3)});" % URLNAME)


def _ssh_cmd(key):
    return ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", "-p", str(SSH_PORT), f"root@{NAME}", "echo", "hi"]


def _git_cmd(dest):
    return ["sh", "-c", f'git clone -q git://{NAME}/repo "$1" && cat "$1/README"', "sh", str(dest)]


GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0"}


def elf_interpreter(path):
    """The PT_INTERP of an ELF64 file, or None (static, or not ELF64)."""
    data = Path(path).read_bytes()[:1 << 20]
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    e = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(e + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(e + "HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from(e + "I", data, off)
        if p_type == 3:
            p_offset, = struct.unpack_from(e + "Q", data, off + 8)
            p_filesz, = struct.unpack_from(e + "Q", data, off + 32)
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    return None


# ---- servers on the target host ----------------------------------------------------------
def _start_sshd(topo):
    d = topo.run_dir / "hard-sshd"
    d.mkdir()
    for key in ("hostkey", "clientkey"):
        netns.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "proxify-hard", "-f", str(d / key))
    (d / "authorized_keys").write_text((d / "clientkey.pub").read_text())
    (d / "sshd_config").write_text(
        f"Port {SSH_PORT}\nListenAddress {T4}\nListenAddress {T6}\nHostKey {d / 'hostkey'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitTTY no\n"
        "X11Forwarding no\nUseDNS no\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    s = Server(topo, netns.NS_TARGET, ["/usr/sbin/sshd", "-D", "-e", "-f", d / "sshd_config"], "hard-sshd-target",
               tcp=(T4, SSH_PORT))
    s.key = d / "clientkey"
    return s


def _start_git_daemon(topo):
    base = topo.run_dir / "hard-git"
    work = base / "work"
    work.mkdir(parents=True)
    (work / "README").write_text(topo.token + "\n")
    g = ["git", "-c", "init.defaultBranch=main", "-c", "user.name=proxify", "-c", "user.email=t@example.com"]
    for argv in (g + ["init", "-q", str(work)], g + ["-C", str(work), "add", "README"],
                 g + ["-C", str(work), "commit", "-q", "-m", "token"],
                 g + ["clone", "-q", "--bare", str(work), str(base / "repo.git")]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env={**netns._clean_env(), **GIT_ENV})
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr}")
    return Server(topo, netns.NS_TARGET,
                  ["git", "daemon", "--export-all", f"--base-path={base}", f"--listen={T4}", f"--listen={T6}",
                   f"--port={GIT_PORT}", "--reuseaddr", "--verbose"], "hard-git-daemon", tcp=(T4, GIT_PORT))


@pytest.fixture(scope="module")
def target_servers(topo):
    require_tools("ssh", "ssh-keygen", "git", "wget", "nc", "socat", "node")
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail(f"/usr/sbin/sshd not found (openssh-server) -- {INSTALL_HINT}", pytrace=False)
    started = {}
    try:
        started["sshd"] = start_or_fail(lambda: _start_sshd(topo), "sshd on the target host")
        started["git"] = start_or_fail(lambda: _start_git_daemon(topo), "git daemon on the target host")
        yield started
    finally:
        for s in started.values():
            s.stop()


def _programs(topo, servers, tmp):
    """name -> (argv, env, text the output must contain)."""
    tok, hi = topo.token, "hi"
    return {
        "curl": (curl(URLNAME), None, tok),
        "wget": (["wget", "-q", "-O", "-", "-T", "5", "-t", "1", URLNAME], None, tok),
        "git": (_git_cmd(tmp / "clone"), GIT_ENV, tok),
        "python-urllib": (urllib_get(URLNAME), None, tok),
        "python-asyncio": (py(ASYNCIO), None, "asyncio-echo-ok"),
        "python-threads": (py(THREADS), None, tok),
        "python-fork": (py(FORK), None, tok),
        "ssh": (_ssh_cmd(servers["sshd"].key), None, hi),
        "nc": (["sh", "-c", f"echo hi | nc -q1 {T4} {ECHO}"], None, hi),
        "socat": (["sh", "-c", f"echo hi | socat - TCP:{T4}:{ECHO}"], None, hi),
        "node": (["node", "-e", NODE], None, tok),
    }


PROGRAMS = ["curl", "wget", "git", "python-urllib", "python-asyncio", "python-threads", "python-fork",
            "ssh", "nc", "socat", "node"]


def _node_is_dynamic():
    node = shutil.which("node")
    return node is not None and elf_interpreter(Path(node).resolve()) is not None


@pytest.mark.parametrize("prog", PROGRAMS)
def test_program_through_dante(topo, capture, proxify_bin, target_servers, tmp_path, prog):
    argv, env, want = _programs(topo, target_servers, tmp_path)[prog]
    r = run_proxified(DANTE, argv, env=env)
    if prog == "node" and not _node_is_dynamic():
        # A static node would bypass the shim: proxify run must refuse it (exit 2, one line).
        assert r.rc == 2 and len(r.proxify_lines()) == 1, f"static node must be refused\n{r}"
        assert_no_leak(capture, prog)
        return
    expect_ok(r, f"{prog} through Dante")
    lines = r.stdout.strip().splitlines()
    assert lines and all(ln == want for ln in lines), f"{prog}: expected only {want!r} on stdout\n{r}"
    assert proxy_syns(capture), f"{prog}: nothing went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, prog)


@pytest.mark.parametrize("prog", PROGRAMS)
def test_program_proxy_down(topo, capture, proxify_bin, target_servers, tmp_path, prog):
    argv, env, want = _programs(topo, target_servers, tmp_path)[prog]
    r = run_proxified(PROXY_DOWN, argv, env=env)
    what = f"{prog} with the proxy down"
    if prog == "node" and not _node_is_dynamic():
        assert r.rc == 2 and len(r.proxify_lines()) == 1, f"static node must be refused\n{r}"
    else:
        expect_fail_closed(r, what, must_not_contain=(want,))
        assert all("Connection refused" in ln or "ECONNREFUSED" in ln for ln in r.proxify_lines()), \
            f"{what}: the proxify line should say the proxy refused the connection\n{r}"
    assert proxy_syns(capture, netns.DOWN_PORT), f"{what}: the proxy was never tried\n{capture.summary()}"
    assert_no_leak(capture, what)

