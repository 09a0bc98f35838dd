//! Non-blocking proxied connects that overlap.
//!
//! A `connect` on a non-blocking socket to a proxied destination starts the TCP connect to
//! the first hop, records the chain handshake here and returns `EINPROGRESS` at once; the fd
//! is `Kind::Handshaking` in the fd table. There is no background thread (nothing to break
//! under `fork`): the handshake is driven, without ever waiting, from the program's own calls:
//!
//! - its readiness waits (`hooks/poll.rs`: poll, ppoll, select, pselect, epoll) step the
//!   handshake, wait for what it needs instead of what the program asked, and report the fd
//!   writable only when it is over (with an error condition if it failed);
//! - `getsockopt(SO_ERROR)` (`hooks/sockopt.rs`), every data call (`hooks/io.rs`,
//!   `hooks/udp.rs`) and a second `connect` finish it synchronously, bounded by its
//!   deadline, first: the program never sees a handshake byte nor sends its own data before
//!   the handshake is done.
//!
//! On success the fd becomes `Kind::ProxiedTcp` (as after a blocking connect). On failure the
//! socket is disconnected and the fd becomes `Kind::HandshakeFailed`, holding the errno that
//! `SO_ERROR` or the next I/O call reports once, like the kernel's socket error.
//!
//! State lives in [`PENDING`], keyed by the socket's inode (so a `dup` of the fd finds it),
//! under a fork-safe lock that is never held across a system call, a look-up or an
//! allocation (`sys/lock.rs`): a step takes the handshake's state out of its [`Slot`] under
//! the lock, moves it with the lock released (sends, reads, `epoll_ctl`, a dynamic chain's
//! restart with its DNS), and puts it back — or, once it is over, updates the fd table first
//! and removes the slot after. A thread that finds the state taken (another thread is
//! stepping the same socket) waits a millisecond and looks again. The map grows outside the
//! lock, and what leaves it is dropped after the guard (the rule of `sys/lock.rs`). `close` never touches it: it only
//! clears the fd-table slot, and every use checks the slot first; entries of closed fds are
//! dropped once long past their deadline.
//!
//! epoll, poll and select: each handshake has a readiness fd (`evreg.rs`) that is readable
//! exactly when the handshake can move, has timed out or is over; it stands in for the socket
//! in the program's epoll sets (registrations made before `connect` included) and in its
//! poll/select calls, so the program sleeps while the proxy is silent and sees the socket
//! writable (or failed) when a direct connect would be.
//!
//! Optimistic data (`?optimistic=1` on a single SOCKS5 hop without credentials,
//! `ProxyUrl::optimistic_applies`): greeting and request go in one write (pipelined), and once
//! they are sent the step reports the handshake done (`Stepped::Sent`): the readiness fds are
//! released (`evreg::done`, the program's waits see the socket itself), the fds become
//! `Kind::ReplyPending` and a blocking `connect` returns 0; the state stays in its slot to
//! read the proxy's two replies. Writes go straight to the socket, behind the request; every
//! read hook calls [`gate_read`] first, which reads the replies (exactly them, as the handshake
//! always does) before the program sees a byte: waiting for them until the handshake deadline
//! on a blocking socket, EAGAIN on a non-blocking one while they are incomplete. A failed
//! reply, EOF or the deadline makes that read fail with ECONNRESET (the socket disconnected,
//! the usual one warning line); a dynamic chain never restarts then.
//!
//! Size: ~1,320 lines, no unit tests (the integration tests drive it): one state machine
//! (`Pending`: begin, advance, restart, complete, and optimistic data's reply phase) and the
//! `PENDING` map whose take-out/put-back lock rule stays private to this file, and the entry
//! points the hooks call (start, step, gate, gate_read).

use super::drive;
use crate::state::fdtable::{self, Entry, Kind};
use crate::state::runtime::{self, Fault, Runtime};
use crate::sys::error::{errno, strerror, Failure};
use crate::sys::guard::{hook, set_errno};
use crate::sys::lock::ForkSafeMutex;
use crate::sys::lock::IntMap;
use crate::sys::socket::{self, so_error};
use crate::sys::{real, sockaddr as sa};
use libc::{c_int, c_short};
use proxify_core::chain::{Handshake, ReadMode, State as HsState};
use proxify_core::config::Chain;
use proxify_core::hops::Attempts;
use proxify_core::socks::{Command, Reply, TargetAddr};
use proxify_core::url::ProxyUrl;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// An entry nobody looked at for this long after its deadline belongs to a closed fd.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// The one `-v` line saying `?optimistic=1` does not apply was written.
static OPTIMISTIC_IGNORED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// One running handshake.
struct Pending {
    hs: Handshake,
    /// The TCP connect to the first hop is not confirmed yet.
    connecting: bool,
    /// The connect to the first hop was just started: the first step sends the greeting at
    /// once instead of asking poll and `SO_ERROR` first. A socket still connecting refuses
    /// the send with EAGAIN (then poll and `SO_ERROR` decide, as before), a failed connect
    /// reports its error there, as `SO_ERROR` would, and a connected one takes the greeting:
    /// two system calls fewer on a proxy that accepts at once (loopback, a LAN).
    send_first: bool,
    /// What the handshake waits for (POLLIN or POLLOUT).
    want: c_short,
    /// Of the current phase: connect_timeout, then handshake_timeout once connected.
    deadline: Instant,
    handshake_timeout: Duration,
    connect_timeout: Duration,
    proxy: SocketAddr,
    /// The hops used (dynamic chains retry without a dead one, like the blocking path).
    hops: Vec<(usize, ProxyUrl)>,
    attempts: Attempts,
    chain: &'static Chain,
    domain: c_int,
    /// The destination as asked (the log's and the trace's text: rendered only when written).
    target: TargetAddr,
    /// When the connect began (the trace's handshake time; only when tracing).
    started: Option<Instant>,
    /// Its readiness fds (`evreg`).
    ev: u64,
    /// Optimistic data applies (`?optimistic=1` on a single SOCKS5 hop without credentials):
    /// the program is told it is connected once greeting and request are sent.
    optimistic: bool,
    /// Optimistic data: greeting and request are sent and the program was told; what is left
    /// is reading the replies (the fds are `Kind::ReplyPending`), from the program's first read.
    sent: bool,
}

