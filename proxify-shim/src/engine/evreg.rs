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
//!
//! # The lock
//!
//! `STATE` (a [`ForkSafeMutex`]) is held only for memory work, as `sys/lock.rs` asks: every
//! system call (`epoll_ctl`, `close`, `fcntl`, `fstat`, `timerfd_settime`, `Instant::now()`)
//! is made with it released, and nothing is allocated or freed under it.
//!
//! - The maps (registrations, swaps, handshakes) live in `Option<HashMap>`s that grow with the
//!   lock released (`ForkSafeMutex::with_room`, or [`locked`] for a region that inserts into a
//!   map and reads the others); their values own no memory, so a removal frees nothing.
//! - The program's plain `epoll_ctl` (no handshake involved: the hot path of every event loop)
//!   goes to the kernel first, then records the result under the lock: each fd's first
//!   [`INLINE`] registrations in a fixed array of its entry, any more in a spill map keyed by
//!   (fd, epoll fd), so that finding one fd's registrations (when its connect starts) costs a
//!   look-up, not a walk over every registration of the program.
//! - A swap being acted on is marked busy (with the process generation, see [`forked_child`]):
//!   the thread that marked it makes the kernel calls with the lock released and then commits
//!   (removes it, or clears the mark). A swap is reserved busy before the socket leaves a set
//!   and removed only once the program's registration is back, so the set always holds one of
//!   the two while a swap is listed. The other threads leave a busy swap alone (its event is
//!   dropped: our fds are level-triggered and fire again), and a program `epoll_ctl` of its fd
//!   or an `abort` of its handshake waits (yielding) until it is free. `find` marks each
//!   candidate busy while it asks the kernel. No thread waits while it holds a mark, so waits
//!   end.
//! - A handshake's own fds are copied out under the lock: its dup of the socket is taken out of
//!   the entry by the one thread that closes it; `q` and the timerfd stay open while any swap
//!   of the handshake exists and for [`LINGER`] after (the entry stays, marked dead, and a
//!   later sweep takes expired entries out, a few at a time, and closes their fds after the
//!   lock).
//! - In a child forked while a thread of the parent held a busy mark, the mark is void (the
//!   swap is anyone's, as it stood at the fork); nothing waits for the parent's thread.
//! - A plain `epoll_ctl` racing another thread's `connect` of the same fd (the single lock
//!   used to order the two): an `ADD`/`MOD` the kernel took is moved onto `q` after it is
//!   recorded if a handshake of the fd started meanwhile ([`adopt`]: `open` may have read the
//!   records before it), or updates the kept registration if `open` moved it already; a
//!   `MOD`/`DEL` that found the socket gone from the set (`ENOENT`) while a swap of the fd now
//!   exists is made again on the kept registration.
//!
//! Size: ~1,450 lines, a sixth of them the unit test: the swap protocol's invariants (who
//! holds a busy mark, who closes which fd) are checkable only in one place.

use crate::state::fdtable;
use crate::sys::error::errno;
use crate::sys::lock::{ForkSafeMutex, Guard};
use crate::sys::real;
use libc::{c_int, c_short, epoll_event};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The data word of our registrations: MAGIC in the high half, the swap's key in the low half.
const MAGIC: u64 = 0x9d1f_a5c3_0000_0000;
const MAGIC_MASK: u64 = 0xffff_ffff_0000_0000;

/// A registration as the program made it (recorded for every epoll_ctl).
#[derive(Clone, Copy, Default)]
struct Rec {
    events: u32,
    data: u64,
}

/// How many epoll sets' registrations of one fd its entry holds; more go to the spill map.
const INLINE: usize = 4;

/// The recorded registrations of one fd: (epfd, registration), the first `n` of `v` in use,
/// and `spilled` more in [`State::spill`].
#[derive(Clone, Copy, Default)]
struct Recs {
    v: [(c_int, Rec); INLINE],
    n: u8,
    spilled: u32,
}

impl Recs {
    fn inline(&self) -> &[(c_int, Rec)] {
        &self.v[..self.n as usize]
    }

    /// Updates `epfd`'s inline registration, or adds it inline if there is room: false if it
    /// is not inline and there is no room.
    fn set(&mut self, epfd: c_int, r: Rec) -> bool {
        let n = self.n as usize;
        if let Some(e) = self.v[..n].iter_mut().find(|e| e.0 == epfd) {
            e.1 = r;
        } else if n < INLINE {
            self.v[n] = (epfd, r);
            self.n += 1;
        } else {
            return false;
        }
        true
    }

    /// Removes `epfd`'s inline registration: false if it has none.
    fn unset(&mut self, epfd: c_int) -> bool {
        let n = self.n as usize;
        let Some(i) = self.v[..n].iter().position(|e| e.0 == epfd) else {
            return false;
        };
        self.v[i] = self.v[n - 1];
        self.n -= 1;
        true
    }
}

/// The program's registration of `fd` in one epoll set, replaced there by `qfd`.
#[derive(Clone, Copy)]
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
    /// Some(process generation): a thread of that process is acting on it with the lock
    /// released (a mark from before a fork is void in the child).
    busy: Option<u32>,
}

impl Swap {
    /// May a thread of process generation `forks` take it?
    fn free(&self, forks: u32) -> bool {
        self.busy.is_none_or(|g| g != forks)
    }
}

#[derive(Clone, Copy)]
struct Hs {
    /// The program's fd and its socket's inode (for [`adopt`]).
    fd: c_int,
    ino: u64,
    q: c_int,
    timer: c_int,
    /// Our dup of the socket, registered in `q` (-1 once the handshake is over).
    sock: c_int,
    running: bool,
    /// The handshake failed: the swap back reports EPOLLERR.
    failed: bool,
    /// Over and no set holds `q` since then: `q` and the timer are closed [`LINGER`] later (a
    /// poll in another thread may still be waking on one).
    dead_at: Option<Instant>,
}

