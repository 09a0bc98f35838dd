"""Programs judged before they run (issues 14 item 3, 17 items 2, 5 and 8): the dynamic loader
run as a program (ldd, `ld.so PROGRAM`) is judged by the program it runs; setuid programs run
by root keep LD_PRELOAD and are proxied, while another user is still refused; posix_spawn
after a chdir/fchdir file action judges the file the child will run; --allow-unproxied says
in one line when it lets an unproxied program start. Every case runs under a capture: the
static helper connects to the target directly if it is ever let through."""

import os
import shlex
import shutil
import subprocess

import pytest

import netns
from conftest import PROXIFY_BIN, curl, run_in_client, run_proxified
from hardcase import CSRC, DANTE, INSTALL_HINT, expect_ok, no_crash, proxy_syns, require_tools
from leakcheck import assert_no_leak

T4, ECHO, NAME = netns.TARGET4, netns.ECHO_PORT, netns.TARGET_NAME
URL = f"http://{NAME}/"
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]


def _cc(out, src, *flags):
    r = subprocess.run(["cc", "-O2", "-Wall", *flags, "-o", str(out), str(src)], capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(f"cc could not build {src}:\n{r.stderr}\n(static programs need glibc's libc.a -- "
                    f"{INSTALL_HINT})", pytrace=False)


@pytest.fixture(scope="module")
def bins(topo):
    """The helpers, and two directories each holding a `prog`: static (connects to the target
    directly when run) and dynamic (/bin/echo)."""
    require_tools("cc", "setpriv", "ldd", "readelf", "su")
    d = topo.run_dir / "exec-bin"
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o755)
    spawn, static = d / "exec_spawn", d / "static_connect"
    if not spawn.exists():
        _cc(spawn, CSRC / "exec_spawn.c")
    if not static.exists():
        _cc(static, CSRC / "static_connect.c", "-static")
    for sub, src in (("static-dir", static), ("dynamic-dir", "/bin/echo")):
        (d / sub).mkdir(exist_ok=True)
        os.chmod(d / sub, 0o755)
        if not (d / sub / "prog").exists():
            shutil.copy(src, d / sub / "prog")
    suid = d / "suid-curl"
    if not suid.exists():
        shutil.copy(shutil.which("curl"), suid)
        os.chown(suid, 0, 0)
        os.chmod(suid, 0o4755)
    return {"dir": d, "spawn": spawn, "static": static, "suid_curl": suid,
            "static_dir": d / "static-dir", "dynamic_dir": d / "dynamic-dir"}


def _loader():
    out = subprocess.run(["readelf", "-l", "/bin/true"], capture_output=True, text=True).stdout
    key = "[Requesting program interpreter: "
    assert key in out, f"/bin/true has no interpreter?\n{out}"
    return out.split(key, 1)[1].split("]", 1)[0]


def _no_direct(capture, what):
    assert not capture.sent_to(T4), f"{what}: packets went to the target directly:\n{capture.summary()}"
    assert_no_leak(capture, what)


def _proxied(r, capture, what, topo):
    expect_ok(r, what)
    assert topo.token in r.stdout, f"{what}: the page did not come through\n{r}"
    assert proxy_syns(capture), f"{what}: nothing went to the proxy:\n{capture.summary()}"
    _no_direct(capture, what)


def test_ldd_lists_the_libraries(topo, capture, proxify_bin):
    """ldd runs the loader with --verify, then with LD_TRACE_LOADED_OBJECTS: it said "not a
    dynamic executable" under proxify, as the loader was refused as static."""
    r = run_proxified(DANTE, ["ldd", "/bin/ls"])
    expect_ok(r, "ldd /bin/ls")
    assert "libc.so.6" in r.stdout, f"ldd did not list libc\n{r}"
    assert "libproxify.so" in r.stdout, f"ldd did not list the shim\n{r}"
    assert "not a dynamic executable" not in r.stdout + r.stderr, str(r)
    _no_direct(capture, "ldd")


def test_the_loader_runs_a_proxied_program(topo, capture, proxify_bin, bins):
    ld = _loader()
    r = run_proxified(DANTE, [ld, "/usr/bin/curl", *curl(URL)[1:]])
    _proxied(r, capture, "ld.so curl", topo)
    # From inside a proxied shell too.
    r = run_proxified(DANTE, ["sh", "-c", shlex.join([ld, "--argv0", "curl", "/usr/bin/curl", *curl(URL)[1:]])])
    _proxied(r, capture, "sh -c 'ld.so curl'", topo)


