"""Issue 17 item 6: a default config path that cannot be read is skipped, not fatal. As a user
whose $HOME cannot be entered (here: the unprivileged test user with HOME=/root, mode 0700),
`proxify run -x URL -- cmd` ran into "cannot read /root/.config/proxify/config.toml:
Permission denied" although the file does not exist and -x was given. Now it is skipped with a
debug line (-vv); a file named with -f that cannot be read stays an error (exit 2, one line).

No network is used: the command is `true`, which connects nowhere."""

import os
import shutil
import subprocess

import pytest

import netns
from conftest import PROXIFY_BIN

PROXY = "socks5h://192.0.2.1:1080"
DEFAULT = "/root/.config/proxify/config.toml"


def as_user(args):
    runuser = shutil.which("runuser")
    if not runuser:
        pytest.fail("runuser (util-linux) not found -- install with: scripts/setup.sh", pytrace=False)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PROXIFY_") and k not in ("XDG_CONFIG_HOME", "LD_PRELOAD")}
    # runuser sets HOME to the user's own: env sets it back to the one the user cannot enter.
    return subprocess.run([runuser, "-u", netns.TEST_USER, "--", "env", "HOME=/root",
                           str(PROXIFY_BIN), *args],
                          env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=30)


@pytest.fixture(scope="module")
def user(topo):
    # The topology creates the unprivileged test user; /root must be closed to it.
    assert os.stat("/root").st_mode & 0o005 == 0, "/root is readable by others: the test proves nothing"
    r = as_user(["--version"])
    assert r.returncode == 0, f"the test user cannot run {PROXIFY_BIN}: {r.stderr}"
    return netns.TEST_USER


def test_unreadable_default_path_is_skipped(user, proxify_bin):
    r = as_user(["run", "-x", PROXY, "--", "true"])
    assert r.returncode == 0 and r.stderr == "", f"exit {r.returncode}, stderr {r.stderr!r}"
    r = as_user(["config", "-x", PROXY])
    assert r.returncode == 0 and r.stderr == "", f"exit {r.returncode}, stderr {r.stderr!r}"
    assert DEFAULT in r.stdout, f"proxify config should list the place it looked at:\n{r.stdout}"


def test_unreadable_default_path_says_so_at_debug(user, proxify_bin):
    r = as_user(["run", "-vv", "-x", PROXY, "--", "true"])
    assert r.returncode == 0, f"exit {r.returncode}, stderr {r.stderr!r}"
    want = f"proxify: debug: skipping the default config {DEFAULT}: Permission denied"
    assert want in r.stderr.splitlines(), r.stderr


def test_unreadable_explicit_file_is_an_error(user, proxify_bin):
    r = as_user(["run", "-f", "/root/proxify.toml", "-x", PROXY, "--", "true"])
    assert r.returncode == 2, f"exit {r.returncode}, stderr {r.stderr!r}"
    assert r.stderr == "proxify: cannot read /root/proxify.toml: Permission denied\n", repr(r.stderr)
    assert r.stdout == ""
