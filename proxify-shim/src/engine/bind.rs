//! SOCKS BIND: a listening socket whose connection comes from the remote side (active FTP).
//!
//! On `listen()` (when the policy says so) the program's own socket is connected to the proxy
//! and sends BIND; `listen` returns once the first reply names the address the proxy listens
//! on, which `getsockname` then reports, so the program announces the proxy's address. The
//! second reply (the remote side connected) arrives on that same socket: poll, select and
//! epoll see it readable exactly when a connection is there, and `accept` reads the reply and
//! returns a duplicate of the socket, now the data connection. No local listener is ever
//! exposed: if the proxy refuses, `listen` fails.

use super::drive;
use crate::policy::decide::Proxied;
use crate::state::fdtable::{self, Entry};
use crate::state::runtime::Runtime;
use crate::sys::error::{errno, strerror, Failure};
use crate::sys::lock::ForkSafeMutex;
use crate::sys::socket::{self, disconnect, local_addr, with_nonblocking};
use crate::sys::{real, sockaddr};
use libc::c_int;
use proxify_core::chain::Handshake;
use proxify_core::cidr::is_loopback;
use proxify_core::config::BindPolicy;
use proxify_core::socks::{Command, TargetAddr};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the lock guards is changed by moves and copies only (see `sys::lock`): the peer is
/// shared, the reported addresses live in a fixed ring, the map grows outside the lock, and
/// what leaves it is dropped after the guard.
struct State {
    /// Peer of the most recent proxied connection (the default expected BIND peer).
    last_peer: Option<Arc<TargetAddr>>,
    /// SOCKS clients waiting for their second reply, by listening fd.
    pending: Option<HashMap<c_int, Handshake>>,
    /// Proxy-side addresses we reported (BND of CONNECT replies): a program that binds a new
    /// socket to one of them gets the wildcard address instead (curl's active FTP does this).
    /// The last `REPORTED` distinct ones, in a ring: `next` is where the next one goes (the
    /// oldest is replaced).
    reported: [Option<IpAddr>; REPORTED],
    next: usize,
}

const REPORTED: usize = 16;

static STATE: ForkSafeMutex<State> = ForkSafeMutex::new(State {
    last_peer: None,
    pending: None,
    reported: [None; REPORTED],
    next: 0,
});

pub(crate) fn fork_prepare() {
    STATE.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { STATE.raw_unlock() }
}

/// Remembers a successful proxied connection (and the proxy-side address it reported).
pub fn note_connection(target: &TargetAddr, bound: Option<SocketAddr>) {
    let peer = Arc::new(target.clone());
    let ip = bound.map(|b| sockaddr::unmap(b).ip());
    let previous = {
        let mut s = STATE.lock();
        if let Some(ip) = ip {
            if !s.reported.contains(&Some(ip)) {
                let i = s.next;
                s.reported[i] = Some(ip);
                s.next = (i + 1) % REPORTED;
            }
        }
        s.last_peer.replace(peer)
    };
    drop(previous);
}

/// Is `ip` a proxy-side address we reported to the program?
pub fn is_reported(ip: &IpAddr) -> bool {
    let ip = sockaddr::unmap(SocketAddr::new(*ip, 0)).ip();
    STATE.lock().reported.contains(&Some(ip))
}

/// The expected BIND peer: the most recent proxied connection's address, port 0 (the remote
/// side connects back from a port we cannot know; FTP uses 20).
fn expected_peer() -> Option<TargetAddr> {
    let last = STATE.lock().last_peer.clone();
    last.map(|t| match &*t {
        TargetAddr::Ip(a) => TargetAddr::Ip(SocketAddr::new(a.ip(), 0)),
        TargetAddr::Domain(n, _) => TargetAddr::Domain(n.clone(), 0),
    })
}

