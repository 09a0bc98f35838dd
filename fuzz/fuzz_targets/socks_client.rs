//! The sans-IO SOCKS client against a proxy that answers anything.
//!
//! The first bytes of the input make the [`Request`] (version, command, target, credentials,
//! pipelining) and the driver's habits (read sizes, partial writes, deliberate misuse); the
//! rest is what the proxy sends, fed in reads of at most `wanted()` bytes. Checked:
//! - `Client::new` fails exactly for the requests SOCKS cannot express, with `Unsupported`;
//! - the bytes written are exactly the protocol's request messages, in order, and a
//!   non-pipelined client sends the password only after the proxy chose username/password
//!   and the request only after the authentication succeeded;
//! - `wanted()` is never above `MAX_WANTED`, is 0 while output is pending or after the end,
//!   and is above 0 while running (the driver can always make progress);
//! - a reply is accepted only after exactly its own bytes were read (nothing of the data
//!   behind it), and the bound address is the one in those bytes;
//! - an error moves the client to `Failed` with that error, and after `Failed` (or `Done`)
//!   nothing makes progress: more input, end of stream, a second BIND reply, writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxify_core::socks::{
    Client, Command, Credentials, Request, SocksError, State, TargetAddr, Version, MAX_WANTED,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Reads the request description; missing bytes read as 0.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }
    fn port(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
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
    /// 1..=n (n > 0).
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize + 1
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// How the driver reads and writes.
#[derive(Clone, Copy)]
enum Reads {
    /// Everything wanted at once.
    Whole,
    /// One byte at a time.
    Single,
    /// Random sizes from 1 to wanted().
    Random,
}

struct Plan {
    req: Request,
    reads: Reads,
    /// Write pending output in random pieces instead of all at once.
    split_writes: bool,
    /// Now and then overfeed, overconsume or feed nothing.
    misuse: bool,
    /// After the first BIND reply, wait for the second one.
    second_reply: bool,
    rng: XorShift,
}

fn plan(inp: &mut Input) -> Plan {
    let b0 = inp.byte();
    let b1 = inp.byte();
    let b2 = inp.byte();
    let version = match b0 & 3 {
        0 => Version::Socks4,
        1 => Version::Socks4a,
        _ => Version::Socks5,
    };
    let command = match (b0 >> 2) & 3 {
        1 => Command::Bind,
        2 => Command::UdpAssociate,
        _ => Command::Connect,
    };
    let pipeline = b0 & 0x10 != 0;
    let with_credentials = b0 & 0x20 != 0;
    let second_reply = b0 & 0x40 != 0;
    let misuse = b0 & 0x80 != 0;

    let target = match b1 & 3 {
        0 => TargetAddr::Ip(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(inp.array::<4>())),
            inp.port(),
        )),
        1 => TargetAddr::Ip(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(inp.array::<16>())),
            inp.port(),
        )),
        2 => {
            // IPv4-mapped IPv6, as Java sends it.
            let v4 = Ipv4Addr::from(inp.array::<4>());
            let port = inp.port();
            let v6 = v4.to_ipv6_mapped();
            TargetAddr::Ip(SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)))
        }
        _ => {
            // 0..=256 bytes, so the 255-byte limit is reached from both sides.
            let len = usize::from(inp.byte()) + usize::from(b1 >> 7);
            let name = String::from_utf8_lossy(inp.bytes(len)).into_owned();
            TargetAddr::Domain(name, inp.port())
        }
    };
    let credentials = with_credentials.then(|| {
        let ulen = usize::from(inp.byte()) + usize::from((b1 >> 2) & 1);
        let plen = usize::from(inp.byte()) + usize::from((b1 >> 3) & 1);
        Credentials {
            user: inp.bytes(ulen).to_vec(),
            pass: inp.bytes(plen).to_vec(),
        }
    });
    let reads = match b2 & 3 {
        0 => Reads::Whole,
        1 => Reads::Single,
        _ => Reads::Random,
    };
    Plan {
        req: Request {
            version,
            command,
            target,
            credentials,
            pipeline,
        },
        reads,
        split_writes: b2 & 4 != 0,
        misuse,
        second_reply,
        rng: XorShift(0x9E37_79B9_7F4A_7C15 ^ u64::from(b2 >> 3) << 32 ^ u64::from(b1)),
    }
}

