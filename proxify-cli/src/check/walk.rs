//! The walk through the chain: a connection to the first hop, then at each hop the greeting
//! and authentication and a CONNECT to the next hop (or to HOST:PORT at the last), each
//! filled into its report step.

use super::conn::{connect_first, secs_text, Conn};
use super::exchange::{address_of, exchange, target_text, Exchange, Failure, Outcome, Phase, Why};
use super::report::{Kind, Status, Step, Value};
use proxify_core::http;
use proxify_core::socks::{
    self, method_name, Command, TargetAddr, Version, METHOD_NO_AUTH, METHOD_USER_PASS,
};
use proxify_core::url::ProxyUrl;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Timeouts and hops of the check.
pub(super) struct Ctx<'a> {
    pub(super) hops: &'a [ProxyUrl],
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
}

impl Ctx<'_> {
    pub(super) fn connect_first(&self) -> Result<(Conn, SocketAddr), String> {
        let (s, a) = connect_first(&self.hops[0], self.connect_timeout)?;
        Ok((
            Conn {
                s,
                deadline: Instant::now() + self.timeout,
            },
            a,
        ))
    }

    /// A connection to hop `i`: to the first, then through each hop before `i`.
    pub(super) fn tunnel_to(&self, i: usize) -> Result<(Conn, SocketAddr), String> {
        let (mut conn, first) = self.connect_first()?;
        for j in 0..i {
            let ex = exchange(
                &mut conn,
                &self.hops[j],
                Command::Connect,
                address_of(&self.hops[j + 1]),
                false,
                false,
                self.timeout,
            );
            if let Err(f) = ex.result {
                return Err(format!("hop {}: {}", j + 1, f.text(self.timeout)));
            }
        }
        Ok((conn, first))
    }
}

/// What the walk through the chain found, for the probes after it.
pub(super) struct Walk {
    /// Hops reached and authenticated (a prefix of the chain).
    pub(super) good_hops: usize,
    /// Each hop's handshake time, one message at a time (greeting to reply).
    pub(super) hop_times: Vec<Option<Duration>>,
    /// The first hop's address as connected.
    pub(super) first_addr: Option<SocketAddr>,
    /// Why the walk stopped early ("hop 2 is unreachable").
    pub(super) blocked: Option<String>,
}

fn user_text(hop: &ProxyUrl) -> Option<String> {
    hop.user
        .as_ref()
        .map(|u| String::from_utf8_lossy(u).escape_debug().to_string())
}

