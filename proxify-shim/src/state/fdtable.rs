//! Per-fd state, in one table that `close`, `dup*`, `fcntl(F_DUPFD*)` and `close_range` keep
//! true.
//!
//! The table is lock-free: a fixed array of lazily allocated chunks of slots, each slot made
//! of atomics. `TRACKED` counts the fds in use, so every hook can tell in one relaxed load that
//! nothing is tracked and go straight to libc. Clearing a slot (the `close` path) takes no lock
//! and allocates nothing; only [`set`] may allocate a chunk, on the proxied path.
//!
//! A slot is many words, written together: each has a sequence word (a seqlock). A writer
//! makes it odd (with its thread id beside it), writes, and makes it even again; a reader
//! keeps a copy only if the word was even and unchanged around it, so it never sees a
//! half-written entry. Writers of one slot wait for each other (a few instructions), except a
//! signal handler that interrupted its own thread's write of that slot: it writes inside that
//! write (the readers wait for its end), and a read there gets the kind alone, with no
//! address. The kind byte alone ([`kind`]) is always whole: one load.
//!
//! The table does no I/O and calls no engine: a control fd it forgets is handed back to the
//! caller to close ([`forget`], [`clear_range`]), and copies of control fds are made by the
//! caller (`hooks/fd.rs`).
//!
//! Size: ~940 lines, ~135 of them unit tests: the slot encoding (the seqlock word, the packed
//! addresses) is private to this file on purpose (issue 10: "behind a private encoding"), so every
//! accessor that reads or writes a slot lives here.

use std::cell::Cell;
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
    /// A proxied connect with optimistic data (`?optimistic=1`, `nbconnect.rs`): greeting and
    /// request are sent and the program was told it is connected, but the proxy's replies are
    /// still to be read: writes go straight to the socket, the first read consumes the replies
    /// first (`nbconnect::gate_read`); then it becomes `ProxiedTcp`. `peer` is what the
    /// program asked for.
    ReplyPending = 8,
}

/// What we know about an fd: one variant per kind, each with its own fields. (The slot's
/// encoding of them, in atomic words, is private to this file.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Connected through the proxy: `peer` is what the program asked for, `bound` the
    /// BND.ADDR:BND.PORT of the proxy's reply (when it said one).
    ProxiedTcp {
        peer: SocketAddr,
        bound: Option<SocketAddr>,
    },
    /// A UDP socket with a SOCKS5 association.
    UdpAssoc(Assoc),
    /// A listening socket turned into a SOCKS BIND: `bound` is BND.ADDR:BND.PORT of the first
    /// reply (what getsockname reports).
    BindListen { bound: SocketAddr },
    /// A TCP socket bound to port 0 by the program (a candidate for BIND under `auto`).
    BoundEphemeral,
    /// One of proxify's own fds, owned by the fd `owner` (-1: by proxify itself).
    Internal { owner: i32 },
    /// A non-blocking proxied connect whose handshake runs: `peer` is what the program asked
    /// for.
    Handshaking { peer: SocketAddr },
    /// A non-blocking proxied connect that failed; its errno waits for `SO_ERROR` or the next
    /// I/O call ([`failed_errno`], [`take_failure`]).
    HandshakeFailed { peer: Option<SocketAddr> },
    /// A proxied connect with optimistic data whose replies are still to be read.
    ReplyPending { peer: SocketAddr },
}

/// A UDP socket's SOCKS5 association.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assoc {
    /// The proxy's relay, in the socket's family.
    pub relay: SocketAddr,
    /// Our TCP control connection (closed with the entry); -1 if none.
    pub ctrl: i32,
    /// The destination the program connected the socket to (the kernel socket is then
    /// connected to the relay), if any.
    pub peer: Option<SocketAddr>,
}

