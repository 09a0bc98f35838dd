//! `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `close_range`, `closefrom`: keep the fd
//! table true. The `close` path takes no lock and allocates nothing.

use crate::{fdtable, real};
use libc::{c_int, c_uint, c_ulong};

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    fdtable::clear(fd);
    real::close(fd)
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    let r = real::dup(fd);
    if r >= 0 {
        fdtable::duplicate(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, fd2: c_int) -> c_int {
    let r = real::dup2(fd, fd2);
    if r >= 0 && fd != fd2 {
        fdtable::duplicate(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, fd2: c_int, flags: c_int) -> c_int {
    let r = real::dup3(fd, fd2, flags);
    if r >= 0 {
        fdtable::duplicate(fd, r);
    }
    r
}

/// Called by the variadic `fcntl`/`fcntl64` defined in `csrc/variadic.c` (stable Rust cannot
/// define a variadic function).
#[no_mangle]
pub unsafe extern "C" fn proxify_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let r = real::fcntl(fd, cmd, arg);
    if r >= 0 && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        fdtable::duplicate(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let r = real::close_range(first, last, flags);
    // CLOSE_RANGE_CLOEXEC only marks the fds; they stay open.
    if r == 0 && flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        fdtable::clear_range(first, last);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn closefrom(first: c_int) {
    real::closefrom(first);
    fdtable::clear_range(first.max(0) as c_uint, c_uint::MAX);
}
