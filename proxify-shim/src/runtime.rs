//! Process-wide state: the configuration read from the environment, the proxy's addresses,
//! the logger, and the test-only fault injection.

use proxify_core::config::{Config, ENV_LOG, ENV_LOG_FILE};
use proxify_core::url::{Host, ProxyUrl};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// Faults a test can inject with `PROXIFY_TEST_FAULT` to prove that internal failures fail
/// closed. Harmless for users: each one only makes a call fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    PanicConnect,
    PanicResolve,
}

pub struct Runtime {
    pub config: Result<Config, String>,
    pub fault: Fault,
    proxy_addrs: OnceLock<Result<Vec<SocketAddr>, String>>,
}

static RT: OnceLock<Runtime> = OnceLock::new();

/// The runtime, built on first use (normally by the constructor, before any thread exists).
pub fn get() -> &'static Runtime {
    RT.get_or_init(build)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn build() -> Runtime {
    crate::guard::install_panic_hook();
    let config = Config::from_env_with(env).map_err(|e| e.to_string());
    let quiet = config.as_ref().map(|c| c.quiet).unwrap_or(false);
    init_logger(quiet);
    let config = config.and_then(|c| {
        if c.proxies.len() > 1 {
            Err("proxy chains (several proxies) are not supported yet".to_string())
        } else if c.proxies.is_empty() {
            Err("no proxy configured (set PROXIFY_PROXY or use `proxify run -x URL`)".to_string())
        } else {
            Ok(c)
        }
    });
    if let Err(e) = &config {
        log::debug!("configuration unusable, every non-direct connection will be refused: {e}");
    }
    let fault = match env("PROXIFY_TEST_FAULT").as_deref() {
        Some("panic-connect") => Fault::PanicConnect,
        Some("panic-resolve") => Fault::PanicResolve,
        _ => Fault::None,
    };
    Runtime {
        config,
        fault,
        proxy_addrs: OnceLock::new(),
    }
}

impl Runtime {
    pub fn proxy(&self) -> Result<&ProxyUrl, &str> {
        match &self.config {
            Ok(c) => c.proxies.first().ok_or("no proxy configured"),
            Err(e) => Err(e.as_str()),
        }
    }

    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref().ok()
    }

    /// Remote DNS is on when the (first) proxy resolves names. With an unusable configuration
    /// names are not resolved locally either: fail closed.
    pub fn remote_dns(&self) -> bool {
        match self.proxy() {
            Ok(p) => p.scheme.remote_dns(),
            Err(_) => true,
        }
    }

    /// The proxy's socket addresses, resolved once. A proxy given by name is resolved with the
    /// system resolver (the proxy's own name is the one name that must be resolved locally).
    pub fn proxy_addrs(&self) -> Result<&[SocketAddr], String> {
        let r = self.proxy_addrs.get_or_init(|| {
            let p = self.proxy().map_err(str::to_string)?;
            match &p.host {
                Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, p.port)]),
                Host::Name(n) => crate::hooks::dns::resolve_locally(n, p.port)
                    .map_err(|e| format!("cannot resolve proxy host {n}: {e}")),
            }
        });
        r.as_deref().map_err(Clone::clone)
    }
}

/// Logger: silent but for warnings (the one line when something is wrong) unless
/// `PROXIFY_LOG` asks for more; nothing at all when quiet.
fn init_logger(quiet: bool) {
    let filter = if quiet {
        "off".to_string()
    } else {
        env(ENV_LOG).unwrap_or_else(|| "warn".to_string())
    };
    let mut b = env_logger::Builder::new();
    b.parse_filters(&filter);
    let pid = std::process::id();
    b.format(move |buf, rec| match rec.level() {
        log::Level::Error | log::Level::Warn => writeln!(buf, "proxify: {}", rec.args()),
        l => writeln!(
            buf,
            "proxify[{pid}] {}: {}",
            l.as_str().to_ascii_lowercase(),
            rec.args()
        ),
    });
    if let Some(path) = env(ENV_LOG_FILE) {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => {
                b.target(env_logger::Target::Pipe(Box::new(f)));
            }
            Err(e) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "proxify: cannot open log file {path}: {e}; logging to stderr"
                );
            }
        }
    }
    let _ = b.try_init();
}
