"""Fork and signals never crash or hang a proxified program (issue 14 items 1 and 2).
The C helper is csrc/failclosed.c.

- forklog: two threads connect to a denied destination in a loop (a warning line each, or a
  debug line per call at -vv) while the main thread forks 200 times; each child logs at once
  and exits. A child that does not exit within 5 s is a hang (the logger's lock inherited
  held). 0 hangs at default verbosity, -q and -vv.
- storm: SIGALRM every 300 us and SIGUSR1 from another thread while the main thread runs one
  hook family in a loop (blocking connect, getaddrinfo, poll/epoll on a handshaking fd,
  SO_ERROR, close of a handshaking fd from the handler); every handler creates a socket,
  connects it (proxied) and closes it. 0 crashes (signal, abort, panic line) in 10 runs each."""

import pytest

import netns
from conftest import run_proxified
from hardcase import DANTE, build_c, kv, no_crash
from leakcheck import assert_no_leak

T4 = netns.TARGET4
DENIED = "192.0.2.99"
VERBOSITY = {"default": [], "-q": ["-q"], "-vv": ["-vv"]}


@pytest.fixture(scope="module")
def fc_bin(topo):
    return build_c(topo, "failclosed")


@pytest.mark.parametrize("verbosity", VERBOSITY)
def test_fork_while_logging_never_hangs(topo, capture, proxify_bin, fc_bin, verbosity):
    opts = VERBOSITY[verbosity] + ["--rule", f"{DENIED} deny"]
    r = run_proxified(DANTE, [fc_bin, "forklog", 200, DENIED, 80], opts=opts, timeout=600)
    no_crash(r, f"forklog {verbosity}")
    v = kv(r.stdout)
    assert v.get("forks") == "200", f"forklog {verbosity}: the helper did not finish\n{r}"
    assert v["hangs"] == "0", f"forklog {verbosity}: {v['hangs']} of 200 children hung\n{r}"
    assert v["bad"] == "0", f"forklog {verbosity}: children died\n{r}"
    assert not capture.sent_to(DENIED), f"a denied destination was reached\n{capture.summary()}"
    assert_no_leak(capture, f"forklog {verbosity}")


# Issue 14 item 2: a hook called from a signal handler that interrupted proxify on the same
# thread takes the reentered path of sys::guard::hook (no lock, no allocation, no log): the
# real call where that is safe, an errno where it is not.
@pytest.mark.parametrize("verbosity", VERBOSITY)
@pytest.mark.parametrize("kind", ["connect", "gai", "poll", "epoll", "soerror", "close"])
def test_signal_storm_never_crashes(topo, capture, proxify_bin, fc_bin, kind, verbosity):
    for run in range(10):
        # A run takes about a second; the bound only catches hangs.
        r = run_proxified(DANTE, [fc_bin, "storm", kind, T4, netns.ECHO_PORT, "0.4"],
                          opts=VERBOSITY[verbosity], timeout=10)
        no_crash(r, f"storm {kind} {verbosity} run {run}")
        assert r.rc == 0 and "calls=" in r.stdout, f"storm {kind} {verbosity} run {run}\n{r}"
        for bad in ("thread panicked", "malloc()", "corrupted", "double free", "Aborted"):
            assert bad not in r.stderr, f"storm {kind} {verbosity} run {run}: {bad!r}\n{r}"
    assert not capture.sent_to(T4), f"storm {kind}: packets to the target directly\n{capture.summary()}"
    assert_no_leak(capture, f"storm {kind} {verbosity}")


SILENT_DEST = "192.0.2.98"  # routed to the silent proxy by the test's config file


def test_siglongjmp_out_of_a_connect_does_not_lock_the_thread_out(topo, capture, proxify_bin, fc_bin):
    """The alarm + siglongjmp timeout idiom around a blocking connect: the handler leaves the
    hook without returning. The thread must not stay marked as inside proxify: its next
    proxied connect works."""
    conf = topo.run_dir / "longjmp.toml"
    silent = f"socks5h://{netns.PROXY4}:{netns.HOSTILE_PORTS['silent']}"
    conf.write_text(f'proxy = "{DANTE}"\ntimeout = 20\n\n[[chain]]\nname = "silent"\nhops = ["{silent}"]\n\n'
                    f'[[rule]]\nmatch = "{SILENT_DEST}/32"\naction = "proxy silent"\n')
    r = run_proxified(None, [fc_bin, "longjmp", T4, netns.ECHO_PORT, SILENT_DEST, 7],
                      opts=["-f", str(conf)], timeout=30)
    no_crash(r, "longjmp")
    v = kv(r.stdout)
    assert v.get("jumped") == "1" and v.get("echo") == "ok", f"the connect after siglongjmp failed\n{r}"
    assert not capture.sent_to(T4) and not capture.sent_to(SILENT_DEST), \
        f"packets went direct\n{capture.summary()}"
    assert_no_leak(capture, "longjmp")
