//! Proxy URLs as curl writes them: `socks5h://user:pass@host:port` and friends.
//!
//! Size: ~620 lines, ~190 of them unit tests (7): parsing and printing proxy URLs (schemes,
//! bracketed hosts, ports, percent-encoding) must round-trip, so both live here.

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
    /// HTTP CONNECT proxy (`http://`, Basic auth); names go to the proxy in the CONNECT
    /// request (remote DNS). Default port 8080.
    Http,
}

impl Scheme {
    pub fn remote_dns(self) -> bool {
        matches!(self, Scheme::Socks5h | Scheme::Socks4a | Scheme::Http)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Socks5 => "socks5",
            Scheme::Socks5h => "socks5h",
            Scheme::Socks4 => "socks4",
            Scheme::Socks4a => "socks4a",
            Scheme::Http => "http",
        }
    }
    /// Port used when the URL has none: 1080 for SOCKS, 8080 for HTTP.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 8080,
            _ => 1080,
        }
    }
    /// The SOCKS version to speak, `None` for an HTTP CONNECT proxy.
    pub fn socks_version(self) -> Option<crate::socks::Version> {
        match self {
            Scheme::Socks5 | Scheme::Socks5h => Some(crate::socks::Version::Socks5),
            Scheme::Socks4 => Some(crate::socks::Version::Socks4),
            Scheme::Socks4a => Some(crate::socks::Version::Socks4a),
            Scheme::Http => None,
        }
    }
    /// The SOCKS version to speak. Callers that may see [`Scheme::Http`] must use
    /// [`Scheme::socks_version`]: for `Http` this returns `Socks5`, which an HTTP proxy
    /// answers with a malformed reply (the connection fails, it never goes direct).
    pub fn version(self) -> crate::socks::Version {
        self.socks_version()
            .unwrap_or(crate::socks::Version::Socks5)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// `Debug` (like `Display`) never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: Scheme,
    pub host: Host,
    /// Default 1080 (SOCKS) or 8080 (HTTP).
    pub port: u16,
    /// Percent-decoded user name (RFC 1929 / SOCKS4 USERID / HTTP Basic user).
    pub user: Option<Vec<u8>>,
    /// Percent-decoded password.
    pub pass: Option<Vec<u8>>,
    /// `?pipeline=1`: pipelined SOCKS5 handshake (see socks::Request::pipeline).
    pub pipeline: bool,
    /// `?optimistic=1`: optimistic data ([`ProxyUrl::optimistic_applies`]): `connect()`
    /// returns once greeting and request are sent (pipelined), the program's first data goes
    /// right behind them, and the proxy's replies are read before the program's first read.
    pub optimistic: bool,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user.as_deref().map(String::from_utf8_lossy))
            .field("pass", &self.pass.as_ref().map(|_| "***"))
            .field("pipeline", &self.pipeline)
            .field("optimistic", &self.optimistic)
            .finish()
    }
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
    /// Accepts `scheme://[user[:pass]@]host[:port][/][?pipeline=0|1][&optimistic=0|1]`; host is a name, an IPv4
    /// literal or a bracketed IPv6 literal. Unknown scheme, bad/zero port, bad percent-encoding,
    /// empty host, unknown query key: error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (scheme_str, rest) = match s.find("://") {
            Some(i) => (&s[..i], &s[i + 3..]),
            None => return Err(err(
                "proxy URL must start with socks5h://, socks5://, socks4a://, socks4:// or http://",
            )),
        };
        let scheme = match scheme_str.to_ascii_lowercase().as_str() {
            "socks5" => Scheme::Socks5,
            "socks5h" => Scheme::Socks5h,
            "socks4" => Scheme::Socks4,
            "socks4a" => Scheme::Socks4a,
            "http" => Scheme::Http,
            "https" => {
                return Err(err(
                    "https:// proxies (TLS to the proxy) are not supported; use http://",
                ))
            }
            _ => {
                return Err(UrlError(format!(
                    "unknown proxy scheme \"{}\" (use socks5h, socks5, socks4a, socks4 or http)",
                    printable(scheme_str)
                )))
            }
        };

        // The user info ends at the last '@', so an unencoded '/', '?', '#' or '@' in the
        // password still works (a host never contains '@').
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, pass) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(i) => (&ui[..i], Some(&ui[i + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(err("empty user name in proxy URL"));
                }
                let user = percent_decode(u).map_err(|bad| {
                    UrlError(format!(
                        "bad percent-encoding \"{}\" in the proxy user name",
                        printable(bad)
                    ))
                })?;
                let pass = match p {
                    None => None,
                    // Never quote the password (or a piece of it) in the message.
                    Some(p) => Some(percent_decode(p).map_err(|_| {
                        err("bad percent-encoding in the proxy password (write % as %25)")
                    })?),
                };
                (Some(user), pass)
            }
        };

        // Split host[:port] from an optional path and query.
        let end = hostpart.find(['/', '?', '#']).unwrap_or(hostpart.len());
        let (authority, tail) = hostpart.split_at(end);
        let (path, query) = match tail.find('?') {
            Some(i) => (&tail[..i], Some(&tail[i + 1..])),
            None => (tail, None),
        };
        if !(path.is_empty() || path == "/") {
            return Err(UrlError(format!(
                "unexpected path \"{}\" in proxy URL (only scheme://[user[:password]@]host[:port] is allowed)",
                printable(path)
            )));
        }
        let mut pipeline = false;
        let mut optimistic = false;
        if let Some(q) = query {
            for kv in q.split('&').filter(|kv| !kv.is_empty()) {
                let (k, v) = match kv.find('=') {
                    Some(i) => (&kv[..i], &kv[i + 1..]),
                    None => (kv, ""),
                };
                let slot = match k {
                    "pipeline" => &mut pipeline,
                    "optimistic" => &mut optimistic,
                    _ => {
                        return Err(UrlError(format!(
                        "unknown option \"{}\" in proxy URL (known: pipeline=0|1, optimistic=0|1)",
                        printable(k)
                    )))
                    }
                };
                *slot = match v {
                    "1" => true,
                    "0" => false,
                    _ => {
                        return Err(UrlError(format!(
                            "bad value \"{}\" for {k} in proxy URL (use 0 or 1)",
                            printable(v)
                        )))
                    }
                };
            }
        }

        let (host, port_str) = if let Some(after) = authority.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| err("missing ']' after IPv6 address in proxy URL"))?;
            let inside = &after[..close];
            let ip: std::net::Ipv6Addr = inside.parse().map_err(|_| {
                UrlError(format!(
                    "bad IPv6 address \"{}\" in proxy URL",
                    printable(inside)
                ))
            })?;
            let after_close = &after[close + 1..];
            let port_str = match after_close.strip_prefix(':') {
                Some(p) => Some(p),
                None if after_close.is_empty() => None,
                None => {
                    return Err(UrlError(format!(
                        "unexpected \"{}\" after IPv6 address in proxy URL",
                        printable(after_close)
                    )))
                }
            };
            (Host::Ip(IpAddr::V6(ip)), port_str)
        } else {
            let (h, p) = match authority.find(':') {
                Some(i) => (&authority[..i], Some(&authority[i + 1..])),
                None => (authority, None),
            };
            if p.is_some_and(|p| p.contains(':')) {
                return Err(err(
                    "IPv6 address in proxy URL must be in brackets, e.g. socks5h://[2001:db8::1]:1080",
                ));
            }
            (parse_host(h)?, p)
        };

        let port = match port_str {
            None => scheme.default_port(),
            Some(p) => parse_port(p, scheme)?,
        };

        Ok(ProxyUrl {
            scheme,
            host,
            port,
            user,
            pass,
            pipeline,
            optimistic,
        })
    }
}

