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
//! under a fork-safe lock held only for non-blocking work (`MSG_DONTWAIT` sends and reads,
//! `epoll_ctl`). `close` never touches it: it only clears the fd-table slot, and every use
//! checks the slot first; entries of closed fds are dropped once long past their deadline.
//!
//! epoll, poll and select: each handshake has a readiness fd (`evreg.rs`) that is readable
//! exactly when the handshake can move, has timed out or is over; it stands in for the socket
//! in the program's epoll sets (registrations made before `connect` included) and in its
//! poll/select calls, so the program sleeps while the proxy is silent and sees the socket
//! writable (or failed) when a direct connect would be.

use super::drive;
use crate::state::fdtable::{self, Entry, Kind};
use crate::state::runtime::{self, Fault, Runtime};
use crate::sys::error::{errno, strerror, Failure};
use crate::sys::guard::{hook, set_errno};
use crate::sys::lock::ForkSafeMutex;
use crate::sys::socket::{self, so_error};
use crate::sys::{real, sockaddr as sa};
use libc::{c_int, c_short};
use proxify_core::chain::Handshake;
use proxify_core::config::Chain;
use proxify_core::hops::Attempts;
use proxify_core::socks::{Command, Reply, TargetAddr};
use proxify_core::url::ProxyUrl;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An entry nobody looked at for this long after its deadline belongs to a closed fd.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// One running handshake.
struct Pending {
    hs: Handshake,
    /// The TCP connect to the first hop is not confirmed yet.
    connecting: bool,
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
    target: TargetAddr,
    shown: String,
    via: String,
    /// The fds known to refer to this socket (the first, dups, ones seen by a step).
    fds: Vec<c_int>,
    /// When the connect began (the trace's handshake time; only when tracing).
    started: Option<Instant>,
    /// Its readiness fds (`evreg`), and the one poll/select wait on.
    ev: u64,
    q: c_int,
}

static PENDING: ForkSafeMutex<Option<HashMap<u64, Pending>>> = ForkSafeMutex::new(None);

pub(crate) fn fork_prepare() {
    PENDING.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { PENDING.raw_unlock() }
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
}

