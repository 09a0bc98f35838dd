//! The program's epoll registrations of a socket whose proxy handshake is in flight.
//!
//! While a non-blocking proxied connect runs its handshake (`nbconnect.rs`), the socket's own
//! readiness is the proxy's business: the program must see nothing for it until the handshake
//! is over, then `EPOLLOUT` (or an error) as after a direct connect. This module makes that true
//! in the kernel rather than by filtering what the program's waits return:
//!
//! - Each handshake has a private readiness fd `q` (an epoll instance, close-on-exec) holding a
//!   private dup of the socket registered for what the handshake needs next, and a timerfd armed
//!   at the handshake's deadline: `q` is readable exactly when the handshake can move (or has
//!   timed out, or is over).
//! - In every epoll set of the program, the socket is replaced by `q`: `epoll_ctl` on a
//!   handshaking fd registers `q` (level-triggered `EPOLLIN`) with a data word of ours (MAGIC
//!   plus a key) and keeps the program's events and data aside; registrations made before
//!   `connect` are moved the same way when the connect starts (every `epoll_ctl` is recorded by
//!   epoll fd and fd number; a stale record is harmless: its `EPOLL_CTL_DEL` just fails).
//! - `epoll_wait` (on any fd of the instance: a dup, a fork-inherited fd, a reused number) gets
//!   our events only by their data word: it steps the handshake and drops them. When the
//!   handshake is over the timerfd is made to fire at once, so each set's `q` fires and the
//!   wait that sees it puts the program's registration back (`EPOLL_CTL_DEL` of `q`, then
//!   `EPOLL_CTL_ADD` of the socket with the program's events and data): the kernel itself then
//!   reports `EPOLLOUT`, edge, level or one-shot alike. A failed handshake also reports
//!   `EPOLLERR|EPOLLHUP` once, with `SO_ERROR` holding the errno.
//! - `EPOLL_CTL_MOD`/`DEL`/`ADD` of a swapped socket act on the kept registration; which set
//!   an epoll fd names is found by asking the kernel (an `EPOLL_CTL_MOD` of our `q` succeeds
//!   only in the set that holds it), never by fd number.
//! - poll/select wait on `q` in place of the socket (`hooks/poll.rs`).
//!
//! No thread, no busy loop (every fd of ours is level-triggered and quiet while the handshake
//! waits), and deadlines fire without relying on the program's timeouts. Cost: three fds per
//! handshake in flight (`q`, the timerfd, the dup), closed when it ends and the last set has
//! taken its registration back.

use crate::state::fdtable;
use crate::sys::error::errno;
use crate::sys::lock::ForkSafeMutex;
use crate::sys::real;
use libc::{c_int, c_short, epoll_event};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The data word of our registrations: MAGIC in the high half, the swap's key in the low half.
const MAGIC: u64 = 0x9d1f_a5c3_0000_0000;
const MAGIC_MASK: u64 = 0xffff_ffff_0000_0000;

/// A registration as the program made it (recorded for every epoll_ctl).
#[derive(Clone, Copy)]
struct Rec {
    epfd: c_int,
    events: u32,
    data: u64,
}

/// The program's registration of `fd` in one epoll set, replaced there by `qfd`.
struct Swap {
    key: u32,
    hs: u64,
    fd: c_int,
    ino: u64,
    /// The epoll fd it was made through (used only by `abort`, right after).
    epfd: c_int,
    /// `q` of the handshake, or our dup of it when `q` is already in that set (the program
    /// registered two fds of the socket in one set).
    qfd: c_int,
    events: u32,
    data: u64,
}

struct Hs {
    q: c_int,
    timer: c_int,
    /// Our dup of the socket, registered in `q` (-1 once the handshake is over).
    sock: c_int,
    running: bool,
    /// The handshake failed: the swap back reports EPOLLERR.
    failed: bool,
}

#[derive(Default)]
struct State {
    recs: HashMap<c_int, Vec<Rec>>,
    swaps: Vec<Swap>,
    hs: HashMap<u64, Hs>,
    next_key: u32,
    next_hs: u64,
    /// Readiness fds of ended handshakes, closed a while later: a poll in another thread may
    /// still be waking on one.
    graveyard: Vec<(Instant, c_int, c_int)>,
}

/// How long an ended handshake's readiness fds stay open.
const LINGER: Duration = Duration::from_secs(5);

