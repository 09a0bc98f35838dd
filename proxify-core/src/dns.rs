//! A sans-IO DNS responder for remote DNS: queries a program sends to its system resolver are
//! answered in-process, so a name is never resolved locally. Shared by the LD_PRELOAD shim and
//! any other driver (a seccomp supervisor, the tests, the fuzzers). Nothing here touches a
//! socket, allocates or locks: every function works on caller-owned byte slices, so a driver
//! may call it from any context it could call `memcpy` from.
//!
//! # API
//!
//! - [`parse_query`]`(msg) -> Result<Query, BadQuery>`: one DNS message (the UDP payload, or
//!   one TCP frame without its length). Accepts exactly one question of a standard query; reads
//!   EDNS (OPT) for the client's UDP size. Compression pointers in the question are refused
//!   (no real client sends them). Never panics on any input.
//! - [`answer`]`(&query, &mut resolver, forward, limit, out) -> Verdict`: what to do with a
//!   parsed query. The caller's [`Resolver`] supplies the data:
//!   - `A`/`AAAA` (class IN): [`Resolver::addrs`] gives the addresses for the name (the same
//!     placeholders `getaddrinfo` hands out) → an answer; or NODATA, NXDOMAIN, SERVFAIL.
//!   - `PTR` for `…in-addr.arpa`/`…ip6.arpa`: [`Resolver::name_of`] gives the name of a
//!     placeholder (or of an `/etc/hosts` address) → a PTR answer.
//!   - everything else (MX, TXT, SRV, ANY, other classes, a PTR for an address the resolver
//!     does not know, a name that is not a host name): [`Verdict::Forward`] when `forward` is
//!     set (the driver sends the query over TCP through the proxy to the configured DNS server),
//!     else an immediate REFUSED.
//!   - [`Resolver::pass`] may claim a name as not remote (a name the rules send direct):
//!     [`Verdict::Pass`], the driver lets the query go to the real resolver unchanged.
//!
//!   The reply echoes the query's id, its question byte for byte (case included: 0x20
//!   randomisation survives) and its RD and CD flags, sets QR and RA, and carries an OPT record
//!   when the query had one. A reply longer than `limit` (the client's UDP size, see
//!   [`Query::udp_size`]; 65,535 over TCP) or than `out` is sent truncated (TC, question only),
//!   so the client retries over TCP.
//! - [`BadQuery::reply`]: the reply to a message that did not parse — FORMERR or NOTIMP with
//!   the id echoed when the header is readable, else [`Verdict::Drop`] (also for a *response*
//!   sent to us: answering it could loop).
//! - [`respond`] = [`parse_query`] + [`answer`] / [`BadQuery::reply`] in one call.
//! - [`error_reply`]: a reply with just the question and an rcode (SERVFAIL when forwarding
//!   failed). [`check_forwarded`]: whether a forwarded server's reply belongs to the query.
//!   [`fit_reply`]: a forwarded reply cut to the client's UDP size (TC).
//! - [`reply_info`]: validates a whole response (every section, compression pointers bounded)
//!   and returns id, flags, rcode and counts, for logs and tests.
//! - TCP framing (RFC 1035 4.2.2: a 2-byte big-endian length before each message):
//!   [`take_frame`] splits one message off a stream buffer, [`write_frame`] writes one.
//!
//! Names given to the [`Resolver`] are lower case, dotted, without the trailing dot, at most
//! 253 bytes, made of printable ASCII other than `.` and `\` (anything else is not a host name
//! and goes the "everything else" way).
//!
//! Size: ~1,260 lines, ~365 of them unit tests (14): one wire format; parsing, answering,
//! reply validation and TCP framing share the name readers (`skip_name`, `check_name`,
//! `read_qname`) and the record writers, and the API above is described in one place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of the DNS header.
pub const HEADER_LEN: usize = 12;
/// An output buffer of this size always holds the reply [`answer`] builds (up to
/// [`MAX_ADDRS`] addresses or one PTR name, plus the question and an OPT record).
pub const MAX_REPLY: usize = 1024;
/// UDP message size without EDNS (RFC 1035).
pub const UDP_MIN: u16 = 512;
/// The UDP size proxify's OPT record announces, and the most it honours from a client.
pub const UDP_MAX: u16 = 1232;
/// At most this many addresses per answer.
pub const MAX_ADDRS: usize = 8;
/// TTL of the answers (seconds): placeholders live as long as the table of one run.
pub const TTL: u32 = 60;

/// Record types.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const ANY: u16 = 255;

    /// The mnemonic for logs ("TYPE99" for the others).
    pub fn name(t: u16) -> RtypeName {
        RtypeName(t)
    }

    /// Display of a record type.
    pub struct RtypeName(u16);
    impl std::fmt::Display for RtypeName {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let s = match self.0 {
                A => "A",
                NS => "NS",
                CNAME => "CNAME",
                SOA => "SOA",
                PTR => "PTR",
                MX => "MX",
                TXT => "TXT",
                AAAA => "AAAA",
                SRV => "SRV",
                OPT => "OPT",
                ANY => "ANY",
                65 => "HTTPS",
                64 => "SVCB",
                t => return write!(f, "TYPE{t}"),
            };
            f.write_str(s)
        }
    }
}

/// Response codes.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;

    /// The mnemonic for logs.
    pub fn name(r: u8) -> &'static str {
        match r {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            _ => "RCODE?",
        }
    }
}

