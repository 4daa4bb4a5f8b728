//! The SIP helper on a TRANSLATED signalling connection (issue #14): arbitrary bytes as
//! the UDP datagrams or TCP segments of one masqueraded or port-forwarded SIP connection
//! through `Sip.analyse` (the helper's real store, private data carried from packet to
//! packet), then each plan's rewrites applied to a real IP packet with
//! `nat::apply_rewrites`, as the daemon does before the verdict.
//!
//! Layout: `[flags u8][A][B][P][mapped u16 BE][private 32?]` then packets
//! `[ctl u8][len u16 BE][delta i8?][payload]...`. A, B, P: addresses (4 bytes each, 16
//! with flags bit 0: IPv6; from the input so that SDP, Via and Contact text can name
//! them). Flags bit 1: TCP, else UDP; bit 2: the 32 bytes after `mapped` are the initial
//! private data; bit 3: `sip_direct_media` off; bit 4: `sip_direct_signalling` off; bit
//! 5: port forward (DST_NAT): original `A:mapped -> P:5060` (an outside phone calls the
//! public address), reply `B:5060 -> A:mapped` (the inside PBX B answers); else
//! masquerade (SRC_NAT): original `A:5060 -> B:5060` (the inside phone A), reply
//! `B:5060 -> P:mapped` (the server B answers A's public endpoint); bit 6: over IPv4 a
//! UDP checksum of 0 (none), which must stay 0. Packets as in `sip_helper`: ctl bit 0:
//! reply direction; TCP only, bit 1: a `[delta i8]` byte follows `len` and shifts the
//! segment's sequence number from the next in-order one; bits 2..=7: the port search
//! moved expectation `i` by 2 if bit `2 + i % 6` is set (else it got its announced port).
//! Seeds: `fuzz/seed.sh` (the sip_helper seeds of the corpus SIP connections and RFC 4475
//! messages, each as a masquerade and as a port forward).
//!
//! Oracles, for every packet: no panic; every media expectation is UDP to the announcing
//! sender's address as the other side knows it (`ct.tuple(!dir).dst`), from the other
//! end's real address (any with direct media off), on a port >= 1024, and carries
//! `ExpectNat { dir: !dir, saved_addr: the sender's real address, saved_port: its
//! announced port }` exactly when that address is not the sender's real one; a
//! registration goes to the phone (the other end) as the registrar knows it
//! (`ct.tuple(dir).dst`), from the registrar, NAT back to the phone's real address (on
//! its signalling port when the contact named the translated one) exactly when
//! translated; no expectation or deletion names an address outside the connection.
//! Rewrites: in payload order, not overlapping, inside the payload; a literal names only
//! the other direction's endpoints (`tuple(!dir).dst` forward, `tuple(!dir).src` back,
//! or one of their ports) and replaces text naming one of this direction's (`tuple(dir)`
//! addresses and ports); an endpoint rewrite replaces the announced port (digits) of
//! a media expectation with a NAT section; a length field replaces digits before its
//! body and no rewrite straddles the body's bounds; every media expectation with a NAT
//! section is announced by an endpoint rewrite (an RTCP one by its RTP's), so nothing
//! is opened on the public address for a message passed unchanged; a UDP datagram the
//! plan says is `unrewritten` has no rewrite and no expectation with a NAT section (a
//! TCP segment may carry other messages: without rewrites, no NAT media expectation).
//! Applying the rewrites to an IPv4/IPv6 + UDP/TCP packet in a 64 KiB buffer never fails
//! (NoRoom/TooLong only for a packet that could outgrow it, impossible below ~63 KiB);
//! the result dissects, its IP/UDP lengths and IP/UDP/TCP checksums verify (computed
//! here), the headers are unchanged, the payload is exactly the original with each range
//! replaced by its text (a length field: its body's length after the rewrites inside it);
//! a UDP datagram that parsed as a SIP message with a Content-Length still parses, with a
//! Content-Length equal to the length of its body when the original's was. And, as in
//! `sip_helper`: `sip_timeout` on UDP only, `private_changed` exactly when the private
//! data changed, and what was written decodes to itself.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cthelperd::helpers::sip::message::{Framing, Message, Name};
use cthelperd::helpers::sip::{PRIVATE_LEN, Sip};
use cthelperd::helpers::{
    Helper, MAX_REWRITES_PER_PACKET, Packet, Pairing, Plan, Policy, PortText, Replacement, Store,
    Transport, registry,
};
use cthelperd::model::{
    Conntrack, Direction, ExpectNat, IPPROTO_TCP, IPPROTO_UDP, Tuple, expect_flags, status,
};
use cthelperd::nat::{self, MAX_PACKET_LEN, NatError, REPLACEMENT_MAX};
use libfuzzer_sys::fuzz_target;

