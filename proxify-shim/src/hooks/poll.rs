//! `poll`, `ppoll`, `select`, `pselect`, `epoll_ctl`, `epoll_wait`, `epoll_pwait`,
//! `epoll_pwait2` (and the fortified `__poll_chk`/`__ppoll_chk`): where the handshakes of
//! non-blocking proxied connects (`engine/nbconnect.rs`) are driven.
//!
//! Fast path: no fd handshaking → straight to libc after one relaxed atomic load. Otherwise a
//! handshaking fd in the set is stepped, replaced in the wait by its handshake's readiness fd
//! (`engine/evreg.rs`: readable when the handshake can move, has timed out or is over; never what the
//! program asked: it must not see the proxy's bytes), and reported only once the handshake is
//! over: writable when it succeeded (the connect completed), writable with
//! POLLERR|POLLHUP when it failed (like a failed non-blocking connect). The waits are bounded
//! by the program's timeout and the handshakes' deadlines.
//!
//! Size: ~720 lines, no unit tests: ten entry points of three readiness APIs; poll, ppoll,
//! select and pselect share `poll_core` (a select becomes a poll set), the epoll ones share
//! `epoll_slow`. Could be split into poll/select and epoll files; not done yet.

use crate::engine::evreg;
use crate::engine::nbconnect::{self, Progress};
use crate::state::fdtable;
use crate::sys::guard::{hook, set_errno};
use crate::sys::real;
use libc::{c_int, c_short, c_ulong, epoll_event, fd_set, nfds_t, pollfd, sigset_t, size_t};
use libc::{timespec, timeval};
use std::time::{Duration, Instant};

/// After the program's timeout ran out, a few more non-waiting rounds while handshakes move.
const EXTRA_ROUNDS: u32 = 16;

