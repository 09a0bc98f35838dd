//! The blocking proxied TCP connect: the non-blocking machinery of [`super::nbconnect`]
//! (the program's own socket connected to the first hop, the chain handshake, a dynamic
//! chain's retries), driven to its end here, waiting in `real::poll` under its deadlines.
//! So a blocking connect behaves as the kernel's:
//!
//! - a signal whose handler has no `SA_RESTART` interrupts it with EINTR; the handshake goes
//!   on (a second `connect` says EALREADY, then EISCONN; `poll`/`SO_ERROR` finish it);
//! - `SO_SNDTIMEO` bounds it: after that long it fails with EINPROGRESS, the handshake
//!   abandoned and the socket disconnected;
//! - the fd's flags are never changed but for the one `connect` call to the first hop (and
//!   only while it is the same socket), and an fd closed by another thread meanwhile (through
//!   libc: the close hook forgets it in the fd table, which each step reads) is never touched
//!   again: the connect fails with EBADF.
//!
//! Its system calls, on a proxy that accepts at once: the socket's type, flags and
//! `SO_SNDTIMEO`, one `fstat` (the socket's inode, the key of its handshake), the flags
//! toggled around the `connect` to the first hop (with one `fstat` to check it is the same
//! socket before they are put back), then the greeting sent at once (no poll or `SO_ERROR`
//! first: a socket still connecting refuses it with EAGAIN), and per reply one `poll` and its
//! reads; the fd table's two writes each block signals for their few stores.

use super::nbconnect::{self, Progress};
use crate::state::fdtable;
use crate::state::runtime::Runtime;
use crate::sys::error::errno;
use crate::sys::guard::set_errno;
use crate::sys::real;
use libc::c_int;
use proxify_core::config::Chain;
use proxify_core::socks::TargetAddr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `SO_SNDTIMEO` of `fd`, if set.
fn sndtimeo(fd: c_int) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: a timeval buffer of the size given.
    let rc = unsafe {
        real::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            &mut tv as *mut libc::timeval as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 || (tv.tv_sec == 0 && tv.tv_usec == 0) {
        return None;
    }
    Some(
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64),
    )
}

/// Would the kernel have returned EINTR from a blocking connect for the signal that just
/// interrupted our poll? We cannot tell which signal it was: yes if any caught signal's
/// handler lacks `SA_RESTART` (the kernel restarts a connect only with it).
fn interrupting_handler() -> bool {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a query only (no new action), into a zeroed sigaction.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: sigaction only reads the current disposition into our struct.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            continue;
        }
        let h = old.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN && old.sa_flags & libc::SA_RESTART == 0 {
            return true;
        }
    }
    false
}

/// Connects the blocking TCP socket `fd` (its `flags` as the hook read them) to `target`
/// through the proxy; returns as
/// `connect(2)` does (0, or -1 with errno set). Failures are logged (one line) by nbconnect.
#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
pub fn connect(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    flags: c_int,
) -> c_int {
    let give_up = sndtimeo(fd).map(|d| Instant::now() + d);
    let ino = match nbconnect::start_quiet(rt, fd, domain, dest, target, chain, flags) {
        Ok(ino) => ino,
        Err((f, target)) => {
            nbconnect::failed_to_start(&target, chain, &f);
            set_errno(f.errno);
            return -1;
        }
    };
    // Bounded: each round either ends or waits in poll until a deadline that only nears.
    loop {
        match nbconnect::step_started(fd, ino) {
            Progress::Done => return 0,
            Progress::Failed(e) => {
                set_errno(fdtable::take_failure(fd).unwrap_or(e));
                return -1;
            }
            Progress::NotOurs => {
                // Closed (and maybe reused) by another thread: nothing of ours is left.
                set_errno(libc::EBADF);
                return -1;
            }
            Progress::Running { want, deadline, .. } => {
                let now = Instant::now();
                let mut until = deadline;
                if let Some(g) = give_up {
                    if now >= g {
                        log::debug!("connect fd {fd}: SO_SNDTIMEO passed, abandoned");
                        nbconnect::abandon(fd);
                        set_errno(libc::EINPROGRESS);
                        return -1;
                    }
                    until = until.min(g);
                }
                let left = until.saturating_duration_since(now);
                let ms = (left.as_millis() + 1).min(i32::MAX as u128) as c_int;
                let mut p = libc::pollfd {
                    fd,
                    events: want,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let rc = unsafe { real::poll(&mut p, 1, ms) };
                if rc < 0 && errno() == libc::EINTR && interrupting_handler() {
                    if let Err(e) = nbconnect::go_on_in_background(fd) {
                        log::debug!("connect fd {fd}: interrupted, abandoned: {e}");
                        nbconnect::abandon(fd);
                        set_errno(libc::EINTR);
                        return -1;
                    }
                    log::debug!("connect fd {fd}: interrupted (EINTR), handshake goes on");
                    set_errno(libc::EINTR);
                    return -1;
                }
            }
        }
    }
}
