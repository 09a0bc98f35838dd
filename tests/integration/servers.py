#!/usr/bin/env python3
"""Small test servers, run inside the namespaces and stopped by PID.

    servers.py echo HOST PORT     TCP echo (HOST "::" listens dual stack)
    servers.py silent HOST PORT   accepts connections and never says anything
"""

import socket
import sys
import threading

IDLE_LIMIT = 60  # seconds a connection may stay idle before we drop it


def listener(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(128)
    return s


def echo(conn):
    with conn:
        conn.settimeout(IDLE_LIMIT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return


def silent(conn):
    with conn:
        conn.settimeout(IDLE_LIMIT)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            return


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("echo", "silent"):
        sys.exit(__doc__)
    handler = echo if sys.argv[1] == "echo" else silent
    s = listener(sys.argv[2], int(sys.argv[3]))
    while True:
        conn, _ = s.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
