//! The result of `proxify check`: steps with their status and the time each took, shown to a
//! person (one line per step, then a verdict) or as one JSON object. No I/O here.

use serde_json::{json, Map};
use std::fmt::Write;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It works.
    Ok,
    /// It was tried and does not work.
    Fail,
    /// It does not apply here (e.g. UDP through a chain): said so, not tried.
    NotApplicable,
    /// Not tried because an earlier step failed.
    NotTried,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::NotApplicable => "n/a",
            Status::NotTried => "not tried",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A hop reachable: TCP to the first, CONNECT through the others for the next ones.
    Reach,
    /// Authentication at a hop.
    Auth,
    /// CONNECT to HOST:PORT through the whole chain.
    Connect,
    Udp,
    Bind,
    Pipeline,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reach => "reach",
            Kind::Auth => "auth",
            Kind::Connect => "connect",
            Kind::Udp => "udp",
            Kind::Bind => "bind",
            Kind::Pipeline => "pipeline",
        }
    }
}

/// An extra JSON field of a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
    Null,
}

impl Value {
    fn json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => json!(s),
            Value::Int(n) => json!(n),
            Value::Bool(b) => json!(b),
            Value::List(v) => json!(v),
            Value::Null => serde_json::Value::Null,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: Kind,
    /// The hop (1-based) the step is about.
    pub hop: Option<usize>,
    /// "hop 1 reachable", "CONNECT example.com:443"...
    pub title: String,
    pub status: Status,
    /// A required step that is not `Ok` fails the check.
    pub required: bool,
    /// What happened, in words.
    pub detail: String,
    pub time: Option<Duration>,
    /// Extra fields for the JSON output.
    pub fields: Vec<(&'static str, Value)>,
}

impl Step {
    /// A required step, not tried yet.
    pub fn new(kind: Kind, hop: Option<usize>, title: impl Into<String>) -> Step {
        Step {
            kind,
            hop,
            title: title.into(),
            status: Status::NotTried,
            required: true,
            detail: String::new(),
            time: None,
            fields: Vec::new(),
        }
    }

    pub fn set(&mut self, status: Status, detail: impl Into<String>) {
        self.status = status;
        self.detail = detail.into();
    }

    pub fn field(&mut self, key: &'static str, v: Value) {
        self.fields.retain(|(k, _)| *k != key);
        self.fields.push((key, v));
    }

    /// Whether this step makes the check fail.
    pub fn fails(&self) -> bool {
        self.required && self.status != Status::Ok
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub chain: String,
    pub mode: String,
    /// Each hop: the URL with the password masked, and its scheme.
    pub hops: Vec<(String, String)>,
    pub remote_dns: bool,
    /// HOST:PORT as given.
    pub target: Option<String>,
    /// What --require named.
    pub required: Vec<&'static str>,
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.steps.iter().any(Step::fails)
    }

    pub fn exit_code(&self) -> i32 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    /// "yes", "no", "n/a" or "unknown" (not tried) for UDP, BIND or pipelining (the first
    /// step of that kind: for pipelining, the first SOCKS5 hop).
    pub fn supports(&self, kind: Kind) -> &'static str {
        match self.steps.iter().find(|s| s.kind == kind).map(|s| s.status) {
            Some(Status::Ok) => "yes",
            Some(Status::Fail) => "no",
            Some(Status::NotApplicable) => "n/a",
            Some(Status::NotTried) | None => "unknown",
        }
    }

    /// One line: "OK: ..." or "FAIL: ...".
    pub fn verdict(&self) -> String {
        // Steps not tried because of an earlier failure are not counted again.
        let mut failing: Vec<&Step> = self
            .steps
            .iter()
            .filter(|s| s.fails() && s.status != Status::NotTried)
            .collect();
        if failing.is_empty() {
            failing = self.steps.iter().filter(|s| s.fails()).collect();
        }
        if let Some(first) = failing.first() {
            let mut v = format!("FAIL: {}: {}", first.title, first.detail);
            if first.detail.is_empty() {
                v = format!("FAIL: {}: {}", first.title, first.status.as_str());
            }
            if failing.len() > 1 {
                let _ = write!(v, " (and {} more)", failing.len() - 1);
            }
            return v;
        }
        let n = self.hops.len();
        let mut v = if n == 1 {
            "OK: the proxy is reachable and accepts us".to_string()
        } else {
            format!("OK: all {n} hops are reachable and accept us")
        };
        if let Some(t) = &self.target {
            let _ = write!(v, "; CONNECT to {t} works");
        }
        let _ = write!(
            v,
            "; UDP ASSOCIATE: {}, BIND: {}, pipelining: {}",
            self.supports(Kind::Udp),
            self.supports(Kind::Bind),
            self.supports(Kind::Pipeline)
        );
        v
    }
}

