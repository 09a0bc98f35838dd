//! Routing rules: where a destination goes (a named proxy chain, `direct`, or `deny`), and
//! `dnat` rewriting of destinations, as proxychains users have it. Pure: no I/O.
//!
//! # Rules
//!
//! A rule is `PATTERN ACTION`; the first rule whose pattern matches decides. Loopback
//! destinations are direct before any rule; a destination no rule matches goes through the
//! chain named [`DEFAULT_CHAIN`].
//!
//! PATTERN is a destination with an optional `:PORT` or `:LOW-HIGH` suffix:
//!
//! | pattern              | matches                                                        |
//! |----------------------|----------------------------------------------------------------|
//! | `*`                  | everything (`*:25` every destination on port 25)               |
//! | `10.0.0.0/8`         | addresses in the block (IPv4-mapped IPv6 addresses too)        |
//! | `192.0.2.7`          | that address (a /32 or /128)                                   |
//! | `2001:db8::/32`      | an IPv6 block (with a port: `[2001:db8::/32]:443`)             |
//! | `host.example`       | that name only                                                 |
//! | `*.corp.example`     | names under corp.example (not corp.example itself)             |
//! | `.corp.example`      | corp.example and every name under it (as curl's `NO_PROXY`)    |
//!
//! Names are compared without regard to case or a trailing dot. A name pattern matches the
//! destination's *name*, which the shim knows when the program connected to a name (with
//! remote DNS: the placeholder's name); an address pattern matches the destination's
//! address, which with remote DNS is unknown for names (it is never resolved locally). So
//! `10.0.0.0/8 direct` does not catch a name the proxy would resolve into 10/8.
//!
//! ACTION is `direct`, `deny` (the call fails with EACCES), `proxy NAME` (through the named
//! chain) or `proxy` alone (the default chain).
//!
//! # NO_PROXY
//!
//! [`no_proxy_rules`] turns a `NO_PROXY` value (curl's syntax) into `direct` rules; the CLI
//! places them **after** the user's own rules, so an explicit `deny` or `proxy` rule is never
//! bypassed by an inherited environment variable.
//!
//! # dnat
//!
//! `dnat ORIG[:PORT] NEW[:PORT]`: a connection to ORIG (on PORT, or any port) goes to NEW
//! instead (on the new PORT, or the original one). Entries with a port are tried before
//! entries without one; the rewritten destination is then judged by the rules.
//!
//! Size: ~940 lines, ~290 of them unit tests (8): the rule, pattern, port-range and dnat types
//! with their parsers and `Display` (which must read back: config's environment lines rely on
//! it), the matcher, and `no_proxy_rules`.

use crate::cidr::{is_loopback, Cidr};
use std::net::{IpAddr, SocketAddr};

/// The chain used when no rule matches, and by `proxy` without a name.
pub const DEFAULT_CHAIN: &str = "default";

/// Chain names: 1 to 64 ASCII letters, digits, `_` or `-`.
pub fn valid_chain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The host part of a pattern. Names are stored lowercase, without the leading `*.`/`.` and
/// without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`
    Any,
    /// An address block.
    Net(Cidr),
    /// `host.example`: that name only.
    Name(String),
    /// `.corp.example`: the name and every name under it.
    Domain(String),
    /// `*.corp.example`: names under it only.
    Sub(String),
}

/// An inclusive port range (`lo == hi` for a single port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub host: HostMatch,
    /// `None`: any port.
    pub ports: Option<PortRange>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Direct,
    /// Refused with EACCES.
    Deny,
    /// Through the chain of this name.
    Proxy(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: Pattern,
    pub action: Action,
    /// Where the rule was written (`--rule`, `FILE:LINE`, `NO_PROXY`...), for messages.
    pub origin: Option<String>,
}

/// One `dnat` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dnat {
    pub from: IpAddr,
    /// `None`: any port.
    pub from_port: Option<u16>,
    pub to: IpAddr,
    /// `None`: keep the original port.
    pub to_port: Option<u16>,
}

/// The rules in order, and the dnat table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub dnat: Vec<Dnat>,
}

/// What to do with a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Direct,
    /// Fail the call with EACCES.
    Deny,
    /// Through the chain of this name.
    Proxy(&'a str),
}

