//! Remote-DNS placeholders: the address arithmetic of a placeholder block and the lock-free
//! name table shared by every process of one `proxify run`.
//!
//! A name gets an index `i` (1..=[`Block::capacity`]); its placeholders are the `i`-th usable
//! address of the IPv4 block ([`Block::addr`]: 240.0.0.0/4 by default, `remote_dns_subnet`
//! moves it) and `100:: + i` ([`v6`], the discard-only prefix 100::/64, RFC 6666).
//!
//! The block is honoured exactly: a name never gets the block's network or broadcast address
//! nor one outside the block, and the block's size bounds how many names can be handed out
//! (at most [`CAPACITY`], the table's size). A block that covers 127.0.0.0/16 (proxychains'
//! `remote_dns_subnet 127`) skips that /16, which local services use (127.0.0.1, 127.0.0.53,
//! the 127.0.1.1 of Debian's /etc/hosts): those addresses stay loopback.
//!
//! The table lives in memory the caller maps ([`Table::at`]): a memfd shared by the process
//! tree or an anonymous shared mapping. It is lock-free, so it needs no fork handler, a
//! process killed in the middle of an insert cannot block the others, and a signal handler
//! may use it: a slot is written and published (its length stored last) before its index
//! enters the open-addressing hash, and a racing insert of the same name simply loses the
//! compare-and-swap and uses the winner's index. Nothing here allocates, locks or panics.
//!
//! Size: ~620 lines, ~255 of them unit tests (12, one with many threads): the block arithmetic
//! and the lock-free table are one job (a name's index is both its table slot and its address).

use crate::cidr::Cidr;
use std::cell::UnsafeCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most names one table holds.
pub const CAPACITY: u32 = 1 << 16;
const HASH_SLOTS: usize = (CAPACITY as usize) * 2;
/// Longest name (after [`normalize`]).
pub const MAX_NAME: usize = 255;
const MAGIC: u64 = 0x7072_6f78_6966_7931; // "proxify1"
const V6_BASE: u128 = 0x0100_0000_0000_0000_0000_0000_0000_0000; // 100::

/// Loopback addresses a block never takes: 127.0.0.0/16.
const LOOP_LO: u32 = 0x7F00_0000;
const LOOP_SIZE: u32 = 1 << 16;

/// An IPv4 placeholder block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    base: u32,
    prefix: u8,
}

impl Default for Block {
    fn default() -> Self {
        Block {
            base: 0xF000_0000,
            prefix: 4,
        }
    }
}

impl Block {
    /// The block `cidr` (IPv4, /1 to /30, not inside 127.0.0.0/16), or why not.
    pub fn new(cidr: &Cidr) -> Result<Block, String> {
        let IpAddr::V4(a) = cidr.addr else {
            return Err(format!("remote DNS subnet {cidr} is not an IPv4 block"));
        };
        if !(1..=30).contains(&cidr.prefix) {
            return Err(format!(
                "remote DNS subnet {cidr} must be an IPv4 block from /1 to /30"
            ));
        }
        let b = Block {
            base: u32::from(a) & Self::mask_of(cidr.prefix),
            prefix: cidr.prefix,
        };
        if b.capacity() == 0 {
            return Err(format!(
                "remote DNS subnet {cidr} lies in 127.0.0.0/16, which local services use"
            ));
        }
        Ok(b)
    }

