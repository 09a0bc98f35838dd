//! Reads proxychains.conf files (proxychains-ng 4.x format, as Debian's proxychains4 package
//! ships `/etc/proxychains4.conf`) unchanged.
//!
//! Understood, before the `[ProxyList]` line:
//!
//! | line                                   | meaning here                                 |
//! |----------------------------------------|----------------------------------------------|
//! | `strict_chain`, `dynamic_chain`, `random_chain`, `round_robin_chain` | the chain mode (the last one wins; none: dynamic, as proxychains) |
//! | `chain_len = N`                        | hops per connection for random / round-robin |
//! | `quiet_mode`                           | quiet                                        |
//! | `proxy_dns`                            | remote DNS (SOCKS4 hops speak 4a, SOCKS5 hops send names); without it names are resolved locally |
//! | `remote_dns_subnet N`                  | placeholders from N.0.0.0/8                  |
//! | `tcp_read_time_out MS`                 | handshake timeout, milliseconds              |
//! | `tcp_connect_time_out MS`              | connect timeout, milliseconds                |
//! | `localnet ADDR[:PORT]/MASK`            | a `direct` rule (MASK dotted or a prefix length; IPv6 as `[ADDR]:PORT/LEN` or `ADDR/LEN`) |
//! | `dnat ORIG[:PORT] NEW[:PORT]`          | a dnat entry                                 |
//!
//! After `[ProxyList]`, every line is a proxy, `TYPE HOST PORT [USER [PASS]]` (TYPE `socks4`,
//! `socks5` or `http`; an IPv6 HOST without brackets) or a URL `TYPE://[USER:PASS@]HOST:PORT`;
//! user and password are taken literally, as proxychains does. Empty lines and lines
//! starting with `#` are skipped; before `[ProxyList]`, ` #` also starts a comment.
//!
//! Unlike proxychains, which skips what it does not know, everything else is an error naming
//! the file and line: an unknown key, a `raw` proxy, `proxy_dns_old` and `proxy_dns_daemon`
//! (other remote-DNS methods, not supported), a port of 0.
//!
//! Size: ~600 lines, ~190 of them unit tests: `parse` is one pass over the file with an arm per
//! key of the table above, and `proxy_line` reads both forms of a proxy line.

use crate::cidr::Cidr;
use crate::config::{check_remote_dns_subnet, Chain, ChainMode};
use crate::rules::{Action, Dnat, HostMatch, Pattern, PortRange, Rule, DEFAULT_CHAIN};
use crate::url::{Host, ProxyUrl, Scheme};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// A value and the (1-based) line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub line: usize,
}

/// What a proxychains.conf says, with the line of each setting (for `proxify config`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProxychainsConf {
    /// The chain, named [`DEFAULT_CHAIN`]; hop schemes follow `proxy_dns` (socks4a/socks5h
    /// with it, socks4/socks5 without).
    pub chain: Chain,
    /// The line of the chain-mode keyword that counted (`None`: dynamic by default).
    pub mode_line: Option<usize>,
    /// `chain_len` (also when the mode does not use it).
    pub chain_len: Option<At<usize>>,
    /// The line of each proxy, in order.
    pub proxy_lines: Vec<usize>,
    /// `proxy_dns` present (its line), else remote DNS is off.
    pub proxy_dns: Option<usize>,
    pub remote_dns_subnet: Option<At<Cidr>>,
    pub connect_timeout: Option<At<Duration>>,
    /// `tcp_read_time_out`: the handshake timeout.
    pub read_timeout: Option<At<Duration>>,
    /// `quiet_mode` (its line).
    pub quiet: Option<usize>,
    /// `localnet` lines as `direct` rules, origin `FILE:LINE`.
    pub localnet: Vec<Rule>,
    pub dnat: Vec<At<Dnat>>,
}

/// Does `text` look like a proxychains.conf (it has a `[ProxyList]` line)?
pub fn looks_like_proxychains(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[ProxyList]")
}

