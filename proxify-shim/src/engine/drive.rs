//! What the engines share: the TCP connect to the first hop bounded by a deadline, and the
//! chain handshake from proxify-core driven over a socket, every send and receive
//! non-blocking ([`advance`]) with the waits in `poll` ([`drive`]).

use crate::state::runtime::Runtime;
use crate::sys::error::{errno, strerror, Failure};
use crate::sys::socket::sockopt_int;
use crate::sys::{real, sockaddr};
use libc::{c_int, c_void};
use proxify_core::chain::{Handshake, ReadMode, State as HsState};
use proxify_core::config::Chain;
use proxify_core::socks::Reply;
use proxify_core::url::ProxyUrl;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
        // SAFETY: one pollfd we own.
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
    // SAFETY: a valid sockaddr of `len` bytes from to_storage.
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
/// (`nbconnect`).
pub fn advance(fd: c_int, hs: &mut Handshake) -> Result<Progress, Failure> {
    let mut buf = [0u8; 1024];
    loop {
        let mut sent = false;
        while !hs.pending_output().is_empty() {
            let out = hs.pending_output();
            // SAFETY: `out` is the handshake's pending bytes, readable for its length.
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
        // SAFETY: buf is writable for `want` bytes (want <= buf.len()).
        let n = unsafe { real::recv(fd, buf.as_mut_ptr() as *mut c_void, want, flags) };
        if n > 0 {
            if peek {
                let take = hs.feed_peeked(&buf[..n as usize]);
                if take > 0 {
                    // Those bytes are queued already: consume exactly them.
                    // SAFETY: buf is writable for `take` bytes, which the peek just read into it.
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

/// The single proxy of `chain` a BIND or UDP ASSOCIATE goes through, and its addresses: a
/// chain cannot carry them, so a chain of more than one hop is refused.
pub fn single_hop(
    rt: &Runtime,
    chain: &Chain,
    what: &str,
) -> Result<(ProxyUrl, Vec<SocketAddr>), Failure> {
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

/// Sends all of `buf` on the non-blocking socket `fd` before `deadline` (data after a
/// handshake of ours, such as a DNS query forwarded through the proxy).
pub fn send_all(fd: c_int, buf: &[u8], deadline: Instant) -> Result<(), Failure> {
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: buf[at..] is readable for its length.
        let n = unsafe {
            real::send(
                fd,
                buf[at..].as_ptr() as *const c_void,
                buf.len() - at,
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            at += n as usize;
            continue;
        }
        let e = errno();
        match e {
            libc::EINTR => {}
            libc::EAGAIN => {
                wait(fd, libc::POLLOUT, deadline, || "sending".to_string())?;
            }
            _ => return Err(Failure::new(e, format!("send failed: {}", strerror(e)))),
        }
    }
    Ok(())
}

/// Receives what the non-blocking socket `fd` has (0 at the end of the stream), waiting until
/// `deadline` for it.
pub fn recv_some(fd: c_int, buf: &mut [u8], deadline: Instant) -> Result<usize, Failure> {
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { real::recv(fd, buf.as_mut_ptr() as *mut c_void, buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        match e {
            libc::EINTR => {}
            libc::EAGAIN => {
                wait(fd, libc::POLLIN, deadline, || "receiving".to_string())?;
            }
            _ => return Err(Failure::new(e, format!("recv failed: {}", strerror(e)))),
        }
    }
}

/// The proxy (or chain) a connection goes through, for messages.
pub fn via_of(c: &Chain) -> String {
    if c.hops.len() == 1 {
        c.hops[0].masked()
    } else {
        format!(
            "chain {} ({} proxies, {})",
            c.name,
            c.hops.len(),
            c.mode.as_str()
        )
    }
}