/// Fills the auth step of `hop` from its exchange (`requested`: a request was sent).
pub(super) fn auth_step(
    step: &mut Step,
    hop: &ProxyUrl,
    ex: &Exchange,
    requested: bool,
    timeout: Duration,
) {
    let user = user_text(hop);
    step.field("user", user.clone().map_or(Value::Null, Value::Str));
    match hop.scheme.socks_version() {
        Some(Version::Socks5) => {
            let offered = ex.offered.unwrap_or(METHOD_NO_AUTH);
            step.field("offered", Value::List(vec![method_name(offered)]));
            step.field(
                "chosen",
                ex.chosen
                    .map_or(Value::Null, |m| Value::Str(method_name(m))),
            );
            step.time = ex.auth_time;
            let offered_text = format!("offered {}", method_name(offered));
            let failed_here = match &ex.result {
                Err(f) if f.phase != Phase::Request => Some(f),
                _ => None,
            };
            match (failed_here, ex.chosen) {
                (None, Some(c)) => {
                    let detail = if c == METHOD_USER_PASS {
                        format!(
                            "{offered_text}, the proxy chose it; user \"{}\" accepted",
                            user.unwrap_or_default()
                        )
                    } else {
                        format!("{offered_text}, the proxy chose none (no authentication)")
                    };
                    step.set(Status::Ok, detail);
                }
                (None, None) => step.set(Status::Fail, format!("{offered_text}: no reply")),
                (Some(f), chosen) => {
                    let mut detail = match (&f.why, chosen) {
                        (Why::Socks(socks::SocksError::AuthRejected), _) => format!(
                            "{offered_text}, the proxy chose it; it rejected the password of user \"{}\"",
                            user.unwrap_or_default()
                        ),
                        (Why::Socks(socks::SocksError::AuthRequired), Some(c)) => format!(
                            "{offered_text}, the proxy chose {}: it wants a username and \
                             password (give user:password in the proxy URL)",
                            method_name(c)
                        ),
                        (Why::Socks(socks::SocksError::NoAcceptableMethod), Some(c)) => {
                            format!(
                                "{offered_text}, the proxy answered {}{}",
                                method_name(c),
                                if offered == METHOD_NO_AUTH {
                                    " (it probably wants a username and password: give \
                                     user:password in the proxy URL)"
                                } else {
                                    ""
                                }
                            )
                        }
                        (_, Some(c)) => format!(
                            "{offered_text}, the proxy chose {}: {}",
                            method_name(c),
                            f.text(timeout)
                        ),
                        (_, None) => format!("{offered_text}: {}", f.text(timeout)),
                    };
                    if f.phase == Phase::Auth && matches!(f.why, Why::Timeout) {
                        detail = format!(
                            "{offered_text}, the proxy chose username/password; no answer to \
                             the username/password within {}",
                            secs_text(timeout)
                        );
                    }
                    step.set(Status::Fail, detail);
                }
            }
        }
        Some(_) => {
            let id = match &user {
                Some(u) => format!("user id \"{u}\" sent with the request"),
                None => "empty user id sent with the request".to_string(),
            };
            let detail = format!("SOCKS4 has no authentication exchange; {id}");
            match &ex.result {
                _ if !requested => {
                    step.required = false;
                    step.set(Status::NotApplicable, detail);
                }
                Err(Failure {
                    why: Why::Socks(socks::SocksError::Socks4Reply(c @ (92 | 93))),
                    ..
                }) => step.set(
                    Status::Fail,
                    format!("{detail}; refused by the identd check (SOCKS4 reply {c})"),
                ),
                Err(Failure {
                    why:
                        Why::Socks(socks::SocksError::Socks4Reply(_))
                        | Why::Socks(socks::SocksError::Malformed(_)),
                    ..
                })
                | Ok(_) => step.set(Status::Ok, detail),
                Err(_) => step.set(Status::NotTried, format!("{detail}; no reply")),
            }
        }
        None => {
            let sent = match &user {
                Some(u) => format!("Basic credentials of user \"{u}\" sent with the CONNECT"),
                None => "no credentials sent".to_string(),
            };
            match &ex.result {
                _ if !requested => {
                    step.required = false;
                    step.set(
                        Status::NotApplicable,
                        "an HTTP proxy checks credentials with each CONNECT: give HOST:PORT to \
                         check them",
                    );
                }
                Err(Failure {
                    why:
                        Why::Http(e @ (http::HttpError::AuthRejected | http::HttpError::AuthRequired)),
                    ..
                }) => step.set(Status::Fail, format!("{sent}; {e} (407)")),
                Err(Failure {
                    why: Why::Http(http::HttpError::Status(code, _)),
                    ..
                }) => step.set(
                    Status::Ok,
                    format!("{sent}; not refused (the proxy answered {code}, not 407)"),
                ),
                Ok(_) => step.set(
                    Status::Ok,
                    if user.is_some() {
                        format!("{sent}; accepted")
                    } else {
                        format!("{sent}; none asked for")
                    },
                ),
                Err(_) => step.set(Status::NotTried, format!("{sent}; no reply")),
            }
        }
    }
}

/// Whether a bound address says anything (microsocks answers 0.0.0.0:0).
fn informative(b: &TargetAddr) -> bool {
    match b {
        TargetAddr::Ip(a) => !(a.ip().is_unspecified() && a.port() == 0),
        TargetAddr::Domain(..) => true,
    }
}

/// The request step (reach of the next hop, or the CONNECT to the target) from the exchange
/// with hop `hop_no`.
fn request_step(step: &mut Step, ex: &Exchange, what: &str, timeout: Duration, hop_no: usize) {
    step.time = ex.request_time;
    let reach = step.kind == Kind::Reach;
    match &ex.result {
        Ok(Outcome::Done(bound)) => {
            let mut detail = if reach {
                format!("hop {hop_no} connected to it ({what})")
            } else {
                format!("hop {hop_no} connected")
            };
            if let Some(b) = bound {
                step.field("bound", Value::Str(target_text(b)));
                if informative(b) {
                    detail.push_str(&format!(
                        "; its end of the connection is {}",
                        target_text(b)
                    ));
                }
            }
            step.set(Status::Ok, detail);
        }
        Ok(Outcome::Stopped) => {}
        Err(f) if f.phase == Phase::Request => {
            if let Why::Socks(
                socks::SocksError::Socks5Reply(c) | socks::SocksError::Socks4Reply(c),
            ) = f.why
            {
                step.field("reply", Value::Int(i64::from(c)));
            }
            if let Why::Http(http::HttpError::Status(c, _)) = f.why {
                step.field("status", Value::Int(i64::from(c)));
            }
            let lead = if reach {
                format!("hop {hop_no} could not connect to it ({what})")
            } else {
                format!("hop {hop_no} could not connect")
            };
            step.set(Status::Fail, format!("{lead}: {}", f.text(timeout)));
        }
        Err(_) => {}
    }
}

