//! A small lock that survives `fork`, and the rule for what runs under it.
//!
//! `std::sync::Mutex` and `parking_lot` can be left locked forever in a child forked while
//! another thread held them. This lock is a spin-then-yield flag around short critical sections;
//! `pthread_atfork` handlers registered by the constructor take every such lock before `fork`
//! and release them in both parent and child, so the child always starts with them free and
//! consistent.
//!
//! # The rule: memory work only while a guard is alive
//!
//! A thread that finds the lock taken spins, then yields, until it is free; the fork handlers
//! take every lock before `fork`; and the hooks that take these locks run on any of the
//! program's threads. So while a [`Guard`] (or `raw_lock`) is held, code may only
//!
//! - look up, compare and hash data the lock protects;
//! - move, copy and store values prepared before the lock was taken (cloning an `Arc` — one
//!   atomic increment — counts as a copy);
//!
//! and never
//!
//! - make a **system call**: no `real::*`, no libc call, no `Instant::now()` or
//!   `SystemTime::now()` (take the time before locking), no logging (the logger writes);
//! - do **DNS** or anything else that may block: no file read, no `getaddrinfo`, no `poll`;
//! - **allocate**: no `String`, `Vec`, `Box` or `Arc` made, no `to_string()`/`clone()` of an
//!   owned string, no `format!`, no `HashMap::new()` (its `RandomState` may ask the kernel for
//!   keys), no map insert that may grow the map;
//! - **deallocate**: a value taken out (removed, replaced, evicted) is moved out of the guard
//!   and dropped after it.
//!
//! Why: a thread spinning on a lock held across a system call or `malloc` burns CPU for as long
//! as that call takes; a lock held across a blocking call (a DNS query, a file read) stalls
//! every other thread's hook behind it, and `fork` too; and every allocation or free inside the
//! lock widens each of those windows (and nests malloc's own lock inside this one).
//!
//! The helpers below keep the rule without thinking about it: [`ForkSafeMutex::replace`] stores
//! a value made before and hands back the old one to drop after the lock;
//! [`ForkSafeMutex::with_room`] (and [`ForkSafeMutex::insert`] for a lock around an
//! `Option<HashMap>`) grows a map with the lock released, so that an insert under the lock never
//! reallocates; [`ForkSafeMutex::remove`] hands back the value it takes out. Two traps: a value
//! returned from a locked expression is dropped by the caller after the guard only if the guard
//! is a temporary of that statement (`let old = m.lock().x.take();`), and a guard in an `if let`
//! scrutinee lives to the end of the `if let`'s body.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct ForkSafeMutex<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a guard, which holds the spin lock: one thread at a time.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
// SAFETY: moving the mutex moves its data, which is Send.
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

pub struct Guard<'a, T> {
    m: &'a ForkSafeMutex<T>,
}

impl<T> ForkSafeMutex<T> {
    pub const fn new(v: T) -> Self {
        ForkSafeMutex {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(v),
        }
    }

    pub fn raw_lock(&self) {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield takes no argument.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// # Safety
    /// Only after `raw_lock` by this thread, or in the atfork handlers.
    pub unsafe fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    pub fn lock(&self) -> Guard<'_, T> {
        self.raw_lock();
        #[cfg(test)]
        audit::enter();
        Guard { m: self }
    }

    /// Stores `v` (made before the lock) and returns the value it replaces, for the caller to
    /// drop after the lock.
    #[must_use = "the old value is returned to be dropped after the lock"]
    pub fn replace(&self, v: T) -> T {
        std::mem::replace(&mut *self.lock(), v)
    }