    fn mask_of(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The block as a CIDR.
    pub fn cidr(&self) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(self.base)),
            prefix: self.prefix,
        }
    }

    /// Addresses in the block (2^(32 - prefix)), as u64 (a /0 is not a block, but a /1 is 2^31).
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    fn last(&self) -> u32 {
        (u64::from(self.base) + self.size() - 1) as u32
    }

    /// Does the block cover 127.0.0.0/16 (then skipped), or lie inside it (then unusable)?
    fn loop_hole(&self) -> (bool, bool) {
        let covers = u64::from(self.base) <= u64::from(LOOP_LO)
            && u64::from(LOOP_LO) + u64::from(LOOP_SIZE) - 1 <= u64::from(self.last());
        let inside = self.base & !(LOOP_SIZE - 1) == LOOP_LO && self.prefix >= 16;
        (covers, inside)
    }

    /// How many names the block holds: its addresses but the network and broadcast (and the
    /// loopback /16 it skips), at most [`CAPACITY`].
    pub fn capacity(&self) -> u32 {
        let (covers, inside) = self.loop_hole();
        if inside {
            return 0;
        }
        let mut n = self.size() - 2;
        if covers {
            n -= u64::from(LOOP_SIZE);
        }
        n.min(u64::from(CAPACITY)) as u32
    }

    /// The placeholder of index `i` (1..=capacity), else None.
    pub fn addr(&self, i: u32) -> Option<Ipv4Addr> {
        if i == 0 || i > self.capacity() {
            return None;
        }
        let mut x = u64::from(self.base) + u64::from(i);
        if self.loop_hole().0 && x >= u64::from(LOOP_LO) {
            x += u64::from(LOOP_SIZE);
        }
        // Within the block and below its broadcast: capacity <= size - 2 (minus the hole).
        Some(Ipv4Addr::from(x as u32))
    }

    /// Is `a` in the block's placeholder space (whether or not a name is behind it)? Every
    /// address of the block is, but the loopback /16 it skips.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let x = u32::from(a);
        x & Self::mask_of(self.prefix) == self.base
            && !(self.loop_hole().0 && x & !(LOOP_SIZE - 1) == LOOP_LO)
    }

    /// The index `a` stands for (1..=capacity), if it is a placeholder that can have a name.
    pub fn index_of(&self, a: Ipv4Addr) -> Option<u32> {
        if !self.contains(a) {
            return None;
        }
        let x = u32::from(a);
        let mut off = u64::from(x - self.base);
        if self.loop_hole().0 && x > LOOP_LO {
            off -= u64::from(LOOP_SIZE);
        }
        let i = u32::try_from(off).ok()?;
        (i >= 1 && i <= self.capacity() && self.addr(i) == Some(a)).then_some(i)
    }

    /// Does the block share an address with `c` (a placeholder address the rules would send
    /// elsewhere)? IPv6 blocks overlap when they cover the IPv4-mapped block.
    pub fn overlaps(&self, c: &Cidr) -> bool {
        let (net, prefix) = match c.addr {
            IpAddr::V4(a) => (u32::from(a), c.prefix),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) if c.prefix >= 96 => (u32::from(m), c.prefix - 96),
                _ => return c.prefix <= 96 && c.contains(&IpAddr::V4(Ipv4Addr::from(self.base))),
            },
        };
        let p = prefix.min(self.prefix);
        let m = Self::mask_of(p);
        if net & m != self.base & m {
            return false;
        }
        // The only addresses of the block that are not placeholders: the loopback /16 it skips.
        if self.loop_hole().0 && prefix >= 16 && net & !(LOOP_SIZE - 1) == LOOP_LO {
            return false;
        }
        true
    }
}

/// The IPv6 placeholder of index `i`.
pub fn v6(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(V6_BASE + u128::from(i))
}

/// Is `a` in the IPv6 placeholder prefix 100::/64? Then its index (0, never a name, for
/// anything past u32).
pub fn v6_index(a: Ipv6Addr) -> Option<u32> {
    let x = u128::from(a);
    (x >> 64 == V6_BASE >> 64).then_some(u32::try_from(x & 0xFFFF_FFFF_FFFF_FFFF).unwrap_or(0))
}

/// Canonical form of a name into `out`: lower case, without one trailing dot. None for a name
/// that cannot be a DNS name (empty, over 255 bytes).
pub fn normalize<'a>(name: &[u8], out: &'a mut [u8; MAX_NAME]) -> Option<&'a [u8]> {
    let n = name.strip_suffix(b".").unwrap_or(name);
    if n.is_empty() || n.len() > MAX_NAME {
        return None;
    }
    for (o, b) in out.iter_mut().zip(n) {
        *o = b.to_ascii_lowercase();
    }
    Some(&out[..n.len()])
}

