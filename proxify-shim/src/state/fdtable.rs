//! Per-fd state, in one table that `close`, `dup*`, `fcntl(F_DUPFD*)` and `close_range` keep
//! true.
//!
//! The table is lock-free: a fixed array of lazily allocated chunks of slots, each slot made
//! of atomics. `TRACKED` counts the fds in use, so every hook can tell in one relaxed load that
//! nothing is tracked and go straight to libc. Clearing a slot (the `close` path) takes no lock
//! and allocates nothing; only [`set`] may allocate a chunk, on the proxied path.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

const CHUNK: usize = 1024;
const MAX_CHUNKS: usize = 1024;
/// fds at or above this are never tracked (connects on them are refused, never sent direct).
pub const MAX_FD: usize = CHUNK * MAX_CHUNKS;

/// What we know about an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP socket connected through the proxy; `peer` is what the program asked for.
    ProxiedTcp = 1,
    /// A UDP socket with a SOCKS5 association: `relay` is the proxy's relay (in the socket's
    /// family), `ctrl` our TCP control connection, `peer` the destination the program
    /// connected the socket to (the kernel socket is then connected to the relay).
    UdpAssoc = 2,
    /// A listening socket turned into a SOCKS BIND: `relay` holds BND.ADDR:BND.PORT of the
    /// first reply (what getsockname reports); the second reply arrives on the socket itself.
    BindListen = 3,
    /// A TCP socket bound to port 0 by the program (a candidate for BIND under `auto`).
    BoundEphemeral = 4,
    /// One of proxify's own fds (a UDP control connection); `ctrl` holds the fd that owns it.
    /// The program cannot close it (`close` pretends, `close_range` skips it, `dup2` over it
    /// moves it first): a daemon closing every fd must not break its own association.
    Internal = 5,
    /// A non-blocking TCP connect through the proxy whose handshake is still running
    /// (`nbconnect.rs`); `peer` is what the program asked for.
    Handshaking = 6,
    /// A non-blocking proxied connect that failed: the socket is disconnected and the errno
    /// waits (in the `relay` words) for `SO_ERROR` or the next I/O call to report it once.
    HandshakeFailed = 7,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub peer: Option<SocketAddr>,
    pub relay: Option<SocketAddr>,
    /// Our own fd (the UDP control connection), closed with the entry; -1 if none.
    /// (`relay`, for a proxied TCP socket, is BND.ADDR:BND.PORT of the proxy's reply.)
    pub ctrl: i32,
}

impl Entry {
    pub fn tcp(peer: SocketAddr) -> Entry {
        Entry {
            kind: Kind::ProxiedTcp,
            peer: Some(peer),
            relay: None,
            ctrl: -1,
        }
    }
}

struct Slot {
    kind: AtomicU8,
    /// Control fd + 1 (0: none), so that an all-zero chunk is empty.
    ctrl: AtomicI32,
    peer: [AtomicU64; 4],
    relay: [AtomicU64; 4],
    /// The family the program created the socket in, when proxify replaced the socket by one
    /// of the proxy's family (0: the kernel's family is the program's). Kept across kind
    /// changes; cleared with the slot.
    family: AtomicU8,
}

type Chunk = [Slot; CHUNK];

#[allow(clippy::declare_interior_mutable_const)]
const NO_CHUNK: AtomicPtr<Chunk> = AtomicPtr::new(std::ptr::null_mut());
static CHUNKS: [AtomicPtr<Chunk>; MAX_CHUNKS] = [NO_CHUNK; MAX_CHUNKS];
static TRACKED: AtomicUsize = AtomicUsize::new(0);
/// How many slots are `Handshaking` or `HandshakeFailed`: 0 lets the poll/select/epoll, I/O
/// and `getsockopt` hooks go straight to libc.
static HANDSHAKING: AtomicUsize = AtomicUsize::new(0);

#[inline(always)]
fn is_hs(kind: u8) -> bool {
    kind == Kind::Handshaking as u8 || kind == Kind::HandshakeFailed as u8
}

