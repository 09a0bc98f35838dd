//! `connect` and `getpeername`.

use crate::engine;
use crate::policy::decide::{self, Proxied, Route};
use crate::state::fdtable::{self, Entry, Kind};
use crate::state::runtime;
use crate::sys::error::{errno, strerror};
use crate::sys::guard::{hook, set_errno};
use crate::sys::real;
use crate::sys::sockaddr as sa;
use crate::sys::socket::{socket_domain, sockopt_int};
use crate::sys::trace;
use libc::{c_int, sockaddr, socklen_t};
use std::net::SocketAddr;

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is null or points to `len` bytes (connect's contract).
    match unsafe { sa::family(addr, len) } {
        Some(libc::AF_INET) | Some(libc::AF_INET6) => {}
        Some(libc::AF_UNSPEC) if !crate::engine::dnsresp::idle() && fdtable::none_tracked() => {
            crate::engine::dnsresp::forget(fd);
            // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
            return unsafe { real::connect(fd, addr, len) };
        }
        Some(libc::AF_UNSPEC) if !fdtable::none_tracked() => {
            return hook(
                // SAFETY: the caller's connect arguments, as reentered_dissolve takes them.
                || unsafe { reentered_dissolve(fd, addr, len) },
                -1,
                libc::EIO,
                || {
                    crate::engine::dnsresp::forget(fd);
                    // SAFETY: the caller's connect arguments, unchanged (dissolve's contract).
                    unsafe { dissolve(fd, addr, len) }
                },
            );
        }
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        _ => return unsafe { real::connect(fd, addr, len) },
    }
    hook(
        // SAFETY: the caller's connect arguments, unchanged (reentered_connect's contract).
        || unsafe { reentered_connect(fd, addr, len) },
        -1,
        libc::EIO,
        // SAFETY: the caller's connect arguments, unchanged (connect_inet's contract).
        || unsafe { connect_inet(fd, addr, len) },
    )
}

/// `connect` from a signal handler that interrupted proxify on this thread (see
/// `sys::guard::hook`): no lock, no allocation, no log. A loopback destination is connected
/// as usual; anything that would need the policy or a handshake fails with EAGAIN.
unsafe fn reentered_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is null or points to `len` bytes (connect's contract).
    match unsafe { sa::read(addr, len) } {
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        Some(dest) if decide::trivially_direct(&dest) => unsafe { real::connect(fd, addr, len) },
        _ => fail(libc::EAGAIN),
    }
}

/// `connect(AF_UNSPEC)` from such a handler: only an fd proxify keeps no state for.
unsafe fn reentered_dissolve(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if fdtable::kind(fd).is_none() && crate::engine::dnsresp::idle() {
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        unsafe { real::connect(fd, addr, len) }
    } else {
        fail(libc::EAGAIN)
    }
}

/// `connect(AF_UNSPEC)`: dissolves the socket's association with its peer, as the kernel does.
/// A proxied TCP socket forgets its destination (getpeername: ENOTCONN; a new connect starts
/// afresh); a handshake under way is abandoned. A UDP socket is no longer connected through
/// the relay, and keeps its local port (the kernel would release an auto-bound one, and the
/// relay only answers the port the association announced), so replies keep coming.
unsafe fn dissolve(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match fdtable::kind(fd) {
        Some(Kind::Handshaking | Kind::ReplyPending) => {
            crate::engine::nbconnect::abandon(fd);
            // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
            unsafe { real::connect(fd, addr, len) }
        }
        Some(Kind::ProxiedTcp | Kind::HandshakeFailed) => {
            // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
            let r = unsafe { real::connect(fd, addr, len) };
            if r == 0 {
                crate::sys::socket::close_ours(fdtable::forget(fd));
            }
            r
        }
        _ if crate::engine::udp::assoc(fd).is_some() => {
            let before = crate::sys::socket::local_addr(fd);
            // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
            let r = unsafe { real::connect(fd, addr, len) };
            if r == 0 {
                fdtable::set_peer(fd, None);
                let after = crate::sys::socket::local_addr(fd);
                if let (Some(b), Some(a)) = (before, after) {
                    if b.port() != 0 && a.port() == 0 {
                        let mut keep = b;
                        keep.set_ip(match b {
                            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                        });
                        let (st, l) = sa::to_storage(&keep);
                        // SAFETY: `st` is a valid sockaddr of `l` bytes from to_storage.
                        if unsafe { real::bind(fd, &st as *const _ as *const sockaddr, l) } != 0 {
                            log::warn!(
                                "UDP fd {fd}: cannot keep local port {} after AF_UNSPEC: {}; \
                                 replies through the proxy may be lost",
                                b.port(),
                                strerror(errno())
                            );
                        }
                    }
                }
            }
            r
        }
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        _ => unsafe { real::connect(fd, addr, len) },
    }
}

fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

unsafe fn connect_inet(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is null or points to `len` bytes (connect's contract).
    let Some(dest) = (unsafe { sa::read(addr, len) }) else {
        // Too short to be an address: the kernel refuses it without sending anything.
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        return unsafe { real::connect(fd, addr, len) };
    };
    if dest.port() == 53 && crate::engine::dnsresp::is_resolver(&dest) {
        if let Some(r) = crate::engine::dnsresp::connect(fd, dest) {
            return r;
        }
    }
    crate::engine::dnsresp::forget(fd);
    let tracked = fdtable::get(fd);
    if let Some(Entry::ProxiedTcp { .. } | Entry::ReplyPending { .. }) = tracked {
        return fail(libc::EISCONN);
    }
    if let Some(Entry::Handshaking { .. } | Entry::HandshakeFailed { .. }) = tracked {
        // A non-blocking proxied connect under way (EALREADY), done (EISCONN) or failed
        // (its errno, once; then the socket may connect again).
        if let Some(e) = crate::engine::nbconnect::connect_again(fd) {
            return fail(e);
        }
    }
    if decide::trivially_direct(&dest) {
        log::debug!("connect fd {fd} to {dest}: direct (loopback)");
        if tracked.is_some() {
            // A UDP socket with an association now talks to a direct peer: drop it.
            crate::sys::socket::close_ours(fdtable::forget(fd));
        }
        if trace::on() {
            // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
            return traced_direct(dest, &"loopback", || unsafe {
                real::connect(fd, addr, len)
            });
        }
        // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
        return unsafe { real::connect(fd, addr, len) };
    }
    let rt = runtime::get();
    match decide::route(dest) {
        Route::Direct(why) => {
            log::info!("connect fd {fd} to {dest}: direct {why}");
            if tracked.is_some() {
                crate::sys::socket::close_ours(fdtable::forget(fd));
            }
            let go = || {
                if let decide::Direct::Rule(_, Some(to)) = why {
                    // dnat: the rewritten address, in the socket's family.
                    let fam = socket_domain(fd);
                    let to = sa::for_family(to, fam).unwrap_or(to);
                    let (st, l) = sa::to_storage(&to);
                    // SAFETY: `st` is a valid sockaddr of `l` bytes from to_storage.
                    return unsafe { real::connect(fd, &st as *const _ as *const sockaddr, l) };
                }
                // SAFETY: the caller's arguments, unchanged, under libc's connect contract.
                unsafe { real::connect(fd, addr, len) }
            };
            if trace::on() {
                return traced_direct(dest, &why, go);
            }
            go()
        }
        Route::Deny(e, why) => {
            log::warn!("refusing connection to {dest}: {why}");
            if trace::on() {
                trace::write(&trace::Event {
                    ev: trace::Ev::Decision,
                    call: "connect",
                    dest: &Asked(dest),
                    via: trace::Via::Deny,
                    rule: Some(&why),
                    result: Some(e),
                    ms: None,
                });
            }
            fail(e)
        }
        Route::Proxy(p) => connect_proxied(rt, fd, dest, p),
    }
}

/// The destination as the program gave it: a placeholder's name (`name:port`), else the
/// address. (For the trace only: the placeholder's name is looked up again.)
struct Asked(SocketAddr);

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = sa::unmap(self.0).ip();
        match crate::state::fakedns::is_placeholder(&ip)
            .then(|| crate::state::fakedns::name_of(&ip))
            .flatten()
        {
            Some(n) => write!(f, "{n}:{}", self.0.port()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A direct connect while tracing: its decision line, the connect, its outcome line (the
/// trace's writes keep errno as the connect left it).
fn traced_direct(
    dest: SocketAddr,
    why: &dyn std::fmt::Display,
    go: impl FnOnce() -> c_int,
) -> c_int {
    let asked = Asked(dest);
    trace::write(&trace::Event {
        ev: trace::Ev::Decision,
        call: "connect",
        dest: &asked,
        via: trace::Via::Direct,
        rule: Some(why),
        result: None,
        ms: None,
    });
    let t0 = std::time::Instant::now();
    let r = go();
    let e = if r == 0 { 0 } else { errno() };
    trace::write(&trace::Event {
        ev: trace::Ev::Outcome,
        call: "connect",
        dest: &asked,
        via: trace::Via::Direct,
        rule: None,
        result: Some(e),
        ms: Some(t0.elapsed().as_secs_f64() * 1000.0),
    });
    r
}

fn connect_proxied(rt: &runtime::Runtime, fd: c_int, dest: SocketAddr, p: Proxied) -> c_int {
    let Some(ty) = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) else {
        return fail(errno());
    };
    match ty {
        // (A stream socket of another protocol, SCTP, reaches only the proxy and fails there.)
        libc::SOCK_STREAM => {}
        libc::SOCK_DGRAM => {
            // A UDP socket of either family may be given an IPv4 address: ask the kernel.
            return connect_udp(rt, fd, socket_domain(fd), dest, &p);
        }
        _ => {
            log::warn!(
                "refusing connection to {}: socket type {ty} cannot go through a SOCKS proxy",
                p.target
            );
            return fail(libc::EACCES);
        }
    }
    let Proxied { target, chain, by } = p;
    // A TCP socket's family is its address's (the kernel refuses any other).
    let domain = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    if fd < 0 || fd as usize >= fdtable::MAX_FD {
        log::warn!(
            "refusing connection to {}: fd {fd} is beyond proxify's table",
            target
        );
        return fail(libc::EMFILE);
    }
    // The one decision line (its texts are built only when it is written).
    log::info!(
        "connect fd {fd} to {target}: through {} ({by})",
        engine::drive::via_of(chain)
    );
    if trace::on() {
        trace::write(&trace::Event {
            ev: trace::Ev::Decision,
            call: "connect",
            dest: &target,
            via: trace::Via::Chain(chain),
            rule: Some(&by),
            result: None,
            ms: None,
        });
    }
    // SAFETY: F_GETFL takes no pointer.
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
    if flags < 0 {
        return fail(errno());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // EINPROGRESS at once; the handshake runs from the program's poll/select/epoll calls.
        return crate::engine::nbconnect::start(rt, fd, domain, dest, target, chain, flags);
    }
    // Blocking: the same machinery, driven to its end (EINTR and SO_SNDTIMEO as the kernel).
    engine::connect::connect(rt, fd, domain, dest, target, chain, flags)
}

/// `connect` of a UDP socket to a proxied destination: the association is set up (if the
/// socket has none), the kernel socket is connected to the relay, and the program's peer is
/// remembered for `getpeername`, `send`/`write` (wrapped) and `recv`/`read` (filtered).
fn connect_udp(
    rt: &runtime::Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    p: &Proxied,
) -> c_int {
    let target = &p.target;
    let entry = match crate::engine::udp::assoc_for(rt, fd, domain, p) {
        Ok(e) => e,
        Err(f) => {
            log::warn!("refusing UDP to {}: {}", target, f.msg);
            return fail(f.errno);
        }
    };
    let relay = entry.relay;
    let (st, len) = sa::to_storage(&relay);
    // SAFETY: a valid sockaddr of `len` bytes from to_storage.
    let r = unsafe { real::connect(fd, &st as *const _ as *const sockaddr, len) };
    if r != 0 {
        let e = errno();
        log::warn!(
            "refusing UDP to {}: cannot connect to the relay {relay}: {}",
            target,
            strerror(e)
        );
        return fail(e);
    }
    fdtable::set_peer(fd, Some(dest));
    log::debug!("UDP fd {fd} connected to {} through relay {relay}", target);
    0
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if !crate::engine::dnsresp::idle() {
        if let Some(p) = hook(
            || None,
            None,
            libc::EIO,
            || crate::engine::dnsresp::connected_peer(fd),
        ) {
            if addr.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: non-null, the caller's buffer of `*len` bytes (getpeername's contract).
            unsafe { sa::write_out(&p, addr, len) };
            return 0;
        }
    }
    if fdtable::none_tracked() {
        // SAFETY: the caller's arguments, unchanged, under libc's getpeername contract.
        return unsafe { real::getpeername(fd, addr, len) };
    }
    let tracked = fdtable::get(fd);
    match (tracked, tracked.and_then(|e| e.peer())) {
        // Like the kernel while a connect is in progress (or after it failed).
        (Some(Entry::Handshaking { .. } | Entry::HandshakeFailed { .. }), _) => {
            fail(libc::ENOTCONN)
        }
        (Some(_), Some(p)) => {
            if addr.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            // SAFETY: non-null, the caller's buffer of `*len` bytes (getpeername's contract).
            unsafe { sa::write_out(&p, addr, len) };
            0
        }
        // SAFETY: the caller's arguments, unchanged, under libc's getpeername contract.
        (Some(_), None) => unsafe { real::getpeername(fd, addr, len) },
        (None, _) => {
            // SAFETY: non-null, the caller's socklen_t (getpeername's contract).
            let cap = if len.is_null() { 0 } else { unsafe { *len } };
            // SAFETY: the caller's arguments, unchanged, under libc's getpeername contract.
            let r = unsafe { real::getpeername(fd, addr, len) };
            if r == 0 && !addr.is_null() && !len.is_null() {
                hook(
                    || (),
                    (),
                    0,
                    // SAFETY: getpeername just filled the caller's non-null `addr` and `len`.
                    || unsafe { adopt_if_copy(fd, addr, len, cap) },
                );
            }
            r
        }
    }
}

/// An untracked fd whose peer is a proxy may be a copy of a proxied socket made before its
/// connect (dup before connect, a child forked earlier, an fd passed over a UNIX socket): the
/// state is under the other fd number. Find it by the socket's inode and adopt it; report the
/// destination instead of the proxy. Only this rare path pays for the search.
unsafe fn adopt_if_copy(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, cap: socklen_t) {
    // SAFETY: `addr` holds `cap` bytes (the caller's buffer size before getpeername) of which
    // getpeername filled `*len` (the full length, which can exceed `cap`): read no more than
    // both.
    let Some(seen) = (unsafe { sa::read(addr, (*len).min(cap)) }) else {
        return;
    };
    let rt = runtime::get();
    let Some(cfg) = rt.config() else {
        return;
    };
    let is_proxy = cfg.chains.iter().flat_map(|c| c.hops.iter()).any(|h| {
        rt.hop_addrs(h)
            .map(|v| v.iter().any(|a| sa::unmap(*a) == sa::unmap(seen)))
            .unwrap_or(false)
    });
    if !is_proxy {
        return;
    }
    let ino = |f: c_int| {
        // SAFETY: all-zero bytes are a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into a stat we own.
        (unsafe { libc::fstat(f, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
    };
    let Some(me) = ino(fd) else {
        return;
    };
    let found = fdtable::find(|other, e| {
        other != fd && e.kind() == Kind::ProxiedTcp && ino(other) == Some(me)
    });
    if let Some((_, e)) = found {
        // Only a cache: untracked, the next getpeername finds the copy again the same way.
        let _ = fdtable::set(fd, e);
        if let Some(p) = e.peer() {
            // SAFETY: `len` is the caller's non-null socklen_t (adopt_if_copy's contract).
            unsafe { *len = cap };
            // SAFETY: `addr` is the caller's buffer of `cap` bytes, now `*len` again.
            unsafe { sa::write_out(&p, addr, len) };
        }
    }
}