/// Why a name got no index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a DNS name (empty, over 255 bytes).
    Invalid,
    /// Every index the block allows is taken.
    Full,
}

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Indices handed out so far.
    next: AtomicU32,
    /// Set by the first look-up that found the table full (one warning per process tree).
    full_seen: AtomicU32,
}

#[repr(C)]
struct Slot {
    /// Name length; 0 while the slot is being written.
    len: AtomicU32,
    bytes: UnsafeCell<[u8; 256]>,
}

/// The shared table. Only ever used through a reference from [`Table::at`].
#[repr(C)]
pub struct Table {
    header: Header,
    slots: [Slot; CAPACITY as usize],
    /// Open addressing: 0 (empty) or the index of a published slot.
    hash: [AtomicU32; HASH_SLOTS],
}

/// Bytes of memory a table takes.
pub const TABLE_BYTES: usize = std::mem::size_of::<Table>();
/// Alignment the memory of a table needs.
pub const TABLE_ALIGN: usize = std::mem::align_of::<Table>();

// SAFETY: every field is atomic but the slot bytes, which are written only by the one
// inserter that won the slot (the `next` counter), before its length is published with
// Release, and read only after that length is seen with Acquire.
unsafe impl Sync for Table {}

fn hash(name: &[u8]) -> usize {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % HASH_SLOTS as u64) as usize
}

impl Table {
    /// The table in the memory at `p` (`len` bytes), stamping a zeroed region as a new table.
    /// None when the region has the wrong size or alignment, or holds something else.
    ///
    /// # Safety
    /// `p` must point to `len` bytes readable and writable for `'a`, zeroed or holding a table,
    /// changed by nothing but this module's code (in this or other processes).
    pub unsafe fn at<'a>(p: *mut u8, len: usize) -> Option<&'a Table> {
        if p.is_null() || len != TABLE_BYTES || !(p as usize).is_multiple_of(TABLE_ALIGN) {
            return None;
        }
        // SAFETY: size and alignment checked; the caller vouches for the memory. Every bit
        // pattern is valid for atomics and bytes.
        let t = unsafe { &*(p as *const Table) };
        let m = &t.header.magic;
        if m.load(Ordering::Acquire) == 0 {
            let _ = m.compare_exchange(0, MAGIC, Ordering::AcqRel, Ordering::Acquire);
        }
        (m.load(Ordering::Acquire) == MAGIC).then_some(t)
    }

    /// The published name of slot `i` (1-based), waiting briefly for a slot being written.
    pub fn name(&self, i: u32) -> Option<&[u8]> {
        let s = self.slots.get(i.checked_sub(1)? as usize)?;
        for _ in 0..1000 {
            let len = s.len.load(Ordering::Acquire) as usize;
            if len > 0 {
                // SAFETY: published (Acquire above pairs with the writer's Release); never
                // written again.
                return unsafe { (*s.bytes.get()).get(..len) };
            }
            std::hint::spin_loop();
        }
        None
    }

