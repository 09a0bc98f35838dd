//! UDP through a SOCKS5 association (RFC 1928 UDP ASSOCIATE).
//!
//! The program's own UDP socket sends and receives; only the datagrams change: each one to a
//! proxied destination is wrapped in the RFC 1928 header and sent to the relay, and each one
//! from the relay is unwrapped before the program sees it. The association lives on a TCP
//! control connection of ours (close-on-exec), kept for the socket's lifetime and closed with
//! it. If the proxy drops it, later sends fail with ECONNRESET: nothing is ever sent direct.
//!
//! Size: ~770 lines, ~75 of them unit tests: one SOCKS5 UDP path: the association set-up (~155
//! lines), the table of names sent to (so replies come from the placeholder), and the wrapping of
//! sends and unwrapping of receives (~230 lines), all on the association's fd-table entry.

use super::drive;
use crate::policy::decide::{self, Proxied, Route};
use crate::state::fakedns;
use crate::state::fdtable::{self, Assoc, Entry, Kind};
use crate::state::runtime::Runtime;
use crate::sys::error::{errno, strerror, Failure};
use crate::sys::lock::ForkSafeMutex;
use crate::sys::socket::{self, local_addr, socket_domain, sockopt_int};
use crate::sys::{real, sockaddr};
use libc::{c_int, c_void, iovec, msghdr, ssize_t};
use proxify_core::chain::Handshake;
use proxify_core::config::Chain;
use proxify_core::socks::{self, Command, TargetAddr, Version};
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// Largest RFC 1928 UDP header (domain of 255 bytes).
const MAX_HEADER: usize = 4 + 1 + 255 + 2;

fn wildcard(family: c_int) -> SocketAddr {
    if family == libc::AF_INET6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}

