//! `proxify trace [--summary] FILE`: the trace `proxify run --trace FILE` wrote (one JSON
//! object a line, from the shim's `sys/trace.rs`), as a table grouped by destination, or its
//! top lines and totals. A line that is not such an object is skipped and counted.

use serde_json::Value;
use std::collections::BTreeSet;

/// What is known of one destination.
#[derive(Default, Debug)]
struct Row {
    dest: String,
    calls: BTreeSet<String>,
    /// Decisions (each connect, association or look-up counts once).
    count: u64,
    routes: BTreeSet<String>,
    failures: u64,
    /// Handshake times of the proxied outcomes.
    ms: Vec<f64>,
}

#[derive(Default, Debug)]
pub struct Trace {
    rows: Vec<Row>,
    pub bad: u64,
    pub lines: u64,
    truncated: u64,
    connects: u64,
    proxied: u64,
    direct: u64,
    denied: u64,
    failed: u64,
    udp: u64,
    lookups: u64,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// How a decision's route is shown: the proxies (`a > b`), `direct` or `deny`.
fn route_of(v: &Value) -> Option<String> {
    let route = v.get("route")?.as_str()?;
    Some(match route {
        "chain" => {
            let hops: Vec<&str> = v
                .get("proxies")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if hops.is_empty() {
                "proxy".to_string()
            } else {
                hops.join(" > ")
            }
        }
        other => other.to_string(),
    })
}

/// A failure: a result that is neither `ok` nor `EINPROGRESS` (a non-blocking direct connect).
fn failed(result: &str) -> bool {
    result != "ok" && result != "EINPROGRESS"
}

impl Trace {
    pub fn parse(input: &str) -> Trace {
        let mut t = Trace::default();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        for line in input.lines() {
            if line.trim().is_empty() {
                continue;
            }
            t.lines += 1;
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                t.bad += 1;
                continue;
            };
            let ev = text(&v, "ev");
            if ev.as_deref() == Some("truncated") {
                t.truncated += 1;
                continue;
            }
            let (Some(ev), Some(call), Some(dest), Some(route)) =
                (ev, text(&v, "call"), text(&v, "dest"), route_of(&v))
            else {
                t.bad += 1;
                continue;
            };
            let result = text(&v, "result");
            let lookup = matches!(call.as_str(), "getaddrinfo" | "gethostbyname");
            let route = match (lookup, route.as_str()) {
                (true, "direct") => "local DNS".to_string(),
                (true, _) => "remote DNS".to_string(),
                _ => route,
            };
            let i = *index.entry(dest.clone()).or_insert_with(|| {
                t.rows.push(Row {
                    dest: dest.clone(),
                    ..Row::default()
                });
                t.rows.len() - 1
            });
            let row = &mut t.rows[i];
            row.calls.insert(call.clone());
            let kind = v.get("route").and_then(Value::as_str).unwrap_or("");
            match ev.as_str() {
                "decision" => {
                    row.count += 1;
                    row.routes.insert(route);
                    match call.as_str() {
                        "connect" => {
                            t.connects += 1;
                            match kind {
                                "chain" => t.proxied += 1,
                                "direct" => t.direct += 1,
                                "deny" => t.denied += 1,
                                _ => {}
                            }
                        }
                        "udp-associate" => t.udp += 1,
                        _ if lookup => t.lookups += 1,
                        _ => {}
                    }
                    // A look-up's result is on its decision line.
                    if call != "connect" && call != "udp-associate" {
                        if let Some(r) = &result {
                            if failed(r) {
                                row.failures += 1;
                                t.failed += 1;
                            }
                        }
                    }
                }
                "outcome" => {
                    if result.as_deref().is_some_and(failed) {
                        row.failures += 1;
                        t.failed += 1;
                    }
                    if kind == "chain" {
                        if let Some(ms) = v.get("ms").and_then(Value::as_f64) {
                            row.ms.push(ms);
                        }
                    }
                }
                _ => t.bad += 1,
            }
        }
        t.rows
            .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.dest.cmp(&b.dest)));
        t
    }

    fn table(rows: &[&Row]) -> String {
        let head = [
            "DESTINATION",
            "CALLS",
            "COUNT",
            "ROUTE",
            "FAILED",
            "MEDIAN MS",
        ];
        let mut cells: Vec<[String; 6]> = vec![head.map(str::to_string)];
        for r in rows {
            cells.push([
                r.dest.clone(),
                r.calls.iter().cloned().collect::<Vec<_>>().join(","),
                r.count.to_string(),
                r.routes.iter().cloned().collect::<Vec<_>>().join(", "),
                r.failures.to_string(),
                median(&r.ms).map_or("-".to_string(), |m| format!("{m:.1}")),
            ]);
        }
        let mut width = [0usize; 6];
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c) {
                *w = (*w).max(s.chars().count());
            }
        }
        let mut out = String::new();
        for c in &cells {
            let mut line = String::new();
            for (i, s) in c.iter().enumerate() {
                let pad = width[i] - s.chars().count();
                // Numbers right-aligned, text left-aligned.
                if matches!(i, 2 | 4 | 5) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(s);
                } else {
                    line.push_str(s);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Every destination, most used first.
    pub fn render(&self) -> String {
        let rows: Vec<&Row> = self.rows.iter().collect();
        let mut out = Trace::table(&rows);
        if self.truncated > 0 {
            out.push_str("(the trace reached its size cap: later lines were dropped)\n");
        }
        out
    }

    /// The totals and the ten most used destinations.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "connects: {}  proxied: {}  direct: {}  denied: {}  failed: {}  \
             udp associations: {}  look-ups: {}\n",
            self.connects,
            self.proxied,
            self.direct,
            self.denied,
            self.failed,
            self.udp,
            self.lookups
        );
        let top: Vec<&Row> = self.rows.iter().take(10).collect();
        if !top.is_empty() {
            out.push_str(&format!(
                "top {} of {} destinations:\n",
                top.len(),
                self.rows.len()
            ));
            out.push_str(&Trace::table(&top));
        }
        if self.truncated > 0 {
            out.push_str("(the trace reached its size cap: later lines were dropped)\n");
        }
        out
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"t":1.0,"pid":7,"ev":"decision","call":"connect","dest":"a.example:80","route":"chain","chain":"default","proxies":["socks5h://p:1080"],"rule":"no rule matched"}
{"t":1.1,"pid":7,"ev":"outcome","call":"connect","dest":"a.example:80","route":"chain","chain":"default","proxies":["socks5h://p:1080"],"result":"ok","ms":4.000}
{"t":1.2,"pid":7,"ev":"decision","call":"connect","dest":"a.example:80","route":"chain","chain":"default","proxies":["socks5h://p:1080"],"rule":"no rule matched"}
{"t":1.3,"pid":7,"ev":"outcome","call":"connect","dest":"a.example:80","route":"chain","chain":"default","proxies":["socks5h://p:1080"],"result":"ECONNREFUSED","ms":2.000}
not json
{"t":1.4,"pid":8,"ev":"decision","call":"connect","dest":"10.0.0.1:22","route":"deny","rule":"denied by rule 1","result":"EACCES"}
{"t":1.5,"pid":8,"ev":"decision","call":"connect","dest":"10.0.0.2:22","route":"direct","rule":"by rule 2"}
{"t":1.6,"pid":8,"ev":"outcome","call":"connect","dest":"10.0.0.2:22","route":"direct","result":"EINPROGRESS","ms":0.1}
{"t":1.7,"pid":8,"ev":"truncated","cap":100}
"#;

    #[test]
    fn groups_by_destination() {
        let t = Trace::parse(SAMPLE);
        assert_eq!(t.bad, 1);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("DESTINATION"), "{out}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "a.example:80",
                "connect",
                "2",
                "socks5h://p:1080",
                "1",
                "3.0"
            ],
            "{out}"
        );
        assert!(out.contains("size cap"), "{out}");
        let s = t.summary();
        assert!(
            s.starts_with("connects: 4  proxied: 2  direct: 1  denied: 1  failed: 1"),
            "{s}"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
    }
}
