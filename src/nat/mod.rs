//! NAT for helpers: a plan's payload rewrites ([`apply_rewrites`]) made in a queued
//! packet, built from `mangle` (replace ranges, fix lengths and checksums), and the port
//! search policy of `ports`. The replacement text is the helper's (`helpers::plan`): this
//! module knows no protocol, only literal text, ports and length fields.

pub mod mangle;
pub mod ports;

use core::fmt;

pub use mangle::{Edit, MAX_PACKET_LEN, mangle, replace};

use crate::helpers::{MAX_REWRITES_PER_PACKET, Plan, PortText, Replacement, Spelling};
use crate::wire;

/// The longest text one rewrite may put in: "|2|" + a 39-character IPv6 address +
/// "|65535|" (FTP EPRT), `[IPv6]:65535` (SIP).
pub const REPLACEMENT_MAX: usize = 64;

/// Why a payload could not be rewritten. On every error the packet is left unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatError {
    /// `len` is larger than the buffer that should hold the packet.
    LenExceedsBuffer { len: usize, buf: usize },
    /// The packet could not be taken apart down to a TCP/UDP payload.
    Malformed(wire::Error),
    /// The range is reversed or reaches past the end of the application payload.
    RangeOutsidePayload {
        start: usize,
        end: usize,
        payload_len: usize,
    },
    /// The range starts before the previous one ends (ranges must be in payload order).
    Overlap { start: usize, end: usize },
    /// The rewritten packet would be longer than `MAX_PACKET_LEN`.
    TooLong(usize),
    /// The rewritten packet would not fit in the buffer.
    NoRoom { needed: usize, available: usize },
    /// One replacement's text is longer than [`REPLACEMENT_MAX`] (or names text the plan
    /// does not hold).
    ReplacementTooLong(usize),
    /// A rewrite names an expectation the packet did not get.
    NoPort,
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatError::LenExceedsBuffer { len, buf } => {
                write!(f, "packet length {len} exceeds the {buf}-byte buffer")
            }
            NatError::Malformed(e) => write!(f, "cannot mangle packet: {e}"),
            NatError::RangeOutsidePayload {
                start,
                end,
                payload_len,
            } => write!(
                f,
                "range {start}..{end} is outside the {payload_len}-byte payload"
            ),
            NatError::Overlap { start, end } => {
                write!(f, "range {start}..{end} overlaps the one before")
            }
            NatError::TooLong(n) => {
                write!(
                    f,
                    "mangled packet would be {n} bytes (max {MAX_PACKET_LEN})"
                )
            }
            NatError::NoRoom { needed, available } => write!(
                f,
                "mangled packet needs {needed} bytes, buffer holds {available}"
            ),
            NatError::ReplacementTooLong(n) => {
                write!(f, "replacement text of {n} bytes (max {REPLACEMENT_MAX})")
            }
            NatError::NoPort => write!(f, "rewrite without its expectation"),
        }
    }
}

impl core::error::Error for NatError {}

/// A `core::fmt::Write` sink over one replacement's fixed array (no allocation).
struct TextBuf<'a> {
    bytes: &'a mut [u8; REPLACEMENT_MAX],
    len: usize,
}

impl TextBuf<'_> {
    fn push(&mut self, s: &[u8]) -> Result<(), NatError> {
        let end = self.len.saturating_add(s.len());
        let dst = self
            .bytes
            .get_mut(self.len..end)
            .ok_or(NatError::ReplacementTooLong(end))?;
        dst.copy_from_slice(s);
        self.len = end;
        Ok(())
    }
}

impl fmt::Write for TextBuf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Spell `port` as asked.
fn spell_port(t: &mut TextBuf<'_>, port: u16, how: PortText) -> Result<(), NatError> {
    use fmt::Write as _;
    let written = match how {
        PortText::Decimal => write!(t, "{port}"),
        PortText::Octets { sep } => {
            let [hi, lo] = port.to_be_bytes();
            let sep = char::from(sep);
            write!(t, "{hi}{sep}{lo}")
        }
    };
    written.map_err(|_| NatError::ReplacementTooLong(REPLACEMENT_MAX + 1))
}