def test_the_loader_running_a_static_program_is_refused(topo, capture, proxify_bin, bins):
    ld, st = _loader(), str(bins["static"])
    # Preload mode: the default (auto) would supervise the static program instead.
    r = run_proxified(DANTE, [ld, st, T4, ECHO], opts=["--mode", "preload"])
    no_crash(r, "ld.so static")
    assert r.rc == 2, f"proxify run should refuse it\n{r}"
    assert f"the program the dynamic loader runs, {st}, is statically linked" in r.stderr, str(r)
    assert "connected" not in r.stdout, str(r)
    r = run_proxified(DANTE, ["sh", "-c", f"{shlex.join([ld, st, T4, str(ECHO)])}; echo rc=$?"])
    no_crash(r, "sh -c 'ld.so static'")
    assert r.stdout.strip() == "rc=126", f"the shell's exec should fail with EPERM\n{r}"
    assert "proxify: refusing to run" in r.stderr, str(r)
    _no_direct(capture, "ld.so static")


def test_setuid_programs_run_by_root_are_proxied(topo, capture, proxify_bin, bins):
    """Root keeps LD_PRELOAD in setuid-root programs (no secure-execution mode): su, and a
    setuid-root copy of curl, run proxied instead of being refused."""
    assert os.geteuid() == 0
    r = run_proxified(DANTE, ["su", "root", "-c", shlex.join(curl(URL))])
    _proxied(r, capture, "su root -c curl", topo)
    r = run_proxified(DANTE, [bins["suid_curl"], *curl(URL)[1:]])
    _proxied(r, capture, "setuid-root curl run by root", topo)


def test_setuid_programs_run_by_another_user_are_refused(topo, capture, proxify_bin, bins):
    """For uid 65534 exec would switch to uid 0 and the loader would drop LD_PRELOAD."""
    suid = str(bins["suid_curl"])
    env = {"HOME": str(bins["dir"]), "XDG_CONFIG_HOME": str(bins["dir"] / "no-config")}
    argv = [*AS_NOBODY, str(PROXIFY_BIN), "run", "-x", DANTE, "--", suid, *curl(URL)[1:]]
    r = run_in_client(argv, env=env)
    no_crash(r, "setuid curl as nobody")
    assert r.rc == 2, f"proxify run should refuse it\n{r}"
    assert "it is setuid (to uid 0; this user is uid 65534)" in r.stderr, str(r)
    assert topo.token not in r.stdout
    # The same from a proxied shell of that user: the exec fails with EPERM.
    argv = [*AS_NOBODY, str(PROXIFY_BIN), "run", "-x", DANTE, "--", "sh", "-c",
            f"{shlex.join([suid, *curl(URL)[1:]])}; echo rc=$?"]
    r = run_in_client(argv, env=env)
    no_crash(r, "sh -c setuid curl as nobody")
    assert r.stdout.strip().endswith("rc=126"), f"the exec should fail with EPERM\n{r}"
    assert "proxify: refusing to run" in r.stderr, str(r)
    _no_direct(capture, "setuid curl as nobody")


@pytest.mark.parametrize("mode", ["chdir", "fchdir", "open-fchdir", "spawnp-chdir"])
def test_posix_spawn_after_a_directory_action(topo, capture, proxify_bin, bins, mode):
    """The child chdirs to a directory holding a static `prog` and execs `./prog` (or `prog`
    through PATH=.): it ran unproxied, as the check looked for ./prog where the caller was."""
    prog = "prog" if mode == "spawnp-chdir" else "./prog"
    r = run_proxified(DANTE, [bins["spawn"], mode, bins["static_dir"], prog, T4, ECHO])
    no_crash(r, mode)
    assert "connected" not in r.stdout, f"{mode}: the static program ran and connected\n{r}"
    assert r.stdout.strip() == "spawn: Operation not permitted" and r.rc == 3, f"{mode}\n{r}"
    assert any("refusing to run" in ln and "statically linked" in ln for ln in r.proxify_lines()), str(r)
    _no_direct(capture, mode)


