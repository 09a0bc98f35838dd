//! The decision for one destination: direct (and why), through the proxy, or refused.
//! Plain Rust, no I/O but the placeholder map look-up: the hooks only act on what it says.

use crate::fakedns;
use proxify_core::cidr::{is_loopback, Cidr};
use proxify_core::socks::TargetAddr;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direct {
    Loopback,
    /// 0.0.0.0 / :: (the local host, to the kernel).
    Unspecified,
    /// IPv6 link-local (fe80::/10): never routed beyond the link.
    LinkLocal,
    /// Matched a `--direct` / PROXIFY_DIRECT block.
    Excluded(Cidr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Direct(Direct),
    /// Through the proxy, to this target (a name when the destination was a placeholder).
    Proxy(TargetAddr),
    /// Refused: errno and reason.
    Deny(i32, String),
}

impl std::fmt::Display for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Direct::Loopback => f.write_str("loopback"),
            Direct::Unspecified => f.write_str("unspecified address (local host)"),
            Direct::LinkLocal => f.write_str("IPv6 link-local"),
            Direct::Excluded(c) => write!(f, "excluded by direct rule {c}"),
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged (and sent to the proxy) as the IPv4 address.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Where a connection (or datagram) to `dest` goes.
pub fn route(dest: SocketAddr, direct: &[Cidr]) -> Route {
    let dest = unmap(dest);
    let ip = dest.ip();
    if fakedns::is_placeholder(&ip) {
        return match fakedns::name_of(&ip) {
            Some(name) => Route::Proxy(TargetAddr::Domain(name, dest.port())),
            None => Route::Deny(
                libc::EHOSTUNREACH,
                format!("{ip} is a remote-DNS placeholder with no name behind it"),
            ),
        };
    }
    if is_loopback(&ip) {
        return Route::Direct(Direct::Loopback);
    }
    if ip.is_unspecified() {
        return Route::Direct(Direct::Unspecified);
    }
    if let IpAddr::V6(v6) = ip {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return Route::Direct(Direct::LinkLocal);
        }
    }
    if let Some(c) = direct.iter().find(|c| c.contains(&ip)) {
        return Route::Direct(Direct::Excluded(*c));
    }
    Route::Proxy(TargetAddr::Ip(dest))
}

/// Fast pre-check used before anything else: is this destination certainly direct without
/// consulting the configuration? (loopback and unspecified.)
#[inline]
pub fn trivially_direct(dest: &SocketAddr) -> bool {
    let ip = unmap(*dest).ip();
    is_loopback(&ip) || ip.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    #[test]
    fn routes() {
        let d: Vec<Cidr> = vec!["192.0.2.0/24".parse().unwrap()];
        assert_eq!(
            route(sa("127.0.0.5:1"), &d),
            Route::Direct(Direct::Loopback)
        );
        assert_eq!(route(sa("[::1]:1"), &d), Route::Direct(Direct::Loopback));
        assert_eq!(
            route(sa("[::ffff:127.0.0.1]:1"), &d),
            Route::Direct(Direct::Loopback)
        );
        assert_eq!(
            route(sa("0.0.0.0:1"), &d),
            Route::Direct(Direct::Unspecified)
        );
        assert_eq!(
            route(sa("[fe80::1]:1"), &d),
            Route::Direct(Direct::LinkLocal)
        );
        assert!(matches!(
            route(sa("192.0.2.9:1"), &d),
            Route::Direct(Direct::Excluded(_))
        ));
        assert!(matches!(
            route(sa("[::ffff:192.0.2.9]:1"), &d),
            Route::Direct(Direct::Excluded(_))
        ));
        assert_eq!(
            route(sa("[::ffff:203.0.113.1]:80"), &d),
            Route::Proxy(TargetAddr::Ip(sa("203.0.113.1:80")))
        );
        assert_eq!(
            route(sa("[2001:db8::1]:80"), &d),
            Route::Proxy(TargetAddr::Ip(sa("[2001:db8::1]:80")))
        );
        let i = fakedns::index_for("x.example");
        assert_eq!(
            route(SocketAddr::new(IpAddr::V4(fakedns::v4(i)), 443), &d),
            Route::Proxy(TargetAddr::Domain("x.example".into(), 443))
        );
        assert!(matches!(route(sa("240.0.255.254:1"), &d), Route::Deny(..)));
    }
}
