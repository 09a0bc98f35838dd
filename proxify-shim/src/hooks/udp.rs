//! `sendto`, `sendmsg`, `sendmmsg`, `send`, `recvfrom`, `recvmsg`, `recvmmsg`, `recv`.
//!
//! A datagram to a destination that is not direct goes through the socket's SOCKS5 UDP
//! association (see `engine/udp.rs`); with a SOCKS4 proxy it is refused. A TCP Fast Open send
//! (`MSG_FASTOPEN` on an unconnected TCP socket) to a proxied destination is the proxied
//! connect followed by the send: the data goes after the proxy's handshake.
//!
//! A TCP socket whose non-blocking proxied connect is still handshaking is finished first
//! (`nbconnect::gate`): the program never sends before, nor reads, the proxy's handshake. With
//! optimistic data (`?optimistic=1`) the sends go behind greeting and request at once, and the
//! receives read the proxy's replies first (`nbconnect::gate_read`).
//!
//! Fast path: with no fd tracked and no destination address (connected sockets, TCP) or a
//! loopback one, the call goes straight to libc without a system call of ours.
//!
//! Size: ~690 lines, no unit tests: eight entry points (four sends, four receives) sharing
//! `classify`, `send_udp`, `fast_open`, `recv_assoc` and `fix_source`; each one unpacks its own
//! argument shape (buffer, msghdr, mmsghdr array).

use crate::engine::udp::{self, assoc};
use crate::policy::decide::Proxied;
use crate::policy::decide::{self, Route};
use crate::state::fdtable::{self, Assoc};
use crate::state::runtime;
use crate::sys::guard::{hook, set_errno};
use crate::sys::socket::socket_type;
use crate::sys::{error, real, sockaddr};
use libc::{c_int, c_uint, c_void, iovec, msghdr, size_t, socklen_t, ssize_t};
use std::net::SocketAddr;

/// What to do with a send that names a destination.
enum Verdict {
    /// Let libc send it as is.
    Real,
    /// Direct, but to the address a `dnat` entry rewrote the destination to.
    RealTo(SocketAddr),
    /// Refused; errno is set.
    Fail,
    /// Through the association, as decided (the chain for a new association, the target).
    Udp(Proxied, c_int),
    /// To a system resolver under remote DNS: answered in-process (`dnsresp`).
    Dns(SocketAddr),
    /// TCP Fast Open to a proxied destination: connect (proxied), then send.
    FastOpen,
}

unsafe fn classify(
    fd: c_int,
    addr: *const libc::sockaddr,
    len: socklen_t,
    flags: c_int,
) -> Verdict {
    // SAFETY: `addr` is null or points to `len` bytes (the send's contract, classify's too).
    let Some(dest) = (unsafe { sockaddr::read(addr, len) }) else {
        // Not an Internet address: nothing of ours to decide.
        return Verdict::Real;
    };
    if dest.port() == 53
        // From a signal handler that interrupted proxify (sys::guard::hook) the resolver list
        // is behind a lock: any port-53 destination counts as a resolver then (fail closed).
        && hook(|| true, false, libc::EIO, || {
            crate::engine::dnsresp::is_resolver(&dest)
        })
    {
        return Verdict::Dns(dest);
    }
    if decide::trivially_direct(&dest) {
        return Verdict::Real;
    }
    hook(
        || {
            set_errno(libc::EAGAIN);
            Verdict::Fail
        },
        Verdict::Fail,
        libc::EIO,
        || {
            let target = match decide::route(dest) {
                Route::Direct(decide::Direct::Rule(_, Some(to))) => {
                    // Expressed as the program expressed the original (v4, or v6/v4-mapped).
                    let fam = if dest.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    };
                    return match sockaddr::for_family(to, fam) {
                        Some(a) => Verdict::RealTo(a),
                        None => {
                            set_errno(libc::EAFNOSUPPORT);
                            Verdict::Fail
                        }
                    };
                }
                Route::Direct(why) => {
                    if let decide::Direct::Rule(d, _) = &why {
                        if d.by_no_proxy() {
                            // Only with --no-proxy-env: each direct path it opens is said at -v.
                            log::info!("datagram to {dest}: direct {why} (--no-proxy-env)");
                        }
                    }
                    return Verdict::Real;
                }
                Route::Deny(e, why) => {
                    log::warn!("refusing datagram to {dest}: {why}");
                    set_errno(e);
                    return Verdict::Fail;
                }
                Route::Proxy(p) => p,
            };
            match socket_type(fd) {
                // A connected TCP socket ignores the address; an unconnected one with
                // MSG_FASTOPEN would connect directly: it connects through the proxy instead.
                Some((libc::SOCK_STREAM, _)) if flags & libc::MSG_FASTOPEN == 0 => Verdict::Real,
                Some((libc::SOCK_STREAM, _)) => {
                    log::debug!(
                        "TCP Fast Open to {}: a proxied connect, then the send",
                        target.target
                    );
                    Verdict::FastOpen
                }
                Some((libc::SOCK_DGRAM, _)) => Verdict::Udp(
                    target,
                    if dest.is_ipv4() {
                        libc::AF_INET
                    } else {
                        libc::AF_INET6
                    },
                ),
                Some((ty, proto)) => {
                    log::warn!(
                    "refusing to send to {}: socket type {ty}/protocol {proto} cannot go through a SOCKS proxy",
                    target.target
                );
                    set_errno(libc::EACCES);
                    Verdict::Fail
                }
                None => {
                    set_errno(error::errno());
                    Verdict::Fail
                }
            }
        },
    )
}

