"""Issue 14 item 7: a proxied program cannot send its children direct by changing proxify's
settings in their environment. Every program `proxify run` starts keeps the settings it started
with: an exec (execve, posix_spawn, system, subprocess) whose environment changes or adds a
`PROXIFY_*` variable that decides where connections go is refused (EPERM) with one line naming
the variable. Variables that only change what proxify says (PROXIFY_LOG) may change. Each case
runs with a capture: a child that went direct would show a SYN to the target."""

import json

import pytest

import netns
from conftest import py, run_proxified
from hardcase import DANTE, no_crash
from leakcheck import assert_no_leak

URL = f"http://{netns.TARGET4}/"

# Starts curl for URL with the environment changed as MODE says; prints one JSON line with
# what happened to the child.
SCRIPT = r"""
import json, os, shutil, subprocess, sys
mode, name, value, url = sys.argv[1:5]
curl = shutil.which("curl")
argv = [curl, "-sS", "--max-time", "5", url]
env = dict(os.environ)
env[name] = value
res = {}
def wait(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
try:
    if mode == "subprocess":
        os.environ[name] = value
        r = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=20)
        res = {"rc": r.returncode, "out": r.stdout}
    elif mode == "execve":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(w, 1)
            try:
                os.execve(curl, argv, env)
            except OSError as e:
                os.write(2, ("execve: %s\n" % e.strerror).encode())
                os._exit(126 if e.errno == 1 else 127)
        os.close(w)
        out = os.read(r, 4096).decode()
        res = {"rc": wait(pid), "out": out}
    elif mode == "posix_spawn":
        pid = os.posix_spawn(curl, argv, env)
        res = {"rc": wait(pid), "out": ""}
    elif mode == "system":
        os.environ[name] = value
        rc = os.system(" ".join(argv) + " > /dev/null")
        res = {"rc": rc, "out": ""}
except PermissionError as e:
    res = {"refused": "EPERM", "msg": str(e)}
print(json.dumps(res))
"""

MODES = ["subprocess", "execve", "posix_spawn", "system"]
CHANGES = {
    # added: every connection to 0.0.0.0/0 direct
    "add-PROXIFY_DIRECT": ("PROXIFY_DIRECT", "0.0.0.0/0"),
    # changed: another proxy
    "change-PROXIFY_PROXY": ("PROXIFY_PROXY", f"socks5h://{netns.PROXY4}:{netns.DOWN_PORT}"),
}


def _result(r, what):
    no_crash(r, what)
    lines = r.stdout.strip().splitlines()
    assert r.rc == 0 and lines, f"{what}: the script did not run to its end\n{r}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("mode", MODES)
def test_changed_setting_is_refused(topo, capture, proxify_bin, mode, change):
    name, value = CHANGES[change]
    what = f"{mode} with {name}={value}"
    r = run_proxified(DANTE, py(SCRIPT) + [mode, name, value, URL])
    res = _result(r, what)
    assert topo.token not in res.get("out", ""), f"{what}: the child fetched the page anyway\n{r}"
    refused = res.get("refused") == "EPERM" or res.get("rc") not in (0, None)
    # subprocess reports the child's failed exec as PermissionError (the refusal's EPERM).
    assert refused, f"{what}: the child was not refused\n{r}"
    lines = [ln for ln in r.proxify_lines() if "changes " + name in ln]
    assert len(lines) == 1 and "refusing to run" in lines[0], \
        f"{what}: expected one line naming {name}\n{r}"
    assert_no_leak(capture, what)


def test_log_level_may_change(topo, capture, proxify_bin):
    """PROXIFY_LOG only changes what proxify says: the child runs, through the proxy."""
    what = "subprocess with PROXIFY_LOG=info"
    r = run_proxified(DANTE, py(SCRIPT) + ["subprocess", "PROXIFY_LOG", "info", URL])
    res = _result(r, what)
    assert res.get("rc") == 0 and res.get("out", "").strip() == topo.token, f"{what}: the child failed\n{r}"
    assert not r.proxify_lines(), f"{what}: proxify refused or complained\n{r}"
    assert capture.sent_to(netns.PROXY4, proto=6, dport=netns.DANTE_PORT), f"{what}: not through the proxy"
    assert_no_leak(capture, what)
