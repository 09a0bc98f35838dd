//! The blocking proxied TCP connect: the program's own socket is connected to the proxy
//! (never a fresh socket dup2-ed over it, so its options, flags and close-on-exec stay), then
//! the chain handshake from proxify-core is driven over it with a deadline. A dynamic chain
//! retries without each hop it finds dead.

use super::drive::{connect_proxy, drive, pick_proxy_addr};
use crate::policy::decide;
use crate::state::runtime::{Fault, Runtime};
use crate::sys::error::Failure;
use crate::sys::socket::with_nonblocking;
use libc::c_int;
use proxify_core::chain::Handshake;
use proxify_core::config::ChainMode;
use proxify_core::socks::{Command, Reply, TargetAddr};
use proxify_core::url::ProxyUrl;
use std::time::Instant;

/// Connects the program's TCP socket `fd` (of `family`) to `target` through the proxy.
/// On failure the socket is disconnected again (it never stays connected to anything), and
/// its file status flags are as the program left them in every case.
pub fn connect(
    rt: &Runtime,
    fd: c_int,
    family: c_int,
    target: TargetAddr,
) -> Result<Reply, Failure> {
    let cfg = rt
        .config()
        .ok_or_else(|| Failure::new(libc::EACCES, rt.config_error().to_string()))?;
    let chain = decide::chain_for(&target)
        .ok_or_else(|| Failure::new(libc::EACCES, "no chain for this destination"))?;
    // A dynamic chain retries without each hop it finds dead, at most once per hop.
    let mut tries = chain.hops.len().max(1);
    loop {
        let hops = rt.select_hops(chain);
        let urls: Vec<ProxyUrl> = hops.iter().map(|(_, u)| u.clone()).collect();
        let first = urls
            .first()
            .ok_or_else(|| Failure::new(libc::EACCES, "the chain has no proxy"))?;
        let addrs = rt.hop_addrs(first).map_err(|e| Failure {
            dead_hop: Some(0),
            ..Failure::new(libc::EHOSTUNREACH, e)
        });
        let result = addrs.and_then(|addrs| {
            let proxy_addr = pick_proxy_addr(fd, family, &addrs)?;
            let mut hs = Handshake::new(&urls, Command::Connect, target.clone())?;
            with_nonblocking(fd, || {
                connect_proxy(fd, proxy_addr, cfg.connect_timeout).map_err(|f| Failure {
                    dead_hop: Some(0),
                    ..f
                })?;
                if rt.fault == Fault::PanicConnect {
                    panic!("injected fault (PROXIFY_TEST_FAULT=panic-connect)");
                }
                drive(fd, &mut hs, Instant::now() + cfg.handshake_timeout)
            })
        });
        match result {
            Err(f) if chain.mode == ChainMode::Dynamic && tries > 1 && hops.len() > 1 => {
                let Some((idx, url)) = f.dead_hop.and_then(|i| hops.get(i)) else {
                    return Err(f);
                };
                log::info!(
                    "dynamic chain {}: skipping dead hop {}: {}",
                    chain.name,
                    url.masked(),
                    f.msg
                );
                rt.mark_dead(chain, *idx);
                tries -= 1;
            }
            r => return r,
        }
    }
}
