//! `ProxyUrl::from_str` on arbitrary UTF-8.
//!
//! - Whatever parses prints (`to_url_string`) to a URL that parses to an equal value.
//! - The password never shows: `masked()`, `Display`, `Debug` and every error message are the
//!   same when the password is replaced by a different one of the same shape (so they cannot
//!   depend on it), and `masked()` contains neither the password nor its percent-encoded form
//!   unless that text is also part of the rest of the URL. (A plain substring test on `Debug`
//!   or on error messages would not be sound: a password such as "pass" or "port" is part of
//!   their fixed text.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxify_core::url::ProxyUrl;

/// Byte range of the raw (still percent-encoded) password, found as the parser does: after
/// "://", the user info ends at the last '@' and the password starts after its first ':'.
fn raw_password_range(s: &str) -> Option<std::ops::Range<usize>> {
    let t = s.trim();
    let base = s.len() - s.trim_start().len();
    let rest_start = base + t.find("://")? + 3;
    let rest = &s[rest_start..base + t.len()];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(rest_start + colon + 1..rest_start + at)
}

/// A different password of the same shape: '%' stays, a hex digit becomes another hex digit
/// of the same case, anything else becomes 'z'. Percent-decoding succeeds or fails exactly as
/// before, and no '@' or ':' is left that could move the parser's split points (the ones in
/// the password are never the split points anyway).
fn other_password(p: &str) -> String {
    p.chars()
        .map(|c| match c {
            '%' => '%',
            '0'..='8' | 'a'..='e' | 'A'..='E' => (c as u8 + 1) as char,
            '9' => '0',
            'f' => 'a',
            'F' => 'A',
            _ => 'z',
        })
        .collect()
}

fn check_line(msg: &str) {
    assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<ProxyUrl>();

    // The same input with another password of the same shape.
    let swapped = raw_password_range(s).map(|r| {
        let mut t = s.to_string();
        t.replace_range(r.clone(), &other_password(&s[r]));
        t.parse::<ProxyUrl>()
    });

    let u = match parsed {
        Err(e) => {
            check_line(&e.0);
            if let Some(other) = swapped {
                let e2 = other.expect_err("password swap made an invalid URL valid");
                assert_eq!(e, e2, "the error message depends on the password");
            }
            return;
        }
        Ok(u) => u,
    };

    // Round trip.
    let full = u.to_url_string();
    let again: ProxyUrl = full
        .parse()
        .unwrap_or_else(|e| panic!("to_url_string() gave {full:?} which fails: {e}"));
    assert_eq!(again, u, "round trip through {full:?}");
    assert_eq!(again.to_url_string(), full);

    // The user has 1+ bytes; credentials() carries user and password.
    if let Some(user) = &u.user {
        assert!(!user.is_empty());
        let c = u.credentials().expect("credentials");
        assert_eq!(&c.user, user);
        assert_eq!(c.pass, u.pass.clone().unwrap_or_default());
    } else {
        assert!(u.pass.is_none() && u.credentials().is_none());
    }

    let masked = u.masked();
    check_line(&masked);
    assert_eq!(u.to_string(), masked);
    let dbg = format!("{u:?}");

    // Independence from the password.
    if let Some(other) = swapped {
        let v = other.expect("password swap made a valid URL invalid");
        assert_eq!(v.pass.is_some(), u.pass.is_some());
        assert_eq!(v.masked(), masked, "masked() depends on the password");
        assert_eq!(format!("{v:?}"), dbg, "Debug depends on the password");
        let mut w = v.clone();
        w.pass = u.pass.clone();
        assert_eq!(w, u, "password swap changed more than the password");
    }

    let Some(pass) = u.pass.as_deref().filter(|p| !p.is_empty()) else {
        return;
    };
    // The rest of the URL: the same value with an empty password. masked() is that text
    // with "***" inserted after the ':', so a piece of masked() without '*' that is not in
    // `rest` would have to come from the password.
    let mut blank = u.clone();
    blank.pass = Some(Vec::new());
    let rest = blank.to_url_string();
    let encoded = {
        // The percent-encoded password as to_url_string() wrote it: between the first ':'
        // after "://" (the encoded user has no ':') and the last '@' (nor has the encoded
        // password).
        let after = full.find("://").unwrap() + 3;
        let colon = after + full[after..].find(':').unwrap();
        let at = full.rfind('@').unwrap();
        &full[colon + 1..at]
    };
    assert!(!encoded.is_empty() && !encoded.contains(['*', '@', ':']));
    if !rest.contains(encoded) {
        assert!(!masked.contains(encoded), "masked() shows the password");
    }
    if let Ok(raw) = std::str::from_utf8(pass) {
        if !raw.contains('*') && !rest.contains(raw) {
            assert!(!masked.contains(raw), "masked() shows the password");
        }
    }
});