impl Entry {
    #[cfg(test)]
    pub fn tcp(peer: SocketAddr) -> Entry {
        Entry::ProxiedTcp { peer, bound: None }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Entry::ProxiedTcp { .. } => Kind::ProxiedTcp,
            Entry::UdpAssoc(_) => Kind::UdpAssoc,
            Entry::BindListen { .. } => Kind::BindListen,
            Entry::BoundEphemeral => Kind::BoundEphemeral,
            Entry::Internal { .. } => Kind::Internal,
            Entry::Handshaking { .. } => Kind::Handshaking,
            Entry::HandshakeFailed { .. } => Kind::HandshakeFailed,
            Entry::ReplyPending { .. } => Kind::ReplyPending,
        }
    }

    /// The destination the program asked for (a connected UDP socket's peer included).
    pub fn peer(&self) -> Option<SocketAddr> {
        match *self {
            Entry::ProxiedTcp { peer, .. }
            | Entry::Handshaking { peer }
            | Entry::ReplyPending { peer } => Some(peer),
            Entry::UdpAssoc(a) => a.peer,
            Entry::HandshakeFailed { peer } => peer,
            _ => None,
        }
    }

    /// The slot's words: (kind, ctrl, peer, relay).
    fn words(&self) -> (Kind, i32, Option<SocketAddr>, Option<SocketAddr>) {
        let k = self.kind();
        match *self {
            Entry::ProxiedTcp { peer, bound } => (k, -1, Some(peer), bound),
            Entry::UdpAssoc(a) => (k, a.ctrl, a.peer, Some(a.relay)),
            Entry::BindListen { bound } => (k, -1, None, Some(bound)),
            Entry::BoundEphemeral => (k, -1, None, None),
            Entry::Internal { owner } => (k, owner, None, None),
            Entry::Handshaking { peer } | Entry::ReplyPending { peer } => (k, -1, Some(peer), None),
            Entry::HandshakeFailed { peer } => (k, -1, peer, None),
        }
    }

    /// The entry the slot's words make; None for words no writer stores (never a guess).
    fn from_words(
        kind: Kind,
        ctrl: i32,
        peer: Option<SocketAddr>,
        relay: Option<SocketAddr>,
    ) -> Option<Entry> {
        Some(match kind {
            Kind::ProxiedTcp => Entry::ProxiedTcp {
                peer: peer?,
                bound: relay,
            },
            Kind::UdpAssoc => Entry::UdpAssoc(Assoc {
                relay: relay?,
                ctrl,
                peer,
            }),
            Kind::BindListen => Entry::BindListen { bound: relay? },
            Kind::BoundEphemeral => Entry::BoundEphemeral,
            Kind::Internal => Entry::Internal { owner: ctrl },
            Kind::Handshaking => Entry::Handshaking { peer: peer? },
            Kind::HandshakeFailed => Entry::HandshakeFailed { peer },
            Kind::ReplyPending => Entry::ReplyPending { peer: peer? },
        })
    }
}

struct Slot {
    /// The seqlock word: the version in the low half (odd while a writer is in), the writer's
    /// thread id in the high half.
    seq: AtomicU64,
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
/// How many slots are `Handshaking`, `HandshakeFailed` or `ReplyPending`: 0 lets the poll/select/epoll, I/O
/// and `getsockopt` hooks go straight to libc.
static HANDSHAKING: AtomicUsize = AtomicUsize::new(0);

/// How many slot writes are in progress, in all threads: a child forked during one finds
/// its slot odd with no thread to end it ([`forked_child`]).
static WRITING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's id, for the seqlock word (0: not asked yet). Const, no destructor: safe
    /// in a signal handler.
    static TID: Cell<u32> = const { Cell::new(0) };
}

fn tid() -> u32 {
    TID.with(|t| {
        if t.get() == 0 {
            // SAFETY: gettid takes no argument and cannot fail.
            t.set(unsafe { libc::gettid() } as u32);
        }
        t.get()
    })
}

