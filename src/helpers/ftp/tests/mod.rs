//! The FTP helper's tests: every command and reply form, line-start and multi-line
//! tracking, NAT rewrites, and the hostile inputs of issue #11.

use core::net::Ipv4Addr;

use super::parse::*;
use super::state::*;
use super::*;
use crate::model::Tuple;
use std::vec::Vec;

const CLI4: [u8; 4] = [192, 168, 1, 10];
const SRV4: [u8; 4] = [192, 168, 1, 20];

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

fn ct_between(cli: IpAddr, srv: IpAddr) -> Conntrack {
    let orig = Tuple {
        src: cli,
        dst: srv,
        proto: 6,
        src_port: 40000,
        dst_port: 21,
    };
    Conntrack {
        orig,
        reply: orig.reversed(),
        status: status::SEEN_REPLY | status::CONFIRMED,
        id: Some(1),
        zone: None,
    }
}

/// One FTP control connection as the kernel would present it: per-direction
/// sequence numbers and one private area.
struct Conn {
    ct: Conntrack,
    private: [u8; PRIVATE_LEN],
    next_seq: [u32; 2],
    policy: Policy,
}

impl Conn {
    fn new(ct: Conntrack) -> Conn {
        // ISNs near the wrap point so sequence arithmetic is exercised.
        Conn {
            ct,
            private: [0; PRIVATE_LEN],
            next_seq: [0xffff_fff0, 1000],
            policy: Policy::default(),
        }
    }

    fn v4() -> Conn {
        Conn::new(ct_between(v4(CLI4), v4(SRV4)))
    }

    fn v6() -> Conn {
        Conn::new(ct_between(v6("2001:db8::10"), v6("2001:db8::20")))
    }

    /// The greeting and USER: the first segment per direction, which is never parsed.
    fn warmed(mut self) -> Conn {
        self.send(Direction::Reply, b"220 ready\r\n");
        self.send(Direction::Original, b"USER anonymous\r\n");
        self
    }

    fn send_at(&mut self, dir: Direction, seq: u32, payload: &[u8]) -> Plan {
        let t = self.ct.tuple(dir);
        let pkt = Packet {
            dir,
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            transport: Transport::Tcp { seq, flags: 0x18 },
            payload,
        };
        Ftp.analyse(
            &pkt,
            &self.ct,
            &mut self.private,
            &mut Store::default(),
            self.policy,
        )
    }

    fn send(&mut self, dir: Direction, payload: &[u8]) -> Plan {
        let seq = self.next_seq[dir.index()];
        self.next_seq[dir.index()] = seq.wrapping_add(payload.len() as u32);
        self.send_at(dir, seq, payload)
    }

    fn client(&mut self, payload: &[u8]) -> Plan {
        self.send(Direction::Original, payload)
    }

    fn server(&mut self, payload: &[u8]) -> Plan {
        self.send(Direction::Reply, payload)
    }
}

fn one(a: &Plan) -> Expectation {
    assert_eq!(a.expectations.len(), 1, "{a:?}");
    assert_eq!(a.expectations[0].pairing, crate::helpers::Pairing::Single);
    a.expectations[0].exp
}

fn nothing(a: &Plan) {
    assert!(a.expectations.is_empty(), "{a:?}");
    assert!(a.refusals.is_empty(), "{a:?}");
}

#[test]
fn port_creates_expectation_from_server() {
    let mut c = Conn::v4().warmed();
    let a = c.client(b"PORT 192,168,1,10,156,64\r\n");
    let e = one(&a);
    assert_eq!(e.class, 0);
    assert_eq!(e.proto, IPPROTO_TCP);
    assert_eq!(e.src, v4(SRV4));
    assert_eq!(e.src_port, None);
    assert_eq!(e.dst, v4(CLI4));
    assert_eq!(e.dst_port, 156 * 256 + 64);
    assert_eq!(e.flags, 0);
    assert!(!a.parse_error);
    assert!(a.refusals.is_empty());
}

#[test]
fn lowercase_and_bare_lf_commands() {
    let mut c = Conn::v4().warmed();
    assert_eq!(one(&c.client(b"port 192,168,1,10,8,21\n")).dst_port, 2069);
    assert_eq!(
        one(&c.client(b"Eprt |1|192.168.1.10|6275|\r\n")).dst_port,
        6275
    );
    assert_eq!(
        one(&c.client(b"PORT   192,168,1,10,8,22  \r\n")).dst_port,
        2070
    );
}

