//! Replay FTP captures through the library's capture replay (the helper code the daemon
//! runs, one private area per connection as the kernel keeps it) and compare the
//! expectations with the corpus ground truth. The comparison and the documented
//! disagreements live in tests/common/corpus.rs.
// Needs the library's capture replay (cargo feature `replay`, on by default).
#![cfg(feature = "replay")]

mod common;

use std::path::{Path, PathBuf};

use common::corpus::{self, FTP_DEVIATIONS};
use cthelperd::helpers::Transport;
use cthelperd::helpers::ftp;
use cthelperd::replay::capture;
use cthelperd::wire;

fn run_expected(expected_json: &Path, base: &Path) -> usize {
    corpus::run_expected(expected_json, base, "ftp/", corpus::compare_ftp)
}

/// The permissively licensed captures shipped in the repository: always run.
#[test]
fn bundled_ftp_captures_match_expected() {
    let data = corpus::data_dir();
    let n = run_expected(&data.join("ftp-expected.json"), &data);
    assert!(n >= 30, "only {n} bundled captures");
}

/// The full shared corpus, when this machine has it.
#[test]
fn shared_corpus_ftp_captures_match_expected() {
    if let Some(base) = corpus::shared_corpus() {
        run_expected(&base.join("expected.json"), &base);
    }
}

#[test]
fn known_deviations_are_documented() {
    for k in FTP_DEVIATIONS {
        assert!(!k.why.is_empty(), "{}#{}", k.file, k.frame);
    }
}

/// Writes fuzz seeds (see fuzz/README.md); ignored unless asked for by fuzz/seed.sh.
#[test]
#[ignore]
fn dump_fuzz_seeds() {
    let Some(out) = std::env::var_os("FUZZ_SEED_DIR").map(PathBuf::from) else {
        println!("FUZZ_SEED_DIR not set");
        return;
    };
    let (wire_dir, ftp_dir) = (out.join("wire_dissect"), out.join("ftp_helper"));
    std::fs::create_dir_all(&wire_dir).unwrap();
    std::fs::create_dir_all(&ftp_dir).unwrap();
    let mut dirs = vec![corpus::data_dir().join("ftp")];
    dirs.push(PathBuf::from("/work/shared/corpus/ftp"));
    let mut n = 0;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap();
            let Ok(records) = capture::Capture::new(&bytes) else {
                continue;
            };
            for f in records.map_while(Result::ok) {
                let Some(l3) = capture::l3(f.linktype, f.data) else {
                    continue;
                };
                std::fs::write(wire_dir.join(format!("s{n}")), l3).unwrap();
                if let Ok(d) = wire::dissect(l3)
                    && let Transport::Tcp { seq, .. } = d.transport
                    && !d.payload.is_empty()
                {
                    let flags: u8 =
                        8 | u8::from(d.src_port == ftp::PORT) << 1 | u8::from(d.src.is_ipv6());
                    let mut seed = vec![flags];
                    seed.extend_from_slice(&seq.to_be_bytes());
                    seed.extend_from_slice(&[0; ftp::PRIVATE_LEN]);
                    seed.extend_from_slice(d.payload);
                    std::fs::write(ftp_dir.join(format!("s{n}")), seed).unwrap();
                }
                n += 1;
            }
        }
    }
    println!("wrote {n} seeds to {}", out.display());
}
