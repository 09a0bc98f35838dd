//! `bind`, `listen`, `accept`, `accept4`, `getsockname`: SOCKS BIND for listening sockets
//! (see `engine/bind.rs`), and the proxy-side address of proxied connections.

use crate::engine::bind;
use crate::state::fdtable::{self, Entry};
use crate::state::runtime;
use crate::sys::guard::{guarded, hook, set_errno};
use crate::sys::real;
use crate::sys::sockaddr as sa;
use crate::sys::socket::{local_addr, socket_domain, socket_type};
use libc::{c_int, sockaddr, socklen_t};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn fail(e: c_int) -> c_int {
    set_errno(e);
    -1
}

/// The trace's lines for a listener: local (`bind` is None: its decision, with the result),
/// or a SOCKS BIND for the expected peer `dest` (decision, then outcome with its time).
fn trace_listen(
    dest: &dyn std::fmt::Display,
    why: &dyn std::fmt::Display,
    bind: Option<std::time::Instant>,
    result: c_int,
) {
    use crate::sys::trace::{self, Ev, Event, Via};
    if !trace::on() {
        return;
    }
    let via = if bind.is_some() {
        Via::Proxy
    } else {
        Via::Direct
    };
    trace::write(&Event {
        ev: Ev::Decision,
        call: "listen",
        dest,
        via,
        rule: Some(why),
        result: bind.is_none().then_some(result),
        ms: None,
    });
    if let Some(t0) = bind {
        trace::write(&Event {
            ev: Ev::Outcome,
            call: "listen",
            dest,
            via,
            rule: None,
            result: Some(result),
            ms: Some(t0.elapsed().as_secs_f64() * 1000.0),
        });
    }
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: `addr` is null or points to `len` bytes (bind's contract).
    let Some(a) = (unsafe { sa::read(addr, len) }) else {
        // SAFETY: the caller's arguments, unchanged, under libc's bind contract.
        return unsafe { real::bind(fd, addr, len) };
    };
    // From a signal handler that interrupted proxify: the proxy-side addresses are behind a
    // lock; the bind is the kernel's.
    hook(
        // SAFETY: the caller's arguments, unchanged, under libc's bind contract.
        || unsafe { real::bind(fd, addr, len) },
        -1,
        libc::EIO,
        || {
            // Binding to a proxy-side address we reported (as curl's active FTP does with the
            // control connection's getsockname) means "the address the proxy will use": bind
            // locally to the wildcard and ask the proxy to BIND now, since such programs read
            // the port with getsockname before they call listen().
            let proxy_side = bind::is_reported(&a.ip());
            let r = if proxy_side {
                let any = if a.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                let (st, l) = sa::to_storage(&SocketAddr::new(any, a.port()));
                log::debug!("bind fd {fd} to proxy-side {a}: bound to {any} locally");
                // SAFETY: `st` is a valid sockaddr of `l` bytes from to_storage.
                unsafe { real::bind(fd, &st as *const _ as *const sockaddr, l) }
            } else {
                // SAFETY: the caller's arguments, unchanged, under libc's bind contract.
                unsafe { real::bind(fd, addr, len) }
            };
            let stream = matches!(socket_type(fd), Some((libc::SOCK_STREAM, _)));
            if r == 0 && proxy_side && stream {
                let rt = runtime::get();
                if let Some(peer) = bind::wanted_at_bind(rt) {
                    let family = socket_domain(fd);
                    let shown = peer.to_string();
                    return match bind_through(rt, fd, family, peer) {
                        Ok(bound) => {
                            log::info!("bind fd {fd}: BIND through the proxy for {shown} (bound to the proxy-side address proxify reported), proxy listens on {bound}");
                            0
                        }
                        Err(f) => {
                            log::warn!(
                                "cannot listen through the proxy (BIND for {shown}): {}",
                                f.msg
                            );
                            fail(f.errno)
                        }
                    };
                }
            }
            if r == 0 && a.port() == 0 && stream {
                // Only a hint for `auto` (listen also treats a port-0 local address as ephemeral):
                // an untracked fd just listens directly, as a non-ephemeral bind would.
                let _ = fdtable::set(fd, Entry::BoundEphemeral);
            }
            r
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let reentered = || {
        // From a signal handler that interrupted proxify: the BIND decision needs locks; the
        // listener stays local (never a path around the proxy).
        if is_bind(fd) {
            0
        } else {
            // SAFETY: plain integers; libc's listen checks the fd itself.
            unsafe { real::listen(fd, backlog) }
        }
    };
    hook(reentered, -1, libc::EIO, || {
        if is_bind(fd) {
            // The BIND already started at bind() time.
            return 0;
        }
        let rt = runtime::get();
        let (peer, why) = match bind::wanted(rt, fd, backlog) {
            Ok(w) => w,
            Err(local) => {
                // SAFETY: plain integers; libc's listen checks the fd itself.
                let r = unsafe { real::listen(fd, backlog) };
                if r == 0 && local != bind::Local::Unknown {
                    log::info!("listen fd {fd}: local listener ({local})");
                    if crate::sys::trace::on() {
                        let at = local_addr(fd).map_or("?".to_string(), |a| a.to_string());
                        let why = format!("local listener ({local})");
                        trace_listen(&at, &why, None, 0);
                    }
                }
                return r;
            }
        };
        let family = match socket_domain(fd) {
            f @ (libc::AF_INET | libc::AF_INET6) => f,
            // SAFETY: plain integers; libc's listen checks the fd itself.
            _ => return unsafe { real::listen(fd, backlog) },
        };
        let shown = peer.to_string();
        let t0 = crate::sys::trace::on().then(std::time::Instant::now);
        let r = bind_through(rt, fd, family, peer);
        if let Some(t0) = t0 {
            let why = format!("BIND through the proxy ({why})");
            trace_listen(
                &shown,
                &why,
                Some(t0),
                r.as_ref().map_or_else(|f| f.errno, |_| 0),
            );
        }
        match r {
            Ok(bound) => {
                log::info!(
                    "listen fd {fd}: BIND through the proxy for {shown} ({why}), proxy listens on {bound}"
                );
                0
            }
            Err(f) => {
                log::warn!(
                    "cannot listen through the proxy (BIND for {shown}): {}",
                    f.msg
                );
                fail(f.errno)
            }
        }
    })
}

unsafe fn accept_bind(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    guarded(-1, libc::EIO, || {
        let rt = runtime::get();
        match bind::accept(rt, fd, flags) {
            Ok((nfd, peer)) => {
                log::debug!("accept fd {fd}: {peer} connected through the proxy (fd {nfd})");
                if !addr.is_null() && !len.is_null() {
                    let fam = fdtable::program_family(fd).unwrap_or_else(|| socket_domain(fd));
                    let p = sa::for_family(peer, fam).unwrap_or(peer);
                    // SAFETY: non-null, the caller's buffer of `*len` bytes (accept's contract).
                    unsafe { sa::write_out(&p, addr, len) };
                }
                nfd
            }
            Err(f) => {
                if f.errno != libc::EAGAIN {
                    log::warn!("accept through the proxy (BIND) failed: {}", f.msg);
                }
                fail(f.errno)
            }
        }
    })
}

/// `a` in `family`: IPv4-mapped for AF_INET6, unmapped for AF_INET, or the wildcard with the
/// same port when AF_INET cannot express it.
fn in_family(a: SocketAddr, family: c_int) -> SocketAddr {
    sa::for_family(a, family).unwrap_or_else(|| {
        let any = if family == libc::AF_INET6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(any, a.port())
    })
}

#[inline]
fn is_bind(fd: c_int) -> bool {
    !fdtable::none_tracked() && matches!(fdtable::get(fd), Some(Entry::BindListen { .. }))
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if fdtable::none_tracked() {
        // SAFETY: the caller's arguments, unchanged, under libc's accept contract.
        return unsafe { real::accept(fd, addr, len) };
    }
    hook(
        || {
            if is_bind(fd) {
                return fail(libc::EAGAIN);
            }
            // SAFETY: the caller's arguments, unchanged, under libc's accept contract.
            unsafe { real::accept(fd, addr, len) }
        },
        -1,
        libc::EIO,
        || {
            if is_bind(fd) {
                // SAFETY: the caller's accept arguments, as accept_bind takes them.
                return unsafe { accept_bind(fd, addr, len, 0) };
            }
            // SAFETY: the caller's arguments, unchanged, under libc's accept contract.
            unsafe { real::accept(fd, addr, len) }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    if fdtable::none_tracked() {
        // SAFETY: the caller's arguments, unchanged, under libc's accept4 contract.
        return unsafe { real::accept4(fd, addr, len, flags) };
    }
    hook(
        // From a signal handler that interrupted proxify (sys::guard::hook): a BIND's second
        // reply cannot be read there (its handshake is behind a lock): no connection yet.
        || {
            if is_bind(fd) {
                return fail(libc::EAGAIN);
            }
            // SAFETY: the caller's arguments, unchanged, under libc's accept4 contract.
            unsafe { real::accept4(fd, addr, len, flags) }
        },
        -1,
        libc::EIO,
        || {
            if is_bind(fd) {
                // SAFETY: the caller's accept4 arguments, as accept_bind takes them.
                return unsafe { accept_bind(fd, addr, len, flags) };
            }
            // SAFETY: the caller's arguments, unchanged, under libc's accept4 contract.
            unsafe { real::accept4(fd, addr, len, flags) }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if fdtable::none_tracked() {
        // SAFETY: the caller's arguments, unchanged, under libc's getsockname contract.
        return unsafe { real::getsockname(fd, addr, len) };
    }
    guarded(-1, libc::EIO, || {
        let e = fdtable::get(fd);
        if let Some(Entry::ProxiedTcp { .. }) = e {
            bind::note_local_address_asked();
        }
        if let Some(Entry::BindListen { bound: b } | Entry::ProxiedTcp { bound: Some(b), .. }) = e {
            if addr.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            let b = match fdtable::program_family(fd) {
                Some(pf) => in_family(b, pf),
                None => b,
            };
            // SAFETY: non-null, the caller's buffer of `*len` bytes (getsockname's contract).
            unsafe { sa::write_out(&b, addr, len) };
            return 0;
        }
        if let Some(pf) = fdtable::program_family(fd) {
            // A socket replaced by one of the proxy's family: the local address as the program's
            // family can say it.
            if addr.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            let Some(local) = local_addr(fd) else {
                return -1;
            };
            // SAFETY: non-null, the caller's buffer of `*len` bytes (getsockname's contract).
            unsafe { sa::write_out(&in_family(local, pf), addr, len) };
            return 0;
        }
        // SAFETY: the caller's arguments, unchanged, under libc's getsockname contract.
        unsafe { real::getsockname(fd, addr, len) }
    })
}

/// A BIND towards `peer`: the one decision for it (which chain), then the engine.
fn bind_through(
    rt: &runtime::Runtime,
    fd: c_int,
    family: c_int,
    peer: proxify_core::socks::TargetAddr,
) -> Result<std::net::SocketAddr, crate::sys::error::Failure> {
    let p = crate::policy::decide::proxied_target(&peer, "BIND")
        .map_err(|(e, why)| crate::sys::error::Failure::new(e, why))?;
    bind::start(rt, fd, family, p)
}
