//! The effective settings: flags > `PROXIFY_*` environment > configuration file > defaults,
//! with where each value came from (for `proxify config`).
//!
//! The file is `-f FILE` (proxify TOML or a proxychains.conf, told apart by a `[ProxyList]`
//! line unless the name ends in `.toml`), the proxychains.conf proxychains would read
//! (`--proxychains`), or else the first of `$XDG_CONFIG_HOME/proxify/config.toml` (or
//! `~/.config/...`) and `/etc/proxify/config.toml` that exists (one open attempt each).
//!
//! The default chain: `-x` hops (a strict chain unless `--chain-mode`), else `PROXIFY_PROXY`
//! (mode from the `default` line of `PROXIFY_CHAINS`), else the file's. Named chains: those
//! of `PROXIFY_CHAINS` replace the file's of the same name. Lists (`--rule`, `--direct`,
//! `--dnat`) replace the environment's, which replace the file's. `NO_PROXY`/`no_proxy`
//! entries become `direct` rules after all others (`--ignore-no-proxy` drops them).

use crate::cli::Settings;
use proxify_core::cidr::Cidr;
use proxify_core::config::{
    parse_chains_var, parse_dnat_var, parse_rules_var, parse_seconds, BindPolicy, Chain, ChainMode,
    Config, ENV_BIND, ENV_CHAINS, ENV_CONNECT_TIMEOUT, ENV_DIRECT, ENV_DNAT, ENV_HANDSHAKE_TIMEOUT,
    ENV_LOG, ENV_LOG_FILE, ENV_PROXY, ENV_PROXY_DNS, ENV_QUIET, ENV_REMOTE_DNS_SUBNET, ENV_RULES,
};
use proxify_core::rules::{no_proxy_rules, Dnat, HostMatch, Rule, DEFAULT_CHAIN};
use proxify_core::url::ProxyUrl;
use std::path::PathBuf;
use std::time::Duration;

/// A value and where it came from (`-x`, `env PROXIFY_PROXY`, `FILE:LINE`, `default`).
#[derive(Clone, Debug, PartialEq)]
pub struct Src<T> {
    pub value: T,
    pub from: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Toml,
    Proxychains,
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Toml => "proxify TOML",
            FileKind::Proxychains => "proxychains.conf",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Toml => "toml",
            FileKind::Proxychains => "proxychains",
        }
    }
}

/// What a configuration file sets; `None`/empty = not set there.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSettings {
    pub path: String,
    pub kind: FileKind,
    /// The default chain (`proxy = ...`, `[[chain]] name = "default"`, `[ProxyList]`).
    pub default_chain: Option<Src<Chain>>,
    /// Where its mode came from (`None`: not written, strict).
    pub default_mode_from: Option<String>,
    /// Where each of its hops came from.
    pub hops_from: Vec<String>,
    /// The other chains.
    pub chains: Vec<Src<Chain>>,
    /// Rules, each with its origin (`FILE:LINE`).
    pub rules: Vec<Rule>,
    pub dnat: Vec<Src<Dnat>>,
    pub direct: Option<Src<Vec<Cidr>>>,
    pub connect_timeout: Option<Src<Duration>>,
    pub handshake_timeout: Option<Src<Duration>>,
    pub log: Option<Src<String>>,
    pub log_file: Option<Src<String>>,
    pub quiet: Option<Src<bool>>,
    pub bind: Option<Src<BindPolicy>>,
    pub proxy_dns: Option<Src<bool>>,
    /// A proxychains.conf without `proxy_dns`: off, but only for the file's own proxies.
    pub proxy_dns_implicit: bool,
    pub remote_dns_subnet: Option<Src<Cidr>>,
}

impl FileSettings {
    pub fn new(path: &str, kind: FileKind) -> FileSettings {
        FileSettings {
            path: path.to_string(),
            kind,
            default_chain: None,
            default_mode_from: None,
            hops_from: Vec::new(),
            chains: Vec::new(),
            rules: Vec::new(),
            dnat: Vec::new(),
            direct: None,
            connect_timeout: None,
            handshake_timeout: None,
            log: None,
            log_file: None,
            quiet: None,
            bind: None,
            proxy_dns: None,
            proxy_dns_implicit: false,
            remote_dns_subnet: None,
        }
    }
}