/// Why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason<'a> {
    /// Loopback destinations are always direct.
    Loopback,
    /// In a `--direct` block (see `Config::decide`).
    Excluded(&'a Cidr),
    /// `Rules::rules[index]` matched.
    Rule { index: usize, rule: &'a Rule },
    /// No rule matched: the default chain.
    Default,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub verdict: Verdict<'a>,
    pub reason: Reason<'a>,
}

/// The origins the CLI gives the rules it made of `NO_PROXY`/`no_proxy` (`--no-proxy-env`).
pub const NO_PROXY_ORIGINS: [&str; 2] = ["env NO_PROXY", "env no_proxy"];

impl Decision<'_> {
    /// Whether a rule made of `NO_PROXY`/`no_proxy` decided (the shim logs those at info).
    pub fn by_no_proxy(&self) -> bool {
        matches!(self.reason, Reason::Rule { rule, .. }
            if rule.origin.as_deref().is_some_and(|o| NO_PROXY_ORIGINS.contains(&o)))
    }
}

impl std::fmt::Display for Decision<'_> {
    /// The reason, for a log line: `rule 2 "*.corp.example proxy corp" (c.toml:7)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Reason::Loopback => f.write_str("loopback destination"),
            Reason::Excluded(c) => write!(f, "direct block {c}"),
            Reason::Default => f.write_str("no rule matched"),
            Reason::Rule { index, rule } => {
                write!(f, "rule {} \"{rule}\"", index + 1)?;
                match &rule.origin {
                    Some(o) => write!(f, " ({o})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::fmt::Display for Verdict<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Direct => f.write_str("direct"),
            Verdict::Deny => f.write_str("deny"),
            Verdict::Proxy(c) => write!(f, "proxy {c}"),
        }
    }
}

/// Lowercase, without a trailing dot.
fn eq_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// `name` (no trailing dot) ends with `.suffix` (case-insensitive).
fn is_under(name: &str, suffix: &str) -> bool {
    let (n, s) = (name.as_bytes(), suffix.as_bytes());
    n.len() > s.len()
        && n[n.len() - s.len() - 1] == b'.'
        && n[n.len() - s.len()..].eq_ignore_ascii_case(s)
}

impl Pattern {
    /// Does the destination match? `ip` is the address when known, `name` the name when the
    /// program used one. A name that is an address literal counts as the address.
    pub fn matches(&self, ip: Option<IpAddr>, name: Option<&str>, port: u16) -> bool {
        if let Some(r) = self.ports {
            if !r.contains(port) {
                return false;
            }
        }
        let name = name.map(|n| n.strip_suffix('.').unwrap_or(n));
        let ip = ip.or_else(|| name.and_then(|n| n.parse().ok()));
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Net(c) => ip.is_some_and(|ip| c.contains(&ip)),
            HostMatch::Name(p) => name.is_some_and(|n| eq_name(n, p)),
            HostMatch::Domain(p) => name.is_some_and(|n| eq_name(n, p) || is_under(n, p)),
            HostMatch::Sub(p) => name.is_some_and(|n| is_under(n, p)),
        }
    }
}

