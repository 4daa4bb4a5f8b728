//! Payload mangling for NAT helpers (FTP `227`/`PORT` rewriting, SIP later): replace a byte
//! range of the application payload inside a queued L3 packet, then fix every length and
//! checksum that covers it.
//!
//! The packet lives in a fixed daemon buffer; nothing here allocates and nothing panics.
//! TCP sequence numbers are *not* touched: when the verdict carries a payload of a
//! different length and the connection is NATed, the kernel records the sequence
//! adjustment itself (ctnetlink_glue_seqadj), correctly for IPv4 only; for IPv6 the daemon
//! records it over ctnetlink (README, section "NAT").

use core::fmt;
use core::ops::Range;

use core::net::IpAddr;

use crate::helpers::{EndpointText, Rewrite};
use crate::wire::Transport;
use crate::wire::{self, checksum, ipv4, ipv6, tcp, udp};

/// The largest packet `mangle` produces: the IPv4 total length is 16 bits, nfnetlink_queue's
/// copy range is at most 0xffff, and we do not emit IPv6 jumbograms.
pub const MAX_PACKET_LEN: usize = 0xffff;

/// Why a payload could not be mangled. On every error the packet is left unchanged.
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
    /// The rewritten packet would be longer than `MAX_PACKET_LEN`.
    TooLong(usize),
    /// The rewritten packet would not fit in the buffer.
    NoRoom { needed: usize, available: usize },
    /// The endpoint cannot be written in that spelling (an IPv6 address in PORT/227).
    Unspellable,
    /// A rewrite names an expectation the packet did not ask for.
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
            NatError::Unspellable => write!(f, "address cannot be written in that form"),
            NatError::NoPort => write!(f, "rewrite without its expectation"),
        }
    }
}

impl core::error::Error for NatError {}