fn unmapped(t: &TargetAddr) -> TargetAddr {
    match t {
        TargetAddr::Ip(SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
            Some(v4) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(v4), a.port())),
            None => t.clone(),
        },
        _ => t.clone(),
    }
}

/// What the client must write, message by message (SOCKS5: greeting, RFC 1929 request if
/// credentials, command request; SOCKS4/4a: the request), or None when SOCKS cannot express
/// the request. Written from the protocol documents, independently of the client.
fn expected_messages(r: &Request) -> Option<Vec<Vec<u8>>> {
    let target = unmapped(&r.target);
    match r.version {
        Version::Socks5 => {
            let cmd = match r.command {
                Command::Connect => 1,
                Command::Bind => 2,
                Command::UdpAssociate => 3,
            };
            let mut req = vec![5, cmd, 0];
            match &target {
                TargetAddr::Ip(SocketAddr::V4(a)) => {
                    req.push(1);
                    req.extend(a.ip().octets());
                    req.extend(a.port().to_be_bytes());
                }
                TargetAddr::Ip(SocketAddr::V6(a)) => {
                    req.push(4);
                    req.extend(a.ip().octets());
                    req.extend(a.port().to_be_bytes());
                }
                TargetAddr::Domain(n, port) => {
                    if n.is_empty() || n.len() > 255 {
                        return None;
                    }
                    req.extend([3, n.len() as u8]);
                    req.extend(n.as_bytes());
                    req.extend(port.to_be_bytes());
                }
            }
            match &r.credentials {
                None => Some(vec![vec![5, 1, 0], req]),
                Some(c) => {
                    // RFC 1929: ULEN 1..=255; PLEN 0..=255 (an empty password, as curl).
                    if c.user.is_empty() || c.user.len() > 255 || c.pass.len() > 255 {
                        return None;
                    }
                    let mut auth = vec![1, c.user.len() as u8];
                    auth.extend(&c.user);
                    auth.push(c.pass.len() as u8);
                    auth.extend(&c.pass);
                    Some(vec![vec![5, 1, 2], auth, req])
                }
            }
        }
        Version::Socks4 | Version::Socks4a => {
            let cd = match r.command {
                Command::Connect => 1,
                Command::Bind => 2,
                Command::UdpAssociate => return None,
            };
            let user = r.credentials.as_ref().map_or(&[][..], |c| &c.user[..]);
            if user.contains(&0) {
                return None;
            }
            let mut m = vec![4, cd];
            match &target {
                TargetAddr::Ip(SocketAddr::V4(a)) => {
                    m.extend(a.port().to_be_bytes());
                    m.extend(a.ip().octets());
                    m.extend(user);
                    m.push(0);
                }
                TargetAddr::Ip(SocketAddr::V6(_)) => return None,
                TargetAddr::Domain(n, port) => {
                    if r.version == Version::Socks4
                        || n.is_empty()
                        || n.len() > 255
                        || n.as_bytes().contains(&0)
                    {
                        return None;
                    }
                    m.extend(port.to_be_bytes());
                    m.extend([0, 0, 0, 1]);
                    m.extend(user);
                    m.push(0);
                    m.extend(n.as_bytes());
                    m.push(0);
                }
            }
            Some(vec![m])
        }
    }
}

