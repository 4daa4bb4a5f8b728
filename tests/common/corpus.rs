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

/// The RFC 4475 SIP torture messages of the shared corpus, (file name, bytes), by name.
pub fn torture_messages() -> Option<Vec<(String, Vec<u8>)>> {
    let dir = shared_corpus()?.join("sip-torture");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    Some(out)
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

// ---------------------------------------------------------------------------------
// SIP
// ---------------------------------------------------------------------------------

/// Ports besides 5060 on which a SIP capture's signalling runs (the manifest's
/// descriptions, checked in the payloads), as `<proto> dport PORT ct helper set "sip"`
/// would be configured for it, and why.
pub const SIP_EXTRA_PORTS: &[(&str, &[u16], &str)] = &[
    (
        "sip/pcapplusplus-sip-non-default-port.pcap",
        &[52380],
        "two UDP SIP flows from 53309 and 57586 to a proxy on 52380",
    ),
    (
        "sip/sngrep-ipv6frag.pcap",
        &[15060, 5062, 25060],
        "sipp UAC on 15060, a proxy on 5062 and a sipp UAS on 25060",
    ),
    (
        "sip/sngrep-ipip-tcp.pcap",
        &[5090],
        "TCP SIP to 5090 (inside IP-in-IP)",
    ),
    (
        "sip/sv-sip-cloudshark-s0.pcap",
        &[5061],
        "the phone 200.57.7.204 talks from 5061 to the proxy's 5060, and the capture's \
         first packet is the proxy's INVITE to the phone's 5061: with UDP the first \
         sender is the original direction, so replay's conntrack has dport 5061. On a \
         live router the phone's registration refreshes (every 20 s, frame 7 grants \
         expires 20) keep a conntrack phone:5061 -> proxy:5060 alive, which a rule on \
         5060 helps; the rule on 5061 gives replay the same helped connection",
    ),
];

/// The helper rules a SIP capture is replayed with: the default configuration's, and
/// `sip` on 5060 and the capture's other SIP ports (`--helper sip:PORT` each).
pub fn sip_rules(file: &str) -> Vec<cthelperd::replay::Rule> {
    let cfg = cthelperd::config::Config::default();
    let mut rules = cthelperd::replay::rules_from_config(&cfg);
    let extra = SIP_EXTRA_PORTS
        .iter()
        .filter(|(f, ..)| *f == file)
        .flat_map(|(_, ports, _)| ports.iter());
    for port in std::iter::once(&5060).chain(extra) {
        rules.extend(cthelperd::replay::parse_rule(&format!("sip:{port}"), &cfg).unwrap());
    }
    rules
}

/// What we do where we disagree with a SIP ground-truth entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipOurs {
    /// The replay reader never hands the announcing packet to the helper (a tunnel it
    /// does not open, a fragment it cannot reassemble).
    NotSeen,
    /// The helper sees the message and creates nothing.
    Nothing,
    /// We create an expectation the ground truth does not have, or says the kernel
    /// would not create.
    Extra,
}

/// A disagreement with the SIP ground truth that we investigated and accept.
pub struct SipDeviation {
    pub file: &'static str,
    /// Frames of the ground-truth expectations concerned (for `Extra`: of ours); empty:
    /// every frame of the capture.
    pub frames: &'static [usize],
    pub ours: SipOurs,
    pub why: &'static str,
}

/// None today: the GTP-U capture (arkime-gtp-volte-ipv6) and the fragmented INVITE of
/// sngrep-ipv6frag, once pinned as `NotSeen`, reach the helper since replay opens
/// tunnels and reassembles fragments (see [`SIP_INGRESS`]).
pub const SIP_DEVIATIONS: &[SipDeviation] = &[];

/// SIP captures whose signalling reaches the helper only because replay reassembles IP
/// fragments or opens tunnels, as conntrack on a router terminating them sees it: (file,
/// SIP packets helped, datagrams reassembled, packets out of tunnels, where they are).
/// Every other SIP capture reassembles nothing and opens no tunnel.
pub const SIP_INGRESS: &[(&str, usize, usize, usize, &str)] = &[
    (
        "sip/arkime-gtp-volte-ipv6.pcap",
        62,
        0,
        106,
        "every frame is a GTP-U G-PDU (UDP 2152, with extension headers); inside, VoLTE \
         signalling (IPv6, TCP and UDP to the P-CSCF fd01::183) and the phone's other \
         traffic",
    ),
    (
        "sip/ndpi-sip-in-gre.pcapng",
        1,
        0,
        1,
        "its one packet (a 100 Trying) in PPTP's enhanced GRE (version 1) over PPP",
    ),
    (
        "sip/sngrep-ipip-tcp.pcap",
        4,
        0,
        2,
        "the INVITE and 183 (frames 2, 3) in IP-in-IP; the 200 and BYE are plain. Every \
         expectation of it is kernel_default false (c= is not the sender's), and we refuse \
         them",
    ),
    (
        "sip/sngrep-ipv6frag.pcap",
        32,
        2,
        0,
        "two INVITEs of two IPv6 fragments each (frames 1-2, 4-5): the UAC's, whose media \
         the kernel expects (frame 2), and the proxy's forwarded one, whose c= names \
         another host",
    ),
];

