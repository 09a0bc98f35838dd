//! `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)`, `close_range`, `closefrom`: keep the fd
//! table true. The `close` path takes no lock and allocates nothing.
//!
//! While nothing is tracked every hook goes straight to libc; otherwise the table work runs
//! inside the panic guard (a panic never unwinds into the program).

use crate::engine::dnsresp;
use crate::engine::nbconnect;
use crate::state::fdtable::{self, Entry, Kind};
use crate::sys::guard::{caught, guarded, hook, set_errno};
use crate::sys::real;
use crate::sys::socket::close_ours;
use libc::{c_int, c_uint, c_ulong};

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if fdtable::none_tracked() && dnsresp::idle() {
        // SAFETY: the caller's fd, unchanged, to libc's close (integer arguments only).
        return unsafe { real::close(fd) };
    }
    hook(
        // From a signal handler that interrupted proxify (sys::guard::hook): the table is
        // lock-free; the DNS responder's own table is not, and a stale entry of it is only
        // ever compared with the fd's peer.
        || {
            if fdtable::is_internal(fd) {
                return 0;
            }
            close_ours(fdtable::forget(fd));
            // SAFETY: the caller's fd, unchanged, to libc's close.
            unsafe { real::close(fd) }
        },
        -1,
        libc::EIO,
        || {
            dnsresp::forget(fd);
            if !fdtable::none_tracked() {
                if fdtable::is_internal(fd) {
                    // One of ours (a daemon closing every fd): it stays open, the program moves on.
                    return 0;
                }
                close_ours(fdtable::forget(fd));
            }
            // SAFETY: the caller's fd, unchanged, to libc's close.
            unsafe { real::close(fd) }
        },
    )
}

/// `newfd` is a copy of `oldfd`: the table copies the state (with a copy of our control fd
/// of its own, made here: the table does no I/O), closes nothing, and hands back the control
/// fd of what `newfd` was before, which is closed here. A running non-blocking handshake
/// learns the new number (it finishes for every fd of the socket) — unless `may_lock` is
/// false (a signal handler that interrupted proxify): then a handshaking socket's copy is
/// refused (EBUSY). Err: the copy must not stay (its state could not be recorded).
fn duplicated(oldfd: c_int, newfd: c_int, may_lock: bool) -> Result<(), c_int> {
    if !may_lock
        && matches!(
            fdtable::kind(oldfd),
            Some(Kind::Handshaking | Kind::ReplyPending)
        )
    {
        return Err(libc::EBUSY);
    }
    let ctrl = match fdtable::get(oldfd) {
        // Each fd owns its copy of the control connection: closing one leaves the association
        // alive for the other.
        // SAFETY: F_DUPFD_CLOEXEC takes no pointer; the copy is ours.
        Some(Entry::UdpAssoc(a)) if a.ctrl >= 0 => unsafe {
            real::fcntl(a.ctrl, libc::F_DUPFD_CLOEXEC, 3)
        },
        _ => -1,
    };
    match fdtable::copy(oldfd, newfd, ctrl) {
        Ok((stale, kind)) => {
            close_ours(stale);
            if matches!(kind, Some(Kind::Handshaking | Kind::ReplyPending)) {
                if !may_lock {
                    close_ours(fdtable::forget(newfd));
                    return Err(libc::EBUSY);
                }
                nbconnect::note_dup(newfd);
            }
            Ok(())
        }
        Err(stale) => {
            close_ours(stale);
            close_ours((ctrl >= 0).then_some(ctrl));
            Err(libc::EMFILE)
        }
    }
}

/// `r`, the result of a dup of `oldfd`: records the copy. If that panics, the copy (whose
/// state is unknown) is closed and the call fails: never a tracked socket's untracked twin.
fn dup_done(oldfd: c_int, r: c_int) -> c_int {
    if r < 0 || fdtable::none_tracked() {
        return r;
    }
    let recorded = hook(
        // From a signal handler that interrupted proxify: a handshaking socket's copy must be
        // told to its handshake, under a lock: refused (EBUSY); any other copy is lock-free.
        || duplicated(oldfd, r, false),
        Err(libc::EIO),
        libc::EIO,
        || duplicated(oldfd, r, true),
    );
    match recorded {
        Ok(()) => r,
        Err(e) => {
            // SAFETY: r is the copy the dup just made; the program has not been told of it.
            unsafe { real::close(r) };
            set_errno(e);
            -1
        }
    }
}

