#!/usr/bin/env python3
"""Row 5 of scripts/bench: N non-blocking connects started at once from one thread.

    aconnect.py plain HOST PORT N             asyncio.open_connection(HOST, PORT), N at once
    aconnect.py socks PROXY PPORT HOST PORT N the same through a minimal asyncio SOCKS5 client

Prints "secs=..." (time until all N connections are established; for the SOCKS client that is
until every SOCKS5 reply has arrived), then checks each connection with a 1-byte echo (not
timed) and prints "echo_ok=N". Bounded: 30 s overall.
"""
import asyncio
import ipaddress
import sys
import time


async def plain(host, port):
    return await asyncio.open_connection(host, port)


async def socks(phost, pport, host, port):
    reader, writer = await asyncio.open_connection(phost, pport)
    writer.write(b"\x05\x01\x00")
    if await reader.readexactly(2) != b"\x05\x00":
        raise OSError("SOCKS5 greeting refused")
    ip = ipaddress.ip_address(host)
    atyp = b"\x01" if ip.version == 4 else b"\x04"
    writer.write(b"\x05\x01\x00" + atyp + ip.packed + port.to_bytes(2, "big"))
    head = await reader.readexactly(4)
    if head[1] != 0:
        raise OSError(f"SOCKS5 reply {head[1]}")
    await reader.readexactly({1: 6, 4: 18}[head[3]])
    return reader, writer


async def main():
    args = sys.argv[1:]
    if args[0] == "plain":
        host, port, n = args[1], int(args[2]), int(args[3])
        make = lambda: plain(host, port)  # noqa: E731
    else:
        phost, pport, host, port, n = args[1], int(args[2]), args[3], int(args[4]), int(args[5])
        make = lambda: socks(phost, pport, host, port)  # noqa: E731
    t0 = time.perf_counter()
    conns = await asyncio.gather(*[make() for _ in range(n)])
    t1 = time.perf_counter()
    print(f"secs={t1 - t0:.6f}", flush=True)
    ok = 0
    for reader, writer in conns:
        writer.write(b"x")
        if await reader.readexactly(1) == b"x":
            ok += 1
        writer.close()
    print(f"echo_ok={ok}", flush=True)


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 30))
