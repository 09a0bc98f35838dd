//! Layer 2, policy: [`decide`], where a destination goes (direct and why, through a chain, or
//! refused); [`names`], what a name or address stands for under remote DNS. Plain Rust over layers 0–1; no I/O.

pub mod decide;
pub mod names;