#[test]
fn pasv_227_with_and_without_parentheses() {
    let mut c = Conn::v4().warmed();
    let e = one(&c.server(b"227 Entering Passive Mode (192,168,1,20,117,48).\r\n"));
    assert_eq!(
        (e.src, e.dst, e.dst_port),
        (v4(CLI4), v4(SRV4), 117 * 256 + 48)
    );
    let e = one(&c.server(b"227 Entering Passive Mode 192,168,1,20,4,1\r\n"));
    assert_eq!(e.dst_port, 1025);
    let e = one(&c.server(b"227 =192,168,1,20,4,2\r\n"));
    assert_eq!(e.dst_port, 1026);
    // A digit in the text before the parenthesis does not derail the parser.
    let e = one(&c.server(b"227 Mode 2 (192,168,1,20,4,3)\r\n"));
    assert_eq!(e.dst_port, 1027);
}

#[test]
fn epsv_229_uses_sender_address_and_any_delimiter() {
    let mut c = Conn::v4().warmed();
    let e = one(&c.server(b"229 Entering Extended Passive Mode (|||6446|)\r\n"));
    assert_eq!((e.src, e.dst, e.dst_port), (v4(CLI4), v4(SRV4), 6446));
    let e = one(&c.server(b"229 ok (!!!1234!)\r\n"));
    assert_eq!(e.dst_port, 1234);
    let mut c = Conn::v6().warmed();
    let e = one(&c.server(b"229 Entering Extended Passive Mode (|||50000|)\r\n"));
    assert_eq!((e.src, e.dst), (v6("2001:db8::10"), v6("2001:db8::20")));
}

#[test]
fn eprt_ipv6() {
    let mut c = Conn::v6().warmed();
    let e = one(&c.client(b"EPRT |2|2001:db8::10|5282|\r\n"));
    assert_eq!(
        (e.src, e.dst, e.dst_port),
        (v6("2001:db8::20"), v6("2001:db8::10"), 5282)
    );
    let e = one(&c.client(b"EPRT #2#2001:DB8:0:0:0:0:0:10#5283#\r\n"));
    assert_eq!(e.dst_port, 5283);
}

#[test]
fn eprt_family_mismatch_is_refused() {
    let mut c = Conn::v4().warmed();
    let a = c.client(b"EPRT |2|2001:db8::10|5282|\r\n");
    assert!(a.expectations.is_empty());
    assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
    assert_eq!(a.refusals[0].what, "EPRT");
    let mut c = Conn::v6().warmed();
    let a = c.client(b"EPRT |1|192.168.1.10|5282|\r\n");
    assert!(a.expectations.is_empty());
    assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
}

