//! `proxify_core::dns` on arbitrary messages: `respond` (UDP and TCP limits, with and without
//! a forward server, into output buffers of any size) never panics, and whatever it sends is a
//! well-formed response that fits, echoes the id, and (for a parsed query) the question byte
//! for byte; the TCP framing round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxify_core::dns::{self, AddrList, Frame, Lookup, Name, Resolver, Verdict};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Gives every name a placeholder (several for names starting with "m"), fails names
/// starting with "f", passes names starting with "d", names 240.0.0.0/8 addresses.
struct Fake;
impl Resolver for Fake {
    fn addrs(&mut self, name: &str, v6: bool) -> Lookup {
        assert!(
            Name::new(name).is_some_and(|n| n.as_str() == name),
            "{name:?}"
        );
        let h = name.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        let one = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, u16::from(h)))
        } else {
            IpAddr::V4(Ipv4Addr::new(240, 0, 0, h))
        };
        match name.as_bytes()[0] {
            b'f' => Lookup::Fail,
            b'n' => Lookup::NxDomain,
            b'e' => Lookup::NoData,
            b'm' => {
                let mut l = AddrList::default();
                while l.push(one) {}
                // A wrong-family address is skipped.
                Lookup::Found(l)
            }
            _ => Lookup::Found(AddrList::one(one)),
        }
    }
    fn name_of(&mut self, ip: IpAddr) -> Option<Name> {
        match ip {
            IpAddr::V4(a) if a.octets()[0] == 240 => {
                Name::new(&format!("h{}.example", a.octets()[3]))
            }
            IpAddr::V6(_) => Name::new(&"x.".repeat(120)),
            _ => None,
        }
    }
    fn pass(&mut self, name: &str) -> bool {
        name.starts_with('d')
    }
}

fuzz_target!(|data: &[u8]| {
    let (sel, msg) = match data.split_first() {
        Some((s, m)) => (*s, m),
        None => return,
    };
    let forward = sel & 1 != 0;
    let tcp = sel & 2 != 0;
    let out_len = if sel & 4 != 0 {
        usize::from(sel >> 3) * 8
    } else {
        dns::MAX_REPLY
    };
    let mut out = vec![0u8; out_len];
    let (v, q) = dns::respond(msg, &mut Fake, forward, tcp, &mut out);
    let parsed = dns::parse_query(msg);
    assert_eq!(q.is_some(), parsed.is_ok());
    match v {
        Verdict::Reply {
            len,
            rcode,
            answers,
        } => {
            assert!(
                len >= dns::HEADER_LEN && len <= out.len(),
                "{len} > {}",
                out.len()
            );
            let r = &out[..len];
            let info = dns::reply_info(r).expect("our reply must be well-formed");
            assert_eq!(info.rcode, rcode);
            assert_eq!(info.ancount, answers);
            assert_eq!(r[..2], msg[..2], "id not echoed");
            assert_eq!(r[2] & 0x01, msg[2] & 0x01, "RD not echoed");
            if let Some(q) = &q {
                assert_eq!(&r[12..12 + q.question.len()], q.question);
                if !tcp {
                    assert!(len <= usize::from(q.udp_size));
                }
                assert!(dns::check_forwarded(q, r));
                let mut n = 0;
                dns::answer_addrs(r, |_| n += 1).unwrap();
                assert!(n <= answers);
            }
        }
        Verdict::Forward => {
            assert!(forward);
            let q = q.expect("forward of a query that did not parse");
            // What the driver does with the server's answer: here the query itself echoed.
            let mut fit = [0u8; 600];
            let n = dns::fit_reply(&q, msg, usize::from(q.udp_size), &mut fit);
            assert!(n <= 600 && n <= usize::from(q.udp_size));
            let n = dns::error_reply(&q, dns::rcode::SERVFAIL, &mut fit);
            assert!(n > 0 && dns::check_forwarded(&q, &fit[..n]));
        }
        Verdict::Pass => assert!(q.is_some_and(|q| q.name.is_some())),
        Verdict::Drop => {}
    }
    // Framing: frame the message, then split it off a stream with the input behind it.
    let mut framed = vec![0u8; msg.len() + 2 + msg.len()];
    if let Some(n) = dns::write_frame(msg, &mut framed) {
        framed.truncate(n);
        framed.extend_from_slice(msg);
        assert_eq!(dns::take_frame(&framed), Frame::Message(msg, n));
        for cut in [0, 1, n.saturating_sub(1)] {
            if cut < n {
                assert!(matches!(dns::take_frame(&framed[..cut]), Frame::Need(k) if k > cut));
            }
        }
    }
    let _ = dns::reply_info(msg);
    let _ = dns::answer_addrs(msg, |_| {});
});