def test_posix_spawn_after_a_directory_action_judges_the_childs_file(topo, capture, proxify_bin, bins):
    """The caller's directory holds a static ./prog, the child's a dynamic one: it runs."""
    spawn = shlex.join([str(bins["spawn"]), "chdir", str(bins["dynamic_dir"]), "./prog", "dynamic ran"])
    r = run_proxified(DANTE, ["sh", "-c", f"cd {shlex.quote(str(bins['static_dir']))} && exec {spawn}"])
    expect_ok(r, "chdir to the dynamic prog")
    assert r.stdout.strip() == "dynamic ran", str(r)
    # The control: no directory action, the full path.
    r = run_proxified(DANTE, [bins["spawn"], "none", bins["static_dir"], "prog", T4, ECHO])
    assert r.stdout.strip() == "spawn: Operation not permitted", str(r)
    _no_direct(capture, "posix_spawn control")


def test_allow_unproxied_says_so_in_one_line(topo, capture, proxify_bin, bins):
    st = str(bins["static"])
    # Preload mode: the default (auto) would supervise the static program instead.
    r = run_proxified(DANTE, [st], opts=["--mode", "preload", "--allow-unproxied"])
    no_crash(r, "--allow-unproxied static")
    assert r.rc == 0 and r.stdout.strip() == "static program ran", str(r)
    lines = r.proxify_lines()
    assert len(lines) == 1, f"want one line\n{r}"
    assert lines[0].startswith(f"proxify: running {st} without the proxy (--allow-unproxied): "
                               "it is statically linked"), str(r)
    r = run_proxified(DANTE, [st], opts=["--mode", "preload", "--allow-unproxied", "-q"])
    assert r.rc == 0 and not r.proxify_lines() and r.stderr == "", str(r)
    # Started by the command itself: the shim's line, one for each start.
    r = run_proxified(DANTE, ["sh", "-c", f"{shlex.quote(st)}; {shlex.quote(st)}"], opts=["--allow-unproxied"])
    assert r.rc == 0 and r.stdout.splitlines() == ["static program ran"] * 2, str(r)
    lines = r.proxify_lines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"proxify: running {st} without the proxy "
                                                   "(--allow-unproxied): it is statically linked"), str(r)
    r = run_proxified(DANTE, ["sh", "-c", shlex.quote(st)], opts=["--allow-unproxied", "-q"])
    assert r.rc == 0 and r.stderr == "", str(r)
    # Programs the shim reaches print nothing.
    r = run_proxified(DANTE, ["sh", "-c", "true"], opts=["--allow-unproxied"])
    expect_ok(r, "--allow-unproxied true")
    # --help says so.
    h = subprocess.run([str(PROXIFY_BIN), "run", "--help"], capture_output=True, text=True)
    assert "one line" in h.stdout and "-q" in h.stdout, h.stdout
    _no_direct(capture, "--allow-unproxied")


def test_a_refused_static_program_is_told_the_way_and_the_cost(topo, capture, proxify_bin, bins):
    """Issue 16: the refusal names the way to proxify it (the supervisor), the flag that runs
    it anyway and what that costs; the way it names works."""
    st = str(bins["static"])
    cmd = ["sh", "-c", f"{shlex.join([st, T4, str(ECHO)])}; echo rc=$?"]
    r = run_proxified(DANTE, cmd)
    no_crash(r, "sh -c static")
    assert r.stdout.strip() == "rc=126", f"the shell's exec should fail with EPERM\n{r}"
    lines = r.proxify_lines()
    assert len(lines) == 1 and lines[0].startswith(f"proxify: refusing to run {st}: it is statically linked"), str(r)
    assert "run the whole command with proxify run --mode supervise to proxify it" in lines[0], str(r)
    assert ("--allow-unproxied to run it anyway: its connections and name look-ups then go directly, "
            "not through the proxy") in lines[0], str(r)
    # The way it names: the whole command supervised, the static program's connect proxied.
    r = run_proxified(DANTE, cmd, opts=["--mode", "supervise"])
    no_crash(r, "--mode supervise sh -c static")
    assert r.stdout.split() == ["connected", "rc=0"], f"the static program should connect through the proxy\n{r}"
    assert proxy_syns(capture), f"nothing went to the proxy:\n{capture.summary()}"
    _no_direct(capture, "sh -c static, refused then supervised")
