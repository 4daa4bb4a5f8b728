//! Decode queue messages that Debian's 6.1 kernel really sent to cthelperd (recorded
//! with the hidden `--record-queue` option by tests/data/netlink/record-ftp-loopback.sh:
//! curl PORT/EPSV/EPRT transfers over IPv4 and IPv6 loopback with the ftp helper), and
//! run the daemon's pure packet path over them.

use cthelperd::config::Config;
use cthelperd::daemon::{Skip, examine, slots_from_config};
use cthelperd::model::{Family, IPPROTO_TCP};
use cthelperd::netlink::ctnetlink::parse_conntrack;
use cthelperd::netlink::msg::Messages;
use cthelperd::netlink::queue::parse_packet;
use cthelperd::private_cache::PrivateCache;

fn datagrams(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "recording ends mid-record");
    out
}

const CAPTURE: &[u8] = include_bytes!("data/netlink/queue-ftp-loopback.bin");

#[test]
#[cfg_attr(
    target_endian = "big",
    ignore = "recorded from a little-endian kernel: netlink headers are in host byte order"
)]
fn every_recorded_packet_decodes() {
    let dgrams = datagrams(CAPTURE);
    assert!(dgrams.len() > 100, "{} datagrams", dgrams.len());
    let (mut v4, mut v6) = (0, 0);
    for d in &dgrams {
        let msgs: Vec<_> = Messages::new(d).collect();
        assert_eq!(msgs.len(), 1, "one packet per datagram");
        let msg = msgs[0].unwrap();
        let pkt = parse_packet(&msg).unwrap();
        assert_eq!(pkt.queue, 0);
        assert!(!pkt.is_truncated());
        let ct = parse_conntrack(
            pkt.ct
                .expect("CONNTRACK flag set: every packet has NFQA_CT"),
        )
        .unwrap();
        assert_eq!(ct.helper_name, Some("ftp"));
        assert_eq!(ct.conntrack.orig.proto, IPPROTO_TCP);
        assert_eq!(ct.conntrack.orig.dst_port, 21);
        // The kernel hands over the whole private area it keeps for the helper.
        assert_eq!(ct.help_info.map(|i| i.len()), Some(32));
        assert!(pkt.ct_info.is_some());
        match Family::of(&ct.conntrack.orig.src) {
            Family::Ipv4 => v4 += 1,
            Family::Ipv6 => v6 += 1,
        }
        let ip = cthelperd::wire::dissect(pkt.payload).unwrap();
        assert!(ip.src_port == 21 || ip.dst_port == 21);
    }
    assert!(v4 > 0 && v6 > 0, "v4 {v4} v6 {v6}");
}

#[test]
#[cfg_attr(
    target_endian = "big",
    ignore = "recorded from a little-endian kernel: netlink headers are in host byte order"
)]
fn replaying_the_recording_asks_for_the_expectations_the_daemon_created() {
    // Recorded when the default queue_base was 0 (every packet says queue 0).
    let cfg = Config {
        queue_base: 0,
        ..Config::default()
    };
    let mut slots = slots_from_config(&cfg).unwrap();
    let mut expectations = Vec::new();
    for d in datagrams(CAPTURE) {
        let msg = Messages::new(d).next().unwrap().unwrap();
        let pkt = parse_packet(&msg).unwrap();
        let ex = match examine(
            &mut slots,
            &mut PrivateCache::new(),
            &pkt,
            std::time::Instant::now(),
        ) {
            Ok(ex) => ex,
            // Pure ACKs and SYNs: the helper never runs on them.
            Err(Skip::NoPayload(_)) => continue,
            Err(e) => panic!("{e:?}"),
        };
        assert!(!ex.plan.parse_error);
        assert!(ex.plan.refusals.is_empty());
        expectations.extend(ex.plan.expectations.iter().map(|e| e.exp));
    }
    // The daemon logged six (PORT on IPv4, EPSV and EPRT on IPv6; on loopback each
    // packet passes the helper hook twice, on output and on input).
    let ports: Vec<u16> = expectations.iter().map(|e| e.dst_port).collect();
    assert_eq!(ports, [45725, 45725, 43001, 43001, 38359, 38359]);
    assert!(
        expectations
            .iter()
            .all(|e| e.src_port.is_none() && e.proto == IPPROTO_TCP)
    );
}
