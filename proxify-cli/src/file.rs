//! The configuration file: proxify's own TOML, or a proxychains.conf. Every error names the
//! file and the line.
//!
//! TOML keys (all optional):
//!
//! ```toml
//! proxy = "socks5h://user:pass@proxy.example:1080"   # or a list: the default chain (strict)
//!                                                     # per-proxy options are the URL's own:
//!                                                     # ?pipeline=1, ?optimistic=1
//! direct = ["10.0.0.0/8"]                             # reached directly, before the rules
//! connect_timeout = 5                                 # seconds
//! timeout = 5                                         # seconds for the proxy handshake
//! log = "info"                                        # PROXIFY_LOG filter
//! log_file = "/tmp/proxify.log"
//! trace = "/tmp/proxify-trace.jsonl"                  # one JSON line per decision and outcome
//! dns_server = "203.0.113.53"                         # queries proxify cannot answer, through the proxy
//! quiet = false
//! no_proxy_env = false                                # true: NO_PROXY/no_proxy become direct rules
//! bind = "auto"                                       # auto, always or never
//! proxy_dns = true                                    # remote DNS on/off (default: by scheme)
//! remote_dns_subnet = "240.0.0.0/4"                   # or 224 (= 224.0.0.0/8)
//! dnat = ["192.0.2.1:1234 198.51.100.2:443"]
//! mode = "auto"                                       # proxify run: auto, preload or supervise
//! enforce = false                                     # proxify run: preload and supervise
//!
//! [[chain]]                    # more chains; name = "default" instead of `proxy`
//! name = "corp"
//! mode = "dynamic"             # strict (default), dynamic, random, round_robin
//! chain_len = 1                # random and round_robin
//! hops = ["socks5://192.0.2.1:1080", "http://user:pass@192.0.2.2:3128"]
//!
//! [[rule]]                     # first match wins
//! match = "*.corp.example:80-443"
//! action = "proxy corp"        # direct, deny, proxy [CHAIN]
//! ```
//!
//! Size: ~850 lines, ~250 of them unit tests (11): both file formats become one `FileSettings`,
//! and `parse` (~230 lines) checks each TOML key, keeping its line for the error messages.

use proxify_core::cidr::Cidr;
use proxify_core::config::{parse_seconds, BindPolicy, Chain, ChainMode};
use proxify_core::proxychains;
use proxify_core::rules::{Action, Dnat, Pattern, Rule, DEFAULT_CHAIN};
use proxify_core::url::ProxyUrl;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// A value and where it came from (`-x`, `env PROXIFY_PROXY`, `FILE:LINE`, `default`).
#[derive(Clone, Debug, PartialEq)]
pub struct Src<T> {
    pub value: T,
    pub from: String,
}

/// The values of `mode` (and `--mode`, `PROXIFY_MODE`).
pub const RUN_MODES: [&str; 3] = ["auto", "preload", "supervise"];

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
    pub trace: Option<Src<String>>,
    pub dns_server: Option<Src<String>>,
    pub quiet: Option<Src<bool>>,
    /// `no_proxy_env`: read NO_PROXY/no_proxy as direct rules.
    pub no_proxy_env: Option<Src<bool>>,
    pub bind: Option<Src<BindPolicy>>,
    pub proxy_dns: Option<Src<bool>>,
    /// A proxychains.conf without `proxy_dns`: off, but only for the file's own proxies.
    pub proxy_dns_implicit: bool,
    pub remote_dns_subnet: Option<Src<Cidr>>,
    /// `mode`: how `proxify run` reaches programs (auto, preload, supervise).
    pub run_mode: Option<Src<String>>,
    /// `enforce`: `proxify run` preloads and supervises.
    pub enforce: Option<Src<bool>>,
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
            trace: None,
            dns_server: None,
            quiet: None,
            no_proxy_env: None,
            bind: None,
            proxy_dns: None,
            proxy_dns_implicit: false,
            remote_dns_subnet: None,
            run_mode: None,
            enforce: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    proxy: Option<Spanned<ProxyList>>,
    direct: Option<Spanned<Vec<Spanned<String>>>>,
    connect_timeout: Option<Spanned<Seconds>>,
    timeout: Option<Spanned<Seconds>>,
    log: Option<Spanned<String>>,
    log_file: Option<Spanned<String>>,
    trace: Option<Spanned<String>>,
    dns_server: Option<Spanned<String>>,
    quiet: Option<Spanned<bool>>,
    no_proxy_env: Option<Spanned<bool>>,
    bind: Option<Spanned<String>>,
    proxy_dns: Option<Spanned<bool>>,
    remote_dns_subnet: Option<Spanned<Subnet>>,
    dnat: Option<Vec<Spanned<String>>>,
    mode: Option<Spanned<String>>,
    enforce: Option<Spanned<bool>>,
    chain: Option<Vec<RawChain>>,
    rule: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: Spanned<String>,
    mode: Option<Spanned<String>>,
    chain_len: Option<Spanned<i64>>,
    hops: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    action: Spanned<String>,
}

