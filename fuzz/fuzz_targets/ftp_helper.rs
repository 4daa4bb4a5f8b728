//! Arbitrary payload, private data, direction, sequence number and address family
//! through the FTP helper: it must never panic, must leave private data decodable, and
//! must never expect a connection to an address other than the announcer's.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cthelperd::conntrack::{Conntrack, Direction, Tuple, status};
use cthelperd::helpers::ftp::{Ftp, PRIVATE_LEN, State};
use cthelperd::helpers::{Helper, Packet, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Layout: [flags][seq: 4][private: 32][payload...]
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((seq, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let Some((priv_in, payload)) = rest.split_first_chunk::<PRIVATE_LEN>() else {
        return;
    };
    let (cli, srv) = if flags & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20)),
        )
    };
    let ct = Conntrack {
        orig: Tuple {
            src: cli,
            dst: srv,
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        },
        reply: Tuple {
            src: srv,
            dst: cli,
            proto: 6,
            src_port: 21,
            dst_port: 40000,
        },
        status: if flags & 4 == 0 {
            status::SEEN_REPLY
        } else {
            0
        },
        id: None,
        zone: None,
    };
    let dir = if flags & 2 == 0 {
        Direction::Original
    } else {
        Direction::Reply
    };
    let seq = u32::from_be_bytes(*seq);
    let mut private = *priv_in;
    if flags & 8 != 0 {
        // Also start from a state where this segment is at a line start, so the parsers
        // are reached with arbitrary input rather than only through valid private data.
        let mut st = State::decode(&private);
        st.record_line_start(dir, seq);
        st.encode(&mut private);
    }
    let t = ct.tuple(dir);
    let pkt = Packet {
        dir,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        transport: Transport::Tcp { seq, flags: 0x18 },
        payload,
    };
    let action = Ftp.process(&pkt, &ct, &mut private);
    for e in &action.expectations {
        assert_eq!(
            e.dst,
            ct.tuple(dir).src,
            "expectation towards a third party"
        );
        assert_eq!(e.src, ct.tuple(dir.opposite()).src);
        assert_ne!(e.dst_port, 0);
    }
    // What we wrote back must decode to itself.
    let st = State::decode(&private);
    let mut again = private;
    assert!(!st.encode(&mut again) || action.private_changed || private == *priv_in);
    // And a second pass over the same bytes must not panic either.
    let _ = Ftp.process(&pkt, &ct, &mut private);
});