static STATE: ForkSafeMutex<Option<State>> = ForkSafeMutex::new(None);
/// Swaps alive.
static SWAPS: AtomicUsize = AtomicUsize::new(0);
/// A handshake ever had readiness fds: from then on every epoll wait looks at what it returns
/// (a wait that began before another thread swapped a registration in can return our event).
static EVER: AtomicBool = AtomicBool::new(false);

pub(crate) fn fork_prepare() {
    STATE.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: taken by fork_prepare in this thread (or inherited taken by the child).
    unsafe { STATE.raw_unlock() }
}

/// Must epoll waits look at what they return? (One relaxed load: the fast path.)
#[inline]
pub fn active() -> bool {
    EVER.load(Ordering::Relaxed)
}

fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed stat we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a stat we own.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino as u64)
}

fn ctl(epfd: c_int, op: c_int, fd: c_int, events: u32, data: u64) -> c_int {
    let mut ev = epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event for the duration of the call.
    let r = unsafe { real::epoll_ctl(epfd, op, fd, &mut ev) };
    if r == 0 {
        0
    } else {
        errno()
    }
}

fn close(fd: c_int) {
    if fd >= 0 {
        // SAFETY: an fd of ours.
        unsafe { real::close(fd) };
    }
}

fn ep_bits(want: c_short) -> u32 {
    let mut e = 0;
    if want & libc::POLLIN != 0 {
        e |= libc::EPOLLIN as u32;
    }
    if want & libc::POLLOUT != 0 {
        e |= libc::EPOLLOUT as u32;
    }
    e
}

fn set_timer(t: c_int, after: Duration) {
    let after = after.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs().min(i64::MAX as u64 / 2) as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: valid itimerspec; a NULL old value is allowed.
    unsafe { libc::timerfd_settime(t, 0, &spec, std::ptr::null_mut()) };
}

impl State {
    fn new_key(&mut self) -> u32 {
        loop {
            self.next_key = self.next_key.wrapping_add(1);
            let k = self.next_key;
            if !self.swaps.iter().any(|s| s.key == k) {
                return k;
            }
        }
    }

    fn record(&mut self, epfd: c_int, op: c_int, fd: c_int, events: u32, data: u64) {
        let v = self.recs.entry(fd).or_default();
        v.retain(|r| r.epfd != epfd);
        if op != libc::EPOLL_CTL_DEL {
            v.push(Rec { epfd, events, data });
        }
        if v.is_empty() {
            self.recs.remove(&fd);
        }
    }

    /// Puts `q` of handshake `hs` in the set `epfd` in place of `fd`'s registration.
    fn swap_in(
        &mut self,
        epfd: c_int,
        hs: u64,
        fd: c_int,
        ino: u64,
        events: u32,
        data: u64,
    ) -> c_int {
        let Some(h) = self.hs.get(&hs) else {
            return libc::EBADF;
        };
        let q = h.q;
        let key = self.new_key();
        let word = MAGIC | key as u64;
        let mut qfd = q;
        let mut r = ctl(epfd, libc::EPOLL_CTL_ADD, q, libc::EPOLLIN as u32, word);
        if r == libc::EEXIST {
            // SAFETY: q is ours.
            qfd = unsafe { real::fcntl(q, libc::F_DUPFD_CLOEXEC, 3) };
            if qfd < 0 {
                return errno();
            }
            r = ctl(epfd, libc::EPOLL_CTL_ADD, qfd, libc::EPOLLIN as u32, word);
        }
        if r != 0 {
            if qfd != q {
                close(qfd);
            }
            return r;
        }
        self.swaps.push(Swap {
            key,
            hs,
            fd,
            ino,
            epfd,
            qfd,
            events,
            data,
        });
        SWAPS.fetch_add(1, Ordering::AcqRel);
        0
    }

    /// The swap of `fd` in the set `epfd`, if any (asked of the kernel).
    fn find(&self, epfd: c_int, fd: c_int, ino: Option<u64>) -> Option<usize> {
        self.swaps.iter().position(|s| {
            s.fd == fd
                && Some(s.ino) == ino
                && ctl(
                    epfd,
                    libc::EPOLL_CTL_MOD,
                    s.qfd,
                    libc::EPOLLIN as u32,
                    MAGIC | s.key as u64,
                ) == 0
        })
    }

