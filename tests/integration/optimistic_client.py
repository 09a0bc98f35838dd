"""Client for tests/integration/test_optimistic.py (issue 15, optimistic data).

    optimistic_client.py blocking|nonblock-epoll|refused|refused-nonblock HOST PORT

blocking: connect(), send() right after it, then read the echo. nonblock-epoll: a
non-blocking connect, epoll for writable, SO_ERROR, send, then epoll for readable and recv
until the echo is whole (a recv that says EAGAIN is counted and waited again). refused /
refused-nonblock: the same, to a destination the proxy cannot reach: the first read's error
and whatever bytes came. Prints one JSON line.
"""
import errno, json, select, socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
msg = b"optimistic-echo\n"
res = {}
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    if mode in ("blocking", "refused"):
        s.connect((host, port))
        res["connect"] = 0
        res["sent"] = s.send(msg)  # at once: the data races the proxy's reply
        res["peer"] = list(s.getpeername())
        res["so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if mode == "blocking":
            s.settimeout(5)  # Python then polls before each recv
        got = b""  # refused: a plain blocking recv (the shim bounds the wait for the replies)
        while len(got) < len(msg):
            d = s.recv(100)
            if not d:
                break
            got += d
    else:
        s.setblocking(False)
        try:
            s.connect((host, port))
            res["connect"] = 0
        except OSError as e:
            res["connect"] = errno.errorcode[e.errno]
        ep = select.epoll()
        ep.register(s.fileno(), select.EPOLLOUT)
        res["writable"] = bool(ep.poll(10))
        res["so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        res["peer"] = list(s.getpeername())
        res["sent"] = s.send(msg)
        ep.modify(s.fileno(), select.EPOLLIN)
        got, eagain, end = b"", 0, time.monotonic() + 10
        while len(got) < len(msg) and time.monotonic() < end:
            if not ep.poll(5):
                break
            try:
                d = s.recv(100)
            except BlockingIOError:
                eagain += 1
                continue
            if not d:
                break
            got += d
        res["eagain"] = eagain
    res["got"] = got.decode(errors="replace")
    res["echo"] = got == msg
except OSError as e:
    res["error"] = errno.errorcode.get(e.errno, str(e.errno))
    res["got"] = locals().get("got", b"").decode(errors="replace") if isinstance(locals().get("got"), bytes) else ""
print(json.dumps(res))