/// What to log (and note) once the lock is released.
enum Outcome {
    Connected {
        fd: c_int,
        chain: &'static Chain,
        started: Option<Instant>,
        shown: String,
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
pub fn trace_outcome(shown: &str, chain: Option<&Chain>, errno: c_int, started: Option<Instant>) {
    use crate::sys::trace;
    if !trace::on() {
        return;
    }
    trace::write(&trace::Event {
        ev: trace::Ev::Outcome,
        call: "connect",
        dest: &shown,
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
                shown,
                target,
                bound,
                reply_bound,
            } => {
                trace_outcome(&shown, Some(chain), 0, started);
                crate::engine::bind::note_connection(&target, bound);
                log::debug!(
                    "connect fd {fd} to {shown}: connected (proxy bound {})",
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
fn begin(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    target: &TargetAddr,
    hops: &[(usize, ProxyUrl)],
) -> Result<(Handshake, SocketAddr), Failure> {
    let urls: Vec<ProxyUrl> = hops.iter().map(|(_, u)| u.clone()).collect();
    let first = urls
        .first()
        .ok_or_else(|| Failure::new(libc::EACCES, "the chain has no proxy"))?;
    let addrs = rt.hop_addrs(first).map_err(|e| Failure {
        dead_hop: Some(0),
        ..Failure::new(libc::EHOSTUNREACH, e)
    })?;
    let proxy = drive::pick_proxy_addr(fd, domain, &addrs)?;
    let hs = Handshake::new(&urls, Command::Connect, target.clone())?;
    let (st, len) = sa::to_storage(&proxy);
    // A blocking socket (engine::connect) is made non-blocking for this one call only, so the
    // TCP connect to the first hop starts without waiting; its flags are put back at once,
    // and only if the fd is still the same socket (another thread may have closed it).
    let ino = inode(fd);
    // SAFETY: fcntl F_GETFL/F_SETFL on the program's fd (the socket it asked to connect).
    let flags = unsafe { real::fcntl(fd, libc::F_GETFL, 0) };
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
    Ok((hs, proxy))
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
    shown: String,
    via: String,
) -> c_int {
    match try_start(rt, fd, domain, dest, target, chain, &shown, &via) {
        Ok(()) => {
            // Send the greeting now if the proxy answered the TCP connect at once.
            let _ = step(fd);
            set_errno(libc::EINPROGRESS);
        }
        Err(f) => {
            trace_outcome(&shown, Some(chain), f.errno, None);
            crate::sys::error::warn_once(format_args!(
                "cannot connect to {shown} through {via}: {}",
                f.msg
            ));
            set_errno(f.errno);
        }
    }
    -1
}

/// Abandons the handshake of `fd` (the blocking driver gave up: SO_SNDTIMEO): its state is
/// dropped, the socket disconnected, the fd forgotten.
pub fn abandon(fd: c_int) {
    if let Some(ino) = inode(fd) {
        let p = PENDING.lock().as_mut().and_then(|m| m.remove(&ino));
        if let Some(p) = p {
            super::evreg::done(p.ev, true);
        }
    }
    disconnect(fd);
    fdtable::clear(fd);
}

/// Starts a proxied connect of `fd` (blocking or not) without stepping it; the caller drives
/// it with [`step`]. The error is not logged.
#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
pub fn start_quiet(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    shown: &str,
    via: &str,
) -> Result<(), Failure> {
    try_start(rt, fd, domain, dest, target, chain, shown, via)
}

#[allow(clippy::too_many_arguments)] // the decision's parts, passed as they are
fn try_start(
    rt: &Runtime,
    fd: c_int,
    domain: c_int,
    dest: SocketAddr,
    target: TargetAddr,
    chain: &'static Chain,
    shown: &str,
    via: &str,
) -> Result<(), Failure> {
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, rt.config_error().to_string()))?;
    let mut domain = domain;
    let mut replaced = None;
    loop {
        let ino = inode(fd).ok_or_else(|| {
            let e = errno();
            Failure::new(e, format!("fstat failed: {}", strerror(e)))
        })?;
        // Before the connect: the program's registrations of the socket move to our readiness fd.
        let ev = super::evreg::open(fd, ino)
            .map_err(|e| Failure::new(e, format!("cannot wait for the proxy: {}", strerror(e))))?;
        let r = start_hops(
            rt,
            fd,
            domain,
            dest,
            target.clone(),
            shown,
            via,
            cfg,
            chain,
            ino,
            ev,
        );
        match r {
            Ok(()) => {
                if let Some(program) = replaced {
                    fdtable::set_program_family(fd, program);
                }
                return Ok(());
            }
            Err(f) => {
                super::evreg::abort(ev);
                let other = match replaced {
                    None if f.errno == libc::EAFNOSUPPORT => other_family(rt, fd, domain, chain),
                    _ => None,
                };
                let Some(family) = other else {
                    return Err(f);
                };
                // The proxy is reachable only in the other family (an IPv6-only proxy for an
                // AF_INET socket, an IPv4 one for an IPV6_V6ONLY socket): the program's socket
                // is replaced by one that can reach it, under the same fd number.
                super::evreg::replacing(fd, || socket::replace_family(fd, family))?;
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
    target: TargetAddr,
    shown: &str,
    via: &str,
    cfg: &proxify_core::config::Config,
    chain: &'static Chain,
    ino: u64,
    ev: u64,
) -> Result<(), Failure> {
    let started = crate::sys::trace::on().then(Instant::now);
    let mut attempts = Attempts::new(chain);
    let (hops, hs, proxy) = loop {
        let hops = rt.select_hops(chain);
        match begin(rt, fd, domain, &target, &hops) {
            Ok((hs, proxy)) => break (hops, hs, proxy),
            Err(f) => {
                disconnect(fd);
                if !skip_dead(rt, chain, &hops, &mut attempts, &f) {
                    return Err(f);
                }
            }
        }
    };
    let p = Pending {
        hs,
        connecting: true,
        want: libc::POLLOUT,
        deadline: Instant::now() + cfg.connect_timeout,
        handshake_timeout: cfg.handshake_timeout,
        connect_timeout: cfg.connect_timeout,
        proxy,
        hops,
        attempts,
        chain,
        domain,
        target,
        shown: shown.to_string(),
        via: via.to_string(),
        fds: vec![fd],
        started,
        ev,
        q: super::evreg::q_of(ev),
    };
    super::evreg::arm(ev, libc::POLLOUT, p.deadline);
    {
        let mut g = PENDING.lock();
        let m = g.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        m.retain(|_, p| {
            let keep = p.deadline + STALE_AFTER > now;
            if !keep {
                super::evreg::done(p.ev, true);
            }
            keep
        });
        // Replaces any stale entry of this socket (a reconnect after a failure).
        m.insert(ino, p);
    }
    let entry = Entry {
        kind: Kind::Handshaking,
        peer: Some(dest),
        relay: None,
        ctrl: -1,
    };
    if !fdtable::set(fd, entry) {
        PENDING.lock().as_mut().map(|m| m.remove(&ino));
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
            p.connecting = false;
            p.deadline = Instant::now() + p.handshake_timeout;
            if rt.fault == Fault::PanicConnect {
                panic!("injected fault (PROXIFY_TEST_FAULT=panic-connect)");
            }
        }
        return match drive::advance(fd, &mut p.hs)? {
            drive::Progress::Done(r) => Ok(Step::Done(r)),
            drive::Progress::Wait(ev, what) => want(p, ev, || what.into()),
        };
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
        match begin(rt, fd, p.domain, &p.target, &hops) {
            Ok((hs, proxy)) => {
                p.hs = hs;
                p.proxy = proxy;
                p.hops = hops;
                p.connecting = true;
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

/// The fds of entry `ino` that are still handshaking on that socket.
fn live_fds(p: &Pending, ino: u64, also: c_int) -> Vec<c_int> {
    let mut v: Vec<c_int> = Vec::with_capacity(p.fds.len() + 1);
    for &f in p.fds.iter().chain(std::iter::once(&also)) {
        if f >= 0
            && !v.contains(&f)
            && fdtable::kind(f) == Some(Kind::Handshaking)
            && inode(f) == Some(ino)
        {
            v.push(f);
        }
    }
    v
}

fn complete_ok(fd: c_int, ino: u64, p: Pending, reply: Reply) -> (Progress, Option<Outcome>) {
    let bound = match reply.bound {
        TargetAddr::Ip(b) if !b.ip().is_unspecified() => sa::for_family(b, p.domain),
        _ => None,
    };
    let fds = live_fds(&p, ino, fd);
    // Readiness first: the program's epoll sets take their registrations back.
    super::evreg::done(p.ev, false);
    for f in fds {
        fdtable::handshake_done(f, bound);
    }
    let o = Outcome::Connected {
        fd,
        chain: p.chain,
        started: p.started,
        shown: p.shown,
        target: p.target,
        bound,
        reply_bound: reply.bound,
    };
    (Progress::Done, Some(o))
}

fn complete_failed(
    fd: c_int,
    ino: u64,
    p: Option<Pending>,
    mut f: Failure,
    internal: bool,
) -> (Progress, Option<Outcome>) {
    disconnect(fd);
    // A rejected username/password: say where it came from (the fix is there).
    if let (Some(p), Some(i)) = (&p, f.auth_hop) {
        if let Some((idx, _)) = p.hops.get(i) {
            let from = runtime::get().cred_from(p.chain, *idx);
            f.msg = format!("{}; the credentials come from {from}", f.msg);
        }
    }
    let (fds, o) = match p {
        Some(p) => {
            let fds = live_fds(&p, ino, fd);
            super::evreg::done(p.ev, true);
            let o = Outcome::Failed {
                chain: Some(p.chain),
                started: p.started,
                errno: f.errno,
                shown: p.shown,
                via: p.via,
                msg: f.msg,
                internal,
            };
            (fds, o)
        }
        None => (
            vec![fd],
            Outcome::Failed {
                chain: None,
                started: None,
                errno: f.errno,
                shown: match fdtable::get(fd).and_then(|e| e.peer) {
                    Some(a) => a.to_string(),
                    None => format!("fd {fd}'s destination"),
                },
                via: "the proxy".into(),
                msg: f.msg,
                internal,
            },
        ),
    };
    for x in fds {
        fdtable::handshake_failed(x, f.errno);
    }
    (Progress::Failed(f.errno), Some(o))
}

/// One step of entry `ino` through `fd`, under the lock.
fn step_locked(m: &mut HashMap<u64, Pending>, ino: u64, fd: c_int) -> (Progress, Option<Outcome>) {
    let rt = runtime::get();
    let Some(p) = m.get_mut(&ino) else {
        // Finished by another fd or thread meanwhile (its slot changed under this lock)?
        match fdtable::kind(fd) {
            Some(Kind::Handshaking) => {}
            Some(Kind::ProxiedTcp) => return (Progress::Done, None),
            Some(Kind::HandshakeFailed) => {
                let e = fdtable::failed_errno(fd).unwrap_or(libc::EIO);
                return (Progress::Failed(e), None);
            }
            _ => return (Progress::NotOurs, None),
        }
        // A handshaking fd without state: it outlived its deadline unseen. Fail closed.
        let f = Failure::new(libc::ETIMEDOUT, "timed out (the handshake was abandoned)");
        return complete_failed(fd, ino, None, f, false);
    };
    if !p.fds.contains(&fd) {
        p.fds.push(fd);
    }
    loop {
        match crate::sys::guard::caught(|| advance(rt, fd, p)) {
            Some(Ok(Step::Want(w))) => {
                p.want = w;
                super::evreg::arm(p.ev, w, p.deadline);
                let (deadline, q) = (p.deadline, p.q);
                return (
                    Progress::Running {
                        want: w,
                        deadline,
                        q,
                    },
                    None,
                );
            }
            Some(Ok(Step::Done(reply))) => {
                let p = m.remove(&ino);
                return match p {
                    Some(p) => complete_ok(fd, ino, p, reply),
                    None => (Progress::Done, None),
                };
            }
            Some(Err(f)) => match restart(rt, fd, p, f) {
                Ok(()) => {
                    p.want = libc::POLLOUT;
                    continue;
                }
                Err(f) => {
                    let p = m.remove(&ino);
                    return complete_failed(fd, ino, p, f, false);
                }
            },
            None => {
                // The panic hook logged the one line; this connection fails, nothing else.
                let p = m.remove(&ino);
                let f = Failure::new(libc::EIO, "internal error");
                return complete_failed(fd, ino, p, f, true);
            }
        }
    }
}

/// Advances the handshake of `fd` as far as it goes without waiting.
pub fn step(fd: c_int) -> Progress {
    match fdtable::kind(fd) {
        Some(Kind::Handshaking) => {}
        Some(Kind::HandshakeFailed) => {
            return Progress::Failed(fdtable::failed_errno(fd).unwrap_or(libc::EIO))
        }
        _ => return Progress::NotOurs,
    }
    let Some(ino) = inode(fd) else {
        return Progress::NotOurs;
    };
    let (progress, outcome) = {
        let mut g = PENDING.lock();
        step_locked(g.get_or_insert_with(HashMap::new), ino, fd)
    };
    if let Some(o) = outcome {
        o.report();
    }
    progress
}

/// Finishes the handshake of `fd` now, waiting (in `poll`) until its deadline at most.
pub fn finish(fd: c_int) -> Result<(), c_int> {
    loop {
        match step(fd) {
            Progress::NotOurs | Progress::Done => return Ok(()),
            Progress::Failed(e) => return Err(e),
            Progress::Running { want, deadline, .. } => {
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
        _ => true,
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
    if let Some(p) = PENDING.lock().as_mut().and_then(|m| m.get_mut(&ino)) {
        if !p.fds.contains(&newfd) {
            p.fds.push(newfd);
        }
    }
}

/// The readiness fds of the running handshake of `fd`, if any (for `epoll_ctl`).
pub fn hs_of(fd: c_int) -> Option<u64> {
    if fdtable::kind(fd) != Some(Kind::Handshaking) {
        return None;
    }
    let ino = inode(fd)?;
    PENDING.lock().as_ref()?.get(&ino).map(|p| p.ev)
}
