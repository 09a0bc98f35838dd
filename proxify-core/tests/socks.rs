//! Tests of the sans-IO SOCKS client and the UDP header codec, through the public API only.

use proxify_core::socks::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn v4(a: [u8; 4], port: u16) -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
}
fn v6(s: &str, port: u16) -> TargetAddr {
    TargetAddr::Ip(SocketAddr::new(s.parse().unwrap(), port))
}
fn name(n: &str, port: u16) -> TargetAddr {
    TargetAddr::Domain(n.to_string(), port)
}
fn creds(u: &[u8], p: &[u8]) -> Option<Credentials> {
    Some(Credentials {
        user: u.to_vec(),
        pass: p.to_vec(),
    })
}
fn req(version: Version, command: Command, target: TargetAddr) -> Request {
    Request {
        version,
        command,
        target,
        credentials: None,
        pipeline: false,
    }
}
fn s5(target: TargetAddr) -> Request {
    req(Version::Socks5, Command::Connect, target)
}
fn s5_auth(target: TargetAddr) -> Request {
    Request {
        credentials: creds(b"alice", b"s3cret"),
        ..s5(target)
    }
}

const GREET_NOAUTH: [u8; 3] = [5, 1, 0];
const GREET_AUTH: [u8; 3] = [5, 1, 2];
const AUTH_ALICE: &[u8] = b"\x01\x05alice\x06s3cret";
const OK_V4: [u8; 10] = [5, 0, 0, 1, 198, 51, 100, 7, 0x1f, 0x90];

/// What the driver did: bytes written, and the outcome.
struct Run {
    written: Vec<u8>,
    result: Result<Reply, SocksError>,
    /// wanted() before each read.
    wants: Vec<usize>,
}

/// Runs the driver loop of the module docs against a scripted proxy that sends `input`,
/// reading at most `chunk` bytes per read (0 = as much as wanted), then end of stream.
fn drive(c: &mut Client, input: &[u8], chunk: usize) -> Run {
    let mut written = Vec::new();
    let mut wants = Vec::new();
    let mut pos = 0;
    loop {
        while !c.pending_output().is_empty() {
            assert_eq!(c.wanted(), 0, "must not read while output is pending");
            written.extend_from_slice(c.pending_output());
            let n = c.pending_output().len();
            c.consume_output(n);
        }
        match c.state() {
            State::Done(r) => {
                return Run {
                    written,
                    result: Ok(r.clone()),
                    wants,
                }
            }
            State::Failed(e) => {
                return Run {
                    written,
                    result: Err(e.clone()),
                    wants,
                }
            }
            State::Running => {}
        }
        let want = c.wanted();
        assert!(want > 0 && want <= MAX_WANTED, "wanted {want}");
        wants.push(want);
        let mut n = want.min(input.len() - pos);
        if chunk > 0 {
            n = n.min(chunk);
        }
        if n == 0 {
            let e = c.eof();
            assert_eq!(c.state(), &State::Failed(e.clone()));
            return Run {
                written,
                result: Err(e),
                wants,
            };
        }
        match c.feed(&input[pos..pos + n]) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(c.state(), &State::Failed(e.clone()));
            }
        }
        pos += n;
    }
}

fn run(r: Request, input: &[u8]) -> Run {
    let mut c = Client::new(r).expect("valid request");
    drive(&mut c, input, 0)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn socks5_connect_ipv4_no_auth() {
    let r = run(s5(v4([192, 0, 2, 10], 80)), &cat(&[&[5, 0], &OK_V4]));
    assert_eq!(
        r.written,
        cat(&[&GREET_NOAUTH, &[5, 1, 0, 1, 192, 0, 2, 10, 0, 80]])
    );
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v4([198, 51, 100, 7], 8080)
        })
    );
    assert_eq!(r.wants, [2, 5, 5]);
}

#[test]
fn socks5_request_encodings() {
    let ok = cat(&[&[5, 0], &OK_V4]);
    let r = run(s5(v6("2001:db8::1", 443)), &ok);
    let mut want = vec![5, 1, 0, 4];
    want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    want.extend_from_slice(&[1, 187]);
    assert_eq!(r.written[3..], want[..]);
    let r = run(s5(name("target.example", 0x1234)), &ok);
    assert_eq!(
        r.written[3..],
        cat(&[&[5, 1, 0, 3, 14], b"target.example", &[0x12, 0x34]])[..]
    );
    // IPv4-mapped IPv6 goes out as IPv4.
    let r = run(s5(v6("::ffff:192.0.2.5", 22)), &ok);
    assert_eq!(r.written[3..], [5, 1, 0, 1, 192, 0, 2, 5, 0, 22]);
    for (cmd, byte) in [
        (Command::Connect, 1),
        (Command::Bind, 2),
        (Command::UdpAssociate, 3),
    ] {
        let r = run(req(Version::Socks5, cmd, v4([0, 0, 0, 0], 0)), &ok);
        assert_eq!(r.written[3..5], [5, byte]);
        assert!(r.result.is_ok());
    }
}