/// Whether the locale's character set is UTF-8: the first set of LC_ALL, LC_CTYPE and LANG
/// names it (unset or empty everywhere is the C locale: no).
pub fn utf8_locale(get: impl Fn(&str) -> Option<String>) -> bool {
    for key in ["LC_ALL", "LC_CTYPE", "LANG"] {
        if let Some(v) = get(key).filter(|v| !v.is_empty()) {
            let v = v.to_ascii_lowercase();
            return v.contains("utf-8") || v.contains("utf8");
        }
    }
    false
}

/// Milliseconds for a person: one decimal below 10 ms, whole above.
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Milliseconds as a JSON number (to the microsecond).
fn json_ms(d: Duration) -> serde_json::Value {
    json!((d.as_secs_f64() * 1e6).round() / 1e3)
}

/// The mark that starts a step's line.
fn mark(s: &Step, utf8: bool) -> &'static str {
    let good = s.status == Status::Ok;
    let neutral =
        s.status == Status::NotTried || (!s.required && s.status == Status::NotApplicable);
    match (utf8, good, neutral) {
        (true, true, _) => "\u{2713}",
        (true, false, true) => "\u{2013}",
        (true, false, false) => "\u{2717}",
        (false, true, _) => "OK  ",
        (false, false, true) => "--  ",
        (false, false, false) => "FAIL",
    }
}

/// The text for a person. `utf8`: marks ✓/✗ (else OK/FAIL).
pub fn human(r: &Report, utf8: bool) -> String {
    let mut o = String::new();
    let n = r.hops.len();
    let _ = write!(
        o,
        "proxify check: chain {} ({}), {n} {}",
        r.chain,
        r.mode,
        if n == 1 { "hop" } else { "hops" }
    );
    if let Some(t) = &r.target {
        let _ = write!(o, ", target {t}");
    }
    o.push('\n');
    for (i, (url, _)) in r.hops.iter().enumerate() {
        let _ = writeln!(o, "  hop {}: {url}", i + 1);
    }
    for note in &r.notes {
        let _ = writeln!(o, "note: {note}");
    }
    for s in &r.steps {
        let _ = write!(o, "{} {}", mark(s, utf8), s.title);
        if !s.detail.is_empty() {
            let _ = write!(o, ": {}", s.detail);
        }
        if s.status == Status::Fail && !s.required {
            o.push_str(" (not required)");
        }
        if let Some(t) = s.time {
            let _ = write!(o, "  [{}]", fmt_ms(t));
        }
        o.push('\n');
    }
    o.push_str(&r.verdict());
    o.push('\n');
    if !utf8 {
        // Whatever the details hold (a proxy's reason phrase is ASCII already).
        o = o
            .chars()
            .map(|c| match c {
                '\u{2014}' | '\u{2013}' => '-',
                '\u{2192}' => '>',
                c => c,
            })
            .collect();
    }
    o
}

