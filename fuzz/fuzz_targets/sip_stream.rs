//! Arbitrary bytes as the segments of a few TCP streams through the SIP stream position
//! and reassembly pool. Layout: repeated `[conn u8][seq delta i8][len u8][len bytes]`.
//! Oracles: no panic; only complete messages are handed out, each a parseable SIP
//! message from a stream whose first bytes were SIP; nothing is handed out for a
//! direction once it is NotSip or Lost; the pool never holds more than a buffer.
#![no_main]

use cthelperd::helpers::sip::message::{Framing, Message};
use cthelperd::helpers::sip::stream::{
    DirState, Outcome, Phase, Pool, STREAM_BUF, StreamKey, complete_messages,
};
use libfuzzer_sys::fuzz_target;

const CONNS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let mut pool = Pool::new();
    let mut states = [DirState::default(); CONNS];
    let mut seqs = [1000u32; CONNS];
    let mut rest = data;
    while let [conn, delta, len, tail @ ..] = rest {
        let c = usize::from(*conn) % CONNS;
        let len = usize::from(*len).min(tail.len());
        let (seg, next) = tail.split_at(len);
        rest = next;
        let seq = seqs[c].wrapping_add(*delta as i8 as i32 as u32);
        let key = StreamKey {
            conntrack: c as u32,
            reply: false,
        };
        let before = states[c].phase;
        let mut handed = 0;
        let out = pool.feed(&mut states[c], key, seq, seg, |bytes, _| {
            complete_messages(bytes, |m, at| {
                handed += 1;
                let again = Message::parse(&bytes[at..], Framing::Stream).expect("reparses");
                assert_eq!(again.len(), m.len());
            })
        });
        if matches!(before, Phase::NotSip | Phase::Lost) {
            assert_eq!(out, Outcome::Skipped);
            assert_eq!(handed, 0);
        }
        if let Outcome::Parsed { pending, .. } = out {
            assert!(pending <= STREAM_BUF);
            assert_eq!(pool.pending(key), pending);
            seqs[c] = seq.wrapping_add(seg.len() as u32);
        }
    }
});