#[test]
fn socks5_reply_atyps_and_exact_wanted() {
    let v6_reply = cat(&[
        &[5, 0, 0, 4],
        &[0x20, 1, 0xd, 0xb8],
        &[0; 11],
        &[9],
        &[0, 53],
    ]);
    let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &v6_reply]));
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v6("2001:db8::9", 53)
        })
    );
    assert_eq!(r.wants, [2, 5, 17]);

    let dom_reply = cat(&[&[5, 0, 0, 3, 11], b"relay.local", &[0x04, 0x38]]);
    let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &dom_reply]));
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: name("relay.local", 1080)
        })
    );
    assert_eq!(r.wants, [2, 5, 13]);

    let long = "a".repeat(255);
    let dom_reply = cat(&[&[5, 0, 0, 3, 255], long.as_bytes(), &[0, 1]]);
    let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &dom_reply]));
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: name(&long, 1)
        })
    );
    assert_eq!(r.wants, [2, 5, 257]);

    let empty = [5, 0, 0, 3, 0, 0, 7];
    let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &empty]));
    assert_eq!(r.result, Ok(Reply { bound: name("", 7) }));
    assert_eq!(r.wants, [2, 5, 2]);

    for bad_atyp in [0u8, 2, 5, 0xff] {
        let r = run(s5(v4([192, 0, 2, 1], 1)), &[5, 0, 5, 0, 0, bad_atyp, 0]);
        assert_eq!(r.result, Err(SocksError::Malformed("bad address type")));
        assert_eq!(r.result.unwrap_err().errno(), libc::EPROTO);
    }
}

#[test]
fn socks5_every_reply_code() {
    let expect = [
        (1u8, libc::ECONNREFUSED),
        (2, libc::EACCES),
        (3, libc::ENETUNREACH),
        (4, libc::EHOSTUNREACH),
        (5, libc::ECONNREFUSED),
        (6, libc::ETIMEDOUT),
        (7, libc::EOPNOTSUPP),
        (8, libc::EAFNOSUPPORT),
        (9, libc::EPROTO),
        (0x80, libc::EPROTO),
        (0xff, libc::EPROTO),
    ];
    // Code 0 is success.
    assert!(run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &OK_V4]))
        .result
        .is_ok());
    for (code, errno) in expect {
        // The failure is reported as soon as REP is in, without the rest of the reply.
        let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
        c.consume_output(3);
        c.feed(&[5, 0]).unwrap();
        c.consume_output(c.pending_output().len());
        assert_eq!(c.wanted(), 5);
        let e = c.feed(&[5, code]).unwrap_err();
        assert_eq!(e, SocksError::Socks5Reply(code));
        assert_eq!(c.state(), &State::Failed(e.clone()));
        assert_eq!(c.wanted(), 0);
        assert_eq!(e.errno(), errno, "code {code}");
        let text = e.to_string();
        assert!(text.contains(&format!("SOCKS5 reply {code}")), "{text}");
        // Same through the whole driver with a full reply.
        let mut full = OK_V4;
        full[1] = code;
        let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &full]));
        assert_eq!(r.result, Err(SocksError::Socks5Reply(code)));
    }
    assert_eq!(
        SocksError::Socks5Reply(5).to_string(),
        "proxy refused the connection (SOCKS5 reply 5: connection refused)"
    );
}

#[test]
fn socks5_auth() {
    let r = run(
        s5_auth(name("t.example", 80)),
        &cat(&[&[5, 2], &[1, 0], &OK_V4]),
    );
    assert_eq!(
        r.written,
        cat(&[
            &GREET_AUTH,
            AUTH_ALICE,
            &[5, 1, 0, 3, 9],
            b"t.example",
            &[0, 80]
        ])
    );
    assert!(r.result.is_ok());
    assert_eq!(r.wants, [2, 2, 5, 5]);
    // Some servers answer the sub-negotiation with version 5.
    assert!(
        run(s5_auth(name("t", 80)), &cat(&[&[5, 2], &[5, 0], &OK_V4]))
            .result
            .is_ok()
    );
    for status in [1u8, 2, 0xff] {
        let r = run(
            s5_auth(name("t", 80)),
            &cat(&[&[5, 2], &[1, status], &OK_V4]),
        );
        assert_eq!(r.result, Err(SocksError::AuthRejected));
        // The request was never sent.
        assert_eq!(r.written, cat(&[&GREET_AUTH, AUTH_ALICE]));
    }
    assert_eq!(SocksError::AuthRejected.errno(), libc::EACCES);
    assert_eq!(
        SocksError::AuthRejected.to_string(),
        "proxy rejected the username/password"
    );
    for ver in [0u8, 2, 4, 0xff] {
        let r = run(s5_auth(name("t", 80)), &cat(&[&[5, 2], &[ver, 0], &OK_V4]));
        assert!(matches!(r.result, Err(SocksError::Malformed(_))), "{ver}");
    }
}