#[test]
fn bounce_to_third_party_is_refused() {
    let mut c = Conn::v4().warmed();
    let a = c.client(b"PORT 10,0,0,99,0,80\r\n");
    assert!(a.expectations.is_empty());
    assert_eq!(
        a.refusals[0],
        Refusal {
            what: "PORT",
            announced: v4([10, 0, 0, 99]),
            port: 80,
            sender: v4(CLI4),
            reason: RefusalReason::ThirdPartyAddress,
        }
    );
    assert!(!a.parse_error);
    let a = c.server(b"227 Entering Passive Mode (10,0,0,99,0,80)\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::ThirdPartyAddress);
    assert_eq!(a.refusals[0].sender, v4(SRV4));
}

#[test]
fn port_zero_is_refused() {
    let mut c = Conn::v4().warmed();
    let a = c.client(b"PORT 192,168,1,10,0,0\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::BadPort);
    let a = c.server(b"229 x (|||0|)\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::BadPort);
    assert!(a.expectations.is_empty());
}

#[test]
fn malformed_arguments_set_parse_error() {
    let cases: &[&[u8]] = &[
        b"PORT 1234\r\n",
        b"PORT\r\n",
        b"PORT 192,168,1,10,256,1\r\n",
        b"PORT 192,168,1,10,99999999999,1\r\n",
        b"PORT 192,168,1,10,1\r\n",
        b"PORT 192,168,1,10,1,2,3\r\n",
        b"PORT 192,168,1,10,1,2x\r\n",
        b"PORT ,,,,,\r\n",
        b"EPRT |1|192.168.1.10|99999|\r\n",
        b"EPRT |1|192.168.1.10|5282\r\n",
        b"EPRT |3|192.168.1.10|5282|\r\n",
        b"EPRT 1|192.168.1.10|5282|\r\n",
        b"EPRT |1|192.168.1|5282|\r\n",
        b"EPRT |2|2001:db8::zz|5282|\r\n",
        b"EPRT |2|\xff\xfe|5282|\r\n",
        b"EPRT ||\r\n",
        b"EPRT\r\n",
    ];
    for case in cases {
        let mut c = Conn::v4().warmed();
        let a = c.client(case);
        assert!(a.parse_error, "{}", String::from_utf8_lossy(case));
        assert!(a.expectations.is_empty());
    }
    let replies: &[&[u8]] = &[
        b"227 Entering Passive Mode\r\n",
        b"227 (192,168,1,20,1)\r\n",
        b"227 (192,168,1,20,300,1)\r\n",
        b"227 (192,168,1,20,1,1,1)\r\n",
        b"229 Entering Extended Passive Mode\r\n",
        b"229 (|||)\r\n",
        b"229 (||6446|)\r\n",
        b"229 (111111)\r\n",
        b"229 (|||70000|)\r\n",
        b"229 (|||123)\r\n",
    ];
    for case in replies {
        let mut c = Conn::v4().warmed();
        let a = c.server(case);
        assert!(a.parse_error, "{}", String::from_utf8_lossy(case));
        assert!(a.expectations.is_empty());
    }
}

#[test]
fn unrelated_lines_are_ignored() {
    let mut c = Conn::v4().warmed();
    for line in [
        &b"PORTAL 1,2,3,4,5,6\r\n"[..],
        b"LIST\r\n",
        b"RETR PORT 1,2,3,4,5,6\r\n",
    ] {
        let a = c.client(line);
        nothing(&a);
        assert!(!a.parse_error);
    }
    // Replies are not commands and commands are not replies.
    nothing(&c.server(b"PORT 192,168,1,20,4,1\r\n"));
    nothing(&c.client(b"227 (192,168,1,10,4,1)\r\n"));
    nothing(&c.server(b"2270 (192,168,1,20,4,1)\r\n"));
}

#[test]
fn first_segment_per_direction_is_not_parsed() {
    // Kernel behaviour: no line start is known before a segment ending in '\n'.
    let mut c = Conn::v4();
    let a = c.client(b"PORT 192,168,1,10,4,1\r\n");
    nothing(&a);
    assert!(a.private_changed, "the line start after it is recorded");
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,2\r\n")).dst_port, 1026);
    nothing(&c.server(b"227 (192,168,1,20,4,3)\r\n"));
    assert_eq!(one(&c.server(b"227 (192,168,1,20,4,4)\r\n")).dst_port, 1028);
}

#[test]
fn original_before_reply_seen_is_ignored() {
    let mut c = Conn::v4();
    c.ct.status = 0;
    let a = c.client(b"USER x\r\n");
    assert!(!a.private_changed);
    assert_eq!(c.private, [0; PRIVATE_LEN]);
}

#[test]
fn segment_not_at_line_start_is_not_parsed() {
    let mut c = Conn::v4().warmed();
    // A command split across two segments: neither part is parsed.
    let a = c.client(b"PORT 192,168,");
    assert!(a.parse_error, "a recognised command we cannot finish");
    nothing(&a);
    let a = c.client(b"1,10,4,1\r\n");
    nothing(&a);
    assert!(!a.parse_error);
    // The line after it is at a recorded start again.
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,2\r\n")).dst_port, 1026);
    // Data injected at an arbitrary position (e.g. inside a file name) is ignored.
    let seq = c.next_seq[0].wrapping_add(7);
    nothing(&c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,3\r\n"));
}

#[test]
fn short_prefix_of_command_at_segment_end_flags_parse_error() {
    let mut c = Conn::v4().warmed();
    assert!(c.client(b"PO").parse_error);
    let mut c = Conn::v4().warmed();
    assert!(!c.client(b"NO").parse_error);
    let mut c = Conn::v4().warmed();
    assert!(c.server(b"22").parse_error);
}

#[test]
fn retransmission_of_a_parsed_segment_is_parsed_again() {
    let mut c = Conn::v4().warmed();
    let seq = c.next_seq[0];
    assert_eq!(c.client(b"PORT 192,168,1,10,4,1\r\n").expectations.len(), 1);
    // Both the old start and the new one are remembered (2 per direction).
    assert_eq!(
        c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,1\r\n")
            .expectations
            .len(),
        1
    );
}

#[test]
fn pipelined_commands_in_one_segment() {
    // Like nf_conntrack_ftp, only the first line of a segment is parsed. This used to
    // parse every line (two expectations here), which let an echoing server forge a
    // 227 on a later line (issue #11). A client that pipelines PORT behind another
    // command loses active mode through the helper, as it does with the kernel's.
    let mut c = Conn::v4().warmed();
    let a = c.client(b"TYPE I\r\nPORT 192,168,1,10,4,1\r\nPORT 192,168,1,10,4,2\r\n");
    nothing(&a);
    assert!(!a.parse_error);
    // A PORT first in the segment is parsed; the PORT after it is not.
    let a = c.client(b"PORT 192,168,1,10,4,3\r\nPORT 192,168,1,10,4,4\r\n");
    assert_eq!(one(&a).dst_port, 1027);
    // The next segment starts at a recorded line start again.
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,5\r\n")).dst_port, 1029);
}

#[test]
fn port_after_another_command_in_the_same_segment_is_not_parsed() {
    let mut c = Conn::v4().warmed();
    nothing(&c.client(b"NOOP\r\nPORT 192,168,1,10,4,1\r\n"));
    nothing(&c.client(b"NOOP\r\neprt |1|192.168.1.10|1025|\r\n"));
    // An unfinished PORT on a later line is not a parse error: it was never going
    // to be parsed.
    assert!(!c.client(b"NOOP\r\nPORT 192,168,").parse_error);
}

#[test]
fn echoed_line_feed_cannot_forge_a_227() {
    // Issue #11: a port-forwarded server echoes a client-chosen line feed in a reply.
    // An outside client must not get a pinhole to the server's port 22 out of it.
    let ct = port_forwarded();
    let mut c = Conn::new(ct).warmed();
    for seg in [
        &b"550 foo\n227 Entering Passive Mode (198,51,100,2,0,22): x\r\n"[..],
        b"550 foo\r\n227 Entering Passive Mode (198,51,100,2,0,22)\r\n",
        b"500 x\n229 Entering Extended Passive Mode (|||22|)\r\n",
    ] {
        let a = c.server(seg);
        assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
        assert!(a.refusals.is_empty() && !a.parse_error, "{a:?}");
    }
    // The session itself still works: a 227 that starts a segment is honoured.
    let a = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80).\r\n");
    assert_eq!(one(&a).dst, ct.orig.dst);
    // Without NAT the same.
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"550 foo\n227 Entering Passive Mode (192,168,1,20,0,22)\r\n"));
    assert_eq!(one(&c.server(b"227 (192,168,1,20,4,1)\r\n")).dst_port, 1025);
}

#[test]
fn an_echoed_line_feed_at_a_segment_end_is_no_reply_line_start() {
    // The same attack with the segmentation chosen by the attacker (a tiny MSS): the
    // echoed bare LF ends one segment and the forged 227 starts the next. Reply lines
    // end in CRLF; a bare LF at a segment's end records no line start.
    let ct = port_forwarded();
    let mut c = Conn::new(ct).warmed();
    nothing(&c.server(b"550 foo\n"));
    let a = c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n");
    assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
    // After a CRLF the next reply is parsed again.
    nothing(&c.server(b"200 ok\r\n"));
    assert_eq!(
        one(&c.server(b"227 Entering Passive Mode (198,51,100,2,195,80)\r\n")).dst,
        ct.orig.dst
    );
    // Clients may end commands with a bare LF (they only announce their own endpoint).
    let mut c = Conn::v4().warmed();
    nothing(&c.client(b"NOOP\n"));
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,1\n")).dst_port, 1025);
}

#[test]
fn multiline_reply_body_in_the_next_segment_is_not_parsed() {
    // Each segment starts at a recorded line start, but the body of a multi-line
    // reply is text (a file name, an echoed argument), not a reply.
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"211-Features:\r\n"));
    nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,1)\r\n"));
    nothing(&c.server(b"229 Entering Extended Passive Mode (|||1026|)\r\n"));
    nothing(&c.server(b"211-still the body\r\n"));
    nothing(&c.server(b"2110 not the end\r\n"));
    // The closing line "211 " ends the reply; the next reply is parsed again.
    nothing(&c.server(b"211 End\r\n"));
    let a = c.server(b"227 Entering Passive Mode (192,168,1,20,4,3)\r\n");
    assert_eq!(one(&a).dst_port, 1027);
}

