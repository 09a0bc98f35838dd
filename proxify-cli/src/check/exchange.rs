//! One exchange with one hop: a SOCKS handshake or an HTTP CONNECT driven on a [`Conn`]
//! with proxify-core's sans-IO clients, timed per phase (greeting, authentication, request).

use super::conn::{is_timeout, secs_text, Conn};
use crate::io_error_text;
use proxify_core::http;
use proxify_core::socks::{self, Command, TargetAddr, Version, METHOD_NO_AUTH, METHOD_USER_PASS};
use proxify_core::url::{Host, ProxyUrl};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A SOCKS target for messages (`192.0.2.1:80`, `host.example:443`).
pub(super) fn target_text(t: &TargetAddr) -> String {
    match t {
        TargetAddr::Ip(a) => a.to_string(),
        TargetAddr::Domain(n, p) => format!("{n}:{p}"),
    }
}

/// Where hop `url` is, as a CONNECT target for the hop before it (as the shim does).
pub(super) fn address_of(url: &ProxyUrl) -> TargetAddr {
    match &url.host {
        Host::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, url.port)),
        Host::Name(n) => TargetAddr::Domain(n.clone(), url.port),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// SOCKS5 method selection.
    Greeting,
    /// RFC 1929 username/password.
    Auth,
    /// The command and its reply (all of SOCKS4 and HTTP).
    Request,
}

#[derive(Debug)]
pub(super) enum Why {
    Socks(socks::SocksError),
    Http(http::HttpError),
    Io(io::Error),
    Timeout,
}

#[derive(Debug)]
pub(super) struct Failure {
    pub(super) phase: Phase,
    pub(super) why: Why,
}

impl Failure {
    pub(super) fn text(&self, timeout: Duration) -> String {
        match &self.why {
            Why::Socks(e) => e.to_string(),
            Why::Http(e) => e.to_string(),
            Why::Io(e) => format!("connection to the proxy failed: {}", io_error_text(e)),
            Why::Timeout => format!("no reply within {}", secs_text(timeout)),
        }
    }
}

fn io_why(e: io::Error) -> Why {
    if is_timeout(&e) {
        Why::Timeout
    } else {
        Why::Io(e)
    }
}

pub(super) enum Outcome {
    /// The command succeeded: the bound address (SOCKS; `None` for HTTP).
    Done(Option<TargetAddr>),
    /// Stopped before sending the request, as asked (SOCKS5 only).
    Stopped,
}

/// How one exchange with one hop went.
pub(super) struct Exchange {
    /// SOCKS5: the method offered and the one the proxy chose.
    pub(super) offered: Option<u8>,
    pub(super) chosen: Option<u8>,
    /// SOCKS5: greeting and authentication round trips.
    pub(super) auth_time: Option<Duration>,
    /// The request's round trip (the whole exchange for SOCKS4 and HTTP).
    pub(super) request_time: Option<Duration>,
    /// Bytes the proxy sent.
    pub(super) received: usize,
    pub(super) result: Result<Outcome, Failure>,
}

impl Exchange {
    pub(super) fn new(offered: Option<u8>) -> Exchange {
        Exchange {
            offered,
            chosen: None,
            auth_time: None,
            request_time: None,
            received: 0,
            result: Ok(Outcome::Stopped),
        }
    }
    fn fail(mut self, phase: Phase, why: Why) -> Exchange {
        self.result = Err(Failure { phase, why });
        self
    }
    /// A failure in `phase`, timed: the request from `phase_start`, greeting and
    /// authentication from `start`.
    fn fail_timed(
        mut self,
        phase: Phase,
        why: Why,
        start: Instant,
        phase_start: Instant,
    ) -> Exchange {
        if phase == Phase::Request {
            self.request_time = Some(phase_start.elapsed());
        } else {
            self.auth_time = Some(start.elapsed());
        }
        self.fail(phase, why)
    }
    /// Greeting, authentication and request together.
    pub(super) fn total(&self) -> Option<Duration> {
        match (self.auth_time, self.request_time) {
            (Some(a), Some(r)) => Some(a + r),
            (None, r) => r,
            (a, None) => a,
        }
    }
}