/// Where each effective value came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sources {
    /// Each hop of the default chain.
    pub hops: Vec<String>,
    /// The default chain's mode and length.
    pub mode: String,
    /// Each chain of `Config::chains` (the default one included), by name.
    pub chains: Vec<(String, String)>,
    /// Each dnat entry.
    pub dnat: Vec<String>,
    pub direct: String,
    pub connect_timeout: String,
    pub handshake_timeout: String,
    pub log: String,
    pub log_file: String,
    pub quiet: String,
    pub bind: String,
    pub proxy_dns: String,
    pub remote_dns_subnet: String,
}

#[derive(Clone, Debug)]
pub struct Effective {
    pub config: Config,
    /// The configuration file read, if any.
    pub file: Option<(String, FileKind)>,
    /// The default places looked at when no file was given (and none was found).
    pub searched: Vec<String>,
    pub from: Sources,
    /// One-line warnings for the user (not errors).
    pub warnings: Vec<String>,
}

const DEFAULT: &str = "default";
pub const ENV_PROXYCHAINS_CONF: &str = "PROXYCHAINS_CONF_FILE";

fn env_src(var: &str) -> String {
    format!("env {var}")
}

/// The default TOML locations, in order.
pub fn default_paths() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".config"))
    });
    if let Some(b) = base {
        v.push(b.join("proxify").join("config.toml"));
    }
    v.push(PathBuf::from("/etc/proxify/config.toml"));
    v
}

/// Where proxychains-ng looks for its file, in its order: `$PROXYCHAINS_CONF_FILE`,
/// `./proxychains.conf`, `$HOME/.proxychains/proxychains.conf`, `/etc/proxychains.conf`,
/// `/etc/proxychains4.conf`.
pub fn proxychains_paths() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("proxychains.conf")];
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        v.push(PathBuf::from(h).join(".proxychains/proxychains.conf"));
    }
    v.push(PathBuf::from("/etc/proxychains.conf"));
    v.push(PathBuf::from("/etc/proxychains4.conf"));
    v
}

fn find_proxychains() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(ENV_PROXYCHAINS_CONF).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let paths = proxychains_paths();
    if let Some(p) = paths.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "--proxychains: no proxychains.conf found (looked at ${ENV_PROXYCHAINS_CONF}, {})",
        list.join(", ")
    ))
}

/// Reads the file the settings name, or the first default one that exists.
fn read_file(s: &Settings, searched: &mut Vec<String>) -> Result<Option<FileSettings>, String> {
    use crate::file;
    if s.proxychains {
        let p = find_proxychains()?;
        return file::load(&p, Some(FileKind::Proxychains)).map(Some);
    }
    if let Some(p) = &s.config {
        let kind = (p.extension().is_some_and(|e| e == "toml")).then_some(FileKind::Toml);
        return file::load(p, kind).map(Some);
    }
    for p in default_paths() {
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                return file::parse_as(&p.display().to_string(), &text, Some(FileKind::Toml))
                    .map(Some)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                searched.push(p.display().to_string());
            }
            Err(e) => {
                return Err(format!(
                    "cannot read {}: {}",
                    p.display(),
                    crate::io_error_text(&e)
                ))
            }
        }
    }
    Ok(None)
}

fn env_var(key: &str) -> Result<Option<String>, String> {
    match std::env::var_os(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| format!("{key} is not valid UTF-8")),
    }
}

