//! Comparison of replays with the corpus ground truth (expected.json), and the
//! disagreements we investigated. Shared by the per-protocol corpus tests and by
//! tests/replay.rs, so each disagreement is documented once.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cthelperd::model::IPPROTO_UDP;
use cthelperd::replay::{EventKind, Replay};

use super::json;

/// The bundled, permissively licensed captures (tests/data).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The shared corpus (CTHELPERD_CORPUS, else ../shared/corpus beside the repository, else
/// /work/shared/corpus), when this machine
/// has it.
pub fn shared_corpus() -> Option<PathBuf> {
    // CI clones the repository with shared/ beside it; developers have /work/shared.
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let base = std::env::var_os("CTHELPERD_CORPUS")
        .map(PathBuf::from)
        .or_else(|| beside.join("expected.json").exists().then_some(beside))
        .unwrap_or_else(|| PathBuf::from("/work/shared/corpus"));
    if base.join("expected.json").exists() {
        Some(base)
    } else {
        println!(
            "note: {} absent; shared-corpus comparison skipped",
            base.join("expected.json").display()
        );
        None
    }
}

/// The entries of an expected.json file.
pub fn load_expected(path: &Path) -> Vec<json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match json::parse(&text).expect("expected.json parses") {
        json::Value::Arr(a) => a,
        other => panic!("expected.json is not an array: {other:?}"),
    }
}

pub fn file_of(entry: &json::Value) -> &str {
    entry.get("file").and_then(json::Value::str).unwrap_or("?")
}

fn ip(v: &json::Value, key: &str) -> IpAddr {
    v.get(key)
        .and_then(json::Value::str)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad {key} in {v:?}"))
}

fn num(v: &json::Value, key: &str) -> usize {
    v.get(key).and_then(json::Value::num).unwrap_or(0.0) as usize
}

/// What the FTP helper did at one frame.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum FtpEvent {
    /// (frame, src, dst, dport)
    Expect(usize, IpAddr, IpAddr, u16),
    /// (frame, what, announced, port)
    Refuse(usize, &'static str, IpAddr, u16),
}

fn frame_of(e: &FtpEvent) -> usize {
    match e {
        FtpEvent::Expect(f, ..) | FtpEvent::Refuse(f, ..) => *f,
    }
}

/// An announcement expected.json lists that the kernel's nf_conntrack_ftp would not parse,
/// and neither do we. expected.json is a tshark-based model that reads every FTP line;
/// the kernel parses only segments that start at a line start it has recorded. For each
/// case the test asserts that we produce nothing at that frame, so if our behaviour (or
/// the ground truth) changes the case is looked at again.
pub struct FtpDeviation {
    pub file: &'static str,
    pub frame: usize,
    pub why: &'static str,
}

pub const FTP_DEVIATIONS: &[FtpDeviation] = &[
    FtpDeviation {
        file: "ftp/zeek-ftp-many-port-expected.pcap",
        frame: 6,
        why: "first client data segment of the connection (the capture has no USER before it). \
              No line start is known yet in that direction, so the kernel skips the segment \
              (find_nl_seq fails, SEQ_PICKUP is only set for conntracks injected from user \
              space); it would not have refused anything either, because it never parses it. \
              The following 499 PORTs are refused as expected.",
    },
    FtpDeviation {
        file: "ftp/ndpi-ftp-start-tls.pcap",
        frame: 46,
        why: "AUTH TLS, TLS session, then the control channel returns to clear text. The last \
              TLS records in each direction do not end in '\\n', so no line start is recorded \
              and the clear-text PASV/227 segments that follow are not at a known line start: \
              the kernel does not parse them and creates no expectation (a real client would \
              see the data connection blocked behind a stateful firewall). Matching the kernel \
              is deliberate: trusting a position we cannot vouch for is what line tracking \
              exists to prevent.",
    },
];

