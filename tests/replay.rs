//! `cthelperd replay`: the binary on bundled captures (exact text and JSON output, error
//! reporting), and the library replay over every capture of the shared corpus compared
//! with its ground truth (the comparison and the documented disagreements are shared
//! with the per-protocol corpus tests, tests/common/corpus.rs).
// Needs the library's capture replay (cargo feature `replay`, on by default).
#![cfg(feature = "replay")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::corpus;
use cthelperd::config::Config;
use cthelperd::replay::{self, EventKind};

/// Run the binary; under cross-target testing through the emulator cross/test.sh names
/// (CTHELPERD_TEST_RUNNER, e.g. qemu-mipsel-static).
fn cthelperd(args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_cthelperd");
    let mut cmd = match std::env::var_os("CTHELPERD_TEST_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).output().expect("run cthelperd")
}

fn data(rel: &str) -> String {
    corpus::data_dir().join(rel).display().to_string()
}

fn stdout_of(args: &[&str]) -> String {
    let out = cthelperd(args);
    assert!(
        out.status.success(),
        "{args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn assert_lines(got: &str, want: &[&str]) {
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, want);
}

/// An FTP bounce capture: one PORT becomes an expectation, the PORT naming a third host
/// is refused.
#[test]
fn text_output_bounce() {
    let out = stdout_of(&["replay", &data("ftp/sv-ftp-bounce.pcap")]);
    assert_lines(
        &out,
        &[
            "0.003443 ftp 1.1.1.2:33112 -> 2.2.2.1:21 tcp expect tcp 2.2.2.1:any -> 1.1.1.2:59549",
            "0.009195 ftp 1.1.1.2:58316 -> 2.2.2.1:21 tcp refused PORT 2.2.2.3:80 from 1.1.1.2 (third-party address)",
            "# 34 frames, 34 TCP/UDP packets, 2 connections",
            "# ftp: 2 connections, 34 packets, 1 expectations, 1 refused, 0 parse errors",
        ],
    );
}

#[test]
fn json_output_bounce() {
    let out = stdout_of(&["replay", "--json", &data("ftp/sv-ftp-bounce.pcap")]);
    assert_lines(
        &out,
        &[
            r#"{"time":0.003443,"ts":"2023-06-09T00:21:02.664228Z","frame":10,"helper":"ftp","master":{"proto":"tcp","src":"1.1.1.2","sport":33112,"dst":"2.2.2.1","dport":21},"expect":{"proto":"tcp","src":"2.2.2.1","sport":null,"dst":"1.1.1.2","dport":59549,"class":0},"retransmission":false}"#,
            r#"{"time":0.009195,"ts":"2023-06-09T00:21:02.669980Z","frame":27,"helper":"ftp","master":{"proto":"tcp","src":"1.1.1.2","sport":58316,"dst":"2.2.2.1","dport":21},"refused":{"what":"PORT","address":"2.2.2.3","port":80,"sender":"1.1.1.2","reason":"third-party address"},"retransmission":false}"#,
            r#"{"summary":{"frames":34,"packets":34,"connections":2,"non_ip":0,"other_protocols":0,"reassembled":0,"decapsulated":0,"fragments":[],"fragments_dropped":{"incomplete":0,"timed_out":0,"evicted":0,"overlapping":0,"duplicate":0,"oversized":0,"invalid":0},"malformed":[],"helpers":[{"helper":"ftp","connections":2,"packets":34,"expectations":1,"refused":1,"parse_errors":0,"parse_error_frames":[]},{"helper":"tftp","connections":0,"packets":0,"expectations":0,"refused":0,"parse_errors":0,"parse_error_frames":[]},{"helper":"sip","connections":0,"packets":0,"expectations":0,"refused":0,"parse_errors":0,"parse_error_frames":[]}]}}"#,
        ],
    );
    // Every line is JSON our own reader accepts.
    for line in out.lines() {
        common::json::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// IPv6 EPSV/EPRT, and retransmitted PORT segments re-creating the same expectation.
#[test]
fn text_output_ipv6_and_retransmissions() {
    let out = stdout_of(&["replay", &data("ftp/zeek-ftp-ipv6.pcap")]);
    let m = "ftp [2001:470:1f11:81f:c999:d94:aa7c:2e3e]:49185 -> [2001:470:4867:99::21]:21 tcp";
    let c = "[2001:470:1f11:81f:c999:d94:aa7c:2e3e]";
    let s = "[2001:470:4867:99::21]";
    assert_lines(
        &out,
        &[
            &format!("5.494320 {m} expect tcp {c}:any -> {s}:57086"),
            &format!("8.702051 {m} expect tcp {c}:any -> {s}:57087"),
            &format!("9.466595 {m} expect tcp {c}:any -> {s}:57088"),
            &format!("17.533244 {m} expect tcp {s}:any -> {c}:49189"),
            &format!("21.977323 {m} expect tcp {s}:any -> {c}:49190"),
            "# 136 frames, 136 TCP/UDP packets, 6 connections",
            "# ftp: 1 connections, 91 packets, 5 expectations, 0 refused, 0 parse errors",
        ],
    );
    let out = stdout_of(&["replay", &data("ftp/sv-ftp-port-bug3519.pcap")]);
    let m =
        "ftp 192.168.0.13:59898 -> 192.168.0.10:21 tcp expect tcp 192.168.0.10:any -> 192.168.0.13";
    assert_lines(
        &out,
        &[
            &format!("34.914804 {m}:59914"),
            &format!("35.121898 {m}:59914 [retransmission]"),
            &format!("35.730289 {m}:59914 [retransmission]"),
            &format!("36.931465 {m}:59914 [retransmission]"),
            &format!("38.132631 {m}:59914 [retransmission]"),
            &format!("48.329024 {m}:59926"),
            "# 40 frames, 40 TCP/UDP packets, 1 connections",
            "# ftp: 1 connections, 40 packets, 6 expectations, 0 refused, 0 parse errors",
        ],
    );
}

/// TFTP, a BSD-loopback (DLT_NULL) capture with parse errors, and a truncated packet.
#[test]
fn text_output_tftp_parse_errors_and_skipped_frames() {
    assert_lines(
        &stdout_of(&["replay", &data("tftp/tcpdump-tftp.pcap")]),
        &[
            "0.000000 tftp 192.168.1.2:44935 -> 192.168.1.1:69 udp expect udp 192.168.1.1:any -> 192.168.1.2:44935",
            "# 7 frames, 7 TCP/UDP packets, 2 connections",
            "# tftp: 1 connections, 1 packets, 1 expectations, 0 refused, 0 parse errors",
        ],
    );
    assert_lines(
        &stdout_of(&["replay", &data("ftp/sv-ftp-mode-malformed-port.pcap")]),
        &[
            "# 18 frames, 18 TCP/UDP packets, 1 connections",
            "# ftp: 1 connections, 18 packets, 0 expectations, 0 refused, 2 parse errors (frames 11, 13)",
        ],
    );
    assert_lines(
        &stdout_of(&["replay", &data("tftp/tcpdump-tftp-heapoverflow.pcap")]),
        &[
            "# 1 frames, 0 TCP/UDP packets, 0 connections; not replayed: 1 malformed or cut short (frames 1)",
        ],
    );
}

/// Tunnels are opened and fragments reassembled, as on a router terminating them: the
/// VoLTE capture's SIP is all inside GTP-U.
#[test]
fn text_output_through_a_gtp_u_tunnel() {
    let out = stdout_of(&[
        "replay",
        "--helper",
        "sip:5060",
        &data("sip/arkime-gtp-volte-ipv6.pcap"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.iter().filter(|l| !l.starts_with('#')).count(), 5);
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "# 106 frames, 98 TCP/UDP packets, 10 connections; 106 packets out of tunnels; not replayed: 8 neither TCP nor UDP",
            "# sip: 5 connections, 62 packets, 5 expectations, 0 refused, 0 parse errors",
        ]
    );
}

/// A classic pcap (raw IP) of `packets`.
fn raw_pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    f.extend_from_slice(&[2, 0, 4, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (i, p) in packets.iter().enumerate() {
        f.extend_from_slice(&(1_000 + i as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(&(p.len() as u32).to_le_bytes());
        f.extend_from_slice(p);
    }
    f
}

/// An IPv4 fragment of a TFTP read request from 192.0.2.2:40000 to 198.51.100.1:69:
/// bytes `range` of the UDP datagram, `last` or not.
fn tftp_fragment(ident: u16, range: std::ops::Range<usize>, last: bool) -> Vec<u8> {
    let rrq = b"\x00\x01some-rather-long-file-name.bin\x00octet\x00";
    let mut udp = 40000u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&69u16.to_be_bytes());
    udp.extend_from_slice(&((8 + rrq.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(rrq);
    let data = &udp[range.start..range.end.min(udp.len())];
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&ident.to_be_bytes());
    let flags = (range.start / 8) as u16 | if last { 0 } else { 0x2000 };
    ip.extend_from_slice(&flags.to_be_bytes());
    ip.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 2, 198, 51, 100, 1]);
    ip.extend_from_slice(data);
    ip
}

/// A TFTP request in two fragments, the second first: expected at the frame that
/// completes it; a lone fragment of another datagram is reported as never reassembled.
#[test]
fn fragments_reassembled_and_dropped() {
    let path = temp_file(
        "fragments.pcap",
        &raw_pcap(&[
            tftp_fragment(7, 24..100, true),
            tftp_fragment(8, 0..24, false),
            tftp_fragment(7, 0..24, false),
        ]),
    );
    let p = path.display().to_string();
    assert_lines(
        &stdout_of(&["replay", &p]),
        &[
            "2.000000 tftp 192.0.2.2:40000 -> 198.51.100.1:69 udp expect udp 198.51.100.1:any -> 192.0.2.2:40000",
            "# 3 frames, 1 TCP/UDP packets, 1 connections; 1 IP datagrams reassembled; not replayed: 1 IP fragments never reassembled (1 incomplete; frames 2)",
            "# tftp: 1 connections, 1 packets, 1 expectations, 0 refused, 0 parse errors",
        ],
    );
    let json = stdout_of(&["replay", "--json", &p]);
    assert!(json.contains(r#""frame":3,"#), "{json}");
    assert!(
        json.contains(
            r#""reassembled":1,"decapsulated":0,"fragments":[2],"fragments_dropped":{"incomplete":1,"timed_out":0,"#
        ),
        "{json}"
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cthelperd-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A capture cut inside a record: the events before it are printed, then an error
/// naming the record and its offset, exit 2.
#[test]
fn truncated_capture_is_an_error_naming_the_record() {
    let bytes = std::fs::read(data("ftp/sv-ftp-bounce.pcap")).unwrap();
    // Records 1..=27 (27 is the refused PORT) survive; record 28 is cut after 20 bytes.
    let mut off = 24;
    for _ in 0..27 {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
    }
    let path = temp_file("cut.pcap", &bytes[..off + 20]);
    let p = path.display().to_string();
    let out = cthelperd(&["replay", &p]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap());
    assert_eq!(
        stderr,
        format!(
            "cthelperd: error: {p}: record 28 at byte {off}: captured length {incl} runs past the end of the file (4 bytes left)\n"
        )
    );

    let path = temp_file("garbage.pcap", b"GIF89a....");
    let p = path.display().to_string();
    let out = cthelperd(&["replay", "--json", &p]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("cthelperd: error: {p}: file header at byte 0: not a pcap or pcapng file\n")
    );
}

#[test]
fn unreadable_file_and_bad_helper_spec_are_usage_errors() {
    let out = cthelperd(&["replay", "/nonexistent/x.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("cthelperd: error: /nonexistent/x.pcap: No such file or directory"),
        "{stderr}"
    );
    let out = cthelperd(&[
        "replay",
        "--helper",
        "rtsp:554",
        &data("ftp/sv-ftp-bounce.pcap"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "cthelperd: error: --helper \"rtsp:554\": no built-in helper named \"rtsp\"\n"
    );
}

/// `--helper ftp:PORT` moves FTP to another port, as `tcp dport PORT ct helper set
/// "ftp"` would: the bounce capture's control port 21 is rewritten to 2121.
#[test]
fn helper_on_another_port() {
    let mut bytes = std::fs::read(data("ftp/sv-ftp-bounce.pcap")).unwrap();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        // Ethernet + 20-byte IPv4 header: TCP ports at 34..38 (TCP checksums are not
        // checked by replay, as the kernel trusts verified offloads).
        for p in [off + 16 + 34, off + 16 + 36] {
            if bytes[p..p + 2] == 21u16.to_be_bytes() {
                bytes[p..p + 2].copy_from_slice(&2121u16.to_be_bytes());
            }
        }
        off += 16 + incl;
    }
    let path = temp_file("ftp2121.pcap", &bytes);
    let p = path.display().to_string();
    let out = stdout_of(&["replay", &p]);
    assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 0);
    let out = stdout_of(&["replay", "--helper", "ftp:2121", &p]);
    assert_lines(
        &out,
        &[
            "0.003443 ftp 1.1.1.2:33112 -> 2.2.2.1:2121 tcp expect tcp 2.2.2.1:any -> 1.1.1.2:59549",
            "0.009195 ftp 1.1.1.2:58316 -> 2.2.2.1:2121 tcp refused PORT 2.2.2.3:80 from 1.1.1.2 (third-party address)",
            "# 34 frames, 34 TCP/UDP packets, 2 connections",
            "# ftp: 2 connections, 34 packets, 1 expectations, 1 refused, 0 parse errors",
        ],
    );
}

/// SIP captures that carry other traffic a helper acts on. expected.json's entries for
/// files under sip/ model only SIP, so these are not disagreements with it but gaps in
/// it; each was checked by reading the payload.
const SIP_FILES_WITH_OTHER_HELPED_TRAFFIC: &[(&str, usize, &str)] = &[(
    "sip/wireshark-sip-fuzzed-aaa.pcap",
    81,
    "the capture also holds an anonymous FTP session of 192.168.1.2 to ProFTPD at \
     147.234.1.253 (frames 47-90): PASV, then \"227 Entering Passive Mode \
     (147,234,1,253,230,119).\" at frame 81, a genuine passive-mode announcement by the \
     server's own address. nf_conntrack_ftp expects 192.168.1.2 -> 147.234.1.253:58999 \
     there as well; the RETR that follows fails with 550, so no data connection is seen.",
)];

/// Replay every capture under `base`/{ftp,tftp,sip} with the default configuration: no
/// error anywhere; ftp and tftp compared with `expected`; in the SIP captures the sip
/// helper's events are left to tests/sip_corpus.rs (which compares them with `expected`,
/// with `sip` also on the other ports a capture's signalling uses) and any other
/// helper's must be a documented non-SIP session.
fn replay_tree(base: &Path, entries: &[common::json::Value]) -> usize {
    let rules = replay::rules_from_config(&Config::default());
    let mut problems = Vec::new();
    let mut n = 0;
    for dir in ["ftp", "tftp", "sip"] {
        let Ok(list) = std::fs::read_dir(base.join(dir)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = list.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let rel = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            let got = match replay::replay(&bytes, &rules) {
                Ok(got) => got,
                Err(e) => {
                    problems.push(format!("{rel}: {e}"));
                    continue;
                }
            };
            n += 1;
            let entry = entries.iter().find(|e| corpus::file_of(e) == rel);
            match (dir, entry) {
                ("ftp", Some(entry)) => problems.extend(corpus::compare_ftp(entry, &got)),
                ("tftp", Some(entry)) => problems.extend(corpus::compare_tftp(entry, &got)),
                ("sip", _) => {
                    for ev in got.events.iter().filter(|e| e.helper != "sip") {
                        let documented = SIP_FILES_WITH_OTHER_HELPED_TRAFFIC
                            .iter()
                            .any(|(f, frame, _)| *f == rel && *frame == ev.frame);
                        if !documented {
                            problems.push(format!("{rel}: unexpected {ev:?}"));
                        }
                    }
                    for (f, frame, _) in SIP_FILES_WITH_OTHER_HELPED_TRAFFIC {
                        if *f == rel
                            && !got.events.iter().any(|e| {
                                e.frame == *frame && matches!(e.kind, EventKind::Expect(_))
                            })
                        {
                            problems.push(format!("{rel}: documented frame {frame} gone"));
                        }
                    }
                }
                (_, None) => problems.push(format!("{rel}: no ground truth")),
                _ => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    n
}

/// The bundled permissive copies (FTP, TFTP, SIP): always run.
#[test]
fn bundled_captures_replay() {
    let data = corpus::data_dir();
    // The bundled expected files hold the ftp and tftp entries (SIP's: tests/sip_corpus.rs).
    let mut both = corpus::load_expected(&data.join("ftp-expected.json"));
    both.extend(corpus::load_expected(&data.join("tftp-expected.json")));
    let n = replay_tree(&data, &both);
    assert!(n >= 36 + 5 + 20, "only {n} bundled captures");
}

/// Every capture of the shared corpus, when this machine has it.
#[test]
fn shared_corpus_replays() {
    if let Some(base) = corpus::shared_corpus() {
        let n = replay_tree(&base, &corpus::load_expected(&base.join("expected.json")));
        assert!(n >= 72, "only {n} captures in the shared corpus");
    }
}

#[test]
fn documented_cases_say_why() {
    for (f, frame, why) in SIP_FILES_WITH_OTHER_HELPED_TRAFFIC {
        assert!(!why.is_empty(), "{f}#{frame}");
    }
}
