//! `sendto`, `sendmsg`, `sendmmsg`: a datagram (or a TCP Fast Open connect) to a destination
//! that is not direct must never leave unproxied. UDP through the proxy (SOCKS5 UDP ASSOCIATE)
//! is not built yet, so such a datagram is refused with an errno and one log line.
//!
//! Fast path: no destination address (connected sockets, TCP) or a loopback one goes straight
//! to libc without a system call of ours.

use crate::decide::{self, Route};
use crate::guard::{guarded, set_errno};
use crate::hooks::connect::describe;
use crate::{real, runtime, sockaddr};
use libc::{c_int, c_uint, c_void, msghdr, size_t, socklen_t, ssize_t};

/// Whether a send to `addr` may go ahead as is; if not, errno has been set.
unsafe fn may_send(fd: c_int, addr: *const libc::sockaddr, len: socklen_t, flags: c_int) -> bool {
    let Some(dest) = sockaddr::read(addr, len) else {
        // No address, or not an Internet one: nothing of ours to decide.
        return true;
    };
    if decide::trivially_direct(&dest) {
        return true;
    }
    guarded(false, libc::EIO, || {
        let rt = runtime::get();
        let direct = rt.config().map(|c| &c.direct[..]).unwrap_or(&[]);
        let target = match decide::route(dest, direct) {
            Route::Direct(_) => return true,
            Route::Deny(e, why) => {
                log::warn!("refusing datagram to {dest}: {why}");
                set_errno(e);
                return false;
            }
            Route::Proxy(t) => t,
        };
        let ty = crate::proxied::socket_type(fd).map(|t| t.0);
        match ty {
            // A connected TCP socket ignores the address; an unconnected one with
            // MSG_FASTOPEN would connect directly: refuse that (TFO cannot be proxied).
            Some(libc::SOCK_STREAM) if flags & libc::MSG_FASTOPEN == 0 => true,
            Some(libc::SOCK_STREAM) => {
                log::warn!(
                    "refusing TCP Fast Open to {}: it cannot go through a SOCKS proxy",
                    describe(&target)
                );
                set_errno(libc::EOPNOTSUPP);
                false
            }
            None => {
                set_errno(crate::proxied::errno());
                false
            }
            Some(_) => {
                log::warn!(
                    "refusing datagram to {}: UDP through the proxy is not supported yet",
                    describe(&target)
                );
                set_errno(libc::EACCES);
                false
            }
        }
    })
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
    if !addr.is_null() && !may_send(fd, addr, alen, flags) {
        return -1;
    }
    real::sendto(fd, buf, len, flags, addr, alen)
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if !msg.is_null() {
        let m = &*msg;
        if !m.msg_name.is_null()
            && !may_send(
                fd,
                m.msg_name as *const libc::sockaddr,
                m.msg_namelen,
                flags,
            )
        {
            return -1;
        }
    }
    real::sendmsg(fd, msg, flags)
}

#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    n: c_uint,
    flags: c_int,
) -> c_int {
    if !msgs.is_null() {
        for i in 0..n as usize {
            let m = &(*msgs.add(i)).msg_hdr;
            if !m.msg_name.is_null()
                && !may_send(
                    fd,
                    m.msg_name as *const libc::sockaddr,
                    m.msg_namelen,
                    flags,
                )
            {
                // Like the kernel: report the datagrams sent before the first failure.
                if i == 0 {
                    return -1;
                }
                return real::sendmmsg(fd, msgs, i as c_uint, flags);
            }
        }
    }
    real::sendmmsg(fd, msgs, n, flags)
}
