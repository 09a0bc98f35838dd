//! Process-wide state: the configuration read from the environment, the proxy's addresses,
//! the logger, and the test-only fault injection.

use crate::sys::lock::ForkSafeMutex;
use proxify_core::config::{Chain, Config, ENV_LOG, ENV_LOG_FILE, ENV_TRACE_MAX};
use proxify_core::url::{Host, ProxyUrl};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Faults a test can inject with `PROXIFY_TEST_FAULT` to prove that internal failures fail
/// closed. Harmless for users: each one only makes a call fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    PanicConnect,
    PanicResolve,
    /// Every new entry of the fd table fails, as when an fd lies beyond it or its chunk
    /// cannot be allocated (issue 14 item 12): proxied sockets must then fail closed.
    FdTableFull,
}

pub struct Runtime {
    pub config: Result<Config, String>,
    pub fault: Fault,
    /// Some chain resolves names at the proxy (or the configuration is unusable).
    any_remote_dns: bool,
    /// Resolved addresses of proxies given by name (resolved once each, locally), by
    /// `name:port`. Shared slices: a look-up under the lock copies a pointer, not the list.
    hop_addrs: ForkSafeMutex<Option<HashMap<String, Arc<[SocketAddr]>>>>,
    /// Dynamic chains: a hop found dead is skipped until this time (ms since the epoch), per
    /// (chain, hop) in `config.chains` order; lock-free, shared by all threads.
    dead_until: Vec<Vec<AtomicU64>>,
    /// Round-robin chains: where the next connection starts.
    rr_next: Vec<AtomicUsize>,
    /// `PROXIFY_CRED_FROM`: where each hop's credentials came from.
    cred_from: Option<String>,
}

static RT: OnceLock<Runtime> = OnceLock::new();

/// A hop found dead is skipped by dynamic chains for this long.
const DEAD_FOR_MS: u64 = proxify_core::hops::DEAD_FOR.as_millis() as u64;

pub(crate) fn fork_prepare() {
    if let Some(rt) = RT.get() {
        rt.hop_addrs.raw_lock();
    }
}

pub(crate) fn fork_release() {
    if let Some(rt) = RT.get() {
        // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
        unsafe { rt.hop_addrs.raw_unlock() };
    }
}

/// The runtime, built on first use (normally by the constructor, before any thread exists).
pub fn get() -> &'static Runtime {
    RT.get_or_init(build)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn build() -> Runtime {
    crate::sys::guard::install_panic_hook();
    let config = Config::from_env_with(env).map_err(|e| e.to_string());
    let quiet = config.as_ref().map(|c| c.quiet).unwrap_or(false);
    init_logger(quiet);
    if let Ok(Config {
        trace: Some(path), ..
    }) = &config
    {
        init_trace(path);
    }
    let config = config.and_then(|c| {
        if c.chains.iter().all(|ch| ch.hops.is_empty()) {
            Err("no proxy configured (set PROXIFY_PROXY or use `proxify run -x URL`)".to_string())
        } else {
            Ok(c)
        }
    });
    match &config {
        Err(e) => {
            log::debug!("configuration unusable, every non-direct connection will be refused: {e}")
        }
        Ok(c) => crate::state::fakedns::set_v4_block(c.remote_dns_subnet()),
    }
    crate::state::fakedns::init();
    let fault = match env("PROXIFY_TEST_FAULT").as_deref() {
        Some("panic-connect") => Fault::PanicConnect,
        Some("panic-resolve") => Fault::PanicResolve,
        Some("fdtable-full") => {
            crate::state::fdtable::refuse_new_entries();
            Fault::FdTableFull
        }
        _ => Fault::None,
    };
    let chains = config.as_ref().map(|c| &c.chains[..]).unwrap_or(&[]);
    Runtime {
        any_remote_dns: match &config {
            Ok(c) => c.chains.iter().any(|ch| c.remote_dns(ch)),
            Err(_) => true,
        },
        dead_until: chains
            .iter()
            .map(|c| c.hops.iter().map(|_| AtomicU64::new(0)).collect())
            .collect(),
        rr_next: chains.iter().map(|_| AtomicUsize::new(0)).collect(),
        config,
        fault,
        // Under --enforce, `proxify run` resolved the proxies' names: the system resolver's
        // queries would reach the supervisor's DNS responder, not the resolver.
        hop_addrs: ForkSafeMutex::new(env(proxify_core::config::ENV_HOP_ADDRS).map(|v| {
            proxify_core::config::parse_hop_addrs(&v)
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect()
        })),
        cred_from: env(proxify_core::config::ENV_CRED_FROM),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Small non-cryptographic randomness for random chains.
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = now_ms() ^ ((std::process::id() as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

impl Runtime {
    /// Where the credentials of hop `hop` (in the chain's hops) of `chain` came from, for the
    /// line of a rejected username/password.
    pub fn cred_from(&self, chain: &Chain, hop: usize) -> String {
        proxify_core::config::cred_from(self.cred_from.as_deref(), &chain.name, hop)
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref().ok()
    }

    /// Why nothing can be proxied, when the configuration is unusable.
    pub fn config_error(&self) -> &str {
        match &self.config {
            Ok(_) => "",
            Err(e) => e,
        }
    }

    /// Is remote DNS on for any chain? (Reverse look-ups and `res_*` calls are then answered
    /// without the local resolver.) With an unusable configuration: yes, fail closed.
    #[inline]
    pub fn remote_dns(&self) -> bool {
        self.any_remote_dns
    }

    /// The default chain's first hop (for decisions that have no destination yet).
    pub fn first_hop(&self) -> Option<&ProxyUrl> {
        self.config()?.default_chain()?.hops.first()
    }

    /// The addresses of a hop, resolved once (a proxy's own name is the one name resolved
    /// locally). The lock covers the look-up and the store only: the key, the list and the
    /// map's growth are made before, the resolution and the copy for the caller after.
    pub fn hop_addrs(&self, url: &ProxyUrl) -> Result<Vec<SocketAddr>, String> {
        let name = match &url.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, url.port)]),
            Host::Name(n) => n,
        };
        let key = format!("{name}:{}", url.port);
        let known = self
            .hop_addrs
            .lock()
            .as_ref()
            .and_then(|m| m.get(&key).cloned());
        if let Some(v) = known {
            return Ok(v.to_vec());
        }
        let v = crate::sys::resolve::resolve_locally(name, url.port)
            .map_err(|e| format!("cannot resolve proxy host {name}: {e}"))?;
        let shared: Arc<[SocketAddr]> = v.as_slice().into();
        let replaced = self.hop_addrs.insert(key, shared);
        drop(replaced);
        Ok(v)
    }

    fn chain_index(&self, chain: &Chain) -> Option<usize> {
        self.config()?
            .chains
            .iter()
            .position(|c| std::ptr::eq(c, chain))
    }

    /// The hops one connection through `chain` uses now (strict: all; dynamic: the live ones;
    /// random / round-robin: `chain_len` of them), with their indices in the chain.
    pub fn select_hops(&self, chain: &Chain) -> Vec<(usize, ProxyUrl)> {
        let ci = self.chain_index(chain);
        let now = now_ms();
        proxify_core::hops::select(
            chain,
            |i| {
                ci.and_then(|c| self.dead_until.get(c)?.get(i))
                    .is_some_and(|d| d.load(Ordering::Relaxed) > now)
            },
            |n| (random() % n.max(1) as u64) as usize,
            |len| {
                ci.and_then(|c| self.rr_next.get(c))
                    .map(|n| n.fetch_add(len, Ordering::Relaxed))
                    .unwrap_or(0)
            },
        )
    }

    /// A dynamic chain found hop `hop` of `chain` dead.
    pub fn mark_dead(&self, chain: &Chain, hop: usize) {
        if let Some(d) = self
            .chain_index(chain)
            .and_then(|c| self.dead_until.get(c)?.get(hop))
        {
            d.store(now_ms() + DEAD_FOR_MS, Ordering::Relaxed);
        }
    }
}