/// Quotes user text in a one-line message.
fn quoted(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    format!("\"{out}\"")
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn millis(key: &str, v: &str) -> Result<Duration, String> {
    match number(v) {
        Some(n) if (1..=3_600_000).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err(format!(
            "{key}: {} is not a number of milliseconds from 1 to 3600000",
            quoted(v)
        )),
    }
}

/// Prefix length of a contiguous dotted IPv4 netmask.
fn mask_prefix(m: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(m);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// `ADDR[:PORT]/MASK` (IPv4, MASK dotted or a length) or `[ADDR]:PORT/LEN`, `ADDR/LEN`
/// (IPv6). Port 0 means any port, as in proxychains.
fn localnet(arg: &str) -> Result<Pattern, String> {
    let bad = |what: &str| format!("localnet {}: {what}", quoted(arg));
    let (addr_port, mask) = arg
        .split_once('/')
        .ok_or_else(|| bad("expected ADDRESS[:PORT]/NETMASK"))?;
    let (addr, port): (IpAddr, Option<&str>) = if let Some(rest) = addr_port.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let ip = inside
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("bad IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| bad("bad port"))?),
        };
        (IpAddr::V6(ip), port)
    } else if addr_port.matches(':').count() > 1 {
        let ip = addr_port
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("bad IPv6 address"))?;
        (IpAddr::V6(ip), None)
    } else {
        let (a, p) = match addr_port.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (addr_port, None),
        };
        let ip = a.parse::<Ipv4Addr>().map_err(|_| bad("bad IPv4 address"))?;
        (IpAddr::V4(ip), p)
    };
    let port = match port {
        None => None,
        Some(p) => match number(p) {
            Some(0) => None,
            Some(n) if n <= 65535 => Some(n as u16),
            _ => return Err(bad("bad port")),
        },
    };
    let prefix = match (addr, mask.parse::<Ipv4Addr>()) {
        (IpAddr::V4(_), Ok(m)) => {
            mask_prefix(m).ok_or_else(|| bad("the netmask is not contiguous"))?
        }
        _ => {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match number(mask) {
                Some(n) if n <= max => n as u8,
                _ => return Err(bad("bad netmask")),
            }
        }
    };
    let net: Cidr = format!("{addr}/{prefix}")
        .parse()
        .map_err(|e: String| bad(&e))?;
    Ok(Pattern {
        host: HostMatch::Net(net),
        ports: port.map(|p| PortRange { lo: p, hi: p }),
    })
}

