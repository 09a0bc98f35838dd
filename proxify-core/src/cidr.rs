//! CIDR blocks for direct (excluded) destinations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (/32 or /128). Host bits set below the
    /// prefix are masked off. Error text names the problem.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty CIDR block".to_string());
        }
        let (addr_str, prefix_str) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let addr_str = addr_str
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr_str);
        let addr: IpAddr = addr_str
            .parse()
            .map_err(|_| format!("bad address \"{}\" in CIDR block", addr_str.escape_debug()))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix_str {
            None => max,
            Some(p) => {
                let n = if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse::<u8>().ok()
                } else {
                    None
                };
                match n {
                    Some(n) if n <= max => n,
                    _ => {
                        return Err(format!(
                            "bad prefix length \"{}\" in CIDR block \"{}\" (must be 0 to {max})",
                            p.escape_debug(),
                            s.escape_debug()
                        ))
                    }
                }
            }
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(prefix))),
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl Cidr {
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 blocks (and IPv4 addresses
    /// match blocks written in the `::ffff:0:0/96` space).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => v4_in(net, self.prefix, *a),
            (IpAddr::V4(net), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a) => v4_in(net, self.prefix, a),
                None => false,
            },
            (IpAddr::V6(net), IpAddr::V6(a)) => v6_in(net, self.prefix, *a),
            (IpAddr::V6(net), IpAddr::V4(a)) => v6_in(net, self.prefix, a.to_ipv6_mapped()),
        }
    }
}

fn v4_in(net: Ipv4Addr, prefix: u8, a: Ipv4Addr) -> bool {
    let m = mask32(prefix);
    u32::from(a) & m == u32::from(net) & m
}

fn v6_in(net: Ipv6Addr, prefix: u8, a: Ipv6Addr) -> bool {
    let m = mask128(prefix);
    u128::from(a) & m == u128::from(net) & m
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Loopback: 127.0.0.0/8, ::1, and IPv4-mapped loopback.
pub fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_mask() {
        assert_eq!(
            c("10.1.2.3/8"),
            Cidr {
                addr: ip("10.0.0.0"),
                prefix: 8
            }
        );
        assert_eq!(
            c("192.0.2.7"),
            Cidr {
                addr: ip("192.0.2.7"),
                prefix: 32
            }
        );
        assert_eq!(
            c(" 2001:db8::1/32 "),
            Cidr {
                addr: ip("2001:db8::"),
                prefix: 32
            }
        );
        assert_eq!(
            c("2001:db8::1"),
            Cidr {
                addr: ip("2001:db8::1"),
                prefix: 128
            }
        );
        assert_eq!(
            c("[2001:db8::1]/64"),
            Cidr {
                addr: ip("2001:db8::"),
                prefix: 64
            }
        );
        assert_eq!(
            c("0.0.0.0/0"),
            Cidr {
                addr: ip("0.0.0.0"),
                prefix: 0
            }
        );
        assert_eq!(
            c("1.2.3.4/0"),
            Cidr {
                addr: ip("0.0.0.0"),
                prefix: 0
            }
        );
        assert_eq!(c("::/0").prefix, 0);
        assert_eq!(c("198.51.100.255/31").addr, ip("198.51.100.254"));
        assert_eq!(c("10.0.0.0/8").to_string(), "10.0.0.0/8");
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "10.0.0.0/ 8",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?}: {e}");
        }
        assert!("10.0.0.0/33"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("prefix"));
        assert!("nope/8".parse::<Cidr>().unwrap_err().contains("nope"));
    }

    #[test]
    fn contains_works() {
        let n = c("192.0.2.0/24");
        assert!(n.contains(&ip("192.0.2.0")));
        assert!(n.contains(&ip("192.0.2.255")));
        assert!(!n.contains(&ip("192.0.3.0")));
        assert!(!n.contains(&ip("192.0.1.255")));
        assert!(n.contains(&ip("::ffff:192.0.2.9")));
        assert!(!n.contains(&ip("::ffff:192.0.3.9")));
        assert!(!n.contains(&ip("2001:db8::1")));
        let all4 = c("0.0.0.0/0");
        assert!(all4.contains(&ip("203.0.113.1")));
        assert!(!all4.contains(&ip("2001:db8::1")));
        let v6 = c("2001:db8::/32");
        assert!(v6.contains(&ip("2001:db8:ffff::1")));
        assert!(!v6.contains(&ip("2001:db9::1")));
        assert!(!v6.contains(&ip("192.0.2.1")));
        let mapped = c("::ffff:198.51.100.0/120");
        assert!(mapped.contains(&ip("198.51.100.20")));
        assert!(!mapped.contains(&ip("198.51.101.20")));
        let host = c("203.0.113.5");
        assert!(host.contains(&ip("203.0.113.5")));
        assert!(!host.contains(&ip("203.0.113.6")));
    }

    #[test]
    fn loopback() {
        for yes in [
            "127.0.0.1",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.9.9.9",
        ] {
            assert!(is_loopback(&ip(yes)), "{yes}");
        }
        for no in [
            "128.0.0.1",
            "126.255.255.255",
            "::2",
            "::",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_loopback(&ip(no)), "{no}");
        }
    }
}