fn ms_dur(ms: c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// A valid timespec as a duration (None: NULL, infinite). Err: invalid, for the real call to
/// refuse.
unsafe fn ts_dur(ts: *const timespec) -> Result<Option<Duration>, ()> {
    if ts.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-null `ts` is the caller's timespec (ts_dur's callers pass the program's).
    let t = unsafe { *ts };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(());
    }
    Ok(Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
}

fn to_ts(d: Duration) -> timespec {
    timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// Milliseconds, rounded up (-1: infinite).
fn to_ms(d: Option<Duration>) -> c_int {
    match d {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int,
    }
}

/// Is any fd of `fds` handshaking (or holding an unreported failure)?
unsafe fn any_ours(fds: *const pollfd, n: nfds_t) -> bool {
    (0..n as usize).any(|i| {
        // SAFETY: `fds` points to `n` pollfds, as poll's caller promised, and i < n.
        let fd = unsafe { (*fds.add(i)).fd };
        fd >= 0 && nbconnect::is_ours(fd)
    })
}

/// What a failed non-blocking connect reports.
fn failed_revents(events: c_short) -> c_short {
    (events
        & (libc::POLLIN | libc::POLLRDNORM | libc::POLLOUT | libc::POLLWRNORM | libc::POLLRDHUP))
        | libc::POLLERR
        | libc::POLLHUP
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Running,
    Failed,
    Plain,
}

/// The poll loop over `fds` (some handshaking): `wait` is the real call with a timeout.
fn poll_core(
    fds: &mut [pollfd],
    timeout: Option<Duration>,
    wait: &mut dyn FnMut(&mut [pollfd], Option<Duration>) -> c_int,
) -> c_int {
    let ours: Vec<(usize, c_int, c_short)> = fds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.fd >= 0 && nbconnect::is_ours(p.fd))
        .map(|(i, p)| (i, p.fd, p.events))
        .collect();
    if ours.is_empty() {
        return wait(fds, timeout);
    }
    // From here on this call may wait on readiness fds of ours: they stay open meanwhile.
    let _polling = evreg::Polling::enter();
    let end = timeout.map(|t| Instant::now() + t);
    let mut seen = vec![Seen::Plain; ours.len()];
    let mut extra = 0;
    loop {
        let mut soonest: Option<Instant> = None;
        for (k, &(i, fd, events)) in ours.iter().enumerate() {
            match nbconnect::step(fd) {
                Progress::Running { want, deadline, q } => {
                    if q >= 0 {
                        fds[i].fd = q;
                        fds[i].events = libc::POLLIN;
                    } else {
                        fds[i].events = want;
                    }
                    seen[k] = Seen::Running;
                    soonest = Some(soonest.map_or(deadline, |s| s.min(deadline)));
                }
                Progress::Failed(_) => {
                    // Reported by us; the kernel skips a negative fd.
                    fds[i].fd = -1;
                    seen[k] = Seen::Failed;
                }
                Progress::Done | Progress::NotOurs => {
                    fds[i].events = events;
                    seen[k] = Seen::Plain;
                }
            }
        }
        let now = Instant::now();
        let mut tmo = end.map(|e| e.saturating_duration_since(now));
        if let Some(d) = soonest {
            let left = d.saturating_duration_since(now) + Duration::from_millis(1);
            tmo = Some(tmo.map_or(left, |t| t.min(left)));
        }
        if seen.contains(&Seen::Failed) {
            tmo = Some(Duration::ZERO);
        }
        let r = wait(fds, tmo);
        let e = crate::sys::error::errno();
        let mut progressed = false;
        for (k, &(i, fd, events)) in ours.iter().enumerate() {
            fds[i].fd = fd;
            fds[i].events = events;
            match seen[k] {
                Seen::Running => {
                    progressed |= fds[i].revents != 0;
                    fds[i].revents = 0;
                }
                Seen::Failed => fds[i].revents = failed_revents(events),
                Seen::Plain => {}
            }
        }
        if r < 0 {
            set_errno(e);
            return -1;
        }
        let count = fds.iter().filter(|p| p.revents != 0).count();
        if count > 0 {
            return count as c_int;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            if !progressed || extra >= EXTRA_ROUNDS {
                return 0;
            }
            extra += 1;
        }
    }
}

/// The real ppoll over our copy of the pollfds, with `timeout` (None: forever) and the
/// caller's `sigmask` (or null).
fn real_ppoll(fds: &mut [pollfd], timeout: Option<Duration>, sigmask: *const sigset_t) -> c_int {
    let ts = timeout.map(to_ts);
    // SAFETY: `fds` is a live pollfd slice, `ts` ours or null, `sigmask` the caller's or null.
    unsafe {
        real::ppoll(
            fds.as_mut_ptr(),
            fds.len() as nfds_t,
            ts.as_ref()
                .map_or(std::ptr::null(), |t| t as *const timespec),
            sigmask,
        )
    }
}

unsafe fn poll_slow(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: Option<Duration>,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: `fds` is non-null and points to `n` pollfds, as poll's caller promised.
    let fds = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    poll_core(fds, timeout, &mut |f, t| real_ppoll(f, t, sigmask))
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    // SAFETY: `fds` is non-null and points to `n` pollfds, as poll's caller promised.
    if fdtable::none_handshaking() || fds.is_null() || !unsafe { any_ours(fds, n) } {
        // SAFETY: the caller's arguments, unchanged, under libc's poll contract.
        return unsafe { real::poll(fds, n, timeout) };
    }
    hook(interrupted, -1, libc::EIO, || {
        // SAFETY: `fds` is non-null and points to `n` pollfds, as poll's caller promised.
        unsafe { poll_slow(fds, n, ms_dur(timeout), std::ptr::null()) }
    })
}

/// A wait from a signal handler that interrupted proxify on this thread (sys::guard::hook):
/// handshakes cannot be stepped there (their state is behind locks): EINTR, which every wait
/// may return and every caller retries.
fn interrupted() -> c_int {
    set_errno(libc::EINTR);
    -1
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: `fds` is non-null and points to `n` pollfds, as ppoll's caller promised.
    if fdtable::none_handshaking() || fds.is_null() || !unsafe { any_ours(fds, n) } {
        // SAFETY: the caller's arguments, unchanged, under libc's ppoll contract.
        return unsafe { real::ppoll(fds, n, tmo, sigmask) };
    }
    // SAFETY: `tmo` is null or the caller's timespec (ppoll's contract).
    let Ok(timeout) = (unsafe { ts_dur(tmo) }) else {
        // SAFETY: the caller's arguments, unchanged, under libc's ppoll contract.
        return unsafe { real::ppoll(fds, n, tmo, sigmask) };
    };
    hook(interrupted, -1, libc::EIO, || {
        // SAFETY: `fds` points to `n` pollfds and `sigmask` is null or a sigset (ppoll's contract).
        unsafe { poll_slow(fds, n, timeout, sigmask) }
    })
}

/// `poll` built with `_FORTIFY_SOURCE`.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if fdtable::none_handshaking() || fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: the caller's arguments, unchanged, under libc's __poll_chk contract.
        return unsafe { real::poll_chk(fds, n, timeout, fdslen) };
    }
    // SAFETY: `fds` holds `fdslen` bytes, which is room for at least `n` pollfds (checked).
    unsafe { poll(fds, n, timeout) }
}