#[path = "common/segments.rs"]
mod segments;
use segments::{Segment, Segments};

/// The conntrack id the store keys this connection's state by.
const CT_ID: u32 = 7;
/// Lowest media port the helper may open (media::MIN_MEDIA_PORT).
const MIN_MEDIA_PORT: u16 = 1024;
const SIP_PORT: u16 = 5060;
/// Expectation classes (the kernel's nf_conntrack_sip order).
const SIGNALLING: u32 = 0;
const IMAGE: u32 = 3;
/// The daemon's send buffer: the largest packet a verdict may carry.
const BUF_LEN: usize = MAX_PACKET_LEN;

thread_local! {
    // Allocated once (the pool is 64 KiB); emptied of this connection's state before
    // every input, so runs are independent.
    static STORE: RefCell<Store> = RefCell::new(Store::for_helper(&registry::SIP));
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; BUF_LEN]);
}

/// What stays the same for the whole input.
#[derive(Clone, Copy)]
struct Setup {
    policy: Policy,
    /// Over IPv4, UDP datagrams carry no checksum (0).
    zero_udp_checksum: bool,
}

fn addresses(rest: &mut &[u8], v6: bool) -> Option<[IpAddr; 3]> {
    let n = if v6 { 16 } else { 4 };
    if rest.len() < 3 * n {
        return None;
    }
    let (head, tail) = rest.split_at(3 * n);
    *rest = tail;
    let addr = |b: &[u8]| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()))
        } else {
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap()))
        }
    };
    Some([
        addr(&head[..n]),
        addr(&head[n..2 * n]),
        addr(&head[2 * n..]),
    ])
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let Some([a, b, public]) = addresses(&mut rest, flags & 1 != 0) else {
        return;
    };
    let Some((mapped, tail)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let mapped = u16::from_be_bytes(*mapped);
    rest = tail;
    let tcp = flags & 2 != 0;
    let mut policy = Policy::default();
    policy.sip.direct_media = flags & 8 == 0;
    policy.sip.direct_signalling = flags & 16 == 0;
    let setup = Setup {
        policy,
        zero_udp_checksum: flags & 64 != 0 && flags & 1 == 0,
    };
    let mut private = [0u8; PRIVATE_LEN];
    if flags & 4 != 0 {
        let Some((init, tail)) = rest.split_first_chunk::<PRIVATE_LEN>() else {
            return;
        };
        private = *init;
        rest = tail;
    }
    let proto = if tcp { IPPROTO_TCP } else { IPPROTO_UDP };
    let (orig, reply, nat_status) = if flags & 32 == 0 {
        // Masquerade: the inside phone A talks to the server B, which answers A's public
        // endpoint.
        let orig = Tuple {
            src: a,
            dst: b,
            proto,
            src_port: SIP_PORT,
            dst_port: SIP_PORT,
        };
        let reply = Tuple {
            src: b,
            dst: public,
            proto,
            src_port: SIP_PORT,
            dst_port: mapped,
        };
        (orig, reply, status::SRC_NAT)
    } else {
        // Port forward: the outside phone A calls the public address, forwarded to the
        // inside PBX B.
        let orig = Tuple {
            src: a,
            dst: public,
            proto,
            src_port: mapped,
            dst_port: SIP_PORT,
        };
        let reply = Tuple {
            src: b,
            dst: a,
            proto,
            src_port: SIP_PORT,
            dst_port: mapped,
        };
        (orig, reply, status::DST_NAT)
    };
    let mut ct = Conntrack {
        orig,
        reply,
        status: nat_status,
        id: Some(CT_ID),
        zone: None,
    };
    STORE.with_borrow_mut(|store| {
        store.remove_conntrack(CT_ID);
        if let Some(pool) = store.streams.as_mut() {
            pool.forget(CT_ID);
        }
        for Segment {
            ctl,
            dir,
            transport,
            payload,
        } in Segments::new(rest, tcp)
        {
            if dir == Direction::Reply {
                ct.status |= status::SEEN_REPLY;
            }
            one_packet(
                &ct,
                dir,
                transport,
                payload,
                ctl >> 2,
                &mut private,
                store,
                setup,
            );
            ct.status |= status::CONFIRMED;
        }
    });
});