impl Rules {
    /// The first matching rule's verdict; loopback addresses are direct before any rule, and
    /// when nothing matches the verdict is the [`DEFAULT_CHAIN`].
    ///
    /// `ip`: the destination address when known (not for a remote-DNS placeholder); `name`:
    /// the name the program connected to, when it used one; `port`: the destination port.
    /// IPv4-mapped IPv6 addresses match IPv4 blocks.
    pub fn decide(&self, ip: Option<IpAddr>, name: Option<&str>, port: u16) -> Decision<'_> {
        if ip.is_some_and(|ip| is_loopback(&ip)) {
            return Decision {
                verdict: Verdict::Direct,
                reason: Reason::Loopback,
            };
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.pattern.matches(ip, name, port) {
                return Decision {
                    verdict: match &rule.action {
                        Action::Direct => Verdict::Direct,
                        Action::Deny => Verdict::Deny,
                        Action::Proxy(c) => Verdict::Proxy(c),
                    },
                    reason: Reason::Rule { index, rule },
                };
            }
        }
        Decision {
            verdict: Verdict::Proxy(DEFAULT_CHAIN),
            reason: Reason::Default,
        }
    }

    /// The `dnat` rewrite of `dest`, if an entry applies: entries with a port first, then
    /// entries without one, each in order. IPv4-mapped IPv6 destinations match IPv4 entries.
    pub fn dnat(&self, dest: SocketAddr) -> Option<SocketAddr> {
        let ip = unmap(dest.ip());
        let port = dest.port();
        let hit = self
            .dnat
            .iter()
            .find(|d| d.from_port == Some(port) && unmap(d.from) == ip)
            .or_else(|| {
                self.dnat
                    .iter()
                    .find(|d| d.from_port.is_none() && unmap(d.from) == ip)
            })?;
        Some(SocketAddr::new(hit.to, hit.to_port.unwrap_or(port)))
    }

    /// The chain names the rules send to (for checking that each one exists).
    pub fn chains_used(&self) -> impl Iterator<Item = (&Rule, &str)> {
        self.rules.iter().filter_map(|r| match &r.action {
            Action::Proxy(c) => Some((r, c.as_str())),
            _ => None,
        })
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Quotes user text in a one-line message.
fn quoted(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    let bad = || {
        format!(
            "bad port {} (use a port 0 to 65535 or a range LOW-HIGH)",
            quoted(s)
        )
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (
            parse_port(a).ok_or_else(bad)?,
            parse_port(b).ok_or_else(bad)?,
        ),
        None => {
            let p = parse_port(s).ok_or_else(bad)?;
            (p, p)
        }
    };
    if lo > hi {
        return Err(format!("bad port range {}: {lo} is above {hi}", quoted(s)));
    }
    Ok(PortRange { lo, hi })
}

/// A DNS name as patterns hold it: labels of letters, digits, `-` (not first or last) and
/// `_`; lowercased,
/// without a trailing dot.
fn parse_name(s: &str, whole: &str) -> Result<String, String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(format!("bad host name in pattern {}", quoted(whole)));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("bad IPv4 address in pattern {}", quoted(whole)));
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_host(h: &str, whole: &str) -> Result<HostMatch, String> {
    if h == "*" {
        return Ok(HostMatch::Any);
    }
    if let Some(rest) = h.strip_prefix("*.") {
        return Ok(HostMatch::Sub(parse_name(rest, whole)?));
    }
    if let Some(rest) = h.strip_prefix('.') {
        return Ok(HostMatch::Domain(parse_name(rest, whole)?));
    }
    if h.contains('*') {
        return Err(format!(
            "bad pattern {}: '*' is only allowed alone or as a leading \"*.\"",
            quoted(whole)
        ));
    }
    let addr_part = h.split('/').next().unwrap_or(h);
    if h.contains('/') || addr_part.parse::<IpAddr>().is_ok() {
        return h
            .parse::<Cidr>()
            .map(HostMatch::Net)
            .map_err(|e| format!("{e} in pattern {}", quoted(whole)));
    }
    Ok(HostMatch::Name(parse_name(h, whole)?))
}