/// The fds known to refer to one handshake's socket (the first, dups, ones seen by a step):
/// a few inline, so that noting one never allocates; beyond them the completion looks the
/// socket's other handshaking fds up in the fd table.
#[derive(Clone, Copy)]
struct Fds {
    v: [c_int; 6],
    n: u8,
    more: bool,
}

impl Fds {
    fn one(fd: c_int) -> Fds {
        let mut v = [-1; 6];
        v[0] = fd;
        Fds {
            v,
            n: 1,
            more: false,
        }
    }

    /// Optimistic data: may one of these fds still be waiting for the replies? (Atomic loads
    /// only: callable under the lock.) A connection the program keeps but does not read for a
    /// long time keeps its slot; one it closed lets it go.
    fn replies_pending(&self) -> bool {
        self.more
            || self.v[..self.n as usize]
                .iter()
                .any(|&f| fdtable::kind(f) == Some(Kind::ReplyPending))
    }

    fn add(&mut self, fd: c_int) {
        let n = self.n as usize;
        if self.v[..n].contains(&fd) {
            return;
        }
        if n < self.v.len() {
            self.v[n] = fd;
            self.n += 1;
        } else {
            self.more = true;
        }
    }
}

/// One socket's entry in [`PENDING`]: what other threads need while the state is out being
/// stepped, and the state.
struct Slot {
    /// None while a thread steps it with the lock released.
    state: Option<Box<Pending>>,
    /// The process generation ([`FORKS`]) in which the state was taken out: a slot taken in
    /// the parent before a fork is never put back in the child.
    taken_in: u32,
    gen: u64,
    /// Until when the handshake waits (for what it needs next), and the readiness fd
    /// poll/select wait on (-1 if none).
    deadline: Instant,
    q: c_int,
    ev: u64,
    fds: Fds,
}

static PENDING: ForkSafeMutex<Option<IntMap<u64, Slot>>> = ForkSafeMutex::new(None);
/// Bumped in the child of every fork (see [`Slot::taken_in`]).
static FORKS: AtomicU32 = AtomicU32::new(0);
/// Slot generations.
static GEN: AtomicU64 = AtomicU64::new(0);
/// How long a step waits before looking again at a handshake another thread is stepping.
const BUSY_WAIT: Duration = Duration::from_millis(1);

pub(crate) fn fork_prepare() {
    PENDING.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { PENDING.raw_unlock() }
}

/// In the child of a fork, before [`fork_release`]: a state another thread of the parent had
/// taken out is never coming back here (one atomic add: no lock, no allocation).
pub(crate) fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Inserts `slot` for `ino` (replacing any stale slot of the socket). The map grows with the
/// lock released (`ForkSafeMutex::insert`); a replaced slot is dropped after the guard.
fn insert(ino: u64, slot: Slot) {
    drop(PENDING.insert(ino, slot));
}

/// Removes the slot of `ino` if it is generation `gen` (any generation: None); the caller
/// drops it after the guard.
fn remove(ino: u64, gen: Option<u64>) -> Option<Slot> {
    let mut g = PENDING.lock();
    let m = g.as_mut()?;
    if gen.is_some_and(|x| m.get(&ino).is_none_or(|s| s.gen != x)) {
        return None;
    }
    m.remove(&ino)
}

/// Drops the slot of one socket whose fd was closed long ago (its deadline passed
/// [`STALE_AFTER`] ago and nobody stepped it): one per call, the lock released for the drop
/// and its readiness fds.
fn drop_one_stale(now: Instant) -> bool {
    let gone = {
        let mut g = PENDING.lock();
        let Some(m) = g.as_mut() else {
            return false;
        };
        let stale = m
            .iter()
            .find(|(_, sl)| {
                sl.state.as_ref().is_some_and(|p| {
                    sl.deadline + STALE_AFTER <= now && (!p.sent || !sl.fds.replies_pending())
                })
            })
            .map(|(k, _)| *k);
        stale.and_then(|k| m.remove(&k))
    };
    match gone {
        Some(sl) => {
            super::evreg::done(sl.ev, true);
            true
        }
        None => false,
    }
}

/// Where a handshake stands after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not a handshaking fd (never was, or finished and already reported).
    NotOurs,
    /// Still running: waits for `want` (POLLIN or POLLOUT) until `deadline`.
    Running {
        want: c_short,
        deadline: Instant,
        /// Readable when the handshake can move (what poll/select wait on); -1 if none.
        q: c_int,
    },
    Done,
    /// Failed with this errno (not yet reported to the program).
    Failed(c_int),
}

enum Step {
    Want(c_short),
    Done(Reply),
    /// Optimistic data: greeting and request are sent, the replies are still to be read.
    Sent,
}

/// What to log (and note) once the lock is released.
enum Outcome {
    Connected {
        fd: c_int,
        chain: &'static Chain,
        started: Option<Instant>,
        target: TargetAddr,
        bound: Option<SocketAddr>,
        reply_bound: TargetAddr,
    },
    Failed {
        chain: Option<&'static Chain>,
        started: Option<Instant>,
        errno: c_int,
        shown: String,
        via: String,
        msg: String,
        internal: bool,
    },
}

/// The trace's outcome line of a proxied connect (`errno` 0: connected).
pub fn trace_outcome(
    shown: &dyn std::fmt::Display,
    chain: Option<&Chain>,
    errno: c_int,
    started: Option<Instant>,
) {
    use crate::sys::trace;
    if !trace::on() {
        return;
    }
    trace::write(&trace::Event {
        ev: trace::Ev::Outcome,
        call: "connect",
        dest: shown,
        via: chain.map_or(trace::Via::Proxy, trace::Via::Chain),
        rule: None,
        result: Some(errno),
        ms: started.map(|t| t.elapsed().as_secs_f64() * 1000.0),
    });
}