#[allow(clippy::too_many_arguments)]
fn one_packet(
    ct: &Conntrack,
    dir: Direction,
    transport: Transport,
    payload: &[u8],
    moved: u8,
    private: &mut [u8; PRIVATE_LEN],
    store: &mut Store,
    setup: Setup,
) {
    let policy = setup.policy;
    // At the helper hook the packet is translated: it carries the other direction's
    // tuple reversed.
    let seen = ct.tuple(dir.opposite()).reversed();
    let pkt = Packet {
        dir,
        src: seen.src,
        dst: seen.dst,
        src_port: seen.src_port,
        dst_port: seen.dst_port,
        transport,
        payload,
    };
    let before = *private;
    let plan = Sip.analyse(&pkt, ct, private, store, policy);
    let here = ct.tuple(dir);
    let there = ct.tuple(dir.opposite());
    // The sender's real address, and the one the other side knows it by.
    let (real, public) = (here.src, there.dst);
    let ends = [ct.orig.src, ct.orig.dst, ct.reply.src, ct.reply.dst];
    let expected_timeout = match transport {
        Transport::Udp => Some(policy.sip.timeout),
        Transport::Tcp { .. } => None,
    };
    assert_eq!(plan.master_timeout, expected_timeout);
    for e in &plan.expectations {
        let x = &e.exp;
        assert_eq!(x.src_port, None, "{x:?}");
        assert!(
            ends.contains(&x.dst),
            "expectation to a third address: {x:?}"
        );
        assert!(
            ends.contains(&x.src) || x.any_source(),
            "expectation from a third address: {x:?}"
        );
        if x.class == SIGNALLING {
            // A registration: the sender is the registrar answering the phone (the other
            // end), which it knows by `here.dst`.
            assert_eq!(
                x.dst, here.dst,
                "registration not to the phone as the registrar knows it: {x:?}"
            );
            if policy.sip.direct_signalling {
                assert_eq!(
                    x.src, here.src,
                    "registration not from the registrar: {x:?}"
                );
            } else {
                assert!(x.any_source(), "{x:?}");
            }
            let phone = there.src;
            let want = (x.dst != phone).then_some(ExpectNat {
                dir,
                saved_addr: phone,
                saved_port: if x.dst_port == here.dst_port {
                    there.src_port
                } else {
                    x.dst_port
                },
            });
            assert_eq!(x.nat, want, "registration's NAT: {x:?}");
            assert_eq!(x.helper, Some("sip"), "{x:?}");
            assert_eq!(x.flags, expect_flags::PERMANENT, "{x:?}");
            assert_eq!(e.pairing, Pairing::Single, "{e:?}");
            assert!(x.proto == IPPROTO_UDP || x.proto == IPPROTO_TCP, "{x:?}");
            assert_ne!(x.dst_port, 0, "{x:?}");
        } else {
            assert_eq!(
                x.dst, public,
                "media not to the sender as the other side knows it: {x:?}"
            );
            if policy.sip.direct_media {
                assert_eq!(x.src, there.src, "media not from the other end: {x:?}");
            } else {
                assert!(x.any_source(), "{x:?}");
            }
            let want = (public != real).then_some(ExpectNat {
                dir: dir.opposite(),
                saved_addr: real,
                saved_port: x.dst_port,
            });
            assert_eq!(x.nat, want, "media's NAT: {x:?}");
            assert_eq!(x.helper, None, "{x:?}");
            assert!((1..=IMAGE).contains(&x.class), "{x:?}");
            assert_eq!(x.proto, IPPROTO_UDP, "{x:?}");
            assert_eq!(x.flags, 0, "{x:?}");
            assert!(x.dst_port >= MIN_MEDIA_PORT, "low media port: {x:?}");
            assert!(e.timeout.is_none(), "{e:?}");
        }
    }
    // A Pairing::Rtp is directly followed by its Rtcp, on the next port.
    for (i, e) in plan.expectations.iter().enumerate() {
        if e.pairing == Pairing::Rtp {
            let rtcp = plan.expectations.get(i + 1).expect("RTP without its RTCP");
            assert_eq!(rtcp.pairing, Pairing::Rtcp);
            assert_eq!(rtcp.exp.dst_port, e.exp.dst_port.wrapping_add(1));
            assert_eq!((rtcp.exp.src, rtcp.exp.dst), (e.exp.src, e.exp.dst));
        }
    }
    for d in &plan.deletions {
        assert!(
            (ends.contains(&d.src) || d.src.is_unspecified()) && ends.contains(&d.dst),
            "deletion of another connection's expectation: {d:?}"
        );
    }
    check_rewrites(&plan, payload, here, there);
    if plan.unrewritten {
        let nat_expectations = plan.expectations.iter().filter(|e| e.exp.nat.is_some());
        match transport {
            // One message per datagram: passed unchanged, it opened nothing through the NAT.
            Transport::Udp => {
                assert!(
                    plan.rewrites.is_empty(),
                    "unrewritten datagram with rewrites"
                );
                assert_eq!(
                    nat_expectations.count(),
                    0,
                    "NAT expectation of an unrewritten datagram"
                );
            }
            // A segment may carry other messages: a registration (announced by the
            // registrar, rewritten or not) may come from one of them.
            Transport::Tcp { .. } => {
                if plan.rewrites.is_empty() {
                    assert!(
                        nat_expectations.clone().all(|e| e.exp.class == SIGNALLING),
                        "NAT media expectation of an unrewritten segment"
                    );
                }
            }
        }
    }
    assert_eq!(
        plan.private_changed,
        *private != before,
        "private_changed does not say whether it changed"
    );
    if !plan.rewrites.is_empty() {
        apply(&plan, &pkt, payload, moved, setup);
    }
    // What was written decodes to itself: handed back with nothing to parse, it stays.
    let mut again = *private;
    let probe = Packet {
        transport: Transport::Udp,
        payload: &[],
        ..pkt
    };
    let idle = Sip.analyse(&probe, ct, &mut again, store, policy);
    assert_eq!(
        again, *private,
        "private data does not decode to what was written"
    );
    assert!(!idle.private_changed && idle.expectations.is_empty() && idle.deletions.is_empty());
    assert!(idle.rewrites.is_empty() && !idle.unrewritten);
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// A literal's text: (address, port) with either part absent.
fn endpoint_of(text: &[u8]) -> Option<(Option<IpAddr>, Option<u16>)> {
    let s = std::str::from_utf8(text).ok()?;
    if let Some(inner) = s.strip_prefix('[') {
        let (v6, after) = inner.split_once(']')?;
        let addr = IpAddr::V6(v6.parse().ok()?);
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((Some(addr), port));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Some((Some(addr), None));
    }
    if let Some((v4, port)) = s.split_once(':') {
        return Some((Some(IpAddr::V4(v4.parse().ok()?)), Some(port.parse().ok()?)));
    }
    Some((None, Some(s.parse().ok()?)))
}

/// The plan's rewrites, before they are applied.
fn check_rewrites(plan: &Plan, payload: &[u8], here: &Tuple, there: &Tuple) {
    let mut end = 0;
    let mut named = [false; cthelperd::helpers::MAX_EXPECTATIONS_PER_PACKET];
    for rw in &plan.rewrites {
        assert!(
            rw.start >= end && rw.start <= rw.end && rw.end <= payload.len(),
            "rewrite out of order or outside the payload: {rw:?} after {end}, payload {}",
            payload.len()
        );
        end = rw.end;
        let original = &payload[rw.start..rw.end];
        match rw.with {
            Replacement::Literal(span) => {
                let text = plan.text_of(span);
                assert!(!text.is_empty() && text.len() <= REPLACEMENT_MAX, "{rw:?}");
                let Some((addr, port)) = endpoint_of(text) else {
                    panic!(
                        "literal is no endpoint: {:?}",
                        String::from_utf8_lossy(text)
                    );
                };
                // Forward to how the other side knows the sender, or back to the real
                // endpoint of the other side.
                if let Some(addr) = addr {
                    assert!(
                        addr == there.dst || addr == there.src,
                        "literal names a third address: {addr} ({rw:?})"
                    );
                }
                if let Some(port) = port {
                    assert!(
                        port == there.dst_port || port == there.src_port,
                        "literal names a third port: {port} ({rw:?})"
                    );
                }
                // And what it replaces names one of this direction's endpoints: the
                // sender's real one, or the other side's as the sender addressed it.
                // (A Via received= value is read with any brackets around it trimmed.)
                let old = std::str::from_utf8(original)
                    .ok()
                    .map(|t| t.trim_matches(|c: char| c == ' ' || c == '\t'))
                    .and_then(|t| {
                        endpoint_of(t.as_bytes()).or_else(|| {
                            let bare = t.trim_matches(|c| c == '[' || c == ']');
                            Some((Some(bare.parse().ok()?), None))
                        })
                    });
                let Some((old_addr, old_port)) = old else {
                    panic!(
                        "literal replaces text that is no endpoint: {:?} ({rw:?})",
                        String::from_utf8_lossy(original)
                    );
                };
                if let Some(a) = old_addr {
                    assert!(
                        a == here.src || a == here.dst,
                        "literal replaces a third address: {a} ({rw:?})"
                    );
                }
                if let Some(p) = old_port {
                    assert!(
                        p == here.src_port || p == here.dst_port,
                        "literal replaces a third port: {p} ({rw:?})"
                    );
                }
            }
            Replacement::Endpoint {
                expectation,
                spelling,
            } => {
                let e = plan
                    .expectations
                    .get(expectation)
                    .unwrap_or_else(|| panic!("endpoint of a missing expectation: {rw:?}"));
                assert!(
                    e.exp.class != SIGNALLING && e.exp.nat.is_some(),
                    "{e:?} {rw:?}"
                );
                assert_eq!(spelling.port, PortText::Decimal, "{rw:?}");
                assert!(
                    spelling.before.is_empty() && spelling.after.is_empty(),
                    "{rw:?}"
                );
                assert_eq!(
                    digits(original),
                    Some(u32::from(e.exp.dst_port)),
                    "endpoint rewrite of text that is not its announced port: {:?}",
                    String::from_utf8_lossy(original)
                );
                named[expectation] = true;
            }
            Replacement::Length {
                body_start,
                body_end,
            } => {
                assert!(
                    rw.end <= body_start && body_start <= body_end && body_end <= payload.len(),
                    "{rw:?}"
                );
                assert!(
                    (1..=10).contains(&original.len()) && original.iter().all(u8::is_ascii_digit),
                    "length field of {original:?}"
                );
                for other in &plan.rewrites {
                    if matches!(other.with, Replacement::Length { .. }) {
                        assert!(
                            !(body_start..body_end).contains(&other.start),
                            "a length field inside the body of {rw:?}: {other:?}"
                        );
                    }
                    for bound in [body_start, body_end] {
                        assert!(
                            !(other.start < bound && bound < other.end),
                            "{other:?} straddles a bound of {rw:?}"
                        );
                    }
                }
            }
        }
    }
    // What a translated sender announced is opened on its public address only when the
    // message telling the peer so leaves rewritten.
    for (i, e) in plan.expectations.iter().enumerate() {
        if e.exp.class == SIGNALLING || e.exp.nat.is_none() {
            continue;
        }
        let announced = named[i] || (e.pairing == Pairing::Rtcp && i > 0 && named[i - 1]);
        assert!(
            announced,
            "NAT media expectation {i} that no rewrite announces: {plan:?}"
        );
    }
}

/// The port the daemon's search got for expectation `i`.
fn port_of(plan: &Plan, moved: u8, i: usize) -> Option<u16> {
    let announced = plan.expectations.get(i)?.exp.dst_port;
    if moved & (1 << (i % 6)) != 0 {
        Some(announced.checked_add(2).unwrap_or(announced))
    } else {
        Some(announced)
    }
}

/// One's complement sum of `data` (odd length padded with a zero), folded.
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, l4_len: usize) -> u32 {
    let mut acc = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = sum(acc, &[0, proto]);
            acc = sum(acc, &(l4_len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = sum(acc, &(l4_len as u32).to_be_bytes());
            acc = sum(acc, &[0, 0, 0, proto]);
        }
        _ => unreachable!("mixed families"),
    }
    acc
}

