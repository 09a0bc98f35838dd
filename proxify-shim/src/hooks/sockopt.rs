//! `getsockopt`: `SO_ERROR` of a socket whose non-blocking proxied connect is handshaking
//! (finished first, bounded by its deadline) or failed (its errno, once, like the kernel).
//! `SO_DOMAIN` of a socket proxify replaced by one of the proxy's family: the family the program
//! created. Every other option, and every other socket, goes straight to libc.

use crate::engine::nbconnect;
use crate::state::fdtable;
use crate::sys::guard::{guarded, hook};
use crate::sys::real;
use libc::{c_int, c_void, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    if name == libc::SO_DOMAIN && level == libc::SOL_SOCKET && !fdtable::none_tracked() {
        return guarded(-1, libc::EIO, || so_domain(fd, val, len));
    }
    if fdtable::none_handshaking()
        || level != libc::SOL_SOCKET
        || name != libc::SO_ERROR
        || val.is_null()
        || len.is_null()
    {
        return real::getsockopt(fd, level, name, val, len);
    }
    hook(
        // From a signal handler that interrupted proxify (sys::guard::hook): the handshake's
        // state is behind a lock; the kernel's answer (no error yet) is what a connect still
        // in progress gives.
        || real::getsockopt(fd, level, name, val, len),
        -1,
        libc::EIO,
        || {
            let Some(err) = nbconnect::pending_error(fd) else {
                return real::getsockopt(fd, level, name, val, len);
            };
            // The real call checks the arguments (and clears any error of the kernel's own).
            let r = real::getsockopt(fd, level, name, val, len);
            if r == 0 && *len as usize >= std::mem::size_of::<c_int>() {
                *(val as *mut c_int) = err;
            }
            r
        },
    )
}

/// `SO_DOMAIN`: the program's family if proxify replaced the socket (`fdtable::program_family`).
unsafe fn so_domain(fd: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int {
    // The real call checks the arguments and the fd.
    let r = real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, val, len);
    if r == 0 && !val.is_null() && !len.is_null() && *len as usize >= std::mem::size_of::<c_int>() {
        if let Some(pf) = fdtable::program_family(fd) {
            // SAFETY: the kernel just wrote a c_int there (len says so).
            *(val as *mut c_int) = pf;
        }
    }
    r
}
