//! `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `close_range`, `closefrom`: keep the fd
//! table true. The `close` path takes no lock and allocates nothing.

use crate::engine::nbconnect;
use crate::state::fdtable::{self, Kind};
use crate::sys::real;
use libc::{c_int, c_uint, c_ulong};

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    crate::engine::dnsresp::forget(fd);
    if !fdtable::none_tracked() {
        if fdtable::is_internal(fd) {
            // One of ours (a daemon closing every fd): it stays open, the program moves on.
            return 0;
        }
        fdtable::clear(fd);
    }
    real::close(fd)
}

/// `newfd` is a copy of `oldfd`: the table copies the state, and a running non-blocking
/// handshake learns the new number (it finishes for every fd of the socket).
fn duplicated(oldfd: c_int, newfd: c_int) {
    if fdtable::duplicate(oldfd, newfd) == Some(Kind::Handshaking) {
        nbconnect::note_dup(newfd);
    }
}

/// Before the program's dup2/dup3 reuses `fd2`: if it is one of our fds, move ours away.
fn free_number(fd2: c_int) -> bool {
    if fdtable::is_internal(fd2) && !fdtable::relocate_internal(fd2) {
        crate::sys::guard::set_errno(libc::EBUSY);
        return false;
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = real::dup(fd);
    if r >= 0 {
        duplicated(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, fd2: c_int) -> c_int {
    if fd != fd2 && !free_number(fd2) {
        return -1;
    }
    let r = real::dup2(fd, fd2);
    if r >= 0 && fd != fd2 {
        duplicated(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, fd2: c_int, flags: c_int) -> c_int {
    if fd != fd2 && !free_number(fd2) {
        return -1;
    }
    let r = real::dup3(fd, fd2, flags);
    if r >= 0 {
        duplicated(fd, r);
    }
    r
}

/// Called by the variadic `fcntl`/`fcntl64` defined in `csrc/variadic.c` (stable Rust cannot
/// define a variadic function).
#[no_mangle]
pub unsafe extern "C" fn proxify_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = real::fcntl(fd, cmd, arg);
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        duplicated(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // CLOSE_RANGE_CLOEXEC only marks the fds (ours are close-on-exec already).
    if fdtable::none_tracked() || flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 {
        return real::close_range(first, last, flags);
    }
    // Close around our own fds: the sub-ranges between them.
    let mut start = first;
    let mut r = 0;
    while let Some(ours) = fdtable::next_internal(start, last) {
        if ours > start {
            r |= real::close_range(start, ours - 1, flags);
        }
        if ours == c_uint::MAX {
            start = ours;
            break;
        }
        start = ours + 1;
    }
    if start <= last && !(start == last && fdtable::is_internal(start as c_int)) {
        r |= real::close_range(start, last, flags);
    }
    if r == 0 {
        fdtable::clear_range(first, last, false);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn closefrom(first: c_int) {
    let first = first.max(0) as c_uint;
    if fdtable::none_tracked() || close_range(first, c_uint::MAX, 0) != 0 {
        real::closefrom(first as c_int);
        fdtable::clear_range(first, c_uint::MAX, true);
    }
}