fn err(s: &str) -> UrlError {
    UrlError(s.to_string())
}

/// Quotes user-supplied text in a one-line message: control characters are escaped and the
/// text is shortened.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    out
}

fn parse_host(h: &str) -> Result<Host, UrlError> {
    if h.is_empty() {
        return Err(err("empty host in proxy URL"));
    }
    if let Ok(ip) = h.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    if let Some(c) = h
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'))
    {
        return Err(UrlError(format!(
            "invalid character '{}' in proxy host \"{}\"",
            c.escape_debug(),
            printable(h)
        )));
    }
    if h.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(UrlError(format!(
            "bad IPv4 address \"{}\" in proxy URL",
            printable(h)
        )));
    }
    if h.len() > 253 {
        return Err(err("proxy host name longer than 253 characters"));
    }
    Ok(Host::Name(h.to_string()))
}

fn parse_port(p: &str, scheme: Scheme) -> Result<u16, UrlError> {
    if p.is_empty() {
        return Err(UrlError(format!(
            "empty port in proxy URL (omit the ':' for the default {})",
            scheme.default_port()
        )));
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError(format!(
            "bad port \"{}\" in proxy URL: not a number",
            printable(p)
        )));
    }
    let n: u64 = if p.len() > 10 {
        u64::MAX
    } else {
        p.parse().unwrap_or(u64::MAX)
    };
    if n == 0 || n > 65535 {
        return Err(UrlError(format!(
            "bad port \"{}\" in proxy URL: must be 1 to 65535",
            printable(p)
        )));
    }
    Ok(n as u16)
}

