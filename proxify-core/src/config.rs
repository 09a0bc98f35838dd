//! Effective configuration, and how the CLI hands it to the shim: environment variables.
//!
//! The CLI merges flags > environment > file into a [`Config`] and exports it with
//! [`Config::to_env`]; the shim reads it back with [`Config::from_env_with`]. The same
//! variables set by hand (with `LD_PRELOAD=libproxify.so`) work too.
//!
//! # Chains, rules and dnat in the environment
//!
//! The shim does not parse TOML, so these variables hold one item per line (lines separated
//! by `\n`, blank lines ignored, fields separated by blanks; no field ever contains a blank
//! or a line break, so nothing needs quoting):
//!
//! - `PROXIFY_CHAINS`: `NAME MODE CHAIN_LEN [HOP...]`, e.g.
//!   `corp dynamic 1 socks5h://u:p%40ss@192.0.2.1:1080 http://198.51.100.2:3128`. MODE is
//!   `strict`, `dynamic`, `random` or `round_robin`; CHAIN_LEN (1 or more) counts for random
//!   and round_robin. HOPs are proxy URLs as [`ProxyUrl::to_url_string`] writes them (user
//!   and password percent-encoded). The line of the chain named `default` has no hops:
//!   they are `PROXIFY_PROXY`'s; without such a line the default chain is strict.
//! - `PROXIFY_RULES`: `PATTERN ACTION [#ORIGIN]`, e.g. `*.corp.example proxy corp #c.toml:7`
//!   (see [`crate::rules`]). ORIGIN says where the rule was written, for messages; it is
//!   percent-encoded (`%XX` for `%` and every byte outside `!`..=`~`).
//! - `PROXIFY_DNAT`: `ORIG[:PORT] NEW[:PORT]`, e.g. `192.0.2.1:1234 198.51.100.2:443`.
//! - `PROXIFY_PROXY_DNS`: `1` or `0`; unset: remote DNS as the default chain's schemes say
//!   ([`Chain::default_remote_dns`]).
//! - `PROXIFY_REMOTE_DNS_SUBNET`: the IPv4 block remote-DNS placeholders come from, /4 to
//!   /24 (default [`DEFAULT_REMOTE_DNS_SUBNET`]).
//!
//! [`Config::from_env_with`] checks the whole: chain names unique, every chain a rule
//! names defined, chain lengths possible.
//!
//! Size: ~1,550 lines, ~590 of them unit tests (16: round trips, hand-written values, error
//! texts): each `PROXIFY_*` variable's name, parser and writer side by side, so that `to_env`
//! and `from_env_with` stay inverse. The tests could move to `config/tests.rs`; not done yet.

use crate::cidr::Cidr;
use crate::rules::{Decision, Dnat, Reason, Rule, Rules, Verdict, DEFAULT_CHAIN};
use crate::url::ProxyUrl;
use std::net::IpAddr;
use std::time::Duration;

/// Proxy URL (like `-x`). Several, separated by `,`, make the default chain (first hop first).
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
/// Write the trace (one JSON line per decision and outcome) to this file.
pub const ENV_TRACE: &str = "PROXIFY_TRACE";
/// The trace's size cap in bytes (default 16 MiB); read by the shim only.
pub const ENV_TRACE_MAX: &str = "PROXIFY_TRACE_MAX";
/// Under remote DNS, queries the in-process responder cannot answer itself (MX, TXT, SRV, …)
/// go over TCP through the proxy to this DNS server (`--dns-server`).
pub const ENV_DNS_SERVER: &str = "PROXIFY_DNS_SERVER";
/// `1`: no output at all from the shim, not even the one-line failure notices.
pub const ENV_QUIET: &str = "PROXIFY_QUIET";

/// `FD:TOKEN` of the memfd holding the remote-DNS placeholder table shared by every process
/// of one `proxify run` (created by the CLI, mapped by the shim; see the shim's fakedns.rs).
pub const ENV_DNS_FD: &str = "PROXIFY_DNS_FD";

/// Size of that table: a 16-byte header, 65,536 slots of 260 bytes, a 131,072-entry hash.
pub const DNS_TABLE_BYTES: usize = 16 + 65536 * 260 + 131072 * 4;
// The placeholder table the shim and the supervisor map is exactly this size.
const _: () = assert!(crate::placeholder::TABLE_BYTES == DNS_TABLE_BYTES);

/// The memfd's name for a token.
pub fn dns_table_name(token: &str) -> String {
    format!("proxify-dns-{token}")
}

/// When a listening socket asks the proxy to BIND: `auto` (default), `always` or `never`.
pub const ENV_BIND: &str = "PROXIFY_BIND";

/// Chains, one per line (see the module documentation).
pub const ENV_CHAINS: &str = "PROXIFY_CHAINS";
/// Routing rules, one per line, first match wins.
pub const ENV_RULES: &str = "PROXIFY_RULES";
/// dnat entries, one per line.
pub const ENV_DNAT: &str = "PROXIFY_DNAT";
/// `1`: names go to the proxy (remote DNS); `0`: resolved locally.
pub const ENV_PROXY_DNS: &str = "PROXIFY_PROXY_DNS";
/// The IPv4 block remote-DNS placeholder addresses come from.
pub const ENV_REMOTE_DNS_SUBNET: &str = "PROXIFY_REMOTE_DNS_SUBNET";