impl Outcome {
    fn report(self) {
        match self {
            Outcome::Connected {
                fd,
                chain,
                started,
                target,
                bound,
                reply_bound,
            } => {
                trace_outcome(&target, Some(chain), 0, started);
                crate::engine::bind::note_connection(&target, bound);
                log::debug!(
                    "connect fd {fd} to {target}: connected (proxy bound {})",
                    reply_bound
                );
            }
            Outcome::Failed {
                chain,
                started,
                errno,
                shown,
                via,
                msg,
                internal,
            } => {
                trace_outcome(&shown, chain, errno, started);
                // A panic already logged its one line.
                if !internal {
                    crate::sys::error::warn_once(format_args!(
                        "cannot connect to {shown} through {via}: {msg}"
                    ))
                }
            }
        }
    }
}

fn inode(fd: c_int) -> Option<u64> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a stat we own.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino as u64)
}

/// Is `fd` handshaking or holding an unreported failure? (The hooks' slow-path test.)
#[inline]
pub fn is_ours(fd: c_int) -> bool {
    matches!(
        fdtable::kind(fd),
        Some(Kind::Handshaking | Kind::HandshakeFailed)
    )
}

/// Leaves the socket unconnected, with no error of ours pending in the kernel.
fn disconnect(fd: c_int) {
    socket::disconnect(fd);
    so_error(fd);
}

/// One attempt: the handshake through `hops` and the TCP connect to the first one, started.
/// `ino`: the socket's inode, if the caller has just read it.
fn begin(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    target: &TargetAddr,
    hops: &[(usize, ProxyUrl)],
    ino: Option<u64>,
    flags: Option<c_int>,
) -> Result<(Handshake, SocketAddr, bool), Failure> {
    let mut urls: Vec<ProxyUrl> = hops.iter().map(|(_, u)| u.clone()).collect();
    let optimistic = ProxyUrl::optimistic_applies(&urls);
    if optimistic {
        // Greeting and request in one write: the program's data then goes right behind them.
        urls[0].pipeline = true;
    } else if urls.iter().any(|u| u.optimistic) && !OPTIMISTIC_IGNORED.swap(true, Ordering::Relaxed)
    {
        log::info!(
            "?optimistic=1 ignored for a connect through {}: it applies only to a single SOCKS5 \
             proxy without credentials",
            urls.iter()
                .map(ProxyUrl::masked)
                .collect::<Vec<_>>()
                .join(" -> ")
        );
    }
    let first = urls
        .first()
        .ok_or_else(|| Failure::new(libc::EACCES, "the chain has no proxy"))?;
    let addrs = rt.hop_addrs(first).map_err(|e| Failure {
        dead_hop: Some(0),
        ..Failure::new(libc::EHOSTUNREACH, e)
    })?;
    let proxy = drive::pick_proxy_addr(fd, domain, &addrs)?;
    let hs = Handshake::with_hops(urls, Command::Connect, target.clone())?;
    let (st, len) = sa::to_storage(&proxy);
    // A blocking socket (engine::connect) is made non-blocking for this one call only, so the
    // TCP connect to the first hop starts without waiting; its flags are put back at once,
    // and only if the fd is still the same socket (another thread may have closed it).
    let ino = ino.or_else(|| inode(fd));
    // (`flags`: as the hook just read them, on the first attempt.)
    // SAFETY: fcntl F_GETFL/F_SETFL on the program's fd (the socket it asked to connect).
    let flags = flags.unwrap_or_else(|| unsafe { real::fcntl(fd, libc::F_GETFL, 0) });
    let toggled = flags >= 0
        && flags & libc::O_NONBLOCK == 0
        // SAFETY: F_SETFL takes no pointer.
        && unsafe {
            real::fcntl(
                fd,
                libc::F_SETFL,
                (flags | libc::O_NONBLOCK) as libc::c_ulong,
            )
        } == 0;
    // SAFETY: a valid sockaddr of `len` bytes from to_storage.
    let rc = unsafe { real::connect(fd, &st as *const _ as *const libc::sockaddr, len) };
    let e = errno();
    if toggled && ino.is_some() && inode(fd) == ino {
        // SAFETY: fcntl on an fd that is still the socket we changed.
        unsafe { real::fcntl(fd, libc::F_SETFL, flags as libc::c_ulong) };
    }
    if rc != 0 && !matches!(e, libc::EINPROGRESS | libc::EINTR | libc::EALREADY) {
        return Err(Failure {
            dead_hop: Some(0),
            ..Failure::new(e, format!("cannot reach proxy {proxy}: {}", strerror(e)))
        });
    }
    Ok((hs, proxy, optimistic))
}

/// A dynamic chain skips the hop a failure proved dead (`proxify_core::hops`, as the
/// supervisor does): true when the caller tries again.
fn skip_dead(
    rt: &Runtime,
    chain: &Chain,
    hops: &[(usize, ProxyUrl)],
    attempts: &mut Attempts,
    f: &Failure,
) -> bool {
    let Some((idx, url)) = attempts.retry_without(chain, hops, f) else {
        return false;
    };
    log::info!(
        "dynamic chain {}: skipping dead hop {}: {}",
        chain.name,
        url.masked(),
        f.msg
    );
    rt.mark_dead(chain, *idx);
    true
}

/// Starts a proxied connect of the non-blocking TCP socket `fd`: returns -1 with
/// `EINPROGRESS` (or the errno of an immediate failure, after its one log line).
#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
pub fn start(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    flags: c_int,
) -> c_int {
    match try_start(rt, fd, domain, dest, target, chain, Some(flags), true) {
        Ok(_) => {
            // Send the greeting now if the proxy answered the TCP connect at once.
            let _ = step(fd);
            set_errno(libc::EINPROGRESS);
        }
        Err((f, target)) => {
            failed_to_start(&target, chain, &f);
            set_errno(f.errno);
        }
    }
    -1
}

/// The trace line and the one warning of a connect that could not start.
pub fn failed_to_start(target: &TargetAddr, chain: &Chain, f: &Failure) {
    trace_outcome(target, Some(chain), f.errno, None);
    crate::sys::error::warn_once(format_args!(
        "cannot connect to {target} through {}: {}",
        super::drive::via_of(chain),
        f.msg
    ));
}

/// Abandons the handshake of `fd` (the blocking driver gave up: SO_SNDTIMEO): its state is
/// dropped, the socket disconnected, the fd forgotten.
pub fn abandon(fd: c_int) {
    if let Some(ino) = inode(fd) {
        // A step in progress on another thread finds its slot gone and lets it be.
        if let Some(sl) = remove(ino, None) {
            super::evreg::done(sl.ev, true);
        }
    }
    disconnect(fd);
    socket::close_ours(fdtable::forget(fd));
}

