//! proxychains.conf files: the one Debian's proxychains4 package installs, and variants in
//! tests/fixtures/.

use proxify_core::config::{ChainMode, Config};
use proxify_core::proxychains::{self, ProxychainsConf};
use proxify_core::rules::Verdict;
use proxify_core::url::Scheme;
use std::path::PathBuf;
use std::time::Duration;

const STOCK: &str = "/etc/proxychains4.conf";

fn fixture(name: &str) -> (String, String) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    (path.display().to_string(), text)
}

fn parse_fixture(name: &str) -> ProxychainsConf {
    let (path, text) = fixture(name);
    proxychains::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn debian_stock_file() {
    let text = std::fs::read_to_string(STOCK).unwrap_or_else(|e| {
        panic!(
            "cannot read {STOCK} ({e}): this test needs Debian's stock file; \
             install it with: apt-get install proxychains4"
        )
    });
    assert!(proxychains::looks_like_proxychains(&text));
    let c = proxychains::parse(STOCK, &text).unwrap_or_else(|e| panic!("{e}"));
    // strict_chain, proxy_dns, remote_dns_subnet 224, 15000/8000 ms, one SOCKS4 proxy.
    assert_eq!(c.chain.mode, ChainMode::Strict);
    assert!(c.mode_line.is_some());
    assert!(c.proxy_dns.is_some());
    let subnet = c.remote_dns_subnet.as_ref().unwrap();
    assert_eq!(subnet.value.to_string(), "224.0.0.0/8");
    assert_eq!(
        c.read_timeout.as_ref().unwrap().value,
        Duration::from_secs(15)
    );
    assert_eq!(
        c.connect_timeout.as_ref().unwrap().value,
        Duration::from_secs(8)
    );
    assert_eq!(c.quiet, None);
    assert!(c.localnet.is_empty() && c.dnat.is_empty());
    assert_eq!(c.chain.hops.len(), 1);
    // proxy_dns: the SOCKS4 proxy gets names, so it speaks SOCKS4a.
    assert_eq!(c.chain.hops[0].masked(), "socks4a://127.0.0.1:9050");
    // Line numbers point at the real lines.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[c.proxy_lines[0] - 1].split_whitespace().next(),
        Some("socks4")
    );
    assert_eq!(lines[subnet.line - 1].trim(), "remote_dns_subnet 224");
    assert_eq!(lines[c.mode_line.unwrap() - 1].trim(), "strict_chain");
}

#[test]
fn full_variant() {
    let c = parse_fixture("variant-full.conf");
    assert_eq!(c.chain.mode, ChainMode::Random);
    assert_eq!(c.chain.chain_len, 2);
    assert!(c.quiet.is_some() && c.proxy_dns.is_some());
    assert_eq!(c.remote_dns_subnet.unwrap().value.to_string(), "10.0.0.0/8");
    assert_eq!(c.read_timeout.unwrap().value, Duration::from_millis(2500));
    assert_eq!(
        c.connect_timeout.unwrap().value,
        Duration::from_millis(1500)
    );
    let schemes: Vec<Scheme> = c.chain.hops.iter().map(|h| h.scheme).collect();
    assert_eq!(
        schemes,
        [
            Scheme::Socks5h,
            Scheme::Http,
            Scheme::Socks4a,
            Scheme::Http,
            Scheme::Socks5h
        ]
    );
    // URL form: literal password ('%' is not an escape for proxychains).
    assert_eq!(c.chain.hops[4].pass.as_deref(), Some(&b"pa%ss"[..]));
    assert_eq!(c.chain.hops[1].user.as_deref(), Some(&b"justu"[..]));

    // As a configuration: localnet are direct rules, dnat entries rewrite.
    let cfg = Config {
        proxies: c.chain.hops.clone(),
        chains: vec![c.chain.clone()],
        rules: proxify_core::rules::Rules {
            rules: c.localnet.clone(),
            dnat: c.dnat.iter().map(|d| d.value).collect(),
        },
        proxy_dns: Some(true),
        ..Config::default()
    };
    cfg.check().unwrap();
    let ip = |s: &str| Some(s.parse().unwrap());
    assert_eq!(
        cfg.decide(ip("192.168.1.9"), None, 80).verdict,
        Verdict::Direct
    );
    assert_eq!(
        cfg.decide(ip("192.168.1.9"), None, 81).verdict,
        Verdict::Proxy("default")
    );
    assert_eq!(
        cfg.decide(ip("203.0.113.77"), None, 1).verdict,
        Verdict::Direct
    );
    assert_eq!(
        cfg.decide(ip("2001:db8:1:2::1"), None, 443).verdict,
        Verdict::Direct
    );
    assert_eq!(
        cfg.decide(ip("2001:db8:1:2::1"), None, 80).verdict,
        Verdict::Proxy("default")
    );
    assert_eq!(
        cfg.rules.dnat("192.0.2.1:1234".parse().unwrap()),
        Some("198.51.100.2:443".parse().unwrap())
    );
    assert_eq!(
        cfg.rules.dnat("192.0.2.2:22".parse().unwrap()),
        Some("198.51.100.3:22".parse().unwrap())
    );
    // And it survives the trip to the shim.
    let vars = cfg.to_env();
    let back = Config::from_env_with(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| v.clone())
    })
    .unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn dynamic_variant_resolves_locally() {
    let c = parse_fixture("variant-dynamic-local-dns.conf");
    assert_eq!(c.chain.mode, ChainMode::Dynamic);
    assert_eq!(c.proxy_dns, None);
    let hops: Vec<String> = c.chain.hops.iter().map(|h| h.masked()).collect();
    assert_eq!(
        hops,
        [
            "socks5://192.0.2.20:1080",
            "socks4://ident@192.0.2.21:9050",
            "http://192.0.2.22:3128"
        ]
    );
    assert_eq!(c.read_timeout, None);
}

#[test]
fn broken_files_name_file_line_and_problem() {
    for (name, line, needle) in [
        (
            "broken-unknown-key.conf",
            Some(3),
            "unknown setting \"proxy_dsn_typo\"",
        ),
        ("broken-raw.conf", Some(5), "raw proxies are not supported"),
        (
            "broken-proxy-dns-daemon.conf",
            Some(2),
            "proxy_dns_daemon is not supported",
        ),
        (
            "broken-no-proxylist.conf",
            Some(3),
            "unknown setting \"socks5\"",
        ),
    ] {
        let (path, text) = fixture(name);
        let e = proxychains::parse(&path, &text).unwrap_err();
        let want = match line {
            Some(l) => format!("{path}:{l}: "),
            None => format!("{path}: "),
        };
        assert!(e.starts_with(&want), "{e}");
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
