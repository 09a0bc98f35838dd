//! Sans-IO HTTP CONNECT client (RFC 9110 section 9.3.6), with Basic proxy authentication
//! (RFC 7617) sent in `Proxy-Authorization`.
//!
//! Same driving style as [`crate::socks::Client`], except for reading: an HTTP reply has no
//! length known in advance, so the driver *peeks* at what arrived and the client says how
//! many of those bytes belong to the proxy's reply. Only those are then taken off the socket,
//! so the data the destination sends right after the reply (an SSH or SMTP banner) stays in
//! the socket for the program:
//!
//! ```text
//! let mut c = Client::new(request)?;
//! loop {
//!     while !c.pending_output().is_empty() { let n = write(c.pending_output()); c.consume_output(n); }
//!     match c.state() { State::Done(reply) => break, State::Failed(e) => return Err(e), State::Running => {} }
//!     let n = recv(fd, &mut buf[..c.peek_limit().min(buf.len())], MSG_PEEK); // nothing consumed
//!     if n == 0 { return Err(c.eof()); }
//!     let take = c.feed_peeked(&buf[..n])?;   // bytes of the reply among those n
//!     recv_exactly(fd, take);                  // drop exactly those (they are already queued)
//! }
//! ```
//!
//! Every byte handed to [`Client::feed_peeked`] up to the returned count is taken as read:
//! the driver must consume exactly that many before it peeks again (peeking the same bytes
//! twice would feed them twice). The count is `n` while the header block goes on and stops
//! right after the empty line that ends it. A header block (with any `1xx` interim
//! responses before it) longer than [`MAX_HEADER`] bytes is an error.
//!
//! Status `200..=299` is success; every other final status fails the connection, with
//! [`HttpError::errno`] giving the errno for the program.
//!
//! Size: ~830 lines, ~375 of them unit tests (11: every split of a reply, refusals and their
//! errno, malformed and truncated replies, garbage) of one sans-IO client.

use crate::socks::{Credentials, TargetAddr};
use std::net::{IpAddr, SocketAddr};

/// The most bytes the reply's header block (interim `1xx` responses included) may take.
pub const MAX_HEADER: usize = 16 * 1024;

/// Longest reason phrase kept for messages.
const MAX_REASON: usize = 64;

/// What to ask the proxy.
#[derive(Clone, Debug)]
pub struct Request {
    /// Where the proxy should connect: an address, or a name the proxy resolves.
    pub target: TargetAddr,
    /// Sent as `Proxy-Authorization: Basic base64(user ":" pass)`. The user must not contain
    /// `:` (RFC 7617).
    pub credentials: Option<Credentials>,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The final status, `200..=299`.
    pub status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Output to send or more of the reply to read.
    Running,
    /// The tunnel is open: the next byte on the socket is the destination's.
    Done(Reply),
    Failed(HttpError),
}

