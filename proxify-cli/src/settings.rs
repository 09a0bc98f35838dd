//! The effective settings: flags > `PROXIFY_*` environment > configuration file > defaults,
//! with where each value came from (for `proxify config`).
//!
//! Each source becomes a [`Layer`] (what it sets, each value with its origin): [`flags`],
//! [`environment`] and [`file_layer`]; [`merge`] then takes each value from the first layer
//! that sets it. [`effective`] reads the real sources and merges them.
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
//! are ignored unless `--no-proxy-env` (or the file's `no_proxy_env = true`) says to read
//! them; their entries then become `direct` rules after all others.
//!
//! Size: ~1,110 lines, ~340 of them unit tests (10): the three source layers, `merge` (~160
//! lines, one setting after another) and the origins `proxify config` shows all work on one
//! `Layer`, and the precedence rules above are tested against each other here.

use crate::cli::Settings;
use crate::file::{self, FileKind, FileSettings, Src};
use proxify_core::cidr::Cidr;
use proxify_core::config::{
    parse_chains_var, parse_dnat_var, parse_rules_var, BindPolicy, Chain, ChainMode, Config,
    ENV_BIND, ENV_CHAINS, ENV_CONNECT_TIMEOUT, ENV_DIRECT, ENV_DNAT, ENV_DNS_SERVER,
    ENV_HANDSHAKE_TIMEOUT, ENV_LOG, ENV_LOG_FILE, ENV_PROXY, ENV_PROXY_DNS, ENV_QUIET,
    ENV_REMOTE_DNS_SUBNET, ENV_RULES, ENV_TRACE,
};
use proxify_core::rules::{no_proxy_rules, Dnat, HostMatch, Rule, DEFAULT_CHAIN};
use std::path::PathBuf;
use std::time::Duration;

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
    pub trace: String,
    pub dns_server: String,
    pub quiet: String,
    pub bind: String,
    pub proxy_dns: String,
    pub remote_dns_subnet: String,
    /// Whether NO_PROXY/no_proxy were read, and why.
    pub no_proxy_env: String,
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
    /// Whether NO_PROXY/no_proxy were read (`from.no_proxy_env` says why).
    pub no_proxy_env: bool,
    /// The file's `mode` and `enforce` (for [`run_choice`]).
    pub file_mode: Option<Src<String>>,
    pub file_enforce: Option<Src<bool>>,
}

pub const ENV_MODE: &str = "PROXIFY_MODE";
pub const ENV_ENFORCE: &str = "PROXIFY_ENFORCE";

/// How `proxify run` reaches the program: the mode (auto, preload, supervise) and whether it
/// enforces (preload and supervise), each with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RunChoice {
    pub mode: Src<String>,
    pub enforce: Src<bool>,
}

/// `--mode` > `PROXIFY_MODE` > the file's `mode` > auto; `--enforce` > `PROXIFY_ENFORCE` >
/// the file's `enforce` > off. `get` reads a variable as [`environment`]'s does.
pub fn run_choice(
    flag_mode: Option<&str>,
    flag_enforce: bool,
    get: impl Fn(&str) -> Result<Option<String>, String>,
    eff: &Effective,
) -> Result<RunChoice, String> {
    let mode = match flag_mode {
        Some(m) => src(m.to_string(), "--mode"),
        None => match get(ENV_MODE)? {
            Some(v) => src(v, &env_src(ENV_MODE)),
            None => eff
                .file_mode
                .clone()
                .unwrap_or_else(|| src("auto".to_string(), DEFAULT)),
        },
    };
    if !file::RUN_MODES.contains(&mode.value.as_str()) {
        return Err(format!(
            "{}: unknown mode '{}' (expected auto, preload or supervise)",
            mode.from.strip_prefix("env ").unwrap_or(&mode.from),
            mode.value.escape_debug()
        ));
    }
    let enforce = if flag_enforce {
        src(true, "--enforce")
    } else {
        match get(ENV_ENFORCE)? {
            Some(v) => {
                let on = match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => {
                        return Err(format!(
                            "{ENV_ENFORCE}: \"{}\" is not 1/true/yes or 0/false/no",
                            v.chars().take(40).collect::<String>().escape_debug()
                        ))
                    }
                };
                src(on, &env_src(ENV_ENFORCE))
            }
            None => eff
                .file_enforce
                .clone()
                .unwrap_or_else(|| src(false, DEFAULT)),
        }
    };
    Ok(RunChoice { mode, enforce })
}

/// [`run_choice`] from the process environment, without flags (what `proxify config` shows).
pub fn run_choice_env(
    flag_mode: Option<&str>,
    flag_enforce: bool,
    eff: &Effective,
) -> Result<RunChoice, String> {
    run_choice(flag_mode, flag_enforce, env_var, eff)
}

/// A source's default chain: the chain, where each hop and the mode came from.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultChain {
    pub chain: Chain,
    pub hops_from: Vec<String>,
    /// `None`: the source did not say (strict, or what the flags make it).
    pub mode_from: Option<String>,
}

