//! One handshake through a proxy chain, as a sans-IO state machine over the per-hop clients
//! (SOCKS5, SOCKS4/4a, HTTP CONNECT). Shared by the shim's blocking and non-blocking engines
//! and by any other driver (a supervisor, the tests).
//!
//! Hop `i` is asked to CONNECT to hop `i + 1`; the last hop gets the program's command and
//! target. Drivers only move bytes: write [`Handshake::pending_output`], then read as
//! [`Handshake::read_mode`] says — an exact count (SOCKS replies have known lengths) or a peek
//! (an HTTP reply ends with an empty line: the driver peeks, the client says how many bytes
//! were its own, and the driver consumes exactly those). Either way no byte of the
//! destination's data is ever taken.
//!
//! States ([`State`]): `Running` until the last hop's reply (`Done`) or the first failure
//! (`Failed`, with the errno the program sees, a one-line reason and the hop it proved dead).

use crate::http;
use crate::socks::{self, Command, Reply, Request, TargetAddr};
use crate::url::{Host, ProxyUrl, Scheme};
use std::net::SocketAddr;

/// A failed proxied call: the errno the program sees and the reason for the one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub errno: i32,
    pub msg: String,
    /// The hop (index in the hops used) that proved dead, when the failure says so: a
    /// dynamic chain skips it and tries again.
    pub dead_hop: Option<usize>,
    /// The hop (index in the hops used) that rejected the username/password it was given
    /// (SOCKS5 RFC 1929 failure, HTTP 407 after credentials): the caller's line then says
    /// where those credentials came from.
    pub auth_hop: Option<usize>,
}

impl Failure {
    pub fn new(errno: i32, msg: impl Into<String>) -> Self {
        Failure {
            errno,
            msg: msg.into(),
            dead_hop: None,
            auth_hop: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// The SOCKS request for one hop, with the hop's credentials and pipelining choice.
pub fn request(proxy: &ProxyUrl, command: Command, target: TargetAddr) -> Request {
    Request {
        version: proxy.scheme.version(),
        command,
        target,
        credentials: proxy.credentials(),
        pipeline: proxy.pipeline,
    }
}

enum Hop {
    Socks(socks::Client),
    Http(http::Client),
}

/// How the driver reads next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Nothing to read (output pending, or over).
    Nothing,
    /// Read exactly this many bytes (never beyond the proxy's message).
    Exact(usize),
    /// Peek at up to this many bytes and hand them to [`Handshake::feed_peeked`].
    Peek(usize),
}

#[derive(Debug)]
pub enum State {
    Running,
    /// The last hop's reply (BND.ADDR/PORT; an unspecified address for HTTP proxies).
    Done(Reply),
    Failed(Failure),
}

pub struct Handshake {
    hops: Vec<ProxyUrl>,
    idx: usize,
    command: Command,
    target: TargetAddr,
    current: Hop,
    state: State,
}

/// Where hop `url` is, as a CONNECT target for the hop before it.
fn address_of(url: &ProxyUrl) -> TargetAddr {
    match &url.host {
        Host::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, url.port)),
        Host::Name(n) => TargetAddr::Domain(n.clone(), url.port),
    }
}

fn client_for(url: &ProxyUrl, command: Command, target: TargetAddr) -> Result<Hop, Failure> {
    match url.scheme {
        Scheme::Http => {
            if command != Command::Connect {
                return Err(Failure::new(
                    libc::EOPNOTSUPP,
                    "an HTTP proxy can only CONNECT (no BIND, no UDP)",
                ));
            }
            http::Client::new(http::Request {
                target,
                credentials: url.credentials(),
            })
            .map(Hop::Http)
            .map_err(|e| Failure::new(e.errno(), e.to_string()))
        }
        _ => socks::Client::new(request(url, command, target))
            .map(Hop::Socks)
            .map_err(|e| Failure::new(e.errno(), e.to_string())),
    }
}

impl Handshake {
    /// A handshake through `hops` (first hop first; the socket is already connected to it).
    pub fn new(hops: &[ProxyUrl], command: Command, target: TargetAddr) -> Result<Self, Failure> {
        Self::with_hops(hops.to_vec(), command, target)
    }

