//! `getsockopt`: `SO_ERROR` of a socket whose non-blocking proxied connect is handshaking
//! (finished first, bounded by its deadline) or failed (its errno, once, like the kernel).
//! Every other option, and every other socket, goes straight to libc.

use crate::engine::nbconnect;
use crate::state::fdtable;
use crate::sys::guard::guarded;
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
    if fdtable::none_handshaking()
        || level != libc::SOL_SOCKET
        || name != libc::SO_ERROR
        || val.is_null()
        || len.is_null()
    {
        return real::getsockopt(fd, level, name, val, len);
    }
    guarded(-1, libc::EIO, || {
        let Some(err) = nbconnect::pending_error(fd) else {
            return real::getsockopt(fd, level, name, val, len);
        };
        // The real call checks the arguments (and clears any error of the kernel's own).
        let r = real::getsockopt(fd, level, name, val, len);
        if r == 0 && *len as usize >= std::mem::size_of::<c_int>() {
            *(val as *mut c_int) = err;
        }
        r
    })
}
