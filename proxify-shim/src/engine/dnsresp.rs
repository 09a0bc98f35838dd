//! The in-process DNS responder (remote DNS only): a query the program sends to one of its
//! system resolvers (the `nameserver` lines of /etc/resolv.conf, port 53; 127.0.0.53 and
//! 127.0.0.1 included when listed) is answered here, by `proxify_core::dns`, and never leaves
//! the process: A/AAAA get the placeholders `getaddrinfo` hands out, PTR of a placeholder its
//! name, everything else an immediate REFUSED — or, with `--dns-server`, the query goes over
//! TCP through the proxy to that server (one exchange on a socket of ours, bounded by the
//! handshake timeout; any failure is an immediate SERVFAIL). A name the rules send direct
//! passes unchanged.
//!
//! UDP, unconnected (`sendto`/`sendmsg`/`sendmmsg` with the resolver's address): the reply is
//! put on the program's own socket by a throw-away loopback socket of ours; `recvfrom`,
//! `recvmsg` and `recvmmsg` then report it as coming from the address and port the query went
//! to (c-ares, glibc and musl check). The socket gets its port first (bind to the wildcard, as
//! the kernel's autobind would), so poll/select/epoll see the reply like any datagram.
//!
//! UDP, connected (`connect` to the resolver, then `send`/`write`/`sendmsg`): the kernel socket
//! is NOT connected (a connected UDP socket would drop our reply); `getpeername` reports the
//! resolver, sends without an address are answered here. A send by a path we do not see
//! (an inline system call) fails with EDESTADDRREQ: nothing leaves.
//!
//! TCP (`connect` to a resolver's port 53, or a Fast Open `sendto`): the program's socket is
//! connected to a loopback listener of ours, made for that one connection and closed once it
//! has accepted; proxify keeps the accepted end. What the program writes through the hooks
//! (`write`, `writev`, `send`, `sendto`, `sendmsg`) goes into the stream for real; right after
//! the write, each whole length-prefixed query on our end is answered on it, so the reply
//! arrives on the program's socket like any data and poll/select/epoll see it. `getpeername`
//! reports the resolver. When the program ends its side (`shutdown`, `close`), ours ends
//! too once every query is answered. A write by a path we do not see (an inline system call)
//! stays unanswered: nothing leaves. A name the rules send direct is asked of the resolver
//! over a TCP connection of ours.
//!
//! Bookkeeping: a small table keyed by fd and checked against the socket's inode (an fd
//! number the program reused for another socket is not ours), behind one atomic count so that
//! every hook pays one relaxed load while nothing is tracked.
//!
//! Size: ~1,070 lines (one small unit test): one fd table behind three transports, of which the
//! TCP stream through a loopback listener is ~330 lines, plus the `--dns-server` forwarder (~150
//! lines). Should be split: the TCP stream and the forwarder into their own modules; not done yet.

use crate::policy::decide;
use crate::policy::names as hdns;
use crate::state::fakedns::Miss;
use crate::state::runtime;
use crate::sys::guard::set_errno;
use crate::sys::lock::ForkSafeMutex;
use crate::sys::socket::socket_type;
use crate::sys::{error, real, sockaddr};
use libc::{c_int, iovec, ssize_t};
use proxify_core::dns::{self, Lookup, Name, Verdict};
use proxify_core::socks::TargetAddr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The system resolvers, read once from /etc/resolv.conf.
fn resolvers() -> &'static [IpAddr] {
    static R: OnceLock<Vec<IpAddr>> = OnceLock::new();
    R.get_or_init(|| {
        parse_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    })
}

fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut it = line.split_whitespace();
        if it.next() != Some("nameserver") {
            continue;
        }
        let Some(a) = it.next() else { continue };
        let a = a.split('%').next().unwrap_or(a);
        if let Ok(ip) = a.parse::<IpAddr>() {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    // glibc's default when the file lists none: the local host.
    if out.is_empty() && !text.contains("nameserver") {
        out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    out
}

/// Is `dest` one of the system resolvers (port 53), under remote DNS?
pub fn is_resolver(dest: &SocketAddr) -> bool {
    if dest.port() != 53 {
        return false;
    }
    if !runtime::get().remote_dns() {
        return false;
    }
    let ip = sockaddr::unmap(*dest).ip();
    resolvers().contains(&ip)
}

const SLOTS: usize = 64;
const PORTS: usize = 8;

#[derive(Clone, Copy)]
struct Slot {
    fd: c_int,
    ino: (u64, u64),
    /// The resolver as the program addressed it (its last query on this socket).
    resolver: SocketAddr,
    /// connect()ed to the resolver (sends without an address go to it; getpeername).
    connected: bool,
    /// Loopback source ports our replies came from (a ring).
    ports: [u16; PORTS],
    next: usize,
    /// A TCP stream: `srv` is our end of it (checked against `srv_ino` before each use: the
    /// program may have closed the number by a path we do not see), -1 once gone.
    tcp: bool,
    srv: c_int,
    srv_ino: (u64, u64),
    /// Bytes the program sent on the stream through the hooks that we have not taken yet
    /// (they may still be on their way: Nagle, a full window).
    pending: usize,
}

const FREE: Slot = Slot {
    fd: -1,
    ino: (0, 0),
    resolver: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    connected: false,
    ports: [0; PORTS],
    next: 0,
    tcp: false,
    srv: -1,
    srv_ino: (0, 0),
    pending: 0,
};

static TABLE: ForkSafeMutex<[Slot; SLOTS]> = ForkSafeMutex::new([FREE; SLOTS]);
static COUNT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn fork_prepare() {
    TABLE.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { TABLE.raw_unlock() }
}

fn inode(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: fstat writes into a zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a stat we own.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino))
}

/// Nothing tracked: the hooks' fast path.
#[inline]
pub fn idle() -> bool {
    COUNT.load(Ordering::Relaxed) == 0
}

/// The slot of `fd`, if it is still the same socket.
fn with_slot<R>(fd: c_int, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
    if idle() {
        return None;
    }
    if !TABLE.lock().iter().any(|s| s.fd == fd) {
        return None;
    }
    let ino = inode(fd)?;
    let mut t = TABLE.lock();
    let s = t.iter_mut().find(|s| s.fd == fd)?;
    if s.ino != ino {
        let stale = (s.srv, s.srv_ino);
        *s = FREE;
        COUNT.fetch_sub(1, Ordering::Relaxed);
        drop(t);
        close_srv(stale);
        return None;
    }
    Some(f(s))
}

/// Closes our end of a TCP stream, if the number is still that socket (never an fd of the
/// program's that reused it).
fn close_srv((srv, ino): (c_int, (u64, u64))) {
    if srv >= 0 && inode(srv) == Some(ino) {
        // SAFETY: our own fd, checked to be the socket we made.
        unsafe { real::close(srv) };
    }
}

/// The slot for `fd`, made if needed (None: the table is full).
fn upsert(fd: c_int, resolver: SocketAddr, f: impl FnOnce(&mut Slot)) -> bool {
    let Some(ino) = inode(fd) else {
        return false;
    };
    let mut t = TABLE.lock();
    let mut stale = (-1, (0, 0));
    let i = match t.iter().position(|s| s.fd == fd) {
        Some(i) => {
            if t[i].ino != ino {
                stale = (t[i].srv, t[i].srv_ino);
                t[i] = FREE;
                t[i].fd = fd;
            }
            i
        }
        None => match t.iter().position(|s| s.fd == -1) {
            Some(i) => {
                COUNT.fetch_add(1, Ordering::Relaxed);
                t[i].fd = fd;
                i
            }
            None => return false,
        },
    };
    let s = &mut t[i];
    s.ino = ino;
    s.resolver = resolver;
    f(s);
    drop(t);
    close_srv(stale);
    true
}

/// Forgets `fd` (closed, or about to be reused). If it was the number of our end of a TCP
/// stream (the program closing every fd), that stream is dead from now on.
pub fn forget(fd: c_int) {
    if idle() {
        return;
    }
    let mut ours = [(-1, (0, 0)); 2];
    let mut n = 0;
    {
        let mut t = TABLE.lock();
        for s in t.iter_mut() {
            if s.fd == fd {
                if n < ours.len() {
                    ours[n] = (s.srv, s.srv_ino);
                    n += 1;
                }
                *s = FREE;
                COUNT.fetch_sub(1, Ordering::Relaxed);
            } else if s.tcp && s.srv == fd {
                s.srv = -1;
            }
        }
    }
    for o in &ours[..n] {
        close_srv(*o);
    }
}

/// The resolver a UDP socket was connected to (for getpeername and address-less sends).
pub fn connected_peer(fd: c_int) -> Option<SocketAddr> {
    with_slot(fd, |s| s.connected.then_some(s.resolver)).flatten()
}