/// Sets up an association for the UDP socket `fd` of `family`: returns (relay as the socket
/// can address it, control fd).
///
/// `replaced` is set to the socket's original family if it had to be replaced by one of the
/// proxy's family.
pub fn associate(
    rt: &Runtime,
    fd: c_int,
    family: c_int,
    chain: &Chain,
    replaced: &mut Option<c_int>,
) -> Result<(SocketAddr, c_int), Failure> {
    let (proxy, addrs) = drive::single_hop(rt, chain, "UDP")?;
    if proxy.scheme.socks_version() != Some(Version::Socks5) {
        return Err(Failure::new(
            libc::EOPNOTSUPP,
            format!(
                "{} proxies cannot carry UDP (SOCKS5 only)",
                proxy.scheme.as_str()
            ),
        ));
    }
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, "no usable configuration"))?;
    // The relay is normally on the proxy's address: talk to the proxy in a family the UDP
    // socket can reach (IPv4-mapped on a dual-stack AF_INET6 socket).
    let v6only = family == libc::AF_INET6
        && sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0) != 0;
    let reachable = |family: c_int| {
        addrs
            .iter()
            .find(|a| (family == libc::AF_INET) == a.is_ipv4())
            .or_else(|| {
                addrs
                    .iter()
                    .find(|a| family == libc::AF_INET6 && !v6only && a.is_ipv4())
            })
            .copied()
    };
    let mut family = family;
    let paddr = match reachable(family) {
        Some(a) => a,
        None => {
            // Only the other family reaches the proxy (an IPv6-only proxy for an AF_INET
            // socket, an IPv4-only one for an IPV6_V6ONLY socket): the program's socket is
            // replaced by one of the proxy's family under the same fd number, as for TCP.
            let other = match addrs.first() {
                Some(a) => sockaddr::af(a),
                None => {
                    return Err(Failure::new(
                        libc::EAFNOSUPPORT,
                        "the proxy has no address this UDP socket can reach",
                    ))
                }
            };
            if socket_domain(fd) != other {
                super::evreg::replacing(fd, || socket::replace_family(fd, other))?;
                log::debug!("UDP fd {fd}: socket replaced by one of the proxy's family");
                *replaced = Some(family);
            }
            family = other;
            addrs
                .iter()
                .find(|a| (family == libc::AF_INET) == a.is_ipv4())
                .copied()
                .ok_or_else(|| {
                    Failure::new(
                        libc::EAFNOSUPPORT,
                        "the proxy has no address this UDP socket can reach",
                    )
                })?
        }
    };
    // The socket must have its port before we announce it.
    let mut local = local_addr(fd).ok_or_else(|| {
        let e = errno();
        Failure::new(e, format!("getsockname failed: {}", strerror(e)))
    })?;
    if local.port() == 0 {
        let (st, len) = sockaddr::to_storage(&wildcard(family));
        // SAFETY: a valid sockaddr of `len` bytes from to_storage.
        if unsafe { real::bind(fd, &st as *const _ as *const libc::sockaddr, len) } != 0 {
            let e = errno();
            return Err(Failure::new(
                e,
                format!("cannot bind the UDP socket: {}", strerror(e)),
            ));
        }
        local = local_addr(fd).ok_or_else(|| Failure::new(libc::EIO, "getsockname failed"))?;
    }
    let announce_ip = match sockaddr::unmap(local).ip() {
        ip if ip.is_unspecified() || ip.is_ipv4() != paddr.is_ipv4() => {
            wildcard(if paddr.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            })
            .ip()
        }
        ip => ip,
    };
    let announce = SocketAddr::new(announce_ip, local.port());

    let pfam = if paddr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket() takes no pointer; the fd is ours.
    let ctrl = unsafe {
        libc::socket(
            pfam,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if ctrl < 0 {
        let e = errno();
        return Err(Failure::new(
            e,
            format!("cannot create the control socket: {}", strerror(e)),
        ));
    }
    let close_ctrl = |f: Failure| {
        // SAFETY: our own control socket, closed once on this failure path.
        unsafe { real::close(ctrl) };
        f
    };
    drive::connect_proxy(ctrl, paddr, cfg.connect_timeout).map_err(close_ctrl)?;
    let mut client = Handshake::new(
        std::slice::from_ref(&proxy),
        Command::UdpAssociate,
        TargetAddr::Ip(announce),
    )
    .map_err(close_ctrl)?;
    let reply = drive::drive(ctrl, &mut client, Instant::now() + cfg.handshake_timeout)
        .map_err(|f| close_ctrl(associate_refused(f)))?;
    let relay = match reply.bound {
        TargetAddr::Ip(a) if a.ip().is_unspecified() => SocketAddr::new(paddr.ip(), a.port()),
        TargetAddr::Ip(a) => a,
        TargetAddr::Domain(..) => {
            return Err(close_ctrl(Failure::new(
                libc::EPROTO,
                "the proxy named its UDP relay by host name",
            )))
        }
    };
    let relay = sockaddr::for_family(relay, family).ok_or_else(|| {
        close_ctrl(Failure::new(
            libc::EAFNOSUPPORT,
            format!("the proxy's UDP relay {relay} is not reachable from this socket"),
        ))
    })?;
    log::debug!("UDP fd {fd}: associated, relay {relay}, control fd {ctrl}");
    Ok((relay, ctrl))
}

/// A proxy that refused UDP ASSOCIATE as a command it does not support (SOCKS5 reply 7, which
/// core maps to EOPNOTSUPP; microsocks, for one, answers so): the line says what to do.
fn associate_refused(mut f: Failure) -> Failure {
    if f.errno == libc::EOPNOTSUPP {
        f.msg.push_str(
            "; UDP needs a SOCKS5 proxy that supports UDP ASSOCIATE \
             (`proxify check` shows which of yours do)",
        );
    }
    f
}

/// Is the control connection still open? (Readable, hung up or in error means it ended: the
/// proxy sends nothing on it while the association lives.)
pub fn ctrl_alive(ctrl: c_int) -> bool {
    let mut p = libc::pollfd {
        fd: ctrl,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    let rc = unsafe { real::poll(&mut p, 1, 0) };
    rc == 0
}

/// The association of `fd`, set up now (through the chain the decision `p` for the first
/// datagram's destination chose) if it has none. One association per socket: later datagrams
/// use it whatever their destination.
pub fn assoc_for(rt: &Runtime, fd: c_int, family: c_int, p: &Proxied) -> Result<Assoc, Failure> {
    if let Some(Entry::UdpAssoc(a)) = fdtable::get(fd) {
        return Ok(a);
    }
    if fd < 0 || fd as usize >= fdtable::MAX_FD {
        return Err(Failure::new(libc::EMFILE, "fd beyond proxify's table"));
    }
    let mut replaced = None;
    let (relay, ctrl) = if crate::sys::trace::on() {
        traced_associate(rt, fd, family, p, &mut replaced)?
    } else {
        associate(rt, fd, family, p.chain, &mut replaced)?
    };
    forget_names(fd);
    let e = Assoc {
        relay,
        ctrl,
        peer: None,
    };
    if !fdtable::set(fd, Entry::UdpAssoc(e)) {
        // Untracked, the socket's datagrams would go out bare: drop the association.
        // SAFETY: ctrl is our own control socket from associate(); nothing else holds it.
        unsafe { real::close(ctrl) };
        return Err(Failure::new(
            libc::EMFILE,
            "no room in proxify's fd table for the UDP association",
        ));
    }
    if let Some(program) = replaced {
        fdtable::set_program_family(fd, program);
    }
    Ok(e)
}

/// [`associate`] with its decision and outcome lines in the trace.
fn traced_associate(
    rt: &Runtime,
    fd: c_int,
    family: c_int,
    p: &Proxied,
    replaced: &mut Option<c_int>,
) -> Result<(SocketAddr, c_int), Failure> {
    use crate::sys::trace::{self, Ev, Event, Via};
    let target = &p.target;
    trace::write(&Event {
        ev: Ev::Decision,
        call: "udp-associate",
        dest: target,
        via: Via::Chain(p.chain),
        rule: Some(&p.by),
        result: None,
        ms: None,
    });
    let t0 = Instant::now();
    let r = associate(rt, fd, family, p.chain, replaced);
    trace::write(&Event {
        ev: Ev::Outcome,
        call: "udp-associate",
        dest: target,
        via: Via::Chain(p.chain),
        rule: None,
        result: Some(r.as_ref().map_or_else(|f| f.errno, |_| 0)),
        ms: Some(t0.elapsed().as_secs_f64() * 1000.0),
    });
    r
}

/// The association of `fd` if it is an associated UDP socket.
#[inline]
pub fn assoc(fd: c_int) -> Option<Assoc> {
    // One load of the kind byte (none at all when nothing is tracked); the whole entry is
    // decoded only for an associated socket, not on every read of a proxied TCP stream.
    if fdtable::kind(fd) != Some(Kind::UdpAssoc) {
        return None;
    }
    match fdtable::get(fd) {
        Some(Entry::UdpAssoc(a)) => Some(a),
        _ => None,
    }
}

fn family_of(e: &Assoc) -> c_int {
    match e.relay {
        SocketAddr::V6(_) => libc::AF_INET6,
        _ => libc::AF_INET,
    }
}

/// The target a datagram to the program's `dest` carries in its header.
pub fn target_of(dest: SocketAddr) -> Result<TargetAddr, Failure> {
    match decide::route(dest) {
        Route::Proxy(p) => Ok(p.target),
        Route::Deny(e, why) => Err(Failure::new(e, why)),
        Route::Direct(_) => Ok(TargetAddr::Ip(sockaddr::unmap(dest))),
    }
}

/// Names an unconnected associated socket sent datagrams to, by fd (at most `MAX_NAMES`
/// each, newest last): the relay reports a reply's source by the address the proxy resolved,
/// and the program must see the placeholder it sent to instead. Each fd's names live in fixed
/// storage allocated outside the lock: remembering or finding one under the lock copies bytes,
/// it never allocates or frees (see `sys::lock`).
static SENT_NAMES: ForkSafeMutex<Option<HashMap<c_int, Box<SentNames>>>> = ForkSafeMutex::new(None);
const MAX_NAMES: usize = 16;
/// The longest name a SOCKS5 header carries (its length is one byte).
const NAME_MAX: usize = u8::MAX as usize;

/// One name sent to, and the port.
#[derive(Clone, Copy)]
struct SentName {
    port: u16,
    len: u8,
    name: [u8; NAME_MAX],
}

impl SentName {
    /// `None` for a name over 255 bytes: no datagram can carry it (its header cannot), and no
    /// placeholder stands for it.
    fn new(name: &str, port: u16) -> Option<SentName> {
        let len = u8::try_from(name.len()).ok()?;
        let mut n = SentName {
            port,
            len,
            name: [0; NAME_MAX],
        };
        n.name[..name.len()].copy_from_slice(name.as_bytes());
        Some(n)
    }

    fn name(&self) -> &str {
        // Copied whole from a &str.
        std::str::from_utf8(&self.name[..self.len as usize]).unwrap_or("")
    }
}

/// The names one socket sent to, oldest first.
struct SentNames {
    len: usize,
    names: [SentName; MAX_NAMES],
}

impl SentNames {
    const EMPTY: SentNames = SentNames {
        len: 0,
        names: [SentName {
            port: 0,
            len: 0,
            name: [0; NAME_MAX],
        }; MAX_NAMES],
    };

    /// `n` becomes the newest (moved there if known; the oldest goes when full).
    fn remember(&mut self, n: &SentName) {
        let live = &mut self.names[..self.len];
        if let Some(i) = live
            .iter()
            .position(|e| e.port == n.port && e.name() == n.name())
        {
            live[i..].rotate_left(1);
        } else if self.len == MAX_NAMES {
            self.names.rotate_left(1);
            self.names[MAX_NAMES - 1] = *n;
        } else {
            self.names[self.len] = *n;
            self.len += 1;
        }
    }

    /// The newest name sent to on `port`.
    fn newest_on(&self, port: u16) -> Option<&SentName> {
        self.names[..self.len].iter().rev().find(|e| e.port == port)
    }
}

pub(crate) fn fork_prepare() {
    SENT_NAMES.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { SENT_NAMES.raw_unlock() }
}

fn forget_names(fd: c_int) {
    let gone = SENT_NAMES.remove(&fd);
    drop(gone);
}

fn remember_name(fd: c_int, name: &str, port: u16) {
    let Some(n) = SentName::new(name, port) else {
        return;
    };
    // Usually the socket has its list already: updated in place.
    let known = SENT_NAMES
        .lock()
        .as_mut()
        .and_then(|m| m.get_mut(&fd))
        .map(|v| v.remember(&n))
        .is_some();
    if known {
        return;
    }
    let mut fresh = Box::new(SentNames::EMPTY);
    fresh.remember(&n);
    let unused = SENT_NAMES.with_room(
        |m| m,
        |m| match m.get_mut(&fd) {
            // Another thread made the list meanwhile.
            Some(v) => {
                v.remember(&n);
                Some(fresh)
            }
            None => {
                m.insert(fd, fresh);
                None
            }
        },
    );
    drop(unused);
}

/// The placeholder for a reply from `port` when the program sent to a name on that port.
fn placeholder_for_reply(fd: c_int, port: u16, family: c_int) -> Option<SocketAddr> {
    let sent = SENT_NAMES
        .lock()
        .as_ref()
        .and_then(|m| m.get(&fd)?.newest_on(port).copied())?;
    let i = fakedns::index_for(sent.name()).ok()?;
    let ip = if family == libc::AF_INET6 {
        IpAddr::V6(fakedns::v6(i))
    } else {
        IpAddr::V4(fakedns::v4(i))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod sent_names_tests {
    use super::*;

    /// The list as a Vec of (String, port) kept it before.
    fn model(v: &mut Vec<(String, u16)>, name: &str, port: u16) {
        if let Some(i) = v.iter().position(|(n, p)| n == name && *p == port) {
            v.remove(i);
        } else if v.len() >= MAX_NAMES {
            v.remove(0);
        }
        v.push((name.to_string(), port));
    }

    #[test]
    fn the_fixed_list_keeps_what_the_vec_kept() {
        let mut fixed = SentNames::EMPTY;
        let mut v = Vec::new();
        let long = "x".repeat(255);
        for i in 0..200u32 {
            let name = match i % 7 {
                0 => long.clone(),
                k => format!("n{}.example", (i * 31 + k) % 23),
            };
            let port = (i % 3) as u16 + 53;
            fixed.remember(&SentName::new(&name, port).unwrap());
            model(&mut v, &name, port);
            let got: Vec<_> = fixed.names[..fixed.len]
                .iter()
                .map(|e| (e.name().to_string(), e.port))
                .collect();
            assert_eq!(got, v, "after {i}");
            for port in 53..56 {
                assert_eq!(
                    fixed.newest_on(port).map(|e| e.name()),
                    v.iter()
                        .rev()
                        .find(|(_, p)| *p == port)
                        .map(|(n, _)| &n[..])
                );
            }
        }
        assert!(SentName::new(&"x".repeat(256), 1).is_none());
    }

    #[test]
    fn remember_and_forget_neither_allocate_nor_free_under_the_lock() {
        use crate::sys::lock::audit::count;
        let fd = 1_000_000;
        for i in 0..40 {
            let ((), n) = count(|| remember_name(fd + i % 3, &format!("h{i}.test"), 53));
            assert_eq!(n, 0, "remember {i}");
        }
        let newest = SENT_NAMES
            .lock()
            .as_ref()
            .and_then(|m| m.get(&(fd + 1))?.newest_on(53).copied());
        assert_eq!(
            newest.map(|e| e.name().to_string()).as_deref(),
            Some("h37.test")
        );
        for i in 0..3 {
            let ((), n) = count(|| forget_names(fd + i));
            assert_eq!(n, 0, "forget {i}");
        }
        assert!(SENT_NAMES.lock().as_ref().unwrap().get(&fd).is_none());
    }
}

/// Sends the datagram made of `iov` to `target` through the association of `fd`.
/// `connected`: the kernel socket is connected to the relay (no address needed).
///
/// # Safety
/// `iov` must describe readable memory; `control` as in a `msghdr`.
pub unsafe fn send(
    entry: &Assoc,
    fd: c_int,
    target: &TargetAddr,
    iov: &[iovec],
    control: (*mut c_void, usize),
    flags: c_int,
) -> ssize_t {
    if let (TargetAddr::Domain(n, p), None) = (target, entry.peer) {
        remember_name(fd, n, *p);
    }
    if entry.ctrl < 0 || !ctrl_alive(entry.ctrl) {
        log::warn!(
            "UDP to {}: the proxy closed the association; datagram not sent",
            target
        );
        crate::sys::guard::set_errno(libc::ECONNRESET);
        return -1;
    }
    let mut hdr = Vec::with_capacity(MAX_HEADER);
    if let Err(e) = socks::encode_udp_header(target, &mut hdr) {
        crate::sys::guard::set_errno(e.errno());
        return -1;
    }
    let mut vec: Vec<iovec> = Vec::with_capacity(iov.len() + 1);
    vec.push(iovec {
        iov_base: hdr.as_ptr() as *mut c_void,
        iov_len: hdr.len(),
    });
    vec.extend_from_slice(iov);
    let (st, len) = sockaddr::to_storage(&entry.relay);
    // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    if entry.peer.is_none() {
        m.msg_name = &st as *const _ as *mut c_void;
        m.msg_namelen = len;
    }
    m.msg_iov = vec.as_mut_ptr();
    m.msg_iovlen = vec.len() as _;
    m.msg_control = control.0;
    m.msg_controllen = control.1 as _;
    // SAFETY: `m` points at our header, `st` and `vec` (alive here) and the caller's iovecs and
    // control buffer, which send's caller guarantees are valid as in a msghdr.
    let n = unsafe { real::sendmsg(fd, &m, flags & !libc::MSG_FASTOPEN) };
    if n < 0 {
        return n;
    }
    (n as usize).saturating_sub(hdr.len()) as ssize_t
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Output of one unwrapped receive.
pub struct Received {
    /// Payload bytes copied into the caller's buffers.
    pub copied: usize,
    /// Full payload length (may exceed `copied`: truncated).
    pub full: usize,
    /// Source to report to the program.
    pub from: SocketAddr,
}

fn same(a: &SocketAddr, b: &SocketAddr) -> bool {
    sockaddr::unmap(*a) == sockaddr::unmap(*b)
}

/// Receives one datagram for the program on the associated socket `fd`: from the relay it is
/// unwrapped; from a direct destination it is delivered as is; anything else (and fragments,
/// and malformed headers) is dropped. Returns Err(()) with errno set on failure.
///
/// # Safety
/// `iov` must describe writable memory; `control` as in a `msghdr` (its length is updated).
pub unsafe fn recv(
    entry: &Assoc,
    fd: c_int,
    iov: &[iovec],
    control: (*mut c_void, *mut usize),
    flags: c_int,
) -> Result<Received, ()> {
    let want: usize = iov.iter().map(|v| v.iov_len).sum::<usize>().min(65536);
    let family = fdtable::program_family(fd).unwrap_or_else(|| family_of(entry));

    SCRATCH.with(|s| {
        let mut buf = s.borrow_mut();
        if buf.len() < want + MAX_HEADER {
            buf.resize(want + MAX_HEADER, 0);
        }
        loop {
            // SAFETY: all-zero bytes are a valid value of this plain C struct.
            let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut v = iovec {
                iov_base: buf.as_mut_ptr() as *mut c_void,
                iov_len: want + MAX_HEADER,
            };
            // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_name = &mut from as *mut _ as *mut c_void;
            m.msg_namelen = std::mem::size_of_val(&from) as _;
            m.msg_iov = &mut v;
            m.msg_iovlen = 1;
            if !control.1.is_null() {
                m.msg_control = control.0;
                // SAFETY: a non-null `control.1` is the caller's control length (recv's contract).
                m.msg_controllen = unsafe { *control.1 } as _;
            }
            // SAFETY: `m` points at `from`, our scratch buffer of `v.iov_len` bytes and the
            // caller's control buffer of `msg_controllen` bytes (recv's contract).
            let n = unsafe { real::recvmsg(fd, &mut m, flags | libc::MSG_TRUNC) };
            if n < 0 {
                return Err(());
            }
            if !control.1.is_null() {
                // SAFETY: a non-null `control.1` is the caller's writable length (recv's contract).
                unsafe { *control.1 = m.msg_controllen as usize };
            }
            let full = n as usize;
            let got = full.min(want + MAX_HEADER);
            // SAFETY: `from` is a sockaddr_storage, as large as any address the kernel reports
            // in `msg_namelen`.
            let src = unsafe {
                sockaddr::read(&from as *const _ as *const libc::sockaddr, m.msg_namelen)
            };
            let drop_it = |why: &str| {
                log::debug!("UDP fd {fd}: dropped a datagram ({why})");
                if flags & libc::MSG_PEEK != 0 {
                    // Consume the peeked datagram so the next look sees the one after it.
                    // SAFETY: a zero-length receive into no buffer: nothing is written.
                    unsafe { real::recv(fd, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT) };
                }
            };
            let Some(src) = src else {
                drop_it("no source address");
                continue;
            };
            let from_relay = same(&entry.relay, &src);
            if !from_relay {
                if entry.peer.is_none() && matches!(decide::route(src), Route::Direct(_)) {
                    // SAFETY: `iov` describes writable memory (recv's contract).
                    let copied = unsafe { scatter(&buf[..got.min(want)], iov) };
                    return Ok(Received {
                        copied,
                        full,
                        from: src,
                    });
                }
                drop_it("not from the relay");
                continue;
            }
            let (hdr, off) = match socks::parse_udp_header(&buf[..got]) {
                Ok(x) => x,
                Err(_) => {
                    drop_it("malformed header from the relay");
                    continue;
                }
            };
            if hdr.frag != 0 {
                drop_it("fragment");
                continue;
            }
            let origin = match &hdr.addr {
                TargetAddr::Ip(a) => *a,
                TargetAddr::Domain(n, p) => match fakedns::index_for(n) {
                    Ok(i) => SocketAddr::new(IpAddr::V4(fakedns::v4(i)), *p),
                    Err(_) => {
                        drop_it("source name has no placeholder");
                        continue;
                    }
                },
            };
            let from = match entry.peer {
                Some(peer) => {
                    // Connected: only the connected peer's datagrams.
                    let ok = match target_of(peer) {
                        Ok(TargetAddr::Ip(p)) => same(&p, &origin),
                        _ => true,
                    };
                    if !ok {
                        drop_it("not from the connected peer");
                        continue;
                    }
                    peer
                }
                // A reply to a datagram the program sent by name carries the address the
                // proxy resolved: report the placeholder the program used.
                None => match placeholder_for_reply(fd, origin.port(), family)
                    .or_else(|| sockaddr::for_family(origin, family))
                {
                    Some(a) => a,
                    None => {
                        drop_it("source not expressible in the socket's family");
                        continue;
                    }
                },
            };
            let payload = &buf[off.min(got)..got];
            // SAFETY: `iov` describes writable memory (recv's contract).
            let copied = unsafe { scatter(payload, iov) };
            return Ok(Received {
                copied,
                full: full.saturating_sub(off),
                from,
            });
        }
    })
}

/// Copies `data` into the caller's buffers; returns the bytes copied.
unsafe fn scatter(data: &[u8], iov: &[iovec]) -> usize {
    let mut done = 0;
    for v in iov {
        if done >= data.len() {
            break;
        }
        let n = v.iov_len.min(data.len() - done);
        if n > 0 {
            // SAFETY: done + n <= data.len(), and `v` has n <= iov_len writable bytes (scatter's
            // contract); `data` is our scratch buffer, apart from the caller's memory.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr().add(done), v.iov_base as *mut u8, n)
            };
        }
        done += n;
    }
    done
}
