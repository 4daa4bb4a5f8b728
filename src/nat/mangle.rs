//! Replace byte ranges of the application payload inside a queued L3 packet, then fix
//! every length and checksum that covers them: IPv4 total length and header checksum or
//! IPv6 payload length, the UDP length, the TCP/UDP checksum.
//!
//! The packet lives in a fixed daemon buffer; nothing here allocates and nothing panics.
//! TCP sequence numbers are *not* touched: when the verdict carries a payload of a
//! different length and the connection is NATed, the kernel records the sequence
//! adjustment itself (ctnetlink_glue_seqadj), correctly for IPv4 only; for IPv6 the daemon
//! records it over ctnetlink (README, section "NAT").

use core::net::IpAddr;
use core::ops::Range;

use super::NatError;
use crate::wire::Transport;
use crate::wire::{self, checksum, ipv4, ipv6, tcp, udp};

/// The largest packet `replace` produces: the IPv4 total length is 16 bits, nfnetlink_queue's
/// copy range is at most 0xffff, and we do not emit IPv6 jumbograms.
pub const MAX_PACKET_LEN: usize = 0xffff;

/// One replacement: `range` of the application payload becomes `text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit<'a> {
    pub range: Range<usize>,
    pub text: &'a [u8],
}

/// Where the parts of a dissected packet are.
struct Layout {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    transport: Transport,
    is_v4: bool,
    l4_offset: usize,
    payload_offset: usize,
    payload_len: usize,
    /// End of the L3 packet per its length field (dissect has checked it lies inside
    /// the packet); bytes after it are padding.
    l3_end: usize,
    /// The UDP length field (UDP only).
    udp_len: usize,
    /// A UDP checksum of 0 over IPv4 means none, and stays 0.
    keep_zero_udp_checksum: bool,
}

fn layout(packet: &[u8]) -> Result<Layout, NatError> {
    let d = wire::dissect(packet).map_err(NatError::Malformed)?;
    let is_v4 = d.src.is_ipv4();
    let l3_end = if is_v4 {
        usize::from(ipv4::Packet::new_unchecked(packet).total_len())
    } else {
        ipv6::HEADER_LEN + usize::from(ipv6::Packet::new_unchecked(packet).payload_len())
    };
    let malformed = NatError::Malformed(wire::Error::BadLength);
    let (udp_len, keep_zero_udp_checksum) = match d.transport {
        Transport::Tcp { .. } => (0, false),
        Transport::Udp => {
            let l4 = packet.get(d.l4_offset..l3_end).ok_or(malformed)?;
            let u = udp::Packet::new_unchecked(l4);
            (usize::from(u.len()), is_v4 && u.checksum() == 0)
        }
    };
    Ok(Layout {
        src: d.src,
        dst: d.dst,
        proto: d.proto,
        transport: d.transport,
        is_v4,
        l4_offset: d.l4_offset,
        payload_offset: d.payload_offset,
        payload_len: d.payload.len(),
        l3_end,
        udp_len,
        keep_zero_udp_checksum,
    })
}

/// Replace `payload[range]` (a byte range of the application payload) with `replacement`
/// inside the L3 packet held in `buf[..len]`: [`replace`] with one edit.
pub fn mangle(
    buf: &mut [u8],
    len: usize,
    range: Range<usize>,
    replacement: &[u8],
) -> Result<usize, NatError> {
    replace(
        buf,
        len,
        &[Edit {
            range,
            text: replacement,
        }],
    )
}

