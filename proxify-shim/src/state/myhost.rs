//! The machine's own host name under remote DNS, answered locally as glibc's nss-myhostname
//! answers it: the name `gethostname()` returns resolves to the host's own addresses (every
//! configured address but loopback and IPv6 link-local; 127.0.0.2 and ::1 if there is none),
//! and those addresses name the host. Like an /etc/hosts entry, it never becomes a placeholder,
//! which a later connect would turn into this host's name sent to the proxy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host name (`gethostname`), if it has one worth answering.
pub fn name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; gethostname NUL-terminates within it
    // (the last byte is kept 0 for the truncated case).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let n = std::str::from_utf8(&buf[..end]).ok()?.trim_end_matches('.');
    (!n.is_empty() && n != "(none)").then(|| n.to_string())
}

/// Is `name` (any case, with or without a trailing dot) this host's name? Returns the name
/// as `gethostname` spells it.
pub fn matches(name: &str) -> Option<String> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let own = self::name()?;
    own.eq_ignore_ascii_case(n).then_some(own)
}

/// The host's own addresses, IPv4 first, in interface order.
pub fn addrs() -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we walk read-only and free once below.
    if unsafe { libc::getifaddrs(&mut head) } == 0 {
        let mut p = head;
        while !p.is_null() {
            // SAFETY: p is a node of the list getifaddrs returned (not yet freed).
            let ifa = unsafe { &*p };
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
                continue;
            }
            // SAFETY: ifa_addr is non-null and points to a sockaddr of its sa_family.
            let fam = unsafe { (*ifa.ifa_addr).sa_family } as libc::c_int;
            if fam == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                if !ip.is_loopback() && !v4.contains(&IpAddr::V4(ip)) {
                    v4.push(IpAddr::V4(ip));
                }
            } else if fam == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                if !ip.is_loopback() && !link_local && !v6.contains(&IpAddr::V6(ip)) {
                    v6.push(IpAddr::V6(ip));
                }
            }
        }
        // SAFETY: head came from getifaddrs and is freed exactly once.
        unsafe { libc::freeifaddrs(head) };
    }
    if v4.is_empty() && v6.is_empty() {
        return vec![
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
    }
    v4.extend(v6);
    v4
}

/// The host name, if `ip` is one of the host's own addresses.
pub fn name_of(ip: &IpAddr) -> Option<String> {
    if addrs().contains(ip) || *ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)) {
        name()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_name_and_addresses() {
        let n = name().expect("the test host has a host name");
        assert_eq!(matches(&n.to_ascii_uppercase()), Some(n.clone()));
        assert_eq!(matches(&format!("{n}.")), Some(n.clone()));
        assert_eq!(matches("surely-not-this-host.invalid"), None);
        let a = addrs();
        assert!(!a.is_empty());
        assert!(a
            .iter()
            .all(|ip| !matches!(ip, IpAddr::V4(v) if v.is_loopback())));
        assert_eq!(name_of(&a[0]), Some(n));
    }
}