struct State {
    recs: Option<HashMap<c_int, Recs>>,
    /// Registrations beyond an fd's [`INLINE`] first, keyed by (fd, epfd).
    spill: Option<HashMap<(c_int, c_int), Rec>>,
    swaps: Option<HashMap<u32, Swap>>,
    hs: Option<HashMap<u64, Hs>>,
    next_key: u32,
    next_hs: u64,
}

/// How long an ended handshake's readiness fds stay open while a poll or select of the
/// program is waiting on some handshake's `q` (it may have read this one's number just before
/// the end). With no such wait, they are closed at once: a program making many non-blocking
/// connects a second must not hold two fds per connect for this long.
const LINGER: Duration = Duration::from_secs(5);
/// How many poll/select calls are waiting on readiness fds of ours right now ([`Polling`]).
static POLLERS: AtomicUsize = AtomicUsize::new(0);

/// Held by a poll or select of the program for as long as it may wait on a `q` of ours
/// (`hooks/poll.rs`): while any is held, ended handshakes' readiness fds linger.
pub struct Polling(());

impl Polling {
    pub fn enter() -> Polling {
        POLLERS.fetch_add(1, Ordering::SeqCst);
        Polling(())
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        if POLLERS.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last wait is over: what lingered for it can go now.
            sweep(Instant::now());
        }
    }
}
/// How many expired handshakes a sweep takes out per lock.
const SWEEP_BATCH: usize = 8;

static STATE: ForkSafeMutex<State> = ForkSafeMutex::new(State {
    recs: None,
    spill: None,
    swaps: None,
    hs: None,
    next_key: 0,
    next_hs: 0,
});
/// Swaps alive (reserved ones included).
static SWAPS: AtomicUsize = AtomicUsize::new(0);
/// A handshake ever had readiness fds: from then on every epoll wait looks at what it returns
/// (a wait that began before another thread swapped a registration in can return our event).
static EVER: AtomicBool = AtomicBool::new(false);
/// Handshakes running (for [`adopt`]'s one-load fast path).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Bumped in the child of every fork (see [`Swap::busy`]).
static FORKS: AtomicU32 = AtomicU32::new(0);

pub(crate) fn fork_prepare() {
    STATE.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: taken by fork_prepare in this thread (or inherited taken by the child).
    unsafe { STATE.raw_unlock() }
}

/// In the child of a fork, before [`fork_release`]: a swap a thread of the parent was acting
/// on is nobody's here (one atomic add: no lock, no allocation).
pub(crate) fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Must epoll waits look at what they return? (One relaxed load: the fast path.)
#[inline]
pub fn active() -> bool {
    EVER.load(Ordering::Relaxed)
}

fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: all-zero bytes are a valid libc::stat (plain integers).
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

/// Waits (the lock released) for a busy swap's thread to finish with it.
fn wait_busy() {
    std::thread::yield_now();
}

fn has_room<K, V>(m: &Option<HashMap<K, V>>) -> bool {
    m.as_ref().is_some_and(|m| m.len() < m.capacity())
}

/// The lock, with room in the swap map (`swaps`) and the handshake map (`hs`) for one more
/// entry each: a map without room grows with the lock released, then the lock is taken again.
fn locked(swaps: bool, hs: bool) -> Guard<'static, State> {
    loop {
        let g = STATE.lock();
        if swaps && !has_room(&g.swaps) {
            drop(g);
            STATE.with_room(|s| &mut s.swaps, |_| ());
        } else if hs && !has_room(&g.hs) {
            drop(g);
            STATE.with_room(|s| &mut s.hs, |_| ());
        } else {
            return g;
        }
    }
}

impl State {
    fn hs(&self, hs: u64) -> Option<&Hs> {
        self.hs.as_ref()?.get(&hs)
    }

    fn hs_mut(&mut self, hs: u64) -> Option<&mut Hs> {
        self.hs.as_mut()?.get_mut(&hs)
    }

    /// A handshake not yet dead.
    fn live(&self, hs: u64) -> Option<&Hs> {
        self.hs(hs).filter(|h| h.dead_at.is_none())
    }

    fn swap(&self, key: u32) -> Option<&Swap> {
        self.swaps.as_ref()?.get(&key)
    }

    fn swap_mut(&mut self, key: u32) -> Option<&mut Swap> {
        self.swaps.as_mut()?.get_mut(&key)
    }

    fn swaps(&self) -> impl Iterator<Item = &Swap> {
        self.swaps.iter().flat_map(|m| m.values())
    }

    fn new_key(&mut self) -> u32 {
        loop {
            self.next_key = self.next_key.wrapping_add(1);
            let k = self.next_key;
            if self.swap(k).is_none() {
                return k;
            }
        }
    }

    /// Takes swap `key` out of the map (it owns no memory: nothing is freed).
    fn remove_swap(&mut self, key: u32) -> Option<Swap> {
        let s = self.swaps.as_mut()?.remove(&key);
        if s.is_some() {
            SWAPS.fetch_sub(1, Ordering::AcqRel);
        }
        s
    }
}

/// Records the program's successful `op` of `fd` in `epfd` (the maps grow with the lock
/// released; a removed record owns no memory).
fn record(epfd: c_int, op: c_int, fd: c_int, events: u32, data: u64) {
    match op {
        libc::EPOLL_CTL_DEL => unrecord(epfd, fd),
        libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => {
            let r = Rec { events, data };
            // A map without room for this record grows with the lock released; then again.
            // (The guard is a temporary of the `let`: released before the match.)
            loop {
                let stored = try_record(&mut STATE.lock(), epfd, fd, r);
                match stored {
                    Ok(()) => return,
                    Err(Grow::Recs) => STATE.with_room(|s| &mut s.recs, |_| ()),
                    Err(Grow::Spill) => STATE.with_room(|s| &mut s.spill, |_| ()),
                }
            }
        }
        _ => {}
    }
}

/// Which map must grow before a record can be stored.
enum Grow {
    Recs,
    Spill,
}