    /// [`Handshake::new`] taking the hops it keeps (no copy of them).
    pub fn with_hops(
        hops: Vec<ProxyUrl>,
        command: Command,
        target: TargetAddr,
    ) -> Result<Self, Failure> {
        let first = hops
            .first()
            .ok_or_else(|| Failure::new(libc::EACCES, "no proxy configured"))?;
        let (c, t) = if hops.len() > 1 {
            (Command::Connect, address_of(&hops[1]))
        } else {
            (command, target.clone())
        };
        let current = client_for(first, c, t).map_err(|f| Self::at(&hops, 0, f))?;
        Ok(Handshake {
            hops,
            idx: 0,
            command,
            target,
            current,
            state: State::Running,
        })
    }

    /// Names the hop in a failure when there are several.
    fn at(hops: &[ProxyUrl], i: usize, f: Failure) -> Failure {
        if hops.len() > 1 {
            Failure {
                msg: format!(
                    "hop {} of {} ({}): {}",
                    i + 1,
                    hops.len(),
                    hops[i].masked(),
                    f.msg
                ),
                ..f
            }
        } else {
            f
        }
    }

    /// Which hop a failure at hop `i` proves dead: a refusal to CONNECT to the next hop means
    /// the next hop is unreachable; a broken exchange means hop `i` itself; a refusal by the
    /// last hop is about the destination (no hop is dead).
    fn dead(&self, i: usize, refused: bool) -> Option<usize> {
        let last = self.hops.len() - 1;
        match (refused, i < last) {
            (true, true) => Some(i + 1),
            (true, false) => None,
            (false, _) => Some(i),
        }
    }

    pub fn pending_output(&self) -> &[u8] {
        match &self.current {
            Hop::Socks(c) => c.pending_output(),
            Hop::Http(c) => c.pending_output(),
        }
    }

    pub fn consume_output(&mut self, n: usize) {
        match &mut self.current {
            Hop::Socks(c) => c.consume_output(n),
            Hop::Http(c) => c.consume_output(n),
        }
        self.advance();
    }

    pub fn read_mode(&self) -> ReadMode {
        if !matches!(self.state, State::Running) || !self.pending_output().is_empty() {
            return ReadMode::Nothing;
        }
        match &self.current {
            Hop::Socks(c) => match c.wanted() {
                0 => ReadMode::Nothing,
                n => ReadMode::Exact(n),
            },
            Hop::Http(c) => match c.peek_limit() {
                0 => ReadMode::Nothing,
                n => ReadMode::Peek(n),
            },
        }
    }

    /// Bytes read in `ReadMode::Exact`.
    pub fn feed(&mut self, data: &[u8]) {
        if let Hop::Socks(c) = &mut self.current {
            let _ = c.feed(data);
        }
        self.advance();
    }

    /// Bytes peeked in `ReadMode::Peek`: returns how many the driver must now consume.
    pub fn feed_peeked(&mut self, data: &[u8]) -> usize {
        let n = match &mut self.current {
            Hop::Http(c) => c.feed_peeked(data).unwrap_or(0),
            Hop::Socks(_) => 0,
        };
        self.advance();
        n
    }

