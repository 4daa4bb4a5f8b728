//! Arbitrary bytes as a queued L3 packet: dissect must return, never panic, and whatever
//! it returns must lie inside the input.
#![no_main]

use cthelperd::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = wire::dissect(data) {
        assert!(d.l4_offset <= d.payload_offset);
        assert!(d.payload_offset + d.payload.len() <= data.len());
        assert_eq!(
            data.get(d.payload_offset..d.payload_offset + d.payload.len()),
            Some(d.payload)
        );
    }
    // The views on their own, over the same bytes, including the mutable paths.
    let mut buf = data.to_vec();
    let mut v4 = wire::ipv4::Packet::new_unchecked(&mut buf[..]);
    let _ = v4.check_len();
    let _ = v4.payload().len();
    v4.fill_checksum();
    let v6 = wire::ipv6::Packet::new_unchecked(data);
    let _ = v6.upper_layer();
    let tcp = wire::tcp::Packet::new_unchecked(data);
    let _ = (tcp.check_len(), tcp.payload().len());
    let udp = wire::udp::Packet::new_unchecked(data);
    let _ = (udp.check_len(), udp.payload().len());
});