/// Stores `fd`'s registration `r` in `epfd` (under the lock), unless a map has no room for it.
fn try_record(st: &mut State, epfd: c_int, fd: c_int, r: Rec) -> Result<(), Grow> {
    let Some(m) = st.recs.as_mut() else {
        return Err(Grow::Recs);
    };
    let room = m.len() < m.capacity();
    let Some(e) = m.get_mut(&fd) else {
        if !room {
            return Err(Grow::Recs);
        }
        let mut e = Recs::default();
        e.set(epfd, r);
        m.insert(fd, e);
        return Ok(());
    };
    // A registration is in one place: a spilled one stays spilled (an inline slot freed since
    // is not for it).
    let key = (fd, epfd);
    if e.spilled > 0 {
        if let Some(x) = st.spill.as_mut().and_then(|m| m.get_mut(&key)) {
            *x = r;
            return Ok(());
        }
    }
    if e.set(epfd, r) {
        return Ok(());
    }
    match st.spill.as_mut().filter(|m| m.len() < m.capacity()) {
        Some(m) => {
            m.insert(key, r);
            e.spilled += 1;
            Ok(())
        }
        None => Err(Grow::Spill),
    }
}

/// Forgets the program's registration of `fd` in `epfd`.
fn unrecord(epfd: c_int, fd: c_int) {
    let mut g = STATE.lock();
    let st = &mut *g;
    let Some(m) = st.recs.as_mut() else {
        return;
    };
    let Some(e) = m.get_mut(&fd) else {
        return;
    };
    if !e.unset(epfd) && e.spilled > 0 {
        if let Some(sp) = st.spill.as_mut() {
            if sp.remove(&(fd, epfd)).is_some() {
                e.spilled -= 1;
            }
        }
    }
    if e.n == 0 && e.spilled == 0 {
        m.remove(&fd);
    }
}

/// The program's recorded registrations of `fd`: (epfd, registration). Its inline ones are
/// copied under the lock; a Vec for them all is allocated with the lock released, then filled
/// under it (the spill map is walked only for an fd with registrations there).
fn recs_of(fd: c_int) -> Vec<(c_int, Rec)> {
    let mut v: Vec<(c_int, Rec)> = Vec::new();
    loop {
        let need = {
            let g = STATE.lock();
            let Some(e) = g.recs.as_ref().and_then(|m| m.get(&fd)) else {
                break;
            };
            let n = e.n as usize + e.spilled as usize;
            if n <= v.capacity() {
                v.extend_from_slice(e.inline());
                if e.spilled > 0 {
                    for (k, r) in g.spill.iter().flatten().filter(|(k, _)| k.0 == fd) {
                        if v.len() < v.capacity() {
                            v.push((k.1, *r));
                        }
                    }
                }
                break;
            }
            n
        };
        v = Vec::with_capacity(need);
    }
    v
}

/// Reserves a swap of `fd`'s registration in the set `epfd` for handshake `hs`, marked busy
/// (so that a program `epoll_ctl` of the fd waits for it): (key, `q`), or EBADF if the
/// handshake is gone (`once`: EEXIST if a swap of `fd` made through `epfd` exists).
fn reserve(
    epfd: c_int,
    hs: u64,
    fd: c_int,
    ino: u64,
    events: u32,
    data: u64,
    once: bool,
) -> Result<(u32, c_int), c_int> {
    let forks = FORKS.load(Ordering::Relaxed);
    let mut g = locked(true, false);
    let st = &mut *g;
    let q = st.live(hs).ok_or(libc::EBADF)?.q;
    if once
        && st
            .swaps()
            .any(|s| s.hs == hs && s.fd == fd && s.epfd == epfd)
    {
        return Err(libc::EEXIST);
    }
    let key = st.new_key();
    let s = Swap {
        key,
        hs,
        fd,
        ino,
        epfd,
        qfd: q,
        events,
        data,
        busy: Some(forks),
    };
    if let Some(m) = st.swaps.as_mut() {
        m.insert(key, s); // room made by locked()
    }
    SWAPS.fetch_add(1, Ordering::AcqRel);
    Ok((key, q))
}

/// Puts `q` (or, if the set already holds it, a dup of it) in the set `epfd` for reserved swap
/// `key`, with the lock released: the fd it put there, or the errno.
fn place(key: u32, q: c_int, epfd: c_int) -> Result<c_int, c_int> {
    let word = MAGIC | key as u64;
    let r = ctl(epfd, libc::EPOLL_CTL_ADD, q, libc::EPOLLIN as u32, word);
    if r != libc::EEXIST {
        return if r == 0 { Ok(q) } else { Err(r) };
    }
    // SAFETY: F_DUPFD_CLOEXEC of an fd of ours takes no pointer; the copy is ours.
    let qfd = unsafe { real::fcntl(q, libc::F_DUPFD_CLOEXEC, 3) };
    if qfd < 0 {
        return Err(errno());
    }
    match ctl(epfd, libc::EPOLL_CTL_ADD, qfd, libc::EPOLLIN as u32, word) {
        0 => Ok(qfd),
        r => {
            close(qfd);
            Err(r)
        }
    }
}

/// Reserved swap `key` is in place (through `qfd`): no longer busy.
fn commit(key: u32, qfd: c_int) {
    if let Some(s) = STATE.lock().swap_mut(key) {
        s.qfd = qfd;
        s.busy = None;
    }
}

/// Reserved swap `key` of handshake `hs` did not happen: it goes.
fn cancel(key: u32, hs: u64) {
    let _ = STATE.lock().remove_swap(key);
    reap(hs);
}

/// Puts `q` of handshake `hs` in the set `epfd` in place of `fd`'s registration: the swap is
/// reserved (busy) under the lock, `q` (or a dup) enters the set with the lock released, then
/// the swap is committed or taken back.
fn swap_in(epfd: c_int, hs: u64, fd: c_int, ino: u64, events: u32, data: u64) -> c_int {
    let (key, q) = match reserve(epfd, hs, fd, ino, events, data, false) {
        Ok(x) => x,
        Err(e) => return e,
    };
    match place(key, q, epfd) {
        Ok(qfd) => {
            commit(key, qfd);
            0
        }
        Err(e) => {
            cancel(key, hs);
            e
        }
    }
}