/// The trace file (`--trace`), capped at `PROXIFY_TRACE_MAX` bytes.
fn init_trace(path: &str) {
    let cap = env(ENV_TRACE_MAX)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(crate::sys::trace::DEFAULT_CAP);
    if let Err(e) = crate::sys::trace::init(path, cap) {
        log::warn!("cannot open the trace file {path}: {e}; no trace is written");
    }
}

/// Logger: silent but for warnings (the one line when something is wrong) unless
/// `PROXIFY_LOG` asks for more; nothing at all when quiet.
fn init_logger(quiet: bool) {
    use crate::sys::logger;
    let filter = if quiet {
        log::LevelFilter::Off
    } else {
        env(ENV_LOG)
            .map(|f| logger::parse_filter(&f))
            .unwrap_or(log::LevelFilter::Warn)
    };
    let mut fd = 2;
    if let Some(path) = env(ENV_LOG_FILE) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => fd = std::os::fd::IntoRawFd::into_raw_fd(f),
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "proxify: cannot open log file {path}: {e}; logging to stderr"
                );
            }
        }
    }
    logger::init(filter, fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_addrs_look_up_and_store_without_allocating_under_the_lock() {
        let a: SocketAddr = "192.0.2.7:1080".parse().unwrap();
        let rt = Runtime {
            config: Err("test".into()),
            fault: Fault::None,
            any_remote_dns: true,
            hop_addrs: ForkSafeMutex::new(None),
            dead_until: Vec::new(),
            rr_next: Vec::new(),
            cred_from: None,
        };
        drop(
            rt.hop_addrs
                .insert("proxy.test:1080".into(), vec![a].into()),
        );
        let url: ProxyUrl = "socks5://proxy.test:1080".parse().unwrap();
        let (v, n) = crate::sys::lock::audit::count(|| rt.hop_addrs(&url));
        assert_eq!(n, 0, "allocations or frees under hop_addrs' lock");
        assert_eq!(v.unwrap(), vec![a]);
        let url: ProxyUrl = "socks5://192.0.2.8:1081".parse().unwrap();
        assert_eq!(
            rt.hop_addrs(&url).unwrap(),
            vec!["192.0.2.8:1081".parse::<SocketAddr>().unwrap()]
        );
    }
}