/// The packet carrying `pkt`'s payload: IPv4 (20-byte header) or IPv6 (40), then a
/// 20-byte TCP or an 8-byte UDP header, with every length and checksum filled.
fn build(buf: &mut [u8], pkt: &Packet<'_>, setup: Setup) -> Option<(usize, usize)> {
    let ip_len = if pkt.src.is_ipv4() { 20 } else { 40 };
    let (proto, l4_hdr) = match pkt.transport {
        Transport::Tcp { .. } => (IPPROTO_TCP, 20),
        Transport::Udp => (IPPROTO_UDP, 8),
    };
    let l4_len = l4_hdr + pkt.payload.len();
    let len = ip_len + l4_len;
    if len > buf.len() || len > MAX_PACKET_LEN {
        return None;
    }
    let p = &mut buf[..len];
    p.fill(0);
    match (pkt.src, pkt.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40; // DF
            p[8] = 64;
            p[9] = proto;
            p[12..16].copy_from_slice(&s.octets());
            p[16..20].copy_from_slice(&d.octets());
            let c = !(sum(0, &p[..20]) as u16);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            p[6] = proto;
            p[7] = 64;
            p[8..24].copy_from_slice(&s.octets());
            p[24..40].copy_from_slice(&d.octets());
        }
        _ => unreachable!("mixed families"),
    }
    let l4 = &mut p[ip_len..];
    l4[0..2].copy_from_slice(&pkt.src_port.to_be_bytes());
    l4[2..4].copy_from_slice(&pkt.dst_port.to_be_bytes());
    let check_at = match pkt.transport {
        Transport::Tcp { seq, flags } => {
            l4[4..8].copy_from_slice(&seq.to_be_bytes());
            l4[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = flags;
            l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
            16
        }
        Transport::Udp => {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            6
        }
    };
    l4[l4_hdr..].copy_from_slice(pkt.payload);
    if !(setup.zero_udp_checksum && pkt.transport == Transport::Udp) {
        let c = match !(sum(pseudo(pkt.src, pkt.dst, proto, l4_len), l4) as u16) {
            0 if pkt.transport == Transport::Udp => 0xffff,
            c => c,
        };
        l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    }
    Some((len, ip_len + l4_hdr))
}