/// Class IN.
pub const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;

/// A host name in text form: lower case, dotted, no trailing dot, 1..=253 bytes. Fixed size,
/// no allocation.
#[derive(Clone, Copy)]
pub struct Name {
    bytes: [u8; 253],
    len: u8,
}

impl Name {
    /// The name as text; `s` is checked (printable ASCII other than `\`, labels of 1..=63
    /// bytes, 253 in all) and lower-cased; one trailing dot is dropped.
    pub fn new(s: &str) -> Option<Name> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() || s.len() > 253 {
            return None;
        }
        let mut n = Name {
            bytes: [0; 253],
            len: s.len() as u8,
        };
        for label in s.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
        }
        for (d, &b) in n.bytes.iter_mut().zip(s.as_bytes()) {
            if !(0x21..=0x7e).contains(&b) || b == b'\\' {
                return None;
            }
            *d = b.to_ascii_lowercase();
        }
        Some(n)
    }

    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Wire form (length-prefixed labels, root label last) into `out`; the bytes written.
    fn write_wire(&self, out: &mut [u8]) -> Option<usize> {
        let mut at = 0;
        for label in self.as_str().split('.') {
            let l = label.as_bytes();
            *out.get_mut(at)? = l.len() as u8;
            out.get_mut(at + 1..at + 1 + l.len())?.copy_from_slice(l);
            at += 1 + l.len();
        }
        *out.get_mut(at)? = 0;
        Some(at + 1)
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed query.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub id: u16,
    pub flags: u16,
    pub qtype: u16,
    pub qclass: u16,
    /// The question name, when it is a host name (see [`Name`]).
    pub name: Option<Name>,
    /// The question as it was on the wire: name, type, class.
    pub question: &'a [u8],
    /// Whether the query carried an OPT record.
    pub edns: bool,
    /// The most the client takes over UDP: its EDNS size (at least 512, at most
    /// [`UDP_MAX`]), or 512.
    pub udp_size: u16,
}

impl Query<'_> {
    /// Whether the client asked for recursion.
    pub fn rd(&self) -> bool {
        self.flags & FLAG_RD != 0
    }

    /// The name for logs (`?` when it is not a host name).
    pub fn name_str(&self) -> &str {
        self.name.as_ref().map_or("?", |n| n.as_str())
    }
}

/// Why a message is not a query [`answer`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadQuery {
    /// Shorter than a header: nothing to answer.
    Short,
    /// QR set: a response, not a query. Never answered.
    Response,
    /// An opcode other than QUERY: NOTIMP.
    Opcode(u8),
    /// Not exactly one well-formed question, or broken records: FORMERR.
    Malformed { id: u16, flags: u16 },
}

impl BadQuery {
    /// The reply to the message (`msg`, the one that did not parse): FORMERR/NOTIMP with the
    /// id and RD echoed and no question, or [`Verdict::Drop`].
    pub fn reply(&self, msg: &[u8], out: &mut [u8]) -> Verdict {
        let (id, flags, rc) = match *self {
            BadQuery::Short | BadQuery::Response => return Verdict::Drop,
            BadQuery::Opcode(_) => match (be16(msg, 0), be16(msg, 2)) {
                (Some(id), Some(flags)) => (id, flags, rcode::NOTIMP),
                _ => return Verdict::Drop,
            },
            BadQuery::Malformed { id, flags } => (id, flags, rcode::FORMERR),
        };
        let Some(h) = out.get_mut(..HEADER_LEN) else {
            return Verdict::Drop;
        };
        let f = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | FLAG_RA | u16::from(rc);
        h.copy_from_slice(&[0; HEADER_LEN]);
        h[0..2].copy_from_slice(&id.to_be_bytes());
        h[2..4].copy_from_slice(&f.to_be_bytes());
        Verdict::Reply {
            len: HEADER_LEN,
            rcode: rc,
            answers: 0,
        }
    }
}

/// What the driver does with a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `out[..len]` back to the client (from the address it sent to).
    Reply { len: usize, rcode: u8, answers: u16 },
    /// Send the query through the proxy to the configured DNS server (over TCP), and the
    /// server's reply back ([`check_forwarded`], [`fit_reply`]); on failure [`error_reply`]
    /// with SERVFAIL.
    Forward,
    /// Not a remote name ([`Resolver::pass`]): let the query go where the program sent it.
    Pass,
    /// Nothing to send.
    Drop,
}

/// The addresses of a name, as [`Resolver::addrs`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Up to [`MAX_ADDRS`] addresses (of the family asked for; others are skipped).
    Found(AddrList),
    /// The name exists without an address of this family: NOERROR, no answer.
    NoData,
    /// No such name: NXDOMAIN.
    NxDomain,
    /// Cannot answer now (placeholder table full): SERVFAIL.
    Fail,
}

/// A fixed-capacity list of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrList {
    addrs: [IpAddr; MAX_ADDRS],
    len: usize,
}

impl Default for AddrList {
    fn default() -> Self {
        AddrList {
            addrs: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); MAX_ADDRS],
            len: 0,
        }
    }
}

impl AddrList {
    pub fn one(ip: IpAddr) -> AddrList {
        let mut l = AddrList::default();
        l.push(ip);
        l
    }

