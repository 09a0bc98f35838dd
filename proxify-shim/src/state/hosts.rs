//! `/etc/hosts`, read by us so that a name listed there is answered without ever asking the
//! system resolver (which would fall through to DNS for a family the file does not list).

use crate::sys::lock::ForkSafeMutex;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOSTS: &str = "/etc/hosts";

fn entries(text: &str) -> impl Iterator<Item = (IpAddr, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let line = line.split('#').next().unwrap_or("");
        let mut it = line.split_whitespace();
        let addr = it.next()?;
        let addr = addr.split('%').next().unwrap_or(addr);
        let ip: IpAddr = addr.parse().ok()?;
        let names: Vec<&str> = it.collect();
        (!names.is_empty()).then_some((ip, names))
    })
}

/// The file's text, read again at most once a second (a look-up per call would cost an
/// open and a read each time). The lock guards only the snapshot and when it was read: the
/// file is read, and the text parsed, with the lock released (see `sys::lock`).
static CACHE: ForkSafeMutex<Option<(Arc<str>, Instant)>> = ForkSafeMutex::new(None);
const REREAD: Duration = Duration::from_secs(1);

pub(crate) fn fork_prepare() {
    CACHE.raw_lock();
}

pub(crate) fn fork_release() {
    // SAFETY: the atfork handlers pair this with fork_prepare's raw_lock.
    unsafe { CACHE.raw_unlock() }
}

/// A snapshot of the file's text: the cached one if read less than `REREAD` ago, otherwise
/// the file read again (outside the lock) and stored for the next callers.
fn text() -> Arc<str> {
    let now = Instant::now();
    let cached = {
        let c = CACHE.lock();
        match &*c {
            Some((t, at)) if now.saturating_duration_since(*at) < REREAD => Some(t.clone()),
            _ => None,
        }
    };
    if let Some(t) = cached {
        return t;
    }
    let t: Arc<str> = std::fs::read_to_string(HOSTS).unwrap_or_default().into();
    let old = CACHE.replace(Some((t.clone(), Instant::now())));
    drop(old);
    t
}

fn with_text<R>(f: impl FnOnce(&str) -> R) -> R {
    f(&text())
}

/// Addresses listed for `name` (case-insensitive; canonical name first), in file order.
pub fn lookup_name(name: &str) -> Option<(String, Vec<IpAddr>)> {
    with_text(|t| lookup_name_in(t, name))
}

pub fn lookup_name_in(text: &str, name: &str) -> Option<(String, Vec<IpAddr>)> {
    let name = name.strip_suffix('.').unwrap_or(name);
    // Most names looked up are not in the file: a scan for the name's bytes settles that
    // without parsing a line (a name the file lists is in its text).
    if !mentions(text, name) {
        return None;
    }
    let mut canon = None;
    let mut addrs = Vec::new();
    for (ip, names) in entries(text) {
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            canon.get_or_insert_with(|| names[0].to_string());
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    canon.map(|c| (c, addrs))
}

/// True when `text` holds `name` anywhere, ASCII case ignored (an empty name: always).
fn mentions(text: &str, name: &str) -> bool {
    let (t, n) = (text.as_bytes(), name.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    let first = first.to_ascii_lowercase();
    t.len() >= n.len()
        && (0..=t.len() - n.len()).any(|i| {
            t[i].to_ascii_lowercase() == first && t[i + 1..i + n.len()].eq_ignore_ascii_case(rest)
        })
}

/// The first name listed for `ip`.
pub fn lookup_addr(ip: &IpAddr) -> Option<String> {
    with_text(|t| {
        entries(t)
            .find(|(a, _)| a == ip)
            .map(|(_, n)| n[0].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse() {
        let t = "127.0.0.1 localhost\n# x\n::1 localhost ip6-localhost\n203.0.113.10 Target.example t # c\nbad line\n";
        let (c, a) = lookup_name_in(t, "localhost").unwrap();
        assert_eq!(c, "localhost");
        assert_eq!(a.len(), 2);
        let (c, a) = lookup_name_in(t, "T.").unwrap();
        assert_eq!(c, "Target.example");
        assert_eq!(a, vec!["203.0.113.10".parse::<IpAddr>().unwrap()]);
        assert!(lookup_name_in(t, "nothere").is_none());
        // A name that is only part of a listed one, or only in a comment, is not listed.
        assert!(lookup_name_in(t, "Target").is_none());
        assert!(lookup_name_in(t, "x").is_none());
        assert!(lookup_name_in(t, "c").is_none());
        assert!(lookup_name_in(t, "TARGET.EXAMPLE.").is_some());
    }

    #[test]
    fn mentions_ignores_ascii_case() {
        assert!(mentions("a Target.example b", "target.EXAMPLE"));
        assert!(mentions("xy", "y"));
        assert!(mentions("xy", ""));
        assert!(!mentions("xy", "xyz"));
        assert!(!mentions("", "a"));
        assert!(!mentions("target.exampl", "target.example"));
    }

    #[test]
    fn the_file_is_read_and_parsed_outside_the_lock() {
        let ((a, b), n) = crate::sys::lock::audit::count(|| {
            let a = text();
            let b = text();
            lookup_name("localhost");
            lookup_addr(&"127.0.0.1".parse().unwrap());
            (a, b)
        });
        assert_eq!(n, 0, "allocations or frees under CACHE's lock");
        assert_eq!(*a, *b);
        // Stale: read again, the old snapshot stays valid for whoever holds it.
        if let Some((_, at)) = CACHE.lock().as_mut() {
            *at = at.checked_sub(REREAD).unwrap_or(*at);
        }
        let (c, n) = crate::sys::lock::audit::count(text);
        assert_eq!(n, 0);
        assert_eq!(*a, *c);
    }
}