    /// Runs `f` under the lock on the map `project` picks out of the data, with room for at
    /// least one more entry: one insert in `f` does not reallocate (hashbrown, under std's
    /// `HashMap`, grows only when `len() == capacity()`; removals can leave the capacity below
    /// what was allocated). A missing or full map is replaced by a new one allocated with the
    /// lock released (room for at least twice the entries), its entries moved over under the
    /// lock; the old map's allocation is freed after it. `f` must keep the
    /// rule too (one insert at most; what it takes out it returns, to be dropped by the caller
    /// after the lock).
    pub fn with_room<K, V, S, R>(
        &self,
        project: impl Fn(&mut T) -> &mut Option<HashMap<K, V, S>>,
        f: impl FnOnce(&mut HashMap<K, V, S>) -> R,
    ) -> R
    where
        K: Eq + Hash,
        S: BuildHasher + Default,
    {
        let mut spare: Option<HashMap<K, V, S>> = None;
        loop {
            let mut g = self.lock();
            let slot = project(&mut g);
            let len = slot.as_ref().map_or(0, |m| m.len());
            if let Some(m) = slot.as_mut().filter(|m| m.len() < m.capacity()) {
                let r = f(m);
                drop(g);
                drop(spare);
                return r;
            }
            if let Some(mut bigger) = spare.take_if(|s| s.capacity() > len) {
                let mut old = slot.take();
                if let Some(o) = old.as_mut() {
                    // `bigger` is empty with room for more than `len`: no insert reallocates,
                    // and draining keeps `o`'s allocation (freed below, after the lock).
                    for (k, v) in o.drain() {
                        bigger.insert(k, v);
                    }
                }
                let r = f(slot.insert(bigger));
                drop(g);
                drop(old);
                return r;
            }
            drop(g);
            // Missing, full, or grown by another thread past the spare: allocate (again) with
            // the lock released; the spare it replaces is freed here, unlocked.
            spare = Some(HashMap::with_capacity_and_hasher(
                (2 * len).max(4),
                S::default(),
            ));
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher + Default> ForkSafeMutex<Option<HashMap<K, V, S>>> {
    /// Inserts `k` → `v` (both made before the lock), growing the map with the lock released
    /// (see [`ForkSafeMutex::with_room`]); returns the value it replaces, for the caller to drop
    /// after the lock.
    #[must_use = "the old value is returned to be dropped after the lock"]
    pub fn insert(&self, k: K, v: V) -> Option<V> {
        self.with_room(|m| m, |m| m.insert(k, v))
    }

    /// Takes `k`'s value out of the map (which never shrinks under the lock), for the caller to
    /// drop after the lock.
    #[must_use = "the value is returned to be dropped after the lock"]
    pub fn remove(&self, k: &K) -> Option<V> {
        self.lock().as_mut()?.remove(k)
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference to the data exists.
        unsafe { &*self.m.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock: no other reference to the data exists.
        unsafe { &mut *self.m.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        #[cfg(test)]
        audit::leave();
        // SAFETY: this guard took the lock and releases it once.
        unsafe { self.m.raw_unlock() }
    }
}

/// Tests only: an allocator that counts, per thread, the allocations and frees made while this
/// thread holds a guard, so that a test can show a lock region keeps the rule.
#[cfg(test)]
pub(crate) mod audit {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<usize> = const { Cell::new(0) };
        static UNDER_LOCK: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn enter() {
        HELD.with(|h| h.set(h.get() + 1));
    }

    pub(super) fn leave() {
        HELD.with(|h| h.set(h.get() - 1));
    }

    /// Allocations, reallocations and frees this thread made under a guard so far.
    pub(crate) fn under_lock() -> usize {
        UNDER_LOCK.with(Cell::get)
    }

    /// Runs `f` and returns what it returns with the count of allocations and frees made under
    /// a guard while it ran.
    pub(crate) fn count<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let before = under_lock();
        let r = f();
        (r, under_lock() - before)
    }

    fn note() {
        let _ = HELD.try_with(|h| {
            if h.get() > 0 {
                let _ = UNDER_LOCK.try_with(|n| n.set(n.get() + 1));
            }
        });
    }

    struct Counting;

    // SAFETY: every call is passed on to the system allocator unchanged; the counting touches
    // only const-initialised thread-locals, which never allocate.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: the caller's contract for `alloc`, passed on.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: the caller's contract for `alloc_zeroed`, passed on.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note();
            // SAFETY: the caller's contract for `dealloc`, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note();
            // SAFETY: the caller's contract for `realloc`, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;
}

#[cfg(test)]
mod tests {
    use super::audit::count;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_audit_sees_an_allocation_under_the_lock() {
        let m = ForkSafeMutex::new(Vec::<u32>::new());
        let ((), n) = count(|| m.lock().push(1));
        assert!(n >= 1);
        let ((), n) = count(|| drop(m.replace(Vec::new())));
        assert_eq!(n, 0, "the old Vec is freed after the lock");
    }

    #[test]
    fn replace_returns_the_old_value() {
        let m = ForkSafeMutex::new(Some(Arc::<str>::from("a")));
        let new = Some(Arc::<str>::from("b"));
        let (old, n) = count(|| m.replace(new));
        assert_eq!(n, 0);
        assert_eq!(old.as_deref(), Some("a"));
        assert_eq!(m.lock().as_deref(), Some("b"));
    }

    #[test]
    fn insert_grows_the_map_outside_the_lock() {
        let m: ForkSafeMutex<Option<HashMap<u32, String>>> = ForkSafeMutex::new(None);
        for i in 0..1000u32 {
            let v = i.to_string();
            let (old, n) = count(|| m.insert(i, v));
            assert_eq!(n, 0, "insert {i}");
            assert!(old.is_none());
        }
        let v = "again".to_string();
        let (old, n) = count(|| m.insert(7, v));
        assert_eq!(n, 0);
        assert_eq!(
            old.as_deref(),
            Some("7"),
            "the replaced value is handed back"
        );
        let (old, n) = count(|| m.remove(&8));
        assert_eq!(n, 0);
        assert_eq!(old.as_deref(), Some("8"));
        assert!(m.remove(&8).is_none());
        let g = m.lock();
        let map = g.as_ref().unwrap();
        assert_eq!(map.len(), 999);
        assert_eq!(map.get(&7).map(String::as_str), Some("again"));
        assert!((0..1000)
            .filter(|i| *i != 7 && *i != 8)
            .all(|i| map[&i] == i.to_string()));
    }

    #[test]
    fn with_room_reaches_a_map_inside_the_data() {
        struct S {
            n: u32,
            map: Option<HashMap<u32, u32>>,
        }
        let m = ForkSafeMutex::new(S { n: 5, map: None });
        for i in 0..100 {
            let (r, n) = count(|| m.with_room(|s| &mut s.map, |map| map.insert(i, i * 2)));
            assert_eq!(n, 0);
            assert!(r.is_none());
        }
        let g = m.lock();
        assert_eq!(g.n, 5);
        assert_eq!(g.map.as_ref().unwrap().len(), 100);
        assert_eq!(g.map.as_ref().unwrap()[&42], 84);
    }

    #[test]
    fn concurrent_inserts_all_land() {
        let m: Arc<ForkSafeMutex<Option<HashMap<u32, u32>>>> = Arc::new(ForkSafeMutex::new(None));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut under = 0;
                    for i in 0..500 {
                        let (_, n) = count(|| m.insert(t * 1000 + i, i));
                        under += n;
                    }
                    under
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 0);
        }
        assert_eq!(m.lock().as_ref().unwrap().len(), 2000);
    }
}

/// The hasher of proxify's maps keyed by an fd number or a socket's inode: one multiply
/// (Fibonacci hashing), no per-map random keys. Such keys are not chosen by anyone who could
/// aim collisions at a map, and std's SipHash with `RandomState` cost a visible share of a
/// proxied connect.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    #[inline]
    fn write_i32(&mut self, n: i32) {
        self.write_u64(n as u32 as u64);
    }
}

/// A map keyed by an fd number or an inode (see [`IntHasher`]).
pub type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;
