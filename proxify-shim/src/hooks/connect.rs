//! `connect` and `getpeername`.

use crate::decide::{self, Route};
use crate::fdtable::{self, Entry, Kind};
use crate::guard::{guarded, set_errno};
use crate::proxied::{self, socket_type};
use crate::sockaddr as sa;
use crate::{real, runtime};
use libc::{c_int, sockaddr, socklen_t};
use proxify_core::socks::TargetAddr;
use std::net::SocketAddr;

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match sa::family(addr, len) {
        Some(libc::AF_INET) | Some(libc::AF_INET6) => {}
        _ => return real::connect(fd, addr, len),
    }
    guarded(-1, libc::EIO, || connect_inet(fd, addr, len))
}

fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

pub fn describe(t: &TargetAddr) -> String {
    match t {
        TargetAddr::Ip(a) => a.to_string(),
        TargetAddr::Domain(n, p) => format!("{n}:{p}"),
    }
}

unsafe fn connect_inet(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(dest) = sa::read(addr, len) else {
        // Too short to be an address: the kernel refuses it without sending anything.
        return real::connect(fd, addr, len);
    };
    if let Some(Entry {
        kind: Kind::ProxiedTcp,
        ..
    }) = fdtable::get(fd)
    {
        return fail(libc::EISCONN);
    }
    if decide::trivially_direct(&dest) {
        log::debug!("connect fd {fd} to {dest}: direct (loopback)");
        return real::connect(fd, addr, len);
    }
    let rt = runtime::get();
    let direct = rt.config().map(|c| &c.direct[..]).unwrap_or(&[]);
    match decide::route(dest, direct) {
        Route::Direct(why) => {
            log::debug!("connect fd {fd} to {dest}: direct ({why})");
            real::connect(fd, addr, len)
        }
        Route::Deny(e, why) => {
            log::warn!("refusing connection to {dest}: {why}");
            fail(e)
        }
        Route::Proxy(target) => connect_proxied(rt, fd, dest, target),
    }
}

fn connect_proxied(
    rt: &runtime::Runtime,
    fd: c_int,
    dest: SocketAddr,
    target: TargetAddr,
) -> c_int {
    let Some((ty, proto)) = socket_type(fd) else {
        return fail(proxied::errno());
    };
    let domain = sockopt_domain(fd);
    match ty {
        libc::SOCK_STREAM if matches!(proto, 0 | libc::IPPROTO_TCP | libc::IPPROTO_MPTCP) => {}
        libc::SOCK_DGRAM => {
            log::warn!(
                "refusing UDP to {}: UDP through the proxy is not supported yet",
                describe(&target)
            );
            return fail(libc::EACCES);
        }
        _ => {
            log::warn!(
                "refusing connection to {}: socket type {ty}/protocol {proto} cannot go through a SOCKS proxy",
                describe(&target)
            );
            return fail(libc::EACCES);
        }
    }
    if (domain == libc::AF_INET) != dest.is_ipv4() {
        return fail(libc::EAFNOSUPPORT);
    }
    if fd < 0 || fd as usize >= fdtable::MAX_FD {
        log::warn!(
            "refusing connection to {}: fd {fd} is beyond proxify's table",
            describe(&target)
        );
        return fail(libc::EMFILE);
    }
    let shown = describe(&target);
    let via = rt.proxy().map(|p| p.masked()).unwrap_or_default();
    log::debug!("connect fd {fd} to {shown}: through proxy {via}");
    match proxied::connect(rt, fd, domain, target) {
        Ok(reply) => {
            fdtable::set(
                fd,
                Entry {
                    kind: Kind::ProxiedTcp,
                    peer: dest,
                },
            );
            log::debug!(
                "connect fd {fd} to {shown}: connected (proxy bound {})",
                describe(&reply.bound)
            );
            0
        }
        Err(f) => {
            log::warn!("cannot connect to {shown} through {via}: {}", f.msg);
            fail(f.errno)
        }
    }
}

fn sockopt_domain(fd: c_int) -> c_int {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            &mut v as *mut c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        v
    } else {
        -1
    }
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    if fdtable::none_tracked() {
        return real::getpeername(fd, addr, len);
    }
    match fdtable::get(fd) {
        Some(e) => {
            if addr.is_null() || len.is_null() {
                return fail(libc::EFAULT);
            }
            sa::write_out(&e.peer, addr, len);
            0
        }
        None => real::getpeername(fd, addr, len),
    }
}
