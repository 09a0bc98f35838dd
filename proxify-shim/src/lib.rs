//! `libproxify.so`: the LD_PRELOAD library of proxify.
//!
//! Module map, in layers: a module imports only from its own layer or below, never in a cycle
//! (`scripts/layers.py` checks it; ARCHITECTURE.md walks through one proxied connect).
//! - L0 `sys/`: `real` (the only way to libc's real functions), `sockaddr`, `lock` (the
//!   fork-safe spin lock), `guard` (panics fail the call), `error` (errno, `Failure`),
//!   `socket` (sockopts, local address, non-blocking toggle, disconnect), `resolve` (the one
//!   local look-up: a proxy's own name).
//! - L1 `state/`: `fdtable` (per-fd state, never calls an engine), `fakedns` (remote-DNS
//!   placeholders), `hosts` (/etc/hosts), `runtime` (configuration, proxies, logger).
//! - L2 `policy/`: `decide`, where a destination goes (direct and why, proxy, or refused).
//! - L3 `engine/`: `connect` (blocking), `nbconnect` (non-blocking, driven from the program's
//!   poll/select/epoll calls), `udp` (SOCKS5 association), `bind` (SOCKS BIND), `drive`
//!   (what they share: the connect to the first hop and the chain handshake driver).
//! - L4 `hooks/`: the exported C functions, one file per family; each converts arguments,
//!   calls one engine or the real function inside [`guard::guarded`], and maps the result.
//! - `csrc/variadic.c`: `fcntl`, `fcntl64`, `syscall`, `execl`, `execle`, `execlp`, which
//!   stable Rust cannot define.
//! - This file: the constructor and the fork handlers.

mod engine;
mod hooks;
mod policy;
mod state;
mod sys;

use engine::{bind, dnsresp, evreg, nbconnect, udp};
use state::{hosts, runtime};
use sys::{guard, real};

extern "C" fn fork_prepare() {
    // nbconnect's lock first: it is held while taking runtime's (a dynamic chain's retry).
    nbconnect::fork_prepare();
    evreg::fork_prepare();
    runtime::fork_prepare();
    hosts::fork_prepare();
    udp::fork_prepare();
    bind::fork_prepare();
    dnsresp::fork_prepare();
}

extern "C" fn fork_child() {
    state::fdtable::forked_child();
    nbconnect::forked_child();
    evreg::forked_child();
    fork_release();
}

extern "C" fn fork_release() {
    dnsresp::fork_release();
    bind::fork_release();
    udp::fork_release();
    hosts::fork_release();
    runtime::fork_release();
    evreg::fork_release();
    nbconnect::fork_release();
}

/// The constructor: resolve the real functions, install the one-line panic hook, register the
/// fork handlers and read the configuration, all before `main` and before any thread.
/// Hooks called earlier (from other libraries' constructors) initialise lazily instead.
extern "C" fn init() {
    real::resolve_all();
    // SAFETY: handlers with the C signature pthread_atfork expects, valid for the process's life.
    unsafe {
        libc::pthread_atfork(Some(fork_prepare), Some(fork_release), Some(fork_child));
    }
    guard::guarded((), 0, || {
        runtime::get();
        hooks::exec::init();
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