/// Decodes `%XX`; on error returns the offending sequence (up to 3 characters).
fn percent_decode(s: &str) -> Result<Vec<u8>, &str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).and_then(|&x| (x as char).to_digit(16));
            let lo = b.get(i + 2).and_then(|&x| (x as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => {
                    // Report at most "%" plus two characters, on a char boundary.
                    let mut end = (i + 3).min(s.len());
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    return Err(s.get(i..end).unwrap_or("%"));
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

fn percent_encode(b: &[u8], out: &mut String) {
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
}

impl std::fmt::Display for Host {
    /// A name or an address as is (IPv6 without brackets).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl std::fmt::Display for ProxyUrl {
    /// Same as [`ProxyUrl::masked`]: never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl ProxyUrl {
    fn render(&self, mask: bool) -> String {
        let mut s = String::new();
        s.push_str(self.scheme.as_str());
        s.push_str("://");
        if let Some(user) = &self.user {
            percent_encode(user, &mut s);
            if let Some(pass) = &self.pass {
                s.push(':');
                if mask {
                    s.push_str("***");
                } else {
                    percent_encode(pass, &mut s);
                }
            }
            s.push('@');
        }
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => s.push_str(&format!("[{ip}]")),
            Host::Ip(IpAddr::V4(ip)) => s.push_str(&ip.to_string()),
            Host::Name(n) => s.push_str(n),
        }
        s.push_str(&format!(":{}", self.port));
        match (self.pipeline, self.optimistic) {
            (true, true) => s.push_str("?pipeline=1&optimistic=1"),
            (true, false) => s.push_str("?pipeline=1"),
            (false, true) => s.push_str("?optimistic=1"),
            (false, false) => {}
        }
        s
    }

    /// Does `?optimistic=1` take effect for a chain of these hops? Only a single SOCKS5 hop
    /// without credentials: its greeting offers "no authentication" alone, so greeting and
    /// request can go in one write and no reply changes what is sent next.
    pub fn optimistic_applies(hops: &[ProxyUrl]) -> bool {
        matches!(hops, [h] if h.optimistic
            && matches!(h.scheme, Scheme::Socks5 | Scheme::Socks5h)
            && h.user.is_none())
    }

    /// Full URL, percent-encoding user and password again, suitable to hand to the shim.
    pub fn to_url_string(&self) -> String {
        self.render(false)
    }
    /// For messages: like `to_url_string` but the password replaced by `***`.
    pub fn masked(&self) -> String {
        self.render(true)
    }
    pub fn credentials(&self) -> Option<crate::socks::Credentials> {
        self.user.as_ref().map(|u| crate::socks::Credentials {
            user: u.clone(),
            pass: self.pass.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn p(s: &str) -> ProxyUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn e(s: &str) -> String {
        match s.parse::<ProxyUrl>() {
            Ok(u) => panic!("{s} parsed as {u:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn schemes_and_defaults() {
        let u = p("socks5h://proxy.example");
        assert_eq!(u.scheme, Scheme::Socks5h);
        assert_eq!(u.host, Host::Name("proxy.example".into()));
        assert_eq!(u.port, 1080);
        assert_eq!((u.user, u.pass, u.pipeline), (None, None, false));
        assert_eq!(p("SOCKS5://h").scheme, Scheme::Socks5);
        assert_eq!(p("Socks4://h").scheme, Scheme::Socks4);
        assert_eq!(p("socks4A://h").scheme, Scheme::Socks4a);
        assert!(Scheme::Socks5h.remote_dns() && Scheme::Socks4a.remote_dns());
        assert!(!Scheme::Socks5.remote_dns() && !Scheme::Socks4.remote_dns());
    }

    #[test]
    fn http_scheme() {
        let u = p("http://proxy.example");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.port, 8080);
        assert!(Scheme::Http.remote_dns());
        assert_eq!(Scheme::Http.socks_version(), None);
        assert_eq!(
            Scheme::Socks4a.socks_version(),
            Some(crate::socks::Version::Socks4a)
        );
        let u = p("HTTP://al%3Aice:s%40cret@[2001:db8::5]:3128/");
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.port, 3128);
        assert_eq!(u.user.as_deref(), Some(&b"al:ice"[..]));
        assert_eq!(u.pass.as_deref(), Some(&b"s@cret"[..]));
        assert_eq!(
            u.to_url_string(),
            "http://al%3Aice:s%40cret@[2001:db8::5]:3128"
        );
        assert_eq!(u.masked(), "http://al%3Aice:***@[2001:db8::5]:3128");
        assert_eq!(p(&u.to_url_string()), u);
        assert!(e("http://h:").contains("8080"));
        // The SOCKS schemes keep their default.
        assert_eq!(p("socks4://h").port, 1080);
    }

    #[test]
    fn hosts_ports_paths() {
        let u = p("socks5://192.0.2.1:9050/");
        assert_eq!(u.host, Host::Ip(Ipv4Addr::new(192, 0, 2, 1).into()));
        assert_eq!(u.port, 9050);
        let u = p("socks5://[2001:db8::1]:65535");
        assert_eq!(
            u.host,
            Host::Ip("2001:db8::1".parse::<Ipv6Addr>().unwrap().into())
        );
        assert_eq!(u.port, 65535);
        assert_eq!(p("socks5://[::1]").port, 1080);
        assert_eq!(p("socks5://h:1").port, 1);
        assert!(p("socks5://h?pipeline=1").pipeline);
        assert!(p("socks5://h/?pipeline=1").pipeline);
        assert!(!p("socks5://h:1080/?pipeline=0").pipeline);
        let u = p("socks5h://h?optimistic=1");
        assert!(u.optimistic && !u.pipeline);
        let u = p("socks5://h/?optimistic=1&pipeline=1");
        assert!(u.optimistic && u.pipeline);
        assert!(!p("socks5://h?optimistic=0").optimistic);
        assert!(!p("socks5://h").optimistic);
    }

    #[test]
    fn userinfo() {
        let u = p("socks5h://alice:s3cr%3At%40x%2f@proxy:1081");
        assert_eq!(u.user.as_deref(), Some(&b"alice"[..]));
        assert_eq!(u.pass.as_deref(), Some(&b"s3cr:t@x/"[..]));
        let u = p("socks5h://us%20er@proxy");
        assert_eq!(u.user.as_deref(), Some(&b"us er"[..]));
        assert_eq!(u.pass, None);
        let c = u.credentials().unwrap();
        assert_eq!((c.user, c.pass), (b"us er".to_vec(), Vec::new()));
        let u = p("socks5h://a:@proxy");
        assert_eq!(u.pass.as_deref(), Some(&b""[..]));
        // Unencoded '@', '/' and '?' in the password: the last '@' ends the user info.
        let u = p("socks5h://a:p@s/s?w@proxy:1");
        assert_eq!(u.pass.as_deref(), Some(&b"p@s/s?w"[..]));
        assert_eq!(u.host, Host::Name("proxy".into()));
        assert_eq!(p("socks5://h").credentials(), None);
        let c = p("socks5://bob:pw@h").credentials().unwrap();
        assert_eq!((c.user, c.pass), (b"bob".to_vec(), b"pw".to_vec()));
        assert_eq!(
            p("socks5://%ff%00x:%C3%A9@h").user,
            Some(vec![0xff, 0, b'x'])
        );
    }

    #[test]
    fn errors() {
        let cases = [
            ("ftp://proxy", "scheme"),
            ("https://proxy", "https"),
            ("proxy:1080", "socks5h://"),
            ("socks5://", "empty host"),
            ("socks5://:1080", "empty host"),
            ("socks5://u:p@", "empty host"),
            ("socks5://h:0", "port"),
            ("socks5://h:65536", "port"),
            ("socks5://h:99999999999999999999", "port"),
            ("socks5://h:abc", "port"),
            ("socks5://h:-1", "port"),
            ("socks5://h:+80", "port"),
            ("socks5://h:", "port"),
            ("socks5://h/path", "path"),
            ("socks5://h//", "path"),
            ("socks5://h#frag", "path"),
            ("socks5://h?foo=1", "foo"),
            ("socks5://h?pipeline=2", "pipeline"),
            ("socks5://h?optimistic=yes", "for optimistic"),
            ("socks5://h?fast=1", "optimistic=0|1"),
            ("socks5://%zzuser@h", "%zz"),
            ("socks5://user%4@h", "\"%4\""),
            ("socks5://:pw@h", "user"),
            ("socks5://[2001:db8::1", "]"),
            ("socks5://[nope]:1", "IPv6"),
            ("socks5://[::1]x", "after IPv6"),
            ("socks5://2001:db8::1", "brackets"),
            ("socks5://999.1.1.1", "IPv4"),
            ("socks5://ho st", "invalid character"),
        ];
        for (url, needle) in cases {
            let m = e(url);
            assert!(m.contains(needle), "{url}: {m}");
            assert!(!m.contains('\n'), "{url}: {m}");
        }
    }

    #[test]
    fn optimistic_applies_only_to_one_socks5_hop_without_credentials() {
        let one = |u: &str| ProxyUrl::optimistic_applies(&[p(u)]);
        assert!(one("socks5h://h?optimistic=1"));
        assert!(one("socks5://h?optimistic=1"));
        assert!(!one("socks5://h"));
        assert!(!one("socks5://u:pw@h?optimistic=1"));
        assert!(!one("socks5://u@h?optimistic=1"));
        assert!(!one("socks4a://h?optimistic=1"));
        assert!(!one("http://h?optimistic=1"));
        let two = [p("socks5://a?optimistic=1"), p("socks5://b?optimistic=1")];
        assert!(!ProxyUrl::optimistic_applies(&two));
        assert!(!ProxyUrl::optimistic_applies(&[]));
    }

    #[test]
    fn errors_never_show_the_password() {
        for url in [
            "socks5://u:hunter2%zz@h",
            "socks5://u:hunter2%@h",
            "socks5://u:hunter2@h:0",
            "socks5://u:hunter2@h/x",
            "socks5://u:hunter2@",
            "ftp://u:hunter2@h",
            "socks5://u:hunter2@h?x=1",
        ] {
            let m = e(url);
            assert!(!m.contains("hunter2"), "{url}: {m}");
        }
    }

    #[test]
    fn round_trip_and_mask() {
        for url in [
            "socks5h://proxy.example:1080",
            "socks5://192.0.2.1:9050",
            "socks4://[2001:db8::2]:1",
            "socks4a://ident@proxy:1080",
            "socks5h://a%3Ab%40c:p%25%2F%3F%40%3A%20%2C%FF@[::1]:1081?pipeline=1",
            "socks5h://user:@h:1080",
            "socks5h://h:1080?optimistic=1",
            "socks5://h:1080?pipeline=1&optimistic=1",
        ] {
            let u = p(url);
            assert_eq!(u.to_url_string(), url);
            assert_eq!(p(&u.to_url_string()), u);
        }
        let u = p("SOCKS5H://bob:s%40cret@h");
        assert_eq!(u.to_url_string(), "socks5h://bob:s%40cret@h:1080");
        assert_eq!(u.masked(), "socks5h://bob:***@h:1080");
        assert_eq!(u.to_string(), u.masked());
        assert_eq!(p("socks4://id@h").masked(), "socks4://id@h:1080");
        let dbg = format!("{:?}", p("socks5h://bob:hunter2@h"));
        assert!(dbg.contains("bob") && dbg.contains("***"), "{dbg}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        // Every byte value survives encoding.
        let all: Vec<u8> = (0..=255u8).collect();
        let u = ProxyUrl {
            scheme: Scheme::Socks5,
            host: Host::Name("h".into()),
            port: 2,
            user: Some(all.clone()),
            pass: Some(all),
            pipeline: false,
            optimistic: false,
        };
        assert_eq!(p(&u.to_url_string()), u);
        assert!(!u.masked().contains("%FF%FF"));
    }
}
