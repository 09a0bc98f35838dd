//! `proxify check [HOST:PORT]`: walks the default chain step by step with blocking sockets and
//! deadlines, driving the same sans-IO clients as the shim (`socks::Client`, `http::Client`),
//! and reports each step (see `report`).
//!
//! The walk: a TCP connection to the first hop; at each hop the greeting and authentication,
//! then a CONNECT to the next hop (or to HOST:PORT at the last). Then, on connections of their
//! own: UDP ASSOCIATE and BIND at the last hop (a chain of one hop only), and the pipelining
//! probe at the first SOCKS5 hop and at every hop configured with `?pipeline=1`.
//!
//! Modules, each using only those before it: `conn` (the deadline-bound connection),
//! `exchange` (one handshake with one hop), `walk` (the chain, hop by hop), `probe` (UDP,
//! BIND, pipelining), `report` (the steps and their text or JSON); this file puts them
//! together.

mod conn;
mod exchange;
mod probe;
pub mod report;
mod walk;

use crate::cli::{CheckArgs, Feature};
use crate::values::HostPort;
use probe::{command_probe, pipeline_probe};
use proxify_core::config::{Chain, Config};
use proxify_core::rules::{Verdict, DEFAULT_CHAIN};
use proxify_core::socks::{Command, TargetAddr, Version};
use proxify_core::url::Host;
use report::{Kind, Report, Status, Step};
use std::net::{SocketAddr, ToSocketAddrs};
use walk::{walk, Ctx};

/// Checks `chain` (first hop first) and returns the report.
pub fn check(
    cfg: &Config,
    chain: &Chain,
    target: Option<&HostPort>,
    require: &[Feature],
) -> Report {
    let ctx = Ctx {
        hops: &chain.hops,
        connect_timeout: cfg.connect_timeout,
        timeout: cfg.handshake_timeout,
    };
    let remote_dns = cfg.remote_dns(chain);
    let mut report = Report {
        chain: chain.name.clone(),
        mode: if chain.mode.uses_chain_len() {
            format!("{}, chain_len {}", chain.mode.as_str(), chain.chain_len)
        } else {
            chain.mode.as_str().to_string()
        },
        hops: chain
            .hops
            .iter()
            .map(|h| (h.masked(), h.scheme.as_str().to_string()))
            .collect(),
        remote_dns,
        target: target.map(|t| t.to_string()),
        required: {
            let mut r: Vec<&'static str> = Vec::new();
            for f in require {
                if !r.contains(&f.as_str()) {
                    r.push(f.as_str());
                }
            }
            r
        },
        notes: Vec::new(),
        steps: Vec::new(),
    };
    if chain.mode.as_str() != "strict" {
        report.notes.push(format!(
            "the chain is {}: checked as a strict chain of all its {} hops, in order",
            chain.mode.as_str(),
            chain.hops.len()
        ));
    }

    // Where the CONNECT goes: by name when names go to the proxy.
    let mut unresolved: Option<String> = None;
    let dest: Option<TargetAddr> = target.and_then(|t| {
        let resolved = match &t.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, t.port)),
            Host::Name(n) if remote_dns => {
                report
                    .notes
                    .push(format!("{t}: the name is sent to the proxy (remote DNS)"));
                let d = cfg.decide(None, Some(n), t.port);
                rule_note(&mut report, t, &d);
                return Some(TargetAddr::Domain(n.clone(), t.port));
            }
            Host::Name(n) => match (n.as_str(), t.port).to_socket_addrs() {
                Ok(mut a) => match a.next() {
                    Some(a) => {
                        report
                            .notes
                            .push(format!("{t}: resolved locally to {}", a.ip()));
                        Some(a)
                    }
                    None => {
                        unresolved = Some(format!("cannot resolve {n}: no address"));
                        None
                    }
                },
                Err(e) => {
                    unresolved = Some(format!("cannot resolve {n} locally: {e}"));
                    None
                }
            },
        }?;
        let name = match &t.host {
            Host::Name(n) => Some(n.as_str()),
            Host::Ip(_) => None,
        };
        let d = cfg.decide(Some(resolved.ip()), name, t.port);
        rule_note(&mut report, t, &d);
        let dest = match cfg.rules.dnat(resolved) {
            Some(new) => {
                report
                    .notes
                    .push(format!("dnat: {resolved} is rewritten to {new}"));
                new
            }
            None => resolved,
        };
        Some(TargetAddr::Ip(dest))
    });

    let mut steps = Vec::new();
    let w = walk(&ctx, dest.as_ref(), &mut steps);
    if let (Some(t), Some(why)) = (target, &unresolved) {
        if let Some(s) = steps.iter_mut().find(|s| s.kind == Kind::Connect) {
            s.title = format!("CONNECT {t} through the chain");
            s.required = true;
            s.set(Status::Fail, why.clone());
        }
    }
    steps.push(command_probe(
        &ctx,
        &w,
        Command::UdpAssociate,
        require.contains(&Feature::Udp),
    ));
    steps.push(command_probe(
        &ctx,
        &w,
        Command::Bind,
        require.contains(&Feature::Bind),
    ));
    let first_socks5 = chain
        .hops
        .iter()
        .position(|h| h.scheme.socks_version() == Some(Version::Socks5));
    match first_socks5 {
        None => {
            let mut s = Step::new(Kind::Pipeline, None, "pipelining");
            s.required = require.contains(&Feature::Pipeline);
            s.set(
                Status::NotApplicable,
                "n/a: no SOCKS5 hop (a pipelined handshake is a SOCKS5 matter)",
            );
            steps.push(s);
        }
        Some(f) => {
            for i in 0..chain.hops.len() {
                let is_socks5 = chain.hops[i].scheme.socks_version() == Some(Version::Socks5);
                if i == f || (is_socks5 && chain.hops[i].pipeline) {
                    steps.push(pipeline_probe(
                        &ctx,
                        &w,
                        i,
                        dest.as_ref(),
                        i == f && require.contains(&Feature::Pipeline),
                    ));
                }
            }
        }
    }
    report.steps = steps;
    report
}