#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    tmo: *const timespec,
    sigmask: *const sigset_t,
    fdslen: size_t,
) -> c_int {
    if fdtable::none_handshaking() || fdslen / std::mem::size_of::<pollfd>() < n as usize {
        // SAFETY: the caller's arguments, unchanged, under libc's __ppoll_chk contract.
        return unsafe { real::ppoll_chk(fds, n, tmo, sigmask, fdslen) };
    }
    // SAFETY: `fds` holds room for at least `n` pollfds (checked); the rest as ppoll's contract.
    unsafe { ppoll(fds, n, tmo, sigmask) }
}

const WORD: usize = c_ulong::BITS as usize;

/// A copy of the words of an fd_set holding fds `0..nfds` (a copy: the program may pass one
/// set twice, as C allows, and two `&mut` views of it would alias).
unsafe fn words(set: *const fd_set, nfds: usize) -> Option<Vec<c_ulong>> {
    if set.is_null() {
        return None;
    }
    // SAFETY: a non-null set holds at least `nfds` bits in c_ulong words (select's contract).
    let w = unsafe { std::slice::from_raw_parts(set as *const c_ulong, nfds.div_ceil(WORD)) };
    Some(w.to_vec())
}

/// Writes `w` back into the program's set (nothing for a null one).
unsafe fn put_words(set: *mut fd_set, w: &Option<Vec<c_ulong>>) {
    if let (false, Some(w)) = (set.is_null(), w) {
        // SAFETY: `set` holds at least `w.len()` words (select's contract, as read by `words`);
        // `w` is our own copy, so the two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), set as *mut c_ulong, w.len()) };
    }
}

fn isset(w: &Option<Vec<c_ulong>>, fd: usize) -> bool {
    w.as_ref()
        .map(|w| w[fd / WORD] >> (fd % WORD) & 1 != 0)
        .unwrap_or(false)
}

/// Calls `f` for every fd (below `nfds`) in any of the sets.
fn each_fd(sets: &[&Option<Vec<c_ulong>>], nfds: usize, mut f: impl FnMut(usize)) {
    for wi in 0..nfds.div_ceil(WORD) {
        let mut bits: c_ulong = 0;
        for w in sets.iter().copied().flatten() {
            bits |= w[wi];
        }
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let fd = wi * WORD + b;
            if fd < nfds {
                f(fd);
            }
        }
    }
}

const IN_SET: c_short =
    libc::POLLIN | libc::POLLRDNORM | libc::POLLRDBAND | libc::POLLHUP | libc::POLLERR;
const OUT_SET: c_short = libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND | libc::POLLERR;