    /// Adds `ip`; false (and nothing added) when full.
    pub fn push(&mut self, ip: IpAddr) -> bool {
        if self.len == MAX_ADDRS {
            return false;
        }
        self.addrs[self.len] = ip;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[IpAddr] {
        &self.addrs[..self.len]
    }
}

/// The data behind the answers, supplied by the driver.
pub trait Resolver {
    /// The addresses of `name` (IPv6 when `v6`): the placeholders `getaddrinfo` would give, or
    /// `/etc/hosts` entries.
    fn addrs(&mut self, name: &str, v6: bool) -> Lookup;
    /// The name of `ip` (a placeholder, an `/etc/hosts` address); None: not known here.
    fn name_of(&mut self, ip: IpAddr) -> Option<Name>;
    /// True when `name` is not resolved remotely (a rule sends it direct): the query goes on
    /// to the real resolver unchanged. Asked first, for every query with a host name.
    fn pass(&mut self, _name: &str) -> bool {
        false
    }
}

fn be16(msg: &[u8], at: usize) -> Option<u16> {
    let b = msg.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Skips a name starting at `at` (compression pointers allowed: a pointer ends the name).
/// Returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 => {
                at += 1;
                if len == 0 {
                    return Some(at);
                }
                total += usize::from(len) + 1;
                if total > 255 {
                    return None;
                }
                msg.get(at..at + usize::from(len))?;
                at += usize::from(len);
            }
            0xC0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// Follows a (possibly compressed) name from `at` to its end, checking every pointer stays
/// in the message and the walk ends (pointers must point backwards).
fn check_name(msg: &[u8], mut at: usize) -> Option<()> {
    let mut total = 0usize;
    let mut limit = at; // a pointer must go before the current name start
    for _ in 0..256 {
        let len = *msg.get(at)?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Some(());
                }
                total += usize::from(len) + 1;
                if total > 255 {
                    return None;
                }
                msg.get(at + 1..at + 1 + usize::from(len))?;
                at += 1 + usize::from(len);
            }
            0xC0 => {
                let lo = *msg.get(at + 1)?;
                let to = usize::from(u16::from_be_bytes([len & 0x3F, lo]));
                if to >= limit {
                    return None;
                }
                limit = to;
                at = to;
            }
            _ => return None,
        }
    }
    None
}

/// The question name at `at` (no compression): its text form when it is a host name, and
/// the offset after it.
fn read_qname(msg: &[u8], mut at: usize) -> Option<(Option<Name>, usize)> {
    let mut text = [0u8; 256];
    let mut tlen = 0usize;
    let mut host = true;
    let mut wire = 0usize;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len & 0xC0 != 0 {
            return None;
        }
        at += 1;
        wire += 1 + len;
        if wire > 255 {
            return None;
        }
        if len == 0 {
            break;
        }
        let label = msg.get(at..at + len)?;
        at += len;
        if tlen > 0 {
            if tlen < text.len() {
                text[tlen] = b'.';
            }
            tlen += 1;
        }
        for &b in label {
            if !(0x21..=0x7e).contains(&b) || b == b'.' || b == b'\\' {
                host = false;
            }
            if tlen < text.len() {
                text[tlen] = b.to_ascii_lowercase();
            }
            tlen += 1;
        }
    }
    let name = if host && tlen > 0 && tlen <= 253 {
        std::str::from_utf8(&text[..tlen]).ok().and_then(Name::new)
    } else {
        None
    };
    Some((name, at))
}

/// Parses one query message.
pub fn parse_query(msg: &[u8]) -> Result<Query<'_>, BadQuery> {
    if msg.len() < HEADER_LEN {
        return Err(BadQuery::Short);
    }
    let id = u16::from_be_bytes([msg[0], msg[1]]);
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    if flags & FLAG_QR != 0 {
        return Err(BadQuery::Response);
    }
    let opcode = ((flags & OPCODE_MASK) >> 11) as u8;
    if opcode != 0 {
        return Err(BadQuery::Opcode(opcode));
    }
    let bad = BadQuery::Malformed { id, flags };
    let count = |at| be16(msg, at).ok_or(bad);
    let (qd, an, ns, ar) = (count(4)?, count(6)?, count(8)?, count(10)?);
    if qd != 1 {
        return Err(bad);
    }
    let (name, after_name) = read_qname(msg, HEADER_LEN).ok_or(bad)?;
    let qtype = be16(msg, after_name).ok_or(bad)?;
    let qclass = be16(msg, after_name + 2).ok_or(bad)?;
    let qend = after_name + 4;
    let question = &msg[HEADER_LEN..qend];
    // The other sections: walk them, read an OPT in the additional one.
    let mut at = qend;
    let mut edns = false;
    let mut udp_size = UDP_MIN;
    let records = usize::from(an) + usize::from(ns) + usize::from(ar);
    for i in 0..records {
        let name_at = at;
        at = skip_name(msg, at).ok_or(bad)?;
        check_name(msg, name_at).ok_or(bad)?;
        let t = be16(msg, at).ok_or(bad)?;
        let class = be16(msg, at + 2).ok_or(bad)?;
        let rdlen = usize::from(be16(msg, at + 8).ok_or(bad)?);
        at += 10;
        msg.get(at..at + rdlen).ok_or(bad)?;
        at += rdlen;
        if t == rtype::OPT {
            let additional = i >= usize::from(an) + usize::from(ns);
            // One OPT, owned by the root, in the additional section (RFC 6891 6.1.1).
            if edns || !additional || msg[name_at] != 0 {
                return Err(bad);
            }
            edns = true;
            udp_size = class.clamp(UDP_MIN, UDP_MAX);
        }
    }
    Ok(Query {
        id,
        flags,
        qtype,
        qclass,
        name,
        question,
        edns,
        udp_size,
    })
}

