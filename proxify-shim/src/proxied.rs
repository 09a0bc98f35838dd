//! The proxied TCP connect: the program's own socket is connected to the proxy (never a fresh
//! socket dup2-ed over it, so its options, flags and close-on-exec stay), then the sans-IO SOCKS
//! client from proxify-core is driven over it with a deadline.

use crate::decide;
use crate::real;
use crate::runtime::Runtime;
use crate::sockaddr;
use libc::{c_int, c_void};
use proxify_core::chain::{Handshake, ReadMode, State as HsState};
use proxify_core::config::ChainMode;
use proxify_core::socks::{Command, Reply, TargetAddr};
use proxify_core::url::ProxyUrl;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use proxify_core::chain::Failure;

pub fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

pub fn strerror(e: c_int) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

pub fn sockopt_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut v as *mut c_int as *mut c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

/// SO_TYPE and SO_PROTOCOL of a socket.
pub fn socket_type(fd: c_int) -> Option<(c_int, c_int)> {
    Some((
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).unwrap_or(0),
    ))
}

/// Picks the proxy address this socket can reach: same family, or IPv4-mapped on a dual-stack
/// AF_INET6 socket.
pub fn pick_proxy_addr(
    fd: c_int,
    family: c_int,
    addrs: &[SocketAddr],
) -> Result<SocketAddr, Failure> {
    let v6only = family == libc::AF_INET6
        && sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0) != 0;
    let native = addrs
        .iter()
        .find(|a| (family == libc::AF_INET) == a.is_ipv4())
        .copied();
    let mapped = || {
        if family == libc::AF_INET6 && !v6only {
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .and_then(|a| sockaddr::for_family(*a, family))
        } else {
            None
        }
    };
    native.or_else(mapped).ok_or_else(|| {
        Failure::new(
            libc::EAFNOSUPPORT,
            format!(
                "the proxy has no {} address this socket can use",
                if family == libc::AF_INET {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
        )
    })
}

fn fcntl(fd: c_int, cmd: c_int, arg: c_int) -> c_int {
    unsafe { real::fcntl(fd, cmd, arg as libc::c_ulong) }
}

/// Waits for `events` on `fd` until `deadline`.
/// Returns the events that came (revents). `what` (for messages) is only built on failure.
fn wait(
    fd: c_int,
    events: libc::c_short,
    deadline: Instant,
    what: impl Fn() -> String,
) -> Result<libc::c_short, Failure> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(
                libc::ETIMEDOUT,
                format!("timed out {}", what()),
            ));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as c_int;
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let rc = unsafe { real::poll(&mut p, 1, ms) };
        if rc > 0 {
            return Ok(p.revents);
        }
        if rc < 0 {
            let e = errno();
            if e != libc::EINTR {
                return Err(Failure::new(
                    e,
                    format!("poll failed {}: {}", what(), strerror(e)),
                ));
            }
        }
    }
}

/// TCP connect of the program's socket to the proxy, bounded by `timeout`.
pub fn connect_proxy(fd: c_int, proxy: SocketAddr, timeout: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    let (st, len) = sockaddr::to_storage(&proxy);
    let rc = unsafe { real::connect(fd, &st as *const _ as *const libc::sockaddr, len) };
    if rc == 0 {
        return Ok(());
    }
    let e = errno();
    if e != libc::EINPROGRESS && e != libc::EINTR && e != libc::EALREADY {
        return Err(Failure::new(
            e,
            format!("cannot reach proxy {proxy}: {}", strerror(e)),
        ));
    }
    let revents = wait(fd, libc::POLLOUT, deadline, || {
        format!("connecting to proxy {proxy}")
    })?;
    // Writable without an error or hang-up: connected (no SO_ERROR call needed).
    if revents & (libc::POLLERR | libc::POLLHUP) == 0 {
        return Ok(());
    }
    match sockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Some(0) => Ok(()),
        Some(e) => Err(Failure::new(
            e,
            format!("cannot reach proxy {proxy}: {}", strerror(e)),
        )),
        None => {
            let e = errno();
            Err(Failure::new(
                e,
                format!("cannot reach proxy {proxy}: {}", strerror(e)),
            ))
        }
    }
}