/// Clears the busy mark of swap `key`, taken by this thread.
fn release(key: u32) {
    if let Some(s) = STATE.lock().swap_mut(key) {
        s.busy = None;
    }
}

/// The swap of `fd` in the set `epfd`, if any, marked busy for the caller (asked of the
/// kernel: each candidate is marked busy while its `q` is tried with `EPOLL_CTL_MOD`, with the
/// lock released). Candidates are tried in key order; one another thread is acting on is
/// waited for.
fn find(epfd: c_int, fd: c_int, ino: Option<u64>) -> Option<Swap> {
    let ino = ino?;
    let forks = FORKS.load(Ordering::Relaxed);
    let mut after: Option<u32> = None;
    loop {
        let picked = {
            let mut g = STATE.lock();
            let next = g
                .swaps()
                .filter(|s| s.fd == fd && s.ino == ino && after.is_none_or(|a| s.key > a))
                .min_by_key(|s| s.key)
                .map(|s| s.key);
            match next.and_then(|k| g.swap_mut(k)) {
                None => None,
                Some(s) if !s.free(forks) => Some(None),
                Some(s) => {
                    s.busy = Some(forks);
                    Some(Some(*s))
                }
            }
        };
        match picked {
            None => return None,
            Some(None) => wait_busy(),
            Some(Some(s)) => {
                let word = MAGIC | s.key as u64;
                if ctl(epfd, libc::EPOLL_CTL_MOD, s.qfd, libc::EPOLLIN as u32, word) == 0 {
                    return Some(s);
                }
                release(s.key);
                after = Some(s.key);
            }
        }
    }
}

/// Removes swap `s` (marked busy by this thread): its `q` leaves the set `epfd`, then `back`
/// runs (the program's registration returns), then the swap goes; closes the handshake's fds
/// once it is over and no set holds them. A program `epoll_ctl` of the fd meanwhile waits for
/// the swap, so that it finds the registration back (as it would have under one lock).
fn drop_swap<R>(s: &Swap, epfd: c_int, back: impl FnOnce() -> R) -> R {
    ctl(epfd, libc::EPOLL_CTL_DEL, s.qfd, 0, 0);
    let out = back();
    let q = {
        let mut g = STATE.lock();
        let _ = g.remove_swap(s.key);
        g.hs(s.hs).map(|h| h.q)
    };
    if q != Some(s.qfd) {
        close(s.qfd);
    }
    reap(s.hs);
    out
}

/// Swap `key` (marked busy by this thread) back in the set `epfd`: the program's registration
/// returns (the kernel then reports the socket's real state). Returns the event to report at
/// once, if any.
fn swap_out(key: u32, epfd: c_int) -> Option<epoll_event> {
    let (s, failed) = {
        let g = STATE.lock();
        let s = *g.swap(key)?;
        (s, g.hs(s.hs).is_none_or(|h| h.failed))
    };
    let mine = drop_swap(&s, epfd, || {
        if inode(s.fd) != Some(s.ino) {
            return false; // closed by the program meanwhile: its registration went with it
        }
        if ctl(epfd, libc::EPOLL_CTL_ADD, s.fd, s.events, s.data) == libc::EEXIST {
            ctl(epfd, libc::EPOLL_CTL_MOD, s.fd, s.events, s.data);
        }
        true
    });
    if !mine {
        return None;
    }
    let wanted = s.events & (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP) as u32;
    (failed && wanted != 0).then_some(epoll_event {
        events: wanted | (libc::EPOLLERR | libc::EPOLLHUP) as u32,
        u64: s.data,
    })
}

/// Marks handshake `hs` dead once it is over and no swap of it is left (its dup of the socket
/// is closed now, `q` and the timer [`LINGER`] later), then closes the fds of handshakes dead
/// for longer.
fn reap(hs: u64) {
    let now = Instant::now();
    let sock = {
        let mut g = STATE.lock();
        let st = &mut *g;
        let over = st.live(hs).is_some_and(|h| !h.running) && !st.swaps().any(|s| s.hs == hs);
        match st.hs_mut(hs) {
            Some(h) if over => {
                h.dead_at = Some(now);
                std::mem::replace(&mut h.sock, -1)
            }
            _ => -1,
        }
    };
    close(sock);
    sweep(now);
}

/// Takes out the ended handshakes whose readiness fds no wait can still be using (every one
/// when no poll or select waits on ours, else those dead for [`LINGER`]), a batch per lock,
/// and closes their fds after.
fn sweep(now: Instant) {
    loop {
        let idle = POLLERS.load(Ordering::SeqCst) == 0;
        let mut out = [None::<Hs>; SWEEP_BATCH];
        let n = {
            let mut g = STATE.lock();
            let Some(m) = g.hs.as_mut() else {
                return;
            };
            let mut ids = [0u64; SWEEP_BATCH];
            let mut n = 0;
            for (id, h) in m.iter() {
                if n == SWEEP_BATCH {
                    break;
                }
                if h.dead_at
                    .is_some_and(|t| idle || now.saturating_duration_since(t) >= LINGER)
                {
                    ids[n] = *id;
                    n += 1;
                }
            }
            for (o, id) in out.iter_mut().zip(&ids[..n]) {
                *o = m.remove(id);
            }
            n
        };
        for h in out.iter().flatten() {
            close(h.sock);
            close(h.timer);
            close(h.q);
        }
        if n < SWEEP_BATCH {
            return;
        }
    }
}