/// The address a reverse name stands for: `d.c.b.a.in-addr.arpa` or 32 nibbles `.ip6.arpa`.
pub fn reverse_addr(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut o = [0u8; 4];
        let mut n = 0;
        for part in rest.split('.') {
            if n == 4
                || part.is_empty()
                || part.len() > 3
                || (part.len() > 1 && part.starts_with('0'))
            {
                return None;
            }
            o[3 - n] = part.parse().ok()?;
            n += 1;
        }
        return (n == 4).then(|| IpAddr::V4(Ipv4Addr::from(o)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let mut v: u128 = 0;
    let mut n = 0;
    for part in rest.split('.') {
        let b = part.as_bytes();
        if n == 32 || b.len() != 1 {
            return None;
        }
        let d = (b[0] as char).to_digit(16)?;
        v |= u128::from(d) << (4 * n);
        n += 1;
    }
    (n == 32).then(|| IpAddr::V6(Ipv6Addr::from(v)))
}

/// Writes the header and the question; the offset after them.
fn write_head(q: &Query, rc: u8, tc: bool, answers: u16, out: &mut [u8]) -> Option<usize> {
    let end = HEADER_LEN + q.question.len();
    let head = out.get_mut(..end)?;
    let mut f = FLAG_QR | (q.flags & (FLAG_RD | FLAG_CD)) | FLAG_RA | u16::from(rc);
    if tc {
        f |= FLAG_TC;
    }
    head[0..2].copy_from_slice(&q.id.to_be_bytes());
    head[2..4].copy_from_slice(&f.to_be_bytes());
    head[4..6].copy_from_slice(&1u16.to_be_bytes());
    head[6..8].copy_from_slice(&answers.to_be_bytes());
    head[8..10].copy_from_slice(&0u16.to_be_bytes());
    head[10..12].copy_from_slice(&u16::from(q.edns).to_be_bytes());
    head[HEADER_LEN..].copy_from_slice(q.question);
    Some(end)
}

/// Appends proxify's OPT record at `at` when the query had one.
fn write_opt(q: &Query, out: &mut [u8], at: usize) -> Option<usize> {
    if !q.edns {
        return Some(at);
    }
    let size = UDP_MAX.to_be_bytes();
    let rr = [0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0];
    out.get_mut(at..at + rr.len())?.copy_from_slice(&rr);
    Some(at + rr.len())
}

/// A resource record whose owner is the question name (pointer to offset 12).
fn write_rr(out: &mut [u8], at: usize, t: u16, rdata_len: usize) -> Option<usize> {
    let h = out.get_mut(at..at + 12)?;
    h[0..2].copy_from_slice(&0xC00Cu16.to_be_bytes());
    h[2..4].copy_from_slice(&t.to_be_bytes());
    h[4..6].copy_from_slice(&CLASS_IN.to_be_bytes());
    h[6..10].copy_from_slice(&TTL.to_be_bytes());
    h[10..12].copy_from_slice(&(rdata_len as u16).to_be_bytes());
    Some(at + 12)
}

/// A reply with the question only and `rc` (SERVFAIL when a forward failed, REFUSED, ...).
/// Returns its length, or 0 when `out` is too small for it.
pub fn error_reply(q: &Query, rc: u8, out: &mut [u8]) -> usize {
    write_head(q, rc, false, 0, out)
        .and_then(|at| write_opt(q, out, at))
        .unwrap_or(0)
}

fn reply_of(q: &Query, rc: u8, out: &mut [u8]) -> Verdict {
    match error_reply(q, rc, out) {
        0 => Verdict::Drop,
        len => Verdict::Reply {
            len,
            rcode: rc,
            answers: 0,
        },
    }
}

/// The truncated form of the reply: TC, question only.
fn truncated(q: &Query, out: &mut [u8]) -> Verdict {
    match write_head(q, rcode::NOERROR, true, 0, out).and_then(|at| write_opt(q, out, at)) {
        Some(len) => Verdict::Reply {
            len,
            rcode: rcode::NOERROR,
            answers: 0,
        },
        None => Verdict::Drop,
    }
}

/// Answers a parsed query (see the module documentation). `limit` is the most the reply may
/// take ([`Query::udp_size`] over UDP, 65,535 over TCP); `out` should hold [`MAX_REPLY`].
pub fn answer<R: Resolver + ?Sized>(
    q: &Query,
    r: &mut R,
    forward: bool,
    limit: usize,
    out: &mut [u8],
) -> Verdict {
    let other = |out: &mut [u8]| {
        if forward {
            Verdict::Forward
        } else {
            reply_of(q, rcode::REFUSED, out)
        }
    };
    let Some(name) = q.name else {
        return other(out);
    };
    if r.pass(name.as_str()) {
        return Verdict::Pass;
    }
    if q.qclass != CLASS_IN {
        return other(out);
    }
    let cap = limit.min(out.len());
    let full = match q.qtype {
        rtype::A | rtype::AAAA => {
            let v6 = q.qtype == rtype::AAAA;
            let list = match r.addrs(name.as_str(), v6) {
                Lookup::Found(l) => l,
                Lookup::NoData => return reply_of(q, rcode::NOERROR, out),
                Lookup::NxDomain => return reply_of(q, rcode::NXDOMAIN, out),
                Lookup::Fail => return reply_of(q, rcode::SERVFAIL, out),
            };
            let mut n = 0u16;
            let mut buf = [0u8; MAX_REPLY];
            let Some(mut at) = write_head(q, 0, false, 0, &mut buf) else {
                return Verdict::Drop;
            };
            for ip in list.as_slice() {
                let (len, bytes): (usize, [u8; 16]) = match (ip, v6) {
                    (IpAddr::V4(a), false) => {
                        let mut b = [0; 16];
                        b[..4].copy_from_slice(&a.octets());
                        (4, b)
                    }
                    (IpAddr::V6(a), true) => (16, a.octets()),
                    _ => continue,
                };
                let Some(rd) = write_rr(&mut buf, at, q.qtype, len) else {
                    return Verdict::Drop;
                };
                buf[rd..rd + len].copy_from_slice(&bytes[..len]);
                at = rd + len;
                n += 1;
            }
            if n == 0 {
                return reply_of(q, rcode::NOERROR, out);
            }
            buf[6..8].copy_from_slice(&n.to_be_bytes());
            let Some(at) = write_opt(q, &mut buf, at) else {
                return Verdict::Drop;
            };
            (buf, at, n)
        }
        rtype::PTR => {
            let Some(target) = reverse_addr(name.as_str()).and_then(|ip| r.name_of(ip)) else {
                return other(out);
            };
            let mut buf = [0u8; MAX_REPLY];
            let Some(at) = write_head(q, 0, false, 1, &mut buf) else {
                return Verdict::Drop;
            };
            let mut wire = [0u8; 255];
            let Some(wlen) = target.write_wire(&mut wire) else {
                return Verdict::Drop;
            };
            let Some(rd) = write_rr(&mut buf, at, rtype::PTR, wlen) else {
                return Verdict::Drop;
            };
            buf[rd..rd + wlen].copy_from_slice(&wire[..wlen]);
            let Some(at) = write_opt(q, &mut buf, rd + wlen) else {
                return Verdict::Drop;
            };
            (buf, at, 1)
        }
        _ => return other(out),
    };
    let (buf, len, answers) = full;
    if len > cap {
        return truncated(q, out);
    }
    out[..len].copy_from_slice(&buf[..len]);
    Verdict::Reply {
        len,
        rcode: rcode::NOERROR,
        answers,
    }
}

/// [`parse_query`] then [`answer`], or the reply to a bad message. Also returns the query
/// when it parsed (for the log line).
pub fn respond<'a, R: Resolver + ?Sized>(
    msg: &'a [u8],
    r: &mut R,
    forward: bool,
    tcp: bool,
    out: &mut [u8],
) -> (Verdict, Option<Query<'a>>) {
    match parse_query(msg) {
        Ok(q) => {
            let limit = if tcp {
                usize::from(u16::MAX)
            } else {
                usize::from(q.udp_size)
            };
            (answer(&q, r, forward, limit, out), Some(q))
        }
        Err(e) => (e.reply(msg, out), None),
    }
}

/// Whether `reply` (from the DNS server a query was forwarded to) answers `q`: a response
/// with the same id and the same question (names compared without case).
pub fn check_forwarded(q: &Query, reply: &[u8]) -> bool {
    let Some(info) = reply_info(reply) else {
        return false;
    };
    if info.id != q.id || info.qdcount != 1 {
        return false;
    }
    match reply.get(HEADER_LEN..HEADER_LEN + q.question.len()) {
        Some(rq) => rq.eq_ignore_ascii_case(q.question),
        None => false,
    }
}

/// A forwarded reply as the client may take it: copied whole when it fits `limit` and `out`,
/// else cut to header and question with TC set (the client retries over TCP). Returns the
/// length written (0 when `out` cannot even hold the cut form).
pub fn fit_reply(q: &Query, reply: &[u8], limit: usize, out: &mut [u8]) -> usize {
    if reply.len() <= limit && reply.len() <= out.len() {
        out[..reply.len()].copy_from_slice(reply);
        return reply.len();
    }
    let rc = reply.get(3).map_or(rcode::SERVFAIL, |b| b & 0x0F);
    match write_head(q, rc, true, 0, out).and_then(|at| write_opt(q, out, at)) {
        Some(len) if len <= limit => len,
        _ => 0,
    }
}

/// What [`reply_info`] reads from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyInfo {
    pub id: u16,
    pub flags: u16,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub truncated: bool,
}

