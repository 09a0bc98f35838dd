//! `parse_udp_header` on arbitrary datagrams; whatever parses is encoded again with
//! `encode_udp_header` and must come back as the same address with the payload where it was.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxify_core::socks::{encode_udp_header, parse_udp_header, SocksError, TargetAddr};
use std::net::{IpAddr, SocketAddr};

/// The address as the encoder writes it: `::ffff:a.b.c.d` travels as IPv4.
fn unmapped(addr: &TargetAddr) -> TargetAddr {
    match addr {
        TargetAddr::Ip(SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
            Some(v4) => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(v4), a.port())),
            None => addr.clone(),
        },
        _ => addr.clone(),
    }
}

fuzz_target!(|dg: &[u8]| {
    let (h, off) = match parse_udp_header(dg) {
        Ok(v) => v,
        Err(e) => {
            assert!(matches!(e, SocksError::Malformed(_)), "{e:?}");
            assert!(e.errno() > 0 && !e.to_string().contains('\n'));
            return;
        }
    };
    // The header as it was on the wire: RSV RSV FRAG ATYP ADDR PORT.
    assert!(
        off <= dg.len(),
        "payload offset {off} past the end ({})",
        dg.len()
    );
    assert_eq!(&dg[..2], &[0, 0], "nonzero RSV accepted");
    assert_eq!(h.frag, dg[2]);
    let atyp = dg[3];
    let name_bytes = match &h.addr {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            assert_eq!((atyp, off), (1, 10));
            assert_eq!(dg[4..8], a.ip().octets());
            assert_eq!(dg[8..10], a.port().to_be_bytes());
            None
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            assert_eq!((atyp, off), (4, 22));
            assert_eq!(dg[4..20], a.ip().octets());
            assert_eq!(dg[20..22], a.port().to_be_bytes());
            None
        }
        TargetAddr::Domain(name, port) => {
            assert_eq!(atyp, 3);
            let len = usize::from(dg[4]);
            assert_eq!(off, 3 + 1 + 1 + len + 2);
            let raw = &dg[5..5 + len];
            assert_eq!(*name, String::from_utf8_lossy(raw));
            assert_eq!(dg[5 + len..off], port.to_be_bytes());
            Some(raw)
        }
    };
    let payload = &dg[off..];

    // Encode the parsed address again, after a prefix that must stay untouched.
    let mut out = vec![0xA5];
    match encode_udp_header(&h.addr, &mut out) {
        Ok(()) => {}
        Err(e) => {
            // Only a name the encoder cannot send: empty, or longer than 255 bytes once
            // invalid UTF-8 was replaced by U+FFFD.
            let raw = name_bytes.expect("an IP address always encodes");
            assert!(matches!(e, SocksError::Unsupported(_)), "{e:?}");
            let too_long = matches!(&h.addr, TargetAddr::Domain(n, _) if n.len() > 255);
            assert!(
                raw.is_empty() || (std::str::from_utf8(raw).is_err() && too_long),
                "encoding failed for a sendable name: {e:?}"
            );
            assert_eq!(out, [0xA5], "output changed on error");
            return;
        }
    }
    assert_eq!(out[0], 0xA5, "prefix changed");
    let enc = &out[1..];
    // Byte-exact when nothing had to change (valid UTF-8 name, no IPv4-mapped address,
    // FRAG 0, which is all the encoder writes).
    let exact = unmapped(&h.addr) == h.addr
        && name_bytes.is_none_or(|raw| std::str::from_utf8(raw).is_ok());
    if exact {
        let mut want = dg[..off].to_vec();
        want[2] = 0;
        assert_eq!(enc, &want[..], "re-encoded header differs");
    }
    // Round trip: the encoded header plus the payload parses to the same address (as sent)
    // with the payload at the new offset.
    let mut dg2 = enc.to_vec();
    dg2.extend_from_slice(payload);
    let (h2, off2) = parse_udp_header(&dg2).expect("re-encoded header must parse");
    assert_eq!(h2.frag, 0);
    assert_eq!(h2.addr, unmapped(&h.addr));
    assert_eq!(off2, enc.len());
    assert_eq!(&dg2[off2..], payload);
});