/// What a handshake needs after [`advance`] went as far as it could without waiting.
pub enum Progress {
    Done(Reply),
    /// Wait for these poll events, doing what the text says (for a timeout message).
    Wait(libc::c_short, &'static str),
}

/// Moves `hs` over `fd` as far as it goes without waiting: every send and receive is
/// MSG_DONTWAIT. Reads whole protocol messages (or peeks and consumes exactly the reply),
/// never application data. Shared by the blocking driver ([`drive`]) and the non-blocking one
/// (`nbconnect.rs`).
pub fn advance(fd: c_int, hs: &mut Handshake) -> Result<Progress, Failure> {
    let mut buf = [0u8; 1024];
    loop {
        let mut sent = false;
        while !hs.pending_output().is_empty() {
            let out = hs.pending_output();
            let n = unsafe {
                real::send(
                    fd,
                    out.as_ptr() as *const c_void,
                    out.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                hs.consume_output(n as usize);
                sent = true;
                continue;
            }
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => return Ok(Progress::Wait(libc::POLLOUT, "sending to the proxy")),
                e => {
                    return Err(Failure::new(
                        e,
                        format!("lost the proxy while sending: {}", strerror(e)),
                    ))
                }
            }
        }
        match hs.state() {
            HsState::Done(r) => return Ok(Progress::Done(r.clone())),
            HsState::Failed(f) => {
                return Err(Failure {
                    msg: f.msg.clone(),
                    ..*f
                })
            }
            HsState::Running => {}
        }
        if sent && hs.read_mode() != ReadMode::Nothing {
            // The reply to what was just sent cannot be there yet: wait for it rather than
            // spend a read on EAGAIN.
            return Ok(Progress::Wait(
                libc::POLLIN,
                "waiting for the proxy's reply",
            ));
        }
        let (want, peek) = match hs.read_mode() {
            ReadMode::Exact(n) => (n.min(buf.len()), false),
            ReadMode::Peek(n) => (n.min(buf.len()), true),
            ReadMode::Nothing => {
                return Err(Failure::new(
                    libc::EIO,
                    "proxy handshake stalled (internal error)",
                ))
            }
        };
        let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
        let n = unsafe { real::recv(fd, buf.as_mut_ptr() as *mut c_void, want, flags) };
        if n > 0 {
            if peek {
                let take = hs.feed_peeked(&buf[..n as usize]);
                if take > 0 {
                    // Those bytes are queued already: consume exactly them.
                    let got = unsafe {
                        real::recv(
                            fd,
                            buf.as_mut_ptr() as *mut c_void,
                            take,
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if got != take as isize {
                        return Err(Failure::new(
                            libc::EIO,
                            "proxy reply vanished while reading it",
                        ));
                    }
                }
            } else {
                hs.feed(&buf[..n as usize]);
            }
        } else if n == 0 {
            hs.eof();
        } else {
            match errno() {
                libc::EINTR => {}
                libc::EAGAIN => {
                    return Ok(Progress::Wait(
                        libc::POLLIN,
                        "waiting for the proxy's reply",
                    ))
                }
                e => {
                    return Err(Failure::new(
                        e,
                        format!("lost the proxy while reading its reply: {}", strerror(e)),
                    ))
                }
            }
        }
    }
}

/// Drives `hs` over `fd` (blocking or not: [`advance`] never blocks, waits are in poll) until
/// it is done, fails, or `deadline` passes.
pub fn drive(fd: c_int, hs: &mut Handshake, deadline: Instant) -> Result<Reply, Failure> {
    loop {
        match advance(fd, hs)? {
            Progress::Done(r) => return Ok(r),
            Progress::Wait(events, what) => {
                wait(fd, events, deadline, || what.to_string())?;
            }
        }
    }
}

/// The SOCKS request for `command` to `target` through `proxy`.
/// Connects the program's TCP socket `fd` (of `family`) to `target` through the proxy.
/// On failure the socket is disconnected again (it never stays connected to anything), and
/// its file status flags are as the program left them in every case.
pub fn connect(
    rt: &Runtime,
    fd: c_int,
    family: c_int,
    target: TargetAddr,
) -> Result<Reply, Failure> {
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, rt.config_error().to_string()))?;
    let chain = decide::chain_for(&target)
        .ok_or_else(|| Failure::new(libc::EACCES, "no chain for this destination"))?;
    // A dynamic chain retries without each hop it finds dead, at most once per hop.
    let mut tries = chain.hops.len().max(1);
    loop {
        let hops = rt.select_hops(chain);
        let urls: Vec<ProxyUrl> = hops.iter().map(|(_, u)| u.clone()).collect();
        let first = urls
            .first()
            .ok_or_else(|| Failure::new(libc::EACCES, "the chain has no proxy"))?;
        let addrs = rt.hop_addrs(first).map_err(|e| Failure {
            dead_hop: Some(0),
            ..Failure::new(libc::EHOSTUNREACH, e)
        });
        let result = addrs.and_then(|addrs| {
            let proxy_addr = pick_proxy_addr(fd, family, &addrs)?;
            let mut hs = Handshake::new(&urls, Command::Connect, target.clone())?;
            with_nonblocking(fd, || {
                connect_proxy(fd, proxy_addr, cfg.connect_timeout).map_err(|f| Failure {
                    dead_hop: Some(0),
                    ..f
                })?;
                if rt.fault == crate::runtime::Fault::PanicConnect {
                    panic!("injected fault (PROXIFY_TEST_FAULT=panic-connect)");
                }
                drive(fd, &mut hs, Instant::now() + cfg.handshake_timeout)
            })
        });
        match result {
            Err(f) if chain.mode == ChainMode::Dynamic && tries > 1 && hops.len() > 1 => {
                let Some((idx, url)) = f.dead_hop.and_then(|i| hops.get(i)) else {
                    return Err(f);
                };
                log::info!(
                    "dynamic chain {}: skipping dead hop {}: {}",
                    chain.name,
                    url.masked(),
                    f.msg
                );
                rt.mark_dead(chain, *idx);
                tries -= 1;
            }
            r => return r,
        }
    }
}

/// The single proxy a BIND or UDP ASSOCIATE for `target` goes through, and its addresses:
/// a chain cannot carry them, so a chain of more than one hop is refused.
pub fn single_hop(
    rt: &Runtime,
    target: &TargetAddr,
    what: &str,
) -> Result<(ProxyUrl, Vec<SocketAddr>), Failure> {
    if rt.config().is_none() {
        return Err(Failure::new(libc::EACCES, rt.config_error().to_string()));
    }
    let chain = decide::chain_for(target)
        .ok_or_else(|| Failure::new(libc::EACCES, "no chain for this destination"))?;
    let hops = rt.select_hops(chain);
    if hops.len() != 1 {
        return Err(Failure::new(
            libc::EOPNOTSUPP,
            format!(
                "{what} cannot go through a chain of {} proxies (chain {}): only through a single proxy",
                hops.len(),
                chain.name
            ),
        ));
    }
    let url = hops[0].1.clone();
    let addrs = rt
        .hop_addrs(&url)
        .map_err(|e| Failure::new(libc::EHOSTUNREACH, e))?;
    Ok((url, addrs))
}

/// Runs `f` with `fd` non-blocking, then puts the file status flags back as the program left
/// them. If `f` fails (or panics) the socket is disconnected again.
pub fn with_nonblocking<T>(
    fd: c_int,
    f: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let flags = fcntl(fd, libc::F_GETFL, 0);
    if flags < 0 {
        let e = errno();
        return Err(Failure::new(e, format!("fcntl failed: {}", strerror(e))));
    }
    let mut restore = Restore {
        fd,
        flags,
        blocking: flags & libc::O_NONBLOCK == 0,
        succeeded: false,
    };
    if restore.blocking && fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
        restore.blocking = false;
        let e = errno();
        return Err(Failure::new(e, format!("fcntl failed: {}", strerror(e))));
    }
    let r = f()?;
    restore.succeeded = true;
    Ok(r)
}

/// SO_DOMAIN of a socket (-1 if unknown).
pub fn socket_domain(fd: c_int) -> c_int {
    sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1)
}

/// Puts the socket back as the program left it, on every exit path (errors and panics too):
/// its file status flags, and, unless the handshake succeeded, no connection at all.
struct Restore {
    fd: c_int,
    flags: c_int,
    blocking: bool,
    succeeded: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if !self.succeeded {
            disconnect(self.fd);
        }
        if self.blocking {
            fcntl(self.fd, libc::F_SETFL, self.flags);
        }
    }
}

/// Dissolves whatever connection `fd` has (connect with AF_UNSPEC), so a failed proxied
/// connect never leaves the socket connected to the proxy.
pub fn disconnect(fd: c_int) {
    let sa = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    unsafe {
        real::connect(
            fd,
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}
