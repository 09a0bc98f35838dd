#!/usr/bin/env python3
"""A deliberately broken SOCKS5 server for the fail-closed tests.

    hostile_proxy.py PORT MODE [CODE] [--host ADDR]

MODE:
  garbage          answers the method selection with random bytes (never a valid version)
  wrong-version    answers the method selection with version 4
  short-close      correct method selection, then 3 bytes of the CONNECT reply, then closes
  oversize-domain  CONNECT reply with ATYP 3 and a length byte larger than what follows, closes
  split            a correct no-auth handshake, every reply byte in its own TCP segment
                   (TCP_NODELAY, ~5 ms apart), then relays to the requested destination
  silent           accepts, never answers
  data-first       reads greeting and CONNECT request, then answers nothing until the client's
                   first data byte arrives (only a client that sends before the replies — optimistic
                   data — gets them); then both replies, then echoes what the client sends
  reject CODE      correct method selection, then a CONNECT reply with REP=CODE, closes
"""

import argparse
import os
import socket
import struct
import threading
import time

IDLE_LIMIT = 30  # seconds; every connection ends by itself


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client closed")
        buf += chunk
    return buf


def read_greeting(conn):
    ver, nmethods = recv_exact(conn, 2)
    methods = recv_exact(conn, nmethods)
    return ver, methods


def read_request(conn):
    """Reads a SOCKS5 request; returns (host, port)."""
    ver, cmd, _rsv, atyp = recv_exact(conn, 4)
    if atyp == 1:
        host = socket.inet_ntop(socket.AF_INET, recv_exact(conn, 4))
    elif atyp == 4:
        host = socket.inet_ntop(socket.AF_INET6, recv_exact(conn, 16))
    elif atyp == 3:
        host = recv_exact(conn, recv_exact(conn, 1)[0]).decode("ascii", "replace")
    else:
        raise ConnectionError(f"bad atyp {atyp}")
    (port,) = struct.unpack("!H", recv_exact(conn, 2))
    return host, port


def hold(conn):
    """Keeps the connection open, saying nothing, until the client goes or IDLE_LIMIT passes."""
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def send_split(conn, data):
    for i in range(len(data)):
        conn.sendall(data[i:i + 1])
        time.sleep(0.005)


def relay(a, b):
    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(IDLE_LIMIT)


def handle(conn, mode, code):
    conn.settimeout(IDLE_LIMIT)
    with conn:
        try:
            if mode == "silent":
                hold(conn)
                return
            read_greeting(conn)
            if mode == "garbage":
                junk = bytearray(os.urandom(64))
                junk[0] = 6 + junk[0] % 250  # never 0, 4 or 5: no SOCKS version at all
                conn.sendall(bytes(junk))
                hold(conn)
                return
            if mode == "wrong-version":
                conn.sendall(b"\x04\x00")
                hold(conn)
                return
            if mode == "data-first":
                read_request(conn)
                first = conn.recv(4096)  # blocks until the program's data (or the end)
                if not first:
                    return
                conn.sendall(b"\x05\x00" + b"\x05\x00\x00\x01" + bytes(6) + first)
                while True:
                    more = conn.recv(4096)
                    if not more:
                        return
                    conn.sendall(more)
            if mode == "split":
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                send_split(conn, b"\x05\x00")
                host, port = read_request(conn)
                try:
                    upstream = socket.create_connection((host, port), timeout=5)
                except OSError:
                    send_split(conn, b"\x05\x05\x00\x01" + bytes(6))
                    return
                with upstream:
                    upstream.settimeout(IDLE_LIMIT)
                    bnd = upstream.getsockname()
                    if upstream.family == socket.AF_INET6:
                        addr = b"\x04" + socket.inet_pton(socket.AF_INET6, bnd[0])
                    else:
                        addr = b"\x01" + socket.inet_pton(socket.AF_INET, bnd[0])
                    send_split(conn, b"\x05\x00\x00" + addr + struct.pack("!H", bnd[1]))
                    relay(conn, upstream)
                return
            conn.sendall(b"\x05\x00")
            read_request(conn)
            if mode == "short-close":
                conn.sendall(b"\x05\x00\x00")
            elif mode == "oversize-domain":
                conn.sendall(b"\x05\x00\x00\x03\xc8" + b"proxy.example" + b"\x00\x50")
            elif mode == "reject":
                conn.sendall(bytes([5, code, 0, 1]) + bytes(6))
        except (OSError, ConnectionError, ValueError):
            return


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("port", type=int)
    ap.add_argument("mode", choices=["garbage", "wrong-version", "short-close", "oversize-domain",
                                     "split", "silent", "reject", "data-first"])
    ap.add_argument("code", type=int, nargs="?", default=5, help="REP code for `reject`")
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, a.mode, a.code), daemon=True).start()


if __name__ == "__main__":
    main()