/// Runs one SOCKS handshake on `conn` (its deadline already set). `stop_before_request`:
/// SOCKS5 only, end after the authentication without sending the request.
fn drive_socks(conn: &mut Conn, req: socks::Request, stop_before_request: bool) -> Exchange {
    let version = req.version;
    let offered = (version == Version::Socks5).then(|| {
        if req.credentials.is_some() {
            METHOD_USER_PASS
        } else {
            METHOD_NO_AUTH
        }
    });
    let mut ex = Exchange::new(offered);
    let mut client = match socks::Client::new(req) {
        Ok(c) => c,
        Err(e) => return ex.fail(Phase::Greeting, Why::Socks(e)),
    };
    let start = Instant::now();
    let mut phase = if version == Version::Socks5 {
        Phase::Greeting
    } else {
        Phase::Request
    };
    let mut phase_start = start;
    let mut buf = [0u8; socks::MAX_WANTED];
    loop {
        let pending = client.pending_output().len();
        if pending > 0 {
            if stop_before_request && phase == Phase::Request {
                return ex;
            }
            if let Err(e) = conn.write_all(client.pending_output()) {
                return ex.fail_timed(phase, io_why(e), start, phase_start);
            }
            client.consume_output(pending);
        }
        match client.state() {
            socks::State::Done(reply) => {
                ex.request_time = Some(phase_start.elapsed());
                ex.result = Ok(Outcome::Done(Some(reply.bound.clone())));
                return ex;
            }
            socks::State::Failed(e) => {
                let e = e.clone();
                return ex.fail_timed(phase, Why::Socks(e), start, phase_start);
            }
            socks::State::Running => {}
        }
        let want = client.wanted().min(buf.len());
        let n = match conn.read(&mut buf[..want], false) {
            Ok(n) => n,
            Err(e) => return ex.fail_timed(phase, io_why(e), start, phase_start),
        };
        if n == 0 {
            let e = client.eof();
            return ex.fail_timed(phase, Why::Socks(e), start, phase_start);
        }
        for &b in &buf[..n] {
            ex.received += 1;
            if version == Version::Socks5 && ex.received == 2 {
                ex.chosen = Some(b);
            }
        }
        // A failure shows in the state at the top of the loop.
        let _ = client.feed(&buf[..n]);
        if client.state() != &socks::State::Running
            && !matches!(client.state(), socks::State::Done(_))
        {
            continue;
        }
        let done_with = |upto: usize| ex.received >= upto;
        match phase {
            Phase::Greeting if done_with(2) => {
                if ex.chosen == Some(METHOD_USER_PASS) {
                    phase = Phase::Auth;
                    phase_start = Instant::now();
                } else {
                    ex.auth_time = Some(start.elapsed());
                    phase = Phase::Request;
                    phase_start = Instant::now();
                }
            }
            Phase::Auth if done_with(4) => {
                ex.auth_time = Some(start.elapsed());
                phase = Phase::Request;
                phase_start = Instant::now();
            }
            _ => {}
        }
    }
}

/// Runs one HTTP CONNECT exchange on `conn` (its deadline already set), reading the reply by
/// peeking so that nothing after it is taken.
fn drive_http(conn: &mut Conn, req: http::Request) -> Exchange {
    let mut ex = Exchange::new(None);
    let mut client = match http::Client::new(req) {
        Ok(c) => c,
        Err(e) => return ex.fail(Phase::Request, Why::Http(e)),
    };
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        let pending = client.pending_output().len();
        if pending > 0 {
            if let Err(e) = conn.write_all(client.pending_output()) {
                return ex.fail_timed(Phase::Request, io_why(e), start, start);
            }
            client.consume_output(pending);
        }
        match client.state() {
            http::State::Done(_) => {
                ex.request_time = Some(start.elapsed());
                ex.result = Ok(Outcome::Done(None));
                return ex;
            }
            http::State::Failed(e) => {
                let e = e.clone();
                return ex.fail_timed(Phase::Request, Why::Http(e), start, start);
            }
            http::State::Running => {}
        }
        let limit = client.peek_limit().clamp(1, buf.len());
        let n = match conn.read(&mut buf[..limit], true) {
            Ok(n) => n,
            Err(e) => return ex.fail_timed(Phase::Request, io_why(e), start, start),
        };
        if n == 0 {
            let e = client.eof();
            return ex.fail_timed(Phase::Request, Why::Http(e), start, start);
        }
        let take = match client.feed_peeked(&buf[..n]) {
            Ok(t) => t,
            // Shows in the state at the top of the loop.
            Err(_) => continue,
        };
        ex.received += take;
        // Take exactly the reply's bytes off the socket.
        let mut left = take;
        while left > 0 {
            match conn.read(&mut buf[..left], false) {
                Ok(0) => {
                    let e = client.eof();
                    return ex.fail_timed(Phase::Request, Why::Http(e), start, start);
                }
                Ok(k) => left -= k,
                Err(e) => return ex.fail_timed(Phase::Request, io_why(e), start, start),
            }
        }
    }
}

