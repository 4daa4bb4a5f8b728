//! Arbitrary payload, direction, address family and NAT through the TFTP helper: it must
//! never panic, never ask to write private data (it has none), expect at most the
//! server's answer, and only for a request it fully validated.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cthelperd::model::{Conntrack, Direction, IPPROTO_UDP, Tuple, status};
use cthelperd::helpers::tftp::{self, Message, Tftp};
use cthelperd::helpers::{Helper, Packet, Store, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [flags][payload...]; flags bit 0: IPv6, bit 1: reply direction,
    // bit 2: the client is masqueraded (reply destination differs), bit 3: confirmed.
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    let (cli, srv, public) = if flags & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)),
        )
    };
    let (rdst, rport) = if flags & 4 == 0 {
        (cli, 40000)
    } else {
        (public, 61000)
    };
    let ct = Conntrack {
        orig: Tuple {
            src: cli,
            dst: srv,
            proto: IPPROTO_UDP,
            src_port: 40000,
            dst_port: tftp::PORT,
        },
        reply: Tuple {
            src: srv,
            dst: rdst,
            proto: IPPROTO_UDP,
            src_port: tftp::PORT,
            dst_port: rport,
        },
        status: if flags & 8 == 0 { 0 } else { status::CONFIRMED },
        id: None,
        zone: None,
    };
    let dir = if flags & 2 == 0 {
        Direction::Original
    } else {
        Direction::Reply
    };
    let t = ct.tuple(dir);
    let pkt = Packet {
        dir,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        transport: Transport::Udp,
        payload,
    };
    let plan = Tftp.analyse(&pkt, &ct, &mut [], &mut Store::default(), Default::default());
    assert!(!plan.private_changed);
    assert!(plan.refusals.is_empty());
    assert!(plan.expectations.len() <= 1);
    let parsed = tftp::parse(payload);
    if dir == Direction::Reply {
        assert!(plan.expectations.is_empty() && !plan.parse_error);
        return;
    }
    assert_eq!(plan.parse_error, parsed.is_err());
    assert_eq!(
        plan.expectations.len(),
        usize::from(matches!(parsed, Ok(Message::Request(_))))
    );
    for e in plan.expectations.iter().map(|e| &e.exp) {
        assert_eq!((e.src, e.src_port), (srv, None));
        assert_eq!((e.dst, e.dst_port), (rdst, rport));
        assert_eq!(e.proto, IPPROTO_UDP);
    }
});
