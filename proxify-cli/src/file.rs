//! The `-f FILE` configuration file (TOML). Every error names the file and the line.

use proxify_core::cidr::Cidr;
use proxify_core::config::parse_seconds;
use proxify_core::url::ProxyUrl;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

/// What the file sets; `None` = not set there.
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub proxies: Option<Vec<ProxyUrl>>,
    pub direct: Option<Vec<Cidr>>,
    pub connect_timeout: Option<Duration>,
    pub handshake_timeout: Option<Duration>,
    pub log: Option<String>,
    pub log_file: Option<String>,
    pub quiet: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    proxy: Option<Spanned<ProxyList>>,
    direct: Option<Vec<Spanned<String>>>,
    connect_timeout: Option<Spanned<Seconds>>,
    timeout: Option<Spanned<Seconds>>,
    log: Option<String>,
    log_file: Option<String>,
    quiet: Option<bool>,
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

/// 1-based line of byte offset `pos` in `text`.
pub fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads and validates the file. The error is one line, without the "proxify: " prefix.
pub fn load(path: &Path) -> Result<FileConfig, String> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {name}: {}", crate::io_error_text(&e)))?;
    parse(&name.to_string(), &text)
}

/// Parses the TOML `text` of the file called `name`.
pub fn parse(name: &str, text: &str) -> Result<FileConfig, String> {
    let at = |span: Option<Range<usize>>| match span {
        Some(s) => format!("{name}:{}", line_of(text, s.start)),
        None => name.to_string(),
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        format!("{}: {msg}", at(e.span()))
    })?;

    let mut out = FileConfig::default();
    if let Some(list) = raw.proxy {
        let outer = list.span();
        let mut proxies = Vec::new();
        for (span, s) in list.into_inner().0 {
            let url = s.parse::<ProxyUrl>().map_err(|e| {
                let e = crate::scrub(&e.to_string(), &s);
                format!("{}: proxy: {e}", at(span.or(Some(outer.clone()))))
            })?;
            proxies.push(url);
        }
        out.proxies = Some(proxies);
    }
    if let Some(list) = raw.direct {
        let mut direct = Vec::new();
        for s in list {
            let c = s
                .get_ref()
                .parse::<Cidr>()
                .map_err(|e| format!("{}: direct: {e}", at(Some(s.span()))))?;
            direct.push(c);
        }
        out.direct = Some(direct);
    }
    let secs = |key: &str, v: Option<Spanned<Seconds>>| -> Result<Option<Duration>, String> {
        match v {
            None => Ok(None),
            Some(v) => {
                let n = v.get_ref().0;
                parse_seconds(&n.to_string())
                    .map(Some)
                    .map_err(|e| format!("{}: {key}: {e}", at(Some(v.span()))))
            }
        }
    };
    out.connect_timeout = secs("connect_timeout", raw.connect_timeout)?;
    out.handshake_timeout = secs("timeout", raw.timeout)?;
    out.log = raw.log;
    out.log_file = raw.log_file;
    out.quiet = raw.quiet;
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
    fn unknown_key_names_file_and_line() {
        let e = parse("c.toml", "quiet = true\n\nbogus = 1\n").unwrap_err();
        assert!(e.starts_with("c.toml:3: "), "{e}");
        assert!(e.contains("bogus"), "{e}");
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
        assert_eq!(parse("c.toml", "").unwrap(), FileConfig::default());
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
             quiet = false\n",
        )
        .unwrap();
        let p = &f.proxies.as_ref().unwrap()[0];
        assert_eq!(p.port, 1081);
        assert_eq!(f.direct.as_ref().unwrap().len(), 2);
        assert_eq!(f.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(f.handshake_timeout, Some(Duration::from_millis(500)));
        assert_eq!(f.log.as_deref(), Some("debug"));
        assert_eq!(f.log_file.as_deref(), Some("/tmp/x.log"));
        assert_eq!(f.quiet, Some(false));
    }

    #[test]
    fn proxy_array_entries_name_their_line() {
        let f = parse(
            "c.toml",
            "proxy = [\n  \"socks5://a.example\",\n  \"socks4a://b.example:1\",\n]\n",
        )
        .unwrap();
        assert_eq!(f.proxies.unwrap().len(), 2);
        let e = parse(
            "c.toml",
            "proxy = [\n  \"socks5://a.example\",\n  \"http://b.example\",\n]\n",
        )
        .unwrap_err();
        assert!(e.starts_with("c.toml:3: proxy: "), "{e}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = parse("c.toml", "\ndirect = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.starts_with("c.toml:2: direct: "), "{e}");
        let e = parse("c.toml", "timeout = 5\nconnect_timeout = -1\n").unwrap_err();
        assert!(e.starts_with("c.toml:2: connect_timeout: "), "{e}");
        let e = parse("c.toml", "timeout = \"5\"\n").unwrap_err();
        assert!(e.starts_with("c.toml:1: "), "{e}");
    }

    #[test]
    fn password_is_not_shown() {
        let e = parse(
            "c.toml",
            "proxy = \"socks5h://u:hunter2secret@h.example:99999\"\n",
        )
        .unwrap_err();
        assert!(e.starts_with("c.toml:1: proxy: "), "{e}");
        assert!(!e.contains("hunter2secret"), "{e}");
    }
}
