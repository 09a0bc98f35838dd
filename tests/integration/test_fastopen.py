"""TCP Fast Open to a proxied destination (issue 17 item 9): sendto/sendmsg with MSG_FASTOPEN
on an unconnected socket is a connect and a send in one call; proxify makes it the proxied
connect, and the data goes after the proxy's handshake (blocking: the call returns the bytes
sent; non-blocking: EINPROGRESS, or the bytes, as the kernel answers a connect without a
cookie). TCP_FASTOPEN_CONNECT and curl --tcp-fastopen keep working. Each case has a capture:
nothing goes anywhere but the proxy."""

import json
import sys
from pathlib import Path

import pytest

import netns
from conftest import curl, run_proxified
from hardcase import DANTE, expect_ok, proxy_syns
from leakcheck import assert_no_leak

T4, ECHO = netns.TARGET4, netns.ECHO_PORT
CLIENT = Path(__file__).resolve().parent / "tfo_client.py"
MSG_LEN = len(b"fast-open-echo\n")


@pytest.mark.parametrize("mode", ["sendto", "sendto-nonblock", "sendmsg", "connect-opt", "connect-opt-nonblock"])
def test_fast_open_through_the_proxy(topo, capture, proxify_bin, mode):
    r = run_proxified(DANTE, [sys.executable, str(CLIENT), mode, T4, ECHO])
    what = f"TCP Fast Open ({mode}) to {T4}:{ECHO} via {DANTE}"
    expect_ok(r, what)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert "error" not in res, f"{what}: {res.get('error')}\n{r}"
    assert res["echo"] is True and res["peer"] == [T4, ECHO], f"{what}: no echo through the proxy\n{r}"
    if mode in ("sendto", "sendmsg"):
        assert res["sent"] == MSG_LEN, f"{what}: a blocking fast-open send returns every byte\n{r}"
    if mode == "sendto-nonblock":
        assert res.get("sent") == MSG_LEN or res.get("sendto") == "EINPROGRESS", \
            f"{what}: non-blocking: the bytes or EINPROGRESS\n{r}"
        assert res["writable"] and res["so_error"] == 0, f"{what}: the connect did not complete\n{r}"
    assert proxy_syns(capture), f"{what}: nothing went to the proxy\n{capture.summary()}"
    assert_no_leak(capture, what)


def test_curl_tcp_fastopen(topo, capture, proxify_bin):
    r = run_proxified(DANTE, curl(f"http://{T4}/", "--tcp-fastopen"))
    what = f"curl --tcp-fastopen http://{T4}/ via {DANTE}"
    expect_ok(r, what)
    assert r.stdout.strip() == topo.token, f"{what}: not the target's page\n{r}"
    assert_no_leak(capture, what)