/// Validates a response (QR set; every section walks to its end, names and pointers in
/// bounds, extra bytes after the last record refused) and reads its header.
pub fn reply_info(msg: &[u8]) -> Option<ReplyInfo> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    if flags & FLAG_QR == 0 {
        return None;
    }
    let qd = be16(msg, 4)?;
    let an = be16(msg, 6)?;
    let ns = be16(msg, 8)?;
    let ar = be16(msg, 10)?;
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        check_name(msg, at)?;
        at = skip_name(msg, at)? + 4;
        msg.get(..at)?;
    }
    for _ in 0..usize::from(an) + usize::from(ns) + usize::from(ar) {
        check_name(msg, at)?;
        at = skip_name(msg, at)?;
        let rdlen = usize::from(be16(msg, at + 8)?);
        at += 10;
        msg.get(at..at + rdlen)?;
        at += rdlen;
    }
    if at != msg.len() {
        return None;
    }
    Some(ReplyInfo {
        id,
        flags,
        rcode: (flags & 0x0F) as u8,
        qdcount: qd,
        ancount: an,
        truncated: flags & FLAG_TC != 0,
    })
}

/// The addresses in the answer section of a response of type A/AAAA (for tests and logs):
/// calls `f` for each.
pub fn answer_addrs(msg: &[u8], mut f: impl FnMut(IpAddr)) -> Option<()> {
    let info = reply_info(msg)?;
    let mut at = HEADER_LEN;
    for _ in 0..info.qdcount {
        at = skip_name(msg, at)? + 4;
    }
    for _ in 0..info.ancount {
        at = skip_name(msg, at)?;
        let t = be16(msg, at)?;
        let rdlen = usize::from(be16(msg, at + 8)?);
        at += 10;
        let rd = msg.get(at..at + rdlen)?;
        match (t, rdlen) {
            (rtype::A, 4) => f(IpAddr::V4(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3]))),
            (rtype::AAAA, 16) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rd);
                f(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => {}
        }
        at += rdlen;
    }
    Some(())
}

