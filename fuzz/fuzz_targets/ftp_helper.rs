//! Arbitrary payload, private data, direction, sequence number, address family and NAT
//! through the FTP helper: it must never panic, must leave private data decodable, must
//! never expect a connection to an address other than the announcer's (or, under NAT,
//! its translated address), and its rewrites must apply to the packet without panicking.
//! Issue #11's oracle: an expectation only when the segment's first line is the
//! announcement (never from a later line, e.g. one an echoing server was made to send),
//! at most one per segment, and no port below 1024 unless allowed.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cthelperd::model::{Conntrack, Direction, Tuple, status};
use cthelperd::helpers::ftp::{Ftp, LOW_PORT_LIMIT, PRIVATE_LEN, State};
use cthelperd::helpers::{Helper, Packet, Policy, Replacement, Store, Transport};
use cthelperd::nat;
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
    // flags & 16: the client is masqueraded behind the router's outside address;
    // otherwise flags & 32: the server is reached through a port forward on it.
    let masqueraded = flags & 16 != 0;
    let forwarded = !masqueraded && flags & 32 != 0;
    let nated = masqueraded || forwarded;
    // flags & 64: the helper's policy allows low ports.
    let policy = Policy {
        allow_low_ports: flags & 64 != 0,
        ..Policy::default()
    };
    let public = match cli {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100)),
    };
    let ct = Conntrack {
        orig: Tuple {
            src: cli,
            dst: if forwarded { public } else { srv },
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        },
        reply: Tuple {
            src: srv,
            dst: if masqueraded { public } else { cli },
            proto: 6,
            src_port: 21,
            dst_port: 40000,
        },
        status: if flags & 4 == 0 {
            status::SEEN_REPLY
        } else {
            0
        } | if masqueraded { status::SRC_NAT } else { 0 }
            | if forwarded { status::DST_NAT } else { 0 },
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
    let mut store = Store::default();
    let plan = Ftp.analyse(&pkt, &ct, &mut private, &mut store, policy);
    // The first line of the segment (up to its '\n', or all of it).
    let first_line = match payload.iter().position(|&b| b == b'\n') {
        Some(lf) => &payload[..lf],
        None => payload,
    };
    if !plan.expectations.is_empty() {
        assert_eq!(plan.expectations.len(), 1, "one announcement per segment");
        let announced = match dir {
            Direction::Original => {
                first_line.len() >= 4
                    && (first_line[..4].eq_ignore_ascii_case(b"PORT")
                        || first_line[..4].eq_ignore_ascii_case(b"EPRT"))
            }
            Direction::Reply => first_line.starts_with(b"227 ") || first_line.starts_with(b"229 "),
        };
        assert!(announced, "expectation from a line that is not the first: {payload:?}");
    }
    for rw in &plan.rewrites {
        assert!(rw.end <= first_line.len(), "rewrite outside the first line");
    }
    for e in plan.expectations.iter().map(|e| &e.exp) {
        if !policy.allow_low_ports {
            assert!(e.dst_port >= LOW_PORT_LIMIT, "low port announced and expected");
        }
        assert_eq!(
            e.dst,
            ct.tuple(dir.opposite()).dst,
            "expectation towards a third party"
        );
        assert_eq!(e.src, ct.tuple(dir.opposite()).src);
        assert_ne!(e.dst_port, 0);
        match e.nat {
            Some(n) => {
                assert!(nated);
                assert_eq!(n.saved_addr, ct.tuple(dir).src, "NAT back to a third party");
            }
            None => assert!(!nated),
        }
    }
    let mut end = 0;
    for rw in &plan.rewrites {
        assert!(nated && rw.start >= end && rw.start <= rw.end && rw.end <= payload.len());
        match rw.with {
            Replacement::Endpoint { expectation, .. } => {
                assert!(expectation < plan.expectations.len())
            }
            other => panic!("FTP rewrites only endpoints: {other:?}"),
        }
        end = rw.end;
    }
    if !plan.rewrites.is_empty() {
        // The rewrites applied to the packet carrying this payload, with an arbitrary port.
        let mut buf = vec![0u8; 2048];
        if let Some(len) = tcp_packet(&mut buf, t.src, t.dst, payload) {
            let port = u16::from_be_bytes([seq.to_be_bytes()[0], seq.to_be_bytes()[3]]);
            if let Ok(r) = nat::apply_rewrites(&mut buf, len, &plan, |_| Some(port)) {
                let d = cthelperd::wire::dissect(&buf[..r.len]).expect("rewritten packet dissects");
                assert_eq!(d.l4_offset + 20 + d.payload.len(), r.len);
            }
        }
    }
    // What we wrote back must decode to itself.
    let st = State::decode(&private);
    let mut again = private;
    assert!(!st.encode(&mut again) || plan.private_changed || private == *priv_in);
    // And a second pass over the same bytes must not panic either.
    let _ = Ftp.analyse(&pkt, &ct, &mut private, &mut store, policy);
});

/// An IPv4 or IPv6 packet with a 20-byte TCP header and `payload`, in `buf`.
fn tcp_packet(buf: &mut [u8], src: IpAddr, dst: IpAddr, payload: &[u8]) -> Option<usize> {
    let ip_len = if src.is_ipv4() { 20 } else { 40 };
    let len = ip_len + 20 + payload.len();
    if len > buf.len() {
        return None;
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf[0] = 0x45;
            buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            buf[8] = 64;
            buf[9] = 6;
            buf[12..16].copy_from_slice(&s.octets());
            buf[16..20].copy_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            buf[0] = 0x60;
            buf[4..6].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            buf[6] = 6;
            buf[7] = 64;
            buf[8..24].copy_from_slice(&s.octets());
            buf[24..40].copy_from_slice(&d.octets());
        }
        _ => return None,
    }
    let tcp = &mut buf[ip_len..];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&21u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    tcp[20..20 + payload.len()].copy_from_slice(payload);
    Some(len)
}