/// From a signal handler that interrupted proxify: a datagram that needs the association, the
/// policy or the DNS responder (all behind locks) is not sent: EAGAIN, as a full socket says.
fn would_block<T>(v: T) -> T {
    set_errno(libc::EAGAIN);
    v
}

/// Sends through the association of `fd` (set up now, through `p`'s chain, if needed).
unsafe fn send_udp(
    fd: c_int,
    p: Proxied,
    family: c_int,
    iov: &[iovec],
    control: (*mut c_void, usize),
    flags: c_int,
) -> ssize_t {
    hook(
        || would_block(-1),
        -1,
        libc::EIO,
        || {
            let rt = runtime::get();
            let mut entry = match udp::assoc_for(rt, fd, family, &p) {
                Ok(e) => e,
                Err(f) => {
                    log::warn!("refusing datagram to {}: {}", p.target, f.msg);
                    set_errno(f.errno);
                    return -1;
                }
            };
            // An explicit destination on a socket connected through the relay: the kernel would
            // refuse a name on a connected UDP socket only for TCP; for UDP it sends to the name
            // given, so address the relay explicitly.
            entry.peer = None;
            // SAFETY: `iov` and `control` are the caller's, valid as in a msghdr.
            unsafe { udp::send(&entry, fd, &p.target, iov, control, flags) }
        },
    )
}

/// A send without a destination on an associated, connected socket.
unsafe fn send_connected(
    entry: &Assoc,
    fd: c_int,
    iov: &[iovec],
    control: (*mut c_void, usize),
    flags: c_int,
) -> ssize_t {
    hook(
        || would_block(-1),
        -1,
        libc::EIO,
        || {
            let Some(peer) = entry.peer else {
                set_errno(libc::EDESTADDRREQ);
                return -1;
            };
            match udp::target_of(peer) {
                // SAFETY: `iov` and `control` are the caller's, valid as in a msghdr.
                Ok(t) => unsafe { udp::send(entry, fd, &t, iov, control, flags) },
                Err(f) => {
                    set_errno(f.errno);
                    -1
                }
            }
        },
    )
}

/// A send without an address on a socket connected to a system resolver: answered here.
#[inline]
pub fn dns_connected(fd: c_int, iov: &[iovec], flags: c_int) -> Option<ssize_t> {
    if crate::engine::dnsresp::idle() {
        return None;
    }
    hook(
        || would_block(Some(-1)),
        Some(-1),
        libc::EIO,
        || crate::engine::dnsresp::send(fd, None, iov, flags),
    )
}

/// A datagram to a system resolver; None: send it as it is.
fn dns_to(fd: c_int, dest: SocketAddr, iov: &[iovec], flags: c_int) -> Option<ssize_t> {
    hook(
        || would_block(Some(-1)),
        Some(-1),
        libc::EIO,
        || crate::engine::dnsresp::send(fd, Some(dest), iov, flags),
    )
}

