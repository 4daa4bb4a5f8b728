//! Arbitrary bytes as a capture file through the capture reader, the connection
//! tracking and every built-in helper, and the text/JSON rendering: replay reads files
//! other people captured, so none of this may panic, whatever the file holds.
#![no_main]

use cthelperd::config::Config;
use cthelperd::replay::{self, capture, output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rules = replay::rules_from_config(&Config::default());
    let mut sink = Vec::new();
    // The streaming path the CLI takes (events up to the first bad record)...
    let _ = replay::cli::replay_to(data, &rules, false, &mut sink);
    let _ = replay::cli::replay_to(data, &rules, true, &mut sink);
    // ...and the collecting one, whose error must name a record inside the file.
    match replay::replay(data, &rules) {
        Ok(r) => {
            for ev in &r.events {
                assert!(ev.frame >= 1 && ev.frame <= r.summary.frames);
                let _ = output::text_line(ev);
                let _ = output::json_line(ev);
            }
        }
        Err(e) => assert!(e.offset <= data.len()),
    }
    if let Ok(cap) = capture::Capture::new(data) {
        for rec in cap.flatten() {
            assert!(rec.offset < data.len());
            let _ = capture::l3(rec.linktype, rec.data);
        }
    }
});
