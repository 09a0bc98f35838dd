//! A small lock that survives `fork`.
//!
//! `std::sync::Mutex` and `parking_lot` can be left locked forever in a child forked while
//! another thread held them. This lock is a spin-then-yield flag around short critical sections
//! (hash-map look-ups, never I/O); `pthread_atfork` handlers registered by the constructor take
//! every such lock before `fork` and release them in both parent and child, so the child always
//! starts with them free and consistent.

use std::cell::UnsafeCell;
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
        Guard { m: self }
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
        // SAFETY: this guard took the lock and releases it once.
        unsafe { self.m.raw_unlock() }
    }
}