#[test]
fn multiline_reply_split_anywhere_is_followed() {
    let mut c = Conn::v4().warmed();
    // Segment boundaries inside lines, as a long STAT reply is cut at the MSS.
    nothing(&c.server(b"213-Status of /:\r\n-rw-r--r-- 1 ftp ftp 0 a\r\n-rw-r"));
    nothing(&c.server(b"--r-- 1 ftp ftp 0 b\r\n"));
    nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,1)\r\n"));
    // A line that starts like the closing line but is not one ("21" + "39 ...").
    nothing(&c.server(b"21"));
    nothing(&c.server(b"39 bytes\r\n"));
    nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,2)\r\n"));
    // The closing line cut after its first two digits.
    nothing(&c.server(b"-rw-r--r-- 1 ftp ftp 0 c\r\n21"));
    nothing(&c.server(b"3 End of status\r\n"));
    let a = c.server(b"227 Entering Passive Mode (192,168,1,20,4,3)\r\n");
    assert_eq!(one(&a).dst_port, 1027);
    // A multi-line reply opened on a later line of a segment counts too.
    nothing(&c.server(b"200 ok\r\n211-Features:\r\n"));
    nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,4)\r\n"));
}

#[test]
fn retransmitted_multiline_body_stays_body() {
    // The client withholds its ACK and the server sends a segment again: the line
    // start it begins at must be judged as it was the first time.
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"211-Features:\r\n"));
    let body = c.next_seq[1];
    nothing(&c.server(b"227 (192,168,1,20,4,1)\r\n211 End\r\n"));
    nothing(&c.send_at(
        Direction::Reply,
        body,
        b"227 (192,168,1,20,4,1)\r\n211 End\r\n",
    ));
    // After the closing line, replies are parsed again.
    assert_eq!(one(&c.server(b"227 (192,168,1,20,4,2)\r\n")).dst_port, 1026);
}

