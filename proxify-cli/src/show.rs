//! `proxify config`: the effective configuration and where each value came from, for a
//! person or (`--json`) for a script. Passwords are always masked.

use crate::settings::Effective;
use proxify_core::config::{format_seconds, Chain, Config};
use proxify_core::rules::DEFAULT_CHAIN;
use serde_json::{json, Value};
use std::fmt::Write;
use std::time::Duration;

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
        "trace:",
        cfg.trace.as_deref().unwrap_or("none"),
        &e.from.trace,
    );
    line(
        &mut o,
        "dns_server:",
        cfg.dns_server
            .as_deref()
            .unwrap_or("none (queries proxify cannot answer are refused)"),
        &e.from.dns_server,
    );
    line(
        &mut o,
        "quiet:",
        if cfg.quiet { "yes" } else { "no" },
        &e.from.quiet,
    );
    line(&mut o, "bind:", cfg.bind.as_str(), &e.from.bind);
    line(
        &mut o,
        "no_proxy_env:",
        if e.no_proxy_env {
            "yes (NO_PROXY/no_proxy entries are direct rules)"
        } else {
            "no (NO_PROXY/no_proxy ignored)"
        },
        &e.from.no_proxy_env,
    );
    match crate::settings::run_choice_env(None, false, e) {
        Ok(c) => {
            line(&mut o, "mode:", &c.mode.value, &c.mode.from);
            line(
                &mut o,
                "enforce:",
                if c.enforce.value {
                    "yes (preload and supervise)"
                } else {
                    "no"
                },
                &c.enforce.from,
            );
        }
        Err(msg) => {
            let _ = writeln!(o, "{:<20} {msg}", "mode:");
        }
    }
    o
}

/// `{"value": v, "source": from}`.
fn sourced(value: Value, from: &str) -> Value {
    json!({ "value": value, "source": from })
}

/// Seconds as a JSON number: an integer when whole (`5`), else a fraction (`0.5`).
pub(crate) fn seconds(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

/// One JSON object (one line).
pub fn json(e: &Effective) -> String {
    let cfg = &e.config;
    let file = match &e.file {
        Some((p, k)) => json!({ "path": p, "kind": k.as_str() }),
        None => Value::Null,
    };
    let chains: Vec<Value> = cfg
        .chains
        .iter()
        .map(|c| {
            let hops: Vec<Value> = c
                .hops
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let from = if c.name == DEFAULT_CHAIN {
                        e.from.hops.get(i).map_or("", String::as_str)
                    } else {
                        chain_from(e, &c.name)
                    };
                    json!({ "url": h.masked(), "scheme": h.scheme.as_str(), "source": from })
                })
                .collect();
            json!({
                "name": c.name,
                "mode": c.mode.as_str(),
                "chain_len": c.chain_len,
                "remote_dns": cfg.remote_dns(c),
                "source": chain_from(e, &c.name),
                "hops": hops,
            })
        })
        .collect();
    let direct: Vec<String> = cfg.direct.iter().map(|d| d.to_string()).collect();
    let rules: Vec<Value> = cfg
        .rules
        .rules
        .iter()
        .map(|r| {
            json!({
                "match": r.pattern.to_string(),
                "action": r.action.to_string(),
                "source": r.origin,
            })
        })
        .collect();
    let dnat: Vec<Value> = cfg
        .rules
        .dnat
        .iter()
        .zip(&e.from.dnat)
        .map(|(d, from)| {
            let text = d.to_string();
            let (a, b) = text.split_once(' ').unwrap_or((&text, ""));
            json!({ "from": a, "to": b, "source": from })
        })
        .collect();
    let mut out = json!({
        "file": file,
        "chains": chains,
        "direct": sourced(json!(direct), &e.from.direct),
        "rules": rules,
        "dnat": dnat,
        "proxy_dns": sourced(json!(cfg.proxy_dns), &e.from.proxy_dns),
        "remote_dns_subnet": sourced(
            json!(cfg.remote_dns_subnet().to_string()),
            &e.from.remote_dns_subnet
        ),
        "connect_timeout": sourced(seconds(cfg.connect_timeout), &e.from.connect_timeout),
        "timeout": sourced(seconds(cfg.handshake_timeout), &e.from.handshake_timeout),
        "log": sourced(json!(cfg.log), &e.from.log),
        "log_file": sourced(json!(cfg.log_file), &e.from.log_file),
        "trace": sourced(json!(cfg.trace), &e.from.trace),
        "dns_server": sourced(json!(cfg.dns_server), &e.from.dns_server),
        "quiet": sourced(json!(cfg.quiet), &e.from.quiet),
        "bind": sourced(json!(cfg.bind.as_str()), &e.from.bind),
        "no_proxy_env": sourced(json!(e.no_proxy_env), &e.from.no_proxy_env),
        "warnings": e.warnings,
    });
    if let Ok(c) = crate::settings::run_choice_env(None, false, e) {
        out["mode"] = sourced(json!(c.mode.value), &c.mode.from);
        out["enforce"] = sourced(json!(c.enforce.value), &c.enforce.from);
    }
    format!("{out}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_numbers() {
        assert_eq!(seconds(Duration::from_secs(5)).to_string(), "5");
        assert_eq!(seconds(Duration::from_millis(500)).to_string(), "0.5");
    }
}
