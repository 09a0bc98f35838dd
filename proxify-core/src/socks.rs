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

use std::net::SocketAddr;

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

/// Username/password (RFC 1929 for SOCKS5; the user alone is the SOCKS4 USERID).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Credentials {
    pub user: Vec<u8>,
    pub pass: Vec<u8>,
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
    Unsupported(&'static str),
    /// Driver misuse: fed more bytes than wanted(), fed after completion.
    Internal(&'static str),
}

impl SocksError {
    /// The errno a hooked call should fail with.
    pub fn errno(&self) -> i32 {
        todo!()
    }
}

impl std::fmt::Display for SocksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let _ = f;
        todo!()
    }
}

impl std::error::Error for SocksError {}

/// The client state machine.
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Validates the request and queues the first bytes to send.
    pub fn new(req: Request) -> Result<Client, SocksError> {
        let _ = req;
        todo!()
    }
    /// Bytes that must be written to the proxy now (empty when nothing is pending).
    pub fn pending_output(&self) -> &[u8] {
        todo!()
    }
    /// Marks `n` bytes of [`Client::pending_output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        let _ = n;
        todo!()
    }
    /// Exact number of bytes to read next; 0 when output is pending or the handshake is over.
    /// Never more than what remains of the proxy message being read.
    pub fn wanted(&self) -> usize {
        todo!()
    }
    /// Feeds bytes read from the proxy (`data.len() <= wanted()`). Errors also move the
    /// client to [`State::Failed`].
    pub fn feed(&mut self, data: &[u8]) -> Result<(), SocksError> {
        let _ = data;
        todo!()
    }
    /// The proxy closed the connection (read returned 0).
    pub fn eof(&mut self) -> SocksError {
        todo!()
    }
    pub fn state(&self) -> &State {
        todo!()
    }
    /// BIND only: after the first reply, wait for the second one (the incoming connection).
    pub fn expect_second_reply(&mut self) -> Result<(), SocksError> {
        todo!()
    }
}

/// RFC 1928 section 7 UDP request header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub addr: TargetAddr,
}

/// Appends the UDP request header for `addr` (FRAG 0) to `out`.
pub fn encode_udp_header(addr: &TargetAddr, out: &mut Vec<u8>) -> Result<(), SocksError> {
    let _ = (addr, out);
    todo!()
}

/// Parses a UDP datagram from the relay: returns the header and the offset of the payload.
pub fn parse_udp_header(datagram: &[u8]) -> Result<(UdpHeader, usize), SocksError> {
    let _ = datagram;
    todo!()
}