/// Keeps `HANDSHAKING` true across a kind change of one slot.
#[inline]
fn count_hs(old: u8, new: u8) {
    match (is_hs(old), is_hs(new)) {
        (false, true) => {
            HANDSHAKING.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            HANDSHAKING.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// True when no fd is in a non-blocking proxied handshake (or holds its unreported failure).
#[inline(always)]
pub fn none_handshaking() -> bool {
    HANDSHAKING.load(Ordering::Relaxed) == 0
}

/// True when no fd at all is tracked: the fast path of every hook.
#[inline(always)]
pub fn none_tracked() -> bool {
    TRACKED.load(Ordering::Relaxed) == 0
}

#[inline]
fn slot(fd: i32) -> Option<&'static Slot> {
    let fd = usize::try_from(fd).ok()?;
    if fd >= MAX_FD {
        return None;
    }
    let chunk = CHUNKS[fd / CHUNK].load(Ordering::Acquire);
    if chunk.is_null() {
        return None;
    }
    // SAFETY: chunks are never freed once published.
    Some(unsafe { &(*chunk)[fd % CHUNK] })
}

fn slot_alloc(fd: i32) -> Option<&'static Slot> {
    let idx = usize::try_from(fd).ok()?;
    if idx >= MAX_FD {
        return None;
    }
    let cell = &CHUNKS[idx / CHUNK];
    if cell.load(Ordering::Acquire).is_null() {
        // All-zero is a valid, empty chunk (atomics of 0).
        let layout = std::alloc::Layout::new::<Chunk>();
        // SAFETY: Chunk is atomics only, for which all-zero bytes are a valid value; layout is non-zero-sized.
        let fresh = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Chunk;
        if fresh.is_null() {
            return None;
        }
        if cell
            .compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `fresh` came from alloc_zeroed with this layout and was never published.
            unsafe { std::alloc::dealloc(fresh as *mut u8, layout) };
        }
    }
    slot(fd)
}

fn encode(addr: Option<&SocketAddr>) -> [u64; 4] {
    let mut b = [0u8; 32];
    match addr {
        None => {}
        Some(SocketAddr::V4(a)) => {
            b[0] = 4;
            b[1..3].copy_from_slice(&a.port().to_be_bytes());
            b[3..7].copy_from_slice(&a.ip().octets());
        }
        Some(SocketAddr::V6(a)) => {
            b[0] = 6;
            b[1..3].copy_from_slice(&a.port().to_be_bytes());
            b[3..19].copy_from_slice(&a.ip().octets());
            b[19..23].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[23..27].copy_from_slice(&a.scope_id().to_be_bytes());
        }
    }
    let mut w = [0u64; 4];
    for (i, c) in b.chunks_exact(8).enumerate() {
        w[i] = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
    }
    w
}