/// A `[ProxyList]` line.
fn proxy_line(line: &str, proxy_dns: bool) -> Result<ProxyUrl, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (kind, host, port, user, pass) = if fields.len() >= 3 {
        if fields.len() > 5 {
            return Err(format!(
                "too many fields in proxy line (TYPE HOST PORT [USER PASS]), starting {}",
                quoted(fields[0])
            ));
        }
        (
            fields[0],
            fields[1].to_string(),
            fields[2],
            fields.get(3).map(|u| u.as_bytes().to_vec()),
            fields.get(4).map(|p| p.as_bytes().to_vec()),
        )
    } else if fields.len() == 1 && fields[0].contains("://") {
        let (kind, rest) = fields[0].split_once("://").unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, pass) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = ui.split_once(':').ok_or_else(|| {
                    "proxy URL: USER:PASSWORD@ needs the ':' (as proxychains reads it)".to_string()
                })?;
                (Some(u.as_bytes().to_vec()), Some(p.as_bytes().to_vec()))
            }
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| "proxy URL: missing ']'".to_string())?;
            (
                h,
                after
                    .strip_prefix(':')
                    .ok_or_else(|| "proxy URL: the port is required".to_string())?,
            )
        } else {
            hostport
                .rsplit_once(':')
                .ok_or_else(|| "proxy URL: the port is required".to_string())?
        };
        (kind, host.to_string(), port, user, pass)
    } else {
        return Err(format!(
            "bad proxy line {} (use TYPE HOST PORT [USER PASS] or TYPE://[USER:PASS@]HOST:PORT)",
            quoted(line.split_whitespace().next().unwrap_or(""))
        ));
    };
    let scheme = match kind {
        "socks4" if proxy_dns => Scheme::Socks4a,
        "socks4" => Scheme::Socks4,
        "socks5" if proxy_dns => Scheme::Socks5h,
        "socks5" => Scheme::Socks5,
        "http" => Scheme::Http,
        "raw" => return Err("raw proxies are not supported".to_string()),
        _ => {
            return Err(format!(
                "unknown proxy type {} (use socks4, socks5 or http)",
                quoted(kind)
            ))
        }
    };
    let port = match number(port) {
        Some(n) if (1..=65535).contains(&n) => n as u16,
        _ => return Err(format!("bad proxy port {} (1 to 65535)", quoted(port))),
    };
    if matches!(scheme, Scheme::Socks4 | Scheme::Socks4a) && pass.is_some() {
        return Err("a SOCKS4 proxy takes a user id but no password".to_string());
    }
    // Validate the host the way proxy URLs are validated.
    let host_for_url = match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.clone(),
    };
    let parsed: ProxyUrl = format!("{}://{host_for_url}:{port}", scheme.as_str())
        .parse()
        .map_err(|e: crate::url::UrlError| e.0)?;
    let host: Host = parsed.host;
    if user.as_ref().is_some_and(|u| u.is_empty()) {
        return Err("empty proxy user name".to_string());
    }
    Ok(ProxyUrl {
        scheme,
        host,
        port,
        user,
        pass,
        pipeline: false,
        optimistic: false,
    })
}