/// The payload the rewrites should make, spelled here from the plan.
fn expected_payload(plan: &Plan, payload: &[u8], moved: u8) -> Vec<u8> {
    let text = |rw: &cthelperd::helpers::Rewrite| -> Option<Vec<u8>> {
        match rw.with {
            Replacement::Literal(span) => Some(plan.text_of(span).to_vec()),
            Replacement::Endpoint {
                expectation,
                spelling,
            } => {
                let port = port_of(plan, moved, expectation).expect("checked");
                let mut t = plan.text_of(spelling.before).to_vec();
                t.extend_from_slice(port.to_string().as_bytes());
                t.extend_from_slice(plan.text_of(spelling.after));
                Some(t)
            }
            Replacement::Length { .. } => None,
        }
    };
    let texts: Vec<Option<Vec<u8>>> = plan.rewrites.iter().map(text).collect();
    // A body's new length: its old one with every edit inside it (a length field is
    // never inside a body: checked before).
    let body_len = |body_start: usize, body_end: usize| -> usize {
        let mut n = (body_end - body_start) as isize;
        for (rw, t) in plan.rewrites.iter().zip(&texts) {
            if (body_start..body_end).contains(&rw.start) {
                let t = t.as_ref().expect("a length field inside a body");
                n += t.len() as isize - (rw.end - rw.start) as isize;
            }
        }
        usize::try_from(n).expect("a body of negative length")
    };
    let mut out = Vec::with_capacity(payload.len() + 256);
    let mut at = 0;
    for (rw, t) in plan.rewrites.iter().zip(&texts) {
        out.extend_from_slice(&payload[at..rw.start]);
        match (t, rw.with) {
            (Some(t), _) => out.extend_from_slice(t),
            (
                None,
                Replacement::Length {
                    body_start,
                    body_end,
                },
            ) => {
                let n = body_len(body_start, body_end);
                out.extend_from_slice(n.to_string().as_bytes());
            }
            _ => unreachable!(),
        }
        at = rw.end;
    }
    out.extend_from_slice(&payload[at..]);
    out
}