/// What one source sets; `None`/empty = not set there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layer {
    pub default_chain: Option<DefaultChain>,
    /// `--chain-mode`, `--chain-len`: change the default chain, wherever it came from.
    pub mode: Option<Src<ChainMode>>,
    pub chain_len: Option<Src<usize>>,
    /// Named chains.
    pub chains: Vec<Src<Chain>>,
    /// Rules, each with its origin.
    pub rules: Option<Vec<Rule>>,
    pub dnat: Option<Vec<Src<Dnat>>>,
    pub direct: Option<Src<Vec<Cidr>>>,
    pub connect_timeout: Option<Src<Duration>>,
    pub handshake_timeout: Option<Src<Duration>>,
    pub bind: Option<Src<BindPolicy>>,
    /// The log filter (`None` inside: no log, as `-q` says).
    pub log: Option<Src<Option<String>>>,
    pub log_file: Option<Src<Option<String>>>,
    pub trace: Option<Src<Option<String>>>,
    pub dns_server: Option<Src<Option<String>>>,
    pub quiet: Option<Src<bool>>,
    pub proxy_dns: Option<Src<bool>>,
    /// A proxychains.conf without `proxy_dns`: off, but only for the file's own proxies.
    pub proxy_dns_implicit: bool,
    pub remote_dns_subnet: Option<Src<Cidr>>,
    /// Whether `NO_PROXY`/`no_proxy` are read (`--no-proxy-env`, `no_proxy_env`).
    pub no_proxy_env: Option<Src<bool>>,
    /// `NO_PROXY`/`no_proxy` as direct rules (environment only; origin `env NO_PROXY`).
    pub no_proxy: Option<Src<Vec<Rule>>>,
}

const DEFAULT: &str = "default";
pub const ENV_PROXYCHAINS_CONF: &str = "PROXYCHAINS_CONF_FILE";

fn env_src(var: &str) -> String {
    format!("env {var}")
}

fn src<T>(value: T, from: &str) -> Src<T> {
    Src {
        value,
        from: from.to_string(),
    }
}

/// The flags' layer (clap has parsed and checked each value).
pub fn flags(s: &Settings) -> Layer {
    let mut l = Layer::default();
    if !s.proxy.is_empty() {
        l.default_chain = Some(DefaultChain {
            chain: Chain::strict(DEFAULT_CHAIN, s.proxy.clone()),
            hops_from: vec!["-x".to_string(); s.proxy.len()],
            mode_from: None,
        });
    }
    l.mode = s.chain_mode.map(|m| src(m, "--chain-mode"));
    l.chain_len = s.chain_len.map(|n| src(n, "--chain-len"));
    l.rules = (!s.rule.is_empty()).then(|| s.rule.clone());
    l.direct = (!s.direct.is_empty()).then(|| src(s.direct.clone(), "--direct"));
    l.dnat = (!s.dnat.is_empty()).then(|| s.dnat.iter().map(|d| src(*d, "--dnat")).collect());
    l.connect_timeout = s.connect_timeout.map(|t| src(t, "--connect-timeout"));
    l.handshake_timeout = s.timeout.map(|t| src(t, "--timeout"));
    l.bind = s.bind.map(|b| src(b, "--bind"));
    l.dns_server = s
        .dns_server
        .as_ref()
        .map(|d| src(Some(d.clone()), "--dns-server"));
    l.no_proxy_env = s.no_proxy_env.then(|| src(true, "--no-proxy-env"));
    // Made absolute: the program (and the programs it runs) may change directory.
    l.trace = s.trace.as_ref().map(|p| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        src(Some(p.to_string_lossy().into_owned()), "--trace")
    });
    // -q and -v both decide the log settings; clap rejects them together.
    if s.quiet {
        l.quiet = Some(src(true, "-q"));
        l.log = Some(src(None, "-q"));
    } else if s.verbose > 0 {
        let level = match s.verbose {
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        l.quiet = Some(src(false, "-v"));
        l.log = Some(src(Some(level.to_string()), "-v"));
    }
    l
}

/// Whether a variable is left unread because `flags` sets what it would.
fn overridden(flags: &Layer, key: &str) -> bool {
    match key {
        ENV_PROXY => flags.default_chain.is_some(),
        ENV_DIRECT => flags.direct.is_some(),
        ENV_RULES => flags.rules.is_some(),
        ENV_DNAT => flags.dnat.is_some(),
        ENV_CONNECT_TIMEOUT => flags.connect_timeout.is_some(),
        ENV_HANDSHAKE_TIMEOUT => flags.handshake_timeout.is_some(),
        ENV_BIND => flags.bind.is_some(),
        ENV_LOG | ENV_QUIET => flags.log.is_some() || flags.quiet.is_some(),
        ENV_TRACE => flags.trace.is_some(),
        ENV_DNS_SERVER => flags.dns_server.is_some(),
        _ => false,
    }
}