/// select/pselect with a handshaking fd in a set: the same loop over a pollfd array.
/// Returns None when no fd of the sets is ours (the caller makes the real call).
unsafe fn select_slow(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: Option<Duration>,
    sigmask: *const sigset_t,
) -> Option<c_int> {
    let n = nfds.max(0) as usize;
    // SAFETY: each set is null or holds `nfds` bits (select's contract); copies are taken.
    let (mut rs, mut ws, mut es) = unsafe { (words(r, n), words(w, n), words(e, n)) };
    let mut ours = false;
    each_fd(&[&rs, &ws, &es], n, |fd| {
        ours |= nbconnect::is_ours(fd as c_int)
    });
    if !ours {
        return None;
    }
    let mut fds: Vec<pollfd> = Vec::new();
    each_fd(&[&rs, &ws, &es], n, |fd| {
        let mut events = 0;
        if isset(&rs, fd) {
            events |= libc::POLLIN | libc::POLLRDNORM | libc::POLLRDBAND;
        }
        if isset(&ws, fd) {
            events |= libc::POLLOUT | libc::POLLWRNORM | libc::POLLWRBAND;
        }
        if isset(&es, fd) {
            events |= libc::POLLPRI;
        }
        fds.push(pollfd {
            fd: fd as c_int,
            events,
            revents: 0,
        });
    });
    let rc = poll_core(&mut fds, timeout, &mut |f, t| real_ppoll(f, t, sigmask));
    if rc < 0 {
        return Some(-1);
    }
    if fds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        set_errno(libc::EBADF);
        return Some(-1);
    }
    for s in [&mut rs, &mut ws, &mut es].into_iter().flatten() {
        s.fill(0);
    }
    let mut count = 0;
    let mut mark = |s: &mut Option<Vec<c_ulong>>, fd: usize| {
        if let Some(w) = s {
            w[fd / WORD] |= 1 << (fd % WORD);
            count += 1;
        }
    };
    for p in &fds {
        let fd = p.fd as usize;
        if p.events & libc::POLLIN != 0 && p.revents & IN_SET != 0 {
            mark(&mut rs, fd);
        }
        if p.events & libc::POLLOUT != 0 && p.revents & OUT_SET != 0 {
            mark(&mut ws, fd);
        }
        if p.events & libc::POLLPRI != 0 && p.revents & libc::POLLPRI != 0 {
            mark(&mut es, fd);
        }
    }
    // In the kernel's order: a set passed twice ends with the later one's result.
    // SAFETY: the program's sets (or null), each holding the words `words` copied.
    unsafe {
        put_words(r, &rs);
        put_words(w, &ws);
        put_words(e, &es);
    }
    Some(count)
}