/// Why a CONNECT failed. [`HttpError::errno`] maps each to the errno a program should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// A final status other than 2xx and 407, with the reason phrase (printable ASCII only,
    /// shortened).
    Status(u16, String),
    /// 407 and no credentials configured.
    AuthRequired,
    /// 407 although credentials were sent.
    AuthRejected,
    /// Not an HTTP/1.x reply, or a bad status line.
    Malformed(&'static str),
    /// The header block went past [`MAX_HEADER`] bytes.
    HeaderTooLong,
    /// The proxy closed the connection before the end of the header block.
    Truncated,
    /// The request cannot be written: a name with characters a request line cannot carry,
    /// a user name containing `:`.
    Unsupported(Unsupported),
    /// Driver misuse: fed while output was pending, fed after the end.
    Internal(&'static str),
}

impl HttpError {
    /// The errno a hooked call should fail with.
    pub fn errno(&self) -> i32 {
        match self {
            HttpError::Status(code, _) => match code {
                403 => libc::EACCES,
                504 => libc::ETIMEDOUT,
                // 502 (the proxy could not reach the destination) and everything else.
                _ => libc::ECONNREFUSED,
            },
            HttpError::AuthRequired | HttpError::AuthRejected => libc::EACCES,
            HttpError::Malformed(_) | HttpError::HeaderTooLong => libc::EPROTO,
            HttpError::Truncated => libc::ECONNRESET,
            HttpError::Unsupported(_) => libc::EINVAL,
            HttpError::Internal(_) => libc::EIO,
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Status(code, reason) if reason.is_empty() => {
                write!(f, "HTTP proxy refused the connection (status {code})")
            }
            HttpError::Status(code, reason) => {
                write!(
                    f,
                    "HTTP proxy refused the connection (status {code} {reason})"
                )
            }
            HttpError::AuthRequired => {
                f.write_str("HTTP proxy requires a username/password but none is configured")
            }
            HttpError::AuthRejected => f.write_str("HTTP proxy rejected the username/password"),
            HttpError::Malformed(what) => write!(f, "malformed reply from HTTP proxy: {what}"),
            HttpError::HeaderTooLong => write!(
                f,
                "malformed reply from HTTP proxy: header longer than {MAX_HEADER} bytes"
            ),
            HttpError::Truncated => {
                f.write_str("HTTP proxy closed the connection before its reply was complete")
            }
            HttpError::Unsupported(what) => write!(f, "unsupported CONNECT request: {what}"),
            HttpError::Internal(what) => {
                write!(f, "internal error in the HTTP CONNECT client: {what}")
            }
        }
    }
}

impl std::error::Error for HttpError {}

/// A CONNECT request that cannot be written, by kind (every kind is EINVAL to a program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// A name with characters a request line cannot carry, or of a bad length.
    Name,
    /// A user name with ':', which HTTP Basic cannot carry.
    UserColon,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsupported::Name => {
                "host name must be 1 to 255 letters, digits, '-', '.', '_' or '~' for HTTP CONNECT"
            }
            Unsupported::UserColon => "user name contains ':', which HTTP Basic cannot carry",
        })
    }
}

/// The CONNECT state machine. See the module documentation for the driver loop.
pub struct Client {
    out: Vec<u8>,
    out_pos: usize,
    state: State,
    had_credentials: bool,
    /// Bytes of the reply taken so far (all header blocks).
    seen: usize,
    /// The current block's status line while it is being read.
    status_line: Vec<u8>,
    /// Still on the status line of the current block.
    in_status_line: bool,
    /// Bytes of the current header line (other than the status line), CR excluded.
    line_len: usize,
    /// The status of the current block, once its line is in.
    status: u16,
}