/// Starts a proxied connect of `fd` (blocking or not) without stepping it; the caller drives
/// it with [`step`]. The error is not logged.
#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
///
/// For a blocking connect (`engine::connect`, which drives it in this thread): the readiness
/// fds (`evreg`) are made only if the program has the socket in an epoll set already, or later
/// by [`go_on_in_background`] when the connect returns with the handshake still running.
pub fn start_quiet(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    flags: c_int,
) -> Result<u64, (Failure, TargetAddr)> {
    try_start(rt, fd, domain, dest, target, chain, Some(flags), false)
}

/// A blocking connect returns (EINTR) while its handshake runs on as a non-blocking one: it
/// gets its readiness fds now, if it has none, so that the program's epoll, poll and select
/// see it as they see any other. Err: the errno (the handshake is then abandoned).
pub fn go_on_in_background(fd: c_int) -> Result<(), c_int> {
    let ino = inode(fd).ok_or(libc::EBADF)?;
    let has = PENDING
        .lock()
        .as_ref()
        .and_then(|m| m.get(&ino))
        .map(|sl| sl.ev != 0);
    if has != Some(false) {
        return Ok(()); // none needed (finished meanwhile), or has them already
    }
    let ev = super::evreg::open(fd, ino)?;
    let q = super::evreg::q_of(ev);
    let placed = {
        let mut g = PENDING.lock();
        match g.as_mut().and_then(|m| m.get_mut(&ino)) {
            Some(sl) if sl.ev == 0 => match sl.state.as_mut() {
                Some(p) => {
                    p.ev = ev;
                    sl.ev = ev;
                    sl.q = q;
                    Some((p.want, sl.deadline))
                }
                None => None,
            },
            _ => None,
        }
    };
    match placed {
        Some((want, deadline)) => {
            super::evreg::arm(ev, want, deadline);
            Ok(())
        }
        None => {
            // Another thread is stepping it, or it ended: the program's next wait steps it.
            super::evreg::abort(ev);
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
fn try_start(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    flags: Option<c_int>,
    readiness: bool,
) -> Result<u64, (Failure, TargetAddr)> {
    let Some(cfg) = rt.config() else {
        return Err((
            Failure::new(libc::EACCES, rt.config_error().to_string()),
            target,
        ));
    };
    let mut domain = domain;
    let mut replaced = None;
    // The fd's flags as the hook read them, for the first attempt only.
    let mut flags = flags;
    loop {
        let Some(ino) = inode(fd) else {
            let e = errno();
            return Err((
                Failure::new(e, format!("fstat failed: {}", strerror(e))),
                target,
            ));
        };
        // Before the connect: the program's registrations of the socket move to our readiness
        // fd. A blocking connect has none unless the socket is in an epoll set (0: none).
        let ev = if readiness || super::evreg::registered(fd) {
            match super::evreg::open(fd, ino) {
                Ok(ev) => ev,
                Err(e) => {
                    let f = Failure::new(e, format!("cannot wait for the proxy: {}", strerror(e)));
                    return Err((f, target));
                }
            }
        } else {
            0
        };
        let r = start_hops(
            rt,
            fd,
            domain,
            dest,
            &target,
            cfg,
            chain,
            ino,
            ev,
            flags.take(),
        );
        match r {
            Ok(()) => {
                if let Some(program) = replaced {
                    fdtable::set_program_family(fd, program);
                }
                return Ok(ino);
            }
            Err(f) => {
                super::evreg::abort(ev);
                let other = match replaced {
                    None if f.errno == libc::EAFNOSUPPORT => other_family(rt, fd, domain, chain),
                    _ => None,
                };
                let Some(family) = other else {
                    return Err((f, target));
                };
                // The proxy is reachable only in the other family (an IPv6-only proxy for an
                // AF_INET socket, an IPv4 one for an IPV6_V6ONLY socket): the program's socket
                // is replaced by one that can reach it, under the same fd number.
                if let Err(f) = super::evreg::replacing(fd, || socket::replace_family(fd, family)) {
                    return Err((f, target));
                }
                log::debug!(
                    "connect fd {fd}: socket replaced by an {} one to reach the proxy",
                    if family == libc::AF_INET6 {
                        "IPv6"
                    } else {
                        "IPv4"
                    }
                );
                replaced = Some(domain);
                domain = family;
            }
        }
    }
}

/// The family of a socket that could reach the first hop of `chain` when `fd` (of `domain`)
/// cannot reach any of its addresses; None when it can (or the hop has no address at all).
fn other_family(rt: &Runtime, fd: c_int, domain: c_int, chain: &Chain) -> Option<c_int> {
    let hops = rt.select_hops(chain);
    let (_, first) = hops.first()?;
    let addrs = rt.hop_addrs(first).ok()?;
    if drive::pick_proxy_addr(fd, domain, &addrs).is_ok() {
        return None;
    }
    let family = sa::af(addrs.first()?);
    (family != domain).then_some(family)
}

#[allow(clippy::too_many_arguments)]
fn start_hops(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: &TargetAddr,
    cfg: &proxify_core::config::Config,
    chain: &'static Chain,
    ino: u64,
    ev: u64,
    flags: Option<c_int>,
) -> Result<(), Failure> {
    let started = crate::sys::trace::on().then(Instant::now);
    let mut attempts = Attempts::new(chain);
    let (hops, hs, proxy, optimistic) = loop {
        let hops = rt.select_hops(chain);
        match begin(rt, fd, domain, target, &hops, Some(ino), flags) {
            Ok((hs, proxy, optimistic)) => break (hops, hs, proxy, optimistic),
            Err(f) => {
                disconnect(fd);
                if !skip_dead(rt, chain, &hops, &mut attempts, &f) {
                    return Err(f);
                }
            }
        }
    };
    let gen = GEN.fetch_add(1, Ordering::Relaxed) + 1;
    let now = Instant::now();
    let deadline = now + cfg.connect_timeout;
    let p = Box::new(Pending {
        hs,
        connecting: true,
        send_first: true,
        want: libc::POLLOUT,
        deadline,
        handshake_timeout: cfg.handshake_timeout,
        connect_timeout: cfg.connect_timeout,
        proxy,
        hops,
        attempts,
        chain,
        domain,
        target: target.clone(),
        started,
        ev,
        optimistic,
        sent: false,
    });
    super::evreg::arm(ev, libc::POLLOUT, deadline);
    while drop_one_stale(now) {}
    insert(
        ino,
        Slot {
            state: Some(p),
            taken_in: 0,
            gen,
            deadline,
            q: super::evreg::q_of(ev),
            ev,
            fds: Fds::one(fd),
        },
    );
    let entry = Entry::Handshaking { peer: dest };
    if !fdtable::set(fd, entry) {
        drop(remove(ino, Some(gen)));
        disconnect(fd);
        return Err(Failure::new(libc::EMFILE, "fd beyond proxify's table"));
    }
    Ok(())
}

/// Waits for `ev` next, unless the phase's deadline has passed.
fn want(p: &Pending, ev: c_short, what: impl FnOnce() -> String) -> Result<Step, Failure> {
    if Instant::now() >= p.deadline {
        let dead_hop = p.connecting.then_some(0);
        return Err(Failure {
            dead_hop,
            ..Failure::new(libc::ETIMEDOUT, format!("timed out {}", what()))
        });
    }
    Ok(Step::Want(ev))
}

/// Moves the handshake as far as it goes without waiting (every call non-blocking).
fn advance(rt: &Runtime, fd: c_int, p: &mut Pending) -> Result<Step, Failure> {
    loop {
        if p.connecting && std::mem::take(&mut p.send_first) {
            match send_first(fd, &mut p.hs) {
                Ok(true) => {
                    connected(rt, p);
                    return after_connect(fd, p, true);
                }
                Ok(false) => {} // still connecting: poll and SO_ERROR below
                Err(e) => {
                    return Err(Failure {
                        dead_hop: Some(0),
                        ..Failure::new(
                            e,
                            format!("cannot reach proxy {}: {}", p.proxy, strerror(e)),
                        )
                    })
                }
            }
        }
        if p.connecting {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let n = unsafe { real::poll(&mut pfd, 1, 0) };
            if n < 0 {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(Failure::new(e, format!("poll failed: {}", strerror(e))));
            }
            if n == 0 {
                let proxy = p.proxy;
                return want(p, libc::POLLOUT, || format!("connecting to proxy {proxy}"));
            }
            let e = so_error(fd);
            if e != 0 || pfd.revents & libc::POLLNVAL != 0 {
                let e = if e == 0 { libc::EBADF } else { e };
                return Err(Failure {
                    dead_hop: Some(0),
                    ..Failure::new(
                        e,
                        format!("cannot reach proxy {}: {}", p.proxy, strerror(e)),
                    )
                });
            }
            connected(rt, p);
        }
        return after_connect(fd, p, false);
    }
}

/// The TCP connect to the first hop is confirmed: the handshake's deadline starts.
fn connected(rt: &Runtime, p: &mut Pending) {
    p.connecting = false;
    p.deadline = Instant::now() + p.handshake_timeout;
    if rt.fault == Fault::PanicConnect {
        panic!("injected fault (PROXIFY_TEST_FAULT=panic-connect)");
    }
}

/// One non-blocking send of the handshake's first bytes on a socket whose connect was just
/// started: Ok(true) connected (the bytes sent went out), Ok(false) still connecting, Err the
/// connect's error (the kernel reports a pending socket error to the send and clears it, as
/// `SO_ERROR` does; EPIPE: closed without one).
fn send_first(fd: c_int, hs: &mut Handshake) -> Result<bool, c_int> {
    let out = hs.pending_output();
    if out.is_empty() {
        return Ok(false);
    }
    loop {
        // SAFETY: `out` is the handshake's pending bytes, readable for its length.
        let n = unsafe {
            real::send(
                fd,
                out.as_ptr() as *const libc::c_void,
                out.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            hs.consume_output(n as usize);
            return Ok(true);
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(false),
            e => return Err(e),
        }
    }
}

/// The rest of a step once connected to the first hop: the handshake as far as it goes.
/// `just_sent`: [`send_first`] sent the first bytes, so a reply cannot be there yet.
fn after_connect(fd: c_int, p: &mut Pending, just_sent: bool) -> Result<Step, Failure> {
    let awaits_reply = just_sent
        && p.hs.pending_output().is_empty()
        && matches!(p.hs.state(), HsState::Running)
        && p.hs.read_mode() != ReadMode::Nothing;
    let progress = if awaits_reply {
        drive::Progress::Wait(libc::POLLIN, "waiting for the proxy's reply")
    } else {
        drive::advance(fd, &mut p.hs)?
    };
    match progress {
        drive::Progress::Done(r) => Ok(Step::Done(r)),
        // Optimistic data: all that is sent before the replies is sent; the program may
        // go on (the replies are read before its first read sees a byte).
        drive::Progress::Wait(..)
            if p.optimistic && !p.sent && p.hs.pending_output().is_empty() =>
        {
            Ok(Step::Sent)
        }
        drive::Progress::Wait(ev, what) => want(p, ev, || what.into()),
    }
}

/// After a failed attempt of a dynamic chain: the same socket, the next live hops.
fn restart(rt: &Runtime, fd: c_int, p: &mut Pending, mut f: Failure) -> Result<(), Failure> {
    loop {
        if !skip_dead(rt, p.chain, &p.hops, &mut p.attempts, &f) {
            return Err(f);
        }
        disconnect(fd);
        let hops = rt.select_hops(p.chain);
        match begin(rt, fd, p.domain, &p.target, &hops, None, None) {
            Ok((hs, proxy, optimistic)) => {
                p.hs = hs;
                p.optimistic = optimistic;
                p.proxy = proxy;
                p.hops = hops;
                p.connecting = true;
                p.send_first = true;
                p.deadline = Instant::now() + p.connect_timeout;
                return Ok(());
            }
            Err(e) => {
                p.hops = hops;
                f = e;
            }
        }
    }
}

/// The fds of the socket `ino` that are still handshaking on it: those noted in `fds`, `also`,
/// and — when more were noted than `Fds` holds — every other handshaking fd of the socket.
/// `also` is the fd being stepped, whose inode the caller has checked (or knows) to be `ino`.
fn live_fds(fds: &Fds, ino: u64, also: c_int) -> Vec<c_int> {
    let mut v: Vec<c_int> = Vec::with_capacity(fds.n as usize + 1);
    let mut consider = |f: c_int| {
        if f >= 0
            && !v.contains(&f)
            && matches!(
                fdtable::kind(f),
                Some(Kind::Handshaking | Kind::ReplyPending)
            )
            && (f == also || inode(f) == Some(ino))
        {
            v.push(f);
        }
    };
    for &f in fds.v[..fds.n as usize].iter().chain(std::iter::once(&also)) {
        consider(f);
    }
    if fds.more {
        fdtable::each(Kind::Handshaking, &mut consider);
        fdtable::each(Kind::ReplyPending, &mut consider);
    }
    v
}

fn complete_ok(fd: c_int, ino: u64, p: Box<Pending>, fds: &Fds, reply: Reply) -> Outcome {
    let bound = match reply.bound {
        TargetAddr::Ip(b) if !b.ip().is_unspecified() => sa::for_family(b, p.domain),
        _ => None,
    };
    let live = live_fds(fds, ino, fd);
    // Readiness first: the program's epoll sets take their registrations back.
    super::evreg::done(p.ev, false);
    for f in live {
        fdtable::handshake_done(f, bound);
    }
    let p = *p;
    Outcome::Connected {
        fd,
        chain: p.chain,
        started: p.started,
        target: p.target,
        bound,
        reply_bound: reply.bound,
    }
}

fn complete_failed(
    fd: c_int,
    ino: u64,
    p: Option<Box<Pending>>,
    fds: &Fds,
    mut f: Failure,
    internal: bool,
) -> Outcome {
    disconnect(fd);
    // A rejected username/password: say where it came from (the fix is there).
    if let (Some(p), Some(i)) = (&p, f.auth_hop) {
        if let Some((idx, _)) = p.hops.get(i) {
            let from = runtime::get().cred_from(p.chain, *idx);
            f.msg = format!("{}; the credentials come from {from}", f.msg);
        }
    }
    let live = live_fds(fds, ino, fd);
    let o = match p {
        Some(p) => {
            super::evreg::done(p.ev, true);
            let p = *p;
            Outcome::Failed {
                chain: Some(p.chain),
                started: p.started,
                errno: f.errno,
                shown: p.target.to_string(),
                via: super::drive::via_of(p.chain),
                msg: f.msg,
                internal,
            }
        }
        None => Outcome::Failed {
            chain: None,
            started: None,
            errno: f.errno,
            shown: match fdtable::get(fd).and_then(|e| e.peer()) {
                Some(a) => a.to_string(),
                None => format!("fd {fd}'s destination"),
            },
            via: "the proxy".into(),
            msg: f.msg,
            internal,
        },
    };
    for x in live {
        fdtable::handshake_failed(x, f.errno);
    }
    o
}

/// What a step ended with, its state moved with the lock released.
enum Stepped {
    Want(Box<Pending>),
    /// Optimistic data: greeting and request sent; the replies are still to be read.
    Sent(Box<Pending>),
    Done(Box<Pending>, Reply),
    Failed(Box<Pending>, Failure, bool),
}

/// Moves the handshake `p` of `fd` as far as it goes (no lock held): a dynamic chain's
/// restart, with its look-up of the next hop, happens here too.
fn drive_state(rt: &Runtime, fd: c_int, mut p: Box<Pending>) -> Stepped {
    loop {
        match crate::sys::guard::caught(|| advance(rt, fd, &mut p)) {
            Some(Ok(Step::Want(w))) => {
                p.want = w;
                super::evreg::arm(p.ev, w, p.deadline);
                return Stepped::Want(p);
            }
            Some(Ok(Step::Done(reply))) => return Stepped::Done(p, reply),
            Some(Ok(Step::Sent)) => {
                p.sent = true;
                return Stepped::Sent(p);
            }
            // Optimistic data: the program was told it is connected and may have sent data;
            // the connection cannot start again. The read that finds it reports ECONNRESET.
            Some(Err(f)) if p.sent => {
                let f = Failure {
                    errno: libc::ECONNRESET,
                    msg: format!(
                        "{} (optimistic data: reported to the first read as ECONNRESET)",
                        f.msg
                    ),
                    ..f
                };
                return Stepped::Failed(p, f, false);
            }
            Some(Err(f)) => match restart(rt, fd, &mut p, f) {
                Ok(()) => {
                    p.want = libc::POLLOUT;
                    continue;
                }
                Err(f) => return Stepped::Failed(p, f, false),
            },
            // The panic hook logged the one line; this connection fails, nothing else.
            None => return Stepped::Failed(p, Failure::new(libc::EIO, "internal error"), true),
        }
    }
}

/// What [`step`] found in the socket's slot.
enum Found {
    /// No slot: finished by another thread, or a handshake nobody stepped in time.
    Missing,
    /// Another thread is stepping it: until when it waits at most.
    Busy(Instant),
    /// Taken out by a thread of the parent before this process forked: never coming back.
    Orphaned,
    /// The state, taken out: the slot's generation and the fds noted so far.
    Mine(Box<Pending>, u64, Fds),
}

/// Advances the handshake of `fd` as far as it goes without waiting. An fd with optimistic
/// data whose replies are still to be read (`Kind::ReplyPending`) is connected as far as the
/// program's waits, `connect` and `SO_ERROR` are concerned: `Done` (its first read goes
/// through [`gate_read`]).
pub fn step(fd: c_int) -> Progress {
    step_in(fd, false, None)
}

/// [`step`] by the blocking driver, in the `connect` call that started the handshake on the
/// socket `ino` ([`start_quiet`]'s answer): the fd table's entry still says the fd is
/// handshaking (a close through libc would have removed it), so the socket is not asked
/// for its inode again.
pub fn step_started(fd: c_int, ino: u64) -> Progress {
    step_in(fd, false, Some(ino))
}

/// [`step`]; `replies`: an fd with optimistic data is stepped too (reading the replies).
fn step_in(fd: c_int, replies: bool, known: Option<u64>) -> Progress {
    match fdtable::kind(fd) {
        Some(Kind::Handshaking) => {}
        Some(Kind::ReplyPending) if replies => {}
        Some(Kind::ReplyPending) => return Progress::Done,
        Some(Kind::HandshakeFailed) => {
            return Progress::Failed(fdtable::failed_errno(fd).unwrap_or(libc::EIO))
        }
        _ => return Progress::NotOurs,
    }
    let Some(ino) = known.or_else(|| inode(fd)) else {
        return Progress::NotOurs;
    };
    let forks = FORKS.load(Ordering::Relaxed);
    let found = {
        let mut g = PENDING.lock();
        match g.as_mut().and_then(|m| m.get_mut(&ino)) {
            None => Found::Missing,
            Some(sl) => {
                sl.fds.add(fd);
                match sl.state.take() {
                    Some(p) => {
                        sl.taken_in = forks;
                        Found::Mine(p, sl.gen, sl.fds)
                    }
                    None if sl.taken_in != forks => Found::Orphaned,
                    None => Found::Busy(sl.deadline),
                }
            }
        }
    };
    let rt = runtime::get();
    let (progress, outcome) = match found {
        Found::Busy(deadline) => {
            // Poll the socket for nothing (errors only) a millisecond, then look again.
            let again = (Instant::now() + BUSY_WAIT).min(deadline);
            return Progress::Running {
                want: 0,
                deadline: again,
                q: -1,
            };
        }
        Found::Orphaned => {
            // The parent goes on with the handshake on the socket both share: the child's fd
            // fails (closed: nothing of the child's is sent), the socket is left alone.
            fdtable::handshake_failed(fd, libc::EIO);
            crate::sys::error::warn_once(format_args!(
                "connect fd {fd}: the proxy handshake was in progress in the parent when this \
                 process forked; the connection fails here"
            ));
            return Progress::Failed(libc::EIO);
        }
        Found::Missing => match fdtable::kind(fd) {
            Some(Kind::ProxiedTcp) => return Progress::Done,
            Some(Kind::HandshakeFailed) => {
                return Progress::Failed(fdtable::failed_errno(fd).unwrap_or(libc::EIO))
            }
            Some(Kind::Handshaking) => {
                // A handshaking fd without state: it outlived its deadline unseen. Fail
                // closed.
                let f = Failure::new(libc::ETIMEDOUT, "timed out (the handshake was abandoned)");
                let o = complete_failed(fd, ino, None, &Fds::one(fd), f, false);
                (Progress::Failed(libc::ETIMEDOUT), Some(o))
            }
            Some(Kind::ReplyPending) => {
                // Optimistic data whose replies nobody can read any more: fail closed.
                let f = Failure::new(
                    libc::ECONNRESET,
                    "the proxy's reply was abandoned (optimistic data)",
                );
                let o = complete_failed(fd, ino, None, &Fds::one(fd), f, false);
                (Progress::Failed(libc::ECONNRESET), Some(o))
            }
            _ => return Progress::NotOurs,
        },
        Found::Mine(p, gen, fds) => match drive_state(rt, fd, p) {
            Stepped::Want(p) => {
                let (want, deadline) = (p.want, p.deadline);
                let q = {
                    let mut g = PENDING.lock();
                    match g.as_mut().and_then(|m| m.get_mut(&ino)) {
                        Some(sl) if sl.gen == gen => {
                            sl.deadline = deadline;
                            sl.state = Some(p);
                            Some(sl.q)
                        }
                        // Abandoned meanwhile (`abandon` removed the slot): `p` is dropped
                        // below, with the lock released.
                        _ => None,
                    }
                };
                match q {
                    Some(q) => (Progress::Running { want, deadline, q }, None),
                    None => (Progress::NotOurs, None),
                }
            }
            Stepped::Sent(mut p) => {
                // The program's waits see the socket itself from now on (connected, writable),
                // and its fds become ReplyPending; the state goes back to read the replies.
                let fds = remove_fds(ino, gen).unwrap_or(fds);
                super::evreg::done(std::mem::replace(&mut p.ev, 0), false);
                for f in live_fds(&fds, ino, fd) {
                    fdtable::reply_pending(f);
                }
                log::debug!(
                    "connect fd {fd} to {}: greeting and request sent (optimistic data); the \
                     replies are read before the first read",
                    p.target
                );
                let deadline = p.deadline;
                let left = {
                    let mut g = PENDING.lock();
                    match g.as_mut().and_then(|m| m.get_mut(&ino)) {
                        Some(sl) if sl.gen == gen => {
                            sl.deadline = deadline;
                            sl.ev = 0;
                            sl.q = -1;
                            sl.state = Some(p);
                            None
                        }
                        // Abandoned meanwhile: dropped below, with the lock released (the
                        // first read then fails closed).
                        _ => Some(p),
                    }
                };
                drop(left);
                (Progress::Done, None)
            }
            Stepped::Done(p, reply) => {
                // The fd table first, the slot after: a thread that finds no slot sees the
                // fd connected, never a handshake without state.
                let fds = remove_fds(ino, gen).unwrap_or(fds);
                let o = complete_ok(fd, ino, p, &fds, reply);
                drop(remove(ino, Some(gen)));
                (Progress::Done, Some(o))
            }
            Stepped::Failed(p, f, internal) => {
                let errno = f.errno;
                let fds = remove_fds(ino, gen).unwrap_or(fds);
                let o = complete_failed(fd, ino, Some(p), &fds, f, internal);
                drop(remove(ino, Some(gen)));
                (Progress::Failed(errno), Some(o))
            }
        },
    };
    if let Some(o) = outcome {
        o.report();
    }
    progress
}

/// The fds noted in slot `ino` (generation `gen`), dups made while it was being stepped
/// included.
fn remove_fds(ino: u64, gen: u64) -> Option<Fds> {
    let g = PENDING.lock();
    g.as_ref()?
        .get(&ino)
        .filter(|sl| sl.gen == gen)
        .map(|sl| sl.fds)
}

/// Waits in `poll` until `fd` has `want` or `deadline` has passed.
fn wait_for(fd: c_int, want: c_short, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = (left.as_millis() + 1).min(i32::MAX as u128) as c_int;
    let mut p = libc::pollfd {
        fd,
        events: want,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    unsafe { real::poll(&mut p, 1, ms) };
}

/// Finishes the handshake of `fd` now, waiting (in `poll`) until its deadline at most.
pub fn finish(fd: c_int) -> Result<(), c_int> {
    loop {
        match step(fd) {
            Progress::NotOurs | Progress::Done => return Ok(()),
            Progress::Failed(e) => return Err(e),
            Progress::Running { want, deadline, .. } => {
                wait_for(fd, want, deadline);
            }
        }
    }
}

/// For the data hooks: finishes a running handshake first; reports a failed one (once).
/// False: the call fails with errno set.
#[inline]
pub fn gate(fd: c_int) -> bool {
    fdtable::none_handshaking() || gate_slow(fd)
}

#[cold]
#[inline(never)]
fn gate_slow(fd: c_int) -> bool {
    // From a signal handler that interrupted proxify on this thread (sys::guard::hook) the
    // handshake cannot be stepped (its state is behind a lock): not ready yet.
    hook(
        || gate_kind(fd, false),
        false,
        libc::EIO,
        || gate_kind(fd, true),
    )
}

/// The gate for `fd`'s kind: a running handshake is finished first (`step`) or reported not
/// ready (EAGAIN); a failed one reports its errno once.
fn gate_kind(fd: c_int, step: bool) -> bool {
    match fdtable::kind(fd) {
        Some(Kind::Handshaking) if !step => {
            set_errno(libc::EAGAIN);
            false
        }
        Some(Kind::Handshaking) => match finish(fd) {
            Ok(()) => true,
            Err(e) => {
                set_errno(fdtable::take_failure(fd).unwrap_or(e));
                false
            }
        },
        Some(Kind::HandshakeFailed) => match fdtable::take_failure(fd) {
            Some(e) => {
                set_errno(e);
                false
            }
            None => true,
        },
        // Optimistic data: a write goes straight behind the request, but replies already
        // there are read first (never waiting): a refusal that came back (or a reset) is this
        // write's ECONNRESET, with its warning line, rather than the kernel's bare error.
        Some(Kind::ReplyPending) if step => match step_in(fd, true, None) {
            Progress::Failed(e) => {
                set_errno(fdtable::take_failure(fd).unwrap_or(e));
                false
            }
            _ => true,
        },
        _ => true,
    }
}

/// For the read hooks (read, readv, recv, recvfrom, recvmsg, recvmmsg): [`gate`], and for an
/// fd with optimistic data whose proxy replies are not read yet, reads them first (never a
/// byte beyond them). A blocking read waits for them until the handshake's deadline; a
/// non-blocking one (`O_NONBLOCK` or `MSG_DONTWAIT` in `flags`) fails with EAGAIN while they
/// are incomplete. A failed reply, EOF or the deadline: ECONNRESET (the socket disconnected,
/// the one warning line written). False: the call fails with errno set.
#[inline]
pub fn gate_read(fd: c_int, flags: c_int) -> bool {
    fdtable::none_handshaking() || gate_read_slow(fd, flags)
}

#[cold]
#[inline(never)]
fn gate_read_slow(fd: c_int, flags: c_int) -> bool {
    hook(
        || match fdtable::kind(fd) {
            // From a signal handler that interrupted proxify: the replies cannot be read here.
            Some(Kind::ReplyPending) => {
                set_errno(libc::EAGAIN);
                false
            }
            _ => gate_kind(fd, false),
        },
        false,
        libc::EIO,
        || match fdtable::kind(fd) {
            Some(Kind::ReplyPending) => read_replies(fd, flags & libc::MSG_DONTWAIT != 0),
            _ => gate_kind(fd, true),
        },
    )
}

/// Reads the proxy's replies on an fd with optimistic data (see [`gate_read`]).
fn read_replies(fd: c_int, dontwait: bool) -> bool {
    let nonblocking = dontwait || socket::is_nonblocking(fd);
    loop {
        match step_in(fd, true, None) {
            Progress::NotOurs | Progress::Done => return true,
            Progress::Failed(e) => {
                set_errno(fdtable::take_failure(fd).unwrap_or(e));
                return false;
            }
            Progress::Running { .. } if nonblocking => {
                set_errno(libc::EAGAIN);
                return false;
            }
            Progress::Running { want, deadline, .. } => {
                wait_for(fd, want, deadline);
            }
        }
    }
}

/// `SO_ERROR` of a handshaking or failed fd (finishing a running handshake first), reported
/// once; None for any other fd.
pub fn pending_error(fd: c_int) -> Option<c_int> {
    match fdtable::kind(fd)? {
        Kind::Handshaking => Some(match finish(fd) {
            Ok(()) => 0,
            Err(e) => fdtable::take_failure(fd).unwrap_or(e),
        }),
        Kind::HandshakeFailed => Some(fdtable::take_failure(fd).unwrap_or(0)),
        _ => None,
    }
}

/// `connect` again on a handshaking or failed fd: the errno to return (EALREADY while it
/// runs, EISCONN once done, the failure once), or None for any other fd.
pub fn connect_again(fd: c_int) -> Option<c_int> {
    match fdtable::kind(fd)? {
        Kind::Handshaking => Some(match step(fd) {
            Progress::Running { .. } => libc::EALREADY,
            Progress::Done | Progress::NotOurs => libc::EISCONN,
            Progress::Failed(e) => fdtable::take_failure(fd).unwrap_or(e),
        }),
        Kind::HandshakeFailed => Some(fdtable::take_failure(fd).unwrap_or(libc::ECONNABORTED)),
        _ => None,
    }
}

/// `newfd` is a dup of a handshaking fd: it finishes with the others.
pub fn note_dup(newfd: c_int) {
    let Some(ino) = inode(newfd) else {
        return;
    };
    if let Some(sl) = PENDING.lock().as_mut().and_then(|m| m.get_mut(&ino)) {
        sl.fds.add(newfd);
    }
}

/// The readiness fds of the running handshake of `fd`, if any (for `epoll_ctl`).
pub fn hs_of(fd: c_int) -> Option<u64> {
    if fdtable::kind(fd) != Some(Kind::Handshaking) {
        return None;
    }
    let ino = inode(fd)?;
    PENDING
        .lock()
        .as_ref()?
        .get(&ino)
        .map(|sl| sl.ev)
        .filter(|&ev| ev != 0)
}
