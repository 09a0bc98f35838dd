#!/usr/bin/env python3
"""A TCP relay that delays each direction by a fixed time (a userspace stand-in for netem).

    delay_relay.py LISTEN_IP LISTEN_PORT UPSTREAM_IP UPSTREAM_PORT DELAY_MS

Every chunk read on one side is written to the other side DELAY_MS after it was read, in
order; end-of-stream is delayed the same way. The connection to the upstream is made when the
client's connection is accepted (the TCP handshakes themselves are not delayed: a round trip
here is one delayed data exchange). Used by scripts/bench for rows 4 and 5; it prints
"ready" once listening and runs until killed.
"""
import asyncio
import socket
import sys


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except OSError:
                    pass
                return
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, data or None))
            if not data:
                break
        await task
    except (OSError, asyncio.IncompleteReadError):
        task.cancel()


async def handle(creader, cwriter, upstream, delay):
    try:
        ureader, uwriter = await asyncio.open_connection(*upstream)
    except OSError:
        cwriter.close()
        return
    for w in (cwriter, uwriter):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(pump(creader, uwriter, delay), pump(ureader, cwriter, delay))
    finally:
        for w in (cwriter, uwriter):
            w.close()


async def main():
    lhost, lport, uhost, uport, ms = sys.argv[1:6]
    delay = float(ms) / 1000.0
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, (uhost, int(uport)), delay), lhost, int(lport), backlog=512)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