/// Computes the effective configuration. Errors are one line, without "proxify: ".
pub fn effective(s: &Settings) -> Result<Effective, String> {
    // Flags first: the cheapest to check, and they win anyway.
    let mut flag_hops = Vec::new();
    for (i, raw) in s.proxy.iter().enumerate() {
        let url = raw.parse::<ProxyUrl>().map_err(|e| {
            let e = crate::scrub(&e.to_string(), raw);
            if s.proxy.len() > 1 {
                format!("-x (proxy {}): {e}", i + 1)
            } else {
                format!("-x: {e}")
            }
        })?;
        flag_hops.push(url);
    }
    let flag_mode = match &s.chain_mode {
        Some(m) => Some(
            m.parse::<ChainMode>()
                .map_err(|e| format!("--chain-mode: {e}"))?,
        ),
        None => None,
    };
    let flag_len = match &s.chain_len {
        Some(l) => match l.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                return Err(format!(
                    "--chain-len: \"{}\" is not a number of proxies (1 or more)",
                    l.escape_debug()
                ))
            }
        },
        None => None,
    };
    let mut flag_rules = Vec::new();
    for raw in &s.rule {
        let mut r: Rule = raw.parse().map_err(|e| format!("--rule: {e}"))?;
        r.origin = Some("--rule".to_string());
        flag_rules.push(r);
    }
    let mut flag_direct = Vec::new();
    for raw in &s.direct {
        flag_direct.push(raw.parse::<Cidr>().map_err(|e| format!("--direct: {e}"))?);
    }
    let mut flag_dnat = Vec::new();
    for raw in &s.dnat {
        flag_dnat.push(raw.parse::<Dnat>().map_err(|e| format!("--dnat: {e}"))?);
    }
    let seconds = |flag: &str, v: &Option<String>| match v {
        Some(x) => parse_seconds(x)
            .map(Some)
            .map_err(|e| format!("{flag}: {e}")),
        None => Ok(None),
    };
    let flag_connect_timeout = seconds("--connect-timeout", &s.connect_timeout)?;
    let flag_timeout = seconds("--timeout", &s.timeout)?;
    let flag_bind = match &s.bind {
        Some(b) => Some(
            b.parse::<BindPolicy>()
                .map_err(|e| format!("--bind: {e}"))?,
        ),
        None => None,
    };
    let flag_log = match s.verbose {
        0 => None,
        1 => Some("info"),
        2 => Some("debug"),
        _ => Some("trace"),
    };
    // -q and -v both decide the log settings; clap rejects them together.
    let flag_sets_log = s.quiet || flag_log.is_some();

    // The file: read and checked whole, whatever overrides it.
    let mut searched = Vec::new();
    let file = read_file(s, &mut searched)?;

    // The environment, except the variables a flag overrides. Empty counts as unset.
    let overridden = |key: &str| match key {
        ENV_PROXY => !flag_hops.is_empty(),
        ENV_DIRECT => !flag_direct.is_empty(),
        ENV_RULES => !flag_rules.is_empty(),
        ENV_DNAT => !flag_dnat.is_empty(),
        ENV_CONNECT_TIMEOUT => flag_connect_timeout.is_some(),
        ENV_HANDSHAKE_TIMEOUT => flag_timeout.is_some(),
        ENV_BIND => flag_bind.is_some(),
        ENV_LOG | ENV_QUIET => flag_sets_log,
        _ => false,
    };
    let mut env: Vec<(&str, String)> = Vec::new();
    for key in [
        ENV_PROXY,
        ENV_DIRECT,
        ENV_CONNECT_TIMEOUT,
        ENV_HANDSHAKE_TIMEOUT,
        ENV_LOG,
        ENV_LOG_FILE,
        ENV_QUIET,
        ENV_BIND,
        ENV_PROXY_DNS,
        ENV_REMOTE_DNS_SUBNET,
        ENV_CHAINS,
        ENV_RULES,
        ENV_DNAT,
    ] {
        if !overridden(key) {
            if let Some(v) = env_var(key)? {
                env.push((key, v));
            }
        }
    }
    let get = |key: &str| -> Option<String> {
        env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    };
    // The single-value variables (the lists are read apart: they may name chains the
    // file defines).
    let from_env = Config::from_env_with(|key| match key {
        ENV_CHAINS | ENV_RULES | ENV_DNAT => None,
        k => get(k),
    })
    .map_err(|e| {
        let mut msg = e.to_string();
        if let Some(list) = get(ENV_PROXY) {
            for raw in list.split(',') {
                msg = crate::scrub(&msg, raw.trim());
            }
        }
        msg
    })?;
    let (env_default_mode, env_chains) = match get(ENV_CHAINS) {
        Some(v) => parse_chains_var(&v).map_err(|e| e.to_string())?,
        None => (None, Vec::new()),
    };
    let env_rules = get(ENV_RULES)
        .map(|v| parse_rules_var(&v))
        .transpose()
        .map_err(|e| e.to_string())?;
    let env_dnat = get(ENV_DNAT)
        .map(|v| parse_dnat_var(&v))
        .transpose()
        .map_err(|e| e.to_string())?;
    let has = |key: &str| get(key).is_some();

    let mut cfg = Config::default();
    let mut from = Sources {
        mode: DEFAULT.into(),
        direct: DEFAULT.into(),
        connect_timeout: DEFAULT.into(),
        handshake_timeout: DEFAULT.into(),
        log: DEFAULT.into(),
        log_file: DEFAULT.into(),
        quiet: DEFAULT.into(),
        bind: DEFAULT.into(),
        proxy_dns: DEFAULT.into(),
        remote_dns_subnet: DEFAULT.into(),
        ..Sources::default()
    };
    let mut warnings = Vec::new();

    // The default chain.
    let file_default = file.as_ref().and_then(|f| f.default_chain.as_ref());
    let mut default_from_file = false;
    let default_chain: Option<Chain> = if !flag_hops.is_empty() {
        from.hops = vec!["-x".to_string(); flag_hops.len()];
        Some(Chain::strict(DEFAULT_CHAIN, flag_hops))
    } else if has(ENV_PROXY) {
        from.hops = vec![env_src(ENV_PROXY); from_env.proxies.len()];
        let mut c = Chain::strict(DEFAULT_CHAIN, from_env.proxies.clone());
        if let Some((mode, len)) = env_default_mode {
            c.mode = mode;
            c.chain_len = len;
            from.mode = env_src(ENV_CHAINS);
        }
        Some(c)
    } else if let (Some(c), Some(f)) = (file_default, &file) {
        default_from_file = true;
        from.hops = f.hops_from.clone();
        if let Some(m) = &f.default_mode_from {
            from.mode = m.clone();
        }
        Some(c.value.clone())
    } else {
        None
    };
    if let Some(mut c) = default_chain {
        let mut mode_from = vec![];
        if let Some(m) = flag_mode {
            c.mode = m;
            mode_from.push("--chain-mode");
        }
        if let Some(l) = flag_len {
            if !c.mode.uses_chain_len() {
                return Err(format!(
                    "--chain-len counts only for random and round_robin chains (the chain is {}; use --chain-mode)",
                    c.mode.as_str()
                ));
            }
            c.chain_len = l;
            mode_from.push("--chain-len");
        }
        if !c.mode.uses_chain_len() {
            c.chain_len = 1;
        }
        if !mode_from.is_empty() {
            from.mode = mode_from.join(" ");
        }
        c.check().map_err(|e| {
            format!(
                "{e} (proxies from {}, mode from {})",
                from.hops[0], from.mode
            )
        })?;
        from.chains
            .push((DEFAULT_CHAIN.to_string(), from.mode.clone()));
        cfg.chains.push(c);
    } else if flag_mode.is_some() || flag_len.is_some() {
        return Err("--chain-mode and --chain-len need proxies (-x URL)".to_string());
    }

    // Named chains: the environment's replace the file's of the same name.
    if let Some(f) = &file {
        for c in &f.chains {
            if !env_chains.iter().any(|e| e.name == c.value.name) {
                cfg.chains.push(c.value.clone());
                from.chains.push((c.value.name.clone(), c.from.clone()));
            }
        }
    }
    for c in env_chains {
        c.check().map_err(|e| format!("{ENV_CHAINS}: {e}"))?;
        from.chains.push((c.name.clone(), env_src(ENV_CHAINS)));
        cfg.chains.push(c);
    }

    // Rules, then NO_PROXY.
    cfg.rules.rules = if !flag_rules.is_empty() {
        flag_rules
    } else if let Some(r) = env_rules {
        r.into_iter()
            .map(|mut r| {
                r.origin.get_or_insert_with(|| env_src(ENV_RULES));
                r
            })
            .collect()
    } else {
        file.as_ref().map(|f| f.rules.clone()).unwrap_or_default()
    };
    if !s.ignore_no_proxy {
        for key in ["no_proxy", "NO_PROXY"] {
            if let Some(v) = env_var(key)? {
                let rules = no_proxy_rules(&v, &env_src(key)).map_err(|e| {
                    format!("{key}: {e} (use --ignore-no-proxy to ignore the variable)")
                })?;
                if rules
                    .iter()
                    .any(|r| r.pattern.host == HostMatch::Any && r.pattern.ports.is_none())
                {
                    warnings.push(format!(
                        "warning: {key} contains '*': every connection goes directly, not through \
                         the proxy (use --ignore-no-proxy to ignore it)"
                    ));
                }
                cfg.rules.rules.extend(rules);
                // curl's order: no_proxy, else NO_PROXY.
                break;
            }
        }
    }

    // dnat.
    let (dnat, dnat_from): (Vec<Dnat>, Vec<String>) = if !flag_dnat.is_empty() {
        let n = flag_dnat.len();
        (flag_dnat, vec!["--dnat".into(); n])
    } else if let Some(d) = env_dnat {
        let n = d.len();
        (d, vec![env_src(ENV_DNAT); n])
    } else {
        file.as_ref()
            .map(|f| f.dnat.iter().map(|d| (d.value, d.from.clone())).unzip())
            .unwrap_or_default()
    };
    cfg.rules.dnat = dnat;
    from.dnat = dnat_from;

    // Single values: flag, else environment, else file.
    macro_rules! pick {
        ($field:ident, $src:ident, $flag:expr, $flag_name:expr, $env_key:expr, $file_field:ident) => {
            if let Some(v) = $flag {
                cfg.$field = v;
                from.$src = $flag_name.to_string();
            } else if has($env_key) {
                cfg.$field = from_env.$field.clone();
                from.$src = env_src($env_key);
            } else if let Some(v) = file.as_ref().and_then(|f| f.$file_field.as_ref()) {
                cfg.$field = v.value.clone();
                from.$src = v.from.clone();
            }
        };
    }
    pick!(
        direct,
        direct,
        (!flag_direct.is_empty()).then_some(flag_direct),
        "--direct",
        ENV_DIRECT,
        direct
    );
    pick!(
        connect_timeout,
        connect_timeout,
        flag_connect_timeout,
        "--connect-timeout",
        ENV_CONNECT_TIMEOUT,
        connect_timeout
    );
    pick!(
        handshake_timeout,
        handshake_timeout,
        flag_timeout,
        "--timeout",
        ENV_HANDSHAKE_TIMEOUT,
        handshake_timeout
    );
    pick!(bind, bind, flag_bind, "--bind", ENV_BIND, bind);
    if has(ENV_LOG_FILE) {
        cfg.log_file = from_env.log_file.clone();
        from.log_file = env_src(ENV_LOG_FILE);
    } else if let Some(v) = file.as_ref().and_then(|f| f.log_file.as_ref()) {
        cfg.log_file = Some(v.value.clone());
        from.log_file = v.from.clone();
    }
    if s.quiet {
        cfg.quiet = true;
        cfg.log = None;
        from.quiet = "-q".into();
        from.log = "-q".into();
    } else if let Some(level) = flag_log {
        cfg.quiet = false;
        cfg.log = Some(level.to_string());
        from.quiet = "-v".into();
        from.log = "-v".into();
    } else {
        if has(ENV_QUIET) {
            cfg.quiet = from_env.quiet;
            from.quiet = env_src(ENV_QUIET);
        } else if let Some(v) = file.as_ref().and_then(|f| f.quiet.as_ref()) {
            cfg.quiet = v.value;
            from.quiet = v.from.clone();
        }
        if has(ENV_LOG) {
            cfg.log = from_env.log.clone();
            from.log = env_src(ENV_LOG);
        } else if let Some(v) = file.as_ref().and_then(|f| f.log.as_ref()) {
            cfg.log = Some(v.value.clone());
            from.log = v.from.clone();
        }
    }
    if has(ENV_PROXY_DNS) {
        cfg.proxy_dns = from_env.proxy_dns;
        from.proxy_dns = env_src(ENV_PROXY_DNS);
    } else if let Some(v) = file.as_ref().and_then(|f| f.proxy_dns.as_ref()) {
        // A proxychains.conf without proxy_dns only speaks for its own proxies.
        if default_from_file || !file.as_ref().is_some_and(|f| f.proxy_dns_implicit) {
            cfg.proxy_dns = Some(v.value);
            from.proxy_dns = v.from.clone();
        }
    }
    if cfg.proxy_dns.is_none() {
        from.proxy_dns = "default (by the proxy URL schemes)".to_string();
    }
    if has(ENV_REMOTE_DNS_SUBNET) {
        cfg.remote_dns_subnet = from_env.remote_dns_subnet;
        from.remote_dns_subnet = env_src(ENV_REMOTE_DNS_SUBNET);
    } else if let Some(v) = file.as_ref().and_then(|f| f.remote_dns_subnet.as_ref()) {
        cfg.remote_dns_subnet = Some(v.value);
        from.remote_dns_subnet = v.from.clone();
    }

    cfg.sync_default_chain();
    // Names unique, rules naming defined chains...
    cfg.check()?;
    Ok(Effective {
        config: cfg,
        file: file.map(|f| (f.path, f.kind)),
        searched,
        from,
        warnings,
    })
}
