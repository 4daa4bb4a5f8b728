//! Arbitrary bytes as the packets of one SIP signalling connection (UDP datagrams, or
//! the segments of a TCP stream in both directions) through `Sip.analyse`, with the
//! helper's real store (dialogs, TCP reassembly pool) and its private data carried from
//! packet to packet as the kernel carries it.
//!
//! Layout: `[flags u8][client address][server address]` (4 bytes each, 16 with flags
//! bit 0: IPv6; from the input, so that SDP c= and Contact addresses in it can be the
//! senders' own; bit 1: TCP, else UDP; bit 2: the 32 bytes after the addresses are the
//! initial private data, else it starts zeroed; bit 3: `sip_direct_media` off; bit 4:
//! `sip_direct_signalling` off), then packets `[ctl u8][len u16
//! BE][payload]...` (ctl bit 0: reply direction; TCP only, bit 1: a `[delta i8]` byte
//! follows `len` and shifts the segment's sequence number from the next in-order one:
//! retransmissions, overlaps and gaps). Seeds: `fuzz/seed.sh` (every SIP connection of
//! the corpus captures with its own addresses, the RFC 4475 messages).
//!
//! Oracles, for every packet: no panic; every media expectation is UDP from the other
//! end of the connection (any address with direct media off) to the sender's own address
//! (the conntrack tuple's source for the packet's direction), never helped, on a port
//! >= 1024, of an audio/video/image class; every registration is a permanent signalling
//! expectation from the registrar (the sender of the 2xx; any address with direct
//! signalling off) to the phone's own address (the other end), helped by `sip`; no
//! expectation names a source port or NAT; every deletion is between the connection's
//! two addresses (or from any address); a UDP packet asks for `sip_timeout`, a TCP one
//! for nothing; the private
//! data the helper wrote decodes to itself (handing it back with nothing to parse
//! leaves it unchanged), and `private_changed` is set exactly when it changed.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cthelperd::helpers::sip::{PRIVATE_LEN, Sip};
use cthelperd::helpers::{Helper, Packet, Pairing, Policy, Store, Transport, registry};
use cthelperd::model::{
    Conntrack, Direction, IPPROTO_TCP, IPPROTO_UDP, Tuple, expect_flags, status,
};
use libfuzzer_sys::fuzz_target;

#[path = "common/segments.rs"]
mod segments;
use segments::{Segment, Segments};

/// The conntrack id the store keys this connection's state by.
const CT_ID: u32 = 7;
/// Lowest media port the helper may open (media::MIN_MEDIA_PORT).
const MIN_MEDIA_PORT: u16 = 1024;
/// Expectation classes (the kernel's nf_conntrack_sip order).
const SIGNALLING: u32 = 0;
const IMAGE: u32 = 3;

thread_local! {
    // Allocated once (the pool is 64 KiB); emptied of this connection's state before
    // every input, so runs are independent.
    static STORE: RefCell<Store> = RefCell::new(Store::for_helper(&registry::SIP));
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let (a, b) = if flags & 1 == 0 {
        let Some(([a, b], tail)) = rest.split_first_chunk::<8>().map(|(ab, t)| {
            let a: [u8; 4] = ab[..4].try_into().unwrap();
            let b: [u8; 4] = ab[4..].try_into().unwrap();
            (
                [IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b))],
                t,
            )
        }) else {
            return;
        };
        rest = tail;
        (a, b)
    } else {
        let Some(([a, b], tail)) = rest.split_first_chunk::<32>().map(|(ab, t)| {
            let a: [u8; 16] = ab[..16].try_into().unwrap();
            let b: [u8; 16] = ab[16..].try_into().unwrap();
            (
                [IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b))],
                t,
            )
        }) else {
            return;
        };
        rest = tail;
        (a, b)
    };
    let tcp = flags & 2 != 0;
    let mut policy = Policy::default();
    policy.sip.direct_media = flags & 8 == 0;
    policy.sip.direct_signalling = flags & 16 == 0;
    let mut private = [0u8; PRIVATE_LEN];
    if flags & 4 != 0 {
        let Some((init, tail)) = rest.split_first_chunk::<PRIVATE_LEN>() else {
            return;
        };
        private = *init;
        rest = tail;
    }
    let orig = Tuple {
        src: a,
        dst: b,
        proto: if tcp { IPPROTO_TCP } else { IPPROTO_UDP },
        src_port: 5060,
        dst_port: 5060,
    };
    let mut ct = Conntrack {
        orig,
        reply: orig.reversed(),
        status: 0,
        id: Some(CT_ID),
        zone: None,
    };
    STORE.with_borrow_mut(|store| {
        store.remove_conntrack(CT_ID);
        if let Some(pool) = store.streams.as_mut() {
            pool.forget(CT_ID);
        }
        for Segment {
            dir,
            transport,
            payload,
            ..
        } in Segments::new(rest, tcp)
        {
            if dir == Direction::Reply {
                ct.status |= status::SEEN_REPLY;
            }
            one_packet(&ct, dir, transport, payload, &mut private, store, policy);
            ct.status |= status::CONFIRMED;
        }
    });
});

fn one_packet(
    ct: &Conntrack,
    dir: Direction,
    transport: Transport,
    payload: &[u8],
    private: &mut [u8; PRIVATE_LEN],
    store: &mut Store,
    policy: Policy,
) {
    let t = ct.tuple(dir);
    let pkt = Packet {
        dir,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        transport,
        payload,
    };
    let before = *private;
    let plan = Sip.analyse(&pkt, ct, private, store, policy);
    let sender = ct.tuple(dir).src;
    let other = ct.tuple(dir.opposite()).src;
    let expected_timeout = match transport {
        Transport::Udp => Some(policy.sip.timeout),
        Transport::Tcp { .. } => None,
    };
    assert_eq!(plan.master_timeout, expected_timeout);
    for e in &plan.expectations {
        let x = &e.exp;
        assert_eq!(x.src_port, None, "{x:?}");
        assert!(x.nat.is_none(), "{x:?}");
        if x.class == SIGNALLING {
            // A registration: the sender is the registrar answering the phone, the
            // other end; calls for the phone come from the registrar.
            assert_eq!(x.dst, other, "registration for a third party: {x:?}");
            if policy.sip.direct_signalling {
                assert_eq!(x.src, sender, "registration not from the registrar: {x:?}");
            } else {
                assert!(x.any_source(), "{x:?}");
            }
            assert_eq!(x.helper, Some("sip"), "{x:?}");
            assert_eq!(x.flags, expect_flags::PERMANENT, "{x:?}");
            assert_eq!(e.pairing, Pairing::Single, "{e:?}");
            assert!(x.proto == IPPROTO_UDP || x.proto == IPPROTO_TCP, "{x:?}");
            assert_ne!(x.dst_port, 0, "{x:?}");
        } else {
            assert_eq!(x.dst, sender, "media to a third party: {x:?}");
            if policy.sip.direct_media {
                assert_eq!(x.src, other, "media not from the other end: {x:?}");
            } else {
                assert!(x.any_source(), "{x:?}");
            }
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
        let ends = [sender, other];
        assert!(
            (ends.contains(&d.src) || d.src.is_unspecified()) && ends.contains(&d.dst),
            "deletion of another connection's expectation: {d:?}"
        );
    }
    assert!(plan.rewrites.is_empty(), "rewrites without NAT");
    assert_eq!(
        plan.private_changed,
        *private != before,
        "private_changed does not say whether it changed"
    );
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
}
