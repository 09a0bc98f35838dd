//! Sans-IO SOCKS4 / SOCKS4a / SOCKS5 client (RFC 1928, RFC 1929, SOCKS4 and 4a).
//!
//! The [`Client`] never touches a socket. The driver loop is:
//!
//! ```text
//! let mut c = Client::new(request)?;
//! loop {
//!     while !c.pending_output().is_empty() { let n = write(c.pending_output()); c.consume_output(n); }
//!     match c.state() { State::Done(reply) => break, State::Failed(e) => return Err(e), State::Running => {} }
//!     let want = c.wanted();             // exact byte count; never past the end of a proxy message
//!     let n = read(&mut buf[..want]);    // n == 0 -> c.eof()
//!     c.feed(&buf[..n])?;
//! }
//! ```
//!
//! Because `wanted()` never asks for bytes beyond the current proxy message, the driver never
//! swallows application data that the destination sends right after the reply (SSH and FTP
//! banners), and it never reads one byte at a time either.
//!
//! Size: ~800 lines, no unit tests here (they are in tests/socks.rs): the public types, errors
//! and reply texts (~275 lines; the CLI's `check` reuses them), one client for SOCKS4, 4a and 5
//! sharing its phases (~465 lines), and the UDP header codec.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version spoken to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Socks4,
    Socks4a,
    Socks5,
}

/// SOCKS command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
    UdpAssociate,
}

/// Destination (or bound) address as it travels in the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    Ip(SocketAddr),
    /// Host name (at most 255 bytes) and port.
    Domain(String, u16),
}

/// `203.0.113.1:80`, `[2001:db8::1]:443`, `example.com:80`: how every message shows a target.
impl std::fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetAddr::Ip(a) => write!(f, "{a}"),
            TargetAddr::Domain(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// Username/password (RFC 1929 for SOCKS5; the user alone is the SOCKS4 USERID).
///
/// SOCKS5 needs a user of 1 to 255 bytes and a password of 0 to 255 bytes (an empty password
/// is sent with PLEN 0, as curl does for `socks5h://user@proxy`).
///
/// `Debug` shows the user but never the password.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub pass: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("pass", &"***")
            .finish()
    }
}

/// Everything the client needs to know to run one handshake.
#[derive(Clone, Debug)]
pub struct Request {
    pub version: Version,
    pub command: Command,
    pub target: TargetAddr,
    pub credentials: Option<Credentials>,
    /// SOCKS5 only: send greeting, auth and request in one write when exactly one method is
    /// offered (not every server accepts it; off by default).
    pub pipeline: bool,
}

/// Final reply of a successful command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// BND.ADDR / BND.PORT (SOCKS4: DSTIP / DSTPORT of the reply).
    pub bound: TargetAddr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// More output to send or more input wanted.
    Running,
    /// The command succeeded. For BIND this is the first reply; call
    /// [`Client::expect_second_reply`] to wait for the incoming connection's reply.
    Done(Reply),
    Failed(SocksError),
}

/// Why a handshake failed. [`SocksError::errno`] maps each to the errno a program should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocksError {
    /// SOCKS5 REP field other than 0 (1..=8 are RFC 1928 codes; anything else is unassigned).
    Socks5Reply(u8),
    /// SOCKS4 CD field other than 90 (91 rejected, 92 identd unreachable, 93 identd mismatch).
    Socks4Reply(u8),
    /// The proxy accepted none of the offered methods (0xFF), or chose one not offered.
    NoAcceptableMethod,
    /// RFC 1929 sub-negotiation status other than 0.
    AuthRejected,
    /// Credentials required by the proxy but none configured.
    AuthRequired,
    /// Malformed reply: wrong version byte, bad ATYP, nonzero reserved byte, ...
    Malformed(&'static str),
    /// The proxy closed the connection before the reply was complete.
    Truncated,
    /// The request cannot be expressed: e.g. IPv6 target over SOCKS4, a domain over plain
    /// SOCKS4, a name or credential longer than 255 bytes, a UDP ASSOCIATE over SOCKS4.
    Unsupported(Unsupported),
    /// Driver misuse: fed more bytes than wanted(), fed after completion.
    Internal(&'static str),
}

/// A request SOCKS cannot express, by kind: each kind has its own errno and message, so no
/// caller compares texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// A host name over plain SOCKS4.
    NameOverSocks4,
    /// An IPv6 address over SOCKS4 or SOCKS4a.
    Ipv6OverSocks4,
    /// UDP ASSOCIATE (or another SOCKS5-only command) over SOCKS4.
    UdpOverSocks4,
    NameEmpty,
    NameTooLong,
    NameNul,
    /// SOCKS5 user name not 1 to 255 bytes.
    UserLen,
    /// SOCKS5 password over 255 bytes.
    PassLen,
    /// A NUL byte in a SOCKS4 user id.
    UserNul,
}