#[test]
fn closing_line_of_a_multiline_227_is_parsed() {
    // RFC 959 allows a multi-line 227; its last line "227 " is a reply line.
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"227-Entering Passive Mode\r\n"));
    assert_eq!(one(&c.server(b"227 (192,168,1,20,4,1)\r\n")).dst_port, 1025);
}

#[test]
fn multiline_reply_body_is_not_parsed() {
    let mut c = Conn::v4().warmed();
    let a = c.server(
        b"230-Welcome\r\n227 (192,168,1,20,4,1)\r\n230 Logged in\r\n227 (192,168,1,20,4,2)\r\n",
    );
    // Only the first line of a segment is parsed, and here it opens a multi-line reply.
    nothing(&a);
    let a = c.server(b"227-Entering Passive Mode\r\n227 (192,168,1,20,4,3)\r\n");
    nothing(&a);
    // RFC 959 multi-line text may start with other codes; only "ddd " of the same code ends it.
    let a = c.server(b"211-Features\r\n229 (|||1|)\r\n211 End\r\n");
    nothing(&a);
}

#[test]
fn huge_lines_and_garbage_do_not_panic() {
    let mut c = Conn::v4().warmed();
    let mut big = b"PORT ".to_vec();
    big.extend(std::iter::repeat_n(b'1', 60000));
    big.extend_from_slice(b"\r\n");
    assert!(c.client(&big).parse_error);
    let mut big = b"227 ".to_vec();
    big.extend(std::iter::repeat_n(b',', 60000));
    big.push(b'\n');
    assert!(c.server(&big).parse_error);
    let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    c.client(&garbage);
    c.server(&garbage);
    c.client(b"\n\n\n\r\r\n");
    nothing(&c.client(b"\n"));
}

#[test]
fn udp_and_empty_payloads_are_ignored() {
    let c = Conn::v4();
    let t = c.ct.orig;
    let mut private = [0u8; PRIVATE_LEN];
    let pkt = Packet {
        dir: Direction::Original,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        transport: Transport::Udp,
        payload: b"PORT 192,168,1,10,4,1\r\n",
    };
    let a = Ftp.analyse(
        &pkt,
        &c.ct,
        &mut private,
        &mut Store::default(),
        Policy::default(),
    );
    assert!(!a.private_changed);
    let pkt = Packet {
        transport: Transport::Tcp {
            seq: 1,
            flags: 0x10,
        },
        payload: b"",
        ..pkt
    };
    assert!(
        !Ftp.analyse(
            &pkt,
            &c.ct,
            &mut private,
            &mut Store::default(),
            Policy::default()
        )
        .private_changed
    );
}

