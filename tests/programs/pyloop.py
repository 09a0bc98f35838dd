"""Issue 11: Python event-loop clients for proxify's tests. `python3 pyloop.py MODE HOST PORT`
prints "MODE-ok" after one echo round trip through the proxied connect (or "FAIL: ..." and
exits 1). HOST is an address for the raw epoll modes, a name or an address for the others."""
import errno
import os
import select
import socket
import sys
import time

MODE, HOST, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
LIMIT = 10.0
E = select


def fail(msg):
    print(f"FAIL: {MODE}: {msg}", flush=True)
    sys.exit(1)


def start():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    rc = s.connect_ex((HOST, PORT))
    if rc not in (0, errno.EINPROGRESS):
        fail(f"connect: {os.strerror(rc)}")
    return s


def wait_for(ep, want, limit=LIMIT, fd=None):
    """epoll_wait until an event with `want` arrives; fails on EPOLLIN/ERR before it.
    Returns (events, number of epoll_wait returns)."""
    end = time.monotonic() + limit
    wakeups = 0
    while True:
        left = end - time.monotonic()
        if left <= 0:
            fail(f"no {want:#x} within {limit}s ({wakeups} wakeups)")
        got = ep.poll(left)
        wakeups += 1
        for f, ev in got:
            if fd is not None and f != fd:
                continue
            if ev & want:
                return ev, wakeups
        if wakeups > 1000:
            fail(f"{wakeups} wakeups without {want:#x}: busy loop")


def connected(s):
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        fail(f"SO_ERROR {os.strerror(err)}")


def echo(s, ep=None):
    msg = f"{MODE}-ok\n".encode()
    s.send(msg)
    got = b""
    end = time.monotonic() + LIMIT
    while len(got) < len(msg):
        if ep is not None:
            ep.modify(s, E.EPOLLIN)
            wait_for(ep, E.EPOLLIN, fd=s.fileno())
        else:
            select.select([s], [], [], max(0.0, end - time.monotonic()))
        try:
            b = s.recv(100)
        except BlockingIOError:
            continue
        if not b:
            fail("EOF")
        got += b
        if time.monotonic() > end:
            fail("echo timed out")
    if got != msg:
        fail(f"echo returned {got!r}")
    print(msg.decode().strip(), flush=True)


def mode_dupep():
    # The reproduction (what mio does): registered edge-triggered through a dup of the
    # epoll fd, waited on through the original.
    s = start()
    ep = E.epoll()
    reg = E.epoll.fromfd(os.dup(ep.fileno()))
    reg.register(s, E.EPOLLIN | E.EPOLLOUT | E.EPOLLRDHUP | E.EPOLLET)
    ev, wakeups = wait_for(ep, E.EPOLLOUT | E.EPOLLERR)
    if ev & E.EPOLLIN:
        fail(f"EPOLLIN before any data ({ev:#x})")
    connected(s)
    if wakeups > 5:
        fail(f"{wakeups} wakeups before EPOLLOUT")
    reg.close()
    echo(s, ep)


def mode_oneshot():
    s = start()
    ep = E.epoll()
    ep.register(s, E.EPOLLOUT | E.EPOLLONESHOT)
    ev, _ = wait_for(ep, E.EPOLLOUT | E.EPOLLERR)
    connected(s)
    # Not re-armed: nothing more for this socket, though it stays writable.
    if ep.poll(0.2):
        fail("a one-shot registration fired twice without being re-armed")
    s.send(b"x")
    ep.modify(s, E.EPOLLIN | E.EPOLLONESHOT)  # re-armed by the program
    wait_for(ep, E.EPOLLIN, fd=s.fileno())
    if s.recv(10) != b"x":
        fail("echo of x")
    echo(s, ep)


def mode_prereg():
    # Registered before connect (edge-triggered, like a loop that registers at socket creation).
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    ep = E.epoll()
    ep.register(s, E.EPOLLIN | E.EPOLLOUT | E.EPOLLRDHUP | E.EPOLLET)
    ep.poll(0)  # what an unconnected socket reports is the program's own business
    rc = s.connect_ex((HOST, PORT))
    if rc not in (0, errno.EINPROGRESS):
        fail(f"connect: {os.strerror(rc)}")
    ev, _ = wait_for(ep, E.EPOLLOUT | E.EPOLLERR | E.EPOLLIN)
    if ev & (E.EPOLLIN | E.EPOLLERR) or not ev & E.EPOLLOUT:
        fail(f"first report after connect is {ev:#x}, not EPOLLOUT")
    connected(s)
    echo(s, ep)


def mode_twosets():
    # One socket in two epoll sets (one level, one edge triggered): both report EPOLLOUT.
    s = start()
    a, b = E.epoll(), E.epoll()
    a.register(s, E.EPOLLOUT)
    b.register(s, E.EPOLLOUT | E.EPOLLET)
    wait_for(a, E.EPOLLOUT)
    wait_for(b, E.EPOLLOUT)
    connected(s)
    b.unregister(s)
    echo(s, a)


def mode_exclusive():
    # EPOLLEXCLUSIVE in two sets (the thundering-herd guard of prefork servers): EPOLLOUT comes
    # through when the handshake is done, and MOD of an exclusive registration is EINVAL, as the
    # kernel answers, during the handshake as after it.
    s = start()
    a, b = E.epoll(), E.epoll()
    a.register(s, E.EPOLLOUT | E.EPOLLEXCLUSIVE)
    b.register(s, E.EPOLLOUT | E.EPOLLEXCLUSIVE)
    try:
        a.modify(s, E.EPOLLIN)
        fail("MOD of an EPOLLEXCLUSIVE registration succeeded")
    except OSError as e:
        if e.errno != errno.EINVAL:
            fail(f"MOD of an EPOLLEXCLUSIVE registration: {e}")
    ev, _ = wait_for(a, E.EPOLLOUT | E.EPOLLERR)
    if ev & E.EPOLLERR or not ev & E.EPOLLOUT:
        fail(f"first report is {ev:#x}, not EPOLLOUT")
    connected(s)
    a.unregister(s)
    b.unregister(s)
    c = E.epoll()
    c.register(s, E.EPOLLOUT)
    echo(s, c)