/// `connect(fd, dest)` to a resolver: Some(result) when handled here.
pub fn connect(fd: c_int, dest: SocketAddr) -> Option<c_int> {
    match socket_type(fd).map(|t| t.0) {
        Some(libc::SOCK_DGRAM) => {}
        Some(libc::SOCK_STREAM) => return Some(tcp_connect(fd, dest)),
        _ => return None,
    }
    if let Err(e) = ensure_bound(fd) {
        set_errno(e);
        return Some(-1);
    }
    if !upsert(fd, dest, |s| s.connected = true) {
        log::warn!("dns: too many sockets talking to the resolver; refusing fd {fd}");
        set_errno(libc::ENOBUFS);
        return Some(-1);
    }
    log::debug!("dns: fd {fd} connected to the resolver {dest} (answered in-process)");
    Some(0)
}

/// Is `fd` the program's end of one of our TCP streams?
fn is_tcp(fd: c_int) -> bool {
    with_slot(fd, |s| s.tcp).unwrap_or(false)
}

/// `connect` of a TCP socket to the resolver `dest`: the socket is connected to a loopback
/// listener of ours, whose accepted end we keep; 0, or -1 with errno.
fn tcp_connect(fd: c_int, dest: SocketAddr) -> c_int {
    if is_tcp(fd) {
        set_errno(libc::EISCONN);
        return -1;
    }
    let (srv, srv_ino) = match open_stream(fd) {
        Ok(s) => s,
        Err(f) => {
            log::warn!(
                "dns: fd {fd}: cannot answer the TCP connection to the resolver {dest} \
                 in-process: {}",
                f.msg
            );
            set_errno(f.errno);
            return -1;
        }
    };
    let kept = upsert(fd, dest, |s| {
        s.connected = true;
        s.tcp = true;
        s.srv = srv;
        s.srv_ino = srv_ino;
    });
    if !kept {
        close_srv((srv, srv_ino));
        crate::sys::socket::disconnect(fd);
        log::warn!("dns: too many sockets talking to the resolver; refusing fd {fd}");
        set_errno(libc::ENOBUFS);
        return -1;
    }
    log::info!("dns: fd {fd}: TCP connection to the resolver {dest} (answered in-process)");
    0
}

/// Our own fd, closed when dropped unless kept.
struct Own(c_int);