#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tmo: *mut timeval,
) -> c_int {
    if fdtable::none_handshaking() || nfds <= 0 {
        // SAFETY: the caller's arguments, unchanged, under libc's select contract.
        return unsafe { real::select(nfds, r, w, e, tmo) };
    }
    let timeout = if tmo.is_null() {
        None
    } else {
        // SAFETY: `tmo` is non-null, the caller's timeval (select's contract).
        let t = unsafe { *tmo };
        if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
            // SAFETY: the caller's arguments, unchanged, under libc's select contract.
            return unsafe { real::select(nfds, r, w, e, tmo) };
        }
        Some(Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000))
    };
    let start = Instant::now();
    match hook(
        || Some(interrupted()),
        Some(-1),
        libc::EIO,
        // SAFETY: each set is null or holds `nfds` bits (select's contract).
        || unsafe { select_slow(nfds, r, w, e, timeout, std::ptr::null()) },
    ) {
        // SAFETY: the caller's arguments, unchanged, under libc's select contract.
        None => unsafe { real::select(nfds, r, w, e, tmo) },
        Some(rc) => {
            // Linux reports the time left.
            if let (Some(t), false) = (timeout, tmo.is_null()) {
                let left = t.saturating_sub(start.elapsed());
                // SAFETY: `tmo` is non-null, the caller's writable timeval (select's contract).
                unsafe {
                    (*tmo).tv_sec = left.as_secs() as libc::time_t;
                    (*tmo).tv_usec = left.subsec_micros() as libc::suseconds_t;
                }
            }
            rc
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    if fdtable::none_handshaking() || nfds <= 0 {
        // SAFETY: the caller's arguments, unchanged, under libc's pselect contract.
        return unsafe { real::pselect(nfds, r, w, e, tmo, sigmask) };
    }
    // SAFETY: `tmo` is null or the caller's timespec (pselect's contract).
    let Ok(timeout) = (unsafe { ts_dur(tmo) }) else {
        // SAFETY: the caller's arguments, unchanged, under libc's pselect contract.
        return unsafe { real::pselect(nfds, r, w, e, tmo, sigmask) };
    };
    match hook(
        || Some(interrupted()),
        Some(-1),
        libc::EIO,
        // SAFETY: each set is null or holds `nfds` bits, `sigmask` null or a sigset (pselect's).
        || unsafe { select_slow(nfds, r, w, e, timeout, sigmask) },
    ) {
        // SAFETY: the caller's arguments, unchanged, under libc's pselect contract.
        None => unsafe { real::pselect(nfds, r, w, e, tmo, sigmask) },
        Some(rc) => rc,
    }
}

/// Every registration is recorded (one made before `connect` moves with the socket when its
/// handshake starts); a handshaking socket's is kept aside (`engine/evreg.rs`).
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
) -> c_int {
    hook(
        // From a signal handler that interrupted proxify: the registration records are behind
        // a lock. A handshaking socket's registration cannot be changed there (EBUSY); any
        // other goes to the kernel unrecorded (it only matters for a socket whose connect has
        // not started yet).
        || {
            if fdtable::kind(fd) == Some(fdtable::Kind::Handshaking) {
                set_errno(libc::EBUSY);
                -1
            } else {
                // SAFETY: the caller's arguments, unchanged, under libc's epoll_ctl contract.
                unsafe { real::epoll_ctl(epfd, op, fd, ev) }
            }
        },
        -1,
        libc::EIO,
        || {
            let hs = if fdtable::none_handshaking() {
                None
            } else {
                nbconnect::hs_of(fd)
            };
            // SAFETY: `ev` is the program's pointer (NULL or an epoll_event), as evreg takes it.
            unsafe { evreg::epoll_ctl(epfd, op, fd, ev, hs) }
        },
    )
}

/// An epoll wait from a signal handler that interrupted proxify: the kernel's events without
/// ours (our readiness fds are level-triggered: they fire again for the next wait), or EINTR
/// when only ours came.
unsafe fn epoll_reentered(
    events: *mut epoll_event,
    first: Option<c_int>,
    wait: &mut dyn FnMut() -> c_int,
) -> c_int {
    let r = match first {
        Some(r) => r,
        None => wait(),
    };
    if r <= 0 {
        return r;
    }
    // SAFETY: the real wait just wrote `r` > 0 events into `events`.
    match unsafe { evreg::drop_ours(events, r as usize) } {
        0 => interrupted(),
        kept => kept as c_int,
    }
}

/// The epoll loop while handshakes have registrations swapped: `wait` is the real call with a
/// timeout. Our events are dropped (their handshakes stepped); the program's are returned.
unsafe fn epoll_slow(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: Option<Duration>,
    mut first: Option<c_int>,
    wait: &mut dyn FnMut(Option<Duration>) -> c_int,
) -> c_int {
    // After a first wait made on the fast path, what is left of the timeout is unknown: none.
    let end = match first {
        Some(_) => Some(Instant::now()),
        None => timeout.map(|t| Instant::now() + t),
    };
    let mut extra = 0;
    loop {
        let r = match first.take() {
            Some(r) => r,
            None => wait(end.map(|e| e.saturating_duration_since(Instant::now()))),
        };
        if r <= 0 || !evreg::active() {
            return r;
        }
        // SAFETY: the real wait just wrote `r` (at most `max`) events into `events`.
        let (kept, todo) = unsafe { evreg::filter(epfd, events, (r as usize).min(max as usize)) };
        for fd in todo {
            nbconnect::step(fd);
        }
        if kept > 0 {
            return kept as c_int;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            // A handshake that just ended put the program's registration back: one more look.
            if extra >= EXTRA_ROUNDS {
                return 0;
            }
            extra += 1;
        }
    }
}

