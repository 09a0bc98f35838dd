//! Placeholder addresses for names the proxy resolves (remote DNS).
//!
//! A name gets an index `i` (1..=CAPACITY); its placeholders are `base + i` in the IPv4 block
//! (240.0.0.0/4 by default, `remote_dns_subnet` moves it; reserved and never routed) and
//! `100:: + i` (IPv6, the discard-only prefix 100::/64, RFC 6666). A connect to a placeholder
//! sends the name to the proxy; a placeholder that reaches the network by any other path goes
//! nowhere.
//!
//! One table for the whole process tree of one `proxify run`: the CLI creates a memfd and hands
//! it down (`PROXIFY_DNS_FD=N:TOKEN`, inherited across fork and exec), so a name resolved by
//! one process can be connected by another it handed the address to (`addr=$(getent ...);
//! curl http://$addr/`). Without it (LD_PRELOAD set by hand) the table is an anonymous shared
//! mapping: shared with forked children, not across exec.
//!
//! The table is lock-free, so it needs no fork handler and a process killed in the middle of
//! an insert cannot block the others: a slot is written and published (its length stored last)
//! before its index enters the open-addressing hash, and a racing insert of the same name
//! simply loses the compare-and-swap and uses the winner's index.
//!
//! Memory is bounded: at most `CAPACITY` names (65,536), 260 bytes of slot each plus the hash:
//! a 17.5 MiB mapping, of which only the pages touched are ever backed (a few KiB for a few
//! names). When full, a new name fails to resolve (EAI_AGAIN) rather than reuse an address
//! another process may still hold.

use proxify_core::cidr::Cidr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

pub const CAPACITY: u32 = 1 << 16;
const HASH_SLOTS: usize = (CAPACITY as usize) * 2;
const MAGIC: u64 = 0x7072_6f78_6966_7931; // "proxify1"
const V6_BASE: u128 = 0x0100_0000_0000_0000_0000_0000_0000_0000; // 100::

use proxify_core::config::{dns_table_name, DNS_TABLE_BYTES, ENV_DNS_FD};

/// The IPv4 placeholder block (default 240.0.0.0/4; `remote_dns_subnet` can move it).
static V4_BASE: AtomicU32 = AtomicU32::new(0xF000_0000);
static V4_MASK: AtomicU32 = AtomicU32::new(0xF000_0000);

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Indices handed out so far.
    next: AtomicU32,
    _pad: u32,
}

#[repr(C)]
struct Slot {
    /// Name length; 0 while the slot is being written.
    len: AtomicU32,
    bytes: [u8; 256],
}

#[repr(C)]
struct Table {
    header: Header,
    slots: [Slot; CAPACITY as usize],
    /// Open addressing: index + 0 (empty) or the index of a published slot.
    hash: [AtomicU32; HASH_SLOTS],
}

pub const TABLE_BYTES: usize = std::mem::size_of::<Table>();
const _: () = assert!(TABLE_BYTES == DNS_TABLE_BYTES);

static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

/// Maps the tree-wide table handed down by the CLI, else an anonymous shared one. Called once
/// by the runtime (before any thread); a look-up before that maps an anonymous table.
pub fn init() {
    if !TABLE.load(Ordering::Acquire).is_null() {
        return;
    }
    let t = from_env().or_else(anonymous);
    if let Some(t) = t {
        if TABLE
            .compare_exchange(std::ptr::null_mut(), t, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            unsafe { libc::munmap(t as *mut libc::c_void, TABLE_BYTES) };
        }
    }
}

fn table() -> Option<&'static Table> {
    let mut p = TABLE.load(Ordering::Acquire);
    if p.is_null() {
        init();
        p = TABLE.load(Ordering::Acquire);
    }
    // SAFETY: mapped for the life of the process, never unmapped once published.
    (!p.is_null()).then(|| unsafe { &*p })
}

fn map(fd: libc::c_int) -> Option<*mut Table> {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            TABLE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | if fd < 0 { libc::MAP_ANONYMOUS } else { 0 },
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as *mut Table)
}

fn anonymous() -> Option<*mut Table> {
    let t = map(-1)?;
    unsafe { (*t).header.magic.store(MAGIC, Ordering::Release) };
    Some(t)
}