#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        // SAFETY: sched_yield takes no argument.
        unsafe { libc::sched_yield() };
    }
}

/// Runs `f`, the writes of one slot, as its one writer (see the module doc).
fn write<R>(s: &Slot, f: impl FnOnce() -> R) -> R {
    // No signal handler runs on this thread while it writes (its hooks would read a slot
    // half-written by the very code they interrupted): the writes are a few stores.
    // SAFETY: all-zero bytes are a valid sigset_t; sigfillset fills the one we own.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` and `old` are sigset_ts we own; pthread_sigmask only reads `all` and
    // writes `old`.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    WRITING.fetch_add(1, Ordering::Acquire);
    let me = tid();
    let mut spins = 0;
    let base = loop {
        let v = s.seq.load(Ordering::Relaxed);
        if v & 1 == 0 {
            let odd = (u64::from(me) << 32) | u64::from((v as u32).wrapping_add(1));
            if s.seq
                .compare_exchange_weak(v, odd, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break Some(v as u32);
            }
            continue;
        }
        if (v >> 32) as u32 == me {
            // This thread's own write of the slot, under us (signals are blocked in a write,
            // so only a synchronous one could get here): write inside it.
            break None;
        }
        backoff(&mut spins);
    };
    let r = f();
    if let Some(b) = base {
        s.seq.store(u64::from(b.wrapping_add(2)), Ordering::Release);
    }
    WRITING.fetch_sub(1, Ordering::Release);
    // SAFETY: `old` is the mask saved above; restoring it takes no other pointer.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

/// Runs `f`, reads of one slot, until they come from one version of it; None when a signal
/// handler interrupted this thread's own write of the slot (the entry is half-written).
fn read<R>(s: &Slot, f: impl Fn() -> R) -> Option<R> {
    let mut spins = 0;
    loop {
        let v = s.seq.load(Ordering::Acquire);
        if v & 1 == 1 {
            if (v >> 32) as u32 == tid() {
                return None;
            }
            backoff(&mut spins);
            continue;
        }
        let r = f();
        std::sync::atomic::fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) == v {
            return Some(r);
        }
    }
}

/// In the child of a fork (no other thread there): a slot left odd by a thread of the parent
/// keeps its kind and loses its addresses (what was being written is unknown), and is made
/// even again. No lock, no allocation; only when a write was in progress.
pub fn forked_child() {
    TID.with(|t| t.set(0));
    if WRITING.swap(0, Ordering::Relaxed) == 0 {
        return;
    }
    for cell in CHUNKS.iter() {
        let chunk = cell.load(Ordering::Acquire);
        if chunk.is_null() {
            continue;
        }
        // SAFETY: chunks are never freed once published.
        for s in unsafe { (*chunk).iter() } {
            let v = s.seq.load(Ordering::Relaxed);
            if v & 1 == 1 {
                for c in s.peer.iter().chain(s.relay.iter()) {
                    c.store(0, Ordering::Relaxed);
                }
                s.seq
                    .store(u64::from((v as u32).wrapping_add(1)), Ordering::Release);
            }
        }
    }
}