impl Unsupported {
    /// The errno a program sees: the address family, the command, or an invalid argument.
    pub fn errno(self) -> i32 {
        match self {
            Unsupported::NameOverSocks4 | Unsupported::Ipv6OverSocks4 => libc::EAFNOSUPPORT,
            Unsupported::UdpOverSocks4 => libc::EOPNOTSUPP,
            Unsupported::NameEmpty
            | Unsupported::NameTooLong
            | Unsupported::NameNul
            | Unsupported::UserLen
            | Unsupported::PassLen
            | Unsupported::UserNul => libc::EINVAL,
        }
    }
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsupported::NameOverSocks4 => {
                "SOCKS4 cannot send a host name (use socks4a or socks5h)"
            }
            Unsupported::Ipv6OverSocks4 => "SOCKS4 cannot send an IPv6 address (use socks5)",
            Unsupported::UdpOverSocks4 => "UDP ASSOCIATE needs SOCKS5",
            Unsupported::NameEmpty => "empty host name",
            Unsupported::NameTooLong => "host name longer than 255 bytes",
            Unsupported::NameNul => "host name contains a NUL byte",
            Unsupported::UserLen => "user name must be 1 to 255 bytes for SOCKS5",
            Unsupported::PassLen => "password must be at most 255 bytes for SOCKS5",
            Unsupported::UserNul => "SOCKS4 user id contains a NUL byte",
        })
    }
}

/// The most [`Client::wanted`] ever asks for: a SOCKS5 reply carrying a 255-byte name
/// (VER REP RSV ATYP LEN + 255 + PORT). A read buffer of this size is always enough.
pub const MAX_WANTED: usize = 4 + 1 + 255 + 2;

/// SOCKS5 method "no authentication required".
pub const METHOD_NO_AUTH: u8 = 0x00;
/// SOCKS5 method "username/password" (RFC 1929).
pub const METHOD_USER_PASS: u8 = 0x02;
/// SOCKS5 answer "no acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;

/// The name of a SOCKS5 authentication method, for messages (`proxify check`).
pub fn method_name(m: u8) -> String {
    match m {
        METHOD_NO_AUTH => "none".to_string(),
        0x01 => "GSSAPI".to_string(),
        METHOD_USER_PASS => "username/password".to_string(),
        METHOD_NONE_ACCEPTABLE => "no acceptable method (0xFF)".to_string(),
        m => format!("method 0x{m:02X}"),
    }
}

/// The meaning of a SOCKS5 reply code (RFC 1928), the one text for the shim's messages and
/// `proxify check`.
pub fn socks5_reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned code",
    }
}

/// The meaning of a SOCKS4 reply code.
pub fn socks4_reply_text(code: u8) -> &'static str {
    match code {
        90 => "request granted",
        91 => "request rejected or failed",
        92 => "proxy cannot reach identd on the client",
        93 => "identd reports a different user id",
        _ => "unassigned code",
    }
}