    /// Takes the next free index if it is within `limit` (never past it, however many
    /// look-ups fail: the counter does not wrap).
    fn take(&self, limit: u32) -> Option<u32> {
        let limit = limit.min(CAPACITY);
        let mut cur = self.header.next.load(Ordering::Acquire);
        loop {
            if cur >= limit {
                return None;
            }
            match self.header.next.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(cur + 1),
                Err(now) => cur = now,
            }
        }
    }

    /// The index for `name` (already [`normalize`]d), assigning one (at most `limit`, the
    /// block's capacity) if needed.
    pub fn index_for(&self, name: &[u8], limit: u32) -> Result<u32, Refused> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Refused::Invalid);
        }
        let mut p = hash(name);
        let mut mine: Option<u32> = None;
        for _ in 0..HASH_SLOTS {
            let v = self.hash[p].load(Ordering::Acquire);
            if v == 0 {
                let i = match mine {
                    Some(i) => i,
                    None => {
                        let i = self.take(limit).ok_or(Refused::Full)?;
                        let s = &self.slots[i as usize - 1];
                        // SAFETY: slot `i` is ours alone until its length is published.
                        unsafe {
                            let dst = s.bytes.get() as *mut u8;
                            std::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len());
                        }
                        s.len.store(name.len() as u32, Ordering::Release);
                        mine = Some(i);
                        i
                    }
                };
                match self.hash[p].compare_exchange(0, i, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(i),
                    Err(other) => {
                        if self.name(other) == Some(name) {
                            // Our slot stays written but unhashed: one index lost to the race.
                            return Ok(other);
                        }
                    }
                }
            } else if self.name(v) == Some(name) {
                return Ok(v);
            }
            p = (p + 1) % HASH_SLOTS;
        }
        Err(Refused::Full)
    }

    /// True once per table: for the first caller that reports the table full.
    pub fn first_full(&self) -> bool {
        self.header.full_seen.swap(1, Ordering::AcqRel) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    struct Mem(*mut u8);
    impl Mem {
        fn new() -> Mem {
            let l = Layout::from_size_align(TABLE_BYTES, TABLE_ALIGN).unwrap();
            // SAFETY: non-zero size.
            Mem(unsafe { alloc_zeroed(l) })
        }
        fn table(&self) -> &Table {
            // SAFETY: our zeroed allocation of the right size and alignment.
            unsafe { Table::at(self.0, TABLE_BYTES) }.unwrap()
        }
    }
    impl Drop for Mem {
        fn drop(&mut self) {
            let l = Layout::from_size_align(TABLE_BYTES, TABLE_ALIGN).unwrap();
            // SAFETY: allocated with this layout.
            unsafe { dealloc(self.0, l) };
        }
    }

    fn block(s: &str) -> Block {
        Block::new(&s.parse().unwrap()).unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_block() {
        let b = Block::default();
        assert_eq!(b, block("240.0.0.0/4"));
        assert_eq!(b.capacity(), CAPACITY);
        assert_eq!(b.addr(1), Some(ip("240.0.0.1")));
        assert_eq!(b.addr(CAPACITY), Some(ip("240.1.0.0")));
        assert_eq!(b.addr(CAPACITY + 1), None);
        assert_eq!(b.addr(0), None);
        assert_eq!(b.index_of(ip("240.1.0.0")), Some(CAPACITY));
        assert!(b.contains(ip("255.255.255.255")));
        assert_eq!(b.index_of(ip("255.255.255.255")), None);
        assert_eq!(b.index_of(ip("240.0.0.0")), None);
        assert!(!b.contains(ip("239.255.255.255")));
    }

    #[test]
    fn every_prefix_from_16_to_24_is_honoured() {
        for prefix in 16..=24u8 {
            let b = block(&format!("10.20.0.0/{prefix}"));
            let size = 1u32 << (32 - prefix);
            assert_eq!(b.capacity(), size - 2, "/{prefix}");
            let net = u32::from(ip("10.20.0.0"));
            assert_eq!(b.addr(1), Some(Ipv4Addr::from(net + 1)));
            let last = b.addr(b.capacity()).unwrap();
            assert_eq!(u32::from(last), net + size - 2, "/{prefix}: the last name");
            assert_eq!(b.addr(b.capacity() + 1), None, "/{prefix}: past the block");
            for i in [1, b.capacity() / 2, b.capacity()] {
                let a = b.addr(i).unwrap();
                assert!(b.cidr().contains(&IpAddr::V4(a)), "/{prefix}: {a}");
                assert_eq!(b.index_of(a), Some(i));
            }
            // Network, broadcast and the first address past the block.
            assert_eq!(b.index_of(Ipv4Addr::from(net)), None);
            assert_eq!(b.index_of(Ipv4Addr::from(net + size - 1)), None);
            assert!(b.contains(Ipv4Addr::from(net + size - 1)));
            assert!(!b.contains(Ipv4Addr::from(net + size)));
        }
    }

    #[test]
    fn a_16_s_last_name_stays_inside() {
        let b = block("198.18.0.0/16");
        assert_eq!(b.capacity(), 65534);
        assert_eq!(b.addr(65534), Some(ip("198.18.255.254")));
        assert_eq!(b.addr(65535), None);
        assert_eq!(b.addr(65536), None);
    }

    #[test]
    fn top_of_the_address_space_does_not_wrap() {
        let b = block("255.255.0.0/16");
        assert_eq!(b.addr(1), Some(ip("255.255.0.1")));
        assert_eq!(b.addr(b.capacity()), Some(ip("255.255.255.254")));
        assert_eq!(b.addr(b.capacity() + 1), None);
        assert_eq!(b.index_of(ip("255.255.255.255")), None);
        assert_eq!(b.index_of(ip("0.0.0.0")), None);
        assert!(!b.contains(ip("0.0.0.0")));
        let b = block("255.255.255.0/24");
        assert_eq!(b.addr(254), Some(ip("255.255.255.254")));
        assert_eq!(b.addr(255), None);
    }

    #[test]
    fn loopback_16_is_skipped() {
        let b = block("127.0.0.0/8");
        assert_eq!(b.capacity(), CAPACITY);
        assert_eq!(b.addr(1), Some(ip("127.1.0.1")));
        assert_eq!(b.addr(CAPACITY), Some(ip("127.2.0.0")));
        for a in ["127.0.0.1", "127.0.0.53", "127.0.1.1", "127.0.255.255"] {
            assert!(!b.contains(ip(a)), "{a}");
            assert_eq!(b.index_of(ip(a)), None);
        }
        assert_eq!(b.index_of(ip("127.1.0.1")), Some(1));
        assert_eq!(b.index_of(ip("127.1.0.2")), Some(2));
        assert_eq!(b.index_of(ip("127.2.0.0")), Some(CAPACITY));
        assert!(b.contains(ip("127.1.0.0")));
        assert_eq!(b.index_of(ip("127.1.0.0")), None);
        assert!(b.contains(ip("127.2.0.1")));
        assert_eq!(b.index_of(ip("127.2.0.1")), None);
        assert!(Block::new(&"127.0.0.0/24".parse().unwrap()).is_err());
        assert!(Block::new(&"127.0.0.0/16".parse().unwrap()).is_err());
        assert!(Block::new(&"127.5.0.0/16".parse().unwrap()).is_ok());
        // A /4 holding 127/8 never reaches the hole within its capacity.
        let b = block("112.0.0.0/4");
        assert_eq!(b.addr(CAPACITY), Some(ip("112.1.0.0")));
        assert!(!b.contains(ip("127.0.0.1")));
    }

    #[test]
    fn overlap() {
        let b = block("10.0.0.0/8");
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        assert!(b.overlaps(&c("10.1.0.0/16")));
        assert!(b.overlaps(&c("0.0.0.0/0")));
        assert!(b.overlaps(&c("10.9.9.9")));
        assert!(!b.overlaps(&c("11.0.0.0/8")));
        assert!(!b.overlaps(&c("192.168.0.0/16")));
        assert!(b.overlaps(&c("::ffff:10.0.0.0/104")));
        assert!(b.overlaps(&c("::/0")));
        assert!(!b.overlaps(&c("2001:db8::/32")));
        let l = block("127.0.0.0/8");
        assert!(!l.overlaps(&c("127.0.0.1")));
        assert!(!l.overlaps(&c("127.0.0.0/16")));
        assert!(l.overlaps(&c("127.0.0.0/8")));
        assert!(l.overlaps(&c("127.1.0.0/16")));
    }

    #[test]
    fn rejected_blocks() {
        for s in ["2001:db8::/64", "0.0.0.0/0", "10.0.0.0/31", "10.0.0.0/32"] {
            assert!(Block::new(&s.parse().unwrap()).is_err(), "{s}");
        }
        assert_eq!(block("10.0.0.0/30").capacity(), 2);
    }

    #[test]
    fn table_round_trip() {
        let m = Mem::new();
        let t = m.table();
        let mut buf = [0u8; MAX_NAME];
        let n = normalize(b"Internal.Example.", &mut buf).unwrap().to_vec();
        assert_eq!(n, b"internal.example");
        let i = t.index_for(&n, CAPACITY).unwrap();
        assert_eq!(t.index_for(b"internal.example", CAPACITY), Ok(i));
        let j = t.index_for(b"other.example", CAPACITY).unwrap();
        assert_ne!(i, j);
        assert_eq!(t.name(i), Some(&b"internal.example"[..]));
        assert_eq!(t.name(0), None);
        assert_eq!(t.name(CAPACITY + 1), None);
        assert_eq!(t.index_for(b"", CAPACITY), Err(Refused::Invalid));
        assert!(normalize(b"", &mut buf).is_none());
        assert!(normalize(&[b'a'; 256], &mut buf).is_none());
        assert!(normalize(&[b'a'; 255], &mut buf).is_some());
        // A second view of the same memory sees the same table.
        // SAFETY: the same allocation.
        let t2 = unsafe { Table::at(m.0, TABLE_BYTES) }.unwrap();
        assert_eq!(t2.index_for(b"other.example", CAPACITY), Ok(j));
        // Wrong size, alignment or contents.
        // SAFETY: rejected before any access.
        assert!(unsafe { Table::at(m.0, TABLE_BYTES - 1) }.is_none());
        // SAFETY: rejected (misaligned) before any access.
        assert!(unsafe { Table::at(m.0.wrapping_add(4), TABLE_BYTES) }.is_none());
    }

    #[test]
    fn full_table_fails_without_wrapping() {
        let m = Mem::new();
        let t = m.table();
        let b = block("192.0.2.0/24");
        let cap = b.capacity();
        assert_eq!(cap, 254);
        for k in 0..cap {
            let i = t
                .index_for(format!("n{k}.example").as_bytes(), cap)
                .unwrap();
            assert_eq!(i, k + 1);
            assert!(b.addr(i).is_some());
        }
        // Full: old names still answer, new ones fail, however often they are tried.
        assert_eq!(t.index_for(b"n0.example", cap), Ok(1));
        for _ in 0..1000 {
            assert_eq!(t.index_for(b"new.example", cap), Err(Refused::Full));
        }
        assert!(t.first_full());
        assert!(!t.first_full());
        assert_eq!(t.index_for(b"n253.example", cap), Ok(254));
    }

    #[test]
    fn a_full_16() {
        let m = Mem::new();
        let t = m.table();
        let b = block("198.18.0.0/16");
        let mut last = None;
        for k in 0..b.capacity() {
            last = Some(
                t.index_for(format!("h{k}").as_bytes(), b.capacity())
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert_eq!(b.addr(last), Some(ip("198.18.255.254")));
        assert_eq!(
            t.index_for(b"one-too-many", b.capacity()),
            Err(Refused::Full)
        );
        // The whole table (CAPACITY) under a block that allows it.
        let m = Mem::new();
        let t = m.table();
        for k in 0..CAPACITY {
            t.index_for(format!("h{k}").as_bytes(), CAPACITY).unwrap();
        }
        assert_eq!(t.index_for(b"one-too-many", CAPACITY), Err(Refused::Full));
        assert_eq!(t.index_for(b"h65535", CAPACITY), Ok(CAPACITY));
    }

    #[test]
    fn many_threads_one_index_per_name() {
        let m = Mem::new();
        let t = m.table();
        let all: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..200)
                            .map(|n| t.index_for(format!("n{n}.t").as_bytes(), CAPACITY).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for v in &all[1..] {
            assert_eq!(v, &all[0]);
        }
    }

    #[test]
    fn v6_placeholders() {
        assert_eq!(v6(1), "100::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6_index("100::1".parse().unwrap()), Some(1));
        assert_eq!(v6_index("100::1:0:0:0".parse().unwrap()), Some(0));
        assert_eq!(v6_index("2001:db8::1".parse().unwrap()), None);
    }
}