/// An endpoint as `spelling` (text of `plan`) writes it with `port`, into `out`; returns
/// the text's length.
pub fn endpoint_text(
    plan: &Plan,
    spelling: Spelling,
    port: u16,
    out: &mut [u8; REPLACEMENT_MAX],
) -> Result<usize, NatError> {
    let mut t = TextBuf { bytes: out, len: 0 };
    t.push(plan.text_of(spelling.before))?;
    spell_port(&mut t, port, spelling.port)?;
    t.push(plan.text_of(spelling.after))?;
    Ok(t.len)
}

/// The text of one rewrite other than a length field, into `out`; returns its length.
fn spell(
    plan: &Plan,
    with: &Replacement,
    port_of: &impl Fn(usize) -> Option<u16>,
    out: &mut [u8; REPLACEMENT_MAX],
) -> Result<usize, NatError> {
    match *with {
        Replacement::Literal(span) => {
            let mut t = TextBuf { bytes: out, len: 0 };
            t.push(plan.text_of(span))?;
            Ok(t.len)
        }
        Replacement::Endpoint {
            expectation,
            spelling,
        } => {
            let port = port_of(expectation).ok_or(NatError::NoPort)?;
            endpoint_text(plan, spelling, port, out)
        }
        Replacement::Length { .. } => Ok(0),
    }
}

/// The outcome of applying a packet's rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The packet's new length.
    pub len: usize,
    /// Whether any byte changed (if not, the verdict need not carry the packet).
    pub changed: bool,
}