/// The memfd named in `PROXIFY_DNS_FD`, checked to be ours before anything is written to it:
/// the fd must be a memfd carrying the token in its name, of the table's size.
fn from_env() -> Option<*mut Table> {
    let v = std::env::var(ENV_DNS_FD).ok()?;
    let (fd, token) = v.split_once(':')?;
    let fd: libc::c_int = fd.parse().ok()?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let want = format!("/memfd:{} (deleted)", dns_table_name(token));
    if link.to_str()? != want {
        return None;
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_size as usize != TABLE_BYTES {
        return None;
    }
    let t = map(fd)?;
    let magic = unsafe { &(*t).header.magic };
    if magic.load(Ordering::Acquire) == 0 {
        let _ = magic.compare_exchange(0, MAGIC, Ordering::AcqRel, Ordering::Acquire);
    }
    if magic.load(Ordering::Acquire) != MAGIC {
        unsafe { libc::munmap(t as *mut libc::c_void, TABLE_BYTES) };
        return None;
    }
    // The fd stays open for our children; the program cannot close it by accident.
    crate::state::fdtable::set(
        fd,
        crate::state::fdtable::Entry {
            kind: crate::state::fdtable::Kind::Internal,
            peer: None,
            relay: None,
            ctrl: -1,
        },
    );
    Some(t)
}

/// Moves the IPv4 placeholders into `block` (an IPv4 CIDR of at least /16, checked by the
/// configuration); called once by the runtime before any look-up.
pub fn set_v4_block(block: Cidr) {
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

/// Canonical form of a name: lower case, without one trailing dot.
pub fn normalize(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

fn hash(name: &[u8]) -> usize {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % HASH_SLOTS as u64) as usize
}

/// The published name of slot `i` (1-based), waiting briefly for a slot being written.
fn slot_name(t: &Table, i: u32) -> Option<&[u8]> {
    let s = t.slots.get(i.checked_sub(1)? as usize)?;
    for _ in 0..1000 {
        let len = s.len.load(Ordering::Acquire) as usize;
        if len > 0 {
            return s.bytes.get(..len);
        }
        std::hint::spin_loop();
    }
    None
}

/// The index for `name`, assigning one if needed; None when the table is full (or could not
/// be mapped) or the name cannot be a DNS name (empty, over 255 bytes).
pub fn index_for(name: &str) -> Option<u32> {
    let name = normalize(name);
    let key = name.as_bytes();
    if key.is_empty() || key.len() > 255 {
        return None;
    }
    let t = table()?;
    let mut p = hash(key);
    let mut mine: Option<u32> = None;
    for _ in 0..HASH_SLOTS {
        let v = t.hash[p].load(Ordering::Acquire);
        if v == 0 {
            let i = match mine {
                Some(i) => i,
                None => {
                    let i = t.header.next.fetch_add(1, Ordering::AcqRel) + 1;
                    if i > CAPACITY {
                        log::warn!(
                            "remote-DNS placeholder table full ({CAPACITY} names): cannot resolve {name}"
                        );
                        return None;
                    }
                    let s = &t.slots[i as usize - 1];
                    // SAFETY: slot `i` is ours alone until its length is published.
                    unsafe {
                        let dst = s.bytes.as_ptr() as *mut u8;
                        std::ptr::copy_nonoverlapping(key.as_ptr(), dst, key.len());
                    }
                    s.len.store(key.len() as u32, Ordering::Release);
                    mine = Some(i);
                    i
                }
            };
            match t.hash[p].compare_exchange(0, i, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(i),
                Err(other) => {
                    if slot_name(t, other) == Some(key) {
                        return Some(other);
                    }
                }
            }
        } else if slot_name(t, v) == Some(key) {
            return Some(v);
        }
        p = (p + 1) % HASH_SLOTS;
    }
    None
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
    let t = table()?;
    let n = slot_name(t, i)?;
    std::str::from_utf8(n).ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip() {
        let i = index_for("Internal.Example.").unwrap();
        assert_eq!(index_for("internal.example"), Some(i));
        let j = index_for("other.example").unwrap();
        assert_ne!(i, j);
        let a = IpAddr::V4(v4(i));
        let b = IpAddr::V6(v6(i));
        assert_eq!(name_of(&a).as_deref(), Some("internal.example"));
        assert_eq!(name_of(&b).as_deref(), Some("internal.example"));
        let mapped = IpAddr::V6(v4(i).to_ipv6_mapped());
        assert_eq!(name_of(&mapped).as_deref(), Some("internal.example"));
        assert!(!is_placeholder(&"203.0.113.1".parse().unwrap()));
        assert!(!is_placeholder(&"2001:db8::1".parse().unwrap()));
        assert!(name_of(&"240.255.0.0".parse().unwrap()).is_none());
        assert!(index_for("").is_none());
        assert!(index_for(&"a".repeat(256)).is_none());
    }

    #[test]
    fn shared_with_a_forked_child() {
        let i = index_for("before-fork.example").unwrap();
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child sees the parent's names and adds one the parent will see.
            let ok = name_of(&IpAddr::V4(v4(i))).as_deref() == Some("before-fork.example")
                && index_for("from-child.example").is_some();
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let k = index_for("from-child.example").unwrap();
        assert_eq!(
            name_of(&IpAddr::V4(v4(k))).as_deref(),
            Some("from-child.example")
        );
    }

    #[test]
    fn many_threads_one_index_per_name() {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..200)
                        .map(|n| index_for(&format!("n{n}.threads.example")).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<Vec<u32>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        for v in &all[1..] {
            assert_eq!(v, &all[0]);
        }
    }
}