/// One side of the comparison: (frame, proto, src, dst, dport).
type SipKey = (usize, u8, IpAddr, IpAddr, u16);

/// The outcome of comparing one capture's SIP expectations with its ground truth.
#[derive(Debug, Default)]
pub struct SipComparison {
    pub problems: Vec<String>,
    /// Ground-truth expectations the kernel's defaults would create.
    pub kernel_default: usize,
    /// ... of which we create the same (media: same frame; registrations: same tuple,
    /// at the REGISTER's frame or later — we create it on the registrar's 2xx).
    pub recalled: usize,
    /// Kernel-default expectations whose announcing packet replay never hands to the
    /// helper (pinned `NotSeen` deviations).
    pub not_seen: usize,
    /// Deviations that applied, as "file#frame: what".
    pub pinned: Vec<String>,
    /// Packets that reached the SIP helper.
    pub helped: usize,
}

fn proto_num(name: &str) -> u8 {
    match name {
        "udp" => cthelperd::model::IPPROTO_UDP,
        "tcp" => cthelperd::model::IPPROTO_TCP,
        other => panic!("unknown proto {other}"),
    }
}

/// The index in [`SIP_DEVIATIONS`] of the deviation that explains `ours` at `frame`.
fn sip_deviation(file: &str, frame: usize, ours: SipOurs) -> Option<usize> {
    SIP_DEVIATIONS.iter().position(|d| {
        d.file == file && d.ours == ours && (d.frames.is_empty() || d.frames.contains(&frame))
    })
}