/// One exchange with `hop` on `conn`, with a fresh deadline `timeout` away.
pub(super) fn exchange(
    conn: &mut Conn,
    hop: &ProxyUrl,
    command: Command,
    target: TargetAddr,
    stop_before_request: bool,
    pipeline: bool,
    timeout: Duration,
) -> Exchange {
    conn.deadline = Instant::now() + timeout;
    match hop.scheme.socks_version() {
        Some(version) => drive_socks(
            conn,
            socks::Request {
                version,
                command,
                target,
                credentials: hop.credentials(),
                pipeline,
            },
            stop_before_request,
        ),
        None => drive_http(
            conn,
            http::Request {
                target,
                credentials: hop.credentials(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::conn::{secs_text, Conn};
    use super::super::report::{Kind, Status, Step};
    use super::super::walk::auth_step;
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    #[test]
    fn names() {
        assert_eq!(secs_text(Duration::from_secs(5)), "5 s");
        assert_eq!(secs_text(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(
            target_text(&TargetAddr::Domain("h.example".into(), 80)),
            "h.example:80"
        );
    }

    /// A scripted proxy on loopback: reads `expect` bytes, answers `answer`, repeatedly.
    fn scripted(script: Vec<(usize, Vec<u8>)>) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for (expect, answer) in script {
                let mut buf = vec![0u8; expect];
                if s.read_exact(&mut buf).is_err() {
                    return;
                }
                let _ = s.write_all(&answer);
            }
            let mut rest = [0u8; 64];
            let _ = s.read(&mut rest);
        });
        a
    }

    fn conn_to(a: SocketAddr) -> Conn {
        Conn {
            s: TcpStream::connect(a).unwrap(),
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    #[test]
    fn socks5_phases_are_timed_and_named() {
        let a = scripted(vec![
            (3, vec![5, 2]),
            (1 + 1 + 1 + 1 + 1, vec![1, 0]),
            (10, vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80]),
        ]);
        let hop: ProxyUrl = format!("socks5://u:p@{a}").parse().unwrap();
        let mut c = conn_to(a);
        let ex = exchange(
            &mut c,
            &hop,
            Command::Connect,
            TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
            false,
            false,
            Duration::from_secs(5),
        );
        assert_eq!(ex.offered, Some(2));
        assert_eq!(ex.chosen, Some(2));
        assert!(ex.auth_time.is_some() && ex.request_time.is_some());
        assert!(matches!(
            ex.result,
            Ok(Outcome::Done(Some(TargetAddr::Ip(b)))) if b.to_string() == "127.0.0.1:80"
        ));
        let mut s = Step::new(Kind::Auth, Some(1), "a");
        auth_step(&mut s, &hop, &ex, true, Duration::from_secs(5));
        assert_eq!(s.status, Status::Ok);
        assert_eq!(
            s.detail,
            "offered username/password, the proxy chose it; user \"u\" accepted"
        );
    }

    #[test]
    fn socks5_method_refused() {
        let a = scripted(vec![(3, vec![5, 0xFF])]);
        let hop: ProxyUrl = format!("socks5://{a}").parse().unwrap();
        let mut c = conn_to(a);
        let ex = exchange(
            &mut c,
            &hop,
            Command::Connect,
            TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
            false,
            false,
            Duration::from_secs(5),
        );
        assert!(matches!(
            ex.result,
            Err(Failure {
                phase: Phase::Greeting,
                ..
            })
        ));
        let mut s = Step::new(Kind::Auth, Some(1), "a");
        auth_step(&mut s, &hop, &ex, true, Duration::from_secs(5));
        assert_eq!(s.status, Status::Fail);
        assert!(
            s.detail.starts_with(
                "offered none, the proxy answered no acceptable method (0xFF) (it probably wants"
            ),
            "{}",
            s.detail
        );
    }

    #[test]
    fn http_reply_is_taken_exactly() {
        let a = scripted(vec![(
            "CONNECT 192.0.2.1:80 HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n".len(),
            b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nBANNER".to_vec(),
        )]);
        let hop: ProxyUrl = format!("http://{a}").parse().unwrap();
        let mut c = conn_to(a);
        let ex = exchange(
            &mut c,
            &hop,
            Command::Connect,
            TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
            false,
            false,
            Duration::from_secs(5),
        );
        assert!(matches!(ex.result, Ok(Outcome::Done(None))));
        let mut rest = [0u8; 6];
        c.s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"BANNER");
    }

    #[test]
    fn silence_is_a_timeout() {
        let a = scripted(vec![(3, vec![5, 0]), (10, vec![])]);
        let hop: ProxyUrl = format!("socks5://{a}").parse().unwrap();
        let mut c = conn_to(a);
        let t = Instant::now();
        let ex = exchange(
            &mut c,
            &hop,
            Command::Connect,
            TargetAddr::Ip("192.0.2.1:80".parse().unwrap()),
            false,
            false,
            Duration::from_millis(300),
        );
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(matches!(
            ex.result,
            Err(Failure {
                phase: Phase::Request,
                why: Why::Timeout
            })
        ));
    }
}