/// A socket bound to a proxy-side address we reported (curl's active FTP binds to the control
/// connection's getsockname, then reads the port before listen): the BIND starts at bind time,
/// unless the policy is `never`. Returns the expected peer if so.
pub fn wanted_at_bind(rt: &Runtime) -> Option<TargetAddr> {
    if rt.config()?.bind == BindPolicy::Never {
        return None;
    }
    expected_peer()
}

/// Set when the program asks `getsockname()` of a proxied connection, taken by the next
/// `listen`: a program that reads its own address on a connection before it listens is about
/// to announce an address to the remote side (an FTP client's `PORT`/`EPRT`).
static ASKED_LOCAL: AtomicBool = AtomicBool::new(false);

/// The program asked `getsockname()` of a proxied connection (see `ASKED_LOCAL`).
#[inline]
pub fn note_local_address_asked() {
    ASKED_LOCAL.store(true, Ordering::Relaxed);
}

/// Why `listen` became a BIND, for the decision line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `--bind always`.
    Always,
    /// `auto`: the program asked a proxied connection's own address before listening.
    AskedLocalAddress,
    /// `auto`: a backlog of one on an ephemeral port: a listener for exactly the one connection
    /// a BIND carries, as Python's ftplib opens before it reads the control connection's
    /// address.
    SingleConnection,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::Always => "--bind always",
            Why::AskedLocalAddress => {
                "bind auto: it asked a proxied connection's address before listening"
            }
            Why::SingleConnection => "bind auto: backlog 1 on an ephemeral port",
        })
    }
}

/// Why a listener stays local, for the decision line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `--bind never`, or no usable configuration.
    Never,
    /// Bound to a loopback address.
    Loopback,
    /// Bound to a fixed port: a server of this host.
    FixedPort,
    /// No proxied connection yet: nobody remote to announce the address to.
    NoProxiedConnection,
    /// `auto`, and nothing shows the address will be announced to the remote side.
    NotAnnounced,
    /// The local address is unknown (not an Internet socket, or getsockname failed).
    Unknown,
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Local::Never => "--bind never",
            Local::Loopback => "loopback",
            Local::FixedPort => "fixed port",
            Local::NoProxiedConnection => "no proxied connection yet",
            Local::NotAnnounced => {
                "bind auto: it did not ask a proxied connection's address; --bind always makes it a BIND"
            }
            Local::Unknown => "not an Internet socket",
        })
    }
}

/// Should `listen(fd, backlog)` become a BIND? The expected peer and why, or why not.
///
/// `auto` turns a listener into a BIND only when the program shows it will announce the
/// address to the remote side: it asked `getsockname()` of a proxied connection since its last
/// `listen` (FTP clients do, for `PORT`), or it listens with a backlog of one (a listener for
/// one data connection). A bind to a proxy-side address proxify reported starts its BIND at
/// `bind()` time (`wanted_at_bind`). An ordinary server on an ephemeral port (node's
/// `listen(0)`, Python's `create_server(('', 0))`: an OAuth callback, a test server) stays a
/// local listener, as do loopback listeners and fixed ports.
pub fn wanted(rt: &Runtime, fd: c_int, backlog: c_int) -> Result<(TargetAddr, Why), Local> {
    let asked = ASKED_LOCAL.swap(false, Ordering::Relaxed);
    let cfg = rt.config().ok_or(Local::Never)?;
    if cfg.bind == BindPolicy::Never {
        return Err(Local::Never);
    }
    let local = local_addr(fd).ok_or(Local::Unknown)?;
    let ip = sockaddr::unmap(local).ip();
    if is_loopback(&ip) {
        return Err(Local::Loopback);
    }
    let ephemeral = local.port() == 0 || matches!(fdtable::get(fd), Some(Entry::BoundEphemeral));
    let last = expected_peer();
    if cfg.bind == BindPolicy::Always {
        let peer = last.unwrap_or(TargetAddr::Ip(SocketAddr::new(
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            0,
        )));
        return Ok((peer, Why::Always));
    }
    if !ephemeral {
        return Err(Local::FixedPort);
    }
    let peer = last.ok_or(Local::NoProxiedConnection)?;
    if asked {
        Ok((peer, Why::AskedLocalAddress))
    } else if backlog <= 1 {
        Ok((peer, Why::SingleConnection))
    } else {
        Err(Local::NotAnnounced)
    }
}

