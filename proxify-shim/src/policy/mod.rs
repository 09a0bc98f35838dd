//! Layer 2, policy: [`decide`], where a destination goes (direct and why, through a chain, or
//! refused). Plain Rust over layers 0–1; no I/O.

pub mod decide;