    /// Removes swap `i` (its `q` leaves the set `epfd`); closes the handshake's fds once it is
    /// over and no set holds them.
    fn drop_swap(&mut self, i: usize, epfd: c_int) -> Swap {
        let s = self.swaps.swap_remove(i);
        SWAPS.fetch_sub(1, Ordering::AcqRel);
        ctl(epfd, libc::EPOLL_CTL_DEL, s.qfd, 0, 0);
        if self.hs.get(&s.hs).map(|h| h.q) != Some(s.qfd) {
            close(s.qfd);
        }
        self.reap(s.hs);
        s
    }

    fn reap(&mut self, hs: u64) {
        let over = self.hs.get(&hs).is_some_and(|h| !h.running);
        if over && !self.swaps.iter().any(|s| s.hs == hs) {
            if let Some(h) = self.hs.remove(&hs) {
                close(h.sock);
                self.graveyard.push((Instant::now(), h.q, h.timer));
            }
        }
        let now = Instant::now();
        self.graveyard.retain(|&(t, q, timer)| {
            let keep = now.saturating_duration_since(t) < LINGER;
            if !keep {
                close(timer);
                close(q);
            }
            keep
        });
    }

    /// Swap `i` back in the set `epfd`: the program's registration returns (the kernel then
    /// reports the socket's real state). Returns the event to report at once, if any.
    fn swap_out(&mut self, i: usize, epfd: c_int) -> Option<epoll_event> {
        let failed = self.hs.get(&self.swaps[i].hs).is_none_or(|h| h.failed);
        let s = self.drop_swap(i, epfd);
        if inode(s.fd) != Some(s.ino) {
            return None; // closed by the program meanwhile: its registration went with it
        }
        if ctl(epfd, libc::EPOLL_CTL_ADD, s.fd, s.events, s.data) == libc::EEXIST {
            ctl(epfd, libc::EPOLL_CTL_MOD, s.fd, s.events, s.data);
        }
        let wanted = s.events & (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
        (failed && wanted != 0).then_some(epoll_event {
            events: wanted | (libc::EPOLLERR | libc::EPOLLHUP) as u32,
            u64: s.data,
        })
    }
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = STATE.lock();
    f(g.get_or_insert_with(State::default))
}

/// A handshake starts on `fd` (before its connect to the proxy): creates its readiness fds
/// and moves the program's existing registrations of `fd` onto them. Err: the errno.
pub fn open(fd: c_int, ino: u64) -> Result<u64, c_int> {
    // SAFETY: plain fd-creating calls; every fd is checked and closed on failure.
    EVER.store(true, Ordering::SeqCst);
    // SAFETY: epoll_create1 takes no pointer; the fd is ours.
    let q = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if q < 0 {
        return Err(errno());
    }
    // SAFETY: timerfd_create takes no pointer; the fd is ours.
    let timer = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    };
    let sock = if timer >= 0 {
        // SAFETY: F_DUPFD_CLOEXEC takes no pointer; the copy is ours.
        unsafe { real::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }
    } else {
        -1
    };
    let fail = |e: c_int| {
        close(sock);
        close(timer);
        close(q);
        Err(e)
    };
    if timer < 0 || sock < 0 {
        return fail(errno());
    }
    for (f, ev) in [(timer, libc::EPOLLIN as u32), (sock, libc::EPOLLOUT as u32)] {
        let r = ctl(q, libc::EPOLL_CTL_ADD, f, ev, f as u64);
        if r != 0 {
            return fail(r);
        }
    }
    Ok(with(|st| {
        st.next_hs += 1;
        let hs = st.next_hs;
        st.hs.insert(
            hs,
            Hs {
                q,
                timer,
                sock,
                running: true,
                failed: false,
            },
        );
        let recs = st.recs.get(&fd).cloned().unwrap_or_default();
        for r in recs {
            // Succeeds only if the set still holds this socket under this number.
            if ctl(r.epfd, libc::EPOLL_CTL_DEL, fd, 0, 0) != 0 {
                st.record(r.epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
                continue;
            }
            if st.swap_in(r.epfd, hs, fd, ino, r.events, r.data) != 0 {
                // Could not move it: put it back as it was (the handshake still works, the
                // program's SO_ERROR check or first I/O finishes it).
                ctl(r.epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data);
            }
        }
        hs
    }))
}

/// Replaces the socket under `fd` by running `replace` (which puts a new socket under the
/// same number), keeping the program's epoll registrations of `fd`: each set that held the
/// old socket holds the new one afterwards, with the program's events and data (closing the
/// old socket would drop them silently).
pub fn replacing<T>(fd: c_int, replace: impl FnOnce() -> T) -> T {
    let recs = with(|st| st.recs.get(&fd).cloned().unwrap_or_default());
    // Only the sets that really hold this socket under this number (a DEL proves it).
    let held: Vec<Rec> = recs
        .into_iter()
        .filter(|r| ctl(r.epfd, libc::EPOLL_CTL_DEL, fd, 0, 0) == 0)
        .collect();
    let out = replace();
    for r in held {
        // The new socket, or the old one again if the replacement failed.
        if ctl(r.epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data) != 0 {
            log::debug!(
                "fd {fd}: epoll {} registration not carried to its replacement",
                r.epfd
            );
            with(|st| st.record(r.epfd, libc::EPOLL_CTL_DEL, fd, 0, 0));
        }
    }
    out
}

/// The readiness fd of handshake `hs` (what poll/select wait on in place of the socket).
pub fn q_of(hs: u64) -> c_int {
    with(|st| st.hs.get(&hs).map_or(-1, |h| h.q))
}

/// The handshake waits for `want` until `deadline`.
pub fn arm(hs: u64, want: c_short, deadline: Instant) {
    with(|st| {
        if let Some(h) = st.hs.get(&hs) {
            if h.sock >= 0 {
                ctl(
                    h.q,
                    libc::EPOLL_CTL_MOD,
                    h.sock,
                    ep_bits(want),
                    h.sock as u64,
                );
            }
            set_timer(h.timer, deadline.saturating_duration_since(Instant::now()));
        }
    })
}

/// Handshake `hs` is over: every set holding its `q` wakes and takes its registration back.
pub fn done(hs: u64, failed: bool) {
    with(|st| {
        if let Some(h) = st.hs.get_mut(&hs) {
            h.running = false;
            h.failed = failed;
            ctl(h.q, libc::EPOLL_CTL_DEL, h.sock, 0, 0);
            close(h.sock);
            h.sock = -1;
            set_timer(h.timer, Duration::ZERO);
        }
        st.reap(hs);
    })
}

/// A failed start: the program's registrations go back as they were, the fds are closed.
pub fn abort(hs: u64) {
    with(|st| {
        if let Some(h) = st.hs.get_mut(&hs) {
            h.running = false;
        }
        while let Some(i) = st.swaps.iter().position(|s| s.hs == hs) {
            // The set was named by this epfd a moment ago (in open()).
            let epfd = st.swaps[i].epfd;
            let s = st.drop_swap(i, epfd);
            ctl(epfd, libc::EPOLL_CTL_ADD, s.fd, s.events, s.data);
        }
        st.reap(hs);
    })
}

/// `epoll_ctl` of the program, for every fd: records it, and acts on the kept registration of
/// a swapped socket. `hs`: the running handshake of `fd`, if any.
///
/// # Safety
/// `ev` is the program's pointer (may be NULL for DEL).
pub unsafe fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut epoll_event,
    hs: Option<u64>,
) -> c_int {
    let prog = if ev.is_null() {
        None
    } else {
        Some(std::ptr::read_unaligned(ev))
    };
    let (events, data) = prog.map_or((0, 0), |e| (e.events, e.u64));
    let mut g = STATE.lock();
    let st = g.get_or_insert_with(State::default);
    let swapped = !st.swaps.is_empty() && st.swaps.iter().any(|s| s.fd == fd);
    if hs.is_none() && !swapped {
        let r = real::epoll_ctl(epfd, op, fd, ev);
        if r == 0
            && matches!(
                op,
                libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL
            )
        {
            st.record(epfd, op, fd, events, data);
        }
        return r;
    }
    let ino = inode(fd);
    let found = if swapped {
        st.find(epfd, fd, ino)
    } else {
        None
    };
    let r = match (op, found) {
        (libc::EPOLL_CTL_ADD, Some(_)) => libc::EEXIST,
        (libc::EPOLL_CTL_ADD, None) if prog.is_none() => libc::EFAULT,
        (libc::EPOLL_CTL_ADD, None) => match (hs, ino) {
            (Some(h), Some(ino)) => {
                // Refuse what the kernel would (a bad epfd, epfd == fd, ...): ask it first.
                match st.swap_in(epfd, h, fd, ino, events, data) {
                    0 => 0,
                    _ => {
                        let r = real::epoll_ctl(epfd, op, fd, ev);
                        return if r == 0 {
                            st.record(epfd, op, fd, events, data);
                            0
                        } else {
                            r
                        };
                    }
                }
            }
            _ => {
                let r = real::epoll_ctl(epfd, op, fd, ev);
                if r == 0 {
                    st.record(epfd, op, fd, events, data);
                }
                return r;
            }
        },
        (libc::EPOLL_CTL_MOD, Some(_)) if prog.is_none() => libc::EFAULT,
        (libc::EPOLL_CTL_MOD, Some(i)) => {
            let s = &mut st.swaps[i];
            if s.events & libc::EPOLLEXCLUSIVE as u32 != 0 {
                libc::EINVAL
            } else if st.hs.get(&s.hs).is_some_and(|h| h.running) {
                s.events = events;
                s.data = data;
                0
            } else {
                s.events = events;
                s.data = data;
                st.swap_out(i, epfd);
                0
            }
        }
        (libc::EPOLL_CTL_DEL, Some(i)) => {
            st.drop_swap(i, epfd);
            0
        }
        _ => {
            let r = real::epoll_ctl(epfd, op, fd, ev);
            if r == 0 {
                st.record(epfd, op, fd, events, data);
            }
            return r;
        }
    };
    if r != 0 {
        crate::sys::guard::set_errno(r);
        return -1;
    }
    st.record(epfd, op, fd, events, data);
    0
}