/// `host:port` as it goes in the request line (IPv6 in brackets, IPv4-mapped as IPv4).
fn authority(target: &TargetAddr) -> Result<String, HttpError> {
    match target {
        TargetAddr::Ip(a) => {
            let ip = match a.ip() {
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                },
                v4 => v4,
            };
            Ok(SocketAddr::new(ip, a.port()).to_string())
        }
        TargetAddr::Domain(name, port) => {
            let ok = !name.is_empty()
                && name.len() <= 255
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !ok {
                return Err(HttpError::Unsupported(Unsupported::Name));
            }
            Ok(format!("{name}:{port}"))
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(input: &[u8], out: &mut Vec<u8>) {
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// Printable ASCII of `b`, shortened, for messages.
fn reason_text(b: &[u8]) -> String {
    let mut s: String = b
        .iter()
        .take(MAX_REASON)
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect();
    if b.len() > MAX_REASON {
        s.push_str("...");
    }
    s.trim().to_string()
}

/// `HTTP/1.x SSS[ reason]` (CR already removed) -> (status, reason).
fn parse_status_line(line: &[u8]) -> Result<(u16, &[u8]), HttpError> {
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or(HttpError::Malformed("not an HTTP/1.x status line"))?;
    let (minor, rest) = rest
        .split_first()
        .ok_or(HttpError::Malformed("not an HTTP/1.x status line"))?;
    if !minor.is_ascii_digit() {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let rest = rest
        .strip_prefix(b" ")
        .ok_or(HttpError::Malformed("bad status line"))?;
    let code = match rest.get(..3) {
        Some(&[a, b, c]) if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(HttpError::Malformed("bad status code")),
    };
    if !(100..=599).contains(&code) {
        return Err(HttpError::Malformed("bad status code"));
    }
    let reason = match rest.get(3..) {
        None | Some([]) => &[][..],
        Some([b' ', reason @ ..]) => reason,
        Some(_) => return Err(HttpError::Malformed("bad status code")),
    };
    Ok((code, reason))
}

impl Client {
    /// Validates the request and queues it.
    pub fn new(req: Request) -> Result<Client, HttpError> {
        let auth = authority(&req.target)?;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"CONNECT ");
        out.extend_from_slice(auth.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(auth.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(cr) = &req.credentials {
            if cr.user.contains(&b':') {
                return Err(HttpError::Unsupported(Unsupported::UserColon));
            }
            let mut plain = Vec::with_capacity(cr.user.len() + 1 + cr.pass.len());
            plain.extend_from_slice(&cr.user);
            plain.push(b':');
            plain.extend_from_slice(&cr.pass);
            out.extend_from_slice(b"Proxy-Authorization: Basic ");
            base64(&plain, &mut out);
            plain.fill(0);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(Client {
            out,
            out_pos: 0,
            state: State::Running,
            had_credentials: req.credentials.is_some(),
            seen: 0,
            status_line: Vec::new(),
            in_status_line: true,
            line_len: 0,
            status: 0,
        })
    }

    /// Bytes that must be written to the proxy now (empty when nothing is pending).
    pub fn pending_output(&self) -> &[u8] {
        self.out.get(self.out_pos..).unwrap_or(&[])
    }

    /// Marks `n` bytes of [`Client::pending_output`] as written. Marking more than is pending
    /// is driver misuse: the client fails with [`HttpError::Internal`].
    pub fn consume_output(&mut self, n: usize) {
        let pending = self.pending_output().len();
        if n > pending {
            self.out_pos = self.out.len();
            if self.state == State::Running {
                self.fail(HttpError::Internal("consumed more output than was pending"));
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

    /// At most how many bytes are worth peeking at: what the header block may still take
    /// (0 when output is pending or the exchange is over). Peeking more is harmless.
    pub fn peek_limit(&self) -> usize {
        if self.state != State::Running || !self.pending_output().is_empty() {
            return 0;
        }
        // At least 1 while running: feeding that byte reports HeaderTooLong.
        MAX_HEADER.saturating_sub(self.seen).max(1)
    }

    /// Looks at bytes peeked from the socket (not yet consumed) and returns how many of them
    /// belong to the proxy's reply; the driver must then consume exactly that many. All of
    /// `data` while the header block goes on; up to and including the empty line that ends
    /// it, after which the state is `Done` (or `Failed`).
    ///
    /// Errors also move the client to [`State::Failed`]; a refusal is reported as soon as
    /// the status line is in. Feeding after the end returns [`HttpError::Internal`] and leaves
    /// the state unchanged. Empty `data` takes nothing (at the end of the stream call
    /// [`Client::eof`]).
    pub fn feed_peeked(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        if self.state != State::Running {
            return Err(HttpError::Internal("data fed after the exchange ended"));
        }
        if !self.pending_output().is_empty() {
            return Err(self.fail(HttpError::Internal("reply fed before the request was sent")));
        }
        for (i, &b) in data.iter().enumerate() {
            // The block did not end within MAX_HEADER bytes (the last byte allowed would
            // have returned below).
            if self.seen >= MAX_HEADER {
                return Err(self.fail(HttpError::HeaderTooLong));
            }
            self.seen += 1;
            if self.in_status_line {
                if b == b'\n' {
                    let mut line = std::mem::take(&mut self.status_line);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let parsed = parse_status_line(&line).map(|(c, r)| (c, reason_text(r)));
                    line.fill(0);
                    let (code, reason) = parsed.map_err(|e| self.fail(e))?;
                    self.status = code;
                    self.in_status_line = false;
                    self.line_len = 0;
                    match code {
                        101 => {
                            return Err(self.fail(HttpError::Malformed(
                                "101 Switching Protocols in reply to CONNECT",
                            )))
                        }
                        // Interim (the final status follows) or success.
                        100..=299 => {}
                        407 if self.had_credentials => {
                            return Err(self.fail(HttpError::AuthRejected))
                        }
                        407 => return Err(self.fail(HttpError::AuthRequired)),
                        _ => return Err(self.fail(HttpError::Status(code, reason))),
                    }
                } else {
                    self.status_line.push(b);
                }
                continue;
            }
            match b {
                b'\n' if self.line_len == 0 => {
                    // The empty line: end of this header block.
                    if (100..=199).contains(&self.status) {
                        // Interim response: the final one follows.
                        self.in_status_line = true;
                        self.status = 0;
                        continue;
                    }
                    self.state = State::Done(Reply {
                        status: self.status,
                    });
                    return Ok(i + 1);
                }
                b'\n' => self.line_len = 0,
                b'\r' => {}
                _ => self.line_len += 1,
            }
        }
        Ok(data.len())
    }

    /// The proxy closed the connection (read returned 0).
    ///
    /// While running: [`HttpError::Truncated`], and the client moves to `Failed`. After
    /// `Done`: [`HttpError::Internal`], state unchanged. After `Failed`: the recorded error.
    pub fn eof(&mut self) -> HttpError {
        match &self.state {
            State::Running => self.fail(HttpError::Truncated),
            State::Done(_) => HttpError::Internal("end of stream reported after the exchange"),
            State::Failed(e) => e.clone(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    fn fail(&mut self, e: HttpError) -> HttpError {
        self.state = State::Failed(e.clone());
        self.status_line.fill(0);
        self.status_line.clear();
        self.out.fill(0);
        self.out.clear();
        self.out_pos = 0;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(n: &str, port: u16) -> TargetAddr {
        TargetAddr::Domain(n.to_string(), port)
    }
    fn creds(u: &[u8], p: &[u8]) -> Option<Credentials> {
        Some(Credentials {
            user: u.to_vec(),
            pass: p.to_vec(),
        })
    }
    fn client(target: TargetAddr, credentials: Option<Credentials>) -> Client {
        Client::new(Request {
            target,
            credentials,
        })
        .unwrap()
    }
    /// Sends everything, returns what was sent.
    fn sent(c: &mut Client) -> String {
        let s = String::from_utf8(c.pending_output().to_vec()).unwrap();
        c.consume_output(s.len());
        s
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64(i.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), o, "{i}");
        }
        let mut out = Vec::new();
        base64(&[0xff, 0xfe, 0x00], &mut out);
        assert_eq!(out, b"//4A");
    }

    #[test]
    fn request_bytes() {
        let mut c = client(name("internal.example", 443), None);
        assert_eq!(
            sent(&mut c),
            "CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n"
        );
        assert!(c.pending_output().is_empty());
        let ip6 = TargetAddr::Ip(SocketAddr::new("2001:db8::1".parse().unwrap(), 22));
        let mut c = client(ip6, creds(b"Aladdin", b"open sesame"));
        // RFC 7617 section 2 example.
        assert_eq!(
            sent(&mut c),
            "CONNECT [2001:db8::1]:22 HTTP/1.1\r\nHost: [2001:db8::1]:22\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
        let mapped = TargetAddr::Ip(SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()),
            80,
        ));
        let mut c = client(mapped, creds(b"u", b""));
        assert_eq!(
            sent(&mut c),
            "CONNECT 192.0.2.7:80 HTTP/1.1\r\nHost: 192.0.2.7:80\r\n\
             Proxy-Authorization: Basic dTo=\r\n\r\n"
        );
    }

    #[test]
    fn unsupported_requests() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "a b",
            "a\r\nX: y",
            "a/b",
            "a@b",
            "::1",
            long.as_str(),
            "é",
        ] {
            let e = Client::new(Request {
                target: name(bad, 1),
                credentials: None,
            })
            .err()
            .unwrap();
            assert!(matches!(e, HttpError::Unsupported(_)), "{bad:?}");
            assert_eq!(e.errno(), libc::EINVAL);
        }
        let ok = "a".repeat(255);
        assert!(Client::new(Request {
            target: name(&ok, 1),
            credentials: None
        })
        .is_ok());
        let e = Client::new(Request {
            target: name("h", 1),
            credentials: creds(b"a:b", b"c"),
        })
        .err()
        .unwrap();
        assert_eq!(e, HttpError::Unsupported(Unsupported::UserColon));
    }

    const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n";

    /// Feeds `reply` followed by the destination's banner as peeks of at most `chunk`
    /// bytes, consuming what the client says; returns the state and what is left.
    fn drive(reply: &[u8], chunk: usize, credentials: Option<Credentials>) -> (State, Vec<u8>) {
        let mut c = client(name("h.example", 22), credentials);
        sent(&mut c);
        let mut socket: Vec<u8> = [reply, BANNER].concat();
        loop {
            match c.state() {
                State::Running => {}
                s => return (s.clone(), socket),
            }
            let n = chunk.min(socket.len()).min(c.peek_limit());
            if n == 0 {
                c.eof();
                continue;
            }
            match c.feed_peeked(&socket[..n]) {
                Ok(take) => {
                    assert!(take <= n);
                    socket.drain(..take);
                }
                Err(_) => continue,
            }
        }
    }

    #[test]
    fn success_leaves_application_data_in_every_split() {
        let replies: [&[u8]; 5] = [
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nProxy-Agent: test/1.0\r\nX-A: b\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
            b"HTTP/1.1 200 OK\n\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        ];
        for reply in replies {
            for chunk in 1..=reply.len() + BANNER.len() + 1 {
                let (state, rest) = drive(reply, chunk, None);
                assert!(matches!(state, State::Done(_)), "{chunk}: {state:?}");
                assert_eq!(
                    rest,
                    BANNER,
                    "{:?} chunk {chunk}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
        let (state, _) = drive(replies[4], 7, None);
        assert_eq!(state, State::Done(Reply { status: 204 }));
    }

    #[test]
    fn refusals_and_their_errno() {
        let cases: [(&[u8], Option<Credentials>, HttpError, i32); 7] = [
            (
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
                None,
                HttpError::AuthRequired,
                libc::EACCES,
            ),
            (
                b"HTTP/1.1 407 Nope\r\n\r\n",
                creds(b"u", b"p"),
                HttpError::AuthRejected,
                libc::EACCES,
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\n\r\n",
                None,
                HttpError::Status(403, "Forbidden".into()),
                libc::EACCES,
            ),
            (
                b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
                None,
                HttpError::Status(502, "Bad Gateway".into()),
                libc::ECONNREFUSED,
            ),
            (
                b"HTTP/1.0 504 Gateway Timeout\r\n\r\n",
                None,
                HttpError::Status(504, "Gateway Timeout".into()),
                libc::ETIMEDOUT,
            ),
            (
                b"HTTP/1.1 500\r\n\r\n",
                None,
                HttpError::Status(500, String::new()),
                libc::ECONNREFUSED,
            ),
            (
                b"HTTP/1.1 301 Moved \x01\xff\r\n\r\n",
                None,
                HttpError::Status(301, "Moved ??".into()),
                libc::ECONNREFUSED,
            ),
        ];
        for (reply, cr, want, errno) in cases {
            for chunk in [1, 3, reply.len()] {
                let (state, _) = drive(reply, chunk, cr.clone());
                assert_eq!(state, State::Failed(want.clone()));
            }
            assert_eq!(want.errno(), errno, "{want}");
            assert!(!want.to_string().contains('\n'));
        }
    }

    #[test]
    fn refusal_is_reported_with_the_status_line() {
        let mut c = client(name("h", 1), None);
        sent(&mut c);
        assert_eq!(c.feed_peeked(b"HTTP/1.1 403 F"), Ok(14));
        assert!(matches!(
            c.feed_peeked(b"\r\nmore"),
            Err(HttpError::Status(403, _))
        ));
    }

    #[test]
    fn malformed_replies() {
        for reply in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
            b"HTTP/1.1 600 x\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.x 200 OK\r\n\r\n",
            b"\r\nHTTP/1.1 200 OK\r\n\r\n",
            b"SSH-2.0-x\r\n",
            b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (state, _) = drive(reply, 4, None);
            match state {
                State::Failed(e @ HttpError::Malformed(_)) => assert_eq!(e.errno(), libc::EPROTO),
                s => panic!("{:?}: {s:?}", String::from_utf8_lossy(reply)),
            }
        }
    }

    #[test]
    fn truncated_and_too_long() {
        let mut c = client(name("h", 1), None);
        sent(&mut c);
        assert_eq!(c.feed_peeked(b"HTTP/1.1 200 OK\r\nX: y"), Ok(21));
        assert_eq!(c.eof(), HttpError::Truncated);
        assert_eq!(c.eof(), HttpError::Truncated);
        assert_eq!(HttpError::Truncated.errno(), libc::ECONNRESET);

        // Exactly MAX_HEADER bytes is fine, one more is not.
        let head = b"HTTP/1.1 200 OK\r\nX: ";
        let pad = MAX_HEADER - head.len() - 4;
        let ok = [&head[..], &vec![b'a'; pad], b"\r\n\r\n"].concat();
        assert_eq!(ok.len(), MAX_HEADER);
        let (state, rest) = drive(&ok, 1000, None);
        assert!(matches!(state, State::Done(_)));
        assert_eq!(rest, BANNER);
        let long = [&head[..], &vec![b'a'; pad + 1], b"\r\n\r\n"].concat();
        let (state, _) = drive(&long, 1000, None);
        assert_eq!(state, State::Failed(HttpError::HeaderTooLong));
        // Endless interim responses count too.
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_HEADER / 20);
        let (state, _) = drive(&many, 4096, None);
        assert_eq!(state, State::Failed(HttpError::HeaderTooLong));
    }

    #[test]
    fn driver_misuse() {
        let mut c = client(name("h", 1), None);
        // Reply before the request went out.
        assert_eq!(c.peek_limit(), 0);
        assert!(matches!(
            c.feed_peeked(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(HttpError::Internal(_))
        ));
        assert!(matches!(c.state(), State::Failed(_)));

        let mut c = client(name("h", 1), None);
        let n = c.pending_output().len();
        c.consume_output(n + 1);
        assert!(matches!(c.state(), State::Failed(HttpError::Internal(_))));

        let mut c = client(name("h", 1), None);
        sent(&mut c);
        assert_eq!(c.peek_limit(), MAX_HEADER);
        assert_eq!(c.feed_peeked(b""), Ok(0));
        assert_eq!(c.feed_peeked(b"HTTP/1.1 200 OK\r\n\r\nrest"), Ok(19));
        assert_eq!(c.peek_limit(), 0);
        assert!(matches!(c.feed_peeked(b"x"), Err(HttpError::Internal(_))));
        assert_eq!(c.state(), &State::Done(Reply { status: 200 }));
        assert!(matches!(c.eof(), HttpError::Internal(_)));
        assert_eq!(c.state(), &State::Done(Reply { status: 200 }));
    }

    #[test]
    fn password_is_not_kept_after_sending() {
        let mut c = client(name("h", 1), creds(b"user", b"hunter2"));
        let n = c.pending_output().len();
        c.consume_output(n - 1);
        assert_eq!(c.pending_output(), b"\n");
        c.consume_output(1);
        assert!(c.out.is_empty());
        let dbg = format!("{:?}", creds(b"user", b"hunter2"));
        assert!(!dbg.contains("hunter2"));
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator (xorshift): random bytes, random splits, biased
        // towards the characters the parser looks at.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"HTTP/1.0 2\r\n:\x00\xff47";
        for _ in 0..3000 {
            let len = (next() % 80) as usize;
            let mut data: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        r as u8
                    } else {
                        alphabet[(r as usize / 3) % alphabet.len()]
                    }
                })
                .collect();
            if next() % 2 == 0 {
                let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
                v.append(&mut data);
                data = v;
            }
            let mut c = client(name("h", 1), creds(b"u", b"p"));
            sent(&mut c);
            let mut pos = 0;
            while pos < data.len() && *c.state() == State::Running {
                let n = 1 + (next() as usize) % (data.len() - pos);
                match c.feed_peeked(&data[pos..pos + n]) {
                    Ok(take) => {
                        assert!(take <= n);
                        pos += take;
                    }
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
            if *c.state() == State::Running {
                assert_eq!(c.eof(), HttpError::Truncated);
            }
        }
        // IPv6 literal targets always work.
        assert!(Client::new(Request {
            target: TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1)),
            credentials: None
        })
        .is_ok());
    }
}