/// Turns `listen` on `fd` (of `family`) into a BIND towards the decision `p`'s target (the
/// peer); returns BND of the first reply as the socket can express it.
pub fn start(rt: &Runtime, fd: c_int, family: c_int, p: Proxied) -> Result<SocketAddr, Failure> {
    let (proxy, addrs) = drive::single_hop(rt, p.chain, "BIND")?;
    let peer = p.target;
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, "no usable configuration"))?;
    let mut family = family;
    let mut replaced = None;
    let paddr = match drive::pick_proxy_addr(fd, family, &addrs) {
        Ok(a) => a,
        Err(f) => {
            // Only the other family reaches the proxy: the listening socket is replaced by
            // one of the proxy's family under the same fd number (as for connect).
            let Some(other) = addrs.first().map(sockaddr::af) else {
                return Err(f);
            };
            super::evreg::replacing(fd, || socket::replace_family(fd, other))?;
            replaced = Some(family);
            family = other;
            drive::pick_proxy_addr(fd, family, &addrs)?
        }
    };
    let mut client = Handshake::new(std::slice::from_ref(&proxy), Command::Bind, peer)?;
    let reply = with_nonblocking(fd, || {
        drive::connect_proxy(fd, paddr, cfg.connect_timeout)?;
        drive::drive(fd, &mut client, Instant::now() + cfg.handshake_timeout)
    })?;
    let bound = match reply.bound {
        TargetAddr::Ip(a) if a.ip().is_unspecified() => SocketAddr::new(paddr.ip(), a.port()),
        TargetAddr::Ip(a) => a,
        TargetAddr::Domain(..) => {
            disconnect(fd);
            return Err(Failure::new(
                libc::EPROTO,
                "the proxy named its BIND address by host name",
            ));
        }
    };
    let bound = sockaddr::unmap(bound);
    let shown = sockaddr::for_family(bound, family).unwrap_or(bound);
    if let Err(f) = client.expect_second_reply() {
        disconnect(fd);
        return Err(f);
    }
    let displaced = STATE.with_room(|s| &mut s.pending, |m| m.insert(fd, client));
    drop(displaced);
    let tracked = fdtable::set(fd, Entry::BindListen { bound: shown });
    if !tracked {
        // Untracked, accept and getsockname would not know the socket is a BIND.
        let removed = STATE.lock().pending.as_mut().and_then(|m| m.remove(&fd));
        drop(removed);
        disconnect(fd);
        return Err(Failure::new(
            libc::EMFILE,
            "no room in proxify's fd table for the BIND socket",
        ));
    }
    if let Some(program) = replaced {
        fdtable::set_program_family(fd, program);
    }
    Ok(shown)
}

