//! Typed values of the command line that proxify-core does not define (HOST:PORT), and the
//! clap value parsers that turn each flag's text into its type at parse time, each failure
//! one line (`"10.0.0.0/33": ...`) that `main` prefixes with the flag.

use proxify_core::cidr::Cidr;
use proxify_core::config::{parse_seconds, BindPolicy, ChainMode};
use proxify_core::rules::{Dnat, Rule};
use proxify_core::url::{Host, ProxyUrl};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// `-x URL`: the message never shows the password.
pub fn proxy_url(s: &str) -> Result<ProxyUrl, String> {
    s.parse::<ProxyUrl>()
        .map_err(|e| crate::scrub(&e.to_string(), s))
}

/// `--chain-mode MODE`.
pub fn chain_mode(s: &str) -> Result<ChainMode, String> {
    s.parse::<ChainMode>()
}

/// `--chain-len N`: 1 or more.
pub fn chain_len(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "\"{}\" is not a number of proxies (1 or more)",
            s.escape_debug()
        )),
    }
}

/// `--rule 'PATTERN ACTION'`, its origin `--rule`.
pub fn rule(s: &str) -> Result<Rule, String> {
    let mut r: Rule = s.parse()?;
    r.origin = Some("--rule".to_string());
    Ok(r)
}

/// `--direct CIDR`.
pub fn cidr(s: &str) -> Result<Cidr, String> {
    s.parse::<Cidr>()
}

/// `--dnat 'ORIG[:PORT] NEW[:PORT]'`.
pub fn dnat(s: &str) -> Result<Dnat, String> {
    s.parse::<Dnat>()
}

/// `--connect-timeout SECS`, `--timeout SECS`.
pub fn seconds(s: &str) -> Result<Duration, String> {
    parse_seconds(s)
}

/// `--bind POLICY`.
pub fn bind_policy(s: &str) -> Result<BindPolicy, String> {
    s.parse::<BindPolicy>()
}

/// The `HOST:PORT` argument of `proxify check`.
pub fn host_port(s: &str) -> Result<HostPort, String> {
    parse_host_port(s)
}

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

/// `--dns-server ADDR`: kept as given, once it parses.
pub fn dns_server(s: &str) -> Result<String, String> {
    proxify_core::config::parse_dns_server(s).map(|_| s.trim().to_string())
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
}