#[test]
fn socks5_auth_empty_password() {
    // `socks5h://user@proxy`: RFC 1929 with PLEN 0, as curl sends it.
    for pipeline in [false, true] {
        let r = run(
            Request {
                credentials: creds(b"user", b""),
                pipeline,
                ..s5(v4([192, 0, 2, 1], 80))
            },
            &cat(&[&[5, 2], &[1, 0], &OK_V4]),
        );
        assert_eq!(
            r.written,
            cat(&[
                &GREET_AUTH,
                b"\x01\x04user\x00",
                &[5, 1, 0, 1, 192, 0, 2, 1, 0, 80]
            ]),
            "pipeline={pipeline}"
        );
        assert!(r.result.is_ok(), "pipeline={pipeline}");
    }
    // The longest user with an empty password.
    let r = run(
        Request {
            credentials: creds(&[b'u'; 255], b""),
            ..s5(v4([192, 0, 2, 1], 80))
        },
        &cat(&[&[5, 2], &[1, 0], &OK_V4]),
    );
    assert!(r.result.is_ok());
    assert_eq!(&r.written[3..5], &[1, 255]);
    assert_eq!(r.written[5 + 255], 0, "PLEN 0");
    assert_eq!(r.written.len(), 3 + 3 + 255 + 10);
    // Rejected like any other password.
    let r = run(
        Request {
            credentials: creds(b"user", b""),
            ..s5(v4([192, 0, 2, 1], 80))
        },
        &cat(&[&[5, 2], &[1, 1]]),
    );
    assert_eq!(r.result, Err(SocksError::AuthRejected));
}

#[test]
fn socks5_method_selection() {
    let t = || v4([192, 0, 2, 1], 1);
    let cases: [(Request, u8, SocksError); 6] = [
        (s5(t()), 0xff, SocksError::NoAcceptableMethod),
        (s5_auth(t()), 0xff, SocksError::NoAcceptableMethod),
        (s5(t()), 2, SocksError::AuthRequired),
        (s5_auth(t()), 0, SocksError::NoAcceptableMethod),
        (s5(t()), 1, SocksError::NoAcceptableMethod),
        (s5_auth(t()), 0x80, SocksError::NoAcceptableMethod),
    ];
    for (r, method, err) in cases {
        let out = run(r, &[5, method, 1, 0]);
        assert_eq!(out.result, Err(err.clone()));
        assert_eq!(err.errno(), libc::EACCES);
    }
    for ver in [0u8, 4, 1, 0xff] {
        let mut c = Client::new(s5(t())).unwrap();
        c.consume_output(3);
        // Fails on the version byte alone.
        let e = c.feed(&[ver]).unwrap_err();
        assert!(matches!(e, SocksError::Malformed(_)));
        assert_eq!(e.errno(), libc::EPROTO);
    }
}