/// Parses the text of the proxychains.conf called `name`. The error is one line,
/// `NAME:LINE: problem` (or `NAME: problem`), never showing a password.
pub fn parse(name: &str, text: &str) -> Result<ProxychainsConf, String> {
    let mut mode = (ChainMode::Dynamic, None);
    let mut out = ProxychainsConf {
        chain: Chain::strict(DEFAULT_CHAIN, Vec::new()),
        mode_line: None,
        chain_len: None,
        proxy_lines: Vec::new(),
        proxy_dns: None,
        remote_dns_subnet: None,
        connect_timeout: None,
        read_timeout: None,
        quiet: None,
        localnet: Vec::new(),
        dnat: Vec::new(),
    };
    let mut list_line = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let at = |e: String| format!("{name}:{n}: {e}");
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if list_line.is_some() {
            let url = proxy_line(line, out.proxy_dns.is_some()).map_err(at)?;
            out.chain.hops.push(url);
            out.proxy_lines.push(n);
            continue;
        }
        // Options: a " #" starts a comment.
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(i) => line[..i].trim_end(),
            None => line,
        };
        let (key, arg) = match line.split_once(|c: char| c.is_whitespace() || c == '=') {
            Some((k, a)) => (k, a.trim()),
            None => (line, ""),
        };
        let no_arg = |what: &str| -> Result<(), String> {
            if arg.is_empty() {
                Ok(())
            } else {
                Err(at(format!("{what} takes no value")))
            }
        };
        match key {
            "[ProxyList]" => {
                no_arg(key)?;
                list_line = Some(n);
            }
            "strict_chain" | "dynamic_chain" | "random_chain" | "round_robin_chain" => {
                no_arg(key)?;
                mode = (key.parse().map_err(at)?, Some(n));
            }
            "chain_len" => {
                let v = arg.strip_prefix('=').unwrap_or(arg).trim();
                match number(v) {
                    Some(l) if (1..=512).contains(&l) => {
                        out.chain_len = Some(At {
                            value: l as usize,
                            line: n,
                        })
                    }
                    _ => return Err(at(format!("chain_len: {} is not 1 to 512", quoted(v)))),
                }
            }
            "quiet_mode" => {
                no_arg(key)?;
                out.quiet = Some(n);
            }
            "proxy_dns" => {
                no_arg(key)?;
                out.proxy_dns = Some(n);
            }
            "proxy_dns_old" | "proxy_dns_daemon" => {
                return Err(at(format!(
                    "{key} is not supported (proxify resolves names through the proxy itself: \
                     use proxy_dns)"
                )))
            }
            "remote_dns_subnet" => {
                let net = match number(arg) {
                    Some(o) if o <= 255 => Cidr {
                        addr: IpAddr::V4(Ipv4Addr::new(o as u8, 0, 0, 0)),
                        prefix: 8,
                    },
                    _ => {
                        return Err(at(format!(
                            "remote_dns_subnet: {} is not a number from 0 to 255",
                            quoted(arg)
                        )))
                    }
                };
                check_remote_dns_subnet(&net).map_err(at)?;
                out.remote_dns_subnet = Some(At {
                    value: net,
                    line: n,
                });
            }
            "tcp_read_time_out" => {
                out.read_timeout = Some(At {
                    value: millis(key, arg).map_err(at)?,
                    line: n,
                })
            }
            "tcp_connect_time_out" => {
                out.connect_timeout = Some(At {
                    value: millis(key, arg).map_err(at)?,
                    line: n,
                })
            }
            "localnet" => {
                if arg.contains(char::is_whitespace) {
                    return Err(at(format!("localnet {}: unexpected text", quoted(arg))));
                }
                out.localnet.push(Rule {
                    pattern: localnet(arg).map_err(at)?,
                    action: Action::Direct,
                    origin: Some(format!("{name}:{n}")),
                });
            }
            "dnat" => {
                let d: Dnat = arg.parse().map_err(at)?;
                out.dnat.push(At { value: d, line: n });
            }
            _ => {
                return Err(at(format!(
                    "unknown setting {} (proxychains-ng 4.x settings, then [ProxyList])",
                    quoted(key)
                )))
            }
        }
    }
    let Some(list) = list_line else {
        return Err(format!("{name}: no [ProxyList] section"));
    };
    if out.chain.hops.is_empty() {
        return Err(format!("{name}:{list}: no proxy in [ProxyList]"));
    }
    out.chain.mode = mode.0;
    out.mode_line = mode.1;
    if out.chain.mode.uses_chain_len() {
        out.chain.chain_len = out.chain_len.as_ref().map_or(1, |l| l.value);
    }
    if let Err(e) = out.chain.check() {
        let line = out.chain_len.as_ref().map_or(list, |l| l.line);
        return Err(format!("{name}:{line}: {e}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ProxychainsConf {
        parse("pc.conf", text).unwrap_or_else(|e| panic!("{e}"))
    }
    fn err(text: &str) -> String {
        match parse("pc.conf", text) {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(e) => {
                assert!(!e.contains('\n'), "{e}");
                e
            }
        }
    }

    #[test]
    fn netmasks() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 240, 0, 0)), Some(12));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 255, 255, 255)), None);
    }

    #[test]
    fn localnet_forms() {
        let p = |s: &str| localnet(s).unwrap().to_string();
        assert_eq!(p("192.168.1.0:80/255.255.255.0"), "192.168.1.0/24:80");
        assert_eq!(p("192.168.100.0/255.255.255.0"), "192.168.100.0/24");
        assert_eq!(p("0.0.0.0:80/0.0.0.0"), "0.0.0.0/0:80");
        assert_eq!(p("[::]:80/0"), "[::/0]:80");
        assert_eq!(p("::1/128"), "::1/128");
        assert_eq!(p("[2001:db8::]/32"), "2001:db8::/32");
        assert_eq!(p("10.0.0.0/8"), "10.0.0.0/8");
        assert_eq!(p("10.0.0.0:0/8"), "10.0.0.0/8");
        for bad in [
            "10.0.0.0",
            "10.0.0/8",
            "10.0.0.0/33",
            "10.0.0.0/255.0.255.0",
            "10.0.0.0:99999/8",
            "10.0.0.0:x/8",
            "::1/129",
            "::1/255.0.0.0",
            "[::1/64",
            "[::1]x/64",
        ] {
            assert!(localnet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_and_proxies() {
        let c = ok("# comment\n\
                    round_robin_chain\n\
                    chain_len = 2\n\
                    quiet_mode\n\
                    proxy_dns\n\
                    remote_dns_subnet 10\n\
                    tcp_read_time_out 15000   # ms\n\
                    tcp_connect_time_out\t8000\n\
                    localnet 192.168.0.0/255.255.0.0\n\
                    localnet [::]:80/0\n\
                    dnat 192.0.2.1:1234  198.51.100.2:443\n\
                    dnat 192.0.2.2 198.51.100.2\n\
                    \n\
                    [ProxyList]\n\
                    socks5\t192.0.2.10 1080 lamer secret\n\
                    http 192.0.2.11 8080 justu hidden\n\
                    socks4 192.0.2.12 1080\n\
                    # a comment in the list\n\
                    http 2001:db8::13 3128\n\
                    socks5 proxy.example 1080 only-user\n\
                    socks5://us:p@ss@192.0.2.14:1081\n\
                    socks4://192.0.2.15:9050\n\
                    http://[2001:db8::16]:8080\n");
        assert_eq!(c.chain.name, "default");
        assert_eq!(c.chain.mode, ChainMode::RoundRobin);
        assert_eq!(c.mode_line, Some(2));
        assert_eq!(c.chain.chain_len, 2);
        assert_eq!(c.chain_len, Some(At { value: 2, line: 3 }));
        assert_eq!(c.quiet, Some(4));
        assert_eq!(c.proxy_dns, Some(5));
        assert_eq!(
            c.remote_dns_subnet.as_ref().unwrap().value.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            c.read_timeout.as_ref().unwrap().value,
            Duration::from_secs(15)
        );
        assert_eq!(
            c.connect_timeout.as_ref().unwrap().value,
            Duration::from_secs(8)
        );
        assert_eq!(c.connect_timeout.as_ref().unwrap().line, 8);
        let rules: Vec<String> = c.localnet.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["192.168.0.0/16 direct", "[::/0]:80 direct"]);
        assert_eq!(c.localnet[1].origin.as_deref(), Some("pc.conf:10"));
        assert_eq!(c.dnat.len(), 2);
        assert_eq!(
            c.dnat[0].value.to_string(),
            "192.0.2.1:1234 198.51.100.2:443"
        );
        assert_eq!(c.dnat[1].line, 12);
        let hops: Vec<String> = c.chain.hops.iter().map(|h| h.masked()).collect();
        assert_eq!(
            hops,
            [
                "socks5h://lamer:***@192.0.2.10:1080",
                "http://justu:***@192.0.2.11:8080",
                "socks4a://192.0.2.12:1080",
                "http://[2001:db8::13]:3128",
                "socks5h://only-user@proxy.example:1080",
                "socks5h://us:***@192.0.2.14:1081",
                "socks4a://192.0.2.15:9050",
                "http://[2001:db8::16]:8080",
            ]
        );
        assert_eq!(c.proxy_lines, [15, 16, 17, 19, 20, 21, 22, 23]);
        // Literal user and password, last '@' ends them.
        assert_eq!(c.chain.hops[5].pass.as_deref(), Some(&b"p@ss"[..]));
        assert_eq!(c.chain.hops[0].pass.as_deref(), Some(&b"secret"[..]));
    }

    #[test]
    fn defaults_and_dns_off() {
        let c = ok("[ProxyList]\nsocks5 192.0.2.1 1080\nsocks4 192.0.2.2 1080\n");
        assert_eq!(c.chain.mode, ChainMode::Dynamic);
        assert_eq!(c.mode_line, None);
        assert_eq!(c.proxy_dns, None);
        assert_eq!(c.chain.hops[0].scheme, Scheme::Socks5);
        assert_eq!(c.chain.hops[1].scheme, Scheme::Socks4);
        assert_eq!(c.chain.chain_len, 1);
        // The last chain mode wins; chain_len is kept but unused by strict.
        let c = ok("random_chain\nstrict_chain\nchain_len=3\n[ProxyList]\nsocks5 192.0.2.1 1\n");
        assert_eq!(c.chain.mode, ChainMode::Strict);
        assert_eq!(c.mode_line, Some(2));
        assert_eq!(c.chain.chain_len, 1);
        assert!(looks_like_proxychains("x\n  [ProxyList]  \n"));
        assert!(!looks_like_proxychains(
            "proxy = \"socks5://h\"\n[ProxyListX]\n"
        ));
    }

    #[test]
    fn errors_name_line_and_problem() {
        for (text, want) in [
            ("bogus_option\n[ProxyList]\nsocks5 192.0.2.1 1\n", "pc.conf:1: unknown setting \"bogus_option\""),
            ("strict_chain\nproxy_dns_old\n", "pc.conf:2: proxy_dns_old is not supported"),
            ("proxy_dns_daemon 127.0.0.1:1053\n", "pc.conf:1: proxy_dns_daemon is not supported"),
            ("strict_chain yes\n", "pc.conf:1: strict_chain takes no value"),
            ("chain_len = 0\n", "pc.conf:1: chain_len"),
            ("chain_len = x\n", "pc.conf:1: chain_len"),
            ("remote_dns_subnet 256\n", "pc.conf:1: remote_dns_subnet"),
            ("tcp_read_time_out 0\n", "pc.conf:1: tcp_read_time_out"),
            ("tcp_connect_time_out -5\n", "pc.conf:1: tcp_connect_time_out"),
            ("\nlocalnet 10.0.0.0\n", "pc.conf:2: localnet"),
            ("dnat 192.0.2.1\n", "pc.conf:1: dnat"),
            ("strict_chain\n", "pc.conf: no [ProxyList] section"),
            ("[ProxyList]\n# none\n", "pc.conf:1: no proxy in [ProxyList]"),
            ("[ProxyList]\nraw 192.0.2.1 1080\n", "pc.conf:2: raw proxies are not supported"),
            ("[ProxyList]\nsocks6 192.0.2.1 1080\n", "pc.conf:2: unknown proxy type \"socks6\""),
            ("[ProxyList]\nsocks5 192.0.2.1 0\n", "pc.conf:2: bad proxy port"),
            ("[ProxyList]\nsocks5 192.0.2.1 1080 a b c\n", "pc.conf:2: too many fields"),
            ("[ProxyList]\nsocks5 192.0.2.1\n", "pc.conf:2: bad proxy line"),
            ("[ProxyList]\nsocks4 192.0.2.1 1080 id pw\n", "pc.conf:2: a SOCKS4 proxy"),
            ("[ProxyList]\nsocks5 bad_host! 1080\n", "pc.conf:2: invalid character"),
            ("[ProxyList]\nsocks5://192.0.2.1\n", "pc.conf:2: proxy URL: the port is required"),
            ("[ProxyList]\nsocks5://user@192.0.2.1:1\n", "pc.conf:2: proxy URL: USER:PASSWORD@"),
            ("[ProxyList]\nsocks5h://192.0.2.1:1\n", "pc.conf:2: unknown proxy type \"socks5h\""),
            ("[ProxyList]\nproxy_dns\n", "pc.conf:2: bad proxy line"),
            (
                "random_chain\nchain_len = 3\n[ProxyList]\nsocks5 192.0.2.1 1\nsocks5 192.0.2.2 1\n",
                "pc.conf:2: chain default: chain_len 3 is more than its 2 proxies",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(want), "{text:?}\n got: {e}\nwant: {want}");
        }
        let e = err("[ProxyList]\nsocks5 192.0.2.1 0 user hunter2\n");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("[ProxyList]\nsocks9://u:hunter2@192.0.2.1:1\n");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