def mode_dup2ep():
    # Registered through a dup2 and an F_DUPFD_CLOEXEC copy of the epoll fd, waited on through
    # the original: the instance counts, not the number.
    import fcntl
    s = start()
    ep = E.epoll()
    hi = os.dup2(ep.fileno(), 200)
    other = fcntl.fcntl(ep.fileno(), fcntl.F_DUPFD_CLOEXEC, 300)
    via_hi, via_other = E.epoll.fromfd(hi), E.epoll.fromfd(other)  # they own (and close) the fds
    via_hi.register(s, E.EPOLLOUT)
    ev, _ = wait_for(ep, E.EPOLLOUT | E.EPOLLERR)
    if ev & E.EPOLLERR:
        fail(f"EPOLLERR ({ev:#x})")
    connected(s)
    via_other.modify(s, E.EPOLLIN)
    via_hi.close()
    via_other.close()
    echo(s, ep)


def mode_forkep():
    # The epoll fd (and the handshaking socket) inherited across fork: the child waits on it
    # and finishes the connection; the parent only reaps the child.
    s = start()
    ep = E.epoll()
    ep.register(s, E.EPOLLOUT)
    pid = os.fork()
    if pid == 0:
        try:
            ev, _ = wait_for(ep, E.EPOLLOUT | E.EPOLLERR)
            if ev & E.EPOLLERR:
                fail(f"EPOLLERR in the child ({ev:#x})")
            connected(s)
            echo(s, ep)
        finally:
            sys.stdout.flush()
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        fail(f"the child failed (status {status:#x})")


def mode_reusedep():
    # A registration made in an epoll instance that was closed before connect(); a new
    # instance gets the same fd number. The new one must not inherit the old registration.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    ep1 = E.epoll()
    n = ep1.fileno()
    ep1.register(s, E.EPOLLIN | E.EPOLLOUT)
    ep1.close()
    ep2 = E.epoll()
    if ep2.fileno() != n:
        fail(f"the new epoll fd is {ep2.fileno()}, not the closed one's {n}")
    rc = s.connect_ex((HOST, PORT))
    if rc not in (0, errno.EINPROGRESS):
        fail(f"connect: {os.strerror(rc)}")
    ep3 = E.epoll()
    ep3.register(s, E.EPOLLOUT)
    wait_for(ep3, E.EPOLLOUT)
    connected(s)
    if ep2.poll(0.3):
        fail("the closed instance's registration showed up in the new one under its number")
    echo(s, ep3)


def mode_moddel():
    # MOD and DEL while the handshake runs, then a fresh ADD.
    s = start()
    ep = E.epoll()
    ep.register(s, E.EPOLLIN)
    ep.modify(s, E.EPOLLIN | E.EPOLLOUT)
    ep.unregister(s)
    try:
        ep.unregister(s)
        fail("a second DEL succeeded")
    except OSError as e:
        if e.errno != errno.ENOENT:
            fail(f"second DEL: {e}")
    ep.register(s, E.EPOLLOUT)
    try:
        ep.register(s, E.EPOLLOUT)
        fail("a second ADD succeeded")
    except OSError as e:
        if e.errno != errno.EEXIST:
            fail(f"second ADD: {e}")
    wait_for(ep, E.EPOLLOUT)
    connected(s)
    echo(s, ep)


def mode_dupclose():
    # The socket is dup'ed during the handshake and the original fd closed; the dup finishes.
    s = start()
    d = socket.socket(fileno=os.dup(s.fileno()))
    s.close()
    ep = E.epoll()
    ep.register(d, E.EPOLLOUT | E.EPOLLET)
    wait_for(ep, E.EPOLLOUT)
    connected(d)
    echo(d, ep)


def mode_selectors():
    import selectors
    sel = selectors.DefaultSelector()
    s = start()
    sel.register(s, selectors.EVENT_WRITE)
    end = time.monotonic() + LIMIT
    while not sel.select(max(0.0, end - time.monotonic())):
        if time.monotonic() > end:
            fail("selector timed out")
    connected(s)
    sel.unregister(s)
    echo(s)


def stream_echo(reader_writer):
    pass


def mode_asyncio():
    import asyncio

    async def main():
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), LIMIT)
        w.write(b"asyncio-ok\n")
        await w.drain()
        print((await asyncio.wait_for(r.readline(), LIMIT)).decode().strip())
        w.close()
    asyncio.run(main())


def mode_trio():
    import trio

    async def main():
        with trio.fail_after(LIMIT):
            s = await trio.open_tcp_stream(HOST, PORT)
            await s.send_all(b"trio-ok\n")
            got = b""
            while not got.endswith(b"\n"):
                got += await s.receive_some(100)
            print(got.decode().strip())
            await s.aclose()
    trio.run(main)


def mode_anyio():
    import anyio

    async def main():
        with anyio.fail_after(LIMIT):
            async with await anyio.connect_tcp(HOST, PORT) as s:
                await s.send(b"anyio-ok\n")
                got = b""
                while not got.endswith(b"\n"):
                    got += await s.receive()
                print(got.decode().strip())
    anyio.run(main)


globals()["mode_" + MODE]()