fn decode(w: [u64; 4]) -> Option<SocketAddr> {
    let mut b = [0u8; 32];
    for (i, x) in w.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    let port = u16::from_be_bytes([b[1], b[2]]);
    match b[0] {
        4 => Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(b[3], b[4], b[5], b[6]),
            port,
        ))),
        6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[3..19]);
            let flow = u32::from_be_bytes([b[19], b[20], b[21], b[22]]);
            let scope = u32::from_be_bytes([b[23], b[24], b[25], b[26]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

fn kind_from(k: u8) -> Option<Kind> {
    match k {
        1 => Some(Kind::ProxiedTcp),
        2 => Some(Kind::UdpAssoc),
        3 => Some(Kind::BindListen),
        4 => Some(Kind::BoundEphemeral),
        5 => Some(Kind::Internal),
        6 => Some(Kind::Handshaking),
        7 => Some(Kind::HandshakeFailed),
        _ => None,
    }
}

/// Set by the `fdtable-full` test fault: every new entry fails as an fd beyond the table does.
static REFUSE_NEW: AtomicBool = AtomicBool::new(false);

/// The `fdtable-full` test fault (`PROXIFY_TEST_FAULT`): from now on no new fd can be tracked,
/// so the paths that must fail closed when an fd lies beyond the table can be tested.
pub fn refuse_new_entries() {
    REFUSE_NEW.store(true, Ordering::Relaxed);
}

/// Records `entry` for `fd`. Returns false if the fd is beyond the table or its chunk cannot
/// be allocated: a caller that would leave a proxied socket untracked must then fail closed.
#[must_use]
pub fn set(fd: i32, entry: Entry) -> bool {
    let Some(s) = slot_alloc(fd) else {
        return false;
    };
    if REFUSE_NEW.load(Ordering::Relaxed) && s.kind.load(Ordering::Acquire) == 0 {
        return false;
    }
    for (cell, v) in s.peer.iter().zip(encode(entry.peer.as_ref())) {
        cell.store(v, Ordering::Relaxed);
    }
    for (cell, v) in s.relay.iter().zip(encode(entry.relay.as_ref())) {
        cell.store(v, Ordering::Relaxed);
    }
    if s.kind.load(Ordering::Acquire) == 0 {
        // A new entry: whatever family a closed predecessor had is not this socket's.
        s.family.store(0, Ordering::Release);
    }
    let old_ctrl = s.ctrl.swap(entry.ctrl.max(-1) + 1, Ordering::Relaxed) - 1;
    let old_kind = s.kind.swap(entry.kind as u8, Ordering::Release);
    if old_kind == 0 {
        TRACKED.fetch_add(1, Ordering::Relaxed);
    }
    count_hs(old_kind, entry.kind as u8);
    if old_kind == Kind::UdpAssoc as u8 && old_ctrl >= 0 && old_ctrl != entry.ctrl {
        close_internal(old_ctrl);
    }
    if entry.kind == Kind::UdpAssoc && entry.ctrl >= 0 {
        // Mark the control fd as ours (its slot names its owner). Unmarked, the program
        // could close it: that only ends the association (datagrams then fail), never a leak.
        let _ = set(
            entry.ctrl,
            Entry {
                kind: Kind::Internal,
                peer: None,
                relay: None,
                ctrl: fd,
            },
        );
    }
    true
}

/// Is `fd` one of proxify's own fds?
#[inline]
pub fn is_internal(fd: i32) -> bool {
    !none_tracked()
        && slot(fd)
            .map(|s| s.kind.load(Ordering::Acquire) == Kind::Internal as u8)
            .unwrap_or(false)
}

/// Moves our internal `fd` to another number (the program is about to reuse its number with
/// dup2/dup3) and tells its owner. Returns false if it could not be moved.
pub fn relocate_internal(fd: i32) -> bool {
    let Some(s) = slot(fd) else {
        return false;
    };
    if s.kind.load(Ordering::Acquire) != Kind::Internal as u8 {
        return true;
    }
    let owner = s.ctrl.load(Ordering::Relaxed) - 1;
    // SAFETY: F_DUPFD_CLOEXEC takes no pointer; the copy is ours.
    let nfd = unsafe { crate::sys::real::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if nfd < 0 {
        return false;
    }
    let marked = set(
        nfd,
        Entry {
            kind: Kind::Internal,
            peer: None,
            relay: None,
            ctrl: owner,
        },
    );
    if !marked {
        // SAFETY: nfd is the copy made just above; nobody else knows its number.
        unsafe { crate::sys::real::close(nfd) };
        return false;
    }
    if let Some(o) = slot(owner) {
        o.ctrl.store(nfd + 1, Ordering::Relaxed);
    }
    // The old number is closed by the caller's dup2; forget it here.
    if s.kind.swap(0, Ordering::AcqRel) != 0 {
        TRACKED.fetch_sub(1, Ordering::Relaxed);
    }
    s.ctrl.store(0, Ordering::Relaxed);
    true
}

/// Updates the connected peer of a tracked fd.
pub fn set_peer(fd: i32, peer: Option<SocketAddr>) {
    if let Some(s) = slot(fd) {
        for (cell, v) in s.peer.iter().zip(encode(peer.as_ref())) {
            cell.store(v, Ordering::Release);
        }
    }
}

fn close_internal(fd: i32) {
    // SAFETY: one of proxify's own fds, closed once by its owner.
    unsafe { crate::sys::real::close(fd) };
}

fn load(cells: &[AtomicU64; 4]) -> Option<SocketAddr> {
    decode([
        cells[0].load(Ordering::Relaxed),
        cells[1].load(Ordering::Relaxed),
        cells[2].load(Ordering::Relaxed),
        cells[3].load(Ordering::Relaxed),
    ])
}

/// The state of `fd`, if tracked.
#[inline]
pub fn get(fd: i32) -> Option<Entry> {
    if none_tracked() {
        return None;
    }
    let s = slot(fd)?;
    let kind = kind_from(s.kind.load(Ordering::Acquire))?;
    Some(Entry {
        kind,
        peer: load(&s.peer),
        relay: load(&s.relay),
        ctrl: s.ctrl.load(Ordering::Relaxed) - 1,
    })
}

/// Forgets `fd` and closes our control connection that belonged to it. Lock-free,
/// allocation-free: safe on the `close` path.
#[inline]
pub fn clear(fd: i32) {
    if none_tracked() {
        return;
    }
    if let Some(c) = take(fd) {
        close_internal(c);
    }
}

/// Records that `fd`'s socket was replaced by one of another family: the program created it
/// as `family`, and getsockname, getpeername and SO_DOMAIN keep answering in that family.
/// Only for a tracked fd (set after its entry; a new entry starts with none).
pub fn set_program_family(fd: i32, family: i32) {
    if let Some(s) = slot(fd) {
        s.family
            .store(u8::try_from(family).unwrap_or(0), Ordering::Release);
    }
}

/// The family the program created `fd` in, if proxify replaced its socket by one of another
/// family (None otherwise: the kernel's answer is the program's).
#[inline]
pub fn program_family(fd: i32) -> Option<i32> {
    if none_tracked() {
        return None;
    }
    let s = slot(fd)?;
    if s.kind.load(Ordering::Acquire) == 0 {
        return None;
    }
    match s.family.load(Ordering::Acquire) {
        0 => None,
        f => Some(f as i32),
    }
}

/// Forgets `fd`; returns its control fd (for the caller to close) if it had one.
fn take(fd: i32) -> Option<i32> {
    let s = slot(fd)?;
    s.family.store(0, Ordering::Release);
    let old = s.kind.swap(0, Ordering::AcqRel);
    if old == 0 {
        return None;
    }
    TRACKED.fetch_sub(1, Ordering::Relaxed);
    count_hs(old, 0);
    let c = s.ctrl.swap(0, Ordering::Relaxed) - 1;
    if old != Kind::UdpAssoc as u8 || c < 0 {
        return None;
    }
    // The control fd's own slot goes too.
    if let Some(cs) = slot(c) {
        if cs.kind.load(Ordering::Acquire) == Kind::Internal as u8
            && cs.ctrl.load(Ordering::Relaxed) - 1 == fd
            && cs.kind.swap(0, Ordering::AcqRel) != 0
        {
            TRACKED.fetch_sub(1, Ordering::Relaxed);
            cs.ctrl.store(0, Ordering::Relaxed);
        }
    }
    Some(c)
}

/// Forgets every fd in `first..=last` that the kernel just closed. Our own fds in the range
/// were skipped by the caller unless `ours_closed_too` (closefrom fallback): then their
/// numbers may already be reused and must not be closed again.
pub fn clear_range(first: u32, last: u32, ours_closed_too: bool) {
    if none_tracked() {
        return;
    }
    let last = (last as usize).min(MAX_FD - 1);
    let mut fd = first as usize;
    while fd <= last {
        let chunk = CHUNKS[fd / CHUNK].load(Ordering::Acquire);
        if chunk.is_null() {
            fd = (fd / CHUNK + 1) * CHUNK;
            continue;
        }
        if !ours_closed_too && is_internal(fd as i32) {
            fd += 1;
            continue;
        }
        if let Some(c) = take(fd as i32) {
            let inside = (c as usize) >= first as usize && (c as usize) <= last;
            if !(ours_closed_too && inside) {
                close_internal(c);
            }
        }
        fd += 1;
    }
}

/// The first tracked fd (and its state) for which `pred` holds, scanning the allocated chunks.
/// For rare paths only (it visits every slot of every chunk in use).
pub fn find(pred: impl Fn(i32, &Entry) -> bool) -> Option<(i32, Entry)> {
    if none_tracked() {
        return None;
    }
    for (ci, cell) in CHUNKS.iter().enumerate() {
        if cell.load(Ordering::Acquire).is_null() {
            continue;
        }
        for k in 0..CHUNK {
            let fd = (ci * CHUNK + k) as i32;
            if let Some(e) = get(fd) {
                if pred(fd, &e) {
                    return Some((fd, e));
                }
            }
        }
    }
    None
}

/// Calls `f` with every tracked fd of kind `kind`, scanning the allocated chunks. For rare
/// paths only (it visits every slot of every chunk in use).
pub fn each(kind: Kind, mut f: impl FnMut(i32)) {
    if none_tracked() {
        return;
    }
    for (ci, cell) in CHUNKS.iter().enumerate() {
        if cell.load(Ordering::Acquire).is_null() {
            continue;
        }
        for k in 0..CHUNK {
            let fd = (ci * CHUNK + k) as i32;
            if self::kind(fd) == Some(kind) {
                f(fd);
            }
        }
    }
}

/// The first of our own fds in `from..=to`, skipping unallocated chunks.
pub fn next_internal(from: u32, to: u32) -> Option<u32> {
    if none_tracked() {
        return None;
    }
    let to = (to as usize).min(MAX_FD - 1);
    let mut fd = from as usize;
    while fd <= to {
        if CHUNKS[fd / CHUNK].load(Ordering::Acquire).is_null() {
            fd = (fd / CHUNK + 1) * CHUNK;
            continue;
        }
        if is_internal(fd as i32) {
            return Some(fd as u32);
        }
        fd += 1;
    }
    None
}

/// The fd's kind, if tracked (one atomic load after the fast check).
#[inline]
pub fn kind(fd: i32) -> Option<Kind> {
    if none_tracked() {
        return None;
    }
    kind_from(slot(fd)?.kind.load(Ordering::Acquire))
}

/// Tag of an errno stored in the `relay` words of a `HandshakeFailed` slot (never a family
/// byte, so `get` reports no relay address for it).
const ERRNO_TAG: u64 = 0xEE;

/// A running handshake on `fd` succeeded: `Handshaking` becomes `ProxiedTcp` with `relay`
/// (BND.ADDR:BND.PORT). False if the slot was no longer `Handshaking` (closed meanwhile).
pub fn handshake_done(fd: i32, relay: Option<SocketAddr>) -> bool {
    let Some(s) = slot(fd) else {
        return false;
    };
    if s.kind
        .compare_exchange(
            Kind::Handshaking as u8,
            Kind::ProxiedTcp as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return false;
    }
    count_hs(Kind::Handshaking as u8, Kind::ProxiedTcp as u8);
    for (cell, v) in s.relay.iter().zip(encode(relay.as_ref())) {
        cell.store(v, Ordering::Release);
    }
    true
}

/// A running handshake on `fd` failed with `errno`: `Handshaking` becomes `HandshakeFailed`.
/// False if the slot was no longer `Handshaking`.
pub fn handshake_failed(fd: i32, errno: i32) -> bool {
    let Some(s) = slot(fd) else {
        return false;
    };
    if s.kind
        .compare_exchange(
            Kind::Handshaking as u8,
            Kind::HandshakeFailed as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return false;
    }
    s.relay[0].store(ERRNO_TAG | ((errno as u32 as u64) << 8), Ordering::Release);
    for cell in &s.relay[1..] {
        cell.store(0, Ordering::Release);
    }
    true
}

fn stored_errno(s: &Slot) -> i32 {
    let w = s.relay[0].load(Ordering::Acquire);
    if w & 0xff == ERRNO_TAG {
        (w >> 8) as u32 as i32
    } else {
        // Read in the instant between the kind change and the store: still a failure.
        libc::EIO
    }
}

/// The errno of a `HandshakeFailed` fd, left in place.
pub fn failed_errno(fd: i32) -> Option<i32> {
    let s = slot(fd)?;
    (s.kind.load(Ordering::Acquire) == Kind::HandshakeFailed as u8).then(|| stored_errno(s))
}

/// Reports the failure of a `HandshakeFailed` fd once, like the kernel's socket error: returns
/// the errno and forgets the fd (the socket is unconnected and may connect again).
pub fn take_failure(fd: i32) -> Option<i32> {
    let s = slot(fd)?;
    let e = stored_errno(s);
    if s.kind
        .compare_exchange(
            Kind::HandshakeFailed as u8,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        return None;
    }
    TRACKED.fetch_sub(1, Ordering::Relaxed);
    count_hs(Kind::HandshakeFailed as u8, 0);
    for cell in s.peer.iter().chain(s.relay.iter()) {
        cell.store(0, Ordering::Relaxed);
    }
    Some(e)
}

/// `newfd` now refers to the same socket as `oldfd` (dup, dup2, dup3, F_DUPFD): copy the state,
/// or forget stale state that `newfd` had. Returns the kind copied: for `Handshaking` the
/// caller (`hooks/fd.rs`) tells the non-blocking engine, so that the handshake finishes for
/// every fd of the socket (the table never calls an engine).
pub fn duplicate(oldfd: i32, newfd: i32) -> Option<Kind> {
    if none_tracked() {
        return None;
    }
    match get(oldfd) {
        Some(mut e) => {
            if e.ctrl >= 0 {
                // Each fd owns its copy of the control connection: closing one leaves the
                // association alive for the other.
                // SAFETY: F_DUPFD_CLOEXEC takes no pointer; the copy is ours.
                e.ctrl = unsafe { crate::sys::real::fcntl(e.ctrl, libc::F_DUPFD_CLOEXEC, 3) };
            }
            if !set(newfd, e) {
                // Beyond the table: cannot happen for an fd that dup returned under MAX_FD.
                clear(newfd);
                return None;
            }
            if let (Some(a), Some(b)) = (slot(oldfd), slot(newfd)) {
                if e.kind == Kind::HandshakeFailed {
                    b.relay[0].store(a.relay[0].load(Ordering::Acquire), Ordering::Release);
                }
                b.family
                    .store(a.family.load(Ordering::Acquire), Ordering::Release);
            }
            Some(e.kind)
        }
        None => {
            clear(newfd);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_dup() {
        let a: SocketAddr = "[2001:db8::1%3]:443".parse().unwrap();
        assert!(set(10, Entry::tcp(a)));
        assert_eq!(get(10).unwrap().peer, Some(a));
        assert_eq!(get(10).unwrap().ctrl, -1);
        duplicate(10, 2000);
        assert_eq!(get(2000).unwrap().peer, Some(a));
        clear(10);
        assert!(get(10).is_none());
        clear_range(0, u32::MAX, false);
        assert!(get(2000).is_none());
        assert!(none_tracked());
        let b: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(set(5, Entry::tcp(b)));
        duplicate(7, 5); // dup2 of an untracked fd over a tracked one
        assert!(get(5).is_none());
        assert!(!set(MAX_FD as i32, Entry::tcp(b)));
        assert!(!set(-1, Entry::tcp(b)));
        let u = Entry {
            kind: Kind::UdpAssoc,
            peer: None,
            relay: Some(b),
            ctrl: -1,
        };
        assert!(set(6, u));
        assert_eq!(get(6), Some(u));
        set_peer(6, Some(a));
        assert_eq!(get(6).unwrap().peer, Some(a));
        clear(6);
        assert!(none_tracked());

        // Non-blocking handshakes: failed (errno reported once, kept across dup), done.
        assert!(none_handshaking());
        let h = Entry {
            kind: Kind::Handshaking,
            peer: Some(b),
            relay: None,
            ctrl: -1,
        };
        assert!(set(8, h));
        assert!(!none_handshaking());
        assert!(handshake_failed(8, libc::ECONNREFUSED));
        assert!(!handshake_failed(8, libc::EIO));
        assert_eq!(kind(8), Some(Kind::HandshakeFailed));
        assert_eq!(get(8).unwrap().relay, None);
        duplicate(8, 9);
        assert_eq!(failed_errno(9), Some(libc::ECONNREFUSED));
        assert_eq!(take_failure(8), Some(libc::ECONNREFUSED));
        assert_eq!(take_failure(8), None);
        assert!(get(8).is_none());
        assert!(!none_handshaking());
        clear(9);
        assert!(none_handshaking());
        assert!(set(8, h));
        assert!(handshake_done(8, Some(a)));
        assert!(!handshake_failed(8, libc::EIO));
        assert_eq!(get(8).unwrap().kind, Kind::ProxiedTcp);
        assert_eq!(get(8).unwrap().relay, Some(a));
        assert!(none_handshaking());
        assert!(set(8, h));
        clear(8);
        assert!(none_handshaking());
        assert!(none_tracked());
    }
}
