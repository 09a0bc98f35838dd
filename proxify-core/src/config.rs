//! Effective configuration, and how the CLI hands it to the shim: environment variables.
//!
//! The CLI merges flags > environment > file into a [`Config`] and exports it with
//! [`Config::to_env`]; the shim reads it back with [`Config::from_env_with`]. The same
//! variables set by hand (with `LD_PRELOAD=libproxify.so`) work too.

use crate::cidr::Cidr;
use crate::url::ProxyUrl;
use std::time::Duration;

/// Proxy URL (like `-x`). Several, separated by `,`, make a chain (not yet supported).
pub const ENV_PROXY: &str = "PROXIFY_PROXY";
/// Comma-separated CIDR blocks reached directly (like `--direct`).
pub const ENV_DIRECT: &str = "PROXIFY_DIRECT";
/// Seconds (decimal allowed) to wait for the TCP connection to the proxy.
pub const ENV_CONNECT_TIMEOUT: &str = "PROXIFY_CONNECT_TIMEOUT";
/// Seconds (decimal allowed) allowed for the whole SOCKS handshake.
pub const ENV_HANDSHAKE_TIMEOUT: &str = "PROXIFY_TIMEOUT";
/// env_logger filter for the shim's log (default: warnings and errors only).
pub const ENV_LOG: &str = "PROXIFY_LOG";
/// Log to this file instead of stderr.
pub const ENV_LOG_FILE: &str = "PROXIFY_LOG_FILE";
/// `1`: no output at all from the shim, not even the one-line failure notices.
pub const ENV_QUIET: &str = "PROXIFY_QUIET";

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The chain, first hop first. Empty = no proxy configured (the shim then refuses every
    /// connection that is not direct: fail closed).
    pub proxies: Vec<ProxyUrl>,
    pub direct: Vec<Cidr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub log: Option<String>,
    pub log_file: Option<String>,
    pub quiet: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proxies: Vec::new(),
            direct: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            log: None,
            log_file: None,
            quiet: false,
        }
    }
}

/// One line naming the variable (or key) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// Parses a timeout in seconds (`5`, `0.5`); must be > 0 and <= 3600.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let _ = s;
    todo!()
}

impl Config {
    /// Reads the `PROXIFY_*` variables through `get` (so tests need not touch the process
    /// environment). Unset variables keep their defaults.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let _ = get;
        todo!()
    }
    /// The variables that reproduce this configuration in [`Config::from_env_with`]; a `None`
    /// value means "remove the variable".
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        todo!()
    }
}