/// `accept` on a BIND socket: waits (unless non-blocking) for the second reply, then returns a
/// duplicate of the socket as the accepted connection and the remote peer.
pub fn accept(rt: &Runtime, fd: c_int, flags: c_int) -> Result<(c_int, SocketAddr), Failure> {
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, "no usable configuration"))?;
    // SAFETY: F_GETFL takes no pointer.
    let status = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if status < 0 {
        let e = errno();
        return Err(Failure::new(e, strerror(e)));
    }
    // Wait for the first byte of the second reply as accept would wait for a connection.
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = if status & libc::O_NONBLOCK != 0 {
        0
    } else {
        -1
    };
    // SAFETY: one pollfd we own.
    let rc = unsafe { real::poll(&mut p, 1, timeout) };
    if rc < 0 {
        let e = errno();
        return Err(Failure::new(e, strerror(e)));
    }
    if rc == 0 {
        return Err(Failure::new(libc::EAGAIN, "no connection yet"));
    }
    let taken = STATE.lock().pending.as_mut().and_then(|m| m.remove(&fd));
    let Some(mut client) = taken else {
        return Err(Failure::new(
            libc::ECONNABORTED,
            "the BIND connection was already accepted",
        ));
    };
    let reply = drive::drive(fd, &mut client, Instant::now() + cfg.handshake_timeout)?;
    let peer = match reply.bound {
        TargetAddr::Ip(a) => a,
        TargetAddr::Domain(n, p) => {
            let i = crate::state::fakedns::index_for(&n).unwrap_or(0);
            SocketAddr::new(IpAddr::V4(crate::state::fakedns::v4(i)), p)
        }
    };
    let cmd = if flags & libc::SOCK_CLOEXEC != 0 {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: accept on the listening socket takes null address pointers here.
    let nfd = unsafe { real::fcntl(fd, cmd, 0) };
    if nfd < 0 {
        let e = errno();
        return Err(Failure::new(e, strerror(e)));
    }
    // The duplicate shares the file description: its O_NONBLOCK is what accept4 asked for.
    let want = if flags & libc::SOCK_NONBLOCK != 0 {
        status | libc::O_NONBLOCK
    } else {
        status & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL on the connection we just accepted takes no pointer.
    unsafe { real::fcntl(nfd, libc::F_SETFL, want as libc::c_ulong) };
    // The accepted connection's proxy-side address: the BIND's (what getsockname reports).
    let bound = match fdtable::get(fd) {
        Some(Entry::BindListen { bound }) => Some(bound),
        _ => None,
    };
    let e = Entry::ProxiedTcp { peer, bound };
    let program = fdtable::program_family(fd);
    if !fdtable::set(nfd, e) {
        // The program must not get a proxied connection proxify does not know about.
        // SAFETY: nfd is the connection accept just returned to us; the program never saw it.
        unsafe { real::close(nfd) };
        return Err(Failure::new(
            libc::EMFILE,
            "no room in proxify's fd table for the accepted connection",
        ));
    }
    if let Some(pf) = program {
        fdtable::set_program_family(nfd, pf);
    }
    Ok((nfd, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::lock::audit::count;

    // One test: STATE is process-wide.
    #[test]
    fn state_changes_neither_allocate_nor_free_under_the_lock() {
        let ip = |i: u8| IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, i));
        let target = TargetAddr::Domain("ftp.example".into(), 21);
        for i in 0..20u8 {
            let ((), n) = count(|| note_connection(&target, Some(SocketAddr::new(ip(i), 1))));
            assert_eq!(n, 0, "note_connection {i}");
        }
        let (seen, n) = count(|| (0..20).map(|i| is_reported(&ip(i))).collect::<Vec<_>>());
        assert_eq!(n, 0);
        // The last 16 distinct addresses, as before.
        assert_eq!(seen, (0..20).map(|i| i >= 4).collect::<Vec<_>>());
        let v6 = IpAddr::V6(std::net::Ipv4Addr::new(198, 51, 100, 19).to_ipv6_mapped());
        assert!(is_reported(&v6));
        note_connection(&target, Some(SocketAddr::new(ip(10), 1)));
        assert!(
            is_reported(&ip(4)),
            "a known address does not evict the oldest"
        );
        let (peer, n) = count(expected_peer);
        assert_eq!(n, 0);
        assert_eq!(peer, Some(TargetAddr::Domain("ftp.example".into(), 0)));
        let a = TargetAddr::Ip("203.0.113.5:2121".parse().unwrap());
        note_connection(&a, None);
        assert_eq!(
            expected_peer(),
            Some(TargetAddr::Ip("203.0.113.5:0".parse().unwrap()))
        );
    }
}
