//! The decision for one destination: direct (and why), through the proxy, or refused.
//! Plain Rust, no I/O but the placeholder map look-up: the hooks only act on what it says.

use crate::state::{fakedns, runtime};
use crate::sys::sockaddr::unmap;
use proxify_core::cidr::is_loopback;
use proxify_core::config::Chain;
use proxify_core::rules::{Decision, Verdict};
use proxify_core::socks::TargetAddr;
use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direct {
    Loopback,
    /// 0.0.0.0 / :: (the local host, to the kernel).
    Unspecified,
    /// IPv6 link-local (fe80::/10): never routed beyond the link.
    LinkLocal,
    /// A `--direct` block or a `direct` rule (the decision says which), and the address to use
    /// when a `dnat` entry rewrote it.
    Rule(Decision<'static>, Option<SocketAddr>),
}

/// A proxied destination as the rules decided it, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxied {
    /// The target the proxy is asked for: a name when the destination was a placeholder, the
    /// rewritten address after `dnat`, else the address.
    pub target: TargetAddr,
    /// The chain the rules chose.
    pub chain: &'static Chain,
    /// Why (the rule, or "no rule matched"), for the one decision line. A borrow of the
    /// configuration: no text is built unless a line is written.
    pub by: Decision<'static>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Direct(Direct),
    /// Through a proxy chain: the whole answer, so nothing downstream runs the rules again.
    Proxy(Proxied),
    /// Refused: errno and reason.
    Deny(i32, String),
}

impl std::fmt::Display for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Direct::Loopback => f.write_str("(loopback)"),
            Direct::Unspecified => f.write_str("(unspecified address: the local host)"),
            Direct::LinkLocal => f.write_str("(IPv6 link-local)"),
            Direct::Rule(d, None) => write!(f, "by {d}"),
            Direct::Rule(d, Some(to)) => write!(f, "by {d}, dnat to {to}"),
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
            Verdict::Proxy(chain) => proxied(cfg, chain, TargetAddr::Domain(name, dest.port()), d),
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
        // The caller writes the decision line (a rule made of NO_PROXY names its variable).
        Verdict::Direct => Route::Direct(Direct::Rule(d, rewritten)),
        Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
        Verdict::Proxy(chain) => proxied(cfg, chain, TargetAddr::Ip(dest), d),
    }
}

fn proxied(
    cfg: &'static proxify_core::config::Config,
    chain: &str,
    target: TargetAddr,
    by: Decision<'static>,
) -> Route {
    match cfg.chain(chain) {
        Some(chain) => Route::Proxy(Proxied { target, chain, by }),
        // The configuration's own check makes every rule name a chain; refuse if one did not.
        None => Route::Deny(libc::EACCES, format!("{by} names no chain {chain:?}")),
    }
}

/// The decision for a destination that reaches proxify as a proxy target rather than as an
/// address the program connects to: the peer a `listen` makes a BIND towards (the target of
/// the proxied connection it came from) and the `--dns-server`. The same rules as [`route`];
/// such a target cannot go direct, so its caller refuses a `Direct`.
pub fn route_target(target: &TargetAddr) -> Route {
    let rt = runtime::get();
    let Some(cfg) = rt.config() else {
        return Route::Deny(libc::EACCES, rt.config_error().to_string());
    };
    let d = match target {
        TargetAddr::Ip(a) => cfg.decide(Some(a.ip()), None, a.port()),
        TargetAddr::Domain(n, p) => cfg.decide(None, Some(n), *p),
    };
    match d.verdict {
        Verdict::Proxy(chain) => proxied(cfg, chain, target.clone(), d),
        Verdict::Deny => Route::Deny(libc::EACCES, format!("denied by {d}")),
        Verdict::Direct => Route::Direct(Direct::Rule(d, None)),
    }
}

/// A [`route_target`] answer as the one chain to use, or why there is none.
pub fn proxied_target(target: &TargetAddr, what: &str) -> Result<Proxied, (i32, String)> {
    match route_target(target) {
        Route::Proxy(p) => Ok(p),
        Route::Deny(e, why) => Err((e, why)),
        Route::Direct(why) => Err((
            libc::EACCES,
            format!("{what} to {target} would go direct {why}, and it can only go through a proxy"),
        )),
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
