//! Arbitrary text as /etc/config/cthelperd: the UCI reader and the configuration
//! mapping must refuse bad input with an error, never panic; whatever they accept must
//! print as UCI text that reads back to the same configuration (check-config's promise).
#![no_main]

use cthelperd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = Config::parse(text, "fuzz") {
        let printed = cfg.to_uci();
        let again = Config::parse(&printed, "printed").expect("printed configuration parses");
        assert_eq!(again, cfg);
    }
});