fn verify_checksums(p: &[u8], proto: u8, ip_len: usize, setup: Setup) {
    let (src, dst): (IpAddr, IpAddr) = if ip_len == 20 {
        assert_eq!(
            usize::from(u16::from_be_bytes([p[2], p[3]])),
            p.len(),
            "IPv4 total length"
        );
        assert_eq!(sum(0, &p[..20]), 0xffff, "IPv4 header checksum");
        (
            Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap()).into(),
            Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap()).into(),
        )
    } else {
        assert_eq!(
            usize::from(u16::from_be_bytes([p[4], p[5]])) + 40,
            p.len(),
            "IPv6 payload length"
        );
        (
            Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap()).into(),
            Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap()).into(),
        )
    };
    let l4 = &p[ip_len..];
    if proto == IPPROTO_UDP {
        assert_eq!(
            usize::from(u16::from_be_bytes([l4[4], l4[5]])),
            l4.len(),
            "UDP length"
        );
        if setup.zero_udp_checksum {
            assert_eq!(&l4[6..8], &[0, 0], "a UDP checksum of 0 (none) stays 0");
            return;
        }
        assert_ne!(
            &l4[6..8],
            &[0, 0],
            "UDP checksum 0 over a checksummed datagram"
        );
    }
    assert_eq!(
        sum(pseudo(src, dst, proto, l4.len()), l4),
        0xffff,
        "transport checksum"
    );
}

