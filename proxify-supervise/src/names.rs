//! The remote-DNS placeholders the supervisor knows. Until the shim's shared table is in
//! proxify-core, a placeholder address is recognised (and never connected anywhere) but has
//! no name behind it, so a connect to one fails with EHOSTUNREACH.

use proxify_core::cidr::Cidr;
use std::net::IpAddr;

pub struct Names {
    v4: Option<Cidr>,
}

impl Names {
    pub fn new(v4: Cidr) -> Names {
        Names { v4: Some(v4) }
    }

    #[cfg(test)]
    pub fn none() -> Names {
        Names {
            v4: Some(proxify_core::config::DEFAULT_REMOTE_DNS_SUBNET),
        }
    }

    pub fn is_placeholder(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4.map(|c| c.contains(ip)).unwrap_or(false),
            IpAddr::V6(a) => {
                if let Some(m) = a.to_ipv4_mapped() {
                    return self.is_placeholder(&IpAddr::V4(m));
                }
                u128::from(*a) >> 64 == 0x0100_0000_0000_0000
            }
        }
    }

    pub fn name_of(&self, _ip: &IpAddr) -> Option<String> {
        None
    }
}
