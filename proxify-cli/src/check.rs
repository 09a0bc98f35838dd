//! `proxify check [HOST:PORT]`: walks the default chain step by step with blocking sockets and
//! deadlines, driving the same sans-IO clients as the shim (`socks::Client`, `http::Client`),
//! and reports each step (see `report`).
//!
//! The walk: a TCP connection to the first hop; at each hop the greeting and authentication,
//! then a CONNECT to the next hop (or to HOST:PORT at the last). Then, on connections of their
//! own: UDP ASSOCIATE and BIND at the last hop (a chain of one hop only), and the pipelining
//! probe at the first SOCKS5 hop and at every hop configured with `?pipeline=1`.

use crate::cli::{CheckArgs, Feature};
use crate::io_error_text;
use crate::report::{fmt_ms, Kind, Report, Status, Step, Value};
use proxify_core::config::{format_seconds, Chain, Config};
use proxify_core::http;
use proxify_core::rules::{Verdict, DEFAULT_CHAIN};
use proxify_core::socks::{self, Command, TargetAddr, Version};
use proxify_core::url::{Host, ProxyUrl};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The pipelining probe waits this long at least for the proxy's replies ...
const PIPELINE_MIN_WAIT: Duration = Duration::from_secs(1);
/// ... and this many times what the same hop took one message at a time.
const PIPELINE_WAIT_FACTOR: u32 = 4;

const METHOD_NONE: u8 = 0x00;
const METHOD_USER_PASS: u8 = 0x02;

/// HOST:PORT as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// Parses `HOST:PORT`, `[IPv6]:PORT` or `a.b.c.d:PORT`.
pub fn parse_host_port(s: &str) -> Result<HostPort, String> {
    let bad = |why: &str| format!("\"{}\": {why}", s.escape_debug());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| bad("not an IPv6 address in brackets"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("a port must follow (HOST:PORT)"))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT"))?;
        if host.contains(':') {
            return Err(bad("write an IPv6 address in brackets: [2001:db8::1]:PORT"));
        }
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.len() > 255 || host.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("not a host name"));
        }
        match host.parse::<Ipv4Addr>() {
            Ok(ip) => (Host::Ip(IpAddr::V4(ip)), port),
            Err(_) => (Host::Name(host.to_string()), port),
        }
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    };
    Ok(HostPort { host, port })
}

/// The text for a SOCKS5 reply code (RFC 1928).
pub fn socks5_reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "not allowed by the proxy's rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned code",
    }
}

/// The name of a SOCKS5 authentication method.
pub fn method_name(m: u8) -> String {
    match m {
        0x00 => "none".to_string(),
        0x01 => "GSSAPI".to_string(),
        0x02 => "username/password".to_string(),
        0xFF => "no acceptable method (0xFF)".to_string(),
        m => format!("method 0x{m:02X}"),
    }
}

fn target_text(t: &TargetAddr) -> String {
    match t {
        TargetAddr::Ip(a) => a.to_string(),
        TargetAddr::Domain(n, p) => format!("{n}:{p}"),
    }
}

/// Where hop `url` is, as a CONNECT target for the hop before it (as the shim does).
fn address_of(url: &ProxyUrl) -> TargetAddr {
    match &url.host {
        Host::Ip(ip) => TargetAddr::Ip(SocketAddr::new(*ip, url.port)),
        Host::Name(n) => TargetAddr::Domain(n.clone(), url.port),
    }
}

fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_nanos() == 0 || s >= 10.0 {
        format!("{} s", format_seconds(Duration::from_secs(d.as_secs())))
    } else {
        format!("{s:.1} s")
    }
}

/// A TCP connection whose reads and writes end at a deadline.
struct Conn {
    s: TcpStream,
    deadline: Instant,
}

fn timed_out() -> io::Error {
    io::Error::from(io::ErrorKind::TimedOut)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Conn {
    fn remaining(&self) -> io::Result<Duration> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(timed_out());
        }
        Ok(self.deadline - now)
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let left = self.remaining()?;
            self.s.set_write_timeout(Some(left))?;
            match self.s.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], peek: bool) -> io::Result<usize> {
        loop {
            let left = self.remaining()?;
            self.s.set_read_timeout(Some(left))?;
            let r = if peek {
                self.s.peek(buf)
            } else {
                self.s.read(buf)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                other => return other,
            }
        }
    }
}