#[test]
fn wrong_version_bytes_in_replies() {
    for ver in [0u8, 4, 1, 6, 0xff] {
        let mut reply = OK_V4;
        reply[0] = ver;
        let r = run(s5(v4([192, 0, 2, 1], 1)), &cat(&[&[5, 0], &reply]));
        assert_eq!(r.result, Err(SocksError::Malformed("bad version byte")));
        assert_eq!(
            SocksError::Malformed("bad version byte").to_string(),
            "malformed reply from proxy: bad version byte"
        );
    }
    for ver in [1u8, 3, 5, 0x5a, 0xff] {
        let r = run(s4(v4([192, 0, 2, 1], 1)), &[ver, 90, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.result, Err(SocksError::Malformed("bad version byte")));
    }
    for ver in [0u8, 4] {
        let r = run(
            s4(v4([192, 0, 2, 1], 1)),
            &[ver, 90, 0x1f, 0x90, 198, 51, 100, 1],
        );
        assert_eq!(
            r.result,
            Ok(Reply {
                bound: v4([198, 51, 100, 1], 8080)
            })
        );
    }
}

fn s4(target: TargetAddr) -> Request {
    req(Version::Socks4, Command::Connect, target)
}

#[test]
fn socks4_every_reply_code() {
    for cd in 0..=255u8 {
        let r = run(s4(v4([192, 0, 2, 1], 1)), &[0, cd, 0, 0, 0, 0, 0, 0]);
        if cd == 90 {
            assert!(r.result.is_ok());
            continue;
        }
        let e = r.result.unwrap_err();
        assert_eq!(e, SocksError::Socks4Reply(cd));
        let errno = match cd {
            91 => libc::ECONNREFUSED,
            92 | 93 => libc::EACCES,
            _ => libc::EPROTO,
        };
        assert_eq!(e.errno(), errno, "cd {cd}");
        assert!(e.to_string().contains(&format!("SOCKS4 reply {cd}")));
        // Reported as soon as CD is in.
        let mut c = Client::new(s4(v4([192, 0, 2, 1], 1))).unwrap();
        c.consume_output(c.pending_output().len());
        assert_eq!(c.wanted(), 8);
        assert_eq!(c.feed(&[0, cd]), Err(SocksError::Socks4Reply(cd)));
    }
}

#[test]
fn socks4_and_4a_byte_layout() {
    let ok = [0u8, 90, 0, 0, 0, 0, 0, 0];
    let r = run(s4(v4([192, 0, 2, 33], 8080)), &ok);
    assert_eq!(r.written, [4, 1, 0x1f, 0x90, 192, 0, 2, 33, 0]);
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v4([0, 0, 0, 0], 0)
        })
    );
    assert_eq!(r.wants, [8]);

    let r = run(
        Request {
            credentials: creds(b"ident", b"ignored"),
            ..req(Version::Socks4, Command::Bind, v6("::ffff:203.0.113.9", 21))
        },
        &ok,
    );
    assert_eq!(
        r.written,
        cat(&[&[4, 2, 0, 21, 203, 0, 113, 9], b"ident", &[0]])
    );

    let r = run(
        Request {
            credentials: creds(b"ident", b""),
            ..req(
                Version::Socks4a,
                Command::Connect,
                name("only.proxy.knows", 443),
            )
        },
        &ok,
    );
    assert_eq!(
        r.written,
        cat(&[
            &[4, 1, 1, 187, 0, 0, 0, 1],
            b"ident",
            &[0],
            b"only.proxy.knows",
            &[0]
        ])
    );
    let r = run(req(Version::Socks4a, Command::Connect, name("x", 1)), &ok);
    assert_eq!(r.written, [4, 1, 0, 1, 0, 0, 0, 1, 0, b'x', 0]);
    // SOCKS4a with an address is a plain SOCKS4 request.
    let r = run(
        req(Version::Socks4a, Command::Connect, v4([192, 0, 2, 2], 7)),
        &ok,
    );
    assert_eq!(r.written, [4, 1, 0, 7, 192, 0, 2, 2, 0]);
}

#[test]
fn unsupported_requests() {
    let cases = [
        (s4(name("a.example", 1)), libc::EAFNOSUPPORT),
        (s4(v6("2001:db8::1", 1)), libc::EAFNOSUPPORT),
        (
            req(Version::Socks4a, Command::Connect, v6("2001:db8::1", 1)),
            libc::EAFNOSUPPORT,
        ),
        (
            req(Version::Socks4, Command::UdpAssociate, v4([0; 4], 0)),
            libc::EOPNOTSUPP,
        ),
        (
            req(Version::Socks4a, Command::UdpAssociate, name("a", 1)),
            libc::EOPNOTSUPP,
        ),
        (s5(name("", 1)), libc::EINVAL),
        (s5(name(&"a".repeat(256), 1)), libc::EINVAL),
        (
            req(Version::Socks4a, Command::Connect, name("", 1)),
            libc::EINVAL,
        ),
        (
            req(
                Version::Socks4a,
                Command::Connect,
                name(&"a".repeat(256), 1),
            ),
            libc::EINVAL,
        ),
        (
            req(Version::Socks4a, Command::Connect, name("a\0b", 1)),
            libc::EINVAL,
        ),
        (
            Request {
                credentials: creds(b"a\0b", b""),
                ..s4(v4([192, 0, 2, 1], 1))
            },
            libc::EINVAL,
        ),
        (
            Request {
                credentials: creds(b"", b"pw"),
                ..s5(v4([192, 0, 2, 1], 1))
            },
            libc::EINVAL,
        ),
        (
            Request {
                credentials: creds(&[b'u'; 256], b"p"),
                ..s5(v4([192, 0, 2, 1], 1))
            },
            libc::EINVAL,
        ),
        (
            Request {
                credentials: creds(b"u", &[b'p'; 256]),
                ..s5(v4([192, 0, 2, 1], 1))
            },
            libc::EINVAL,
        ),
    ];
    for (r, errno) in cases {
        let dbg = format!("{r:?}");
        let e = Client::new(r).unwrap_err();
        assert!(matches!(e, SocksError::Unsupported(_)), "{dbg}: {e:?}");
        assert_eq!(e.errno(), errno, "{dbg}: {e}");
    }
    // Limits that are just right.
    let ok = cat(&[&[5, 2], &[1, 0], &OK_V4]);
    let r = run(
        Request {
            credentials: creds(&[b'u'; 255], &[b'p'; 255]),
            ..s5(name(&"n".repeat(255), 1))
        },
        &ok,
    );
    assert!(r.result.is_ok());
    assert_eq!(r.written.len(), 3 + (3 + 255 + 255) + (5 + 255 + 2));
    assert_eq!(r.written[3 + 3 + 510 + 4], 255);
    let r = run(
        req(
            Version::Socks4a,
            Command::Connect,
            name(&"n".repeat(255), 1),
        ),
        &[0, 90, 0, 0, 0, 0, 0, 0],
    );
    assert!(r.result.is_ok());
}