/// Apply a plan's rewrites (in payload order, not overlapping, as [`Plan::rewrite`]
/// keeps them) to the L3 packet in `buf[..len]`: endpoints are spelled with the final
/// port of their expectation (`port_of(index)`), length fields with the length of their
/// body after the other rewrites. A rewrite whose text is already right is left out; if
/// none is left the packet is untouched (`changed` false). All or nothing: on error
/// `buf[..len]` is unchanged.
pub fn apply_rewrites(
    buf: &mut [u8],
    len: usize,
    plan: &Plan,
    port_of: impl Fn(usize) -> Option<u16>,
) -> Result<Rewritten, NatError> {
    let rewrites = &plan.rewrites;
    let mut texts = [[0u8; REPLACEMENT_MAX]; MAX_REWRITES_PER_PACKET];
    let mut lens = [0usize; MAX_REWRITES_PER_PACKET];
    for ((rw, text), n) in rewrites.iter().zip(&mut texts).zip(&mut lens) {
        *n = spell(plan, &rw.with, &port_of, text)?;
    }
    // Length fields last: their bodies' new lengths depend on the other rewrites.
    for (i, rw) in rewrites.iter().enumerate() {
        let Replacement::Length {
            body_start,
            body_end,
        } = rw.with
        else {
            continue;
        };
        let mut body = body_end
            .checked_sub(body_start)
            .ok_or(NatError::RangeOutsidePayload {
                start: body_start,
                end: body_end,
                payload_len: len,
            })?;
        for (other, n) in rewrites.iter().zip(lens) {
            let inside = (body_start..body_end).contains(&other.start);
            if inside && !matches!(other.with, Replacement::Length { .. }) {
                body = (body + n).saturating_sub(other.end.saturating_sub(other.start));
            }
        }
        let (Some(text), Some(n)) = (texts.get_mut(i), lens.get_mut(i)) else {
            return Err(NatError::ReplacementTooLong(0));
        };
        let mut t = TextBuf {
            bytes: text,
            len: 0,
        };
        fmt::Write::write_fmt(&mut t, format_args!("{body}"))
            .map_err(|_| NatError::ReplacementTooLong(REPLACEMENT_MAX + 1))?;
        *n = t.len;
    }
    let mut edits: heapless::Vec<Edit<'_>, MAX_REWRITES_PER_PACKET> = heapless::Vec::new();
    {
        let packet = buf.get(..len).ok_or(NatError::LenExceedsBuffer {
            len,
            buf: buf.len(),
        })?;
        let payload = wire::dissect(packet).map_err(NatError::Malformed)?.payload;
        for ((rw, text), n) in rewrites.iter().zip(&texts).zip(lens) {
            let text = text.get(..n).ok_or(NatError::ReplacementTooLong(n))?;
            if payload.get(rw.start..rw.end) == Some(text) {
                continue;
            }
            // Cannot fail: at most one edit per rewrite.
            let _ = edits.push(Edit {
                range: rw.start..rw.end,
                text,
            });
        }
    }
    if edits.is_empty() {
        return Ok(Rewritten {
            len,
            changed: false,
        });
    }
    Ok(Rewritten {
        len: replace(buf, len, &edits)?,
        changed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::mangle::testing::*;
    use super::*;
    use crate::helpers::Span;
    use crate::helpers::ftp::EndpointText;
    use crate::wire::checksum;
    use core::net::IpAddr;

    /// A plan of FTP-spelled endpoint rewrites: (start, end, spelling, address,
    /// expectation).
    fn ftp_plan(rewrites: &[(usize, usize, EndpointText, IpAddr, usize)]) -> Plan {
        let mut plan = Plan::default();
        for &(start, end, text, addr, expectation) in rewrites {
            let spelling = text.spelling(addr, &mut plan).unwrap();
            let with = Replacement::Endpoint {
                expectation,
                spelling,
            };
            assert!(plan.rewrite(start, end, with));
        }
        plan
    }

    /// The FTP helper's plan for a masqueraded PORT, applied to the packet: exact
    /// bytes before and after, lengths and checksums.
    #[test]
    fn ftp_port_rewrite_end_to_end() {
        use crate::helpers::{Helper, Packet, Store, ftp};
        use crate::model::{Conntrack, Direction, Tuple, status};
        let (cli, public, srv) = (
            v4([192, 0, 2, 2]),
            v4([203, 0, 113, 1]),
            v4([198, 51, 100, 2]),
        );
        let orig = Tuple {
            src: cli,
            dst: srv,
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        };
        let mut reply = orig.reversed();
        reply.dst = public;
        let ct = Conntrack {
            orig,
            reply,
            status: status::SEEN_REPLY | status::CONFIRMED | status::SRC_NAT,
            id: None,
            zone: None,
        };
        let line = b"PORT 192,0,2,2,156,64\r\n";
        let mut private = [0u8; ftp::PRIVATE_LEN];
        ftp::State::picked_up().encode(&mut private);
        let pkt = Packet {
            dir: Direction::Original,
            src: public,
            dst: srv,
            src_port: 61000,
            dst_port: 21,
            transport: crate::wire::Transport::Tcp {
                seq: 1000,
                flags: 0x18,
            },
            payload: line,
        };
        let mut store = Store::default();
        let plan = ftp::Ftp.analyse(&pkt, &ct, &mut private, &mut store, Default::default());
        assert_eq!(plan.rewrites.len(), 1);
        let before = v4_tcp(line);
        let mut b = in_buf(&before, 1500);
        // The port search moved the data port by one.
        let r = apply_rewrites(&mut b, before.len(), &plan, |_| Some(40001)).unwrap();
        assert!(r.changed);
        let after_payload = b"PORT 203,0,113,1,156,65\r\n";
        assert_eq!(r.len, before.len() + 2);
        assert_eq!(&b[..r.len], v4_tcp(after_payload).as_slice());
        assert_eq!(verified(&b[..r.len]), after_payload);
    }

    #[test]
    fn rewrites_apply_back_to_front_and_skip_identical_text() {
        let a = v4([203, 0, 113, 1]);
        let payload = b"PORT 192,0,2,2,0,21\r\nEPRT |1|192.0.2.2|22|\r\n";
        let plan = ftp_plan(&[
            (5, 19, EndpointText::Commas, a, 0),
            (26, 42, EndpointText::Eprt { delim: b'|' }, a, 1),
        ]);
        assert_eq!(&payload[26..42], b"|1|192.0.2.2|22|");
        let before = v4_tcp(payload);
        let mut b = in_buf(&before, 1500);
        let ports = [21u16, 2222];
        let r = apply_rewrites(&mut b, before.len(), &plan, |i| ports.get(i).copied()).unwrap();
        let want = b"PORT 203,0,113,1,0,21\r\nEPRT |1|203.0.113.1|2222|\r\n";
        assert_eq!(verified(&b[..r.len]), want);
        // Applied again with the same ports, nothing changes.
        let again = b[..r.len].to_vec();
        let shifted = ftp_plan(&[
            (5, 21, EndpointText::Commas, a, 0),
            (28, 48, EndpointText::Eprt { delim: b'|' }, a, 1),
        ]);
        let r2 = apply_rewrites(&mut b, r.len, &shifted, |i| ports.get(i).copied()).unwrap();
        assert!(!r2.changed);
        assert_eq!(&b[..r2.len], again.as_slice());
    }

    #[test]
    fn ipv6_eprt_rewrite_changes_length_and_checksum() {
        let public = IpAddr::V6(v6("2001:db8:ffff::1"));
        let payload = b"EPRT |2|2001:db8:1::7|40000|\r\n";
        let before = v6_tcp(payload);
        let mut b = in_buf(&before, 1500);
        let plan = ftp_plan(&[(5, 28, EndpointText::Eprt { delim: b'|' }, public, 0)]);
        assert_eq!(&payload[5..28], b"|2|2001:db8:1::7|40000|");
        let r = apply_rewrites(&mut b, before.len(), &plan, |_| Some(40000)).unwrap();
        assert_eq!(
            verified(&b[..r.len]),
            b"EPRT |2|2001:db8:ffff::1|40000|\r\n"
        );
        assert_eq!(r.len, before.len() + 3);
    }

    #[test]
    fn rewrite_errors_leave_the_choice_to_the_caller() {
        let a = v4([203, 0, 113, 1]);
        let before = v4_tcp(b"PORT 192,0,2,2,0,21\r\n");
        // No port for the expectation.
        let mut b = in_buf(&before, 1500);
        let plan = ftp_plan(&[(5, 19, EndpointText::Commas, a, 3)]);
        assert_eq!(
            apply_rewrites(&mut b, before.len(), &plan, |_| None),
            Err(NatError::NoPort)
        );
        // No room to grow: the buffer holds exactly the original packet.
        let mut tight = before.clone();
        let plan = ftp_plan(&[(5, 19, EndpointText::Commas, a, 0)]);
        assert!(matches!(
            apply_rewrites(&mut tight, before.len(), &plan, |_| Some(21)),
            Err(NatError::NoRoom { .. })
        ));
        assert_eq!(
            tight, before,
            "mangle leaves a packet it cannot rewrite untouched"
        );
        // A range past the payload.
        let mut b = in_buf(&before, 1500);
        let plan = ftp_plan(&[(5, 99, EndpointText::Commas, a, 0)]);
        assert!(matches!(
            apply_rewrites(&mut b, before.len(), &plan, |_| Some(21)),
            Err(NatError::RangeOutsidePayload { .. })
        ));
        // A literal longer than one replacement may be.
        let mut plan = Plan::default();
        let long = plan.text(format_args!("{:>65}", "x")).unwrap();
        assert!(plan.rewrite(0, 4, Replacement::Literal(long)));
        assert_eq!(
            apply_rewrites(&mut b, before.len(), &plan, |_| None),
            Err(NatError::ReplacementTooLong(65))
        );
        assert_eq!(b, in_buf(&before, 1500), "untouched");
    }

    /// A SIP INVITE from a masqueraded phone, as the SIP NAT helper will plan it: eight
    /// rewrites (Via and Contact host:port, SDP o=, session c=, media c=, two m= ports
    /// and a=rtcp, three of them endpoints whose ports the search moved) and the
    /// Content-Length, which must state the body's length after them.
    #[test]
    fn eight_rewrites_and_a_length_field_exact_bytes_and_checksums() {
        let head = |len: usize, host: &str| {
            std::format!(
                "INVITE sip:bob@198.51.100.2 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {host};branch=z9hG4bK7\r\n\
                 Contact: <sip:alice@{host}>\r\n\
                 Content-Type: application/sdp\r\n\
                 Content-Length: {len}\r\n\r\n"
            )
        };
        let body = |addr: &str, audio: u16, video: u16| {
            std::format!(
                "v=0\r\no=alice 1 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
                 m=audio {audio} RTP/AVP 0\r\na=rtcp:{}\r\n\
                 m=video {video} RTP/AVP 31\r\nc=IN IP4 {addr}\r\n",
                audio + 1
            )
        };
        let inside_body = body("192.0.2.2", 49170, 51372);
        let before = head(inside_body.len(), "192.0.2.2:5060") + &inside_body;
        let outside_body = body("203.0.113.1", 49172, 51374);
        let after = head(outside_body.len(), "203.0.113.1:61000") + &outside_body;
        assert_eq!((inside_body.len(), outside_body.len()), (152, 158));
        assert!(after.contains("Content-Length: 158\r\n"));

        let p = before.as_bytes();
        let find =
            |from: usize, what: &str| from + before[from..].find(what).expect("in the message");
        let mut plan = Plan::default();
        let host = plan.text(format_args!("203.0.113.1:61000")).unwrap();
        let addr = plan.text(format_args!("203.0.113.1")).unwrap();
        let port = |expectation| Replacement::Endpoint {
            expectation,
            spelling: Spelling {
                before: Span::EMPTY,
                port: PortText::Decimal,
                after: Span::EMPTY,
            },
        };
        let body_start = before.find("\r\n\r\n").unwrap() + 4;
        let via = find(0, "192.0.2.2:5060");
        let contact = find(via + 1, "192.0.2.2:5060");
        let length = find(0, "152");
        let o = find(body_start, "192.0.2.2");
        let c = find(o + 1, "192.0.2.2");
        let audio = find(body_start, "49170");
        let rtcp = find(body_start, "49171");
        let video = find(body_start, "51372");
        let c_media = find(video, "192.0.2.2");
        let host_len = "192.0.2.2:5060".len();
        let addr_len = "192.0.2.2".len();
        let port_len = "49170".len();
        for (start, len, with) in [
            (via, host_len, Replacement::Literal(host)),
            (contact, host_len, Replacement::Literal(host)),
            (
                length,
                3,
                Replacement::Length {
                    body_start,
                    body_end: p.len(),
                },
            ),
            (o, addr_len, Replacement::Literal(addr)),
            (c, addr_len, Replacement::Literal(addr)),
            (audio, port_len, port(0)),
            (rtcp, port_len, port(1)),
            (video, port_len, port(2)),
            (c_media, addr_len, Replacement::Literal(addr)),
        ] {
            assert!(plan.rewrite(start, start + len, with));
        }
        assert_eq!(plan.rewrites.len(), 9);
        let ports = [49172u16, 49173, 51374];

        let pkt = v4_udp(p, true);
        let mut b = in_buf(&pkt, 1500);
        let r = apply_rewrites(&mut b, pkt.len(), &plan, |i| ports.get(i).copied()).unwrap();
        assert!(r.changed);
        assert_eq!(r.len, pkt.len() + after.len() - before.len());
        let out = &b[..r.len];
        assert_eq!(
            out,
            v4_udp(after.as_bytes(), true).as_slice(),
            "exact bytes"
        );
        assert_eq!(verified(out), after.as_bytes());
        // Lengths and checksums, computed here without the wire layer's fill functions.
        assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), r.len);
        assert_eq!(
            usize::from(u16::from_be_bytes([out[24], out[25]])),
            r.len - 20
        );
        let mut hdr = [0u8; 20];
        hdr.copy_from_slice(&out[..20]);
        hdr[10..12].fill(0);
        assert_eq!(
            u16::from_be_bytes([out[10], out[11]]),
            checksum::checksum(&hdr)
        );
        let mut dgram = out[20..].to_vec();
        dgram[6..8].fill(0);
        let ph = checksum::pseudo_header(v4(C4), v4(S4), 17, dgram.len()).unwrap();
        assert_eq!(
            u16::from_be_bytes([out[26], out[27]]),
            checksum::finish(checksum::accumulate(ph, &dgram))
        );
        assert!(b[r.len..].iter().all(|&x| x == 0xee));

        // Nothing to change (a phone that already advertises its public endpoint):
        // the packet is left as it is.
        let mut b = in_buf(&v4_udp(after.as_bytes(), true), 1500);
        let mut same = Plan::default();
        let body_start = after.find("\r\n\r\n").unwrap() + 4;
        let length = after.find("158").unwrap();
        assert!(same.rewrite(
            length,
            length + 3,
            Replacement::Length {
                body_start,
                body_end: after.len(),
            }
        ));
        let n = after.len() + 28;
        let r = apply_rewrites(&mut b, n, &same, |_| None).unwrap();
        assert_eq!(
            r,
            Rewritten {
                len: n,
                changed: false
            }
        );
    }
}