/// A note when `proxify run` would not send `t` through the default chain.
fn rule_note(report: &mut Report, t: &HostPort, d: &proxify_core::rules::Decision<'_>) {
    let what = match d.verdict {
        Verdict::Proxy(name) if name == DEFAULT_CHAIN => return,
        Verdict::Proxy(name) => format!("through chain {name}"),
        Verdict::Direct => "directly".to_string(),
        Verdict::Deny => "nowhere (denied)".to_string(),
    };
    report.notes.push(format!(
        "'proxify run' would send connections to {t} {what} ({d}); checked through the \
         default chain anyway"
    ));
}

/// `proxify check`: prints the report; exits 0 (all asked for works), 1, or 2 (usage).
pub fn main(args: CheckArgs) -> ! {
    let eff = match crate::settings::effective(&args.settings) {
        Ok(e) => e,
        Err(msg) => crate::fail(crate::EXIT_USAGE, &msg),
    };
    let target = args.target;
    let Some(chain) = eff.config.default_chain() else {
        crate::fail(crate::EXIT_USAGE, crate::NO_PROXY)
    };
    let quiet = args.settings.quiet;
    if !quiet {
        for w in &eff.warnings {
            eprintln!("proxify: {w}");
        }
    }
    let mut report = check(&eff.config, chain, target.as_ref(), &args.require);
    // Whether static and Go programs can run supervised here (see proxify-supervise).
    report
        .notes
        .push(match proxify_supervise::kernel_support() {
            None => "supervision (static and Go programs): supported by this kernel".to_string(),
            Some(why) => format!(
                "supervision (static and Go programs): not available: {why} (they are refused)"
            ),
        });
    if !quiet {
        let text = if args.json {
            report::json(&report)
        } else {
            let utf8 = report::utf8_locale(|k| std::env::var(k).ok());
            report::human(&report, utf8)
        };
        crate::write_stdout(&text);
    }
    std::process::exit(report.exit_code())
}
