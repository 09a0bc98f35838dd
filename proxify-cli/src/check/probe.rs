//! The probes after the walk, each on a connection of its own: UDP ASSOCIATE and BIND at the
//! last hop (a chain of one hop only), and whether a SOCKS5 hop takes greeting,
//! authentication and request in one write (pipelining).

use super::conn::secs_text;
use super::exchange::{address_of, exchange, target_text, Failure, Outcome, Phase, Why};
use super::report::{fmt_ms, Kind, Status, Step, Value};
use super::walk::{not_tried, Ctx, Walk};
use proxify_core::socks::{
    self, socks5_reply_text, Command, TargetAddr, Version, METHOD_USER_PASS,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// The pipelining probe waits this long at least for the proxy's replies ...
const PIPELINE_MIN_WAIT: Duration = Duration::from_secs(1);
/// ... and this many times what the same hop took one message at a time.
const PIPELINE_WAIT_FACTOR: u32 = 4;

/// UDP ASSOCIATE or BIND at the last hop, on a connection of its own closed after the first
/// reply.
pub(super) fn command_probe(ctx: &Ctx, walk: &Walk, command: Command, required: bool) -> Step {
    let n = ctx.hops.len();
    let (kind, name) = match command {
        Command::UdpAssociate => (Kind::Udp, "UDP ASSOCIATE"),
        Command::Bind => (Kind::Bind, "BIND"),
        Command::Connect => unreachable!("not a probe"),
    };
    let mut step = Step::new(kind, Some(n), format!("{name} at hop {n}"));
    step.required = required;
    if n > 1 {
        step.set(
            Status::NotApplicable,
            format!(
                "n/a (chain): a chain cannot carry {}; 'proxify run' uses it only through a \
                 single proxy",
                if kind == Kind::Udp { "UDP" } else { "BIND" }
            ),
        );
        return step;
    }
    if walk.good_hops < 1 {
        step.set(Status::NotTried, not_tried(walk));
        return step;
    }
    let hop = &ctx.hops[0];
    let version = match hop.scheme.socks_version() {
        None => {
            step.set(Status::Fail, "not possible through an HTTP CONNECT proxy");
            return step;
        }
        Some(Version::Socks4 | Version::Socks4a) if kind == Kind::Udp => {
            step.set(Status::Fail, "not possible with SOCKS4 (SOCKS5 only)");
            return step;
        }
        Some(v) => v,
    };
    let t0 = Instant::now();
    let (mut conn, peer) = match ctx.connect_first() {
        Ok(c) => c,
        Err(msg) => {
            step.time = Some(t0.elapsed());
            step.set(Status::Fail, format!("cannot connect again: {msg}"));
            return step;
        }
    };
    // "Any address": the client's address for UDP is not known in advance, and BIND takes a
    // connection from anywhere.
    let any: IpAddr = match (peer.ip(), version) {
        (IpAddr::V6(_), Version::Socks5) => Ipv6Addr::UNSPECIFIED.into(),
        _ => Ipv4Addr::UNSPECIFIED.into(),
    };
    let ex = exchange(
        &mut conn,
        hop,
        command,
        TargetAddr::Ip(SocketAddr::new(any, 0)),
        false,
        false,
        ctx.timeout,
    );
    drop(conn);
    step.time = Some(t0.elapsed());
    match ex.result {
        Ok(Outcome::Done(Some(bound))) => {
            step.field("bound", Value::Str(target_text(&bound)));
            step.set(
                Status::Ok,
                match kind {
                    Kind::Udp => format!("supported: the proxy relays at {}", target_text(&bound)),
                    _ => format!(
                        "supported: the proxy listens at {} for the incoming connection",
                        target_text(&bound)
                    ),
                },
            );
        }
        Ok(_) => step.set(Status::Ok, "supported"),
        Err(f) => {
            let detail = match &f.why {
                Why::Socks(socks::SocksError::Socks5Reply(c)) => {
                    step.field("reply", Value::Int(i64::from(*c)));
                    let what = match c {
                        7 => "not supported",
                        2 => "not allowed",
                        _ => "refused",
                    };
                    format!("{what} (SOCKS5 reply {c}: {})", socks5_reply_text(*c))
                }
                Why::Socks(socks::SocksError::Socks4Reply(c)) => {
                    step.field("reply", Value::Int(i64::from(*c)));
                    format!("refused (SOCKS4 reply {c})")
                }
                _ => format!("no: {}", f.text(ctx.timeout)),
            };
            step.set(Status::Fail, detail);
        }
    }
    step
}

/// Whether hop `i` takes greeting, authentication and request in one write.
pub(super) fn pipeline_probe(
    ctx: &Ctx,
    walk: &Walk,
    i: usize,
    target: Option<&TargetAddr>,
    required: bool,
) -> Step {
    let hop = &ctx.hops[i];
    let mut step = Step::new(
        Kind::Pipeline,
        Some(i + 1),
        format!("pipelining at hop {}", i + 1),
    );
    step.required = required || hop.pipeline;
    step.field("configured", Value::Bool(hop.pipeline));
    let configured = if hop.pipeline {
        "; the hop is configured with ?pipeline=1"
    } else {
        ""
    };
    if walk.good_hops <= i {
        step.set(Status::NotTried, not_tried(walk));
        return step;
    }
    let (probe_target, what) = if i + 1 < ctx.hops.len() {
        (address_of(&ctx.hops[i + 1]), "the next hop".to_string())
    } else if let Some(t) = target {
        (t.clone(), target_text(t))
    } else if i == 0 {
        match walk.first_addr {
            Some(a) => (TargetAddr::Ip(a), "the proxy's own address".to_string()),
            None => (address_of(hop), "the proxy's own address".to_string()),
        }
    } else {
        (address_of(hop), "the proxy's own address".to_string())
    };
    step.field("target", Value::Str(target_text(&probe_target)));
    let normal = walk.hop_times[i];
    let wait = normal
        .map_or(PIPELINE_MIN_WAIT, |t| {
            (t * PIPELINE_WAIT_FACTOR).max(PIPELINE_MIN_WAIT)
        })
        .min(ctx.timeout);
    step.field("wait_ms", Value::Int(wait.as_millis() as i64));
    let (mut conn, _) = match ctx.tunnel_to(i) {
        Ok(c) => c,
        Err(msg) => {
            step.set(Status::Fail, format!("cannot reach the hop again: {msg}"));
            return step;
        }
    };
    let t0 = Instant::now();
    let ex = exchange(
        &mut conn,
        hop,
        Command::Connect,
        probe_target,
        false,
        true,
        wait,
    );
    step.time = Some(t0.elapsed());
    drop(conn);
    let compare = match (normal, ex.request_time.and(step.time)) {
        (Some(n), Some(p)) => format!(" in {}, vs {} one message at a time", fmt_ms(p), fmt_ms(n)),
        _ => String::new(),
    };
    match &ex.result {
        Ok(_) => step.set(
            Status::Ok,
            format!(
                "yes: greeting, authentication and CONNECT to {what} in one write were answered{compare}{configured}"
            ),
        ),
        Err(Failure {
            phase: Phase::Request,
            why: Why::Socks(socks::SocksError::Socks5Reply(c)),
        }) => {
            step.field("reply", Value::Int(i64::from(*c)));
            step.set(
                Status::Ok,
                format!(
                    "yes: the pipelined CONNECT to {what} was answered (reply {c}: {}; the \
                     proxy read it){configured}",
                    socks5_reply_text(*c)
                ),
            )
        }
        Err(f) => {
            let answered = if ex.received >= 4 && ex.chosen == Some(METHOD_USER_PASS) {
                "the proxy answered the greeting and the authentication, then "
            } else if ex.received >= 2 {
                "the proxy answered the greeting, then "
            } else {
                ""
            };
            let mut detail = match &f.why {
                Why::Timeout => format!(
                    "no: {answered}no reply to the pipelined messages within {} (the proxy \
                     reads one message at a time)",
                    secs_text(wait)
                ),
                _ => format!("no: {answered}{}", f.text(wait)),
            };
            if hop.pipeline {
                detail.push_str(
                    "; the hop is configured with ?pipeline=1: 'proxify run' would fail \
                     through it (remove ?pipeline=1)",
                );
            }
            step.set(Status::Fail, detail);
        }
    }
    step
}