/// Before the program's dup2/dup3 reuses `fd2`: if it is one of our fds, move ours away.
fn free_number(fd2: c_int) -> bool {
    if fdtable::none_tracked() {
        return true;
    }
    guarded(false, libc::EIO, || {
        if fdtable::is_internal(fd2) && !move_ours(fd2) {
            set_errno(libc::EBUSY);
            return false;
        }
        true
    })
}

/// Moves our internal fd `fd` to another number (the program is about to reuse its number).
fn move_ours(fd: c_int) -> bool {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointer; the copy is ours.
    let nfd = unsafe { real::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if nfd < 0 {
        return false;
    }
    if !fdtable::moved_internal(fd, nfd) {
        close_ours(Some(nfd));
        return false;
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's fd, unchanged, to libc's dup (integer arguments only).
    dup_done(fd, unsafe { real::dup(fd) })
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, fd2: c_int) -> c_int {
    if fd == fd2 {
        // SAFETY: the caller's fds, unchanged, to libc's dup2 (integer arguments only).
        return unsafe { real::dup2(fd, fd2) };
    }
    if !free_number(fd2) {
        return -1;
    }
    // SAFETY: as above; our own fd at `fd2`, if any, was moved away first.
    dup_done(fd, unsafe { real::dup2(fd, fd2) })
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, fd2: c_int, flags: c_int) -> c_int {
    if fd != fd2 && !free_number(fd2) {
        return -1;
    }
    // SAFETY: the caller's arguments, unchanged, to libc's dup3 (integers only); our own fd at
    // `fd2`, if any, was moved away first.
    dup_done(fd, unsafe { real::dup3(fd, fd2, flags) })
}

/// Called by the variadic `fcntl`/`fcntl64` defined in `csrc/variadic.c` (stable Rust cannot
/// define a variadic function).
#[no_mangle]
pub unsafe extern "C" fn proxify_fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: the caller's arguments, unchanged, to libc's fcntl: `arg` is whatever the
    // caller passed for `cmd` (a pointer for the commands that take one), as fcntl(2) asks.
    let r = unsafe { real::fcntl(fd, cmd, arg) };
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        return dup_done(fd, r);
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // CLOSE_RANGE_CLOEXEC only marks the fds (ours are close-on-exec already).
    if fdtable::none_tracked() || flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 {
        // SAFETY: the caller's arguments, unchanged, to libc's close_range (integers only).
        return unsafe { real::close_range(first, last, flags) };
    }
    guarded(-1, libc::EIO, || close_around_ours(first, last, flags))
}

/// `close_range` with fds tracked: closes around our own fds, the sub-ranges between them.
fn close_around_ours(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: close_range takes integers only; the ranges skip our own fds.
    let close_range = |a: c_uint, b: c_uint| unsafe { real::close_range(a, b, flags) };
    let mut start = first;
    let mut r = 0;
    while let Some(ours) = fdtable::next_internal(start, last) {
        if ours > start {
            r |= close_range(start, ours - 1);
        }
        if ours == c_uint::MAX {
            start = ours;
            break;
        }
        start = ours + 1;
    }
    if start <= last && !(start == last && fdtable::is_internal(start as c_int)) {
        r |= close_range(start, last);
    }
    if r == 0 {
        fdtable::clear_range(first, last, false, |c| close_ours(Some(c)));
    }
    r
}

#[no_mangle]
pub unsafe extern "C" fn closefrom(first: c_int) {
    let first = first.max(0) as c_uint;
    // SAFETY: closefrom takes an integer only.
    let closefrom = |f: c_uint| unsafe { real::closefrom(f as c_int) };
    if fdtable::none_tracked() {
        closefrom(first);
        return;
    }
    let done = caught(|| {
        if close_around_ours(first, c_uint::MAX, 0) != 0 {
            closefrom(first);
            fdtable::clear_range(first, c_uint::MAX, true, |c| close_ours(Some(c)));
        }
    });
    if done.is_none() {
        // closefrom cannot fail: the program's fds are closed (ours with them, which ends
        // their associations: fail closed); their numbers must not keep stale state.
        closefrom(first);
        let _ = caught(|| fdtable::clear_range(first, c_uint::MAX, true, |c| close_ours(Some(c))));
    }
}