/// Compare the FTP events of one capture's replay with its expected.json entry; returns
/// human-readable mismatches.
pub fn compare_ftp(entry: &json::Value, got: &Replay) -> Vec<String> {
    let file = file_of(entry).to_string();
    let mut problems = Vec::new();
    // Events from retransmitted segments (or duplicate captures) of an announcement
    // already seen: the kernel parses those again and re-adds the identical
    // expectation, which is the same announcement, so they are not compared.
    let mut events = Vec::new();
    let mut repeated = Vec::new();
    for ev in got.events.iter().filter(|e| e.helper == "ftp") {
        let e = match ev.kind {
            EventKind::Expect(x) => {
                if (x.src_port, x.class, x.flags) != (None, 0, 0) {
                    problems.push(format!("{file}: odd expectation {x:?}"));
                }
                FtpEvent::Expect(ev.frame, x.src, x.dst, x.dst_port)
            }
            EventKind::Refused(r) => FtpEvent::Refuse(ev.frame, r.what, r.announced, r.port),
        };
        if ev.retransmission {
            repeated.push(e);
        } else {
            events.push(e);
        }
    }
    events.sort();
    let mut want = Vec::new();
    for x in entry
        .get("expectations")
        .map(json::Value::arr)
        .unwrap_or(&[])
    {
        let frame = num(x, "frame");
        let dport = num(x, "dport") as u16;
        let kind = x.get("kind").and_then(json::Value::str).unwrap_or("");
        if x.get("kernel_default").and_then(json::Value::bool) == Some(true) {
            want.push(FtpEvent::Expect(frame, ip(x, "src"), ip(x, "dst"), dport));
        } else {
            let what = match kind {
                "PORT" => "PORT",
                "EPRT" => "EPRT",
                "227" => "227",
                "229" => "229",
                other => panic!("unknown kind {other}"),
            };
            want.push(FtpEvent::Refuse(frame, what, ip(x, "dst"), dport));
        }
    }
    want.sort();
    let known = |frame: usize| {
        FTP_DEVIATIONS
            .iter()
            .any(|k| k.file == file && k.frame == frame)
    };
    for k in FTP_DEVIATIONS.iter().filter(|k| k.file == file) {
        if !want.iter().any(|w| frame_of(w) == k.frame) {
            problems.push(format!(
                "{file}: known deviation at frame {} is no longer in the ground truth",
                k.frame
            ));
        }
        if events
            .iter()
            .chain(&repeated)
            .any(|g| frame_of(g) == k.frame)
        {
            problems.push(format!(
                "{file}: known deviation at frame {} no longer holds: we act on it",
                k.frame
            ));
        }
    }
    for w in want
        .iter()
        .filter(|w| !events.contains(w) && !known(frame_of(w)))
    {
        problems.push(format!("{file}: missing {w:?}"));
    }
    for g in events
        .iter()
        .filter(|g| !want.contains(g) && !known(frame_of(g)))
    {
        problems.push(format!("{file}: unexpected {g:?}"));
    }
    // Announcements the ground truth calls malformed must never become expectations.
    for ev in entry
        .get("no_expectation_events")
        .map(json::Value::arr)
        .unwrap_or(&[])
    {
        let frame = num(ev, "frame");
        if events
            .iter()
            .chain(&repeated)
            .any(|g| matches!(g, FtpEvent::Expect(f, ..) if *f == frame))
        {
            problems.push(format!("{file}: expectation at malformed frame {frame}"));
        }
    }
    let ftp = got.summary.helpers.iter().find(|h| h.name == "ftp");
    println!(
        "{file}: {} FTP packets, {} events ({} repeated), parse errors at {:?}",
        ftp.map_or(0, |h| h.packets),
        events.len(),
        repeated.len(),
        ftp.map(|h| &h.parse_errors[..]).unwrap_or(&[])
    );
    problems
}

