//! Replay TFTP captures through the TFTP helper as the kernel would run it, and compare
//! the expectations with the corpus ground truth (expected.json).
//!
//! Model: UDP flows are conntracks keyed by their 5-tuple; a flow's first packet gives
//! its original direction and is queued on an unconfirmed conntrack. The helper is
//! assigned the way the scenario's firewall does it (`udp dport 69 ct helper set
//! "tftp"`): to flows whose original destination port is 69. The server's answers come
//! from a new port, so they form new flows without the helper.

mod common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::{json, pcap};
use cthelperd::conntrack::{Conntrack, Direction, IPPROTO_UDP, Tuple, status};
use cthelperd::helpers::tftp::{self, Tftp};
use cthelperd::helpers::{Helper, Packet, Transport};
use cthelperd::wire;

/// (frame, src, dst, dport) of one expectation.
type Event = (usize, IpAddr, IpAddr, u16);

#[derive(Debug, Default)]
struct Replay {
    expectations: Vec<Event>,
    parse_errors: Vec<usize>,
    /// Frames carrying IP that could not be taken apart (truncated captures).
    undissectable: Vec<usize>,
    helped_packets: usize,
}

type Endpoint = (IpAddr, u16);

fn replay(bytes: &[u8]) -> Replay {
    let frames = pcap::read(bytes).expect("readable capture");
    let mut conns: HashMap<(Endpoint, Endpoint), Conntrack> = HashMap::new();
    let mut out = Replay::default();
    for f in &frames {
        let Some(l3) = pcap::l3(f.linktype, &f.data) else {
            continue;
        };
        let d = match wire::dissect(l3) {
            Ok(d) => d,
            Err(_) => {
                out.undissectable.push(f.number);
                continue;
            }
        };
        if d.transport != Transport::Udp {
            continue;
        }
        let here: Endpoint = (d.src, d.src_port);
        let there: Endpoint = (d.dst, d.dst_port);
        let key = if here < there {
            (here, there)
        } else {
            (there, here)
        };
        let mut fresh = false;
        let ct = conns.entry(key).or_insert_with(|| {
            fresh = true;
            Conntrack {
                orig: Tuple {
                    src: here.0,
                    dst: there.0,
                    proto: IPPROTO_UDP,
                    src_port: here.1,
                    dst_port: there.1,
                },
                reply: Tuple {
                    src: there.0,
                    dst: here.0,
                    proto: IPPROTO_UDP,
                    src_port: there.1,
                    dst_port: here.1,
                },
                status: 0,
                id: None,
                zone: None,
            }
        });
        if !fresh {
            ct.status |= status::CONFIRMED;
        }
        if ct.orig.dst_port != tftp::PORT {
            continue;
        }
        let dir = if ct.orig.src == d.src && ct.orig.src_port == d.src_port {
            Direction::Original
        } else {
            ct.status |= status::SEEN_REPLY;
            Direction::Reply
        };
        out.helped_packets += 1;
        let pkt = Packet {
            dir,
            src: d.src,
            dst: d.dst,
            src_port: d.src_port,
            dst_port: d.dst_port,
            transport: d.transport,
            payload: d.payload,
        };
        let action = Tftp.process(&pkt, ct, &mut []);
        assert!(!action.private_changed, "frame {}", f.number);
        assert!(action.refusals.is_empty());
        for e in &action.expectations {
            assert_eq!(e.src_port, None);
            assert_eq!((e.class, e.flags, e.proto), (0, 0, IPPROTO_UDP));
            out.expectations.push((f.number, e.src, e.dst, e.dst_port));
        }
        if action.parse_error {
            out.parse_errors.push(f.number);
        }
    }
    out.expectations.sort();
    out
}

