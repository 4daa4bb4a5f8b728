//! TFTP helper (RFC 1350, options RFC 2347), modelled on the kernel's
//! net/netfilter/nf_conntrack_tftp.c.
//!
//! A TFTP transfer starts with a read (RRQ) or write (WRQ) request from the client to
//! port 69; the server answers from a new port of its own, to the client's port. That
//! answer is a new UDP flow, which a stateful firewall drops unless it is expected. So on
//! a request we expect one connection: from the server (the reply tuple's source), any
//! source port, to the client as the server sees it (the reply tuple's destination
//! address and port, which differ from the packet's source under SNAT), UDP.
//!
//! What carries over from the kernel, and where we deliberately differ:
//! - The expectation is built from the conntrack's reply tuple, exactly as the kernel
//!   does, so it is right whether or not the connection is NATed.
//! - Only Original-direction packets are looked at: a request travels from the client.
//!   The kernel does not check the direction, but a reply-direction "request" would
//!   have to come from port 69 towards the client and is not TFTP.
//! - The kernel acts on the opcode alone (two bytes). We parse the whole request and
//!   act only on a well-formed one: opcode 1 or 2, a non-empty NUL-terminated file name,
//!   a NUL-terminated mode that is "netascii", "octet" or "mail" (case-insensitive), then
//!   zero or more option name/value pairs (RFC 2347: non-empty name, value possibly
//!   empty, each NUL-terminated). Trailing NUL bytes after the last complete field are
//!   accepted as padding (some boot ROMs pad requests). Anything else — a truncated
//!   field, an empty file name, an unknown mode, an option without a value, bytes after
//!   the last NUL — is reported as `parse_error` and creates nothing: a server answers
//!   such a request with an ERROR at most, and a pinhole for traffic that is not TFTP
//!   is what a helper must not open. File names are not checked for netascii: servers
//!   accept UTF-8 and other bytes, and the name does not influence the expectation.
//! - DATA (3), ACK (4), ERROR (5) and OACK (6) create nothing and are not errors: they
//!   reach the master connection only when a server answers from port 69 itself.
//!   Any other opcode, or a payload shorter than an opcode, is a parse error.
//! - No private data: the request is a connection's first packet and carries all we
//!   need, so the daemon keeps no state and never writes help info (the kernel refuses
//!   a help-info update for a helper registered with length 0, and would drop the
//!   expectation attached to that verdict with it).

use crate::helpers::{Helper, Packet, Plan, Policy, Store, Transport};
use crate::model::{Conntrack, Direction, ExpectNat, Expectation, IPPROTO_UDP};

/// Well-known TFTP server port.
pub const PORT: u16 = 69;

/// Private data registered with the kernel: none.
pub const PRIVATE_LEN: usize = 0;

/// TFTP opcodes (RFC 1350, RFC 2347).
pub mod opcode {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

/// Read or write request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Read,
    Write,
}

impl RequestKind {
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::Read => "RRQ",
            RequestKind::Write => "WRQ",
        }
    }
}

/// Transfer mode of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Netascii,
    Octet,
    Mail,
}

/// A well-formed request, as far as the helper cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestKind,
    pub mode: Mode,
    /// Number of option name/value pairs (RFC 2347).
    pub options: usize,
}

/// Why a payload is not something the helper acts on or ignores cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer than two bytes: no opcode.
    NoOpcode,
    /// An opcode TFTP does not define.
    UnknownOpcode(u16),
    /// A request field runs to the end of the payload without its NUL.
    Unterminated,
    /// The file name is empty.
    EmptyFileName,
    /// The mode is not netascii, octet or mail.
    UnknownMode,
    /// An option name without its value (or an empty option name followed by data).
    BadOption,
}

/// What a payload on the master connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    /// DATA, ACK, ERROR or OACK: legitimate, nothing to do.
    Other(u16),
}

/// Split off one NUL-terminated field: (field without the NUL, rest after it).
fn field(buf: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let nul = buf
        .iter()
        .position(|&c| c == 0)
        .ok_or(Malformed::Unterminated)?;
    let name = buf.get(..nul).ok_or(Malformed::Unterminated)?;
    let rest = buf.get(nul + 1..).ok_or(Malformed::Unterminated)?;
    Ok((name, rest))
}

fn mode_of(text: &[u8]) -> Option<Mode> {
    if text.eq_ignore_ascii_case(b"netascii") {
        Some(Mode::Netascii)
    } else if text.eq_ignore_ascii_case(b"octet") {
        Some(Mode::Octet)
    } else if text.eq_ignore_ascii_case(b"mail") {
        Some(Mode::Mail)
    } else {
        None
    }
}