/// One JSON object (one line).
pub fn json(r: &Report) -> String {
    let hops: Vec<_> = r
        .hops
        .iter()
        .map(|(url, scheme)| json!({ "url": url, "scheme": scheme }))
        .collect();
    let steps: Vec<_> = r
        .steps
        .iter()
        .map(|s| {
            let mut g = Map::new();
            g.insert("step".into(), json!(s.kind.as_str()));
            g.insert("hop".into(), json!(s.hop));
            g.insert("title".into(), json!(s.title));
            g.insert("status".into(), json!(s.status.as_str()));
            g.insert("required".into(), json!(s.required));
            g.insert("ms".into(), s.time.map_or(serde_json::Value::Null, json_ms));
            g.insert("detail".into(), json!(s.detail));
            for (k, v) in &s.fields {
                g.insert(k.to_string(), v.json());
            }
            serde_json::Value::Object(g)
        })
        .collect();
    let out = json!({
        "ok": r.ok(),
        "exit": r.exit_code(),
        "verdict": r.verdict(),
        "chain": {
            "name": r.chain,
            "mode": r.mode,
            "remote_dns": r.remote_dns,
            "hops": hops,
        },
        "target": r.target,
        "required": r.required,
        "supports": {
            "udp": r.supports(Kind::Udp),
            "bind": r.supports(Kind::Bind),
            "pipeline": r.supports(Kind::Pipeline),
        },
        "notes": r.notes,
        "steps": steps,
    });
    format!("{out}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: Kind, status: Status, required: bool) -> Step {
        let mut s = Step::new(kind, Some(1), format!("{} step", kind.as_str()));
        s.set(status, format!("{} detail", status.as_str()));
        s.required = required;
        s
    }

    fn report(steps: Vec<Step>) -> Report {
        Report {
            chain: "default".into(),
            mode: "strict".into(),
            hops: vec![("socks5://u:***@127.0.0.1:1080".into(), "socks5".into())],
            remote_dns: false,
            target: Some("127.0.0.1:80".into()),
            required: vec![],
            notes: vec!["a \"note\"".into()],
            steps,
        }
    }

    #[test]
    fn locale() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(a, _)| *a == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!utf8_locale(env(&[])));
        assert!(utf8_locale(env(&[("LANG", "en_US.UTF-8")])));
        assert!(utf8_locale(env(&[("LANG", "C.utf8")])));
        assert!(!utf8_locale(env(&[("LANG", "C")])));
        // LC_ALL wins, empty counts as unset.
        assert!(!utf8_locale(env(&[("LC_ALL", "C"), ("LANG", "C.UTF-8")])));
        assert!(utf8_locale(env(&[
            ("LC_ALL", ""),
            ("LC_CTYPE", "de_DE.UTF-8")
        ])));
        assert!(!utf8_locale(env(&[
            ("LC_CTYPE", "POSIX"),
            ("LANG", "C.UTF-8")
        ])));
    }

    #[test]
    fn milliseconds() {
        assert_eq!(fmt_ms(Duration::from_micros(250)), "0.2 ms");
        assert_eq!(fmt_ms(Duration::from_micros(9_940)), "9.9 ms");
        assert_eq!(fmt_ms(Duration::from_millis(1234)), "1234 ms");
        assert_eq!(json_ms(Duration::from_micros(1500)).to_string(), "1.5");
        assert_eq!(
            json_ms(Duration::from_nanos(1_234_567)).to_string(),
            "1.235"
        );
        assert_eq!(json_ms(Duration::ZERO).to_string(), "0.0");
    }

    #[test]
    fn verdict_and_exit() {
        let ok = report(vec![
            step(Kind::Reach, Status::Ok, true),
            step(Kind::Connect, Status::Ok, true),
            step(Kind::Udp, Status::Fail, false),
            step(Kind::Bind, Status::NotApplicable, false),
        ]);
        assert!(ok.ok());
        assert_eq!(ok.exit_code(), 0);
        assert_eq!(
            ok.verdict(),
            "OK: the proxy is reachable and accepts us; CONNECT to 127.0.0.1:80 works; \
             UDP ASSOCIATE: no, BIND: n/a, pipelining: unknown"
        );
        let bad = report(vec![
            step(Kind::Reach, Status::Fail, true),
            step(Kind::Connect, Status::NotTried, true),
            step(Kind::Udp, Status::NotTried, false),
        ]);
        assert!(!bad.ok());
        assert_eq!(bad.exit_code(), 1);
        assert_eq!(bad.verdict(), "FAIL: reach step: fail detail");
        let two = report(vec![
            step(Kind::Reach, Status::Fail, true),
            step(Kind::Connect, Status::Fail, true),
        ]);
        assert_eq!(two.verdict(), "FAIL: reach step: fail detail (and 1 more)");
        let only_not_tried = report(vec![step(Kind::Connect, Status::NotTried, true)]);
        assert_eq!(only_not_tried.exit_code(), 1);
        assert!(only_not_tried.verdict().starts_with("FAIL: connect step"));
        // A required feature that does not apply fails.
        let na = report(vec![step(Kind::Udp, Status::NotApplicable, true)]);
        assert_eq!(na.exit_code(), 1);
        assert_eq!(na.supports(Kind::Udp), "n/a");
    }

    #[test]
    fn human_marks() {
        let mut s = step(Kind::Connect, Status::Ok, true);
        s.time = Some(Duration::from_micros(1200));
        let r = report(vec![
            s,
            step(Kind::Udp, Status::Fail, false),
            step(Kind::Bind, Status::NotApplicable, false),
            step(Kind::Pipeline, Status::NotApplicable, true),
            step(Kind::Auth, Status::NotTried, true),
        ]);
        let u = human(&r, true);
        let lines: Vec<&str> = u.lines().collect();
        assert_eq!(
            lines[0],
            "proxify check: chain default (strict), 1 hop, target 127.0.0.1:80"
        );
        assert_eq!(lines[1], "  hop 1: socks5://u:***@127.0.0.1:1080");
        assert_eq!(lines[2], "note: a \"note\"");
        assert_eq!(lines[3], "\u{2713} connect step: ok detail  [1.2 ms]");
        assert_eq!(lines[4], "\u{2717} udp step: fail detail (not required)");
        assert_eq!(lines[5], "\u{2013} bind step: n/a detail");
        assert_eq!(lines[6], "\u{2717} pipeline step: n/a detail");
        assert_eq!(lines[7], "\u{2013} auth step: not tried detail");
        assert_eq!(lines[8], "FAIL: pipeline step: n/a detail");
        let a = human(&r, false);
        assert!(a.is_ascii(), "{a}");
        let lines: Vec<&str> = a.lines().collect();
        assert_eq!(lines[3], "OK   connect step: ok detail  [1.2 ms]");
        assert_eq!(lines[4], "FAIL udp step: fail detail (not required)");
        assert_eq!(lines[5], "--   bind step: n/a detail");
        assert_eq!(lines[6], "FAIL pipeline step: n/a detail");
        assert_eq!(lines[7], "--   auth step: not tried detail");
    }

    #[test]
    fn json_shape() {
        let mut s = step(Kind::Auth, Status::Ok, true);
        s.time = Some(Duration::from_micros(500));
        s.field("offered", Value::List(vec!["username/password".into()]));
        s.field("chosen", Value::Str("username/password".into()));
        s.field("reply", Value::Int(0));
        s.field("pipelined", Value::Bool(false));
        s.field("bound", Value::Null);
        let mut r = report(vec![s, step(Kind::Udp, Status::Fail, false)]);
        r.required = vec!["bind"];
        let j = json(&r);
        assert!(j.ends_with("}\n") && j.lines().count() == 1);
        assert_eq!(
            j.trim_end(),
            concat!(
                "{\"ok\":true,\"exit\":0,\"verdict\":\"OK: the proxy is reachable and accepts us; ",
                "CONNECT to 127.0.0.1:80 works; UDP ASSOCIATE: no, BIND: unknown, pipelining: unknown\",",
                "\"chain\":{\"name\":\"default\",\"mode\":\"strict\",\"remote_dns\":false,",
                "\"hops\":[{\"url\":\"socks5://u:***@127.0.0.1:1080\",\"scheme\":\"socks5\"}]},",
                "\"target\":\"127.0.0.1:80\",\"required\":[\"bind\"],",
                "\"supports\":{\"udp\":\"no\",\"bind\":\"unknown\",\"pipeline\":\"unknown\"},",
                "\"notes\":[\"a \\\"note\\\"\"],",
                "\"steps\":[{\"step\":\"auth\",\"hop\":1,\"title\":\"auth step\",\"status\":\"ok\",",
                "\"required\":true,\"ms\":0.5,\"detail\":\"ok detail\",",
                "\"offered\":[\"username/password\"],\"chosen\":\"username/password\",\"reply\":0,",
                "\"pipelined\":false,\"bound\":null},",
                "{\"step\":\"udp\",\"hop\":1,\"title\":\"udp step\",\"status\":\"fail\",",
                "\"required\":false,\"ms\":null,\"detail\":\"fail detail\"}]}"
            )
        );
    }

    #[test]
    fn fields_replace() {
        let mut s = Step::new(Kind::Reach, None, "t");
        s.field("a", Value::Int(1));
        s.field("a", Value::Int(2));
        assert_eq!(s.fields, vec![("a", Value::Int(2))]);
    }
}