/// Under `--enforce`: the addresses `proxify run` resolved each proxy host name to, as
/// `NAME:PORT=ADDR,ADDR;NAME:PORT=ADDR` (addresses as `SocketAddr` prints them). The shim takes
/// these instead of asking the system resolver (whose queries the supervisor answers), and the
/// supervisor lets exactly these addresses be connected as they are.
pub const ENV_HOP_ADDRS: &str = "PROXIFY_HOP_ADDRS";

/// The value of [`ENV_HOP_ADDRS`] for these `(NAME:PORT, addresses)` entries.
pub fn format_hop_addrs(entries: &[(String, Vec<std::net::SocketAddr>)]) -> String {
    entries
        .iter()
        .filter(|(k, v)| !v.is_empty() && !k.contains(['=', ';', ',']))
        .map(|(k, v)| {
            let addrs: Vec<String> = v.iter().map(|a| a.to_string()).collect();
            format!("{k}={}", addrs.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads [`ENV_HOP_ADDRS`]; entries that do not parse are left out (the name is then
/// resolved as without the variable).
pub fn parse_hop_addrs(v: &str) -> Vec<(String, Vec<std::net::SocketAddr>)> {
    v.split(';')
        .filter_map(|e| {
            let (k, addrs) = e.split_once('=')?;
            let list: Option<Vec<std::net::SocketAddr>> =
                addrs.split(',').map(|a| a.parse().ok()).collect();
            let list = list?;
            (!k.is_empty() && !list.is_empty()).then(|| (k.to_string(), list))
        })
        .collect()
}

/// Where each hop's credentials came from, for the one line of a rejected username/password:
/// one line per hop with credentials, `CHAIN<TAB>HOP<TAB>WHERE` (HOP counted from 0 in the
/// chain's hops; WHERE a phrase such as "the proxy URL given with -x"). Set by `proxify run`.
pub const ENV_CRED_FROM: &str = "PROXIFY_CRED_FROM";

/// The value of [`ENV_CRED_FROM`] for these `(chain, hop, where)` entries.
pub fn format_cred_from(entries: &[(String, usize, String)]) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    entries
        .iter()
        .map(|(c, h, w)| format!("{}\t{h}\t{}", clean(c), clean(w)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the credentials of hop `hop` of chain `chain` came from, as [`ENV_CRED_FROM`]'s
/// value `var` says; without the variable (the shim preloaded by hand), the variable the shim
/// read the chain from.
pub fn cred_from(var: Option<&str>, chain: &str, hop: usize) -> String {
    if let Some(v) = var {
        for line in v.lines() {
            let mut f = line.splitn(3, '\t');
            if let (Some(c), Some(h), Some(w)) = (f.next(), f.next(), f.next()) {
                if c == chain && h.parse() == Ok(hop) {
                    return w.to_string();
                }
            }
        }
    }
    let var = if chain == DEFAULT_CHAIN {
        ENV_PROXY
    } else {
        ENV_CHAINS
    };
    format!("the environment variable {var}")
}

/// Where remote-DNS placeholder addresses come from unless configured: 240.0.0.0/4
/// (reserved, never routed).
pub const DEFAULT_REMOTE_DNS_SUBNET: Cidr = Cidr {
    addr: IpAddr::V4(std::net::Ipv4Addr::new(240, 0, 0, 0)),
    prefix: 4,
};

/// How a chain uses its hops (proxychains' chain types).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChainMode {
    /// Every hop, in order; any dead hop fails the connection.
    #[default]
    Strict,
    /// The live hops, in order (dead ones skipped); fails only when none is alive.
    Dynamic,
    /// `chain_len` hops picked at random.
    Random,
    /// `chain_len` hops, starting after the last hop the previous connection used.
    RoundRobin,
}

impl ChainMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainMode::Strict => "strict",
            ChainMode::Dynamic => "dynamic",
            ChainMode::Random => "random",
            ChainMode::RoundRobin => "round_robin",
        }
    }
    /// Random and round-robin chains use `chain_len` hops per connection.
    pub fn uses_chain_len(self) -> bool {
        matches!(self, ChainMode::Random | ChainMode::RoundRobin)
    }
}

impl std::str::FromStr for ChainMode {
    type Err = String;
    /// `strict`, `dynamic`, `random`, `round_robin` (also `round-robin`, and the
    /// proxychains spellings `strict_chain`...), in any case.
    fn from_str(s: &str) -> Result<Self, String> {
        let l = s.trim().to_ascii_lowercase().replace('-', "_");
        match l.strip_suffix("_chain").unwrap_or(&l) {
            "strict" => Ok(ChainMode::Strict),
            "dynamic" => Ok(ChainMode::Dynamic),
            "random" => Ok(ChainMode::Random),
            "round_robin" => Ok(ChainMode::RoundRobin),
            _ => Err(format!(
                "\"{}\" is not strict, dynamic, random or round_robin",
                s.chars().take(40).collect::<String>().escape_debug()
            )),
        }
    }
}

/// A named proxy chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// [`crate::rules::DEFAULT_CHAIN`] for the one used when no rule names another.
    pub name: String,
    pub mode: ChainMode,
    /// Hops per connection for random and round-robin chains (1 or more); else 1.
    pub chain_len: usize,
    /// First hop first. Never empty in a checked configuration.
    pub hops: Vec<ProxyUrl>,
}

impl Chain {
    /// A strict chain.
    pub fn strict(name: &str, hops: Vec<ProxyUrl>) -> Chain {
        Chain {
            name: name.to_string(),
            mode: ChainMode::Strict,
            chain_len: 1,
            hops,
        }
    }

    /// Whether names go to the proxy when `proxy_dns` is not set: when every hop that can
    /// end the chain resolves names (the last one for a strict chain, any for the others).
    /// An empty chain says yes (nothing is resolved locally by mistake).
    pub fn default_remote_dns(&self) -> bool {
        match self.mode {
            ChainMode::Strict => self.hops.last().is_none_or(|h| h.scheme.remote_dns()),
            _ => self.hops.iter().all(|h| h.scheme.remote_dns()),
        }
    }

    /// Name, hops and length make sense. The message names the chain.
    pub fn check(&self) -> Result<(), String> {
        if !crate::rules::valid_chain_name(&self.name) {
            return Err(format!(
                "bad chain name \"{}\" (letters, digits, '_' and '-', at most 64)",
                self.name
                    .chars()
                    .take(64)
                    .collect::<String>()
                    .escape_debug()
            ));
        }
        if self.hops.is_empty() {
            return Err(format!("chain {} has no proxies", self.name));
        }
        if self.chain_len == 0 {
            return Err(format!("chain {}: chain_len must be at least 1", self.name));
        }
        if self.mode.uses_chain_len() && self.chain_len > self.hops.len() {
            return Err(format!(
                "chain {}: chain_len {} is more than its {} {}",
                self.name,
                self.chain_len,
                self.hops.len(),
                if self.hops.len() == 1 {
                    "proxy"
                } else {
                    "proxies"
                }
            ));
        }
        Ok(())
    }
}

/// A remote-DNS placeholder block must be IPv4, /4 to /24.
pub fn check_remote_dns_subnet(c: &Cidr) -> Result<(), String> {
    if !c.addr.is_ipv4() || !(4..=24).contains(&c.prefix) {
        return Err(format!(
            "remote DNS subnet {c} must be an IPv4 block from /4 to /24"
        ));
    }
    crate::placeholder::Block::new(c).map(|_| ())
}

/// When `listen()` turns into a SOCKS BIND (see the README, "BIND").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindPolicy {
    /// When the process has a proxied connection, the socket is bound to an ephemeral port on a
    /// non-loopback address, and the program shows it will announce the address to the remote
    /// side (it asked a proxied connection's `getsockname()` before listening, listens with a
    /// backlog of one, or bound to the proxy-side address proxify reported). Other servers
    /// stay local.
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

/// A DNS server as `--dns-server` names it: `ADDR`, `ADDR:PORT`, `[V6ADDR]:PORT`, `NAME` or
/// `NAME:PORT` (port 53 when none; a name is resolved by the proxy). Returns the address and
/// port to ask the proxy for.
pub fn parse_dns_server(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let bad = || {
        format!(
            "\"{}\" is not ADDR, ADDR:PORT, [V6ADDR]:PORT or NAME[:PORT]",
            s.escape_debug()
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), 53));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (s, 53),
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !name_ok || port == 0 {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The default chain's hops, first hop first (the same as
    /// `default_chain().hops`, kept for the callers that only know one chain). Empty = no
    /// default chain (the shim then refuses every connection no rule sends elsewhere: fail
    /// closed).
    pub proxies: Vec<ProxyUrl>,
    /// Blocks reached directly, before any rule (`--direct`).
    pub direct: Vec<Cidr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub log: Option<String>,
    pub log_file: Option<String>,
    /// The trace file (`--trace`).
    pub trace: Option<String>,
    /// The DNS server that queries the responder cannot answer go to, through the proxy
    /// (`--dns-server`, checked by [`parse_dns_server`]).
    pub dns_server: Option<String>,
    pub quiet: bool,
    pub bind: BindPolicy,
    /// Every chain, the default one (named `default`, hops = `proxies`) first when there is
    /// one. Names are unique.
    pub chains: Vec<Chain>,
    /// Routing rules (first match wins) and the dnat table.
    pub rules: Rules,
    /// Remote DNS on or off; `None`: as the default chain's schemes say.
    pub proxy_dns: Option<bool>,
    /// Placeholder block for remote DNS; `None`: [`DEFAULT_REMOTE_DNS_SUBNET`].
    pub remote_dns_subnet: Option<Cidr>,
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
            trace: None,
            dns_server: None,
            quiet: false,
            bind: BindPolicy::Auto,
            chains: Vec::new(),
            rules: Rules::default(),
            proxy_dns: None,
            remote_dns_subnet: None,
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

/// Percent-encodes `%` and every byte outside `!`..=`~` (origins in `PROXIFY_RULES`).
fn encode_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes [`encode_field`]; a bad escape is kept as is (origins are only shown).
fn decode_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&x| (x as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The non-blank lines of a list variable, with their 1-based line numbers.
fn lines(v: &str) -> impl Iterator<Item = (usize, &str)> {
    v.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// A `PROXIFY_RULES` line: `PATTERN ACTION [#ORIGIN]`.
pub fn parse_rule_line(line: &str) -> Result<Rule, String> {
    let (body, origin) = match line.find(" #").or_else(|| line.find("\t#")) {
        Some(i) => {
            let o = line[i + 1..].trim();
            if o.contains(char::is_whitespace) {
                return Err("the #ORIGIN must be the last field".to_string());
            }
            (&line[..i], Some(decode_field(&o[1..])))
        }
        None => (line, None),
    };
    let mut r: Rule = body.parse()?;
    r.origin = origin;
    Ok(r)
}

/// The `PROXIFY_RULES` line for `r`.
pub fn rule_line(r: &Rule) -> String {
    match &r.origin {
        Some(o) => format!("{r} #{}", encode_field(o)),
        None => r.to_string(),
    }
}

/// Parses a `PROXIFY_CHAINS` value: the default chain's mode and length (from its line, if
/// any) and the other chains, in order. Errors name the variable and the line.
#[allow(clippy::type_complexity)]
pub fn parse_chains_var(v: &str) -> Result<(Option<(ChainMode, usize)>, Vec<Chain>), ConfigError> {
    let mut default_mode = None;
    let mut named = Vec::new();
    for (n, line) in lines(v) {
        let at = |e: String| ConfigError(format!("{ENV_CHAINS} (line {n}): {e}"));
        let mut f = line.split_whitespace();
        let (Some(name), Some(mode), Some(len)) = (f.next(), f.next(), f.next()) else {
            return Err(at("expected NAME MODE CHAIN_LEN [PROXY_URL...]".into()));
        };
        let mode: ChainMode = mode.parse().map_err(at)?;
        let chain_len: usize = match len.parse() {
            Ok(n) if n >= 1 && len.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(at(format!("bad chain length \"{}\"", len.escape_debug()))),
        };
        let mut hops = Vec::new();
        for (i, u) in f.enumerate() {
            let url: ProxyUrl = u.parse().map_err(|e| at(format!("proxy {}: {e}", i + 1)))?;
            hops.push(url);
        }
        if name == DEFAULT_CHAIN {
            if !hops.is_empty() {
                return Err(at(format!(
                    "the default chain's proxies come from {ENV_PROXY}"
                )));
            }
            if default_mode.replace((mode, chain_len)).is_some() {
                return Err(at("chain default is defined twice".into()));
            }
        } else {
            named.push(Chain {
                name: name.to_string(),
                mode,
                chain_len,
                hops,
            });
        }
    }
    Ok((default_mode, named))
}

/// Parses a `PROXIFY_RULES` value. Errors name the variable and the line.
pub fn parse_rules_var(v: &str) -> Result<Vec<Rule>, ConfigError> {
    lines(v)
        .map(|(n, line)| {
            parse_rule_line(line).map_err(|e| ConfigError(format!("{ENV_RULES} (line {n}): {e}")))
        })
        .collect()
}

/// Parses a `PROXIFY_DNAT` value. Errors name the variable and the line.
pub fn parse_dnat_var(v: &str) -> Result<Vec<Dnat>, ConfigError> {
    lines(v)
        .map(|(n, line)| {
            line.parse::<Dnat>()
                .map_err(|e| ConfigError(format!("{ENV_DNAT} (line {n}): {e}")))
        })
        .collect()
}

/// Parses `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "\"{}\" is not 1/true/yes/on or 0/false/no/off",
            v.chars().take(40).collect::<String>().escape_debug()
        )),
    }
}

impl Config {
    /// The chain named `name`, if any.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The chain named [`DEFAULT_CHAIN`], if any.
    pub fn default_chain(&self) -> Option<&Chain> {
        self.chain(DEFAULT_CHAIN)
    }

    /// Whether names bound for `chain` go to the proxy: `proxy_dns` when set, else
    /// [`Chain::default_remote_dns`].
    pub fn remote_dns(&self, chain: &Chain) -> bool {
        self.proxy_dns.unwrap_or_else(|| chain.default_remote_dns())
    }

    /// The placeholder block for remote DNS.
    pub fn remote_dns_subnet(&self) -> Cidr {
        self.remote_dns_subnet.unwrap_or(DEFAULT_REMOTE_DNS_SUBNET)
    }

    /// Where a destination goes: loopback direct, then the `direct` blocks, then the rules
    /// (first match), then the default chain. Arguments as [`Rules::decide`]; apply
    /// [`Rules::dnat`] to an address destination first.
    pub fn decide(&self, ip: Option<IpAddr>, name: Option<&str>, port: u16) -> Decision<'_> {
        if let Some(ip) = ip {
            if !crate::cidr::is_loopback(&ip) {
                if let Some(c) = self.direct.iter().find(|c| c.contains(&ip)) {
                    return Decision {
                        verdict: Verdict::Direct,
                        reason: Reason::Excluded(c),
                    };
                }
            }
        }
        self.rules.decide(ip, name, port)
    }

    /// Makes `proxies` and the default chain agree: with a default chain, `proxies` becomes
    /// its hops; without one, non-empty `proxies` become a strict default chain (first).
    pub fn sync_default_chain(&mut self) {
        match self.chains.iter().position(|c| c.name == DEFAULT_CHAIN) {
            Some(i) => self.proxies = self.chains[i].hops.clone(),
            None if !self.proxies.is_empty() => self
                .chains
                .insert(0, Chain::strict(DEFAULT_CHAIN, self.proxies.clone())),
            None => {}
        }
    }

    /// The whole makes sense: every chain valid and uniquely named, `proxies` equal to the
    /// default chain's hops, every chain a rule names defined, the placeholder block usable.
    pub fn check(&self) -> Result<(), String> {
        for (i, c) in self.chains.iter().enumerate() {
            c.check()?;
            if self.chains[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("chain {} is defined twice", c.name));
            }
        }
        match self.default_chain() {
            Some(d) if d.hops != self.proxies => {
                return Err("internal: proxies differ from the default chain's hops".into())
            }
            None if !self.proxies.is_empty() => {
                return Err("internal: proxies without a default chain".into())
            }
            _ => {}
        }
        self.check_rules()?;
        if let Some(c) = &self.remote_dns_subnet {
            check_remote_dns_subnet(c)?;
        }
        self.check_placeholder_overlap()?;
        Ok(())
    }

    /// The placeholder block shares no address with a block sent direct (`direct` blocks and
    /// `direct` rules on address blocks): such an address would mean two things. A catch-all
    /// (`0.0.0.0/0`, `::/0`: "every other address") is no clash: placeholders are judged by
    /// their name before any address rule.
    fn check_placeholder_overlap(&self) -> Result<(), String> {
        let sub = self.remote_dns_subnet();
        let block = crate::placeholder::Block::new(&sub)?;
        let clash = |c: &Cidr, what: String| {
            if c.prefix == 0 || !block.overlaps(c) {
                return Ok(());
            }
            Err(format!(
                "remote DNS subnet {sub} overlaps {what}: an address there could be a \
                 placeholder or a direct destination (choose a block the rules leave alone)"
            ))
        };
        for c in &self.direct {
            clash(c, format!("direct block {c}"))?;
        }
        for r in &self.rules.rules {
            if let (crate::rules::HostMatch::Net(c), crate::rules::Action::Direct) =
                (&r.pattern.host, &r.action)
            {
                let at = r
                    .origin
                    .as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default();
                clash(c, format!("direct rule \"{r}\"{at}"))?;
            }
        }
        Ok(())
    }

    /// Every chain a rule names is defined.
    fn check_rules(&self) -> Result<(), String> {
        for (rule, name) in self.rules.chains_used() {
            if self.chain(name).is_none() {
                let at = rule
                    .origin
                    .as_deref()
                    .map(|o| format!(" ({o})"))
                    .unwrap_or_default();
                return Err(if name == DEFAULT_CHAIN {
                    format!(
                        "rule \"{rule}\"{at} uses the default chain, but no proxy is configured"
                    )
                } else {
                    format!("rule \"{rule}\"{at} names chain {name}, which is not defined")
                });
            }
        }
        Ok(())
    }

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
        c.trace = var(&get, ENV_TRACE);
        if let Some(v) = var(&get, ENV_DNS_SERVER) {
            parse_dns_server(&v).map_err(|e| ConfigError(format!("{ENV_DNS_SERVER}: {e}")))?;
            c.dns_server = Some(v);
        }
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
        let (default_mode, mut named) = match var(&get, ENV_CHAINS) {
            Some(v) => parse_chains_var(&v)?,
            None => (None, Vec::new()),
        };
        if !c.proxies.is_empty() {
            let (mode, chain_len) = default_mode.unwrap_or((ChainMode::Strict, 1));
            c.chains.push(Chain {
                name: DEFAULT_CHAIN.to_string(),
                mode,
                chain_len,
                hops: c.proxies.clone(),
            });
        } else if default_mode.is_some() {
            return Err(ConfigError(format!(
                "{ENV_CHAINS}: chain default has no proxies (set {ENV_PROXY})"
            )));
        }
        c.chains.append(&mut named);
        if let Some(v) = var(&get, ENV_RULES) {
            c.rules.rules = parse_rules_var(&v)?;
        }
        if let Some(v) = var(&get, ENV_DNAT) {
            c.rules.dnat = parse_dnat_var(&v)?;
        }
        if let Some(v) = var(&get, ENV_PROXY_DNS) {
            c.proxy_dns =
                Some(parse_bool(&v).map_err(|e| ConfigError(format!("{ENV_PROXY_DNS}: {e}")))?);
        }
        if let Some(v) = var(&get, ENV_REMOTE_DNS_SUBNET) {
            let net: Cidr = v
                .parse()
                .map_err(|e| ConfigError(format!("{ENV_REMOTE_DNS_SUBNET}: {e}")))?;
            check_remote_dns_subnet(&net)
                .map_err(|e| ConfigError(format!("{ENV_REMOTE_DNS_SUBNET}: {e}")))?;
            c.remote_dns_subnet = Some(net);
        }
        for (i, ch) in c.chains.iter().enumerate() {
            ch.check()
                .map_err(|e| ConfigError(format!("{ENV_CHAINS}: {e}")))?;
            if c.chains[..i].iter().any(|o| o.name == ch.name) {
                return Err(ConfigError(format!(
                    "{ENV_CHAINS}: chain {} is defined twice",
                    ch.name
                )));
            }
        }
        c.check_rules()
            .map_err(|e| ConfigError(format!("{ENV_RULES}: {e}")))?;
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
        let lines = |items: Vec<String>| {
            if items.is_empty() {
                None
            } else {
                Some(items.join("\n"))
            }
        };
        let default_hops = self.default_chain().map_or(&self.proxies, |c| &c.hops);
        let chains = self
            .chains
            .iter()
            .filter_map(|ch| {
                let head = format!("{} {} {}", ch.name, ch.mode.as_str(), ch.chain_len);
                if ch.name == DEFAULT_CHAIN {
                    // Hops in PROXIFY_PROXY; a plain strict default needs no line.
                    (ch.mode != ChainMode::Strict || ch.chain_len != 1).then_some(head)
                } else {
                    let hops: Vec<String> = ch.hops.iter().map(ProxyUrl::to_url_string).collect();
                    Some(format!("{head} {}", hops.join(" ")))
                }
            })
            .collect();
        vec![
            (
                ENV_PROXY,
                join(default_hops.iter().map(ProxyUrl::to_url_string).collect()),
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
            (ENV_TRACE, self.trace.clone().filter(|s| !s.is_empty())),
            (
                ENV_DNS_SERVER,
                self.dns_server.clone().filter(|s| !s.is_empty()),
            ),
            (
                ENV_QUIET,
                Some(if self.quiet { "1" } else { "0" }.to_string()),
            ),
            (ENV_BIND, Some(self.bind.as_str().to_string())),
            (ENV_CHAINS, lines(chains)),
            (
                ENV_RULES,
                lines(self.rules.rules.iter().map(rule_line).collect()),
            ),
            (
                ENV_DNAT,
                lines(self.rules.dnat.iter().map(ToString::to_string).collect()),
            ),
            (
                ENV_PROXY_DNS,
                self.proxy_dns
                    .map(|b| if b { "1" } else { "0" }.to_string()),
            ),
            (
                ENV_REMOTE_DNS_SUBNET,
                self.remote_dns_subnet.map(|c| c.to_string()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hop_addrs_round_trip() {
        let e = vec![
            (
                "proxy.example:1080".to_string(),
                vec![
                    "198.51.100.1:1080".parse().unwrap(),
                    "[2001:db8:1::1]:1080".parse().unwrap(),
                ],
            ),
            (
                "b.example:3128".to_string(),
                vec!["192.0.2.1:3128".parse().unwrap()],
            ),
        ];
        let v = super::format_hop_addrs(&e);
        assert_eq!(
            v,
            "proxy.example:1080=198.51.100.1:1080,[2001:db8:1::1]:1080;b.example:3128=192.0.2.1:3128"
        );
        assert_eq!(super::parse_hop_addrs(&v), e);
        assert!(super::parse_hop_addrs("x:1=nope;=1.2.3.4:5").is_empty());
    }

    #[test]
    fn dns_server_forms() {
        assert_eq!(
            parse_dns_server("203.0.113.53"),
            Ok(("203.0.113.53".into(), 53))
        );
        assert_eq!(
            parse_dns_server("203.0.113.53:5353"),
            Ok(("203.0.113.53".into(), 5353))
        );
        assert_eq!(
            parse_dns_server("[2001:db8::53]:53"),
            Ok(("2001:db8::53".into(), 53))
        );
        assert_eq!(
            parse_dns_server("2001:db8::53"),
            Ok(("2001:db8::53".into(), 53))
        );
        assert_eq!(
            parse_dns_server("NS.example:54"),
            Ok(("ns.example".into(), 54))
        );
        for bad in [
            "",
            "ns..example",
            "ns.example:0",
            "ns.example:x",
            "a b",
            "host:99999",
        ] {
            assert!(parse_dns_server(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cred_from_round_trips_and_falls_back() {
        let v = format_cred_from(&[
            ("default".into(), 0, "the proxy URL given with -x".into()),
            ("corp".into(), 1, "c.toml:7\t(key hops)".into()),
        ]);
        assert_eq!(
            cred_from(Some(&v), "default", 0),
            "the proxy URL given with -x"
        );
        assert_eq!(cred_from(Some(&v), "corp", 1), "c.toml:7 (key hops)");
        assert_eq!(
            cred_from(Some(&v), "corp", 0),
            "the environment variable PROXIFY_CHAINS"
        );
        assert_eq!(
            cred_from(None, "default", 0),
            "the environment variable PROXIFY_PROXY"
        );
    }

    use super::*;
    use crate::rules::{Action, HostMatch, Pattern};
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
            (ENV_PROXY, "ftp://u:hunter2@proxy"),
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
                "socks5h://192.0.2.2:1080?optimistic=1".parse().unwrap(),
            ],
            direct: vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/48".parse().unwrap(),
            ],
            connect_timeout: Duration::from_millis(1250),
            handshake_timeout: Duration::new(3, 1),
            log: Some("proxify=debug,warn".to_string()),
            log_file: Some("/tmp/proxify test.log".to_string()),
            trace: Some("/tmp/proxify trace.jsonl".to_string()),
            dns_server: Some("[2001:db8::53]:5353".to_string()),
            quiet: true,
            bind: BindPolicy::Always,
            chains: Vec::new(),
            rules: Rules::default(),
            proxy_dns: None,
            remote_dns_subnet: None,
        };
        // The proxies make the default chain.
        let mut full = full;
        full.sync_default_chain();
        assert_eq!(full.chains.len(), 1);
        assert_eq!(full.chains[0].hops, full.proxies);
        let vars = full.to_env();
        for k in [
            ENV_PROXY,
            ENV_DIRECT,
            ENV_CONNECT_TIMEOUT,
            ENV_HANDSHAKE_TIMEOUT,
            ENV_LOG,
            ENV_LOG_FILE,
            ENV_TRACE,
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

    fn url(s: &str) -> ProxyUrl {
        s.parse().unwrap()
    }

    fn rich() -> Config {
        let mut rules = Rules::default();
        for (r, o) in [
            (
                "*.corp.example:80-443 proxy corp",
                Some("/tmp/my config.toml:7"),
            ),
            ("10.0.0.0/8 direct", Some("NO_PROXY")),
            ("[2001:db8::/32]:22 deny", None),
            ("* proxy", Some("--rule 100% #sure\n")),
        ] {
            let mut rule: Rule = r.parse().unwrap();
            rule.origin = o.map(str::to_string);
            rules.rules.push(rule);
        }
        rules.dnat = vec![
            "192.0.2.1:1234 198.51.100.2:443".parse().unwrap(),
            "[2001:db8::1] 192.0.2.9".parse().unwrap(),
        ];
        let mut c = Config {
            proxies: vec![
                url("socks5h://u:p%40ss@192.0.2.1"),
                url("http://alice:s%20cret@proxy.example:3128"),
            ],
            chains: vec![
                Chain {
                    name: DEFAULT_CHAIN.into(),
                    mode: ChainMode::RoundRobin,
                    chain_len: 2,
                    hops: Vec::new(),
                },
                Chain {
                    name: "corp".into(),
                    mode: ChainMode::Dynamic,
                    chain_len: 1,
                    hops: vec![url("socks4a://id@[2001:db8::7]:1081"), url("http://h")],
                },
                Chain::strict("t-1", vec![url("socks5://192.0.2.2")]),
            ],
            rules,
            proxy_dns: Some(false),
            remote_dns_subnet: Some("100.64.0.0/10".parse().unwrap()),
            ..Config::default()
        };
        c.chains[0].hops = c.proxies.clone();
        c
    }

    #[test]
    fn chains_rules_dnat_round_trip() {
        let c = rich();
        c.check().unwrap();
        let vars = c.to_env();
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(
            get(ENV_CHAINS).unwrap(),
            "default round_robin 2\n\
             corp dynamic 1 socks4a://id@[2001:db8::7]:1081 http://h:8080\n\
             t-1 strict 1 socks5://192.0.2.2:1080"
        );
        assert_eq!(
            get(ENV_RULES).unwrap(),
            "*.corp.example:80-443 proxy corp #/tmp/my%20config.toml:7\n\
             10.0.0.0/8 direct #NO_PROXY\n\
             [2001:db8::/32]:22 deny\n\
             * proxy default #--rule%20100%25%20#sure%0A"
        );
        assert_eq!(
            get(ENV_DNAT).unwrap(),
            "192.0.2.1:1234 198.51.100.2:443\n2001:db8::1 192.0.2.9"
        );
        assert_eq!(get(ENV_PROXY_DNS).as_deref(), Some("0"));
        assert_eq!(get(ENV_REMOTE_DNS_SUBNET).as_deref(), Some("100.64.0.0/10"));
        assert_eq!(from_vars(vars), c);
        // A strict default chain needs no line; no chains, rules or dnat: no variables.
        let plain = Config {
            proxies: vec![url("socks5h://h")],
            ..Config::default()
        };
        let mut synced = plain.clone();
        synced.sync_default_chain();
        for (k, v) in plain.to_env() {
            if [
                ENV_CHAINS,
                ENV_RULES,
                ENV_DNAT,
                ENV_PROXY_DNS,
                ENV_REMOTE_DNS_SUBNET,
            ]
            .contains(&k)
            {
                assert_eq!(v, None, "{k}");
            }
        }
        assert_eq!(from_vars(plain.to_env()), synced);
        assert_eq!(from_vars(synced.to_env()), synced);
    }

    #[test]
    fn hand_written_lists() {
        let c = Config::from_env_with(env(&[
            (ENV_PROXY, "socks5://192.0.2.1"),
            (
                ENV_CHAINS,
                "\n  default   dynamic 1 \n\ntor random 1 socks5h://127.0.0.1:9050 socks4a://192.0.2.3\n",
            ),
            (ENV_RULES, "*.onion proxy tor\n\n\t192.0.2.0/24:22 direct\t#here\n"),
            (ENV_DNAT, " 192.0.2.5 192.0.2.6:80 \n"),
            (ENV_PROXY_DNS, "on"),
        ]))
        .unwrap();
        assert_eq!(c.chains.len(), 2);
        assert_eq!(c.default_chain().unwrap().mode, ChainMode::Dynamic);
        assert_eq!(c.proxies, c.default_chain().unwrap().hops);
        assert_eq!(c.chain("tor").unwrap().hops.len(), 2);
        assert_eq!(c.rules.rules.len(), 2);
        assert_eq!(c.rules.rules[1].origin.as_deref(), Some("here"));
        assert_eq!(c.proxy_dns, Some(true));
        assert_eq!(c.remote_dns_subnet(), DEFAULT_REMOTE_DNS_SUBNET);
        let d = c.decide(None, Some("x.onion"), 80);
        assert_eq!(d.verdict, Verdict::Proxy("tor"));
        assert_eq!(
            c.rules.dnat("192.0.2.5:22".parse().unwrap()),
            Some("192.0.2.6:80".parse().unwrap())
        );
    }

    #[test]
    fn placeholder_block_must_not_overlap_direct_blocks() {
        let mut c = rich();
        c.remote_dns_subnet = Some("198.18.0.0/15".parse().unwrap());
        c.direct = vec!["198.19.0.0/16".parse().unwrap()];
        let e = c.check().unwrap_err();
        assert!(e.contains("overlaps direct block 198.19.0.0/16"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        c.direct = vec![
            "192.168.0.0/16".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ];
        c.check().unwrap();
        c.rules.rules.push(Rule {
            pattern: Pattern {
                host: HostMatch::Net("198.18.7.0/24".parse().unwrap()),
                ports: None,
            },
            action: Action::Direct,
            origin: Some("here".into()),
        });
        let e = c.check().unwrap_err();
        assert!(
            e.contains("direct rule \"198.18.7.0/24 direct\" (here)"),
            "{e}"
        );
        // proxychains' `remote_dns_subnet 127`: the loopback /16 it skips is no overlap.
        c.rules.rules.pop();
        c.remote_dns_subnet = Some("127.0.0.0/8".parse().unwrap());
        c.direct = vec!["127.0.0.0/16".parse().unwrap()];
        c.check().unwrap();
    }

    #[test]
    fn decide_puts_direct_blocks_first() {
        let mut c = rich();
        c.direct = vec!["10.1.0.0/16".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let d = c.decide(ip("10.1.2.3"), None, 80);
        assert_eq!(d.verdict, Verdict::Direct);
        assert!(matches!(d.reason, Reason::Excluded(_)));
        assert_eq!(d.to_string(), "direct block 10.1.0.0/16");
        assert!(matches!(
            c.decide(ip("10.2.0.1"), None, 80).reason,
            Reason::Rule { index: 1, .. }
        ));
        assert_eq!(c.decide(ip("127.0.0.1"), None, 80).reason, Reason::Loopback);
        assert_eq!(
            c.decide(None, Some("a.corp.example"), 443).verdict,
            Verdict::Proxy("corp")
        );
        assert_eq!(c.decide(ip("2001:db8::1"), None, 22).verdict, Verdict::Deny);
    }

    #[test]
    fn remote_dns_defaults_by_scheme() {
        let strict = |urls: &[&str]| Chain::strict("x", urls.iter().map(|u| url(u)).collect());
        assert!(strict(&["socks5://a", "socks5h://b"]).default_remote_dns());
        assert!(!strict(&["socks5h://a", "socks4://b"]).default_remote_dns());
        assert!(strict(&["http://a"]).default_remote_dns());
        let mut dynamic = strict(&["socks5://a", "socks5h://b"]);
        dynamic.mode = ChainMode::Dynamic;
        assert!(!dynamic.default_remote_dns());
        dynamic.hops[0] = url("socks4a://a");
        assert!(dynamic.default_remote_dns());
        let mut c = Config::default();
        let ch = strict(&["socks5://a"]);
        assert!(!c.remote_dns(&ch));
        c.proxy_dns = Some(true);
        assert!(c.remote_dns(&ch));
        for (m, want) in [
            ("strict", ChainMode::Strict),
            ("Dynamic_Chain", ChainMode::Dynamic),
            ("random", ChainMode::Random),
            ("round-robin", ChainMode::RoundRobin),
            ("round_robin_chain", ChainMode::RoundRobin),
        ] {
            assert_eq!(m.parse(), Ok(want), "{m}");
        }
        assert!("fast".parse::<ChainMode>().is_err());
    }

    #[test]
    fn list_errors_name_variable_and_line() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (&[(ENV_CHAINS, "a strict")], ENV_CHAINS, "line 1"),
            (
                &[(ENV_CHAINS, "\na fast 1 socks5://h")],
                ENV_CHAINS,
                "line 2",
            ),
            (
                &[(ENV_CHAINS, "a strict 0 socks5://h")],
                ENV_CHAINS,
                "length",
            ),
            (
                &[(ENV_CHAINS, "a strict x socks5://h")],
                ENV_CHAINS,
                "length",
            ),
            (
                &[(ENV_CHAINS, "a strict 1 ftp://u:hunter2@h")],
                ENV_CHAINS,
                "proxy 1",
            ),
            (&[(ENV_CHAINS, "a strict 1")], ENV_CHAINS, "no proxies"),
            (
                &[(ENV_CHAINS, "a random 3 socks5://h socks5://i")],
                ENV_CHAINS,
                "chain_len 3",
            ),
            (
                &[(ENV_CHAINS, "a.b strict 1 socks5://h")],
                ENV_CHAINS,
                "chain name",
            ),
            (
                &[(ENV_CHAINS, "a strict 1 socks5://h\na strict 1 socks5://i")],
                ENV_CHAINS,
                "twice",
            ),
            (&[(ENV_CHAINS, "default dynamic 1")], ENV_CHAINS, ENV_PROXY),
            (
                &[
                    (ENV_PROXY, "socks5://h"),
                    (ENV_CHAINS, "default strict 1 socks5://h"),
                ],
                ENV_CHAINS,
                ENV_PROXY,
            ),
            (&[(ENV_RULES, "*.x direct\nbogus")], ENV_RULES, "line 2"),
            (&[(ENV_RULES, "* proxy nowhere")], ENV_RULES, "nowhere"),
            (&[(ENV_RULES, "* proxy")], ENV_RULES, "no proxy"),
            (&[(ENV_RULES, "* direct #a b")], ENV_RULES, "last"),
            (&[(ENV_DNAT, "192.0.2.1")], ENV_DNAT, "line 1"),
            (&[(ENV_PROXY_DNS, "maybe")], ENV_PROXY_DNS, "maybe"),
            (
                &[(ENV_REMOTE_DNS_SUBNET, "2001:db8::/96")],
                ENV_REMOTE_DNS_SUBNET,
                "IPv4",
            ),
            (
                &[(ENV_REMOTE_DNS_SUBNET, "10.0.0.0/30")],
                ENV_REMOTE_DNS_SUBNET,
                "/24",
            ),
            (
                &[(ENV_REMOTE_DNS_SUBNET, "nope")],
                ENV_REMOTE_DNS_SUBNET,
                "nope",
            ),
        ];
        for (vars, starts, needle) in cases {
            let e = Config::from_env_with(env(vars)).unwrap_err().0;
            assert!(e.starts_with(starts), "{vars:?}: {e}");
            assert!(e.contains(needle), "{vars:?}: {e}");
            assert!(!e.contains("hunter2") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn origins_survive_any_bytes() {
        for o in ["", "a b", "100%", "#", "%zz", "é\t\n\r", " x "] {
            assert_eq!(decode_field(&encode_field(o)), o);
            assert!(!encode_field(o).contains(char::is_whitespace));
        }
        assert_eq!(decode_field("%zz%4"), "%zz%4");
    }
}