/// Replace `payload[range]` (a byte range of the application payload) with `replacement`
/// inside the L3 packet held in `buf[..len]` (`buf` is the fixed send buffer, larger than the
/// packet), shifting the tail, fixing IPv4 total length + header checksum or IPv6 payload
/// length, the UDP length, and the TCP/UDP checksum (recomputed over the pseudo-header; a UDP
/// checksum of 0 over IPv4 stays 0).
///
/// The packet is delimited by its IP length field: bytes of `buf[..len]` beyond it (padding)
/// are not part of the result. Returns the new packet length, or an error (leaving
/// `buf[..len]` unchanged) when the result would not fit in `buf` or exceed
/// [`MAX_PACKET_LEN`], or the range is outside the payload.
pub fn mangle(
    buf: &mut [u8],
    len: usize,
    range: Range<usize>,
    replacement: &[u8],
) -> Result<usize, NatError> {
    let available = buf.len();
    let packet = buf.get(..len).ok_or(NatError::LenExceedsBuffer {
        len,
        buf: available,
    })?;
    let d = wire::dissect(packet).map_err(NatError::Malformed)?;
    let payload_len = d.payload.len();
    if range.start > range.end || range.end > payload_len {
        return Err(NatError::RangeOutsidePayload {
            start: range.start,
            end: range.end,
            payload_len,
        });
    }
    let is_v4 = d.src.is_ipv4();
    // End of the L3 packet per its length field (dissect has checked it lies inside `len`).
    let l3_end = if is_v4 {
        usize::from(ipv4::Packet::new_unchecked(packet).total_len())
    } else {
        ipv6::HEADER_LEN + usize::from(ipv6::Packet::new_unchecked(packet).payload_len())
    };
    let malformed = NatError::Malformed(wire::Error::BadLength);
    let removed = range.end.checked_sub(range.start).ok_or(malformed)?;
    let abs_start = d.payload_offset.checked_add(range.start).ok_or(malformed)?;
    let abs_end = d.payload_offset.checked_add(range.end).ok_or(malformed)?;
    if abs_end > l3_end {
        return Err(malformed);
    }
    let new_l3_end = l3_end
        .checked_sub(removed)
        .ok_or(malformed)?
        .checked_add(replacement.len())
        .ok_or(NatError::TooLong(usize::MAX))?;
    if new_l3_end > MAX_PACKET_LEN {
        return Err(NatError::TooLong(new_l3_end));
    }
    if new_l3_end > available {
        return Err(NatError::NoRoom {
            needed: new_l3_end,
            available,
        });
    }
    // The new values of every length field, computed before anything is written.
    let new_ip_len = if is_v4 {
        new_l3_end
    } else {
        new_l3_end.checked_sub(ipv6::HEADER_LEN).ok_or(malformed)?
    };
    let new_ip_len = u16::try_from(new_ip_len).map_err(|_| NatError::TooLong(new_l3_end))?;
    let l4 = packet.get(d.l4_offset..l3_end).ok_or(malformed)?;
    let (new_l4_len, keep_zero_udp_checksum) = match d.transport {
        Transport::Tcp { .. } => (new_l3_end.checked_sub(d.l4_offset).ok_or(malformed)?, false),
        Transport::Udp => {
            let u = udp::Packet::new_unchecked(l4);
            let n = usize::from(u.len())
                .checked_sub(removed)
                .ok_or(malformed)?
                .checked_add(replacement.len())
                .ok_or(malformed)?;
            (n, is_v4 && u.checksum() == 0)
        }
    };
    let new_udp_len = u16::try_from(new_l4_len).map_err(|_| NatError::TooLong(new_l3_end))?;
    checksum::pseudo_header(d.src, d.dst, d.proto, new_l4_len).ok_or(malformed)?;
    let (src, dst) = (d.src, d.dst);
    let transport = d.transport;
    let l4_offset = d.l4_offset;

    // From here on nothing can fail: write.
    let region_end = l3_end.max(new_l3_end);
    let region = buf.get_mut(abs_start..region_end).ok_or(malformed)?;
    // Tail (abs_end..l3_end) moves to just after the replacement; both ranges lie inside
    // `region` because l3_end <= region_end and new_l3_end <= region_end.
    let tail_end = l3_end.checked_sub(abs_start).ok_or(malformed)?;
    region.copy_within(removed..tail_end, replacement.len());
    if let Some(dst_bytes) = region.get_mut(..replacement.len()) {
        dst_bytes.copy_from_slice(replacement);
    }
    let packet = buf.get_mut(..new_l3_end).ok_or(malformed)?;
    if is_v4 {
        let mut ip = ipv4::Packet::new_unchecked(&mut *packet);
        ip.set_total_len(new_ip_len);
        ip.fill_checksum();
    } else {
        ipv6::Packet::new_unchecked(&mut *packet).set_payload_len(new_ip_len);
    }
    let l4 = packet.get_mut(l4_offset..).ok_or(malformed)?;
    match transport {
        Transport::Tcp { .. } => {
            tcp::Packet::new_unchecked(l4).fill_checksum(src, dst);
        }
        Transport::Udp => {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_len(new_udp_len);
            if !keep_zero_udp_checksum {
                u.fill_checksum(src, dst);
            }
        }
    }
    Ok(new_l3_end)
}

/// Room for the longest endpoint text: "|2|" + a 39-character IPv6 address + "|65535|".
pub const MAX_ENDPOINT_TEXT: usize = 64;

/// A `core::fmt::Write` sink over a fixed array (no allocation).
struct TextBuf {
    bytes: [u8; MAX_ENDPOINT_TEXT],
    len: usize,
}

impl fmt::Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Spell `addr` and `port` as `spelling` asks, into `out`; returns the text's length.
pub fn endpoint_text(
    spelling: EndpointText,
    addr: IpAddr,
    port: u16,
    out: &mut [u8; MAX_ENDPOINT_TEXT],
) -> Result<usize, NatError> {
    use fmt::Write as _;
    let mut t = TextBuf {
        bytes: [0; MAX_ENDPOINT_TEXT],
        len: 0,
    };
    let [p1, p2] = port.to_be_bytes();
    let written = match (spelling, addr) {
        (EndpointText::Commas, IpAddr::V4(a)) => {
            let [a, b, c, d] = a.octets();
            write!(t, "{a},{b},{c},{d},{p1},{p2}")
        }
        (EndpointText::Commas, IpAddr::V6(_)) => return Err(NatError::Unspellable),
        (EndpointText::Eprt { delim }, addr) => {
            let d = char::from(delim);
            let af = if addr.is_ipv4() { 1 } else { 2 };
            write!(t, "{d}{af}{d}{addr}{d}{port}{d}")
        }
        (EndpointText::Port, _) => write!(t, "{port}"),
    };
    written.map_err(|_| NatError::Unspellable)?;
    *out = t.bytes;
    Ok(t.len)
}

/// The outcome of applying a packet's rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// The packet's new length.
    pub len: usize,
    /// Whether any byte changed (if not, the verdict need not carry the packet).
    pub changed: bool,
}

