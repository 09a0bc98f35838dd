//! The decision for one destination: direct (and why), through the proxy, or refused.
//! Plain Rust, no I/O but the placeholder map look-up: the hooks only act on what it says.

use crate::state::{fakedns, runtime};
use crate::sys::sockaddr::unmap;
use proxify_core::cidr::is_loopback;
use proxify_core::config::Chain;
use proxify_core::rules::Verdict;
use proxify_core::socks::TargetAddr;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direct {
    Loopback,
    /// 0.0.0.0 / :: (the local host, to the kernel).
    Unspecified,
    /// IPv6 link-local (fe80::/10): never routed beyond the link.
    LinkLocal,
    /// A `--direct` block or a `direct` rule (the text says which), and the address to use
    /// when a `dnat` entry rewrote it.
    Rule(String, Option<SocketAddr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Direct(Direct),
    /// Through a proxy chain, to this target (a name when the destination was a placeholder;
    /// the rewritten address after `dnat`). [`chain_for`] says which chain.
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
            Direct::Rule(why, None) => f.write_str(why),
            Direct::Rule(why, Some(to)) => write!(f, "{why}, dnat to {to}"),
        }
    }
}

/// Where a connection (or datagram) to `dest` goes: loopback, unspecified and link-local
/// direct; a placeholder by its name; otherwise `dnat`, then the configuration's decision
/// (`--direct` blocks, rules in order, the default chain). An unusable configuration refuses
/// everything that is not local.
pub fn route(dest: SocketAddr) -> Route {
    let dest = unmap(dest);
    let ip = dest.ip();
    if fakedns::is_placeholder(&ip) {
        let Some(name) = fakedns::name_of(&ip) else {
            return Route::Deny(
                libc::EHOSTUNREACH,
                format!("{ip} is a remote-DNS placeholder with no name behind it"),
            );
        };
        let rt = runtime::get();
        let Some(cfg) = rt.config() else {
            return Route::Deny(libc::EACCES, rt.config_error().to_string());
        };
        let d = cfg.decide(None, Some(&name), dest.port());
        return match d.verdict {
            Verdict::Proxy(_) => Route::Proxy(TargetAddr::Domain(name, dest.port())),
            Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
            Verdict::Direct => Route::Deny(
                libc::EACCES,
                format!(
                    "{d} sends {name}:{} direct, but {name} was left to the proxy to resolve \
                     (a direct rule for a name should not depend on the port)",
                    dest.port()
                ),
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
    let rt = runtime::get();
    let Some(cfg) = rt.config() else {
        return Route::Deny(libc::EACCES, rt.config_error().to_string());
    };
    let rewritten = cfg.rules.dnat(dest);
    let dest = rewritten.map(unmap).unwrap_or(dest);
    let d = cfg.decide(Some(dest.ip()), None, dest.port());
    match d.verdict {
        Verdict::Direct => {
            if d.by_no_proxy() {
                // Read only with --no-proxy-env: each direct path it opens is said at -v.
                log::info!("{dest}: direct by {d} (--no-proxy-env)");
            }
            Route::Direct(Direct::Rule(d.to_string(), rewritten))
        }
        Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
        Verdict::Proxy(_) => Route::Proxy(TargetAddr::Ip(dest)),
    }
}

/// The chain a proxied target goes through (the rules again: cheap, and keeps `Route` small).
pub fn chain_for(target: &TargetAddr) -> Option<&'static Chain> {
    let cfg = runtime::get().config()?;
    let d = match target {
        TargetAddr::Ip(a) => cfg.decide(Some(a.ip()), None, a.port()),
        TargetAddr::Domain(n, p) => cfg.decide(None, Some(n), *p),
    };
    match d.verdict {
        Verdict::Proxy(name) => cfg.chain(name),
        _ => None,
    }
}

/// Does a name resolve through the proxy? (The chain it would use has remote DNS.) Names
/// that go direct, or through a chain with local DNS, are resolved locally.
pub fn name_goes_remote(name: &str) -> bool {
    let rt = runtime::get();
    let Some(cfg) = rt.config() else {
        return true;
    };
    let d = cfg.decide(None, Some(name), 0);
    match d.verdict {
        Verdict::Proxy(chain) => cfg.chain(chain).map(|c| cfg.remote_dns(c)).unwrap_or(true),
        Verdict::Deny => true,
        Verdict::Direct => {
            if d.by_no_proxy() {
                log::info!("{name}: resolved locally, direct by {d} (--no-proxy-env)");
            }
            false
        }
    }
}

/// Fast pre-check used before anything else: is this destination certainly direct without
/// consulting the configuration? (loopback and unspecified, unless the placeholder block
/// covers it: `remote_dns_subnet 127` makes 127.x placeholders, judged by their name.)
#[inline]
pub fn trivially_direct(dest: &SocketAddr) -> bool {
    let ip = unmap(*dest).ip();
    (is_loopback(&ip) || ip.is_unspecified()) && !fakedns::is_placeholder(&ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn unmapping() {
        let a: SocketAddr = "[::ffff:203.0.113.1]:80".parse().unwrap();
        assert_eq!(unmap(a), "203.0.113.1:80".parse::<SocketAddr>().unwrap());
        assert!(trivially_direct(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(trivially_direct(&"0.0.0.0:1".parse().unwrap()));
        assert!(!trivially_direct(&"[2001:db8::1]:1".parse().unwrap()));
    }
}