/// Should this epoll wait take the slow path? (Checked again after a fast-path wait: another
/// thread may have swapped a registration in while it slept.)
fn epoll_ours(events: *mut epoll_event, max: c_int) -> bool {
    evreg::active() && !events.is_null() && max > 0
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let mut first = None;
    if !epoll_ours(events, max) {
        // SAFETY: the caller's arguments, unchanged, under libc's epoll_wait contract.
        let r = unsafe { real::epoll_wait(epfd, events, max, timeout) };
        if r <= 0 || !epoll_ours(events, max) {
            return r;
        }
        first = Some(r);
    }
    hook(
        || {
            // SAFETY: `events` is the caller's room for `max` events (epoll_wait's contract),
            // which the real wait, with the caller's arguments, fills.
            unsafe {
                epoll_reentered(events, first, &mut || {
                    real::epoll_wait(epfd, events, max, timeout)
                })
            }
        },
        -1,
        libc::EIO,
        || {
            // SAFETY: `events` is the caller's room for `max` events (epoll_wait's contract),
            // which the real waits fill.
            unsafe {
                epoll_slow(epfd, events, max, ms_dur(timeout), first, &mut |t| {
                    real::epoll_wait(epfd, events, max, to_ms(t))
                })
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    let mut first = None;
    if !epoll_ours(events, max) {
        // SAFETY: the caller's arguments, unchanged, under libc's epoll_pwait contract.
        let r = unsafe { real::epoll_pwait(epfd, events, max, timeout, sigmask) };
        if r <= 0 || !epoll_ours(events, max) {
            return r;
        }
        first = Some(r);
    }
    hook(
        || {
            // SAFETY: `events` is the caller's room for `max` events and `sigmask` null or a
            // sigset (epoll_pwait's contract); the real wait takes the caller's arguments.
            unsafe {
                epoll_reentered(events, first, &mut || {
                    real::epoll_pwait(epfd, events, max, timeout, sigmask)
                })
            }
        },
        -1,
        libc::EIO,
        || {
            // SAFETY: `events` is the caller's room for `max` events and `sigmask` null or a
            // sigset (epoll_pwait's contract), for the real waits.
            unsafe {
                epoll_slow(epfd, events, max, ms_dur(timeout), first, &mut |t| {
                    real::epoll_pwait(epfd, events, max, to_ms(t), sigmask)
                })
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    tmo: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    let mut first = None;
    if !epoll_ours(events, max) {
        // SAFETY: the caller's arguments, unchanged, under libc's epoll_pwait2 contract.
        let r = unsafe { real::epoll_pwait2(epfd, events, max, tmo, sigmask) };
        if r <= 0 || !epoll_ours(events, max) {
            return r;
        }
        first = Some(r);
    }
    // SAFETY: `tmo` is null or the caller's timespec (epoll_pwait2's contract).
    let Ok(timeout) = (unsafe { ts_dur(tmo) }) else {
        // SAFETY: the caller's arguments, unchanged, under libc's epoll_pwait2 contract.
        return unsafe { real::epoll_pwait2(epfd, events, max, tmo, sigmask) };
    };
    hook(
        || {
            // SAFETY: `events` is the caller's room for `max` events (epoll_pwait2's contract);
            // the real wait takes the caller's arguments.
            unsafe {
                epoll_reentered(events, first, &mut || {
                    real::epoll_pwait2(epfd, events, max, tmo, sigmask)
                })
            }
        },
        -1,
        libc::EIO,
        || {
            // SAFETY: `events` is the caller's room for `max` events and `sigmask` null or a
            // sigset (epoll_pwait2's contract); `ts` is ours or null, for the real waits.
            unsafe {
                epoll_slow(epfd, events, max, timeout, first, &mut |t| {
                    let ts = t.map(to_ts);
                    real::epoll_pwait2(
                        epfd,
                        events,
                        max,
                        ts.as_ref()
                            .map_or(std::ptr::null(), |t| t as *const timespec),
                        sigmask,
                    )
                })
            }
        },
    )
}