/// Apply `rewrites` (in payload order, not overlapping, as helpers produce them) to the
/// L3 packet in `buf[..len]`, spelling each with the final port of its expectation
/// (`port_of(index)`). Works from the last to the first so earlier ranges stay valid. A
/// rewrite whose text is already right is skipped. On error `buf` may hold a partly
/// rewritten packet: the caller keeps the original and sends that.
pub fn apply_rewrites(
    buf: &mut [u8],
    len: usize,
    rewrites: &[Rewrite],
    port_of: impl Fn(usize) -> Option<u16>,
) -> Result<Rewritten, NatError> {
    let mut out = Rewritten {
        len,
        changed: false,
    };
    for rw in rewrites.iter().rev() {
        let port = port_of(rw.expectation).ok_or(NatError::NoPort)?;
        let mut text = [0u8; MAX_ENDPOINT_TEXT];
        let n = endpoint_text(rw.text, rw.addr, port, &mut text)?;
        let replacement = text.get(..n).ok_or(NatError::Unspellable)?;
        let packet = buf.get(..out.len).ok_or(NatError::LenExceedsBuffer {
            len: out.len,
            buf: buf.len(),
        })?;
        let d = wire::dissect(packet).map_err(NatError::Malformed)?;
        if d.payload.get(rw.start..rw.end) == Some(replacement) {
            continue;
        }
        out.len = mangle(buf, out.len, rw.start..rw.end, replacement)?;
        out.changed = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::vec::Vec;

    const C4: [u8; 4] = [192, 168, 1, 2];
    const S4: [u8; 4] = [192, 168, 1, 10];

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// IPv4/TCP packet with valid IP and TCP checksums.
    fn v4_tcp(payload: &[u8]) -> Vec<u8> {
        let seg = tcp::tests::build(21, 40000, 1000, tcp::flags::ACK | tcp::flags::PSH, payload);
        let mut pkt = ipv4::tests::build(S4, C4, 6, &seg);
        assert!(tcp::Packet::new_unchecked(&mut pkt[20..]).fill_checksum(v4(S4), v4(C4)));
        pkt
    }

    /// IPv4/UDP packet; `with_checksum` false leaves the UDP checksum 0 (none).
    fn v4_udp(payload: &[u8], with_checksum: bool) -> Vec<u8> {
        let dgram = udp::tests::build(40000, 69, payload);
        let mut pkt = ipv4::tests::build(C4, S4, 17, &dgram);
        if with_checksum {
            assert!(udp::Packet::new_unchecked(&mut pkt[20..]).fill_checksum(v4(C4), v4(S4)));
        }
        pkt
    }

    /// IPv6/TCP packet behind an 8-byte destination-options header.
    fn v6_tcp(payload: &[u8]) -> Vec<u8> {
        let (s, d) = (v6("2001:db8::21"), v6("2001:db8:1::7"));
        let seg = tcp::tests::build(21, 40000, 7, tcp::flags::ACK, payload);
        let ext = [6, 0, 1, 4, 0, 0, 0, 0];
        let mut pkt = ipv6::tests::build(s, d, ipv6::next_header::DEST_OPTS, &ext, &seg);
        let ok =
            tcp::Packet::new_unchecked(&mut pkt[48..]).fill_checksum(IpAddr::V6(s), IpAddr::V6(d));
        assert!(ok);
        pkt
    }

    /// The packet copied into a larger send buffer whose spare bytes are 0xee.
    fn in_buf(pkt: &[u8], cap: usize) -> Vec<u8> {
        let mut b = std::vec![0xee; cap];
        b[..pkt.len()].copy_from_slice(pkt);
        b
    }

    /// Every checksum and length of `pkt` verified with the wire layer; returns the payload.
    fn verified(pkt: &[u8]) -> Vec<u8> {
        let d = wire::dissect(pkt).unwrap();
        let l4 = &pkt[d.l4_offset..];
        if d.src.is_ipv4() {
            let ip = ipv4::Packet::new_checked(pkt).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(usize::from(ip.total_len()), pkt.len());
        } else {
            let ip = ipv6::Packet::new_checked(pkt).unwrap();
            assert_eq!(usize::from(ip.payload_len()) + 40, pkt.len());
        }
        match d.transport {
            Transport::Tcp { .. } => {
                assert!(
                    tcp::Packet::new_checked(l4)
                        .unwrap()
                        .verify_checksum(d.src, d.dst)
                );
            }
            Transport::Udp => {
                let u = udp::Packet::new_checked(l4).unwrap();
                assert_eq!(usize::from(u.len()), l4.len());
                assert!(u.verify_checksum(d.src, d.dst));
            }
        }
        d.payload.to_vec()
    }

    /// Mangle `pkt` in a 1500-byte buffer and check the result against a packet built from
    /// scratch with the expected payload (exact bytes), and the buffer's spare bytes.
    fn mangle_and_compare(
        pkt: &[u8],
        range: Range<usize>,
        replacement: &[u8],
        expected: &[u8],
    ) -> Vec<u8> {
        let mut b = in_buf(pkt, 1500);
        let n = mangle(&mut b, pkt.len(), range, replacement).unwrap();
        assert_eq!(n, expected.len());
        assert_eq!(&b[..n], expected, "exact bytes");
        assert!(b[n.max(pkt.len())..].iter().all(|&x| x == 0xee));
        verified(&b[..n])
    }

    const PASV: &[u8] = b"227 Entering Passive Mode (192,168,1,2,4,1).\r\n";
    // Offsets of "192,168,1,2" inside PASV.
    const ADDR: Range<usize> = 27..38;

    fn pasv_with(addr: &[u8]) -> Vec<u8> {
        let mut v = PASV[..ADDR.start].to_vec();
        v.extend_from_slice(addr);
        v.extend_from_slice(&PASV[ADDR.end..]);
        v
    }

    #[test]
    fn pasv_offsets() {
        assert_eq!(&PASV[ADDR], b"192,168,1,2");
    }

    #[test]
    fn ipv4_tcp_same_length() {
        let pkt = v4_tcp(PASV);
        let p = mangle_and_compare(
            &pkt,
            ADDR,
            b"10,0,100,99",
            &v4_tcp(&pasv_with(b"10,0,100,99")),
        );
        assert_eq!(p, pasv_with(b"10,0,100,99"));
    }

    #[test]
    fn ipv4_tcp_longer() {
        let pkt = v4_tcp(PASV);
        let new = b"203,0,113,200";
        let p = mangle_and_compare(&pkt, ADDR, new, &v4_tcp(&pasv_with(new)));
        assert_eq!(p, pasv_with(new));
    }

    #[test]
    fn ipv4_tcp_shorter() {
        let pkt = v4_tcp(PASV);
        let new = b"8,8,4,4";
        let p = mangle_and_compare(&pkt, ADDR, new, &v4_tcp(&pasv_with(new)));
        assert_eq!(p, pasv_with(new));
    }

    #[test]
    fn ipv4_tcp_insert_and_delete_at_edges() {
        let pkt = v4_tcp(b"abc");
        mangle_and_compare(&pkt, 0..0, b"xy", &v4_tcp(b"xyabc"));
        mangle_and_compare(&pkt, 3..3, b"!", &v4_tcp(b"abc!"));
        mangle_and_compare(&pkt, 0..3, b"", &v4_tcp(b""));
        mangle_and_compare(&pkt, 1..2, b"", &v4_tcp(b"ac"));
    }

    #[test]
    fn ipv4_tcp_exact_bytes() {
        // Independent of the builders: the header bytes written out by hand.
        let pkt = v4_tcp(b"PORT 10,0,0,1,4,1\r\n");
        let mut b = in_buf(&pkt, 200);
        let n = mangle(&mut b, pkt.len(), 5..13, b"198,51,100,7").unwrap();
        assert_eq!(n, 20 + 20 + 23);
        let out = &b[..n];
        assert_eq!(
            &out[..4],
            &[0x45, 0, 0, 63],
            "version/IHL, TOS, total length 63"
        );
        assert_eq!(&out[4..10], &[0x12, 0x34, 0x40, 0, 64, 6]);
        assert_eq!(&out[12..20], &[192, 168, 1, 10, 192, 168, 1, 2]);
        assert_eq!(&out[20..24], &[0, 21, 0x9c, 0x40], "ports unchanged");
        assert_eq!(
            &out[24..28],
            &1000u32.to_be_bytes(),
            "sequence number unchanged"
        );
        assert_eq!(&out[40..], b"PORT 198,51,100,7,4,1\r\n");
        // Checksums against a from-scratch computation with the wire layer.
        let ip_sum = u16::from_be_bytes([out[10], out[11]]);
        let mut hdr = [0u8; 20];
        hdr.copy_from_slice(&out[..20]);
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(ip_sum, checksum::checksum(&hdr));
        let tcp_sum = u16::from_be_bytes([out[36], out[37]]);
        let mut seg = out[20..].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        let ph = checksum::pseudo_header(v4(S4), v4(C4), 6, seg.len()).unwrap();
        assert_eq!(tcp_sum, checksum::finish(checksum::accumulate(ph, &seg)));
        assert!(b[n..].iter().all(|&x| x == 0xee));
    }

    #[test]
    fn ipv4_udp_with_checksum() {
        let req = b"\x00\x01firmware.bin\x00octet\x00";
        let pkt = v4_udp(req, true);
        let out = b"\x00\x01fw.img\x00octet\x00";
        let p = mangle_and_compare(&pkt, 2..14, b"fw.img", &v4_udp(out, true));
        assert_eq!(p, out);
        let longer = b"\x00\x01/srv/tftp/firmware.bin\x00octet\x00";
        mangle_and_compare(&pkt, 2..2, b"/srv/tftp/", &v4_udp(longer, true));
    }

    #[test]
    fn ipv4_udp_zero_checksum_stays_zero() {
        let pkt = v4_udp(b"hello world", false);
        let mut b = in_buf(&pkt, 100);
        let n = mangle(&mut b, pkt.len(), 6..11, b"there!").unwrap();
        assert_eq!(&b[26..28], &[0, 0], "no checksum stays no checksum");
        assert_eq!(verified(&b[..n]), b"hello there!");
        assert_eq!(&b[..n], &v4_udp(b"hello there!", false)[..]);
    }

    #[test]
    fn ipv6_udp() {
        let (s, d) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let build = |payload: &[u8]| {
            let dgram = udp::tests::build(5060, 5060, payload);
            let mut pkt = ipv6::tests::build(s, d, 17, &[], &dgram);
            assert!(
                udp::Packet::new_unchecked(&mut pkt[40..])
                    .fill_checksum(IpAddr::V6(s), IpAddr::V6(d))
            );
            pkt
        };
        let pkt = build(b"c=IN IP4 10.0.0.1\r\n");
        mangle_and_compare(
            &pkt,
            9..17,
            b"203.0.113.77",
            &build(b"c=IN IP4 203.0.113.77\r\n"),
        );
    }

    #[test]
    fn ipv6_tcp_longer_and_shorter() {
        let epsv = b"229 Entering Extended Passive Mode (|||6446|)\r\n";
        let pkt = v6_tcp(epsv);
        let longer = b"229 Entering Extended Passive Mode (|||60446|)\r\n";
        let p = mangle_and_compare(&pkt, 39..43, b"60446", &v6_tcp(longer));
        assert_eq!(p, longer);
        let shorter = b"229 Entering Extended Passive Mode (|||21|)\r\n";
        let p = mangle_and_compare(&pkt, 39..43, b"21", &v6_tcp(shorter));
        assert_eq!(p, shorter);
    }

    #[test]
    fn chained_rewrites_stay_consistent() {
        let pkt = v4_tcp(PASV);
        let mut b = in_buf(&pkt, 300);
        let mut n = mangle(&mut b, pkt.len(), ADDR, b"203,0,113,200").unwrap();
        n = mangle(&mut b, n, 41..44, b"39,16").unwrap();
        assert_eq!(
            verified(&b[..n]),
            b"227 Entering Passive Mode (203,0,113,200,39,16).\r\n"
        );
    }

    #[test]
    fn trailing_padding_is_dropped() {
        let mut pkt = v4_tcp(b"abc");
        let len = pkt.len();
        pkt.extend_from_slice(&[0; 6]); // link-layer padding past the IP total length
        let mut b = in_buf(&pkt, 100);
        let n = mangle(&mut b, pkt.len(), 1..2, b"BB").unwrap();
        assert_eq!(n, len + 1);
        assert_eq!(&b[..n], &v4_tcp(b"aBBc")[..]);
    }

    #[test]
    fn refuses_when_it_does_not_fit() {
        let pkt = v4_tcp(PASV);
        let mut b = in_buf(&pkt, pkt.len() + 1);
        let before = b.clone();
        assert_eq!(
            mangle(&mut b, pkt.len(), ADDR, b"203,0,113,200"),
            Err(NatError::NoRoom {
                needed: pkt.len() + 2,
                available: pkt.len() + 1
            })
        );
        assert_eq!(b, before, "buffer unchanged");
        // One byte longer still fits.
        assert_eq!(
            mangle(&mut b, pkt.len(), ADDR, b"192,168,1,20"),
            Ok(pkt.len() + 1)
        );
        verified(&b);
    }

    #[test]
    fn refuses_range_outside_payload() {
        let pkt = v4_tcp(b"abc");
        let mut b = in_buf(&pkt, 100);
        let before = b.clone();
        for r in [0..4, 4..4, 3..5, usize::MAX - 1..usize::MAX] {
            let (start, end) = (r.start, r.end);
            assert_eq!(
                mangle(&mut b, pkt.len(), r, b"x"),
                Err(NatError::RangeOutsidePayload {
                    start,
                    end,
                    payload_len: 3
                })
            );
        }
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 2..1;
        assert!(matches!(
            mangle(&mut b, pkt.len(), reversed, b"x"),
            Err(NatError::RangeOutsidePayload { .. })
        ));
        assert_eq!(b, before);
    }

    #[test]
    fn refuses_beyond_65535() {
        let cap = 70_000;
        // Total length exactly 65535: 20 IP + 20 TCP + 65495 payload.
        let pkt = v4_tcp(&std::vec![b'a'; 65_495]);
        assert_eq!(pkt.len(), 65_535);
        let mut b = in_buf(&pkt, cap);
        let before = b.clone();
        assert_eq!(
            mangle(&mut b, pkt.len(), 0..1, b"bb"),
            Err(NatError::TooLong(65_536))
        );
        assert_eq!(b, before);
        // Same length at the limit works.
        assert_eq!(mangle(&mut b, pkt.len(), 0..1, b"b"), Ok(65_535));
        verified(&b[..65_535]);
        // Growing a smaller packet up to exactly the limit works.
        let pkt = v4_tcp(&std::vec![b'a'; 65_000]);
        let mut b = in_buf(&pkt, cap);
        let grow = std::vec![b'z'; 496];
        assert_eq!(mangle(&mut b, pkt.len(), 0..1, &grow), Ok(65_535));
        verified(&b[..65_535]);
        // IPv6 is held to the same limit.
        let pkt = v6_tcp(&std::vec![b'a'; 65_535 - 68]);
        assert_eq!(pkt.len(), 65_535);
        let mut b = in_buf(&pkt, cap);
        assert_eq!(
            mangle(&mut b, pkt.len(), 0..0, b"x"),
            Err(NatError::TooLong(65_536))
        );
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        let pkt = v4_tcp(PASV);
        let mut b = in_buf(&pkt, 200);
        assert_eq!(
            mangle(&mut b, 201, 0..1, b"x"),
            Err(NatError::LenExceedsBuffer { len: 201, buf: 200 })
        );
        for n in 0..pkt.len() {
            let before = b.clone();
            assert!(matches!(
                mangle(&mut b, n, 0..0, b"x"),
                Err(NatError::Malformed(_) | NatError::RangeOutsidePayload { .. })
            ));
            assert_eq!(b, before);
        }
        let icmp = ipv4::tests::build(C4, S4, 1, &[8, 0, 0, 0]);
        let mut b = in_buf(&icmp, 100);
        assert_eq!(
            mangle(&mut b, icmp.len(), 0..0, b""),
            Err(NatError::Malformed(wire::Error::UnsupportedProtocol(1)))
        );
    }

    #[test]
    fn errors_display() {
        let e = NatError::NoRoom {
            needed: 10,
            available: 9,
        };
        assert_eq!(
            e.to_string(),
            "mangled packet needs 10 bytes, buffer holds 9"
        );
        assert!(
            NatError::Malformed(wire::Error::Fragment)
                .to_string()
                .contains("fragment")
        );
        assert!(NatError::TooLong(70_000).to_string().contains("65535"));
    }

    // ------------------------------------------------ endpoint spelling and rewrites

    fn spelled(spelling: EndpointText, addr: IpAddr, port: u16) -> Vec<u8> {
        let mut out = [0u8; MAX_ENDPOINT_TEXT];
        let n = endpoint_text(spelling, addr, port, &mut out).unwrap();
        out[..n].to_vec()
    }

    #[test]
    fn endpoint_spellings() {
        let a = v4([203, 0, 113, 1]);
        assert_eq!(
            spelled(EndpointText::Commas, a, 40000),
            b"203,0,113,1,156,64"
        );
        assert_eq!(spelled(EndpointText::Commas, a, 1), b"203,0,113,1,0,1");
        assert_eq!(
            spelled(EndpointText::Eprt { delim: b'|' }, a, 65535),
            b"|1|203.0.113.1|65535|"
        );
        let six = IpAddr::V6(v6("2001:db8:ffff::1"));
        assert_eq!(
            spelled(EndpointText::Eprt { delim: b'!' }, six, 21),
            b"!2!2001:db8:ffff::1!21!"
        );
        assert_eq!(spelled(EndpointText::Port, six, 50001), b"50001");
        let mut out = [0u8; MAX_ENDPOINT_TEXT];
        assert_eq!(
            endpoint_text(EndpointText::Commas, six, 1, &mut out),
            Err(NatError::Unspellable)
        );
        // The longest text there is fits.
        let longest = IpAddr::V6(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert_eq!(
            spelled(EndpointText::Eprt { delim: b'|' }, longest, 65535).len(),
            3 + 39 + 7
        );
    }

    fn rewrite(start: usize, end: usize, text: EndpointText, addr: IpAddr, exp: usize) -> Rewrite {
        Rewrite {
            start,
            end,
            text,
            addr,
            expectation: exp,
        }
    }

    /// The FTP helper's output for a masqueraded PORT, applied to the packet: exact
    /// bytes before and after, lengths and checksums.
    #[test]
    fn ftp_port_rewrite_end_to_end() {
        use crate::helpers::{Helper, Packet, ftp};
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
            transport: Transport::Tcp {
                seq: 1000,
                flags: 0x18,
            },
            payload: line,
        };
        let action = ftp::Ftp.process(&pkt, &ct, &mut private, Default::default());
        assert_eq!(action.rewrites.len(), 1);
        let before = v4_tcp(line);
        let mut b = in_buf(&before, 1500);
        // The port search moved the data port by one.
        let r = apply_rewrites(&mut b, before.len(), &action.rewrites, |_| Some(40001)).unwrap();
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
        let rws = [
            rewrite(5, 19, EndpointText::Commas, a, 0),
            rewrite(26, 42, EndpointText::Eprt { delim: b'|' }, a, 1),
        ];
        assert_eq!(&payload[26..42], b"|1|192.0.2.2|22|");
        let before = v4_tcp(payload);
        let mut b = in_buf(&before, 1500);
        let ports = [21u16, 2222];
        let r = apply_rewrites(&mut b, before.len(), &rws, |i| ports.get(i).copied()).unwrap();
        let want = b"PORT 203,0,113,1,0,21\r\nEPRT |1|203.0.113.1|2222|\r\n";
        assert_eq!(verified(&b[..r.len]), want);
        // Applied again with the same ports, nothing changes.
        let again = b[..r.len].to_vec();
        let shifted = [
            rewrite(5, 21, EndpointText::Commas, a, 0),
            rewrite(28, 48, EndpointText::Eprt { delim: b'|' }, a, 1),
        ];
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
        let rws = [rewrite(
            5,
            28,
            EndpointText::Eprt { delim: b'|' },
            public,
            0,
        )];
        assert_eq!(&payload[5..28], b"|2|2001:db8:1::7|40000|");
        let r = apply_rewrites(&mut b, before.len(), &rws, |_| Some(40000)).unwrap();
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
        let rws = [rewrite(5, 19, EndpointText::Commas, a, 3)];
        assert_eq!(
            apply_rewrites(&mut b, before.len(), &rws, |_| None),
            Err(NatError::NoPort)
        );
        // No room to grow: the buffer holds exactly the original packet.
        let mut tight = before.clone();
        assert!(matches!(
            apply_rewrites(
                &mut tight,
                before.len(),
                &[rewrite(5, 19, EndpointText::Commas, a, 0)],
                |_| Some(21)
            ),
            Err(NatError::NoRoom { .. })
        ));
        assert_eq!(
            tight, before,
            "mangle leaves a packet it cannot rewrite untouched"
        );
        // A range past the payload.
        let mut b = in_buf(&before, 1500);
        assert!(matches!(
            apply_rewrites(
                &mut b,
                before.len(),
                &[rewrite(5, 99, EndpointText::Commas, a, 0)],
                |_| Some(21)
            ),
            Err(NatError::RangeOutsidePayload { .. })
        ));
    }
}