#[test]
fn pipelined_output_is_exact() {
    let mut r = s5_auth(name("t.example", 80));
    r.pipeline = true;
    let mut c = Client::new(r).unwrap();
    let request = cat(&[&[5, 1, 0, 3, 9], b"t.example", &[0, 80]]);
    let all = cat(&[&GREET_AUTH, AUTH_ALICE, &request]);
    assert_eq!(c.pending_output(), &all[..]);
    // Partial writes: nothing is read until everything is written.
    c.consume_output(4);
    assert_eq!(c.pending_output(), &all[4..]);
    assert_eq!(c.wanted(), 0);
    assert!(matches!(c.feed(&[5]), Err(SocksError::Internal(_))));

    let mut r = s5_auth(name("t.example", 80));
    r.pipeline = true;
    let mut c = Client::new(r).unwrap();
    let out = drive(&mut c, &cat(&[&[5, 2], &[1, 0], &OK_V4]), 0);
    assert_eq!(out.written, all);
    assert_eq!(out.wants, [2, 2, 5, 5]);
    assert!(out.result.is_ok());

    // Without credentials.
    let mut r = s5(v4([192, 0, 2, 1], 1));
    r.pipeline = true;
    let c = Client::new(r).unwrap();
    assert_eq!(
        c.pending_output(),
        &[5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 1]
    );
    // A rejected password in pipelined mode.
    let mut r = s5_auth(v4([192, 0, 2, 1], 1));
    r.pipeline = true;
    let out = run(r, &[5, 2, 1, 1]);
    assert_eq!(out.result, Err(SocksError::AuthRejected));
    // pipeline is ignored for SOCKS4 (one message anyway).
    let mut r = s4(v4([192, 0, 2, 1], 1));
    r.pipeline = true;
    assert_eq!(run(r, &[0, 90, 0, 0, 0, 0, 0, 0]).written.len(), 9);
}

#[test]
fn bind_second_reply() {
    let first = [5, 0, 0, 1, 198, 51, 100, 1, 0x9c, 0x40];
    let second = [5, 0, 0, 1, 203, 0, 113, 5, 0xc3, 0x50];
    let mut c = Client::new(req(Version::Socks5, Command::Bind, v4([203, 0, 113, 5], 0))).unwrap();
    let r = drive(&mut c, &cat(&[&[5, 0], &first]), 0);
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v4([198, 51, 100, 1], 40000)
        })
    );
    assert_eq!(c.wanted(), 0);
    c.expect_second_reply().unwrap();
    assert_eq!(c.state(), &State::Running);
    assert_eq!(c.wanted(), 5);
    assert!(c.pending_output().is_empty());
    let r = drive(&mut c, &second, 1);
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v4([203, 0, 113, 5], 50000)
        })
    );
    assert!(r.written.is_empty());
    assert!(matches!(
        c.expect_second_reply(),
        Err(SocksError::Internal(_))
    ));
    assert!(matches!(c.state(), State::Done(_)));

    // Second reply failing.
    let mut c = Client::new(req(Version::Socks5, Command::Bind, v4([203, 0, 113, 5], 0))).unwrap();
    drive(&mut c, &cat(&[&[5, 0], &first]), 0);
    c.expect_second_reply().unwrap();
    assert_eq!(
        drive(&mut c, &[5, 4], 0).result,
        Err(SocksError::Socks5Reply(4))
    );
    // Second reply cut short.
    let mut c = Client::new(req(Version::Socks5, Command::Bind, v4([203, 0, 113, 5], 0))).unwrap();
    drive(&mut c, &cat(&[&[5, 0], &first]), 0);
    c.expect_second_reply().unwrap();
    assert_eq!(
        drive(&mut c, &second[..6], 0).result,
        Err(SocksError::Truncated)
    );

    // SOCKS4 BIND.
    let mut c = Client::new(req(Version::Socks4, Command::Bind, v4([203, 0, 113, 5], 0))).unwrap();
    let r = drive(&mut c, &[0, 90, 0x9c, 0x40, 198, 51, 100, 1], 0);
    assert_eq!(r.written, [4, 2, 0, 0, 203, 0, 113, 5, 0]);
    assert_eq!(
        r.result,
        Ok(Reply {
            bound: v4([198, 51, 100, 1], 40000)
        })
    );
    c.expect_second_reply().unwrap();
    assert_eq!(c.wanted(), 8);
    let r = drive(&mut c, &[0, 91, 0, 0, 0, 0, 0, 0], 0);
    assert_eq!(r.result, Err(SocksError::Socks4Reply(91)));

    // Misuse: not BIND, not done yet.
    let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
    assert!(matches!(
        c.expect_second_reply(),
        Err(SocksError::Internal(_))
    ));
    assert_eq!(c.state(), &State::Running);
    drive(&mut c, &cat(&[&[5, 0], &OK_V4]), 0);
    assert!(matches!(
        c.expect_second_reply(),
        Err(SocksError::Internal(_))
    ));
    assert!(matches!(c.state(), State::Done(_)));
}