impl SocksError {
    /// The errno a hooked call should fail with.
    pub fn errno(&self) -> i32 {
        match self {
            SocksError::Socks5Reply(code) => match code {
                1 | 5 => libc::ECONNREFUSED,
                2 => libc::EACCES,
                3 => libc::ENETUNREACH,
                4 => libc::EHOSTUNREACH,
                6 => libc::ETIMEDOUT,
                7 => libc::EOPNOTSUPP,
                8 => libc::EAFNOSUPPORT,
                _ => libc::EPROTO,
            },
            SocksError::Socks4Reply(code) => match code {
                91 => libc::ECONNREFUSED,
                92 | 93 => libc::EACCES,
                _ => libc::EPROTO,
            },
            SocksError::NoAcceptableMethod
            | SocksError::AuthRejected
            | SocksError::AuthRequired => libc::EACCES,
            SocksError::Malformed(_) => libc::EPROTO,
            SocksError::Truncated => libc::ECONNRESET,
            SocksError::Unsupported(what) => what.errno(),
            SocksError::Internal(_) => libc::EIO,
        }
    }
}

impl std::fmt::Display for SocksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocksError::Socks5Reply(code) => write!(
                f,
                "proxy refused the connection (SOCKS5 reply {code}: {})",
                socks5_reply_text(*code)
            ),
            SocksError::Socks4Reply(code) => write!(
                f,
                "proxy refused the connection (SOCKS4 reply {code}: {})",
                socks4_reply_text(*code)
            ),
            SocksError::NoAcceptableMethod => {
                f.write_str("proxy accepted none of the offered authentication methods")
            }
            SocksError::AuthRejected => f.write_str("proxy rejected the username/password"),
            SocksError::AuthRequired => {
                f.write_str("proxy requires a username/password but none is configured")
            }
            SocksError::Malformed(what) => write!(f, "malformed reply from proxy: {what}"),
            SocksError::Truncated => {
                f.write_str("proxy closed the connection before its reply was complete")
            }
            SocksError::Unsupported(what) => write!(f, "unsupported SOCKS request: {what}"),
            SocksError::Internal(what) => write!(f, "internal error in the SOCKS client: {what}"),
        }
    }
}

impl std::error::Error for SocksError {}

/// Which proxy message is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// SOCKS5 method selection (2 bytes).
    Method,
    /// RFC 1929 status (2 bytes).
    Auth,
    /// The command reply (SOCKS5: 10, 22 or 7 + name bytes; SOCKS4: 8 bytes).
    Reply,
}

/// The client state machine.
///
/// Lifecycle notes: an error from [`Client::feed`] (including driver misuse while running)
/// moves the client to [`State::Failed`]. Calls after the end ([`Client::feed`] and
/// [`Client::eof`] after `Done`, or [`Client::expect_second_reply`] when not waiting for a
/// BIND's second reply) return [`SocksError::Internal`] and leave the state as it was; after
/// `Failed` they return or keep the first error.
pub struct Client {
    version: Version,
    command: Command,
    /// SOCKS5: the single method offered.
    method: u8,
    out: Vec<u8>,
    out_pos: usize,
    /// Not pipelined: the RFC 1929 request, sent after the method selection (else empty).
    auth_msg: Vec<u8>,
    /// Not pipelined: the command request, sent when its turn comes (else empty).
    request_msg: Vec<u8>,
    phase: Phase,
    /// The bytes of the current proxy message received so far.
    buf: Vec<u8>,
    state: State,
    second_reply: bool,
}

impl std::fmt::Debug for Client {
    /// Leaves out the queued bytes (they may hold the password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("version", &self.version)
            .field("command", &self.command)
            .field("phase", &self.phase)
            .field("state", &self.state)
            .field("pending_output", &self.pending_output().len())
            .field("received", &self.buf.len())
            .finish()
    }
}

/// `::ffff:a.b.c.d` travels as the IPv4 address it is.
fn unmap(addr: &TargetAddr) -> TargetAddr {
    match addr {
        TargetAddr::Ip(SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(v4), v6.port())),
            None => addr.clone(),
        },
        _ => addr.clone(),
    }
}