/// Classify a TFTP payload, validating requests completely (see the module notes for
/// how strict this is). Never allocates; the loop is bounded by the payload length.
pub fn parse(payload: &[u8]) -> Result<Message, Malformed> {
    let (op, body) = match payload {
        [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
        _ => return Err(Malformed::NoOpcode),
    };
    let kind = match op {
        opcode::RRQ => RequestKind::Read,
        opcode::WRQ => RequestKind::Write,
        opcode::DATA | opcode::ACK | opcode::ERROR | opcode::OACK => {
            return Ok(Message::Other(op));
        }
        other => return Err(Malformed::UnknownOpcode(other)),
    };
    let (file, rest) = field(body)?;
    if file.is_empty() {
        return Err(Malformed::EmptyFileName);
    }
    let (mode, mut rest) = field(rest)?;
    let mode = mode_of(mode).ok_or(Malformed::UnknownMode)?;
    let mut options = 0;
    // Each pass consumes at least one byte (a NUL), so this ends.
    while !rest.is_empty() {
        if rest.iter().all(|&c| c == 0) {
            // Padding after the last field.
            break;
        }
        let (name, after_name) = field(rest)?;
        if name.is_empty() {
            return Err(Malformed::BadOption);
        }
        let (_value, after_value) = field(after_name).map_err(|_| Malformed::BadOption)?;
        options += 1;
        rest = after_value;
    }
    Ok(Message::Request(Request {
        kind,
        mode,
        options,
    }))
}

/// The expectation a request on `ct` asks for: the server's answer, from any port, to
/// where the server sends its replies (the reply tuple: after NAT, the router's outside
/// address and port). On a NATed connection the expected flow follows the master's
/// translation back to the client's real address and port, as the kernel's nf_nat_tftp
/// arranges; the payload is never rewritten.
pub fn expectation_for(ct: &Conntrack) -> Expectation {
    let nat = ct.is_nated().then_some(ExpectNat {
        dir: Direction::Reply,
        saved_addr: ct.orig.src,
        saved_port: ct.orig.src_port,
    });
    Expectation {
        class: crate::helpers::registry::TFTP_DATA,
        proto: IPPROTO_UDP,
        src: ct.reply.src,
        src_port: None,
        dst: ct.reply.dst,
        dst_port: ct.reply.dst_port,
        flags: 0,
        nat,
        helper: None,
    }
}

/// The TFTP helper. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tftp;

impl Tftp {
    pub const fn new() -> Tftp {
        Tftp
    }
}

impl Helper for Tftp {
    /// `policy.allow_low_ports` does not apply: the expectation is towards the client's
    /// own port, opened from the server, never a pinhole towards the forwarded server.
    fn analyse(
        &self,
        pkt: &Packet<'_>,
        ct: &Conntrack,
        _private: &mut [u8],
        _store: &mut Store,
        _policy: Policy,
    ) -> Plan {
        let mut plan = Plan::default();
        if pkt.transport != Transport::Udp
            || pkt.dir != Direction::Original
            || ct.orig.proto != IPPROTO_UDP
        {
            return plan;
        }
        match parse(pkt.payload) {
            Ok(Message::Request(_)) => {
                // Cannot fail: the plan holds MAX_EXPECTATIONS_PER_PACKET (> 0) and is empty.
                let _ = plan.expect(expectation_for(ct));
            }
            Ok(Message::Other(_)) => {}
            Err(_) => plan.parse_error = true,
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Tuple, status};
    use core::net::{IpAddr, Ipv4Addr};

    const CLI4: [u8; 4] = [192, 168, 1, 10];
    const SRV4: [u8; 4] = [192, 168, 1, 20];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    /// A client:port -> server:69 conntrack; `nat_cli` is the client as the server sees
    /// it (the reply destination) when the router masquerades.
    fn ct(cli: IpAddr, srv: IpAddr, nat_cli: Option<(IpAddr, u16)>) -> Conntrack {
        let (rdst, rport) = nat_cli.unwrap_or((cli, 40000));
        Conntrack {
            orig: Tuple {
                src: cli,
                dst: srv,
                proto: IPPROTO_UDP,
                src_port: 40000,
                dst_port: PORT,
            },
            reply: Tuple {
                src: srv,
                dst: rdst,
                proto: IPPROTO_UDP,
                src_port: PORT,
                dst_port: rport,
            },
            status: if nat_cli.is_some() {
                status::SRC_NAT
            } else {
                0
            },
            id: Some(7),
            zone: None,
        }
    }

    fn run(ct: &Conntrack, dir: Direction, payload: &[u8]) -> Plan {
        let t = ct.tuple(dir);
        let pkt = Packet {
            dir,
            src: t.src,
            dst: t.dst,
            src_port: t.src_port,
            dst_port: t.dst_port,
            transport: Transport::Udp,
            payload,
        };
        let mut private = [0u8; 0];
        Tftp.analyse(
            &pkt,
            ct,
            &mut private,
            &mut Store::default(),
            Policy::default(),
        )
    }

    fn run4(payload: &[u8]) -> Plan {
        run(&ct(v4(CLI4), v4(SRV4), None), Direction::Original, payload)
    }

    fn assert_expects(a: &Plan, src: IpAddr, dst: IpAddr, dport: u16) {
        assert_expects_nat(a, src, dst, dport, None);
    }

    fn assert_expects_nat(a: &Plan, src: IpAddr, dst: IpAddr, dport: u16, nat: Option<ExpectNat>) {
        assert!(!a.parse_error);
        assert!(a.rewrites.is_empty(), "TFTP never rewrites the payload");
        assert!(!a.private_changed);
        assert!(a.refusals.is_empty());
        assert_eq!(
            a.expectations.as_slice(),
            &[crate::helpers::Expect {
                pairing: crate::helpers::Pairing::Single,
                timeout: None,
                exp: Expectation {
                    class: 0,
                    proto: IPPROTO_UDP,
                    src,
                    src_port: None,
                    dst,
                    dst_port: dport,
                    flags: 0,
                    nat,
                    helper: None,
                }
            }]
        );
    }

    fn assert_nothing(a: &Plan) {
        assert!(a.expectations.is_empty(), "{a:?}");
        assert!(!a.parse_error, "{a:?}");
        assert!(!a.private_changed);
    }

    fn assert_parse_error(a: &Plan) {
        assert!(a.expectations.is_empty(), "{a:?}");
        assert!(a.parse_error, "{a:?}");
        assert!(!a.private_changed);
    }

    #[test]
    fn rrq_expects_the_server_answer() {
        let a = run4(b"\x00\x01rfc1350.txt\x00octet\x00");
        assert_expects(&a, v4(SRV4), v4(CLI4), 40000);
    }

    #[test]
    fn wrq_expects_the_server_answer() {
        let a = run4(b"\x00\x02upload.bin\x00netascii\x00");
        assert_expects(&a, v4(SRV4), v4(CLI4), 40000);
    }

    #[test]
    fn request_with_options() {
        let a = run4(b"\x00\x01hello.txt\x00octet\x00blksize\x00256\x00");
        assert_expects(&a, v4(SRV4), v4(CLI4), 40000);
        let a = run4(b"\x00\x02empty100KB\x00octet\x00blksize\x001468\x00tsize\x00100000\x00");
        assert_expects(&a, v4(SRV4), v4(CLI4), 40000);
        assert_eq!(
            parse(b"\x00\x02f\x00OCTET\x00blksize\x001468\x00tsize\x000\x00windowsize\x004\x00"),
            Ok(Message::Request(Request {
                kind: RequestKind::Write,
                mode: Mode::Octet,
                options: 3
            }))
        );
        // An empty option value is not ours to judge.
        assert!(matches!(
            parse(b"\x00\x01f\x00octet\x00x\x00\x00"),
            Ok(Message::Request(Request { options: 1, .. }))
        ));
    }

    #[test]
    fn mode_is_case_insensitive_and_mail_is_a_mode() {
        for mode in [&b"NetASCII"[..], b"OCTET", b"Mail"] {
            let mut p = b"\x00\x01f\x00".to_vec();
            p.extend_from_slice(mode);
            p.push(0);
            assert!(matches!(parse(&p), Ok(Message::Request(_))), "{mode:?}");
        }
    }

    #[test]
    fn trailing_nul_padding_is_accepted() {
        let a = run4(b"\x00\x01file1\x00octet\x00\x00\x00\x00\x00");
        assert_expects(&a, v4(SRV4), v4(CLI4), 40000);
    }

    #[test]
    fn ipv6_request() {
        let cli = v6("2001:db8:1::2");
        let srv = v6("2001:db8:2::2");
        let a = run(
            &ct(cli, srv, None),
            Direction::Original,
            b"\x00\x01blob.bin\x00octet\x00tsize\x000\x00",
        );
        assert_expects(&a, srv, cli, 40000);
    }

    #[test]
    fn nat_expectation_uses_the_reply_tuple() {
        // Client 192.168.1.10:40000 masqueraded to 203.0.113.1:61000: the server answers
        // the public address, so that is what must be expected.
        let public = v4([203, 0, 113, 1]);
        let c = ct(v4(CLI4), v4(SRV4), Some((public, 61000)));
        let a = run(&c, Direction::Original, b"\x00\x01f\x00octet\x00");
        // The answer is translated back to the client's real address and port, like the
        // request's replies (nf_nat_tftp: saved source port, direction reply).
        let follow = ExpectNat {
            dir: Direction::Reply,
            saved_addr: v4(CLI4),
            saved_port: 40000,
        };
        assert_expects_nat(&a, v4(SRV4), public, 61000, Some(follow));
        let w = run(&c, Direction::Original, b"\x00\x02up\x00octet\x00");
        assert_expects_nat(&w, v4(SRV4), public, 61000, Some(follow));
    }

    #[test]
    fn data_ack_error_oack_create_nothing() {
        for p in [
            &b"\x00\x03\x00\x01some data"[..],
            b"\x00\x03\x00\x02",
            b"\x00\x04\x00\x01",
            b"\x00\x05\x00\x01File not found\x00",
            b"\x00\x06blksize\x00256\x00",
        ] {
            assert_nothing(&run4(p));
        }
    }

    #[test]
    fn reply_direction_creates_nothing() {
        let c = ct(v4(CLI4), v4(SRV4), None);
        assert_nothing(&run(&c, Direction::Reply, b"\x00\x01f\x00octet\x00"));
        assert_nothing(&run(&c, Direction::Reply, b"garbage"));
    }

    #[test]
    fn tcp_creates_nothing() {
        let c = ct(v4(CLI4), v4(SRV4), None);
        let pkt = Packet {
            dir: Direction::Original,
            src: c.orig.src,
            dst: c.orig.dst,
            src_port: 40000,
            dst_port: PORT,
            transport: Transport::Tcp { seq: 1, flags: 0 },
            payload: b"\x00\x01f\x00octet\x00",
        };
        assert_nothing(&Tftp.analyse(&pkt, &c, &mut [], &mut Store::default(), Policy::default()));
    }

    #[test]
    fn truncated_requests_are_parse_errors() {
        let full = b"\x00\x01rfc1350.txt\x00octet\x00blksize\x00512\x00";
        // Every proper prefix except those ending right after a complete field (mode or
        // option value) is truncated; those prefixes are well-formed requests themselves.
        for n in 0..full.len() {
            let p = &full[..n];
            let complete = n == 20 || n == full.len();
            let a = run4(p);
            if complete {
                assert_eq!(a.expectations.len(), 1, "prefix {n}");
            } else {
                assert_parse_error(&a);
            }
        }
    }

    #[test]
    fn malformed_requests_are_parse_errors() {
        let cases: &[(&[u8], Malformed)] = &[
            (b"", Malformed::NoOpcode),
            (b"\x00", Malformed::NoOpcode),
            (b"\x00\x00f\x00octet\x00", Malformed::UnknownOpcode(0)),
            (b"\x00\x07f\x00octet\x00", Malformed::UnknownOpcode(7)),
            (b"\x01\x01f\x00octet\x00", Malformed::UnknownOpcode(0x101)),
            (b"\x00\x01", Malformed::Unterminated),
            (b"\x00\x01\x00octet\x00", Malformed::EmptyFileName),
            (b"\x00\x01\x00\x00\x00\x00", Malformed::EmptyFileName),
            (b"\x00\x01f\x00\x00", Malformed::UnknownMode),
            (b"\x00\x01f\x00binary\x00", Malformed::UnknownMode),
            (b"\x00\x01f\x00octet", Malformed::Unterminated),
            (b"\x00\x01f\x00octet\x00blksize\x00", Malformed::BadOption),
            (
                b"\x00\x01f\x00octet\x00blksize\x00512",
                Malformed::BadOption,
            ),
            (b"\x00\x01f\x00octet\x00\x00512\x00", Malformed::BadOption),
            (b"\x00\x01f\x00octet\x00junk", Malformed::Unterminated),
        ];
        for (p, why) in cases {
            assert_eq!(parse(p), Err(*why), "{p:?}");
            assert_parse_error(&run4(p));
        }
        // The nDPI capture's first request: empty file name and mode, options "=" x4.
        let ndpi = b"\x00\x01\x00\x00=\x00=\x00=\x00=\x00=octet\x00";
        assert_eq!(parse(ndpi), Err(Malformed::EmptyFileName));
    }

    #[test]
    fn garbage_never_panics_and_never_expects_unless_well_formed() {
        // A cheap deterministic sweep (the fuzz target does this properly).
        let mut x: u32 = 0x1234_5678;
        let mut buf = [0u8; 24];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Mostly small bytes so NULs and opcodes 1/2 are common.
                *b = if x & 3 == 0 { 0 } else { (x >> 8) as u8 % 8 };
            }
            let n = (x as usize) % buf.len();
            let a = run4(&buf[..n]);
            let well_formed = matches!(parse(&buf[..n]), Ok(Message::Request(_)));
            assert_eq!(a.expectations.len(), usize::from(well_formed));
            assert!(!(well_formed && a.parse_error));
        }
    }
}
