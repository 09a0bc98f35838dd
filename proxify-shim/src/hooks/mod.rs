//! The exported C functions, one file per family of calls. Each hook only converts arguments,
//! asks the plain-Rust decision code what to do, and maps the result to the C convention.

pub mod connect;
pub mod dlsym;
pub mod dns;
pub mod exec;
pub mod fd;
pub mod gai_a;
pub mod io;
pub mod legacy;
pub mod listen;
pub mod poll;
pub mod sockopt;
pub mod syscall;
pub mod udp;