impl std::str::FromStr for Pattern {
    type Err = String;
    /// See the module documentation for the syntax.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty pattern".to_string());
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("missing ']' in pattern {}", quoted(s)))?;
            let net: Cidr = inside
                .parse()
                .map_err(|e| format!("{e} in pattern {}", quoted(s)))?;
            if !matches!(net.addr, IpAddr::V6(_)) {
                return Err(format!(
                    "brackets are for IPv6 addresses, in pattern {}",
                    quoted(s)
                ));
            }
            let ports = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(parse_ports(p)?),
                    None => return Err(format!("unexpected text after ']' in {}", quoted(s))),
                },
            };
            return Ok(Pattern {
                host: HostMatch::Net(net),
                ports,
            });
        }
        // More than one ':' without brackets: a bare IPv6 address or block, no port.
        let (host, ports) = if s.matches(':').count() > 1 {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(parse_ports(p)?)),
                None => (s, None),
            }
        };
        Ok(Pattern {
            host: parse_host(host, s)?,
            ports,
        })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.ports) {
            (HostMatch::Net(c), Some(_)) if c.addr.is_ipv6() => write!(f, "[{c}]")?,
            (HostMatch::Net(c), _) => write!(f, "{c}")?,
            (HostMatch::Any, _) => f.write_str("*")?,
            (HostMatch::Name(n), _) => f.write_str(n)?,
            (HostMatch::Domain(n), _) => write!(f, ".{n}")?,
            (HostMatch::Sub(n), _) => write!(f, "*.{n}")?,
        }
        match self.ports {
            Some(r) if r.lo == r.hi => write!(f, ":{}", r.lo),
            Some(r) => write!(f, ":{}-{}", r.lo, r.hi),
            None => Ok(()),
        }
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    /// `direct`, `deny`, `proxy` or `proxy NAME` (keywords in any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let kw = words.first().map(|w| w.to_ascii_lowercase());
        match (kw.as_deref(), &words[..]) {
            (Some("direct"), [_]) => Ok(Action::Direct),
            (Some("deny"), [_]) => Ok(Action::Deny),
            (Some("proxy"), [_]) => Ok(Action::Proxy(DEFAULT_CHAIN.to_string())),
            (Some("proxy"), [_, name]) => {
                if valid_chain_name(name) {
                    Ok(Action::Proxy(name.to_string()))
                } else {
                    Err(format!(
                        "bad chain name {} (letters, digits, '_' and '-', at most 64)",
                        quoted(name)
                    ))
                }
            }
            _ => Err(format!(
                "bad action {} (use direct, deny, or proxy [CHAIN])",
                quoted(s.trim())
            )),
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Direct => f.write_str("direct"),
            Action::Deny => f.write_str("deny"),
            Action::Proxy(c) => write!(f, "proxy {c}"),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    /// `PATTERN ACTION`, e.g. `*.corp.example proxy corp` (origin unset).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (pat, action) = s.split_once(char::is_whitespace).ok_or_else(|| {
            format!(
                "rule {} needs a pattern and an action, e.g. \"*.corp.example direct\"",
                quoted(s)
            )
        })?;
        Ok(Rule {
            pattern: pat.parse()?,
            action: action.parse()?,
            origin: None,
        })
    }
}

impl std::fmt::Display for Rule {
    /// `PATTERN ACTION` (without the origin).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.pattern, self.action)
    }
}

/// `IP`, `IP:PORT`, `[IPV6]`, `[IPV6]:PORT` or a bare IPv6 address.
fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let bad_port = |p: &str| {
        format!(
            "bad port {} in dnat address {} (1 to 65535)",
            quoted(p),
            quoted(s)
        )
    };
    let port = |p: &str| match parse_port(p) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad_port(p)),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in dnat address {}", quoted(s)))?;
        let ip: std::net::Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("bad IPv6 address in dnat address {}", quoted(s)))?;
        let p = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(port(p)?),
                None => return Err(format!("unexpected text after ']' in {}", quoted(s))),
            },
        };
        return Ok((IpAddr::V6(ip), p));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => {
            let ip: std::net::Ipv4Addr = a
                .parse()
                .map_err(|_| format!("bad address {} in dnat", quoted(s)))?;
            Ok((IpAddr::V4(ip), Some(port(p)?)))
        }
        _ => Err(format!(
            "bad address {} in dnat (use IP, IP:PORT or [IPV6]:PORT)",
            quoted(s)
        )),
    }
}

fn fmt_addr_port(
    f: &mut std::fmt::Formatter<'_>,
    ip: IpAddr,
    port: Option<u16>,
) -> std::fmt::Result {
    match (ip, port) {
        (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        (IpAddr::V4(a), Some(p)) => write!(f, "{a}:{p}"),
        (ip, None) => write!(f, "{ip}"),
    }
}

impl std::str::FromStr for Dnat {
    type Err = String;
    /// `ORIG[:PORT] NEW[:PORT]`, e.g. `192.0.2.1:1234 198.51.100.2:443`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [from, to] = words[..] else {
            return Err(format!(
                "dnat {} must be \"ORIG[:PORT] NEW[:PORT]\"",
                quoted(s.trim())
            ));
        };
        let (from, from_port) = parse_addr_port(from)?;
        let (to, to_port) = parse_addr_port(to)?;
        Ok(Dnat {
            from,
            from_port,
            to,
            to_port,
        })
    }
}

impl std::fmt::Display for Dnat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fmt_addr_port(f, self.from, self.from_port)?;
        f.write_str(" ")?;
        fmt_addr_port(f, self.to, self.to_port)
    }
}

