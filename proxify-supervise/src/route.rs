//! Where a supervised connection or datagram goes, from proxify-core's configuration: the
//! same order as the shim (loopback, unspecified and link-local direct; a placeholder by its
//! name; `dnat`; then `--direct` blocks, the rules and the default chain).

use crate::names::Names;
use proxify_core::cidr::is_loopback;
use proxify_core::config::Config;
use proxify_core::rules::Verdict;
use proxify_core::socks::TargetAddr;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Direct, to this address (the destination, or where `dnat` rewrote it); the text says why.
    Direct(Option<SocketAddr>, String),
    /// Through chain number `chain` of the configuration, to `target`.
    Proxy(usize, TargetAddr),
    /// Refused: errno and reason.
    Deny(i32, String),
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

fn chain_index(cfg: &Config, name: &str) -> Option<usize> {
    cfg.chains.iter().position(|c| c.name == name)
}

pub fn route(cfg: &Config, names: &Names, dest: SocketAddr) -> Route {
    let dest = unmap(dest);
    let ip = dest.ip();
    if names.is_placeholder(&ip) {
        let Some(name) = names.name_of(&ip) else {
            return Route::Deny(
                libc::EHOSTUNREACH,
                format!("{ip} is a remote-DNS placeholder with no name behind it"),
            );
        };
        let d = cfg.decide(None, Some(&name), dest.port());
        return match d.verdict {
            Verdict::Proxy(chain) => match chain_index(cfg, chain) {
                Some(c) => Route::Proxy(c, TargetAddr::Domain(name, dest.port())),
                None => Route::Deny(libc::EACCES, format!("no chain named {chain}")),
            },
            Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
            Verdict::Direct => Route::Deny(
                libc::EACCES,
                format!(
                    "{d} sends {name}:{} direct, but {name} was left to the proxy to resolve",
                    dest.port()
                ),
            ),
        };
    }
    if is_loopback(&ip) {
        return Route::Direct(None, "loopback".into());
    }
    if ip.is_unspecified() {
        return Route::Direct(None, "unspecified address (local host)".into());
    }
    if let IpAddr::V6(v6) = ip {
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return Route::Direct(None, "IPv6 link-local".into());
        }
    }
    let rewritten = cfg.rules.dnat(dest).map(unmap);
    let to = rewritten.unwrap_or(dest);
    let d = cfg.decide(Some(to.ip()), None, to.port());
    match d.verdict {
        Verdict::Direct => Route::Direct(rewritten, d.to_string()),
        Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
        Verdict::Proxy(chain) => match chain_index(cfg, chain) {
            Some(c) => Route::Proxy(c, TargetAddr::Ip(to)),
            None => Route::Deny(libc::EACCES, format!("no chain named {chain}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::from_env_with(|k| {
            (k == proxify_core::config::ENV_PROXY).then(|| "socks5://198.51.100.1:1080".into())
        })
        .unwrap()
    }

    #[test]
    fn loopback_is_direct_the_rest_proxied() {
        let c = cfg();
        let n = Names::none();
        assert!(matches!(
            route(&c, &n, "127.0.0.1:80".parse().unwrap()),
            Route::Direct(None, _)
        ));
        assert!(matches!(
            route(&c, &n, "[::ffff:127.0.0.1]:80".parse().unwrap()),
            Route::Direct(None, _)
        ));
        assert_eq!(
            route(&c, &n, "203.0.113.10:80".parse().unwrap()),
            Route::Proxy(0, TargetAddr::Ip("203.0.113.10:80".parse().unwrap()))
        );
        // A placeholder without a name never goes anywhere.
        assert!(matches!(
            route(&c, &n, "240.0.0.7:80".parse().unwrap()),
            Route::Deny(libc::EHOSTUNREACH, _)
        ));
    }
}