/// One frame of a DNS-over-TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole message, and the bytes it took from the buffer (its length prefix included).
    Message(&'a [u8], usize),
    /// Not yet whole: this many bytes in all are needed (prefix included).
    Need(usize),
}

/// Splits the first message off a TCP stream buffer.
pub fn take_frame(buf: &[u8]) -> Frame<'_> {
    let Some(len) = be16(buf, 0) else {
        return Frame::Need(2);
    };
    let end = 2 + usize::from(len);
    match buf.get(2..end) {
        Some(m) => Frame::Message(m, end),
        None => Frame::Need(end),
    }
}

/// Writes `msg` with its 2-byte length into `out`; the bytes written, None when `msg` is
/// over 65,535 bytes or `out` too small.
pub fn write_frame(msg: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = u16::try_from(msg.len()).ok()?;
    out.get_mut(..2)?.copy_from_slice(&len.to_be_bytes());
    out.get_mut(2..2 + msg.len())?.copy_from_slice(msg);
    Some(2 + msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placeholders 240.0.0.N / 100::N for names "hostN.example"; "full.example" fails;
    /// "v4only.example" has no IPv6; "direct.example" passes; 240.0.0.7 is "host7.example".
    struct Fake;
    impl Resolver for Fake {
        fn addrs(&mut self, name: &str, v6: bool) -> Lookup {
            if name == "full.example" {
                return Lookup::Fail;
            }
            if name == "v4only.example" && v6 {
                return Lookup::NoData;
            }
            if name == "many.example" {
                let mut l = AddrList::default();
                for i in 0..MAX_ADDRS as u8 {
                    l.push(IpAddr::V4(Ipv4Addr::new(240, 0, 1, i)));
                }
                return Lookup::Found(l);
            }
            let n: u8 = name
                .strip_prefix("host")
                .and_then(|s| s.strip_suffix(".example"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            Lookup::Found(AddrList::one(if v6 {
                IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, u16::from(n)))
            } else {
                IpAddr::V4(Ipv4Addr::new(240, 0, 0, n))
            }))
        }
        fn name_of(&mut self, ip: IpAddr) -> Option<Name> {
            match ip {
                IpAddr::V4(a) if a == Ipv4Addr::new(240, 0, 0, 7) => Name::new("host7.example"),
                IpAddr::V6(a) if a == Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 7) => {
                    Name::new("host7.example")
                }
                _ => None,
            }
        }
        fn pass(&mut self, name: &str) -> bool {
            name == "direct.example"
        }
    }

    /// A query as `dig` sends it: id 0xBEEF, RD, AD, one question, optionally an OPT record
    /// (size 1232, cookie option).
    fn query(name: &str, t: u16, opt: bool) -> Vec<u8> {
        let mut m = vec![0xBE, 0xEF, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, u8::from(opt)];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        if opt {
            m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 12]);
            m.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        }
        m
    }

    fn run(msg: &[u8], forward: bool) -> (Verdict, Vec<u8>) {
        let mut out = [0u8; MAX_REPLY];
        let (v, _) = respond(msg, &mut Fake, forward, false, &mut out);
        let bytes = match v {
            Verdict::Reply { len, .. } => out[..len].to_vec(),
            _ => Vec::new(),
        };
        (v, bytes)
    }

    #[test]
    fn a_answer_byte_for_byte() {
        let q = query("Host5.Example", rtype::A, false);
        let (v, r) = run(&q, false);
        assert_eq!(
            v,
            Verdict::Reply {
                len: r.len(),
                rcode: 0,
                answers: 1
            }
        );
        let mut want = vec![0xBE, 0xEF, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        want.extend_from_slice(&q[12..]); // the question, case kept
        want.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 240, 0, 0, 5]);
        assert_eq!(r, want);
    }

    #[test]
    fn aaaa_answer_with_edns() {
        let q = query("host9.example.", rtype::AAAA, true);
        let (v, r) = run(&q, false);
        assert!(matches!(v, Verdict::Reply { answers: 1, .. }));
        let info = reply_info(&r).unwrap();
        assert_eq!((info.id, info.rcode, info.ancount), (0xBEEF, 0, 1));
        assert_eq!(&r[10..12], &[0, 1], "OPT echoed");
        assert_eq!(
            &r[r.len() - 11..],
            &[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]
        );
        let mut got = vec![];
        answer_addrs(&r, |ip| got.push(ip)).unwrap();
        assert_eq!(got, ["100::9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn rd_and_cd_echoed_and_ra_set() {
        let mut q = query("host1.example", rtype::A, false);
        q[2] = 0x00; // RD off
        q[3] = 0x10; // CD
        let (_, r) = run(&q, false);
        assert_eq!(&r[2..4], &[0x80, 0x90]);
    }

    #[test]
    fn nodata_nxdomain_servfail() {
        let (v, r) = run(&query("v4only.example", rtype::AAAA, false), false);
        assert!(matches!(
            v,
            Verdict::Reply {
                rcode: 0,
                answers: 0,
                ..
            }
        ));
        assert_eq!(&r[6..8], &[0, 0]);
        let (v, r) = run(&query("full.example", rtype::A, false), false);
        assert!(matches!(v, Verdict::Reply { rcode: 2, .. }));
        assert_eq!(r[3] & 0x0F, 2);
    }

    #[test]
    fn other_types_refused_or_forwarded() {
        for t in [rtype::MX, rtype::TXT, rtype::SRV, rtype::ANY, 65] {
            let q = query("host1.example", t, true);
            let (v, r) = run(&q, false);
            assert!(matches!(v, Verdict::Reply { rcode: 5, .. }), "{t}");
            assert_eq!(r[3] & 0x0F, 5);
            assert_eq!(&r[12..12 + q.len() - 12 - 23], &q[12..q.len() - 23]);
            assert_eq!(run(&q, true).0, Verdict::Forward);
        }
        // Class CH is not ours either.
        let mut q = query("version.bind", rtype::TXT, false);
        let n = q.len();
        q[n - 1] = 3;
        assert!(matches!(run(&q, false).0, Verdict::Reply { rcode: 5, .. }));
    }

    #[test]
    fn pass_for_direct_names() {
        assert_eq!(
            run(&query("DIRECT.example", rtype::A, false), false).0,
            Verdict::Pass
        );
        assert_eq!(
            run(&query("direct.example", rtype::MX, false), true).0,
            Verdict::Pass
        );
    }

    #[test]
    fn ptr_for_placeholders() {
        let q = query("7.0.0.240.in-addr.arpa", rtype::PTR, false);
        let (v, r) = run(&q, false);
        assert!(matches!(v, Verdict::Reply { answers: 1, .. }));
        let mut tail = vec![0xC0, 0x0C, 0, 12, 0, 1, 0, 0, 0, 60, 0, 15];
        tail.extend_from_slice(b"\x05host7\x07example\x00");
        assert_eq!(&r[r.len() - tail.len()..], &tail[..]);
        let v6 = "7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.ip6.arpa";
        let (v, _) = run(&query(v6, rtype::PTR, false), false);
        assert!(matches!(v, Verdict::Reply { answers: 1, .. }));
        // Not a placeholder: never answered from anywhere local.
        let q = query("1.2.0.192.in-addr.arpa", rtype::PTR, false);
        assert!(matches!(run(&q, false).0, Verdict::Reply { rcode: 5, .. }));
        assert_eq!(run(&q, true).0, Verdict::Forward);
    }

    #[test]
    fn reverse_names() {
        let a = |s: &str| reverse_addr(s);
        assert_eq!(a("4.3.2.1.in-addr.arpa"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(a("3.2.1.in-addr.arpa"), None);
        assert_eq!(a("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(a("04.3.2.1.in-addr.arpa"), None);
        assert_eq!(a("256.3.2.1.in-addr.arpa"), None);
        assert_eq!(a("in-addr.arpa"), None);
        assert_eq!(a("1.0.ip6.arpa"), None);
        assert_eq!(
            a("g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.ip6.arpa"),
            None
        );
    }

    #[test]
    fn names_that_are_not_host_names() {
        // A label with a dot, a space or a byte over 0x7f: refused, never looked up.
        for label in [&b"a.b"[..], b"a b", b"\xc3\xa9", b"a\\b"] {
            let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            m.push(label.len() as u8);
            m.extend_from_slice(label);
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
            let q = parse_query(&m).unwrap();
            assert!(q.name.is_none());
            assert!(matches!(run(&m, false).0, Verdict::Reply { rcode: 5, .. }));
        }
        // The root name.
        let m = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        assert!(matches!(run(&m, false).0, Verdict::Reply { rcode: 5, .. }));
        assert_eq!(Name::new("a..b").map(|n| n.to_string()), None);
        assert_eq!(Name::new("Ab.C.").unwrap().as_str(), "ab.c");
        assert!(Name::new(&"a".repeat(64)).is_none());
        assert!(Name::new(&["a"; 127].join(".")).is_some());
        assert!(Name::new(&["a"; 128].join(".")).is_none());
    }

    #[test]
    fn garbage() {
        // Too short, a response, IQUERY/STATUS, no question, two questions, compression,
        // cut short, overlong names, broken additional records.
        assert_eq!(run(&[], false).0, Verdict::Drop);
        assert_eq!(run(&[1, 2, 3], false).0, Verdict::Drop);
        let mut resp = query("host1.example", rtype::A, false);
        resp[2] |= 0x80;
        assert_eq!(run(&resp, false).0, Verdict::Drop);
        let mut status = query("host1.example", rtype::A, false);
        status[2] = 0x10; // opcode 2
        let (v, r) = run(&status, false);
        assert!(matches!(
            v,
            Verdict::Reply {
                rcode: 4,
                len: 12,
                ..
            }
        ));
        assert_eq!(&r[..4], &[0xBE, 0xEF, 0x90, 0x84]);
        let formerr = |m: &[u8]| {
            let (v, r) = run(m, false);
            assert!(
                matches!(
                    v,
                    Verdict::Reply {
                        rcode: 1,
                        len: 12,
                        ..
                    }
                ),
                "{m:?}: {v:?}"
            );
            assert_eq!(&r[..2], &m[..2]);
        };
        let mut none = query("host1.example", rtype::A, false);
        none[5] = 0;
        formerr(&none);
        let mut two = query("host1.example", rtype::A, false);
        two[5] = 2;
        formerr(&two);
        formerr(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]);
        let q = query("host1.example", rtype::A, true);
        for cut in 12..q.len() {
            formerr(&q[..cut]);
        }
        let long = ["a"; 128].join(".");
        formerr(&query(&long, rtype::A, false));
        let mut bad_ar = query("host1.example", rtype::A, false);
        bad_ar[11] = 1;
        bad_ar.extend_from_slice(&[0xC0, 0xFF, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0]);
        formerr(&bad_ar);
        let mut two_opt = query("host1.example", rtype::A, true);
        two_opt[11] = 2;
        two_opt.extend_from_slice(&[0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0]);
        formerr(&two_opt);
        let mut bits = query("host1.example", rtype::A, false);
        bits[12] = 0x40;
        formerr(&bits);
    }

    #[test]
    fn udp_size_and_truncation() {
        let q = query("many.example", rtype::A, false);
        let pq = parse_query(&q).unwrap();
        assert_eq!(pq.udp_size, 512);
        let mut out = [0u8; MAX_REPLY];
        let v = answer(&pq, &mut Fake, false, 512, &mut out);
        assert!(matches!(v, Verdict::Reply { answers: 8, .. }));
        // Too little room: TC with the question only.
        let v = answer(&pq, &mut Fake, false, 40, &mut out);
        let Verdict::Reply {
            len, answers: 0, ..
        } = v
        else {
            panic!("{v:?}")
        };
        let info = reply_info(&out[..len]).unwrap();
        assert!(info.truncated && info.ancount == 0);
        let qe = query("x.example", rtype::A, true);
        let pq = parse_query(&qe).unwrap();
        assert!(pq.edns);
        assert_eq!(pq.udp_size, 1232);
    }

    #[test]
    fn forwarded_replies() {
        let q = query("host1.example", rtype::MX, true);
        let pq = parse_query(&q).unwrap();
        // A server reply: same id, question in other case, one MX.
        let mut rep = vec![0xBE, 0xEF, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        rep.extend_from_slice(&q[12..q.len() - 23].to_ascii_uppercase());
        rep.extend_from_slice(&[
            0xC0, 0x0C, 0, 15, 0, 1, 0, 0, 0, 60, 0, 4, 0, 10, 0xC0, 0x0C,
        ]);
        assert!(check_forwarded(&pq, &rep));
        let mut other = rep.clone();
        other[1] ^= 1;
        assert!(!check_forwarded(&pq, &other));
        assert!(!check_forwarded(&pq, &rep[..rep.len() - 1]));
        let mut out = [0u8; 600];
        assert_eq!(fit_reply(&pq, &rep, 512, &mut out), rep.len());
        let n = fit_reply(&pq, &rep, 45, &mut out);
        let info = reply_info(&out[..n]).unwrap();
        assert!(info.truncated);
        // An owner name pointing at itself, or forwards: refused.
        let owner = 12 + q.len() - 12 - 23;
        for to in [owner, owner + 2] {
            let mut lp = rep.clone();
            lp[owner + 1] = to as u8;
            assert!(reply_info(&lp).is_none());
        }
        let servfail = error_reply(&pq, rcode::SERVFAIL, &mut out);
        let info = reply_info(&out[..servfail]).unwrap();
        assert_eq!((info.rcode, info.ancount, info.qdcount), (2, 0, 1));
    }

    #[test]
    fn tcp_frames() {
        assert_eq!(take_frame(&[]), Frame::Need(2));
        assert_eq!(take_frame(&[0]), Frame::Need(2));
        assert_eq!(take_frame(&[0, 3, 1]), Frame::Need(5));
        assert_eq!(take_frame(&[0, 2, 1, 2, 9]), Frame::Message(&[1, 2], 4));
        assert_eq!(take_frame(&[0, 0]), Frame::Message(&[], 2));
        let mut out = [0u8; 8];
        assert_eq!(write_frame(&[7, 8, 9], &mut out), Some(5));
        assert_eq!(&out[..5], &[0, 3, 7, 8, 9]);
        assert_eq!(write_frame(&[0; 7], &mut out), None);
        let big = vec![0u8; 65536];
        let mut o2 = vec![0u8; 70000];
        assert_eq!(write_frame(&big, &mut o2), None);
    }

    #[test]
    fn small_out_buffers_never_panic() {
        let q = query("host1.example", rtype::A, true);
        for n in 0..80 {
            let mut out = vec![0u8; n];
            let (v, _) = respond(&q, &mut Fake, false, false, &mut out);
            if let Verdict::Reply { len, .. } = v {
                assert!(len <= n);
                reply_info(&out[..len]).unwrap();
            }
        }
    }
}