/// `proxy = "URL"` or `proxy = ["URL", ...]`; each entry with its span when known.
struct ProxyList(Vec<(Option<Range<usize>>, String)>);

impl<'de> Deserialize<'de> for ProxyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProxyList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a proxy URL string or an array of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ProxyList, E> {
                Ok(ProxyList(vec![(None, s.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ProxyList, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    let span = s.span();
                    v.push((Some(span), s.into_inner()));
                }
                Ok(ProxyList(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number of seconds, integer or decimal.
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Seconds, E> {
                Ok(Seconds(n as f64))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Seconds, E> {
                Ok(Seconds(n as f64))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Seconds, E> {
                Ok(Seconds(n))
            }
        }
        d.deserialize_any(V)
    }
}

/// `remote_dns_subnet = "10.0.0.0/8"` or `= 10` (proxychains' first octet: 10.0.0.0/8).
enum Subnet {
    Text(String),
    Octet(i64),
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Subnet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPv4 block like \"10.0.0.0/8\" or a first octet like 10")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Subnet, E> {
                Ok(Subnet::Octet(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Subnet, E> {
                Ok(Subnet::Octet(i64::try_from(n).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Subnet, E> {
                Ok(Subnet::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Which parser a file needs: a `[ProxyList]` line means proxychains.conf; else TOML.
pub fn detect(text: &str) -> FileKind {
    if proxychains::looks_like_proxychains(text) {
        FileKind::Proxychains
    } else {
        FileKind::Toml
    }
}

/// Reads the file and parses it as `kind` (or as [`detect`] says). The error is one line,
/// without the "proxify: " prefix.
pub fn load(path: &Path, kind: Option<FileKind>) -> Result<FileSettings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {}",
            path.display(),
            crate::io_error_text(&e)
        )
    })?;
    parse_as(&path.display().to_string(), &text, kind)
}

/// Parses `text` of the file called `name`.
pub fn parse_as(name: &str, text: &str, kind: Option<FileKind>) -> Result<FileSettings, String> {
    match kind.unwrap_or_else(|| detect(text)) {
        FileKind::Toml => parse(name, text),
        FileKind::Proxychains => from_proxychains(name, text),
    }
}

/// A proxychains.conf as file settings.
pub fn from_proxychains(name: &str, text: &str) -> Result<FileSettings, String> {
    let pc = proxychains::parse(name, text)?;
    let at = |line: usize| format!("{name}:{line}");
    let mut out = FileSettings::new(name, FileKind::Proxychains);
    out.default_mode_from = Some(match (pc.mode_line, &pc.chain_len) {
        (Some(l), Some(len)) if pc.chain.mode.uses_chain_len() => {
            format!("{} and {}", at(l), at(len.line))
        }
        (Some(l), _) => at(l),
        (None, _) => format!("{name} (no chain type line: dynamic)"),
    });
    out.hops_from = pc.proxy_lines.iter().map(|&l| at(l)).collect();
    out.default_chain = Some(Src {
        value: pc.chain,
        from: name.to_string(),
    });
    out.rules = pc.localnet;
    out.dnat = pc
        .dnat
        .into_iter()
        .map(|d| Src {
            value: d.value,
            from: at(d.line),
        })
        .collect();
    out.proxy_dns = Some(match pc.proxy_dns {
        Some(l) => Src {
            value: true,
            from: at(l),
        },
        None => Src {
            value: false,
            from: format!("{name} (no proxy_dns line)"),
        },
    });
    out.proxy_dns_implicit = pc.proxy_dns.is_none();
    out.remote_dns_subnet = pc.remote_dns_subnet.map(|s| Src {
        value: s.value,
        from: at(s.line),
    });
    out.connect_timeout = pc.connect_timeout.map(|s| Src {
        value: s.value,
        from: at(s.line),
    });
    out.handshake_timeout = pc.read_timeout.map(|s| Src {
        value: s.value,
        from: at(s.line),
    });
    out.quiet = pc.quiet.map(|l| Src {
        value: true,
        from: at(l),
    });
    Ok(out)
}

/// Parses the TOML `text` of the file called `name`.
pub fn parse(name: &str, text: &str) -> Result<FileSettings, String> {
    let at = |span: Option<Range<usize>>| match span {
        Some(s) => format!("{name}:{}", line_of(text, s.start)),
        None => name.to_string(),
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        format!("{}: {msg}", at(e.span()))
    })?;
    let src = |span: Range<usize>| at(Some(span));

    let mut out = FileSettings::new(name, FileKind::Toml);
    if let Some(list) = raw.proxy {
        let outer = list.span();
        let mut hops = Vec::new();
        for (span, s) in list.into_inner().0 {
            let where_ = at(span.or(Some(outer.clone())));
            let url = s.parse::<ProxyUrl>().map_err(|e| {
                let e = crate::scrub(&e.to_string(), &s);
                format!("{where_}: proxy: {e}")
            })?;
            hops.push(url);
            out.hops_from.push(where_);
        }
        if hops.is_empty() {
            return Err(format!("{}: proxy: the list is empty", src(outer)));
        }
        out.default_chain = Some(Src {
            value: Chain::strict(DEFAULT_CHAIN, hops),
            from: src(outer),
        });
    }
    for rc in raw.chain.unwrap_or_default() {
        let chain_at = src(rc.name.span());
        let e_at = |e: String| format!("{chain_at}: chain: {e}");
        let chain_name = rc.name.get_ref().clone();
        let mode = match &rc.mode {
            Some(m) => m
                .get_ref()
                .parse::<ChainMode>()
                .map_err(|e| format!("{}: mode: {e}", src(m.span())))?,
            None => ChainMode::Strict,
        };
        let chain_len = match &rc.chain_len {
            Some(l) => match usize::try_from(*l.get_ref()) {
                Ok(n) if n >= 1 => n,
                _ => return Err(format!("{}: chain_len must be at least 1", src(l.span()))),
            },
            None => 1,
        };
        let mut hops = Vec::new();
        let mut hops_from = Vec::new();
        for h in rc.hops.get_ref() {
            let url = h.get_ref().parse::<ProxyUrl>().map_err(|e| {
                let e = crate::scrub(&e.to_string(), h.get_ref());
                format!("{}: hops: {e}", src(h.span()))
            })?;
            hops.push(url);
            hops_from.push(src(h.span()));
        }
        let chain = Chain {
            name: chain_name.clone(),
            mode,
            // Kept as written for random/round-robin; 1 for the others.
            chain_len: if mode.uses_chain_len() { chain_len } else { 1 },
            hops,
        };
        if chain.hops.is_empty() {
            return Err(format!("{}: hops: the list is empty", src(rc.hops.span())));
        }
        chain.check().map_err(e_at)?;
        if chain_name == DEFAULT_CHAIN {
            if let Some(p) = &out.default_chain {
                return Err(format!(
                    "{chain_at}: chain default repeats the default chain of {}; keep one",
                    p.from
                ));
            }
            out.default_mode_from = Some(chain_at.clone());
            out.hops_from = hops_from;
            out.default_chain = Some(Src {
                value: chain,
                from: chain_at,
            });
        } else {
            if let Some(prev) = out.chains.iter().find(|c| c.value.name == chain_name) {
                return Err(format!(
                    "{chain_at}: chain {chain_name} is already defined at {}",
                    prev.from
                ));
            }
            out.chains.push(Src {
                value: chain,
                from: chain_at,
            });
        }
    }
    for rr in raw.rule.unwrap_or_default() {
        let pattern: Pattern = rr
            .pattern
            .get_ref()
            .parse()
            .map_err(|e| format!("{}: match: {e}", src(rr.pattern.span())))?;
        let action: Action = rr
            .action
            .get_ref()
            .parse()
            .map_err(|e| format!("{}: action: {e}", src(rr.action.span())))?;
        out.rules.push(Rule {
            pattern,
            action,
            origin: Some(src(rr.pattern.span())),
        });
    }
    for d in raw.dnat.unwrap_or_default() {
        let value: Dnat = d
            .get_ref()
            .parse()
            .map_err(|e| format!("{}: dnat: {e}", src(d.span())))?;
        out.dnat.push(Src {
            value,
            from: src(d.span()),
        });
    }
    if let Some(list) = raw.direct {
        let from = src(list.span());
        let mut direct = Vec::new();
        for s in list.into_inner() {
            let c = s
                .get_ref()
                .parse::<Cidr>()
                .map_err(|e| format!("{}: direct: {e}", src(s.span())))?;
            direct.push(c);
        }
        out.direct = Some(Src {
            value: direct,
            from,
        });
    }
    let secs = |key: &str, v: Option<Spanned<Seconds>>| -> Result<Option<Src<Duration>>, String> {
        match v {
            None => Ok(None),
            Some(v) => {
                let n = v.get_ref().0;
                parse_seconds(&n.to_string())
                    .map(|value| {
                        Some(Src {
                            value,
                            from: src(v.span()),
                        })
                    })
                    .map_err(|e| format!("{}: {key}: {e}", src(v.span())))
            }
        }
    };
    out.connect_timeout = secs("connect_timeout", raw.connect_timeout)?;
    out.handshake_timeout = secs("timeout", raw.timeout)?;
    let plain = |v: Spanned<String>| Src {
        from: src(v.span()),
        value: v.into_inner(),
    };
    out.log = raw.log.map(plain);
    out.log_file = raw.log_file.map(plain);
    out.trace = raw.trace.map(plain);
    if let Some(d) = raw.dns_server {
        proxify_core::config::parse_dns_server(d.get_ref())
            .map_err(|e| format!("{}: dns_server: {e}", src(d.span())))?;
        out.dns_server = Some(plain(d));
    }
    out.quiet = raw.quiet.map(|v| Src {
        from: src(v.span()),
        value: v.into_inner(),
    });
    if let Some(m) = raw.mode {
        if !RUN_MODES.contains(&m.get_ref().as_str()) {
            return Err(format!(
                "{}: mode: unknown mode '{}' (expected auto, preload or supervise)",
                src(m.span()),
                m.get_ref().escape_debug()
            ));
        }
        out.run_mode = Some(plain(m));
    }
    out.enforce = raw.enforce.map(|v| Src {
        from: src(v.span()),
        value: v.into_inner(),
    });
    out.no_proxy_env = raw.no_proxy_env.map(|v| Src {
        from: src(v.span()),
        value: v.into_inner(),
    });
    if let Some(b) = raw.bind {
        let value: BindPolicy = b
            .get_ref()
            .parse()
            .map_err(|e| format!("{}: bind: {e}", src(b.span())))?;
        out.bind = Some(Src {
            value,
            from: src(b.span()),
        });
    }
    out.proxy_dns = raw.proxy_dns.map(|v| Src {
        from: src(v.span()),
        value: v.into_inner(),
    });
    if let Some(s) = raw.remote_dns_subnet {
        let from = src(s.span());
        let net = match s.into_inner() {
            Subnet::Text(t) => t
                .parse::<Cidr>()
                .map_err(|e| format!("{from}: remote_dns_subnet: {e}"))?,
            Subnet::Octet(o) => match u8::try_from(o) {
                Ok(o) => Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(o, 0, 0, 0)),
                    prefix: 8,
                },
                Err(_) => {
                    return Err(format!(
                        "{from}: remote_dns_subnet: {o} is not a first octet (0 to 255)"
                    ))
                }
            },
        };
        proxify_core::config::check_remote_dns_subnet(&net)
            .map_err(|e| format!("{from}: remote_dns_subnet: {e}"))?;
        out.remote_dns_subnet = Some(Src { value: net, from });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\n", 99), 2);
    }

    #[test]
    fn per_proxy_options_are_the_urls() {
        let f = parse(
            "c.toml",
            "proxy = \"socks5h://192.0.2.1:1080?optimistic=1\"\n\
             [[chain]]\nname = \"c\"\nhops = [\"socks5://192.0.2.2?pipeline=1&optimistic=1\"]\n",
        )
        .unwrap();
        let d = f.default_chain.as_ref().unwrap();
        assert!(d.value.hops[0].optimistic && !d.value.hops[0].pipeline);
        let c = &f.chains[0].value;
        assert!(c.hops[0].optimistic && c.hops[0].pipeline);
        let e = parse("c.toml", "proxy = \"socks5://h?optimistic=2\"\n").unwrap_err();
        assert!(
            e.starts_with("c.toml:1: ") && e.contains("optimistic"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = parse("c.toml", "quiet = true\n\nbogus = 1\n").unwrap_err();
        assert!(e.starts_with("c.toml:3: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = parse(
            "c.toml",
            "[[chain]]\nname = \"a\"\nhops = [\"socks5://h\"]\nspeed = 3\n",
        )
        .unwrap_err();
        assert!(e.starts_with("c.toml:"), "{e}");
        assert!(e.contains("speed"), "{e}");
        let e = parse(
            "c.toml",
            "[[rule]]\nmatch = \"*\"\naction = \"deny\"\nwhy = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("why"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = parse("c.toml", "log = \"info\"\nquiet = \"yes\"\n").unwrap_err();
        assert!(e.starts_with("c.toml:2: "), "{e}");
    }

    #[test]
    fn syntax_error_names_line() {
        let e = parse("c.toml", "log = \"info\"\n\nquiet = = true\n").unwrap_err();
        assert!(e.starts_with("c.toml:3: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn empty_file_sets_nothing() {
        let f = parse("c.toml", "").unwrap();
        assert!(f.default_chain.is_none() && f.chains.is_empty() && f.rules.is_empty());
        assert!(f.direct.is_none() && f.quiet.is_none() && f.proxy_dns.is_none());
    }

    #[test]
    fn run_mode_and_enforce() {
        let f = parse(
            "c.toml",
            "mode = \"supervise\"\nenforce = true\n[[chain]]\nname = \"c\"\nmode = \"dynamic\"\nhops = [\"socks5://192.0.2.1\"]\n",
        )
        .unwrap();
        let m = f.run_mode.as_ref().unwrap();
        assert_eq!(
            (m.value.as_str(), m.from.as_str()),
            ("supervise", "c.toml:1")
        );
        let e = f.enforce.as_ref().unwrap();
        assert!(e.value && e.from == "c.toml:2");
        assert_eq!(f.chains[0].value.mode, ChainMode::Dynamic);
        let e = parse("c.toml", "quiet = true\nmode = \"both\"\n").unwrap_err();
        assert!(e.starts_with("c.toml:2: mode: unknown mode 'both'"), "{e}");
        let e = parse("c.toml", "enforce = \"yes\"\n").unwrap_err();
        assert!(e.starts_with("c.toml:1:"), "{e}");
    }

    #[test]
    fn all_keys() {
        let f = parse(
            "c.toml",
            "proxy = \"socks5h://u:p@proxy.example:1081\"\n\
             direct = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             connect_timeout = 2\n\
             timeout = 0.5\n\
             log = \"debug\"\n\
             log_file = \"/tmp/x.log\"\n\
             quiet = false\n\
             bind = \"never\"\n\
             proxy_dns = false\n\
             remote_dns_subnet = 224\n\
             dnat = [\"192.0.2.1:1234 198.51.100.2:443\"]\n\
             no_proxy_env = true\n\
             [[chain]]\n\
             name = \"corp\"\n\
             mode = \"random\"\n\
             chain_len = 2\n\
             hops = [\"socks5://192.0.2.1\", \"http://u:p@192.0.2.2:3128\"]\n\
             \n\
             [[rule]]\n\
             match = \"*.corp.example:80-443\"\n\
             action = \"proxy corp\"\n\
             [[rule]]\n\
             match = \"10.0.0.0/8\"\n\
             action = \"deny\"\n",
        )
        .unwrap();
        let d = f.default_chain.as_ref().unwrap();
        assert_eq!(d.value.hops[0].port, 1081);
        assert_eq!(d.from, "c.toml:1");
        assert_eq!(f.hops_from, ["c.toml:1"]);
        assert_eq!(f.direct.as_ref().unwrap().value.len(), 2);
        assert_eq!(f.direct.as_ref().unwrap().from, "c.toml:2");
        assert_eq!(
            f.connect_timeout.as_ref().unwrap().value,
            Duration::from_secs(2)
        );
        assert_eq!(
            f.handshake_timeout.as_ref().unwrap().value,
            Duration::from_millis(500)
        );
        assert_eq!(f.log.as_ref().unwrap().value, "debug");
        assert_eq!(f.log_file.as_ref().unwrap().from, "c.toml:6");
        assert!(!f.quiet.as_ref().unwrap().value);
        let np = f.no_proxy_env.as_ref().unwrap();
        assert!(np.value && np.from == "c.toml:12");
        assert_eq!(f.bind.as_ref().unwrap().value, BindPolicy::Never);
        assert!(!f.proxy_dns.as_ref().unwrap().value);
        assert_eq!(
            f.remote_dns_subnet.as_ref().unwrap().value.to_string(),
            "224.0.0.0/8"
        );
        assert_eq!(f.dnat[0].from, "c.toml:11");
        let corp = &f.chains[0];
        assert_eq!(corp.from, "c.toml:14");
        assert_eq!(corp.value.mode, ChainMode::Random);
        assert_eq!(corp.value.chain_len, 2);
        assert_eq!(corp.value.hops.len(), 2);
        assert_eq!(f.rules.len(), 2);
        assert_eq!(f.rules[0].to_string(), "*.corp.example:80-443 proxy corp");
        assert_eq!(f.rules[0].origin.as_deref(), Some("c.toml:20"));
        assert_eq!(f.rules[1].origin.as_deref(), Some("c.toml:23"));
    }

    #[test]
    fn default_chain_as_a_table() {
        let f = parse(
            "c.toml",
            "[[chain]]\nname = \"default\"\nmode = \"dynamic\"\n\
             hops = [\"socks5://a.example\", \"socks5://b.example\"]\n",
        )
        .unwrap();
        let d = f.default_chain.unwrap();
        assert_eq!(d.value.mode, ChainMode::Dynamic);
        assert_eq!(f.default_mode_from.as_deref(), Some("c.toml:2"));
        assert_eq!(f.hops_from, ["c.toml:4", "c.toml:4"]);
        let e = parse(
            "c.toml",
            "proxy = \"socks5://a\"\n[[chain]]\nname = \"default\"\nhops = [\"socks5://b\"]\n",
        )
        .unwrap_err();
        assert!(e.starts_with("c.toml:3: chain default repeats"), "{e}");
    }

    #[test]
    fn proxy_array_entries_name_their_line() {
        let f = parse(
            "c.toml",
            "proxy = [\n  \"socks5://a.example\",\n  \"socks4a://b.example:1\",\n]\n",
        )
        .unwrap();
        assert_eq!(f.default_chain.unwrap().value.hops.len(), 2);
        assert_eq!(f.hops_from, ["c.toml:2", "c.toml:3"]);
        let e = parse(
            "c.toml",
            "proxy = [\n  \"socks5://a.example\",\n  \"ftp://b.example\",\n]\n",
        )
        .unwrap_err();
        assert!(e.starts_with("c.toml:3: proxy: "), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        for (text, want) in [
            ("\ndirect = [\"10.0.0.0/33\"]\n", "c.toml:2: direct: "),
            ("\n\ntimeout = 0\n", "c.toml:3: timeout: "),
            ("connect_timeout = -1\n", "c.toml:1: connect_timeout: "),
            ("proxy = []\n", "c.toml:1: proxy: the list is empty"),
            ("bind = \"sometimes\"\n", "c.toml:1: bind: "),
            ("dns_server = \"ns..example\"\n", "c.toml:1: dns_server: "),
            ("remote_dns_subnet = 256\n", "c.toml:1: remote_dns_subnet: "),
            ("remote_dns_subnet = \"2001:db8::/64\"\n", "c.toml:1: remote_dns_subnet: "),
            ("remote_dns_subnet = \"10.0.0.0/30\"\n", "c.toml:1: remote_dns_subnet: "),
            ("\ndnat = [\"192.0.2.1\"]\n", "c.toml:2: dnat: "),
            ("[[rule]]\nmatch = \"10.0.0/8\"\naction = \"deny\"\n", "c.toml:2: match: "),
            ("[[rule]]\nmatch = \"*\"\naction = \"allow\"\n", "c.toml:3: action: "),
            ("[[rule]]\nmatch = \"*\"\n", "c.toml:1: "),
            (
                "[[chain]]\nname = \"a\"\nmode = \"fast\"\nhops = [\"socks5://h\"]\n",
                "c.toml:3: mode: ",
            ),
            (
                "[[chain]]\nname = \"a\"\nchain_len = 0\nhops = [\"socks5://h\"]\n",
                "c.toml:3: chain_len",
            ),
            ("[[chain]]\nname = \"a\"\nhops = []\n", "c.toml:3: hops: the list is empty"),
            (
                "[[chain]]\nname = \"a\"\nhops = [\n\"socks5://h\",\n\"socks9://u:Sekr1t@h\"]\n",
                "c.toml:5: hops: ",
            ),
            (
                "[[chain]]\nname = \"a b\"\nhops = [\"socks5://h\"]\n",
                "c.toml:2: chain: bad chain name",
            ),
            (
                "[[chain]]\nname = \"a\"\nmode = \"random\"\nchain_len = 3\nhops = [\"socks5://h\"]\n",
                "c.toml:2: chain: chain a: chain_len 3",
            ),
            (
                "[[chain]]\nname = \"a\"\nhops = [\"socks5://h\"]\n\n[[chain]]\nname = \"a\"\nhops = [\"socks5://i\"]\n",
                "c.toml:6: chain a is already defined at c.toml:2",
            ),
        ] {
            let e = parse("c.toml", text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains('\n') && !e.contains("Sekr1t"), "{e}");
        }
    }

    #[test]
    fn detection_and_proxychains_settings() {
        let text = "strict_chain\nproxy_dns\ntcp_connect_time_out 1500\nlocalnet 10.0.0.0/8\n\
                    [ProxyList]\nsocks5 192.0.2.1 1080 u pw\n";
        assert_eq!(detect(text), FileKind::Proxychains);
        assert_eq!(detect("proxy = \"socks5://h\"\n"), FileKind::Toml);
        let f = parse_as("pc.conf", text, None).unwrap();
        assert_eq!(f.kind, FileKind::Proxychains);
        assert_eq!(f.default_mode_from.as_deref(), Some("pc.conf:1"));
        assert_eq!(f.hops_from, ["pc.conf:6"]);
        assert_eq!(
            f.default_chain.as_ref().unwrap().value.hops[0].masked(),
            "socks5h://u:***@192.0.2.1:1080"
        );
        assert_eq!(f.proxy_dns.as_ref().unwrap().from, "pc.conf:2");
        assert!(!f.proxy_dns_implicit);
        assert_eq!(
            f.connect_timeout.as_ref().unwrap().value,
            Duration::from_millis(1500)
        );
        assert_eq!(f.rules[0].origin.as_deref(), Some("pc.conf:4"));
        // Forced TOML: the proxychains syntax is a TOML error.
        assert!(parse_as("pc.conf", text, Some(FileKind::Toml)).is_err());
        let f = parse_as("pc.conf", "[ProxyList]\nhttp 192.0.2.1 3128\n", None).unwrap();
        assert!(f.proxy_dns_implicit);
        assert!(!f.proxy_dns.unwrap().value);
    }
}