#[test]
fn segment_at_an_unknown_position_keeps_the_multiline_state() {
    // The client acknowledges only part of a multi-line reply and the server sends the
    // rest again from there: a segment that starts mid-line, at no recorded position.
    // Its end is a line start (as in the kernel), still inside the reply.
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"213-Status:\r\n"));
    let seq = c.next_seq[1].wrapping_add(100);
    nothing(&c.send_at(Direction::Reply, seq, b"ile1\r\n"));
    let seq = seq.wrapping_add(6);
    let body = b"227 (192,168,1,20,4,1)\r\n";
    nothing(&c.send_at(Direction::Reply, seq, body));
    // The closing line ends it, as anywhere.
    let seq = seq.wrapping_add(body.len() as u32);
    nothing(&c.send_at(Direction::Reply, seq, b"213 End\r\n"));
    let a = c.send_at(Direction::Reply, seq.wrapping_add(9), body);
    assert_eq!(one(&a).dst_port, 1025);
}

#[test]
fn low_ports_are_refused_on_a_port_forward_unless_allowed() {
    let ct = port_forwarded();
    let mut c = Conn::new(ct).warmed();
    for (seg, what, port) in [
        (
            &b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n"[..],
            "227",
            22,
        ),
        (
            b"229 Entering Extended Passive Mode (|||1023|)\r\n",
            "229",
            1023,
        ),
    ] {
        let a = c.server(seg);
        assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
        assert_eq!(a.refusals.len(), 1, "{a:?}");
        let r = a.refusals[0];
        assert_eq!(
            (r.reason, r.what, r.port),
            (RefusalReason::LowPort, what, port)
        );
    }
    assert_eq!(one(&c.server(b"229 (|||1024|)\r\n")).dst_port, 1024);
    // The outside client asking the server to connect to its own port 80.
    let a = c.client(b"PORT 203,0,113,9,0,80\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::LowPort);
    // Configured to allow them.
    c.policy = Policy {
        allow_low_ports: true,
        ..Policy::default()
    };
    let a = c.server(b"227 Entering Passive Mode (198,51,100,2,0,22)\r\n");
    assert_eq!(one(&a).dst_port, 22);
}

#[test]
fn low_ports_are_refused_without_nat_too_unless_allowed() {
    // A client's PORT to its own port 23 would let the server (or whoever steers it)
    // open a connection to the client's telnet; a masqueraded client likewise. FTP
    // clients and servers announce ephemeral ports, so nothing legitimate is lost.
    let (cli, public, srv) = MASQ4;
    for (ct, low, first_high) in [
        (
            masqueraded(cli, public, srv),
            &b"PORT 192,0,2,2,0,23\r\n"[..],
            &b"PORT 192,0,2,2,4,0\r\n"[..],
        ),
        (
            Conn::v4().ct,
            b"PORT 192,168,1,10,0,23\r\n",
            b"PORT 192,168,1,10,4,0\r\n",
        ),
    ] {
        let mut c = Conn::new(ct).warmed();
        let a = c.client(low);
        assert!(a.expectations.is_empty() && a.rewrites.is_empty(), "{a:?}");
        assert_eq!(a.refusals[0].reason, RefusalReason::LowPort);
        assert_eq!(one(&c.client(first_high)).dst_port, 1024);
    }
    let mut c = Conn::v4().warmed();
    let a = c.server(b"227 (192,168,1,20,0,22)\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::LowPort);
    let a = c.server(b"229 (|||1023|)\r\n");
    assert_eq!(a.refusals[0].reason, RefusalReason::LowPort);
    c.policy = Policy {
        allow_low_ports: true,
        ..Policy::default()
    };
    assert_eq!(one(&c.server(b"227 (192,168,1,20,0,22)\r\n")).dst_port, 22);
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,0,23\r\n")).dst_port, 23);
}

#[test]
fn private_data_written_before_multiline_tracking_still_decodes() {
    // Layout 1 as written when bytes 20..32 were reserved (zero).
    let mut old = [0u8; PRIVATE_LEN];
    old[..4].copy_from_slice(&[LAYOUT_VERSION, 2, 1, 0]);
    old[4..8].copy_from_slice(&100u32.to_be_bytes());
    old[8..12].copy_from_slice(&200u32.to_be_bytes());
    old[12..16].copy_from_slice(&300u32.to_be_bytes());
    let st = State::decode(&old);
    assert!(st.at_line_start(Direction::Original, 100));
    assert!(st.at_line_start(Direction::Original, 200));
    assert_eq!(
        st.line_start(Direction::Reply, 300),
        Some(0),
        "no multi-line reply"
    );
    assert_eq!(st.cursor, None);
    let mut again = old;
    assert!(!st.encode(&mut again), "re-encodes to the same bytes");
}

#[test]
fn multiline_state_in_private_data() {
    let mut c = Conn::v4().warmed();
    nothing(&c.server(b"211-Features:\r\n"));
    let at = c.next_seq[1];
    let st = State::decode(&c.private);
    assert_eq!(st.line_start(Direction::Reply, at), Some(211));
    assert_eq!(
        st.cursor,
        Some(Cursor {
            seq: at,
            line: Line::start(211)
        })
    );
    // Reply line starts [greeting end: none, here: 211], cursor here, at a line start.
    assert_eq!(&c.private[20..24], &[0, 0, 0, 211]);
    assert_eq!(&c.private[24..28], &at.to_be_bytes());
    assert_eq!(&c.private[28..32], &[0, 211, 0, 1]);
    assert_eq!(c.private[3], FLAG_CURSOR);
    // Cut after the first two digits of what may be the closing line.
    nothing(&c.server(b" EPSV\r\n21"));
    let st = State::decode(&c.private);
    let line = Line::Head {
        code: 211,
        len: 2,
        digits: 21,
    };
    assert_eq!(st.cursor.map(|c| c.line), Some(line));
    assert_eq!(&c.private[28..32], &[0, 211, 0x07, 0xe6], "1 + 2000 + 21");
    let mut again = c.private;
    assert!(!st.encode(&mut again));
    // Impossible values are not trusted: the whole area reads as fresh.
    for (off, bytes) in [
        (22, [0x03, 0xe8]), // code 1000
        (22, [0, 50]),      // code 50
        (28, [0x03, 0xe8]), // cursor code 1000
        (30, [0x13, 0x88]), // head 5000
        (30, [0x07, 0xd6]), // 1 + 2000 + 5: two digits "05"
    ] {
        let mut bad = c.private;
        bad[off..off + 2].copy_from_slice(&bytes);
        assert_eq!(State::decode(&bad), State::default(), "{off} {bytes:?}");
    }
}

#[test]
fn multiline_line_rules() {
    let after = |code: u16, line: &[u8]| Line::start(code).feed_all(line).end();
    assert_eq!(after(0, b"211-Features"), 211);
    assert_eq!(after(0, b"211 one line"), 0);
    assert_eq!(after(0, b"011-x"), 0, "not a reply code");
    assert_eq!(after(0, b"21-x"), 0);
    assert_eq!(after(211, b"211 End"), 0);
    assert_eq!(after(211, b"211"), 0, "a closing line without text");
    assert_eq!(after(211, b"211\r"), 0);
    assert_eq!(after(211, b"211-more"), 211);
    assert_eq!(after(211, b"2110"), 211);
    assert_eq!(after(211, b"212 End"), 211);
    assert_eq!(after(211, b" 211 End"), 211);
    assert_eq!(after(211, b""), 211);
    // The same, fed in pieces.
    assert_eq!(track(Line::start(211), b"21").feed_all(b"1 x").end(), 0);
    assert_eq!(track(Line::start(0), b"2").feed_all(b"27-").end(), 227);
    assert_eq!(
        track(Line::start(0), b"x\n150-a\nb\n150 c\n226-d\n"),
        Line::start(226)
    );
}

#[test]
fn private_data_round_trip() {
    let mut st = State::default();
    st.record_line_start(Direction::Original, 0xffff_fffe);
    st.record_line_start(Direction::Reply, 7);
    st.record_line_start(Direction::Reply, 9);
    st.pickup[1] = true;
    let mut buf = [0u8; PRIVATE_LEN];
    assert!(st.encode(&mut buf));
    assert!(!st.encode(&mut buf), "unchanged state is not a change");
    assert_eq!(buf[0], LAYOUT_VERSION);
    assert_eq!(State::decode(&buf), st);
    assert!(
        buf[20..].iter().all(|&b| b == 0),
        "reserved bytes stay zero"
    );
    assert_eq!(State::decode(&[0; PRIVATE_LEN]), State::default());
}

#[test]
fn garbage_private_data_is_fresh() {
    assert_eq!(State::decode(&[0xff; PRIVATE_LEN]), State::default());
    assert_eq!(State::decode(&[1; 5]), State::default());
    let mut bad = [0u8; PRIVATE_LEN];
    bad[0] = LAYOUT_VERSION;
    bad[1] = 3;
    assert_eq!(State::decode(&bad), State::default());
    // Processing with garbage private data neither panics nor trusts it.
    let mut c = Conn::v4();
    c.private = [0xff; PRIVATE_LEN];
    nothing(&c.client(b"PORT 192,168,1,10,4,1\r\n"));
    assert_eq!(c.private[0], LAYOUT_VERSION);
    // A too-short private area: processing still works, nothing is written.
    let t = c.ct.orig;
    let pkt = Packet {
        dir: Direction::Original,
        src: t.src,
        dst: t.dst,
        src_port: t.src_port,
        dst_port: t.dst_port,
        transport: Transport::Tcp {
            seq: 5,
            flags: 0x18,
        },
        payload: b"X\r\n",
    };
    let mut short = [0u8; 4];
    assert!(
        !Ftp.analyse(
            &pkt,
            &c.ct,
            &mut short,
            &mut Store::default(),
            Policy::default()
        )
        .private_changed
    );
}

#[test]
fn pickup_parses_next_segment_once() {
    let mut c = Conn::v4();
    State::picked_up().encode(&mut c.private);
    assert_eq!(one(&c.client(b"PORT 192,168,1,10,4,1\r\n")).dst_port, 1025);
    let seq = c.next_seq[0].wrapping_add(3);
    nothing(&c.send_at(Direction::Original, seq, b"PORT 192,168,1,10,4,2\r\n"));
}

#[test]
fn line_start_replacement_follows_the_kernel() {
    let mut st = State::default();
    let o = Direction::Original;
    st.record_line_start(o, 100);
    st.record_line_start(o, 200);
    st.record_line_start(o, 300); // replaces 100
    assert!(st.at_line_start(o, 200) && st.at_line_start(o, 300) && !st.at_line_start(o, 100));
    st.record_line_start(o, 50); // older than both: ignored
    assert!(!st.at_line_start(o, 50));
    // Across the wrap: 0xffff_fff0 is before 0x10.
    let mut st = State::default();
    st.record_line_start(o, 0xffff_fff0);
    st.record_line_start(o, 0xffff_fff8);
    st.record_line_start(o, 0x10);
    assert!(st.at_line_start(o, 0x10) && st.at_line_start(o, 0xffff_fff8));
    assert!(!st.at_line_start(Direction::Reply, 0x10));
}

#[test]
fn after_packets_passed_unseen_the_second_reply_is_parsed_again() {
    // A daemon restart: the kernel passed a few PASV/227 exchanges without a helper
    // (queue bypass), so the recorded line starts are stale. As in the kernel, the
    // first reply seen is not at a known line start and is not parsed; its end is
    // recorded, so the next one is.
    let mut c = Conn::v4().warmed();
    one(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,1)\r\n"));
    for _ in 0..3 {
        let seq = c.next_seq;
        c.next_seq[0] = seq[0].wrapping_add(6);
        c.next_seq[1] = seq[1].wrapping_add(47);
    }
    c.client(b"PASV\r\n");
    nothing(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,2)\r\n"));
    c.client(b"PASV\r\n");
    assert_eq!(
        one(&c.server(b"227 Entering Passive Mode (192,168,1,20,4,3)\r\n")).dst_port,
        1027
    );
}

// ---------------------------------------------------------------- NAT fixtures (nat.rs)

/// Inside client, the router's outside address, server (IPv4).
const MASQ4: (IpAddr, IpAddr, IpAddr) = (
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
);

/// Client `cli`:40000 behind a router masquerading it as `public`:61000, talking to
/// `srv`:21.
fn masqueraded(cli: IpAddr, public: IpAddr, srv: IpAddr) -> Conntrack {
    let orig = Tuple {
        src: cli,
        dst: srv,
        proto: 6,
        src_port: 40000,
        dst_port: 21,
    };
    let mut reply = orig.reversed();
    reply.dst = public;
    reply.dst_port = 61000;
    Conntrack {
        orig,
        reply,
        status: status::SEEN_REPLY | status::CONFIRMED | status::SRC_NAT,
        id: Some(2),
        zone: None,
    }
}

/// Outside client 203.0.113.9:50000 reaching a port forward on 192.0.2.1:21 that
/// leads to the server 198.51.100.2:21.
fn port_forwarded() -> Conntrack {
    let orig = Tuple {
        src: v4([203, 0, 113, 9]),
        dst: v4([192, 0, 2, 1]),
        proto: 6,
        src_port: 50000,
        dst_port: 21,
    };
    let reply = Tuple {
        src: v4([198, 51, 100, 2]),
        dst: orig.src,
        proto: 6,
        src_port: 21,
        dst_port: 50000,
    };
    Conntrack {
        orig,
        reply,
        status: status::SEEN_REPLY | status::CONFIRMED | status::DST_NAT,
        id: Some(3),
        zone: None,
    }
}

mod nat;
