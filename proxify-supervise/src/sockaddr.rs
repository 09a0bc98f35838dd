//! Socket addresses as raw bytes (what the program passed) and as `SocketAddr`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

pub fn family(raw: &[u8]) -> Option<i32> {
    (raw.len() >= 2).then(|| i32::from(u16::from_ne_bytes([raw[0], raw[1]])))
}

/// An AF_INET or AF_INET6 address (None for other families or when too short, as the kernel
/// would refuse it).
pub fn parse(raw: &[u8]) -> Option<SocketAddr> {
    match family(raw)? {
        libc::AF_INET if raw.len() >= 16 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let ip = Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if raw.len() >= 24 => {
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            let flow = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&raw[8..24]);
            let scope = if raw.len() >= 28 {
                u32::from_ne_bytes([raw[24], raw[25], raw[26], raw[27]])
            } else {
                0
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// `addr` as a sockaddr for a socket of `domain`: an IPv4 address on an AF_INET6 socket is
/// IPv4-mapped; an IPv6 address cannot go on an AF_INET socket (unless it is mapped).
pub fn to_raw(addr: SocketAddr, domain: i32) -> Option<Vec<u8>> {
    let addr = match (domain, addr) {
        (libc::AF_INET, SocketAddr::V6(a)) => {
            SocketAddr::new(IpAddr::V4(a.ip().to_ipv4_mapped()?), a.port())
        }
        (libc::AF_INET6, SocketAddr::V4(a)) => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        (libc::AF_INET, a) | (libc::AF_INET6, a) => a,
        _ => return None,
    };
    Some(match addr {
        SocketAddr::V4(a) => {
            let mut v = vec![0u8; 16];
            v[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            v[2..4].copy_from_slice(&a.port().to_be_bytes());
            v[4..8].copy_from_slice(&a.ip().octets());
            v
        }
        SocketAddr::V6(a) => {
            let mut v = vec![0u8; 28];
            v[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            v[2..4].copy_from_slice(&a.port().to_be_bytes());
            v[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            v[8..24].copy_from_slice(&a.ip().octets());
            v[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            v
        }
    })
}

/// The peer or local address of a socket (getpeername / getsockname).
pub fn name_of(fd: i32, peer: bool) -> Option<SocketAddr> {
    let mut st = [0u8; 128];
    let mut len = st.len() as libc::socklen_t;
    // SAFETY: `st` and `len` describe a writable buffer of `len` bytes.
    let rc = unsafe {
        let p = st.as_mut_ptr() as *mut libc::sockaddr;
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc != 0 {
        return None;
    }
    parse(&st[..(len as usize).min(st.len())])
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trips() {
        for s in ["203.0.113.10:80", "[2001:db8::1]:443"] {
            let a: SocketAddr = s.parse().unwrap();
            let d = if a.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            assert_eq!(parse(&to_raw(a, d).unwrap()), Some(a));
        }
        let a: SocketAddr = "203.0.113.10:80".parse().unwrap();
        let m = parse(&to_raw(a, libc::AF_INET6).unwrap()).unwrap();
        assert_eq!(m.to_string(), "[::ffff:203.0.113.10]:80");
        assert!(to_raw("[2001:db8::1]:1".parse().unwrap(), libc::AF_INET).is_none());
        assert!(parse(&[2, 0, 0]).is_none());
    }
}