/// Apply the plan's rewrites to the packet as the daemon does, and check the result.
fn apply(plan: &Plan, pkt: &Packet<'_>, payload: &[u8], moved: u8, setup: Setup) {
    BUF.with_borrow_mut(|buf| {
        let Some((len, headers)) = build(buf, pkt, setup) else {
            return;
        };
        let original = buf[..len].to_vec();
        let d = cthelperd::wire::dissect(&original).expect("the packet built here dissects");
        assert_eq!(d.payload, payload);
        let ip_len = headers
            - if matches!(pkt.transport, Transport::Udp) {
                8
            } else {
                20
            };
        let proto = original[if ip_len == 20 { 9 } else { 6 }];
        verify_checksums(&original, proto, ip_len, setup);
        // Every rewrite can grow the packet by at most one replacement's text.
        let could_outgrow = len + MAX_REWRITES_PER_PACKET * REPLACEMENT_MAX > BUF_LEN;
        let r = match nat::apply_rewrites(buf, len, plan, |i| port_of(plan, moved, i)) {
            Ok(r) => r,
            Err(NatError::NoRoom { needed, available }) if could_outgrow => {
                assert!(needed > available);
                assert_eq!(&buf[..len], &original[..], "changed on error");
                return;
            }
            Err(NatError::TooLong(n)) if could_outgrow => {
                assert!(n > MAX_PACKET_LEN);
                assert_eq!(&buf[..len], &original[..], "changed on error");
                return;
            }
            Err(e) => panic!("rewrites of a packet that parsed failed: {e} ({e:?}); plan {plan:?}"),
        };
        let want = expected_payload(plan, payload, moved);
        let out = &buf[..r.len];
        if !r.changed {
            assert_eq!(r.len, len);
            assert_eq!(out, &original[..], "unchanged but different");
            assert_eq!(
                want, payload,
                "rewrites that change the payload were left out"
            );
            return;
        }
        assert_eq!(r.len, headers + want.len(), "rewritten packet's length");
        let nd = cthelperd::wire::dissect(out).expect("the rewritten packet dissects");
        assert_eq!(
            (
                nd.src,
                nd.dst,
                nd.src_port,
                nd.dst_port,
                nd.transport,
                nd.payload_offset
            ),
            (
                d.src,
                d.dst,
                d.src_port,
                d.dst_port,
                d.transport,
                d.payload_offset
            ),
            "headers changed"
        );
        assert!(
            nd.payload == want.as_slice(),
            "rewritten payload\n{:?}\nis not\n{:?}",
            String::from_utf8_lossy(nd.payload),
            String::from_utf8_lossy(&want)
        );
        // Header fields other than lengths and checksums are as they were.
        let fixed: &[std::ops::Range<usize>] = if ip_len == 20 {
            &[0..2, 4..10, 12..20]
        } else {
            &[0..4, 6..40]
        };
        for f in fixed {
            assert_eq!(
                &out[f.clone()],
                &original[f.clone()],
                "IP header bytes {f:?}"
            );
        }
        let l4_fixed = if proto == IPPROTO_UDP { 0..4 } else { 0..16 };
        assert_eq!(
            &out[ip_len..][l4_fixed.clone()],
            &original[ip_len..][l4_fixed],
            "transport header"
        );
        verify_checksums(out, proto, ip_len, setup);
        if pkt.transport == Transport::Udp {
            sip_still_parses(payload, nd.payload);
        }
    });
}

/// A datagram that was a SIP message with a Content-Length still is one, whose
/// Content-Length states its body's length if the original's did.
fn sip_still_parses(before: &[u8], after: &[u8]) {
    let Ok(m) = Message::parse(before, Framing::Datagram) else {
        return;
    };
    if m.header(Name::ContentLength).is_none() {
        return;
    }
    // A header section grown past what the parser reads is no longer a message to it.
    if after.len() > cthelperd::helpers::sip::message::MAX_HEADER_BYTES {
        return;
    }
    let exact = m.body.end == before.len();
    let n = match Message::parse(after, Framing::Datagram) {
        Ok(n) => n,
        Err(e) => panic!(
            "rewritten datagram no longer parses ({e:?}):\n{:?}\nwas\n{:?}",
            String::from_utf8_lossy(after),
            String::from_utf8_lossy(before)
        ),
    };
    assert!(n.header(Name::ContentLength).is_some());
    if exact {
        assert_eq!(
            n.body.end,
            after.len(),
            "Content-Length no longer the body's length:\n{:?}",
            String::from_utf8_lossy(after)
        );
    }
}