fn check_name(name: &str) -> Result<u8, SocksError> {
    match u8::try_from(name.len()) {
        Ok(0) => Err(SocksError::Unsupported(Unsupported::NameEmpty)),
        Ok(n) => Ok(n),
        Err(_) => Err(SocksError::Unsupported(Unsupported::NameTooLong)),
    }
}

/// ATYP, address and port as in SOCKS5 requests and UDP headers.
fn encode_addr(addr: &TargetAddr, out: &mut Vec<u8>) -> Result<(), SocksError> {
    match unmap(addr) {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        TargetAddr::Domain(name, port) => {
            let len = check_name(&name)?;
            out.push(3);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(())
}

enum AddrError {
    Short,
    BadType,
}

/// Parses ATYP + address + port at the start of `d`; returns it and the bytes used.
fn parse_addr(d: &[u8]) -> Result<(TargetAddr, usize), AddrError> {
    match d.first() {
        None => Err(AddrError::Short),
        Some(1) => {
            let b: [u8; 6] = d
                .get(1..7)
                .and_then(|s| s.try_into().ok())
                .ok_or(AddrError::Short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[4], b[5]]);
            Ok((TargetAddr::Ip(SocketAddr::new(IpAddr::V4(ip), port)), 7))
        }
        Some(4) => {
            let b: [u8; 18] = d
                .get(1..19)
                .and_then(|s| s.try_into().ok())
                .ok_or(AddrError::Short)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[16], b[17]]);
            let ip = IpAddr::V6(Ipv6Addr::from(ip));
            Ok((TargetAddr::Ip(SocketAddr::new(ip, port)), 19))
        }
        Some(3) => {
            let len = usize::from(*d.get(1).ok_or(AddrError::Short)?);
            let name = d.get(2..2 + len).ok_or(AddrError::Short)?;
            let p = d.get(2 + len..4 + len).ok_or(AddrError::Short)?;
            let port = match p {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                _ => return Err(AddrError::Short),
            };
            let name = String::from_utf8_lossy(name).into_owned();
            Ok((TargetAddr::Domain(name, port), 4 + len))
        }
        Some(_) => Err(AddrError::BadType),
    }
}

/// Length of the SOCKS5 reply as far as it is known from its first bytes: 5 until ATYP and
/// the first address byte are in, then the exact total.
fn socks5_reply_len(buf: &[u8]) -> usize {
    match (buf.get(3), buf.get(4)) {
        (Some(1), Some(_)) => 4 + 4 + 2,
        (Some(4), Some(_)) => 4 + 16 + 2,
        (Some(3), Some(&n)) => 4 + 1 + usize::from(n) + 2,
        _ => 5,
    }
}