/// Complete proxy transcripts for a range of handshakes.
fn transcripts() -> Vec<(Request, Vec<u8>)> {
    let t = || v4([192, 0, 2, 1], 1);
    let mut piped = s5_auth(t());
    piped.pipeline = true;
    vec![
        (s5(t()), cat(&[&[5, 0], &OK_V4])),
        (
            s5(t()),
            cat(&[
                &[5, 0, 5, 0, 0, 4],
                &[0x20, 1, 0xd, 0xb8],
                &[0; 12],
                &[0, 80],
            ]),
        ),
        (s5(t()), cat(&[&[5, 0, 5, 0, 0, 3, 4], b"name", &[0, 80]])),
        (s5_auth(t()), cat(&[&[5, 2, 1, 0], &OK_V4])),
        (piped, cat(&[&[5, 2, 1, 0], &OK_V4])),
        (s4(t()), vec![0, 90, 0, 80, 192, 0, 2, 1]),
        (
            req(Version::Socks4a, Command::Connect, name("n", 1)),
            vec![4, 90, 0, 80, 192, 0, 2, 1],
        ),
    ]
}

#[test]
fn truncated_at_every_position() {
    for (r, input) in transcripts() {
        for cut in 0..input.len() {
            for chunk in [0, 1, 3] {
                let out = run(r.clone(), &input[..cut]);
                assert_eq!(
                    out.result,
                    Err(SocksError::Truncated),
                    "cut {cut} of {input:?}"
                );
                let mut c = Client::new(r.clone()).unwrap();
                let out = drive(&mut c, &input[..cut], chunk);
                assert_eq!(out.result, Err(SocksError::Truncated));
                assert_eq!(c.state(), &State::Failed(SocksError::Truncated));
                // eof again keeps reporting the same error.
                assert_eq!(c.eof(), SocksError::Truncated);
                assert!(matches!(c.feed(&[0]), Err(SocksError::Internal(_))));
                assert_eq!(c.state(), &State::Failed(SocksError::Truncated));
            }
        }
        assert!(run(r.clone(), &input).result.is_ok(), "{input:?}");
        assert_eq!(SocksError::Truncated.errno(), libc::ECONNRESET);
    }
}

