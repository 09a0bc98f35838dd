"""Issue 17 item 4: NO_PROXY/no_proxy from the environment never widen proxify's direct paths by
default. Users set them for browsers and curl; read as direct rules they made a name under
remote DNS resolve locally (a DNS query leaves) and sent direct SYNs. Ignored by default; with
--no-proxy-env (or `no_proxy_env = true` in the file) their entries are direct rules, and each
direct decision they cause is logged at -v.

The variables name the target's name and its block (203.0.113.0/24): a direct path there is a
packet that leaves the client for somewhere other than the proxy host, which the capture sees
(a block holding the proxy host itself, such as 198.51.100.0/24, would hide a direct SYN among
the proxied ones)."""

import ipaddress

import pytest

import netns
from conftest import curl, run_proxified
from leakcheck import assert_no_leak

P4, T4 = netns.PROXY4, netns.TARGET4
DANTE = f"socks5h://{P4}:{netns.DANTE_PORT}"
NAME_URL = f"http://{netns.TARGET_NAME}/"
IP_URL = f"http://{T4}/"
NO_PROXY = f".{netns.TARGET_NAME.split('.', 1)[1]},203.0.113.0/24"  # .example, the target's block
CRASH_MARKS = ("panicked", "RUST_BACKTRACE", "Segmentation fault", "core dumped")


def no_crash(r, what):
    assert not r.signalled, f"{what}: killed by signal {-r.rc}\n{r}"
    for bad in CRASH_MARKS:
        assert bad not in r.stderr, f"{what}: {bad!r} on stderr\n{r}"


def proxy_syns(capture):
    p4 = ipaddress.ip_address(P4)
    return [p for p in capture.stop() if p.outgoing and p.dst == p4 and p.proto == 6 and p.note == "S"]


def dns_query(p):
    return p.dst == ipaddress.ip_address(netns.DEAD_DNS) and p.proto == 17 and p.dport == 53


def to_target(p):
    return p.dst == ipaddress.ip_address(T4) and p.proto == 6 and p.dport == 80


@pytest.mark.parametrize("var", ["no_proxy", "NO_PROXY"])
@pytest.mark.parametrize("url", [NAME_URL, IP_URL], ids=["name", "address"])
def test_no_proxy_is_ignored_by_default(topo, capture, proxify_bin, var, url):
    r = run_proxified(DANTE, curl(url), opts=["-v"], env={var: NO_PROXY})
    no_crash(r, var)
    assert r.rc == 0 and r.stdout.split() == [topo.token], \
        f"{var}={NO_PROXY}: {url} should come through the proxy as without the variable\n{r}"
    assert "no-proxy-env" not in r.stderr, f"no NO_PROXY decision expected\n{r}"
    assert_no_leak(capture, f"{var}={NO_PROXY} (default: ignored)")
    assert not capture.sent_to(netns.DEAD_DNS), "a DNS query left the client"
    assert len(proxy_syns(capture)) == 1, capture.summary()


def _only(capture, expected, what):
    out = capture.leaks()
    seen = [p for p in out if expected(p)]
    bad = [p for p in out if not expected(p)]
    assert seen, f"{what}: the expected packets did not leave the client:\n{capture.summary()}"
    assert not bad, f"LEAK during {what}: unexpected packets:\n" + "\n".join(f"  {p}" for p in bad[:30])


@pytest.mark.parametrize("var", ["no_proxy", "NO_PROXY"])
def test_no_proxy_env_flag_sends_the_block_direct(topo, capture, proxify_bin, var):
    # Direct as asked: the client routes everything via the proxy host, which never forwards,
    # so the direct SYNs go unanswered (curl times out) -- and they are in the capture.
    r = run_proxified(DANTE, curl(IP_URL, "--max-time", "2"), opts=["-v", "--no-proxy-env"],
                      env={var: NO_PROXY})
    no_crash(r, var)
    assert r.rc != 0 and topo.token not in r.stdout, f"the direct fetch should time out\n{r}"
    logged = [ln for ln in r.stderr.splitlines() if "direct by rule" in ln and f"(env {var})" in ln]
    assert logged, f"-v should log the direct decision and the variable behind it\n{r}"
    _only(capture, to_target, f"--no-proxy-env {var}")
    assert not proxy_syns(capture), "the connection went to the proxy anyway"


def test_no_proxy_env_flag_resolves_the_name_locally(topo, capture, proxify_bin):
    r = run_proxified(DANTE, curl(NAME_URL), opts=["-v", "--no-proxy-env"],
                      env={"no_proxy": NO_PROXY})
    no_crash(r, "no_proxy name")
    # The client's resolver asks 192.0.2.53 (nobody there): the name fails locally.
    assert r.rc != 0 and topo.token not in r.stdout, f"the name should not resolve locally\n{r}"
    assert any("resolved locally, direct by rule" in ln for ln in r.stderr.splitlines()), r
    _only(capture, dns_query, "--no-proxy-env: local resolution")
    assert not proxy_syns(capture), "the connection went to the proxy anyway"


def test_no_proxy_env_file_key(topo, capture, proxify_bin):
    conf = topo.run_dir / "no_proxy_env.toml"
    conf.write_text(f'proxy = "{DANTE}"\nno_proxy_env = true\n')
    r = run_proxified(None, curl(IP_URL, "--max-time", "2"), opts=["-f", conf], env={"NO_PROXY": NO_PROXY})
    no_crash(r, "no_proxy_env = true")
    assert r.rc != 0 and topo.token not in r.stdout, f"the direct fetch should time out\n{r}"
    _only(capture, to_target, "no_proxy_env = true")
    assert not proxy_syns(capture), "the connection went to the proxy anyway"