/// The main walk: reach, auth of each hop, then the CONNECT to `target`.
pub(super) fn walk(ctx: &Ctx, target: Option<&TargetAddr>, steps: &mut Vec<Step>) -> Walk {
    let n = ctx.hops.len();
    let mut reach: Vec<Step> = (1..=n)
        .map(|i| Step::new(Kind::Reach, Some(i), format!("hop {i} reachable")))
        .collect();
    let mut auth: Vec<Step> = (1..=n)
        .map(|i| Step::new(Kind::Auth, Some(i), format!("hop {i} authentication")))
        .collect();
    let mut connect = match target {
        Some(t) => Step::new(
            Kind::Connect,
            Some(n),
            format!("CONNECT {} through the chain", target_text(t)),
        ),
        None => {
            let mut s = Step::new(Kind::Connect, None, "CONNECT through the chain");
            s.required = false;
            s.set(Status::NotApplicable, "not checked: no HOST:PORT given");
            s
        }
    };
    let mut w = Walk {
        good_hops: 0,
        hop_times: vec![None; n],
        first_addr: None,
        blocked: None,
    };

    let t0 = Instant::now();
    let first = ctx.connect_first();
    reach[0].time = Some(t0.elapsed());
    let mut conn = match first {
        Ok((conn, addr)) => {
            reach[0].set(Status::Ok, format!("TCP connection to {addr}"));
            reach[0].field("address", Value::Str(addr.to_string()));
            w.first_addr = Some(addr);
            Some(conn)
        }
        Err(msg) => {
            reach[0].set(Status::Fail, format!("unreachable: {msg}"));
            None
        }
    };
    let mut blocked: Option<String> = match &conn {
        Some(_) => None,
        None => Some("hop 1 is unreachable".to_string()),
    };
    for i in 0..n {
        let Some(c) = conn.as_mut() else { break };
        let hop = &ctx.hops[i];
        let next = if i + 1 < n {
            Some(address_of(&ctx.hops[i + 1]))
        } else {
            target.cloned()
        };
        let is_socks5 = hop.scheme.socks_version() == Some(Version::Socks5);
        if next.is_none() && !is_socks5 {
            // SOCKS4 and HTTP authenticate with the request: nothing to send.
            auth_step(&mut auth[i], hop, &Exchange::new(None), false, ctx.timeout);
            w.good_hops = i + 1;
            break;
        }
        let placeholder = TargetAddr::Ip(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
        let ex = exchange(
            c,
            hop,
            Command::Connect,
            next.clone().unwrap_or(placeholder),
            next.is_none(),
            false,
            ctx.timeout,
        );
        w.hop_times[i] = ex.total();
        auth_step(&mut auth[i], hop, &ex, next.is_some(), ctx.timeout);
        if auth[i].status == Status::Fail {
            blocked = Some(format!("hop {} did not accept us", i + 1));
            break;
        }
        match next {
            Some(t) if i + 1 < n => {
                request_step(&mut reach[i + 1], &ex, &target_text(&t), ctx.timeout, i + 1);
                if reach[i + 1].status != Status::Ok {
                    blocked = Some(format!("hop {} is unreachable", i + 2));
                    w.good_hops = i + 1;
                    break;
                }
            }
            Some(t) => {
                request_step(&mut connect, &ex, &target_text(&t), ctx.timeout, i + 1);
            }
            None => {}
        }
        if ex.result.is_err() && auth[i].status != Status::Ok {
            blocked = Some(format!("hop {} did not accept us", i + 1));
            break;
        }
        w.good_hops = i + 1;
    }
    drop(conn);
    // Everything after the failure was not tried.
    w.blocked = blocked.clone();
    let why = blocked.unwrap_or_default();
    for s in reach
        .iter_mut()
        .chain(auth.iter_mut())
        .chain(std::iter::once(&mut connect))
    {
        if s.status == Status::NotTried && s.detail.is_empty() {
            s.detail = format!("not tried: {why}");
        }
    }
    for (r, a) in reach.into_iter().zip(auth) {
        steps.push(r);
        steps.push(a);
    }
    steps.push(connect);
    w
}

pub(super) fn not_tried(walk: &Walk) -> String {
    format!(
        "not tried: {}",
        walk.blocked.as_deref().unwrap_or("an earlier step failed")
    )
}