/// TCP Fast Open to a proxied destination: the connect goes through the proxy (the connect
/// hook), then `send` sends the data without `MSG_FASTOPEN`. A non-blocking socket answers
/// EINPROGRESS with nothing sent, as the kernel does without a Fast Open cookie: the program
/// waits for writable and sends again — unless optimistic data has sent greeting and request
/// already: then the data goes behind them and the call returns what was sent. A connected socket gets the connect's EISCONN.
// SAFETY: addr/alen are the program's sendto/sendmsg arguments, checked by the connect hook.
unsafe fn fast_open(
    fd: c_int,
    addr: *const libc::sockaddr,
    alen: socklen_t,
    send: impl FnOnce() -> ssize_t,
) -> ssize_t {
    // SAFETY: `addr` points to `alen` bytes, the program's own destination (see above).
    if unsafe { crate::hooks::connect::connect(fd, addr, alen) } != 0 {
        // Optimistic data (`?optimistic=1`) on a non-blocking socket whose greeting and
        // request went out at once: the data goes right behind them, as a Fast Open with a
        // cookie would send it.
        if error::errno() == libc::EINPROGRESS
            && fdtable::kind(fd) == Some(fdtable::Kind::ReplyPending)
        {
            return send();
        }
        return -1;
    }
    send()
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const libc::sockaddr,
    alen: socklen_t,
) -> ssize_t {
    if !crate::engine::nbconnect::gate(fd) {
        return -1;
    }
    let iov = [iovec {
        iov_base: buf as *mut c_void,
        iov_len: len,
    }];
    if addr.is_null() {
        if let Some(e) = assoc(fd) {
            // SAFETY: `iov` is the caller's buffer of `len` bytes (sendto's contract); no control.
            return unsafe { send_connected(&e, fd, &iov, (std::ptr::null_mut(), 0), flags) };
        }
        if let Some(r) = dns_connected(fd, &iov, flags) {
            return r;
        }
        // SAFETY: the caller's arguments, unchanged, under libc's sendto contract.
        return unsafe { real::sendto(fd, buf, len, flags, addr, alen) };
    }
    // SAFETY: `addr` is non-null and points to `alen` bytes (sendto's contract).
    match unsafe { classify(fd, addr, alen, flags) } {
        Verdict::Dns(d) => dns_to(fd, d, &iov, flags)
            // SAFETY: the caller's arguments, unchanged, under libc's sendto contract.
            .unwrap_or_else(|| unsafe { real::sendto(fd, buf, len, flags, addr, alen) }),
        // SAFETY: the caller's arguments, unchanged, under libc's sendto contract.
        Verdict::Real => unsafe { real::sendto(fd, buf, len, flags, addr, alen) },
        Verdict::RealTo(to) => {
            let (st, l) = sockaddr::to_storage(&to);
            // SAFETY: the caller's buffer of `len` bytes; `st` is a valid sockaddr of `l` bytes.
            unsafe {
                real::sendto(
                    fd,
                    buf,
                    len,
                    flags,
                    &st as *const _ as *const libc::sockaddr,
                    l,
                )
            }
        }
        Verdict::Fail => -1,
        // SAFETY: `iov` is the caller's buffer of `len` bytes (sendto's contract); no control.
        Verdict::Udp(t, fam) => unsafe {
            send_udp(fd, t, fam, &iov, (std::ptr::null_mut(), 0), flags)
        },
        // SAFETY: `addr`/`alen` are the caller's destination, for connect; then the caller's
        // buffer of `len` bytes, with no address, to libc's sendto.
        Verdict::FastOpen => unsafe {
            fast_open(fd, addr, alen, || {
                real::sendto(
                    fd,
                    buf,
                    len,
                    flags & !libc::MSG_FASTOPEN,
                    std::ptr::null(),
                    0,
                )
            })
        },
    }
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if !crate::engine::nbconnect::gate(fd) {
        return -1;
    }
    if let Some(e) = assoc(fd) {
        let iov = [iovec {
            iov_base: buf as *mut c_void,
            iov_len: len,
        }];
        // SAFETY: `iov` is the caller's buffer of `len` bytes (send's contract); no control.
        return unsafe { send_connected(&e, fd, &iov, (std::ptr::null_mut(), 0), flags) };
    }
    if !crate::engine::dnsresp::idle() {
        let iov = [iovec {
            iov_base: buf as *mut c_void,
            iov_len: len,
        }];
        if let Some(r) = dns_connected(fd, &iov, flags) {
            return r;
        }
    }
    // SAFETY: the caller's arguments, unchanged, under libc's send contract.
    unsafe { real::send(fd, buf, len, flags) }
}

