//! CIDR blocks for direct (excluded) destinations.

use std::net::IpAddr;

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
        let _ = s;
        todo!()
    }
}

impl Cidr {
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 blocks.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let _ = ip;
        todo!()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Loopback: 127.0.0.0/8, ::1, and IPv4-mapped loopback.
pub fn is_loopback(ip: &IpAddr) -> bool {
    let _ = ip;
    todo!()
}
