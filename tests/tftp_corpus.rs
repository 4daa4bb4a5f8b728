//! Replay TFTP captures through the library's capture replay (the helper code the daemon
//! runs) and compare the expectations with the corpus ground truth (expected.json).
//!
//! Model (src/replay): UDP flows are conntracks keyed by their 5-tuple; a flow's first
//! packet gives its original direction and is seen on an unconfirmed conntrack. The
//! helper is assigned the way the scenario's firewall does it (`udp dport 69 ct helper
//! set "tftp"`): to flows whose original destination port is 69. The server's answers
//! come from a new port, so they form new flows without the helper. The comparison and
//! the documented disagreements live in tests/common/corpus.rs.
// Needs the library's capture replay (cargo feature `replay`, on by default).
#![cfg(feature = "replay")]

mod common;

use std::path::Path;

use common::corpus::{self, TFTP_DEVIATIONS};
use cthelperd::config::Config;
use cthelperd::replay;

fn run_expected(expected_json: &Path, base: &Path) -> usize {
    corpus::run_expected(expected_json, base, "tftp/", corpus::compare_tftp)
}

/// The permissively licensed captures shipped in the repository: always run.
#[test]
fn bundled_tftp_captures_match_expected() {
    let data = corpus::data_dir();
    let n = run_expected(&data.join("tftp-expected.json"), &data);
    assert_eq!(n, 5, "bundled captures");
}

/// The full shared corpus (including the LGPL nDPI capture), when this machine has it.
#[test]
fn shared_corpus_tftp_captures_match_expected() {
    if let Some(base) = corpus::shared_corpus() {
        let n = run_expected(&base.join("expected.json"), &base);
        assert!(n >= 6, "only {n} TFTP captures in the shared corpus");
    }
}

#[test]
fn known_deviations_are_documented() {
    for k in TFTP_DEVIATIONS {
        assert!(!k.why.is_empty(), "{}#{}", k.file, k.frame);
    }
}

/// The server's answers (DATA, ACK, OACK from a new port) never reach the helper, and
/// the one request of a plain transfer yields exactly one expectation.
#[test]
fn one_expectation_per_transfer() {
    let bytes = std::fs::read(corpus::data_dir().join("tftp/zeek-tftp-oack-blksize.pcap")).unwrap();
    let got = replay::replay(&bytes, &replay::rules_from_config(&Config::default())).unwrap();
    let tftp = got
        .summary
        .helpers
        .iter()
        .find(|h| h.name == "tftp")
        .unwrap();
    assert_eq!(tftp.packets, 1);
    assert_eq!(got.events.len(), 1);
    assert!(tftp.parse_errors.is_empty());
}