#[test]
fn one_byte_feeds_give_exact_wants() {
    for (r, input) in transcripts() {
        let whole = run(r.clone(), &input);
        let mut c = Client::new(r).unwrap();
        let bytes = drive(&mut c, &input, 1);
        assert_eq!(bytes.result, whole.result);
        assert_eq!(bytes.written, whole.written);
        assert_eq!(bytes.wants.len(), input.len());
    }
    // A SOCKS5 domain reply: 5 4 3 2 1, then the rest of the name and port one by one.
    let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
    let input = cat(&[&[5, 0, 5, 0, 0, 3, 4], b"name", &[0, 80]]);
    let out = drive(&mut c, &input, 1);
    assert_eq!(out.wants, [2, 1, 5, 4, 3, 2, 1, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        out.result,
        Ok(Reply {
            bound: name("name", 80)
        })
    );
}

#[test]
fn oversized_and_misplaced_input() {
    // More than wanted, at every point of every transcript.
    for (r, input) in transcripts() {
        let mut c = Client::new(r.clone()).unwrap();
        let mut pos = 0;
        loop {
            let n = c.pending_output().len();
            c.consume_output(n);
            if c.state() != &State::Running {
                break;
            }
            let want = c.wanted();
            let mut probe = Client::new(r.clone()).unwrap();
            // Bring the probe to the same point, then overfeed.
            let mut p = 0;
            while p < pos {
                let n = probe.pending_output().len();
                probe.consume_output(n);
                let w = probe.wanted();
                probe.feed(&input[p..p + w]).unwrap();
                p += w;
            }
            let n = probe.pending_output().len();
            probe.consume_output(n);
            let e = probe.feed(&vec![0u8; want + 1]).unwrap_err();
            assert_eq!(e, SocksError::Internal("fed more bytes than wanted"));
            assert_eq!(probe.state(), &State::Failed(e.clone()));
            assert_eq!(e.errno(), libc::EIO);
            c.feed(&input[pos..pos + want]).unwrap();
            pos += want;
        }
        assert!(matches!(c.state(), State::Done(_)));
        // After Done: feeding and eof are driver errors and keep Done.
        let done = c.state().clone();
        assert!(matches!(c.feed(&[1]), Err(SocksError::Internal(_))));
        assert!(matches!(c.eof(), SocksError::Internal(_)));
        assert_eq!(c.state(), &done);
        assert_eq!(c.wanted(), 0);
    }
    // Reading while output is pending.
    let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
    assert_eq!(c.wanted(), 0);
    assert!(c.feed(&[]).is_ok());
    assert!(matches!(c.feed(&[5]), Err(SocksError::Internal(_))));
    assert!(matches!(c.state(), State::Failed(SocksError::Internal(_))));
    // Consuming more than pending.
    let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
    c.consume_output(4);
    assert!(matches!(c.state(), State::Failed(SocksError::Internal(_))));
    assert!(c.pending_output().is_empty());
    // eof while output is still pending.
    let mut c = Client::new(s5(v4([192, 0, 2, 1], 1))).unwrap();
    assert_eq!(c.eof(), SocksError::Truncated);
}

#[test]
fn messages_are_short_and_never_show_credentials() {
    let errors = [
        SocksError::Socks5Reply(0),
        SocksError::Socks5Reply(1),
        SocksError::Socks5Reply(200),
        SocksError::Socks4Reply(91),
        SocksError::Socks4Reply(1),
        SocksError::NoAcceptableMethod,
        SocksError::AuthRejected,
        SocksError::AuthRequired,
        SocksError::Malformed("bad version byte"),
        SocksError::Truncated,
        SocksError::Unsupported(proxify_core::socks::Unsupported::NameEmpty),
        SocksError::Internal("y"),
    ];
    for e in errors {
        let t = e.to_string();
        assert!(!t.is_empty() && !t.contains('\n') && t.len() < 120, "{t}");
        assert!(e.errno() > 0);
    }
    let mut r = s5_auth(name("t.example", 80));
    r.credentials = creds(b"alice", b"hunter2");
    assert!(!format!("{r:?}").contains("hunter2"));
    let mut c = Client::new(r).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let out = drive(&mut c, &[5, 2, 1, 1], 0);
    let e = out.result.unwrap_err();
    assert!(!e.to_string().contains("hunter2") && !e.to_string().contains("alice"));
}

#[test]
fn udp_header_round_trip() {
    let long = "h".repeat(255);
    for addr in [
        v4([192, 0, 2, 1], 53),
        v6("2001:db8::53", 5353),
        name("dns.example", 53),
        name(&long, 65535),
    ] {
        let mut dg = vec![0xAA];
        encode_udp_header(&addr, &mut dg).unwrap();
        dg.extend_from_slice(b"payload");
        let (h, off) = parse_udp_header(&dg[1..]).unwrap();
        assert_eq!(
            h,
            UdpHeader {
                frag: 0,
                addr: addr.clone()
            }
        );
        assert_eq!(&dg[1 + off..], b"payload");
    }
    let mut out = Vec::new();
    encode_udp_header(&v4([198, 51, 100, 2], 0x1234), &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 1, 198, 51, 100, 2, 0x12, 0x34]);
    out.clear();
    encode_udp_header(&v6("::ffff:198.51.100.2", 1), &mut out).unwrap();
    assert_eq!(out, [0, 0, 0, 1, 198, 51, 100, 2, 0, 1]);
    for bad in [name("", 1), name(&"h".repeat(256), 1)] {
        let mut out = vec![7];
        let e = encode_udp_header(&bad, &mut out).unwrap_err();
        assert!(matches!(e, SocksError::Unsupported(_)));
        assert_eq!(out, [7], "unchanged on error");
    }
    // FRAG is reported; an empty payload is fine.
    let (h, off) = parse_udp_header(&[0, 0, 3, 1, 1, 2, 3, 4, 0, 9]).unwrap();
    assert_eq!((h.frag, off), (3, 10));
}

#[test]
fn udp_header_malformed() {
    let cases: &[&[u8]] = &[
        &[],
        &[0],
        &[0, 0],
        &[0, 0, 0],
        &[0, 1, 0, 1, 1, 2, 3, 4, 0, 1],
        &[1, 0, 0, 1, 1, 2, 3, 4, 0, 1],
        &[0, 0, 0, 2, 1, 2, 3, 4, 0, 1],
        &[0, 0, 0, 0, 1, 2, 3, 4, 0, 1],
        &[0, 0, 0, 1, 1, 2, 3, 4, 0],
        &[
            0, 0, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0,
        ],
        &[0, 0, 0, 3],
        &[0, 0, 0, 3, 5, b'a', b'b'],
        &[0, 0, 0, 3, 2, b'a', b'b', 0],
        &[0, 0, 0, 3, 255, 0, 0],
    ];
    for dg in cases {
        let e = parse_udp_header(dg).unwrap_err();
        assert!(matches!(e, SocksError::Malformed(_)), "{dg:?}: {e:?}");
    }
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}

