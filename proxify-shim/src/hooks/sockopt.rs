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
        // SAFETY: the caller's arguments, unchanged (so_domain has getsockopt's contract).
        return guarded(-1, libc::EIO, || unsafe { so_domain(fd, val, len) });
    }
    if fdtable::none_handshaking()
        || level != libc::SOL_SOCKET
        || name != libc::SO_ERROR
        || val.is_null()
        || len.is_null()
    {
        // SAFETY: the caller's arguments, unchanged, under libc's getsockopt contract.
        return unsafe { real::getsockopt(fd, level, name, val, len) };
    }
    hook(
        // From a signal handler that interrupted proxify (sys::guard::hook): the handshake's
        // state is behind a lock; the kernel's answer (no error yet) is what a connect still
        // in progress gives.
        // SAFETY: the caller's arguments, unchanged, under libc's getsockopt contract.
        || unsafe { real::getsockopt(fd, level, name, val, len) },
        -1,
        libc::EIO,
        || {
            let Some(err) = nbconnect::pending_error(fd) else {
                // SAFETY: the caller's arguments, unchanged, under libc's getsockopt contract.
                return unsafe { real::getsockopt(fd, level, name, val, len) };
            };
            // The real call checks the arguments (and clears any error of the kernel's own).
            // SAFETY: the caller's arguments, unchanged, under libc's getsockopt contract.
            let r = unsafe { real::getsockopt(fd, level, name, val, len) };
            // SAFETY: `len` is non-null (checked above) and the real call just succeeded with it.
            if r == 0 && unsafe { *len } as usize >= std::mem::size_of::<c_int>() {
                // SAFETY: non-null `val` holds at least a c_int (`*len` says so) for SO_ERROR.
                unsafe { *(val as *mut c_int) = err };
            }
            r
        },
    )
}

/// `SO_DOMAIN`: the program's family if proxify replaced the socket (`fdtable::program_family`).
unsafe fn so_domain(fd: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int {
    // The real call checks the arguments and the fd.
    // SAFETY: the caller's buffer and length (getsockopt's contract), for libc's getsockopt.
    let r = unsafe { real::getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, val, len) };
    if r == 0
        && !val.is_null()
        && !len.is_null()
        // SAFETY: `len` is non-null, the caller's socklen_t (getsockopt's contract).
        && unsafe { *len } as usize >= std::mem::size_of::<c_int>()
    {
        if let Some(pf) = fdtable::program_family(fd) {
            // SAFETY: the kernel just wrote a c_int there (len says so).
            unsafe { *(val as *mut c_int) = pf };
        }
    }
    r
}