/// Drops our events from the `n` the kernel wrote, without the lock or any stepping (for a
/// wait from a signal handler that interrupted proxify): returns how many are left.
///
/// # Safety
/// `events` holds `n` events written by the kernel.
pub unsafe fn drop_ours(events: *mut epoll_event, n: usize) -> usize {
    let mut kept = 0;
    for i in 0..n {
        let ev = std::ptr::read_unaligned(events.add(i));
        if ev.u64 & MAGIC_MASK != MAGIC {
            std::ptr::write_unaligned(events.add(kept), ev);
            kept += 1;
        }
    }
    kept
}

/// After `epoll_wait` on `epfd` returned `n` events: drops ours (stepping the handshakes they
/// stand for, or putting the program's registration back for those that are over). Returns how
/// many events are left for the program, and the fds whose handshake should be stepped.
///
/// # Safety
/// `events` holds `n` events written by the kernel.
pub unsafe fn filter(epfd: c_int, events: *mut epoll_event, n: usize) -> (usize, Vec<c_int>) {
    let ours = |i: usize| std::ptr::read_unaligned(events.add(i)).u64 & MAGIC_MASK == MAGIC;
    if !(0..n).any(ours) {
        return (n, Vec::new());
    }
    let mut kept = 0;
    let mut todo = Vec::new();
    let mut g = STATE.lock();
    let st = g.get_or_insert_with(State::default);
    for i in 0..n {
        let ev = std::ptr::read_unaligned(events.add(i));
        if ev.u64 & MAGIC_MASK != MAGIC {
            std::ptr::write_unaligned(events.add(kept), ev);
            kept += 1;
            continue;
        }
        let key = ev.u64 as u32;
        let Some(k) = st.swaps.iter().position(|s| s.key == key) else {
            continue; // a leftover of ours (a forked copy's)
        };
        let (hs, fd, ino) = (st.swaps[k].hs, st.swaps[k].fd, st.swaps[k].ino);
        let kind = fdtable::kind(fd);
        let mine = inode(fd) == Some(ino);
        if let Some(h) = st.hs.get_mut(&hs).filter(|h| h.running) {
            if mine && kind == Some(fdtable::Kind::Handshaking) {
                if !todo.contains(&fd) {
                    todo.push(fd);
                }
                continue;
            }
            // Ended without done() (abandoned, or closed by the program): over now.
            h.running = false;
            h.failed = kind != Some(fdtable::Kind::ProxiedTcp);
            set_timer(h.timer, Duration::ZERO); // the other sets take theirs back too
            if h.sock >= 0 {
                ctl(h.q, libc::EPOLL_CTL_DEL, h.sock, 0, 0);
                close(h.sock);
                h.sock = -1;
            }
        }
        if let Some(e) = st.swap_out(k, epfd) {
            std::ptr::write_unaligned(events.add(kept), e);
            kept += 1;
        }
    }
    (kept, todo)
}

/// Does the program have `fd` in an epoll set (as far as its `epoll_ctl` calls tell)? A
/// blocking connect then needs readiness fds like a non-blocking one.
pub fn registered(fd: c_int) -> bool {
    STATE
        .lock()
        .as_ref()
        .is_some_and(|st| st.recs.contains_key(&fd))
}
