//! Proxy URLs as curl writes them: `socks5h://user:pass@host:port` and friends.

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// SOCKS5, names resolved locally.
    Socks5,
    /// SOCKS5, names resolved by the proxy (remote DNS).
    Socks5h,
    /// SOCKS4, names resolved locally.
    Socks4,
    /// SOCKS4a, names resolved by the proxy (remote DNS).
    Socks4a,
}

impl Scheme {
    pub fn remote_dns(self) -> bool {
        matches!(self, Scheme::Socks5h | Scheme::Socks4a)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
            Scheme::Socks4 => "socks4",
            Scheme::Socks4a => "socks4a",
        }
    }
    pub fn version(self) -> crate::socks::Version {
        match self {
            Scheme::Socks5 | Scheme::Socks5h => crate::socks::Version::Socks5,
            Scheme::Socks4 => crate::socks::Version::Socks4,
            Scheme::Socks4a => crate::socks::Version::Socks4a,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    pub host: Host,
    /// Default 1080.
    pub port: u16,
    /// Percent-decoded user name (RFC 1929 / SOCKS4 USERID).
    pub user: Option<Vec<u8>>,
    /// Percent-decoded password.
    pub pass: Option<Vec<u8>>,
    /// `?pipeline=1`: pipelined SOCKS5 handshake (see socks::Request::pipeline).
    pub pipeline: bool,
}

/// Parse errors: one line naming the problem (shown to the user as is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UrlError {}

impl std::str::FromStr for ProxyUrl {
    type Err = UrlError;
    /// Accepts `scheme://[user[:pass]@]host[:port][/][?pipeline=0|1]`; host is a name, an IPv4
    /// literal or a bracketed IPv6 literal. Unknown scheme, bad/zero port, bad percent-encoding,
    /// empty host, unknown query key: error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

impl ProxyUrl {
    /// Full URL, percent-encoding user and password again, suitable to hand to the shim.
    pub fn to_url_string(&self) -> String {
        todo!()
    }
    /// For messages: like `to_url_string` but the password replaced by `***`.
    pub fn masked(&self) -> String {
        todo!()
    }
    pub fn credentials(&self) -> Option<crate::socks::Credentials> {
        todo!()
    }
}