/// `direct` rules for a `NO_PROXY`/`no_proxy` value, with curl's meaning: entries separated
/// by commas (or blanks); `*` is every destination; `example.com` and `.example.com` are the
/// name and every name under it (`*.example.com` is taken the same way); an address or CIDR
/// block (IPv6 without brackets, or `[IPV6]:PORT`) is that address; `ENTRY:PORT` limits an
/// entry to a port. Empty entries are skipped. Each rule gets `origin`.
pub fn no_proxy_rules(value: &str, origin: &str) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    for entry in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
    {
        // Names: a leading "*." or "." means the same as none (the domain and below).
        let bare = entry
            .strip_prefix("*.")
            .or_else(|| entry.strip_prefix('.'))
            .unwrap_or(entry);
        let pattern: Pattern = if bare == "*" {
            Pattern {
                host: HostMatch::Any,
                ports: None,
            }
        } else {
            let mut p: Pattern = bare
                .parse()
                .map_err(|e| format!("entry {}: {e}", quoted(entry)))?;
            if let HostMatch::Name(n) | HostMatch::Sub(n) = &p.host {
                p.host = HostMatch::Domain(n.clone());
            }
            p
        };
        out.push(Rule {
            pattern,
            action: Action::Direct,
            origin: Some(origin.to_string()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }
    fn rules(list: &[&str]) -> Rules {
        Rules {
            rules: list.iter().map(|r| rule(r)).collect(),
            dnat: Vec::new(),
        }
    }

    #[test]
    fn pattern_syntax_round_trips() {
        for (input, canon) in [
            ("*", "*"),
            ("*:25", "*:25"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8:22", "10.0.0.0/8:22"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
            ("[2001:db8::1]", "2001:db8::1/128"),
            ("[2001:db8::1]:80-90", "[2001:db8::1/128]:80-90"),
            ("Host.Example.", "host.example"),
            ("*.Corp.example", "*.corp.example"),
            (".corp.example:80-443", ".corp.example:80-443"),
            ("localhost:0-65535", "localhost:0-65535"),
            ("under_score.example", "under_score.example"),
        ] {
            let p = pat(input);
            assert_eq!(p.to_string(), canon, "{input}");
            assert_eq!(pat(canon), p, "{canon}");
        }
        assert_eq!(
            pat("*.a.example:80-443"),
            Pattern {
                host: HostMatch::Sub("a.example".into()),
                ports: Some(PortRange { lo: 80, hi: 443 })
            }
        );
    }

    #[test]
    fn pattern_errors() {
        for (bad, needle) in [
            ("", "empty"),
            ("10.0.0.0/33", "prefix"),
            ("10.0.0/8", "address"),
            ("10.0.0", "IPv4"),
            ("a..b", "host name"),
            ("a b", "host name"),
            ("-", "host name"),
            ("*.", "host name"),
            ("a*.example", "'*'"),
            ("*.*.example", "host name"),
            ("host:", "port"),
            ("host:65536", "port"),
            ("host:90-80", "above"),
            ("host:-1", "port"),
            ("host:8a", "port"),
            ("[2001:db8::1", "]"),
            ("[2001:db8::1]x", "after"),
            ("[192.0.2.1]:80", "IPv6"),
            ("[nope]:1", "address"),
            ("é.example", "host name"),
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
            assert!(!e.contains('\n'));
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(long.parse::<Pattern>().is_err());
    }

    #[test]
    fn actions_and_rules() {
        assert_eq!("direct".parse(), Ok(Action::Direct));
        assert_eq!(" DENY ".parse(), Ok(Action::Deny));
        assert_eq!("proxy".parse(), Ok(Action::Proxy("default".into())));
        assert_eq!("Proxy  corp-1".parse(), Ok(Action::Proxy("corp-1".into())));
        for bad in [
            "",
            "allow",
            "proxy a b",
            "proxy a.b",
            "direct now",
            "proxy é",
        ] {
            let e = bad.parse::<Action>().unwrap_err();
            assert!(!e.contains('\n'), "{e}");
        }
        let r = rule("  *.corp.example \t proxy corp ");
        assert_eq!(r.to_string(), "*.corp.example proxy corp");
        assert_eq!(rule(&r.to_string()), r);
        assert!("*.corp.example"
            .parse::<Rule>()
            .unwrap_err()
            .contains("action"));
        assert!(valid_chain_name("a_B-9") && !valid_chain_name("") && !valid_chain_name("a b"));
        assert!(!valid_chain_name(&"a".repeat(65)));
    }

    #[test]
    fn first_match_wins() {
        let r = rules(&[
            "10.0.0.0/8:22 direct",
            "10.0.0.0/8 proxy corp",
            "*.evil.example deny",
            ".corp.example:80-443 proxy corp",
            "host.example direct",
            "2001:db8::/32 deny",
        ]);
        let d = |ip_: Option<IpAddr>, name: Option<&str>, port| r.decide(ip_, name, port).verdict;
        assert_eq!(d(ip("10.1.2.3"), None, 22), Verdict::Direct);
        assert_eq!(d(ip("10.1.2.3"), None, 23), Verdict::Proxy("corp"));
        assert_eq!(d(ip("::ffff:10.1.2.3"), None, 22), Verdict::Direct);
        assert_eq!(d(ip("192.0.2.1"), None, 22), Verdict::Proxy("default"));
        assert_eq!(d(None, Some("x.evil.example"), 1), Verdict::Deny);
        assert_eq!(d(None, Some("A.B.EVIL.example."), 1), Verdict::Deny);
        assert_eq!(d(None, Some("evil.example"), 1), Verdict::Proxy("default"));
        assert_eq!(
            d(None, Some("notevil.example"), 1),
            Verdict::Proxy("default")
        );
        assert_eq!(d(None, Some("corp.example"), 443), Verdict::Proxy("corp"));
        assert_eq!(
            d(None, Some("www.corp.example"), 80),
            Verdict::Proxy("corp")
        );
        assert_eq!(
            d(None, Some("www.corp.example"), 8080),
            Verdict::Proxy("default")
        );
        assert_eq!(
            d(None, Some("xcorp.example"), 80),
            Verdict::Proxy("default")
        );
        assert_eq!(d(None, Some("HOST.example"), 1), Verdict::Direct);
        assert_eq!(
            d(None, Some("a.host.example"), 1),
            Verdict::Proxy("default")
        );
        assert_eq!(d(ip("2001:db8::5"), None, 1), Verdict::Deny);
        // The name rule matches on the name even when the address is known too.
        assert_eq!(d(ip("192.0.2.1"), Some("x.evil.example"), 1), Verdict::Deny);
        // An address literal given as the name counts as the address.
        assert_eq!(d(None, Some("10.9.9.9"), 22), Verdict::Direct);
        // A CIDR rule never matches a name alone (remote DNS: the address is unknown).
        assert_eq!(d(None, Some("ten.example"), 22), Verdict::Proxy("default"));
        // Nothing known at all: only `*` rules and the default.
        assert_eq!(d(None, None, 22), Verdict::Proxy("default"));
        // Loopback before every rule.
        let all_deny = rules(&["* deny"]);
        let dec = all_deny.decide(ip("127.0.0.1"), None, 1);
        assert_eq!(dec.verdict, Verdict::Direct);
        assert_eq!(dec.reason, Reason::Loopback);
        assert_eq!(all_deny.decide(ip("::1"), None, 1).verdict, Verdict::Direct);
        assert_eq!(all_deny.decide(None, None, 1).verdict, Verdict::Deny);
        assert_eq!(
            all_deny.decide(None, Some("localhost"), 1).verdict,
            Verdict::Deny
        );
    }

    #[test]
    fn decision_says_why() {
        let mut r = rules(&["*.corp.example proxy corp"]);
        r.rules[0].origin = Some("c.toml:7".into());
        let d = r.decide(None, Some("a.corp.example"), 80);
        assert_eq!(
            d.to_string(),
            "rule 1 \"*.corp.example proxy corp\" (c.toml:7)"
        );
        assert_eq!(d.verdict.to_string(), "proxy corp");
        assert!(matches!(d.reason, Reason::Rule { index: 0, .. }));
        let d = r.decide(ip("192.0.2.1"), None, 80);
        assert_eq!(d.reason, Reason::Default);
        assert_eq!(d.to_string(), "no rule matched");
        assert_eq!(
            r.chains_used().map(|(_, c)| c).collect::<Vec<_>>(),
            ["corp"]
        );
    }

    #[test]
    fn dnat_rewrites() {
        let r = Rules {
            rules: Vec::new(),
            dnat: [
                "192.0.2.1 198.51.100.1",
                "192.0.2.1:1234 198.51.100.2:443",
                "192.0.2.9:80 203.0.113.9",
                "[2001:db8::1]:22 [2001:db8::2]:2222",
                "2001:db8::3 192.0.2.3:8080",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
        };
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let t = |s: &str| r.dnat(sa(s));
        // The entry with a port wins even though it comes later.
        assert_eq!(t("192.0.2.1:1234"), Some(sa("198.51.100.2:443")));
        assert_eq!(t("192.0.2.1:80"), Some(sa("198.51.100.1:80")));
        assert_eq!(t("[::ffff:192.0.2.1]:1234"), Some(sa("198.51.100.2:443")));
        assert_eq!(t("192.0.2.9:80"), Some(sa("203.0.113.9:80")));
        assert_eq!(t("192.0.2.9:81"), None);
        assert_eq!(t("[2001:db8::1]:22"), Some(sa("[2001:db8::2]:2222")));
        assert_eq!(t("[2001:db8::1]:23"), None);
        assert_eq!(t("[2001:db8::3]:5"), Some(sa("192.0.2.3:8080")));
        assert_eq!(t("203.0.113.1:1"), None);
        for d in &r.dnat {
            assert_eq!(d.to_string().parse::<Dnat>().unwrap(), *d);
        }
        assert_eq!(r.dnat[1].to_string(), "192.0.2.1:1234 198.51.100.2:443");
        for bad in [
            "",
            "192.0.2.1",
            "192.0.2.1 192.0.2.2 192.0.2.3",
            "192.0.2.1:0 192.0.2.2",
            "192.0.2.1:65536 192.0.2.2",
            "host.example 192.0.2.2",
            "192.0.2.1 [2001:db8::1",
            "192.0.2.1 [2001:db8::1]x",
            "192.0.2.1 10.0.0/8",
        ] {
            let e = bad.parse::<Dnat>().unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?}: {e}");
        }
    }

    #[test]
    fn no_proxy_decisions_are_known() {
        let mut rules = no_proxy_rules(".lan", "env no_proxy").unwrap();
        rules.push("*.corp direct".parse().unwrap());
        let r = Rules {
            rules,
            dnat: Vec::new(),
        };
        assert!(r.decide(None, Some("a.lan"), 80).by_no_proxy());
        assert!(!r.decide(None, Some("a.corp"), 80).by_no_proxy());
        assert!(!r.decide(None, Some("a.example"), 80).by_no_proxy());
    }

    #[test]
    fn no_proxy_as_curl() {
        let r = Rules {
            rules: no_proxy_rules(
                "localhost, .example.com,corp.example ,*.wild.example,192.168.0.0/16,\
                 ::1,2001:db8::/32,[2001:db8:1::1]:8443,,10.0.0.1:22,svc.example:8080",
                "NO_PROXY",
            )
            .unwrap(),
            dnat: Vec::new(),
        };
        assert!(r
            .rules
            .iter()
            .all(|x| x.action == Action::Direct && x.origin.as_deref() == Some("NO_PROXY")));
        let direct = |ip_: Option<IpAddr>, name: Option<&str>, port| {
            r.decide(ip_, name, port).verdict == Verdict::Direct
        };
        assert!(direct(None, Some("localhost"), 80));
        assert!(direct(None, Some("example.com"), 80));
        assert!(direct(None, Some("www.example.com"), 80));
        assert!(!direct(None, Some("www.notexample.com"), 80));
        assert!(direct(None, Some("corp.example"), 1));
        assert!(direct(None, Some("a.corp.example"), 1));
        assert!(direct(None, Some("wild.example"), 1));
        assert!(direct(ip("192.168.3.4"), None, 1));
        assert!(direct(ip("2001:db8:ffff::1"), None, 1));
        assert!(direct(ip("2001:db8:1::1"), None, 8443));
        assert!(direct(ip("10.0.0.1"), None, 22));
        assert!(!direct(ip("10.0.0.1"), None, 23));
        assert!(direct(None, Some("svc.example"), 8080));
        assert!(!direct(None, Some("svc.example"), 80));
        assert!(!direct(ip("192.0.2.1"), None, 80));
        let all = no_proxy_rules("*", "no_proxy").unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].pattern.host, HostMatch::Any);
        assert!(no_proxy_rules(" , ", "NO_PROXY").unwrap().is_empty());
        let e = no_proxy_rules("ok.example,bad..name", "NO_PROXY").unwrap_err();
        assert!(e.contains("bad..name"), "{e}");
    }
}
