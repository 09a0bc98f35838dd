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

/// When a listening socket asks the proxy to BIND: `auto` (default), `always` or `never`.
pub const ENV_BIND: &str = "PROXIFY_BIND";

/// When `listen()` turns into a SOCKS BIND (see the README, "BIND").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindPolicy {
    /// When the process has a proxied connection and the socket is bound to an ephemeral port
    /// on a non-loopback address (servers on fixed ports stay local).
    #[default]
    Auto,
    /// Every non-loopback listening socket.
    Always,
    /// Never: listening sockets stay local.
    Never,
}

impl BindPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            BindPolicy::Auto => "auto",
            BindPolicy::Always => "always",
            BindPolicy::Never => "never",
        }
    }
}

impl std::str::FromStr for BindPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BindPolicy::Auto),
            "always" => Ok(BindPolicy::Always),
            "never" => Ok(BindPolicy::Never),
            _ => Err(format!(
                "\"{}\" is not auto, always or never",
                s.chars().take(40).collect::<String>().escape_debug()
            )),
        }
    }
}

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
    pub bind: BindPolicy,
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
            bind: BindPolicy::Auto,
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
///
/// Plain decimal notation only (no sign, exponent, `inf` or `nan`); digits past nanoseconds
/// are dropped. Exact: `format_seconds(parse_seconds(s))` gives the value back.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (int, frac) = match t.find('.') {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(format!(
            "\"{}\" is not a number of seconds (e.g. 5 or 0.5)",
            t.chars().take(40).collect::<String>().escape_debug()
        ));
    }
    let int_trimmed = int.trim_start_matches('0');
    let secs: u64 = if int_trimmed.is_empty() {
        0
    } else if int_trimmed.len() > 5 {
        u64::MAX
    } else {
        int_trimmed.parse().unwrap_or(u64::MAX)
    };
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if secs > 3600 || (secs == 3600 && nanos > 0) {
        return Err(format!("{t} seconds is too long (at most 3600)"));
    }
    if secs == 0 && nanos == 0 {
        return Err("a timeout must be more than 0 seconds".to_string());
    }
    Ok(Duration::new(secs, nanos))
}

/// Seconds in the notation [`parse_seconds`] reads: `5`, `0.25`, `1.000000001`.
pub fn format_seconds(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return d.as_secs().to_string();
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}", d.as_secs(), frac.trim_end_matches('0'))
}

/// The variable's value, with empty (or blank) meaning unset.
fn var(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name).filter(|v| !v.trim().is_empty())
}

