//! `read`, `write`, `readv`, `writev`, `shutdown`: a UDP socket connected through a SOCKS5 association
//! needs the RFC 1928 header added and removed; a socket whose non-blocking proxied connect is
//! still handshaking is finished first (`nbconnect::gate`; reads: `gate_read`, which also reads
//! the proxy's replies of a connect with optimistic data first); every other fd goes straight to
//! libc after two relaxed atomic loads (or a table look-up when some fd is tracked).

use crate::engine::nbconnect::{gate, gate_read};
use crate::engine::udp::assoc;
use crate::state::fdtable::{self, Kind};
use crate::sys::real;
use libc::{c_int, c_void, iovec, msghdr, size_t, ssize_t};

/// True when `fd` needs nothing from proxify on a read: no handshake is running anywhere and
/// `fd` is not a UDP association (two relaxed loads when nothing is tracked). The hooks below
/// test it inline and tail-call libc; the rest of each hook is a cold function of its own, so
/// the fast path saves and restores no registers (bench row 3).
#[inline(always)]
fn plain_read(fd: c_int) -> bool {
    fdtable::none_handshaking() && fdtable::kind(fd) != Some(Kind::UdpAssoc)
}

/// [`plain_read`], and no DNS-over-TCP stream to the system resolver is being answered.
#[inline(always)]
fn plain_write(fd: c_int) -> bool {
    crate::engine::dnsresp::idle() && plain_read(fd)
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if plain_read(fd) {
        // SAFETY: the caller's arguments, unchanged, under libc's read contract.
        return unsafe { real::read(fd, buf, n) };
    }
    // SAFETY: the caller's arguments, under read's contract.
    unsafe { read_slow(fd, buf, n) }
}

#[cold]
#[inline(never)]
unsafe fn read_slow(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if !gate_read(fd, 0) {
        return -1;
    }
    match assoc(fd) {
        // SAFETY: the caller's buffer of `n` bytes (read's contract), as recv takes it.
        Some(e) if e.peer.is_some() => unsafe { crate::hooks::udp::recv(fd, buf, n, 0) },
        // SAFETY: the caller's arguments, unchanged, under libc's read contract.
        _ => unsafe { real::read(fd, buf, n) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if plain_write(fd) {
        // SAFETY: the caller's arguments, unchanged, under libc's write contract.
        return unsafe { real::write(fd, buf, n) };
    }
    // SAFETY: the caller's arguments, under write's contract.
    unsafe { write_slow(fd, buf, n) }
}

#[cold]
#[inline(never)]
unsafe fn write_slow(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        // SAFETY: the caller's buffer of `n` bytes (write's contract), as send takes it.
        Some(e) if e.peer.is_some() => unsafe { crate::hooks::udp::send(fd, buf, n, 0) },
        _ if !crate::engine::dnsresp::idle() => {
            let iov = [iovec {
                iov_base: buf as *mut c_void,
                iov_len: n,
            }];
            crate::hooks::udp::dns_connected(fd, &iov, 0)
                // SAFETY: the caller's arguments, unchanged, under libc's write contract.
                .unwrap_or_else(|| unsafe { real::write(fd, buf, n) })
        }
        // SAFETY: the caller's arguments, unchanged, under libc's write contract.
        _ => unsafe { real::write(fd, buf, n) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if plain_read(fd) {
        // SAFETY: the caller's arguments, unchanged, under libc's readv contract.
        return unsafe { real::readv(fd, iov, cnt) };
    }
    // SAFETY: the caller's arguments, under readv's contract.
    unsafe { readv_slow(fd, iov, cnt) }
}

#[cold]
#[inline(never)]
unsafe fn readv_slow(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !gate_read(fd, 0) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => {
            // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_iov = iov as *mut iovec;
            m.msg_iovlen = cnt.max(0) as _;
            // SAFETY: `m` holds just the caller's `cnt` iovecs (readv's contract).
            unsafe { crate::hooks::udp::recvmsg(fd, &mut m, 0) }
        }
        // SAFETY: the caller's arguments, unchanged, under libc's readv contract.
        _ => unsafe { real::readv(fd, iov, cnt) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if plain_write(fd) {
        // SAFETY: the caller's arguments, unchanged, under libc's writev contract.
        return unsafe { real::writev(fd, iov, cnt) };
    }
    // SAFETY: the caller's arguments, under writev's contract.
    unsafe { writev_slow(fd, iov, cnt) }
}

#[cold]
#[inline(never)]
unsafe fn writev_slow(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if !gate(fd) {
        return -1;
    }
    match assoc(fd) {
        Some(e) if e.peer.is_some() => {
            // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_iov = iov as *mut iovec;
            m.msg_iovlen = cnt.max(0) as _;
            // SAFETY: `m` holds just the caller's `cnt` iovecs (writev's contract).
            unsafe { crate::hooks::udp::sendmsg(fd, &m, 0) }
        }
        _ if !crate::engine::dnsresp::idle() && !iov.is_null() && cnt > 0 => {
            // SAFETY: `iov` is non-null and points to `cnt` > 0 iovecs (writev's contract).
            let v = unsafe { std::slice::from_raw_parts(iov, cnt as usize) };
            crate::hooks::udp::dns_connected(fd, v, 0)
                // SAFETY: the caller's arguments, unchanged, under libc's writev contract.
                .unwrap_or_else(|| unsafe { real::writev(fd, iov, cnt) })
        }
        // SAFETY: the caller's arguments, unchanged, under libc's writev contract.
        _ => unsafe { real::writev(fd, iov, cnt) },
    }
}

/// `shutdown`: a DNS-over-TCP stream to the system resolver (`dnsresp`) answers what is left
/// and ends its side too; every other fd goes straight to libc after one relaxed load.
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    // SAFETY: plain integers; libc's shutdown checks the fd and `how` itself.
    let r = unsafe { real::shutdown(fd, how) };
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