unsafe fn iovs<'a>(m: &msghdr) -> &'a [iovec] {
    if m.msg_iov.is_null() || m.msg_iovlen == 0 {
        &[]
    } else {
        // SAFETY: a non-null `msg_iov` points to `msg_iovlen` iovecs (`m` is a valid msghdr).
        unsafe { std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !crate::engine::nbconnect::gate(fd) {
        return -1;
    }
    if msg.is_null() {
        // SAFETY: the caller's arguments, unchanged, under libc's sendmsg contract.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: `msg` is non-null, the caller's valid msghdr (sendmsg's contract).
    let m = unsafe { &*msg };
    let control = (m.msg_control, m.msg_controllen);
    if m.msg_name.is_null() {
        if let Some(e) = assoc(fd) {
            // SAFETY: `m` is the caller's valid msghdr: its iovecs and control buffer are sound.
            return unsafe { send_connected(&e, fd, iovs(m), control, flags) };
        }
        // SAFETY: `m` is the caller's valid msghdr (sendmsg's contract).
        if let Some(r) = dns_connected(fd, unsafe { iovs(m) }, flags) {
            return r;
        }
        // SAFETY: the caller's arguments, unchanged, under libc's sendmsg contract.
        return unsafe { real::sendmsg(fd, msg, flags) };
    }
    // SAFETY: a non-null `msg_name` of the caller's msghdr points to `msg_namelen` bytes.
    match unsafe {
        classify(
            fd,
            m.msg_name as *const libc::sockaddr,
            m.msg_namelen,
            flags,
        )
    } {
        // SAFETY: `m` is the caller's valid msghdr (sendmsg's contract).
        Verdict::Dns(d) => dns_to(fd, d, unsafe { iovs(m) }, flags)
            // SAFETY: the caller's arguments, unchanged, under libc's sendmsg contract.
            .unwrap_or_else(|| unsafe { real::sendmsg(fd, msg, flags) }),
        // SAFETY: the caller's arguments, unchanged, under libc's sendmsg contract.
        Verdict::Real => unsafe { real::sendmsg(fd, msg, flags) },
        Verdict::RealTo(to) => {
            let (st, l) = sockaddr::to_storage(&to);
            let mut copy = *m;
            copy.msg_name = &st as *const _ as *mut c_void;
            copy.msg_namelen = l;
            // SAFETY: the caller's msghdr with `st`, a valid sockaddr of `l` bytes, as its name.
            unsafe { real::sendmsg(fd, &copy, flags) }
        }
        Verdict::Fail => -1,
        // SAFETY: `m` is the caller's valid msghdr: its iovecs and control buffer are sound.
        Verdict::Udp(t, fam) => unsafe { send_udp(fd, t, fam, iovs(m), control, flags) },
        // SAFETY: the caller's msghdr's name of `msg_namelen` bytes, for connect; then its
        // copy without a name, to libc's sendmsg.
        Verdict::FastOpen => unsafe {
            fast_open(
                fd,
                m.msg_name as *const libc::sockaddr,
                m.msg_namelen,
                || {
                    let mut copy = *m;
                    copy.msg_name = std::ptr::null_mut();
                    copy.msg_namelen = 0;
                    real::sendmsg(fd, &copy, flags & !libc::MSG_FASTOPEN)
                },
            )
        },
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: c_uint,
    flags: c_int,
) -> c_int {
    if !crate::engine::nbconnect::gate(fd) {
        return -1;
    }
    if msgs.is_null() {
        // SAFETY: the caller's arguments, unchanged, under libc's sendmmsg contract.
        return unsafe { real::sendmmsg(fd, msgs, n, flags) };
    }
    // Fast path: nothing tracked and every destination absent or loopback.
    let all_plain = fdtable::none_tracked()
        && crate::engine::dnsresp::idle()
        && (0..n as usize).all(|i| {
            // SAFETY: `msgs` points to `n` mmsghdrs (sendmmsg's contract) and i < n.
            let m = unsafe { &(*msgs.add(i)).msg_hdr };
            m.msg_name.is_null()
                // SAFETY: a non-null `msg_name` points to `msg_namelen` bytes (a valid msghdr).
                || unsafe { sockaddr::read(m.msg_name as *const libc::sockaddr, m.msg_namelen) }
                    .map(|d| decide::trivially_direct(&d) && d.port() != 53)
                    .unwrap_or(true)
        });
    if all_plain {
        // SAFETY: the caller's arguments, unchanged, under libc's sendmmsg contract.
        return unsafe { real::sendmmsg(fd, msgs, n, flags) };
    }
    // One by one, like the kernel: the count sent before the first failure, or -1.
    for i in 0..n as usize {
        // SAFETY: `msgs` points to `n` mmsghdrs (sendmmsg's contract) and i < n.
        let mm = unsafe { &mut *msgs.add(i) };
        // SAFETY: the caller's msghdr, valid as sendmsg requires (sendmmsg's contract).
        let r = unsafe { sendmsg(fd, &mm.msg_hdr, flags) };
        if r < 0 {
            return if i == 0 { -1 } else { i as c_int };
        }
        mm.msg_len = r as c_uint;
    }
    n as c_int
}

/// recvmsg on an associated socket, filling the caller's msghdr.
unsafe fn recv_assoc(e: &Assoc, fd: c_int, m: &mut msghdr, flags: c_int) -> ssize_t {
    hook(
        || would_block(-1),
        -1,
        libc::EIO,
        || {
            let mut clen = m.msg_controllen;
            let control = if m.msg_control.is_null() {
                (std::ptr::null_mut(), std::ptr::null_mut())
            } else {
                (m.msg_control, &mut clen as *mut usize)
            };
            // SAFETY: `m` is the caller's msghdr: writable iovecs and a control buffer of
            // `clen` bytes (recvmsg's contract).
            match unsafe { udp::recv(e, fd, iovs(m), control, flags) } {
                Ok(r) => {
                    if !m.msg_control.is_null() {
                        m.msg_controllen = clen as _;
                    }
                    m.msg_flags = if r.full > r.copied {
                        libc::MSG_TRUNC
                    } else {
                        0
                    };
                    if !m.msg_name.is_null() {
                        let mut l = m.msg_namelen;
                        // SAFETY: a non-null `msg_name` is the caller's buffer of `l` bytes.
                        unsafe {
                            sockaddr::write_out(&r.from, m.msg_name as *mut libc::sockaddr, &mut l)
                        };
                        m.msg_namelen = l;
                    }
                    (if flags & libc::MSG_TRUNC != 0 {
                        r.full
                    } else {
                        r.copied
                    }) as ssize_t
                }
                Err(()) => -1,
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    if !crate::engine::nbconnect::gate_read(fd, flags) {
        return -1;
    }
    if !msg.is_null() {
        if let Some(e) = assoc(fd) {
            // SAFETY: `msg` is non-null, the caller's valid msghdr (recvmsg's contract).
            return unsafe { recv_assoc(&e, fd, &mut *msg, flags) };
        }
    }
    // SAFETY: `msg` is null or the caller's valid msghdr (recvmsg's contract).
    let cap = unsafe { msg.as_ref() }.map_or(0, |m| m.msg_namelen);
    // SAFETY: the caller's arguments, unchanged, under libc's recvmsg contract.
    let r = unsafe { real::recvmsg(fd, msg, flags) };
    if r >= 0 && !msg.is_null() && !crate::engine::dnsresp::idle() {
        // SAFETY: `msg` is non-null, the caller's valid msghdr (recvmsg's contract).
        let m = unsafe { &mut *msg };
        // SAFETY: `msg_name` holds `cap` bytes, its size before the receive.
        unsafe { fix_source_msg(fd, m, cap) };
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut libc::sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    if !crate::engine::nbconnect::gate_read(fd, flags) {
        return -1;
    }
    if let Some(e) = assoc(fd) {
        let mut iov = iovec {
            iov_base: buf,
            iov_len: len,
        };
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
        let mut m: msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        if !addr.is_null() && !alen.is_null() {
            m.msg_name = addr as *mut c_void;
            // SAFETY: `alen` is non-null, the caller's socklen_t (recvfrom's contract).
            m.msg_namelen = unsafe { *alen };
        }
        // SAFETY: `m` holds the caller's buffer of `len` bytes and its address buffer of
        // `msg_namelen` bytes, or none (recvfrom's contract).
        let r = unsafe { recv_assoc(&e, fd, &mut m, flags) };
        if r >= 0 && !addr.is_null() && !alen.is_null() {
            // SAFETY: `alen` is non-null, the caller's socklen_t (recvfrom's contract).
            unsafe { *alen = m.msg_namelen };
        }
        return r;
    }
    // SAFETY: `alen` is null or the caller's socklen_t (recvfrom's contract).
    let cap = unsafe { alen.as_ref() }.copied().unwrap_or(0);
    // SAFETY: the caller's arguments, unchanged, under libc's recvfrom contract.
    let r = unsafe { real::recvfrom(fd, buf, len, flags, addr, alen) };
    if r >= 0 && !crate::engine::dnsresp::idle() {
        // SAFETY: `addr` is null or holds `cap` bytes, its size before the receive.
        unsafe { fix_source(fd, addr, alen, cap) };
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int) -> ssize_t {
    if !crate::engine::nbconnect::gate_read(fd, flags) {
        return -1;
    }
    if assoc(fd).is_some() {
        // SAFETY: the caller's buffer of `len` bytes (recv's contract), and no address.
        return unsafe {
            recvfrom(
                fd,
                buf,
                len,
                flags,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
    // SAFETY: the caller's arguments, unchanged, under libc's recv contract.
    unsafe { real::recv(fd, buf, len, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if !crate::engine::nbconnect::gate_read(fd, flags) {
        return -1;
    }
    let Some(e) = assoc(fd) else {
        // The address buffers' sizes before the receive (only while the DNS responder may
        // have to fix a source).
        let caps: Vec<socklen_t> = if crate::engine::dnsresp::idle() || msgs.is_null() {
            Vec::new()
        } else {
            (0..n as usize)
                // SAFETY: `msgs` holds `n` mmsghdrs (recvmmsg's contract).
                .map(|i| unsafe { (*msgs.add(i)).msg_hdr.msg_namelen })
                .collect()
        };
        // SAFETY: the caller's arguments, unchanged, under libc's recvmmsg contract.
        let r = unsafe { real::recvmmsg(fd, msgs, n, flags, timeout) };
        if r > 0 {
            for (i, &cap) in caps.iter().enumerate().take(r as usize) {
                // SAFETY: the kernel filled `r` <= `n` of the caller's mmsghdrs, and i < r.
                let m = unsafe { &mut (*msgs.add(i)).msg_hdr };
                // SAFETY: `msg_name` holds `cap` bytes, its size before the receive.
                unsafe { fix_source_msg(fd, m, cap) };
            }
        }
        return r;
    };
    if msgs.is_null() {
        set_errno(libc::EFAULT);
        return -1;
    }
    // One by one: the first as asked (blocking unless MSG_DONTWAIT), the rest without waiting
    // (MSG_WAITFORONE semantics; the timeout is not applied to associated sockets).
    let mut got = 0usize;
    for i in 0..n as usize {
        let f = if i == 0 {
            flags & !libc::MSG_WAITFORONE
        } else {
            (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT
        };
        // SAFETY: `msgs` is non-null with `n` mmsghdrs (recvmmsg's contract) and i < n.
        let mm = unsafe { &mut *msgs.add(i) };
        // SAFETY: the caller's msghdr, valid as recvmsg requires (recvmmsg's contract).
        let r = unsafe { recv_assoc(&e, fd, &mut mm.msg_hdr, f) };
        if r < 0 {
            break;
        }
        mm.msg_len = r as c_uint;
        got += 1;
    }
    if got == 0 {
        -1
    } else {
        got as c_int
    }
}

/// The DNS responder's source fix-up of a received datagram (its table is behind a lock: left
/// as it is from a signal handler that interrupted proxify).
/// [`fix_source`] for the address of a received `msghdr` (`msg_name` of `cap` bytes before).
unsafe fn fix_source_msg(fd: c_int, m: &mut msghdr, cap: socklen_t) {
    // SAFETY: `msg_name` and `msg_namelen` as the receive left them (the same contract).
    unsafe {
        fix_source(
            fd,
            m.msg_name as *mut libc::sockaddr,
            &mut m.msg_namelen,
            cap,
        )
    }
}

unsafe fn fix_source(fd: c_int, addr: *mut libc::sockaddr, alen: *mut socklen_t, cap: socklen_t) {
    hook(
        || (),
        (),
        0,
        // SAFETY: `addr`/`alen` as the program's receive left them, `addr` of `cap` bytes (the
        // same contract).
        || unsafe { crate::engine::dnsresp::fix_source(fd, addr, alen, cap) },
    )
}