/// Handshake `hs` is over (`failed` as given; `only_running`: unless it already was): its dup
/// of the socket leaves `q` and is closed, and its timer fires at once, so that every set
/// holding `q` wakes and takes its registration back.
fn end(hs: u64, failed: bool, only_running: bool) {
    let fds = {
        let mut g = STATE.lock();
        match g.hs_mut(hs) {
            Some(h) if h.dead_at.is_none() && (h.running || !only_running) => {
                if h.running {
                    RUNNING.fetch_sub(1, Ordering::AcqRel);
                }
                h.running = false;
                h.failed = failed;
                Some((h.q, h.timer, std::mem::replace(&mut h.sock, -1)))
            }
            _ => None,
        }
    };
    if let Some((q, timer, sock)) = fds {
        if sock >= 0 {
            ctl(q, libc::EPOLL_CTL_DEL, sock, 0, 0);
            close(sock);
        }
        set_timer(timer, Duration::ZERO);
    }
}

/// A handshake starts on `fd` (before its connect to the proxy): creates its readiness fds
/// and moves the program's existing registrations of `fd` onto them. Err: the errno.
pub fn open(fd: c_int, ino: u64) -> Result<u64, c_int> {
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
    let hs = {
        let mut g = locked(false, true);
        let st = &mut *g;
        st.next_hs += 1;
        let hs = st.next_hs;
        let h = Hs {
            fd,
            ino,
            q,
            timer,
            sock,
            running: true,
            failed: false,
            dead_at: None,
        };
        if let Some(m) = st.hs.as_mut() {
            m.insert(hs, h); // room made by locked()
        }
        RUNNING.fetch_add(1, Ordering::AcqRel);
        hs
    };
    for (epfd, r) in recs_of(fd) {
        move_in(epfd, hs, fd, ino, r, true);
    }
    Ok(hs)
}

/// Moves the program's registration `r` of `fd` in the set `epfd` onto `q` of handshake `hs`
/// (unless a swap of it there exists already). `forget`: a set that turns out not to hold the
/// socket loses the record.
fn move_in(epfd: c_int, hs: u64, fd: c_int, ino: u64, r: Rec, forget: bool) {
    // Reserved first: a program epoll_ctl of the fd from now on waits for the move.
    let Ok((key, q)) = reserve(epfd, hs, fd, ino, r.events, r.data, true) else {
        return;
    };
    // Succeeds only if the set still holds this socket under this number.
    if ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0) != 0 {
        cancel(key, hs);
        if forget {
            record(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
        }
        return;
    }
    match place(key, q, epfd) {
        Ok(qfd) => commit(key, qfd),
        Err(_) => {
            // Could not move it: put it back as it was (the handshake still works, the
            // program's SO_ERROR check or first I/O finishes it).
            ctl(epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data);
            cancel(key, hs);
        }
    }
}

/// After the program's plain `ADD`/`MOD` of `fd` in `epfd` was recorded: if a handshake of
/// `fd` started meanwhile on another thread, its `open` may have read the records before this
/// one: the registration is moved as `open` would have moved it, or, if `open` moved it
/// already, the kept registration takes the program's events and data. One load while no
/// handshake runs.
fn adopt(epfd: c_int, fd: c_int, r: Rec) {
    if RUNNING.load(Ordering::Acquire) == 0 {
        return;
    }
    let found = {
        let mut g = STATE.lock();
        let st = &mut *g;
        let h = st
            .hs
            .iter()
            .flatten()
            .find(|(_, h)| h.running && h.dead_at.is_none() && h.fd == fd)
            .map(|(k, h)| (*k, h.ino));
        let kept = h.and_then(|(hs, _)| {
            st.swaps
                .iter_mut()
                .flatten()
                .find(|(_, s)| s.hs == hs && s.fd == fd && s.epfd == epfd)
        });
        match kept {
            Some((_, s)) => {
                s.events = r.events;
                s.data = r.data;
                None
            }
            None => h,
        }
    };
    if let Some((hs, ino)) = found {
        if inode(fd) == Some(ino) {
            move_in(epfd, hs, fd, ino, r, false);
        }
    }
}

/// Replaces the socket under `fd` by running `replace` (which puts a new socket under the
/// same number), keeping the program's epoll registrations of `fd`: each set that held the
/// old socket holds the new one afterwards, with the program's events and data (closing the
/// old socket would drop them silently).
pub fn replacing<T>(fd: c_int, replace: impl FnOnce() -> T) -> T {
    // Only the sets that really hold this socket under this number (a DEL proves it).
    let held: Vec<(c_int, Rec)> = recs_of(fd)
        .into_iter()
        .filter(|(epfd, _)| ctl(*epfd, libc::EPOLL_CTL_DEL, fd, 0, 0) == 0)
        .collect();
    let out = replace();
    for (epfd, r) in held {
        // The new socket, or the old one again if the replacement failed.
        if ctl(epfd, libc::EPOLL_CTL_ADD, fd, r.events, r.data) != 0 {
            log::debug!("fd {fd}: epoll {epfd} registration not carried to its replacement");
            record(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0);
        }
    }
    out
}

/// The readiness fd of handshake `hs` (what poll/select wait on in place of the socket).
pub fn q_of(hs: u64) -> c_int {
    if hs == 0 {
        return -1; // no readiness fd (a blocking connect): ids start at 1
    }
    STATE.lock().live(hs).map_or(-1, |h| h.q)
}

