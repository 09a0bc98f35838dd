//! Layer 0, system: the only way to the real libc functions ([`real`]), socket addresses,
//! the fork-safe lock, the lock-free logger, the panic guard, errno and errors, socket helpers and the one local
//! name look-up. Nothing here knows about configuration, fd state or proxies; nothing here
//! imports a module of a higher layer.

pub mod error;
pub mod guard;
pub mod lock;
pub mod logger;
pub mod real;
pub mod resolve;
pub mod sockaddr;
pub mod socket;
pub mod trace;