impl Own {
    fn keep(self) -> c_int {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Own {
    fn drop(&mut self) {
        // SAFETY: an fd we made and nobody else knows.
        unsafe { real::close(self.0) };
    }
}

fn sys_err(what: &str) -> error::Failure {
    let e = error::errno();
    error::Failure::new(e, format!("{what}: {}", error::strerror(e)))
}

/// A listening socket of ours on loopback for a program socket of `family`, and the address
/// that socket connects to.
fn loopback_listener(family: c_int) -> Result<(Own, SocketAddr), error::Failure> {
    let plans: &[(c_int, IpAddr)] = if family == libc::AF_INET6 {
        // [::1]; on a host without IPv6 loopback, 127.0.0.1 reached v4-mapped.
        &[
            (libc::AF_INET6, IpAddr::V6(Ipv6Addr::LOCALHOST)),
            (libc::AF_INET, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ]
    } else {
        &[(libc::AF_INET, IpAddr::V4(Ipv4Addr::LOCALHOST))]
    };
    let mut last = error::Failure::new(libc::EAFNOSUPPORT, "no loopback address");
    for &(fam, ip) in plans {
        // SAFETY: socket() takes no pointers; the fd is owned by `Own`.
        let l = unsafe {
            libc::socket(
                fam,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if l < 0 {
            last = sys_err("socket");
            continue;
        }
        let l = Own(l);
        let (st, len) = sockaddr::to_storage(&SocketAddr::new(ip, 0));
        // SAFETY: a valid sockaddr of `len` bytes; our own socket.
        let bound = unsafe { real::bind(l.0, &st as *const _ as *const libc::sockaddr, len) };
        // SAFETY: our own socket.
        if bound != 0 || unsafe { real::listen(l.0, 1) } != 0 {
            last = sys_err("loopback listener");
            continue;
        }
        let Some(at) = local_addr(l.0) else {
            last = sys_err("loopback listener");
            continue;
        };
        let to = match at.ip() {
            IpAddr::V4(a) if family == libc::AF_INET6 => {
                SocketAddr::new(IpAddr::V6(a.to_ipv6_mapped()), at.port())
            }
            _ => at,
        };
        return Ok((l, to));
    }
    Err(last)
}

/// Connects the program's TCP socket `fd` to a loopback listener of ours and returns our end
/// of the connection (checked to be `fd`'s peer) with its inode.
fn open_stream(fd: c_int) -> Result<(c_int, (u64, u64)), error::Failure> {
    let (listener, to) = loopback_listener(crate::sys::socket::socket_domain(fd))?;
    crate::sys::socket::with_nonblocking(fd, || {
        crate::engine::drive::connect_proxy(fd, to, std::time::Duration::from_secs(2))
    })?;
    let mine = local_addr(fd).map(sockaddr::unmap);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: all-zero bytes are a valid value of this plain C struct.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: accept4 writes at most `len` bytes into our storage.
        let a = unsafe {
            real::accept4(
                listener.0,
                &mut st as *mut _ as *mut libc::sockaddr,
                &mut len,
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if a >= 0 {
            let a = Own(a);
            // SAFETY: the kernel filled `len` bytes.
            let peer = unsafe { sockaddr::read(&st as *const _ as *const libc::sockaddr, len) };
            // Another local process may have connected to the port meanwhile: not ours.
            if peer.map(sockaddr::unmap) != mine || mine.is_none() {
                continue;
            }
            let ino = inode(a.0).ok_or_else(|| sys_err("fstat"))?;
            return Ok((a.keep(), ino));
        }
        let e = error::errno();
        if e != libc::EAGAIN && e != libc::EINTR {
            crate::sys::socket::disconnect(fd);
            return Err(error::Failure::new(
                e,
                format!("accept: {}", error::strerror(e)),
            ));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            crate::sys::socket::disconnect(fd);
            return Err(error::Failure::new(
                libc::ETIMEDOUT,
                "the loopback connection was not accepted",
            ));
        }
        let mut p = libc::pollfd {
            fd: listener.0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        unsafe { real::poll(&mut p, 1, left.as_millis().max(1) as c_int) };
    }
}

/// A send on the program's end of one of our TCP streams: sent for real, then every whole
/// query on our end answered. None: `fd` is not such a socket.
fn tcp_send(fd: c_int, iov: &[iovec], flags: c_int) -> Option<ssize_t> {
    if !is_tcp(fd) {
        return None;
    }
    // SAFETY: a msghdr over the caller's iovecs, no address.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.as_ptr() as *mut iovec;
    m.msg_iovlen = iov.len();
    // SAFETY: `m` describes the caller's buffers.
    let n = unsafe { real::sendmsg(fd, &m, flags & !libc::MSG_FASTOPEN) };
    if n > 0 {
        let e = error::errno();
        let _ = with_slot(fd, |s| s.pending = s.pending.saturating_add(n as usize));
        serve(fd);
        set_errno(e);
    }
    Some(n)
}

/// Answers every whole length-prefixed query waiting on our end of `fd`'s stream; shuts our
/// end once the program has shut its own and everything is answered.
fn serve(fd: c_int) {
    let Some(Some((srv, ino, resolver, pending))) = with_slot(fd, |s| {
        (s.tcp && s.srv >= 0).then_some((s.srv, s.srv_ino, s.resolver, s.pending))
    }) else {
        return;
    };
    if inode(srv) != Some(ino) {
        // The program closed our number by a path we do not see: the stream is dead.
        let _ = with_slot(fd, |s| s.srv = -1);
        log::warn!(
            "dns: fd {fd}: proxify's end of the DNS stream was closed; queries go unanswered"
        );
        return;
    }
    arrived(srv, pending);
    let peek = |buf: &mut [u8], flags: c_int| -> ssize_t {
        // SAFETY: buf is writable for its length; srv is our socket.
        unsafe { real::recv(srv, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags) }
    };
    // Bounded: a client cannot keep us here; the rest waits for its next send.
    for _ in 0..64 {
        let mut hdr = [0u8; 2];
        let n = peek(&mut hdr, libc::MSG_PEEK | libc::MSG_DONTWAIT);
        if n == 0 {
            // SAFETY: our socket; the program sees the end after the last reply.
            unsafe { real::shutdown(srv, libc::SHUT_WR) };
            return;
        }
        if n < 2 {
            return;
        }
        let mut frame = vec![0u8; 2 + usize::from(u16::from_be_bytes(hdr))];
        if peek(&mut frame, libc::MSG_PEEK | libc::MSG_DONTWAIT) < frame.len() as ssize_t {
            return;
        }
        if peek(&mut frame, libc::MSG_DONTWAIT) < frame.len() as ssize_t {
            return;
        }
        let _ = with_slot(fd, |s| s.pending = s.pending.saturating_sub(frame.len()));
        let msg = &frame[2..];
        let mut out = [0u8; dns::MAX_REPLY];
        let reply = match answer_msg(msg, true, &mut out, &format!("TCP to {resolver}")) {
            Verdict::Reply { len, .. } => Ok(out[..len].to_vec()),
            Verdict::Pass => direct_exchange(msg, resolver),
            Verdict::Drop | Verdict::Forward => continue,
        };
        let sent = reply.and_then(|r| {
            let mut f = vec![0u8; r.len() + 2];
            let n = dns::write_frame(&r, &mut f)
                .ok_or_else(|| error::Failure::new(libc::EMSGSIZE, "reply too long"))?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            crate::engine::drive::send_all(srv, &f[..n], deadline)
        });
        if let Err(f) = sent {
            // No answer at all is better said at once than by a timeout: end the stream.
            log::warn!("dns: fd {fd}: no reply over TCP to {resolver}: {}", f.msg);
            // SAFETY: our socket.
            unsafe { real::shutdown(srv, libc::SHUT_RDWR) };
            return;
        }
    }
}

/// After the program's successful `shutdown(fd, how)`: once it has ended its sending side,
/// what is left is answered and our end ends too.
pub fn shut(fd: c_int, how: c_int) {
    if how != libc::SHUT_RD && is_tcp(fd) {
        serve(fd);
    }
}

/// Waits (briefly) until the `pending` bytes the program sent are on our end: a small write
/// after another may wait in the program's send queue for an acknowledgement (Nagle).
fn arrived(srv: c_int, pending: usize) {
    if pending == 0 {
        return;
    }
    let want = pending.min(1 << 16) as c_int;
    let mut queued: c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(srv, libc::FIONREAD, &mut queued) } == 0 && queued >= want {
        return;
    }
    // The receive low-water mark makes poll wait for all of them, not for the first byte.
    let set = |v: c_int| {
        // SAFETY: one int option on our socket.
        unsafe {
            libc::setsockopt(
                srv,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                &v as *const c_int as *const libc::c_void,
                std::mem::size_of::<c_int>() as libc::socklen_t,
            )
        }
    };
    if set(want) != 0 {
        return;
    }
    let mut p = libc::pollfd {
        fd: srv,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    unsafe { real::poll(&mut p, 1, 500) };
    set(1);
}

/// A query for a name the rules send direct, over TCP: asked of the resolver itself on a
/// connection of ours.
fn direct_exchange(msg: &[u8], resolver: SocketAddr) -> Result<Vec<u8>, error::Failure> {
    let cfg_timeout = runtime::get()
        .config()
        .map(|c| c.connect_timeout)
        .unwrap_or(std::time::Duration::from_secs(5));
    // SAFETY: socket() takes no pointers; the fd is owned by `Own`.
    let s = unsafe {
        libc::socket(
            sockaddr::af(&resolver),
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if s < 0 {
        return Err(sys_err("socket"));
    }
    let s = Own(s);
    crate::engine::drive::connect_proxy(s.0, resolver, cfg_timeout)?;
    frame_exchange(s.0, msg, std::time::Instant::now() + cfg_timeout)
}

fn local_addr(fd: c_int) -> Option<SocketAddr> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into our storage.
    let rc = unsafe { real::getsockname(fd, &mut st as *mut _ as *mut libc::sockaddr, &mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel filled `len` bytes.
    unsafe { sockaddr::read(&st as *const _ as *const libc::sockaddr, len) }
}

/// Gives the socket its port (the wildcard, as autobind on a first send would).
fn ensure_bound(fd: c_int) -> Result<SocketAddr, c_int> {
    let local = local_addr(fd).ok_or(libc::ENOTSOCK)?;
    if local.port() != 0 {
        return Ok(local);
    }
    let any = if local.is_ipv4() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    };
    let (st, len) = sockaddr::to_storage(&any);
    // SAFETY: a valid sockaddr of `len` bytes.
    if unsafe { real::bind(fd, &st as *const _ as *const libc::sockaddr, len) } != 0 {
        let e = error::errno();
        // Bound meanwhile by another thread: fine.
        if let Some(l) = local_addr(fd).filter(|l| l.port() != 0) {
            return Ok(l);
        }
        return Err(e);
    }
    local_addr(fd).ok_or(libc::EIO)
}

/// Puts `reply` on `fd`'s receive queue from a loopback socket of ours, and records the port
/// it came from so that the receive hooks can report the resolver instead.
fn deliver(fd: c_int, resolver: SocketAddr, reply: &[u8]) -> Result<(), c_int> {
    let local = ensure_bound(fd)?;
    let to_ip = match local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let to = SocketAddr::new(to_ip, local.port());
    let fam = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket calls on an fd we own and close below.
    let s = unsafe { libc::socket(fam, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(error::errno());
    }
    let from_ip = if to.ip().is_loopback() {
        to.ip()
    } else if to.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let r = (|| {
        let (st, len) = sockaddr::to_storage(&SocketAddr::new(from_ip, 0));
        // SAFETY: valid sockaddr.
        if unsafe { real::bind(s, &st as *const _ as *const libc::sockaddr, len) } != 0 {
            return Err(error::errno());
        }
        let port = local_addr(s).map(|a| a.port()).ok_or(libc::EIO)?;
        if !upsert(fd, resolver, |sl| {
            sl.ports[sl.next % PORTS] = port;
            sl.next = sl.next.wrapping_add(1);
        }) {
            return Err(libc::ENOBUFS);
        }
        let (st, len) = sockaddr::to_storage(&to);
        // SAFETY: `reply` is a live slice; `st` a valid sockaddr.
        let n = unsafe {
            real::sendto(
                s,
                reply.as_ptr() as *const libc::c_void,
                reply.len(),
                0,
                &st as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if n < 0 {
            return Err(error::errno());
        }
        Ok(())
    })();
    // SAFETY: our own fd.
    unsafe { real::close(s) };
    r
}

/// The answers' source: the placeholder table, /etc/hosts, the rules.
struct Shim;

impl dns::Resolver for Shim {
    fn addrs(&mut self, name: &str, v6: bool) -> Lookup {
        let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        match hdns::answer(name, fam, false) {
            Ok(a) => {
                let mut l = dns::AddrList::default();
                for ip in a.addrs {
                    if !l.push(ip) {
                        break;
                    }
                }
                Lookup::Found(l)
            }
            // The placeholder block is full: SERVFAIL (the client may retry later).
            Err(Miss::Full) => Lookup::Fail,
            // Addresses of the other family only (/etc/hosts): no data; none at all: no name.
            Err(Miss::NoName) if hdns::answer(name, libc::AF_UNSPEC, false).is_ok() => {
                Lookup::NoData
            }
            Err(Miss::NoName) => Lookup::NxDomain,
        }
    }

    fn name_of(&mut self, ip: IpAddr) -> Option<Name> {
        hdns::reverse(&ip).and_then(|n| Name::new(&n))
    }

    fn pass(&mut self, name: &str) -> bool {
        !decide::name_goes_remote(name)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Answers one query message; the reply bytes in `out`, or the verdict when there is none.
/// Also used by the `res_*` hooks (`tcp`: no UDP size limit).
pub fn answer_msg(msg: &[u8], tcp: bool, out: &mut [u8; dns::MAX_REPLY], via: &str) -> Verdict {
    let server = runtime::get()
        .config()
        .and_then(|c| c.dns_server.as_deref())
        .and_then(|s| proxify_core::config::parse_dns_server(s).ok());
    let (mut v, q) = dns::respond(msg, &mut Shim, server.is_some(), tcp, out);
    if let (Verdict::Forward, Some(q), Some((host, port))) = (v, &q, &server) {
        v = forward(msg, q, tcp, host, *port, out);
    }
    let what = match &q {
        Some(q) => format!("{} {}", dns::rtype::name(q.qtype), q.name_str()),
        None => "a malformed query".to_string(),
    };
    match v {
        Verdict::Reply {
            len,
            rcode,
            answers,
        } => {
            if log::log_enabled!(log::Level::Info) {
                let mut addrs = Vec::new();
                let _ = dns::answer_addrs(&out[..len], |ip| addrs.push(ip.to_string()));
                let detail = if !addrs.is_empty() {
                    addrs.join(" ")
                } else if answers > 0 {
                    format!("{answers} answer(s)")
                } else {
                    dns::rcode::name(rcode).to_string()
                };
                log::info!("dns: {what} ({via}): {detail} (answered in-process)");
            }
            log::debug!("dns: query {} -> reply {}", hex(msg), hex(&out[..len]));
        }
        Verdict::Pass => log::info!("dns: {what} ({via}): not a remote name, sent to the resolver"),
        Verdict::Drop => log::info!("dns: {what} ({via}): dropped (not a query)"),
        Verdict::Forward => {}
    }
    v
}

/// A DNS server as `--dns-server` named it, as the proxy is asked for it.
fn server_target(host: &str, port: u16) -> TargetAddr {
    match host.parse::<IpAddr>() {
        Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
        Err(_) => TargetAddr::Domain(host.to_string(), port),
    }
}

/// Sends `msg` over TCP through the proxy to the `--dns-server` and puts its reply, fitted to
/// what the client takes, in `out`. Any failure (no route, the proxy refuses, a timeout, a
/// reply that does not answer the query) is an immediate SERVFAIL: never a local query.
fn forward(
    msg: &[u8],
    q: &dns::Query,
    tcp: bool,
    host: &str,
    port: u16,
    out: &mut [u8; dns::MAX_REPLY],
) -> Verdict {
    let target = server_target(host, port);
    let what = format!("{} {}", dns::rtype::name(q.qtype), q.name_str());
    let started = std::time::Instant::now();
    match exchange(msg, &target) {
        Ok(reply) if dns::check_forwarded(q, &reply) => {
            let limit = if tcp {
                out.len()
            } else {
                usize::from(q.udp_size)
            };
            let len = dns::fit_reply(q, &reply, limit, out);
            if len > 0 {
                let info = dns::reply_info(&out[..len]);
                log::info!(
                    "dns: {what}: forwarded through the proxy to {target} ({} ms)",
                    started.elapsed().as_millis()
                );
                return Verdict::Reply {
                    len,
                    rcode: info.map_or(0, |i| i.rcode),
                    answers: info.map_or(0, |i| i.ancount),
                };
            }
            log::warn!("dns: {what}: the reply of {target} does not fit: SERVFAIL");
        }
        Ok(_) => log::warn!("dns: {what}: {target} answered another query: SERVFAIL"),
        Err(f) => log::warn!(
            "dns: {what}: cannot forward through the proxy to {target}: {}; answered SERVFAIL",
            f.msg
        ),
    }
    let len = dns::error_reply(q, dns::rcode::SERVFAIL, out);
    Verdict::Reply {
        len,
        rcode: dns::rcode::SERVFAIL,
        answers: 0,
    }
}

/// One DNS-over-TCP exchange with `target` through its chain, on a socket of ours.
fn exchange(msg: &[u8], target: &TargetAddr) -> Result<Vec<u8>, error::Failure> {
    use error::Failure;
    let rt = runtime::get();
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, rt.config_error().to_string()))?;
    let chain = decide::proxied_target(target, "the DNS server")
        .map_err(|(e, why)| Failure::new(e, why))?
        .chain;
    let urls: Vec<proxify_core::url::ProxyUrl> =
        rt.select_hops(chain).into_iter().map(|(_, u)| u).collect();
    let first = urls
        .first()
        .ok_or_else(|| Failure::new(libc::EACCES, "the chain has no proxy"))?;
    let addrs = rt
        .hop_addrs(first)
        .map_err(|e| Failure::new(libc::EHOSTUNREACH, e))?;
    let proxy = *addrs
        .first()
        .ok_or_else(|| Failure::new(libc::EHOSTUNREACH, "the proxy has no address"))?;
    let family = sockaddr::af(&proxy);
    // SAFETY: socket() takes no pointers; the fd is ours and closed by `Sock`'s drop.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        let e = error::errno();
        return Err(Failure::new(e, error::strerror(e)));
    }
    struct Sock(c_int);
    impl Drop for Sock {
        fn drop(&mut self) {
            // SAFETY: our own socket, closed once.
            unsafe { real::close(self.0) };
        }
    }
    let sock = Sock(fd);
    let deadline = std::time::Instant::now() + cfg.handshake_timeout;
    crate::engine::drive::connect_proxy(sock.0, proxy, cfg.connect_timeout)?;
    let mut hs = proxify_core::chain::Handshake::new(
        &urls,
        proxify_core::socks::Command::Connect,
        target.clone(),
    )?;
    crate::engine::drive::drive(sock.0, &mut hs, deadline)?;
    frame_exchange(sock.0, msg, deadline)
}

/// Sends `msg` length-prefixed on the connected non-blocking stream `fd` and returns the one
/// message that answers it, before `deadline`.
fn frame_exchange(
    fd: c_int,
    msg: &[u8],
    deadline: std::time::Instant,
) -> Result<Vec<u8>, error::Failure> {
    use error::Failure;
    let mut frame = vec![0u8; msg.len() + 2];
    let n = dns::write_frame(msg, &mut frame)
        .ok_or_else(|| Failure::new(libc::EMSGSIZE, "query too long"))?;
    crate::engine::drive::send_all(fd, &frame[..n], deadline)?;
    let mut buf = Vec::new();
    loop {
        match dns::take_frame(&buf) {
            dns::Frame::Message(m, _) => return Ok(m.to_vec()),
            dns::Frame::Need(n) => {
                let mut chunk = [0u8; 4096];
                let want = (n - buf.len()).min(chunk.len());
                let got = crate::engine::drive::recv_some(fd, &mut chunk[..want], deadline)?;
                if got == 0 {
                    return Err(Failure::new(
                        libc::ECONNRESET,
                        "the DNS server closed the connection",
                    ));
                }
                buf.extend_from_slice(&chunk[..got]);
            }
        }
    }
}

fn gather(iov: &[iovec], buf: &mut Vec<u8>) {
    for v in iov {
        if !v.iov_base.is_null() && v.iov_len > 0 {
            // SAFETY: the caller's iovec describes readable memory.
            buf.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        if buf.len() > 65535 {
            break;
        }
    }
}

/// A datagram to the resolver `dest` (or, with None, on a socket connected to it). Returns
/// Some(bytes "sent" or -1 with errno) when answered here, None to send it for real (a name
/// routed direct: then to `dest` as given).
pub fn send(fd: c_int, dest: Option<SocketAddr>, iov: &[iovec], flags: c_int) -> Option<ssize_t> {
    let resolver = match dest {
        Some(d) => {
            match socket_type(fd).map(|t| t.0) {
                Some(libc::SOCK_DGRAM) => {}
                // TCP Fast Open to the resolver: our stream, then the data on it.
                Some(libc::SOCK_STREAM) if flags & libc::MSG_FASTOPEN != 0 && !is_tcp(fd) => {
                    if tcp_connect(fd, d) != 0 {
                        return Some(-1);
                    }
                    return tcp_send(fd, iov, flags);
                }
                // A connected stream ignores the address.
                Some(libc::SOCK_STREAM) => return tcp_send(fd, iov, flags),
                _ => return None,
            }
            d
        }
        None => {
            if let Some(r) = tcp_send(fd, iov, flags) {
                return Some(r);
            }
            connected_peer(fd)?
        }
    };
    let mut msg = Vec::new();
    gather(iov, &mut msg);
    let total = msg.len();
    let mut out = [0u8; dns::MAX_REPLY];
    match answer_msg(&msg, false, &mut out, &format!("UDP to {resolver}")) {
        Verdict::Reply { len, .. } => match deliver(fd, resolver, &out[..len]) {
            Ok(()) => Some(total as ssize_t),
            Err(e) => {
                log::warn!(
                    "dns: cannot deliver the reply on fd {fd}: {}",
                    error::strerror(e)
                );
                set_errno(e);
                Some(-1)
            }
        },
        // Nothing to answer (a response, garbage): swallowed like a datagram to nowhere.
        Verdict::Drop | Verdict::Forward => Some(total as ssize_t),
        // A direct name: to the resolver for real (the kernel socket is not connected).
        Verdict::Pass if dest.is_none() => {
            let (st, len) = sockaddr::to_storage(&resolver);
            // SAFETY: a msghdr over the caller's iovecs and our sockaddr.
            let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
            m.msg_name = &st as *const _ as *mut libc::c_void;
            m.msg_namelen = len;
            m.msg_iov = iov.as_ptr() as *mut iovec;
            m.msg_iovlen = iov.len();
            // SAFETY: `m` describes the caller's iovecs and our sockaddr, alive for the call.
            Some(unsafe { real::sendmsg(fd, &m, flags) })
        }
        Verdict::Pass => None,
    }
}

/// After a receive on `fd` filled `addr`: a reply of ours is reported as the resolver's.
/// `cap` is the size of the program's address buffer before the receive (the kernel then sets
/// `*len` to the address's full length, which can exceed it).
///
/// # Safety
/// `addr`/`len` as the program passed them to recvfrom/recvmsg (may be null), `addr` holding
/// `cap` bytes.
pub unsafe fn fix_source(
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    cap: libc::socklen_t,
) {
    if idle() || addr.is_null() || len.is_null() {
        return;
    }
    // SAFETY: non-null `addr` of `cap` bytes, `*len` of them filled by the receive: read no
    // more than both.
    let Some(from) = (unsafe { sockaddr::read(addr, (*len).min(cap)) }) else {
        return;
    };
    if !sockaddr::unmap(from).ip().is_loopback() {
        return;
    }
    let Some(Some(resolver)) = with_slot(fd, |s| {
        s.ports
            .iter()
            .any(|&p| p != 0 && p == from.port())
            .then_some(s.resolver)
    }) else {
        return;
    };
    // In the family the socket reports (an IPv6 socket talking to an IPv4 resolver sees it
    // v4-mapped).
    let shown = if from.is_ipv6() {
        match resolver {
            SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
            r => r,
        }
    } else {
        sockaddr::unmap(resolver)
    };
    // SAFETY: write_out writes min(*len, full) bytes: `*len` is set to the buffer's `cap`
    // first, then to the full length, as the kernel reports a truncated address.
    unsafe {
        *len = cap;
        sockaddr::write_out(&shown, addr, len)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let t = "# c\nnameserver 127.0.0.53\nnameserver 192.0.2.53 # x\nnameserver fe80::1%eth0\noptions edns0\nnameserver 127.0.0.53\n";
        let r = parse_resolv_conf(t);
        assert_eq!(
            r,
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "192.0.2.53".parse().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert_eq!(parse_resolv_conf(""), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
}
