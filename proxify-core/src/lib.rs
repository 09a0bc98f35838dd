//! Code shared by the proxify shim (`libproxify.so`) and the `proxify` CLI.
//!
//! Nothing in this crate touches a socket: the SOCKS client is a sans-IO state machine
//! ([`socks::Client`]) that is told which bytes arrived and says which bytes to send, so the
//! blocking driver in the shim, the unit tests and the fuzzers all share one implementation.

pub mod chain;
pub mod cidr;
pub mod config;
pub mod dns;
pub mod hops;
pub mod http;
pub mod placeholder;
pub mod progcheck;
pub mod proxychains;
pub mod rules;
pub mod socks;
pub mod url;