impl Client {
    /// Validates the request and queues the first bytes to send.
    ///
    /// IPv4-mapped IPv6 targets (`::ffff:a.b.c.d`) are sent as IPv4 addresses.
    pub fn new(req: Request) -> Result<Client, SocksError> {
        let target = unmap(&req.target);
        let mut c = Client {
            version: req.version,
            command: req.command,
            method: METHOD_NO_AUTH,
            out: Vec::new(),
            out_pos: 0,
            auth_msg: Vec::new(),
            request_msg: Vec::new(),
            phase: Phase::Reply,
            buf: Vec::with_capacity(MAX_WANTED),
            state: State::Running,
            second_reply: false,
        };
        match req.version {
            Version::Socks5 => {
                let cmd = match req.command {
                    Command::Connect => 1,
                    Command::Bind => 2,
                    Command::UdpAssociate => 3,
                };
                // VER CMD RSV, then ATYP, the address (a name: its length byte and up to 255
                // bytes) and the port: allocated once at its largest.
                let mut request = Vec::with_capacity(3 + 1 + 1 + 255 + 2);
                request.extend_from_slice(&[5, cmd, 0]);
                encode_addr(&target, &mut request)?;
                let mut auth = Vec::new();
                if let Some(cr) = &req.credentials {
                    let ulen = u8::try_from(cr.user.len())
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or(SocksError::Unsupported(Unsupported::UserLen))?;
                    // An empty password (PLEN 0) is sent as such, as curl does for
                    // `socks5h://user@proxy`.
                    let plen = u8::try_from(cr.pass.len())
                        .map_err(|_| SocksError::Unsupported(Unsupported::PassLen))?;
                    auth.reserve(3 + cr.user.len() + cr.pass.len());
                    auth.push(1);
                    auth.push(ulen);
                    auth.extend_from_slice(&cr.user);
                    auth.push(plen);
                    auth.extend_from_slice(&cr.pass);
                    c.method = METHOD_USER_PASS;
                }
                c.phase = Phase::Method;
                if req.pipeline {
                    c.out.reserve_exact(3 + auth.len() + request.len());
                }
                c.out.extend_from_slice(&[5, 1, c.method]);
                if req.pipeline {
                    c.out.append(&mut auth);
                    c.out.append(&mut request);
                } else {
                    c.auth_msg = auth;
                    c.request_msg = request;
                }
            }
            Version::Socks4 | Version::Socks4a => {
                let cd = match req.command {
                    Command::Connect => 1,
                    Command::Bind => 2,
                    Command::UdpAssociate => {
                        return Err(SocksError::Unsupported(Unsupported::UdpOverSocks4))
                    }
                };
                let user: &[u8] = req.credentials.as_ref().map_or(&[], |cr| &cr.user);
                if user.contains(&0) {
                    return Err(SocksError::Unsupported(Unsupported::UserNul));
                }
                let mut out = vec![4, cd];
                match &target {
                    TargetAddr::Ip(SocketAddr::V4(a)) => {
                        out.extend_from_slice(&a.port().to_be_bytes());
                        out.extend_from_slice(&a.ip().octets());
                        out.extend_from_slice(user);
                        out.push(0);
                    }
                    TargetAddr::Ip(SocketAddr::V6(_)) => {
                        return Err(SocksError::Unsupported(Unsupported::Ipv6OverSocks4))
                    }
                    TargetAddr::Domain(name, port) => {
                        if req.version == Version::Socks4 {
                            return Err(SocksError::Unsupported(Unsupported::NameOverSocks4));
                        }
                        check_name(name)?;
                        if name.as_bytes().contains(&0) {
                            return Err(SocksError::Unsupported(Unsupported::NameNul));
                        }
                        out.extend_from_slice(&port.to_be_bytes());
                        out.extend_from_slice(&[0, 0, 0, 1]);
                        out.extend_from_slice(user);
                        out.push(0);
                        out.extend_from_slice(name.as_bytes());
                        out.push(0);
                    }
                }
                c.out = out;
            }
        }
        Ok(c)
    }

    /// Bytes that must be written to the proxy now (empty when nothing is pending).
    pub fn pending_output(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or(&[])
    }

