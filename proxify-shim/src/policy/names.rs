//! What a name or an address stands for without the system resolver (remote DNS): a
//! forward look-up ([`answer`]: localhost, /etc/hosts, else a placeholder) and a reverse one
//! ([`reverse`]: a placeholder's name, /etc/hosts). Shared by the look-up hooks and the
//! in-process DNS responder. Plain Rust over layer 1.

use crate::state::fakedns::{self, Miss};
use crate::state::{hosts, runtime};
use libc::c_int;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a forward look-up of a (non-numeric) name answers.
pub struct Answer {
    pub canon: String,
    pub addrs: Vec<IpAddr>,
}

/// Resolves `name` without the system resolver: localhost, /etc/hosts, or a placeholder.
/// `family` and `v4mapped` filter the addresses as `getaddrinfo` would.
pub fn answer(name: &str, family: c_int, v4mapped: bool) -> Result<Answer, Miss> {
    let lower = name.to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    let (canon, addrs, v6_proxy) = if lower == "localhost" || lower.ends_with(".localhost") {
        let a: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
        (lower.to_string(), a, false)
    } else if let Some((canon, addrs)) = hosts::lookup_name(name) {
        (canon, addrs, false)
    } else {
        if lower.is_empty() || lower.len() > 255 {
            return Err(Miss::NoName);
        }
        let i = fakedns::index_for(lower)?;
        let v4 = IpAddr::V4(fakedns::v4(i));
        let v6 = IpAddr::V6(fakedns::v6(i));
        let prefer_v6 = runtime::get()
            .first_hop()
            .map(|p| matches!(p.host, proxify_core::url::Host::Ip(IpAddr::V6(_))))
            .unwrap_or(false);
        let both = if prefer_v6 {
            vec![v6, v4]
        } else {
            vec![v4, v6]
        };
        (fakedns::normalize(name), both, prefer_v6)
    };
    let pick: Vec<IpAddr> = match family {
        libc::AF_INET => addrs.iter().filter(|a| a.is_ipv4()).copied().collect(),
        libc::AF_INET6 => {
            let v6: Vec<IpAddr> = addrs.iter().filter(|a| a.is_ipv6()).copied().collect();
            if v6.is_empty() && v4mapped {
                addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
                        _ => None,
                    })
                    .collect()
            } else {
                v6
            }
        }
        // AF_UNSPEC: every address the file lists; both placeholders, IPv4 first, so a program
        // that filters for one family (`curl -6`) finds it. With an IPv6 proxy only the IPv6
        // one: an AF_INET socket cannot reach that proxy.
        _ if v6_proxy => addrs.into_iter().filter(|a| a.is_ipv6()).collect(),
        _ => addrs,
    };
    if pick.is_empty() {
        return Err(Miss::NoName);
    }
    Ok(Answer { canon, addrs: pick })
}

/// The name we know for `ip` without DNS: a placeholder's name, or /etc/hosts.
pub fn reverse(ip: &IpAddr) -> Option<String> {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*ip),
        v4 => *v4,
    };
    if fakedns::is_placeholder(&ip) {
        return fakedns::name_of(&ip);
    }
    hosts::lookup_addr(&ip)
}