/// Length of the reply at the end of `fed` that produced `bound`, or None if `fed` does not
/// end with a well-formed successful reply carrying `bound`.
fn reply_len_at_end(version: Version, fed: &[u8], bound: &TargetAddr) -> Option<usize> {
    let tail = |n: usize| fed.len().checked_sub(n).map(|i| &fed[i..]);
    match version {
        Version::Socks4 | Version::Socks4a => {
            let t = tail(8)?;
            let ok = matches!(t[0], 0 | 4) && t[1] == 90;
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(t[4], t[5], t[6], t[7])),
                u16::from_be_bytes([t[2], t[3]]),
            );
            (ok && *bound == TargetAddr::Ip(addr)).then_some(8)
        }
        Version::Socks5 => {
            let head_ok = |t: &[u8], atyp: u8| t[0] == 5 && t[1] == 0 && t[3] == atyp;
            match bound {
                TargetAddr::Ip(SocketAddr::V4(a)) => {
                    let t = tail(10)?;
                    (head_ok(t, 1)
                        && t[4..8] == a.ip().octets()
                        && t[8..] == a.port().to_be_bytes())
                    .then_some(10)
                }
                TargetAddr::Ip(SocketAddr::V6(a)) => {
                    let t = tail(22)?;
                    (head_ok(t, 4)
                        && t[4..20] == a.ip().octets()
                        && t[20..] == a.port().to_be_bytes())
                    .then_some(22)
                }
                TargetAddr::Domain(name, port) => (0..=255usize).find_map(|len| {
                    let t = tail(4 + 1 + len + 2)?;
                    (head_ok(t, 3)
                        && usize::from(t[4]) == len
                        && String::from_utf8_lossy(&t[5..5 + len]) == *name
                        && t[5 + len..] == port.to_be_bytes())
                    .then_some(t.len())
                }),
            }
        }
    }
}

fn check_error(e: &SocksError) {
    assert!(e.errno() > 0);
    let t = e.to_string();
    assert!(!t.is_empty() && !t.contains('\n'), "{t:?}");
}