/// Compare the SIP expectations of one capture's replay with its expected.json entry.
pub fn compare_sip(entry: &json::Value, got: &Replay) -> SipComparison {
    let file = file_of(entry).to_string();
    let mut out = SipComparison::default();
    let mut media: Vec<SipKey> = Vec::new();
    let mut registrations: Vec<SipKey> = Vec::new();
    for ev in got.events.iter().filter(|e| e.helper == "sip") {
        let EventKind::Expect(x) = ev.kind else {
            continue;
        };
        if x.src_port.is_some() || x.nat.is_some() {
            out.problems.push(format!("{file}: odd expectation {x:?}"));
        }
        let key = (ev.frame, x.proto, x.src, x.dst, x.dst_port);
        if x.class == 0 {
            registrations.push(key);
        } else {
            media.push(key);
        }
    }
    let sip = got.summary.helpers.iter().find(|h| h.name == "sip");
    let helped_packets = sip.map_or(0, |h| h.packets);
    out.helped = helped_packets;
    let unseen = |frame: usize| {
        helped_packets == 0
            || got.summary.fragments.contains(&frame)
            || got.summary.malformed.contains(&frame)
    };
    let entries = entry
        .get("expectations")
        .map(json::Value::arr)
        .unwrap_or(&[]);
    let key_of = |x: &json::Value| -> SipKey {
        (
            num(x, "frame"),
            proto_num(x.get("proto").and_then(json::Value::str).unwrap_or("?")),
            ip(x, "src"),
            ip(x, "dst"),
            num(x, "dport") as u16,
        )
    };
    let kind_of = |x: &json::Value| {
        x.get("kind")
            .and_then(json::Value::str)
            .unwrap_or("?")
            .to_string()
    };
    let mut used_media = vec![false; media.len()];
    let mut used_regs = vec![false; registrations.len()];
    let mut used_deviations: Vec<usize> = Vec::new();
    let mut missing = Vec::new();
    // Registrations the kernel would create, by tuple (to tell a de-registration of a
    // registered contact from a refused third-party contact).
    let registered: Vec<(u8, IpAddr, IpAddr, u16)> = entries
        .iter()
        .filter(|x| kind_of(x) == "REGISTER-Contact")
        .filter(|x| x.get("kernel_default").and_then(json::Value::bool) == Some(true))
        .map(|x| {
            let k = key_of(x);
            (k.1, k.2, k.3, k.4)
        })
        .collect();
    for x in entries {
        let kind = kind_of(x);
        let kd = x.get("kernel_default").and_then(json::Value::bool);
        match (kind.as_str(), kd) {
            ("SDP-RTP-beyond-content-length", _) => {
                // The kernel parses the whole datagram and sees these m= lines; we honour
                // Content-Length and must not.
                let frame = num(x, "frame");
                let (dst, port) = (ip(x, "dst"), num(x, "dport") as u16);
                if media
                    .iter()
                    .any(|m| m.0 == frame && m.3 == dst && m.4 == port)
                {
                    out.problems.push(format!(
                        "{file}: frame {frame}: expectation to {dst}:{port} from an m= line past Content-Length"
                    ));
                }
                if unseen(frame) {
                    out.problems
                        .push(format!("{file}: frame {frame} never reached the helper"));
                }
            }
            ("SDP-RTP" | "SDP-RTCP", Some(kd)) => {
                // A hit on an entry the kernel would not create stays unused, so it is
                // reported (or pinned) as ours alone below.
                if kd {
                    let k = key_of(x);
                    out.kernel_default += 1;
                    match media.iter().position(|m| *m == k) {
                        Some(i) => {
                            used_media[i] = true;
                            out.recalled += 1;
                        }
                        None => missing.push((k, kind)),
                    }
                }
            }
            ("REGISTER-Contact", Some(true)) => {
                out.kernel_default += 1;
                let k = key_of(x);
                // The kernel creates it at the REGISTER; we at the registrar's 2xx answer:
                // the same tuple at that frame or later.
                let hit = registrations
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.0 >= k.0 && (r.1, r.2, r.3, r.4) == (k.1, k.2, k.3, k.4))
                    .map(|(i, _)| i)
                    .next();
                match hit {
                    Some(i) => {
                        used_regs[i] = true;
                        out.recalled += 1;
                    }
                    None => missing.push((k, kind)),
                }
            }
            ("REGISTER-Contact", Some(false)) => {
                // A de-registration (expires=0) of a registered contact, or a contact that
                // is not the phone's own: the latter must never be registered by us.
                let k = key_of(x);
                let tuple = (k.1, k.2, k.3, k.4);
                if !registered.contains(&tuple)
                    && let Some(r) = registrations.iter().find(|r| (r.1, r.2, r.3, r.4) == tuple)
                {
                    out.problems.push(format!(
                        "{file}: registration {r:?} of a contact the kernel refuses (frame {})",
                        k.0
                    ));
                }
            }
            other => out
                .problems
                .push(format!("{file}: unknown ground-truth entry {other:?}")),
        }
    }
    for ((frame, proto, src, dst, port), kind) in missing {
        let what = format!("{kind} {proto} {src} -> {dst}:{port}");
        if let Some(d) = sip_deviation(&file, frame, SipOurs::NotSeen) {
            if !unseen(frame) {
                out.problems.push(format!(
                    "{file}: frame {frame} reached the helper, yet {what} is missing"
                ));
            }
            out.not_seen += 1;
            used_deviations.push(d);
            out.pinned.push(format!("{file}#{frame}: not seen: {what}"));
        } else if let Some(d) = sip_deviation(&file, frame, SipOurs::Nothing) {
            used_deviations.push(d);
            out.pinned.push(format!("{file}#{frame}: nothing: {what}"));
        } else {
            out.problems
                .push(format!("{file}: missing at frame {frame}: {what}"));
        }
    }
    let ours = media
        .iter()
        .zip(&used_media)
        .chain(registrations.iter().zip(&used_regs))
        .filter(|(_, used)| !**used)
        .map(|(k, _)| *k);
    for (frame, proto, src, dst, port) in ours {
        let what = format!("{proto} {src} -> {dst}:{port}");
        match sip_deviation(&file, frame, SipOurs::Extra) {
            Some(d) => {
                used_deviations.push(d);
                out.pinned
                    .push(format!("{file}#{frame}: ours alone: {what}"));
            }
            None => out
                .problems
                .push(format!("{file}: unexpected at frame {frame}: {what}")),
        }
    }
    for (i, d) in SIP_DEVIATIONS
        .iter()
        .enumerate()
        .filter(|(_, d)| d.file == file)
    {
        if !used_deviations.contains(&i) {
            out.problems.push(format!(
                "{file}: documented deviation {:?} at {:?} no longer holds",
                d.ours, d.frames
            ));
        }
    }
    println!(
        "{file}: {} SIP packets, {} media and {} registration expectations; \
         kernel-default {} recalled {} (not seen {}); parse errors at {:?}",
        helped_packets,
        media.len(),
        registrations.len(),
        out.kernel_default,
        out.recalled,
        out.not_seen,
        sip.map(|h| &h.parse_errors[..]).unwrap_or(&[])
    );
    out
}
