//! `read`, `write`, `readv`, `writev`, `shutdown`: a UDP socket connected through a SOCKS5 association
//! needs the RFC 1928 header added and removed; a socket whose non-blocking proxied connect is
//! still handshaking is finished first (`nbconnect::gate`); every other fd goes straight to
//! libc after two relaxed atomic loads (or a table look-up when some fd is tracked).

use crate::engine::nbconnect::gate;
use crate::engine::udp::assoc;
use crate::sys::real;
use libc::{c_int, c_void, iovec, msghdr, size_t, ssize_t};

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => crate::hooks::udp::recv(fd, buf, n, 0),
        _ => real::read(fd, buf, n),
    }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => crate::hooks::udp::send(fd, buf, n, 0),
        _ if !crate::engine::dnsresp::idle() => {
            let iov = [iovec {
                iov_base: buf as *mut c_void,
                iov_len: n,
            }];
            crate::hooks::udp::dns_connected(fd, &iov, 0).unwrap_or_else(|| real::write(fd, buf, n))
        }
        _ => real::write(fd, buf, n),
    }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => {
            let mut m: msghdr = std::mem::zeroed();
            m.msg_iov = iov as *mut iovec;
            m.msg_iovlen = cnt.max(0) as _;
            crate::hooks::udp::recvmsg(fd, &mut m, 0)
        }
        _ => real::readv(fd, iov, cnt),
    }
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => {
            let mut m: msghdr = std::mem::zeroed();
            m.msg_iov = iov as *mut iovec;
            m.msg_iovlen = cnt.max(0) as _;
            crate::hooks::udp::sendmsg(fd, &m, 0)
        }
        _ if !crate::engine::dnsresp::idle() && !iov.is_null() && cnt > 0 => {
            let v = std::slice::from_raw_parts(iov, cnt as usize);
            crate::hooks::udp::dns_connected(fd, v, 0).unwrap_or_else(|| real::writev(fd, iov, cnt))
        }
        _ => real::writev(fd, iov, cnt),
    }
}

/// `shutdown`: a DNS-over-TCP stream to the system resolver (`dnsresp`) answers what is left
/// and ends its side too; every other fd goes straight to libc after one relaxed load.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let r = real::shutdown(fd, how);
    if r == 0 && !crate::engine::dnsresp::idle() {
        let e = crate::sys::error::errno();
        crate::sys::guard::hook(
            || (),
            (),
            libc::EIO,
            || crate::engine::dnsresp::shut(fd, how),
        );
        crate::sys::guard::set_errno(e);
    }
    r
}