/// The `PROXIFY_*` variables `environment` reads.
const ENV_KEYS: [&str; 15] = [
    ENV_PROXY,
    ENV_DNS_SERVER,
    ENV_DIRECT,
    ENV_CONNECT_TIMEOUT,
    ENV_HANDSHAKE_TIMEOUT,
    ENV_LOG,
    ENV_LOG_FILE,
    ENV_TRACE,
    ENV_QUIET,
    ENV_BIND,
    ENV_PROXY_DNS,
    ENV_REMOTE_DNS_SUBNET,
    ENV_CHAINS,
    ENV_RULES,
    ENV_DNAT,
];

/// The environment's layer. `get` reads a variable (`Ok(None)`: unset or empty; `Err`: not
/// UTF-8); variables whose setting `flags` gives are not read at all. `no_proxy`: where the
/// setting that asks to read `no_proxy`, else `NO_PROXY` (curl's order), as direct rules
/// came from (`None`: they are not read).
pub fn environment(
    get: impl Fn(&str) -> Result<Option<String>, String>,
    flags: &Layer,
    no_proxy: Option<&str>,
) -> Result<Layer, String> {
    let mut env: Vec<(&str, String)> = Vec::new();
    for key in ENV_KEYS {
        if !overridden(flags, key) {
            if let Some(v) = get(key)? {
                env.push((key, v));
            }
        }
    }
    let var = |key: &str| -> Option<String> {
        env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    };
    let has = |key: &str| var(key).is_some();
    // The single-value variables (the lists are read apart: they may name chains the file
    // defines).
    let one = Config::from_env_with(|key| match key {
        ENV_CHAINS | ENV_RULES | ENV_DNAT => None,
        k => var(k),
    })
    .map_err(|e| {
        let mut msg = e.to_string();
        if let Some(list) = var(ENV_PROXY) {
            for raw in list.split(',') {
                msg = crate::scrub(&msg, raw.trim());
            }
        }
        msg
    })?;
    let (default_mode, chains) = match var(ENV_CHAINS) {
        Some(v) => parse_chains_var(&v).map_err(|e| e.to_string())?,
        None => (None, Vec::new()),
    };

    let mut l = Layer::default();
    if has(ENV_PROXY) {
        let mut chain = Chain::strict(DEFAULT_CHAIN, one.proxies.clone());
        let mut mode_from = None;
        if let Some((mode, len)) = default_mode {
            chain.mode = mode;
            chain.chain_len = len;
            mode_from = Some(env_src(ENV_CHAINS));
        }
        l.default_chain = Some(DefaultChain {
            chain,
            hops_from: vec![env_src(ENV_PROXY); one.proxies.len()],
            mode_from,
        });
    }
    for c in chains {
        c.check().map_err(|e| format!("{ENV_CHAINS}: {e}"))?;
        l.chains.push(src(c, &env_src(ENV_CHAINS)));
    }
    if let Some(v) = var(ENV_RULES) {
        let rules = parse_rules_var(&v).map_err(|e| e.to_string())?;
        l.rules = Some(
            rules
                .into_iter()
                .map(|mut r| {
                    r.origin.get_or_insert_with(|| env_src(ENV_RULES));
                    r
                })
                .collect(),
        );
    }
    if let Some(v) = var(ENV_DNAT) {
        let d = parse_dnat_var(&v).map_err(|e| e.to_string())?;
        l.dnat = Some(d.into_iter().map(|d| src(d, &env_src(ENV_DNAT))).collect());
    }
    let from = |key: &str| has(key).then(|| env_src(key));
    l.direct = from(ENV_DIRECT).map(|f| src(one.direct.clone(), &f));
    l.connect_timeout = from(ENV_CONNECT_TIMEOUT).map(|f| src(one.connect_timeout, &f));
    l.handshake_timeout = from(ENV_HANDSHAKE_TIMEOUT).map(|f| src(one.handshake_timeout, &f));
    l.bind = from(ENV_BIND).map(|f| src(one.bind, &f));
    l.log = from(ENV_LOG).map(|f| src(one.log.clone(), &f));
    l.log_file = from(ENV_LOG_FILE).map(|f| src(one.log_file.clone(), &f));
    l.trace = from(ENV_TRACE).map(|f| src(one.trace.clone(), &f));
    l.dns_server = from(ENV_DNS_SERVER).map(|f| src(one.dns_server.clone(), &f));
    l.quiet = from(ENV_QUIET).map(|f| src(one.quiet, &f));
    l.proxy_dns = from(ENV_PROXY_DNS).and_then(|f| one.proxy_dns.map(|v| src(v, &f)));
    l.remote_dns_subnet =
        from(ENV_REMOTE_DNS_SUBNET).and_then(|f| one.remote_dns_subnet.map(|v| src(v, &f)));

    if let Some(why) = no_proxy {
        for key in ["no_proxy", "NO_PROXY"] {
            if let Some(v) = get(key)? {
                let origin = env_src(key);
                let rules = no_proxy_rules(&v, &origin).map_err(|e| {
                    format!(
                        "{key}: {e} (read because of {why}; without it the variable is ignored)"
                    )
                })?;
                l.no_proxy = Some(Src {
                    value: rules,
                    from: key.to_string(),
                });
                break;
            }
        }
    }
    Ok(l)
}

