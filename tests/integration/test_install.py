"""proxify installed like a real tool (issue 16): scripts/install.sh into a prefix and the .deb
(scripts/deb.sh, dpkg -i / -r), both used from PATH in the client namespace through the proxy;
the proxychains-ng drop-in (`proxychains4` → proxify) with proxychains-ng's own command lines;
`proxify shell` and `eval "$(proxify env ...)"`. Captures on: nothing may leave but to the proxy.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import netns
from conftest import PROXIFY_BIN, TIMEOUT_ENV, curl, run_in_client
from leakcheck import assert_no_leak

REPO = netns.REPO
URLNAME = f"http://{netns.TARGET_NAME}/"
PROXY = f"socks5h://{netns.PROXY4}:{netns.DANTE_PORT}"
TARGET_DIR = PROXIFY_BIN.parent.parent


def _install(*args):
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
    return subprocess.run(["bash", str(REPO / "scripts" / "install.sh"), "--no-build", *args],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def prefix(topo):
    """proxify installed (with the proxychains alias) into a fresh prefix, removed after."""
    p = topo.run_dir / "install-prefix"
    shutil.rmtree(p, ignore_errors=True)
    r = _install("--prefix", str(p), "--proxychains-alias")
    assert r.returncode == 0, r.stderr
    yield p
    _install("--prefix", str(p), "--uninstall")
    shutil.rmtree(p, ignore_errors=True)


def _path_env(prefix, extra=None):
    env = dict(TIMEOUT_ENV)
    env["PATH"] = f"{prefix}/bin:/usr/local/bin:/usr/bin:/bin"
    env.update(extra or {})
    return env


def _sh(script):
    return ["sh", "-c", script]


def _ok(topo, r, what):
    assert r.rc == 0, f"{what}\n{r}"
    assert topo.token in r.stdout, f"{what}: no page\n{r}"


def test_installed_layout_and_proxied_curl_from_path(topo, capture, prefix):
    for rel in ["bin/proxify", "lib/proxify/libproxify.so", "share/man/man1/proxify.1",
                "share/bash-completion/completions/proxify", "share/zsh/site-functions/_proxify",
                "share/fish/vendor_completions.d/proxify.fish", "etc/proxify/config.toml"]:
        assert (prefix / rel).is_file(), rel
    assert os.readlink(prefix / "bin/proxychains4") == "proxify"
    # The installed command finds the installed shim (not the build tree's).
    r = run_in_client(_sh("proxify run -x " + PROXY + " -- sh -c 'echo $LD_PRELOAD'"),
                      env=_path_env(prefix))
    assert r.rc == 0, r
    assert r.stdout.strip() == str(prefix / "lib/proxify/libproxify.so"), r
    r = run_in_client(_sh(f"proxify run -x {PROXY} -- " + " ".join(curl(URLNAME))), env=_path_env(prefix))
    _ok(topo, r, "installed proxify from PATH")
    # The example configuration changes nothing: it is all comments.
    r = run_in_client(["proxify", "config", "-f", str(prefix / "etc/proxify/config.toml"), "-x", PROXY],
                      env=_path_env(prefix))
    assert r.rc == 0, r
    assert_no_leak(capture)


def _proxychains_conf(topo):
    conf = topo.run_dir / "install-proxychains.conf"
    conf.write_text("strict_chain\nproxy_dns\nquiet_mode\n[ProxyList]\n"
                    f"socks5 {netns.PROXY4} {netns.DANTE_PORT}\n")
    return conf


# Command lines as proxychains-ng's README and usage text write them.
PROXYCHAINS_LINES = {
    "f-conf": "proxychains4 -f {conf} " + " ".join(curl(URLNAME)),
    "q-f-conf": "proxychains4 -q -f {conf} " + " ".join(curl(URLNAME)),
    "f-conf-q": "proxychains4 -f {conf} -q " + " ".join(curl(URLNAME)),
    "conf-env": "PROXYCHAINS_CONF_FILE={conf} proxychains4 " + " ".join(curl(URLNAME)),
    "quiet-env": "PROXYCHAINS_QUIET_MODE=1 PROXYCHAINS_CONF_FILE={conf} proxychains " + " ".join(curl(URLNAME)),
    "wrapped-shell": "proxychains4 -q -f {conf} sh -c '" + " ".join(curl(URLNAME)) + "'",
}


@pytest.mark.parametrize("line", PROXYCHAINS_LINES)
def test_proxychains_alias_command_lines(topo, capture, prefix, line):
    conf = _proxychains_conf(topo)
    r = run_in_client(_sh(PROXYCHAINS_LINES[line].format(conf=conf)), env=_path_env(prefix))
    _ok(topo, r, f"proxychains4 alias: {line}")
    assert not r.stderr.strip(), f"quiet mode printed something\n{r}"
    assert_no_leak(capture)


def test_proxychains_alias_usage_and_fail_closed(topo, capture, prefix):
    r = run_in_client(["proxychains4"], env=_path_env(prefix))
    assert r.rc == 1 and "Usage:" in r.stderr, r
    # A dead proxy from the conf: the command fails, nothing goes direct.
    conf = topo.run_dir / "install-dead.conf"
    conf.write_text(f"strict_chain\nproxy_dns\n[ProxyList]\nsocks5 {netns.PROXY4} {netns.DOWN_PORT}\n")
    r = run_in_client(_sh(f"proxychains4 -q -f {conf} " + " ".join(curl(URLNAME))), env=_path_env(prefix))
    assert r.rc != 0 and topo.token not in r.stdout, r
    assert_no_leak(capture)


def test_proxify_shell_proxies_every_command(topo, capture, prefix):
    script = " ".join(curl(URLNAME)) + "\necho marker:$PROXIFY_SHELL\nexit 7\n"
    for shell in ("/bin/bash", "/bin/sh"):
        r = run_in_client(["proxify", "shell", "-x", PROXY], env=_path_env(prefix, {"SHELL": shell}),
                          input=script)
        assert r.rc == 7, f"{shell}: exit status\n{r}"
        assert topo.token in r.stdout and "marker:1" in r.stdout, f"{shell}\n{r}"
    # bash shows the marker in its prompt (interactive: the prompt goes to stderr).
    r = run_in_client(["proxify", "shell", "-x", PROXY], env=_path_env(prefix, {"SHELL": "/bin/bash"}),
                      input="exit 0\n")
    assert "(proxify) " in r.stderr, r
    assert_no_leak(capture)


def test_proxify_env_on_and_off(topo, capture, prefix):
    script = (f'eval "$(proxify env -x {PROXY})"; ' + " ".join(curl(URLNAME)) + "; "
              'eval "$(proxify env --off)"; echo "after:${LD_PRELOAD:-none}:${PROXIFY_PROXY:-none}"')
    r = run_in_client(_sh(script), env=_path_env(prefix))
    assert r.rc == 0, r
    assert topo.token in r.stdout, r
    assert "after:none:none" in r.stdout, r
    # Off again: the next command goes direct, which the client host cannot do.
    script = (f'eval "$(proxify env -x {PROXY})"; eval "$(proxify env --off)"; '
              + " ".join(curl(URLNAME)))
    r = run_in_client(_sh(script), env=_path_env(prefix))
    assert r.rc != 0 and topo.token not in r.stdout, r


def test_uninstall_removes_exactly_what_was_installed(tmp_path):
    p = tmp_path / "prefix"
    (p / "share/man").mkdir(parents=True)
    (p / "bin").mkdir()
    (p / "bin/mine").write_text("keep me\n")
    assert _install("--prefix", str(p), "--proxychains-alias").returncode == 0
    edited = p / "etc/proxify/config.toml"
    edited.write_text(edited.read_text() + "# changed by the user\n")
    r = _install("--prefix", str(p), "--uninstall")
    assert r.returncode == 0, r.stderr
    left = sorted(str(f.relative_to(p)) for f in p.rglob("*"))
    # What was there before stays; the changed example stays; everything else is gone.
    assert left == ["bin", "bin/mine", "etc", "etc/proxify", "etc/proxify/config.toml", "share",
                    "share/man"], left
    # A second install keeps the user's config file.
    assert _install("--prefix", str(p)).returncode == 0
    assert "changed by the user" in edited.read_text()


def test_deb_installs_and_removes(topo, capture):
    if Path("/usr/bin/proxify").exists() or Path("/usr/lib/proxify").exists():
        pytest.fail("/usr/bin/proxify or /usr/lib/proxify exists already: remove it (dpkg -r proxify)",
                    pytrace=False)
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
    b = subprocess.run(["bash", str(REPO / "scripts/deb.sh"), "--no-build"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert b.returncode == 0, b.stderr
    deb = b.stdout.strip().splitlines()[-1]
    assert deb.endswith(".deb") and Path(deb).is_file(), b.stdout
    info = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    for f in ["./usr/bin/proxify", "./usr/lib/proxify/libproxify.so",
              "./usr/share/man/man1/proxify.1.gz", "./etc/proxify/config.toml"]:
        assert f in info, info
    conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True)
    assert "/etc/proxify/config.toml" in conffiles.stdout, conffiles
    subprocess.run(["dpkg", "-i", "--force-confold", deb], check=True, capture_output=True, timeout=120)
    try:
        r = run_in_client(_sh(f"proxify run -x {PROXY} -- " + " ".join(curl(URLNAME))),
                          env=dict(TIMEOUT_ENV, PATH="/usr/bin:/bin"))
        _ok(topo, r, "proxify from the .deb")
        assert_no_leak(capture)
    finally:
        subprocess.run(["dpkg", "--purge", "proxify"], check=True, capture_output=True, timeout=120)
    assert not Path("/usr/bin/proxify").exists()
    assert not Path("/etc/proxify/config.toml").exists()
