"""TCP Fast Open client for tests/integration/test_fastopen.py (issue 17 item 9).

    tfo_client.py sendto|sendto-nonblock|sendmsg|connect-opt|connect-opt-nonblock HOST PORT

sendto: a blocking sendto(MSG_FASTOPEN) on an unconnected socket (connect + send in one call).
sendto-nonblock: the same on a non-blocking socket: sent bytes or EINPROGRESS, then it waits
for writable, checks SO_ERROR and sends what was not sent. sendmsg: sendmsg(MSG_FASTOPEN).
connect-opt: TCP_FASTOPEN_CONNECT, then connect() and send(). Then an echo round trip; prints
one JSON line.
"""
import errno, json, select, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
res = {}
msg = b"fast-open-echo\n"
TCP_FASTOPEN_CONNECT = 30  # linux/tcp.h
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    if mode == "sendto":
        n = s.sendto(msg, socket.MSG_FASTOPEN, (host, port))
        res["sent"] = n
    elif mode == "sendto-nonblock":
        s.setblocking(False)
        try:
            n = s.sendto(msg, socket.MSG_FASTOPEN, (host, port))
            res["sent"] = n
        except OSError as e:
            res["sendto"] = errno.errorcode[e.errno]
            n = 0
        _, w, _ = select.select([], [s], [], 10)
        res["writable"] = bool(w)
        res["so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if n < len(msg):
            s.setblocking(True)
            s.sendall(msg[n:])
        s.setblocking(True)
    elif mode == "sendmsg":
        n = s.sendmsg([msg[:5], msg[5:]], [], socket.MSG_FASTOPEN, (host, port))
        res["sent"] = n
        if n < len(msg):
            s.sendall(msg[n:])
    elif mode == "connect-opt":
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
        s.connect((host, port))
        s.sendall(msg)
    elif mode == "connect-opt-nonblock":
        s.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
        s.setblocking(False)
        try:
            s.connect((host, port))
            res["connect"] = 0
        except OSError as e:
            res["connect"] = errno.errorcode[e.errno]
        _, w, _ = select.select([], [s], [], 10)
        res["writable"] = bool(w)
        res["so_error"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        s.setblocking(True)
        s.sendall(msg)
    s.settimeout(5)
    got = b""
    while len(got) < len(msg):
        d = s.recv(100)
        if not d:
            break
        got += d
    res["echo"] = got == msg
    res["peer"] = list(s.getpeername())
except OSError as e:
    res["error"] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
