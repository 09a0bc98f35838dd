//! `libproxify.so`: the LD_PRELOAD library of proxify.
//!
//! Layout (thin hooks, logic elsewhere):
//! - `hooks/`: the exported C functions, one file per family (connect, dns, fd, udp). Each
//!   converts arguments, asks the decision code, maps the result to the C convention, and
//!   runs inside [`guard::guarded`] so a panic fails the call instead of falling through.
//! - `decide`: where a destination goes (direct and why, proxy, or refused): plain Rust.
//! - `proxied`: the proxied connect, driving proxify-core's sans-IO SOCKS client.
//! - `nbconnect`: non-blocking proxied connects, driven from the program's poll/select/epoll
//!   calls (`hooks/poll.rs`) and finished by `SO_ERROR` (`hooks/sockopt.rs`) or the first I/O.
//! - `fdtable`: per-fd state; `fakedns`: remote-DNS placeholders; `hosts`: /etc/hosts.
//! - `real`: the real libc functions, resolved once; `runtime`: configuration and logging.
//! - `csrc/variadic.c`: `fcntl`, which stable Rust cannot define (variadic).

mod engine;
mod hooks;
mod policy;
mod state;
mod sys;

use engine::{bind, nbconnect, udp};
use state::{hosts, runtime};
use sys::{guard, real};

extern "C" fn fork_prepare() {
    // nbconnect's lock first: it is held while taking runtime's (a dynamic chain's retry).
    nbconnect::fork_prepare();
    runtime::fork_prepare();
    hosts::fork_prepare();
    udp::fork_prepare();
    bind::fork_prepare();
}

extern "C" fn fork_release() {
    bind::fork_release();
    udp::fork_release();
    hosts::fork_release();
    runtime::fork_release();
    nbconnect::fork_release();
}

/// The constructor: resolve the real functions, install the one-line panic hook, register the
/// fork handlers and read the configuration, all before `main` and before any thread.
/// Hooks called earlier (from other libraries' constructors) initialise lazily instead.
extern "C" fn init() {
    real::resolve_all();
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_release));
    }
    guard::guarded((), 0, || {
        runtime::get();
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
