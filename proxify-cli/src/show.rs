//! `proxify config`: the effective configuration and where each value came from, for a
//! person or (`--json`) for a script. Passwords are always masked.

use crate::settings::Effective;
use proxify_core::config::{format_seconds, Chain, Config};
use proxify_core::rules::DEFAULT_CHAIN;
use std::fmt::Write;

fn chain_mode_text(c: &Chain) -> String {
    if c.mode.uses_chain_len() {
        format!("{}, chain_len {}", c.mode.as_str(), c.chain_len)
    } else {
        c.mode.as_str().to_string()
    }
}

fn chain_from<'a>(e: &'a Effective, name: &str) -> &'a str {
    e.from
        .chains
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, f)| f.as_str())
}

fn proxy_dns_text(cfg: &Config) -> String {
    match (cfg.proxy_dns, cfg.default_chain()) {
        (Some(true), _) => "on (names go to the proxy)".into(),
        (Some(false), _) => "off (names resolved locally)".into(),
        (None, Some(c)) if c.default_remote_dns() => {
            "on for the default chain (names go to the proxy)".into()
        }
        (None, Some(_)) => "off for the default chain (names resolved locally)".into(),
        (None, None) => "by each chain's proxy schemes".into(),
    }
}

/// The text for a person.
pub fn human(e: &Effective) -> String {
    let cfg = &e.config;
    let mut o = String::new();
    let line = |o: &mut String, label: &str, value: &str, from: &str| {
        let _ = writeln!(o, "{label:<20} {value}  ({from})");
    };
    match &e.file {
        Some((path, kind)) => {
            let _ = writeln!(o, "{:<20} {path} ({})", "config file:", kind.describe());
        }
        None if e.searched.is_empty() => {
            let _ = writeln!(o, "{:<20} none", "config file:");
        }
        None => {
            let _ = writeln!(
                o,
                "{:<20} none (looked for {})",
                "config file:",
                e.searched.join(", ")
            );
        }
    }
    if cfg.chains.is_empty() {
        let _ = writeln!(
            o,
            "{:<20} none: 'proxify run' would refuse to start (use -x URL)",
            "proxies:"
        );
    }
    for c in &cfg.chains {
        let _ = writeln!(
            o,
            "chain {}: {}  ({})",
            c.name,
            chain_mode_text(c),
            chain_from(e, &c.name)
        );
        for (i, h) in c.hops.iter().enumerate() {
            if c.name == DEFAULT_CHAIN {
                let from = e.from.hops.get(i).map_or("", String::as_str);
                let _ = writeln!(o, "  {}. {}  ({from})", i + 1, h.masked());
            } else {
                let _ = writeln!(o, "  {}. {}", i + 1, h.masked());
            }
        }
    }
    let _ = writeln!(o, "rules (first match wins):");
    let _ = writeln!(o, "  -  loopback direct  (built in)");
    for d in &cfg.direct {
        let _ = writeln!(o, "  -  {d} direct  ({})", e.from.direct);
    }
    for (i, r) in cfg.rules.rules.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {}. {r}  ({})",
            i + 1,
            r.origin.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(o, "  -  everything else: proxy {DEFAULT_CHAIN}  (built in)");
    if cfg.rules.dnat.is_empty() {
        let _ = writeln!(o, "dnat:                none");
    } else {
        let _ = writeln!(o, "dnat:");
        for (d, from) in cfg.rules.dnat.iter().zip(&e.from.dnat) {
            let text = d.to_string();
            let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
            let _ = writeln!(o, "  {a} -> {b}  ({from})");
        }
    }
    line(
        &mut o,
        "proxy_dns:",
        &proxy_dns_text(cfg),
        &e.from.proxy_dns,
    );
    line(
        &mut o,
        "remote_dns_subnet:",
        &cfg.remote_dns_subnet().to_string(),
        &e.from.remote_dns_subnet,
    );
    line(
        &mut o,
        "connect_timeout:",
        &format!("{} s", format_seconds(cfg.connect_timeout)),
        &e.from.connect_timeout,
    );
    line(
        &mut o,
        "timeout:",
        &format!("{} s", format_seconds(cfg.handshake_timeout)),
        &e.from.handshake_timeout,
    );
    line(
        &mut o,
        "log:",
        cfg.log.as_deref().unwrap_or("warnings and errors only"),
        &e.from.log,
    );
    line(
        &mut o,
        "log_file:",
        cfg.log_file.as_deref().unwrap_or("standard error"),
        &e.from.log_file,
    );
    line(
        &mut o,
        "quiet:",
        if cfg.quiet { "yes" } else { "no" },
        &e.from.quiet,
    );
    line(&mut o, "bind:", cfg.bind.as_str(), &e.from.bind);
    o
}