/// The handshake waits for `want` until `deadline`.
pub fn arm(hs: u64, want: c_short, deadline: Instant) {
    if hs == 0 {
        return; // no readiness fd (a blocking connect): ids start at 1
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let Some((q, sock, timer)) = STATE
        .lock()
        .live(hs)
        .filter(|h| h.running)
        .map(|h| (h.q, h.sock, h.timer))
    else {
        return;
    };
    if sock >= 0 {
        ctl(q, libc::EPOLL_CTL_MOD, sock, ep_bits(want), sock as u64);
    }
    set_timer(timer, left);
    // Ended meanwhile (its timer set to fire at once before ours was set): fire it again.
    let over = STATE.lock().hs(hs).is_none_or(|h| !h.running);
    if over {
        set_timer(timer, Duration::ZERO);
    }
}

/// Handshake `hs` is over: every set holding its `q` wakes and takes its registration back.
pub fn done(hs: u64, failed: bool) {
    end(hs, failed, false);
    reap(hs);
}

/// A failed start: the program's registrations go back as they were, the fds are closed.
pub fn abort(hs: u64) {
    let forks = FORKS.load(Ordering::Relaxed);
    if let Some(h) = STATE.lock().hs_mut(hs) {
        if h.running {
            RUNNING.fetch_sub(1, Ordering::AcqRel);
        }
        h.running = false;
    }
    loop {
        let picked = {
            let mut g = STATE.lock();
            let mut busy = false;
            let mut key = None;
            for s in g.swaps().filter(|s| s.hs == hs) {
                if s.free(forks) {
                    key = Some(s.key);
                    break;
                }
                busy = true;
            }
            match key.and_then(|k| g.swap_mut(k)) {
                Some(s) => {
                    s.busy = Some(forks);
                    Some(Some(*s))
                }
                None if busy => Some(None),
                None => None,
            }
        };
        match picked {
            None => break,
            Some(None) => wait_busy(),
            Some(Some(s)) => {
                // The set was named by this epfd a moment ago (in open()).
                drop_swap(&s, s.epfd, || {
                    ctl(s.epfd, libc::EPOLL_CTL_ADD, s.fd, s.events, s.data)
                });
            }
        }
    }
    reap(hs);
}

/// Is a swap of `fd` alive (one look under the lock, none while no swap exists)?
fn swapped(fd: c_int) -> bool {
    SWAPS.load(Ordering::Acquire) != 0 && STATE.lock().swaps().any(|s| s.fd == fd)
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
        // SAFETY: a non-NULL `ev` points to the program's epoll_event (the caller's contract);
        // read unaligned, as the packed C struct may be.
        Some(unsafe { std::ptr::read_unaligned(ev) })
    };
    let (events, data) = prog.map_or((0, 0), |e| (e.events, e.u64));
    // The kernel's answer for the program's call as made, recorded when it succeeds.
    let plain = || {
        // SAFETY: the program's arguments, unchanged, under libc's epoll_ctl contract.
        let r = unsafe { real::epoll_ctl(epfd, op, fd, ev) };
        if r == 0 {
            record(epfd, op, fd, events, data);
        }
        r
    };
    let is_swapped = swapped(fd);
    if hs.is_none() && !is_swapped {
        let r = plain();
        if r == 0 && (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) {
            adopt(epfd, fd, Rec { events, data });
        } else if r != 0
            && (op == libc::EPOLL_CTL_MOD || op == libc::EPOLL_CTL_DEL)
            && errno() == libc::ENOENT
            && swapped(fd)
        {
            // Another thread's handshake took the registration out of the set meanwhile: act
            // on the kept one (the slow path: this time the swap is seen).
            // SAFETY: the caller's arguments, passed on under this function's contract.
            return unsafe { epoll_ctl(epfd, op, fd, ev, hs) };
        }
        return r;
    }
    let ino = inode(fd);
    let found = if is_swapped {
        find(epfd, fd, ino)
    } else {
        None
    };
    let r = match (op, found) {
        (libc::EPOLL_CTL_ADD, Some(s)) => {
            release(s.key);
            libc::EEXIST
        }
        (libc::EPOLL_CTL_ADD, None) if prog.is_none() => libc::EFAULT,
        (libc::EPOLL_CTL_ADD, None) => match (hs, ino) {
            // Refuse what the kernel would (a bad epfd, epfd == fd, ...): ask it first.
            (Some(h), Some(ino)) => match swap_in(epfd, h, fd, ino, events, data) {
                0 => 0,
                _ => return plain(),
            },
            _ => return plain(),
        },
        (libc::EPOLL_CTL_MOD, Some(s)) if prog.is_none() => {
            release(s.key);
            libc::EFAULT
        }
        (libc::EPOLL_CTL_MOD, Some(s)) => {
            let out = {
                let mut g = STATE.lock();
                let running = g.hs(s.hs).is_some_and(|h| h.running);
                match g.swap_mut(s.key) {
                    Some(k) if k.events & libc::EPOLLEXCLUSIVE as u32 != 0 => {
                        k.busy = None;
                        Err(libc::EINVAL)
                    }
                    Some(k) => {
                        k.events = events;
                        k.data = data;
                        if running {
                            k.busy = None;
                        }
                        Ok(!running)
                    }
                    None => Ok(false),
                }
            };
            match out {
                Err(e) => e,
                Ok(back) => {
                    if back {
                        swap_out(s.key, epfd);
                    }
                    0
                }
            }
        }
        (libc::EPOLL_CTL_DEL, Some(s)) => {
            drop_swap(&s, epfd, || ());
            0
        }
        _ => return plain(),
    };
    if r != 0 {
        crate::sys::guard::set_errno(r);
        return -1;
    }
    record(epfd, op, fd, events, data);
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
        // SAFETY: i < n, and `events` holds n events (the caller's contract).
        let ev = unsafe { std::ptr::read_unaligned(events.add(i)) };
        if ev.u64 & MAGIC_MASK != MAGIC {
            // SAFETY: kept <= i < n: inside the caller's array of n events.
            unsafe { std::ptr::write_unaligned(events.add(kept), ev) };
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
    let read = |i: usize| {
        debug_assert!(i < n);
        // SAFETY: called with i < n only, and `events` holds n events (the caller's contract).
        unsafe { std::ptr::read_unaligned(events.add(i)) }
    };
    if !(0..n).any(|i| read(i).u64 & MAGIC_MASK == MAGIC) {
        return (n, Vec::new());
    }
    let forks = FORKS.load(Ordering::Relaxed);
    let mut kept = 0;
    let mut todo = Vec::new();
    for i in 0..n {
        let ev = read(i);
        if ev.u64 & MAGIC_MASK != MAGIC {
            // SAFETY: kept <= i < n: inside the caller's array, on an event already read.
            unsafe { std::ptr::write_unaligned(events.add(kept), ev) };
            kept += 1;
            continue;
        }
        let key = ev.u64 as u32;
        let seen = {
            let g = STATE.lock();
            g.swap(key)
                .filter(|s| s.free(forks))
                .map(|s| (s.hs, s.fd, s.ino, g.hs(s.hs).is_some_and(|h| h.running)))
        };
        // None: a leftover of ours (a forked copy's), or a swap another thread is acting on
        // (its `q` fires again if it stays).
        let Some((hs, fd, ino, running)) = seen else {
            continue;
        };
        let kind = fdtable::kind(fd);
        if running {
            if inode(fd) == Some(ino) && kind == Some(fdtable::Kind::Handshaking) {
                if !todo.contains(&fd) {
                    todo.push(fd);
                }
                continue;
            }
            // Ended without done() (abandoned, or closed by the program): over now; the other
            // sets take theirs back too.
            end(hs, kind != Some(fdtable::Kind::ProxiedTcp), true);
        }
        let taken = {
            let mut g = STATE.lock();
            match g.swap_mut(key).filter(|s| s.free(forks)) {
                Some(s) => {
                    s.busy = Some(forks);
                    true
                }
                None => false,
            }
        };
        if taken {
            if let Some(e) = swap_out(key, epfd) {
                // SAFETY: kept <= i < n: inside the caller's array, on an event already read.
                unsafe { std::ptr::write_unaligned(events.add(kept), e) };
                kept += 1;
            }
        }
    }
    (kept, todo)
}

/// Does the program have `fd` in an epoll set (as far as its `epoll_ctl` calls tell)? A
/// blocking connect then needs readiness fds like a non-blocking one.
pub fn registered(fd: c_int) -> bool {
    STATE
        .lock()
        .recs
        .as_ref()
        .is_some_and(|m| m.contains_key(&fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::lock::audit::count;

    fn pair() -> [c_int; 2] {
        let mut sv = [-1; 2];
        // SAFETY: socketpair writes two fds into the array we own.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
        assert_eq!(r, 0);
        sv
    }

    fn prog_ctl(epfd: c_int, op: c_int, fd: c_int, data: u64, hs: Option<u64>) -> c_int {
        let mut ev = epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            u64: data,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        unsafe { epoll_ctl(epfd, op, fd, &mut ev, hs) }
    }

    /// The events a wait on `epfd` returns now, after [`filter`].
    fn wait(epfd: c_int) -> (Vec<epoll_event>, Vec<c_int>, usize) {
        let mut evs = [epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: evs holds 64 events.
        let n = unsafe { real::epoll_wait(epfd, evs.as_mut_ptr(), 64, 0) };
        assert!(n >= 0);
        // SAFETY: the kernel wrote n events into evs.
        let ((kept, todo), under) = count(|| unsafe { filter(epfd, evs.as_mut_ptr(), n as usize) });
        (evs[..kept].to_vec(), todo, under)
    }

    fn ino(fd: c_int) -> u64 {
        inode(fd).unwrap()
    }

    // One test: STATE is process-wide.
    #[test]
    fn no_allocation_or_free_under_the_lock() {
        // SAFETY: epoll_create1 takes no pointer.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0);
        let pairs: Vec<[c_int; 2]> = (0..40).map(|_| pair()).collect();
        for (i, p) in pairs.iter().enumerate() {
            let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_ADD, p[0], i as u64, None));
            assert_eq!((r, n), (0, 0), "plain ADD {i}");
        }
        let a = |i: usize| pairs[i][0];
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_MOD, a(5), 5, None));
        assert_eq!((r, n), (0, 0));
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_DEL, a(6), 0, None));
        assert_eq!((r, n), (0, 0));
        assert_eq!(recs_of(a(6)).len(), 0);
        assert_eq!(recs_of(a(5)).len(), 1);

        // A handshake on a(0): its registration moves onto q.
        let (hs, n) = count(|| open(a(0), ino(a(0))).unwrap());
        assert_eq!(n, 0);
        assert!(q_of(hs) >= 0);
        assert_eq!(SWAPS.load(Ordering::Relaxed), 1);
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_ADD, a(0), 0, Some(hs)));
        assert_eq!(
            (r, n),
            (-1, 0),
            "already there (as the program registered it)"
        );
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_MOD, a(0), 100, Some(hs)));
        assert_eq!((r, n), (0, 0), "MOD of the kept registration");
        let ((), n) = count(|| arm(hs, libc::POLLIN, Instant::now() + Duration::from_secs(9)));
        assert_eq!(n, 0);
        let (evs, _, _) = wait(ep);
        assert!(
            evs.iter().all(|e| e.u64 != 100),
            "q is quiet: the handshake waits to read"
        );
        // SAFETY: one byte from a buffer we own, to the peer of a(0).
        let wrote = unsafe { real::write(pairs[0][1], b"x".as_ptr().cast(), 1) };
        assert_eq!(wrote, 1);
        // a(0) is not a handshaking fd in the fd table: the first look ends it, failed.
        let (evs, todo, under) = wait(ep);
        assert_eq!(under, 0);
        assert!(todo.is_empty());
        assert!(evs.iter().all(|e| e.u64 & MAGIC_MASK != MAGIC));
        let e = evs
            .iter()
            .find(|e| e.u64 == 100)
            .expect("the failure is reported");
        assert_ne!(e.events & libc::EPOLLERR as u32, 0);
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        // The program's registration is back, with its MOD's data.
        let (evs, _, _) = wait(ep);
        assert!(evs
            .iter()
            .any(|e| e.u64 == 100 && e.events & libc::EPOLLERR as u32 == 0));

        // A failed start: the registration goes back at once.
        let hs2 = open(a(1), ino(a(1))).unwrap();
        assert_eq!(SWAPS.load(Ordering::Relaxed), 1);
        let ((), n) = count(|| abort(hs2));
        assert_eq!(n, 0);
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        assert_eq!(q_of(hs2), -1);
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(1), libc::EPOLLIN as u32, 1),
            0
        );

        // A finished one: the next wait puts the registration back, nothing extra reported.
        let hs3 = open(a(2), ino(a(2))).unwrap();
        let ((), n) = count(|| done(hs3, false));
        assert_eq!(n, 0);
        let (evs, _, under) = wait(ep);
        assert_eq!(under, 0);
        assert!(evs.iter().all(|e| e.events & libc::EPOLLERR as u32 == 0));
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(2), libc::EPOLLIN as u32, 2),
            0
        );

        // DEL of a swapped registration.
        let hs4 = open(a(3), ino(a(3))).unwrap();
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_DEL, a(3), 0, Some(hs4)));
        assert_eq!((r, n), (0, 0));
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(3), libc::EPOLLIN as u32, 3),
            libc::ENOENT
        );
        done(hs4, false);

        // A replaced socket keeps its registration.
        let (r, n) = count(|| replacing(a(4), || 7));
        assert_eq!((r, n), (7, 0));
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(4), libc::EPOLLIN as u32, 4),
            0
        );

        // One fd in more sets than its entry holds inline: the rest spill, and all move. (a(7)
        // is in `ep` too.)
        assert_eq!(prog_ctl(ep, libc::EPOLL_CTL_DEL, a(7), 0, None), 0);
        let eps: Vec<c_int> = (0..INLINE + 3)
            // SAFETY: epoll_create1 takes no pointer.
            .map(|_| unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
            .collect();
        for (i, &e) in eps.iter().enumerate() {
            let (r, n) = count(|| prog_ctl(e, libc::EPOLL_CTL_ADD, a(7), 70 + i as u64, None));
            assert_eq!((r, n), (0, 0), "set {i}");
        }
        let (r, n) = count(|| prog_ctl(eps[INLINE + 1], libc::EPOLL_CTL_MOD, a(7), 99, None));
        assert_eq!((r, n), (0, 0));
        let (r, n) = count(|| prog_ctl(eps[1], libc::EPOLL_CTL_DEL, a(7), 0, None));
        assert_eq!((r, n), (0, 0));
        // A spilled one modified once an inline slot is free stays one registration.
        let (r, n) = count(|| prog_ctl(eps[INLINE + 2], libc::EPOLL_CTL_MOD, a(7), 76, None));
        assert_eq!((r, n), (0, 0));
        let mut got: Vec<(c_int, u64)> = recs_of(a(7)).iter().map(|(e, r)| (*e, r.data)).collect();
        got.sort();
        let mut want: Vec<(c_int, u64)> = eps
            .iter()
            .enumerate()
            .map(|(i, &e)| (e, 70 + i as u64))
            .collect();
        want.remove(1);
        want[INLINE].1 = 99;
        want.sort();
        assert_eq!(got, want);
        let hs5 = open(a(7), ino(a(7))).unwrap();
        assert_eq!(SWAPS.load(Ordering::Relaxed), INLINE + 2);
        for &e in &eps {
            assert_eq!(
                ctl(e, libc::EPOLL_CTL_MOD, a(7), libc::EPOLLIN as u32, 0),
                libc::ENOENT
            );
        }
        abort(hs5);
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        for (i, &e) in eps.iter().enumerate() {
            let r = ctl(e, libc::EPOLL_CTL_MOD, a(7), libc::EPOLLIN as u32, 0);
            assert_eq!(r, if i == 1 { libc::ENOENT } else { 0 }, "set {i}");
        }
        // The program's DELs empty the entry, spilled registrations too.
        for &e in &eps {
            prog_ctl(e, libc::EPOLL_CTL_DEL, a(7), 0, None);
        }
        assert!(recs_of(a(7)).is_empty());
        assert!(STATE.lock().recs.as_ref().unwrap().get(&a(7)).is_none());

        // Threads racing on one swapped registration (MODs through find's busy marks, waits
        // through filter's): nobody hangs, every swap comes back once.
        let hs6 = open(a(8), ino(a(8))).unwrap();
        assert_eq!(SWAPS.load(Ordering::Relaxed), 1);
        let fd8 = a(8);
        let racers: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let (r, n) = count(|| {
                            prog_ctl(ep, libc::EPOLL_CTL_MOD, fd8, t * 1000 + i, Some(hs6))
                        });
                        assert_eq!((r, n), (0, 0));
                        let (_, _, under) = wait(ep);
                        assert_eq!(under, 0);
                    }
                })
            })
            .collect();
        for r in racers {
            r.join().unwrap();
        }
        done(hs6, false);
        let (_, _, under) = wait(ep);
        assert_eq!(under, 0);
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(8), libc::EPOLLIN as u32, 8),
            0
        );

        // A plain ADD recorded after a handshake of the fd started (its open read the records
        // first, as when the two race on two threads) is moved onto q all the same.
        assert_eq!(prog_ctl(ep, libc::EPOLL_CTL_DEL, a(9), 0, None), 0);
        let hs7 = open(a(9), ino(a(9))).unwrap();
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_ADD, a(9), 90, None));
        assert_eq!((r, n), (0, 0));
        assert_eq!(SWAPS.load(Ordering::Relaxed), 1);
        assert_eq!(
            ctl(ep, libc::EPOLL_CTL_MOD, a(9), libc::EPOLLIN as u32, 0),
            libc::ENOENT
        );
        let (r, n) = count(|| prog_ctl(ep, libc::EPOLL_CTL_MOD, a(9), 91, None));
        assert_eq!((r, n), (0, 0), "a MOD acts on the kept registration");
        done(hs7, false);
        let (evs, _, _) = wait(ep);
        assert!(evs.iter().all(|e| e.u64 & MAGIC_MASK != MAGIC));
        assert_eq!(SWAPS.load(Ordering::Relaxed), 0);
        let (evs, _, _) = wait(ep);
        assert!(
            evs.iter().any(|e| e.u64 == 91),
            "back with the program's last MOD"
        );

        for p in &pairs {
            close(p[0]);
            close(p[1]);
        }
        for e in eps {
            close(e);
        }
        close(ep);
    }
}