    /// The proxy closed the connection.
    pub fn eof(&mut self) {
        if matches!(self.state, State::Running) {
            let f = match &mut self.current {
                Hop::Socks(c) => {
                    let e = c.eof();
                    Failure::new(e.errno(), e.to_string())
                }
                Hop::Http(c) => {
                    let e = c.eof();
                    Failure::new(e.errno(), e.to_string())
                }
            };
            self.state = State::Failed(Failure {
                dead_hop: Some(self.idx),
                ..Self::at(&self.hops, self.idx, f)
            });
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// BIND: after the first reply, wait for the second one (single hop only).
    pub fn expect_second_reply(&mut self) -> Result<(), Failure> {
        match &mut self.current {
            Hop::Socks(c) => {
                c.expect_second_reply()
                    .map_err(|e| Failure::new(e.errno(), e.to_string()))?;
                self.state = State::Running;
                Ok(())
            }
            Hop::Http(_) => Err(Failure::new(libc::EOPNOTSUPP, "HTTP proxies cannot BIND")),
        }
    }

    /// Moves on when the current hop finished: to the next hop, or to the end.
    fn advance(&mut self) {
        if !matches!(self.state, State::Running) {
            return;
        }
        // A failure, and whether it was the proxy's refusal (a reply code).
        let auth = |errno: i32, e: String| Failure {
            auth_hop: Some(self.idx),
            ..Failure::new(errno, e)
        };
        let outcome: Option<Result<Reply, (Failure, bool)>> = match &self.current {
            Hop::Socks(c) => match c.state() {
                socks::State::Running => None,
                socks::State::Done(r) => Some(Ok(r.clone())),
                socks::State::Failed(e @ socks::SocksError::AuthRejected) => {
                    Some(Err((auth(e.errno(), e.to_string()), false)))
                }
                socks::State::Failed(e) => Some(Err((
                    Failure::new(e.errno(), e.to_string()),
                    matches!(
                        e,
                        socks::SocksError::Socks5Reply(_) | socks::SocksError::Socks4Reply(_)
                    ),
                ))),
            },
            Hop::Http(c) => match c.state() {
                http::State::Running => None,
                http::State::Done(_) => Some(Ok(Reply {
                    bound: TargetAddr::Ip(SocketAddr::new(
                        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        0,
                    )),
                })),
                http::State::Failed(e @ http::HttpError::AuthRejected) => {
                    Some(Err((auth(e.errno(), e.to_string()), false)))
                }
                // tinyproxy answers a wrong Basic password with 401, not 407: the same fix
                // (errno and text as for any status; still the proxy's refusal).
                http::State::Failed(e @ http::HttpError::Status(401, _))
                    if self.hops[self.idx].user.is_some() =>
                {
                    Some(Err((auth(e.errno(), e.to_string()), true)))
                }
                http::State::Failed(e) => Some(Err((
                    Failure::new(e.errno(), e.to_string()),
                    matches!(e, http::HttpError::Status(..)),
                ))),
            },
        };
        match outcome {
            None => {}
            Some(Err((f, refused))) => {
                let dead_hop = self.dead(self.idx, refused);
                let i = self.idx;
                // A refusal to CONNECT to the next hop is about that hop: name it.
                let f = match dead_hop {
                    Some(d) if d == i + 1 => Failure {
                        msg: format!(
                            "hop {} of {} ({}) could not reach hop {} ({}): {}",
                            i + 1,
                            self.hops.len(),
                            self.hops[i].masked(),
                            d + 1,
                            self.hops[d].masked(),
                            f.msg
                        ),
                        ..f
                    },
                    _ => Self::at(&self.hops, i, f),
                };
                self.state = State::Failed(Failure { dead_hop, ..f })
            }
            Some(Ok(reply)) if self.idx + 1 >= self.hops.len() => self.state = State::Done(reply),
            Some(Ok(_)) => {
                self.idx += 1;
                let i = self.idx;
                let (c, t) = if i + 1 < self.hops.len() {
                    (Command::Connect, address_of(&self.hops[i + 1]))
                } else {
                    (self.command, self.target.clone())
                };
                match client_for(&self.hops[i], c, t) {
                    Ok(h) => {
                        self.current = h;
                        log::debug!("chain: hop {} of {} reached", i + 1, self.hops.len());
                    }
                    Err(f) => self.state = State::Failed(Self::at(&self.hops, i, f)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn url(s: &str) -> ProxyUrl {
        s.parse().unwrap()
    }

    fn drive(hs: &mut Handshake, replies: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        let mut replies = replies.iter();
        while matches!(hs.state(), State::Running) {
            let out = hs.pending_output().to_vec();
            if !out.is_empty() {
                hs.consume_output(out.len());
                sent.push(out);
                continue;
            }
            match hs.read_mode() {
                ReadMode::Exact(n) => {
                    let r = replies.next().expect("a reply");
                    hs.feed(&r[..n.min(r.len())]);
                    if r.len() > n {
                        hs.feed(&r[n..]);
                    }
                }
                ReadMode::Peek(_) => {
                    let r = replies.next().expect("a reply");
                    let took = hs.feed_peeked(r);
                    assert_eq!(took, r.len());
                }
                ReadMode::Nothing => break,
            }
        }
        sent
    }

    const TARGET: TargetAddr = TargetAddr::Ip(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        80,
    ));

    #[test]
    fn two_socks5_hops_connect_to_the_second_then_the_target() {
        let hops = [
            url("socks5://198.51.100.1:1080"),
            url("socks5://192.0.2.130:1080"),
        ];
        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let ok = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let sent = drive(
            &mut hs,
            &[&[5, 0], &ok[..4], &ok[4..], &[5, 0], &ok[..4], &ok[4..]],
        );
        assert!(matches!(hs.state(), State::Done(_)), "{:?}", hs.state());
        // Hop 1 is asked for hop 2's address, hop 2 for the target.
        assert!(sent
            .iter()
            .any(|m| m == &[5, 1, 0, 1, 192, 0, 2, 130, 4, 56]));
        assert!(sent
            .iter()
            .any(|m| m == &[5, 1, 0, 1, 203, 0, 113, 10, 0, 80]));
    }

    #[test]
    fn a_refusal_to_reach_the_next_hop_names_that_hop_dead() {
        let hops = [
            url("socks5://198.51.100.1:1080"),
            url("socks5://192.0.2.130:1080"),
        ];
        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let refused = [5, 5, 0, 1, 0, 0, 0, 0, 0, 0];
        drive(&mut hs, &[&[5, 0], &refused[..4], &refused[4..]]);
        match hs.state() {
            State::Failed(f) => {
                assert_eq!(f.dead_hop, Some(1));
                assert_eq!(f.errno, libc::ECONNREFUSED);
                assert!(f.msg.contains("could not reach hop 2"), "{}", f.msg);
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_rejected_password_names_its_hop() {
        let hops = [
            url("socks5://198.51.100.1:1080"),
            url("socks5://u:p@192.0.2.130:1080"),
        ];
        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let ok = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        drive(&mut hs, &[&[5, 0], &ok[..4], &ok[4..], &[5, 2], &[1, 1]]);
        match hs.state() {
            State::Failed(f) => {
                assert_eq!((f.auth_hop, f.errno), (Some(1), libc::EACCES));
                assert!(
                    f.msg.contains("rejected the username/password"),
                    "{}",
                    f.msg
                );
            }
            s => panic!("{s:?}"),
        }
        // HTTP: a 407 although credentials were sent.
        let http = [url("http://u:p@198.51.100.1:3128")];
        let mut hs = Handshake::new(&http, Command::Connect, TARGET).unwrap();
        let out = hs.pending_output().len();
        hs.consume_output(out);
        hs.feed_peeked(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n");
        assert!(
            matches!(hs.state(), State::Failed(f) if f.auth_hop == Some(0) && f.errno == libc::EACCES),
            "{:?}",
            hs.state()
        );
        // tinyproxy's 401 after credentials: the same, as a refusal (errno as for a status).
        let mut hs = Handshake::new(&http, Command::Connect, TARGET).unwrap();
        let out = hs.pending_output().len();
        hs.consume_output(out);
        hs.feed_peeked(b"HTTP/1.0 401 Unauthorized\r\n\r\n");
        assert!(
            matches!(hs.state(), State::Failed(f) if f.auth_hop == Some(0) && f.errno == libc::ECONNREFUSED),
            "{:?}",
            hs.state()
        );
        // A refusal of the request is no credential problem.
        let mut hs = Handshake::new(&hops[1..], Command::Connect, TARGET).unwrap();
        let refused = [5, 2, 0, 1, 0, 0, 0, 0, 0, 0];
        drive(&mut hs, &[&[5, 2], &[1, 0], &refused[..4], &refused[4..]]);
        assert!(matches!(hs.state(), State::Failed(f) if f.auth_hop.is_none()));
    }

    #[test]
    fn the_last_hops_refusal_proves_no_hop_dead_and_eof_proves_the_current_one() {
        let hops = [url("socks5://198.51.100.1:1080")];
        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let refused = [5, 2, 0, 1, 0, 0, 0, 0, 0, 0];
        drive(&mut hs, &[&[5, 0], &refused[..4], &refused[4..]]);
        assert!(
            matches!(hs.state(), State::Failed(f) if f.dead_hop.is_none() && f.errno == libc::EACCES)
        );

        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let out = hs.pending_output().len();
        hs.consume_output(out);
        hs.eof();
        assert!(matches!(hs.state(), State::Failed(f) if f.dead_hop == Some(0)));
    }

    #[test]
    fn an_http_hop_then_socks_reads_by_peek_and_refuses_bind() {
        let hops = [
            url("http://198.51.100.1:3128"),
            url("socks5://192.0.2.130:1080"),
        ];
        let mut hs = Handshake::new(&hops, Command::Connect, TARGET).unwrap();
        let ok = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        drive(
            &mut hs,
            &[
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                &[5, 0],
                &ok[..4],
                &ok[4..],
            ],
        );
        assert!(matches!(hs.state(), State::Done(_)), "{:?}", hs.state());
        let e = Handshake::new(&hops[..1], Command::Bind, TARGET)
            .err()
            .unwrap();
        assert_eq!(e.errno, libc::EOPNOTSUPP);
    }
}