    /// Marks `n` bytes of [`Client::pending_output`] as written. Marking more than is pending
    /// is driver misuse: the client fails with [`SocksError::Internal`].
    pub fn consume_output(&mut self, n: usize) {
        let pending = self.pending_output().len();
        if n > pending {
            self.out_pos = self.out.len();
            if self.state == State::Running {
                self.fail(SocksError::Internal(
                    "consumed more output than was pending",
                ));
            }
        } else {
            self.out_pos += n;
        }
        if self.out_pos >= self.out.len() {
            // Sent: do not keep the password around.
            self.out.fill(0);
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Exact number of bytes to read next; 0 when output is pending or the handshake is over.
    /// Never more than what remains of the proxy message being read (at most [`MAX_WANTED`]).
    pub fn wanted(&self) -> usize {
        if self.state != State::Running || !self.pending_output().is_empty() {
            return 0;
        }
        let total = match (self.phase, self.version) {
            (Phase::Method | Phase::Auth, _) => 2,
            (Phase::Reply, Version::Socks4 | Version::Socks4a) => 8,
            (Phase::Reply, Version::Socks5) => socks5_reply_len(&self.buf),
        };
        total.saturating_sub(self.buf.len())
    }

    /// Feeds bytes read from the proxy (`data.len() <= wanted()`). Errors also move the
    /// client to [`State::Failed`].
    ///
    /// A failure is reported as soon as the bytes that prove it are in (a SOCKS5 REP byte
    /// other than 0 fails without waiting for the address). The reserved byte of a SOCKS5
    /// reply is not checked (as most clients do). Feeding after the handshake ended returns
    /// [`SocksError::Internal`] and leaves the state unchanged.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), SocksError> {
        if self.state != State::Running {
            return Err(SocksError::Internal("data fed after the handshake ended"));
        }
        if data.len() > self.wanted() {
            return Err(self.fail(SocksError::Internal("fed more bytes than wanted")));
        }
        self.buf.extend_from_slice(data);
        let step = match self.phase {
            Phase::Method => self.on_method(),
            Phase::Auth => self.on_auth(),
            Phase::Reply => match self.version {
                Version::Socks5 => self.on_socks5_reply(),
                Version::Socks4 | Version::Socks4a => self.on_socks4_reply(),
            },
        };
        step.map_err(|e| self.fail(e))
    }

    /// The proxy closed the connection (read returned 0).
    ///
    /// While running: [`SocksError::Truncated`], and the client moves to `Failed`. After
    /// `Done`: [`SocksError::Internal`], state unchanged. After `Failed`: the recorded error.
    pub fn eof(&mut self) -> SocksError {
        match &self.state {
            State::Running => self.fail(SocksError::Truncated),
            State::Done(_) => SocksError::Internal("end of stream reported after the handshake"),
            State::Failed(e) => e.clone(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// BIND only: after the first reply, wait for the second one (the incoming connection).
    /// Anything else (not BIND, not `Done`, called twice) returns [`SocksError::Internal`]
    /// and leaves the state as it was.
    pub fn expect_second_reply(&mut self) -> Result<(), SocksError> {
        if self.command != Command::Bind
            || self.second_reply
            || !matches!(self.state, State::Done(_))
        {
            return Err(SocksError::Internal(
                "expect_second_reply is only valid once, after the first BIND reply",
            ));
        }
        self.second_reply = true;
        self.state = State::Running;
        self.phase = Phase::Reply;
        self.buf.clear();
        Ok(())
    }

    fn fail(&mut self, e: SocksError) -> SocksError {
        self.state = State::Failed(e.clone());
        self.buf.clear();
        self.auth_msg.fill(0);
        self.auth_msg.clear();
        e
    }

    fn next_message(&mut self, phase: Phase) {
        self.buf.clear();
        self.phase = phase;
        let msg = match phase {
            Phase::Auth => std::mem::take(&mut self.auth_msg),
            _ => std::mem::take(&mut self.request_msg),
        };
        // Pipelined: everything was queued at once and the message is empty here.
        if !msg.is_empty() {
            self.out = msg;
            self.out_pos = 0;
        }
    }

    fn on_method(&mut self) -> Result<(), SocksError> {
        if self.buf.first().is_some_and(|&v| v != 5) {
            return Err(SocksError::Malformed(
                "bad version byte in the method selection",
            ));
        }
        let Some(&m) = self.buf.get(1) else {
            return Ok(());
        };
        if m != self.method {
            return Err(match m {
                METHOD_NONE_ACCEPTABLE => SocksError::NoAcceptableMethod,
                METHOD_USER_PASS if self.method == METHOD_NO_AUTH => SocksError::AuthRequired,
                // A method we did not offer.
                _ => SocksError::NoAcceptableMethod,
            });
        }
        if m == METHOD_USER_PASS {
            self.next_message(Phase::Auth);
        } else {
            self.next_message(Phase::Reply);
        }
        Ok(())
    }

    fn on_auth(&mut self) -> Result<(), SocksError> {
        // RFC 1929 says 1; some servers answer with 5: accept both.
        if self.buf.first().is_some_and(|&v| v != 1 && v != 5) {
            return Err(SocksError::Malformed(
                "bad version byte in the authentication reply",
            ));
        }
        let Some(&status) = self.buf.get(1) else {
            return Ok(());
        };
        if status != 0 {
            return Err(SocksError::AuthRejected);
        }
        self.next_message(Phase::Reply);
        Ok(())
    }

    fn on_socks5_reply(&mut self) -> Result<(), SocksError> {
        if self.buf.first().is_some_and(|&v| v != 5) {
            return Err(SocksError::Malformed("bad version byte"));
        }
        if let Some(&rep) = self.buf.get(1) {
            if rep != 0 {
                return Err(SocksError::Socks5Reply(rep));
            }
        }
        if self.buf.get(3).is_some_and(|&a| !matches!(a, 1 | 3 | 4)) {
            return Err(SocksError::Malformed("bad address type"));
        }
        if self.buf.len() < 5 || self.buf.len() < socks5_reply_len(&self.buf) {
            return Ok(());
        }
        let bound = match parse_addr(self.buf.get(3..).unwrap_or(&[])) {
            Ok((addr, _)) => addr,
            Err(AddrError::Short) => return Err(SocksError::Internal("reply length mismatch")),
            Err(AddrError::BadType) => return Err(SocksError::Malformed("bad address type")),
        };
        self.done(bound);
        Ok(())
    }

    fn on_socks4_reply(&mut self) -> Result<(), SocksError> {
        // VN should be 0; some servers send 4.
        if self.buf.first().is_some_and(|&v| v != 0 && v != 4) {
            return Err(SocksError::Malformed("bad version byte"));
        }
        if let Some(&cd) = self.buf.get(1) {
            if cd != 90 {
                return Err(SocksError::Socks4Reply(cd));
            }
        }
        if let [_, _, p0, p1, a, b, c, d] = self.buf[..] {
            let bound = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                u16::from_be_bytes([p0, p1]),
            );
            self.done(TargetAddr::Ip(bound));
        }
        Ok(())
    }

    fn done(&mut self, bound: TargetAddr) {
        self.buf.clear();
        self.state = State::Done(Reply { bound });
    }
}

/// RFC 1928 section 7 UDP request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub addr: TargetAddr,
}

/// Appends the UDP request header for `addr` (FRAG 0) to `out`. IPv4-mapped IPv6 addresses
/// are written as IPv4. On error `out` is left unchanged.
pub fn encode_udp_header(addr: &TargetAddr, out: &mut Vec<u8>) -> Result<(), SocksError> {
    let mut h = Vec::with_capacity(MAX_WANTED);
    h.extend_from_slice(&[0, 0, 0]);
    encode_addr(addr, &mut h)?;
    out.extend_from_slice(&h);
    Ok(())
}

/// Parses a UDP datagram from the relay: returns the header and the offset of the payload.
/// FRAG is returned as is (a caller that does not reassemble drops FRAG != 0).
pub fn parse_udp_header(datagram: &[u8]) -> Result<(UdpHeader, usize), SocksError> {
    let (frag, rest) = match datagram {
        [0, 0, frag, rest @ ..] => (*frag, rest),
        [_, _, _, ..] => {
            return Err(SocksError::Malformed(
                "nonzero reserved bytes in UDP header",
            ))
        }
        _ => {
            return Err(SocksError::Malformed(
                "UDP datagram shorter than its header",
            ))
        }
    };
    match parse_addr(rest) {
        Ok((addr, n)) => Ok((UdpHeader { frag, addr }, 3 + n)),
        Err(AddrError::Short) => Err(SocksError::Malformed(
            "UDP datagram shorter than its header",
        )),
        Err(AddrError::BadType) => Err(SocksError::Malformed("bad address type in UDP header")),
    }
}
