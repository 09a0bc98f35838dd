//! Placeholder addresses for names the proxy resolves (remote DNS).
//!
//! A name gets an index `i` (1..=CAPACITY); its placeholders are `240.0.0.0 + i` (IPv4, from
//! 240.0.0.0/4, reserved and never routed) and `100:: + i` (IPv6, from the discard-only prefix
//! 100::/64, RFC 6666). A connect to a placeholder sends the name to the proxy; a placeholder
//! that reaches the network by any other path goes nowhere.
//!
//! Memory is bounded: at most `CAPACITY` names (65,536, at most 255 bytes each: about 20 MiB in
//! the worst case, a few MiB in practice). When full, the oldest entry is reused.

use crate::lock::ForkSafeMutex;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

pub const CAPACITY: u32 = 1 << 16;
/// The IPv4 placeholder block (default 240.0.0.0/4; `remote_dns_subnet` can move it).
static V4_BASE: AtomicU32 = AtomicU32::new(0xF000_0000);
static V4_MASK: AtomicU32 = AtomicU32::new(0xF000_0000);
const V6_BASE: u128 = 0x0100_0000_0000_0000_0000_0000_0000_0000; // 100::

struct Map {
    by_name: Option<HashMap<Box<str>, u32>>,
    names: Vec<Box<str>>,
    next_reuse: u32,
}

static MAP: ForkSafeMutex<Map> = ForkSafeMutex::new(Map {
    by_name: None,
    names: Vec::new(),
    next_reuse: 0,
});

/// `pthread_atfork` prepare handler: no other thread may be inside the map across `fork`.
pub(crate) fn fork_prepare() {
    MAP.raw_lock();
}

/// `pthread_atfork` parent and child handlers.
pub(crate) fn fork_release() {
    unsafe { MAP.raw_unlock() }
}

/// Canonical form of a name: lower case, without one trailing dot.
pub fn normalize(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

/// The index for `name`, assigning one if needed.
pub fn index_for(name: &str) -> u32 {
    let name = normalize(name);
    let mut m = MAP.lock();
    let m = &mut *m;
    let by_name = m.by_name.get_or_insert_with(HashMap::new);
    if let Some(&i) = by_name.get(name.as_str()) {
        return i;
    }
    let name: Box<str> = name.into_boxed_str();
    let i = if (m.names.len() as u32) < CAPACITY {
        m.names.push(name.clone());
        m.names.len() as u32
    } else {
        let slot = m.next_reuse as usize;
        m.next_reuse = (m.next_reuse + 1) % CAPACITY;
        let old = std::mem::replace(&mut m.names[slot], name.clone());
        by_name.remove(&old);
        log::warn!(
            "remote-DNS placeholder table full ({CAPACITY} names): reusing the address of {old}"
        );
        slot as u32 + 1
    };
    by_name.insert(name, i);
    i
}

/// Moves the IPv4 placeholders into `block` (an IPv4 CIDR of at least /16, checked by the
/// configuration); called once by the runtime before any look-up.
pub fn set_v4_block(block: proxify_core::cidr::Cidr) {
    if let IpAddr::V4(a) = block.addr {
        let prefix = u32::from(block.prefix.min(16));
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        V4_MASK.store(mask, Ordering::Relaxed);
        V4_BASE.store(u32::from(a) & mask, Ordering::Relaxed);
    }
}

pub fn v4(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(V4_BASE.load(Ordering::Relaxed) + index)
}

pub fn v6(index: u32) -> Ipv6Addr {
    Ipv6Addr::from(V6_BASE + index as u128)
}

/// The index encoded in a placeholder address, if `ip` is in a placeholder range.
pub fn index_of(ip: &IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => {
            let x = u32::from(*a);
            let base = V4_BASE.load(Ordering::Relaxed);
            (x & V4_MASK.load(Ordering::Relaxed) == base && x != u32::MAX).then(|| x - base)
        }
        IpAddr::V6(a) => {
            if let Some(m) = a.to_ipv4_mapped() {
                return index_of(&IpAddr::V4(m));
            }
            let x = u128::from(*a);
            // Index 0 (no name) for anything past u32: still a placeholder, never routed.
            (x >> 64 == V6_BASE >> 64)
                .then_some(u32::try_from(x & 0xFFFF_FFFF_FFFF_FFFF).unwrap_or(0))
        }
    }
}

/// Is `ip` in a placeholder range (whether or not a name is behind it)?
pub fn is_placeholder(ip: &IpAddr) -> bool {
    index_of(ip).is_some()
}

/// The name behind a placeholder address.
pub fn name_of(ip: &IpAddr) -> Option<String> {
    let i = index_of(ip)?;
    if i == 0 || i > CAPACITY {
        return None;
    }
    let m = MAP.lock();
    m.names.get(i as usize - 1).map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let i = index_for("Internal.Example.");
        assert_eq!(index_for("internal.example"), i);
        let a = IpAddr::V4(v4(i));
        let b = IpAddr::V6(v6(i));
        assert_eq!(name_of(&a).as_deref(), Some("internal.example"));
        assert_eq!(name_of(&b).as_deref(), Some("internal.example"));
        let mapped = IpAddr::V6(v4(i).to_ipv6_mapped());
        assert_eq!(name_of(&mapped).as_deref(), Some("internal.example"));
        assert!(!is_placeholder(&"203.0.113.1".parse().unwrap()));
        assert!(!is_placeholder(&"2001:db8::1".parse().unwrap()));
        assert!(name_of(&"240.255.0.0".parse().unwrap()).is_none());
    }
}