/// What a well-behaved proxy would answer to `r`, with random bound addresses.
fn valid_transcript(r: &Request, rng: &mut XorShift) -> Vec<u8> {
    let mut t = Vec::new();
    let replies = if r.command == Command::Bind { 2 } else { 1 };
    if r.version == Version::Socks5 {
        if r.credentials.is_some() {
            t.extend_from_slice(&[5, 2, 1, 0]);
        } else {
            t.extend_from_slice(&[5, 0]);
        }
    }
    for _ in 0..replies {
        if r.version == Version::Socks5 {
            t.extend_from_slice(&[5, 0, 0]);
            match rng.next() % 3 {
                0 => t.extend_from_slice(&[1, 1, 2, 3, 4]),
                1 => {
                    t.push(4);
                    t.extend((0..16).map(|_| rng.byte()));
                }
                _ => {
                    let n = rng.byte();
                    t.extend_from_slice(&[3, n]);
                    t.extend((0..n).map(|_| b'a'));
                }
            }
            t.extend_from_slice(&[rng.byte(), rng.byte()]);
        } else {
            t.extend_from_slice(&[0, 90]);
            t.extend((0..6).map(|_| rng.byte()));
        }
    }
    t
}

#[test]
fn random_input_never_panics() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let targets = [
        v4([192, 0, 2, 1], 1),
        v6("2001:db8::1", 2),
        v6("::ffff:192.0.2.9", 3),
        name("n.example", 4),
    ];
    let mut requests = Vec::new();
    for version in [Version::Socks4, Version::Socks4a, Version::Socks5] {
        for command in [Command::Connect, Command::Bind, Command::UdpAssociate] {
            for target in &targets {
                for credentials in [None, creds(b"u", b"p"), creds(b"u", b"")] {
                    for pipeline in [false, true] {
                        requests.push(Request {
                            version,
                            command,
                            target: target.clone(),
                            credentials: credentials.clone(),
                            pipeline,
                        });
                    }
                }
            }
        }
    }
    let mut finished = 0;
    for round in 0..40 {
        for r in &requests {
            let Ok(mut c) = Client::new(r.clone()) else {
                continue;
            };
            // Even rounds: a valid transcript with some bytes changed and a random cut;
            // odd rounds: plain random bytes of a random length.
            let input: Vec<u8> = if round % 2 == 0 {
                let mut t = valid_transcript(r, &mut rng);
                for b in t.iter_mut() {
                    if rng.next().is_multiple_of(16) {
                        *b = rng.byte();
                    }
                }
                if rng.next().is_multiple_of(3) {
                    let keep = (rng.next() as usize) % (t.len() + 1);
                    t.truncate(keep);
                }
                t
            } else {
                let len = (rng.next() % 300) as usize;
                (0..len).map(|_| rng.byte()).collect()
            };
            let mut pos = 0;
            for _ in 0..1000 {
                assert!(c.wanted() <= MAX_WANTED);
                if !c.pending_output().is_empty() {
                    let n = c.pending_output().len();
                    let part = (rng.next() as usize % n) + 1;
                    c.consume_output(part);
                    continue;
                }
                match c.state() {
                    State::Done(_) => {
                        finished += 1;
                        if r.command == Command::Bind && round % 2 == 0 {
                            let _ = c.expect_second_reply();
                            if c.state() == &State::Running {
                                continue;
                            }
                        }
                        break;
                    }
                    State::Failed(_) => break,
                    State::Running => {}
                }
                let want = c.wanted();
                assert!(want > 0 && want <= MAX_WANTED);
                if pos >= input.len() {
                    assert_eq!(c.eof(), SocksError::Truncated);
                    break;
                }
                // Occasionally overfeed: must be an error, never a panic.
                let n = if rng.next().is_multiple_of(50) {
                    want + 1
                } else {
                    (rng.next() as usize % want) + 1
                };
                let n = n.min(input.len() - pos);
                let res = c.feed(&input[pos..pos + n]);
                if n > want {
                    assert!(res.is_err());
                }
                if let Err(e) = res {
                    assert_eq!(c.state(), &State::Failed(e.clone()));
                    assert!(e.errno() > 0);
                    let _ = e.to_string();
                }
                pos += n;
            }
            assert!(c.wanted() <= MAX_WANTED);
        }
        // The UDP parser on random datagrams of every small length.
        for len in 0..64 {
            let dg: Vec<u8> = (0..len)
                .map(|i| if i < 2 { 0 } else { rng.byte() % 6 })
                .collect();
            if let Ok((_, off)) = parse_udp_header(&dg) {
                assert!(off <= dg.len());
            }
        }
    }
    assert!(
        finished > 1000,
        "random input completed only {finished} handshakes"
    );
}

#[test]
fn target_display() {
    let t = TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap());
    assert_eq!(t.to_string(), "[2001:db8::1]:443");
    let t = TargetAddr::Ip("203.0.113.1:80".parse().unwrap());
    assert_eq!(t.to_string(), "203.0.113.1:80");
    assert_eq!(
        TargetAddr::Domain("example.com".into(), 80).to_string(),
        "example.com:80"
    );
}