/// Apply `edits` (ranges of the application payload, in payload order, not overlapping)
/// to the L3 packet held in `buf[..len]` (`buf` is the fixed send buffer, larger than the
/// packet), shifting what follows each, then fix the IPv4 total length + header checksum
/// or the IPv6 payload length, the UDP length, and the TCP/UDP checksum (recomputed over
/// the pseudo-header, once; a UDP checksum of 0 over IPv4 stays 0).
///
/// The packet is delimited by its IP length field: bytes of `buf[..len]` beyond it (padding)
/// are not part of the result. Returns the new packet length, or an error (leaving
/// `buf[..len]` unchanged) when a range is outside the payload or overlaps the one before,
/// or the result would exceed [`MAX_PACKET_LEN`] or not fit in `buf` (the edits are made
/// from the last to the first, so `buf` must also hold the longest intermediate packet).
pub fn replace(buf: &mut [u8], len: usize, edits: &[Edit<'_>]) -> Result<usize, NatError> {
    let available = buf.len();
    let packet = buf.get(..len).ok_or(NatError::LenExceedsBuffer {
        len,
        buf: available,
    })?;
    let l = layout(packet)?;
    let malformed = NatError::Malformed(wire::Error::BadLength);
    let mut previous_end = 0;
    for e in edits {
        let (start, end) = (e.range.start, e.range.end);
        if start > end || end > l.payload_len {
            return Err(NatError::RangeOutsidePayload {
                start,
                end,
                payload_len: l.payload_len,
            });
        }
        if start < previous_end {
            return Err(NatError::Overlap { start, end });
        }
        previous_end = end;
    }
    if l.payload_offset
        .checked_add(l.payload_len)
        .is_none_or(|payload_end| payload_end > l.l3_end)
    {
        return Err(malformed);
    }
    // Lengths after the last k edits, made back to front: the final one and the peak.
    let (mut grown, mut peak) = (0isize, 0isize);
    for e in edits.iter().rev() {
        let added = isize::try_from(e.text.len()).map_err(|_| malformed)?;
        let removed = isize::try_from(e.range.len()).map_err(|_| malformed)?;
        grown = grown.checked_add(added - removed).ok_or(malformed)?;
        peak = peak.max(grown);
    }
    let l3_end = isize::try_from(l.l3_end).map_err(|_| malformed)?;
    let new_l3_end = usize::try_from(l3_end + grown).map_err(|_| malformed)?;
    if new_l3_end > MAX_PACKET_LEN {
        return Err(NatError::TooLong(new_l3_end));
    }
    let needed = usize::try_from(l3_end + peak).map_err(|_| malformed)?;
    if needed > available {
        return Err(NatError::NoRoom { needed, available });
    }
    // The new values of every length field, computed before anything is written.
    let new_ip_len = if l.is_v4 {
        new_l3_end
    } else {
        new_l3_end.checked_sub(ipv6::HEADER_LEN).ok_or(malformed)?
    };
    let new_ip_len = u16::try_from(new_ip_len).map_err(|_| NatError::TooLong(new_l3_end))?;
    let new_l4_len = match l.transport {
        Transport::Tcp { .. } => new_l3_end.checked_sub(l.l4_offset).ok_or(malformed)?,
        Transport::Udp => {
            let udp_len = isize::try_from(l.udp_len).map_err(|_| malformed)?;
            usize::try_from(udp_len + grown).map_err(|_| malformed)?
        }
    };
    let new_udp_len = u16::try_from(new_l4_len).map_err(|_| NatError::TooLong(new_l3_end))?;
    checksum::pseudo_header(l.src, l.dst, l.proto, new_l4_len).ok_or(malformed)?;

    // From here on nothing can fail: write, from the last edit to the first so that the
    // ranges of the earlier ones stay where they were.
    let mut end = l.l3_end;
    for e in edits.iter().rev() {
        let abs_start = l.payload_offset + e.range.start;
        let removed = e.range.len();
        let new_end = end - removed + e.text.len();
        let Some(region) = buf.get_mut(abs_start..end.max(new_end)) else {
            return Err(malformed);
        };
        // The tail (after the range, up to the current end) moves to just after the text.
        region.copy_within(removed..end - abs_start, e.text.len());
        if let Some(dst) = region.get_mut(..e.text.len()) {
            dst.copy_from_slice(e.text);
        }
        end = new_end;
    }
    let packet = buf.get_mut(..new_l3_end).ok_or(malformed)?;
    if l.is_v4 {
        let mut ip = ipv4::Packet::new_unchecked(&mut *packet);
        ip.set_total_len(new_ip_len);
        ip.fill_checksum();
    } else {
        ipv6::Packet::new_unchecked(&mut *packet).set_payload_len(new_ip_len);
    }
    let l4 = packet.get_mut(l.l4_offset..).ok_or(malformed)?;
    match l.transport {
        Transport::Tcp { .. } => {
            tcp::Packet::new_unchecked(l4).fill_checksum(l.src, l.dst);
        }
        Transport::Udp => {
            let mut u = udp::Packet::new_unchecked(l4);
            u.set_len(new_udp_len);
            if !l.keep_zero_udp_checksum {
                u.fill_checksum(l.src, l.dst);
            }
        }
    }
    Ok(new_l3_end)
}

/// Packets and checks shared by the NAT tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::vec::Vec;

    pub(crate) const C4: [u8; 4] = [192, 168, 1, 2];
    pub(crate) const S4: [u8; 4] = [192, 168, 1, 10];

    pub(crate) fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    pub(crate) fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// IPv4/TCP packet with valid IP and TCP checksums.
    pub(crate) fn v4_tcp(payload: &[u8]) -> Vec<u8> {
        let seg = tcp::tests::build(21, 40000, 1000, tcp::flags::ACK | tcp::flags::PSH, payload);
        let mut pkt = ipv4::tests::build(S4, C4, 6, &seg);
        assert!(tcp::Packet::new_unchecked(&mut pkt[20..]).fill_checksum(v4(S4), v4(C4)));
        pkt
    }

    /// IPv4/UDP packet; `with_checksum` false leaves the UDP checksum 0 (none).
    pub(crate) fn v4_udp(payload: &[u8], with_checksum: bool) -> Vec<u8> {
        let dgram = udp::tests::build(40000, 69, payload);
        let mut pkt = ipv4::tests::build(C4, S4, 17, &dgram);
        if with_checksum {
            assert!(udp::Packet::new_unchecked(&mut pkt[20..]).fill_checksum(v4(C4), v4(S4)));
        }
        pkt
    }

    /// IPv6/TCP packet behind an 8-byte destination-options header.
    pub(crate) fn v6_tcp(payload: &[u8]) -> Vec<u8> {
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
    pub(crate) fn in_buf(pkt: &[u8], cap: usize) -> Vec<u8> {
        let mut b = std::vec![0xee; cap];
        b[..pkt.len()].copy_from_slice(pkt);
        b
    }

    /// Every checksum and length of `pkt` verified with the wire layer; returns the payload.
    pub(crate) fn verified(pkt: &[u8]) -> Vec<u8> {
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
    pub(crate) fn mangle_and_compare(
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

    pub(crate) const PASV: &[u8] = b"227 Entering Passive Mode (192,168,1,2,4,1).\r\n";
    // Offsets of "192,168,1,2" inside PASV.
    pub(crate) const ADDR: Range<usize> = 27..38;

    pub(crate) fn pasv_with(addr: &[u8]) -> Vec<u8> {
        let mut v = PASV[..ADDR.start].to_vec();
        v.extend_from_slice(addr);
        v.extend_from_slice(&PASV[ADDR.end..]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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
}