/// A JSON string literal.
pub(crate) fn js(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sourced(value: &str, from: &str) -> String {
    format!("{{\"value\":{value},\"source\":{}}}", js(from))
}

fn opt_js(v: Option<&str>) -> String {
    v.map_or("null".to_string(), js)
}

/// One JSON object (one line).
pub fn json(e: &Effective) -> String {
    let cfg = &e.config;
    let mut fields: Vec<String> = Vec::new();
    fields.push(format!(
        "\"file\":{}",
        match &e.file {
            Some((p, k)) => format!("{{\"path\":{},\"kind\":{}}}", js(p), js(k.as_str())),
            None => "null".to_string(),
        }
    ));
    let chains: Vec<String> = cfg
        .chains
        .iter()
        .map(|c| {
            let hops: Vec<String> = c
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let from = if c.name == DEFAULT_CHAIN {
                        e.from.hops.get(i).map_or("", String::as_str)
                    } else {
                        chain_from(e, &c.name)
                    };
                    format!(
                        "{{\"url\":{},\"scheme\":{},\"source\":{}}}",
                        js(&h.masked()),
                        js(h.scheme.as_str()),
                        js(from)
                    )
                })
                .collect();
            format!(
                "{{\"name\":{},\"mode\":{},\"chain_len\":{},\"remote_dns\":{},\"source\":{},\"hops\":[{}]}}",
                js(&c.name),
                js(c.mode.as_str()),
                c.chain_len,
                cfg.remote_dns(c),
                js(chain_from(e, &c.name)),
                hops.join(",")
            )
        })
        .collect();
    fields.push(format!("\"chains\":[{}]", chains.join(",")));
    let direct: Vec<String> = cfg.direct.iter().map(|d| js(&d.to_string())).collect();
    fields.push(format!(
        "\"direct\":{}",
        sourced(&format!("[{}]", direct.join(",")), &e.from.direct)
    ));
    let rules: Vec<String> = cfg
        .rules
        .rules
        .iter()
        .map(|r| {
            format!(
                "{{\"match\":{},\"action\":{},\"source\":{}}}",
                js(&r.pattern.to_string()),
                js(&r.action.to_string()),
                opt_js(r.origin.as_deref())
            )
        })
        .collect();
    fields.push(format!("\"rules\":[{}]", rules.join(",")));
    let dnat: Vec<String> = cfg
        .rules
        .dnat
        .iter()
        .zip(&e.from.dnat)
        .map(|(d, from)| {
            let text = d.to_string();
            let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
            format!(
                "{{\"from\":{},\"to\":{},\"source\":{}}}",
                js(a),
                js(b),
                js(from)
            )
        })
        .collect();
    fields.push(format!("\"dnat\":[{}]", dnat.join(",")));
    let proxy_dns = cfg.proxy_dns.map_or("null".to_string(), |b| b.to_string());
    fields.push(format!(
        "\"proxy_dns\":{}",
        sourced(&proxy_dns, &e.from.proxy_dns)
    ));
    fields.push(format!(
        "\"remote_dns_subnet\":{}",
        sourced(
            &js(&cfg.remote_dns_subnet().to_string()),
            &e.from.remote_dns_subnet
        )
    ));
    fields.push(format!(
        "\"connect_timeout\":{}",
        sourced(
            &format_seconds(cfg.connect_timeout),
            &e.from.connect_timeout
        )
    ));
    fields.push(format!(
        "\"timeout\":{}",
        sourced(
            &format_seconds(cfg.handshake_timeout),
            &e.from.handshake_timeout
        )
    ));
    fields.push(format!(
        "\"log\":{}",
        sourced(&opt_js(cfg.log.as_deref()), &e.from.log)
    ));
    fields.push(format!(
        "\"log_file\":{}",
        sourced(&opt_js(cfg.log_file.as_deref()), &e.from.log_file)
    ));
    fields.push(format!(
        "\"quiet\":{}",
        sourced(&cfg.quiet.to_string(), &e.from.quiet)
    ));
    fields.push(format!(
        "\"bind\":{}",
        sourced(&js(cfg.bind.as_str()), &e.from.bind)
    ));
    let warnings: Vec<String> = e.warnings.iter().map(|w| js(w)).collect();
    fields.push(format!("\"warnings\":[{}]", warnings.join(",")));
    format!("{{{}}}\n", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(js("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(js("é"), "\"é\"");
    }
}