/// The file's layer.
pub fn file_layer(f: &FileSettings) -> Layer {
    Layer {
        default_chain: f.default_chain.as_ref().map(|c| DefaultChain {
            chain: c.value.clone(),
            hops_from: f.hops_from.clone(),
            mode_from: f.default_mode_from.clone(),
        }),
        mode: None,
        chain_len: None,
        chains: f.chains.clone(),
        rules: Some(f.rules.clone()),
        dnat: Some(f.dnat.clone()),
        direct: f.direct.clone(),
        connect_timeout: f.connect_timeout.clone(),
        handshake_timeout: f.handshake_timeout.clone(),
        bind: f.bind.clone(),
        log: f.log.as_ref().map(|v| src(Some(v.value.clone()), &v.from)),
        log_file: f
            .log_file
            .as_ref()
            .map(|v| src(Some(v.value.clone()), &v.from)),
        trace: f
            .trace
            .as_ref()
            .map(|v| src(Some(v.value.clone()), &v.from)),
        dns_server: f
            .dns_server
            .as_ref()
            .map(|v| src(Some(v.value.clone()), &v.from)),
        quiet: f.quiet.clone(),
        proxy_dns: f.proxy_dns.clone(),
        proxy_dns_implicit: f.proxy_dns_implicit,
        remote_dns_subnet: f.remote_dns_subnet.clone(),
        no_proxy_env: f.no_proxy_env.clone(),
        no_proxy: None,
    }
}

/// The first layer's value, of flags, environment and file in this order.
fn first<'a, T>(layers: &[&'a Layer], get: impl Fn(&'a Layer) -> Option<&'a T>) -> Option<&'a T> {
    layers.iter().find_map(|l| get(l))
}