/// Resolves the first hop (locally, as the shim does) and connects to it.
fn connect_first(hop: &ProxyUrl, timeout: Duration) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match &hop.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, hop.port)],
        Host::Name(n) => match (n.as_str(), hop.port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => return Err(format!("cannot resolve {n}: {e}")),
        },
    };
    let mut errors = Vec::new();
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok((s, a));
            }
            Err(e) if is_timeout(&e) => {
                errors.push(format!("{a}: no answer within {}", secs_text(timeout)))
            }
            Err(e) => errors.push(format!("{a}: {}", io_error_text(&e))),
        }
    }
    if errors.is_empty() {
        errors.push(format!("{}: no address", hop.port));
    }
    Err(errors.join("; "))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// SOCKS5 method selection.
    Greeting,
    /// RFC 1929 username/password.
    Auth,
    /// The command and its reply (all of SOCKS4 and HTTP).
    Request,
}

#[derive(Debug)]
enum Why {
    Socks(socks::SocksError),
    Http(http::HttpError),
    Io(io::Error),
    Timeout,
}

#[derive(Debug)]
struct Failure {
    phase: Phase,
    why: Why,
}

impl Failure {
    fn text(&self, timeout: Duration) -> String {
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

enum Outcome {
    /// The command succeeded: the bound address (SOCKS; `None` for HTTP).
    Done(Option<TargetAddr>),
    /// Stopped before sending the request, as asked (SOCKS5 only).
    Stopped,
}

/// How one exchange with one hop went.
struct Exchange {
    /// SOCKS5: the method offered and the one the proxy chose.
    offered: Option<u8>,
    chosen: Option<u8>,
    /// SOCKS5: greeting and authentication round trips.
    auth_time: Option<Duration>,
    /// The request's round trip (the whole exchange for SOCKS4 and HTTP).
    request_time: Option<Duration>,
    /// Bytes the proxy sent.
    received: usize,
    result: Result<Outcome, Failure>,
}

impl Exchange {
    fn new(offered: Option<u8>) -> Exchange {
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
    fn total(&self) -> Option<Duration> {
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
            METHOD_NONE
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
fn exchange(
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

/// Timeouts and hops of the check.
struct Ctx<'a> {
    hops: &'a [ProxyUrl],
    connect_timeout: Duration,
    timeout: Duration,
}

impl Ctx<'_> {
    fn connect_first(&self) -> Result<(Conn, SocketAddr), String> {
        let (s, a) = connect_first(&self.hops[0], self.connect_timeout)?;
        Ok((
            Conn {
                s,
                deadline: Instant::now() + self.timeout,
            },
            a,
        ))
    }

    /// A connection to hop `i`: to the first, then through each hop before `i`.
    fn tunnel_to(&self, i: usize) -> Result<(Conn, SocketAddr), String> {
        let (mut conn, first) = self.connect_first()?;
        for j in 0..i {
            let ex = exchange(
                &mut conn,
                &self.hops[j],
                Command::Connect,
                address_of(&self.hops[j + 1]),
                false,
                false,
                self.timeout,
            );
            if let Err(f) = ex.result {
                return Err(format!("hop {}: {}", j + 1, f.text(self.timeout)));
            }
        }
        Ok((conn, first))
    }
}

/// What the walk through the chain found, for the probes after it.
struct Walk {
    /// Hops reached and authenticated (a prefix of the chain).
    good_hops: usize,
    /// Each hop's handshake time, one message at a time (greeting to reply).
    hop_times: Vec<Option<Duration>>,
    /// The first hop's address as connected.
    first_addr: Option<SocketAddr>,
    /// Why the walk stopped early ("hop 2 is unreachable").
    blocked: Option<String>,
}

fn user_text(hop: &ProxyUrl) -> Option<String> {
    hop.user
        .as_ref()
        .map(|u| String::from_utf8_lossy(u).escape_debug().to_string())
}

/// Fills the auth step of `hop` from its exchange (`requested`: a request was sent).
fn auth_step(step: &mut Step, hop: &ProxyUrl, ex: &Exchange, requested: bool, timeout: Duration) {
    let user = user_text(hop);
    step.field("user", user.clone().map_or(Value::Null, Value::Str));
    match hop.scheme.socks_version() {
        Some(Version::Socks5) => {
            let offered = ex.offered.unwrap_or(METHOD_NONE);
            step.field("offered", Value::List(vec![method_name(offered)]));
            step.field(
                "chosen",
                ex.chosen
                    .map_or(Value::Null, |m| Value::Str(method_name(m))),
            );
            step.time = ex.auth_time;
            let offered_text = format!("offered {}", method_name(offered));
            let failed_here = match &ex.result {
                Err(f) if f.phase != Phase::Request => Some(f),
                _ => None,
            };
            match (failed_here, ex.chosen) {
                (None, Some(c)) => {
                    let detail = if c == METHOD_USER_PASS {
                        format!(
                            "{offered_text}, the proxy chose it; user \"{}\" accepted",
                            user.unwrap_or_default()
                        )
                    } else {
                        format!("{offered_text}, the proxy chose none (no authentication)")
                    };
                    step.set(Status::Ok, detail);
                }
                (None, None) => step.set(Status::Fail, format!("{offered_text}: no reply")),
                (Some(f), chosen) => {
                    let mut detail = match (&f.why, chosen) {
                        (Why::Socks(socks::SocksError::AuthRejected), _) => format!(
                            "{offered_text}, the proxy chose it; it rejected the password of user \"{}\"",
                            user.unwrap_or_default()
                        ),
                        (Why::Socks(socks::SocksError::AuthRequired), Some(c)) => format!(
                            "{offered_text}, the proxy chose {}: it wants a username and \
                             password (give user:password in the proxy URL)",
                            method_name(c)
                        ),
                        (Why::Socks(socks::SocksError::NoAcceptableMethod), Some(c)) => {
                            format!(
                                "{offered_text}, the proxy answered {}{}",
                                method_name(c),
                                if offered == METHOD_NONE {
                                    " (it probably wants a username and password: give \
                                     user:password in the proxy URL)"
                                } else {
                                    ""
                                }
                            )
                        }
                        (_, Some(c)) => format!(
                            "{offered_text}, the proxy chose {}: {}",
                            method_name(c),
                            f.text(timeout)
                        ),
                        (_, None) => format!("{offered_text}: {}", f.text(timeout)),
                    };
                    if f.phase == Phase::Auth && matches!(f.why, Why::Timeout) {
                        detail = format!(
                            "{offered_text}, the proxy chose username/password; no answer to \
                             the username/password within {}",
                            secs_text(timeout)
                        );
                    }
                    step.set(Status::Fail, detail);
                }
            }
        }
        Some(_) => {
            let id = match &user {
                Some(u) => format!("user id \"{u}\" sent with the request"),
                None => "empty user id sent with the request".to_string(),
            };
            let detail = format!("SOCKS4 has no authentication exchange; {id}");
            match &ex.result {
                _ if !requested => {
                    step.required = false;
                    step.set(Status::NotApplicable, detail);
                }
                Err(Failure {
                    why: Why::Socks(socks::SocksError::Socks4Reply(c @ (92 | 93))),
                    ..
                }) => step.set(
                    Status::Fail,
                    format!("{detail}; refused by the identd check (SOCKS4 reply {c})"),
                ),
                Err(Failure {
                    why:
                        Why::Socks(socks::SocksError::Socks4Reply(_))
                        | Why::Socks(socks::SocksError::Malformed(_)),
                    ..
                })
                | Ok(_) => step.set(Status::Ok, detail),
                Err(_) => step.set(Status::NotTried, format!("{detail}; no reply")),
            }
        }
        None => {
            let sent = match &user {
                Some(u) => format!("Basic credentials of user \"{u}\" sent with the CONNECT"),
                None => "no credentials sent".to_string(),
            };
            match &ex.result {
                _ if !requested => {
                    step.required = false;
                    step.set(
                        Status::NotApplicable,
                        "an HTTP proxy checks credentials with each CONNECT: give HOST:PORT to \
                         check them",
                    );
                }
                Err(Failure {
                    why:
                        Why::Http(e @ (http::HttpError::AuthRejected | http::HttpError::AuthRequired)),
                    ..
                }) => step.set(Status::Fail, format!("{sent}; {e} (407)")),
                Err(Failure {
                    why: Why::Http(http::HttpError::Status(code, _)),
                    ..
                }) => step.set(
                    Status::Ok,
                    format!("{sent}; not refused (the proxy answered {code}, not 407)"),
                ),
                Ok(_) => step.set(
                    Status::Ok,
                    if user.is_some() {
                        format!("{sent}; accepted")
                    } else {
                        format!("{sent}; none asked for")
                    },
                ),
                Err(_) => step.set(Status::NotTried, format!("{sent}; no reply")),
            }
        }
    }
}

/// Whether a bound address says anything (microsocks answers 0.0.0.0:0).
fn informative(b: &TargetAddr) -> bool {
    match b {
        TargetAddr::Ip(a) => !(a.ip().is_unspecified() && a.port() == 0),
        TargetAddr::Domain(..) => true,
    }
}

/// The request step (reach of the next hop, or the CONNECT to the target) from the exchange
/// with hop `hop_no`.
fn request_step(step: &mut Step, ex: &Exchange, what: &str, timeout: Duration, hop_no: usize) {
    step.time = ex.request_time;
    let reach = step.kind == Kind::Reach;
    match &ex.result {
        Ok(Outcome::Done(bound)) => {
            let mut detail = if reach {
                format!("hop {hop_no} connected to it ({what})")
            } else {
                format!("hop {hop_no} connected")
            };
            if let Some(b) = bound {
                step.field("bound", Value::Str(target_text(b)));
                if informative(b) {
                    detail.push_str(&format!(
                        "; its end of the connection is {}",
                        target_text(b)
                    ));
                }
            }
            step.set(Status::Ok, detail);
        }
        Ok(Outcome::Stopped) => {}
        Err(f) if f.phase == Phase::Request => {
            if let Why::Socks(
                socks::SocksError::Socks5Reply(c) | socks::SocksError::Socks4Reply(c),
            ) = f.why
            {
                step.field("reply", Value::Int(i64::from(c)));
            }
            if let Why::Http(http::HttpError::Status(c, _)) = f.why {
                step.field("status", Value::Int(i64::from(c)));
            }
            let lead = if reach {
                format!("hop {hop_no} could not connect to it ({what})")
            } else {
                format!("hop {hop_no} could not connect")
            };
            step.set(Status::Fail, format!("{lead}: {}", f.text(timeout)));
        }
        Err(_) => {}
    }
}

/// The main walk: reach, auth of each hop, then the CONNECT to `target`.
fn walk(ctx: &Ctx, target: Option<&TargetAddr>, steps: &mut Vec<Step>) -> Walk {
    let n = ctx.hops.len();
    let mut reach: Vec<Step> = (1..=n)
        .map(|i| Step::new(Kind::Reach, Some(i), format!("hop {i} reachable")))
        .collect();
    let mut auth: Vec<Step> = (1..=n)
        .map(|i| Step::new(Kind::Auth, Some(i), format!("hop {i} authentication")))
        .collect();
    let mut connect = match target {
        Some(t) => Step::new(
            Kind::Connect,
            Some(n),
            format!("CONNECT {} through the chain", target_text(t)),
        ),
        None => {
            let mut s = Step::new(Kind::Connect, None, "CONNECT through the chain");
            s.required = false;
            s.set(Status::NotApplicable, "not checked: no HOST:PORT given");
            s
        }
    };
    let mut w = Walk {
        good_hops: 0,
        hop_times: vec![None; n],
        first_addr: None,
        blocked: None,
    };

    let t0 = Instant::now();
    let first = ctx.connect_first();
    reach[0].time = Some(t0.elapsed());
    let mut conn = match first {
        Ok((conn, addr)) => {
            reach[0].set(Status::Ok, format!("TCP connection to {addr}"));
            reach[0].field("address", Value::Str(addr.to_string()));
            w.first_addr = Some(addr);
            Some(conn)
        }
        Err(msg) => {
            reach[0].set(Status::Fail, format!("unreachable: {msg}"));
            None
        }
    };
    let mut blocked: Option<String> = match &conn {
        Some(_) => None,
        None => Some("hop 1 is unreachable".to_string()),
    };
    for i in 0..n {
        let Some(c) = conn.as_mut() else { break };
        let hop = &ctx.hops[i];
        let next = if i + 1 < n {
            Some(address_of(&ctx.hops[i + 1]))
        } else {
            target.cloned()
        };
        let is_socks5 = hop.scheme.socks_version() == Some(Version::Socks5);
        if next.is_none() && !is_socks5 {
            // SOCKS4 and HTTP authenticate with the request: nothing to send.
            auth_step(&mut auth[i], hop, &Exchange::new(None), false, ctx.timeout);
            w.good_hops = i + 1;
            break;
        }
        let placeholder = TargetAddr::Ip(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let ex = exchange(
            c,
            hop,
            Command::Connect,
            next.clone().unwrap_or(placeholder),
            next.is_none(),
            false,
            ctx.timeout,
        );
        w.hop_times[i] = ex.total();
        auth_step(&mut auth[i], hop, &ex, next.is_some(), ctx.timeout);
        if auth[i].status == Status::Fail {
            blocked = Some(format!("hop {} did not accept us", i + 1));
            break;
        }
        match next {
            Some(t) if i + 1 < n => {
                request_step(&mut reach[i + 1], &ex, &target_text(&t), ctx.timeout, i + 1);
                if reach[i + 1].status != Status::Ok {
                    blocked = Some(format!("hop {} is unreachable", i + 2));
                    w.good_hops = i + 1;
                    break;
                }
            }
            Some(t) => {
                request_step(&mut connect, &ex, &target_text(&t), ctx.timeout, i + 1);
            }
            None => {}
        }
        if ex.result.is_err() && auth[i].status != Status::Ok {
            blocked = Some(format!("hop {} did not accept us", i + 1));
            break;
        }
        w.good_hops = i + 1;
    }
    drop(conn);
    // Everything after the failure was not tried.
    w.blocked = blocked.clone();
    let why = blocked.unwrap_or_default();
    for s in reach
        .iter_mut()
        .chain(auth.iter_mut())
        .chain(std::iter::once(&mut connect))
    {
        if s.status == Status::NotTried && s.detail.is_empty() {
            s.detail = format!("not tried: {why}");
        }
    }
    for (r, a) in reach.into_iter().zip(auth) {
        steps.push(r);
        steps.push(a);
    }
    steps.push(connect);
    w
}

fn not_tried(walk: &Walk) -> String {
    format!(
        "not tried: {}",
        walk.blocked.as_deref().unwrap_or("an earlier step failed")
    )
}

/// UDP ASSOCIATE or BIND at the last hop, on a connection of its own closed after the first
/// reply.
fn command_probe(ctx: &Ctx, walk: &Walk, command: Command, required: bool) -> Step {
    let n = ctx.hops.len();
    let (kind, name) = match command {
        Command::UdpAssociate => (Kind::Udp, "UDP ASSOCIATE"),
        Command::Bind => (Kind::Bind, "BIND"),
        Command::Connect => unreachable!("not a probe"),
    };
    let mut step = Step::new(kind, Some(n), format!("{name} at hop {n}"));
    step.required = required;
    if n > 1 {
        step.set(
            Status::NotApplicable,
            format!(
                "n/a (chain): a chain cannot carry {}; 'proxify run' uses it only through a \
                 single proxy",
                if kind == Kind::Udp { "UDP" } else { "BIND" }
            ),
        );
        return step;
    }
    if walk.good_hops < 1 {
        step.set(Status::NotTried, not_tried(walk));
        return step;
    }
    let hop = &ctx.hops[0];
    let version = match hop.scheme.socks_version() {
        None => {
            step.set(Status::Fail, "not possible through an HTTP CONNECT proxy");
            return step;
        }
        Some(Version::Socks4 | Version::Socks4a) if kind == Kind::Udp => {
            step.set(Status::Fail, "not possible with SOCKS4 (SOCKS5 only)");
            return step;
        }
        Some(v) => v,
    };
    let t0 = Instant::now();
    let (mut conn, peer) = match ctx.connect_first() {
        Ok(c) => c,
        Err(msg) => {
            step.time = Some(t0.elapsed());
            step.set(Status::Fail, format!("cannot connect again: {msg}"));
            return step;
        }
    };
    // "Any address": the client's address for UDP is not known in advance, and BIND takes a
    // connection from anywhere.
    let any: IpAddr = match (peer.ip(), version) {
        (IpAddr::V6(_), Version::Socks5) => Ipv6Addr::UNSPECIFIED.into(),
        _ => Ipv4Addr::UNSPECIFIED.into(),
    };
    let ex = exchange(
        &mut conn,
        hop,
        command,
        TargetAddr::Ip(SocketAddr::new(any, 0)),
        false,
        false,
        ctx.timeout,
    );
    drop(conn);
    step.time = Some(t0.elapsed());
    match ex.result {
        Ok(Outcome::Done(Some(bound))) => {
            step.field("bound", Value::Str(target_text(&bound)));
            step.set(
                Status::Ok,
                match kind {
                    Kind::Udp => format!("supported: the proxy relays at {}", target_text(&bound)),
                    _ => format!(
                        "supported: the proxy listens at {} for the incoming connection",
                        target_text(&bound)
                    ),
                },
            );
        }
        Ok(_) => step.set(Status::Ok, "supported"),
        Err(f) => {
            let detail = match &f.why {
                Why::Socks(socks::SocksError::Socks5Reply(c)) => {
                    step.field("reply", Value::Int(i64::from(*c)));
                    let what = match c {
                        7 => "not supported",
                        2 => "not allowed",
                        _ => "refused",
                    };
                    format!("{what} (SOCKS5 reply {c}: {})", socks5_reply_text(*c))
                }
                Why::Socks(socks::SocksError::Socks4Reply(c)) => {
                    step.field("reply", Value::Int(i64::from(*c)));
                    format!("refused (SOCKS4 reply {c})")
                }
                _ => format!("no: {}", f.text(ctx.timeout)),
            };
            step.set(Status::Fail, detail);
        }
    }
    step
}

/// Whether hop `i` takes greeting, authentication and request in one write.
fn pipeline_probe(
    ctx: &Ctx,
    walk: &Walk,
    i: usize,
    target: Option<&TargetAddr>,
    required: bool,
) -> Step {
    let hop = &ctx.hops[i];
    let mut step = Step::new(
        Kind::Pipeline,
        Some(i + 1),
        format!("pipelining at hop {}", i + 1),
    );
    step.required = required || hop.pipeline;
    step.field("configured", Value::Bool(hop.pipeline));
    let configured = if hop.pipeline {
        "; the hop is configured with ?pipeline=1"
    } else {
        ""
    };
    if walk.good_hops <= i {
        step.set(Status::NotTried, not_tried(walk));
        return step;
    }
    let (probe_target, what) = if i + 1 < ctx.hops.len() {
        (address_of(&ctx.hops[i + 1]), "the next hop".to_string())
    } else if let Some(t) = target {
        (t.clone(), target_text(t))
    } else if i == 0 {
        match walk.first_addr {
            Some(a) => (TargetAddr::Ip(a), "the proxy's own address".to_string()),
            None => (address_of(hop), "the proxy's own address".to_string()),
        }
    } else {
        (address_of(hop), "the proxy's own address".to_string())
    };
    step.field("target", Value::Str(target_text(&probe_target)));
    let normal = walk.hop_times[i];
    let wait = normal
        .map_or(PIPELINE_MIN_WAIT, |t| {
            (t * PIPELINE_WAIT_FACTOR).max(PIPELINE_MIN_WAIT)
        })
        .min(ctx.timeout);
    step.field("wait_ms", Value::Int(wait.as_millis() as i64));
    let (mut conn, _) = match ctx.tunnel_to(i) {
        Ok(c) => c,
        Err(msg) => {
            step.set(Status::Fail, format!("cannot reach the hop again: {msg}"));
            return step;
        }
    };
    let t0 = Instant::now();
    let ex = exchange(
        &mut conn,
        hop,
        Command::Connect,
        probe_target,
        false,
        true,
        wait,
    );
    step.time = Some(t0.elapsed());
    drop(conn);
    let compare = match (normal, ex.request_time.and(step.time)) {
        (Some(n), Some(p)) => format!(" in {}, vs {} one message at a time", fmt_ms(p), fmt_ms(n)),
        _ => String::new(),
    };
    match &ex.result {
        Ok(_) => step.set(
            Status::Ok,
            format!(
                "yes: greeting, authentication and CONNECT to {what} in one write were answered{compare}{configured}"
            ),
        ),
        Err(Failure {
            phase: Phase::Request,
            why: Why::Socks(socks::SocksError::Socks5Reply(c)),
        }) => {
            step.field("reply", Value::Int(i64::from(*c)));
            step.set(
                Status::Ok,
                format!(
                    "yes: the pipelined CONNECT to {what} was answered (reply {c}: {}; the \
                     proxy read it){configured}",
                    socks5_reply_text(*c)
                ),
            )
        }
        Err(f) => {
            let answered = if ex.received >= 4 && ex.chosen == Some(METHOD_USER_PASS) {
                "the proxy answered the greeting and the authentication, then "
            } else if ex.received >= 2 {
                "the proxy answered the greeting, then "
            } else {
                ""
            };
            let mut detail = match &f.why {
                Why::Timeout => format!(
                    "no: {answered}no reply to the pipelined messages within {} (the proxy \
                     reads one message at a time)",
                    secs_text(wait)
                ),
                _ => format!("no: {answered}{}", f.text(wait)),
            };
            if hop.pipeline {
                detail.push_str(
                    "; the hop is configured with ?pipeline=1: 'proxify run' would fail \
                     through it (remove ?pipeline=1)",
                );
            }
            step.set(Status::Fail, detail);
        }
    }
    step
}

/// Checks `chain` (first hop first) and returns the report.
pub fn check(
    cfg: &Config,
    chain: &Chain,
    target: Option<&HostPort>,
    require: &[Feature],
) -> Report {
    let ctx = Ctx {
        hops: &chain.hops,
        connect_timeout: cfg.connect_timeout,
        timeout: cfg.handshake_timeout,
    };
    let remote_dns = cfg.remote_dns(chain);
    let mut report = Report {
        chain: chain.name.clone(),
        mode: if chain.mode.uses_chain_len() {
            format!("{}, chain_len {}", chain.mode.as_str(), chain.chain_len)
        } else {
            chain.mode.as_str().to_string()
        },
        hops: chain
            .hops
            .iter()
            .map(|h| (h.masked(), h.scheme.as_str().to_string()))
            .collect(),
        remote_dns,
        target: target.map(|t| t.to_string()),
        required: {
            let mut r: Vec<&'static str> = Vec::new();
            for f in require {
                if !r.contains(&f.as_str()) {
                    r.push(f.as_str());
                }
            }
            r
        },
        notes: Vec::new(),
        steps: Vec::new(),
    };
    if chain.mode.as_str() != "strict" {
        report.notes.push(format!(
            "the chain is {}: checked as a strict chain of all its {} hops, in order",
            chain.mode.as_str(),
            chain.hops.len()
        ));
    }

    // Where the CONNECT goes: by name when names go to the proxy.
    let mut unresolved: Option<String> = None;
    let dest: Option<TargetAddr> = target.and_then(|t| {
        let resolved = match &t.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, t.port)),
            Host::Name(n) if remote_dns => {
                report
                    .notes
                    .push(format!("{t}: the name is sent to the proxy (remote DNS)"));
                let d = cfg.decide(None, Some(n), t.port);
                rule_note(&mut report, t, &d);
                return Some(TargetAddr::Domain(n.clone(), t.port));
            }
            Host::Name(n) => match (n.as_str(), t.port).to_socket_addrs() {
                Ok(mut a) => match a.next() {
                    Some(a) => {
                        report
                            .notes
                            .push(format!("{t}: resolved locally to {}", a.ip()));
                        Some(a)
                    }
                    None => {
                        unresolved = Some(format!("cannot resolve {n}: no address"));
                        None
                    }
                },
                Err(e) => {
                    unresolved = Some(format!("cannot resolve {n} locally: {e}"));
                    None
                }
            },
        }?;
        let name = match &t.host {
            Host::Name(n) => Some(n.as_str()),
            Host::Ip(_) => None,
        };
        let d = cfg.decide(Some(resolved.ip()), name, t.port);
        rule_note(&mut report, t, &d);
        let dest = match cfg.rules.dnat(resolved) {
            Some(new) => {
                report
                    .notes
                    .push(format!("dnat: {resolved} is rewritten to {new}"));
                new
            }
            None => resolved,
        };
        Some(TargetAddr::Ip(dest))
    });

    let mut steps = Vec::new();
    let w = walk(&ctx, dest.as_ref(), &mut steps);
    if let (Some(t), Some(why)) = (target, &unresolved) {
        if let Some(s) = steps.iter_mut().find(|s| s.kind == Kind::Connect) {
            s.title = format!("CONNECT {t} through the chain");
            s.required = true;
            s.set(Status::Fail, why.clone());
        }
    }
    steps.push(command_probe(
        &ctx,
        &w,
        Command::UdpAssociate,
        require.contains(&Feature::Udp),
    ));
    steps.push(command_probe(
        &ctx,
        &w,
        Command::Bind,
        require.contains(&Feature::Bind),
    ));
    let first_socks5 = chain
        .hops
        .iter()
        .position(|h| h.scheme.socks_version() == Some(Version::Socks5));
    match first_socks5 {
        None => {
            let mut s = Step::new(Kind::Pipeline, None, "pipelining");
            s.required = require.contains(&Feature::Pipeline);
            s.set(
                Status::NotApplicable,
                "n/a: no SOCKS5 hop (a pipelined handshake is a SOCKS5 matter)",
            );
            steps.push(s);
        }
        Some(f) => {
            for i in 0..chain.hops.len() {
                let is_socks5 = chain.hops[i].scheme.socks_version() == Some(Version::Socks5);
                if i == f || (is_socks5 && chain.hops[i].pipeline) {
                    steps.push(pipeline_probe(
                        &ctx,
                        &w,
                        i,
                        dest.as_ref(),
                        i == f && require.contains(&Feature::Pipeline),
                    ));
                }
            }
        }
    }
    report.steps = steps;
    report
}

/// A note when `proxify run` would not send `t` through the default chain.
fn rule_note(report: &mut Report, t: &HostPort, d: &proxify_core::rules::Decision<'_>) {
    let what = match d.verdict {
        Verdict::Proxy(name) if name == DEFAULT_CHAIN => return,
        Verdict::Proxy(name) => format!("through chain {name}"),
        Verdict::Direct => "directly".to_string(),
        Verdict::Deny => "nowhere (denied)".to_string(),
    };
    report.notes.push(format!(
        "'proxify run' would send connections to {t} {what} ({d}); checked through the \
         default chain anyway"
    ));
}

/// `proxify check`: prints the report; exits 0 (all asked for works), 1, or 2 (usage).
pub fn main(args: CheckArgs) -> ! {
    let eff = match crate::settings::effective(&args.settings) {
        Ok(e) => e,
        Err(msg) => crate::fail(crate::EXIT_USAGE, &msg),
    };
    let target = match args.target.as_deref().map(parse_host_port).transpose() {
        Ok(t) => t,
        Err(msg) => crate::fail(crate::EXIT_USAGE, &format!("HOST:PORT {msg}")),
    };
    let Some(chain) = eff.config.default_chain() else {
        crate::fail(crate::EXIT_USAGE, crate::NO_PROXY)
    };
    let quiet = args.settings.quiet;
    if !quiet {
        for w in &eff.warnings {
            eprintln!("proxify: {w}");
        }
    }
    let mut report = check(&eff.config, chain, target.as_ref(), &args.require);
    // Whether static and Go programs can run supervised here (see proxify-supervise).
    report
        .notes
        .push(match proxify_supervise::kernel_support() {
            None => "supervision (static and Go programs): supported by this kernel".to_string(),
            Some(why) => format!(
                "supervision (static and Go programs): not available: {why} (they are refused)"
            ),
        });
    if !quiet {
        let text = if args.json {
            crate::report::json(&report)
        } else {
            let utf8 = crate::report::utf8_locale(|k| std::env::var(k).ok());
            crate::report::human(&report, utf8)
        };
        crate::write_stdout(&text);
    }
    std::process::exit(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPort {
        parse_host_port(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn host_port() {
        assert_eq!(
            hp("example.com:443"),
            HostPort {
                host: Host::Name("example.com".into()),
                port: 443
            }
        );
        assert_eq!(
            hp("192.0.2.1:22").host,
            Host::Ip("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            hp("[2001:db8::1]:80").host,
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(hp("[2001:db8::1]:80").to_string(), "[2001:db8::1]:80");
        assert_eq!(hp("h:65535").port, 65535);
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+1",
            ":80",
            "2001:db8::1:80",
            "[2001:db8::1]80",
            "[2001:db8::1:80",
            "[nope]:80",
            "a b:80",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
        assert!(parse_host_port("2001:db8::1:80")
            .unwrap_err()
            .contains("brackets"));
    }

    #[test]
    fn names() {
        assert_eq!(method_name(0), "none");
        assert_eq!(method_name(2), "username/password");
        assert_eq!(method_name(0xFF), "no acceptable method (0xFF)");
        assert_eq!(method_name(0x80), "method 0x80");
        assert_eq!(socks5_reply_text(7), "command not supported");
        assert_eq!(socks5_reply_text(42), "unassigned code");
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
