//! Arbitrary bytes as a datagram from the queue socket, through everything the daemon
//! does with one before any I/O: netlink message iteration, error decoding, the queued
//! packet and its conntrack attributes, and the helper dispatch (`daemon::examine`);
//! also the readers of the control socket's answers (a helper listed by
//! nfnetlink_cthelper, a table and its comment from nf_tables).
#![no_main]

use cthelperd::config::Config;
use cthelperd::daemon::{examine, slots_from_config};
use cthelperd::netlink::ctnetlink::parse_conntrack;
use cthelperd::netlink::{cthelper, nftables};
use cthelperd::netlink::msg::Messages;
use cthelperd::netlink::queue::{packet_ref, parse_packet};
use cthelperd::private_cache::PrivateCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Queue 0: the seeds are kernel messages recorded when that was the default queue_base.
    let cfg = Config {
        queue_base: 0,
        ..Config::default()
    };
    let Ok(mut slots) = slots_from_config(&cfg) else {
        return;
    };
    let mut cache = PrivateCache::new();
    let now = std::time::Instant::now();
    for msg in Messages::new(data) {
        let Ok(msg) = msg else { break };
        let _ = msg.error();
        let _ = cthelper::parse_helper(&msg);
        if let Ok(t) = nftables::parse_table(&msg) {
            assert!(t.comment.is_none_or(|c| !c.contains('\0')));
        }
        let id = packet_ref(&msg);
        let Ok(pkt) = parse_packet(&msg) else {
            continue;
        };
        // Whatever parse_packet reads, the lenient reader finds too.
        assert_eq!(id, Some((pkt.queue, pkt.id)));
        if let Some(ct) = pkt.ct {
            let _ = parse_conntrack(ct);
        }
        if let Ok(ex) = examine(&mut slots, &mut cache, &pkt, now) {
            assert!(ex.private_len <= ex.private.len());
            cache.record(ex.conntrack.id, &ex.conntrack.orig, &ex.private[..ex.private_len], now);
        }
    }
});