/// The client after the end: nothing makes progress and the state stays as it is.
fn check_finished(c: &mut Client) {
    let state = c.state().clone();
    assert_ne!(state, State::Running);
    assert_eq!(c.wanted(), 0);
    assert!(
        c.pending_output().is_empty(),
        "output pending after the end"
    );
    for data in [&[][..], &[0][..], &[5, 0, 0, 1, 0, 0, 0, 0, 0, 0][..]] {
        // Documented: Internal after Done; after Failed an error, the first one kept.
        let e = c.feed(data).expect_err("feed after the end");
        match &state {
            State::Failed(first) => {
                assert!(&e == first || matches!(e, SocksError::Internal(_)), "{e:?}")
            }
            _ => assert!(matches!(e, SocksError::Internal(_)), "{e:?}"),
        }
        assert_eq!(c.state(), &state);
    }
    let e = c.eof();
    match &state {
        State::Failed(first) => assert_eq!(&e, first),
        _ => assert!(matches!(e, SocksError::Internal(_)), "{e:?}"),
    }
    assert_eq!(c.state(), &state);
    c.consume_output(0);
    assert_eq!(c.state(), &state);
    assert_eq!(c.wanted(), 0);
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input { data };
    let mut p = plan(&mut inp);
    let proxy = inp.data;
    let req = p.req.clone();

    let expected = expected_messages(&req);
    let mut c = match Client::new(req.clone()) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                expected.is_none(),
                "valid request refused: {e:?} for {req:?}"
            );
            assert!(matches!(e, SocksError::Unsupported(_)), "{e:?}");
            assert!(
                [libc::EINVAL, libc::EAFNOSUPPORT, libc::EOPNOTSUPP].contains(&e.errno()),
                "{e:?}"
            );
            check_error(&e);
            return;
        }
    };
    let messages = expected.unwrap_or_else(|| panic!("invalid request accepted: {req:?}"));
    let all_out: Vec<u8> = messages.concat();
    let socks5 = req.version == Version::Socks5;
    let auth = req.credentials.is_some() && socks5;
    // Bytes the proxy sends before the command reply: method selection, auth status.
    let pre_reply = match (socks5, auth) {
        (false, _) => 0,
        (true, false) => 2,
        (true, true) => 4,
    };

    let mut written: Vec<u8> = Vec::new();
    let mut pos = 0usize; // proxy bytes fed so far
    let mut reply_start = pre_reply; // where the command reply starts in `proxy`
    let mut replies = 0;

    // Every step writes or reads at least one byte, or ends the loop: 2 + 2 + 2 * 262 bytes
    // of input at most, and the output, bound the steps.
    for _ in 0..10_000 {
        assert!(
            c.wanted() <= MAX_WANTED,
            "wanted {} > MAX_WANTED",
            c.wanted()
        );
        // What may have been written, given what the proxy said so far.
        let allowed = if req.pipeline && socks5 {
            all_out.len()
        } else if socks5 && pos < 2 {
            messages[0].len()
        } else if auth && pos < 4 {
            messages[0].len() + messages[1].len()
        } else {
            all_out.len()
        };

        if !c.pending_output().is_empty() {
            assert_eq!(c.wanted(), 0, "wants input while output is pending");
            let pending = c.pending_output().len();
            let mut n = if p.split_writes {
                p.rng.upto(pending)
            } else {
                pending
            };
            if p.misuse && p.rng.one_in(64) {
                n = pending + 1;
            }
            written.extend_from_slice(&c.pending_output()[..n.min(pending)]);
            assert!(
                written.len() <= allowed,
                "wrote {} bytes before the proxy's answer allowed {allowed}",
                written.len()
            );
            assert_eq!(written[..], all_out[..written.len()], "wrong bytes written");
            c.consume_output(n);
            if n > pending {
                assert!(
                    matches!(c.state(), State::Failed(SocksError::Internal(_))),
                    "overconsumption: {:?}",
                    c.state()
                );
                assert!(c.pending_output().is_empty());
                check_finished(&mut c);
                return;
            }
            continue;
        }

        match c.state().clone() {
            State::Running => {}
            State::Failed(e) => {
                check_error(&e);
                check_finished(&mut c);
                return;
            }
            State::Done(reply) => {
                replies += 1;
                assert_eq!(
                    written, all_out,
                    "done before the whole request was written"
                );
                let n = reply_len_at_end(req.version, &proxy[..pos], &reply.bound)
                    .unwrap_or_else(|| panic!("{reply:?} not at the end of {:?}", &proxy[..pos]));
                assert_eq!(pos - reply_start, n, "reply read with bytes around it");
                if socks5 {
                    assert_eq!(&proxy[..2], &[5, if auth { 2 } else { 0 }]);
                    if auth {
                        assert!(matches!(proxy[2], 1 | 5) && proxy[3] == 0);
                    }
                }
                let bind = req.command == Command::Bind;
                if bind && replies == 1 && p.second_reply {
                    c.expect_second_reply().expect("second BIND reply");
                    assert_eq!(c.state(), &State::Running);
                    reply_start = pos;
                    continue;
                }
                if !(bind && replies == 1) {
                    // Nothing restarts a finished handshake.
                    let before = c.state().clone();
                    assert!(c.expect_second_reply().is_err());
                    assert_eq!(c.state(), &before);
                }
                check_finished(&mut c);
                return;
            }
        }

        let want = c.wanted();
        assert!(want > 0, "running, nothing to write and nothing wanted");
        if pos == proxy.len() {
            let e = c.eof();
            assert_eq!(e, SocksError::Truncated);
            assert_eq!(c.state(), &State::Failed(SocksError::Truncated));
            check_finished(&mut c);
            return;
        }
        let left = proxy.len() - pos;
        if p.misuse && p.rng.one_in(32) {
            // Nothing: no progress, no change.
            c.feed(&[]).expect("empty feed");
            assert_eq!((c.state(), c.wanted()), (&State::Running, want));
            continue;
        }
        let overfeed = p.misuse && left > want && p.rng.one_in(64);
        let n = if overfeed {
            want + 1
        } else {
            match p.reads {
                Reads::Whole => want,
                Reads::Single => 1,
                Reads::Random => p.rng.upto(want),
            }
            .min(left)
        };
        let res = c.feed(&proxy[pos..pos + n]);
        if overfeed {
            assert!(
                matches!(res, Err(SocksError::Internal(_))),
                "overfeed: {res:?}"
            );
        }
        match res {
            Ok(()) => assert!(matches!(c.state(), State::Running | State::Done(_))),
            Err(e) => assert_eq!(c.state(), &State::Failed(e)),
        }
        pos += n;
    }
    panic!("the handshake did not end in 10000 steps");
});