/// Takes each value from the first layer that sets it, in the order given (flags,
/// environment, file), into a checked configuration and where each value came from, with
/// the warnings for the user.
pub fn merge(
    flags: &Layer,
    env: &Layer,
    file: Option<&Layer>,
) -> Result<(Config, Sources, Vec<String>), String> {
    let empty = Layer::default();
    let file = file.unwrap_or(&empty);
    let layers = [flags, env, file];
    let mut cfg = Config::default();
    let mut from = Sources {
        mode: DEFAULT.into(),
        direct: DEFAULT.into(),
        connect_timeout: DEFAULT.into(),
        handshake_timeout: DEFAULT.into(),
        log: DEFAULT.into(),
        log_file: DEFAULT.into(),
        trace: DEFAULT.into(),
        dns_server: DEFAULT.into(),
        quiet: DEFAULT.into(),
        bind: DEFAULT.into(),
        proxy_dns: DEFAULT.into(),
        remote_dns_subnet: DEFAULT.into(),
        no_proxy_env: DEFAULT.into(),
        ..Sources::default()
    };
    let mut warnings = Vec::new();

    // The default chain, then what --chain-mode and --chain-len make of it.
    let default = first(&layers, |l| l.default_chain.as_ref());
    let default_from_file =
        default.is_some() && flags.default_chain.is_none() && env.default_chain.is_none();
    let mode = first(&layers, |l| l.mode.as_ref());
    let chain_len = first(&layers, |l| l.chain_len.as_ref());
    if let Some(d) = default {
        let mut c = d.chain.clone();
        from.hops = d.hops_from.clone();
        if let Some(m) = &d.mode_from {
            from.mode = m.clone();
        }
        let mut mode_from = vec![];
        if let Some(m) = mode {
            c.mode = m.value;
            mode_from.push(m.from.as_str());
        }
        if let Some(l) = chain_len {
            if !c.mode.uses_chain_len() {
                return Err(format!(
                    "--chain-len counts only for random and round_robin chains (the chain is {}; use --chain-mode)",
                    c.mode.as_str()
                ));
            }
            c.chain_len = l.value;
            mode_from.push(l.from.as_str());
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
    } else if mode.is_some() || chain_len.is_some() {
        return Err("--chain-mode and --chain-len need proxies (-x URL)".to_string());
    }

    // Named chains: a later layer's give way to an earlier one's of the same name.
    for (i, l) in layers.iter().enumerate().rev() {
        for c in &l.chains {
            let shadowed = layers[..i]
                .iter()
                .any(|e| e.chains.iter().any(|e| e.value.name == c.value.name));
            if !shadowed {
                from.chains.push((c.value.name.clone(), c.from.clone()));
                cfg.chains.push(c.value.clone());
            }
        }
    }

    // Rules, then NO_PROXY.
    cfg.rules.rules = first(&layers, |l| l.rules.as_ref())
        .cloned()
        .unwrap_or_default();
    if let Some(v) = first(&layers, |l| l.no_proxy_env.as_ref()) {
        from.no_proxy_env = v.from.clone();
    }
    if let Some(np) = first(&layers, |l| l.no_proxy.as_ref()) {
        if np
            .value
            .iter()
            .any(|r| r.pattern.host == HostMatch::Any && r.pattern.ports.is_none())
        {
            warnings.push(format!(
                "warning: {} contains '*': every connection goes directly, not through \
                 the proxy (it is read because of --no-proxy-env or no_proxy_env)",
                np.from
            ));
        }
        cfg.rules.rules.extend(np.value.iter().cloned());
    }

    // dnat.
    if let Some(d) = first(&layers, |l| l.dnat.as_ref()) {
        cfg.rules.dnat = d.iter().map(|d| d.value).collect();
        from.dnat = d.iter().map(|d| d.from.clone()).collect();
    }

    // Single values.
    macro_rules! pick {
        ($field:ident) => {
            if let Some(v) = first(&layers, |l| l.$field.as_ref()) {
                cfg.$field = v.value.clone();
                from.$field = v.from.clone();
            }
        };
    }
    pick!(direct);
    pick!(connect_timeout);
    pick!(handshake_timeout);
    pick!(bind);
    pick!(log_file);
    pick!(trace);
    pick!(dns_server);
    pick!(quiet);
    pick!(log);
    // A proxychains.conf without proxy_dns only speaks for its own proxies.
    let proxy_dns = [flags, env]
        .into_iter()
        .find_map(|l| l.proxy_dns.as_ref())
        .or_else(|| {
            file.proxy_dns
                .as_ref()
                .filter(|_| default_from_file || !file.proxy_dns_implicit)
        });
    if let Some(v) = proxy_dns {
        cfg.proxy_dns = Some(v.value);
        from.proxy_dns = v.from.clone();
    } else {
        from.proxy_dns = "default (by the proxy URL schemes)".to_string();
    }
    if let Some(v) = first(&layers, |l| l.remote_dns_subnet.as_ref()) {
        cfg.remote_dns_subnet = Some(v.value);
        from.remote_dns_subnet = v.from.clone();
    }

    cfg.sync_default_chain();
    // Names unique, rules naming defined chains...
    cfg.check()?;
    Ok((cfg, from, warnings))
}

/// Where the credentials of each hop that has some came from, as `(chain, hop, phrase)` for
/// `PROXIFY_CRED_FROM`: the shim's line for a rejected username/password names it.
pub fn cred_sources(eff: &Effective) -> Vec<(String, usize, String)> {
    let kind = eff.file.as_ref().map(|(_, k)| *k);
    let describe = |from: &str, chain: &str| -> String {
        if from == "-x" {
            return "the proxy URL given with -x".to_string();
        }
        if let Some(var) = from.strip_prefix("env ") {
            return format!("the environment variable {var}");
        }
        match (kind, chain == DEFAULT_CHAIN) {
            (Some(FileKind::Proxychains), _) => format!("the proxychains.conf {from}, [ProxyList]"),
            (_, true) => format!("the config file {from}, key proxy"),
            (_, false) => format!("the config file {from}, [[chain]] {chain}, key hops"),
        }
    };
    let mut out = Vec::new();
    for c in &eff.config.chains {
        for (i, h) in c.hops.iter().enumerate() {
            if h.user.is_none() {
                continue;
            }
            let from = if c.name == DEFAULT_CHAIN {
                eff.from.hops.get(i).cloned()
            } else {
                eff.from
                    .chains
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, f)| f.clone())
            };
            if let Some(f) = from {
                out.push((c.name.clone(), i, describe(&f, &c.name)));
            }
        }
    }
    out
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

/// Reads the file the settings name (an error if it cannot be read), or the first default one
/// that can be read (one that is missing or unreadable is skipped).
fn read_file(s: &Settings, searched: &mut Vec<String>) -> Result<Option<FileSettings>, String> {
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
                // A default place that cannot be read (e.g. a $HOME the user may not enter)
                // is no file: skipped, said at -vv. Only a file the user names must be read.
                if s.verbose >= 2 {
                    eprintln!(
                        "proxify: debug: skipping the default config {}: {}",
                        p.display(),
                        crate::io_error_text(&e)
                    );
                }
                searched.push(p.display().to_string());
            }
        }
    }
    Ok(None)
}

/// A variable of the process environment: `None` when unset or empty.
fn env_var(key: &str) -> Result<Option<String>, String> {
    match std::env::var_os(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| format!("{key} is not valid UTF-8")),
    }
}

