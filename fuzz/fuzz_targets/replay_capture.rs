//! Arbitrary bytes as a capture file through the capture reader, reassembly and tunnels,
//! the connection tracking and every built-in helper, and the text/JSON rendering: replay
//! reads files other people captured, so none of this may panic, whatever the file holds.
//! The same bytes also as a sequence of IP packets (`[len u16 BE][packet]...`) straight
//! into `replay::ingress`, so that fragments and tunnels are reached without a capture
//! container around them.
#![no_main]

use std::borrow::Cow;

use cthelperd::config::Config;
use cthelperd::replay::ingress::{Ingress, Seen};
use cthelperd::replay::{self, capture, output, reassembly};
use libfuzzer_sys::fuzz_target;

/// IPv6's fixed header, which its payload length does not count.
const IPV6_HEADER_LEN: usize = 40;

fuzz_target!(|data: &[u8]| {
    let rules = replay::rules_from_config(&Config::default());
    let mut sink = Vec::new();
    // The streaming path the CLI takes (events up to the first bad record)...
    let _ = replay::cli::replay_to(data, &rules, false, &mut sink);
    let _ = replay::cli::replay_to(data, &rules, true, &mut sink);
    // ...and the collecting one, whose error must name a record inside the file.
    match replay::replay(data, &rules) {
        Ok(r) => {
            let s = &r.summary;
            for ev in &r.events {
                assert!(ev.frame >= 1 && ev.frame <= s.frames);
                let _ = output::text_line(ev);
                let _ = output::json_line(ev);
            }
            // Every dropped fragment is listed once, with its reason, in frame order.
            assert_eq!(s.fragments.len(), s.fragments_dropped.total());
            assert!(s.fragments.windows(2).all(|w| w[0] <= w[1]));
            assert!(s.fragments.iter().all(|f| (1..=s.frames).contains(f)));
            assert!(s.decapsulated <= s.frames);
        }
        Err(e) => assert!(e.offset <= data.len()),
    }
    if let Ok(cap) = capture::Capture::new(data) {
        for rec in cap.flatten() {
            assert!(rec.offset < data.len());
            let _ = capture::l3(rec.linktype, rec.data);
        }
    }
    ip_packets(data);
});

/// `data` as `[len u16 BE][packet]...` through reassembly and tunnels.
fn ip_packets(data: &[u8]) {
    let mut ingress = Ingress::new();
    let mut rest = data;
    let mut frame = 0;
    let (mut fragments, mut whole) = (0usize, 0usize);
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        frame += 1;
        // A clock that goes forwards and back, to reach the timeouts.
        let ts_ns = (frame as u64 % 7) * reassembly::IPV4_TIMEOUT_NS / 2;
        match ingress.packet(frame, ts_ns, packet) {
            Seen::Packet(Cow::Borrowed(p)) => {
                // Out of the frame itself: a slice of it, nothing copied.
                let range = packet.as_ptr_range();
                assert!(p.is_empty() || range.contains(&p.as_ptr()));
                assert!(p.len() <= packet.len());
                whole += 1;
                let _ = cthelperd::wire::dissect(p);
            }
            Seen::Packet(Cow::Owned(p)) => {
                assert!(p.len() <= reassembly::MAX_DATAGRAM_LEN + IPV6_HEADER_LEN);
                whole += 1;
                let _ = cthelperd::wire::dissect(&p);
            }
            Seen::Fragment => fragments += 1,
            Seen::NotIp => unreachable!("an IP packet is never NotIp"),
        }
    }
    assert_eq!(fragments + whole, frame);
    let before = ingress.take_dropped_frames().len();
    ingress.finish();
    let dropped = before + ingress.take_dropped_frames().len();
    assert_eq!(dropped, ingress.dropped().total());
    // Each dropped fragment was held (a frame is held at one layer at most).
    assert!(dropped <= fragments);
}