/// A disagreement with expected.json that we have investigated and accept. expected.json
/// models the kernel, which looks only at the two-byte opcode; we validate the request
/// (see src/helpers/tftp.rs).
pub struct TftpDeviation {
    pub file: &'static str,
    pub frame: usize,
    /// What we do instead of the kernel's expectation.
    pub ours: Ours,
    pub why: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Ours {
    /// The helper saw the request and reported a parse error.
    ParseError,
    /// The helper never saw the packet.
    NotSeen,
}

pub const TFTP_DEVIATIONS: &[TftpDeviation] = &[
    TftpDeviation {
        file: "tftp/ndpi-tftp-mixed.pcap",
        frame: 1,
        ours: Ours::ParseError,
        why: "RRQ with an empty file name and an empty mode, followed by \"=\" strings: not a \
              request any server serves; the kernel acts on the opcode alone",
    },
    TftpDeviation {
        file: "tftp/ndpi-tftp-mixed.pcap",
        frame: 2,
        ours: Ours::ParseError,
        why: "RRQ with an empty file name (mode octet): RFC 1350 requires a file name; the \
              server can only answer with an ERROR, which the client does not need to get \
              through the firewall",
    },
    TftpDeviation {
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

/// (frame, src, dst, dport) of one TFTP expectation.
pub type TftpEvent = (usize, IpAddr, IpAddr, u16);

/// Compare the TFTP expectations of one capture's replay with its expected.json entry.
pub fn compare_tftp(entry: &json::Value, got: &Replay) -> Vec<String> {
    let file = file_of(entry).to_string();
    let mut problems = Vec::new();
    let mut expectations: Vec<TftpEvent> = Vec::new();
    for ev in got.events.iter().filter(|e| e.helper == "tftp") {
        match ev.kind {
            EventKind::Expect(x) => {
                if (x.src_port, x.class, x.flags, x.proto) != (None, 0, 0, IPPROTO_UDP) {
                    problems.push(format!("{file}: odd expectation {x:?}"));
                }
                expectations.push((ev.frame, x.src, x.dst, x.dst_port));
            }
            EventKind::Refused(r) => problems.push(format!("{file}: TFTP refusal {r:?}")),
        }
    }
    expectations.sort();
    let tftp = got.summary.helpers.iter().find(|h| h.name == "tftp");
    let parse_errors: &[usize] = tftp.map(|h| &h.parse_errors[..]).unwrap_or(&[]);
    let mut want: Vec<TftpEvent> = Vec::new();
    for x in entry
        .get("expectations")
        .map(json::Value::arr)
        .unwrap_or(&[])
    {
        assert_eq!(x.get("proto").and_then(json::Value::str), Some("udp"));
        if x.get("kernel_default").and_then(json::Value::bool) != Some(true) {
            continue;
        }
        want.push((
            num(x, "frame"),
            ip(x, "src"),
            ip(x, "dst"),
            num(x, "dport") as u16,
        ));
    }
    want.sort();
    let deviation = |frame: usize| {
        TFTP_DEVIATIONS
            .iter()
            .find(|k| k.file == file && k.frame == frame)
    };
    for w in want.iter().filter(|w| !expectations.contains(w)) {
        match deviation(w.0) {
            // A known deviation must still be the deviation we documented.
            Some(k) => {
                let actual = if parse_errors.contains(&w.0) {
                    Ours::ParseError
                } else if got.summary.malformed.contains(&w.0) {
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
    for g in expectations.iter().filter(|g| !want.contains(g)) {
        problems.push(format!("{file}: unexpected {g:?}"));
    }
    // Parse errors anywhere else would mean we misread legitimate TFTP.
    for f in parse_errors {
        if deviation(*f).is_none() {
            problems.push(format!("{file}: parse error at frame {f}"));
        }
    }
    println!(
        "{file}: {} helped packets, {} expectations, parse errors at {:?}",
        tftp.map_or(0, |h| h.packets),
        expectations.len(),
        parse_errors
    );
    problems
}

/// Replay every capture of `expected_json` whose file starts with `prefix` (found under
/// `base`) and compare with its entry; panics listing every mismatch. Returns how many
/// captures were compared.
#[allow(dead_code)] // each test crate that includes this module uses a different part
pub fn run_expected(
    expected_json: &Path,
    base: &Path,
    prefix: &str,
    compare: fn(&json::Value, &Replay) -> Vec<String>,
) -> usize {
    let rules = cthelperd::replay::rules_from_config(&cthelperd::config::Config::default());
    let mut problems = Vec::new();
    let mut n = 0;
    for entry in load_expected(expected_json) {
        let file = file_of(&entry);
        if !file.starts_with(prefix) {
            continue;
        }
        n += 1;
        let path = base.join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match cthelperd::replay::replay(&bytes, &rules) {
            Ok(got) => problems.extend(compare(&entry, &got)),
            Err(e) => problems.push(format!("{file}: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
    n
}