/// Computes the effective configuration from the flags, the process environment and the
/// file. Errors are one line, without "proxify: ".
pub fn effective(s: &Settings) -> Result<Effective, String> {
    let flags = flags(s);
    // The file: read and checked whole, whatever overrides it.
    let mut searched = Vec::new();
    let file = read_file(s, &mut searched)?;
    let file_l = file.as_ref().map(file_layer);
    // NO_PROXY is read only when a flag or the file asks (never from the environment).
    let no_proxy = [Some(&flags), file_l.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|l| l.no_proxy_env.as_ref())
        .filter(|v| v.value)
        .map(|v| v.from.clone());
    let env = environment(env_var, &flags, no_proxy.as_deref())?;
    let (config, from, warnings) = merge(&flags, &env, file_l.as_ref())?;
    let (file_mode, file_enforce) = file
        .as_ref()
        .map(|f| (f.run_mode.clone(), f.enforce.clone()))
        .unwrap_or_default();
    Ok(Effective {
        config,
        file: file.map(|f| (f.path, f.kind)),
        searched,
        from,
        warnings,
        no_proxy_env: no_proxy.is_some(),
        file_mode,
        file_enforce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxify_core::url::ProxyUrl;
    use std::collections::HashMap;

    fn url(s: &str) -> ProxyUrl {
        s.parse().unwrap()
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<Option<String>, String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| Ok(m.get(k).filter(|v| !v.is_empty()).cloned())
    }

    fn settings(proxy: &[&str]) -> Settings {
        Settings {
            proxy: proxy.iter().map(|p| url(p)).collect(),
            ..Settings::default()
        }
    }

    fn toml(text: &str) -> Layer {
        file_layer(&file::parse("c.toml", text).unwrap())
    }

    #[test]
    fn flags_win_over_environment_and_file() {
        let f = flags(&settings(&["socks5://192.0.2.1"]));
        let e = environment(
            env_of(&[
                (ENV_PROXY, "socks5://192.0.2.2"),
                (ENV_CONNECT_TIMEOUT, "7"),
            ]),
            &f,
            None,
        )
        .unwrap();
        // The flag's variable is not even read.
        assert!(e.default_chain.is_none());
        let file = toml("proxy = \"socks5://192.0.2.3\"\nconnect_timeout = 9\ntimeout = 3\n");
        let (cfg, from, warnings) = merge(&f, &e, Some(&file)).unwrap();
        assert_eq!(cfg.proxies, [url("socks5://192.0.2.1")]);
        assert_eq!(from.hops, ["-x"]);
        assert_eq!(cfg.connect_timeout, Duration::from_secs(7));
        assert_eq!(from.connect_timeout, "env PROXIFY_CONNECT_TIMEOUT");
        assert_eq!(cfg.handshake_timeout, Duration::from_secs(3));
        assert_eq!(from.handshake_timeout, "c.toml:3");
        assert_eq!(from.bind, "default");
        assert!(warnings.is_empty());
    }

    #[test]
    fn an_overridden_variable_is_not_checked() {
        let mut s = settings(&["socks5://192.0.2.1"]);
        s.timeout = Some(Duration::from_secs(2));
        let f = flags(&s);
        let bad = env_of(&[(ENV_PROXY, "bogus://"), (ENV_HANDSHAKE_TIMEOUT, "soon")]);
        assert!(environment(&bad, &f, None).is_ok());
        let e = environment(&bad, &Layer::default(), None).unwrap_err();
        assert!(e.contains("PROXIFY_"), "{e}");
    }

    #[test]
    fn env_chain_mode_and_flag_mode() {
        let e = environment(
            env_of(&[
                (ENV_PROXY, "socks5://192.0.2.1,socks5://192.0.2.2"),
                (ENV_CHAINS, "default dynamic 1"),
            ]),
            &Layer::default(),
            None,
        )
        .unwrap();
        let (cfg, from, _) = merge(&Layer::default(), &e, None).unwrap();
        assert_eq!(cfg.chains[0].mode, ChainMode::Dynamic);
        assert_eq!(from.mode, "env PROXIFY_CHAINS");
        let mut s = Settings {
            chain_mode: Some(ChainMode::Random),
            chain_len: Some(2),
            ..Settings::default()
        };
        let (cfg, from, _) = merge(&flags(&s), &e, None).unwrap();
        assert_eq!(cfg.chains[0].mode, ChainMode::Random);
        assert_eq!(cfg.chains[0].chain_len, 2);
        assert_eq!(from.mode, "--chain-mode --chain-len");
        // No chain to change.
        let err = merge(&flags(&s), &Layer::default(), None).unwrap_err();
        assert!(err.contains("need proxies"), "{err}");
        s.chain_mode = None;
        let err = merge(&flags(&s), &e, None).unwrap_err();
        assert!(err.contains("--chain-len counts only"), "{err}");
    }

    #[test]
    fn lists_replace_and_named_chains_shadow() {
        let file = toml(
            "proxy = \"socks5://192.0.2.9\"\ndirect = [\"10.0.0.0/8\"]\n\
             [[chain]]\nname = \"a\"\nhops = [\"socks5://192.0.2.3\"]\n\
             [[chain]]\nname = \"b\"\nhops = [\"socks5://192.0.2.4\"]\n\
             [[rule]]\nmatch = \"*.lan\"\naction = \"direct\"\n",
        );
        let e = environment(
            env_of(&[
                (ENV_CHAINS, "a strict 1 socks5://192.0.2.5"),
                (ENV_DIRECT, "192.0.2.0/24"),
            ]),
            &Layer::default(),
            None,
        )
        .unwrap();
        let (cfg, from, _) = merge(&Layer::default(), &e, Some(&file)).unwrap();
        let names: Vec<(&str, &str)> = from
            .chains
            .iter()
            .map(|(n, f)| (n.as_str(), f.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("default", "default"),
                ("b", "c.toml:7"),
                ("a", "env PROXIFY_CHAINS")
            ]
        );
        assert_eq!(cfg.chain("a").unwrap().hops, [url("socks5://192.0.2.5")]);
        assert_eq!(cfg.direct, ["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(from.direct, "env PROXIFY_DIRECT");
        assert_eq!(cfg.rules.rules.len(), 1);
        assert_eq!(cfg.rules.rules[0].origin.as_deref(), Some("c.toml:10"));
        assert_eq!(from.hops, ["c.toml:1"]);
    }

    #[test]
    fn no_proxy_rules_come_last_and_only_when_asked() {
        let vars = env_of(&[("NO_PROXY", "upper.example"), ("no_proxy", ".lan,*")]);
        let f = flags(&settings(&["socks5://192.0.2.1"]));
        let e = environment(&vars, &f, None).unwrap();
        assert!(e.no_proxy.is_none());
        let (cfg, _, w) = merge(&f, &e, None).unwrap();
        assert!(cfg.rules.rules.is_empty() && w.is_empty());
        let e = environment(&vars, &f, Some("--no-proxy-env")).unwrap();
        let (cfg, _, w) = merge(&f, &e, None).unwrap();
        let origins: Vec<_> = cfg
            .rules
            .rules
            .iter()
            .map(|r| r.origin.as_deref().unwrap())
            .collect();
        assert_eq!(origins, ["env no_proxy", "env no_proxy"]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("no_proxy contains '*'"), "{w:?}");
    }

    #[test]
    fn quiet_and_log() {
        let e = environment(
            env_of(&[(ENV_QUIET, "1"), (ENV_LOG, "debug")]),
            &Layer::default(),
            None,
        )
        .unwrap();
        let (cfg, from, _) = merge(&Layer::default(), &e, None).unwrap();
        assert!(cfg.quiet);
        assert_eq!(cfg.log.as_deref(), Some("debug"));
        assert_eq!(from.quiet, "env PROXIFY_QUIET");
        let mut s = Settings {
            verbose: 2,
            ..Settings::default()
        };
        let f = flags(&s);
        let e = environment(env_of(&[(ENV_QUIET, "1")]), &f, None).unwrap();
        let (cfg, from, _) = merge(&f, &e, None).unwrap();
        assert!(!cfg.quiet);
        assert_eq!(cfg.log.as_deref(), Some("debug"));
        assert_eq!((from.quiet.as_str(), from.log.as_str()), ("-v", "-v"));
        s.verbose = 0;
        s.quiet = true;
        let (cfg, from, _) = merge(&flags(&s), &e, None).unwrap();
        assert!(cfg.quiet && cfg.log.is_none());
        assert_eq!(from.log, "-q");
    }

    fn eff(flags: &Layer, env: &Layer, file: Option<(&Layer, FileKind)>) -> Effective {
        let (config, from, warnings) = merge(flags, env, file.map(|f| f.0)).unwrap();
        Effective {
            config,
            file: file.map(|f| ("c".to_string(), f.1)),
            searched: vec![],
            from,
            warnings,
            no_proxy_env: false,
            file_mode: None,
            file_enforce: None,
        }
    }

    #[test]
    fn run_mode_precedence() {
        let f = file::parse("c.toml", "mode = \"preload\"\nenforce = true\n").unwrap();
        let mut e = eff(&Layer::default(), &Layer::default(), None);
        let none = env_of(&[]);
        let c = run_choice(None, false, &none, &e).unwrap();
        assert_eq!(
            (c.mode.value.as_str(), c.mode.from.as_str()),
            ("auto", "default")
        );
        assert!(!c.enforce.value && c.enforce.from == "default");
        e.file_mode = f.run_mode.clone();
        e.file_enforce = f.enforce.clone();
        let c = run_choice(None, false, &none, &e).unwrap();
        assert_eq!(
            (c.mode.value.as_str(), c.mode.from.as_str()),
            ("preload", "c.toml:1")
        );
        assert!(c.enforce.value && c.enforce.from == "c.toml:2");
        let env = env_of(&[(ENV_MODE, "supervise"), (ENV_ENFORCE, "0")]);
        let c = run_choice(None, false, &env, &e).unwrap();
        assert_eq!(c.mode.value, "supervise");
        assert_eq!(c.mode.from, "env PROXIFY_MODE");
        assert!(!c.enforce.value && c.enforce.from == "env PROXIFY_ENFORCE");
        let c = run_choice(Some("auto"), true, &env, &e).unwrap();
        assert_eq!(
            (c.mode.value.as_str(), c.mode.from.as_str()),
            ("auto", "--mode")
        );
        assert!(c.enforce.value && c.enforce.from == "--enforce");
        let bad = env_of(&[(ENV_MODE, "both")]);
        let err = run_choice(None, false, &bad, &e).unwrap_err();
        assert!(
            err.starts_with("PROXIFY_MODE: unknown mode 'both'"),
            "{err}"
        );
        let bad = env_of(&[(ENV_ENFORCE, "maybe")]);
        assert!(run_choice(None, false, &bad, &e).is_err());
    }

    #[test]
    fn trace_from_flag_environment_or_file() {
        let s = Settings {
            trace: Some(PathBuf::from("t.jsonl")),
            ..settings(&["socks5://192.0.2.1"])
        };
        let f = flags(&s);
        // The flag's path is made absolute (the program may change directory).
        let file = toml("trace = \"/tmp/file.jsonl\"\n");
        let e = environment(env_of(&[("PROXIFY_TRACE", "/tmp/env.jsonl")]), &f, None).unwrap();
        let (cfg, from, _) = merge(&f, &e, Some(&file)).unwrap();
        let want = std::env::current_dir().unwrap().join("t.jsonl");
        assert_eq!(cfg.trace.as_deref(), want.to_str());
        assert_eq!(from.trace, "--trace");
        let f = flags(&settings(&["socks5://192.0.2.1"]));
        let e = environment(env_of(&[("PROXIFY_TRACE", "/tmp/env.jsonl")]), &f, None).unwrap();
        let (cfg, from, _) = merge(&f, &e, Some(&file)).unwrap();
        assert_eq!(
            (cfg.trace.as_deref(), from.trace.as_str()),
            (Some("/tmp/env.jsonl"), "env PROXIFY_TRACE")
        );
        let (cfg, from, _) = merge(&f, &Layer::default(), Some(&file)).unwrap();
        assert_eq!(
            (cfg.trace.as_deref(), from.trace.as_str()),
            (Some("/tmp/file.jsonl"), "c.toml:1")
        );
    }

    #[test]
    fn credential_sources_name_flag_variable_and_file_line() {
        let f = flags(&settings(&["socks5://192.0.2.9", "socks5://u:p@192.0.2.1"]));
        let e = eff(&f, &Layer::default(), None);
        assert_eq!(
            cred_sources(&e),
            [("default".into(), 1, "the proxy URL given with -x".into())]
        );
        let env = environment(
            env_of(&[(ENV_PROXY, "socks5://u:p@192.0.2.2")]),
            &Layer::default(),
            None,
        )
        .unwrap();
        let e = eff(&Layer::default(), &env, None);
        assert_eq!(
            cred_sources(&e)[0].2,
            "the environment variable PROXIFY_PROXY"
        );
        let file = toml(
            "proxy = \"socks5://u:p@192.0.2.3\"\n[[chain]]\nname = \"corp\"\n\
             hops = [\"socks5://192.0.2.4\", \"http://v:w@192.0.2.5\"]\n",
        );
        let e = eff(
            &Layer::default(),
            &Layer::default(),
            Some((&file, FileKind::Toml)),
        );
        let got = cred_sources(&e);
        assert_eq!(
            got,
            [
                (
                    "default".into(),
                    0,
                    "the config file c.toml:1, key proxy".into()
                ),
                (
                    "corp".into(),
                    1,
                    "the config file c.toml:3, [[chain]] corp, key hops".into()
                ),
            ]
        );
        let pc = file_layer(
            &file::from_proxychains("p.conf", "[ProxyList]\nsocks5 192.0.2.1 1080 u p\n").unwrap(),
        );
        let e = eff(
            &Layer::default(),
            &Layer::default(),
            Some((&pc, FileKind::Proxychains)),
        );
        assert_eq!(
            cred_sources(&e)[0].2,
            "the proxychains.conf p.conf:2, [ProxyList]"
        );
    }

    #[test]
    fn proxychains_proxy_dns_speaks_for_its_own_proxies() {
        let pc = file_layer(
            &file::from_proxychains(
                "p.conf",
                "strict_chain\n[ProxyList]\nsocks5 192.0.2.1 1080\n",
            )
            .unwrap(),
        );
        let (cfg, _, _) = merge(&Layer::default(), &Layer::default(), Some(&pc)).unwrap();
        assert_eq!(cfg.proxy_dns, Some(false));
        let f = flags(&settings(&["socks5h://192.0.2.2"]));
        let (cfg, from, _) = merge(&f, &Layer::default(), Some(&pc)).unwrap();
        assert_eq!(cfg.proxy_dns, None);
        assert_eq!(from.proxy_dns, "default (by the proxy URL schemes)");
    }
}