/// A disagreement with expected.json that we have investigated and accept. expected.json
/// models the kernel, which looks only at the two-byte opcode; we validate the request
/// (see src/helpers/tftp.rs).
struct KnownDeviation {
    file: &'static str,
    frame: usize,
    /// What we do instead of the kernel's expectation.
    ours: Ours,
    why: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
enum Ours {
    /// The helper saw the request and reported a parse error.
    ParseError,
    /// The helper never saw the packet.
    NotSeen,
}

const KNOWN_DEVIATIONS: &[KnownDeviation] = &[
    KnownDeviation {
        file: "tftp/ndpi-tftp-mixed.pcap",
        frame: 1,
        ours: Ours::ParseError,
        why: "RRQ with an empty file name and an empty mode, followed by \"=\" strings: not a \
              request any server serves; the kernel acts on the opcode alone",
    },
    KnownDeviation {
        file: "tftp/ndpi-tftp-mixed.pcap",
        frame: 2,
        ours: Ours::ParseError,
        why: "RRQ with an empty file name (mode octet): RFC 1350 requires a file name; the \
              server can only answer with an ERROR, which the client does not need to get \
              through the firewall",
    },
    KnownDeviation {
        file: "tftp/tcpdump-tftp-heapoverflow.pcap",
        frame: 1,
        ours: Ours::NotSeen,
        why: "a 48-byte capture of a packet whose IP and UDP length fields say 12336 bytes \
              (tcpdump's heap-overflow regression input): the kernel never queues a packet \
              shorter than its headers say, and the daemon skips truncated queued packets. \
              It also travels FROM port 69 to port 12336, so `udp dport 69` never assigns \
              the helper; expected.json treats the sender as the client",
    },
];

fn ip(v: &json::Value, key: &str) -> IpAddr {
    v.get(key)
        .and_then(json::Value::str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {v:?}"))
}

fn compare(entry: &json::Value, capture: &Path) -> Vec<String> {
    let file = entry
        .get("file")
        .and_then(json::Value::str)
        .unwrap_or("?")
        .to_string();
    let bytes = std::fs::read(capture).unwrap_or_else(|e| panic!("{}: {e}", capture.display()));
    let got = replay(&bytes);
    let mut want: Vec<Event> = Vec::new();
    for x in entry
        .get("expectations")
        .map(json::Value::arr)
        .unwrap_or(&[])
    {
        assert_eq!(x.get("proto").and_then(json::Value::str), Some("udp"));
        if x.get("kernel_default").and_then(json::Value::bool) != Some(true) {
            continue;
        }
        let frame = x.get("frame").and_then(json::Value::num).unwrap_or(0.0) as usize;
        let dport = x.get("dport").and_then(json::Value::num).unwrap_or(0.0) as u16;
        want.push((frame, ip(x, "src"), ip(x, "dst"), dport));
    }
    want.sort();
    let deviation = |frame: usize| {
        KNOWN_DEVIATIONS
            .iter()
            .find(|k| k.file == file && k.frame == frame)
    };
    let mut problems = Vec::new();
    for w in want.iter().filter(|w| !got.expectations.contains(w)) {
        match deviation(w.0) {
            // A known deviation must still be the deviation we documented.
            Some(k) => {
                let actual = if got.parse_errors.contains(&w.0) {
                    Ours::ParseError
                } else if got.undissectable.contains(&w.0) {
                    Ours::NotSeen
                } else {
                    problems.push(format!(
                        "{file}: frame {}: neither expected nor explained",
                        w.0
                    ));
                    continue;
                };
                if actual != k.ours {
                    problems.push(format!(
                        "{file}: frame {}: documented {:?}, got {actual:?}",
                        w.0, k.ours
                    ));
                }
            }
            None => problems.push(format!("{file}: missing {w:?}")),
        }
    }
    for g in got.expectations.iter().filter(|g| !want.contains(g)) {
        problems.push(format!("{file}: unexpected {g:?}"));
    }
    // Parse errors anywhere else would mean we misread legitimate TFTP.
    for f in &got.parse_errors {
        if deviation(*f).is_none() {
            problems.push(format!("{file}: parse error at frame {f}"));
        }
    }
    println!(
        "{file}: {} helped packets, {} expectations, parse errors at {:?}",
        got.helped_packets,
        got.expectations.len(),
        got.parse_errors
    );
    problems
}

fn run_expected(expected_json: &Path, base: &Path) -> usize {
    let text = std::fs::read_to_string(expected_json).expect("expected.json readable");
    let all = json::parse(&text).expect("expected.json parses");
    let mut problems = Vec::new();
    let mut n = 0;
    for entry in all.arr() {
        let Some(file) = entry.get("file").and_then(json::Value::str) else {
            continue;
        };
        if !file.starts_with("tftp/") {
            continue;
        }
        n += 1;
        problems.extend(compare(entry, &base.join(file)));
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    n
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The permissively licensed captures shipped in the repository: always run.
#[test]
fn bundled_tftp_captures_match_expected() {
    let n = run_expected(&data_dir().join("tftp-expected.json"), &data_dir());
    assert_eq!(n, 5, "bundled captures");
}

/// The full shared corpus (including the LGPL nDPI capture), when this machine has it.
#[test]
fn shared_corpus_tftp_captures_match_expected() {
    let base = std::env::var_os("CTHELPERD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus"));
    let expected = base.join("expected.json");
    if !expected.exists() {
        println!(
            "note: {} absent; shared-corpus comparison skipped",
            expected.display()
        );
        return;
    }
    let n = run_expected(&expected, &base);
    assert!(n >= 6, "only {n} TFTP captures in the shared corpus");
}

#[test]
fn known_deviations_are_documented() {
    for k in KNOWN_DEVIATIONS {
        assert!(!k.why.is_empty(), "{}#{}", k.file, k.frame);
    }
}

/// The server's answers (DATA, ACK, OACK from a new port) never reach the helper, and
/// the one request of a plain transfer yields exactly one expectation.
#[test]
fn one_expectation_per_transfer() {
    let bytes = std::fs::read(data_dir().join("tftp/zeek-tftp-oack-blksize.pcap")).unwrap();
    let got = replay(&bytes);
    assert_eq!(got.helped_packets, 1);
    assert_eq!(got.expectations.len(), 1);
    assert!(got.parse_errors.is_empty());
}