impl Config {
    /// Reads the `PROXIFY_*` variables through `get` (so tests need not touch the process
    /// environment). Unset variables keep their defaults.
    ///
    /// An empty variable counts as unset. `PROXIFY_PROXY` may hold several URLs separated by
    /// `,` (a chain, first hop first); `PROXIFY_DIRECT` is a `,`-separated list of CIDR blocks
    /// (blanks and empty items ignored); `PROXIFY_QUIET` is `1`/`true`/`yes` or
    /// `0`/`false`/`no`. Error messages name the variable and never contain a password.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = var(&get, ENV_PROXY) {
            let items: Vec<&str> = v.split(',').map(str::trim).collect();
            let many = items.len() > 1;
            for (i, item) in items.into_iter().enumerate() {
                if item.is_empty() {
                    return Err(ConfigError(format!(
                        "{ENV_PROXY}: empty proxy URL in the list (entry {})",
                        i + 1
                    )));
                }
                let url: ProxyUrl = item.parse().map_err(|e| {
                    if many {
                        ConfigError(format!("{ENV_PROXY} (entry {}): {e}", i + 1))
                    } else {
                        ConfigError(format!("{ENV_PROXY}: {e}"))
                    }
                })?;
                c.proxies.push(url);
            }
        }
        if let Some(v) = var(&get, ENV_DIRECT) {
            for item in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                let cidr: Cidr = item
                    .parse()
                    .map_err(|e| ConfigError(format!("{ENV_DIRECT}: {e}")))?;
                c.direct.push(cidr);
            }
        }
        if let Some(v) = var(&get, ENV_CONNECT_TIMEOUT) {
            c.connect_timeout = parse_seconds(&v)
                .map_err(|e| ConfigError(format!("{ENV_CONNECT_TIMEOUT}: {e}")))?;
        }
        if let Some(v) = var(&get, ENV_HANDSHAKE_TIMEOUT) {
            c.handshake_timeout = parse_seconds(&v)
                .map_err(|e| ConfigError(format!("{ENV_HANDSHAKE_TIMEOUT}: {e}")))?;
        }
        c.log = var(&get, ENV_LOG);
        c.log_file = var(&get, ENV_LOG_FILE);
        if let Some(v) = get(ENV_QUIET) {
            c.quiet = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => {
                    return Err(ConfigError(format!(
                        "{ENV_QUIET}: \"{}\" is not 1/true/yes or 0/false/no",
                        v.chars().take(40).collect::<String>().escape_debug()
                    )))
                }
            };
        }
        if let Some(v) = var(&get, ENV_BIND) {
            c.bind = v
                .parse()
                .map_err(|e| ConfigError(format!("{ENV_BIND}: {e}")))?;
        }
        Ok(c)
    }
    /// The variables that reproduce this configuration in [`Config::from_env_with`]; a `None`
    /// value means "remove the variable".
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        let join = |items: Vec<String>| {
            if items.is_empty() {
                None
            } else {
                Some(items.join(","))
            }
        };
        vec![
            (
                ENV_PROXY,
                join(self.proxies.iter().map(ProxyUrl::to_url_string).collect()),
            ),
            (
                ENV_DIRECT,
                join(self.direct.iter().map(ToString::to_string).collect()),
            ),
            (
                ENV_CONNECT_TIMEOUT,
                Some(format_seconds(self.connect_timeout)),
            ),
            (
                ENV_HANDSHAKE_TIMEOUT,
                Some(format_seconds(self.handshake_timeout)),
            ),
            (ENV_LOG, self.log.clone().filter(|s| !s.is_empty())),
            (
                ENV_LOG_FILE,
                self.log_file.clone().filter(|s| !s.is_empty()),
            ),
            (
                ENV_QUIET,
                Some(if self.quiet { "1" } else { "0" }.to_string()),
            ),
            (ENV_BIND, Some(self.bind.as_str().to_string())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn from_vars(vars: Vec<(&'static str, Option<String>)>) -> Config {
        let m: HashMap<&str, String> = vars
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        Config::from_env_with(|k| m.get(k).cloned()).unwrap()
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_seconds(".25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("2."), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds(" 3600 "), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_seconds("0.000000001"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_seconds("1.0000000019"), Ok(Duration::new(1, 1)));
        assert_eq!(parse_seconds("0005"), Ok(Duration::from_secs(5)));
        for bad in [
            "",
            ".",
            "0",
            "0.0",
            "-1",
            "+1",
            "1e3",
            "inf",
            "nan",
            "3600.1",
            "3601",
            "99999999999999999999999",
            "1.2.3",
            "abc",
            "5s",
            "0.0000000001",
        ] {
            let e = parse_seconds(bad).unwrap_err();
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?}");
        }
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(1500),
            Duration::new(0, 1),
            Duration::new(3599, 999_999_999),
            Duration::new(12, 340_000_000),
        ] {
            assert_eq!(parse_seconds(&format_seconds(d)), Ok(d));
        }
        assert_eq!(format_seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(format_seconds(Duration::from_secs(7)), "7");
    }

    #[test]
    fn defaults_when_unset_or_empty() {
        assert_eq!(Config::from_env_with(|_| None).unwrap(), Config::default());
        let all_empty = Config::from_env_with(|_| Some(String::new())).unwrap();
        assert_eq!(all_empty, Config::default());
    }

    #[test]
    fn reads_everything() {
        let c = Config::from_env_with(env(&[
            (
                ENV_PROXY,
                "socks5h://u:p%40ss@proxy.example:1081, socks4://192.0.2.1",
            ),
            (ENV_DIRECT, " 10.0.0.0/8 ,2001:db8::/32,, 192.0.2.7 "),
            (ENV_CONNECT_TIMEOUT, "2.5"),
            (ENV_HANDSHAKE_TIMEOUT, "7"),
            (ENV_LOG, "debug"),
            (ENV_LOG_FILE, "/tmp/x.log"),
            (ENV_QUIET, "Yes"),
        ]))
        .unwrap();
        assert_eq!(c.proxies.len(), 2);
        assert_eq!(c.proxies[0].pass.as_deref(), Some(&b"p@ss"[..]));
        assert_eq!(c.proxies[0].port, 1081);
        assert_eq!(c.proxies[1].port, 1080);
        assert_eq!(
            c.direct.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]
        );
        assert_eq!(c.connect_timeout, Duration::from_millis(2500));
        assert_eq!(c.handshake_timeout, Duration::from_secs(7));
        assert_eq!(c.log.as_deref(), Some("debug"));
        assert_eq!(c.log_file.as_deref(), Some("/tmp/x.log"));
        assert!(c.quiet);
    }

    #[test]
    fn quiet_values() {
        for (v, want) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("0", false),
            ("false", false),
            ("No", false),
            ("", false),
        ] {
            let c = Config::from_env_with(env(&[(ENV_QUIET, v)])).unwrap();
            assert_eq!(c.quiet, want, "{v:?}");
        }
        let e = Config::from_env_with(env(&[(ENV_QUIET, "maybe")])).unwrap_err();
        assert!(e.0.contains(ENV_QUIET) && e.0.contains("maybe"), "{e}");
    }

    #[test]
    fn errors_name_the_variable_and_hide_passwords() {
        let cases = [
            (ENV_PROXY, "http://u:hunter2@proxy"),
            (ENV_PROXY, "socks5://u:hunter2@proxy:0"),
            (ENV_PROXY, "socks5://u:hunter2%zz@proxy"),
            (ENV_PROXY, "socks5://u:hunter2@proxy,,socks5://proxy2"),
            (ENV_PROXY, "socks5://proxy,socks5://u:hunter2@:1"),
            (ENV_DIRECT, "10.0.0.0/8,bogus"),
            (ENV_CONNECT_TIMEOUT, "soon"),
            (ENV_HANDSHAKE_TIMEOUT, "0"),
            (ENV_QUIET, "2"),
        ];
        for (k, v) in cases {
            let e = Config::from_env_with(env(&[(k, v)])).unwrap_err();
            assert!(e.0.starts_with(k), "{e}");
            assert!(!e.0.contains("hunter2"), "{e}");
            assert!(!e.0.contains('\n'), "{e}");
        }
        let e =
            Config::from_env_with(env(&[(ENV_PROXY, "socks5://a,socks5://b:99999")])).unwrap_err();
        assert!(e.0.contains("entry 2"), "{e}");
    }

    #[test]
    fn env_round_trip() {
        let default = Config::default();
        assert_eq!(from_vars(default.to_env()), default);
        let full = Config {
            proxies: vec![
                "socks5h://us%3Aer:p%40ss%2Cw%2F0rd%25@[2001:db8::1]:1081?pipeline=1"
                    .parse()
                    .unwrap(),
                "SOCKS4A://ident@proxy.example".parse().unwrap(),
                "socks5://192.0.2.1:9050/".parse().unwrap(),
            ],
            direct: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            connect_timeout: Duration::from_millis(1250),
            handshake_timeout: Duration::new(3, 1),
            log: Some("proxify=debug,warn".to_string()),
            log_file: Some("/tmp/proxify test.log".to_string()),
            quiet: true,
            bind: BindPolicy::Always,
        };
        let vars = full.to_env();
        for k in [
            ENV_PROXY,
            ENV_DIRECT,
            ENV_CONNECT_TIMEOUT,
            ENV_HANDSHAKE_TIMEOUT,
            ENV_LOG,
            ENV_LOG_FILE,
            ENV_QUIET,
            ENV_BIND,
        ] {
            assert!(vars.iter().any(|(n, _)| *n == k), "{k} missing from to_env");
        }
        assert_eq!(from_vars(vars), full);
        let partial = Config {
            quiet: false,
            log: None,
            ..full.clone()
        };
        assert_eq!(from_vars(partial.to_env()), partial);
        let e = Config::from_env_with(env(&[(ENV_BIND, "sometimes")])).unwrap_err();
        assert!(e.0.contains(ENV_BIND), "{e}");
        let c = Config::from_env_with(env(&[(ENV_BIND, " Never ")])).unwrap();
        assert_eq!(c.bind, BindPolicy::Never);
    }
}