#[inline(always)]
fn is_hs(kind: u8) -> bool {
    kind == Kind::Handshaking as u8
        || kind == Kind::HandshakeFailed as u8
        || kind == Kind::ReplyPending as u8
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
        // A mapping of its own, not the heap: all-zero is a valid, empty chunk (atomics of 0),
        // and fresh anonymous pages are zero without being written, so the ~90 KiB chunk costs
        // only the pages of the slots in use (malloc's calloc would clear it all: the DNS
        // table's fd, marked by the constructor, dirtied 22 pages of every process's heap).
        let size = std::mem::size_of::<Chunk>();
        // SAFETY: a fresh private anonymous mapping; the result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        let fresh = p as *mut Chunk;
        if cell
            .compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: our own mapping of `size` bytes, never published.
            unsafe { libc::munmap(p, size) };
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
        8 => Some(Kind::ReplyPending),
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
/// be allocated, or if the slot holds a UDP association with another control fd (the
/// caller [`forget`]s it first and closes that fd): a caller that would leave a proxied socket
/// untracked must then fail closed.
#[must_use]
pub fn set(fd: i32, entry: Entry) -> bool {
    let Some(s) = slot_alloc(fd) else {
        return false;
    };
    let (kind, ctrl, peer, relay) = entry.words();
    let done = write(s, || {
        let old_kind = s.kind.load(Ordering::Relaxed);
        if REFUSE_NEW.load(Ordering::Relaxed) && old_kind == 0 {
            return false;
        }
        let old_ctrl = s.ctrl.load(Ordering::Relaxed) - 1;
        if old_kind == Kind::UdpAssoc as u8 && old_ctrl >= 0 && old_ctrl != ctrl {
            return false;
        }
        store(&s.peer, peer.as_ref());
        store(&s.relay, relay.as_ref());
        if old_kind == 0 {
            // A new entry: whatever family a closed predecessor had is not this socket's.
            s.family.store(0, Ordering::Relaxed);
        }
        s.ctrl.store(ctrl.max(-1) + 1, Ordering::Relaxed);
        s.kind.store(kind as u8, Ordering::Release);
        if old_kind == 0 {
            TRACKED.fetch_add(1, Ordering::Relaxed);
        }
        count_hs(old_kind, kind as u8);
        true
    });
    if let (true, Entry::UdpAssoc(a)) = (done, entry) {
        if a.ctrl >= 0 {
            // Mark the control fd as ours (its slot names its owner). Unmarked, the program
            // could close it: that only ends the association (datagrams then fail), never a
            // leak.
            let _ = set(a.ctrl, internal(fd));
        }
    }
    done
}

/// The entry of one of our own fds, owned by `owner` (-1: by proxify itself).
fn internal(owner: i32) -> Entry {
    Entry::Internal { owner }
}

/// Is `fd` one of proxify's own fds?
#[inline]
pub fn is_internal(fd: i32) -> bool {
    !none_tracked()
        && slot(fd)
            .map(|s| s.kind.load(Ordering::Acquire) == Kind::Internal as u8)
            .unwrap_or(false)
}

/// Our internal fd `fd` was copied to `nfd` by the caller (the program is about to reuse
/// `fd`'s number with dup2/dup3): `nfd` takes its place, its owner is told, `fd` is
/// forgotten. False if `nfd` cannot be tracked (the caller closes it and fails).
pub fn moved_internal(fd: i32, nfd: i32) -> bool {
    let Some(s) = slot(fd) else {
        return false;
    };
    let owner = s.ctrl.load(Ordering::Relaxed) - 1;
    if !set(nfd, internal(owner)) {
        return false;
    }
    if let Some(o) = slot(owner) {
        write(o, || {
            if o.kind.load(Ordering::Relaxed) == Kind::UdpAssoc as u8 {
                o.ctrl.store(nfd + 1, Ordering::Relaxed);
            }
        });
    }
    // The old number is closed by the caller's dup2; forget it here.
    write(s, || {
        if s.kind.swap(0, Ordering::AcqRel) != 0 {
            TRACKED.fetch_sub(1, Ordering::Relaxed);
        }
        s.ctrl.store(0, Ordering::Relaxed);
    });
    true
}

/// Updates the connected peer of a tracked fd.
pub fn set_peer(fd: i32, peer: Option<SocketAddr>) {
    if let Some(s) = slot(fd) {
        write(s, || store(&s.peer, peer.as_ref()));
    }
}

fn store(cells: &[AtomicU64; 4], addr: Option<&SocketAddr>) {
    for (cell, v) in cells.iter().zip(encode(addr)) {
        cell.store(v, Ordering::Relaxed);
    }
}

fn load(cells: &[AtomicU64; 4]) -> Option<SocketAddr> {
    decode([
        cells[0].load(Ordering::Relaxed),
        cells[1].load(Ordering::Relaxed),
        cells[2].load(Ordering::Relaxed),
        cells[3].load(Ordering::Relaxed),
    ])
}

/// The state of `fd`, if tracked: one version of its slot, never a half-written one.
#[inline]
pub fn get(fd: i32) -> Option<Entry> {
    if none_tracked() {
        return None;
    }
    let s = slot(fd)?;
    let whole = read(s, || {
        kind_from(s.kind.load(Ordering::Relaxed)).map(|kind| {
            (
                kind,
                s.ctrl.load(Ordering::Relaxed) - 1,
                load(&s.peer),
                load(&s.relay),
            )
        })
    });
    match whole {
        Some(w) => {
            w.and_then(|(kind, ctrl, peer, relay)| Entry::from_words(kind, ctrl, peer, relay))
        }
        // Inside this thread's own write of the slot (a signal handler): the kind alone, where
        // it needs no address; a kind that does is not knowable here (None: the caller's
        // untracked path, which for such an fd is refused or harmless — see `copy`).
        None => match kind_from(s.kind.load(Ordering::Acquire))? {
            Kind::BoundEphemeral => Some(Entry::BoundEphemeral),
            Kind::HandshakeFailed => Some(Entry::HandshakeFailed { peer: None }),
            _ => None,
        },
    }
}

/// Forgets `fd`; returns our control fd that belonged to it, for the caller to close.
/// Lock-free, allocation-free: safe on the `close` path.
#[inline]
#[must_use]
pub fn forget(fd: i32) -> Option<i32> {
    if none_tracked() {
        return None;
    }
    take(fd)
}

/// Records that `fd`'s socket was replaced by one of another family: the program created it
/// as `family`, and getsockname, getpeername and SO_DOMAIN keep answering in that family.
/// Only for a tracked fd (set after its entry; a new entry starts with none).
pub fn set_program_family(fd: i32, family: i32) {
    if let Some(s) = slot(fd) {
        write(s, || {
            s.family
                .store(u8::try_from(family).unwrap_or(0), Ordering::Release)
        });
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
    if s.kind.load(Ordering::Acquire) == 0 {
        // Not tracked: nothing to write (every close of such an fd passes here while anything
        // is tracked: no signal mask changed, no store).
        return None;
    }
    let (old, c) = write(s, || {
        s.family.store(0, Ordering::Relaxed);
        let old = s.kind.swap(0, Ordering::AcqRel);
        if old == 0 {
            return (0, -1);
        }
        TRACKED.fetch_sub(1, Ordering::Relaxed);
        count_hs(old, 0);
        (old, s.ctrl.swap(0, Ordering::Relaxed) - 1)
    });
    if old != Kind::UdpAssoc as u8 || c < 0 {
        return None;
    }
    // The control fd's own slot goes too.
    if let Some(cs) = slot(c) {
        write(cs, || {
            if cs.kind.load(Ordering::Relaxed) == Kind::Internal as u8
                && cs.ctrl.load(Ordering::Relaxed) - 1 == fd
                && cs.kind.swap(0, Ordering::AcqRel) != 0
            {
                TRACKED.fetch_sub(1, Ordering::Relaxed);
                cs.ctrl.store(0, Ordering::Relaxed);
            }
        });
    }
    Some(c)
}

/// Forgets every fd in `first..=last` that the kernel just closed, handing each control fd
/// of ours that they owned to `close`. Our own fds in the range were skipped by the caller
/// unless `ours_closed_too` (closefrom fallback): then their numbers may already be reused,
/// and a control fd in the range is not handed over (it must not be closed again).
pub fn clear_range(first: u32, last: u32, ours_closed_too: bool, mut close: impl FnMut(i32)) {
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
                close(c);
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

/// Changes `fd`'s kind from `from` to `to` and runs `then` in the same write; false (and
/// nothing written) if the slot's kind was not `from`.
fn transition(fd: i32, from: Kind, to: u8, then: impl FnOnce(&Slot)) -> bool {
    let Some(s) = slot(fd) else {
        return false;
    };
    write(s, || {
        if s.kind
            .compare_exchange(from as u8, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        count_hs(from as u8, to);
        then(s);
        true
    })
}

/// A running handshake on `fd` succeeded: `Handshaking` (or `ReplyPending`) becomes
/// `ProxiedTcp` with `relay` (BND.ADDR:BND.PORT). False if the slot was neither (closed
/// meanwhile).
pub fn handshake_done(fd: i32, relay: Option<SocketAddr>) -> bool {
    [Kind::Handshaking, Kind::ReplyPending].iter().any(|&from| {
        transition(fd, from, Kind::ProxiedTcp as u8, |s| {
            store(&s.relay, relay.as_ref())
        })
    })
}

/// A running handshake on `fd` failed with `errno`: `Handshaking` (or `ReplyPending`) becomes
/// `HandshakeFailed`. False if the slot was neither.
pub fn handshake_failed(fd: i32, errno: i32) -> bool {
    [Kind::Handshaking, Kind::ReplyPending].iter().any(|&from| {
        transition(fd, from, Kind::HandshakeFailed as u8, |s| {
            store_errno(s, errno)
        })
    })
}

/// Optimistic data: greeting and request of `fd`'s handshake are sent, the replies not read
/// yet: `Handshaking` becomes `ReplyPending` (still counted in `HANDSHAKING`). False if the
/// slot was no longer `Handshaking`.
pub fn reply_pending(fd: i32) -> bool {
    transition(fd, Kind::Handshaking, Kind::ReplyPending as u8, |_| {})
}

fn store_errno(s: &Slot, errno: i32) {
    s.relay[0].store(ERRNO_TAG | ((errno as u32 as u64) << 8), Ordering::Relaxed);
    for cell in &s.relay[1..] {
        cell.store(0, Ordering::Relaxed);
    }
}

fn stored_errno(s: &Slot) -> i32 {
    let w = read(s, || s.relay[0].load(Ordering::Relaxed)).unwrap_or(0);
    if w & 0xff == ERRNO_TAG {
        (w >> 8) as u32 as i32
    } else {
        // Read inside this thread's own write of the slot (a signal handler): still a failure.
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
    let mut e = libc::EIO;
    let taken = transition(fd, Kind::HandshakeFailed, 0, |s| {
        let w = s.relay[0].load(Ordering::Relaxed);
        if w & 0xff == ERRNO_TAG {
            e = (w >> 8) as u32 as i32;
        }
        for cell in s.peer.iter().chain(s.relay.iter()) {
            cell.store(0, Ordering::Relaxed);
        }
    });
    if !taken {
        return None;
    }
    TRACKED.fetch_sub(1, Ordering::Relaxed);
    Some(e)
}

/// `newfd` now refers to the same socket as `oldfd` (dup, dup2, dup3, F_DUPFD): copies the
/// state of `oldfd` (with `ctrl`, the caller's own copy of its control fd, or -1), or forgets
/// stale state that `newfd` had. Returns what `newfd` had that the caller must close (its
/// control fd) and the kind copied: for `Handshaking` the caller (`hooks/fd.rs`) tells the
/// non-blocking engine, so that the handshake finishes for every fd of the socket (the table
/// never calls an engine). `Err(stale)`: `newfd` cannot carry the state (beyond the table, or
/// `oldfd`'s state unreadable here): the caller closes the copy and fails.
pub fn copy(oldfd: i32, newfd: i32, ctrl: i32) -> Result<(Option<i32>, Option<Kind>), Option<i32>> {
    if none_tracked() {
        return Ok((None, None));
    }
    let stale = take(newfd);
    let Some(a) = slot(oldfd) else {
        return Ok((stale, None));
    };
    let copied = read(a, || {
        kind_from(a.kind.load(Ordering::Relaxed)).map(|kind| {
            (
                (
                    kind,
                    a.ctrl.load(Ordering::Relaxed) - 1,
                    load(&a.peer),
                    load(&a.relay),
                ),
                a.relay[0].load(Ordering::Relaxed),
                a.family.load(Ordering::Relaxed),
            )
        })
    });
    let ((kind, old_ctrl, peer, relay), word, family) = match copied {
        Some(Some(c)) => c,
        // `oldfd` is not tracked: `newfd` is a plain copy.
        Some(None) => return Ok((stale, None)),
        // Inside this thread's own write of `oldfd`'s slot: its state is unknown, and an
        // untracked copy of a tracked socket must not be.
        None => return Err(stale),
    };
    // The copy owns the caller's copy of the control fd (UDP), not the original's.
    let ctrl = if kind == Kind::UdpAssoc {
        ctrl
    } else {
        old_ctrl
    };
    let Some(e) = Entry::from_words(kind, ctrl, peer, relay) else {
        return Err(stale);
    };
    if !set(newfd, e) {
        return Err(stale);
    }
    if let Some(b) = slot(newfd) {
        write(b, || {
            if kind == Kind::HandshakeFailed {
                b.relay[0].store(word, Ordering::Relaxed);
            }
            b.family.store(family, Ordering::Relaxed);
        });
    }
    Ok((stale, Some(kind)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_get_clear_dup() {
        let a: SocketAddr = "[2001:db8::1%3]:443".parse().unwrap();
        assert!(set(10, Entry::tcp(a)));
        assert_eq!(get(10), Some(Entry::tcp(a)));
        assert_eq!(copy(10, 2000, -1), Ok((None, Some(Kind::ProxiedTcp))));
        assert_eq!(get(2000).unwrap().peer(), Some(a));
        assert_eq!(forget(10), None);
        assert!(get(10).is_none());
        clear_range(0, u32::MAX, false, |_| panic!("no control fd"));
        assert!(get(2000).is_none());
        assert!(none_tracked());
        let b: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(set(5, Entry::tcp(b)));
        assert_eq!(copy(7, 5, -1), Ok((None, None))); // dup2 of an untracked fd over a tracked one
        assert!(get(5).is_none());
        assert!(!set(MAX_FD as i32, Entry::tcp(b)));
        assert!(!set(-1, Entry::tcp(b)));
        let u = Entry::UdpAssoc(Assoc {
            relay: b,
            ctrl: -1,
            peer: None,
        });
        assert!(set(6, u));
        assert_eq!(get(6), Some(u));
        set_peer(6, Some(a));
        assert_eq!(get(6).unwrap().peer(), Some(a));
        assert_eq!(forget(6), None);
        assert!(none_tracked());

        // Non-blocking handshakes: failed (errno reported once, kept across dup), done.
        assert!(none_handshaking());
        let h = Entry::Handshaking { peer: b };
        assert!(set(8, h));
        assert!(!none_handshaking());
        assert!(handshake_failed(8, libc::ECONNREFUSED));
        assert!(!handshake_failed(8, libc::EIO));
        assert_eq!(kind(8), Some(Kind::HandshakeFailed));
        assert_eq!(get(8), Some(Entry::HandshakeFailed { peer: Some(b) }));
        assert!(copy(8, 9, -1).is_ok());
        assert_eq!(failed_errno(9), Some(libc::ECONNREFUSED));
        assert_eq!(take_failure(8), Some(libc::ECONNREFUSED));
        assert_eq!(take_failure(8), None);
        assert!(get(8).is_none());
        assert!(!none_handshaking());
        assert_eq!(forget(9), None);
        assert!(none_handshaking());
        assert!(set(8, h));
        assert!(handshake_done(8, Some(a)));
        assert!(!handshake_failed(8, libc::EIO));
        assert_eq!(
            get(8),
            Some(Entry::ProxiedTcp {
                peer: b,
                bound: Some(a)
            })
        );
        assert!(none_handshaking());
        assert!(set(8, h));
        assert_eq!(forget(8), None);
        assert!(none_handshaking());
        // Optimistic data: replies pending (counted as handshaking, copied by dup), then done
        // or failed.
        assert!(set(8, h));
        assert!(reply_pending(8));
        assert!(!reply_pending(8));
        assert_eq!(kind(8), Some(Kind::ReplyPending));
        assert!(!none_handshaking());
        assert!(copy(8, 9, -1).is_ok());
        assert_eq!(kind(9), Some(Kind::ReplyPending));
        assert!(handshake_done(8, Some(a)));
        assert_eq!(get(8).unwrap().kind(), Kind::ProxiedTcp);
        assert!(handshake_failed(9, libc::ECONNRESET));
        assert_eq!(take_failure(9), Some(libc::ECONNRESET));
        assert!(none_handshaking());
        assert_eq!(forget(8), None);
        assert!(none_tracked());
    }

    // The table is one per process: the tests below run one after the other, from this one.
    #[test]
    fn the_table() {
        set_get_clear_dup();
        control_fds_are_handed_back_never_closed_here();
        a_reader_never_sees_a_half_written_slot();
        assert!(none_tracked());
    }

    fn control_fds_are_handed_back_never_closed_here() {
        let r: SocketAddr = "192.0.2.9:5000".parse().unwrap();
        let assoc = Assoc {
            relay: r,
            ctrl: 3001,
            peer: None,
        };
        let u = Entry::UdpAssoc(assoc);
        assert!(set(3000, u));
        assert!(is_internal(3001));
        // Another association over it is refused until the first is forgotten.
        assert!(!set(
            3000,
            Entry::UdpAssoc(Assoc {
                ctrl: 3002,
                ..assoc
            })
        ));
        // A copy carries the caller's own copy of the control fd.
        assert_eq!(copy(3000, 3003, 3004), Ok((None, Some(Kind::UdpAssoc))));
        assert!(matches!(
            get(3003),
            Some(Entry::UdpAssoc(Assoc { ctrl: 3004, .. }))
        ));
        assert!(is_internal(3004));
        // Our control fd moves: its owner follows.
        assert!(moved_internal(3001, 3005));
        assert!(matches!(
            get(3000),
            Some(Entry::UdpAssoc(Assoc { ctrl: 3005, .. }))
        ));
        assert!(!is_internal(3001));
        assert_eq!(forget(3000), Some(3005));
        assert!(!is_internal(3005));
        let mut closed = Vec::new();
        clear_range(3000, 3010, false, |c| closed.push(c));
        assert_eq!(closed, [3004]);
        assert!(get(3003).is_none() && !is_internal(3004));
    }

    fn a_reader_never_sees_a_half_written_slot() {
        use std::sync::atomic::AtomicBool;
        let a: SocketAddr = "192.0.2.1:1111".parse().unwrap();
        let b: SocketAddr = "[2001:db8::2]:2222".parse().unwrap();
        let e = |p: SocketAddr| Entry::ProxiedTcp {
            peer: p,
            bound: Some(p),
        };
        assert!(set(4000, e(a)));
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for i in 0..20_000 {
                    assert!(set(4000, e(if i % 2 == 0 { b } else { a })));
                }
                stop.store(true, Ordering::Relaxed);
            });
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let Some(Entry::ProxiedTcp { peer, bound }) = get(4000) else {
                    panic!("not a proxied TCP entry");
                };
                assert_eq!(Some(peer), bound, "a half-written slot");
                assert!(peer == a || peer == b);
                reads += 1;
            }
        });
        assert_eq!(forget(4000), None);
    }
}
